//! `ferry-api`: the shared model of Ferry's Kubernetes-compatible API, on top of `k8s-openapi`.
//!
//! Nothing here does I/O. Start with [`resources`]: the one table that drives the API server's
//! generic REST handlers (group/version/kind/plural, scope, subresources, short names, storage
//! key, generation and status policies). Each kind's typed behaviour — decode, defaulting,
//! validation, unknown-field detection — sits behind [`kinds::KindOps`]. Selectors live in
//! [`selector`], patches in [`patch`], and the error type every rule reports in [`FieldError`].

pub mod defaults;
mod field_error;
pub mod kinds;
pub mod managed;
pub mod patch;
pub mod protobuf;
pub mod resources;
pub mod selector;
pub mod strategic;
pub mod table;
pub mod taints;
pub mod validation;

pub use field_error::{CauseType, FieldError};
pub use resources::{ResourceInfo, ResourceTable, Subresource};
