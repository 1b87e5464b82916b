//! The store's archive tier in the running daemon: with a low spill threshold, messages move
//! out of sled into archive segments while the daemon receives them and at its clean stop, and
//! everything stays readable through restarts: the specimens, their audit trails, the chain,
//! and the duplicate check of messages received before a spill.

mod common;
use common::*;
use std::time::Duration;

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("store/archive"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn messages_spilled_into_the_archive_stay_readable_through_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &analyzer("lab"));
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replace(
        "[store]\npath = \"store\"\n",
        "[store]\npath = \"store\"\narchive_after_keys = 1000\n",
    );
    assert!(text.contains("archive_after_keys = 1000"));
    std::fs::write(&config, text).unwrap();
    let mut d = Daemon::start(dir.path());
    let a = d.addr("lab");
    let n = 400;
    for i in 0..n {
        let msg = oru(
            &format!("AR-{i:04}"),
            &format!("SPA-{i:04}"),
            &[("THC50", "12", "ng/mL"), ("COC300", "40", "ng/mL")],
        );
        assert_eq!(ack_code(&send(a, &msg).unwrap()), "AA", "message {i}");
    }
    // Spills run in the background while the daemon receives.
    wait_until("a spill", Duration::from_secs(20), || {
        segments(dir.path()) > 0
    });
    assert_eq!(d.term(), Some(0), "{}", d.log());
    assert!(
        d.log()
            .contains("recent keys moved from sled into an archive segment")
    );
    let after_stop = segments(dir.path());
    assert!(after_stop > 0);

    d.start_again();
    let a = d.addr("lab");
    for i in [0, 1, n / 2, n - 1] {
        let rec = d
            .specimen(&format!("SPA-{i:04}"))
            .expect("archived specimen");
        assert_eq!(results_from(&rec, &format!("AR-{i:04}")).len(), 2, "{rec}");
    }
    // A message received before a spill, sent again: recognised as the duplicate it is.
    let again = oru(
        "AR-0003",
        "SPA-0003",
        &[("THC50", "12", "ng/mL"), ("COC300", "40", "ng/mL")],
    );
    assert_eq!(ack_code(&send(a, &again).unwrap()), "AA");
    let reused = oru("AR-0004", "SPA-OTHER", &[("THC50", "80", "ng/mL")]);
    assert_eq!(ack_code(&send(a, &reused).unwrap()), "AE");
    assert!(d.specimen("SPA-OTHER").is_none());
    // The chain verifies across the tiers, and a specimen's trail is found through them.
    let (status, v) = d.get("/api/audit/verify", Some(TOKEN));
    assert_eq!(status, 200, "{v}");
    assert!(v.contains("\"ok\":true"), "{v}");
    let out = d.cli(&["audit", "show", "SPA-0002"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
    assert_eq!(d.term(), Some(0));

    // On the stopped store: every specimen once, the chain whole.
    let store = custodian::store::Store::open(&dir.path().join("store")).unwrap();
    let ids: Vec<String> = store
        .iter::<serde_json::Value>(custodian::store::Keyspace::Specimens)
        .map(|r| String::from_utf8(r.unwrap().0).unwrap())
        .collect();
    assert_eq!(ids.len(), n);
    assert!(store.archive_usage().segments > 0);
    let report = store.verify_audit().unwrap();
    assert!(report.entries >= n as u64, "{report:?}");
}

/// Bytes no compression shrinks, the same for the same seed.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[test]
fn a_clean_stop_rewrites_a_grown_engine_file_and_nothing_is_lost() {
    use custodian::store::{Abort, Keyspace, Store};
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &analyzer("lab"));
    let store_dir = dir.path().join("store");
    // sled's file grown before the daemon runs (the daemon's own load would take minutes to
    // grow it this far in a debug build): 3,000 messages of 2 KiB, one commit each.
    let key = |n: u64| format!("lab\0FILL{n:05}").into_bytes();
    {
        let store = Store::open(&store_dir).unwrap();
        for n in 0..3000u64 {
            store
                .transact(|tx| {
                    tx.put_raw_bytes(Keyspace::Raw, &key(n), &noise(n, 2048))?;
                    Ok::<_, Abort<()>>(())
                })
                .unwrap();
        }
        store.flush_durable().unwrap();
    }
    let log_file = || std::fs::metadata(store_dir.join("db")).unwrap().len();
    let grown = log_file();
    assert!(grown >= 4 << 20, "sled's file grew to {grown} bytes only");

    let mut d = Daemon::start(dir.path());
    let msg = oru("RW-1", "SPRW-1", &[("THC50", "12", "ng/mL")]);
    assert_eq!(ack_code(&send(d.addr("lab"), &msg).unwrap()), "AA");
    assert_eq!(d.term(), Some(0), "{}", d.log());
    assert!(
        d.log()
            .contains("store's engine file rewritten for a quick next start"),
        "{}",
        d.log()
    );
    let rewritten = log_file();
    assert!(rewritten < grown / 4, "{rewritten} of {grown} bytes");
    let left: Vec<String> = std::fs::read_dir(&store_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("engine."))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // The daemon starts on it, the specimen is there, and so is every key written before.
    d.start_again();
    let rec = d
        .specimen("SPRW-1")
        .expect("the specimen after the rewrite");
    assert_eq!(results_from(&rec, "RW-1").len(), 1, "{rec}");
    let msg = oru("RW-2", "SPRW-2", &[("THC50", "12", "ng/mL")]);
    assert_eq!(ack_code(&send(d.addr("lab"), &msg).unwrap()), "AA");
    assert_eq!(d.term(), Some(0), "{}", d.log());
    let store = Store::open(&store_dir).unwrap();
    for n in [0u64, 1, 1499, 2999] {
        assert_eq!(
            store.get_raw_bytes(Keyspace::Raw, &key(n)).unwrap(),
            Some(noise(n, 2048)),
            "message {n}"
        );
    }
    let report = store.verify_audit().unwrap();
    assert!(report.entries >= 2, "{report:?}");
}
