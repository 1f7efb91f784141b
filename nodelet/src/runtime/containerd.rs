//! The connection to containerd (gRPC over its unix socket, `containerd-client`), in the
//! nodelet's own containerd namespace.
//!
//! Status: this module connects, reports the daemon version for the Node's nodeInfo, and lists
//! the pods (by container label) the nodelet holds. Pod sandboxes, images and containers are
//! not implemented yet, so it does not implement [`super::Runtime`] and the binary refuses
//! `--runtime containerd` with a clear message.

use containerd_client::services::v1::ListContainersRequest;
use containerd_client::tonic::Request;
use containerd_client::with_namespace;
use std::collections::BTreeSet;
use std::path::Path;

/// The containerd namespace the nodelet works in.
pub const NAMESPACE: &str = "ferry";
/// Container label holding the owning pod's UID.
pub const POD_UID_LABEL: &str = "io.ferry.pod-uid";

/// Errors talking to containerd.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    /// The socket could not be reached.
    #[error("connecting to containerd at {socket}: {source}")]
    Connect {
        /// The socket path.
        socket: String,
        /// The cause.
        source: containerd_client::tonic::transport::Error,
    },
    /// A gRPC call failed.
    #[error("containerd {call}: {status}")]
    Call {
        /// The call.
        call: &'static str,
        /// containerd's answer.
        status: containerd_client::tonic::Status,
    },
}

/// A client for one containerd namespace.
pub struct Containerd {
    client: containerd_client::Client,
    namespace: String,
}

impl Containerd {
    /// Connect to containerd's gRPC socket.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Self, ContainerdError> {
        let client = containerd_client::Client::from_path(socket)
            .await
            .map_err(|source| ContainerdError::Connect { socket: socket.display().to_string(), source })?;
        Ok(Containerd { client, namespace: namespace.to_string() })
    }

    /// `containerd://<version>`, as the Node's `nodeInfo.containerRuntimeVersion`.
    pub async fn version(&self) -> Result<String, ContainerdError> {
        let v = self
            .client
            .version()
            .version(())
            .await
            .map_err(|status| ContainerdError::Call { call: "Version", status })?
            .into_inner();
        Ok(format!("containerd://{}", v.version))
    }

    /// UIDs of the pods that have containers in the namespace.
    pub async fn pod_uids(&self) -> Result<BTreeSet<String>, ContainerdError> {
        let req = ListContainersRequest { filters: vec![format!("labels.\"{POD_UID_LABEL}\"")] };
        let list = self
            .client
            .containers()
            .list(with_namespace!(req, self.namespace.as_str()))
            .await
            .map_err(|status| ContainerdError::Call { call: "Containers.List", status })?
            .into_inner();
        Ok(list.containers.into_iter().filter_map(|c| c.labels.get(POD_UID_LABEL).cloned()).collect())
    }
}
