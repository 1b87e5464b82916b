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
            | ParseError::UnexpectedMsh { .. }
            | ParseError::Truncated { .. } => ErrorCode::SegmentSequenceError,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::hl7::header::AckCondition;
    use crate::codec::hl7::message::parse;

    fn header(msh: &str) -> MessageHeader {
        parse(format!("{msh}\r").as_bytes())
            .unwrap()
            .header()
            .clone()
    }

    fn segs(bytes: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(bytes)
            .split_terminator('\r')
            .map(str::to_owned)
            .collect()
    }

    const ORU: &str =
        "MSH|^~\\&|IA^1.2.3^ISO|LAB|CUSTODIAN|TOXLAB|20240315||ORU^R01^ORU_R01|IA-7|P|2.5.1";

    #[test]
    fn aa_swaps_sender_and_receiver_and_mirrors() {
        let h = header(ORU);
        let ack = build_ack(&h, AckCode::AA, None, "C-1", "20240315101600");
        assert_eq!(
            segs(&ack),
            [
                "MSH|^~\\&|CUSTODIAN|TOXLAB|IA^1.2.3^ISO|LAB|20240315101600||ACK^R01^ACK|C-1|P|2.5.1",
                "MSA|AA|IA-7",
            ]
        );
        let parsed = parse(&ack).unwrap();
        assert_eq!(parsed.header().message_type, "ACK");
        assert_eq!(parsed.get("MSA-2"), Some("IA-7"));
    }

    #[test]
    fn ae_has_err_segment_with_location_code_and_position_text() {
        let h = header(ORU);
        let location = Location::segment(5, SegmentId::new("OBX"), 2)
            .at_field(5)
            .at_component(1);
        let e = ErrorDetail::from_display(
            ErrorCode::DataTypeError,
            Some(location),
            &"value at OBX(2)-5.1 is not a number",
        );
        let ack = build_ack(&h, AckCode::AE, Some(&e), "C-2", "20240315101600");
        let s = segs(&ack);
        assert_eq!(s[1], "MSA|AE|IA-7|value at OBX(2)-5.1 is not a number");
        assert_eq!(
            s[2],
            "ERR||OBX^2^5^1^1|102^Data type error^HL70357|E||||value at OBX(2)-5.1 is not a number"
        );
        let parsed = parse(&ack).unwrap();
        assert_eq!(parsed.get("ERR-3.1"), Some("102"));
        assert_eq!(parsed.get("ERR-4"), Some("E"));
    }

    #[test]
    fn ar_without_detail_gets_a_generic_207() {
        let ack = build_ack(&header(ORU), AckCode::AR, None, "C-3", "1");
        let parsed = parse(&ack).unwrap();
        assert_eq!(parsed.get("MSA-1"), Some("AR"));
        assert_eq!(parsed.get("ERR-3.1"), Some("207"));
        assert_eq!(parsed.get("ERR-2"), Some(""));
    }

    #[test]
    fn enhanced_codes_and_trigger_mirroring() {
        let h = header("MSH|^~\\&|A|B|C|D|1||ADT^A01|X1|T|2.3|||AL|NE");
        let ack = build_ack(&h, AckCode::CA, None, "C-4", "1");
        let parsed = parse(&ack).unwrap();
        assert_eq!(parsed.get("MSH-9.2"), Some("A01"));
        assert_eq!(parsed.get("MSH-11"), Some("T"));
        assert_eq!(parsed.get("MSH-12"), Some("2.3"));
        assert_eq!(parsed.get("MSA-1"), Some("CA"));
        assert!(parsed.segment("ERR").is_none());
        let h = header("MSH|^~\\&|A|B|C|D|1||ORU^r 1|X1|P|2.5");
        let parsed = parse(&build_ack(&h, AckCode::CR, None, "C", "1")).unwrap();
        assert_eq!(parsed.get("MSH-9.2"), Some("R01"));
        assert_eq!(parsed.get("MSA-1"), Some("CR"));
    }

    #[test]
    fn everything_written_is_escaped_and_charset_mirrored() {
        let h = header(
            "MSH|^~\\&|A\\F\\B^x\\S\\y|L\\T\\M|C\\R\\D|\\E\\|1||ORU^R01|ID\\F\\1|P|2.5||||||8859/1",
        );
        assert_eq!(h.sending_application.namespace_id, "A|B");
        let ack = build_ack(&h, AckCode::AA, None, "C|5^x", "2024&");
        let parsed = parse(&ack).unwrap();
        let ph = parsed.header();
        assert_eq!(ph.receiving_application.namespace_id, "A|B");
        assert_eq!(ph.receiving_application.universal_id, "x^y");
        assert_eq!(ph.receiving_facility.namespace_id, "L&M");
        assert_eq!(ph.sending_application.namespace_id, "C~D");
        assert_eq!(ph.sending_facility.namespace_id, "\\");
        assert_eq!(ph.control_id, "C|5^x");
        assert_eq!(ph.timestamp, "2024&");
        assert_eq!(ph.charset, Charset::Latin1);
        assert_eq!(parsed.get("MSA-2"), Some("ID|1"));
    }

    #[test]
    fn latin1_names_stay_latin1() {
        let raw = b"MSH|^~\\&|M\xdcNCHEN|B|C|D|1||ORU^R01|9|P|2.5||||||8859/1\r";
        let h = parse(raw).unwrap().header().clone();
        let ack = build_ack(&h, AckCode::AA, None, "C", "1");
        assert!(ack.windows(7).any(|w| w == b"M\xdcNCHEN"));
        assert_eq!(
            parse(&ack)
                .unwrap()
                .header()
                .receiving_application
                .namespace_id,
            "MÜNCHEN"
        );
    }

    #[test]
    fn parse_errors_map_to_err_segments() {
        let bytes = b"MSH|^~\\&|A|B|C|D|1||ORU^R01|CTRL-9|P|2.5\rPID|1|x\\Q\\\r";
        let e = parse(bytes).unwrap_err();
        let ack = build_reject_for_unparsed(bytes, &e, "C-6", "1");
        let s = segs(&ack);
        assert_eq!(s[0], "MSH|^~\\&|||||1||ACK^R01^ACK|C-6|P|2.5");
        assert!(s[1].starts_with("MSA|AR|CTRL-9|malformed escape sequence at PID-2.1.1"));
        assert!(s[2].starts_with("ERR||PID^1^2^1^1^1|102^Data type error^HL70357|E||||"));
        parse(&ack).unwrap();
    }

    #[test]
    fn reject_for_unparsed_scans_control_id_best_effort() {
        // Line feeds: cannot parse, but MSH-10 is found.
        let bytes = b"MSH|^~\\&|A|B|C|D|1||ORU^R01|CTRL-LF|P|2.3\nPID|1\n";
        let e = parse(bytes).unwrap_err();
        assert_eq!(e, ParseError::WrongSegmentSeparator { segment: 1 });
        let ack = build_reject_for_unparsed(bytes, &e, "C-7", "1");
        let p = parse(&ack).unwrap();
        assert_eq!(p.get("MSA-2"), Some("CTRL-LF"));
        assert_eq!(p.get("MSH-12"), Some("2.3"));
        assert_eq!(p.get("ERR-3.1"), Some("100"));
        assert_eq!(p.get("ERR-2"), Some(""));
        // Truncation-character form: MSH-10 is at a shifted place only for hl7-parser; our scan
        // splits on the field separator, so it still finds it.
        let bytes = b"MSH|^~\\&#|A|B|C|D|1||ORU^R01|CTRL-T|P|2.7\r";
        let e = parse(bytes).unwrap_err();
        let p = parse(&build_reject_for_unparsed(bytes, &e, "C", "1")).unwrap();
        assert_eq!(p.get("MSA-2"), Some("CTRL-T"));
        assert_eq!(
            (p.get("ERR-2.1"), p.get("ERR-2.2"), p.get("ERR-2.3")),
            (Some("MSH"), Some("1"), Some("2"))
        );
        // Nothing plausible: MSA-2 empty, version 2.5.
        for bytes in [
            &b""[..],
            b"garbage",
            b"MSH|^~\\&|A|B|C|D|1||ORU^R01|\xff\xfe|P|9.9\r",
            b"MSH|^~\\&|A|B|C|D|1||ORU^R01|a^b|P\r",
            b"MSH|^~\\&|A|B|C|D|1||ORU^R01|a b|P\r",
        ] {
            let e = parse(bytes).err().unwrap_or(ParseError::Empty);
            let p = parse(&build_reject_for_unparsed(bytes, &e, "C", "1")).unwrap();
            assert_eq!(p.get("MSA-2"), Some(""), "{bytes:?}");
            assert_eq!(p.get("MSH-12"), Some("2.5"));
            assert_eq!(p.get("MSA-1"), Some("AR"));
        }
    }

    #[test]
    fn control_id_scan_limits() {
        let with = |id: &str| format!("MSH|^~\\&|A|B|C|D|1||ORU^R01|{id}|P|2.5\r").into_bytes();
        assert_eq!(
            scan_control_id(&with(&"9".repeat(199))),
            Some("9".repeat(199))
        );
        assert_eq!(scan_control_id(&with(&"9".repeat(200))), None);
        assert_eq!(scan_control_id(&with("")), None);
        assert_eq!(scan_control_id(&with("X")), Some("X".into()));
        assert_eq!(scan_control_id(b"MSH|^~\\&|A|B"), None);
    }

    #[test]
    fn error_text_is_escaped() {
        let e = ErrorDetail::new(ErrorCode::ApplicationInternalError, None, "a|b^c~d\\e&f");
        let ack = build_ack(&header(ORU), AckCode::AE, Some(&e), "C", "1");
        let p = parse(&ack).unwrap();
        assert_eq!(p.get("ERR-8"), Some("a|b^c~d\\e&f"));
        assert_eq!(p.get("MSA-3"), Some("a|b^c~d\\e&f"));
    }

    #[test]
    fn original_mode_always_one_application_ack() {
        let h = header(ORU);
        for (o, code) in [
            (Outcome::Accepted, AckCode::AA),
            (Outcome::Error, AckCode::AE),
            (Outcome::Rejected, AckCode::AR),
            (Outcome::StorageFailed, AckCode::AE),
        ] {
            assert_eq!(
                plan(&h, o),
                AckPlan {
                    accept: None,
                    application: Some(code)
                }
            );
        }
    }

    #[test]
    fn enhanced_mode_follows_msh15_and_msh16() {
        let h = |a: &str, b: &str| header(&format!("{ORU}|||{a}|{b}"));
        let p = |a: &str, b: &str, o| plan(&h(a, b), o);
        use AckCode::*;
        let both = |accept, application| AckPlan {
            accept,
            application,
        };
        // AL/AL: both on success; on reject only the CR.
        assert_eq!(p("AL", "AL", Outcome::Accepted), both(Some(CA), Some(AA)));
        assert_eq!(p("AL", "AL", Outcome::Error), both(Some(CA), Some(AE)));
        assert_eq!(p("AL", "AL", Outcome::Rejected), both(Some(CR), None));
        assert_eq!(p("AL", "AL", Outcome::StorageFailed), both(Some(CE), None));
        // NE/AL: application only, even for a reject.
        assert_eq!(p("NE", "AL", Outcome::Accepted), both(None, Some(AA)));
        assert_eq!(p("NE", "AL", Outcome::Rejected), both(None, Some(AR)));
        // AL/NE: accept only.
        assert_eq!(p("AL", "NE", Outcome::Accepted), both(Some(CA), None));
        assert_eq!(p("AL", "NE", Outcome::Error), both(Some(CA), None));
        // ER/ER: only when something is wrong.
        assert_eq!(p("ER", "ER", Outcome::Accepted), both(None, None));
        assert_eq!(p("ER", "ER", Outcome::Error), both(None, Some(AE)));
        assert_eq!(p("ER", "ER", Outcome::Rejected), both(Some(CR), None));
        // SU/SU: only on success.
        assert_eq!(p("SU", "SU", Outcome::Accepted), both(Some(CA), Some(AA)));
        assert_eq!(p("SU", "SU", Outcome::Rejected), both(None, None));
        assert_eq!(p("SU", "SU", Outcome::Error), both(Some(CA), None));
        // NE/NE: nothing.
        assert_eq!(p("NE", "NE", Outcome::Rejected), both(None, None));
        // One field empty in enhanced mode counts as AL.
        assert_eq!(p("", "NE", Outcome::Accepted), both(Some(CA), None));
        assert_eq!(
            h("", "SU").ack_mode,
            AckMode::Enhanced {
                accept: AckCondition::Always,
                application: AckCondition::SuccessOnly
            }
        );
    }

    #[test]
    fn error_code_numbers() {
        assert_eq!(ErrorCode::SegmentSequenceError.code(), 100);
        assert_eq!(ErrorCode::RequiredFieldMissing.code(), 101);
        assert_eq!(ErrorCode::DataTypeError.code(), 102);
        assert_eq!(ErrorCode::TableValueNotFound.code(), 103);
        assert_eq!(ErrorCode::UnsupportedMessageType.code(), 200);
        assert_eq!(ErrorCode::UnsupportedEventCode.code(), 201);
        assert_eq!(ErrorCode::UnsupportedProcessingId.code(), 202);
        assert_eq!(ErrorCode::UnsupportedVersionId.code(), 203);
        assert_eq!(ErrorCode::UnknownKeyIdentifier.code(), 204);
        assert_eq!(ErrorCode::DuplicateKeyIdentifier.code(), 205);
        assert_eq!(ErrorCode::ApplicationRecordLocked.code(), 206);
        assert_eq!(ErrorCode::ApplicationInternalError.code(), 207);
        assert_eq!(
            ParseError::UnsupportedCharset.error_code(),
            ErrorCode::TableValueNotFound
        );
        assert_eq!(
            ParseError::EmptySegment { segment: 2 }.error_code(),
            ErrorCode::SegmentSequenceError
        );
    }

    #[test]
    fn crates_md_6_no_double_escaping() {
        // hl7-parser's MessageBuilder turns `\T\` into `\E\T\E\`; ours escapes decoded text once.
        let h = header("MSH|^~\\&|LAB\\T\\CO|B|C|D|1||ORU^R01|ID\\T\\1|P|2.5");
        assert_eq!(h.sending_application.namespace_id, "LAB&CO");
        let ack = build_ack(&h, AckCode::AA, None, "C", "1");
        let text = String::from_utf8(ack.clone()).unwrap();
        assert!(text.contains("|LAB\\T\\CO|"), "{text}");
        assert!(text.contains("MSA|AA|ID\\T\\1"), "{text}");
        assert!(!text.contains("\\E\\"), "{text}");
        assert_eq!(parse(&ack).unwrap().get("MSA-2"), Some("ID&1"));
    }
}
