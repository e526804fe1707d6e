//! Every message round-trips, and corrupt slots decode to errors.

use super::*;

fn key() -> SrtpKey {
    SrtpKey::new(SrtpSuite::AesCm128HmacSha1_80, &[9; 30]).unwrap()
}

fn samples() -> (Vec<Command>, Vec<Event>) {
    // Longest fields: the size check below covers the worst case.
    let webrtc = WebrtcSpec {
        session: SessionId::new(u64::MAX),
        room: RoomId::new(3),
        port: 40010,
        direction: Direction::Subscribe,
        ice_ufrag: "u".repeat(MAX_UFRAG),
        ice_pwd: "p".repeat(MAX_PWD),
        remote_ufrag: "r".repeat(MAX_UFRAG),
        remote_fingerprint: [0xfe; 32],
        tracks: (0..MAX_TRACKS as u32)
            .map(|i| TrackSpec {
                kind: if i % 2 == 0 {
                    MediaKind::Video
                } else {
                    MediaKind::Audio
                },
                codec: if i % 2 == 0 {
                    Codec::VIDEO[i as usize / 2 % 4]
                } else {
                    Codec::Opus
                },
                pt: 100 + i as u8,
                ssrc: 0xdead_0000 + i,
                source: u32::MAX - i,
                audio_level: i as u8,
                twcc: (i as u8).wrapping_mul(3),
                abs_send_time: (i as u8).wrapping_mul(5),
                rtx_pt: 96 + i as u8,
                codecs: 0x1e,
            })
            .collect(),
        video_pts: [(96, 97), (98, 99), (100, 101), (45, 46)],
        created_ms: 1,
        participant: "q".repeat(MAX_NAME),
        dtls_role: DtlsRole::Client,
    };
    let ingest = IngestSpec {
        session: SessionId::new(7),
        room: RoomId::new(3),
        port: 40002,
        kind: MediaKind::Audio,
        payload_type: 111,
        clock_rate: 48000,
        srtp: Some(key()),
        created_ms: 1_700_000_000_000,
        participant: "alice".into(),
    };
    let egress = EgressSpec {
        session: SessionId::new(u64::MAX),
        room: RoomId::new(3),
        port: 40003,
        dest_ip: [127, 0, 0, 1],
        dest_port: 5004,
        srtp: SrtpKey::new(SrtpSuite::AeadAes128Gcm, &[1; 28]),
        created_ms: 5,
    };
    let room = RoomSpec {
        room: RoomId::dataplane(1, 3),
        name: "x".repeat(MAX_NAME),
    };
    let cmds = vec![
        Command::CreateRoom(room.clone()),
        Command::DeleteRoom {
            room: RoomId::new(3),
        },
        Command::CreateIngest(ingest.clone()),
        Command::CreateEgress(egress.clone()),
        Command::CreateWebrtc(webrtc.clone()),
        Command::DeleteSession {
            session: SessionId::rtmp(1, 9),
        },
        Command::Resync,
    ];
    let evts = vec![
        Event::Done {
            request: Request::CreateIngest(SessionId::new(7)),
            outcome: Outcome::PortInUse,
        },
        Event::Done {
            request: Request::DeleteRoom(RoomId::new(u32::MAX)),
            outcome: Outcome::NotFound,
        },
        Event::Room(room),
        Event::Ingest(ingest),
        Event::Egress(egress),
        Event::Webrtc(webrtc),
        Event::Rtmp(RtmpSpec {
            session: SessionId::rtmp(2, 5),
            room: RoomId::dataplane(2, 1),
            direction: Direction::Publish,
            peer_ip: [127, 0, 0, 1],
            peer_port: 50_000,
            created_ms: 9,
            participant: "bob".into(),
        }),
        Event::Shard(ShardStats {
            shard: 1,
            turns: [1, 2, 3, 4, 5, 6, 7, 8],
            busy_us: 99,
            udp_sends: 10,
            udp_datagrams: 30,
            limits: [31, 32, 33, 34, 35, 37, 38, 39],
            panics: 36,
        }),
        Event::ResyncDone { epoch: 4 },
        Event::Stats(SessionStats {
            session: SessionId::new(1),
            packets: 2,
            bytes: 3,
            drops: [4, 5, 6, 7, 8, 9, 10, 11, 14, 15, 16],
            retransmits: 12,
            keyframe_requests: 13,
            bridge_gaps_filled: 17,
            bridge_gaps_given_up: 18,
            estimate_bps: 19,
            video_pauses: 20,
        }),
        Event::SessionEnded {
            session: SessionId::new(1),
            reason: EndReason::DtlsFailed,
        },
        Event::Line {
            session: SessionId::new(1),
            line: 3,
            participant: "carol".into(),
        },
        Event::Speaker {
            room: RoomId::new(3),
            participant: "dave".into(),
        },
        Event::MediaWarning {
            session: SessionId::new(9),
            what: "audio: MP3 (FLV sound format 2)".into(),
        },
    ];
    (cmds, evts)
}

#[test]
fn every_message_round_trips() {
    let (cmds, evts) = samples();
    let mut slot = [0u8; SLOT_SIZE];
    for c in cmds {
        c.encode(&mut slot);
        assert_eq!(Command::decode(&slot), Ok(c));
    }
    for e in evts {
        e.encode(&mut slot);
        assert_eq!(Event::decode(&slot), Ok(e));
    }
}

#[test]
fn wrong_version_tag_and_values_are_errors() {
    let mut slot = [0u8; SLOT_SIZE];
    Command::Resync.encode(&mut slot);
    slot[0] = MSG_VERSION + 1;
    assert_eq!(
        Command::decode(&slot),
        Err(DecodeError::Version(MSG_VERSION + 1))
    );
    slot[0] = MSG_VERSION;
    slot[1] = 200;
    assert_eq!(Command::decode(&slot), Err(DecodeError::Tag(200)));
    let (cmds, _) = samples();
    cmds[2].encode(&mut slot);
    slot[2 + 8 + 4 + 2] = 7; // media kind
    assert_eq!(
        Command::decode(&slot),
        Err(DecodeError::Value("media kind"))
    );
    assert_eq!(Command::decode(&slot[..5]), Err(DecodeError::UnexpectedEnd));
}

/// The role is the WebRTC spec's last byte, 0 for the server: the
/// largest spec ends where the size comments say, and a server-role
/// session encodes as it did before the field (but for the version).
#[test]
fn dtls_role_is_the_last_byte_of_a_webrtc_spec() {
    let (cmds, _) = samples();
    let Command::CreateWebrtc(client) = &cmds[4] else {
        panic!("samples()[4] is the WebRTC session");
    };
    assert_eq!(client.dtls_role, DtlsRole::Client);
    let mut slot = [0u8; SLOT_SIZE];
    cmds[4].encode(&mut slot);
    assert_eq!(slot.iter().rposition(|&b| b != 0), Some(486));
    assert_eq!(slot[486], DtlsRole::Client as u8);
    let server = WebrtcSpec {
        dtls_role: DtlsRole::Server,
        ..client.clone()
    };
    let mut server_slot = [0u8; SLOT_SIZE];
    Command::CreateWebrtc(server.clone()).encode(&mut server_slot);
    assert_eq!(server_slot[..486], slot[..486]);
    assert_eq!(server_slot[486], 0);
    assert_eq!(
        Command::decode(&server_slot),
        Ok(Command::CreateWebrtc(server))
    );
    slot[486] = 2;
    assert_eq!(Command::decode(&slot), Err(DecodeError::Value("DTLS role")));
}

/// The ids keep the wire bytes they had as integers, and the ranges
/// the dataplane gives them from survive a trip through the ring.
#[test]
fn ids_round_trip_through_the_ring_in_their_old_bytes() {
    let mut slot = [0u8; SLOT_SIZE];
    let spec = RtmpSpec {
        session: SessionId::rtmp(3, 77),
        room: RoomId::dataplane(3, 2),
        direction: Direction::Subscribe,
        peer_ip: [10, 0, 0, 1],
        peer_port: 1935,
        created_ms: 1,
        participant: "p".into(),
    };
    Event::Rtmp(spec.clone()).encode(&mut slot);
    assert_eq!(slot[2..10], spec.session.get().to_le_bytes());
    assert_eq!(slot[10..14], spec.room.get().to_le_bytes());
    assert_eq!(slot[14], 0, "play: the publish flag's 0");
    let Ok(Event::Rtmp(back)) = Event::decode(&slot) else {
        panic!("an RtmpSpec decodes");
    };
    assert_eq!(back, spec);
    assert!(back.session.is_rtmp() && back.room.is_dataplane());

    let ingest = IngestSpec {
        session: SessionId::new(12),
        room: RoomId::new(4),
        port: 40000,
        kind: MediaKind::Video,
        payload_type: 96,
        clock_rate: 90_000,
        srtp: None,
        created_ms: 0,
        participant: "cam".into(),
    };
    Command::CreateIngest(ingest.clone()).encode(&mut slot);
    let Ok(Command::CreateIngest(back)) = Command::decode(&slot) else {
        panic!("an IngestSpec decodes");
    };
    assert_eq!(back, ingest);
    assert!(!back.session.is_rtmp() && !back.room.is_dataplane());

    // Done: the command's tag and the id as a u64, as `what` and `id` were.
    let done = Event::Done {
        request: Request::CreateRoom(RoomId::dataplane(0, 1)),
        outcome: Outcome::Ok,
    };
    done.encode(&mut slot);
    assert_eq!(slot[2], Command::TAG_CREATE_ROOM);
    assert_eq!(slot[3..11], 0x8000_0001u64.to_le_bytes());
    assert_eq!(Event::decode(&slot), Ok(done));
    slot[7] = 1; // a room id over 32 bits
    assert_eq!(Event::decode(&slot), Err(DecodeError::Value("room id")));
    slot[2] = Command::TAG_RESYNC;
    assert_eq!(
        Event::decode(&slot),
        Err(DecodeError::Value("answered command"))
    );
}

/// Each command's `Done` answers what the command named.
#[test]
fn every_command_but_resync_names_its_request() {
    let (cmds, _) = samples();
    let requests: Vec<Option<Request>> = cmds.iter().map(Command::request).collect();
    assert_eq!(
        requests,
        [
            Some(Request::CreateRoom(RoomId::dataplane(1, 3))),
            Some(Request::DeleteRoom(RoomId::new(3))),
            Some(Request::CreateIngest(SessionId::new(7))),
            Some(Request::CreateEgress(SessionId::new(u64::MAX))),
            Some(Request::CreateWebrtc(SessionId::new(u64::MAX))),
            Some(Request::DeleteSession(SessionId::rtmp(1, 9))),
            None,
        ]
    );
}

/// Every reason keeps its number on the wire and comes back; a number
/// no reason has is a decode error (see [`EndReason`] for why).
#[test]
fn every_end_reason_round_trips_and_an_unknown_one_is_an_error() {
    let mut slot = [0u8; SLOT_SIZE];
    let session = SessionId::new(0x0102_0304_0506_0708);
    for (reason, code) in EndReason::ALL.into_iter().zip(1u16..) {
        assert_eq!(reason.code(), code, "{reason:?}");
        assert_eq!(EndReason::from_code(code), Some(reason));
        assert!(!reason.describe().is_empty());
        let e = Event::SessionEnded { session, reason };
        e.encode(&mut slot);
        assert_eq!(slot[2..10], session.get().to_le_bytes());
        assert_eq!(slot[10..12], code.to_le_bytes());
        assert_eq!(Event::decode(&slot), Ok(e));
    }
    for unknown in [0u16, 7, u16::MAX] {
        assert_eq!(EndReason::from_code(unknown), None);
        slot[10..12].copy_from_slice(&unknown.to_le_bytes());
        assert_eq!(Event::decode(&slot), Err(DecodeError::Value("end reason")));
    }
}

#[test]
fn srtp_key_length_is_checked() {
    assert!(SrtpKey::new(SrtpSuite::AeadAes128Gcm, &[0; 30]).is_none());
    assert!(SrtpKey::new(SrtpSuite::AeadAes128Gcm, &[0; 28]).is_some());
    assert_eq!(
        format!("{:?}", key()),
        "SrtpKey(AesCm128HmacSha1_80, <redacted>)"
    );
}

/// The fuzz target's property, on a deterministic stream of random slots:
/// decoding arbitrary bytes never panics, and what decodes re-encodes to
/// something that decodes to the same value.
#[test]
fn random_slots_never_panic() {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut slot = [0u8; SLOT_SIZE];
    for i in 0..200_000 {
        for b in slot.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        slot[0] = MSG_VERSION;
        slot[1] = (i % 9) as u8;
        crate::msg::fuzz_decode(&slot);
    }
}

/// A track's codec crosses the ring; a codec byte we do not know is a
/// decode error, not a guess.
#[test]
fn a_tracks_codec_round_trips_and_an_unknown_one_is_refused() {
    let (cmds, _) = samples();
    let Command::CreateWebrtc(spec) = &cmds[4] else {
        panic!("samples()[4] is the WebRTC session");
    };
    let mut spec = spec.clone();
    spec.tracks.truncate(1);
    spec.tracks[0].codec = Codec::Vp8;
    spec.tracks[0].pt = 0xab;
    let mut slot = [0u8; SLOT_SIZE];
    Command::CreateWebrtc(spec.clone()).encode(&mut slot);
    assert_eq!(
        Command::decode(&slot),
        Ok(Command::CreateWebrtc(spec.clone()))
    );
    assert_eq!(spec.video_codec(), Some(Codec::Vp8));
    let pt_at = slot.iter().position(|&b| b == 0xab).unwrap();
    assert_eq!(slot[pt_at - 1], Codec::Vp8 as u8);
    slot[pt_at - 1] = 9;
    assert_eq!(Command::decode(&slot), Err(DecodeError::Value("codec")));
    assert_eq!(Codec::video("vp9"), Some(Codec::Vp9));
    assert_eq!(Codec::video("opus"), None, "not a video codec");
}
