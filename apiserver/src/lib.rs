//! `ferry-apiserver`: Ferry's Kubernetes-compatible API server.
//!
//! Where to start:
//! * [`server::start`] wires everything: TLS ([`pki`]), authentication ([`auth`]), node restriction ([`authz`]), the etcd
//!   [`storage`], the [`cache`] (one etcd watch feeding lists and watches), and the HTTP loop.
//! * [`request`] parses a URL into a resource [`request::Target`] and query parameters.
//! * [`rest`] holds the generic handlers — get, list, watch, create, update, patch, delete,
//!   subresources — driven by `ferry_api`'s resource table.
//! * [`codec`] is how objects sit in etcd; [`error`] is the one place errors become `Status`.
//! * [`discovery`] and [`metrics`] serve `/api`, `/apis`, `/version` and `/metrics`;
//!   [`openapi`] serves `/openapi/v3`.

pub mod auth;
pub mod authz;
pub mod cache;
pub mod codec;
pub mod config;
pub mod discovery;
pub mod error;
pub mod filter;
pub mod metrics;
pub mod openapi;
pub mod pki;
pub mod request;
pub mod rest;
pub mod server;
pub mod storage;

pub use config::Config;
pub use server::{start, Running, StartError};
