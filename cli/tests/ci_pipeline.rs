//! A CI pipeline against `ferry up --detach` with a real node (containerd, runc, CNI): apply a
//! Deployment of 4 replicas → `rollout status` exits 0 → new image → progress and exit 0 → an image
//! that does not exist → `rollout status` exits non-zero with ProgressDeadlineExceeded → `rollout
//! undo` → healthy → `delete -f` → nothing left. Once with `ferry`, once with the stock kubectl,
//! against the same cluster. Then `ferry down` must leave no process, mount, netns or link behind.

mod common;

use anyhow::{bail, Context, Result};
use common::{ferry, which, Down, Up};
use ferry_testkit::free_port;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const DAEMONS: [&str; 6] =
    ["ferry-apiserver", "ferry-dns", "ferry-controllers", "ferry-scheduler", "ferry-nodelet", "ferry-busybox-image"];
const PACKAGES: [&str; 6] =
    ["ferry-apiserver", "ferry-dns", "ferry-controllers", "ferry-scheduler", "ferry-nodelet", "ferry-testkit"];

/// Exit code and combined output of a command (killed after `limit`).
fn run(program: &Path, args: &[&str], limit: Duration) -> Result<(i32, String)> {
    let mut child = Command::new(program)
        .args(args)
        .env_remove("KUBECONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", program.display()))?;
    let start = Instant::now();
    while child.try_wait()?.is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((out.status.code().unwrap_or(-1), text))
}

fn manifest(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {{app: {name}}}
spec:
  replicas: 4
  progressDeadlineSeconds: 20
  selector:
    matchLabels: {{app: {name}}}
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: {image}
          imagePullPolicy: IfNotPresent
          command: ["httpd", "-f", "-p", "8080"]
          readinessProbe:
            tcpSocket: {{port: 8080}}
            periodSeconds: 1
"#
    )
}

/// One pipeline run with `client` (`ferry` or stock `kubectl`), which takes kubectl's flags.
fn pipeline(client: &Path, kubeconfig: &Path, dir: &Path, name: &str) -> Result<()> {
    let kc = kubeconfig.to_string_lossy().into_owned();
    let file = dir.join(format!("{name}.yaml"));
    let file_s = file.to_string_lossy().into_owned();
    let target = format!("deployment/{name}");
    let tool = client.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let step = |args: &[&str]| -> Result<(i32, String)> {
        let mut all = vec!["--kubeconfig", kc.as_str()];
        all.extend_from_slice(args);
        run(client, &all, Duration::from_secs(120))
    };
    let expect = |args: &[&str], code: i32, needle: &str| -> Result<String> {
        let (got, out) = step(args)?;
        if got != code || !out.contains(needle) {
            bail!("{tool} {}: exit {got} (want {code}), output lacks {needle:?}:\n{out}", args.join(" "));
        }
        Ok(out)
    };

    std::fs::write(&file, manifest(name, "busybox:ci-1"))?;
    expect(&["apply", "-f", &file_s], 0, &format!("deployment.apps/{name}"))?;
    expect(&["rollout", "status", &target, "--timeout=120s"], 0, "successfully rolled out")?;

    // logs and exec reach the node through the API server (node credentials, the nodelet's endpoint).
    let (_, pod) = step(&["get", "pods", "-l", &format!("app={name}"), "-o", "jsonpath={.items[0].metadata.name}"])?;
    let pod = pod.trim().to_owned();
    let (code, out) = step(&["exec", &pod, "--", "sh", "-c", "echo hi from $(hostname); exit 7"])?;
    assert_eq!(code, 7, "{tool} exec exit code: {out}");
    assert!(out.contains(&format!("hi from {pod}")), "{tool} exec output: {out}");
    expect(&["exec", &pod, "--", "sh", "-c", "echo to-the-log > /proc/1/fd/1"], 0, "")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, out) = step(&["logs", &pod])?;
        if code == 0 && out.contains("to-the-log") {
            break;
        }
        assert!(Instant::now() < deadline, "{tool} logs: exit {code}: {out}");
        std::thread::sleep(Duration::from_millis(200));
    }

    std::fs::write(&file, manifest(name, "busybox:ci-2"))?;
    expect(&["apply", "-f", &file_s], 0, "configured")?;
    let out = expect(&["rollout", "status", &target, "--timeout=120s"], 0, "successfully rolled out")?;
    assert!(
        out.contains("new replicas have been updated") || out.contains("old replicas are pending termination"),
        "{tool} shows progress:\n{out}"
    );
    let images = |want: &str| -> Result<()> {
        // Old pods may still be terminating (their grace period) right after the rollout.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let query =
                ["get", "pods", "-l", &format!("app={name}"), "-o", "jsonpath={.items[*].spec.containers[0].image}"];
            let (_, got) = step(&query)?;
            let got: Vec<&str> = got.split_whitespace().collect();
            if got.len() == 4 && got.iter().all(|i| *i == want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{tool}: pods should be 4 x {want}: {got:?}");
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    };
    images("busybox:ci-2")?;

    // Nothing serves this image: the loopback port is closed (and pulls never leave the machine).
    std::fs::write(&file, manifest(name, "127.0.0.1:9/ferry-ci/missing:1"))?;
    expect(&["apply", "-f", &file_s], 0, "configured")?;
    let started = Instant::now();
    let (code, out) = step(&["rollout", "status", &target, "--timeout=120s"])?;
    assert_ne!(code, 0, "{tool}: rollout status fails on a stuck rollout:\n{out}");
    assert!(out.contains("exceeded its progress deadline"), "{tool}: names the reason:\n{out}");
    assert!(started.elapsed() < Duration::from_secs(90), "{tool}: failed at the deadline, not at the timeout");
    let (_, ready) = step(&["get", &target, "-o", "jsonpath={.status.readyReplicas}"])?;
    assert_eq!(ready.trim(), "4", "{tool}: maxUnavailable=0 keeps every old pod serving");

    expect(&["rollout", "undo", &target], 0, "rolled back")?;
    expect(&["rollout", "status", &target, "--timeout=120s"], 0, "successfully rolled out")?;
    images("busybox:ci-2")?;

    expect(&["delete", "-f", &file_s], 0, &format!("\"{name}\" deleted"))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, left) = step(&["get", "pods,replicasets,deployments", "-l", &format!("app={name}"), "-o", "name"])?;
        if left.trim().is_empty() || left.contains("No resources found") {
            break;
        }
        if Instant::now() > deadline {
            bail!("{tool}: objects left after delete -f: {left}");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

/// What of a cluster could outlive it on the machine.
fn leftovers(data: &str, run_dir: &str, bridge: &str, netns_before: &[String]) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(data) || cmd.contains(run_dir) {
            found.push(format!("process {}: {cmd}", entry.file_name().to_string_lossy()));
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    found.extend(mounts.lines().filter(|l| l.contains(data) || l.contains(run_dir)).map(|l| format!("mount: {l}")));
    found.extend(netns().into_iter().filter(|n| !netns_before.contains(n)).map(|n| format!("netns: {n}")));
    let id = bridge.trim_start_matches("fy").trim_end_matches("n1");
    for link in [bridge.to_owned(), format!("fy{id}dns")] {
        if Path::new("/sys/class/net").join(&link).exists() {
            found.push(format!("link: {link}"));
        }
    }
    let table = format!("ferry-{id}");
    let tables = Command::new("nft").args(["list", "tables"]).output().map(|o| o.stdout).unwrap_or_default();
    if String::from_utf8_lossy(&tables).lines().any(|l| l.trim() == format!("table ip {table}")) {
        found.push(format!("nftables: table ip {table}"));
    }
    found
}

fn netns() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ferry-"))
        .collect()
}

#[test]
fn ci_pipeline_with_ferry_and_stock_kubectl() -> Result<()> {
    let ci = std::env::var_os("CI").is_some();
    let missing: Vec<&str> = ["etcd", "containerd", "runc"].into_iter().filter(|b| which(b).is_none()).collect();
    let root = nix::unistd::geteuid().is_root();
    if !missing.is_empty() || !root {
        assert!(!ci, "CI must run this as root with {missing:?} installed");
        println!("skipping: needs root and {missing:?}");
        return Ok(());
    }
    let kubectl = which("kubectl");
    assert!(kubectl.is_some() || !ci, "kubectl must be available in CI");
    common::ensure_daemons(&DAEMONS, &PACKAGES)?;

    let tmp = tempfile::Builder::new().prefix("ferry-ci-").tempdir_in("/tmp")?;
    let data = tmp.path().join("cluster");
    let data_s = data.to_string_lossy().into_owned();
    let up = Up::new(&data_s)?;
    let nodelet_port = free_port()?.to_string();
    // A /16 of its own so that tests running side by side never share pod routes.
    let cidr = format!("10.{}.0.0/16", 100 + (std::process::id() % 50));
    // And a service range of its own: its 10th address is the cluster DNS, bound on the host.
    let service_cidr = format!("10.{}.0.0/16", 150 + (std::process::id() % 50));
    let dns_ip = format!("10.{}.0.10", 150 + (std::process::id() % 50));
    let netns_before = netns();
    let _down = Down(data_s.clone());
    let up_args = up.args(&[
        "--nodes",
        "1",
        "--cluster-cidr",
        &cidr,
        "--service-cidr",
        &service_cidr,
        "--nodelet-port",
        &nodelet_port,
    ]);
    let (code, out) = run(&ferry(), &up_args, Duration::from_secs(120))?;
    assert_eq!(code, 0, "ferry up: {out}");
    let kubeconfig = data.join("admin.kubeconfig");

    let bin = ferry().parent().map(Path::to_path_buf).context("no bin dir")?;
    for tag in ["ci-1", "ci-2"] {
        let archive = tmp.path().join(format!("{tag}.tar"));
        let (code, out) = run(
            &bin.join("ferry-busybox-image"),
            &[&archive.to_string_lossy(), &format!("busybox:{tag}")],
            Duration::from_secs(60),
        )?;
        assert_eq!(code, 0, "{out}");
        let (code, out) = run(
            &ferry(),
            &["image", "import", &archive.to_string_lossy(), "--data-dir", &data_s],
            Duration::from_secs(60),
        )?;
        assert_eq!(code, 0, "ferry image import: {out}");
        assert!(out.contains(&format!("imported docker.io/library/busybox:{tag}")), "{out}");
    }

    pipeline(&ferry(), &kubeconfig, tmp.path(), "ci-ferry")?;
    if let Some(kubectl) = kubectl {
        pipeline(&kubectl, &kubeconfig, tmp.path(), "ci-kubectl")?;
    }

    // Leave pods running, then `ferry down` must remove everything of the cluster.
    let file = tmp.path().join("left.yaml");
    std::fs::write(&file, manifest("left", "busybox:ci-1"))?;
    let kc = kubeconfig.to_string_lossy().into_owned();
    let (code, out) = run(
        &ferry(),
        &["--kubeconfig", &kc, "apply", "-f", &file.to_string_lossy(), "--wait", "--timeout", "120s"],
        Duration::from_secs(150),
    )?;
    assert_eq!(code, 0, "{out}");
    // The service proxy: the Service's ClusterIP answers from the host.
    let svc = tmp.path().join("left-svc.yaml");
    std::fs::write(
        &svc,
        "apiVersion: v1\nkind: Service\nmetadata: {name: left}\nspec:\n  selector: {app: left}\n  ports: [{port: 80, targetPort: 8080}]\n",
    )?;
    let (code, out) =
        run(&ferry(), &["--kubeconfig", &kc, "apply", "-f", &svc.to_string_lossy()], Duration::from_secs(30))?;
    assert_eq!(code, 0, "{out}");
    let (_, ip) = run(
        &ferry(),
        &["--kubeconfig", &kc, "get", "service", "left", "-o", "jsonpath={.spec.clusterIP}"],
        Duration::from_secs(30),
    )?;
    let ip: std::net::Ipv4Addr = ip.trim().parse().with_context(|| format!("cluster IP {ip:?}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match http_get(std::net::SocketAddr::from((ip, 80))) {
            Ok(head) if head.starts_with("HTTP/1.") => break,
            other => assert!(Instant::now() < deadline, "the ClusterIP {ip}:80 answers HTTP: {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Cluster DNS from inside a pod: the short name resolves (search path from the pod's
    // resolv.conf) to the ClusterIP, which the proxy sends to a pod.
    let (_, pod) = run(
        &ferry(),
        &["--kubeconfig", &kc, "get", "pods", "-l", "app=left", "-o", "jsonpath={.items[0].metadata.name}"],
        Duration::from_secs(30),
    )?;
    let (_, svc_ip) = run(
        &ferry(),
        &["--kubeconfig", &kc, "get", "service", "kube-dns", "-n", "kube-system", "-o", "jsonpath={.spec.clusterIP}"],
        Duration::from_secs(30),
    )?;
    assert_eq!(svc_ip.trim(), dns_ip, "kube-dns holds the cluster DNS address");
    // httpd serves no index here: its 404 proves the request reached a pod.
    let script = "cat /etc/resolv.conf; nslookup left; timeout 5 wget -q -O /dev/null http://left; echo wget-done";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out) = run(
            &ferry(),
            &["--kubeconfig", &kc, "exec", pod.trim(), "--", "sh", "-c", script],
            Duration::from_secs(30),
        )?;
        if code == 0 && out.contains("server returned error: HTTP/1.1 404") {
            assert!(out.contains(&format!("nameserver {dns_ip}")), "{out}");
            assert!(out.contains("search default.svc.cluster.local svc.cluster.local cluster.local"), "{out}");
            assert!(out.contains(&ip.to_string()), "left resolves to its ClusterIP {ip}: {out}");
            break;
        }
        assert!(Instant::now() < deadline, "http://left from a pod: exit {code}: {out}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let nodes_json = std::fs::read_to_string(data.join("nodes.json"))?;
    assert!(nodes_json.contains("ferry-1"), "{nodes_json}");
    let (code, out) = run(&ferry(), &["down", "--data-dir", &data_s], Duration::from_secs(90))?;
    assert_eq!(code, 0, "ferry down: {out}");
    let run_dir = format!("/run/ferry/{}", cluster_id(&data));
    let bridge = format!("fy{}n1", cluster_id(&data));
    assert_eq!(
        leftovers(&data_s, &run_dir, &bridge, &netns_before),
        Vec::<String>::new(),
        "ferry down leaves nothing behind"
    );
    assert!(!Path::new(&run_dir).exists(), "{run_dir} removed");
    let down_at = chrono::Utc::now();

    // The same data dir brings the cluster back: the Deployment's pods run again (the image too
    // is still in containerd's store).
    let (code, out) = run(&ferry(), &up_args, Duration::from_secs(120))?;
    assert_eq!(code, 0, "ferry up again: {out}");
    let (code, out) = run(
        &ferry(),
        &["--kubeconfig", &kc, "rollout", "status", "deployment/left", "--timeout=60s"],
        Duration::from_secs(90),
    )?;
    assert_eq!(code, 0, "{out}");
    // The statuses still say Running from before `down`: wait for containers started after it.
    let deadline = Instant::now() + Duration::from_secs(60);
    let path = "jsonpath={.items[*].status.containerStatuses[0].state.running.startedAt}";
    loop {
        let (_, started) = run(
            &ferry(),
            &["--kubeconfig", &kc, "get", "pods", "-l", "app=left", "-o", path],
            Duration::from_secs(30),
        )?;
        let fresh = started
            .split_whitespace()
            .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .filter(|t| t.timestamp() >= down_at.timestamp())
            .count();
        if fresh == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "the pods run again after up: {started}");
        std::thread::sleep(Duration::from_millis(300));
    }
    let (code, out) = run(&ferry(), &["down", "--data-dir", &data_s], Duration::from_secs(90))?;
    assert_eq!(code, 0, "ferry down: {out}");
    assert_eq!(leftovers(&data_s, &run_dir, &bridge, &netns_before), Vec::<String>::new(), "clean again");
    Ok(())
}

/// The id `ferry up` derives from the data dir (see `up.rs`): bridge names and /run/ferry/<id>.
fn cluster_id(data: &Path) -> String {
    ferry_cli::up::cluster_id(data)
}

/// The status line of `GET /` (the cluster's own Service address, reached through the proxy).
fn http_get(addr: std::net::SocketAddr) -> Result<String> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    conn.write_all(b"GET / HTTP/1.0\r\nHost: left\r\n\r\n")?;
    let mut buf = Vec::new();
    let _ = conn.read_to_end(&mut buf);
    Ok(String::from_utf8_lossy(&buf).lines().next().unwrap_or_default().to_owned())
}
