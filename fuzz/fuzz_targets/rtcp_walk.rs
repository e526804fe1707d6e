#![no_main]
// See dataplane::rtcp::fuzz_walk (the same body runs as a unit test on stable).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dataplane::rtcp::fuzz_walk(data));
