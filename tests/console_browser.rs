//! The review console in a real browser: Debian's headless Chromium, driven through
//! chromedriver (WebDriver) by fantoccini, against the real daemon serving the console over TLS
//! (a self-signed certificate for the laboratory) and a local HTTPS MRO receiver:
//!
//! - sign-in (a wrong password first) → the positive's analytical run accepted with a signature
//!   after its QC → review queue → specimen → "Release" → the signature step (content hash,
//!   meaning, password) → the MRO receiver gets the signed report;
//! - batch release of listed negatives under one signature; send back for retest;
//! - a dead letter (the MRO refused one report of the batch) retried from the outbox;
//! - refusals: a form without its CSRF token, a viewer trying to release;
//! - the session cookie's flags as the browser stored them;
//! - screenshots of the queue and the specimen page, kept in `tests/screenshots/` (the README
//!   shows them).
//!
//! `tests/run.sh` installs `chromium` and `chromium-driver`.

mod common;
#[path = "common/mro.rs"]
mod mro;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSN: &str = "412-55-9183";

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromedriver() -> Driver {
    let bin = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromedriver is not installed: run `bash tests/run.sh`, which installs chromium and chromium-driver");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, port }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "args": [
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--window-size=1280,1500",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    // The laboratory's certificate is self-signed here.
    caps.insert("acceptInsecureCerts".into(), serde_json::json!(true));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session with headless Chromium")
}

fn accession(d: &Daemon, id: &str) {
    let xml = String::from_utf8(accession_xml_clean(id))
        .unwrap()
        .replace("000-00-0000", SSN);
    d.drop_lims(&format!("acc-{id}.xml"), xml.as_bytes())
        .unwrap();
}

fn positive(d: &Daemon, id: &str) {
    accession(d, id);
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
    // The run holds a confirmation: it closes pending, for a certifying scientist to accept.
    close_run(d, "lab");
    assert_ne!(d.specimen(id).unwrap()["state"], "ready_for_review");
}

fn negative(d: &Daemon, id: &str, creatinine: &str, specific_gravity: &str) {
    accession(d, id);
    let m = oru(
        &format!("{id}-1"),
        id,
        &[
            ("THC50", "0", "ng/mL"),
            ("COC300", "0", "ng/mL"),
            ("OPI2000", "0", "ng/mL"),
            ("AMP1000", "0", "ng/mL"),
            ("PCP25", "0", "ng/mL"),
            ("CREA", creatinine, "mg/dL"),
            ("SG", specific_gravity, ""),
            ("PH", "6.2", "pH"),
            ("NIT", "0", "mcg/mL"),
        ],
    );
    assert_eq!(ack_code(&send(d.addr("lab"), &m).unwrap()), "AA");
    // Its run (screen and validity only) is accepted automatically once its QC passed.
    close_run(d, "lab");
    assert_eq!(d.specimen(id).unwrap()["state"], "ready_for_review");
}

async fn button(c: &Client, label: &str) {
    c.find(Locator::XPath(&format!(
        "//button[normalize-space()='{label}']"
    )))
    .await
    .unwrap_or_else(|e| panic!("no button {label}: {e}"))
    .click()
    .await
    .unwrap();
}

/// Types into the input whose visible label is `label`.
async fn fill(c: &Client, label: &str, text: &str) {
    let l = c
        .find(Locator::XPath(&format!(
            "//label[normalize-space()='{label}']"
        )))
        .await
        .unwrap_or_else(|e| panic!("no field labelled {label}: {e}"));
    let id = l
        .attr("for")
        .await
        .unwrap()
        .expect("the label names its field");
    c.find(Locator::Id(&id))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

async fn body(c: &Client) -> String {
    // The page may be replaced while it is read (a navigation finishing): read it again.
    for _ in 0..50 {
        if let Ok(b) = c.find(Locator::Css("body")).await
            && let Ok(t) = b.text().await
        {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page could not be read");
}

/// The page's text once it contains `needle` (after a click, the next page may take a moment).
async fn page(c: &Client, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = body(c).await;
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no page with {needle:?}; the page says:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sign_in(c: &Client, base: &str, user: &str, password: &str) {
    c.goto(&format!("{base}/console/sign-in")).await.unwrap();
    fill(c, "User name", user).await;
    fill(c, "Password", password).await;
    button(c, "Sign in").await;
    // Wait for the answer: the queue, or the sign-in page with its error.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = body(c).await;
        if text.contains("Signed in as") || text.contains("is wrong") || text.contains("locked") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no answer to the sign-in:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report_of(d: &Daemon, id: &str) -> String {
    d.specimen(id).unwrap()["release"]["report_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{id} is not released"))
        .to_string()
}

/// The payload of the signed report the MRO receiver got for `report`.
fn delivered(rx: &mro::Receiver, report: &str) -> serde_json::Value {
    use base64::Engine;
    rx.wait_answered_2xx(report, Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the MRO did not get {report}"));
    let r = rx.with_key(report).pop().unwrap();
    assert_eq!(r.content_type, "application/jose");
    let payload = r.body.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

fn screenshot(name: &str, png: &[u8]) {
    let dir = root().join("tests/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(dir.join(name), png).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_release_batch_retest_and_dead_letter_retry_in_chromium() {
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
    enable_console(&cfg, true);
    generate_key(&cfg);
    let d = tokio::task::block_in_place(|| {
        let d = Daemon::start(dir.path());
        positive(&d, "SPEC-P1");
        negative(&d, "SPEC-N1", "90", "1.018");
        negative(&d, "SPEC-N2", "15", "1.002");
        negative(&d, "SPEC-T1", "90", "1.018");
        negative(&d, "SPEC-T2", "90", "1.018");
        d
    });
    let base = format!("https://localhost:{}", d.admin.port());
    let driver = chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;

    // Not signed in: the console sends to the sign-in page; a wrong password is refused.
    c.goto(&format!("{base}/console/")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/console/sign-in");
    sign_in(&c, &base, "Dr. Test Scientist", "not-my-password").await;
    let text = page(&c, "The user name or the password is wrong.").await;
    assert!(
        text.contains("The user name or the password is wrong."),
        "{text}"
    );
    assert!(c.get_named_cookie("custodian-session").await.is_err());

    // Signed in: the session cookie as the browser keeps it.
    sign_in(&c, &base, "Dr. Test Scientist", PASSWORD).await;
    page(&c, "Specimens ready for review").await;
    assert_eq!(c.current_url().await.unwrap().path(), "/console/queue");
    let cookie = c.get_named_cookie("custodian-session").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.secure(), Some(true));
    assert_eq!(
        cookie.same_site().map(|s| s.to_string()).as_deref(),
        Some("Strict")
    );

    // The run of the positive waits for acceptance: its QC, then a signature.
    c.goto(&format!("{base}/console/runs")).await.unwrap();
    let text = page(&c, "Waiting for acceptance").await;
    assert!(text.contains("SPEC-P1") || text.contains("lab:"), "{text}");
    let link = c
        .find(Locator::Css("a[href^='/console/runs/lab']"))
        .await
        .unwrap();
    link.click().await.unwrap();
    let text = page(&c, "QC checks").await;
    for expected in ["QC-NEG", "QC-HIGH", "BZEC", "passed", "SPEC-P1"] {
        assert!(text.contains(expected), "{expected} not shown:\n{text}");
    }
    fill(
        &c,
        "Accept: reason (optional)",
        "controls and calibrators within range",
    )
    .await;
    fill(&c, "Accept: password", PASSWORD).await;
    button(&c, "Sign and accept run").await;
    page(&c, "accepted").await;

    // The queue: every specimen with its flags; a screenshot for the README.
    c.goto(&format!("{base}/console/queue")).await.unwrap();
    let text = page(&c, "Specimens ready for review").await;
    for id in ["SPEC-P1", "SPEC-N1", "SPEC-N2", "SPEC-T1", "SPEC-T2"] {
        assert!(text.contains(id), "{id} not in the queue:\n{text}");
    }
    assert!(text.contains("non-negative"), "{text}");
    assert!(text.contains("dilute"), "{text}");
    screenshot("queue.png", &c.screenshot().await.unwrap());
    // Filters: only the dilute one.
    c.goto(&format!("{base}/console/queue?flag=dilute"))
        .await
        .unwrap();
    let text = page(&c, "SPEC-N2").await;
    assert!(
        text.contains("SPEC-N2") && !text.contains("SPEC-P1"),
        "{text}"
    );

    // The specimen: CCF with the SSN (a certifying scientist may see it), the image as
    // received, results with the edition's cutoffs, the report as it will be sent.
    c.goto(&format!("{base}/console/queue")).await.unwrap();
    c.find(Locator::LinkText("SPEC-P1"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let text = page(&c, "Custody and control form").await;
    assert_eq!(
        c.current_url().await.unwrap().path(),
        "/console/specimens/SPEC-P1"
    );
    for expected in [
        SSN,
        "benzoylecgonine",
        "480",
        "150",
        "The report as it will be sent",
        "Dr. Pat Example, MD",
    ] {
        assert!(text.contains(expected), "{expected} not shown:\n{text}");
    }
    let img = c.find(Locator::Css("img.ccf")).await.unwrap();
    let loaded = c
        .execute(
            "return arguments[0].complete && arguments[0].naturalWidth > 0;",
            vec![serde_json::to_value(&img).unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(loaded, serde_json::json!(true), "the image of Copy 1 loads");
    let draft_hash = c
        .find(Locator::Css("#report + p .hash"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(draft_hash.len(), 64);
    screenshot("specimen.png", &c.screenshot().await.unwrap());

    // Release: the signature step shows what is signed and asks for the password.
    button(&c, "Release").await;
    let text = page(&c, "What you sign").await;
    assert!(text.contains("reviewed and released"), "{text}");
    assert!(
        text.contains(&draft_hash),
        "the hash shown is the draft's:\n{text}"
    );
    fill(&c, "Password", PASSWORD).await;
    button(&c, "Sign and release").await;
    let text = page(&c, "Released reports").await;
    assert!(text.contains("Released"), "{text}");
    let report = tokio::task::block_in_place(|| report_of(&d, "SPEC-P1"));
    let payload = tokio::task::block_in_place(|| delivered(&rx, &report));
    assert_eq!(payload["specimen_id"], "SPEC-P1");
    assert_eq!(payload["certifying_scientist"], "Dr. Test Scientist");
    assert!(
        payload["ccf_copy1"]["data"].is_string(),
        "with its certified Copy 1"
    );

    // A form without its CSRF token is refused (the token removed in the page).
    c.goto(&format!("{base}/console/specimens/SPEC-T2"))
        .await
        .unwrap();
    c.execute(
        "document.querySelectorAll('input[name=csrf]').forEach(e => e.remove());",
        vec![],
    )
    .await
    .unwrap();
    fill(&c, "Reason", "no token").await;
    button(&c, "Send back for retest").await;
    let text = page(&c, "Refused").await;
    assert!(text.contains("security token"), "{text}");
    assert_eq!(
        tokio::task::block_in_place(|| d.specimen("SPEC-T2").unwrap())["state"],
        "ready_for_review"
    );

    // Send back for retest, with the tests and the reason.
    c.goto(&format!("{base}/console/specimens/SPEC-T1"))
        .await
        .unwrap();
    c.find(Locator::Id("t-creatinine"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    fill(&c, "Reason", "creatinine control out of range").await;
    button(&c, "Send back for retest").await;
    page(&c, "Sent back for retest").await;
    let rec = tokio::task::block_in_place(|| d.specimen("SPEC-T1").unwrap());
    assert_ne!(rec["state"], "ready_for_review", "{rec}");
    assert_eq!(
        rec["retests"][0]["tests"],
        serde_json::json!(["creatinine"])
    );
    assert_eq!(
        rec["retests"][0]["reason"],
        "creatinine control out of range"
    );

    // Batch release of two negatives under one signature; the MRO refuses the first it gets
    // for good (a dead letter).
    rx.script
        .lock()
        .unwrap()
        .push_back(mro::Scripted::new(422, "unknown employer"));
    c.goto(&format!("{base}/console/queue")).await.unwrap();
    for id in ["SPEC-N1", "SPEC-N2"] {
        // Each checkbox has its label; clicking the label ticks it.
        c.find(Locator::XPath(&format!(
            "//label[normalize-space()='select {id}']"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    }
    button(&c, "Release selected negatives").await;
    let text = page(&c, "What you sign").await;
    assert!(
        text.contains("SPEC-N1") && text.contains("SPEC-N2"),
        "{text}"
    );
    assert!(text.contains("these negative results"), "{text}");
    fill(&c, "Password", PASSWORD).await;
    button(&c, "Sign and release").await;
    page(&c, "Released reports").await;
    let (r1, r2) =
        tokio::task::block_in_place(|| (report_of(&d, "SPEC-N1"), report_of(&d, "SPEC-N2")));
    let dead = tokio::task::block_in_place(|| {
        let mut dead = None;
        wait_until("a dead letter", Duration::from_secs(30), || {
            let (_, b) = d.get("/api/outbox", Some(TOKEN));
            let v: serde_json::Value = serde_json::from_str(&b).unwrap();
            dead = v["MRO-0042"]["dead_letters"][0]["report_id"]
                .as_str()
                .map(str::to_string);
            dead.is_some()
        });
        dead.unwrap()
    });
    let delivered_first = if dead == r1 { &r2 } else { &r1 };
    tokio::task::block_in_place(|| delivered(&rx, delivered_first));

    // A viewer sees no donor identifier and cannot release.
    c.delete_all_cookies().await.unwrap();
    sign_in(&c, &base, "Viewer", VIEWER_PASSWORD).await;
    c.goto(&format!("{base}/console/specimens/SPEC-T2"))
        .await
        .unwrap();
    let source = c.source().await.unwrap();
    assert!(!source.contains(SSN), "a viewer sees the SSN");
    assert!(
        c.find(Locator::XPath("//button[normalize-space()='Release']"))
            .await
            .is_err(),
        "no Release button for a viewer"
    );
    c.goto(&format!("{base}/console/specimens/SPEC-T2/release"))
        .await
        .unwrap();
    let text = page(&c, "does not allow").await;
    assert!(text.contains("does not allow"), "{text}");
    c.goto(&format!("{base}/console/outbox")).await.unwrap();
    page(&c, "operators retry").await;

    // The operator retries the dead letter from the outbox; the MRO gets it.
    c.delete_all_cookies().await.unwrap();
    sign_in(&c, &base, "Operator", OPERATOR_PASSWORD).await;
    c.goto(&format!("{base}/console/outbox")).await.unwrap();
    let text = page(&c, "Dead letters").await;
    assert!(
        text.contains(&dead) && text.contains("unknown employer"),
        "{text}"
    );
    button(&c, "Retry").await;
    page(&c, "pending again").await;
    tokio::task::block_in_place(|| delivered(&rx, &dead));

    // Sign out ends the session.
    button(&c, "Sign out").await;
    page(&c, "You are signed out.").await;
    c.goto(&format!("{base}/console/queue")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/console/sign-in");
    c.close().await.unwrap();
}
