//! AV1 over RTP (the AOM "RTP Payload Format for AV1"), read without
//! decoding: each packet opens with an aggregation header, then OBU
//! elements (each with a LEB128 length, but the last when W says how many
//! there are). A keyframe's first packet starts a coded video sequence:
//! the sender sets N there, and it carries the sequence header OBU first
//! (checked too, for a sender that does not set N). AV1 has no picture
//! id in its payload to renumber.
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! |Z|Y| W |N|-|-|-|   Z: continues an OBU of the last packet; W: OBU count (0: all sized)
//! [LEB128 size] OBU header |F| type(4) |X|S|-| ...
//! ```

/// OBU type of a sequence header.
const OBU_SEQUENCE_HEADER: u8 = 1;

/// The type of the first OBU that begins in this packet, if the packet
/// begins one and its element is within the packet.
fn first_obu_type(p: &[u8]) -> Option<u8> {
    let a = *p.first()?;
    if a & 0x80 != 0 {
        return None; // Z: the first element continues an OBU
    }
    let mut i = 1;
    if (a >> 4) & 0x03 != 1 {
        // Sized: a LEB128 length (at most 8 bytes), within the packet.
        let mut len = 0u64;
        for shift in 0..8 {
            let b = *p.get(i)?;
            i += 1;
            len |= ((b & 0x7f) as u64) << (7 * shift);
            if b & 0x80 == 0 {
                break;
            }
        }
        if len == 0 || len > (p.len() - i) as u64 {
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
}
