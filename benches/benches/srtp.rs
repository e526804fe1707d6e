//! SRTP cost per forwarded packet: protect on one context, unprotect on its
//! peer, in place, for a 1200-byte video packet.
//!
//! Baseline in the same run: what a plain-RTP relay does with the packet
//! (copy it and rewrite the sequence number), so results read as ratios.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dataplane::srtp::{SrtpContext, MAX_TRAILER};
use gateway_ring::msg::{SrtpKey, SrtpSuite};

const PAYLOAD: usize = 1188; // + 12-byte header = 1200 bytes on the wire before the tag

fn packet(seq: u16, buf: &mut [u8]) -> usize {
    buf[..12].copy_from_slice(&[0x80, 96, 0, 0, 0, 0, 0x10, 0, 0xca, 0xfe, 0xba, 0xbe]);
    buf[2..4].copy_from_slice(&seq.to_be_bytes());
    buf[12..12 + PAYLOAD].fill(0x5a);
    12 + PAYLOAD
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp_1200B");
    g.throughput(Throughput::Bytes((12 + PAYLOAD) as u64));

    let src = {
        let mut b = vec![0u8; 12 + PAYLOAD + MAX_TRAILER];
        packet(0, &mut b);
        b
    };
    g.bench_function("baseline_copy_and_rewrite_seq", |b| {
        let mut out = vec![0u8; src.len()];
        let mut seq = 0u16;
        b.iter(|| {
            out.copy_from_slice(black_box(&src));
            seq = seq.wrapping_add(1);
            out[2..4].copy_from_slice(&seq.to_be_bytes());
            black_box(&out);
        })
    });

    for (name, suite, len) in [
        (
            "aes_cm_128_hmac_sha1_80",
            SrtpSuite::AesCm128HmacSha1_80,
            30,
        ),
        ("aead_aes_128_gcm", SrtpSuite::AeadAes128Gcm, 28),
        // What dimpl negotiates with Chromium and aiortc.
        ("aead_aes_256_gcm", SrtpSuite::AeadAes256Gcm, 44),
    ] {
        let key = SrtpKey::new(suite, &[0x42; 44][..len]).expect("length matches the suite");
        g.bench_function(format!("{name}_protect_then_unprotect"), |b| {
            let mut tx = SrtpContext::new(&key);
            let mut rx = SrtpContext::new(&key);
            let mut buf = vec![0u8; 12 + PAYLOAD + MAX_TRAILER];
            let mut seq = 0u16;
            b.iter(|| {
                seq = seq.wrapping_add(1);
                let n = packet(seq, &mut buf);
                let n = tx.protect_rtp(&mut buf, n).expect("room for the tag");
                let m = rx
                    .unprotect_rtp(&mut buf[..n])
                    .expect("fresh sequence number");
                black_box(m);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
