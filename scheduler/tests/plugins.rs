//! Every filter and score plugin seen end to end: etcd, the API server, the scheduler running
//! in-process, and bindings read back from the API. One cluster; each check has its own group
//! of nodes (see `common`), so the checks do not disturb each other.

mod common;

use anyhow::{ensure, Result};
use common::{container, on_node, Env};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn filters_and_scores_end_to_end() -> Result<()> {
    let mut env = Env::start().await?;
    env.start_scheduler(common::test_config());
    filters(&env).await?;
    scores(&env).await?;
    Ok(())
}

async fn filters(env: &Env) -> Result<()> {
    // Resources: cpu, memory, ephemeral storage, pod count; init containers as Kubernetes counts them.
    env.node(
        "res-small",
        "res",
        "2",
        "2Gi",
        json!({"status": {"allocatable": {"pods": "3", "ephemeral-storage": "1Gi"}}}),
    )
    .await?;
    env.node("res-big", "res", "8", "16Gi", json!({})).await?;
    ensure!(env.place("needs-3cpu", "res", json!({"spec": {"containers": [container("3", "")]}})).await? == "res-big");
    let small = on_node("res-small");
    let mut init_big =
        json!({"spec": {"containers": [container("100m", "")], "initContainers": [common::init_container("3")]}});
    common::merge(&mut init_big, small.clone());
    env.refused("init-too-big", "res", init_big, &["1 Insufficient cpu"]).await?;
    // An init container's request counts against the max, not the sum: 1.5 + 1 fits in 2.
    let mut init_ok =
        json!({"spec": {"containers": [container("1", "")], "initContainers": [common::init_container("1500m")]}});
    common::merge(&mut init_ok, small.clone());
    ensure!(env.place("init-fits", "res", init_ok).await? == "res-small");
    let mut mem = json!({"spec": {"containers": [container("", "3Gi")]}});
    common::merge(&mut mem, small.clone());
    env.refused("too-much-memory", "res", mem, &["1 Insufficient memory"]).await?;
    let mut disk = json!({"spec": {"containers": [{"name": "c", "image": "busybox",
        "resources": {"requests": {"ephemeral-storage": "2Gi"}}}]}});
    common::merge(&mut disk, small.clone());
    env.refused("too-much-disk", "res", disk, &["1 Insufficient ephemeral-storage"]).await?;
    // The full message, in Kubernetes' form.
    let big = json!({"spec": {"containers": [container("9", "")]}});
    let msg = env.refused("fits-nowhere", "res", big, &[]).await?;
    ensure!(
        msg == "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.",
        "{msg}"
    );
    ensure!(env.place("second-pod", "res", small.clone()).await? == "res-small");
    ensure!(env.place("third-pod", "res", small.clone()).await? == "res-small");
    env.refused("fourth-pod", "res", small.clone(), &["1 Too many pods"]).await?;

    // Cordon.
    env.node("cordon-a", "cordon", "4", "4Gi", json!({"spec": {"unschedulable": true}})).await?;
    env.node("cordon-b", "cordon", "4", "4Gi", json!({})).await?;
    for i in 0..3 {
        ensure!(env.place(&format!("cordon-{i}"), "cordon", json!({})).await? == "cordon-b");
    }
    env.refused("on-cordoned", "cordon", on_node("cordon-a"), &["1 node(s) were unschedulable"]).await?;

    // nodeSelector and required node affinity, every operator.
    env.node("aff-a", "aff", "4", "4Gi", json!({"metadata": {"labels": {"disk": "ssd", "rank": "3"}}})).await?;
    env.node("aff-b", "aff", "4", "4Gi", json!({"metadata": {"labels": {"disk": "hdd", "rank": "7", "gpu": "yes"}}}))
        .await?;
    let expr = |key: &str, op: &str, values: &[&str]| {
        let mut e = json!({"key": key, "operator": op});
        if !values.is_empty() {
            e["values"] = json!(values);
        }
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [e]}]}}}}})
    };
    ensure!(env.place("sel-ssd", "aff", json!({"spec": {"nodeSelector": {"disk": "ssd"}}})).await? == "aff-a");
    for (i, (key, op, values, want)) in [
        ("disk", "In", &["hdd"][..], "aff-b"),
        ("disk", "NotIn", &["hdd"][..], "aff-a"),
        ("gpu", "Exists", &[][..], "aff-b"),
        ("gpu", "DoesNotExist", &[][..], "aff-a"),
        ("rank", "Gt", &["5"][..], "aff-b"),
        ("rank", "Lt", &["5"][..], "aff-a"),
    ]
    .into_iter()
    .enumerate()
    {
        let got = env.place(&format!("op-{i}"), "aff", expr(key, op, values)).await?;
        ensure!(got == want, "{key} {op} {values:?}: {got}, want {want}");
    }
    ensure!(env.place("by-name", "aff", on_node("aff-b")).await? == "aff-b");
    let terms_ored = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
    "nodeSelectorTerms": [
        {"matchExpressions": [{"key": "rank", "operator": "Gt", "values": ["100"]}]},
        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}
    ]}}}}});
    ensure!(env.place("terms-ored", "aff", terms_ored).await? == "aff-a");
    env.refused(
        "sel-nvme",
        "aff",
        json!({"spec": {"nodeSelector": {"disk": "nvme"}}}),
        &["node(s) didn't match Pod's node affinity/selector"],
    )
    .await?;

    // Taints and tolerations (NoSchedule, NoExecute).
    env.node(
        "taint-a",
        "taint",
        "4",
        "4Gi",
        json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}),
    )
    .await?;
    env.node(
        "taint-b",
        "taint",
        "4",
        "4Gi",
        json!({"spec": {"taints": [{"key": "maint", "value": "true", "effect": "NoExecute"}]}}),
    )
    .await?;
    env.refused(
        "intolerant",
        "taint",
        json!({}),
        &["1 node(s) had untolerated taint {dedicated: gpu}", "1 node(s) had untolerated taint {maint: true}"],
    )
    .await?;
    let tol = json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}});
    ensure!(env.place("tolerates-gpu", "taint", tol).await? == "taint-a");
    let tol = json!({"spec": {"tolerations": [{"key": "maint", "operator": "Exists", "effect": "NoExecute"}]}});
    ensure!(env.place("tolerates-maint", "taint", tol).await? == "taint-b");

    // Host ports.
    env.node("ports-a", "ports", "4", "4Gi", json!({})).await?;
    env.node("ports-b", "ports", "4", "4Gi", json!({})).await?;
    let port = |proto: &str| {
        json!({"spec": {"containers": [{"name": "c", "image": "busybox",
            "ports": [{"containerPort": 80, "hostPort": 8080, "protocol": proto}]}]}})
    };
    let mut first = port("TCP");
    common::merge(&mut first, on_node("ports-a"));
    ensure!(env.place("port-1", "ports", first).await? == "ports-a");
    ensure!(env.place("port-2", "ports", port("TCP")).await? == "ports-b");
    env.refused("port-3", "ports", port("TCP"), &["2 node(s) didn't have free ports for the requested pod ports"])
        .await?;
    env.place("port-udp", "ports", port("UDP")).await?;

    // Required inter-pod affinity and anti-affinity (the pod's and existing pods').
    env.node("ipa-a", "ipa", "4", "4Gi", json!({})).await?;
    env.node("ipa-b", "ipa", "4", "4Gi", json!({})).await?;
    let mut db = json!({"metadata": {"labels": {"app": "ipa-db"}}});
    common::merge(&mut db, on_node("ipa-a"));
    ensure!(env.place("ipa-db", "ipa", db).await? == "ipa-a");
    let term =
        |app: &str| json!([{"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": "kubernetes.io/hostname"}]);
    let with_db = json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("ipa-db")}}}});
    ensure!(env.place("near-db", "ipa", with_db).await? == "ipa-a");
    let away = json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("ipa-db")}}}});
    ensure!(env.place("away-from-db", "ipa", away).await? == "ipa-b");
    let nothing = json!({"spec": {"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("nobody")}}}});
    env.refused("needs-nobody", "ipa", nothing, &["node(s) didn't match pod affinity rules"]).await?;
    let mut loner = json!({"spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("ipa-web")}}}});
    common::merge(&mut loner, on_node("ipa-b"));
    ensure!(env.place("loner", "ipa", loner).await? == "ipa-b");
    let mut web = json!({"metadata": {"labels": {"app": "ipa-web"}}});
    common::merge(&mut web, on_node("ipa-b"));
    env.refused("web-by-loner", "ipa", web, &["1 node(s) didn't satisfy existing pods anti-affinity rules"]).await?;

    // Topology spread, DoNotSchedule: the filter wins over a strong preference.
    env.node("hard-a", "hard", "4", "4Gi", json!({"metadata": {"labels": {"rack": "r1"}}})).await?;
    env.node("hard-b", "hard", "4", "4Gi", json!({"metadata": {"labels": {"rack": "r2"}}})).await?;
    let mut first = json!({"metadata": {"labels": {"app": "hard"}}});
    common::merge(&mut first, on_node("hard-b"));
    env.place("hard-0", "hard", first).await?;
    let spread = |key: &str| {
        json!({"metadata": {"labels": {"app": "hard"}}, "spec": {
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "hard"}}}],
            "affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": [{"key": "rack", "operator": "In", "values": ["r2"]}]}}]}}
        }})
    };
    ensure!(env.place("hard-1", "hard", spread("rack")).await? == "hard-a");
    env.refused(
        "hard-missing-label",
        "hard",
        spread("no-such-label"),
        &["2 node(s) didn't match pod topology spread constraints (missing required label)"],
    )
    .await?;
    // With 1/1 placed, a third may go to either rack; a fourth must then balance it.
    let third = env.place("hard-2", "hard", spread("rack")).await?;
    let fourth = env.place("hard-3", "hard", spread("rack")).await?;
    ensure!(third != fourth, "hard-2 and hard-3 both on {third}");
    Ok(())
}

async fn scores(env: &Env) -> Result<()> {
    // Least allocated: the emptier of two equal nodes.
    env.node("least-a", "least", "4", "4Gi", json!({})).await?;
    env.node("least-b", "least", "4", "4Gi", json!({})).await?;
    let mut load = json!({"spec": {"containers": [container("2", "2Gi")]}});
    common::merge(&mut load, on_node("least-a"));
    env.place("least-load", "least", load).await?;
    ensure!(
        env.place("least-1", "least", json!({"spec": {"containers": [container("1", "1Gi")]}})).await? == "least-b"
    );

    // Balanced allocation: both nodes leave the same share free (least allocated ties at 49),
    // but only one keeps cpu and memory in balance.
    env.node("bal-a", "bal", "4", "4Gi", json!({})).await?;
    env.node("bal-b", "bal", "4", "4Gi", json!({})).await?;
    let mut even = json!({"spec": {"containers": [container("1", "1064Mi")]}});
    common::merge(&mut even, on_node("bal-a"));
    env.place("bal-even", "bal", even).await?;
    let mut lopsided = json!({"spec": {"containers": [container("2", "1Ki")]}});
    common::merge(&mut lopsided, on_node("bal-b"));
    env.place("bal-lopsided", "bal", lopsided).await?;
    ensure!(env.place("bal-1", "bal", json!({"spec": {"containers": [container("1", "1Gi")]}})).await? == "bal-a");

    // Preferred node affinity.
    env.node("pref-a", "pref", "4", "4Gi", json!({"metadata": {"labels": {"color": "red"}}})).await?;
    env.node("pref-b", "pref", "4", "4Gi", json!({"metadata": {"labels": {"color": "blue"}}})).await?;
    let prefer = |color: &str| {
        json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 10, "preference": {"matchExpressions": [{"key": "color", "operator": "In", "values": [color]}]}}]}}}})
    };
    ensure!(env.place("pref-blue", "pref", prefer("blue")).await? == "pref-b");
    ensure!(env.place("pref-red", "pref", prefer("red")).await? == "pref-a");
    ensure!(env.place("pref-blue-2", "pref", prefer("blue")).await? == "pref-b");

    // PreferNoSchedule taints are avoided while there is another choice.
    env.node(
        "soft-taint-a",
        "softtaint",
        "4",
        "4Gi",
        json!({"spec": {"taints": [{"key": "soft", "value": "x", "effect": "PreferNoSchedule"}]}}),
    )
    .await?;
    env.node("soft-taint-b", "softtaint", "4", "4Gi", json!({})).await?;
    for i in 0..3 {
        ensure!(env.place(&format!("softtaint-{i}"), "softtaint", json!({})).await? == "soft-taint-b");
    }

    // Preferred inter-pod affinity and anti-affinity pull toward / push away from a loaded node.
    env.node("ppa-a", "ppa", "4", "4Gi", json!({})).await?;
    env.node("ppa-b", "ppa", "4", "4Gi", json!({})).await?;
    let mut cache =
        json!({"metadata": {"labels": {"app": "ppa-cache"}}, "spec": {"containers": [container("1", "1Gi")]}});
    common::merge(&mut cache, on_node("ppa-a"));
    env.place("ppa-cache", "ppa", cache).await?;
    let term = json!([{"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "ppa-cache"}},
        "topologyKey": "kubernetes.io/hostname"}}]);
    let near = json!({"spec": {"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": term.clone()}}}});
    ensure!(env.place("ppa-near", "ppa", near).await? == "ppa-a");
    let far =
        json!({"spec": {"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": term}}}});
    ensure!(env.place("ppa-far", "ppa", far).await? == "ppa-b");

    // Topology spread, ScheduleAnyway: toward the emptier rack even when it is the busier node.
    env.node("any-a", "any", "4", "4Gi", json!({"metadata": {"labels": {"rack": "r1"}}})).await?;
    env.node("any-b", "any", "4", "4Gi", json!({"metadata": {"labels": {"rack": "r2"}}})).await?;
    let mut one = json!({"metadata": {"labels": {"app": "any"}}, "spec": {"containers": [container("10m", "10Mi")]}});
    common::merge(&mut one, on_node("any-a"));
    env.place("any-0", "any", one).await?;
    let mut ballast = json!({"spec": {"containers": [container("1", "1Gi")]}});
    common::merge(&mut ballast, on_node("any-b"));
    env.place("any-ballast", "any", ballast).await?;
    let soft = json!({"metadata": {"labels": {"app": "any"}}, "spec": {"topologySpreadConstraints": [
        {"maxSkew": 1, "topologyKey": "rack", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": {"app": "any"}}}]}});
    ensure!(env.place("any-1", "any", soft).await? == "any-b");

    // Default spreading of a controller's pods across nodes and zones: the second replica goes
    // to the other zone even though that node is the busiest.
    let zone = |z: &str| json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}});
    env.node("zone-a1", "zones", "4", "4Gi", zone("za")).await?;
    env.node("zone-a2", "zones", "4", "4Gi", zone("za")).await?;
    env.node("zone-b1", "zones", "4", "4Gi", zone("zb")).await?;
    let mut ballast = json!({"spec": {"containers": [container("1", "1Gi")]}});
    common::merge(&mut ballast, on_node("zone-b1"));
    env.place("zones-ballast", "zones", ballast).await?;
    let replica = json!({"metadata": {"labels": {"app": "zones"}, "ownerReferences": [{"apiVersion": "apps/v1",
        "kind": "ReplicaSet", "name": "zones", "uid": "5d6e1c8e-0000-4000-8000-00000000000a", "controller": true}]}});
    let first = env.place("zones-0", "zones", replica.clone()).await?;
    ensure!(first != "zone-b1", "the first replica avoids the busy node");
    ensure!(env.place("zones-1", "zones", replica.clone()).await? == "zone-b1");
    let third = env.place("zones-2", "zones", replica).await?;
    ensure!(third != first && third != "zone-b1", "the third replica takes the last empty node, got {third}");
    Ok(())
}
