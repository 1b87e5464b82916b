//! Unit tests of the engine: every cutoff at, just below and just above its edge under both
//! stock profiles, each flaw, each redesignation, combinations, and properties.

use super::*;
use proptest::prelude::*;
use std::str::FromStr;

fn p2001() -> Profile {
    Profile::parse(
        include_str!("../../../config/profiles/part40-2001.toml"),
        Some("part40-2001"),
    )
    .unwrap()
}

fn p_oral_fluid() -> Profile {
    Profile::parse(
        include_str!("../../../config/profiles/part40-2023-oral-fluid.toml"),
        Some("part40-2023-oral-fluid"),
    )
    .unwrap()
}

fn p_hhs_urine() -> Profile {
    Profile::parse(
        include_str!("../../../config/profiles/hhs-urine-2025.toml"),
        Some("hhs-urine-2025"),
    )
    .unwrap()
}

fn p2023() -> Profile {
    Profile::parse(
        include_str!("../../../config/profiles/part40-2023.toml"),
        Some("part40-2023"),
    )
    .unwrap()
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

/// One step below/above a cutoff at the precision instruments report.
fn step() -> Decimal {
    d("0.1")
}

fn drug_case(class: &str, screen: Decimal, confirm: &[(&str, Decimal)]) -> Specimen {
    let mut s = Specimen::default();
    s.initial.insert(class.into(), screen);
    for (a, v) in confirm {
        s.confirmation.insert((*a).into(), *v);
    }
    s
}

fn eval(p: &Profile, s: &Specimen) -> Verdict {
    evaluate(p, s).unwrap()
}

fn results(v: &Verdict) -> Vec<&'static str> {
    v.results.iter().map(|r| r.key()).collect()
}

/// Every analyte of a profile, at, just below and just above both cutoffs.
fn check_all_cutoffs(p: &Profile) {
    for class in &p.classes {
        for a in &class.analytes {
            // Supply what any requirement needs so the cutoff alone decides.
            let mut extra: Vec<(&str, Decimal)> = Vec::new();
            if let Some(r) = &a.requires {
                let (req_class, req_a) = p.analyte(&r.analyte).unwrap();
                assert_eq!(req_class.key, class.key, "requirements stay within a class");
                extra.push((
                    r.analyte.as_str(),
                    r.at_least.max(req_a.confirmation_cutoff),
                ));
            }
            let ic = class.initial_cutoff;
            let cc = a.confirmation_cutoff;
            let mk = |screen: Decimal, conf: Decimal| {
                let mut c = extra.clone();
                c.push((a.key.as_str(), conf));
                drug_case(&class.key, screen, &c)
            };
            // At both cutoffs: positive.
            let v = eval(p, &mk(ic, cc));
            assert!(
                v.positive_analytes.contains(&a.key),
                "{} {} at cutoffs",
                p.name,
                a.key
            );
            assert_eq!(results(&v), ["positive"]);
            assert!(v.retain_one_year);
            // Above both: positive.
            let v = eval(p, &mk(ic + step(), cc + step()));
            assert!(
                v.positive_analytes.contains(&a.key),
                "{} {} above",
                p.name,
                a.key
            );
            // Confirmation just below: not positive for this analyte.
            let v = eval(p, &mk(ic, cc - step()));
            assert!(
                !v.positive_analytes.contains(&a.key),
                "{} {} conf below",
                p.name,
                a.key
            );
            // Screen just below: the confirmation is never considered.
            let v = eval(p, &mk(ic - step(), cc * d("10")));
            assert!(
                v.positive_analytes.is_empty(),
                "{} {} screen below",
                p.name,
                a.key
            );
            assert_eq!(results(&v), ["negative"]);
            assert!(!v.retain_one_year);
        }
    }
}

#[test]
fn cutoffs_2001_at_below_above() {
    check_all_cutoffs(&p2001());
}

#[test]
fn cutoffs_2023_at_below_above() {
    check_all_cutoffs(&p2023());
}

#[test]
fn cutoff_table_2001_is_the_seed_table() {
    let p = p2001();
    let ic = |k: &str| p.class(k).unwrap().initial_cutoff;
    let cc = |k: &str| p.analyte(k).unwrap().1.confirmation_cutoff;
    assert_eq!(ic("marijuana"), d("50"));
    assert_eq!(cc("thca"), d("15"));
    assert_eq!(ic("cocaine"), d("300"));
    assert_eq!(cc("benzoylecgonine"), d("150"));
    assert_eq!(ic("pcp"), d("25"));
    assert_eq!(cc("pcp"), d("25"));
    assert_eq!(ic("amphetamines"), d("1000"));
    assert_eq!(cc("amphetamine"), d("500"));
    assert_eq!(cc("methamphetamine"), d("500"));
    assert_eq!(ic("opiates"), d("2000"));
    assert_eq!(cc("codeine"), d("2000"));
    assert_eq!(cc("morphine"), d("2000"));
    assert_eq!(cc("6am"), d("10"));
}

#[test]
fn cutoff_table_2023_is_todays_table() {
    let p = p2023();
    let ic = |k: &str| p.class(k).unwrap().initial_cutoff;
    let cc = |k: &str| p.analyte(k).unwrap().1.confirmation_cutoff;
    for (k, v) in [
        ("marijuana", "50"),
        ("cocaine", "150"),
        ("codeine_morphine", "2000"),
        ("hydrocodone_hydromorphone", "300"),
        ("oxycodone_oxymorphone", "100"),
        ("6am", "10"),
        ("pcp", "25"),
        ("amphetamines", "500"),
        ("mdma_mda", "500"),
    ] {
        assert_eq!(ic(k), d(v), "{k}");
    }
    for (k, v) in [
        ("thca", "15"),
        ("benzoylecgonine", "100"),
        ("codeine", "2000"),
        ("morphine", "2000"),
        ("hydrocodone", "100"),
        ("hydromorphone", "100"),
        ("oxycodone", "100"),
        ("oxymorphone", "100"),
        ("6am", "10"),
        ("pcp", "25"),
        ("amphetamine", "250"),
        ("methamphetamine", "250"),
        ("mdma", "250"),
        ("mda", "250"),
    ] {
        assert_eq!(cc(k), d(v), "{k}");
    }
}

#[test]
fn methamphetamine_needs_amphetamine_200_in_2001() {
    let p = p2001();
    for (amp, positive) in [("199.9", false), ("200", true), ("200.1", true)] {
        let v = eval(
            &p,
            &drug_case(
                "amphetamines",
                d("1500"),
                &[("methamphetamine", d("900")), ("amphetamine", d(amp))],
            ),
        );
        assert_eq!(
            v.positive_analytes.contains(&"methamphetamine".to_string()),
            positive,
            "amp {amp}"
        );
        // Amphetamine itself is below its own 500 cutoff.
        assert!(!v.positive_analytes.contains(&"amphetamine".to_string()));
    }
    // Without any amphetamine value at all.
    let v = eval(
        &p,
        &drug_case("amphetamines", d("1500"), &[("methamphetamine", d("5000"))]),
    );
    assert!(v.positive_analytes.is_empty());
}

#[test]
fn six_am_only_with_morphine_2000_in_2001() {
    let p = p2001();
    for (morphine, six_am_positive) in [("1999.9", false), ("2000", true), ("2000.1", true)] {
        let v = eval(
            &p,
            &drug_case(
                "opiates",
                d("2500"),
                &[("morphine", d(morphine)), ("6am", d("10"))],
            ),
        );
        assert_eq!(
            v.positive_analytes.contains(&"6am".to_string()),
            six_am_positive,
            "{morphine}"
        );
    }
    let v = eval(
        &p,
        &drug_case(
            "opiates",
            d("2500"),
            &[("morphine", d("2500")), ("6am", d("9.9"))],
        ),
    );
    assert_eq!(v.positive_analytes, vec!["morphine".to_string()]);
}

#[test]
fn six_am_stands_alone_in_2023() {
    let p = p2023();
    let v = eval(&p, &drug_case("6am", d("10"), &[("6am", d("10"))]));
    assert_eq!(v.positive_analytes, vec!["6am".to_string()]);
}

#[test]
fn morphine_codeine_quantitation_at_15000() {
    // Under the 2001 edition only 40.97(f) quantitates without a request. (Today every positive
    // carries its value, 40.97(a)(2): see positives_carry_their_values_today.)
    for p in [p2001()] {
        let class = if p.name == "part40-2001" {
            "opiates"
        } else {
            "codeine_morphine"
        };
        for analyte in ["morphine", "codeine"] {
            for (value, quantitated) in [("14999.9", false), ("15000", true), ("15000.1", true)] {
                let v = eval(&p, &drug_case(class, d("9000"), &[(analyte, d(value))]));
                assert_eq!(
                    v.quantitations.get(analyte).copied(),
                    quantitated.then(|| d(value)),
                    "{} {analyte} {value}",
                    p.name
                );
            }
        }
    }
}

#[test]
fn mro_request_quantitates_positives_and_validity_measures() {
    let p = p2001();
    let mut s = drug_case("cocaine", d("400"), &[("benzoylecgonine", d("180.5"))]);
    assert!(eval(&p, &s).quantitations.is_empty());
    s.mro_requested_quantitation = true;
    let v = eval(&p, &s);
    assert_eq!(v.quantitations.get("benzoylecgonine"), Some(&d("180.5")));
    assert_eq!(v.quantitations.len(), 1);

    // Substituted: creatinine and specific gravity behind it.
    let mut s = Specimen::default();
    s.validity.creatinine = Some(d("3"));
    s.validity.specific_gravity = Some(d("1.0005"));
    s.mro_requested_quantitation = true;
    let v = eval(&p, &s);
    assert_eq!(results(&v), ["substituted"]);
    assert_eq!(v.quantitations.get("creatinine"), Some(&d("3")));
    assert_eq!(v.quantitations.get("specific_gravity"), Some(&d("1.0005")));

    // Adulterated by nitrite: the nitrite value only.
    let mut s = Specimen::default();
    s.validity.nitrite = Some(d("700"));
    s.validity.creatinine = Some(d("80"));
    s.mro_requested_quantitation = true;
    let v = eval(&p, &s);
    assert_eq!(v.quantitations.keys().collect::<Vec<_>>(), ["nitrite"]);

    // A negative never carries values, requested or not; an invalid result is not quantitated.
    let mut s = Specimen::default();
    s.validity.nitrite = Some(d("300"));
    s.mro_requested_quantitation = true;
    let v = eval(&p, &s);
    assert_eq!(results(&v), ["invalid"]);
    assert!(v.quantitations.is_empty());
}

fn validity_case(
    creat: Option<&str>,
    sg: Option<&str>,
    ph: Option<&str>,
    nitrite: Option<&str>,
) -> Specimen {
    let mut s = Specimen::default();
    s.validity.creatinine = creat.map(d);
    s.validity.specific_gravity = sg.map(d);
    s.validity.ph = ph.map(d);
    s.validity.nitrite = nitrite.map(d);
    s
}

#[test]
fn dilute_edges_2001() {
    let p = p2001();
    let cases = [
        ("19.9", "1.0029", true),
        ("20", "1.0029", false),
        ("20.1", "1.0029", false),
        ("19.9", "1.003", false),
        ("19.9", "1.0031", false),
        ("5.1", "1.0005", true), // not substituted (creatinine > 5): dilute
    ];
    for (c, sg, dilute) in cases {
        let v = eval(&p, &validity_case(Some(c), Some(sg), None, None));
        assert_eq!(v.dilute, dilute, "creat {c} sg {sg}");
        assert_eq!(results(&v), ["negative"], "creat {c} sg {sg}");
    }
}

#[test]
fn substituted_edges_2001() {
    let p = p2001();
    let cases = [
        ("5", "1.001", true),
        ("5", "1.0011", false),
        ("5.1", "1.001", false),
        ("4.9", "1.0009", true),
        ("5", "1.020", true),
        ("5", "1.0199", false),
        ("0", "1.0201", true),
    ];
    for (c, sg, substituted) in cases {
        let v = eval(&p, &validity_case(Some(c), Some(sg), None, None));
        assert_eq!(
            results(&v).contains(&"substituted"),
            substituted,
            "creat {c} sg {sg}"
        );
        if substituted {
            assert!(!v.dilute, "substituted is never dilute (40.93(a))");
            assert!(v.retain_one_year);
        }
    }
}

#[test]
fn validity_edges_2023() {
    let p = p2023();
    // (creatinine, sg, expected results, dilute)
    let cases: [(&str, &str, &[&str], bool); 10] = [
        ("2", "1.0011", &["negative"], true),
        ("2", "1.0010", &["invalid"], false),
        ("1.9", "1.0010", &["substituted"], false),
        ("1.9", "1.0011", &["invalid"], false),
        ("1.9", "1.0199", &["invalid"], false),
        ("1.9", "1.0200", &["substituted"], false),
        ("19.9", "1.0029", &["negative"], true),
        ("20", "1.0029", &["negative"], false),
        ("19.9", "1.0030", &["negative"], false),
        ("25", "1.0100", &["negative"], false),
    ];
    for (c, sg, want, dilute) in cases {
        let v = eval(&p, &validity_case(Some(c), Some(sg), None, None));
        assert_eq!(results(&v), want, "creat {c} sg {sg}");
        assert_eq!(v.dilute, dilute, "creat {c} sg {sg}");
    }
}

#[test]
fn ph_edges() {
    // (profile, pH, expected)
    let p1 = p2001();
    let p3 = p2023();
    let cases: [(&Profile, &str, &str); 16] = [
        (&p1, "2.9", "adulterated"),
        (&p1, "3", "invalid"),
        (&p1, "4.4", "invalid"),
        (&p1, "4.5", "negative"),
        (&p1, "8.9", "negative"),
        (&p1, "9", "invalid"),
        (&p1, "10.9", "invalid"),
        (&p1, "11", "adulterated"),
        (&p3, "3.9", "adulterated"),
        (&p3, "4", "invalid"),
        (&p3, "4.4", "invalid"),
        (&p3, "4.5", "negative"),
        (&p3, "8.9", "negative"),
        (&p3, "9", "invalid"),
        (&p3, "10.9", "invalid"),
        (&p3, "11", "adulterated"),
    ];
    for (p, ph, want) in cases {
        let v = eval(p, &validity_case(None, None, Some(ph), None));
        assert_eq!(results(&v), [want], "{} pH {ph}", p.name);
    }
}

#[test]
fn nitrite_edges() {
    for p in [p2001(), p2023()] {
        for (n, want) in [
            ("199.9", "negative"),
            ("200", "invalid"),
            ("499.9", "invalid"),
            ("500", "adulterated"),
            ("500.1", "adulterated"),
        ] {
            let v = eval(&p, &validity_case(None, None, None, Some(n)));
            assert_eq!(results(&v), [want], "{} nitrite {n}", p.name);
        }
    }
}

#[test]
fn decimal_edges_are_exact() {
    // 1.003 written as a float must not read as 1.00299999 (which would be dilute).
    let json = r#"{"validity":{"creatinine":12.0,"specific_gravity":1.003}}"#;
    let s: Specimen = serde_json::from_str(json).unwrap();
    let v = eval(&p2001(), &s);
    assert!(!v.dilute);
    let json = r#"{"validity":{"creatinine":5.0,"specific_gravity":1.001}}"#;
    let s: Specimen = serde_json::from_str(json).unwrap();
    assert_eq!(results(&eval(&p2001(), &s)), ["substituted"]);
    let json = r#"{"initial":{"marijuana":50.0},"confirmation":{"thca":15.000}}"#;
    let s: Specimen = serde_json::from_str(json).unwrap();
    assert_eq!(results(&eval(&p2001(), &s)), ["positive"]);
}

#[test]
fn adulterant_and_interference() {
    let p = p2001();
    let mut s = Specimen::default();
    s.validity.adulterants = vec!["pyridine".into()];
    assert_eq!(results(&eval(&p, &s)), ["adulterated"]);
    let mut s = Specimen::default();
    s.validity.interference = true;
    let v = eval(&p, &s);
    assert_eq!(results(&v), ["invalid"]);
    assert!(v.retain_one_year);
    let mut s = Specimen::default();
    s.validity.adulterants = vec![" ".into()];
    assert_eq!(evaluate(&p, &s), Err(CaseError::EmptyAdulterant(0)));
}

#[test]
fn combinations() {
    let p = p2001();
    // positive + adulterated
    let mut s = drug_case("marijuana", d("70"), &[("thca", d("20"))]);
    s.validity.nitrite = Some(d("900"));
    let v = eval(&p, &s);
    assert_eq!(results(&v), ["positive", "adulterated"]);
    // positive + dilute
    let mut s = drug_case("cocaine", d("800"), &[("benzoylecgonine", d("400"))]);
    s.validity.creatinine = Some(d("15"));
    s.validity.specific_gravity = Some(d("1.002"));
    let v = eval(&p, &s);
    assert_eq!(results(&v), ["positive"]);
    assert!(v.dilute);
    // substituted + positive: both reported, never dilute
    let mut s = drug_case("pcp", d("30"), &[("pcp", d("30"))]);
    s.validity.creatinine = Some(d("2"));
    s.validity.specific_gravity = Some(d("1.0005"));
    let v = eval(&p, &s);
    assert_eq!(results(&v), ["positive", "substituted"]);
    assert!(!v.dilute);
    // adulterated + substituted + invalid, in 40.97(a) order
    let mut s = validity_case(Some("1"), Some("1.0005"), Some("12"), Some("300"));
    s.validity.interference = true;
    let v = eval(&p, &s);
    assert_eq!(results(&v), ["adulterated", "substituted", "invalid"]);
    // several positives are sorted
    let mut s = drug_case(
        "amphetamines",
        d("5000"),
        &[("methamphetamine", d("900")), ("amphetamine", d("600"))],
    );
    s.initial.insert("marijuana".into(), d("60"));
    s.confirmation.insert("thca".into(), d("20"));
    let v = eval(&p, &s);
    assert_eq!(
        v.positive_analytes,
        ["amphetamine", "methamphetamine", "thca"]
    );
}

fn accession(f: impl FnOnce(&mut Accession)) -> Specimen {
    let mut s = drug_case("pcp", d("30"), &[("pcp", d("30"))]);
    f(&mut s.accession);
    s
}

#[test]
fn each_fatal_flaw_rejects() {
    let p = p2001();
    let fatal: [fn(&mut Accession); 5] = [
        |a| a.id_matches = false,
        |a| a.collector_name_and_signature = false,
        |a| {
            a.primary_seal = Seal::Broken;
            a.split_seal = SplitSeal::Absent
        },
        |a| {
            a.primary_seal = Seal::Broken;
            a.split_seal = SplitSeal::Broken
        },
        |a| a.primary_sufficient = false,
    ];
    for (i, f) in fatal.into_iter().enumerate() {
        let v = eval(&p, &accession(f));
        assert_eq!(results(&v), ["rejected"], "fatal flaw {i}");
        assert!(v.positive_analytes.is_empty() && v.quantitations.is_empty());
        assert!(!v.retain_one_year && !v.dilute && !v.redesignated && v.hold.is_none());
        assert!(!v.remarks.is_empty(), "a rejection carries its remark");
    }
    // Seal broken with a sealed but insufficient other bottle: still rejected.
    let v = eval(
        &p,
        &accession(|a| {
            a.primary_seal = Seal::Broken;
            a.split_sufficient = false;
        }),
    );
    assert_eq!(results(&v), ["rejected"]);
}

#[test]
fn each_redesignation_case() {
    let p = p2001();
    let cases: [fn(&mut Accession); 4] = [
        |a| {
            a.primary_leaked = true;
            a.primary_sufficient = false
        },
        |a| a.labels_swapped = true,
        |a| a.split_opened_instead = true,
        |a| a.primary_seal = Seal::Broken,
    ];
    for (i, f) in cases.into_iter().enumerate() {
        let v = eval(&p, &accession(f));
        assert!(v.redesignated, "case (h)(1)({})", i + 1);
        assert_eq!(results(&v), ["positive"], "case {i}");
    }
    // (iii) is only possible when the primary is still sealed and the opened bottle holds enough.
    let v = eval(
        &p,
        &accession(|a| {
            a.split_opened_instead = true;
            a.split_sufficient = false;
        }),
    );
    assert!(!v.redesignated);
    assert_eq!(results(&v), ["positive"]);
    // Leaked primary but the other bottle is insufficient and the primary too: rejected.
    let v = eval(
        &p,
        &accession(|a| {
            a.primary_leaked = true;
            a.primary_sufficient = false;
            a.split_sufficient = false;
        }),
    );
    assert_eq!(results(&v), ["rejected"]);
    assert!(!v.redesignated);
    // Leaked primary with enough left and nothing to redesignate to: tested as is.
    let v = eval(
        &p,
        &accession(|a| {
            a.primary_leaked = true;
            a.split_seal = SplitSeal::Absent;
        }),
    );
    assert!(!v.redesignated);
    assert_eq!(results(&v), ["positive"]);
}

#[test]
fn missing_split_is_never_mentioned() {
    for p in [p2001(), p2023()] {
        let cases: [fn(&mut Accession); 5] = [
            |a| a.split_seal = SplitSeal::Absent,
            |a| a.split_seal = SplitSeal::Broken,
            |a| a.split_sufficient = false,
            |a| a.primary_seal = Seal::Broken,
            |a| {
                a.primary_leaked = true;
                a.primary_sufficient = false
            },
        ];
        for f in cases {
            let mut s = accession(f);
            s.validity.creatinine = Some(d("10"));
            s.validity.specific_gravity = Some(d("1.002"));
            s.mro_requested_quantitation = true;
            let v = eval(&p, &s);
            for r in &v.remarks {
                let l = r.to_lowercase();
                assert!(
                    !l.contains("split") && !l.contains("bottle b"),
                    "remark mentions the split: {r}"
                );
            }
        }
    }
}

#[test]
fn correctable_flaws_hold_then_resolve() {
    let p = p2001();
    type Flaw = (fn(&mut Accession), &'static str);
    let flaws: [Flaw; 4] = [
        (|a| a.collector_certification_signed = false, "rejected"),
        (|a| a.temperature_recorded = false, "positive"),
        (|a| a.form = Form::NonFederal, "rejected"),
        (|a| a.form = Form::ExpiredFederal, "rejected"),
    ];
    for (f, on_expiry) in flaws {
        let v = eval(&p, &accession(f));
        assert!(v.results.is_empty(), "held");
        assert_eq!(v.hold.as_ref().map(|h| h.business_days), Some(5));
        assert!(v.positive_analytes.is_empty() && !v.retain_one_year);

        let mut s = accession(f);
        s.accession.correction = Correction::Corrected;
        let v = eval(&p, &s);
        assert_eq!(results(&v), ["positive"]);
        assert!(v.hold.is_none());
        assert!(
            v.remarks.iter().any(|r| r.contains("corrected")),
            "40.97(b)(1)(i)(M) remark"
        );

        let mut s = accession(f);
        s.accession.correction = Correction::Expired;
        let v = eval(&p, &s);
        assert_eq!(results(&v), [on_expiry]);
        assert!(v.hold.is_none());
    }
    // Two flaws, one that rejects on expiry: rejected.
    let mut s = accession(|a| {
        a.temperature_recorded = false;
        a.form = Form::NonFederal;
    });
    s.accession.correction = Correction::Expired;
    assert_eq!(results(&eval(&p, &s)), ["rejected"]);
    // A fatal flaw wins over a hold.
    let v = eval(
        &p,
        &accession(|a| {
            a.collector_certification_signed = false;
            a.id_matches = false;
        }),
    );
    assert_eq!(results(&v), ["rejected"]);
    assert!(v.hold.is_none());
    // A correction with nothing to correct changes nothing.
    let mut s = accession(|_| {});
    s.accession.correction = Correction::Corrected;
    assert_eq!(results(&eval(&p, &s)), ["positive"]);
}

#[test]
fn bad_cases_are_errors_naming_the_key() {
    let p = p2001();
    let mut s = Specimen::default();
    s.initial.insert("codeine_morphine".into(), d("1"));
    assert_eq!(
        evaluate(&p, &s),
        Err(CaseError::UnknownClass(
            "codeine_morphine".into(),
            "part40-2001".into()
        ))
    );
    let mut s = Specimen::default();
    s.confirmation.insert("oxycodone".into(), d("1"));
    assert!(matches!(
        evaluate(&p, &s),
        Err(CaseError::UnknownAnalyte(..))
    ));
    let mut s = Specimen::default();
    s.confirmation.insert("thca".into(), d("-1"));
    assert_eq!(
        evaluate(&p, &s),
        Err(CaseError::Negative("confirmation.thca".into()))
    );
    let s = validity_case(None, None, Some("14.1"), None);
    assert_eq!(evaluate(&p, &s), Err(CaseError::PhOutOfRange));
    let s = validity_case(None, Some("0"), None, None);
    assert_eq!(evaluate(&p, &s), Err(CaseError::SpecificGravityNotPositive));
}

#[test]
fn profiles_are_validated_on_load() {
    for p in [p2001(), p2023()] {
        for c in &p.classes {
            assert!(c.initial_cutoff > Decimal::ZERO);
            for a in &c.analytes {
                assert!(a.confirmation_cutoff > Decimal::ZERO);
            }
        }
    }
}

fn arb_value() -> impl Strategy<Value = Decimal> {
    (0u32..200_000u32).prop_map(|n| Decimal::new(n as i64, 1))
}

fn arb_specimen(p: &'static Profile) -> impl Strategy<Value = Specimen> {
    let classes: Vec<String> = p.classes.iter().map(|c| c.key.clone()).collect();
    let analytes: Vec<String> = p
        .classes
        .iter()
        .flat_map(|c| c.analytes.iter().map(|a| a.key.clone()))
        .collect();
    (
        proptest::collection::vec(arb_value(), classes.len()),
        proptest::collection::vec(arb_value(), analytes.len()),
        proptest::option::of(0u32..400u32),
        proptest::option::of(9900u32..10400u32),
        proptest::option::of(0u32..140u32),
        proptest::option::of(0u32..9000u32),
        any::<[bool; 8]>(),
    )
        .prop_map(move |(iv, cv, creat, sg, ph, nit, flags)| {
            let mut s = Specimen::default();
            for (k, v) in classes.iter().zip(iv) {
                s.initial.insert(k.clone(), v);
            }
            for (k, v) in analytes.iter().zip(cv) {
                s.confirmation.insert(k.clone(), v);
            }
            s.validity.creatinine = creat.map(|n| Decimal::new(n as i64, 1));
            s.validity.specific_gravity = sg.map(|n| Decimal::new(n as i64, 4));
            s.validity.ph = ph.map(|n| Decimal::new(n as i64, 1));
            s.validity.nitrite = nit.map(Decimal::from);
            s.accession.id_matches = !flags[0] || flags[1];
            s.accession.primary_seal = if flags[2] && flags[3] {
                Seal::Broken
            } else {
                Seal::Intact
            };
            s.accession.split_seal = if flags[4] && flags[5] {
                SplitSeal::Absent
            } else {
                SplitSeal::Intact
            };
            s.accession.temperature_recorded = !(flags[6] && flags[7]);
            s.accession.correction = if flags[1] {
                Correction::Expired
            } else {
                Correction::None
            };
            s.mro_requested_quantitation = flags[5];
            s
        })
}

static P2001: std::sync::LazyLock<Profile> = std::sync::LazyLock::new(p2001);
static P2023: std::sync::LazyLock<Profile> = std::sync::LazyLock::new(p2023);

fn properties(
    p: &'static Profile,
    s: Specimen,
    bump: Decimal,
    idx: usize,
) -> Result<(), TestCaseError> {
    let v = evaluate(p, &s).unwrap();
    // Results are non-empty unless held; in 40.97(a) order; negative and rejected stand alone.
    if v.hold.is_some() {
        prop_assert!(v.results.is_empty());
    } else {
        prop_assert!(!v.results.is_empty());
        let mut sorted = v.results.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(&sorted, &v.results);
        if v.results.contains(&ResultCategory::Negative)
            || v.results.contains(&ResultCategory::Rejected)
        {
            prop_assert_eq!(v.results.len(), 1);
        }
    }
    // A rejected specimen never carries a drug result.
    if v.results == [ResultCategory::Rejected] {
        prop_assert!(v.positive_analytes.is_empty() && v.quantitations.is_empty() && !v.dilute);
    }
    // Retention follows the results.
    let keep = v.results.iter().any(|r| {
        matches!(
            r,
            ResultCategory::Positive
                | ResultCategory::Adulterated
                | ResultCategory::Substituted
                | ResultCategory::Invalid
        )
    });
    prop_assert_eq!(v.retain_one_year, keep);
    // Quantitations only for reported positives or validity measures.
    for k in v.quantitations.keys() {
        prop_assert!(v.positive_analytes.contains(k) || profile::Measure::from_key(k).is_some());
    }
    // Raising any value never turns a positive into a negative for that analyte.
    let analytes: Vec<String> = s.confirmation.keys().cloned().collect();
    let classes: Vec<String> = s.initial.keys().cloned().collect();
    let mut raised = s.clone();
    if idx.is_multiple_of(2) {
        let k = &analytes[idx / 2 % analytes.len()];
        *raised.confirmation.get_mut(k).unwrap() += bump;
    } else {
        let k = &classes[idx / 2 % classes.len()];
        *raised.initial.get_mut(k).unwrap() += bump;
    }
    let w = evaluate(p, &raised).unwrap();
    for a in &v.positive_analytes {
        prop_assert!(
            w.positive_analytes.contains(a),
            "raising a value lost positive {}",
            a
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn engine_properties_2001(s in arb_specimen(&P2001), bump in arb_value(), idx in 0usize..64) {
        properties(&P2001, s, bump, idx)?;
    }

    #[test]
    fn engine_properties_2023(s in arb_specimen(&P2023), bump in arb_value(), idx in 0usize..64) {
        properties(&P2023, s, bump, idx)?;
    }

    #[test]
    fn any_json_line_is_answered(text in ".{0,200}") {
        // No input makes evaluation panic; every line gets an output object with an id key.
        let mut set = ProfileSet::new();
        set.insert(P2001.clone());
        let ev = crate::app::evaluate::Evaluator::new(&set, "part40-2001").unwrap();
        let out = ev.line(&text);
        prop_assert!(out.output.get("id").is_some());
    }
}

// ---- Today's edition: the fixes of the editions work ------------------------------------------

#[test]
fn methamphetamine_alone_is_positive_today() {
    // Today's 40.85 table has no amphetamine requirement: methamphetamine at or above 250 is
    // positive with no amphetamine at all.
    let p = p2023();
    for (meth, positive) in [
        ("249.9", false),
        ("250", true),
        ("250.1", true),
        ("800", true),
    ] {
        let v = eval(
            &p,
            &drug_case("amphetamines", d("700"), &[("methamphetamine", d(meth))]),
        );
        assert_eq!(
            v.positive_analytes.contains(&"methamphetamine".to_string()),
            positive,
            "meth {meth}"
        );
        assert_eq!(
            v.quantitations.get("methamphetamine").copied(),
            positive.then(|| d(meth))
        );
    }
    assert!(
        p.classes
            .iter()
            .all(|c| c.analytes.iter().all(|a| a.requires.is_none()))
    );
}

#[test]
fn positives_carry_their_values_today() {
    let p = p2023();
    for (value, quantitated) in [("14999.9", true), ("15000", true), ("1999.9", false)] {
        let v = eval(
            &p,
            &drug_case("codeine_morphine", d("9000"), &[("morphine", d(value))]),
        );
        assert_eq!(
            v.quantitations.get("morphine").copied(),
            quantitated.then(|| d(value)),
            "{value}"
        );
    }
    // The 15,000 rule is 40.85(d) today.
    let v = eval(
        &p,
        &drug_case("codeine_morphine", d("9000"), &[("codeine", d("15000"))]),
    );
    assert!(
        v.remarks.iter().any(|r| r.contains("40.85(d)")),
        "{:?}",
        v.remarks
    );
    assert!(
        !v.remarks.iter().any(|r| r.contains("40.97(f)")),
        "{:?}",
        v.remarks
    );
}

#[test]
fn validity_values_required_today() {
    let p = p2023();
    let with = |f: &dyn Fn(&mut Validity)| {
        let mut s = Specimen::default();
        f(&mut s.validity);
        eval(&p, &s)
    };
    // Negative-dilute: creatinine and SG.
    let v = with(&|v| {
        v.creatinine = Some(d("12"));
        v.specific_gravity = Some(d("1.0025"));
        v.ph = Some(d("6"));
    });
    assert!(v.dilute);
    assert_eq!(
        v.quantitations.keys().collect::<Vec<_>>(),
        ["creatinine", "specific_gravity"]
    );
    // Substituted: creatinine and SG.
    let v = with(&|v| {
        v.creatinine = Some(d("1.9"));
        v.specific_gravity = Some(d("1.0200"));
    });
    assert_eq!(results(&v), ["substituted"]);
    assert_eq!(v.quantitations.get("creatinine"), Some(&d("1.9")));
    assert_eq!(v.quantitations.get("specific_gravity"), Some(&d("1.0200")));
    // Adulterated by nitrite: the nitrite value only.
    let v = with(&|v| {
        v.nitrite = Some(d("500"));
        v.creatinine = Some(d("80"));
        v.specific_gravity = Some(d("1.015"));
    });
    assert_eq!(results(&v), ["adulterated"]);
    assert_eq!(v.quantitations.keys().collect::<Vec<_>>(), ["nitrite"]);
    // Adulterated by pH at both edges.
    for ph in ["3.9", "11"] {
        let v = with(&|v| v.ph = Some(d(ph)));
        assert_eq!(results(&v), ["adulterated"]);
        assert_eq!(v.quantitations.get("ph"), Some(&d(ph)));
    }
    // Invalid because of pH: the pH; invalid for creatinine/SG or nitrite: no value.
    for ph in ["4", "4.4", "9", "10.9"] {
        let v = with(&|v| v.ph = Some(d(ph)));
        assert_eq!(results(&v), ["invalid"], "{ph}");
        assert_eq!(v.quantitations.keys().collect::<Vec<_>>(), ["ph"], "{ph}");
    }
    let v = with(&|v| {
        v.creatinine = Some(d("1.5"));
        v.specific_gravity = Some(d("1.01"));
    });
    assert_eq!(results(&v), ["invalid"]);
    assert!(v.quantitations.is_empty());
    let v = with(&|v| v.nitrite = Some(d("300")));
    assert_eq!(results(&v), ["invalid"]);
    assert!(v.quantitations.is_empty());
    // A plain negative carries nothing.
    let v = with(&|v| {
        v.creatinine = Some(d("80"));
        v.specific_gravity = Some(d("1.015"));
        v.ph = Some(d("6"));
    });
    assert_eq!(results(&v), ["negative"]);
    assert!(v.quantitations.is_empty());
    // Positive-dilute: the drug's value and creatinine and SG.
    let mut s = drug_case("cocaine", d("800"), &[("benzoylecgonine", d("400"))]);
    s.validity.creatinine = Some(d("15"));
    s.validity.specific_gravity = Some(d("1.002"));
    let v = eval(&p, &s);
    assert!(v.dilute);
    assert_eq!(
        v.quantitations.keys().collect::<Vec<_>>(),
        ["benzoylecgonine", "creatinine", "specific_gravity"]
    );
}

#[test]
fn the_2001_edition_requires_no_values() {
    let p = p2001();
    let mut s = drug_case("cocaine", d("800"), &[("benzoylecgonine", d("400"))]);
    s.validity.creatinine = Some(d("15"));
    s.validity.specific_gravity = Some(d("1.002"));
    let v = eval(&p, &s);
    assert!(v.dilute);
    assert!(v.quantitations.is_empty());
}

#[test]
fn oral_fluid_cutoffs_at_below_above() {
    let p = p_oral_fluid();
    check_all_cutoffs(&p);
    let ic = |k: &str| p.class(k).unwrap().initial_cutoff;
    let cc = |k: &str| p.analyte(k).unwrap().1.confirmation_cutoff;
    for (k, v) in [
        ("thc", "4"),
        ("cocaine", "15"),
        ("codeine_morphine", "30"),
        ("hydrocodone_hydromorphone", "30"),
        ("oxycodone_oxymorphone", "30"),
        ("6am", "4"),
        ("pcp", "10"),
        ("amphetamines", "50"),
        ("mdma_mda", "50"),
    ] {
        assert_eq!(ic(k), d(v), "{k}");
    }
    for (k, v) in [
        ("thc", "2"),
        ("cocaine", "8"),
        ("benzoylecgonine", "8"),
        ("codeine", "15"),
        ("morphine", "15"),
        ("hydrocodone", "15"),
        ("hydromorphone", "15"),
        ("oxycodone", "15"),
        ("oxymorphone", "15"),
        ("6am", "2"),
        ("pcp", "10"),
        ("amphetamine", "25"),
        ("methamphetamine", "25"),
        ("mdma", "25"),
        ("mda", "25"),
    ] {
        assert_eq!(cc(k), d(v), "{k}");
    }
    assert!(p.validity.is_empty());
}

#[test]
fn oral_fluid_fatal_flaws_and_inputs() {
    let p = p_oral_fluid();
    let mut s = drug_case("6am", d("5"), &[("6am", d("2.5"))]);
    assert_eq!(results(&eval(&p, &s)), ["positive"]);
    s.accession.collection_device_expired = true;
    let v = eval(&p, &s);
    assert_eq!(results(&v), ["rejected"]);
    assert!(
        v.remarks.iter().any(|r| r.contains("40.199(b)(8)")),
        "{:?}",
        v.remarks
    );
    s.accession.device_expiration_date_recorded = false;
    let v = eval(&p, &s);
    assert_eq!(results(&v), ["rejected"]);
    assert!(
        v.remarks.iter().any(|r| r.contains("40.199(b)(9)")),
        "{:?}",
        v.remarks
    );
    // Missing expiration date, but the laboratory found the device in date: tested.
    s.accession.collection_device_expired = false;
    assert_eq!(results(&eval(&p, &s)), ["positive"]);
    // A validity result or a missing temperature on oral fluid is an input error.
    let mut s = Specimen::default();
    s.validity.creatinine = Some(d("5"));
    assert!(matches!(
        evaluate(&p, &s),
        Err(CaseError::NotForSpecimenType(..))
    ));
    let mut s = Specimen::default();
    s.accession.temperature_recorded = false;
    assert!(matches!(
        evaluate(&p, &s),
        Err(CaseError::NotForSpecimenType(..))
    ));
    // And the device findings on urine.
    let mut s = Specimen::default();
    s.accession.collection_device_expired = true;
    assert!(matches!(
        evaluate(&p2023(), &s),
        Err(CaseError::NotForSpecimenType(..))
    ));
}

#[test]
fn hhs_2025_urine_panel() {
    let p = p_hhs_urine();
    check_all_cutoffs(&p);
    assert_eq!(p.class("fentanyl").unwrap().initial_cutoff, d("1"));
    assert_eq!(p.analyte("fentanyl").unwrap().1.confirmation_cutoff, d("1"));
    assert_eq!(
        p.analyte("norfentanyl").unwrap().1.confirmation_cutoff,
        d("1")
    );
    assert_eq!(
        p.analyte("morphine").unwrap().1.confirmation_cutoff,
        d("4000")
    );
    assert_eq!(
        p.analyte("codeine").unwrap().1.confirmation_cutoff,
        d("2000")
    );
    // Morphine 3999.9 is negative under HHS 2025, positive under DOT today.
    let s = drug_case("codeine_morphine", d("5000"), &[("morphine", d("3999.9"))]);
    assert_eq!(results(&eval(&p, &s)), ["negative"]);
    assert_eq!(results(&eval(&p2023(), &s)), ["positive"]);
    // Fentanyl is never a DOT analyte.
    for dot in [p2001(), p2023(), p_oral_fluid()] {
        assert!(dot.class("fentanyl").is_none() && dot.analyte("fentanyl").is_none());
        assert!(dot.analyte("norfentanyl").is_none());
    }
}
