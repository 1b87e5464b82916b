//! The admin interface: an HTTP API on a local address for operators, certifying scientists and
//! monitoring, and the review console (`/console/`, see [`console`]) on the same listener, over
//! TLS when `[admin.tls]` is set. `/healthz`, `/readyz` and `/metrics` are open (no donor data
//! there); everything under `/api/` needs a bearer token of a configured user, and every refusal
//! is counted and logged without the token. A viewer's answers never carry a donor identifier
//! ([`redact`]); every read of donor data by another role is audited before it is answered.

pub mod auth;
pub mod client;
pub mod console;
pub mod events;
pub mod redact;
pub mod refusals;
pub mod server;

use auth::{Permission, User, Users};
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Shared by every admin handler.
#[derive(Clone)]
pub struct AdminState {
    /// Replaced as a whole on reload.
    pub users: Arc<std::sync::RwLock<Arc<Users>>>,
    pub ready: Arc<AtomicBool>,
    /// Why the daemon cannot do its work although it is up (e.g. the store can no longer make
    /// writes durable): `Some(reason)` makes `/readyz` answer 503 with it.
    pub not_ready: Option<NotReady>,
    /// The supervised tasks: a dead one makes `/healthz` and `/readyz` answer 503.
    pub health: Arc<crate::core::health::Health>,
    pub prometheus: Option<PrometheusHandle>,
    pub api: Option<Arc<dyn Api>>,
    pub review: Option<Arc<dyn ReviewApi>>,
    pub lifecycle: Option<Arc<dyn LifecycleApi>>,
    pub quarantine: Option<Arc<dyn QuarantineApi>>,
    pub summaries: Option<Arc<dyn SummariesApi>>,
    pub runs: Option<Arc<dyn RunsApi>>,
    /// Records a refused request in the audit log (who if known, what path, why).
    pub on_refusal: Option<RefusalAudit>,
    /// Refusals of unknown callers, counted per source and minute: only the first of each and
    /// a summary reach the audit log. `None`: each goes through `on_refusal`.
    pub unknown_callers: Option<UnknownCallers>,
    /// Writes audit entries durably (reads of donor data, sign-ins, signatures).
    pub audit: Option<AuditSink>,
    /// The review console (`/console/`).
    pub console: Option<Arc<console::Console>>,
    pub clock: Arc<dyn crate::core::clock::Clock>,
}

impl AdminState {
    /// Now, by the daemon's clock.
    pub fn clock_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn current_users(&self) -> Arc<Users> {
        self.users
            .read()
            .map(|u| u.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

/// Writes audit entries in one durable commit: `Ok` once they are durable.
pub type AuditSink = Arc<
    dyn Fn(
            Vec<crate::store::AuditEntry>,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

/// The counter of unknown callers' refusals and where its entries are audited.
#[derive(Clone)]
pub struct UnknownCallers {
    pub aggregator: Arc<refusals::Aggregator>,
    pub audit: Arc<dyn Fn(Vec<refusals::Entry>) + Send + Sync>,
}

/// Tells `/readyz` why the daemon is not ready, if it is not (never donor data).
pub type NotReady = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Records a refusal: the user's name if authenticated, the path, and why.
pub type RefusalAudit = Arc<dyn Fn(Option<&str>, &str, &'static str) + Send + Sync>;

/// A boxed future of an admin action: `Ok(json)` or `Err((http status, message))`.
pub type ActionFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<serde_json::Value, (u16, String)>> + Send + 'a>,
>;

/// Review, release and delivery actions, implemented by the wiring.
pub trait ReviewApi: Send + Sync {
    /// The review queue with what a certifying scientist needs to judge each specimen.
    fn queue(&self) -> Result<serde_json::Value, String>;
    /// One specimen as the review queue shows it.
    fn item(&self, specimen_id: &str) -> Result<Option<serde_json::Value>, String>;
    /// Releases specimens under one signature (`batch`: negatives only).
    fn release<'a>(
        &'a self,
        ids: Vec<String>,
        scientist: &'a User,
        batch: bool,
    ) -> ActionFuture<'a>;
    /// Sends a specimen back for retest with a reason, naming the tests to repeat (none: any
    /// new result).
    fn send_back<'a>(
        &'a self,
        id: String,
        scientist: &'a User,
        reason: String,
        tests: Vec<String>,
    ) -> ActionFuture<'a>;
    /// Corrects CCF data of a released report: a new report that replaces it, signed by
    /// `scientist` and queued to the same MRO.
    fn correct<'a>(
        &'a self,
        report_id: String,
        request: crate::custody::release::CorrectionRequest,
        scientist: &'a User,
    ) -> ActionFuture<'a>;
    /// Queued and dead-letter reports per MRO.
    fn outbox(&self) -> Result<serde_json::Value, String>;
    /// A stored report's delivery status (not its content).
    fn report(&self, report_id: &str) -> Result<Option<serde_json::Value>, String>;
    /// Puts a dead letter back in its MRO's queue.
    fn retry<'a>(&'a self, report_id: String, operator: &'a User) -> ActionFuture<'a>;
    /// The signed compact JWS of a report as `{"report_id", "jws"}`, audited as exported by
    /// `reader`.
    fn report_jws<'a>(&'a self, report_id: String, reader: &'a User) -> ActionFuture<'a>;
}

/// Written requests, retention, the split and discards, implemented by the wiring.
pub trait LifecycleApi: Send + Sync {
    /// Records a written request (body: `document_ref`, `kind` and its fields, optional
    /// `received_at_ms`) for a specimen, by `user`.
    fn request<'a>(
        &'a self,
        specimen_id: String,
        body: serde_json::Value,
        user: &'a User,
    ) -> ActionFuture<'a>;
    /// Re-assigns a specimen's edition (body: `profile`, `reason`), before release only.
    fn edition<'a>(
        &'a self,
        specimen_id: String,
        body: serde_json::Value,
        user: &'a User,
    ) -> ActionFuture<'a>;
    /// Records the confirmation that an item (`primary`, `split`, `records`) was discarded.
    fn discard<'a>(&'a self, specimen_id: String, item: String, user: &'a User)
    -> ActionFuture<'a>;
    /// The split request and its disposition (forwarding package or unavailable report).
    fn split(&self, specimen_id: &str) -> Result<Option<serde_json::Value>, String>;
    /// The MRO's request of 40.187(f)(4) and its outcome on the primary's validity results.
    fn adulterant_retest(&self, specimen_id: &str) -> Result<Option<serde_json::Value>, String>;
    /// This laboratory as the split laboratory: records a received Bottle B (body: `copy1`,
    /// optional `manifest` and `received`) by `user`.
    fn split_lab_receive<'a>(&'a self, body: serde_json::Value, user: &'a User)
    -> ActionFuture<'a>;
    /// The reconfirmation of a received Bottle B; `Ok(None)` when none was received under
    /// this ID, `Err` with a status when this laboratory is not a split laboratory.
    fn split_lab(&self, specimen_id: &str) -> Result<Option<serde_json::Value>, (u16, String)>;
    /// As the split laboratory: a certifying scientist releases the complete split result to
    /// the MRO named in Copy 1 (signed, queued, audited).
    fn split_lab_release<'a>(
        &'a self,
        specimen_id: String,
        scientist: &'a User,
    ) -> ActionFuture<'a>;
    /// A certifying scientist releases the complete primary-retest result (40.187(f)) to the
    /// MRO named on the CCF (signed, queued, audited).
    fn adulterant_retest_release<'a>(
        &'a self,
        specimen_id: String,
        scientist: &'a User,
    ) -> ActionFuture<'a>;
    /// The specimen's retention: every item, requests, releases, discards.
    fn retention(&self, specimen_id: &str) -> Result<Option<serde_json::Value>, String>;
    /// What the laboratory may discard now, with freezer locations.
    fn discardable(&self) -> Result<serde_json::Value, String>;
}

/// Analytical runs and results, implemented by the wiring.
pub trait RunsApi: Send + Sync {
    /// The runs in a state (`open`, `pending`, `accepted`, `rejected`).
    fn list(&self, state: &str) -> Result<serde_json::Value, (u16, String)>;
    /// One run with its QC results, evaluation, specimens and decision.
    fn show(&self, key: &str) -> Result<Option<serde_json::Value>, String>;
    /// A certifying scientist accepts (`accept`) or rejects a run, with a reason (required to
    /// reject).
    fn decide<'a>(
        &'a self,
        key: String,
        accept: bool,
        reason: String,
        scientist: &'a User,
    ) -> ActionFuture<'a>;
    /// A certifying scientist marks a specimen's result (its position) not reportable.
    fn not_reportable<'a>(
        &'a self,
        specimen_id: String,
        result: usize,
        reason: String,
        scientist: &'a User,
    ) -> ActionFuture<'a>;
}

/// The quarantine of refused inputs, implemented by the wiring.
pub trait QuarantineApi: Send + Sync {
    /// The records (id, source, time, reason, size; never the bytes), optionally of a source.
    fn list(&self, source: Option<&str>) -> Result<serde_json::Value, String>;
    /// One record, audited as read by `user`; the raw bytes (base64) only when `with_raw`.
    fn show<'a>(&'a self, id: String, user: &'a User, with_raw: bool) -> ActionFuture<'a>;
}

/// The 40.111 statistical summaries, implemented by the wiring.
pub trait SummariesApi: Send + Sync {
    /// The summaries produced or suppressed (never their content), optionally of one period.
    fn list(&self, period: Option<&str>) -> Result<serde_json::Value, (u16, String)>;
    /// One summary with its content as produced.
    fn show(&self, id: &str) -> Result<Option<serde_json::Value>, String>;
    /// Marks a produced summary sent (body: optional `note`, `sent_on`), by `user`; audited.
    fn mark_sent<'a>(
        &'a self,
        id: String,
        body: serde_json::Value,
        user: &'a User,
    ) -> ActionFuture<'a>;
    /// An employer's request (40.111(b)): the summary or the "not enough testing" report of
    /// each specimen type for the dates (ISO, inclusive); audited as asked by `user`.
    fn request<'a>(
        &'a self,
        employer: String,
        from: String,
        to: String,
        user: &'a User,
    ) -> ActionFuture<'a>;
}

/// What the daemon offers through `/api/`: implemented by the wiring, which knows the stages.
pub trait Api: Send + Sync {
    /// One specimen as JSON, or `None` if unknown.
    fn specimen(&self, id: &str) -> Result<Option<serde_json::Value>, String>;
    /// Specimen IDs in a state.
    fn specimens_in_state(&self, state: &str) -> Result<Vec<String>, String>;
    /// Walks the audit hash chain: `{"ok":true,"entries":N}` or the first broken link.
    fn verify_audit(&self) -> Result<serde_json::Value, String>;
    /// The audit entries whose subject is this specimen, oldest first.
    fn specimen_audit(&self, specimen_id: &str) -> Result<serde_json::Value, String>;
}

/// An authenticated caller with the permission the route asked for.
pub struct Caller(pub User);

/// Why a request was refused.
#[derive(Debug)]
pub enum Refusal {
    Unauthenticated,
    Forbidden,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "authentication required\n",
            )
                .into_response(),
            Refusal::Forbidden => (
                StatusCode::FORBIDDEN,
                "your role does not allow this action\n",
            )
                .into_response(),
        }
    }
}

/// Authenticates the bearer token and checks a permission.
pub fn authorize(state: &AdminState, parts: &Parts, need: Permission) -> Result<User, Refusal> {
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let users = state
        .users
        .read()
        .map(|u| u.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let Some(user) = token.and_then(|t| users.authenticate(t)) else {
        crate::core::telemetry::emit(events::Unauthenticated);
        match &state.unknown_callers {
            Some(u) => {
                let peer = parts
                    .extensions
                    .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                    .map(|c| c.0.ip());
                let entries = u.aggregator.refused(peer, parts.uri.path());
                if entries
                    .iter()
                    .any(|e| matches!(e, refusals::Entry::First { .. }))
                {
                    tracing::warn!(component = "admin", path = %parts.uri.path(), source = %refusals::source_text(&peer), "request without valid credentials refused (more from this source this minute are counted, not logged)");
                }
                if !entries.is_empty() {
                    (u.audit)(entries);
                }
            }
            None => {
                if let Some(audit) = &state.on_refusal {
                    audit(None, parts.uri.path(), "unauthenticated");
                }
                tracing::warn!(component = "admin", path = %parts.uri.path(), "request without valid credentials refused");
            }
        }
        return Err(Refusal::Unauthenticated);
    };
    if !user.role.may(need) {
        crate::core::telemetry::emit(events::Forbidden {
            user: &user.name,
            role: user.role.key(),
            path: parts.uri.path(),
        });
        if let Some(audit) = &state.on_refusal {
            audit(Some(&user.name), parts.uri.path(), "forbidden");
        }
        return Err(Refusal::Forbidden);
    }
    Ok(user)
}

/// Extractor for read access.
pub struct Reader(pub User);

impl FromRequestParts<AdminState> for Reader {
    type Rejection = Refusal;
    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Refusal> {
        authorize(state, parts, Permission::Read).map(Reader)
    }
}

/// Extractor for release (certifying scientists only).
pub struct Scientist(pub User);

impl FromRequestParts<AdminState> for Scientist {
    type Rejection = Refusal;
    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Refusal> {
        authorize(state, parts, Permission::Release).map(Scientist)
    }
}

/// Extractor for operational actions.
pub struct Operator(pub User);

impl FromRequestParts<AdminState> for Operator {
    type Rejection = Refusal;
    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Refusal> {
        authorize(state, parts, Permission::Operate).map(Operator)
    }
}

fn action_response(r: Result<serde_json::Value, (u16, String)>) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err((code, msg)) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!("{msg}\n"),
        )
            .into_response(),
    }
}

/// A read answered as JSON, 404 when absent, 500 on a store error.
fn found(r: Result<Option<serde_json::Value>, String>, missing: &str) -> Response {
    match r {
        Ok(Some(v)) => axum::Json(v).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("{}\n", missing.trim_end())).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// A read answered as JSON, or `on_error` with the message.
fn listed(r: Result<serde_json::Value, String>, on_error: StatusCode) -> Response {
    match r {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (on_error, format!("{e}\n")).into_response(),
    }
}

fn no_review() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "review is not available\n").into_response()
}

/// Audits that `user` reads the donor data of `specimens` through `via`, before it is given;
/// viewers get no donor identifier (see [`redact`]), so their reads are not donor data reads.
async fn audit_donor_read(
    s: &AdminState,
    user: &User,
    specimens: Vec<String>,
    via: &'static str,
) -> Result<(), Response> {
    if user.role == auth::Role::Viewer || specimens.is_empty() {
        return Ok(());
    }
    let Some(sink) = &s.audit else {
        return Ok(());
    };
    let now = s.clock_ms();
    let who: String = format!("user:{}", user.name).chars().take(64).collect();
    let entries = specimens
        .into_iter()
        .map(|id| crate::store::AuditEntry::new(now, who.clone(), "donor_data_read", id).after(via))
        .collect();
    sink(entries).await.map_err(|e| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the read could not be audited, so nothing is given: {e}\n"),
        )
            .into_response()
    })
}

async fn review_queue(State(s): State<AdminState>, Reader(u): Reader) -> Response {
    let Some(r) = &s.review else {
        return no_review();
    };
    let q = r.queue();
    if let Ok(v) = &q {
        let ids = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["specimen_id"].as_str().map(str::to_string))
            .collect();
        if let Err(resp) = audit_donor_read(&s, &u, ids, "API: review queue").await {
            return resp;
        }
    }
    listed(q, StatusCode::INTERNAL_SERVER_ERROR)
}

async fn review_item(
    State(s): State<AdminState>,
    Reader(u): Reader,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(r) = &s.review else {
        return no_review();
    };
    let item = r.item(&id);
    if let Ok(Some(_)) = &item
        && let Err(resp) = audit_donor_read(&s, &u, vec![id], "API: review item").await
    {
        return resp;
    }
    found(item, "no such specimen\n")
}

async fn release_one(
    State(s): State<AdminState>,
    Scientist(user): Scientist,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(r) = &s.review else {
        return no_review();
    };
    action_response(r.release(vec![id], &user, false).await)
}

#[derive(serde::Deserialize)]
struct BatchBody {
    specimens: Vec<String>,
}

async fn release_batch(
    State(s): State<AdminState>,
    Scientist(user): Scientist,
    axum::Json(body): axum::Json<BatchBody>,
) -> Response {
    let Some(r) = &s.review else {
        return no_review();
    };
    if body.specimens.is_empty() {
        return (StatusCode::BAD_REQUEST, "list the specimens to release\n").into_response();
    }
    action_response(r.release(body.specimens, &user, true).await)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RetestBody {
    reason: String,
    /// The tests to repeat (targets or test codes); none: any new result.
    #[serde(default)]
    tests: Vec<String>,
}

async fn send_back(
    State(s): State<AdminState>,
    Scientist(user): Scientist,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::Json(body): axum::Json<RetestBody>,
) -> Response {
    let Some(r) = &s.review else {
        return no_review();
    };
    action_response(r.send_back(id, &user, body.reason, body.tests).await)
}

fn no_runs() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "runs are not available\n").into_response()
}

#[derive(serde::Deserialize)]
struct RunsQuery {
    state: Option<String>,
}

async fn runs_list(
    State(s): State<AdminState>,
    Reader(_u): Reader,
    axum::extract::Query(q): axum::extract::Query<RunsQuery>,
) -> Response {
    let Some(r) = &s.runs else {
        return no_runs();
    };
    action_response(r.list(q.state.as_deref().unwrap_or("pending")))
}

async fn run_show(
    State(s): State<AdminState>,
    Reader(_u): Reader,
    axum::extract::Path(key): axum::extract::Path<String>,
) -> Response {
    let Some(r) = &s.runs else {
        return no_runs();
    };
    found(r.show(&key), "no such run\n")
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: String,
}

async fn run_accept(
    State(s): State<AdminState>,
    Scientist(user): Scientist,
    axum::extract::Path(key): axum::extract::Path<String>,
    axum::Json(body): axum::Json<ReasonBody>,
) -> Response {
    let Some(r) = &s.runs else {
        return no_runs();
    };
    action_response(r.decide(key, true, body.reason, &user).await)
}

async fn run_reject(
    State(s): State<AdminState>,
    Scientist(user): Scientist,
    axum::extract::Path(key): axum::extract::Path<String>,
    axum::Json(body): axum::Json<ReasonBody>,
) -> Response {
    let Some(r) = &s.runs else {
        return no_runs();
    };
    action_response(r.decide(key, false, body.reason, &user).await)
}

async fn not_reportable(
    State(s): State<AdminState>,
    Scientist(user): Scientist,
    axum::extract::Path((id, result)): axum::extract::Path<(String, usize)>,
    axum::Json(body): axum::Json<ReasonBody>,
) -> Response {
    let Some(r) = &s.runs else {
        return no_runs();
    };
    action_response(r.not_reportable(id, result, body.reason, &user).await)
}

async fn correct_report(
    State(s): State<AdminState>,
    Scientist(user): Scientist,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::Json(body): axum::Json<crate::custody::release::CorrectionRequest>,
) -> Response {
    let Some(r) = &s.review else {
        return no_review();
    };
    action_response(r.correct(id, body, &user).await)
}

async fn outbox(State(s): State<AdminState>, Reader(_u): Reader) -> Response {
    let Some(r) = &s.review else {
        return no_review();
    };
    listed(r.outbox(), StatusCode::INTERNAL_SERVER_ERROR)
}

async fn report_status(
    State(s): State<AdminState>,
    Reader(_u): Reader,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(r) = &s.review else {
        return no_review();
    };
    found(r.report(&id), "no such report\n")
}

/// The signed report as sent to the MRO: `application/jose` (RFC 7515 compact serialization).
async fn report_jws(
    State(s): State<AdminState>,
    Reader(user): Reader,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(r) = &s.review else {
        return no_review();
    };
    if user.role == auth::Role::Viewer {
        // Refused before the export (which would be audited as given).
        if let Some(audit) = &s.on_refusal {
            audit(
                Some(&user.name),
                &format!("/api/reports/{id}/jws"),
                "forbidden",
            );
        }
        return (
            StatusCode::FORBIDDEN,
            "a signed report carries donor identifiers: the viewer role does not export it\n",
        )
            .into_response();
    }
    match r.report_jws(id, &user).await {
        Ok(v) => match v.get("jws").and_then(|j| j.as_str()) {
            Some(jws) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/jose")],
                jws.to_string(),
            )
                .into_response(),
            None => (StatusCode::INTERNAL_SERVER_ERROR, "no JWS\n").into_response(),
        },
        Err(e) => action_response(Err(e)),
    }
}

async fn specimen_audit(
    State(s): State<AdminState>,
    Reader(_u): Reader,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(api) = &s.api else {
        return (StatusCode::SERVICE_UNAVAILABLE, "not available\n").into_response();
    };
    listed(api.specimen_audit(&id), StatusCode::INTERNAL_SERVER_ERROR)
}

async fn retry(
    State(s): State<AdminState>,
    Operator(user): Operator,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(r) = &s.review else {
        return no_review();
    };
    action_response(r.retry(id, &user).await)
}

fn no_quarantine() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "quarantine is not available\n",
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct QuarantineQuery {
    source: Option<String>,
}

async fn quarantine_list(
    State(s): State<AdminState>,
    Reader(_u): Reader,
    axum::extract::Query(q): axum::extract::Query<QuarantineQuery>,
) -> Response {
    let Some(qa) = &s.quarantine else {
        return no_quarantine();
    };
    listed(
        qa.list(q.source.as_deref()),
        StatusCode::INTERNAL_SERVER_ERROR,
    )
}

/// One quarantined record: the raw bytes, which carry donor data, only to the operator role
/// (not a certifying scientist's "operate" permission); every read is audited.
async fn quarantine_show(
    State(s): State<AdminState>,
    Reader(user): Reader,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(qa) = &s.quarantine else {
        return no_quarantine();
    };
    let with_raw = user.role == auth::Role::Operator;
    action_response(qa.show(id, &user, with_raw).await)
}

fn no_lifecycle() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "lifecycle is not available\n",
    )
        .into_response()
}

async fn written_request(
    State(s): State<AdminState>,
    Operator(user): Operator,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Response {
    let Some(l) = &s.lifecycle else {
        return no_lifecycle();
    };
    action_response(l.request(id, body, &user).await)
}

/// `POST /api/specimens/{id}/edition`: operators and certifying scientists.
async fn edition(
    State(s): State<AdminState>,
    Operator(user): Operator,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Response {
    let Some(l) = &s.lifecycle else {
        return no_lifecycle();
    };
    action_response(l.edition(id, body, &user).await)
}

#[derive(serde::Deserialize)]
struct DiscardBody {
    item: String,
}

async fn discard(
    State(s): State<AdminState>,
    Operator(user): Operator,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::Json(body): axum::Json<DiscardBody>,
) -> Response {
    let Some(l) = &s.lifecycle else {
        return no_lifecycle();
    };
    action_response(l.discard(id, body.item, &user).await)
}

async fn split_view(
    State(s): State<AdminState>,
    Reader(_u): Reader,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(l) = &s.lifecycle else {
        return no_lifecycle();
    };
    found(
        l.split(&id),
        "no split request is recorded for this specimen",
    )
}

async fn adulterant_retest_view(
    State(s): State<AdminState>,
    Reader(_u): Reader,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(l) = &s.lifecycle else {
        return no_lifecycle();
    };
    found(
        l.adulterant_retest(&id),
        "no request to test the primary for the split's adulterant is recorded for this specimen",
    )
}

async fn split_lab_receive(
    State(s): State<AdminState>,
    Operator(user): Operator,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Response {
    let Some(l) = &s.lifecycle else {
        return no_lifecycle();
    };
    action_response(l.split_lab_receive(body, &user).await)
}

async fn split_lab_view(
    State(s): State<AdminState>,
    Reader(_u): Reader,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(l) = &s.lifecycle else {
        return no_lifecycle();
    };
    match l.split_lab(&id) {
        Ok(r) => found(Ok(r), "no split specimen was received under this ID"),
        Err(e) => action_response(Err(e)),
    }
}

async fn adulterant_retest_release(
    State(s): State<AdminState>,
    Scientist(user): Scientist,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(l) = &s.lifecycle else {
        return no_lifecycle();
    };
    action_response(l.adulterant_retest_release(id, &user).await)
}

async fn split_lab_release(
    State(s): State<AdminState>,
    Scientist(user): Scientist,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(l) = &s.lifecycle else {
        return no_lifecycle();
    };
    action_response(l.split_lab_release(id, &user).await)
}

async fn retention_view(
    State(s): State<AdminState>,
    Reader(_u): Reader,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(l) = &s.lifecycle else {
        return no_lifecycle();
    };
    found(
        l.retention(&id),
        "no retention: unknown or not yet reported",
    )
}

async fn discardable(State(s): State<AdminState>, Reader(_u): Reader) -> Response {
    let Some(l) = &s.lifecycle else {
        return no_lifecycle();
    };
    match l.discardable() {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// The supervised tasks that are down, one line each ("task <name> down (restarts N)").
fn tasks_down(s: &AdminState) -> String {
    let tasks = s.health.tasks();
    s.health
        .down()
        .iter()
        .map(|n| {
            let restarts = tasks.get(n).map(|t| t.restarts).unwrap_or(0);
            format!("task {n} down (restarts {restarts})\n")
        })
        .collect()
}

async fn healthz(State(s): State<AdminState>) -> Response {
    let down = tasks_down(&s);
    if down.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, down).into_response()
    }
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let down = tasks_down(&s);
    if !down.is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{down}"),
        )
            .into_response()
    } else if let Some(why) = s.not_ready.as_ref().and_then(|f| f()) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready\n{why}\n"),
        )
            .into_response()
    } else if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics_text(State(s): State<AdminState>) -> Response {
    match &s.prometheus {
        Some(h) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

async fn specimen(
    State(s): State<AdminState>,
    Reader(user): Reader,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(api) = &s.api else {
        return (StatusCode::SERVICE_UNAVAILABLE, "store not open\n").into_response();
    };
    tracing::info!(component = "admin", user = %user.name, "specimen record read");
    let rec = api.specimen(&id);
    if let Ok(Some(_)) = &rec
        && let Err(resp) = audit_donor_read(&s, &user, vec![id], "API: specimen record").await
    {
        return resp;
    }
    found(rec, "no such specimen\n")
}

#[derive(serde::Deserialize)]
struct StateQuery {
    state: String,
}

async fn specimens(
    State(s): State<AdminState>,
    Reader(_user): Reader,
    axum::extract::Query(q): axum::extract::Query<StateQuery>,
) -> Response {
    let Some(api) = &s.api else {
        return (StatusCode::SERVICE_UNAVAILABLE, "store not open\n").into_response();
    };
    listed(
        api.specimens_in_state(&q.state)
            .map(serde_json::Value::from),
        StatusCode::BAD_REQUEST,
    )
}

async fn audit_verify(State(s): State<AdminState>, Reader(user): Reader) -> Response {
    let Some(api) = &s.api else {
        return (StatusCode::SERVICE_UNAVAILABLE, "store not open\n").into_response();
    };
    tracing::info!(component = "admin", user = %user.name, "audit chain verification");
    listed(api.verify_audit(), StatusCode::INTERNAL_SERVER_ERROR)
}

#[derive(serde::Deserialize)]
struct SummaryQuery {
    employer: String,
    from: String,
    to: String,
}

fn no_summaries() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "summaries are not available\n",
    )
        .into_response()
}

/// An employer's request under 40.111(b): audited before it is answered.
async fn summary(
    State(s): State<AdminState>,
    Reader(user): Reader,
    axum::extract::Query(q): axum::extract::Query<SummaryQuery>,
) -> Response {
    let Some(api) = &s.summaries else {
        return no_summaries();
    };
    tracing::info!(component = "admin", user = %user.name, "statistical summary requested");
    action_response(api.request(q.employer, q.from, q.to, &user).await)
}

#[derive(serde::Deserialize)]
struct SummariesQuery {
    period: Option<String>,
}

async fn summaries_list(
    State(s): State<AdminState>,
    Reader(_u): Reader,
    axum::extract::Query(q): axum::extract::Query<SummariesQuery>,
) -> Response {
    let Some(api) = &s.summaries else {
        return no_summaries();
    };
    action_response(api.list(q.period.as_deref()))
}

async fn summaries_show(
    State(s): State<AdminState>,
    Reader(_u): Reader,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    let Some(api) = &s.summaries else {
        return no_summaries();
    };
    found(api.show(&id), "no such summary")
}

async fn summaries_mark_sent(
    State(s): State<AdminState>,
    Operator(user): Operator,
    axum::extract::Path(id): axum::extract::Path<String>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Response {
    let Some(api) = &s.summaries else {
        return no_summaries();
    };
    action_response(api.mark_sent(id, body, &user).await)
}

/// Every `/api/` answer to a viewer: donor identifiers and certified copies withheld from JSON,
/// and no signed report (a JWS carries them).
async fn withhold_from_viewers(
    State(s): State<AdminState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let viewer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| s.current_users().authenticate(t.trim()))
        .is_some_and(|u| u.role == auth::Role::Viewer);
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    if !viewer {
        return resp;
    }
    let media = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if media.starts_with("application/jose") {
        if let Some(audit) = &s.on_refusal {
            audit(None, &path, "forbidden");
        }
        return (
            StatusCode::FORBIDDEN,
            "a signed report carries donor identifiers: the viewer role does not export it\n",
        )
            .into_response();
    }
    if !media.starts_with("application/json") {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "answer too large\n").into_response();
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut v) => {
            redact::donor_identifiers(&mut v);
            let mut r = axum::Json(v).into_response();
            *r.status_mut() = parts.status;
            r
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "unreadable answer\n").into_response(),
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/api/specimens/{id}", get(specimen))
        .route("/api/specimens", get(specimens))
        .route("/api/audit/verify", get(audit_verify))
        .route("/api/summary", get(summary))
        .route("/api/summaries", get(summaries_list))
        .route("/api/summaries/{id}", get(summaries_show))
        .route(
            "/api/summaries/{id}/sent",
            axum::routing::post(summaries_mark_sent),
        )
        .route("/api/review", get(review_queue))
        .route("/api/review/{id}", get(review_item))
        .route("/api/review/{id}/release", axum::routing::post(release_one))
        .route("/api/review/{id}/retest", axum::routing::post(send_back))
        .route("/api/release-batch", axum::routing::post(release_batch))
        .route("/api/outbox", get(outbox))
        .route("/api/outbox/{id}/retry", axum::routing::post(retry))
        .route("/api/reports/{id}", get(report_status))
        .route("/api/reports/{id}/jws", get(report_jws))
        .route("/api/specimens/{id}/audit", get(specimen_audit))
        .route(
            "/api/reports/{id}/correct",
            axum::routing::post(correct_report),
        )
        .route(
            "/api/specimens/{id}/requests",
            axum::routing::post(written_request),
        )
        .route("/api/specimens/{id}/discard", axum::routing::post(discard))
        .route("/api/specimens/{id}/edition", axum::routing::post(edition))
        .route("/api/specimens/{id}/split", get(split_view))
        .route(
            "/api/specimens/{id}/adulterant-retest",
            get(adulterant_retest_view),
        )
        .route(
            "/api/specimens/{id}/adulterant-retest/release",
            axum::routing::post(adulterant_retest_release),
        )
        .route("/api/specimens/{id}/retention", get(retention_view))
        .route(
            "/api/split-lab/received",
            axum::routing::post(split_lab_receive),
        )
        .route("/api/split-lab/{id}", get(split_lab_view))
        .route(
            "/api/split-lab/{id}/release",
            axum::routing::post(split_lab_release),
        )
        .route("/api/discardable", get(discardable))
        .route("/api/runs", get(runs_list))
        .route("/api/runs/{key}", get(run_show))
        .route("/api/runs/{key}/accept", axum::routing::post(run_accept))
        .route("/api/runs/{key}/reject", axum::routing::post(run_reject))
        .route(
            "/api/specimens/{id}/results/{result}/not-reportable",
            axum::routing::post(not_reportable),
        )
        .route("/api/quarantine", get(quarantine_list))
        .route("/api/quarantine/{id}", get(quarantine_show))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            withhold_from_viewers,
        ))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .merge(console::routes())
        .with_state(state)
}

/// Serves the admin API within `limits` (connection cap, header and idle timeouts) until
/// `shutdown` resolves; requests in progress then finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    limits: server::Limits,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(listener, router(state), limits, tls, shutdown).await
}
