//! H264 with B-frames, re-encoded without them for WebRTC players.
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

/// One RTMP publisher's video, decoded and encoded again.
pub struct Reencoder {
    decoder: decoder::Video,
    encoder: Option<Encoder>,
    /// The source's parameter sets, put before each keyframe it sends.
    sps: Vec<u8>,
    pps: Vec<u8>,
    /// The parameter sets of the sequence header last made.
    sent: Option<(Vec<u8>, Vec<u8>)>,
    annexb: Vec<u8>,
    picture: frame::Video,
    packet: Packet,
    /// Why this stream cannot be re-encoded, to report (once).
    pub refused: Option<String>,
    /// It cannot: its frames are dropped unread.
    gave_up: bool,
}

impl Reencoder {
    pub fn new() -> Result<Reencoder, String> {
        ff::init().map_err(|e| format!("FFmpeg: {e}"))?;
        // FFmpeg logs to stderr on its own; only what is wrong belongs in
        // the dataplane's log (decode errors are counted as drops anyway).
        ff::util::log::set_level(ff::util::log::Level::Error);
        let h264 = decoder::find(codec::Id::H264).ok_or("FFmpeg has no H264 decoder")?;
        let mut ctx = codec::context::Context::new_with_codec(h264);
        // One thread, no frame threading: frame threads add a frame of
        // delay each, and this thread serves the whole shard.
        ctx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Slice,
            count: 1,
            ..Default::default()
        });
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|e| format!("H264 decoder: {e}"))?;
        Ok(Reencoder {
            decoder,
            encoder: None,
            sps: Vec::new(),
            pps: Vec::new(),
            sent: None,
            annexb: Vec::new(),
            picture: frame::Video::empty(),
            packet: Packet::empty(),
            refused: None,
            gave_up: false,
        })
    }

    /// One FLV video tag body of the source at FLV time `ms`; appends the
    /// re-encoded tag bodies made now, each with its presentation time (ms).
    pub fn push(&mut self, ms: u32, body: &[u8], out: &mut Vec<(u32, Vec<u8>)>) {
        if self.gave_up || body.len() < 5 || body[0] & 0x0f != h264::FLV_CODEC_ID {
            return;
        }
        if body[1] == 0 {
            if let Some((w, h, _)) = h264::picture(&body[5..]) {
                self.check_size(w, h);
            }
            if let Some((sps, pps)) = parameter_sets(&body[5..]) {
                self.sps = sps.to_vec();
                self.pps = pps.to_vec();
            }
            return;
        }
        if body[1] != 1 {
            return;
        }
        let cts = composition_offset(body);
        self.annexb.clear();
        if body[0] >> 4 == 1 && !self.sps.is_empty() {
            for set in [&self.sps, &self.pps] {
                self.annexb.extend_from_slice(&START);
                self.annexb.extend_from_slice(set);
            }
        }
        for nal in avcc_nals(&body[5..]) {
            self.annexb.extend_from_slice(&START);
            self.annexb.extend_from_slice(nal);
        }
        let mut packet = Packet::copy(&self.annexb);
        packet.set_dts(Some(ms as i64));
        packet.set_pts(Some(ms as i64 + cts as i64));
        if let Err(e) = self.decoder.send_packet(&packet) {
            tracing::debug!("H264 decoder refused a frame: {e}");
            return;
        }
        while self.decoder.receive_frame(&mut self.picture).is_ok() {
            self.encode(out);
        }
    }

    /// Gives up on a picture over [`MAX_PIXELS`].
    fn check_size(&mut self, width: u32, height: u32) {
        if width.saturating_mul(height) > MAX_PIXELS {
            self.give_up(format!("video: {width}x{height} H264 with B-frames is over 1080p, too large to re-encode for WebRTC players"));
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
            self.give_up(format!("video: H264 in {format:?} cannot be re-encoded for WebRTC players (only 4:2:0 8-bit)"));
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
            match open_encoder(width, height, format) {
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
/// [`MAX_KBPS`] ceiling, parameter sets in band before each IDR.
fn open_encoder(width: u32, height: u32, format: Pixel) -> Result<Encoder, String> {
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
    // Keyframes follow the source's; this only bounds a source without any.
    enc.set_gop(300);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn source_with_bframes(n: u32, size: &str) -> Vec<(u32, Vec<u8>)> {
        x264_bframes_flv(&format!("testsrc2=size={size}:rate=30"), n, 30)
    }

    /// Picture types of FLV video tag bodies, decoded in order.
    fn decoded_kinds(tags: &[(u32, Vec<u8>)]) -> Vec<picture::Type> {
        let mut dec =
            codec::context::Context::new_with_codec(decoder::find(codec::Id::H264).unwrap())
                .decoder()
                .video()
                .unwrap();
        let (mut sps, mut pps) = (Vec::new(), Vec::new());
        let mut picture = frame::Video::empty();
        let mut kinds = Vec::new();
        for (ms, body) in tags {
            if body[1] == 0 {
                let (s, p) = parameter_sets(&body[5..]).unwrap();
                (sps, pps) = (s.to_vec(), p.to_vec());
                continue;
            }
            if body[1] != 1 {
                continue; // end of sequence
            }
            let mut au = Vec::new();
            let sets = [&sps, &pps];
            let head = if body[0] >> 4 == 1 { &sets[..] } else { &[] };
            for nal in head
                .iter()
                .map(|s| s.as_slice())
                .chain(avcc_nals(&body[5..]))
            {
                au.extend_from_slice(&START);
                au.extend_from_slice(nal);
            }
            let mut packet = Packet::copy(&au);
            packet.set_dts(Some(*ms as i64));
            dec.send_packet(&packet).unwrap();
            while dec.receive_frame(&mut picture).is_ok() {
                kinds.push(picture.kind());
            }
        }
        kinds
    }

    /// x264 with B-frames in, every picture out at once in presentation
    /// order, with no B-frames and no composition offsets: the sequence
    /// header first, a keyframe where the source has one, presentation
    /// times rising 33-34 ms apart.
    #[test]
    fn b_frames_in_every_picture_out_in_order_without_them() {
        let source = source_with_bframes(60, "160x96");
        let kinds = decoded_kinds(&source);
        assert!(
            kinds.contains(&picture::Type::B),
            "the source has B-frames: {kinds:?}"
        );
        let mut r = Reencoder::new().unwrap();
        let mut out = Vec::new();
        for (ms, body) in &source {
            r.push(*ms, body, &mut out);
        }
        assert!(r.refused.is_none(), "{:?}", r.refused);
        assert_eq!(out[0].1[..2], [0x17, 0], "a sequence header first");
        let frames: Vec<&(u32, Vec<u8>)> = out.iter().filter(|(_, b)| b[1] == 1).collect();
        // The decoder holds back the pictures that reordering needs (2).
        assert!(frames.len() >= 58, "{} of 60 pictures", frames.len());
        assert_eq!(frames[0].1[0], 0x17, "a keyframe first");
        let keys = frames.iter().filter(|(_, b)| b[0] == 0x17).count();
        assert_eq!(keys, 2, "the source's two IDRs (gop 30)");
        assert!(frames.iter().all(|(_, b)| b[2..5] == [0, 0, 0]));
        for w in frames.windows(2) {
            let d = w[1].0 as i64 - w[0].0 as i64;
            assert!((33..=34).contains(&d), "{} then {}", w[0].0, w[1].0);
        }
        let kinds = decoded_kinds(&out);
        assert_eq!(kinds.len(), frames.len());
        assert!(!kinds.contains(&picture::Type::B), "{kinds:?}");
    }

    /// A sequence header that declares a picture over 1080p: refused at
    /// once, said why, and its frames never decoded.
    #[test]
    fn a_picture_over_1080p_is_refused_before_decoding() {
        let tags = source_with_bframes(2, "2560x1440");
        let mut r = Reencoder::new().unwrap();
        let mut out = Vec::new();
        for (ms, body) in &tags {
            r.push(*ms, body, &mut out);
        }
        let why = r.refused.take().expect("refused");
        assert!(why.contains("2560x1440") && why.contains("1080p"), "{why}");
        assert!(out.is_empty());
    }
}
