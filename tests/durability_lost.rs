//! After a failed fsync the store refuses durability until it is reopened. The daemon must
//! then say so (`/readyz` 503 with the reason, not "ready" while it answers AE forever), stop
//! by itself with a failure (so systemd restarts it and sled recovers the log), and nothing it
//! acknowledged may be missing after the restart.
//!
//! The daemon runs in this process (`daemon::run_in_process`) so the test can arm the store's
//! fault injector (`fail_next_fsync`), exactly as the in-process pipeline tests do.

mod common;
use common::*;
use custodian::app::{config, daemon};
use custodian::store::Store;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A daemon running on its own runtime in a thread of this process.
struct InProcess {
    store: Option<Store>,
    admin: SocketAddr,
    lab: SocketAddr,
    done: mpsc::Receiver<Result<(), String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn start(dir: &Path) -> InProcess {
    let config_path: PathBuf = dir.join("custodian.toml");
    let (cfg, profiles) = config::load(&config_path).expect("the test configuration loads");
    let (store_tx, store_rx) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let runtime_file = daemon::runtime_file(&cfg.store.path);
    let _ = std::fs::remove_file(&runtime_file);
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let hooks = daemon::Hooks {
            on_store_open: Some(Box::new(move |s: &Store| {
                let _ = store_tx.send(s.clone());
            })),
        };
        let r = rt.block_on(daemon::run_in_process(cfg, profiles, config_path, hooks));
        drop(rt);
        let _ = done_tx.send(r);
    });
    let store = store_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the daemon opened its store");
    let mut info = None;
    wait_until("the runtime file", Duration::from_secs(30), || {
        info = std::fs::read_to_string(&runtime_file)
            .ok()
            .and_then(|t| serde_json::from_str::<daemon::RuntimeInfo>(&t).ok());
        info.is_some()
    });
    let info = info.unwrap();
    InProcess {
        store: Some(store),
        admin: info.admin,
        lab: info.analyzers["lab"],
        done,
        thread: Some(thread),
    }
}

impl InProcess {
    fn get(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let r = custodian::admin::client::get(self.admin, path, token).unwrap();
        (r.status, r.body)
    }

    fn specimen(&self, id: &str) -> Option<serde_json::Value> {
        let (status, body) = self.get(&format!("/api/specimens/{id}"), Some(TOKEN));
        match status {
            200 => Some(serde_json::from_str(&body).unwrap()),
            404 => None,
            s => panic!("GET specimen answered {s}: {body}"),
        }
    }

    /// Waits for the daemon to end by itself and returns how it ended.
    fn wait_for_exit(&mut self, within: Duration) -> Result<(), String> {
        let r = self
            .done
            .recv_timeout(within)
            .expect("the daemon stopped by itself");
        self.thread.take().unwrap().join().unwrap();
        r
    }

    /// SIGTERM would reach the whole test process; the in-process daemon is stopped through
    /// the store's own path instead: the caller ends it with [`InProcess::wait_for_exit`].
    fn release_store(&mut self) {
        self.store.take();
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
fn lost_durability_makes_the_daemon_unready_then_exit_and_a_restart_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = write_config(dir.path(), &analyzer("lab"));
    let text = std::fs::read_to_string(&config_path).unwrap().replacen(
        "path = \"store\"\n",
        "path = \"store\"\nexit_after_durability_lost_secs = 3\n",
        1,
    );
    std::fs::write(&config_path, text).unwrap();

    let mut d = start(dir.path());
    assert_eq!(d.get("/readyz", None).0, 200);
    let ack = send(d.lab, &screen("D-1", "SPD-1", "21")).expect("an answer");
    assert_eq!(ack_code(&ack), "AA", "{ack}");

    // A real fsync failure: the store refuses durability from now on.
    d.store.as_ref().unwrap().fault_injector().fail_next_fsync();
    let lost_at = Instant::now();
    let ack = send(d.lab, &screen("D-2", "SPD-2", "22")).expect("an answer");
    assert_eq!(ack_code(&ack), "AE", "{ack}");
    assert!(ack.contains("not stored durably"), "{ack}");

    // Not ready, with the reason, while it still answers (AE) and before it exits.
    let (status, body) = d.get("/readyz", None);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot be made durable"), "{body}");
    assert!(body.contains("injected fsync failure"), "{body}");
    assert!(
        !body.contains("SPD-"),
        "no specimen ids in the reason: {body}"
    );
    let ack = send(d.lab, &screen("D-1", "SPD-1", "21")).expect("an answer");
    assert_eq!(
        ack_code(&ack),
        "AE",
        "not re-acknowledged while not durable: {ack}"
    );
    // Alive (health is about the process), but not ready.
    assert_eq!(d.get("/healthz", None).0, 200);

    // It ends by itself, as a failure (`custodian run` exits non-zero), after the grace.
    d.release_store();
    let ended = d.wait_for_exit(Duration::from_secs(40));
    let why = ended.expect_err("the daemon stops with a failure, not cleanly");
    assert!(why.contains("lost durability"), "{why}");
    assert!(
        lost_at.elapsed() >= Duration::from_secs(2),
        "stayed up for the grace period"
    );
    assert!(
        !daemon::runtime_file(&dir.path().join("store")).exists(),
        "the runtime file is removed"
    );

    // The restart (what systemd does): ready again, what was AA'd is there, the refused
    // message is stored once when sent again.
    let mut d = start(dir.path());
    assert_eq!(d.get("/readyz", None).0, 200);
    let rec = d.specimen("SPD-1").expect("the AA'd specimen is stored");
    assert_eq!(results_from(&rec, "D-1"), expected("21"));
    let ack = send(d.lab, &screen("D-2", "SPD-2", "22")).expect("an answer");
    assert_eq!(ack_code(&ack), "AA", "{ack}");
    let ack = send(d.lab, &screen("D-2", "SPD-2", "22")).expect("an answer");
    assert_eq!(ack_code(&ack), "AA", "{ack}");
    let rec = d.specimen("SPD-2").unwrap();
    assert_eq!(results_from(&rec, "D-2"), expected("22"));
    let (status, body) = d.get("/api/audit/verify", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], true, "{body}");

    // Stop the second daemon the same way (a lost store), so no SIGTERM hits the test process.
    d.store.as_ref().unwrap().fault_injector().fail_next_fsync();
    let ack = send(d.lab, &screen("D-3", "SPD-3", "23")).expect("an answer");
    assert_eq!(ack_code(&ack), "AE", "{ack}");
    d.release_store();
    assert!(d.wait_for_exit(Duration::from_secs(40)).is_err());
}
