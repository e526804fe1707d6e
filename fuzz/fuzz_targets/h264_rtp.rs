#![no_main]
// H264 RTP payloads from a hostile publisher: see dataplane::codec::h264.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dataplane::codec::h264::fuzz_depacketize(data));
