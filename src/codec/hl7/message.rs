//! The message tree (message → segment → field → repetition → component → subcomponent) and
//! the guarded parser that builds it.
//!
//! The structure is split by hl7-parser 0.3 (the design card's HL7 crate), behind a guard of
//! our own that rejects what that crate gets wrong (see the project's notes on it):
//! - before it: MSH-1/MSH-2 (exactly four encoding characters, so the 2.7 truncation character
//!   never shifts MSH), `\r` as the only segment separator (a `\n` makes it see one segment),
//!   the MSH-18 character set and every byte valid in it, no control characters, no empty
//!   segment (a blank line makes it stop silently), segment ids, one MSH;
//! - after it: the parse covers every byte and every segment the guard saw, or the message is
//!   refused ([`ParseError::Truncated`]), never silently shortened;
//! - its escape decoder is never used: each subcomponent's raw text is decoded by
//!   [`super::escape`], on character boundaries, with positions in errors.

use super::charset::Charset;
use super::escape::{self, Delimiters, EscapeError};
use super::header::MessageHeader;
use super::location::{Location, SegmentId};
use super::path::Path;
use compact_str::CompactString;
use smallvec::{SmallVec, smallvec};

/// Why bytes are not an acceptable HL7 v2 message. Names positions, never content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("message does not start with an MSH segment")]
    MissingMsh,
    #[error("MSH-1 field separator is not a usable delimiter")]
    BadFieldSeparator,
    #[error(
        "MSH-2 must hold exactly 4 distinct encoding characters (component, repetition, escape, subcomponent)"
    )]
    BadEncodingCharacters,
    #[error(
        "MSH-2 holds a 5th encoding character (the HL7 2.7 truncation character), which is not supported"
    )]
    TruncationCharacter,
    #[error("MSH-18 names a character set that is not supported (ASCII, 8859/1, UNICODE UTF-8)")]
    UnsupportedCharset,
    #[error(
        "wrong segment separator: line feed after segment {segment}; HL7 requires a carriage return only"
    )]
    WrongSegmentSeparator { segment: usize },
    #[error("byte not valid in the declared character set at {location}")]
    InvalidByte { location: Location },
    #[error("control character at {location}")]
    ControlCharacter { location: Location },
    #[error("empty segment (blank line) at segment {segment}")]
    EmptySegment { segment: usize },
    #[error(
        "segment {segment} does not start with a valid segment id (3 upper-case letters or digits followed by the field separator)"
    )]
    BadSegmentId { segment: usize },
    #[error(
        "segment {segment} is a second MSH (batches and concatenated messages are not accepted)"
    )]
    UnexpectedMsh { segment: usize },
    #[error("malformed escape sequence at {location}")]
    MalformedEscape { location: Location },
    #[error("escape sequence at {location} encodes bytes not valid in the declared character set")]
    InvalidEscapedBytes { location: Location },
    #[error("required field {location} is empty")]
    RequiredFieldMissing { location: Location },
    #[error("field {location} holds a value not in its HL7 table")]
    InvalidTableValue { location: Location },
    #[error("segment {segment} could not be split into fields (the message would be cut short)")]
    Truncated { segment: usize },
}

impl ParseError {
    /// Where the problem is, when it is one place.
    pub fn location(&self) -> Option<Location> {
        match *self {
            ParseError::Empty | ParseError::MissingMsh => None,
            ParseError::BadFieldSeparator => Some(Location::msh(1)),
            ParseError::BadEncodingCharacters | ParseError::TruncationCharacter => {
                Some(Location::msh(2))
            }
            ParseError::UnsupportedCharset => Some(Location::msh(18)),
            ParseError::WrongSegmentSeparator { segment }
            | ParseError::EmptySegment { segment }
            | ParseError::BadSegmentId { segment }
            | ParseError::UnexpectedMsh { segment }
            | ParseError::Truncated { segment } => Some(Location::segment(segment, None, 0)),
            ParseError::InvalidByte { location }
            | ParseError::ControlCharacter { location }
            | ParseError::MalformedEscape { location }
            | ParseError::InvalidEscapedBytes { location }
            | ParseError::RequiredFieldMissing { location }
            | ParseError::InvalidTableValue { location } => Some(location),
        }
    }
}

/// A decoded leaf: short texts (up to 24 bytes, nearly every HL7 leaf) are held inline.
type Leaf = CompactString;

/// One subcomponent-split unit: a component of one repetition of a field. Each level of the
/// tree holds its first (usually its only) element inline, so that a simple field costs no
/// allocation of its own.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Component {
    subcomponents: SmallVec<[Leaf; 1]>,
}

impl Component {
    /// Subcomponent `n` (1-based), decoded.
    pub fn subcomponent(&self, n: usize) -> Option<&str> {
        n.checked_sub(1)
            .and_then(|i| self.subcomponents.get(i))
            .map(Leaf::as_str)
    }

    pub fn subcomponents(&self) -> impl Iterator<Item = &str> {
        self.subcomponents.iter().map(Leaf::as_str)
    }

    /// The first subcomponent ("" when empty).
    pub fn text(&self) -> &str {
        self.subcomponent(1).unwrap_or("")
    }
}

/// One repetition of a field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Repetition {
    components: SmallVec<[Component; 1]>,
}

impl Repetition {
    /// Component `n` (1-based).
    pub fn component(&self, n: usize) -> Option<&Component> {
        n.checked_sub(1).and_then(|i| self.components.get(i))
    }

    pub fn components(&self) -> impl Iterator<Item = &Component> {
        self.components.iter()
    }

    /// The text of component `n`, first subcomponent ("" when absent).
    pub fn component_text(&self, n: usize) -> &str {
        self.component(n).map(Component::text).unwrap_or("")
    }
}

/// A field: zero repetitions when it is empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Field {
    repetitions: SmallVec<[Repetition; 1]>,
}

impl Field {
    fn literal(text: &str) -> Field {
        Field {
            repetitions: smallvec![Repetition {
                components: smallvec![Component {
                    subcomponents: smallvec![Leaf::new(text)],
                }],
            }],
        }
    }

    pub fn is_empty(&self) -> bool {
        self.repetitions.is_empty()
    }

    /// Repetition `n` (1-based).
    pub fn repetition(&self, n: usize) -> Option<&Repetition> {
        n.checked_sub(1).and_then(|i| self.repetitions.get(i))
    }

    pub fn repetitions(&self) -> impl Iterator<Item = &Repetition> {
        self.repetitions.iter()
    }

    /// Component `n` of the first repetition.
    pub fn component(&self, n: usize) -> Option<&Component> {
        self.repetition(1).and_then(|r| r.component(n))
    }

    /// The text of component `n` of the first repetition ("" when absent).
    pub fn component_text(&self, n: usize) -> &str {
        self.component(n).map(Component::text).unwrap_or("")
    }

    /// First repetition, first component, first subcomponent ("" when empty).
    pub fn text(&self) -> &str {
        self.component_text(1)
    }
}

/// One segment. Fields are numbered from 1 as in HL7; for MSH, field 1 is the field separator
/// and field 2 the encoding characters, both kept literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    id: SegmentId,
    index: usize,
    seq: usize,
    fields: Vec<Field>,
}

impl Segment {
    pub fn id(&self) -> &str {
        self.id.as_str()
    }

    pub fn segment_id(&self) -> SegmentId {
        self.id
    }

    /// Position in the message (MSH is 1).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Occurrence of this segment id in the message (the first OBX is 1).
    pub fn seq(&self) -> usize {
        self.seq
    }

    /// Where this segment is, for error reports.
    pub fn location(&self) -> Location {
        Location::segment(self.index, Some(self.id), self.seq)
    }

    /// Field `n` (1-based); `None` beyond the last field sent (HL7 treats it as empty).
    pub fn field(&self, n: usize) -> Option<&Field> {
        n.checked_sub(1).and_then(|i| self.fields.get(i))
    }

    /// The number of fields sent.
    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    pub fn fields(&self) -> impl Iterator<Item = &Field> {
        self.fields.iter()
    }

    /// Field `n`, first repetition, first component, first subcomponent ("" when absent).
    pub fn text(&self, n: usize) -> &str {
        self.field(n).map(Field::text).unwrap_or("")
    }

    /// Component `c` of field `n` (first repetition, first subcomponent; "" when absent).
    pub fn component_text(&self, n: usize, c: usize) -> &str {
        self.field(n).map(|f| f.component_text(c)).unwrap_or("")
    }
}

/// A parsed, validated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    delimiters: Delimiters,
    charset: Charset,
    segments: Vec<Segment>,
    header: MessageHeader,
}

impl Message {
    pub fn delimiters(&self) -> &Delimiters {
        &self.delimiters
    }

    pub fn charset(&self) -> Charset {
        self.charset
    }

    /// The MSH view.
    pub fn header(&self) -> &MessageHeader {
        &self.header
    }

    /// Every segment, MSH first.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// The first segment with this id.
    pub fn segment(&self, id: &str) -> Option<&Segment> {
        self.segments.iter().find(|s| s.id() == id)
    }

    /// Occurrence `n` (1-based) of segment `id`.
    pub fn segment_n(&self, id: &str, n: usize) -> Option<&Segment> {
        let skip = n.checked_sub(1)?;
        self.segments.iter().filter(|s| s.id() == id).nth(skip)
    }

    /// Every segment with this id, in order.
    pub fn segments_named<'a>(&'a self, id: &'a str) -> impl Iterator<Item = &'a Segment> + 'a {
        self.segments.iter().filter(move |s| s.id() == id)
    }

    /// Decoded text at an HL7 path such as `OBR-3.1`, `SPM-2.1`, `MSH-10` or `OBX(2)-5`.
    /// A path that stops above a leaf addresses its first component/subcomponent (as HAPI's
    /// Terser does): `MSH-9` on `ORU^R01` is `ORU`. `None` when the path is not valid or the
    /// segment occurrence is absent; `Some("")` when the segment is there but the position is
    /// empty or was not sent.
    pub fn get(&self, path: &str) -> Option<&str> {
        let p: Path = path.parse().ok()?;
        self.get_path(&p)
    }

    /// [`Message::get`] with a parsed path.
    pub fn get_path(&self, p: &Path) -> Option<&str> {
        let seg = self.segment_n(p.segment.as_str(), p.occurrence)?;
        Some(
            seg.field(p.field)
                .and_then(|f| f.repetition(p.repetition))
                .and_then(|r| r.component(p.component))
                .and_then(|c| c.subcomponent(p.subcomponent))
                .unwrap_or(""),
        )
    }
}

fn usable_delimiter(b: u8) -> bool {
    b.is_ascii_graphic() && !b.is_ascii_alphanumeric()
}

/// Finds the delimiters in MSH-1/MSH-2 (bytes, before any charset decoding; all are ASCII).
fn read_delimiters(bytes: &[u8]) -> Result<Delimiters, ParseError> {
    if bytes.is_empty() {
        return Err(ParseError::Empty);
    }
    if !bytes.starts_with(b"MSH") {
        return Err(ParseError::MissingMsh);
    }
    let fs = *bytes.get(3).ok_or(ParseError::BadFieldSeparator)?;
    if !usable_delimiter(fs) {
        return Err(ParseError::BadFieldSeparator);
    }
    let rest = &bytes[4..];
    let len = rest
        .iter()
        .position(|&b| b == fs || b == b'\r' || b == b'\n')
        .unwrap_or(rest.len());
    let enc = &rest[..len];
    match enc.len() {
        4 => {}
        5 if enc[..4].iter().all(|&b| usable_delimiter(b)) => {
            return Err(ParseError::TruncationCharacter);
        }
        _ => return Err(ParseError::BadEncodingCharacters),
    }
    let all = [fs, enc[0], enc[1], enc[2], enc[3]];
    let distinct = all
        .iter()
        .enumerate()
        .all(|(i, a)| all[i + 1..].iter().all(|b| a != b));
    if !distinct || !enc.iter().all(|&b| usable_delimiter(b)) {
        return Err(ParseError::BadEncodingCharacters);
    }
    Ok(Delimiters {
        field: char::from(fs),
        component: char::from(enc[0]),
        repetition: char::from(enc[1]),
        escape: char::from(enc[2]),
        subcomponent: char::from(enc[3]),
    })
}

/// Byte offset → position (segment index and field number), computed on the raw bytes.
fn locate(bytes: &[u8], pos: usize, fs: u8) -> Location {
    let before = &bytes[..pos.min(bytes.len())];
    let seg_start = before
        .iter()
        .rposition(|&b| b == b'\r')
        .map_or(0, |i| i + 1);
    let segment_index = 1 + before.iter().filter(|&&b| b == b'\r').count();
    let seg = &bytes[seg_start..];
    let id = seg.get(..3).and_then(SegmentId::from_bytes);
    let segment_seq = id.map_or(0, |id| {
        1 + before[..seg_start]
            .split(|&b| b == b'\r')
            .filter(|s| s.get(..3) == Some(id.as_str().as_bytes()))
            .count()
    });
    let seps = before[seg_start..].iter().filter(|&&b| b == fs).count();
    // In MSH the first separator is MSH-1 itself, so the field after n separators is n + 1;
    // elsewhere it is n.
    let field = if id == Some(SegmentId::MSH) && segment_index == 1 {
        seps + 1
    } else {
        seps
    };
    Location {
        segment_index,
        segment_id: id,
        segment_seq,
        field,
        ..Location::default()
    }
}

/// The MSH-18 bytes, by a byte scan of the first segment (delimiters are ASCII, and ASCII bytes
/// never occur inside a UTF-8 multi-byte sequence, so the scan is sound for all three charsets).
fn msh18(bytes: &[u8], fs: u8) -> &[u8] {
    let end = bytes
        .iter()
        .position(|&b| b == b'\r')
        .unwrap_or(bytes.len());
    // Split index k holds MSH-(k+1): index 0 is "MSH", index 1 MSH-2, index 17 MSH-18.
    bytes[..end].split(|&b| b == fs).nth(17).unwrap_or(b"")
}

/// Parses one HL7 v2 message. Pure: no I/O, never panics, never truncates.
///
/// Requirements beyond hl7-parser: MSH first with exactly 4 encoding characters; segments
/// separated by `\r` only (one trailing `\r` allowed; any line feed is rejected); no empty
/// segments; segment ids of 3 upper-case letters/digits; no second MSH; every byte valid in the
/// MSH-18 character set and no control characters other than the segment separator; every escape
/// well formed; MSH-9.1, MSH-10, MSH-11.1, MSH-12.1 present; MSH-15/16 from table 0155.
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    let delimiters = read_delimiters(bytes)?;
    let fs = delimiters.field as u8;

    if let Some(lf) = bytes.iter().position(|&b| b == b'\n') {
        let crs = bytes[..lf].iter().filter(|&&b| b == b'\r').count();
        let segment = if lf > 0 && bytes[lf - 1] == b'\r' {
            crs
        } else {
            crs + 1
        };
        return Err(ParseError::WrongSegmentSeparator { segment });
    }

    let charset = Charset::from_msh18(msh18(bytes, fs)).ok_or(ParseError::UnsupportedCharset)?;
    let text = charset
        .decode(bytes)
        .map_err(|pos| ParseError::InvalidByte {
            location: locate(bytes, pos, fs),
        })?;
    if let Some((pos, _)) = text
        .char_indices()
        .find(|&(_, c)| c != '\r' && c.is_control())
    {
        // `pos` is a char offset in `text`; map it to the raw byte offset for locating.
        let raw_pos = match charset {
            Charset::Utf8 => pos,
            Charset::Ascii | Charset::Latin1 => text[..pos].chars().count(),
        };
        return Err(ParseError::ControlCharacter {
            location: locate(bytes, raw_pos, fs),
        });
    }

    let body = text.strip_suffix('\r').unwrap_or(&text);
    let guarded = guard_segments(body, &delimiters)?;
    let segments = split_with_hl7_parser(body, &guarded, &delimiters, charset)?;
    let header = MessageHeader::from_msh(&segments[0], charset)?;
    Ok(Message {
        delimiters,
        charset,
        segments,
        header,
    })
}

/// One segment as the guard saw it: id, position in the message, occurrence of its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct GuardedSegment {
    id: SegmentId,
    index: usize,
    seq: usize,
    /// Sent as its id alone (no fields): hl7-parser needs a field separator after every id.
    bare: bool,
}

/// The guard over the segments of `body` (the decoded message without its trailing `\r`):
/// none empty, each a valid id followed by the field separator, MSH first and only there.
fn guard_segments(body: &str, delimiters: &Delimiters) -> Result<Vec<GuardedSegment>, ParseError> {
    let mut out: Vec<GuardedSegment> = Vec::new();
    let mut seen: Vec<(SegmentId, usize)> = Vec::new();
    for (i, raw) in body.split('\r').enumerate() {
        let index = i + 1;
        if raw.is_empty() {
            return Err(ParseError::EmptySegment { segment: index });
        }
        let id = raw
            .get(..3)
            .and_then(SegmentId::new)
            .ok_or(ParseError::BadSegmentId { segment: index })?;
        let after_id = &raw[3..];
        if !(after_id.is_empty() || after_id.starts_with(delimiters.field)) {
            return Err(ParseError::BadSegmentId { segment: index });
        }
        if id == SegmentId::MSH && index != 1 {
            return Err(ParseError::UnexpectedMsh { segment: index });
        }
        let seq = match seen.iter_mut().find(|(s, _)| *s == id) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                seen.push((id, 1));
                1
            }
        };
        out.push(GuardedSegment {
            id,
            index,
            seq,
            bare: after_id.is_empty(),
        });
    }
    Ok(out)
}

/// Splits the guarded `body` with hl7-parser and builds our tree from the raw text of each
/// subcomponent (escapes decoded by us). Refuses a parse that does not cover the whole body or
/// every guarded segment.
fn split_with_hl7_parser(
    body: &str,
    guarded: &[GuardedSegment],
    d: &Delimiters,
    charset: Charset,
) -> Result<Vec<Segment>, ParseError> {
    // A segment sent as its id alone gets a field separator for hl7-parser (which would stop
    // there); its one empty field is dropped below.
    let padded;
    let input = if guarded.iter().any(|g| g.bare) {
        padded = body
            .split('\r')
            .map(|raw| {
                if raw.len() == 3 {
                    format!("{raw}{}", d.field)
                } else {
                    raw.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\r");
        padded.as_str()
    } else {
        body
    };
    let parsed =
        hl7_parser::Message::parse(input).map_err(|_| ParseError::Truncated { segment: 1 })?;
    if parsed.segments.len() != guarded.len() || parsed.raw_value().len() != input.len() {
        let segment = parsed.segments.len().min(guarded.len()) + 1;
        return Err(ParseError::Truncated { segment });
    }
    let mut segments = Vec::with_capacity(guarded.len());
    for (theirs, g) in parsed.segments.iter().zip(guarded) {
        if theirs.name != g.id.as_str() {
            return Err(ParseError::Truncated { segment: g.index });
        }
        let here = Location::segment(g.index, Some(g.id), g.seq);
        let mut fields = Vec::with_capacity(theirs.fields.len());
        let (first_number, sent) = if g.index == 1 {
            // MSH-1 and MSH-2 are kept literally (checked by the guard); MSH-3 follows.
            fields.push(Field::literal(d.field.encode_utf8(&mut [0; 4])));
            fields.push(Field::literal(&d.encoding_characters()));
            // "MSH|^~\&" with nothing after it has no MSH-3 (hl7-parser reports an empty one).
            let rest = if theirs.raw_value().len() > 8 {
                theirs.fields.get(2..).unwrap_or(&[])
            } else {
                &[]
            };
            (3, rest)
        } else if g.bare {
            (1, &[][..])
        } else {
            (1, &theirs.fields[..])
        };
        for (k, f) in sent.iter().enumerate() {
            fields.push(convert_field(
                f,
                here.at_field(first_number + k),
                d,
                charset,
            )?);
        }
        segments.push(Segment {
            id: g.id,
            index: g.index,
            seq: g.seq,
            fields,
        });
    }
    Ok(segments)
}

/// One field of hl7-parser's tree as ours: empty when its raw text is empty; every
/// subcomponent's raw text decoded by our escape decoder.
fn convert_field(
    f: &hl7_parser::message::Field<'_>,
    loc: Location,
    d: &Delimiters,
    charset: Charset,
) -> Result<Field, ParseError> {
    if f.raw_value().is_empty() {
        return Ok(Field::default());
    }
    let mut repetitions = SmallVec::with_capacity(f.repeats.len());
    for (r, rep) in f.repeats.iter().enumerate() {
        let mut components = SmallVec::with_capacity(rep.components.len());
        for (c, comp) in rep.components.iter().enumerate() {
            let mut subcomponents = SmallVec::with_capacity(comp.subcomponents.len());
            for (s, sub) in comp.subcomponents.iter().enumerate() {
                subcomponents.push(decode_at(sub.raw_value(), loc, r, c, s, d, charset)?);
            }
            components.push(Component { subcomponents });
        }
        repetitions.push(Repetition { components });
    }
    Ok(Field { repetitions })
}

/// Decodes one subcomponent's escapes; errors name the position (never the content).
fn decode_at(
    raw: &str,
    loc: Location,
    r: usize,
    c: usize,
    s: usize,
    d: &Delimiters,
    charset: Charset,
) -> Result<Leaf, ParseError> {
    escape::decode(raw, d, charset)
        .map(Leaf::from)
        .map_err(|e| {
            let location = Location {
                repetition: r + 1,
                component: c + 1,
                subcomponent: s + 1,
                ..loc
            };
            match e {
                EscapeError::InvalidHexBytes => ParseError::InvalidEscapedBytes { location },
                EscapeError::Unterminated | EscapeError::Malformed => {
                    ParseError::MalformedEscape { location }
                }
            }
        })
}

/// The splitter custodian used before hl7-parser took the job, kept as the oracle of the
/// differential tests: the same guard, then `str::split` at each level.
#[cfg(test)]
pub(crate) mod own_splitter {
    use super::*;

    pub(crate) fn parse_own(bytes: &[u8]) -> Result<Message, ParseError> {
        let delimiters = read_delimiters(bytes)?;
        let fs = delimiters.field as u8;
        if bytes.contains(&b'\n') {
            // Same answer as `parse` (the guard runs before either splitter).
            return parse(bytes);
        }
        let charset =
            Charset::from_msh18(msh18(bytes, fs)).ok_or(ParseError::UnsupportedCharset)?;
        let text = match charset.decode(bytes) {
            Ok(t) => t,
            Err(_) => return parse(bytes),
        };
        if text.chars().any(|c| c != '\r' && c.is_control()) {
            return parse(bytes);
        }
        let body = text.strip_suffix('\r').unwrap_or(&text);
        let guarded = guard_segments(body, &delimiters)?;
        let mut segments = Vec::new();
        for (raw, g) in body.split('\r').zip(&guarded) {
            let here = Location::segment(g.index, Some(g.id), g.seq);
            let after_id = &raw[3..];
            let fields = if g.index == 1 {
                let rest = raw.get(8..).unwrap_or("");
                let mut fields = vec![
                    Field::literal(delimiters.field.encode_utf8(&mut [0; 4])),
                    Field::literal(&delimiters.encoding_characters()),
                ];
                if let Some(rest) = rest.strip_prefix(delimiters.field) {
                    split_fields(rest, 3, here, &delimiters, charset, &mut fields)?;
                }
                fields
            } else {
                let mut fields = Vec::new();
                if let Some(rest) = after_id.strip_prefix(delimiters.field) {
                    split_fields(rest, 1, here, &delimiters, charset, &mut fields)?;
                }
                fields
            };
            segments.push(Segment {
                id: g.id,
                index: g.index,
                seq: g.seq,
                fields,
            });
        }
        let header = MessageHeader::from_msh(&segments[0], charset)?;
        Ok(Message {
            delimiters,
            charset,
            segments,
            header,
        })
    }

    fn split_fields(
        rest: &str,
        first_number: usize,
        here: Location,
        d: &Delimiters,
        charset: Charset,
        out: &mut Vec<Field>,
    ) -> Result<(), ParseError> {
        for (k, raw_field) in rest.split(d.field).enumerate() {
            let loc = here.at_field(first_number + k);
            out.push(parse_field(raw_field, loc, d, charset)?);
        }
        Ok(())
    }

    fn parse_field(
        raw: &str,
        loc: Location,
        d: &Delimiters,
        charset: Charset,
    ) -> Result<Field, ParseError> {
        if raw.is_empty() {
            return Ok(Field::default());
        }
        let mut repetitions = SmallVec::new();
        for (r, raw_rep) in raw.split(d.repetition).enumerate() {
            let mut components = SmallVec::new();
            for (c, raw_comp) in raw_rep.split(d.component).enumerate() {
                let mut subcomponents = SmallVec::new();
                for (s, raw_sub) in raw_comp.split(d.subcomponent).enumerate() {
                    subcomponents.push(decode_at(raw_sub, loc, r, c, s, d, charset)?);
                }
                components.push(Component { subcomponents });
            }
            repetitions.push(Repetition { components });
        }
        Ok(Field { repetitions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSH: &str =
        "MSH|^~\\&|LAB-IA|TOXLAB|CUSTODIAN|TOXLAB|20240315101500||ORU^R01^ORU_R01|CTRL-1|P|2.5.1";

    fn msg(segments: &[&str]) -> Vec<u8> {
        let mut s = segments.join("\r");
        s.push('\r');
        s.into_bytes()
    }

    fn with_msh(rest: &[&str]) -> Vec<u8> {
        let mut all = vec![MSH];
        all.extend_from_slice(rest);
        msg(&all)
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/tests/data/hl7/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// hl7-parser behind the guard against the splitter of our own it replaced: the same
    /// answer, or a refusal by the guard (never a different message, never one accepted that
    /// the old splitter refused).
    fn differential(name: &str, bytes: &[u8]) -> bool {
        let theirs = parse(bytes);
        let ours = own_splitter::parse_own(bytes);
        match (&theirs, &ours) {
            (a, b) if a == b => true,
            (Err(_), _) => false,
            (Ok(_), _) => {
                panic!("{name}: hl7-parser accepted what the old splitter did not: {ours:?}")
            }
        }
    }

    #[test]
    fn hl7_parser_agrees_with_the_old_splitter_on_fixtures_and_corpora() {
        let root = env!("CARGO_MANIFEST_DIR");
        let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
        for dir in [
            "tests/data/hl7",
            "tests/fuzz/corpus/hl7_parse",
            "tests/fuzz/corpus/hl7_extract",
        ] {
            for entry in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "toml") {
                    continue;
                }
                inputs.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
        assert!(inputs.len() >= 20, "{} inputs", inputs.len());
        let mut agreed = 0;
        for (name, bytes) in &inputs {
            // Every prefix too: a cut message must be refused alike or agree.
            for cut in [bytes.len(), bytes.len() / 2, bytes.len().saturating_sub(1)] {
                if differential(name, &bytes[..cut]) {
                    agreed += 1;
                }
            }
        }
        assert_eq!(
            agreed,
            inputs.len() * 3,
            "every disagreement must be a guard refusal; none expected"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]
        /// Random segments of random fields (delimiters, escapes, non-ASCII text, empty
        /// fields, bare segment ids) after a valid MSH: both splitters build the same message.
        #[test]
        fn hl7_parser_agrees_with_the_old_splitter_on_generated_messages(
            segs in proptest::collection::vec(
                ("(OBX|NTE|OBR|PID|ZB1)", proptest::collection::vec("[a-zA-Z0-9 .^~&ÄéЖ€-]{0,12}|\\\\[FSTRE]\\\\|\\\\X4[1-9]\\\\", 0..8)),
                0..6
            ),
            trailing_cr in proptest::bool::ANY,
        ) {
            let mut text = String::from("MSH|^~\\&|A|B|C|D|20240101||ORU^R01|C-1|P|2.5.1|||||UNICODE UTF-8");
            for (id, fields) in &segs {
                text.push('\r');
                text.push_str(id);
                for f in fields {
                    text.push('|');
                    text.push_str(f);
                }
            }
            if trailing_cr {
                text.push('\r');
            }
            let bytes = text.into_bytes();
            let theirs = parse(&bytes);
            let ours = own_splitter::parse_own(&bytes);
            proptest::prop_assert_eq!(&theirs, &ours);
        }
    }

    #[test]
    fn parses_structure_and_positions() {
        let m = parse(&with_msh(&[
            "PID|1",
            "OBR|1||0012345^TOXLAB|DAT9^Screen^L",
            "OBX|1|NM|THC50^THC^L||12|ng/mL^^UCUM|||||F",
            "OBX|2|NM|COC150^COC^L||0~1|ng/mL||||||a&b&c",
        ]))
        .unwrap();
        assert_eq!(m.segments().len(), 5);
        assert_eq!(m.charset(), Charset::Ascii);
        let ids: Vec<&str> = m.segments().iter().map(Segment::id).collect();
        assert_eq!(ids, ["MSH", "PID", "OBR", "OBX", "OBX"]);
        assert_eq!(m.get("MSH-1"), Some("|"));
        assert_eq!(m.get("MSH-2"), Some("^~\\&"));
        assert_eq!(m.get("MSH-3"), Some("LAB-IA"));
        assert_eq!(m.get("MSH-9"), Some("ORU"));
        assert_eq!(m.get("MSH-9.2"), Some("R01"));
        assert_eq!(m.get("MSH-9.3"), Some("ORU_R01"));
        assert_eq!(m.get("MSH-10"), Some("CTRL-1"));
        assert_eq!(m.get("MSH-12"), Some("2.5.1"));
        assert_eq!(m.get("MSH-18"), Some(""));
        assert_eq!(m.get("OBR-3.1"), Some("0012345"));
        assert_eq!(m.get("OBR-3.2"), Some("TOXLAB"));
        assert_eq!(m.get("OBR-3.9"), Some(""));
        assert_eq!(m.get("OBR-99"), Some(""));
        assert_eq!(m.get("SPM-2.1"), None);
        assert_eq!(m.get("not a path"), None);
        assert_eq!(m.get("OBX(2)-3.1"), Some("COC150"));
        assert_eq!(m.get("OBX(2)-5(2)"), Some("1"));
        assert_eq!(m.get("OBX(2)-12.1.3"), Some("c"));
        assert_eq!(m.get("OBX(3)-3"), None);

        let obx2 = m.segment_n("OBX", 2).unwrap();
        assert_eq!((obx2.index(), obx2.seq()), (5, 2));
        assert_eq!(obx2.location().path(), "OBX(2)");
        let f5 = obx2.field(5).unwrap();
        assert_eq!(f5.repetitions().count(), 2);
        assert_eq!(f5.repetition(2).unwrap().component_text(1), "1");
        let f12 = obx2.field(12).unwrap();
        let subs: Vec<&str> = f12.component(1).unwrap().subcomponents().collect();
        assert_eq!(subs, ["a", "b", "c"]);
        assert!(obx2.field(4).unwrap().is_empty());
        assert_eq!(obx2.field(0), None);
        assert_eq!(obx2.field(13), None);
        assert_eq!(obx2.field_count(), 12);
        let obx1 = m.segment("OBX").unwrap();
        assert_eq!(obx1.component_text(3, 2), "THC");
        assert_eq!(obx1.text(11), "F");
        assert_eq!(m.segments_named("OBX").count(), 2);
        assert_eq!(m.segment("PID").unwrap().field_count(), 1);
    }

    #[test]
    fn fixtures_parse() {
        for name in [
            "oru-screen.hl7",
            "oru-validity.hl7",
            "oru-confirmation.hl7",
            "oru-unmapped-code.hl7",
        ] {
            let m = parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(m.header().message_type, "ORU", "{name}");
        }
        let v = parse(&fixture("oru-validity.hl7")).unwrap();
        assert_eq!(v.charset(), Charset::Latin1);
        assert_eq!(v.get("OBR-4.2"), Some("Specimen validity&adulterant panel"));
        assert_eq!(
            v.get("NTE-3"),
            Some("Präzision geprüft: Kalibrator 2024-03 | Kontrolle OK")
        );
    }

    #[test]
    fn agrees_with_hl7_parser_on_sound_input() {
        // hl7-parser is sound for raw structure on well-formed ASCII input without escapes;
        // there both must see the same segments and field values.
        let bytes = fixture("oru-screen.hl7");
        let text = std::str::from_utf8(&bytes).unwrap();
        let theirs = hl7_parser::Message::parse(text).unwrap();
        let ours = parse(&bytes).unwrap();
        assert_eq!(theirs.segments().count(), ours.segments().len());
        for (q, expect) in [
            ("OBR.3.1", "OBR-3.1"),
            ("OBX.5", "OBX-5"),
            ("MSH.10", "MSH-10"),
            ("MSH.9.2", "MSH-9.2"),
        ] {
            let raw = theirs.query(q).map(|v| v.raw_value().to_string());
            assert_eq!(raw.as_deref(), ours.get(expect), "{q}");
        }
    }

    #[test]
    fn trailing_cr_is_optional_but_only_one() {
        let mut b = with_msh(&["PID|1"]);
        assert_eq!(parse(&b).unwrap().segments().len(), 2);
        b.pop();
        assert_eq!(parse(&b).unwrap().segments().len(), 2);
        b.extend_from_slice(b"\r\r");
        assert_eq!(parse(&b), Err(ParseError::EmptySegment { segment: 3 }));
    }

    #[test]
    fn crates_md_1_blank_line_is_rejected_not_truncated() {
        let b = with_msh(&["PID|1", "", "OBX|1|NM|X||1|||||F"]);
        assert_eq!(parse(&b), Err(ParseError::EmptySegment { segment: 3 }));
        assert_eq!(
            parse(&fixture("malformed-blank-line.hl7")),
            Err(ParseError::EmptySegment { segment: 6 })
        );
    }

    #[test]
    fn crates_md_2_line_feed_separators_rejected() {
        assert_eq!(
            parse(&fixture("malformed-lf.hl7")),
            Err(ParseError::WrongSegmentSeparator { segment: 1 })
        );
        assert_eq!(
            parse(&fixture("malformed-crlf.hl7")),
            Err(ParseError::WrongSegmentSeparator { segment: 1 })
        );
        let b = format!("{MSH}\rPID|1\nOBX|1\r").into_bytes();
        assert_eq!(
            parse(&b),
            Err(ParseError::WrongSegmentSeparator { segment: 2 })
        );
        let b = format!("{MSH}\rPID|1\r\n").into_bytes();
        assert_eq!(
            parse(&b),
            Err(ParseError::WrongSegmentSeparator { segment: 2 })
        );
        assert!(
            ParseError::WrongSegmentSeparator { segment: 2 }
                .to_string()
                .contains("wrong segment separator")
        );
    }

    #[test]
    fn crates_md_3_escape_panic_input_is_an_error() {
        let b = format!("{MSH}||||||UNICODE UTF-8\rNTE|1||x\\ü\\y\r").into_bytes();
        let e = parse(&b).unwrap_err();
        match e {
            ParseError::MalformedEscape { location } => {
                assert_eq!(location.path(), "NTE-3.1.1");
                assert_eq!(location.segment_index, 2);
            }
            other => panic!("{other:?}"),
        }
        let b = format!("{MSH}||||||UNICODE UTF-8\rNTE|1||ü\\T\\ö\\F\\ß\r").into_bytes();
        assert_eq!(parse(&b).unwrap().get("NTE-3"), Some("ü&ö|ß"));
    }

    #[test]
    fn crates_md_4_hex_and_highlight_escapes_decoded() {
        let b = with_msh(&["NTE|1||a\\X0D0A\\b\\H\\c\\N\\d\\X41\\"]);
        assert_eq!(parse(&b).unwrap().get("NTE-3"), Some("a\r\nbcdA"));
    }

    #[test]
    fn crates_md_5_truncation_character_rejected() {
        assert_eq!(
            parse(&fixture("malformed-truncation-char.hl7")),
            Err(ParseError::TruncationCharacter)
        );
        assert_eq!(
            parse(b"MSH|^~\\&#|A|B|C|D|1||ORU^R01|1|P|2.7\r"),
            Err(ParseError::TruncationCharacter)
        );
    }

    #[test]
    fn encoding_characters() {
        for bad in [
            &b"MSH|^~\\|A"[..],
            b"MSH|^~\\&&#|A",
            b"MSH|^~\\^|A",
            b"MSH|^~\\a|A",
            b"MSH|",
            b"MSH|^~\\&",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(
                matches!(
                    e,
                    ParseError::BadEncodingCharacters | ParseError::RequiredFieldMissing { .. }
                ),
                "{bad:?}: {e:?}"
            );
        }
        assert_eq!(parse(b"MSH|^~\\|A"), Err(ParseError::BadEncodingCharacters));
        assert_eq!(
            parse(b"MSH^^~\\&^A"),
            Err(ParseError::BadEncodingCharacters)
        );
        assert_eq!(parse(b"MSHA^~\\&"), Err(ParseError::BadFieldSeparator));
        assert_eq!(parse(b"MSH"), Err(ParseError::BadFieldSeparator));
        assert_eq!(parse(b"MSH ^~\\&"), Err(ParseError::BadFieldSeparator));
        assert_eq!(parse(b"MSH\r"), Err(ParseError::BadFieldSeparator));
        // Custom delimiters (HL7 allows them) are honoured.
        let m = parse(b"MSH#!*/%#A#B#C#D#1##ORU!R01#9#P#2.5\rOBX#1#NM#X!Y##1/F/\r").unwrap();
        assert_eq!(m.get("OBX-3.2"), Some("Y"));
        assert_eq!(m.get("OBX-5"), Some("1#"));
        assert_eq!(m.get("MSH-2"), Some("!*/%"));
    }

    #[test]
    fn msh_first_and_only_once() {
        assert_eq!(parse(b""), Err(ParseError::Empty));
        assert_eq!(parse(b"PID|1\rMSH|^~\\&|"), Err(ParseError::MissingMsh));
        assert_eq!(parse(b"\rMSH|^~\\&|"), Err(ParseError::MissingMsh));
        assert_eq!(parse(b"\x0bMSH|^~\\&|"), Err(ParseError::MissingMsh));
        assert_eq!(
            parse("\u{feff}MSH|^~\\&|".as_bytes()),
            Err(ParseError::MissingMsh)
        );
        let twice = with_msh(&["PID|1", MSH]);
        assert_eq!(parse(&twice), Err(ParseError::UnexpectedMsh { segment: 3 }));
    }

    #[test]
    fn segment_ids() {
        for (bad, seg) in [
            ("pid|1", 2),
            ("PI|1", 2),
            ("PIDX|1", 2),
            ("PÏD|1", 2),
            ("P D|1", 2),
        ] {
            let b = format!("{MSH}||||||UNICODE UTF-8\r{bad}\r").into_bytes();
            assert_eq!(
                parse(&b),
                Err(ParseError::BadSegmentId { segment: seg }),
                "{bad}"
            );
        }
        let m = parse(&with_msh(&["ZB1|x", "PID"])).unwrap();
        assert_eq!(m.get("ZB1-1"), Some("x"));
        assert_eq!(m.segment("PID").unwrap().field_count(), 0);
    }

    #[test]
    fn charsets() {
        let base = "MSH|^~\\&|A|B|C|D|1||ORU^R01|9|P|2.5|||||";
        let with = |cs: &str, nte: &[u8]| {
            let mut v = format!("{base}|{cs}\rNTE|1||").into_bytes();
            v.extend_from_slice(nte);
            v.push(b'\r');
            v
        };
        // ASCII (empty or named): bytes above 0x7F rejected, with position.
        for cs in ["", "ASCII"] {
            assert_eq!(parse(&with(cs, b"abc")).unwrap().charset(), Charset::Ascii);
            let e = parse(&with(cs, b"M\xfcller")).unwrap_err();
            match e {
                ParseError::InvalidByte { location } => assert_eq!(location.path(), "NTE-3"),
                other => panic!("{other:?}"),
            }
        }
        let m = parse(&with("8859/1", b"M\xfcller")).unwrap();
        assert_eq!(
            (m.charset(), m.get("NTE-3")),
            (Charset::Latin1, Some("Müller"))
        );
        assert!(matches!(
            parse(&with("8859/1", b"\x80")),
            Err(ParseError::InvalidByte { .. })
        ));
        let m = parse(&with("UNICODE UTF-8", "Müller".as_bytes())).unwrap();
        assert_eq!(
            (m.charset(), m.get("NTE-3")),
            (Charset::Utf8, Some("Müller"))
        );
        assert!(matches!(
            parse(&with("UNICODE UTF-8", b"M\xfcller")),
            Err(ParseError::InvalidByte { .. })
        ));
        for cs in [
            "UTF-8",
            "8859/15",
            "UNICODE",
            "ascii",
            "UNICODE UTF-8~ASCII",
            "ISO IR87",
        ] {
            assert_eq!(
                parse(&with(cs, b"x")),
                Err(ParseError::UnsupportedCharset),
                "{cs}"
            );
        }
        // Escaped bytes must be valid in the declared set too.
        assert!(matches!(
            parse(&with("", b"\\XFC\\")),
            Err(ParseError::InvalidEscapedBytes { .. })
        ));
        assert_eq!(
            parse(&with("8859/1", b"\\XFC\\")).unwrap().get("NTE-3"),
            Some("ü")
        );
        assert_eq!(
            parse(&with("UNICODE UTF-8", b"\\XC3BC\\"))
                .unwrap()
                .get("NTE-3"),
            Some("ü")
        );
    }

    #[test]
    fn control_characters_rejected_with_position() {
        let b = with_msh(&["PID|1|a\x00b"]);
        match parse(&b).unwrap_err() {
            ParseError::ControlCharacter { location } => {
                assert_eq!(location.path(), "PID-2");
                assert_eq!(location.segment_index, 2);
            }
            other => panic!("{other:?}"),
        }
        let b = with_msh(&["PID|1|a\tb"]);
        assert!(matches!(
            parse(&b),
            Err(ParseError::ControlCharacter { .. })
        ));
        // Position in MSH counts MSH-1 as a field.
        let b = b"MSH|^~\\&|A\x01|B\r";
        match parse(b).unwrap_err() {
            ParseError::ControlCharacter { location } => assert_eq!(location.path(), "MSH-3"),
            other => panic!("{other:?}"),
        }
        // Latin-1 text before the control character: positions stay right.
        let b = b"MSH|^~\\&|A|B|C|D|1||ORU^R01|9|P|2.5||||||8859/1\rNTE|1|\xfc\xfc|x\x02\r";
        match parse(b).unwrap_err() {
            ParseError::ControlCharacter { location } => assert_eq!(location.path(), "NTE-3"),
            other => panic!("{other:?}"),
        }
        // Second OBX: segment sequence is reported.
        let b = with_msh(&["OBX|1", "OBX|2|\x7f"]);
        match parse(&b).unwrap_err() {
            ParseError::ControlCharacter { location } => assert_eq!(location.path(), "OBX(2)-2"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn required_header_fields() {
        let cases = [
            ("MSH|^~\\&|A|B|C|D|1||^R01|9|P|2.5", "MSH-9.1"),
            ("MSH|^~\\&|A|B|C|D|1||ORU^R01||P|2.5", "MSH-10"),
            ("MSH|^~\\&|A|B|C|D|1||ORU^R01|9||2.5", "MSH-11.1"),
            ("MSH|^~\\&|A|B|C|D|1||ORU^R01|9|P", "MSH-12.1"),
            ("MSH|^~\\&", "MSH-9.1"),
        ];
        for (m, path) in cases {
            match parse(&msg(&[m])).unwrap_err() {
                ParseError::RequiredFieldMissing { location } => assert_eq!(location.path(), path),
                other => panic!("{m}: {other:?}"),
            }
        }
    }

    #[test]
    fn ack_mode_fields() {
        use crate::codec::hl7::{AckCondition, AckMode};
        let m = parse(&msg(&[MSH])).unwrap();
        assert_eq!(m.header().ack_mode, AckMode::Original);
        let m = parse(&msg(&[&format!("{MSH}|||NE|AL")])).unwrap();
        assert_eq!(
            m.header().ack_mode,
            AckMode::Enhanced {
                accept: AckCondition::Never,
                application: AckCondition::Always
            }
        );
        let m = parse(&msg(&[&format!("{MSH}||||ER")])).unwrap();
        assert_eq!(
            m.header().ack_mode,
            AckMode::Enhanced {
                accept: AckCondition::Always,
                application: AckCondition::ErrorOnly
            }
        );
        match parse(&msg(&[&format!("{MSH}|||XX|AL")])).unwrap_err() {
            ParseError::InvalidTableValue { location } => assert_eq!(location.path(), "MSH-15"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn header_view() {
        let m = parse(&fixture("oru-screen.hl7")).unwrap();
        let h = m.header();
        assert_eq!(h.sending_application.namespace_id, "IA-ANALYZER");
        assert_eq!(
            h.sending_application.universal_id,
            "2.16.840.1.113883.3.999.10"
        );
        assert_eq!(h.sending_application.universal_id_type, "ISO");
        assert_eq!(h.sending_facility.namespace_id, "TOXLAB");
        assert_eq!(h.receiving_application.namespace_id, "CUSTODIAN");
        assert_eq!(h.receiving_facility.namespace_id, "TOXLAB");
        assert_eq!(
            (
                h.message_type.as_str(),
                h.trigger_event.as_str(),
                h.message_structure.as_str()
            ),
            ("ORU", "R01", "ORU_R01")
        );
        assert_eq!(h.control_id, "IA20240315-0001");
        assert_eq!(h.processing_id, "P");
        assert_eq!(h.version, "2.5.1");
        assert_eq!(h.charset, Charset::Utf8);
        assert_eq!(h.charset_field, "UNICODE UTF-8");
        assert_eq!(h.timestamp, "20240315101500-0500");
    }

    #[test]
    fn malformed_escapes_name_positions_not_content() {
        let b = with_msh(&["OBX|1|ST|X||SECRET\\Q\\VALUE"]);
        let e = parse(&b).unwrap_err();
        assert_eq!(e.location().unwrap().path(), "OBX-5.1.1");
        let text = e.to_string();
        assert!(
            !text.contains("SECRET") && !text.contains("VALUE"),
            "{text}"
        );
        let b = with_msh(&["OBX|1|ST|X||a~b^c&d\\F"]);
        assert_eq!(
            parse(&b).unwrap_err().location().unwrap().path(),
            "OBX-5(2).2.2"
        );
    }

    #[test]
    fn errors_never_echo_content() {
        let secret = "DONOR-SSN-000-00-0000";
        let inputs = [
            format!("{MSH}\rPID|1|{secret}\x01"),
            format!("{MSH}\rPID|1|{secret}\\Z\\"),
            format!("{MSH}\n{secret}"),
            format!("{MSH}\r{secret}"),
            format!("MSH|^~\\&|{secret}|||||||||||||||{secret}"),
        ];
        for input in inputs {
            let e = parse(input.as_bytes()).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains("DONOR"), "{shown}");
        }
    }

    #[test]
    fn never_panics_on_prefixes_and_byte_flips() {
        // A small exhaustive sweep beside the fuzzer: every prefix of each fixture, and each
        // fixture with each byte replaced by a few troublesome values.
        for name in ["oru-screen.hl7", "oru-validity.hl7", "oru-confirmation.hl7"] {
            let b = fixture(name);
            for cut in 0..b.len() {
                let _ = parse(&b[..cut]);
            }
            for i in (0..b.len()).step_by(7) {
                for v in [b'\\', b'|', b'^', b'\r', b'\n', 0xC3, 0xFF, 0x00] {
                    let mut m = b.clone();
                    m[i] = v;
                    crate::codec::hl7::fuzz::parse_checked(&m);
                }
            }
        }
    }
}
