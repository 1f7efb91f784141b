//! The command line.

use crate::up::{self, UpArgs};
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Ferry: a Kubernetes-compatible cluster in a few processes.
#[derive(Parser, Debug)]
#[command(name = "ferry", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start a local cluster (etcd, API server, DNS and the other daemons) under a data directory.
    Up(UpArgs),
    /// Stop the local cluster started by `ferry up`.
    Down {
        /// Data directory of the cluster.
        #[arg(long, env = "FERRY_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Seconds to wait for a clean stop before killing what is left.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Print the client version.
    Version,
}

impl Cli {
    /// Run the command.
    pub async fn run(self) -> Result<()> {
        match self.command {
            Command::Up(a) => up::up(a).await,
            Command::Down { data_dir, timeout } => up::down(data_dir.as_deref(), timeout).await,
            Command::Version => {
                println!("ferry {}", env!("CARGO_PKG_VERSION"));
                Ok(())
            }
        }
    }
}
