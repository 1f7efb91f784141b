//! The command line: kubectl's verb names, flags and output, plus `up` and `down`.

use crate::client::Connect;
use crate::get::{Output, Query};
use crate::up::{self, UpArgs};
use crate::{apply, delete, edit, get, manifest, rollout};
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
        /// Then wait until every applied Deployment is rolled out (printing progress).
        #[arg(long)]
        wait: bool,
        /// How long `--wait` waits (`30s`, `5m`; 0 = forever).
        #[arg(long, default_value = "0s")]
        timeout: String,
    },
    /// Wait for a condition on objects: `--for=condition=Available`, `--for=condition=Ready=false`,
    /// `--for=delete`.
    Wait {
        /// `TYPE/NAME` or TYPE.
        target: String,
        /// Names, when the type is given separately.
        names: Vec<String>,
        /// `condition=NAME[=VALUE]` or `delete`.
        #[arg(long = "for")]
        condition: String,
        /// Give up after this long (`30s`, `5m`).
        #[arg(long, default_value = "30s")]
        timeout: String,
    },
    /// Create objects from manifests, or a namespace, configmap, secret or deployment from flags.
    Create {
        /// `namespace|configmap|secret|deployment` (when not creating from files).
        what: Option<String>,
        /// The name (with a generator); for `secret`, `generic` comes first: `create secret generic NAME`.
        args: Vec<String>,
        /// Manifests to create.
        #[arg(short = 'f', long = "filename")]
        files: Vec<PathBuf>,
        /// Recurse into directories.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// Container image (deployment).
        #[arg(long)]
        image: Option<String>,
        /// Replicas (deployment).
        #[arg(long, default_value_t = 1)]
        replicas: i64,
        /// `key=value` (configmap, secret).
        #[arg(long)]
        from_literal: Vec<String>,
    },
    /// Show objects: the server's table, or YAML/JSON/names.
    Get {
        /// Type, e.g. pods, deploy, services, nodes, deployments.apps.
        kind: String,
        /// Names (all when empty).
        names: Vec<String>,
        /// Output: wide, yaml, json, name, jsonpath=TEMPLATE.
        #[arg(short = 'o', long)]
        output: Option<Output>,
        /// After listing, print every change.
        #[arg(short = 'w', long)]
        watch: bool,
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
    /// Show an object in detail, with its conditions and events.
    Describe {
        /// `TYPE/NAME` or TYPE.
        target: String,
        /// Names (all of the type when empty).
        names: Vec<String>,
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
    /// Set the replicas of deployments or replica sets (through their scale subresource).
    Scale {
        /// `deployment/NAME` or a type followed by names.
        target: String,
        /// Names, when the type is given separately.
        names: Vec<String>,
        /// The new replica count.
        #[arg(long)]
        replicas: i64,
    },
    /// Change fields of objects.
    Set {
        #[command(subcommand)]
        command: SetCommand,
    },
    /// Add (`k=v`) or remove (`k-`) labels.
    Label {
        /// `TYPE/NAME` or TYPE.
        target: String,
        /// NAME (when TYPE is separate) followed by changes.
        args: Vec<String>,
        /// Replace existing values.
        #[arg(long)]
        overwrite: bool,
    },
    /// Add (`k=v`) or remove (`k-`) annotations.
    Annotate {
        /// `TYPE/NAME` or TYPE.
        target: String,
        /// NAME (when TYPE is separate) followed by changes.
        args: Vec<String>,
        /// Replace existing values.
        #[arg(long)]
        overwrite: bool,
    },
    /// Mark a node unschedulable.
    Cordon {
        /// Node name.
        node: String,
    },
    /// Mark a node schedulable again.
    Uncordon {
        /// Node name.
        node: String,
    },
    /// Show or change the kubeconfig.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print shell completion code.
    Completion {
        /// bash, zsh or fish.
        shell: clap_complete::Shell,
    },
    /// Print the client and server versions.
    Version,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Print the kubeconfig in use (secrets omitted unless --raw).
    View {
        /// Show certificates, keys and tokens.
        #[arg(long)]
        raw: bool,
    },
    /// Make a context the current one.
    UseContext {
        /// Context name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum SetCommand {
    /// Change container images: `set image deployment/web web=nginx:1.28`.
    Image {
        /// `TYPE/NAME`.
        target: String,
        /// `CONTAINER=IMAGE` pairs (`*` for every container).
        #[arg(required = true)]
        images: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum RolloutCommand {
    /// List the revisions of a Deployment.
    History {
        /// `deployment/NAME`.
        target: String,
        /// The name, when the type is given separately.
        name: Option<String>,
    },
    /// Roll a Deployment back to the previous (or a given) revision.
    Undo {
        /// `deployment/NAME`.
        target: String,
        /// The name, when the type is given separately.
        name: Option<String>,
        /// The revision to go back to (0: the previous one).
        #[arg(long, default_value_t = 0)]
        to_revision: i64,
    },
    /// Start a new rollout of the same template.
    Restart {
        /// `deployment/NAME`.
        target: String,
        /// The name, when the type is given separately.
        name: Option<String>,
    },
    /// Pause a Deployment's rollouts.
    Pause {
        /// `deployment/NAME`.
        target: String,
        /// The name, when the type is given separately.
        name: Option<String>,
    },
    /// Resume a paused Deployment.
    Resume {
        /// `deployment/NAME`.
        target: String,
        /// The name, when the type is given separately.
        name: Option<String>,
    },
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
                println!("Client Version: v{}", env!("CARGO_PKG_VERSION"));
                let (client, _) = self.connect.connect().await?;
                let v = client.apiserver_version().await?;
                println!("Server Version: {}", v.git_version);
                Ok(())
            }
            Command::Config { command: ConfigCommand::View { raw } } => {
                crate::config::view(self.connect.kubeconfig.as_deref(), raw)
            }
            Command::Config { command: ConfigCommand::UseContext { name } } => {
                crate::config::use_context(self.connect.kubeconfig.as_deref(), &name)
            }
            Command::Completion { shell } => {
                let mut cmd = <Cli as clap::CommandFactory>::command();
                clap_complete::generate(shell, &mut cmd, "ferry", &mut std::io::stdout());
                Ok(())
            }
            Command::Scale { target, names, replicas } => {
                let (kind, names) = split_type_name(&target, names);
                let (client, ns) = self.connect.connect().await?;
                edit::scale(&client, &ns, &kind, &names, replicas).await
            }
            Command::Set { command: SetCommand::Image { target, images } } => {
                let (kind, names) = split_type_name(&target, Vec::new());
                let [name] = names.as_slice() else { bail!("set image needs TYPE/NAME") };
                let (client, ns) = self.connect.connect().await?;
                edit::set_image(&client, &ns, &kind, name, &images).await
            }
            Command::Label { target, args, overwrite } => {
                meta_map(&self.connect, &target, args, overwrite, "labels").await
            }
            Command::Annotate { target, args, overwrite } => {
                meta_map(&self.connect, &target, args, overwrite, "annotations").await
            }
            Command::Cordon { node } => {
                let (client, _) = self.connect.connect().await?;
                edit::cordon(&client, &node, true).await
            }
            Command::Uncordon { node } => {
                let (client, _) = self.connect.connect().await?;
                edit::cordon(&client, &node, false).await
            }
            Command::Apply { files, recursive, force_conflicts, dry_run, wait, timeout } => {
                let timeout = duration(&timeout)?;
                let docs = manifest::read_all(&files, recursive)?;
                let (client, ns) = self.connect.connect().await?;
                apply::apply(&client, &docs, &ns, force_conflicts, dry_run == "server").await?;
                if wait && dry_run != "server" {
                    for d in docs.iter().filter(|d| d.object["kind"] == "Deployment") {
                        let name = d.object.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or_default();
                        let dns = d.object.pointer("/metadata/namespace").and_then(|v| v.as_str()).unwrap_or(&ns);
                        rollout::status(&client, dns, name, (!timeout.is_zero()).then_some(timeout)).await?;
                    }
                }
                Ok(())
            }
            Command::Create { what, args, files, recursive, image, replicas, from_literal } => {
                let (client, ns) = self.connect.connect().await?;
                let docs = if files.is_empty() {
                    let Some(what) = what else {
                        bail!("must specify one of -f or a generator (namespace, configmap, secret, deployment)")
                    };
                    let args: Vec<String> = match (what.as_str(), args.split_first()) {
                        ("secret", Some((g, rest))) if g == "generic" => rest.to_vec(),
                        ("secret", _) => bail!("use `create secret generic NAME --from-literal k=v`"),
                        _ => args,
                    };
                    let [name] = args.as_slice() else { bail!("exactly one NAME is required") };
                    let obj = crate::create::generate(&what, name, &ns, image.as_deref(), replicas, &from_literal)?;
                    vec![manifest::Doc { object: obj, source: "(flags)".into(), index: 1 }]
                } else {
                    manifest::read_all(&files, recursive)?
                };
                crate::create::create(&client, &docs, &ns).await
            }
            Command::Describe { target, names } => {
                let (kind, names) = split_type_name(&target, names);
                let (client, ns) = self.connect.connect().await?;
                crate::describe::describe(&client, &ns, &kind, &names).await
            }
            Command::Wait { target, names, condition, timeout } => {
                let (kind, names) = split_type_name(&target, names);
                let timeout = duration(&timeout)?;
                let (client, ns) = self.connect.connect().await?;
                crate::wait::wait(&client, &ns, &kind, &names, &condition, timeout).await
            }
            Command::Get { kind, names, output, watch, selector, field_selector, all_namespaces } => {
                let (client, ns) = self.connect.connect().await?;
                let q = Query {
                    kind: &kind,
                    names: &names,
                    namespace: if all_namespaces { None } else { Some(&ns) },
                    selector: selector.as_deref(),
                    field_selector: field_selector.as_deref(),
                };
                get::get(&client, &q, output, watch).await
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
            Command::Rollout { command: RolloutCommand::History { target, name } } => {
                let (client, ns, name) = deployment(&self.connect, &target, name).await?;
                rollout::history(&client, &ns, &name).await
            }
            Command::Rollout { command: RolloutCommand::Undo { target, name, to_revision } } => {
                let (client, ns, name) = deployment(&self.connect, &target, name).await?;
                rollout::undo(&client, &ns, &name, to_revision).await
            }
            Command::Rollout { command: RolloutCommand::Restart { target, name } } => {
                let (client, ns, name) = deployment(&self.connect, &target, name).await?;
                rollout::restart(&client, &ns, &name).await
            }
            Command::Rollout { command: RolloutCommand::Pause { target, name } } => {
                let (client, ns, name) = deployment(&self.connect, &target, name).await?;
                rollout::set_paused(&client, &ns, &name, true).await
            }
            Command::Rollout { command: RolloutCommand::Resume { target, name } } => {
                let (client, ns, name) = deployment(&self.connect, &target, name).await?;
                rollout::set_paused(&client, &ns, &name, false).await
            }
            Command::Rollout { command: RolloutCommand::Status { target, name, timeout } } => {
                let timeout = duration(&timeout)?;
                let (client, ns, name) = deployment(&self.connect, &target, name).await?;
                rollout::status(&client, &ns, &name, (!timeout.is_zero()).then_some(timeout)).await
            }
        }
    }
}

async fn meta_map(connect: &Connect, target: &str, args: Vec<String>, overwrite: bool, field: &str) -> Result<()> {
    let (kind, rest) = split_type_name(target, args);
    let Some((name, changes)) = rest.split_first() else { bail!("a name and at least one change are required") };
    if changes.is_empty() {
        bail!("at least one {field} change is required");
    }
    let (client, ns) = connect.connect().await?;
    edit::meta_map(&client, &ns, &kind, name, changes, overwrite, field).await
}

/// A client, the namespace and the name of the Deployment `deployment/NAME` (or `deployment NAME`) means.
async fn deployment(connect: &Connect, target: &str, name: Option<String>) -> Result<(kube::Client, String, String)> {
    let (kind, names) = split_type_name(target, name.into_iter().collect());
    if !matches!(kind.as_str(), "deployment" | "deployments" | "deploy" | "deployment.apps" | "deployments.apps") {
        bail!("rollout supports deployments (got {kind:?})");
    }
    let [name] = names.as_slice() else { bail!("exactly one deployment name is needed") };
    let (client, ns) = connect.connect().await?;
    Ok((client, ns, name.clone()))
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
