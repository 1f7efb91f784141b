//! OpenAPI v3: `/openapi/v3` (the index) and one document per group/version.
//!
//! kubectl needs these for its default `--validate=strict` (it looks for the `fieldValidation`
//! parameter on the PATCH operation tagged with the kind's `x-kubernetes-group-version-kind`)
//! and for `kubectl explain`. Schemas come from `k8s-openapi`'s `schemars` support, whose
//! definition names already match upstream (`io.k8s.api.apps.v1.Deployment`, …); they are
//! generated straight into `#/components/schemas/`. The documents are built once, on first use.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use bytes::Bytes;
use ferry_api::{ResourceInfo, ResourceTable, Subresource};
use k8s_openapi::api::{apps, autoscaling, coordination, core, discovery, events, scheduling};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use schemars::generate::{SchemaGenerator, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

/// Why the OpenAPI documents could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    /// A document could not be encoded as JSON.
    #[error("encoding an OpenAPI document: {0}")]
    Encode(#[from] serde_json::Error),
}

/// The encoded OpenAPI v3 documents.
#[derive(Debug)]
pub struct OpenApiV3 {
    index: Bytes,
    docs: BTreeMap<String, Bytes>,
}

impl OpenApiV3 {
    /// The `/openapi/v3` index (`{"paths":{"apis/apps/v1":{"serverRelativeURL":…}}}`).
    pub fn index(&self) -> Bytes {
        self.index.clone()
    }

    /// The document of one group/version, by its path under `/openapi/v3/` (`api/v1`,
    /// `apis/apps/v1`).
    pub fn document(&self, path: &str) -> Option<Bytes> {
        self.docs.get(path.trim_matches('/')).cloned()
    }

    /// Build the documents for a resource table.
    pub fn build(table: &ResourceTable) -> Result<Self, OpenApiError> {
        let mut gvs: Vec<(&'static str, &'static str)> = Vec::new();
        for r in table.all() {
            if !gvs.contains(&(r.group, r.version)) {
                gvs.push((r.group, r.version));
            }
        }
        let mut docs = BTreeMap::new();
        let mut paths = Map::new();
        for (group, version) in gvs {
            let key = gv_path(group, version);
            let bytes = Bytes::from(serde_json::to_vec(&document(table, group, version))?);
            let url = format!("/openapi/v3/{key}?hash={:016X}", fnv1a(&bytes));
            paths.insert(key.clone(), json!({ "serverRelativeURL": url }));
            docs.insert(key, bytes);
        }
        let index = Bytes::from(serde_json::to_vec(&json!({ "paths": paths }))?);
        Ok(Self { index, docs })
    }
}

/// The documents for `table`, built on first use and cached for the life of the process
/// (the resource table is fixed at build time).
pub fn v3(table: &ResourceTable) -> Result<&'static OpenApiV3, &'static OpenApiError> {
    static DOCS: OnceLock<Result<OpenApiV3, OpenApiError>> = OnceLock::new();
    DOCS.get_or_init(|| OpenApiV3::build(table)).as_ref()
}

/// `api/v1` or `apis/<group>/<version>`.
/// Kubernetes' strategic-merge metadata (the `patchStrategy` / `patchMergeKey` struct tags):
/// (schema, property, merge key, strategy). kubectl's client-side apply reads it from the
/// schema to compute patches (e.g. `$patch: delete` for a removed container port); it must agree
/// with what `ferry_api::strategic` does on the server.
const PATCH_META: &[(&str, &str, Option<&str>, &str)] = &[
    ("io.k8s.api.core.v1.PodSpec", "containers", Some("name"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "initContainers", Some("name"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", Some("name"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "volumes", Some("name"), "merge,retainKeys"),
    ("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", Some("name"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "hostAliases", Some("ip"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", Some("topologyKey"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "schedulingGates", Some("name"), "merge"),
    ("io.k8s.api.core.v1.PodSpec", "resourceClaims", Some("name"), "merge,retainKeys"),
    ("io.k8s.api.core.v1.Container", "ports", Some("containerPort"), "merge"),
    ("io.k8s.api.core.v1.Container", "env", Some("name"), "merge"),
    ("io.k8s.api.core.v1.Container", "volumeMounts", Some("mountPath"), "merge"),
    ("io.k8s.api.core.v1.Container", "volumeDevices", Some("devicePath"), "merge"),
    ("io.k8s.api.core.v1.EphemeralContainer", "env", Some("name"), "merge"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", Some("mountPath"), "merge"),
    ("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", Some("devicePath"), "merge"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", None, "merge"),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", Some("uid"), "merge"),
    ("io.k8s.api.core.v1.ServiceSpec", "ports", Some("port"), "merge"),
    ("io.k8s.api.core.v1.ServiceAccount", "secrets", Some("name"), "merge"),
    ("io.k8s.api.apps.v1.DeploymentSpec", "strategy", None, "retainKeys"),
    ("io.k8s.api.core.v1.PodStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.apps.v1.DeploymentStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.core.v1.NodeStatus", "conditions", Some("type"), "merge"),
    ("io.k8s.api.core.v1.NodeStatus", "addresses", Some("type"), "merge"),
];

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// FNV-1a 64: a stable hash of a document's bytes (clients only compare it).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// Register `T`'s schema (and everything it references) and return its component name.
fn register<T: JsonSchema>(gen: &mut SchemaGenerator) -> String {
    gen.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// The schema of a built-in kind, by group, version and kind.
fn kind_schema(gen: &mut SchemaGenerator, r: &ResourceInfo) -> Option<String> {
    Some(match (r.group, r.version, r.kind) {
        ("", "v1", "Namespace") => register::<core::v1::Namespace>(gen),
        ("", "v1", "Node") => register::<core::v1::Node>(gen),
        ("", "v1", "Pod") => register::<core::v1::Pod>(gen),
        ("", "v1", "Service") => register::<core::v1::Service>(gen),
        ("", "v1", "Endpoints") => register::<core::v1::Endpoints>(gen),
        ("", "v1", "ConfigMap") => register::<core::v1::ConfigMap>(gen),
        ("", "v1", "Secret") => register::<core::v1::Secret>(gen),
        ("", "v1", "Event") => register::<core::v1::Event>(gen),
        ("", "v1", "ServiceAccount") => register::<core::v1::ServiceAccount>(gen),
        ("", "v1", "Binding") => register::<core::v1::Binding>(gen),
        ("apps", "v1", "Deployment") => register::<apps::v1::Deployment>(gen),
        ("apps", "v1", "ReplicaSet") => register::<apps::v1::ReplicaSet>(gen),
        ("coordination.k8s.io", "v1", "Lease") => register::<coordination::v1::Lease>(gen),
        ("discovery.k8s.io", "v1", "EndpointSlice") => register::<discovery::v1::EndpointSlice>(gen),
        ("events.k8s.io", "v1", "Event") => register::<events::v1::Event>(gen),
        ("scheduling.k8s.io", "v1", "PriorityClass") => register::<scheduling::v1::PriorityClass>(gen),
        _ => return None,
    })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "version": version, "kind": kind })
}

/// `apps` → `Apps`, `coordination.k8s.io` → `Coordination`, core → `Core`; for operation ids.
fn camel(s: &str) -> String {
    let head = s.split('.').next().unwrap_or(s);
    let mut chars = head.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => "Core".to_string(),
    }
}

fn query_param(name: &str, description: &str, ty: &str) -> Value {
    json!({ "name": name, "in": "query", "description": description, "schema": { "type": ty, "uniqueItems": true } })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({ "name": name, "in": "path", "description": description, "required": true,
            "schema": { "type": "string", "uniqueItems": true } })
}

fn write_params(patch: bool) -> Vec<Value> {
    let mut params = vec![
        query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted. Valid values are: - All: all dry run stages will be processed",
            "string",
        ),
        query_param(
            "fieldManager",
            "fieldManager is a name associated with the actor or entity that is making these changes.",
            "string",
        ),
        query_param(
            "fieldValidation",
            "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: - Ignore - Warn - Strict",
            "string",
        ),
    ];
    if patch {
        params.push(query_param(
            "force",
            "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people.",
            "boolean",
        ));
    }
    params
}

fn list_params() -> Vec<Value> {
    [
        ("allowWatchBookmarks", "allowWatchBookmarks requests watch events with type \"BOOKMARK\".", "boolean"),
        ("continue", "The continue option should be set when retrieving more results from the server.", "string"),
        ("fieldSelector", "A selector to restrict the list of returned objects by their fields.", "string"),
        ("labelSelector", "A selector to restrict the list of returned objects by their labels.", "string"),
        ("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
        ("resourceVersion", "resourceVersion sets a constraint on what resource versions a request may be served from.", "string"),
        ("resourceVersionMatch", "resourceVersionMatch determines how resourceVersion is applied to list calls.", "string"),
        ("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
        ("watch", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications.", "boolean"),
    ]
    .iter()
    .map(|(n, d, t)| query_param(n, d, t))
    .collect()
}

fn json_content(schema: &Value) -> Value {
    json!({
        "application/json": { "schema": schema },
        "application/yaml": { "schema": schema },
    })
}

fn response(code: &str, description: &str, schema: &Value, out: &mut Map<String, Value>) {
    out.insert(code.to_string(), json!({ "description": description, "content": json_content(schema) }));
}

/// One operation; `gvk` goes on it as an object (the form kubectl's verifier reads).
#[allow(clippy::too_many_arguments)]
fn operation(
    action: &str,
    op_id: String,
    description: String,
    tag: &str,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Map<String, Value>,
    gvk: &Value,
) -> Value {
    let mut op = json!({
        "tags": [tag],
        "description": description,
        "operationId": op_id,
        "parameters": params,
        "responses": responses,
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk,
    });
    if let (Some(body), Some(obj)) = (body, op.as_object_mut()) {
        obj.insert("requestBody".into(), json!({ "content": body, "required": true }));
    }
    op
}

/// Naming for the operations of one resource (or subresource).
struct Names<'a> {
    prefix: String,
    tag: String,
    kind: &'a str,
}

impl Names<'_> {
    fn id(&self, verb: &str, suffix: &str) -> String {
        format!("{verb}{}{}{suffix}", self.prefix, self.kind)
    }
}

fn patch_body() -> Value {
    let schema = schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.Patch");
    let mut content = Map::new();
    for ct in [
        "application/apply-patch+yaml",
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
    ] {
        content.insert(ct.to_string(), json!({ "schema": schema }));
    }
    Value::Object(content)
}

/// get / put / patch of one object-level path (the object itself or a subresource).
fn object_ops(names: &Names<'_>, suffix: &str, what: &str, obj: &Value, gvk: &Value, delete: bool) -> Value {
    let mut item = Map::new();
    let mut ok = Map::new();
    response("200", "OK", obj, &mut ok);
    item.insert(
        "get".into(),
        operation(
            "get",
            names.id("read", suffix),
            format!("read {what} of the specified {}", names.kind),
            &names.tag,
            Vec::new(),
            None,
            ok.clone(),
            gvk,
        ),
    );
    let mut put_resp = ok.clone();
    response("201", "Created", obj, &mut put_resp);
    item.insert(
        "put".into(),
        operation(
            "put",
            names.id("replace", suffix),
            format!("replace {what} of the specified {}", names.kind),
            &names.tag,
            write_params(false),
            Some(json_content(obj)),
            put_resp.clone(),
            gvk,
        ),
    );
    item.insert(
        "patch".into(),
        operation(
            "patch",
            names.id("patch", suffix),
            format!("partially update {what} of the specified {}", names.kind),
            &names.tag,
            write_params(true),
            Some(patch_body()),
            put_resp,
            gvk,
        ),
    );
    if delete {
        let mut resp = ok;
        response("202", "Accepted", obj, &mut resp);
        let mut params = vec![query_param(
            "dryRun",
            "When present, indicates that modifications should not be persisted.",
            "string",
        )];
        params.extend(
            [
                ("gracePeriodSeconds", "The duration in seconds before the object should be deleted.", "integer"),
                ("propagationPolicy", "Whether and how garbage collection will be performed.", "string"),
            ]
            .iter()
            .map(|(n, d, t)| query_param(n, d, t)),
        );
        item.insert(
            "delete".into(),
            operation(
                "delete",
                names.id("delete", suffix),
                format!("delete a {}", names.kind),
                &names.tag,
                params,
                Some(json_content(&schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"))),
                resp,
                gvk,
            ),
        );
    }
    Value::Object(item)
}

/// The OpenAPI 3.0 document of one group/version.
fn document(table: &ResourceTable, group: &str, version: &str) -> Value {
    let mut gen = SchemaSettings::openapi3().into_generator();
    let status = register::<meta::Status>(&mut gen);
    register::<meta::DeleteOptions>(&mut gen);
    register::<meta::Patch>(&mut gen);
    register::<meta::ListMeta>(&mut gen);
    let status_ref = schema_ref(&status);
    let prefix = format!("{}{}", camel(group), camel(version));
    let tag = if group.is_empty() {
        format!("core_{version}")
    } else {
        format!("{}_{version}", group.split('.').next().unwrap_or(group))
    };
    let base = format!("/{}", gv_path(group, version));
    // Kind schema name → (group, version, kind) to tag, and list schemas to add.
    let mut tagged: Vec<(String, Value)> = Vec::new();
    let mut lists: Vec<(String, String, Value)> = Vec::new();
    let mut paths = Map::new();
    for r in table.in_group_version(group, version) {
        let Some(name) = kind_schema(&mut gen, r) else {
            continue;
        };
        let kind_gvk = gvk(r.group, r.version, r.kind);
        tagged.push((name.clone(), json!([kind_gvk])));
        let list_name = format!("{name}List");
        lists.push((list_name.clone(), name.clone(), json!([gvk(r.group, r.version, &r.list_kind())])));
        let obj = schema_ref(&name);
        let list = schema_ref(&list_name);
        let ns_names = if r.namespaced { "Namespaced" } else { "" };
        let names = Names { prefix: format!("{prefix}{ns_names}"), tag: tag.clone(), kind: r.kind };
        let mut obj_params = vec![path_param("name", &format!("name of the {}", r.kind))];
        let collection = if r.namespaced {
            obj_params.push(path_param("namespace", "object name and auth scope, such as for teams and projects"));
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };

        // Object path.
        let mut item = object_ops(&names, "", "the", &obj, &kind_gvk, true);
        if let Some(o) = item.as_object_mut() {
            o.insert("parameters".into(), Value::Array(obj_params.clone()));
        }
        paths.insert(format!("{collection}/{{name}}"), item);

        // Subresources.
        for sub in r.subresources {
            let path = format!("{collection}/{{name}}/{}", sub.name());
            let mut item = match sub {
                Subresource::Status => object_ops(&names, "Status", "status", &obj, &kind_gvk, false),
                Subresource::Scale => {
                    let scale = register::<autoscaling::v1::Scale>(&mut gen);
                    object_ops(&names, "Scale", "scale", &schema_ref(&scale), &gvk("autoscaling", "v1", "Scale"), false)
                }
                Subresource::Binding => {
                    let binding = register::<core::v1::Binding>(&mut gen);
                    let b = schema_ref(&binding);
                    let mut resp = Map::new();
                    response("201", "Created", &b, &mut resp);
                    json!({ "post": operation(
                        "post",
                        names.id("create", "Binding"),
                        format!("create binding of a {}", r.kind),
                        &tag,
                        write_params(false),
                        Some(json_content(&b)),
                        resp,
                        &gvk("", "v1", "Binding"),
                    ) })
                }
                Subresource::Log | Subresource::Exec => {
                    // Streams (text, WebSocket): described as a string, as Kubernetes does.
                    let (what, kind) =
                        if *sub == Subresource::Log { ("Log", "Pod") } else { ("Exec", "PodExecOptions") };
                    let mut resp = Map::new();
                    resp.insert(
                        "200".into(),
                        json!({"description": "OK", "content": {"*/*": {"schema": {"type": "string"}}}}),
                    );
                    json!({ "get": operation(
                        "get",
                        names.id("connect", what),
                        format!("connect GET requests to {} of {}", sub.name(), r.kind),
                        &tag,
                        Vec::new(),
                        None,
                        resp,
                        &gvk("", "v1", kind),
                    ) })
                }
                Subresource::Finalize => {
                    let mut resp = Map::new();
                    response("200", "OK", &obj, &mut resp);
                    json!({ "put": operation(
                        "put",
                        names.id("replace", "Finalize"),
                        format!("replace finalize of the specified {}", r.kind),
                        &tag,
                        write_params(false),
                        Some(json_content(&obj)),
                        resp,
                        &kind_gvk,
                    ) })
                }
            };
            if let Some(o) = item.as_object_mut() {
                o.insert("parameters".into(), Value::Array(obj_params.clone()));
            }
            paths.insert(path, item);
        }

        // Collection path: list, create, deletecollection.
        let mut item = Map::new();
        let mut list_resp = Map::new();
        response("200", "OK", &list, &mut list_resp);
        item.insert(
            "get".into(),
            operation(
                "list",
                names.id("list", ""),
                format!("list or watch objects of kind {}", r.kind),
                &tag,
                list_params(),
                None,
                list_resp,
                &kind_gvk,
            ),
        );
        let mut create_resp = Map::new();
        response("200", "OK", &obj, &mut create_resp);
        response("201", "Created", &obj, &mut create_resp);
        response("202", "Accepted", &obj, &mut create_resp);
        item.insert(
            "post".into(),
            operation(
                "post",
                names.id("create", ""),
                format!("create a {}", r.kind),
                &tag,
                write_params(false),
                Some(json_content(&obj)),
                create_resp,
                &kind_gvk,
            ),
        );
        let mut dc_resp = Map::new();
        response("200", "OK", &status_ref, &mut dc_resp);
        item.insert(
            "delete".into(),
            operation(
                "deletecollection",
                names.id("deleteCollection", ""),
                format!("delete collection of {}", r.kind),
                &tag,
                list_params(),
                Some(json_content(&schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"))),
                dc_resp,
                &kind_gvk,
            ),
        );
        if r.namespaced {
            item.insert(
                "parameters".into(),
                json!([path_param("namespace", "object name and auth scope, such as for teams and projects")]),
            );
            // All namespaces: list only.
            let mut all_resp = Map::new();
            response("200", "OK", &list, &mut all_resp);
            paths.insert(
                format!("{base}/{}", r.plural),
                json!({ "get": operation(
                    "list",
                    format!("list{prefix}{}ForAllNamespaces", r.kind),
                    format!("list or watch objects of kind {}", r.kind),
                    &tag,
                    list_params(),
                    None,
                    all_resp,
                    &kind_gvk,
                ) }),
            );
        }
        paths.insert(collection, Value::Object(item));
    }

    let mut schemas = gen.take_definitions(true);
    for (schema, property, key, strategy) in PATCH_META {
        if let Some(Value::Object(prop)) =
            schemas.get_mut(*schema).and_then(|s| s.pointer_mut(&format!("/properties/{property}")))
        {
            prop.insert("x-kubernetes-patch-strategy".into(), Value::String((*strategy).into()));
            if let Some(k) = key {
                prop.insert("x-kubernetes-patch-merge-key".into(), Value::String((*k).into()));
            }
        }
    }
    for (name, gvks) in tagged {
        if let Some(Value::Object(s)) = schemas.get_mut(&name) {
            s.insert("x-kubernetes-group-version-kind".into(), gvks);
        }
    }
    for (list_name, item_name, gvks) in lists {
        schemas.insert(
            list_name.clone(),
            json!({
                "description": format!("{list_name} is a list of {item_name}."),
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": { "type": "string", "description": "APIVersion defines the versioned schema of this representation of an object." },
                    "kind": { "type": "string", "description": "Kind is a string value representing the REST resource this object represents." },
                    "metadata": { "allOf": [schema_ref("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")], "default": {},
                                  "description": "Standard list metadata." },
                    "items": { "type": "array", "description": "List of objects.",
                               "items": { "allOf": [schema_ref(&item_name)], "default": {} } },
                },
                "x-kubernetes-group-version-kind": gvks,
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": { "title": "Kubernetes", "version": crate::discovery::version()["gitVersion"].clone() },
        "paths": paths,
        "components": { "schemas": schemas },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_schema_and_a_patch_with_field_validation() {
        let table = ResourceTable::builtin();
        let docs = OpenApiV3::build(&table).unwrap();
        let index: Value = serde_json::from_slice(&docs.index()).unwrap();
        for r in table.all() {
            let key = gv_path(r.group, r.version);
            assert!(index["paths"][&key]["serverRelativeURL"].is_string(), "{key}");
            let doc: Value = serde_json::from_slice(&docs.document(&key).unwrap()).unwrap();
            let found = doc["paths"].as_object().unwrap().values().any(|p| {
                p["patch"]["x-kubernetes-group-version-kind"] == gvk(r.group, r.version, r.kind)
                    && p["patch"]["parameters"].as_array().unwrap().iter().any(|q| q["name"] == "fieldValidation")
            });
            assert!(found, "{} {}", key, r.kind);
        }
        let apps: Value = serde_json::from_slice(&docs.document("apis/apps/v1").unwrap()).unwrap();
        let d = &apps["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(d["x-kubernetes-group-version-kind"][0]["kind"], "Deployment");
        assert!(apps["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentStrategy"].is_object());
        assert!(!apps.to_string().contains("#/$defs"));
    }
}
