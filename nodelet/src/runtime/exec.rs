//! Running a process inside a container (`kubectl exec`, exec probes, preStop exec hooks).
//!
//! [`ExecSpec`] says what to run and which streams to connect; [`ExecProcess`] is the running
//! process: its stdin/stdout/stderr, a [`Control`] channel (resize the TTY, close stdin, kill)
//! and the exit code. The containerd implementation ([`exec_in_container`]) uses task exec with
//! named pipes (fifos) for the streams, as containerd's own `cio` package does: the nodelet
//! creates the fifos under `<root>/exec/<exec id>/`, opens its ends first (holding a writer on
//! stdout/stderr so an early read sees no EOF), then `Tasks.Exec` + `Tasks.Start`; the shim
//! copies the process's output into the fifos. When `Tasks.Wait` returns, `Tasks.DeleteProcess`
//! (which returns once the shim has copied all output) is called and the nodelet drops its
//! writers, so readers see EOF exactly after the last byte. Then the exit code is reported.

use super::containerd::{Containerd, ContainerdError};
use super::RuntimeError;
use containerd_client::services::v1::{
    CloseIoRequest, DeleteProcessRequest, ExecProcessRequest, GetContainerRequest, GetRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

/// What to run and which streams to connect.
#[derive(Clone, Debug, Default)]
pub struct ExecSpec {
    /// argv.
    pub command: Vec<String>,
    /// Connect stdin.
    pub stdin: bool,
    /// Connect stdout.
    pub stdout: bool,
    /// Connect stderr (ignored with `tty`: a terminal has one output).
    pub stderr: bool,
    /// Allocate a terminal.
    pub tty: bool,
}

/// Requests to a running exec process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Resize the terminal (columns, rows).
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// The caller has no more input: close the process's stdin.
    CloseStdin,
    /// Kill the process (SIGKILL).
    Kill,
}

/// A byte stream from the process.
pub type Output = Box<dyn AsyncRead + Send + Unpin>;
/// The process's stdin.
pub type Input = Box<dyn AsyncWrite + Send + Unpin>;

/// A process started in a container.
pub struct ExecProcess {
    /// Its stdin, if requested. Drop it and send [`Control::CloseStdin`] to close it.
    pub stdin: Option<Input>,
    /// Its stdout (with a TTY: the terminal's output), if requested. Ends after the process exited.
    pub stdout: Option<Output>,
    /// Its stderr, if requested and no TTY.
    pub stderr: Option<Output>,
    /// Resize, close stdin, kill.
    pub control: mpsc::UnboundedSender<Control>,
    /// The exit code, once the process exited and its output was delivered.
    pub exit: oneshot::Receiver<Result<i32, String>>,
}

impl ExecProcess {
    /// Run to completion with no input, discarding output, killing it after `timeout`:
    /// `Ok(exit code)`, or `Err` on timeout or failure (exec probes, preStop hooks).
    pub async fn wait_discarding_output(mut self, timeout: Duration) -> Result<i32, String> {
        let drain = |out: Option<Output>| async move {
            if let Some(mut out) = out {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut out, &mut sink).await;
            }
        };
        drop(self.stdin.take());
        let _ = self.control.send(Control::CloseStdin);
        let (stdout, stderr) = (self.stdout.take(), self.stderr.take());
        let run = async {
            tokio::join!(drain(stdout), drain(stderr));
            (&mut self.exit).await.map_err(|_| "exec ended without an exit code".to_string())?
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => {
                let _ = self.control.send(Control::Kill);
                Err(format!("command timed out after {}s", timeout.as_secs_f32()))
            }
        }
    }

    /// Run to completion with no input, collecting stdout and stderr (for tests and tools).
    pub async fn output(mut self) -> Result<(i32, Vec<u8>, Vec<u8>), String> {
        drop(self.stdin.take());
        let _ = self.control.send(Control::CloseStdin);
        let read = |out: Option<Output>| async move {
            let mut buf = Vec::new();
            if let Some(mut out) = out {
                let _ = out.read_to_end(&mut buf).await;
            }
            buf
        };
        let (stdout, stderr) = tokio::join!(read(self.stdout.take()), read(self.stderr.take()));
        let code = self.exit.await.map_err(|_| "exec ended without an exit code".to_string())??;
        Ok((code, stdout, stderr))
    }
}

static EXEC_SEQ: AtomicU64 = AtomicU64::new(0);

fn exec_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("exec-{:x}-{}-{}", nanos & 0xffff_ffff_ffff, std::process::id(), EXEC_SEQ.fetch_add(1, Ordering::Relaxed))
}

fn backend(what: &str) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |e| RuntimeError::Backend(format!("{what}: {e}"))
}

fn mkfifo(path: &Path) -> Result<(), RuntimeError> {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|e| RuntimeError::Backend(format!("mkfifo {}: {e}", path.display())))
}

/// An output fifo: our reader plus a writer we hold until the process's output is complete.
fn output_fifo(path: &Path) -> Result<(pipe::Receiver, pipe::Sender), RuntimeError> {
    mkfifo(path)?;
    let rx = pipe::OpenOptions::new().open_receiver(path).map_err(backend("opening an exec output fifo"))?;
    let keep = pipe::OpenOptions::new().open_sender(path).map_err(backend("opening an exec output fifo"))?;
    Ok((rx, keep))
}

/// Start `spec` in the running task of containerd container `id`; fifos go under `fifo_root`.
pub async fn exec_in_container(
    ctrd: Arc<Containerd>,
    id: &str,
    spec: ExecSpec,
    fifo_root: &Path,
) -> Result<ExecProcess, RuntimeError> {
    if spec.command.is_empty() {
        return Err(RuntimeError::Backend("exec: no command".into()));
    }
    let running = ctrd
        .client
        .tasks()
        .get(ctrd.request_ns(GetRequest { container_id: id.into(), exec_id: String::new() })?)
        .await
        .ok()
        .and_then(|r| r.into_inner().process)
        .is_some_and(|p| p.status == 2);
    if !running {
        return Err(RuntimeError::Backend(format!("container {id} is not running")));
    }
    // The process inherits the container's process spec (env, cwd, user, capabilities).
    let container = ctrd
        .client
        .containers()
        .get(ctrd.request_ns(GetContainerRequest { id: id.into() })?)
        .await
        .map_err(ContainerdError::from)?
        .into_inner()
        .container
        .ok_or_else(|| RuntimeError::Backend(format!("container {id} not found")))?;
    let oci: serde_json::Value = container
        .spec
        .as_ref()
        .and_then(|s| serde_json::from_slice(&s.value).ok())
        .ok_or_else(|| RuntimeError::Backend(format!("container {id} has no readable spec")))?;
    let mut process = oci.get("process").cloned().unwrap_or_else(|| serde_json::json!({}));
    process["args"] = serde_json::json!(spec.command);
    process["terminal"] = serde_json::json!(spec.tty);
    if spec.tty {
        if let Some(env) = process["env"].as_array_mut() {
            if !env.iter().any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM="))) {
                env.push(serde_json::json!("TERM=xterm"));
            }
        }
    }
    let process = serde_json::to_vec(&process).map_err(|e| RuntimeError::Backend(e.to_string()))?;

    let exec_id = exec_id();
    let dir = fifo_root.join(&exec_id);
    std::fs::create_dir_all(&dir).map_err(backend("creating the exec fifo dir"))?;
    let result = start(ctrd, id, &exec_id, &dir, spec, process).await;
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn start(
    ctrd: Arc<Containerd>,
    id: &str,
    exec_id: &str,
    dir: &Path,
    spec: ExecSpec,
    process: Vec<u8>,
) -> Result<ExecProcess, RuntimeError> {
    let path = |name: &str| -> PathBuf { dir.join(name) };
    let mut keep = Vec::new();
    let (mut stdin, mut stdout, mut stderr) = (None::<Input>, None::<Output>, None::<Output>);
    let mut names = (String::new(), String::new(), String::new());
    if spec.stdin {
        mkfifo(&path("stdin"))?;
        // Read-write so the open does not wait for the shim (Linux semantics for fifos).
        let tx = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(path("stdin"))
            .map_err(backend("opening the exec stdin fifo"))?;
        stdin = Some(Box::new(tx));
        names.0 = path("stdin").display().to_string();
    }
    // containerd needs somewhere to put output even if the caller does not want it.
    let (rx, k) = output_fifo(&path("stdout"))?;
    keep.push(k);
    names.1 = path("stdout").display().to_string();
    if spec.stdout {
        stdout = Some(Box::new(rx));
    } else {
        tokio::spawn(async move {
            let mut rx = rx;
            let _ = tokio::io::copy(&mut rx, &mut tokio::io::sink()).await;
        });
    }
    if !spec.tty {
        let (rx, k) = output_fifo(&path("stderr"))?;
        keep.push(k);
        names.2 = path("stderr").display().to_string();
        if spec.stderr {
            stderr = Some(Box::new(rx));
        } else {
            tokio::spawn(async move {
                let mut rx = rx;
                let _ = tokio::io::copy(&mut rx, &mut tokio::io::sink()).await;
            });
        }
    }
    let req = ExecProcessRequest {
        container_id: id.into(),
        stdin: names.0,
        stdout: names.1,
        stderr: names.2,
        terminal: spec.tty,
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
            value: process,
        }),
        exec_id: exec_id.into(),
    };
    ctrd.client.tasks().exec(ctrd.request_ns(req)?).await.map_err(ContainerdError::from)?;
    let started = ctrd
        .client
        .tasks()
        .start(ctrd.request_ns(StartRequest { container_id: id.into(), exec_id: exec_id.into() })?)
        .await;
    if let Err(s) = started {
        let del = DeleteProcessRequest { container_id: id.into(), exec_id: exec_id.into() };
        let _ = ctrd.client.tasks().delete_process(ctrd.request_ns(del)?).await;
        return Err(RuntimeError::Backend(format!("starting {:?}: {}", spec.command, s.message())));
    }

    let (control, mut controls) = mpsc::unbounded_channel::<Control>();
    let (exit_tx, exit) = oneshot::channel();
    let (id, exec_id, dir) = (id.to_string(), exec_id.to_string(), dir.to_path_buf());
    tokio::spawn(async move {
        let wait = async {
            let req = ctrd.request_ns(WaitRequest { container_id: id.clone(), exec_id: exec_id.clone() })?;
            let r = ctrd.client.tasks().wait(req).await.map_err(ContainerdError::from)?;
            Ok::<_, ContainerdError>(r.into_inner().exit_status)
        };
        tokio::pin!(wait);
        let code = loop {
            tokio::select! {
                r = &mut wait => break r,
                c = controls.recv() => match c {
                    Some(Control::Resize { width, height }) => {
                        if let Ok(req) = ctrd.request_ns(ResizePtyRequest {
                            container_id: id.clone(), exec_id: exec_id.clone(),
                            width: u32::from(width), height: u32::from(height),
                        }) {
                            let _ = ctrd.client.tasks().resize_pty(req).await;
                        }
                    }
                    Some(Control::CloseStdin) => {
                        if let Ok(req) = ctrd.request_ns(CloseIoRequest {
                            container_id: id.clone(), exec_id: exec_id.clone(), stdin: true,
                        }) {
                            let _ = ctrd.client.tasks().close_io(req).await;
                        }
                    }
                    Some(Control::Kill) => {
                        if let Ok(req) = ctrd.request_ns(KillRequest {
                            container_id: id.clone(), exec_id: exec_id.clone(), signal: 9, all: false,
                        }) {
                            let _ = ctrd.client.tasks().kill(req).await;
                        }
                    }
                    // Nobody controls it any more: let it run to its end.
                    None => break (&mut wait).await,
                },
            }
        };
        // DeleteProcess returns once the shim has copied all output into the fifos.
        if let Ok(req) = ctrd.request_ns(DeleteProcessRequest { container_id: id.clone(), exec_id: exec_id.clone() }) {
            let _ = ctrd.client.tasks().delete_process(req).await;
        }
        drop(keep);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = exit_tx.send(code.map(|c| c as i32).map_err(|e| e.to_string()));
    });
    Ok(ExecProcess { stdin, stdout, stderr, control, exit })
}

/// Runs commands in one containerd container (exec probes, preStop hooks).
pub struct ContainerExec {
    ctrd: Arc<Containerd>,
    id: String,
    fifo_root: PathBuf,
}

impl ContainerExec {
    /// For containerd container `id`, with exec fifos under `fifo_root`.
    pub fn new(ctrd: Arc<Containerd>, id: String, fifo_root: PathBuf) -> Self {
        ContainerExec { ctrd, id, fifo_root }
    }
}

#[async_trait::async_trait]
impl super::probe::ExecRunner for ContainerExec {
    async fn run(&self, command: &[String], timeout: Duration) -> Result<i32, String> {
        let spec = ExecSpec { command: command.to_vec(), stdout: true, stderr: true, ..ExecSpec::default() };
        let process =
            exec_in_container(self.ctrd.clone(), &self.id, spec, &self.fifo_root).await.map_err(|e| e.to_string())?;
        process.wait_discarding_output(timeout).await
    }
}

/// The preStop exec hooks of a pod's containers: (container name, command).
pub fn pre_stop_hooks(spec: &k8s_openapi::api::core::v1::PodSpec) -> Vec<(String, Vec<String>)> {
    spec.containers
        .iter()
        .filter_map(|c| {
            let command = c.lifecycle.as_ref()?.pre_stop.as_ref()?.exec.as_ref()?.command.clone()?;
            (!command.is_empty()).then(|| (c.name.clone(), command))
        })
        .collect()
}
