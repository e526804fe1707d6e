//! The transcoder thread's cost for a room's audio, per 20 ms of it, so
//! `time / 20 ms` is the share of a core it takes. Beside its baseline in
//! the same run:
//!
//! - `baseline_bridge_one`: one WebRTC participant's Opus bridged to AAC
//!   for its RTMP players (decode + encode), what the bridge cost before
//!   programs existed;
//! - `mixed_room_of_4`: four WebRTC participants and four program players,
//!   one per participant (`live/ROOM?participant=ME`): four decodes, and
//!   four mixes of the three others, each encoded to AAC;
//! - `mixed_room_of_4_and_anonymous`: the same plus the anonymous
//!   players' program (a fifth mix, of all four).

use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dataplane::participants::ParticipantId;
use dataplane::transcode::{Done, Job, OpusUses, Transcoder, OPUS_FRAME};
use opus_rs::{Application, OpusEncoder};

/// One second of 20 ms Opus packets of a tone, per participant.
fn packets(hz: f32) -> Vec<Vec<u8>> {
    let mut enc = OpusEncoder::new(48_000, 2, Application::Audio).expect("encoder");
    let mut out = vec![0u8; 1500];
    (0..50)
        .map(|f| {
            let pcm: Vec<f32> = (0..OPUS_FRAME * 2)
                .map(|i| {
                    let t = (f * OPUS_FRAME + i / 2) as f32 / 48_000.0;
                    (t * hz * std::f32::consts::TAU).sin() * 0.3
                })
                .collect();
            let n = enc.encode(&pcm, OPUS_FRAME, &mut out).expect("encode");
            out[..n].to_vec()
        })
        .collect()
}

/// Each participant (1..=n) sends one 20 ms packet; `programs` lists, per
/// program, who it leaves out (0: nobody).
fn room(c: &mut Criterion, name: &str, n: u32, programs: &[u32], bridge: bool) {
    let tones: Vec<Vec<Vec<u8>>> = (1..=n).map(|p| packets(200.0 * p as f32)).collect();
    let mut t = Transcoder::default();
    let mut done = Vec::new();
    let mut i = 0usize;
    let now = Instant::now();
    let mut step = |t: &mut Transcoder, done: &mut Vec<Done>| {
        for p in 1..=n {
            let mixes = programs
                .iter()
                .enumerate()
                .filter(|(_, &me)| me != p)
                .map(|(k, _)| k as u64 + 1)
                .collect();
            let uses = OpusUses {
                bridge,
                level: false,
                mixes,
            };
            let opus = tones[p as usize - 1][i % 50].clone();
            t.run(
                Job::Opus {
                    stream: ParticipantId::new(p),
                    rtp_ts: 0,
                    opus,
                    uses,
                },
                now,
                done,
            );
        }
        i += 1;
        done.clear();
    };
    // Warm up past the mixes' and encoders' first frames.
    for _ in 0..100 {
        step(&mut t, &mut done);
    }
    c.bench_function(name, |b| {
        b.iter(|| {
            step(&mut t, &mut done);
            black_box(&done);
        })
    });
}

fn audio(c: &mut Criterion) {
    room(c, "room_audio_per_20ms/baseline_bridge_one", 1, &[], true);
    room(
        c,
        "room_audio_per_20ms/mixed_room_of_4",
        4,
        &[1, 2, 3, 4],
        false,
    );
    room(
        c,
        "room_audio_per_20ms/mixed_room_of_4_and_anonymous",
        4,
        &[1, 2, 3, 4, 0],
        false,
    );
}

criterion_group!(benches, audio);
criterion_main!(benches);
