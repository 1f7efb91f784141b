"""End-to-end check of Ferry against the official Python client (`kubernetes` from PyPI).

Run as `python client_e2e.py <kubeconfig>`. Prints one line per check and exits non-zero with
a message on the first failure. Driven by apiserver/tests/python_client.rs.
"""

import json
import sys
import threading
import traceback

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

NS = "py-e2e"


class CheckFailed(Exception):
    pass


def ok(name):
    print(f"ok   {name}", flush=True)


def check(name, cond, detail=""):
    if not cond:
        raise CheckFailed(f"{name}: {detail}" if detail else name)
    ok(name)


def eq(name, got, want):
    check(name, got == want, f"got {got!r}, want {want!r}")


def expect_api_error(name, status, reason, fn):
    """`fn` must raise ApiException with HTTP `status` and a Status body whose reason is `reason`."""
    try:
        fn()
    except ApiException as e:
        try:
            body = json.loads(e.body)
        except (TypeError, ValueError):
            body = {}
        check(f"{name} -> {status} {reason}",
              e.status == status and body.get("kind") == "Status" and body.get("reason") == reason
              and body.get("code") == status,
              f"got status={e.status} reason={e.reason!r} body={e.body}")
        return
    raise CheckFailed(f"{name}: no ApiException (want {status} {reason})")


def meta(name, labels=None):
    return client.V1ObjectMeta(name=name, namespace=NS, labels=labels or {"suite": "py-e2e"})


def crud(kind, model, create, read, replace, patch, delete, body, mutate, verify_replace,
         patch_body, verify_patch, listing=None, delete_returns_object=False):
    """create / read / replace / patch / delete one object of a kind, asserting each step."""
    name = body.metadata.name
    created = create(NS, body)
    check(f"{kind}: create returns {model.__name__}", isinstance(created, model), type(created).__name__)
    eq(f"{kind}: created name", created.metadata.name, name)
    check(f"{kind}: created has uid and resourceVersion",
          bool(created.metadata.uid) and bool(created.metadata.resource_version))

    got = read(name, NS)
    check(f"{kind}: read returns {model.__name__}", isinstance(got, model), type(got).__name__)
    eq(f"{kind}: read uid", got.metadata.uid, created.metadata.uid)

    expect_api_error(f"{kind}: duplicate create", 409, "AlreadyExists", lambda: create(NS, body))

    mutate(got)
    replaced = replace(name, NS, got)
    check(f"{kind}: replace returns {model.__name__}", isinstance(replaced, model))
    check(f"{kind}: replace bumps resourceVersion",
          replaced.metadata.resource_version != created.metadata.resource_version)
    verify_replace(replaced)
    verify_replace(read(name, NS))
    ok(f"{kind}: replaced fields read back")

    patched = patch(name, NS, patch_body)
    check(f"{kind}: patch returns {model.__name__}", isinstance(patched, model))
    verify_patch(patched)
    verify_patch(read(name, NS))
    ok(f"{kind}: patched fields read back")

    if listing is not None:
        listing(name)

    # For Service, Pod and ServiceAccount Kubernetes returns the deleted object (the client's
    # declared type, so the typed call must deserialise it); for the others a Status.
    if delete_returns_object:
        deleted = delete(name, NS)
        check(f"{kind}: delete returns the deleted {model.__name__}",
              isinstance(deleted, model) and deleted.metadata.name == name, deleted)
    else:
        resp = delete(name, NS, _preload_content=False)
        eq(f"{kind}: delete HTTP status", resp.status, 200)
        body = json.loads(resp.data)
        check(f"{kind}: delete returns Status Success",
              body.get("kind") == "Status" and body.get("status") == "Success"
              and (body.get("details") or {}).get("name") == name, body)
    expect_api_error(f"{kind}: read after delete", 404, "NotFound", lambda: read(name, NS))


def list_checks(kind, list_fn, name, label, other_label):
    """list_namespaced_* with label and field selectors; `name` carries `label`."""
    items = list_fn(NS, label_selector=label).items
    check(f"{kind}: list label_selector={label}", [i.metadata.name for i in items] == [name],
          [i.metadata.name for i in items])
    items = list_fn(NS, label_selector=other_label).items
    check(f"{kind}: list label_selector={other_label} excludes it",
          name not in [i.metadata.name for i in items])
    items = list_fn(NS, field_selector=f"metadata.name={name}").items
    check(f"{kind}: list field_selector metadata.name={name}", [i.metadata.name for i in items] == [name],
          [i.metadata.name for i in items])
    items = list_fn(NS, field_selector=f"metadata.name!={name}").items
    check(f"{kind}: list field_selector metadata.name!={name} excludes it",
          name not in [i.metadata.name for i in items])


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    api = client.ApiClient()
    v1 = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    coord = client.CoordinationV1Api(api)
    events = client.EventsV1Api(api)

    try:
        v1.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    except ApiException as e:
        if e.status != 409:
            raise
    ns = v1.read_namespace(NS)
    eq("namespace: read", ns.metadata.name, NS)

    # Errors ------------------------------------------------------------------------------
    expect_api_error("read missing configmap", 404, "NotFound",
                     lambda: v1.read_namespaced_config_map("does-not-exist", NS))
    expect_api_error("read configmap in missing namespace", 404, "NotFound",
                     lambda: v1.read_namespaced_config_map("x", "no-such-namespace"))

    # Watch (started before the ConfigMap CRUD so it sees ADDED, MODIFIED, DELETED) ----------
    rv = v1.list_namespaced_config_map(NS).metadata.resource_version
    check("configmap: list has resourceVersion", bool(rv))
    seen = []
    watch_err = []
    w = watch.Watch()

    def watcher():
        try:
            for ev in w.stream(v1.list_namespaced_config_map, NS, resource_version=rv,
                               field_selector="metadata.name=cm1", timeout_seconds=30):
                obj = ev["object"]
                seen.append((ev["type"], obj.metadata.name, type(obj).__name__,
                             (obj.data or {}).get("k")))
                if ev["type"] == "DELETED":
                    w.stop()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            watch_err.append(f"{type(e).__name__}: {e}")

    t = threading.Thread(target=watcher, daemon=True)
    t.start()

    # ConfigMap ---------------------------------------------------------------------------
    def cm_list(name):
        list_checks("configmap", v1.list_namespaced_config_map, name, "app=cm1", "app=other")

    crud("configmap", client.V1ConfigMap,
         v1.create_namespaced_config_map, v1.read_namespaced_config_map,
         v1.replace_namespaced_config_map, v1.patch_namespaced_config_map,
         v1.delete_namespaced_config_map,
         client.V1ConfigMap(metadata=meta("cm1", {"app": "cm1"}), data={"k": "v1"}),
         lambda o: o.data.update({"k": "v2"}),
         lambda o: eq("configmap: data.k after replace", o.data["k"], "v2"),
         {"data": {"extra": "x"}, "metadata": {"labels": {"patched": "yes"}}},
         lambda o: check("configmap: patch merged data and labels",
                         o.data == {"k": "v2", "extra": "x"} and o.metadata.labels.get("patched") == "yes"
                         and o.metadata.labels.get("app") == "cm1", f"{o.data} {o.metadata.labels}"),
         cm_list)

    t.join(timeout=30)
    check("watch: thread finished", not t.is_alive(), f"seen so far {seen}")
    check("watch: no error", not watch_err, watch_err)
    types = [s[0] for s in seen]
    eq("watch: event types in order", types, ["ADDED", "MODIFIED", "MODIFIED", "DELETED"])
    check("watch: objects are V1ConfigMap named cm1",
          all(s[1] == "cm1" and s[2] == "V1ConfigMap" for s in seen), seen)
    eq("watch: data.k per event", [s[3] for s in seen], ["v1", "v2", "v2", "v2"])

    # Secret ------------------------------------------------------------------------------
    crud("secret", client.V1Secret,
         v1.create_namespaced_secret, v1.read_namespaced_secret,
         v1.replace_namespaced_secret, v1.patch_namespaced_secret, v1.delete_namespaced_secret,
         client.V1Secret(metadata=meta("s1", {"app": "s1"}), type="Opaque", string_data={"user": "admin"}),
         lambda o: o.data.update({"pass": "aHVudGVyMg=="}),
         lambda o: check("secret: data after replace",
                         o.data == {"user": "YWRtaW4=", "pass": "aHVudGVyMg=="} and o.type == "Opaque",
                         f"{o.data} {o.type}"),
         {"stringData": {"token": "abc"}},
         lambda o: check("secret: stringData patched into data",
                         o.data.get("token") == "YWJj" and o.data.get("user") == "YWRtaW4=",
                         o.data),
         lambda n: list_checks("secret", v1.list_namespaced_secret, n, "app=s1", "app=other"))

    # Service -----------------------------------------------------------------------------
    svc = client.V1Service(
        metadata=meta("svc1", {"app": "svc1"}),
        spec=client.V1ServiceSpec(selector={"app": "web"},
                                  ports=[client.V1ServicePort(name="http", port=80, target_port=8080)]))

    def svc_mutate(o):
        o.spec.ports.append(client.V1ServicePort(name="https", port=443, target_port=8443))

    def svc_verify_replace(o):
        eq("service: ports after replace", [(p.name, p.port) for p in o.spec.ports], [("http", 80), ("https", 443)])
        eq("service: type defaulted", o.spec.type, "ClusterIP")

    def svc_verify_patch(o):
        # Strategic merge: ports merge by port, so the patch updates "http" and keeps "https".
        eq("service: ports after strategic merge patch",
           [(p.name, p.port, p.target_port) for p in o.spec.ports],
           [("http", 80, 9090), ("https", 443, 8443)])
        eq("service: selector patched", o.spec.selector, {"app": "web", "tier": "front"})

    crud("service", client.V1Service,
         v1.create_namespaced_service, v1.read_namespaced_service,
         v1.replace_namespaced_service, v1.patch_namespaced_service, v1.delete_namespaced_service,
         svc, svc_mutate, svc_verify_replace,
         {"spec": {"ports": [{"port": 80, "targetPort": 9090}], "selector": {"tier": "front"}}},
         svc_verify_patch,
         lambda n: list_checks("service", v1.list_namespaced_service, n, "app=svc1", "app=other"),
         delete_returns_object=True)

    # Pod ---------------------------------------------------------------------------------
    pod = client.V1Pod(
        metadata=meta("pod1", {"app": "pod1"}),
        spec=client.V1PodSpec(containers=[
            client.V1Container(name="main", image="busybox:1.36", command=["sleep", "3600"]),
            client.V1Container(name="side", image="nginx:1.27"),
        ]))

    def pod_mutate(o):
        o.spec.containers[0].image = "busybox:1.37"
        o.metadata.annotations = {"note": "replaced"}

    def pod_verify_replace(o):
        eq("pod: image after replace", o.spec.containers[0].image, "busybox:1.37")
        eq("pod: annotation after replace", (o.metadata.annotations or {}).get("note"), "replaced")

    def pod_verify_patch(o):
        # Strategic merge: containers merge by name; only "side" changes, "main" is kept.
        eq("pod: containers after strategic merge patch",
           [(c.name, c.image) for c in o.spec.containers], [("main", "busybox:1.37"), ("side", "nginx:1.28")])

    def pod_list(n):
        list_checks("pod", v1.list_namespaced_pod, n, "app=pod1", "app=other")
        items = v1.list_namespaced_pod(NS, field_selector="status.phase=Running").items
        check("pod: list field_selector status.phase=Running excludes unscheduled pod",
              n not in [i.metadata.name for i in items])
        items = v1.list_namespaced_pod(NS, field_selector="spec.nodeName=").items
        check("pod: list field_selector spec.nodeName= includes unscheduled pod",
              n in [i.metadata.name for i in items])

    crud("pod", client.V1Pod,
         v1.create_namespaced_pod, v1.read_namespaced_pod,
         v1.replace_namespaced_pod, v1.patch_namespaced_pod, v1.delete_namespaced_pod,
         pod, pod_mutate, pod_verify_replace,
         {"spec": {"containers": [{"name": "side", "image": "nginx:1.28"}]}},
         pod_verify_patch, pod_list, delete_returns_object=True)

    # ServiceAccount ----------------------------------------------------------------------
    crud("serviceaccount", client.V1ServiceAccount,
         v1.create_namespaced_service_account, v1.read_namespaced_service_account,
         v1.replace_namespaced_service_account, v1.patch_namespaced_service_account,
         v1.delete_namespaced_service_account,
         client.V1ServiceAccount(metadata=meta("sa1", {"app": "sa1"})),
         lambda o: setattr(o, "automount_service_account_token", False),
         lambda o: eq("serviceaccount: automount after replace", o.automount_service_account_token, False),
         {"imagePullSecrets": [{"name": "regcred"}]},
         lambda o: eq("serviceaccount: imagePullSecrets patched",
                      [s.name for s in (o.image_pull_secrets or [])], ["regcred"]),
         lambda n: list_checks("serviceaccount", v1.list_namespaced_service_account, n, "app=sa1", "app=other"),
         delete_returns_object=True)

    # Endpoints ---------------------------------------------------------------------------
    ep = client.V1Endpoints(
        metadata=meta("ep1", {"app": "ep1"}),
        subsets=[client.V1EndpointSubset(addresses=[client.V1EndpointAddress(ip="10.0.0.1")],
                                         ports=[client.CoreV1EndpointPort(name="http", port=80)])])

    def ep_mutate(o):
        o.subsets[0].addresses.append(client.V1EndpointAddress(ip="10.0.0.2"))

    crud("endpoints", client.V1Endpoints,
         v1.create_namespaced_endpoints, v1.read_namespaced_endpoints,
         v1.replace_namespaced_endpoints, v1.patch_namespaced_endpoints, v1.delete_namespaced_endpoints,
         ep, ep_mutate,
         lambda o: eq("endpoints: addresses after replace",
                      [a.ip for a in o.subsets[0].addresses], ["10.0.0.1", "10.0.0.2"]),
         {"metadata": {"annotations": {"patched": "yes"}}},
         lambda o: check("endpoints: annotation patched, subsets kept",
                         (o.metadata.annotations or {}).get("patched") == "yes"
                         and [a.ip for a in o.subsets[0].addresses] == ["10.0.0.1", "10.0.0.2"]),
         lambda n: list_checks("endpoints", v1.list_namespaced_endpoints, n, "app=ep1", "app=other"))

    # core/v1 Event -----------------------------------------------------------------------
    core_ev = client.CoreV1Event(
        metadata=meta("ev1", {"app": "ev1"}),
        involved_object=client.V1ObjectReference(kind="Pod", name="pod1", namespace=NS, api_version="v1"),
        reason="Started", message="first", type="Normal", count=1,
        source=client.V1EventSource(component="py-e2e"))

    def core_ev_mutate(o):
        o.message = "second"
        o.count = 2

    def core_ev_list(n):
        list_checks("event", v1.list_namespaced_event, n, "app=ev1", "app=other")
        items = v1.list_namespaced_event(NS, field_selector="involvedObject.name=pod1,reason=Started").items
        check("event: list field_selector involvedObject.name=pod1,reason=Started",
              n in [i.metadata.name for i in items])
        items = v1.list_namespaced_event(NS, field_selector="involvedObject.name=nope").items
        check("event: list field_selector involvedObject.name=nope excludes it",
              n not in [i.metadata.name for i in items])

    crud("event", client.CoreV1Event,
         v1.create_namespaced_event, v1.read_namespaced_event,
         v1.replace_namespaced_event, v1.patch_namespaced_event, v1.delete_namespaced_event,
         core_ev, core_ev_mutate,
         lambda o: check("event: message/count after replace", o.message == "second" and o.count == 2,
                         f"{o.message} {o.count}"),
         {"count": 3, "message": "third"},
         lambda o: check("event: message/count patched", o.message == "third" and o.count == 3
                         and o.involved_object.name == "pod1", f"{o.message} {o.count}"),
         core_ev_list)

    # Deployment --------------------------------------------------------------------------
    dep = client.V1Deployment(
        metadata=meta("web", {"app": "web"}),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[
                    client.V1Container(name="web", image="nginx:1.27",
                                       ports=[client.V1ContainerPort(container_port=80)])]))))

    def dep_mutate(o):
        o.spec.replicas = 3

    def dep_verify_replace(o):
        eq("deployment: replicas after replace", o.spec.replicas, 3)
        eq("deployment: strategy defaulted", o.spec.strategy.type, "RollingUpdate")

    def dep_verify_patch(o):
        eq("deployment: containers after strategic merge patch",
           [(c.name, c.image) for c in o.spec.template.spec.containers], [("web", "nginx:1.28")])
        eq("deployment: container ports kept", [p.container_port for p in o.spec.template.spec.containers[0].ports], [80])

    def dep_scale_and_list(n):
        list_checks("deployment", apps.list_namespaced_deployment, n, "app=web", "app=other")
        d = apps.read_namespaced_deployment(n, NS)
        check("deployment: generation bumped by spec changes", (d.metadata.generation or 0) >= 3,
              d.metadata.generation)
        sc = apps.read_namespaced_deployment_scale(n, NS)
        check("deployment: read scale returns V1Scale", isinstance(sc, client.V1Scale))
        eq("deployment: scale.spec.replicas", sc.spec.replicas, 3)
        # A dict body is sent as a strategic merge patch, which Kubernetes accepts on /scale.
        sc = apps.patch_namespaced_deployment_scale(n, NS, {"spec": {"replicas": 5}})
        check("deployment: patch scale returns V1Scale", isinstance(sc, client.V1Scale))
        eq("deployment: patch scale returns replicas", sc.spec.replicas, 5)
        eq("deployment: spec.replicas after scale patch", apps.read_namespaced_deployment(n, NS).spec.replicas, 5)
        sc = apps.read_namespaced_deployment_scale(n, NS)
        sc.spec.replicas = 1
        sc = apps.replace_namespaced_deployment_scale(n, NS, sc)
        eq("deployment: replace scale returns replicas", sc.spec.replicas, 1)
        eq("deployment: spec.replicas after scale replace", apps.read_namespaced_deployment(n, NS).spec.replicas, 1)

    crud("deployment", client.V1Deployment,
         apps.create_namespaced_deployment, apps.read_namespaced_deployment,
         apps.replace_namespaced_deployment, apps.patch_namespaced_deployment,
         apps.delete_namespaced_deployment,
         dep, dep_mutate, dep_verify_replace,
         {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}},
         dep_verify_patch, dep_scale_and_list)

    # ReplicaSet --------------------------------------------------------------------------
    rs = client.V1ReplicaSet(
        metadata=meta("rs1", {"app": "rs1"}),
        spec=client.V1ReplicaSetSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": "rs1"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "rs1"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1.36")]))))

    crud("replicaset", client.V1ReplicaSet,
         apps.create_namespaced_replica_set, apps.read_namespaced_replica_set,
         apps.replace_namespaced_replica_set, apps.patch_namespaced_replica_set,
         apps.delete_namespaced_replica_set,
         rs, lambda o: setattr(o.spec, "replicas", 2),
         lambda o: eq("replicaset: replicas after replace", o.spec.replicas, 2),
         {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1.37"}]}}}},
         lambda o: eq("replicaset: image patched", o.spec.template.spec.containers[0].image, "busybox:1.37"),
         lambda n: list_checks("replicaset", apps.list_namespaced_replica_set, n, "app=rs1", "app=other"))

    # Lease -------------------------------------------------------------------------------
    lease = client.V1Lease(metadata=meta("lease1", {"app": "lease1"}),
                           spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15))

    def lease_mutate(o):
        o.spec.holder_identity = "b"
        o.spec.lease_transitions = 1

    crud("lease", client.V1Lease,
         coord.create_namespaced_lease, coord.read_namespaced_lease,
         coord.replace_namespaced_lease, coord.patch_namespaced_lease, coord.delete_namespaced_lease,
         lease, lease_mutate,
         lambda o: check("lease: holder/transitions after replace",
                         o.spec.holder_identity == "b" and o.spec.lease_transitions == 1),
         {"spec": {"leaseDurationSeconds": 30}},
         lambda o: check("lease: duration patched, holder kept",
                         o.spec.lease_duration_seconds == 30 and o.spec.holder_identity == "b"),
         lambda n: list_checks("lease", coord.list_namespaced_lease, n, "app=lease1", "app=other"))

    # events.k8s.io/v1 Event --------------------------------------------------------------
    new_ev = client.EventsV1Event(
        metadata=meta("ev2", {"app": "ev2"}),
        event_time="2024-01-01T00:00:00.000000Z",
        reporting_controller="py-e2e/controller", reporting_instance="py-e2e-1",
        action="Create", reason="Created", type="Normal", note="first",
        regarding=client.V1ObjectReference(kind="Pod", name="pod1", namespace=NS, api_version="v1"))

    def new_ev_list(n):
        list_checks("events.k8s.io event", events.list_namespaced_event, n, "app=ev2", "app=other")
        core = v1.read_namespaced_event(n, NS)
        check("events.k8s.io event: visible as core Event",
              core.involved_object.name == "pod1" and core.message == "first" and core.reason == "Created",
              f"{core.involved_object} {core.message}")
        # As in Kubernetes, an events.k8s.io/v1 Event's note is immutable.
        cur = events.read_namespaced_event(n, NS)
        cur.note = "changed"
        expect_api_error("events.k8s.io event: replace changing note", 422, "Invalid",
                         lambda: events.replace_namespaced_event(n, NS, cur))

    def new_ev_mutate(o):
        o.series = client.EventsV1EventSeries(count=2, last_observed_time="2024-01-01T00:01:00.000000Z")

    crud("events.k8s.io event", client.EventsV1Event,
         events.create_namespaced_event, events.read_namespaced_event,
         events.replace_namespaced_event, events.patch_namespaced_event, events.delete_namespaced_event,
         new_ev, new_ev_mutate,
         lambda o: check("events.k8s.io event: series after replace",
                         o.series is not None and o.series.count == 2 and o.note == "first", f"{o.series}"),
         {"series": {"count": 3}, "metadata": {"annotations": {"patched": "yes"}}},
         lambda o: check("events.k8s.io event: series.count and annotation patched, regarding kept",
                         o.series.count == 3 and (o.metadata.annotations or {}).get("patched") == "yes"
                         and o.regarding.name == "pod1", f"{o.series} {o.metadata.annotations}"),
         new_ev_list)

    print("PASS: all checks passed", flush=True)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: client_e2e.py <kubeconfig>", file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1])
    except CheckFailed as e:
        print(f"FAIL: {e}", flush=True)
        sys.exit(1)
    except ApiException as e:
        traceback.print_exc()
        print(f"FAIL: unexpected ApiException {e.status} {e.reason}: {e.body}", flush=True)
        sys.exit(1)
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        print(f"FAIL: unexpected {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
