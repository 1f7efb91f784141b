//! The Endpoints controller: one core/v1 `Endpoints` object per Service with a selector, named
//! like the Service, listing the IPs of the pods the selector matches — ready pods under
//! `addresses`, the others under `notReadyAddresses` — grouped into subsets by their (per-pod
//! resolved) ports, as Kubernetes' endpoints controller does.
//!
//! Services without a selector are left alone (their Endpoints are the user's). When a Service
//! goes, its Endpoints go too. Nothing is written when the stored object already says the same.
//! The pod-side helpers ([`pod_in_endpoints`], [`find_port`], [`matching_pods`]) are shared with
//! the EndpointSlice controller.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service, ServicePort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Resource, ResourceExt};

use crate::informer::Informer;

/// Label Kubernetes puts on the Endpoints and EndpointSlices of headless Services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

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
    /// All Endpoints.
    pub endpoints: Store<Endpoints>,
}

/// Maps pod changes to the Services that select the pod now *or list it now* (a pod whose
/// labels changed must leave the Endpoints of the Service it no longer matches).
pub struct PodMapper {
    services: Store<Service>,
    listed_in: ListedIn,
}

/// Names the Services whose current endpoints reference a pod.
type ListedIn = Box<dyn Fn(&Pod) -> Vec<ObjectRef<Service>> + Send + Sync>;

/// Port set → (ports, ready addresses, not-ready addresses).
type Groups = BTreeMap<Vec<(String, i32, String)>, (Vec<EndpointPort>, Vec<EndpointAddress>, Vec<EndpointAddress>)>;

impl PodMapper {
    /// A mapper over the Service store; `listed_in` names the Services whose current
    /// endpoints reference a pod.
    pub fn new(
        services: Store<Service>,
        listed_in: impl Fn(&Pod) -> Vec<ObjectRef<Service>> + Send + Sync + 'static,
    ) -> Self {
        Self { services, listed_in: Box::new(listed_in) }
    }

    /// The Services to reconcile because `pod` changed (or was deleted).
    pub fn map(&self, pod: &Pod) -> Vec<ObjectRef<Service>> {
        let ns = pod.namespace().unwrap_or_default();
        let labels = pod.labels();
        let mut out: HashSet<ObjectRef<Service>> = self
            .services
            .state()
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(ns.as_str()) && selects(s, labels))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect();
        out.extend((self.listed_in)(pod));
        out.into_iter().collect()
    }
}

/// The Services whose Endpoints (in `store`) list this pod.
pub fn endpoints_listing(store: &Store<Endpoints>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    let (ns, uid) = (pod.namespace(), pod.uid());
    store
        .state()
        .iter()
        .filter(|ep| ep.namespace() == ns)
        .filter(|ep| {
            ep.subsets.iter().flatten().any(|s| {
                s.addresses
                    .iter()
                    .chain(s.not_ready_addresses.iter())
                    .flatten()
                    .any(|a| a.target_ref.as_ref().and_then(|r| r.uid.as_ref()) == uid.as_ref())
            })
        })
        .map(|ep| ObjectRef::new(&ep.name_any()).within(&ep.namespace().unwrap_or_default()))
        .collect()
}

/// The Service's selector, if it has a non-empty one (only those are managed).
pub fn selector(svc: &Service) -> Option<&BTreeMap<String, String>> {
    svc.spec.as_ref()?.selector.as_ref().filter(|s| !s.is_empty())
}

/// Whether the Service's (non-empty) selector matches `labels`.
pub fn selects(svc: &Service, labels: &BTreeMap<String, String>) -> bool {
    selector(svc).is_some_and(|sel| sel.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// Pods of the Service's namespace its selector matches, sorted by name.
pub fn matching_pods(svc: &Service, pods: &Store<Pod>) -> Vec<Arc<Pod>> {
    let ns = svc.namespace();
    let mut out: Vec<_> =
        pods.state().into_iter().filter(|p| p.namespace() == ns && selects(svc, p.labels())).collect();
    out.sort_by_key(|p| p.name_any());
    out
}

/// Whether the pod belongs in endpoints at all (Kubernetes' `ShouldPodBeInEndpoints`): it has
/// an IP, is not terminal, and is not terminating unless `include_terminating`.
pub fn pod_in_endpoints(pod: &Pod, include_terminating: bool) -> bool {
    let Some(status) = pod.status.as_ref() else { return false };
    if status.pod_ip.as_deref().unwrap_or("").is_empty() {
        return false;
    }
    if !include_terminating && pod.metadata.deletion_timestamp.is_some() {
        return false;
    }
    !matches!(status.phase.as_deref(), Some("Failed") | Some("Succeeded"))
}

/// The port a Service port reaches on this pod: `targetPort` as a number, or the container
/// port of that name and protocol (`None` if the pod has no such port); no targetPort means
/// the Service port itself.
pub fn find_port(pod: &Pod, sp: &ServicePort) -> Option<i32> {
    let protocol = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => {
            if let Ok(n) = name.parse::<i32>() {
                return Some(n);
            }
            pod.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
                (p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                    .then_some(p.container_port)
            })
        }
    }
}

/// The pod's hostname in the Service's DNS records: `spec.hostname` when the pod's
/// `spec.subdomain` names this Service.
pub fn pod_hostname(pod: &Pod, svc: &Service) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.as_deref().filter(|h| !h.is_empty())?;
    (spec.subdomain.as_deref() == Some(svc.name_any().as_str())).then(|| hostname.to_string())
}

/// A `targetRef` to the pod.
pub fn pod_ref(pod: &Pod) -> ObjectReference {
    ObjectReference {
        kind: Some("Pod".into()),
        namespace: pod.namespace(),
        name: Some(pod.name_any()),
        uid: pod.uid(),
        ..Default::default()
    }
}

/// Labels of the Service's Endpoints: the Service's own, plus the headless marker.
pub fn endpoints_labels(svc: &Service) -> BTreeMap<String, String> {
    let mut labels = svc.labels().clone();
    let headless = svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None");
    if headless {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    } else {
        labels.remove(HEADLESS_LABEL);
    }
    labels
}

fn publish_not_ready(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false)
}

fn port_key(p: &EndpointPort) -> (String, i32, String) {
    (p.name.clone().unwrap_or_default(), p.port, p.protocol.clone().unwrap_or_default())
}

fn addr_key(a: &EndpointAddress) -> (String, String) {
    (a.ip.clone(), a.target_ref.as_ref().and_then(|r| r.uid.clone()).unwrap_or_default())
}

/// Sort addresses and ports of each subset and the subsets themselves, so two equal sets
/// compare equal (Kubernetes' `RepackSubsets` order does not matter to clients).
pub fn normalize(mut subsets: Vec<EndpointSubset>) -> Vec<EndpointSubset> {
    for s in &mut subsets {
        for list in [&mut s.addresses, &mut s.not_ready_addresses] {
            if let Some(l) = list {
                l.sort_by_key(addr_key);
            }
            if list.as_ref().is_some_and(Vec::is_empty) {
                *list = None;
            }
        }
        if let Some(ports) = &mut s.ports {
            ports.sort_by_key(port_key);
        }
        if s.ports.as_ref().is_some_and(Vec::is_empty) {
            s.ports = None;
        }
    }
    subsets.retain(|s| s.addresses.is_some() || s.not_ready_addresses.is_some());
    subsets.sort_by_key(|s| s.ports.as_ref().map(|p| p.iter().map(port_key).collect::<Vec<_>>()));
    subsets
}

/// The subsets the Service's Endpoints should hold, given the pods its selector matches.
pub fn desired_subsets(svc: &Service, pods: &[Arc<Pod>]) -> Vec<EndpointSubset> {
    let tolerate = publish_not_ready(svc);
    let svc_ports = svc.spec.as_ref().and_then(|s| s.ports.clone()).unwrap_or_default();
    // Port set → (ready, not ready) addresses.
    let mut groups = Groups::new();
    for pod in pods {
        if !pod_in_endpoints(pod, tolerate) {
            continue;
        }
        let status = pod.status.as_ref();
        let addr = EndpointAddress {
            ip: status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
            hostname: pod_hostname(pod, svc),
            node_name: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(pod_ref(pod)),
        };
        let ports: Vec<EndpointPort> = svc_ports
            .iter()
            .filter_map(|sp| {
                let port = find_port(pod, sp)?;
                Some(EndpointPort {
                    name: sp.name.clone().filter(|n| !n.is_empty()),
                    port,
                    protocol: Some(sp.protocol.clone().unwrap_or_else(|| "TCP".into())),
                    app_protocol: sp.app_protocol.clone(),
                })
            })
            .collect();
        if !svc_ports.is_empty() && ports.is_empty() {
            continue; // none of the Service's ports exists on this pod
        }
        let mut key: Vec<_> = ports.iter().map(port_key).collect();
        key.sort();
        let entry = groups.entry(key).or_insert_with(|| (ports, Vec::new(), Vec::new()));
        if tolerate || crate::util::pod_ready(pod) {
            entry.1.push(addr);
        } else {
            entry.2.push(addr);
        }
    }
    normalize(
        groups
            .into_values()
            .map(|(ports, ready, not_ready)| EndpointSubset {
                addresses: Some(ready),
                not_ready_addresses: Some(not_ready),
                ports: Some(ports),
            })
            .collect(),
    )
}

/// Run until `shutdown` resolves.
pub async fn run(
    client: kube::Client,
    services: &Informer<Service>,
    pods: &Informer<Pod>,
    endpoints: &Informer<Endpoints>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context { client: client.clone(), pods: pods.store(), endpoints: endpoints.store() });
    let ep_store = endpoints.store();
    let mapper = PodMapper::new(services.store(), move |pod| endpoints_listing(&ep_store, pod));
    let cleanup = delete_orphans(client, services);
    let controller = Controller::for_shared_stream(services.subscribe(), services.store())
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .watches_shared_stream(pods.subscribe(), move |pod: Arc<Pod>| mapper.map(&pod))
        .watches_shared_stream(endpoints.subscribe(), |ep: Arc<Endpoints>| {
            Some(ObjectRef::new(&ep.name_any()).within(&ep.namespace().unwrap_or_default()))
        })
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile,
            |_, e, _| {
                tracing::warn!(error = %e, "endpoints reconcile failed; retrying");
                Action::requeue(Duration::from_millis(500))
            },
            ctx,
        )
        .for_each(|_| async {});
    tokio::join!(controller, cleanup);
}

/// When a Service goes, delete its Endpoints (the reconciler never sees deleted Services).
async fn delete_orphans(client: kube::Client, services: &Informer<Service>) {
    let store = services.store();
    let mut events = services.subscribe();
    while let Some(svc) = events.next().await {
        let oref = ObjectRef::from_obj(svc.as_ref());
        if store.get(&oref).is_some_and(|s| s.uid() == svc.uid()) || selector(&svc).is_none() {
            continue;
        }
        let ns = svc.namespace().unwrap_or_default();
        let api: Api<Endpoints> = Api::namespaced(client.clone(), &ns);
        match api.delete(&svc.name_any(), &DeleteParams::default()).await {
            Ok(_) => tracing::debug!(service = %oref, "deleted the Endpoints of a deleted Service"),
            Err(e) if crate::util::api_code(&e) == Some(404) => {}
            Err(e) => tracing::warn!(service = %oref, error = %e, "deleting Endpoints failed"),
        }
    }
}

/// Reconcile one Service's Endpoints.
pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, Error> {
    if selector(&svc).is_none() || svc.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let pods = matching_pods(&svc, &ctx.pods);
    let subsets = desired_subsets(&svc, &pods);
    let labels = endpoints_labels(&svc);
    let api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let current = ctx.endpoints.get(&ObjectRef::new(&name).within(&ns));
    let result = match current {
        Some(cur) => {
            let same = normalize(cur.subsets.clone().unwrap_or_default()) == subsets && cur.labels() == &labels;
            if same {
                return Ok(Action::await_change());
            }
            let mut next = (*cur).clone();
            next.metadata.labels = Some(labels);
            next.subsets = Some(subsets);
            api.replace(&name, &PostParams::default(), &next).await.map(|_| ())
        }
        None => {
            let ep = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    labels: Some(labels),
                    ..Default::default()
                },
                subsets: Some(subsets),
            };
            api.create(&PostParams::default(), &ep).await.map(|_| ())
        }
    };
    match result {
        Ok(()) => Ok(Action::await_change()),
        // Stale cache (409) or a namespace going away (403/404): the watch brings the news.
        Err(e) if matches!(crate::util::api_code(&e), Some(409)) => Ok(Action::requeue(Duration::from_millis(100))),
        Err(e) if matches!(crate::util::api_code(&e), Some(403) | Some(404)) => Ok(Action::await_change()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).expect("service")
    }

    fn pod(name: &str, ip: &str, ready: bool, extra: serde_json::Value) -> Arc<Pod> {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i",
                "ports": [{"name": "http", "containerPort": 8080}, {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}]},
            "status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        });
        if let (Some(obj), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            for (k, e) in extra {
                if let (Some(base), Some(e)) = (obj.get_mut(k).and_then(|b| b.as_object_mut()), e.as_object()) {
                    base.extend(e.clone());
                }
            }
        }
        Arc::new(serde_json::from_value(v).expect("pod"))
    }

    fn web() -> Service {
        svc(json!({"metadata": {"name": "web", "namespace": "default", "labels": {"team": "a"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}))
    }

    #[test]
    fn ready_and_not_ready_pods_with_named_ports() {
        let pods = vec![
            pod("a", "10.0.0.2", true, json!({})),
            pod("b", "10.0.0.1", false, json!({})),
            pod("c", "", true, json!({})),
            pod("d", "10.0.0.4", true, json!({"status": {"phase": "Succeeded"}})),
            pod("e", "10.0.0.5", true, json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}})),
        ];
        let subsets = desired_subsets(&web(), &pods);
        assert_eq!(subsets.len(), 1);
        let s = &subsets[0];
        let ips = |l: &Option<Vec<EndpointAddress>>| l.iter().flatten().map(|a| a.ip.clone()).collect::<Vec<_>>();
        assert_eq!(ips(&s.addresses), vec!["10.0.0.2"]);
        assert_eq!(ips(&s.not_ready_addresses), vec!["10.0.0.1"]);
        let port = &s.ports.as_ref().expect("ports")[0];
        assert_eq!((port.name.as_deref(), port.port, port.protocol.as_deref()), (Some("http"), 8080, Some("TCP")));
        let a = &s.addresses.as_ref().expect("ready")[0];
        assert_eq!(a.node_name.as_deref(), Some("n1"));
        assert_eq!(a.target_ref.as_ref().and_then(|r| r.name.as_deref()), Some("a"));
    }

    #[test]
    fn pods_with_different_ports_get_their_own_subsets() {
        let other = pod(
            "b",
            "10.0.0.9",
            true,
            json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"name": "http", "containerPort": 9090}]}]}}),
        );
        let nameless =
            pod("c", "10.0.0.7", true, json!({"spec": {"containers": [{"name": "c", "image": "i", "ports": []}]}}));
        let subsets = desired_subsets(&web(), &[pod("a", "10.0.0.2", true, json!({})), other, nameless]);
        let ports: Vec<i32> = subsets.iter().map(|s| s.ports.as_ref().expect("ports")[0].port).collect();
        assert_eq!(ports, vec![8080, 9090], "the pod without an `http` port is left out");
    }

    #[test]
    fn publish_not_ready_and_headless() {
        let mut s = web();
        let spec = s.spec.as_mut().expect("spec");
        spec.publish_not_ready_addresses = Some(true);
        spec.cluster_ip = Some("None".into());
        let subsets = desired_subsets(&s, &[pod("b", "10.0.0.1", false, json!({}))]);
        assert_eq!(subsets[0].addresses.as_ref().map(Vec::len), Some(1));
        assert!(subsets[0].not_ready_addresses.is_none());
        assert_eq!(endpoints_labels(&s).get(HEADLESS_LABEL).map(String::as_str), Some(""));
        assert_eq!(endpoints_labels(&s).get("team").map(String::as_str), Some("a"));
    }

    #[test]
    fn numeric_and_missing_target_ports() {
        let s = svc(json!({"metadata": {"name": "x", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8081}, {"port": 53, "protocol": "UDP", "name": "dns", "targetPort": "dns"}, {"port": 7, "name": "seven"}]}}));
        let p = pod("a", "10.0.0.2", true, json!({}));
        let sp = s.spec.as_ref().and_then(|s| s.ports.clone()).expect("ports");
        assert_eq!(find_port(&p, &sp[0]), Some(8081));
        assert_eq!(find_port(&p, &sp[1]), Some(53));
        assert_eq!(find_port(&p, &sp[2]), Some(7));
        // A named port with the wrong protocol does not resolve.
        let tcp_dns: ServicePort = serde_json::from_value(json!({"port": 53, "targetPort": "dns"})).expect("port");
        assert_eq!(find_port(&p, &tcp_dns), None);
    }

    #[test]
    fn normalize_ignores_order() {
        let pods = vec![pod("a", "10.0.0.2", true, json!({})), pod("b", "10.0.0.1", true, json!({}))];
        let mut reversed = desired_subsets(&web(), &pods);
        if let Some(a) = reversed[0].addresses.as_mut() {
            a.reverse();
        }
        assert_eq!(normalize(reversed), desired_subsets(&web(), &pods));
    }

    #[test]
    fn selectors_only_match_non_empty() {
        let empty = svc(json!({"metadata": {"name": "x"}, "spec": {"selector": {}}}));
        assert!(!selects(&empty, &BTreeMap::new()));
        assert!(selects(&web(), &BTreeMap::from([("app".to_string(), "web".to_string())])));
    }
}
