//! Why a LIMS document was refused.
//!
//! An error names the line, the element or attribute path and the rule that was broken. It never
//! carries document content: values are donor data (SSN, names, remarks). Paths are built only
//! from the names our schemas declare; an element or attribute the schemas do not know is shown
//! as `*` (its name came from the document), and indexes are 1-based as in XPath.

use std::fmt;

/// A refused document: where, and which rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {path}: {rule}")]
pub struct XmlError {
    /// 1-based line. Document-level problems (size, encoding) report line 1.
    pub line: u32,
    /// `/accession/donor/ssn`, `/confirmation-batch/specimen[2]/@id`, or `/` for the document.
    pub path: String,
    pub rule: Rule,
}

impl XmlError {
    pub(crate) fn new(line: u32, path: impl Into<String>, rule: Rule) -> XmlError {
        XmlError {
            line,
            path: path.into(),
            rule,
        }
    }
}

/// The rule a document broke. Texts name facets and limits, never values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The document is larger than the caller's limit (bytes).
    TooLarge { limit: usize },
    /// No root element.
    NoRoot,
    /// Bytes that are not UTF-8.
    NotUtf8,
    /// A byte-order mark or an `encoding` declaration other than UTF-8.
    UnsupportedEncoding,
    /// An XML declaration with a version other than 1.0.
    UnsupportedXmlVersion,
    /// A character XML 1.0 forbids (control characters, U+FFFE, U+FFFF), written or referenced.
    ForbiddenCharacter,
    /// The document is not well-formed XML; the text says what was wrong.
    Malformed(&'static str),
    /// `<!DOCTYPE …>`: DTDs (and so entity declarations) are refused.
    DoctypeRefused,
    /// A reference to an entity other than the five predefined ones.
    EntityRefused,
    /// A processing instruction other than the XML declaration.
    ProcessingInstructionRefused,
    /// Elements nested deeper than any schema allows.
    TooDeep { max: usize },
    /// The root element is not accession, confirmation-batch, correction or request.
    UnknownRoot,
    /// An element outside the namespace `urn:custodian:lims:1` (or in none).
    WrongNamespace,
    /// An element where the schema has none, or a different one.
    UnexpectedElement { expected: Option<&'static str> },
    /// A required element is missing.
    MissingElement,
    /// Character data in an element that holds only elements.
    TextNotAllowed,
    /// A child element in an element that holds only text.
    ChildNotAllowed,
    /// An attribute the schema does not declare on this element.
    UnknownAttribute,
    /// A required attribute is missing.
    MissingAttribute,
    /// The same attribute twice on one element.
    DuplicateAttribute,
    /// More characters than `maxLength`.
    TooLong { max: usize },
    /// Empty or only whitespace where text is required.
    Blank,
    /// The value does not match the schema pattern (quoted from the XSD).
    Pattern(&'static str),
    /// The value is not one of the enumeration.
    NotInEnumeration(&'static [&'static str]),
    /// Not an xs:boolean (true, false, 1, 0).
    InvalidBoolean,
    /// Not a calendar date YYYY-MM-DD, or no such day.
    InvalidDate,
    /// Not a date-time YYYY-MM-DDThh:mm:ss[.f] with a UTC offset, or no such instant.
    InvalidDateTime,
    /// Not an xs:decimal (digits, one optional point, optional sign; no exponent).
    InvalidDecimal,
    /// Below `minInclusive` 0.
    Negative,
    /// More digits than `totalDigits` / `fractionDigits` allow.
    TooManyDigits { total: u32, fraction: u32 },
    /// The value repeats one given earlier (an `xs:unique` constraint).
    Duplicate { first_line: u32 },
    /// A rule between two fields that XSD 1.0 cannot state; the text names both.
    Inconsistent(&'static str),
    /// Not xs:base64Binary.
    InvalidBase64,
    /// An image that is empty, too large, or not of its declared media type.
    BadImage(crate::domain::copy1::ImageError),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::TooLarge { limit } => {
                write!(f, "document larger than the limit of {limit} bytes")
            }
            Rule::NoRoot => f.write_str("no root element"),
            Rule::NotUtf8 => f.write_str("not valid UTF-8 (only UTF-8 is accepted)"),
            Rule::UnsupportedEncoding => {
                f.write_str("encoding is not UTF-8 (only UTF-8 is accepted)")
            }
            Rule::UnsupportedXmlVersion => f.write_str("XML version must be 1.0"),
            Rule::ForbiddenCharacter => f.write_str("character not allowed in XML 1.0"),
            Rule::Malformed(what) => write!(f, "not well-formed XML: {what}"),
            Rule::InvalidBase64 => f.write_str("not base64 (xs:base64Binary)"),
            Rule::BadImage(e) => write!(f, "{e}"),
            Rule::DoctypeRefused => f.write_str("DOCTYPE refused (no DTDs or entity declarations)"),
            Rule::EntityRefused => {
                f.write_str("entity reference refused (only the five predefined entities)")
            }
            Rule::ProcessingInstructionRefused => f.write_str("processing instruction refused"),
            Rule::TooDeep { max } => write!(f, "elements nested deeper than {max}"),
            Rule::UnknownRoot => f.write_str(
                "root element must be accession, confirmation-batch, correction, request or certified-copy",
            ),
            Rule::WrongNamespace => {
                f.write_str("element must be in namespace urn:custodian:lims:1")
            }
            Rule::UnexpectedElement { expected: Some(e) } => {
                write!(f, "element not expected here; expected {e}")
            }
            Rule::UnexpectedElement { expected: None } => {
                f.write_str("element not expected here; no more elements allowed")
            }
            Rule::MissingElement => f.write_str("required element missing"),
            Rule::TextNotAllowed => f.write_str("text not allowed (element holds only elements)"),
            Rule::ChildNotAllowed => f.write_str("child element not allowed (element holds text)"),
            Rule::UnknownAttribute => f.write_str("attribute not allowed"),
            Rule::MissingAttribute => f.write_str("required attribute missing"),
            Rule::DuplicateAttribute => f.write_str("attribute given twice"),
            Rule::TooLong { max } => write!(f, "longer than {max} characters"),
            Rule::Blank => f.write_str("must not be empty or blank"),
            Rule::Pattern(p) => write!(f, "does not match pattern {p}"),
            Rule::NotInEnumeration(allowed) => {
                write!(f, "not one of: {}", allowed.join(", "))
            }
            Rule::InvalidBoolean => f.write_str("not a boolean (true, false, 1 or 0)"),
            Rule::InvalidDate => f.write_str("not a valid date YYYY-MM-DD"),
            Rule::InvalidDateTime => f.write_str(
                "not a valid date-time YYYY-MM-DDThh:mm:ss[.fraction] with Z or a ±hh:mm offset",
            ),
            Rule::InvalidDecimal => f.write_str("not a decimal number (no exponent allowed)"),
            Rule::Negative => f.write_str("must not be negative"),
            Rule::TooManyDigits { total, fraction } => write!(
                f,
                "more than {total} significant digits or {fraction} after the decimal point"
            ),
            Rule::Duplicate { first_line } => {
                write!(f, "duplicate of the value on line {first_line}")
            }
            Rule::Inconsistent(what) => f.write_str(what),
        }
    }
}
