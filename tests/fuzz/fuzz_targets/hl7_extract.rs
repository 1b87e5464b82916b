#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::codec::hl7::fuzz::extract_checked(
    include_str!("../../data/hl7/mapping-example.toml"),
    data
));
