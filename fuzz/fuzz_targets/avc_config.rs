#![no_main]
// See dataplane::codec::h264::fuzz_config (the same body runs as a unit test on stable).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dataplane::codec::h264::fuzz_config(data));
