//! The room on the simulated network ([`crate::fuzz::net`]): clients
//! behind lossy, reordering and capped paths, one room over two shards,
//! on virtual time. Each test runs the same way every time (seeded paths).

use gateway_ring::msg::{Codec, Direction, Event, MediaKind, TrackSpec, WebrtcSpec};
use gateway_ring::SessionId;

use crate::rtmp::chunk::Message;

use crate::fuzz::net::{Impairment, Net};
use crate::fuzz::webrtc;

/// A publisher's session `n` of participant `p{n}`.
fn publisher(n: u64) -> WebrtcSpec {
    webrtc(n, Direction::Publish)
}

/// A player's session `n` for participant `who`, with `lines` video lines
/// (our SSRCs `0x5000 + n`, `0x5100 + n`, ...) and an audio line.
fn player(n: u64, who: &str, lines: u32) -> WebrtcSpec {
    let mut spec = webrtc(n, Direction::Subscribe);
    spec.participant = who.into();
    let video = spec.tracks[0];
    for i in 1..lines {
        spec.tracks.push(TrackSpec {
            ssrc: video.ssrc + 0x100 * i,
            ..video
        });
    }
    spec
}

/// A link of `rate_bps` with a drop-tail queue of 300 ms (a mobile link's
/// bottleneck).
fn capped(rate_bps: u64) -> Impairment {
    Impairment {
        rate_bps,
        queue: std::time::Duration::from_millis(300),
        ..Impairment::CLEAN
    }
}

/// Publisher `n` on shard 0 over clean paths, sending frames of `slices`
/// packets of 1000 bytes (8: 1.9 Mbit/s at 30 frames a second).
fn camera(net: &mut Net, n: u64, slices: usize) -> usize {
    let c = net.webrtc(0, publisher(n), Impairment::CLEAN, Impairment::CLEAN);
    let p = net.clients[c].publisher();
    (p.slices, p.slice_bytes) = (slices, 1000);
    c
}

/// The line `ssrc` of player `c` got every packet from its first to its
/// last (what was lost was resent); returns how many that is.
fn complete(net: &mut Net, c: usize, ssrc: u32) -> usize {
    let p = net.clients[c].player();
    let got = p
        .got
        .get(&ssrc)
        .unwrap_or_else(|| panic!("line {ssrc:#x} got nothing"));
    let (first, last) = (*got.keys().next().unwrap(), *got.keys().last().unwrap());
    let holes: Vec<u64> = (first..=last).filter(|s| !got.contains_key(s)).collect();
    assert!(holes.is_empty(), "line {ssrc:#x}: holes at {holes:?}");
    got.len()
}

/// Each of `lines` (player, our SSRC) ended complete, within the last few
/// packets of the `sent` (those still in flight), and got resends from the
/// gateway's cache.
fn repaired(net: &mut Net, lines: &[(usize, u32)], sent: usize) {
    for &(c, ssrc) in lines {
        let got = complete(net, c, ssrc);
        assert!(got + 3 >= sent, "{got} of {sent}");
        let s = net.clients[c].session;
        assert!(net.stats[&s].retransmits > 0, "none resent from the cache");
    }
}

/// Whose pictures line `ssrc` of player `c` carried (the publishers' fill bytes).
fn fills(net: &mut Net, c: usize, ssrc: u32) -> Vec<u8> {
    let mut seen: Vec<u8> = net.clients[c].player().got[&ssrc]
        .values()
        .filter(|p| p.len() > 100)
        .map(|p| p[p.len() - 1])
        .collect();
    seen.sort();
    seen.dedup();
    seen
}

/// A call over mobile paths, its player on each shard: 5 % of the
/// publisher's packets are lost on its way up and 5 % of each player's on
/// the way down, reordered by jitter. Each player NACKs what it misses;
/// what the gateway has it resends from its cache (the replica's own
/// cache on the other shard), what it never got it asks the publisher for
/// (from the other shard through the owner). Every player ends with every
/// packet.
#[test]
fn a_call_over_lossy_paths_is_repaired_on_both_shards() {
    let mut net = Net::new();
    let lossy = Impairment::lossy(0.05);
    let cam = net.webrtc(0, publisher(1), lossy, Impairment::CLEAN);
    let near = net.webrtc(0, player(2, "p2", 1), Impairment::CLEAN, lossy);
    let far = net.webrtc(1, player(4, "p4", 1), Impairment::CLEAN, lossy);
    net.run(3000, &[cam]);
    net.run(1000, &[]);
    let sent = net.clients[cam].publisher().history_len();
    assert!(net.clients[cam].up.lost > 0, "the way up lost nothing");
    assert!(
        net.clients[cam].publisher().resent > 0,
        "the publisher resent nothing"
    );
    repaired(&mut net, &[(near, 0x5002), (far, 0x5004)], sent);
    for c in [near, far] {
        assert!(net.clients[c].down.lost > 0, "the way down lost nothing");
        let p = net.clients[c].player();
        assert!(p.rtx > 0 && p.nacks > 0);
    }
}

/// A conference of three across the shards, every path lossy: each player
/// has two lines and gets the two others' pictures on them, never its
/// own, each line complete.
#[test]
fn a_conference_of_three_over_two_shards() {
    let mut net = Net::new();
    let lossy = Impairment::lossy(0.03);
    let mut cams = Vec::new();
    let mut players = Vec::new();
    for (i, n) in [1u64, 3, 5].into_iter().enumerate() {
        // Publishers are served by the room's owner (for now).
        cams.push(net.webrtc(0, publisher(n), lossy, lossy));
        let who = format!("p{n}");
        players.push(net.webrtc(i % 2, player(n + 1, &who, 2), lossy, lossy));
    }
    net.run(2000, &cams);
    net.run(1000, &[]);
    for (i, &c) in players.iter().enumerate() {
        let n = [1u8, 3, 5][i];
        let mut seen = Vec::new();
        for line in [0x5000 + n as u32 + 1, 0x5100 + n as u32 + 1] {
            complete(&mut net, c, line);
            let f = fills(&mut net, c, line);
            assert_eq!(f.len(), 1, "line {line:#x} carried {f:?}");
            seen.extend(f);
        }
        seen.sort();
        let others: Vec<u8> = [1u8, 3, 5].into_iter().filter(|&o| o != n).collect();
        assert_eq!(seen, others, "player of p{n}");
    }
}

/// The bridge to RTMP over a lossy way up: the owner NACKs the
/// publisher's gaps, waits for the resends, and its RTMP players on both
/// shards get every frame from the first whole keyframe on (what came
/// before it cannot be decoded), in order, none given up.
#[test]
fn the_bridge_to_rtmp_repairs_a_lossy_publisher() {
    let mut net = Net::new();
    let cam = net.webrtc(0, publisher(1), Impairment::lossy(0.05), Impairment::CLEAN);
    let near = net.rtmp(0, "play", &format!("{}/p1", net.room_name()));
    let far = net.rtmp(1, "play", &format!("{}/p1", net.room_name()));
    net.run(3000, &[cam]);
    net.run(1000, &[]);
    let frames = net.clients[cam].publisher().frames as usize;
    let s = net.clients[cam].session;
    assert!(net.stats[&s].bridge_gaps_filled > 0, "no gap to fill");
    assert_eq!(net.stats[&s].bridge_gaps_given_up, 0);
    for c in [near, far] {
        let v = &net.clients[c].rtmp().videos;
        let pictures: Vec<u32> = v
            .iter()
            .filter(|m| m.payload.get(1) == Some(&1))
            .map(|m| m.timestamp)
            .collect();
        // A frame every 33 ms, none missing, to the last one sent.
        assert!(
            pictures.windows(2).all(|w| w[1] - w[0] == 33),
            "{pictures:?}"
        );
        assert!(
            pictures.len() + 3 >= frames,
            "{} of {frames}",
            pictures.len()
        );
        let last = pictures.last().copied();
        assert_eq!(last, Some(pictures[0] + 33 * (pictures.len() as u32 - 1)));
    }
}

/// The bridge from RTMP to players behind lossy ways down, on both
/// shards: a push has no one to ask again, so what a player misses comes
/// from the track's cache (the replica's, on the other shard), and each
/// line ends complete. A player's keyframe request is answered from the
/// cached GOP, where the player is.
#[test]
fn an_rtmp_push_reaches_lossy_players_on_both_shards() {
    let mut net = Net::new();
    let lossy = Impairment::lossy(0.05);
    let push = net.rtmp(0, "publish", &format!("{}/bob", net.room_name()));
    let near = net.webrtc(0, player(2, "p2", 1), Impairment::CLEAN, lossy);
    let far = net.webrtc(1, player(4, "p4", 1), Impairment::CLEAN, lossy);
    net.push_frame(push, 0, true, true);
    net.run(3000, &[push]);
    net.run(1000, &[]);
    for (c, ssrc) in [(near, 0x5002), (far, 0x5004)] {
        complete(&mut net, c, ssrc);
        assert!(net.clients[c].player().rtx > 0);
        let s = net.clients[c].session;
        assert!(net.stats[&s].retransmits > 0);
    }
    // Keyframes are pushed each 990 ms (the next at 4950): ask between
    // two, and the cached GOP is replayed at the next frame.
    let before = net.clients[far].player().keyframes;
    net.send_pli(far, 0x5004);
    net.run(300, &[push]);
    assert!(
        net.clients[far].player().keyframes > before,
        "no keyframe for the far player's request"
    );
}

/// An RTMP push that ends ends its tracks on the other shard too: the
/// replica lets its relayed publisher go (before, it stayed until the room
/// went).
#[test]
fn an_rtmp_push_that_ends_ends_its_relayed_tracks() {
    let mut net = Net::new();
    let push = net.rtmp(0, "publish", &format!("{}/bob", net.room_name()));
    let far = net.webrtc(1, player(4, "p4", 1), Impairment::CLEAN, Impairment::CLEAN);
    net.push_frame(push, 0, true, true);
    net.run(500, &[push]);
    assert!(
        net.clients[far].player().got.contains_key(&0x5004),
        "the far player got bob"
    );
    let bob = net.t.cores[0]
        .router
        .participants
        .find(crate::fuzz::ROOM, "bob")
        .expect("bob on the owner");
    let relayed = |net: &Net| {
        net.t.cores[1]
            .router
            .relayed_origin(crate::media::Source::Rtmp(bob))
    };
    assert_eq!(relayed(&net), Some(0), "relayed while it pushes");
    net.close_rtmp(push);
    net.run(100, &[]);
    assert_eq!(relayed(&net), None, "gone with the push");
}

/// A keyframe request goes to the track's origin from either shard: the
/// far player's PLI reaches the publisher through the owner, and the
/// keyframe it sends reaches the player.
#[test]
fn a_keyframe_request_reaches_the_publisher_from_the_other_shard() {
    let mut net = Net::new();
    let cam = net.webrtc(0, publisher(1), Impairment::CLEAN, Impairment::CLEAN);
    let far = net.webrtc(1, player(4, "p4", 1), Impairment::CLEAN, Impairment::CLEAN);
    net.run(1500, &[cam]);
    let (plis, keyframes) = (
        net.clients[cam].publisher().plis,
        net.clients[far].player().keyframes,
    );
    assert_eq!(keyframes, 1, "one keyframe until asked");
    net.send_pli(far, 0x5004);
    net.run(300, &[cam]);
    assert!(
        net.clients[cam].publisher().plis > plis,
        "the PLI never came"
    );
    assert_eq!(net.clients[far].player().keyframes, 2);
}

/// A publisher sending 2 Mbit/s up a 600 kbit/s link (a drop-tail queue of
/// 300 ms): the estimate the gateway sends it (REMB, from abs-send-time)
/// stays near what the link carries (a receive-side estimate is bounded
/// by 1.5 times the rate that arrives, as GCC's is); on an open link it
/// climbs toward what is sent.
#[test]
fn the_publishers_estimate_finds_a_capped_link() {
    let last_estimate = |cap: u64| {
        let mut net = Net::new();
        let mut spec = publisher(1);
        for t in &mut spec.tracks {
            t.twcc = 0;
            t.abs_send_time = if t.kind == MediaKind::Video { 2 } else { 0 };
        }
        let cam = net.webrtc(0, spec, capped(cap), Impairment::CLEAN);
        let p = net.clients[cam].publisher();
        (p.slices, p.slice_bytes) = (8, 1000);
        net.run(8000, &[cam]);
        let p = net.clients[cam].publisher();
        *p.rembs.last().expect("no REMB")
    };
    let capped = last_estimate(600_000);
    let open = last_estimate(0);
    assert!(
        (300_000..=900_000).contains(&capped),
        "capped at 600 kbit/s, estimate {capped}"
    );
    assert!(open > 2 * capped, "open {open}, capped {capped}");
}

/// The program over two shards: p1 watches the room's program from the
/// other shard by RTMP while p1 and p3 publish over lossy paths; it shows
/// p3 (never p1's own picture), each frame from its first on, repaired.
#[test]
fn a_program_played_on_the_other_shard_never_shows_me() {
    let mut net = Net::new();
    let lossy = Impairment::lossy(0.03);
    let p1 = net.webrtc(0, publisher(1), lossy, Impairment::CLEAN);
    let p3 = net.webrtc(0, publisher(3), lossy, Impairment::CLEAN);
    let program = net.rtmp(1, "play", &format!("{}?participant=p1", net.room_name()));
    net.run(3000, &[p1, p3]);
    net.run(1000, &[]);
    let frames = net.clients[p3].publisher().frames as usize;
    let v = &net.clients[program].rtmp().videos;
    let pictures: Vec<&[u8]> = v
        .iter()
        .filter(|m| m.payload.get(1) == Some(&1))
        .map(|m| &m.payload[..])
        .collect();
    assert!(
        pictures.len() + 3 >= frames,
        "{} of {frames}",
        pictures.len()
    );
    assert!(
        pictures.iter().all(|p| p.last() == Some(&3)),
        "a picture not p3's"
    );
}

/// A WebRTC player that joins an RTMP push's room on the other shard in
/// the middle of a long GOP (a push cannot be asked for a keyframe) gets
/// a picture at once, as one on the owner does: the owner sends the
/// cached GOP with the track's announcement, and the player's shard
/// replays it at the next frame.
#[test]
fn a_late_player_on_the_other_shard_gets_an_rtmp_pushs_picture_at_once() {
    let mut net = Net::new();
    net.push_gop = std::time::Duration::from_secs(5);
    let push = net.rtmp(0, "publish", &format!("{}/bob", net.room_name()));
    net.push_frame(push, 0, true, true);
    net.run(2000, &[push]);
    let near = net.webrtc(0, player(2, "p2", 1), Impairment::CLEAN, Impairment::CLEAN);
    let far = net.webrtc(1, player(4, "p4", 1), Impairment::CLEAN, Impairment::CLEAN);
    net.run(200, &[push]);
    for c in [near, far] {
        let shard = net.clients[c].shard;
        assert_eq!(
            net.clients[c].player().keyframes,
            1,
            "shard {shard}: no picture"
        );
    }
    // And it carries on from there, every packet.
    net.run(1000, &[push]);
    complete(&mut net, far, 0x5004);
}

/// An RTP camera (plain RTP, no way back to it) and its players behind
/// lossy ways down on both shards: what they miss is resent from the
/// track's cache, the same cache every session's video has, so each line
/// ends complete.
#[test]
fn an_rtp_cameras_players_are_repaired_from_its_tracks_cache() {
    let mut net = Net::new();
    let lossy = Impairment::lossy(0.05);
    let cam = net.rtp_ingest(0, crate::fuzz::video_ingest(9), Impairment::CLEAN);
    let near = net.webrtc(0, player(2, "p2", 1), Impairment::CLEAN, lossy);
    let far = net.webrtc(1, player(4, "p4", 1), Impairment::CLEAN, lossy);
    net.run(3000, &[cam]);
    net.run(1000, &[]);
    let sent = net.clients[cam].publisher().history_len();
    repaired(&mut net, &[(near, 0x5002), (far, 0x5004)], sent);
}

/// `spec` with every video line in `codec`.
fn in_codec(mut spec: WebrtcSpec, codec: Codec) -> WebrtcSpec {
    for t in &mut spec.tracks {
        if t.kind == MediaKind::Video {
            t.codec = codec;
        }
    }
    spec
}

/// A VP8 publisher over a lossy way up, with RTMP players on both shards:
/// the owner repairs its frames (NACK), joins each whole and hands it to
/// the re-encode thread, numbered without a gap from a keyframe on; the
/// H264 it gets back reaches the players on both shards, a picture a frame.
/// A second VP8 publisher past the shard's `--video-transcodes` (1) is
/// told so, and its RTMP player gets no picture, until the first one's
/// players leave and give its slot back.
#[test]
fn vp8_publishers_reach_rtmp_players_transcoded_up_to_the_limit() {
    let mut net = Net::new();
    for core in &mut net.t.cores {
        core.set_video_transcodes(1);
    }
    let lossy = Impairment::lossy(0.05);
    let cam = net.webrtc(
        0,
        in_codec(publisher(1), Codec::Vp8),
        lossy,
        Impairment::CLEAN,
    );
    let near = net.rtmp(0, "play", &format!("{}/p1", net.room_name()));
    let far = net.rtmp(1, "play", &format!("{}/p1", net.room_name()));
    net.run(500, &[cam]);
    let late = net.webrtc(
        0,
        in_codec(publisher(3), Codec::Vp8),
        Impairment::CLEAN,
        Impairment::CLEAN,
    );
    let refused = net.rtmp(0, "play", &format!("{}/p3", net.room_name()));
    net.run(2500, &[cam, late]);
    net.run(1000, &[]);
    let frames = net.clients[cam].publisher().frames as usize;
    let jobs = &net.transcoded;
    assert!(jobs.iter().all(|j| j.0 == 0), "on the owner only");
    let numbers: Vec<u32> = jobs.iter().map(|j| j.1).collect();
    assert_eq!(numbers, (0..jobs.len() as u32).collect::<Vec<_>>());
    assert!(jobs[0].2, "a keyframe first");
    // Whole frames: two slices of 600 after the frame tag (a keyframe's
    // with its start code), as the publisher sent them.
    assert!(jobs
        .iter()
        .all(|&(_, _, key, len)| len == if key { 1206 } else { 1203 }));
    assert!(jobs.len() + 5 >= frames, "{} of {frames}", jobs.len());
    let s = net.clients[cam].session;
    assert!(net.stats[&s].bridge_gaps_filled > 0, "no gap to fill");
    for c in [near, far] {
        let pictures: Vec<&Message> = net.clients[c]
            .rtmp()
            .videos
            .iter()
            .filter(|m| m.payload.get(1) == Some(&1))
            .collect();
        assert_eq!(pictures.len(), jobs.len(), "a picture a frame");
        assert_eq!(pictures[0].payload[0], 0x17, "a keyframe first");
        assert!(pictures
            .windows(2)
            .all(|w| w[1].timestamp - w[0].timestamp == 33));
    }
    let warned: Vec<(SessionId, &str)> = net
        .events
        .iter()
        .filter_map(|e| match e {
            Event::MediaWarning { session, what } => Some((*session, &what[..])),
            _ => None,
        })
        .collect();
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert_eq!(warned[0].0, net.clients[late].session);
    assert!(warned[0].1.contains("already transcodes 1"), "{warned:?}");
    assert!(net.clients[refused].rtmp().videos.is_empty());
    // The first publisher's players leave: its slot is given back, and the
    // second publisher, looked at again within a second, takes it from a
    // keyframe it asks for; its player gets pictures.
    let now = net.now;
    for c in [near, far] {
        let (shard, idx) = (net.clients[c].shard, net.clients[c].rtmp().idx);
        net.t.cores[shard].rtmp_remove(now, idx);
    }
    let before = net.transcoded.len();
    net.run(2500, &[cam, late]);
    let later = &net.transcoded[before..];
    assert!(
        later.len() > 30,
        "the second publisher transcoded: {}",
        later.len()
    );
    assert!(
        later[0].2 && later[0].1 == 0,
        "from a keyframe, numbered afresh"
    );
    let pictures = net.clients[refused]
        .rtmp()
        .videos
        .iter()
        .filter(|m| m.payload.get(1) == Some(&1))
        .count();
    assert!(pictures > 30, "{pictures}");
}

/// A VP8 call, its players on both shards behind lossy ways down: the SFU
/// forwards VP8 as it came, finds its keyframes (the payload descriptor
/// and frame tag), answers NACKs from the track's cache or the publisher,
/// and a PLI from the far shard reaches the publisher.
#[test]
fn a_vp8_call_over_lossy_paths_is_repaired_on_both_shards() {
    let mut net = Net::new();
    let lossy = Impairment::lossy(0.05);
    let cam = net.webrtc(
        0,
        in_codec(publisher(1), Codec::Vp8),
        lossy,
        Impairment::CLEAN,
    );
    let near = net.webrtc(
        0,
        in_codec(player(2, "p2", 1), Codec::Vp8),
        Impairment::CLEAN,
        lossy,
    );
    let far = net.webrtc(
        1,
        in_codec(player(4, "p4", 1), Codec::Vp8),
        Impairment::CLEAN,
        lossy,
    );
    net.run(2000, &[cam]);
    net.run(1000, &[]);
    let sent = net.clients[cam].publisher().history_len();
    repaired(&mut net, &[(near, 0x5002), (far, 0x5004)], sent);
    // (The first keyframe may have been lost before a player's first
    // packet: nothing tells it what it missed, so count from here.)
    let plis = net.clients[cam].publisher().plis;
    let keyframes = net.clients[far].player().keyframes;
    net.send_pli(far, 0x5004);
    net.run(300, &[cam]);
    assert!(
        net.clients[cam].publisher().plis > plis,
        "the PLI never came"
    );
    let now = net.clients[far].player().keyframes;
    assert_eq!(now, keyframes + 1, "the new keyframe, found");
}

/// A line carries only the codec it negotiated: a player with an H264 line
/// and a VP8 line gets the H264 publisher on the one and the VP8 publisher
/// on the other, whatever order they come in; an RTP egress (H264 by its
/// SDP) gets no VP8; an RTMP player of the VP8 publisher gets no picture,
/// and the publisher one `media_warning` saying so.
#[test]
fn a_line_carries_only_its_codec() {
    let mut net = Net::new();
    net.t.cores[0].set_video_transcodes(0); // see the next test for transcodes
    let clean = Impairment::CLEAN;
    let vp8 = net.webrtc(0, in_codec(publisher(1), Codec::Vp8), clean, clean);
    let h264 = net.webrtc(0, publisher(3), clean, clean);
    let mut both = player(4, "p4", 2);
    both.tracks[2].codec = Codec::Vp8; // its second video line (0x5104)
    let p = net.webrtc(1, both, clean, clean);
    let flv = net.rtmp(0, "play", &format!("{}/p1", net.room_name()));
    net.t.cores[0]
        .add_egress(crate::fuzz::egress(30))
        .expect("egress");
    net.run(1500, &[vp8, h264]);
    assert_eq!(fills(&mut net, p, 0x5004), vec![3], "the H264 line");
    assert_eq!(fills(&mut net, p, 0x5104), vec![1], "the VP8 line");
    let vp8_session = net.clients[vp8].session;
    let warnings: Vec<&str> = net
        .events
        .iter()
        .filter_map(|e| match e {
            Event::MediaWarning { session, what } if *session == vp8_session => Some(&what[..]),
            _ => None,
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("VP8"), "{warnings:?}");
    let pictures = net.clients[flv]
        .rtmp()
        .videos
        .iter()
        .filter(|m| m.payload.get(1) == Some(&1))
        .count();
    assert_eq!(pictures, 0);
    // The RTP egress (the harness keeps what it sent) got H264 only.
    let egress = net.stats[&gateway_ring::SessionId::new(30)];
    assert!(egress.packets > 0);
    let h264_sent = net.clients[h264].publisher().history_len() as u64;
    assert!(
        egress.packets <= h264_sent,
        "{} > {h264_sent}",
        egress.packets
    );
}

/// A VP8 line that changes publisher does so at the new one's keyframe
/// (asked for, since its first one went while the line was taken), and
/// its picture ids go on by one across the change, as its sequence
/// numbers do: the player's decoder sees one stream.
#[test]
fn a_vp8_line_changes_publisher_at_a_keyframe_and_its_picture_ids_go_on() {
    let mut net = Net::new();
    let clean = Impairment::CLEAN;
    let p1 = net.webrtc(0, in_codec(publisher(1), Codec::Vp8), clean, clean);
    let p3 = net.webrtc(0, in_codec(publisher(3), Codec::Vp8), clean, clean);
    let line = net.webrtc(1, in_codec(player(4, "p4", 1), Codec::Vp8), clean, clean);
    net.run(1000, &[p1]);
    // p1 stops; p3 starts, its first keyframe before p1 has been silent
    // for the line to change hands.
    net.run(2000, &[p3]);
    assert!(net.clients[p3].publisher().plis >= 1, "p3 was not asked");
    assert!(net.clients[p3].publisher().keyframes >= 2);
    let got = net.clients[line].player().got[&0x5004].clone();
    complete(&mut net, line, 0x5004);
    // Each frame's first packet: (picture id, whose, a keyframe).
    let frames: Vec<(u8, u8, bool)> = got
        .values()
        .filter(|p| p[0] & 0x10 != 0)
        .map(|p| {
            (
                p[2] & 0x7f,
                p[p.len() - 1],
                crate::codec::vp8::starts_keyframe(p),
            )
        })
        .collect();
    let switch = frames.iter().position(|f| f.1 == 3).expect("p3 never came");
    assert!(frames[..switch].iter().all(|f| f.1 == 1), "{frames:?}");
    assert!(frames[switch..].iter().all(|f| f.1 == 3), "{frames:?}");
    assert!(frames[switch].2, "p3 came in on a delta frame: {frames:?}");
    assert!(
        frames.windows(2).all(|w| w[1].0 == (w[0].0 + 1) & 0x7f),
        "picture ids: {frames:?}"
    );
}

/// A VP8 line that joins mid-picture-group starts at a keyframe, asked
/// for (a VP8 decoder cannot begin on a delta frame): on the owner's
/// shard and on the other one, through the owner.
#[test]
fn a_late_vp8_line_starts_at_a_keyframe() {
    let mut net = Net::new();
    let clean = Impairment::CLEAN;
    // The keyframe asked for comes 300 ms later: deltas come meanwhile.
    let far_away = Impairment {
        delay: std::time::Duration::from_millis(150),
        ..clean
    };
    let cam = net.webrtc(0, in_codec(publisher(1), Codec::Vp8), far_away, far_away);
    net.run(1500, &[cam]);
    let plis = net.clients[cam].publisher().plis;
    let near = net.webrtc(0, in_codec(player(2, "p2", 1), Codec::Vp8), clean, clean);
    let far = net.webrtc(1, in_codec(player(4, "p4", 1), Codec::Vp8), clean, clean);
    net.run(1500, &[cam]);
    assert!(net.clients[cam].publisher().plis > plis, "never asked");
    for (c, ssrc) in [(near, 0x5002), (far, 0x5004)] {
        let got = &net.clients[c].player().got[&ssrc];
        let first = got.values().next().expect("nothing came");
        assert!(
            crate::codec::vp8::starts_keyframe(first),
            "line {ssrc:#x} began on a delta frame"
        );
    }
}

/// A player's line carries every codec its answer gave it: an H264
/// publisher has it first; when that one stops, a VP8 publisher takes it
/// at a keyframe, on the session's VP8 payload type, and the line goes on
/// (one SSRC, its sequence numbers without a gap).
#[test]
fn a_line_of_two_codecs_takes_a_publisher_in_either() {
    let mut net = Net::new();
    let clean = Impairment::CLEAN;
    let h264 = net.webrtc(0, publisher(1), clean, clean);
    let vp8 = net.webrtc(0, in_codec(publisher(3), Codec::Vp8), clean, clean);
    let mut both = player(4, "p4", 1);
    both.tracks[0].codecs = 1 << Codec::H264 as u8 | 1 << Codec::Vp8 as u8;
    both.video_pts = [(102, 103), (98, 99), (0, 0), (0, 0)];
    let line = net.webrtc(1, both, clean, clean);
    net.run(1000, &[h264]);
    net.run(2000, &[vp8]);
    complete(&mut net, line, 0x5004);
    assert_eq!(
        fills(&mut net, line, 0x5004),
        vec![1, 3],
        "both, on one line"
    );
    let p = net.clients[line].player();
    let first_vp8 = p.pts.iter().position(|&pt| pt == 98).expect("no VP8 came");
    assert!(
        p.pts[..first_vp8].iter().all(|&pt| pt == 102),
        "{:?}",
        p.pts
    );
    assert!(p.pts[first_vp8..].iter().all(|&pt| pt == 98), "{:?}", p.pts);
    assert!(p.keyframes >= 2, "the VP8 publisher's keyframe");
}

/// A mini-program that pushes its name again (a reconnect), its old push
/// closed first or still open (taken over): the players already there go
/// on in their own numbering, one line from the first push to the second,
/// on both shards, and the second push reaches them as the first did.
#[test]
fn a_name_pushed_again_goes_on_in_its_players_numbering() {
    for closed_first in [true, false] {
        let mut net = Net::new();
        let key = format!("{}/bob", net.room_name());
        let push = net.rtmp(0, "publish", &key);
        let near = net.webrtc(0, player(2, "p2", 1), Impairment::CLEAN, Impairment::CLEAN);
        let far = net.webrtc(1, player(4, "p4", 1), Impairment::CLEAN, Impairment::CLEAN);
        let lines = [(near, 0x5002), (far, 0x5004)];
        net.push_frame(push, 0, true, true);
        net.run(1000, &[push]);
        let first: Vec<usize> = lines
            .iter()
            .map(|&(c, s)| complete(&mut net, c, s))
            .collect();
        if closed_first {
            net.close_rtmp(push);
        }
        net.run(200, &[]);
        let again = net.rtmp(0, "publish", &key);
        net.push_frame(again, 1200, true, true);
        net.run(1000, &[again]);
        for (i, &(c, ssrc)) in lines.iter().enumerate() {
            let got = complete(&mut net, c, ssrc);
            assert!(
                got >= first[i] + 28,
                "closed first {closed_first}, line {ssrc:#x}: {} packets of the first push, {got} with the second",
                first[i]
            );
        }
    }
}

/// Two players of a 1.9 Mbit/s publisher, one on an open path, one behind
/// a 600 kbit/s link (a drop-tail queue of 300 ms): each offered
/// transport-cc, so each packet it is sent carries our transport-wide
/// number and its feedback drives our estimate of its path. The open
/// one's estimate stays over what flows; the narrow one's comes down to
/// its link, and its video pauses.
#[test]
fn each_players_estimate_follows_its_own_path() {
    let mut net = Net::new();
    let cam = camera(&mut net, 1, 8);
    let open = net.webrtc(0, player(2, "p2", 1), Impairment::CLEAN, Impairment::CLEAN);
    let capped = net.webrtc(1, player(4, "p4", 1), Impairment::CLEAN, capped(600_000));
    net.run(8000, &[cam]);
    let stats = |c: usize| net.stats[&net.clients[c].session];
    let (open, capped) = (stats(open), stats(capped));
    assert!(
        (100_000..=700_000).contains(&capped.estimate_bps),
        "capped at 600 kbit/s, estimate {}",
        capped.estimate_bps
    );
    assert!(capped.video_pauses >= 1);
    assert!(
        open.estimate_bps > 1_900_000,
        "open path, estimate {}",
        open.estimate_bps
    );
    assert_eq!(open.video_pauses, 0);
}

/// A player whose link narrows from 3 Mbit/s to 500 kbit/s under a
/// 1.9 Mbit/s publisher (one video line, no layer to fall back on): its
/// video pauses instead of flooding the link, tried again now and then;
/// once the link is wide again video resumes from a keyframe, in the
/// line's own numbering, whole.
#[test]
fn a_players_video_pauses_on_a_narrow_link_and_resumes_on_a_wide_one() {
    let mut net = Net::new();
    let cam = camera(&mut net, 1, 8);
    let open = net.webrtc(0, player(2, "p2", 1), Impairment::CLEAN, Impairment::CLEAN);
    let mobile = net.webrtc(1, player(4, "p4", 1), Impairment::CLEAN, capped(3_000_000));
    net.run(4000, &[cam]);
    let sent = |net: &Net| (net.clients[open].down.sent, net.clients[mobile].down.sent);
    let (open0, mobile0) = sent(&net);
    assert!(
        mobile0 + 20 >= open0,
        "wide: all of it ({mobile0} of {open0})"
    );
    // Narrow for 12 s: paused but for its trials.
    net.clients[mobile].down.imp = capped(500_000);
    net.run(12_000, &[cam]);
    let (open1, mobile1) = sent(&net);
    let session = net.clients[mobile].session;
    let pauses = net.stats[&session].video_pauses;
    assert!(pauses >= 2, "paused, and tried again: {pauses}");
    // Its trials (2 s each, 2 s then 4 s apart) and the second before the
    // first pause are sent: under 60 % of what the open player got.
    assert!(
        (mobile1 - mobile0) * 10 < (open1 - open0) * 6,
        "narrow: sent {} against {} to the open player",
        mobile1 - mobile0,
        open1 - open0
    );
    // Wide again: within a backoff and a trial, video flows whole.
    net.clients[mobile].down.imp = capped(3_000_000);
    let keyframes = net.clients[mobile].player().keyframes;
    net.run(12_000, &[cam]);
    assert!(
        net.clients[mobile].player().keyframes > keyframes,
        "resumed at a keyframe"
    );
    let last_before = *net.clients[mobile].player().got[&0x5004]
        .keys()
        .last()
        .unwrap();
    let (open2, mobile2) = sent(&net);
    net.run(2000, &[cam]);
    let (open3, mobile3) = sent(&net);
    assert!(
        (mobile3 - mobile2) + 20 >= open3 - open2,
        "wide again: {} against {}",
        mobile3 - mobile2,
        open3 - open2
    );
    let got = &net.clients[mobile].player().got[&0x5004];
    let tail: Vec<u64> = got.keys().copied().filter(|&k| k > last_before).collect();
    assert!(tail.len() > 400, "{} packets in the last 2 s", tail.len());
    assert!(
        tail.windows(2).all(|w| w[1] == w[0] + 1),
        "the line's numbering goes on without holes"
    );
}

/// A player of three 480 kbit/s publishers (three video lines) behind a
/// 1.1 Mbit/s link: two lines fit, three do not. The line of the last
/// rank pauses (tried again now and then); the first two keep flowing,
/// whole, as on an open path.
#[test]
fn a_narrow_player_keeps_the_lines_that_fit() {
    let mut net = Net::new();
    let cams: Vec<usize> = [1, 3, 5].map(|n| camera(&mut net, n, 2)).to_vec();
    let open = net.webrtc(0, player(2, "p2", 3), Impairment::CLEAN, Impairment::CLEAN);
    let narrow = net.webrtc(1, player(4, "p4", 3), Impairment::CLEAN, capped(1_100_000));
    let session = net.clients[narrow].session;
    net.run(6000, &cams);
    let count = |net: &mut Net, c: usize, ssrc: u32| {
        net.clients[c]
            .player()
            .got
            .get(&ssrc)
            .map_or(0, |g| g.len())
    };
    let lines =
        |net: &mut Net, c: usize, base: u32| [0, 0x100, 0x200].map(|l| count(net, c, base + l));
    let (open0, narrow0) = (
        lines(&mut net, open, 0x5002),
        lines(&mut net, narrow, 0x5004),
    );
    net.run(12_000, &cams);
    let (open1, narrow1) = (
        lines(&mut net, open, 0x5002),
        lines(&mut net, narrow, 0x5004),
    );
    let got = |a: [usize; 3], b: [usize; 3]| [b[0] - a[0], b[1] - a[1], b[2] - a[2]];
    let (open, narrow) = (got(open0, open1), got(narrow0, narrow1));
    let pauses = net.stats[&session].video_pauses;
    assert!(pauses >= 1, "{pauses}");
    // The first two lines, all of it; the last, its trials at most.
    for l in 0..2 {
        assert!(
            narrow[l] * 10 >= open[l] * 9,
            "line {l}: {narrow:?} against {open:?}"
        );
    }
    assert!(
        narrow[2] * 2 < open[2],
        "the last line: {narrow:?} against {open:?}"
    );
}

/// Hysteresis, over a minute of a 1.9 Mbit/s publisher: a player whose link
/// carries 95 % of it never pauses; one whose link carries 70 % pauses and
/// stays paused but for its trials, backed off to one every 10 s, never
/// flapping on and off.
#[test]
fn a_players_video_does_not_flap_around_its_links_capacity() {
    let mut net = Net::new();
    let cam = camera(&mut net, 1, 8);
    let wide = net.webrtc(0, player(2, "p2", 1), Impairment::CLEAN, capped(2_000_000));
    let tight = net.webrtc(1, player(4, "p4", 1), Impairment::CLEAN, capped(1_350_000));
    net.run(60_000, &[cam]);
    let pauses = |c: usize| net.stats[&net.clients[c].session].video_pauses;
    assert_eq!(pauses(wide), 0);
    let tight = pauses(tight);
    assert!((1..=8).contains(&tight), "{tight} pauses in 60 s");
}
