#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(custodian::lims::parse_document(data, custodian::lims::DEFAULT_MAX_BYTES)));
