//! CI smoke of the load tool: a short fan-out through the real gateway and
//! through both baseline relays, with every figure the JSON promises; RTMP
//! players through the gateway and through nginx-rtmp in the same run; and a
//! short session churn that must leave nothing behind.

use std::process::Command;

use e2e::*;

/// One shard, and session creation not rate limited (the scenarios open
/// sessions faster than a person would).
fn gateway_for_many_sessions() -> Gateway {
    Gateway::start(1, &["--session-rate", "10000", "--session-burst", "10000"])
}

#[test]
fn loadgen_fanout_smoke_with_baseline() {
    let gw = Gateway::start(1, &[]);
    let r = loadgen(
        &gw,
        &[
            "--scenario",
            "fanout",
            "--subscribers",
            "20",
            "--rate",
            "500",
            "--seconds",
            "2",
            "--baseline",
        ],
        60,
        "loadgen-smoke.json",
    );
    for k in [
        "scenario",
        "pps_out",
        "mbps_out",
        "loss_ratio",
        "latency_us",
        "dataplane_cpu",
        "rss_per_session_bytes",
        "baseline_pps_out",
        "baseline_gso_pps_out",
        "datagrams_per_send",
    ] {
        assert!(!r[k].is_null(), "{k} missing: {r}");
    }
    // 500 packets/s to 20 subscribers is 10 000 out; a smoke run on a shared
    // CI machine must get most of them through both paths.
    assert!(r["pps_out"].as_f64().unwrap() > 5_000.0, "{r}");
    assert!(r["baseline_pps_out"].as_f64().unwrap() > 5_000.0, "{r}");
    assert!(r["baseline_gso_pps_out"].as_f64().unwrap() > 5_000.0, "{r}");
    // The gateway's send counters moved with the traffic (at least one
    // datagram per send; more when GSO batched a burst).
    assert!(r["datagrams_per_send"].as_f64().unwrap() >= 1.0, "{r}");
    assert!(r["latency_us"]["samples"].as_u64().unwrap() > 100, "{r}");
    // The tool cleans up after itself.
    assert_eq!(gw.get("/v1/rooms").1["rooms"], json!([]));
    // `--plain`: the same fan-out without SRTP, to tell the crypto's cost.
    let plain = loadgen(
        &gw,
        &[
            "--scenario",
            "fanout",
            "--plain",
            "--subscribers",
            "20",
            "--rate",
            "500",
            "--seconds",
            "1",
        ],
        60,
        "loadgen-plain.json",
    );
    assert_eq!(plain["srtp"], json!(false), "{plain}");
    assert_eq!(r["srtp"], json!(true), "{r}");
    assert!(plain["pps_out"].as_f64().unwrap() > 5_000.0, "{plain}");
    assert!(
        plain["latency_us"]["samples"].as_u64().unwrap() > 100,
        "{plain}"
    );
    // An unknown scenario is refused with the list of known ones.
    let other = Command::new(bin("loadgen"))
        .args(["--api", &gw.api, "--scenario", "conference"])
        .output()
        .unwrap();
    assert_eq!(other.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("audio"),
        "{other:?}"
    );
    // More audio publishers than a player has lines for is refused.
    let crowd = Command::new(bin("loadgen"))
        .args([
            "--api",
            &gw.api,
            "--scenario",
            "audio",
            "--publishers",
            "17",
        ])
        .output()
        .unwrap();
    assert_eq!(crowd.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&crowd.stderr).contains("1 to 16 publishers"),
        "{crowd:?}"
    );
    // A meeting of one is refused with a message, before any session opens.
    let alone = Command::new(bin("loadgen"))
        .args([
            "--api",
            &gw.api,
            "--scenario",
            "meeting",
            "--participants",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(alone.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&alone.stderr).contains("--participants 2 or more"),
        "{alone:?}"
    );
}

/// The `sfu` scenario (one WHIP publisher to WHEP players, real DTLS-SRTP)
/// in H264 and in VP8: every packet reaches every player in both (a VP8
/// line starts at the first frame, a keyframe), and the report names the
/// codec.
#[test]
fn loadgen_sfu_smoke_in_h264_and_vp8() {
    let gw = Gateway::start(1, &[]);
    for codec in ["h264", "vp8"] {
        let r = loadgen(
            &gw,
            &[
                "--scenario",
                "sfu",
                "--codec",
                codec,
                "--subscribers",
                "8",
                "--seconds",
                "2",
            ],
            120,
            &format!("loadgen-sfu-{codec}.json"),
        );
        assert_eq!(
            r["codec"].as_str().map(str::to_lowercase).as_deref(),
            Some(codec),
            "{r}"
        );
        assert_eq!(r["subscribers"], json!(8), "{r}");
        assert!(r["loss_ratio"].as_f64().unwrap() < 0.01, "{codec}: {r}");
        assert!(
            r["latency_us"]["samples"].as_u64().unwrap() > 10,
            "{codec}: {r}"
        );
    }
    assert_eq!(gw.get("/v1/rooms").1["rooms"], json!([]));
}

#[test]
fn loadgen_rtmp_smoke_against_nginx_rtmp() {
    let gw = Gateway::start(1, &[]);
    let rtmp = format!("127.0.0.1:{}", gw.rtmp);
    let r = loadgen(
        &gw,
        &[
            "--scenario",
            "rtmp",
            "--rtmp",
            &rtmp,
            "--subscribers",
            "20",
            "--seconds",
            "2",
            "--baseline",
        ],
        120,
        "loadgen-rtmp.json",
    );
    for k in [
        "scenario",
        "pps_out",
        "mbps_out",
        "loss_ratio",
        "latency_us",
        "dataplane_cpu",
        "rss_per_session_bytes",
        "first_frame_ms",
        "baseline_pps_out",
        "baseline_cpu",
    ] {
        assert!(!r[k].is_null(), "{k} missing: {r}");
    }
    for prefix in ["", "baseline_"] {
        let at = |k: &str| r[format!("{prefix}{k}")].clone();
        // Every player of both servers connected, got a keyframe, and got
        // the stamped frames sent while measuring: 20 players of a 1 Mbit/s
        // stream is about 20 Mbit/s.
        assert_eq!(at("players_failed"), json!(0), "{prefix}: {r}");
        assert_eq!(at("first_frame_ms")["never"], json!(0), "{prefix}: {r}");
        assert!(at("loss_ratio").as_f64().unwrap() < 0.01, "{prefix}: {r}");
        assert!(at("mbps_out").as_f64().unwrap() > 10.0, "{prefix}: {r}");
        assert!(
            at("latency_us")["samples"].as_u64().unwrap() > 100,
            "{prefix}: {r}"
        );
    }
    assert_eq!(gw.get("/v1/rooms").1["rooms"], json!([]));
}

/// WHIP and WHEP sessions with real ICE and DTLS (dimpl as the client),
/// timed step by step; every port comes back when they are deleted.
#[test]
fn loadgen_setup_connects_webrtc_sessions_and_gives_ports_back() {
    let gw = gateway_for_many_sessions();
    let r = loadgen(
        &gw,
        &[
            "--scenario",
            "setup",
            "--publishers",
            "2",
            "--subscribers",
            "16",
        ],
        120,
        "loadgen-setup.json",
    );
    assert_eq!(r["connected"], json!(18), "{r}");
    assert_eq!(r["failed"], json!(0), "{r}");
    assert_eq!(r["ports_in_use_connected"], json!(18), "{r}");
    assert_eq!(r["ports_in_use_after"], r["ports_in_use_before"], "{r}");
    for step in ["setup_ms", "api_ms", "ice_ms", "dtls_ms"] {
        assert!(r[step]["p50"].as_f64().unwrap() > 0.0, "{step}: {r}");
    }
    assert_eq!(gw.get("/v1/rooms").1["rooms"], json!([]));
}

/// Rooms of WebRTC participants sending SRTP with the keys their DTLS
/// handshakes exported: every packet reaches the other participants.
#[test]
fn loadgen_meeting_smoke() {
    let gw = gateway_for_many_sessions();
    let r = loadgen(
        &gw,
        &[
            "--scenario",
            "meeting",
            "--rooms",
            "2",
            "--participants",
            "3",
            "--rate",
            "200",
            "--seconds",
            "2",
        ],
        120,
        "loadgen-meeting.json",
    );
    // 6 publishers × 200 packets/s, each to 2 players: 2400 packets/s out.
    assert!(r["pps_out"].as_f64().unwrap() > 1_500.0, "{r}");
    assert!(r["loss_ratio"].as_f64().unwrap() < 0.05, "{r}");
    assert!(r["latency_us"]["samples"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(gw.get("/v1/rooms").1["rooms"], json!([]));
}

/// A voice room: 12 WebRTC audio publishers (more than the 8 lines a
/// session carried before) and players that each hear all 12. A player
/// missing one publisher would lose 1/12 of what it should get, so the
/// loss bound below checks every line of every player.
#[test]
fn loadgen_audio_smoke_with_baseline() {
    let gw = gateway_for_many_sessions();
    let r = loadgen(
        &gw,
        &[
            "--scenario",
            "audio",
            "--publishers",
            "12",
            "--subscribers",
            "10",
            "--seconds",
            "2",
            "--baseline",
        ],
        120,
        "loadgen-audio.json",
    );
    assert_eq!(r["publishers"], json!(12), "{r}");
    assert_eq!(r["subscribers"], json!(10), "{r}");
    // The audio defaults: 50 packets/s of 100 B per publisher.
    assert_eq!(r["rate_per_publisher"], json!(50), "{r}");
    assert_eq!(r["packet_size"], json!(100), "{r}");
    // 12 × 50 packets/s, each to 10 players: 6000 packets/s out.
    assert!(r["pps_out"].as_f64().unwrap() > 4_000.0, "{r}");
    assert!(r["loss_ratio"].as_f64().unwrap() < 0.04, "{r}");
    assert!(r["latency_us"]["samples"].as_u64().unwrap() > 100, "{r}");
    assert!(r["baseline_pps_out"].as_f64().unwrap() > 4_000.0, "{r}");
    assert!(r["baseline_gso_pps_out"].as_f64().unwrap() > 4_000.0, "{r}");
    assert_eq!(gw.get("/v1/rooms").1["rooms"], json!([]));
}

#[test]
fn loadgen_churn_gives_back_ports_and_descriptors() {
    // 25 ports per test gateway: 16 sessions live at once (8 API clients × 2).
    let gw = gateway_for_many_sessions();
    let r = loadgen(
        &gw,
        &[
            "--scenario",
            "churn",
            "--sessions",
            "400",
            "--subscribers",
            "16",
        ],
        120,
        "loadgen-churn.json",
    );
    assert_eq!(r["sessions"], json!(400), "{r}");
    assert_eq!(r["ports_in_use_after"], r["ports_in_use_before"], "{r}");
    assert_eq!(r["fds_after"], r["fds_before"], "{r}");
    assert!(r["create_latency_us"]["p50"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(gw.get("/v1/rooms").1["rooms"], json!([]));
}
