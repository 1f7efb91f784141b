//! Subresources: status, scale (autoscaling/v1 Scale), binding (pods), finalize (namespaces).

use super::write::{meta, meta_str, now, Mode, Patch, Track};
use super::{parse_body, Api, Reply, Request};
use crate::error::{from_storage, ApiError, Result};
use crate::request::FieldValidation;
use ferry_api::selector::LabelSelector;
use ferry_api::{FieldError, ResourceInfo};
use serde_json::{json, Value};

/// The autoscaling/v1 Scale view of a ReplicaSet or Deployment.
fn scale_of(obj: &Value) -> Value {
    let m = meta(obj);
    let selector = obj
        .pointer("/spec/selector")
        .and_then(|s| {
            serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(s.clone()).ok()
        })
        .and_then(|s| LabelSelector::from_k8s(&s).ok())
        .map(|s| s.to_string())
        .unwrap_or_default();
    let mut metadata = serde_json::Map::new();
    for key in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
        if let Some(v) = m.get(key) {
            metadata.insert(key.into(), v.clone());
        }
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": metadata,
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

fn invalid_scale(res: &ResourceInfo, name: &str, replicas: i64) -> ApiError {
    let mut e = ApiError::invalid(
        res,
        name,
        vec![FieldError::invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
    );
    e.message = format!("Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0");
    if let Some(d) = &mut e.details {
        d.group = "autoscaling".into();
        d.kind = "Scale".into();
    }
    e
}

impl Api {
    /// PUT …/status.
    pub(super) async fn update_status(&self, req: &Request<'_>) -> Result<Reply> {
        let body = parse_body(req.content_type, &req.body)?;
        let written =
            self.update_loop(req.update(Mode::Status, req.query.field_validation), |_| Ok(body.clone())).await?;
        Ok(Reply::value(200, &written.object))
    }

    /// PATCH …/status.
    pub(super) async fn patch_status(&self, req: &Request<'_>) -> Result<Reply> {
        self.patch_with_mode(req, Mode::Status).await
    }

    /// GET …/scale.
    pub(super) async fn get_scale(&self, req: &Request<'_>) -> Result<Reply> {
        let t = &req.target;
        let name = t.name.as_deref().unwrap_or_default();
        let key = t.res.key(t.namespace.as_deref(), name);
        let kv = self.store.get(&key).await.map_err(|e| from_storage(t.res, name, e))?;
        let kv = kv.ok_or_else(|| ApiError::not_found(t.res, name))?;
        let obj = Self::served_value(t.res, &key, &kv.value, kv.mod_revision)?;
        Ok(Reply::value(200, &scale_of(&obj)))
    }

    async fn set_replicas(
        &self,
        req: &Request<'_>,
        desired: impl Fn(&Value) -> Result<(i64, Option<String>)>,
    ) -> Result<Reply> {
        let t = &req.target;
        let res = t.res;
        let name = t.name.as_deref().unwrap_or_default();
        let mut update = req.update(Mode::Internal, FieldValidation::Ignore);
        update.track = Track::Update { manager: req.manager(), subresource: Some("scale") };
        let written = self
            .update_loop(update, |cur| {
                let (replicas, rv) = desired(&scale_of(cur))?;
                if replicas < 0 {
                    return Err(invalid_scale(res, name, replicas));
                }
                let mut next = cur.clone();
                next["spec"]["replicas"] = replicas.into();
                if let Some(rv) = rv {
                    next["metadata"]["resourceVersion"] = Value::String(rv);
                }
                Ok(next)
            })
            .await?;
        Ok(Reply::value(200, &scale_of(&written.object)))
    }

    /// PUT …/scale.
    pub(super) async fn update_scale(&self, req: &Request<'_>) -> Result<Reply> {
        let body = parse_body(req.content_type, &req.body)?;
        let replicas = body.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
        let rv = meta_str(&body, "resourceVersion").map(str::to_string);
        self.set_replicas(req, |_| Ok((replicas, rv.clone()))).await
    }

    /// PATCH …/scale.
    pub(super) async fn patch_scale(&self, req: &Request<'_>) -> Result<Reply> {
        let patch = Patch::parse(req.content_type, &req.body)?;
        self.set_replicas(req, |scale| {
            let patched = patch.apply(scale)?;
            let rv = meta_str(&patched, "resourceVersion").map(str::to_string);
            let replicas = match patched.pointer("/spec/replicas") {
                Some(Value::Number(n)) => {
                    n.as_i64().ok_or_else(|| ApiError::bad_request("spec.replicas must be an integer"))?
                }
                None | Some(Value::Null) => 0,
                Some(_) => return Err(ApiError::bad_request("spec.replicas must be an integer")),
            };
            Ok((replicas, rv))
        })
        .await
    }

    /// POST pods/{name}/binding: assign a pod to a node.
    pub(super) async fn bind(&self, req: &Request<'_>) -> Result<Reply> {
        let t = &req.target;
        let res = t.res;
        let name = t.name.as_deref().unwrap_or_default();
        let body = parse_body(req.content_type, &req.body)?;
        let node = body.pointer("/target/name").and_then(Value::as_str).unwrap_or_default().to_string();
        if node.is_empty() {
            let mut e = ApiError::invalid(res, name, vec![FieldError::required("target.name", "")]);
            e.message = format!("Binding \"{name}\" is invalid: target.name: Required value");
            return Err(e);
        }
        if let Some(kind) = body.pointer("/target/kind").and_then(Value::as_str) {
            if !kind.is_empty() && kind != "Node" {
                return Err(ApiError::bad_request(format!("binding target kind must be Node, got {kind:?}")));
            }
        }
        self.update_loop(req.update(Mode::Binding, FieldValidation::Ignore), |cur| {
            if meta(cur).contains_key("deletionTimestamp") {
                return Err(ApiError::conflict_msg(
                    res,
                    name,
                    &format!("pod {name} is being deleted, cannot be assigned to a host"),
                ));
            }
            match cur.pointer("/spec/nodeName").and_then(Value::as_str) {
                Some(n) if !n.is_empty() => {
                    return Err(ApiError::conflict_msg(
                        res,
                        name,
                        &format!("pod {name} is already assigned to node {n:?}"),
                    ))
                }
                _ => {}
            }
            let mut next = cur.clone();
            next["spec"]["nodeName"] = Value::String(node.clone());
            let condition =
                json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now()});
            let conditions = next["status"]["conditions"].as_array().cloned().unwrap_or_default();
            let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
            conditions.push(condition);
            next["status"]["conditions"] = Value::Array(conditions);
            Ok(next)
        })
        .await?;
        Ok(Reply::value(
            201,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        ))
    }

    /// PUT namespaces/{name}/finalize: update `spec.finalizers`.
    pub(super) async fn finalize(&self, req: &Request<'_>) -> Result<Reply> {
        let body = parse_body(req.content_type, &req.body)?;
        let finalizers = body.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
        let written = self
            .update_loop(req.update(Mode::Internal, FieldValidation::Ignore), |cur| {
                let mut next = cur.clone();
                next["spec"]["finalizers"] = finalizers.clone();
                Ok(next)
            })
            .await?;
        Ok(Reply::value(200, &written.object))
    }
}
