//! Setup shared by the nodelet's e2e tests on a real containerd.

use ferry_nodelet::runtime::cni::CniConfig;
use ferry_nodelet::runtime::pods_containerd::ContainerdConfig;
use ferry_testkit::LinkGuard;
use std::path::Path;
use std::time::Duration;

/// The runtime config of a test node under `root` (nodelet state in `root/nodelet`, host-local
/// addresses in `root/ipam`): CNI bridge `bridge` with `subnet`, restart backoff from 1 s.
pub fn runtime_config(root: &Path, bridge: &LinkGuard, subnet: &str) -> ContainerdConfig {
    ContainerdConfig {
        root_dir: root.join("nodelet"),
        cni: CniConfig {
            bin_dir: "/usr/lib/cni".into(),
            bridge: bridge.0.clone(),
            pod_cidr: subnet.to_owned(),
            ipam_dir: root.join("ipam"),
        },
        host_ip: "127.0.0.1".into(),
        backoff_start: Duration::from_secs(1),
    }
}
