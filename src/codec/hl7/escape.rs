//! HL7 v2 escape sequences, decoded and encoded by custodian itself (hl7-parser 0.3.0's decoder
//! mixes byte and character positions and panics on non-ASCII text).
//!
//! Decoding (text between two escape characters, `\` in the standard set):
//! - `\F\` `\S\` `\T\` `\R\` `\E\`: the field, component, subcomponent, repetition and escape
//!   characters;
//! - `\Xhh...\`: one or more bytes in hexadecimal (an even number of digits), interpreted in the
//!   message's character set; the bytes must be valid there, and of the control characters only
//!   TAB, LF and CR may be written this way;
//! - `\H\` `\N\` (highlighting on/off): removed;
//! - formatted-text commands: `\.br\` and `\.sp\`/`\.spN\` become a line feed; `\.fi\`, `\.nf\`,
//!   `\.ce\`, `\.inN\`, `\.tiN\`, `\.skN\` (N an optional sign and up to 3 digits) are removed;
//! - anything else (an unterminated or empty sequence, `\C..\`/`\M..\` character-set switching,
//!   `\Z..\` local escapes, a lone escape character) is malformed.
//!
//! Every position is taken on character boundaries: delimiters are ASCII, so a `find` of one in
//! a `&str` always lands on a boundary.

use super::charset::Charset;
use std::borrow::Cow;

/// The five delimiters of a message (MSH-1 and MSH-2). All are ASCII.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Delimiters {
    pub field: char,
    pub component: char,
    pub repetition: char,
    pub escape: char,
    pub subcomponent: char,
}

impl Delimiters {
    /// `|^~\&`.
    pub const STANDARD: Delimiters = Delimiters {
        field: '|',
        component: '^',
        repetition: '~',
        escape: '\\',
        subcomponent: '&',
    };

    /// The four encoding characters in MSH-2 order.
    pub fn encoding_characters(&self) -> String {
        [
            self.component,
            self.repetition,
            self.escape,
            self.subcomponent,
        ]
        .iter()
        .collect()
    }

    fn is_delimiter(&self, c: char) -> bool {
        c == self.field
            || c == self.component
            || c == self.repetition
            || c == self.escape
            || c == self.subcomponent
    }
}

/// Why an escape sequence could not be decoded (the caller adds the position).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscapeError {
    /// No closing escape character.
    Unterminated,
    /// A sequence custodian does not know or that is badly formed.
    Malformed,
    /// `\X..\` bytes that are not valid in the message's character set.
    InvalidHexBytes,
}

/// Decodes the escapes in one leaf (subcomponent) of raw message text: borrowed when it holds
/// none (nearly every leaf).
pub fn decode<'a>(
    raw: &'a str,
    d: &Delimiters,
    charset: Charset,
) -> Result<Cow<'a, str>, EscapeError> {
    let Some(first) = raw.find(d.escape) else {
        return Ok(Cow::Borrowed(raw));
    };
    let mut out = String::with_capacity(raw.len());
    out.push_str(&raw[..first]);
    let mut rest = &raw[first..];
    loop {
        // `rest` starts with the escape character.
        let after = &rest[d.escape.len_utf8()..];
        let end = after.find(d.escape).ok_or(EscapeError::Unterminated)?;
        decode_sequence(&after[..end], d, charset, &mut out)?;
        rest = &after[end + d.escape.len_utf8()..];
        match rest.find(d.escape) {
            Some(next) => {
                out.push_str(&rest[..next]);
                rest = &rest[next..];
            }
            None => {
                out.push_str(rest);
                return Ok(Cow::Owned(out));
            }
        }
    }
}

fn decode_sequence(
    seq: &str,
    d: &Delimiters,
    charset: Charset,
    out: &mut String,
) -> Result<(), EscapeError> {
    match seq {
        "F" => out.push(d.field),
        "S" => out.push(d.component),
        "T" => out.push(d.subcomponent),
        "R" => out.push(d.repetition),
        "E" => out.push(d.escape),
        "H" | "N" => {}
        _ => {
            if let Some(hex) = seq.strip_prefix('X') {
                decode_hex(hex, charset, out)?;
            } else if let Some(cmd) = seq.strip_prefix('.') {
                decode_formatting(cmd, out)?;
            } else {
                return Err(EscapeError::Malformed);
            }
        }
    }
    Ok(())
}

fn decode_hex(hex: &str, charset: Charset, out: &mut String) -> Result<(), EscapeError> {
    let digits = hex.as_bytes();
    if digits.is_empty() || !digits.len().is_multiple_of(2) {
        return Err(EscapeError::Malformed);
    }
    let mut bytes = Vec::with_capacity(digits.len() / 2);
    for pair in digits.chunks_exact(2) {
        let hi = hex_value(pair[0]).ok_or(EscapeError::Malformed)?;
        let lo = hex_value(pair[1]).ok_or(EscapeError::Malformed)?;
        bytes.push(hi << 4 | lo);
    }
    let text = charset
        .decode(&bytes)
        .map_err(|_| EscapeError::InvalidHexBytes)?;
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r'))
    {
        return Err(EscapeError::InvalidHexBytes);
    }
    out.push_str(&text);
    Ok(())
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_formatting(cmd: &str, out: &mut String) -> Result<(), EscapeError> {
    let (name, arg) = match (cmd.get(..2), cmd.get(2..)) {
        (Some(name), Some(arg)) => (name, arg),
        _ => return Err(EscapeError::Malformed),
    };
    let arg_ok = |signed: bool| {
        let digits = if signed {
            arg.strip_prefix(['+', '-']).unwrap_or(arg)
        } else {
            arg
        };
        digits.len() <= 3 && digits.bytes().all(|b| b.is_ascii_digit())
    };
    match name {
        "br" if arg.is_empty() => out.push('\n'),
        "sp" if arg_ok(false) => out.push('\n'),
        "fi" | "nf" | "ce" if arg.is_empty() => {}
        "in" | "ti" if arg_ok(true) => {}
        "sk" if arg_ok(false) => {}
        _ => return Err(EscapeError::Malformed),
    }
    Ok(())
}

/// Escapes `text` for use as one leaf of a message with delimiters `d` in `charset`:
/// delimiters become `\F\` `\S\` `\T\` `\R\` `\E\`; TAB, LF and CR become `\X09\`, `\X0A\`,
/// `\X0D\`; any other control character, and any character the charset cannot hold, becomes
/// `?`.
pub fn encode(text: &str, d: &Delimiters, charset: Charset) -> String {
    let mut out = String::with_capacity(text.len());
    let e = d.escape;
    for c in text.chars() {
        if d.is_delimiter(c) {
            let code = if c == d.field {
                'F'
            } else if c == d.component {
                'S'
            } else if c == d.subcomponent {
                'T'
            } else if c == d.repetition {
                'R'
            } else {
                'E'
            };
            out.push(e);
            out.push(code);
            out.push(e);
        } else if matches!(c, '\t' | '\n' | '\r') {
            let mut bytes = Vec::new();
            if charset.encode_char(c, &mut bytes) {
                out.push(e);
                out.push('X');
                for b in bytes {
                    out.push_str(&format!("{b:02X}"));
                }
                out.push(e);
            } else {
                out.push('?');
            }
        } else if c.is_control() {
            // Decoding accepts no other control character, so none is written.
            out.push('?');
        } else {
            let mut scratch = Vec::new();
            if charset.encode_char(c, &mut scratch) {
                out.push(c);
            } else {
                out.push('?');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Delimiters = Delimiters::STANDARD;

    fn dec(s: &str) -> Result<String, EscapeError> {
        decode(s, &D, Charset::Utf8).map(Cow::into_owned)
    }

    #[test]
    fn delimiter_escapes() {
        assert_eq!(dec(r"a\F\b\S\c\T\d\R\e\E\f").unwrap(), r"a|b^c&d~e\f");
        assert_eq!(dec("plain").unwrap(), "plain");
        assert_eq!(dec("").unwrap(), "");
        assert_eq!(dec(r"\F\").unwrap(), "|");
        assert_eq!(dec(r"\F\\S\").unwrap(), "|^");
    }

    #[test]
    fn non_ascii_around_escapes_on_char_boundaries() {
        assert_eq!(dec(r"ü\T\ö\F\ß").unwrap(), "ü&ö|ß");
        assert_eq!(dec(r"€\E\€").unwrap(), r"€\€");
    }

    #[test]
    fn crates_md_panic_input_is_an_error_not_a_panic() {
        // hl7-parser 0.3.0 panics on this (crates.md defect 3).
        assert_eq!(dec(r"x\ü\y"), Err(EscapeError::Malformed));
        assert_eq!(
            decode(r"x\ü\y", &D, Charset::Latin1),
            Err(EscapeError::Malformed)
        );
    }

    #[test]
    fn hex_escapes() {
        assert_eq!(dec(r"a\X0D\b").unwrap(), "a\rb");
        assert_eq!(dec(r"a\X0A0D\b").unwrap(), "a\n\rb");
        assert_eq!(dec(r"\X41\").unwrap(), "A");
        assert_eq!(dec(r"\XC3BC\").unwrap(), "ü");
        assert_eq!(dec(r"\Xc3bc\").unwrap(), "ü");
        assert_eq!(decode(r"\XFC\", &D, Charset::Latin1).unwrap(), "ü");
        assert_eq!(
            decode(r"\XFC\", &D, Charset::Ascii),
            Err(EscapeError::InvalidHexBytes)
        );
        assert_eq!(dec(r"\XFC\"), Err(EscapeError::InvalidHexBytes));
        assert_eq!(dec(r"\X00\"), Err(EscapeError::InvalidHexBytes));
        assert_eq!(dec(r"\X1B\"), Err(EscapeError::InvalidHexBytes));
        assert_eq!(dec(r"\X\"), Err(EscapeError::Malformed));
        assert_eq!(dec(r"\X4\"), Err(EscapeError::Malformed));
        assert_eq!(dec(r"\X4G\"), Err(EscapeError::Malformed));
        assert_eq!(dec(r"\Xü1\"), Err(EscapeError::Malformed));
    }

    #[test]
    fn highlighting_removed_and_formatting() {
        assert_eq!(dec(r"\H\bold\N\ text").unwrap(), "bold text");
        assert_eq!(dec(r"a\.br\b").unwrap(), "a\nb");
        assert_eq!(dec(r"a\.sp\b\.sp2\c").unwrap(), "a\nb\nc");
        assert_eq!(dec(r"\.fi\\.nf\\.ce\\.in+4\\.ti-2\\.sk3\x").unwrap(), "x");
        assert_eq!(dec(r"\.in123\x").unwrap(), "x");
        assert_eq!(dec(r"\.in1234\"), Err(EscapeError::Malformed));
        assert_eq!(dec(r"\.br2\"), Err(EscapeError::Malformed));
        assert_eq!(dec(r"\.xx\"), Err(EscapeError::Malformed));
        assert_eq!(dec(r"\.\"), Err(EscapeError::Malformed));
        assert_eq!(dec(r"\.ü\"), Err(EscapeError::Malformed));
    }

    #[test]
    fn malformed_sequences() {
        assert_eq!(dec(r"a\F"), Err(EscapeError::Unterminated));
        assert_eq!(dec(r"\"), Err(EscapeError::Unterminated));
        assert_eq!(dec(r"a\F\b\"), Err(EscapeError::Unterminated));
        assert_eq!(dec(r"\\"), Err(EscapeError::Malformed));
        assert_eq!(dec(r"\Q\"), Err(EscapeError::Malformed));
        assert_eq!(dec(r"\FF\"), Err(EscapeError::Malformed));
        assert_eq!(dec(r"\C2842\"), Err(EscapeError::Malformed));
        assert_eq!(dec(r"\M2442\"), Err(EscapeError::Malformed));
        assert_eq!(dec(r"\Zlocal\"), Err(EscapeError::Malformed));
    }

    #[test]
    fn custom_escape_character() {
        let d = Delimiters {
            escape: '!',
            ..Delimiters::STANDARD
        };
        assert_eq!(decode(r"a!F!b\c", &d, Charset::Ascii).unwrap(), r"a|b\c");
        assert_eq!(encode(r"a|b!c\", &d, Charset::Ascii), r"a!F!b!E!c\");
    }

    #[test]
    fn encode_round_trips() {
        for text in [
            r"a|b^c&d~e\f",
            "Müller",
            "line\rbreak\nand\ttab",
            "",
            "plain",
        ] {
            let enc = encode(text, &D, Charset::Utf8);
            assert!(!enc.contains(['|', '^', '&', '~', '\r', '\n']));
            assert_eq!(dec(&enc).unwrap(), text, "{enc}");
        }
        assert_eq!(encode("a\rb", &D, Charset::Ascii), r"a\X0D\b");
        assert_eq!(encode("ü", &D, Charset::Ascii), "?");
        assert_eq!(encode("ü", &D, Charset::Latin1), "ü");
        assert_eq!(encode("\u{85}", &D, Charset::Latin1), "?");
        assert_eq!(encode("\u{85}\u{0}", &D, Charset::Utf8), "??");
    }
}
