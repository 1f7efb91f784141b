//! `ferry`: the front door to a Ferry cluster.
//!
//! [`cli`] is the command line. [`up`] runs a whole single-machine cluster under one data directory
//! (`ferry up`, `ferry down`). The kubectl-like verbs: [`apply`] (server-side apply), [`get`] (server
//! tables), [`create`], [`describe`], [`delete`], [`rollout`] (status, history, undo, restart, pause, resume), [`edit`] (scale, set
//! image, label, annotate, cordon), [`wait`]. Around them: [`client`] (kubeconfig, context,
//! namespace), [`config`] (`config view|use-context`, `up --write-kubeconfig`), [`resolve`] (type names from discovery), [`manifest`] (reading YAML/JSON with error
//! locations), [`columns`] (aligned output) and [`error`] (messages as kubectl prints them).

pub mod apply;
pub mod cli;
pub mod client;
pub mod columns;
pub mod config;
pub mod create;
pub mod delete;
pub mod describe;
pub mod edit;
pub mod error;
pub mod get;
pub mod manifest;
pub mod resolve;
pub mod rollout;
pub mod up;
pub mod wait;
