//! Positions inside a message, for errors, logs and ERR-2. A position never carries content.

use std::fmt;

/// A segment id: three characters, each an upper-case ASCII letter or a digit.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId([u8; 3]);

impl SegmentId {
    pub const MSH: SegmentId = SegmentId(*b"MSH");

    /// The id if `s` is exactly three upper-case ASCII letters or digits.
    pub fn new(s: &str) -> Option<SegmentId> {
        SegmentId::from_bytes(s.as_bytes())
    }

    /// The id if `b` is exactly three upper-case ASCII letters or digits.
    pub fn from_bytes(b: &[u8]) -> Option<SegmentId> {
        match b {
            [x, y, z]
                if [x, y, z]
                    .iter()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) =>
            {
                Some(SegmentId([*x, *y, *z]))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        // Constructed only from three ASCII bytes, so this is always valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Debug for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentId({})", self.as_str())
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where something is in a message. All numbers are 1-based; 0 means "not applicable"
/// (e.g. `component == 0` for a whole field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Location {
    /// Position of the segment in the message (MSH is 1).
    pub segment_index: usize,
    /// The segment's id, when it is well formed.
    pub segment_id: Option<SegmentId>,
    /// Occurrence of this segment id in the message (the first OBX is 1); 0 when unknown.
    pub segment_seq: usize,
    pub field: usize,
    pub repetition: usize,
    pub component: usize,
    pub subcomponent: usize,
}

impl Location {
    /// A whole segment.
    pub fn segment(segment_index: usize, id: Option<SegmentId>, seq: usize) -> Location {
        Location {
            segment_index,
            segment_id: id,
            segment_seq: seq,
            ..Location::default()
        }
    }

    /// The same segment, at field `field` (repetition, component and subcomponent cleared).
    pub fn at_field(self, field: usize) -> Location {
        Location {
            field,
            repetition: 0,
            component: 0,
            subcomponent: 0,
            ..self
        }
    }

    /// The same field, at component `component` (first repetition; subcomponent cleared).
    pub fn at_component(self, component: usize) -> Location {
        Location {
            repetition: self.repetition.max(1),
            component,
            subcomponent: 0,
            ..self
        }
    }

    /// A location in MSH (always segment 1).
    pub fn msh(field: usize) -> Location {
        Location::segment(1, Some(SegmentId::MSH), 1).at_field(field)
    }

    /// The HL7 path form, e.g. `OBX(2)-5.1` (or `segment 4` when the id is unknown).
    pub fn path(&self) -> String {
        let mut s = match self.segment_id {
            Some(id) if self.segment_seq > 1 => format!("{id}({})", self.segment_seq),
            Some(id) => id.to_string(),
            None => format!("segment {}", self.segment_index),
        };
        if self.field > 0 {
            s.push_str(&format!("-{}", self.field));
            if self.repetition > 1 {
                s.push_str(&format!("({})", self.repetition));
            }
            if self.component > 0 {
                s.push_str(&format!(".{}", self.component));
                if self.subcomponent > 0 {
                    s.push_str(&format!(".{}", self.subcomponent));
                }
            }
        }
        s
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.segment_id {
            Some(_) => write!(f, "{} (segment {})", self.path(), self.segment_index),
            None => f.write_str(&self.path()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_ids() {
        assert_eq!(SegmentId::new("OBX").unwrap().as_str(), "OBX");
        assert_eq!(SegmentId::new("ZR1").unwrap().as_str(), "ZR1");
        for bad in ["obx", "OB", "OBXX", "OB|", "ÖBX", "", "O X"] {
            assert_eq!(SegmentId::new(bad), None, "{bad}");
        }
    }

    #[test]
    fn paths() {
        let obx = SegmentId::new("OBX");
        let l = Location::segment(4, obx, 2).at_field(5).at_component(1);
        assert_eq!(l.path(), "OBX(2)-5.1");
        assert_eq!(l.to_string(), "OBX(2)-5.1 (segment 4)");
        assert_eq!(Location::msh(10).path(), "MSH-10");
        assert_eq!(Location::segment(7, None, 0).path(), "segment 7");
        let deep = Location {
            repetition: 2,
            subcomponent: 3,
            ..Location::segment(3, obx, 1).at_field(3).at_component(1)
        };
        assert_eq!(deep.path(), "OBX-3(2).1.3");
    }
}
