//! The host query (LIS2-A2 request-information record, Q): an analyzer asks which tests to run
//! for a sample ID; custodian answers with an order record (O) naming the analyzer's codes for
//! the tests of that specimen's edition and panel, or with the "no information" answer (a
//! terminator with code `I`).
//!
//! Which tests ([`decide`], pure):
//! - only for a specimen accessioned, judged by an edition (not held untested), not released
//!   and not rejected for testing: a fatal flaw stops testing (40.83(d)), and so does a
//!   correctable flaw not corrected in time (40.83(e)(3), (g)(2));
//! - initial tests whose target means a class of the specimen's edition (directly or through
//!   its `measured_as`), as the panel guard reads them (40.13(c), 40.82);
//! - validity, adulterant and interference tests when the edition requires validity testing
//!   (urine: 40.91 in 2001, 40.87 today; none for oral fluid);
//! - confirmation tests only for the analytes of a class whose initial result is at or above
//!   its initial cutoff in the specimen's edition: a negative screen is not confirmed.

use super::records::{Delimiters, Message, unescape};
use super::results::{AstmMapping, UseError, valid_specimen_id};
use crate::codec::hl7::Kind;
use crate::domain::rules::{ProfileSet, ResultCategory};
use crate::domain::specimen::{ResultKind, SpecimenRecord};

/// Why a query is answered "no information".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoInformation {
    /// No accession is stored for the sample ID.
    Unknown,
    /// Rejected for testing (a fatal flaw, 40.83(d), or a flaw not corrected in time).
    Rejected,
    /// Held untested: no edition judges it.
    Untested,
    /// Already released.
    Released,
    /// Nothing this analyzer runs is due (e.g. a confirmation analyzer and a negative screen).
    NothingToOrder,
}

impl NoInformation {
    pub fn key(self) -> &'static str {
        match self {
            NoInformation::Unknown => "unknown",
            NoInformation::Rejected => "rejected",
            NoInformation::Untested => "untested",
            NoInformation::Released => "released",
            NoInformation::NothingToOrder => "nothing_to_order",
        }
    }
}

/// The answer to one queried sample ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The analyzer's test codes to run, in mapping order.
    Orders(Vec<String>),
    NoInformation(NoInformation),
}

impl Answer {
    /// A label for metrics: `orders` or the reason for no information.
    pub fn key(&self) -> &'static str {
        match self {
            Answer::Orders(_) => "orders",
            Answer::NoInformation(n) => n.key(),
        }
    }
}

/// One queried sample ID: the request record's position and the ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub index: usize,
    pub specimen_id: String,
}

/// The sample IDs a message's request records ask about (each repetition of the mapped field
/// is one). A request whose status code (Q-13) is `A` cancels the last request: nothing to
/// answer.
pub fn queries(m: &Message, mapping: &AstmMapping) -> Result<Vec<Query>, UseError> {
    let p = mapping.query_specimen_id;
    let d = &m.delimiters;
    let mut out = Vec::new();
    for q in m.of_kind('Q') {
        let index = q.index;
        if q.field(13).trim() == "A" {
            continue;
        }
        let reps: Vec<&str> = q.repetitions(p.field, d).collect();
        for r in 1..=reps.len() {
            let raw = q.component(p.field, r, p.component, d);
            let id = unescape(raw, d)
                .ok_or(UseError::BadEscape { index })?
                .trim()
                .to_owned();
            if id.is_empty() {
                return Err(UseError::MissingSpecimenId { index });
            }
            if !valid_specimen_id(&id) {
                return Err(UseError::InvalidSpecimenId { index });
            }
            out.push(Query {
                index,
                specimen_id: id,
            });
        }
    }
    Ok(out)
}

/// What to answer for a specimen (its record, if any) with this analyzer's mapping. Pure.
pub fn decide(
    rec: Option<&SpecimenRecord>,
    profiles: &ProfileSet,
    mapping: &AstmMapping,
) -> Answer {
    let Some(rec) = rec.filter(|r| r.accession.is_some()) else {
        return Answer::NoInformation(NoInformation::Unknown);
    };
    if rec.release.is_some() {
        return Answer::NoInformation(NoInformation::Released);
    }
    let rejected = rec
        .evaluation
        .as_ref()
        .is_some_and(|e| e.verdict.results.contains(&ResultCategory::Rejected));
    if rejected {
        return Answer::NoInformation(NoInformation::Rejected);
    }
    if rec.untested_reason().is_some() {
        return Answer::NoInformation(NoInformation::Untested);
    }
    let Some(profile) = rec.profile_name().and_then(|n| profiles.get(n)) else {
        return Answer::NoInformation(NoInformation::Untested);
    };
    let validity = !profile.validity_tests.is_empty();
    let screened_at_cutoff = |class_key: &str| {
        rec.results.iter().any(|r| {
            r.kind == ResultKind::Initial
                && profile.class_for_target(&r.target).is_some_and(|c| {
                    c.key == class_key && r.value.is_some_and(|v| v >= c.initial_cutoff)
                })
        })
    };
    let codes: Vec<String> = mapping
        .tests
        .iter()
        .filter(|t| match t.kind {
            Kind::Initial => profile.class_for_target(&t.target).is_some(),
            Kind::Confirmation => profile
                .analyte(&t.target)
                .is_some_and(|(class, _)| screened_at_cutoff(&class.key)),
            Kind::Validity | Kind::Adulterant | Kind::Interference => validity,
        })
        .map(|t| t.code.clone())
        .collect();
    if codes.is_empty() {
        Answer::NoInformation(NoInformation::NothingToOrder)
    } else {
        Answer::Orders(codes)
    }
}

/// `YYYYMMDDHHMMSS` (UTC) for epoch milliseconds (E1394 date and time).
pub fn timestamp(ms: u64) -> String {
    crate::core::clock::rfc3339(ms)
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect()
}

/// The answer message for one queried sample ID, records ending with CR: header, then a
/// patient and an order record naming the tests (terminator `N`), or the terminator alone with
/// `I` (no information available from the last query).
pub fn answer_message(
    specimen_id: &str,
    answer: &Answer,
    mapping: &AstmMapping,
    now_ms: u64,
) -> Vec<u8> {
    let d = Delimiters::default();
    let sep = (d.field as char).to_string();
    let comp = (d.component as char).to_string();
    let rep = (d.repeat as char).to_string();
    let mut records = vec![format!(
        "{}|||custodian|||||||P|1|{}",
        d.header(),
        timestamp(now_ms)
    )];
    match answer {
        Answer::Orders(codes) => {
            records.push("P|1".to_owned());
            // O-1 .. O-26: the specimen ID where the analyzer will send it back, the tests, a
            // routine priority (O-6 R), action code N (new order, O-12), report type O (an
            // order, O-26).
            let mut fields = vec![String::new(); 26];
            fields[0] = "O".into();
            fields[1] = "1".into();
            let at = mapping.specimen_id;
            fields[at.field - 1] =
                format!("{}{}", comp.repeat(at.component - 1), d.escape(specimen_id));
            let tc = mapping.test_code.component;
            fields[4] = codes
                .iter()
                .map(|c| format!("{}{}", comp.repeat(tc - 1), d.escape(c)))
                .collect::<Vec<_>>()
                .join(&rep);
            fields[5] = "R".into();
            fields[11] = "N".into();
            fields[25] = "O".into();
            records.push(fields.join(&sep));
            records.push("L|1|N".to_owned());
        }
        Answer::NoInformation(_) => records.push("L|1|I".to_owned()),
    }
    let mut text = records.join("\r");
    text.push('\r');
    text.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::astm::records::parse;
    use crate::domain::rules::Profile;

    fn profiles() -> ProfileSet {
        let mut set = ProfileSet::new();
        for (n, t) in [
            (
                "part40-2001",
                include_str!("../../../config/profiles/part40-2001.toml"),
            ),
            (
                "part40-2023",
                include_str!("../../../config/profiles/part40-2023.toml"),
            ),
            (
                "part40-2023-oral-fluid",
                include_str!("../../../config/profiles/part40-2023-oral-fluid.toml"),
            ),
        ] {
            set.insert(Profile::parse(t, Some(n)).unwrap());
        }
        set
    }

    fn mapping() -> AstmMapping {
        let text = r#"
[[test]]
code = "THC50"
kind = "initial"
target = "marijuana"
unit = "ng/mL"
[[test]]
code = "OPI2000"
kind = "initial"
target = "opiates"
unit = "ng/mL"
[[test]]
code = "6AM10"
kind = "initial"
target = "6am"
unit = "ng/mL"
[[test]]
code = "CREA"
kind = "validity"
target = "creatinine"
unit = "mg/dL"
[[test]]
code = "THCAC"
kind = "confirmation"
target = "thca"
unit = "ng/mL"
"#;
        toml::from_str(text).unwrap()
    }

    /// A record accessioned and judged by `profile`, with the findings `findings`.
    fn record_with(profile: &str, findings: crate::domain::rules::Accession) -> SpecimenRecord {
        record_of(profile, findings, Default::default())
    }

    fn record_of(
        profile: &str,
        findings: crate::domain::rules::Accession,
        specimen_type: crate::domain::rules::SpecimenType,
    ) -> SpecimenRecord {
        let acc = crate::domain::specimen::Accession {
            ccf: Default::default(),
            findings,
            profile: Some(profile.to_owned()),
            program: Default::default(),
            specimen_type,
            document: "acc-1.xml".into(),
            received_at_ms: 1,
            correction_initiated_on: None,
        };
        let mut rec = SpecimenRecord::new("S1", 0);
        use crate::domain::rules::SpecimenType;
        rec.attach_accession_for(
            acc,
            &profiles(),
            profile,
            &[SpecimenType::Urine, SpecimenType::OralFluid],
            0,
        )
        .unwrap();
        rec
    }

    fn record(profile: &str) -> SpecimenRecord {
        record_with(profile, Default::default())
    }

    fn initial(target: &str, value: &str) -> crate::domain::specimen::ResultEntry {
        crate::domain::specimen::ResultEntry {
            kind: ResultKind::Initial,
            target: target.into(),
            value: Some(value.parse().unwrap()),
            unit: "ng/mL".into(),
            bottle: Default::default(),
            source: crate::domain::specimen::Source::Analyzer {
                analyzer: "ia".into(),
                control_id: "c".into(),
                observation: "1".into(),
            },
            received_at_ms: 2,
            ..Default::default()
        }
    }

    #[test]
    fn unknown_and_not_accessioned_get_no_information() {
        assert_eq!(
            decide(None, &profiles(), &mapping()),
            Answer::NoInformation(NoInformation::Unknown)
        );
        let bare = SpecimenRecord::new("S1", 0);
        assert_eq!(
            decide(Some(&bare), &profiles(), &mapping()),
            Answer::NoInformation(NoInformation::Unknown)
        );
    }

    #[test]
    fn orders_follow_the_edition_panel() {
        let rec = record("part40-2001");
        assert_eq!(
            decide(Some(&rec), &profiles(), &mapping()),
            Answer::Orders(vec!["THC50".into(), "OPI2000".into(), "CREA".into()]),
            "2001: no 6-AM initial test; no confirmation before a non-negative screen"
        );
        let rec = record("part40-2023");
        assert_eq!(
            decide(Some(&rec), &profiles(), &mapping()),
            Answer::Orders(vec![
                "THC50".into(),
                "OPI2000".into(),
                "6AM10".into(),
                "CREA".into()
            ])
        );
    }

    #[test]
    fn confirmation_only_after_a_screen_at_or_above_the_cutoff() {
        let mut rec = record("part40-2001");
        let p = profiles();
        rec.attach_results(vec![initial("marijuana", "49")], &p, "part40-2001", 3)
            .unwrap();
        let codes = |r: &SpecimenRecord| match decide(Some(r), &p, &mapping()) {
            Answer::Orders(c) => c,
            other => panic!("{other:?}"),
        };
        assert!(
            !codes(&rec).contains(&"THCAC".to_string()),
            "below the 50 ng/mL cutoff"
        );
        rec.attach_results(vec![initial("marijuana", "50")], &p, "part40-2001", 4)
            .unwrap();
        assert!(codes(&rec).contains(&"THCAC".to_string()), "at the cutoff");
    }

    #[test]
    fn rejected_released_and_untested_get_no_information() {
        let fatal = crate::domain::rules::Accession {
            id_matches: false,
            ..Default::default()
        };
        let rec = record_with("part40-2001", fatal);
        assert_eq!(
            decide(Some(&rec), &profiles(), &mapping()),
            Answer::NoInformation(NoInformation::Rejected)
        );
        assert_eq!(
            Answer::NoInformation(NoInformation::Rejected).key(),
            "rejected"
        );
        let mut rec = record("part40-2001");
        rec.release = Some(crate::domain::specimen::Release {
            report_id: "R1".into(),
            released_at_ms: 5,
            scientist: "Dr. Test".into(),
            meaning: "reviewed and released".into(),
            content_sha256: String::new(),
        });
        assert_eq!(
            decide(Some(&rec), &profiles(), &mapping()),
            Answer::NoInformation(NoInformation::Released)
        );
        let mut rec = record("part40-2001");
        rec.edition = Some(crate::domain::specimen::Edition::Untested {
            reason: "laboratory not certified for oral fluid".into(),
        });
        assert_eq!(
            decide(Some(&rec), &profiles(), &mapping()),
            Answer::NoInformation(NoInformation::Untested)
        );
    }

    #[test]
    fn oral_fluid_orders_no_validity_tests() {
        let rec = record_of(
            "part40-2023-oral-fluid",
            Default::default(),
            crate::domain::rules::SpecimenType::OralFluid,
        );
        match decide(Some(&rec), &profiles(), &mapping()) {
            Answer::Orders(c) => assert!(!c.contains(&"CREA".to_string()), "{c:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn queries_read_the_mapped_component_of_each_repetition() {
        let text = "H|\\^&\rQ|1|^S-1\\^S-2||^^^ALL||||||||O\rQ|2|^S-3||||||||||A\rL|1|N\r";
        let m = parse(text.as_bytes()).unwrap();
        let q = queries(&m, &mapping()).unwrap();
        let ids: Vec<&str> = q.iter().map(|q| q.specimen_id.as_str()).collect();
        assert_eq!(
            ids,
            ["S-1", "S-2"],
            "the cancelled request (Q-13 A) asks nothing"
        );
        let bad = parse(b"H|\\^&\rQ|1|^S 1\rL|1\r").unwrap();
        assert_eq!(
            queries(&bad, &mapping()),
            Err(UseError::InvalidSpecimenId { index: 2 })
        );
        let empty = parse(b"H|\\^&\rQ|1|\rL|1\r").unwrap();
        assert_eq!(
            queries(&empty, &mapping()),
            Err(UseError::MissingSpecimenId { index: 2 })
        );
    }

    #[test]
    fn answer_messages_parse_back() {
        let orders = answer_message(
            "S-1",
            &Answer::Orders(vec!["THC50".into(), "OP|I".into()]),
            &mapping(),
            1_795_434_848_123,
        );
        let m = parse(&orders).unwrap();
        let d = m.delimiters;
        assert_eq!(m.header().field(14), "20261123115408");
        assert_eq!(m.header().field(12), "P");
        let o = m.of_kind('O').next().unwrap();
        assert_eq!(o.len(), 26);
        assert_eq!(o.component(3, 1, 1, &d), "S-1");
        assert_eq!(o.component(5, 1, 4, &d), "THC50");
        assert_eq!(
            unescape(o.component(5, 2, 4, &d), &d).as_deref(),
            Some("OP|I")
        );
        assert_eq!((o.field(6), o.field(12), o.field(26)), ("R", "N", "O"));
        assert_eq!(m.records.last().unwrap().field(3), "N");
        let none = answer_message(
            "S-1",
            &Answer::NoInformation(NoInformation::Unknown),
            &mapping(),
            0,
        );
        let m = parse(&none).unwrap();
        assert_eq!(m.records.len(), 2);
        assert_eq!(m.records[1].field(3), "I");
        assert!(!String::from_utf8_lossy(&none).contains("S-1"));
    }
}
