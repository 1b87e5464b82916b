//! Listener limits: the per-analyzer connection cap, the read timeout, the frame size limit.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn limited(dir: &std::path::Path) -> Daemon {
    let cfg = write_config(dir, &analyzer("lab"));
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "read_timeout_secs = 30",
        "read_timeout_secs = 1\nmax_connections = 2\nmax_frame_bytes = 4096",
    );
    std::fs::write(&cfg, text).unwrap();
    Daemon::start(dir)
}

/// True when the peer closed the connection (EOF or reset) within `within`.
fn closed_by_peer(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        // A timeout of our own read is not a close by the peer.
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn connections_beyond_the_cap_are_refused_and_the_others_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let d = limited(dir.path());
    let a = d.addr("lab");
    let mut c1 = TcpStream::connect(a).unwrap();
    let mut c2 = TcpStream::connect(a).unwrap();
    // Both are served.
    assert_eq!(
        ack_code(
            &mllp_exchange(&mut c1, &oru("C-1", "SPEC-C", &[("THC50", "1", "ng/mL")])).unwrap()
        ),
        "AA"
    );
    assert_eq!(
        ack_code(
            &mllp_exchange(&mut c2, &oru("C-2", "SPEC-C", &[("COC300", "1", "ng/mL")])).unwrap()
        ),
        "AA"
    );
    // A third is closed at once, without an answer.
    let mut c3 = TcpStream::connect(a).unwrap();
    c3.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = c3.write_all(&[0x0b]);
    let mut b = [0u8; 16];
    let r = c3.read(&mut b);
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "the third connection is refused: {r:?}"
    );
    let (_, metrics) = d.get("/metrics", None);
    assert!(
        metrics.contains("custodian_analyzer_connections_refused_total{analyzer=\"lab\"} 1"),
        "{metrics}"
    );
    // Closing one frees a place.
    drop(c1);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(ack) = send(a, &oru("C-3", "SPEC-C", &[("PCP25", "1", "ng/mL")])) {
            assert_eq!(ack_code(&ack), "AA");
            break;
        }
        assert!(Instant::now() < deadline, "a place was not freed");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(c2);
}

#[test]
fn a_silent_connection_is_closed_after_the_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let d = limited(dir.path());
    let mut c = TcpStream::connect(d.addr("lab")).unwrap();
    let started = Instant::now();
    assert!(
        closed_by_peer(&mut c, Duration::from_secs(10)),
        "closed by the daemon"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(8),
        "closed after about 1 s: {waited:?}"
    );
}

#[test]
fn an_oversized_frame_is_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let d = limited(dir.path());
    let mut obx = Vec::new();
    let big = "9".repeat(60);
    for _ in 0..80 {
        obx.push(("THC50", big.as_str(), "ng/mL"));
    }
    let msg = oru("F-1", "SPEC-F", &obx);
    assert!(msg.len() > 4096);
    let mut c = TcpStream::connect(d.addr("lab")).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let answer = mllp_exchange(&mut c, &msg);
    assert!(
        answer.is_none(),
        "no ACK for a frame over the limit: {answer:?}"
    );
    assert!(d.specimen("SPEC-F").is_none());
    let (_, metrics) = d.get("/metrics", None);
    assert!(
        metrics.contains("custodian_mllp_framing_errors_total{analyzer=\"lab\"} 1"),
        "{metrics}"
    );
    // The daemon keeps answering.
    assert_eq!(
        ack_code(
            &send(
                d.addr("lab"),
                &oru("F-2", "SPEC-F", &[("THC50", "1", "ng/mL")])
            )
            .unwrap()
        ),
        "AA"
    );
}
