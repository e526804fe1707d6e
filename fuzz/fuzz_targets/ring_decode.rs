//! Any bytes in a ring slot either decode to a message that re-encodes to
//! itself, or are rejected with an error: never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    gateway_ring::msg::fuzz_decode(data);
});
