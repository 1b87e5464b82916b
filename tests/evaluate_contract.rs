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

#[test]
fn conformance_cases_match_through_the_binary() {
    let cases =
        std::fs::read_to_string(root().join("tests/conformance/part40-dev.cases.jsonl")).unwrap();
    let expected = read_jsonl(&root().join("tests/conformance/part40-dev.expected.jsonl"));
    let (code, got) = evaluate(&["-"], &cases);
    assert_eq!(code, 0);
    assert_eq!(got.len(), expected.len());
    assert_eq!(got.len(), 48);
    let mut failures = Vec::new();
    for g in &got {
        let w = expected
            .iter()
            .find(|e| e["id"] == g["id"])
            .expect("id echoed");
        if let Err(e) = matches(g, w) {
            failures.push(format!("{}: {e}", g["id"]));
        }
        // Shape of every verdict.
        assert!(g["profile"].is_string());
        assert!(g["remarks"].is_array());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn conformance_cases_match_through_the_library() {
    // The same code path the binary and the daemon use.
    let (_, profiles) =
        custodian::app::config::load_with_env(&root().join("config/custodian.toml"), &[]).unwrap();
    let ev = custodian::app::evaluate::Evaluator::new(&profiles, "part40-2001").unwrap();
    let cases = read_jsonl(&root().join("tests/conformance/part40-dev.cases.jsonl"));
    let expected = read_jsonl(&root().join("tests/conformance/part40-dev.expected.jsonl"));
    for (c, w) in cases.iter().zip(&expected) {
        let out = ev.line(&c.to_string());
        assert!(out.evaluated, "{}", out.output);
        matches(&out.output, w).unwrap_or_else(|e| panic!("{}: {e}", c["id"]));
    }
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
    assert_eq!(out.len(), 48);
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
