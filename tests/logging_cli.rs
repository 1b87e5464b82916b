//! Logging and standard output: a `log.level` that would silently log nothing is refused by
//! `check-config` and `run` with the key named; the daemon's logs have no ANSI colours when
//! standard error is not a terminal; a closed standard output (`| head -1`) ends a command
//! quietly, never with a Rust panic.

mod common;
use common::*;
use std::process::{Command, Stdio};

fn with_level(dir: &std::path::Path, level: &str) -> std::path::PathBuf {
    let path = write_config(dir, "");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("level = \"info\"", &format!("level = \"{level}\"")),
    )
    .unwrap();
    path
}

#[test]
fn a_log_level_that_is_no_level_is_refused_by_check_config_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_level(dir.path(), "verbose");
    for command in ["check-config", "run"] {
        let out = Command::new(bin())
            .arg(command)
            .arg("--config")
            .arg(&config)
            .env_remove("CUSTODIAN_CONFIG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("log.level") && stderr.contains("verbose"),
            "{command}: {stderr}"
        );
    }
    let config = with_level(dir.path(), "warn,custodian=debug");
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn text_logs_to_a_file_have_no_colours() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("format = \"json\"", "format = \"text\""),
    )
    .unwrap();
    let mut d = Daemon::start(dir.path());
    assert_eq!(d.get("/api/review", None).0, 401);
    assert_eq!(d.term(), Some(0));
    let log = d.log();
    assert!(log.contains("ready"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escapes in a log file:\n{log}"
    );
}

/// Runs the binary with standard output a pipe whose reader is already gone.
fn with_closed_stdout(args: &[&std::ffi::OsStr], stdin: &[u8]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("CUSTODIAN_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let _ = child.stdin.take().unwrap().write_all(stdin);
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let out = with_closed_stdout(
        &[
            "check-config".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
        ],
        b"",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "check-config: {stderr}");
    assert!(stderr.trim().is_empty(), "check-config: {stderr}");
    assert_eq!(out.status.code(), Some(0), "check-config: {stderr}");

    let cases: String = (0..2000)
        .map(|i| format!("{{\"id\":\"c{i}\",\"initial\":{{\"marijuana\":60}},\"confirmation\":{{\"thca\":20}}}}\n"))
        .collect();
    let out = with_closed_stdout(
        &[
            "evaluate".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "-".as_ref(),
        ],
        cases.as_bytes(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "evaluate: {stderr}");
    assert!(stderr.trim().is_empty(), "evaluate: {stderr}");
    assert_eq!(out.status.code(), Some(0), "evaluate: {stderr}");

    let out = with_closed_stdout(&["hash-token".as_ref()], b"some-token\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "hash-token: {stderr}");
    assert_eq!(out.status.code(), Some(0), "hash-token: {stderr}");
}
