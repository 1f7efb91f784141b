//! `ferry-dns`: Ferry's cluster DNS.
//!
//! [`records`] computes the cluster zone from Services, EndpointSlices and Pods (pure, following the
//! Kubernetes DNS specification); [`server`] keeps that zone current from API watches and serves it
//! over UDP and TCP with hickory-server.

pub mod records;
pub mod server;

pub use server::{start, Config, Running, Upstream};
