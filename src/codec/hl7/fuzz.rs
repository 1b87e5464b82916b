//! Entry points for the cargo-fuzz targets in `tests/fuzz` (one line each) and for regression
//! tests. Each runs the public API on arbitrary bytes and asserts properties that must hold for
//! every input; an assertion failure here is a bug the fuzzer found. Never called by the daemon.

use super::ack::{self, AckCode, ErrorDetail, Outcome};
use super::message::{ParseError, parse};
use super::oru::{Mapping, extract};
use std::sync::OnceLock;

const ACK_CONTROL_ID: &str = "CUST-1";
const ACK_TIME: &str = "20240101120000";

/// Parses `data`; on success checks the accessors and that every ACK built for it parses and
/// mirrors the control id; on failure checks that the reject ACK parses.
pub fn parse_checked(data: &[u8]) {
    match parse(data) {
        Ok(msg) => {
            let h = msg.header();
            assert!(!h.control_id.is_empty());
            assert_eq!(msg.get("MSH-10"), Some(h.control_id.as_str()));
            assert_eq!(msg.segments()[0].id(), "MSH");
            for seg in msg.segments() {
                for n in 1..=seg.field_count() {
                    let f = seg.field(n).expect("field within count");
                    let _ = f.text();
                }
            }
            for code in [
                AckCode::AA,
                AckCode::AE,
                AckCode::AR,
                AckCode::CA,
                AckCode::CR,
            ] {
                let bytes = ack::build_ack(h, code, None, ACK_CONTROL_ID, ACK_TIME);
                check_ack(&bytes, code, &h.control_id);
            }
            for outcome in [
                Outcome::Accepted,
                Outcome::Error,
                Outcome::Rejected,
                Outcome::StorageFailed,
            ] {
                let plan = ack::plan(h, outcome);
                if h.ack_mode == super::AckMode::Original {
                    assert_eq!(plan.accept, None);
                    assert_eq!(plan.application, Some(outcome.application_code()));
                }
            }
        }
        Err(e) => check_reject(data, &e),
    }
}

/// Parses `data` and extracts results with the mapping in `mapping_toml` (which must be valid);
/// checks that the ACK for the outcome parses.
pub fn extract_checked(mapping_toml: &str, data: &[u8]) {
    // Parsed once per process: the fuzzer calls this millions of times with the same text.
    static MAPPING: OnceLock<(String, Mapping)> = OnceLock::new();
    let cached = MAPPING.get_or_init(|| {
        let m = Mapping::from_analyzer_toml(mapping_toml).expect("fuzz mapping must be valid");
        (mapping_toml.to_owned(), m)
    });
    let parsed_here;
    let mapping = if cached.0 == mapping_toml {
        &cached.1
    } else {
        parsed_here =
            Mapping::from_analyzer_toml(mapping_toml).expect("fuzz mapping must be valid");
        &parsed_here
    };
    match parse(data) {
        Ok(msg) => {
            let h = msg.header();
            match extract(&msg, mapping) {
                Ok(results) => {
                    assert!(!results.specimen_id.is_empty());
                    let bytes = ack::build_ack(h, AckCode::AA, None, ACK_CONTROL_ID, ACK_TIME);
                    check_ack(&bytes, AckCode::AA, &h.control_id);
                }
                Err(e) => {
                    let detail = ErrorDetail::from(&e);
                    let bytes =
                        ack::build_ack(h, e.ack_code(), Some(&detail), ACK_CONTROL_ID, ACK_TIME);
                    check_ack(&bytes, e.ack_code(), &h.control_id);
                }
            }
        }
        Err(e) => check_reject(data, &e),
    }
}

fn check_ack(bytes: &[u8], code: AckCode, mirrored: &str) {
    let ack = parse(bytes).expect("an ACK custodian builds must parse");
    assert_eq!(ack.header().message_type, "ACK");
    assert_eq!(ack.header().control_id, ACK_CONTROL_ID);
    assert_eq!(ack.get("MSA-1"), Some(code.as_str()));
    assert_eq!(ack.get("MSA-2"), Some(mirrored));
    assert_eq!(ack.segment("ERR").is_some(), !code.is_success());
}

fn check_reject(data: &[u8], e: &ParseError) {
    let bytes = ack::build_reject_for_unparsed(data, e, ACK_CONTROL_ID, ACK_TIME);
    let mirrored = ack::scan_control_id(data).unwrap_or_default();
    check_ack(&bytes, AckCode::AR, &mirrored);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_mapping() -> String {
        std::fs::read_to_string(format!(
            "{}/tests/data/hl7/mapping-example.toml",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// Regression (found by `hl7_extract`): with `-` as the subcomponent separator, MSH-18
    /// `UNICODE UTF-8` read back through the delimiters became `UNICODE UTF`, and the ACK
    /// carried a charset that does not exist.
    #[test]
    fn regression_dash_subcomponent_separator_and_utf8_charset() {
        let bytes = b"MSH|^~\\-|A|B|C|D|2024-01||ORU^R01|9|P|2.5||||||UNICODE UTF-8\rOBR|1||0012345\rOBX|1|NM|THC50||1|ng/mL|||||F\r";
        let msg = parse(bytes).unwrap();
        assert_eq!(msg.header().charset_field, "UNICODE UTF-8");
        assert_eq!(msg.get("MSH-7"), Some("2024"));
        parse_checked(bytes);
        extract_checked(&example_mapping(), bytes);
    }

    #[test]
    fn fixtures_and_seeds_pass_the_fuzz_properties() {
        let mapping = example_mapping();
        for dir in [
            "tests/data/hl7",
            "tests/fuzz/corpus/hl7_parse",
            "tests/fuzz/corpus/hl7_extract",
        ] {
            let path = format!("{}/{dir}", env!("CARGO_MANIFEST_DIR"));
            let mut n = 0;
            for entry in std::fs::read_dir(&path).unwrap() {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                parse_checked(&bytes);
                extract_checked(&mapping, &bytes);
                n += 1;
            }
            assert!(n >= 8, "{dir} holds the seed files");
        }
    }
}
