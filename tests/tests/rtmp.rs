//! RTMP with ffmpeg on both ends: publish and play through the gateway, the
//! GOP cache's effect on the first frame, and hostile connections.

use std::io::{Read, Write};
use std::time::Duration;

use e2e::*;
use rml_amf0::Amf0Value;

/// Waits until the room's stream has a publisher: a player gets media.
fn wait_for_stream(gw: &Gateway, room: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while rtmp_first_frame(&gw.rtmp_url(room)).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "stream {room} never started; log:\n{}",
            gw.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn ffmpeg_publishes_and_ffmpeg_players_decode() {
    // Two shards: players of the room's program land on either and are
    // handed to the room's shard.
    let gw = Gateway::start(2, &[]);
    let _publisher = Reap(ffmpeg_rtmp_publish(&gw, "show", 20));
    wait_for_stream(&gw, "show");
    let url = gw.rtmp_url("show");
    let players: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || ffmpeg_rtmp_play(&url, 3, Duration::from_secs(20)))
        })
        .collect();
    for p in players {
        let (video, audio, log) = p.join().unwrap();
        assert!(video >= 60, "decoded {video} video frames:\n{log}");
        assert!(audio >= 100, "decoded {audio} audio frames:\n{log}");
    }
    // Codec parameters as a player sees them.
    let streams = ffprobe_streams(&url);
    let video = streams.iter().find(|s| s["codec_name"] == "h264");
    let audio = streams.iter().find(|s| s["codec_name"] == "aac");
    assert_eq!(
        video.map(|s| (s["width"].clone(), s["height"].clone())),
        Some((json!(640), json!(360))),
        "{streams:?}"
    );
    assert_eq!(
        audio.map(|s| s["sample_rate"].clone()),
        Some(json!("48000")),
        "{streams:?}"
    );
    // The room was created by the publish, and the controlplane knows it.
    let (code, room) = gw.get("/v1/rooms/show");
    assert_eq!(code, 200, "{room}");
}

/// One room over both shards: RTMP and HTTP-FLV players of a
/// participant's stream play on whichever shard accepted them (the room's
/// owner relays the stream to the other shard, once), and every one of
/// them decodes its picture and sound.
#[test]
fn players_of_a_stream_play_on_every_shard() {
    let gw = Gateway::start(2, &[]);
    gw.room("spread");
    let clip = clip_sized(320, 240, 550);
    let _bob = Reap(ffmpeg_rtmp_push(&gw, "spread/bob", &clip, 60));
    let (rtmp, flv) = (gw.rtmp_url("spread/bob"), gw.flv_url("spread/bob", ""));
    wait_playing(&rtmp);
    // The kernel spreads connections over the shards' listeners by their
    // addresses: with 12, both shards get some but once in 2000 runs.
    let players: Vec<_> = (0..12)
        .map(|i| {
            let url = if i % 4 == 3 {
                flv.clone()
            } else {
                rtmp.clone()
            };
            std::thread::spawn(move || ffmpeg_rtmp_play(&url, 4, Duration::from_secs(30)))
        })
        .collect();
    let shards = wait_for(
        "live players of bob on both shards",
        Duration::from_secs(20),
        || {
            let (_, room) = gw.get("/v1/rooms/spread");
            let mut shards: Vec<u64> = room["egresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| s["state"] == "live")
                .filter_map(|s| s["shard"].as_u64())
                .collect();
            shards.sort();
            shards.dedup();
            shards
        },
        |s| s.len() == 2,
    );
    eprintln!("players on shards {shards:?}");
    for p in players {
        let (video, audio, log) = p.join().unwrap();
        assert!(video >= 80, "decoded {video} video frames:\n{log}");
        assert!(audio >= 130, "decoded {audio} audio frames:\n{log}");
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A player joining mid-GOP: with the cache it gets the GOP at once; without
/// it, it waits for the next keyframe (the clip has one every 2 s). Both
/// measured in the same run; the assertion is on the ratio.
#[test]
fn the_gop_cache_gives_a_first_frame_sooner() {
    let with = Gateway::start(1, &[]);
    let without = Gateway::start(1, &["--gop-cache", "false"]);
    let _p1 = Reap(ffmpeg_rtmp_publish(&with, "gop", 30));
    let _p2 = Reap(ffmpeg_rtmp_publish(&without, "gop", 30));
    wait_for_stream(&with, "gop");
    wait_for_stream(&without, "gop");
    let mut cached = Vec::new();
    let mut uncached = Vec::new();
    // Joins spread over more than a GOP, at steps that are not a multiple of it.
    for i in 0..7 {
        cached.push(rtmp_first_frame(&with.rtmp_url("gop")).expect("player with cache"));
        uncached.push(rtmp_first_frame(&without.rtmp_url("gop")).expect("player without cache"));
        std::thread::sleep(Duration::from_millis(230 + 110 * i));
    }
    let (c, u) = (median(cached.clone()), median(uncached.clone()));
    eprintln!("first frame with GOP cache: median {c:?} {cached:?}");
    eprintln!("first frame without GOP cache: median {u:?} {uncached:?}");
    assert!(
        u.as_secs_f64() / c.as_secs_f64() >= 2.0,
        "cache {c:?} vs no cache {u:?}"
    );
}

#[test]
fn hostile_rtmp_clients_are_refused_and_the_stream_plays_on() {
    let gw = Gateway::start(1, &["--auto-room", "false"]);
    gw.room("main");
    let _publisher = Reap(ffmpeg_rtmp_publish(&gw, "main", 25));
    wait_for_stream(&gw, "main");

    // Junk instead of a handshake: closed.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.rtmp)).unwrap();
    s.write_all(&[0x47; 4000]).unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "junk handshake not closed"
    );

    // A message longer than the limit: closed.
    let mut s = rtmp_raw(&gw);
    let mut huge = vec![3u8, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0];
    huge.extend_from_slice(&[0; 128]);
    s.write_all(&huge).unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "oversized message not closed"
    );

    // A chunk size of zero: closed.
    let mut s = rtmp_raw(&gw);
    s.write_all(&rtmp_message(1, 0, &0u32.to_be_bytes()))
        .unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "chunk size 0 not closed"
    );

    // An unknown command gets an `_error`, and the connection stays usable.
    let mut s = rtmp_raw(&gw);
    s.write_all(&rtmp_command(0, "frobnicate", 7.0, vec![Amf0Value::Null]))
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    assert!(
        buf[..n].windows(6).any(|w| w == b"_error"),
        "no _error reply: {:?}",
        &buf[..n]
    );
    assert!(
        !closed_within(&mut s, Duration::from_millis(500)),
        "closed after an unknown command"
    );

    // Play of a stream that does not exist, and publish to it (rooms are not
    // auto-created here): ffmpeg fails fast, with the server's reason.
    let (v, _, log) = ffmpeg_rtmp_play(&gw.rtmp_url("nowhere"), 2, Duration::from_secs(10));
    assert_eq!(v, 0, "{log}");
    let mut p = ffmpeg_rtmp_publish(&gw, "nowhere", 3);
    assert!(
        wait_bounded(&mut p, Duration::from_secs(10)),
        "publish to a missing room kept going"
    );
    assert!(!p.wait().unwrap().success());

    // A publisher whose participant name has a bad character: refused.
    let mut second = ffmpeg_rtmp_publish(&gw, "main/a.b", 5);
    assert!(
        wait_bounded(&mut second, Duration::from_secs(10)),
        "publisher with a bad name kept going"
    );
    assert!(!second.wait().unwrap().success());

    // Through all of it, the stream still plays.
    let (video, audio, log) = ffmpeg_rtmp_play(&gw.rtmp_url("main"), 3, Duration::from_secs(20));
    assert!(
        video >= 60 && audio >= 100,
        "{video} video / {audio} audio frames:\n{log}"
    );
}

/// WebRTC → RTMP: an aiortc WHIP publisher's H264 is repacketized (not
/// re-encoded) into FLV and its Opus transcoded to AAC for ffmpeg RTMP
/// players; the join asks the publisher for a keyframe.
#[test]
fn a_whip_publisher_is_played_over_rtmp() {
    let gw = Gateway::start(2, &[]);
    let mut publisher = AiortcPublisher::start(&gw, "bridge", 12.0, &["--encode"]);
    publisher.connected();
    let (video, _, log) = ffmpeg_rtmp_play(&gw.rtmp_url("bridge"), 3, Duration::from_secs(20));
    assert!(
        video >= 60,
        "decoded {video} video frames over RTMP:\n{log}"
    );
    let streams = ffprobe_streams(&gw.rtmp_url("bridge"));
    assert!(
        streams
            .iter()
            .any(|s| s["codec_name"] == "h264" && s["width"] == 640 && s["height"] == 360),
        "{streams:?}"
    );
    assert!(
        streams
            .iter()
            .any(|s| s["codec_name"] == "aac" && s["sample_rate"] == "48000"),
        "{streams:?}"
    );
    let whip = gw.session_of_kind("bridge", "whip");
    assert!(
        whip["stats"]["keyframe_requests"].as_u64().unwrap() >= 1,
        "{whip}"
    );
}

/// RTMP → WebRTC: an ffmpeg RTMP publisher's H264 is packetized (STAP-A
/// parameter sets before each IDR, FU-A) and its AAC transcoded to Opus for
/// an aiortc WHEP player, which gets the cached GOP (the router's track
/// cache) at the first frame boundary after DTLS completes (an RTMP
/// publisher cannot be asked for a keyframe).
#[test]
fn an_rtmp_publisher_is_played_over_whep() {
    let gw = Gateway::start(2, &[]);
    let _publisher = Reap(ffmpeg_rtmp_publish(&gw, "rw", 20));
    wait_for_stream(&gw, "rw");
    let play = aiortc_play(&gw, "rw", 4.0, &[]);
    eprintln!("aiortc WHEP player of an RTMP publish: {play}");
    assert!(play["video_frames"].as_u64().unwrap() >= 60, "{play}");
    assert_eq!(
        (play["width"].as_u64(), play["height"].as_u64()),
        (Some(640), Some(360))
    );
    eprintln!(
        "RTMP → WHEP: offer POST to first decoded frame {:.0} ms",
        play["first_frame_ms"].as_f64().unwrap()
    );
}

/// Added delay WHIP → RTMP through the gateway. The bridge stamps FLV time
/// from the arrival of the first RTP packet after the first player's `play`
/// (plus RTP time since), so for that player `receive time − FLV time`
/// measures what the gateway and TCP add, to within one frame interval. The
/// publisher paces the clip in real time. Printed for the notes.
#[test]
fn whip_to_rtmp_added_delay() {
    use rml_rtmp::sessions::{
        ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult,
    };
    let gw = Gateway::start(1, &[]);
    let mut publisher = AiortcPublisher::start(&gw, "delay", 12.0, &[]);
    publisher.connected();
    let mut s = rtmp_raw(&gw);
    let (mut session, _) = ClientSession::new(ClientSessionConfig::new()).unwrap();
    let send = |s: &mut std::net::TcpStream, r: ClientSessionResult| {
        if let ClientSessionResult::OutboundResponse(p) = r {
            s.write_all(&p.bytes).unwrap();
        }
    };
    let r = session.request_connection("live".into()).unwrap();
    send(&mut s, r);
    let mut t_play = None;
    let mut frames: Vec<(f64, u32)> = Vec::new();
    let mut buf = vec![0u8; 65536];
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    while std::time::Instant::now() < deadline && frames.len() < 120 {
        let n = match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => continue,
        };
        let now = std::time::Instant::now();
        for r in session.handle_input(&buf[..n]).unwrap() {
            match r {
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted) => {
                    let r = session.request_playback("delay".into()).unwrap();
                    send(&mut s, r);
                    t_play = Some(std::time::Instant::now());
                }
                ClientSessionResult::RaisedEvent(ClientSessionEvent::VideoDataReceived {
                    timestamp,
                    data,
                }) if data.len() > 1 && data[1] == 1 => {
                    let since = now.duration_since(t_play.unwrap()).as_secs_f64() * 1000.0;
                    frames.push((since, timestamp.value));
                }
                other => send(&mut s, other),
            }
        }
    }
    assert!(
        frames.len() >= 60,
        "{} video frames over RTMP",
        frames.len()
    );
    assert!(
        frames.windows(2).all(|w| w[1].1 >= w[0].1),
        "FLV time goes back"
    );
    let mut delays: Vec<f64> = frames.iter().map(|(r, ts)| r - *ts as f64).collect();
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    eprintln!(
        "WHIP → RTMP added delay over {} frames: min {:.0} ms, median {:.0} ms, max {:.0} ms",
        delays.len(),
        delays[0],
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
}

/// RTMP clients are participants: listed in the room with role and peer,
/// counted in `/metrics`, removable through the API, and gone from the list
/// when they leave.
#[test]
fn rtmp_clients_are_participants_of_the_room() {
    let gw = Gateway::start(2, &[]);
    let mut publisher = ffmpeg_rtmp_publish(&gw, "party", 20);
    wait_for_stream(&gw, "party");
    let url = gw.rtmp_url("party");
    let player = std::thread::spawn(move || ffmpeg_rtmp_play(&url, 8, Duration::from_secs(20)));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let live = |gw: &Gateway| -> Vec<Value> {
        gw.room_sessions("party")
            .into_iter()
            .filter(|s| s["state"] == "live")
            .collect()
    };
    loop {
        let kinds: Vec<String> = live(&gw)
            .iter()
            .map(|s| s["kind"].as_str().unwrap_or("").to_string())
            .collect();
        if kinds.contains(&"rtmp_publish".into()) && kinds.contains(&"rtmp_play".into()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "participants: {kinds:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let player_session = live(&gw)
        .into_iter()
        .find(|s| s["kind"] == "rtmp_play")
        .unwrap();
    assert!(
        player_session["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{player_session}"
    );
    assert_eq!(
        gw.healthz().1["udp_ports"]["in_use"],
        0,
        "RTMP holds no UDP port"
    );
    // Their counters come from the dataplane like any session's.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let counted: Vec<u64> = live(&gw)
            .iter()
            .map(|s| s["stats"]["bytes"].as_u64().unwrap_or(0))
            .collect();
        if counted.len() == 2 && counted.iter().all(|&b| b > 10_000) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "RTMP byte counters: {counted:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Removing the player through the API closes its connection.
    let id = id_of(&player_session);
    assert_eq!(
        gw.delete(&format!("/v1/rooms/party/participants/{id}")).0,
        204
    );
    let (video, _, _) = player.join().unwrap();
    assert!(
        video < 8 * 30,
        "the player was cut off early ({video} frames)"
    );
    // The publisher leaves: it ends too.
    stop(&mut publisher, Duration::from_secs(2));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !live(&gw).is_empty() {
        assert!(std::time::Instant::now() < deadline, "{:?}", live(&gw));
        std::thread::sleep(Duration::from_millis(200));
    }
    let ended = gw.session_of_kind("party", "rtmp_publish");
    assert_eq!(ended["end_reason"], "RTMP connection closed", "{ended}");
}

/// AAC at 44.1 kHz mono (what phones and OBS presets send) reaches a WHEP
/// player as 48 kHz Opus at its pitch: resampled, not played 9 % fast (a
/// 1 kHz tone read as 48 kHz would sound at 1088 Hz), and not dropped.
#[test]
fn aac_at_44_1_khz_mono_is_heard_over_whep_at_its_pitch() {
    let gw = Gateway::start(1, &[]);
    let clip = clip_sized(320, 240, 1000);
    let aac_44k_mono = ["-c:v", "copy", "-c:a", "aac", "-ar", "44100", "-ac", "1"];
    let _publisher = Reap(ffmpeg_rtmp_push_with(
        &gw,
        "tone/phone",
        &clip,
        30,
        &aac_44k_mono,
    ));
    wait_for_stream(&gw, "tone/phone");
    let streams = ffprobe_streams(&gw.rtmp_url("tone/phone"));
    assert!(
        streams
            .iter()
            .any(|s| s["codec_name"] == "aac" && s["sample_rate"] == "44100"),
        "the push is 44.1 kHz AAC: {streams:?}"
    );
    let play = aiortc_play(&gw, "tone", 4.0, &["--tones", "1000,1088"]);
    eprintln!("aiortc WHEP player of 44.1 kHz mono AAC: {play}");
    assert!(play["audio_frames"].as_u64().unwrap_or(0) >= 100, "{play}");
    let e = |hz: &str| play["tone_energy"][hz].as_f64().unwrap_or(0.0);
    assert!(
        e("1000") > 100.0 * e("1088") && e("1000") > 0.0,
        "the tone at 1 kHz, not 1088 Hz: {play}"
    );
}

/// Media the bridge cannot carry to WebRTC is named in a room event, not
/// met with silence: an RTMP push with MP3 audio gets `media_warning`
/// naming MP3 (once), its H264 still reaches a WHEP player, and RTMP
/// players get the MP3 as it is.
#[test]
fn media_that_cannot_be_bridged_is_named_in_an_event() {
    let gw = Gateway::start(1, &[]);
    gw.room("mp3");
    let mut events = gw.events("mp3");
    let clip = clip_sized(320, 240, 440);
    let mp3 = ["-c:v", "copy", "-c:a", "libmp3lame", "-ar", "44100"];
    let _publisher = Reap(ffmpeg_rtmp_push_with(&gw, "mp3/radio", &clip, 30, &mp3));
    let e = events.next_matching(Duration::from_secs(15), |e| e["event"] == "media_warning");
    eprintln!("{e}");
    assert_eq!(e["participant"], "radio", "{e}");
    let reason = e["reason"].as_str().unwrap_or("");
    assert!(reason.contains("MP3") && reason.contains("audio"), "{e}");
    let play = aiortc_play(&gw, "mp3", 3.0, &[]);
    assert!(play["video_frames"].as_u64().unwrap_or(0) >= 45, "{play}");
    let streams = ffprobe_streams(&gw.rtmp_url("mp3/radio"));
    assert!(
        streams.iter().any(|s| s["codec_name"] == "mp3"),
        "{streams:?}"
    );
    // Said once, not at every packet.
    let again = events.try_next_matching(Duration::from_secs(2), |e| e["event"] == "media_warning");
    assert!(again.is_none(), "{again:?}");
}

/// (packets, packets whose presentation time is not their decode time) of
/// the first `secs` of `url`'s video, as ffprobe reads them.
fn composition_times(url: &str, secs: u32) -> (usize, usize) {
    let out = std::process::Command::new("timeout")
        .args(["-s", "KILL", "20", "ffprobe", "-v", "error"])
        .args(["-select_streams", "v", "-show_entries", "packet=pts,dts"])
        .args([
            "-read_intervals",
            &format!("%+{secs}"),
            "-of",
            "csv=p=0",
            url,
        ])
        .output()
        .expect("run ffprobe");
    let text = String::from_utf8_lossy(&out.stdout);
    let packets: Vec<(i64, i64)> = text
        .lines()
        .filter_map(|l| {
            let (p, d) = l.split_once(',')?;
            Some((p.parse().ok()?, d.parse().ok()?))
        })
        .collect();
    let reordered = packets.iter().filter(|(p, d)| p != d).count();
    (packets.len(), reordered)
}

/// RTMP publishers with B-frames (x264 `-bf 2`, as OBS sends by
/// default), two on a shard that re-encodes one (`--bframe-reencodes 1`):
/// RTMP and HTTP-FLV players get the composition times intact; WHEP
/// players (aiortc) decode every frame of both, with presentation times
/// that never go back: the first re-encoded without B-frames, the second
/// as it is (RTP time is presentation time, for decoders that reorder).
/// The room is told which, and the encoder setting that spares it.
#[test]
fn b_frames_from_rtmp_play_in_order_everywhere() {
    let gw = Gateway::start(1, &["--bframe-reencodes", "1"]);
    let clip = clip_sized(320, 240, 440);
    let mut pushes = Vec::new();
    for (room, says) in [("bf", "is re-encoded"), ("bf2", "already re-encodes 1")] {
        gw.room(room);
        let mut events = gw.events(room);
        pushes.push(Reap(ffmpeg_rtmp_push_x264(
            &gw,
            &format!("{room}/obs"),
            &clip,
            60,
            2,
        )));
        wait_for_stream(&gw, &format!("{room}/obs"));
        let e = events.next_matching(Duration::from_secs(10), |e| e["event"] == "media_warning");
        let reason = e["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("B-frames") && reason.contains(says) && reason.contains("bframes=0"),
            "{e}"
        );
    }
    for url in [gw.rtmp_url("bf/obs"), gw.flv_url("bf/obs", "")] {
        let (packets, reordered) = composition_times(&url, 3);
        eprintln!("{url}: {packets} video packets, {reordered} with pts != dts");
        assert!(
            packets >= 60 && reordered * 3 >= packets,
            "{url}: {packets}/{reordered}"
        );
    }
    for room in ["bf", "bf2"] {
        let play = aiortc_play(&gw, room, 5.0, &[]);
        eprintln!("aiortc WHEP player of a B-frame push ({room}): {play}");
        let frames = play["video_frames"].as_u64().unwrap_or(0);
        assert!(frames >= 135, "5 s at 30 fps, 90 %: {play}");
        assert_eq!(play["video_pts_backwards"], 0, "{play}");
    }
}

/// An enhanced RTMP (E-RTMP) push, as OBS 30 and FFmpeg 7+ send HEVC and
/// AV1 (FourCC `hvc1`, `av01`, `vp09` in the ExVideoTagHeader), is played as it
/// is: a player that joins a second and a half in gets the sequence header
/// and the cached GOP from its keyframe, over RTMP and HTTP-FLV, and
/// decodes the codec at once. WebRTC players get it transcoded to H264 on
/// the re-encode thread (aiortc decodes it), and the room is told so.
#[test]
fn an_enhanced_rtmp_push_plays_as_it_is_from_the_gop_cache() {
    let gw = Gateway::start(1, &[]);
    for (codec, fourcc) in [("av1", "av01"), ("hevc", "hvc1"), ("vp9", "vp09")] {
        let room = format!("ex{codec}");
        gw.room(&room);
        let mut events = gw.events(&room);
        let url = gw.rtmp_url(&format!("{room}/cam"));
        let _push = Reap(
            pyav_ertmp(&["push", &url, codec, "30"])
                .spawn()
                .expect("python"),
        );
        let e = events.next_matching(Duration::from_secs(15), |e| e["event"] == "media_warning");
        let reason = e["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains(fourcc) && reason.contains("transcoded to H264"),
            "{e}"
        );
        // In the middle of a GOP (a keyframe a second): the cache starts
        // the player at the last keyframe, not at the next one.
        wait_for(
            "a second and a half of the push",
            Duration::from_secs(15),
            || gw.session_of_kind(&room, "rtmp_publish"),
            |s| s["stats"]["packets"].as_u64().unwrap_or(0) >= 45,
        );
        let flv = gw.flv_url(&format!("{room}/cam"), "");
        for (over, url) in [("RTMP", &url), ("HTTP-FLV", &flv)] {
            let out = pyav_ertmp(&["play", url, "2"]).output().expect("python");
            let report: Value = serde_json::from_slice(
                out.stdout
                    .split(|&b| b == b'\n')
                    .find(|l| l.starts_with(b"{"))
                    .unwrap_or(b"null"),
            )
            .unwrap_or(Value::Null);
            eprintln!("{codec} over {over}: {report}");
            assert_eq!(
                report["codec"],
                codec,
                "{over}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                gw.logs()
            );
            assert_eq!(report["first_packet_key"], true, "{over}: {report}");
            assert!(report["errors"].is_null(), "{over}: {report}");
            assert_eq!(report["size"], json!([320, 240]), "{over}: {report}");
            // 2 s of a 30 fps stream, the cached GOP's frames first.
            assert!(
                report["frames"].as_u64().unwrap_or(0) >= 45,
                "{over}: {report}"
            );
        }
        // A browser's side: H264 from the re-encode thread, which started
        // from the cached GOP.
        let play = aiortc_play(&gw, &room, 3.0, &[]);
        eprintln!("{codec} to a WebRTC player: {play}");
        assert!(
            play["video_frames"].as_u64().unwrap_or(0) >= 45,
            "{play}\n{}",
            gw.logs()
        );
    }
}
