#![no_main]
// See dataplane::fuzz::two_shards::fuzz_two_shards (the same body runs as a unit test on stable).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    dataplane::fuzz::two_shards::fuzz_two_shards(data);
});
