//! The Markdown report: machine, summary against targets, and the detailed tables.

use crate::rss::Rss;
use crate::stats::{ms, Sample};
use crate::{Args, Results};
use anyhow::Result;
use std::fmt::Write;
use std::time::Duration;

/// Targets the summary checks.
const RATIO_TARGET: f64 = 2.0;
const LIST_TARGET: Duration = Duration::from_millis(250);
const WATCH_TARGET: Duration = Duration::from_millis(50);
const RSS_TARGET_MB: f64 = 150.0;

/// What the numbers were measured on.
pub struct Machine {
    /// Logical CPUs.
    pub cpus: usize,
    /// CPU model from `/proc/cpuinfo`.
    pub model: String,
    /// Total memory in MB.
    pub mem_mb: u64,
    /// Kernel release.
    pub kernel: String,
    /// etcd server version.
    pub etcd: String,
    /// Filesystem of the temp dir (where etcd keeps its data), e.g. `/tmp (ext4)`.
    pub temp_fs: String,
    /// `git describe` of the workspace, when available.
    pub revision: String,
    /// When the run started (UTC).
    pub date: String,
}

impl Machine {
    /// Read `/proc` and ask etcd for its version.
    pub async fn probe(etcd: &etcd_client::Client) -> Result<Self> {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let field = |text: &str, name: &str| {
            text.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_else(|| "unknown".into())
        };
        let mem_kib: u64 =
            field(&read("/proc/meminfo"), "MemTotal").trim_end_matches("kB").trim().parse().unwrap_or_default();
        let revision = std::process::Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Ok(Self {
            cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            model: field(&read("/proc/cpuinfo"), "model name"),
            mem_mb: mem_kib * 1024 / 1_000_000,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            etcd: etcd.clone().status().await?.version().to_string(),
            temp_fs: temp_fs(&read("/proc/mounts")),
            revision,
            date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        })
    }
}

/// The temp dir and the type of the filesystem it is on (longest matching mount point).
fn temp_fs(mounts: &str) -> String {
    let tmp = std::env::temp_dir();
    let fs = mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            tmp.starts_with(point).then_some((point.len(), kind))
        })
        .max_by_key(|(len, _)| *len)
        .map_or("unknown", |(_, kind)| kind);
    format!("{} ({fs})", tmp.display())
}

fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1_000_000.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "**no**"
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

/// One row of an operations table.
fn op_row(out: &mut String, op: &str, path: &str, s: &Sample) {
    let _ = writeln!(
        out,
        "| {op} | {path} | {} | {} | {} | {} | {:.0} |",
        s.len(),
        ms(s.p50()),
        ms(s.p99()),
        ms(s.max()),
        s.throughput()
    );
}

/// Render the whole report.
pub fn render(args: &Args, r: &Results) -> String {
    let m = &r.machine;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "## Results ({})\n", m.date);
    let _ = writeln!(
        w,
        "Machine: {} × {}, {} MB RAM, Linux {}; etcd {} (private, data dir on {}); Ferry `{}`.\n",
        m.cpus, m.model, m.mem_mb, m.kernel, m.etcd, m.temp_fs, m.revision
    );
    let _ = writeln!(
        w,
        "Settings: concurrency {}, {} operations per kind, {} lists/ranges; a pod is {} bytes of JSON as \
         submitted and {} bytes as the API server stores it (the floor writes those same bytes); {} pods for the \
         large list; {} watchers, {} updates/s for {} s. \
         The API server runs in the benchmark process (shared tokio runtime and CPUs with the clients), except \
         where marked *separate process*.\n",
        args.concurrency,
        args.ops,
        r.api.list.len(),
        r.submitted_bytes,
        r.pod_bytes,
        r.big_list.pods,
        args.watchers,
        args.rate,
        args.seconds
    );

    let (f, a) = (&r.floor, &r.api);
    let api_mut = Sample::pooled(&[&a.create, &a.update]);
    let etcd_mut = Sample::pooled(&[&f.create, &f.update]);
    let bl = &r.big_list;
    let watch_ok = r.watch.complete == r.watch.watchers && r.watch.sent == args.rate as usize * args.seconds as usize;
    let child_mb = mb(r.child.rss.current_kib);

    let _ = writeln!(w, "### Summary\n");
    let _ = writeln!(w, "| Measure | Ferry | Floor (direct etcd) | Target | Met |");
    let _ = writeln!(w, "|---|---|---|---|---|");
    for (label, api, etcd) in [
        ("create (`POST` vs txn)", &a.create, &f.create),
        ("replace (`PUT` vs txn)", &a.update, &f.update),
        ("create + replace pooled", &api_mut, &etcd_mut),
    ] {
        let x = ratio(api.p99(), etcd.p99());
        let _ = writeln!(
            w,
            "| Mutating p99, {label}, C={} | {} ms | {} ms | ≤ {RATIO_TARGET}× floor (is {x:.2}×) | {} |",
            args.concurrency,
            ms(api.p99()),
            ms(etcd.p99()),
            verdict(x <= RATIO_TARGET)
        );
    }
    let lists = [
        ("no limit".to_string(), &bl.full),
        (format!("limit={}, all pages", bl.page), &bl.paged),
        (format!("limit={}, all pages, writes going on", bl.page), &bl.paged_busy),
    ];
    for (label, s) in lists {
        let _ = writeln!(
            w,
            "| List of {} pods, kube-rs, {label}: p50 / p99 | {} / {} ms | {} / {} ms | ≤ {} ms | {} |",
            bl.pods,
            ms(s.p50()),
            ms(s.p99()),
            ms(r.big_range.p50()),
            ms(r.big_range.p99()),
            LIST_TARGET.as_millis(),
            verdict(s.p99() <= LIST_TARGET)
        );
    }
    let _ = writeln!(
        w,
        "| Watch delivery p99 ({} watchers × {} events/s) | {} ms | — | ≤ {} ms, every event to every watcher | {} |",
        r.watch.watchers,
        args.rate,
        ms(r.watch.delivery.p99()),
        WATCH_TARGET.as_millis(),
        verdict(r.watch.delivery.p99() <= WATCH_TARGET && watch_ok)
    );
    let _ = writeln!(
        w,
        "| API server RSS, {} pods stored (separate process) | {child_mb:.1} MB | — | ≤ {RSS_TARGET_MB} MB | {} |\n",
        bl.pods,
        verdict(child_mb <= RSS_TARGET_MB)
    );

    let _ = writeln!(w, "### Operations at concurrency {}\n", args.concurrency);
    let _ = writeln!(w, "| Operation | Path | n | p50 ms | p99 ms | max ms | ops/s |");
    let _ = writeln!(w, "|---|---|---|---|---|---|---|");
    op_row(w, "create", "etcd txn (create_revision = 0 → put)", &f.create);
    op_row(w, "create", "API `POST` (kube `Api::create`)", &a.create);
    op_row(w, "get", "etcd get", &f.get);
    op_row(w, "get", "API `GET` (kube `Api::get`)", &a.get);
    op_row(w, "update", "etcd txn (mod_revision = rv → put)", &f.update);
    op_row(w, "update", "API `PUT` (kube `Api::replace`)", &a.update);
    op_row(w, &format!("list {} pods", args.ops), "etcd range (values)", &f.range);
    op_row(w, &format!("list {} pods", args.ops), "API `LIST` (kube `Api::list`, typed decode)", &a.list);
    op_row(w, &format!("list {} pods", args.ops), "API `LIST` (raw, body not decoded)", &a.list_raw);
    let _ = writeln!(w);
    let _ = writeln!(w, "| API p99 ÷ etcd p99 | API p99 ms | etcd p99 ms | ratio |");
    let _ = writeln!(w, "|---|---|---|---|");
    for (label, api, etcd) in [
        ("create", &a.create, &f.create),
        ("update", &a.update, &f.update),
        ("all mutating", &api_mut, &etcd_mut),
        ("get", &a.get, &f.get),
        ("list (typed)", &a.list, &f.range),
        ("list (raw)", &a.list_raw, &f.range),
    ] {
        let _ =
            writeln!(w, "| {label} | {} | {} | {:.2}× |", ms(api.p99()), ms(etcd.p99()), ratio(api.p99(), etcd.p99()));
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "### Lists of {} pods (sequential)\n", bl.pods);
    let _ = writeln!(w, "| How | n | p50 ms | p99 ms | max ms |");
    let _ = writeln!(w, "|---|---|---|---|---|");
    let rows: [(String, &Sample); 6] = [
        ("etcd range of all pod keys with values (floor)".into(), &r.big_range),
        (format!("raw `GET`, body read, not decoded ({:.1} MB)", bl.bytes as f64 / 1e6), &bl.raw),
        ("kube `Api::list`, no limit (typed decode)".into(), &bl.full),
        (format!("kube `Api::list`, limit={}, every page (typed decode)", bl.page), &bl.paged),
        (format!("the same, while another client replaces a pod every 10 ms ({} writes)", bl.writes), &bl.paged_busy),
        ("kube `Api::list`, no limit, *separate process* (after one warm-up list)".into(), &r.child.list),
    ];
    for (label, s) in rows {
        let _ = writeln!(w, "| {label} | {} | {} | {} | {} |", s.len(), ms(s.p50()), ms(s.p99()), ms(s.max()));
    }
    let _ = writeln!(
        w,
        "\nFilling to {} pods: {} creates at concurrency {}: {:.0} creates/s, p50 {} ms, p99 {} ms.\n",
        bl.pods,
        r.fill.len(),
        args.fill_concurrency,
        r.fill.throughput(),
        ms(r.fill.p50()),
        ms(r.fill.p99())
    );

    let wr = &r.watch;
    let _ = writeln!(w, "### Watch delivery\n");
    let _ =
        writeln!(w, "| Watchers | Events sent | Achieved rate | Deliveries | p50 ms | p99 ms | max ms | Complete |");
    let _ = writeln!(w, "|---|---|---|---|---|---|---|---|");
    let _ = writeln!(
        w,
        "| {} | {} | {:.0}/s | {} | {} | {} | {} | {} of {} watchers saw every event |",
        wr.watchers,
        wr.sent,
        wr.rate,
        wr.delivery.len(),
        ms(wr.delivery.p50()),
        ms(wr.delivery.p99()),
        ms(wr.delivery.max()),
        wr.complete,
        wr.watchers
    );
    let _ = writeln!(
        w,
        "\nDelivery = receive time − the timestamp the writer put in the pod just before sending the `PUT`, \
         so it includes the write itself (writes: p50 {} ms, p99 {} ms, max {} ms).",
        ms(wr.writes.p50()),
        ms(wr.writes.p99()),
        ms(wr.writes.max())
    );
    for p in &wr.problems {
        let _ = writeln!(w, "- {p}");
    }
    let _ = writeln!(w);

    let _ = writeln!(w, "### Memory with {} pods stored\n", bl.pods);
    let _ = writeln!(w, "| Process | RSS MB | Peak RSS MB |");
    let _ = writeln!(w, "|---|---|---|");
    let rss_row = |w: &mut String, label: &str, rss: &Rss| {
        let _ = writeln!(w, "| {label} | {:.1} | {:.1} |", mb(rss.current_kib), mb(rss.peak_kib));
    };
    rss_row(
        w,
        &format!(
            "`ferry-apiserver`, *separate process*, ready ({:.1} s after start), no request yet",
            r.child.startup.as_secs_f64()
        ),
        &r.child.rss_ready,
    );
    rss_row(w, "`ferry-apiserver`, *separate process*, after one full list (warm)", &r.child.rss);
    rss_row(
        w,
        &format!(
            "`ferry-apiserver`, *separate process*, after {} more sequential and then {} concurrent full lists",
            r.child.list.len(),
            r.child.concurrent
        ),
        &r.child.rss_concurrent,
    );
    rss_row(w, "this benchmark (in-process server + clients + results) after the list phase", &r.self_rss);
    out
}
