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
//! ```text
//! Opus RTP payload ─▶ OpusToAac ─▶ 48 kHz stereo PCM ─▶ AAC-LC 1024-sample frames ─▶ FLV audio tags
//! FLV audio tag    ─▶ AacToOpus ─▶ 48 kHz stereo PCM ─▶ Opus 20 ms frames           ─▶ RTP payloads
//! ```

use std::sync::mpsc::{self, Receiver, SyncSender};

use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, EncoderParams, Transport};
use opus_rs::{Application, OpusDecoder, OpusEncoder};
use tracing::warn;

pub const RATE: u32 = 48_000;
pub const CHANNELS: usize = 2;
/// Samples per channel in one AAC-LC frame.
pub const AAC_FRAME: usize = 1024;
/// Samples per channel in one 20 ms Opus frame.
pub const OPUS_FRAME: usize = 960;
/// Longest Opus frame a decoder is asked for (120 ms).
const MAX_OPUS_FRAME: usize = 5760;

/// Opus packets (from RTP) to FLV AAC audio tag bodies.
pub struct OpusToAac {
    dec: OpusDecoder,
    enc: fdk_aac::enc::Encoder,
    asc: Vec<u8>,
    pcm_f: Vec<f32>,
    pending: Vec<i16>,
    out: Vec<u8>,
}

impl OpusToAac {
    pub fn new() -> Result<OpusToAac, String> {
        let dec =
            OpusDecoder::new(RATE as i32, CHANNELS).map_err(|e| format!("opus decoder: {e}"))?;
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
        Ok(OpusToAac {
            dec,
            enc,
            asc,
            pcm_f: vec![0.0; MAX_OPUS_FRAME * CHANNELS],
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

    /// Decodes one Opus packet (an empty one conceals a lost 20 ms frame)
    /// and appends the FLV tag bodies of every AAC frame now complete.
    pub fn push(&mut self, opus: &[u8], out: &mut Vec<Vec<u8>>) {
        let n = match self.dec.decode(opus, MAX_OPUS_FRAME, &mut self.pcm_f) {
            Ok(n) => n,
            Err(e) => {
                warn!("undecodable Opus packet dropped: {e}");
                return;
            }
        };
        self.pending.extend(
            self.pcm_f[..n * CHANNELS]
                .iter()
                .map(|s| (s.clamp(-1.0, 1.0) * 32767.0) as i16),
        );
        let frame = AAC_FRAME * CHANNELS;
        while self.pending.len() >= frame {
            match self.enc.encode(&self.pending[..frame], &mut self.out) {
                Ok(info) => {
                    let used = info.input_consumed.clamp(1, frame);
                    self.pending.drain(..used);
                    if info.output_size > 0 {
                        let mut tag = vec![0xaf, 1];
                        tag.extend_from_slice(&self.out[..info.output_size]);
                        out.push(tag);
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

/// FLV AAC audio tag bodies to 20 ms Opus packets.
pub struct AacToOpus {
    dec: fdk_aac::dec::Decoder,
    enc: OpusEncoder,
    configured: bool,
    pcm_i: Vec<i16>,
    pending: Vec<f32>,
    out: Vec<u8>,
}

impl AacToOpus {
    pub fn new() -> Result<AacToOpus, String> {
        let mut enc = OpusEncoder::new(RATE as i32, CHANNELS, Application::Audio)
            .map_err(|e| format!("opus encoder: {e}"))?;
        enc.bitrate_bps = 64_000;
        Ok(AacToOpus {
            dec: fdk_aac::dec::Decoder::new(fdk_aac::dec::Transport::Raw),
            enc,
            configured: false,
            pcm_i: vec![0; 8 * AAC_FRAME * CHANNELS],
            pending: Vec::with_capacity(OPUS_FRAME * CHANNELS * 4),
            out: vec![0; 1500],
        })
    }

    /// One FLV audio tag body; appends the Opus packets now complete, and
    /// returns the decoded frame's level (RFC 6464 -dBov, for the room's
    /// active speaker). AAC at sample rates other than 48 kHz is not
    /// bridged (no resampler).
    pub fn push(&mut self, body: &[u8], out: &mut Vec<Vec<u8>>) -> Option<u8> {
        if body.len() < 2 || body[0] >> 4 != 10 {
            return None; // not AAC
        }
        if body[1] == 0 {
            self.configured = self.dec.config_raw(&body[2..]).is_ok();
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
        if info.sampleRate != RATE as i32 || info.numChannels as usize != CHANNELS {
            return None;
        }
        let n = self.dec.decoded_frame_size().min(self.pcm_i.len());
        let level = audio_level(&self.pcm_i[..n]);
        self.pending
            .extend(self.pcm_i[..n].iter().map(|&s| s as f32 / 32768.0));
        let frame = OPUS_FRAME * CHANNELS;
        while self.pending.len() >= frame {
            if let Ok(len) = self
                .enc
                .encode(&self.pending[..frame], OPUS_FRAME, &mut self.out)
            {
                out.push(self.out[..len].to_vec());
            }
            self.pending.drain(..frame);
        }
        Some(level)
    }
}

/// The level of PCM samples as RFC 6464 has it: the RMS against full
/// scale in -dBov, 0 (loudest) to 127 (silence or quieter).
pub fn audio_level(pcm: &[i16]) -> u8 {
    if pcm.is_empty() {
        return 127;
    }
    let sum: f64 = pcm.iter().map(|&s| (s as f64 / 32768.0).powi(2)).sum();
    let rms = (sum / pcm.len() as f64).sqrt();
    if rms <= 0.0 {
        return 127;
    }
    (-20.0 * rms.log10()).round().clamp(0.0, 127.0) as u8
}

/// Work for the transcoder thread, per participant stream (its [`crate::participants::Pid`]).
pub enum Job {
    /// An Opus RTP payload (of RTP time `rtp_ts`) of the stream's WebRTC
    /// publisher, for RTMP players.
    OpusToAac {
        stream: u32,
        rtp_ts: u32,
        opus: Vec<u8>,
    },
    /// An FLV audio tag of the stream's RTMP publisher, for WebRTC players.
    AacToOpus { stream: u32, ms: u32, flv: Vec<u8> },
    /// The stream's publisher changed or left: start afresh.
    Reset { stream: u32 },
}

pub enum Done {
    /// FLV audio tag bodies (the first one a sequence header) made from
    /// Opus of RTP time `rtp_ts`.
    Aac {
        stream: u32,
        rtp_ts: u32,
        tags: Vec<Vec<u8>>,
    },
    /// Opus packets, 20 ms each, the first at `ms`, and the level of the
    /// AAC they came from.
    Opus {
        stream: u32,
        ms: u32,
        packets: Vec<Vec<u8>>,
        level: Option<u8>,
    },
}

pub struct TranscodeLink {
    to: SyncSender<Job>,
    pub from: Receiver<Done>,
}

impl TranscodeLink {
    /// Queues `job` without waiting; false if the queue is full (the
    /// transcoder is behind: the caller counts the drop) or the thread is gone.
    pub fn send(&self, job: Job) -> bool {
        self.to.try_send(job).is_ok()
    }
}

/// Starts shard `index`'s transcoder thread with room for `queue` jobs; it
/// ends when the link drops.
pub fn spawn(index: u32, queue: usize) -> std::io::Result<TranscodeLink> {
    let (to, inbox) = mpsc::sync_channel::<Job>(queue);
    let (outbox, from) = mpsc::channel::<Done>();
    std::thread::Builder::new()
        .name(format!("transcode-{index}"))
        .spawn(move || {
            let mut to_aac: std::collections::HashMap<u32, (OpusToAac, bool)> = Default::default();
            let mut to_opus: std::collections::HashMap<u32, AacToOpus> = Default::default();
            while let Ok(job) = inbox.recv() {
                let stream = job.stream();
                // A codec bug costs the stream its transcoder state, not the
                // thread (and with it every stream's audio on the shard).
                let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_job(job, &mut to_aac, &mut to_opus)
                }));
                let done = match done {
                    Ok(Some(done)) => done,
                    Ok(None) => continue,
                    Err(_) => {
                        warn!(
                            stream,
                            "transcoder panicked; the stream's audio starts afresh"
                        );
                        to_aac.remove(&stream);
                        to_opus.remove(&stream);
                        continue;
                    }
                };
                if outbox.send(done).is_err() {
                    return;
                }
            }
        })?;
    Ok(TranscodeLink { to, from })
}

impl Job {
    fn stream(&self) -> u32 {
        match self {
            Job::OpusToAac { stream, .. }
            | Job::AacToOpus { stream, .. }
            | Job::Reset { stream } => *stream,
        }
    }
}

/// Runs one job on the stream's codec state (made on first use); `None` when
/// there is nothing to send back.
fn run_job(
    job: Job,
    to_aac: &mut std::collections::HashMap<u32, (OpusToAac, bool)>,
    to_opus: &mut std::collections::HashMap<u32, AacToOpus>,
) -> Option<Done> {
    let done = match job {
        Job::Reset { stream } => {
            to_aac.remove(&stream);
            to_opus.remove(&stream);
            return None;
        }
        Job::OpusToAac {
            stream,
            rtp_ts,
            opus,
        } => {
            let entry = match to_aac.entry(stream) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => match OpusToAac::new() {
                    Ok(t) => v.insert((t, false)),
                    Err(e) => {
                        warn!(stream, "no Opus → AAC transcoder: {e}");
                        return None;
                    }
                },
            };
            let (t, sent_config) = entry;
            let mut tags = Vec::new();
            if !*sent_config {
                *sent_config = true;
                tags.push(t.config_tag());
            }
            t.push(&opus, &mut tags);
            Done::Aac {
                stream,
                rtp_ts,
                tags,
            }
        }
        Job::AacToOpus { stream, ms, flv } => {
            let t = match to_opus.entry(stream) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(v) => match AacToOpus::new() {
                    Ok(t) => v.insert(t),
                    Err(e) => {
                        warn!(stream, "no AAC → Opus transcoder: {e}");
                        return None;
                    }
                },
            };
            let mut packets = Vec::new();
            let level = t.push(&flv, &mut packets);
            Done::Opus {
                stream,
                ms,
                packets,
                level,
            }
        }
    };
    Some(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine_opus(frames: usize) -> Vec<Vec<u8>> {
        let mut enc = OpusEncoder::new(48_000, 2, Application::Audio).unwrap();
        let mut out = vec![0u8; 1500];
        (0..frames)
            .map(|f| {
                let pcm: Vec<f32> = (0..OPUS_FRAME * 2)
                    .map(|i| {
                        let t = (f * OPUS_FRAME + i / 2) as f32 / 48_000.0;
                        (t * 440.0 * std::f32::consts::TAU).sin() * 0.5
                    })
                    .collect();
                let n = enc.encode(&pcm, OPUS_FRAME, &mut out).unwrap();
                out[..n].to_vec()
            })
            .collect()
    }

    /// Opus → AAC → Opus: frame counts follow the sample counts, and the
    /// AAC decodes (checked by the return trip).
    #[test]
    fn opus_to_aac_and_back() {
        let mut a = OpusToAac::new().unwrap();
        let config = a.config_tag();
        assert_eq!(&config[..2], &[0xaf, 0]);
        assert!(config.len() >= 4, "AudioSpecificConfig present");
        let mut aac = Vec::new();
        for p in sine_opus(50) {
            a.push(&p, &mut aac);
        }
        // 50 x 960 samples = 46.9 AAC frames, minus the encoder's delay.
        assert!((40..=47).contains(&aac.len()), "{} AAC frames", aac.len());
        assert!(aac.iter().all(|t| t[0] == 0xaf && t[1] == 1));

        let mut b = AacToOpus::new().unwrap();
        let mut opus = Vec::new();
        assert_eq!(b.push(&config, &mut opus), None, "a config has no level");
        let mut levels = Vec::new();
        for t in &aac {
            levels.extend(b.push(t, &mut opus));
        }
        // A sine at half scale: RMS 0.354, 9 dB under full scale.
        let loud = levels[5..]
            .iter()
            .filter(|&&l| (8..=10).contains(&l))
            .count();
        assert!(loud * 10 >= (levels.len() - 5) * 9, "{levels:?}");
        assert!(
            (35..=50).contains(&opus.len()),
            "{} Opus frames",
            opus.len()
        );
        let mut dec = OpusDecoder::new(48_000, 2).unwrap();
        let mut pcm = vec![0f32; MAX_OPUS_FRAME * 2];
        let energy: f32 = opus
            .iter()
            .skip(5)
            .map(|p| {
                let n = dec.decode(p, MAX_OPUS_FRAME, &mut pcm).unwrap();
                pcm[..n * 2].iter().map(|s| s * s).sum::<f32>() / (n * 2) as f32
            })
            .sum::<f32>()
            / (opus.len() - 5) as f32;
        assert!(
            energy > 0.01,
            "the tone survives two transcodes: energy {energy}"
        );
    }

    /// RFC 6464 levels of PCM: -dBov of the RMS, 127 for silence.
    #[test]
    fn audio_levels_of_pcm() {
        assert_eq!(audio_level(&[]), 127);
        assert_eq!(audio_level(&[0; 960]), 127);
        assert_eq!(audio_level(&[i16::MIN; 960]), 0, "full-scale square");
        let sine = |amp: f64| -> Vec<i16> {
            (0..960)
                .map(|i| ((i as f64 * 0.0576).sin() * amp * 32767.0) as i16)
                .collect()
        };
        assert_eq!(audio_level(&sine(1.0)), 3, "full-scale sine");
        assert_eq!(audio_level(&sine(0.001)), 63, "60 dB under it");
    }

    #[test]
    fn junk_is_dropped_not_panicked_on() {
        let mut a = OpusToAac::new().unwrap();
        let mut b = AacToOpus::new().unwrap();
        let mut out = Vec::new();
        for seed in 0..200u32 {
            let junk: Vec<u8> = (0..(seed % 90))
                .map(|i| (i * 31 + seed * 7) as u8)
                .collect();
            a.push(&junk, &mut out);
            let mut flv = vec![0xaf, (seed % 2) as u8];
            flv.extend_from_slice(&junk);
            b.push(&flv, &mut out);
        }
    }
}
