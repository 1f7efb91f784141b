//! The connection to containerd (gRPC over its unix socket, `containerd-client`), in the
//! nodelet's own containerd namespace.
//!
//! Status: this module connects, reports the daemon version for the Node's nodeInfo, lists
//! the pods (by container label) the nodelet holds, and imports image archives ([`super::image`]). Pod sandboxes, images and containers are
//! not implemented yet, so it does not implement [`super::Runtime`] and the binary refuses
//! `--runtime containerd` with a clear message.

use containerd_client::services::v1::ListContainersRequest;
use containerd_client::tonic::Request;
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
    /// A value could not be sent to containerd.
    #[error("containerd request: {0}")]
    Invalid(String),
    /// A gRPC call failed.
    #[error("containerd {call}: {status}")]
    Call {
        /// The call.
        call: &'static str,
        /// containerd's answer.
        status: containerd_client::tonic::Status,
    },
}

impl From<containerd_client::tonic::Status> for ContainerdError {
    fn from(status: containerd_client::tonic::Status) -> Self {
        ContainerdError::Call { call: "request", status }
    }
}

/// A client for one containerd namespace.
pub struct Containerd {
    pub(crate) client: containerd_client::Client,
    namespace: String,
    /// The snapshotter images are unpacked with and containers run on.
    pub snapshotter: String,
}

impl Containerd {
    /// Connect to containerd's gRPC socket.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Self, ContainerdError> {
        let client = containerd_client::Client::from_path(socket)
            .await
            .map_err(|source| ContainerdError::Connect { socket: socket.display().to_string(), source })?;
        Ok(Containerd { client, namespace: namespace.to_string(), snapshotter: "overlayfs".into() })
    }

    /// A request in the nodelet's namespace.
    pub(crate) fn request_ns<T>(&self, msg: T) -> Result<Request<T>, ContainerdError> {
        let mut req = Request::new(msg);
        let ns =
            self.namespace.parse().map_err(|_| ContainerdError::Invalid(format!("namespace {:?}", self.namespace)))?;
        req.metadata_mut().insert("containerd-namespace", ns);
        Ok(req)
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
            .list(self.request_ns(req)?)
            .await
            .map_err(|status| ContainerdError::Call { call: "Containers.List", status })?
            .into_inner();
        Ok(list.containers.into_iter().filter_map(|c| c.labels.get(POD_UID_LABEL).cloned()).collect())
    }
}
