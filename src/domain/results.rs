//! A specimen's result history and which of its results count. Pure.
//!
//! Every result of every run is kept, with its run, analyzer, aliquot, tier, message control id,
//! time and status; nothing is deleted and **nothing is chosen by recency**. Results are keyed
//! by (test, tier, aliquot). A result counts toward the verdict unless:
//! - it is for bottle B (the split is not tested here), or its status is `X` (not done: the
//!   measure is still missing and the specimen waits);
//! - its source corrected it: a later `C` result of the same source (analyzer, or the LIMS) for
//!   the same key replaces it (before release; nothing is accepted after release);
//! - a certifying scientist marked it not reportable, with a reason ([`ResultMark`]);
//! - its run is open, pending or rejected ([`RunStatus`]); a confirmation result counts only
//!   when a named reviewer accepted its run **and** the result carries the instrument's or the
//!   LIMS's acceptability flag (ion ratios, retention time, internal standard are judged per
//!   result).
//!
//! Results recorded before runs were tracked have no run and count as they did.
//!
//! Two counting results of one test and tier that disagree (an adulterant identified in one
//! accepted run and not in another; two values that differ) are a [`Conflict`]: the specimen is
//! held for the certifying scientist, who marks the one that must not be reported. Where a test
//! has counting results of both tiers, the confirmatory one is the measure the rules read.

use crate::domain::rules::{self, Profile};
use crate::domain::runs::{RunKind, RunState, RunStatus};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What a result measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultKind {
    /// An initial (screening) test of a drug class, ng/mL.
    Initial,
    /// A confirmation test of an analyte, ng/mL.
    Confirmation,
    /// A validity measure (creatinine, specific gravity, pH, nitrite).
    Validity,
    /// An adulterant test (target names the substance; `identified` says whether it was found).
    Adulterant,
    /// An interference check the mapping names (`identified`: the interference was found).
    Interference,
}

impl ResultKind {
    pub fn key(self) -> &'static str {
        match self {
            ResultKind::Initial => "initial",
            ResultKind::Confirmation => "confirmation",
            ResultKind::Validity => "validity",
            ResultKind::Adulterant => "adulterant",
            ResultKind::Interference => "interference",
        }
    }

    fn is_qualitative(self) -> bool {
        matches!(self, ResultKind::Adulterant | ResultKind::Interference)
    }
}

/// Which physical bottle a result was measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Bottle {
    #[default]
    A,
    B,
}

/// Where a result came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Source {
    /// An HL7 message from an analyzer: its name, MSH-10 and the OBX set id.
    Analyzer {
        analyzer: String,
        control_id: String,
        observation: String,
    },
    /// A LIMS document (e.g. a confirmation batch file).
    Lims { document: String },
}

impl Source {
    /// Who may correct the result: the analyzer, or the LIMS.
    pub fn origin(&self) -> &str {
        match self {
            Source::Analyzer { analyzer, .. } => analyzer,
            Source::Lims { .. } => "lims",
        }
    }

    /// MSH-10, or the LIMS document.
    pub fn reference(&self) -> &str {
        match self {
            Source::Analyzer { control_id, .. } => control_id,
            Source::Lims { document } => document,
        }
    }
}

/// OBX-11 of a kept result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    /// `F`.
    #[default]
    Final,
    /// `C`: corrects the source's earlier result for the same key.
    Corrected,
    /// `X`: the test was not done (could not be obtained); the measure is still missing.
    NotDone,
}

impl ResultStatus {
    pub fn key(self) -> &'static str {
        match self {
            ResultStatus::Final => "final",
            ResultStatus::Corrected => "corrected",
            ResultStatus::NotDone => "not_done",
        }
    }
}

/// Initial or confirmatory test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Initial,
    Confirmatory,
}

impl Tier {
    pub fn key(self) -> &'static str {
        match self {
            Tier::Initial => "initial",
            Tier::Confirmatory => "confirmatory",
        }
    }
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_final(s: &ResultStatus) -> bool {
    *s == ResultStatus::Final
}

/// One result, as stored. Never changed once stored: marks, run decisions and corrections are
/// recorded beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultEntry {
    pub kind: ResultKind,
    /// Class key, analyte key, measure key or substance, by kind.
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Decimal>,
    #[serde(default)]
    pub unit: String,
    #[serde(default)]
    pub bottle: Bottle,
    pub source: Source,
    pub received_at_ms: u64,
    /// OBX-11 (F, C, X); final when absent.
    #[serde(default, skip_serializing_if = "is_final")]
    pub status: ResultStatus,
    /// Adulterant and interference results: whether the substance was identified (results
    /// stored before "not identified" was kept are identified ones).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub identified: bool,
    /// Initial or confirmatory; by kind when absent (confirmation results are confirmatory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// The aliquot tested, when the instrument names it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aliquot: String,
    /// The run (`<source>:<run id>`) the result was measured in; `None` for results recorded
    /// before runs were tracked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// The assay's test code (OBX-3.1), when it came from an analyzer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The instrument's or the LIMS's per-result acceptability (confirmation: ion ratios,
    /// retention time, internal standard); `None` when not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptable: Option<bool>,
}

impl Default for ResultEntry {
    fn default() -> Self {
        ResultEntry {
            kind: ResultKind::Initial,
            target: String::new(),
            value: None,
            unit: String::new(),
            bottle: Bottle::A,
            source: Source::Lims {
                document: String::new(),
            },
            received_at_ms: 0,
            status: ResultStatus::Final,
            identified: true,
            tier: None,
            aliquot: String::new(),
            run: None,
            code: None,
            acceptable: None,
        }
    }
}

impl ResultEntry {
    /// The tier, by kind when the result does not say.
    pub fn tier(&self) -> Tier {
        self.tier.unwrap_or(match self.kind {
            ResultKind::Confirmation => Tier::Confirmatory,
            _ => Tier::Initial,
        })
    }

    /// The engine's name for the target in `profile`'s terms: an initial result's mapping
    /// target becomes the class it means there (`measured_as`).
    pub fn engine_target<'a>(&'a self, profile: Option<&'a Profile>) -> &'a str {
        match (self.kind, profile) {
            (ResultKind::Initial, Some(p)) => p
                .class_for_target(&self.target)
                .map_or(self.target.as_str(), |c| c.key.as_str()),
            _ => self.target.as_str(),
        }
    }

    /// The value as text for people (`not done`, `identified`, a number).
    pub fn value_text(&self) -> String {
        if self.status == ResultStatus::NotDone {
            return "not done".into();
        }
        if self.kind.is_qualitative() {
            let word = if self.identified {
                "identified"
            } else {
                "not identified"
            };
            return match self.value {
                Some(v) => format!("{word} ({})", v.normalize()),
                None => word.into(),
            };
        }
        self.value
            .map(|v| v.normalize().to_string())
            .unwrap_or_default()
    }

    /// Whether this result names `test` (its target, its code, or `kind:target`).
    pub fn is_test(&self, test: &str) -> bool {
        test == self.target
            || self.code.as_deref() == Some(test)
            || test == format!("{}:{}", self.kind.key(), self.target)
    }
}

/// Where a record's results are stored: in `batches` keys of their own (appended per arrival)
/// holding `count` results. A record without it (written before results had keys) carries its
/// results inline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResultKeys {
    pub batches: u32,
    pub count: u32,
}

/// One batch of a specimen's results as stored under its own key: the results of one arrival,
/// the position of the first in the history, and the value's version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultBatch {
    /// The value's layout version (1).
    pub version: u32,
    /// The position of `results[0]` in the specimen's history.
    pub first: u32,
    pub results: Vec<ResultEntry>,
}

/// The layout version of [`ResultBatch`] this build writes.
pub const RESULT_BATCH_VERSION: u32 = 1;

/// A certifying scientist's mark on one result: not reportable, why, by whom (audited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultMark {
    /// The result's position in the history (0-based).
    pub result: usize,
    pub reason: String,
    pub by: String,
    pub at_ms: u64,
}

/// A retest the specimen waits for: the tests, why, who asked. Satisfied when every named test
/// has a counting result received after it was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retest {
    /// Test names (targets or test codes); empty: any new counting result.
    pub tests: Vec<String>,
    pub reason: String,
    pub by: String,
    pub at_ms: u64,
    /// The rejected run that asked for it, if a run did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
}

/// Why a result does not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "because", rename_all = "snake_case")]
pub enum NotCounting {
    /// Measured on bottle B.
    BottleB,
    /// OBX-11 `X`.
    NotDone,
    /// Corrected by a later result of its source (the position of the correction).
    Corrected {
        by: usize,
    },
    /// Marked by a certifying scientist.
    NotReportable {
        reason: String,
        by: String,
    },
    /// Its run is still waiting for its closing QC, or for a certifying scientist.
    RunOpen {
        run: String,
    },
    RunPending {
        run: String,
    },
    RunRejected {
        run: String,
    },
    /// Its run is not known to the record (never expected).
    RunUnknown {
        run: String,
    },
    /// A confirmation result of a run no named reviewer accepted.
    NotReviewed {
        run: String,
    },
    /// A confirmation result without the instrument's or LIMS's acceptability flag.
    NotAcceptable,
}

impl NotCounting {
    pub fn words(&self) -> String {
        match self {
            NotCounting::BottleB => "measured on bottle B".into(),
            NotCounting::NotDone => "test not done (OBX-11 X)".into(),
            NotCounting::Corrected { by } => format!("corrected by result #{by}"),
            NotCounting::NotReportable { reason, by } => {
                format!("marked not reportable by {by}: {reason}")
            }
            NotCounting::RunOpen { run } => format!("run {run} waits for its closing QC"),
            NotCounting::RunPending { run } => {
                format!("run {run} waits for a certifying scientist's acceptance")
            }
            NotCounting::RunRejected { run } => format!("run {run} was rejected"),
            NotCounting::RunUnknown { run } => format!("run {run} is not known"),
            NotCounting::NotReviewed { run } => {
                format!("confirmation in run {run}, which no named reviewer accepted")
            }
            NotCounting::NotAcceptable => {
                "confirmation without the instrument's acceptability flag".into()
            }
        }
    }
}

/// One result as the certifying scientist sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResultView {
    /// Position in the history.
    pub result: usize,
    pub kind: ResultKind,
    pub target: String,
    pub tier: Tier,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub aliquot: String,
    pub value: String,
    pub unit: String,
    pub status: ResultStatus,
    pub source: String,
    pub reference: String,
    pub received_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_state: Option<RunState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_qc: Option<crate::domain::runs::QcOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acceptable: Option<bool>,
    pub counts: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_not: Option<String>,
}

/// Counting results of one test and tier that disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    pub kind: ResultKind,
    pub target: String,
    pub tier: Tier,
    /// The disagreeing results (positions) with their values.
    pub results: Vec<(usize, String)>,
}

impl Conflict {
    pub fn words(&self) -> String {
        let shown: Vec<String> = self
            .results
            .iter()
            .map(|(i, v)| format!("#{i} {v}"))
            .collect();
        format!(
            "{} {} ({} test): counting results disagree ({}); a certifying scientist marks the one not to report",
            self.kind.key(),
            self.target,
            self.tier.key(),
            shown.join(", ")
        )
    }
}

/// What the history says: every result with whether it counts, the disagreements, and the one
/// result per engine slot the rules read.
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    pub views: Vec<ResultView>,
    pub conflicts: Vec<Conflict>,
    /// (kind, engine target) → the result the rules read (its position).
    pub chosen: BTreeMap<(ResultKind, String), usize>,
}

/// Why result `i` of `results` does not count, if it does not.
pub fn not_counting(
    i: usize,
    results: &[ResultEntry],
    runs: &BTreeMap<String, RunStatus>,
    marks: &[ResultMark],
) -> Option<NotCounting> {
    let r = &results[i];
    if r.bottle == Bottle::B {
        return Some(NotCounting::BottleB);
    }
    if r.status == ResultStatus::NotDone {
        return Some(NotCounting::NotDone);
    }
    let same_key = |o: &ResultEntry| {
        o.kind == r.kind
            && o.target == r.target
            && o.tier() == r.tier()
            && o.aliquot == r.aliquot
            && o.source.origin() == r.source.origin()
    };
    if let Some(j) = results
        .iter()
        .enumerate()
        .skip(i + 1)
        .find(|(_, o)| o.status == ResultStatus::Corrected && same_key(o))
        .map(|(j, _)| j)
    {
        return Some(NotCounting::Corrected { by: j });
    }
    if let Some(m) = marks.iter().find(|m| m.result == i) {
        return Some(NotCounting::NotReportable {
            reason: m.reason.clone(),
            by: m.by.clone(),
        });
    }
    let Some(run) = &r.run else {
        return None;
    };
    let Some(status) = runs.get(run) else {
        return Some(NotCounting::RunUnknown { run: run.clone() });
    };
    match status.state {
        RunState::Open => return Some(NotCounting::RunOpen { run: run.clone() }),
        RunState::Pending => return Some(NotCounting::RunPending { run: run.clone() }),
        RunState::Rejected => return Some(NotCounting::RunRejected { run: run.clone() }),
        RunState::Accepted => {}
    }
    if r.kind == ResultKind::Confirmation || status.kind == RunKind::Confirmation {
        if status.reviewed_by.is_none() {
            return Some(NotCounting::NotReviewed { run: run.clone() });
        }
        if r.kind == ResultKind::Confirmation && r.acceptable != Some(true) {
            return Some(NotCounting::NotAcceptable);
        }
    }
    None
}

/// The history under `profile` (for the engine's names of initial targets).
pub fn analyze(
    results: &[ResultEntry],
    runs: &BTreeMap<String, RunStatus>,
    marks: &[ResultMark],
    profile: Option<&Profile>,
) -> Analysis {
    let mut views = Vec::with_capacity(results.len());
    // (kind, engine target) → tier → counting positions
    let mut slots: BTreeMap<(ResultKind, String), BTreeMap<Tier, Vec<usize>>> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        let why = not_counting(i, results, runs, marks);
        let status = r.run.as_ref().and_then(|k| runs.get(k));
        if why.is_none() {
            slots
                .entry((r.kind, r.engine_target(profile).to_string()))
                .or_default()
                .entry(r.tier())
                .or_default()
                .push(i);
        }
        views.push(ResultView {
            result: i,
            kind: r.kind,
            target: r.target.clone(),
            tier: r.tier(),
            aliquot: r.aliquot.clone(),
            value: r.value_text(),
            unit: r.unit.clone(),
            status: r.status,
            source: r.source.origin().to_string(),
            reference: r.source.reference().to_string(),
            received_at_ms: r.received_at_ms,
            run: r.run.clone(),
            run_state: status.map(|s| s.state),
            run_qc: status.and_then(|s| s.qc),
            acceptable: r.acceptable,
            counts: why.is_none(),
            why_not: why.map(|w| w.words()),
        });
    }
    let mut conflicts = Vec::new();
    let mut chosen = BTreeMap::new();
    for ((kind, target), tiers) in slots {
        let mut disagreeing = Vec::new();
        for (tier, positions) in &tiers {
            let first = &results[positions[0]];
            let disagree = positions.iter().any(|&p| !agree(first, &results[p]));
            if disagree {
                disagreeing.push(*tier);
                conflicts.push(Conflict {
                    kind,
                    target: target.clone(),
                    tier: *tier,
                    results: positions
                        .iter()
                        .map(|&p| (p, results[p].value_text()))
                        .collect(),
                });
            }
        }
        // The confirmatory test is the measure the rules read; the initial one otherwise. A
        // tier whose results disagree gives the rules nothing until the conflict is resolved.
        let pick = [Tier::Confirmatory, Tier::Initial]
            .into_iter()
            .find(|t| tiers.contains_key(t));
        if let Some(t) = pick
            && !disagreeing.contains(&t)
        {
            chosen.insert((kind, target), tiers[&t][0]);
        }
    }
    Analysis {
        views,
        conflicts,
        chosen,
    }
}

/// Two counting results of one key say the same thing.
fn agree(a: &ResultEntry, b: &ResultEntry) -> bool {
    if a.kind.is_qualitative() {
        a.identified == b.identified
    } else {
        a.value.map(|v| v.normalize()) == b.value.map(|v| v.normalize())
    }
}

impl Analysis {
    /// Fills the engine's test results from the chosen results (accession and the rest are
    /// the caller's).
    pub fn fill(&self, results: &[ResultEntry], s: &mut rules::Specimen) {
        for ((kind, target), &i) in &self.chosen {
            let r = &results[i];
            match (kind, r.value) {
                (ResultKind::Initial, Some(v)) => {
                    s.initial.insert(target.clone(), v);
                }
                (ResultKind::Confirmation, Some(v)) => {
                    s.confirmation.insert(target.clone(), v);
                }
                (ResultKind::Validity, Some(v)) => match target.as_str() {
                    "creatinine" => s.validity.creatinine = Some(v),
                    "specific_gravity" => s.validity.specific_gravity = Some(v),
                    "ph" => s.validity.ph = Some(v),
                    "nitrite" => s.validity.nitrite = Some(v),
                    _ => {}
                },
                (ResultKind::Adulterant, _) if r.identified => {
                    s.validity.adulterants.push(target.clone())
                }
                (ResultKind::Interference, _) if r.identified => s.validity.interference = true,
                _ => {}
            }
        }
    }

    /// The retests still waited for: those whose tests do not all have a counting result
    /// received after they were asked for.
    pub fn open_retests<'a>(
        &self,
        results: &[ResultEntry],
        retests: &'a [Retest],
    ) -> Vec<&'a Retest> {
        retests
            .iter()
            .filter(|t| {
                let newer = |test: Option<&str>| {
                    self.views.iter().any(|v| {
                        v.counts
                            && results[v.result].received_at_ms > t.at_ms
                            && test.is_none_or(|n| results[v.result].is_test(n))
                    })
                };
                if t.tests.is_empty() {
                    !newer(None)
                } else {
                    !t.tests.iter().all(|n| newer(Some(n)))
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::runs::{QcOutcome, RunKind};
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn entry(
        kind: ResultKind,
        target: &str,
        value: Option<&str>,
        run: &str,
        at: u64,
    ) -> ResultEntry {
        ResultEntry {
            kind,
            target: target.into(),
            value: value.map(d),
            source: Source::Analyzer {
                analyzer: "chem".into(),
                control_id: format!("m{at}"),
                observation: "1".into(),
            },
            received_at_ms: at,
            run: Some(run.into()),
            ..ResultEntry::default()
        }
    }

    fn accepted(kind: RunKind, by: Option<&str>) -> RunStatus {
        RunStatus {
            state: RunState::Accepted,
            kind,
            qc: Some(QcOutcome::Passed),
            reviewed_by: by.map(str::to_string),
        }
    }

    fn runs(list: &[(&str, RunStatus)]) -> BTreeMap<String, RunStatus> {
        list.iter()
            .map(|(k, s)| (k.to_string(), s.clone()))
            .collect()
    }

    fn engine(results: &[ResultEntry], runs: &BTreeMap<String, RunStatus>) -> rules::Specimen {
        let a = analyze(results, runs, &[], None);
        let mut s = rules::Specimen::default();
        a.fill(results, &mut s);
        s
    }

    /// Creatinine X (not done), then 85 in a rerun: 85 is the measure, nothing is interference.
    #[test]
    fn not_done_then_a_rerun() {
        let mut x = entry(ResultKind::Validity, "creatinine", None, "chem:R1", 1);
        x.status = ResultStatus::NotDone;
        let rerun = entry(ResultKind::Validity, "creatinine", Some("85"), "chem:R2", 2);
        let r = runs(&[
            ("chem:R1", accepted(RunKind::Validity, None)),
            ("chem:R2", accepted(RunKind::Validity, None)),
        ]);
        let s = engine(&[x.clone()], &r);
        assert_eq!(
            s.validity.creatinine, None,
            "still missing: the specimen waits"
        );
        assert!(!s.validity.interference);
        let s = engine(&[x, rerun], &r);
        assert_eq!(s.validity.creatinine, Some(d("85")));
        assert!(!s.validity.interference);
    }

    /// Identified, then corrected (C) to not identified by the same analyzer: not adulterated.
    #[test]
    fn a_correction_replaces_its_sources_result() {
        let found = entry(ResultKind::Adulterant, "glutaraldehyde", None, "chem:R1", 1);
        let mut corrected = found.clone();
        corrected.identified = false;
        corrected.status = ResultStatus::Corrected;
        corrected.received_at_ms = 2;
        let r = runs(&[("chem:R1", accepted(RunKind::Validity, None))]);
        let list = [found.clone(), corrected];
        let a = analyze(&list, &r, &[], None);
        assert!(a.conflicts.is_empty());
        assert_eq!(
            a.views[0].why_not.as_deref(),
            Some("corrected by result #1")
        );
        assert!(engine(&list, &r).validity.adulterants.is_empty());
        // Another source's C does not correct the analyzer's result.
        let mut other = list[1].clone();
        other.source = Source::Lims {
            document: "d".into(),
        };
        let a = analyze(&[found, other], &r, &[], None);
        assert_eq!(a.conflicts.len(), 1, "{:?}", a.conflicts);
    }

    /// Identified in one accepted run and not in another: a conflict, both shown; a mark
    /// resolves it.
    #[test]
    fn disagreeing_runs_conflict_until_one_is_marked() {
        let found = entry(ResultKind::Adulterant, "glutaraldehyde", None, "chem:R1", 1);
        let mut not_found = entry(ResultKind::Adulterant, "glutaraldehyde", None, "chem:R2", 2);
        not_found.identified = false;
        let r = runs(&[
            ("chem:R1", accepted(RunKind::Validity, None)),
            ("chem:R2", accepted(RunKind::Validity, None)),
        ]);
        let list = [found, not_found];
        let a = analyze(&list, &r, &[], None);
        assert_eq!(a.conflicts.len(), 1);
        assert_eq!(
            a.conflicts[0].results,
            [
                (0, "identified".to_string()),
                (1, "not identified".to_string())
            ]
        );
        let marks = [ResultMark {
            result: 0,
            reason: "carryover from the previous sample".into(),
            by: "Dr. A".into(),
            at_ms: 3,
        }];
        let a = analyze(&list, &r, &marks, None);
        assert!(a.conflicts.is_empty());
        assert!(!a.views[0].counts);
        assert!(a.views[1].counts);
    }

    #[test]
    fn runs_gate_results_and_confirmations_need_a_reviewer_and_the_flag() {
        let screen = entry(ResultKind::Initial, "cocaine", Some("400"), "ia:B1", 1);
        let mut conf = entry(
            ResultKind::Confirmation,
            "benzoylecgonine",
            Some("200"),
            "gc:R1",
            2,
        );
        for (state, counts) in [
            (RunState::Open, false),
            (RunState::Pending, false),
            (RunState::Rejected, false),
            (RunState::Accepted, true),
        ] {
            let mut s = accepted(RunKind::Initial, None);
            s.state = state;
            let a = analyze(
                std::slice::from_ref(&screen),
                &runs(&[("ia:B1", s)]),
                &[],
                None,
            );
            assert_eq!(a.views[0].counts, counts, "{state:?}");
        }
        let reviewed = runs(&[("gc:R1", accepted(RunKind::Confirmation, Some("Dr. A")))]);
        let auto = runs(&[("gc:R1", accepted(RunKind::Confirmation, None))]);
        let a = analyze(&[conf.clone()], &reviewed, &[], None);
        assert_eq!(
            a.views[0].why_not.as_deref(),
            Some("confirmation without the instrument's acceptability flag")
        );
        conf.acceptable = Some(true);
        assert!(analyze(&[conf.clone()], &reviewed, &[], None).views[0].counts);
        assert!(!analyze(&[conf.clone()], &auto, &[], None).views[0].counts);
        conf.acceptable = Some(false);
        assert!(!analyze(&[conf], &reviewed, &[], None).views[0].counts);
        // A result recorded before runs were tracked counts as it did.
        let mut legacy = screen;
        legacy.run = None;
        assert!(analyze(&[legacy], &BTreeMap::new(), &[], None).views[0].counts);
    }

    #[test]
    fn the_confirmatory_tier_is_read_and_tiers_do_not_conflict() {
        let initial = entry(
            ResultKind::Validity,
            "creatinine",
            Some("1.6"),
            "chem:R1",
            1,
        );
        let mut confirm = entry(
            ResultKind::Validity,
            "creatinine",
            Some("1.5"),
            "chem:R2",
            2,
        );
        confirm.tier = Some(Tier::Confirmatory);
        confirm.aliquot = "2".into();
        let r = runs(&[
            ("chem:R1", accepted(RunKind::Validity, None)),
            ("chem:R2", accepted(RunKind::Validity, None)),
        ]);
        let list = [initial, confirm];
        let a = analyze(&list, &r, &[], None);
        assert!(a.conflicts.is_empty());
        assert_eq!(engine(&list, &r).validity.creatinine, Some(d("1.5")));
    }

    #[test]
    fn retests_wait_for_newer_counting_results_of_their_tests() {
        let old = entry(ResultKind::Initial, "cocaine", Some("10"), "ia:B1", 1);
        let r = runs(&[
            ("ia:B1", accepted(RunKind::Initial, None)),
            ("ia:B2", accepted(RunKind::Initial, None)),
        ]);
        let retests = [Retest {
            tests: vec!["cocaine".into()],
            reason: "run ia:B0 rejected".into(),
            by: "Dr. A".into(),
            at_ms: 5,
            run: None,
        }];
        let list = vec![old.clone()];
        let a = analyze(&list, &r, &[], None);
        assert_eq!(a.open_retests(&list, &retests).len(), 1);
        let mut list = list;
        let mut pcp = entry(ResultKind::Initial, "pcp", Some("1"), "ia:B2", 6);
        pcp.code = Some("PCP25".into());
        list.push(pcp);
        let a = analyze(&list, &r, &[], None);
        assert_eq!(a.open_retests(&list, &retests).len(), 1, "another test");
        list.push(entry(
            ResultKind::Initial,
            "cocaine",
            Some("10"),
            "ia:B2",
            7,
        ));
        let a = analyze(&list, &r, &[], None);
        assert!(a.open_retests(&list, &retests).is_empty());
    }
}
