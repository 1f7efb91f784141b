//! `ferry`: the front door to a Ferry cluster.
//!
//! [`up`] runs a whole single-machine cluster under one data directory (`ferry up`, `ferry down`);
//! [`client`] finds the API server from a kubeconfig. The command line itself is [`cli`].

pub mod cli;
pub mod client;
pub mod up;
