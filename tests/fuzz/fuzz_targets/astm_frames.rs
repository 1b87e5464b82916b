#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| custodian::codec::astm::fuzz::frames_checked(data));
