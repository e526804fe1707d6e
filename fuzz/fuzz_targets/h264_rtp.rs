#![no_main]
// H264 RTP payloads from a hostile publisher: see dataplane::h264.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dataplane::h264::fuzz_depacketize(data));
