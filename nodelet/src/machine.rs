//! What the node is made of: CPUs, memory, disk, kernel and OS, read from the machine.
//!
//! [`Machine::probe`] reads `/proc`, `/etc/os-release` and `statvfs(root_dir)`; simulated
//! nodes build a [`Machine`] by hand ([`Machine::simulated`]).

use std::net::IpAddr;
use std::path::Path;

/// Errors reading machine facts.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// A file under /proc or /etc could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A file had an unexpected format.
    #[error("parsing {path}: {what}")]
    Parse {
        /// The file.
        path: String,
        /// What was wrong.
        what: String,
    },
    /// statvfs failed.
    #[error("statvfs {path}: {source}")]
    Statvfs {
        /// The directory.
        path: String,
        /// The cause.
        source: nix::Error,
    },
}

/// Static facts about a machine.
#[derive(Clone, Debug, PartialEq)]
pub struct Machine {
    /// Logical CPUs.
    pub cpus: u64,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Size of the filesystem holding the nodelet's root dir, in bytes.
    pub ephemeral_bytes: u64,
    /// `uname -r`.
    pub kernel_version: String,
    /// PRETTY_NAME from /etc/os-release.
    pub os_image: String,
    /// /etc/machine-id.
    pub machine_id: String,
    /// /proc/sys/kernel/random/boot_id.
    pub boot_id: String,
    /// The machine's host name.
    pub hostname: String,
    /// The node's address (InternalIP).
    pub ip: IpAddr,
    /// Go-style architecture name (amd64, arm64, ...).
    pub arch: String,
}

impl Machine {
    /// Read the facts of this machine; `root_dir` decides which filesystem counts as ephemeral storage.
    pub fn probe(root_dir: &Path, ip: Option<IpAddr>) -> Result<Self, MachineError> {
        let meminfo = read("/proc/meminfo")?;
        let memory_bytes = meminfo_kib(&meminfo, "MemTotal")
            .ok_or_else(|| parse_err("/proc/meminfo", "no MemTotal"))?
            .saturating_mul(1024);
        let cpus = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
        let (total, _) = fs_bytes(root_dir)?;
        let os_release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
        let os_image = os_release_value(&os_release, "PRETTY_NAME").unwrap_or_else(|| "Linux".into());
        Ok(Machine {
            cpus,
            memory_bytes,
            ephemeral_bytes: total,
            kernel_version: read("/proc/sys/kernel/osrelease")?.trim().to_string(),
            os_image,
            machine_id: std::fs::read_to_string("/etc/machine-id").unwrap_or_default().trim().to_string(),
            boot_id: read("/proc/sys/kernel/random/boot_id")?.trim().to_string(),
            hostname: read("/proc/sys/kernel/hostname")?.trim().to_string(),
            ip: ip.unwrap_or_else(first_host_ip),
            arch: go_arch(std::env::consts::ARCH).to_string(),
        })
    }

    /// A made-up machine for simulated nodes.
    pub fn simulated(name: &str, ip: IpAddr) -> Self {
        Machine {
            cpus: 8,
            memory_bytes: 32 << 30,
            ephemeral_bytes: 100 << 30,
            kernel_version: "simulated".into(),
            os_image: "Ferry simulated node".into(),
            machine_id: String::new(),
            boot_id: String::new(),
            hostname: name.into(),
            ip,
            arch: go_arch(std::env::consts::ARCH).to_string(),
        }
    }
}

/// Resource pressure observed right now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pressure {
    /// MemAvailable below the eviction threshold.
    pub memory: bool,
    /// Less than 10 % of the root dir's filesystem free.
    pub disk: bool,
    /// More than 90 % of pid_max in use.
    pub pid: bool,
}

/// Kubernetes' default hard eviction threshold for memory.available.
const MEMORY_AVAILABLE_MIN: u64 = 100 << 20;

/// Observe memory, disk and PID pressure on this machine.
pub fn observe_pressure(root_dir: &Path) -> Result<Pressure, MachineError> {
    let meminfo = read("/proc/meminfo")?;
    let available = meminfo_kib(&meminfo, "MemAvailable").unwrap_or(u64::MAX / 1024).saturating_mul(1024);
    let (total, free) = fs_bytes(root_dir)?;
    let pid_max: u64 = read("/proc/sys/kernel/pid_max")?.trim().parse().unwrap_or(u64::MAX);
    let threads = read("/proc/loadavg")?
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split('/').nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Pressure {
        memory: available < MEMORY_AVAILABLE_MIN,
        disk: total > 0 && free.saturating_mul(10) < total,
        pid: threads.saturating_mul(10) > pid_max.saturating_mul(9),
    })
}

fn read(path: &str) -> Result<String, MachineError> {
    std::fs::read_to_string(path).map_err(|source| MachineError::Read { path: path.into(), source })
}

fn parse_err(path: &str, what: &str) -> MachineError {
    MachineError::Parse { path: path.into(), what: what.into() }
}

fn fs_bytes(dir: &Path) -> Result<(u64, u64), MachineError> {
    let st = nix::sys::statvfs::statvfs(dir)
        .map_err(|source| MachineError::Statvfs { path: dir.display().to_string(), source })?;
    let frag = st.fragment_size() as u64;
    Ok(((st.blocks() as u64).saturating_mul(frag), (st.blocks_available() as u64).saturating_mul(frag)))
}

/// A `Key:   1234 kB` line of /proc/meminfo, in KiB.
fn meminfo_kib(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn os_release_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim_matches('"').to_string())
    })
}

/// Rust's architecture names in Go's spelling, as Kubernetes uses them.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The address of the first non-loopback IPv4 interface that is up, or 127.0.0.1.
fn first_host_ip() -> IpAddr {
    let fallback = IpAddr::from([127, 0, 0, 1]);
    let Ok(route) = std::fs::read_to_string("/proc/net/fib_trie") else { return fallback };
    // Lines "|-- a.b.c.d" followed by "/32 host LOCAL" name the local addresses.
    let mut last: Option<IpAddr> = None;
    for line in route.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(ip) = t.parse::<IpAddr>() {
            last = Some(ip);
        } else if t.contains("host LOCAL") {
            if let Some(ip) = last.filter(|ip| !ip.is_loopback()) {
                return ip;
            }
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_os_release() {
        let m = "MemTotal:       16318404 kB\nMemFree:         1234 kB\nMemAvailable:   8000000 kB\n";
        assert_eq!(meminfo_kib(m, "MemTotal"), Some(16318404));
        assert_eq!(meminfo_kib(m, "MemAvailable"), Some(8000000));
        assert_eq!(meminfo_kib(m, "Mem"), None);
        let o = "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(os_release_value(o, "PRETTY_NAME").as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert_eq!(go_arch("x86_64"), "amd64");
    }

    #[test]
    fn probe_reads_this_machine() {
        let m = Machine::probe(Path::new("/"), None).expect("probe");
        assert!(m.cpus >= 1 && m.memory_bytes > 0 && m.ephemeral_bytes > 0);
        assert!(!m.kernel_version.is_empty());
        observe_pressure(Path::new("/")).expect("pressure");
    }
}
