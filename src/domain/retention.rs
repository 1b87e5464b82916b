//! Retention of specimens (40.99) and records (40.109), as data.
//!
//! Pure: no clock, no store. Every instant is epoch milliseconds passed in by the caller; the
//! stored [`Retention`] of a specimen is plain serde data.
//!
//! - A primary specimen reported positive, adulterated, substituted or invalid is kept at least
//!   one year after it was reported (40.99(a)); other specimens (negative, rejected) may be
//!   discarded once reported, after a delay the laboratory configures.
//! - The split bottle is kept for the same period while it has not been sent to a second
//!   laboratory (40.99(d)); shipping it stops its clock.
//! - The records of every specimen are kept two years (40.109(a)).
//! - Within the period, the MRO, the employee, the employer or a DOT agency may ask in writing
//!   for longer (40.99(c), 40.109(c)); the request is recorded with its document and extends
//!   the period until a date or until released. A request that arrives after the period in
//!   force has ended is refused: the specimen may already be gone.
//! - custodian never deletes a physical specimen: [`Retention::may_discard`] lists what the
//!   laboratory **may** discard, and the laboratory confirms each discard
//!   ([`Retention::confirm_discard`]), which the caller audits.
//!
//! For the second-laboratory role (40.99(e)), the received split bottle is this module's
//! [`Item::Primary`].

use crate::core::clock::{civil_from_days, days_from_civil, rfc3339};
use crate::domain::calendar::Date;
use crate::domain::rules::Verdict;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// 40.99(a): a non-negative specimen is kept at least this many years.
pub const SPECIMEN_YEARS: u32 = 1;
/// 40.109(a): records are kept at least this many years.
pub const RECORD_YEARS: u32 = 2;

/// Who may ask for longer retention (40.99(c), 40.109(c)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Requester {
    Mro,
    Employee,
    Employer,
    DotAgency,
}

/// What a written request is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    /// The specimen (40.99(c)): the primary bottle and, while it has not been sent, the split
    /// (40.99(d)).
    Specimen,
    /// The records pertaining to the specimen (40.109(c)).
    Records,
}

impl Subject {
    fn cite(self) -> &'static str {
        match self {
            Subject::Specimen => "40.99(c)",
            Subject::Records => "40.109(c)",
        }
    }
    fn covers(self, item: Item) -> bool {
        match self {
            Subject::Specimen => matches!(item, Item::Primary | Item::Split),
            Subject::Records => item == Item::Records,
        }
    }
}

/// How long a written request asks to keep the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Until {
    /// Through the end of this date (laboratory time).
    Date(Date),
    /// Until the requester releases it in writing.
    Released,
}

/// A written request to keep a specimen or its records longer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRequest {
    pub requester: Requester,
    pub subject: Subject,
    /// The document that carries the request (letter reference, LIMS document).
    pub document_ref: String,
    pub received_at_ms: u64,
    pub until: Until,
}

/// A written release of an earlier request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionRelease {
    pub requester: Requester,
    /// The document that carries the release.
    pub document_ref: String,
    /// The `document_ref` of the request it releases.
    pub request_ref: String,
    pub received_at_ms: u64,
}

/// What a physical or documentary item is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Item {
    /// The primary bottle (A).
    Primary,
    /// The split bottle (B).
    Split,
    /// The specimen's records (40.109).
    Records,
}

impl Item {
    pub const ALL: [Item; 3] = [Item::Primary, Item::Split, Item::Records];

    /// The key of its storage location in the CCF's `storage` map, for bottles.
    pub fn bottle(self) -> Option<&'static str> {
        match self {
            Item::Primary => Some("A"),
            Item::Split => Some("B"),
            Item::Records => None,
        }
    }
}

/// What the reported result requires of the specimen's retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Positive, adulterated, substituted or invalid: one year (40.99(a)).
    OneYear,
    /// Negative or rejected: may be discarded once reported, after the configured delay.
    AfterReport,
}

impl Basis {
    /// From the verdict the engine decided (its `retain_one_year` comes from the profile's
    /// 40.99(a) list); `None` while a correctable flaw holds the result (nothing reported).
    pub fn of(verdict: &Verdict) -> Option<Basis> {
        if verdict.hold.is_some() {
            None
        } else if verdict.retain_one_year {
            Some(Basis::OneYear)
        } else {
            Some(Basis::AfterReport)
        }
    }
}

/// The laboratory's retention settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// A specimen not kept a year may be discarded this long after it was reported.
    pub after_report_ms: u64,
    /// The laboratory's UTC offset, for requests "until" a date. Use the standard-time offset
    /// (e.g. -300 for Eastern): during daylight time that ends a request an hour after local
    /// midnight, never before it.
    pub utc_offset_minutes: i32,
}

/// Where the split bottle is, as far as retention is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum SplitBottle {
    /// No split bottle in the laboratory's custody (never collected, did not accompany).
    Absent,
    /// In the laboratory's custody, not sent.
    Held,
    /// Sent to a second laboratory (40.99(d)): its clock stopped here.
    Shipped { at_ms: u64 },
}

/// A discard the laboratory confirmed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discard {
    pub item: Item,
    /// Who confirmed it (the admin user or LIMS document).
    pub confirmed_by: String,
    pub at_ms: u64,
}

/// How long an item must still be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    /// May be discarded at and after this instant.
    Until(u64),
    /// A written request without end date is in force.
    UntilReleased,
}

/// Whether the laboratory still holds an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum Holding {
    Held,
    /// There never was one (a split that was not collected or did not arrive).
    Absent,
    Shipped {
        at_ms: u64,
    },
    Discarded {
        at_ms: u64,
    },
}

/// The retention of one item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRetention {
    pub item: Item,
    pub holding: Holding,
    /// The minimum period's end (40.99(a), 40.109(a), or the after-report delay).
    pub minimum_until_ms: u64,
    /// With every written request and release applied.
    pub keep: Keep,
    /// The document references of the requests that extend it now.
    pub extended_by: Vec<String>,
}

/// An item the laboratory may discard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discardable {
    pub item: Item,
    pub since_ms: u64,
    /// The freezer location the LIMS gave for the bottle, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
}

/// Why a request, release, shipment or discard was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "the retention period of the {what} ended at {ended_at}; a written request must arrive within it ({cite}) and the {what} may already have been discarded"
    )]
    PeriodPassed {
        what: &'static str,
        ended_at: String,
        cite: &'static str,
    },
    #[error("the {0} was already discarded; nothing is left to retain")]
    AlreadyDiscarded(&'static str),
    #[error("the request asks to keep until {0}, which has already passed")]
    UntilInPast(Date),
    #[error("the document reference must not be empty")]
    NoDocument,
    #[error("a request with document reference `{0}` is already recorded")]
    DuplicateRequest(String),
    #[error("no retention request with document reference `{0}` is recorded")]
    NoSuchRequest(String),
    #[error("the request `{0}` was already released")]
    AlreadyReleased(String),
    #[error("the request `{request}` was made by the {made_by:?}; only they can release it")]
    NotTheRequester { request: String, made_by: Requester },
    #[error("a release cannot precede the request it releases (`{0}`)")]
    ReleaseBeforeRequest(String),
    #[error("the {0} is not in the laboratory's custody")]
    NotHeld(&'static str),
    #[error("the {what} must be kept until {until}")]
    NotYetDiscardable { what: &'static str, until: String },
    #[error("the {what} is kept until released by written request(s): {requests}")]
    KeptUntilReleased {
        what: &'static str,
        requests: String,
    },
}

fn name(item: Item) -> &'static str {
    match item {
        Item::Primary => "primary specimen",
        Item::Split => "split specimen",
        Item::Records => "records",
    }
}

fn subject_name(s: Subject) -> &'static str {
    match s {
        Subject::Specimen => "specimen",
        Subject::Records => "records",
    }
}

/// The same instant `years` later by the UTC calendar; February 29 goes to March 1 (a day
/// longer, never shorter).
pub fn add_years_ms(ms: u64, years: u32) -> u64 {
    let days = (ms / 86_400_000) as i64;
    let rem = ms % 86_400_000;
    let (y, m, d) = civil_from_days(days);
    let y2 = y + i64::from(years);
    let target = if m == 2 && d == 29 && !is_leap(y2) {
        days_from_civil(y2, 3, 1)
    } else {
        days_from_civil(y2, m, d)
    };
    (target as u64) * 86_400_000 + rem
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

/// Everything retention knows about one reported specimen; stored with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    pub basis: Basis,
    pub reported_at_ms: u64,
    pub split: SplitBottle,
    #[serde(default)]
    pub requests: Vec<RetentionRequest>,
    #[serde(default)]
    pub releases: Vec<RetentionRelease>,
    #[serde(default)]
    pub discards: Vec<Discard>,
}

impl Retention {
    /// The retention of a specimen reported at `reported_at_ms`.
    pub fn new(basis: Basis, reported_at_ms: u64, split: SplitBottle) -> Retention {
        Retention {
            basis,
            reported_at_ms,
            split,
            requests: Vec::new(),
            releases: Vec::new(),
            discards: Vec::new(),
        }
    }

    /// The end of the minimum period of an item.
    pub fn minimum_until_ms(&self, item: Item, policy: &RetentionPolicy) -> u64 {
        match (item, self.basis) {
            (Item::Records, _) => add_years_ms(self.reported_at_ms, RECORD_YEARS),
            (_, Basis::OneYear) => add_years_ms(self.reported_at_ms, SPECIMEN_YEARS),
            (_, Basis::AfterReport) => self.reported_at_ms.saturating_add(policy.after_report_ms),
        }
    }

    fn release_of(&self, request_ref: &str) -> Option<&RetentionRelease> {
        self.releases.iter().find(|r| r.request_ref == request_ref)
    }

    /// The end a request sets (`None`: open until released).
    fn request_end(&self, r: &RetentionRequest, policy: &RetentionPolicy) -> Option<u64> {
        let release = self.release_of(&r.document_ref).map(|x| x.received_at_ms);
        match (r.until, release) {
            (Until::Date(d), None) => Some(d.end_ms(policy.utc_offset_minutes)),
            (Until::Date(d), Some(at)) => Some(d.end_ms(policy.utc_offset_minutes).min(at)),
            (Until::Released, None) => None,
            (Until::Released, Some(at)) => Some(at),
        }
    }

    /// How long an item must be kept, with every request and release applied.
    pub fn keep(&self, item: Item, policy: &RetentionPolicy) -> (Keep, Vec<String>) {
        let minimum = self.minimum_until_ms(item, policy);
        let mut until = minimum;
        let mut open = false;
        let mut by = Vec::new();
        for r in self.requests.iter().filter(|r| r.subject.covers(item)) {
            match self.request_end(r, policy) {
                None => {
                    open = true;
                    by.push(r.document_ref.clone());
                }
                Some(end) if end > minimum => {
                    until = until.max(end);
                    by.push(r.document_ref.clone());
                }
                Some(_) => {}
            }
        }
        let keep = if open {
            Keep::UntilReleased
        } else {
            Keep::Until(until)
        };
        (keep, by)
    }

    fn discarded(&self, item: Item) -> Option<&Discard> {
        self.discards.iter().find(|d| d.item == item)
    }

    /// Whether the laboratory still holds an item.
    pub fn holding(&self, item: Item) -> Holding {
        if let Some(d) = self.discarded(item) {
            return Holding::Discarded { at_ms: d.at_ms };
        }
        match (item, self.split) {
            (Item::Split, SplitBottle::Absent) => Holding::Absent,
            (Item::Split, SplitBottle::Shipped { at_ms }) => Holding::Shipped { at_ms },
            _ => Holding::Held,
        }
    }

    /// The retention of every item.
    pub fn schedule(&self, policy: &RetentionPolicy) -> Vec<ItemRetention> {
        Item::ALL
            .into_iter()
            .map(|item| {
                let (keep, extended_by) = self.keep(item, policy);
                ItemRetention {
                    item,
                    holding: self.holding(item),
                    minimum_until_ms: self.minimum_until_ms(item, policy),
                    keep,
                    extended_by,
                }
            })
            .collect()
    }

    /// What the laboratory may discard at `now_ms`, with the bottle's freezer location from
    /// the CCF's `storage` map (keys `A`, `B`). Never a shipped, absent or discarded item.
    pub fn may_discard(
        &self,
        policy: &RetentionPolicy,
        now_ms: u64,
        storage: &BTreeMap<String, String>,
    ) -> Vec<Discardable> {
        Item::ALL
            .into_iter()
            .filter(|item| self.holding(*item) == Holding::Held)
            .filter_map(|item| match self.keep(item, policy).0 {
                Keep::Until(t) if t <= now_ms => Some(Discardable {
                    item,
                    since_ms: t,
                    location: item.bottle().and_then(|b| storage.get(b).cloned()),
                }),
                _ => None,
            })
            .collect()
    }

    /// The next instant after `now_ms` at which something held becomes discardable (for the
    /// due-time index); `None` when nothing will without a new event.
    pub fn next_due_ms(&self, policy: &RetentionPolicy, now_ms: u64) -> Option<u64> {
        Item::ALL
            .into_iter()
            .filter(|item| self.holding(*item) == Holding::Held)
            .filter_map(|item| match self.keep(item, policy).0 {
                Keep::Until(t) if t > now_ms => Some(t),
                _ => None,
            })
            .min()
    }

    /// Records a written request to keep longer (40.99(c), 40.109(c)). Refused when it arrives
    /// at or after the end of the period in force for its subject (the minimum period, or an
    /// extension already recorded), when the subject was discarded, or when it asks for a date
    /// already past.
    pub fn request(
        &mut self,
        req: RetentionRequest,
        policy: &RetentionPolicy,
    ) -> Result<(), RetentionError> {
        if req.document_ref.trim().is_empty() {
            return Err(RetentionError::NoDocument);
        }
        if self
            .requests
            .iter()
            .any(|r| r.document_ref == req.document_ref)
        {
            return Err(RetentionError::DuplicateRequest(req.document_ref));
        }
        let item = match req.subject {
            Subject::Specimen => Item::Primary,
            Subject::Records => Item::Records,
        };
        let what = subject_name(req.subject);
        if self.discarded(item).is_some() {
            return Err(RetentionError::AlreadyDiscarded(what));
        }
        if let Keep::Until(end) = self.keep(item, policy).0
            && req.received_at_ms >= end
        {
            return Err(RetentionError::PeriodPassed {
                what,
                ended_at: rfc3339(end),
                cite: req.subject.cite(),
            });
        }
        if let Until::Date(d) = req.until
            && d.end_ms(policy.utc_offset_minutes) <= req.received_at_ms
        {
            return Err(RetentionError::UntilInPast(d));
        }
        self.requests.push(req);
        Ok(())
    }

    /// Records the written release of an earlier request, by the party that made it.
    pub fn release(&mut self, rel: RetentionRelease) -> Result<(), RetentionError> {
        if rel.document_ref.trim().is_empty() {
            return Err(RetentionError::NoDocument);
        }
        let Some(req) = self
            .requests
            .iter()
            .find(|r| r.document_ref == rel.request_ref)
        else {
            return Err(RetentionError::NoSuchRequest(rel.request_ref));
        };
        if self.release_of(&rel.request_ref).is_some() {
            return Err(RetentionError::AlreadyReleased(rel.request_ref));
        }
        if req.requester != rel.requester {
            return Err(RetentionError::NotTheRequester {
                request: rel.request_ref,
                made_by: req.requester,
            });
        }
        if rel.received_at_ms < req.received_at_ms {
            return Err(RetentionError::ReleaseBeforeRequest(rel.request_ref));
        }
        self.releases.push(rel);
        Ok(())
    }

    /// The split bottle was sent to a second laboratory: its retention clock stops (40.99(d)).
    pub fn split_shipped(&mut self, at_ms: u64) -> Result<(), RetentionError> {
        if self.holding(Item::Split) != Holding::Held {
            return Err(RetentionError::NotHeld(name(Item::Split)));
        }
        self.split = SplitBottle::Shipped { at_ms };
        Ok(())
    }

    /// The laboratory confirms it discarded an item. Refused unless the item is held and
    /// discardable at `at_ms`.
    pub fn confirm_discard(
        &mut self,
        item: Item,
        confirmed_by: &str,
        at_ms: u64,
        policy: &RetentionPolicy,
    ) -> Result<(), RetentionError> {
        match self.holding(item) {
            Holding::Held => {}
            Holding::Discarded { .. } => return Err(RetentionError::AlreadyDiscarded(name(item))),
            Holding::Absent | Holding::Shipped { .. } => {
                return Err(RetentionError::NotHeld(name(item)));
            }
        }
        match self.keep(item, policy) {
            (Keep::Until(t), _) if t <= at_ms => {}
            (Keep::Until(t), _) => {
                return Err(RetentionError::NotYetDiscardable {
                    what: name(item),
                    until: rfc3339(t),
                });
            }
            (Keep::UntilReleased, by) => {
                return Err(RetentionError::KeptUntilReleased {
                    what: name(item),
                    requests: by.join(", "),
                });
            }
        }
        self.discards.push(Discard {
            item,
            confirmed_by: confirmed_by.to_string(),
            at_ms,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    fn at(s: &str) -> u64 {
        // "YYYY-MM-DDTHH:MM" in UTC.
        let (date, time) = s.split_once('T').unwrap();
        let d: Date = date.parse().unwrap();
        let (h, m) = time.split_once(':').unwrap();
        d.start_ms(0) + (h.parse::<u64>().unwrap() * 60 + m.parse::<u64>().unwrap()) * 60_000
    }

    fn policy() -> RetentionPolicy {
        RetentionPolicy {
            after_report_ms: 7 * DAY,
            utc_offset_minutes: -300,
        }
    }

    fn storage() -> BTreeMap<String, String> {
        [
            ("A".to_string(), "freezer-2/rack-7/A12".to_string()),
            ("B".to_string(), "freezer-2/rack-7/B12".to_string()),
        ]
        .into_iter()
        .collect()
    }

    fn positive() -> Retention {
        Retention::new(Basis::OneYear, at("2026-03-10T14:05"), SplitBottle::Held)
    }

    fn req(
        doc: &str,
        who: Requester,
        subject: Subject,
        received: u64,
        until: Until,
    ) -> RetentionRequest {
        RetentionRequest {
            requester: who,
            subject,
            document_ref: doc.to_string(),
            received_at_ms: received,
            until,
        }
    }

    fn items(v: &[Discardable]) -> Vec<Item> {
        v.iter().map(|d| d.item).collect()
    }

    #[test]
    fn years_are_calendar_years() {
        assert_eq!(
            add_years_ms(at("2026-03-10T14:05"), 1),
            at("2027-03-10T14:05")
        );
        assert_eq!(
            add_years_ms(at("2026-03-10T14:05"), 2),
            at("2028-03-10T14:05")
        );
        // February 29 → March 1 (longer, never shorter); kept in a leap target year.
        assert_eq!(
            add_years_ms(at("2028-02-29T09:00"), 1),
            at("2029-03-01T09:00")
        );
        assert_eq!(
            add_years_ms(at("2028-02-29T09:00"), 4),
            at("2032-02-29T09:00")
        );
        assert_eq!(
            add_years_ms(at("2027-12-31T23:59"), 1),
            at("2028-12-31T23:59")
        );
    }

    #[test]
    fn basis_follows_the_verdict() {
        let mut v = Verdict {
            results: vec![crate::domain::rules::ResultCategory::Positive],
            dilute: false,
            positive_analytes: vec!["thca".into()],
            quantitations: BTreeMap::new(),
            redesignated: false,
            hold: None,
            retain_one_year: true,
            remarks: vec![],
        };
        assert_eq!(Basis::of(&v), Some(Basis::OneYear));
        v.retain_one_year = false;
        assert_eq!(Basis::of(&v), Some(Basis::AfterReport));
        v.hold = Some(crate::domain::rules::Hold {
            reason: "x".into(),
            business_days: 5,
        });
        assert_eq!(Basis::of(&v), None);
    }

    #[test]
    fn one_year_for_a_positive_at_before_and_after_the_edge() {
        let r = positive();
        let p = policy();
        let end = at("2027-03-10T14:05");
        assert_eq!(r.minimum_until_ms(Item::Primary, &p), end);
        assert_eq!(r.minimum_until_ms(Item::Split, &p), end);
        assert_eq!(
            r.minimum_until_ms(Item::Records, &p),
            at("2028-03-10T14:05")
        );
        assert!(r.may_discard(&p, end - 1, &storage()).is_empty());
        let now = r.may_discard(&p, end, &storage());
        assert_eq!(items(&now), vec![Item::Primary, Item::Split]);
        assert_eq!(now[0].location.as_deref(), Some("freezer-2/rack-7/A12"));
        assert_eq!(now[1].location.as_deref(), Some("freezer-2/rack-7/B12"));
        assert_eq!(now[0].since_ms, end);
        assert_eq!(
            items(&r.may_discard(&p, end + 1, &storage())),
            vec![Item::Primary, Item::Split]
        );
        // Without a location from the LIMS.
        assert_eq!(r.may_discard(&p, end, &BTreeMap::new())[0].location, None);
        // Records: two years.
        let rec = at("2028-03-10T14:05");
        assert_eq!(r.may_discard(&p, rec - 1, &storage()).len(), 2);
        assert_eq!(
            items(&r.may_discard(&p, rec, &storage())),
            vec![Item::Primary, Item::Split, Item::Records]
        );
        assert_eq!(r.next_due_ms(&p, at("2026-03-10T14:05")), Some(end));
        assert_eq!(r.next_due_ms(&p, end - 1), Some(end));
        assert_eq!(r.next_due_ms(&p, end), Some(rec));
        assert_eq!(r.next_due_ms(&p, rec), None);
    }

    #[test]
    fn negatives_after_the_configured_delay() {
        let r = Retention::new(
            Basis::AfterReport,
            at("2026-03-10T14:05"),
            SplitBottle::Held,
        );
        let p = policy();
        let end = at("2026-03-17T14:05");
        assert!(r.may_discard(&p, end - 1, &storage()).is_empty());
        assert_eq!(
            items(&r.may_discard(&p, end, &storage())),
            vec![Item::Primary, Item::Split]
        );
        assert_eq!(
            r.minimum_until_ms(Item::Records, &p),
            at("2028-03-10T14:05")
        );
        let zero = RetentionPolicy {
            after_report_ms: 0,
            ..p
        };
        assert_eq!(
            r.may_discard(&zero, at("2026-03-10T14:05"), &storage())
                .len(),
            2
        );
    }

    #[test]
    fn mro_letter_extends_then_release_ends_it() {
        let mut r = positive();
        let p = policy();
        let end = at("2027-03-10T14:05");
        // Letter received a day before the year ends, keep through 2027-12-31 (EST).
        r.request(
            req(
                "MRO-LTR-0042",
                Requester::Mro,
                Subject::Specimen,
                end - DAY,
                Until::Date("2027-12-31".parse().unwrap()),
            ),
            &p,
        )
        .unwrap();
        let through = at("2028-01-01T05:00");
        let (keep, by) = r.keep(Item::Primary, &p);
        assert_eq!(keep, Keep::Until(through));
        assert_eq!(by, vec!["MRO-LTR-0042".to_string()]);
        assert_eq!(r.keep(Item::Split, &p).0, Keep::Until(through));
        // Records are not covered by a specimen request.
        assert_eq!(
            r.keep(Item::Records, &p).0,
            Keep::Until(at("2028-03-10T14:05"))
        );
        assert!(r.may_discard(&p, end, &storage()).is_empty());
        assert!(r.may_discard(&p, through - 1, &storage()).is_empty());
        assert_eq!(r.may_discard(&p, through, &storage()).len(), 2);
        assert_eq!(r.next_due_ms(&p, end), Some(through));

        // A second letter, while the extension is in force: until released.
        r.request(
            req(
                "MRO-LTR-0057",
                Requester::Mro,
                Subject::Specimen,
                end + 30 * DAY,
                Until::Released,
            ),
            &p,
        )
        .unwrap();
        assert_eq!(r.keep(Item::Primary, &p).0, Keep::UntilReleased);
        // A year later only the records (two years, not covered by the request) may go.
        assert_eq!(
            items(&r.may_discard(&p, through + 365 * DAY, &storage())),
            vec![Item::Records]
        );
        assert_eq!(r.next_due_ms(&p, through), Some(at("2028-03-10T14:05")));
        let e = r
            .confirm_discard(Item::Primary, "lab", through + DAY, &p)
            .unwrap_err();
        assert!(e.to_string().contains("MRO-LTR-0057"), "{e}");

        // Released after the dated extension passed: discardable from the release.
        let released = through + 40 * DAY;
        r.release(RetentionRelease {
            requester: Requester::Mro,
            document_ref: "MRO-LTR-0063".into(),
            request_ref: "MRO-LTR-0057".into(),
            received_at_ms: released,
        })
        .unwrap();
        assert_eq!(r.keep(Item::Primary, &p).0, Keep::Until(released));
        assert!(r.may_discard(&p, released - 1, &storage()).is_empty());
        assert_eq!(r.may_discard(&p, released, &storage()).len(), 2);
        // After it: a new request comes too late.
        let e = r
            .request(
                req(
                    "EMP-1",
                    Requester::Employee,
                    Subject::Specimen,
                    released,
                    Until::Released,
                ),
                &p,
            )
            .unwrap_err();
        assert!(matches!(e, RetentionError::PeriodPassed { .. }), "{e}");
    }

    #[test]
    fn request_after_the_year_is_refused_with_a_clear_error() {
        let mut r = positive();
        let p = policy();
        let end = at("2027-03-10T14:05");
        let late = req(
            "DOT-7",
            Requester::DotAgency,
            Subject::Specimen,
            end,
            Until::Released,
        );
        let e = r.request(late, &p).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the retention period of the specimen ended at 2027-03-10T14:05:00.000Z; a written request must arrive within it (40.99(c)) and the specimen may already have been discarded"
        );
        assert!(r.requests.is_empty());
        // One millisecond before the end is within the year.
        r.request(
            req(
                "DOT-7",
                Requester::DotAgency,
                Subject::Specimen,
                end - 1,
                Until::Released,
            ),
            &p,
        )
        .unwrap();
        assert_eq!(r.keep(Item::Primary, &p).0, Keep::UntilReleased);
        // Records: 40.109(c), two years.
        let rec_end = at("2028-03-10T14:05");
        let e = r
            .request(
                req(
                    "EMPLOYER-9",
                    Requester::Employer,
                    Subject::Records,
                    rec_end,
                    Until::Released,
                ),
                &p,
            )
            .unwrap_err();
        assert!(e.to_string().contains("(40.109(c))"), "{e}");
        r.request(
            req(
                "EMPLOYER-9",
                Requester::Employer,
                Subject::Records,
                rec_end - 1,
                Until::Released,
            ),
            &p,
        )
        .unwrap();
        assert_eq!(r.keep(Item::Records, &p).0, Keep::UntilReleased);
    }

    #[test]
    fn requests_are_checked() {
        let mut r = positive();
        let p = policy();
        let t = at("2026-04-01T10:00");
        let e = r
            .request(
                req(" ", Requester::Mro, Subject::Specimen, t, Until::Released),
                &p,
            )
            .unwrap_err();
        assert_eq!(e, RetentionError::NoDocument);
        // A date already past when received.
        let e = r
            .request(
                req(
                    "L1",
                    Requester::Mro,
                    Subject::Specimen,
                    t,
                    Until::Date("2026-03-31".parse().unwrap()),
                ),
                &p,
            )
            .unwrap_err();
        assert_eq!(
            e,
            RetentionError::UntilInPast("2026-03-31".parse().unwrap())
        );
        // A date inside the minimum period is recorded but changes nothing.
        r.request(
            req(
                "L1",
                Requester::Mro,
                Subject::Specimen,
                t,
                Until::Date("2026-06-30".parse().unwrap()),
            ),
            &p,
        )
        .unwrap();
        assert_eq!(
            r.keep(Item::Primary, &p),
            (Keep::Until(at("2027-03-10T14:05")), vec![])
        );
        let e = r
            .request(
                req("L1", Requester::Mro, Subject::Specimen, t, Until::Released),
                &p,
            )
            .unwrap_err();
        assert_eq!(e, RetentionError::DuplicateRequest("L1".into()));
    }

    #[test]
    fn releases_are_checked() {
        let mut r = positive();
        let p = policy();
        let t = at("2026-04-01T10:00");
        r.request(
            req(
                "EMP-HOLD",
                Requester::Employee,
                Subject::Specimen,
                t,
                Until::Released,
            ),
            &p,
        )
        .unwrap();
        let rel = |who, doc: &str, of: &str, at_ms| RetentionRelease {
            requester: who,
            document_ref: doc.into(),
            request_ref: of.into(),
            received_at_ms: at_ms,
        };
        assert_eq!(
            r.release(rel(Requester::Employee, "R1", "NOPE", t + DAY)),
            Err(RetentionError::NoSuchRequest("NOPE".into()))
        );
        let e = r
            .release(rel(Requester::Employer, "R1", "EMP-HOLD", t + DAY))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the request `EMP-HOLD` was made by the Employee; only they can release it"
        );
        assert_eq!(
            r.release(rel(Requester::Employee, "R1", "EMP-HOLD", t - 1)),
            Err(RetentionError::ReleaseBeforeRequest("EMP-HOLD".into()))
        );
        assert_eq!(
            r.release(rel(Requester::Employee, "", "EMP-HOLD", t + DAY)),
            Err(RetentionError::NoDocument)
        );
        r.release(rel(Requester::Employee, "R1", "EMP-HOLD", t + DAY))
            .unwrap();
        assert_eq!(
            r.release(rel(Requester::Employee, "R2", "EMP-HOLD", t + 2 * DAY)),
            Err(RetentionError::AlreadyReleased("EMP-HOLD".into()))
        );
        // Released within the year: the minimum period still applies.
        assert_eq!(
            r.keep(Item::Primary, &p).0,
            Keep::Until(at("2027-03-10T14:05"))
        );
    }

    #[test]
    fn a_dated_request_released_early_ends_at_the_release() {
        let mut r = positive();
        let p = policy();
        r.request(
            req(
                "L",
                Requester::Mro,
                Subject::Specimen,
                at("2027-01-05T10:00"),
                Until::Date("2029-01-01".parse().unwrap()),
            ),
            &p,
        )
        .unwrap();
        let rel_at = at("2027-06-01T10:00");
        r.release(RetentionRelease {
            requester: Requester::Mro,
            document_ref: "L-REL".into(),
            request_ref: "L".into(),
            received_at_ms: rel_at,
        })
        .unwrap();
        assert_eq!(r.keep(Item::Primary, &p).0, Keep::Until(rel_at));
    }

    #[test]
    fn shipped_split_stops_its_clock() {
        let mut r = positive();
        let p = policy();
        let shipped = at("2026-05-02T16:00");
        r.split_shipped(shipped).unwrap();
        assert_eq!(r.holding(Item::Split), Holding::Shipped { at_ms: shipped });
        assert_eq!(
            r.split_shipped(shipped + 1),
            Err(RetentionError::NotHeld("split specimen"))
        );
        let end = at("2027-03-10T14:05");
        assert_eq!(
            items(&r.may_discard(&p, end, &storage())),
            vec![Item::Primary]
        );
        let e = r.confirm_discard(Item::Split, "lab", end, &p).unwrap_err();
        assert_eq!(e, RetentionError::NotHeld("split specimen"));
        // An absent split is never listed.
        let a = Retention::new(Basis::OneYear, at("2026-03-10T14:05"), SplitBottle::Absent);
        assert_eq!(
            items(&a.may_discard(&p, end, &storage())),
            vec![Item::Primary]
        );
        assert_eq!(a.holding(Item::Split), Holding::Absent);
        let mut a2 = a.clone();
        assert_eq!(
            a2.split_shipped(end),
            Err(RetentionError::NotHeld("split specimen"))
        );
    }

    #[test]
    fn discards_are_confirmed_only_when_allowed() {
        let mut r = positive();
        let p = policy();
        let end = at("2027-03-10T14:05");
        let e = r
            .confirm_discard(Item::Primary, "tech-1", end - 1, &p)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the primary specimen must be kept until 2027-03-10T14:05:00.000Z"
        );
        r.confirm_discard(Item::Primary, "tech-1", end, &p).unwrap();
        assert_eq!(r.holding(Item::Primary), Holding::Discarded { at_ms: end });
        assert_eq!(
            r.confirm_discard(Item::Primary, "tech-1", end + 1, &p),
            Err(RetentionError::AlreadyDiscarded("primary specimen"))
        );
        assert_eq!(
            items(&r.may_discard(&p, end + 1, &storage())),
            vec![Item::Split]
        );
        assert_eq!(r.next_due_ms(&p, end), Some(at("2028-03-10T14:05")));
        // Nothing to retain once the specimen is gone.
        let e = r
            .request(
                req(
                    "LATE",
                    Requester::Mro,
                    Subject::Specimen,
                    end - 1,
                    Until::Released,
                ),
                &p,
            )
            .unwrap_err();
        assert_eq!(e, RetentionError::AlreadyDiscarded("specimen"));
    }

    #[test]
    fn stored_as_serde_data() {
        let mut r = positive();
        let p = policy();
        r.request(
            req(
                "MRO-1",
                Requester::Mro,
                Subject::Specimen,
                at("2026-04-01T10:00"),
                Until::Date("2027-12-31".parse().unwrap()),
            ),
            &p,
        )
        .unwrap();
        r.split_shipped(at("2026-05-02T16:00")).unwrap();
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["requests"][0]["until"]["date"], "2027-12-31");
        assert_eq!(j["requests"][0]["requester"], "mro");
        assert_eq!(j["split"]["state"], "shipped");
        let back: Retention = serde_json::from_value(j).unwrap();
        assert_eq!(back, r);
        let s = serde_json::to_value(r.schedule(&p)).unwrap();
        assert_eq!(s[1]["holding"]["state"], "shipped");
        assert_eq!(s[0]["extended_by"][0], "MRO-1");
        let released: Until = serde_json::from_str("\"released\"").unwrap();
        assert_eq!(released, Until::Released);
    }

    #[test]
    fn years_of_clocks_in_milliseconds() {
        // Every day of three years, one specimen reported each day: at, just before and just
        // after its one-year end.
        let p = policy();
        let start = at("2027-01-01T08:30");
        for day in 0..(3 * 366) {
            let reported = start + day * DAY;
            let r = Retention::new(Basis::OneYear, reported, SplitBottle::Held);
            let end = r.minimum_until_ms(Item::Primary, &p);
            let span = (end - reported) / DAY;
            assert!(span == 365 || span == 366, "{span}");
            assert!(r.may_discard(&p, end - 1, &BTreeMap::new()).is_empty());
            assert_eq!(r.may_discard(&p, end, &BTreeMap::new()).len(), 2);
            assert_eq!(r.next_due_ms(&p, reported), Some(end));
        }
    }
}
