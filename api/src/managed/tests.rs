use super::*;
use serde_json::json;

const NOW: &str = "2026-11-23T12:00:00Z";
const LATER: &str = "2026-11-23T12:05:00Z";

fn writer<'a>(manager: &'a str, now: &'a str) -> Writer<'a> {
    Writer { manager, api_version: "apps/v1", kind: "Deployment", subresource: None, scope: Scope::Main, now }
}

fn deployment(image: &str, replicas: i64, ports: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": image, "ports": ports}]}
            }
        }
    })
}

fn managers(obj: &Value) -> Vec<(String, String, Value)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or_default().to_owned(),
                        e["operation"].as_str().unwrap_or_default().to_owned(),
                        e["fieldsV1"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn apply_creates_and_records_the_applied_fields_only() {
    let cfg = deployment("nginx:1.25", 2, json!([{"containerPort": 80}]));
    let obj = apply(None, &cfg, &writer("kubectl", NOW), false).expect("apply");
    let m = managers(&obj);
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].0.as_str(), m[0].1.as_str()), ("kubectl", "Apply"));
    assert_eq!(
        m[0].2,
        json!({
            "f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}},
            "f:spec": {
                "f:replicas": {},
                "f:selector": {},
                "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
                        ".": {},
                        "f:image": {},
                        "f:name": {},
                        "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                    }}}
                }
            }
        })
    );
    assert_eq!(obj["metadata"]["managedFields"][0]["time"], NOW);
    assert_eq!(obj["metadata"]["managedFields"][0]["fieldsType"], "FieldsV1");
}

#[test]
fn reapply_removes_what_the_manager_stopped_applying() {
    let cfg = deployment("nginx:1.25", 2, json!([{"containerPort": 80}, {"containerPort": 443}]));
    let live = apply(None, &cfg, &writer("kubectl", NOW), false).expect("apply");
    let mut cfg2 = deployment("nginx:1.26", 2, json!([{"containerPort": 80}]));
    cfg2["metadata"]["labels"].as_object_mut().expect("labels").remove("tier");
    let obj = apply(Some(&live), &cfg2, &writer("kubectl", LATER), false).expect("reapply");
    assert_eq!(obj["metadata"]["labels"], json!({"app": "web"}));
    let c = &obj["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx:1.26");
    assert_eq!(c["ports"], json!([{"containerPort": 80}]));
    assert_eq!(obj["metadata"]["managedFields"][0]["time"], LATER);
}

#[test]
fn a_field_another_manager_set_is_a_conflict_unless_forced() {
    let cfg = deployment("nginx:1.25", 2, json!([{"containerPort": 80}]));
    let live = apply(None, &cfg, &writer("kubectl", NOW), false).expect("apply");
    // Another client scales with a merge patch: it now owns spec.replicas.
    let mut scaled = live.clone();
    scaled["spec"]["replicas"] = json!(5);
    track_update(Some(&live), &mut scaled, &writer("kubectl-scale", LATER));
    let m = managers(&scaled);
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[1].0, "kubectl-scale");
    assert_eq!(m[1].2, json!({"f:spec": {"f:replicas": {}}}));
    assert!(m[0].2["f:spec"].get("f:replicas").is_none(), "the applier lost replicas: {:?}", m[0].2);

    // Re-applying replicas: 2 conflicts.
    let err = apply(Some(&scaled), &cfg, &writer("kubectl", LATER), false).expect_err("conflict");
    let ApplyError::Conflicts(c) = &err else { panic!("{err:?}") };
    assert_eq!(c, &[Conflict { manager: "\"kubectl-scale\" using apps/v1".into(), field: ".spec.replicas".into() }]);
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1: .spec.replicas"
    );

    // Applying the value it already has is no conflict: ownership is shared.
    let mut same = cfg.clone();
    same["spec"]["replicas"] = json!(5);
    let shared = apply(Some(&scaled), &same, &writer("kubectl", LATER), false).expect("shared");
    let m = managers(&shared);
    assert!(m.iter().all(|(_, _, f)| f["f:spec"].get("f:replicas").is_some()), "{m:?}");

    // Forced: the applier takes replicas and the other manager's entry (now empty) goes.
    let forced = apply(Some(&scaled), &cfg, &writer("kubectl", LATER), true).expect("forced");
    assert_eq!(forced["spec"]["replicas"], 2);
    let m = managers(&forced);
    assert_eq!(m.len(), 1, "{m:?}");
}

#[test]
fn conflicts_list_every_field() {
    let cfg = deployment("nginx:1.25", 2, json!([{"containerPort": 80}]));
    let live = apply(None, &cfg, &writer("a", NOW), false).expect("apply");
    let other = deployment("nginx:1.26", 3, json!([{"containerPort": 80}]));
    let err = apply(Some(&live), &other, &writer("b", LATER), false).expect_err("conflicts");
    assert_eq!(
        err.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.replicas\n- .spec.template.spec.containers[name=\"app\"].image"
    );
}

#[test]
fn fields_another_applier_owns_survive_removal() {
    let cfg = deployment("nginx:1.25", 2, json!([{"containerPort": 80}]));
    let live = apply(None, &cfg, &writer("a", NOW), false).expect("a");
    let both = apply(Some(&live), &cfg, &writer("b", NOW), false).expect("b");
    let mut less = cfg.clone();
    less["metadata"]["labels"] = json!({"app": "web"});
    let obj = apply(Some(&both), &less, &writer("a", LATER), false).expect("a again");
    assert_eq!(obj["metadata"]["labels"]["tier"], "front", "b still applies tier");
    let obj = apply(Some(&obj), &less, &writer("b", LATER), false).expect("b again");
    assert!(obj["metadata"]["labels"].get("tier").is_none(), "nobody applies tier any more");
}

#[test]
fn updates_own_what_they_change_including_defaults() {
    let mut created = deployment("nginx:1.25", 2, json!([{"containerPort": 80}]));
    created["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    track_update(None, &mut created, &writer("kubectl-create", NOW));
    let m = managers(&created);
    assert_eq!((m[0].0.as_str(), m[0].1.as_str()), ("kubectl-create", "Update"));
    assert_eq!(m[0].2["f:spec"]["f:template"]["f:spec"]["f:restartPolicy"], json!({}));
    assert!(m[0].2["f:metadata"].get("f:name").is_none(), "name is never tracked");

    // A no-op update changes nothing.
    let mut same = created.clone();
    track_update(Some(&created), &mut same, &writer("other", LATER));
    assert_eq!(same, created);

    // Removing a field removes it from every manager.
    let mut removed = created.clone();
    removed["spec"]["template"]["spec"].as_object_mut().expect("spec").remove("restartPolicy");
    track_update(Some(&created), &mut removed, &writer("editor", LATER));
    let m = managers(&removed);
    assert_eq!(m.len(), 1, "the editor changed nothing it could own: {m:?}");
    assert!(m[0].2["f:spec"]["f:template"]["f:spec"].get("f:restartPolicy").is_none());
}

#[test]
fn clients_can_replace_or_clear_managed_fields() {
    let mut created = deployment("nginx:1.25", 2, json!([]));
    track_update(None, &mut created, &writer("kubectl-create", NOW));
    let mut cleared = created.clone();
    cleared["metadata"]["managedFields"] = json!([{}]);
    track_update(Some(&created), &mut cleared, &writer("x", LATER));
    assert!(cleared["metadata"].get("managedFields").is_none());
    let mut kept = created.clone();
    kept["metadata"]["managedFields"] = json!([]);
    track_update(Some(&created), &mut kept, &writer("x", LATER));
    assert_eq!(kept["metadata"]["managedFields"], created["metadata"]["managedFields"]);
}

#[test]
fn status_scope_tracks_status_only() {
    let w = Writer { subresource: Some("status"), scope: Scope::Status, ..writer("ctrl", NOW) };
    let live = apply(None, &deployment("nginx", 1, json!([])), &writer("kubectl", NOW), false).expect("apply");
    let mut cfg = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 9}, "status": {"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]}});
    let obj = apply(Some(&live), &cfg, &w, false).expect("status apply");
    assert_eq!(obj["spec"]["replicas"], 1, "spec is not touched through status");
    assert_eq!(obj["status"]["replicas"], 1);
    let m = managers(&obj);
    let entry = obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["manager"] == "ctrl"))
        .expect("ctrl entry");
    assert_eq!(entry["subresource"], "status");
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:status": {"f:conditions": {"k:{\"type\":\"Available\"}": {".": {}, "f:status": {}, "f:type": {}}}, "f:replicas": {}}})
    );
    assert_eq!(m.len(), 2);
    cfg["status"] = json!({"replicas": 1});
    let obj = apply(Some(&obj), &cfg, &w, false).expect("again");
    assert!(obj["status"].get("conditions").is_none(), "the condition it stopped applying is gone");
}

#[test]
fn bad_configurations_are_rejected() {
    let no_key = deployment("nginx", 1, json!([{"name": "http"}]));
    let err = apply(None, &no_key, &writer("k", NOW), false).expect_err("missing key");
    assert_eq!(
        err.to_string(),
        ".spec.template.spec.containers[name=\"app\"].ports: element 0: associative list with keys has an element that omits key field \"containerPort\" (and doesn't have default value)"
    );
    let dup = deployment("nginx", 1, json!([{"containerPort": 80}, {"containerPort": 80, "protocol": "TCP"}]));
    let err = apply(None, &dup, &writer("k", NOW), false).expect_err("duplicate");
    assert!(err.to_string().contains("duplicate entries for key"), "{err}");
    let mut mf = deployment("nginx", 1, json!([]));
    mf["metadata"]["managedFields"] = json!([]);
    assert!(matches!(apply(None, &mf, &writer("k", NOW), false), Err(ApplyError::Invalid(_))));
    let w = Writer { kind: "Widget", ..writer("k", NOW) };
    assert!(matches!(apply(None, &mf, &w, false), Err(ApplyError::Unsupported(_))));
}

#[test]
fn sets_and_atomic_lists() {
    let w = Writer { api_version: "v1", kind: "Pod", ..writer("a", NOW) };
    let cfg = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": ["x/a"]},
        "spec": {"containers": [{"name": "c", "image": "i", "args": ["1", "2"]}], "tolerations": [{"key": "k"}]}});
    let live = apply(None, &cfg, &w, false).expect("apply");
    let f = &live["metadata"]["managedFields"][0]["fieldsV1"];
    assert_eq!(f["f:metadata"]["f:finalizers"], json!({"v:\"x/a\"": {}}));
    assert_eq!(f["f:spec"]["f:tolerations"], json!({}));
    assert_eq!(f["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:args"], json!({}));
    // Another manager adds a finalizer: the set merges.
    let cfg_b = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "finalizers": ["x/b"]}});
    let wb = Writer { manager: "b", ..w };
    let obj = apply(Some(&live), &cfg_b, &wb, false).expect("b");
    assert_eq!(obj["metadata"]["finalizers"], json!(["x/a", "x/b"]));
}

#[test]
fn an_item_another_manager_has_fields_in_stays() {
    let w = Writer { api_version: "v1", kind: "Pod", ..writer("a", NOW) };
    let a = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "main", "image": "i"}, {"name": "side", "image": "s"}]}});
    let live = apply(None, &a, &w, false).expect("a");
    // b adds an env var to the side container with an ordinary update: it owns that, not the item.
    let mut updated = live.clone();
    updated["spec"]["containers"][1]["env"] = json!([{"name": "X", "value": "1"}]);
    track_update(Some(&live), &mut updated, &Writer { manager: "b", ..w });
    let live = updated;
    // a stops applying the side container: its image goes, the item stays with b's env.
    let a2 = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "main", "image": "i"}]}});
    let obj = apply(Some(&live), &a2, &w, false).expect("a again");
    let side = &obj["spec"]["containers"][1];
    assert_eq!(side["name"], "side");
    assert_eq!(side["env"], json!([{"name": "X", "value": "1"}]));
    assert!(side.get("image").is_none(), "{side}");
}
