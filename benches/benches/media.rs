//! Per-packet and per-frame costs of the media paths, each beside a
//! baseline measured in the same run (a copy of the same bytes), so the
//! figures read as ratios:
//!
//! - `fanout_per_subscriber`: what the shard does for each subscriber of a
//!   forwarded packet (copy into a send slot, header rewrite, SRTP protect)
//!   through the real `Router`, against a plain-RTP egress (copy + rewrite);
//! - `stun`: ICE-lite answering a Binding request (parse, USERNAME,
//!   MESSAGE-INTEGRITY, FINGERPRINT, response with both);
//! - `h264`: a 1 Mbit/s-sized frame (4.2 kB) and a keyframe (30 kB)
//!   through AVCC → RTP (`Packetizer`), and the round trip AVCC → RTP → FLV
//!   tag (`Depacketizer`; its cost minus the first is depacketizing);
//! - `rtmp_chunk_writer`: a frame as RTMP chunks (4096 and 128-byte chunks).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dataplane::codec::h264::{Depacketizer, Packetizer};
use dataplane::codec::{Out, RtpWriter};
use dataplane::ice::lite::IceLite;
use dataplane::ice::stun::{self, attr, Writer};
use dataplane::router::Router;
use dataplane::rtmp::chunk::write_message;
use dataplane::srtp::MAX_TRAILER;
use gateway_ring::msg::{EgressSpec, IngestSpec, MediaKind, RoomSpec, SrtpKey, SrtpSuite};
use gateway_ring::{RoomId, SessionId};

const SUBSCRIBERS: u32 = 100;

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout_per_subscriber");
    g.throughput(Throughput::Elements(SUBSCRIBERS as u64));
    let key = SrtpKey::new(SrtpSuite::AeadAes128Gcm, &[7; 28]).expect("key");
    for (name, srtp) in [
        ("baseline_plain_rtp_egress", None),
        ("srtp_aes_128_gcm_egress", Some(key)),
    ] {
        let mut r = Router::default();
        let room = RoomId::new(1);
        r.add_room(
            RoomSpec {
                room,
                name: "bench".into(),
            },
            None,
        );
        let ingest = r
            .add_ingest(IngestSpec {
                session: SessionId::new(1),
                room,
                port: 1,
                kind: MediaKind::Video,
                payload_type: 96,
                clock_rate: 90_000,
                srtp: None,
                created_ms: 0,
                participant: "cam".into(),
            })
            .expect("ingest");
        for k in 0..SUBSCRIBERS {
            r.add_egress(EgressSpec {
                session: SessionId::new(100 + k as u64),
                room,
                port: 2,
                dest_ip: [127, 0, 0, 1],
                dest_port: 10_000 + 2 * k as u16,
                srtp,
                created_ms: 0,
            })
            .expect("egress");
        }
        let src = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000);
        let mut pkt = vec![0u8; 1200];
        let mut slot = vec![0u8; 1200 + MAX_TRAILER];
        let egresses: Vec<_> = r.egresses(room).to_vec();
        let mut seq = 0u16;
        g.bench_function(name, |b| {
            b.iter(|| {
                seq = seq.wrapping_add(1);
                pkt[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
                pkt[2..4].copy_from_slice(&seq.to_be_bytes());
                let now = Instant::now();
                let inbound = r
                    .handle_datagram(now, ingest, src, &mut pkt)
                    .expect("RTP to fan out");
                for &e in &egresses {
                    slot[..inbound.len].copy_from_slice(&pkt[..inbound.len]);
                    black_box(r.prepare_egress(now, e, &inbound, &mut slot));
                }
            })
        });
    }
    g.finish();
}

fn stun(c: &mut Criterion) {
    let mut g = c.benchmark_group("stun");
    g.throughput(Throughput::Elements(1));
    let mut req = [0u8; 256];
    let n = {
        let mut w = Writer::new(&mut req, stun::BINDING_REQUEST, &[3; 12]).expect("room");
        w.attribute(attr::USERNAME, b"localufrag:remoteufrag")
            .expect("room");
        w.attribute(attr::PRIORITY, &1_853_824_767u32.to_be_bytes())
            .expect("room");
        w.attribute(attr::USE_CANDIDATE, &[]).expect("room");
        w.integrity(b"local-password-of-22-chars").expect("room");
        w.fingerprint().expect("room");
        w.finish()
    };
    let src = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000);
    let mut out = [0u8; 256];
    g.bench_function("baseline_copy_request", |b| {
        b.iter(|| {
            out[..n].copy_from_slice(black_box(&req[..n]));
            black_box(&out);
        })
    });
    let mut ice = IceLite::new(
        "localufrag",
        "local-password-of-22-chars",
        Some("remoteufrag"),
    );
    g.bench_function("binding_request_to_response", |b| {
        b.iter(|| {
            let len = ice
                .handle_stun(Instant::now(), src, black_box(&req[..n]), &mut out)
                .expect("a valid check");
            black_box(len);
        })
    });
    g.finish();
}

/// An FLV AVC NALU tag body holding one NAL of `size` bytes.
fn flv_frame(key: bool, size: usize) -> Vec<u8> {
    let mut b = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
    b.extend_from_slice(&(size as u32).to_be_bytes());
    b.push(if key { 0x65 } else { 0x41 });
    b.extend((1..size).map(|i| (i % 251) as u8 | 1));
    b
}

/// The FLV sequence header for a small SPS/PPS pair.
fn flv_config() -> Vec<u8> {
    let sps = [0x67, 0x42, 0xc0, 0x1e, 0xd9, 0x00, 0xa0, 0x47, 0xfe, 0xc8];
    let pps = [0x68, 0xce, 0x3c, 0x80];
    dataplane::codec::h264::config_tag(&sps, &pps).expect("a valid SPS and PPS")
}

fn h264(c: &mut Criterion) {
    let mut g = c.benchmark_group("h264");
    for (name, key, size) in [("frame_4k", false, 4_200), ("keyframe_30k", true, 30_000)] {
        let body = flv_frame(key, size);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("baseline_copy_{name}"), |b| {
            let mut out = vec![0u8; body.len()];
            b.iter(|| {
                out.copy_from_slice(black_box(&body));
                black_box(&out);
            })
        });
        let mut pk = Packetizer::new(RtpWriter::new(1, 96));
        pk.push(&flv_config(), 0, &mut Vec::new());
        let mut rtp = Vec::new();
        let mut ts = 0u32;
        g.bench_function(format!("avcc_to_rtp_{name}"), |b| {
            b.iter(|| {
                rtp.clear();
                ts = ts.wrapping_add(3000);
                pk.push(black_box(&body), ts, &mut rtp);
                black_box(&rtp);
            })
        });
        // The same frame's packets back into an FLV tag body.
        let mut packets = Vec::new();
        let mut cfg_pk = Packetizer::new(RtpWriter::new(1, 96));
        cfg_pk.push(&flv_config(), 0, &mut Vec::new());
        // A keyframe carries SPS/PPS in front, so the depacketizer emits its config once.
        cfg_pk.push(&flv_frame(true, 1000), 0, &mut packets);
        let warmup = packets.len();
        let mut depack = Depacketizer::new();
        let mut outs = Vec::new();
        for p in packets.drain(..) {
            depack.push(
                u16::from_be_bytes([p[2], p[3]]),
                0,
                p[1] & 0x80 != 0,
                &p[12..],
                &mut outs,
            );
        }
        assert!(warmup > 0 && outs.iter().any(|o| matches!(o, Out::Frame { .. })));
        g.bench_function(format!("avcc_to_rtp_to_flv_{name}"), |b| {
            let mut ts = 0u32;
            b.iter(|| {
                packets.clear();
                ts = ts.wrapping_add(3000);
                cfg_pk.push(&body, ts, &mut packets);
                outs.clear();
                for p in &packets {
                    depack.push(
                        u16::from_be_bytes([p[2], p[3]]),
                        ts,
                        p[1] & 0x80 != 0,
                        &p[12..],
                        &mut outs,
                    );
                }
                debug_assert!(outs.iter().any(|o| matches!(o, Out::Frame { .. })));
                black_box(&outs);
            })
        });
    }
    g.finish();
}

fn rtmp_chunks(c: &mut Criterion) {
    let mut g = c.benchmark_group("rtmp_chunk_writer");
    let body = flv_frame(false, 4_200);
    g.throughput(Throughput::Bytes(body.len() as u64));
    let mut out = Vec::with_capacity(8192);
    g.bench_function("baseline_copy_frame_4k", |b| {
        b.iter(|| {
            out.clear();
            out.extend_from_slice(black_box(&body));
            black_box(&out);
        })
    });
    for chunk in [4096usize, 128] {
        g.bench_function(format!("frame_4k_chunks_of_{chunk}"), |b| {
            b.iter(|| {
                out.clear();
                write_message(&mut out, 6, 1234, 9, 1, black_box(&body), chunk);
                black_box(&out);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, fanout, stun, h264, rtmp_chunks);
criterion_main!(benches);
