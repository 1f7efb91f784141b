//! Helpers shared by the tests that run `ferry up` with the real binaries.

// Each test crate uses its own subset.
#![allow(dead_code)]

use anyhow::{Context, Result};
use ferry_testkit::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `ferry` binary under test.
pub fn ferry() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ferry"))
}

/// A program on PATH, or in the test virtualenv (stock kubectl).
pub fn which(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cache/ferry/venv/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The daemons `ferry up` runs live next to `ferry`: if one of `binaries` is missing there (the
/// test runs alone), build `packages`.
pub fn ensure_daemons(binaries: &[&str], packages: &[&str]) -> Result<()> {
    let dir = ferry().parent().map(Path::to_path_buf).context("ferry has no directory")?;
    if binaries.iter().any(|b| !dir.join(b).is_file()) {
        let mut cmd = Command::new(env!("CARGO"));
        cmd.arg("build").arg("--bins");
        for p in packages {
            cmd.args(["-p", p]);
        }
        anyhow::ensure!(cmd.status()?.success(), "building the daemons failed");
    }
    Ok(())
}

/// Runs `ferry down --data-dir <dir>` when dropped, so a failing test leaves nothing running.
pub struct Down(pub String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(ferry()).args(["down", "--data-dir", &self.0]).output();
    }
}

/// A `ferry up --detach` of its own: a data dir and free loopback ports.
pub struct Up {
    pub data: String,
    pub api: String,
    pub etcd: String,
    pub peer: String,
    pub dns: String,
}

impl Up {
    /// Fresh ports for a cluster in `data`.
    pub fn new(data: &str) -> Result<Up> {
        let [api, etcd, peer, dns] = [free_port()?, free_port()?, free_port()?, free_port()?].map(|p| p.to_string());
        Ok(Up { data: data.to_string(), api, etcd, peer, dns })
    }

    /// `up --detach --data-dir … --api-port … --etcd-port … --etcd-peer-port … --dns-port …`
    /// followed by `extra`.
    pub fn args<'a>(&'a self, extra: &[&'a str]) -> Vec<&'a str> {
        let mut args = vec![
            "up",
            "--detach",
            "--data-dir",
            &self.data,
            "--api-port",
            &self.api,
            "--etcd-port",
            &self.etcd,
            "--etcd-peer-port",
            &self.peer,
            "--dns-port",
            &self.dns,
        ];
        args.extend_from_slice(extra);
        args
    }
}
