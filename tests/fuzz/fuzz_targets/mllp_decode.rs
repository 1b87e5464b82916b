#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::codec::mllp::fuzz_check(data));
