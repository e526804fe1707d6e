//! What a datagram on a WebRTC port is, from its first byte (RFC 7983 §7).
//!
//! ```text
//!             +----------------+
//!             |        [0..3] -+--> forward to STUN
//!             |      [20..63] -+--> forward to DTLS
//!             |    [128..191] -+--> forward to RTP/RTCP
//!             +----------------+
//! ```

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Stun,
    Dtls,
    /// RTP or RTCP (tell them apart with [`crate::rtp::is_rtcp`]).
    Rtp,
    /// ZRTP, TURN channels and anything else: dropped as malformed here.
    Other,
}

pub fn classify(datagram: &[u8]) -> Protocol {
    match datagram.first() {
        Some(0..=3) => Protocol::Stun,
        Some(20..=63) => Protocol::Dtls,
        Some(128..=191) => Protocol::Rtp,
        _ => Protocol::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7983_ranges() {
        assert_eq!(classify(&[0x00, 0x01]), Protocol::Stun);
        assert_eq!(classify(&[3]), Protocol::Stun);
        assert_eq!(classify(&[22, 0xfe, 0xfd]), Protocol::Dtls); // handshake, DTLS 1.2
        assert_eq!(classify(&[63]), Protocol::Dtls);
        assert_eq!(classify(&[0x80, 96]), Protocol::Rtp);
        assert_eq!(classify(&[191]), Protocol::Rtp);
        for b in [4u8, 19, 64, 127, 192, 255] {
            assert_eq!(classify(&[b]), Protocol::Other, "{b}");
        }
        assert_eq!(classify(&[]), Protocol::Other);
    }
}
