//! ACK messages, and which acknowledgments to send (original vs enhanced mode).
//!
//! An ACK carries only what the sender needs to match it and act on it: MSH (sender and
//! receiver swapped, version, processing id and charset mirrored), MSA (code and the received
//! control id) and, for an error or reject, an HL7 2.5 `ERR` segment whose location (ERR-2) and
//! user message (ERR-8) name positions, never content. Every value written is escaped.
//!
//! Delimiters are always the standard `|^~\&`; the ACK is encoded in the received message's
//! character set (ASCII for a message that could not be parsed).

use super::charset::Charset;
use super::escape::{self, Delimiters};
use super::header::{AckMode, Hd, MessageHeader};
use super::location::{Location, SegmentId};
use super::message::ParseError;

/// MSA-1 acknowledgment codes (HL7 table 0008).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AckCode {
    /// Application accept.
    AA,
    /// Application error.
    AE,
    /// Application reject.
    AR,
    /// Commit accept (enhanced mode).
    CA,
    /// Commit error (enhanced mode).
    CE,
    /// Commit reject (enhanced mode).
    CR,
}

impl AckCode {
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
            AckCode::CA => "CA",
            AckCode::CE => "CE",
            AckCode::CR => "CR",
        }
    }

    /// AA and CA.
    pub fn is_success(self) -> bool {
        matches!(self, AckCode::AA | AckCode::CA)
    }
}

/// What became of a received message. custodian stores and processes a message in one step,
/// so one outcome decides both the accept and the application acknowledgment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Stored durably and processed: CA / AA.
    Accepted,
    /// Stored durably (kept for review) but its content could not be used: CA / AE.
    Error,
    /// Refused (unparseable, unsupported type, version or processing id): CR / AR.
    Rejected,
    /// Could not be stored (the sender should send it again): CE / AE.
    StorageFailed,
}

impl Outcome {
    /// The code of the accept acknowledgment (enhanced mode).
    pub fn accept_code(self) -> AckCode {
        match self {
            Outcome::Accepted | Outcome::Error => AckCode::CA,
            Outcome::Rejected => AckCode::CR,
            Outcome::StorageFailed => AckCode::CE,
        }
    }

    /// The code of the application acknowledgment.
    pub fn application_code(self) -> AckCode {
        match self {
            Outcome::Accepted => AckCode::AA,
            Outcome::Error | Outcome::StorageFailed => AckCode::AE,
            Outcome::Rejected => AckCode::AR,
        }
    }
}

/// Which acknowledgments to send, in order (accept first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPlan {
    pub accept: Option<AckCode>,
    pub application: Option<AckCode>,
}

/// Decides the acknowledgments for a received header and an outcome.
///
/// - Original mode (MSH-15 and MSH-16 empty): always one application ACK (AA/AE/AR).
/// - Enhanced mode: an accept ACK (CA/CE/CR) when MSH-15's condition holds for it, an
///   application ACK (AA/AE/AR) when MSH-16's condition holds for it. When a CE or CR accept
///   ACK is sent, no application ACK follows: the message was not taken for processing.
pub fn plan(header: &MessageHeader, outcome: Outcome) -> AckPlan {
    match header.ack_mode {
        AckMode::Original => AckPlan {
            accept: None,
            application: Some(outcome.application_code()),
        },
        AckMode::Enhanced {
            accept,
            application,
        } => {
            let accept_code = outcome.accept_code();
            let app_code = outcome.application_code();
            let accept_ack = accept
                .wants(accept_code.is_success())
                .then_some(accept_code);
            let refused = matches!(accept_ack, Some(AckCode::CE | AckCode::CR));
            let application_ack =
                (!refused && application.wants(app_code.is_success())).then_some(app_code);
            AckPlan {
                accept: accept_ack,
                application: application_ack,
            }
        }
    }
}

/// HL7 table 0357 (message error condition codes) as used in ERR-3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    SegmentSequenceError,
    RequiredFieldMissing,
    DataTypeError,
    TableValueNotFound,
    UnsupportedMessageType,
    UnsupportedEventCode,
    UnsupportedProcessingId,
    UnsupportedVersionId,
    UnknownKeyIdentifier,
    DuplicateKeyIdentifier,
    ApplicationRecordLocked,
    ApplicationInternalError,
}

impl ErrorCode {
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::SegmentSequenceError => 100,
            ErrorCode::RequiredFieldMissing => 101,
            ErrorCode::DataTypeError => 102,
            ErrorCode::TableValueNotFound => 103,
            ErrorCode::UnsupportedMessageType => 200,
            ErrorCode::UnsupportedEventCode => 201,
            ErrorCode::UnsupportedProcessingId => 202,
            ErrorCode::UnsupportedVersionId => 203,
            ErrorCode::UnknownKeyIdentifier => 204,
            ErrorCode::DuplicateKeyIdentifier => 205,
            ErrorCode::ApplicationRecordLocked => 206,
            ErrorCode::ApplicationInternalError => 207,
        }
    }

    pub fn text(self) -> &'static str {
        match self {
            ErrorCode::SegmentSequenceError => "Segment sequence error",
            ErrorCode::RequiredFieldMissing => "Required field missing",
            ErrorCode::DataTypeError => "Data type error",
            ErrorCode::TableValueNotFound => "Table value not found",
            ErrorCode::UnsupportedMessageType => "Unsupported message type",
            ErrorCode::UnsupportedEventCode => "Unsupported event code",
            ErrorCode::UnsupportedProcessingId => "Unsupported processing id",
            ErrorCode::UnsupportedVersionId => "Unsupported version id",
            ErrorCode::UnknownKeyIdentifier => "Unknown key identifier",
            ErrorCode::DuplicateKeyIdentifier => "Duplicate key identifier",
            ErrorCode::ApplicationRecordLocked => "Application record locked",
            ErrorCode::ApplicationInternalError => "Application internal error",
        }
    }
}

/// One error to report in an ERR segment. The user message can only come from custodian's own
/// content-free error texts or a `&'static str`, so donor data cannot reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorDetail {
    code: ErrorCode,
    location: Option<Location>,
    message: String,
}

impl ErrorDetail {
    pub fn new(code: ErrorCode, location: Option<Location>, message: &'static str) -> ErrorDetail {
        ErrorDetail {
            code,
            location,
            message: message.to_owned(),
        }
    }

    /// For custodian's error types, whose `Display` names positions only.
    pub(crate) fn from_display(
        code: ErrorCode,
        location: Option<Location>,
        e: &dyn std::fmt::Display,
    ) -> ErrorDetail {
        ErrorDetail {
            code,
            location,
            message: e.to_string(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn location(&self) -> Option<Location> {
        self.location
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl ParseError {
    /// The table 0357 code for this error.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ParseError::Empty
            | ParseError::MissingMsh
            | ParseError::WrongSegmentSeparator { .. }
            | ParseError::EmptySegment { .. }
            | ParseError::BadSegmentId { .. }
            | ParseError::UnexpectedMsh { .. } => ErrorCode::SegmentSequenceError,
            ParseError::BadFieldSeparator
            | ParseError::BadEncodingCharacters
            | ParseError::TruncationCharacter
            | ParseError::InvalidByte { .. }
            | ParseError::ControlCharacter { .. }
            | ParseError::MalformedEscape { .. }
            | ParseError::InvalidEscapedBytes { .. } => ErrorCode::DataTypeError,
            ParseError::UnsupportedCharset | ParseError::InvalidTableValue { .. } => {
                ErrorCode::TableValueNotFound
            }
            ParseError::RequiredFieldMissing { .. } => ErrorCode::RequiredFieldMissing,
        }
    }
}

impl From<&ParseError> for ErrorDetail {
    fn from(e: &ParseError) -> ErrorDetail {
        ErrorDetail::from_display(e.error_code(), e.location(), e)
    }
}

const D: Delimiters = Delimiters::STANDARD;

fn esc(text: &str, charset: Charset) -> String {
    escape::encode(text, &D, charset)
}

fn hd(h: &Hd, charset: Charset) -> String {
    let mut parts: Vec<String> = h.components().iter().map(|c| esc(c, charset)).collect();
    while parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    parts.join("^")
}

/// ERR-2 (ERL): segment id ^ sequence ^ field ^ repetition ^ component ^ subcomponent, trailing
/// empty components dropped. Empty when the segment id is not known.
fn erl(l: &Location) -> String {
    let Some(id) = l.segment_id else {
        return String::new();
    };
    let num = |n: usize| if n == 0 { String::new() } else { n.to_string() };
    let mut parts = vec![
        id.to_string(),
        num(l.segment_seq.max(1)),
        num(l.field),
        num(l.repetition),
        num(l.component),
        num(l.subcomponent),
    ];
    while parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    parts.join("^")
}

fn err_segment(detail: &ErrorDetail, charset: Charset) -> String {
    let location = detail.location.as_ref().map(erl).unwrap_or_default();
    format!(
        "ERR||{}|{}^{}^HL70357|E||||{}\r",
        location,
        detail.code.code(),
        esc(detail.code.text(), charset),
        esc(&detail.message, charset),
    )
}

fn is_event_code(s: &str) -> bool {
    SegmentId::new(s).is_some()
}

struct AckFields<'a> {
    sending_application: String,
    sending_facility: String,
    receiving_application: String,
    receiving_facility: String,
    trigger: &'a str,
    processing_id: &'a str,
    version: &'a str,
    charset_field: &'a str,
    received_control_id: &'a str,
}

fn render(
    f: &AckFields<'_>,
    charset: Charset,
    code: AckCode,
    error: Option<&ErrorDetail>,
    control_id: &str,
    timestamp: &str,
) -> Vec<u8> {
    let mut msh = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||ACK^{}^ACK|{}|{}|{}||||||{}",
        f.sending_application,
        f.sending_facility,
        f.receiving_application,
        f.receiving_facility,
        esc(timestamp, charset),
        f.trigger,
        esc(control_id, charset),
        esc(f.processing_id, charset),
        esc(f.version, charset),
        esc(f.charset_field, charset),
    );
    while msh.ends_with('|') {
        msh.pop();
    }
    let mut out = msh;
    out.push('\r');
    let fallback;
    let error = if code.is_success() {
        None
    } else {
        Some(match error {
            Some(e) => e,
            None => {
                fallback = ErrorDetail::new(
                    ErrorCode::ApplicationInternalError,
                    None,
                    "message not processed",
                );
                &fallback
            }
        })
    };
    out.push_str(&format!(
        "MSA|{}|{}",
        code.as_str(),
        esc(f.received_control_id, charset)
    ));
    if let Some(e) = error {
        // MSA-3 (text message) is deprecated since 2.4 but read by older receivers.
        out.push_str(&format!("|{}", esc(&e.message, charset)));
    }
    out.push('\r');
    if let Some(e) = error {
        out.push_str(&err_segment(e, charset));
    }
    charset.encode(&out)
}

/// Builds an ACK (`ACK^<trigger>^ACK`; the trigger is mirrored, e.g. `ACK^R01^ACK` for an
/// ORU^R01) for a parsed message's header.
///
/// `control_id` is the ACK's own MSH-10 and `timestamp` its MSH-7 (HL7 DTM text), both supplied
/// by the caller so this stays pure. MSA-2 mirrors the received MSH-10. For a code other than
/// AA/CA an ERR segment is added from `error` (or a generic 207 when none is given).
pub fn build_ack(
    received: &MessageHeader,
    code: AckCode,
    error: Option<&ErrorDetail>,
    control_id: &str,
    timestamp: &str,
) -> Vec<u8> {
    let cs = received.charset;
    let trigger = if is_event_code(&received.trigger_event) {
        received.trigger_event.as_str()
    } else {
        "R01"
    };
    let fields = AckFields {
        sending_application: hd(&received.receiving_application, cs),
        sending_facility: hd(&received.receiving_facility, cs),
        receiving_application: hd(&received.sending_application, cs),
        receiving_facility: hd(&received.sending_facility, cs),
        trigger,
        processing_id: &received.processing_id,
        version: &received.version,
        charset_field: &received.charset_field,
        received_control_id: &received.control_id,
    };
    render(&fields, cs, code, error, control_id, timestamp)
}

/// The received MSH-10 found by a byte scan of a message that could not be parsed, if it looks
/// like a control id: 1 to 199 printable ASCII characters with no HL7 delimiter.
pub fn scan_control_id(bytes: &[u8]) -> Option<String> {
    scan_msh_field(bytes, 10, 199)
}

fn scan_msh_field(bytes: &[u8], field: usize, max_len: usize) -> Option<String> {
    let fs = *bytes.get(3)?;
    if !bytes.starts_with(b"MSH") || !fs.is_ascii_graphic() || fs.is_ascii_alphanumeric() {
        return None;
    }
    let end = bytes
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(bytes.len());
    let enc = bytes[..end].split(|&b| b == fs).nth(1)?;
    // Split index k holds MSH-(k+1).
    let value = bytes[..end].split(|&b| b == fs).nth(field - 1)?;
    let clean = !value.is_empty()
        && value.len() <= max_len
        && value.iter().all(|&b| {
            b.is_ascii_graphic() && !b"|^~\\&".contains(&b) && b != fs && !enc.contains(&b)
        });
    clean.then(|| value.iter().map(|&b| char::from(b)).collect())
}

/// Builds an AR for bytes that [`super::parse`] refused. Best effort: MSA-2 mirrors MSH-10 and
/// MSH-12 mirrors the version when a byte scan finds plausible values (else MSA-2 is empty and
/// the version is 2.5). Sender/receiver are left empty; the ACK is ASCII.
pub fn build_reject_for_unparsed(
    bytes: &[u8],
    error: &ParseError,
    control_id: &str,
    timestamp: &str,
) -> Vec<u8> {
    let received_control_id = scan_control_id(bytes).unwrap_or_default();
    let version = scan_msh_field(bytes, 12, 10)
        .filter(|v| v.starts_with("2.") && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        .unwrap_or_else(|| "2.5".to_owned());
    let processing_id = scan_msh_field(bytes, 11, 1)
        .filter(|p| matches!(p.as_str(), "P" | "T" | "D"))
        .unwrap_or_else(|| "P".to_owned());
    let fields = AckFields {
        sending_application: String::new(),
        sending_facility: String::new(),
        receiving_application: String::new(),
        receiving_facility: String::new(),
        trigger: "R01",
        processing_id: &processing_id,
        version: &version,
        charset_field: "",
        received_control_id: &received_control_id,
    };
    render(
        &fields,
        Charset::Ascii,
        AckCode::AR,
        Some(&ErrorDetail::from(error)),
        control_id,
        timestamp,
    )
}
