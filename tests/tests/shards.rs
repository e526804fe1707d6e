//! One room over every shard, with real clients: a browser-like WHIP
//! publisher (aiortc) and a mini-program-like RTMP push (ffmpeg) in one
//! room of a two-shard gateway; WHEP players placed on both shards each see
//! both publishers, and RTMP and HTTP-FLV players of the WHIP publisher
//! (bridged once, on the room's owner) decode it wherever they land.

use std::time::Duration;

use e2e::*;

#[test]
fn a_room_of_webrtc_and_rtmp_publishers_plays_on_both_shards() {
    let gw = Gateway::start(2, &[]);
    gw.room("mixed");
    // Small pictures: a dozen decoders and an encoding publisher share two
    // cores with the gateway.
    let clip = clip_sized(320, 240, 440);
    let mut alice =
        AiortcPublisher::start_with(&gw, "mixed?participant=alice", &clip, 12.0, &["--encode"]);
    alice.connected();
    let clip = clip_sized(320, 240, 660);
    let _bob = Reap(ffmpeg_rtmp_push(&gw, "mixed/bob", &clip, 30));
    wait_playing(&gw.rtmp_url("mixed/bob"));
    // The shards that hold live sessions of `kind` in the room.
    let sessions_on = |kind: &str| {
        let mut shards: Vec<u64> = gw
            .room_sessions("mixed")
            .into_iter()
            .filter(|s| s["kind"] == kind && s["state"] == "live")
            .filter_map(|s| s["shard"].as_u64())
            .collect();
        shards.sort();
        shards.dedup();
        shards
    };
    let whep_count = || {
        gw.room_sessions("mixed")
            .into_iter()
            .filter(|s| s["kind"] == "whep")
            .count()
    };

    // Four WHEP players at once: the owner holds both publishers (and
    // perhaps, for a moment, the probe that saw bob play), so the
    // controlplane places them on the other shard until it holds as many,
    // then on either: both shards get some (sessions being opened count).
    // Once they are placed, RTMP and HTTP-FLV players of both publishers
    // (alice's WebRTC media bridged on the owner, bob's push as it is) and
    // of the room's program (made on the owner) join, on whichever shard
    // the kernel gives each: with 12, both shards get some but once in 2000
    // runs. All within the clip alice's publisher plays once (10 s).
    let urls = [
        gw.rtmp_url("mixed/alice"),
        gw.flv_url("mixed/alice", ""),
        gw.rtmp_url("mixed/bob"),
        gw.flv_url("mixed/bob", ""),
        gw.rtmp_url("mixed"),
        gw.flv_url("mixed", "?participant=carol"),
    ];
    let (plays, flv_plays, whep_shards, rtmp_shards) = std::thread::scope(|scope| {
        let plays: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| aiortc_play(&gw, "mixed", 5.0, &["--lines", "2"])))
            .collect();
        let whep_shards = wait_for(
            "four WHEP players placed on both shards",
            Duration::from_secs(20),
            || (whep_count(), sessions_on("whep")),
            |(n, s)| *n == 4 && s.len() == 2,
        )
        .1;
        let flv_plays: Vec<_> = (0..12)
            .map(|i| {
                let url = urls[i % urls.len()].clone();
                scope.spawn(move || ffmpeg_rtmp_play(&url, 3, Duration::from_secs(30)))
            })
            .collect();
        let rtmp_shards = wait_for(
            "RTMP and HTTP-FLV players on both shards",
            Duration::from_secs(20),
            || sessions_on("rtmp_play"),
            |s| s.len() == 2,
        );
        let plays: Vec<_> = plays.into_iter().map(|p| p.join().unwrap()).collect();
        let flv_plays: Vec<_> = flv_plays.into_iter().map(|p| p.join().unwrap()).collect();
        (plays, flv_plays, whep_shards, rtmp_shards)
    });
    eprintln!(
        "WHEP players on shards {whep_shards:?}, RTMP and HTTP-FLV players on {rtmp_shards:?}"
    );
    for play in plays {
        let per_track: Vec<u64> = play["video_frames_per_track"]
            .as_array()
            .unwrap_or_else(|| panic!("{play}"))
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(per_track.len(), 2, "both publishers: {play}");
        assert!(per_track.iter().all(|&n| n >= 30), "{play}");
        assert!(play["audio_frames"].as_u64().unwrap() >= 100, "{play}");
    }
    for (i, (video, audio, log)) in flv_plays.into_iter().enumerate() {
        let url = &urls[i % urls.len()];
        assert!(video >= 60, "{url}: decoded {video} video frames:\n{log}");
        assert!(audio >= 100, "{url}: decoded {audio} audio frames:\n{log}");
    }
    let done = alice.finish();
    assert_eq!(done["state"], "connected", "{done}");
}
