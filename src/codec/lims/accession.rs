//! The `accession` document (`schemas/accession.xsd`): CCF Copy 1 as the laboratory receives
//! it, with what accessioning found (49 CFR 40.83).

use super::check::{Cursor, Enumerated, pattern, text};
use super::error::{Rule, XmlError};
use super::tree::Node;
use super::value::{
    self, Confidential, Date, IDENTIFIER_PATTERN, PHONE_PATTERN, PROFILE_PATTERN,
    SPECIMEN_ID_PATTERN, SSN_PATTERN, SpecimenId, Ssn,
};
use crate::domain::rules::{Accession, Correction, Form, Program, Seal, SpecimenType, SplitSeal};

/// Reason for test (CCF Step 1). Absent from the document: not provided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TestReason {
    PreEmployment,
    Random,
    ReasonableSuspicion,
    PostAccident,
    ReturnToDuty,
    FollowUp,
    Other,
}

impl TestReason {
    /// The schema's token for this reason.
    pub fn key(self) -> &'static str {
        match self {
            TestReason::PreEmployment => "pre-employment",
            TestReason::Random => "random",
            TestReason::ReasonableSuspicion => "reasonable-suspicion",
            TestReason::PostAccident => "post-accident",
            TestReason::ReturnToDuty => "return-to-duty",
            TestReason::FollowUp => "follow-up",
            TestReason::Other => "other",
        }
    }
}

impl Enumerated for TestReason {
    const VALUES: &'static [&'static str] = &[
        "pre-employment",
        "random",
        "reasonable-suspicion",
        "post-accident",
        "return-to-duty",
        "follow-up",
        "other",
    ];
    fn from_token(t: &str) -> Option<Self> {
        [
            TestReason::PreEmployment,
            TestReason::Random,
            TestReason::ReasonableSuspicion,
            TestReason::PostAccident,
            TestReason::ReturnToDuty,
            TestReason::FollowUp,
            TestReason::Other,
        ]
        .into_iter()
        .find(|r| r.key() == t)
    }
}

/// The DOT agency of CCF Step 1 ("Specify DOT Agency"). Absent from the document: not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DotAgency {
    Fmcsa,
    Faa,
    Fra,
    Fta,
    Phmsa,
    Uscg,
}

impl DotAgency {
    /// The schema's token for this agency.
    pub fn key(self) -> &'static str {
        match self {
            DotAgency::Fmcsa => "fmcsa",
            DotAgency::Faa => "faa",
            DotAgency::Fra => "fra",
            DotAgency::Fta => "fta",
            DotAgency::Phmsa => "phmsa",
            DotAgency::Uscg => "uscg",
        }
    }
}

impl Enumerated for DotAgency {
    const VALUES: &'static [&'static str] = &["fmcsa", "faa", "fra", "fta", "phmsa", "uscg"];
    fn from_token(t: &str) -> Option<Self> {
        [
            DotAgency::Fmcsa,
            DotAgency::Faa,
            DotAgency::Fra,
            DotAgency::Fta,
            DotAgency::Phmsa,
            DotAgency::Uscg,
        ]
        .into_iter()
        .find(|a| a.key() == t)
    }
}

/// Tests requested: the program the CCF is under. DOT specimens are tested for the DOT panel
/// only (40.13(c), 40.82); HHS (federal-agency) specimens for the HHS panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Panel {
    Dot,
    Hhs,
}

impl Enumerated for Panel {
    const VALUES: &'static [&'static str] = &["dot", "hhs"];
    fn from_token(t: &str) -> Option<Self> {
        match t {
            "dot" => Some(Panel::Dot),
            "hhs" => Some(Panel::Hhs),
            _ => None,
        }
    }
}

impl Enumerated for SpecimenType {
    const VALUES: &'static [&'static str] = &["urine", "oral-fluid"];
    fn from_token(t: &str) -> Option<Self> {
        match t {
            "urine" => Some(SpecimenType::Urine),
            "oral-fluid" => Some(SpecimenType::OralFluid),
            _ => None,
        }
    }
}

impl Enumerated for Seal {
    const VALUES: &'static [&'static str] = &["intact", "broken"];
    fn from_token(t: &str) -> Option<Self> {
        match t {
            "intact" => Some(Seal::Intact),
            "broken" => Some(Seal::Broken),
            _ => None,
        }
    }
}

impl Enumerated for SplitSeal {
    const VALUES: &'static [&'static str] = &["intact", "broken", "absent"];
    fn from_token(t: &str) -> Option<Self> {
        match t {
            "intact" => Some(SplitSeal::Intact),
            "broken" => Some(SplitSeal::Broken),
            "absent" => Some(SplitSeal::Absent),
            _ => None,
        }
    }
}

impl Enumerated for Form {
    const VALUES: &'static [&'static str] = &["federal", "non-federal", "expired-federal"];
    fn from_token(t: &str) -> Option<Self> {
        match t {
            "federal" => Some(Form::Federal),
            "non-federal" => Some(Form::NonFederal),
            "expired-federal" => Some(Form::ExpiredFederal),
            _ => None,
        }
    }
}

/// The donor's SSN or employee ID, if provided (40.97(b)(1)(i)(E)). `Debug` shows neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DonorId {
    Ssn(Ssn),
    EmployeeId(Confidential),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Employer {
    /// At most 100 characters.
    pub name: String,
    /// The schema's `Identifier`.
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mro {
    /// At most 100 characters.
    pub name: String,
    /// At most 300 characters; may span lines.
    pub address: String,
    /// The MRO's entry in the laboratory's directory (an `Identifier`).
    pub directory_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collector {
    /// At most 100 characters.
    pub name: String,
    pub phone: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestsRequested {
    pub panel: Panel,
    /// `<specimen-type>`; urine when absent.
    pub specimen_type: SpecimenType,
    /// A rule-profile name (e.g. `part40-2001`); `None` for the daemon's default.
    pub profile: Option<String>,
}

impl TestsRequested {
    /// The testing program the panel names.
    pub fn program(&self) -> Program {
        match self.panel {
            Panel::Dot => Program::Dot,
            Panel::Hhs => Program::Hhs,
        }
    }
}

/// Bottle A, the primary, as found at accessioning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryBottle {
    pub seal: Seal,
    pub volume_sufficient: bool,
    pub leaked: bool,
    /// At most 64 characters.
    pub freezer_location: Option<String>,
}

/// Bottle B, the split, as found at accessioning; `Absent` if it did not come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitBottle {
    pub seal: SplitSeal,
    pub volume_sufficient: bool,
    pub leaked: bool,
    /// At most 64 characters.
    pub freezer_location: Option<String>,
}

/// An `accession` document. `Debug` redacts the donor ID and the remarks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessionDoc {
    pub specimen_id: SpecimenId,
    pub employer: Employer,
    pub mro: Mro,
    pub donor: Option<DonorId>,
    pub reason: Option<TestReason>,
    /// `<dot-agency>`, if the LIMS gave it (40.111(d), Appendix E item 2).
    pub dot_agency: Option<DotAgency>,
    pub collector: Collector,
    pub collection_date: Date,
    /// Never earlier than `collection_date`.
    pub receipt_date: Date,
    pub tests: TestsRequested,
    pub split_collected: bool,
    pub observed: bool,
    pub bottle_a: PrimaryBottle,
    /// `seal` is `Absent` whenever `split_collected` is false.
    pub bottle_b: SplitBottle,
    /// 40.83(c)(1).
    pub bottle_id_matches_ccf: bool,
    /// 40.83(h)(1)(ii).
    pub labels_swapped: bool,
    /// 40.83(h)(1)(iii).
    pub split_opened_instead: bool,
    /// 40.83(c)(3).
    pub collector_name_and_signature: bool,
    /// 40.83(e).
    pub collector_certification_signed: bool,
    /// 40.83(g).
    pub form: Form,
    /// 40.83(f).
    pub temperature_recorded: bool,
    /// The day the laboratory initiated action to correct a correctable flaw (40.83(e)(1),
    /// (f), (g)(1)): the correction window counts from it. Only with a correctable flaw, never
    /// earlier than `receipt_date`; absent: the day the accession is stored.
    pub correction_initiated_on: Option<Date>,
    /// At most 2000 characters.
    pub remarks: Option<Confidential>,
    /// The image of Copy 1 as received (PDF, TIFF or PNG), for the certifying scientist's
    /// review and as the ground of the certified Copy 1 (40.97(b)(2)).
    pub ccf_image: Option<super::value::Image>,
}

impl AccessionDoc {
    /// The rules engine's accessioning findings. `correction` is always `None`: corrections
    /// arrive as separate `correction` documents.
    ///
    /// Bottle B counts as sufficient only if it came, did not leak and holds enough urine: a
    /// split that "has leaked, or is otherwise unavailable for testing" (40.83(h)) cannot
    /// stand in for the primary.
    pub fn findings(&self) -> Accession {
        Accession {
            id_matches: self.bottle_id_matches_ccf,
            collector_name_and_signature: self.collector_name_and_signature,
            primary_seal: self.bottle_a.seal,
            split_seal: self.bottle_b.seal,
            primary_sufficient: self.bottle_a.volume_sufficient,
            split_sufficient: self.bottle_b.seal != SplitSeal::Absent
                && self.bottle_b.volume_sufficient
                && !self.bottle_b.leaked,
            primary_leaked: self.bottle_a.leaked,
            labels_swapped: self.labels_swapped,
            split_opened_instead: self.split_opened_instead,
            collector_certification_signed: self.collector_certification_signed,
            temperature_recorded: self.temperature_recorded,
            form: self.form,
            correction: Correction::None,
            flaw_corrections: Default::default(),
            // The accession document carries no oral-fluid device findings (urine only).
            collection_device_expired: false,
            device_expiration_date_recorded: true,
        }
    }
}

fn employer(c: &mut Cursor<'_>) -> Result<Employer, XmlError> {
    let mut e = c.element("employer", &[])?;
    let name = e.value("name", text(100))?;
    let id = e.value("id", pattern(value::is_identifier, IDENTIFIER_PATTERN))?;
    e.finish()?;
    Ok(Employer { name, id })
}

fn mro(c: &mut Cursor<'_>) -> Result<Mro, XmlError> {
    let mut m = c.element("mro", &[])?;
    let name = m.value("name", text(100))?;
    let address = m.value("address", text(300))?;
    let directory_id = m.value(
        "directory-id",
        pattern(value::is_identifier, IDENTIFIER_PATTERN),
    )?;
    m.finish()?;
    Ok(Mro {
        name,
        address,
        directory_id,
    })
}

fn donor(c: &mut Cursor<'_>) -> Result<Option<DonorId>, XmlError> {
    let Some(mut d) = c.opt_element("donor", &[])? else {
        return Ok(None);
    };
    let leaf = d.choice(&["ssn", "employee-id"], "ssn or employee-id")?;
    let id = if leaf.node.name == "ssn" {
        DonorId::Ssn(leaf.value(&[], |s| Ssn::new(s).ok_or(Rule::Pattern(SSN_PATTERN)))?)
    } else {
        DonorId::EmployeeId(leaf.value(&[], |s| {
            value::check_text(s, 32).map(|()| Confidential::new(s))
        })?)
    };
    d.finish()?;
    Ok(Some(id))
}

fn collector(c: &mut Cursor<'_>) -> Result<Collector, XmlError> {
    let mut e = c.element("collector", &[])?;
    let name = e.value("name", text(100))?;
    let phone = e.value("phone", pattern(value::is_phone, PHONE_PATTERN))?;
    e.finish()?;
    Ok(Collector { name, phone })
}

fn tests_requested(c: &mut Cursor<'_>) -> Result<TestsRequested, XmlError> {
    let mut t = c.element("tests-requested", &[])?;
    let panel = t.token::<Panel>("panel")?;
    let specimen_type = t
        .opt_token::<SpecimenType>("specimen-type")?
        .unwrap_or_default();
    let profile = t.opt_value("profile", pattern(value::is_profile_name, PROFILE_PATTERN))?;
    t.finish()?;
    Ok(TestsRequested {
        panel,
        specimen_type,
        profile,
    })
}

/// A bottle's findings: (seal, volume sufficient, leaked, freezer location, line of `seal`).
fn bottle<S: Enumerated>(
    c: &mut Cursor<'_>,
    name: &'static str,
) -> Result<(S, bool, bool, Option<String>, u32), XmlError> {
    let mut b = c.element(name, &[])?;
    let seal_leaf = b.leaf("seal")?;
    let seal_line = seal_leaf.node.line;
    let seal = seal_leaf.value(&[], super::check::enumerated::<S>)?;
    let volume_sufficient = b.flag("volume-sufficient")?;
    let leaked = b.flag("leaked")?;
    let freezer_location = b.opt_value("freezer-location", text(64))?;
    b.finish()?;
    Ok((seal, volume_sufficient, leaked, freezer_location, seal_line))
}

pub(crate) fn from_tree(root: &Node) -> Result<AccessionDoc, XmlError> {
    let mut c = Cursor::open(root, "/accession".to_string(), &[])?;
    let specimen_id = c.value("specimen-id", |s| {
        SpecimenId::new(s).ok_or(Rule::Pattern(SPECIMEN_ID_PATTERN))
    })?;
    let employer = employer(&mut c)?;
    let mro = mro(&mut c)?;
    let donor = donor(&mut c)?;
    let reason = c.opt_token::<TestReason>("reason")?;
    let dot_agency = c.opt_token::<DotAgency>("dot-agency")?;
    let collector = collector(&mut c)?;
    let (collection_date, _) = c.date("collection-date")?;
    let (receipt_date, receipt_line) = c.date("receipt-date")?;
    let tests = tests_requested(&mut c)?;
    let split_collected = c.flag("split-collected")?;
    let observed = c.flag("observed")?;
    let (a_seal, a_volume, a_leaked, a_freezer, _) = bottle::<Seal>(&mut c, "bottle-a")?;
    let (b_seal, b_volume, b_leaked, b_freezer, b_seal_line) =
        bottle::<SplitSeal>(&mut c, "bottle-b")?;
    let bottle_id_matches_ccf = c.flag("bottle-id-matches-ccf")?;
    let labels_swapped = c.flag("labels-swapped")?;
    let split_opened_instead = c.flag("split-opened-instead")?;
    let collector_name_and_signature = c.flag("collector-name-and-signature")?;
    let collector_certification_signed = c.flag("collector-certification-signed")?;
    let form = c.token::<Form>("form")?;
    let temperature_recorded = c.flag("temperature-recorded")?;
    let correction_initiated = match c.opt_leaf("correction-initiated-on") {
        Some(leaf) => Some((leaf.value(&[], Date::parse)?, leaf.node.line)),
        None => None,
    };
    let remarks = c.opt_value("remarks", |s| {
        value::check_text(s, 2000).map(|()| Confidential::new(s))
    })?;
    let ccf_image = c.opt_image("ccf-image")?;
    c.finish()?;

    // Beyond XSD 1.0 (see the schema's header comment).
    if receipt_date < collection_date {
        return Err(XmlError::new(
            receipt_line,
            "/accession/receipt-date",
            Rule::Inconsistent("earlier than /accession/collection-date"),
        ));
    }
    if let Some((initiated, line)) = correction_initiated {
        let path = "/accession/correction-initiated-on";
        if initiated < receipt_date {
            return Err(XmlError::new(
                line,
                path,
                Rule::Inconsistent("earlier than /accession/receipt-date"),
            ));
        }
        let flawed =
            !collector_certification_signed || !temperature_recorded || form != Form::Federal;
        if !flawed {
            return Err(XmlError::new(
                line,
                path,
                Rule::Inconsistent(
                    "only with a correctable flaw (collector-certification-signed or temperature-recorded false, or form not federal)",
                ),
            ));
        }
    }
    if !split_collected && b_seal != SplitSeal::Absent {
        return Err(XmlError::new(
            b_seal_line,
            "/accession/bottle-b/seal",
            Rule::Inconsistent("must be absent when /accession/split-collected is false"),
        ));
    }

    Ok(AccessionDoc {
        specimen_id,
        employer,
        mro,
        donor,
        reason,
        dot_agency,
        collector,
        collection_date,
        receipt_date,
        tests,
        split_collected,
        observed,
        bottle_a: PrimaryBottle {
            seal: a_seal,
            volume_sufficient: a_volume,
            leaked: a_leaked,
            freezer_location: a_freezer,
        },
        bottle_b: SplitBottle {
            seal: b_seal,
            volume_sufficient: b_volume,
            leaked: b_leaked,
            freezer_location: b_freezer,
        },
        bottle_id_matches_ccf,
        labels_swapped,
        split_opened_instead,
        collector_name_and_signature,
        collector_certification_signed,
        form,
        temperature_recorded,
        correction_initiated_on: correction_initiated.map(|(d, _)| d),
        remarks,
        ccf_image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::lims::{DEFAULT_MAX_BYTES, parse_accession};

    const EXAMPLE: &str = include_str!("../../../tests/data/lims/accession-example.xml");
    const MINIMAL: &str = include_str!("../../../tests/data/lims/accession-minimal-example.xml");
    const FLAWS: &str = include_str!("../../../tests/data/lims/accession-flaws-example.xml");

    fn parse(s: &str) -> Result<AccessionDoc, XmlError> {
        parse_accession(s.as_bytes(), DEFAULT_MAX_BYTES)
    }

    fn err(s: &str) -> XmlError {
        parse(s).expect_err("should be refused")
    }

    /// The example with `from` (which must occur exactly once) replaced by `to`.
    fn with(from: &str, to: &str) -> String {
        assert_eq!(EXAMPLE.matches(from).count(), 1, "{from}");
        EXAMPLE.replace(from, to)
    }

    fn check(doc: &str, line: u32, path: &str, rule: Rule) {
        let e = err(doc);
        assert_eq!(
            (e.line, e.path.as_str(), &e.rule),
            (line, path, &rule),
            "{e}"
        );
    }

    #[test]
    fn example_parses_completely() {
        let d = parse(EXAMPLE).unwrap();
        assert_eq!(d.specimen_id.as_str(), "X0000001-TEST");
        assert_eq!(d.employer.name, "Example Freight Lines (fictitious)");
        assert_eq!(d.employer.id, "EMP-0001");
        assert_eq!(d.mro.name, "Dr. Pat Example, MD");
        assert_eq!(
            d.mro.address,
            "100 Example Way\nSuite 0\nSpringfield, ZZ 00000"
        );
        assert_eq!(d.mro.directory_id, "MRO-0042");
        match &d.donor {
            Some(DonorId::Ssn(s)) => assert_eq!(s.expose(), "000-00-0000"),
            other => panic!("donor: {other:?}"),
        }
        assert_eq!(d.reason, Some(TestReason::Random));
        assert_eq!(d.collector.name, "Chris Sample");
        assert_eq!(d.collector.phone, "(555) 010-0000");
        assert_eq!(d.collection_date.to_string(), "2024-03-04");
        assert_eq!(d.receipt_date.to_string(), "2024-03-05");
        assert_eq!(d.tests.panel, Panel::Dot);
        assert_eq!(d.tests.profile.as_deref(), Some("part40-2001"));
        assert!(d.split_collected);
        assert!(!d.observed);
        assert_eq!(
            d.bottle_a,
            PrimaryBottle {
                seal: Seal::Intact,
                volume_sufficient: true,
                leaked: false,
                freezer_location: None
            }
        );
        assert_eq!(d.bottle_b.seal, SplitSeal::Intact);
        assert_eq!(d.bottle_b.freezer_location.as_deref(), Some("FRZ-2/R3/B14"));
        assert!(d.bottle_id_matches_ccf && !d.labels_swapped && !d.split_opened_instead);
        assert!(d.collector_name_and_signature);
        assert!(!d.collector_certification_signed);
        assert_eq!(d.form, Form::Federal);
        assert!(d.temperature_recorded);
        assert_eq!(
            d.remarks.as_ref().map(Confidential::expose),
            Some("Step 4 signature missing; memo requested from collector & site.")
        );
    }

    #[test]
    fn debug_never_shows_donor_id_or_remarks() {
        let d = parse(EXAMPLE).unwrap();
        let shown = format!("{d:?}");
        assert!(!shown.contains("000-00-0000"), "{shown}");
        assert!(!shown.contains("memo requested"), "{shown}");
        let d = parse(&with(
            "<ssn>000-00-0000</ssn>",
            "<employee-id>EMP-ID-777</employee-id>",
        ))
        .unwrap();
        assert!(!format!("{d:?}").contains("777"));
        match d.donor {
            Some(DonorId::EmployeeId(e)) => assert_eq!(e.expose(), "EMP-ID-777"),
            other => panic!("donor: {other:?}"),
        }
    }

    #[test]
    fn minimal_example_optional_elements_absent() {
        let d = parse(MINIMAL).unwrap();
        assert_eq!(d.specimen_id.as_str(), "0000002");
        assert_eq!(d.donor, None);
        assert_eq!(d.reason, None);
        assert_eq!(d.tests.profile, None);
        assert_eq!(d.remarks, None);
        assert_eq!(d.bottle_a.freezer_location, None);
        assert!(!d.split_collected && d.observed);
        assert_eq!(d.bottle_b.seal, SplitSeal::Absent);
        assert_eq!(d.form, Form::NonFederal);
        assert_eq!(d.collection_date, d.receipt_date);
    }

    #[test]
    fn findings_map_to_the_rules_input() {
        let d = parse(EXAMPLE).unwrap();
        let f = d.findings();
        assert_eq!(
            f,
            Accession {
                collector_certification_signed: false,
                ..Accession::default()
            }
        );
        let m = parse(MINIMAL).unwrap().findings();
        assert_eq!(m.split_seal, SplitSeal::Absent);
        assert!(!m.split_sufficient);
        assert_eq!(m.form, Form::NonFederal);
        assert_eq!(m.correction, Correction::None);

        let doc = EXAMPLE
            .replacen("<seal>intact</seal>", "<seal>broken</seal>", 1)
            .replacen("<leaked>false</leaked>", "<leaked>true</leaked>", 1)
            .replace(
                "<bottle-id-matches-ccf>true",
                "<bottle-id-matches-ccf>false",
            )
            .replace("<labels-swapped>false", "<labels-swapped>true")
            .replace("<split-opened-instead>false", "<split-opened-instead>true")
            .replace(
                "<collector-name-and-signature>true",
                "<collector-name-and-signature>false",
            )
            .replace("<temperature-recorded>true", "<temperature-recorded>false")
            .replace("<form>federal", "<form>expired-federal");
        let f = parse(&doc).unwrap().findings();
        assert_eq!(f.primary_seal, Seal::Broken);
        assert!(f.primary_leaked && f.primary_sufficient);
        assert!(!f.id_matches && f.labels_swapped && f.split_opened_instead);
        assert!(!f.collector_name_and_signature && !f.temperature_recorded);
        assert_eq!(f.form, Form::ExpiredFederal);
        assert!(f.split_sufficient);
    }

    #[test]
    fn leaked_or_short_split_is_not_sufficient() {
        let leaked = EXAMPLE.replace(
            "<leaked>false</leaked>\n    <freezer-location>",
            "<leaked>true</leaked>\n    <freezer-location>",
        );
        assert_ne!(leaked, EXAMPLE);
        let f = parse(&leaked).unwrap().findings();
        assert!(!f.split_sufficient && !f.primary_leaked);
        let short = EXAMPLE.replace(
            "<seal>intact</seal>\n    <volume-sufficient>true</volume-sufficient>\n    <leaked>false</leaked>\n    <freezer-location>",
            "<seal>intact</seal>\n    <volume-sufficient>false</volume-sufficient>\n    <leaked>false</leaked>\n    <freezer-location>",
        );
        assert_ne!(short, EXAMPLE);
        assert!(!parse(&short).unwrap().findings().split_sufficient);
    }

    #[test]
    fn every_required_element_is_required() {
        // (line in the example, element, its parent path)
        let required = [
            (4, "specimen-id", "/accession"),
            (6, "name", "/accession/employer"),
            (7, "id", "/accession/employer"),
            (10, "name", "/accession/mro"),
            (14, "directory-id", "/accession/mro"),
            (21, "name", "/accession/collector"),
            (22, "phone", "/accession/collector"),
            (24, "collection-date", "/accession"),
            (25, "receipt-date", "/accession"),
            (27, "panel", "/accession/tests-requested"),
            (30, "split-collected", "/accession"),
            (31, "observed", "/accession"),
            (33, "seal", "/accession/bottle-a"),
            (34, "volume-sufficient", "/accession/bottle-a"),
            (35, "leaked", "/accession/bottle-a"),
            (43, "bottle-id-matches-ccf", "/accession"),
            (44, "labels-swapped", "/accession"),
            (45, "split-opened-instead", "/accession"),
            (46, "collector-name-and-signature", "/accession"),
            (47, "collector-certification-signed", "/accession"),
            (48, "form", "/accession"),
            (49, "temperature-recorded", "/accession"),
        ];
        for (line, name, parent) in required {
            let lines: Vec<&str> = EXAMPLE.lines().collect();
            assert!(lines[line - 1].contains(&format!("<{name}>")), "{name}");
            let doc: Vec<&str> = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != line - 1)
                .map(|(_, l)| *l)
                .collect();
            let e = err(&doc.join("\n"));
            // The next sibling now stands where the element was expected, or, for the last
            // child, the parent's end tag.
            if e.rule == Rule::MissingElement {
                assert_eq!(e.path, format!("{parent}/{name}"));
            } else {
                assert_eq!(
                    e.rule,
                    Rule::UnexpectedElement {
                        expected: Some(name)
                    },
                    "{name}: {e}"
                );
            }
            assert_eq!(e.line as usize, line, "{name}: {e}");
            assert!(e.path.starts_with(parent), "{name}: {e}");
        }
        // Missing at the end of a parent: the parent's end tag is named.
        check(
            &with("\n    <directory-id>MRO-0042</directory-id>", ""),
            14,
            "/accession/mro/directory-id",
            Rule::MissingElement,
        );
        for complex in [
            "employer",
            "mro",
            "collector",
            "tests-requested",
            "bottle-a",
            "bottle-b",
        ] {
            let start = EXAMPLE.find(&format!("<{complex}>")).unwrap();
            let end_tag = format!("</{complex}>");
            let end = EXAMPLE.find(&end_tag).unwrap() + end_tag.len();
            let doc = format!("{}{}", &EXAMPLE[..start], &EXAMPLE[end..]);
            assert!(
                matches!(
                    err(&doc).rule,
                    Rule::UnexpectedElement { expected: Some(n) } if n == complex
                ),
                "{complex}"
            );
        }
    }

    #[test]
    fn optional_elements_may_be_left_out() {
        let doc = with("  <donor>\n    <ssn>000-00-0000</ssn>\n  </donor>\n", "")
            .replace("  <reason>random</reason>\n", "")
            .replace("    <profile>part40-2001</profile>\n", "")
            .replace(
                "    <freezer-location>FRZ-2/R3/B14</freezer-location>\n",
                "",
            )
            .replace(
                "  <remarks>Step 4 signature missing; memo requested from collector &amp; site.</remarks>\n",
                "",
            );
        let d = parse(&doc).unwrap();
        assert!(d.donor.is_none() && d.reason.is_none() && d.remarks.is_none());
        assert!(d.tests.profile.is_none() && d.bottle_b.freezer_location.is_none());
    }

    #[test]
    fn order_and_unexpected_elements() {
        let swapped = with(
            "  <collection-date>2024-03-04</collection-date>\n  <receipt-date>2024-03-05</receipt-date>",
            "  <receipt-date>2024-03-05</receipt-date>\n  <collection-date>2024-03-04</collection-date>",
        );
        check(
            &swapped,
            24,
            "/accession/receipt-date",
            Rule::UnexpectedElement {
                expected: Some("collection-date"),
            },
        );
        check(
            &with("</remarks>", "</remarks>\n  <extra/>"),
            51,
            "/accession/*",
            Rule::UnexpectedElement { expected: None },
        );
        check(
            &with(
                "<reason>random</reason>",
                "<reason>random</reason><reason>random</reason>",
            ),
            19,
            "/accession/reason",
            Rule::UnexpectedElement {
                expected: Some("collector"),
            },
        );
        check(
            &with("<employer>", "<employer>stray text"),
            5,
            "/accession/employer",
            Rule::TextNotAllowed,
        );
        check(
            &with("<reason>random</reason>", "<reason><x/></reason>"),
            19,
            "/accession/reason/*",
            Rule::ChildNotAllowed,
        );
        check(
            &with("<specimen-id>", "<specimen-id id=\"1\">"),
            4,
            "/accession/specimen-id/@id",
            Rule::UnknownAttribute,
        );
        check(
            &with("<employer>", "<employer lang=\"en\">"),
            5,
            "/accession/employer/@*",
            Rule::UnknownAttribute,
        );
        check(
            &with(
                "<accession xmlns=\"urn:custodian:lims:1\">",
                "<accession xmlns=\"urn:custodian:lims:1\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:nil=\"false\">",
            ),
            3,
            "/accession/@*",
            Rule::UnknownAttribute,
        );
    }

    #[test]
    fn specimen_id_limits() {
        let id32 = "A".repeat(32);
        let d = parse(&with("X0000001-TEST", &id32)).unwrap();
        assert_eq!(d.specimen_id.as_str(), id32);
        let p = Rule::Pattern(SPECIMEN_ID_PATTERN);
        check(
            &with("X0000001-TEST", &"A".repeat(33)),
            4,
            "/accession/specimen-id",
            p.clone(),
        );
        check(
            &with("X0000001-TEST", ""),
            4,
            "/accession/specimen-id",
            p.clone(),
        );
        check(
            &with("X0000001-TEST", " X0000001"),
            4,
            "/accession/specimen-id",
            p.clone(),
        );
        check(
            &with("X0000001-TEST", "X0000001_TEST"),
            4,
            "/accession/specimen-id",
            p,
        );
    }

    #[test]
    fn text_length_limits() {
        let cases: [(&str, &str, usize, u32, &str); 6] = [
            (
                "Example Freight Lines (fictitious)",
                "employer/name",
                100,
                6,
                "é",
            ),
            ("Dr. Pat Example, MD", "mro/name", 100, 10, "x"),
            ("Chris Sample", "collector/name", 100, 21, "y"),
            ("FRZ-2/R3/B14", "bottle-b/freezer-location", 64, 41, "z"),
            (
                "Step 4 signature missing; memo requested from collector &amp; site.",
                "remarks",
                2000,
                50,
                "r",
            ),
            ("000-00-0000</ssn>", "donor/employee-id", 32, 17, "e"),
        ];
        for (orig, path, max, line, ch) in cases {
            let wrap = |v: String| {
                if path == "donor/employee-id" {
                    with(
                        "<ssn>000-00-0000</ssn>",
                        &format!("<employee-id>{v}</employee-id>"),
                    )
                } else {
                    with(orig, &v)
                }
            };
            assert!(parse(&wrap(ch.repeat(max))).is_ok(), "{path} at {max}");
            let full = format!("/accession/{path}");
            check(
                &wrap(ch.repeat(max + 1)),
                line,
                &full,
                Rule::TooLong { max },
            );
            check(&wrap(String::new()), line, &full, Rule::Blank);
            check(&wrap(" \n\t ".into()), line, &full, Rule::Blank);
        }
        let address = "100 Example Way\nSuite 0\nSpringfield, ZZ 00000";
        assert!(parse(&with(address, &"a".repeat(300))).is_ok());
        check(
            &with(address, &"a".repeat(301)),
            11,
            "/accession/mro/address",
            Rule::TooLong { max: 300 },
        );
    }

    #[test]
    fn identifier_phone_profile_patterns() {
        check(
            &with("<id>EMP-0001</id>", "<id>EMP 0001</id>"),
            7,
            "/accession/employer/id",
            Rule::Pattern(IDENTIFIER_PATTERN),
        );
        assert!(parse(&with("MRO-0042", &"M".repeat(64))).is_ok());
        check(
            &with("MRO-0042", &"M".repeat(65)),
            14,
            "/accession/mro/directory-id",
            Rule::Pattern(IDENTIFIER_PATTERN),
        );
        check(
            &with("(555) 010-0000", "call me"),
            22,
            "/accession/collector/phone",
            Rule::Pattern(PHONE_PATTERN),
        );
        check(
            &with("part40-2001", "Part40"),
            28,
            "/accession/tests-requested/profile",
            Rule::Pattern(PROFILE_PATTERN),
        );
        check(
            &with("<panel>dot</panel>", "<panel>faa</panel>"),
            27,
            "/accession/tests-requested/panel",
            Rule::NotInEnumeration(&["dot", "hhs"]),
        );
    }

    #[test]
    fn donor_rules() {
        for ok in ["123-45-6789", "123456789"] {
            let d = parse(&with("000-00-0000", ok)).unwrap();
            assert!(matches!(d.donor, Some(DonorId::Ssn(s)) if s.expose() == ok));
        }
        let e = err(&with("000-00-0000", "123-45-678"));
        assert_eq!(
            (e.line, e.path.as_str(), &e.rule),
            (17, "/accession/donor/ssn", &Rule::Pattern(SSN_PATTERN))
        );
        assert!(!e.to_string().contains("678"), "{e}");
        check(
            &with("\n    <ssn>000-00-0000</ssn>", ""),
            17,
            "/accession/donor/ssn|employee-id",
            Rule::MissingElement,
        );
        check(
            &with(
                "<ssn>000-00-0000</ssn>",
                "<ssn>000-00-0000</ssn><employee-id>E1</employee-id>",
            ),
            17,
            "/accession/donor/employee-id",
            Rule::UnexpectedElement { expected: None },
        );
        check(
            &with("<ssn>000-00-0000</ssn>", "<name>x</name>"),
            17,
            "/accession/donor/name",
            Rule::UnexpectedElement {
                expected: Some("ssn or employee-id"),
            },
        );
    }

    #[test]
    fn enumerations() {
        for r in TestReason::VALUES {
            let d = parse(&with(
                "<reason>random</reason>",
                &format!("<reason> {r} </reason>"),
            ))
            .unwrap();
            assert_eq!(d.reason.map(TestReason::key), Some(*r));
        }
        check(
            &with("<reason>random</reason>", "<reason>periodic</reason>"),
            19,
            "/accession/reason",
            Rule::NotInEnumeration(TestReason::VALUES),
        );
        check(
            &with("<reason>random</reason>", "<reason>Random</reason>"),
            19,
            "/accession/reason",
            Rule::NotInEnumeration(TestReason::VALUES),
        );
        // The DOT agency (optional, after the reason): absent, or one of the six.
        assert_eq!(parse(EXAMPLE).unwrap().dot_agency, None);
        for a in DotAgency::VALUES {
            let d = parse(&with(
                "<reason>random</reason>",
                &format!("<reason>random</reason><dot-agency>{a}</dot-agency>"),
            ))
            .unwrap();
            assert_eq!(d.dot_agency.map(DotAgency::key), Some(*a));
        }
        check(
            &with(
                "<reason>random</reason>",
                "<reason>random</reason><dot-agency>FMCSA</dot-agency>",
            ),
            19,
            "/accession/dot-agency",
            Rule::NotInEnumeration(DotAgency::VALUES),
        );
        for (token, form) in [
            ("federal", Form::Federal),
            ("non-federal", Form::NonFederal),
            ("expired-federal", Form::ExpiredFederal),
        ] {
            let d = parse(&with(
                "<form>federal</form>",
                &format!("<form>{token}</form>"),
            ))
            .unwrap();
            assert_eq!(d.form, form);
        }
        check(
            &with("<form>federal</form>", "<form>state</form>"),
            48,
            "/accession/form",
            Rule::NotInEnumeration(<Form as Enumerated>::VALUES),
        );
        // Bottle A: intact or broken only; bottle B may be absent.
        let a_absent = EXAMPLE.replacen("<seal>intact</seal>", "<seal>absent</seal>", 1);
        check(
            &a_absent,
            33,
            "/accession/bottle-a/seal",
            Rule::NotInEnumeration(&["intact", "broken"]),
        );
        let b = "<seal>intact</seal>\n    <volume-sufficient>true</volume-sufficient>\n    <leaked>false</leaked>\n    <freezer-location>";
        for (token, seal) in [
            ("intact", SplitSeal::Intact),
            ("broken", SplitSeal::Broken),
            ("absent", SplitSeal::Absent),
        ] {
            let doc = with(b, &b.replace("intact", token));
            assert_eq!(parse(&doc).unwrap().bottle_b.seal, seal);
        }
        check(
            &with(b, &b.replace("intact", "missing")),
            38,
            "/accession/bottle-b/seal",
            Rule::NotInEnumeration(&["intact", "broken", "absent"]),
        );
    }

    #[test]
    fn booleans_and_dates() {
        for (text, v) in [
            ("true", true),
            ("1", true),
            ("false", false),
            (" 0 ", false),
        ] {
            let d = parse(&with(
                "<observed>false</observed>",
                &format!("<observed>{text}</observed>"),
            ))
            .unwrap();
            assert_eq!(d.observed, v);
        }
        check(
            &with("<observed>false</observed>", "<observed>no</observed>"),
            31,
            "/accession/observed",
            Rule::InvalidBoolean,
        );
        check(
            &with("<observed>false</observed>", "<observed/>"),
            31,
            "/accession/observed",
            Rule::InvalidBoolean,
        );
        for bad in [
            "2023-02-29",
            "2024-04-31",
            "2024-13-01",
            "24-03-04",
            "2024-03-04Z",
            "",
        ] {
            check(
                &with("2024-03-04", bad),
                24,
                "/accession/collection-date",
                Rule::InvalidDate,
            );
        }
        // Leap day accepted when the receipt is on or after it.
        let d =
            parse(&with("2024-03-04", "2024-02-29").replace("2024-03-05", "2024-02-29")).unwrap();
        assert_eq!(d.collection_date, d.receipt_date);
    }

    #[test]
    fn rules_beyond_the_xsd() {
        check(
            &with("2024-03-05", "2024-03-03"),
            25,
            "/accession/receipt-date",
            Rule::Inconsistent("earlier than /accession/collection-date"),
        );
        check(
            &with("<split-collected>true", "<split-collected>false"),
            38,
            "/accession/bottle-b/seal",
            Rule::Inconsistent("must be absent when /accession/split-collected is false"),
        );
        // Split collected but bottle B did not come (40.83(h)): accepted.
        let b = "<seal>intact</seal>\n    <volume-sufficient>true</volume-sufficient>\n    <leaked>false</leaked>\n    <freezer-location>";
        let d = parse(&with(b, &b.replace("intact", "absent"))).unwrap();
        assert!(d.split_collected);
        assert_eq!(d.findings().split_seal, SplitSeal::Absent);
    }

    #[test]
    fn correction_initiated_on_is_optional_and_checked() {
        assert_eq!(parse(EXAMPLE).unwrap().correction_initiated_on, None);
        assert_eq!(parse(MINIMAL).unwrap().correction_initiated_on, None);
        let d = parse(FLAWS).unwrap();
        assert!(!d.collector_certification_signed && !d.temperature_recorded);
        let initiated = |d: &AccessionDoc| d.correction_initiated_on.map(|d| d.to_string());
        assert_eq!(initiated(&d).as_deref(), Some("2024-03-06"));
        let el = "<correction-initiated-on>2024-03-06";
        assert_eq!(FLAWS.matches(el).count(), 1);
        // On the receipt date: accepted; the day before it: refused.
        let on_receipt = FLAWS.replace(el, "<correction-initiated-on>2024-03-05");
        assert_eq!(
            initiated(&parse(&on_receipt).unwrap()).as_deref(),
            Some("2024-03-05")
        );
        let e = err(&FLAWS.replace(el, "<correction-initiated-on>2024-03-04"));
        assert_eq!(
            (e.path.as_str(), &e.rule),
            (
                "/accession/correction-initiated-on",
                &Rule::Inconsistent("earlier than /accession/receipt-date")
            ),
            "{e}"
        );
        assert_eq!(e.line, 52);
        // Not a date.
        let e = err(&FLAWS.replace(el, "<correction-initiated-on>2024-02-30"));
        assert_eq!(e.path, "/accession/correction-initiated-on", "{e}");
        // Without a correctable flaw there is nothing to correct: refused.
        let clean = FLAWS
            .replace(
                "<collector-certification-signed>false",
                "<collector-certification-signed>true",
            )
            .replace("<temperature-recorded>false", "<temperature-recorded>true");
        let e = err(&clean);
        assert_eq!(e.path, "/accession/correction-initiated-on", "{e}");
        assert!(
            matches!(e.rule, Rule::Inconsistent(w) if w.starts_with("only with a correctable flaw"))
        );
        // Any one correctable flaw is enough (an improper form, 40.83(g)).
        let form = clean.replace("<form>federal</form>", "<form>non-federal</form>");
        assert!(parse(&form).unwrap().correction_initiated_on.is_some());
    }
}
