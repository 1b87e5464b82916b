//! The review console over HTTP, through the real daemon: the sign-in cookie flags, CSRF
//! refusals, wrong passwords audited one by one and the lockout with its back-off, the idle
//! timeout, viewers seeing no donor identifier in the console or the API (and every read of donor
//! data audited), TLS on the admin listener (and the refusal to start off loopback without it),
//! and `custodian hash-password`. The flows in a real browser are in `console_browser.rs`.

mod common;
#[path = "common/mro.rs"]
mod mro;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const SSN: &str = "412-55-9183";

/// An HTTP/1.0 answer: status, headers (lower-case names), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// The value a `Set-Cookie` gives `name`.
    fn cookie(&self, name: &str) -> Option<String> {
        self.header("set-cookie")
            .iter()
            .find_map(|c| c.strip_prefix(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap_or("").to_string())
    }
}

/// One plain HTTP request to the admin listener (loopback, no TLS).
fn http(d: &Daemon, method: &str, path: &str, cookies: &str, form: &str) -> Answer {
    let mut s = TcpStream::connect(d.admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {}\r\n", d.admin);
    if !cookies.is_empty() {
        req.push_str(&format!("Cookie: {cookies}\r\n"));
    }
    if method == "POST" {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            form.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(form);
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap();
    Answer {
        status: status.parse().unwrap(),
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            .collect(),
        body: body.to_string(),
    }
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The value of the hidden `csrf` field of a page.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..].split('"').next().unwrap().to_string()
}

/// A signed-in session: its cookie header and CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

fn sign_in(d: &Daemon, user: &str, password: &str) -> Result<Session, Answer> {
    let page = http(d, "GET", "/console/sign-in", "", "");
    let pre = page.cookie("custodian-sign-in").unwrap();
    let csrf = csrf_of(&page.body);
    let r = http(
        d,
        "POST",
        "/console/sign-in",
        &format!("custodian-sign-in={pre}"),
        &format!("csrf={csrf}&user={}&password={}", enc(user), enc(password)),
    );
    if r.status != 303 {
        return Err(r);
    }
    let cookie = format!(
        "custodian-session={}",
        r.cookie("custodian-session").unwrap()
    );
    let queue = http(d, "GET", "/console/queue", &cookie, "");
    assert_eq!(queue.status, 200, "{}", queue.body);
    Ok(Session {
        csrf: csrf_of(&queue.body),
        cookie,
    })
}

/// The audit entries after the daemon stopped (the store is then free to open).
fn audit_entries(dir: &std::path::Path) -> Vec<custodian::store::AuditEntry> {
    let store = custodian::store::Store::open(&dir.join("store")).unwrap();
    assert!(store.verify_audit().is_ok());
    store
        .audit_entries(1)
        .flatten()
        .map(|(_, r)| r.entry)
        .collect()
}

#[test]
fn sign_in_cookies_csrf_wrong_passwords_and_the_lockout() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let t = std::fs::read_to_string(&cfg).unwrap().replace(
        "listen = \"127.0.0.1:0\"\n[[admin.user]]",
        "listen = \"127.0.0.1:0\"\nlockout_failures = 3\nlockout_secs = 60\n[[admin.user]]",
    );
    std::fs::write(&cfg, t).unwrap();
    enable_console(&cfg, false);
    let mut d = Daemon::start(dir.path());

    // Not signed in: every page sends to the sign-in page, which has labelled fields.
    let r = http(&d, "GET", "/console/queue", "", "");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), ["/console/sign-in"]);
    let page = http(&d, "GET", "/console/sign-in", "", "");
    assert_eq!(page.status, 200);
    for text in [
        "<label for=\"user\">User name</label>",
        "<label for=\"password\">Password</label>",
        ">Sign in</button>",
    ] {
        assert!(page.body.contains(text), "{text} missing:\n{}", page.body);
    }
    assert!(!page.body.contains("<script"), "no script is needed");
    let pre = page.header("set-cookie")[0];
    assert!(
        pre.starts_with("custodian-sign-in=")
            && pre.contains("HttpOnly")
            && pre.contains("Secure")
            && pre.contains("SameSite=Strict"),
        "{pre}"
    );
    assert_eq!(page.header("cache-control"), ["no-store"]);
    assert!(page.header("content-security-policy")[0].contains("default-src 'none'"));

    // A sign-in without the form's CSRF token is refused, even with the right password.
    let r = http(
        &d,
        "POST",
        "/console/sign-in",
        "",
        &format!("user=Operator&password={}", enc(OPERATOR_PASSWORD)),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.cookie("custodian-session").is_none());

    // Wrong passwords: refused with one message, audited one by one; the third locks.
    for _ in 0..3 {
        let r = sign_in(&d, "Dr. Test Scientist", "not-the-password")
            .err()
            .unwrap();
        assert_eq!(r.status, 401);
        assert!(r.body.contains("The user name or the password is wrong."));
    }
    let r = sign_in(&d, "Dr. Test Scientist", PASSWORD).err().unwrap();
    assert_eq!(r.status, 429, "locked, even with the right password");
    assert!(r.body.contains("locked until"), "{}", r.body);
    // Someone else is not locked; an unknown name gets the same message as a wrong password.
    let r = sign_in(&d, "Nobody Here", "whatever-it-is").err().unwrap();
    assert_eq!(r.status, 401);
    assert!(r.body.contains("The user name or the password is wrong."));

    // The operator signs in: the session cookie has the flags, the queue is served.
    let page = http(&d, "GET", "/console/sign-in", "", "");
    let pre = page.cookie("custodian-sign-in").unwrap();
    let r = http(
        &d,
        "POST",
        "/console/sign-in",
        &format!("custodian-sign-in={pre}"),
        &format!(
            "csrf={}&user=operator&password={}",
            csrf_of(&page.body),
            enc(OPERATOR_PASSWORD)
        ),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let set = r
        .header("set-cookie")
        .into_iter()
        .find(|c| c.starts_with("custodian-session="))
        .unwrap()
        .to_string();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    let s = sign_in(&d, "Operator", OPERATOR_PASSWORD).unwrap();

    // Sign-out needs the CSRF token; after it the cookie is worthless.
    assert_eq!(
        http(&d, "POST", "/console/sign-out", &s.cookie, "").status,
        403
    );
    let r = http(
        &d,
        "POST",
        "/console/sign-out",
        &s.cookie,
        &format!("csrf={}", s.csrf),
    );
    assert_eq!(r.status, 303);
    assert_eq!(
        http(&d, "GET", "/console/queue", &s.cookie, "").status,
        303,
        "signed out"
    );
    assert_eq!(d.term(), Some(0));

    let entries = audit_entries(dir.path());
    let of = |action: &str, actor: &str| {
        entries
            .iter()
            .filter(|e| e.action == action && e.actor == actor)
            .count()
    };
    assert_eq!(of("sign_in_failed", "user:Dr. Test Scientist"), 3);
    let failed: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "sign_in_failed")
        .collect();
    assert!(
        failed[2]
            .after
            .as_deref()
            .unwrap()
            .contains("locked for 60 s"),
        "{failed:?}"
    );
    assert_eq!(of("sign_in_refused", "user:Dr. Test Scientist"), 1);
    assert_eq!(of("signed_in", "user:Operator"), 2);
    assert_eq!(of("signed_out", "user:Operator"), 1);
    // The unknown name is not audited by name (refusals of unknown callers are aggregated).
    assert!(
        entries.iter().all(|e| !e.actor.contains("Nobody")),
        "{entries:#?}"
    );
    assert!(entries.iter().any(|e| e.actor == "unauthenticated"
        && e.action == "refused"
        && e.subject == "/console/sign-in"));
}

#[test]
fn an_idle_session_ends() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let t = std::fs::read_to_string(&cfg).unwrap().replace(
        "listen = \"127.0.0.1:0\"\n[[admin.user]]",
        "listen = \"127.0.0.1:0\"\nsession_idle_timeout_secs = 1\n[[admin.user]]",
    );
    std::fs::write(&cfg, t).unwrap();
    enable_console(&cfg, false);
    let d = Daemon::start(dir.path());
    let s = sign_in(&d, "Viewer", VIEWER_PASSWORD).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let r = http(&d, "GET", "/console/queue", &s.cookie, "");
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), ["/console/sign-in?expired=1"]);
    let page = http(&d, "GET", "/console/sign-in?expired=1", "", "");
    assert!(page.body.contains("without activity"), "{}", page.body);
}

/// Accession (with the donor's SSN and the image of Copy 1), screen, validity, confirmation;
/// the run accepted through the API.
fn prepare_positive(d: &Daemon, id: &str) {
    send_positive(d, id);
    accept_pending_runs(d);
    assert_eq!(d.specimen(id).unwrap()["state"], "ready_for_review");
}

/// A positive's results in a run of their own, which closes pending (it holds a confirmation).
fn send_positive(d: &Daemon, id: &str) {
    let xml = String::from_utf8(accession_xml_clean(id))
        .unwrap()
        .replace("000-00-0000", SSN);
    d.drop_lims(&format!("acc-{id}.xml"), xml.as_bytes())
        .unwrap();
    let a = d.addr("lab");
    for (n, obx) in [
        vec![
            ("THC50", "0", "ng/mL"),
            ("COC300", "900", "ng/mL"),
            ("OPI2000", "0", "ng/mL"),
            ("AMP1000", "0", "ng/mL"),
            ("PCP25", "0", "ng/mL"),
        ],
        vec![
            ("CREA", "90", "mg/dL"),
            ("PH", "6.2", "pH"),
            ("SG", "1.018", ""),
            ("NIT", "0", "mcg/mL"),
        ],
        vec![("BZEC", "480", "ng/mL")],
    ]
    .iter()
    .enumerate()
    {
        let m = oru(&format!("{id}-{n}"), id, obx);
        assert_eq!(ack_code(&send(a, &m).unwrap()), "AA");
    }
    close_run(d, "lab");
}

#[test]
fn viewers_see_no_donor_identifier_and_donor_data_reads_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    let p = mro::pki(dir.path());
    let rx = mro::receiver(&p);
    let cfg = write_config(
        dir.path(),
        &format!(
            "{}\n{}",
            analyzer("lab"),
            mro::mro_section(&p, rx.port, "MRO-0042", 5)
        ),
    );
    enable_console(&cfg, false);
    generate_key(&cfg);
    let mut d = Daemon::start(dir.path());
    prepare_positive(&d, "SPEC-V1");

    // The API: the viewer's answers withhold the SSN; a scientist's carry it.
    for path in [
        "/api/specimens/SPEC-V1",
        "/api/review",
        "/api/review/SPEC-V1",
    ] {
        let (s, body) = d.get(path, Some(VIEWER_TOKEN));
        assert_eq!(s, 200, "{path}: {body}");
        assert!(!body.contains(SSN), "{path} shows a viewer the SSN: {body}");
        assert!(body.contains("withheld"), "{path}: {body}");
    }
    let (s, body) = d.get("/api/specimens/SPEC-V1", Some(TOKEN));
    assert_eq!(s, 200);
    assert!(body.contains(SSN));

    // The console: the viewer sees the specimen without SSN or image, and cannot release.
    let v = sign_in(&d, "Viewer", VIEWER_PASSWORD).unwrap();
    let page = http(&d, "GET", "/console/specimens/SPEC-V1", &v.cookie, "");
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(SSN), "{}", page.body);
    assert!(!page.body.contains("/ccf-image"));
    assert!(!page.body.contains(">Release</button>"));
    assert_eq!(
        http(
            &d,
            "GET",
            "/console/specimens/SPEC-V1/ccf-image",
            &v.cookie,
            ""
        )
        .status,
        403
    );
    assert_eq!(
        http(
            &d,
            "GET",
            "/console/specimens/SPEC-V1/release",
            &v.cookie,
            ""
        )
        .status,
        403
    );
    let queue = http(&d, "GET", "/console/queue", &v.cookie, "");
    assert!(!queue.body.contains(SSN));
    assert!(queue.body.contains("SPEC-V1"));

    // The scientist sees both, and the image as received is served.
    let s = sign_in(&d, "Dr. Test Scientist", PASSWORD).unwrap();
    let page = http(&d, "GET", "/console/specimens/SPEC-V1", &s.cookie, "");
    assert!(page.body.contains(SSN));
    assert!(page.body.contains(">Release</button>"));
    let img = http(
        &d,
        "GET",
        "/console/specimens/SPEC-V1/ccf-image",
        &s.cookie,
        "",
    );
    assert_eq!(img.status, 200);
    assert_eq!(img.header("content-type"), ["image/png"]);

    // A viewer's POST of a release, with its own valid CSRF token and password, is refused.
    let spec = {
        let sign = http(
            &d,
            "GET",
            "/console/specimens/SPEC-V1/release",
            &s.cookie,
            "",
        );
        assert_eq!(sign.status, 200, "{}", sign.body);
        assert!(sign.body.contains("reviewed and released"));
        let at = sign.body.find("name=\"spec\" value=\"").unwrap() + 19;
        sign.body[at..].split('"').next().unwrap().to_string()
    };
    let r = http(
        &d,
        "POST",
        "/console/specimens/SPEC-V1/release",
        &v.cookie,
        &format!(
            "csrf={}&spec={}&password={}",
            v.csrf,
            enc(&spec),
            enc(VIEWER_PASSWORD)
        ),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // The scientist's release with a wrong password is refused and nothing is released.
    let r = http(
        &d,
        "POST",
        "/console/specimens/SPEC-V1/release",
        &s.cookie,
        &format!("csrf={}&spec={}&password=wrong-one", s.csrf, enc(&spec)),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(d.specimen("SPEC-V1").unwrap()["state"], "ready_for_review");
    // And with the right one it is released; the viewer cannot export the signed report.
    let r = http(
        &d,
        "POST",
        "/console/specimens/SPEC-V1/release",
        &s.cookie,
        &format!(
            "csrf={}&spec={}&password={}",
            s.csrf,
            enc(&spec),
            enc(PASSWORD)
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let rec = d.specimen("SPEC-V1").unwrap();
    assert_eq!(rec["state"], "released");
    let report = rec["release"]["report_id"].as_str().unwrap().to_string();
    let (s_viewer, body) = d.get(&format!("/api/reports/{report}/jws"), Some(VIEWER_TOKEN));
    assert_eq!(s_viewer, 403, "{body}");
    let (s_sci, jws) = d.get(&format!("/api/reports/{report}/jws"), Some(TOKEN));
    assert_eq!(s_sci, 200);
    assert_eq!(jws.split('.').count(), 3);
    let cert = http(
        &d,
        "GET",
        "/console/specimens/SPEC-V1/certified-copy",
        &s.cookie,
        "",
    );
    assert_eq!(cert.status, 200);
    assert_eq!(cert.header("content-type"), ["application/pdf"]);
    assert!(cert.body.starts_with("%PDF-"));
    // After release the page shows the signed report as sent, with its content hash.
    let page = http(&d, "GET", "/console/specimens/SPEC-V1", &s.cookie, "");
    assert!(
        page.body.contains("The signed report as sent"),
        "{}",
        page.body
    );
    assert!(
        page.body
            .contains(rec["release"]["content_sha256"].as_str().unwrap())
    );

    // The quarantine: listed for every role; the raw bytes (donor data) for operators only.
    let ack = send(d.addr("lab"), &not_oru("Q-1", "SPQ-1")).expect("an answer");
    assert_eq!(ack_code(&ack), "AR");
    let o = sign_in(&d, "Operator", OPERATOR_PASSWORD).unwrap();
    let list = http(&d, "GET", "/console/quarantine", &v.cookie, "");
    assert_eq!(list.status, 200);
    let at = list
        .body
        .find("href=\"/console/quarantine/")
        .expect("a listed record")
        + 6;
    let href = list.body[at..].split('"').next().unwrap().to_string();
    let as_viewer = http(&d, "GET", &href, &v.cookie, "");
    assert_eq!(as_viewer.status, 200);
    assert!(!as_viewer.body.contains("ADT^A01"), "{}", as_viewer.body);
    assert!(as_viewer.body.contains("operator role only"));
    let as_operator = http(&d, "GET", &href, &o.cookie, "");
    assert!(as_operator.body.contains("ADT^A01"), "{}", as_operator.body);
    assert_eq!(d.term(), Some(0));

    // Every read of donor data is audited with who and which specimen; viewers' are not
    // donor data reads.
    let entries = audit_entries(dir.path());
    let reads: Vec<_> = entries
        .iter()
        .filter(|e| e.subject == "SPEC-V1" && e.action == "donor_data_read")
        .collect();
    assert!(
        reads.iter().all(|e| e.actor == "user:Dr. Test Scientist"),
        "{reads:#?}"
    );
    for via in ["API: specimen record", "console: specimen page"] {
        assert!(
            reads
                .iter()
                .any(|e| e.after.as_deref().unwrap_or("").starts_with(via)),
            "{via} not audited: {reads:#?}"
        );
    }
    let has = |action: &str| {
        entries
            .iter()
            .any(|e| e.action == action && e.subject == "SPEC-V1")
    };
    for action in [
        "ccf_image_read",
        "signature_refused",
        "signature_given",
        "released",
        "certified_copy_read",
    ] {
        assert!(has(action), "{action} not audited");
    }
    assert!(entries.iter().any(|e| e.actor == "user:Viewer"
        && e.action == "refused"
        && e.after.as_deref() == Some("forbidden")));
}

#[test]
fn off_loopback_without_tls_the_daemon_refuses_to_start_and_with_tls_it_serves_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let t = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        t.replace(
            "listen = \"127.0.0.1:0\"\n[[admin.user]]",
            "listen = \"0.0.0.0:0\"\n[[admin.user]]",
        ),
    )
    .unwrap();
    let (code, err) = run_expecting_refusal(dir.path());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("admin.tls") && err.contains("not a loopback address"),
        "{err}"
    );

    // On loopback with the laboratory's certificate: TLS only; the CLI follows.
    std::fs::write(&cfg, t).unwrap();
    enable_console(&cfg, true);
    let d = Daemon::start(dir.path());
    assert!(d.admin_tls_cert.is_some());
    assert_eq!(d.get("/healthz", None), (200, "ok\n".to_string()));
    let mut plain = TcpStream::connect(d.admin).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    plain.write_all(b"GET /healthz HTTP/1.0\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("ok"),
        "plain HTTP must not be answered"
    );
    let out = d.cli(&["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn hash_password_reads_standard_input_never_an_argument() {
    let run = |input: &str, args: &[&str]| {
        let mut c = Command::new(bin())
            .arg("hash-password")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    };
    let out = run("a long enough password\n", &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let phc = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
    assert!(custodian::admin::auth::verify_password(
        &phc,
        "a long enough password"
    ));
    assert!(!phc.contains("a long enough password"));
    let short = run("short\n", &[]);
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 12"));
    let argv = run("", &["a-password-on-the-command-line"]);
    assert_eq!(
        argv.status.code(),
        Some(2),
        "a password argument is refused"
    );
}

#[test]
fn the_lifecycle_page_shows_running_correction_windows_and_confirms_discards() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    enable_console(&cfg, false);
    let d = Daemon::start(dir.path());
    // The example accession has a correctable flaw (Step 4 unsigned): held, its window runs.
    d.drop_lims("acc-SPEC-H1.xml", &accession_xml("SPEC-H1"))
        .unwrap();
    assert_eq!(d.specimen("SPEC-H1").unwrap()["state"], "held");
    let o = sign_in(&d, "Operator", OPERATOR_PASSWORD).unwrap();
    let page = http(&d, "GET", "/console/lifecycle", &o.cookie, "");
    assert_eq!(page.status, 200);
    let windows = page
        .body
        .split("Correction windows running")
        .nth(1)
        .unwrap();
    assert!(windows.contains("SPEC-H1"), "{}", page.body);
    assert!(windows.contains("collector certification"), "{}", page.body);
    assert!(page.body.contains("Nothing may be discarded now."));

    // A discard is confirmed on its own page, with a required confirmation.
    let confirm = http(
        &d,
        "GET",
        "/console/lifecycle/discard?specimen=SPEC-H1&item=primary",
        &o.cookie,
        "",
    );
    assert_eq!(confirm.status, 200);
    assert!(confirm.body.contains(">Confirm discard</button>"));
    assert!(confirm.body.contains("required"));
    let r = http(
        &d,
        "POST",
        "/console/lifecycle/discard",
        &o.cookie,
        &format!("csrf={}&specimen=SPEC-H1&item=primary", o.csrf),
    );
    assert_eq!(r.status, 400, "without the confirmation: {}", r.body);
    let r = http(
        &d,
        "POST",
        "/console/lifecycle/discard",
        &o.cookie,
        &format!("csrf={}&specimen=SPEC-H1&item=primary&confirm=yes", o.csrf),
    );
    assert!(
        r.status >= 400,
        "its retention has not even started: {}",
        r.body
    );
    assert!(r.body.contains("Not recorded"), "{}", r.body);
    // A viewer may not confirm discards.
    let v = sign_in(&d, "Viewer", VIEWER_PASSWORD).unwrap();
    assert_eq!(
        http(
            &d,
            "GET",
            "/console/lifecycle/discard?specimen=SPEC-H1&item=primary",
            &v.cookie,
            ""
        )
        .status,
        403
    );
}

#[test]
fn a_run_is_accepted_or_rejected_with_a_signature() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &analyzer("lab"));
    enable_console(&cfg, false);
    let mut d = Daemon::start(dir.path());
    send_positive(&d, "SPEC-R1");
    send_positive(&d, "SPEC-R2");
    let s = sign_in(&d, "Dr. Test Scientist", PASSWORD).unwrap();
    let list = http(&d, "GET", "/console/runs", &s.cookie, "");
    assert_eq!(list.status, 200);
    let keys: Vec<String> = list
        .body
        .split("href=\"/console/runs/")
        .skip(1)
        .map(|p| p.split('"').next().unwrap().to_string())
        .filter(|k| k.starts_with("lab"))
        .collect();
    assert_eq!(keys.len(), 2, "two runs wait: {}", list.body);
    let run_page =
        |key: &str, cookie: &str| http(&d, "GET", &format!("/console/runs/{key}"), cookie, "");
    let page = run_page(&keys[0], &s.cookie);
    assert!(
        page.body.contains(">Sign and accept run</button>"),
        "{}",
        page.body
    );
    assert!(page.body.contains("QC-HIGH"));
    let sha = {
        let at = page.body.find("name=\"sha\" value=\"").unwrap() + 18;
        page.body[at..].split('"').next().unwrap().to_string()
    };
    let post = |key: &str, cookie: &str, form: String| {
        http(&d, "POST", &format!("/console/runs/{key}"), cookie, &form)
    };
    // Refused: no reason to reject, a wrong password, a stale hash, a viewer.
    let r = post(
        &keys[0],
        &s.cookie,
        format!(
            "csrf={}&decision=reject&sha={sha}&password={}",
            s.csrf,
            enc(PASSWORD)
        ),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post(
        &keys[0],
        &s.cookie,
        format!(
            "csrf={}&decision=accept&sha={sha}&password=wrong-password",
            s.csrf
        ),
    );
    assert_eq!(r.status, 401, "{}", r.body);
    let r = post(
        &keys[0],
        &s.cookie,
        format!(
            "csrf={}&decision=accept&sha=0000&password={}",
            s.csrf,
            enc(PASSWORD)
        ),
    );
    assert_eq!(r.status, 409, "{}", r.body);
    let v = sign_in(&d, "Viewer", VIEWER_PASSWORD).unwrap();
    assert!(
        !run_page(&keys[0], &v.cookie)
            .body
            .contains("Sign and accept run")
    );
    let r = post(
        &keys[0],
        &v.cookie,
        format!(
            "csrf={}&decision=accept&sha={sha}&password={}",
            v.csrf,
            enc(VIEWER_PASSWORD)
        ),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    // Accepted with the signature: its specimen is ready for review.
    let r = post(
        &keys[0],
        &s.cookie,
        format!(
            "csrf={}&decision=accept&sha={sha}&reason=QC+reviewed&password={}",
            s.csrf,
            enc(PASSWORD)
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("accepted"), "{}", r.body);
    // The other rejected with a reason: its specimen needs a retest.
    let page = run_page(&keys[1], &s.cookie);
    let sha2 = {
        let at = page.body.find("name=\"sha\" value=\"").unwrap() + 18;
        page.body[at..].split('"').next().unwrap().to_string()
    };
    let r = post(
        &keys[1],
        &s.cookie,
        format!(
            "csrf={}&decision=reject&sha={sha2}&reason=calibrator+drift&password={}",
            s.csrf,
            enc(PASSWORD)
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("rejected"), "{}", r.body);
    let states: Vec<String> = ["SPEC-R1", "SPEC-R2"]
        .iter()
        .map(|id| {
            d.specimen(id).unwrap()["state"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        states.contains(&"ready_for_review".to_string()),
        "{states:?}"
    );
    assert!(states.iter().any(|s| s != "ready_for_review"), "{states:?}");
    let page = run_page(&keys[1], &s.cookie);
    assert!(page.body.contains("Rejected") && page.body.contains("calibrator drift"));
    assert_eq!(d.term(), Some(0));
    let entries = audit_entries(dir.path());
    for key in &keys {
        let key = key.replace("%3A", ":");
        assert!(
            entries
                .iter()
                .any(|e| e.action == "signature_given" && e.subject == key),
            "no signature audited for {key}"
        );
    }
    assert!(entries.iter().any(|e| e.action == "signature_refused"));
}
