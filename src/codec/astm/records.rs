//! The records of ASTM E1394 / CLSI LIS2-A2: a message is a header (H), then patient (P),
//! order (O), result (R), comment (C), request-information (Q), manufacturer (M) and
//! scientific (S) records, and a terminator (L). Records end with CR.
//!
//! The header declares the delimiters: `H|\^&` is field `|`, repeat `\`, component `^` and
//! escape `&`; every later record uses them. Fields are numbered as in the standard: field 1 is
//! the record type (`H`), and in the header field 2 is the delimiter definition, so H-14 is the
//! message's date and time. Escape sequences (`&F&` field, `&S&` component, `&R&` repeat, `&E&`
//! escape, `&Xhh..&` bytes) are decoded by [`unescape`] in the values custodian reads.
//!
//! Parsing never panics (fuzzed: target `astm_records`) and its errors name record positions,
//! never content.

/// The delimiters a header declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delimiters {
    pub field: u8,
    pub repeat: u8,
    pub component: u8,
    pub escape: u8,
}

impl Default for Delimiters {
    fn default() -> Delimiters {
        Delimiters {
            field: b'|',
            repeat: b'\\',
            component: b'^',
            escape: b'&',
        }
    }
}

impl Delimiters {
    /// The header's opening: `H|\^&`.
    pub fn header(&self) -> String {
        [b'H', self.field, self.repeat, self.component, self.escape]
            .iter()
            .map(|&b| b as char)
            .collect()
    }

    /// Escapes `text` for a field of a record written with these delimiters.
    pub fn escape(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            let code = match c as u32 {
                x if x == u32::from(self.field) => Some('F'),
                x if x == u32::from(self.component) => Some('S'),
                x if x == u32::from(self.repeat) => Some('R'),
                x if x == u32::from(self.escape) => Some('E'),
                _ => None,
            };
            match code {
                Some(k) => {
                    let e = self.escape as char;
                    out.push(e);
                    out.push(k);
                    out.push(e);
                }
                None => out.push(c),
            }
        }
        out
    }
}

/// Why a message's records cannot be read. Names positions only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("message is empty")]
    Empty,
    #[error("first record is not a header (H)")]
    NoHeader,
    #[error("header delimiter definition (H-2) is not four distinct punctuation characters")]
    BadDelimiters,
    #[error("record {index} is not text (ASCII/UTF-8 without control characters)")]
    NotText { index: usize },
    #[error("record {index} has an unknown record type")]
    UnknownType { index: usize },
    #[error("record {index} is a second header before the terminator")]
    SecondHeader { index: usize },
    #[error("last record is not a terminator (L)")]
    NoTerminator,
    #[error("record {index} follows the terminator")]
    AfterTerminator { index: usize },
}

/// One record: its type and its fields, as sent (escapes not decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the message (the header is 1).
    pub index: usize,
    /// `H`, `P`, `O`, `R`, `C`, `Q`, `M`, `S` or `L`.
    pub kind: char,
    fields: Vec<String>,
}

impl Record {
    /// Field `n` (1-based: field 1 is the record type); empty when absent.
    pub fn field(&self, n: usize) -> &str {
        n.checked_sub(1)
            .and_then(|i| self.fields.get(i))
            .map_or("", String::as_str)
    }

    /// The repetitions of field `n`.
    pub fn repetitions<'a>(&'a self, n: usize, d: &Delimiters) -> impl Iterator<Item = &'a str> {
        let repeat = d.repeat as char;
        // The header's delimiter definition holds the repeat delimiter itself.
        let whole = self.kind == 'H' && n == 2;
        let f = self.field(n);
        let parts: Vec<&'a str> = if whole || f.is_empty() {
            vec![f]
        } else {
            f.split(repeat).collect()
        };
        parts.into_iter()
    }

    /// Component `c` (1-based) of repetition `r` (1-based) of field `n`; empty when absent.
    pub fn component(&self, n: usize, r: usize, c: usize, d: &Delimiters) -> &str {
        let Some(rep) = self.repetitions(n, d).nth(r.saturating_sub(1)) else {
            return "";
        };
        rep.split(d.component as char)
            .nth(c.saturating_sub(1))
            .unwrap_or("")
    }

    /// How many fields the record has.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The record's text with field `n` emptied (for a fingerprint that ignores it).
    pub fn text_without(&self, n: usize, d: &Delimiters) -> String {
        let sep = (d.field as char).to_string();
        self.fields
            .iter()
            .enumerate()
            .map(|(i, f)| if i + 1 == n { "" } else { f.as_str() })
            .collect::<Vec<_>>()
            .join(&sep)
    }
}

/// A parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub delimiters: Delimiters,
    pub records: Vec<Record>,
}

impl Message {
    /// The header record.
    pub fn header(&self) -> &Record {
        &self.records[0]
    }

    /// The records of one type, in order.
    pub fn of_kind(&self, kind: char) -> impl Iterator<Item = &Record> {
        self.records.iter().filter(move |r| r.kind == kind)
    }
}

const KINDS: [char; 9] = ['H', 'P', 'O', 'R', 'C', 'Q', 'M', 'S', 'L'];

fn punctuation(b: u8) -> bool {
    b.is_ascii_graphic() && !b.is_ascii_alphanumeric()
}

/// Splits a message (records ending with CR; a final CR may be missing) into records.
pub fn parse(text: &[u8]) -> Result<Message, RecordError> {
    let lines: Vec<&[u8]> = text
        .split(|&b| b == b'\r')
        .filter(|l| !l.is_empty())
        .collect();
    let first = lines.first().ok_or(RecordError::Empty)?;
    if first.first() != Some(&b'H') {
        return Err(RecordError::NoHeader);
    }
    let d = match first.get(1..5) {
        Some(&[f, r, c, e]) => Delimiters {
            field: f,
            repeat: r,
            component: c,
            escape: e,
        },
        _ => return Err(RecordError::BadDelimiters),
    };
    let set = [d.field, d.repeat, d.component, d.escape];
    let distinct = (0..4).all(|i| (i + 1..4).all(|j| set[i] != set[j]));
    if !distinct || !set.iter().all(|&b| punctuation(b)) {
        return Err(RecordError::BadDelimiters);
    }
    if first.get(5).is_some_and(|&b| b != d.field) {
        return Err(RecordError::BadDelimiters);
    }
    let mut records = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let index = i + 1;
        let s = std::str::from_utf8(line).map_err(|_| RecordError::NotText { index })?;
        if s.chars().any(char::is_control) {
            return Err(RecordError::NotText { index });
        }
        let fields: Vec<String> = s.split(d.field as char).map(str::to_owned).collect();
        let kind = match fields[0].as_str() {
            k if k.len() == 1 && KINDS.contains(&k.chars().next().unwrap_or(' ')) => {
                k.chars().next().unwrap_or(' ')
            }
            _ => return Err(RecordError::UnknownType { index }),
        };
        if kind == 'H' && index > 1 {
            return Err(RecordError::SecondHeader { index });
        }
        if records.last().is_some_and(|r: &Record| r.kind == 'L') {
            return Err(RecordError::AfterTerminator { index });
        }
        records.push(Record {
            index,
            kind,
            fields,
        });
    }
    if records.last().map(|r| r.kind) != Some('L') {
        return Err(RecordError::NoTerminator);
    }
    Ok(Message {
        delimiters: d,
        records,
    })
}

/// Decodes the escape sequences of a field value. `None` when a sequence is broken or names
/// bytes that are not text.
pub fn unescape(value: &str, d: &Delimiters) -> Option<String> {
    let e = d.escape as char;
    if !value.contains(e) {
        return Some(value.to_owned());
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find(e) {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let j = after.find(e)?;
        let seq = &after[..j];
        match seq {
            "F" => out.push(d.field as char),
            "S" => out.push(d.component as char),
            "R" => out.push(d.repeat as char),
            "E" => out.push(e),
            x if x.len() > 1
                && x.len() % 2 == 1
                && x.starts_with('X')
                && x[1..].bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                let bytes: Option<Vec<u8>> = (1..x.len())
                    .step_by(2)
                    .map(|k| u8::from_str_radix(&x[k..k + 2], 16).ok())
                    .collect();
                let text = String::from_utf8(bytes?).ok()?;
                if text.chars().any(char::is_control) {
                    return None;
                }
                out.push_str(&text);
            }
            _ => return None,
        }
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &str = "H|\\^&|||cobas^1|||||||P|1|20240315101500\rP|1\rO|1|0012345^01^3||^^^THC\\^^^COC|R\rR|1|^^^THC|12.5|ng/mL||N||F||||20240315101000\rC|1|I|checked|G\rL|1|N\r";

    #[test]
    fn fields_components_and_repetitions() {
        let m = parse(MSG.as_bytes()).unwrap();
        let d = m.delimiters;
        assert_eq!(d, Delimiters::default());
        assert_eq!(m.records.len(), 6);
        let h = m.header();
        assert_eq!(h.field(1), "H");
        assert_eq!(h.field(2), "\\^&");
        assert_eq!(h.repetitions(2, &d).count(), 1, "H-2 is not split");
        assert_eq!(h.component(5, 1, 1, &d), "cobas");
        assert_eq!(h.field(12), "P");
        assert_eq!(h.field(14), "20240315101500");
        let o = m.of_kind('O').next().unwrap();
        assert_eq!(o.component(3, 1, 1, &d), "0012345");
        assert_eq!(o.component(3, 1, 3, &d), "3");
        let tests: Vec<&str> = o.repetitions(5, &d).collect();
        assert_eq!(tests, ["^^^THC", "^^^COC"]);
        assert_eq!(o.component(5, 2, 4, &d), "COC");
        let r = m.of_kind('R').next().unwrap();
        assert_eq!(
            (r.field(2), r.field(4), r.field(5), r.field(9)),
            ("1", "12.5", "ng/mL", "F")
        );
        assert_eq!(r.field(40), "", "absent fields are empty");
        assert_eq!(r.component(3, 9, 1, &d), "");
        assert_eq!(m.records.last().unwrap().kind, 'L');
    }

    #[test]
    fn delimiters_come_from_the_header() {
        let text = "H!@#$!!!x\rO!1!S-1@A!!#!!\rL!1\r";
        let m = parse(text.as_bytes()).unwrap();
        let d = m.delimiters;
        assert_eq!(
            (d.field, d.repeat, d.component, d.escape),
            (b'!', b'@', b'#', b'$')
        );
        let o = m.of_kind('O').next().unwrap();
        assert_eq!(o.component(3, 1, 1, &d), "S-1");
        assert_eq!(o.component(3, 2, 1, &d), "A");
        assert_eq!(d.header(), "H!@#$");
    }

    #[test]
    fn structure_errors_name_positions() {
        let cases: [(&str, RecordError); 9] = [
            ("", RecordError::Empty),
            ("\r\r", RecordError::Empty),
            ("P|1\rL|1\r", RecordError::NoHeader),
            ("H|\\^\rL|1\r", RecordError::BadDelimiters),
            ("H|||&\rL|1\r", RecordError::BadDelimiters),
            ("H|\\^&x\rL|1\r", RecordError::BadDelimiters),
            ("H|\\^&\rZ|1\rL|1\r", RecordError::UnknownType { index: 2 }),
            ("H|\\^&\rO|1\r", RecordError::NoTerminator),
            (
                "H|\\^&\rL|1\rR|1\r",
                RecordError::AfterTerminator { index: 3 },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text.as_bytes()), Err(want), "{text:?}");
        }
        assert_eq!(
            parse(b"H|\\^&\rH|\\^&\rL|1\r"),
            Err(RecordError::SecondHeader { index: 2 })
        );
        assert_eq!(
            parse(b"H|\\^&\rO|1|\xff\rL|1\r"),
            Err(RecordError::NotText { index: 2 })
        );
        assert_eq!(
            parse(b"H|\\^&\rO|1|\x07\rL|1\r"),
            Err(RecordError::NotText { index: 2 })
        );
        // A missing final CR is tolerated.
        assert!(parse(b"H|\\^&\rL|1").is_ok());
        let e = parse(b"H|\\^&\rSECRET-123|1\rL|1\r").unwrap_err();
        assert!(!e.to_string().contains("SECRET"));
    }

    #[test]
    fn escapes_decode_and_encode() {
        let d = Delimiters::default();
        assert_eq!(
            unescape("a&F&b&S&c&R&d&E&e", &d).as_deref(),
            Some("a|b^c\\d&e")
        );
        assert_eq!(unescape("&X4142&", &d).as_deref(), Some("AB"));
        assert_eq!(unescape("plain", &d).as_deref(), Some("plain"));
        assert_eq!(unescape("&Q&", &d), None);
        assert_eq!(unescape("a&F", &d), None);
        assert_eq!(unescape("&X0D&", &d), None, "no control characters");
        assert_eq!(unescape("&X4&", &d), None);
        let text = "x|y^z\\w&v";
        assert_eq!(unescape(&d.escape(text), &d).as_deref(), Some(text));
    }

    #[test]
    fn text_without_a_field() {
        let m = parse(MSG.as_bytes()).unwrap();
        let h = m.header().text_without(14, &m.delimiters);
        assert_eq!(h, "H|\\^&|||cobas^1|||||||P|1|");
    }
}
