//! The re-encode thread's cost for an RTMP publisher with B-frames, per
//! frame, so `time × 30` is the share of a core a 30 fps publisher takes.
//! Beside its baseline in the same run:
//!
//! - `baseline_repacketize_{size}`: the same frames through the RTP
//!   packetizer, what a publisher without B-frames costs the shard;
//! - `reencode_{size}`: decode (libavcodec) and encode without B-frames
//!   (libx264 zerolatency, Constrained Baseline), then the packetizer.
//!
//! The source is ffmpeg's x264 (`-bf 2`, preset veryfast, OBS's) of a moving
//! test picture under noise, 2 s at 30 fps, looped with its times moved on.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dataplane::codec::h264::Packetizer;
use dataplane::reencode::{x264_bframes_flv, Input, Reencoder};

fn video(c: &mut Criterion) {
    let mut g = c.benchmark_group("bframes_per_frame");
    for size in ["640x360", "1280x720"] {
        let lavfi = format!("testsrc2=size={size}:rate=30,noise=alls=12:allf=t");
        let tags = x264_bframes_flv(&lavfi, 60, 60);
        let config = tags
            .iter()
            .find(|(_, b)| b[1] == 0)
            .expect("a sequence header");
        let tags: Vec<&(u32, Vec<u8>)> = tags.iter().filter(|(_, b)| b[1] == 1).collect();
        let mut pk = Packetizer::new(1, 96);
        let mut packets = Vec::new();
        pk.push(&config.1, 0, &mut packets);
        let mut i = 0;
        g.bench_function(format!("baseline_repacketize_{size}"), |b| {
            b.iter(|| {
                let (ms, body) = &tags[i % tags.len()];
                i += 1;
                packets.clear();
                black_box(pk.push(body, ms * 90, &mut packets));
            })
        });
        let mut r = Reencoder::new(Input::FlvH264).expect("re-encoder");
        let mut out = Vec::new();
        r.push(config.0, &config.1, &mut out);
        let mut i = 0;
        let span = tags.last().map_or(0, |t| t.0) + 34;
        g.bench_function(format!("reencode_{size}"), |b| {
            b.iter(|| {
                let (ms, body) = &tags[i % tags.len()];
                // Looped: times move on, so the encoder sees one stream.
                let ms = ms + span * (i / tags.len()) as u32;
                i += 1;
                out.clear();
                r.push(ms, body, &mut out);
                for (pts, tag) in &out {
                    packets.clear();
                    black_box(pk.push(tag, pts * 90, &mut packets));
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, video);
criterion_main!(benches);
