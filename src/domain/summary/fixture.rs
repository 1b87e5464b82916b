//! Specimen records for the summaries' tests: accessioned, judged by a shipped edition through
//! the real rules engine, and released at a given instant.

use crate::domain::rules::{self, ProfileSet, Program, SpecimenType};
use crate::domain::specimen::{
    Accession, Ccf, Party, Release, ResultEntry, ResultKind, Source, SpecimenRecord,
};
use rust_decimal::Decimal;

pub const DAY_MS: u64 = 86_400_000;
/// A donor identifier the fixture puts on every CCF (a summary must never show it).
pub const DONOR_ID: &str = "123-45-6789";

pub fn profiles() -> ProfileSet {
    let mut set = ProfileSet::new();
    for (name, text) in [
        (
            "part40-2023",
            include_str!("../../../config/profiles/part40-2023.toml"),
        ),
        (
            "part40-2023-oral-fluid",
            include_str!("../../../config/profiles/part40-2023-oral-fluid.toml"),
        ),
        (
            "hhs-urine-2025",
            include_str!("../../../config/profiles/hhs-urine-2025.toml"),
        ),
    ] {
        set.insert(rules::Profile::parse(text, Some(name)).unwrap());
    }
    set
}

/// What one record is.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    pub id: &'a str,
    pub employer: &'a str,
    pub employer_name: &'a str,
    pub reason: Option<&'a str>,
    pub dot_agency: Option<&'a str>,
    pub program: Program,
    pub specimen_type: SpecimenType,
    pub findings: rules::Accession,
    /// The correction window of an open flaw ran out (an uncorrected flaw).
    pub correction_expired: bool,
    pub results: Vec<(ResultKind, &'a str, &'a str)>,
    /// When released (Unix ms, UTC); `None`: not released.
    pub released_at_ms: Option<u64>,
    /// The CCF's receipt date.
    pub received_on: &'a str,
}

impl Default for Spec<'_> {
    fn default() -> Self {
        Spec {
            id: "S",
            employer: "EMP-1",
            employer_name: "Example Freight",
            reason: Some("random"),
            dot_agency: Some("fmcsa"),
            program: Program::Dot,
            specimen_type: SpecimenType::Urine,
            findings: rules::Accession::default(),
            correction_expired: false,
            results: Vec::new(),
            released_at_ms: Some(0),
            received_on: "2026-03-01",
        }
    }
}

/// The record of `spec`.
pub fn record(spec: &Spec<'_>) -> SpecimenRecord {
    let p = profiles();
    let profile = match (spec.program, spec.specimen_type) {
        (Program::Hhs, _) => "hhs-urine-2025",
        (Program::Dot, SpecimenType::Urine) => "part40-2023",
        (Program::Dot, SpecimenType::OralFluid) => "part40-2023-oral-fluid",
    };
    let mut r = SpecimenRecord::new(spec.id, 0);
    r.attach_accession_for(
        Accession {
            ccf: Ccf {
                employer: Party {
                    name: spec.employer_name.into(),
                    id: Some(spec.employer.into()),
                    ..Party::default()
                },
                donor_id: Some(DONOR_ID.into()),
                reason_for_test: spec.reason.map(str::to_string),
                dot_agency: spec.dot_agency.map(str::to_string),
                collected_on: "2026-03-01".into(),
                received_on: spec.received_on.into(),
                ..Ccf::default()
            },
            findings: spec.findings.clone(),
            profile: Some(profile.into()),
            program: spec.program,
            specimen_type: spec.specimen_type,
            document: "d".into(),
            received_at_ms: 0,
            correction_initiated_on: None,
        },
        &p,
        profile,
        &[SpecimenType::Urine, SpecimenType::OralFluid],
        0,
    )
    .unwrap();
    let entries: Vec<ResultEntry> = spec
        .results
        .iter()
        .map(|(k, t, v)| ResultEntry {
            kind: *k,
            target: t.to_string(),
            value: (*k != ResultKind::Adulterant && *k != ResultKind::Interference)
                .then(|| v.parse::<Decimal>().unwrap()),
            unit: String::new(),
            bottle: Default::default(),
            source: Source::Lims {
                document: "x".into(),
            },
            received_at_ms: 1,
            ..ResultEntry::default()
        })
        .collect();
    if !entries.is_empty() {
        r.attach_results(entries, &p, profile, 1).unwrap();
    }
    if spec.correction_expired {
        r.correction_expired = true;
        r.reevaluate(&p, profile).unwrap();
    }
    if let Some(at) = spec.released_at_ms {
        r.release = Some(Release {
            report_id: format!("R-{}", spec.id),
            released_at_ms: at,
            scientist: "S. Scientist".into(),
            meaning: "reviewed and released".into(),
            content_sha256: "0".repeat(64),
        });
    }
    r
}

/// Unix ms of a UTC date at `hour`:00.
pub fn at(date: &str, hour: u64) -> u64 {
    super::parse_date(date).unwrap() as u64 * DAY_MS + hour * 3_600_000
}
