//! Operations: systemd unit checks, the watchdog, Prometheus exposition and alert rules, and a
//! scan of the daemon's logs for donor data.

mod common;
use common::*;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn tool(name: &str) -> std::path::PathBuf {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{name} is required for this test (tests/run.sh installs it: apt-get install systemd prometheus)"
    );
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// The shipped unit with ExecStart pointing at the binary under test.
fn unit_under_test(dir: &std::path::Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(root().join("systemd/custodian.service")).unwrap();
    let unit = unit.replace("/usr/local/bin/custodian", bin().to_str().unwrap());
    let p = dir.join("custodian.service");
    std::fs::write(&p, unit).unwrap();
    p
}

/// The daemon turns transparent huge pages off for itself at start (`/proc/<pid>/status`,
/// `THP_enabled: 0`): with them, 2 MiB pages mostly free stayed resident and its RSS was twice
/// what it is without (README, Store economy).
#[test]
fn the_daemon_runs_without_transparent_huge_pages() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &analyzer("lab"));
    let d = Daemon::start(dir.path());
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid().unwrap())).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("THP_enabled:"))
        .unwrap_or_else(|| panic!("no THP_enabled in /proc/<pid>/status (Linux 5.0 or later)"));
    assert_eq!(line.split_whitespace().nth(1), Some("0"), "{line}");
    assert!(
        !d.log().contains("transparent huge pages stay enabled"),
        "{}",
        d.log()
    );
}

#[test]
fn systemd_unit_verifies_and_is_hardened() {
    let analyze = tool("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_under_test(dir.path());
    let out = Command::new(&analyze)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("custodian.service:"),
        "systemd-analyze verify: {text}"
    );
    let out = Command::new(&analyze)
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{text}"));
    let level: f64 = line
        .split("level for custodian.service:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure level: {line}"));
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{text}");
}

#[test]
fn watchdog_is_fed_from_the_main_loop_and_a_frozen_daemon_is_killed() {
    // A stand-in for systemd: the notify socket, READY=1, then WATCHDOG=1 within each interval.
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), "");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let watchdog = Duration::from_millis(600);
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(dir.path().join("custodian.toml"))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", watchdog.as_micros().to_string())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 512];
    let mut ready = false;
    let mut pings = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && pings < 3 {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]);
            ready |= msg.contains("READY=1");
            if ready && msg.contains("WATCHDOG=1") {
                pings += 1;
            }
        }
    }
    assert!(ready, "READY=1 was sent");
    assert!(pings >= 3, "WATCHDOG=1 keeps coming while the loop runs");

    // Freeze the daemon: no more pings; the supervisor kills it after the interval, as systemd would.
    Command::new("kill")
        .arg("-STOP")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    while sock.recv(&mut buf).is_ok() {} // drain what was already sent
    let frozen_at = Instant::now();
    let mut last_ping = None;
    while frozen_at.elapsed() < watchdog * 3 {
        if let Ok(n) = sock.recv(&mut buf)
            && String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1")
        {
            last_ping = Some(frozen_at.elapsed());
        }
    }
    assert!(
        last_ping.is_none(),
        "a frozen daemon must not feed the watchdog ({last_ping:?})"
    );
    Command::new("kill")
        .arg("-ABRT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    Command::new("kill")
        .arg("-CONT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the watchdog's kill ended it");
}

#[test]
fn metrics_are_valid_prometheus_and_alert_rules_check() {
    let promtool = tool("promtool");
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(root().join("config/alerts.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &analyzer("lab"));
    let d = Daemon::start(dir.path());
    assert_eq!(
        ack_code(
            &send(
                d.addr("lab"),
                &oru("K-1", "SPEC-M", &[("THC50", "5", "ng/mL")])
            )
            .unwrap()
        ),
        "AA"
    );
    assert_eq!(
        ack_code(
            &send(
                d.addr("lab"),
                &oru("K-2", "SPEC-M", &[("XYZ", "5", "ng/mL")])
            )
            .unwrap()
        ),
        "AE"
    );
    let (status, metrics) = d.get("/metrics", None);
    assert_eq!(status, 200);
    for name in [
        "custodian_messages_total",
        "custodian_analyzer_connections",
        "custodian_analyzer_last_message_timestamp_seconds",
        "custodian_store_commit_batch_size",
        "custodian_store_flush_seconds",
        "custodian_quarantined_total",
        "custodian_review_queue_depth",
        "custodian_store_disk_free_bytes",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && text.trim().is_empty(),
        "promtool check metrics:\n{text}"
    );
}

#[test]
fn logs_never_carry_donor_data() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &analyzer("lab"));
    let mut d = Daemon::start(dir.path());
    let ssn = "123-45-6789";
    let xml = String::from_utf8(accession_xml_clean("SPEC-L"))
        .unwrap()
        .replace("000-00-0000", ssn);
    d.drop_lims("acc-l.xml", xml.as_bytes()).unwrap();
    let bad = xml.replace("<reason>random</reason>", "<reason>whim</reason>");
    assert!(d.drop_lims("bad-l.xml", bad.as_bytes()).is_err());
    for (id, obx) in [
        ("L-1", ("COC300", "987", "ng/mL")),
        ("L-2", ("XYZ", "5", "ng/mL")),
        ("L-3", ("OXYCC", "444", "ng/mL")),
    ] {
        send(d.addr("lab"), &oru(id, "SPEC-L", &[obx])).unwrap();
    }
    let _ = d.get("/api/specimens/SPEC-L", Some(TOKEN));
    assert_eq!(d.term(), Some(0));
    let log = d.log();
    assert!(
        log.contains("results stored"),
        "the log is being written:\n{log}"
    );
    for secret in [ssn, "123456789", "Dr. Pat Example", "Example Freight"] {
        assert!(
            !log.contains(secret),
            "log contains donor/CCF data `{secret}`"
        );
    }
    for value in ["987", "444"] {
        assert!(
            !log.contains(&format!("\"{value}\"")) && !log.contains(&format!("={value}")),
            "log contains a result value {value}"
        );
    }
    let reasons: String = std::fs::read_dir(dir.path().join("spool/rejected"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".reason"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(
        !reasons.is_empty() && !reasons.contains(ssn),
        "reason files name positions, not content"
    );
}

/// The alert rules cover refusals (AE/AR rate), quarantine growth, panel-guard refusals, 40.111
/// summaries not sent by their due date, runs waiting too long for acceptance or their closing
/// QC, results after release and QC samples under a specimen's ID, each on metrics the daemon
/// exports.
#[test]
fn alert_rules_cover_refusals_quarantine_and_the_panel_guard() {
    let rules = std::fs::read_to_string(root().join("config/alerts.yml")).unwrap();
    for (alert, metric) in [
        (
            "CustodianAnalyzerRefusals",
            "custodian_messages_total{ack=~\"AE|AR\"}",
        ),
        ("CustodianQuarantineGrowing", "custodian_quarantined_total"),
        (
            "CustodianQuarantineOverBound",
            "custodian_quarantine_dropped_total",
        ),
        (
            "CustodianPanelGuardRefusals",
            "custodian_panel_guard_refusals_total",
        ),
        (
            "CustodianEmployerSummariesNotSent",
            "custodian_summaries_overdue{recipient=\"employer\"}",
        ),
        (
            "CustodianDotSummaryNotSent",
            "custodian_summaries_overdue{recipient=\"dot\"}",
        ),
        (
            "CustodianRunAwaitingAcceptance",
            "custodian_runs_pending_oldest_age_seconds",
        ),
        (
            "CustodianRunOpenTooLong",
            "custodian_runs_open_oldest_age_seconds",
        ),
        (
            "CustodianResultsAfterRelease",
            "custodian_results_after_release_total",
        ),
        (
            "CustodianQcSampleConflict",
            "custodian_qc_sample_conflicts_total",
        ),
        (
            "CustodianAstmQueryForRejectedSpecimen",
            "custodian_astm_host_queries_total{answer=\"rejected\"}",
        ),
        (
            "CustodianConsoleSignInFailures",
            "custodian_console_sign_ins_total{outcome=~\"failed|locked|unknown\"}",
        ),
    ] {
        assert!(
            rules.contains(&format!("alert: {alert}")),
            "{alert} missing"
        );
        assert!(rules.contains(metric), "{alert}: {metric} missing");
        let name = metric.split('{').next().unwrap();
        assert!(
            custodian::app::monitoring::metrics()
                .iter()
                .any(|m| m.name == name),
            "{name} is not exported"
        );
    }
}

/// After a restart every configured analyzer has its series at once: the last message time the
/// store knows (or the start time for one never heard from) and 0 connections, so the
/// silent-analyzer alert can fire for an analyzer that stays silent after a restart.
#[test]
fn every_analyzers_series_is_published_at_start() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &format!("{}{}", analyzer("lab"), analyzer("idle")),
    );
    let mut d = Daemon::start(dir.path());
    let sent_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let ack = send(
        d.addr("lab"),
        &oru("S-1", "SPEC-S", &[("THC50", "5", "ng/mL")]),
    )
    .unwrap();
    assert_eq!(ack_code(&ack), "AA", "{ack}");
    assert_eq!(d.term(), Some(0));
    let restarted_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    d.restart();
    let (_, metrics) = d.get("/metrics", None);
    let value = |name: &str, analyzer: &str| -> f64 {
        let prefix = format!("{name}{{analyzer=\"{analyzer}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("{name} for {analyzer} missing:\n{metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    let lab = value("custodian_analyzer_last_message_timestamp_seconds", "lab");
    assert!(
        lab >= sent_at - 1.0 && lab < restarted_at,
        "lab: the stored message's time, not the restart's: {lab} (sent {sent_at}, restarted {restarted_at})"
    );
    let idle = value("custodian_analyzer_last_message_timestamp_seconds", "idle");
    assert!(
        idle >= restarted_at - 1.0,
        "idle: the start time: {idle} vs {restarted_at}"
    );
    assert_eq!(value("custodian_analyzer_connections", "lab"), 0.0);
    assert_eq!(value("custodian_analyzer_connections", "idle"), 0.0);
    assert_eq!(d.term(), Some(0));
}

/// Egress is an allow-list: the shipped unit allows only localhost and the private ranges and
/// says where the laboratory adds its MROs' addresses; the README documents that drop-in and
/// how the LIMS writes into the spool.
#[test]
fn egress_allow_list_and_spool_handover_are_documented() {
    let unit = std::fs::read_to_string(root().join("systemd/custodian.service")).unwrap();
    let allowed: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("IPAddressAllow="))
        .flat_map(str::split_whitespace)
        .collect();
    assert_eq!(
        allowed,
        vec!["localhost", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
    );
    assert!(unit.contains("IPAddressDeny=any"));
    assert!(
        unit.contains("custodian.service.d/"),
        "the unit names the drop-in"
    );
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.contains("### Network egress"));
    assert!(readme.contains("IPAddressAllow="));
    assert!(readme.contains("### How the LIMS writes into the spool"));
    for word in ["usermod -aG custodian", "2770", "0640", "rename"] {
        assert!(readme.contains(word), "README: {word}");
    }
    let tmpfiles = std::fs::read_to_string(root().join("systemd/custodian.tmpfiles.conf")).unwrap();
    assert!(tmpfiles.contains("d /var/lib/custodian/spool/incoming 2770 custodian custodian"));
}
