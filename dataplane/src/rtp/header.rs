//! RFC 3550 §5.1 fixed header, read and rewritten in place.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |V=2|P|X|  CC   |M|     PT      |       sequence number         |
//! |                           timestamp                           |
//! |           synchronization source (SSRC) identifier            |
//! ```

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    #[error("packet shorter than its header")]
    UnexpectedEnd,
    #[error("RTP version is not 2")]
    BadVersion,
}

/// Parsed fixed-header fields of one RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpHeader {
    pub marker: bool,
    pub pt: u8,
    pub seq_no: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Bytes of header including CSRCs and the extension: the payload starts here.
    pub len: usize,
}

impl RtpHeader {
    pub fn parse(pkt: &[u8]) -> Result<RtpHeader, RtpError> {
        if pkt.len() < 12 {
            return Err(RtpError::UnexpectedEnd);
        }
        if pkt[0] >> 6 != 2 {
            return Err(RtpError::BadVersion);
        }
        let cc = (pkt[0] & 0x0f) as usize;
        let mut len = 12 + 4 * cc;
        if pkt[0] & 0x10 != 0 {
            // RFC 3550 §5.3.1: 16-bit profile, 16-bit length in 32-bit words.
            if pkt.len() < len + 4 {
                return Err(RtpError::UnexpectedEnd);
            }
            let words = u16::from_be_bytes([pkt[len + 2], pkt[len + 3]]) as usize;
            len += 4 + 4 * words;
        }
        if pkt.len() < len {
            return Err(RtpError::UnexpectedEnd);
        }
        Ok(RtpHeader {
            marker: pkt[1] & 0x80 != 0,
            pt: pkt[1] & 0x7f,
            seq_no: u16::from_be_bytes([pkt[2], pkt[3]]),
            timestamp: u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]),
            ssrc: u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
            len,
        })
    }

    /// Rewrites payload type, sequence number, timestamp and SSRC of a packet
    /// whose header was already parsed (so it is at least 12 bytes long).
    pub fn rewrite(pkt: &mut [u8], pt: u8, seq_no: u16, timestamp: u32, ssrc: u32) {
        pkt[1] = (pkt[1] & 0x80) | (pt & 0x7f);
        pkt[2..4].copy_from_slice(&seq_no.to_be_bytes());
        pkt[4..8].copy_from_slice(&timestamp.to_be_bytes());
        pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
    }
}

/// RFC 5761 §4: with RTCP muxed on the RTP port, packet types 192-223 (the
/// second byte, which for RTP holds M|PT) are RTCP (SR 200, RR 201, ...).
pub fn is_rtcp(pkt: &[u8]) -> bool {
    pkt.len() >= 8 && (192..=223).contains(&pkt[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_csrcs_and_extension() {
        // V=2 X=1 CC=1, M=1 PT=96, seq 0x1234, ts 0xdeadbeef, ssrc 0x01020304,
        // one CSRC, extension of one word, then payload "pp".
        let pkt = [
            0x91, 0xe0, 0x12, 0x34, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 9, 9, 9, 9, 0xbe, 0xde, 0,
            1, 7, 7, 7, 7, b'p', b'p',
        ];
        let h = RtpHeader::parse(&pkt).unwrap();
        assert_eq!(
            h,
            RtpHeader {
                marker: true,
                pt: 96,
                seq_no: 0x1234,
                timestamp: 0xdead_beef,
                ssrc: 0x0102_0304,
                len: 24
            }
        );
        assert_eq!(RtpHeader::parse(&pkt[..20]), Err(RtpError::UnexpectedEnd));
    }

    #[test]
    fn rejects_short_and_wrong_version() {
        assert_eq!(RtpHeader::parse(&[0x80; 11]), Err(RtpError::UnexpectedEnd));
        assert_eq!(RtpHeader::parse(&[0x40; 12]), Err(RtpError::BadVersion));
    }

    #[test]
    fn rewrite_keeps_marker() {
        let mut pkt = [0x80, 0xe0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        RtpHeader::rewrite(&mut pkt, 111, 7, 8, 9);
        let h = RtpHeader::parse(&pkt).unwrap();
        assert!(h.marker);
        assert_eq!((h.pt, h.seq_no, h.timestamp, h.ssrc), (111, 7, 8, 9));
    }

    #[test]
    fn rtcp_is_told_from_rtp_by_packet_type() {
        assert!(is_rtcp(&[0x80, 200, 0, 6, 0, 0, 0, 1]));
        assert!(!is_rtcp(&[0x80, 96, 0, 6, 0, 0, 0, 1]));
        assert!(!is_rtcp(&[0x80, 0xe0, 0, 6, 0, 0, 0, 1])); // marker + PT 96
    }
}
