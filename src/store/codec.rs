//! Version-tagged value encoding.
//!
//! Every value the store writes starts with one tag byte naming its encoding, so the encoding can
//! evolve without guessing:
//!
//! | tag  | meaning                                   |
//! |------|-------------------------------------------|
//! | 0x01 | JSON (serde_json), version 1              |
//! | 0x02 | opaque bytes kept verbatim, version 1     |
//! | 0x03 | JSON, version 1, compressed (see below)   |
//! | 0x04 | opaque bytes, compressed (see below)      |
//!
//! A compressed value is the tag, one byte naming the dictionary (0: none; 1: the built-in
//! dictionary v1, `dictionary-v1.txt`, compiled in and never changed: a new dictionary gets a
//! new number), then an LZ4 block (`lz4_flex`, pure Rust) preceded by its decoded length
//! (u32, little-endian). Values of 96 bytes or more are written compressed when that saves
//! an eighth or more, without a dictionary (number 0). Dictionary v1 (synthetic HL7 and the
//! shapes of the store's own JSON, no laboratory data) let a short record compress to about
//! 70 % of what LZ4 alone gives, but priming LZ4 with its 9.8 KB cost 2.3 us per value
//! against 0.6 us without, on the writer thread every acknowledgement waits for (a sixth of
//! its time); values reach disk for good in the archive's segments, whose blocks LZ4 compresses
//! whole, across the values of a block, and they came out 2 % larger without it. Values
//! written with dictionary v1 (stores written before) read unchanged.
//! The images of CCF Copy 1 are kept verbatim (PDF, PNG and TIFF are compressed already).
//! Reading accepts every tag, so stores written before compression read unchanged.
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
/// Tag of a compressed JSON value (JSON version 1 inside).
pub(crate) const TAG_JSON_LZ4: u8 = 0x03;
/// Tag of a compressed opaque byte value.
pub(crate) const TAG_BYTES_LZ4: u8 = 0x04;
/// Tag of an opaque byte value kept in a pack: pack number (u64 BE) and index (u32 BE). The
/// pack, a bytes value of its own (see [`encode_pack`]), holds the members in order, each as
/// (u32 LE length, bytes), compressed together.
pub(crate) const TAG_IN_PACK: u8 = 0x05;

/// Dictionary number 0: none.
const DICT_NONE: u8 = 0;
/// Dictionary number 1: the built-in dictionary v1 (never changed; read, no longer written).
const DICT_V1: u8 = 1;
/// The built-in dictionary v1: synthetic HL7 v2 and the JSON shapes of the store's values.
static DICTIONARY_V1: &[u8] = include_bytes!("dictionary-v1.txt");

/// Values shorter than this are kept as they are.
const COMPRESS_FROM: usize = 96;
/// Longest decoded value accepted (a stored length above it is corruption, not a value).
const MAX_DECODED: usize = 64 * 1024 * 1024;

/// Compresses `body` under `tag` when that saves an eighth or more; else `None`.
fn compress(tag: u8, body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < COMPRESS_FROM || body.len() > MAX_DECODED {
        return None;
    }
    let mut out = Vec::with_capacity(6 + lz4_flex::block::get_maximum_output_size(body.len()));
    out.push(tag);
    out.push(DICT_NONE);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let start = out.len();
    out.resize(
        start + lz4_flex::block::get_maximum_output_size(body.len()),
        0,
    );
    let n = lz4_flex::block::compress_into(body, &mut out[start..]).ok()?;
    out.truncate(start + n);
    (out.len() + body.len() / 8 <= body.len()).then_some(out)
}

/// Decodes the body of a compressed value (after its tag).
fn decompress(ks: Keyspace, key: &[u8], rest: &[u8]) -> Result<Vec<u8>, StoreError> {
    let corrupt = |detail: &str| StoreError::Decode {
        key: KeyRef::new(ks, key),
        detail: detail.to_string(),
    };
    let (&dict, rest) = rest
        .split_first()
        .ok_or_else(|| corrupt("compressed value is truncated"))?;
    let dictionary: &[u8] = match dict {
        DICT_NONE => &[],
        DICT_V1 => DICTIONARY_V1,
        _ => return Err(corrupt("compressed value names an unknown dictionary")),
    };
    let (len, block) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("compressed value is truncated"))?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_DECODED {
        return Err(corrupt("compressed value states an impossible length"));
    }
    let mut out = vec![0u8; len];
    let n = lz4_flex::block::decompress_into_with_dict(block, &mut out, dictionary)
        .map_err(|_| corrupt("compressed value does not decompress"))?;
    if n != len {
        return Err(corrupt("compressed value decompresses to another length"));
    }
    Ok(out)
}

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
    if ks != Keyspace::Meta
        && let Some(small) = compress(TAG_JSON_LZ4, &out[1..])
    {
        return Ok(small);
    }
    Ok(out)
}

/// Encodes opaque bytes: compressed (tag 0x04) when that pays, else verbatim (tag 0x02).
pub(crate) fn encode_bytes(ks: Keyspace, bytes: &[u8]) -> Vec<u8> {
    if ks != Keyspace::Images
        && let Some(small) = compress(TAG_BYTES_LZ4, bytes)
    {
        return small;
    }
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
        Some((&TAG_JSON_LZ4, rest)) => {
            let body = decompress(ks, key, rest)?;
            serde_json::from_slice(&body).map_err(|e| StoreError::Decode {
                key: KeyRef::new(ks, key),
                detail: sanitize_json_error(&e),
            })
        }
        Some((&TAG_BYTES_V1 | &TAG_BYTES_LZ4, _)) => Err(StoreError::WrongEncoding {
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
        Some((&TAG_BYTES_LZ4, rest)) => decompress(ks, key, rest),
        Some((&TAG_JSON_V1 | &TAG_JSON_LZ4, _)) => Err(StoreError::WrongEncoding {
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

/// The stored value of a pack of byte values (see [`TAG_IN_PACK`]).
pub(crate) fn encode_pack(ks: Keyspace, members: &[&[u8]]) -> Vec<u8> {
    let total: usize = members.iter().map(|m| 4 + m.len()).sum();
    let mut framed = Vec::with_capacity(total);
    for m in members {
        framed.extend_from_slice(&(m.len() as u32).to_le_bytes());
        framed.extend_from_slice(m);
    }
    encode_bytes(ks, &framed)
}

/// The stored value pointing at member `index` of pack `pack`.
pub(crate) fn pack_pointer(pack: u64, index: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    out.push(TAG_IN_PACK);
    out.extend_from_slice(&pack.to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out
}

/// The pack and index a stored value points at, if it is a pointer. A value tagged as one
/// but of another length is corruption.
pub(crate) fn pack_pointer_of(
    ks: Keyspace,
    key: &[u8],
    stored: &[u8],
) -> Result<Option<(u64, u32)>, StoreError> {
    match stored.split_first() {
        Some((&TAG_IN_PACK, rest)) => {
            let Some((pack, index)) = rest.split_first_chunk::<8>() else {
                return Err(StoreError::Decode {
                    key: KeyRef::new(ks, key),
                    detail: "pack pointer is truncated".into(),
                });
            };
            let Ok(index) = <[u8; 4]>::try_from(index) else {
                return Err(StoreError::Decode {
                    key: KeyRef::new(ks, key),
                    detail: "pack pointer has the wrong length".into(),
                });
            };
            Ok(Some((u64::from_be_bytes(*pack), u32::from_be_bytes(index))))
        }
        _ => Ok(None),
    }
}

/// Member `index` of a stored pack (`key` is the member's key, for errors).
pub(crate) fn pack_member(
    ks: Keyspace,
    key: &[u8],
    pack: &[u8],
    index: u32,
) -> Result<Vec<u8>, StoreError> {
    let corrupt = |detail: &str| StoreError::Decode {
        key: KeyRef::new(ks, key),
        detail: detail.to_string(),
    };
    let framed = decode_bytes(ks, key, pack)?;
    let mut rest = framed.as_slice();
    for i in 0..=index {
        let (len, after) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt("pack ends before the member"))?;
        let len = u32::from_le_bytes(*len) as usize;
        if after.len() < len {
            return Err(corrupt("pack member is truncated"));
        }
        if i == index {
            return Ok(after[..len].to_vec());
        }
        rest = &after[len..];
    }
    Err(corrupt("pack ends before the member"))
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

    /// The dictionary of tag 1 is part of the on-disk format: editing it would make every
    /// value compressed with it unreadable. A new dictionary is a new file and number.
    #[test]
    fn the_built_in_dictionary_never_changes() {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(DICTIONARY_V1);
        assert_eq!(
            super::super::hex_lower(&digest),
            "7eae72f1d2fa0c04b29b69c3817e41974603ecbf4e919b89de0cfec43c2abef8"
        );
    }

    #[test]
    fn values_worth_it_are_compressed_and_read_back() {
        // A screening result of five analytes, as analyzers send them.
        let raw = b"MSH|^~\\&|ANALYZER|LAB|CUSTODIAN|LAB|20261201101500||ORU^R01^ORU_R01|C1|P|2.5.1\rPID|1||S-42^^^LAB^SID\rOBR|1||S-42|DOT5^DOT 5 panel^L|||20261201101500\rOBX|1|NM|THC50^THC50^L||12|ng/mL|<50|N|||F\rOBX|2|NM|COC150^COC150^L||40|ng/mL|<150|N|||F\rOBX|3|NM|OPI2000^OPI2000^L||0|ng/mL|<2000|N|||F\rOBX|4|NM|AMP500^AMP500^L||0|ng/mL|<500|N|||F\rOBX|5|NM|PCP25^PCP25^L||0|ng/mL|<25|N|||F\r".to_vec();
        let stored = encode_bytes(Keyspace::Raw, &raw);
        assert_eq!((stored[0], stored[1]), (TAG_BYTES_LZ4, DICT_NONE));
        assert!(
            stored.len() + raw.len() / 8 <= raw.len(),
            "{} of {}",
            stored.len(),
            raw.len()
        );
        assert_eq!(decode_bytes(Keyspace::Raw, b"k", &stored).unwrap(), raw);
        // Images stay verbatim; short values too.
        assert_eq!(encode_bytes(Keyspace::Images, &raw)[0], TAG_BYTES_V1);
        assert_eq!(encode_bytes(Keyspace::Raw, b"short")[0], TAG_BYTES_V1);
        // The threshold: 95 bytes stay as they are, 96 are compressed (when it pays).
        let run = |n: usize| {
            b"OBX|1|NM|THC50^THC50^L||0|ng/mL"
                .iter()
                .copied()
                .cycle()
                .take(n)
                .collect::<Vec<u8>>()
        };
        assert_eq!(
            encode_bytes(Keyspace::Raw, &run(COMPRESS_FROM - 1))[0],
            TAG_BYTES_V1
        );
        assert_eq!(
            encode_bytes(Keyspace::Raw, &run(COMPRESS_FROM))[0],
            TAG_BYTES_LZ4
        );
        // Data that does not shrink by an eighth stays verbatim.
        let noise: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(encode_bytes(Keyspace::Raw, &noise)[0], TAG_BYTES_V1);
        let rec = Rec {
            id: "specimen_id ".repeat(12),
            n: 7,
        };
        let stored = encode_json(Keyspace::Specimens, b"k", &rec).unwrap();
        assert_eq!(stored[0], TAG_JSON_LZ4);
        assert_eq!(
            decode_json::<Rec>(Keyspace::Specimens, b"k", &stored).unwrap(),
            rec
        );
        // Read as the other encoding: refused, as for the verbatim tags.
        assert!(matches!(
            decode_bytes(Keyspace::Specimens, b"k", &stored),
            Err(StoreError::WrongEncoding { .. })
        ));
    }

    /// Stores written before hold values compressed with dictionary v1 (no longer written):
    /// they read unchanged, and a value of dictionary v1 read without it would not.
    #[test]
    fn values_written_with_dictionary_v1_read_unchanged() {
        let raw = b"MSH|^~\\&|ANALYZER|LAB|CUSTODIAN|LAB|20261201101500||ORU^R01^ORU_R01|C1|P|2.5.1\rPID|1||S-42^^^LAB^SID\rOBX|1|NM|THC50^THC50^L||12|ng/mL|<50|N|||F\r".to_vec();
        let rec = Rec {
            id: "specimen_id ".repeat(12),
            n: 7,
        };
        let json = serde_json::to_vec(&rec).unwrap();
        for (tag, body) in [(TAG_BYTES_LZ4, &raw), (TAG_JSON_LZ4, &json)] {
            let mut v1 = vec![tag, DICT_V1];
            v1.extend_from_slice(&(body.len() as u32).to_le_bytes());
            let mut block = vec![0u8; lz4_flex::block::get_maximum_output_size(body.len())];
            let n =
                lz4_flex::block::compress_into_with_dict(body, &mut block, DICTIONARY_V1).unwrap();
            v1.extend_from_slice(&block[..n]);
            if tag == TAG_BYTES_LZ4 {
                assert_eq!(decode_bytes(Keyspace::Raw, b"k", &v1).unwrap(), raw);
            } else {
                assert_eq!(
                    decode_json::<Rec>(Keyspace::Specimens, b"k", &v1).unwrap(),
                    rec
                );
            }
            let mut undictionaried = v1.clone();
            undictionaried[1] = DICT_NONE;
            assert!(
                decode_bytes(Keyspace::Raw, b"k", &undictionaried).is_err()
                    || decode_bytes(Keyspace::Raw, b"k", &undictionaried).unwrap() != *body
            );
        }
    }

    #[test]
    fn corrupt_compressed_values_are_decode_errors_without_content() {
        let raw = vec![b'A'; 4096];
        let mut stored = encode_bytes(Keyspace::Raw, &raw);
        assert_eq!(stored[0], TAG_BYTES_LZ4);
        // A stated length beyond the limit, an unknown dictionary, a damaged block.
        let mut long = stored.clone();
        long[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut dict = stored.clone();
        dict[1] = 9;
        let n = stored.len();
        stored[n - 3] ^= 0xff;
        stored.truncate(n - 1);
        for bad in [long, dict, stored, vec![TAG_BYTES_LZ4]] {
            let err = decode_bytes(Keyspace::Raw, b"k", &bad).unwrap_err();
            assert!(matches!(err, StoreError::Decode { .. }), "{err:?}");
            assert!(!err.to_string().contains("AAAA"));
        }
    }

    #[test]
    fn bytes_round_trip_carries_tag() {
        let raw = b"MSH|^~\\&|chem1\r".to_vec();
        let stored = encode_bytes(Keyspace::Raw, &raw);
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
            decode_json::<Rec>(Keyspace::Raw, b"k", &encode_bytes(Keyspace::Raw, b"x")),
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
