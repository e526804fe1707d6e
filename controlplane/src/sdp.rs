//! The session description an RTP egress receiver (e.g. ffmpeg) opens.
//!
//! Video arrives on `port`, audio on `port + 2` (RTCP on the odd ports, as
//! RFC 3550 §11 suggests and ffmpeg expects). With SRTP each m-line carries
//! an RFC 4568 `a=crypto` line with the same master key.

use std::fmt::Write;
use std::net::Ipv4Addr;

use gateway_ring::SessionId;

use crate::state::SrtpParams;

pub const VIDEO_PT: u8 = 96;
pub const AUDIO_PT: u8 = 111;

pub fn egress_sdp(
    session: SessionId,
    room: &str,
    origin: Ipv4Addr,
    host: Ipv4Addr,
    port: u16,
    srtp: Option<&SrtpParams>,
) -> String {
    let proto = if srtp.is_some() {
        "RTP/SAVP"
    } else {
        "RTP/AVP"
    };
    let crypto = srtp
        .map(|s| format!("a=crypto:1 {} inline:{}\r\n", s.suite_name(), s.key_b64()))
        .unwrap_or_default();
    let mut sdp = String::new();
    // Writing into a String cannot fail.
    let _ = write!(
        sdp,
        "v=0\r\no=- {session} 1 IN IP4 {origin}\r\ns=mediagw {room}\r\nc=IN IP4 {host}\r\nt=0 0\r\n\
         m=video {port} {proto} {VIDEO_PT}\r\na=rtpmap:{VIDEO_PT} H264/90000\r\na=fmtp:{VIDEO_PT} packetization-mode=1\r\n{crypto}\
         m=audio {} {proto} {AUDIO_PT}\r\na=rtpmap:{AUDIO_PT} opus/48000/2\r\n{crypto}",
        port + 2
    );
    sdp
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_ring::msg::{SrtpKey, SrtpSuite};

    #[test]
    fn plain_and_srtp_descriptions() {
        let lo = Ipv4Addr::LOCALHOST;
        let plain = egress_sdp(SessionId::new(7), "demo", lo, lo, 5004, None);
        assert!(plain.contains("m=video 5004 RTP/AVP 96\r\n"));
        assert!(plain.contains("m=audio 5006 RTP/AVP 111\r\n"));
        assert!(!plain.contains("crypto"));
        let key = SrtpParams(SrtpKey::new(SrtpSuite::AesCm128HmacSha1_80, &[0; 30]).unwrap());
        let s = egress_sdp(SessionId::new(7), "demo", lo, lo, 5004, Some(&key));
        assert_eq!(
            s.matches("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:AAAA")
                .count(),
            2
        );
        assert!(s.contains("m=video 5004 RTP/SAVP 96"));
    }
}
