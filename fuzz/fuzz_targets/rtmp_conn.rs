#![no_main]
// RTMP from a hostile peer: see dataplane::rtmp::conn.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| dataplane::rtmp::conn::fuzz_conn(data));
