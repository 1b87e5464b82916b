#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| drop(custodian::codec::lims::parse_document(data, custodian::codec::lims::DEFAULT_MAX_BYTES)));
