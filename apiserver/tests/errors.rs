//! Bad input gets a Kubernetes `Status` with the right code, and nothing is stored.

use anyhow::Result;
use ferry_testkit::Cluster;
use serde_json::{json, Value};

const CM: &str = "/api/v1/namespaces/default/configmaps";
const JSON: Option<&str> = Some("application/json");

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialize")
}

async fn expect_status(
    c: &Cluster,
    method: &str,
    path: &str,
    ct: Option<&str>,
    b: Vec<u8>,
    code: u16,
    reason: &str,
) -> Result<Value> {
    let (got, v) = c.raw_json(method, path, ct, b).await?;
    assert_eq!(got, code, "{method} {path}: {v}");
    assert_eq!(v["kind"], "Status", "{v}");
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["code"], code);
    assert_eq!(v["reason"], reason, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    Ok(v)
}

#[tokio::test]
async fn every_bad_input_gets_a_status() -> Result<()> {
    let c = Cluster::start().await?;
    expect_status(&c, "POST", CM, JSON, b"{not json".to_vec(), 400, "BadRequest").await?;
    expect_status(&c, "POST", CM, JSON, b"[1,2]".to_vec(), 400, "BadRequest").await?;
    let big = json!({"metadata": {"name": "big"}, "data": {"x": "y".repeat(3 * 1024 * 1024 + 10)}});
    expect_status(&c, "POST", CM, JSON, body(&big), 413, "RequestEntityTooLarge").await?;
    expect_status(
        &c,
        "POST",
        CM,
        Some("application/vnd.kubernetes.protobuf"),
        b"k8s\0".to_vec(),
        415,
        "UnsupportedMediaType",
    )
    .await?;
    expect_status(&c, "PATCH", &format!("{CM}/x"), Some("text/plain"), b"{}".to_vec(), 415, "UnsupportedMediaType")
        .await?;
    expect_status(&c, "GET", "/api/v1/namespaces/default/widgets", None, Vec::new(), 404, "NotFound").await?;
    expect_status(&c, "GET", "/apis/nope.example.com/v1/things", None, Vec::new(), 404, "NotFound").await?;
    expect_status(&c, "GET", &format!("{CM}/missing"), None, Vec::new(), 404, "NotFound").await?;
    expect_status(&c, "PUT", CM, JSON, body(&json!({})), 405, "MethodNotAllowed").await?;
    expect_status(&c, "GET", &format!("{CM}?labelSelector=a%20in%20(b"), None, Vec::new(), 400, "BadRequest").await?;
    let e =
        expect_status(&c, "GET", &format!("{CM}?fieldSelector=spec.nodeName%3Dx"), None, Vec::new(), 400, "BadRequest")
            .await?;
    assert!(e["message"].as_str().unwrap_or("").contains("spec.nodeName"));
    expect_status(&c, "GET", &format!("{CM}?limit=abc"), None, Vec::new(), 400, "BadRequest").await?;
    expect_status(&c, "GET", &format!("{CM}?continue=garbage"), None, Vec::new(), 400, "BadRequest").await?;
    expect_status(&c, "GET", &format!("{CM}?watch=true&resourceVersion=abc"), None, Vec::new(), 400, "BadRequest")
        .await?;
    expect_status(
        &c,
        "POST",
        CM,
        JSON,
        body(&json!({"apiVersion": "v2", "kind": "ConfigMap", "metadata": {"name": "v"}})),
        400,
        "BadRequest",
    )
    .await?;
    expect_status(&c, "POST", CM, JSON, body(&json!({"kind": "Secret", "metadata": {"name": "v"}})), 400, "BadRequest")
        .await?;
    expect_status(
        &c,
        "POST",
        CM,
        JSON,
        body(&json!({"metadata": {"name": "v", "namespace": "other"}})),
        400,
        "BadRequest",
    )
    .await?;
    expect_status(&c, "POST", CM, JSON, body(&json!({"metadata": {"name": 7}})), 400, "BadRequest").await?;
    expect_status(
        &c,
        "POST",
        CM,
        JSON,
        body(&json!({"metadata": {"name": "rv", "resourceVersion": "5"}})),
        400,
        "BadRequest",
    )
    .await?;
    expect_status(
        &c,
        "PATCH",
        &format!("{CM}/x"),
        Some("application/json-patch+json"),
        b"{}".to_vec(),
        400,
        "BadRequest",
    )
    .await?;
    expect_status(
        &c,
        "DELETE",
        &format!("{CM}/x"),
        JSON,
        body(&json!({"propagationPolicy": "Sideways"})),
        400,
        "BadRequest",
    )
    .await?;

    // Invalid objects: 422 with causes naming the field.
    let v =
        expect_status(&c, "POST", CM, JSON, body(&json!({"metadata": {"name": "Bad_Name"}})), 422, "Invalid").await?;
    assert_eq!(v["details"]["causes"][0]["field"], "metadata.name", "{v}");
    assert_eq!(v["details"]["kind"], "ConfigMap");
    let v = expect_status(&c, "POST", CM, JSON, body(&json!({"metadata": {}})), 422, "Invalid").await?;
    assert_eq!(v["details"]["causes"][0]["reason"], "FieldValueRequired");
    let deploy = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "x"}},
                 "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    });
    let v =
        expect_status(&c, "POST", "/apis/apps/v1/namespaces/default/deployments", JSON, body(&deploy), 422, "Invalid")
            .await?;
    let fields: Vec<&str> =
        v["details"]["causes"].as_array().into_iter().flatten().filter_map(|c| c["field"].as_str()).collect();
    assert!(fields.contains(&"spec.replicas"), "{v}");
    assert!(fields.contains(&"spec.template.metadata.labels"), "{v}");

    // Unknown fields: rejected under Strict, warned about otherwise.
    let unknown = json!({"metadata": {"name": "u"}, "data": {}, "bogus": 1});
    let v = expect_status(&c, "POST", &format!("{CM}?fieldValidation=Strict"), JSON, body(&unknown), 400, "BadRequest")
        .await?;
    assert!(v["message"].as_str().unwrap_or("").contains("unknown field \"bogus\""), "{v}");

    // Nothing from any failed request was stored.
    let (_, list) = c.raw_json("GET", CM, None, Vec::new()).await?;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(0), "{list}");
    let (code, _) = c.raw_json("POST", CM, JSON, body(&unknown)).await?;
    assert_eq!(code, 201, "fieldValidation=Warn (the default) stores without the unknown field");
    let (_, stored) = c.raw_json("GET", &format!("{CM}/u"), None, Vec::new()).await?;
    assert!(stored.get("bogus").is_none());
    Ok(())
}

#[tokio::test]
async fn authentication_and_health() -> Result<()> {
    let c = Cluster::start().await?;
    let kc = kube::config::Kubeconfig::read_from(c.kubeconfig())?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    config.auth_info = Default::default();
    let anonymous = kube::Client::try_from(config.clone())?;
    let (code, body) = ferry_testkit::raw(&anonymous, "GET", "/api/v1/namespaces", None, Vec::new()).await?;
    assert_eq!(code, 401, "{}", String::from_utf8_lossy(&body));
    let status: Value = serde_json::from_slice(&body)?;
    assert_eq!(status["reason"], "Unauthorized");
    for probe in ["/healthz", "/livez", "/readyz"] {
        let (code, _) = ferry_testkit::raw(&anonymous, "GET", probe, None, Vec::new()).await?;
        assert_eq!(code, 200, "{probe}");
    }
    let (code, _) = ferry_testkit::raw(&anonymous, "GET", "/metrics", None, Vec::new()).await?;
    assert_eq!(code, 401);

    // A bad bearer token is refused even though the TLS layer is fine.
    config.auth_info.token = Some("wrong".to_string().into());
    let bad = kube::Client::try_from(config)?;
    let (code, _) = ferry_testkit::raw(&bad, "GET", "/api", None, Vec::new()).await?;
    assert_eq!(code, 401);

    c.raw("GET", "/api/v1/namespaces/default", None, Vec::new()).await?;
    let (code, metrics) = c.raw("GET", "/metrics", None, Vec::new()).await?;
    assert_eq!(code, 200);
    let text = String::from_utf8_lossy(&metrics);
    assert!(text.contains("apiserver_request_total{"), "{text}");
    assert!(text.contains("apiserver_request_duration_seconds_bucket"));
    Ok(())
}

#[tokio::test]
async fn bearer_tokens_from_a_token_file() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("tokens.csv");
    std::fs::write(&file, "s3cret-token,alice,1001,\"devs,ops\"\n")?;
    let path = file.clone();
    let c = Cluster::start_with(move |cfg| cfg.token_auth_file = Some(path)).await?;
    let kc = kube::config::Kubeconfig::read_from(c.kubeconfig())?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    config.auth_info = Default::default();
    config.auth_info.token = Some("s3cret-token".to_string().into());
    let alice = kube::Client::try_from(config)?;
    let (code, _) = ferry_testkit::raw(&alice, "GET", "/api/v1/namespaces", None, Vec::new()).await?;
    assert_eq!(code, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_etcd_is_down() -> Result<()> {
    let mut c = Cluster::start().await?;
    let (code, _) = c.raw("GET", "/readyz", None, Vec::new()).await?;
    assert_eq!(code, 200);
    c.etcd.kill();
    let started = std::time::Instant::now();
    let limit = std::time::Duration::from_secs(30);
    let (code, body) = tokio::time::timeout(limit, c.raw("GET", "/readyz", None, Vec::new())).await??;
    assert_eq!(code, 503, "{}", String::from_utf8_lossy(&body));
    // Requests that need etcd fail cleanly with a Status, not a hang or a 500.
    let get = c.raw_json("GET", "/api/v1/namespaces/default/configmaps/x", None, Vec::new());
    let (code, v) = tokio::time::timeout(limit, get).await??;
    assert_eq!(code, 503, "{v}");
    assert_eq!(v["kind"], "Status");
    assert!(started.elapsed() < limit, "answers come within the storage timeout");
    Ok(())
}
