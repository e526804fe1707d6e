//! RTP ingests and egresses in the router: rooms, latching, rewrite, drops.

use super::*;
use gateway_ring::msg::MediaKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use gateway_ring::msg::{DropReason, EgressSpec, IngestSpec};

use crate::rtp::RtpHeader;

pub(super) const ROOM: RoomId = crate::fuzz::ROOM;

/// Session id `n` (the tests number their sessions).
pub(super) fn sid(n: u64) -> SessionId {
    SessionId::new(n)
}

pub(super) fn room(r: &mut Router) {
    assert_eq!(
        r.add_room(
            RoomSpec {
                room: ROOM,
                name: "demo".into()
            },
            None
        ),
        Outcome::Ok
    );
}

pub(super) fn ingest(id: u64, kind: MediaKind, pt: u8) -> IngestSpec {
    IngestSpec {
        session: sid(id),
        room: ROOM,
        port: 40000 + id as u16,
        kind,
        payload_type: pt,
        clock_rate: 90_000,
        srtp: None,
        created_ms: 0,
        participant: format!("cam{id}"),
    }
}

fn egress(id: u64) -> EgressSpec {
    EgressSpec {
        session: sid(id),
        room: ROOM,
        port: 41000 + id as u16,
        dest_ip: [127, 0, 0, 1],
        dest_port: 5004,
        srtp: None,
        created_ms: 0,
    }
}

fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(b"payload");
    p
}

fn addr(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

#[test]
fn sessions_need_a_room_and_unique_ids() {
    let mut r = Router::default();
    assert_eq!(
        r.add_ingest(ingest(1, MediaKind::Video, 96)),
        Err(Outcome::NotFound)
    );
    room(&mut r);
    assert_eq!(
        r.add_room(
            RoomSpec {
                room: ROOM,
                name: "again".into()
            },
            None
        ),
        Outcome::Exists
    );
    let h = r.add_ingest(ingest(1, MediaKind::Video, 96)).unwrap();
    assert_eq!(r.add_egress(egress(1)), Err(Outcome::Exists));
    assert_eq!(r.remove_session(sid(1)), Some(h));
    assert_eq!(r.remove_session(sid(1)), None);
    assert_eq!(r.session_count(), 0);
}

#[test]
fn forwards_with_rewrite_and_counts_drops() {
    let mut r = Router::default();
    room(&mut r);
    let i = r.add_ingest(ingest(1, MediaKind::Video, 96)).unwrap();
    let e = r.add_egress(egress(2)).unwrap();
    let t0 = Instant::now();
    let mut p = rtp(96, 100, 9000, 0xabc);
    let inb = r.handle_datagram(t0, i, addr(6000), &mut p).unwrap();
    assert_eq!(inb.kind, MediaKind::Video);
    let mut out = p.clone();
    let (n, dest) = r.prepare_egress(t0, e, &inb, &mut out).unwrap();
    assert_eq!(n, p.len());
    assert_eq!(dest, addr(5004));
    let h = RtpHeader::parse(&out).unwrap();
    assert_eq!((h.pt, h.seq_no, h.timestamp), (EGRESS_VIDEO_PT, 100, 9000));
    assert_ne!(h.ssrc, 0xabc);

    // Another source while the publisher is live: dropped as unknown.
    assert!(r
        .handle_datagram(t0, i, addr(6666), &mut rtp(96, 101, 9000, 0xabc))
        .is_none());
    // Wrong payload type and junk.
    assert!(r
        .handle_datagram(t0, i, addr(6000), &mut rtp(97, 101, 9000, 0xabc))
        .is_none());
    assert!(r
        .handle_datagram(t0, i, addr(6000), &mut [1, 2, 3])
        .is_none());
    let mut stats = Vec::new();
    r.take_dirty_stats(&mut stats, 10);
    let s = stats.iter().find(|s| s.session == sid(1)).unwrap();
    assert_eq!(s.packets, 1);
    assert_eq!(s.drops[DropReason::UnknownSource as usize], 1);
    assert_eq!(s.drops[DropReason::PayloadType as usize], 1);
    assert_eq!(s.drops[DropReason::Malformed as usize], 1);
    let s = stats.iter().find(|s| s.session == sid(2)).unwrap();
    assert_eq!(s.packets, 1);
}

#[test]
fn rtcp_from_a_second_socket_neither_latches_nor_drops() {
    let mut r = Router::default();
    room(&mut r);
    let i = r.add_ingest(ingest(1, MediaKind::Video, 96)).unwrap();
    let t0 = Instant::now();
    let mut sr = vec![0x80, 200, 0, 6, 0, 0, 0, 1];
    sr.extend_from_slice(&[0; 20]);
    assert!(r
        .handle_datagram(t0, i, addr(6001), &mut sr.clone())
        .is_none());
    assert!(r
        .handle_datagram(t0, i, addr(6000), &mut rtp(96, 1, 0, 7))
        .is_some());
    assert!(r.handle_datagram(t0, i, addr(6001), &mut sr).is_none());
    let mut stats = Vec::new();
    r.take_dirty_stats(&mut stats, 10);
    assert_eq!(stats[0].drops, [0; DropReason::COUNT]);
    assert_eq!(stats[0].packets, 3);
}

#[test]
fn publisher_restart_continues_the_output_stream() {
    let mut r = Router::default();
    room(&mut r);
    let i = r.add_ingest(ingest(1, MediaKind::Video, 96)).unwrap();
    let e = r.add_egress(egress(2)).unwrap();
    let t0 = Instant::now();
    let mut last = (0u16, 0u32);
    for k in 0..3u16 {
        let mut p = rtp(96, 500 + k, 1000 + 3000 * k as u32, 0x1);
        let inb = r.handle_datagram(t0, i, addr(6000), &mut p).unwrap();
        r.prepare_egress(t0, e, &inb, &mut p).unwrap();
        let h = RtpHeader::parse(&p).unwrap();
        last = (h.seq_no, h.timestamp);
    }
    // The publisher restarts: new source port, SSRC, sequence and timestamp base, 2 s later.
    let t1 = t0 + Duration::from_secs(2);
    let mut p = rtp(96, 7, 123, 0x2);
    let inb = r
        .handle_datagram(t1, i, addr(7000), &mut p)
        .expect("new source latched after silence");
    r.prepare_egress(t1, e, &inb, &mut p).unwrap();
    let h = RtpHeader::parse(&p).unwrap();
    assert_eq!(h.seq_no, last.0.wrapping_add(1));
    let advanced = h.timestamp.wrapping_sub(last.1);
    assert!(
        (170_000..=190_000).contains(&advanced),
        "timestamp advanced by ~2 s: {advanced}"
    );
}

#[test]
fn removing_a_room_ends_its_sessions() {
    let mut r = Router::default();
    room(&mut r);
    r.add_ingest(ingest(1, MediaKind::Audio, 111)).unwrap();
    r.add_egress(egress(2)).unwrap();
    assert_eq!(r.remove_room(ROOM).unwrap().len(), 2);
    assert_eq!(r.session_count(), 0);
    assert!(r.remove_room(ROOM).is_none());
}

/// A packet over `rtp::MAX_PACKET` is counted, never forwarded: the
/// shard's send slots are sized on the bound.
#[test]
fn an_oversize_packet_is_dropped_where_it_enters() {
    let mut r = Router::default();
    room(&mut r);
    let h = r.add_ingest(ingest(1, MediaKind::Video, 96)).unwrap();
    let mut pkt = rtp(96, 1, 0, 0x1234);
    pkt.resize(crate::rtp::MAX_PACKET + 1, 0);
    assert!(r
        .handle_datagram(Instant::now(), h, addr(7000), &mut pkt)
        .is_none());
    pkt.truncate(crate::rtp::MAX_PACKET);
    assert!(r
        .handle_datagram(Instant::now(), h, addr(7000), &mut pkt)
        .is_some());
    let mut stats = Vec::new();
    r.take_dirty_stats(&mut stats, 10);
    assert_eq!(stats[0].drops[DropReason::Oversize as usize], 1);
    assert_eq!(stats[0].packets, 1);
}
