//! The side effect of the proxy: handing a script to the kernel. [`Nft`] runs `nft -f -`;
//! [`Recorder`] keeps the scripts for tests.

use std::sync::Mutex;

use tokio::io::AsyncWriteExt;

/// Why a script could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum NetfilterError {
    /// `nft` could not be started or fed.
    #[error("running {program}: {detail}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        detail: String,
    },
    /// `nft` rejected the script (nothing was changed: it is one transaction).
    #[error("nft rejected the rule set: {0}")]
    Rejected(String),
}

/// Something that installs nftables scripts atomically.
#[async_trait::async_trait]
pub trait Netfilter: Send + Sync {
    /// Apply `script` as one transaction.
    async fn apply(&self, script: &str) -> Result<(), NetfilterError>;
}

/// The `nft` command.
#[derive(Clone, Debug)]
pub struct Nft {
    /// Path or name of the binary.
    pub program: String,
}

impl Default for Nft {
    fn default() -> Self {
        Nft { program: "nft".into() }
    }
}

#[async_trait::async_trait]
impl Netfilter for Nft {
    async fn apply(&self, script: &str) -> Result<(), NetfilterError> {
        let spawn = |detail: String| NetfilterError::Spawn { program: self.program.clone(), detail };
        let mut child = tokio::process::Command::new(&self.program)
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| spawn(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).await.map_err(|e| spawn(e.to_string()))?;
        }
        let out = child.wait_with_output().await.map_err(|e| spawn(e.to_string()))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let first: Vec<&str> = err.lines().take(6).collect();
            return Err(NetfilterError::Rejected(first.join(" | ")));
        }
        Ok(())
    }
}

/// A test double: records every script, fails when told to.
#[derive(Default)]
pub struct Recorder {
    /// Scripts applied so far.
    pub scripts: Mutex<Vec<String>>,
    /// Fail the next `n` applies.
    pub fail_next: Mutex<usize>,
}

impl Recorder {
    /// The scripts applied so far.
    pub fn scripts(&self) -> Vec<String> {
        self.scripts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

#[async_trait::async_trait]
impl Netfilter for Recorder {
    async fn apply(&self, script: &str) -> Result<(), NetfilterError> {
        {
            let mut fail = self.fail_next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if *fail > 0 {
                *fail -= 1;
                return Err(NetfilterError::Rejected("injected failure".into()));
            }
        }
        self.scripts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(script.to_string());
        Ok(())
    }
}
