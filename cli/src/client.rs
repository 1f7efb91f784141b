//! Reaching the API server: a kubeconfig (`--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`, or the local
//! cluster's admin kubeconfig) and an optional context and namespace.

use anyhow::{bail, Context, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use std::path::{Path, PathBuf};

/// A client for `kubeconfig` with `context` (default: the current one).
pub async fn from_kubeconfig(kubeconfig: &Path, context: Option<&str>) -> Result<kube::Client> {
    let kc =
        Kubeconfig::read_from(kubeconfig).with_context(|| format!("reading kubeconfig {}", kubeconfig.display()))?;
    client(kc, context).await.with_context(|| format!("using kubeconfig {}", kubeconfig.display()))
}

async fn client(kc: Kubeconfig, context: Option<&str>) -> Result<kube::Client> {
    let options = KubeConfigOptions { context: context.map(str::to_owned), ..Default::default() };
    let config = kube::Config::from_custom_kubeconfig(kc, &options).await?;
    kube::Client::try_from(config).context("creating the API client")
}

/// Where the command line says to connect.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Connect {
    /// Path to the kubeconfig file.
    #[arg(long, global = true, env = "FERRY_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

impl Connect {
    /// A client and the namespace to work in.
    pub async fn connect(&self) -> Result<(kube::Client, String)> {
        let client = match &self.kubeconfig {
            Some(path) => from_kubeconfig(path, self.context.as_deref()).await?,
            None => {
                let home_config = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kube/config"));
                if std::env::var_os("KUBECONFIG").is_some_and(|v| !v.is_empty())
                    || home_config.as_ref().is_some_and(|p| p.is_file())
                {
                    client(Kubeconfig::read().context("reading the kubeconfig")?, self.context.as_deref()).await?
                } else {
                    let local = crate::up::kubeconfig(&crate::up::data_dir(None)?);
                    if !local.is_file() {
                        bail!("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or start a local cluster with `ferry up`");
                    }
                    from_kubeconfig(&local, self.context.as_deref()).await?
                }
            }
        };
        let namespace = self.namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
        Ok((client, namespace))
    }
}
