//! Editions through the real daemon (port 0, temporary store), with the example configuration's
//! rules (`rules.default_profile = "part40-2001"`, the shipped profiles) and its analyzer
//! mappings: a specimen gets its edition once, at accession, from its CCF dates, and keeps it —
//! a 2026 collection is judged by today's DOT edition, a 2005 one by the 2001 edition, both
//! screen through the same mapping without AE; a 2014 collection is held ("no edition shipped
//! for this date"); after `rules.default_profile` changes and the daemon restarts, no specimen's
//! edition or verdict changes.

mod common;
use common::*;

/// The example configuration's analyzers, each on port 0.
fn example_analyzers() -> String {
    let text = std::fs::read_to_string(root().join("config/custodian.toml")).unwrap();
    let mut v: toml::Table = toml::from_str(&text).unwrap();
    let mut analyzers = v.remove("analyzer").expect("the example has analyzers");
    for a in analyzers.as_array_mut().unwrap() {
        a.as_table_mut()
            .unwrap()
            .insert("listen".into(), "127.0.0.1:0".into());
    }
    let mut out = toml::Table::new();
    out.insert("analyzer".into(), analyzers);
    toml::to_string(&out).unwrap()
}

/// The shipped accession example for `id`, without a named profile, collected on `collected`
/// and received the next day.
fn accession(id: &str, collected: &str, received: &str) -> Vec<u8> {
    let text = String::from_utf8(accession_xml_clean(id)).unwrap();
    let text = text
        .replace("    <profile>part40-2001</profile>\n", "")
        .replace(
            "<collection-date>2024-03-04</collection-date>",
            &format!("<collection-date>{collected}</collection-date>"),
        )
        .replace(
            "<receipt-date>2024-03-05</receipt-date>",
            &format!("<receipt-date>{received}</receipt-date>"),
        );
    assert!(!text.contains("<profile>") && text.contains(collected));
    text.into_bytes()
}

fn ng(code: &'static str) -> (&'static str, &'static str, &'static str) {
    (code, "0", "ng/mL")
}

const CHEMISTRY: [(&str, &str, &str); 4] = [
    ("CREA", "95", "mg/dL"),
    ("SG", "1.0160", ""),
    ("PH", "5.8", "pH"),
    ("NIT", "0", "mcg/mL"),
];

/// The specimen's edition and last verdict, as stored.
fn judged(d: &Daemon, id: &str) -> (serde_json::Value, serde_json::Value, String) {
    let rec = d.specimen(id).unwrap_or_else(|| panic!("{id} unknown"));
    (
        rec["edition"].clone(),
        rec["evaluation"].clone(),
        rec["state"].as_str().unwrap_or("").to_string(),
    )
}

#[test]
fn each_specimen_keeps_the_edition_chosen_at_accession() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &example_analyzers());
    let mut d = Daemon::start(dir.path());
    let (ia, chem) = (d.addr("immunoassay-1"), d.addr("chemistry-1"));

    // A screen that arrives before its accession waits, unjudged.
    let today_screen = [
        ng("THC50"),
        ng("COC300"),
        ng("OPI2000"),
        ng("AMP1000"),
        ng("PCP25"),
        ng("6AM10"),
        ng("HYD300"),
        ng("OXY100"),
        ng("MDMA500"),
    ];
    let ack = send(ia, &oru("E-1", "ED-2026", &today_screen)).unwrap();
    assert_eq!(ack_code(&ack), "AA", "{ack}\n{}", d.log());
    let rec = d.specimen("ED-2026").unwrap();
    assert_eq!(rec["state"], "awaiting_accession");
    assert!(
        rec.get("evaluation").is_none(),
        "judged before accession: {rec}"
    );

    d.drop_lims(
        "ed-2026.xml",
        &accession("ED-2026", "2026-11-20", "2026-11-21"),
    )
    .unwrap();
    d.drop_lims(
        "ed-2005.xml",
        &accession("ED-2005", "2005-06-01", "2005-06-02"),
    )
    .unwrap();
    d.drop_lims(
        "ed-2014.xml",
        &accession("ED-2014", "2014-05-05", "2014-05-06"),
    )
    .unwrap();

    // 2026: today's DOT urine edition, chosen by the collection date.
    let (edition, _, _) = judged(&d, "ED-2026");
    assert_eq!(edition["status"], "assigned", "{edition}");
    assert_eq!(edition["profile"], "part40-2023", "{edition}");
    assert_eq!(edition["basis"], "collected_on 2026-11-20", "{edition}");
    // 2005: the 2001 edition.
    let (edition, _, _) = judged(&d, "ED-2005");
    assert_eq!(edition["profile"], "part40-2001", "{edition}");
    // 2014: no shipped edition covers it (the 2010 edition is not shipped): held untested.
    let (edition, evaluation, state) = judged(&d, "ED-2014");
    assert_eq!(state, "held");
    assert_eq!(edition["status"], "untested", "{edition}");
    assert!(
        edition["reason"]
            .as_str()
            .unwrap()
            .starts_with("no edition shipped for this date (dot urine, collected_on 2014-05-05)"),
        "{edition}"
    );
    assert!(
        evaluation.is_null(),
        "never judged by a neighbour: {evaluation}"
    );

    // The same mapping screens both editions without AE: `opiates` (OPI2000) is the 2001 class
    // and today's codeine/morphine class.
    let old_screen = [
        ng("THC50"),
        ng("COC300"),
        ng("OPI2000"),
        ng("AMP1000"),
        ng("PCP25"),
    ];
    let ack = send(ia, &oru("E-2", "ED-2005", &old_screen)).unwrap();
    assert_eq!(ack_code(&ack), "AA", "{ack}\n{}", d.log());
    for (n, id) in [(3, "ED-2026"), (4, "ED-2005")] {
        let ack = send(chem, &oru(&format!("E-{n}"), id, &CHEMISTRY)).unwrap();
        assert_eq!(ack_code(&ack), "AA", "{id}: {ack}\n{}", d.log());
    }
    // Only results of an accepted run count: the closing QC sets close both analyzers' runs,
    // every control passes and the runs are accepted automatically.
    assert_eq!(judged(&d, "ED-2026").2, "screened", "its runs are open");
    close_example_run(&d, "immunoassay-1", None);
    close_example_run(&d, "chemistry-1", None);
    for (id, profile) in [("ED-2026", "part40-2023"), ("ED-2005", "part40-2001")] {
        let (_, evaluation, state) = judged(&d, id);
        assert_eq!(state, "ready_for_review", "{id}: {evaluation}\n{}", d.log());
        assert_eq!(evaluation["profile"], profile, "{id}");
        assert_eq!(
            evaluation["verdict"]["results"],
            serde_json::json!(["negative"]),
            "{id}"
        );
    }

    // The panel guard follows the specimen's edition: today's hydrocodone screen is not a test
    // of the 2001 edition. The AE and the log line name the edition and the target.
    let ack = send(ia, &oru("E-5", "ED-2005", &[ng("HYD300")])).unwrap();
    assert_eq!(ack_code(&ack), "AE", "{ack}");
    assert!(
        ack.contains(
            "initial target `hydrocodone_hydromorphone` is outside the panel of edition part40-2001"
        ),
        "{ack}"
    );
    wait_until(
        "the panel-guard log line",
        std::time::Duration::from_secs(5),
        || {
            d.log().lines().any(|l| {
                l.contains("outside the specimen's edition panel")
                    && l.contains("part40-2001")
                    && l.contains("hydrocodone_hydromorphone")
            })
        },
    );
    // A held untested specimen takes no results.
    let ack = send(ia, &oru("E-6", "ED-2014", &old_screen)).unwrap();
    assert_eq!(ack_code(&ack), "AE", "{ack}");

    // Re-assignment is explicit and checked: an HHS edition never judges a DOT specimen, and
    // the 2001 edition cannot take today's stored screens.
    let out = d.cli(&[
        "specimen",
        "edition",
        "ED-2014",
        "hhs-urine-2025",
        "--reason",
        "test",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is for hhs urine specimens"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli(&[
        "specimen",
        "edition",
        "ED-2026",
        "part40-2001",
        "--reason",
        "test",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not in the panel of edition part40-2001"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let before: Vec<_> = ["ED-2026", "ED-2005", "ED-2014"]
        .iter()
        .map(|id| judged(&d, id))
        .collect();

    // Another default and a restart: nothing moves.
    assert_eq!(d.term(), Some(0));
    set_default_profile(&cfg, "part40-2023");
    assert!(
        std::fs::read_to_string(&cfg)
            .unwrap()
            .contains("default_profile = \"part40-2023\"")
    );
    d.restart();
    let after: Vec<_> = ["ED-2026", "ED-2005", "ED-2014"]
        .iter()
        .map(|id| judged(&d, id))
        .collect();
    assert_eq!(before, after);

    // New results re-evaluate under the specimen's own edition, not the new default.
    let chem = d.addr("chemistry-1");
    let ack = send(chem, &oru("E-7", "ED-2005", &CHEMISTRY[..1])).unwrap();
    assert_eq!(ack_code(&ack), "AA", "{ack}\n{}", d.log());
    let (edition, evaluation, state) = judged(&d, "ED-2005");
    assert_eq!(edition["profile"], "part40-2001");
    assert_eq!(evaluation["profile"], "part40-2001");
    assert_eq!(evaluation["verdict"], before[1].1["verdict"]);
    assert_eq!(state, "ready_for_review");
}
