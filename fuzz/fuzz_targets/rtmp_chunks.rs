#![no_main]
// RTMP from a hostile peer: see dataplane::rtmp::chunk.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dataplane::rtmp::chunk::fuzz_chunks(data));
