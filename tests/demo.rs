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
