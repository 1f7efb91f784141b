//! The command line: kubectl's verb names, flags and output, plus `up` and `down`.

use crate::client::Connect;
use crate::get::{Output, Query};
use crate::up::{self, UpArgs};
use crate::{apply, delete, get, manifest, rollout};
use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

/// Ferry: a Kubernetes-compatible cluster in a few processes.
#[derive(Parser, Debug)]
#[command(name = "ferry", version, about)]
pub struct Cli {
    #[command(flatten)]
    connect: Connect,
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
    /// Create or update objects from manifests (server-side apply, field manager `ferry`).
    Apply {
        /// Files, directories or `-` (stdin).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// Recurse into directories.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Take over fields other managers own.
        #[arg(long)]
        force_conflicts: bool,
        /// `server`: validate and show, store nothing.
        #[arg(long, value_parser = ["none", "server"], default_value = "none")]
        dry_run: String,
    },
    /// Show objects: the server's table, or YAML/JSON/names.
    Get {
        /// Type, e.g. pods, deploy, services, nodes, deployments.apps.
        kind: String,
        /// Names (all when empty).
        names: Vec<String>,
        /// Output: wide, yaml, json, name.
        #[arg(short = 'o', long)]
        output: Option<Output>,
        /// Label selector.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// Field selector.
        #[arg(long)]
        field_selector: Option<String>,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Delete objects by manifest or by type and names.
    Delete {
        /// Type (when not deleting by file).
        kind: Option<String>,
        /// Names.
        names: Vec<String>,
        /// Delete the objects of these manifests.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// Recurse into directories.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Label selector.
        #[arg(short = 'l', long)]
        selector: Option<String>,
        /// background, foreground or orphan.
        #[arg(long, default_value = "background")]
        cascade: String,
        /// Wait until the objects are gone.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        wait: bool,
        /// Do not fail for objects that do not exist.
        #[arg(long)]
        ignore_not_found: bool,
        /// Seconds to wait (with --wait).
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Manage rollouts.
    Rollout {
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Print the client version.
    Version,
}

#[derive(Subcommand, Debug)]
enum RolloutCommand {
    /// Wait until a Deployment is rolled out; exit 1 if it exceeds its progress deadline or the timeout.
    Status {
        /// `deployment/NAME`, `deploy/NAME` or `deployment NAME`.
        target: String,
        /// The name, when the type is given separately.
        name: Option<String>,
        /// Give up after this long (`30s`, `5m`; 0 = wait forever).
        #[arg(long, default_value = "0s")]
        timeout: String,
    },
}

/// `30s`, `5m`, `1h`, or plain seconds.
fn duration(s: &str) -> Result<Duration> {
    let (num, unit) = s.trim().split_at(s.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(s.trim().len()));
    let n: u64 = num.parse().map_err(|_| anyhow::anyhow!("invalid duration {s:?}"))?;
    Ok(Duration::from_secs(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => bail!("invalid duration {s:?}: use s, m or h"),
    }))
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
            Command::Apply { files, recursive, force_conflicts, dry_run } => {
                let docs = manifest::read_all(&files, recursive)?;
                let (client, ns) = self.connect.connect().await?;
                apply::apply(&client, &docs, &ns, force_conflicts, dry_run == "server").await
            }
            Command::Get { kind, names, output, selector, field_selector, all_namespaces } => {
                let (client, ns) = self.connect.connect().await?;
                let q = Query {
                    kind: &kind,
                    names: &names,
                    namespace: if all_namespaces { None } else { Some(&ns) },
                    selector: selector.as_deref(),
                    field_selector: field_selector.as_deref(),
                };
                get::get(&client, &q, output).await
            }
            Command::Delete { kind, names, files, recursive, selector, cascade, wait, ignore_not_found, timeout } => {
                let (client, ns) = self.connect.connect().await?;
                let wait = wait.then(|| Duration::from_secs(timeout));
                if !files.is_empty() {
                    let docs = manifest::read_all(&files, recursive)?;
                    delete::delete(&client, delete::Target::Docs(&docs), &ns, &cascade, wait, ignore_not_found).await
                } else {
                    let Some(kind) = kind else {
                        bail!("you must provide one or more resources by type and name, or -f")
                    };
                    let (kind, names) = split_type_name(&kind, names);
                    let target = delete::Target::Named { kind: &kind, names: &names, selector: selector.as_deref() };
                    delete::delete(&client, target, &ns, &cascade, wait, ignore_not_found).await
                }
            }
            Command::Rollout { command: RolloutCommand::Status { target, name, timeout } } => {
                let (kind, names) = split_type_name(&target, name.into_iter().collect());
                if !matches!(
                    kind.as_str(),
                    "deployment" | "deployments" | "deploy" | "deployment.apps" | "deployments.apps"
                ) {
                    bail!("rollout status supports deployments (got {kind:?})");
                }
                let [name] = names.as_slice() else { bail!("rollout status needs exactly one deployment name") };
                let (client, ns) = self.connect.connect().await?;
                let timeout = duration(&timeout)?;
                rollout::status(&client, &ns, name, (!timeout.is_zero()).then_some(timeout)).await
            }
        }
    }
}

/// `deploy/web` → (`deploy`, [`web`]); `deploy` + names → unchanged.
fn split_type_name(kind: &str, mut names: Vec<String>) -> (String, Vec<String>) {
    match kind.split_once('/') {
        Some((k, n)) => {
            names.insert(0, n.to_string());
            (k.to_string(), names)
        }
        None => (kind.to_string(), names),
    }
}
