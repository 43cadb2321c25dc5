#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| voxproxy_suite::fuzz::capture_reader(data));
