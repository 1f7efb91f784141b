//! Server-side Table printing (`meta.k8s.io/v1` `Table`), the form `kubectl get` asks for with
//! `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! The columns and cells follow kube-apiserver's printers (`pkg/printers/internalversion/printers.go`)
//! for the kinds Ferry serves; anything else gets the default `Name` / `Created At` table of
//! apiserver `pkg/registry/rest/table.go`. As on the real server, rows always carry the wide
//! (`priority: 1`) cells; kubectl drops those columns unless `-o wide`.
//!
//! Everything works on the served JSON form of objects, is pure, and takes the current time as an
//! argument so output is deterministic.

use std::collections::BTreeSet;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use serde_json::{json, Map, Value};

use crate::selector::LabelSelector;

/// Column definitions for a resource (by group and plural, e.g. `("", "pods")`,
/// `("apps", "deployments")`). Each is `{"name","type","format","description","priority"}`.
pub fn columns(group: &str, plural: &str) -> Vec<Value> {
    printer(group, plural)
        .columns()
        .iter()
        .map(|&(name, ty, priority, description)| {
            let format = if name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": description, "priority": priority})
        })
        .collect()
}

/// The cells of one row for `obj` (served JSON form), matching [`columns`] including the wide
/// ones. `now` is the current time, for the AGE-like columns.
pub fn cells(group: &str, plural: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    match printer(group, plural) {
        Printer::Pod => pod_cells(obj, now),
        Printer::Deployment => deployment_cells(obj, now),
        Printer::ReplicaSet => replica_set_cells(obj, now),
        Printer::Service => service_cells(obj, now),
        Printer::Node => node_cells(obj, now),
        Printer::Namespace => vec![name(obj), text(obj, &["status", "phase"]), age(obj, now)],
        Printer::ConfigMap => vec![name(obj), (len(&obj["data"]) + len(&obj["binaryData"])).into(), age(obj, now)],
        Printer::Secret => vec![name(obj), text(obj, &["type"]), len(&obj["data"]).into(), age(obj, now)],
        Printer::Event { v1 } => event_cells(obj, v1, now),
        Printer::Endpoints => vec![name(obj), format_endpoints(obj).into(), age(obj, now)],
        Printer::Lease => vec![name(obj), text(obj, &["spec", "holderIdentity"]), age(obj, now)],
        Printer::EndpointSlice => vec![
            name(obj),
            text(obj, &["addressType"]),
            format_slice_ports(obj).into(),
            format_slice_endpoints(obj).into(),
            age(obj, now),
        ],
        Printer::ServiceAccount => vec![name(obj), len(&obj["secrets"]).into(), age(obj, now)],
        Printer::PriorityClass => vec![
            name(obj),
            obj["value"].as_i64().unwrap_or(0).into(),
            obj["globalDefault"].as_bool().unwrap_or(false).into(),
            age(obj, now),
            text(obj, &["preemptionPolicy"]),
        ],
        Printer::Default => default_cells(obj),
    }
}

/// A whole Table for `objects`:
/// `{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion","continue"?},
/// "columnDefinitions":[…],"rows":[{"cells":[…],"conditions"?:[…],"object"?:{…}}]}`.
///
/// `include_object` is the `includeObject` table option: `"None"` omits `row.object`, `"Object"`
/// embeds the whole object, and anything else (the default, `"Metadata"`) embeds a
/// `PartialObjectMetadata` holding the object's `metadata`. The caller rejects values other than
/// these three (the API server answers 400). `with_headers: false` omits `columnDefinitions`, as
/// for watch events after the first. Succeeded and Failed pods get the `Completed` row condition.
#[allow(clippy::too_many_arguments)]
pub fn table(
    group: &str,
    plural: &str,
    objects: &[Value],
    resource_version: &str,
    continue_token: Option<&str>,
    include_object: &str,
    with_headers: bool,
    now: DateTime<Utc>,
) -> Value {
    let pods = printer(group, plural) == Printer::Pod;
    let rows: Vec<Value> = objects
        .iter()
        .map(|obj| {
            let mut row = Map::new();
            row.insert("cells".into(), Value::Array(cells(group, plural, obj, now)));
            if let Some(conditions) = pods.then(|| pod_row_conditions(obj)).flatten() {
                row.insert("conditions".into(), conditions);
            }
            match include_object {
                "None" => {}
                "Object" => {
                    row.insert("object".into(), obj.clone());
                }
                _ => {
                    let metadata = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
                    let partial =
                        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": metadata});
                    row.insert("object".into(), partial);
                }
            }
            Value::Object(row)
        })
        .collect();
    let mut metadata = Map::new();
    if !resource_version.is_empty() {
        metadata.insert("resourceVersion".into(), resource_version.into());
    }
    if let Some(token) = continue_token.filter(|t| !t.is_empty()) {
        metadata.insert("continue".into(), token.into());
    }
    let mut table = Map::new();
    table.insert("kind".into(), "Table".into());
    table.insert("apiVersion".into(), "meta.k8s.io/v1".into());
    table.insert("metadata".into(), Value::Object(metadata));
    if with_headers {
        table.insert("columnDefinitions".into(), Value::Array(columns(group, plural)));
    }
    table.insert("rows".into(), Value::Array(rows));
    Value::Object(table)
}

/// The age of an object created at `created` (RFC 3339), as kubectl's AGE column shows it:
/// apimachinery `duration.HumanDuration` of `now - created` (`45s`, `2m30s`, `4h5m`, `3d2h`,
/// `2y10d`, …). An empty or unparsable timestamp gives `<unknown>`, a time more than a second
/// in the future `<invalid>`.
pub fn human_age(created: &str, now: DateTime<Utc>) -> String {
    parse_time(created).map_or_else(|| "<unknown>".to_string(), |t| human_duration(now - t))
}

/// apimachinery `duration.HumanDuration`: about two or three significant figures.
fn human_duration(d: TimeDelta) -> String {
    let secs = d.num_seconds();
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let (minutes, hours) = (secs / 60, secs / 3600);
    let (days, years) = (hours / 24, hours / 24 / 365);
    let pair = |big: i64, unit: &str, small: i64, small_unit: &str| match small {
        0 => format!("{big}{unit}"),
        _ => format!("{big}{unit}{small}{small_unit}"),
    };
    match () {
        _ if minutes < 10 => pair(minutes, "m", secs % 60, "s"),
        _ if minutes < 180 => format!("{minutes}m"),
        _ if hours < 8 => pair(hours, "h", minutes % 60, "m"),
        _ if hours < 48 => format!("{hours}h"),
        _ if hours < 24 * 8 => pair(days, "d", hours % 24, "h"),
        _ if hours < 24 * 365 * 2 => format!("{days}d"),
        _ if hours < 24 * 365 * 8 => pair(years, "y", days % 365, "d"),
        _ => format!("{years}y"),
    }
}

// --- column definitions ------------------------------------------------------------------------

/// Which printer handles a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Pod,
    Deployment,
    ReplicaSet,
    Service,
    Node,
    Namespace,
    ConfigMap,
    Secret,
    /// core/v1 Event, or events.k8s.io/v1 Event when `v1` (the same printer, other field names).
    Event {
        v1: bool,
    },
    Endpoints,
    EndpointSlice,
    Lease,
    ServiceAccount,
    PriorityClass,
    Default,
}

fn printer(group: &str, plural: &str) -> Printer {
    match (group, plural) {
        ("" | "core", "pods") => Printer::Pod,
        ("apps", "deployments") => Printer::Deployment,
        ("apps", "replicasets") => Printer::ReplicaSet,
        ("" | "core", "services") => Printer::Service,
        ("" | "core", "nodes") => Printer::Node,
        ("" | "core", "namespaces") => Printer::Namespace,
        ("" | "core", "configmaps") => Printer::ConfigMap,
        ("" | "core", "secrets") => Printer::Secret,
        ("" | "core", "events") => Printer::Event { v1: false },
        ("events.k8s.io", "events") => Printer::Event { v1: true },
        ("" | "core", "endpoints") => Printer::Endpoints,
        ("coordination.k8s.io", "leases") => Printer::Lease,
        ("discovery.k8s.io", "endpointslices") => Printer::EndpointSlice,
        ("" | "core", "serviceaccounts") => Printer::ServiceAccount,
        ("scheduling.k8s.io", "priorityclasses") => Printer::PriorityClass,
        _ => Printer::Default,
    }
}

/// (name, type, priority, description).
type Column = (&'static str, &'static str, u8, &'static str);

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some \
resources may allow a client to request the generation of an appropriate name automatically. Name is primarily \
intended for creation idempotence and configuration definition. Cannot be updated. More info: \
https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. \
It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. \
It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: \
https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const NAME: Column = ("Name", "string", 0, NAME_DOC);
const AGE: Column = ("Age", "string", 0, AGE_DOC);
const CONTAINERS: Column = ("Containers", "string", 1, "Names of each container in the template.");
const IMAGES: Column = ("Images", "string", 1, "Images referenced by each container in the template.");

impl Printer {
    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Pod => &[
                NAME,
                ("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
                ("Status", "string", 0, "The aggregate status of the containers in this pod."),
                ("Restarts", "string", 0, "Container restarts in this pod, and when the last one was."),
                AGE,
                ("IP", "string", 1, "IP address allocated to the pod."),
                ("Node", "string", 1, "The node this pod is scheduled to."),
                ("Nominated Node", "string", 1, "The node this pod preempts other pods on."),
                ("Readiness Gates", "string", 1, "Readiness gates that are True, of all."),
            ],
            Printer::Deployment => &[
                NAME,
                ("Ready", "string", 0, "Number of the pod with ready state"),
                ("Up-to-date", "string", 0, "Pods that have the desired template."),
                ("Available", "string", 0, "Available pods (ready for minReadySeconds)."),
                AGE,
                CONTAINERS,
                IMAGES,
                ("Selector", "string", 1, "Label selector for pods."),
            ],
            Printer::ReplicaSet => &[
                NAME,
                ("Desired", "integer", 0, "Replicas is the number of desired pods."),
                ("Current", "integer", 0, "Observed number of pods."),
                ("Ready", "integer", 0, "Number of ready pods."),
                AGE,
                CONTAINERS,
                IMAGES,
                ("Selector", "string", 1, "Label selector for pods."),
            ],
            Printer::Service => &[
                NAME,
                ("Type", "string", 0, "How the Service is exposed."),
                ("Cluster-IP", "string", 0, "The IP address of the service."),
                ("External-IP", "string", 0, "External addresses of the service."),
                ("Port(s)", "string", 0, "The list of ports that are exposed by this service."),
                AGE,
                ("Selector", "string", 1, "Pods that receive the traffic."),
            ],
            Printer::Node => &[
                NAME,
                ("Status", "string", 0, "The status of the node"),
                ("Roles", "string", 0, "The roles of the node"),
                AGE,
                ("Version", "string", 0, "Kubelet Version reported by the node."),
                ("Internal-IP", "string", 1, "List of addresses reachable to the node."),
                ("External-IP", "string", 1, "List of addresses reachable to the node."),
                ("OS-Image", "string", 1, "OS image reported by the node."),
                ("Kernel-Version", "string", 1, "Kernel version reported by the node."),
                ("Container-Runtime", "string", 1, "Container runtime version reported by the node."),
            ],
            Printer::Namespace => &[NAME, ("Status", "string", 0, "The status of the namespace"), AGE],
            Printer::ConfigMap => &[NAME, ("Data", "string", 0, "Data contains the configuration data."), AGE],
            Printer::Secret => &[
                NAME,
                ("Type", "string", 0, "Used to facilitate programmatic handling of secret data."),
                ("Data", "string", 0, "Data contains the secret data."),
                AGE,
            ],
            Printer::Event { .. } => &[
                ("Last Seen", "string", 0, "When the event last occurred."),
                ("Type", "string", 0, "Type of this event (Normal, Warning)."),
                ("Reason", "string", 0, "Short, machine understandable reason."),
                ("Object", "string", 0, "The object that this event is about."),
                ("Subobject", "string", 1, "The part of the object the event is about."),
                ("Source", "string", 1, "The component reporting this event."),
                ("Message", "string", 0, "Human-readable description."),
                ("First Seen", "string", 1, "When the event first occurred."),
                ("Count", "string", 1, "The number of times this event has occurred."),
                ("Name", "string", 1, NAME_DOC),
            ],
            Printer::Endpoints => {
                &[NAME, ("Endpoints", "string", 0, "The set of all endpoints is the union of all subsets."), AGE]
            }
            Printer::Lease => &[NAME, ("Holder", "string", 0, "Identity of the current holder."), AGE],
            Printer::EndpointSlice => &[
                NAME,
                ("AddressType", "string", 0, "Type of address carried by this EndpointSlice."),
                ("Ports", "string", 0, "Ports served by the endpoints in this slice."),
                ("Endpoints", "string", 0, "Addresses of the endpoints in this slice."),
                AGE,
            ],
            Printer::ServiceAccount => {
                &[NAME, ("Secrets", "string", 0, "Number of secrets of this ServiceAccount."), AGE]
            }
            Printer::PriorityClass => &[
                NAME,
                ("Value", "integer", 0, "The value of this priority class."),
                ("Global-Default", "boolean", 0, "Whether this is the default priority for pods without a class."),
                AGE,
                ("PreemptionPolicy", "string", 0, "The policy for preempting pods with lower priority."),
            ],
            Printer::Default => &[NAME, ("Created At", "date", 0, AGE_DOC)],
        }
    }
}

// --- per-kind cells ----------------------------------------------------------------------------

/// apiserver `rest/table.go`: the name and the creation time in RFC 3339 (UTC).
fn default_cells(obj: &Value) -> Vec<Value> {
    let created = parse_time(str_at(obj, &["metadata", "creationTimestamp"]))
        .map_or_else(|| "0001-01-01T00:00:00Z".to_string(), |t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
    vec![name(obj), created.into()]
}

/// printers.go `printPod`: readiness, the status reason (init containers, waiting/terminated
/// reasons, Terminating), restarts with the time of the last one, and the wide cells.
fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (spec, status) = (&pod["spec"], &pod["status"]);
    let phase = str_at(status, &["phase"]);
    let conditions = arr(&status["conditions"]);
    let mut reason = non_empty(str_at(status, &["reason"])).unwrap_or(phase).to_string();
    if conditions.iter().any(|c| c["type"] == "PodScheduled" && c["reason"] == "SchedulingGated") {
        reason = "SchedulingGated".into();
    }

    let init_specs = arr(&spec["initContainers"]);
    let sidecar = |c: &Value| c["restartPolicy"] == "Always";
    let is_sidecar = |name: &str| init_specs.iter().any(|c| c["name"] == name && sidecar(c));
    let total = arr(&spec["containers"]).len() + init_specs.iter().filter(|c| sidecar(c)).count();
    let (mut ready, mut restarts, mut sidecar_restarts) = (0, 0, 0);
    let (mut last_restart, mut sidecar_last_restart) = (None, None);
    let mut initializing = false;
    for (i, c) in arr(&status["initContainerStatuses"]).iter().enumerate() {
        let (count, finished) = (int_at(c, &["restartCount"]), last_termination(c));
        restarts += count;
        last_restart = last_restart.max(finished);
        let restartable = is_sidecar(str_at(c, &["name"]));
        if restartable {
            sidecar_restarts += count;
            sidecar_last_restart = sidecar_last_restart.max(finished);
        }
        let terminated = &c["state"]["terminated"];
        let waiting = str_at(c, &["state", "waiting", "reason"]);
        if terminated.is_object() && int_at(terminated, &["exitCode"]) == 0 {
            continue;
        }
        if restartable && c["started"] == true {
            ready += usize::from(c["ready"] == true);
            continue;
        }
        reason = if terminated.is_object() {
            format!("Init:{}", terminated_reason(terminated))
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            format!("Init:{waiting}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(conditions, "Initialized") {
        restarts = sidecar_restarts;
        last_restart = sidecar_last_restart;
        let (mut has_running, mut error_reason) = (false, None);
        for c in arr(&status["containerStatuses"]).iter().rev() {
            restarts += int_at(c, &["restartCount"]);
            last_restart = last_restart.max(last_termination(c));
            let terminated = &c["state"]["terminated"];
            let waiting = str_at(c, &["state", "waiting", "reason"]);
            if !waiting.is_empty() {
                reason = waiting.into();
            } else if terminated.is_object() {
                reason = terminated_reason(terminated);
                if int_at(terminated, &["exitCode"]) != 0 {
                    error_reason = Some(reason.clone());
                }
            } else if c["ready"] == true && c["state"]["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" {
            if has_running && condition_true(conditions, "Ready") {
                reason = "Running".into();
            } else if let Some(error) = error_reason {
                reason = error;
            } else if has_running {
                reason = "NotReady".into();
            }
        }
    }

    if !pod["metadata"]["deletionTimestamp"].is_null() {
        if status["reason"] == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }

    let restarts = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };
    let ip = non_empty(str_at(status, &["podIP"])).unwrap_or(str_at(status, &["podIPs", "0", "ip"]));
    let gates = arr(&spec["readinessGates"]);
    let readiness_gates = match gates.len() {
        0 => "<none>".to_string(),
        n => {
            let gate_true = |g: &Value| {
                conditions.iter().find(|c| c["type"] == g["conditionType"]).is_some_and(|c| c["status"] == "True")
            };
            format!("{}/{n}", gates.iter().filter(|g| gate_true(g)).count())
        }
    };
    vec![
        name(pod),
        format!("{ready}/{total}").into(),
        reason.into(),
        restarts.into(),
        age(pod, now),
        or_none(ip),
        or_none(str_at(spec, &["nodeName"])),
        or_none(str_at(status, &["nominatedNodeName"])),
        readiness_gates.into(),
    ]
}

/// Row conditions of a finished pod (kubectl uses them to spot completed rows).
fn pod_row_conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match str_at(pod, &["status", "phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}

fn terminated_reason(terminated: &Value) -> String {
    let signal = int_at(terminated, &["signal"]);
    match str_at(terminated, &["reason"]) {
        "" if signal != 0 => format!("Signal:{signal}"),
        "" => format!("ExitCode:{}", int_at(terminated, &["exitCode"])),
        reason => reason.to_string(),
    }
}

fn last_termination(container_status: &Value) -> Option<DateTime<Utc>> {
    parse_time(str_at(container_status, &["lastState", "terminated", "finishedAt"]))
}

fn deployment_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (spec, status) = (&obj["spec"], &obj["status"]);
    let (names, images) = container_cells(obj);
    let selector = match structured_selector(&spec["selector"]) {
        None => String::new(),
        Some(Ok(s)) => s,
        Some(Err(())) => "<invalid>".into(),
    };
    let ready = format!("{}/{}", int_at(status, &["readyReplicas"]), replicas(spec));
    let counts = [int_at(status, &["updatedReplicas"]), int_at(status, &["availableReplicas"])];
    vec![name(obj), ready.into(), counts[0].into(), counts[1].into(), age(obj, now), names, images, selector.into()]
}

fn replica_set_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (spec, status) = (&obj["spec"], &obj["status"]);
    let (names, images) = container_cells(obj);
    let selector = match structured_selector(&spec["selector"]) {
        Some(Err(())) => "<error>".to_string(),
        Some(Ok(s)) if !s.is_empty() => s,
        _ => "<none>".into(),
    };
    let (current, ready) = (int_at(status, &["replicas"]), int_at(status, &["readyReplicas"]));
    vec![name(obj), replicas(spec).into(), current.into(), ready.into(), age(obj, now), names, images, selector.into()]
}

fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let spec = &svc["spec"];
    let cluster_ip = non_empty(str_at(spec, &["clusterIP"])).unwrap_or(str_at(spec, &["clusterIPs", "0"]));
    let ports: Vec<String> = arr(&spec["ports"])
        .iter()
        .map(|p| {
            let (port, protocol) = (int_at(p, &["port"]), non_empty(str_at(p, &["protocol"])).unwrap_or("TCP"));
            match int_at(p, &["nodePort"]) {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    vec![
        name(svc),
        service_type(svc).into(),
        or_none(cluster_ip),
        service_external_ip(svc).into(),
        or_none(&ports.join(",")),
        age(svc, now),
        format_labels(&spec["selector"]).into(),
    ]
}

fn service_type(svc: &Value) -> &str {
    non_empty(str_at(svc, &["spec", "type"])).unwrap_or("ClusterIP")
}

/// printers.go `getServiceExternalIP` (wide: load-balancer addresses are not clipped).
fn service_external_ip(svc: &Value) -> String {
    let external: Vec<&str> = arr(&svc["spec"]["externalIPs"]).iter().filter_map(Value::as_str).collect();
    match service_type(svc) {
        "ClusterIP" | "NodePort" if external.is_empty() => "<none>".into(),
        "ClusterIP" | "NodePort" => external.join(","),
        "LoadBalancer" => {
            let ingress = arr(&svc["status"]["loadBalancer"]["ingress"]).iter();
            let lb: BTreeSet<&str> =
                ingress.filter_map(|i| non_empty(str_at(i, &["ip"])).or(non_empty(str_at(i, &["hostname"])))).collect();
            let all: Vec<&str> = lb.into_iter().chain(external).collect();
            if all.is_empty() {
                "<pending>".into()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).into(),
        _ => "<unknown>".into(),
    }
}

/// printers.go `printNode`: Ready/NotReady/Unknown plus SchedulingDisabled, and roles from
/// `node-role.kubernetes.io/<role>` and `kubernetes.io/role` labels.
fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let status = &node["status"];
    let ready = arr(&status["conditions"]).iter().rev().find(|c| c["type"] == "Ready");
    let mut state = vec![match ready {
        Some(c) if c["status"] == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node["spec"]["unschedulable"] == true {
        state.push("SchedulingDisabled");
    }
    let roles: BTreeSet<&str> = node["metadata"]["labels"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| match k.strip_prefix("node-role.kubernetes.io/") {
            Some(role) => non_empty(role),
            None if k == "kubernetes.io/role" => v.as_str().and_then(non_empty),
            None => None,
        })
        .collect();
    let address = |ty: &str| {
        let found = arr(&status["addresses"]).iter().find(|a| a["type"] == ty);
        or_none(found.map_or("", |a| str_at(a, &["address"])))
    };
    let info = |field: &str| non_empty(str_at(status, &["nodeInfo", field])).unwrap_or("<unknown>").into();
    vec![
        name(node),
        state.join(",").into(),
        or_none(&roles.into_iter().collect::<Vec<_>>().join(",")),
        age(node, now),
        text(status, &["nodeInfo", "kubeletVersion"]),
        address("InternalIP"),
        address("ExternalIP"),
        info("osImage"),
        info("kernelVersion"),
        info("containerRuntimeVersion"),
    ]
}

/// core/v1 field names of an Event and their events.k8s.io/v1 counterparts.
const EVENT_V1_NAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// printers.go `printEvent` (wide cells included).
fn event_cells(event: &Value, v1: bool, now: DateTime<Utc>) -> Vec<Value> {
    let field = |core: &'static str| {
        let renamed = EVENT_V1_NAMES.iter().find(|(c, _)| v1 && *c == core).map_or(core, |(_, v1)| *v1);
        &event[renamed]
    };
    let since = |v: &Value| v.as_str().and_then(parse_time).map(|t| human_duration(now - t));
    let first =
        since(field("firstTimestamp")).or_else(|| since(&event["eventTime"])).unwrap_or_else(|| "<unknown>".into());
    let mut last = since(field("lastTimestamp")).unwrap_or_else(|| first.clone());
    let series = &event["series"];
    let mut count = field("count").as_i64().unwrap_or(0);
    if series.is_object() {
        last = since(&series["lastObservedTime"]).unwrap_or_else(|| "<unknown>".into());
        count = int_at(series, &["count"]);
    } else if count == 0 {
        count = 1;
    }
    let involved = field("involvedObject");
    let kind = str_at(involved, &["kind"]).to_lowercase();
    let target = match str_at(involved, &["name"]) {
        "" => kind,
        object => format!("{kind}/{object}"),
    };
    let source = field("source");
    let component =
        non_empty(str_at(source, &["component"])).unwrap_or(field("reportingComponent").as_str().unwrap_or(""));
    let instance = non_empty(str_at(source, &["host"])).unwrap_or(str_at(event, &["reportingInstance"]));
    let source = if instance.is_empty() { component.to_string() } else { format!("{component}, {instance}") };
    vec![
        last.into(),
        text(event, &["type"]),
        text(event, &["reason"]),
        target.into(),
        text(involved, &["fieldPath"]),
        source.into(),
        field("message").as_str().unwrap_or("").trim().into(),
        first.into(),
        count.into(),
        name(event),
    ]
}

/// printers.go `formatEndpoints`: up to three `ip:port` (or bare `ip` for port-less subsets),
/// then ` + N more...`.
/// kubectl's EndpointSlice PORTS cell: the port numbers, `<unset>` for a port without one.
fn format_slice_ports(slice: &Value) -> String {
    let ports = arr(&slice["ports"]);
    if ports.is_empty() {
        return "<unset>".into();
    }
    ports
        .iter()
        .map(|p| p.get("port").and_then(Value::as_i64).map_or("<unset>".into(), |n| n.to_string()))
        .collect::<Vec<_>>()
        .join(",")
}

/// kubectl's EndpointSlice ENDPOINTS cell: the first three addresses and how many more.
fn format_slice_endpoints(slice: &Value) -> String {
    const MAX: usize = 3;
    let all: Vec<&str> =
        arr(&slice["endpoints"]).iter().flat_map(|e| arr(&e["addresses"]).iter().filter_map(Value::as_str)).collect();
    match all.len() {
        0 => "<unset>".into(),
        n if n > MAX => format!("{} + {} more...", all[..MAX].join(","), n - MAX),
        _ => all.join(","),
    }
}

fn format_endpoints(endpoints: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr(&endpoints["subsets"]);
    if subsets.is_empty() {
        return "<none>".into();
    }
    let (mut list, mut more, mut count) = (Vec::new(), false, 0);
    for subset in subsets {
        let addresses = arr(&subset["addresses"]);
        let ports = arr(&subset["ports"]);
        let ports: Vec<Option<i64>> =
            if ports.is_empty() { vec![None] } else { ports.iter().map(|p| Some(int_at(p, &["port"]))).collect() };
        for port in ports {
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                let ip = str_at(address, &["ip"]);
                list.push(match port {
                    None => ip.to_string(),
                    Some(port) if ip.contains(':') => format!("[{ip}]:{port}"),
                    Some(port) => format!("{ip}:{port}"),
                });
            }
        }
    }
    match more {
        true => format!("{} + {} more...", list.join(","), count - MAX),
        false => list.join(","),
    }
}

// --- helpers -----------------------------------------------------------------------------------

/// The value at `path` (object keys, or array indexes given as digits), `Null` if absent.
fn at<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    path.iter()
        .try_fold(v, |v, key| match v {
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => v.get(*key),
        })
        .unwrap_or(&Value::Null)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).as_str().unwrap_or("")
}

fn int_at(v: &Value, path: &[&str]) -> i64 {
    at(v, path).as_i64().unwrap_or(0)
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// Number of members of an object or elements of an array.
fn len(v: &Value) -> usize {
    v.as_object().map_or_else(|| arr(v).len(), Map::len)
}

fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

fn text(v: &Value, path: &[&str]) -> Value {
    str_at(v, path).into()
}

fn or_none(s: &str) -> Value {
    non_empty(s).unwrap_or("<none>").into()
}

fn name(obj: &Value) -> Value {
    text(obj, &["metadata", "name"])
}

fn age(obj: &Value, now: DateTime<Utc>) -> Value {
    human_age(str_at(obj, &["metadata", "creationTimestamp"]), now).into()
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

fn condition_true(conditions: &[Value], ty: &str) -> bool {
    conditions.iter().any(|c| c["type"] == ty && c["status"] == "True")
}

/// `spec.replicas`, defaulting to 1 as the API does.
fn replicas(spec: &Value) -> i64 {
    spec["replicas"].as_i64().unwrap_or(1)
}

/// printers.go `layoutContainerCells` over `spec.template.spec.containers`.
fn container_cells(obj: &Value) -> (Value, Value) {
    let containers = arr(at(obj, &["spec", "template", "spec", "containers"]));
    let join = |field: &str| containers.iter().map(|c| str_at(c, &[field])).collect::<Vec<_>>().join(",");
    (join("name").into(), join("image").into())
}

/// `labels.FormatLabels`: sorted `k=v` pairs, or `<none>`.
fn format_labels(map: &Value) -> String {
    let mut pairs: Vec<String> =
        map.as_object().into_iter().flatten().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".into()
    } else {
        pairs.join(",")
    }
}

/// A structured `metav1.LabelSelector` rendered as `LabelSelectorAsSelector(..).String()`;
/// `None` when absent, `Err` when it cannot be converted.
fn structured_selector(v: &Value) -> Option<Result<String, ()>> {
    if v.is_null() {
        return None;
    }
    let parsed = serde_json::from_value::<metav1::LabelSelector>(v.clone()).map_err(|_| ());
    Some(parsed.and_then(|s| LabelSelector::from_k8s(&s).map_err(|_| ())).map(|s| s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        parse_time("2024-05-01T12:00:00Z").unwrap()
    }

    /// RFC 3339 for `now - secs`.
    fn ago(secs: i64) -> String {
        (now() - TimeDelta::seconds(secs)).to_rfc3339_opts(SecondsFormat::Secs, true)
    }

    fn strs(cells: &[Value]) -> Vec<String> {
        cells.iter().map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_string)).collect()
    }

    fn pod(status: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-0", "namespace": "default", "creationTimestamp": ago(300)},
            "spec": {"nodeName": "node-1", "containers": [{"name": "app", "image": "nginx"}]},
            "status": status
        })
    }

    fn pod_status(p: &Value) -> String {
        cells("", "pods", p, now())[2].as_str().unwrap().to_string()
    }

    #[test]
    fn human_age_follows_human_duration() {
        let cases: &[(i64, &str)] = &[
            (-2, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (120, "2m"),
            (150, "2m30s"),
            (599, "9m59s"),
            (600, "10m"),
            (179 * 60 + 59, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 30 * 60, "3h30m"),
            (8 * 3600 - 60, "7h59m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (48 * 3600, "2d"),
            (53 * 3600, "2d5h"),
            (8 * 86400 - 3600, "7d23h"),
            (8 * 86400, "8d"),
            (729 * 86400, "729d"),
            (730 * 86400, "2y"),
            (740 * 86400, "2y10d"),
            (8 * 365 * 86400, "8y"),
            (20 * 365 * 86400 + 86400, "20y"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_age(&ago(*secs), now()), *want, "{secs}s");
        }
        assert_eq!(human_age("", now()), "<unknown>");
        assert_eq!(human_age("yesterday", now()), "<unknown>");
        assert_eq!(human_age("2024-05-01T11:59:30.123456Z", now()), "29s");
    }

    #[test]
    fn pod_running_with_restarts_and_wide_cells() {
        let mut p = pod(json!({
            "phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "example.com/gate", "status": "False"}],
            "containerStatuses": [{
                "name": "app", "ready": true, "restartCount": 3,
                "state": {"running": {"startedAt": ago(200)}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(210)}}
            }]
        }));
        p["spec"]["readinessGates"] = json!([{"conditionType": "example.com/gate"}]);
        let want = ["web-0", "1/1", "Running", "3 (3m30s ago)", "5m", "10.0.0.5", "node-1", "<none>", "0/1"];
        assert_eq!(strs(&cells("", "pods", &p, now())), want);
        assert_eq!(columns("", "pods").len(), want.len());
    }

    #[test]
    fn pod_status_edge_cases() {
        let pending = pod(json!({"phase": "Pending"}));
        let mut pending_unscheduled = pending.clone();
        pending_unscheduled["spec"]["nodeName"] = Value::Null;
        assert_eq!(
            strs(&cells("", "pods", &pending_unscheduled, now())),
            ["web-0", "0/1", "Pending", "0", "5m", "<none>", "<none>", "<none>", "<none>"]
        );

        let creating = pod(json!({"phase": "Pending", "containerStatuses": [
            {"name": "app", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}
        ]}));
        assert_eq!(pod_status(&creating), "ContainerCreating");

        let crash = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "app", "ready": false, "restartCount": 5,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}},
            "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "finishedAt": ago(40)}}
        }]}));
        assert_eq!(strs(&cells("", "pods", &crash, now()))[1..4], ["0/1", "CrashLoopBackOff", "5 (40s ago)"]);

        let mut terminating = pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}}
        ]}));
        terminating["metadata"]["deletionTimestamp"] = ago(1).into();
        assert_eq!(pod_status(&terminating), "Terminating");
        let mut node_lost = terminating.clone();
        node_lost["status"]["reason"] = "NodeLost".into();
        assert_eq!(pod_status(&node_lost), "Unknown");

        let completed = pod(json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "app", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ]}));
        assert_eq!(pod_status(&completed), "Completed");
        let mut deleted_completed = completed.clone();
        deleted_completed["metadata"]["deletionTimestamp"] = ago(1).into();
        assert_eq!(pod_status(&deleted_completed), "Completed");

        let failed = pod(json!({"phase": "Failed", "containerStatuses": [
            {"name": "app", "restartCount": 0, "state": {"terminated": {"exitCode": 137}}}
        ]}));
        assert_eq!(pod_status(&failed), "ExitCode:137");
        let signalled = pod(json!({"phase": "Failed", "containerStatuses": [
            {"name": "app", "restartCount": 0, "state": {"terminated": {"exitCode": 0, "signal": 9}}}
        ]}));
        assert_eq!(pod_status(&signalled), "Signal:9");

        let evicted = pod(json!({"phase": "Failed", "reason": "Evicted"}));
        assert_eq!(pod_status(&evicted), "Evicted");
        let gated = pod(json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}
        ]}));
        assert_eq!(pod_status(&gated), "SchedulingGated");
    }

    #[test]
    fn pod_completed_with_running_sibling() {
        let statuses = json!([
            {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}},
            {"name": "job", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ]);
        let mut p = pod(json!({"phase": "Running", "containerStatuses": statuses,
            "conditions": [{"type": "Ready", "status": "False"}]}));
        p["spec"]["containers"] = json!([{"name": "app"}, {"name": "job"}]);
        assert_eq!(strs(&cells("", "pods", &p, now()))[1..3], ["1/2", "NotReady"]);
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
        assert_eq!(pod_status(&p), "Running");
    }

    #[test]
    fn pod_init_containers() {
        let mut p = pod(json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "init", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
        ], "containerStatuses": [
            {"name": "app", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}}
        ]}));
        p["spec"]["initContainers"] = json!([{"name": "init", "image": "busybox"}]);
        assert_eq!(pod_status(&p), "Init:0/1");

        p["status"]["initContainerStatuses"][0]["state"] = json!({"running": {}});
        assert_eq!(pod_status(&p), "Init:0/1");

        p["status"]["initContainerStatuses"][0]["state"] = json!({"waiting": {"reason": "ImagePullBackOff"}});
        assert_eq!(pod_status(&p), "Init:ImagePullBackOff");

        p["status"]["initContainerStatuses"][0]["state"] = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
        p["status"]["initContainerStatuses"][0]["restartCount"] = 2.into();
        assert_eq!(strs(&cells("", "pods", &p, now()))[2..4], ["Init:Error", "2"]);

        p["status"]["initContainerStatuses"][0]["state"] =
            json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
        assert_eq!(strs(&cells("", "pods", &p, now()))[2..4], ["PodInitializing", "0"]);

        // A restartable (sidecar) init container counts toward READY and restarts.
        p["spec"]["initContainers"] = json!([{"name": "init", "restartPolicy": "Always"}]);
        p["status"]["initContainerStatuses"][0] =
            json!({"name": "init", "ready": true, "started": true, "restartCount": 1, "state": {"running": {}}});
        p["status"]["containerStatuses"][0] =
            json!({"name": "app", "ready": true, "restartCount": 0, "state": {"running": {}}});
        p["status"]["phase"] = "Running".into();
        assert_eq!(strs(&cells("", "pods", &p, now()))[1..4], ["2/2", "Running", "1"]);
    }

    #[test]
    fn deployment_and_replicaset() {
        let template = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
            {"name": "app", "image": "nginx:1.25"}, {"name": "sidecar", "image": "envoy:1.29"}
        ]}});
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(3 * 86400)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "tier": "fe"}}, "template": template},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        let cells_d = cells("apps", "deployments", &d, now());
        assert_eq!(cells_d[2], json!(3));
        assert_eq!(
            strs(&cells_d),
            ["web", "2/3", "3", "2", "3d", "app,sidecar", "nginx:1.25,envoy:1.29", "app=web,tier=fe"]
        );

        let rs = json!({
            "metadata": {"name": "web-7d4b9c", "creationTimestamp": ago(3600)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]}, "template": template},
            "status": {"replicas": 3, "readyReplicas": 1}
        });
        let cells_rs = cells("apps", "replicasets", &rs, now());
        assert_eq!(cells_rs[1..4], [json!(3), json!(3), json!(1)]);
        assert_eq!(
            strs(&cells_rs),
            ["web-7d4b9c", "3", "3", "1", "60m", "app,sidecar", "nginx:1.25,envoy:1.29", "app=web,tier in (be,fe)"]
        );
        let no_selector = json!({"metadata": {"name": "x"}, "spec": {}});
        assert_eq!(strs(&cells("apps", "replicasets", &no_selector, now()))[4..], ["<unknown>", "", "", "<none>"]);
        assert_eq!(strs(&cells("apps", "deployments", &no_selector, now()))[1], "0/1");
    }

    #[test]
    fn services() {
        let meta = json!({"name": "web", "creationTimestamp": ago(90)});
        let svc = |spec: Value, status: Value| json!({"metadata": meta, "spec": spec, "status": status});
        let cluster = svc(
            json!({"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
                "selector": {"k8s-app": "dns"}}),
            json!({}),
        );
        assert_eq!(
            strs(&cells("", "services", &cluster, now())),
            ["web", "ClusterIP", "10.96.0.10", "<none>", "53/UDP,53/TCP", "90s", "k8s-app=dns"]
        );
        let node_port = svc(
            json!({"type": "NodePort", "clusterIP": "10.96.1.1", "externalIPs": ["1.2.3.4"],
                "ports": [{"port": 80, "protocol": "TCP"}, {"port": 443, "nodePort": 30443, "protocol": "TCP"}]}),
            json!({}),
        );
        assert_eq!(
            strs(&cells("", "services", &node_port, now()))[1..5],
            ["NodePort", "10.96.1.1", "1.2.3.4", "80/TCP,443:30443/TCP"]
        );
        let lb = svc(json!({"type": "LoadBalancer", "clusterIP": "10.96.2.2", "ports": []}), json!({}));
        assert_eq!(strs(&cells("", "services", &lb, now()))[2..5], ["10.96.2.2", "<pending>", "<none>"]);
        let lb_ready = svc(
            json!({"type": "LoadBalancer", "clusterIP": "10.96.2.2", "externalIPs": ["9.9.9.9"]}),
            json!({"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example.com"}]}}),
        );
        assert_eq!(strs(&cells("", "services", &lb_ready, now()))[3], "5.6.7.8,lb.example.com,9.9.9.9");
        let headless = svc(json!({"clusterIP": "None", "ports": [{"port": 80}]}), json!({}));
        assert_eq!(strs(&cells("", "services", &headless, now()))[1..5], ["ClusterIP", "None", "<none>", "80/TCP"]);
        let external = svc(json!({"type": "ExternalName", "externalName": "db.example.com"}), json!({}));
        assert_eq!(strs(&cells("", "services", &external, now()))[1..4], ["ExternalName", "<none>", "db.example.com"]);
    }

    #[test]
    fn nodes() {
        let node = json!({
            "metadata": {"name": "node-1", "creationTimestamp": ago(10 * 86400), "labels": {
                "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": "",
                "kubernetes.io/role": "infra", "kubernetes.io/hostname": "node-1"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [
                    {"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": "node-1"}
                ],
                "nodeInfo": {"kubeletVersion": "v1.30.0", "osImage": "Ubuntu 22.04.4 LTS",
                    "kernelVersion": "6.5.0-1018", "containerRuntimeVersion": "containerd://1.7.13"}
            }
        });
        assert_eq!(
            strs(&cells("", "nodes", &node, now())),
            [
                "node-1",
                "Ready,SchedulingDisabled",
                "control-plane,infra,master",
                "10d",
                "v1.30.0",
                "192.168.1.10",
                "<none>",
                "Ubuntu 22.04.4 LTS",
                "6.5.0-1018",
                "containerd://1.7.13"
            ]
        );
        let bare = json!({"metadata": {"name": "n2", "creationTimestamp": ago(30)},
            "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(
            strs(&cells("", "nodes", &bare, now())),
            ["n2", "NotReady", "<none>", "30s", "", "<none>", "<none>", "<unknown>", "<unknown>", "<unknown>"]
        );
        let new = json!({"metadata": {"name": "n3"}});
        assert_eq!(strs(&cells("", "nodes", &new, now()))[1], "Unknown");
    }

    #[test]
    fn small_kinds() {
        let meta = |name: &str| json!({"name": name, "namespace": "default", "creationTimestamp": ago(7200)});
        let ns = json!({"metadata": meta("kube-system"), "status": {"phase": "Active"}});
        assert_eq!(strs(&cells("", "namespaces", &ns, now())), ["kube-system", "Active", "120m"]);

        let cm = json!({"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells("", "configmaps", &cm, now()), [json!("cfg"), json!(3), json!("120m")]);

        let secret =
            json!({"metadata": meta("tls"), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(
            cells("", "secrets", &secret, now()),
            [json!("tls"), json!("kubernetes.io/tls"), json!(2), json!("120m")]
        );

        let sa = json!({"metadata": meta("default"), "secrets": [{"name": "default-token"}]});
        assert_eq!(cells("", "serviceaccounts", &sa, now()), [json!("default"), json!(1), json!("120m")]);

        let lease = json!({"metadata": meta("kube-scheduler"), "spec": {"holderIdentity": "node-1_4f2a"}});
        assert_eq!(
            strs(&cells("coordination.k8s.io", "leases", &lease, now())),
            ["kube-scheduler", "node-1_4f2a", "120m"]
        );
        let free = json!({"metadata": meta("idle"), "spec": {}});
        assert_eq!(strs(&cells("coordination.k8s.io", "leases", &free, now())), ["idle", "", "120m"]);
    }

    #[test]
    fn endpoints() {
        let ep =
            |subsets: Value| json!({"metadata": {"name": "web", "creationTimestamp": ago(45)}, "subsets": subsets});
        let two = ep(json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]));
        assert_eq!(strs(&cells("", "endpoints", &two, now())), ["web", "10.0.0.1:80,10.0.0.2:80", "45s"]);
        let many = ep(json!([
            {"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}, {"port": 443}]},
            {"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 8080}]}
        ]));
        assert_eq!(strs(&cells("", "endpoints", &many, now()))[1], "10.0.0.1:80,10.0.0.2:80,10.0.0.1:443 + 2 more...");
        let v6 = ep(json!([{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]));
        assert_eq!(strs(&cells("", "endpoints", &v6, now()))[1], "[fd00::1]:80");
        let headless = ep(json!([{"addresses": [{"ip": "10.0.0.9"}]}]));
        assert_eq!(strs(&cells("", "endpoints", &headless, now()))[1], "10.0.0.9");
        assert_eq!(strs(&cells("", "endpoints", &ep(Value::Null), now()))[1], "<none>");
    }

    #[test]
    fn endpoint_slices() {
        let s = json!({"metadata": {"name": "web-x1", "creationTimestamp": ago(45)}, "addressType": "IPv4",
            "ports": [{"port": 80}, {"name": "any"}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]});
        assert_eq!(
            strs(&cells("discovery.k8s.io", "endpointslices", &s, now())),
            ["web-x1", "IPv4", "80,<unset>", "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...", "45s"]
        );
    }

    #[test]
    fn events_core_and_v1() {
        let core = json!({
            "metadata": {"name": "web-0.17c3", "namespace": "default", "creationTimestamp": ago(600)},
            "involvedObject": {"kind": "Pod", "name": "web-0", "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "type": "Warning", "message": "Back-off restarting failed container\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(30), "count": 7
        });
        let want = [
            "30s",
            "Warning",
            "BackOff",
            "pod/web-0",
            "spec.containers{app}",
            "kubelet, node-1",
            "Back-off restarting failed container",
            "10m",
            "7",
            "web-0.17c3",
        ];
        assert_eq!(strs(&cells("", "events", &core, now())), want);
        assert_eq!(columns("", "events").len(), want.len());

        let v1 = json!({
            "metadata": {"name": "web.17c4", "namespace": "default", "creationTimestamp": ago(200)},
            "regarding": {"kind": "Deployment", "name": "web"}, "reason": "ScalingReplicaSet", "type": "Normal",
            "note": "Scaled up replica set web-7d4b9c to 3", "eventTime": "2024-05-01T11:56:40.000000Z",
            "reportingController": "deployment-controller", "reportingInstance": "", "action": "Scale"
        });
        assert_eq!(
            strs(&cells("events.k8s.io", "events", &v1, now())),
            [
                "3m20s",
                "Normal",
                "ScalingReplicaSet",
                "deployment/web",
                "",
                "deployment-controller",
                "Scaled up replica set web-7d4b9c to 3",
                "3m20s",
                "1",
                "web.17c4"
            ]
        );

        let series = json!({
            "metadata": {"name": "e"}, "involvedObject": {"kind": "Node"}, "reportingComponent": "kubelet",
            "reportingInstance": "node-1", "eventTime": ago(3600),
            "series": {"count": 4, "lastObservedTime": ago(5)}
        });
        assert_eq!(
            strs(&cells("", "events", &series, now())),
            ["5s", "", "", "node", "", "kubelet, node-1", "", "60m", "4", "e"]
        );
    }

    #[test]
    fn default_printer_for_unknown_resources() {
        let cols = columns("rbac.authorization.k8s.io", "roles");
        assert_eq!(cols.len(), 2);
        assert_eq!(cols[0]["format"], "name");
        assert_eq!((cols[1]["name"].as_str(), cols[1]["type"].as_str()), (Some("Created At"), Some("date")));
        let role = json!({"metadata": {"name": "reader", "creationTimestamp": "2024-04-30T10:00:00+02:00"}});
        assert_eq!(
            strs(&cells("rbac.authorization.k8s.io", "roles", &role, now())),
            ["reader", "2024-04-30T08:00:00Z"]
        );
        let bare = json!({"metadata": {"name": "x"}});
        assert_eq!(strs(&cells("example.com", "widgets", &bare, now()))[1], "0001-01-01T00:00:00Z");
    }

    #[test]
    fn column_definitions_shape() {
        for (group, plural) in [
            ("", "pods"),
            ("apps", "deployments"),
            ("apps", "replicasets"),
            ("", "services"),
            ("", "nodes"),
            ("", "namespaces"),
            ("", "configmaps"),
            ("", "secrets"),
            ("", "events"),
            ("events.k8s.io", "events"),
            ("", "endpoints"),
            ("coordination.k8s.io", "leases"),
            ("", "serviceaccounts"),
        ] {
            let cols = columns(group, plural);
            for c in &cols {
                let keys: Vec<&str> = c.as_object().unwrap().keys().map(String::as_str).collect();
                assert_eq!(keys.len(), 5, "{plural}: {keys:?}");
                assert_eq!(c["format"] == "name", c["name"] == "Name", "{plural}");
                assert!(!c["description"].as_str().unwrap().is_empty());
            }
            let names: Vec<&str> = cols.iter().map(|c| c["name"].as_str().unwrap()).collect();
            assert!(names.contains(&"Name"), "{plural}");
            let obj = json!({"metadata": {"name": "x"}});
            assert_eq!(cells(group, plural, &obj, now()).len(), cols.len(), "{plural}");
        }
        let pods = columns("", "pods");
        let wide: Vec<&str> = pods.iter().filter(|c| c["priority"] == 1).map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(wide, ["IP", "Node", "Nominated Node", "Readiness Gates"]);
        assert_eq!(pods[3]["type"], "string");
    }

    #[test]
    fn table_shape_and_include_object() {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "default", "creationTimestamp": ago(60), "labels": {"a": "b"}},
            "data": {"k": "v"}});
        let t = table("", "configmaps", std::slice::from_ref(&cm), "42", Some("tok"), "Metadata", true, now());
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"], json!({"resourceVersion": "42", "continue": "tok"}));
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 3);
        assert_eq!(
            t["rows"],
            json!([{
                "cells": ["cfg", 1, "60s"],
                "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": cm["metadata"]}
            }])
        );
        // The default is Metadata.
        assert_eq!(table("", "configmaps", std::slice::from_ref(&cm), "42", None, "", true, now())["rows"], t["rows"]);

        let full = table("", "configmaps", std::slice::from_ref(&cm), "42", None, "Object", false, now());
        assert_eq!(full["metadata"], json!({"resourceVersion": "42"}));
        assert!(full.get("columnDefinitions").is_none());
        assert_eq!(full["rows"][0]["object"], cm);

        let none = table("", "configmaps", std::slice::from_ref(&cm), "", Some(""), "None", true, now());
        assert_eq!(none["metadata"], json!({}));
        assert_eq!(none["rows"], json!([{"cells": ["cfg", 1, "60s"]}]));

        let empty = table("apps", "deployments", &[], "7", None, "Metadata", true, now());
        assert_eq!(empty["rows"], json!([]));
        assert_eq!(empty["columnDefinitions"].as_array().unwrap().len(), 8);
    }

    #[test]
    fn finished_pods_get_row_conditions() {
        let done = pod(json!({"phase": "Succeeded"}));
        let failed = pod(json!({"phase": "Failed"}));
        let running = pod(json!({"phase": "Running"}));
        let t = table("", "pods", &[done, failed, running], "1", None, "None", false, now());
        assert_eq!(
            t["rows"][0]["conditions"],
            json!([{
                "type": "Completed", "status": "True", "reason": "Succeeded",
                "message": "The pod has completed successfully."
            }])
        );
        assert_eq!(t["rows"][1]["conditions"][0]["reason"], "Failed");
        assert!(t["rows"][2].get("conditions").is_none());
    }
}
