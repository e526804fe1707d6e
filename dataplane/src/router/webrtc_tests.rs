//! WebRTC sessions in the router, driven as a shard would: a real STUN
//! check verifies the peer, keys are installed as the DTLS thread would.

use super::tests::{ingest, room, sid, ROOM};
use super::*;
use gateway_ring::msg::{
    participant_key, Direction, DropReason, DtlsRole, EndReason, SrtpKey, SrtpSuite, TrackSpec,
    WebrtcSpec,
};
use gateway_ring::msg::{Codec, MediaKind};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use crate::output::{Output, Outputs, Pick};
use crate::participants::ParticipantId;

use crate::rtcp;
use crate::rtp::RtpHeader;
use crate::srtp::SrtpContext;

// The same WebRTC session spec and ICE check the fuzz harness uses.
use crate::fuzz::{check, webrtc as spec};

/// The sessions whose DTLS client may start, taken out of `out`.
fn dtls_starts(out: &mut Outputs) -> Vec<SessionId> {
    out.take(|o| match o {
        Output::DtlsStart { session } => Pick::Take(session),
        o => Pick::Keep(o),
    })
}

/// (session, reason) of the sessions the router ended, taken out of `out`.
fn ended(out: &mut Outputs) -> Vec<(SessionId, EndReason)> {
    out.take_events()
        .into_iter()
        .filter_map(|e| match e {
            gateway_ring::msg::Event::SessionEnded { session, reason } => Some((session, reason)),
            _ => None,
        })
        .collect()
}

fn keys(seed: u8) -> SrtpKey {
    SrtpKey::new(SrtpSuite::AeadAes128Gcm, &[seed; 28]).unwrap()
}

fn srtp(ctx: &mut SrtpContext, pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    p.extend_from_slice(&[0x65; 100]);
    let len = p.len();
    p.resize(len + MAX_TRAILER, 0);
    let n = ctx.protect_rtp(&mut p, len).unwrap();
    p.truncate(n);
    p
}

fn addr(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

/// A router with room 1 ("w"), and the test's start time.
fn room_w() -> (Router, Instant) {
    let mut r = Router::default();
    r.add_room(
        RoomSpec {
            room: ROOM,
            name: "w".into(),
        },
        None,
    );
    (r, Instant::now())
}

/// A publisher and a subscriber, both verified and keyed. Returns the
/// router, their handles, and the publisher's client-side SRTP context.
fn connected() -> (Router, Handle, Handle, SrtpContext, Instant) {
    let (mut r, t0) = room_w();
    let p = r.add_webrtc(t0, spec(1, Direction::Publish)).unwrap();
    let s = r.add_webrtc(t0, spec(2, Direction::Subscribe)).unwrap();
    for (h, port) in [(p, 5001), (s, 5002)] {
        let mut c = check(if h == p { 1 } else { 2 });
        assert!(r.handle_datagram(t0, h, addr(port), &mut c).is_none());
    }
    let out = r.out.take_transmits();
    assert_eq!(out.len(), 2, "both checks answered");
    // Client → server keys are the client's "tx"; the server receives with them.
    r.install_keys(t0, sid(1), &keys(1), &keys(2));
    r.install_keys(t0, sid(2), &keys(3), &keys(4));
    (r, p, s, SrtpContext::new(&keys(1)), t0)
}

/// Video packets `seqs` from the publisher, each fanned out to the subscriber.
fn forward(
    r: &mut Router,
    (p, s): (Handle, Handle),
    client: &mut SrtpContext,
    t0: Instant,
    seqs: std::ops::Range<u16>,
) {
    for seq in seqs {
        let mut pkt = srtp(client, 102, seq, 0xabc);
        let inb = r.handle_datagram(t0, p, addr(5001), &mut pkt).unwrap();
        let mut out = vec![0u8; 1600];
        out[..inb.len].copy_from_slice(&pkt[..inb.len]);
        r.prepare_egress(t0, s, &inb, &mut out).unwrap();
    }
}

#[test]
fn stun_with_wrong_credentials_gets_no_answer() {
    let (mut r, t0) = room_w();
    let h = r.add_webrtc(t0, spec(1, Direction::Publish)).unwrap();
    let mut wrong_user = check(9);
    let mut tampered = check(1);
    let n = tampered.len();
    tampered[n - 20] ^= 1; // inside the MESSAGE-INTEGRITY value
    for c in [&mut wrong_user, &mut tampered] {
        assert!(r.handle_datagram(t0, h, addr(5001), c).is_none());
    }
    let out = r.out.take_transmits();
    assert!(out.is_empty(), "no answer to a stranger");
    let mut stats = Vec::new();
    r.take_dirty_stats(&mut stats, 10);
    assert_eq!(stats[0].drops[DropReason::Ice as usize], 2);
    // Media and DTLS from the unverified address are refused too.
    let mut media = srtp(&mut SrtpContext::new(&keys(1)), 102, 1, 7);
    assert!(r.handle_datagram(t0, h, addr(5001), &mut media).is_none());
    assert!(r
        .handle_datagram(t0, h, addr(5001), &mut [22, 0xfe, 0xfd, 0])
        .is_none());
    let mut dtls = Vec::new();
    dtls.extend(r.out.take(|o| match o {
        Output::Dtls { session, .. } => Pick::Take(session),
        o => Pick::Keep(o),
    }));
    assert!(dtls.is_empty());
}

/// Where we are the DTLS client, the peer's first valid check starts
/// the handshake, once, when its address is there to send to; a
/// server-role session never starts one.
#[test]
fn a_dtls_client_starts_at_its_peers_first_valid_check() {
    let (mut r, t0) = room_w();
    let client_role = WebrtcSpec {
        dtls_role: DtlsRole::Client,
        ..spec(1, Direction::Publish)
    };
    let c = r.add_webrtc(t0, client_role).unwrap();
    let s = r.add_webrtc(t0, spec(2, Direction::Subscribe)).unwrap();
    let mut starts = Vec::new();
    let mut tampered = check(1);
    let n = tampered.len();
    tampered[n - 20] ^= 1; // inside the MESSAGE-INTEGRITY value
    assert!(r
        .handle_datagram(t0, c, addr(5001), &mut tampered)
        .is_none());
    starts.extend(dtls_starts(&mut r.out));
    assert!(starts.is_empty(), "a stranger starts nothing");
    assert!(r.dtls_destination(sid(1)).is_none());
    r.handle_datagram(t0, c, addr(5001), &mut check(1));
    starts.extend(dtls_starts(&mut r.out));
    assert_eq!(starts, [sid(1)]);
    assert_eq!(r.dtls_destination(sid(1)), Some((c, addr(5001))));
    // Later checks (consent, another address) start nothing again.
    r.handle_datagram(t0, c, addr(5001), &mut check(1));
    r.handle_datagram(t0, c, addr(5003), &mut check(1));
    r.handle_datagram(t0, s, addr(5002), &mut check(2));
    starts.clear();
    starts.extend(dtls_starts(&mut r.out));
    assert!(starts.is_empty(), "{starts:?}");
    let out = r.out.take_transmits();
    assert_eq!(out.len(), 4, "every valid check answered");
}

#[test]
fn publisher_media_fans_out_and_srtp_forgeries_are_counted() {
    let (mut r, p, s, mut client, t0) = connected();
    let mut pkt = srtp(&mut client, 102, 10, 0xabc);
    let inb = r.handle_datagram(t0, p, addr(5001), &mut pkt).unwrap();
    assert_eq!(inb.kind, MediaKind::Video);
    let mut out = vec![0u8; 1600];
    out[..inb.len].copy_from_slice(&pkt[..inb.len]);
    let (n, dest) = r.prepare_egress(t0, s, &inb, &mut out).unwrap();
    assert_eq!(dest, addr(5002));
    // The subscriber's side decrypts with the server's send key.
    let mut sub_rx = SrtpContext::new(&keys(4));
    let m = sub_rx.unprotect_rtp(&mut out[..n]).unwrap();
    let h = RtpHeader::parse(&out[..m]).unwrap();
    assert_eq!((h.pt, h.ssrc), (102, 0x5002));

    // Wrong key, a replay, and a stranger: counted, nothing forwarded.
    let mut forged = srtp(&mut SrtpContext::new(&keys(9)), 102, 11, 0xabc);
    assert!(r.handle_datagram(t0, p, addr(5001), &mut forged).is_none());
    let mut again = srtp(&mut SrtpContext::new(&keys(1)), 102, 10, 0xabc);
    assert!(r.handle_datagram(t0, p, addr(5001), &mut again).is_none());
    let mut stranger = srtp(&mut client, 102, 12, 0xabc);
    assert!(r
        .handle_datagram(t0, p, addr(6666), &mut stranger)
        .is_none());
    // The real stream continues.
    let mut next = srtp(&mut client, 102, 13, 0xabc);
    assert!(r.handle_datagram(t0, p, addr(5001), &mut next).is_some());
    let mut stats = Vec::new();
    r.take_dirty_stats(&mut stats, 10);
    let pub_stats = stats.iter().find(|x| x.session == sid(1)).unwrap();
    assert_eq!(pub_stats.drops[DropReason::Auth as usize], 1);
    assert_eq!(pub_stats.drops[DropReason::Replay as usize], 1);
    assert_eq!(pub_stats.drops[DropReason::UnknownSource as usize], 1);
}

/// RTX (RFC 4588, payload type 103 `apt=102` in these specs): a resent
/// packet comes on an SSRC and sequence of its own and goes on as the
/// packet it resends; a padding-only probe is taken for congestion
/// control only, not counted as a drop.
#[test]
fn rtx_is_unwrapped_into_the_packet_it_resends() {
    let (mut r, p, _s, mut client, t0) = connected();
    let mut first = srtp(&mut client, 102, 10, 0xabc);
    assert!(r.handle_datagram(t0, p, addr(5001), &mut first).is_some());
    let rtx = |client: &mut SrtpContext, seq: u16, body: &[u8], padding: bool| {
        let mut pkt = vec![0x80 | if padding { 0x20 } else { 0 }, 103];
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(&27_000u32.to_be_bytes());
        pkt.extend_from_slice(&0xdefu32.to_be_bytes());
        pkt.extend_from_slice(body);
        let len = pkt.len();
        pkt.resize(len + MAX_TRAILER, 0);
        let n = client.protect_rtp(&mut pkt, len).unwrap();
        pkt.truncate(n);
        pkt
    };
    // Original sequence number 9, then the original payload.
    let mut body = vec![0, 9];
    body.extend_from_slice(&[0x65; 100]);
    let mut resent = rtx(&mut client, 500, &body, false);
    let inb = r.handle_datagram(t0, p, addr(5001), &mut resent).unwrap();
    assert_eq!(
        (inb.kind, inb.seq_no, inb.ssrc, inb.len),
        (MediaKind::Video, 9, 0xabc, 112)
    );
    let h = RtpHeader::parse(&resent[..inb.len]).unwrap();
    assert_eq!(
        (h.pt, h.seq_no, h.timestamp, h.ssrc),
        (102, 9, 27_000, 0xabc)
    );
    assert_eq!(&resent[12..inb.len], &[0x65; 100]);
    // A bandwidth probe: padding only.
    let mut probe = rtx(&mut client, 501, &[0, 0, 0, 4], true);
    assert!(r.handle_datagram(t0, p, addr(5001), &mut probe).is_none());
    let mut stats = Vec::new();
    r.take_dirty_stats(&mut stats, 10);
    let pub_stats = stats.iter().find(|x| x.session == sid(1)).unwrap();
    assert_eq!(pub_stats.drops.iter().sum::<u64>(), 0, "{pub_stats:?}");
}

#[test]
fn subscriber_nack_is_answered_from_cache_and_pli_is_rate_limited() {
    let (mut r, p, s, mut client, t0) = connected();
    forward(&mut r, (p, s), &mut client, t0, 100..110);
    // What went out before is not looked at.
    r.out.take_transmits();
    // The subscriber NACKs 103 and 105 (pid 103, blp bit 1) and sends two PLIs.
    let mut sub_tx = SrtpContext::new(&keys(3));
    let mut fb = vec![0u8; 200];
    let mut n = rtcp::write_nack(&mut fb, 9, 0x5002, 103, 0b10);
    n += rtcp::write_pli(&mut fb[n..], 9, 0x5002);
    n += rtcp::write_pli(&mut fb[n..], 9, 0x5002);
    let n = sub_tx.protect_rtcp(&mut fb, n).unwrap();
    fb.truncate(n);
    assert!(r.handle_datagram(t0, s, addr(5002), &mut fb).is_none());
    let mut controls = r.out.take_transmits();
    let to_sub: Vec<_> = controls.iter().filter(|c| c.from == s).collect();
    let to_pub: Vec<_> = controls.iter().filter(|c| c.from == p).collect();
    assert_eq!(to_sub.len(), 2, "two retransmissions");
    // On the line's RTX stream (RFC 4588; these specs answer RTX 103):
    // its own SSRC and sequence, the original sequence number first in
    // the payload, then the original payload.
    let mut sub_rx = SrtpContext::new(&keys(4));
    let mut got = Vec::new();
    for c in &to_sub {
        let mut d = c.data.clone();
        let m = sub_rx.unprotect_rtp(&mut d).unwrap();
        let h = RtpHeader::parse(&d[..m]).unwrap();
        let osn = u16::from_be_bytes([d[h.len], d[h.len + 1]]);
        assert_eq!(&d[h.len + 2..m], &[0x65; 100][..]);
        got.push((h.pt, h.ssrc, h.seq_no, osn));
    }
    let rtx = gateway_ring::msg::rtx_ssrc(0x5002);
    assert_eq!(got, vec![(103, rtx, 0, 103), (103, rtx, 1, 105)]);
    assert_eq!(to_pub.len(), 1, "two PLIs within a second: one request");
    let mut pub_rx = SrtpContext::new(&keys(2));
    let mut d = to_pub[0].data.clone();
    let m = pub_rx.unprotect_rtcp(&mut d).unwrap();
    let mut items = Vec::new();
    rtcp::walk(&d[..m], |f| items.push(f));
    assert_eq!(items, vec![Feedback::KeyframeRequest { media_ssrc: 0xabc }]);
    // A NACK for a packet never cached goes on to the publisher.
    controls.clear();
    let mut fb = vec![0u8; 200];
    let n = rtcp::write_nack(&mut fb, 9, 0x5002, 5000, 0);
    let n = sub_tx.protect_rtcp(&mut fb, n).unwrap();
    fb.truncate(n);
    r.handle_datagram(t0, s, addr(5002), &mut fb);
    controls.extend(r.out.take_transmits());
    assert!(controls.len() == 1 && controls[0].from == p, "{controls:?}");
}

/// A player whose answer took RFC 6464 audio levels gets each packet's
/// level under its own id (the publisher's id means nothing to it); one
/// that did not gets the publisher's block blanked, as before.
#[test]
fn audio_levels_reach_players_under_their_own_ids() {
    let (mut r, t0) = room_w();
    // The publisher sends levels under id 1 (these specs' audio).
    let p = r.add_webrtc(t0, spec(1, Direction::Publish)).unwrap();
    let mut with = spec(2, Direction::Subscribe);
    with.tracks[1].audio_level = 9;
    let mut without = spec(3, Direction::Subscribe);
    without.tracks[1].audio_level = 0;
    let players = [
        r.add_webrtc(t0, with).unwrap(),
        r.add_webrtc(t0, without).unwrap(),
    ];
    for (h, session) in [(p, 1), (players[0], 2), (players[1], 3)] {
        let mut c = check(session);
        r.handle_datagram(t0, h, addr(5000 + session as u16), &mut c);
        r.install_keys(
            t0,
            sid(session),
            &keys(session as u8 * 2 - 1),
            &keys(session as u8 * 2),
        );
    }
    // Opus with a one-word block: the level, 42 (-42 dBov), under id 1.
    let mut pkt = vec![0x90, 111, 0, 7, 0, 0, 0, 9, 0, 0, 0xab, 0xc1];
    pkt.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 42, 0, 0]);
    pkt.extend_from_slice(&[0x55; 60]);
    let len = pkt.len();
    pkt.resize(len + MAX_TRAILER, 0);
    let n = SrtpContext::new(&keys(1))
        .protect_rtp(&mut pkt, len)
        .unwrap();
    pkt.truncate(n);
    let inb = r.handle_datagram(t0, p, addr(5001), &mut pkt).unwrap();
    assert_eq!((inb.kind, inb.level), (MediaKind::Audio, Some(42)));
    let mut got = Vec::new();
    for (h, key) in [(players[0], 4), (players[1], 6)] {
        let mut out = vec![0u8; 1600];
        out[..inb.len].copy_from_slice(&pkt[..inb.len]);
        let (n, _) = r.prepare_egress(t0, h, &inb, &mut out).unwrap();
        let m = SrtpContext::new(&keys(key))
            .unprotect_rtp(&mut out[..n])
            .unwrap();
        let hd = RtpHeader::parse(&out[..m]).unwrap();
        got.push((
            crate::rtp::audio_level(&out[..hd.len], 9),
            crate::rtp::audio_level(&out[..hd.len], 1),
            out[hd.len..m] == [0x55; 60],
        ));
    }
    assert_eq!(got, vec![(Some(42), None, true), (None, None, true)]);
}

/// The RTMP publisher of the tests below (participant 77).
const RTMP: Source = Source::Rtmp(ParticipantId::new(77));

/// An RTP packet of [`RTMP`]'s video: `nal` opens its payload (0x67 an
/// SPS and 0x65 an IDR: a keyframe's; 0x41 a P slice).
fn rtmp_packet(seq: u16, ts: u32, nal: u8) -> bytes::Bytes {
    let mut p = vec![0x80, 0x80 | 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x77u32.to_be_bytes());
    p.extend_from_slice(&[nal, 0xaa, 0xbb]);
    p.into()
}

/// [`RTMP`]'s packet `pkt` as the core and the shard handle it: into the
/// router's track cache (which may replay a GOP ahead of it, into
/// `r.out`), then fanned out to player `s`. What the player got of it (its
/// sequence number and time there, and the payload's first byte), if
/// anything.
fn rtmp_live(
    r: &mut Router,
    s: Handle,
    rx: &mut SrtpContext,
    at: Instant,
    pkt: bytes::Bytes,
) -> Option<(u16, u32, u8)> {
    let Source::Rtmp(pid) = RTMP else {
        unreachable!("an RTMP source")
    };
    let rtp = crate::media::RtpFromRtmp {
        room: ROOM,
        pid,
        key: 0,
        packet: pkt,
        codec: crate::codec::VideoCodec::H264,
        transcoded_from: None,
    };
    r.cache_rtmp_video(at, &rtp);
    let inb = rtp.inbound(MediaKind::Video).unwrap();
    let mut out = vec![0u8; 1600];
    out[..inb.len].copy_from_slice(&rtp.packet);
    let (n, _) = r.prepare_egress(at, s, &inb, &mut out)?;
    let m = rx.unprotect_rtp(&mut out[..n]).unwrap();
    let h = RtpHeader::parse(&out[..m]).unwrap();
    Some((h.seq_no, h.timestamp, out[h.len]))
}

/// The RTP packets sent to player `h` through `r.out` (replays, answers):
/// (sequence number, time, the payload's first byte) each.
fn sent_to(r: &mut Router, h: Handle, rx: &mut SrtpContext) -> Vec<(u16, u32, u8)> {
    r.out
        .take_transmits()
        .into_iter()
        .filter(|c| c.from == h)
        .map(|c| {
            let mut d = c.data;
            let m = rx.unprotect_rtp(&mut d).unwrap();
            let hd = RtpHeader::parse(&d[..m]).unwrap();
            (hd.seq_no, hd.timestamp, d[hd.len])
        })
        .collect()
}

/// Player `s` sends the RTCP `write` makes, protected with `tx`.
fn player_rtcp(
    r: &mut Router,
    (s, tx): (Handle, &mut SrtpContext),
    at: Instant,
    write: impl Fn(&mut [u8]) -> usize,
) {
    let mut fb = vec![0u8; 200];
    let n = write(&mut fb);
    let n = tx.protect_rtcp(&mut fb, n).unwrap();
    fb.truncate(n);
    assert!(r.handle_datagram(at, s, addr(5002), &mut fb).is_none());
}

/// A player's PLI for an RTMP publisher's line (which cannot be asked)
/// is answered at the next frame boundary by replaying the GOP in the
/// publisher's track cache from its keyframe, ahead of that frame:
/// numbered on from the line's last packet, stamped a tick apart per frame
/// just after it, and the live stream continues after it with no gap;
/// NACKs from before the replay are not answered with the moved mapping;
/// a second PLI within a second replays nothing.
#[test]
fn a_pli_for_an_rtmp_publisher_replays_its_gop() {
    let (mut r, _p, s, _client, t0) = connected();
    let (mut rx, mut tx) = (SrtpContext::new(&keys(4)), SrtpContext::new(&keys(3)));
    // SPS, IDR (frame 0); then one-packet P frames, 3000 ticks apart. The
    // line's first packet is the keyframe: the player connected before
    // it, and has nothing to be replayed.
    let first = rtmp_live(&mut r, s, &mut rx, t0, rtmp_packet(100, 0, 0x67)).unwrap();
    rtmp_live(&mut r, s, &mut rx, t0, rtmp_packet(101, 0, 0x65));
    rtmp_live(&mut r, s, &mut rx, t0, rtmp_packet(102, 3000, 0x41));
    let (s0, t, _) = rtmp_live(&mut r, s, &mut rx, t0, rtmp_packet(103, 6000, 0x41)).unwrap();
    assert_eq!(first, (100, 0, 0x67));
    assert!(r.out.take_transmits().is_empty(), "nothing replayed");
    // Past the second its connecting counts as a replay.
    let t1 = t0 + Duration::from_secs(2);
    player_rtcp(&mut r, (s, &mut tx), t1, |b| rtcp::write_pli(b, 9, 0x5002));
    assert!(
        r.out.take_transmits().is_empty(),
        "nobody to ask, nothing yet"
    );
    // The next frame: first the GOP (SPS, IDR, two P frames), then it.
    let next = rtmp_live(&mut r, s, &mut rx, t1, rtmp_packet(104, 9000, 0x41)).unwrap();
    let mut replay_rx = SrtpContext::new(&keys(4));
    assert_eq!(
        sent_to(&mut r, s, &mut replay_rx),
        vec![
            (s0 + 1, t + 1, 0x67),
            (s0 + 2, t + 1, 0x65),
            (s0 + 3, t + 2, 0x41),
            (s0 + 4, t + 3, 0x41)
        ]
    );
    assert_eq!(
        next,
        (s0 + 5, first.1 + 9000, 0x41),
        "the live stream goes on after it"
    );
    // A NACK from before the replay is not answered (the mapping moved);
    // one after it is.
    player_rtcp(&mut r, (s, &mut tx), t1, |b| {
        rtcp::write_nack(b, 9, 0x5002, s0, 0)
    });
    assert!(r.out.take_transmits().is_empty());
    player_rtcp(&mut r, (s, &mut tx), t1, |b| {
        rtcp::write_nack(b, 9, 0x5002, s0 + 5, 0)
    });
    assert_eq!(r.out.take_transmits().len(), 1);
    // Another PLI within the second: no second replay.
    player_rtcp(&mut r, (s, &mut tx), t1, |b| rtcp::write_pli(b, 9, 0x5002));
    let after = rtmp_live(&mut r, s, &mut rx, t1, rtmp_packet(105, 12000, 0x41));
    assert_eq!(after, Some((s0 + 6, first.1 + 12000, 0x41)));
    assert!(r.out.take_transmits().is_empty());
    let mut stats = Vec::new();
    r.take_dirty_stats(&mut stats, 10);
    let sub = stats.iter().find(|x| x.session == sid(2)).unwrap();
    assert_eq!((sub.keyframe_requests, sub.retransmits), (2, 5));
}

/// A player alone in room "w", its ICE check answered, no keys yet: its
/// handle and the start time.
fn unkeyed_player() -> (Router, Handle, Instant) {
    let (mut r, t0) = room_w();
    let s = r.add_webrtc(t0, spec(2, Direction::Subscribe)).unwrap();
    assert!(r
        .handle_datagram(t0, s, addr(5002), &mut check(2))
        .is_none());
    assert_eq!(r.out.take_transmits().len(), 1, "the check answered");
    (r, s, t0)
}

/// [`RTMP`]'s GOP so far, before a player connects: SPS and IDR at 90000,
/// P frames at 93000 and 96000 (two packets, the frame goes on), cached
/// and offered to player `s`, which takes none (no keys yet).
fn gop_before_the_player(r: &mut Router, s: Handle, t0: Instant) {
    let mut rx = SrtpContext::new(&keys(4));
    let gop = [
        (200, 90_000, 0x67),
        (201, 90_000, 0x65),
        (202, 93_000, 0x41),
        (203, 96_000, 0x41),
        (204, 96_000, 0x41),
    ];
    for (seq, ts, nal) in gop {
        let got = rtmp_live(r, s, &mut rx, t0, rtmp_packet(seq, ts, nal));
        assert_eq!(got, None, "not connected yet");
    }
}

/// A WebRTC player that connects while an RTMP publisher (which cannot
/// be asked for a keyframe) is in the middle of a GOP gets a picture at
/// once: its video line wants a replay from the moment its keys are in;
/// it takes nothing in the middle of a frame, and ahead of the packet that
/// begins the next one it gets the GOP from the publisher's track cache:
/// the line starts at the keyframe, at the publisher's own numbers and
/// times (presentation order kept), and the live packets go on from there.
/// Those packets are the line's like any other: a NACK for one is answered.
/// One replay.
#[test]
fn a_player_that_connects_gets_an_rtmp_publishers_gop_from_its_track_cache() {
    let (mut r, s, t0) = unkeyed_player();
    gop_before_the_player(&mut r, s, t0);
    r.install_keys(t0, sid(2), &keys(3), &keys(4));
    assert!(r.out.take_transmits().is_empty(), "nothing before a packet");
    let (mut rx, mut tx) = (SrtpContext::new(&keys(4)), SrtpContext::new(&keys(3)));
    // The rest of frame 96000 waits.
    let mid = rtmp_live(&mut r, s, &mut rx, t0, rtmp_packet(205, 96_000, 0x41));
    assert_eq!(mid, None, "not a frame boundary");
    assert!(r.out.take_transmits().is_empty());
    // The next frame: the GOP first (to 205), then it.
    let next = rtmp_live(&mut r, s, &mut rx, t0, rtmp_packet(206, 99_000, 0x41));
    let mut replay_rx = SrtpContext::new(&keys(4));
    assert_eq!(
        sent_to(&mut r, s, &mut replay_rx),
        vec![
            (200, 90_000, 0x67),
            (201, 90_000, 0x65),
            (202, 93_000, 0x41),
            (203, 96_000, 0x41),
            (204, 96_000, 0x41),
            (205, 96_000, 0x41),
        ]
    );
    assert_eq!(next, Some((206, 99_000, 0x41)));
    let after = rtmp_live(&mut r, s, &mut rx, t0, rtmp_packet(207, 102_000, 0x41));
    assert_eq!(after, Some((207, 102_000, 0x41)));
    assert!(r.out.take_transmits().is_empty(), "one replay");
    player_rtcp(&mut r, (s, &mut tx), t0, |b| {
        rtcp::write_nack(b, 9, 0x5002, 202, 0)
    });
    assert_eq!(r.out.take_transmits().len(), 1, "a replayed packet resent");
    let mut stats = Vec::new();
    r.take_dirty_stats(&mut stats, 10);
    let player = stats.iter().find(|x| x.session == sid(2)).unwrap();
    assert_eq!(player.retransmits, 7);
}

/// The join replay, a PLI's replay and NACK answers come from one cache,
/// the router's track cache of the RTMP publisher: a packet changed there
/// (a marked IDR, a marked live packet) is what each of them sends.
#[test]
fn a_join_a_pli_and_a_nack_are_served_from_the_one_track_cache() {
    let (mut r, s, t0) = unkeyed_player();
    gop_before_the_player(&mut r, s, t0);
    let marked = |seq, ts| rtmp_packet(seq, ts, 0xee);
    let cache = r.track_cache_mut(RTMP).expect("cached by the router");
    cache.replace(201, marked(201, 90_000));
    r.install_keys(t0, sid(2), &keys(3), &keys(4));
    let (mut rx, mut tx) = (SrtpContext::new(&keys(4)), SrtpContext::new(&keys(3)));
    let mut replay_rx = SrtpContext::new(&keys(4));
    rtmp_live(&mut r, s, &mut rx, t0, rtmp_packet(205, 99_000, 0x41));
    let joined: Vec<u8> = sent_to(&mut r, s, &mut replay_rx)
        .into_iter()
        .map(|(_, _, nal)| nal)
        .collect();
    assert_eq!(joined, [0x67, 0xee, 0x41, 0x41, 0x41], "join replay");
    // A PLI past the second: the same GOP, from the same cache.
    let t1 = t0 + Duration::from_secs(2);
    player_rtcp(&mut r, (s, &mut tx), t1, |b| rtcp::write_pli(b, 9, 0x5002));
    let live = rtmp_live(&mut r, s, &mut rx, t1, rtmp_packet(206, 102_000, 0x41));
    let (live_seq, _, _) = live.unwrap();
    let replayed: Vec<u8> = sent_to(&mut r, s, &mut replay_rx)
        .into_iter()
        .map(|(_, _, nal)| nal)
        .collect();
    assert_eq!(replayed, [0x67, 0xee, 0x41, 0x41, 0x41, 0x41], "PLI replay");
    // The live packet, changed in the cache since it went: its NACK is
    // answered with what the cache holds (on the line's RTX stream).
    let cache = r.track_cache_mut(RTMP).unwrap();
    cache.replace(206, marked(206, 102_000));
    player_rtcp(&mut r, (s, &mut tx), t1, |b| {
        rtcp::write_nack(b, 9, 0x5002, live_seq, 0)
    });
    let answers = r.out.take_transmits();
    assert_eq!(answers.len(), 1);
    let mut d = answers[0].data.clone();
    let m = replay_rx.unprotect_rtp(&mut d).unwrap();
    let hd = RtpHeader::parse(&d[..m]).unwrap();
    let osn = u16::from_be_bytes([d[hd.len], d[hd.len + 1]]);
    assert_eq!((osn, d[hd.len + 2]), (live_seq, 0xee), "NACK answer");
}

/// A NACK storm (hundreds of NACK items per packet, many packets a
/// second) is answered up to the player's budget; the rest is counted.
#[test]
fn a_nack_storm_is_answered_within_the_budget() {
    let (mut r, p, s, mut client, t0) = connected();
    forward(&mut r, (p, s), &mut client, t0, 0..100);
    // What went out before is not looked at.
    r.out.take_transmits();
    let mut sub_tx = SrtpContext::new(&keys(3));
    let budget = crate::limits::Limits::default().nack_per_s as usize;
    let mut sent = 0;
    // Each packet NACKs all 100 cached packets (pid + 16 in blp each).
    for k in 0..20 {
        let mut fb = vec![0u8; 1400];
        let mut n = 0;
        for pid in (0..100u16).step_by(17) {
            n += rtcp::write_nack(&mut fb[n..], 9, 0x5002, pid, 0xffff);
        }
        let n = sub_tx.protect_rtcp(&mut fb, n).unwrap();
        fb.truncate(n);
        let at = t0 + std::time::Duration::from_millis(k);
        r.handle_datagram(at, s, addr(5002), &mut fb);
        let controls = r.out.take_transmits();
        sent += controls.iter().filter(|c| c.from == s).count();
    }
    assert!(sent <= budget + 2, "{sent} retransmissions in 20 ms");
    assert!(sent >= budget - 2, "{sent}: the burst is answered");
    let mut stats = Vec::new();
    r.take_dirty_stats(&mut stats, 10);
    let sub = stats.iter().find(|x| x.session == sid(2)).unwrap();
    assert_eq!(sub.retransmits as usize, sent);
    assert!(sub.drops[DropReason::RateLimited as usize] as usize >= 20 * 100 - budget - 2);
}

/// A player that offered two video lines sees two publishers at once.
#[test]
fn each_publisher_gets_its_own_track_of_a_multi_line_player() {
    let (mut r, t0) = room_w();
    let mut sub = spec(3, Direction::Subscribe);
    sub.tracks.push(TrackSpec {
        kind: MediaKind::Video,
        codec: Codec::H264,
        pt: 102,
        ssrc: 0x7003,
        source: 0,
        audio_level: 0,
        twcc: 0,
        abs_send_time: 0,
        rtx_pt: 0,
        codecs: 0,
    });
    let s = r.add_webrtc(t0, sub).unwrap();
    let mut c = check(3);
    r.handle_datagram(t0, s, addr(5003), &mut c);
    r.install_keys(t0, sid(3), &keys(3), &keys(4));
    let mut sub_rx = SrtpContext::new(&keys(4));
    let mut got = Vec::new();
    for (publisher, ssrc) in [(10u64, 0xaaa), (11, 0xbbb), (10, 0xaaa), (12, 0xccc)] {
        let inb = Inbound {
            room: ROOM,
            source: Source::Session(sid(publisher)),
            participant: ParticipantId::new(publisher as u32 + 100),
            key: publisher as u32 + 100,
            level: None,
            kind: MediaKind::Video,
            codec: Some(crate::codec::VideoCodec::H264),
            len: 40,
            seq_no: got.len() as u16,
            timestamp: 0,
            ssrc,
            lost_before: 0,
        };
        let mut out = vec![0u8; 1600];
        out[..40].copy_from_slice(&[0x80, 102, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0].repeat(4)[..40]);
        match r.prepare_egress(t0, s, &inb, &mut out) {
            Some((n, _)) => {
                let m = sub_rx.unprotect_rtp(&mut out[..n]).unwrap();
                got.push(Some(RtpHeader::parse(&out[..m]).unwrap().ssrc));
            }
            None => got.push(None),
        }
    }
    // Publisher 10 on the first line, 11 on the second, 12 finds none free.
    assert_eq!(got, vec![Some(0x5003), Some(0x7003), Some(0x5003), None]);
}

/// A player's copy of video packet `seq` from participant `pid`, if it
/// takes it: the SSRC (line) it went out on.
fn offer(
    r: &mut Router,
    s: Handle,
    ingest: u64,
    pid: ParticipantId,
    key: u32,
    seq: u16,
) -> Option<u32> {
    let inb = Inbound {
        room: ROOM,
        source: Source::Session(sid(ingest)),
        participant: pid,
        key,
        level: None,
        kind: MediaKind::Video,
        codec: Some(crate::codec::VideoCodec::H264),
        len: 40,
        seq_no: seq,
        timestamp: 0,
        ssrc: ingest as u32,
        lost_before: 0,
    };
    let mut out = vec![0u8; 1600];
    out[..12].copy_from_slice(&[0x80, 102, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let (n, _) = r.prepare_egress(Instant::now(), s, &inb, &mut out)?;
    let m = SrtpContext::new(&keys(4))
        .unprotect_rtp(&mut out[..n])
        .ok()?;
    Some(RtpHeader::parse(&out[..m]).ok()?.ssrc)
}

/// A keyed player of room 1 with `video_lines` video lines wanting the
/// participants with keys `wants`, playing as `me`.
fn player(r: &mut Router, session: u64, me: &str, wants: &[u32]) -> Handle {
    let t0 = Instant::now();
    let mut sub = spec(session, Direction::Subscribe);
    sub.participant = me.into();
    sub.tracks.retain(|t| t.kind == MediaKind::Video);
    sub.tracks[0].source = wants.first().copied().unwrap_or(0);
    for (i, &want) in wants.iter().enumerate().skip(1) {
        sub.tracks.push(TrackSpec {
            kind: MediaKind::Video,
            codec: Codec::H264,
            pt: 102,
            ssrc: 0x7000 + i as u32,
            source: want,
            audio_level: 0,
            twcc: 0,
            abs_send_time: 0,
            rtx_pt: 0,
            codecs: 0,
        });
    }
    let s = r.add_webrtc(t0, sub).unwrap();
    let mut c = check(session);
    r.handle_datagram(t0, s, addr(5000 + session as u16), &mut c);
    r.install_keys(t0, sid(session), &keys(3), &keys(4));
    s
}

/// A participant playing the room never receives its own tracks, and
/// the others' come through.
#[test]
fn a_participant_never_receives_its_own_tracks() {
    let mut r = Router::default();
    room(&mut r);
    let mut alice = spec(1, Direction::Publish);
    alice.participant = "alice".into();
    r.add_webrtc(Instant::now(), alice).unwrap();
    let a = r.participants.find(ROOM, "alice").unwrap();
    let s = player(&mut r, 2, "alice", &[]);
    assert_eq!(
        r.participants.find(ROOM, "alice"),
        Some(a),
        "one participant, two sessions"
    );
    assert_eq!(offer(&mut r, s, 1, a, participant_key("alice"), 1), None);
    let bob = r.participants.join(ROOM, "bob");
    assert_eq!(
        offer(&mut r, s, 9, bob, participant_key("bob"), 1),
        Some(0x5002)
    );
}

/// A name publishes each kind once: a second WHIP publisher of a live
/// name is refused; an RTP participant's video and audio ingests are two
/// sessions of one participant.
#[test]
fn a_live_name_publishes_each_kind_once() {
    let mut r = Router::default();
    room(&mut r);
    let t0 = Instant::now();
    let mut first = spec(1, Direction::Publish);
    first.participant = "alice".into();
    let mut second = spec(2, Direction::Publish);
    second.participant = "alice".into();
    r.add_webrtc(t0, first).unwrap();
    assert_eq!(r.add_webrtc(t0, second).err(), Some(Outcome::Exists));
    assert_eq!(r.session_count(), 1);
    let mut video = ingest(3, MediaKind::Video, 96);
    let mut audio = ingest(4, MediaKind::Audio, 111);
    let mut again = ingest(5, MediaKind::Video, 96);
    for s in [&mut video, &mut audio, &mut again] {
        s.participant = "cam".into();
    }
    r.add_ingest(video).unwrap();
    r.add_ingest(audio).unwrap();
    assert_eq!(r.add_ingest(again).err(), Some(Outcome::Exists));
    // Once the publisher leaves, the name publishes again.
    r.remove_session(sid(1));
    let mut third = spec(6, Direction::Publish);
    third.participant = "alice".into();
    assert!(r.add_webrtc(t0, third).is_ok());
}

/// Each line carries the publisher the answer named for it (its
/// `a=msid`), whoever sends first; lines that change hands are reported.
#[test]
fn lines_carry_the_publishers_the_answer_named() {
    let mut r = Router::default();
    room(&mut r);
    let (kb, kc) = (participant_key("bob"), participant_key("carol"));
    let s = player(&mut r, 2, "alice", &[kb, kc]);
    let (bob, carol, dave) = (
        r.participants.join(ROOM, "bob"),
        r.participants.join(ROOM, "carol"),
        r.participants.join(ROOM, "dave"),
    );
    // Carol sends first, yet gets her own line (the second), not bob's.
    assert_eq!(offer(&mut r, s, 11, carol, kc, 1), Some(0x7001));
    assert_eq!(offer(&mut r, s, 10, bob, kb, 1), Some(0x5002));
    // Dave was named for no line: none is free.
    assert_eq!(offer(&mut r, s, 12, dave, participant_key("dave"), 1), None);
    let lines: Vec<(SessionId, u8, String)> = r
        .out
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            gateway_ring::msg::Event::Line {
                session,
                line,
                participant,
            } => Some((session, line, participant)),
            _ => None,
        })
        .collect();
    let name = |pid: ParticipantId| r.participants.name(pid).unwrap().to_string();
    assert_eq!(
        lines,
        vec![(sid(2), 1, name(carol)), (sid(2), 0, name(bob))]
    );
}

#[test]
fn a_leaving_publisher_sends_its_subscribers_a_bye() {
    let (mut r, p, s, mut client, t0) = connected();
    let mut pkt = srtp(&mut client, 102, 1, 0xabc);
    let inb = r.handle_datagram(t0, p, addr(5001), &mut pkt).unwrap();
    let mut out = vec![0u8; 1600];
    out[..inb.len].copy_from_slice(&pkt[..inb.len]);
    r.prepare_egress(t0, s, &inb, &mut out).unwrap();
    // What went out before is not looked at.
    r.out.take_transmits();
    r.remove_session(sid(1));
    let controls = r.out.take_transmits();
    assert_eq!(controls.len(), 1);
    let mut d = controls[0].data.clone();
    let m = SrtpContext::new(&keys(4)).unprotect_rtcp(&mut d).unwrap();
    let mut items = Vec::new();
    rtcp::walk(&d[..m], |f| items.push(f));
    assert_eq!(items, vec![Feedback::Bye]);
}

/// A source that sends no SR of its own (RTP ingest, RTMP, or a WebRTC
/// publisher before its first SR): players still get sender reports,
/// mapped from our clock at the track's last packet.
#[test]
fn players_get_sender_reports_without_a_publisher_sr() {
    let (mut r, p, s, mut client, t0) = connected();
    let mut pkt = srtp(&mut client, 102, 1, 0xabc);
    let inb = r.handle_datagram(t0, p, addr(5001), &mut pkt).unwrap();
    let mut out = vec![0u8; 1600];
    out[..inb.len].copy_from_slice(&pkt[..inb.len]);
    r.prepare_egress(t0, s, &inb, &mut out).unwrap();
    // What went out before is not looked at.
    r.out.take_transmits();
    let ntp = 0x1234_5678_0000_0000;
    r.tick(t0 + Duration::from_millis(500), ntp);
    let controls = r.out.take_transmits();
    let to_sub = controls.iter().find(|c| c.from == s).expect("an SR");
    let mut d = to_sub.data.clone();
    let m = SrtpContext::new(&keys(4)).unprotect_rtcp(&mut d).unwrap();
    let mut items = Vec::new();
    rtcp::walk(&d[..m], |f| items.push(f));
    let Some(Feedback::SenderReport(sr)) = items.first() else {
        panic!("{items:?}")
    };
    assert_eq!((sr.ssrc, sr.ntp, sr.packets), (0x5002, ntp, 1));
    // 0.5 s after the packet at RTP time 3000 (seq 1 x 3000), at 90 kHz.
    assert_eq!(sr.rtp_ts, 3000 + 45_000);
}

#[test]
fn consent_expiry_ends_the_session() {
    let (mut r, _, _, _, t0) = connected();
    r.tick(t0 + Duration::from_secs(10), 0);
    let mut ended = ended(&mut r.out);
    assert!(ended.is_empty());
    r.tick(
        t0 + crate::ice::lite::CONSENT_TIMEOUT + Duration::from_secs(1),
        0,
    );
    ended.extend(self::ended(&mut r.out));
    assert_eq!(ended.len(), 2);
    assert!(ended
        .iter()
        .all(|&(_, reason)| reason == EndReason::ConsentExpired));
    assert_eq!(r.session_count(), 0);
    let closed = r.out.take(|o| match o {
        Output::DtlsClosed { session } => Pick::Take(session),
        o => Pick::Keep(o),
    });
    assert_eq!(closed.len(), 2, "their DTLS state is released too");
}

/// A player's transport-cc feedback that does not parse is a counted drop
/// (`malformed`), as junk media is; the session goes on, and a good
/// feedback after it is taken.
#[test]
fn a_players_junk_transport_feedback_is_a_counted_drop() {
    let (mut r, p, s, mut client, t0) = connected();
    forward(&mut r, (p, s), &mut client, t0, 0..50);
    let mut sub_tx = SrtpContext::new(&keys(3));
    let malformed = |r: &mut Router| {
        let mut stats = Vec::new();
        r.take_dirty_stats(&mut stats, 10);
        stats
            .iter()
            .find(|x| x.session == sid(2))
            .map(|x| x.drops[DropReason::Malformed as usize])
    };
    let before = malformed(&mut r).unwrap_or(0);
    // RTPFB fmt 15 with its SSRCs and no FCI: too short for a feedback.
    let junk = [0x8f, 205, 0, 2, 0, 0, 0, 9, 0, 0, 0x50, 0x02];
    player_rtcp(&mut r, (s, &mut sub_tx), t0, |b| {
        b[..junk.len()].copy_from_slice(&junk);
        junk.len()
    });
    assert_eq!(malformed(&mut r), Some(before + 1));
    // A good one for what was sent: taken, nothing counted.
    let statuses = [rtcp_types::TwccPacketStatus::Received { delta: 4 }; 50];
    let fci = rtcp_types::Twcc::builder(0, 1, 0, &statuses, None);
    let good = rtcp_types::TransportFeedback::builder(&fci)
        .sender_ssrc(9)
        .media_ssrc(0x5002);
    player_rtcp(&mut r, (s, &mut sub_tx), t0, |b| {
        use rtcp_types::RtcpPacketWriter;
        good.write_into_unchecked(b)
    });
    assert_eq!(malformed(&mut r), Some(before + 1), "no new drop");
    forward(&mut r, (p, s), &mut client, t0, 50..60);
}
