//! The semi-annual reporting periods of 40.111 and their due dates, in laboratory dates.
//!
//! A period is January 1 to June 30 or July 1 to December 31 (40.111(a)(3), (4)). The employer
//! summary of Appendix D is due by January 20 for July-December of the prior year and by July
//! 20 for January-June of the current year (40.111(a)(3), (4)); the laboratory's summary to DOT
//! (Appendix E) by January 31 and July 31 (40.111(d)). Days are counted in the laboratory's
//! local date (`calendar.utc_offset_minutes`), never UTC: a result reported at 22:00 on June 30
//! in a laboratory at UTC-5 is July 1 in UTC and still belongs to January-June.

use crate::core::clock::{civil_from_days, days_from_civil};
use std::fmt;

const DAY_MS: i64 = 86_400_000;

/// The laboratory's local date (days since 1970-01-01) of an instant in Unix milliseconds.
pub fn lab_day(ms: u64, utc_offset_minutes: i32) -> i64 {
    (ms as i64 + i64::from(utc_offset_minutes) * 60_000).div_euclid(DAY_MS)
}

/// A day as `YYYY-MM-DD`.
pub fn iso(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Parses `YYYY-MM-DD` to days since the epoch.
pub fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let y: i64 = s[0..4].parse().ok()?;
    let m: u32 = s[5..7].parse().ok()?;
    let d: u32 = s[8..10].parse().ok()?;
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// Who a summary is addressed to, which decides its due date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Recipient {
    /// The employer (Appendix D; 40.111(a)).
    Employer,
    /// DOT, ODAPC (Appendix E; 40.111(d)).
    Dot,
}

impl Recipient {
    pub const ALL: [Recipient; 2] = [Recipient::Employer, Recipient::Dot];

    pub fn key(self) -> &'static str {
        match self {
            Recipient::Employer => "employer",
            Recipient::Dot => "dot",
        }
    }
}

/// One semi-annual reporting period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period {
    pub year: i64,
    /// false: January 1 - June 30; true: July 1 - December 31.
    pub second_half: bool,
}

impl Period {
    /// The period a laboratory date falls in.
    pub fn containing(day: i64) -> Period {
        let (year, month, _) = civil_from_days(day);
        Period {
            year,
            second_half: month >= 7,
        }
    }

    /// The period that starts on `day`, if `day` is January 1 or July 1.
    pub fn starting_on(day: i64) -> Option<Period> {
        let p = Period::containing(day);
        (p.first_day() == day).then_some(p)
    }

    /// The last period that has closed on laboratory date `today`.
    pub fn last_closed(today: i64) -> Period {
        Period::containing(today).previous()
    }

    pub fn first_day(self) -> i64 {
        days_from_civil(self.year, if self.second_half { 7 } else { 1 }, 1)
    }

    pub fn last_day(self) -> i64 {
        if self.second_half {
            days_from_civil(self.year, 12, 31)
        } else {
            days_from_civil(self.year, 6, 30)
        }
    }

    pub fn contains(self, day: i64) -> bool {
        (self.first_day()..=self.last_day()).contains(&day)
    }

    pub fn next(self) -> Period {
        if self.second_half {
            Period {
                year: self.year + 1,
                second_half: false,
            }
        } else {
            Period {
                year: self.year,
                second_half: true,
            }
        }
    }

    pub fn previous(self) -> Period {
        if self.second_half {
            Period {
                year: self.year,
                second_half: false,
            }
        } else {
            Period {
                year: self.year - 1,
                second_half: true,
            }
        }
    }

    /// Closed on laboratory date `today`: its last day is past.
    pub fn is_closed(self, today: i64) -> bool {
        today > self.last_day()
    }

    /// The last day a summary of this period may be sent to `to`: employers by January 20 /
    /// July 20 (40.111(a)(3), (4)), DOT by January 31 / July 31 (40.111(d)).
    pub fn due(self, to: Recipient) -> i64 {
        let day = match to {
            Recipient::Employer => 20,
            Recipient::Dot => 31,
        };
        if self.second_half {
            days_from_civil(self.year + 1, 1, day)
        } else {
            days_from_civil(self.year, 7, day)
        }
    }

    /// Past due on laboratory date `today`: the due date itself has gone by.
    pub fn is_overdue(self, to: Recipient, today: i64) -> bool {
        today > self.due(to)
    }

    /// `2026-H1` (January-June) or `2026-H2` (July-December).
    pub fn key(self) -> String {
        format!("{:04}-H{}", self.year, if self.second_half { 2 } else { 1 })
    }

    /// Parses [`Period::key`].
    pub fn parse(s: &str) -> Option<Period> {
        let (y, h) = s.split_once("-H")?;
        if y.len() != 4 || !y.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let year = y.parse().ok()?;
        match h {
            "1" => Some(Period {
                year,
                second_half: false,
            }),
            "2" => Some(Period {
                year,
                second_half: true,
            }),
            _ => None,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// Days until the next employer due date (Jan 20, Jul 20; 40.111(a)(3), (4)) and that date.
pub fn next_due(today: i64) -> (i64, String) {
    let mut p = Period::last_closed(today);
    while p.due(Recipient::Employer) < today {
        p = p.next();
    }
    let due = p.due(Recipient::Employer);
    (due - today, iso(due))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> i64 {
        parse_date(s).unwrap()
    }

    #[test]
    fn periods_are_the_two_halves_of_the_year() {
        let h1 = Period::containing(d("2026-06-30"));
        assert_eq!(h1.key(), "2026-H1");
        assert_eq!(
            (iso(h1.first_day()), iso(h1.last_day())),
            ("2026-01-01".into(), "2026-06-30".into())
        );
        let h2 = Period::containing(d("2026-07-01"));
        assert_eq!(h2.key(), "2026-H2");
        assert_eq!(
            (iso(h2.first_day()), iso(h2.last_day())),
            ("2026-07-01".into(), "2026-12-31".into())
        );
        assert_eq!(h1.next(), h2);
        assert_eq!(h2.previous(), h1);
        assert_eq!(h2.next().key(), "2027-H1");
        assert_eq!(h1.previous().key(), "2025-H2");
        assert_eq!(Period::containing(d("2027-01-01")), h2.next());
        assert!(h1.contains(d("2026-01-01")) && !h1.contains(d("2025-12-31")));
        assert_eq!(Period::parse("2026-H2"), Some(h2));
        for bad in ["2026-H3", "26-H1", "2026H1", "2026-h1", "abcd-H1"] {
            assert_eq!(Period::parse(bad), None, "{bad}");
        }
        assert_eq!(Period::starting_on(d("2026-07-01")), Some(h2));
        assert_eq!(Period::starting_on(d("2026-07-02")), None);
        assert_eq!(Period::starting_on(d("2026-01-01")), Some(h1));
    }

    #[test]
    fn a_period_closes_the_day_after_its_last_day() {
        let h1 = Period::containing(d("2026-03-01"));
        assert!(!h1.is_closed(d("2026-06-30")));
        assert!(h1.is_closed(d("2026-07-01")));
        assert_eq!(Period::last_closed(d("2026-07-01")), h1);
        assert_eq!(Period::last_closed(d("2026-06-30")).key(), "2025-H2");
        assert_eq!(Period::last_closed(d("2027-01-01")).key(), "2026-H2");
    }

    #[test]
    fn due_dates_of_40_111_at_their_edges() {
        let h1 = Period::parse("2026-H1").unwrap();
        let h2 = Period::parse("2026-H2").unwrap();
        // 40.111(a)(4): by July 20 for January-June of the current year.
        assert_eq!(iso(h1.due(Recipient::Employer)), "2026-07-20");
        // 40.111(a)(3): by January 20 for July-December of the prior year.
        assert_eq!(iso(h2.due(Recipient::Employer)), "2027-01-20");
        // 40.111(d): DOT by July 31 / January 31.
        assert_eq!(iso(h1.due(Recipient::Dot)), "2026-07-31");
        assert_eq!(iso(h2.due(Recipient::Dot)), "2027-01-31");
        // Due through the due date itself; overdue the day after.
        assert!(!h1.is_overdue(Recipient::Employer, d("2026-07-20")));
        assert!(h1.is_overdue(Recipient::Employer, d("2026-07-21")));
        assert!(!h1.is_overdue(Recipient::Dot, d("2026-07-31")));
        assert!(h1.is_overdue(Recipient::Dot, d("2026-08-01")));
        assert!(!h2.is_overdue(Recipient::Employer, d("2027-01-20")));
        assert!(h2.is_overdue(Recipient::Employer, d("2027-01-21")));
        assert!(h2.is_overdue(Recipient::Dot, d("2027-02-01")));
    }

    #[test]
    fn the_laboratory_date_is_local_not_utc() {
        // 2026-07-01T03:00Z is June 30, 22:00 at UTC-5.
        let ms = (d("2026-07-01") * DAY_MS + 3 * 3_600_000) as u64;
        assert_eq!(iso(lab_day(ms, -300)), "2026-06-30");
        assert_eq!(iso(lab_day(ms, 0)), "2026-07-01");
        // Exactly local midnight belongs to the new day.
        assert_eq!(iso(lab_day(ms, -180)), "2026-07-01");
        assert_eq!(iso(lab_day(ms, -181)), "2026-06-30");
        // East of UTC: 2026-06-30T20:00Z is July 1, 05:30 at UTC+9:30.
        let ms = (d("2026-06-30") * DAY_MS + 20 * 3_600_000) as u64;
        assert_eq!(iso(lab_day(ms, 570)), "2026-07-01");
    }

    #[test]
    fn next_employer_due_date() {
        assert_eq!(next_due(d("2026-01-20")), (0, "2026-01-20".into()));
        assert_eq!(next_due(d("2026-01-21")).1, "2026-07-20");
        assert_eq!(next_due(d("2026-07-21")).1, "2027-01-20");
        assert_eq!(next_due(d("2026-12-31")), (20, "2027-01-20".into()));
        assert!(parse_date("2026-02-30").is_none());
        assert!(parse_date("2026-2-3").is_none());
    }
}
