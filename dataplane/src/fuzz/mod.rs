//! Bodies of the fuzz targets that drive a whole input path (`fuzz/`), kept
//! here so they build with the crate and run as unit tests on stable.
//!
//! Each splits the fuzzer's bytes into a sequence of inputs with a one-byte
//! header that says where the next input goes, so the engine explores
//! *sequences* (a check, then SRTP, then a NACK storm...) and not only
//! single packets. Inputs a real peer could not forge (SRTP needs the keys)
//! are protected with the peer's keys by the harness, so the fuzzer reaches
//! the code behind authentication too.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use gateway_ring::msg::{
    Codec, Direction, DtlsRole, EgressSpec, IngestSpec, MediaKind, RoomSpec, SrtpSuite, TrackSpec,
    WebrtcSpec,
};
use gateway_ring::{RoomId, SessionId};

#[cfg(test)]
pub(crate) mod client;
#[cfg(test)]
pub(crate) mod net;
pub mod two_shards;

use crate::ice::stun::{attr, Writer, BINDING_REQUEST};
use crate::router::Router;
use crate::srtp::{SrtpContext, MAX_TRAILER};
use gateway_ring::msg::SrtpKey;

const PWD: &[u8] = b"0123456789abcdef01234567";

/// The room of the UDP harnesses (also the router's tests').
pub(crate) const ROOM: RoomId = RoomId::new(1);

/// A WebRTC session of room 1 whose ICE password is `PWD` (also the router's tests').
pub(crate) fn webrtc(session: u64, direction: Direction) -> WebrtcSpec {
    WebrtcSpec {
        session: SessionId::new(session),
        room: ROOM,
        port: 0,
        direction,
        ice_ufrag: format!("srv{session}"),
        ice_pwd: String::from_utf8_lossy(PWD).into_owned(),
        remote_ufrag: "cli".into(),
        remote_fingerprint: [0; 32],
        tracks: vec![
            TrackSpec {
                kind: MediaKind::Video,
                codec: Codec::H264,
                pt: 102,
                ssrc: 0x5000 + session as u32,
                source: 0,
                audio_level: 0,
                // transport-cc negotiated: the recorder and its feedback
                // are reached (publishers only; `udp_router` swaps it for
                // REMB on some inputs).
                twcc: 3,
                abs_send_time: 0,
                // RTX negotiated: retransmissions are unwrapped.
                rtx_pt: 103,
                codecs: 0,
            },
            TrackSpec {
                kind: MediaKind::Audio,
                codec: Codec::Opus,
                pt: 111,
                ssrc: 0x6000 + session as u32,
                source: 0,
                // Audio levels negotiated: the udp_router target reaches
                // their extension parser.
                audio_level: 1,
                twcc: 3,
                abs_send_time: 0,
                rtx_pt: 0,
                codecs: 0,
            },
        ],
        video_pts: [(0, 0); 4],
        created_ms: 0,
        participant: format!("p{session}"),
        dtls_role: DtlsRole::Server,
    }
}

/// A valid ICE connectivity check from the client of WebRTC session `session`.
pub(crate) fn check(session: u64) -> Vec<u8> {
    let mut buf = vec![0u8; 200];
    let user = format!("srv{session}:cli");
    let Ok(mut w) = Writer::new(&mut buf, BINDING_REQUEST, &[session as u8; 12]) else {
        return Vec::new();
    };
    let _ = w.attribute(attr::USERNAME, user.as_bytes());
    let _ = w.attribute(attr::USE_CANDIDATE, &[]);
    let _ = w.integrity(PWD);
    let _ = w.fingerprint();
    let n = w.finish();
    buf.truncate(n);
    buf
}

/// `buf` protected in place by `protect` (SRTP or SRTCP, as a peer that
/// holds the keys would send it); false if it would not protect.
fn protect<E>(
    buf: &mut Vec<u8>,
    protect: impl FnOnce(&mut [u8], usize) -> Result<usize, E>,
) -> bool {
    let plain = buf.len();
    // Room for the tag, and SRTCP's index.
    buf.resize(plain + MAX_TRAILER + 4, 0);
    match protect(buf, plain) {
        Ok(m) => {
            buf.truncate(m);
            true
        }
        Err(_) => false,
    }
}

/// Room 1's plain RTP video ingest `session` of participant "cam" (also
/// the core's tests').
pub(crate) fn video_ingest(session: u64) -> IngestSpec {
    IngestSpec {
        session: SessionId::new(session),
        room: ROOM,
        port: 0,
        kind: MediaKind::Video,
        payload_type: 96,
        clock_rate: 90_000,
        srtp: None,
        created_ms: 0,
        participant: "cam".into(),
    }
}

/// Room 1's plain RTP egress `session` (to a discard port).
pub(crate) fn egress(session: u64) -> EgressSpec {
    EgressSpec {
        session: SessionId::new(session),
        room: ROOM,
        port: 0,
        dest_ip: [127, 0, 0, 1],
        dest_port: 9,
        srtp: None,
        created_ms: 0,
    }
}

fn key(seed: u8) -> Option<SrtpKey> {
    SrtpKey::new(SrtpSuite::AeadAes128Gcm, &[seed; 28])
}

/// The inputs of a harness whose bytes are `[op][len: u16 big-endian][len
/// bytes]`... (the last one cut short where the data ends): (op, len, body).
fn framed_inputs(data: &[u8]) -> impl Iterator<Item = (u8, u16, &[u8])> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let [op, hi, lo, tail @ ..] = rest else {
            return None;
        };
        let len = u16::from_be_bytes([*hi, *lo]);
        let (body, after) = tail.split_at((len as usize).min(tail.len()));
        rest = after;
        Some((*op, len, body))
    })
}

fn addr(port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
}

/// The body of the `udp_router` fuzz target: datagrams of every kind (STUN,
/// DTLS, SRTP, SRTCP, plain RTP/RTCP, junk) into a room with an RTP ingest,
/// an RTP egress, and a keyed WebRTC publisher and player; every packet the
/// router accepts is fanned out into a send-slot-sized buffer, as the shard
/// does. Nothing may panic, and nothing may come out larger than a slot.
///
/// Input: `[op][len][len bytes]`... where op's low 3 bits pick the path:
/// 0 raw → RTP ingest, 1 raw → publisher, 2 SRTP(payload) → publisher,
/// 3 SRTCP(payload) → player, 4 raw → player, 5 raw → egress, 6 time +
/// `len` ms and a tick, 7 raw → publisher from another address.
pub fn fuzz_udp_router(data: &[u8]) {
    let mut r = Router::default();
    let t0 = Instant::now();
    r.add_room(
        RoomSpec {
            room: ROOM,
            name: "fuzz".into(),
        },
        None,
    );
    // An odd first byte: the publisher gets REMB (abs-send-time, id 3)
    // instead of transport-cc, so the receive-side estimator is driven too.
    let mut publisher_spec = webrtc(1, Direction::Publish);
    if data.first().is_some_and(|b| b & 1 == 1) {
        for t in &mut publisher_spec.tracks {
            (t.twcc, t.abs_send_time) = (0, 3);
        }
    }
    let (Ok(ingest), Ok(egress), Ok(publisher), Ok(player)) = (
        r.add_ingest(video_ingest(10)),
        r.add_egress(egress(11)),
        r.add_webrtc(t0, publisher_spec),
        r.add_webrtc(t0, webrtc(2, Direction::Subscribe)),
    ) else {
        return;
    };
    for (h, session, port) in [(publisher, 1, 5001), (player, 2, 5002)] {
        r.handle_datagram(t0, h, addr(port), &mut check(session));
    }
    let (Some(k1), Some(k2), Some(k3), Some(k4)) = (key(1), key(2), key(3), key(4)) else {
        return;
    };
    r.install_keys(t0, SessionId::new(1), &k1, &k2);
    r.install_keys(t0, SessionId::new(2), &k3, &k4);
    let mut pub_tx = SrtpContext::new(&k1);
    let mut player_tx = SrtpContext::new(&k3);
    let egresses = [egress, player];
    let mut now = t0;
    let mut slot = vec![0u8; crate::rtp::MAX_PACKET + MAX_TRAILER];
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = (*len as usize * 8).min(tail.len());
        let (body, after) = tail.split_at(n);
        rest = after;
        let mut buf = body.to_vec();
        let (h, from) = match op & 15 {
            0 => (ingest, addr(6000)),
            1 => (publisher, addr(5001)),
            2 => {
                if !protect(&mut buf, |b, n| pub_tx.protect_rtp(b, n)) {
                    continue;
                }
                (publisher, addr(5001))
            }
            3 => {
                if !protect(&mut buf, |b, n| player_tx.protect_rtcp(b, n)) {
                    continue;
                }
                (player, addr(5002))
            }
            4 => (player, addr(5002)),
            5 => (egress, addr(9)),
            6 => {
                now += Duration::from_millis(*len as u64);
                r.tick(now, 0);
                continue;
            }
            8 => {
                // An RTMP publisher's RTP (kept for NACKs and GOP replays)
                // fanned out to the player, as the core does.
                if buf.len() > crate::rtp::MAX_PACKET {
                    continue;
                }
                let rtp = crate::media::RtpFromRtmp {
                    room: ROOM,
                    pid: crate::participants::ParticipantId::new(9),
                    key: 0,
                    packet: bytes::Bytes::from(buf.clone()),
                    codec: crate::codec::VideoCodec::H264,
                    transcoded_from: None,
                };
                let Some(inbound) = rtp.inbound(MediaKind::Video) else {
                    continue;
                };
                r.cache_rtmp_video(now, &rtp);
                slot[..buf.len()].copy_from_slice(&buf);
                if let Some((m, _)) = r.prepare_egress(now, player, &inbound, &mut slot) {
                    assert!(m <= slot.len());
                }
                continue;
            }
            _ => (publisher, addr(5999)),
        };
        if let Some(inbound) = r.handle_datagram(now, h, from, &mut buf) {
            assert!(inbound.len <= crate::rtp::MAX_PACKET && inbound.len <= buf.len());
            for &e in &egresses {
                slot[..inbound.len].copy_from_slice(&buf[..inbound.len]);
                if let Some((m, _)) = r.prepare_egress(now, e, &inbound, &mut slot) {
                    assert!(m <= slot.len());
                }
            }
        }
        // Datagrams go back to the pool, as the shard gives them back.
        while let Some(o) = r.out.pop() {
            if let crate::output::Output::Transmit(c) = o {
                r.recycle(c.data);
            }
        }
        r.out.take_notes();
    }
}

/// The body of the `dtls_client` fuzz target: datagrams to a session where
/// we are the DTLS client, after its ClientHello. A genuine server (our
/// server-role endpoints, holding the certificate the client expects)
/// answers the client's real flights at once, and the fuzzer decides what
/// becomes of its answers: delivered, corrupted, lost or late; and sends
/// datagrams of its own. So it reaches every state of the client's
/// handshake, not only its first parse. Nothing may panic; keys come at
/// most once, and only the ones the server holds, crosswise.
///
/// Input: `[op][len: u16 big-endian]`... where op % 4 is 0 for the `len`
/// bytes that follow as a datagram to the client, 1 for the server's next
/// datagram with the `len` bytes that follow XORed over its start, 2 for
/// time + `len` ms (both sides' timers), 3 to lose the server's next
/// datagram. Returns whether the client finished (the unit test's proof
/// that the harness gets there).
pub fn fuzz_dtls_client(data: &[u8]) -> bool {
    use crate::dtls::{DtlsIdentity, Endpoints, FromDtls, ToDtls};
    use std::collections::VecDeque;
    use std::sync::OnceLock;
    // Made once: two certificates cost more than a run.
    static IDENTITIES: OnceLock<Option<(DtlsIdentity, DtlsIdentity)>> = OnceLock::new();
    let made = IDENTITIES.get_or_init(|| {
        Some((
            DtlsIdentity::generate().ok()?,
            DtlsIdentity::generate().ok()?,
        ))
    });
    let Some((ours, theirs)) = made else {
        return false;
    };
    const SESSION: SessionId = SessionId::new(1);
    let datagram = |data| ToDtls::Datagram {
        session: SESSION,
        data,
    };
    let mut now = Instant::now();
    let mut client = Endpoints::new(ours.clone());
    let mut server = Endpoints::new(theirs.clone());
    let (mut out, mut server_out) = (Vec::new(), Vec::new());
    let open = |fingerprint, role| ToDtls::Open {
        session: SESSION,
        fingerprint,
        role,
    };
    client.handle(now, open(theirs.fingerprint, DtlsRole::Client), &mut out);
    server.handle(now, open(ours.fingerprint, DtlsRole::Server), &mut out);
    client.handle(now, ToDtls::Start { session: SESSION }, &mut out);
    let mut from_server = VecDeque::new();
    let (mut client_keys, mut server_keys) = (Vec::new(), None);
    let mut rest = data;
    loop {
        // The client's records reach the server at once; its answers wait
        // for the fuzzer.
        for m in out.drain(..) {
            match m {
                FromDtls::Send { data, .. } => server.handle(now, datagram(data), &mut server_out),
                FromDtls::Keys { rx, tx, .. } => client_keys.push((rx, tx)),
                FromDtls::Failed { .. } => {}
            }
        }
        for m in server_out.drain(..) {
            match m {
                FromDtls::Send { data, .. } => from_server.push_back(data),
                FromDtls::Keys { rx, tx, .. } => server_keys = Some((tx, rx)),
                FromDtls::Failed { .. } => {}
            }
        }
        let [op, hi, lo, tail @ ..] = rest else {
            break;
        };
        let len = u16::from_be_bytes([*hi, *lo]);
        let body_len = if op % 4 < 2 { len as usize } else { 0 };
        let (body, after) = tail.split_at(body_len.min(tail.len()));
        rest = after;
        match op % 4 {
            0 => client.handle(now, datagram(body.to_vec()), &mut out),
            1 => {
                if let Some(mut d) = from_server.pop_front() {
                    for (b, x) in d.iter_mut().zip(body) {
                        *b ^= x;
                    }
                    client.handle(now, datagram(d), &mut out);
                }
            }
            2 => {
                now += Duration::from_millis(len as u64);
                client.handle_timeouts(now, &mut out);
                server.handle_timeouts(now, &mut server_out);
            }
            _ => {
                from_server.pop_front();
            }
        }
    }
    match client_keys.as_slice() {
        [] => false,
        [keys] => {
            assert_eq!(Some(*keys), server_keys, "the client's keys, crosswise");
            true
        }
        _ => panic!("keys exported {} times", client_keys.len()),
    }
}

/// A room registry for [`fuzz_rtmp_hub`]: one room on this shard, created
/// by the first publish; tokens always pass.
struct FuzzRooms(Option<RoomId>, crate::participants::Participants);

impl crate::hub::Rooms for FuzzRooms {
    fn place(&self, name: &str) -> crate::hub::Place {
        match (name, self.0) {
            ("fuzz", Some(id)) => crate::hub::Place::Local(id),
            ("far", _) => crate::hub::Place::Remote(1),
            _ => crate::hub::Place::Missing,
        }
    }
    fn authorize(&self, _: &str, _: bool, _: Option<&str>) -> Result<Option<String>, String> {
        Ok(None)
    }
    fn participants(&mut self) -> &mut crate::participants::Participants {
        &mut self.1
    }
    fn random(&mut self) -> [u8; 4] {
        [0; 4]
    }
    fn create(&mut self, name: &str) -> Option<RoomId> {
        (name == "fuzz").then(|| *self.0.get_or_insert(RoomId::new(7)))
    }
}

/// The body of the `rtmp_hub` fuzz target: the byte streams of three RTMP
/// connections (past the handshake) through one shard's hub: commands,
/// publish and play, FLV media through the GOP cache, the packetizer for
/// WebRTC and every player's queue, and RTP video bridged the other way;
/// the hub's deadlines (reorder gaps, slow players, idle programs) fire as
/// time passes (10 ms per RTP packet).
///
/// Input: `[op][len][len bytes]`...: op % 8 is 3 for RTP video of the
/// room's (WebRTC) publisher (`len` bytes of payload), 4 for an active
/// speaker change (to participant id `bytes[0] % 8`), 5 for AAC tags of a
/// program's mix from the transcoder (program `bytes[0] % 8`, the rest
/// split into tags at every 0xff), 6 for bytes of connection 3 (an
/// HTTP-FLV client), anything else for connection op % 3.
pub fn fuzz_rtmp_hub(data: &[u8]) {
    use crate::hub::{ConnState, Hub};
    use crate::output::{Action, Note, Outputs};
    use crate::participants::Kinds;
    use crate::rtmp::conn::Conn;
    let mut hub = Hub::new(true, 0);
    // B-frame pushes take the re-encode path (its answers echoed below).
    hub.bframe_reencodes = 1;
    // VP8, VP9 and AV1 take the transcode path (its jobs queued).
    hub.video_transcodes = 1;
    let mut rooms = FuzzRooms(None, Default::default());
    let mut web = None;
    let mut actions = Outputs::default();
    for idx in 0..3 {
        let mut st = ConnState::default();
        st.conn = Conn::new_after_handshake();
        hub.insert(idx, st);
    }
    hub.insert(3, ConnState::http_flv());
    let t0 = Instant::now();
    let mut seq = 0u16;
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = (*len as usize * 8).min(tail.len());
        let (body, after) = tail.split_at(n);
        rest = after;
        let now = t0 + Duration::from_millis(seq as u64 * 10);
        match op % 8 {
            4 => {
                let room = rooms.0.unwrap_or(RoomId::new(7));
                let pid = body.first().map_or(0, |b| (b % 8) as u32);
                let pid = crate::participants::ParticipantId::new(pid);
                hub.speaker_changed(now, room, pid, &mut rooms.1);
            }
            5 => {
                let id = body.first().map_or(0, |b| (b % 8) as u64);
                let tags = body.get(1..).unwrap_or(&[]);
                let tags = tags.split(|&b| b == 0xff).map(<[u8]>::to_vec).collect();
                hub.on_mix(now, id, tags, &mut actions);
            }
            3 => {
                seq = seq.wrapping_add(1);
                // A WebRTC publisher "web" of the room, from its first packet.
                let room = rooms.0.unwrap_or(RoomId::new(7));
                let web = *web.get_or_insert_with(|| {
                    let pid = rooms.1.join(room, "web");
                    let _ = rooms.1.publish(pid, Kinds::BOTH, false);
                    pid
                });
                if !hub.wants_rtp(now, web, &rooms.1) {
                    continue;
                }
                // Bits 3-4 of the op: the codec (0, most seeds: H264).
                let codec = crate::codec::VideoCodec::ALL[(op >> 3) as usize & 3];
                hub.on_rtp_video(
                    now,
                    web,
                    codec,
                    (crate::media::Source::Session(SessionId::new(1)), 1),
                    None,
                    seq,
                    seq as u32 * 3000,
                    op & 0x80 != 0,
                    body,
                    &mut actions,
                );
            }
            6 => hub.on_bytes(now, 3, body, &mut rooms, &mut actions),
            op => hub.on_bytes(now, (op % 3) as u32, body, &mut rooms, &mut actions),
        }
        // Deadlines passed fire as the shard fires them, and leave none due.
        if hub.poll_timeout().is_some_and(|t| t <= now) {
            hub.handle_timeout(now, &rooms.1, &mut actions);
            assert!(hub.poll_timeout().is_none_or(|t| t > now), "still due");
        }
        actions.append(&mut hub.out);
        for a in actions.take_actions() {
            if let Action::Close { idx, .. } | Action::Handoff { idx, .. } = a {
                hub.remove(now, idx, &mut rooms.1);
            }
        }
        for idx in 0..4 {
            if let Some(q) = hub.queue(idx) {
                // Control output and config within their bound; media up to
                // the soft limit and the one message that crossed it.
                assert!(q.bytes() <= q.max_unread + crate::rtmp::chunk::MAX_MESSAGE);
                let n = q.front().map_or(0, |b| b.len());
                q.consumed(n);
            }
        }
        // The re-encode thread's answer, as if it gave each frame back as
        // it came: whatever a publisher sent reaches the packetizer.
        actions.append(&mut hub.out);
        for job in actions.take_jobs() {
            if let crate::transcode::Job::Video { stream, ms, flv } = job {
                hub.on_reencoded(stream, vec![(ms, flv)]);
            }
        }
        actions.append(&mut hub.out);
        for note in actions.take_notes() {
            if let Note::RtmpVideo(p) = note {
                assert!(p.packet.len() <= 12 + crate::codec::RTP_PAYLOAD);
            }
        }
        actions = Outputs::default();
    }
}

/// The body of the `core` fuzz target: one room core driven as the shard
/// drives it, through its public inputs only: datagrams to a WebRTC
/// publisher and player (keyed SRTP, so media gets past authentication),
/// an RTP ingest and egress; bytes of three RTMP connections and an
/// HTTP-FLV one; transcoder results; commands that remove and re-add
/// sessions and the room; time stepped to the core's deadlines. Every
/// output is carried out the way the shard does (media fanned out into
/// send-slot-sized buffers, RTMP queues read, closed connections taken
/// out). Nothing may panic, and nothing may come out larger than a slot.
///
/// Input: `[op][len: u16 big-endian][len bytes]`...: op % 16 is 0 raw → RTP ingest, 1
/// raw → publisher, 2 SRTP(payload) → publisher, 3 SRTCP(payload) →
/// player, 4 raw → player, 5 time + `len` ms (to the next deadline if that
/// is sooner), 6-9 bytes of connection op - 6 (9: HTTP-FLV), 10 AAC tags
/// for participant `bytes[0] % 8` (split at 0xff), 11 a level for it, 12
/// remove session `bytes[0] % 16`, 13 remove the room and make it again
/// with its sessions, anything else raw → publisher from another address.
/// Returns how far it got (the unit test's proof that the harness reaches
/// the fan-out and both bridges).
pub fn fuzz_core(data: &[u8]) -> CoreReach {
    use crate::core::{Core, CoreConfig};
    use crate::hub::ConnState;
    use crate::output::Action;
    use crate::output::Output;
    use crate::rtmp::conn::Conn;
    use crate::transcode::Done;

    let t0 = Instant::now();
    let mut core = Core::new(
        CoreConfig::harness(0, 1, Box::new(|b: &mut [u8]| b.fill(0))),
        t0,
    );
    let (Some(k1), Some(k2), Some(k3), Some(k4)) = (key(1), key(2), key(3), key(4)) else {
        return CoreReach::default();
    };
    // Room 1 and its UDP sessions; again after op 13 removed them.
    let setup = |core: &mut Core, now: Instant| {
        core.add_room(RoomSpec {
            room: ROOM,
            name: "fuzz".into(),
        });
        let ingest = core.add_ingest(video_ingest(10));
        let egress = core.add_egress(egress(11));
        let publisher = core.add_webrtc(now, webrtc(1, Direction::Publish));
        let player = core.add_webrtc(now, webrtc(2, Direction::Subscribe));
        let (Ok(ingest), Ok(_), Ok(publisher), Ok(player)) = (ingest, egress, publisher, player)
        else {
            return None;
        };
        for (h, session, port) in [(publisher, 1, 5001), (player, 2, 5002)] {
            core.handle_datagram(now, h, addr(port), &mut check(session));
        }
        core.handle_dtls_keys(now, SessionId::new(1), &k1, &k2);
        core.handle_dtls_keys(now, SessionId::new(2), &k3, &k4);
        Some((ingest, publisher, player))
    };
    let mut reach = CoreReach::default();
    let Some((mut ingest, mut publisher, mut player)) = setup(&mut core, t0) else {
        return reach;
    };
    let connect = |core: &mut Core| {
        for idx in 0..3 {
            let mut st = ConnState::default();
            st.conn = Conn::new_after_handshake();
            core.rtmp_insert(idx, st);
        }
        core.rtmp_insert(3, ConnState::http_flv());
    };
    connect(&mut core);
    let mut pub_tx = SrtpContext::new(&k1);
    let mut player_tx = SrtpContext::new(&k3);
    let mut slot = vec![0u8; crate::rtp::MAX_PACKET + MAX_TRAILER];
    let mut now = t0;
    for (op, len, body) in framed_inputs(data) {
        let mut buf = body.to_vec();
        let first = body.first().copied().unwrap_or(0);
        let datagram = match op % 16 {
            0 => Some((ingest, addr(6000))),
            1 => Some((publisher, addr(5001))),
            2 => {
                if !protect(&mut buf, |b, n| pub_tx.protect_rtp(b, n)) {
                    continue;
                }
                Some((publisher, addr(5001)))
            }
            3 => {
                if !protect(&mut buf, |b, n| player_tx.protect_rtcp(b, n)) {
                    continue;
                }
                Some((player, addr(5002)))
            }
            4 => Some((player, addr(5002))),
            5 => {
                now = (now + Duration::from_millis(len as u64)).min(core.poll_timeout().max(now));
                core.handle_timeout(now, 0);
                None
            }
            op @ 6..=9 => {
                core.handle_rtmp_bytes(now, (op - 6) as u32, body);
                None
            }
            10 => {
                let tags = body.get(1..).unwrap_or(&[]);
                let tags = tags.split(|&b| b == 0xff).map(<[u8]>::to_vec).collect();
                let stream = crate::participants::ParticipantId::new((first % 8) as u32);
                core.handle_transcoded(
                    now,
                    Done::Aac {
                        stream,
                        rtp_ts: 0,
                        tags,
                    },
                );
                None
            }
            11 => {
                let stream = crate::participants::ParticipantId::new((first % 8) as u32);
                let level = body.get(1).copied().unwrap_or(0) % 128;
                core.handle_transcoded(now, Done::Level { stream, level });
                None
            }
            12 => {
                core.remove_session(now, SessionId::new((first % 16) as u64));
                None
            }
            13 => {
                core.remove_room(now, ROOM);
                while core.poll_output().is_some() {}
                let Some(made) = setup(&mut core, now) else {
                    return reach;
                };
                (ingest, publisher, player) = made;
                connect(&mut core);
                None
            }
            _ => Some((publisher, addr(5999))),
        };
        if let Some((h, from)) = datagram {
            if let Some(inbound) = core.handle_datagram(now, h, from, &mut buf) {
                assert!(inbound.len <= crate::rtp::MAX_PACKET && inbound.len <= buf.len());
                let egresses = core.egresses(inbound.room).to_vec();
                for e in egresses {
                    slot[..inbound.len].copy_from_slice(&buf[..inbound.len]);
                    if let Some((m, _)) = core.prepare_egress(now, e, &inbound, &mut slot) {
                        assert!(m <= slot.len());
                        reach.fanned_out += 1;
                    }
                }
            }
        }
        // The shard's side of the outputs.
        while let Some(o) = core.poll_output() {
            match o {
                Output::Transmit(c) => {
                    assert!(c.data.len() <= slot.len());
                    core.recycle(c.data);
                }
                Output::Rtp { rtp, kind } => {
                    reach.rtp_from_rtmp += 1;
                    let Some(inbound) = rtp.inbound(kind) else {
                        continue;
                    };
                    for e in core.egresses(inbound.room).to_vec() {
                        let m = rtp.packet.len();
                        assert!(m <= crate::rtp::MAX_PACKET);
                        slot[..m].copy_from_slice(&rtp.packet);
                        if let Some((m, _)) = core.prepare_egress(now, e, &inbound, &mut slot) {
                            assert!(m <= slot.len());
                        }
                    }
                }
                Output::Rtmp(Action::Close { idx, .. } | Action::Handoff { idx, .. }) => {
                    core.rtmp_remove(now, idx);
                }
                Output::Rtmp(Action::Wake(idx)) => {
                    reach.rtmp_woken += 1;
                    if let Some(q) = core.rtmp_queue(idx) {
                        assert!(q.bytes() <= q.max_unread + crate::rtmp::chunk::MAX_MESSAGE);
                        let n = q.front().map_or(0, |b| b.len());
                        q.consumed(n);
                    }
                }
                _ => {}
            }
        }
    }
    reach
}

/// What [`fuzz_core`] reached.
#[derive(Debug, Default, Clone, Copy)]
pub struct CoreReach {
    /// Packets a WebRTC publisher or RTP ingest sent, prepared for an egress.
    pub fanned_out: usize,
    /// RTP an RTMP publisher's media became.
    pub rtp_from_rtmp: usize,
    /// Times an RTMP or HTTP-FLV player had bytes to send.
    pub rtmp_woken: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Structured input for [`fuzz_core`]: SRTP video from the WebRTC
    /// publisher, then an RTMP push (connection 0) that an RTMP player
    /// (connection 1) plays.
    fn core_input() -> Vec<u8> {
        use client::{flv_avc_config, flv_video, framed, rtmp_command, FLV_KEYFRAME};
        let mut input = Vec::new();
        let mut rtp = vec![0x80, 102, 0, 1, 0, 0, 0, 1, 0, 0, 0x50, 0x01];
        rtp.extend_from_slice(&[0x65; 100]);
        framed(&mut input, 2, &rtp);
        framed(&mut input, 6, &rtmp_command("publish", "fuzz/bob"));
        framed(&mut input, 7, &rtmp_command("play", "fuzz/bob"));
        let flv = [flv_video(&flv_avc_config()), flv_video(&FLV_KEYFRAME)].concat();
        framed(&mut input, 6, &flv);
        input
    }

    /// The harnesses themselves reach deep: checks, keyed media that fans
    /// out, and RTCP from the player; and junk in every slot is harmless.
    #[test]
    fn the_harnesses_run_on_structured_and_junk_input() {
        let mut rtp = vec![0x80, 102, 0, 1, 0, 0, 0, 1, 0, 0, 0xab, 0xcd];
        rtp.extend_from_slice(&[0x65; 100]);
        let mut input = vec![2, (rtp.len() / 8) as u8];
        input.extend_from_slice(&rtp[..(rtp.len() / 8) * 8]);
        let mut nack = vec![0u8; 16];
        let n = crate::rtcp::write_nack(&mut nack, 9, 0x5002, 1, 0xffff);
        input.extend_from_slice(&[3, (n / 8) as u8]);
        input.extend_from_slice(&nack[..(n / 8) * 8]);
        input.extend_from_slice(&[6, 200]);
        fuzz_udp_router(&input);
        let junk = client::junk(0x2545_f491_4f6c_dd1d, 20_000);
        fuzz_udp_router(&junk);
        fuzz_rtmp_hub(&junk);
        fuzz_core(&junk);
        // The DTLS client: the genuine server's answers delivered as they
        // are finish the handshake, also after a lost flight and its
        // retransmission; junk and corrupted answers do not.
        let deliver = [1, 0, 0].repeat(12);
        assert!(fuzz_dtls_client(&deliver));
        let lost = [&[3, 0, 0, 2, 0x07, 0xd0][..], &deliver].concat();
        assert!(fuzz_dtls_client(&lost));
        let corrupted: Vec<u8> = [1, 0, 40].into_iter().chain([0x55; 40]).collect();
        assert!(!fuzz_dtls_client(&[&corrupted[..], &deliver].concat()));
        assert!(!fuzz_dtls_client(&junk));
        for w in junk.chunks(300) {
            fuzz_dtls_client(w);
            crate::rtcp::fuzz_walk(w);
            crate::bwe::fuzz_feedback(w);
            crate::srtp::fuzz_unprotect(w);
            crate::codec::h264::fuzz_config(w);
        }
        // The core: keyed media fans out, an RTMP push becomes RTP, and
        // its RTMP player is woken.
        let reach = fuzz_core(&core_input());
        assert!(reach.fanned_out >= 2, "{reach:?}");
        assert!(reach.rtp_from_rtmp >= 2, "{reach:?}");
        assert!(reach.rtmp_woken >= 1, "{reach:?}");
        let mut sps_pps = vec![5, 0x67, 0x42, 0, 0x1f, 0xe0, 0x68, 0xce];
        crate::codec::h264::fuzz_config(&sps_pps);
        sps_pps[0] = 2;
        crate::codec::h264::fuzz_config(&sps_pps);
    }
}
