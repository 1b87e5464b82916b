//! The MSH view, and the acknowledgment mode MSH-15/MSH-16 ask for.

use super::charset::Charset;
use super::location::Location;
use super::message::{Field, ParseError, Segment};

/// An HD (hierarchic designator) field: MSH-3 to MSH-6.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hd {
    pub namespace_id: String,
    pub universal_id: String,
    pub universal_id_type: String,
}

impl Hd {
    fn from_field(f: Option<&Field>) -> Hd {
        let c = |n| f.map(|f| f.component_text(n)).unwrap_or("").to_owned();
        Hd {
            namespace_id: c(1),
            universal_id: c(2),
            universal_id_type: c(3),
        }
    }

    /// The components in order, for writing the field back.
    pub fn components(&self) -> [&str; 3] {
        [
            &self.namespace_id,
            &self.universal_id,
            &self.universal_id_type,
        ]
    }
}

/// HL7 table 0155: when an accept or application acknowledgment is wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckCondition {
    /// `AL`
    Always,
    /// `NE`
    Never,
    /// `ER`: error/reject conditions only.
    ErrorOnly,
    /// `SU`: successful completion only.
    SuccessOnly,
}

impl AckCondition {
    /// The condition for a table 0155 code; an empty field in enhanced mode counts as `AL`
    /// (custodian would rather send an acknowledgment a sender did not ask for than leave a
    /// sender waiting for one).
    pub fn from_code(code: &str) -> Option<AckCondition> {
        match code {
            "" | "AL" => Some(AckCondition::Always),
            "NE" => Some(AckCondition::Never),
            "ER" => Some(AckCondition::ErrorOnly),
            "SU" => Some(AckCondition::SuccessOnly),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            AckCondition::Always => "AL",
            AckCondition::Never => "NE",
            AckCondition::ErrorOnly => "ER",
            AckCondition::SuccessOnly => "SU",
        }
    }

    /// Whether this condition asks for an acknowledgment of an outcome.
    pub fn wants(self, success: bool) -> bool {
        match self {
            AckCondition::Always => true,
            AckCondition::Never => false,
            AckCondition::ErrorOnly => !success,
            AckCondition::SuccessOnly => success,
        }
    }
}

/// The acknowledgment mode of a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// MSH-15 and MSH-16 both empty: one application acknowledgment (AA/AE/AR), always.
    Original,
    /// Enhanced mode: MSH-15 governs the accept acknowledgment (CA/CE/CR), MSH-16 the
    /// application acknowledgment (AA/AE/AR).
    Enhanced {
        accept: AckCondition,
        application: AckCondition,
    },
}

/// What MSH says about a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageHeader {
    /// MSH-3.
    pub sending_application: Hd,
    /// MSH-4.
    pub sending_facility: Hd,
    /// MSH-5.
    pub receiving_application: Hd,
    /// MSH-6.
    pub receiving_facility: Hd,
    /// MSH-7.1, as sent.
    pub timestamp: String,
    /// MSH-9.1, e.g. `ORU`.
    pub message_type: String,
    /// MSH-9.2, e.g. `R01`.
    pub trigger_event: String,
    /// MSH-9.3, e.g. `ORU_R01`.
    pub message_structure: String,
    /// MSH-10.
    pub control_id: String,
    /// MSH-11.1: `P` production, `T` training, `D` debugging.
    pub processing_id: String,
    /// MSH-12.1, e.g. `2.5.1`.
    pub version: String,
    /// MSH-15 as sent (table 0155 code or empty).
    pub accept_ack_type: String,
    /// MSH-16 as sent.
    pub application_ack_type: String,
    /// MSH-18 as sent (empty means ASCII; otherwise one of `ASCII`, `8859/1`, `UNICODE UTF-8`).
    pub charset_field: String,
    /// The character set MSH-18 names.
    pub charset: Charset,
    /// The acknowledgment mode MSH-15/16 ask for.
    pub ack_mode: AckMode,
}

impl MessageHeader {
    /// Reads MSH and checks the fields every message needs.
    pub(crate) fn from_msh(msh: &Segment, charset: Charset) -> Result<MessageHeader, ParseError> {
        let text = |n: usize| msh.text(n).to_owned();
        let comp = |n: usize, c: usize| msh.component_text(n, c).to_owned();
        let h = MessageHeader {
            sending_application: Hd::from_field(msh.field(3)),
            sending_facility: Hd::from_field(msh.field(4)),
            receiving_application: Hd::from_field(msh.field(5)),
            receiving_facility: Hd::from_field(msh.field(6)),
            timestamp: text(7),
            message_type: comp(9, 1),
            trigger_event: comp(9, 2),
            message_structure: comp(9, 3),
            control_id: text(10),
            processing_id: comp(11, 1),
            version: comp(12, 1),
            accept_ack_type: text(15),
            application_ack_type: text(16),
            // The raw MSH-18 matched one of table 0211's names exactly (see `Charset::from_msh18`);
            // reading it back through the delimiters could split it (e.g. `-` as subcomponent
            // separator in `UNICODE UTF-8`), so the name is taken from the charset.
            charset_field: if msh.field(18).is_some_and(|f| !f.is_empty()) {
                charset.hl7_name().to_owned()
            } else {
                String::new()
            },
            charset,
            ack_mode: AckMode::Original,
        };
        for (field, component, value) in [
            (9, 1, &h.message_type),
            (10, 0, &h.control_id),
            (11, 1, &h.processing_id),
            (12, 1, &h.version),
        ] {
            if value.is_empty() {
                let mut location = Location::msh(field);
                if component > 0 {
                    location = location.at_component(component);
                }
                return Err(ParseError::RequiredFieldMissing { location });
            }
        }
        let ack_mode = if h.accept_ack_type.is_empty() && h.application_ack_type.is_empty() {
            AckMode::Original
        } else {
            let cond = |value: &str, field| {
                AckCondition::from_code(value).ok_or(ParseError::InvalidTableValue {
                    location: Location::msh(field),
                })
            };
            AckMode::Enhanced {
                accept: cond(&h.accept_ack_type, 15)?,
                application: cond(&h.application_ack_type, 16)?,
            }
        };
        Ok(MessageHeader { ack_mode, ..h })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        assert_eq!(AckCondition::from_code("AL"), Some(AckCondition::Always));
        assert_eq!(AckCondition::from_code(""), Some(AckCondition::Always));
        assert_eq!(AckCondition::from_code("NE"), Some(AckCondition::Never));
        assert_eq!(AckCondition::from_code("ER"), Some(AckCondition::ErrorOnly));
        assert_eq!(
            AckCondition::from_code("SU"),
            Some(AckCondition::SuccessOnly)
        );
        assert_eq!(AckCondition::from_code("al"), None);
        assert_eq!(AckCondition::from_code("XX"), None);
        for c in [
            AckCondition::Always,
            AckCondition::Never,
            AckCondition::ErrorOnly,
            AckCondition::SuccessOnly,
        ] {
            assert_eq!(AckCondition::from_code(c.code()), Some(c));
        }
        assert!(AckCondition::Always.wants(true) && AckCondition::Always.wants(false));
        assert!(!AckCondition::Never.wants(true) && !AckCondition::Never.wants(false));
        assert!(!AckCondition::ErrorOnly.wants(true) && AckCondition::ErrorOnly.wants(false));
        assert!(AckCondition::SuccessOnly.wants(true) && !AckCondition::SuccessOnly.wants(false));
    }
}
