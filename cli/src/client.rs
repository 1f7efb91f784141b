//! Reaching the API server: a kubeconfig (`--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`, or the local
//! cluster's admin kubeconfig) and an optional context.

use anyhow::{Context, Result};
use std::path::Path;

/// A client for `kubeconfig` with `context` (default: the current one).
pub async fn from_kubeconfig(kubeconfig: &Path, context: Option<&str>) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
    let options = kube::config::KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
    let config = kube::Config::from_custom_kubeconfig(kc, &options)
        .await
        .with_context(|| format!("using kubeconfig {}", kubeconfig.display()))?;
    kube::Client::try_from(config).context("creating the API client")
}
