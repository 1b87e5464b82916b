//! The README's demo runs to the end on the example configuration and shows the five verdicts,
//! each analyzer's run closed with its QC set and accepted before the release.

use std::process::Command;

#[test]
fn demo_runs_to_the_end_and_shows_the_five_verdicts() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO_BIN_EXE_custodian"))
        .current_dir(root)
        .args(["demo", "--config", "config/custodian.toml"])
        .env_remove("CUSTODIAN_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A run with its QC accepted before the release: the screen and validity runs
    // automatically, the confirmation run by the certifying scientist, by name.
    let runs = text.split("[7]").nth(1).expect("step 7 printed");
    let (runs, released) = runs.split_once("[10]").expect("step 10 printed");
    assert!(
        runs.contains("run immunoassay-1:B1") && runs.contains("accepted automatically"),
        "{runs}"
    );
    assert!(
        runs.contains("run gcms-1:GC-DEMO-1: accepted by \"Demo Certifying Scientist\""),
        "{runs}"
    );
    // DEMO-NEG-001's validity chemistry came over ASTM: its run, closed by the QC set sent
    // over ASTM (controls with O-12 "Q"), is accepted automatically.
    assert!(
        runs.lines().any(|l| l.contains("run chemistry-astm-1:B1")
            && l.contains("QC passed")
            && l.contains("accepted automatically (1 specimens)")),
        "{runs}"
    );
    assert!(released.contains("DEMO-POS-002: released"), "{released}");
    let table = text.split("[11]").nth(1).expect("step 11 printed");
    for (id, results) in [
        ("DEMO-NEG-001", "[\"negative\"]"),
        ("DEMO-POS-002", "[\"positive\"]"),
        ("DEMO-DIL-003", "[\"negative\"]"),
        ("DEMO-ADU-004", "[\"adulterated\"]"),
        ("DEMO-REJ-005", "[\"rejected\"]"),
    ] {
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with(id))
            .unwrap_or_else(|| panic!("{id} missing:\n{table}"));
        assert!(line.contains(results), "{id}: {line}");
    }
    let dilute = table.lines().find(|l| l.contains("DEMO-DIL-003")).unwrap();
    assert!(
        dilute.contains("true"),
        "the dilute specimen is reported dilute: {dilute}"
    );
    assert!(table.contains("benzoylecgonine"));
    assert!(text.contains("daemon exited with exit status: 0"), "{text}");
    assert!(
        !text.contains("E-DEMO-"),
        "the demo's output never shows a donor identifier"
    );
}

/// `custodian demo --keep` prints the console's address and a user to sign in with, leaves two
/// specimens in the review queue and keeps its daemon running (TLS on the admin listener).
#[test]
fn demo_keep_leaves_the_daemon_and_two_specimens_for_the_console() {
    use std::io::{BufRead, BufReader};
    let root = env!("CARGO_MANIFEST_DIR");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_custodian"))
        .current_dir(root)
        .args(["demo", "--keep", "--config", "config/custodian.toml"])
        .env_remove("CUSTODIAN_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let mut text = String::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        text.push_str(&line);
        text.push('\n');
        if line.contains("press Ctrl-C") {
            break;
        }
    }
    let field = |prefix: &str| -> String {
        text.lines()
            .find_map(|l| l.trim_start().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line:\n{text}"))
            .trim()
            .to_string()
    };
    let url = field("open ");
    let pid: u32 = field("daemon pid ")
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let port: u16 = url
        .strip_prefix("https://localhost:")
        .and_then(|r| r.strip_suffix("/console/"))
        .unwrap_or_else(|| panic!("console address: {url}"))
        .parse()
        .unwrap();
    let sign_in = field("sign in ");
    assert!(
        sign_in.contains("\"Demo Certifying Scientist\"")
            && sign_in.contains("\"demo-password-change-me\""),
        "{sign_in}"
    );
    let cert = field("the certificate is the demo's own (");
    let cert = std::path::PathBuf::from(cert.split(')').next().unwrap());
    let at = custodian::admin::client::Endpoint {
        addr: ([127, 0, 0, 1], port).into(),
        tls_cert: Some(cert.clone()),
    };
    let page = custodian::admin::client::get(at.clone(), "/console/sign-in", None).unwrap();
    assert_eq!(page.status, 200);
    assert!(page.body.contains("User name"));
    let queue =
        custodian::admin::client::get(at.clone(), "/api/review", Some("demo-token-change-me"))
            .unwrap();
    let ids: Vec<String> = serde_json::from_str::<serde_json::Value>(&queue.body)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["specimen_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert!(ids.contains(&"DEMO-POS-002".to_string()));
    assert!(ids.contains(&"DEMO-ADU-004".to_string()));
    // The printed password is the one the demo's configuration holds (as an Argon2id hash).
    let config = std::fs::read_to_string(cert.parent().unwrap().join("custodian.toml")).unwrap();
    let phc = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("password_argon2 = "))
        .unwrap()
        .trim_matches(|c| c == '"' || c == '\'');
    assert!(custodian::admin::auth::verify_password(
        phc,
        "demo-password-change-me"
    ));
    // Still running after the demo's steps; stopped here (the daemon cleanly).
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
    let _ = demo.kill();
    let _ = demo.wait();
    assert!(!text.contains("E-DEMO-"), "no donor identifier printed");
}
