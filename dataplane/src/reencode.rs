//! Video decoded and encoded again, on the shard's re-encode thread, for
//! two jobs ([`Input`]):
//!
//! - H264 with B-frames from an RTMP publisher, re-encoded without them
//!   for its WebRTC players;
//! - VP8, VP9 and AV1 from a WebRTC publisher, transcoded to H264 for its
//!   RTMP and HTTP-FLV players (FLV carries no other codec they decode).
//!
//! Both end in the same libx264 encoder and FLV tag bodies.
//!
//! ## B-frames
//!
//! Browsers' WebRTC decoders (Chromium's) take the output delay that
//! B-frames need for an error and drop the frames that follow, whatever
//! the RTP times (measured: 7-9 of 150 frames in 5 s, docs/PERFORMANCE.md).
//! An RTMP publisher with B-frames (x264's and OBS's defaults) is therefore
//! decoded and encoded again, for its WebRTC side only: its RTMP and
//! HTTP-FLV players still get its own stream, composition times and all.
//! Everything else in the gateway is repacketized, never re-encoded; this
//! is the one exception, bounded by `--bframe-reencodes` per shard and
//! compiled in only with the `reencode` cargo feature (it links FFmpeg's
//! libavcodec).
//!
//! ```text
//! FLV video tag (AVCC, dts + composition offset)
//!   ─▶ Annex B access unit (SPS/PPS before each keyframe), pts/dts in ms
//!   ─▶ libavcodec's h264 decoder (reorders: pictures come out in presentation order)
//!   ─▶ libx264 (tune zerolatency: no B-frames, no lookahead; an IDR where the source had one)
//!   ─▶ FLV video tag bodies at their presentation time: a sequence header when the
//!      parameter sets change, then [0x17|0x27][1][cts 0] AVCC NALs
//! ```
//!
//! ## VP8, VP9, AV1
//!
//! ```text
//! whole frames from the codec's depacketizer (codec/frames.rs), numbered, at FLV time ms
//!   ─▶ libavcodec's vp8 / vp9 decoder, or libdav1d (FFmpeg's own av1 decoder needs a GPU)
//!   ─▶ libx264 as above, an IDR where the source has a keyframe and at least every
//!      TRANSCODE_GOP frames (2 s at 30 fps), so a new RTMP player's GOP is short
//!   ─▶ FLV video tag bodies for the stream's players, GOP cache and programs
//! ```
//!
//! A frame lost on the way (the thread's queue was full) or refused by the
//! decoder leaves the decoder without its references: frames are dropped
//! until the next keyframe, which is asked for ([`Reencoder::wants_keyframe`]).
//!
//! ## Why FFmpeg
//!
//! FFmpeg (through `ffmpeg-next`, the maintained safe binding) because no
//! Rust or bundled decoder plays High profile with B-frames: OpenH264's
//! decoder does not decode B slices. It runs on the shard's re-encode
//! thread (`transcode::spawn`), never on the packet loop: a frame costs
//! 5.4-5.8 ms at 640x360 and 11.2-11.3 ms at 1280x720 (16-17 % and 34 % of
//! a core at 30 fps; repacketizing it costs 0.7 µs; benches/benches/video.rs).

use ff::{codec, decoder, encoder, format::Pixel, frame, picture, Dictionary, Packet, Rational};
use ffmpeg_next as ff;

use crate::codec::composition_offset;
use crate::codec::h264::{self, avcc_nals, config_tag, flv_body, parameter_sets};
use crate::codec::{ertmp, VideoCodec};

impl Input {
    /// What an RTMP publisher's FLV video tag body is to decode as.
    pub fn of_flv(body: &[u8]) -> Input {
        ertmp::codec(body).map_or(Input::FlvH264, Input::Enhanced)
    }

    fn name(self) -> &'static str {
        match self {
            Input::FlvH264 => "H264",
            Input::Enhanced(c) => c.name(),
            Input::Coded(c) => c.name(),
        }
    }
}

/// What a [`Reencoder`] decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// FLV video tag bodies of H264 with B-frames (an RTMP publisher's,
    /// for its WebRTC players).
    FlvH264,
    /// E-RTMP video tag bodies of HEVC, AV1 or VP9 (an RTMP publisher's,
    /// for its WebRTC players, as H264).
    Enhanced(ertmp::Fourcc),
    /// Whole frames of a codec FLV does not carry (a WebRTC publisher's,
    /// for its RTMP players).
    Coded(VideoCodec),
}

/// Most frames between two IDRs of a transcoded stream (2 s at 30 fps):
/// an RTMP player that joins gets its first picture from the GOP cache,
/// which holds at most this much.
pub const TRANSCODE_GOP: u32 = 60;

const START: [u8; 4] = [0, 0, 0, 1];

/// Frames waiting for the re-encode thread (about a second of one 30 fps
/// publisher): a thread that cannot keep up drops frames, counted against
/// the publisher (`overload`) and the shard (`transcode_queue`), rather
/// than delay its WebRTC players by the backlog.
pub const QUEUE: usize = 32;

/// Largest picture re-encoded (1080p): a publisher's SPS may declare up
/// to 8K, which would cost the thread a second a frame and starve the
/// shard's other re-encoded streams.
const MAX_PIXELS: u32 = 1920 * 1088;

/// Ceiling of the re-encoded stream (kbit/s) and its VBV buffer: the
/// quality is set by CRF, this only bounds bursts toward the players.
const MAX_KBPS: u32 = 4000;

/// The encoder and what it was opened for.
struct Encoder {
    enc: encoder::Video,
    width: u32,
    height: u32,
    format: Pixel,
}

/// One publisher's video, decoded and encoded again.
pub struct Reencoder {
    input: Input,
    decoder: decoder::Video,
    encoder: Option<Encoder>,
    /// What goes before each keyframe of an FLV source: H264's and HEVC's
    /// parameter sets (Annex B), AV1's configuration OBUs.
    params: Vec<u8>,
    /// The parameter sets of the sequence header last made.
    sent: Option<(Vec<u8>, Vec<u8>)>,
    annexb: Vec<u8>,
    picture: frame::Video,
    packet: Packet,
    /// Why this stream cannot be re-encoded, to report (once).
    pub refused: Option<String>,
    /// It cannot: its frames are dropped unread.
    gave_up: bool,
    /// Coded input: the number of the frame expected next, and whether
    /// frames are dropped until a keyframe (one was lost or refused).
    next: Option<u32>,
    waiting_key: bool,
    /// Coded input: a keyframe is wanted from the publisher (taken by the
    /// thread, which passes it on).
    pub wants_keyframe: bool,
}

impl Reencoder {
    pub fn new(input: Input) -> Result<Reencoder, String> {
        ff::init().map_err(|e| format!("FFmpeg: {e}"))?;
        // FFmpeg logs to stderr on its own; only what is wrong belongs in
        // the dataplane's log (decode errors are counted as drops anyway).
        ff::util::log::set_level(ff::util::log::Level::Error);
        let found = match input {
            Input::FlvH264 | Input::Coded(VideoCodec::H264) => decoder::find(codec::Id::H264),
            Input::Coded(VideoCodec::Vp8) => decoder::find(codec::Id::VP8),
            Input::Coded(VideoCodec::Vp9) | Input::Enhanced(ertmp::Fourcc::Vp9) => {
                decoder::find(codec::Id::VP9)
            }
            Input::Enhanced(ertmp::Fourcc::Hevc) => decoder::find(codec::Id::HEVC),
            // FFmpeg's native AV1 decoder only drives hardware decoders.
            Input::Coded(VideoCodec::Av1) | Input::Enhanced(ertmp::Fourcc::Av1) => {
                decoder::find_by_name("libdav1d")
            }
        };
        let name = input.name();
        let found = found.ok_or_else(|| format!("FFmpeg has no {name} decoder"))?;
        let mut ctx = codec::context::Context::new_with_codec(found);
        // One thread, no frame threading: frame threads add a frame of
        // delay each, and this thread serves the whole shard.
        ctx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Slice,
            count: 1,
            ..Default::default()
        });
        // Every decoder refuses a picture over MAX_PIXELS before it
        // allocates it: a hostile sequence header may declare 16k x 16k.
        // SAFETY: the context is ours, not opened yet; max_pixels is a plain
        // field libavcodec reads when it opens and sizes frames.
        unsafe { (*ctx.as_mut_ptr()).max_pixels = MAX_PIXELS as i64 };
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|e| format!("{name} decoder: {e}"))?;
        Ok(Reencoder {
            input,
            decoder,
            encoder: None,
            params: Vec::new(),
            sent: None,
            annexb: Vec::new(),
            picture: frame::Video::empty(),
            packet: Packet::empty(),
            refused: None,
            gave_up: false,
            next: None,
            // Coded input starts at a keyframe: one made afresh mid-stream
            // (after a panic, a codec change) waits for the next and asks.
            waiting_key: matches!(input, Input::Coded(_)),
            wants_keyframe: false,
        })
    }

    /// What it decodes.
    pub fn input(&self) -> Input {
        self.input
    }

    /// Frame `n` of a coded input (numbered by the sender, so a frame lost
    /// on the way is seen), a keyframe if `key`, at FLV time `ms`; appends
    /// the H264 FLV tag bodies made now, each with its time (ms).
    pub fn push_coded(
        &mut self,
        n: u32,
        ms: u32,
        key: bool,
        frame: &[u8],
        out: &mut Vec<(u32, Vec<u8>)>,
    ) {
        if self.gave_up {
            return;
        }
        if self.next.is_some_and(|next| next != n) {
            self.waiting_key = true;
        }
        self.next = Some(n.wrapping_add(1));
        if key {
            self.waiting_key = false;
            if self.input == Input::Coded(VideoCodec::Vp8) {
                // Refused before a hostile 16k picture is decoded.
                if let Some((w, h)) = crate::codec::vp8::keyframe_size(frame) {
                    self.check_size(w, h);
                }
                if self.gave_up {
                    return;
                }
            }
        }
        if self.waiting_key {
            self.wants_keyframe = true;
            return;
        }
        let mut packet = Packet::copy(frame);
        packet.set_dts(Some(ms as i64));
        packet.set_pts(Some(ms as i64));
        if key {
            packet.set_flags(ff::packet::Flags::KEY);
        }
        if let Err(e) = self.decoder.send_packet(&packet) {
            tracing::debug!("{:?} decoder refused a frame: {e}", self.input);
            self.waiting_key = true;
            self.wants_keyframe = true;
            return;
        }
        while self.decoder.receive_frame(&mut self.picture).is_ok() {
            self.encode(out);
        }
    }

    /// One FLV video tag body of the source at FLV time `ms`; appends the
    /// re-encoded tag bodies made now, each with its presentation time (ms).
    pub fn push(&mut self, ms: u32, body: &[u8], out: &mut Vec<(u32, Vec<u8>)>) {
        if self.gave_up {
            return;
        }
        self.annexb.clear();
        let (key, cts) = match self.input {
            Input::FlvH264 => match self.h264_tag(body) {
                Some(frame) => frame,
                None => return,
            },
            Input::Enhanced(codec) => match self.enhanced_tag(codec, body) {
                Some(frame) => frame,
                None => return,
            },
            Input::Coded(_) => return,
        };
        let mut packet = Packet::copy(&self.annexb);
        packet.set_dts(Some(ms as i64));
        packet.set_pts(Some(ms as i64 + cts as i64));
        if key {
            packet.set_flags(ff::packet::Flags::KEY);
        }
        if let Err(e) = self.decoder.send_packet(&packet) {
            tracing::debug!("{} decoder refused a frame: {e}", self.input.name());
            return;
        }
        while self.decoder.receive_frame(&mut self.picture).is_ok() {
            self.encode(out);
        }
    }

    /// A legacy H264 tag: its parameter sets kept, or its frame as an
    /// Annex B access unit (the parameter sets first on a keyframe) in
    /// `annexb`, with (keyframe, composition offset).
    fn h264_tag(&mut self, body: &[u8]) -> Option<(bool, i32)> {
        if body.len() < 5 || !h264::is_flv(body) {
            return None;
        }
        if body[1] == 0 {
            if let Some((w, h, _)) = h264::picture(&body[5..]) {
                self.check_size(w, h);
            }
            if let Some((sps, pps)) = parameter_sets(&body[5..]) {
                self.params.clear();
                for set in [sps, pps] {
                    self.params.extend_from_slice(&START);
                    self.params.extend_from_slice(set);
                }
            }
            return None;
        }
        if body[1] != 1 {
            return None;
        }
        let key = body[0] >> 4 == 1;
        if key {
            self.annexb.extend_from_slice(&self.params);
        }
        for nal in avcc_nals(&body[5..]) {
            self.annexb.extend_from_slice(&START);
            self.annexb.extend_from_slice(nal);
        }
        Some((key, composition_offset(body)))
    }

    /// An E-RTMP tag: its configuration kept (HEVC's parameter sets as
    /// Annex B, AV1's configuration OBUs), or its frame in `annexb` as the
    /// decoder takes it (HEVC: Annex B; AV1: OBUs; VP9: the frame), the
    /// configuration first on a keyframe.
    fn enhanced_tag(&mut self, codec: ertmp::Fourcc, body: &[u8]) -> Option<(bool, i32)> {
        match ertmp::read(body)? {
            ertmp::Tag::Config { codec: c, record } if c == codec => {
                self.params.clear();
                match codec {
                    ertmp::Fourcc::Hevc => match ertmp::hevc_parameter_sets(record) {
                        Some((sets, 4)) => {
                            for set in sets {
                                self.params.extend_from_slice(&START);
                                self.params.extend_from_slice(set);
                            }
                        }
                        _ => self.give_up("video: HEVC whose configuration record cannot be read (or with NAL lengths other than 4 bytes) cannot be re-encoded for WebRTC players".into()),
                    },
                    // av1C: 4 bytes, then the configuration OBUs (a sequence header).
                    ertmp::Fourcc::Av1 => self.params.extend_from_slice(record.get(4..).unwrap_or_default()),
                    ertmp::Fourcc::Vp9 => {}
                }
                None
            }
            ertmp::Tag::Frame {
                codec: c,
                key,
                cts,
                data,
            } if c == codec => {
                if key {
                    self.annexb.extend_from_slice(&self.params);
                }
                match codec {
                    ertmp::Fourcc::Hevc => {
                        for nal in avcc_nals(data) {
                            self.annexb.extend_from_slice(&START);
                            self.annexb.extend_from_slice(nal);
                        }
                    }
                    ertmp::Fourcc::Av1 | ertmp::Fourcc::Vp9 => self.annexb.extend_from_slice(data),
                }
                Some((key, cts))
            }
            _ => None,
        }
    }

    /// Gives up on a picture over [`MAX_PIXELS`].
    fn check_size(&mut self, width: u32, height: u32) {
        if width.saturating_mul(height) > MAX_PIXELS {
            let why = match self.input {
                Input::FlvH264 => format!("video: {width}x{height} H264 with B-frames is over 1080p, too large to re-encode for WebRTC players"),
                Input::Enhanced(c) => format!("video: {width}x{height} {} is over 1080p, too large to transcode for WebRTC players", c.name()),
                Input::Coded(c) => format!("video: {width}x{height} {} is over 1080p, too large to transcode for RTMP and HTTP-FLV players", c.name()),
            };
            self.give_up(why);
        }
    }

    fn give_up(&mut self, why: String) {
        self.refused.get_or_insert(why);
        self.gave_up = true;
        self.encoder = None;
    }

    /// Encodes the picture just decoded.
    fn encode(&mut self, out: &mut Vec<(u32, Vec<u8>)>) {
        let (width, height, format) = {
            let p = &self.picture;
            (p.width(), p.height(), p.format())
        };
        self.check_size(width, height);
        if !matches!(format, Pixel::YUV420P | Pixel::YUVJ420P) {
            let why = match self.input {
                Input::FlvH264 => format!("video: H264 in {format:?} cannot be re-encoded for WebRTC players (only 4:2:0 8-bit)"),
                Input::Enhanced(c) => format!("video: {} in {format:?} cannot be transcoded for WebRTC players (only 4:2:0 8-bit)", c.name()),
                Input::Coded(c) => format!("video: {} in {format:?} cannot be transcoded for RTMP and HTTP-FLV players (only 4:2:0 8-bit)", c.name()),
            };
            self.give_up(why);
        }
        if self.gave_up {
            return;
        }
        let p = &mut self.picture;
        let same = self
            .encoder
            .as_ref()
            .is_some_and(|e| (e.width, e.height, e.format) == (width, height, format));
        if !same {
            let gop = match self.input {
                // Keyframes follow the source's; this only bounds a source without any.
                Input::FlvH264 | Input::Enhanced(_) => 300,
                Input::Coded(_) => TRANSCODE_GOP,
            };
            match open_encoder(width, height, format, gop) {
                Ok(enc) => self.encoder = Some(enc),
                Err(e) => {
                    self.give_up(e);
                    return;
                }
            }
        }
        let Some(enc) = self.encoder.as_mut() else {
            return;
        };
        // An IDR where the source has one (a new encoder starts with one):
        // the GOPs stay the source's, and so does the replay of the latest
        // one to a player that joins or loses a packet.
        let key = p.is_key() || p.kind() == picture::Type::I;
        p.set_kind(if key {
            picture::Type::I
        } else {
            picture::Type::None
        });
        let pts = p.timestamp().or(p.pts());
        p.set_pts(pts);
        if let Err(e) = enc.enc.send_frame(p) {
            tracing::debug!("H264 encoder refused a picture: {e}");
            return;
        }
        while enc.enc.receive_packet(&mut self.packet).is_ok() {
            let Some(data) = self.packet.data() else {
                continue;
            };
            let pts = self.packet.pts().unwrap_or(0).max(0) as u32;
            let (sets, body) = flv_body(data, self.packet.is_key());
            if let Some(sets) = sets.filter(|s| self.sent.as_ref() != Some(s)) {
                if let Some(tag) = config_tag(&sets.0, &sets.1) {
                    out.push((pts, tag));
                    self.sent = Some(sets);
                }
            }
            if let Some(body) = body {
                out.push((pts, body));
            }
        }
    }
}

/// libx264 for a `width`x`height` picture stream on a millisecond clock:
/// Constrained Baseline (what every browser offers as 42e01f), zero
/// latency (no B-frames, no lookahead), one thread, CRF 23 under a
/// [`MAX_KBPS`] ceiling, parameter sets in band before each IDR, an IDR
/// at least every `gop` frames.
fn open_encoder(width: u32, height: u32, format: Pixel, gop: u32) -> Result<Encoder, String> {
    let x264 = encoder::find_by_name("libx264").ok_or("FFmpeg has no libx264 encoder")?;
    let mut ctx = codec::context::Context::new_with_codec(x264);
    // One thread: the re-encode thread is the budget, beside pinned shard
    // loops that extra encoder threads would compete with.
    ctx.set_threading(codec::threading::Config {
        kind: codec::threading::Type::Slice,
        count: 1,
        ..Default::default()
    });
    let mut enc = ctx
        .encoder()
        .video()
        .map_err(|e| format!("H264 encoder: {e}"))?;
    enc.set_width(width);
    enc.set_height(height);
    enc.set_format(format);
    enc.set_time_base(Rational(1, 1000));
    enc.set_frame_rate(Some(Rational(30, 1)));
    enc.set_max_b_frames(0);
    enc.set_gop(gop);
    let mut opts = Dictionary::new();
    opts.set("preset", "veryfast");
    opts.set("tune", "zerolatency");
    opts.set("profile", "baseline");
    opts.set("crf", "23");
    opts.set("forced-idr", "1");
    let vbv = format!("vbv-maxrate={MAX_KBPS}:vbv-bufsize={MAX_KBPS}:scenecut=0");
    opts.set("x264-params", &vbv);
    let enc = enc
        .open_with(opts)
        .map_err(|e| format!("libx264 for {width}x{height}: {e}"))?;
    Ok(Encoder {
        enc,
        width,
        height,
        format,
    })
}

/// What an RTMP publisher with OBS's settings sends, for tests and
/// benches: `frames` pictures of the lavfi source `lavfi` encoded by the
/// ffmpeg tool's x264 (2 B-frames, preset veryfast, 2 Mbit/s, a keyframe
/// every `gop`) into FLV, as its video tag bodies with their FLV times.
pub fn x264_bframes_flv(lavfi: &str, frames: u32, gop: u32) -> Vec<(u32, Vec<u8>)> {
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            lavfi,
        ])
        .args(["-frames:v", &frames.to_string(), "-c:v", "libx264"])
        .args(["-preset", "veryfast", "-bf", "2", "-g", &gop.to_string()])
        .args(["-b:v", "2M", "-f", "flv", "-"])
        .output()
        .expect("the ffmpeg tool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tags = Vec::new();
    let mut p = out.stdout.get(13..).unwrap_or_default();
    while p.len() >= 15 {
        let size = u32::from_be_bytes([0, p[1], p[2], p[3]]) as usize;
        let ms = u32::from_be_bytes([p[7], p[4], p[5], p[6]]);
        let Some(body) = p.get(11..11 + size) else {
            break;
        };
        if p[0] == 9 && !body.is_empty() {
            tags.push((ms, body.to_vec()));
        }
        p = p.get(11 + size + 4..).unwrap_or_default();
    }
    tags
}

/// What a browser publishing `codec` (VP8, VP9 or AV1) sends, as whole
/// frames, for benches: `frames` pictures of the lavfi source `lavfi`
/// encoded in real-time mode by the ffmpeg tool (libvpx, libvpx-vp9,
/// libsvtav1) with a keyframe every `gop`, each with whether it is a
/// keyframe (ffprobe's flags).
pub fn ffmpeg_coded_frames(
    codec: VideoCodec,
    lavfi: &str,
    frames: u32,
    gop: u32,
) -> Vec<(bool, Vec<u8>)> {
    let encoder: &[&str] = match codec {
        VideoCodec::Vp8 => &["-c:v", "libvpx", "-deadline", "realtime", "-b:v", "1M"],
        VideoCodec::Vp9 => &["-c:v", "libvpx-vp9", "-deadline", "realtime", "-b:v", "1M"],
        VideoCodec::Av1 => &["-c:v", "libsvtav1", "-preset", "12", "-b:v", "1M"],
        VideoCodec::H264 => panic!("H264: see x264_bframes_flv"),
    };
    let path =
        std::env::temp_dir().join(format!("mgw-{}-{}.ivf", codec.name(), std::process::id()));
    let out = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            lavfi,
        ])
        .args(["-frames:v", &frames.to_string(), "-g", &gop.to_string()])
        .args(encoder)
        .arg(&path)
        .output()
        .expect("the ffmpeg tool");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v",
            "-show_entries",
            "packet=flags",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&path)
        .output()
        .expect("the ffprobe tool");
    let keys: Vec<bool> = String::from_utf8_lossy(&probe.stdout)
        .lines()
        .map(|l| l.starts_with('K'))
        .collect();
    let ivf = std::fs::read(&path).expect("the IVF file");
    let _ = std::fs::remove_file(&path);
    // IVF: a 32-byte file header, then per frame a 4-byte size, an 8-byte
    // time and the frame.
    let mut frames = Vec::new();
    let mut p = ivf.get(32..).unwrap_or_default();
    while p.len() >= 12 {
        let size = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
        let Some(frame) = p.get(12..12 + size) else {
            break;
        };
        frames.push((
            keys.get(frames.len()).copied().unwrap_or(false),
            frame.to_vec(),
        ));
        p = &p[12 + size..];
    }
    frames
}

#[cfg(test)]
mod tests;
