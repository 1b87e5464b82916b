//! The examples shipped for a newcomer (`config/examples/`) pass through the example
//! configuration's analyzers cleanly, through the real daemon: the clean accession, its screen
//! and validity messages and the closing QC sets of both runs give a specimen ready for review,
//! judged by today's edition, every message ACK AA, both runs accepted automatically with their
//! QC passed; the flawed accession, named as such, is held for its correction.

mod common;

use common::*;

/// The `[[analyzer]]` sections of the shipped `config/custodian.toml`, on free ports.
fn example_analyzers() -> String {
    let text = std::fs::read_to_string(root().join("config/custodian.toml")).unwrap();
    let start = text
        .find("\n[[analyzer]]")
        .expect("the example configuration has analyzers");
    let mut out = String::new();
    for line in text[start..].lines() {
        if line.starts_with("listen = ") {
            out.push_str("listen = \"127.0.0.1:0\"\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn example(name: &str) -> Vec<u8> {
    std::fs::read(root().join("config/examples").join(name)).unwrap()
}

#[test]
fn the_shipped_examples_pass_through_the_example_configuration() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &example_analyzers());
    let d = Daemon::start(dir.path());

    d.drop_lims("accession.xml", &example("accession.xml"))
        .expect("the clean example accession is stored");
    for (analyzer, file) in [
        ("immunoassay-1", "oru-screen.hl7"),
        ("chemistry-1", "oru-validity.hl7"),
    ] {
        let ack = send(d.addr(analyzer), &example(file)).unwrap();
        assert_eq!(ack_code(&ack), "AA", "{file} to {analyzer}: {ack}");
    }
    // Their runs are open until the closing QC sets arrive: the results do not count yet.
    let rec = d.specimen("X0000101-DEMO").unwrap();
    assert_eq!(rec["state"], "screened", "{rec}");
    let mut qc: Vec<String> = std::fs::read_dir(root().join("config/examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("qc-"))
        .collect();
    qc.sort();
    assert_eq!(qc.len(), 8, "{qc:?}");
    for file in &qc {
        let analyzer = if file.starts_with("qc-screen") {
            "immunoassay-1"
        } else {
            "chemistry-1"
        };
        let ack = send(d.addr(analyzer), &example(file)).unwrap();
        assert_eq!(ack_code(&ack), "AA", "{file} to {analyzer}: {ack}");
    }
    let (s, body) = d.get("/api/runs?state=accepted", Some(TOKEN));
    assert_eq!(s, 200, "{body}");
    let runs: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2, "{runs}");
    assert!(
        runs.as_array().unwrap().iter().all(|r| r["qc"] == "passed"),
        "{runs}"
    );
    let rec = d.specimen("X0000101-DEMO").unwrap();
    assert_eq!(rec["state"], "ready_for_review", "{rec}");
    assert_eq!(rec["edition"]["profile"], "part40-2023", "{rec}");
    // The CCF's DOT agency is kept for the summary to DOT (40.111(d), Appendix E item 2).
    assert_eq!(rec["accession"]["ccf"]["dot_agency"], "fmcsa", "{rec}");
    let (s, body) = d.get("/api/review/X0000101-DEMO", Some(TOKEN));
    assert_eq!(s, 200, "{body}");
    let item: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(item["draft_report"]["results"][0], "negative", "{item}");

    // The flawed example is held for its correction, as its name says.
    d.drop_lims(
        "accession-flawed.xml",
        &example("accession-flawed-unsigned-collector-certification.xml"),
    )
    .expect("a correctable flaw is stored and held, not rejected");
    let rec = d.specimen("X0000102-DEMO").unwrap();
    assert_eq!(rec["state"], "held", "{rec}");
}
