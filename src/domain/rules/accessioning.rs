//! Accessioning (40.83): fatal flaws, correctable flaws and redesignation of bottles.
//!
//! Remarks written here go to the MRO. 40.175(b)(1) forbids telling the MRO that the second
//! bottle is unavailable before the MRO asks for it, so no remark names that bottle: a
//! redesignation is reported only as a relabelling of the bottles.

use super::profile::{OnExpiry, Profile, SpecimenType};
use super::{Accession, Correction, Form, Hold, Seal, SplitSeal};
use serde::{Deserialize, Serialize};

/// What accessioning decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A fatal flaw, or an uncorrected flaw that rejects: testing stops (40.83(d)).
    Rejected,
    /// A correctable flaw is open: the result waits for the correction window.
    Hold(Hold),
    /// Test the specimen (possibly after redesignating the bottles).
    Test,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accessioned {
    pub outcome: Outcome,
    /// Bottle B became Bottle A (40.83(h)).
    pub redesignated: bool,
    pub remarks: Vec<String>,
}

/// Which paragraph of 40.83(h)(1) allowed the redesignation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redesignation {
    /// (i) the primary leaked; the other bottle holds enough.
    PrimaryLeaked,
    /// (ii) the primary was labelled B and the other bottle A.
    LabelsSwapped,
    /// (iii) the lab opened the other bottle instead; the primary is still sealed.
    OtherBottleOpened,
    /// (iv) the primary's seal is broken; the other bottle is sealed and holds enough.
    PrimarySealBroken,
}

impl Redesignation {
    pub fn cite(self) -> &'static str {
        match self {
            Redesignation::PrimaryLeaked => "40.83(h)(1)(i)",
            Redesignation::LabelsSwapped => "40.83(h)(1)(ii)",
            Redesignation::OtherBottleOpened => "40.83(h)(1)(iii)",
            Redesignation::PrimarySealBroken => "40.83(h)(1)(iv)",
        }
    }
}

/// The correctable flaws of 40.83(e)–(g) that are open on this specimen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flaw {
    /// (e) the collector's Step 4 certification signature is missing.
    CollectorCertification,
    /// (f) the temperature was not checked and no remark explains it.
    Temperature,
    /// (g) a non-Federal or expired Federal form was used.
    Form,
}

impl Flaw {
    /// The key used in records and LIMS documents.
    pub fn key(self) -> &'static str {
        match self {
            Flaw::CollectorCertification => "collector_certification",
            Flaw::Temperature => "temperature",
            Flaw::Form => "form",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Flaw::CollectorCertification => {
                "collector's signature missing from the certification statement (40.83(e))"
            }
            Flaw::Temperature => "specimen temperature not recorded (40.83(f))",
            Flaw::Form => "non-Federal or expired Federal custody and control form (40.83(g))",
        }
    }
    fn how_corrected(self) -> &'static str {
        match self {
            Flaw::CollectorCertification => {
                "collector's certification omission corrected by signed statement (40.83(e)(2), 40.205(b)(1))"
            }
            Flaw::Temperature => {
                "temperature omission corrected by collector's statement (40.83(f), 40.208)"
            }
            Flaw::Form => {
                "use of an improper custody and control form corrected by signed statement (40.83(g), 40.205(b)(2))"
            }
        }
    }
    /// The paragraph under which an uncorrected flaw of this kind is reported as tested.
    fn reported_cite(self) -> &'static str {
        match self {
            Flaw::CollectorCertification => "40.83(e)",
            Flaw::Temperature => "40.83(f)(2)",
            Flaw::Form => "40.83(g)(2)",
        }
    }
    fn on_expiry(self, profile: &Profile) -> OnExpiry {
        match self {
            Flaw::CollectorCertification => profile.correctable.collector_certification,
            Flaw::Temperature => profile.correctable.temperature,
            Flaw::Form => profile.correctable.form,
        }
    }
}

/// The redesignations 40.83(h)(1) allows for these findings, in the paragraph's order.
pub fn redesignations(a: &Accession) -> Vec<Redesignation> {
    let other_usable = a.split_seal == SplitSeal::Intact && a.split_sufficient;
    let mut out = Vec::new();
    if a.primary_leaked && other_usable {
        out.push(Redesignation::PrimaryLeaked);
    }
    if a.labels_swapped {
        out.push(Redesignation::LabelsSwapped);
    }
    if a.split_opened_instead
        && a.primary_seal == Seal::Intact
        && a.split_seal != SplitSeal::Absent
        && a.split_sufficient
    {
        out.push(Redesignation::OtherBottleOpened);
    }
    if a.primary_seal == Seal::Broken && other_usable {
        out.push(Redesignation::PrimarySealBroken);
    }
    out
}

/// The correctable flaws open on this specimen, in the order of 40.83.
pub fn open_flaws(a: &Accession) -> Vec<Flaw> {
    let mut out = Vec::new();
    if !a.collector_certification_signed {
        out.push(Flaw::CollectorCertification);
    }
    if !a.temperature_recorded {
        out.push(Flaw::Temperature);
    }
    if a.form != Form::Federal {
        out.push(Flaw::Form);
    }
    out
}

/// The fatal flaws of 40.83(c) present after any redesignation, as the MRO reads them.
pub fn fatal_flaws(a: &Accession) -> Vec<&'static str> {
    let redesig = redesignations(a);
    // After a redesignation under (i), (iii) or (iv) the bottle tested as primary is the other,
    // sealed, sufficient bottle: the primary's own seal and volume no longer decide anything.
    let tested_bottle_replaced = redesig.iter().any(|r| *r != Redesignation::LabelsSwapped);
    let mut fatal = Vec::new();
    if !a.id_matches {
        fatal.push("specimen ID on the bottle does not match the CCF (40.83(c)(1))");
    }
    if a.primary_seal == Seal::Broken && !tested_bottle_replaced {
        fatal.push(
            "primary specimen bottle seal broken or shows evidence of tampering (40.83(c)(2))",
        );
    }
    if !a.collector_name_and_signature {
        fatal.push("collector's printed name and signature omitted from the CCF (40.83(c)(3))");
    }
    if !a.primary_sufficient && !tested_bottle_replaced {
        fatal.push("insufficient amount of urine in the primary bottle for analysis (40.83(c)(4))");
    }
    fatal
}

/// Applies 40.83 to what accessioning found.
/// The oral-fluid fatal flaws of 40.199(b)(8), (9): an expired collection device.
pub fn oral_fluid_fatal_flaws(a: &Accession) -> Vec<&'static str> {
    let mut fatal = Vec::new();
    if a.collection_device_expired {
        if a.device_expiration_date_recorded {
            fatal.push("the oral-fluid collection device had expired (40.199(b)(8))");
        } else {
            fatal.push(
                "the collection device's expiration date was not recorded and the laboratory confirmed it had expired (40.199(b)(9))",
            );
        }
    }
    fatal
}

/// Every fatal flaw of a specimen of `specimen_type`: those of 40.83(c), and for oral fluid
/// those of 40.199(b)(8), (9). Accessioning rejects on them; the statistical summary (40.111)
/// counts a rejection with any of them as "fatal flaw", not "uncorrected flaw".
pub fn fatal_flaws_of(specimen_type: SpecimenType, a: &Accession) -> Vec<&'static str> {
    let mut fatal = fatal_flaws(a);
    if specimen_type == SpecimenType::OralFluid {
        fatal.extend(oral_fluid_fatal_flaws(a));
    }
    fatal
}

pub fn accession(profile: &Profile, a: &Accession) -> Accessioned {
    let redesig = redesignations(a);
    let fatal = fatal_flaws_of(profile.specimen_type, a);
    if !fatal.is_empty() {
        let remarks = fatal
            .into_iter()
            .map(|f| format!("Rejected for testing: {f}; testing stopped (40.83(d))."))
            .collect();
        return Accessioned {
            outcome: Outcome::Rejected,
            redesignated: false,
            remarks,
        };
    }

    let mut remarks = Vec::new();
    let redesignated = !redesig.is_empty();
    if redesignated {
        let cites: Vec<&str> = redesig.iter().map(|r| r.cite()).collect();
        remarks.push(format!(
            "Specimen bottles relabelled and tested as provided by {}.",
            cites.join(", ")
        ));
    }

    let flaws = open_flaws(a);
    if flaws.is_empty() {
        return Accessioned {
            outcome: Outcome::Test,
            redesignated,
            remarks,
        };
    }
    let days = profile.correctable.business_days;
    let states: Vec<(Flaw, Correction)> =
        flaws.iter().map(|f| (*f, correction_of(a, *f))).collect();

    // An uncorrected flaw whose rule rejects (40.83(e)(3), (g)(2)) rejects, whatever the other
    // flaws' state: a corrected flaw never rejects, an uncorrected temperature flaw is reported.
    let rejecting: Vec<Flaw> = states
        .iter()
        .filter(|(f, c)| *c == Correction::Expired && f.on_expiry(profile) == OnExpiry::Reject)
        .map(|(f, _)| *f)
        .collect();
    if !rejecting.is_empty() {
        let remarks = rejecting
            .iter()
            .map(|f| {
                format!(
                    "Rejected for testing: {} not corrected within {days} business days.",
                    f.describe()
                )
            })
            .collect();
        return Accessioned {
            outcome: Outcome::Rejected,
            redesignated: false,
            remarks,
        };
    }

    for (f, c) in &states {
        match c {
            Correction::Corrected => {
                remarks.push(format!("Correctable flaw: {}.", f.how_corrected()));
            }
            Correction::Expired => remarks.push(format!(
                "{} not corrected within {days} business days; result reported ({}).",
                capitalise(f.describe()),
                f.reported_cite()
            )),
            Correction::None => {}
        }
    }
    let open: Vec<&str> = states
        .iter()
        .filter(|(_, c)| *c == Correction::None)
        .map(|(f, _)| f.describe())
        .collect();
    if !open.is_empty() {
        let reason = format!(
            "correctable flaw: {}; awaiting correction for up to {days} business days",
            open.join("; ")
        );
        return Accessioned {
            outcome: Outcome::Hold(Hold {
                reason,
                business_days: days,
            }),
            redesignated,
            remarks,
        };
    }
    Accessioned {
        outcome: Outcome::Test,
        redesignated,
        remarks,
    }
}

/// Where the correction of `flaw` stands: its own state if the daemon set one, else the
/// specimen's (a case's) `correction`.
pub fn correction_of(a: &Accession, flaw: Flaw) -> Correction {
    a.flaw_corrections
        .get(&flaw)
        .copied()
        .unwrap_or(a.correction)
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::Form;

    fn p2001() -> Profile {
        Profile::parse(
            include_str!("../../../config/profiles/part40-2001.toml"),
            Some("part40-2001"),
        )
        .unwrap()
    }

    /// Unsigned certification (40.83(e)) and no temperature statement (40.83(f)), each in the
    /// state given.
    fn two_flaws(certification: Correction, temperature: Correction) -> Accession {
        let mut a = Accession {
            collector_certification_signed: false,
            temperature_recorded: false,
            ..Accession::default()
        };
        a.flaw_corrections
            .insert(Flaw::CollectorCertification, certification);
        a.flaw_corrections.insert(Flaw::Temperature, temperature);
        a
    }

    #[test]
    fn a_corrected_signature_and_an_uncorrected_temperature_flaw_are_reported() {
        let out = accession(
            &p2001(),
            &two_flaws(Correction::Corrected, Correction::Expired),
        );
        assert_eq!(out.outcome, Outcome::Test);
        assert_eq!(
            out.remarks,
            [
                "Correctable flaw: collector's certification omission corrected by signed statement (40.83(e)(2), 40.205(b)(1)).",
                "Specimen temperature not recorded (40.83(f)) not corrected within 5 business days; result reported (40.83(f)(2)).",
            ]
        );
    }

    #[test]
    fn an_uncorrected_signature_rejects_even_when_the_temperature_was_corrected() {
        let out = accession(
            &p2001(),
            &two_flaws(Correction::Expired, Correction::Corrected),
        );
        assert_eq!(out.outcome, Outcome::Rejected);
        assert_eq!(
            out.remarks,
            [
                "Rejected for testing: collector's signature missing from the certification statement (40.83(e)) not corrected within 5 business days."
            ]
        );
        // The same with both uncorrected: the signature rejects, the temperature is not named.
        let out = accession(
            &p2001(),
            &two_flaws(Correction::Expired, Correction::Expired),
        );
        assert_eq!(out.outcome, Outcome::Rejected);
        assert_eq!(out.remarks.len(), 1);
        assert!(out.remarks[0].contains("40.83(e)"), "{:?}", out.remarks);
    }

    #[test]
    fn the_hold_names_only_the_flaws_still_open() {
        let out = accession(
            &p2001(),
            &two_flaws(Correction::Corrected, Correction::None),
        );
        let Outcome::Hold(h) = &out.outcome else {
            panic!("not held: {out:?}");
        };
        assert!(
            h.reason.contains("temperature not recorded"),
            "{}",
            h.reason
        );
        assert!(!h.reason.contains("signature"), "{}", h.reason);
        assert!(out.remarks[0].contains("corrected by signed statement"));
        // Both corrected, one by one: tested, both corrections remarked.
        let out = accession(
            &p2001(),
            &two_flaws(Correction::Corrected, Correction::Corrected),
        );
        assert_eq!(out.outcome, Outcome::Test);
        assert_eq!(out.remarks.len(), 2);
        assert!(out.remarks.iter().all(|r| r.contains("corrected by")));
    }

    #[test]
    fn a_rejecting_expiry_does_not_wait_for_another_open_flaw() {
        let mut a = two_flaws(Correction::None, Correction::None);
        a.form = Form::ExpiredFederal;
        a.flaw_corrections.insert(Flaw::Form, Correction::Expired);
        let out = accession(&p2001(), &a);
        assert_eq!(out.outcome, Outcome::Rejected);
        assert!(out.remarks[0].contains("40.83(g)"), "{:?}", out.remarks);
    }

    #[test]
    fn a_case_without_per_flaw_state_applies_its_correction_to_every_flaw() {
        let mut a = two_flaws(Correction::None, Correction::None);
        a.flaw_corrections.clear();
        a.correction = Correction::Expired;
        assert_eq!(accession(&p2001(), &a).outcome, Outcome::Rejected);
        a.correction = Correction::Corrected;
        assert_eq!(accession(&p2001(), &a).outcome, Outcome::Test);
        // A flaw's own state wins over the case's.
        a.flaw_corrections
            .insert(Flaw::CollectorCertification, Correction::Expired);
        assert_eq!(accession(&p2001(), &a).outcome, Outcome::Rejected);
        assert_eq!(correction_of(&a, Flaw::Temperature), Correction::Corrected);
    }
}
