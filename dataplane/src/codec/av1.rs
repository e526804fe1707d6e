//! AV1 over RTP (the AOM "RTP Payload Format for AV1"), read without
//! decoding: each packet opens with an aggregation header, then OBU
//! elements (each with a LEB128 length, but the last when W says how many
//! there are). A keyframe's first packet starts a coded video sequence:
//! the sender sets N there, and it carries the sequence header OBU first
//! (checked too, for a sender that does not set N). AV1 has no picture
//! id in its payload to renumber. [`Depacketizer`] rebuilds a temporal
//! unit's OBUs for the transcoder (FLV does not carry AV1).
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! |Z|Y| W |N|-|-|-|   Z: continues an OBU of the last packet; W: OBU count (0: all sized)
//! [LEB128 size] OBU header |F| type(4) |X|S|-| ...
//! ```

use super::frames::Frames;
use super::Out;

/// OBU types: a sequence header, and those the RTP format leaves out of
/// a temporal unit (a temporal delimiter, a tile list, padding).
const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;
const OBU_TILE_LIST: u8 = 8;
const OBU_PADDING: u8 = 15;

/// A temporal delimiter OBU with its (empty) size: what opens each
/// temporal unit of the low-overhead bitstream format (AV1 spec §7.5).
const TEMPORAL_DELIMITER: [u8; 2] = [OBU_TEMPORAL_DELIMITER << 3 | 0x02, 0];

/// A LEB128 value at `p[*i..]` (at most 8 bytes), `*i` moved past it.
fn leb128(p: &[u8], i: &mut usize) -> Option<usize> {
    let mut v = 0u64;
    for shift in 0..8 {
        let b = *p.get(*i)?;
        *i += 1;
        v |= ((b & 0x7f) as u64) << (7 * shift);
        if b & 0x80 == 0 {
            return usize::try_from(v).ok();
        }
    }
    None
}

fn write_leb128(mut v: usize, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// AV1 RTP payloads into temporal units in the low-overhead bitstream
/// format (each OBU with its size field, a temporal delimiter first), for
/// the transcoder: OBU elements joined across packets (Z, Y), the OBUs
/// the RTP format drops left out; a temporal unit is the packets of one
/// RTP time, ended by the marker.
#[derive(Default)]
pub struct Depacketizer {
    frames: Frames,
    /// The OBU an element of the last packet began and this one continues (Y, Z).
    obu: Vec<u8>,
}

impl Depacketizer {
    pub fn push(&mut self, seq: u16, ts: u32, marker: bool, p: &[u8], out: &mut Vec<Out>) {
        let Some(&a) = p.first() else {
            self.frames.lost(out);
            return;
        };
        let (z, y, w) = (a & 0x80 != 0, a & 0x40 != 0, ((a >> 4) & 0x03) as usize);
        let begins = !z && !self.frames.in_frame(ts);
        if self
            .frames
            .packet(seq, ts, begins, begins && starts_keyframe(p), out)
        {
            if begins {
                self.obu.clear();
                self.frames.frame.extend_from_slice(&TEMPORAL_DELIMITER);
            }
            if self.elements(p, z, y, w).is_none() || self.frames.too_large() {
                self.obu.clear();
                self.frames.lost(out);
                return;
            }
        } else {
            self.obu.clear();
        }
        if marker {
            self.frames.end(out);
        }
    }

    /// The packet's OBU elements after its aggregation header, each OBU
    /// written to the frame once whole; `None` if they do not fit the packet.
    fn elements(&mut self, p: &[u8], z: bool, y: bool, w: usize) -> Option<()> {
        let mut i = 1;
        let mut k = 0;
        while i < p.len() {
            k += 1;
            let len = if w != 0 && k == w {
                p.len() - i
            } else {
                leb128(p, &mut i)?
            };
            let elem = p.get(i..i.checked_add(len)?)?;
            i += len;
            if k == 1 && z {
                if self.obu.is_empty() {
                    return None; // continues an OBU no packet began
                }
                self.obu.extend_from_slice(elem);
            } else {
                if !self.obu.is_empty() {
                    return None; // the OBU before was said to go on, and did not
                }
                self.obu.extend_from_slice(elem);
            }
            if self.obu.len() > super::frames::MAX_FRAME {
                return None;
            }
            let continues = y && i == p.len();
            if !continues {
                write_obu(&self.obu, &mut self.frames.frame)?;
                self.obu.clear();
            }
            if w != 0 && k == w {
                break;
            }
        }
        Some(())
    }
}

/// One whole OBU as the RTP format carries it (its header, usually
/// without a size field), written with its size field; the types the
/// format drops are left out. `None` if it is malformed.
fn write_obu(obu: &[u8], frame: &mut Vec<u8>) -> Option<()> {
    let &h = obu.first()?;
    if h & 0x80 != 0 {
        return None; // the forbidden bit
    }
    if matches!(
        (h >> 3) & 0x0f,
        OBU_TEMPORAL_DELIMITER | OBU_TILE_LIST | OBU_PADDING
    ) {
        return Some(());
    }
    let header = 1 + usize::from(h & 0x04 != 0);
    let rest = obu.get(header..)?;
    if h & 0x02 != 0 {
        frame.extend_from_slice(obu); // it carries its size already
    } else {
        frame.push(h | 0x02);
        frame.extend_from_slice(&obu[1..header]);
        write_leb128(rest.len(), frame);
        frame.extend_from_slice(rest);
    }
    Some(())
}

/// The type of the first OBU that begins in this packet, if the packet
/// begins one and its element is within the packet.
fn first_obu_type(p: &[u8]) -> Option<u8> {
    let a = *p.first()?;
    if a & 0x80 != 0 {
        return None; // Z: the first element continues an OBU
    }
    let mut i = 1;
    if (a >> 4) & 0x03 != 1 {
        // Sized: a LEB128 length, within the packet.
        let len = leb128(p, &mut i)?;
        if len == 0 || len > p.len() - i {
            return None;
        }
    }
    let header = *p.get(i)?;
    (header & 0x80 == 0).then_some((header >> 3) & 0x0f)
}

/// Whether an RTP payload begins a keyframe: the first packet of a coded
/// video sequence (N), or one opening with a sequence header.
pub fn starts_keyframe(p: &[u8]) -> bool {
    match p.first() {
        Some(a) if a & 0x80 == 0 && a & 0x08 != 0 => true,
        Some(_) => first_obu_type(p) == Some(OBU_SEQUENCE_HEADER),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_by_n_or_a_sequence_header() {
        // N, W=2: a new coded video sequence.
        assert!(starts_keyframe(&[0x28, 0x0a, 0x0b, 0x00]));
        // No N, but a sequence header first (W=1: unsized).
        assert!(starts_keyframe(&[0x10, 0x08, 0x00, 0x00]));
        // W=0: sized, a sequence header of 3 bytes.
        assert!(starts_keyframe(&[0x00, 0x03, 0x08, 0x00, 0x00]));
        // A frame OBU (type 6), no N.
        assert!(!starts_keyframe(&[0x10, 0x30, 0x00]));
        // Z: continues the last packet's OBU, whatever follows.
        assert!(!starts_keyframe(&[0x98, 0x08]));
        assert!(!starts_keyframe(&[]));
    }

    #[test]
    fn lengths_past_the_packet_are_refused() {
        assert_eq!(first_obu_type(&[0x00, 0x09, 0x08, 0x00]), None);
        assert_eq!(first_obu_type(&[0x00, 0xff, 0xff, 0xff]), None);
        assert_eq!(
            first_obu_type(&[0x00, 0x00, 0x08]),
            None,
            "an empty element"
        );
        // The forbidden bit.
        assert_eq!(first_obu_type(&[0x10, 0x88]), None);
        for n in 0..6 {
            let _ = starts_keyframe(&[0x00, 0x83, 0x80, 0x80, 0x80, 0x01][..n]);
        }
    }

    fn coded(out: &[Out]) -> Vec<(bool, u32, Vec<u8>)> {
        out.iter()
            .filter_map(|o| match o {
                Out::Coded { key, rtp_ts, frame } => Some((*key, *rtp_ts, frame.clone())),
                _ => None,
            })
            .collect()
    }

    /// A temporal unit in three packets, as the payload format lays it out:
    /// a temporal delimiter (to be dropped) and a sequence header in the
    /// first (sized elements), a frame OBU split over the second and the
    /// third (Y, then Z; W=1). Out comes one temporal unit of the low
    /// overhead format: a delimiter, then each OBU with its size field.
    #[test]
    fn a_temporal_unit_rebuilt_with_sized_obus() {
        let mut d = Depacketizer::default();
        let mut out = Vec::new();
        let seq_header = [0x08, 0xaa, 0xbb];
        // N (new sequence), W=0: every element sized.
        let mut p1 = vec![0x08, 1, 0x10];
        p1.push(seq_header.len() as u8);
        p1.extend_from_slice(&seq_header);
        d.push(1, 900, false, &p1, &mut out);
        // Y, W=1: a frame OBU (type 6) begins, to go on in the next packet.
        d.push(2, 900, false, &[0x50, 0x30, 1, 2, 3], &mut out);
        // Z, W=1: its end; the marker ends the temporal unit.
        d.push(3, 900, true, &[0x90, 4, 5], &mut out);
        let tu = [
            0x12, 0x00, // temporal delimiter
            0x0a, 2, 0xaa, 0xbb, // sequence header, S set, its size
            0x32, 5, 1, 2, 3, 4, 5, // frame, S set, its size
        ];
        assert_eq!(coded(&out), [(true, 900, tu.to_vec())]);
        // The next unit: a frame OBU with an extension byte, whole in one packet.
        out.clear();
        d.push(4, 3900, true, &[0x10, 0x34, 0x48, 9], &mut out);
        assert_eq!(
            coded(&out),
            [(false, 3900, vec![0x12, 0, 0x36, 0x48, 1, 9])]
        );
    }

    /// Elements that run past the packet, an OBU said to go on that does
    /// not, the forbidden bit: the unit is dropped as a loss, and nothing
    /// after it until a keyframe.
    #[test]
    fn malformed_units_are_dropped_until_a_keyframe() {
        let mut d = Depacketizer::default();
        let mut out = Vec::new();
        d.push(1, 0, true, &[0x18, 0x08, 0x00], &mut out); // a keyframe: sequence header
        assert_eq!(coded(&out).len(), 1);
        // Z on a new unit's packet: it continues an OBU no packet began.
        out.clear();
        d.push(10, 5000, false, &[0x18, 0x08, 0x00], &mut out);
        d.push(11, 5000, true, &[0x90, 0x30, 0x07], &mut out);
        assert!(coded(&out).is_empty(), "an orphan continuation");
        d.push(12, 6000, true, &[0x18, 0x08, 0x00], &mut out);
        assert_eq!(coded(&out).len(), 1, "the next keyframe");
        out.clear();
        for (seq, bad) in [
            (2u16, &[0x00, 0x09, 0x30][..]), // element size past the packet
            (3, &[0x90, 0x30, 1]),           // Z with nothing to continue
            (4, &[0x10, 0xb0]),              // the forbidden bit
        ] {
            out.clear();
            d.push(seq, seq as u32 * 3000, true, bad, &mut out);
            assert!(coded(&out).is_empty(), "{bad:?}");
        }
        out.clear();
        d.push(5, 15000, true, &[0x10, 0x30, 7], &mut out);
        assert!(coded(&out).is_empty(), "an inter frame after a loss");
        d.push(6, 18000, true, &[0x18, 0x08, 0x00], &mut out);
        assert_eq!(coded(&out).len(), 1, "the next keyframe");
        for n in 0..8 {
            let mut d = Depacketizer::default();
            d.push(
                1,
                0,
                true,
                &[0x08, 0x83, 0x80, 0x80, 0x80, 0x01, 0x08, 0x00][..n],
                &mut out,
            );
        }
    }
}
