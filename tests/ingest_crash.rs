//! Crash safety of ingestion through the real daemon: SIGKILL at random moments while several
//! analyzers send, and SIGTERM under load. What was acknowledged AA must be stored exactly once
//! after a restart; what was answered AE/AR must have attached nothing; what got no answer may
//! or may not be stored, but never twice.

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const CLIENTS: usize = 4;
const KILL_ROUNDS: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A usable ORU: AA once stored.
    Good,
    /// An ORU with a mapped and an unmapped test code: AE, nothing attached.
    Unmapped,
    /// Not an ORU (ADT^A01 carrying OBR/OBX): AR, nothing attached.
    NotOru,
}

#[derive(Debug, Clone)]
struct Msg {
    id: String,
    specimen: String,
    kind: Kind,
    /// (code, value, unit) of the OBX segments.
    obx: Vec<(String, String, String)>,
}

impl Msg {
    /// Message `n` of client `c`: every 7th is unmapped (AE), every 11th not an ORU (AR); the
    /// rest are screens with values derived from (c, n), spread over 3 specimens per client.
    fn new(c: usize, n: usize) -> Msg {
        let kind = if n % 11 == 10 {
            Kind::NotOru
        } else if n % 7 == 6 {
            Kind::Unmapped
        } else {
            Kind::Good
        };
        let v = |k: usize| ((c * 1000 + n * 7 + k * 13) % 997).to_string();
        let obx = match kind {
            Kind::Good => {
                let codes: &[(&str, &str)] = match n % 3 {
                    0 => &[
                        ("THC50", "ng/mL"),
                        ("COC300", "ng/mL"),
                        ("OPI2000", "ng/mL"),
                    ],
                    1 => &[("AMP1000", "ng/mL"), ("PCP25", "ng/mL")],
                    _ => &[("CREA", "mg/dL")],
                };
                codes
                    .iter()
                    .enumerate()
                    .map(|(k, (code, unit))| (code.to_string(), v(k), unit.to_string()))
                    .collect()
            }
            Kind::Unmapped => vec![
                ("THC50".into(), v(0), "ng/mL".into()),
                ("XYZ".into(), "1".into(), "ng/mL".into()),
            ],
            Kind::NotOru => vec![],
        };
        Msg {
            id: format!("K{c}-{n:05}"),
            specimen: format!("SPK-{c}-{}", n % 3),
            kind,
            obx,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self.kind {
            Kind::NotOru => not_oru(&self.id, &self.specimen),
            _ => {
                let obx: Vec<(&str, &str, &str)> = self
                    .obx
                    .iter()
                    .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
                    .collect();
                oru(&self.id, &self.specimen, &obx)
            }
        }
    }

    fn expected(&self) -> Vec<(String, String)> {
        self.obx
            .iter()
            .map(|(code, value, _)| (mapped_target(code).to_string(), value.clone()))
            .collect()
    }

    fn expected_code(&self) -> &'static str {
        match self.kind {
            Kind::Good => "AA",
            Kind::Unmapped => "AE",
            Kind::NotOru => "AR",
        }
    }
}

/// Where the daemon currently listens; `addr` is None while it is down. `epoch` counts starts.
struct Net {
    epoch: u64,
    addr: Option<SocketAddr>,
}

struct Shared {
    net: Mutex<Net>,
    changed: Condvar,
    stop: AtomicBool,
    acked: AtomicUsize,
    /// Attempts left unanswered although the daemon was not being killed.
    spurious: AtomicUsize,
}

impl Shared {
    fn new(addr: SocketAddr) -> Shared {
        Shared {
            net: Mutex::new(Net {
                epoch: 0,
                addr: Some(addr),
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            acked: AtomicUsize::new(0),
            spurious: AtomicUsize::new(0),
        }
    }

    fn set(&self, addr: Option<SocketAddr>) {
        let mut n = self.net.lock().unwrap();
        if addr.is_some() {
            n.epoch += 1;
        }
        n.addr = addr;
        self.changed.notify_all();
    }

    /// Blocks until the daemon is up in an epoch >= `min_epoch` (None once told to stop).
    fn wait_up(&self, min_epoch: u64) -> Option<(u64, SocketAddr)> {
        let mut n = self.net.lock().unwrap();
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return None;
            }
            if let (true, Some(a)) = (n.epoch >= min_epoch, n.addr) {
                return Some((n.epoch, a));
            }
            n = self
                .changed
                .wait_timeout(n, Duration::from_millis(100))
                .unwrap()
                .0;
        }
    }
}

/// What one message got: the ACK code of each attempt (None: no answer / not connected), and
/// the epoch of each attempt.
#[derive(Debug)]
struct Outcome {
    msg: Msg,
    attempts: Vec<(u64, Option<String>)>,
}

impl Outcome {
    fn last(&self) -> Option<&str> {
        self.attempts.last().and_then(|(_, c)| c.as_deref())
    }
}

fn exchange(addr: SocketAddr, payload: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(15))).ok()?;
    mllp_exchange(&mut s, payload).map(|ack| ack_code(&ack))
}

/// One analyzer: sends new messages until told to stop; a message without an answer is sent
/// again (at most 3 times) once the daemon is back, like a real analyzer would.
fn client(c: usize, shared: Arc<Shared>) -> Vec<Outcome> {
    let mut out = Vec::new();
    let mut n = 0;
    'messages: while !shared.stop.load(Ordering::SeqCst) {
        let msg = Msg::new(c, n);
        n += 1;
        let bytes = msg.bytes();
        let mut outcome = Outcome {
            msg,
            attempts: Vec::new(),
        };
        let mut min_epoch = 0;
        while outcome.attempts.len() < 3 {
            let Some((epoch, addr)) = shared.wait_up(min_epoch) else {
                out.push(outcome);
                break 'messages;
            };
            let code = exchange(addr, &bytes);
            let answered = code.is_some();
            if code.as_deref() == Some("AA") {
                shared.acked.fetch_add(1, Ordering::SeqCst);
            }
            outcome.attempts.push((epoch, code));
            if answered {
                break;
            }
            // The kill is announced before it happens: an attempt may go unanswered only
            // once the daemon's life it was sent in is ending.
            {
                let net = shared.net.lock().unwrap();
                if net.epoch == epoch && net.addr.is_some() {
                    shared.spurious.fetch_add(1, Ordering::SeqCst);
                }
            }
            // No answer: the daemon went down; try again in its next life.
            min_epoch = epoch + 1;
        }
        out.push(outcome);
    }
    out
}

/// A small deterministic generator (xorshift64*) for the kill moments.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Every stored specimen of these outcomes, fetched once each through the admin API.
fn records(d: &Daemon, outcomes: &[Outcome]) -> BTreeMap<String, serde_json::Value> {
    let specimens: BTreeSet<&str> = outcomes.iter().map(|o| o.msg.specimen.as_str()).collect();
    specimens
        .into_iter()
        .filter_map(|s| d.specimen(s).map(|r| (s.to_string(), r)))
        .collect()
}

fn stored(recs: &BTreeMap<String, serde_json::Value>, msg: &Msg) -> Vec<(String, String)> {
    recs.get(&msg.specimen)
        .map(|r| results_from(r, &msg.id))
        .unwrap_or_default()
}

/// The invariants after a restart. Returns how many unanswered messages were found stored.
fn check_store(d: &Daemon, outcomes: &[Outcome]) -> usize {
    let recs = records(d, outcomes);
    let mut unanswered_stored = 0;
    for o in outcomes {
        let got = stored(&recs, &o.msg);
        match o.last() {
            Some("AA") => assert_eq!(
                got,
                o.msg.expected(),
                "{} was acknowledged AA: its results must be stored exactly once, as sent",
                o.msg.id
            ),
            Some(code) => {
                assert_eq!(
                    code,
                    o.msg.expected_code(),
                    "{}: {:?}",
                    o.msg.id,
                    o.attempts
                );
                assert!(
                    got.is_empty(),
                    "{} got {code} but attached {got:?}",
                    o.msg.id
                );
            }
            None => {
                assert!(
                    got.is_empty() || got == o.msg.expected(),
                    "{} had no answer: it may be stored, but only once and whole; found {got:?}",
                    o.msg.id
                );
                if !got.is_empty() {
                    unanswered_stored += 1;
                }
            }
        }
    }
    // No result from a message nobody sent, and no (message, observation) stored twice.
    let sent: BTreeSet<&str> = outcomes.iter().map(|o| o.msg.id.as_str()).collect();
    for (id, rec) in &recs {
        let mut seen = BTreeSet::new();
        for r in rec["results"].as_array().unwrap() {
            let cid = r["source"]["control_id"].as_str().unwrap_or("");
            assert!(
                sent.contains(cid),
                "{id}: result from unknown message {cid}"
            );
            let obs = r["source"]["observation"].as_str().unwrap_or("");
            assert!(
                seen.insert((cid, obs)),
                "{id}: {cid} OBX {obs} stored twice"
            );
        }
    }
    unanswered_stored
}

#[test]
fn sigkill_during_bursts_loses_nothing_acknowledged_and_stores_nothing_twice() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &analyzer("lab"));
    let mut d = Daemon::start(dir.path());
    let shared = Arc::new(Shared::new(d.addr("lab")));
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill-moment seed: {seed}");
    let mut rng = Rng(seed);

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let shared = shared.clone();
            std::thread::spawn(move || client(c, shared))
        })
        .collect();

    let mut acked_at_kill = Vec::new();
    let mut acked_total = 0;
    for round in 0..KILL_ROUNDS {
        // A random moment 50-300 ms into the burst of this life of the daemon (the burst has
        // begun once a message of this life was acknowledged).
        wait_until(
            "a message acknowledged in this life",
            Duration::from_secs(20),
            || shared.acked.load(Ordering::SeqCst) > acked_total,
        );
        let before = acked_total;
        let ms = rng.between(50, 300);
        std::thread::sleep(Duration::from_millis(ms));
        shared.set(None);
        d.kill9();
        let acked = shared.acked.load(Ordering::SeqCst);
        eprintln!(
            "round {round}: SIGKILL {ms} ms into the burst; {} AA in it",
            acked - before
        );
        acked_at_kill.push(acked - before);
        acked_total = acked;
        d.restart();
        shared.set(Some(d.addr("lab")));
    }
    // The last life: let every client get a few more AA, then stop.
    let target = shared.acked.load(Ordering::SeqCst) + 4 * CLIENTS;
    wait_until(
        "AAs after the last restart",
        Duration::from_secs(20),
        || shared.acked.load(Ordering::SeqCst) >= target,
    );
    shared.stop.store(true, Ordering::SeqCst);
    let outcomes: Vec<Outcome> = clients
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect();

    // The daemon answered under load: AAs in most lives, and an unanswered attempt only when
    // the daemon was killed (at most one per client per kill).
    let count = |code: &str| outcomes.iter().filter(|o| o.last() == Some(code)).count();
    let unanswered_attempts: usize = outcomes
        .iter()
        .map(|o| o.attempts.iter().filter(|(_, c)| c.is_none()).count())
        .sum();
    eprintln!(
        "{} messages: {} AA, {} AE, {} AR, {} never answered, {} unanswered attempts",
        outcomes.len(),
        count("AA"),
        count("AE"),
        count("AR"),
        outcomes.iter().filter(|o| o.last().is_none()).count(),
        unanswered_attempts
    );
    assert!(
        acked_at_kill.iter().all(|&n| n > 0),
        "the kills must land in bursts of acknowledged messages: {acked_at_kill:?}"
    );
    assert!(
        count("AE") > 0 && count("AR") > 0,
        "the mix includes AE and AR"
    );
    assert_eq!(
        shared.spurious.load(Ordering::SeqCst),
        0,
        "attempts unanswered while the daemon was not being killed"
    );
    assert!(
        unanswered_attempts <= CLIENTS * KILL_ROUNDS,
        "unanswered attempts ({unanswered_attempts}): at most one per client per kill"
    );
    for o in &outcomes {
        for (_, code) in &o.attempts {
            if let Some(code) = code {
                assert_eq!(
                    code,
                    o.msg.expected_code(),
                    "{}: {:?}",
                    o.msg.id,
                    o.attempts
                );
            }
        }
    }

    // After the last restart (and once more after another SIGKILL with no load).
    let unanswered_stored = check_store(&d, &outcomes);
    eprintln!("unanswered but stored: {unanswered_stored}");
    d.restart();
    check_store(&d, &outcomes);

    // Resending: a sample of AA'd messages, and every never-answered one, gets AA and is stored
    // once; the AE/AR ones get the same answer again and still attach nothing.
    let a = d.addr("lab");
    let aa: Vec<&Outcome> = outcomes.iter().filter(|o| o.last() == Some("AA")).collect();
    let step = (aa.len() / 25).max(1);
    let mut resent = Vec::new();
    for o in aa.iter().step_by(step) {
        resent.push(*o);
    }
    resent.extend(outcomes.iter().filter(|o| o.last().is_none()));
    resent.extend(outcomes.iter().filter(|o| o.msg.kind != Kind::Good).take(4));
    for o in &resent {
        let ack = send(a, &o.msg.bytes()).expect("an answer to a resent message");
        assert_eq!(ack_code(&ack), o.msg.expected_code(), "{}: {ack}", o.msg.id);
        assert_eq!(ack_control_id(&ack), o.msg.id);
    }
    let recs = records(&d, &outcomes);
    for o in &resent {
        let want = if o.msg.kind == Kind::Good {
            o.msg.expected()
        } else {
            vec![]
        };
        assert_eq!(stored(&recs, &o.msg), want, "{} after resend", o.msg.id);
    }
    check_store(&d, &outcomes);

    assert_eq!(d.term(), Some(0), "SIGTERM exits 0");
    let out = d.cli(&["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "audit verify: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("\"ok\": true"), "{stdout}");
    eprintln!("crash test took {:?}", started.elapsed());
}

#[test]
fn sigterm_under_load_exits_zero_and_keeps_everything_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &analyzer("lab"));
    let mut d = Daemon::start(dir.path());
    let addr = d.addr("lab");
    let stop = Arc::new(AtomicBool::new(false));
    let terming = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));

    // Each client keeps one connection and sends continuously; after a failure it reconnects,
    // and ends once the daemon is gone.
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (stop, terming, acked) = (stop.clone(), terming.clone(), acked.clone());
            std::thread::spawn(move || {
                let mut out: Vec<(Msg, Option<String>, bool)> = Vec::new();
                let mut conn: Option<TcpStream> = None;
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    let msg = Msg::new(10 + c, n);
                    n += 1;
                    if conn.is_none() {
                        conn = TcpStream::connect(addr).ok();
                        if let Some(s) = &conn {
                            s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                        }
                    }
                    let code = conn
                        .as_mut()
                        .and_then(|s| mllp_exchange(s, &msg.bytes()))
                        .map(|ack| ack_code(&ack));
                    if code.as_deref() == Some("AA") {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    let failed = code.is_none();
                    // A failure is legitimate only once SIGTERM was requested.
                    let after_term = terming.load(Ordering::SeqCst);
                    out.push((msg, code, after_term));
                    if failed {
                        conn = None;
                        if terming.load(Ordering::SeqCst) {
                            break;
                        }
                    }
                }
                out
            })
        })
        .collect();

    wait_until("40 AA under load", Duration::from_secs(30), || {
        acked.load(Ordering::SeqCst) >= 40
    });
    terming.store(true, Ordering::SeqCst);
    let code = d.term();
    stop.store(true, Ordering::SeqCst);
    let sent: Vec<(Msg, Option<String>, bool)> = clients
        .into_iter()
        .flat_map(|h| h.join().expect("client thread"))
        .collect();
    assert_eq!(
        code,
        Some(0),
        "SIGTERM under load exits 0; log:\n{}",
        d.log()
    );
    assert!(d.log().contains("stopped cleanly"), "{}", d.log());
    for (m, code, after_term) in &sent {
        if code.is_none() {
            assert!(*after_term, "{} unanswered before SIGTERM", m.id);
        } else {
            assert_eq!(code.as_deref(), Some(m.expected_code()), "{}", m.id);
        }
    }

    d.restart();
    let outcomes: Vec<Outcome> = sent
        .into_iter()
        .map(|(msg, code, _)| Outcome {
            msg,
            attempts: vec![(0, code)],
        })
        .collect();
    let aa = outcomes.iter().filter(|o| o.last() == Some("AA")).count();
    assert!(aa >= 40, "{aa}");
    check_store(&d, &outcomes);
    assert_eq!(d.term(), Some(0));
    let out = d.cli(&["audit", "verify"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"ok\": true"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// systemd may stop the service the moment it reported ready: a SIGTERM right after readiness
/// (the runtime file) must be a clean shutdown (exit 0), never the default disposition's kill.
#[test]
fn sigterm_right_after_readiness_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &analyzer("lab"));
    let runtime = dir.path().join("store.runtime.json");
    for round in 0..25 {
        let _ = std::fs::remove_file(&runtime);
        let mut daemon = std::process::Command::new(bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env_remove("CUSTODIAN_CONFIG")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // A shell busy-waits for the runtime file and signals at once (builtins only: no fork
        // between seeing readiness and the signal).
        let script = format!(
            "while [ ! -e '{}' ]; do :; done; kill -TERM {}",
            runtime.display(),
            daemon.id()
        );
        let mut racer = std::process::Command::new("sh")
            .args(["-c", &script])
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = daemon.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = daemon.kill();
                let _ = racer.kill();
                panic!("round {round}: the daemon did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let _ = racer.kill();
        let _ = racer.wait();
        assert_eq!(
            status.code(),
            Some(0),
            "round {round}: SIGTERM right after readiness must exit 0, got {status}"
        );
    }
}
