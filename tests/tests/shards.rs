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
    let mut alice = AiortcPublisher::start(&gw, "mixed?participant=alice", 16.0, &["--encode"]);
    alice.connected();
    let clip = clip_sized(320, 240, 660);
    let _bob = Reap(ffmpeg_rtmp_push(&gw, "mixed/bob", &clip, 40));
    wait_playing(&gw.rtmp_url("mixed/bob"));

    // Four WHEP players at once: the owner holds both publishers (and
    // perhaps, for a moment, the probe that saw bob play), so the
    // controlplane places them on the other shard until it holds as many,
    // then on either: both shards get some (sessions being opened count).
    // Then RTMP and HTTP-FLV players of alice's stream (bridged on the
    // owner) and of the room's program (made on the owner) land on either
    // shard.
    let urls = [
        gw.rtmp_url("mixed/alice"),
        gw.flv_url("mixed/alice", ""),
        gw.rtmp_url("mixed"),
        gw.flv_url("mixed", "?participant=carol"),
    ];
    let (plays, flv_plays, whep_shards) = std::thread::scope(|scope| {
        let plays: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| aiortc_play(&gw, "mixed", 5.0, &["--lines", "2"])))
            .collect();
        let whep = || {
            gw.room_sessions("mixed")
                .into_iter()
                .filter(|s| s["kind"] == "whep")
                .collect::<Vec<_>>()
        };
        wait_for(
            "four WHEP players placed",
            Duration::from_secs(20),
            whep,
            |w| w.len() == 4,
        );
        let flv_plays: Vec<_> = (0..6)
            .map(|i| {
                let url = urls[i % urls.len()].clone();
                scope.spawn(move || ffmpeg_rtmp_play(&url, 3, Duration::from_secs(30)))
            })
            .collect();
        let shards = wait_for(
            "WHEP players on both shards",
            Duration::from_secs(20),
            || {
                let mut shards: Vec<u64> =
                    whep().iter().filter_map(|s| s["shard"].as_u64()).collect();
                shards.sort();
                shards.dedup();
                shards
            },
            |s| s.len() == 2,
        );
        let plays: Vec<_> = plays.into_iter().map(|p| p.join().unwrap()).collect();
        let flv_plays: Vec<_> = flv_plays.into_iter().map(|p| p.join().unwrap()).collect();
        (plays, flv_plays, shards)
    });
    eprintln!("WHEP players on shards {whep_shards:?}");
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
