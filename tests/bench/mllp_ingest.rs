//! End-to-end ingestion throughput: analyzers sending ORU^R01 over MLLP to the real daemon,
//! each message acknowledged only after its durable commit.
//!
//! `cargo bench --bench mllp_ingest`. For each connection count N (1, 8, 32) a fresh daemon
//! (the release `custodian` binary, a temporary store and configuration) receives ORU^R01
//! messages from N concurrent MLLP connections; each connection waits for the ACK of a message
//! before sending the next (MLLP: one outstanding message per connection). Every message has
//! its own MSH-10 and each specimen gets two messages (screen + validity, then confirmation),
//! so the load spreads over many specimens. Two daemon configurations are measured in the same
//! run:
//!
//! - `group`: the shipped group commit (`commit_max_batch = 16`, `commit_max_wait_us = 2000`);
//! - `baseline`: `commit_max_batch = 1`, one flush + fsync per message.
//!
//! Reported per run: messages/s, ACK latency p50/p99/max (send of the frame to the end of the
//! ACK), ACKs other than AA (must be 0), the daemon's mean batch size and durable flush count
//! (from its `/metrics`), and the daemon's CPU time per message.
//!
//! Settings (environment, or arguments after `--`):
//! - `CUSTODIAN_BENCH_CONNS` / `--conns 1,8,32`: connection counts;
//! - `CUSTODIAN_BENCH_SECS` / `--secs 8`: measured seconds per run (after the warm-up);
//! - `CUSTODIAN_BENCH_WARMUP_SECS` / `--warmup 1`: warm-up seconds per run, not measured;
//! - `CUSTODIAN_BENCH_MESSAGES` / `--messages M`: instead of a duration, send M messages per
//!   run (split over the connections, no warm-up);
//! - `CUSTODIAN_BENCH_LOG` / `--log info`: the daemon's log level (`info` as shipped);
//! - `CUSTODIAN_BENCH_DIR`: where the temporary stores live (default: the system temp dir);
//! - `--only group|baseline`: measure one configuration.

#[path = "../common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ANALYZER: &str = "bench";

#[derive(Debug, Clone)]
struct Settings {
    conns: Vec<usize>,
    secs: f64,
    warmup: f64,
    messages: Option<usize>,
    log: String,
    modes: Vec<Mode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Group,
    Baseline,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Group => "group",
            Mode::Baseline => "baseline",
        }
    }

    /// The `[ingest]` keys of this configuration.
    fn ingest_keys(self) -> &'static str {
        match self {
            // The shipped values of config/custodian.toml.
            Mode::Group => "commit_max_batch = 16\ncommit_max_wait_us = 2000",
            Mode::Baseline => "commit_max_batch = 1\ncommit_max_wait_us = 0",
        }
    }
}

fn settings() -> Settings {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut conns = env("CUSTODIAN_BENCH_CONNS").unwrap_or_else(|| "1,8,32".into());
    let mut secs = env("CUSTODIAN_BENCH_SECS").unwrap_or_else(|| "8".into());
    let mut warmup = env("CUSTODIAN_BENCH_WARMUP_SECS").unwrap_or_else(|| "1".into());
    let mut messages = env("CUSTODIAN_BENCH_MESSAGES");
    let mut log = env("CUSTODIAN_BENCH_LOG").unwrap_or_else(|| "info".into());
    let mut only = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--conns" => conns = value(),
            "--secs" => secs = value(),
            "--warmup" => warmup = value(),
            "--messages" => messages = Some(value()),
            "--log" => log = value(),
            "--only" => only = Some(value()),
            // `cargo bench` passes `--bench`; a filter word may follow too.
            _ => {}
        }
    }
    let modes = match only.as_deref() {
        None => vec![Mode::Group, Mode::Baseline],
        Some("group") => vec![Mode::Group],
        Some("baseline") => vec![Mode::Baseline],
        Some(o) => panic!("--only {o}: expected group or baseline"),
    };
    Settings {
        conns: conns
            .split(',')
            .map(|c| c.trim().parse().expect("connection counts: 1,8,32"))
            .collect(),
        secs: secs.parse().expect("seconds"),
        warmup: warmup.parse().expect("warm-up seconds"),
        messages: messages.map(|m| m.parse().expect("message count")),
        log,
        modes,
    }
}

// ---------------------------------------------------------------------------------------------
// Messages

/// One message of the workload: message `i` of connection `conn` in run `run`. Even messages
/// carry a specimen's screen and validity results, odd ones its confirmation results, so every
/// specimen gets two messages and a run touches (messages / 2) specimens.
fn message(run: &str, conn: usize, i: u64, control_id: &mut String, out: &mut Vec<u8>) {
    control_id.clear();
    let _ = write!(control_id, "{run}C{conn:02}M{i:08}");
    let specimen = format!("{run}{conn:02}{:08}", i / 2);
    let mut m = String::with_capacity(1600);
    let t = 20261123101500u64 + (i % 40);
    let _ = write!(
        m,
        "MSH|^~\\&|COBAS8000|TOXLAB^2.16.840.1.113883.3.999^ISO|CUSTODIAN|TOXLAB|{t}||ORU^R01^ORU_R01|{control_id}|P|2.5.1||||||UNICODE UTF-8\r\
         PID|1||{specimen}^^^TOXLAB^SID\r\
         ORC|RE|{specimen}^TOXLAB|{specimen}^LAB||CM||||{t}|||||||||TOXLAB^Toxicology Laboratory\r\
         OBR|1|{specimen}^TOXLAB|{specimen}^LAB|DAT^Drugs of abuse testing^L|||20261122083000|||||||20261122140000|URINE|||||A||{t}|||F\r"
    );
    // (code, value, unit, reference range, abnormal flag)
    let screen: [(&str, &str, &str, &str, &str); 9] = [
        ("THC50", "77", "ng/mL", "<50", "A"),
        ("COC300", "412", "ng/mL", "<300", "A"),
        ("OPI2000", "134", "ng/mL", "<2000", "N"),
        ("AMP1000", "35", "ng/mL", "<1000", "N"),
        ("PCP25", "3", "ng/mL", "<25", "N"),
        ("CREA", "85.2", "mg/dL", ">=20", "N"),
        ("SG", "1.0150", "", "1.003-1.030", "N"),
        ("PH", "6.2", "pH", "4.5-9.0", "N"),
        ("NIT", "120", "mcg/mL", "<500", "N"),
    ];
    let confirmation: [(&str, &str, &str, &str, &str); 2] = [
        ("BZEC", "1850", "ng/mL", "<150", "A"),
        ("THCAC", "42", "ng/mL", "<15", "A"),
    ];
    let obx: &[(&str, &str, &str, &str, &str)] = if i.is_multiple_of(2) {
        &screen
    } else {
        &confirmation
    };
    for (n, (code, value, unit, range, flag)) in obx.iter().enumerate() {
        let _ = write!(
            m,
            "OBX|{}|NM|{code}^{code}^L||{value}|{unit}|{range}|{flag}|||F|||{t}|TOXLAB^Toxicology Laboratory||^AUTO|COBAS8000-SN0042\r",
            n + 1
        );
    }
    if i % 2 == 1 {
        m.push_str("NTE|1|L|Confirmed by LC-MS/MS; calibrators and controls within limits\r");
    }
    out.clear();
    out.push(0x0b);
    out.extend_from_slice(m.as_bytes());
    out.extend_from_slice(&[0x1c, 0x0d]);
}

// ---------------------------------------------------------------------------------------------
// Load generator

#[derive(Default)]
struct ConnResult {
    /// ACK latencies (µs) of messages acknowledged inside the measured window.
    latencies: Vec<u32>,
    /// Messages (warm-up included) whose ACK was not AA or mirrored another MSH-10.
    failures: u64,
    /// Every message sent, warm-up included.
    sent: u64,
    first_failure: Option<String>,
    error: Option<String>,
}

/// Reads one MLLP reply frame into `buf` (payload only).
async fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    let mut chunk = [0u8; 2048];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() >= 3 && buf.ends_with(&[0x1c, 0x0d]) {
            if buf[0] == 0x0b {
                buf.remove(0);
            }
            buf.truncate(buf.len() - 2);
            return Ok(());
        }
    }
}

/// MSA-1 and MSA-2 of an ACK.
fn msa(ack: &[u8]) -> (&str, &str) {
    let text = std::str::from_utf8(ack).unwrap_or("");
    let seg = text
        .split('\r')
        .find(|s| s.starts_with("MSA|"))
        .unwrap_or("");
    let mut f = seg.split('|').skip(1);
    (f.next().unwrap_or(""), f.next().unwrap_or(""))
}

struct Window {
    /// ACKs received from here on are measured.
    start: Instant,
    /// Connections stop sending at this point (None: message-count mode).
    end: Option<Instant>,
    /// Message-count mode: messages per connection.
    per_conn: u64,
}

async fn connection(
    addr: SocketAddr,
    run: Arc<str>,
    conn: usize,
    window: Arc<Window>,
    stop: Arc<AtomicBool>,
) -> ConnResult {
    let mut r = ConnResult::default();
    let mut stream = match TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(format!("connect: {e}"));
            return r;
        }
    };
    let _ = stream.set_nodelay(true);
    let mut frame = Vec::with_capacity(2048);
    let mut control_id = String::new();
    let mut reply = Vec::with_capacity(512);
    let mut i = 0u64;
    loop {
        match window.end {
            Some(end) if Instant::now() >= end || stop.load(Ordering::Relaxed) => break,
            None if i >= window.per_conn => break,
            _ => {}
        }
        message(&run, conn, i, &mut control_id, &mut frame);
        let t0 = Instant::now();
        if let Err(e) = stream.write_all(&frame).await {
            r.error = Some(format!("write: {e}"));
            break;
        }
        if let Err(e) = read_frame(&mut stream, &mut reply).await {
            r.error = Some(format!("read: {e}"));
            break;
        }
        let done = Instant::now();
        r.sent += 1;
        i += 1;
        // Every ACK must be AA, warm-up included.
        let (code, echoed) = msa(&reply);
        if code != "AA" || echoed != control_id {
            r.failures += 1;
            if r.first_failure.is_none() {
                r.first_failure = Some(String::from_utf8_lossy(&reply).replace('\r', "\n  "));
            }
        }
        if done < window.start || window.end.is_some_and(|end| done > end) {
            continue;
        }
        r.latencies
            .push((done - t0).as_micros().min(u32::MAX as u128) as u32);
    }
    r
}

// ---------------------------------------------------------------------------------------------
// Daemon side figures

/// User + system CPU seconds of a process (from /proc; 0 where unavailable).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Field 14 is index 11 after the state (field 3 is index 0). USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// `name_sum` and `name_count` of a summary/histogram in a Prometheus exposition.
fn sum_count(text: &str, name: &str) -> (f64, f64) {
    let get = |suffix: &str| {
        let key = format!("{name}{suffix}");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(' '))
            .filter(|(k, _)| k.split('{').next() == Some(key.as_str()))
            .filter_map(|(_, v)| v.trim().parse::<f64>().ok())
            .sum::<f64>()
    };
    (get("_sum"), get("_count"))
}

/// Bytes the process caused to be written to storage (from /proc; 0 where unavailable).
fn write_bytes(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

struct Scrape {
    batch_sum: f64,
    batches: f64,
    flush_secs: f64,
    flushes: f64,
}

fn scrape(admin: SocketAddr) -> Scrape {
    let text = custodian::admin::client::get(admin, "/metrics", None)
        .map(|r| r.body)
        .unwrap_or_default();
    let (batch_sum, batches) = sum_count(&text, "custodian_store_commit_batch_size");
    let (flush_secs, flushes) = sum_count(&text, "custodian_store_flush_seconds");
    Scrape {
        batch_sum,
        batches,
        flush_secs,
        flushes,
    }
}

// ---------------------------------------------------------------------------------------------
// One run

struct RunResult {
    mode: Mode,
    conns: usize,
    measured: u64,
    elapsed: Duration,
    failures: u64,
    errors: Vec<String>,
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean_batch: f64,
    flushes: f64,
    mean_flush: Duration,
    daemon_cpu_us_per_msg: f64,
    client_cpu_us_per_msg: f64,
    disk_kb_per_msg: f64,
}

impl RunResult {
    fn per_sec(&self) -> f64 {
        self.measured as f64 / self.elapsed.as_secs_f64()
    }
}

fn percentile(sorted: &[u32], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    Duration::from_micros(u64::from(sorted[idx]))
}

fn bench_root() -> tempfile::TempDir {
    match std::env::var_os("CUSTODIAN_BENCH_DIR") {
        Some(dir) => tempfile::Builder::new()
            .prefix("mllp-bench")
            .tempdir_in(dir)
            .unwrap(),
        None => tempfile::Builder::new()
            .prefix("mllp-bench")
            .tempdir()
            .unwrap(),
    }
}

fn write_config(dir: &Path, mode: Mode, conns: usize, log: &str) {
    let config = common::write_config(dir, &common::analyzer(ANALYZER));
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("commit_max_wait_us = 1000") && text.contains("level = \"info\""));
    let text = text
        .replace("commit_max_wait_us = 1000", mode.ingest_keys())
        .replace("level = \"info\"", &format!("level = \"{log}\""))
        .replace(
            "read_timeout_secs = 30",
            &format!(
                "read_timeout_secs = 30\nmax_connections = {}",
                (conns + 8).max(64)
            ),
        );
    std::fs::write(&config, text).unwrap();
}

fn run_one(s: &Settings, mode: Mode, conns: usize, tag: usize) -> RunResult {
    let root = bench_root();
    write_config(root.path(), mode, conns, &s.log);
    let mut daemon = common::Daemon::start(root.path());
    let pid = daemon.child.as_ref().unwrap().id();
    let addr = daemon.addr(ANALYZER);
    let run: Arc<str> = Arc::from(format!("R{tag}{}", &mode.name()[..1].to_uppercase()));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let now = Instant::now();
    let window = Arc::new(match s.messages {
        Some(m) => Window {
            start: now,
            end: None,
            per_conn: (m / conns).max(1) as u64,
        },
        None => {
            let start = now + Duration::from_secs_f64(s.warmup);
            Window {
                start,
                end: Some(start + Duration::from_secs_f64(s.secs)),
                per_conn: u64::MAX,
            }
        }
    });
    let stop = Arc::new(AtomicBool::new(false));

    // Daemon figures are read at the window's edges (warm-up excluded when there is one).
    let measure_at_start = s.messages.is_none();
    let mut before = (
        cpu_secs(pid),
        cpu_secs(std::process::id()),
        scrape(daemon.admin),
        write_bytes(pid),
    );
    let admin = daemon.admin;
    let (results, after, elapsed) = rt.block_on(async {
        let tasks: Vec<_> = (0..conns)
            .map(|c| {
                tokio::spawn(connection(
                    addr,
                    run.clone(),
                    c,
                    window.clone(),
                    stop.clone(),
                ))
            })
            .collect();
        if measure_at_start {
            tokio::time::sleep_until(window.start.into()).await;
            before = (
                cpu_secs(pid),
                cpu_secs(std::process::id()),
                tokio::task::spawn_blocking(move || scrape(admin))
                    .await
                    .unwrap(),
                write_bytes(pid),
            );
        }
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.unwrap());
        }
        let elapsed = match window.end {
            Some(end) => end - window.start,
            None => window.start.elapsed(),
        };
        let after = (
            cpu_secs(pid),
            cpu_secs(std::process::id()),
            tokio::task::spawn_blocking(move || scrape(admin))
                .await
                .unwrap(),
            write_bytes(pid),
        );
        (results, after, elapsed)
    });
    stop.store(true, Ordering::Relaxed);

    let mut lat: Vec<u32> = results
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    lat.sort_unstable();
    let measured = lat.len() as u64;
    let failures = results.iter().map(|r| r.failures).sum();
    let mut errors: Vec<String> = results.iter().filter_map(|r| r.error.clone()).collect();
    if let Some(f) = results.iter().find_map(|r| r.first_failure.clone()) {
        errors.push(format!("first non-AA ACK:\n  {f}"));
    }
    let batches = after.2.batches - before.2.batches;
    let flushes = after.2.flushes - before.2.flushes;
    let per_msg = |secs: f64| secs * 1e6 / (measured.max(1) as f64);
    let r = RunResult {
        mode,
        conns,
        measured,
        elapsed,
        failures,
        errors,
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        max: lat
            .last()
            .map(|&m| Duration::from_micros(u64::from(m)))
            .unwrap_or_default(),
        mean_batch: if batches > 0.0 {
            (after.2.batch_sum - before.2.batch_sum) / batches
        } else {
            0.0
        },
        flushes,
        mean_flush: if flushes > 0.0 {
            Duration::from_secs_f64((after.2.flush_secs - before.2.flush_secs) / flushes)
        } else {
            Duration::ZERO
        },
        daemon_cpu_us_per_msg: per_msg(after.0 - before.0),
        client_cpu_us_per_msg: per_msg(after.1 - before.1),
        disk_kb_per_msg: (after.3 - before.3) / 1024.0 / (measured.max(1) as f64),
    };
    let _ = daemon.term();
    drop(daemon);
    r
}

/// The first three fields of /proc/loadavg.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Mean CPU time of one `custodian::codec::hl7::parse` over the workload's two frames.
fn parse_cost_us(a: &[u8], b: &[u8]) -> f64 {
    let strip = |f: &[u8]| -> Vec<u8> {
        // The workload builds MLLP frames: VT ... FS CR.
        f.iter()
            .copied()
            .filter(|&c| c != 0x0b && c != 0x1c)
            .collect::<Vec<u8>>()
    };
    let (a, b) = (strip(a), strip(b));
    let a = a.strip_suffix(b"\r").map(|x| x.to_vec()).unwrap_or(a);
    let b = b.strip_suffix(b"\r").map(|x| x.to_vec()).unwrap_or(b);
    assert!(
        custodian::codec::hl7::parse(&a).is_ok(),
        "the workload parses"
    );
    assert!(
        custodian::codec::hl7::parse(&b).is_ok(),
        "the workload parses"
    );
    // CPU time of this process (like the daemon's CPU per message), not wall time: other
    // processes on the machine do not inflate it.
    let n = 20_000u32;
    let me = std::process::id();
    let before = cpu_secs(me);
    for i in 0..n {
        let m = if i % 2 == 0 { &a } else { &b };
        std::hint::black_box(custodian::codec::hl7::parse(std::hint::black_box(m)).ok());
    }
    (cpu_secs(me) - before) * 1e6 / f64::from(n)
}

fn main() {
    let s = settings();
    let mut sample = Vec::new();
    message("R0G", 0, 0, &mut String::new(), &mut sample);
    let mut sample_conf = Vec::new();
    message("R0G", 0, 1, &mut String::new(), &mut sample_conf);
    eprintln!(
        "mllp_ingest: daemon {} | conns {:?} | {} | ORU frames {} B (screen+validity, 9 OBX) and {} B (confirmation) | log level {}",
        common::bin().display(),
        s.conns,
        match s.messages {
            Some(m) => format!("{m} messages per run"),
            None => format!("{}s per run after {}s warm-up", s.secs, s.warmup),
        },
        sample.len(),
        sample_conf.len(),
        s.log,
    );
    let parse_us = parse_cost_us(&sample, &sample_conf);
    let load_before = loadavg();
    let mut results = Vec::new();
    for (i, &n) in s.conns.iter().enumerate() {
        for &mode in &s.modes {
            let r = run_one(&s, mode, n, i);
            eprintln!(
                "  {:<8} N={:<3} {:>9.0} msg/s  p50 {} ms  p99 {} ms  max {} ms  non-AA {}  batch {:.1}  flush {} ms",
                mode.name(),
                n,
                r.per_sec(),
                ms(r.p50),
                ms(r.p99),
                ms(r.max),
                r.failures,
                r.mean_batch,
                ms(r.mean_flush),
            );
            for e in &r.errors {
                eprintln!("    ! {e}");
            }
            results.push(r);
        }
    }

    println!();
    println!(
        "| config   |  N |  acked |   msg/s | p50 ms | p99 ms | max ms | non-AA | mean batch | fsyncs | flush ms | daemon CPU µs/msg | disk KB/msg |"
    );
    println!(
        "|----------|---:|-------:|--------:|-------:|-------:|-------:|-------:|-----------:|-------:|---------:|------------------:|------------:|"
    );
    for r in &results {
        println!(
            "| {:<8} | {:>2} | {:>6} | {:>7.0} | {:>6} | {:>6} | {:>6} | {:>6} | {:>10.1} | {:>6.0} | {:>8} | {:>17.0} | {:>11.1} |",
            r.mode.name(),
            r.conns,
            r.measured,
            r.per_sec(),
            ms(r.p50),
            ms(r.p99),
            ms(r.max),
            r.failures,
            r.mean_batch,
            r.flushes,
            ms(r.mean_flush),
            r.daemon_cpu_us_per_msg,
            r.disk_kb_per_msg,
        );
    }
    if s.modes.len() == 2 {
        println!();
        println!("| N | group msg/s | baseline msg/s | group/baseline | p50 group/baseline |");
        println!("|---:|---:|---:|---:|---:|");
        for &n in &s.conns {
            let find = |m: Mode| results.iter().find(|r| r.conns == n && r.mode == m);
            if let (Some(g), Some(b)) = (find(Mode::Group), find(Mode::Baseline)) {
                println!(
                    "| {} | {:.0} | {:.0} | {:.2}x | {:.2}x |",
                    n,
                    g.per_sec(),
                    b.per_sec(),
                    g.per_sec() / b.per_sec().max(f64::MIN_POSITIVE),
                    g.p50.as_secs_f64() / b.p50.as_secs_f64().max(f64::MIN_POSITIVE),
                );
            }
        }
    }
    let client: f64 =
        results.iter().map(|r| r.client_cpu_us_per_msg).sum::<f64>() / results.len().max(1) as f64;
    println!();
    println!(
        "Machine: {} CPUs; load average (1/5/15 min) {} before, {} after: other processes compete for the CPUs when it exceeds the CPU count.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_before,
        loadavg()
    );
    println!(
        "Latency: from writing the frame to reading the whole ACK. fsyncs: durable flushes in the measured window; disk: bytes the daemon wrote to storage. Load generator CPU: {client:.0} µs/msg on average."
    );
    // The parse measured in the same run, against the daemon's CPU per durable message: the
    // share hl7-parser behind our guard takes of the work.
    if let Some(r) = results
        .iter()
        .filter(|r| r.mode.name() == "group")
        .max_by_key(|r| r.conns)
    {
        println!(
            "HL7 parse (hl7-parser behind the guard, escapes decoded by us): {parse_us:.1} µs CPU per message, {:.1} % of the daemon's CPU per durable message ({:.0} µs, group, N = {}).",
            100.0 * parse_us / r.daemon_cpu_us_per_msg.max(f64::MIN_POSITIVE),
            r.daemon_cpu_us_per_msg,
            r.conns
        );
    }
    let failed: u64 = results.iter().map(|r| r.failures).sum();
    let errors = results
        .iter()
        .any(|r| !r.errors.is_empty() || r.measured == 0);
    if failed > 0 || errors {
        eprintln!("mllp_ingest: {failed} ACKs were not AA, or a connection failed");
        std::process::exit(1);
    }
}
