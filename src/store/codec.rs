//! Version-tagged value encoding.
//!
//! Every value the store writes starts with one tag byte naming its encoding, so the encoding can
//! evolve without guessing:
//!
//! | tag  | meaning                                   |
//! |------|-------------------------------------------|
//! | 0x01 | JSON (serde_json), version 1              |
//! | 0x02 | opaque bytes kept verbatim, version 1     |
//!
//! Any other tag is refused with [`StoreError::UnknownVersion`]. Errors name the keyspace and a
//! key position ([`KeyRef`]), never the value and never the raw key, because values may hold
//! data the laboratory must not write to logs.

use super::{KeyRef, Keyspace, StoreError};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Tag of a JSON-encoded value, encoding version 1.
pub(crate) const TAG_JSON_V1: u8 = 0x01;
/// Tag of an opaque byte value kept verbatim, version 1.
pub(crate) const TAG_BYTES_V1: u8 = 0x02;

/// Encodes `value` as a version-tagged JSON value.
pub(crate) fn encode_json<T: Serialize + ?Sized>(
    ks: Keyspace,
    key: &[u8],
    value: &T,
) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![TAG_JSON_V1];
    serde_json::to_writer(&mut out, value).map_err(|e| StoreError::Encode {
        key: KeyRef::new(ks, key),
        detail: sanitize_json_error(&e),
    })?;
    Ok(out)
}

/// Encodes opaque bytes with the verbatim-bytes tag.
pub(crate) fn encode_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.push(TAG_BYTES_V1);
    out.extend_from_slice(bytes);
    out
}

/// Decodes a version-tagged JSON value.
pub(crate) fn decode_json<T: DeserializeOwned>(
    ks: Keyspace,
    key: &[u8],
    stored: &[u8],
) -> Result<T, StoreError> {
    match stored.split_first() {
        None => Err(StoreError::MissingVersion {
            key: KeyRef::new(ks, key),
        }),
        Some((&TAG_JSON_V1, body)) => {
            serde_json::from_slice(body).map_err(|e| StoreError::Decode {
                key: KeyRef::new(ks, key),
                detail: sanitize_json_error(&e),
            })
        }
        Some((&TAG_BYTES_V1, _)) => Err(StoreError::WrongEncoding {
            key: KeyRef::new(ks, key),
            expected: "json",
            found: "bytes",
        }),
        Some((&tag, _)) => Err(StoreError::UnknownVersion {
            key: KeyRef::new(ks, key),
            version: tag,
        }),
    }
}

/// Decodes a verbatim-bytes value.
pub(crate) fn decode_bytes(ks: Keyspace, key: &[u8], stored: &[u8]) -> Result<Vec<u8>, StoreError> {
    match stored.split_first() {
        None => Err(StoreError::MissingVersion {
            key: KeyRef::new(ks, key),
        }),
        Some((&TAG_BYTES_V1, body)) => Ok(body.to_vec()),
        Some((&TAG_JSON_V1, _)) => Err(StoreError::WrongEncoding {
            key: KeyRef::new(ks, key),
            expected: "bytes",
            found: "json",
        }),
        Some((&tag, _)) => Err(StoreError::UnknownVersion {
            key: KeyRef::new(ks, key),
            version: tag,
        }),
    }
}

/// Describes a serde_json error by its category and position only.
///
/// serde_json messages can quote the offending value ("invalid type: string \"...\""), so the
/// message itself is never kept.
fn sanitize_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let category = match e.classify() {
        Category::Io => "I/O error",
        Category::Syntax => "malformed JSON",
        Category::Data => "JSON does not match the expected type",
        Category::Eof => "truncated JSON",
    };
    if e.line() == 0 {
        category.to_string()
    } else {
        format!("{category} at line {} column {}", e.line(), e.column())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        id: String,
        n: u32,
    }

    #[test]
    fn json_round_trip_carries_tag() {
        let rec = Rec {
            id: "S1".into(),
            n: 7,
        };
        let bytes = encode_json(Keyspace::Specimens, b"S1", &rec).unwrap();
        assert_eq!(bytes[0], TAG_JSON_V1);
        assert_eq!(&bytes[1..], br#"{"id":"S1","n":7}"#);
        let back: Rec = decode_json(Keyspace::Specimens, b"S1", &bytes).unwrap();
        assert_eq!(back, rec);
    }

    #[test]
    fn bytes_round_trip_carries_tag() {
        let raw = b"MSH|^~\\&|chem1\r".to_vec();
        let stored = encode_bytes(&raw);
        assert_eq!(stored[0], TAG_BYTES_V1);
        assert_eq!(decode_bytes(Keyspace::Raw, b"k", &stored).unwrap(), raw);
    }

    #[test]
    fn unknown_version_names_keyspace_and_key_but_not_content() {
        let stored = b"\x09{\"donor\":\"SECRET-NAME\"}";
        let err = decode_json::<Rec>(Keyspace::Specimens, b"S-123", stored).unwrap_err();
        match &err {
            StoreError::UnknownVersion { key, version } => {
                assert_eq!(*version, 9);
                assert_eq!(key.keyspace, Keyspace::Specimens);
            }
            other => panic!("unexpected error {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("specimens"), "{text}");
        assert!(text.contains("version 9"), "{text}");
        assert!(!text.contains("SECRET"), "{text}");
        assert!(!text.contains("S-123"), "{text}");
    }

    #[test]
    fn decode_error_does_not_quote_the_value() {
        let stored = encode_json(Keyspace::Specimens, b"k", &"SECRET-NAME").unwrap();
        let err = decode_json::<Rec>(Keyspace::Specimens, b"k", &stored).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Decode { .. }));
        assert!(!text.contains("SECRET"), "{text}");
    }

    #[test]
    fn empty_and_cross_encoding_values_are_refused() {
        assert!(matches!(
            decode_json::<Rec>(Keyspace::Raw, b"k", b""),
            Err(StoreError::MissingVersion { .. })
        ));
        assert!(matches!(
            decode_json::<Rec>(Keyspace::Raw, b"k", &encode_bytes(b"x")),
            Err(StoreError::WrongEncoding { .. })
        ));
        assert!(matches!(
            decode_bytes(Keyspace::Raw, b"k", b"\x01null"),
            Err(StoreError::WrongEncoding { .. })
        ));
        assert!(matches!(
            decode_bytes(Keyspace::Raw, b"k", b"\xffabc"),
            Err(StoreError::UnknownVersion { version: 0xff, .. })
        ));
    }
}
