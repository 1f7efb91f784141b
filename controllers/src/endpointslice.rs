//! The EndpointSlice controller: discovery.k8s.io/v1 `EndpointSlice`s for every Service with a
//! selector, as Kubernetes' endpointslice controller writes them.
//!
//! Each slice is labelled `kubernetes.io/service-name: <svc>` and
//! `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io` (plus the Service's
//! labels and the headless marker), is controlled by the Service (ownerReference: the garbage
//! collector removes slices of deleted Services) and holds at most [`MAX_ENDPOINTS`] endpoints
//! that share one set of (per-pod resolved) ports. Endpoint conditions: `serving` = pod Ready,
//! `terminating` = pod being deleted, `ready` = serving and not terminating (always true with
//! `publishNotReadyAddresses`). A Service with no endpoints keeps one empty placeholder slice.
//! Slices are updated in place (same name, same port set) and written only when they differ.
//! Slices created by a reconcile must show up in the cache before the next reconcile of that
//! Service acts (generated names cannot be deduplicated by the server).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};

use crate::endpoints::{self, find_port, matching_pods, pod_hostname, pod_in_endpoints, pod_ref, selector};
use crate::informer::Informer;

/// `kubernetes.io/service-name`: the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `endpointslice.kubernetes.io/managed-by`: who writes a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The value of [`MANAGED_BY_LABEL`] on the slices this controller owns (Kubernetes' value, so
/// that tools reading slices treat them alike).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Endpoints per slice (Kubernetes' default `--max-endpoints-per-slice`).
pub const MAX_ENDPOINTS: usize = 100;
/// How long a created slice may take to appear in the cache before the controller stops waiting.
const CREATE_WAIT: Duration = Duration::from_secs(10);

/// Errors of one reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{0}")]
    Kube(#[from] kube::Error),
}

/// What the reconciler needs.
pub struct Context {
    /// Client.
    pub client: kube::Client,
    /// All pods.
    pub pods: Store<Pod>,
    /// All EndpointSlices.
    pub slices: Store<EndpointSlice>,
    /// Per Service (namespace/name): slices this controller created that the cache has not shown yet.
    pub created: Mutex<HashMap<String, (Vec<String>, Instant)>>,
}

/// One slice as it should be: port set, endpoints, labels.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredSlice {
    /// Ports (sorted by name, port, protocol); empty for a placeholder or a port-less Service.
    pub ports: Vec<EndpointPort>,
    /// Endpoints, sorted by address.
    pub endpoints: Vec<Endpoint>,
}

type PortKey = Vec<(String, i32, String)>;

fn port_key(ports: &[EndpointPort]) -> PortKey {
    let mut key: PortKey = ports
        .iter()
        .map(|p| {
            (p.name.clone().unwrap_or_default(), p.port.unwrap_or_default(), p.protocol.clone().unwrap_or_default())
        })
        .collect();
    key.sort();
    key
}

fn sort_ports(ports: &mut [EndpointPort]) {
    ports.sort_by_key(|p| (p.name.clone().unwrap_or_default(), p.port.unwrap_or_default(), p.protocol.clone()));
}

fn sort_endpoints(eps: &mut [Endpoint]) {
    eps.sort_by(|a, b| {
        (&a.addresses, a.target_ref.as_ref().and_then(|r| r.uid.as_ref()))
            .cmp(&(&b.addresses, b.target_ref.as_ref().and_then(|r| r.uid.as_ref())))
    });
}

/// The slices the Service should have, given the pods its selector matches: endpoints grouped
/// by port set, each group cut into slices of at most `max` endpoints; one empty placeholder
/// when there is nothing to publish.
pub fn desired_slices(svc: &Service, pods: &[Arc<Pod>], max: usize) -> Vec<DesiredSlice> {
    let spec = svc.spec.as_ref();
    let publish_not_ready = spec.and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let svc_ports = spec.and_then(|s| s.ports.clone()).unwrap_or_default();
    let mut groups: BTreeMap<PortKey, (Vec<EndpointPort>, Vec<Endpoint>)> = BTreeMap::new();
    for pod in pods {
        if !pod_in_endpoints(pod, true) {
            continue;
        }
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone()).unwrap_or_default();
        if !ip.contains('.') {
            continue; // IPv4 slices only
        }
        let mut ports: Vec<EndpointPort> = svc_ports
            .iter()
            .filter_map(|sp| {
                Some(EndpointPort {
                    name: Some(sp.name.clone().unwrap_or_default()),
                    port: Some(find_port(pod, sp)?),
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        sort_ports(&mut ports);
        let serving = crate::util::pod_ready(pod);
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let endpoint = Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(publish_not_ready || (serving && !terminating)),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname: pod_hostname(pod, svc),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_ref(pod)),
            ..Default::default()
        };
        groups.entry(port_key(&ports)).or_insert_with(|| (ports, Vec::new())).1.push(endpoint);
    }
    let mut out = Vec::new();
    for (_, (ports, mut eps)) in groups {
        sort_endpoints(&mut eps);
        for chunk in eps.chunks(max.max(1)) {
            out.push(DesiredSlice { ports: ports.clone(), endpoints: chunk.to_vec() });
        }
    }
    if out.is_empty() {
        out.push(DesiredSlice { ports: Vec::new(), endpoints: Vec::new() });
    }
    out
}

/// Labels of the Service's slices.
pub fn slice_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = endpoints::endpoints_labels(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), svc.name_any());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    labels
}

fn owned_by(slice: &EndpointSlice, svc: &Service) -> bool {
    crate::util::controller_ref(&slice.metadata).is_some_and(|r| Some(&r.uid) == svc.meta().uid.as_ref())
}

/// Whether `slice` already is `want` for this Service (so no write is needed).
pub fn up_to_date(slice: &EndpointSlice, want: &DesiredSlice, svc: &Service) -> bool {
    let mut ports = slice.ports.clone().unwrap_or_default();
    sort_ports(&mut ports);
    let mut eps = slice.endpoints.clone().unwrap_or_default();
    sort_endpoints(&mut eps);
    slice.address_type == "IPv4"
        && ports == want.ports
        && eps == want.endpoints
        && slice.labels() == &slice_labels(svc)
        && owned_by(slice, svc)
        && slice.metadata.owner_references.as_ref().map(Vec::len) == Some(1)
}

/// The slices this controller manages for a Service (by label), sorted by name.
pub fn managed_slices(svc: &Service, slices: &Store<EndpointSlice>) -> Vec<Arc<EndpointSlice>> {
    let (ns, name) = (svc.namespace(), svc.name_any());
    let mut out: Vec<_> = slices
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace() == ns
                && s.labels().get(SERVICE_NAME_LABEL) == Some(&name)
                && s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
        })
        .collect();
    out.sort_by_key(|s| s.name_any());
    out
}

/// The Services whose managed slices (in `store`) list this pod.
pub fn slices_listing(store: &Store<EndpointSlice>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    let (ns, uid) = (pod.namespace(), pod.uid());
    store
        .state()
        .iter()
        .filter(|s| s.namespace() == ns && s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY))
        .filter(|s| {
            s.endpoints.iter().flatten().any(|e| e.target_ref.as_ref().and_then(|r| r.uid.as_ref()) == uid.as_ref())
        })
        .filter_map(|s| Some(ObjectRef::new(s.labels().get(SERVICE_NAME_LABEL)?).within(&s.namespace()?)))
        .collect()
}

/// Run until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    services: &Informer<Service>,
    pods: &Informer<Pod>,
    slices: &Informer<EndpointSlice>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx =
        Arc::new(Context { client, pods: pods.store(), slices: slices.store(), created: Mutex::new(HashMap::new()) });
    let slice_store = slices.store();
    let mapper = endpoints::PodMapper::new(services.store(), move |pod| slices_listing(&slice_store, pod));
    Controller::for_shared_stream(services.subscribe(), services.store())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| mapper.map(&pod))
        .watches_shared_stream(slices.subscribe(), |s: Arc<EndpointSlice>| {
            let ours = s.labels().get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY);
            let svc = s.labels().get(SERVICE_NAME_LABEL).filter(|_| ours)?;
            Some(ObjectRef::new(svc).within(&s.namespace().unwrap_or_default()))
        })
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |_, e, _| {
                tracing::warn!(error = %e, "endpointslice reconcile failed; retrying");
                Action::requeue(Duration::from_millis(500))
            },
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

fn slice_object(svc: &Service, want: &DesiredSlice, base: Option<&EndpointSlice>) -> EndpointSlice {
    let metadata = match base {
        Some(b) => ObjectMeta {
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![crate::util::owner_ref(svc)]),
            ..b.metadata.clone()
        },
        None => ObjectMeta {
            generate_name: Some(format!("{}-", truncate(&svc.name_any(), 57))),
            namespace: svc.namespace(),
            labels: Some(slice_labels(svc)),
            owner_references: Some(vec![crate::util::owner_ref(svc)]),
            ..Default::default()
        },
    };
    EndpointSlice {
        metadata,
        address_type: "IPv4".into(),
        endpoints: Some(want.endpoints.clone()),
        ports: Some(want.ports.clone()),
    }
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Reconcile one Service's slices.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    if selector(&svc).is_none() || svc.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let key = crate::util::key(svc.as_ref());
    let existing = managed_slices(&svc, &ctx.slices);
    {
        // Wait for our own creates to show up in the cache (else we would create them twice).
        let mut created = ctx.created.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((names, at)) = created.get(&key) {
            let seen = names.iter().all(|n| existing.iter().any(|s| &s.name_any() == n));
            if !seen && at.elapsed() < CREATE_WAIT {
                return Ok(Action::requeue(Duration::from_millis(50)));
            }
            created.remove(&key);
        }
    }
    let ns = svc.namespace().unwrap_or_default();
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let pods = matching_pods(&svc, &ctx.pods);
    let desired = desired_slices(&svc, &pods, MAX_ENDPOINTS);

    // Slices of an older Service of the same name, or of another address type, are replaced.
    let (mut reusable, stale): (Vec<_>, Vec<_>) =
        existing.into_iter().partition(|s| owned_by(s, &svc) && s.address_type == "IPv4");
    let mut writes = Vec::new(); // (slice to update or None to create, desired)
    for want in &desired {
        let key = port_key(&want.ports);
        // Prefer a slice that already is exactly right, then one with the same port set.
        let pos = reusable
            .iter()
            .position(|s| up_to_date(s, want, &svc))
            .or_else(|| reusable.iter().position(|s| port_key(s.ports.as_deref().unwrap_or_default()) == key));
        match pos {
            Some(i) => {
                let slice = reusable.remove(i);
                if !up_to_date(&slice, want, &svc) {
                    writes.push((Some(slice), want));
                }
            }
            None => writes.push((None, want)),
        }
    }
    // A leftover slice can take a create instead of being deleted and recreated.
    for w in writes.iter_mut().filter(|w| w.0.is_none()) {
        if let Some(slice) = reusable.pop() {
            w.0 = Some(slice);
        }
    }

    let mut new_names = Vec::new();
    let conflict = |e: &kube::Error| matches!(crate::util::api_code(e), Some(409) | Some(404));
    for (base, want) in writes {
        let obj = slice_object(&svc, want, base.as_deref());
        let result = match base {
            Some(b) => api.replace(&b.name_any(), &PostParams::default(), &obj).await,
            None => api.create(&PostParams::default(), &obj).await.inspect(|s| new_names.push(s.name_any())),
        };
        match result {
            Ok(_) => {}
            Err(e) if conflict(&e) => return Ok(Action::requeue(Duration::from_millis(100))),
            Err(e) if crate::util::api_code(&e) == Some(403) => return Ok(Action::await_change()),
            Err(e) => return Err(e.into()),
        }
    }
    if !new_names.is_empty() {
        ctx.created.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, (new_names, Instant::now()));
    }
    for slice in reusable.into_iter().chain(stale) {
        match api.delete(&slice.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str, ready: bool, terminating: bool) -> Arc<Pod> {
        let mut meta =
            json!({"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}});
        if terminating {
            meta["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        Arc::new(
            serde_json::from_value(json!({
                "metadata": meta,
                "spec": {"nodeName": "n1", "hostname": "h", "subdomain": "web",
                    "containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 8080}]}]},
                "status": {"phase": "Running", "podIP": ip,
                    "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .expect("pod"),
        )
    }

    fn web() -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default", "uid": "svc-uid"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
        .expect("service")
    }

    fn cond(e: &Endpoint) -> (Option<bool>, Option<bool>, Option<bool>) {
        let c = e.conditions.clone().unwrap_or_default();
        (c.ready, c.serving, c.terminating)
    }

    #[test]
    fn conditions_follow_readiness_and_termination() {
        let pods =
            [pod("a", "10.0.0.1", true, false), pod("b", "10.0.0.2", false, false), pod("c", "10.0.0.3", true, true)];
        let slices = desired_slices(&web(), &pods, MAX_ENDPOINTS);
        assert_eq!(slices.len(), 1);
        let s = &slices[0];
        assert_eq!(s.ports[0].port, Some(8080));
        assert_eq!(s.ports[0].name.as_deref(), Some("http"));
        let c: Vec<_> = s.endpoints.iter().map(cond).collect();
        assert_eq!(
            c,
            vec![
                (Some(true), Some(true), Some(false)),
                (Some(false), Some(false), Some(false)),
                (Some(false), Some(true), Some(true)),
            ]
        );
        assert_eq!(s.endpoints[0].hostname.as_deref(), Some("h"), "subdomain names the service");
        assert_eq!(s.endpoints[0].target_ref.as_ref().and_then(|r| r.uid.as_deref()), Some("uid-a"));
    }

    #[test]
    fn chunks_and_placeholder() {
        let pods: Vec<_> = (0..5).map(|i| pod(&format!("p{i}"), &format!("10.0.0.{i}"), true, false)).collect();
        let slices = desired_slices(&web(), &pods, 2);
        assert_eq!(slices.iter().map(|s| s.endpoints.len()).collect::<Vec<_>>(), vec![2, 2, 1]);
        let none = desired_slices(&web(), &[], MAX_ENDPOINTS);
        assert_eq!(none, vec![DesiredSlice { ports: vec![], endpoints: vec![] }]);
    }

    #[test]
    fn labels_and_up_to_date() {
        let svc = web();
        let labels = slice_labels(&svc);
        assert_eq!(labels.get(SERVICE_NAME_LABEL).map(String::as_str), Some("web"));
        assert_eq!(labels.get(MANAGED_BY_LABEL).map(String::as_str), Some("endpointslice-controller.k8s.io"));
        let want = &desired_slices(&svc, &[pod("a", "10.0.0.1", true, false)], MAX_ENDPOINTS)[0];
        let mut obj = slice_object(&svc, want, None);
        assert!(up_to_date(&obj, want, &svc));
        let or = &obj.metadata.owner_references.as_ref().expect("owner")[0];
        assert_eq!((or.kind.as_str(), or.uid.as_str(), or.controller), ("Service", "svc-uid", Some(true)));
        obj.endpoints.as_mut().expect("endpoints")[0].conditions =
            Some(EndpointConditions { ready: Some(false), ..Default::default() });
        assert!(!up_to_date(&obj, want, &svc));
    }
}
