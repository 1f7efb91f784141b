//! Property: whatever the mix of nodes and pods, the scheduler never places more requests on a
//! node than its allocatable (cpu, memory, pod count).

use ferry_scheduler::cache::Cache;
use ferry_scheduler::framework::Framework;
use ferry_scheduler::plugins::PodCtx;
use k8s_openapi::api::core::v1::{Node, Pod};
use proptest::prelude::*;
use serde_json::json;

fn node(i: usize, cpu: u32, mem_mi: u32, pods: u32) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": format!("n{i}")},
        "status": {"allocatable": {"cpu": format!("{cpu}m"), "memory": format!("{mem_mi}Mi"), "pods": pods.to_string()}}
    }))
    .expect("node")
}

fn pod(i: usize, cpu: u32, mem_mi: u32, init_cpu: u32) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("p{i}"), "namespace": "default"},
        "spec": {
            "containers": [{"name": "c", "resources": {"requests": {"cpu": format!("{cpu}m"), "memory": format!("{mem_mi}Mi")}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": format!("{init_cpu}m")}}}]
        }
    }))
    .expect("pod")
}

proptest! {
    #[test]
    fn never_overcommits(
        nodes in prop::collection::vec((100u32..4000, 64u32..4096, 1u32..8), 1..6),
        pods in prop::collection::vec((0u32..1500, 0u32..1024, 0u32..2500), 1..40),
    ) {
        let mut cache = Cache::new();
        for (i, (c, m, p)) in nodes.iter().enumerate() {
            cache.apply_node(&node(i, *c, *m, *p));
        }
        let mut fw = Framework::new();
        for (i, (c, m, ic)) in pods.iter().enumerate() {
            let p = pod(i, *c, *m, *ic);
            let ctx = PodCtx::new(&p).expect("ctx");
            if let Ok(d) = fw.schedule(&ctx, &cache) {
                cache.assume(&ctx.info, &d.node);
            }
        }
        for n in cache.nodes() {
            prop_assert!(n.requested.milli_cpu <= n.allocatable.milli_cpu, "cpu {:?} > {:?}", n.requested, n.allocatable);
            prop_assert!(n.requested.memory <= n.allocatable.memory);
            prop_assert!(n.pods.len() as i64 <= n.allowed_pods);
        }
    }
}
