#![no_main]
// VP8, VP9 and AV1 (and H264) RTP payloads from a hostile publisher: see
// dataplane::codec::fuzz_payloads.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dataplane::codec::fuzz_payloads(data));
