//! Analytical runs (batches) and their quality control. Pure: the record of one run, the QC
//! rules it is judged by, the evaluation when it closes, and the certifying scientist's
//! acceptance or rejection. Custody stores the records and tells the specimens of a run what
//! became of it ([`RunStatus`]).
//!
//! A run is one instrument's analytical batch (or one LIMS confirmation batch): the specimens'
//! results in it and its QC results (controls and calibrators). Its QC is evaluated when it
//! closes:
//! - every assay (test code) tested on a specimen in the run must have its QC rules met by
//!   results received **after** the run's last specimen (the closing QC: "bracketing"), and
//!   every QC result of a rule, opening or closing, must meet the rule's expectation;
//! - a rule without a closing result makes the run *incomplete* (never passed); an assay tested
//!   without any configured rule likewise;
//! - a QC result for which no rule names its sample and code is kept and shown, never guessed.
//!
//! A run that passed may be accepted automatically when its analyzer says so, but only a run
//! with no confirmation result (initial and validity runs): a confirmation result counts only
//! when a named reviewer accepted its run. Results of an open, pending or rejected run never
//! count.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// What a run tests.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// Initial (screening) drug tests.
    #[default]
    Initial,
    /// Initial and confirmatory validity tests.
    Validity,
    /// Confirmatory drug tests (GC-MS, LC-MS/MS).
    Confirmation,
}

impl RunKind {
    pub fn key(self) -> &'static str {
        match self {
            RunKind::Initial => "initial",
            RunKind::Validity => "validity",
            RunKind::Confirmation => "confirmation",
        }
    }
}

/// How the run's extent was known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delimiting {
    /// The instrument sends the run (batch) id with every message.
    RunId,
    /// No run id: the samples between two QC sets of the analyzer form the run.
    Bracketing,
    /// One LIMS confirmation-batch document is the run, with its QC.
    Batch,
}

/// What a QC sample is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleRole {
    #[default]
    Control,
    Calibrator,
}

impl SampleRole {
    pub fn key(self) -> &'static str {
        match self {
            SampleRole::Control => "control",
            SampleRole::Calibrator => "calibrator",
        }
    }
}

/// What a QC result must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expectation {
    /// Reads below `value` (a control that must screen negative against the cutoff `value`).
    Below,
    /// Reads at or above `value` (a control that must screen positive).
    AtLeast,
    /// Reads within `tolerance_percent` of `value` (a calibrator or quantitative control).
    Within,
    /// A qualitative test identifies the substance.
    Identified,
    /// A qualitative test does not identify the substance.
    NotIdentified,
}

impl Expectation {
    pub fn key(self) -> &'static str {
        match self {
            Expectation::Below => "below",
            Expectation::AtLeast => "at_least",
            Expectation::Within => "within",
            Expectation::Identified => "identified",
            Expectation::NotIdentified => "not_identified",
        }
    }
}

fn decimal_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
    crate::domain::rules::measure::deserialize_opt(d)
}

/// One QC rule of an assay: a control or calibrator sample, its level and what it must show.
/// Every number is the laboratory's, with its citation in the configuration's comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QcRule {
    /// The assay: the analyzer's test code (OBX-3.1), or the analyte of a LIMS batch.
    pub code: String,
    /// The control's or calibrator's sample ID as the instrument sends it.
    pub sample: String,
    /// The level's name (e.g. `negative`, `low`, `high`, `cutoff`).
    pub level: String,
    #[serde(default)]
    pub role: SampleRole,
    pub expect: Expectation,
    /// The limit (below, at_least) or the target (within).
    #[serde(default, deserialize_with = "decimal_opt")]
    pub value: Option<Decimal>,
    /// Within only: the tolerance around the target, in percent.
    #[serde(default, deserialize_with = "decimal_opt")]
    pub tolerance_percent: Option<Decimal>,
}

impl QcRule {
    /// The shape problems of this rule (key, problem), for the configuration check.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.code.trim().is_empty() {
            p.push(("code", "must name the assay's test code".to_string()));
        }
        if !valid_sample_id(&self.sample) {
            p.push((
                "sample",
                "must be 1-64 letters, digits or - _ . / (the sample ID the instrument sends)"
                    .to_string(),
            ));
        }
        if self.level.trim().is_empty() || self.level.chars().count() > 40 {
            p.push((
                "level",
                "must name the level in 1-40 characters".to_string(),
            ));
        }
        let numeric = matches!(
            self.expect,
            Expectation::Below | Expectation::AtLeast | Expectation::Within
        );
        match (numeric, self.value) {
            (true, None) => p.push((
                "value",
                format!("expect = \"{}\" needs a value", self.expect.key()),
            )),
            (false, Some(_)) => p.push((
                "value",
                format!("expect = \"{}\" takes no value", self.expect.key()),
            )),
            (true, Some(v)) if v.is_sign_negative() && !v.is_zero() => {
                p.push(("value", "must not be negative".to_string()))
            }
            _ => {}
        }
        match (self.expect, self.tolerance_percent) {
            (Expectation::Within, None) => p.push((
                "tolerance_percent",
                "expect = \"within\" needs a tolerance_percent".to_string(),
            )),
            (Expectation::Within, Some(t)) if t <= Decimal::ZERO || t > Decimal::from(100) => p
                .push((
                    "tolerance_percent",
                    "must be more than 0 and at most 100".to_string(),
                )),
            (Expectation::Within, _) => {}
            (_, Some(_)) => p.push((
                "tolerance_percent",
                "only expect = \"within\" takes a tolerance".to_string(),
            )),
            _ => {}
        }
        p
    }

    /// Whether `v` meets the rule.
    pub fn met_by(&self, v: &QcValue) -> bool {
        let limit = self.value.unwrap_or_default();
        match (self.expect, v) {
            (_, QcValue::NotObtained) => false,
            (Expectation::Below, QcValue::Number(x)) => *x < limit,
            (Expectation::AtLeast, QcValue::Number(x)) => *x >= limit,
            (Expectation::Within, QcValue::Number(x)) => {
                let tol = limit * self.tolerance_percent.unwrap_or_default() / Decimal::from(100);
                (*x - limit).abs() <= tol.abs()
            }
            (Expectation::Identified, QcValue::Identified(i)) => *i,
            (Expectation::NotIdentified, QcValue::Identified(i)) => !*i,
            // A qualitative control reported as a number, or the reverse: not what the rule asks.
            _ => false,
        }
    }

    /// The rule in words, e.g. `QC-NEG (negative) below 300`.
    pub fn words(&self) -> String {
        let what = match self.expect {
            Expectation::Below => format!("below {}", self.value.unwrap_or_default()),
            Expectation::AtLeast => format!("at or above {}", self.value.unwrap_or_default()),
            Expectation::Within => format!(
                "within {}% of {}",
                self.tolerance_percent.unwrap_or_default(),
                self.value.unwrap_or_default()
            ),
            Expectation::Identified => "identified".to_string(),
            Expectation::NotIdentified => "not identified".to_string(),
        };
        format!(
            "{} {} {} ({}) {what}",
            self.code,
            self.role.key(),
            self.sample,
            self.level
        )
    }
}

/// A sample ID as custodian accepts it: 1-64 letters, digits or `- _ . /`.
pub fn valid_sample_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

/// A run id as the instrument or the LIMS sends it: the same characters as a sample ID.
pub fn valid_run_id(s: &str) -> bool {
    valid_sample_id(s)
}

/// The value of a QC result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "is", content = "value", rename_all = "snake_case")]
pub enum QcValue {
    Number(Decimal),
    Identified(bool),
    /// OBX-11 `X`: the control gave no result.
    NotObtained,
}

/// One QC result as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QcResult {
    pub sample: String,
    pub role: SampleRole,
    /// The assay's test code (or the batch's analyte).
    pub code: String,
    pub value: QcValue,
    /// MSH-10 of the message, or the LIMS document.
    pub reference: String,
    pub received_at_ms: u64,
    /// Position in the run's sequence of arrivals: after the last specimen, it is closing QC.
    pub event: u32,
}

/// The part of a run stored apart from its record ([`RunRecord::qc_apart`]): its rules and
/// QC results, which a specimen's message neither reads nor changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunQc {
    pub rules: Vec<QcRule>,
    pub qc: Vec<QcResult>,
}

/// A specimen with results in the run, and the assays it was tested with there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpecimen {
    pub specimen_id: String,
    pub codes: BTreeSet<String>,
}

/// How one rule fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckOutcome {
    Passed,
    Failed,
    /// No result for a rule the run needs (or no rule for an assay it tested).
    Missing,
}

/// One rule of the run, with the results that answered it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QcCheck {
    pub code: String,
    /// The rule in words; for an assay without any rule, why it is missing.
    pub rule: String,
    /// Whether an assay tested in the run needs it (a rule of an untested assay whose control
    /// was run anyway is checked too, but its absence is not missing).
    pub required: bool,
    /// The values received for it (opening and closing), as text.
    pub results: Vec<String>,
    pub outcome: CheckOutcome,
}

/// The run's QC as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QcOutcome {
    Passed,
    Failed,
    Incomplete,
}

impl QcOutcome {
    pub fn key(self) -> &'static str {
        match self {
            QcOutcome::Passed => "passed",
            QcOutcome::Failed => "failed",
            QcOutcome::Incomplete => "incomplete",
        }
    }
}

/// The evaluation made when the run closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QcEvaluation {
    pub outcome: QcOutcome,
    pub checks: Vec<QcCheck>,
    /// QC results no rule names (sample, code): kept and shown, never guessed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmatched: Vec<String>,
}

/// What the certifying scientist (or the automatic acceptance) decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Still collecting: its closing QC has not arrived.
    Open,
    /// Closed and evaluated; waiting for a certifying scientist.
    Pending,
    /// Accepted: an electronic signature (who, when, what it means) bound to the run's content.
    Accepted {
        by: String,
        at_ms: u64,
        /// Accepted automatically because every QC result passed (initial and validity runs).
        auto: bool,
        meaning: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
        /// SHA-256 of the run's content as accepted ([`RunRecord::content_sha256`]).
        content_sha256: String,
    },
    /// Rejected with a reason: its specimens need a retest.
    Rejected {
        by: String,
        at_ms: u64,
        reason: String,
        content_sha256: String,
    },
}

/// Where a run stands, as its specimens see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Open,
    Pending,
    Accepted,
    Rejected,
}

impl RunState {
    pub const ALL: [RunState; 4] = [
        RunState::Open,
        RunState::Pending,
        RunState::Accepted,
        RunState::Rejected,
    ];
    pub fn key(self) -> &'static str {
        match self {
            RunState::Open => "open",
            RunState::Pending => "pending",
            RunState::Accepted => "accepted",
            RunState::Rejected => "rejected",
        }
    }
    pub fn from_key(k: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|s| s.key() == k)
    }
}

/// What a specimen record keeps of each run it has results in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStatus {
    pub state: RunState,
    pub kind: RunKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qc: Option<QcOutcome>,
    /// The certifying scientist who accepted it; `None` for an automatic acceptance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_by: Option<String>,
}

/// What the acceptance of a run means, as recorded with the signature.
pub const MEANING_ACCEPTED: &str = "analytical run and its quality control reviewed and accepted";
/// The signer recorded for an automatic acceptance.
pub const AUTO_ACCEPTED_BY: &str = "automatic acceptance (every QC result passed)";

/// Why a decision on a run was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("the run is still open: its closing QC has not arrived")]
    Open,
    #[error("the run was already {0}")]
    AlreadyDecided(&'static str),
    #[error("the run's QC is {0}: it cannot be accepted (reject it; its specimens are retested)")]
    QcNotPassed(&'static str),
    #[error("a reason is required")]
    NoReason,
}

/// One run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// `<source>:<run id>`, unique in the store.
    pub key: String,
    /// The analyzer's name, or `lims`.
    pub source: String,
    /// The instrument's run id, the batch id, or `B<n>` for a bracketed run.
    pub local_id: String,
    pub kind: RunKind,
    pub delimited_by: Delimiting,
    pub opened_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at_ms: Option<u64>,
    /// Why it closed (its closing QC arrived, the instrument started another run, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_because: Option<String>,
    /// Accepted automatically when every QC result passed (never a run with a confirmation).
    pub auto_accept: bool,
    /// The QC rules of the source's assays, as configured when the run was opened. For a run
    /// whose QC is stored apart (`qc_apart`), empty until loaded ([`RunRecord::set_qc`]).
    pub rules: Vec<QcRule>,
    /// The QC results received, as `rules`.
    pub qc: Vec<QcResult>,
    /// Whether the rules and the QC results are stored apart from the record (one key, written
    /// when the run opens and when QC arrives): a specimen's message reads and writes the
    /// record without them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub qc_apart: bool,
    /// Whether `rules` and `qc` are in memory (never stored).
    #[serde(skip)]
    pub qc_loaded: bool,
    /// Whether `rules` or `qc` changed since the run was read (never stored): the part stored
    /// apart is written again only then.
    #[serde(skip)]
    pub qc_changed: bool,
    /// The run's specimens: all of them for a run stored whole (a LIMS batch, a run written by
    /// an earlier version); for a run whose members are stored apart (`members_apart`), only
    /// once loaded ([`RunRecord::set_members`]): a run's record stays the same size however
    /// many specimens it holds, and a message adds one small membership key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub specimens: Vec<RunSpecimen>,
    /// Whether the members are stored apart from the record (one key each).
    #[serde(default)]
    pub members_apart: bool,
    /// Number of distinct specimens in the run.
    #[serde(default)]
    pub specimen_count: u32,
    /// Every assay tested on a specimen in the run.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub tested: BTreeSet<String>,
    /// Whether `specimens` holds every member (never stored).
    #[serde(skip)]
    pub members_loaded: bool,
    /// Arrivals so far (each message or document is one).
    pub events: u32,
    /// The arrival of the last specimen result (0: none yet).
    pub last_specimen_event: u32,
    /// A confirmation result is in the run: only a named reviewer may accept it.
    pub has_confirmation: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<QcEvaluation>,
    pub decision: Decision,
}

impl RunRecord {
    /// A new, open run.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        source: &str,
        local_id: &str,
        kind: RunKind,
        delimited_by: Delimiting,
        rules: Vec<QcRule>,
        auto_accept: bool,
        now_ms: u64,
    ) -> RunRecord {
        RunRecord {
            key: run_key(source, local_id),
            source: source.to_string(),
            local_id: local_id.to_string(),
            kind,
            delimited_by,
            opened_at_ms: now_ms,
            closed_at_ms: None,
            closed_because: None,
            auto_accept,
            rules,
            qc: Vec::new(),
            // A new run has its rules and (no) QC in memory, to be written.
            qc_apart: true,
            qc_loaded: true,
            qc_changed: true,
            specimens: Vec::new(),
            members_apart: true,
            specimen_count: 0,
            tested: BTreeSet::new(),
            // A new run has all of its (no) members in memory.
            members_loaded: true,
            events: 0,
            last_specimen_event: 0,
            has_confirmation: false,
            evaluation: None,
            decision: Decision::Open,
        }
    }

    pub fn is_open(&self) -> bool {
        self.decision == Decision::Open
    }

    pub fn state(&self) -> RunState {
        match self.decision {
            Decision::Open => RunState::Open,
            Decision::Pending => RunState::Pending,
            Decision::Accepted { .. } => RunState::Accepted,
            Decision::Rejected { .. } => RunState::Rejected,
        }
    }

    /// What the run's specimens keep of it.
    pub fn status(&self) -> RunStatus {
        RunStatus {
            state: self.state(),
            kind: if self.has_confirmation {
                RunKind::Confirmation
            } else {
                self.kind
            },
            qc: self.evaluation.as_ref().map(|e| e.outcome),
            reviewed_by: match &self.decision {
                Decision::Accepted {
                    by, auto: false, ..
                } => Some(by.clone()),
                _ => None,
            },
        }
    }

    /// Whether `specimens` holds every member of the run (always for a run stored whole).
    pub fn has_all_members(&self) -> bool {
        !self.members_apart || self.members_loaded
    }

    /// Puts the run's members, as stored apart, into `specimens` (in key order).
    pub fn set_members(&mut self, members: Vec<RunSpecimen>) {
        if self.members_apart {
            self.specimens = members;
            self.members_loaded = true;
        }
    }

    /// Whether `rules` and `qc` hold the run's QC (always for a run stored whole).
    pub fn has_qc(&self) -> bool {
        !self.qc_apart || self.qc_loaded
    }

    /// Puts the run's QC, as stored apart, into `rules` and `qc`.
    pub fn set_qc(&mut self, part: RunQc) {
        if self.qc_apart && !self.qc_loaded {
            self.rules = part.rules;
            self.qc = part.qc;
            self.qc_loaded = true;
        }
    }

    /// The part stored apart: the rules and the QC results.
    pub fn qc_part(&self) -> RunQc {
        debug_assert!(self.has_qc(), "the QC of a run is written as it was loaded");
        RunQc {
            rules: self.rules.clone(),
            qc: self.qc.clone(),
        }
    }

    /// The record as stored when its members and QC are apart: without them.
    pub fn header(&self) -> RunRecord {
        let mut header = self.clone_without_parts();
        if !self.members_apart {
            header.specimens = self.specimens.clone();
        }
        if !self.qc_apart {
            header.rules = self.rules.clone();
            header.qc = self.qc.clone();
        }
        header
    }

    /// A copy without its members, rules and QC results (the rest as is).
    fn clone_without_parts(&self) -> RunRecord {
        RunRecord {
            key: self.key.clone(),
            source: self.source.clone(),
            local_id: self.local_id.clone(),
            kind: self.kind,
            delimited_by: self.delimited_by,
            opened_at_ms: self.opened_at_ms,
            closed_at_ms: self.closed_at_ms,
            closed_because: self.closed_because.clone(),
            auto_accept: self.auto_accept,
            rules: Vec::new(),
            qc: Vec::new(),
            qc_apart: self.qc_apart,
            qc_loaded: self.qc_loaded,
            qc_changed: self.qc_changed,
            specimens: Vec::new(),
            members_apart: self.members_apart,
            specimen_count: self.specimen_count,
            tested: self.tested.clone(),
            members_loaded: self.members_loaded,
            events: self.events,
            last_specimen_event: self.last_specimen_event,
            has_confirmation: self.has_confirmation,
            evaluation: self.evaluation.clone(),
            decision: self.decision.clone(),
        }
    }

    /// Number of distinct specimens in the run.
    pub fn specimen_count(&self) -> usize {
        (self.specimen_count as usize).max(self.specimens.len())
    }

    /// A specimen's results arrived: `codes` are the assays, `confirmation` whether any is a
    /// confirmation. The run must hold every member ([`RunRecord::has_all_members`]); else use
    /// [`RunRecord::add_member`]. Returns the specimen's membership as it now stands.
    pub fn add_specimen(
        &mut self,
        specimen_id: &str,
        codes: &[String],
        confirmation: bool,
    ) -> RunSpecimen {
        let stored = self
            .specimens
            .iter()
            .position(|s| s.specimen_id == specimen_id);
        let member = self.arrived(
            stored.map(|i| self.specimens[i].clone()),
            specimen_id,
            codes,
            confirmation,
        );
        match stored {
            Some(i) => self.specimens[i] = member.clone(),
            None => self.specimens.push(member.clone()),
        }
        member
    }

    /// A specimen's results arrived in a run whose members are stored apart and not loaded:
    /// `stored` is the specimen's membership as stored (None: new to the run). Returns the
    /// membership to store.
    pub fn add_member(
        &mut self,
        stored: Option<RunSpecimen>,
        specimen_id: &str,
        codes: &[String],
        confirmation: bool,
    ) -> RunSpecimen {
        self.arrived(stored, specimen_id, codes, confirmation)
    }

    fn arrived(
        &mut self,
        stored: Option<RunSpecimen>,
        specimen_id: &str,
        codes: &[String],
        confirmation: bool,
    ) -> RunSpecimen {
        self.events += 1;
        self.last_specimen_event = self.events;
        self.has_confirmation |= confirmation;
        if stored.is_none() {
            // A run written before counts were kept starts from its inline members.
            self.specimen_count = (self.specimen_count.max(self.specimens.len() as u32)) + 1;
        }
        self.tested.extend(codes.iter().cloned());
        let mut member = stored.unwrap_or_else(|| RunSpecimen {
            specimen_id: specimen_id.to_string(),
            codes: BTreeSet::new(),
        });
        member.codes.extend(codes.iter().cloned());
        member
    }

    /// QC results arrived (one message or document).
    pub fn add_qc(&mut self, results: Vec<QcResult>) {
        debug_assert!(self.has_qc(), "QC is added to a run whose QC is loaded");
        self.qc_changed = true;
        self.events += 1;
        let event = self.events;
        self.qc.extend(results.into_iter().map(|mut r| {
            r.event = event;
            r
        }));
    }

    /// Whether QC arrived since the last specimen (the run is in its closing QC).
    pub fn in_closing_qc(&self) -> bool {
        debug_assert!(self.has_qc());
        self.last_specimen_event > 0 && self.qc.iter().any(|q| q.event > self.last_specimen_event)
    }

    /// The assays tested on a specimen in the run.
    pub fn tested_codes(&self) -> BTreeSet<&str> {
        self.specimens
            .iter()
            .flat_map(|s| s.codes.iter().map(String::as_str))
            .chain(self.tested.iter().map(String::as_str))
            .collect()
    }

    /// Every rule an assay tested in the run needs has a result after the last specimen.
    pub fn closing_qc_complete(&self) -> bool {
        debug_assert!(
            self.has_qc(),
            "closing QC is judged with the run's QC loaded"
        );
        if self.specimen_count() == 0 {
            return false;
        }
        let tested = self.tested_codes();
        tested.iter().all(|code| {
            let rules: Vec<&QcRule> = self.rules.iter().filter(|r| r.code == *code).collect();
            !rules.is_empty()
                && rules.iter().all(|rule| {
                    self.qc.iter().any(|q| {
                        q.event > self.last_specimen_event
                            && q.code == rule.code
                            && q.sample == rule.sample
                    })
                })
        })
    }

    /// Evaluates the QC against the rules (pure; see the module notes).
    pub fn evaluate(&self) -> QcEvaluation {
        debug_assert!(self.has_qc(), "a run is evaluated with its QC loaded");
        let tested = self.tested_codes();
        let mut checks = Vec::new();
        for code in &tested {
            if !self.rules.iter().any(|r| r.code == *code) {
                checks.push(QcCheck {
                    code: code.to_string(),
                    rule: format!("{code}: no QC rule is configured for this assay"),
                    required: true,
                    results: Vec::new(),
                    outcome: CheckOutcome::Missing,
                });
            }
        }
        for rule in &self.rules {
            let required = tested.contains(rule.code.as_str());
            let results: Vec<&QcResult> = self
                .qc
                .iter()
                .filter(|q| q.code == rule.code && q.sample == rule.sample)
                .collect();
            if !required && results.is_empty() {
                continue;
            }
            let closing = results
                .iter()
                .any(|q| q.event > self.last_specimen_event || self.last_specimen_event == 0);
            let outcome = if results.iter().any(|q| !rule.met_by(&q.value)) {
                CheckOutcome::Failed
            } else if required && !closing {
                CheckOutcome::Missing
            } else {
                CheckOutcome::Passed
            };
            checks.push(QcCheck {
                code: rule.code.clone(),
                rule: rule.words(),
                required,
                results: results.iter().map(|q| value_text(&q.value)).collect(),
                outcome,
            });
        }
        let unmatched: Vec<String> = self
            .qc
            .iter()
            .filter(|q| {
                !self
                    .rules
                    .iter()
                    .any(|r| r.code == q.code && r.sample == q.sample)
            })
            .map(|q| format!("{} {} {}", q.code, q.role.key(), q.sample))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let outcome = if checks.iter().any(|c| c.outcome == CheckOutcome::Failed) {
            QcOutcome::Failed
        } else if checks.iter().any(|c| c.outcome == CheckOutcome::Missing) || tested.is_empty() {
            QcOutcome::Incomplete
        } else {
            QcOutcome::Passed
        };
        QcEvaluation {
            outcome,
            checks,
            unmatched,
        }
    }

    /// Closes the run: evaluates its QC and, when every result passed and the run may be
    /// accepted automatically (no confirmation in it), accepts it; else it waits for a
    /// certifying scientist. A closed run is not closed again.
    pub fn close(&mut self, because: &str, now_ms: u64) {
        if !self.is_open() {
            return;
        }
        let evaluation = self.evaluate();
        self.closed_at_ms = Some(now_ms);
        self.closed_because = Some(because.to_string());
        let passed = evaluation.outcome == QcOutcome::Passed;
        self.evaluation = Some(evaluation);
        self.decision = if passed
            && self.auto_accept
            && self.kind != RunKind::Confirmation
            && !self.has_confirmation
        {
            Decision::Accepted {
                by: AUTO_ACCEPTED_BY.to_string(),
                at_ms: now_ms,
                auto: true,
                meaning: MEANING_ACCEPTED.to_string(),
                reason: None,
                content_sha256: self.content_sha256(),
            }
        } else {
            Decision::Pending
        };
    }

    /// A certifying scientist accepts the run (its QC must have passed): an electronic
    /// signature bound to the run's content.
    pub fn accept(&mut self, by: &str, reason: Option<&str>, now_ms: u64) -> Result<(), RunError> {
        match &self.decision {
            Decision::Open => return Err(RunError::Open),
            Decision::Accepted { .. } => return Err(RunError::AlreadyDecided("accepted")),
            Decision::Rejected { .. } => return Err(RunError::AlreadyDecided("rejected")),
            Decision::Pending => {}
        }
        let outcome = self
            .evaluation
            .as_ref()
            .map(|e| e.outcome)
            .unwrap_or(QcOutcome::Incomplete);
        if outcome != QcOutcome::Passed {
            return Err(RunError::QcNotPassed(outcome.key()));
        }
        self.decision = Decision::Accepted {
            by: by.to_string(),
            at_ms: now_ms,
            auto: false,
            meaning: MEANING_ACCEPTED.to_string(),
            reason: reason.map(str::to_string).filter(|r| !r.trim().is_empty()),
            content_sha256: self.content_sha256(),
        };
        Ok(())
    }

    /// A certifying scientist rejects the run (open or pending) with a reason; an open run is
    /// closed and evaluated first, so the record shows what its QC was.
    pub fn reject(&mut self, by: &str, reason: &str, now_ms: u64) -> Result<(), RunError> {
        if reason.trim().is_empty() {
            return Err(RunError::NoReason);
        }
        match &self.decision {
            Decision::Accepted { .. } => return Err(RunError::AlreadyDecided("accepted")),
            Decision::Rejected { .. } => return Err(RunError::AlreadyDecided("rejected")),
            Decision::Open => {
                self.evaluation = Some(self.evaluate());
                self.closed_at_ms = Some(now_ms);
                self.closed_because = Some("rejected while open".to_string());
            }
            Decision::Pending => {}
        }
        self.decision = Decision::Rejected {
            by: by.to_string(),
            at_ms: now_ms,
            reason: reason.to_string(),
            content_sha256: self.content_sha256(),
        };
        Ok(())
    }

    /// SHA-256 (hex) of what a decision is about: the run's key, its QC results, its specimens
    /// and the rules it was judged by, in a fixed JSON form.
    /// Every member must be in `specimens` ([`RunRecord::has_all_members`]); members stored
    /// apart are hashed in specimen ID order, however they arrived.
    pub fn content_sha256(&self) -> String {
        use sha2::{Digest, Sha256};
        debug_assert!(
            self.has_all_members() && self.has_qc(),
            "the content of a run is hashed with all of its members and its QC"
        );
        let mut specimens: Vec<&RunSpecimen> = self.specimens.iter().collect();
        if self.members_apart {
            specimens.sort_by(|a, b| a.specimen_id.cmp(&b.specimen_id));
        }
        let content = serde_json::json!({
            "key": self.key,
            "qc": self.qc,
            "specimens": specimens,
            "rules": self.rules,
            "evaluation": self.evaluation,
        });
        let bytes = serde_json::to_vec(&content).unwrap_or_default();
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// The store key of a run: `<source>:<run id>`.
pub fn run_key(source: &str, local_id: &str) -> String {
    format!("{source}:{local_id}")
}

fn value_text(v: &QcValue) -> String {
    match v {
        QcValue::Number(d) => d.normalize().to_string(),
        QcValue::Identified(true) => "identified".into(),
        QcValue::Identified(false) => "not identified".into(),
        QcValue::NotObtained => "not obtained".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn rule(code: &str, sample: &str, expect: Expectation, value: Option<&str>) -> QcRule {
        QcRule {
            code: code.into(),
            sample: sample.into(),
            level: sample.to_lowercase(),
            role: SampleRole::Control,
            expect,
            value: value.map(d),
            tolerance_percent: (expect == Expectation::Within).then(|| d("20")),
        }
    }

    fn screen_rules() -> Vec<QcRule> {
        vec![
            rule("COC300", "QC-NEG", Expectation::Below, Some("300")),
            rule("COC300", "QC-LOW", Expectation::Below, Some("300")),
            rule("COC300", "QC-HIGH", Expectation::AtLeast, Some("300")),
        ]
    }

    fn qc(code: &str, sample: &str, v: QcValue) -> QcResult {
        QcResult {
            sample: sample.into(),
            role: SampleRole::Control,
            code: code.into(),
            value: v,
            reference: "m".into(),
            received_at_ms: 1,
            event: 0,
        }
    }

    fn full_set(high: &str) -> Vec<QcResult> {
        vec![
            qc("COC300", "QC-NEG", QcValue::Number(d("0"))),
            qc("COC300", "QC-LOW", QcValue::Number(d("225"))),
            qc("COC300", "QC-HIGH", QcValue::Number(d(high))),
        ]
    }

    fn run() -> RunRecord {
        RunRecord::open(
            "ia-1",
            "B1",
            RunKind::Initial,
            Delimiting::Bracketing,
            screen_rules(),
            true,
            0,
        )
    }

    /// A run's record as stored leaves out what is stored apart (its QC, its members), and a
    /// header read back with its QC set again is the run as it was.
    #[test]
    fn the_stored_header_leaves_out_the_parts_stored_apart() {
        let mut r = run();
        r.add_qc(full_set("375"));
        r.add_specimen("S1", &["COC300".into()], false);
        let header = r.header();
        assert!(header.rules.is_empty() && header.qc.is_empty() && header.specimens.is_empty());
        assert_eq!(header.specimen_count, 1);
        assert_eq!(header.events, r.events);
        let stored: RunRecord =
            serde_json::from_slice(&serde_json::to_vec(&header).unwrap()).unwrap();
        assert!(
            stored.qc_apart && !stored.has_qc(),
            "read back without its QC"
        );
        assert!(!stored.qc_changed, "nothing to write back until QC arrives");
        let mut back = stored.clone();
        back.set_qc(r.qc_part());
        assert!(back.has_qc());
        assert_eq!(
            (back.rules.clone(), back.qc.clone()),
            (r.rules.clone(), r.qc.clone())
        );
        back.set_qc(RunQc::default());
        assert_eq!(back.qc, r.qc, "a loaded run's QC is not replaced");

        // A run stored whole (a LIMS batch, a run written by an earlier build) keeps them.
        let mut whole = run();
        whole.qc_apart = false;
        whole.members_apart = false;
        whole.add_qc(full_set("375"));
        whole.add_specimen("S1", &["COC300".into()], false);
        let h = whole.header();
        assert_eq!(
            (h.rules.len(), h.qc.len(), h.specimens.len()),
            (whole.rules.len(), 3, 1)
        );
        let json = serde_json::to_value(&h).unwrap();
        assert!(
            json.get("qc_apart").is_none(),
            "stored as an earlier build wrote it"
        );
    }

    #[test]
    fn a_passing_bracketed_run_is_accepted_automatically() {
        let mut r = run();
        r.add_qc(full_set("375"));
        assert!(!r.closing_qc_complete(), "no specimen yet");
        r.add_specimen("S1", &["COC300".into()], false);
        assert!(!r.closing_qc_complete());
        r.add_qc(full_set("380")[..2].to_vec());
        assert!(
            !r.closing_qc_complete(),
            "the high control is still missing"
        );
        r.add_qc(full_set("380")[2..].to_vec());
        assert!(r.closing_qc_complete());
        r.close("closing QC", 5);
        assert_eq!(r.state(), RunState::Accepted);
        assert_eq!(r.evaluation.as_ref().unwrap().outcome, QcOutcome::Passed);
        assert_eq!(r.status().reviewed_by, None, "automatic");
    }

    #[test]
    fn a_failed_control_keeps_the_run_pending_and_it_cannot_be_accepted() {
        let mut r = run();
        r.add_specimen("S1", &["COC300".into()], false);
        r.add_qc(full_set("299.9"));
        r.close("closing QC", 5);
        assert_eq!(r.state(), RunState::Pending);
        let e = r.evaluation.as_ref().unwrap();
        assert_eq!(e.outcome, QcOutcome::Failed);
        assert!(
            e.checks
                .iter()
                .any(|c| c.outcome == CheckOutcome::Failed && c.rule.contains("QC-HIGH"))
        );
        assert_eq!(
            r.accept("Dr. A", None, 6),
            Err(RunError::QcNotPassed("failed"))
        );
        assert_eq!(r.reject("Dr. A", " ", 6), Err(RunError::NoReason));
        r.reject("Dr. A", "high control low", 6).unwrap();
        assert_eq!(r.state(), RunState::Rejected);
        assert_eq!(
            r.accept("Dr. A", None, 7),
            Err(RunError::AlreadyDecided("rejected"))
        );
    }

    #[test]
    fn an_assay_without_rules_or_closing_qc_is_incomplete() {
        let mut r = run();
        r.add_qc(full_set("375"));
        r.add_specimen("S1", &["COC300".into(), "THC50".into()], false);
        r.add_qc(full_set("375"));
        assert!(!r.closing_qc_complete(), "THC50 has no rule");
        r.close("next run", 5);
        assert_eq!(
            r.evaluation.as_ref().unwrap().outcome,
            QcOutcome::Incomplete
        );
        assert_eq!(r.state(), RunState::Pending);
        // Opening QC alone does not close a run's specimens.
        let mut r = run();
        r.add_qc(full_set("375"));
        r.add_specimen("S1", &["COC300".into()], false);
        r.close("instrument moved on", 5);
        assert_eq!(
            r.evaluation.as_ref().unwrap().outcome,
            QcOutcome::Incomplete
        );
    }

    #[test]
    fn a_confirmation_is_never_accepted_automatically() {
        let rules = vec![
            rule("BZEC", "CAL-BZE", Expectation::Within, Some("100")),
            rule("BZEC", "QC-NEG", Expectation::Below, Some("100")),
        ];
        let mut r = RunRecord::open(
            "gc-1",
            "R7",
            RunKind::Confirmation,
            Delimiting::RunId,
            rules,
            true,
            0,
        );
        r.add_specimen("S1", &["BZEC".into()], true);
        r.add_qc(vec![
            qc("BZEC", "CAL-BZE", QcValue::Number(d("120"))),
            qc("BZEC", "QC-NEG", QcValue::Number(d("0"))),
        ]);
        r.close("closing QC", 5);
        assert_eq!(r.evaluation.as_ref().unwrap().outcome, QcOutcome::Passed);
        assert_eq!(r.state(), RunState::Pending, "needs a named reviewer");
        r.accept("Dr. A", Some("ion ratios checked"), 6).unwrap();
        let s = r.status();
        assert_eq!(
            (s.state, s.kind, s.reviewed_by.as_deref()),
            (RunState::Accepted, RunKind::Confirmation, Some("Dr. A"))
        );
    }

    #[test]
    fn tolerance_edges() {
        let r = rule("BZEC", "CAL", Expectation::Within, Some("100"));
        for (v, ok) in [
            ("80", true),
            ("79.99", false),
            ("120", true),
            ("120.01", false),
        ] {
            assert_eq!(r.met_by(&QcValue::Number(d(v))), ok, "{v}");
        }
        let below = rule("COC300", "QC-LOW", Expectation::Below, Some("300"));
        assert!(below.met_by(&QcValue::Number(d("299.99"))));
        assert!(!below.met_by(&QcValue::Number(d("300"))));
        let above = rule("COC300", "QC-HIGH", Expectation::AtLeast, Some("300"));
        assert!(above.met_by(&QcValue::Number(d("300"))));
        assert!(!above.met_by(&QcValue::NotObtained));
        let neg = rule("GLUT", "QC-NEG", Expectation::NotIdentified, None);
        assert!(neg.met_by(&QcValue::Identified(false)));
        assert!(!neg.met_by(&QcValue::Number(d("0"))));
    }

    #[test]
    fn rule_shapes_are_checked() {
        let mut r = rule("COC300", "QC NEG", Expectation::Within, None);
        r.tolerance_percent = None;
        let keys: Vec<&str> = r.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["sample", "value", "tolerance_percent"]);
        let mut r = rule("GLUT", "QC-NEG", Expectation::Identified, Some("1"));
        r.tolerance_percent = Some(d("5"));
        let keys: Vec<&str> = r.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["value", "tolerance_percent"]);
        assert!(screen_rules().iter().all(|r| r.problems().is_empty()));
    }

    #[test]
    fn the_content_hash_follows_the_content() {
        let mut a = run();
        a.add_specimen("S1", &["COC300".into()], false);
        let mut b = a.clone();
        assert_eq!(a.content_sha256(), b.content_sha256());
        b.add_qc(full_set("375"));
        assert_ne!(a.content_sha256(), b.content_sha256());
        a.add_qc(full_set("375"));
        assert_eq!(a.content_sha256(), b.content_sha256());
    }
}
