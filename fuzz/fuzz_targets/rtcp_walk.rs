#![no_main]
// See dataplane::rtcp::fuzz_walk and dataplane::bwe::fuzz_feedback (the
// same bodies run as a unit test on stable).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dataplane::rtcp::fuzz_walk(data);
    dataplane::bwe::fuzz_feedback(data);
});
