//! `ferry describe`: an object as kubectl describes it — metadata, the fields that matter for its
//! kind (pods, deployments, replica sets, services, nodes), its conditions, and its events.

use crate::resolve::{self, Resource};
use anyhow::Result;
use chrono::Utc;
use serde_json::Value;
use std::fmt::Write as _;

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    v.pointer(path).and_then(Value::as_str).unwrap_or_default()
}

fn n(v: &Value, path: &str) -> i64 {
    v.pointer(path).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(x: &str) -> &str {
    if x.is_empty() {
        "<none>"
    } else {
        x
    }
}

/// `k=v` pairs of a map, one per line after the first, aligned under `indent`.
fn map_lines(v: Option<&Value>, sep: &str, indent: usize) -> String {
    let Some(m) = v.and_then(Value::as_object).filter(|m| !m.is_empty()) else { return "<none>".into() };
    m.iter()
        .map(|(k, v)| format!("{k}{sep}{}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        .collect::<Vec<_>>()
        .join(&format!("\n{}", " ".repeat(indent)))
}

fn field(out: &mut String, name: &str, value: &str) {
    let _ = writeln!(out, "{:<24}{}", format!("{name}:"), value);
}

fn selector(v: Option<&Value>) -> String {
    let labels = v.and_then(|s| s.get("matchLabels").or(Some(s))).and_then(Value::as_object);
    match labels {
        Some(m) if !m.is_empty() => {
            m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",")
        }
        _ => "<none>".into(),
    }
}

fn table(out: &mut String, indent: &str, header: &[&str], rows: &[Vec<String>]) {
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let dashes: Vec<String> = header.iter().map(|h| "-".repeat(h.len())).collect();
    let lines: Vec<&[String]> =
        [header.as_slice(), dashes.as_slice()].into_iter().chain(rows.iter().map(Vec::as_slice)).collect();
    let widths = crate::columns::widths(lines.iter().copied());
    for line in lines {
        let _ = writeln!(out, "{indent}{}", crate::columns::row(line, &widths, 2));
    }
}

/// A timestamp as kubectl prints it in describe (RFC 1123 with a numeric zone), or as given.
fn rfc1123(t: &str) -> String {
    match chrono::DateTime::parse_from_rfc3339(t) {
        Ok(d) => d.format("%a, %d %b %Y %H:%M:%S %z").to_string(),
        Err(_) => t.to_string(),
    }
}

/// A Node's conditions in kubectl's layout: heartbeat and transition times, reason, message.
fn node_conditions(out: &mut String, obj: &Value) {
    let conds = obj.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    if conds.is_empty() {
        let _ = writeln!(out, "Conditions:             <none>");
        return;
    }
    let _ = writeln!(out, "Conditions:");
    let rows: Vec<Vec<String>> = conds
        .iter()
        .map(|c| {
            vec![
                s(c, "/type").to_string(),
                s(c, "/status").to_string(),
                rfc1123(s(c, "/lastHeartbeatTime")),
                rfc1123(s(c, "/lastTransitionTime")),
                s(c, "/reason").to_string(),
                s(c, "/message").to_string(),
            ]
        })
        .collect();
    table(out, "  ", &["Type", "Status", "LastHeartbeatTime", "LastTransitionTime", "Reason", "Message"], &rows);
}

fn conditions(out: &mut String, obj: &Value) {
    let conds = obj.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    if conds.is_empty() {
        return;
    }
    let _ = writeln!(out, "Conditions:");
    let rows: Vec<Vec<String>> = conds
        .iter()
        .map(|c| vec![s(c, "/type").to_string(), s(c, "/status").to_string(), or_none(s(c, "/reason")).to_string()])
        .collect();
    table(out, "  ", &["Type", "Status", "Reason"], &rows);
}

fn containers(out: &mut String, spec: &Value, status: Option<&Value>, indent: &str) {
    let list = spec.get("containers").and_then(Value::as_array).cloned().unwrap_or_default();
    let _ = writeln!(out, "{indent}Containers:");
    for c in list {
        let name = s(&c, "/name");
        let _ = writeln!(out, "{indent} {name}:");
        let _ = writeln!(out, "{indent}  {:<14}{}", "Image:", s(&c, "/image"));
        let ports: Vec<String> = c
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| format!("{}/{}", n(p, "/containerPort"), p["protocol"].as_str().unwrap_or("TCP")))
            .collect();
        let _ = writeln!(out, "{indent}  {:<14}{}", "Port:", or_none(&ports.join(", ")));
        if let Some(st) = status.and_then(|s| {
            s.get("containerStatuses").and_then(Value::as_array).and_then(|l| l.iter().find(|x| x["name"] == name))
        }) {
            let state =
                st.get("state").and_then(Value::as_object).and_then(|m| m.keys().next().cloned()).unwrap_or_default();
            let mut state = state[..1].to_uppercase() + &state[1..];
            if let Some(reason) = st.pointer("/state/waiting/reason").or(st.pointer("/state/terminated/reason")) {
                state = format!("{state} ({})", reason.as_str().unwrap_or_default());
            }
            let _ = writeln!(out, "{indent}  {:<14}{}", "State:", state);
            let _ = writeln!(out, "{indent}  {:<14}{}", "Ready:", st["ready"].as_bool().unwrap_or(false));
            let _ = writeln!(out, "{indent}  {:<14}{}", "Restart Count:", n(st, "/restartCount"));
        }
        let env: Vec<String> = c
            .get("env")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|e| {
                format!("{}={}", s(e, "/name"), e.get("value").and_then(Value::as_str).unwrap_or("<set from source>"))
            })
            .collect();
        if !env.is_empty() {
            let _ = writeln!(out, "{indent}  Environment:");
            for e in env {
                let _ = writeln!(out, "{indent}    {e}");
            }
        }
    }
}

fn kind_details(out: &mut String, r: &Resource, obj: &Value) {
    match (r.group.as_str(), r.kind.as_str()) {
        ("", "Pod") => {
            field(out, "Node", or_none(s(obj, "/spec/nodeName")));
            field(out, "Start Time", or_none(s(obj, "/status/startTime")));
            field(out, "Status", or_none(s(obj, "/status/phase")));
            field(out, "IP", or_none(s(obj, "/status/podIP")));
            let owner = obj.pointer("/metadata/ownerReferences/0");
            field(
                out,
                "Controlled By",
                &owner.map_or("<none>".into(), |o| format!("{}/{}", s(o, "/kind"), s(o, "/name"))),
            );
            containers(out, &obj["spec"], obj.get("status"), "");
        }
        ("apps", "Deployment") | ("apps", "ReplicaSet") => {
            field(out, "Selector", &selector(obj.pointer("/spec/selector")));
            let want = obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1);
            if r.kind == "Deployment" {
                field(
                    out,
                    "Replicas",
                    &format!(
                        "{want} desired | {} updated | {} total | {} available | {} unavailable",
                        n(obj, "/status/updatedReplicas"),
                        n(obj, "/status/replicas"),
                        n(obj, "/status/availableReplicas"),
                        n(obj, "/status/unavailableReplicas")
                    ),
                );
                field(out, "StrategyType", or_none(s(obj, "/spec/strategy/type")));
                field(out, "MinReadySeconds", &n(obj, "/spec/minReadySeconds").to_string());
                if let Some(ru) = obj.pointer("/spec/strategy/rollingUpdate") {
                    let v = |k: &str| {
                        ru.get(k).map_or("<none>".into(), |x| x.as_str().map_or_else(|| x.to_string(), str::to_string))
                    };
                    field(
                        out,
                        "RollingUpdateStrategy",
                        &format!("{} max unavailable, {} max surge", v("maxUnavailable"), v("maxSurge")),
                    );
                }
            } else {
                field(out, "Replicas", &format!("{} current / {want} desired", n(obj, "/status/replicas")));
            }
            let _ = writeln!(out, "Pod Template:");
            let _ = writeln!(out, "  Labels:  {}", map_lines(obj.pointer("/spec/template/metadata/labels"), "=", 11));
            containers(out, obj.pointer("/spec/template/spec").unwrap_or(&Value::Null), None, "  ");
        }
        ("", "Service") => {
            field(out, "Selector", &selector(obj.pointer("/spec/selector")));
            field(out, "Type", or_none(s(obj, "/spec/type")));
            field(out, "IP", or_none(s(obj, "/spec/clusterIP")));
            for p in obj.pointer("/spec/ports").and_then(Value::as_array).into_iter().flatten() {
                let name = or_none(s(p, "/name")).to_string();
                field(out, "Port", &format!("{name}  {}/{}", n(p, "/port"), p["protocol"].as_str().unwrap_or("TCP")));
                let target = p
                    .get("targetPort")
                    .map_or(String::new(), |t| t.as_str().map_or_else(|| t.to_string(), str::to_string));
                field(out, "TargetPort", &format!("{target}/{}", p["protocol"].as_str().unwrap_or("TCP")));
                if let Some(np) = p.get("nodePort") {
                    field(out, "NodePort", &format!("{name}  {np}/{}", p["protocol"].as_str().unwrap_or("TCP")));
                }
            }
            field(out, "Session Affinity", or_none(s(obj, "/spec/sessionAffinity")));
        }
        ("", "Node") => {
            field(
                out,
                "Unschedulable",
                &obj.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false).to_string(),
            );
            let taints: Vec<String> = obj
                .pointer("/spec/taints")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|t| {
                    let v = s(t, "/value");
                    if v.is_empty() {
                        format!("{}:{}", s(t, "/key"), s(t, "/effect"))
                    } else {
                        format!("{}={v}:{}", s(t, "/key"), s(t, "/effect"))
                    }
                })
                .collect();
            field(out, "Taints", or_none(&taints.join("\n                        ")));
            node_conditions(out, obj);
            let addrs: Vec<String> = obj
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|a| format!("{}: {}", s(a, "/type"), s(a, "/address")))
                .collect();
            field(out, "Addresses", or_none(&addrs.join(", ")));
            field(out, "Capacity", &map_lines(obj.pointer("/status/capacity"), ": ", 24));
            field(out, "Allocatable", &map_lines(obj.pointer("/status/allocatable"), ": ", 24));
        }
        _ => {}
    }
}

/// Describe `name` of type `kind` (in `namespace`) and print it.
pub async fn describe(client: &kube::Client, namespace: &str, kind: &str, names: &[String]) -> Result<()> {
    let resources = resolve::discover(client).await?;
    let r = resolve::by_name(&resources, kind)?;
    let events_res = resolve::by_kind(&resources, "v1", "Event")?;
    let api = r.api(client, Some(namespace));
    let objects = if names.is_empty() {
        api.list(&Default::default()).await?.items
    } else {
        let mut v = Vec::new();
        for name in names {
            v.push(api.get(name).await?);
        }
        v
    };
    for (i, o) in objects.iter().enumerate() {
        let obj = serde_json::to_value(o)?;
        let mut out = String::new();
        field(&mut out, "Name", s(&obj, "/metadata/name"));
        if r.namespaced {
            field(&mut out, "Namespace", s(&obj, "/metadata/namespace"));
        }
        field(&mut out, "CreationTimestamp", s(&obj, "/metadata/creationTimestamp"));
        field(&mut out, "Labels", &map_lines(obj.pointer("/metadata/labels"), "=", 24));
        field(&mut out, "Annotations", &map_lines(obj.pointer("/metadata/annotations"), ": ", 24));
        kind_details(&mut out, r, &obj);
        if !(r.group.is_empty() && r.kind == "Node") {
            conditions(&mut out, &obj);
        }
        // Events about this object: in its namespace, or in any for a cluster-scoped object
        // (Node events live in `default`).
        let events_api = events_res.api(client, r.namespaced.then_some(namespace));
        let sel = format!("involvedObject.name={},involvedObject.kind={}", s(&obj, "/metadata/name"), r.kind);
        let mut events: Vec<Value> = events_api
            .list(&kube::api::ListParams::default().fields(&sel))
            .await?
            .items
            .iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect();
        let time = |e: &Value| {
            [s(e, "/lastTimestamp"), s(e, "/eventTime"), s(e, "/metadata/creationTimestamp")]
                .into_iter()
                .find(|t| !t.is_empty())
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        };
        events.sort_by_key(time);
        if events.is_empty() {
            let _ = writeln!(out, "Events:                 <none>");
        } else {
            let _ = writeln!(out, "Events:");
            let now = Utc::now();
            let rows: Vec<Vec<String>> = events
                .iter()
                .map(|e| {
                    let when = [s(e, "/lastTimestamp"), s(e, "/eventTime"), s(e, "/metadata/creationTimestamp")]
                        .into_iter()
                        .find(|t| !t.is_empty())
                        .map(|t| ferry_api::table::human_age(t, now))
                        .unwrap_or_else(|| "<unknown>".into());
                    let from = [s(e, "/source/component"), s(e, "/reportingComponent")]
                        .into_iter()
                        .find(|t| !t.is_empty())
                        .unwrap_or_default()
                        .to_string();
                    vec![
                        s(e, "/type").to_string(),
                        s(e, "/reason").to_string(),
                        when,
                        from,
                        s(e, "/message").trim().to_string(),
                    ]
                })
                .collect();
            table(&mut out, "  ", &["Type", "Reason", "Age", "From", "Message"], &rows);
        }
        if i > 0 {
            println!();
        }
        print!("{out}");
    }
    Ok(())
}
