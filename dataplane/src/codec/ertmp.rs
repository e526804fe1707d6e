//! Enhanced RTMP (E-RTMP, the 2023 spec OBS 30 and FFmpeg 7+ push HEVC,
//! AV1 and VP9 with) video tag bodies, read without decoding, for the
//! re-encoder that makes H264 of them for WebRTC players.
//!
//! ```text
//! [1 | frame type (3) | packet type (4)] [FourCC (4)] ...
//!   packet type 0 SequenceStart: the codec's configuration record
//!               (hvcC, av1C, vpcC)
//!   packet type 1 CodedFrames:   hvc1: a composition time (SI24), then length-prefixed NALs;
//!                                av01: OBUs (low-overhead format); vp09: a frame
//!   packet type 3 CodedFramesX:  as CodedFrames, with no composition time
//! ```
//!
//! Legacy FLV's first byte has its top bit clear (frame types 1-5), so a
//! set bit is an E-RTMP body whatever its low bits say.

/// IsExHeader, the first byte's top bit.
const EX_HEADER: u8 = 0x80;
/// Packet types: a configuration record, coded frames (with a composition
/// time for hvc1 and avc1, or without: `X`).
const SEQUENCE_START: u8 = 0;
const CODED_FRAMES: u8 = 1;
const CODED_FRAMES_X: u8 = 3;

/// Whether a video tag body is E-RTMP (its first byte's top bit set).
pub fn is_enhanced(body: &[u8]) -> bool {
    body.first().is_some_and(|b| b & EX_HEADER != 0)
}

/// Whether an E-RTMP body, whatever its FourCC, is a sequence start (the
/// configuration record a player needs first).
pub fn is_sequence_start(body: &[u8]) -> bool {
    is_enhanced(body) && body[0] & 0x0f == SEQUENCE_START && body.len() > 5
}

/// Whether an E-RTMP body, whatever its FourCC, is a keyframe's coded frame.
pub fn is_keyframe(body: &[u8]) -> bool {
    is_enhanced(body)
        && (body[0] >> 4) & 0x07 == 1
        && matches!(body[0] & 0x0f, CODED_FRAMES | CODED_FRAMES_X)
        && body.len() > 5
}

/// An E-RTMP body's FourCC as a number (`onMetaData`'s `videocodecid`).
pub fn fourcc_number(body: &[u8]) -> Option<u32> {
    let f = body.get(1..5).filter(|_| is_enhanced(body))?;
    Some(u32::from_be_bytes([f[0], f[1], f[2], f[3]]))
}

/// A codec E-RTMP carries that the re-encoder decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fourcc {
    Hevc,
    Av1,
    Vp9,
}

impl Fourcc {
    fn of(fourcc: &[u8]) -> Option<Fourcc> {
        match fourcc {
            b"hvc1" => Some(Fourcc::Hevc),
            b"av01" => Some(Fourcc::Av1),
            b"vp09" => Some(Fourcc::Vp9),
            _ => None,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Fourcc::Hevc => "HEVC",
            Fourcc::Av1 => "AV1",
            Fourcc::Vp9 => "VP9",
        }
    }
}

/// What an E-RTMP video tag body holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Tag<'a> {
    /// The codec's configuration record.
    Config { codec: Fourcc, record: &'a [u8] },
    /// A coded frame, its composition time offset (ms, hvc1 only).
    Frame {
        codec: Fourcc,
        key: bool,
        cts: i32,
        data: &'a [u8],
    },
    /// Anything else (the end of a sequence, metadata, multitrack, ModEx).
    Other,
}

/// The codec of an E-RTMP video tag body, `None` for a legacy body or a
/// FourCC the re-encoder does not decode.
pub fn codec(body: &[u8]) -> Option<Fourcc> {
    Fourcc::of(body.get(1..5).filter(|_| is_enhanced(body))?)
}

/// An E-RTMP video tag body, read; `None` if it is legacy, of another
/// FourCC, or cut short.
pub fn read(body: &[u8]) -> Option<Tag<'_>> {
    let codec = codec(body)?;
    let b = body[0];
    let rest = &body[5..];
    Some(match b & 0x0f {
        SEQUENCE_START => Tag::Config {
            codec,
            record: rest,
        },
        packet @ (CODED_FRAMES | CODED_FRAMES_X) => {
            let (cts, data) = if packet == CODED_FRAMES && codec == Fourcc::Hevc {
                (super::composition_offset(&body[3..]), rest.get(3..)?)
            } else {
                (0, rest)
            };
            Tag::Frame {
                codec,
                key: (b >> 4) & 0x07 == 1,
                cts,
                data,
            }
        }
        _ => Tag::Other,
    })
}

/// The parameter sets (VPS, SPS, PPS, ...) of an HEVC decoder
/// configuration record (ISO/IEC 14496-15 §8.3.3), in order, and its NAL
/// length size; `None` if it is cut short.
pub fn hevc_parameter_sets(hvcc: &[u8]) -> Option<(Vec<&[u8]>, usize)> {
    let length_size = (*hvcc.get(21)? & 0x03) as usize + 1;
    let arrays = *hvcc.get(22)?;
    let mut at = 23;
    let mut sets = Vec::new();
    for _ in 0..arrays {
        let n = u16::from_be_bytes([*hvcc.get(at + 1)?, *hvcc.get(at + 2)?]);
        at += 3;
        for _ in 0..n {
            let len = u16::from_be_bytes([*hvcc.get(at)?, *hvcc.get(at + 1)?]) as usize;
            sets.push(hvcc.get(at + 2..at + 2 + len)?);
            at += 2 + len;
        }
    }
    Some((sets, length_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_of_each_kind() {
        let config = [&[0x90][..], b"av01", &[0x81, 0, 0x0c, 0]].concat();
        assert_eq!(
            read(&config),
            Some(Tag::Config {
                codec: Fourcc::Av1,
                record: &[0x81, 0, 0x0c, 0]
            })
        );
        // hvc1 CodedFrames: a composition time of 66 ms, then the NALs.
        let hevc = [&[0xa1][..], b"hvc1", &[0, 0, 66, 0, 0, 0, 1, 0x26]].concat();
        assert_eq!(
            read(&hevc),
            Some(Tag::Frame {
                codec: Fourcc::Hevc,
                key: false,
                cts: 66,
                data: &[0, 0, 0, 1, 0x26]
            })
        );
        // CodedFramesX: no composition time, whatever the codec.
        let x = [&[0x93][..], b"hvc1", &[0, 0, 0, 1, 0x26]].concat();
        assert!(
            matches!(read(&x), Some(Tag::Frame { key: true, cts: 0, data, .. }) if data.len() == 5)
        );
        let vp9 = [&[0x91][..], b"vp09", &[0x82, 0x49]].concat();
        assert!(matches!(
            read(&vp9),
            Some(Tag::Frame {
                codec: Fourcc::Vp9,
                key: true,
                ..
            })
        ));
        assert_eq!(read(&[&[0x92][..], b"av01"].concat()), Some(Tag::Other));
        // Legacy H264, another FourCC, cut short: none of ours.
        assert_eq!(read(&[0x17, 1, 0, 0, 0]), None);
        assert_eq!(read(&[&[0x91][..], b"avc1", &[0, 0, 0]].concat()), None);
        assert_eq!(read(&[0x91, b'h', b'v']), None);
        assert_eq!(
            read(&[0xa1, b'h', b'v', b'c', b'1', 0]),
            None,
            "no room for the time"
        );
    }

    #[test]
    fn hevc_parameter_sets_in_order() {
        let mut hvcc = vec![0u8; 21];
        hvcc.push(0xff); // lengthSizeMinusOne 3
        hvcc.push(2); // two arrays
        hvcc.extend_from_slice(&[0x20, 0, 1, 0, 2, 0x40, 0x01]); // VPS
        hvcc.extend_from_slice(&[0x21, 0, 2, 0, 1, 0x42, 0, 1, 0x44]); // SPS, then a PPS in the same array
        let (sets, len) = hevc_parameter_sets(&hvcc).unwrap();
        assert_eq!(sets, [&[0x40, 0x01][..], &[0x42], &[0x44]]);
        assert_eq!(len, 4);
        for n in 0..hvcc.len() {
            let _ = hevc_parameter_sets(&hvcc[..n]);
        }
        assert_eq!(hevc_parameter_sets(&hvcc[..hvcc.len() - 1]), None);
    }
}
