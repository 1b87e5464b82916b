//! A durable flush that fails must never be acknowledged AA.
//!
//! In process (library level): a real store in a temporary directory, the group committer,
//! custody, the analyzer handler with the test mapping and the real MLLP listener on port 0; the
//! store's fault injector makes a flush fail. Then through the real daemon with its store on a
//! tiny tmpfs that fills up.

mod common;
use common::*;
use custodian::codec::hl7::Mapping;
use custodian::core::clock::SystemClock;
use custodian::custody::Custody;
use custodian::domain::specimen::SpecimenRecord;
use custodian::ingest::analyzer::AnalyzerHandler;
use custodian::ingest::listener::{self, ListenerSettings};
use custodian::store::{GroupCommitter, GroupConfig, Store};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The ingestion pipeline of one analyzer, in process.
struct Pipeline {
    rt: tokio::runtime::Runtime,
    store: Store,
    committer: GroupCommitter,
    addr: SocketAddr,
    shutdown: CancellationToken,
    serve: Option<tokio::task::JoinHandle<()>>,
}

impl Pipeline {
    fn start(store_dir: &Path) -> Pipeline {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let store = Store::open(store_dir).unwrap();
        let committer = GroupCommitter::start(
            store.clone(),
            GroupConfig {
                max_wait: Duration::from_micros(500),
                ..GroupConfig::default()
            },
        )
        .unwrap();
        let mut problems = Vec::new();
        let profiles =
            custodian::app::config::load_profiles(&root().join("config/profiles"), &mut problems);
        assert!(problems.is_empty(), "profiles: {problems:?}");
        let custody = Custody::new(
            committer.clone(),
            Arc::new(profiles),
            "part40-2001",
            Arc::new(SystemClock),
        );
        let mapping = Mapping::from_analyzer_toml(LAB_MAPPING).expect("the test mapping parses");
        let handler = Arc::new(AnalyzerHandler::new("lab", mapping, custody));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let settings = ListenerSettings {
            analyzer: Arc::from("lab"),
            max_frame_bytes: 1 << 20,
            read_timeout: Duration::from_secs(30),
            max_connections: 16,
            handshake_timeout: Duration::from_secs(5),
            tls: None,
        };
        let shutdown = CancellationToken::new();
        let serve = rt.spawn(listener::serve(
            listener,
            settings,
            handler,
            shutdown.clone(),
        ));
        Pipeline {
            rt,
            store,
            committer,
            addr,
            shutdown,
            serve: Some(serve),
        }
    }

    /// The stored record of `specimen` as JSON (what the admin API shows).
    fn specimen(&self, specimen: &str) -> Option<serde_json::Value> {
        custodian::custody::records::read_specimen(&self.store, specimen)
            .unwrap()
            .map(|r: SpecimenRecord| serde_json::to_value(r).unwrap())
    }

    fn stored(&self, specimen: &str, control_id: &str) -> Vec<(String, String)> {
        self.specimen(specimen)
            .map(|r| results_from(&r, control_id))
            .unwrap_or_default()
    }

    /// Stops the listener and the committer and releases the store.
    fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(serve) = self.serve.take() {
            self.rt
                .block_on(async { tokio::time::timeout(Duration::from_secs(10), serve).await })
                .expect("the listener stops within 10 s")
                .unwrap();
        }
        self.rt.block_on(self.committer.shutdown());
    }
}

fn screen(control_id: &str, specimen: &str, thc: &str) -> Vec<u8> {
    oru(
        control_id,
        specimen,
        &[("THC50", thc, "ng/mL"), ("COC300", "7", "ng/mL")],
    )
}

fn expected(thc: &str) -> Vec<(String, String)> {
    vec![
        ("marijuana".to_string(), thc.to_string()),
        ("cocaine".to_string(), "7".to_string()),
    ]
}

#[test]
fn a_failed_flush_is_answered_ae_and_the_resend_is_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    let p = Pipeline::start(&store_dir);

    p.store.fault_injector().fail_next_flush();
    let ack = send(p.addr, &screen("F-1", "SPF-1", "31")).expect("an answer");
    assert_eq!(ack_code(&ack), "AE", "a failed flush is never AA: {ack}");
    assert_eq!(ack_control_id(&ack), "F-1");
    assert!(ack.contains("ERR|"), "{ack}");
    assert!(ack.contains("not stored durably"), "{ack}");
    assert!(
        !p.store.fault_injector().is_armed(),
        "the fault was consumed by the message's flush"
    );

    // The listener keeps answering and the next message is durable.
    let ack = send(p.addr, &screen("F-2", "SPF-2", "32")).expect("an answer");
    assert_eq!(ack_code(&ack), "AA", "{ack}");
    assert_eq!(p.stored("SPF-2", "F-2"), expected("32"));

    // The analyzer sends the refused message again: AA, stored exactly once (its earlier
    // commit may exist; dedupe keeps it single).
    let ack = send(p.addr, &screen("F-1", "SPF-1", "31")).expect("an answer");
    assert_eq!(ack_code(&ack), "AA", "{ack}");
    assert_eq!(p.stored("SPF-1", "F-1"), expected("31"));
    let ack = send(p.addr, &screen("F-1", "SPF-1", "31")).expect("an answer");
    assert_eq!(ack_code(&ack), "AA", "{ack}");
    assert_eq!(p.stored("SPF-1", "F-1"), expected("31"));

    // Both are in the store after it is reopened, and the audit chain is whole.
    p.stop();
    let store = Store::open(&store_dir).unwrap();
    for (s, id, thc) in [("SPF-1", "F-1", "31"), ("SPF-2", "F-2", "32")] {
        let rec = custodian::custody::records::read_specimen(&store, s)
            .unwrap()
            .unwrap();
        assert_eq!(
            results_from(&serde_json::to_value(rec).unwrap(), id),
            expected(thc)
        );
    }
    assert!(store.verify_audit().is_ok());
}

#[test]
fn a_failed_fsync_keeps_answering_ae_until_the_store_is_reopened() {
    let tmp = tempfile::tempdir().unwrap();
    let store_dir = tmp.path().join("store");
    let p = Pipeline::start(&store_dir);
    let ack = send(p.addr, &screen("G-0", "SPG-0", "40")).expect("an answer");
    assert_eq!(ack_code(&ack), "AA", "{ack}");

    // A real fsync failure: nothing written afterwards can be promised durable, so every later
    // message is AE, and the listener still answers each one.
    p.store.fault_injector().fail_next_fsync();
    for (i, id) in ["G-1", "G-2", "G-3"].iter().enumerate() {
        let ack = send(p.addr, &screen(id, "SPG-1", &format!("4{}", i + 1))).expect("an answer");
        assert_eq!(ack_code(&ack), "AE", "{id}: {ack}");
        assert!(ack.contains("not stored durably"), "{ack}");
    }
    // Even a message already stored is not re-acknowledged while durability is lost.
    let ack = send(p.addr, &screen("G-0", "SPG-0", "40")).expect("an answer");
    assert_eq!(ack_code(&ack), "AE", "{ack}");
    assert!(p.store.durability_lost().is_some());
    p.stop();

    // After a restart every resend is AA and stored once.
    let p = Pipeline::start(&store_dir);
    assert!(p.store.durability_lost().is_none());
    for (i, id) in ["G-1", "G-2", "G-3"].iter().enumerate() {
        let thc = format!("4{}", i + 1);
        let ack = send(p.addr, &screen(id, "SPG-1", &thc)).expect("an answer");
        assert_eq!(ack_code(&ack), "AA", "{id}: {ack}");
        assert_eq!(p.stored("SPG-1", id), expected(&thc), "{id}");
    }
    assert_eq!(p.stored("SPG-0", "G-0"), expected("40"));
    assert!(p.store.verify_audit().is_ok());
    p.stop();
}

// ---- The real daemon with its store on a tiny file system --------------------------------------

/// A tmpfs mounted for the test; unmounted when dropped (after the daemon using it).
struct TmpfsMount(std::path::PathBuf);

impl TmpfsMount {
    fn mount(dir: &Path, size: &str) -> TmpfsMount {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "this test needs to mount a tmpfs (run as root, or with CAP_SYS_ADMIN): mount -t tmpfs \
             -o size={size} tmpfs {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        TmpfsMount(dir.to_path_buf())
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            // Still busy (a process of ours holding a file): detach it lazily.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// An ORU carrying a large note, so each message takes room in the store: letters and digits
/// from a generator seeded by the control ID, which the store's compression cannot shrink
/// (a note of one repeated letter compressed to almost nothing, and filling the file system
/// took thousands of messages).
fn bulky(control_id: &str, specimen: &str, pad: usize) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut m = oru(control_id, specimen, &[("CREA", "85", "mg/dL")]);
    m.extend_from_slice(b"NTE|1||");
    let mut x = control_id.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    });
    m.extend((0..pad).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ALPHABET[(x % ALPHABET.len() as u64) as usize]
    }));
    m.push(b'\r');
    m
}

#[test]
fn a_full_file_system_gets_ae_not_aa_large_messages() {
    full_file_system("4m", 16 * 1024);
}

#[test]
fn a_full_file_system_gets_ae_not_aa_small_messages() {
    full_file_system("1m", 200);
}

/// Fills a tmpfs of `size` holding the daemon's store with messages carrying `pad` bytes of
/// note until one is answered AE: never AA for what could not be stored, the daemon keeps
/// answering; after the file system is grown and the daemon restarted, everything AA'd is there
/// once and the refused messages are stored once when sent again.
fn full_file_system(size: &str, pad: usize) {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &analyzer("lab"));
    // The store (and only the store) lives on the tiny file system; the harness finds the
    // runtime file beside it, on the ordinary one.
    let _mount = TmpfsMount::mount(&dir.path().join("store"), size);
    let mut d = Daemon::start(dir.path());
    let a = d.addr("lab");
    let started = Instant::now();

    let mut acked: Vec<String> = Vec::new();
    let mut refusal = None;
    for n in 0..20_000 {
        let id = format!("FS-{n:05}");
        let specimen = format!("SPFS-{}", n % 50);
        let ack = send(a, &bulky(&id, &specimen, pad))
            .unwrap_or_else(|| panic!("{id}: no answer; log:\n{}", d.log()));
        match ack_code(&ack).as_str() {
            "AA" => acked.push(id),
            "AE" => {
                assert!(ack.contains("not stored durably"), "{ack}");
                refusal = Some(id);
                break;
            }
            other => panic!("{id}: unexpected {other}: {ack}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the {size} file system never filled"
        );
    }
    let refused = refusal.expect("the file system filled up and a message was answered AE");
    assert!(!acked.is_empty(), "some messages fit before it filled");
    eprintln!("{} messages AA before {refused} got AE", acked.len());

    // The daemon is still up and answering: health, and further messages are answered (AE)
    // rather than left hanging.
    assert!(d.is_running(), "the daemon stays up; log:\n{}", d.log());
    assert_eq!(d.get("/healthz", None).0, 200);
    for n in 0..3 {
        let id = format!("FS-late-{n}");
        let ack = send(a, &bulky(&id, "SPFS-late", 16)).expect("an answer");
        assert_eq!(ack_code(&ack), "AE", "{id}: {ack}");
    }
    // What was acknowledged before is shown as it was, or — sled may have to write to read
    // (a leaf it splits on the way), which the full disk refuses — the read is refused naming
    // the store's I/O error, or refused because the read's audit entry cannot be written; it is
    // never shown without its results. After the restart below
    // every acknowledged result is read back.
    let last = acked.last().unwrap();
    let n: usize = last[3..].parse().unwrap();
    let (status, body) = d.get(&format!("/api/specimens/SPFS-{}", n % 50), Some(TOKEN));
    match status {
        200 => {
            let rec: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(
                results_from(&rec, last),
                vec![("creatinine".to_string(), "85".to_string())]
            );
        }
        500 => assert!(body.contains("store I/O error"), "{body}"),
        // A read of donor data is audited before it is answered; the full disk refuses the
        // audit entry, so nothing is given.
        503 => assert!(body.contains("could not be audited"), "{body}"),
        other => panic!("GET specimen answered {other}: {body}"),
    }
    assert!(d.is_running(), "the daemon stays up; log:\n{}", d.log());

    // The operator grows the file system and restarts: everything acknowledged is there once;
    // what was refused may or may not be, never twice, and is stored once when sent again.
    d.kill9();
    let out = Command::new("mount")
        .args(["-o", "remount,size=32m"])
        .arg(dir.path().join("store"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "remount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.restart();
    let a = d.addr("lab");
    let specimen_of = |id: &str| -> String {
        match id.strip_prefix("FS-late-") {
            Some(_) => "SPFS-late".to_string(),
            None => format!("SPFS-{}", id[3..].parse::<usize>().unwrap() % 50),
        }
    };
    let creatinine = vec![("creatinine".to_string(), "85".to_string())];
    let mut records = std::collections::BTreeMap::new();
    for id in &acked {
        let s = specimen_of(id);
        let rec = records
            .entry(s.clone())
            .or_insert_with(|| d.specimen(&s).expect("specimen of an AA'd message"));
        assert_eq!(results_from(rec, id), creatinine, "{id} was AA");
    }
    let refused: Vec<String> = std::iter::once(refused)
        .chain((0..3).map(|n| format!("FS-late-{n}")))
        .collect();
    for id in &refused {
        let got = d
            .specimen(&specimen_of(id))
            .map(|r| results_from(&r, id))
            .unwrap_or_default();
        assert!(got.is_empty() || got == creatinine, "{id}: {got:?}");
        let pad = if id.starts_with("FS-late-") { 16 } else { pad };
        let ack = send(a, &bulky(id, &specimen_of(id), pad)).expect("an answer");
        assert_eq!(
            ack_code(&ack),
            "AA",
            "{id} sent again after the restart: {ack}"
        );
        let rec = d.specimen(&specimen_of(id)).unwrap();
        assert_eq!(results_from(&rec, id), creatinine, "{id}");
    }
    assert_eq!(d.term(), Some(0));
    let out = d.cli(&["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("\"ok\": true"), "{stdout}");
}

/// The real binary on a file system that fills up: once the store lost durability `/readyz`
/// answers 503 with the reason (while `/healthz` stays 200), and after
/// `exit_after_durability_lost_secs` the daemon exits non-zero by itself (systemd's
/// Restart=on-failure starts it again). After the file system is grown and the daemon started
/// again, everything it acknowledged is there.
#[test]
fn a_full_file_system_makes_the_daemon_unready_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &analyzer("lab"));
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "path = \"store\"\n",
        "path = \"store\"\nexit_after_durability_lost_secs = 2\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let _mount = TmpfsMount::mount(&dir.path().join("store"), "1m");
    let mut d = Daemon::start(dir.path());
    assert_eq!(d.get("/readyz", None).0, 200);
    let a = d.addr("lab");
    let started = Instant::now();
    let mut acked = Vec::new();
    let refusal = loop {
        let id = format!("FX-{:05}", acked.len());
        let ack = send(a, &bulky(&id, "SPFX-1", 200))
            .unwrap_or_else(|| panic!("{id}: no answer; log:\n{}", d.log()));
        match ack_code(&ack).as_str() {
            "AA" => acked.push(id),
            "AE" => break ack,
            other => panic!("{id}: unexpected {other}: {ack}"),
        }
        assert!(started.elapsed() < Duration::from_secs(60), "never filled");
    };
    assert!(!acked.is_empty());
    let (status, body) = d.get("/readyz", None);
    assert_eq!(
        status,
        503,
        "not ready once durability is lost: {body}; the AE: {refusal}; log:\n{}",
        d.log()
    );
    assert!(body.contains("cannot be made durable"), "{body}");
    assert_eq!(d.get("/healthz", None).0, 200);

    // It exits by itself, non-zero.
    let mut child = d.child.take().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "still running; log:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success(), "exit status {status}; log:\n{}", d.log());
    assert!(d.log().contains("lost durability"), "{}", d.log());

    // The operator (or systemd, once the disk has room) starts it again: all AA'd are there.
    let out = Command::new("mount")
        .args(["-o", "remount,size=32m"])
        .arg(dir.path().join("store"))
        .output()
        .unwrap();
    assert!(out.status.success());
    d.restart();
    assert_eq!(d.get("/readyz", None).0, 200);
    let rec = d.specimen("SPFX-1").expect("the AA'd specimen");
    for id in &acked {
        assert_eq!(
            results_from(&rec, id),
            vec![("creatinine".to_string(), "85".to_string())],
            "{id} was AA"
        );
    }
    assert_eq!(d.term(), Some(0));
}
