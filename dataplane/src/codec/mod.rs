//! Video codecs behind one seam: what the gateway asks of a video codec,
//! answered by that codec's module (`h264.rs`, `vp8.rs`, `vp9.rs`,
//! `av1.rs`), without decoding.
//!
//! The rest of the dataplane holds a [`VideoCodec`] (what a track
//! carries), or a [`FlvCodec`] where it works on FLV (the RTMP side), or
//! the [`Depacketizer`] / [`Packetizer`] one made, and asks it; only
//! `codec/` names a codec's module. Access units are FLV video tag
//! bodies, the form the RTMP side carries:
//!
//! ```text
//! RTP payload ─▶ VideoCodec::starts_keyframe   where a GOP replay starts, every codec
//! ring codec  ─▶ VideoCodec::of_wire           a negotiated line's codec
//! VideoCodec  ─▶ VideoCodec::flv               the FLV codec it is, if FLV carries it as it is
//! RTP packets ─▶ Depacketizer::push ─▶ Out     H264: access units as FLV video tags, the decoder
//!                                              configuration first; VP8, VP9, AV1: whole frames
//!                                              in their own bitstream (Coded, for the transcoder);
//!                                              NeedKeyframe after a loss
//! FLV tag     ─▶ Packetizer::push   ─▶ RTP     within RTP_PAYLOAD; Pushed says what it made
//! FLV tag     ─▶ FlvCodec::of_flv              which codec (FLV's codec id), if one of ours
//! FLV tag     ─▶ composition_offset            presentation minus decode time (B-frames)
//! FLV config  ─▶ FlvCodec::picture             width, height, frame rate for onMetaData
//! facts       ─▶ name, payload_type, flv_codec_id
//! ```
//!
//! FLV (legacy RTMP) carries H264: VP8, VP9 and AV1 tracks are forwarded
//! to WebRTC players as they are, and reach RTMP and HTTP-FLV players
//! decoded and encoded to H264 (`reencode.rs`, fed whole frames by their
//! depacketizers, which share `frames.rs`) where [`VideoCodec::flv`] is `None`.
//!
//! Payload-header rewriting: H264 needs none (a player's line rewrites the
//! RTP header only; the payload goes as it came). VP8 and VP9 number their
//! pictures in the payload descriptor (picture id, TL0PICIDX): their
//! modules say where (`vp8::Descriptor`, `vp9::Descriptor`), for a line
//! that switches source or layer.
//!
//! Dispatch is a `match` on a `Copy` enum, inlined: no trait object, no
//! allocation per packet.
//!
//! Adding a codec: write `codec/NAME.rs` with its `starts_keyframe` and a
//! `Depacketizer` with the same `push` signature (and, if FLV carries it,
//! a `Packetizer` with [`Pushed`], and its `FLV_CODEC_ID`),
//! add its variant to [`VideoCodec`] (and [`FlvCodec`]) and to the ring's
//! `msg::Codec`, and an arm in each `match` below (the compiler lists
//! them); the controlplane's `--video-codecs` then offers it.

pub mod av1;
pub mod ertmp;
mod frames;
pub mod h264;
pub mod vp8;
pub mod vp9;

use gateway_ring::msg::Codec;

/// Payload budget per RTP packet (1200 + headers stays under common MTUs),
/// for every codec's packetizer.
pub const RTP_PAYLOAD: usize = 1200;

/// An FLV video tag body's composition time offset (ms, presentation
/// minus decode time): a signed 24-bit field after the packet type (FLV's
/// AVC video packet, the access units here); 0 if the body is too short to
/// hold one.
pub fn composition_offset(body: &[u8]) -> i32 {
    match body.get(2..5) {
        Some(&[a, b, c]) => ((u32::from_be_bytes([0, a, b, c]) << 8) as i32) >> 8,
        _ => 0,
    }
}

/// A video codec a track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// RFC 6184 (packetization mode 1: single NAL, STAP-A, FU-A); FLV's AVC.
    H264,
    /// RFC 7741.
    Vp8,
    /// RFC 9628 (profile 0).
    Vp9,
    /// The AOM RTP payload format (profile 0).
    Av1,
}

impl VideoCodec {
    /// Every codec, for what is said about them (a warning names them).
    pub const ALL: [VideoCodec; 4] = [
        VideoCodec::H264,
        VideoCodec::Vp8,
        VideoCodec::Vp9,
        VideoCodec::Av1,
    ];

    /// The codec of a track whose codec no input names: an RTP ingest's
    /// and egress's (their SDP says H264) and an RTMP publisher's (FLV's).
    pub const NEGOTIATED: VideoCodec = VideoCodec::H264;

    /// Its name on the ring.
    pub const fn wire(self) -> Codec {
        match self {
            VideoCodec::H264 => Codec::H264,
            VideoCodec::Vp8 => Codec::Vp8,
            VideoCodec::Vp9 => Codec::Vp9,
            VideoCodec::Av1 => Codec::Av1,
        }
    }

    /// The video codec of a negotiated line (`None` for audio).
    pub const fn of_wire(c: Codec) -> Option<VideoCodec> {
        match c {
            Codec::H264 => Some(VideoCodec::H264),
            Codec::Vp8 => Some(VideoCodec::Vp8),
            Codec::Vp9 => Some(VideoCodec::Vp9),
            Codec::Av1 => Some(VideoCodec::Av1),
            Codec::Opus => None,
        }
    }

    /// Its place in [`VideoCodec::ALL`] (and the ring's `Codec::VIDEO`):
    /// an index for what is kept per codec.
    pub const fn index(self) -> usize {
        match self {
            VideoCodec::H264 => 0,
            VideoCodec::Vp8 => 1,
            VideoCodec::Vp9 => 2,
            VideoCodec::Av1 => 3,
        }
    }

    /// Its name in SDP (`a=rtpmap`) and in what we tell operators.
    pub const fn name(self) -> &'static str {
        match self {
            VideoCodec::H264 => "H264",
            VideoCodec::Vp8 => "VP8",
            VideoCodec::Vp9 => "VP9",
            VideoCodec::Av1 => "AV1",
        }
    }

    /// The FLV codec it is, if FLV carries it as it is (H264); `None`:
    /// RTMP and HTTP-FLV players can only get it transcoded.
    pub const fn flv(self) -> Option<FlvCodec> {
        match self {
            VideoCodec::H264 => Some(FlvCodec::H264),
            VideoCodec::Vp8 | VideoCodec::Vp9 | VideoCodec::Av1 => None,
        }
    }

    /// A depacketizer waiting for its first keyframe: H264's makes FLV
    /// video tags, the others' whole frames for the transcoder ([`Out::Coded`]).
    pub fn depacketizer(self) -> Depacketizer {
        match self {
            VideoCodec::H264 => Depacketizer::H264(h264::Depacketizer::new()),
            VideoCodec::Vp8 => Depacketizer::Vp8(vp8::Depacketizer::default()),
            VideoCodec::Vp9 => Depacketizer::Vp9(vp9::Depacketizer::default()),
            VideoCodec::Av1 => Depacketizer::Av1(av1::Depacketizer::default()),
        }
    }

    /// Whether an RTP payload of this codec begins a keyframe: what a GOP
    /// replay starts from.
    #[inline]
    pub fn starts_keyframe(self, payload: &[u8]) -> bool {
        match self {
            VideoCodec::H264 => h264::starts_keyframe(payload),
            VideoCodec::Vp8 => vp8::starts_keyframe(payload),
            VideoCodec::Vp9 => vp9::starts_keyframe(payload),
            VideoCodec::Av1 => av1::starts_keyframe(payload),
        }
    }
}

/// A player line's picture numbering (VP8's and VP9's picture id and
/// TL0PICIDX, in the payload descriptor): the last numbers its player saw,
/// and the offsets that map the current publisher's onto them, so that a
/// change of publisher on the line continues the numbering, as the RTP
/// header's sequence number and timestamp do (a decoder that sees the
/// picture id jump takes pictures for lost).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PictureIds {
    pid_delta: u16,
    tl0_delta: u8,
    last_pid: Option<u16>,
    last_tl0: Option<u8>,
}

/// Where a payload's picture id is (and whether it is 15 bits wide), and
/// where its TL0PICIDX is.
type Numbered = (Option<(usize, bool)>, Option<usize>);

/// The numbered fields of a VP8 or VP9 payload.
fn numbered_fields(codec: VideoCodec, p: &[u8]) -> Option<Numbered> {
    match codec {
        VideoCodec::Vp8 => vp8::descriptor(p).map(|d| (d.picture_id, d.tl0)),
        VideoCodec::Vp9 => vp9::descriptor(p).map(|d| (d.picture_id, d.tl0)),
        VideoCodec::H264 | VideoCodec::Av1 => None,
    }
}

impl VideoCodec {
    /// Whether a line that changes publisher waits for the new one's
    /// keyframe: VP8, VP9 and AV1 frames refer to earlier pictures by
    /// numbers the decoder keeps, which another publisher's stream would
    /// corrupt. (H264 switches at once and asks for a keyframe.)
    pub const fn switches_at_keyframes(self) -> bool {
        !matches!(self, VideoCodec::H264)
    }

    /// Rewrites `payload`'s picture id and TL0PICIDX in place by `ids`'s
    /// offsets (VP8, VP9; nothing for the others). `switched`: the first
    /// packet of a new publisher on the line, whose offsets are set here so
    /// its numbers follow the last ones sent. `resend`: a retransmission,
    /// which leaves the last numbers as they are.
    pub fn rewrite_picture_ids(
        self,
        payload: &mut [u8],
        ids: &mut PictureIds,
        switched: bool,
        resend: bool,
    ) {
        let Some((pid, tl0)) = numbered_fields(self, payload) else {
            return;
        };
        if let Some((at, wide)) = pid {
            let mask: u16 = if wide { 0x7fff } else { 0x7f };
            let value = if wide {
                u16::from_be_bytes([payload[at] & 0x7f, payload[at + 1]])
            } else {
                (payload[at] & 0x7f) as u16
            };
            if switched {
                ids.pid_delta = ids
                    .last_pid
                    .map_or(0, |last| last.wrapping_add(1).wrapping_sub(value));
            }
            let out = value.wrapping_add(ids.pid_delta) & mask;
            if wide {
                payload[at] = 0x80 | (out >> 8) as u8;
                payload[at + 1] = out as u8;
            } else {
                payload[at] = out as u8;
            }
            // The latest picture: a later one, or the first (picture ids
            // wrap, so "later" is within half their range).
            let later = ids.last_pid.is_none_or(|last| {
                out.wrapping_sub(last) & mask != 0 && out.wrapping_sub(last) & mask <= mask / 2
            });
            if !resend && (later || switched) {
                ids.last_pid = Some(out);
            }
        }
        if let Some(at) = tl0 {
            if switched {
                ids.tl0_delta = ids
                    .last_tl0
                    .map_or(0, |last| last.wrapping_add(1).wrapping_sub(payload[at]));
            }
            let out = payload[at].wrapping_add(ids.tl0_delta);
            payload[at] = out;
            let later = ids
                .last_tl0
                .is_none_or(|last| (out.wrapping_sub(last) as i8) > 0);
            if !resend && (later || switched) {
                ids.last_tl0 = Some(out);
            }
        }
    }
}

/// A video codec FLV carries, which the gateway repacketizes between RTP
/// and FLV (the RTMP side's codecs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlvCodec {
    H264,
}

impl FlvCodec {
    /// Every FLV codec.
    pub const ALL: [FlvCodec; 1] = [FlvCodec::H264];

    /// The codec FLV carries from an RTMP publisher and to its players,
    /// and what an RTP egress sends.
    pub const NEGOTIATED: FlvCodec = FlvCodec::H264;

    /// As a track's codec.
    pub const fn video(self) -> VideoCodec {
        match self {
            FlvCodec::H264 => VideoCodec::H264,
        }
    }

    /// The RTP payload type it is sent with where we choose one: an RTP
    /// egress (the controlplane's egress SDP says the same, `sdp.rs`
    /// `VIDEO_PT`) and an RTMP publisher's packetized video. A WebRTC
    /// player's line uses the type its answer negotiated.
    pub const fn payload_type(self) -> u8 {
        match self {
            FlvCodec::H264 => 96,
        }
    }

    /// Its codec id in an FLV video tag (the low 4 bits of the first byte).
    pub const fn flv_codec_id(self) -> u8 {
        match self {
            FlvCodec::H264 => h264::FLV_CODEC_ID,
        }
    }

    /// The codec of a legacy FLV video tag body, if it is one of these
    /// (an E-RTMP body, whose first bit is set, is none of them yet).
    #[inline]
    pub fn of_flv(body: &[u8]) -> Option<FlvCodec> {
        if h264::is_flv(body) {
            Some(FlvCodec::H264)
        } else {
            None // another codec id, or E-RTMP (a FourCC follows the first byte)
        }
    }

    /// A packetizer sending on `ssrc` with [`payload_type`](Self::payload_type).
    pub fn packetizer(self, ssrc: u32) -> Packetizer {
        match self {
            FlvCodec::H264 => Packetizer::H264(h264::Packetizer::new(RtpWriter::new(
                ssrc,
                self.payload_type(),
            ))),
        }
    }

    /// (width, height, frames per second if it says) of the decoder
    /// configuration record an FLV sequence header carries after its 5-byte
    /// header (H264: the AVCDecoderConfigurationRecord's first SPS).
    pub fn picture(self, config: &[u8]) -> Option<(u32, u32, Option<f64>)> {
        match self {
            FlvCodec::H264 => h264::picture(config),
        }
    }
}

/// The body of the `video_payloads` fuzz target, shared with the unit
/// tests: any RTP payload, read as each codec's, any bytes as a stream
/// of each codec's packets, and as an E-RTMP push's AV1 and VP9 to
/// packetize. Nothing may panic, a descriptor's offsets stay
/// inside the payload, and a depacketizer's whole frames are never empty
/// nor larger than their packets (with the size fields AV1's OBUs gain).
pub fn fuzz_payloads(data: &[u8]) {
    for codec in VideoCodec::ALL {
        let _ = codec.starts_keyframe(data);
        // The same bytes as a stream of packets, three to a frame.
        let mut d = codec.depacketizer();
        let mut out = Vec::new();
        for (i, part) in data.chunks(97).enumerate() {
            d.push(i as u16, (i / 3) as u32, i % 3 == 2, part, &mut out);
        }
        for o in out {
            if let Out::Coded { frame, .. } = o {
                assert!(
                    !frame.is_empty() && frame.len() <= data.len() + 16 * data.len().div_ceil(97)
                );
            }
        }
    }
    // The same bytes as an E-RTMP push's AV1 and VP9: as a configuration
    // record, and as a frame after a good one; packets within the budget.
    for fourcc in [&b"av01"[..], b"vp09"] {
        let good: &[u8] = if fourcc == b"av01" {
            &[0x81, 0, 0, 0]
        } else {
            &[0]
        };
        for record in [data, good] {
            let config = [&[0x90][..], fourcc, record].concat();
            if let Some((_, mut p)) = Packetizer::enhanced(&config, 1) {
                let mut rtp = Vec::new();
                p.push(&[&[0x91][..], fourcc, data].concat(), 0, &mut rtp);
                assert!(rtp.iter().all(|r| r.len() <= 12 + RTP_PAYLOAD));
            }
        }
    }
    if let Some(d) = vp8::descriptor(data) {
        assert!(d.payload < data.len());
        assert!(d
            .picture_id
            .is_none_or(|(at, wide)| at + (wide as usize) < d.payload));
        assert!(d.tl0.is_none_or(|at| at < d.payload));
    }
    if let Some(d) = vp9::descriptor(data) {
        assert!(d.payload < data.len());
        assert!(d
            .picture_id
            .is_none_or(|(at, wide)| at + (wide as usize) < d.payload));
        assert!(d.tl0.is_none_or(|at| at < d.payload));
    }
}

/// What a [`Depacketizer`] makes of RTP packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// An FLV video tag body with a new decoder configuration (a sequence
    /// header).
    Config(Vec<u8>),
    /// An FLV video tag body with one access unit; `rtp_ts` is its RTP time.
    Frame {
        key: bool,
        rtp_ts: u32,
        body: Vec<u8>,
    },
    /// A whole frame of a codec FLV does not carry, in its own bitstream
    /// (VP8 and VP9: the frame; AV1: a temporal unit in the low-overhead
    /// format), for the transcoder; `rtp_ts` is its RTP time.
    Coded {
        key: bool,
        rtp_ts: u32,
        frame: Vec<u8>,
    },
    /// Part of a frame was lost: ask the publisher for a keyframe.
    NeedKeyframe,
    /// A parameter set that cannot be used (H264: an SPS or PPS too short
    /// for the decoder configuration, or too long): dropped, to be counted.
    BadParameterSet,
}

/// What [`Packetizer::push`] made of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// RTP packets were appended.
    Packets,
    /// Nothing to send (a usable config, script data, junk framing).
    Nothing,
    /// A decoder configuration whose parameter sets cannot be used: refused
    /// (the last good one stays), to be counted.
    BadConfig,
}

/// RTP payloads of one codec into FLV video tags or whole frames
/// ([`VideoCodec::depacketizer`]).
pub enum Depacketizer {
    H264(h264::Depacketizer),
    Vp8(vp8::Depacketizer),
    Vp9(vp9::Depacketizer),
    Av1(av1::Depacketizer),
}

impl Depacketizer {
    /// One RTP packet's payload (`seq`, `ts`, `marker` from its header);
    /// appends what it completes.
    #[inline]
    pub fn push(&mut self, seq: u16, ts: u32, marker: bool, payload: &[u8], out: &mut Vec<Out>) {
        match self {
            Depacketizer::H264(d) => d.push(seq, ts, marker, payload, out),
            Depacketizer::Vp8(d) => d.push(seq, ts, marker, payload, out),
            Depacketizer::Vp9(d) => d.push(seq, ts, marker, payload, out),
            Depacketizer::Av1(d) => d.push(seq, ts, marker, payload, out),
        }
    }
}

/// FLV video tags into RTP packets of one codec: H264's ([`FlvCodec::packetizer`]),
/// and those of an E-RTMP push's AV1 and VP9 ([`Packetizer::enhanced`]),
/// forwarded as they are to WebRTC players that offered them.
pub enum Packetizer {
    H264(h264::Packetizer),
    Vp9(vp9::Packetizer),
    Av1(av1::Packetizer),
}

impl Packetizer {
    /// One FLV video tag body at `ts` (90 kHz); appends whole RTP packets,
    /// each at most `12 + RTP_PAYLOAD` bytes.
    #[inline]
    pub fn push(&mut self, body: &[u8], ts: u32, out: &mut Vec<Vec<u8>>) -> Pushed {
        match self {
            Packetizer::H264(p) => p.push(body, ts, out),
            Packetizer::Vp9(p) => p.push(body, ts, out),
            Packetizer::Av1(p) => p.push(body, ts, out),
        }
    }

    /// The packetizer of an E-RTMP push whose sequence start is `config`
    /// (its configuration record), sending on `ssrc`, and the codec it
    /// makes, if WebRTC players can be given it as it is: AV1 and VP9 of
    /// profile 0, what the SDP offers (HEVC is no WebRTC codec here).
    pub fn enhanced(config: &[u8], ssrc: u32) -> Option<(VideoCodec, Packetizer)> {
        // A codec's own SSRC: a push that changes codec is another stream.
        let ssrc = |c: VideoCodec| ssrc ^ ((c.index() as u32) << 8);
        let pt = FlvCodec::NEGOTIATED.payload_type(); // a line rewrites it
        match ertmp::read(config)? {
            ertmp::Tag::Config {
                codec: ertmp::Fourcc::Av1,
                record,
            } => {
                let p = av1::Packetizer::new(RtpWriter::new(ssrc(VideoCodec::Av1), pt), record)?;
                Some((VideoCodec::Av1, Packetizer::Av1(p)))
            }
            ertmp::Tag::Config {
                codec: ertmp::Fourcc::Vp9,
                record,
            } => {
                let p = vp9::Packetizer::new(RtpWriter::new(ssrc(VideoCodec::Vp9), pt), record)?;
                Some((VideoCodec::Vp9, Packetizer::Vp9(p)))
            }
            _ => None,
        }
    }
}

impl Packetizer {
    /// Goes on where `old` (the same codec's, before a sequence start sent
    /// again) stopped: its sequence numbers (and VP9's picture ids), so
    /// its players see one stream under the new configuration.
    pub fn continue_from(&mut self, old: Packetizer) {
        match (self, old) {
            (Packetizer::Av1(new), Packetizer::Av1(old)) => new.rtp = old.rtp,
            (Packetizer::Vp9(new), Packetizer::Vp9(old)) => {
                new.rtp = old.rtp;
                new.picture = old.picture;
            }
            (Packetizer::H264(new), Packetizer::H264(old)) => new.rtp = old.rtp,
            _ => {}
        }
    }
}

/// An RTP stream's header numbering, for a packetizer: its SSRC, payload
/// type and next sequence number.
pub struct RtpWriter {
    ssrc: u32,
    pt: u8,
    seq: u16,
}

impl RtpWriter {
    pub fn new(ssrc: u32, pt: u8) -> RtpWriter {
        RtpWriter { ssrc, pt, seq: 0 }
    }

    /// Appends the next packet: a 12-byte header (`marker` set on a
    /// frame's last) and `payload`'s parts.
    pub fn packet(&mut self, ts: u32, marker: bool, payload: &[&[u8]], out: &mut Vec<Vec<u8>>) {
        let len: usize = payload.iter().map(|p| p.len()).sum();
        let mut p = Vec::with_capacity(12 + len);
        p.extend_from_slice(&[0x80, self.pt | if marker { 0x80 } else { 0 }]);
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        for part in payload {
            p.extend_from_slice(part);
        }
        self.seq = self.seq.wrapping_add(1);
        out.push(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seam answers as the codec's module does: FLV's codec id both
    /// ways, keyframes, and an FLV tag through the packetizer and back
    /// through the depacketizer it made.
    #[test]
    fn each_codec_answers_through_the_seam() {
        for codec in FlvCodec::ALL {
            let id = codec.flv_codec_id();
            assert_eq!(FlvCodec::of_flv(&[0x10 | id]), Some(codec));
            assert_eq!(codec.video().flv(), Some(codec));
        }
        assert_eq!(FlvCodec::of_flv(&[0x12]), None, "Sorenson H.263");
        assert_eq!(FlvCodec::of_flv(&[]), None);
        for (wire, codec) in [
            (Codec::H264, VideoCodec::H264),
            (Codec::Vp8, VideoCodec::Vp8),
            (Codec::Vp9, VideoCodec::Vp9),
            (Codec::Av1, VideoCodec::Av1),
        ] {
            assert_eq!(VideoCodec::of_wire(wire), Some(codec));
            assert_eq!(codec.name(), wire.name());
        }
        assert_eq!(VideoCodec::of_wire(Codec::Opus), None);
        // Each codec's keyframe, and an H264 P slice is none of them.
        let keys: [(VideoCodec, &[u8]); 4] = [
            (VideoCodec::H264, &[0x65, 0x88]),
            (VideoCodec::Vp8, &[0x10, 0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a]),
            (VideoCodec::Vp9, &[0x08, 0x82]),
            (VideoCodec::Av1, &[0x18, 0x08]),
        ];
        for (codec, key) in keys {
            assert!(codec.starts_keyframe(key), "{codec:?}");
            assert!(!codec.starts_keyframe(&[0x41, 0x9a]), "{codec:?}");
        }
        assert!(VideoCodec::Vp8.flv().is_none(), "FLV carries no VP8");
        for (_, key) in keys {
            for n in 0..=key.len() {
                fuzz_payloads(&key[..n]);
            }
        }
        let h264 = FlvCodec::H264;
        assert!(!h264.video().starts_keyframe(&[0x41, 0x9a]));
        let config = h264::config_tag(&[0x67, 0x42, 0xe0, 0x1f, 0xaa], &[0x68, 0xce]).unwrap();
        let key = [0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88];
        let mut pk = h264.packetizer(7);
        let mut rtp = Vec::new();
        assert_eq!(pk.push(&config, 0, &mut rtp), Pushed::Nothing);
        assert_eq!(pk.push(&key, 3000, &mut rtp), Pushed::Packets);
        assert!(rtp.iter().all(|p| p[1] & 0x7f == h264.payload_type()));
        let mut d = h264.video().depacketizer();
        let mut out = Vec::new();
        for p in &rtp {
            let seq = u16::from_be_bytes([p[2], p[3]]);
            d.push(seq, 3000, p[1] & 0x80 != 0, &p[12..], &mut out);
        }
        assert_eq!(out[0], Out::Config(config));
        assert!(matches!(&out[1], Out::Frame { key: true, body, .. } if body[..] == key));
    }

    /// A VP8 packet with a 15-bit (`wide`) or 7-bit picture id `pid` and
    /// TL0PICIDX `tl0`.
    fn vp8_packet(pid: u16, wide: bool, tl0: u8) -> Vec<u8> {
        let mut p = vec![0x90, 0xe0];
        if wide {
            p.extend_from_slice(&[0x80 | (pid >> 8) as u8, pid as u8]);
        } else {
            p.push(pid as u8 & 0x7f);
        }
        p.extend_from_slice(&[tl0, 0x20, 0x51, 0x2a, 0x00]);
        p
    }

    fn ids(p: &[u8]) -> (u16, u8) {
        let d = vp8::descriptor(p).unwrap();
        let (at, wide) = d.picture_id.unwrap();
        let pid = if wide {
            u16::from_be_bytes([p[at] & 0x7f, p[at + 1]])
        } else {
            p[at] as u16
        };
        (pid, p[d.tl0.unwrap()])
    }

    /// A line's picture ids and TL0PICIDX go on by one across a change of
    /// publisher, whatever the new one numbers (15 or 7 bits); a resend
    /// carries the numbers its original went out with and moves nothing.
    #[test]
    fn picture_ids_continue_across_a_change_of_publisher() {
        let codec = VideoCodec::Vp8;
        let mut line = PictureIds::default();
        let mut out = Vec::new();
        for (k, pid) in (32760u16..32768).chain(0..3).enumerate() {
            let mut p = vp8_packet(pid, true, 200 + k as u8);
            codec.rewrite_picture_ids(&mut p, &mut line, k == 0, false);
            out.push(ids(&p));
        }
        assert_eq!(
            out[0],
            (32760, 200),
            "the first publisher keeps its numbers"
        );
        assert_eq!(out[10], (2, 210), "across the 15-bit wrap");
        // Another publisher, 7-bit ids from 90, TL0PICIDX from 7.
        let mut resend = vp8_packet(1, true, 209);
        for (k, pid) in (90u16..93).enumerate() {
            let mut p = vp8_packet(pid, false, 7 + k as u8);
            codec.rewrite_picture_ids(&mut p, &mut line, k == 0, false);
            out.push(ids(&p));
            if k == 1 {
                // A resend of the old publisher's packet, rewritten the
                // new publisher's way, does not move the numbering.
                codec.rewrite_picture_ids(&mut resend, &mut line, false, true);
            }
        }
        assert_eq!(&out[11..], &[(3, 211), (4, 212), (5, 213)]);
        let mut p = vp8_packet(93, false, 10);
        codec.rewrite_picture_ids(&mut p, &mut line, false, false);
        assert_eq!(ids(&p), (6, 214));
        // H264 and AV1 have none: left as they are.
        let mut h264 = vec![0x65, 0x88, 0x84];
        VideoCodec::H264.rewrite_picture_ids(&mut h264, &mut line, true, false);
        assert_eq!(h264, [0x65, 0x88, 0x84]);
    }
}
