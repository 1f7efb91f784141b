//! `ferry logs` and `ferry exec`: a container's log (`pods/{name}/log`, streamed) and a command in a
//! container (`pods/{name}/exec` over WebSocket, kube-rs's `v5.channel.k8s.io` client), with the
//! remote exit code as ferry's own.

use anyhow::{bail, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, LogParams};
use tokio::io::AsyncWriteExt;

/// The remote command exited with this non-zero code; `main` exits with it, printing nothing.
#[derive(Debug, thiserror::Error)]
#[error("command terminated with exit code {0}")]
pub struct RemoteExit(pub i32);

/// `ferry logs` options.
#[derive(Debug, Clone, Default)]
pub struct LogsOptions {
    /// `-c`.
    pub container: Option<String>,
    /// `-f`.
    pub follow: bool,
    /// `--tail` (negative: all).
    pub tail: i64,
    /// `-p`.
    pub previous: bool,
    /// `--timestamps`.
    pub timestamps: bool,
    /// `--since`, in seconds.
    pub since_seconds: Option<i64>,
    /// `--limit-bytes`.
    pub limit_bytes: Option<i64>,
}

/// `pod/NAME` or `NAME`.
fn pod_name(target: &str) -> Result<&str> {
    let name = match target.split_once('/') {
        Some(("pod" | "pods" | "po", n)) => n,
        Some((kind, _)) => bail!("only pods have logs and exec here, not {kind:?}"),
        None => target,
    };
    if name.is_empty() {
        bail!("a pod name is required");
    }
    Ok(name)
}

/// Print (and with `follow`, keep printing) a container's log.
pub async fn logs(client: &kube::Client, ns: &str, target: &str, o: &LogsOptions) -> Result<()> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = LogParams {
        container: o.container.clone(),
        follow: o.follow,
        previous: o.previous,
        timestamps: o.timestamps,
        tail_lines: (o.tail >= 0).then_some(o.tail),
        since_seconds: o.since_seconds,
        limit_bytes: o.limit_bytes,
        ..LogParams::default()
    };
    let mut stream = Box::pin(pods.log_stream(pod_name(target)?, &lp).await?);
    let mut out = tokio::io::stdout();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = futures::AsyncReadExt::read(&mut stream, &mut buf).await.context("reading the log")?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).await?;
        out.flush().await?;
    }
    Ok(())
}

/// The exit code a Kubernetes exec Status carries: 0 for Success, the `ExitCode` cause for
/// `NonZeroExitCode`, an error otherwise.
pub fn exit_code(status: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Status) -> Result<i32> {
    match status.status.as_deref() {
        Some("Success") => Ok(0),
        _ if status.reason.as_deref() == Some("NonZeroExitCode") => {
            let causes = status.details.as_ref().and_then(|d| d.causes.as_ref());
            causes
                .into_iter()
                .flatten()
                .find(|c| c.reason.as_deref() == Some("ExitCode"))
                .and_then(|c| c.message.as_deref())
                .and_then(|m| m.parse().ok())
                .context("the server reported a non-zero exit code without the code")
        }
        _ => bail!("{}", status.message.as_deref().unwrap_or("exec failed")),
    }
}

/// Keeps the terminal in raw mode while alive (for `exec -t`).
struct RawTerminal(Option<nix::sys::termios::Termios>);

impl RawTerminal {
    fn enable() -> Self {
        use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg};
        let stdin = std::io::stdin();
        let Ok(saved) = tcgetattr(&stdin) else { return RawTerminal(None) };
        let mut raw = saved.clone();
        cfmakeraw(&mut raw);
        if tcsetattr(&stdin, SetArg::TCSANOW, &raw).is_err() {
            return RawTerminal(None);
        }
        RawTerminal(Some(saved))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = nix::sys::termios::tcsetattr(std::io::stdin(), nix::sys::termios::SetArg::TCSANOW, saved);
        }
    }
}

/// Run `command` in a container; returns its exit code.
pub async fn exec(
    client: &kube::Client,
    ns: &str,
    target: &str,
    container: Option<String>,
    stdin: bool,
    tty: bool,
    command: &[String],
) -> Result<i32> {
    if command.is_empty() {
        bail!("you must specify at least one command for the container (ferry exec POD -- COMMAND [ARGS...])");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let mut ap = AttachParams::default().stdin(stdin).stdout(true).stderr(!tty).tty(tty);
    ap.container = container;
    let mut process = pods.exec(pod_name(target)?, command.to_vec(), &ap).await?;
    let status = process.take_status().context("no status channel")?;
    let _raw = (tty && stdin).then(RawTerminal::enable);
    let input = process.stdin().map(|mut w| {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut w).await;
            let _ = w.shutdown().await;
        })
    });
    let copy_out = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>,
                    mut w: Box<dyn tokio::io::AsyncWrite + Unpin + Send>| async move {
        if let Some(mut r) = r {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match tokio::io::AsyncReadExt::read(&mut r, &mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if w.write_all(&buf[..n]).await.is_err() || w.flush().await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    };
    let out = process.stdout().map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    let err = process.stderr().map(|r| Box::new(r) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
    tokio::join!(copy_out(out, Box::new(tokio::io::stdout())), copy_out(err, Box::new(tokio::io::stderr())));
    let status = status.await;
    if let Some(task) = input {
        task.abort();
    }
    let _ = process.join().await;
    match status {
        Some(s) => exit_code(&s),
        None => bail!("the connection ended without an exit status"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_names() {
        assert_eq!(pod_name("web").unwrap(), "web");
        assert_eq!(pod_name("pod/web").unwrap(), "web");
        assert!(pod_name("deploy/web").is_err());
        assert!(pod_name("pod/").is_err());
    }

    #[test]
    fn exit_codes_from_status() {
        let s = |v: serde_json::Value| serde_json::from_value(v).unwrap();
        assert_eq!(exit_code(&s(serde_json::json!({"status": "Success"}))).unwrap(), 0);
        let failed = serde_json::json!({"status": "Failure", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "7"}]}});
        assert_eq!(exit_code(&s(failed)).unwrap(), 7);
        let other = serde_json::json!({"status": "Failure", "reason": "InternalError", "message": "boom"});
        assert_eq!(exit_code(&s(other)).unwrap_err().to_string(), "boom");
    }
}
