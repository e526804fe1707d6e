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
use super::{ertmp, Out, Pushed, RtpWriter, RTP_PAYLOAD};

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

/// The OBUs of a temporal unit in the low-overhead format (each with its
/// size field, or the last running to the end), as the RTP format carries
/// them: without their size fields, and without the types it drops.
/// `None` if one is malformed.
fn rtp_obus(mut data: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut obus = Vec::new();
    while !data.is_empty() {
        let h = data[0];
        if h & 0x80 != 0 {
            return None; // the forbidden bit
        }
        let header = 1 + usize::from(h & 0x04 != 0);
        let mut i = header;
        let len = if h & 0x02 != 0 {
            leb128(data, &mut i)?
        } else {
            data.len().checked_sub(header)?
        };
        let end = i.checked_add(len).filter(|&e| e <= data.len())?;
        if !matches!(
            (h >> 3) & 0x0f,
            OBU_TEMPORAL_DELIMITER | OBU_TILE_LIST | OBU_PADDING
        ) {
            let mut obu = Vec::with_capacity(header + len);
            obu.push(h & !0x02);
            obu.extend_from_slice(&data[1..header]);
            obu.extend_from_slice(&data[i..end]);
            obus.push(obu);
        }
        data = &data[end..];
    }
    Some(obus)
}

/// The type of an OBU (its header's first byte).
fn obu_type(obu: &[u8]) -> u8 {
    (obu[0] >> 3) & 0x0f
}

/// An E-RTMP push's AV1 (`av01` tags: temporal units in the low-overhead
/// format) into RTP (the AOM payload format) for WebRTC players that
/// offered AV1: the OBUs without size fields, each a sized element (W 0),
/// one split across packets where it does not fit (Y, then Z); a
/// keyframe opens a coded video sequence (N) with the sequence header
/// first, the configuration record's when the frame has none; the
/// marker on a temporal unit's last packet.
pub struct Packetizer {
    pub(super) rtp: RtpWriter,
    sequence_header: Vec<u8>,
}

impl Packetizer {
    /// For a push whose configuration record (`av1C`) is `record`; `None`
    /// unless it says profile 0 (main), the one the SDP offers.
    pub fn new(rtp: RtpWriter, record: &[u8]) -> Option<Packetizer> {
        let (&[marker, profile, ..], obus) = (record, record.get(4..).unwrap_or_default()) else {
            return None;
        };
        if marker != 0x81 || profile >> 5 != 0 {
            return None;
        }
        let sequence_header = rtp_obus(obus)
            .unwrap_or_default()
            .into_iter()
            .find(|o| obu_type(o) == OBU_SEQUENCE_HEADER)
            .unwrap_or_default();
        Some(Packetizer {
            rtp,
            sequence_header,
        })
    }

    pub fn push(&mut self, body: &[u8], ts: u32, out: &mut Vec<Vec<u8>>) -> Pushed {
        let Some(ertmp::Tag::Frame {
            codec: ertmp::Fourcc::Av1,
            key,
            data,
            ..
        }) = ertmp::read(body)
        else {
            return Pushed::Nothing;
        };
        let Some(mut obus) = rtp_obus(data).filter(|o| !o.is_empty()) else {
            return Pushed::Nothing;
        };
        if obu_type(&obus[0]) == OBU_SEQUENCE_HEADER {
            self.sequence_header.clone_from(&obus[0]);
        } else if key && !self.sequence_header.is_empty() {
            obus.insert(0, self.sequence_header.clone());
        }
        let new_sequence = key && obu_type(&obus[0]) == OBU_SEQUENCE_HEADER;
        // Payloads with their Z and Y: each element a LEB128 length (at
        // most 2 bytes within RTP_PAYLOAD) and its bytes.
        let mut payloads: Vec<(Vec<u8>, bool, bool)> = Vec::new();
        let (mut cur, mut z) = (Vec::with_capacity(RTP_PAYLOAD), false);
        for obu in &obus {
            let mut rest = &obu[..];
            while !rest.is_empty() {
                let room = RTP_PAYLOAD - 1 - cur.len();
                // An element of at least an OBU's header, extension and a
                // byte: a receiver need not join a header across packets.
                if room < 2 + 3 {
                    payloads.push((std::mem::take(&mut cur), z, false));
                    z = false;
                    continue;
                }
                let n = rest.len().min(room - 2);
                write_leb128(n, &mut cur);
                cur.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if !rest.is_empty() {
                    payloads.push((std::mem::take(&mut cur), z, true));
                    z = true;
                }
            }
        }
        if !cur.is_empty() {
            payloads.push((cur, z, false));
        }
        let last = payloads.len() - 1;
        for (i, (p, z, y)) in payloads.iter().enumerate() {
            let n = new_sequence && i == 0;
            let aggregation = (*z as u8) << 7 | (*y as u8) << 6 | (n as u8) << 3;
            self.rtp.packet(ts, i == last, &[&[aggregation], p], out);
        }
        Pushed::Packets
    }
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

    /// An E-RTMP AV1 keyframe (a temporal delimiter, a frame OBU of 3000
    /// bytes; the sequence header only in the configuration record) and an
    /// inter frame through the packetizer and back through the
    /// depacketizer: the keyframe opens a coded video sequence with the
    /// record's sequence header, the OBUs come back as they were (with
    /// their size fields), every packet within the budget; a profile 1
    /// record is not forwarded.
    #[test]
    fn av1_temporal_units_to_rtp_and_back() {
        let seq = [0x0a, 0x03, 0x00, 0x00, 0x00]; // sequence header, 3 bytes
        let record = [&[0x81, 0x08, 0x0c, 0x00][..], &seq].concat();
        assert!(Packetizer::new(RtpWriter::new(1, 96), &[0x81, 0x28, 0, 0]).is_none());
        let mut p = Packetizer::new(RtpWriter::new(1, 96), &record).unwrap();
        let mut frame_obu = vec![0x32, 0xb8, 0x17]; // frame OBU, 3000 bytes
        frame_obu.extend((0..3000).map(|i| i as u8));
        let key_tu = [&TEMPORAL_DELIMITER[..], &frame_obu].concat();
        let inter_obu = [0x32, 0x02, 0xaa, 0xbb];
        let tag = |key: u8, data: &[u8]| [&[0x80 | key << 4 | 1][..], b"av01", data].concat();
        let mut rtp = Vec::new();
        assert_eq!(p.push(&tag(1, &key_tu), 0, &mut rtp), Pushed::Packets);
        let first_inter = rtp.len();
        assert_eq!(p.push(&tag(2, &inter_obu), 3000, &mut rtp), Pushed::Packets);
        assert!(rtp.iter().all(|r| r.len() <= 12 + RTP_PAYLOAD));
        assert!(
            starts_keyframe(&rtp[0][12..]) && rtp[0][12] & 0x08 != 0,
            "N"
        );
        assert!(!starts_keyframe(&rtp[first_inter][12..]));
        let mut d = Depacketizer::default();
        let mut out = Vec::new();
        for r in &rtp {
            let h = crate::rtp::RtpHeader::parse(r).unwrap();
            d.push(h.seq_no, h.timestamp, h.marker, &r[12..], &mut out);
        }
        let want_key = [&TEMPORAL_DELIMITER[..], &seq, &frame_obu].concat();
        let want_inter = [&TEMPORAL_DELIMITER[..], &inter_obu].concat();
        assert_eq!(
            coded(&out),
            [(true, 0, want_key), (false, 3000, want_inter)]
        );
        // Junk: an OBU longer than its tag.
        assert_eq!(
            p.push(&tag(2, &[0x32, 0x09, 0x00]), 6000, &mut rtp),
            Pushed::Nothing
        );
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
