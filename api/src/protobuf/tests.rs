use super::*;
use serde_json::json;

/// A minimal protobuf encoder for building test documents.
#[derive(Default)]
struct Enc(Vec<u8>);

impl Enc {
    fn varint(&mut self, mut v: u64) -> &mut Self {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return self;
            }
            self.0.push(b | 0x80);
        }
    }
    fn int(&mut self, tag: u32, v: i64) -> &mut Self {
        self.varint(u64::from(tag) << 3).varint(v as u64)
    }
    fn bytes(&mut self, tag: u32, b: &[u8]) -> &mut Self {
        self.varint((u64::from(tag) << 3) | 2).varint(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, tag: u32, s: &str) -> &mut Self {
        self.bytes(tag, s.as_bytes())
    }
    fn msg(&mut self, tag: u32, m: &Enc) -> &mut Self {
        self.bytes(tag, &m.0)
    }
}

fn envelope(api_version: &str, kind: &str, raw: &Enc) -> Vec<u8> {
    let mut tm = Enc::default();
    tm.str(1, api_version).str(2, kind);
    let mut u = Enc::default();
    u.msg(1, &tm).msg(2, raw).str(3, "").str(4, "");
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&u.0);
    out
}

fn entry(k: &str, v: &[u8]) -> Enc {
    let mut e = Enc::default();
    e.str(1, k).bytes(2, v);
    e
}

#[test]
fn a_configmap_as_kubectl_create_sends_it() {
    // ObjectMeta as gogo encodes it: every non-pointer field present, creationTimestamp an empty Time.
    let mut meta = Enc::default();
    meta.str(1, "settings").str(2, "").str(3, "default").str(5, "").str(6, "").int(7, 0).msg(8, &Enc::default());
    meta.msg(11, &entry("app", b"web"));
    let mut cm = Enc::default();
    cm.msg(1, &meta).msg(2, &entry("color", b"blue")).msg(2, &entry("empty", b"")).msg(3, &entry("bin", &[0, 1, 2]));
    let v = decode(&envelope("v1", "ConfigMap", &cm)).expect("decode");
    assert_eq!(
        v,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "default", "labels": {"app": "web"}},
            "data": {"color": "blue", "empty": ""},
            "binaryData": {"bin": "AAEC"}
        })
    );
}

#[test]
fn special_types_and_repeated_fields() {
    // A Deployment with replicas 0 (kept), an IntOrString, a Quantity, a timestamp and two containers.
    let mut surge = Enc::default();
    surge.int(1, 1).str(3, "25%");
    let mut rolling = Enc::default();
    rolling.msg(2, &surge);
    let mut strategy = Enc::default();
    strategy.str(1, "RollingUpdate").msg(2, &rolling);
    let mut cpu = Enc::default();
    cpu.str(1, "250m");
    let mut limits = Enc::default();
    limits.str(1, "cpu").msg(2, &cpu);
    let mut resources = Enc::default();
    resources.msg(1, &limits);
    let mut c1 = Enc::default();
    c1.str(1, "app").str(2, "nginx:1.27").msg(8, &resources).str(3, "sleep").str(3, "10");
    let mut c2 = Enc::default();
    c2.str(1, "side").str(2, "busybox");
    let mut pod_spec = Enc::default();
    pod_spec.msg(2, &c1).msg(2, &c2);
    let mut template = Enc::default();
    template.msg(2, &pod_spec);
    let mut time = Enc::default();
    time.int(1, 1_700_000_000);
    let mut meta = Enc::default();
    meta.str(1, "web").msg(8, &time);
    let mut spec = Enc::default();
    spec.int(1, 0).msg(3, &template).msg(4, &strategy);
    let mut d = Enc::default();
    d.msg(1, &meta).msg(2, &spec).msg(3, &Enc::default());
    let v = decode(&envelope("apps/v1", "Deployment", &d)).expect("decode");
    assert_eq!(v["metadata"]["creationTimestamp"], "2023-11-14T22:13:20Z");
    assert_eq!(v["spec"]["replicas"], 0);
    assert_eq!(v["spec"]["strategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}));
    let containers = &v["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["command"], json!(["sleep", "10"]));
    assert_eq!(containers[0]["resources"], json!({"limits": {"cpu": "250m"}}));
    assert_eq!(containers[1]["name"], "side");
    assert_eq!(v["status"], json!({}));
}

#[test]
fn bad_documents_are_errors_not_panics() {
    assert!(matches!(decode(b"{\"kind\":\"ConfigMap\"}"), Err(ProtoError::Malformed(_))));
    assert!(matches!(decode(b"k8s\0\x0a\xff"), Err(ProtoError::Malformed(_))));
    let widget = envelope("example.com/v1", "Widget", &Enc::default());
    assert!(matches!(decode(&widget), Err(ProtoError::UnsupportedKind { .. })));
    // Every truncation of a valid document fails cleanly.
    let mut meta = Enc::default();
    meta.str(1, "x").msg(11, &entry("a", b"b"));
    let mut cm = Enc::default();
    cm.msg(1, &meta).msg(2, &entry("k", b"v"));
    let doc = envelope("v1", "ConfigMap", &cm);
    for n in MAGIC.len()..doc.len() {
        let _ = decode(&doc[..n]);
    }
    // Wrong wire types for known fields are errors; unknown fields are skipped.
    let mut bad = Enc::default();
    bad.int(1, 5);
    assert!(decode(&envelope("v1", "ConfigMap", &bad)).is_err());
    let mut unknown = Enc::default();
    unknown.str(99, "future").int(98, 7);
    assert_eq!(
        decode(&envelope("v1", "ConfigMap", &unknown)).expect("decode"),
        json!({"apiVersion": "v1", "kind": "ConfigMap"})
    );
}
