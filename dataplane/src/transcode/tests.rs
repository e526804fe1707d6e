//! The transcoder's codecs and thread driven with real Opus and AAC frames.

use super::*;

const P1: ParticipantId = ParticipantId::new(1);
const P2: ParticipantId = ParticipantId::new(2);

fn sine_opus(frames: usize) -> Vec<Vec<u8>> {
    sine_opus_hz(frames, 440.0)
}

fn sine_opus_hz(frames: usize, hz: f32) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new(48_000, 2, Application::Audio).unwrap();
    let mut out = vec![0u8; 1500];
    (0..frames)
        .map(|f| {
            let pcm: Vec<f32> = (0..OPUS_FRAME * 2)
                .map(|i| {
                    let t = (f * OPUS_FRAME + i / 2) as f32 / 48_000.0;
                    (t * hz * std::f32::consts::TAU).sin() * 0.5
                })
                .collect();
            let n = enc.encode(&pcm, OPUS_FRAME, &mut out).unwrap();
            out[..n].to_vec()
        })
        .collect()
}

fn opus_job(stream: u32, opus: Vec<u8>, uses: OpusUses) -> Job {
    Job::Opus {
        stream: ParticipantId::new(stream),
        rtp_ts: 0,
        opus,
        uses,
    }
}

fn aac_job(stream: u32, flv: Vec<u8>, mixes: Vec<u64>) -> Job {
    Job::Aac {
        stream: ParticipantId::new(stream),
        ms: 0,
        flv,
        mixes,
    }
}

/// Opus → AAC → Opus through the thread's jobs: frame counts follow the
/// sample counts, and the AAC decodes (checked by the return trip).
#[test]
fn opus_to_aac_and_back() {
    let mut t = Transcoder::default();
    let now = Instant::now();
    let mut done = Vec::new();
    let bridge = OpusUses {
        bridge: true,
        ..Default::default()
    };
    for p in sine_opus(50) {
        t.run(opus_job(1, p, bridge.clone()), now, &mut done);
    }
    let mut aac: Vec<Vec<u8>> = done
        .drain(..)
        .flat_map(|d| match d {
            Done::Aac {
                stream: P1, tags, ..
            } => tags,
            _ => panic!("only AAC of stream 1"),
        })
        .collect();
    let config = aac.remove(0);
    assert_eq!(&config[..2], &[0xaf, 0]);
    assert!(config.len() >= 4, "AudioSpecificConfig present");
    // 50 x 960 samples = 46.9 AAC frames, minus the encoder's delay.
    assert!((40..=47).contains(&aac.len()), "{} AAC frames", aac.len());
    assert!(aac.iter().all(|t| t[0] == 0xaf && t[1] == 1));

    t.run(aac_job(2, config, vec![]), now, &mut done);
    assert!(done.is_empty(), "a sequence header makes nothing");
    for tag in &aac {
        t.run(aac_job(2, tag.clone(), vec![]), now, &mut done);
    }
    let mut levels = Vec::new();
    let mut opus = Vec::new();
    for d in done.drain(..) {
        let Done::Opus {
            stream: P2,
            packets,
            level,
            ..
        } = d
        else {
            panic!("only Opus of stream 2");
        };
        levels.extend(level);
        opus.extend(packets);
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
    assert_eq!(audio_level(&[0.0; 960]), 127);
    assert_eq!(audio_level(&[-1.0; 960]), 0, "full-scale square");
    let sine =
        |amp: f32| -> Vec<f32> { (0..960).map(|i| (i as f32 * 0.0576).sin() * amp).collect() };
    assert_eq!(audio_level(&sine(1.0)), 3, "full-scale sine");
    assert_eq!(audio_level(&sine(0.001)), 63, "60 dB under it");
}

#[test]
fn junk_is_dropped_not_panicked_on() {
    let mut t = Transcoder::default();
    let now = Instant::now();
    let mut done = Vec::new();
    let all = OpusUses {
        bridge: true,
        level: true,
        mixes: vec![9],
    };
    for seed in 0..200u32 {
        let junk: Vec<u8> = (0..(seed % 90))
            .map(|i| (i * 31 + seed * 7) as u8)
            .collect();
        t.run(opus_job(1, junk.clone(), all.clone()), now, &mut done);
        let mut flv = vec![0xaf, (seed % 2) as u8];
        flv.extend_from_slice(&junk);
        t.run(aac_job(2, flv, vec![9]), now, &mut done);
    }
}

/// Two participants' tones into two programs' mixes, each without its
/// own participant: a program hears the others, not its `me`. Decoded
/// back and measured by the energy at each tone's frequency.
#[test]
fn each_mix_leaves_its_own_participant_out() {
    let mut t = Transcoder::default();
    let now = Instant::now();
    let mut done = Vec::new();
    // Program 10 is played by participant 1 (hears 2), 20 by 2 (hears 1),
    // 30 by nobody who publishes (hears both).
    for (a, b) in sine_opus_hz(100, 440.0)
        .into_iter()
        .zip(sine_opus_hz(100, 880.0))
    {
        let mixes = |m: [u64; 2]| OpusUses {
            mixes: m.to_vec(),
            ..Default::default()
        };
        t.run(opus_job(1, a, mixes([20, 30])), now, &mut done);
        t.run(opus_job(2, b, mixes([10, 30])), now, &mut done);
    }
    assert_eq!(t.mix_count(), 3);
    let pcm_of = |program: u64| -> Vec<f32> {
        let mut dec = AacIn::new();
        let mut pcm = Vec::new();
        for d in &done {
            if let Done::Mix { program: p, tags } = d {
                if *p == program {
                    for tag in tags {
                        pcm.extend_from_slice(dec.push(tag).unwrap_or(&[]));
                    }
                }
            }
        }
        pcm
    };
    for (program, hears, not) in [(10, 880.0, 440.0), (20, 440.0, 880.0)] {
        let pcm = pcm_of(program);
        assert!(pcm.len() >= 48_000, "{} samples", pcm.len());
        let (yes, no) = (tone_energy(&pcm, hears), tone_energy(&pcm, not));
        assert!(yes > 100.0 * no, "program {program}: {yes} vs {no}");
    }
    let both = pcm_of(30);
    let (a, b) = (tone_energy(&both, 440.0), tone_energy(&both, 880.0));
    assert!(
        a > 0.01 && b > 0.01 && a / b < 4.0 && b / a < 4.0,
        "{a} {b}"
    );
    // A program that ends takes its mix with it; a participant that
    // resets leaves every mix.
    t.run(Job::MixEnd { program: 30 }, now, &mut done);
    assert_eq!(t.mix_count(), 2);
    t.run(Job::Reset { stream: P1 }, now, &mut done);
    assert!(t.mixes.values().all(|m| m.mixer.len() <= 1));
    // Nobody feeds them: swept after MIX_IDLE.
    t.run(Job::Reset { stream: P2 }, now + MIX_IDLE, &mut done);
    assert_eq!(t.mix_count(), 0);
}

/// FLV tags of a `hz` tone encoded as AAC-LC at `rate`, `channels`:
/// the sequence header, then `frames` frames.
fn aac_tone(rate: u32, channels: u32, hz: f32, frames: usize) -> Vec<Vec<u8>> {
    let mode = if channels == 1 {
        ChannelMode::Mono
    } else {
        ChannelMode::Stereo
    };
    let enc = fdk_aac::enc::Encoder::new(EncoderParams {
        bit_rate: BitRate::Cbr(64_000),
        sample_rate: rate,
        transport: Transport::Raw,
        channels: mode,
        audio_object_type: AudioObjectType::Mpeg4LowComplexity,
    })
    .unwrap();
    let info = enc.info().unwrap();
    let mut tags = vec![[&[0xaf, 0][..], &info.confBuf[..info.confSize as usize]].concat()];
    let mut out = vec![0u8; 8192];
    let mut t = 0usize;
    while tags.len() <= frames {
        let pcm: Vec<i16> = (0..AAC_FRAME)
            .flat_map(|i| {
                let x = ((t + i) as f32 * hz * std::f32::consts::TAU / rate as f32).sin();
                std::iter::repeat_n((x * 12_000.0) as i16, channels as usize)
            })
            .collect();
        t += AAC_FRAME;
        let done = enc.encode(&pcm, &mut out).unwrap();
        if done.output_size > 0 {
            tags.push([&[0xaf, 1][..], &out[..done.output_size]].concat());
        }
    }
    tags
}

/// A lost Opus packet (an empty job) is concealed as 20 ms of audio, so
/// the AAC that comes out keeps the publisher's time: as many frames
/// as without the loss.
#[test]
fn lost_opus_is_concealed_for_its_20_ms() {
    let count = |lose: bool| {
        let mut t = Transcoder::default();
        let mut done = Vec::new();
        let bridge = OpusUses {
            bridge: true,
            ..Default::default()
        };
        for (i, p) in sine_opus(100).into_iter().enumerate() {
            let p = if lose && i % 10 == 5 { Vec::new() } else { p };
            t.run(opus_job(1, p, bridge.clone()), Instant::now(), &mut done);
        }
        done.iter()
            .map(|d| match d {
                Done::Aac { tags, .. } => tags.len(),
                _ => 0,
            })
            .sum::<usize>()
    };
    let (whole, concealed) = (count(false), count(true));
    assert!(whole >= 90, "{whole}");
    assert_eq!(whole, concealed, "10 of 100 packets concealed");
}

/// AAC at 44.1 kHz mono and at 16 kHz stereo reaches the WebRTC side
/// as 48 kHz Opus with the tone where it was: resampled, not played
/// fast (a 1 kHz tone read at 48 kHz without resampling lands at
/// 1088 Hz, or 3 kHz).
#[test]
fn aac_at_any_rate_is_resampled_to_48_khz() {
    for (rate, channels, wrong) in [(44_100, 1, 1_088.0), (16_000, 2, 3_000.0)] {
        let mut t = Transcoder::default();
        let now = Instant::now();
        let mut done = Vec::new();
        for tag in aac_tone(rate, channels, 1_000.0, 150) {
            t.run(aac_job(1, tag, vec![]), now, &mut done);
        }
        let mut dec = OpusDecoder::new(48_000, 2).unwrap();
        let mut pcm = Vec::new();
        let mut buf = vec![0f32; MAX_OPUS_FRAME * 2];
        for d in done {
            if let Done::Opus { packets, .. } = d {
                for p in packets {
                    let n = dec.decode(&p, MAX_OPUS_FRAME, &mut buf).unwrap();
                    pcm.extend_from_slice(&buf[..n * 2]);
                }
            }
        }
        // 150 frames of 1024 at `rate`, as 48 kHz stereo.
        let want = 150.0 * 1024.0 * 48_000.0 / rate as f64 * 2.0;
        let got = pcm.len() as f64;
        assert!(
            got > want * 0.9 && got < want * 1.02,
            "{rate}: {got} of {want}"
        );
        let (right, wrong) = (tone_energy(&pcm, 1_000.0), tone_energy(&pcm, wrong));
        assert!(right > 100.0 * wrong, "{rate} Hz: {right} vs {wrong}");
        let (l, r): (Vec<f32>, Vec<f32>) = pcm.chunks(2).map(|c| (c[0], c[1])).unzip();
        let diff: f32 = l.iter().zip(&r).map(|(a, b)| (a - b).abs()).sum::<f32>() / l.len() as f32;
        assert!(diff < 0.01, "both channels carry the tone: {diff}");
    }
}

/// Energy of the left channel at `hz` (a Goertzel filter over the
/// samples after the first 0.2 s), normalised per sample.
fn tone_energy(pcm: &[f32], hz: f32) -> f32 {
    let left: Vec<f32> = pcm.iter().step_by(2).skip(9_600).copied().collect();
    let w = std::f32::consts::TAU * hz / 48_000.0;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for x in &left {
        let s0 = x + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / left.len() as f32
}
