//! `onMetaData` for every FLV output (RTMP and HTTP-FLV players of a
//! participant's stream or of a program): what players size their buffers
//! and decoders by. Publishers send it incomplete or not at all (ffmpeg
//! with `-c:v copy` says `videodatarate` 0; a WebRTC publisher sends
//! none; WeChat's `live-player` is known to stall on `audiodatarate` 0), so
//! the stream writes its own from what passes through it:
//!
//! ```text
//! video sequence header ─▶ its codec (crate::codec) ─▶ width, height, frame rate if it says
//! audio sequence header ─▶ AudioSpecificConfig ─▶ sample rate, channels
//! frames               ─▶ bytes and times    ─▶ data rates, frame rate (measured per GOP)
//! publisher's onMetaData ─▶ its other fields (encoder, …) kept; ours win
//! ```
//!
//! The metadata goes out once before the stream's first keyframe (so a
//! player gets it, then the sequence headers, then the picture), again when
//! a sequence header changes what it says, and is refreshed in the GOP cache
//! at each keyframe so players that join later get measured rates.

use std::collections::HashMap;

use bytes::Bytes;
use rml_amf0::Amf0Value;

use super::conn::{types, Media};
use super::stream::{is_audio_config, is_keyframe, is_video_config};
use crate::codec::FlvCodec;

/// Bits per pixel of a typical H264 live stream: the video data rate said
/// before one was measured (320x240 at 30 fps: 230 kbit/s).
const BITS_PER_PIXEL: f64 = 0.1;
/// Frame rate said before one was read or measured.
const NOMINAL_FPS: f64 = 30.0;

/// What a stream's metadata says, and how it is measured.
#[derive(Debug, Default, Clone)]
pub struct Meta {
    width: u32,
    height: u32,
    /// From the SPS (VUI timing), or measured.
    sps_fps: Option<f64>,
    video: bool,
    /// `videocodecid` from the sequence header: FLV's codec id, or an
    /// E-RTMP FourCC as a number; H264 until one came.
    video_codec: Option<f64>,
    audio_rate: u32,
    audio_channels: u8,
    audio: bool,
    /// The publisher's own fields, and its data rates if it gave any.
    publisher: HashMap<String, Amf0Value>,
    /// Measured over the last GOP: (kbit/s video, kbit/s audio, frames/s).
    measured: Option<(f64, f64, f64)>,
    /// The current GOP so far: video bytes and frames, audio bytes, and
    /// the time span.
    gop_video: (u64, u32),
    gop_audio: u64,
    gop_start: Option<u32>,
    gop_last: u32,
    /// Sent to players (before the first keyframe).
    sent: bool,
}

/// What [`Meta::before`] asks of the stream before it sends a message on.
#[derive(Debug, PartialEq)]
pub enum Send {
    /// Nothing.
    Nothing,
    /// This `onMetaData` to the players and the cache, before the message.
    Players(Media),
    /// This `onMetaData` into the GOP cache only (fresher rates for later
    /// players; those playing now keep what they were told).
    Cache(Media),
}

impl Meta {
    /// The publisher's own `onMetaData` (the message is not sent on: the
    /// stream's, with these fields merged, is); `Players` if it was already
    /// sent, so it is updated now.
    pub fn from_publisher(&mut self, m: &Media) -> Send {
        if let Ok(values) = rml_amf0::deserialize(&mut &m.payload[..]) {
            if let Some(Amf0Value::Object(fields)) = values.into_iter().nth(1) {
                self.publisher = fields;
            }
        }
        if self.sent {
            Send::Players(self.message())
        } else {
            Send::Nothing
        }
    }

    /// Looks at a message the stream sends on (not the publisher's
    /// metadata): what to send first.
    pub fn before(&mut self, m: &Media) -> Send {
        let changed = if is_video_config(m) {
            Some(self.read_video_config(&m.payload))
        } else if is_audio_config(m) {
            Some(self.read_audio_config(&m.payload))
        } else {
            None
        };
        if let Some(changed) = changed {
            // A sequence header: the players hear of what it changed.
            return if changed && self.sent {
                Send::Players(self.message())
            } else {
                Send::Nothing
            };
        }
        if m.type_id == types::AUDIO {
            self.audio = true;
            self.gop_audio += m.payload.len() as u64;
            self.stretch(m.timestamp);
            return Send::Nothing;
        }
        if m.type_id != types::VIDEO {
            return Send::Nothing;
        }
        self.video = true;
        let mut send = Send::Nothing;
        if is_keyframe(m) {
            self.close_gop(m.timestamp);
            send = if self.sent {
                Send::Cache(self.message())
            } else {
                self.sent = true;
                Send::Players(self.message())
            };
        }
        self.gop_video.0 += m.payload.len() as u64;
        self.gop_video.1 += 1;
        self.stretch(m.timestamp);
        send
    }

    fn stretch(&mut self, ts: u32) {
        self.gop_start.get_or_insert(ts);
        if ts.wrapping_sub(self.gop_last) as i32 > 0 || self.gop_last == 0 {
            self.gop_last = ts;
        }
    }

    /// A keyframe at `ts` ends the GOP: its rates become the measured ones.
    fn close_gop(&mut self, ts: u32) {
        if let Some(start) = self.gop_start {
            let ms = ts.wrapping_sub(start) as i32;
            if ms >= 500 {
                let s = ms as f64 / 1000.0;
                let (vb, frames) = self.gop_video;
                self.measured = Some((
                    vb as f64 * 8.0 / 1000.0 / s,
                    self.gop_audio as f64 * 8.0 / 1000.0 / s,
                    frames as f64 / s,
                ));
            }
        }
        self.gop_video = (0, 0);
        self.gop_audio = 0;
        self.gop_start = Some(ts);
        self.gop_last = ts;
    }

    /// Width, height and frame rate from a video sequence header; true if
    /// they changed.
    fn read_video_config(&mut self, body: &[u8]) -> bool {
        self.video = true;
        let codec = super::stream::video_codec_id(body);
        let codec_changed = codec != self.video_codec;
        self.video_codec = codec;
        let Some((w, h, fps)) = video_config_picture(body) else {
            return codec_changed;
        };
        let changed = codec_changed || (w, h) != (self.width, self.height) || fps != self.sps_fps;
        (self.width, self.height, self.sps_fps) = (w, h, fps);
        changed
    }

    /// Sample rate and channels from an AAC sequence header; true if they changed.
    fn read_audio_config(&mut self, body: &[u8]) -> bool {
        self.audio = true;
        let Some((rate, channels)) = body.get(2..).and_then(audio_specific_config) else {
            return false;
        };
        let changed = (rate, channels) != (self.audio_rate, self.audio_channels);
        (self.audio_rate, self.audio_channels) = (rate, channels);
        changed
    }

    /// A publisher's nonzero number field.
    fn theirs(&self, key: &str) -> Option<f64> {
        match self.publisher.get(key) {
            Some(Amf0Value::Number(n)) if *n > 0.0 && n.is_finite() => Some(*n),
            _ => None,
        }
    }

    /// The `onMetaData` message now. Its time is 0, as publishers send it:
    /// ffmpeg's FLV reader takes a script tag at any other time for a data
    /// stream of its own (and with a short probe, for the only stream).
    pub fn message(&self) -> Media {
        let mut f = self.publisher.clone();
        let num = |v: f64| Amf0Value::Number(v);
        let fps = self
            .sps_fps
            .or(self.measured.map(|m| m.2).filter(|&r| r > 0.0))
            .or(self.theirs("framerate"))
            .unwrap_or(NOMINAL_FPS);
        if self.video {
            let h264 = FlvCodec::NEGOTIATED.flv_codec_id() as f64;
            f.insert("videocodecid".into(), num(self.video_codec.unwrap_or(h264)));
            if self.width > 0 {
                f.insert("width".into(), num(self.width as f64));
                f.insert("height".into(), num(self.height as f64));
            }
            f.insert("framerate".into(), num((fps * 100.0).round() / 100.0));
            let estimate = self.width as f64 * self.height as f64 * fps * BITS_PER_PIXEL / 1000.0;
            let rate = self
                .measured
                .map(|m| m.0)
                .filter(|&r| r > 0.0)
                .or(self.theirs("videodatarate"))
                .unwrap_or(estimate.max(1.0));
            f.insert("videodatarate".into(), num(rate.round().max(1.0)));
        }
        if self.audio {
            f.insert("audiocodecid".into(), num(10.0));
            if self.audio_rate > 0 {
                f.insert("audiosamplerate".into(), num(self.audio_rate as f64));
                f.insert(
                    "stereo".into(),
                    Amf0Value::Boolean(self.audio_channels >= 2),
                );
                f.insert("audiochannels".into(), num(self.audio_channels as f64));
            }
            f.insert("audiosamplesize".into(), num(16.0));
            // AAC-LC at 64 kbit/s per channel until measured.
            let nominal = 64.0 * self.audio_channels.max(1) as f64;
            let rate = self
                .measured
                .map(|m| m.1)
                .filter(|&r| r > 0.0)
                .or(self.theirs("audiodatarate"))
                .unwrap_or(nominal);
            f.insert("audiodatarate".into(), num(rate.round().max(1.0)));
        }
        f.insert("server".into(), Amf0Value::Utf8String("mediagw".into()));
        let payload = rml_amf0::serialize(&vec![
            Amf0Value::Utf8String("onMetaData".into()),
            Amf0Value::Object(f),
        ])
        .unwrap_or_default();
        Media {
            type_id: types::DATA_AMF0,
            timestamp: 0,
            payload: Bytes::from(payload),
        }
    }
}

/// (width, height, frames per second if it says) of an FLV video sequence
/// header (`[key | codec id, 0, cts×3]` + its codec's decoder configuration
/// record), read by its codec ([`FlvCodec::picture`]).
pub fn video_config_picture(body: &[u8]) -> Option<(u32, u32, Option<f64>)> {
    FlvCodec::of_flv(body)?.picture(body.get(5..)?)
}

/// (sample rate, channels) of an AudioSpecificConfig (ISO 14496-3 §1.6.2.1):
/// 5 bits object type, 4 bits frequency index (or 24 bits of rate after
/// index 15), 4 bits channel configuration.
pub fn audio_specific_config(asc: &[u8]) -> Option<(u32, u8)> {
    const RATES: [u32; 13] = [
        96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025,
        8_000, 7_350,
    ];
    if asc.len() < 2 {
        return None;
    }
    let bits = u64::from_be_bytes({
        let mut b = [0u8; 8];
        let n = asc.len().min(8);
        b[..n].copy_from_slice(&asc[..n]);
        b
    });
    let object = (bits >> 59) as u8;
    if object == 31 || object == 0 {
        return None; // escape to a longer object type, or none
    }
    let index = ((bits >> 55) & 0xf) as usize;
    let (rate, rest) = if index == 15 {
        (((bits >> 31) & 0xff_ffff) as u32, 31)
    } else {
        (*RATES.get(index)?, 55)
    };
    let channels = ((bits >> (rest - 4)) & 0xf) as u8;
    (rate > 0 && (1..=7).contains(&channels)).then_some((rate, channels))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x264's baseline SPSs of 320x240 and 640x360 streams (ffmpeg testsrc).
    const SPS_320X240: &[u8] = &[
        0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10,
        0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0xa4, 0x80,
    ];
    const SPS_640X360: &[u8] = &[
        0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x2f, 0xf9, 0x70, 0x11, 0x00, 0x00, 0x03, 0x00,
        0x01, 0x00, 0x00, 0x03, 0x00, 0x3c, 0x0f, 0x16, 0x2e, 0x48,
    ];
    const PPS: &[u8] = &[0x68, 0xcb, 0x83, 0xcb, 0x20];

    fn video_config() -> Media {
        Media {
            type_id: types::VIDEO,
            timestamp: 0,
            payload: Bytes::from(crate::codec::h264::config_tag(SPS_320X240, PPS).unwrap()),
        }
    }

    fn fields(m: &Media) -> HashMap<String, Amf0Value> {
        let v = rml_amf0::deserialize(&mut &m.payload[..]).unwrap();
        assert_eq!(v[0], Amf0Value::Utf8String("onMetaData".into()));
        match &v[1] {
            Amf0Value::Object(f) => f.clone(),
            other => panic!("{other:?}"),
        }
    }

    fn number(f: &HashMap<String, Amf0Value>, k: &str) -> f64 {
        match f.get(k) {
            Some(Amf0Value::Number(n)) => *n,
            other => panic!("{k}: {other:?}"),
        }
    }

    #[test]
    fn audio_specific_configs() {
        assert_eq!(audio_specific_config(&[0x11, 0x90]), Some((48_000, 2)));
        assert_eq!(audio_specific_config(&[0x12, 0x08]), Some((44_100, 1)));
        assert_eq!(audio_specific_config(&[0x15, 0x88]), Some((8_000, 1)));
        assert_eq!(audio_specific_config(&[0x10]), None);
        assert_eq!(audio_specific_config(&[0xf8, 0, 0, 0]), None);
        assert_eq!(audio_specific_config(&[0x16, 0x10]), Some((7_350, 2)));
        assert_eq!(
            audio_specific_config(&[0x16, 0x90]),
            None,
            "index 13 is reserved"
        );
    }

    /// Metadata goes out before the first keyframe with every field, its
    /// rates nonzero; a GOP later the cache gets measured rates; the
    /// publisher's own fields are kept, its zero rates are not.
    #[test]
    fn complete_metadata_before_the_first_keyframe_then_measured() {
        let mut meta = Meta::default();
        let theirs = rml_amf0::serialize(&vec![
            Amf0Value::Utf8String("onMetaData".into()),
            Amf0Value::Object(HashMap::from([
                ("encoder".to_string(), Amf0Value::Utf8String("Lavf".into())),
                ("videodatarate".to_string(), Amf0Value::Number(0.0)),
            ])),
        ])
        .unwrap();
        let publisher = Media {
            type_id: types::DATA_AMF0,
            timestamp: 0,
            payload: Bytes::from(theirs),
        };
        assert_eq!(meta.from_publisher(&publisher), Send::Nothing);
        assert_eq!(meta.before(&video_config()), Send::Nothing);
        let aac = Media {
            type_id: types::AUDIO,
            timestamp: 0,
            payload: Bytes::from_static(&[0xaf, 0, 0x11, 0x90]),
        };
        assert_eq!(meta.before(&aac), Send::Nothing);
        let frame = |ts: u32, key: bool, n: usize| Media {
            type_id: types::VIDEO,
            timestamp: ts,
            payload: Bytes::from(
                [
                    &[if key { 0x17 } else { 0x27 }, 1, 0, 0, 0][..],
                    &vec![0; n],
                ]
                .concat(),
            ),
        };
        let Send::Players(first) = meta.before(&frame(0, true, 5_000)) else {
            panic!("metadata before the first keyframe");
        };
        let f = fields(&first);
        assert_eq!(f["encoder"], Amf0Value::Utf8String("Lavf".into()));
        assert_eq!((number(&f, "width"), number(&f, "height")), (320.0, 240.0));
        assert_eq!(number(&f, "videocodecid"), 7.0);
        assert_eq!(number(&f, "audiocodecid"), 10.0);
        assert_eq!(number(&f, "audiosamplerate"), 48_000.0);
        assert_eq!(number(&f, "audiochannels"), 2.0);
        assert_eq!(f["stereo"], Amf0Value::Boolean(true));
        assert!(number(&f, "videodatarate") >= 1.0);
        assert!(number(&f, "audiodatarate") >= 1.0);
        assert!(number(&f, "framerate") > 0.0);
        // One second: 25 frames of 1 kB and 47 AAC frames of 300 B.
        for i in 1..25u32 {
            assert_eq!(meta.before(&frame(i * 40, false, 1_000)), Send::Nothing);
        }
        for i in 0..47u32 {
            let a = Media {
                type_id: types::AUDIO,
                timestamp: i * 21,
                payload: Bytes::from(vec![0xaf; 300]),
            };
            meta.before(&a);
        }
        let Send::Cache(later) = meta.before(&frame(1_000, true, 5_000)) else {
            panic!("a refresh of the cache at the next keyframe");
        };
        let f = fields(&later);
        // x264 writes its frame rate into the SPS: that wins over the
        // 25 frames a second measured here.
        assert_eq!(number(&f, "framerate"), 30.0, "{f:?}");
        let video = number(&f, "videodatarate");
        assert!(
            (220.0..=240.0).contains(&video),
            "(5 kB + 24 kB) × 8 / 1 s: {video}"
        );
        let audio = number(&f, "audiodatarate");
        assert!(
            (110.0..=115.0).contains(&audio),
            "47 × 300 B × 8 / 1 s: {audio}"
        );
        // A new picture size is told to the players before its header.
        let mut other = video_config();
        other.payload = Bytes::from(crate::codec::h264::config_tag(SPS_640X360, PPS).unwrap());
        let Send::Players(m) = meta.before(&other) else {
            panic!("a new size goes to the players");
        };
        let f = fields(&m);
        assert_eq!((number(&f, "width"), number(&f, "height")), (640.0, 360.0));
        assert_eq!(meta.before(&other), Send::Nothing, "the same again");
    }

    #[test]
    fn hostile_configs_are_ignored() {
        let mut meta = Meta::default();
        for junk in [
            vec![0x17, 0],
            vec![
                0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0xff, 0xff, 0xff,
            ],
            vec![
                0x17, 0, 0, 0, 0, 1, 0x42, 0, 0x1f, 0xff, 0xe1, 0xff, 0xff, 0x67,
            ],
            vec![0xaf, 0],
            vec![0xaf, 0, 0xff, 0xff, 0xff],
        ] {
            let m = Media {
                type_id: if junk[0] == 0xaf {
                    types::AUDIO
                } else {
                    types::VIDEO
                },
                timestamp: 0,
                payload: Bytes::from(junk),
            };
            assert_eq!(meta.before(&m), Send::Nothing);
        }
    }
}
