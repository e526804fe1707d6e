//! VP8 over RTP (RFC 7741), read without decoding: the payload
//! descriptor in front of each packet's VP8 data says where a frame's
//! first partition starts, and the VP8 payload header there whether the
//! frame is a keyframe. The descriptor's picture id and TL0PICIDX are
//! found here too, for a line that renumbers them. [`Depacketizer`] joins
//! a frame's packets for the transcoder (FLV does not carry VP8).
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! |X|R|N|S|R| PID |   required
//! |I|L|T|K| RSV   |   X: extensions present
//! |M| PictureID   |   I: 7 bits, or 15 with M
//! |  (PictureID)  |
//! |   TL0PICIDX   |   L
//! |TID|Y| KEYIDX  |   T or K
//! VP8 payload: frame tag (P bit: 0 = keyframe), and for a keyframe the
//! start code 9d 01 2a and the picture size.
//! ```

use super::frames::Frames;
use super::Out;

/// What a VP8 payload descriptor says, as offsets into the RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// S: this packet starts a partition ...
    pub start: bool,
    /// ... PID: which one (0: the frame's first).
    pub partition: u8,
    /// Where the picture id is, and whether it is 15 bits (M) or 7.
    pub picture_id: Option<(usize, bool)>,
    /// Where TL0PICIDX is.
    pub tl0: Option<usize>,
    /// Where the VP8 data begins.
    pub payload: usize,
}

/// The descriptor of an RTP payload, `None` if it is cut short.
pub fn descriptor(p: &[u8]) -> Option<Descriptor> {
    let b0 = *p.first()?;
    let mut d = Descriptor {
        start: b0 & 0x10 != 0,
        partition: b0 & 0x07,
        picture_id: None,
        tl0: None,
        payload: 1,
    };
    if b0 & 0x80 != 0 {
        let x = *p.get(1)?;
        let mut i = 2;
        if x & 0x80 != 0 {
            let wide = *p.get(i)? & 0x80 != 0;
            d.picture_id = Some((i, wide));
            i += if wide { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            d.tl0 = Some(i);
            i += 1;
        }
        if x & 0x30 != 0 {
            i += 1;
        }
        d.payload = i;
    }
    (d.payload < p.len()).then_some(d)
}

/// Whether an RTP payload begins a keyframe: the first packet of the
/// first partition, whose frame tag's P bit is 0, with the keyframe start
/// code after it.
pub fn starts_keyframe(p: &[u8]) -> bool {
    let Some(d) = descriptor(p) else {
        return false;
    };
    let vp8 = &p[d.payload..];
    d.start && d.partition == 0 && vp8[0] & 0x01 == 0 && vp8.get(3..6) == Some(&[0x9d, 0x01, 0x2a])
}

/// The picture size a keyframe declares (RFC 6386 §9.1: 14 bits each
/// after the start code), `None` if `frame` is not a keyframe's start.
pub fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    if frame.first()? & 0x01 != 0 || frame.get(3..6)? != [0x9d, 0x01, 0x2a] {
        return None;
    }
    let w = u16::from_le_bytes([*frame.get(6)?, *frame.get(7)?]) & 0x3fff;
    let h = u16::from_le_bytes([*frame.get(8)?, *frame.get(9)?]) & 0x3fff;
    Some((w as u32, h as u32))
}

/// VP8 RTP payloads into whole frames (RFC 7741 §4.5: the descriptor
/// stripped, the partitions joined; a frame begins at S with partition 0
/// and ends at the marker), for the transcoder.
#[derive(Default)]
pub struct Depacketizer {
    frames: Frames,
}

impl Depacketizer {
    pub fn push(&mut self, seq: u16, ts: u32, marker: bool, p: &[u8], out: &mut Vec<Out>) {
        let Some(d) = descriptor(p) else {
            self.frames.lost(out);
            return;
        };
        let begins = d.start && d.partition == 0;
        if self
            .frames
            .packet(seq, ts, begins, begins && starts_keyframe(p), out)
        {
            self.frames.frame.extend_from_slice(&p[d.payload..]);
            if self.frames.too_large() {
                self.frames.lost(out);
                return;
            }
        }
        if marker {
            self.frames.end(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyframe's first packet as Chrome sends it: X, S; I with a
    /// 15-bit picture id, L (T set too), then the frame tag and start code.
    const KEY: [u8; 14] = [
        0x90,
        0xe0,
        0x80 | 0x12,
        0x34,
        0x07,
        0x20,
        0x50,
        0x2a,
        0x00,
        0x9d,
        0x01,
        0x2a,
        0x80,
        0x02,
    ];

    #[test]
    fn a_keyframe_and_its_numbered_fields() {
        let d = descriptor(&KEY).unwrap();
        assert_eq!(d.picture_id, Some((2, true)));
        assert_eq!(d.tl0, Some(4));
        assert_eq!(d.payload, 6);
        assert!(starts_keyframe(&KEY));
    }

    #[test]
    fn not_keyframes() {
        let mut delta = KEY;
        delta[6] |= 0x01; // P: an inter frame
        assert!(!starts_keyframe(&delta));
        let mut later = KEY;
        later[0] &= !0x10; // not the partition's start
        assert!(!starts_keyframe(&later));
        let mut second = KEY;
        second[0] |= 0x01; // partition 1
        assert!(!starts_keyframe(&second));
        let mut code = KEY;
        code[9] = 0; // no start code
        assert!(!starts_keyframe(&code));
        // Minimal descriptor, 7-bit id absent: a keyframe still.
        assert!(starts_keyframe(&[0x10, 0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a]));
    }

    /// Every cut of a packet is refused or read within bounds: never a
    /// panic.
    #[test]
    fn short_and_malformed_descriptors() {
        for n in 0..KEY.len() {
            let _ = starts_keyframe(&KEY[..n]);
            if let Some(d) = descriptor(&KEY[..n]) {
                assert!(d.payload < n);
            }
        }
        assert_eq!(descriptor(&[0x90, 0xe0, 0x80]), None);
    }
}
