//! Container logs: the writer containerd runs for each container, and the reader behind
//! `GET /containerLogs/...`.
//!
//! containerd's `file://` log URI copies raw bytes, so nothing would know when a line was
//! written (`timestamps`, `sinceSeconds` need that). Each container task therefore gets a
//! `binary://` log URI naming `ferry-nodelet log-driver <file>` ([`run_driver`]): the shim
//! starts it with the container's stdout and stderr on fds 3 and 4 and waits for a byte on
//! fd 5. It writes the CRI log format the kubelet reads, one record per line:
//! `<RFC 3339 nanos timestamp> <stdout|stderr> <F|P> <content>` (`P` for a partial chunk of a
//! line longer than 16 KiB). The driver is a child of the shim, not of the nodelet, so logs
//! keep flowing while the nodelet restarts — which a fifo copied by the nodelet would not.
//! Each container instance has its own file, `<restart count>.log`, so the previous
//! instance's log stays readable (`previous=true`).

use chrono::{DateTime, SecondsFormat, Utc};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Longest line content in one record; longer lines are split into `P` records (as the CRI).
pub const MAX_RECORD: usize = 16 * 1024;

/// The shim's `binary://` log URI for writing `file` with the driver binary `driver`.
pub fn driver_uri(driver: &Path, file: &Path) -> String {
    let query: String =
        form_urlencoded::Serializer::new(String::new()).append_pair("log-driver", &file.display().to_string()).finish();
    format!("binary://{}?{query}", driver.display())
}

/// The log driver: copy fds 3 (stdout) and 4 (stderr) into `file` in CRI format; signal
/// readiness on fd 5. Returns when both streams are closed (the container exited).
pub fn run_driver(file: &Path) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let out = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
    let out = Arc::new(Mutex::new(out));
    // The fds are inherited; /proc/self/fd opens the same pipes without unsafe code.
    let stdout = std::fs::File::open("/proc/self/fd/3")?;
    let stderr = std::fs::File::open("/proc/self/fd/4")?;
    if let Ok(mut ready) = std::fs::OpenOptions::new().write(true).open("/proc/self/fd/5") {
        let _ = ready.write_all(b"1");
    }
    let threads: Vec<_> = [(stdout, "stdout"), (stderr, "stderr")]
        .into_iter()
        .map(|(input, stream)| {
            let out = out.clone();
            std::thread::spawn(move || copy_stream(input, stream, &out))
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn copy_stream(input: impl Read, stream: &str, out: &Mutex<std::fs::File>) {
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, input);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match reader.by_ref().take(MAX_RECORD as u64).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let full = line.last() == Some(&b'\n');
        let content = if full { &line[..n - 1] } else { &line[..] };
        // A line without its newline is partial unless the stream ended there.
        let tag = if full || reader.fill_buf().map(|b| b.is_empty()).unwrap_or(true) { "F" } else { "P" };
        let mut record =
            format!("{} {stream} {tag} ", Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true)).into_bytes();
        record.extend_from_slice(content);
        record.push(b'\n');
        if let Ok(mut f) = out.lock() {
            if f.write_all(&record).is_err() {
                return;
            }
        }
    }
}

/// The log file of the current container instance in `dir` (`<restart>.log`, highest number)
/// or, with `previous`, the one before it.
pub fn instance_file(dir: &Path, previous: bool) -> Option<PathBuf> {
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    numbers.sort_unstable();
    let n = if previous { numbers.iter().rev().nth(1)? } else { numbers.last()? };
    Some(dir.join(format!("{n}.log")))
}

/// One parsed CRI log record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    /// When the line was read from the container.
    pub time: DateTime<Utc>,
    /// The timestamp as written.
    pub time_text: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// Whether the record ends a line (`F`).
    pub full: bool,
    /// The content, without the newline.
    pub content: &'a [u8],
}

/// Parse one record (without its trailing newline); `None` if malformed.
pub fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, |b| *b == b' ');
    let time_text = std::str::from_utf8(parts.next()?).ok()?;
    let stream = std::str::from_utf8(parts.next()?).ok()?;
    let tag = parts.next()?;
    let content = parts.next().unwrap_or_default();
    let time = DateTime::parse_from_rfc3339(time_text).ok()?.with_timezone(&Utc);
    Some(Record { time, time_text, stream, full: tag.first() != Some(&b'P'), content })
}

/// What to return from a log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only lines written at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only the last N lines.
    pub tail_lines: Option<u64>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
    /// Keep streaming while the container runs.
    pub follow: bool,
}

/// Turns records into output lines, applying `since`, `timestamps` and `limitBytes`.
#[derive(Debug)]
pub struct Formatter {
    opts: LogOptions,
    written: u64,
    /// Whether the last record ended a line (so the next one starts a new line).
    at_line_start: bool,
}

impl Formatter {
    /// A formatter for these options.
    pub fn new(opts: LogOptions) -> Self {
        Formatter { opts, written: 0, at_line_start: true }
    }

    /// Whether `limitBytes` is used up.
    pub fn done(&self) -> bool {
        self.opts.limit_bytes.is_some_and(|l| self.written >= l)
    }

    /// The output for one record line of the file (empty if filtered out).
    pub fn format(&mut self, line: &[u8]) -> Vec<u8> {
        let Some(r) = parse_record(line) else {
            // A raw line (a `file://` log without the driver): as is, no timestamp.
            if self.done() {
                return Vec::new();
            }
            let mut out = [line, b"\n"].concat();
            if let Some(limit) = self.opts.limit_bytes {
                out.truncate(limit.saturating_sub(self.written) as usize);
            }
            self.written += out.len() as u64;
            return out;
        };
        if self.opts.since.is_some_and(|since| r.time < since) || self.done() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(r.content.len() + 40);
        if self.opts.timestamps && self.at_line_start {
            out.extend_from_slice(r.time_text.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(r.content);
        if r.full {
            out.push(b'\n');
        }
        self.at_line_start = r.full;
        if let Some(limit) = self.opts.limit_bytes {
            let left = limit.saturating_sub(self.written) as usize;
            out.truncate(left);
        }
        self.written += out.len() as u64;
        out
    }
}

/// Byte offset in `data` where the last `n` lines (counting `F` records) start.
pub fn tail_offset(data: &[u8], n: u64) -> usize {
    if n == 0 {
        return data.len();
    }
    let mut lines = 0u64;
    let mut end = data.len();
    // Walk records backwards; a line is complete at each F record.
    let mut pos = data.len();
    while pos > 0 {
        let start = data[..pos.saturating_sub(1)].iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let record = &data[start..pos];
        let full = parse_record(record.strip_suffix(b"\n").unwrap_or(record)).is_none_or(|r| r.full);
        if full {
            if lines == n {
                return end;
            }
            lines += 1;
        }
        end = start;
        pos = start;
    }
    0
}

/// Send the log in `file` through `tx` as `opts` ask; with `follow`, keep sending what is
/// appended (polling every 100 ms) until `still_running` says no, `limitBytes` is reached or
/// the receiver is gone.
pub async fn stream_file<F, Fut>(
    file: &Path,
    opts: LogOptions,
    follow: bool,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
    mut still_running: F,
) -> std::io::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let tail = opts.tail_lines;
    let mut fmt = Formatter::new(opts);
    let mut f = tokio::fs::File::open(file).await?;
    let mut data = Vec::new();
    f.read_to_end(&mut data).await?;
    // Only whole records; the rest is read again later.
    let mut pos = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) as u64;
    let start = tail.map_or(0, |n| tail_offset(&data[..pos as usize], n));
    let emit = |fmt: &mut Formatter, chunk: &[u8]| -> Vec<u8> {
        let mut out = Vec::new();
        for line in chunk.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            out.extend(fmt.format(line));
        }
        out
    };
    let out = emit(&mut fmt, &data[start..pos as usize]);
    if !out.is_empty() && tx.send(out.into()).await.is_err() {
        return Ok(());
    }
    if !follow {
        return Ok(());
    }
    let mut stopping = false;
    loop {
        if fmt.done() || tx.is_closed() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        f.seek(std::io::SeekFrom::Start(pos)).await?;
        data.clear();
        f.read_to_end(&mut data).await?;
        let end = data.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if end > 0 {
            pos += end as u64;
            let out = emit(&mut fmt, &data[..end]);
            if !out.is_empty() && tx.send(out.into()).await.is_err() {
                return Ok(());
            }
            continue;
        }
        if stopping {
            return Ok(());
        }
        // Nothing new: stop after one more read once the container is gone.
        stopping = !still_running().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(t: &str, tag: &str, content: &str) -> String {
        format!("{t} stdout {tag} {content}\n")
    }

    #[test]
    fn parses_and_formats_records() {
        let line = b"2026-01-02T03:04:05.123456789Z stderr F hello world";
        let r = parse_record(line).unwrap();
        assert_eq!((r.stream, r.full, r.content), ("stderr", true, &b"hello world"[..]));
        assert!(parse_record(b"garbage").is_none());
        assert_eq!(Formatter::new(LogOptions::default()).format(b"raw line"), b"raw line\n");
        let mut f = Formatter::new(LogOptions { timestamps: true, ..LogOptions::default() });
        assert_eq!(f.format(line), b"2026-01-02T03:04:05.123456789Z hello world\n");
        assert_eq!(f.format(b"2026-01-02T03:04:06Z stdout P par"), b"2026-01-02T03:04:06Z par");
        assert_eq!(f.format(b"2026-01-02T03:04:06Z stdout F tial"), b"tial\n");
        assert_eq!(f.format(b"2026-01-02T03:04:06Z stdout F "), b"2026-01-02T03:04:06Z \n");
    }

    #[test]
    fn since_and_limit() {
        let since = DateTime::parse_from_rfc3339("2026-01-01T00:00:10Z").unwrap().with_timezone(&Utc);
        let mut f = Formatter::new(LogOptions { since: Some(since), limit_bytes: Some(5), ..LogOptions::default() });
        assert!(f.format(b"2026-01-01T00:00:09Z stdout F old").is_empty());
        assert_eq!(f.format(b"2026-01-01T00:00:10Z stdout F new"), b"new\n");
        assert_eq!(f.format(b"2026-01-01T00:00:11Z stdout F more"), b"m");
        assert!(f.done());
        assert!(f.format(b"2026-01-01T00:00:12Z stdout F x").is_empty());
    }

    #[test]
    fn tail_counts_full_lines() {
        let t = "2026-01-01T00:00:00Z";
        let data = [rec(t, "F", "a"), rec(t, "P", "b1"), rec(t, "F", "b2"), rec(t, "F", "c")].concat();
        let d = data.as_bytes();
        assert_eq!(&d[tail_offset(d, 1)..], rec(t, "F", "c").as_bytes());
        assert_eq!(
            &d[tail_offset(d, 2)..],
            [rec(t, "P", "b1"), rec(t, "F", "b2"), rec(t, "F", "c")].concat().as_bytes()
        );
        assert_eq!(tail_offset(d, 3), 0);
        assert_eq!(tail_offset(d, 10), 0);
        assert_eq!(tail_offset(d, 0), d.len());
        assert_eq!(tail_offset(b"", 3), 0);
    }

    #[test]
    fn instance_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(instance_file(dir.path(), false), None);
        for n in [0, 1, 10, 2] {
            std::fs::write(dir.path().join(format!("{n}.log")), "").unwrap();
        }
        std::fs::write(dir.path().join("junk"), "").unwrap();
        assert_eq!(instance_file(dir.path(), false), Some(dir.path().join("10.log")));
        assert_eq!(instance_file(dir.path(), true), Some(dir.path().join("2.log")));
    }

    #[test]
    fn driver_uri_encodes_the_file() {
        let uri = driver_uri(Path::new("/usr/bin/ferry-nodelet"), Path::new("/var/lib/x y/0.log"));
        assert_eq!(uri, "binary:///usr/bin/ferry-nodelet?log-driver=%2Fvar%2Flib%2Fx+y%2F0.log");
    }
}
