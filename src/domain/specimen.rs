//! The specimen record: what custody of one specimen has gathered (the CCF, every result with
//! where it came from, corrections), its current verdict and its state. Pure: the store keeps
//! records, this module decides how they change.
//!
//! State follows what has arrived:
//! `awaiting_accession` (results came before the CCF: kept, never dropped) → `accessioned` →
//! `screened` (some screening or validity results) → `confirming` (a class screened at or above
//! its cutoff still lacks confirmation) → `ready_for_review`; `held` while a correctable flaw
//! is open. A rejected specimen is ready for review at once (a certifying scientist signs it).

use crate::domain::rules::{self, Correction, Profile, ProfileSet, Program, SpecimenType, Verdict};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a specimen stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    AwaitingAccession,
    Accessioned,
    Screened,
    Confirming,
    Held,
    ReadyForReview,
    /// A certifying scientist released it; the report is in the outbox or delivered.
    Released,
}

impl State {
    pub const ALL: [State; 7] = [
        State::AwaitingAccession,
        State::Accessioned,
        State::Screened,
        State::Confirming,
        State::Held,
        State::ReadyForReview,
        State::Released,
    ];
    pub fn key(self) -> &'static str {
        match self {
            State::AwaitingAccession => "awaiting_accession",
            State::Accessioned => "accessioned",
            State::Screened => "screened",
            State::Confirming => "confirming",
            State::Held => "held",
            State::ReadyForReview => "ready_for_review",
            State::Released => "released",
        }
    }
    pub fn from_key(k: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.key() == k)
    }
}

pub use crate::domain::parties::Party;

/// The CCF (Copy 1) as the laboratory received it: what a report may contain (40.97(b)(1)(ii)).
/// Donor identifiers live here and nowhere else; they never reach a log or a metric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Ccf {
    pub employer: Party,
    /// The MRO as named on the CCF, with the MRO directory id.
    pub mro: Party,
    /// SSN or employee ID, if provided (40.97(b)(1)(i)(E)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub donor_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_for_test: Option<String>,
    /// The DOT agency of Step 1 (`fmcsa`, `faa`, `fra`, `fta`, `phmsa`, `uscg`), if the LIMS
    /// gave it: the summary to DOT counts by it (40.111(d), Appendix E item 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dot_agency: Option<String>,
    pub collector: Party,
    /// ISO date of collection.
    pub collected_on: String,
    /// ISO date received at the laboratory.
    pub received_on: String,
    pub split_collected: bool,
    pub observed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remarks: Option<String>,
    /// Freezer location per bottle, if the LIMS gave one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub storage: BTreeMap<String, String>,
}

/// A correction of CCF data that was wrong on a released report: only what a report takes from
/// the CCF, never the MRO's directory id (the destination never changes) and never a result (a
/// result changes only through a new evaluation). Absent fields stay as they are; an empty
/// `donor_id` or `reason_for_test` removes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CcfAmendment {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employer_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employer_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mro_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub donor_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_for_test: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector_phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collected_on: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_on: Option<String>,
}

/// The longest value a CCF correction may set.
pub const MAX_CCF_VALUE: usize = 200;

impl CcfAmendment {
    /// Applies the amendment to `ccf`: the names of the fields that changed, with their values
    /// before. A required field (all but `donor_id` and `reason_for_test`) cannot be emptied;
    /// control characters and over-long values are refused. Nothing is changed on error.
    pub fn apply(&self, ccf: &mut Ccf) -> Result<Vec<(&'static str, Option<String>)>, String> {
        let mut next = ccf.clone();
        let mut changed = Vec::new();
        let mut set = |key: &'static str,
                       slot: &mut Option<String>,
                       value: &Option<String>,
                       required: bool|
         -> Result<(), String> {
            let Some(v) = value else { return Ok(()) };
            let v = v.trim();
            if v.chars().any(char::is_control) || v.chars().count() > MAX_CCF_VALUE {
                return Err(format!(
                    "{key}: at most {MAX_CCF_VALUE} characters, no control characters"
                ));
            }
            if v.is_empty() && required {
                return Err(format!("{key}: cannot be emptied (required on a report)"));
            }
            let new = (!v.is_empty()).then(|| v.to_string());
            if *slot != new {
                changed.push((key, std::mem::replace(slot, new)));
            }
            Ok(())
        };
        let mut employer_name = Some(next.employer.name.clone());
        set(
            "employer.name",
            &mut employer_name,
            &self.employer_name,
            true,
        )?;
        next.employer.name = employer_name.unwrap_or_default();
        set(
            "employer.id",
            &mut next.employer.id,
            &self.employer_id,
            true,
        )?;
        let mut mro_name = Some(next.mro.name.clone());
        set("mro.name", &mut mro_name, &self.mro_name, true)?;
        next.mro.name = mro_name.unwrap_or_default();
        set("donor_id", &mut next.donor_id, &self.donor_id, false)?;
        set(
            "reason_for_test",
            &mut next.reason_for_test,
            &self.reason_for_test,
            false,
        )?;
        let mut collector_name = Some(next.collector.name.clone());
        set(
            "collector.name",
            &mut collector_name,
            &self.collector_name,
            true,
        )?;
        next.collector.name = collector_name.unwrap_or_default();
        set(
            "collector.phone",
            &mut next.collector.phone,
            &self.collector_phone,
            true,
        )?;
        let mut collected_on = Some(next.collected_on.clone());
        set("collected_on", &mut collected_on, &self.collected_on, true)?;
        next.collected_on = collected_on.unwrap_or_default();
        let mut received_on = Some(next.received_on.clone());
        set("received_on", &mut received_on, &self.received_on, true)?;
        next.received_on = received_on.unwrap_or_default();
        *ccf = next;
        Ok(changed)
    }
}

/// A corrected report: the CCF data amended on a released specimen, why, and by which document.
/// The previous values are kept here (the specimen record), never in the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportCorrection {
    /// The report this correction replaces.
    pub replaces: String,
    /// The corrected report.
    pub report_id: String,
    pub reason: String,
    /// The document that justifies the correction (e.g. the MRO's memorandum).
    pub document: String,
    /// Field → value before the correction (None: it was not provided).
    pub previous: BTreeMap<String, Option<String>>,
    /// The release that was superseded.
    pub superseded_release: Release,
}

/// The accession: the CCF and the accessioning findings of 40.83.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accession {
    pub ccf: Ccf,
    pub findings: rules::Accession,
    /// The rule profile the LIMS named for the tests, if it named one (it then wins over the
    /// edition the dates would select, as a case's own profile does in `evaluate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The testing program on the CCF (DOT unless the LIMS says HHS).
    #[serde(default)]
    pub program: Program,
    /// The specimen type (urine unless the LIMS says oral fluid).
    #[serde(default)]
    pub specimen_type: SpecimenType,
    /// The LIMS document it came from.
    pub document: String,
    /// When custody stored the accession: the laboratory's first record of its flaws.
    pub received_at_ms: u64,
    /// The day the laboratory initiated action to correct a correctable flaw, when the LIMS
    /// gave it (40.83(e)(1), (g)(1)): the correction window counts from it, else from the day
    /// of `received_at_ms` (never from the CCF's receipt date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correction_initiated_on: Option<crate::domain::calendar::Date>,
}

pub use crate::domain::results::{
    Analysis, Bottle, ResultEntry, ResultKeys, ResultKind, ResultMark, ResultStatus, Retest,
    Source, Tier,
};
pub use crate::domain::runs::RunStatus;

/// A correctable flaw corrected (40.83(e)–(g)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionEntry {
    /// `collector_certification`, `temperature` or `form`.
    pub flaw: String,
    /// The document that carries the correction (e.g. the memorandum's reference).
    pub document: String,
    pub recorded_by: String,
    pub received_at_ms: u64,
}

/// Where the correction of one correctable flaw stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlawStatus {
    /// Not corrected yet; the correction window is open.
    Open,
    /// Corrected by the document named (40.205(b), 40.208).
    Corrected,
    /// The correction window closed without a correction of this flaw.
    Expired,
}

/// One correctable flaw of the accession (40.83(e)–(g)) and its own state: flaws are corrected
/// one by one, and each decides the outcome by its own state (a corrected flaw never rejects).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlawState {
    pub flaw: rules::accessioning::Flaw,
    pub status: FlawStatus,
    /// The correcting document (`corrected` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// When the correction was received, or when the window's expiry was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
}

/// The verdict as last evaluated, with the profile that decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    pub profile: String,
    pub verdict: Verdict,
}

/// The edition a specimen is judged by: chosen once, at accession, and kept for its life.
/// Re-evaluation (new results, corrections, a restart, another `rules.default_profile`, a
/// reload) never changes it; only an operator's audited re-assignment before release does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Edition {
    /// Judged by this profile; `basis` says how it was chosen (e.g. `collected_on 2026-03-02`).
    Assigned { profile: String, basis: String },
    /// Held untested: no edition judges it (e.g. "no edition shipped for this date (...)",
    /// "laboratory not certified for oral fluid").
    Untested { reason: String },
}

impl Edition {
    pub fn profile(&self) -> Option<&str> {
        match self {
            Edition::Assigned { profile, .. } => Some(profile),
            Edition::Untested { .. } => None,
        }
    }
}

/// An operator's re-assignment of a specimen's edition (before release only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EditionChange {
    pub from: Edition,
    pub to: Edition,
    pub reason: String,
    pub by: String,
    pub at_ms: u64,
}

/// The words of the hold for an oral-fluid specimen where the laboratory is not certified.
pub fn not_certified_reason(t: SpecimenType) -> String {
    format!("laboratory not certified for {}", t.words())
}

/// The edition an accession gets: the profile the LIMS named (of the specimen's program and
/// specimen type), else the one [`rules::select`] picks by its dates; untested when the
/// laboratory is not certified for its specimen type or no shipped edition covers its date.
/// A named profile that is not loaded or is of another program or specimen type refuses the
/// accession. Without the selecting date (never from a LIMS accession, whose dates are
/// required) the default applies, as in `evaluate`, if it is of the specimen's program and
/// specimen type.
pub fn choose_edition(
    acc: &Accession,
    profiles: &ProfileSet,
    default_profile: &str,
    certified: &[SpecimenType],
) -> Result<Edition, ChangeError> {
    if !certified.contains(&acc.specimen_type) {
        return Ok(Edition::Untested {
            reason: not_certified_reason(acc.specimen_type),
        });
    }
    if let Some(name) = &acc.profile {
        let p = profiles
            .get(name)
            .ok_or_else(|| ChangeError::UnknownProfile(name.clone()))?;
        check_edition_fits(p, acc)?;
        return Ok(Edition::Assigned {
            profile: p.name.clone(),
            basis: "named by the LIMS document".into(),
        });
    }
    let collected = acc.ccf.collected_on.parse().ok();
    let received = acc.ccf.received_on.parse().ok();
    match rules::select(
        profiles,
        acc.program,
        acc.specimen_type,
        collected,
        received,
    ) {
        Ok(p) => {
            let (key, date) = match p.period.selected_by {
                rules::SelectingDate::CollectedOn => ("collected_on", &acc.ccf.collected_on),
                rules::SelectingDate::ReceivedOn => ("received_on", &acc.ccf.received_on),
            };
            Ok(Edition::Assigned {
                profile: p.name.clone(),
                basis: format!("{key} {date}"),
            })
        }
        Err(e @ rules::NoEdition::NoDate { selected_by, .. }) => {
            match profiles.get(default_profile) {
                Some(p) if check_edition_fits(p, acc).is_ok() => Ok(Edition::Assigned {
                    profile: p.name.clone(),
                    basis: format!("rules.default_profile (no {})", selected_by.key()),
                }),
                _ => Ok(Edition::Untested {
                    reason: e.to_string(),
                }),
            }
        }
        Err(e) => Ok(Edition::Untested {
            reason: e.to_string(),
        }),
    }
}

/// A profile may judge a specimen only of its own program and specimen type.
fn check_edition_fits(p: &Profile, acc: &Accession) -> Result<(), ChangeError> {
    if p.program != acc.program || p.specimen_type != acc.specimen_type {
        return Err(ChangeError::EditionMismatch {
            profile: p.name.clone(),
            edition: format!("{} {}", p.program.key(), p.specimen_type.key()),
            specimen: format!("{} {}", acc.program.key(), acc.specimen_type.key()),
        });
    }
    Ok(())
}

/// A certifying scientist's release of the result: an electronic signature (who, when, what it
/// means) bound to the exact report content by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub report_id: String,
    pub released_at_ms: u64,
    /// The certifying scientist's name (40.97(b)(1)(i)(K)).
    pub scientist: String,
    /// "reviewed and released".
    pub meaning: String,
    /// SHA-256 (hex) of the exact report payload approved.
    pub content_sha256: String,
}

/// Everything custody holds for one specimen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecimenRecord {
    pub specimen_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accession: Option<Accession>,
    /// Every result of every run, in the order received; nothing is deleted. Stored in keys
    /// of their own (see `result_keys`) and filled in when custody reads the record.
    #[serde(default)]
    pub results: Vec<ResultEntry>,
    /// Where the results are stored (`None`: inline, a record written before results had keys
    /// of their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_keys: Option<ResultKeys>,
    /// The runs its results were measured in, as custody last told the record (state, kind,
    /// QC outcome, reviewer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub runs: BTreeMap<String, RunStatus>,
    /// Results a certifying scientist marked not reportable, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub result_marks: Vec<ResultMark>,
    /// Retests asked for, by a certifying scientist or by a rejected run; the specimen waits
    /// until each named test has a counting result received after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retests: Vec<Retest>,
    #[serde(default)]
    pub corrections: Vec<CorrectionEntry>,
    /// The correction window ran out (set by the lifecycle clock): every flaw not corrected
    /// by then is expired.
    #[serde(default)]
    pub correction_expired: bool,
    /// Each correctable flaw of the accession and its state, as of the last evaluation (absent
    /// on records stored before flaws were tracked one by one, until their next evaluation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flaws: Vec<FlawState>,
    /// 40.97(e): the MRO's written request for quantitative values is on file.
    #[serde(default)]
    pub mro_requested_quantitation: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
    /// Set when a certifying scientist sent the result back for retest (the reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retest_requested: Option<String>,
    /// Set when a certifying scientist released the result (40.97(b)(1)(ii)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<Release>,
    /// Corrected reports, oldest first; `release` is then the latest (corrected) release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub report_corrections: Vec<ReportCorrection>,
    /// The clocks, written requests, retention and split of the specimen (see
    /// custody's lifecycle).
    #[serde(
        default,
        skip_serializing_if = "crate::domain::lifecycle::LifecycleRecord::is_empty"
    )]
    pub lifecycle: crate::domain::lifecycle::LifecycleRecord,
    /// The edition chosen at accession (absent before accession, and on records accessioned
    /// before editions were chosen per specimen until their next evaluation pins one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edition: Option<Edition>,
    /// Operator re-assignments of the edition, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub edition_changes: Vec<EditionChange>,
    /// The image of Copy 1 as received (its bytes are in the store's image keyspace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ccf_image: Option<crate::domain::copy1::ImageMeta>,
    /// The certified Copy 1 the LIMS supplied after certification, when it supplies one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certified_copy1: Option<crate::domain::copy1::CertifiedCopyMeta>,
    /// The MRO's written request for quantitative values on file (40.97(e)): `case-by-case`, or
    /// `general: <document>` for the MRO's general request in the directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantitation_request: Option<String>,
    /// Supplementary reports sent after release (their report ids, oldest first).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supplements: Vec<String>,
    pub state: State,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
}

/// Why a change could not be applied to a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    #[error("the specimen already has an accession from document {0}")]
    AlreadyAccessioned(String),
    #[error("rule profile `{0}` is not loaded")]
    UnknownProfile(String),
    #[error("{} target `{target}` is not in the panel of edition {profile}", kind.key())]
    OutsidePanel {
        kind: ResultKind,
        target: String,
        /// The edition's profile name, or "any loaded edition" before accession.
        profile: String,
    },
    #[error("profile {profile} is for {edition} specimens, this specimen is {specimen}")]
    EditionMismatch {
        profile: String,
        edition: String,
        specimen: String,
    },
    #[error("the specimen is held untested: {0}")]
    Untested(String),
    #[error("the specimen has no accession")]
    NotAccessioned,
    #[error("the specimen is already judged by edition {0}")]
    SameEdition(String),
    #[error("evaluation failed: {0}")]
    Evaluation(#[from] rules::CaseError),
    #[error("the specimen's result was already released; a change needs a corrected report")]
    AlreadyReleased,
    #[error(
        "the correction was received after the correction window closed at {0} (40.83(e)-(g)); the expired outcome stands"
    )]
    CorrectionWindowClosed(String),
    #[error("the specimen has no result #{0}")]
    NoSuchResult(usize),
    #[error("result #{0} is already marked not reportable")]
    AlreadyMarked(usize),
    #[error("a reason is required")]
    NoReason,
    #[error("the record was read without its results; nothing is judged without them")]
    ResultsNotLoaded,
}

impl SpecimenRecord {
    pub fn new(specimen_id: &str, now_ms: u64) -> SpecimenRecord {
        SpecimenRecord {
            specimen_id: specimen_id.to_string(),
            accession: None,
            results: Vec::new(),
            result_keys: None,
            runs: BTreeMap::new(),
            result_marks: Vec::new(),
            retests: Vec::new(),
            corrections: Vec::new(),
            correction_expired: false,
            flaws: Vec::new(),
            mro_requested_quantitation: false,
            evaluation: None,
            retest_requested: None,
            release: None,
            report_corrections: Vec::new(),
            lifecycle: Default::default(),
            edition: None,
            edition_changes: Vec::new(),
            ccf_image: None,
            certified_copy1: None,
            quantitation_request: None,
            supplements: Vec::new(),
            state: State::AwaitingAccession,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        }
    }

    /// The edition (profile name) that judges this specimen: the one chosen at accession; for a
    /// record accessioned before editions were chosen per specimen, the profile that last
    /// judged it. `None` before accession and while held untested.
    pub fn profile_name(&self) -> Option<&str> {
        match &self.edition {
            Some(e) => e.profile(),
            None => {
                let acc = self.accession.as_ref()?;
                acc.profile
                    .as_deref()
                    .or(self.evaluation.as_ref().map(|e| e.profile.as_str()))
            }
        }
    }

    /// Why the specimen is held untested, if it is.
    pub fn untested_reason(&self) -> Option<&str> {
        match &self.edition {
            Some(Edition::Untested { reason }) => Some(reason),
            _ => None,
        }
    }

    /// A record accessioned before editions were chosen per specimen keeps the profile that
    /// judged it (or the one its accession named; the default only if it was never judged).
    fn pin_legacy_edition(&mut self, default_profile: &str) {
        if self.edition.is_some() || self.accession.is_none() {
            return;
        }
        let (profile, basis) = match self.profile_name() {
            Some(p) => (
                p.to_string(),
                "the profile that judged it before editions were chosen per specimen",
            ),
            None => (
                default_profile.to_string(),
                "rules.default_profile when editions were first chosen per specimen",
            ),
        };
        self.edition = Some(Edition::Assigned {
            profile,
            basis: basis.into(),
        });
    }

    /// The panel guard (40.13(c), 40.82): may this result be attached to this specimen? Its
    /// target must mean a class (initial), an analyte (confirmation) or a measure (validity) of
    /// the specimen's edition. Before accession the edition is not known yet: the result waits
    /// if any loaded edition knows its target, and is checked again at accession.
    pub fn check_panel(&self, r: &ResultEntry, profiles: &ProfileSet) -> Result<(), ChangeError> {
        if let Some(reason) = self.untested_reason() {
            return Err(ChangeError::Untested(reason.to_string()));
        }
        match self.profile_name() {
            Some(name) if self.accession.is_some() => {
                let profile = profiles
                    .get(name)
                    .ok_or_else(|| ChangeError::UnknownProfile(name.to_string()))?;
                check_in_panel(r, profile)
            }
            _ => {
                if profiles.iter().any(|p| in_panel(r, p)) {
                    Ok(())
                } else {
                    Err(ChangeError::OutsidePanel {
                        kind: r.kind,
                        target: r.target.clone(),
                        profile: "any loaded edition".into(),
                    })
                }
            }
        }
    }

    /// Attaches results (after the panel guard) and re-evaluates.
    pub fn attach_results(
        &mut self,
        results: Vec<ResultEntry>,
        profiles: &ProfileSet,
        default_profile: &str,
        now_ms: u64,
    ) -> Result<(), ChangeError> {
        if self.release.is_some() {
            return Err(ChangeError::AlreadyReleased);
        }
        for r in &results {
            self.check_panel(r, profiles)?;
        }
        // New results answer a send-back for retest.
        self.retest_requested = None;
        for mut r in results {
            // A correction belongs to the run of the result it corrects.
            if r.status == ResultStatus::Corrected
                && let Some(run) = self.corrected_run(&r)
            {
                r.run = run;
            }
            self.results.push(r);
        }
        self.updated_at_ms = now_ms;
        self.reevaluate(profiles, default_profile)
    }

    /// The run of the latest earlier result of the same source and key that `r` corrects.
    fn corrected_run(&self, r: &ResultEntry) -> Option<Option<String>> {
        self.results
            .iter()
            .rev()
            .find(|o| {
                o.kind == r.kind
                    && o.target == r.target
                    && o.tier() == r.tier()
                    && o.aliquot == r.aliquot
                    && o.source.origin() == r.source.origin()
            })
            .map(|o| o.run.clone())
    }

    /// Records what became of a run the specimen has results in (custody calls this when the
    /// run opens, closes, is accepted or rejected), then re-evaluates. A rejected run asks for
    /// a retest of the tests the specimen had in it.
    pub fn set_run_status(
        &mut self,
        run: &str,
        status: RunStatus,
        rejected: Option<(&str, &str)>,
        profiles: &ProfileSet,
        default_profile: &str,
        now_ms: u64,
    ) -> Result<(), ChangeError> {
        if self.release.is_some() {
            return Err(ChangeError::AlreadyReleased);
        }
        if self.runs.get(run) == Some(&status) && rejected.is_none() {
            return Ok(());
        }
        if let Some((reason, by)) = rejected {
            let mut tests: Vec<String> = self
                .results
                .iter()
                .filter(|r| r.run.as_deref() == Some(run))
                .map(|r| r.code.clone().unwrap_or_else(|| r.target.clone()))
                .collect();
            tests.sort();
            tests.dedup();
            self.retests.push(Retest {
                tests,
                reason: format!("run {run} rejected: {reason}"),
                by: by.to_string(),
                at_ms: now_ms,
                run: Some(run.to_string()),
            });
        }
        self.runs.insert(run.to_string(), status);
        self.updated_at_ms = now_ms;
        self.reevaluate(profiles, default_profile)
    }

    /// A certifying scientist marks result `result` (its position) not reportable, with a
    /// reason; before release only, once per result.
    #[allow(clippy::too_many_arguments)]
    pub fn mark_not_reportable(
        &mut self,
        result: usize,
        reason: &str,
        by: &str,
        profiles: &ProfileSet,
        default_profile: &str,
        now_ms: u64,
    ) -> Result<(), ChangeError> {
        if self.release.is_some() {
            return Err(ChangeError::AlreadyReleased);
        }
        if result >= self.results.len() {
            return Err(ChangeError::NoSuchResult(result));
        }
        if reason.trim().is_empty() {
            return Err(ChangeError::NoReason);
        }
        if self.result_marks.iter().any(|m| m.result == result) {
            return Err(ChangeError::AlreadyMarked(result));
        }
        self.result_marks.push(ResultMark {
            result,
            reason: reason.to_string(),
            by: by.to_string(),
            at_ms: now_ms,
        });
        self.updated_at_ms = now_ms;
        self.reevaluate(profiles, default_profile)
    }

    /// A certifying scientist asks for a retest of `tests` (targets or test codes; empty: any
    /// new result) with a reason; the specimen waits for them. Before release only.
    pub fn request_retest(
        &mut self,
        tests: Vec<String>,
        reason: &str,
        by: &str,
        profiles: &ProfileSet,
        default_profile: &str,
        now_ms: u64,
    ) -> Result<(), ChangeError> {
        if self.release.is_some() {
            return Err(ChangeError::AlreadyReleased);
        }
        if reason.trim().is_empty() {
            return Err(ChangeError::NoReason);
        }
        self.retests.push(Retest {
            tests,
            reason: reason.to_string(),
            by: by.to_string(),
            at_ms: now_ms,
            run: None,
        });
        self.updated_at_ms = now_ms;
        self.reevaluate(profiles, default_profile)
    }

    /// The result history under the specimen's edition: every result with whether it counts
    /// and why not, the disagreements, and what the rules read.
    pub fn analysis(&self, profile: Option<&Profile>) -> Analysis {
        crate::domain::results::analyze(&self.results, &self.runs, &self.result_marks, profile)
    }

    /// The retests the specimen still waits for.
    pub fn open_retests(&self) -> Vec<&Retest> {
        self.analysis(None)
            .open_retests(&self.results, &self.retests)
    }

    /// Why the specimen is held, in words: untested, or counting results that disagree.
    pub fn held_because(&self, profile: Option<&Profile>) -> Option<String> {
        if let Some(r) = self.untested_reason() {
            return Some(r.to_string());
        }
        let conflicts = self.analysis(profile).conflicts;
        (!conflicts.is_empty()).then(|| {
            conflicts
                .iter()
                .map(|c| c.words())
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Attaches the accession (once), chooses the specimen's edition ([`choose_edition`]) and
    /// re-evaluates. Results that came first are checked against the chosen edition's panel.
    /// For a laboratory certified for urine only; see [`SpecimenRecord::attach_accession_for`].
    pub fn attach_accession(
        &mut self,
        accession: Accession,
        profiles: &ProfileSet,
        default_profile: &str,
        now_ms: u64,
    ) -> Result<(), ChangeError> {
        self.attach_accession_for(
            accession,
            profiles,
            default_profile,
            &[SpecimenType::Urine],
            now_ms,
        )
    }

    /// [`SpecimenRecord::attach_accession`] where the laboratory is certified for the specimen
    /// types `certified`.
    pub fn attach_accession_for(
        &mut self,
        accession: Accession,
        profiles: &ProfileSet,
        default_profile: &str,
        certified: &[SpecimenType],
        now_ms: u64,
    ) -> Result<(), ChangeError> {
        if let Some(a) = &self.accession {
            return Err(ChangeError::AlreadyAccessioned(a.document.clone()));
        }
        let edition = choose_edition(&accession, profiles, default_profile, certified)?;
        if let Some(name) = edition.profile() {
            let profile = profiles
                .get(name)
                .ok_or_else(|| ChangeError::UnknownProfile(name.to_string()))?;
            for r in &self.results {
                check_in_panel(r, profile)?;
            }
        }
        self.accession = Some(accession);
        self.edition = Some(edition);
        self.updated_at_ms = now_ms;
        self.reevaluate(profiles, default_profile)
    }

    /// An operator's explicit, audited re-assignment of the edition, before release only: the
    /// profile must be loaded, of the specimen's program and specimen type, for a specimen type
    /// the laboratory is certified for, and know every result already stored.
    #[allow(clippy::too_many_arguments)]
    pub fn reassign_edition(
        &mut self,
        profile: &str,
        reason: &str,
        by: &str,
        profiles: &ProfileSet,
        default_profile: &str,
        certified: &[SpecimenType],
        now_ms: u64,
    ) -> Result<(), ChangeError> {
        if self.release.is_some() {
            return Err(ChangeError::AlreadyReleased);
        }
        let acc = self.accession.as_ref().ok_or(ChangeError::NotAccessioned)?;
        let p = profiles
            .get(profile)
            .ok_or_else(|| ChangeError::UnknownProfile(profile.to_string()))?;
        check_edition_fits(p, acc)?;
        if !certified.contains(&acc.specimen_type) {
            return Err(ChangeError::Untested(not_certified_reason(
                acc.specimen_type,
            )));
        }
        self.pin_legacy_edition(default_profile);
        if self.profile_name() == Some(profile) {
            return Err(ChangeError::SameEdition(profile.to_string()));
        }
        for r in &self.results {
            check_in_panel(r, p)?;
        }
        let to = Edition::Assigned {
            profile: p.name.clone(),
            basis: format!("re-assigned by {by}"),
        };
        let from = self
            .edition
            .replace(to.clone())
            .unwrap_or(Edition::Untested {
                reason: "none".into(),
            });
        self.edition_changes.push(EditionChange {
            from,
            to,
            reason: reason.to_string(),
            by: by.to_string(),
            at_ms: now_ms,
        });
        self.updated_at_ms = now_ms;
        self.reevaluate(profiles, default_profile)
    }

    /// Records a correction of a correctable flaw and re-evaluates.
    pub fn attach_correction(
        &mut self,
        c: CorrectionEntry,
        profiles: &ProfileSet,
        default_profile: &str,
        now_ms: u64,
    ) -> Result<(), ChangeError> {
        if self.release.is_some() {
            return Err(ChangeError::AlreadyReleased);
        }
        self.corrections.push(c);
        self.updated_at_ms = now_ms;
        self.reevaluate(profiles, default_profile)
    }

    /// The rules engine's input for this record: the counting results of its history
    /// ([`crate::domain::results`]): nothing is chosen by recency; a result counts only from
    /// an accepted run, uncorrected, not marked, not bottle B.
    pub fn engine_input(&self) -> rules::Specimen {
        self.engine_input_for(None)
    }

    /// [`SpecimenRecord::engine_input`] in `profile`'s terms: an initial result's mapping target
    /// becomes the class it means in that edition (`measured_as`); a target the edition does not
    /// know is passed on as it is (the engine then refuses it, never drops it).
    pub fn engine_input_for(&self, profile: Option<&Profile>) -> rules::Specimen {
        let mut s = rules::Specimen::default();
        if let Some(a) = &self.accession {
            s.accession = a.findings.clone();
        }
        self.analysis(profile).fill(&self.results, &mut s);
        let flaws = self.flaw_states(&s.accession);
        if !flaws.is_empty() {
            for f in &flaws {
                let c = match f.status {
                    FlawStatus::Open => Correction::None,
                    FlawStatus::Corrected => Correction::Corrected,
                    FlawStatus::Expired => Correction::Expired,
                };
                s.accession.flaw_corrections.insert(f.flaw, c);
            }
            // The case-level summary (every flaw corrected, or some expired).
            s.accession.correction = if flaws.iter().all(|f| f.status == FlawStatus::Corrected) {
                Correction::Corrected
            } else if flaws.iter().any(|f| f.status == FlawStatus::Expired) {
                Correction::Expired
            } else {
                Correction::None
            };
        }
        s.mro_requested_quantitation = self.mro_requested_quantitation;
        s
    }

    /// Each correctable flaw the findings show, with its own state: corrected when a correction
    /// of it was recorded (the first one names the document), else expired once the window ran
    /// out, else open.
    pub fn flaw_states(&self, findings: &rules::Accession) -> Vec<FlawState> {
        let expired_at = self
            .lifecycle
            .correction
            .as_ref()
            .and_then(|c| c.expired_at_ms);
        rules::accessioning::open_flaws(findings)
            .into_iter()
            .map(
                |flaw| match self.corrections.iter().find(|c| c.flaw == flaw.key()) {
                    Some(c) => FlawState {
                        flaw,
                        status: FlawStatus::Corrected,
                        document: Some(c.document.clone()),
                        at_ms: Some(c.received_at_ms),
                    },
                    None if self.correction_expired => FlawState {
                        flaw,
                        status: FlawStatus::Expired,
                        document: None,
                        at_ms: expired_at,
                    },
                    None => FlawState {
                        flaw,
                        status: FlawStatus::Open,
                        document: None,
                        at_ms: None,
                    },
                },
            )
            .collect()
    }

    /// Re-runs the rules engine under the specimen's own edition and moves the state. Before
    /// accession nothing is judged (the results wait for the edition chosen at accession);
    /// held untested, nothing is judged either. `default_profile` only pins the edition of a
    /// record accessioned before editions were chosen per specimen and never judged.
    pub fn reevaluate(
        &mut self,
        profiles: &ProfileSet,
        default_profile: &str,
    ) -> Result<(), ChangeError> {
        // A record read without its results (they live in keys of their own) is never
        // judged: the verdict would be built from nothing.
        if self
            .result_keys
            .is_some_and(|k| self.results.len() < k.count as usize)
        {
            return Err(ChangeError::ResultsNotLoaded);
        }
        self.pin_legacy_edition(default_profile);
        self.flaws = match &self.accession {
            Some(a) => self.flaw_states(&a.findings),
            None => Vec::new(),
        };
        if self.accession.is_none() {
            self.evaluation = None;
            self.state = State::AwaitingAccession;
            return Ok(());
        }
        let Some(name) = self.profile_name().map(str::to_string) else {
            self.evaluation = None;
            self.state = State::Held;
            return Ok(());
        };
        let profile = profiles
            .get(&name)
            .ok_or_else(|| ChangeError::UnknownProfile(name.clone()))?;
        let input = self.engine_input_for(Some(profile));
        let verdict = rules::evaluate(profile, &input)?;
        self.state = self.derive_state(profile, &input, &verdict);
        self.evaluation = Some(Evaluation {
            profile: name,
            verdict,
        });
        Ok(())
    }

    fn derive_state(
        &self,
        profile: &rules::Profile,
        input: &rules::Specimen,
        v: &Verdict,
    ) -> State {
        if self.accession.is_none() {
            return State::AwaitingAccession;
        }
        if v.hold.is_some() {
            return State::Held;
        }
        let history = self.analysis(Some(profile));
        if !history.conflicts.is_empty() {
            return State::Held;
        }
        if self.retest_requested.is_some()
            || !history
                .open_retests(&self.results, &self.retests)
                .is_empty()
        {
            return State::Screened;
        }
        if v.results == [rules::ResultCategory::Rejected] {
            return State::ReadyForReview;
        }
        // Results arrived (counting or still waiting for their run): screened.
        let any_screen = !input.initial.is_empty()
            || self
                .results
                .iter()
                .any(|r| r.bottle == Bottle::A && r.kind != ResultKind::Confirmation);
        if !any_screen {
            return State::Accessioned;
        }
        let panel_screened = profile
            .classes
            .iter()
            .all(|c| input.initial.contains_key(&c.key));
        // Every validity test the edition requires (its `[[validity_test]]` list: 40.91 in 2001,
        // 40.87 today, with the oxidizing-adulterant test; none for oral fluid).
        let validity_done = self.missing_validity_tests(profile, input).is_empty();
        if !panel_screened || !validity_done {
            return State::Screened;
        }
        for c in &profile.classes {
            let screened_positive = input
                .initial
                .get(&c.key)
                .is_some_and(|v| *v >= c.initial_cutoff);
            if !screened_positive {
                continue;
            }
            for a in &c.analytes {
                if input.confirmation.contains_key(&a.key) {
                    continue;
                }
                // An analyte tested only when another is high enough (6-AM) is not awaited
                // when that other analyte is below the level.
                if let Some(req) = &a.requires {
                    let needed = input
                        .confirmation
                        .get(&req.analyte)
                        .is_some_and(|v| *v >= req.at_least);
                    if !needed && input.confirmation.contains_key(&req.analyte) {
                        continue;
                    }
                }
                return State::Confirming;
            }
        }
        State::ReadyForReview
    }
}

impl SpecimenRecord {
    /// The keys of the validity tests `profile` requires of this specimen that are not done
    /// yet, for the engine input `input` (see [`rules::validity::missing_tests`]); an
    /// interference check on file counts for the test it names.
    pub fn missing_validity_tests<'p>(
        &self,
        profile: &'p Profile,
        input: &rules::Specimen,
    ) -> Vec<&'p str> {
        let checked = |target: &str| {
            self.results.iter().any(|r| {
                r.bottle == Bottle::A && r.kind == ResultKind::Interference && r.target == target
            })
        };
        rules::validity::missing_tests(profile, &input.validity, &checked)
            .into_iter()
            .map(|t| t.key.as_str())
            .collect()
    }
}

fn in_panel(r: &ResultEntry, profile: &Profile) -> bool {
    match r.kind {
        ResultKind::Initial => profile.class_for_target(&r.target).is_some(),
        ResultKind::Confirmation => profile.analyte(&r.target).is_some(),
        ResultKind::Validity => rules::profile::Measure::from_key(&r.target).is_some(),
        ResultKind::Adulterant | ResultKind::Interference => true,
    }
}

fn check_in_panel(r: &ResultEntry, profile: &Profile) -> Result<(), ChangeError> {
    if in_panel(r, profile) {
        Ok(())
    } else {
        Err(ChangeError::OutsidePanel {
            kind: r.kind,
            target: r.target.clone(),
            profile: profile.name.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;
    use std::str::FromStr;

    fn profiles() -> ProfileSet {
        let mut set = ProfileSet::new();
        for (n, t) in [
            (
                "part40-2001",
                include_str!("../../config/profiles/part40-2001.toml"),
            ),
            (
                "part40-2023",
                include_str!("../../config/profiles/part40-2023.toml"),
            ),
        ] {
            set.insert(rules::Profile::parse(t, Some(n)).unwrap());
        }
        set
    }

    fn result(kind: ResultKind, target: &str, value: &str, at: u64) -> ResultEntry {
        ResultEntry {
            kind,
            target: target.into(),
            value: Some(Decimal::from_str(value).unwrap()),
            unit: String::new(),
            bottle: Bottle::A,
            source: Source::Analyzer {
                analyzer: "ia1".into(),
                control_id: format!("m{at}"),
                observation: "1".into(),
            },
            received_at_ms: at,
            ..ResultEntry::default()
        }
    }

    fn accession() -> Accession {
        Accession {
            ccf: Ccf::default(),
            findings: rules::Accession::default(),
            profile: None,
            program: Default::default(),
            specimen_type: Default::default(),
            document: "acc-1.xml".into(),
            received_at_ms: 1,
            correction_initiated_on: None,
        }
    }

    fn screen_negative(at: u64) -> Vec<ResultEntry> {
        let mut v: Vec<ResultEntry> = ["marijuana", "cocaine", "pcp", "amphetamines", "opiates"]
            .iter()
            .map(|c| result(ResultKind::Initial, c, "1", at))
            .collect();
        v.push(result(ResultKind::Validity, "creatinine", "80", at));
        v.push(result(ResultKind::Validity, "ph", "6.5", at));
        // The oxidizing-adulterant test (40.91(c)): nitrite.
        v.push(result(ResultKind::Validity, "nitrite", "0", at));
        v
    }

    #[test]
    fn results_before_accession_are_kept_and_attached() {
        let p = profiles();
        let mut r = SpecimenRecord::new("S1", 0);
        r.attach_results(screen_negative(5), &p, "part40-2001", 5)
            .unwrap();
        assert_eq!(r.state, State::AwaitingAccession);
        assert_eq!(r.results.len(), 8);
        r.attach_accession(accession(), &p, "part40-2001", 6)
            .unwrap();
        assert_eq!(r.state, State::ReadyForReview);
        assert_eq!(
            r.evaluation.as_ref().unwrap().verdict.results,
            [rules::ResultCategory::Negative]
        );
    }

    #[test]
    fn state_moves_with_what_arrives() {
        let p = profiles();
        let mut r = SpecimenRecord::new("S2", 0);
        r.attach_accession(accession(), &p, "part40-2001", 1)
            .unwrap();
        assert_eq!(r.state, State::Accessioned);
        r.attach_results(
            vec![result(ResultKind::Initial, "cocaine", "400", 2)],
            &p,
            "part40-2001",
            2,
        )
        .unwrap();
        assert_eq!(r.state, State::Screened);
        let mut rest = screen_negative(3);
        rest.retain(|e| e.target != "cocaine");
        r.attach_results(rest, &p, "part40-2001", 3).unwrap();
        assert_eq!(r.state, State::Confirming);
        r.attach_results(
            vec![result(
                ResultKind::Confirmation,
                "benzoylecgonine",
                "200",
                4,
            )],
            &p,
            "part40-2001",
            4,
        )
        .unwrap();
        assert_eq!(r.state, State::ReadyForReview);
        let v = &r.evaluation.as_ref().unwrap().verdict;
        assert_eq!(v.positive_analytes, ["benzoylecgonine"]);
    }

    /// Nothing is chosen by recency: two counting pH values that disagree hold the specimen,
    /// both shown, until a certifying scientist marks one not reportable; bottle B never counts.
    #[test]
    fn results_are_never_chosen_by_recency_and_bottle_b_is_ignored() {
        let p = profiles();
        let mut r = SpecimenRecord::new("S3", 0);
        r.attach_accession(accession(), &p, "part40-2001", 1)
            .unwrap();
        r.attach_results(screen_negative(2), &p, "part40-2001", 2)
            .unwrap();
        assert_eq!(r.state, State::ReadyForReview);
        r.attach_results(
            vec![result(ResultKind::Validity, "ph", "2", 3)],
            &p,
            "part40-2001",
            3,
        )
        .unwrap();
        assert_eq!(r.state, State::Held, "6.5 and 2 disagree");
        assert_eq!(r.engine_input().validity.ph, None, "neither is read");
        let why = r.held_because(None).unwrap();
        assert!(why.contains("#6 6.5") && why.contains("#8 2"), "{why}");
        let mut b = result(ResultKind::Validity, "nitrite", "900", 4);
        b.bottle = Bottle::B;
        r.attach_results(vec![b], &p, "part40-2001", 4).unwrap();
        assert_eq!(
            r.engine_input().validity.nitrite,
            Some(Decimal::ZERO),
            "bottle B's 900 is never read"
        );
        r.mark_not_reportable(8, "sample short", "Dr. A", &p, "part40-2001", 5)
            .unwrap();
        assert_eq!(
            r.engine_input().validity.ph,
            Some(Decimal::from_str("6.5").unwrap())
        );
        assert_eq!(r.state, State::ReadyForReview);
        assert_eq!(
            r.mark_not_reportable(8, "again", "Dr. A", &p, "part40-2001", 6),
            Err(ChangeError::AlreadyMarked(8))
        );
        assert_eq!(
            r.mark_not_reportable(99, "x", "Dr. A", &p, "part40-2001", 6),
            Err(ChangeError::NoSuchResult(99))
        );
    }

    /// A run's state reaches the record: results of an open or rejected run do not count, a
    /// rejected run asks for a retest of its tests, and the specimen waits for them.
    #[test]
    fn runs_gate_results_and_a_rejected_run_asks_for_a_retest() {
        use crate::domain::runs::{QcOutcome, RunKind, RunState};
        let p = profiles();
        let mut r = SpecimenRecord::new("S8", 0);
        r.attach_accession(accession(), &p, "part40-2001", 1)
            .unwrap();
        let status = |state| RunStatus {
            state,
            kind: RunKind::Initial,
            qc: Some(QcOutcome::Passed),
            reviewed_by: None,
        };
        let mut first = screen_negative(2);
        for e in &mut first {
            e.run = Some("ia:B1".into());
            e.code = Some(e.target.clone());
        }
        r.runs.insert("ia:B1".into(), status(RunState::Open));
        r.attach_results(first, &p, "part40-2001", 2).unwrap();
        assert_eq!(r.state, State::Screened, "its run is open");
        assert!(r.engine_input().initial.is_empty());
        r.set_run_status(
            "ia:B1",
            status(RunState::Rejected),
            Some(("negative control read positive", "Dr. A")),
            &p,
            "part40-2001",
            3,
        )
        .unwrap();
        assert_eq!(r.state, State::Screened);
        assert_eq!(r.open_retests().len(), 1);
        assert!(r.retests[0].reason.contains("ia:B1 rejected"));
        let mut rerun = screen_negative(4);
        for e in &mut rerun {
            e.run = Some("ia:B2".into());
        }
        r.runs.insert("ia:B2".into(), status(RunState::Open));
        r.attach_results(rerun, &p, "part40-2001", 4).unwrap();
        r.set_run_status(
            "ia:B2",
            status(RunState::Accepted),
            None,
            &p,
            "part40-2001",
            5,
        )
        .unwrap();
        assert!(r.open_retests().is_empty());
        assert_eq!(r.state, State::ReadyForReview);
        assert_eq!(
            r.evaluation.as_ref().unwrap().verdict.results,
            [rules::ResultCategory::Negative]
        );
    }

    #[test]
    fn panel_guard_refuses_outside_analytes() {
        let p = profiles();
        let mut r = SpecimenRecord::new("S4", 0);
        r.attach_accession(accession(), &p, "part40-2001", 1)
            .unwrap();
        let e = r
            .attach_results(
                vec![result(ResultKind::Confirmation, "oxycodone", "300", 2)],
                &p,
                "part40-2001",
                2,
            )
            .unwrap_err();
        assert!(matches!(e, ChangeError::OutsidePanel { .. }));
        assert!(r.results.is_empty(), "nothing attached");
        let mut a = accession();
        a.profile = Some("part40-2023".into());
        let mut r = SpecimenRecord::new("S5", 0);
        r.attach_accession(a, &p, "part40-2001", 1).unwrap();
        r.attach_results(
            vec![result(ResultKind::Confirmation, "oxycodone", "300", 2)],
            &p,
            "part40-2001",
            2,
        )
        .unwrap();
    }

    #[test]
    fn corrections_release_a_hold() {
        let p = profiles();
        let mut a = accession();
        a.findings.collector_certification_signed = false;
        let mut r = SpecimenRecord::new("S6", 0);
        r.attach_accession(a, &p, "part40-2001", 1).unwrap();
        assert_eq!(r.state, State::Held);
        r.attach_correction(
            CorrectionEntry {
                flaw: "collector_certification".into(),
                document: "memo-1".into(),
                recorded_by: "lims".into(),
                received_at_ms: 2,
            },
            &p,
            "part40-2001",
            2,
        )
        .unwrap();
        assert_eq!(r.state, State::Accessioned);
        r.attach_results(screen_negative(3), &p, "part40-2001", 3)
            .unwrap();
        assert_eq!(r.state, State::ReadyForReview);
        assert!(
            r.evaluation
                .as_ref()
                .unwrap()
                .verdict
                .remarks
                .iter()
                .any(|x| x.contains("corrected"))
        );
    }

    #[test]
    fn rejected_goes_to_review_and_accession_is_once() {
        let p = profiles();
        let mut a = accession();
        a.findings.id_matches = false;
        let mut r = SpecimenRecord::new("S7", 0);
        r.attach_accession(a.clone(), &p, "part40-2001", 1).unwrap();
        assert_eq!(r.state, State::ReadyForReview);
        assert!(matches!(
            r.attach_accession(a, &p, "part40-2001", 2),
            Err(ChangeError::AlreadyAccessioned(_))
        ));
    }

    fn dated(collected: &str) -> Accession {
        let mut a = accession();
        a.ccf.collected_on = collected.into();
        a.ccf.received_on = collected.into();
        a
    }

    /// The edition is chosen once, from the CCF dates, and kept whatever the default says.
    #[test]
    fn the_edition_is_chosen_at_accession_and_kept() {
        let p = profiles();
        for (date, expected) in [("2026-03-02", "part40-2023"), ("2005-06-01", "part40-2001")] {
            let mut r = SpecimenRecord::new("S", 0);
            // The screen that came first waits under the mapping's name for the class.
            r.attach_results(
                vec![result(ResultKind::Initial, "opiates", "10", 1)],
                &p,
                "part40-2001",
                1,
            )
            .unwrap();
            assert!(r.evaluation.is_none(), "nothing judged before accession");
            r.attach_accession(dated(date), &p, "part40-2001", 2)
                .unwrap();
            assert_eq!(r.profile_name(), Some(expected), "{date}");
            assert_eq!(r.evaluation.as_ref().unwrap().profile, expected);
            // Another default never moves it.
            r.reevaluate(&p, "part40-2023").unwrap();
            r.reevaluate(&p, "part40-2001").unwrap();
            assert_eq!(r.evaluation.as_ref().unwrap().profile, expected);
            // `opiates` means codeine/morphine today (measured_as).
            let input = r.engine_input_for(p.get(expected));
            let class = if expected == "part40-2023" {
                "codeine_morphine"
            } else {
                "opiates"
            };
            assert!(input.initial.contains_key(class), "{input:?}");
        }
    }

    #[test]
    fn a_date_no_edition_covers_is_held_untested() {
        let p = profiles();
        let mut r = SpecimenRecord::new("S", 0);
        r.attach_accession(dated("2014-05-05"), &p, "part40-2001", 1)
            .unwrap();
        assert_eq!(r.state, State::Held);
        assert!(r.evaluation.is_none());
        assert!(
            r.untested_reason()
                .unwrap()
                .starts_with(rules::edition::NO_EDITION_FOR_DATE)
        );
        // Results are not attached to an untested specimen.
        let e = r
            .attach_results(
                vec![result(ResultKind::Initial, "marijuana", "10", 2)],
                &p,
                "part40-2001",
                2,
            )
            .unwrap_err();
        assert!(matches!(e, ChangeError::Untested(_)), "{e}");
        // An operator may assign an edition of its program and specimen type, audited.
        r.reassign_edition(
            "part40-2023",
            "2010 edition not shipped; MRO memo M-1",
            "op",
            &p,
            "part40-2001",
            &[SpecimenType::Urine],
            3,
        )
        .unwrap();
        assert_eq!(r.profile_name(), Some("part40-2023"));
        assert_eq!(r.edition_changes.len(), 1);
        assert_eq!(r.state, State::Accessioned);
    }

    #[test]
    fn oral_fluid_is_held_where_the_laboratory_is_not_certified() {
        let p = profiles();
        let mut a = dated("2026-03-02");
        a.specimen_type = SpecimenType::OralFluid;
        let mut r = SpecimenRecord::new("S", 0);
        r.attach_accession(a.clone(), &p, "part40-2001", 1).unwrap();
        assert_eq!(
            r.untested_reason(),
            Some("laboratory not certified for oral fluid")
        );
        assert_eq!(r.state, State::Held);
        // Certified, but no oral-fluid edition loaded in this set: held with that reason.
        let mut r = SpecimenRecord::new("S", 0);
        r.attach_accession_for(
            a,
            &p,
            "part40-2001",
            &[SpecimenType::Urine, SpecimenType::OralFluid],
            1,
        )
        .unwrap();
        assert!(
            r.untested_reason().unwrap().contains("oral_fluid"),
            "{:?}",
            r.edition
        );
    }

    #[test]
    fn reassignment_is_refused_after_release_or_across_programs() {
        let p = profiles();
        let mut r = SpecimenRecord::new("S", 0);
        r.attach_accession(dated("2026-03-02"), &p, "part40-2001", 1)
            .unwrap();
        let e = r
            .reassign_edition(
                "part40-2023",
                "x",
                "op",
                &p,
                "part40-2001",
                &[SpecimenType::Urine],
                2,
            )
            .unwrap_err();
        assert!(matches!(e, ChangeError::SameEdition(_)), "{e}");
        let e = r
            .reassign_edition(
                "nope",
                "x",
                "op",
                &p,
                "part40-2001",
                &[SpecimenType::Urine],
                2,
            )
            .unwrap_err();
        assert!(matches!(e, ChangeError::UnknownProfile(_)), "{e}");
        let mut hhs = r.clone();
        hhs.accession.as_mut().unwrap().program = Program::Hhs;
        let e = hhs
            .reassign_edition(
                "part40-2001",
                "x",
                "op",
                &p,
                "part40-2001",
                &[SpecimenType::Urine],
                2,
            )
            .unwrap_err();
        assert!(matches!(e, ChangeError::EditionMismatch { .. }), "{e}");
        r.release = Some(Release {
            report_id: "R".into(),
            released_at_ms: 3,
            scientist: "cs".into(),
            meaning: "reviewed and released".into(),
            content_sha256: "0".into(),
        });
        let e = r
            .reassign_edition(
                "part40-2001",
                "x",
                "op",
                &p,
                "part40-2001",
                &[SpecimenType::Urine],
                4,
            )
            .unwrap_err();
        assert_eq!(e, ChangeError::AlreadyReleased);
    }

    /// A result outside the specimen's edition names the edition and the target.
    #[test]
    fn the_panel_guard_follows_the_specimens_edition() {
        let p = profiles();
        let mut r = SpecimenRecord::new("S", 0);
        r.attach_accession(dated("2005-06-01"), &p, "part40-2023", 1)
            .unwrap();
        let e = r
            .attach_results(
                vec![result(ResultKind::Confirmation, "oxycodone", "300", 2)],
                &p,
                "part40-2023",
                2,
            )
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "confirmation target `oxycodone` is not in the panel of edition part40-2001"
        );
        let mut r = SpecimenRecord::new("S", 0);
        r.attach_accession(dated("2026-03-02"), &p, "part40-2001", 1)
            .unwrap();
        r.attach_results(
            vec![result(ResultKind::Confirmation, "oxycodone", "300", 2)],
            &p,
            "part40-2001",
            2,
        )
        .unwrap();
    }

    fn correction(flaw: &str, doc: &str, at: u64) -> CorrectionEntry {
        CorrectionEntry {
            flaw: flaw.into(),
            document: doc.into(),
            recorded_by: "lims".into(),
            received_at_ms: at,
        }
    }

    /// Unsigned Step 4 certification (40.83(e)) and no temperature statement (40.83(f)).
    fn two_flaws() -> Accession {
        let mut a = accession();
        a.findings.collector_certification_signed = false;
        a.findings.temperature_recorded = false;
        a
    }

    fn statuses(r: &SpecimenRecord) -> Vec<(&'static str, FlawStatus)> {
        r.flaws.iter().map(|f| (f.flaw.key(), f.status)).collect()
    }

    #[test]
    fn flaws_are_corrected_one_by_one_and_a_corrected_flaw_never_rejects() {
        let p = profiles();
        let mut r = SpecimenRecord::new("F1", 0);
        r.attach_accession(two_flaws(), &p, "part40-2001", 1)
            .unwrap();
        assert_eq!(r.state, State::Held);
        assert_eq!(
            statuses(&r),
            [
                ("collector_certification", FlawStatus::Open),
                ("temperature", FlawStatus::Open)
            ]
        );
        r.attach_correction(
            correction("collector_certification", "memo-1", 2),
            &p,
            "part40-2001",
            2,
        )
        .unwrap();
        // Still held, for the temperature alone.
        assert_eq!(r.state, State::Held);
        let hold = r.evaluation.as_ref().unwrap().verdict.hold.clone().unwrap();
        assert!(hold.reason.contains("temperature"), "{}", hold.reason);
        assert!(!hold.reason.contains("signature"), "{}", hold.reason);
        assert_eq!(r.flaws[0].status, FlawStatus::Corrected);
        assert_eq!(r.flaws[0].document.as_deref(), Some("memo-1"));
        assert_eq!(r.flaws[0].at_ms, Some(2));
        r.attach_results(screen_negative(3), &p, "part40-2001", 3)
            .unwrap();
        assert_eq!(r.state, State::Held);

        // The window runs out: the temperature flaw expires, the corrected signature stays
        // corrected, and the result is reported (40.83(f)(2)), not rejected.
        r.correction_expired = true;
        r.reevaluate(&p, "part40-2001").unwrap();
        assert_eq!(
            statuses(&r),
            [
                ("collector_certification", FlawStatus::Corrected),
                ("temperature", FlawStatus::Expired)
            ]
        );
        let v = &r.evaluation.as_ref().unwrap().verdict;
        assert_eq!(v.results, [rules::ResultCategory::Negative]);
        assert!(v.hold.is_none());
        assert!(
            v.remarks
                .iter()
                .any(|x| x.contains("corrected by signed statement")),
            "{:?}",
            v.remarks
        );
        assert!(
            v.remarks.iter().any(|x| x
                .contains("not corrected within 5 business days; result reported (40.83(f)(2))")),
            "{:?}",
            v.remarks
        );
        assert_eq!(r.state, State::ReadyForReview);

        // The other way round: the temperature corrected, the signature not: rejected, and the
        // remark names the signature only.
        let mut r = SpecimenRecord::new("F2", 0);
        r.attach_accession(two_flaws(), &p, "part40-2001", 1)
            .unwrap();
        r.attach_correction(correction("temperature", "memo-2", 2), &p, "part40-2001", 2)
            .unwrap();
        r.correction_expired = true;
        r.reevaluate(&p, "part40-2001").unwrap();
        let v = &r.evaluation.as_ref().unwrap().verdict;
        assert_eq!(v.results, [rules::ResultCategory::Rejected]);
        assert_eq!(v.remarks.len(), 1, "{:?}", v.remarks);
        assert!(v.remarks[0].contains("40.83(e)"), "{:?}", v.remarks);
        assert_eq!(
            statuses(&r),
            [
                ("collector_certification", FlawStatus::Expired),
                ("temperature", FlawStatus::Corrected)
            ]
        );

        // Both corrected one by one before the window closed: tested, nothing expires later.
        let mut r = SpecimenRecord::new("F3", 0);
        r.attach_accession(two_flaws(), &p, "part40-2001", 1)
            .unwrap();
        r.attach_correction(correction("temperature", "memo-3", 2), &p, "part40-2001", 2)
            .unwrap();
        assert_eq!(r.state, State::Held);
        r.attach_correction(
            correction("collector_certification", "memo-4", 3),
            &p,
            "part40-2001",
            3,
        )
        .unwrap();
        assert_eq!(r.state, State::Accessioned);
        assert!(r.flaws.iter().all(|f| f.status == FlawStatus::Corrected));
    }

    #[test]
    fn records_without_per_flaw_state_stay_readable() {
        let p = profiles();
        let mut r = SpecimenRecord::new("F4", 0);
        r.attach_accession(two_flaws(), &p, "part40-2001", 1)
            .unwrap();
        let mut stored = serde_json::to_value(&r).unwrap();
        assert_eq!(stored["flaws"][1]["flaw"], "temperature");
        assert_eq!(stored["flaws"][1]["status"], "open");
        // The findings never carry the per-flaw state (it is the record's).
        assert!(
            stored["accession"]["findings"]
                .get("flaw_corrections")
                .is_none()
        );
        // A record stored before flaws were tracked one by one.
        stored.as_object_mut().unwrap().remove("flaws");
        let mut old: SpecimenRecord = serde_json::from_value(stored).unwrap();
        assert!(old.flaws.is_empty());
        old.reevaluate(&p, "part40-2001").unwrap();
        assert_eq!(old.flaws, r.flaws);
        // A record without flaws writes no `flaws` key.
        let clean = SpecimenRecord::new("F5", 0);
        assert!(serde_json::to_value(&clean).unwrap().get("flaws").is_none());
    }

    fn ready_with(profile: &str, validity: &[(ResultKind, &str, &str)]) -> (State, Vec<String>) {
        let p = profiles();
        let mut a = accession();
        a.profile = Some(profile.into());
        let mut r = SpecimenRecord::new("V", 0);
        r.attach_accession(a, &p, "part40-2001", 1).unwrap();
        let mut results: Vec<ResultEntry> = p
            .get(profile)
            .unwrap()
            .classes
            .iter()
            .map(|c| result(ResultKind::Initial, &c.key, "1", 2))
            .collect();
        for (k, t, v) in validity {
            results.push(result(*k, t, v, 2));
        }
        r.attach_results(results, &p, "part40-2001", 2).unwrap();
        let input = r.engine_input_for(p.get(profile));
        let missing = r
            .missing_validity_tests(p.get(profile).unwrap(), &input)
            .into_iter()
            .map(str::to_string)
            .collect();
        (r.state, missing)
    }

    #[test]
    fn ready_for_review_needs_every_validity_test_of_the_edition() {
        use ResultKind::{Adulterant, Interference, Validity};
        let cr = |v: &'static str| (Validity, "creatinine", v);
        let ph = (Validity, "ph", "6.5");
        let nit = (Validity, "nitrite", "0");
        let sg = (Validity, "specific_gravity", "1.0150");
        for edition in ["part40-2001", "part40-2023"] {
            // Creatinine, pH, SG but no oxidizing-adulterant test: not ready.
            let (state, missing) = ready_with(edition, &[cr("80"), ph, sg]);
            assert_eq!(state, State::Screened, "{edition}");
            assert_eq!(missing, ["oxidizing_adulterant"], "{edition}");
            // With the nitrite test: ready.
            assert_eq!(
                ready_with(edition, &[cr("80"), ph, nit]),
                (State::ReadyForReview, vec![]),
                "{edition}"
            );
            // Specific gravity only when creatinine is below 20 mg/dL: at 20 not needed, just
            // below it needed.
            assert_eq!(
                ready_with(edition, &[cr("20"), ph, nit]).0,
                State::ReadyForReview,
                "{edition}"
            );
            assert_eq!(
                ready_with(edition, &[cr("19.9"), ph, nit]),
                (State::Screened, vec!["specific_gravity".to_string()]),
                "{edition}"
            );
            assert_eq!(
                ready_with(edition, &[cr("19.9"), ph, nit, sg]).0,
                State::ReadyForReview,
                "{edition}"
            );
            // No pH, no creatinine.
            assert_eq!(ready_with(edition, &[cr("80"), nit]).1, ["ph"], "{edition}");
            assert_eq!(
                ready_with(edition, &[ph, nit]).1,
                ["creatinine"],
                "{edition}"
            );
            // An oxidant identified (chromium(VI)) or an oxidant interference check on file is
            // an oxidizing-adulterant test done.
            assert_eq!(
                ready_with(edition, &[cr("80"), ph, (Adulterant, "chromium_vi", "1")]).0,
                State::ReadyForReview,
                "{edition}"
            );
            assert_eq!(
                ready_with(edition, &[cr("80"), ph, (Interference, "oxidant", "1")]).0,
                State::ReadyForReview,
                "{edition}"
            );
            // Another substance is no oxidant test.
            assert_eq!(
                ready_with(
                    edition,
                    &[cr("80"), ph, (Adulterant, "glutaraldehyde", "1")]
                )
                .1,
                ["oxidizing_adulterant"],
                "{edition}"
            );
        }
    }

    #[test]
    fn oral_fluid_needs_no_validity_test_and_editions_differ_in_data() {
        let mut p = profiles();
        p.insert(
            rules::Profile::parse(
                include_str!("../../config/profiles/part40-2023-oral-fluid.toml"),
                Some("part40-2023-oral-fluid"),
            )
            .unwrap(),
        );
        let of = p.get("part40-2023-oral-fluid").unwrap();
        assert!(of.validity_tests.is_empty());
        let cites = |name: &str| -> Vec<String> {
            p.get(name)
                .unwrap()
                .validity_tests
                .iter()
                .map(|t| t.cite.clone())
                .collect()
        };
        assert_eq!(cites("part40-2001").last().unwrap(), "40.91(c)");
        assert_eq!(cites("part40-2023").last().unwrap(), "40.87(c)");

        let mut a = dated("2026-03-02");
        a.specimen_type = SpecimenType::OralFluid;
        let mut r = SpecimenRecord::new("OF", 0);
        r.attach_accession_for(
            a,
            &p,
            "part40-2001",
            &[SpecimenType::Urine, SpecimenType::OralFluid],
            1,
        )
        .unwrap();
        assert_eq!(r.profile_name(), Some("part40-2023-oral-fluid"));
        let screen: Vec<ResultEntry> = of
            .classes
            .iter()
            .map(|c| result(ResultKind::Initial, &c.key, "0", 2))
            .collect();
        r.attach_results(screen, &p, "part40-2001", 2).unwrap();
        assert_eq!(r.state, State::ReadyForReview);
    }
}
