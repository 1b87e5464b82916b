//! The admin listener cannot starve the analyzers: idle connections beyond `max_connections`
//! are closed (counted), `/healthz` still answers and analyzers still get their ACK even when
//! the daemon has few file descriptors; a connection that sends no request head is closed after
//! `header_timeout_secs`, a keep-alive one after `idle_timeout_secs`; SIGTERM still stops it
//! cleanly with idle connections open.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// The test configuration with these `[admin]` limits.
fn config_with_limits(dir: &Path, limits: &str) {
    let path = write_config(dir, &analyzer("lab"));
    let text = std::fs::read_to_string(&path).unwrap();
    let admin = "[admin]\nlisten = \"127.0.0.1:0\"\n";
    assert!(text.contains(admin));
    std::fs::write(&path, text.replace(admin, &format!("{admin}{limits}\n"))).unwrap();
}

fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `true` once the server has closed the connection (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

/// Reads one HTTP/1.1 response to GET /healthz on a keep-alive connection.
fn healthz_keep_alive(s: &mut TcpStream) -> String {
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&got).ends_with("\r\n\r\nok\n") {
        let n = s.read(&mut buf).expect("response");
        assert!(n > 0, "closed before the answer: {got:?}");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn idle_connections_beyond_the_cap_do_not_starve_healthz_or_the_analyzers() {
    let dir = tempfile::tempdir().unwrap();
    // The header timeout is long: what keeps the daemon answering is the cap, not a timeout.
    config_with_limits(
        dir.path(),
        "max_connections = 8\nheader_timeout_secs = 60\nidle_timeout_secs = 120",
    );
    // Few descriptors, as a small ulimit or a flood of thousands would leave.
    let mut d = Daemon::start_with_nofile(dir.path(), 256);

    let mut idle = Vec::new();
    for _ in 0..400 {
        match TcpStream::connect_timeout(&d.admin, Duration::from_secs(2)) {
            Ok(s) => idle.push(s),
            Err(_) => break,
        }
    }
    assert!(idle.len() > 8, "only {} connections opened", idle.len());
    std::thread::sleep(Duration::from_millis(300));

    let t = Instant::now();
    let (status, body) = d.get("/healthz", None);
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "/healthz took {:?} with {} idle admin connections",
        t.elapsed(),
        idle.len()
    );

    let mut s = TcpStream::connect_timeout(&d.addr("lab"), Duration::from_secs(5))
        .expect("the analyzer listener accepts");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ack = mllp_exchange(
        &mut s,
        &oru("CAP-1", "SPEC-CAP", &[("THC50", "5", "ng/mL")]),
    )
    .expect("an ACK while the admin listener is flooded");
    assert_eq!(ack_code(&ack), "AA");

    // Most of the idle connections were closed by the daemon, and counted.
    let mut still_open = 0;
    for s in idle.iter_mut() {
        if !closed_within(s, Duration::from_millis(20)) {
            still_open += 1;
        }
    }
    assert!(still_open <= 8, "{still_open} idle connections kept open");
    let (_, metrics) = d.get("/metrics", None);
    let refused = counter(&metrics, "custodian_admin_connections_refused_total");
    assert!(
        refused >= (idle.len() - 8) as f64,
        "{refused} refusals counted for {} connections:\n{metrics}",
        idle.len()
    );

    // With idle connections still open, SIGTERM stops the daemon cleanly and promptly.
    let t = Instant::now();
    assert_eq!(d.term(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[test]
fn silent_and_idle_connections_are_closed_after_their_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    config_with_limits(
        dir.path(),
        "max_connections = 16\nheader_timeout_secs = 1\nidle_timeout_secs = 3",
    );
    let mut d = Daemon::start(dir.path());

    // Nothing sent: closed after the header timeout.
    let t = Instant::now();
    let mut silent = TcpStream::connect(d.admin).unwrap();
    assert!(
        closed_within(&mut silent, Duration::from_secs(10)),
        "a silent connection stays open"
    );
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_secs(4),
        "closed after {waited:?}"
    );

    // Half a request head, then nothing: closed after the header timeout too.
    let t = Instant::now();
    let mut partial = TcpStream::connect(d.admin).unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert!(closed_within(&mut partial, Duration::from_secs(10)));
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());

    // Keep-alive: a pause longer than the header timeout but shorter than the idle timeout is
    // fine; a pause past the idle timeout closes it.
    let mut ka = TcpStream::connect(d.admin).unwrap();
    assert!(healthz_keep_alive(&mut ka).starts_with("HTTP/1.1 200"));
    std::thread::sleep(Duration::from_millis(1800));
    assert!(healthz_keep_alive(&mut ka).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    assert!(
        closed_within(&mut ka, Duration::from_secs(10)),
        "an idle keep-alive connection stays open"
    );
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(2500) && waited < Duration::from_secs(6),
        "idle connection closed after {waited:?}"
    );
    assert_eq!(d.get("/healthz", None).0, 200);
    assert_eq!(d.term(), Some(0));
}
