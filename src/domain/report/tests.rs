use super::*;
use crate::domain::rules::{self, ProfileSet};
use crate::domain::specimen::{
    Accession, Bottle, Ccf, CorrectionEntry, ResultEntry, ResultKind, Source,
};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub(crate) fn profiles() -> ProfileSet {
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
    ] {
        set.insert(rules::Profile::parse(t, Some(n)).unwrap());
    }
    set
}

pub(crate) fn lab() -> Laboratory {
    Laboratory {
        name: "Example Toxicology Laboratory".into(),
        address: "100 Example Way, Springfield, IL 62701".into(),
    }
}

pub(crate) fn ccf() -> Ccf {
    Ccf {
        employer: Party {
            name: "Acme Freight Lines".into(),
            id: Some("EMP-0042".into()),
            ..Party::default()
        },
        mro: Party {
            name: "Dr. Mary Reviewer".into(),
            id: Some("mro-reviewer".into()),
            address: Some("5 Clinic Road, Springfield, IL 62702".into()),
            phone: None,
        },
        donor_id: Some("E-778812".into()),
        reason_for_test: Some("random".into()),
        dot_agency: None,
        collector: Party {
            name: "Carl Collector".into(),
            phone: Some("(555) 010-0000".into()),
            ..Party::default()
        },
        collected_on: "2026-03-02".into(),
        received_on: "2026-03-03".into(),
        split_collected: true,
        observed: false,
        remarks: None,
        storage: Default::default(),
    }
}

fn accession(ccf: Ccf, findings: rules::Accession) -> Accession {
    Accession {
        ccf,
        findings,
        // Written for the 2001 edition (its CCF dates would select today\'s).
        profile: Some("part40-2001".into()),
        program: Default::default(),
        specimen_type: Default::default(),
        document: "acc-1.xml".into(),
        received_at_ms: 1,
        correction_initiated_on: None,
    }
}

fn entry(kind: ResultKind, target: &str, value: &str) -> ResultEntry {
    ResultEntry {
        kind,
        target: target.into(),
        value: Some(Decimal::from_str(value).unwrap()),
        unit: String::new(),
        bottle: Bottle::A,
        source: Source::Analyzer {
            analyzer: "ia1".into(),
            control_id: "m1".into(),
            observation: "1".into(),
        },
        received_at_ms: 10,
        ..ResultEntry::default()
    }
}

/// A full screen: every class of part40-2001 at the given values (others at 1), validity normal.
fn screen(high: &[(&str, &str)]) -> Vec<ResultEntry> {
    let mut v: Vec<ResultEntry> = ["marijuana", "cocaine", "pcp", "amphetamines", "opiates"]
        .iter()
        .map(|c| {
            let value = high.iter().find(|(k, _)| k == c).map_or("1", |(_, v)| v);
            entry(ResultKind::Initial, c, value)
        })
        .collect();
    v.push(entry(ResultKind::Validity, "creatinine", "80"));
    v.push(entry(ResultKind::Validity, "ph", "6.5"));
    v.push(entry(ResultKind::Validity, "nitrite", "0"));
    v
}

fn record(
    ccf: Ccf,
    findings: rules::Accession,
    results: Vec<ResultEntry>,
    requested: bool,
) -> SpecimenRecord {
    let p = profiles();
    let mut r = SpecimenRecord::new("S-1000001", 0);
    r.mro_requested_quantitation = requested;
    r.attach_accession(accession(ccf, findings), &p, "part40-2001", 1)
        .unwrap();
    if !results.is_empty() {
        r.attach_results(results, &p, "part40-2001", 2).unwrap();
    }
    r
}

pub(crate) fn release(id: &str) -> Release {
    Release {
        report_id: id.into(),
        released_at_ms: 1_772_550_000_123,
        certifying_scientist: "Dr. Sara Scientist".into(),
        replaces: None,
    }
}

pub(crate) fn negative_record() -> SpecimenRecord {
    record(ccf(), rules::Accession::default(), screen(&[]), false)
}

fn morphine_record(morphine: &str, codeine: &str, requested: bool) -> SpecimenRecord {
    let mut results = screen(&[("opiates", "40000")]);
    results.push(entry(ResultKind::Confirmation, "morphine", morphine));
    results.push(entry(ResultKind::Confirmation, "codeine", codeine));
    results.push(entry(ResultKind::Confirmation, "6am", "0"));
    record(ccf(), rules::Accession::default(), results, requested)
}

pub(crate) fn positive_record() -> SpecimenRecord {
    morphine_record("21000", "900", false)
}

fn cocaine_record(requested: bool) -> SpecimenRecord {
    let mut results = screen(&[("cocaine", "900")]);
    results.push(entry(ResultKind::Confirmation, "benzoylecgonine", "412"));
    record(ccf(), rules::Accession::default(), results, requested)
}

pub(crate) fn rejected_record() -> SpecimenRecord {
    let findings = rules::Accession {
        id_matches: false,
        ..Default::default()
    };
    record(ccf(), findings, Vec::new(), false)
}

fn json(r: &Report) -> Value {
    serde_json::from_slice(&r.to_bytes()).unwrap()
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn schema() -> jsonschema::Validator {
    let text = std::fs::read_to_string(root().join("schemas/report.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("schemas/report.schema.json is a valid draft 2020-12 schema")
}

/// The report with a certified Copy 1 attached when its result needs one (release does this).
fn with_copy(mut r: Report) -> Report {
    if crate::domain::copy1::required_for(&r.results) {
        r.ccf_copy1 = Some(super::CcfCopy1::new(
            crate::domain::copy1::MediaType::Pdf,
            b"%PDF-1.7\n% certified Copy 1 (test bytes)\n",
        ));
    }
    r
}

fn assert_valid(v: &jsonschema::Validator, doc: &Value, what: &str) {
    let errors: Vec<String> = v
        .iter_errors(doc)
        .map(|e| format!("{}: {}", e.instance_path(), e))
        .collect();
    assert!(errors.is_empty(), "{what} fails the schema: {errors:?}");
}

#[test]
fn negative_report_has_every_element() {
    let r = build(&lab(), &negative_record(), &release("R-1")).unwrap();
    let j = json(&r);
    for key in [
        "report_id",
        "laboratory",
        "employer",
        "mro",
        "specimen_id",
        "donor_id",
        "reason_for_test",
        "collector",
        "collected_on",
        "received_on",
        "released_at",
        "certifying_scientist",
        "results",
        "dilute",
        "positive_analytes",
        "quantitations",
        "remarks",
        "profile",
    ] {
        assert!(j.get(key).is_some(), "{key} missing from {j}");
    }
    assert!(j.get("replaces").is_none());
    assert_eq!(j["laboratory"]["name"], "Example Toxicology Laboratory");
    assert_eq!(
        j["employer"],
        serde_json::json!({"name": "Acme Freight Lines", "id": "EMP-0042"})
    );
    assert_eq!(
        j["mro"],
        serde_json::json!({"name": "Dr. Mary Reviewer", "id": "mro-reviewer"})
    );
    assert_eq!(j["collector"]["phone"], "(555) 010-0000");
    assert_eq!(j["specimen_id"], "S-1000001");
    assert_eq!(j["released_at"], "2026-03-03T15:00:00.123Z");
    assert_eq!(j["results"], serde_json::json!(["negative"]));
    assert_eq!(j["quantitations"], serde_json::json!({}));
    assert_eq!(j["profile"], "part40-2001");
    assert_eq!(j["certifying_scientist"], "Dr. Sara Scientist");
}

#[test]
fn keys_come_in_the_contracts_order() {
    let mut rel = release("R-2");
    rel.replaces = Some("R-1".into());
    let bytes = build(&lab(), &negative_record(), &rel).unwrap().to_bytes();
    let text = String::from_utf8(bytes).unwrap();
    let order = [
        "\"report_id\"",
        "\"replaces\"",
        "\"laboratory\"",
        "\"employer\"",
        "\"mro\"",
        "\"specimen_id\"",
        "\"donor_id\"",
        "\"reason_for_test\"",
        "\"collector\"",
        "\"collected_on\"",
        "\"received_on\"",
        "\"released_at\"",
        "\"certifying_scientist\"",
        "\"results\"",
        "\"dilute\"",
        "\"positive_analytes\"",
        "\"quantitations\"",
        "\"remarks\"",
        "\"profile\"",
    ];
    let positions: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn donor_id_and_reason_absent_when_not_provided() {
    let mut c = ccf();
    c.donor_id = None;
    c.reason_for_test = Some("  ".into());
    let rec = record(c, rules::Accession::default(), screen(&[]), false);
    let r = build(&lab(), &rec, &release("R-3")).unwrap();
    assert_eq!(r.donor_id, None);
    assert_eq!(r.reason_for_test, None);
    let j = json(&r);
    assert!(j.get("donor_id").is_none(), "{j}");
    assert!(j.get("reason_for_test").is_none(), "{j}");
    assert_valid(&schema(), &j, "report without donor id");
}

#[test]
fn morphine_at_15000_is_always_quantitated_40_97_f() {
    let rec = morphine_record("15000", "900", false);
    let r = build(&lab(), &rec, &release("R-4")).unwrap();
    assert_eq!(r.results, [ResultCategory::Positive]);
    assert_eq!(r.positive_analytes, ["morphine"]);
    assert_eq!(
        r.quantitations.keys().collect::<Vec<_>>(),
        ["morphine"],
        "only morphine, not the codeine below 15000"
    );
    let j = json(&r);
    assert_eq!(
        j["quantitations"]["morphine"],
        serde_json::json!({"value": 15000, "unit": "ng/mL"})
    );
}

#[test]
fn opiates_below_15000_carry_no_value_without_a_request() {
    let rec = morphine_record("14999", "14999", false);
    let r = build(&lab(), &rec, &release("R-5")).unwrap();
    assert_eq!(r.positive_analytes, ["codeine", "morphine"]);
    assert!(r.quantitations.is_empty(), "{:?}", r.quantitations);
    assert!(!String::from_utf8(r.to_bytes()).unwrap().contains("14999"));
}

#[test]
fn positive_carries_no_value_unless_the_mro_asked_40_97_e() {
    let r = build(&lab(), &cocaine_record(false), &release("R-6")).unwrap();
    assert_eq!(r.positive_analytes, ["benzoylecgonine"]);
    assert!(r.quantitations.is_empty());
    assert!(!String::from_utf8(r.to_bytes()).unwrap().contains("412"));

    let r = build(&lab(), &cocaine_record(true), &release("R-7")).unwrap();
    assert_eq!(
        r.quantitations.get("benzoylecgonine"),
        Some(&Quantitation {
            value: Decimal::from(412),
            unit: Some("ng/mL".into())
        })
    );
}

#[test]
fn quantitations_are_exactly_the_verdicts() {
    for rec in [
        negative_record(),
        positive_record(),
        cocaine_record(false),
        cocaine_record(true),
        morphine_record("30000", "16000", true),
        rejected_record(),
    ] {
        let r = build(&lab(), &rec, &release("R-8")).unwrap();
        let verdict = &rec.evaluation.as_ref().unwrap().verdict;
        let keys: Vec<&String> = r.quantitations.keys().collect();
        let want: Vec<&String> = verdict.quantitations.keys().collect();
        assert_eq!(keys, want);
        for (k, q) in &r.quantitations {
            assert_eq!(q.value, verdict.quantitations[k]);
        }
    }
}

#[test]
fn adulterated_values_carry_their_units() {
    let mut results = screen(&[]);
    // The one nitrite result of this specimen (the screen's negative oxidant test replaced).
    results.retain(|e| e.target != "nitrite");
    results.push(entry(ResultKind::Validity, "nitrite", "650"));
    let rec = record(ccf(), rules::Accession::default(), results, true);
    let r = build(&lab(), &rec, &release("R-9")).unwrap();
    assert!(r.results.contains(&ResultCategory::Adulterated), "{r:?}");
    assert_eq!(
        r.quantitations
            .get("nitrite")
            .and_then(|q| q.unit.as_deref()),
        Some("mcg/mL")
    );
    assert_eq!(unit_of("ph"), None);
    assert_eq!(unit_of("specific_gravity"), None);
    assert_eq!(unit_of("creatinine"), Some("mg/dL"));
    assert_valid(
        &schema(),
        &json(&with_copy(r.clone())),
        "adulterated report",
    );
}

#[test]
fn rejected_report_names_the_flaw() {
    let r = build(&lab(), &rejected_record(), &release("R-10")).unwrap();
    assert_eq!(r.results, [ResultCategory::Rejected]);
    assert!(r.positive_analytes.is_empty() && r.quantitations.is_empty());
    assert!(
        r.remarks.iter().any(|m| m.contains("40.83(c)(1)")),
        "{:?}",
        r.remarks
    );
}

#[test]
fn a_corrected_flaw_is_explained_in_remarks() {
    let p = profiles();
    let findings = rules::Accession {
        collector_certification_signed: false,
        ..Default::default()
    };
    let mut rec = SpecimenRecord::new("S-2", 0);
    rec.attach_accession(accession(ccf(), findings), &p, "part40-2001", 1)
        .unwrap();
    assert!(matches!(
        build(&lab(), &rec, &release("R-11")),
        Err(ReportError::Held(_))
    ));
    rec.attach_correction(
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
    rec.attach_results(screen(&[]), &p, "part40-2001", 3)
        .unwrap();
    let r = build(&lab(), &rec, &release("R-11")).unwrap();
    assert!(
        r.remarks.iter().any(|m| m.contains("corrected")),
        "{:?}",
        r.remarks
    );
}

#[test]
fn remarks_never_mention_an_unavailable_split_40_175_b_1() {
    let cases = [
        rules::Accession {
            split_seal: rules::SplitSeal::Absent,
            split_sufficient: false,
            ..Default::default()
        },
        rules::Accession {
            split_seal: rules::SplitSeal::Broken,
            ..Default::default()
        },
        rules::Accession {
            split_sufficient: false,
            ..Default::default()
        },
        rules::Accession {
            primary_leaked: true,
            ..Default::default()
        },
        rules::Accession {
            labels_swapped: true,
            ..Default::default()
        },
        rules::Accession {
            primary_seal: rules::Seal::Broken,
            ..Default::default()
        },
    ];
    for (i, findings) in cases.into_iter().enumerate() {
        let mut c = ccf();
        c.split_collected = false;
        c.remarks = Some("Split bottle not collected: donor could not provide".into());
        c.storage.insert("B".into(), "freezer 2 / rack 9".into());
        let rec = record(c, findings, screen(&[]), false);
        let r = build(&lab(), &rec, &release("R-12")).unwrap();
        let text = String::from_utf8(r.to_bytes()).unwrap().to_lowercase();
        assert!(!text.contains("split"), "case {i}: {text}");
        assert!(!text.contains("bottle b"), "case {i}: {text}");
        assert!(
            !text.contains("freezer"),
            "case {i}: storage leaked: {text}"
        );
        assert!(
            !text.contains("donor could not"),
            "case {i}: CCF remark leaked"
        );
    }
}

#[test]
fn a_remark_naming_the_split_is_refused() {
    let mut rec = negative_record();
    rec.evaluation
        .as_mut()
        .unwrap()
        .verdict
        .remarks
        .push("Split specimen unavailable.".into());
    assert_eq!(
        build(&lab(), &rec, &release("R-13")),
        Err(ReportError::SplitMentioned(0))
    );
    assert!(mentions_split("bottle B leaked"));
    assert!(!mentions_split("Specimen bottles relabelled"));
}

#[test]
fn refuses_without_accession_evaluation_or_result() {
    let p = profiles();
    let mut rec = SpecimenRecord::new("S-3", 0);
    assert_eq!(
        build(&lab(), &rec, &release("R-14")),
        Err(ReportError::NotAccessioned)
    );
    rec.attach_results(screen(&[]), &p, "part40-2001", 1)
        .unwrap();
    assert_eq!(
        build(&lab(), &rec, &release("R-14")),
        Err(ReportError::NotAccessioned)
    );

    let mut rec = negative_record();
    rec.evaluation = None;
    assert_eq!(
        build(&lab(), &rec, &release("R-14")),
        Err(ReportError::NotEvaluated)
    );

    let mut rec = negative_record();
    rec.evaluation.as_mut().unwrap().verdict.results.clear();
    assert_eq!(
        build(&lab(), &rec, &release("R-14")),
        Err(ReportError::NoResult)
    );
}

#[test]
fn refuses_a_held_or_incomplete_specimen() {
    let held = record(
        ccf(),
        rules::Accession {
            temperature_recorded: false,
            ..Default::default()
        },
        screen(&[]),
        false,
    );
    assert_eq!(held.state, State::Held);
    assert!(matches!(
        build(&lab(), &held, &release("R-15")),
        Err(ReportError::Held(_))
    ));

    let confirming = record(
        ccf(),
        rules::Accession::default(),
        screen(&[("cocaine", "900")]),
        false,
    );
    assert_eq!(confirming.state, State::Confirming);
    assert_eq!(
        build(&lab(), &confirming, &release("R-15")),
        Err(ReportError::NotReady(State::Confirming))
    );
}

#[test]
fn refuses_missing_ccf_elements_and_bad_ids() {
    let mut rec = negative_record();
    rec.accession.as_mut().unwrap().ccf.collector.phone = None;
    assert_eq!(
        build(&lab(), &rec, &release("R-16")),
        Err(ReportError::MissingElement("collector.phone"))
    );
    let mut rec = negative_record();
    rec.accession.as_mut().unwrap().ccf.mro.id = None;
    assert_eq!(
        build(&lab(), &rec, &release("R-16")),
        Err(ReportError::MissingElement("mro.id"))
    );
    let mut rec = negative_record();
    rec.accession.as_mut().unwrap().ccf.received_on = "03/03/2026".into();
    assert_eq!(
        build(&lab(), &rec, &release("R-16")),
        Err(ReportError::BadDate("received_on"))
    );
    let mut no_scientist = release("R-16");
    no_scientist.certifying_scientist = " ".into();
    assert_eq!(
        build(&lab(), &negative_record(), &no_scientist),
        Err(ReportError::MissingElement("certifying_scientist"))
    );
    assert_eq!(
        build(&lab(), &negative_record(), &release("R 16")),
        Err(ReportError::BadReportId("report_id"))
    );
    let mut itself = release("R-16");
    itself.replaces = Some("R-16".into());
    assert_eq!(
        build(&lab(), &negative_record(), &itself),
        Err(ReportError::ReplacesItself)
    );
}

#[test]
fn build_is_pure_and_the_hash_binds_the_content() {
    let rec = positive_record();
    let a = build(&lab(), &rec, &release("R-17")).unwrap();
    let b = build(&lab(), &rec, &release("R-17")).unwrap();
    assert_eq!(a.to_bytes(), b.to_bytes());
    assert_eq!(a.content_sha256(), b.content_sha256());
    assert_eq!(a.content_sha256().len(), 64);
    let c = build(&lab(), &rec, &release("R-18")).unwrap();
    assert_ne!(a.content_sha256(), c.content_sha256());
}

#[test]
fn reports_round_trip_through_json() {
    for rec in [negative_record(), positive_record(), rejected_record()] {
        let r = build(&lab(), &rec, &release("R-19")).unwrap();
        let back: Report = serde_json::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(back, r);
    }
    let mut j = json(&build(&lab(), &negative_record(), &release("R-19")).unwrap());
    j["split_collected"] = Value::Bool(true);
    assert!(
        serde_json::from_value::<Report>(j).is_err(),
        "unknown keys refused"
    );
}

fn example_cases() -> Vec<(&'static str, SpecimenRecord)> {
    vec![
        ("negative.json", negative_record()),
        ("positive-quantitation.json", positive_record()),
        ("rejected.json", rejected_record()),
    ]
}

/// The examples are what `build` produces for the fixtures above. `CUSTODIAN_BLESS=1` rewrites
/// them after an intended change.
#[test]
fn examples_are_generated_reports_and_match_the_schema() {
    let v = schema();
    let dir = root().join("tests/data/report");
    let bless = std::env::var_os("CUSTODIAN_BLESS").is_some();
    for (name, rec) in example_cases() {
        let id = format!("RPT-2026-{}", name.trim_end_matches(".json"));
        let report = with_copy(build(&lab(), &rec, &release(&id)).unwrap());
        let generated = json(&report);
        assert_valid(&v, &generated, name);
        let path = dir.join(name);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            let text = serde_json::to_string_pretty(&report).unwrap() + "\n";
            std::fs::write(&path, text).unwrap();
        }
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let example: Value = serde_json::from_str(&text).unwrap();
        assert_valid(&v, &example, name);
        assert_eq!(
            example, generated,
            "{name} differs from what build produces"
        );
        let parsed: Report = serde_json::from_value(example).unwrap();
        assert_eq!(parsed.report_id, id);
    }
    let pos: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("positive-quantitation.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(pos["quantitations"]["morphine"]["value"], 21000);
}

#[test]
fn schema_refuses_what_the_contract_forbids() {
    let v = schema();
    let bare = json(&build(&lab(), &positive_record(), &release("R-20")).unwrap());
    assert!(
        !v.is_valid(&bare),
        "a positive report without its certified Copy 1 is refused"
    );
    let good = json(&with_copy(
        build(&lab(), &positive_record(), &release("R-20")).unwrap(),
    ));
    assert_valid(&v, &good, "positive");
    type Mutation = Box<dyn Fn(&mut Value)>;
    let mutations: Vec<(&str, Mutation)> = vec![
        (
            "a certified Copy 1 of another media type",
            Box::new(|j| j["ccf_copy1"]["media_type"] = "image/gif".into()),
        ),
        (
            "a certified Copy 1 without its hash",
            Box::new(|j| {
                j["ccf_copy1"].as_object_mut().unwrap().remove("sha256");
            }),
        ),
        (
            "extra top-level key",
            Box::new(|j| j["split_collected"] = Value::Bool(false)),
        ),
        (
            "extra nested key",
            Box::new(|j| j["mro"]["address"] = "x".into()),
        ),
        (
            "missing required element",
            Box::new(|j| {
                j.as_object_mut().unwrap().remove("collector");
            }),
        ),
        (
            "empty results",
            Box::new(|j| j["results"] = serde_json::json!([])),
        ),
        (
            "unknown result",
            Box::new(|j| j["results"] = serde_json::json!(["inconclusive"])),
        ),
        (
            "bad date",
            Box::new(|j| j["collected_on"] = "2026-13-01".into()),
        ),
        (
            "bad date-time",
            Box::new(|j| j["released_at"] = "yesterday".into()),
        ),
        (
            "quantitation as text",
            Box::new(|j| j["quantitations"]["morphine"]["value"] = "21000".into()),
        ),
        (
            "empty name",
            Box::new(|j| j["certifying_scientist"] = "".into()),
        ),
    ];
    for (what, mutate) in mutations {
        let mut bad = good.clone();
        mutate(&mut bad);
        assert!(!v.is_valid(&bad), "schema accepted: {what}");
    }
}

#[test]
fn schema_lists_every_contract_key() {
    let text = std::fs::read_to_string(root().join("schemas/report.schema.json")).unwrap();
    let s: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(s["additionalProperties"], false);
    let props: Vec<&String> = s["properties"].as_object().unwrap().keys().collect();
    let optional = [
        "replaces",
        "supplements",
        "donor_id",
        "reason_for_test",
        "ccf_copy1",
    ];
    let required: Vec<&str> = s["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    for p in &props {
        assert_eq!(
            required.contains(&p.as_str()),
            !optional.contains(&p.as_str()),
            "{p}: required exactly when the contract does not say optional"
        );
    }
    assert_eq!(props.len(), 22);
}

#[test]
fn a_corrected_report_is_built_for_a_released_specimen_only_with_replaces() {
    let mut rec = negative_record();
    rec.state = State::Released;
    assert_eq!(
        build(&lab(), &rec, &release("R-20")),
        Err(ReportError::NotReady(State::Released))
    );
    let mut rel = release("R-21");
    rel.replaces = Some("R-20".into());
    let r = build(&lab(), &rec, &rel).unwrap();
    assert_eq!(r.replaces.as_deref(), Some("R-20"));
    assert_eq!(r.results, negative_record_results());
}

fn negative_record_results() -> Vec<ResultCategory> {
    build(&lab(), &negative_record(), &release("R-22"))
        .unwrap()
        .results
}

#[test]
fn ccf_amendment_changes_only_named_fields_and_keeps_required_ones() {
    use crate::domain::specimen::CcfAmendment;
    let mut c = ccf();
    let a = CcfAmendment {
        donor_id: Some("E-778821".into()),
        employer_name: Some("Acme Freight Lines".into()),
        reason_for_test: Some(" ".into()),
        ..CcfAmendment::default()
    };
    let changed = a.apply(&mut c).unwrap();
    assert_eq!(
        changed,
        vec![
            ("donor_id", Some("E-778812".to_string())),
            ("reason_for_test", Some("random".to_string()))
        ],
        "an unchanged value is not a change; an empty optional one is removed"
    );
    assert_eq!(c.donor_id.as_deref(), Some("E-778821"));
    assert_eq!(c.reason_for_test, None);
    assert_eq!(c.mro.id.as_deref(), Some("mro-reviewer"));
    let before = c.clone();
    for bad in [
        CcfAmendment {
            collector_phone: Some("".into()),
            ..CcfAmendment::default()
        },
        CcfAmendment {
            donor_id: Some("1\n2".into()),
            ..CcfAmendment::default()
        },
        CcfAmendment {
            employer_name: Some("x".repeat(201)),
            ..CcfAmendment::default()
        },
    ] {
        assert!(bad.apply(&mut c).is_err(), "{bad:?}");
        assert_eq!(c, before, "nothing changes on error");
    }
    // The MRO's directory id and results are not fields of an amendment.
    assert!(serde_json::from_str::<CcfAmendment>(r#"{"mro_id":"x"}"#).is_err());
    assert!(serde_json::from_str::<CcfAmendment>(r#"{"results":["positive"]}"#).is_err());
}
