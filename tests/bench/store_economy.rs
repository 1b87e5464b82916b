//! Store economy: what one durable message costs, and whether that holds as the store grows.
//!
//! `cargo bench --bench store_economy` (`-- --specimens 1000000 --small 10000` as default).
//! Everything is measured in one run, on this machine, with the same Rust load client (`conns`
//! MLLP connections, one outstanding message each, every ACK checked):
//!
//! 1. **Ceiling and reference.** A no-op Rust MLLP responder (a child process of this bench:
//!    reads a frame, answers a fixed ACK, stores nothing) and python-hl7's asyncio MLLP server
//!    storing nothing (`tests/bench/hl7_null_server.py`, answering `create_ack()`), each for
//!    [`WINDOWS`] windows of `secs` seconds (the median window is the measure).
//! 2. **The daemon on a small store.** The release daemon (temporary store, port 0) receives
//!    `small` specimens, `per` messages each (a 5-result screening ORU, then a validity ORU);
//!    then, measured: time to ready after a clean restart (start to `/readyz` 200, the median
//!    of fifteen, each after `sync`, alternating with as many starts of a daemon on an empty
//!    store, whose median is the baseline: see [`time_to_ready`]), then on the daemon just started
//!    durable ingest in [`WINDOWS`] windows of `secs` seconds each (new specimens; the median
//!    window's rate and ACK p50/p99 are the measure: a window of a few seconds on this VM's
//!    disk varies by a third, its flushes from 0.45 to 0.7 ms), the daemon's RSS at the first
//!    window's end (the RSS of the daemon that grew the store is shown beside it, not
//!    compared: it ran as long as the growth), bytes on disk per message stored (every file
//!    under the store directory, allocated blocks) against the raw message's size, a retention
//!    sweep (1000 clocks due) and a specimen's audit trail read (as the console shows it) on
//!    the stopped store.
//! 3. **The same daemon grown to `specimens`** (same messages), then the same measures, each
//!    shown as a ratio to the small store's.
//! 4. **Disk at one and at 40 messages per specimen**: fresh daemons receiving `one` specimens
//!    with one message each, and `deep` specimens with 40 messages each.
//!
//! Other settings: `--conns 32`, `--secs 8`, `--per 2`, `--one 20000`, `--deep 500`, `--skip
//! reference` (the daemon only). `CUSTODIAN_BENCH_DIR` says where the stores go (default: the
//! system temporary directory); with `CUSTODIAN_BENCH_KEEP` set, the large store is left there;
//! `CUSTODIAN_BENCH_CACHE_MIB` sets the daemons' `store.cache_mib` (default: the shipped one).

#[path = "../common/mod.rs"]
mod common;

use custodian::custody::lifecycle::{
    self, ClockKind, DueItem, Settings as Lifecycle, due_entry_key,
};
use custodian::domain::retention::{Basis, Retention, SplitBottle};
use custodian::domain::rules::ProfileSet;
use custodian::domain::specimen::{SpecimenRecord, State};
use custodian::store::{Abort, GroupCommitter, GroupConfig, Keyspace, Store, state_key};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ANALYZER: &str = "bench";

struct Settings {
    specimens: u64,
    small: u64,
    per: u64,
    conns: usize,
    secs: f64,
    one: u64,
    deep: u64,
    reference: bool,
}

fn settings() -> Settings {
    let mut s = Settings {
        specimens: 1_000_000,
        small: 10_000,
        per: 2,
        conns: 32,
        secs: 8.0,
        one: 20_000,
        deep: 500,
        reference: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--specimens" => s.specimens = value().parse().expect("--specimens N"),
            "--small" => s.small = value().parse().expect("--small N"),
            "--per" => s.per = value().parse().expect("--per N"),
            "--conns" => s.conns = value().parse().expect("--conns N"),
            "--secs" => s.secs = value().parse().expect("--secs S"),
            "--one" => s.one = value().parse().expect("--one N"),
            "--deep" => s.deep = value().parse().expect("--deep N"),
            "--skip" => {
                let what = value();
                assert_eq!(what, "reference", "--skip reference");
                s.reference = false;
            }
            _ => {}
        }
    }
    assert!(s.small < s.specimens, "--small must be below --specimens");
    s
}

// ---------------------------------------------------------------------------------------------
// Messages and the load client

/// Message `k` of specimen `n` of workload `tag`: k = 0 a 5-result screening ORU, else a
/// validity ORU (values varying with k, so each message is its own).
fn message(tag: &str, n: u64, k: u64, out: &mut Vec<u8>) -> String {
    let control = format!("{tag}{n:09}K{k:02}");
    let specimen = format!("{tag}{n:09}");
    let t = 20261201101500u64 + (k % 40);
    let mut m = String::with_capacity(900);
    let _ = write!(
        m,
        "MSH|^~\\&|ANALYZER|TOXLAB|CUSTODIAN|TOXLAB|{t}||ORU^R01^ORU_R01|{control}|P|2.5.1\r\
         PID|1||{specimen}^^^TOXLAB^SID\r\
         OBR|1|{specimen}^TOXLAB|{specimen}^LAB|DAT^Drugs of abuse testing^L|||20261201083000|||||||20261201090000|URINE|||||A||{t}|||F\r"
    );
    let v = |base: u64| base + (n + k) % 7;
    let rows: Vec<(&str, String, &str)> = if k == 0 {
        vec![
            ("THC50", v(10).to_string(), "ng/mL"),
            ("COC300", v(40).to_string(), "ng/mL"),
            ("OPI2000", v(130).to_string(), "ng/mL"),
            ("AMP1000", v(30).to_string(), "ng/mL"),
            ("PCP25", v(2).to_string(), "ng/mL"),
        ]
    } else {
        vec![
            ("CREA", format!("{}.{}", v(80), k % 10), "mg/dL"),
            ("SG", format!("1.01{}", v(0)), ""),
            ("PH", format!("6.{}", v(0)), "pH"),
            ("NIT", "0".to_string(), "mcg/mL"),
        ]
    };
    for (i, (code, value, unit)) in rows.iter().enumerate() {
        let _ = write!(
            m,
            "OBX|{}|NM|{code}^{code}^L||{value}|{unit}||N|||F|||{t}\r",
            i + 1
        );
    }
    out.clear();
    out.push(0x0b);
    out.extend_from_slice(m.as_bytes());
    out.extend_from_slice(&[0x1c, 0x0d]);
    control
}

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
            return Ok(());
        }
    }
}

/// MSA-1 and MSA-2 of an ACK frame.
fn msa(ack: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(ack);
    let seg = text
        .split(['\r', '\n'])
        .find(|s| s.starts_with("MSA|"))
        .unwrap_or("")
        .to_string();
    let mut f = seg.split('|').skip(1);
    (
        f.next().unwrap_or("").to_string(),
        f.next().unwrap_or("").to_string(),
    )
}

/// What a load produced.
#[derive(Default)]
struct Load {
    sent: u64,
    raw_bytes: u64,
    latencies_us: Vec<u32>,
    elapsed: Duration,
    failures: u64,
    first_failure: Option<String>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
    fn percentile_ms(&self, p: f64) -> f64 {
        let mut v = self.latencies_us.clone();
        v.sort_unstable();
        if v.is_empty() {
            return 0.0;
        }
        f64::from(v[((v.len() as f64 - 1.0) * p).round() as usize]) / 1000.0
    }
}

/// The work of a load: specimens `[from, to)`, `per` messages each, or as many as fit in
/// `secs` (then `to` is a ceiling). `check_echo`: every ACK must be AA for its own MSH-10.
#[derive(Clone, Copy)]
struct Work {
    from: u64,
    to: u64,
    per: u64,
    secs: Option<f64>,
    check_echo: bool,
}

fn load(addr: SocketAddr, tag: &str, conns: usize, work: Work) -> Load {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tag: Arc<str> = Arc::from(tag);
    rt.block_on(async move {
        let started = Instant::now();
        let end = work.secs.map(|s| started + Duration::from_secs_f64(s));
        let tasks: Vec<_> = (0..conns)
            .map(|c| {
                let tag = tag.clone();
                tokio::spawn(async move {
                    let mut r = Load::default();
                    let mut stream = TcpStream::connect(addr).await.expect("connect");
                    let _ = stream.set_nodelay(true);
                    let (mut frame, mut reply) = (Vec::new(), Vec::new());
                    // Connection c sends specimens c, c + conns, ...; each specimen's messages
                    // in order.
                    let mut n = work.from + c as u64;
                    'specimens: while n < work.to {
                        for k in 0..work.per {
                            if end.is_some_and(|e| Instant::now() >= e) {
                                break 'specimens;
                            }
                            let control = message(&tag, n, k, &mut frame);
                            let t0 = Instant::now();
                            stream.write_all(&frame).await.expect("write");
                            read_frame(&mut stream, &mut reply).await.expect("read");
                            r.latencies_us
                                .push(t0.elapsed().as_micros().min(u32::MAX as u128) as u32);
                            r.sent += 1;
                            r.raw_bytes += frame.len() as u64 - 3;
                            let (code, echoed) = msa(&reply);
                            if code != "AA" || (work.check_echo && echoed != control) {
                                r.failures += 1;
                                r.first_failure.get_or_insert_with(|| {
                                    String::from_utf8_lossy(&reply).replace('\r', "\n  ")
                                });
                            }
                        }
                        n += conns as u64;
                    }
                    r
                })
            })
            .collect();
        let mut all = Load::default();
        for t in tasks {
            let r = t.await.unwrap();
            all.sent += r.sent;
            all.raw_bytes += r.raw_bytes;
            all.latencies_us.extend(r.latencies_us);
            all.failures += r.failures;
            if all.first_failure.is_none() {
                all.first_failure = r.first_failure;
            }
        }
        all.elapsed = started.elapsed();
        all
    })
}

// ---------------------------------------------------------------------------------------------
// The references

/// The no-op responder: a child process of this bench (`--noop-responder`).
fn noop_responder() -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        println!("{}", listener.local_addr().unwrap().port());
        const ACK: &[u8] = b"\x0bMSH|^~\\&|NOOP|LAB|ANALYZER|LAB|20261201000000||ACK^R01^ACK|1|P|2.5.1\rMSA|AA|1\r\x1c\r";
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut buf = vec![0u8; 1 << 16];
                let mut pending = 0usize;
                loop {
                    let Ok(n) = s.read(&mut buf[pending..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    pending += n;
                    // One ACK per complete frame.
                    let mut start = 0;
                    while let Some(end) = buf[start..pending]
                        .windows(2)
                        .position(|w| w == [0x1c, 0x0d])
                    {
                        if s.write_all(ACK).await.is_err() {
                            return;
                        }
                        start += end + 2;
                    }
                    buf.copy_within(start..pending, 0);
                    pending -= start;
                }
            });
        }
    })
}

/// Starts a reference server process and reads the port it prints.
fn reference_server(mut command: Command) -> (Child, SocketAddr) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the reference server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port: u16 = line.trim().parse().expect("the reference server's port");
    (child, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Ingest windows per measure (the median window is the measure; all are printed).
const WINDOWS: usize = 3;

/// The median window by rate, after printing every window's rate.
fn median_window(name: &str, mut windows: Vec<Load>) -> Load {
    let rates: Vec<String> = windows.iter().map(|w| format!("{:.0}", w.rate())).collect();
    println!(
        "    {name}: windows of {} msg/s (the median is the measure)",
        rates.join(", ")
    );
    windows.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    windows.swap_remove(windows.len() / 2)
}

fn measure_reference(name: &str, command: Command, s: &Settings) -> Load {
    let (mut child, addr) = reference_server(command);
    let work = Work {
        from: 0,
        to: u64::MAX,
        per: 1,
        secs: Some(s.secs),
        check_echo: false,
    };
    let mut windows = Vec::with_capacity(WINDOWS);
    for _ in 0..WINDOWS {
        let r = load(addr, "REF", s.conns, work);
        assert_eq!(r.failures, 0, "{name}: {:?}", r.first_failure);
        windows.push(r);
    }
    let _ = child.kill();
    let _ = child.wait();
    median_window(name, windows)
}

// ---------------------------------------------------------------------------------------------
// The daemon's figures

/// Allocated bytes of every file under `dir`.
fn disk_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            total += disk_bytes(&e.path());
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

/// Where a store's bytes are: sled's files, and the archive's segments.
fn store_split(store_dir: &Path) -> String {
    let archive = store_dir.join("archive");
    let segments = std::fs::read_dir(&archive)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .count()
        })
        .unwrap_or(0);
    let archived = disk_bytes(&archive);
    format!(
        "sled's files {:.1} MiB, archive {:.1} MiB in {segments} segments",
        mib(disk_bytes(store_dir) - archived),
        mib(archived)
    )
}

/// Waits until the daemon has closed every analyzer connection of the last window (the next
/// window's connections would otherwise meet the cap while the last ones are still closing).
fn connections_closed(daemon: &common::Daemon) {
    let t = Instant::now();
    loop {
        let (_, body) = daemon.get("/metrics", None);
        let open: f64 = body
            .lines()
            .filter(|l| l.starts_with("custodian_analyzer_connections{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        if open == 0.0 {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{open} connections still open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The archive's memory as the daemon's gauges say (its last 10 s sample).
fn reported_memory(daemon: &common::Daemon) -> String {
    let (_, body) = daemon.get("/metrics", None);
    body.lines()
        .filter(|l| {
            l.starts_with("custodian_store_archive_memory_bytes")
                || l.starts_with("custodian_store_archive_cache_bytes")
                || l.starts_with("custodian_store_archive_cache_lookups_total")
        })
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            let v = v.parse::<f64>().ok()?;
            Some(if name.contains("lookups") {
                format!("{name} {v}")
            } else {
                format!("{name} {:.1} MiB", mib(v as u64))
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The group committer's work since the daemon started, as its summaries say: mean writes per
/// durable flush and mean flush time (what an ingest window's rate is made of).
fn reported_commits(daemon: &common::Daemon) -> String {
    let (_, body) = daemon.get("/metrics", None);
    let value = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let flushes = value("custodian_store_flush_seconds_count");
    let batches = value("custodian_store_commit_batch_size_count");
    format!(
        "{:.1} writes per flush, {flushes:.0} flushes of {:.2} ms on average",
        value("custodian_store_commit_batch_size_sum") / batches.max(1.0),
        1000.0 * value("custodian_store_flush_seconds_sum") / flushes.max(1.0),
    )
}

fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn write_config(dir: &Path, conns: usize) {
    let config = common::write_config(dir, &common::analyzer(ANALYZER));
    let text = std::fs::read_to_string(&config).unwrap();
    // The shipped group commit and log level (config/custodian.toml).
    let text = text
        .replace(
            "commit_max_wait_us = 1000",
            "commit_max_batch = 16\ncommit_max_wait_us = 2000",
        )
        .replace("format = \"json\"", "format = \"text\"")
        .replace(
            "path = \"store\"",
            &match std::env::var("CUSTODIAN_BENCH_CACHE_MIB") {
                Ok(mib) => format!("path = \"store\"\ncache_mib = {mib}"),
                Err(_) => "path = \"store\"".to_string(),
            },
        )
        .replace(
            "read_timeout_secs = 30",
            &format!("read_timeout_secs = 30\nmax_connections = {}", conns + 8),
        );
    std::fs::write(&config, text).unwrap();
}

/// Starts timed for each store size, each paired with a start of an empty store (the medians
/// are the measure).
const STARTS: usize = 15;

/// Times of a store's starts and of the empty store's, started alternately.
struct Starts {
    store: Duration,
    empty: Duration,
}

/// Stops the daemon cleanly, starts it again and times the start until `/readyz` says 200,
/// [`STARTS`] times, and as many starts of a daemon on an empty store, the two alternating
/// (the empty one stopped before the other starts): the medians. A single start varies with
/// the machine's state by several milliseconds (its engine's open takes 2 to 7 ms, for an
/// empty store as for a large one), and the machine's state drifts during a run (minutes of
/// growth, the disk's writeback); starts taken side by side see the same machine, so their
/// ratio says what the store's size costs a start. The starts are printed, shortest first.
fn time_to_ready(daemon: &mut common::Daemon, empty: &mut common::Daemon) -> Starts {
    let (mut store, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..STARTS {
        bare.push(time_one_start(empty));
        assert_eq!(empty.term(), Some(0), "{}", empty.log());
        store.push(time_one_start(daemon));
    }
    let median = |took: &mut Vec<Duration>, what: &str| {
        took.sort();
        println!(
            "    starts of {what} (ms, shortest first): {}",
            took.iter()
                .map(|d| format!("{:.1}", d.as_secs_f64() * 1000.0))
                .collect::<Vec<_>>()
                .join(" ")
        );
        took[STARTS / 2]
    };
    Starts {
        empty: median(&mut bare, "the empty store"),
        store: median(&mut store, "this store"),
    }
}

/// Starts the (stopped, or stopped here) daemon and times it until `/readyz` says 200.
fn time_one_start(daemon: &mut common::Daemon) -> Duration {
    if daemon.pid().is_some() {
        assert_eq!(daemon.term(), Some(0), "{}", daemon.log());
    }
    // The disk's writeback of what was written before (the growth's half gigabyte at the
    // large store, seconds old) is finished first, for every store alike: the start's own
    // fsyncs (sled's at its open) would otherwise wait behind it, and the measure would say
    // how busy the disk still was, not what the store's size costs a start.
    let synced = Command::new("sync").status().expect("sync runs");
    assert!(synced.success(), "sync: {synced}");
    let t = Instant::now();
    daemon.start_again();
    loop {
        if daemon.get("/readyz", None).0 == 200 {
            let took = t.elapsed();
            // What the daemon says of its start (store open, ready).
            if let Some(line) = daemon
                .log()
                .lines()
                .rev()
                .find(|l| l.contains("ready") && l.contains("store_opened_ms"))
            {
                let said = |field: &str| {
                    line.split_whitespace()
                        .find_map(|w| w.strip_prefix(field))
                        .unwrap_or("?")
                        .to_string()
                };
                println!(
                    "      {:.1} ms: store opened in {} ms, ready {} ms after run()",
                    took.as_secs_f64() * 1000.0,
                    said("store_opened_ms="),
                    said("took_ms=")
                );
            }
            return took;
        }
        assert!(t.elapsed() < Duration::from_secs(120), "not ready in 120 s");
        std::thread::sleep(Duration::from_millis(1));
    }
}

const DAY: u64 = 86_400_000;
const NOW: u64 = 1_780_272_000_000;

/// On the stopped daemon's store: 1000 released specimens whose retention clock is due, then
/// one sweep, timed.
fn retention_sweep(store_dir: &Path, tag: &str) -> Duration {
    const DUE: usize = 1000;
    let store = Store::open(store_dir).unwrap();
    store
        .transact(|tx| {
            for n in 0..DUE {
                let id = format!("{tag}-RET{n:05}");
                let mut r = SpecimenRecord::new(&id, NOW - 30 * DAY);
                r.state = State::Released;
                r.lifecycle.retention = Some(Retention::new(
                    Basis::AfterReport,
                    NOW - 30 * DAY,
                    SplitBottle::Held,
                ));
                let at = NOW - 23 * DAY;
                r.lifecycle.retention_due_ms = Some(at);
                tx.put(Keyspace::Specimens, id.as_bytes(), &r)?;
                tx.put(
                    Keyspace::ByState,
                    &state_key(State::Released.key(), &id)?,
                    &(),
                )?;
                tx.put(
                    Keyspace::Due,
                    &due_entry_key(at, ClockKind::Retention, &id),
                    &DueItem {
                        kind: ClockKind::Retention,
                        specimen_id: id.clone(),
                    },
                )?;
            }
            Ok::<_, Abort<()>>(())
        })
        .unwrap();
    store.flush_durable().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut settings = Lifecycle::new(Arc::new(ProfileSet::new()), "none");
    settings.retention.after_report_ms = 7 * DAY;
    let settings = Arc::new(settings);
    let committer = GroupCommitter::start(store.clone(), GroupConfig::default()).unwrap();
    let t = Instant::now();
    let report = rt
        .block_on(lifecycle::sweep(&committer, &settings, NOW))
        .unwrap();
    let took = t.elapsed();
    assert_eq!(report.applied(ClockKind::Retention).len(), DUE);
    rt.block_on(committer.shutdown());
    took
}

/// On the stopped daemon's store: a specimen's audit trail as the console and `custodian
/// audit specimen` read it (its entries and its reports'), for the first specimen grown; the
/// median of 5 reads.
fn audit_trail_read(store_dir: &Path) -> Duration {
    let store = Store::open(store_dir).unwrap();
    let (first, _) = store
        .iter::<serde_json::Value>(Keyspace::Specimens)
        .next()
        .unwrap()
        .unwrap();
    let id = String::from_utf8(first).unwrap();
    let mut took: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let trail = custodian::app::daemon::specimen_audit_json(&store, &id).unwrap();
            let took = t.elapsed();
            assert!(!trail["entries"].as_array().unwrap().is_empty());
            took
        })
        .collect();
    took.sort();
    took[2]
}

/// The measures of one store size.
struct Measures {
    specimens: u64,
    messages: u64,
    ingest: Load,
    disk_per_msg: f64,
    raw_per_msg: f64,
    rss: u64,
    grown_rss: u64,
    ready: Starts,
    sweep: Duration,
    trail: Duration,
}

/// Measures the running daemon (whose store holds `specimens`, `messages`, `raw` bytes), then
/// leaves it running on the same store.
fn measure(
    daemon: &mut common::Daemon,
    empty: &mut common::Daemon,
    s: &Settings,
    next: &mut u64,
    stored: &mut (u64, u64),
) -> Measures {
    // The daemon that grew the store has run as long as the growth took (minutes at 1M
    // specimens, seconds at 10k), and its allocator and caches show that uptime: its RSS is
    // shown, not compared. Time to ready restarts it ([`STARTS`] clean restarts); the ingest
    // window and the RSS are then measured on the daemon just started, so that both store
    // sizes are measured after the same work since a start.
    let grown_rss = rss_bytes(daemon.pid().unwrap());
    let ready = time_to_ready(daemon, empty);
    let addr = daemon.addr(ANALYZER);
    let mut windows = Vec::with_capacity(WINDOWS);
    let mut rss = 0;
    for w in 0..WINDOWS {
        if w > 0 {
            connections_closed(daemon);
        }
        let ingest = load(
            addr,
            "E",
            s.conns,
            Work {
                from: *next,
                to: u64::MAX,
                per: s.per,
                secs: Some(s.secs),
                check_echo: true,
            },
        );
        assert_eq!(ingest.failures, 0, "{:?}", ingest.first_failure);
        *next += ingest.sent.div_ceil(s.per) + s.conns as u64;
        stored.0 += ingest.sent;
        stored.1 += ingest.raw_bytes;
        if w == 0 {
            // After the same work since a start at both store sizes.
            rss = rss_bytes(daemon.pid().unwrap());
        }
        windows.push(ingest);
    }
    let ingest = median_window("durable ingest", windows);
    println!("    commits: {}", reported_commits(daemon));
    println!(
        "    RSS {:.0} MiB after the first window (the daemon that grew the store: {:.0} MiB); memory the daemon reports: {}",
        mib(rss),
        mib(grown_rss),
        reported_memory(daemon)
    );
    let store_dir = daemon.dir.join("store");
    let disk = disk_bytes(&store_dir);
    println!(
        "    {} specimens' store: {}",
        *next,
        store_split(&store_dir)
    );
    assert_eq!(daemon.term(), Some(0));
    let sweep = retention_sweep(&store_dir, &format!("T{next}"));
    let trail = audit_trail_read(&store_dir);
    daemon.start_again();
    Measures {
        specimens: 0,
        messages: stored.0,
        ingest,
        disk_per_msg: disk as f64 / stored.0 as f64,
        raw_per_msg: stored.1 as f64 / stored.0 as f64,
        rss,
        grown_rss,
        ready,
        sweep,
        trail,
    }
}

fn grow(daemon: &common::Daemon, s: &Settings, from: u64, to: u64, stored: &mut (u64, u64)) {
    if from >= to {
        // Nothing to grow (a --specimens below what the small store's window reached): no
        // connections, so none are still closing on the daemon when the next load connects.
        return;
    }
    let t = Instant::now();
    // The daemon's RSS and the store's split every 15 s while it grows.
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (done, pid, dir) = (
            done.clone(),
            daemon.pid().unwrap(),
            daemon.dir.join("store"),
        );
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut next = Duration::from_secs(15);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if started.elapsed() >= next {
                    println!(
                        "    at {:>4.0} s: RSS {:.0} MiB; {}",
                        started.elapsed().as_secs_f64(),
                        mib(rss_bytes(pid)),
                        store_split(&dir)
                    );
                    next += Duration::from_secs(15);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let r = load(
        daemon.addr(ANALYZER),
        "G",
        s.conns,
        Work {
            from,
            to,
            per: s.per,
            secs: None,
            check_echo: true,
        },
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(r.failures, 0, "{:?}", r.first_failure);
    stored.0 += r.sent;
    stored.1 += r.raw_bytes;
    println!(
        "  grew {from} -> {to} specimens: {} messages in {:.1} s ({:.0} msg/s)",
        r.sent,
        t.elapsed().as_secs_f64(),
        r.rate()
    );
}

/// Disk per message on a fresh daemon: `specimens` specimens with `per` messages each.
fn disk_case(s: &Settings, specimens: u64, per: u64) -> (f64, f64) {
    let root = tempdir();
    write_config(root.path(), s.conns);
    let mut daemon = common::Daemon::start(root.path());
    let r = load(
        daemon.addr(ANALYZER),
        "D",
        s.conns,
        Work {
            from: 0,
            to: specimens,
            per,
            secs: None,
            check_echo: true,
        },
    );
    assert_eq!(r.failures, 0, "{:?}", r.first_failure);
    assert_eq!(daemon.term(), Some(0));
    let disk = disk_bytes(&root.path().join("store"));
    // Where the bytes are: each keyspace's keys and values as stored, per message.
    let store = Store::open(&root.path().join("store")).unwrap();
    let usage = store.usage().unwrap();
    let each = |b: u64| b as f64 / r.sent as f64;
    let live: u64 = usage.iter().map(|u| u.key_bytes + u.value_bytes).sum();
    let parts: Vec<String> = usage
        .iter()
        .filter(|u| u.keys > 0)
        .map(|u| {
            format!(
                "{} {:.0} ({:.1} keys)",
                u.keyspace,
                each(u.key_bytes + u.value_bytes),
                u.keys as f64 / r.sent as f64
            )
        })
        .collect();
    println!(
        "  {per} message(s) per specimen: keys + values as stored {:.0} B per message ({}); files {:.0} B ({})",
        each(live),
        parts.join(", "),
        each(disk),
        store_split(&root.path().join("store"))
    );
    (
        disk as f64 / r.sent as f64,
        r.raw_bytes as f64 / r.sent as f64,
    )
}

fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("CUSTODIAN_BENCH_DIR") {
        Some(dir) => tempfile::Builder::new()
            .prefix("economy")
            .tempdir_in(dir)
            .unwrap(),
        None => tempfile::Builder::new()
            .prefix("economy")
            .tempdir()
            .unwrap(),
    }
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    if std::env::args().any(|a| a == "--noop-responder") {
        noop_responder();
    }
    let s = settings();
    println!(
        "store_economy: {} connections, {} s windows, {} messages per specimen, small store {} specimens, large {} specimens",
        s.conns, s.secs, s.per, s.small, s.specimens
    );

    let mut refs = None;
    if s.reference {
        let mut noop = Command::new(std::env::current_exe().unwrap());
        noop.arg("--noop-responder");
        let noop = measure_reference("no-op responder", noop, &s);
        let mut py = Command::new("python3");
        py.arg(common::root().join("tests/bench/hl7_null_server.py"));
        let py = measure_reference("python-hl7", py, &s);
        println!(
            "  no-op Rust responder: {:.0} msg/s; python-hl7 asyncio server (stores nothing): {:.0} msg/s",
            noop.rate(),
            py.rate()
        );
        refs = Some((noop.rate(), py.rate()));
    }

    let root = tempdir();
    write_config(root.path(), s.conns);
    let mut daemon = common::Daemon::start(root.path());
    // The empty store whose starts alternate with each measured store's (see
    // [`time_to_ready`]): created by this first start, then stopped.
    let empty_root = tempdir();
    write_config(empty_root.path(), s.conns);
    let mut empty = common::Daemon::start(empty_root.path());
    assert_eq!(empty.term(), Some(0), "{}", empty.log());
    let mut stored = (0u64, 0u64);
    let mut next = 0u64;
    grow(&daemon, &s, 0, s.small, &mut stored);
    next = next.max(s.small);
    let mut small = measure(&mut daemon, &mut empty, &s, &mut next, &mut stored);
    small.specimens = next;
    grow(&daemon, &s, next, s.specimens, &mut stored);
    next = next.max(s.specimens);
    let mut large = measure(&mut daemon, &mut empty, &s, &mut next, &mut stored);
    large.specimens = next;
    let _ = daemon.term();
    if std::env::var_os("CUSTODIAN_BENCH_KEEP").is_some() {
        // For a look at the grown store afterwards (its config and store stay on disk).
        println!("  the large store is kept in {}", root.keep().display());
    }

    let (one_disk, one_raw) = disk_case(&s, s.one, 1);
    let (deep_disk, deep_raw) = disk_case(&s, s.deep, 40);

    println!();
    println!("| measure | small store | large store | ratio large/small |");
    println!("|---|---:|---:|---:|");
    println!(
        "| specimens (messages) | {} ({}) | {} ({}) | |",
        small.specimens, small.messages, large.specimens, large.messages
    );
    let row = |name: &str, a: f64, b: f64, unit: &str| {
        println!(
            "| {name} | {a:.2} {unit} | {b:.2} {unit} | {:.2}x |",
            b / a.max(1e-12)
        );
    };
    row(
        "durable ingest",
        small.ingest.rate(),
        large.ingest.rate(),
        "msg/s",
    );
    row(
        "ACK p50",
        small.ingest.percentile_ms(0.5),
        large.ingest.percentile_ms(0.5),
        "ms",
    );
    row(
        "ACK p99",
        small.ingest.percentile_ms(0.99),
        large.ingest.percentile_ms(0.99),
        "ms",
    );
    row(
        "disk per message",
        small.disk_per_msg,
        large.disk_per_msg,
        "B",
    );
    println!(
        "| disk per message / raw message | {:.2}x of {:.0} B | {:.2}x of {:.0} B | |",
        small.disk_per_msg / small.raw_per_msg,
        small.raw_per_msg,
        large.disk_per_msg / large.raw_per_msg,
        large.raw_per_msg
    );
    row(
        "RSS (a window after a start)",
        mib(small.rss),
        mib(large.rss),
        "MiB",
    );
    row(
        "RSS of the daemon that grew the store (not compared: uptimes differ)",
        mib(small.grown_rss),
        mib(large.grown_rss),
        "MiB",
    );
    println!(
        "| time to ready | {:.1} ms | {:.1} ms | {:.2}x |",
        ms(small.ready.store),
        ms(large.ready.store),
        ms(large.ready.store) / ms(small.ready.store)
    );
    println!(
        "| time to ready of an empty store, its starts alternating with the store's | {:.1} ms | {:.1} ms | |",
        ms(small.ready.empty),
        ms(large.ready.empty),
    );
    println!(
        "| time to ready / the empty store's | {:.2}x | {:.2}x | |",
        ms(small.ready.store) / ms(small.ready.empty),
        ms(large.ready.store) / ms(large.ready.empty),
    );
    row(
        "retention sweep (1000 due)",
        small.sweep.as_secs_f64() * 1000.0,
        large.sweep.as_secs_f64() * 1000.0,
        "ms",
    );
    row(
        "a specimen's audit trail read",
        small.trail.as_secs_f64() * 1000.0,
        large.trail.as_secs_f64() * 1000.0,
        "ms",
    );
    println!();
    println!(
        "disk per message at 1 message per specimen ({} specimens): {:.0} B = {:.2}x the raw message ({:.0} B)",
        s.one,
        one_disk,
        one_disk / one_raw,
        one_raw
    );
    println!(
        "disk per message at 40 messages per specimen ({} specimens): {:.0} B = {:.2}x the raw message ({:.0} B)",
        s.deep,
        deep_disk,
        deep_disk / deep_raw,
        deep_raw
    );
    if let Some((noop, py)) = refs {
        let d = large.ingest.rate().min(small.ingest.rate());
        println!(
            "durable ingest at {} connections: {:.0} msg/s (small) / {:.0} msg/s (large) = {:.2}x / {:.2}x python-hl7's non-storing server ({py:.0} msg/s); machine ceiling (no-op Rust responder) {noop:.0} msg/s, the daemon at {:.1} % of it",
            s.conns,
            small.ingest.rate(),
            large.ingest.rate(),
            small.ingest.rate() / py,
            large.ingest.rate() / py,
            100.0 * d / noop
        );
    }
    println!(
        "Machine: {} CPUs; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
