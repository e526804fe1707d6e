//! Audio between the two worlds: WebRTC speaks Opus, RTMP (FLV) speaks AAC.
//!
//! Real codec libraries do the work: `opus-rs` (a pure-Rust port of libopus
//! 1.6, so the build needs no cmake or system libopus) and `fdk-aac`
//! (Fraunhofer's encoder and decoder, vendored C++ built with `cc`; measured
//! 5-20x faster than FFmpeg's native AAC encoder, see CRATES.md §7, and under
//! the Fraunhofer FDK AAC licence, see the README). Both run on a per-shard
//! transcoder thread ([`spawn`]), never on the shard's packet loop: a 20 ms
//! frame costs ~0.15 ms to transcode, a hundred times a forwarded packet.
//!
//! Each participant's audio is decoded once, then goes where it is wanted:
//!
//! ```text
//! Opus RTP payload ─▶ OpusIn ─┬─▶ 48 kHz stereo PCM ─▶ AacOut ─▶ FLV audio tags (its RTMP players)
//!                             ├─▶ level (RFC 6464)   (a publisher that sends none)
//!                             └─▶ the room's mixes (each program's but its own)
//! FLV audio tag    ─▶ AacIn  ─┬─▶ 48 kHz stereo PCM ─▶ OpusOut ─▶ 20 ms Opus (its WebRTC players)
//!                             ├─▶ level
//!                             └─▶ the room's mixes
//! mix (crate::mix)  ─▶ AacOut ─▶ FLV audio tags of a program
//! ```

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::{Duration, Instant};

use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, EncoderParams, Transport};
use opus_rs::{Application, OpusDecoder, OpusEncoder};
use rubato::{FftFixedIn, Resampler};
use tracing::warn;

use crate::mix::{self, Mixer};
use crate::participants::ParticipantId;

pub const RATE: u32 = 48_000;
pub const CHANNELS: usize = 2;
/// Samples per channel in one AAC-LC frame.
pub const AAC_FRAME: usize = 1024;
/// Samples per channel in one 20 ms Opus frame.
pub const OPUS_FRAME: usize = 960;
/// Longest Opus frame a decoder is asked for (120 ms).
const MAX_OPUS_FRAME: usize = 5760;

/// Decodes one participant's Opus packets to 48 kHz stereo PCM.
struct OpusIn {
    dec: OpusDecoder,
    pcm: Vec<f32>,
}

impl OpusIn {
    fn new() -> Result<OpusIn, String> {
        let dec =
            OpusDecoder::new(RATE as i32, CHANNELS).map_err(|e| format!("opus decoder: {e}"))?;
        Ok(OpusIn {
            dec,
            pcm: vec![0.0; MAX_OPUS_FRAME * CHANNELS],
        })
    }

    /// Interleaved samples of one packet (an empty one conceals a lost 20
    /// ms frame); `None` if it does not decode.
    fn decode(&mut self, opus: &[u8]) -> Option<&[f32]> {
        // libopus conceals as many samples as it is asked for: one 20 ms
        // packet's worth (WebRTC's packet time) for an empty one.
        let frame = if opus.is_empty() {
            OPUS_FRAME
        } else {
            MAX_OPUS_FRAME
        };
        match self.dec.decode(opus, frame, &mut self.pcm) {
            Ok(n) => Some(&self.pcm[..n * CHANNELS]),
            Err(e) => {
                warn!("undecodable Opus packet dropped: {e}");
                None
            }
        }
    }
}

/// 48 kHz stereo PCM to FLV AAC audio tag bodies, the sequence header first.
pub struct AacOut {
    enc: fdk_aac::enc::Encoder,
    asc: Vec<u8>,
    sent_config: bool,
    pending: Vec<i16>,
    out: Vec<u8>,
}

impl AacOut {
    pub fn new() -> Result<AacOut, String> {
        let enc = fdk_aac::enc::Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(128_000),
            sample_rate: RATE,
            transport: Transport::Raw,
            channels: ChannelMode::Stereo,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .map_err(|e| format!("AAC encoder: {e:?}"))?;
        let info = enc.info().map_err(|e| format!("AAC encoder info: {e:?}"))?;
        let asc = info.confBuf[..info.confSize as usize].to_vec();
        Ok(AacOut {
            enc,
            asc,
            sent_config: false,
            pending: Vec::with_capacity(AAC_FRAME * CHANNELS * 4),
            out: vec![0; 8192],
        })
    }

    /// The FLV AAC sequence header: `[0xAF, 0]` + AudioSpecificConfig.
    pub fn config_tag(&self) -> Vec<u8> {
        let mut b = vec![0xaf, 0];
        b.extend_from_slice(&self.asc);
        b
    }

    /// Appends the tag bodies of every AAC frame now complete (after the
    /// sequence header, the first time).
    pub fn push(&mut self, pcm: &[f32], tags: &mut Vec<Vec<u8>>) {
        if !self.sent_config {
            self.sent_config = true;
            tags.push(self.config_tag());
        }
        self.pending
            .extend(pcm.iter().map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16));
        let frame = AAC_FRAME * CHANNELS;
        while self.pending.len() >= frame {
            match self.enc.encode(&self.pending[..frame], &mut self.out) {
                Ok(info) => {
                    let used = info.input_consumed.clamp(1, frame);
                    self.pending.drain(..used);
                    if info.output_size > 0 {
                        let mut tag = vec![0xaf, 1];
                        tag.extend_from_slice(&self.out[..info.output_size]);
                        tags.push(tag);
                    }
                }
                Err(e) => {
                    warn!("AAC encoder failed: {e:?}");
                    self.pending.clear();
                    return;
                }
            }
        }
    }
}

/// FLV AAC audio tag bodies of one participant to 48 kHz stereo PCM:
/// mono is spread to both channels (by the decoder), other rates
/// (8-96 kHz) go through a resampler.
struct AacIn {
    dec: fdk_aac::dec::Decoder,
    configured: bool,
    pcm_i: Vec<i16>,
    pcm: Vec<f32>,
    /// The resampler for the stream's rate (when it is not 48 kHz), and the
    /// decoded samples (per channel) waiting for a whole input chunk.
    resampler: Option<(i32, FftFixedIn<f32>)>,
    waiting: [Vec<f32>; CHANNELS],
    resampled: Vec<Vec<f32>>,
    /// What about the stream cannot be bridged, once, for the room's event.
    refused: Option<String>,
    told: bool,
}

/// Input frames per resampler call: one AAC-LC frame.
const RESAMPLE_CHUNK: usize = AAC_FRAME;

impl AacIn {
    fn new() -> AacIn {
        AacIn {
            dec: fdk_aac::dec::Decoder::new(fdk_aac::dec::Transport::Raw),
            configured: false,
            pcm_i: vec![0; 8 * AAC_FRAME * CHANNELS],
            pcm: Vec::with_capacity(8 * AAC_FRAME * CHANNELS),
            resampler: None,
            waiting: Default::default(),
            resampled: Vec::new(),
            refused: None,
            told: false,
        }
    }

    /// Names what cannot be bridged, the first time only.
    fn refuse(&mut self, what: String) {
        if !self.told {
            self.told = true;
            self.refused = Some(what);
        }
    }

    /// One FLV audio tag body: the 48 kHz stereo samples it gave (possibly
    /// none yet, while the resampler fills), `None` for a sequence header
    /// or what does not decode.
    fn push(&mut self, body: &[u8]) -> Option<&[f32]> {
        if body.len() < 2 || body[0] >> 4 != 10 {
            return None; // not AAC
        }
        if body[1] == 0 {
            self.configured = self.dec.config_raw(&body[2..]).is_ok();
            if !self.configured {
                let object = body.get(2).map_or(0, |b| b >> 3);
                self.refuse(format!(
                    "audio: AAC of object type {object}, which the decoder refuses (AAC-LC, HE-AAC and HE-AACv2 are bridged)"
                ));
            }
            let _ = self.dec.set_min_output_channels(CHANNELS);
            let _ = self.dec.set_max_output_channels(CHANNELS);
            return None;
        }
        if !self.configured {
            return None;
        }
        if self.dec.fill(&body[2..]).is_err() || self.dec.decode_frame(&mut self.pcm_i).is_err() {
            return None;
        }
        let info = self.dec.stream_info();
        let channels = info.numChannels as usize;
        if !(1..=CHANNELS).contains(&channels) {
            self.refuse(format!("audio: AAC with {channels} output channels"));
            return None;
        }
        let n = self.dec.decoded_frame_size().min(self.pcm_i.len());
        let samples = self.pcm_i[..n].iter().map(|&s| s as f32 / 32768.0);
        self.pcm.clear();
        let rate = info.sampleRate;
        if rate == RATE as i32 {
            if channels == 1 {
                self.pcm.extend(samples.flat_map(|x| [x, x]));
            } else {
                self.pcm.extend(samples);
            }
            return Some(&self.pcm);
        }
        if !(8_000..=96_000).contains(&rate) {
            self.refuse(format!("audio: AAC at {rate} Hz (8-96 kHz are bridged)"));
            return None;
        }
        if self.resampler.as_ref().is_none_or(|(r, _)| *r != rate) {
            let r =
                FftFixedIn::new(rate as usize, RATE as usize, RESAMPLE_CHUNK, 2, CHANNELS).ok()?;
            self.resampled = r.output_buffer_allocate(true);
            self.resampler = Some((rate, r));
            self.waiting.iter_mut().for_each(Vec::clear);
        }
        for (i, x) in samples.enumerate() {
            if channels == 1 {
                self.waiting[0].push(x);
                self.waiting[1].push(x);
            } else {
                self.waiting[i % CHANNELS].push(x);
            }
        }
        let (_, r) = self.resampler.as_mut()?;
        while self.waiting[0].len() >= RESAMPLE_CHUNK {
            let input: [&[f32]; CHANNELS] = [
                &self.waiting[0][..RESAMPLE_CHUNK],
                &self.waiting[1][..RESAMPLE_CHUNK],
            ];
            let (_, made) = r
                .process_into_buffer(&input, &mut self.resampled, None)
                .ok()?;
            for i in 0..made {
                self.pcm.push(self.resampled[0][i]);
                self.pcm.push(self.resampled[1][i]);
            }
            self.waiting.iter_mut().for_each(|w| {
                w.drain(..RESAMPLE_CHUNK);
            });
        }
        Some(&self.pcm)
    }
}

/// 48 kHz stereo PCM to 20 ms Opus packets.
struct OpusOut {
    enc: OpusEncoder,
    pending: Vec<f32>,
    out: Vec<u8>,
}

impl OpusOut {
    fn new() -> Result<OpusOut, String> {
        let mut enc = OpusEncoder::new(RATE as i32, CHANNELS, Application::Audio)
            .map_err(|e| format!("opus encoder: {e}"))?;
        enc.bitrate_bps = 64_000;
        Ok(OpusOut {
            enc,
            pending: Vec::with_capacity(OPUS_FRAME * CHANNELS * 4),
            out: vec![0; 1500],
        })
    }

    fn push(&mut self, pcm: &[f32], packets: &mut Vec<Vec<u8>>) {
        self.pending.extend_from_slice(pcm);
        let frame = OPUS_FRAME * CHANNELS;
        while self.pending.len() >= frame {
            if let Ok(len) = self
                .enc
                .encode(&self.pending[..frame], OPUS_FRAME, &mut self.out)
            {
                packets.push(self.out[..len].to_vec());
            }
            self.pending.drain(..frame);
        }
    }
}

/// The level of PCM samples as RFC 6464 has it: the RMS against full
/// scale in -dBov, 0 (loudest) to 127 (silence or quieter).
pub fn audio_level(pcm: &[f32]) -> u8 {
    if pcm.is_empty() {
        return 127;
    }
    let sum: f64 = pcm.iter().map(|&s| (s as f64).powi(2)).sum();
    let rms = (sum / pcm.len() as f64).sqrt();
    if rms <= 0.0 {
        return 127;
    }
    (-20.0 * rms.log10()).round().clamp(0.0, 127.0) as u8
}

/// What a participant's decoded Opus is for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OpusUses {
    /// AAC for the participant's own RTMP players.
    pub bridge: bool,
    /// Its level, for the room's active speaker (a publisher that sends none).
    pub level: bool,
    /// The programs whose mix it is in.
    pub mixes: Vec<u64>,
}

/// Work for the transcoder thread. Streams are participants
/// ([`crate::participants::ParticipantId`]); mixes are programs (the hub's ids).
#[derive(Debug)]
pub enum Job {
    /// An Opus RTP payload (of RTP time `rtp_ts`) of the participant's
    /// WebRTC or RTP publisher.
    Opus {
        stream: ParticipantId,
        rtp_ts: u32,
        opus: Vec<u8>,
        uses: OpusUses,
    },
    /// An FLV audio tag of the participant's RTMP publisher: Opus for the
    /// WebRTC side, its level, and into the `mixes`.
    Aac {
        stream: ParticipantId,
        ms: u32,
        flv: Vec<u8>,
        mixes: Vec<u64>,
    },
    /// An FLV video tag of the participant's RTMP publisher, whose
    /// B-frames are re-encoded away for its WebRTC side (crate::reencode);
    /// runs on the shard's re-encode thread.
    Video {
        stream: ParticipantId,
        ms: u32,
        flv: Vec<u8>,
    },
    /// Frame `n` (numbered per stream, so one lost on the way is seen) of
    /// the participant's WebRTC or RTP publisher in a codec FLV does not
    /// carry, at FLV time `ms`, to transcode to H264 for its RTMP players
    /// (crate::reencode); runs on the shard's re-encode thread.
    Transcode {
        stream: ParticipantId,
        codec: crate::codec::VideoCodec,
        n: u32,
        ms: u32,
        key: bool,
        frame: Vec<u8>,
    },
    /// The participant's publisher changed or left: start afresh.
    Reset { stream: ParticipantId },
    /// Nobody plays the program any more.
    MixEnd { program: u64 },
}

pub enum Done {
    /// FLV audio tag bodies (the first one a sequence header) made from
    /// Opus of RTP time `rtp_ts`.
    Aac {
        stream: ParticipantId,
        rtp_ts: u32,
        tags: Vec<Vec<u8>>,
    },
    /// Opus packets, 20 ms each, the first at `ms`, and the level of the
    /// AAC they came from.
    Opus {
        stream: ParticipantId,
        ms: u32,
        packets: Vec<Vec<u8>>,
        level: Option<u8>,
    },
    /// The level of a participant's decoded Opus.
    Level { stream: ParticipantId, level: u8 },
    /// FLV audio tag bodies of a program's mix, 1024 samples apart (the
    /// first one a sequence header when the mix starts).
    Mix { program: u64, tags: Vec<Vec<u8>> },
    /// Re-encoded FLV video tag bodies of the participant's RTMP publisher,
    /// each with its presentation time (ms).
    Video {
        stream: ParticipantId,
        tags: Vec<(u32, Vec<u8>)>,
    },
    /// H264 FLV video tag bodies transcoded from the participant's
    /// publisher's frames ([`Job::Transcode`]), each with its FLV time
    /// (ms), for its RTMP players.
    Transcoded {
        stream: ParticipantId,
        tags: Vec<(u32, Vec<u8>)>,
    },
    /// The transcoder lost its place in the participant's publisher's
    /// video (a frame lost on the way, or refused): ask it for a keyframe.
    KeyframeWanted { stream: ParticipantId },
    /// The participant's audio (or video to re-encode) cannot be bridged;
    /// `what` says why (once).
    MediaWarning { stream: ParticipantId, what: String },
}

pub struct TranscodeLink {
    to: SyncSender<Job>,
    /// The re-encode thread, when video may be re-encoded or transcoded.
    video: Option<SyncSender<Job>>,
    pub from: Receiver<Done>,
}

impl TranscodeLink {
    /// Queues `job` without waiting; false if the queue is full (the
    /// transcoder is behind: the caller counts the drop) or the thread is gone.
    pub fn send(&self, job: Job) -> bool {
        match (&job, &self.video) {
            (Job::Video { .. } | Job::Transcode { .. }, Some(video)) => video.try_send(job).is_ok(),
            (Job::Video { .. } | Job::Transcode { .. }, None) => false,
            (Job::Reset { stream }, Some(video)) => {
                // Both threads keep state of the participant.
                let _ = video.try_send(Job::Reset { stream: *stream });
                self.to.try_send(job).is_ok()
            }
            _ => self.to.try_send(job).is_ok(),
        }
    }
}

/// Starts shard `index`'s transcoder thread with room for `queue` jobs,
/// and its re-encode thread if `reencode` (B-frames may be re-encoded or
/// video transcoded, and the `reencode` feature is built in); they end
/// when the link drops.
/// `bell` wakes the shard when results wait for it.
pub fn spawn(
    index: u32,
    queue: usize,
    reencode: bool,
    bell: gateway_ring::Doorbell,
) -> std::io::Result<TranscodeLink> {
    let (to, inbox) = mpsc::sync_channel::<Job>(queue);
    let (outbox, from) = mpsc::channel::<Done>();
    #[cfg(feature = "reencode")]
    let video = match reencode {
        true => Some(spawn_reencode(index, outbox.clone(), bell.clone())?),
        false => None,
    };
    // Built without the `reencode` feature: video is never re-encoded.
    #[cfg(not(feature = "reencode"))]
    let video = {
        let _ = reencode;
        None
    };
    std::thread::Builder::new()
        .name(format!("transcode-{index}"))
        .spawn(move || {
            let mut t = Transcoder::default();
            let mut done = Vec::new();
            while let Ok(job) = inbox.recv() {
                t.run(job, Instant::now(), &mut done);
                let any = !done.is_empty();
                for d in done.drain(..) {
                    if outbox.send(d).is_err() {
                        return;
                    }
                }
                if any {
                    bell.ring();
                }
            }
        })?;
    Ok(TranscodeLink { to, video, from })
}

/// The re-encode thread: video, whose frames cost milliseconds each, apart
/// from the audio, whose 20 ms frames must not wait behind them.
#[cfg(feature = "reencode")]
fn spawn_reencode(
    index: u32,
    outbox: mpsc::Sender<Done>,
    bell: gateway_ring::Doorbell,
) -> std::io::Result<SyncSender<Job>> {
    use crate::reencode::{Input, Reencoder};
    let (to, inbox) = mpsc::sync_channel::<Job>(crate::reencode::QUEUE);
    std::thread::Builder::new()
        .name(format!("reencode-{index}"))
        .spawn(move || {
            // None: no re-encoder could be made for the publisher (said
            // once; its frames are dropped until it starts afresh or
            // changes codec).
            let mut streams: HashMap<ParticipantId, (Input, Option<Reencoder>)> = HashMap::new();
            while let Ok(job) = inbox.recv() {
                let (stream, input) = match &job {
                    Job::Video { stream, flv, .. } => (*stream, Input::of_flv(flv)),
                    Job::Transcode { stream, codec, .. } => (*stream, Input::Coded(*codec)),
                    Job::Reset { stream } => {
                        streams.remove(stream);
                        continue;
                    }
                    _ => continue,
                };
                if streams.get(&stream).is_some_and(|(i, _)| *i != input) {
                    streams.remove(&stream); // another codec: start afresh
                }
                let (_, r) = match streams.entry(stream) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(v) => {
                        let made = Reencoder::new(input);
                        if let Err(what) = &made {
                            warn!(%stream, "no re-encoder: {what}");
                            let what = what.clone();
                            if outbox.send(Done::MediaWarning { stream, what }).is_err() {
                                return;
                            }
                            bell.ring();
                        }
                        v.insert((input, made.ok()))
                    }
                };
                let Some(r) = r else { continue };
                let mut tags = Vec::new();
                // A codec bug costs this publisher its re-encoder, not the
                // thread and with it every re-encoded stream on the shard.
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match job {
                    Job::Video { ms, flv, .. } => r.push(ms, &flv, &mut tags),
                    Job::Transcode {
                        n, ms, key, frame, ..
                    } => r.push_coded(n, ms, key, &frame, &mut tags),
                    _ => {}
                }));
                let refused = r.refused.take();
                let key = std::mem::take(&mut r.wants_keyframe);
                if ran.is_err() {
                    warn!(%stream, "re-encoder panicked; it starts afresh");
                    streams.remove(&stream);
                }
                let warning = refused.map(|what| Done::MediaWarning { stream, what });
                let key = key.then_some(Done::KeyframeWanted { stream });
                let video = match input {
                    _ if tags.is_empty() => None,
                    Input::FlvH264 | Input::Enhanced(_) => Some(Done::Video { stream, tags }),
                    Input::Coded(_) => Some(Done::Transcoded { stream, tags }),
                };
                let mut any = false;
                for d in warning.into_iter().chain(key).chain(video) {
                    if outbox.send(d).is_err() {
                        return;
                    }
                    any = true;
                }
                if any {
                    bell.ring();
                }
            }
        })?;
    Ok(to)
}

/// One participant's codec state, each part made on first use.
#[derive(Default)]
struct StreamCodecs {
    opus_in: Option<OpusIn>,
    aac_out: Option<AacOut>,
    aac_in: Option<AacIn>,
    opus_out: Option<OpusOut>,
}

/// One program's mix and its encoder.
struct Mix {
    mixer: Mixer,
    aac: AacOut,
    fed: Instant,
}

/// A mix nobody fed for this long is dropped (its end may have been lost
/// to a full queue).
const MIX_IDLE: Duration = Duration::from_secs(10);

/// The transcoder thread's state: every participant's codecs and every
/// program's mix. Each participant is decoded once, whatever its audio
/// is for (its own RTMP or WebRTC players, the room's mixes).
#[derive(Default)]
pub struct Transcoder {
    streams: HashMap<ParticipantId, StreamCodecs>,
    mixes: HashMap<u64, Mix>,
    last_sweep: Option<Instant>,
}

/// Makes a codec part on first use; logs and gives up if it cannot.
fn made<T>(
    slot: &mut Option<T>,
    stream: ParticipantId,
    new: impl FnOnce() -> Result<T, String>,
) -> Option<&mut T> {
    if slot.is_none() {
        match new() {
            Ok(t) => *slot = Some(t),
            Err(e) => {
                warn!(%stream, "no codec: {e}");
                return None;
            }
        }
    }
    slot.as_mut()
}

impl Transcoder {
    /// Runs `job` at `now`, appending what it made to `done`. A codec bug
    /// costs the participant (or program) its state, not the thread and
    /// with it every stream's audio on the shard.
    pub fn run(&mut self, job: Job, now: Instant, done: &mut Vec<Done>) {
        self.sweep(now);
        let (stream, mixes) = match &job {
            Job::Opus { stream, uses, .. } => (Some(*stream), uses.mixes.clone()),
            Job::Aac { stream, mixes, .. } => (Some(*stream), mixes.clone()),
            Job::Reset { stream } | Job::Video { stream, .. } | Job::Transcode { stream, .. } => {
                (Some(*stream), Vec::new())
            }
            Job::MixEnd { program } => (None, vec![*program]),
        };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.run_job(job, now, done)
        }));
        if ran.is_err() {
            warn!(
                ?stream,
                ?mixes,
                "transcoder panicked; this audio starts afresh"
            );
            if let Some(s) = stream {
                self.streams.remove(&s);
            }
            for m in mixes {
                self.mixes.remove(&m);
            }
        }
    }

    fn run_job(&mut self, job: Job, now: Instant, done: &mut Vec<Done>) {
        match job {
            Job::Reset { stream } => {
                self.streams.remove(&stream);
                for m in self.mixes.values_mut() {
                    m.mixer.remove(stream);
                }
            }
            Job::MixEnd { program } => {
                self.mixes.remove(&program);
            }
            // The re-encode thread's.
            Job::Video { .. } | Job::Transcode { .. } => {}
            Job::Opus {
                stream,
                rtp_ts,
                opus,
                uses,
            } => {
                let s = self.streams.entry(stream).or_default();
                let Some(dec) = made(&mut s.opus_in, stream, OpusIn::new) else {
                    return;
                };
                let Some(pcm) = dec.decode(&opus) else { return };
                if uses.bridge {
                    if let Some(enc) = made(&mut s.aac_out, stream, AacOut::new) {
                        let mut tags = Vec::new();
                        enc.push(pcm, &mut tags);
                        done.push(Done::Aac {
                            stream,
                            rtp_ts,
                            tags,
                        });
                    }
                }
                if uses.level {
                    let level = audio_level(pcm);
                    done.push(Done::Level { stream, level });
                }
                mix_in(&mut self.mixes, &uses.mixes, stream, pcm, now, done);
            }
            Job::Aac {
                stream,
                ms,
                flv,
                mixes,
            } => {
                let s = self.streams.entry(stream).or_default();
                let dec = s.aac_in.get_or_insert_with(AacIn::new);
                let got = dec.push(&flv).is_some_and(|p| !p.is_empty());
                if let Some(what) = dec.refused.take() {
                    done.push(Done::MediaWarning { stream, what });
                }
                if !got {
                    return;
                }
                let pcm = &dec.pcm[..];
                let level = audio_level(pcm);
                let mut packets = Vec::new();
                if let Some(enc) = made(&mut s.opus_out, stream, OpusOut::new) {
                    enc.push(pcm, &mut packets);
                }
                done.push(Done::Opus {
                    stream,
                    ms,
                    packets,
                    level: Some(level),
                });
                mix_in(&mut self.mixes, &mixes, stream, pcm, now, done);
            }
        }
    }

    /// Drops the mixes nobody fed for [`MIX_IDLE`], every few seconds.
    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < MIX_IDLE / 2)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.mixes
            .retain(|_, m| now.saturating_duration_since(m.fed) < MIX_IDLE);
    }

    /// Programs with a mix (for tests).
    pub fn mix_count(&self) -> usize {
        self.mixes.len()
    }
}

/// Adds participant `stream`'s `pcm` to each of `programs`' mixes (made on
/// first use) and encodes the frames now due.
fn mix_in(
    mixes: &mut HashMap<u64, Mix>,
    programs: &[u64],
    stream: ParticipantId,
    pcm: &[f32],
    now: Instant,
    done: &mut Vec<Done>,
) {
    let mut frame = [0.0f32; mix::FRAME * mix::CHANNELS];
    for &program in programs {
        let m = match mixes.entry(program) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(v) => match AacOut::new() {
                Ok(aac) => v.insert(Mix {
                    mixer: Mixer::default(),
                    aac,
                    fed: now,
                }),
                Err(e) => {
                    warn!(program, "no mix encoder: {e}");
                    continue;
                }
            },
        };
        m.fed = now;
        m.mixer.push(stream, pcm);
        let mut tags = Vec::new();
        while m.mixer.pull(&mut frame) {
            m.aac.push(&frame, &mut tags);
        }
        if !tags.is_empty() {
            done.push(Done::Mix { program, tags });
        }
    }
}

#[cfg(test)]
mod tests;
