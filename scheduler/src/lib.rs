//! Ferry's scheduler: places pending pods on nodes and binds them through the API server.
//!
//! Start with [`scheduler`] (the running loop: informers, queue, decisions, binding), then:
//!
//! * [`cache`]: nodes with precomputed accounting and every placed or *assumed* pod;
//! * [`index`]: the cache's indexes of pods by label and of placed pods' affinity terms;
//! * [`queue`]: active / backoff / unschedulable queues;
//! * [`framework`]: one decision — filter (with node sampling), score, pick;
//! * [`plugins`]: the filter and score plugins, one module per family;
//! * [`preemption`]: choosing the fewest lower-priority victims on one node;
//! * [`resources`]: pod requests and node allocatable as integers;
//! * [`leader`]: Lease-based leader election; [`metrics`]: `/metrics` and `/healthz`.
//!
//! The binary `ferry-scheduler` (`main.rs`) wires these together.

pub mod cache;
pub mod framework;
pub mod index;
pub mod leader;
pub mod metrics;
pub mod plugins;
pub mod preemption;
pub mod queue;
pub mod resources;
pub mod scheduler;

pub use scheduler::{Config, Error, Scheduler, DEFAULT_SCHEDULER_NAME};
