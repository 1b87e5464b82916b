#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::codec::hl7::fuzz::parse_checked(data));
