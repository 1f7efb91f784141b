//! `pods/{name}/log` and `pods/{name}/exec`: checked here, then proxied to the nodelet of the
//! pod's node, as kube-apiserver proxies them to the kubelet.
//!
//! The node's address is its `InternalIP` (else `Hostname`, `ExternalIP`) with the port in
//! `status.daemonEndpoints.kubeletEndpoint.Port`. The connection is TLS: the nodelet's serving
//! certificate must be signed by the cluster CA for that address, and the API server presents
//! its kubelet-client certificate ([`crate::pki::KUBELET_CLIENT_USER`]), the only identity the
//! nodelet accepts. Logs stream back as `text/plain`; exec is a WebSocket upgrade
//! (`v5.channel.k8s.io` / `v4.channel.k8s.io`) whose bytes are copied both ways once the
//! nodelet has switched protocols — the WebSocket itself is the nodelet's.

use super::Api;
use crate::error::{from_storage, ApiError, Result};
use crate::request::Target;
use bytes::Bytes;
use futures::StreamExt;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// A response body.
pub type Body = BoxBody<Bytes, Infallible>;

/// Everything the proxy needs besides the REST layer.
pub struct NodeProxy {
    /// TLS for calls to nodelets (see [`crate::pki::Pki::kubelet_client_config`]).
    pub tls: Arc<rustls::ClientConfig>,
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default()
}

fn value<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn flag(q: &[(String, String)], name: &str) -> Result<bool> {
    match value(q, name) {
        None => Ok(false),
        Some("" | "1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(v) => Err(ApiError::bad_request(format!("invalid boolean value {v:?} for query parameter {name}"))),
    }
}

fn int(q: &[(String, String)], name: &str) -> Result<Option<i64>> {
    value(q, name)
        .map(|v| v.parse::<i64>().map_err(|_| ApiError::bad_request(format!("invalid value {v:?} for {name}"))))
        .transpose()
}

fn names(list: &Option<Vec<Value>>) -> Vec<String> {
    list.iter().flatten().filter_map(|c| c["name"].as_str().map(str::to_string)).collect()
}

/// The container a request names, or the only one; Kubernetes' messages otherwise.
fn pick_container(pod: &Value, name: &str, requested: Option<&str>) -> Result<String> {
    let spec = &pod["spec"];
    let containers = names(&spec["containers"].as_array().cloned());
    let init = names(&spec["initContainers"].as_array().cloned());
    let ephemeral = names(&spec["ephemeralContainers"].as_array().cloned());
    match requested.filter(|c| !c.is_empty()) {
        Some(c) => {
            if containers.iter().chain(&init).chain(&ephemeral).any(|n| n == c) {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}")))
            }
        }
        None => {
            if let Some(c) = pod
                .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
                .and_then(Value::as_str)
                .filter(|c| containers.iter().any(|n| n == c))
            {
                return Ok(c.to_string());
            }
            if containers.len() == 1 {
                return Ok(containers[0].clone());
            }
            let mut msg =
                format!("a container name must be specified for pod {name}, choose one of: [{}]", containers.join(" "));
            if !init.is_empty() {
                msg.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// The kubelet's checks of a container's status before serving its log.
fn check_log_status(pod: &Value, pod_name: &str, container: &str, previous: bool) -> Result<()> {
    let status = ["containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"]
        .iter()
        .filter_map(|k| pod["status"][k].as_array())
        .flatten()
        .find(|s| s["name"] == container);
    let Some(status) = status else {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{pod_name}\" is waiting to start: ContainerCreating"
        )));
    };
    let last_terminated = status.pointer("/lastState/terminated").is_some_and(Value::is_object);
    if previous {
        if !last_terminated {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{pod_name}\" not found"
            )));
        }
        return Ok(());
    }
    if let Some(waiting) = status.pointer("/state/waiting").filter(|w| w.is_object()) {
        if last_terminated {
            // Backing off after a crash: the last instance's log is there.
            return Ok(());
        }
        let reason = waiting["reason"].as_str().unwrap_or("");
        let why = match reason {
            "ErrImagePull" => "image can't be pulled",
            "ImagePullBackOff" => "trying and failing to pull image",
            other => other,
        };
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{pod_name}\" is waiting to start: {why}"
        )));
    }
    Ok(())
}

impl NodeProxy {
    async fn pod(&self, api: &Api, target: &Target) -> Result<(Value, String)> {
        let name = target.name.as_deref().unwrap_or_default().to_string();
        let key = target.res.key(target.namespace.as_deref(), &name);
        let kv = api.store.get(&key).await.map_err(|e| from_storage(target.res, &name, e))?;
        let kv = kv.ok_or_else(|| ApiError::not_found(target.res, &name))?;
        Ok((Api::served_value(target.res, &key, &kv.value, kv.mod_revision)?, name))
    }

    /// The nodelet endpoint of `node`: (host, port).
    async fn endpoint(&self, api: &Api, node: &str) -> Result<(String, u16)> {
        let nodes = api
            .table
            .lookup("", "v1", "nodes")
            .ok_or_else(|| ApiError::internal("the nodes resource is not served"))?;
        let key = nodes.key(None, node);
        let kv = api.store.get(&key).await.map_err(|e| from_storage(nodes, node, e))?;
        let kv = kv.ok_or_else(|| ApiError::bad_request(format!("node \"{node}\" not found")))?;
        let obj = Api::served_value(nodes, &key, &kv.value, kv.mod_revision)?;
        let addresses = obj.pointer("/status/addresses").and_then(Value::as_array).cloned().unwrap_or_default();
        let host = ["InternalIP", "Hostname", "ExternalIP"]
            .iter()
            .find_map(|t| addresses.iter().find(|a| a["type"] == *t).and_then(|a| a["address"].as_str()))
            .ok_or_else(|| ApiError::bad_request(format!("node \"{node}\" has no address")))?;
        let port = obj
            .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| ApiError::bad_request(format!("node \"{node}\" does not publish a nodelet port")))?;
        Ok((host.to_string(), port))
    }

    /// Open an HTTP/1.1 connection over TLS to a nodelet.
    async fn connect(&self, host: &str, port: u16) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> {
        let unreachable = |e: String| ApiError::unavailable(format!("error dialing backend: {e}"));
        let tcp = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect((host, port)))
            .await
            .map_err(|_| unreachable(format!("dial tcp {host}:{port}: i/o timeout")))?
            .map_err(|e| unreachable(format!("dial tcp {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let server_name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| unreachable(format!("invalid node address {host:?}")))?;
        let mut tls = (*self.tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
            .connect(server_name, tcp)
            .await
            .map_err(|e| unreachable(format!("tls: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "nodelet connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// GET pods/{name}/log.
    pub async fn log(&self, api: &Api, target: &Target, raw_query: Option<&str>) -> Result<Response<Body>> {
        let q = query_pairs(raw_query);
        let (follow, previous, timestamps) = (flag(&q, "follow")?, flag(&q, "previous")?, flag(&q, "timestamps")?);
        let (tail, limit, since_seconds) = (int(&q, "tailLines")?, int(&q, "limitBytes")?, int(&q, "sinceSeconds")?);
        let since_time = value(&q, "sinceTime").filter(|v| !v.is_empty());
        let (pod, name) = self.pod(api, target).await?;
        let invalid = |field: &str, v: i64, what: &str| {
            ApiError::unprocessable(format!(
                "PodLogOptions \"{name}\" is invalid: {field}: Invalid value: {v}: must be {what}"
            ))
        };
        if let Some(t) = tail.filter(|t| *t < 0) {
            return Err(invalid("tailLines", t, "greater than or equal to 0"));
        }
        if let Some(l) = limit.filter(|l| *l < 1) {
            return Err(invalid("limitBytes", l, "greater than 0"));
        }
        if let Some(s) = since_seconds.filter(|s| *s < 1) {
            return Err(invalid("sinceSeconds", s, "greater than 0"));
        }
        if since_seconds.is_some() && since_time.is_some() {
            return Err(ApiError::unprocessable(format!(
                "PodLogOptions \"{name}\" is invalid: []: Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
            )));
        }
        if let Some(t) = since_time {
            chrono::DateTime::parse_from_rfc3339(t)
                .map_err(|e| ApiError::bad_request(format!("invalid value {t:?} for sinceTime: {e}")))?;
        }
        let container = pick_container(&pod, &name, value(&q, "container"))?;
        let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
        if node.is_empty() {
            // Not scheduled yet: an empty log, as Kubernetes answers.
            return Ok(text_response(200, Bytes::new()));
        }
        check_log_status(&pod, &name, &container, previous)?;
        let (host, port) = self.endpoint(api, node).await?;
        let forward = {
            let mut forward = form_urlencoded::Serializer::new(String::new());
            for (k, on) in [("follow", follow), ("previous", previous), ("timestamps", timestamps)] {
                if on {
                    forward.append_pair(k, "true");
                }
            }
            for (k, v) in [("tailLines", tail), ("limitBytes", limit), ("sinceSeconds", since_seconds)] {
                if let Some(v) = v {
                    forward.append_pair(k, &v.to_string());
                }
            }
            if let Some(t) = since_time {
                forward.append_pair("sinceTime", t);
            }
            forward.finish()
        };
        let ns = target.namespace.as_deref().unwrap_or("default");
        let path = format!("/containerLogs/{}/{}/{}?{forward}", enc(ns), enc(&name), enc(&container));
        let mut sender = self.connect(&host, port).await?;
        let req = Request::get(path)
            .header(header::HOST, format!("{host}:{port}"))
            .body(Empty::<Bytes>::new())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| ApiError::unavailable(format!("nodelet: {e}")))?;
        if resp.status() != StatusCode::OK {
            return Err(backend_error(resp).await);
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
        let mut body = resp.into_body();
        tokio::spawn(async move {
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Ok(data) = frame.into_data() {
                    if tx.send(data).await.is_err() {
                        break;
                    }
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
        let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Ok(r)
    }

    /// GET/POST pods/{name}/exec: a WebSocket upgrade proxied to the nodelet.
    pub async fn exec(&self, api: &Api, target: &Target, mut req: Request<Incoming>) -> Result<Response<Body>> {
        let q = query_pairs(req.uri().query());
        let (stdin, stdout, stderr, tty) =
            (flag(&q, "stdin")?, flag(&q, "stdout")?, flag(&q, "stderr")?, flag(&q, "tty")?);
        let command: Vec<&str> = q.iter().filter(|(k, _)| k == "command").map(|(_, v)| v.as_str()).collect();
        let (pod, name) = self.pod(api, target).await?;
        let container = pick_container(&pod, &name, value(&q, "container"))?;
        if !(stdin || stdout || stderr) {
            return Err(ApiError::bad_request("you must specify at least 1 of stdin, stdout, stderr"));
        }
        if command.is_empty() {
            return Err(ApiError::bad_request("you must specify a command"));
        }
        let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
        if node.is_empty() {
            return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
        }
        let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        if phase == "Succeeded" || phase == "Failed" {
            return Err(ApiError::bad_request(format!(
                "cannot exec into a container in a completed pod; current phase is {phase}"
            )));
        }
        let is_ws = req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if !is_ws {
            // SPDY/3.1 (kubectl's fallback) is not served.
            return Err(ApiError::bad_request(
                "exec is served over WebSocket only (subprotocols v5.channel.k8s.io, v4.channel.k8s.io); SPDY is not supported",
            ));
        }
        let (host, port) = self.endpoint(api, node).await?;
        let forward = {
            let mut forward = form_urlencoded::Serializer::new(String::new());
            for c in &command {
                forward.append_pair("command", c);
            }
            for (k, on) in [("stdin", stdin), ("stdout", stdout), ("stderr", stderr), ("tty", tty)] {
                if on {
                    forward.append_pair(k, "true");
                }
            }
            forward.finish()
        };
        let ns = target.namespace.as_deref().unwrap_or("default");
        let path = format!("/exec/{}/{}/{}?{forward}", enc(ns), enc(&name), enc(&container));
        let mut out = Request::get(path).header(header::HOST, format!("{host}:{port}"));
        for h in [
            header::CONNECTION,
            header::UPGRADE,
            header::SEC_WEBSOCKET_KEY,
            header::SEC_WEBSOCKET_VERSION,
            header::SEC_WEBSOCKET_PROTOCOL,
        ] {
            for v in req.headers().get_all(&h) {
                out = out.header(&h, v);
            }
        }
        let out = out.body(Empty::<Bytes>::new()).map_err(|e| ApiError::internal(e.to_string()))?;
        let mut sender = self.connect(&host, port).await?;
        let mut resp = sender.send_request(out).await.map_err(|e| ApiError::unavailable(format!("nodelet: {e}")))?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(backend_error(resp).await);
        }
        let mut ours = Response::new(Empty::<Bytes>::new().map_err(|never| match never {}).boxed());
        *ours.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for h in [header::CONNECTION, header::UPGRADE, header::SEC_WEBSOCKET_ACCEPT, header::SEC_WEBSOCKET_PROTOCOL] {
            if let Some(v) = resp.headers().get(&h) {
                ours.headers_mut().insert(h, v.clone());
            }
        }
        let client_side = hyper::upgrade::on(&mut req);
        let node_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            let (client, node) = match tokio::join!(client_side, node_side) {
                (Ok(c), Ok(n)) => (c, n),
                (c, n) => {
                    tracing::debug!(client = c.is_ok(), node = n.is_ok(), "exec upgrade failed");
                    return;
                }
            };
            let (mut client, mut node) = (TokioIo::new(client), TokioIo::new(node));
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut node).await {
                tracing::debug!(error = %e, "exec stream ended with an error");
            }
        });
        Ok(ours)
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn text_response(code: u16, body: Bytes) -> Response<Body> {
    let mut r = Response::new(http_body_util::Full::new(body).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// A nodelet's error answer as a Status: its text is the message (as kube-apiserver does).
async fn backend_error(resp: Response<Incoming>) -> ApiError {
    let code = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let msg = String::from_utf8_lossy(&body).trim().to_string();
    match code {
        400 | 404 => ApiError::bad_request(msg),
        401 | 403 => ApiError::internal(format!("the nodelet refused the API server: {msg}")),
        _ => ApiError::internal(msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]},
            "status": {"containerStatuses": [
                {"name": "a", "state": {"running": {}}},
                {"name": "b", "state": {"waiting": {"reason": "ContainerCreating"}}}
            ]}
        })
    }

    #[test]
    fn container_choice_like_kubernetes() {
        let p = pod();
        assert_eq!(pick_container(&p, "web", Some("b")).unwrap(), "b");
        assert_eq!(pick_container(&p, "web", Some("i")).unwrap(), "i");
        let e = pick_container(&p, "web", Some("x")).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (400, "container x is not valid for pod web"));
        let e = pick_container(&p, "web", None).unwrap_err();
        assert_eq!(
            e.message,
            "a container name must be specified for pod web, choose one of: [a b] or one of the init containers: [i]"
        );
        let mut one = p.clone();
        one["spec"]["containers"] = json!([{"name": "only"}]);
        assert_eq!(pick_container(&one, "web", None).unwrap(), "only");
        let mut annotated = p;
        annotated["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/default-container": "b"});
        assert_eq!(pick_container(&annotated, "web", None).unwrap(), "b");
    }

    #[test]
    fn log_status_checks() {
        let p = pod();
        assert!(check_log_status(&p, "web", "a", false).is_ok());
        let e = check_log_status(&p, "web", "b", false).unwrap_err();
        assert_eq!(e.message, "container \"b\" in pod \"web\" is waiting to start: ContainerCreating");
        let e = check_log_status(&p, "web", "a", true).unwrap_err();
        assert_eq!(e.message, "previous terminated container \"a\" in pod \"web\" not found");
        let mut crashed = pod();
        crashed["status"]["containerStatuses"][1]["lastState"] = json!({"terminated": {"exitCode": 1}});
        crashed["status"]["containerStatuses"][1]["state"] = json!({"waiting": {"reason": "CrashLoopBackOff"}});
        assert!(check_log_status(&crashed, "web", "b", false).is_ok());
        assert!(check_log_status(&crashed, "web", "b", true).is_ok());
    }

    #[test]
    fn flags_parse_go_style() {
        let q = query_pairs(Some("follow=true&previous=0&tailLines=5&x=y&stdin=1"));
        assert!(flag(&q, "follow").unwrap());
        assert!(!flag(&q, "previous").unwrap());
        assert!(flag(&q, "stdin").unwrap());
        assert!(flag(&q, "x").is_err());
        assert_eq!(int(&q, "tailLines").unwrap(), Some(5));
        assert!(int(&q, "x").is_err());
    }
}
