//! VP9 over RTP (RFC 9628), read without decoding: the payload descriptor
//! in front of each packet's VP9 data says whether the packet begins a
//! frame (B), whether the frame refers to earlier ones (P: inter-picture
//! predicted) and which spatial layer it is. A keyframe's first packet is
//! a frame's beginning, not inter-predicted, on the lowest spatial layer
//! (an upper layer of a key picture is not inter-predicted either, but
//! depends on the layer under it). The picture id and TL0PICIDX are found
//! here too, for a line that renumbers them. [`Depacketizer`] joins a
//! frame's packets for the transcoder (FLV does not carry VP9).
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! |I|P|L|F|B|E|V|Z|   required
//! |M| PICTURE ID  |   I: 7 bits, or 15 with M
//! |  (PICTURE ID) |
//! | TID |U| SID |D|   L
//! |   TL0PICIDX   |   L and not F (non-flexible mode)
//! | P_DIFF      |N|   F and P: up to 3 reference differences
//! | scalability structure ...   V
//! ```

use super::frames::Frames;
use super::{ertmp, Out, Pushed, RtpWriter, RTP_PAYLOAD};

/// What a VP9 payload descriptor says, as offsets into the RTP payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    /// P: the frame refers to earlier frames.
    pub inter: bool,
    /// B: this packet begins a frame.
    pub begins: bool,
    /// Its spatial layer (0 without layer indices).
    pub spatial: u8,
    /// Where the picture id is, and whether it is 15 bits (M) or 7.
    pub picture_id: Option<(usize, bool)>,
    /// Where TL0PICIDX is (non-flexible mode only).
    pub tl0: Option<usize>,
    /// Where the VP9 data begins.
    pub payload: usize,
}

/// The descriptor of an RTP payload, `None` if it is cut short.
pub fn descriptor(p: &[u8]) -> Option<Descriptor> {
    let b0 = *p.first()?;
    let (inter, layers, flexible, scalability) = (
        b0 & 0x40 != 0,
        b0 & 0x20 != 0,
        b0 & 0x10 != 0,
        b0 & 0x02 != 0,
    );
    let mut d = Descriptor {
        inter,
        begins: b0 & 0x08 != 0,
        spatial: 0,
        picture_id: None,
        tl0: None,
        payload: 1,
    };
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let wide = *p.get(i)? & 0x80 != 0;
        d.picture_id = Some((i, wide));
        i += if wide { 2 } else { 1 };
    }
    if layers {
        d.spatial = (*p.get(i)? >> 1) & 0x07;
        i += 1;
        if !flexible {
            p.get(i)?;
            d.tl0 = Some(i);
            i += 1;
        }
    }
    if flexible && inter {
        // Up to three reference differences, N set on all but the last.
        for _ in 0..3 {
            let diff = *p.get(i)?;
            i += 1;
            if diff & 0x01 == 0 {
                break;
            }
        }
    }
    if scalability {
        let ss = *p.get(i)?;
        i += 1;
        let spatial_layers = (ss >> 5) as usize + 1;
        if ss & 0x10 != 0 {
            // Y: each layer's width and height, 16 bits each.
            i += 4 * spatial_layers;
        }
        if ss & 0x08 != 0 {
            // G: the picture group, each entry with its references.
            let pictures = *p.get(i)?;
            i += 1;
            for _ in 0..pictures {
                let refs = (*p.get(i)? >> 2) & 0x03;
                i += 1 + refs as usize;
            }
        }
    }
    d.payload = i;
    (i < p.len()).then_some(d)
}

/// Whether an RTP payload begins a keyframe: a frame's first packet, not
/// inter-predicted, on spatial layer 0, whose uncompressed header says
/// KEY_FRAME (a sender may leave P unset on inter frames: FFmpeg's does).
pub fn starts_keyframe(p: &[u8]) -> bool {
    descriptor(p).is_some_and(|d| d.begins && !d.inter && d.spatial == 0 && is_key(&p[d.payload..]))
}

/// Whether a VP9 frame's uncompressed header (VP9 spec §6.2) says it is a
/// keyframe: frame_marker 2, the profile (2 bits, a reserved zero after
/// profile 3), show_existing_frame 0, frame_type 0 (KEY_FRAME).
fn is_key(frame: &[u8]) -> bool {
    let Some(&b) = frame.first() else {
        return false;
    };
    let profile = ((b >> 5) & 1) | ((b >> 3) & 2);
    let flags = if profile == 3 { b << 1 } else { b };
    b >> 6 == 2 && flags & 0x0c == 0
}

/// VP9 RTP payloads into whole frames of spatial layer 0 (RFC 9628: the
/// descriptor stripped; a layer frame runs from B to E, a picture ends at
/// the marker), for the transcoder. Upper spatial layers are left out: the
/// decoder makes the lowest layer's picture from its own frames.
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
        // An upper layer's packets keep the sequence numbers counted: a gap
        // in them is no loss of layer 0, and they are not gathered.
        let ours = d.spatial == 0;
        let begins = ours && d.begins;
        let key = begins && !d.inter && is_key(&p[d.payload..]);
        if self.frames.packet(seq, ts, begins, key, out) && ours {
            self.frames.frame.extend_from_slice(&p[d.payload..]);
            if self.frames.too_large() {
                self.frames.lost(out);
                return;
            }
        }
        // E (end of the layer frame) on layer 0, or the picture's marker.
        if ours && (p[0] & 0x04 != 0 || marker) {
            self.frames.end(out);
        }
    }
}

/// An E-RTMP push's VP9 (`vp09` tags: whole frames, or superframes) into
/// RTP (RFC 9628) for WebRTC players that offered VP9: one layer,
/// non-flexible mode without layer indices, a 15-bit picture id per frame
/// (which a line renumbers across a change of publisher as it does a
/// browser's); B and E around each frame, P on inter frames, the marker on
/// a frame's last packet. libwebrtc finds the references of a stream
/// without TL0PICIDX by sequence number, as it does FFmpeg's VP9.
pub struct Packetizer {
    pub(super) rtp: RtpWriter,
    pub(super) picture: u16,
}

impl Packetizer {
    /// For a push whose configuration record (`vpcC`) is `record`; `None`
    /// unless it says profile 0, the one the SDP offers.
    pub fn new(rtp: RtpWriter, record: &[u8]) -> Option<Packetizer> {
        // FFmpeg writes the box's version (1) and flags before the record.
        let profile = match record {
            [1, 0, 0, 0, profile, ..] => *profile,
            [profile, ..] => *profile,
            [] => return None,
        };
        (profile == 0).then_some(Packetizer { rtp, picture: 0 })
    }

    pub fn push(&mut self, body: &[u8], ts: u32, out: &mut Vec<Vec<u8>>) -> Pushed {
        let Some(ertmp::Tag::Frame {
            codec: ertmp::Fourcc::Vp9,
            data,
            ..
        }) = ertmp::read(body)
        else {
            return Pushed::Nothing;
        };
        if data.is_empty() {
            return Pushed::Nothing;
        }
        let inter = if is_key(data) { 0 } else { 0x40 };
        let id = (self.picture & 0x7fff) | 0x8000;
        self.picture = self.picture.wrapping_add(1);
        let chunks = data.chunks(RTP_PAYLOAD - 3);
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.enumerate() {
            let b = if i == 0 { 0x08 } else { 0 };
            let e = if i == last { 0x04 } else { 0 };
            let head = [0x80 | inter | b | e, (id >> 8) as u8, id as u8];
            self.rtp.packet(ts, i == last, &[&head, chunk], out);
        }
        Pushed::Packets
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An E-RTMP VP9 keyframe of 3000 bytes and an inter frame through the
    /// packetizer and back through the depacketizer: the same frames, the
    /// first packet a keyframe's, picture ids one apart, every packet
    /// within the budget; a profile 2 stream is not forwarded.
    #[test]
    fn vp9_frames_to_rtp_and_back() {
        let mut p = Packetizer::new(RtpWriter::new(5, 96), &[1, 0, 0, 0, 0, 31, 0x80]).unwrap();
        assert!(Packetizer::new(RtpWriter::new(5, 96), &[1, 0, 0, 0, 2, 31, 0xa0]).is_none());
        let key: Vec<u8> = [0x82, 0x49, 0x83, 0x42, 0x00]
            .iter()
            .copied()
            .chain((0..2995).map(|i| i as u8))
            .collect();
        let inter = vec![0x86, 0x00, 0x40, 0x92];
        let tag =
            |key_flag: u8, data: &[u8]| [&[0x80 | key_flag << 4 | 1][..], b"vp09", data].concat();
        let mut rtp = Vec::new();
        assert_eq!(p.push(&tag(1, &key), 0, &mut rtp), Pushed::Packets);
        assert_eq!(p.push(&tag(2, &inter), 3000, &mut rtp), Pushed::Packets);
        assert_eq!(rtp.len(), 4, "3 for the keyframe, 1 for the inter frame");
        assert!(rtp.iter().all(|r| r.len() <= 12 + RTP_PAYLOAD));
        assert!(starts_keyframe(&rtp[0][12..]));
        assert!(!starts_keyframe(&rtp[3][12..]));
        let ids: Vec<u16> = [0, 3]
            .iter()
            .map(|&i| u16::from_be_bytes([rtp[i][13], rtp[i][14]]) & 0x7fff)
            .collect();
        assert_eq!(ids, [0, 1]);
        let mut d = Depacketizer::default();
        let mut frames = Vec::new();
        for r in &rtp {
            let h = crate::rtp::RtpHeader::parse(r).unwrap();
            d.push(h.seq_no, h.timestamp, h.marker, &r[12..], &mut frames);
        }
        let coded: Vec<(bool, &Vec<u8>)> = frames
            .iter()
            .filter_map(|o| match o {
                Out::Coded { key, frame, .. } => Some((*key, frame)),
                _ => None,
            })
            .collect();
        assert_eq!(coded, [(true, &key), (false, &inter)]);
    }

    /// A keyframe's first packet as Chrome sends it without layers: I
    /// (15-bit id), B, V with one layer's size and a one-picture group.
    const KEY: [u8; 12] = [
        0x8a, 0x81, 0x23, 0x18, 0x02, 0x80, 0x01, 0x68, 0x01, 0x00, 0x82, 0x49,
    ];

    #[test]
    fn a_keyframe_and_its_numbered_fields() {
        let d = descriptor(&KEY).unwrap();
        assert_eq!(d.picture_id, Some((1, true)));
        assert_eq!((d.tl0, d.spatial, d.payload), (None, 0, 10));
        assert!(starts_keyframe(&KEY));
    }

    #[test]
    fn not_keyframes() {
        // P: inter-predicted (flexible off, no layers: nothing else moves).
        assert!(!starts_keyframe(&[0xc8, 0x81, 0x23, 0x86]));
        // Not a frame's beginning.
        assert!(!starts_keyframe(&[0x80, 0x81, 0x23, 0x82]));
        // Spatial layer 1 of a key picture; layer 0 of it is one.
        assert!(!starts_keyframe(&[0xa8, 0x81, 0x23, 0x02, 0x05, 0x82]));
        assert!(starts_keyframe(&[0xa8, 0x81, 0x23, 0x00, 0x05, 0x82]));
        // Non-flexible with layers: TL0PICIDX found.
        assert_eq!(
            descriptor(&[0xa8, 0x05, 0x00, 0x07, 0x82]).unwrap().tl0,
            Some(3)
        );
        // Flexible, inter: two reference differences skipped.
        let d = descriptor(&[0xd8, 0x05, 0x03, 0x04, 0x86]).unwrap();
        assert_eq!((d.tl0, d.payload), (None, 4));
    }

    #[test]
    fn short_and_malformed_descriptors() {
        for n in 0..KEY.len() {
            let _ = starts_keyframe(&KEY[..n]);
            if let Some(d) = descriptor(&KEY[..n]) {
                assert!(d.payload < n);
            }
        }
        // A picture group longer than the packet.
        assert_eq!(descriptor(&[0x0a, 0x08, 0xff, 0x0c]), None);
    }
}
