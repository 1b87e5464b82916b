//! The 40.111 statistical summaries as the laboratory produces, keeps and sends them.
//!
//! # When a summary is produced
//! A period (January-June, July-December) is produced once it has closed: the laboratory's
//! local date is past its last day. Results count by the laboratory date of their report (see
//! `domain::summary`), so the counts of a closed period are final. The laboratory still waits
//! for the period's own work: the summary of an employer and specimen type is produced only
//! when no DOT specimen of that employer and type received in the period (the CCF's receipt
//! date, laboratory time) is still unreleased; the summary to DOT of a specimen type, when no
//! DOT specimen of that type received in the period is. (A specimen received in the period and
//! reported after its close counts in the next period, where its report falls; a specimen held
//! untested is not waited for.) Periods from `[summaries] since` onward are produced; each
//! summary once.
//!
//! # What is produced
//! One JSON file per employer and specimen type (Appendix D), and one per specimen type for DOT
//! (Appendix E; every type the laboratory is certified for, even without results), in
//! `[summaries] dir`, written atomically (temporary file, fsync, rename, directory fsync).
//! Then the store records, with an audit entry, in one durable transaction: the file name, its
//! SHA-256, its exact content and the time (40.109(b) keeps employer-specific data two years).
//! An employer with fewer than five results of a type gets no file: the record says the summary
//! was suppressed (40.111(a)(2)). No file carries a specimen ID, a donor identifier or a result
//! value; the employer's file is the only output addressed to an employer.
//!
//! # Sending
//! The laboratory sends the files itself (mail, fax, electronically: 40.111(b) allows each) and
//! an operator marks each one sent (who, when, on which date it was sent), audited. A summary
//! produced and not marked sent after its due date (employers: January 20 / July 20; DOT:
//! January 31 / July 31), or not produced by then because the period's results are not all
//! released, counts on `custodian_summaries_overdue`, which the shipped alerts watch.
//!
//! # On request
//! An employer's request (40.111(b)) is answered for any dates with the summary of each
//! specimen type, or the "not enough testing" report, and audited before it is answered.

use crate::core::clock::rfc3339;
use crate::domain::rules::SpecimenType;
use crate::domain::specimen::SpecimenRecord;
use crate::domain::summary::employer::{Addressed, Disclosure};
use crate::domain::summary::{
    self, Identity, Period, Recipient, Reported, Unreported, dot, iso, lab_day, parse_date,
};
use crate::store::{Abort, AuditEntry, CommitError, GroupCommitter, Keyspace, Store, Tx};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The actor of what the daemon does on its own.
const SYSTEM: &str = "system:summaries";
/// Longest operator's note on a sending.
pub const MAX_NOTE: usize = 200;
/// Longest employer ID a request may name (as a CCF correction may set it).
pub const MAX_EMPLOYER_ID: usize = 200;

/// Who the summaries come from and whom they name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desk {
    pub laboratory: Identity,
    /// Employer ID (as on the CCF) → the C/TPA that administers its testing.
    pub ctpa: BTreeMap<String, Identity>,
    /// The specimen types the laboratory tests: each gets a summary to DOT.
    pub certified: Vec<SpecimenType>,
    pub utc_offset_minutes: i32,
}

/// Production: the desk, the directory the laboratory sends from, the first period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub desk: Desk,
    pub dir: PathBuf,
    pub since: Period,
}

/// What was done with a summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// Written to the summaries directory: its file name, SHA-256 (hex) and exact content.
    Produced {
        file: String,
        sha256: String,
        content: String,
    },
    /// Fewer than five results: no summary (40.111(a)(2)).
    Suppressed,
}

/// An operator's record that a summary was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// The operator (admin user name).
    pub by: String,
    /// When it was marked (Unix ms).
    pub marked_at_ms: u64,
    /// The laboratory date it was sent on.
    pub sent_on: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One summary of the store (keyspace `summaries`, by id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryRecord {
    pub id: String,
    /// `2026-H1`.
    pub period: String,
    pub from: String,
    pub to: String,
    /// `employer` or `dot`.
    pub recipient: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employer_name: Option<String>,
    pub specimen_type: SpecimenType,
    /// The last day to send it (laboratory date).
    pub due: String,
    /// The results it counts.
    pub results: u64,
    pub produced_at_ms: u64,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<Sent>,
}

impl SummaryRecord {
    fn recipient(&self) -> Recipient {
        if self.recipient == Recipient::Dot.key() {
            Recipient::Dot
        } else {
            Recipient::Employer
        }
    }

    /// Produced, not marked sent, and its due date gone by on laboratory date `today`.
    pub fn is_overdue(&self, today: i64) -> bool {
        let due = parse_date(&self.due).unwrap_or(i64::MAX);
        matches!(self.outcome, Outcome::Produced { .. }) && self.sent.is_none() && today > due
    }
}

/// An employer ID as a file name and URL segment can carry it: letters, digits, `.` and `-`
/// as they are, every other byte `~XX` (so `_` separates the parts unambiguously); a very long
/// one is cut and completed with a hash.
fn escape(employer: &str) -> String {
    let mut out = String::new();
    for b in employer.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("~{b:02X}"));
        }
    }
    if out.len() > 96 {
        let hash = hex(&Sha256::digest(employer.as_bytes()));
        out.truncate(64);
        out.push('~');
        out.push_str(&hash[..16]);
    }
    out
}

/// The id of a summary (also its file name without `.json`): `2026-H1_employer_EMP-1_urine`,
/// `2026-H1_dot_urine`.
pub fn summary_id(period: Period, employer: Option<&str>, t: SpecimenType) -> String {
    match employer {
        Some(e) => format!("{}_employer_{}_{}", period.key(), escape(e), t.key()),
        None => format!("{}_dot_{}", period.key(), t.key()),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A summary file: its id and production time, then the summary's items.
#[derive(Serialize)]
struct FileBody<'a, T: Serialize> {
    summary_id: &'a str,
    produced_at: String,
    #[serde(flatten)]
    summary: &'a T,
}

fn render<T: Serialize>(id: &str, summary: &T, now_ms: u64) -> String {
    let body = FileBody {
        summary_id: id,
        produced_at: rfc3339(now_ms),
        summary,
    };
    let mut text = serde_json::to_string_pretty(&body).expect("a summary serializes");
    text.push('\n');
    text
}

/// The records the summaries count, read once.
struct Counted<'a> {
    reported: Vec<Reported<'a>>,
    unreported: Vec<Unreported<'a>>,
}

fn counted(records: &[SpecimenRecord], utc_offset_minutes: i32) -> Counted<'_> {
    Counted {
        reported: records
            .iter()
            .filter_map(|r| summary::reported(r, utc_offset_minutes))
            .collect(),
        unreported: records
            .iter()
            .filter_map(|r| summary::unreported(r, utc_offset_minutes))
            .collect(),
    }
}

/// Every DOT specimen record of the store.
fn dot_records(store: &Store) -> Result<Vec<SpecimenRecord>, String> {
    let mut out = Vec::new();
    for item in store.iter::<SpecimenRecord>(Keyspace::Specimens) {
        let (_, r) = item.map_err(|e| e.to_string())?;
        if r.accession
            .as_ref()
            .is_some_and(|a| a.program == crate::domain::rules::Program::Dot)
        {
            out.push(r);
        }
    }
    Ok(out)
}

fn stored(store: &Store) -> Result<BTreeMap<String, SummaryRecord>, String> {
    let mut out = BTreeMap::new();
    for item in store.iter::<SummaryRecord>(Keyspace::Summaries) {
        let (_, r) = item.map_err(|e| e.to_string())?;
        out.insert(r.id.clone(), r);
    }
    Ok(out)
}

/// What a sweep found to do, and what is overdue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// New summaries, ordered by id.
    pub todo: Vec<SummaryRecord>,
    /// Produced and not marked sent past their due date, by recipient (`employer`, `dot`).
    pub unsent_overdue: BTreeMap<&'static str, u64>,
    /// Not produced past their due date because the period's results are not all released.
    pub waiting_overdue: BTreeMap<&'static str, u64>,
    /// Not produced yet because the period's results are not all released (any due date).
    pub waiting: u64,
}

/// What production would write at `now_ms`: pure over the store's records (reads only).
pub fn plan(store: &Store, settings: &Settings, now_ms: u64) -> Result<Plan, String> {
    let desk = &settings.desk;
    let today = lab_day(now_ms, desk.utc_offset_minutes);
    let existing = stored(store)?;
    let records = dot_records(store)?;
    let c = counted(&records, desk.utc_offset_minutes);
    let mut plan = Plan::default();
    for to in Recipient::ALL {
        plan.unsent_overdue.insert(to.key(), 0);
        plan.waiting_overdue.insert(to.key(), 0);
    }
    for r in existing.values() {
        if r.is_overdue(today) {
            *plan.unsent_overdue.entry(r.recipient().key()).or_default() += 1;
        }
    }
    let last = Period::last_closed(today);
    let mut period = settings.since;
    while period <= last {
        plan_period(&c, settings, period, today, now_ms, &existing, &mut plan);
        period = period.next();
    }
    plan.todo.sort_by(|a, b| a.id.cmp(&b.id));
    for r in &plan.todo {
        if r.is_overdue(today) {
            *plan.unsent_overdue.entry(r.recipient().key()).or_default() += 1;
        }
    }
    Ok(plan)
}

fn plan_period(
    c: &Counted<'_>,
    settings: &Settings,
    period: Period,
    today: i64,
    now_ms: u64,
    existing: &BTreeMap<String, SummaryRecord>,
    plan: &mut Plan,
) {
    let desk = &settings.desk;
    let (from, to) = (period.first_day(), period.last_day());
    let in_period: Vec<&Reported<'_>> = c
        .reported
        .iter()
        .filter(|r| period.contains(r.day))
        .collect();
    let waiting: Vec<&Unreported<'_>> = c
        .unreported
        .iter()
        .filter(|u| period.contains(u.received_day))
        .collect();
    let mut types: BTreeSet<SpecimenType> = desk.certified.iter().copied().collect();
    types.extend(in_period.iter().map(|r| r.specimen_type));
    let wait = |to: Recipient, plan: &mut Plan| {
        plan.waiting += 1;
        if period.is_overdue(to, today) {
            *plan.waiting_overdue.entry(to.key()).or_default() += 1;
        }
    };
    for t in types {
        let id = summary_id(period, None, t);
        if !existing.contains_key(&id) {
            if waiting.iter().any(|u| u.specimen_type == t) {
                wait(Recipient::Dot, plan);
            } else {
                let s = dot::summarize(&c.reported, &desk.laboratory, t, from, to);
                let results = s.results.results_reported;
                plan.todo.push(produced(
                    &id,
                    period,
                    Recipient::Dot,
                    None,
                    None,
                    t,
                    results,
                    render(&id, &s, now_ms),
                    now_ms,
                ));
            }
        }
        let employers: BTreeSet<&str> = in_period
            .iter()
            .filter(|r| r.specimen_type == t)
            .filter_map(|r| r.employer_id)
            .collect();
        for e in employers {
            let id = summary_id(period, Some(e), t);
            if existing.contains_key(&id) {
                continue;
            }
            if waiting
                .iter()
                .any(|u| u.specimen_type == t && u.employer_id == Some(e))
            {
                wait(Recipient::Employer, plan);
                continue;
            }
            let (d, results) = summary::employer::summarize(
                &c.reported,
                Addressed {
                    laboratory: &desk.laboratory,
                    employer_id: e,
                    ctpa: desk.ctpa.get(e),
                },
                t,
                from,
                to,
            );
            plan.todo.push(match d {
                Disclosure::Summary(s) => {
                    let name = s.employer.name.clone();
                    produced(
                        &id,
                        period,
                        Recipient::Employer,
                        Some(e),
                        name,
                        t,
                        results,
                        render(&id, &s, now_ms),
                        now_ms,
                    )
                }
                Disclosure::NotEnoughTesting(n) => SummaryRecord {
                    id: id.clone(),
                    period: period.key(),
                    from: iso(from),
                    to: iso(to),
                    recipient: Recipient::Employer.key().into(),
                    employer_id: Some(e.to_string()),
                    employer_name: n.employer.name,
                    specimen_type: t,
                    due: iso(period.due(Recipient::Employer)),
                    results,
                    produced_at_ms: now_ms,
                    outcome: Outcome::Suppressed,
                    sent: None,
                },
            });
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn produced(
    id: &str,
    period: Period,
    to: Recipient,
    employer_id: Option<&str>,
    employer_name: Option<String>,
    t: SpecimenType,
    results: u64,
    content: String,
    now_ms: u64,
) -> SummaryRecord {
    SummaryRecord {
        id: id.to_string(),
        period: period.key(),
        from: iso(period.first_day()),
        to: iso(period.last_day()),
        recipient: to.key().into(),
        employer_id: employer_id.map(str::to_string),
        employer_name,
        specimen_type: t,
        due: iso(period.due(to)),
        results,
        produced_at_ms: now_ms,
        outcome: Outcome::Produced {
            file: format!("{id}.json"),
            sha256: hex(&Sha256::digest(content.as_bytes())),
            content,
        },
        sent: None,
    }
}

/// Writes `bytes` to `dir/name` atomically: a temporary file in the same directory, fsynced,
/// renamed over the name, then the directory fsynced. The directory is created (0750) if
/// missing; the file is 0640 (no donor data, but employer-specific).
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o640)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o640))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Swept {
    pub produced: Vec<String>,
    pub suppressed: Vec<String>,
    pub waiting: u64,
}

/// One sweep at `now_ms`: writes the summaries of the closed periods that are ready, records
/// them (and the suppressed ones) durably with their audit entries, and publishes the gauges.
pub async fn produce(
    committer: &GroupCommitter,
    settings: &Arc<Settings>,
    now_ms: u64,
) -> Result<Swept, String> {
    let store = committer.store().clone();
    let s = settings.clone();
    let plan = tokio::task::spawn_blocking(move || -> Result<Plan, String> {
        let plan = plan(&store, &s, now_ms)?;
        for r in &plan.todo {
            if let Outcome::Produced { file, content, .. } = &r.outcome {
                write_atomic(&s.dir, file, content.as_bytes())
                    .map_err(|e| format!("summaries.dir {}: {file}: {e}", s.dir.display()))?;
            }
        }
        Ok(plan)
    })
    .await
    .map_err(|e| e.to_string())??;
    let mut swept = Swept {
        waiting: plan.waiting,
        ..Swept::default()
    };
    if !plan.todo.is_empty() {
        let todo = plan.todo.clone();
        let written = committer
            .submit(
                move |tx: &mut Tx<'_>| -> Result<Vec<SummaryRecord>, Abort<String>> {
                    let mut written = Vec::new();
                    for r in &todo {
                        if tx.contains_key(Keyspace::Summaries, r.id.as_bytes())? {
                            continue;
                        }
                        tx.put(Keyspace::Summaries, r.id.as_bytes(), r)?;
                        tx.audit(produced_entry(r))?;
                        written.push(r.clone());
                    }
                    Ok(written)
                },
            )
            .await
            .map_err(|e| match e {
                CommitError::Aborted(e) => e,
                other => other.to_string(),
            })?;
        for r in &written {
            let outcome = match r.outcome {
                Outcome::Produced { .. } => {
                    swept.produced.push(r.id.clone());
                    "produced"
                }
                Outcome::Suppressed => {
                    swept.suppressed.push(r.id.clone());
                    "suppressed"
                }
            };
            crate::core::telemetry::emit(crate::custody::events::SummaryRecorded {
                recipient: r.recipient().key(),
                outcome,
            });
        }
    }
    for to in Recipient::ALL {
        let k = to.key();
        crate::core::telemetry::emit(crate::custody::events::SummariesOverdue {
            recipient: k,
            unsent: plan.unsent_overdue.get(k).copied().unwrap_or(0),
            not_produced: plan.waiting_overdue.get(k).copied().unwrap_or(0),
        });
    }
    Ok(swept)
}

fn produced_entry(r: &SummaryRecord) -> AuditEntry {
    match &r.outcome {
        Outcome::Produced { file, sha256, .. } => {
            AuditEntry::new(r.produced_at_ms, SYSTEM, "summary_produced", r.id.clone())
                .after(format!("{file} sha256 {sha256}"))
        }
        Outcome::Suppressed => {
            AuditEntry::new(r.produced_at_ms, SYSTEM, "summary_suppressed", r.id.clone())
                .after("fewer than 5 results: no summary (40.111(a)(2))")
        }
    }
}

/// Produces at once and then every `interval` (or when woken, e.g. after a summary was marked
/// sent) until `shutdown`.
pub async fn run(
    committer: GroupCommitter,
    settings: Arc<Settings>,
    clock: Arc<dyn crate::core::clock::Clock>,
    interval: std::time::Duration,
    wake: Arc<tokio::sync::Notify>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        match produce(&committer, &settings, clock.now_ms()).await {
            Ok(s) if !s.produced.is_empty() || !s.suppressed.is_empty() => tracing::info!(
                component = "summaries",
                produced = s.produced.len(),
                suppressed = s.suppressed.len(),
                waiting = s.waiting,
                "40.111 summaries recorded"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(component = "summaries", error = %e, "summary production failed")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
        }
    }
}

/// Why a summaries action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    BadRequest(String),
    #[error("no such summary")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    #[error("not recorded durably; nothing was done: {0}")]
    NotDurable(String),
    #[error("{0}")]
    Store(String),
}

impl Refused {
    pub fn status(&self) -> u16 {
        match self {
            Refused::BadRequest(_) => 400,
            Refused::NotFound => 404,
            Refused::Conflict(_) => 409,
            Refused::NotDurable(_) => 503,
            Refused::Store(_) => 500,
        }
    }
}

/// An operator's marking of a summary as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkSent {
    /// How it was sent, or to whom (at most 200 characters).
    #[serde(default)]
    pub note: Option<String>,
    /// The laboratory date it was sent (default today); not later than today, not earlier
    /// than its production.
    #[serde(default)]
    pub sent_on: Option<String>,
}

/// Marks summary `id` sent by `by` (one time only; a suppressed one has nothing to send),
/// audited, durable before it is answered. Returns the record as listed.
pub async fn mark_sent(
    committer: &GroupCommitter,
    id: &str,
    by: &str,
    request: MarkSent,
    utc_offset_minutes: i32,
    now_ms: u64,
) -> Result<Listed, Refused> {
    let today = lab_day(now_ms, utc_offset_minutes);
    let note = match request.note.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(n) if n.chars().count() > MAX_NOTE || n.chars().any(char::is_control) => {
            return Err(Refused::BadRequest(format!(
                "note: at most {MAX_NOTE} characters, no control characters"
            )));
        }
        Some(n) => Some(n.to_string()),
    };
    let sent_on = match request.sent_on.as_deref() {
        None => today,
        Some(d) => parse_date(d)
            .ok_or_else(|| Refused::BadRequest("sent_on: not a YYYY-MM-DD date".into()))?,
    };
    if sent_on > today {
        return Err(Refused::BadRequest(format!(
            "sent_on: {} is later than today ({})",
            iso(sent_on),
            iso(today)
        )));
    }
    let (id, by) = (id.to_string(), by.to_string());
    let actor: String = format!("user:{by}").chars().take(64).collect();
    let record = committer
        .submit(move |tx: &mut Tx<'_>| -> Result<SummaryRecord, Abort<Refused>> {
            let mut r: SummaryRecord = tx
                .get(Keyspace::Summaries, id.as_bytes())?
                .ok_or(Abort::Domain(Refused::NotFound))?;
            if r.outcome == Outcome::Suppressed {
                return Err(Abort::Domain(Refused::Conflict(
                    "this summary was suppressed (fewer than five results, 40.111(a)(2)): there is nothing to send".into(),
                )));
            }
            if let Some(s) = &r.sent {
                return Err(Abort::Domain(Refused::Conflict(format!(
                    "already marked sent on {} by {}",
                    s.sent_on, s.by
                ))));
            }
            if sent_on < lab_day(r.produced_at_ms, utc_offset_minutes) {
                return Err(Abort::Domain(Refused::BadRequest(format!(
                    "sent_on: {} is before the summary was produced",
                    iso(sent_on)
                ))));
            }
            r.sent = Some(Sent {
                by: by.clone(),
                marked_at_ms: now_ms,
                sent_on: iso(sent_on),
                note: note.clone(),
            });
            tx.put(Keyspace::Summaries, id.as_bytes(), &r)?;
            tx.audit(
                AuditEntry::new(now_ms, actor.clone(), "summary_marked_sent", id.clone())
                    .after(format!("sent on {}", iso(sent_on))),
            )?;
            Ok(r)
        })
        .await
        .map_err(|e| match e {
            CommitError::Aborted(e) => e,
            CommitError::NotDurable(e) => Refused::NotDurable(e),
            other => Refused::Store(other.to_string()),
        })?;
    Ok(listed(&record, today))
}

/// A summary as the list shows it: never its content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub id: String,
    pub period: String,
    pub from: String,
    pub to: String,
    pub recipient: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub employer_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub employer_name: Option<String>,
    pub specimen_type: SpecimenType,
    /// `produced` or `suppressed`.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub results: u64,
    pub produced_at: String,
    pub due: String,
    /// Produced, not marked sent, past its due date.
    pub overdue: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<Sent>,
}

fn listed(r: &SummaryRecord, today: i64) -> Listed {
    let (status, file, sha256) = match &r.outcome {
        Outcome::Produced { file, sha256, .. } => {
            ("produced", Some(file.clone()), Some(sha256.clone()))
        }
        Outcome::Suppressed => ("suppressed", None, None),
    };
    Listed {
        id: r.id.clone(),
        period: r.period.clone(),
        from: r.from.clone(),
        to: r.to.clone(),
        recipient: r.recipient.clone(),
        employer_id: r.employer_id.clone(),
        employer_name: r.employer_name.clone(),
        specimen_type: r.specimen_type,
        status,
        file,
        sha256,
        results: r.results,
        produced_at: rfc3339(r.produced_at_ms),
        due: r.due.clone(),
        overdue: r.is_overdue(today),
        sent: r.sent.clone(),
    }
}

/// The summaries recorded, by id (period first), optionally of one period (`2026-H1`).
pub fn list(
    store: &Store,
    period: Option<&str>,
    utc_offset_minutes: i32,
    now_ms: u64,
) -> Result<Vec<Listed>, Refused> {
    let period = match period {
        None => None,
        Some(p) => Some(
            Period::parse(p)
                .ok_or_else(|| Refused::BadRequest(format!("period: `{p}` is not like 2026-H1")))?
                .key(),
        ),
    };
    let today = lab_day(now_ms, utc_offset_minutes);
    Ok(stored(store)
        .map_err(Refused::Store)?
        .values()
        .filter(|r| period.as_ref().is_none_or(|p| *p == r.period))
        .map(|r| listed(r, today))
        .collect())
}

/// One summary as listed, with its content as produced (the file's JSON).
pub fn show(
    store: &Store,
    id: &str,
    utc_offset_minutes: i32,
    now_ms: u64,
) -> Result<Option<serde_json::Value>, String> {
    let Some(r) = store
        .get::<SummaryRecord>(Keyspace::Summaries, id.as_bytes())
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let mut v = serde_json::to_value(listed(&r, lab_day(now_ms, utc_offset_minutes)))
        .map_err(|e| e.to_string())?;
    if let Outcome::Produced { content, .. } = &r.outcome {
        v["content"] = serde_json::from_str(content).map_err(|e| e.to_string())?;
    }
    Ok(Some(v))
}

/// An employer's request (40.111(b)): what the laboratory gives for `employer_id` and the
/// laboratory dates `from..=to`: per specimen type (each it tests, and any other the employer
/// had results of), the summary, or the "not enough testing" report.
pub fn disclosures(
    store: &Store,
    desk: &Desk,
    employer_id: &str,
    from: &str,
    to: &str,
) -> Result<serde_json::Value, Refused> {
    let employer_id = employer_id.trim();
    if employer_id.is_empty()
        || employer_id.chars().count() > MAX_EMPLOYER_ID
        || employer_id.chars().any(char::is_control)
    {
        return Err(Refused::BadRequest(format!(
            "employer: 1 to {MAX_EMPLOYER_ID} characters, no control characters"
        )));
    }
    let from_d = parse_date(from)
        .ok_or_else(|| Refused::BadRequest("from: not a YYYY-MM-DD date".into()))?;
    let to_d =
        parse_date(to).ok_or_else(|| Refused::BadRequest("to: not a YYYY-MM-DD date".into()))?;
    if to_d < from_d {
        return Err(Refused::BadRequest("to is before from".into()));
    }
    let records = dot_records(store).map_err(Refused::Store)?;
    let c = counted(&records, desk.utc_offset_minutes);
    let mut types: BTreeSet<SpecimenType> = desk.certified.iter().copied().collect();
    types.extend(
        c.reported
            .iter()
            .filter(|r| r.employer_id == Some(employer_id) && r.day >= from_d && r.day <= to_d)
            .map(|r| r.specimen_type),
    );
    let parts: Vec<Disclosure> = types
        .into_iter()
        .map(|t| {
            summary::employer::summarize(
                &c.reported,
                Addressed {
                    laboratory: &desk.laboratory,
                    employer_id,
                    ctpa: desk.ctpa.get(employer_id),
                },
                t,
                from_d,
                to_d,
            )
            .0
        })
        .collect();
    let kind = if parts.iter().any(Disclosure::is_summary) {
        "summary"
    } else {
        "not_enough_testing"
    };
    Ok(serde_json::json!({
        "request": "40.111(b)",
        "kind": kind,
        "employer_id": employer_id,
        "reporting_period": {"from": iso(from_d), "to": iso(to_d)},
        "disclosures": parts,
    }))
}

/// The audit entry of an answered request (who asked, for which employer and dates, what was
/// given; never a count).
pub fn request_entry(answer: &serde_json::Value, actor: &str, now_ms: u64) -> AuditEntry {
    let s = |k: &str| answer.get(k).and_then(|v| v.as_str()).unwrap_or("");
    let period = &answer["reporting_period"];
    let employer: String = s("employer_id").chars().take(200).collect();
    AuditEntry::new(
        now_ms,
        actor.chars().take(64).collect::<String>(),
        "summary_requested",
        format!("employer {employer}"),
    )
    .after(format!(
        "{} to {}: {} (40.111(b))",
        period["from"].as_str().unwrap_or(""),
        period["to"].as_str().unwrap_or(""),
        s("kind").replace('_', " ")
    ))
}

/// An employer's request answered through the daemon: computed, audited as asked by `actor`,
/// durable, then answered.
pub async fn request(
    committer: &GroupCommitter,
    desk: &Desk,
    employer_id: &str,
    from: &str,
    to: &str,
    actor: &str,
    now_ms: u64,
) -> Result<serde_json::Value, Refused> {
    let store = committer.store().clone();
    let (desk2, e, f, t) = (
        desk.clone(),
        employer_id.to_string(),
        from.to_string(),
        to.to_string(),
    );
    let answer = tokio::task::spawn_blocking(move || disclosures(&store, &desk2, &e, &f, &t))
        .await
        .map_err(|e| Refused::Store(e.to_string()))??;
    let entry = request_entry(&answer, actor, now_ms);
    committer
        .submit(move |tx: &mut Tx<'_>| -> Result<(), Abort<String>> {
            tx.audit(entry.clone())?;
            Ok(())
        })
        .await
        .map_err(|e| Refused::NotDurable(e.to_string()))?;
    Ok(answer)
}

/// An employer's request answered from a stopped daemon's store: audited in a transaction of
/// its own, made durable before it is answered.
pub fn request_offline(
    store: &Store,
    desk: &Desk,
    employer_id: &str,
    from: &str,
    to: &str,
    actor: &str,
    now_ms: u64,
) -> Result<serde_json::Value, Refused> {
    let answer = disclosures(store, desk, employer_id, from, to)?;
    let entry = request_entry(&answer, actor, now_ms);
    store
        .transact(|tx| -> Result<(), Abort<String>> {
            tx.audit(entry.clone())?;
            Ok(())
        })
        .map_err(|e| Refused::NotDurable(e.to_string()))?;
    store
        .flush_durable()
        .map_err(|e| Refused::NotDurable(e.to_string()))?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unambiguous_file_names_and_url_segments() {
        let p = Period::parse("2026-H1").unwrap();
        assert_eq!(
            summary_id(p, Some("EMP-1"), SpecimenType::Urine),
            "2026-H1_employer_EMP-1_urine"
        );
        assert_eq!(
            summary_id(p, None, SpecimenType::OralFluid),
            "2026-H1_dot_oral_fluid"
        );
        assert_eq!(
            summary_id(p, Some("A/B_C d"), SpecimenType::Urine),
            "2026-H1_employer_A~2FB~5FC~20d_urine"
        );
        let long = "x".repeat(150);
        let id = summary_id(p, Some(&long), SpecimenType::Urine);
        assert!(id.len() < 120, "{id}");
        assert_ne!(
            id,
            summary_id(p, Some(&"x".repeat(151)), SpecimenType::Urine)
        );
        for id in [id, summary_id(p, Some("A/B_C d"), SpecimenType::Urine)] {
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-~".contains(&b)),
                "{id}"
            );
        }
    }

    #[test]
    fn files_are_written_whole_with_their_mode() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("out");
        write_atomic(&dir, "a.json", b"{}\n").unwrap();
        write_atomic(&dir, "a.json", b"{\"x\":1}\n").unwrap();
        assert_eq!(std::fs::read(dir.join("a.json")).unwrap(), b"{\"x\":1}\n");
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["a.json"], "no temporary file is left");
        let mode = std::fs::metadata(dir.join("a.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }
}
