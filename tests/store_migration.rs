//! A store written by the current release (format 1: each specimen's results inside its
//! record) is migrated in place at the first start: every record's results move into keys of
//! their own, appended per arrival from then on; `custodian audit verify` passes before and
//! after; every record reads back as it was; a new message adds one small key instead of
//! rewriting the record's whole history.
//!
//! The fixture `tests/data/store/format1-main.tar.gz` was written by main's binary (see
//! `tests/data/store/README.md`): five specimens (a negative, a positive with its
//! confirmation, results before accession, a held accession, and one with 40 messages), their
//! results waiting in the analyzer's open run.

mod common;

use common::*;
use custodian::store::{Keyspace, Store};
use std::process::Command;

fn unpack(dir: &std::path::Path) {
    let out = Command::new("tar")
        .arg("xzf")
        .arg(root().join("tests/data/store/format1-main.tar.gz"))
        .arg("-C")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The CLI on the configuration in `dir` (the daemon stopped: it reads the store).
fn cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(dir.join("custodian.toml"))
        .env("CUSTODIAN_TOKEN", TOKEN)
        .output()
        .unwrap()
}

fn verify(dir: &std::path::Path) -> serde_json::Value {
    let out = cli(dir, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The specimen as the CLI shows it from the stopped daemon's store.
fn shown(dir: &std::path::Path, id: &str) -> serde_json::Value {
    let out = cli(dir, &["specimen", "show", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const IDS: [&str; 5] = [
    "FX-NEG-1",
    "FX-POS-2",
    "FX-EARLY-3",
    "FX-HELD-4",
    "FX-MANY-5",
];

#[test]
fn a_store_written_by_the_current_release_is_migrated_in_place_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    unpack(dir.path());
    write_config(dir.path(), &analyzer("lab"));
    let store_dir = dir.path().join("store");

    // Before: format 1, the audit chain verifies, each record carries its results inline.
    let (before_sizes, before_results) = {
        let store = Store::open(&store_dir).unwrap();
        assert_eq!(store.format_version().unwrap(), 1);
        let mut sizes = Vec::new();
        let mut results = Vec::new();
        for id in IDS {
            let raw: serde_json::Value = store
                .get(Keyspace::Specimens, id.as_bytes())
                .unwrap()
                .unwrap_or_else(|| panic!("{id} in the fixture"));
            sizes.push(serde_json::to_vec(&raw).unwrap().len());
            results.push(raw["results"].clone());
        }
        assert_eq!(store.count(Keyspace::Results), 0);
        (sizes, results)
    };
    let checked = verify(dir.path());
    assert_eq!(checked["ok"], true, "{checked}");
    let entries_before = checked["entries"].as_u64().unwrap();
    let evaluations: Vec<serde_json::Value> = IDS
        .iter()
        .map(|id| shown(dir.path(), id)["evaluation"].clone())
        .collect();
    assert_eq!(
        shown(dir.path(), "FX-MANY-5")["results"]
            .as_array()
            .unwrap()
            .len(),
        40,
        "format 1 reads as it is"
    );

    // The first start migrates, in place.
    let mut d = Daemon::start(dir.path());
    assert!(d.log().contains("store migrated in place"), "{}", d.log());
    for (i, id) in IDS.iter().enumerate() {
        let rec = d.specimen(id).unwrap();
        assert_eq!(rec["results"], before_results[i], "{id}: the same results");
        assert_eq!(rec["evaluation"], evaluations[i], "{id}: the same verdict");
    }
    // The release wrote its runs too: the fixture's results wait in the analyzer's open run
    // (no closing QC was sent), and still do after the migration.
    let many = d.specimen("FX-MANY-5").unwrap();
    let history = many["result_history"].as_array().unwrap().clone();
    assert_eq!(history.len(), 40);
    assert!(
        history
            .iter()
            .all(|r| r["run"] == "lab:B1" && r["run_state"] == "open" && r["counts"] == false),
        "{many}"
    );
    // The closing QC set closes that run (a confirmation is in it: a certifying scientist
    // accepts it by name): the migrated results count.
    close_run(&d, "lab");
    accept_pending_runs(&d);
    let many = d.specimen("FX-MANY-5").unwrap();
    assert!(
        many["result_history"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["counts"] == true),
        "{many}"
    );
    assert_eq!(many["results"].as_array().unwrap().len(), 40);
    // A new message appends one key; the record itself no longer carries the history.
    let ack = send(
        d.addr("lab"),
        &oru("NEW-1", "FX-MANY-5", &[("PCP25", "0", "ng/mL")]),
    )
    .unwrap();
    assert_eq!(ack_code(&ack), "AA", "{ack}");
    assert_eq!(d.term(), Some(0));
    let checked = verify(dir.path());
    assert_eq!(checked["ok"], true, "{checked}");
    assert!(checked["entries"].as_u64().unwrap() > entries_before);

    let store = Store::open(&store_dir).unwrap();
    assert_eq!(
        store.format_version().unwrap(),
        custodian::store::FORMAT_VERSION
    );
    // FX-NEG-1, FX-POS-2, FX-EARLY-3, FX-MANY-5 had results (one batch each), plus the new one.
    assert_eq!(store.count(Keyspace::Results), 5);
    let mut after_sizes = Vec::new();
    for id in IDS {
        let raw: serde_json::Value = store
            .get(Keyspace::Specimens, id.as_bytes())
            .unwrap()
            .unwrap();
        assert!(
            raw.get("results")
                .is_none_or(|r| r.as_array().is_some_and(|a| a.is_empty())),
            "{id}: {raw}"
        );
        assert!(raw["result_keys"].is_object(), "{id}: {raw}");
        after_sizes.push(serde_json::to_vec(&raw).unwrap().len());
    }
    let read = custodian::custody::records::read_specimen(&store, "FX-MANY-5")
        .unwrap()
        .unwrap();
    assert_eq!(read.results.len(), 41);
    let many_at = IDS.iter().position(|i| *i == "FX-MANY-5").unwrap();
    let batch: serde_json::Value = store
        .get(
            Keyspace::Results,
            &custodian::store::result_batch_key("FX-MANY-5", 1),
        )
        .unwrap()
        .unwrap();
    assert_eq!(batch["version"], 1);
    assert_eq!(batch["first"], 40);
    let batch_bytes = serde_json::to_vec(&batch).unwrap().len();
    eprintln!(
        "FX-MANY-5 record: {} bytes with 40 messages' results inline (format 1), {} bytes after (format 2, 41 results in 2 keys); the new message's batch {batch_bytes} bytes",
        before_sizes[many_at], after_sizes[many_at]
    );
    assert!(
        after_sizes[many_at] * 3 < before_sizes[many_at],
        "the record no longer grows with its results: {after_sizes:?} vs {before_sizes:?}"
    );
    // The migration is in the audit chain.
    let migrated = store
        .audit_entries(1)
        .filter_map(|e| e.ok())
        .any(|(_, r)| r.entry.action == "store_migrated");
    assert!(migrated);
}
