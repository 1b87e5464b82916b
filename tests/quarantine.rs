//! The quarantine through the real daemon: refused frames are listed without their bytes,
//! shown with the bytes only to the operator role, every read audited; the sweep keeps the
//! configured bound and says so (audit, metric).

mod common;
use base64::Engine;
use common::*;
use std::process::Command;
use std::time::Duration;

fn cli_as(d: &Daemon, token: &str, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(&d.config)
        .env("CUSTODIAN_TOKEN", token)
        .output()
        .unwrap()
}

fn list(d: &Daemon) -> Vec<serde_json::Value> {
    let (status, body) = d.get("/api/quarantine", Some(VIEWER_TOKEN));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<serde_json::Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn quarantine_is_listed_shown_to_operators_audited_and_bounded() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!(
            "{}{}[quarantine]\nmax_records = 2\nsweep_interval_secs = 1\n",
            analyzer("lab"),
            analyzer("gc")
        ),
    );
    let mut d = Daemon::start(dir.path());
    let frame = not_oru("Q-1", "SPQ-DONOR-1");
    let ack = send(d.addr("lab"), &frame).expect("an answer");
    assert_eq!(ack_code(&ack), "AR", "{ack}");
    let ack = send(d.addr("gc"), &not_oru("Q-2", "SPQ-2")).expect("an answer");
    assert_eq!(ack_code(&ack), "AR", "{ack}");

    // The list: id, source, time, reason, size; never the bytes.
    let all = list(&d);
    assert_eq!(all.len(), 2, "{all:?}");
    let first = &all[0];
    assert_eq!(first["source"], "analyzer:lab");
    assert_eq!(first["size"].as_u64(), Some(frame.len() as u64));
    assert!(first["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert!(first["received_at"].as_str().is_some());
    let text = serde_json::to_string(&all).unwrap();
    assert!(
        !text.contains("SPQ-DONOR-1"),
        "no content in the list: {text}"
    );
    assert!(!text.contains("raw"), "{text}");

    // The CLI, filtered by source.
    let out = cli_as(&d, VIEWER_TOKEN, &["quarantine", "list", "--source", "gc"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v[0]["source"], "analyzer:gc");

    // Show: a viewer and a certifying scientist get no bytes; the operator does.
    let id = first["id"].as_str().unwrap();
    for token in [VIEWER_TOKEN, TOKEN] {
        let out = cli_as(&d, token, &["quarantine", "show", id]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["id"], id);
        assert!(v.get("raw_base64").is_none(), "{v}");
    }
    let out = cli_as(&d, OPERATOR_TOKEN, &["quarantine", "show", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v["raw_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(raw, frame);
    assert_eq!(v["reference"], "Q-1");
    let out = cli_as(&d, OPERATOR_TOKEN, &["quarantine", "show", &"0".repeat(32)]);
    assert_eq!(out.status.code(), Some(1));
    // Without a token: refused.
    assert_eq!(d.get(&format!("/api/quarantine/{id}"), None).0, 401);

    // A third refusal goes over max_records = 2: the sweep drops the oldest.
    let ack = send(d.addr("lab"), &not_oru("Q-3", "SPQ-3")).expect("an answer");
    assert_eq!(ack_code(&ack), "AR", "{ack}");
    wait_until(
        "the sweep keeps two records",
        Duration::from_secs(20),
        || list(&d).len() == 2,
    );
    let left = list(&d);
    assert!(
        left.iter().all(|r| r["id"] != id),
        "the oldest went: {left:?}"
    );
    // Counted once the pruning is durable (just after the records are gone).
    wait_until("the drop counted", Duration::from_secs(10), || {
        let (_, metrics) = d.get("/metrics", None);
        metrics
            .lines()
            .any(|l| l.starts_with("custodian_quarantine_dropped_total{reason=\"records\"} 1"))
    });

    // The audit log: three reads (viewer, scientist, operator), one pruning entry.
    assert_eq!(d.term(), Some(0));
    let store = custodian::store::Store::open(&dir.path().join("store")).unwrap();
    let entries: Vec<_> = store.audit_entries(1).map(|e| e.unwrap().1.entry).collect();
    let reads: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "quarantine_read")
        .collect();
    assert_eq!(reads.len(), 3, "{reads:?}");
    assert!(reads.iter().all(|e| e.subject == id));
    assert_eq!(
        reads.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>(),
        vec!["user:Viewer", "user:Dr. Test Scientist", "user:Operator"]
    );
    let pruned: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "quarantine_pruned")
        .collect();
    assert_eq!(pruned.len(), 1, "{pruned:?}");
    assert!(
        pruned[0]
            .after
            .as_deref()
            .unwrap()
            .contains("dropped 1 records"),
        "{pruned:?}"
    );
    assert!(store.verify_audit().is_ok());
}
