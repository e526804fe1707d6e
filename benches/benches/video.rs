//! The re-encode thread's cost per frame, so `time × 30` is the share of a
//! core a 30 fps publisher takes: an RTMP publisher with B-frames
//! re-encoded for browsers (`bframes_per_frame`), and a browser's VP8, VP9
//! or AV1 transcoded to H264 for RTMP players (`transcode_per_frame`).
//! Beside their baseline in the same run:
//!
//! - `baseline_repacketize_{size}`: the same frames through the RTP
//!   packetizer, what a publisher without B-frames costs the shard;
//! - `reencode_{size}`: decode (libavcodec) and encode without B-frames
//!   (libx264 zerolatency, Constrained Baseline), then the packetizer.
//!
//! - `transcode_{codec}_{size}`: decode (libavcodec's VP8 or VP9 decoder,
//!   libdav1d) and encode to H264 FLV tags (libx264 as above), which the
//!   RTMP side then carries as an H264 publisher's.
//!
//! The sources are the ffmpeg tool's x264 (`-bf 2`, preset veryfast, OBS's),
//! libvpx, libvpx-vp9 (real-time) and SVT-AV1 at 1 Mbit/s of a moving test
//! picture under noise, 2 s at 30 fps, looped with their times moved on.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use dataplane::codec::h264::Packetizer;
use dataplane::codec::{RtpWriter, VideoCodec};
use dataplane::reencode::{ffmpeg_coded_frames, x264_bframes_flv, Input, Reencoder};

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
        let mut pk = Packetizer::new(RtpWriter::new(1, 96));
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
    let mut g = c.benchmark_group("transcode_per_frame");
    for size in ["640x360", "1280x720"] {
        let lavfi = format!("testsrc2=size={size}:rate=30,noise=alls=12:allf=t");
        for codec in [VideoCodec::Vp8, VideoCodec::Vp9, VideoCodec::Av1] {
            let frames = ffmpeg_coded_frames(codec, &lavfi, 60, 60);
            assert!(frames[0].0, "{codec:?}: a keyframe first");
            let mut r = Reencoder::new(Input::Coded(codec)).expect("transcoder");
            let mut out = Vec::new();
            let mut i = 0u32;
            let name = format!("transcode_{}_{size}", codec.name().to_lowercase());
            g.bench_function(name, |b| {
                b.iter(|| {
                    // Looped from its keyframe, numbered and timed on.
                    let (key, frame) = &frames[i as usize % frames.len()];
                    out.clear();
                    r.push_coded(i, i * 33, *key, frame, &mut out);
                    i += 1;
                    black_box(&out);
                })
            });
            assert!(r.refused.is_none(), "{:?}", r.refused);
        }
    }
    g.finish();
}

criterion_group!(benches, video);
criterion_main!(benches);
