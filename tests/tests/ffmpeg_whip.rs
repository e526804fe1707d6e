//! FFmpeg 8's own WHIP muxer (`-f whip`, here the FFmpeg 8.1 that the PyAV
//! wheel bundles, driven by `tests/webrtc/ffmpeg_whip.py`) publishing into
//! the gateway. Its offer says `a=setup:passive`, so the gateway answers
//! `a=setup:active` and is the DTLS client: its ClientHello goes out at
//! FFmpeg's first ICE check. What it publishes (libx264 Constrained
//! Baseline, libopus) plays over RTMP and WHEP, with and without room
//! tokens.
//!
//! The muxer keeps its own DTLS certificate, as a user's would: its GnuTLS
//! build makes it on P-224, which the gateway verifies itself
//! (dataplane/src/dtls_verify.rs; dimpl's verifier knows P-256 and P-384).
//! The last test has FFmpeg as the DTLS client (`whip_flags=dtls_active`),
//! the gateway as the server checking FFmpeg's P-224 CertificateVerify.

use std::time::{Duration, Instant};

use e2e::*;

const TOKEN_SECRET: &str = "e2e-token-secret-0123456789";

/// The FFmpeg WHIP publisher: its stdout carries two JSON lines, one when
/// the muxer has connected (or failed to), one at the end.
struct FfmpegWhip(JsonReports);

impl FfmpegWhip {
    /// Publishes to `/whip/{path}` (`ROOM?participant=NAME`) for `secs`
    /// once connected; `extra` are the script's flags (`--token`, `--dtls-active`).
    fn start(gw: &Gateway, path: &str, secs: f64, extra: &[&str]) -> FfmpegWhip {
        let dir = target_dir().join("e2e-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let log =
            std::fs::File::create(dir.join(format!("{}.log", unique("ffmpeg-whip")))).unwrap();
        let mut cmd = std::process::Command::new(aiortc_python());
        cmd.arg(repo_root().join("tests/webrtc/ffmpeg_whip.py"))
            .arg(format!("{}/whip/{path}", gw.api))
            .args(["--seconds", &secs.to_string()])
            .args(extra)
            .stderr(log);
        FfmpegWhip(JsonReports::spawn(cmd, "the FFmpeg WHIP publisher"))
    }

    /// Its report once the muxer's header is written: offer, answer, ICE
    /// and DTLS done (or failed).
    fn connection(&mut self) -> Value {
        let v = self.0.next_report();
        assert_eq!(v["event"], "connected", "{v}");
        v
    }

    /// As [`Self::connection`], asserting it connected.
    fn connected(&mut self) -> Value {
        let v = self.connection();
        assert_eq!(v["ok"], true, "the FFmpeg WHIP muxer did not connect: {v}");
        v
    }

    /// Its final report (after the muxer's DELETE).
    fn finish(self) -> Value {
        self.0.finish()
    }
}

/// The answer FFmpeg got (from its own verbose log) made the gateway the
/// DTLS client of an ICE-lite, BUNDLEd session, and the handshake gave it
/// an SRTP profile.
fn assert_gateway_was_the_dtls_client(c: &Value) {
    let strings = |k: &str| -> Vec<String> {
        c[k].as_array()
            .unwrap_or_else(|| panic!("no {k} in {c}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(strings("offer_setup"), ["passive", "passive"], "{c}");
    assert_eq!(strings("answer_setup"), ["active", "active"], "{c}");
    assert_eq!(c["answer_ice_lite"], true, "{c}");
    assert!(c["answer_candidates"].as_u64().unwrap() >= 1, "{c}");
    assert_eq!(c["srtp_suite"], "SRTP_AES128_CM_HMAC_SHA1_80", "{c}");
    eprintln!(
        "FFmpeg WHIP muxer connected in {:.0} ms (its steps: {})",
        c["connect_ms"].as_f64().unwrap(),
        c["timings_ms"]
    );
}

/// Waits (10 s at most) until `room` has the WHIP session of `name`, live
/// and receiving media; returns it.
fn wait_live_whip(gw: &Gateway, room: &str, name: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let whip = gw
            .room_sessions(room)
            .into_iter()
            .find(|s| s["kind"] == "whip" && s["participant"] == name && s["state"] == "live");
        if let Some(s) = whip.filter(|s| s["stats"]["packets"].as_u64().unwrap_or(0) > 50) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "no live WHIP session of {name} with media in {room}: {:?}\n{}",
            gw.room_sessions(room),
            gw.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The WHIP session's state and counters, from the API.
fn assert_whip_session(gw: &Gateway, room: &str, name: &str) -> String {
    let whip = wait_live_whip(gw, room, name);
    eprintln!("FFmpeg's WHIP session: {whip}");
    let drops = &whip["stats"]["drops"];
    for reason in [
        "auth_failed",
        "payload_type",
        "malformed",
        "oversize",
        "replay",
    ] {
        assert_eq!(drops[reason], 0, "{reason}: {whip}");
    }
    let mut tracks: Vec<(String, u64)> = whip["tracks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap().to_string(),
                t["payload_type"].as_u64().unwrap(),
            )
        })
        .collect();
    tracks.sort();
    assert_eq!(
        tracks,
        [("audio".to_string(), 111), ("video".to_string(), 106)],
        "FFmpeg's payload types: {whip}"
    );
    let (code, room_json) = gw.get(&format!("/v1/rooms/{room}"));
    assert_eq!(code, 200);
    assert!(
        room_json["participants"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == name),
        "{name} is a participant: {room_json}"
    );
    whip["id"].as_str().unwrap().to_string()
}

/// An RTMP player of `rtmp` and an aiortc WHEP player of `room` (with
/// `whep_args`), at once; asserts each decoded what it should.
fn play_both(gw: &Gateway, rtmp: String, room: &str, whep_args: &[&str]) {
    // The muxer cannot answer a keyframe request (it has no encoder to ask),
    // so the bridge to RTMP starts at its next IDR (every 2 s), and the
    // audio that came meanwhile goes out stamped before it: the first
    // player's audio starts up to 2 s before its video. 5 s of play leave
    // at least 3 s of video.
    let rtmp_player =
        std::thread::spawn(move || ffmpeg_rtmp_play(&rtmp, 5, Duration::from_secs(20)));
    let play = aiortc_play(gw, room, 4.0, whep_args);
    let (video, audio, log) = rtmp_player.join().unwrap();
    eprintln!("RTMP player: {video} video, {audio} audio frames; WHEP player: {play}");
    // 30 fps, and ~47 AAC frames a second.
    assert!(video >= 60, "RTMP: {video} video frames:\n{log}");
    assert!(audio >= 100, "RTMP: {audio} audio frames:\n{log}");
    assert_eq!(play["connected"], true, "{play}");
    // 4 s, of which up to 2 s wait for the IDR; Opus every 20 ms.
    assert!(play["video_frames"].as_u64().unwrap() >= 45, "{play}");
    assert_eq!(
        (play["width"].as_u64(), play["height"].as_u64()),
        (Some(640), Some(360)),
        "{play}"
    );
    assert!(play["audio_frames"].as_u64().unwrap() >= 100, "{play}");
    assert_eq!(play["deleted"], 200, "{play}");
}

/// The publisher's last report: it published to the end and DELETEd its
/// session, which the API shows ended.
fn assert_finished(gw: &Gateway, publisher: FfmpegWhip, room: &str, id: &str) {
    let done = publisher.finish();
    eprintln!("FFmpeg WHIP publisher: {done}");
    assert_eq!(done["ok"], true, "{done}");
    // 12 s at 30 fps and 50 Opus packets a second.
    assert!(done["video_packets"].as_u64().unwrap() >= 350, "{done}");
    assert!(done["audio_packets"].as_u64().unwrap() >= 590, "{done}");
    assert_eq!(done["deleted"], true, "the muxer's DELETE: {done}");
    let whip = gw.session(room, id);
    assert_eq!(whip["state"], "ended", "{whip}");
    assert_eq!(whip["end_reason"], "deleted", "{whip}");
}

#[test]
fn ffmpeg_whip_muxer_publishes_to_rtmp_and_whep_players() {
    let gw = Gateway::start(1, &[]);
    let room = "ffwhip";
    let mut publisher = FfmpegWhip::start(&gw, &format!("{room}?participant=ff"), 12.0, &[]);
    let c = publisher.connected();
    assert_gateway_was_the_dtls_client(&c);
    let id = assert_whip_session(&gw, room, "ff");

    play_both(&gw, format!("{}/ff", gw.rtmp_url(room)), room, &[]);
    assert_finished(&gw, publisher, room, &id);
}

#[test]
fn ffmpeg_whip_muxer_carries_the_room_token() {
    let gw = Gateway::start(1, &["--token-secret", TOKEN_SECRET]);
    let room = "fftoken";

    // Without a token: the POST gets 401, the muxer says so, nothing is
    // created.
    let mut refused = FfmpegWhip::start(&gw, &format!("{room}?participant=ff"), 1.0, &[]);
    let c = refused.connection();
    assert_eq!(c["ok"], false, "{c}");
    assert_eq!(c["http_status"], 401, "{c}");
    let done = refused.finish();
    assert_eq!(done["ok"], false, "{done}");
    assert_eq!(gw.healthz().1["udp_ports"]["in_use"], 0);

    // With the publish token in the muxer's `authorization` option: the
    // POST and the DELETE carry it.
    let publish = gw.mint_token(room, "publish");
    let mut publisher = FfmpegWhip::start(
        &gw,
        &format!("{room}?participant=ff"),
        12.0,
        &["--token", &publish],
    );
    let c = publisher.connected();
    assert_gateway_was_the_dtls_client(&c);
    let id = assert_whip_session(&gw, room, "ff");

    let subscribe = gw.mint_token(room, "subscribe");
    play_both(
        &gw,
        format!("{}/ff?token={subscribe}", gw.rtmp_url(room)),
        room,
        &["--token", &subscribe],
    );
    assert_finished(&gw, publisher, room, &id);
}

/// FFmpeg as the DTLS client (`whip_flags=dtls_active`, `a=setup:active`):
/// the gateway answers `passive`, is the server, and checks FFmpeg's P-224
/// certificate's CertificateVerify; what it publishes plays over RTMP.
#[test]
fn ffmpeg_whip_muxer_as_dtls_client_publishes() {
    let gw = Gateway::start(1, &[]);
    let room = "ffactive";
    let mut publisher = FfmpegWhip::start(
        &gw,
        &format!("{room}?participant=ff"),
        8.0,
        &["--dtls-active"],
    );
    let c = publisher.connected();
    assert_eq!(c["answer_setup"][0], "passive", "{c}");
    let id = assert_whip_session(&gw, room, "ff");
    let rtmp = format!("{}/ff", gw.rtmp_url(room));
    let (video, audio, log) = ffmpeg_rtmp_play(&rtmp, 3, Duration::from_secs(20));
    assert!(video >= 30 && audio >= 50, "{video}/{audio}: {log}");
    let done = publisher.finish();
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(gw.session(room, &id)["end_reason"], "deleted");
}
