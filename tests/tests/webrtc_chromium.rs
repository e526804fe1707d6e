//! A real browser through the gateway: headless Chromium (Debian's, which
//! sends H264 with OpenH264) publishes its fake camera from the gateway's
//! demo page over WHIP, and a second page plays the room over WHEP.

use std::process::Command;

use e2e::*;

/// One Chromium at a time: these tests measure frame rates, bitrates and
/// recovery from loss on a 2-core machine, where a second browser encoding
/// beside them skews what they measure (the lossy publisher's RTMP player
/// fell from 91-99 % to 44-77 % of its frames in some parallel runs).
fn one_browser_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());
    BROWSER.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh path for a screenshot kept with the test artifacts.
fn screenshot(name: &str) -> std::path::PathBuf {
    let shot = target_dir().join("e2e-logs").join(name);
    let _ = std::fs::create_dir_all(shot.parent().unwrap());
    let _ = std::fs::remove_file(&shot);
    shot
}

/// `node SCRIPT ARGS...` in the drivers' directory, killed after `secs`.
fn driver(script: &str, args: &[&std::ffi::OsStr], secs: u32) -> Command {
    let dir = chromium_driver_dir();
    let mut cmd = Command::new("timeout");
    cmd.args(["-s", "KILL", &secs.to_string(), "node"])
        .arg(dir.join(script))
        .args(args)
        .current_dir(&dir);
    cmd
}

/// The driver's report: its last stdout line, as JSON.
fn report(gw: &Gateway, out: &std::process::Output, what: &str) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or("")).unwrap_or_else(|_| {
        panic!(
            "no report from {what} ({}): {text}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            gw.logs()
        )
    })
}

/// Chromium publishes its fake camera in `codec` (`video/{mime}` in its
/// stats) from the demo page, and a second page plays the room: returns
/// the driver's report once both pages decoded and sent, after the common
/// checks (no errors, at least 30 frames decoded and still growing, the
/// codec on both sides, the WHIP session's track codec in the API, the
/// player's join asked the publisher for a keyframe).
///
/// Meanwhile mini-programs play it: ffmpeg as an RTMP player of the
/// publisher and as an HTTP-FLV player of the room's program, both
/// decoding H264 (a copy of H264, VP8, VP9 and AV1 transcoded).
fn publish_and_play(codec: &str, mime: &str, room: &str) -> (Gateway, Value) {
    // npm and apt (if needed) before the namespace, which has no network.
    let _driver = chromium_driver_dir();
    // This test thread and everything it starts live in a fresh namespace.
    let _ns = Netns::enter();
    let gw = Gateway::start(1, &[]);
    let shot = screenshot(&format!("chromium-player-{codec}.png"));
    let browser = {
        let args: Vec<std::ffi::OsString> = vec![
            gw.api.clone().into(),
            room.into(),
            // Seconds the player page plays: long enough for the
            // mini-programs' players below.
            "8".into(),
            shot.clone().into(),
            ADMIN_KEY.into(),
            codec.into(),
        ];
        std::thread::spawn(move || {
            let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
            driver("chromium_whip.js", &args, 90)
                .output()
                .expect("run node")
        })
    };
    let rtmp_players = mini_programs_play(&gw, room);
    let out = browser.join().unwrap();
    let report = report(&gw, &out, "the Chromium driver");
    eprintln!("chromium {codec}: {report}");
    assert!(report["error"].is_null(), "{report}\n{}", gw.logs());
    assert!(report["publisher_error"].is_null(), "{report}");
    assert!(report["player_error"].is_null(), "{report}");
    let player = &report["player"];
    assert!(player["framesDecoded"].as_u64().unwrap() >= 30, "{report}");
    assert_eq!(player["mimeType"], mime, "{report}");
    assert_eq!(report["publisher"]["mimeType"], mime, "{report}");
    let later = report["player_later"]["framesDecoded"].as_u64().unwrap();
    assert!(
        later > player["framesDecoded"].as_u64().unwrap(),
        "framesDecoded stopped growing: {report}"
    );
    let png = std::fs::read(&shot).expect("screenshot of the playing page");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!("screenshot: {}", shot.display());
    assert!(
        report["publisher"]["framesSent"].as_u64().unwrap() > 0,
        "{report}"
    );
    eprintln!(
        "Chromium {codec} WHEP set-up to first decoded frame: {:.0} ms",
        player["firstFrameMs"].as_f64().unwrap()
    );
    let whip = gw.session_of_kind(room, "whip");
    let video = whip["tracks"]
        .as_array()
        .and_then(|t| t.iter().find(|t| t["kind"] == "video"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(video["codec"], codec, "{whip}");
    // The player's join asked the publisher for a keyframe.
    assert!(
        whip["stats"]["keyframe_requests"].as_u64().unwrap() >= 1,
        "{whip}"
    );
    assert_eq!(whip["stats"]["drops"]["auth_failed"], 0, "{whip}");
    // The player offered transport-cc: each packet it got carried our
    // transport-wide number, and its feedback gave an estimate of its path.
    let whep = gw.session_of_kind(room, "whep");
    let estimate = whep["stats"]["estimate_bps"].as_u64().unwrap_or(0);
    eprintln!("Chromium {codec} player's path estimate: {estimate} bit/s");
    assert!(estimate >= 100_000, "{whep}");
    let ((probed, rtmp, rtmp_log), (flv, flv_log)) = rtmp_players;
    eprintln!(
        "{codec} from Chromium to mini-programs as {probed:?}: {rtmp} frames in 3 s over RTMP, \
         {flv} over HTTP-FLV (the program)"
    );
    assert_eq!(probed.as_deref(), Some("h264"), "{rtmp_log}\n{}", gw.logs());
    assert!(
        rtmp >= 20,
        "{rtmp} frames over RTMP in 3 s\n{rtmp_log}\n{}",
        gw.logs()
    );
    assert!(flv >= 20, "{flv} frames over HTTP-FLV in 3 s\n{flv_log}");
    (gw, report)
}

/// What mini-programs get of the room's browser publisher once it is up:
/// ffprobe's video codec and ffmpeg's decoded frames in 3 s over RTMP
/// (`live/ROOM/NAME`), and ffmpeg's over HTTP-FLV of the program
/// (`live/ROOM.flv`), played at once.
#[allow(clippy::type_complexity)]
fn mini_programs_play(
    gw: &Gateway,
    room: &str,
) -> ((Option<String>, usize, String), (usize, String)) {
    let publisher = wait_for(
        "the browser's WHIP session",
        std::time::Duration::from_secs(40),
        || {
            // The room is made by the WHIP offer: 404 until then.
            let (_, v) = gw.get(&format!("/v1/rooms/{room}"));
            let ingests = v["ingests"].as_array().cloned().unwrap_or_default();
            ingests
                .into_iter()
                .find(|s| s["kind"] == "whip" && s["state"] == "live")
        },
        Option::is_some,
    )
    .unwrap();
    let name = publisher["participant"].as_str().unwrap().to_string();
    let rtmp = gw.rtmp_url(&format!("{room}/{name}"));
    let flv = gw.flv_url(room, "");
    wait_playing(&rtmp);
    let secs = std::time::Duration::from_secs(20);
    let (rtmp2, flv2) = (rtmp.clone(), flv.clone());
    let over_rtmp = std::thread::spawn(move || ffmpeg_rtmp_play(&rtmp2, 3, secs));
    let over_flv = std::thread::spawn(move || ffmpeg_rtmp_play(&flv2, 3, secs));
    let probed = ffprobe_streams(&rtmp)
        .into_iter()
        .find(|s| s["width"].is_number())
        .and_then(|s| s["codec_name"].as_str().map(str::to_string));
    let (rtmp_frames, _, rtmp_log) = over_rtmp.join().unwrap();
    let (flv_frames, _, flv_log) = over_flv.join().unwrap();
    ((probed, rtmp_frames, rtmp_log), (flv_frames, flv_log))
}

#[test]
fn chromium_publishes_and_another_chromium_page_plays() {
    let _browser = one_browser_at_a_time();
    let (_gw, report) = publish_and_play("H264", "video/H264", "browser");
    // The demo page lists the room and its participants for the operator.
    let rooms = report["rooms_table"].as_str().unwrap_or("");
    assert!(
        rooms.contains("browser") && rooms.contains("whip"),
        "{report}"
    );
}

/// A browser that publishes VP8 (the first codec of Chrome's and
/// Firefox's default offers) is forwarded as VP8 to a browser that plays.
#[test]
fn chromium_publishes_vp8_and_another_chromium_page_plays_it() {
    let _browser = one_browser_at_a_time();
    publish_and_play("VP8", "video/VP8", "vp8");
}

/// VP9 (profile 0) through the SFU as it came.
#[test]
fn chromium_publishes_vp9_and_another_chromium_page_plays_it() {
    let _browser = one_browser_at_a_time();
    let (_gw, report) = publish_and_play("VP9", "video/VP9", "vp9");
    let fmtp = report["player"]["sdpFmtpLine"].as_str().unwrap_or("");
    assert!(!fmtp.contains("profile-id=2"), "{report}");
}

/// AV1 through the SFU as it came (Chromium encodes it with libaom in
/// software: slow on 2 cores, but 30 frames in the 4 s it plays).
#[test]
fn chromium_publishes_av1_and_another_chromium_page_plays_it() {
    let _browser = one_browser_at_a_time();
    publish_and_play("AV1", "video/AV1", "av1");
}

/// The call the product exists for: a mini-program (ffmpeg: RTMP push to
/// `live/ROOM/bob`, RTMP play of `live/ROOM/alice`) is in the room first,
/// then a browser joins the call on the demo page as alice. Each decodes
/// the other; the page labels bob's tile with his name.
#[test]
fn the_demo_page_holds_a_call_with_a_mini_program() {
    let _browser = one_browser_at_a_time();
    let _driver = chromium_driver_dir();
    let _ns = Netns::enter();
    let gw = Gateway::start(1, &[]);
    let room = "call";
    gw.room(room);
    let mut bob = ffmpeg_rtmp_push(&gw, &format!("{room}/bob"), &clip_sized(320, 240, 660), 60);
    let shot = screenshot("chromium-call.png");
    let args = [
        gw.api.as_ref(),
        room.as_ref(),
        "alice".as_ref(),
        "6".as_ref(),
        shot.as_os_str(),
    ];
    let page = driver("chromium_call.js", &args, 90)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run node");
    // The mini-program plays alice once she is in.
    let alice = gw.rtmp_url(&format!("{room}/alice"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let t_join = loop {
        let (_, v) = gw.get(&format!("/v1/rooms/{room}"));
        let there = v["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["name"] == "alice");
        if there {
            break std::time::Instant::now();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "alice never joined: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (video, audio, log) = ffmpeg_rtmp_play(&alice, 3, std::time::Duration::from_secs(30));
    eprintln!(
        "mini-program: alice's first 3 s decoded {:?} after she joined",
        t_join.elapsed()
    );
    // Chromium's encoder starts low (loss-based ramp-up): 19-30 fps here.
    assert!(
        video >= 30 && audio >= 100,
        "{video} video / {audio} audio\n{log}\n{}\n{:?}",
        gw.logs(),
        gw.get(&format!("/v1/rooms/{room}"))
    );
    let out = page.wait_with_output().expect("node output");
    let report = report(&gw, &out, "the call page");
    eprintln!("call page: {report}");
    assert!(report["error"].is_null(), "{report}\n{}", gw.logs());
    assert_eq!(report["participant"], "alice", "{report}");
    let tiles = report["tiles"].as_array().unwrap();
    let bob_tile = tiles
        .iter()
        .find(|t| t["name"] == "bob")
        .unwrap_or_else(|| panic!("no tile labelled bob: {report}"));
    assert!(
        bob_tile["framesDecoded"].as_u64().unwrap() >= 60,
        "{report}"
    );
    assert_eq!(
        (bob_tile["width"].as_u64(), bob_tile["height"].as_u64()),
        (Some(320), Some(240)),
        "{report}"
    );
    assert!(
        tiles.iter().all(|t| t["name"] != "alice"),
        "her own tile: {report}"
    );
    assert!(
        report["urls"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("/live/{room}/alice")),
        "{report}"
    );
    let png = std::fs::read(&shot).expect("screenshot of the call page");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    eprintln!(
        "browser: bob's first frame {:.0} ms after joining; screenshot {}",
        report["first_other_frame_ms"].as_f64().unwrap_or(-1.0),
        shot.display()
    );
    stop(&mut bob, std::time::Duration::from_secs(1));
}

/// The call page between two browsers: alice joins, then bob; each page
/// shows the other's video under the other's name (alice's line was named
/// by the signalling's `line_changed` event, bob's by the answer's
/// `a=msid`), both list both, and alice's chat message reaches bob.
#[test]
fn two_call_pages_see_each_other_by_name_and_chat() {
    two_call_pages("H264");
}

/// The same call with both pages sending VP8: alice's lines, answered
/// before bob came, carry VP8 beside H264, so bob's VP8 reaches her.
#[test]
fn two_call_pages_in_vp8_see_each_other() {
    two_call_pages("VP8");
}

fn two_call_pages(codec: &str) {
    let _browser = one_browser_at_a_time();
    let _driver = chromium_driver_dir();
    let _ns = Netns::enter();
    let gw = Gateway::start(1, &[]);
    gw.room("duo");
    let shot = screenshot(&format!("chromium-duo-{codec}.png"));
    let args = [
        gw.api.as_ref(),
        "duo".as_ref(),
        shot.as_os_str(),
        codec.as_ref(),
    ];
    let out = driver("chromium_duo.js", &args, 120)
        .output()
        .expect("run node");
    let report = report(&gw, &out, "the call pages");
    eprintln!("call pages: {report}");
    assert!(report["error"].is_null(), "{report}\n{}", gw.logs());
    for (me, other) in [("alice", "bob"), ("bob", "alice")] {
        let page = &report[me];
        assert!(page["error"].is_null(), "{report}");
        let tiles = page["tiles"].as_array().unwrap();
        assert!(
            tiles
                .iter()
                .any(|t| t["name"] == other && t["framesDecoded"].as_u64().unwrap_or(0) >= 30),
            "{me} does not see {other}: {report}"
        );
        let mime = format!("video/{codec}");
        assert!(
            tiles
                .iter()
                .any(|t| t["name"] == other && t["mimeType"] == mime.as_str()),
            "{me} sees {other} in another codec than {codec}: {report}"
        );
        assert!(
            tiles.iter().all(|t| t["name"] != me),
            "{me} sees itself: {report}"
        );
        assert_eq!(page["people"], json!(["alice", "bob"]), "{report}");
    }
    assert_eq!(
        report["bob"]["chat"],
        json!([{ "from": "alice", "text": "hello bob" }])
    );
    let png = std::fs::read(&shot).expect("screenshot of the call page");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000);
    eprintln!(
        "join to the other's first frame: bob sees alice {:.0} ms, alice sees bob {:.0} ms (from her own join, bob came later); screenshot {}",
        report["bob_sees_alice_ms"].as_f64().unwrap_or(-1.0),
        report["alice_sees_bob_ms"].as_f64().unwrap_or(-1.0),
        shot.display()
    );
}

/// flv.js on the demo page plays a mini-program's push over HTTP-FLV, as
/// the mini-program's own `live-player` would: the script comes from the
/// gateway (no CDN), the first picture from the GOP cache, and decoded
/// frames keep growing.
#[test]
fn flv_js_on_the_demo_page_plays_http_flv() {
    let _browser = one_browser_at_a_time();
    let _driver = chromium_driver_dir();
    let _ns = Netns::enter();
    let gw = Gateway::start(1, &[]);
    gw.room("flvjs");
    let clip = clip_sized(320, 240, 440);
    let _bob = Reap(ffmpeg_rtmp_push(&gw, "flvjs/bob", &clip, 60));
    wait_playing(&gw.rtmp_url("flvjs/bob"));
    let shot = screenshot("chromium-flvjs.png");
    let args = [
        gw.api.as_ref(),
        "flvjs".as_ref(),
        "bob".as_ref(),
        "3".as_ref(),
        shot.as_os_str(),
    ];
    let out = driver("chromium_flv.js", &args, 90)
        .output()
        .expect("run node");
    let report = report(&gw, &out, "the flv.js driver");
    eprintln!("flv.js: {report}");
    assert!(report["error"].is_null(), "{report}\n{}", gw.logs());
    let (first, later) = (&report["first"], &report["later"]);
    assert_eq!(
        (later["width"].as_u64(), later["height"].as_u64()),
        (Some(320), Some(240)),
        "{report}"
    );
    assert!(
        later["frames"].as_u64().unwrap_or(0) >= first["frames"].as_u64().unwrap_or(0) + 45,
        "3 s more at 30 fps: {report}"
    );
    assert!(
        report["script"].as_array().is_some_and(|s| s
            .iter()
            .any(|u| u.as_str().unwrap_or("").ends_with("/vendor/flv.min.js"))),
        "{report}"
    );
}

/// Chromium and an RTMP publisher's B-frames (x264 `-bf 2`, OBS's
/// default). Chromium's WebRTC decoder takes the output delay B-frames need
/// for an error and drops what follows, whatever the RTP times (measured
/// before: 7-9 of 150 frames in 5 s), so the gateway re-encodes such a
/// push without B-frames for its WebRTC players: it plays every frame,
/// none dropped, presented in order, like the same push without B-frames
/// in the same run. The room is told, with the encoder setting that
/// spares the cost.
#[test]
fn chromium_plays_an_rtmp_push_with_b_frames_reencoded() {
    let _browser = one_browser_at_a_time();
    let _driver = chromium_driver_dir();
    let _ns = Netns::enter();
    let gw = Gateway::start(1, &[]);
    let clip = clip_sized(320, 240, 440);
    let play = |room: &str| {
        let args = [gw.api.as_ref(), room.as_ref(), "5".as_ref()];
        let out = driver("chromium_play.js", &args, 90)
            .output()
            .expect("run node");
        let report = report(&gw, &out, "the Chromium player");
        assert!(report["error"].is_null(), "{report}\n{}", gw.logs());
        let decoded = report["later"]["framesDecoded"].as_u64().unwrap_or(0)
            - report["first"]["framesDecoded"].as_u64().unwrap_or(0);
        (report, decoded)
    };
    // Over the 5 s played: every frame decoded, none dropped, none shown
    // out of order. At the join Chromium may skip some of the cached GOP's
    // older frames, replayed at once, to catch up with live (seen for the
    // re-encoded push: none in six runs, 40 in one): before the window.
    let plays_in_order = |report: &Value, decoded: u64| {
        assert!(decoded >= 135, "5 s at 30 fps, 90 %: {report}");
        let dropped = |at: &str| report[at]["framesDropped"].as_u64().unwrap_or(0);
        assert_eq!(dropped("later"), dropped("first"), "{report}");
        assert_eq!(report["later"]["presented"]["backwards"], 0, "{report}");
    };

    gw.room("bfc");
    let mut events = gw.events("bfc");
    let bframes = Reap(ffmpeg_rtmp_push_x264(&gw, "bfc/obs", &clip, 60, 2));
    wait_playing(&gw.rtmp_url("bfc/obs"));
    let e = events.next_matching(std::time::Duration::from_secs(10), |e| {
        e["event"] == "media_warning"
    });
    let reason = e["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("B-frames")
            && reason.contains("re-encoded")
            && reason.contains("bframes=0"),
        "{e}"
    );
    let (report, decoded) = play("bfc");
    eprintln!("chromium, x264 -bf 2, re-encoded: {decoded} frames decoded in 5 s: {report}");
    plays_in_order(&report, decoded);
    drop(bframes);

    let _plain = Reap(ffmpeg_rtmp_push_x264(&gw, "nob/obs", &clip, 60, 0));
    wait_playing(&gw.rtmp_url("nob/obs"));
    let (report, decoded) = play("nob");
    eprintln!("chromium, x264 -bf 0: {decoded} frames decoded in 5 s: {report}");
    plays_in_order(&report, decoded);
}

/// A Chromium player's line changes publisher mid-stream, VP8 to VP8: "a"
/// (640x360) publishes, leaves, and "b" (320x240) comes; the line takes b
/// at b's keyframe (asked for), its picture ids going on from a's (the
/// net tests check the numbers), and Chromium decodes through the change:
/// a's pictures first, b's at the end, nothing dropped.
#[test]
fn a_chromium_players_vp8_line_changes_publisher_and_decodes_on() {
    let _browser = one_browser_at_a_time();
    let _driver = chromium_driver_dir();
    let _ns = Netns::enter();
    let gw = Gateway::start(1, &[]);
    gw.room("swap");
    let vp8 = ["--codec", "vp8"];
    let mut a = AiortcPublisher::start_with(&gw, "swap?participant=a", &clip(), 6.0, &vp8);
    a.connected();
    let page = {
        let api = gw.api.clone();
        std::thread::spawn(move || {
            driver(
                "chromium_play.js",
                &[api.as_ref(), "swap".as_ref(), "10".as_ref()],
                90,
            )
            .output()
            .expect("run node")
        })
    };
    assert_eq!(a.finish()["deleted"], 200);
    let b_clip = clip_sized(320, 240, 660);
    let mut b = AiortcPublisher::start_with(&gw, "swap?participant=b", &b_clip, 10.0, &vp8);
    b.connected();
    let out = page.join().unwrap();
    let report = report(&gw, &out, "the Chromium player");
    eprintln!("chromium, VP8 a then b: {report}");
    assert!(report["error"].is_null(), "{report}\n{}", gw.logs());
    assert_eq!(report["later"]["mimeType"], "video/VP8", "{report}");
    assert_eq!(report["first"]["frameWidth"], 640, "a's first: {report}");
    assert_eq!(
        report["later"]["frameWidth"], 320,
        "b's at the end: {report}"
    );
    let decoded = report["later"]["framesDecoded"].as_u64().unwrap_or(0)
        - report["first"]["framesDecoded"].as_u64().unwrap_or(0);
    assert!(decoded >= 60, "{decoded} frames in 10 s: {report}");
    assert_eq!(report["later"]["framesDropped"], 0, "{report}");
    drop(b);
}

/// An E-RTMP push of AV1 and one of VP9 (FFmpeg 8 through PyAV) reach a
/// Chromium player as they are, in their own codec (which its offer
/// holds), decoded frame after frame; the room is told that players
/// without the codec get H264 (aiortc's, in rtmp.rs). Two shards: the
/// player usually lands on the one the push is not on (seen: every run),
/// so the push's own track crosses the relay with its GOP.
#[test]
fn chromium_plays_an_enhanced_rtmp_push_in_its_own_codec() {
    let _browser = one_browser_at_a_time();
    let _driver = chromium_driver_dir();
    let _ns = Netns::enter();
    let gw = Gateway::start(2, &[]);
    for (codec, mime) in [("av1", "video/AV1"), ("vp9", "video/VP9")] {
        let room = format!("ex{codec}");
        gw.room(&room);
        let mut events = gw.events(&room);
        let _push = Reap(
            pyav_ertmp(&["push", &gw.rtmp_url(&format!("{room}/cam")), codec, "30"])
                .spawn()
                .expect("python"),
        );
        let e = events.next_matching(std::time::Duration::from_secs(15), |e| {
            e["event"] == "media_warning"
        });
        let reason = e["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("as it is to WebRTC players that offered it")
                && reason.contains("transcoded to H264 for the others"),
            "{e}"
        );
        let args = [gw.api.as_ref(), room.as_ref(), "4".as_ref()];
        let out = driver("chromium_play.js", &args, 90)
            .output()
            .expect("run node");
        let report = report(&gw, &out, "the Chromium player");
        eprintln!("chromium, E-RTMP {codec}: {report}");
        assert!(report["error"].is_null(), "{report}\n{}", gw.logs());
        assert_eq!(report["later"]["mimeType"], mime, "{report}");
        let decoded = report["later"]["framesDecoded"].as_u64().unwrap_or(0)
            - report["first"]["framesDecoded"].as_u64().unwrap_or(0);
        // 4 s of a 30 fps push; PyAV's software encoder on these 2 cores
        // keeps up with about 20.
        assert!(decoded >= 40, "{decoded} frames in 4 s: {report}");
    }
}

/// A Chromium publisher ramps up through the gateway about as fast as over
/// a direct peer connection (the same fake camera, a detailed picture under
/// moving noise, in the same run): the gateway accepts transport-wide
/// sequence numbers and feeds back their arrival times (transport-cc), so
/// the encoder's delay-based estimator runs instead of creeping up on loss
/// alone (before: 0.48x the direct bitrate over seconds 6-20).
#[test]
fn a_chromium_publisher_ramps_up_through_the_gateway_like_a_direct_peer() {
    let _browser = one_browser_at_a_time();
    let _driver = chromium_driver_dir();
    let camera = detailed_camera_y4m();
    let _ns = Netns::enter();
    let gw = Gateway::start(1, &[]);
    let run = |mode: &str| {
        let args = [
            gw.api.as_ref(),
            "ramp".as_ref(),
            mode.as_ref(),
            "20".as_ref(),
            camera.as_os_str(),
        ];
        let out = driver("chromium_rampup.js", &args, 120)
            .env("MGW_FAKE_CAMERA", &camera)
            .output()
            .expect("run node");
        let report = report(&gw, &out, "the ramp-up driver");
        assert!(report["error"].is_null(), "{mode}: {report}\n{}", gw.logs());
        report
    };
    let direct = run("direct");
    let via = run("gateway");
    eprintln!("ramp-up, direct peer: {direct}");
    eprintln!("ramp-up, through the gateway: {via}");
    let (d, g) = (
        direct["mean_6_20"].as_f64().unwrap_or(0.0),
        via["mean_6_20"].as_f64().unwrap_or(0.0),
    );
    eprintln!(
        "mean kbit/s over seconds 6-20: direct {d}, gateway {g}: {:.2}x",
        g / d
    );
    assert!(d > 300.0, "the direct peer itself ramped up: {direct}");
    assert!(g >= 0.8 * d, "gateway {g} kbit/s against direct {d}");
}

/// A Chromium publisher behind a link whose capacity drops from 3 Mbit/s
/// to 500 kbit/s (the impairment relay, tests/impair.py) follows it on
/// delay, not loss: within 2 s of the drop it sends no more than the link
/// carries, then loses under 2 % and queues under 200 ms.
#[test]
fn a_chromium_publisher_follows_a_capacity_drop() {
    let _browser = one_browser_at_a_time();
    let _driver = chromium_driver_dir();
    let camera = detailed_camera_y4m();
    let _ns = Netns::enter();
    let gw = Gateway::start(1, &["--public-ip", "127.0.0.2"]);
    const DROP_AT: u64 = 14;
    let script = format!("{DROP_AT}:up:rate=500k");
    let relay = Impair::start(
        &gw,
        &["--up", "rate=3000k,queue=300ms", "--script", &script],
    );
    let args = [
        gw.api.as_ref(),
        "capped".as_ref(),
        "gateway".as_ref(),
        "30".as_ref(),
        camera.as_os_str(),
    ];
    let out = driver("chromium_rampup.js", &args, 120)
        .env("MGW_FAKE_CAMERA", &camera)
        .output()
        .expect("run node");
    let reports = relay.finish();
    let published = report(&gw, &out, "the capped publisher");
    assert!(published["error"].is_null(), "{published}\n{}", gw.logs());
    Impair::print(&reports, "up");
    // Before the drop it used the room it had (well over 500 kbit/s): the
    // best of its last three seconds, since a Chromium on a busy machine
    // lowers its encoder's rate for a second now and then (CPU overuse).
    let before = (DROP_AT - 2..=DROP_AT)
        .map(|t| Impair::offered_at(&reports, "up", t))
        .max()
        .unwrap_or(0);
    assert!(before > 900, "before the drop: {before} kbit/s");
    // From 2 s after the drop to the end (the publisher ran 30 s from
    // about the relay's second 1-2): under the cap, little loss, short queue.
    let after = Impair::span(&reports, "up", DROP_AT + 3, DROP_AT + 14);
    assert!(after.seconds >= 10, "{after:?}");
    let (offered, loss, worst_wait) = (after.offered_kbps, after.loss, after.wait_p95_max_ms);
    eprintln!(
        "after the drop: offered {offered} kbit/s, loss {:.2} %, queueing p95 at most {worst_wait} ms",
        loss * 100.0
    );
    // The same-run baseline: a direct peer connection in one page (Chromium
    // on both ends, its own transport-cc) through the same cap and script.
    let direct_args = [
        gw.api.as_ref(),
        "capped".as_ref(),
        "direct".as_ref(),
        "30".as_ref(),
        camera.as_os_str(),
    ];
    let direct = driver("chromium_rampup.js", &direct_args, 120)
        .env("MGW_FAKE_CAMERA", &camera)
        .env("MGW_DIRECT_UP", "rate=3000k,queue=300ms")
        .env("MGW_DIRECT_SCRIPT", &script)
        .env("MGW_PYTHON", aiortc_python())
        .output()
        .expect("run node");
    let direct = report(&gw, &direct, "the direct peer");
    let direct_reports = direct["relay"].as_array().cloned().unwrap_or_default();
    let d = Impair::span(&direct_reports, "up", DROP_AT + 3, DROP_AT + 14);
    eprintln!(
        "direct peer: before the drop {} kbit/s; after it offered {} kbit/s, loss {:.2} %, queueing p95 at most {} ms",
        Impair::offered_at(&direct_reports, "up", DROP_AT),
        d.offered_kbps,
        d.loss * 100.0,
        d.wait_p95_max_ms
    );
    assert!(
        d.seconds >= 10 && d.offered_kbps > 0,
        "the baseline ran through its relay: {direct}"
    );
    assert!(
        offered <= 600,
        "it follows the 500 kbit/s link: {offered} kbit/s"
    );
    assert!(loss < 0.02, "{:.2} % lost", loss * 100.0);
    assert!(worst_wait < 200.0, "queueing {worst_wait} ms");
}

/// A mini-program's RTMP push played in Chromium through 5 % loss on the
/// player's leg (the impairment relay): the gateway answers Chromium's
/// NACKs from the RTMP publisher's RTP (which cannot be asked itself), so
/// the picture does not freeze to the next keyframe at every loss: at
/// least 90 % of the source's 30 frames a second are decoded.
#[test]
fn chromium_plays_an_rtmp_push_through_5_percent_loss() {
    let _browser = one_browser_at_a_time();
    let _driver = chromium_driver_dir();
    let _ns = Netns::enter();
    let gw = Gateway::start(1, &["--public-ip", "127.0.0.2"]);
    let clip = clip_sized(320, 240, 440);
    let _push = Reap(ffmpeg_rtmp_push(&gw, "lossy/mini", &clip, 60));
    wait_playing(&gw.rtmp_url("lossy/mini"));
    let relay = Impair::start(&gw, &["--down", "loss=0.05"]);
    let args = [gw.api.as_ref(), "lossy".as_ref(), "10".as_ref()];
    let out = driver("chromium_play.js", &args, 90)
        .output()
        .expect("run node");
    let reports = relay.finish();
    let report = report(&gw, &out, "the Chromium player");
    assert!(report["error"].is_null(), "{report}\n{}", gw.logs());
    let lost: u64 = reports
        .iter()
        .filter(|r| r["dir"] == "down")
        .map(|r| r["lost"].as_u64().unwrap_or(0))
        .sum();
    let (first, later) = (&report["first"], &report["later"]);
    let decoded =
        later["framesDecoded"].as_u64().unwrap_or(0) - first["framesDecoded"].as_u64().unwrap_or(0);
    eprintln!(
        "5 % loss toward Chromium: {lost} packets dropped by the relay, {} NACKs sent, {} resends received on RTX, {decoded} frames decoded in 10 s (source: 300)",
        later["nackCount"], later["retransmittedPacketsReceived"]
    );
    assert!(lost >= 20, "the relay did drop packets: {lost}");
    assert!(later["nackCount"].as_u64().unwrap_or(0) > 0, "{report}");
    // The resends came on the line's RTX stream: Chromium tells them apart.
    assert!(
        later["retransmittedPacketsReceived"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert!(decoded >= 270, "{decoded} of 300 frames: {report}");
    // Random loss is not a narrow link: its estimate holds and its video
    // never paused.
    let whep = gw.session_of_kind("lossy", "whep");
    let estimate = whep["stats"]["estimate_bps"].as_u64().unwrap_or(0);
    eprintln!("its path's estimate: {estimate} bit/s");
    assert_eq!(whep["stats"]["video_pauses"], 0, "{whep}");
    assert!(estimate >= 100_000, "{whep}");
}

/// A Chromium publisher behind 5 % loss and 2 % reordering (the relay, on
/// its leg), played by a mini-program's RTMP player: the bridge puts
/// reordered packets back in order and NACKs the lost ones, waiting up to
/// 100 ms for them, instead of dropping video to the next keyframe at
/// every gap. The player decodes nearly every frame.
#[test]
fn an_rtmp_player_of_a_lossy_chromium_publisher_keeps_its_picture() {
    let _browser = one_browser_at_a_time();
    let _driver = chromium_driver_dir();
    let _ns = Netns::enter();
    let gw = Gateway::start(1, &["--public-ip", "127.0.0.2"]);
    gw.room("lossyup");
    let relay = Impair::start(&gw, &["--up", "loss=0.05,reorder=0.02"]);
    let publisher = {
        let api = gw.api.clone();
        std::thread::spawn(move || {
            let args = [
                api.as_ref(),
                "lossyup".as_ref(),
                "gateway".as_ref(),
                "22".as_ref(),
                "-".as_ref(),
                "cam".as_ref(),
            ];
            driver("chromium_rampup.js", &args, 120)
                .output()
                .expect("run node")
        })
    };
    wait_playing(&gw.rtmp_url("lossyup/cam"));
    let (video, _, log) = ffmpeg_rtmp_play(
        &gw.rtmp_url("lossyup/cam"),
        12,
        std::time::Duration::from_secs(40),
    );
    let whip = gw.session_of_kind("lossyup", "whip");
    let out = publisher.join().unwrap();
    let reports = relay.finish();
    let report = report(&gw, &out, "the lossy publisher");
    assert!(report["error"].is_null(), "{report}\n{}", gw.logs());
    let lost: u64 = reports
        .iter()
        .filter(|r| r["dir"] == "up")
        .map(|r| r["lost"].as_u64().unwrap_or(0))
        .sum();
    let frames = report["last"]["frames"].as_u64().unwrap_or(0);
    let fps = frames as f64 / 22.0;
    eprintln!(
        "5 % loss + 2 % reordering from Chromium ({lost} packets lost, {fps:.1} frames/s encoded): the RTMP player decoded {video} frames in 12 s ({:.0} % of {:.0})",
        video as f64 * 100.0 / (fps * 12.0),
        fps * 12.0
    );
    // Freezes are counted: each gap given up on is one for the RTMP player.
    let (filled, given_up) = (
        whip["stats"]["bridge_gaps_filled"].as_u64().unwrap_or(0),
        whip["stats"]["bridge_gaps_given_up"].as_u64().unwrap_or(0),
    );
    eprintln!("the bridge filled {filled} gaps and gave up on {given_up}");
    assert!(lost >= 20, "the relay did drop packets: {lost}");
    assert!(filled > 4 * given_up, "{whip}");
    assert!(
        video as f64 >= 0.8 * fps * 12.0,
        "{video} frames decoded in 12 s at {fps:.1} frames/s\n{log}"
    );
}

/// Audio levels reach browsers: a WHEP player that offers RFC 6464 gets
/// each packet's level under its own extension id (rewritten from the
/// publisher's), so the page's getSynchronizationSources() shows how loud
/// each participant is. aiortc publishes a tone (it sends levels when it
/// encodes); the same tone 40 dB quieter reads about 100x lower.
#[test]
fn chromium_players_see_the_publishers_audio_levels() {
    let _browser = one_browser_at_a_time();
    let _driver = chromium_driver_dir();
    let gw = Gateway::start(1, &[]);
    let mut levels = Vec::new();
    for (room, gain) in [("loud", 0), ("quiet", -40)] {
        let clip = clip_tone(320, 240, 440, gain);
        let mut publisher = AiortcPublisher::start_with(&gw, room, &clip, 15.0, &["--encode"]);
        publisher.connected();
        let args = [gw.api.as_ref(), room.as_ref(), "3".as_ref()];
        let out = driver("chromium_play.js", &args, 60)
            .output()
            .expect("run node");
        let report = report(&gw, &out, "the Chromium player");
        assert!(report["error"].is_null(), "{report}\n{}", gw.logs());
        let level = report["audioLevelMax"].as_f64();
        eprintln!("{room} tone ({gain} dB): the page's loudest audioLevel {level:?}");
        levels.push(level.unwrap_or_else(|| panic!("no audio level reached the page: {report}")));
    }
    assert!(levels[0] > 0.01, "{levels:?}");
    assert!(levels[1] < levels[0] / 20.0, "{levels:?}");
}

/// A Chromium player whose link narrows to 150 kbit/s under a mini-program's
/// 400 kbit/s push (one layer: nothing lower to fall back on), through the
/// impairment relay: the gateway's estimate of the player's path (its
/// transport-cc feedback) pauses its video instead of flooding the link,
/// and its audio goes on; once the link is wide again, video resumes from a
/// keyframe.
#[test]
fn a_chromium_players_video_pauses_on_a_narrow_link_and_resumes() {
    let _browser = one_browser_at_a_time();
    let _driver = chromium_driver_dir();
    let _ns = Netns::enter();
    let gw = Gateway::start(1, &["--public-ip", "127.0.0.2"]);
    let _push = Reap(ffmpeg_rtmp_push(&gw, "narrow/mini", &clip(), 90));
    wait_playing(&gw.rtmp_url("narrow/mini"));
    // Relay seconds: wide, narrow from 12 to 22, wide again (the page
    // starts a second or two into the relay's time).
    let script = "12:down:rate=150k;22:down:rate=3000k";
    let relay = Impair::start(
        &gw,
        &["--down", "rate=3000k,queue=300ms", "--script", script],
    );
    let args = [gw.api.as_ref(), "narrow".as_ref(), "40".as_ref()];
    let out = driver("chromium_play.js", &args, 120)
        .output()
        .expect("run node");
    let reports = relay.finish();
    let report = report(&gw, &out, "the narrow Chromium player");
    assert!(report["error"].is_null(), "{report}\n{}", gw.logs());
    Impair::print(&reports, "down");
    let whep = gw.session_of_kind("narrow", "whep");
    let pauses = whep["stats"]["video_pauses"].as_u64().unwrap_or(0);
    let timeline: Vec<(u64, u64)> = report["timeline"]
        .as_array()
        .map(|t| {
            t.iter()
                .map(|s| {
                    (
                        s["frames"].as_u64().unwrap_or(0),
                        s["samples"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    eprintln!("video paused {pauses} times; (frames, audio samples) each second: {timeline:?}");
    assert!(timeline.len() >= 35, "{report}");
    assert!(pauses >= 1, "{whep}");
    // Paused: some 3 s with (almost) no picture ...
    let least = timeline.windows(4).map(|w| w[3].0 - w[0].0).min().unwrap();
    assert!(least <= 10, "frames decoded in 3 s, at least: {least}");
    // ... while audio went on, every 2 s of the page's life ...
    let quiet = timeline.windows(3).map(|w| w[2].1 - w[0].1).min().unwrap();
    assert!(quiet > 0, "audio stopped for 2 s: {timeline:?}");
    // ... and the picture is back at the end (a 30 fps source).
    let n = timeline.len();
    let tail = timeline[n - 1].0 - timeline[n - 6].0;
    assert!(
        tail >= 100,
        "{tail} frames in the last 5 s: {timeline:?}\n{}",
        gw.logs()
    );
}
