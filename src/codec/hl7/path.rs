//! HL7 positions written as text: `OBR-3.1`, `SPM-2.1`, `MSH-10`, `OBX(2)-5(1).1.1`.
//!
//! Grammar: `SEG[(occurrence)]-field[(repetition)][.component[.subcomponent]]`, every number
//! 1-based and at most 4 digits; omitted numbers are 1.

use super::location::SegmentId;
use std::fmt;
use std::str::FromStr;

/// A parsed HL7 path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Path {
    pub segment: SegmentId,
    pub occurrence: usize,
    pub field: usize,
    pub repetition: usize,
    pub component: usize,
    pub subcomponent: usize,
}

/// Why text is not a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path must start with a 3-character segment id (upper-case letters or digits)")]
    Segment,
    #[error("path needs `-` and a field number after the segment id")]
    Field,
    #[error("path numbers must be 1 to 9999")]
    Number,
    #[error("path has unexpected text after the subcomponent")]
    Trailing,
}

const MAX_NUMBER: usize = 9999;

fn number(s: &str) -> Result<usize, PathError> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PathError::Number);
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_NUMBER).contains(&n) => Ok(n),
        _ => Err(PathError::Number),
    }
}

/// Splits `12(3)` into 12 and 3 (the bracket part defaulting to 1).
fn with_index(s: &str) -> Result<(usize, usize), PathError> {
    match s.split_once('(') {
        None => Ok((number(s)?, 1)),
        Some((n, rest)) => {
            let idx = rest.strip_suffix(')').ok_or(PathError::Number)?;
            Ok((number(n)?, number(idx)?))
        }
    }
}

impl FromStr for Path {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Path, PathError> {
        let (seg_part, rest) = s.split_once('-').ok_or(PathError::Field)?;
        let (seg_text, occurrence) = match seg_part.split_once('(') {
            None => (seg_part, 1),
            Some((id, rest)) => {
                let idx = rest.strip_suffix(')').ok_or(PathError::Number)?;
                (id, number(idx)?)
            }
        };
        let segment = SegmentId::new(seg_text).ok_or(PathError::Segment)?;
        let mut parts = rest.split('.');
        let (field, repetition) = with_index(parts.next().ok_or(PathError::Field)?)?;
        let component = parts.next().map(number).transpose()?.unwrap_or(1);
        let subcomponent = parts.next().map(number).transpose()?.unwrap_or(1);
        if parts.next().is_some() {
            return Err(PathError::Trailing);
        }
        Ok(Path {
            segment,
            occurrence,
            field,
            repetition,
            component,
            subcomponent,
        })
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.segment)?;
        if self.occurrence != 1 {
            write!(f, "({})", self.occurrence)?;
        }
        write!(f, "-{}", self.field)?;
        if self.repetition != 1 {
            write!(f, "({})", self.repetition)?;
        }
        write!(f, ".{}", self.component)?;
        if self.subcomponent != 1 {
            write!(f, ".{}", self.subcomponent)?;
        }
        Ok(())
    }
}

impl TryFrom<String> for Path {
    type Error = PathError;
    fn try_from(s: String) -> Result<Path, PathError> {
        s.parse()
    }
}

impl<'de> serde::Deserialize<'de> for Path {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Path, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Path {
        s.parse().unwrap()
    }

    #[test]
    fn parses_forms() {
        let a = p("OBR-3.1");
        assert_eq!(
            (
                a.segment.as_str(),
                a.occurrence,
                a.field,
                a.repetition,
                a.component,
                a.subcomponent
            ),
            ("OBR", 1, 3, 1, 1, 1)
        );
        let b = p("MSH-10");
        assert_eq!((b.field, b.component, b.subcomponent), (10, 1, 1));
        let c = p("OBX(2)-5(3).4.2");
        assert_eq!(
            (
                c.occurrence,
                c.field,
                c.repetition,
                c.component,
                c.subcomponent
            ),
            (2, 5, 3, 4, 2)
        );
        assert_eq!(p("SPM-2.1").to_string(), "SPM-2.1");
        assert_eq!(c.to_string(), "OBX(2)-5(3).4.2");
        assert_eq!(p(&c.to_string()), c);
    }

    #[test]
    fn limits() {
        assert_eq!(p("OBX-9999").field, 9999);
        assert_eq!("OBX-10000".parse::<Path>(), Err(PathError::Number));
        assert_eq!("OBX-0".parse::<Path>(), Err(PathError::Number));
        assert_eq!(p("OBX-1").field, 1);
    }

    #[test]
    fn rejects() {
        for (s, e) in [
            ("OBR", PathError::Field),
            ("obr-3", PathError::Segment),
            ("OBRX-3", PathError::Segment),
            ("OBR-", PathError::Number),
            ("OBR-3.", PathError::Number),
            ("OBR-3.a", PathError::Number),
            ("OBR-+3", PathError::Number),
            ("OBR-3.1.1.1", PathError::Trailing),
            ("OBR(2-3", PathError::Number),
            ("OBR-3(2", PathError::Number),
            ("OBR-3(0)", PathError::Number),
            ("", PathError::Field),
            ("ÖBR-3", PathError::Segment),
        ] {
            assert_eq!(s.parse::<Path>(), Err(e), "{s}");
        }
    }
}
