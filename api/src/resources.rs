//! The resource table: every kind Ferry serves, described once.
//!
//! The API server's REST handlers, discovery, storage keys and watch cache are all driven by
//! this table; adding a kind means adding a row here and a [`KindOps`](crate::kinds::KindOps)
//! implementation, not a handler.

use crate::kinds::{self, KindOps};

/// Subresources a kind may expose next to its main endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`: writes touch `.status` only; the main endpoint ignores `.status`.
    Status,
    /// `/scale`: an `autoscaling/v1` Scale view of `.spec.replicas`.
    Scale,
    /// `/binding` (pods): assign a pod to a node.
    Binding,
    /// `/finalize` (namespaces): update `.spec.finalizers`.
    Finalize,
    /// `/log` (pods): a container's log, proxied to the pod's node.
    Log,
    /// `/exec` (pods): run a command in a container (WebSocket), proxied to the pod's node.
    Exec,
}

impl Subresource {
    /// The URL path segment.
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Finalize => "finalize",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
        }
    }

    /// Parse a URL path segment.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "status" => Some(Subresource::Status),
            "scale" => Some(Subresource::Scale),
            "binding" => Some(Subresource::Binding),
            "finalize" => Some(Subresource::Finalize),
            "log" => Some(Subresource::Log),
            "exec" => Some(Subresource::Exec),
            _ => None,
        }
    }
}

/// When `metadata.generation` is bumped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationPolicy {
    /// The kind has no generation (ConfigMap, Secret, …).
    None,
    /// Starts at 1, bumps when `.spec` changes.
    Spec,
    /// Starts at 1, bumps when `.spec` or `metadata.annotations` change (Deployment).
    SpecAndAnnotations,
}

/// What happens to `.status` sent on the main endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusPolicy {
    /// The kind has no status subresource: status (if any) is an ordinary field.
    Inline,
    /// Status is owned by `/status`: ignored on update, reset on create.
    ResetOnCreate,
    /// Status is owned by `/status` on update, but may be set on create (Node).
    KeepOnCreate,
}

/// One served resource.
pub struct ResourceInfo {
    /// API group; `""` for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// Plural resource name used in URLs, e.g. `deployments`.
    pub plural: &'static str,
    /// Singular name, e.g. `deployment`.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names for `kubectl get po`.
    pub short_names: &'static [&'static str],
    /// Categories, e.g. `all`.
    pub categories: &'static [&'static str],
    /// Subresources served.
    pub subresources: &'static [Subresource],
    /// Group segment of the etcd key (`core` for the core group); may differ from `group`
    /// when two API groups share one store (events.k8s.io Events live with core Events).
    pub storage_group: &'static str,
    /// Resource segment of the etcd key.
    pub storage_plural: &'static str,
    /// Generation semantics.
    pub generation: GenerationPolicy,
    /// Status semantics.
    pub status: StatusPolicy,
    /// Field selector labels supported beyond `metadata.name` / `metadata.namespace`,
    /// with the JSON path (as segments) they read in the *stored* object.
    pub fields: &'static [(&'static str, &'static [&'static str])],
    /// Typed behaviour of this kind (decode, default, validate).
    pub ops: &'static dyn KindOps,
    /// Whether DELETE answers with the deleted object rather than a `Status` (Kubernetes does
    /// so for pods, services and service accounts; clients' generated types expect it).
    pub returns_deleted_object: bool,
}

impl std::fmt::Debug for ResourceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceInfo")
            .field("group", &self.group)
            .field("version", &self.version)
            .field("plural", &self.plural)
            .finish()
    }
}

/// The verbs every resource in the table supports on its main endpoint.
pub const VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

impl ResourceInfo {
    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `Kind` + `List`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `plural.group` (or just `plural` for core), as used in error messages.
    pub fn qualified_name(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group` (or just `Kind`), as used in Invalid error messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_string()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// Whether this resource serves `sub`.
    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// Whether `.status` is owned by a `/status` subresource.
    pub fn has_status_subresource(&self) -> bool {
        self.status != StatusPolicy::Inline
    }

    /// etcd key prefix for all objects of this resource, with a trailing slash.
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/{}/", self.storage_group, self.storage_plural)
    }

    /// etcd key prefix for one namespace (namespaced) or for everything (cluster-scoped).
    pub fn namespace_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{}/", self.key_prefix(), ns),
            _ => self.key_prefix(),
        }
    }

    /// etcd key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{}/{}", self.key_prefix(), ns, name),
            _ => format!("{}{}", self.key_prefix(), name),
        }
    }

    /// Whether `field` may be used in a field selector on this resource.
    pub fn supports_field(&self, field: &str) -> bool {
        field == "metadata.name" || field == "metadata.namespace" || self.fields.iter().any(|(f, _)| *f == field)
    }

    /// Whether two resources are served from the same etcd prefix.
    pub fn shares_storage_with(&self, other: &ResourceInfo) -> bool {
        self.storage_group == other.storage_group && self.storage_plural == other.storage_plural
    }
}

/// All resources Ferry serves.
#[derive(Debug)]
pub struct ResourceTable {
    resources: Vec<&'static ResourceInfo>,
}

impl Default for ResourceTable {
    fn default() -> Self {
        Self::builtin()
    }
}

const POD_FIELDS: &[(&str, &[&str])] = &[
    ("spec.nodeName", &["spec", "nodeName"]),
    ("spec.restartPolicy", &["spec", "restartPolicy"]),
    ("spec.schedulerName", &["spec", "schedulerName"]),
    ("spec.serviceAccountName", &["spec", "serviceAccountName"]),
    ("spec.hostNetwork", &["spec", "hostNetwork"]),
    ("status.phase", &["status", "phase"]),
    ("status.podIP", &["status", "podIP"]),
    ("status.nominatedNodeName", &["status", "nominatedNodeName"]),
];

const EVENT_FIELDS: &[(&str, &[&str])] = &[
    ("involvedObject.kind", &["involvedObject", "kind"]),
    ("involvedObject.namespace", &["involvedObject", "namespace"]),
    ("involvedObject.name", &["involvedObject", "name"]),
    ("involvedObject.uid", &["involvedObject", "uid"]),
    ("involvedObject.apiVersion", &["involvedObject", "apiVersion"]),
    ("involvedObject.resourceVersion", &["involvedObject", "resourceVersion"]),
    ("involvedObject.fieldPath", &["involvedObject", "fieldPath"]),
    ("reason", &["reason"]),
    ("reportingComponent", &["reportingComponent"]),
    ("source", &["source", "component"]),
    ("type", &["type"]),
];

const NAMESPACE_FIELDS: &[(&str, &[&str])] = &[("status.phase", &["status", "phase"])];
const NODE_FIELDS: &[(&str, &[&str])] = &[("spec.unschedulable", &["spec", "unschedulable"])];
const SECRET_FIELDS: &[(&str, &[&str])] = &[("type", &["type"])];
const REPLICASET_FIELDS: &[(&str, &[&str])] = &[("status.replicas", &["status", "replicas"])];
const SERVICE_FIELDS: &[(&str, &[&str])] =
    &[("spec.clusterIP", &["spec", "clusterIP"]), ("spec.type", &["spec", "type"])];

macro_rules! resource {
    ($name:ident { $($field:ident : $value:expr),* $(,)? }) => {
        static $name: ResourceInfo = ResourceInfo {
            $($field: $value),*
        };
    };
}

resource!(NAMESPACES {
    group: "",
    version: "v1",
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    namespaced: false,
    short_names: &["ns"],
    categories: &[],
    subresources: &[Subresource::Status, Subresource::Finalize],
    storage_group: "core",
    storage_plural: "namespaces",
    generation: GenerationPolicy::None,
    status: StatusPolicy::ResetOnCreate,
    fields: NAMESPACE_FIELDS,
    ops: &kinds::NAMESPACE,
    returns_deleted_object: false,
});
resource!(NODES {
    group: "",
    version: "v1",
    kind: "Node",
    plural: "nodes",
    singular: "node",
    namespaced: false,
    short_names: &["no"],
    categories: &[],
    subresources: &[Subresource::Status],
    storage_group: "core",
    storage_plural: "nodes",
    generation: GenerationPolicy::None,
    status: StatusPolicy::KeepOnCreate,
    fields: NODE_FIELDS,
    ops: &kinds::NODE,
    returns_deleted_object: false,
});
resource!(PODS {
    group: "",
    version: "v1",
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    namespaced: true,
    short_names: &["po"],
    categories: &["all"],
    subresources: &[Subresource::Status, Subresource::Binding, Subresource::Log, Subresource::Exec],
    storage_group: "core",
    storage_plural: "pods",
    generation: GenerationPolicy::Spec,
    status: StatusPolicy::ResetOnCreate,
    fields: POD_FIELDS,
    ops: &kinds::POD,
    returns_deleted_object: true,
});
resource!(SERVICES {
    group: "",
    version: "v1",
    kind: "Service",
    plural: "services",
    singular: "service",
    namespaced: true,
    short_names: &["svc"],
    categories: &["all"],
    subresources: &[Subresource::Status],
    storage_group: "core",
    storage_plural: "services",
    generation: GenerationPolicy::None,
    status: StatusPolicy::ResetOnCreate,
    fields: SERVICE_FIELDS,
    ops: &kinds::SERVICE,
    returns_deleted_object: true,
});
resource!(ENDPOINTS {
    group: "",
    version: "v1",
    kind: "Endpoints",
    plural: "endpoints",
    singular: "endpoints",
    namespaced: true,
    short_names: &["ep"],
    categories: &[],
    subresources: &[],
    storage_group: "core",
    storage_plural: "endpoints",
    generation: GenerationPolicy::None,
    status: StatusPolicy::Inline,
    fields: &[],
    ops: &kinds::ENDPOINTS,
    returns_deleted_object: false,
});
resource!(CONFIGMAPS {
    group: "",
    version: "v1",
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    namespaced: true,
    short_names: &["cm"],
    categories: &[],
    subresources: &[],
    storage_group: "core",
    storage_plural: "configmaps",
    generation: GenerationPolicy::None,
    status: StatusPolicy::Inline,
    fields: &[],
    ops: &kinds::CONFIG_MAP,
    returns_deleted_object: false,
});
resource!(SECRETS {
    group: "",
    version: "v1",
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    storage_group: "core",
    storage_plural: "secrets",
    generation: GenerationPolicy::None,
    status: StatusPolicy::Inline,
    fields: SECRET_FIELDS,
    ops: &kinds::SECRET,
    returns_deleted_object: false,
});
resource!(EVENTS {
    group: "",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    namespaced: true,
    short_names: &["ev"],
    categories: &[],
    subresources: &[],
    storage_group: "core",
    storage_plural: "events",
    generation: GenerationPolicy::None,
    status: StatusPolicy::Inline,
    fields: EVENT_FIELDS,
    ops: &kinds::EVENT,
    returns_deleted_object: false,
});
resource!(SERVICE_ACCOUNTS {
    group: "",
    version: "v1",
    kind: "ServiceAccount",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    namespaced: true,
    short_names: &["sa"],
    categories: &[],
    subresources: &[],
    storage_group: "core",
    storage_plural: "serviceaccounts",
    generation: GenerationPolicy::None,
    status: StatusPolicy::Inline,
    fields: &[],
    ops: &kinds::SERVICE_ACCOUNT,
    returns_deleted_object: true,
});
resource!(REPLICASETS {
    group: "apps",
    version: "v1",
    kind: "ReplicaSet",
    plural: "replicasets",
    singular: "replicaset",
    namespaced: true,
    short_names: &["rs"],
    categories: &["all"],
    subresources: &[Subresource::Status, Subresource::Scale],
    storage_group: "apps",
    storage_plural: "replicasets",
    generation: GenerationPolicy::Spec,
    status: StatusPolicy::ResetOnCreate,
    fields: REPLICASET_FIELDS,
    ops: &kinds::REPLICA_SET,
    returns_deleted_object: false,
});
resource!(DEPLOYMENTS {
    group: "apps",
    version: "v1",
    kind: "Deployment",
    plural: "deployments",
    singular: "deployment",
    namespaced: true,
    short_names: &["deploy"],
    categories: &["all"],
    subresources: &[Subresource::Status, Subresource::Scale],
    storage_group: "apps",
    storage_plural: "deployments",
    generation: GenerationPolicy::SpecAndAnnotations,
    status: StatusPolicy::ResetOnCreate,
    fields: &[],
    ops: &kinds::DEPLOYMENT,
    returns_deleted_object: false,
});
resource!(LEASES {
    group: "coordination.k8s.io",
    version: "v1",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    storage_group: "coordination.k8s.io",
    storage_plural: "leases",
    generation: GenerationPolicy::None,
    status: StatusPolicy::Inline,
    fields: &[],
    ops: &kinds::LEASE,
    returns_deleted_object: false,
});
resource!(ENDPOINT_SLICES {
    group: "discovery.k8s.io",
    version: "v1",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    storage_group: "discovery.k8s.io",
    storage_plural: "endpointslices",
    generation: GenerationPolicy::None,
    status: StatusPolicy::Inline,
    fields: &[],
    ops: &kinds::ENDPOINT_SLICE,
    returns_deleted_object: false,
});
resource!(EVENTS_V1 {
    group: "events.k8s.io",
    version: "v1",
    kind: "Event",
    plural: "events",
    singular: "event",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
    storage_group: "core",
    storage_plural: "events",
    generation: GenerationPolicy::None,
    status: StatusPolicy::Inline,
    fields: EVENT_FIELDS,
    ops: &kinds::EVENTS_V1_EVENT,
    returns_deleted_object: false,
});
resource!(PRIORITY_CLASSES {
    group: "scheduling.k8s.io",
    version: "v1",
    kind: "PriorityClass",
    plural: "priorityclasses",
    singular: "priorityclass",
    namespaced: false,
    short_names: &["pc"],
    categories: &[],
    subresources: &[],
    storage_group: "scheduling.k8s.io",
    storage_plural: "priorityclasses",
    generation: GenerationPolicy::None,
    status: StatusPolicy::Inline,
    fields: &[],
    ops: &kinds::PRIORITY_CLASS,
    returns_deleted_object: false,
});

impl ResourceTable {
    /// The built-in kinds.
    pub fn builtin() -> Self {
        Self {
            resources: vec![
                &NAMESPACES,
                &NODES,
                &PODS,
                &SERVICES,
                &ENDPOINTS,
                &CONFIGMAPS,
                &SECRETS,
                &EVENTS,
                &SERVICE_ACCOUNTS,
                &REPLICASETS,
                &DEPLOYMENTS,
                &LEASES,
                &ENDPOINT_SLICES,
                &EVENTS_V1,
                &PRIORITY_CLASSES,
            ],
        }
    }

    /// Every resource, in a stable order.
    pub fn all(&self) -> impl Iterator<Item = &'static ResourceInfo> + '_ {
        self.resources.iter().copied()
    }

    /// Look a resource up by group, version and plural.
    pub fn lookup(&self, group: &str, version: &str, plural: &str) -> Option<&'static ResourceInfo> {
        self.all().find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Look a resource up by apiVersion and kind.
    pub fn by_kind(&self, api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
        self.all().find(|r| r.api_version() == api_version && r.kind == kind)
    }

    /// Groups (other than core) with their versions, in table order without duplicates.
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for r in self.all().filter(|r| !r.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, versions)) if !versions.contains(&r.version) => versions.push(r.version),
                Some(_) => {}
                None => out.push((r.group, vec![r.version])),
            }
        }
        out
    }

    /// Resources of one group/version.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'static ResourceInfo> + 'a {
        self.all().filter(move |r| r.group == group && r.version == version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_design() {
        let t = ResourceTable::builtin();
        let pods = t.lookup("", "v1", "pods").expect("pods");
        assert_eq!(pods.key(Some("default"), "web"), "/registry/core/pods/default/web");
        assert_eq!(pods.namespace_prefix(None), "/registry/core/pods/");
        let nodes = t.lookup("", "v1", "nodes").expect("nodes");
        assert_eq!(nodes.key(None, "n1"), "/registry/core/nodes/n1");
        let deploy = t.by_kind("apps/v1", "Deployment").expect("deployments");
        assert_eq!(deploy.qualified_name(), "deployments.apps");
        let ev = t.lookup("events.k8s.io", "v1", "events").expect("events");
        assert!(ev.shares_storage_with(t.lookup("", "v1", "events").expect("core events")));
    }

    #[test]
    fn prefixes_do_not_overlap() {
        let t = ResourceTable::builtin();
        for a in t.all() {
            for b in t.all() {
                if std::ptr::eq(a, b) || a.shares_storage_with(b) {
                    continue;
                }
                assert!(!a.key_prefix().starts_with(&b.key_prefix()), "{} overlaps {}", a.plural, b.plural);
            }
        }
    }
}
