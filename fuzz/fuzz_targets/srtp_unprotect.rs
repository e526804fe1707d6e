#![no_main]
// See dataplane::srtp::fuzz_unprotect (the same body runs as a unit test on stable).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dataplane::srtp::fuzz_unprotect(data));
