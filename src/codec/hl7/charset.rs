//! Character sets named in MSH-18 (HL7 table 0211), the three custodian accepts.

/// The character set a message declares in MSH-18.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Charset {
    /// MSH-18 empty or `ASCII`: 7-bit ASCII only.
    Ascii,
    /// `8859/1`: ISO 8859-1 (Latin-1); bytes 0x80–0x9F (C1 controls, and the Windows-1252
    /// letters a mislabelled sender would put there) are rejected.
    Latin1,
    /// `UNICODE UTF-8`.
    Utf8,
}

impl Charset {
    /// The charset for an MSH-18 value as received (exact, HL7 table 0211 spelling).
    /// `None` for any value custodian does not accept (the caller answers AR).
    pub fn from_msh18(raw: &[u8]) -> Option<Charset> {
        match raw {
            b"" | b"ASCII" => Some(Charset::Ascii),
            b"8859/1" => Some(Charset::Latin1),
            b"UNICODE UTF-8" => Some(Charset::Utf8),
            _ => None,
        }
    }

    /// The table 0211 name (`ASCII` for the default).
    pub fn hl7_name(self) -> &'static str {
        match self {
            Charset::Ascii => "ASCII",
            Charset::Latin1 => "8859/1",
            Charset::Utf8 => "UNICODE UTF-8",
        }
    }

    /// Decodes `bytes` in this charset. On failure returns the byte offset of the first byte
    /// that is not valid in it.
    pub fn decode(self, bytes: &[u8]) -> Result<String, usize> {
        match self {
            Charset::Ascii => match bytes.iter().position(|&b| b > 0x7F) {
                Some(i) => Err(i),
                None => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
            },
            Charset::Latin1 => match bytes.iter().position(|&b| (0x80..=0x9F).contains(&b)) {
                Some(i) => Err(i),
                None => Ok(bytes.iter().map(|&b| char::from(b)).collect()),
            },
            Charset::Utf8 => match std::str::from_utf8(bytes) {
                Ok(s) => Ok(s.to_owned()),
                Err(e) => Err(e.valid_up_to()),
            },
        }
    }

    /// Encodes `c` in this charset, or `None` when it has no representation.
    pub fn encode_char(self, c: char, out: &mut Vec<u8>) -> bool {
        let code = u32::from(c);
        match self {
            Charset::Ascii if code <= 0x7F => out.push(code as u8),
            Charset::Latin1 if code <= 0x7F || (0xA0..=0xFF).contains(&code) => {
                out.push(code as u8)
            }
            Charset::Utf8 => {
                let mut tmp = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
            _ => return false,
        }
        true
    }

    /// Encodes `text`; a character with no representation becomes `?`. Text built by
    /// [`super::escape::encode`] never contains such characters.
    pub fn encode(self, text: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        for c in text.chars() {
            if !self.encode_char(c, &mut out) {
                out.push(b'?');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msh18_values() {
        assert_eq!(Charset::from_msh18(b""), Some(Charset::Ascii));
        assert_eq!(Charset::from_msh18(b"ASCII"), Some(Charset::Ascii));
        assert_eq!(Charset::from_msh18(b"8859/1"), Some(Charset::Latin1));
        assert_eq!(Charset::from_msh18(b"UNICODE UTF-8"), Some(Charset::Utf8));
        for bad in [
            &b"UTF-8"[..],
            b"unicode utf-8",
            b"8859/15",
            b"UNICODE",
            b"ISO IR87",
            b" ASCII",
            b"UNICODE UTF-8~8859/1",
        ] {
            assert_eq!(Charset::from_msh18(bad), None);
        }
    }

    #[test]
    fn decode_ascii_rejects_high_bytes() {
        assert_eq!(Charset::Ascii.decode(b"abc~"), Ok("abc~".to_string()));
        assert_eq!(Charset::Ascii.decode(b"ab\x7f"), Ok("ab\x7f".to_string()));
        assert_eq!(Charset::Ascii.decode(b"ab\x80"), Err(2));
        assert_eq!(Charset::Ascii.decode("ü".as_bytes()), Err(0));
    }

    #[test]
    fn decode_latin1() {
        assert_eq!(
            Charset::Latin1.decode(b"M\xfcller"),
            Ok("Müller".to_string())
        );
        assert_eq!(
            Charset::Latin1.decode(b"\xa0\xff"),
            Ok("\u{a0}ÿ".to_string())
        );
        assert_eq!(Charset::Latin1.decode(b"a\x80"), Err(1));
        assert_eq!(Charset::Latin1.decode(b"a\x9f"), Err(1));
    }

    #[test]
    fn decode_utf8() {
        assert_eq!(
            Charset::Utf8.decode("Müller".as_bytes()),
            Ok("Müller".to_string())
        );
        assert_eq!(Charset::Utf8.decode(b"M\xfcller"), Err(1));
        assert_eq!(Charset::Utf8.decode(b"ab\xc3"), Err(2));
    }

    #[test]
    fn encode_each() {
        assert_eq!(Charset::Ascii.encode("aü"), b"a?".to_vec());
        assert_eq!(Charset::Latin1.encode("aü"), b"a\xfc".to_vec());
        assert_eq!(Charset::Latin1.encode("a\u{85}€"), b"a??".to_vec());
        assert_eq!(Charset::Utf8.encode("aü€"), "aü€".as_bytes().to_vec());
    }
}
