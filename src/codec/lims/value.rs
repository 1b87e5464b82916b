//! Value types of the LIMS documents and the lexical rules of `schemas/lims-types.xsd`.
//!
//! Each check here mirrors one simple type of the schema; the pattern strings are quoted from
//! it and appear in error messages. Types that carry donor data ([`Ssn`], [`Confidential`])
//! print `<redacted>` under `Debug` so that a logged document never shows them.

use super::error::Rule;
use super::tree::is_xml_space;
use rust_decimal::Decimal;
use std::fmt;

pub(crate) const SPECIMEN_ID_PATTERN: &str = "[A-Za-z0-9\\-]{1,32}";
pub(crate) const IDENTIFIER_PATTERN: &str = "[A-Za-z0-9][A-Za-z0-9._/\\-]{0,63}";
pub(crate) const SSN_PATTERN: &str = "[0-9]{3}-?[0-9]{2}-?[0-9]{4}";
pub(crate) const PHONE_PATTERN: &str = "[0-9+(][0-9+() .x\\-]{6,29}";
pub(crate) const PROFILE_PATTERN: &str = "[a-z0-9][a-z0-9._\\-]{0,63}";
pub(crate) const ANALYTE_PATTERN: &str = "[a-z0-9_]{1,32}";

/// `totalDigits` and `fractionDigits` of the schema's `Quantity`.
pub const QUANTITY_TOTAL_DIGITS: u32 = 15;
pub const QUANTITY_FRACTION_DIGITS: u32 = 6;

/// Leading and trailing XML whitespace removed (the `collapse` facet, for values that cannot
/// contain inner spaces).
pub(crate) fn collapse(s: &str) -> &str {
    s.trim_matches(is_xml_space)
}

fn all_chars(s: &str, ok: impl Fn(char) -> bool) -> bool {
    s.chars().all(ok)
}

fn len_between(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.chars().count())
}

/// `[A-Za-z0-9\-]{1,32}`.
pub(crate) fn is_specimen_id(s: &str) -> bool {
    len_between(s, 1, 32) && all_chars(s, |c| c.is_ascii_alphanumeric() || c == '-')
}

/// `[A-Za-z0-9][A-Za-z0-9._/\-]{0,63}`.
pub(crate) fn is_identifier(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && len_between(s, 1, 64)
        && all_chars(s, |c| {
            c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')
        })
}

/// `[0-9]{3}-?[0-9]{2}-?[0-9]{4}`.
pub(crate) fn is_ssn(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |x: &[u8]| !x.is_empty() && x.iter().all(u8::is_ascii_digit);
    match b.len() {
        9 => digits(b),
        10 => {
            (digits(&b[..3]) && b[3] == b'-' && digits(&b[4..]))
                || (digits(&b[..5]) && b[5] == b'-' && digits(&b[6..]))
        }
        11 => {
            digits(&b[..3]) && b[3] == b'-' && digits(&b[4..6]) && b[6] == b'-' && digits(&b[7..])
        }
        _ => false,
    }
}

/// `[0-9+(][0-9+() .x\-]{6,29}`.
pub(crate) fn is_phone(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '+' || c == '(')
        && len_between(s, 7, 30)
        && all_chars(s, |c| {
            c.is_ascii_digit() || matches!(c, '+' | '(' | ')' | ' ' | '.' | 'x' | '-')
        })
}

/// `[a-z0-9][a-z0-9._\-]{0,63}`.
pub(crate) fn is_profile_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && len_between(s, 1, 64)
        && all_chars(s, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
        })
}

/// `[a-z0-9_]{1,32}`.
pub(crate) fn is_analyte_key(s: &str) -> bool {
    len_between(s, 1, 32)
        && all_chars(s, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
        })
}

/// The schema's `TextN` types: at most `max` characters, at least one not whitespace.
pub(crate) fn check_text(s: &str, max: usize) -> Result<(), Rule> {
    if s.chars().all(is_xml_space) {
        return Err(Rule::Blank);
    }
    if s.chars().count() > max {
        return Err(Rule::TooLong { max });
    }
    Ok(())
}

/// xs:boolean after whitespace collapse.
pub(crate) fn parse_bool(s: &str) -> Result<bool, Rule> {
    match collapse(s) {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Rule::InvalidBoolean),
    }
}

/// A specimen ID as on the CCF and the bottles: `[A-Za-z0-9\-]{1,32}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpecimenId(String);

impl SpecimenId {
    /// Checks the pattern; `None` if it does not match.
    pub fn new(s: &str) -> Option<SpecimenId> {
        is_specimen_id(s).then(|| SpecimenId(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SpecimenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A donor's Social Security number, as written (dashes optional). Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Ssn(String);

impl Ssn {
    pub fn new(s: &str) -> Option<Ssn> {
        is_ssn(s).then(|| Ssn(s.to_string()))
    }
    /// The number as written. Only for the report to the MRO; never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The nine digits without dashes.
    pub fn digits(&self) -> String {
        self.0.chars().filter(char::is_ascii_digit).collect()
    }
}

impl fmt::Debug for Ssn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ssn(<redacted>)")
    }
}

/// Text that may carry donor data (employee ID, remarks). Never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Confidential(String);

impl Confidential {
    pub(crate) fn new(s: &str) -> Confidential {
        Confidential(s.to_string())
    }
    /// The text. Only for the report to the MRO; never for logs.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Confidential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A calendar date without time zone (the schema's `Date`), year 0001–9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: u16,
    month: u8,
    day: u8,
}

fn is_leap(y: u16) -> bool {
    (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400)
}

fn days_in_month(y: u16, m: u8) -> u8 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        2 => 28,
        _ => 0,
    }
}

fn digits_value(b: &[u8]) -> Option<u32> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
}

impl Date {
    /// A valid date, or `None`.
    pub fn new(year: u16, month: u8, day: u8) -> Option<Date> {
        let valid = (1..=9999).contains(&year)
            && (1..=12).contains(&month)
            && (1..=days_in_month(year, month)).contains(&day);
        valid.then_some(Date { year, month, day })
    }
    pub fn year(self) -> u16 {
        self.year
    }
    pub fn month(self) -> u8 {
        self.month
    }
    pub fn day(self) -> u8 {
        self.day
    }
    /// `YYYY-MM-DD` exactly (after whitespace collapse).
    pub(crate) fn parse(s: &str) -> Result<Date, Rule> {
        Self::parse_exact(collapse(s).as_bytes()).ok_or(Rule::InvalidDate)
    }
    fn parse_exact(b: &[u8]) -> Option<Date> {
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let y = u16::try_from(digits_value(&b[..4])?).ok()?;
        let m = u8::try_from(digits_value(&b[5..7])?).ok()?;
        let d = u8::try_from(digits_value(&b[8..10])?).ok()?;
        Date::new(y, m, d)
    }
    /// Days since 1970-01-01 (negative before).
    pub fn days_since_epoch(self) -> i64 {
        // Howard Hinnant's days_from_civil.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// An instant with its UTC offset as written (the schema's `Instant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime {
    date: Date,
    hour: u8,
    minute: u8,
    second: u8,
    nanos: u32,
    /// Minutes east of UTC, −14:00 ..= +14:00.
    offset_minutes: i16,
}

impl DateTime {
    pub fn date(&self) -> Date {
        self.date
    }
    pub fn hour(&self) -> u8 {
        self.hour
    }
    pub fn minute(&self) -> u8 {
        self.minute
    }
    pub fn second(&self) -> u8 {
        self.second
    }
    pub fn nanos(&self) -> u32 {
        self.nanos
    }
    pub fn offset_minutes(&self) -> i16 {
        self.offset_minutes
    }
    /// Seconds since 1970-01-01T00:00:00Z, and the nanoseconds within that second.
    pub fn unix(&self) -> (i64, u32) {
        let local = self.date.days_since_epoch() * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second);
        (local - i64::from(self.offset_minutes) * 60, self.nanos)
    }

    /// `YYYY-MM-DDThh:mm:ss[.f{1,9}](Z|±hh:mm)` after whitespace collapse; hours 00–23, the
    /// offset at most 14:00.
    pub(crate) fn parse(s: &str) -> Result<DateTime, Rule> {
        Self::parse_exact(collapse(s).as_bytes()).ok_or(Rule::InvalidDateTime)
    }

    fn parse_exact(b: &[u8]) -> Option<DateTime> {
        if b.len() < 20 || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let date = Date::parse_exact(&b[..10])?;
        let two = |i: usize| -> Option<u8> { u8::try_from(digits_value(&b[i..i + 2])?).ok() };
        let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
        let mut rest = &b[19..];
        let mut nanos = 0u32;
        if let Some(frac) = rest.strip_prefix(b".") {
            let n = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if !(1..=9).contains(&n) {
                return None;
            }
            let v = digits_value(&frac[..n])?;
            nanos = v * 10u32.pow(9 - u32::try_from(n).ok()?);
            rest = &frac[n..];
        }
        let offset_minutes = match rest {
            b"Z" => 0,
            [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
                let h = i16::try_from(digits_value(&[*h1, *h2])?).ok()?;
                let m = i16::try_from(digits_value(&[*m1, *m2])?).ok()?;
                if m > 59 || h > 14 || (h == 14 && m != 0) {
                    return None;
                }
                let v = h * 60 + m;
                if *sign == b'-' { -v } else { v }
            }
            _ => return None,
        };
        Some(DateTime {
            date,
            hour,
            minute,
            second,
            nanos,
            offset_minutes,
        })
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}T{:02}:{:02}:{:02}",
            self.date, self.hour, self.minute, self.second
        )?;
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        if self.offset_minutes == 0 {
            f.write_str("Z")
        } else {
            let sign = if self.offset_minutes < 0 { '-' } else { '+' };
            let a = self.offset_minutes.unsigned_abs();
            write!(f, "{sign}{:02}:{:02}", a / 60, a % 60)
        }
    }
}

/// The schema's `Quantity`: an xs:decimal (no exponent), at least 0, at most
/// [`QUANTITY_TOTAL_DIGITS`] significant digits and [`QUANTITY_FRACTION_DIGITS`] after the
/// point. Exact: the digits go to [`crate::domain::rules::measure::parse`], never through a float.
pub(crate) fn parse_quantity(s: &str) -> Result<Decimal, Rule> {
    let t = collapse(s);
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = match body.split_once('.') {
        Some((i, f)) => (i, f),
        None => (body, ""),
    };
    let digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err(Rule::InvalidDecimal);
    }
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    if negative && !(int.is_empty() && frac.is_empty()) {
        return Err(Rule::Negative);
    }
    let too_many = Rule::TooManyDigits {
        total: QUANTITY_TOTAL_DIGITS,
        fraction: QUANTITY_FRACTION_DIGITS,
    };
    if frac.len() > QUANTITY_FRACTION_DIGITS as usize
        || int.len() + frac.len() > QUANTITY_TOTAL_DIGITS as usize
    {
        return Err(too_many);
    }
    let canonical = match (int.is_empty(), frac.is_empty()) {
        (true, true) => "0".to_string(),
        (_, true) => int.to_string(),
        (true, false) => format!("0.{frac}"),
        (false, false) => format!("{int}.{frac}"),
    };
    crate::domain::rules::measure::parse(&canonical).map_err(|_| Rule::InvalidDecimal)
}

/// A date of a LIMS document as the calendar's civil date.
impl From<Date> for crate::domain::calendar::Date {
    fn from(d: Date) -> crate::domain::calendar::Date {
        crate::domain::calendar::Date::from_days_since_epoch(d.days_since_epoch())
            .expect("a LIMS date (years 1-9999) is within the calendar's range")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lims_dates_convert_to_calendar_dates() {
        let l = Date::new(2026, 7, 4).unwrap();
        assert_eq!(
            crate::domain::calendar::Date::from(l),
            crate::domain::calendar::Date::new(2026, 7, 4).unwrap()
        );
    }
    use std::str::FromStr;

    #[test]
    fn specimen_id_pattern_and_length() {
        assert!(is_specimen_id("A"));
        assert!(is_specimen_id("X0000001-TEST"));
        assert!(is_specimen_id(&"9".repeat(32)));
        assert!(!is_specimen_id(&"9".repeat(33)));
        assert!(!is_specimen_id(""));
        assert!(!is_specimen_id(" A1"));
        assert!(!is_specimen_id("A_1"));
        assert!(!is_specimen_id("Ä1"));
        assert_eq!(SpecimenId::new("AB-1").unwrap().as_str(), "AB-1");
        assert!(SpecimenId::new("AB 1").is_none());
    }

    #[test]
    fn identifier_pattern() {
        assert!(is_identifier("EMP-0001"));
        assert!(is_identifier("a/b.c_d"));
        assert!(is_identifier(&"a".repeat(64)));
        assert!(!is_identifier(&"a".repeat(65)));
        assert!(!is_identifier("-leading"));
        assert!(!is_identifier(""));
        assert!(!is_identifier("has space"));
    }

    #[test]
    fn ssn_pattern() {
        for ok in [
            "123-45-6789",
            "123456789",
            "123-456789",
            "12345-6789",
            "000-00-0000",
        ] {
            assert!(is_ssn(ok), "{ok}");
        }
        for bad in [
            "",
            "12-345-6789",
            "123-45-678",
            "1234-5-6789",
            "123--456789",
            "123-45-67890",
            "12345678",
            "123 45 6789",
            "١٢٣-٤٥-٦٧٨٩",
            "123-45-678a",
        ] {
            assert!(!is_ssn(bad), "{bad}");
        }
        let s = Ssn::new("123-45-6789").unwrap();
        assert_eq!(s.digits(), "123456789");
        assert_eq!(format!("{s:?}"), "Ssn(<redacted>)");
        assert_eq!(format!("{:?}", Confidential::new("x")), "<redacted>");
    }

    #[test]
    fn phone_profile_analyte_patterns() {
        assert!(is_phone("(555) 010-0000"));
        assert!(is_phone("+1 555 010 0001 x12"));
        assert!(is_phone("5550100"));
        assert!(!is_phone("555010"));
        assert!(!is_phone(&format!("+{}", "1".repeat(30))));
        assert!(is_phone(&format!("+{}", "1".repeat(29))));
        assert!(!is_phone(" 5550100"));
        assert!(!is_phone("555-010-ABCD"));
        assert!(is_profile_name("part40-2001"));
        assert!(!is_profile_name("Part40"));
        assert!(!is_profile_name(&"p".repeat(65)));
        assert!(is_analyte_key("6am"));
        assert!(is_analyte_key(&"a".repeat(32)));
        assert!(!is_analyte_key(&"a".repeat(33)));
        assert!(!is_analyte_key("THCA"));
        assert!(!is_analyte_key(""));
    }

    #[test]
    fn text_limits() {
        assert_eq!(check_text("a", 3), Ok(()));
        assert_eq!(check_text(" a\n", 3), Ok(()));
        assert_eq!(check_text("ééé", 3), Ok(()));
        assert_eq!(check_text("éééé", 3), Err(Rule::TooLong { max: 3 }));
        assert_eq!(check_text("", 3), Err(Rule::Blank));
        assert_eq!(check_text(" \t\n", 3), Err(Rule::Blank));
        // U+00A0 is not XML whitespace: it counts as content, as in the XSD's \S.
        assert_eq!(check_text("\u{a0}", 3), Ok(()));
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("true"), Ok(true));
        assert_eq!(parse_bool(" 1\n"), Ok(true));
        assert_eq!(parse_bool("false"), Ok(false));
        assert_eq!(parse_bool("0"), Ok(false));
        for bad in ["TRUE", "yes", "", "t", "2"] {
            assert_eq!(parse_bool(bad), Err(Rule::InvalidBoolean), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(Date::parse("2024-02-29").unwrap().to_string(), "2024-02-29");
        assert_eq!(Date::parse("2000-02-29").unwrap().day(), 29);
        assert_eq!(Date::parse(" 2024-01-31\n").unwrap().month(), 1);
        assert_eq!(Date::parse("0001-01-01").unwrap().year(), 1);
        assert_eq!(Date::parse("9999-12-31").unwrap().year(), 9999);
        for bad in [
            "2023-02-29",
            "1900-02-29",
            "2024-04-31",
            "2024-13-01",
            "2024-00-10",
            "2024-01-00",
            "0000-01-01",
            "2024-1-01",
            "24-01-01",
            "2024-01-01Z",
            "2024-01-01+01:00",
            "2024/01/01",
            "",
            "20240101",
            "-2024-01-01",
            "2024-01-01T00:00:00Z",
        ] {
            assert_eq!(Date::parse(bad), Err(Rule::InvalidDate), "{bad}");
        }
        assert!(Date::parse("2024-03-05").unwrap() > Date::parse("2024-03-04").unwrap());
        assert_eq!(Date::new(1970, 1, 1).unwrap().days_since_epoch(), 0);
        assert_eq!(Date::new(2000, 3, 1).unwrap().days_since_epoch(), 11_017);
        assert_eq!(Date::new(1969, 12, 31).unwrap().days_since_epoch(), -1);
    }

    #[test]
    fn date_times() {
        let t = DateTime::parse("2024-03-11T14:05:00-05:00").unwrap();
        assert_eq!(t.to_string(), "2024-03-11T14:05:00-05:00");
        assert_eq!(t.offset_minutes(), -300);
        let z = DateTime::parse("2024-03-11T19:05:00Z").unwrap();
        assert_eq!(t.unix(), z.unix());
        assert_eq!(z.unix().0, 1_710_183_900);
        let f = DateTime::parse(" 2024-03-11T19:05:00.120Z ").unwrap();
        assert_eq!(
            (f.nanos(), f.to_string()),
            (120_000_000, "2024-03-11T19:05:00.12Z".into())
        );
        assert!(DateTime::parse("2024-03-11T23:59:59.123456789+14:00").is_ok());
        assert!(DateTime::parse("2024-03-11T00:00:00-13:59").is_ok());
        for bad in [
            "2024-03-11T14:05:00",
            "2024-03-11T24:00:00Z",
            "2024-03-11T14:60:00Z",
            "2024-03-11T14:05:60Z",
            "2024-02-30T10:00:00Z",
            "2024-03-11T10:00:00+14:01",
            "2024-03-11T10:00:00+15:00",
            "2024-03-11T10:00:00+05:60",
            "2024-03-11T10:00:00.Z",
            "2024-03-11T10:00:00.1234567890Z",
            "2024-03-11 10:00:00Z",
            "2024-03-11T10:00Z",
            "2024-03-11T10:00:00+0500",
            "2024-03-11T10:00:00z",
            "0000-01-01T00:00:00Z",
            "",
        ] {
            assert_eq!(DateTime::parse(bad), Err(Rule::InvalidDateTime), "{bad}");
        }
    }

    #[test]
    fn quantities() {
        let d = |s: &str| Decimal::from_str(s).unwrap();
        assert_eq!(parse_quantity("162.5"), Ok(d("162.5")));
        assert_eq!(parse_quantity(" 0 "), Ok(Decimal::ZERO));
        assert_eq!(parse_quantity("-0.00"), Ok(Decimal::ZERO));
        assert!(!parse_quantity("-0").unwrap().is_sign_negative());
        assert_eq!(parse_quantity("+.5"), Ok(d("0.5")));
        assert_eq!(parse_quantity("5."), Ok(d("5")));
        assert_eq!(parse_quantity("00015000.000000000"), Ok(d("15000")));
        assert_eq!(parse_quantity("0.000001"), Ok(d("0.000001")));
        assert_eq!(
            parse_quantity("999999999.999999"),
            Ok(d("999999999.999999"))
        );
        assert_eq!(parse_quantity("999999999999999"), Ok(d("999999999999999")));
        let too_many = Err(Rule::TooManyDigits {
            total: QUANTITY_TOTAL_DIGITS,
            fraction: QUANTITY_FRACTION_DIGITS,
        });
        assert_eq!(parse_quantity("0.0000001"), too_many);
        assert_eq!(parse_quantity("1000000000000000"), too_many);
        assert_eq!(parse_quantity("9999999999.999999"), too_many);
        assert_eq!(parse_quantity("-1.5"), Err(Rule::Negative));
        assert_eq!(parse_quantity("-0.000001"), Err(Rule::Negative));
        for bad in [
            "", ".", "-", "+", "1e3", "1.5E2", "1,5", "1 5", "0x10", "NaN", "inf", "1..2", "--1",
            "٣",
        ] {
            assert_eq!(parse_quantity(bad), Err(Rule::InvalidDecimal), "{bad}");
        }
    }
}

/// An image carried in a document (`CcfImage` of `lims-types.xsd`): its declared media type and
/// its decoded bytes, checked against the media type's file signature and the size limit.
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    pub media_type: crate::domain::copy1::MediaType,
    pub data: Vec<u8>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Image({}, {} bytes)",
            self.media_type.key(),
            self.data.len()
        )
    }
}

/// The media types of `CcfMediaType`.
pub const MEDIA_TYPES: &[&str] = &["application/pdf", "image/tiff", "image/png"];

/// Decodes xs:base64Binary (whitespace allowed between characters).
pub fn base64_binary(s: &str) -> Result<Vec<u8>, super::error::Rule> {
    use base64::Engine;
    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|_| super::error::Rule::InvalidBase64)
}
