#![no_main]
// See dataplane::fuzz::fuzz_core (the same body runs as a unit test on stable).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dataplane::fuzz::fuzz_core(data);
});
