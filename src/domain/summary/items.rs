//! The items of Appendix D (the employer summary) and Appendix E (the summary to DOT) as
//! today's text lists them, with what the specimen record says that counts for each.
//!
//! Sources: Appendix D and Appendix E to Part 40 as published by ODAPC
//! (transportation.gov/odapc/part40/Appendix-D, -E; 82 FR 52247 and 88 FR 27596), and the
//! current-edition notes (today's list adds hydrocodone, hydromorphone, oxycodone and
//! oxymorphone under the opioids and drops MDEA, which the 2010 list had). Each item below names
//! its paragraph. What could not be verified against the text is marked UNVERIFIED.

use crate::domain::rules::SpecimenType;
use serde::Serialize;

/// The reason for test as the CCF (Step 1) gives it, as the summaries count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TestReason {
    PreEmployment,
    PostAccident,
    Random,
    ReasonableSuspicionCause,
    ReturnToDuty,
    FollowUp,
    /// The CCF's "Other" box. Appendix E item 3 lists it; Appendix D does not (a DOT test has one
    /// of the six reasons), so the employer summary shows it apart, outside the appendix items,
    /// for its reasons to add up to the total.
    Other,
    /// No reason on the CCF: Appendix D 1(g) "Type of Test Not Noted on CCF".
    NotNoted,
}

impl TestReason {
    pub const ALL: [TestReason; 8] = [
        TestReason::PreEmployment,
        TestReason::PostAccident,
        TestReason::Random,
        TestReason::ReasonableSuspicionCause,
        TestReason::ReturnToDuty,
        TestReason::FollowUp,
        TestReason::Other,
        TestReason::NotNoted,
    ];

    /// The record's reason (the accession schema's tokens); anything else is "not noted".
    pub fn from_ccf(reason: Option<&str>) -> TestReason {
        match reason.map(str::trim) {
            Some("pre-employment") => TestReason::PreEmployment,
            Some("post-accident") => TestReason::PostAccident,
            Some("random") => TestReason::Random,
            Some("reasonable-suspicion") => TestReason::ReasonableSuspicionCause,
            Some("return-to-duty") => TestReason::ReturnToDuty,
            Some("follow-up") => TestReason::FollowUp,
            Some("other") => TestReason::Other,
            _ => TestReason::NotNoted,
        }
    }

    /// The item's words in Appendix E item 3 (and Appendix D 1(a)-(g)).
    pub fn words(self) -> &'static str {
        match self {
            TestReason::PreEmployment => "Pre-Employment",
            TestReason::PostAccident => "Post-Accident",
            TestReason::Random => "Random",
            TestReason::ReasonableSuspicionCause => "Reasonable Suspicion/Cause",
            TestReason::ReturnToDuty => "Return-to-Duty",
            TestReason::FollowUp => "Follow-up",
            TestReason::Other => "Other",
            TestReason::NotNoted => "Type of Test Not Noted on CCF",
        }
    }
}

/// The DOT agency the CCF (Step 1) names, Appendix E item 2: FMCSA, FAA, FRA, FTA, PHMSA or
/// USCG.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum DotAgency {
    #[serde(rename = "FMCSA")]
    Fmcsa,
    #[serde(rename = "FAA")]
    Faa,
    #[serde(rename = "FRA")]
    Fra,
    #[serde(rename = "FTA")]
    Fta,
    #[serde(rename = "PHMSA")]
    Phmsa,
    #[serde(rename = "USCG")]
    Uscg,
    /// The LIMS did not say (the CCF box is not on every older record).
    #[serde(rename = "not_noted")]
    NotNoted,
}

impl DotAgency {
    /// The record's agency (the accession schema's tokens: `fmcsa`, `faa`, ...).
    pub fn from_ccf(agency: Option<&str>) -> DotAgency {
        match agency.map(str::trim) {
            Some("fmcsa") => DotAgency::Fmcsa,
            Some("faa") => DotAgency::Faa,
            Some("fra") => DotAgency::Fra,
            Some("fta") => DotAgency::Fta,
            Some("phmsa") => DotAgency::Phmsa,
            Some("uscg") => DotAgency::Uscg,
            _ => DotAgency::NotNoted,
        }
    }
}

/// One drug of the positives (Appendix D A.4(a)-(e); Appendix E D.1-5), with the analytes the
/// appendix breaks out under it and every analyte key of the editions that counts for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drug {
    pub key: &'static str,
    /// Appendix D A.4 (urine).
    pub urine_words: &'static str,
    /// Appendix E D (both specimen types); used for oral fluid in Appendix D B as well.
    /// UNVERIFIED: the exact words of Appendix D B.4 (oral fluid) could not be read; Appendix
    /// E's are used.
    pub dot_words: &'static str,
    /// The analytes broken out under the drug: (key in the rule profiles, the appendix's words).
    pub analytes: &'static [(&'static str, &'static str)],
    /// Analyte keys that count for the drug without a line of their own.
    pub also: &'static [&'static str],
}

/// The drugs in the appendices' order. Every analyte of every shipped DOT edition maps here
/// (tested): THCA (urine) and THC (oral fluid) to marijuana; benzoylecgonine and cocaine to
/// cocaine; the opioids; PCP; the amphetamines. MDEA (the 2010 list) is tested by no shipped
/// edition (the 2010 edition is not shipped), and today's list drops it.
pub const DRUGS: [Drug; 5] = [
    Drug {
        key: "marijuana",
        urine_words: "Marijuana Metabolite",
        dot_words: "Marijuana or Marijuana Metabolite",
        analytes: &[],
        also: &["thca", "thc"],
    },
    Drug {
        key: "cocaine",
        urine_words: "Cocaine Metabolite",
        dot_words: "Cocaine and/or Cocaine Metabolite",
        analytes: &[],
        also: &["benzoylecgonine", "cocaine"],
    },
    Drug {
        key: "opioids",
        urine_words: "Opioids",
        dot_words: "Opioids",
        analytes: &[
            ("codeine", "Codeine"),
            ("morphine", "Morphine"),
            ("6am", "6-AM"),
            ("hydrocodone", "Hydrocodone"),
            ("hydromorphone", "Hydromorphone"),
            ("oxycodone", "Oxycodone"),
            ("oxymorphone", "Oxymorphone"),
        ],
        also: &[],
    },
    Drug {
        key: "phencyclidine",
        urine_words: "Phencyclidine",
        dot_words: "Phencyclidine",
        analytes: &[],
        also: &["pcp"],
    },
    Drug {
        key: "amphetamines",
        urine_words: "Amphetamines",
        dot_words: "Amphetamines",
        analytes: &[
            ("amphetamine", "Amphetamine"),
            ("methamphetamine", "Methamphetamine"),
            ("mdma", "MDMA"),
            ("mda", "MDA"),
        ],
        also: &[],
    },
];

/// The drug (index in [`DRUGS`]) an analyte key counts for, and its line under it if it has one.
pub fn drug_of(analyte: &str) -> Option<(usize, Option<usize>)> {
    DRUGS.iter().enumerate().find_map(|(i, d)| {
        if let Some(j) = d.analytes.iter().position(|(k, _)| *k == analyte) {
            Some((i, Some(j)))
        } else if d.also.contains(&analyte) {
            Some((i, None))
        } else {
            None
        }
    })
}

/// Appendix D's part for a specimen type: "A. Urine Specimens", "B. Oral Fluid Specimens".
pub fn appendix_d_part(t: SpecimenType) -> &'static str {
    match t {
        SpecimenType::Urine => "A. Urine Specimens",
        SpecimenType::OralFluid => "B. Oral Fluid Specimens",
    }
}

/// The words of a drug in the summary of specimen type `t` to the employer.
pub fn employer_words(d: &Drug, t: SpecimenType) -> &'static str {
    match t {
        SpecimenType::Urine => d.urine_words,
        SpecimenType::OralFluid => d.dot_words,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::rules::{Profile, Program};

    const PROFILES: [&str; 4] = [
        include_str!("../../../config/profiles/part40-2001.toml"),
        include_str!("../../../config/profiles/part40-2023.toml"),
        include_str!("../../../config/profiles/part40-2023-oral-fluid.toml"),
        include_str!("../../../config/profiles/hhs-urine-2025.toml"),
    ];

    /// Every analyte of every shipped DOT edition is counted under a drug of the appendices: a
    /// new edition that adds one fails here until the appendix's list is brought along.
    #[test]
    fn every_analyte_of_the_shipped_dot_editions_has_its_drug() {
        let mut seen = 0;
        for text in PROFILES {
            let p = Profile::parse(text, None).unwrap();
            if p.program != Program::Dot {
                continue;
            }
            for c in &p.classes {
                for a in &c.analytes {
                    assert!(
                        drug_of(&a.key).is_some(),
                        "{}: {} has no drug",
                        p.name,
                        a.key
                    );
                    seen += 1;
                }
            }
        }
        assert!(seen > 20, "the DOT editions were read ({seen} analytes)");
    }

    /// Today's Appendix D lists the opioids (codeine, morphine, 6-AM, hydrocodone,
    /// hydromorphone, oxycodone, oxymorphone) and the amphetamines (amphetamine,
    /// methamphetamine, MDMA, MDA), without the 2010 list's MDEA.
    #[test]
    fn the_analytes_broken_out_are_todays_list() {
        let keys = |k: &str| -> Vec<&str> {
            DRUGS
                .iter()
                .find(|d| d.key == k)
                .unwrap()
                .analytes
                .iter()
                .map(|(a, _)| *a)
                .collect()
        };
        assert_eq!(
            keys("opioids"),
            [
                "codeine",
                "morphine",
                "6am",
                "hydrocodone",
                "hydromorphone",
                "oxycodone",
                "oxymorphone"
            ]
        );
        assert_eq!(
            keys("amphetamines"),
            ["amphetamine", "methamphetamine", "mdma", "mda"]
        );
        assert_eq!(drug_of("mdea"), None);
        assert_eq!(drug_of("thc"), Some((0, None)));
        assert_eq!(drug_of("6am"), Some((2, Some(2))));
        assert_eq!(
            DRUGS.map(|d| d.urine_words),
            [
                "Marijuana Metabolite",
                "Cocaine Metabolite",
                "Opioids",
                "Phencyclidine",
                "Amphetamines"
            ]
        );
    }

    #[test]
    fn reasons_and_agencies_from_the_record() {
        assert_eq!(TestReason::from_ccf(Some("random")), TestReason::Random);
        assert_eq!(
            TestReason::from_ccf(Some("reasonable-suspicion")),
            TestReason::ReasonableSuspicionCause
        );
        assert_eq!(TestReason::from_ccf(None), TestReason::NotNoted);
        assert_eq!(TestReason::from_ccf(Some("whim")), TestReason::NotNoted);
        assert_eq!(TestReason::from_ccf(Some("other")), TestReason::Other);
        assert_eq!(DotAgency::from_ccf(Some("fmcsa")), DotAgency::Fmcsa);
        assert_eq!(DotAgency::from_ccf(None), DotAgency::NotNoted);
        assert_eq!(
            serde_json::to_string(&DotAgency::Phmsa).unwrap(),
            "\"PHMSA\""
        );
    }
}
