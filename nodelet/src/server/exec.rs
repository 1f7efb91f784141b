//! `kubectl exec` on the nodelet: the Kubernetes WebSocket channel protocol
//! (`v5.channel.k8s.io`, `v4.channel.k8s.io`) over [`tokio_tungstenite`], bridged to a
//! [`crate::runtime::exec::ExecProcess`].
//!
//! Every WebSocket message starts with a channel byte: 0 stdin (client → server), 1 stdout,
//! 2 stderr, 3 error (one Kubernetes `Status` JSON when the process ends: `Success`, or
//! `Failure` with reason `NonZeroExitCode` and an `ExitCode` cause, which kubectl turns into
//! its own exit code), 4 resize (`{"Width":…,"Height":…}`, client → server). v5 adds 255,
//! "close": `[255, 0]` from the client means stdin is done.

use super::{text, Body, Target};
use crate::runtime::exec::{Control, ExecSpec};
use crate::runtime::Runtime;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Subprotocols served, most preferred first.
pub const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// The error-channel Status for an exit code, as the kubelet writes it.
pub fn exit_status(command: &[String], code: i32) -> serde_json::Value {
    if code == 0 {
        return serde_json::json!({"metadata": {}, "status": "Success"});
    }
    serde_json::json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

fn failure(message: &str) -> serde_json::Value {
    serde_json::json!({
        "metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500,
    })
}

fn header_str(req: &Request<Incoming>, name: header::HeaderName) -> &str {
    req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Handle `GET /exec/...`: check the request, upgrade, start the process, bridge streams.
pub(crate) async fn handle(
    runtime: Arc<dyn Runtime>,
    target: Target,
    query: &[(String, String)],
    mut req: Request<Incoming>,
) -> Response<Body> {
    let command: Vec<String> = query.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.clone()).collect();
    let spec = ExecSpec {
        stdin: super::flag(query, "stdin"),
        stdout: super::flag(query, "stdout"),
        stderr: super::flag(query, "stderr"),
        tty: super::flag(query, "tty"),
        command,
    };
    if spec.command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify a command");
    }
    if !(spec.stdin || spec.stdout || spec.stderr) {
        return text(StatusCode::BAD_REQUEST, "you must specify at least 1 of stdin, stdout, stderr");
    }
    let upgrade = header_str(&req, header::UPGRADE).eq_ignore_ascii_case("websocket");
    let key = header_str(&req, header::SEC_WEBSOCKET_KEY).to_string();
    if !upgrade || key.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "exec needs a WebSocket upgrade with subprotocol v5.channel.k8s.io or v4.channel.k8s.io",
        );
    }
    let offered: Vec<String> =
        header_str(&req, header::SEC_WEBSOCKET_PROTOCOL).split(',').map(|p| p.trim().to_string()).collect();
    let Some(protocol) = PROTOCOLS.iter().find(|p| offered.iter().any(|o| o == *p)) else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("unsupported subprotocols {offered:?}: this server speaks {}", PROTOCOLS.join(", ")),
        );
    };
    let v5 = *protocol == PROTOCOLS[0];
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "exec upgrade failed");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        bridge(ws, runtime, target, spec, v5).await;
    });
    let mut resp = Response::new(Empty::<Bytes>::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(protocol));
    resp
}

/// A close frame with status 1000: clients treat a missing status (1005) as an error.
fn normal_close() -> Message {
    use tokio_tungstenite::tungstenite::protocol::frame::{coding::CloseCode, CloseFrame};
    Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(Bytes::from(v))
}

async fn bridge<S>(ws: WebSocketStream<S>, runtime: Arc<dyn Runtime>, target: Target, spec: ExecSpec, v5: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut incoming) = ws.split();
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<Message>(32);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let command = spec.command.clone();
    let process = match runtime.exec(&target.uid, &target.container, spec).await {
        Ok(p) => p,
        Err(e) => {
            let msg = format!("Internal error occurred: error executing command in container: {e}");
            let _ = out_tx.send(frame(ERROR, failure(&msg).to_string().as_bytes())).await;
            let _ = out_tx.send(normal_close()).await;
            drop(out_tx);
            let _ = writer.await;
            return;
        }
    };
    let crate::runtime::exec::ExecProcess { stdin, stdout, stderr, control, exit } = process;
    let pump = |out: Option<crate::runtime::exec::Output>, channel: u8| {
        let tx = out_tx.clone();
        async move {
            let Some(mut out) = out else { return };
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match out.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if tx.send(frame(channel, &buf[..n])).await.is_err() {
                            // The client is gone; keep draining so the process is not blocked.
                            let _ = tokio::io::copy(&mut out, &mut tokio::io::sink()).await;
                            return;
                        }
                    }
                }
            }
        }
    };
    let outputs = tokio::spawn({
        let (a, b) = (pump(stdout, STDOUT), pump(stderr, STDERR));
        async move {
            tokio::join!(a, b);
        }
    });
    let reader_control = control.clone();
    let reader = tokio::spawn(async move {
        let mut stdin = stdin;
        let close_stdin = |stdin: &mut Option<crate::runtime::exec::Input>| {
            if stdin.take().is_some() {
                let _ = reader_control.send(Control::CloseStdin);
            }
        };
        while let Some(msg) = incoming.next().await {
            let data: Bytes = match msg {
                Ok(Message::Binary(b)) => b,
                Ok(Message::Text(t)) => Bytes::copy_from_slice(t.as_bytes()),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            let Some((&channel, payload)) = data.split_first() else { continue };
            match channel {
                STDIN => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(payload).await.is_err() || w.flush().await.is_err() {
                            close_stdin(&mut stdin);
                        }
                    }
                }
                RESIZE => {
                    let size: serde_json::Value = serde_json::from_slice(payload).unwrap_or_default();
                    let dim = |k: &str| size[k].as_u64().and_then(|n| u16::try_from(n).ok());
                    if let (Some(width), Some(height)) = (dim("Width"), dim("Height")) {
                        let _ = reader_control.send(Control::Resize { width, height });
                    }
                }
                CLOSE if v5 && payload.first() == Some(&STDIN) => close_stdin(&mut stdin),
                _ => {}
            }
        }
        close_stdin(&mut stdin);
    });
    let _ = outputs.await;
    let status = match exit.await {
        Ok(Ok(code)) => exit_status(&command, code),
        Ok(Err(e)) => failure(&format!("Internal error occurred: {e}")),
        Err(_) => failure("Internal error occurred: the exec process was lost"),
    };
    let _ = out_tx.send(frame(ERROR, status.to_string().as_bytes())).await;
    let _ = out_tx.send(normal_close()).await;
    drop(out_tx);
    let _ = writer.await;
    reader.abort();
    drop(control);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_like_the_kubelet() {
        assert_eq!(exit_status(&["true".into()], 0)["status"], "Success");
        let s = exit_status(&["sh".into(), "-c".into(), "exit 7".into()], 7);
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0], serde_json::json!({"reason": "ExitCode", "message": "7"}));
    }
}
