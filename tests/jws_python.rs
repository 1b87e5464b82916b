//! Cross-check with a third-party JOSE library: a report signed by custodian is verified by
//! python `jwcrypto` (installed by `tests/run.sh`; `pip install jwcrypto` by hand), and its payload
//! carries every element the MRO delivery contract requires. `custodian verify` is checked on
//! the same files.

use custodian::domain::parties::Laboratory;
use custodian::domain::report::{self, Release, Report};
use custodian::domain::rules;
use custodian::domain::specimen::{
    Accession, Bottle, Ccf, Party, ResultEntry, ResultKind, Source, SpecimenRecord, State,
};
use custodian::trust::signing::{self, KeyStore};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

const VERIFY_PY: &str = r#"
import json, sys
from jwcrypto import jwk, jws
keys = jwk.JWKSet.from_json(open(sys.argv[1]).read())
token = jws.JWS()
token.deserialize(open(sys.argv[2]).read().strip())
header = token.jose_header
key = keys.get_key(header["kid"])
if key is None:
    sys.exit("no key " + header["kid"])
if key.thumbprint() != header["kid"]:
    sys.exit("kid is not the RFC 7638 thumbprint")
token.verify(key, alg="EdDSA")
sys.stdout.write(json.dumps({"header": header, "payload": json.loads(token.payload)}))
"#;

fn python() -> String {
    let probe = Command::new("python3")
        .args(["-c", "import jwcrypto"])
        .output()
        .expect("python3 is needed for the jwcrypto cross-check");
    assert!(
        probe.status.success(),
        "python package jwcrypto is missing: run `python3 -m pip install jwcrypto` \
         (tests/run.sh installs it); {}",
        String::from_utf8_lossy(&probe.stderr)
    );
    "python3".to_string()
}

/// Runs the jwcrypto verifier; Ok(header and payload) or Err(its error output).
fn jwcrypto_verify(jwks: &Path, jws: &Path) -> Result<Value, String> {
    let out = Command::new(python())
        .args(["-c", VERIFY_PY])
        .arg(jwks)
        .arg(jws)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn profiles() -> rules::ProfileSet {
    let mut problems = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let set = custodian::app::config::load_profiles(&root.join("config/profiles"), &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    set
}

fn entry(kind: ResultKind, target: &str, value: &str) -> ResultEntry {
    ResultEntry {
        kind,
        target: target.into(),
        value: Some(rust_decimal::Decimal::from_str(value).unwrap()),
        unit: String::new(),
        bottle: Bottle::A,
        source: Source::Lims {
            document: "batch-1.xml".into(),
        },
        received_at_ms: 5,
        ..ResultEntry::default()
    }
}

/// A specimen positive for morphine at 32,000 ng/mL: 40.97(f) requires its value.
fn positive_morphine() -> SpecimenRecord {
    let p = profiles();
    let ccf = Ccf {
        employer: Party {
            name: "Acme Freight Lines".into(),
            id: Some("EMP-0042".into()),
            ..Party::default()
        },
        mro: Party {
            name: "Dr. Mary Reviewer".into(),
            id: Some("mro-reviewer".into()),
            address: Some("5 Clinic Road".into()),
            phone: None,
        },
        donor_id: Some("E-778812".into()),
        reason_for_test: Some("post-accident".into()),
        dot_agency: None,
        collector: Party {
            name: "Carl Collector".into(),
            phone: Some("(555) 010-0000".into()),
            ..Party::default()
        },
        collected_on: "2026-03-02".into(),
        received_on: "2026-03-03".into(),
        split_collected: true,
        observed: false,
        remarks: None,
        storage: Default::default(),
    };
    let mut r = SpecimenRecord::new("S-7700001", 0);
    r.attach_accession(
        Accession {
            ccf,
            findings: rules::Accession::default(),
            // Written for the 2001 edition (its CCF dates would select today\'s).
            profile: Some("part40-2001".into()),
            program: Default::default(),
            specimen_type: Default::default(),
            document: "acc-7700001.xml".into(),
            received_at_ms: 1,
            correction_initiated_on: None,
        },
        &p,
        "part40-2001",
        1,
    )
    .unwrap();
    let mut results: Vec<ResultEntry> = ["marijuana", "cocaine", "pcp", "amphetamines"]
        .iter()
        .map(|c| entry(ResultKind::Initial, c, "1"))
        .collect();
    results.push(entry(ResultKind::Initial, "opiates", "50000"));
    results.push(entry(ResultKind::Validity, "creatinine", "90"));
    results.push(entry(ResultKind::Validity, "ph", "6.1"));
    results.push(entry(ResultKind::Validity, "nitrite", "0"));
    results.push(entry(ResultKind::Confirmation, "morphine", "32000"));
    results.push(entry(ResultKind::Confirmation, "codeine", "1200"));
    results.push(entry(ResultKind::Confirmation, "6am", "0"));
    r.attach_results(results, &p, "part40-2001", 2).unwrap();
    assert_eq!(r.state, State::ReadyForReview);
    r
}

fn lab() -> Laboratory {
    Laboratory {
        name: "Example Toxicology Laboratory".into(),
        address: "100 Example Way, Springfield, IL 62701".into(),
    }
}

fn build(id: &str) -> Report {
    report::build(
        &lab(),
        &positive_morphine(),
        &Release {
            report_id: id.into(),
            released_at_ms: 1_772_560_000_000,
            certifying_scientist: "Dr. Sara Scientist".into(),
            replaces: None,
        },
    )
    .unwrap()
}

/// Every element of the contract's payload table (40.97(b)(1)(i) (A)-(M)), with its parts.
fn assert_contract_elements(p: &Value) {
    let present = |path: &[&str]| {
        let mut v = p;
        for k in path {
            v = v
                .get(k)
                .unwrap_or_else(|| panic!("{} missing from {p}", path.join(".")));
        }
        v.clone()
    };
    for path in [
        &["report_id"][..],
        &["laboratory", "name"],
        &["laboratory", "address"],
        &["employer", "name"],
        &["employer", "id"],
        &["mro", "name"],
        &["mro", "id"],
        &["specimen_id"],
        &["donor_id"],
        &["reason_for_test"],
        &["collector", "name"],
        &["collector", "phone"],
        &["collected_on"],
        &["received_on"],
        &["released_at"],
        &["certifying_scientist"],
        &["results"],
        &["dilute"],
        &["positive_analytes"],
        &["quantitations"],
        &["remarks"],
        &["profile"],
    ] {
        let v = present(path);
        if let Some(s) = v.as_str() {
            assert!(!s.trim().is_empty(), "{} is empty", path.join("."));
        }
    }
    assert_eq!(present(&["results"]), serde_json::json!(["positive"]));
    assert_eq!(
        present(&["positive_analytes"]),
        serde_json::json!(["morphine"])
    );
    assert_eq!(
        present(&["quantitations"]),
        serde_json::json!({"morphine": {"value": 32000, "unit": "ng/mL"}}),
        "40.97(f): morphine >= 15000 quantitated; codeine below it is not"
    );
    assert_eq!(present(&["released_at"]), "2026-03-03T17:46:40.000Z");
    let text = p.to_string().to_lowercase();
    assert!(!text.contains("split"), "40.175(b)(1): {text}");
}

#[test]
fn jwcrypto_verifies_a_custodian_report() {
    let d = tempfile::tempdir().unwrap();
    let keys = KeyStore::new(d.path().join("keys"));
    let kid = keys.generate().unwrap();
    let report = build("RPT-PY-1");
    let jws = keys.active().unwrap().sign(&report.to_bytes());
    let jws_file = d.path().join("report.jws");
    std::fs::write(&jws_file, &jws).unwrap();
    let jwks_file = d.path().join("jwks.json");
    std::fs::write(
        &jwks_file,
        serde_json::to_string(&keys.public_set().unwrap()).unwrap(),
    )
    .unwrap();

    let out = jwcrypto_verify(&jwks_file, &jws_file).expect("jwcrypto verifies the report");
    assert_eq!(out["header"]["alg"], "EdDSA");
    assert_eq!(out["header"]["kid"], kid.as_str());
    let payload = &out["payload"];
    assert_eq!(*payload, serde_json::to_value(&report).unwrap());
    assert_contract_elements(payload);

    // The same file through `custodian verify`.
    let bin = env!("CARGO_BIN_EXE_custodian");
    let ok = Command::new(bin)
        .arg("verify")
        .arg(&jws_file)
        .arg("--key")
        .arg(&jwks_file)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let printed: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(printed, *payload);
}

#[test]
fn jwcrypto_and_custodian_refuse_a_tampered_report() {
    let d = tempfile::tempdir().unwrap();
    let keys = KeyStore::new(d.path().join("keys"));
    keys.generate().unwrap();
    let report = build("RPT-PY-2");
    let jws = keys.active().unwrap().sign(&report.to_bytes());
    let mut tampered_report = report.clone();
    tampered_report.results = vec![rules::ResultCategory::Negative];
    tampered_report.positive_analytes.clear();
    tampered_report.quantitations.clear();
    let parts: Vec<&str> = jws.split('.').collect();
    use base64::Engine;
    let payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tampered_report.to_bytes());
    let tampered = format!("{}.{payload}.{}", parts[0], parts[2]);
    let file = d.path().join("tampered.jws");
    std::fs::write(&file, tampered).unwrap();
    let jwk_file = d.path().join("active.jwk");
    std::fs::write(
        &jwk_file,
        serde_json::to_string(&keys.active().unwrap().public_jwk()).unwrap(),
    )
    .unwrap();
    let jwks_file = d.path().join("jwks.json");
    std::fs::write(
        &jwks_file,
        serde_json::to_string(&keys.public_set().unwrap()).unwrap(),
    )
    .unwrap();

    let err = jwcrypto_verify(&jwks_file, &file).expect_err("jwcrypto must refuse");
    assert!(
        err.contains("Verification failed") || err.contains("Invalid"),
        "{err}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_custodian"))
        .arg("verify")
        .arg(&file)
        .arg("--key")
        .arg(&jwk_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "nothing printed for an invalid report"
    );
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("signature does not verify"), "{why}");
}

#[test]
fn after_rotation_jwcrypto_verifies_old_and_new_reports() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("keys");
    let bin = env!("CARGO_BIN_EXE_custodian");
    let generate = || {
        let out = Command::new(bin)
            .args(["keys", "generate", "--dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let old_kid = generate();
    let keys = KeyStore::new(&dir);
    let old = keys.active().unwrap().sign(&build("RPT-PY-3").to_bytes());
    let new_kid = generate();
    assert_ne!(old_kid, new_kid);
    let new = keys.active().unwrap().sign(&build("RPT-PY-4").to_bytes());

    let export = Command::new(bin)
        .args(["keys", "export-public", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(export.status.success());
    let jwks_file = d.path().join("jwks.json");
    std::fs::write(&jwks_file, &export.stdout).unwrap();
    let set = signing::JwkSet::parse(&String::from_utf8(export.stdout).unwrap()).unwrap();
    assert_eq!(set.keys.len(), 2);

    for (jws, kid, id) in [(old, &old_kid, "RPT-PY-3"), (new, &new_kid, "RPT-PY-4")] {
        let f = d.path().join(format!("{id}.jws"));
        std::fs::write(&f, &jws).unwrap();
        let out = jwcrypto_verify(&jwks_file, &f).expect("verifies after rotation");
        assert_eq!(out["header"]["kid"], kid.as_str());
        assert_eq!(out["payload"]["report_id"], id);
        assert_contract_elements(&out["payload"]);
    }

    // The active key alone no longer verifies the old report.
    let active = Command::new(bin)
        .args(["keys", "export-public", "--active", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let jwk_file = d.path().join("active.jwk");
    std::fs::write(&jwk_file, &active.stdout).unwrap();
    let out = Command::new(bin)
        .arg("verify")
        .arg(d.path().join("RPT-PY-3.jws"))
        .arg("--key")
        .arg(&jwk_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains(&format!("key id {old_kid} is not in the key set")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
