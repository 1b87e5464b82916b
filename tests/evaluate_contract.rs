//! `custodian evaluate` as the contract fixes it, through the real binary: the shared conformance
//! cases (copied into tests/conformance), exit codes, per-line errors, profile precedence.

use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn custodian() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_custodian"));
    c.env_remove("CUSTODIAN_CONFIG");
    for (k, _) in std::env::vars() {
        if k.starts_with("CUSTODIAN__") {
            c.env_remove(k);
        }
    }
    c
}

/// Runs `custodian evaluate` with `args` and `stdin`; returns (exit code, output lines).
fn evaluate(args: &[&str], stdin: &str) -> (i32, Vec<Value>) {
    let config = root().join("config/custodian.toml");
    let mut child = custodian()
        .arg("evaluate")
        .arg("--config")
        .arg(&config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The binary may exit before reading (a usage error): a broken pipe is not a failure here.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    let lines = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every output line is JSON"))
        .collect();
    (out.status.code().unwrap(), lines)
}

fn read_jsonl(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn same_number(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-6 * y.abs().max(1e-12),
        _ => false,
    }
}

/// The contract's matching rule: every compared key equal; remarks not compared.
fn matches(got: &Value, want: &Value) -> Result<(), String> {
    for k in [
        "results",
        "dilute",
        "positive_analytes",
        "redesignated",
        "retain_one_year",
    ] {
        if got[k] != want[k] {
            return Err(format!("{k}: got {} want {}", got[k], want[k]));
        }
    }
    match (&got["hold"], &want["hold"]) {
        (Value::Null, Value::Null) => {}
        (g, w) if !g.is_null() && !w.is_null() => {
            if g["business_days"] != w["business_days"] {
                return Err(format!("hold.business_days: got {g} want {w}"));
            }
        }
        (g, w) => return Err(format!("hold: got {g} want {w}")),
    }
    let (gq, wq) = (
        got["quantitations"].as_object().unwrap(),
        want["quantitations"].as_object().unwrap(),
    );
    if gq.len() != wq.len()
        || wq
            .iter()
            .any(|(k, v)| !gq.get(k).is_some_and(|g| same_number(g, v)))
    {
        return Err(format!(
            "quantitations: got {} want {}",
            got["quantitations"], want["quantitations"]
        ));
    }
    Ok(())
}

/// The case files and how many cases each holds: the shared dev cases (copied from
/// shared/conformance, amended contract) and this project's own cases at the editions' edges.
const SUITES: [(&str, usize); 2] = [("part40-dev", 54), ("editions", 21)];

fn suite(name: &str) -> (String, Vec<Value>) {
    let dir = root().join("tests/conformance");
    (
        std::fs::read_to_string(dir.join(format!("{name}.cases.jsonl"))).unwrap(),
        read_jsonl(&dir.join(format!("{name}.expected.jsonl"))),
    )
}

/// `matches`, and the profile where the expected verdict names one.
fn matches_with_profile(got: &Value, want: &Value) -> Result<(), String> {
    matches(got, want)?;
    if want.get("profile").is_some() && got["profile"] != want["profile"] {
        return Err(format!(
            "profile: got {} want {}",
            got["profile"], want["profile"]
        ));
    }
    Ok(())
}

#[test]
fn conformance_cases_match_through_the_binary() {
    for (name, count) in SUITES {
        let (cases, expected) = suite(name);
        let (code, got) = evaluate(&["-"], &cases);
        assert_eq!(code, 0, "{name}: {got:?}");
        assert_eq!(got.len(), expected.len(), "{name}");
        assert_eq!(got.len(), count, "{name}");
        let mut failures = Vec::new();
        for g in &got {
            let w = expected
                .iter()
                .find(|e| e["id"] == g["id"])
                .expect("id echoed");
            if let Err(e) = matches_with_profile(g, w) {
                failures.push(format!("{name} {}: {e}", g["id"]));
            }
            // Shape of every verdict.
            assert!(g["profile"].is_string());
            assert!(g["remarks"].is_array());
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

#[test]
fn conformance_cases_match_through_the_library() {
    // The same code path the binary and the daemon use.
    let (_, profiles) =
        custodian::app::config::load_with_env(&root().join("config/custodian.toml"), &[]).unwrap();
    let ev = custodian::app::evaluate::Evaluator::new(&profiles, "part40-2001").unwrap();
    for (name, count) in SUITES {
        let (cases, expected) = suite(name);
        let cases: Vec<Value> = cases
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(cases.len(), count, "{name}");
        for c in &cases {
            let w = expected
                .iter()
                .find(|e| e["id"] == c["id"])
                .expect("an expected verdict for every case");
            let out = ev.line(&c.to_string());
            assert!(out.evaluated, "{}", out.output);
            matches_with_profile(&out.output, w).unwrap_or_else(|e| panic!("{}: {e}", c["id"]));
        }
    }
}

#[test]
fn a_date_no_edition_covers_is_an_error_never_a_neighbouring_edition() {
    let no_edition = "no edition shipped for this date";
    let input = concat!(
        // DOT urine: the day before 2001, the 2010 edition's period (not shipped), both edges.
        "{\"id\":\"before-2001\",\"collected_on\":\"2001-07-31\",\"initial\":{\"cocaine\":400}}\n",
        "{\"id\":\"gap-first\",\"collected_on\":\"2010-10-01\",\"initial\":{\"cocaine\":400}}\n",
        "{\"id\":\"gap-mid\",\"collected_on\":\"2014-05-05\"}\n",
        "{\"id\":\"gap-last\",\"collected_on\":\"2017-12-31\",\"received_on\":\"2018-01-02\"}\n",
        // Oral fluid the day before the 2023 rule took effect.
        "{\"id\":\"of-before\",\"collected_on\":\"2023-05-31\",\"specimen_type\":\"oral_fluid\"}\n",
        // HHS 2025 panel: received the day before 2025-07-07 (collected date irrelevant).
        "{\"id\":\"hhs-before\",\"program\":\"hhs\",\"collected_on\":\"2025-07-01\",\"received_on\":\"2025-07-06\"}\n",
        // An edition, then the good line after it, to show the run goes on.
        "{\"id\":\"ok\",\"collected_on\":\"2018-01-01\"}\n",
    );
    let (code, out) = evaluate(&["-"], input);
    assert_eq!(code, 2);
    assert_eq!(out.len(), 7);
    for o in &out[..6] {
        let e = o["error"].as_str().unwrap_or_else(|| panic!("{o}"));
        assert!(e.contains(no_edition), "{o}");
        assert!(o.get("results").is_none(), "{o}");
    }
    assert!(out[1]["error"].as_str().unwrap().contains("2010-10-01"));
    assert!(
        out[5]["error"]
            .as_str()
            .unwrap()
            .contains("received_on 2025-07-06")
    );
    assert_eq!(out[6]["profile"], "part40-2023");
}

#[test]
fn program_and_specimen_type_are_never_crossed() {
    let input = concat!(
        // Fentanyl is not a DOT analyte (40.13(c)).
        "{\"id\":\"dot-fentanyl\",\"collected_on\":\"2026-10-15\",\"initial\":{\"fentanyl\":5}}\n",
        // No HHS oral-fluid panel is shipped.
        "{\"id\":\"hhs-of\",\"program\":\"hhs\",\"specimen_type\":\"oral_fluid\",\"received_on\":\"2026-10-15\"}\n",
        // Oral fluid without a date: the default (DOT urine) does not judge it.
        "{\"id\":\"of-no-date\",\"specimen_type\":\"oral_fluid\",\"initial\":{\"thc\":5}}\n",
        // A named profile of another specimen type or program.
        "{\"id\":\"of-named-urine\",\"profile\":\"part40-2023\",\"specimen_type\":\"oral_fluid\"}\n",
        "{\"id\":\"dot-named-hhs\",\"profile\":\"hhs-urine-2025\"}\n",
        // Received before it was collected.
        "{\"id\":\"backwards\",\"collected_on\":\"2026-10-15\",\"received_on\":\"2026-10-14\"}\n",
        // Not a date, not a program.
        "{\"id\":\"bad-date\",\"collected_on\":\"2026-02-30\"}\n",
        "{\"id\":\"bad-program\",\"program\":\"faa\"}\n",
        // HHS without the received date: the default (DOT) does not judge it.
        "{\"id\":\"hhs-no-received\",\"program\":\"hhs\",\"collected_on\":\"2026-10-15\"}\n",
    );
    let (code, out) = evaluate(&["-"], input);
    assert_eq!(code, 2);
    assert_eq!(out.len(), 9);
    let err = |i: usize| {
        out[i]["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{}", out[i]))
            .to_string()
    };
    assert!(err(0).contains("initial.fentanyl"), "{}", err(0));
    assert!(
        err(1).contains("no edition shipped for hhs oral_fluid"),
        "{}",
        err(1)
    );
    assert!(err(2).contains("dot oral_fluid"), "{}", err(2));
    assert!(err(3).contains("part40-2023"), "{}", err(3));
    assert!(err(4).contains("hhs-urine-2025"), "{}", err(4));
    assert!(err(5).contains("received_on"), "{}", err(5));
    assert!(err(6).contains("collected_on"), "{}", err(6));
    assert!(err(7).contains("program"), "{}", err(7));
    assert!(err(8).contains("hhs urine"), "{}", err(8));
}

#[test]
fn a_bad_line_is_reported_and_the_others_still_evaluated() {
    let input = concat!(
        "{\"id\":\"a\",\"initial\":{\"marijuana\":60},\"confirmation\":{\"thca\":20}}\n",
        "{\"id\":\"typo\",\"accession\":{\"id_match\":false}}\n",
        "not json\n",
        "{\"id\":\"wrong-class\",\"initial\":{\"oxycodone_oxymorphone\":200}}\n",
        "{\"id\":\"neg\",\"confirmation\":{\"thca\":-1}}\n",
        "{\"id\":\"top\",\"colour\":1}\n",
        "{\"initial\":{}}\n",
        "\n",
        "{\"id\":\"b\"}\n",
    );
    let (code, out) = evaluate(&["-"], input);
    assert_eq!(code, 2);
    assert_eq!(out.len(), 8, "one output per non-blank line");
    assert_eq!(out[0]["results"], serde_json::json!(["positive"]));
    assert_eq!(out[1]["id"], "typo");
    assert!(
        out[1]["error"].as_str().unwrap().contains("id_match"),
        "{}",
        out[1]
    );
    assert!(out[2]["id"].is_null() && out[2]["error"].is_string());
    assert_eq!(out[3]["id"], "wrong-class");
    assert!(
        out[3]["error"]
            .as_str()
            .unwrap()
            .contains("oxycodone_oxymorphone")
    );
    assert!(out[4]["error"].as_str().unwrap().contains("negative"));
    assert!(out[5]["error"].as_str().unwrap().contains("colour"));
    assert!(out[6]["error"].as_str().unwrap().contains("id"));
    assert_eq!(out[7]["id"], "b");
    assert_eq!(out[7]["results"], serde_json::json!(["negative"]));
}

#[test]
fn profile_precedence_case_then_flag_then_config() {
    let line =
        "{\"id\":\"c\",\"initial\":{\"cocaine\":150},\"confirmation\":{\"benzoylecgonine\":100}}\n";
    let (_, out) = evaluate(&["-"], line);
    assert_eq!(out[0]["profile"], "part40-2001");
    assert_eq!(out[0]["results"], serde_json::json!(["negative"]));
    let (_, out) = evaluate(&["--profile", "part40-2023", "-"], line);
    assert_eq!(out[0]["profile"], "part40-2023");
    assert_eq!(out[0]["results"], serde_json::json!(["positive"]));
    let line = "{\"id\":\"c\",\"profile\":\"part40-2001\",\"initial\":{\"cocaine\":150}}\n";
    let (_, out) = evaluate(&["--profile", "part40-2023", "-"], line);
    assert_eq!(out[0]["profile"], "part40-2001");
    let (code, out) = evaluate(&["-"], "{\"id\":\"x\",\"profile\":\"part40-1990\"}\n");
    assert_eq!(code, 2);
    assert!(out[0]["error"].as_str().unwrap().contains("part40-1990"));
    let (code, out) = evaluate(&["--profile", "nope", "-"], "{\"id\":\"x\"}\n");
    assert_eq!(code, 2);
    assert!(out.is_empty());
}

#[test]
fn evaluate_reads_a_file() {
    let (code, out) = evaluate(
        &[root()
            .join("tests/conformance/part40-dev.cases.jsonl")
            .to_str()
            .unwrap()],
        "",
    );
    assert_eq!(code, 0);
    assert_eq!(out.len(), 54);
}

#[test]
fn check_config_accepts_the_example_and_names_every_problem() {
    let out = custodian()
        .args(["check-config", "--config"])
        .arg(root().join("config/custodian.toml"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("part40-2001"));

    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("config/custodian.toml"))
        .unwrap()
        .replace(
            "profiles_dir = \"profiles\"",
            &format!(
                "profiles_dir = {:?}\nfavourite = 1",
                root().join("config/profiles")
            ),
        )
        .replace("format = \"text\"", "format = \"yaml\"");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, text).unwrap();
    let out = custodian()
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rules.favourite: unknown key"), "{err}");
    assert!(err.contains("log.format"), "{err}");

    // A stray environment variable is named.
    let out = custodian()
        .args(["check-config", "--config"])
        .arg(root().join("config/custodian.toml"))
        .env("CUSTODIAN__STORE__SIZE", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CUSTODIAN__STORE__SIZE"));
}
