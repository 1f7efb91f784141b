//! Pod networking: a named network namespace per pod and the standard CNI plugins
//! (bridge + host-local, loopback) run directly, as the CNI spec describes (env + config on
//! stdin, result on stdout).

use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

/// Errors setting up or tearing down pod networking.
#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// A command or plugin could not run or failed.
    #[error("{what}: {detail}")]
    Failed {
        /// What was attempted.
        what: String,
        /// Output or cause.
        detail: String,
    },
}

/// Pod network settings.
#[derive(Clone, Debug)]
pub struct CniConfig {
    /// Directory of the plugin binaries (Debian: /usr/lib/cni).
    pub bin_dir: PathBuf,
    /// Name of the Linux bridge pods attach to.
    pub bridge: String,
    /// The node's pod CIDR (host-local hands out addresses from it).
    pub pod_cidr: String,
    /// Where host-local keeps its allocations.
    pub ipam_dir: PathBuf,
}

/// Path of a pod's network namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

async fn run(what: &str, cmd: &mut tokio::process::Command) -> Result<(), CniError> {
    let out = cmd.output().await.map_err(|e| CniError::Failed { what: what.into(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(CniError::Failed { what: what.into(), detail: String::from_utf8_lossy(&out.stderr).trim().into() });
    }
    Ok(())
}

/// Create the named network namespace (idempotent).
pub async fn create_netns(name: &str) -> Result<(), CniError> {
    if netns_path(name).exists() {
        return Ok(());
    }
    run("ip netns add", tokio::process::Command::new("ip").args(["netns", "add", name])).await
}

/// Remove the named network namespace (idempotent).
pub async fn delete_netns(name: &str) -> Result<(), CniError> {
    if !netns_path(name).exists() {
        return Ok(());
    }
    run("ip netns delete", tokio::process::Command::new("ip").args(["netns", "delete", name])).await
}

impl CniConfig {
    fn bridge_conf(&self) -> serde_json::Value {
        serde_json::json!({
            "cniVersion": "1.0.0", "name": "ferry", "type": "bridge",
            "bridge": self.bridge, "isGateway": true, "ipMasq": false, "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": self.pod_cidr}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.ipam_dir,
            }
        })
    }

    async fn plugin(
        &self,
        command: &str,
        plugin: &str,
        id: &str,
        netns: &str,
        ifname: &str,
        conf: &serde_json::Value,
    ) -> Result<serde_json::Value, CniError> {
        let what = format!("CNI {command} {plugin}");
        let failed = |detail: String| CniError::Failed { what: what.clone(), detail };
        let mut child = tokio::process::Command::new(self.bin_dir.join(plugin))
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns_path(netns))
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", &self.bin_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| failed(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            let body = serde_json::to_vec(conf).map_err(|e| failed(e.to_string()))?;
            stdin.write_all(&body).await.map_err(|e| failed(e.to_string()))?;
        }
        let out = child.wait_with_output().await.map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&out.stdout)
                .ok()
                .and_then(|v| v["msg"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
            return Err(failed(msg));
        }
        if out.stdout.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&out.stdout).map_err(|e| failed(format!("bad result: {e}")))
    }

    /// Attach the pod's namespace: loopback up, eth0 on the bridge with an address from the
    /// pod CIDR. Returns the pod's IPs.
    pub async fn add(&self, id: &str, netns: &str) -> Result<Vec<String>, CniError> {
        let lo = serde_json::json!({"cniVersion": "1.0.0", "name": "ferry-lo", "type": "loopback"});
        self.plugin("ADD", "loopback", id, netns, "lo", &lo).await?;
        let result = self.plugin("ADD", "bridge", id, netns, "eth0", &self.bridge_conf()).await?;
        let ips: Vec<String> = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .map(|a| a.split('/').next().unwrap_or(a).to_string())
            .collect();
        if ips.is_empty() {
            return Err(CniError::Failed { what: "CNI ADD bridge".into(), detail: format!("no address in {result}") });
        }
        Ok(ips)
    }

    /// Detach the pod's namespace and release its address (idempotent).
    pub async fn del(&self, id: &str, netns: &str) -> Result<(), CniError> {
        self.plugin("DEL", "bridge", id, netns, "eth0", &self.bridge_conf()).await?;
        Ok(())
    }
}
