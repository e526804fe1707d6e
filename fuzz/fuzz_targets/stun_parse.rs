//! Any datagram on a WebRTC port that looks like STUN parses or is rejected,
//! and the integrity, fingerprint and address checks never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    dataplane::ice::stun::fuzz_parse(data);
});
