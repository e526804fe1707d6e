//! The RTCP an SFU acts on (RFC 3550, RFC 4585, RFC 5104), read and written
//! on caller buffers.
//!
//! Why not the `rtcp` crate: it boxes every packet of a compound (~0.7 µs
//! for SR+SDES) and brings tokio into the dataplane build; we need five
//! message types and no allocation. The crate's parser is used in the
//! end-to-end tests, and real browsers and aiortc exercise this one.

use crate::srtp::be_u32;

/// The sender-info part of an SR (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderInfo {
    pub ssrc: u32,
    pub ntp: u64,
    pub rtp_ts: u32,
    pub packets: u32,
    pub octets: u32,
}

/// What one packet of a compound asks for or reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feedback {
    /// Sender report: NTP time and the RTP timestamp at that instant.
    SenderReport(SenderInfo),
    /// Picture loss indication, or a full intra request: send a keyframe.
    KeyframeRequest { media_ssrc: u32 },
    /// Generic NACK (RFC 4585 §6.2.1): packet `pid` and those flagged in `blp`.
    Nack { media_ssrc: u32, pid: u16, blp: u16 },
    /// RTCP BYE from the peer.
    Bye,
}

impl Feedback {
    /// Sequence numbers a NACK entry names.
    pub fn nacked(pid: u16, blp: u16) -> impl Iterator<Item = u16> {
        std::iter::once(pid).chain(
            (0..16)
                .filter(move |i| blp & (1 << i) != 0)
                .map(move |i| pid.wrapping_add(i + 1)),
        )
    }
}

const SR: u8 = 200;
const BYE: u8 = 203;
const RTPFB: u8 = 205;
const PSFB: u8 = 206;

/// Calls `f` for every item of a compound packet it understands. Returns
/// `false` if the compound is malformed (what came before was still reported).
pub fn walk(mut buf: &[u8], mut f: impl FnMut(Feedback)) -> bool {
    while !buf.is_empty() {
        if buf.len() < 4 || buf[0] >> 6 != 2 {
            return false;
        }
        let fmt = buf[0] & 0x1f;
        let pt = buf[1];
        let len = (u16::from_be_bytes([buf[2], buf[3]]) as usize + 1) * 4;
        if len > buf.len() {
            return false;
        }
        let p = &buf[..len];
        match pt {
            SR if len >= 28 => f(Feedback::SenderReport(SenderInfo {
                ssrc: be_u32(&p[4..]),
                ntp: ((be_u32(&p[8..]) as u64) << 32) | be_u32(&p[12..]) as u64,
                rtp_ts: be_u32(&p[16..]),
                packets: be_u32(&p[20..]),
                octets: be_u32(&p[24..]),
            })),
            BYE => f(Feedback::Bye),
            RTPFB if fmt == 1 && len >= 12 => {
                let media_ssrc = be_u32(&p[8..]);
                for fci in p[12..].chunks_exact(4) {
                    f(Feedback::Nack {
                        media_ssrc,
                        pid: u16::from_be_bytes([fci[0], fci[1]]),
                        blp: u16::from_be_bytes([fci[2], fci[3]]),
                    });
                }
            }
            PSFB if fmt == 1 && len >= 12 => f(Feedback::KeyframeRequest {
                media_ssrc: be_u32(&p[8..]),
            }),
            // FIR names its targets in the FCI (RFC 5104 §4.3.1).
            PSFB if fmt == 4 && len >= 12 => {
                for fci in p[12..].chunks_exact(8) {
                    f(Feedback::KeyframeRequest {
                        media_ssrc: be_u32(fci),
                    });
                }
            }
            _ => {}
        }
        buf = &buf[len..];
    }
    true
}

/// The transport-cc feedback packets (RTPFB fmt 15) of a compound, whole,
/// for [`crate::bwe`] to read; stops at the first malformed one.
pub fn transport_feedbacks(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || loop {
        if buf.len() < 4 || buf[0] >> 6 != 2 {
            return None;
        }
        let len = (u16::from_be_bytes([buf[2], buf[3]]) as usize + 1) * 4;
        let p = buf.get(..len)?;
        buf = &buf[len..];
        if p[1] == RTPFB && p[0] & 0x1f == 15 {
            return Some(p);
        }
    })
}

fn header(out: &mut [u8], fmt: u8, pt: u8, words_minus_one: u16) {
    out[0] = 0x80 | fmt;
    out[1] = pt;
    out[2..4].copy_from_slice(&words_minus_one.to_be_bytes());
}

/// Writes a PLI (12 bytes); returns its length.
pub fn write_pli(out: &mut [u8], sender_ssrc: u32, media_ssrc: u32) -> usize {
    header(out, 1, PSFB, 2);
    out[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    out[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    12
}

/// Writes a generic NACK for `pid` and the 16 following flagged in `blp`.
pub fn write_nack(out: &mut [u8], sender_ssrc: u32, media_ssrc: u32, pid: u16, blp: u16) -> usize {
    header(out, 1, RTPFB, 3);
    out[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    out[8..12].copy_from_slice(&media_ssrc.to_be_bytes());
    out[12..14].copy_from_slice(&pid.to_be_bytes());
    out[14..16].copy_from_slice(&blp.to_be_bytes());
    16
}

/// Writes a REMB (draft-alvestrand-rmcat-remb-03: PSFB fmt 15, "REMB",
/// the bitrate as an 18-bit mantissa and a 6-bit exponent) for up to 255
/// `ssrcs`; returns its length, 0 if `out` is too short.
pub fn write_remb(out: &mut [u8], sender_ssrc: u32, bps: u64, ssrcs: &[u32]) -> usize {
    let n = ssrcs.len().min(255);
    let len = 20 + 4 * n;
    if out.len() < len {
        return 0;
    }
    let (mut mantissa, mut exp) = (bps, 0u32);
    while mantissa > 0x3_ffff {
        mantissa >>= 1;
        exp += 1;
    }
    header(out, 15, PSFB, (len / 4 - 1) as u16);
    out[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    out[8..12].copy_from_slice(&0u32.to_be_bytes());
    out[12..16].copy_from_slice(b"REMB");
    let word = (n as u32) << 24 | (exp.min(63)) << 18 | mantissa as u32;
    out[16..20].copy_from_slice(&word.to_be_bytes());
    for (i, s) in ssrcs[..n].iter().enumerate() {
        out[20 + 4 * i..24 + 4 * i].copy_from_slice(&s.to_be_bytes());
    }
    len
}

/// One reception report block (RFC 3550 §6.4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    pub cumulative_lost: u32,
    pub highest_seq: u32,
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP time, and the delay since it in 1/65536 s.
    pub lsr: u32,
    pub dlsr: u32,
}

/// Writes a receiver report with up to 31 blocks; returns its length.
pub fn write_rr(out: &mut [u8], sender_ssrc: u32, blocks: &[ReportBlock]) -> usize {
    let n = blocks.len().min(31);
    let len = 8 + 24 * n;
    header(out, n as u8, 201, (len / 4 - 1) as u16);
    out[4..8].copy_from_slice(&sender_ssrc.to_be_bytes());
    for (i, b) in blocks[..n].iter().enumerate() {
        let o = &mut out[8 + 24 * i..8 + 24 * (i + 1)];
        o[0..4].copy_from_slice(&b.ssrc.to_be_bytes());
        o[4] = b.fraction_lost;
        o[5..8].copy_from_slice(&b.cumulative_lost.min(0x7f_ffff).to_be_bytes()[1..]);
        o[8..12].copy_from_slice(&b.highest_seq.to_be_bytes());
        o[12..16].copy_from_slice(&b.jitter.to_be_bytes());
        o[16..20].copy_from_slice(&b.lsr.to_be_bytes());
        o[20..24].copy_from_slice(&b.dlsr.to_be_bytes());
    }
    len
}

/// Writes a sender report without report blocks; returns its length.
pub fn write_sr(out: &mut [u8], info: &SenderInfo) -> usize {
    header(out, 0, SR, 6);
    out[4..8].copy_from_slice(&info.ssrc.to_be_bytes());
    out[8..16].copy_from_slice(&info.ntp.to_be_bytes());
    out[16..20].copy_from_slice(&info.rtp_ts.to_be_bytes());
    out[20..24].copy_from_slice(&info.packets.to_be_bytes());
    out[24..28].copy_from_slice(&info.octets.to_be_bytes());
    28
}

/// Writes a BYE for `ssrcs` (at most 31); returns its length.
pub fn write_bye(out: &mut [u8], ssrcs: &[u32]) -> usize {
    let n = ssrcs.len().min(31);
    let len = 4 + 4 * n;
    header(out, n as u8, BYE, (len / 4 - 1) as u16);
    for (i, s) in ssrcs[..n].iter().enumerate() {
        out[4 + 4 * i..8 + 4 * i].copy_from_slice(&s.to_be_bytes());
    }
    len
}

/// The body of the `rtcp_walk` fuzz target: any compound walks or fails
/// cleanly, every item it reports is within the packet, and what the
/// writers make of a reported item walks back to the same item.
pub fn fuzz_walk(data: &[u8]) {
    let mut items = Vec::new();
    walk(data, |f| items.push(f));
    let mut out = [0u8; 64];
    for f in items {
        let n = match f {
            Feedback::KeyframeRequest { media_ssrc } => write_pli(&mut out, 1, media_ssrc),
            Feedback::Nack {
                media_ssrc,
                pid,
                blp,
            } => write_nack(&mut out, 1, media_ssrc, pid, blp),
            Feedback::SenderReport(info) => write_sr(&mut out, &info),
            Feedback::Bye => write_bye(&mut out, &[1]),
        };
        let mut back = Vec::new();
        assert!(walk(&out[..n], |g| back.push(g)));
        assert_eq!(back, vec![f]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(buf: &[u8]) -> (bool, Vec<Feedback>) {
        let mut v = Vec::new();
        let ok = walk(buf, |f| v.push(f));
        (ok, v)
    }

    #[test]
    fn written_packets_walk_back() {
        let mut buf = [0u8; 256];
        let sr = SenderInfo {
            ssrc: 9,
            ntp: 0x1122_3344_5566_7788,
            rtp_ts: 90_000,
            packets: 10,
            octets: 1000,
        };
        let mut n = write_sr(&mut buf, &sr);
        n += write_pli(&mut buf[n..], 1, 0xabc);
        n += write_nack(&mut buf[n..], 1, 0xabc, 65535, 0b101);
        n += write_rr(&mut buf[n..], 1, &[ReportBlock::default(); 2]);
        n += write_bye(&mut buf[n..], &[5, 6]);
        let (ok, items) = collect(&buf[..n]);
        assert!(ok);
        assert_eq!(
            items,
            vec![
                Feedback::SenderReport(sr),
                Feedback::KeyframeRequest { media_ssrc: 0xabc },
                Feedback::Nack {
                    media_ssrc: 0xabc,
                    pid: 65535,
                    blp: 0b101
                },
                Feedback::Bye,
            ]
        );
        let seqs: Vec<u16> = Feedback::nacked(65535, 0b101).collect();
        assert_eq!(seqs, vec![65535, 0, 2]);
    }

    #[test]
    fn remb_carries_mantissa_exponent_and_ssrcs() {
        let mut buf = [0u8; 64];
        // 1.5 Mbit/s: 1_500_000 = 187_500 << 3.
        let n = write_remb(&mut buf, 0x0102_0304, 1_500_000, &[0xaa, 0xbb]);
        assert_eq!(n, 28);
        assert_eq!(&buf[..4], &[0x8f, 206, 0, 6]);
        assert_eq!(&buf[12..16], b"REMB");
        let word = u32::from_be_bytes(buf[16..20].try_into().unwrap());
        assert_eq!(word >> 24, 2);
        let (exp, mantissa) = ((word >> 18) & 0x3f, word & 0x3_ffff);
        assert_eq!((mantissa as u64) << exp, 1_500_000);
        assert_eq!(u32::from_be_bytes(buf[24..28].try_into().unwrap()), 0xbb);
        // Our own walker passes over it (a publisher's REMB asks nothing of us).
        let (ok, items) = collect(&buf[..n]);
        assert!(ok && items.is_empty(), "{items:?}");
        assert_eq!(write_remb(&mut buf[..20], 1, 1, &[1]), 0, "too short");
    }

    /// A FIR from RFC 5104 §4.3.1's layout: two targets.
    #[test]
    fn fir_names_each_target() {
        let mut p = vec![0x84, 206, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0];
        p.extend_from_slice(&[0, 0, 0, 7, 1, 0, 0, 0, 0, 0, 0, 8, 1, 0, 0, 0]);
        let (ok, items) = collect(&p);
        assert!(ok);
        assert_eq!(
            items,
            vec![
                Feedback::KeyframeRequest { media_ssrc: 7 },
                Feedback::KeyframeRequest { media_ssrc: 8 }
            ]
        );
    }

    #[test]
    fn malformed_compounds_stop_the_walk_without_panicking() {
        for junk in [
            &[0x80u8, 200, 0, 50][..],
            &[0x40, 200, 0, 0],
            &[0x80, 206],
            &[0x81, 206, 0, 1, 0, 0, 0, 1],
        ] {
            let (ok, _) = collect(junk);
            assert!(!ok || junk.len() == 8, "{junk:?}");
        }
        for len in 0..64 {
            let buf: Vec<u8> = (0..len).map(|i| (i * 37 + 0x80) as u8).collect();
            collect(&buf);
        }
    }
}
