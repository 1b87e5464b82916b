//! `custodian calendar add-business-days` through the binary: one ISO date on stdout, exit 2
//! with a message on bad input.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_custodian"))
        .env_remove("CUSTODIAN_CONFIG")
        .args(["calendar", "add-business-days"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn prints_the_date_on_one_line() {
    // Thanksgiving week of 2026 and July 4th on a Saturday (observed Friday July 3).
    assert_eq!(
        run(&["2026-11-25", "5"]),
        (0, "2026-12-03\n".into(), String::new())
    );
    assert_eq!(
        run(&["2026-06-30", "5"]),
        (0, "2026-07-08\n".into(), String::new())
    );
    assert_eq!(
        run(&["2021-12-23", "5"]),
        (0, "2022-01-03\n".into(), String::new())
    );
    assert_eq!(
        run(&["2026-07-04", "0"]),
        (0, "2026-07-04\n".into(), String::new())
    );
}

#[test]
fn closures_come_from_the_configuration_or_a_list() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("custodian.toml");
    std::fs::write(&cfg, "[calendar]\nclosures = [\"2026-11-27\"]\n").unwrap();
    let c = cfg.to_str().unwrap();
    assert_eq!(run(&["2026-11-25", "1", "--closures", c]).1, "2026-11-30\n");
    let list = dir.path().join("closures.txt");
    std::fs::write(&list, "# lab closures\n2026-11-27\n").unwrap();
    let l = list.to_str().unwrap();
    assert_eq!(run(&["2026-11-25", "1", "--closures", l]).1, "2026-11-30\n");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/custodian.toml");
    assert_eq!(
        run(&["2026-11-25", "1", "--closures", example]).1,
        "2026-11-27\n"
    );
}

#[test]
fn bad_input_exits_2_with_a_message() {
    let (code, out, err) = run(&["2026-02-30", "5"]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("`2026-02-30` is not a date"), "{err}");
    let (code, _, err) = run(&["2026-11-25", "five"]);
    assert_eq!(code, 2);
    assert!(err.contains("'five'"), "{err}");
    let (code, _, err) = run(&["2026-11-25", "1", "--closures", "/nonexistent/closures"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/closures"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("closures.txt");
    std::fs::write(&list, "2026-11-27\nBlack Friday\n").unwrap();
    let (code, _, err) = run(&["2026-11-25", "1", "--closures", list.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        err.contains("line 2: `Black Friday` is not a date"),
        "{err}"
    );
    let (code, _, err) = run(&["9999-12-31", "1"]);
    assert_eq!(code, 2);
    assert!(err.contains("after 9999-12-31"), "{err}");
}
