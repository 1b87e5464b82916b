//! Release to receipt: how long a report takes from a certifying scientist's release to the
//! MRO's system having it, next to a bare HTTPS round trip to the same MRO measured in the same
//! run.
//!
//! `cargo bench --bench release_delivery`. The release `custodian` binary runs on a temporary
//! store and configuration with one MRO: a local HTTPS receiver (its own CA, client certificate
//! required, see `tests/common/mro.rs`). Specimens are prepared fast: every accession document
//! is dropped into the LIMS spool at once, then one ORU^R01 per specimen (screen + validity,
//! all negative) over one MLLP connection.
//!
//! Measured:
//!
//! - **one by one**: W warm-up + N specimens released one at a time through
//!   `POST /api/review/{id}/release`; for each, the time from the release call returning (and
//!   from it starting) to the receiver having read the JWS and written its 201, and the
//!   daemon's own record (`delivery.at_ms - released_at_ms`, millisecond resolution). The next
//!   release starts only after the daemon recorded the delivery, so each figure is one report's
//!   latency, not a queue's;
//! - **bare round trip**, interleaved with the releases (after each one): the same JWS POSTed to
//!   the same receiver over a new loopback connection (TCP + TLS 1.3 handshake with the client
//!   certificate + HTTP/1.1), as the daemon does for every delivery, with (a) the daemon's own
//!   client (`transmit::client::MroClient`: tokio, tokio-rustls, hyper) and (b) a blocking
//!   rustls client on `std::net`;
//! - **batch**: B negatives released under one signature (`POST /api/release-batch`): the time
//!   until the last one was answered, deliveries per second, and per-report latency (queueing
//!   included, the sender delivers in release order, one at a time).
//!
//! Settings (environment, or arguments after `--`):
//! - `CUSTODIAN_BENCH_RELEASES` / `--releases 200`: specimens released one by one (measured);
//! - `CUSTODIAN_BENCH_WARMUP` / `--warmup 5`: released one by one before, not measured;
//! - `CUSTODIAN_BENCH_BATCH` / `--batch 100`: specimens of the batch release (0: none);
//! - `CUSTODIAN_BENCH_DIR`: where the temporary store lives (default: the system temp dir).

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/mro.rs"]
mod mro;

use common::{Daemon, TOKEN, VIEWER_TOKEN};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ANALYZER: &str = "bench";
const MRO_ID: &str = "MRO-0042"; // the MRO on the accession example's CCF

struct Settings {
    releases: usize,
    warmup: usize,
    batch: usize,
}

fn settings() -> Settings {
    let env = |k: &str, d: &str| {
        std::env::var(k)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| d.into())
    };
    let mut releases = env("CUSTODIAN_BENCH_RELEASES", "200");
    let mut warmup = env("CUSTODIAN_BENCH_WARMUP", "5");
    let mut batch = env("CUSTODIAN_BENCH_BATCH", "100");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--releases" => releases = value(),
            "--warmup" => warmup = value(),
            "--batch" => batch = value(),
            // `cargo bench` passes `--bench`; a filter word may follow too.
            _ => {}
        }
    }
    Settings {
        releases: releases.parse().expect("--releases: a count"),
        warmup: warmup.parse().expect("--warmup: a count"),
        batch: batch.parse().expect("--batch: a count"),
    }
}

fn fail(what: &str) -> ! {
    eprintln!("release_delivery: {what}");
    std::process::exit(1);
}

// ---------------------------------------------------------------------------------------------
// Preparation

/// Accessions every specimen through the LIMS spool (all documents at once) and sends each one
/// negative screen + validity ORU over one MLLP connection.
fn prepare(d: &Daemon, ids: &[String]) {
    let incoming = d.dir.join("spool/incoming");
    for id in ids {
        let tmp = incoming.join(format!(".acc-{id}.tmp"));
        std::fs::write(&tmp, common::accession_xml_clean(id)).unwrap();
        std::fs::rename(&tmp, incoming.join(format!("acc-{id}.xml"))).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for id in ids {
        let name = format!("acc-{id}.xml");
        loop {
            if d.dir.join("spool/done").join(&name).exists() {
                break;
            }
            if let Ok(r) =
                std::fs::read_to_string(d.dir.join("spool/rejected").join(format!("{name}.reason")))
            {
                fail(&format!("accession of {id} rejected: {r}"));
            }
            if Instant::now() > deadline {
                fail("accession documents not settled in 120 s");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut s = TcpStream::connect(d.addr(ANALYZER)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let _ = s.set_nodelay(true);
    for id in ids {
        let screen = common::oru(
            &format!("{id}-S"),
            id,
            &[
                ("THC50", "0", "ng/mL"),
                ("COC300", "0", "ng/mL"),
                ("OPI2000", "0", "ng/mL"),
                ("AMP1000", "0", "ng/mL"),
                ("PCP25", "0", "ng/mL"),
                ("CREA", "90", "mg/dL"),
                ("PH", "6.2", "pH"),
                ("NIT", "0", "mcg/mL"),
            ],
        );
        let ack = common::mllp_exchange(&mut s, &screen).unwrap_or_default();
        if common::ack_code(&ack) != "AA" {
            fail(&format!("screen of {id} not AA: {ack}"));
        }
    }
    let (_, body) = d.get("/api/specimens?state=ready_for_review", Some(VIEWER_TOKEN));
    let ready: Vec<String> = serde_json::from_str(&body).unwrap_or_default();
    if let Some(missing) = ids.iter().find(|id| !ready.contains(id)) {
        fail(&format!("{missing} is not ready for review"));
    }
}

fn generate_key(config: &Path) {
    let out = std::process::Command::new(common::bin())
        .args(["keys", "generate", "--config"])
        .arg(config)
        .output()
        .unwrap();
    if !out.status.success() {
        fail(&String::from_utf8_lossy(&out.stderr));
    }
}

// ---------------------------------------------------------------------------------------------
// Release and the daemon's record

fn post(d: &Daemon, path: &str, body: serde_json::Value) -> serde_json::Value {
    let r = custodian::admin::client::post(d.admin, path, Some(TOKEN), &body).unwrap();
    if r.status != 200 {
        fail(&format!("POST {path}: {} {}", r.status, r.body));
    }
    serde_json::from_str(&r.body).unwrap()
}

fn report_ids(released: &serde_json::Value) -> Vec<String> {
    released["released"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["report_id"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until the daemon recorded the delivery; its own latency (released → recorded), ms.
fn recorded(d: &Daemon, report_id: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = d.get(&format!("/api/reports/{report_id}"), Some(VIEWER_TOKEN));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if v["delivery"]["status"] == "delivered" {
            let at = v["delivery"]["at_ms"].as_u64().unwrap();
            let released = v["released_at_ms"].as_u64().unwrap();
            return at.saturating_sub(released) as f64;
        }
        if v["delivery"]["status"] == "dead_letter" {
            fail(&format!("{report_id} became a dead letter: {body}"));
        }
        if Instant::now() > deadline {
            fail(&format!(
                "{report_id}: delivery not recorded in 30 s: {body}"
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `name_sum` and `name_count` of a histogram/summary in the daemon's `/metrics`.
fn sum_count(d: &Daemon, name: &str) -> (f64, f64) {
    let (_, text) = d.get("/metrics", None);
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

// ---------------------------------------------------------------------------------------------
// Bare round trips

/// A blocking rustls client with the laboratory's client certificate.
fn bare_config(p: &mro::Pki) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(p.mro_ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(
            p.client_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.client_key.clone())),
        )
        .unwrap();
    Arc::new(cfg)
}

/// One POST over a new connection; the status.
fn bare_post(cfg: &Arc<rustls::ClientConfig>, port: u16, jws: &str, key: &str) -> u16 {
    let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let _ = sock.set_nodelay(true);
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let req = format!(
        "POST /reports HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/jose\r\nIdempotency-Key: {key}\r\nContent-Length: {}\r\n\r\n{jws}",
        jws.len()
    );
    tls.write_all(req.as_bytes()).unwrap();
    tls.flush().unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..pos]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or(0);
            if buf.len() >= pos + 4 + len {
                return head
                    .split_whitespace()
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            }
        }
        match tls.read(&mut chunk) {
            Ok(0) => return 0,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => fail(&format!("bare POST: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Figures

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `later - earlier` in ms, negative when `later` came first.
fn signed_ms(later: Instant, earlier: Instant) -> f64 {
    match later.checked_duration_since(earlier) {
        Some(d) => ms(d),
        None => -ms(earlier - later),
    }
}

struct Stats {
    n: usize,
    p50: f64,
    p90: f64,
    p99: f64,
    min: f64,
    max: f64,
    mean: f64,
}

fn stats(values: &[f64]) -> Stats {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |p: f64| {
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() as f64 - 1.0) * p).round() as usize]
        }
    };
    Stats {
        n: v.len(),
        p50: at(0.50),
        p90: at(0.90),
        p99: at(0.99),
        min: v.first().copied().unwrap_or(0.0),
        max: v.last().copied().unwrap_or(0.0),
        mean: v.iter().sum::<f64>() / v.len().max(1) as f64,
    }
}

fn row(what: &str, s: &Stats) {
    println!(
        "| {what:<62} | {:>4} | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.2} | {:>7.2} |",
        s.n, s.p50, s.p90, s.p99, s.min, s.max, s.mean
    );
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() {
    let s = settings();
    let started = Instant::now();
    let load_before = loadavg();
    let root = match std::env::var_os("CUSTODIAN_BENCH_DIR") {
        Some(dir) => tempfile::Builder::new()
            .prefix("release-bench")
            .tempdir_in(dir)
            .unwrap(),
        None => tempfile::Builder::new()
            .prefix("release-bench")
            .tempdir()
            .unwrap(),
    };
    let p = mro::pki(root.path());
    let rx = mro::receiver(&p);
    let config = common::write_config(
        root.path(),
        &format!(
            "{}\n{}",
            common::analyzer(ANALYZER),
            mro::mro_section(&p, rx.port, MRO_ID, 30)
        ),
    );
    generate_key(&config);
    let mut daemon = Daemon::start(root.path());

    let one_by_one = s.warmup + s.releases;
    let ids: Vec<String> = (0..one_by_one + s.batch)
        .map(|i| format!("SPEC-RB{i:05}"))
        .collect();
    let t = Instant::now();
    prepare(&daemon, &ids);
    let prepared_in = t.elapsed();
    eprintln!(
        "release_delivery: daemon {} | {} specimens prepared in {:.1} s (LIMS spool + 1 ORU each) | {} warm-up + {} one by one, batch of {}",
        common::bin().display(),
        ids.len(),
        prepared_in.as_secs_f64(),
        s.warmup,
        s.releases,
        s.batch
    );

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let endpoint = format!("https://127.0.0.1:{}/reports", rx.port);
    let mro_client = custodian::transmit::client::MroClient::new(
        &endpoint,
        &p.mro_ca,
        &p.lab_client_cert,
        &p.lab_client_key,
        Duration::from_secs(30),
    )
    .unwrap();
    let bare = bare_config(&p);

    // One by one, each followed by the two bare round trips.
    let mut from_return = Vec::new();
    let mut from_call = Vec::new();
    let mut api_call = Vec::new();
    let mut daemon_recorded = Vec::new();
    let mut bare_hyper = Vec::new();
    let mut bare_blocking = Vec::new();
    let mut all_reports = Vec::new();
    for (i, id) in ids[..one_by_one].iter().enumerate() {
        let t0 = Instant::now();
        let released = post(
            &daemon,
            &format!("/api/review/{id}/release"),
            serde_json::json!({}),
        );
        let t1 = Instant::now();
        let report_id = report_ids(&released).remove(0);
        let Some(answered) = rx.wait_answered_2xx(&report_id, Duration::from_secs(30)) else {
            fail(&format!("{report_id} not received in 30 s"));
        };
        let own = recorded(&daemon, &report_id);
        let jws = rx.with_key(&report_id).remove(0).body;

        let b0 = Instant::now();
        let answer = rt
            .block_on(mro_client.post(&jws, &format!("BARE-H-{i}")))
            .unwrap_or_else(|e| fail(&format!("bare POST (MroClient): {e}")));
        let b1 = Instant::now();
        if answer.status != 201 {
            fail(&format!("bare POST (MroClient) answered {}", answer.status));
        }
        let c0 = Instant::now();
        let status = bare_post(&bare, rx.port, &jws, &format!("BARE-B-{i}"));
        let c1 = Instant::now();
        if status != 201 {
            fail(&format!("bare POST (blocking) answered {status}"));
        }
        all_reports.push(report_id);
        if i < s.warmup {
            continue;
        }
        from_return.push(signed_ms(answered, t1));
        from_call.push(signed_ms(answered, t0));
        api_call.push(ms(t1 - t0));
        daemon_recorded.push(own);
        bare_hyper.push(ms(b1 - b0));
        bare_blocking.push(ms(c1 - c0));
    }
    let (req_sum, req_count) = sum_count(&daemon, "custodian_delivery_request_seconds");

    // One batch.
    let mut batch = None;
    if s.batch > 0 {
        let t0 = Instant::now();
        let released = post(
            &daemon,
            "/api/release-batch",
            serde_json::json!({ "specimens": ids[one_by_one..] }),
        );
        let t1 = Instant::now();
        let reports = report_ids(&released);
        let mut per_report = Vec::new();
        let mut last = t1;
        for r in &reports {
            let Some(at) = rx.wait_answered_2xx(r, Duration::from_secs(60)) else {
                fail(&format!("{r} of the batch not received in 60 s"));
            };
            per_report.push(signed_ms(at, t1));
            last = last.max(at);
        }
        let mut own = Vec::new();
        for r in &reports {
            own.push(recorded(&daemon, r));
        }
        all_reports.extend(reports.iter().cloned());
        batch = Some((ms(t1 - t0), signed_ms(last, t1), per_report, own));
    }

    // Every report reached the MRO exactly once, with no retry.
    let requests = rx.requests();
    for r in &all_reports {
        let tries: Vec<_> = requests
            .iter()
            .filter(|q| &q.idempotency_key == r)
            .collect();
        if tries.len() != 1 || tries[0].answered.map(|(s, _)| s) != Some(201) {
            fail(&format!(
                "{r}: {} tries at the MRO (expected one 201)",
                tries.len()
            ));
        }
    }
    let _ = daemon.term();
    let load_after = loadavg();

    println!();
    println!(
        "| measured (ms)                                                  |    n |     p50 |     p90 |     p99 |     min |     max |    mean |"
    );
    println!(
        "|----------------------------------------------------------------|-----:|--------:|--------:|--------:|--------:|--------:|--------:|"
    );
    let receipt = stats(&from_return);
    row(
        "release → MRO answered 201, from the release call returning",
        &receipt,
    );
    row(
        "release → MRO answered 201, from the release call starting",
        &stats(&from_call),
    );
    row(
        "release API call (sign + durable commit + answer)",
        &stats(&api_call),
    );
    row(
        "daemon's own record: released_at → delivery at (1 ms steps)",
        &stats(&daemon_recorded),
    );
    let hyper = stats(&bare_hyper);
    let blocking = stats(&bare_blocking);
    row("bare HTTPS round trip, daemon's client (MroClient)", &hyper);
    row("bare HTTPS round trip, blocking rustls client", &blocking);
    if let Some((call, drain, per_report, own)) = &batch {
        let n = per_report.len();
        row(
            &format!("batch of {n}: release → each MRO 201, from the call returning"),
            &stats(per_report),
        );
        row(
            &format!("batch of {n}: daemon's own record, released_at → delivery at"),
            &stats(own),
        );
        println!();
        println!(
            "Batch of {n}: release call {call:.1} ms; last report answered {drain:.1} ms after it returned: {:.0} deliveries/s (one sender per MRO, one at a time, in release order).",
            n as f64 / (drain.max(0.001) / 1000.0)
        );
    }
    println!();
    let start = stats(&from_call);
    println!(
        "| ratio to a bare round trip (p50 / p99)       | vs MroClient        | vs blocking rustls  |\n|---|---:|---:|"
    );
    for (what, r) in [
        ("release → receipt, from the call returning", &receipt),
        ("release → receipt, from the call starting", &start),
    ] {
        println!(
            "| {what} | {:.2}x / {:.2}x | {:.2}x / {:.2}x |",
            r.p50 / hyper.p50,
            r.p99 / hyper.p99,
            r.p50 / blocking.p50,
            r.p99 / blocking.p99,
        );
    }
    println!(
        "(The sender is woken when the release commits, so the delivery runs while the release's HTTP answer travels back: measured from the call returning, the receipt can come first, hence negative minima.)"
    );
    println!();
    let half = from_call.len() / 2;
    println!(
        "Drift (release → receipt from the call starting, p50): first half {:.2} ms, second half {:.2} ms.",
        stats(&from_call[..half]).p50,
        stats(&from_call[half..]).p50
    );
    println!(
        "Daemon's POST time (custodian_delivery_request_seconds, one-by-one phase incl. warm-up): mean {:.2} ms over {req_count:.0}.",
        if req_count > 0.0 {
            req_sum / req_count * 1000.0
        } else {
            0.0
        }
    );
    println!(
        "Every report: one POST, answered 201, no retry. Each delivery and each bare round trip opens a new connection (TCP + TLS 1.3 with client certificate + HTTP/1.1) to the same receiver, which answers after reading the whole JWS ({} B).",
        rx.requests().first().map_or(0, |r| r.body.len())
    );
    println!(
        "Machine: {} CPUs; load average (1/5/15 min) {load_before} before, {load_after} after. Whole run {:.1} s.",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
}
