#![no_main]
// SDP offers from anyone who can reach WHIP/WHEP: the controlplane's parser
// and negotiation, compiled in from its source (the controlplane is a binary).
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../controlplane/src/offer.rs"]
mod offer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(o) = offer::parse(text) {
        for mode in [offer::Mode::Publish, offer::Mode::Play] {
            let _ = offer::negotiate(&o, mode, &gateway_ring::msg::Codec::VIDEO);
        }
    }
});
