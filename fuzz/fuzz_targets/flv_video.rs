#![no_main]
// FLV video tag bodies from a hostile RTMP publisher: see dataplane::codec::h264.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dataplane::codec::h264::fuzz_flv(data));
