//! The archive tier against a model: whatever the interleaving of writes, removals, spills
//! (finished or stopped where a crash would stop them), compactions and reopenings, every read
//! of the store — by key, by range, by prefix, counts, the audit chain and its index, raw
//! messages in packs — answers what a plain map of the same writes answers.

use super::archive::SpillStep;
use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

/// Keyspaces the model writes (archived ones, and `outbox`, which stays in sled).
const SPACES: [Keyspace; 4] = [
    Keyspace::Specimens,
    Keyspace::ByState,
    Keyspace::Results,
    Keyspace::Outbox,
];

#[derive(Debug, Clone)]
enum Op {
    Put(usize, u8, u32),
    Remove(usize, u8),
    Raw(u8, u8),
    Spill,
    Compact,
    Reopen,
    Crash(SpillStep),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0..SPACES.len(), 0u8..40, any::<u32>()).prop_map(|(s, k, v)| Op::Put(s, k, v)),
        4 => (0..SPACES.len(), 0u8..40).prop_map(|(s, k)| Op::Remove(s, k)),
        2 => (0u8..200, 1u8..4).prop_map(|(k, n)| Op::Raw(k, n)),
        2 => Just(Op::Spill),
        1 => Just(Op::Compact),
        1 => Just(Op::Reopen),
        1 => prop_oneof![
            Just(SpillStep::Frozen),
            Just(SpillStep::Copied),
            Just(SpillStep::Installed)
        ]
        .prop_map(Op::Crash),
    ]
}

fn key(k: u8) -> Vec<u8> {
    format!("S-{k:03}").into_bytes()
}

fn options() -> StoreOptions {
    StoreOptions {
        archive_after_keys: 0,
        ..StoreOptions::default()
    }
}

struct Model {
    maps: Vec<BTreeMap<Vec<u8>, u32>>,
    raw: BTreeMap<Vec<u8>, Vec<u8>>,
    audits: u64,
}

fn check(store: &Store, model: &Model) {
    for (i, ks) in SPACES.iter().enumerate() {
        let want: Vec<(Vec<u8>, u32)> =
            model.maps[i].iter().map(|(k, v)| (k.clone(), *v)).collect();
        let got: Vec<(Vec<u8>, u32)> = store.iter::<u32>(*ks).map(Result::unwrap).collect();
        assert_eq!(got, want, "{ks}: a full scan");
        assert_eq!(store.count(*ks), want.len(), "{ks}: count");
        for k in 0u8..40 {
            let got: Option<u32> = store.get(*ks, &key(k)).unwrap();
            assert_eq!(got, model.maps[i].get(&key(k)).copied(), "{ks}: get {k}");
            assert_eq!(store.contains_key(*ks, &key(k)).unwrap(), got.is_some());
        }
        let prefix = b"S-01";
        let want: Vec<_> = want
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .cloned()
            .collect();
        let got: Vec<_> = store
            .scan_prefix::<u32>(*ks, prefix)
            .map(Result::unwrap)
            .collect();
        assert_eq!(got, want, "{ks}: a prefix scan");
        let got: Vec<_> = store
            .range::<u32, _, _>(*ks, key(10)..key(30))
            .map(Result::unwrap)
            .collect();
        let want: Vec<_> = model.maps[i]
            .range(key(10)..key(30))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        assert_eq!(got, want, "{ks}: a range");
    }
    for (k, v) in &model.raw {
        assert_eq!(
            store.get_raw_bytes(Keyspace::Raw, k).unwrap().as_ref(),
            Some(v)
        );
    }
    let report = store.verify_audit().unwrap();
    assert_eq!(report.entries, model.audits);
    if model.audits > 0 {
        let first: Vec<_> = store
            .audit_entries(model.audits)
            .map(Result::unwrap)
            .collect();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1.seq, model.audits);
        assert_eq!(store.audit_of("raw").unwrap().len() as u64, model.audits);
    }
}

fn apply(store: &Store, model: &mut Model, op: &Op) {
    match op {
        Op::Put(s, k, v) => {
            store
                .transact(|tx| {
                    tx.put(SPACES[*s], &key(*k), v)?;
                    Ok::<_, Abort<()>>(())
                })
                .unwrap();
            model.maps[*s].insert(key(*k), *v);
        }
        Op::Remove(s, k) => {
            let existed = store
                .transact(|tx| Ok::<_, Abort<()>>(tx.remove(SPACES[*s], &key(*k))?))
                .unwrap();
            assert_eq!(existed, model.maps[*s].remove(&key(*k)).is_some());
        }
        Op::Raw(k, n) => {
            let msgs: Vec<(Vec<u8>, Vec<u8>)> = (0..*n)
                .map(|j| {
                    let id = format!("M-{k:03}-{j}-{}", model.raw.len()).into_bytes();
                    let body = format!("MSH|^~\\&|{k}|{j}|")
                        .repeat(usize::from(*k % 9) + 1)
                        .into_bytes();
                    (id, body)
                })
                .collect();
            store
                .transact(|tx| {
                    for (id, body) in &msgs {
                        tx.put_raw_bytes(Keyspace::Raw, id, body)?;
                        tx.audit(AuditEntry::new(1, "test", "received", "raw"))?;
                    }
                    Ok::<_, Abort<()>>(())
                })
                .unwrap();
            model.audits += msgs.len() as u64;
            model.raw.extend(msgs);
        }
        Op::Spill => {
            store.spill().unwrap();
        }
        Op::Compact => {
            let stop = AtomicBool::new(false);
            while store.compact(&stop).unwrap().is_some() {}
        }
        Op::Reopen | Op::Crash(_) => unreachable!("handled by the caller"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_read_through_the_tiers_answers_what_a_map_of_the_writes_answers(
        ops in proptest::collection::vec(op(), 1..120)
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let mut store = Store::open_with(&dir, &options()).unwrap();
        let mut model = Model {
            maps: SPACES.iter().map(|_| BTreeMap::new()).collect(),
            raw: BTreeMap::new(),
            audits: 0,
        };
        for op in &ops {
            match op {
                Op::Reopen => {
                    store.flush_durable().unwrap();
                    drop(store);
                    store = Store::open_with(&dir, &options()).unwrap();
                }
                Op::Crash(step) => {
                    store.spill_until(Some(*step)).unwrap();
                    store.flush_durable().unwrap();
                    drop(store);
                    store = Store::open_with(&dir, &options()).unwrap();
                    // A stopped spill is finished by the next one.
                    if *step != SpillStep::Installed {
                        prop_assert!(store.spill_due() || store.archive_usage().generation == 0);
                    }
                }
                _ => apply(&store, &mut model, op),
            }
            check(&store, &model);
        }
        // At the end: everything spilled and merged, then read again after a reopen.
        store.spill().unwrap();
        apply(&store, &mut model, &Op::Compact);
        check(&store, &model);
        store.flush_durable().unwrap();
        drop(store);
        let store = Store::open_with(&dir, &options()).unwrap();
        check(&store, &model);
        // Nothing but the named segments is left in the archive directory, and no tree of an
        // archived generation.
        let files = std::fs::read_dir(dir.join("archive")).unwrap().count();
        prop_assert_eq!(files, store.archive_usage().segments);
    }
}

/// Writes `n` specimens with an audit entry each, in one commit each.
fn write_specimens(store: &Store, from: u32, n: u32) {
    for i in from..from + n {
        store
            .transact(|tx| {
                tx.put(Keyspace::Specimens, format!("S-{i:05}").as_bytes(), &i)?;
                tx.put(
                    Keyspace::ByState,
                    format!("received\0S-{i:05}").as_bytes(),
                    &(),
                )?;
                tx.audit(AuditEntry::new(1, "test", "stored", format!("S-{i:05}")))?;
                Ok::<_, Abort<()>>(())
            })
            .unwrap();
    }
}

#[test]
fn a_spill_empties_sleds_trees_and_every_read_still_finds_the_data() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(&tmp.path().join("store"), &options()).unwrap();
    write_specimens(&store, 0, 500);
    let report = store.spill().unwrap().unwrap();
    assert!(report.keys >= 1500, "{report:?}");
    assert_eq!(
        store.tree(Keyspace::Specimens).len(),
        0,
        "sled's active tree is empty"
    );
    assert_eq!(store.tree(Keyspace::Audit).len(), 0);
    assert_eq!(
        store.get::<u32>(Keyspace::Specimens, b"S-00123").unwrap(),
        Some(123)
    );
    assert_eq!(store.ids_in_state("received").unwrap().len(), 500);
    assert_eq!(store.audit_of("S-00042").unwrap().len(), 1);
    assert_eq!(store.verify_audit().unwrap().entries, 500);
    // A removal of an archived key leaves a mark in sled, which hides it.
    store
        .transact(|tx| Ok::<_, Abort<()>>(tx.remove(Keyspace::Specimens, b"S-00123")?))
        .unwrap();
    assert_eq!(store.tree(Keyspace::Specimens).len(), 1, "the mark");
    assert_eq!(
        store.get::<u32>(Keyspace::Specimens, b"S-00123").unwrap(),
        None
    );
    assert_eq!(store.count(Keyspace::Specimens), 499);
    // Later writes go to sled; four spills make four segments, which merge into one.
    for round in 1..4 {
        write_specimens(&store, 500 * round, 500);
        store.spill().unwrap().unwrap();
    }
    assert_eq!(store.archive_usage().segments, 4);
    let merged = store.compact(&AtomicBool::new(false)).unwrap().unwrap();
    assert_eq!(merged.inputs, 4);
    assert_eq!(store.archive_usage().segments, 1);
    // The merge reached the oldest segment: the mark went with the value it hid.
    assert_eq!(merged.entries_out, merged.entries_in - 2);
    assert_eq!(store.count(Keyspace::Specimens), 1999);
    assert_eq!(store.verify_audit().unwrap().entries, 2000);
}

#[test]
fn a_spill_stopped_at_any_step_loses_nothing_and_the_next_open_cleans_up() {
    for step in [SpillStep::Frozen, SpillStep::Copied, SpillStep::Installed] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = Store::open_with(&dir, &options()).unwrap();
        write_specimens(&store, 0, 300);
        store.spill_until(Some(step)).unwrap();
        // Writes during the stopped spill go to the new generation.
        write_specimens(&store, 300, 10);
        store.flush_durable().unwrap();
        drop(store);
        let store = Store::open_with(&dir, &options()).unwrap();
        let files = std::fs::read_dir(dir.join("archive")).unwrap().count();
        match step {
            // The copy's file is not named by the manifest: deleted at open.
            SpillStep::Frozen | SpillStep::Copied => {
                assert_eq!(files, 0, "{step:?}");
                assert!(store.spill_due(), "{step:?}: the frozen generation waits");
            }
            SpillStep::Installed => {
                assert_eq!(files, 1);
                assert!(!store.spill_due());
            }
        }
        assert_eq!(store.count(Keyspace::Specimens), 310, "{step:?}");
        assert_eq!(store.verify_audit().unwrap().entries, 310, "{step:?}");
        store.spill().unwrap();
        assert_eq!(store.count(Keyspace::Specimens), 310, "{step:?}");
        let names: Vec<String> = store
            .inner
            .db
            .tree_names()
            .iter()
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect();
        let active = format!("specimens~{}", store.archive_usage().generation);
        assert!(
            names
                .iter()
                .filter(|n| n.starts_with("specimens"))
                .all(|n| *n == active),
            "{step:?}: archived generations are dropped: {names:?}"
        );
    }
}

#[test]
fn a_damaged_segment_is_refused_at_open_with_its_number() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open_with(&dir, &options()).unwrap();
    write_specimens(&store, 0, 50);
    let seg = store.spill().unwrap().unwrap().segment;
    drop(store);
    let path = dir.join("archive").join(format!("{seg:016x}.seg"));
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    let err = Store::open_with(&dir, &options()).unwrap_err().to_string();
    assert!(err.contains(&format!("{seg:016x}")), "{err}");
    assert!(!err.contains("S-000"), "{err}");
}

#[test]
fn format_2_to_4_stores_are_marked_5_and_keep_reading() {
    for earlier in [2u32, 3, 4] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("store");
        let store = Store::open_with(&dir, &options()).unwrap();
        write_specimens(&store, 0, 5);
        store.tamper_put(
            Keyspace::Meta,
            META_FORMAT_VERSION,
            &codec::encode_json(Keyspace::Meta, META_FORMAT_VERSION, &earlier).unwrap(),
        );
        store.flush_durable().unwrap();
        drop(store);
        let store = Store::open_with(&dir, &options()).unwrap();
        assert_eq!(
            store.format_version().unwrap(),
            FORMAT_VERSION,
            "from {earlier}"
        );
        assert_eq!(store.count(Keyspace::Specimens), 5);
    }
}

/// Where a start's time goes on a store that spilled many times (run by hand:
/// `cargo test --release --lib open_time -- --ignored --nocapture`).
#[test]
#[ignore = "a measurement, run by hand"]
fn open_time_after_many_spills() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let opts = options();
    let store = Store::open_with(&dir, &opts).unwrap();
    for round in 0..20u32 {
        store
            .transact(|tx| {
                for i in 0..6000u32 {
                    let id = format!("S-{round:03}-{i:06}");
                    tx.put(Keyspace::Specimens, id.as_bytes(), &"x".repeat(150))?;
                    tx.put(Keyspace::ByState, format!("received\0{id}").as_bytes(), &())?;
                    tx.put(
                        Keyspace::Results,
                        format!("{id}\0001").as_bytes(),
                        &"r".repeat(300),
                    )?;
                    tx.put(
                        Keyspace::Dedupe,
                        format!("bench\0{id}").as_bytes(),
                        &"d".repeat(40),
                    )?;
                    tx.put(
                        Keyspace::Runs,
                        format!("run\0{id}").as_bytes(),
                        &"m".repeat(60),
                    )?;
                    tx.put_raw_bytes(Keyspace::Raw, id.as_bytes(), "MSH|".repeat(100).as_bytes())?;
                    tx.audit(AuditEntry::new(1, "test", "stored", id))?;
                }
                Ok::<_, Abort<()>>(())
            })
            .unwrap();
        store.flush_durable().unwrap();
        store.spill().unwrap();
    }
    drop(store);
    drop(Store::open_with(&dir, &opts).unwrap());
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let db = open_db(&dir, &opts).unwrap();
        let engine = t.elapsed();
        drop(db);
        let t = std::time::Instant::now();
        let store = Store::open_with(&dir, &opts).unwrap();
        let all = t.elapsed();
        println!(
            "sled open alone {engine:?}; the store's open {all:?}; {:?}",
            store.archive_usage()
        );
        drop(store);
    }
    let mut sizes = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        if e.path().is_file() {
            sizes += e.metadata().unwrap().len();
        }
    }
    println!("sled's files {} MiB", sizes >> 20);
}

#[test]
fn a_spill_is_due_at_the_threshold_and_not_one_key_before() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        archive_after_keys: 10,
        ..StoreOptions::default()
    };
    let store = Store::open_with(&tmp.path().join("store"), &opts).unwrap();
    let put = |ks: Keyspace, from: u32, n: u32| {
        store
            .transact(|tx| {
                for i in from..from + n {
                    tx.put(ks, format!("K-{i:03}").as_bytes(), &i)?;
                }
                Ok::<_, Abort<()>>(())
            })
            .unwrap();
    };
    put(Keyspace::Specimens, 0, 9);
    assert!(!store.spill_due(), "9 keys of 10");
    // Keys of a keyspace that stays in sled do not count.
    put(Keyspace::Outbox, 0, 5);
    assert!(!store.spill_due(), "outbox keys do not count");
    put(Keyspace::Specimens, 9, 1);
    assert!(store.spill_due(), "10 keys of 10");
    put(Keyspace::Specimens, 10, 1);
    assert!(store.spill_due(), "11 keys of 10");
    store.spill().unwrap().unwrap();
    assert!(!store.spill_due(), "counted again from 0 after the spill");
    put(Keyspace::Specimens, 20, 9);
    assert!(!store.spill_due());
    put(Keyspace::Specimens, 29, 1);
    assert!(store.spill_due());

    // A threshold of 0: never due on its own, however many keys.
    let tmp = tempfile::tempdir().unwrap();
    let never = Store::open_with(&tmp.path().join("store"), &options()).unwrap();
    never
        .transact(|tx| {
            for i in 0..5000u32 {
                tx.put(Keyspace::Specimens, format!("K-{i:05}").as_bytes(), &i)?;
            }
            Ok::<_, Abort<()>>(())
        })
        .unwrap();
    assert!(!never.spill_due());
}

/// A version-4 store's segments are of layout 1 (one bloom filter for the whole segment): this
/// build reads them as they are, through its lookups, state scans and subject scans, and a
/// merge writes what they hold in layout 2.
#[test]
fn a_format_4_stores_layout_1_segments_read_and_a_merge_rewrites_them() {
    use super::segment::{Segment, SegmentWriter};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("store");
    let store = Store::open_with(&dir, &options()).unwrap();
    // Four spills: segments of one size, which a merge takes together.
    for round in 0..4 {
        write_specimens(&store, 150 * round, 150);
        store.spill().unwrap().unwrap();
    }
    store.tamper_put(
        Keyspace::Meta,
        META_FORMAT_VERSION,
        &codec::encode_json(Keyspace::Meta, META_FORMAT_VERSION, &4u32).unwrap(),
    );
    store.flush_durable().unwrap();
    drop(store);
    // Each segment written again as a version-4 build wrote it.
    let archive = dir.join("archive");
    let mut ids: Vec<u64> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| u64::from_str_radix(n.strip_suffix(".seg")?, 16).ok())
        .collect();
    ids.sort();
    assert_eq!(ids.len(), 4);
    let header =
        |id: u64| std::fs::read(super::segment::segment_path(&archive, id)).unwrap()[..8].to_vec();
    for &id in &ids {
        assert_eq!(header(id), b"CUSTSEG\x02", "this build writes layout 2");
        let entries: Vec<_> = std::sync::Arc::new(Segment::open(&archive, id).unwrap())
            .iter(std::ops::Bound::Unbounded, std::ops::Bound::Unbounded)
            .map(Result::unwrap)
            .collect();
        let mut w = SegmentWriter::create_layout_1(&archive, id, entries.len() as u64).unwrap();
        for (k, v) in &entries {
            w.add(k, v.as_deref()).unwrap();
        }
        w.finish().unwrap().unwrap();
        assert_eq!(header(id), b"CUSTSEG\x01");
    }
    let reads = |store: &Store| {
        for i in [0u32, 123, 299, 300, 456, 599] {
            let id = format!("S-{i:05}");
            assert_eq!(
                store
                    .get::<u32>(Keyspace::Specimens, id.as_bytes())
                    .unwrap(),
                Some(i)
            );
            assert_eq!(store.audit_of(&id).unwrap().len(), 1, "{id}");
        }
        assert_eq!(
            store.get::<u32>(Keyspace::Specimens, b"S-00123x").unwrap(),
            None
        );
        assert_eq!(store.ids_in_state("received").unwrap().len(), 600);
        assert_eq!(store.count(Keyspace::Specimens), 600);
        assert_eq!(store.verify_audit().unwrap().entries, 600);
    };
    let store = Store::open_with(&dir, &options()).unwrap();
    assert_eq!(store.format_version().unwrap(), FORMAT_VERSION);
    store.load_archive().unwrap();
    reads(&store);
    let merged = store.compact(&AtomicBool::new(false)).unwrap().unwrap();
    assert_eq!(merged.inputs, 4);
    let usage = store.archive_usage();
    assert_eq!(usage.segments, 1);
    reads(&store);
    let id = store.tiers().segments[0].id();
    assert_eq!(header(id), b"CUSTSEG\x02");
    drop(store);
    let store = Store::open_with(&dir, &options()).unwrap();
    reads(&store);
}
