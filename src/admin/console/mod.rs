//! The review console: server-rendered HTML pages on the admin listener for certifying
//! scientists, operators and viewers (no JavaScript, no external assets: the styles are in the
//! page). People sign in with a user name and password (Argon2id in the configuration); a
//! session cookie (`HttpOnly; Secure; SameSite=Strict`) with an idle timeout follows; every form
//! carries the session's CSRF token; every signature (release, batch release) asks for the
//! password again and counts towards the lockout like a failed sign-in.
//!
//! Donor identifiers (the CCF's SSN or employee ID, the images of Copy 1) are shown only to the
//! roles that may see them, and every page that shows them is audited (who, which specimen)
//! before it is sent. Actions go through the same services as the API, so what the console does
//! is audited exactly as the API's requests are.

// A handler's refusal is its whole answer page: the `Err` of these helpers is a `Response`.
#![allow(clippy::result_large_err)]

pub mod runs;
pub mod session;
pub mod views;

use super::auth::{PasswordCheck, Permission, Role, User};
use super::{AdminState, AuditSink};
use crate::domain::specimen::{SpecimenRecord, State};
use crate::store::AuditEntry;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use session::{SESSION_COOKIE, SIGN_IN_COOKIE, Sessions, cookie, cookie_value, same_token};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use views::{Cell, Field, FormView, Nav, Page, Table};

/// What the console reads beyond the API's services: typed records, the profiles, the images
/// and the signed reports of a specimen. Implemented by the wiring.
pub trait ConsoleData: Send + Sync {
    fn record(&self, id: &str) -> Result<Option<SpecimenRecord>, String>;
    fn in_state(&self, state: State) -> Result<Vec<SpecimenRecord>, String>;
    fn profiles(&self) -> &crate::domain::rules::ProfileSet;
    fn default_profile(&self) -> &str;
    /// The image of Copy 1 as received, checked against its recorded hash (not audited here:
    /// the caller audits the read first).
    fn ccf_image(&self, id: &str) -> Result<Option<Vec<u8>>, String>;
    /// The signed reports of a specimen, oldest first.
    fn reports_of(&self, id: &str) -> Result<Vec<crate::custody::outbox::StoredReport>, String>;
}

/// The console's state: sessions and the data it reads.
pub struct Console {
    pub sessions: Sessions,
    pub data: Arc<dyn ConsoleData>,
}

/// The signed-in person of a request.
struct Who {
    user: User,
    csrf: String,
    session: String,
}

impl Who {
    fn nav(&self) -> Nav {
        Nav {
            user: self.user.name.clone(),
            role: self.user.role.key(),
            csrf: self.csrf.clone(),
        }
    }
    fn actor(&self) -> String {
        actor(&self.user.name)
    }
}

fn actor(name: &str) -> String {
    format!("user:{name}").chars().take(64).collect()
}

/// A form body (or query) as name/value pairs, repeated names kept.
struct Form(Vec<(String, String)>);

impl Form {
    fn parse(bytes: &[u8]) -> Form {
        Form(form_urlencoded::parse(bytes).into_owned().collect())
    }
    fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

fn html<T: askama::Template>(status: StatusCode, page: T) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the page could not be rendered: {e}\n"),
        )
            .into_response(),
    }
}

fn error_page(
    status: StatusCode,
    nav: Option<Nav>,
    title: &str,
    msg: impl Into<String>,
) -> Response {
    let mut p = Page::new(title, nav);
    p.error = Some(msg.into());
    html(status, p.link("/console/queue", "Back to the review queue"))
}

fn to_sign_in(expired: bool) -> Response {
    Redirect::to(if expired {
        "/console/sign-in?expired=1"
    } else {
        "/console/sign-in"
    })
    .into_response()
}

fn console_of(s: &AdminState) -> Result<&Arc<Console>, Response> {
    s.console.as_ref().ok_or_else(|| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the console is not available\n",
        )
            .into_response()
    })
}

/// Writes audit entries durably; `Err` is the page to answer when that failed.
async fn audit(s: &AdminState, nav: Option<Nav>, entries: Vec<AuditEntry>) -> Result<(), Response> {
    let Some(sink) = &s.audit else {
        return Ok(());
    };
    let sink: AuditSink = sink.clone();
    sink(entries).await.map_err(|e| {
        error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            nav,
            "Not available",
            format!("the access could not be audited, so nothing is shown: {e}"),
        )
    })
}

/// The signed-in person, or the answer that sends them to sign in.
async fn who(s: &AdminState, headers: &HeaderMap) -> Result<Who, Response> {
    let c = console_of(s)?;
    let Some(id) = cookie_value(headers, SESSION_COOKIE) else {
        return Err(to_sign_in(false));
    };
    match c.sessions.get(id) {
        Ok(Some(sess)) => {
            let users = s
                .users
                .read()
                .map(|u| u.clone())
                .unwrap_or_else(|p| p.into_inner().clone());
            match users.by_name(&sess.user) {
                Some(user) => Ok(Who {
                    user,
                    csrf: sess.csrf,
                    session: id.to_string(),
                }),
                None => {
                    c.sessions.end(id);
                    Err(to_sign_in(false))
                }
            }
        }
        Ok(None) => Err(to_sign_in(false)),
        Err(user) => {
            let now = s.clock_ms();
            let _ = audit(
                s,
                None,
                vec![
                    AuditEntry::new(now, actor(&user), "session_expired", "console")
                        .after(format!("idle for {} s", c.sessions.idle_ms() / 1000)),
                ],
            )
            .await;
            Err(to_sign_in(true))
        }
    }
}

/// Refuses a form whose CSRF token is missing or wrong (audited as a refusal).
fn check_csrf(s: &AdminState, w: &Who, form: &Form, path: &str) -> Result<(), Response> {
    if same_token(form.get("csrf"), &w.csrf) {
        return Ok(());
    }
    if let Some(a) = &s.on_refusal {
        a(Some(&w.user.name), path, "csrf");
    }
    crate::core::telemetry::emit(super::events::ConsoleRefused { reason: "csrf" });
    Err(error_page(
        StatusCode::FORBIDDEN,
        Some(w.nav()),
        "Refused",
        "The form was refused: its security token is missing or does not match your session. \
         Reload the page and submit it again.",
    ))
}

/// Refuses an action the person's role does not allow (audited as a refusal).
fn check_role(s: &AdminState, w: &Who, need: Permission, path: &str) -> Result<(), Response> {
    if w.user.role.may(need) {
        return Ok(());
    }
    crate::core::telemetry::emit(super::events::Forbidden {
        user: &w.user.name,
        role: w.user.role.key(),
        path,
    });
    if let Some(a) = &s.on_refusal {
        a(Some(&w.user.name), path, "forbidden");
    }
    Err(error_page(
        StatusCode::FORBIDDEN,
        Some(w.nav()),
        "Refused",
        format!(
            "Your role ({}) does not allow this action.",
            w.user.role.key()
        ),
    ))
}

/// Whether the role may see donor identifiers and the images of Copy 1.
fn sees_donor_data(role: Role) -> bool {
    role != Role::Viewer
}

fn rfc3339(ms: u64) -> String {
    crate::core::clock::rfc3339(ms)
}

fn age(now: u64, since: u64) -> String {
    let m = now.saturating_sub(since) / 60_000;
    match m {
        0 => "under a minute".into(),
        m if m < 120 => format!("{m} min"),
        m if m < 48 * 60 => format!("{} h", m / 60),
        m => format!("{} days", m / 1440),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The SHA-256 of a draft report as shown to the scientist (its JSON bytes).
fn draft_sha(item: &serde_json::Value) -> Option<String> {
    let d = item.get("draft_report").filter(|d| !d.is_null())?;
    serde_json::to_vec(d).ok().map(|b| sha256_hex(&b))
}

// ---- sign in and out ------------------------------------------------------------------------

async fn root() -> Response {
    Redirect::to("/console/queue").into_response()
}

async fn sign_in_page(AxState(s): AxState<AdminState>, RawQuery(q): RawQuery) -> Response {
    let c = match console_of(&s) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let q = Form::parse(q.unwrap_or_default().as_bytes());
    let notice = match (q.get("expired"), q.get("signed_out")) {
        ("1", _) => Some(format!(
            "Your session ended after {} minutes without activity. Sign in again.",
            c.sessions.idle_ms() / 60_000
        )),
        (_, "1") => Some("You are signed out.".to_string()),
        _ => None,
    };
    sign_in_form(c, StatusCode::OK, String::new(), None, notice)
}

fn sign_in_form(
    c: &Console,
    status: StatusCode,
    user: String,
    error: Option<String>,
    notice: Option<String>,
) -> Response {
    let token = c.sessions.token();
    let mut r = html(
        status,
        views::SignIn {
            title: "Sign in",
            nav: None,
            csrf: token.clone(),
            user,
            error,
            notice,
        },
    );
    if let Ok(v) = HeaderValue::from_str(&cookie(SIGN_IN_COOKIE, Some(&token))) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

const WRONG: &str = "The user name or the password is wrong.";

async fn sign_in(
    AxState(s): AxState<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let c = match console_of(&s) {
        Ok(c) => c.clone(),
        Err(r) => return r,
    };
    let form = Form::parse(&body);
    let name = form.get("user").trim().to_string();
    let password = form.get("password").to_string();
    let expected = cookie_value(&headers, SIGN_IN_COOKIE).unwrap_or("");
    if !same_token(form.get("csrf"), expected) {
        crate::core::telemetry::emit(super::events::ConsoleRefused { reason: "csrf" });
        return sign_in_form(
            &c,
            StatusCode::FORBIDDEN,
            name,
            Some(
                "The sign-in form was refused: its security token is missing or expired. \
                 Sign in again."
                    .into(),
            ),
            None,
        );
    }
    let users = s
        .users
        .read()
        .map(|u| u.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let now = s.clock_ms();
    let Some(known) = users.by_name(&name) else {
        // Not a configured user: counted per source, like the API's unknown callers.
        let _ = users.check_password(&name, &password);
        crate::core::telemetry::emit(super::events::ConsoleSignIn { outcome: "unknown" });
        if let Some(u) = &s.unknown_callers {
            let entries = u.aggregator.refused(Some(peer.ip()), "/console/sign-in");
            if !entries.is_empty() {
                (u.audit)(entries);
            }
        }
        return sign_in_form(&c, StatusCode::UNAUTHORIZED, name, Some(WRONG.into()), None);
    };
    let subject = "console";
    if let Some(until) = c.sessions.locked_until(&known.name) {
        crate::core::telemetry::emit(super::events::ConsoleSignIn { outcome: "locked" });
        if let Err(r) = audit(
            &s,
            None,
            vec![
                AuditEntry::new(now, actor(&known.name), "sign_in_refused", subject)
                    .after(format!("locked until {}", rfc3339(until))),
            ],
        )
        .await
        {
            return r;
        }
        return sign_in_form(
            &c,
            StatusCode::TOO_MANY_REQUESTS,
            name,
            Some(format!(
                "Too many failed attempts: this user is locked until {} (UTC). Ask another \
                 administrator if you cannot wait.",
                rfc3339(until)
            )),
            None,
        );
    }
    match users.check_password(&known.name, &password) {
        PasswordCheck::Known(Some(user)) => {
            c.sessions.succeeded(&user.name);
            let id = c.sessions.create(&user.name);
            crate::core::telemetry::emit(super::events::ConsoleSignIn { outcome: "ok" });
            if let Err(r) = audit(
                &s,
                None,
                vec![
                    AuditEntry::new(now, actor(&user.name), "signed_in", subject)
                        .after(format!("console session; role {}", user.role.key())),
                ],
            )
            .await
            {
                c.sessions.end(&id);
                return r;
            }
            let mut r = Redirect::to("/console/queue").into_response();
            for v in [
                cookie(SESSION_COOKIE, Some(&id)),
                cookie(SIGN_IN_COOKIE, None),
            ] {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            r
        }
        _ => {
            let f = c.sessions.failed(&known.name);
            crate::core::telemetry::emit(super::events::ConsoleSignIn { outcome: "failed" });
            let mut after = format!("wrong password (failure {} in a row)", f.count);
            if let Some(ms) = f.locked_for_ms {
                after.push_str(&format!("; locked for {} s", ms / 1000));
            }
            if let Err(r) = audit(
                &s,
                None,
                vec![
                    AuditEntry::new(now, actor(&known.name), "sign_in_failed", subject)
                        .after(after),
                ],
            )
            .await
            {
                return r;
            }
            sign_in_form(&c, StatusCode::UNAUTHORIZED, name, Some(WRONG.into()), None)
        }
    }
}

async fn sign_out(AxState(s): AxState<AdminState>, headers: HeaderMap, body: Bytes) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if let Err(r) = check_csrf(&s, &w, &Form::parse(&body), "/console/sign-out") {
        return r;
    }
    if let Ok(c) = console_of(&s) {
        c.sessions.end(&w.session);
    }
    let now = s.clock_ms();
    let _ = audit(
        &s,
        None,
        vec![AuditEntry::new(now, w.actor(), "signed_out", "console")],
    )
    .await;
    let mut r = Redirect::to("/console/sign-in?signed_out=1").into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie(SESSION_COOKIE, None)) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Checks the password of a signature: right, or the page that refuses it (counted towards the
/// lockout and audited one by one).
async fn signature(s: &AdminState, w: &Who, password: &str, subject: &str) -> Result<(), Response> {
    let c = console_of(s)?;
    let now = s.clock_ms();
    if let Some(until) = c.sessions.locked_until(&w.user.name) {
        audit(
            s,
            Some(w.nav()),
            vec![
                AuditEntry::new(now, w.actor(), "signature_refused", subject)
                    .after(format!("locked until {}", rfc3339(until))),
            ],
        )
        .await?;
        return Err(error_page(
            StatusCode::TOO_MANY_REQUESTS,
            Some(w.nav()),
            "Signature refused",
            format!(
                "Too many wrong passwords: your signature is locked until {} (UTC).",
                rfc3339(until)
            ),
        ));
    }
    let users = s
        .users
        .read()
        .map(|u| u.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    if let PasswordCheck::Known(Some(_)) = users.check_password(&w.user.name, password) {
        c.sessions.succeeded(&w.user.name);
        return Ok(());
    }
    let f = c.sessions.failed(&w.user.name);
    crate::core::telemetry::emit(super::events::ConsoleRefused {
        reason: "signature_password",
    });
    let mut after = format!("wrong password at signature (failure {} in a row)", f.count);
    if let Some(ms) = f.locked_for_ms {
        after.push_str(&format!("; locked for {} s", ms / 1000));
    }
    audit(
        s,
        Some(w.nav()),
        vec![AuditEntry::new(now, w.actor(), "signature_refused", subject).after(after)],
    )
    .await?;
    Err(error_page(
        StatusCode::UNAUTHORIZED,
        Some(w.nav()),
        "Signature refused",
        "The password is wrong: nothing was signed or released. Go back and try again.",
    ))
}

// ---- the review queue -----------------------------------------------------------------------

const FLAGS: [(&str, &str); 6] = [
    ("", "All"),
    ("negative", "Negative"),
    ("non_negative", "Non-negative"),
    ("dilute", "Dilute"),
    ("held", "Held for a reason"),
    ("missing_image", "Missing CCF image"),
];

fn flags_of(item: &serde_json::Value, rec: &SpecimenRecord) -> (Vec<&'static str>, bool) {
    let results: Vec<&str> = item["verdict"]["results"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r.as_str()).collect())
        .unwrap_or_default();
    let negative = results == ["negative"];
    let mut flags = Vec::new();
    if !negative {
        flags.push("non-negative");
    }
    if item["verdict"]["dilute"].as_bool() == Some(true) {
        flags.push("dilute");
    }
    if !item["held_because"].is_null() {
        flags.push("held");
    }
    if rec.ccf_image.is_none() {
        flags.push("missing CCF image");
    }
    (flags, negative)
}

fn verdict_text(v: &serde_json::Value) -> String {
    let mut parts: Vec<String> = v["results"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(|s| s.replace('_', " ")))
                .collect()
        })
        .unwrap_or_default();
    if parts.is_empty() {
        parts.push("not evaluated".into());
    }
    let mut t = parts.join(", ");
    if let Some(p) = v["positive_analytes"].as_array().filter(|a| !a.is_empty()) {
        let names: Vec<&str> = p.iter().filter_map(|x| x.as_str()).collect();
        t.push_str(&format!(" ({})", names.join(", ")));
    }
    if v["dilute"].as_bool() == Some(true) {
        t.push_str(", dilute");
    }
    t
}

async fn queue(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (Ok(c), Some(review)) = (console_of(&s), &s.review) else {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(w.nav()),
            "Not available",
            "review is not available",
        );
    };
    let q = Form::parse(q.unwrap_or_default().as_bytes());
    let flag = q.get("flag").to_string();
    let text = q.get("q").trim().to_string();
    let records = match c.data.in_state(State::ReadyForReview) {
        Ok(r) => r,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, Some(w.nav()), "Error", e),
    };
    let now = s.clock_ms();
    let total = records.len();
    let mut rows = Vec::new();
    let mut recs: Vec<_> = records.into_iter().collect();
    recs.sort_by_key(|r| r.updated_at_ms);
    for rec in recs {
        let Ok(Some(item)) = review.item(&rec.specimen_id) else {
            continue;
        };
        let (flags, negative) = flags_of(&item, &rec);
        let keep = match flag.as_str() {
            "negative" => negative,
            "non_negative" => !negative,
            "dilute" => flags.contains(&"dilute"),
            "held" => flags.contains(&"held"),
            "missing_image" => flags.contains(&"missing CCF image"),
            _ => true,
        } && (text.is_empty() || rec.specimen_id.contains(&text));
        if !keep {
            continue;
        }
        rows.push(views::QueueRow {
            id: rec.specimen_id.clone(),
            age: age(now, rec.updated_at_ms),
            state: rec.state.key().replace('_', " "),
            result: verdict_text(&item["verdict"]),
            flags,
            negative,
        });
    }
    html(
        StatusCode::OK,
        views::Queue {
            title: "Review queue",
            nav: Some(w.nav()),
            flag,
            q: text,
            flag_options: FLAGS.to_vec(),
            rows,
            total,
            can_release: w.user.role.may(Permission::Release),
        },
    )
}

// ---- one specimen ---------------------------------------------------------------------------

fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "—".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ccf_rows(rec: &SpecimenRecord, donor: bool) -> Vec<(String, String)> {
    let Some(a) = &rec.accession else {
        return vec![("Accession".into(), "not yet received from the LIMS".into())];
    };
    let c = &a.ccf;
    let party = |p: &crate::domain::parties::Party| {
        let mut t = p.name.clone();
        if let Some(id) = &p.id {
            t.push_str(&format!(" (ID {id})"));
        }
        if let Some(ad) = &p.address {
            t.push_str(&format!(", {ad}"));
        }
        if let Some(ph) = &p.phone {
            t.push_str(&format!(", phone {ph}"));
        }
        t
    };
    let donor_id = match (&c.donor_id, donor) {
        (None, _) => "not provided".to_string(),
        (Some(d), true) => d.clone(),
        (Some(_), false) => super::redact::WITHHELD.to_string(),
    };
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let mut rows = vec![
        ("Donor SSN or employee ID".into(), donor_id),
        ("Employer".into(), party(&c.employer)),
        ("MRO".into(), party(&c.mro)),
        (
            "Reason for test".into(),
            c.reason_for_test.clone().unwrap_or_else(|| "—".into()),
        ),
        (
            "DOT agency".into(),
            c.dot_agency.clone().unwrap_or_else(|| "—".into()),
        ),
        ("Collector".into(), party(&c.collector)),
        ("Collected on".into(), c.collected_on.clone()),
        ("Received on".into(), c.received_on.clone()),
        ("Split specimen collected".into(), yes(c.split_collected)),
        ("Observed collection".into(), yes(c.observed)),
        (
            "Program".into(),
            text_of(&serde_json::to_value(a.program).unwrap_or_default()),
        ),
        (
            "Specimen type".into(),
            text_of(&serde_json::to_value(a.specimen_type).unwrap_or_default()),
        ),
        ("Accession document".into(), a.document.clone()),
    ];
    if let Some(r) = &c.remarks {
        rows.push(("CCF remarks".into(), r.clone()));
    }
    rows
}

fn specimen_view(
    s: &AdminState,
    c: &Console,
    w: &Who,
    rec: &SpecimenRecord,
    item: &serde_json::Value,
) -> views::Specimen {
    let donor = sees_donor_data(w.user.role);
    let profiles = c.data.profiles();
    let profile = rec.profile_name().and_then(|n| profiles.get(n));
    // The results as the review sees them: each with its run, the run's QC and whether it
    // counts; the latest counting one of a test is the one the verdict uses.
    let views: Vec<&serde_json::Value> = item["results"].as_array().into_iter().flatten().collect();
    let matches = |v: &serde_json::Value, kind: &str, target: &str| {
        let t = v["target"].as_str().unwrap_or("");
        v["kind"] == kind
            && (t == target
                || (kind == "initial"
                    && profile
                        .and_then(|p| p.class_for_target(t))
                        .is_some_and(|cl| cl.key == target)))
    };
    let counting = |kind: &str, target: &str| {
        views
            .iter()
            .copied()
            .filter(|v| v["counts"] == true && matches(v, kind, target))
            .max_by_key(|v| v["received_at_ms"].as_u64().unwrap_or(0))
    };
    let run_of = |v: &serde_json::Value| match v["run"].as_str() {
        Some(r) => format!(
            "{r} ({})",
            v["run_state"].as_str().unwrap_or("?").replace('_', " ")
        ),
        None => "—".into(),
    };
    let qc_of = |v: &serde_json::Value| {
        let mut t = v["run_qc"].as_str().unwrap_or("—").to_string();
        if v["acceptable"] == false {
            t.push_str("; flagged not acceptable");
        }
        t
    };
    let mut results = Vec::new();
    for a in item["analytes"].as_array().into_iter().flatten() {
        let class = a["class"].as_str().unwrap_or("");
        let analyte = a["analyte"].as_str().unwrap_or("");
        let init = counting("initial", class);
        let conf = counting("confirmation", analyte);
        let shown: Vec<&serde_json::Value> = init.iter().chain(conf.iter()).copied().collect();
        let join = |f: &dyn Fn(&serde_json::Value) -> String| {
            let mut parts: Vec<String> = shown.iter().map(|v| f(v)).collect();
            parts.dedup();
            if parts.is_empty() {
                "—".to_string()
            } else {
                parts.join("; ")
            }
        };
        results.push(views::ResultRow {
            class: class.into(),
            initial: text_of(&a["initial"]),
            initial_cutoff: text_of(&a["initial_cutoff"]),
            analyte: analyte.into(),
            confirmation: text_of(&a["confirmation"]),
            confirmation_cutoff: text_of(&a["confirmation_cutoff"]),
            unit: conf
                .or(init)
                .and_then(|v| v["unit"].as_str())
                .unwrap_or("ng/mL")
                .to_string(),
            source: join(&|v| text_of(&v["source"])),
            run: join(&|v| run_of(v)),
            qc: join(&|v| qc_of(v)),
        });
    }
    let mut validity = Vec::new();
    for v in views
        .iter()
        .copied()
        .filter(|v| v["kind"] == "validity" && v["counts"] == true)
    {
        let target = v["target"].as_str().unwrap_or("");
        if counting("validity", target).is_some_and(|l| std::ptr::eq(l, v)) {
            validity.push((
                target.replace('_', " "),
                text_of(&v["value"]),
                text_of(&v["unit"]),
                format!(
                    "{}; run {}; QC {}",
                    text_of(&v["source"]),
                    run_of(v),
                    qc_of(v)
                ),
            ));
        }
    }
    let criteria = profile
        .map(|p| {
            p.validity
                .iter()
                .map(|cr| {
                    let rule = cr
                        .clauses
                        .iter()
                        .map(|all| {
                            all.iter()
                                .map(|a| a.to_string())
                                .collect::<Vec<_>>()
                                .join(" and ")
                        })
                        .collect::<Vec<_>>()
                        .join(", or ");
                    (cr.result.key().to_string(), rule, cr.cite.clone())
                })
                .collect()
        })
        .unwrap_or_default();
    let key = |v: serde_json::Value| text_of(&v).replace('_', " ");
    let flaws = rec
        .flaws
        .iter()
        .map(|f| {
            (
                key(serde_json::to_value(f.flaw).unwrap_or_default()),
                key(serde_json::to_value(f.status).unwrap_or_default()),
                f.document.clone().unwrap_or_else(|| "—".into()),
            )
        })
        .collect();
    let corrections = rec
        .corrections
        .iter()
        .map(|c| {
            (
                c.flaw.replace('_', " "),
                c.document.clone(),
                c.recorded_by.clone(),
                rfc3339(c.received_at_ms),
            )
        })
        .collect();
    let remarks = item["verdict"]["remarks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let reports = c.data.reports_of(&rec.specimen_id).unwrap_or_default();
    // Before release the draft as it will be sent; after it the signed report as it was sent
    // (the certified copy's bytes are behind their own link).
    let sent = reports
        .iter()
        .rev()
        .find(|r| r.superseded_by.is_none())
        .filter(|_| rec.release.is_some());
    let (mut draft_json, sha) = match sent {
        Some(r) => (
            jws_payload(&r.jws).unwrap_or_default(),
            Some(r.content_sha256.clone()),
        ),
        None => (item["draft_report"].clone(), draft_sha(item)),
    };
    if let Some(copy) = draft_json
        .get_mut("ccf_copy1")
        .and_then(|c| c.get_mut("data"))
    {
        *copy = serde_json::Value::String(
            "(the certified Copy 1, base64: see the link under CCF images)".into(),
        );
    }
    if !donor {
        super::redact::donor_identifiers(&mut draft_json);
    }
    let draft = (!draft_json.is_null())
        .then(|| serde_json::to_string_pretty(&draft_json).unwrap_or_default());
    let (image, image_note) = match (&rec.ccf_image, donor) {
        (Some(m), true) => (
            Some(views::ImageView {
                href: format!("/console/specimens/{}/ccf-image", rec.specimen_id),
                media: m.media_type.key().into(),
                sha256: m.sha256.clone(),
                inline: m.media_type == crate::domain::copy1::MediaType::Png,
            }),
            String::new(),
        ),
        (Some(_), false) => (
            None,
            "The image of Copy 1 is stored; it shows the donor's identifiers, so the viewer role does not see it.".into(),
        ),
        (None, _) => (
            None,
            "No image of Copy 1 as received is stored: a non-negative result cannot be released without it (40.97(b)(2)).".into(),
        ),
    };
    let released = rec.release.as_ref().map(|r| {
        format!(
            "Released {} by {} ({}): report {}, content SHA-256 {}.",
            rfc3339(r.released_at_ms),
            r.scientist,
            r.meaning,
            r.report_id,
            r.content_sha256
        )
    });
    let certified = (donor && reports.iter().any(|r| !r.jws.is_empty()) && rec.release.is_some())
        .then(|| format!("/console/specimens/{}/certified-copy", rec.specimen_id))
        .filter(|_| {
            rec.evaluation
                .as_ref()
                .is_some_and(|e| crate::domain::copy1::required_for(&e.verdict.results))
        });
    let history = s
        .api
        .as_ref()
        .and_then(|a| a.specimen_audit(&rec.specimen_id).ok())
        .and_then(|v| v["entries"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                text_of(&e["at"]),
                text_of(&e["actor"]),
                text_of(&e["action"]).replace('_', " "),
                text_of(&e["before"]),
                text_of(&e["after"]),
            )
        })
        .collect();
    let mut received: Vec<views::ReceivedRow> = views
        .iter()
        .map(|v| views::ReceivedRow {
            at: v["received_at_ms"]
                .as_u64()
                .map(rfc3339)
                .unwrap_or_default(),
            kind: format!(
                "{} ({})",
                text_of(&v["kind"]),
                text_of(&v["tier"]).replace('_', " ")
            ),
            test: text_of(&v["target"]),
            value: text_of(&v["value"]),
            unit: text_of(&v["unit"]),
            source: format!("{} ({})", text_of(&v["source"]), text_of(&v["reference"])),
            run: format!("{}; QC {}", run_of(v), qc_of(v)),
            counts: if v["counts"] == true {
                "counts".to_string()
            } else {
                format!("does not count: {}", text_of(&v["why_not"]))
            },
        })
        .collect();
    received.sort_by(|a, b| a.at.cmp(&b.at));
    let conflicts: Vec<String> = item["result_conflicts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{} {}: counting results disagree ({})",
                text_of(&c["kind"]),
                text_of(&c["target"]),
                c["results"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| format!("#{} {}", text_of(&r[0]), text_of(&r[1])))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect();
    let retests_open: Vec<String> = item["retests_open"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let tests: Vec<String> = r["tests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
            format!(
                "{} asked by {} at {}: {}",
                if tests.is_empty() {
                    "any test".to_string()
                } else {
                    tests.join(", ")
                },
                text_of(&r["by"]),
                r["at_ms"].as_u64().map(rfc3339).unwrap_or_default(),
                text_of(&r["reason"])
            )
        })
        .collect();
    let ready = rec.state == State::ReadyForReview;
    let held = item["held_because"].as_str().map(str::to_string);
    let mut retest_tests: Vec<String> = profile
        .map(|p| p.classes.iter().map(|c| c.key.clone()).collect())
        .unwrap_or_default();
    retest_tests.extend(
        crate::domain::rules::profile::Measure::ALL
            .iter()
            .map(|m| m.key().to_string()),
    );
    views::Specimen {
        title: format!("Specimen {}", rec.specimen_id),
        nav: Some(w.nav()),
        csrf: w.csrf.clone(),
        id: rec.specimen_id.clone(),
        state: rec.state.key().replace('_', " "),
        profile: rec.profile_name().unwrap_or("none yet").to_string(),
        verdict: verdict_text(&item["verdict"]),
        held_because: held.clone(),
        released,
        retest: rec.retest_requested.clone(),
        retests_open,
        conflicts,
        can_release: ready && held.is_none() && w.user.role.may(Permission::Release),
        can_retest: ready && w.user.role.may(Permission::Release),
        ccf: ccf_rows(rec, donor),
        image,
        image_note,
        certified,
        results,
        validity,
        criteria,
        flaws,
        corrections,
        remarks,
        draft,
        sent: sent.map(|r| {
            format!(
                "Report {} as signed by {} and sent to {}; delivery: {}.",
                r.report_id,
                r.released_by,
                r.mro_id,
                serde_json::to_value(&r.delivery)
                    .ok()
                    .and_then(|d| d["status"].as_str().map(|s| s.replace('_', " ")))
                    .unwrap_or_default()
            )
        }),
        draft_sha: sha.unwrap_or_else(|| "the draft cannot be built from what is recorded".into()),
        retest_tests,
        history,
        received,
    }
}

async fn specimen(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (Ok(c), Some(review)) = (console_of(&s), &s.review) else {
        return error_page(
            StatusCode::SERVICE_UNAVAILABLE,
            Some(w.nav()),
            "Not available",
            "review is not available",
        );
    };
    let rec = match c.data.record(&id) {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error_page(
                StatusCode::NOT_FOUND,
                Some(w.nav()),
                "Not found",
                "No such specimen.",
            );
        }
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, Some(w.nav()), "Error", e),
    };
    let item = match review.item(&id) {
        Ok(Some(i)) => i,
        _ => serde_json::Value::Null,
    };
    if sees_donor_data(w.user.role) {
        let now = s.clock_ms();
        if let Err(r) = audit(
            &s,
            Some(w.nav()),
            vec![
                AuditEntry::new(now, w.actor(), "donor_data_read", id.as_str())
                    .after("console: specimen page (CCF and draft report)"),
            ],
        )
        .await
        {
            return r;
        }
    }
    let view = specimen_view(&s, c, &w, &rec, &item);
    html(StatusCode::OK, view)
}

fn binary(media: &str, bytes: Vec<u8>, filename: &str) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, media.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("inline; filename=\"{filename}\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

async fn ccf_image(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let path = format!("/console/specimens/{id}/ccf-image");
    if !sees_donor_data(w.user.role) {
        return check_role(&s, &w, Permission::Operate, &path)
            .err()
            .unwrap_or_else(|| StatusCode::FORBIDDEN.into_response());
    }
    let Ok(c) = console_of(&s) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let media = match c.data.record(&id) {
        Ok(Some(r)) => r.ccf_image.map(|m| m.media_type),
        _ => None,
    };
    let Some(media) = media else {
        return error_page(
            StatusCode::NOT_FOUND,
            Some(w.nav()),
            "Not found",
            "No image of Copy 1 is stored for this specimen.",
        );
    };
    let now = s.clock_ms();
    if let Err(r) = audit(
        &s,
        Some(w.nav()),
        vec![
            AuditEntry::new(now, w.actor(), "ccf_image_read", id.as_str())
                .after("console: Copy 1 as received"),
        ],
    )
    .await
    {
        return r;
    }
    match c.data.ccf_image(&id) {
        Ok(Some(b)) => binary(media.key(), b, "ccf-copy1-as-received"),
        Ok(None) => error_page(
            StatusCode::NOT_FOUND,
            Some(w.nav()),
            "Not found",
            "No image of Copy 1 is stored for this specimen.",
        ),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, Some(w.nav()), "Error", e),
    }
}

/// The payload of a compact JWS as JSON.
fn jws_payload(jws: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = jws.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The certified Copy 1 inside the latest signed report of the specimen.
fn certified_copy_of(
    reports: &[crate::custody::outbox::StoredReport],
) -> Option<(String, Vec<u8>)> {
    use base64::Engine;
    let r = reports.iter().rev().find(|r| r.superseded_by.is_none())?;
    let v = jws_payload(&r.jws)?;
    let c = v.get("ccf_copy1")?;
    let data = base64::engine::general_purpose::STANDARD
        .decode(c.get("data")?.as_str()?)
        .ok()?;
    Some((c.get("media_type")?.as_str()?.to_string(), data))
}

async fn certified_copy(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let path = format!("/console/specimens/{id}/certified-copy");
    if !sees_donor_data(w.user.role) {
        return check_role(&s, &w, Permission::Operate, &path)
            .err()
            .unwrap_or_else(|| StatusCode::FORBIDDEN.into_response());
    }
    let Ok(c) = console_of(&s) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let reports = match c.data.reports_of(&id) {
        Ok(r) => r,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, Some(w.nav()), "Error", e),
    };
    let Some((media, bytes)) = certified_copy_of(&reports) else {
        return error_page(
            StatusCode::NOT_FOUND,
            Some(w.nav()),
            "Not found",
            "No signed report of this specimen carries a certified Copy 1.",
        );
    };
    let now = s.clock_ms();
    if let Err(r) = audit(
        &s,
        Some(w.nav()),
        vec![
            AuditEntry::new(now, w.actor(), "certified_copy_read", id.as_str())
                .after("console: certified Copy 1 of the signed report"),
        ],
    )
    .await
    {
        return r;
    }
    binary(&media, bytes, "ccf-copy1-certified.pdf")
}

// ---- release, batch release, retest ---------------------------------------------------------

fn sign_page(
    w: &Who,
    title: &str,
    action: String,
    rows: Vec<(String, String)>,
    batch: bool,
) -> Response {
    let mut p = Page::new(title, Some(w.nav()));
    p.paragraphs.push(format!(
        "You are about to sign as {}. The meaning of this signature: \"{}\". It releases {} to the MRO named on the CCF, bound to the report content below by its SHA-256.",
        w.user.name,
        crate::custody::release::MEANING,
        if batch { "these negative results" } else { "this result" },
    ));
    p.tables.push(Table {
        caption: "What you sign".into(),
        headers: vec!["Specimen", "Draft report content SHA-256"],
        rows: rows
            .iter()
            .map(|(id, sha)| {
                vec![
                    Cell::link(id.clone(), format!("/console/specimens/{id}")),
                    Cell::mono(sha.clone()),
                ]
            })
            .collect(),
        empty: "Nothing to sign.".into(),
    });
    let mut fields: Vec<Field> = rows
        .iter()
        .map(|(id, sha)| Field::hidden("spec", format!("{id}:{sha}")))
        .collect();
    fields.push(Field::password());
    p.form = Some(FormView {
        method: "post",
        action,
        fields,
        button: "Sign and release".into(),
    });
    p.paragraphs.push(
        "Enter your password again to sign (21 CFR 11.200: each signing asks for it).".into(),
    );
    html(
        StatusCode::OK,
        p.link("/console/queue", "Cancel: back to the review queue"),
    )
}

async fn release_page(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let path = format!("/console/specimens/{id}/release");
    if let Err(r) = check_role(&s, &w, Permission::Release, &path) {
        return r;
    }
    let Some(review) = &s.review else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let item = match review.item(&id) {
        Ok(Some(i)) => i,
        _ => {
            return error_page(
                StatusCode::NOT_FOUND,
                Some(w.nav()),
                "Not found",
                "No such specimen.",
            );
        }
    };
    if item["state"] != "ready_for_review" {
        return error_page(
            StatusCode::CONFLICT,
            Some(w.nav()),
            "Cannot release",
            format!(
                "The specimen is {}, not ready for review.",
                text_of(&item["state"])
            ),
        );
    }
    if let Some(h) = item["held_because"].as_str() {
        return error_page(
            StatusCode::CONFLICT,
            Some(w.nav()),
            "Cannot release",
            format!("The report is held: {h}"),
        );
    }
    let Some(sha) = draft_sha(&item) else {
        return error_page(
            StatusCode::CONFLICT,
            Some(w.nav()),
            "Cannot release",
            "No report can be built from what is recorded.",
        );
    };
    sign_page(
        &w,
        &format!("Sign and release {id}"),
        path,
        vec![(id, sha)],
        false,
    )
}

async fn batch_page(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if let Err(r) = check_role(&s, &w, Permission::Release, "/console/batch-release") {
        return r;
    }
    let Some(review) = &s.review else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let ids = Form::parse(q.unwrap_or_default().as_bytes()).all("id");
    if ids.is_empty() {
        return error_page(
            StatusCode::BAD_REQUEST,
            Some(w.nav()),
            "Nothing selected",
            "Select the negative results to release in the review queue.",
        );
    }
    let mut rows = Vec::new();
    for id in ids {
        let Ok(Some(item)) = review.item(&id) else {
            return error_page(
                StatusCode::NOT_FOUND,
                Some(w.nav()),
                "Not found",
                format!("No such specimen: {id}"),
            );
        };
        let negative = item["verdict"]["results"] == serde_json::json!(["negative"]);
        if !negative || item["state"] != "ready_for_review" || !item["held_because"].is_null() {
            return error_page(
                StatusCode::CONFLICT,
                Some(w.nav()),
                "Cannot batch-release",
                format!(
                    "{id} is not a negative result ready for release: release it on its own page."
                ),
            );
        }
        let Some(sha) = draft_sha(&item) else {
            return error_page(
                StatusCode::CONFLICT,
                Some(w.nav()),
                "Cannot release",
                format!("No report can be built for {id}."),
            );
        };
        rows.push((id, sha));
    }
    sign_page(
        &w,
        "Sign and release negatives",
        "/console/batch-release".into(),
        rows,
        true,
    )
}

/// Signs and releases the listed `id:sha` pairs after the password and the drafts' hashes check.
async fn sign_and_release(
    s: &AdminState,
    w: &Who,
    form: &Form,
    path: &str,
    batch: bool,
) -> Response {
    if let Err(r) = check_csrf(s, w, form, path) {
        return r;
    }
    if let Err(r) = check_role(s, w, Permission::Release, path) {
        return r;
    }
    let Some(review) = &s.review else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let specs: Vec<(String, String)> = form
        .all("spec")
        .into_iter()
        .filter_map(|p| {
            p.split_once(':')
                .map(|(a, b)| (a.to_string(), b.to_string()))
        })
        .collect();
    if specs.is_empty() {
        return error_page(
            StatusCode::BAD_REQUEST,
            Some(w.nav()),
            "Nothing to sign",
            "The form named no specimen.",
        );
    }
    let subject = if specs.len() == 1 {
        specs[0].0.clone()
    } else {
        format!("batch of {}", specs.len())
    };
    if let Err(r) = signature(s, w, form.get("password"), &subject).await {
        return r;
    }
    // What was shown must be what is signed: a draft that changed since is refused.
    for (id, sha) in &specs {
        let now_sha = review.item(id).ok().flatten().and_then(|i| draft_sha(&i));
        if now_sha.as_deref() != Some(sha.as_str()) {
            return error_page(
                StatusCode::CONFLICT,
                Some(w.nav()),
                "Not released",
                format!(
                    "The report of {id} changed since you reviewed it: nothing was released. Review it again."
                ),
            );
        }
    }
    let now = s.clock_ms();
    let entries = specs
        .iter()
        .map(|(id, sha)| {
            AuditEntry::new(now, w.actor(), "signature_given", id.as_str()).after(format!(
                "console: password re-entered; {}; draft sha256 {sha}",
                crate::custody::release::MEANING
            ))
        })
        .collect();
    if let Err(r) = audit(s, Some(w.nav()), entries).await {
        return r;
    }
    let ids: Vec<String> = specs.iter().map(|(id, _)| id.clone()).collect();
    match review.release(ids, &w.user, batch).await {
        Ok(v) => {
            let mut p = Page::new("Released", Some(w.nav()));
            p.paragraphs.push(format!(
                "Signed by {} ({}) and queued to the MRO. Delivery is shown in the outbox.",
                w.user.name,
                crate::custody::release::MEANING
            ));
            p.tables.push(Table {
                caption: "Released reports".into(),
                headers: vec!["Specimen", "Report", "MRO", "Signed report content SHA-256"],
                rows: v["released"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        let id = text_of(&r["specimen_id"]);
                        vec![
                            Cell::link(id.clone(), format!("/console/specimens/{id}")),
                            Cell::text(text_of(&r["report_id"])),
                            Cell::text(text_of(&r["mro_id"])),
                            Cell::mono(text_of(&r["content_sha256"])),
                        ]
                    })
                    .collect(),
                empty: String::new(),
            });
            html(
                StatusCode::OK,
                p.link("/console/queue", "Back to the review queue")
                    .link("/console/outbox", "Outbox"),
            )
        }
        Err((code, msg)) => error_page(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Some(w.nav()),
            "Not released",
            msg,
        ),
    }
}

async fn release(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let form = Form::parse(&body);
    let path = format!("/console/specimens/{id}/release");
    if form
        .all("spec")
        .iter()
        .any(|p| p.split(':').next() != Some(id.as_str()))
    {
        return error_page(
            StatusCode::BAD_REQUEST,
            Some(w.nav()),
            "Refused",
            "The form names another specimen.",
        );
    }
    sign_and_release(&s, &w, &form, &path, false).await
}

async fn batch_release(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    sign_and_release(&s, &w, &Form::parse(&body), "/console/batch-release", true).await
}

async fn retest(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let form = Form::parse(&body);
    let path = format!("/console/specimens/{id}/retest");
    if let Err(r) = check_csrf(&s, &w, &form, &path) {
        return r;
    }
    if let Err(r) = check_role(&s, &w, Permission::Release, &path) {
        return r;
    }
    let Some(review) = &s.review else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let reason = form.get("reason").trim().to_string();
    if reason.is_empty() {
        return error_page(
            StatusCode::BAD_REQUEST,
            Some(w.nav()),
            "Not sent back",
            "Give the reason for the retest.",
        );
    }
    let tests = form.all("test");
    match review.send_back(id.clone(), &w.user, reason, tests).await {
        Ok(_) => html(
            StatusCode::OK,
            Page::new("Sent back for retest", Some(w.nav()))
                .para(format!(
                    "{id} left the review queue and waits for new results."
                ))
                .link(format!("/console/specimens/{id}"), format!("Specimen {id}"))
                .link("/console/queue", "Back to the review queue"),
        ),
        Err((code, msg)) => error_page(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Some(w.nav()),
            "Not sent back",
            msg,
        ),
    }
}

// ---- outbox, quarantine, lifecycle ----------------------------------------------------------

async fn outbox(AxState(s): AxState<AdminState>, headers: HeaderMap) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(review) = &s.review else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let v = match review.outbox() {
        Ok(v) => v,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, Some(w.nav()), "Error", e),
    };
    let can_retry = w.user.role.may(Permission::Operate);
    let mut p = Page::new("Outbox", Some(w.nav()))
        .para("Signed reports waiting for their MRO's system, and dead letters (refused for good) waiting for an operator.");
    for (mro, m) in v.as_object().into_iter().flatten() {
        let row = |r: &serde_json::Value, dead: bool| {
            let id = text_of(&r["report_id"]);
            let specimen = text_of(&r["specimen_id"]);
            let mut cells = vec![
                Cell::text(id.clone()),
                Cell::link(specimen.clone(), format!("/console/specimens/{specimen}")),
                Cell::text(
                    r["released_at_ms"]
                        .as_u64()
                        .map(rfc3339)
                        .unwrap_or_default(),
                ),
                Cell::text(text_of(&r["released_by"])),
                Cell::text(text_of(&r["attempts"])),
                Cell::text(if dead {
                    text_of(&r["delivery"]["reason"])
                } else {
                    text_of(&r["last_error"])
                }),
            ];
            if dead {
                cells.push(if can_retry {
                    Cell::button("Retry", format!("/console/outbox/{id}/retry"))
                } else {
                    Cell::text("operators retry")
                });
            }
            cells
        };
        p.tables.push(Table {
            caption: format!("Pending for {mro}"),
            headers: vec![
                "Report",
                "Specimen",
                "Released",
                "By",
                "Attempts",
                "Last error",
            ],
            rows: m["queued"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| row(r, false))
                .collect(),
            empty: "Nothing pending.".into(),
        });
        p.tables.push(Table {
            caption: format!("Dead letters for {mro}"),
            headers: vec![
                "Report", "Specimen", "Released", "By", "Attempts", "Reason", "Action",
            ],
            rows: m["dead_letters"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| row(r, true))
                .collect(),
            empty: "No dead letter.".into(),
        });
    }
    html(StatusCode::OK, p)
}

async fn retry(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let path = format!("/console/outbox/{id}/retry");
    if let Err(r) = check_csrf(&s, &w, &Form::parse(&body), &path) {
        return r;
    }
    if let Err(r) = check_role(&s, &w, Permission::Operate, &path) {
        return r;
    }
    let Some(review) = &s.review else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    match review.retry(id.clone(), &w.user).await {
        Ok(_) => html(
            StatusCode::OK,
            Page::new("Back in the queue", Some(w.nav()))
                .para(format!(
                    "Report {id} is pending again: its MRO's sender will try it now."
                ))
                .link("/console/outbox", "Back to the outbox"),
        ),
        Err((code, msg)) => error_page(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Some(w.nav()),
            "Not retried",
            msg,
        ),
    }
}

async fn quarantine(AxState(s): AxState<AdminState>, headers: HeaderMap) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(qa) = &s.quarantine else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let list = match qa.list(None) {
        Ok(v) => v,
        Err(e) => return error_page(StatusCode::INTERNAL_SERVER_ERROR, Some(w.nav()), "Error", e),
    };
    let mut p = Page::new("Quarantine", Some(w.nav())).para(
        "Inputs refused at the door, kept as received. The raw bytes carry donor data: only the operator role sees them, and every look is audited.",
    );
    p.tables.push(Table {
        caption: "Refused inputs".into(),
        headers: vec!["Record", "Source", "Received", "Reason", "Bytes"],
        rows: list
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let id = text_of(&r["id"]);
                vec![
                    Cell::link(id.clone(), format!("/console/quarantine/{id}")),
                    Cell::text(text_of(&r["source"])),
                    Cell::text(text_of(&r["received_at"])),
                    Cell::text(text_of(&r["reason"])),
                    Cell::text(text_of(&r["size"])),
                ]
            })
            .collect(),
        empty: "Nothing in quarantine.".into(),
    });
    html(StatusCode::OK, p)
}

async fn quarantine_item(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(qa) = &s.quarantine else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let with_raw = w.user.role == Role::Operator;
    let v = match qa.show(id.clone(), &w.user, with_raw).await {
        Ok(v) => v,
        Err((code, msg)) => {
            return error_page(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                Some(w.nav()),
                "Not shown",
                msg,
            );
        }
    };
    let mut p = Page::new(format!("Quarantined input {id}"), Some(w.nav()));
    let rows = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != "raw_base64")
        .map(|(k, x)| vec![Cell::text(k.replace('_', " ")), Cell::text(text_of(x))])
        .collect();
    p.tables.push(Table {
        caption: "Record".into(),
        headers: vec!["Field", "Value"],
        rows,
        empty: String::new(),
    });
    match v.get("raw_base64").and_then(|r| r.as_str()) {
        Some(b64) => {
            use base64::Engine;
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default();
            let text: String = String::from_utf8_lossy(&raw)
                .chars()
                .map(|c| if c == '\r' { '\n' } else { c })
                .collect();
            p.paragraphs
                .push("The raw bytes as received (segment ends shown as line breaks):".into());
            p.pre = Some(text);
        }
        None => p
            .paragraphs
            .push("The raw bytes are shown to the operator role only.".into()),
    }
    html(
        StatusCode::OK,
        p.link("/console/quarantine", "Back to the quarantine"),
    )
}

async fn lifecycle(AxState(s): AxState<AdminState>, headers: HeaderMap) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let (Ok(c), Some(l)) = (console_of(&s), &s.lifecycle) else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let held = c.data.in_state(State::Held).unwrap_or_default();
    let now = s.clock_ms();
    let windows = held
        .iter()
        .filter_map(|r| {
            let clock = r.lifecycle.correction.as_ref()?;
            clock.due_at_ms?;
            let open: Vec<String> = r
                .flaws
                .iter()
                .filter(|f| f.status == crate::domain::specimen::FlawStatus::Open)
                .map(|f| {
                    text_of(&serde_json::to_value(f.flaw).unwrap_or_default()).replace('_', " ")
                })
                .collect();
            Some(vec![
                Cell::link(
                    r.specimen_id.clone(),
                    format!("/console/specimens/{}", r.specimen_id),
                ),
                Cell::text(if open.is_empty() {
                    "—".into()
                } else {
                    open.join(", ")
                }),
                Cell::text(rfc3339(clock.closes_at_ms)),
                Cell::text(if clock.closes_at_ms > now {
                    format!("{} left", age(clock.closes_at_ms, now))
                } else {
                    "closing".into()
                }),
            ])
        })
        .collect();
    let discardable = l.discardable().unwrap_or_default();
    let can = w.user.role.may(Permission::Operate);
    let rows = discardable
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            let id = text_of(&d["specimen_id"]);
            let item = text_of(&d["item"]);
            vec![
                Cell::link(id.clone(), format!("/console/specimens/{id}")),
                Cell::text(item.clone()),
                Cell::text(d["since_ms"].as_u64().map(rfc3339).unwrap_or_default()),
                Cell::text(text_of(&d["location"])),
                if can {
                    Cell::link(
                        "Confirm discard…",
                        format!("/console/lifecycle/discard?specimen={id}&item={item}"),
                    )
                } else {
                    Cell::text("operators confirm")
                },
            ]
        })
        .collect();
    let mut p = Page::new("Lifecycle", Some(w.nav()));
    p.tables.push(Table {
        caption: "Correction windows running (40.83(e)-(g))".into(),
        headers: vec!["Specimen", "Open flaws", "Window closes", "Time left"],
        rows: windows,
        empty: "No correction window is running.".into(),
    });
    p.tables.push(Table {
        caption: "May be discarded now (retention ended)".into(),
        headers: vec!["Specimen", "Item", "Since", "Freezer location", "Action"],
        rows,
        empty: "Nothing may be discarded now.".into(),
    });
    html(StatusCode::OK, p)
}

async fn discard_page(
    AxState(s): AxState<AdminState>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    if let Err(r) = check_role(&s, &w, Permission::Operate, "/console/lifecycle/discard") {
        return r;
    }
    let q = Form::parse(q.unwrap_or_default().as_bytes());
    let (id, item) = (q.get("specimen").to_string(), q.get("item").to_string());
    let mut p = Page::new(format!("Confirm the discard of {id} ({item})"), Some(w.nav())).para(
        "Confirm only what was physically discarded: the record of the discard is permanent and audited.",
    );
    p.form = Some(FormView {
        method: "post",
        action: "/console/lifecycle/discard".into(),
        fields: vec![
            Field::hidden("specimen", id.clone()),
            Field::hidden("item", item.clone()),
            Field::checkbox(
                format!("I confirm that the {item} of {id} was discarded"),
                "confirm",
                "yes",
            ),
        ],
        button: "Confirm discard".into(),
    });
    html(
        StatusCode::OK,
        p.link("/console/lifecycle", "Cancel: back to the lifecycle"),
    )
}

async fn discard(AxState(s): AxState<AdminState>, headers: HeaderMap, body: Bytes) -> Response {
    let w = match who(&s, &headers).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let form = Form::parse(&body);
    let path = "/console/lifecycle/discard";
    if let Err(r) = check_csrf(&s, &w, &form, path) {
        return r;
    }
    if let Err(r) = check_role(&s, &w, Permission::Operate, path) {
        return r;
    }
    if form.get("confirm") != "yes" {
        return error_page(
            StatusCode::BAD_REQUEST,
            Some(w.nav()),
            "Not recorded",
            "Tick the confirmation to record the discard.",
        );
    }
    let Some(l) = &s.lifecycle else {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    };
    let (id, item) = (
        form.get("specimen").to_string(),
        form.get("item").to_string(),
    );
    match l.discard(id.clone(), item.clone(), &w.user).await {
        Ok(_) => html(
            StatusCode::OK,
            Page::new("Discard recorded", Some(w.nav()))
                .para(format!("The discard of the {item} of {id} is recorded."))
                .link("/console/lifecycle", "Back to the lifecycle"),
        ),
        Err((code, msg)) => error_page(
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Some(w.nav()),
            "Not recorded",
            msg,
        ),
    }
}

/// Headers on every console answer: no caching of donor data, no framing, no outside sources.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    for (k, v) in [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

/// The console's routes (under `/console/`, and `/` sends there).
pub fn routes() -> Router<AdminState> {
    use axum::routing::post;
    Router::new()
        .route("/", get(root))
        .route("/console", get(root))
        .route("/console/", get(root))
        .route("/console/sign-in", get(sign_in_page).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/queue", get(queue))
        .route("/console/specimens/{id}", get(specimen))
        .route("/console/specimens/{id}/ccf-image", get(ccf_image))
        .route(
            "/console/specimens/{id}/certified-copy",
            get(certified_copy),
        )
        .route(
            "/console/specimens/{id}/release",
            get(release_page).post(release),
        )
        .route("/console/specimens/{id}/retest", post(retest))
        .route(
            "/console/batch-release",
            get(batch_page).post(batch_release),
        )
        .route("/console/runs", get(runs::list))
        .route("/console/runs/{key}", get(runs::show).post(runs::decide))
        .route("/console/outbox", get(outbox))
        .route("/console/outbox/{id}/retry", post(retry))
        .route("/console/quarantine", get(quarantine))
        .route("/console/quarantine/{id}", get(quarantine_item))
        .route("/console/lifecycle", get(lifecycle))
        .route(
            "/console/lifecycle/discard",
            get(discard_page).post(discard),
        )
        .layer(axum::middleware::from_fn(security_headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_keep_repeated_names_and_decode() {
        let f = Form::parse(b"id=A&id=B%20C&csrf=x+y&empty=");
        assert_eq!(f.all("id"), ["A", "B C"]);
        assert_eq!(f.get("csrf"), "x y");
        assert_eq!(f.get("missing"), "");
    }

    #[test]
    fn the_draft_hash_is_of_the_draft_json_shown() {
        let item = serde_json::json!({"draft_report": {"a": 1}});
        assert_eq!(draft_sha(&item).unwrap(), sha256_hex(br#"{"a":1}"#));
        assert!(draft_sha(&serde_json::json!({"draft_report": null})).is_none());
    }

    #[test]
    fn ages_read_as_a_person_would() {
        assert_eq!(age(60_000, 0), "1 min");
        assert_eq!(age(3 * 3_600_000, 0), "3 h");
        assert_eq!(age(3 * 86_400_000, 0), "3 days");
        assert_eq!(age(0, 10), "under a minute");
    }
}
