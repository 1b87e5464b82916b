//! The `accession` document (`schemas/accession.xsd`): CCF Copy 1 as the laboratory receives
//! it, with what accessioning found (49 CFR 40.83).

use super::check::{Cursor, Enumerated, pattern, text};
use super::error::{Rule, XmlError};
use super::tree::Node;
use super::value::{
    self, Confidential, Date, IDENTIFIER_PATTERN, PHONE_PATTERN, PROFILE_PATTERN,
    SPECIMEN_ID_PATTERN, SSN_PATTERN, SpecimenId, Ssn,
};
use crate::rules::{Accession, Correction, Form, Seal, SplitSeal};

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

/// Tests requested. DOT specimens are tested for the DOT panel only (40.85).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Panel {
    Dot,
}

impl Enumerated for Panel {
    const VALUES: &'static [&'static str] = &["dot"];
    fn from_token(t: &str) -> Option<Self> {
        (t == "dot").then_some(Panel::Dot)
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
    /// A rule-profile name (e.g. `part40-2001`); `None` for the daemon's default.
    pub profile: Option<String>,
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
    /// At most 2000 characters.
    pub remarks: Option<Confidential>,
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
    let profile = t.opt_value("profile", pattern(value::is_profile_name, PROFILE_PATTERN))?;
    t.finish()?;
    Ok(TestsRequested { panel, profile })
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
    let remarks = c.opt_value("remarks", |s| {
        value::check_text(s, 2000).map(|()| Confidential::new(s))
    })?;
    c.finish()?;

    // Beyond XSD 1.0 (see the schema's header comment).
    if receipt_date < collection_date {
        return Err(XmlError::new(
            receipt_line,
            "/accession/receipt-date",
            Rule::Inconsistent("earlier than /accession/collection-date"),
        ));
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
        remarks,
    })
}
