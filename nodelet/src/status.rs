//! Pod status from what the runtime reports: phase, conditions, container statuses, addresses.
//!
//! Pure functions, so the rules (Kubernetes' `getPhase` and condition logic) are unit tested.
//! [`owned`] extracts the part of a status the nodelet writes, so the pod worker writes only
//! when that part changes.

use crate::runtime::{ContainerState, PodState, State, Terminated};
use k8s_openapi::api::core::v1::{
    Container, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, HostIP, Pod,
    PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The status the nodelet wants the pod to show, given what the runtime reports.
/// `current` is the pod's status in the API (transition times and startTime are kept from it).
pub fn pod_status(pod: &Pod, state: &PodState, host_ip: &str, now: Timestamp) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let current = pod.status.clone().unwrap_or_default();
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let init = statuses(spec.init_containers.as_deref().unwrap_or_default(), &state.init_containers);
    let app = statuses(&spec.containers, &state.containers);

    let init_done = init.iter().all(succeeded);
    let init_failed = init.iter().any(|s| failed(s) || last_failed(s));
    let phase = if !init_done {
        if init_failed && restart_policy == "Never" {
            "Failed"
        } else {
            "Pending"
        }
    } else {
        app_phase(&app, restart_policy)
    };

    let unready: Vec<&str> = app.iter().filter(|s| !s.ready).map(|s| s.name.as_str()).collect();
    let unready_init: Vec<&str> = init.iter().filter(|s| !succeeded(s)).map(|s| s.name.as_str()).collect();
    let containers_ready = unready.is_empty();
    let old = current.conditions.clone().unwrap_or_default();
    let cond = |type_: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        condition(&old, type_, ok, reason.map(str::to_string), message, now)
    };
    let mut conditions = vec![
        cond(
            "Initialized",
            init_done,
            (!init_done).then_some("ContainersNotInitialized"),
            (!init_done).then(|| format!("containers with incomplete status: [{}]", unready_init.join(" "))),
        ),
        cond(
            "Ready",
            containers_ready && init_done,
            (!containers_ready).then_some("ContainersNotReady"),
            (!containers_ready).then(|| format!("containers with unready status: [{}]", unready.join(" "))),
        ),
        cond(
            "ContainersReady",
            containers_ready && init_done,
            (!containers_ready).then_some("ContainersNotReady"),
            (!containers_ready).then(|| format!("containers with unready status: [{}]", unready.join(" "))),
        ),
    ];
    match old.iter().find(|c| c.type_ == "PodScheduled") {
        Some(c) => conditions.push(c.clone()),
        None => conditions.push(cond("PodScheduled", true, None, None)),
    }
    conditions.sort_by_key(|c| condition_order(&c.type_));

    let pod_ip = state.pod_ips.first().cloned();
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        container_statuses: Some(app),
        init_container_statuses: (!init.is_empty()).then_some(init),
        host_ip: Some(host_ip.to_string()),
        host_ips: Some(vec![HostIP { ip: host_ip.to_string() }]),
        pod_ip,
        pod_ips: (!state.pod_ips.is_empty()).then(|| state.pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        start_time: current.start_time.clone().or(Some(Time(now))),
        ..current
    }
}

/// The part of a pod status the nodelet owns (what [`pod_status`] sets), for change detection.
pub fn owned(status: &PodStatus) -> PodStatus {
    PodStatus {
        phase: status.phase.clone(),
        conditions: status.conditions.clone(),
        container_statuses: status.container_statuses.clone(),
        init_container_statuses: status.init_container_statuses.clone(),
        host_ip: status.host_ip.clone(),
        host_ips: status.host_ips.clone(),
        pod_ip: status.pod_ip.clone(),
        pod_ips: status.pod_ips.clone(),
        start_time: status.start_time.clone(),
        ..PodStatus::default()
    }
}

fn condition_order(t: &str) -> usize {
    ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
        .iter()
        .position(|x| *x == t)
        .unwrap_or(usize::MAX)
}

fn condition(
    old: &[PodCondition],
    type_: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
    now: Timestamp,
) -> PodCondition {
    let status = if ok { "True" } else { "False" };
    let prev = old.iter().find(|c| c.type_ == type_);
    let transition = match prev {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => Some(Time(now)),
    };
    PodCondition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason,
        message,
        last_transition_time: transition,
        last_probe_time: None,
        observed_generation: None,
    }
}

fn statuses(spec: &[Container], seen: &[ContainerState]) -> Vec<ContainerStatus> {
    spec.iter()
        .map(|c| match seen.iter().find(|s| s.name == c.name) {
            Some(s) => ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                image_id: s.image_id.clone(),
                container_id: s.container_id.clone(),
                ready: s.ready,
                started: Some(matches!(s.state, State::Running { .. })),
                restart_count: s.restart_count,
                state: Some(to_k8s(&s.state)),
                last_state: Some(s.last_terminated.as_ref().map(terminated).unwrap_or_default()),
                ..ContainerStatus::default()
            },
            None => ContainerStatus {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                image_id: String::new(),
                ready: false,
                started: Some(false),
                restart_count: 0,
                state: Some(to_k8s(&State::Waiting { reason: "PodInitializing".into(), message: None })),
                last_state: Some(Default::default()),
                ..ContainerStatus::default()
            },
        })
        .collect()
}

fn to_k8s(state: &State) -> k8s_openapi::api::core::v1::ContainerState {
    match state {
        State::Waiting { reason, message } => k8s_openapi::api::core::v1::ContainerState {
            waiting: Some(ContainerStateWaiting { reason: Some(reason.clone()), message: message.clone() }),
            ..Default::default()
        },
        State::Running { started_at } => k8s_openapi::api::core::v1::ContainerState {
            running: Some(ContainerStateRunning { started_at: Some(Time(*started_at)) }),
            ..Default::default()
        },
        State::Terminated(t) => terminated(t),
    }
}

fn terminated(t: &Terminated) -> k8s_openapi::api::core::v1::ContainerState {
    k8s_openapi::api::core::v1::ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: t.exit_code,
            reason: Some(t.reason.clone()),
            message: t.message.clone(),
            started_at: t.started_at.map(Time),
            finished_at: t.finished_at.map(Time),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn term(s: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    s.state.as_ref()?.terminated.as_ref()
}

fn succeeded(s: &ContainerStatus) -> bool {
    term(s).is_some_and(|t| t.exit_code == 0)
}

fn failed(s: &ContainerStatus) -> bool {
    term(s).is_some_and(|t| t.exit_code != 0)
}

fn last_failed(s: &ContainerStatus) -> bool {
    s.last_state.as_ref().and_then(|l| l.terminated.as_ref()).is_some_and(|t| t.exit_code != 0)
}

/// Kubernetes' phase rule for app containers (kubelet `getPhase`).
fn app_phase(app: &[ContainerStatus], restart_policy: &str) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded_n) = (0, 0, 0, 0);
    for s in app {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = st.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded_n += 1;
            }
        } else if s.last_state.as_ref().is_some_and(|l| l.terminated.is_some()) {
            // Waiting to restart after an exit.
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped > 0 {
        return match restart_policy {
            "Always" => "Running",
            _ if stopped == succeeded_n => "Succeeded",
            "OnFailure" => "Running",
            _ => "Failed",
        };
    }
    "Pending"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::PodState;

    fn pod(restart: &str, init: bool) -> Pod {
        let mut v = serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"restartPolicy": restart, "containers": [{"name": "a", "image": "img"}, {"name": "b", "image": "img"}]},
            "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
        });
        if init {
            v["spec"]["initContainers"] = serde_json::json!([{"name": "i", "image": "img"}]);
        }
        serde_json::from_value(v).expect("pod")
    }

    fn cs(name: &str, state: State, last: Option<Terminated>, ready: bool) -> ContainerState {
        ContainerState {
            name: name.into(),
            container_id: Some(format!("test://{name}")),
            image_id: "sha256:1".into(),
            state,
            last_terminated: last,
            restart_count: if ready { 0 } else { 1 },
            ready,
        }
    }

    fn exited(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: None,
            finished_at: None,
        }
    }

    fn running() -> State {
        State::Running { started_at: Timestamp::from_second(1_700_000_000).expect("ts") }
    }

    fn cond<'a>(s: &'a PodStatus, t: &str) -> &'a PodCondition {
        s.conditions.as_ref().and_then(|c| c.iter().find(|c| c.type_ == t)).expect("condition")
    }

    #[test]
    fn running_and_ready() {
        let now = Timestamp::from_second(1_800_000_000).expect("ts");
        let state = PodState {
            pod_ips: vec!["10.0.0.5".into()],
            containers: vec![cs("a", running(), None, true), cs("b", running(), None, true)],
            ..Default::default()
        };
        let s = pod_status(&pod("Always", false), &state, "192.168.1.2", now);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready").status, "True");
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(
            cond(&s, "PodScheduled").last_transition_time,
            Some(Time(Timestamp::from_second(1_767_225_600).expect("ts")))
        );
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.5"));
        assert_eq!(s.host_ip.as_deref(), Some("192.168.1.2"));
        assert_eq!(s.start_time, Some(Time(now)));
        let types: Vec<_> = s.conditions.iter().flatten().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Initialized", "Ready", "ContainersReady", "PodScheduled"]);
    }

    #[test]
    fn transition_times_stay_while_status_holds() {
        let t1 = Timestamp::from_second(1_800_000_000).expect("ts");
        let t2 = Timestamp::from_second(1_800_000_100).expect("ts");
        let state = PodState {
            containers: vec![cs("a", running(), None, true), cs("b", running(), None, true)],
            ..Default::default()
        };
        let mut p = pod("Always", false);
        let s1 = pod_status(&p, &state, "h", t1);
        p.status = Some(s1.clone());
        let s2 = pod_status(&p, &state, "h", t2);
        assert_eq!(owned(&s1), owned(&s2), "nothing changed, so nothing to write");
    }

    #[test]
    fn pending_while_creating_and_not_ready_message() {
        let state = PodState {
            containers: vec![
                cs("a", running(), None, true),
                cs("b", State::Waiting { reason: "ContainerCreating".into(), message: None }, None, false),
            ],
            ..Default::default()
        };
        let s = pod_status(&pod("Always", false), &state, "h", Timestamp::now());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let ready = cond(&s, "Ready");
        assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("False", Some("ContainersNotReady")));
        assert_eq!(ready.message.as_deref(), Some("containers with unready status: [b]"));
    }

    #[test]
    fn crash_looping_container_keeps_pod_running() {
        let waiting = State::Waiting { reason: "CrashLoopBackOff".into(), message: None };
        let state = PodState {
            containers: vec![cs("a", running(), None, true), cs("b", waiting, Some(exited(1)), false)],
            ..Default::default()
        };
        let s = pod_status(&pod("Always", false), &state, "h", Timestamp::now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let b = &s.container_statuses.as_ref().expect("statuses")[1];
        assert_eq!(b.last_state.as_ref().and_then(|l| l.terminated.as_ref()).map(|t| t.exit_code), Some(1));
    }

    #[test]
    fn terminal_phases() {
        let both = |a: i32, b: i32| PodState {
            containers: vec![
                cs("a", State::Terminated(exited(a)), None, false),
                cs("b", State::Terminated(exited(b)), None, false),
            ],
            ..Default::default()
        };
        let phase = |policy: &str, st: &PodState| pod_status(&pod(policy, false), st, "h", Timestamp::now()).phase;
        assert_eq!(phase("Never", &both(0, 0)).as_deref(), Some("Succeeded"));
        assert_eq!(phase("Never", &both(0, 2)).as_deref(), Some("Failed"));
        assert_eq!(phase("OnFailure", &both(0, 0)).as_deref(), Some("Succeeded"));
        assert_eq!(phase("OnFailure", &both(0, 2)).as_deref(), Some("Running"));
        assert_eq!(phase("Always", &both(0, 0)).as_deref(), Some("Running"));
    }

    #[test]
    fn init_containers_gate_initialized() {
        let pending = PodState::default();
        let s = pod_status(&pod("Always", true), &pending, "h", Timestamp::now());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&s, "Initialized").reason.as_deref(), Some("ContainersNotInitialized"));
        let app = s.container_statuses.as_ref().expect("statuses");
        assert_eq!(
            app[0].state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref()),
            Some("PodInitializing")
        );

        let failed_init = PodState {
            init_containers: vec![cs("i", State::Terminated(exited(3)), None, false)],
            ..Default::default()
        };
        let s = pod_status(&pod("Never", true), &failed_init, "h", Timestamp::now());
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let s = pod_status(&pod("Always", true), &failed_init, "h", Timestamp::now());
        assert_eq!(s.phase.as_deref(), Some("Pending"));
    }
}
