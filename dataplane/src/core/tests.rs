//! The core driven on virtual time through its public inputs, no I/O.

use super::*;
use crate::fuzz::client::{amf, flv_avc_config, flv_video, rtmp_command, FLV_KEYFRAME, SPS};
use crate::rtmp::conn::{types, Conn};
use rml_amf0::Amf0Value;
use std::net::Ipv4Addr;

const ROOM: RoomId = crate::fuzz::ROOM;
const S1: SessionId = SessionId::new(1);

fn core() -> Core {
    // Deterministic names: 01020304, 05060708, ...
    let mut n = 0u8;
    let random = Box::new(move |b: &mut [u8]| {
        for x in b {
            n = n.wrapping_add(1);
            *x = n;
        }
    });
    Core::new(CoreConfig::harness(0, 1, random), Instant::now())
}

/// `connect` to `live`, then `cmd` (publish or play) of `key`.
fn rtmp(core: &mut Core, idx: u32, cmd: &str, key: &str) {
    core.handle_rtmp_bytes(Instant::now(), idx, &rtmp_command(cmd, key));
}

fn rtp(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 96 | if marker { 0x80 } else { 0 }];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&0x1234u32.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// The video messages queued for RTMP connection `idx`.
fn videos(core: &mut Core, idx: u32) -> Vec<Vec<u8>> {
    let q = core.rtmp_queue(idx).unwrap();
    q.take_messages()
        .into_iter()
        .filter(|m| m.type_id == types::VIDEO)
        .map(|m| m.payload.to_vec())
        .collect()
}

/// What a datagram asks for leaves in the same turn: a STUN check's
/// answer comes out of the next `poll_output`, with no timeout in
/// between (it once waited for the 250 ms tick, and every ICE and DTLS
/// round trip with it: set-up took a second). Where we are the DTLS
/// client, the first check also starts the handshake in that turn.
#[test]
fn a_check_is_answered_at_the_next_poll() {
    use gateway_ring::msg::{Direction, DtlsRole};
    for role in [DtlsRole::Server, DtlsRole::Client] {
        let mut c = core();
        let t0 = Instant::now();
        c.add_room(RoomSpec {
            room: ROOM,
            name: "r".into(),
        });
        let spec = WebrtcSpec {
            dtls_role: role,
            ..crate::fuzz::webrtc(1, Direction::Publish)
        };
        let h = c.add_webrtc(t0, spec).unwrap();
        let src = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5001);
        let mut check = crate::fuzz::check(1);
        assert!(c.handle_datagram(t0, h, src, &mut check).is_none());
        let answer = c.poll_output();
        assert!(
            matches!(&answer, Some(Output::Transmit(t)) if t.from == h && t.dest == src),
            "no answer at the next poll"
        );
        let mut started = false;
        while let Some(o) = c.poll_output() {
            started |= matches!(o, Output::DtlsStart { session: S1 });
        }
        assert_eq!(started, role == DtlsRole::Client, "{role:?}");
    }
}

/// One core routes every way on virtual time: an RTP participant's
/// video reaches the RTMP player of its name as FLV (depacketized once,
/// through the participant's stream), and an RTMP participant's push
/// comes out as RTP for the room's WebRTC side, tagged with its
/// participant; each asked for through outputs, no I/O in between.
#[test]
fn one_core_routes_rtp_to_rtmp_and_rtmp_to_rtp() {
    let mut c = core();
    let t0 = Instant::now();
    c.add_room(RoomSpec {
        room: ROOM,
        name: "r".into(),
    });
    let cam = c.add_ingest(crate::fuzz::video_ingest(1)).unwrap();
    for idx in [7, 8] {
        let mut st = ConnState::default();
        st.conn = Conn::new_after_handshake();
        c.rtmp_insert(idx, st);
    }
    rtmp(&mut c, 7, "play", "r/cam");
    let src = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000);
    let nals: [&[u8]; 3] = [&SPS, &[0x68, 0xce, 0x3c, 0x80], &[0x65, 0x88, 0x84]];
    for (i, nal) in nals.iter().enumerate() {
        let mut p = rtp(i as u16, 0, i == 2, nal);
        let inbound = c.handle_datagram(t0, cam, src, &mut p).expect("media");
        assert_eq!(c.session_id(cam), Some(S1));
        assert!(c.egresses(inbound.room).is_empty());
    }
    let mut woken = false;
    while let Some(o) = c.poll_output() {
        woken |= matches!(o, Output::Rtmp(Action::Wake(7)));
    }
    assert!(woken, "the player was woken");
    let v = videos(&mut c, 7);
    assert!(v.iter().any(|b| b[0] == 0x17 && b[1] == 0), "config: {v:?}");
    assert!(
        v.iter().any(|b| b[0] == 0x17 && b[1] == 1),
        "keyframe: {v:?}"
    );

    // bob pushes over RTMP: his video comes out as RTP, tagged as his.
    rtmp(&mut c, 8, "publish", "r/bob");
    let flv = [flv_video(&flv_avc_config()), flv_video(&FLV_KEYFRAME)].concat();
    c.handle_rtmp_bytes(t0, 8, &flv);
    let bob = c.router.participants.find(ROOM, "bob").expect("bob joined");
    let mut rtp_out = 0;
    while let Some(o) = c.poll_output() {
        if let Output::Rtp { rtp, kind } = o {
            assert_eq!((rtp.room, rtp.pid, kind), (ROOM, bob, MediaKind::Video));
            rtp_out += 1;
        }
    }
    assert!(rtp_out >= 2, "parameter sets and the IDR as RTP");
}

/// The wall clock and randomness are inputs: an RTMP client's
/// `created_ms` is the wall time the core was given at its tick plus
/// the time since, and a name it generates comes from the random source
/// it was given.
#[test]
fn wall_clock_and_randomness_come_from_outside() {
    let mut c = core();
    let t0 = Instant::now();
    // 2026-01-01T00:00:00Z, in NTP format, half a second in.
    let unix = 1_767_225_600u64;
    let ntp = ((unix + 2_208_988_800) << 32) | (1 << 31);
    assert_eq!(unix_ms(ntp), unix * 1000 + 500);
    c.handle_timeout(t0, ntp);
    c.add_room(RoomSpec {
        room: RoomId::new(1),
        name: "r".into(),
    });
    let mut st = ConnState::default();
    st.conn = Conn::new_after_handshake();
    c.rtmp_insert(8, st);
    let app = Amf0Value::Object([("app".to_string(), Amf0Value::Utf8String("live".into()))].into());
    let mut bytes = amf("connect", 1.0, vec![app]);
    bytes.extend(amf(
        "publish",
        0.0,
        vec![Amf0Value::Null, Amf0Value::Utf8String("r".into())],
    ));
    c.handle_rtmp_bytes(t0 + Duration::from_millis(250), 8, &bytes);
    let spec = std::iter::from_fn(|| c.poll_output())
        .find_map(|o| match o {
            Output::Event(Event::Rtmp(spec)) => Some(spec),
            _ => None,
        })
        .expect("the publisher announced");
    assert_eq!(spec.created_ms, unix * 1000 + 750);
    assert_eq!(spec.participant, "guest-01020304");
}

/// What an input queued anywhere in the core (the router's answer to a
/// check, the hub's events and actions for an RTMP publish, the notes
/// one part left another) is discarded when handling it panicked, and
/// what came before it still leaves.
#[test]
fn a_discarded_input_leaves_nothing_behind() {
    use gateway_ring::msg::Direction;
    let mut c = core();
    let t0 = Instant::now();
    c.add_room(RoomSpec {
        room: ROOM,
        name: "r".into(),
    });
    let h = c
        .add_webrtc(t0, crate::fuzz::webrtc(1, Direction::Publish))
        .unwrap();
    let src = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5001);
    // Before the mark: a check's answer, not yet gathered.
    c.handle_datagram(t0, h, src, &mut crate::fuzz::check(1));
    let mark = c.output_mark();
    c.handle_datagram(t0, h, src, &mut crate::fuzz::check(1));
    let mut st = ConnState::default();
    st.conn = Conn::new_after_handshake();
    c.rtmp_insert(8, st);
    rtmp(&mut c, 8, "publish", "r/bob");
    c.discard_outputs(mark);
    let mut left = Vec::new();
    while let Some(o) = c.poll_output() {
        left.push(o);
    }
    assert!(
        matches!(left[..], [Output::Transmit(ref t)] if t.from == h),
        "only the first answer: {left:?}"
    );
    // Without the discard, the same inputs leave all of it.
    let mark = c.output_mark();
    c.handle_datagram(t0, h, src, &mut crate::fuzz::check(1));
    let n = std::iter::from_fn(|| c.poll_output()).count();
    assert_eq!(n, 1, "{mark:?}");
}

/// Time is an input: stepping virtual time from deadline to deadline
/// (`poll_timeout`, then `handle_timeout` at it) is what ends a
/// WebRTC session whose consent lapsed (RFC 7675: 30 s after its last
/// check), not earlier and at most one tick late; nothing fires between
/// deadlines.
#[test]
fn consent_lapses_at_a_deadline_stepped_to() {
    use gateway_ring::msg::Direction;
    let mut c = core();
    let t0 = Instant::now();
    // A tick is due at once, and the next one a tick later.
    assert!(c.poll_timeout() <= t0, "nothing due at start");
    c.handle_timeout(t0, 0);
    assert_eq!(c.poll_timeout(), t0 + TICK_EVERY);
    c.add_room(RoomSpec {
        room: ROOM,
        name: "r".into(),
    });
    let h = c
        .add_webrtc(t0, crate::fuzz::webrtc(1, Direction::Publish))
        .unwrap();
    let src = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5001);
    let checked = t0 + Duration::from_millis(10);
    assert!(c
        .handle_datagram(checked, h, src, &mut crate::fuzz::check(1))
        .is_none());
    while c.poll_output().is_some() {}
    let lapse = checked + crate::ice::lite::CONSENT_TIMEOUT;
    let mut now = t0;
    let mut ended_at = None;
    while now < lapse + Duration::from_secs(2) {
        let due = c.poll_timeout();
        assert!(due > now, "a deadline in the past after handling it");
        // Just before the deadline nothing is due.
        c.handle_timeout(due - Duration::from_millis(1), 0);
        assert!(c.poll_output().is_none(), "fired before its deadline");
        now = due;
        c.handle_timeout(now, 0);
        while let Some(o) = c.poll_output() {
            if let Output::Event(Event::SessionEnded { session, reason }) = o {
                assert_eq!((session, reason), (S1, EndReason::ConsentExpired));
                assert!(ended_at.is_none(), "ended twice");
                ended_at = Some(now);
            }
        }
    }
    let ended_at = ended_at.expect("consent never lapsed");
    assert!(
        ended_at >= lapse && ended_at <= lapse + TICK_EVERY,
        "ended {:?} after the lapse",
        ended_at.saturating_duration_since(lapse)
    );
}

/// `poll_timeout` is the earlier of the next tick and the hub's
/// deadline (here a bridged publisher's reorder gap), and
/// `handle_timeout` runs each only when it is due: the gap is
/// re-NACKed before the tick, the tick runs at its time and not the
/// gap's give-up, which delivers the keyframe held behind the gap to
/// the RTMP player at its own deadline, with no packet after it, and
/// counts it against the ingest.
#[test]
fn poll_timeout_is_the_earlier_of_the_tick_and_a_parts_deadline() {
    use crate::reorder::{RENACK, WAIT};
    let mut c = core();
    let t0 = Instant::now();
    let ms = |m: u64| t0 + Duration::from_millis(m);
    c.handle_timeout(t0, 0);
    assert_eq!(c.poll_timeout(), t0 + TICK_EVERY, "only the tick");
    c.add_room(RoomSpec {
        room: ROOM,
        name: "r".into(),
    });
    let cam = c.add_ingest(crate::fuzz::video_ingest(1)).unwrap();
    let mut st = ConnState::default();
    st.conn = Conn::new_after_handshake();
    c.rtmp_insert(7, st);
    rtmp(&mut c, 7, "play", "r/cam");
    let src = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5000);
    let nals: [&[u8]; 3] = [&SPS, &[0x68, 0xce, 0x3c, 0x80], &[0x65, 0x88, 0x84]];
    let keyframe = |c: &mut Core, seq: u16, at: Instant| {
        for (i, nal) in nals.iter().enumerate() {
            let mut p = rtp(seq + i as u16, seq as u32 * 3000, i == 2, nal);
            c.handle_datagram(at, cam, src, &mut p).expect("media");
        }
        while c.poll_output().is_some() {}
    };
    keyframe(&mut c, 0, t0);
    assert_eq!(videos(&mut c, 7).len(), 2, "config and keyframe");
    // seq 3 lost at 200 ms: the next keyframe is held behind it.
    let gap = ms(200);
    keyframe(&mut c, 4, gap);
    assert!(videos(&mut c, 7).is_empty());
    assert_eq!(c.poll_timeout(), gap + RENACK, "the gap's, before the tick");
    c.handle_timeout(gap + RENACK, 0);
    while c.poll_output().is_some() {}
    assert_eq!(
        c.poll_timeout(),
        t0 + TICK_EVERY,
        "the tick's, before the give-up"
    );
    c.handle_timeout(t0 + TICK_EVERY, 0);
    while c.poll_output().is_some() {}
    assert!(videos(&mut c, 7).is_empty(), "the tick gave nothing up");
    assert_eq!(c.poll_timeout(), gap + WAIT);
    c.handle_timeout(gap + WAIT - Duration::from_millis(1), 0);
    assert!(c.poll_output().is_none(), "fired before its deadline");
    c.handle_timeout(gap + WAIT, 0);
    let mut woken = false;
    while let Some(o) = c.poll_output() {
        woken |= matches!(o, Output::Rtmp(Action::Wake(7)));
    }
    assert!(woken, "the player was woken");
    let v = videos(&mut c, 7);
    assert!(v.iter().any(|b| b[..2] == [0x17, 1]), "keyframe: {v:?}");
    assert_eq!(c.poll_timeout(), t0 + TICK_EVERY * 2, "the tick's again");
    let mut stats = Vec::new();
    c.take_dirty_stats(&mut stats, 16);
    let s = stats.iter().find(|s| s.session == S1).expect("counted");
    assert_eq!(s.bridge_gaps_given_up, 1);
}

use crate::fuzz::two_shards::{room_of_shard_0, TwoShards};
use crate::relay::DRAIN_BUDGET;

/// One room over two shards: its owner has the publisher, the other shard
/// a player. The player's shard watches the room once the player is
/// there; the owner announces the publisher (its name) before its first
/// packet, relays every packet, and the player's shard rewrites each for
/// its player as for a local publisher. The publisher leaving is a
/// `TrackDown` there; the player leaving ends the watch, and the owner
/// relays nothing more.
#[test]
fn one_room_over_two_shards() {
    let mut t = TwoShards::new(Instant::now(), 64);
    let now = Instant::now();
    // A room name the owner of which is shard 0.
    let name = room_of_shard_0();
    let room_name = name.clone();
    let spec = RoomSpec { room: ROOM, name };
    assert_eq!(t.cores[0].add_room(spec.clone()), Outcome::Ok);
    assert_eq!(t.cores[1].add_room(spec), Outcome::Ok);
    // Publishers belong on the owner: the replica refuses one.
    assert_eq!(
        t.cores[1].add_ingest(crate::fuzz::video_ingest(11)).err(),
        Some(Outcome::Failed)
    );
    let ingest = t.cores[0]
        .add_ingest(crate::fuzz::video_ingest(10))
        .unwrap();
    let player = t.cores[1].add_egress(crate::fuzz::egress(20)).unwrap();
    t.settle(now);
    // An RTMP player of the room's program accepted by the shard that
    // holds the replica plays there, once the owner answered.
    let mut st = ConnState::default();
    st.conn = Conn::new_after_handshake();
    t.cores[1].rtmp_insert(7, st);
    rtmp(&mut t.cores[1], 7, "play", &room_name);
    assert!(!t.cores[1].rtmp_is_set_up(7));
    t.settle(now);
    assert!(t.cores[1].rtmp_is_set_up(7));
    let handed = t.outputs[1]
        .iter()
        .any(|o| matches!(o, Output::Rtmp(Action::Handoff { .. })));
    assert!(!handed, "{:?}", t.outputs[1]);
    let src: SocketAddrV4 = "127.0.0.1:5000".parse().unwrap();
    for seq in 100..110u16 {
        let mut p = rtp(seq, seq as u32 * 3000, true, &[0x65, 1, 2, 3]);
        let inbound = t.cores[0]
            .handle_datagram(now, ingest, src, &mut p)
            .expect("media");
        let plain = p[..inbound.len].to_vec();
        t.fan_out(0, now, &inbound, &plain);
        t.settle(now);
    }
    // Every packet reached the player on the other shard, in order, on one
    // continuous output sequence.
    let seqs: Vec<u16> = t.sent[1]
        .iter()
        .filter(|(e, _)| *e == player)
        .map(|(_, p)| u16::from_be_bytes([p[2], p[3]]))
        .collect();
    assert_eq!(seqs.len(), 10, "{seqs:?}");
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0].wrapping_add(1)),
        "{seqs:?}"
    );
    assert!(t.sent[0].is_empty(), "the owner has no player of its own");
    // The publisher's participant is known by name on the player's shard.
    let cam = t.cores[1].router.participants.find(ROOM, "cam");
    assert!(cam.is_some());
    assert_ne!(
        cam,
        t.cores[0].router.participants.find(ROOM, "cam"),
        "ids are per shard"
    );

    // The publisher leaves: the player's shard forgets it, and a packet
    // still in flight from it is dropped.
    assert!(matches!(
        t.cores[0].remove_session(now, SessionId::new(10)),
        Removed::Socket(_)
    ));
    t.settle(now);
    assert!(t.cores[1].router.participants.find(ROOM, "cam").is_none());

    // A new publisher; then the player leaves: the owner stops relaying.
    let ingest = t.cores[0]
        .add_ingest(crate::fuzz::video_ingest(12))
        .unwrap();
    let mut p = rtp(7, 0, true, &[0x65]);
    let inbound = t.cores[0]
        .handle_datagram(now, ingest, src, &mut p)
        .unwrap();
    let mut announce = Vec::new();
    assert_eq!(t.cores[0].relay_targets(&inbound, &mut announce), 0b10);
    assert_eq!(
        announce.len(),
        1,
        "a new publisher is announced: {announce:?}"
    );
    t.cores[1].remove_session(now, SessionId::new(20));
    t.settle(now);
    assert_eq!(t.cores[0].relay_targets(&inbound, &mut announce), 0);
}

/// An RTMP player accepted by a shard that does not own the room plays
/// there: its shard asks the owner once, gets the stream's headers and GOP,
/// then each message as the owner's own players get it; a player of
/// someone not in the room is refused with the owner's reason; the last
/// player leaving ends the relay.
#[test]
fn an_rtmp_player_plays_another_shards_room_where_it_was_accepted() {
    let mut t = TwoShards::new(Instant::now(), 64);
    let now = Instant::now();
    let name = room_of_shard_0();
    // Only the owner has the room; the player's shard learns it from the answer.
    t.cores[0].add_room(RoomSpec {
        room: ROOM,
        name: name.clone(),
    });
    for (s, idx) in [(0, 8), (1, 7), (1, 9), (1, 10), (1, 11)] {
        let mut st = ConnState::default();
        st.conn = Conn::new_after_handshake();
        t.cores[s].rtmp_insert(idx, st);
    }
    rtmp(&mut t.cores[0], 8, "publish", &format!("{name}/bob"));
    let delta = [0x27, 1, 0, 0, 0, 0, 0, 0, 3, 0x41, 0x9a, 0x00];
    t.cores[0].handle_rtmp_bytes(now, 8, &flv_video(&flv_avc_config()));
    t.cores[0].handle_rtmp_bytes(now, 8, &flv_video(&FLV_KEYFRAME));
    t.settle(now);
    t.outputs[0].clear();

    rtmp(&mut t.cores[1], 7, "play", &format!("{name}/bob"));
    rtmp(&mut t.cores[1], 10, "play", &format!("{name}/bob"));
    rtmp(&mut t.cores[1], 9, "play", &format!("{name}/carol"));
    assert!(!t.cores[1].rtmp_is_set_up(7), "waits for the owner");
    t.settle(now);
    assert!(t.cores[1].rtmp_is_set_up(7) && t.cores[1].rtmp_is_set_up(10));
    let handed = t.outputs[1]
        .iter()
        .any(|o| matches!(o, Output::Rtmp(Action::Handoff { .. })));
    assert!(!handed, "players stay where they were accepted");
    let refused = t.outputs[1].iter().any(|o| {
        matches!(o, Output::Rtmp(Action::Close { idx: 9, why, .. }) if why.contains("no participant \"carol\""))
    });
    assert!(refused, "{:?}", t.outputs[1]);
    for idx in [7, 10] {
        let v = videos(&mut t.cores[1], idx);
        assert!(v.iter().any(|b| b[..2] == [0x17, 0]), "config: {v:?}");
        assert!(v.iter().any(|b| b[..2] == [0x17, 1]), "keyframe: {v:?}");
    }
    // A player of the room's program there: the owner makes the program
    // (it shows bob, the room's publisher) and relays it.
    rtmp(&mut t.cores[1], 11, "play", &name);
    t.settle(now);
    let v = videos(&mut t.cores[1], 11);
    assert!(
        v.iter().any(|b| b[..2] == [0x17, 1]),
        "the program's keyframe: {v:?}"
    );
    t.cores[1].rtmp_remove(now, 11);
    t.settle(now);
    // The room is a replica on the player's shard now.
    assert!(t.cores[1].router.room_by_name(&name).is_some());
    assert!(!t.cores[1].router.owns(ROOM));

    // Live media follows, once per shard, to each player there.
    t.cores[0].handle_rtmp_bytes(now, 8, &flv_video(&delta));
    let relayed = std::iter::from_fn(|| t.cores[0].poll_output())
        .filter(|o| matches!(o, Output::Relay { to: 1, .. }))
        .count();
    assert_eq!(
        relayed, 1,
        "one message to the other shard, whatever its players"
    );
    t.cores[0].handle_rtmp_bytes(now, 8, &flv_video(&delta));
    t.settle(now);
    for idx in [7, 10] {
        let v = videos(&mut t.cores[1], idx);
        assert_eq!(v.len(), 1, "the second delta frame: {v:?}");
        assert_eq!(v[0][..2], [0x27, 1]);
    }

    // Both players leave: the owner relays nothing more.
    t.cores[1].rtmp_remove(now, 7);
    t.settle(now);
    t.cores[1].rtmp_remove(now, 10);
    t.settle(now);
    t.cores[0].handle_rtmp_bytes(now, 8, &flv_video(&delta));
    let relayed = std::iter::from_fn(|| t.cores[0].poll_output())
        .filter(|o| matches!(o, Output::Relay { .. }))
        .count();
    assert_eq!(relayed, 0);

    // A request lost on the way (a full lane) costs the players who waited
    // for it, never the next: once they are gone, the next player asks again.
    let asks = |t: &mut TwoShards| {
        t.poll(now);
        let mut n = 0;
        t.links[0].drain(DRAIN_BUDGET, |_, item| {
            n += matches!(
                item,
                crate::relay::Item::Message(crate::relay::Message::FlvSubscribe { .. })
            ) as usize
        });
        n
    };
    for idx in [12, 13] {
        let mut st = ConnState::default();
        st.conn = Conn::new_after_handshake();
        t.cores[1].rtmp_insert(idx, st);
    }
    rtmp(&mut t.cores[1], 12, "play", &format!("{name}/bob"));
    assert_eq!(asks(&mut t), 1, "asked, and the request is lost");
    t.cores[1].rtmp_remove(now, 12);
    rtmp(&mut t.cores[1], 13, "play", &format!("{name}/bob"));
    assert_eq!(asks(&mut t), 1, "the next player asks again");
}
