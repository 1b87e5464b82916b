//! Business days (40.83(e)–(g)): US federal holidays computed from their rules, lab closures,
//! and the correction window of a correctable flaw.
//!
//! Pure: dates in, dates out; an instant appears only as epoch milliseconds passed in by the
//! caller, with the laboratory's UTC offset.
//!
//! The federal holidays are those of 5 U.S.C. 6103(a), by their current rules (Martin Luther
//! King Jr. Day from 1986, Juneteenth from 2021). A holiday on a Saturday is observed on the
//! Friday before and one on a Sunday on the Monday after (5 U.S.C. 6103(b), Executive Order
//! 11582): New Year's Day on a Saturday is observed on Friday December 31 of the year before.
//! One-off closures (a presidential order for Christmas Eve, a storm) are lab closures,
//! configured as `[calendar] closures`.

use crate::core::clock::{civil_from_days, days_from_civil};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// A calendar date (proleptic Gregorian), years 0001–9999. Serialized as `YYYY-MM-DD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// Days since 1970-01-01 (negative before).
    days: i64,
}

/// The first and last representable dates.
const MIN_DAYS: i64 = -719_162; // 0001-01-01
const MAX_DAYS: i64 = 2_932_896; // 9999-12-31

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl Weekday {
    const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    pub fn is_weekend(self) -> bool {
        matches!(self, Weekday::Saturday | Weekday::Sunday)
    }

    fn index(self) -> i64 {
        self as i64
    }
}

/// Why text is not a date.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a date (YYYY-MM-DD, years 0001-9999)")]
pub struct DateError(pub String);

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

impl Date {
    /// A valid date, or `None`.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Date> {
        let y = i64::from(year);
        let valid = (1..=9999).contains(&y)
            && (1..=12).contains(&month)
            && (1..=days_in_month(y, month)).contains(&day);
        valid.then(|| Date {
            days: days_from_civil(y, month, day),
        })
    }

    /// The date `days` after 1970-01-01, if within 0001–9999.
    pub fn from_days_since_epoch(days: i64) -> Option<Date> {
        (MIN_DAYS..=MAX_DAYS)
            .contains(&days)
            .then_some(Date { days })
    }

    pub fn days_since_epoch(self) -> i64 {
        self.days
    }

    fn ymd(self) -> (i64, u32, u32) {
        civil_from_days(self.days)
    }

    pub fn year(self) -> i32 {
        self.ymd().0 as i32
    }
    pub fn month(self) -> u32 {
        self.ymd().1
    }
    pub fn day(self) -> u32 {
        self.ymd().2
    }

    pub fn weekday(self) -> Weekday {
        // 1970-01-01 was a Thursday (index 3).
        Weekday::ALL[(self.days + 3).rem_euclid(7) as usize]
    }

    /// `n` days later (earlier when negative), if still within 0001–9999.
    pub fn add_days(self, n: i64) -> Option<Date> {
        Date::from_days_since_epoch(self.days.checked_add(n)?)
    }

    /// The date at an instant, in a zone `utc_offset_minutes` from UTC (e.g. -300 for EST).
    pub fn at_instant(ms: u64, utc_offset_minutes: i32) -> Date {
        let local = ms as i64 + i64::from(utc_offset_minutes) * 60_000;
        Date {
            days: local.div_euclid(DAY_MS).clamp(MIN_DAYS, MAX_DAYS),
        }
    }

    /// The instant (epoch ms) at which this date begins in a zone `utc_offset_minutes` from
    /// UTC; 0 for a date that begins before the epoch.
    pub fn start_ms(self, utc_offset_minutes: i32) -> u64 {
        let ms = self.days * DAY_MS - i64::from(utc_offset_minutes) * 60_000;
        u64::try_from(ms).unwrap_or(0)
    }

    /// The instant this date ends (the start of the next day) in that zone.
    pub fn end_ms(self, utc_offset_minutes: i32) -> u64 {
        let ms = (self.days + 1) * DAY_MS - i64::from(utc_offset_minutes) * 60_000;
        u64::try_from(ms).unwrap_or(0)
    }

    /// The `n`th `weekday` of a month (n from 1), if it exists.
    fn nth_weekday(year: i32, month: u32, weekday: Weekday, n: u32) -> Option<Date> {
        let first = Date::new(year, month, 1)?;
        let offset = (weekday.index() - first.weekday().index()).rem_euclid(7);
        let d = first.add_days(offset + 7 * (i64::from(n) - 1))?;
        (d.month() == month).then_some(d)
    }

    /// The last `weekday` of a month.
    fn last_weekday(year: i32, month: u32, weekday: Weekday) -> Option<Date> {
        let last = Date::new(year, month, days_in_month(i64::from(year), month))?;
        let back = (last.weekday().index() - weekday.index()).rem_euclid(7);
        last.add_days(-back)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = self.ymd();
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl FromStr for Date {
    type Err = DateError;
    /// Exactly `YYYY-MM-DD`.
    fn from_str(s: &str) -> Result<Date, DateError> {
        let err = || DateError(s.to_string());
        let b = s.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return Err(err());
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = &b[r];
            part.iter().all(u8::is_ascii_digit).then(|| {
                part.iter()
                    .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
            })
        };
        let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
            return Err(err());
        };
        Date::new(y as i32, m, d).ok_or_else(err)
    }
}

impl Serialize for Date {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A federal holiday of 5 U.S.C. 6103(a).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Holiday {
    NewYearsDay,
    MartinLutherKingJrDay,
    WashingtonsBirthday,
    MemorialDay,
    Juneteenth,
    IndependenceDay,
    LaborDay,
    ColumbusDay,
    VeteransDay,
    ThanksgivingDay,
    ChristmasDay,
}

impl Holiday {
    pub fn name(self) -> &'static str {
        match self {
            Holiday::NewYearsDay => "New Year's Day",
            Holiday::MartinLutherKingJrDay => "Birthday of Martin Luther King, Jr.",
            Holiday::WashingtonsBirthday => "Washington's Birthday",
            Holiday::MemorialDay => "Memorial Day",
            Holiday::Juneteenth => "Juneteenth National Independence Day",
            Holiday::IndependenceDay => "Independence Day",
            Holiday::LaborDay => "Labor Day",
            Holiday::ColumbusDay => "Columbus Day",
            Holiday::VeteransDay => "Veterans Day",
            Holiday::ThanksgivingDay => "Thanksgiving Day",
            Holiday::ChristmasDay => "Christmas Day",
        }
    }
}

/// A holiday in one year: the date its rule gives and the date it is observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedHoliday {
    pub holiday: Holiday,
    pub date: Date,
    /// Saturday → the Friday before; Sunday → the Monday after; otherwise `date`.
    pub observed: Date,
}

/// The holidays whose rule falls in `year` (the observed date of New Year's Day may be in the
/// year before). Empty for a year outside 0001–9999.
pub fn holidays_of_year(year: i32) -> Vec<ObservedHoliday> {
    use Weekday::{Monday, Thursday};
    let fixed = |m, d| Date::new(year, m, d);
    let rules: [(Holiday, Option<Date>); 11] = [
        (Holiday::NewYearsDay, fixed(1, 1)),
        (
            Holiday::MartinLutherKingJrDay,
            if year >= 1986 {
                Date::nth_weekday(year, 1, Monday, 3)
            } else {
                None
            },
        ),
        (
            Holiday::WashingtonsBirthday,
            Date::nth_weekday(year, 2, Monday, 3),
        ),
        (Holiday::MemorialDay, Date::last_weekday(year, 5, Monday)),
        (
            Holiday::Juneteenth,
            if year >= 2021 { fixed(6, 19) } else { None },
        ),
        (Holiday::IndependenceDay, fixed(7, 4)),
        (Holiday::LaborDay, Date::nth_weekday(year, 9, Monday, 1)),
        (Holiday::ColumbusDay, Date::nth_weekday(year, 10, Monday, 2)),
        (Holiday::VeteransDay, fixed(11, 11)),
        (
            Holiday::ThanksgivingDay,
            Date::nth_weekday(year, 11, Thursday, 4),
        ),
        (Holiday::ChristmasDay, fixed(12, 25)),
    ];
    rules
        .into_iter()
        .filter_map(|(holiday, date)| {
            let date = date?;
            let observed = match date.weekday() {
                Weekday::Saturday => date.add_days(-1),
                Weekday::Sunday => date.add_days(1),
                _ => Some(date),
            }?;
            Some(ObservedHoliday {
                holiday,
                date,
                observed,
            })
        })
        .collect()
}

/// The federal holidays observed on a date in `year`, in date order.
pub fn observed_in_year(year: i32) -> Vec<ObservedHoliday> {
    let mut all: Vec<ObservedHoliday> = holidays_of_year(year)
        .into_iter()
        .chain(holidays_of_year(year.saturating_add(1)))
        .chain(holidays_of_year(year.saturating_sub(1)))
        .filter(|h| h.observed.year() == year)
        .collect();
    all.sort_by_key(|h| h.observed);
    all.dedup();
    all
}

/// The federal holiday observed on `date`, if any.
pub fn federal_holiday(date: Date) -> Option<Holiday> {
    let y = date.year();
    // Only New Year's Day moves across a year boundary (to December 31 before).
    holidays_of_year(y)
        .into_iter()
        .chain(if date.month() == 12 {
            holidays_of_year(y + 1)
        } else {
            Vec::new()
        })
        .find(|h| h.observed == date)
        .map(|h| h.holiday)
}

/// Why a date is not a business day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "holiday")]
pub enum Closed {
    Weekend,
    FederalHoliday(Holiday),
    LabClosure,
}

/// Business days: Monday to Friday, except observed federal holidays and lab closures.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Calendar {
    closures: BTreeSet<Date>,
}

impl Calendar {
    /// Federal holidays only.
    pub fn federal() -> Calendar {
        Calendar::default()
    }

    /// Federal holidays plus the laboratory's closure dates.
    pub fn with_closures(closures: impl IntoIterator<Item = Date>) -> Calendar {
        Calendar {
            closures: closures.into_iter().collect(),
        }
    }

    pub fn closures(&self) -> impl Iterator<Item = Date> + '_ {
        self.closures.iter().copied()
    }

    /// Why `date` is not a business day, or `None` when it is one.
    pub fn closed(&self, date: Date) -> Option<Closed> {
        if date.weekday().is_weekend() {
            Some(Closed::Weekend)
        } else if let Some(h) = federal_holiday(date) {
            Some(Closed::FederalHoliday(h))
        } else if self.closures.contains(&date) {
            Some(Closed::LabClosure)
        } else {
            None
        }
    }

    pub fn is_business_day(&self, date: Date) -> bool {
        self.closed(date).is_none()
    }

    /// The `n`th business day after `start` (`start` itself is not counted, whatever it is);
    /// `start` when `n` is 0. `None` past 9999-12-31.
    pub fn add_business_days(&self, start: Date, n: u32) -> Option<Date> {
        // There are never more business days than days.
        if i64::from(n) > MAX_DAYS - start.days {
            return None;
        }
        let mut d = start;
        let mut left = n;
        while left > 0 {
            d = d.add_days(1)?;
            if self.is_business_day(d) {
                left -= 1;
            }
        }
        Some(d)
    }

    /// The window of 40.83(e)–(g) for a correction started on `started_on`: it ends at the
    /// close of the `business_days`th business day after that day. `None` past 9999-12-31.
    pub fn correction_window(
        &self,
        started_on: Date,
        business_days: u32,
    ) -> Option<CorrectionWindow> {
        Some(CorrectionWindow {
            started_on,
            business_days,
            last_day: self.add_business_days(started_on, business_days)?,
        })
    }
}

/// The time allowed to correct a correctable flaw (40.83(e)(1), (f)(1), (g)(1)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorrectionWindow {
    /// The day the laboratory initiated action to correct the flaw.
    pub started_on: Date,
    pub business_days: u32,
    /// The last business day of the window; the window closes at the end of it.
    pub last_day: Date,
}

impl CorrectionWindow {
    /// The instant the window closes (midnight ending `last_day`, local time). Pass the
    /// laboratory's offset on `last_day`; a correction received before this instant is in
    /// time, at or after it the window has expired.
    pub fn closes_at_ms(&self, utc_offset_minutes: i32) -> u64 {
        self.last_day.end_ms(utc_offset_minutes)
    }

    /// True while a correction received at `now_ms` is still in time.
    pub fn is_open_at(&self, now_ms: u64, utc_offset_minutes: i32) -> bool {
        now_ms < self.closes_at_ms(utc_offset_minutes)
    }
}

/// Parses closure dates as configured; on failure, the index of the first bad entry and why.
pub fn parse_closures<S: AsRef<str>>(list: &[S]) -> Result<BTreeSet<Date>, (usize, DateError)> {
    list.iter()
        .enumerate()
        .map(|(i, s)| s.as_ref().parse::<Date>().map_err(|e| (i, e)))
        .collect()
}

/// Closure dates from a file's text: TOML with `[calendar] closures = [...]` (the custodian
/// configuration), or one `YYYY-MM-DD` per line (blank lines and `#` comments ignored). The
/// error names the key or line.
pub fn closures_from_text(text: &str) -> Result<BTreeSet<Date>, String> {
    if let Ok(table) = text.parse::<toml::Table>() {
        let Some(section) = table.get("calendar") else {
            return Ok(BTreeSet::new());
        };
        let Some(list) = section.get("closures") else {
            return Ok(BTreeSet::new());
        };
        let Some(items) = list.as_array() else {
            return Err("calendar.closures: must be a list of dates".to_string());
        };
        let mut out = BTreeSet::new();
        for (i, v) in items.iter().enumerate() {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Datetime(dt) => dt.to_string(),
                other => other.to_string(),
            };
            out.insert(
                text.parse::<Date>()
                    .map_err(|e| format!("calendar.closures[{i}]: {e}"))?,
            );
        }
        return Ok(out);
    }
    let mut out = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.split('#').next().unwrap_or("").trim();
        if t.is_empty() {
            continue;
        }
        out.insert(
            t.parse::<Date>()
                .map_err(|e| format!("line {}: {e}", i + 1))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Date {
        s.parse().unwrap()
    }

    fn observed(year: i32) -> Vec<(Holiday, String)> {
        observed_in_year(year)
            .into_iter()
            .map(|h| (h.holiday, h.observed.to_string()))
            .collect()
    }

    #[test]
    fn dates_parse_format_and_reject() {
        for s in [
            "2026-07-03",
            "2024-02-29",
            "2000-02-29",
            "0001-01-01",
            "9999-12-31",
        ] {
            assert_eq!(d(s).to_string(), s);
        }
        for bad in [
            "2026-02-29",
            "1900-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-04-31",
            "0000-01-01",
            "2026-7-4",
            "2026/07/04",
            " 2026-07-04",
            "2026-07-04 ",
            "20260704",
            "",
            "+026-07-04",
            "2026-07-0x",
        ] {
            assert!(bad.parse::<Date>().is_err(), "{bad:?}");
        }
        let e = "2026-02-30".parse::<Date>().unwrap_err();
        assert_eq!(
            e.to_string(),
            "`2026-02-30` is not a date (YYYY-MM-DD, years 0001-9999)"
        );
        assert_eq!(Date::new(1970, 1, 1).unwrap().days_since_epoch(), 0);
        assert_eq!(Date::from_days_since_epoch(MIN_DAYS), Some(d("0001-01-01")));
        assert_eq!(Date::from_days_since_epoch(MAX_DAYS), Some(d("9999-12-31")));
        assert_eq!(Date::from_days_since_epoch(MAX_DAYS + 1), None);
        assert_eq!(Date::from_days_since_epoch(MIN_DAYS - 1), None);
        assert_eq!(d("9999-12-31").add_days(1), None);
        assert_eq!(d("2024-02-28").add_days(1), Some(d("2024-02-29")));
        assert_eq!(d("2024-03-01").add_days(-1), Some(d("2024-02-29")));
        assert!(d("2026-07-03") < d("2026-07-04"));
    }

    #[test]
    fn dates_serialize_as_iso_text() {
        let j = serde_json::to_string(&d("2026-11-26")).unwrap();
        assert_eq!(j, "\"2026-11-26\"");
        let back: Date = serde_json::from_str(&j).unwrap();
        assert_eq!(back, d("2026-11-26"));
        let e = serde_json::from_str::<Date>("\"2026-11-31\"").unwrap_err();
        assert!(e.to_string().contains("is not a date"), "{e}");
    }

    #[test]
    fn weekdays() {
        assert_eq!(d("1970-01-01").weekday(), Weekday::Thursday);
        assert_eq!(d("1969-12-31").weekday(), Weekday::Wednesday);
        assert_eq!(d("2026-07-04").weekday(), Weekday::Saturday);
        assert_eq!(d("2026-07-05").weekday(), Weekday::Sunday);
        assert_eq!(d("2026-07-06").weekday(), Weekday::Monday);
        assert_eq!(d("2000-01-01").weekday(), Weekday::Saturday);
        assert_eq!(d("0001-01-01").weekday(), Weekday::Monday);
    }

    #[test]
    fn instants_and_local_days() {
        // 2026-11-25T04:59:59.999Z is still the 24th in New York (EST, -05:00).
        let edge = d("2026-11-25").start_ms(-300);
        assert_eq!(
            crate::core::clock::rfc3339(edge),
            "2026-11-25T05:00:00.000Z"
        );
        assert_eq!(Date::at_instant(edge - 1, -300), d("2026-11-24"));
        assert_eq!(Date::at_instant(edge, -300), d("2026-11-25"));
        assert_eq!(Date::at_instant(edge + 1, -300), d("2026-11-25"));
        assert_eq!(d("2026-11-24").end_ms(-300), edge);
        assert_eq!(Date::at_instant(0, 0), d("1970-01-01"));
        assert_eq!(Date::at_instant(0, -60), d("1969-12-31"));
        assert_eq!(d("1969-12-31").start_ms(0), 0);
        assert_eq!(d("1970-01-01").end_ms(0), 86_400_000);
    }

    #[test]
    fn holidays_of_2026_by_rule() {
        assert_eq!(
            observed(2026),
            vec![
                (Holiday::NewYearsDay, "2026-01-01".to_string()),
                (Holiday::MartinLutherKingJrDay, "2026-01-19".to_string()),
                (Holiday::WashingtonsBirthday, "2026-02-16".to_string()),
                (Holiday::MemorialDay, "2026-05-25".to_string()),
                (Holiday::Juneteenth, "2026-06-19".to_string()),
                // July 4 is a Saturday: observed Friday July 3.
                (Holiday::IndependenceDay, "2026-07-03".to_string()),
                (Holiday::LaborDay, "2026-09-07".to_string()),
                (Holiday::ColumbusDay, "2026-10-12".to_string()),
                // November 11 is a Wednesday.
                (Holiday::VeteransDay, "2026-11-11".to_string()),
                (Holiday::ThanksgivingDay, "2026-11-26".to_string()),
                (Holiday::ChristmasDay, "2026-12-25".to_string()),
            ]
        );
    }

    #[test]
    fn weekend_shifts() {
        // Sunday → Monday after.
        assert_eq!(
            federal_holiday(d("2021-07-05")),
            Some(Holiday::IndependenceDay)
        );
        assert_eq!(federal_holiday(d("2021-07-04")), None);
        assert_eq!(
            federal_holiday(d("2022-12-26")),
            Some(Holiday::ChristmasDay)
        );
        assert_eq!(federal_holiday(d("2023-01-02")), Some(Holiday::NewYearsDay));
        assert_eq!(federal_holiday(d("2023-11-10")), Some(Holiday::VeteransDay));
        // Saturday → Friday before.
        assert_eq!(
            federal_holiday(d("2026-07-03")),
            Some(Holiday::IndependenceDay)
        );
        assert_eq!(federal_holiday(d("2026-07-04")), None);
        assert_eq!(
            federal_holiday(d("2021-12-24")),
            Some(Holiday::ChristmasDay)
        );
        assert_eq!(
            federal_holiday(d("2027-12-24")),
            Some(Holiday::ChristmasDay)
        );
        assert_eq!(federal_holiday(d("2027-12-23")), None);
        // New Year's Day 2022 was a Saturday: observed Friday 2021-12-31, nothing in 2022.
        assert_eq!(federal_holiday(d("2021-12-31")), Some(Holiday::NewYearsDay));
        assert_eq!(federal_holiday(d("2022-01-01")), None);
        assert_eq!(federal_holiday(d("2022-01-03")), None);
        let o2021 = observed(2021);
        assert_eq!(o2021.first().unwrap().1, "2021-01-01");
        assert_eq!(
            o2021.last().unwrap(),
            &(Holiday::NewYearsDay, "2021-12-31".to_string())
        );
        assert_eq!(o2021.len(), 12);
        let o2022 = observed(2022);
        assert_eq!(o2022.len(), 10);
        assert!(!o2022.iter().any(|(h, _)| *h == Holiday::NewYearsDay));
        // Same in 2028 → observed 2027-12-31 (Friday).
        assert_eq!(federal_holiday(d("2027-12-31")), Some(Holiday::NewYearsDay));
    }

    #[test]
    fn juneteenth_from_2021_only() {
        assert_eq!(federal_holiday(d("2020-06-19")), None);
        assert!(
            !observed(2020)
                .iter()
                .any(|(h, _)| *h == Holiday::Juneteenth)
        );
        // 2021-06-19 was a Saturday: observed Friday June 18.
        assert_eq!(federal_holiday(d("2021-06-18")), Some(Holiday::Juneteenth));
        assert_eq!(federal_holiday(d("2021-06-19")), None);
        assert_eq!(federal_holiday(d("2022-06-20")), Some(Holiday::Juneteenth));
        assert_eq!(federal_holiday(d("2026-06-19")), Some(Holiday::Juneteenth));
        let cal = Calendar::federal();
        assert!(cal.is_business_day(d("2020-06-19")));
        assert!(!cal.is_business_day(d("2021-06-18")));
    }

    #[test]
    fn floating_holidays() {
        // MLK Day: third Monday of January, from 1986.
        assert_eq!(
            federal_holiday(d("2024-01-15")),
            Some(Holiday::MartinLutherKingJrDay)
        );
        assert_eq!(federal_holiday(d("1985-01-21")), None);
        assert_eq!(
            federal_holiday(d("1986-01-20")),
            Some(Holiday::MartinLutherKingJrDay)
        );
        // Memorial Day: last Monday of May (May 31 itself in 2021).
        assert_eq!(federal_holiday(d("2021-05-31")), Some(Holiday::MemorialDay));
        assert_eq!(federal_holiday(d("2021-05-24")), None);
        // Labor Day on September 1, Columbus Day on the 14th, Thanksgiving on the 28th.
        assert_eq!(federal_holiday(d("2025-09-01")), Some(Holiday::LaborDay));
        assert_eq!(federal_holiday(d("2024-10-14")), Some(Holiday::ColumbusDay));
        assert_eq!(
            federal_holiday(d("2024-11-28")),
            Some(Holiday::ThanksgivingDay)
        );
        assert_eq!(federal_holiday(d("2024-11-21")), None);
        // Thanksgiving on the 22nd, the earliest possible.
        assert_eq!(
            federal_holiday(d("2029-11-22")),
            Some(Holiday::ThanksgivingDay)
        );
        // Every year has ten or eleven observed holidays on weekdays.
        for y in 1990..2100 {
            let o = observed_in_year(y);
            assert!(o.iter().all(|h| !h.observed.weekday().is_weekend()), "{y}");
            assert!((9..=12).contains(&o.len()), "{y}: {}", o.len());
        }
    }

    #[test]
    fn business_days_and_closures() {
        let cal = Calendar::with_closures([d("2026-12-24"), d("2026-12-26")]);
        assert_eq!(cal.closed(d("2026-12-24")), Some(Closed::LabClosure));
        assert_eq!(cal.closed(d("2026-12-26")), Some(Closed::Weekend));
        assert_eq!(
            cal.closed(d("2026-12-25")),
            Some(Closed::FederalHoliday(Holiday::ChristmasDay))
        );
        assert_eq!(cal.closed(d("2026-12-23")), None);
        assert!(Calendar::federal().is_business_day(d("2026-12-24")));
        assert_eq!(cal.closures().count(), 2);
        assert_eq!(
            parse_closures(&["2026-12-24", "2026-12-31"]).unwrap().len(),
            2
        );
        let (i, e) = parse_closures(&["2026-12-24", "2026-12-32"]).unwrap_err();
        assert_eq!(i, 1);
        assert!(e.to_string().contains("2026-12-32"));
    }

    #[test]
    fn closures_from_config_or_lines() {
        let cfg =
            "[laboratory]\nname = \"x\"\n[calendar]\nclosures = [\"2026-12-24\", 2026-11-27]\n";
        let set = closures_from_text(cfg).unwrap();
        assert_eq!(
            set.into_iter().collect::<Vec<_>>(),
            vec![d("2026-11-27"), d("2026-12-24")]
        );
        assert!(
            closures_from_text("[laboratory]\nname = \"x\"\n")
                .unwrap()
                .is_empty()
        );
        assert!(closures_from_text("").unwrap().is_empty());
        let e =
            closures_from_text("[calendar]\nclosures = [\"2026-12-24\", \"xmas\"]\n").unwrap_err();
        assert!(
            e.starts_with("calendar.closures[1]: `xmas` is not a date"),
            "{e}"
        );
        let e = closures_from_text("[calendar]\nclosures = \"2026-12-24\"\n").unwrap_err();
        assert_eq!(e, "calendar.closures: must be a list of dates");

        let lines = "# closures\n2026-12-24\n\n2026-12-31  # New Year's Eve\n";
        let set = closures_from_text(lines).unwrap();
        assert_eq!(
            set.into_iter().collect::<Vec<_>>(),
            vec![d("2026-12-24"), d("2026-12-31")]
        );
        let e = closures_from_text("2026-12-24\n2026-12-32\n").unwrap_err();
        assert!(e.starts_with("line 2: `2026-12-32` is not a date"), "{e}");
    }

    #[test]
    fn add_business_days_zero_is_start() {
        let cal = Calendar::federal();
        assert_eq!(
            cal.add_business_days(d("2026-07-04"), 0),
            Some(d("2026-07-04"))
        );
        assert_eq!(
            cal.add_business_days(d("2026-07-06"), 0),
            Some(d("2026-07-06"))
        );
    }

    #[test]
    fn add_business_days_over_weekends() {
        let cal = Calendar::federal();
        // Monday 2026-03-02 → Tuesday .. Monday.
        assert_eq!(
            cal.add_business_days(d("2026-03-02"), 1),
            Some(d("2026-03-03"))
        );
        assert_eq!(
            cal.add_business_days(d("2026-03-02"), 4),
            Some(d("2026-03-06"))
        );
        assert_eq!(
            cal.add_business_days(d("2026-03-02"), 5),
            Some(d("2026-03-09"))
        );
        // From a Friday, Saturday and Sunday.
        assert_eq!(
            cal.add_business_days(d("2026-03-06"), 1),
            Some(d("2026-03-09"))
        );
        assert_eq!(
            cal.add_business_days(d("2026-03-07"), 1),
            Some(d("2026-03-09"))
        );
        assert_eq!(
            cal.add_business_days(d("2026-03-08"), 5),
            Some(d("2026-03-13"))
        );
        assert_eq!(cal.add_business_days(d("9999-12-30"), 5), None);
        assert_eq!(cal.add_business_days(d("2026-03-02"), u32::MAX), None);
        assert_eq!(
            cal.add_business_days(d("9999-12-30"), 1),
            Some(d("9999-12-31"))
        );
    }

    #[test]
    fn thanksgiving_week() {
        let cal = Calendar::federal();
        // Started Monday 2026-11-23: Tue 24, Wed 25, (Thu 26 holiday), Fri 27, Mon 30, Tue Dec 1.
        assert_eq!(
            cal.add_business_days(d("2026-11-23"), 5),
            Some(d("2026-12-01"))
        );
        // Started Wednesday 2026-11-25: Fri 27, Mon 30, Tue 1, Wed 2, Thu 3.
        assert_eq!(
            cal.add_business_days(d("2026-11-25"), 5),
            Some(d("2026-12-03"))
        );
        assert_eq!(
            cal.add_business_days(d("2026-11-25"), 1),
            Some(d("2026-11-27"))
        );
        // Started on Thanksgiving itself (not counted either way).
        assert_eq!(
            cal.add_business_days(d("2026-11-26"), 1),
            Some(d("2026-11-27"))
        );
        // With the Friday after Thanksgiving a lab closure.
        let closed = Calendar::with_closures([d("2026-11-27")]);
        assert_eq!(
            closed.add_business_days(d("2026-11-25"), 1),
            Some(d("2026-11-30"))
        );
        assert_eq!(
            closed.add_business_days(d("2026-11-25"), 5),
            Some(d("2026-12-04"))
        );
    }

    #[test]
    fn july_fourth_on_a_saturday() {
        let cal = Calendar::federal();
        // 2026: July 4 is Saturday, observed Friday July 3.
        // Started Tue Jun 30: Wed 1, Thu 2, (Fri 3 observed), Mon 6, Tue 7, Wed 8.
        assert_eq!(
            cal.add_business_days(d("2026-06-30"), 5),
            Some(d("2026-07-08"))
        );
        assert_eq!(
            cal.add_business_days(d("2026-07-02"), 1),
            Some(d("2026-07-06"))
        );
        assert!(!cal.is_business_day(d("2026-07-03")));
    }

    #[test]
    fn christmas_and_new_year_across_the_year_boundary() {
        let cal = Calendar::federal();
        // 2021: Christmas Saturday → Fri Dec 24; New Year 2022 Saturday → Fri Dec 31.
        // Started Wed 2021-12-22: Thu 23, Mon 27, Tue 28, Wed 29, Thu 30.
        assert_eq!(
            cal.add_business_days(d("2021-12-22"), 5),
            Some(d("2021-12-30"))
        );
        // Started Thu 2021-12-23: Mon 27 .. Thu 30, then (Fri 31 observed) Mon 2022-01-03.
        assert_eq!(
            cal.add_business_days(d("2021-12-23"), 5),
            Some(d("2022-01-03"))
        );
        // 2022: Christmas Sunday → Mon Dec 26; New Year 2023 Sunday → Mon Jan 2.
        // Started Fri 2022-12-23: Tue 27, Wed 28, Thu 29, Fri 30, Tue 2023-01-03.
        assert_eq!(
            cal.add_business_days(d("2022-12-23"), 5),
            Some(d("2023-01-03"))
        );
        // 2026/27: Christmas Friday; New Year Friday.
        // Started Wed 2026-12-23: Thu 24, Mon 28, Tue 29, Wed 30, Thu 31.
        assert_eq!(
            cal.add_business_days(d("2026-12-23"), 5),
            Some(d("2026-12-31"))
        );
        assert_eq!(
            cal.add_business_days(d("2026-12-23"), 6),
            Some(d("2027-01-04"))
        );
        // Long spans: 2026 has 261 weekdays and 11 observed holidays → 250 business days.
        assert_eq!(
            cal.add_business_days(d("2025-12-31"), 250),
            Some(d("2026-12-31"))
        );
        assert_eq!(
            cal.add_business_days(d("2025-12-31"), 251),
            Some(d("2027-01-04"))
        );
    }

    #[test]
    fn correction_window_closes_at_the_end_of_the_fifth_business_day() {
        let cal = Calendar::federal();
        let w = cal.correction_window(d("2026-11-23"), 5).unwrap();
        assert_eq!(w.last_day, d("2026-12-01"));
        let close = w.closes_at_ms(-300);
        assert_eq!(
            crate::core::clock::rfc3339(close),
            "2026-12-02T05:00:00.000Z"
        );
        assert!(w.is_open_at(close - 1, -300));
        assert!(!w.is_open_at(close, -300));
        assert!(!w.is_open_at(close + 1, -300));
        // Started on the observed July 4th holiday of 2026 (a Friday), in UTC.
        let w = cal.correction_window(d("2026-07-03"), 5).unwrap();
        assert_eq!(w.last_day, d("2026-07-10"));
        assert_eq!(w.closes_at_ms(0), d("2026-07-11").start_ms(0));
        let s = serde_json::to_value(w).unwrap();
        assert_eq!(s["last_day"], "2026-07-10");
    }
}
