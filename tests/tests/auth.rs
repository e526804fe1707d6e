//! Keeping strangers out: the admin key on `/v1/*`, room tokens on WHIP and
//! WHEP, production mode without secrets, body size limits. None of the
//! refused requests changes state.

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;

fn status(r: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn the_api_needs_the_admin_key() {
    let gw = Gateway::start(1, &[]);
    let url = format!("{}/v1/rooms", gw.api);
    let (code, body) = status(ureq::get(&url).call());
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("admin key"), "{body}");
    let (code, _) = status(
        ureq::get(&url)
            .set("authorization", "Bearer wrong-key")
            .call(),
    );
    assert_eq!(code, 403);
    let (code, _) = status(
        ureq::post(&url)
            .set("content-type", "application/json")
            .send_string(r#"{"name":"sneaky"}"#),
    );
    assert_eq!(code, 401);
    let (code, rooms) = gw.get("/v1/rooms");
    assert_eq!(code, 200);
    assert_eq!(
        rooms["rooms"],
        json!([]),
        "the refused create changed nothing"
    );
    // Health and metrics stay open for probes and scrapers.
    assert_eq!(gw.healthz().0, 200);
}

#[test]
fn room_tokens_guard_whip_and_whep() {
    let gw = Gateway::start(1, &["--token-secret", "e2e-token-secret-0123456789"]);
    let mint = |room: &str, role: &str, ttl: u64| {
        let (code, v) = gw.post(
            &format!("/v1/rooms/{room}/tokens"),
            json!({ "role": role, "ttl_s": ttl }),
        );
        assert_eq!(code, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    };
    let publish = mint("t", "publish", 60);
    let try_whip = |token: Option<&str>| {
        post_sdp_with(&gw, "/whip/t", "application/sdp", MINIMAL_OFFER, token)
    };

    let (code, _, body) = try_whip(None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("room token"), "{body}");
    assert_eq!(try_whip(Some(&mint("t", "subscribe", 60))).0, 403);
    assert_eq!(try_whip(Some(&mint("other", "publish", 60))).0, 403);
    // A token whose signature is not ours.
    let mut forged = publish.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(try_whip(Some(&forged)).0, 401);
    let short = mint("t", "publish", 1);
    std::thread::sleep(Duration::from_millis(2100));
    let (code, _, body) = try_whip(Some(&short));
    assert_eq!(code, 401, "expired: {body}");
    assert_eq!(
        gw.healthz().1["udp_ports"]["in_use"],
        0,
        "refusals allocate nothing"
    );

    let (code, location, answer) = try_whip(Some(&publish));
    assert_eq!(code, 201, "{answer}");
    let location = location.unwrap();
    // The session URL alone does not let anyone end the session.
    let del = |token: Option<&str>| {
        let mut r = ureq::delete(&format!("{}{location}", gw.api));
        if let Some(t) = token {
            r = r.set("authorization", &format!("Bearer {t}"));
        }
        status(r.call()).0
    };
    assert_eq!(del(None), 401);
    assert_eq!(del(Some(&publish)), 200);
    assert_eq!(gw.healthz().1["udp_ports"]["in_use"], 0);
    // Tokens need a role and a sane lifetime.
    let (code, v) = gw.post("/v1/rooms/t/tokens", json!({ "role": "admin" }));
    assert_eq!(code, 400, "{v}");
    let (code, v) = gw.post(
        "/v1/rooms/t/tokens",
        json!({ "role": "publish", "ttl_s": 0 }),
    );
    assert_eq!(code, 400, "{v}");
}

#[test]
fn production_mode_refuses_to_start_without_secrets() {
    let t0 = Instant::now();
    let out = Command::new("timeout")
        .args(["-s", "KILL", "20"])
        .arg(bin("controlplane"))
        .args([
            "--production",
            "--http",
            "127.0.0.1:0",
            "--shm-name",
            "mgw-test-prod-refused",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--admin-key") && err.contains("--token-secret"),
        "{err}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "it should refuse at once"
    );
    assert!(
        !std::path::Path::new("/dev/shm/mgw-test-prod-refused").exists(),
        "a refused start leaves no shared memory behind"
    );
}

#[test]
fn oversized_bodies_get_413() {
    let gw = Gateway::start(1, &[]);
    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(100_000));
    // Several times: the answer must not race the client's write (a reset
    // instead of the 413 when the server closes on unread bytes).
    for _ in 0..5 {
        let (code, v) = gw.post_raw("/v1/rooms", &big);
        assert_eq!(code, 413, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains("over the limit"),
            "{v}"
        );
    }
    let (code, _, body) = post_sdp(&gw, "/whip/r", "application/sdp", &"a=x\r\n".repeat(20_000));
    assert_eq!(code, 413, "{body}");
    assert_eq!(gw.get("/v1/rooms").1["rooms"], json!([]));
}

/// With a token secret, RTMP publish and play need `?token=` on the stream
/// key, checked by the dataplane (the secret reaches it by environment).
#[test]
fn rtmp_needs_room_tokens_when_configured() {
    let gw = Gateway::start(1, &["--token-secret", "e2e-token-secret-0123456789"]);
    let mint = |role: &str| gw.mint_token("rt", role);
    let mut anonymous = ffmpeg_rtmp_publish(&gw, "rt", 5);
    assert!(
        wait_bounded(&mut anonymous, Duration::from_secs(10)),
        "an anonymous publish kept going"
    );
    assert!(!anonymous.wait().unwrap().success());

    let publish = mint("publish");
    let _publisher = Reap(ffmpeg_rtmp_publish(&gw, &format!("rt?token={publish}"), 20));
    let subscribe = mint("subscribe");
    let url = gw.rtmp_url(&format!("rt?token={subscribe}"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while rtmp_first_frame(&url).is_none() {
        assert!(
            Instant::now() < deadline,
            "the authorized stream never played"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (video, _, _) = ffmpeg_rtmp_play(&gw.rtmp_url("rt"), 2, Duration::from_secs(10));
    assert_eq!(video, 0, "played without a token");
    let publish_as_player = gw.rtmp_url(&format!("rt?token={publish}"));
    assert!(
        rtmp_first_frame(&publish_as_player).is_none(),
        "a publish token played"
    );
    let (video, audio, log) = ffmpeg_rtmp_play(&url, 2, Duration::from_secs(15));
    assert!(video >= 30 && audio >= 50, "{video}/{audio}: {log}");
}

/// Session creation is rate limited per client: over the burst, 429 with
/// `Retry-After`, and nothing is allocated; tokens come back at the rate.
#[test]
fn session_creation_is_rate_limited_per_client() {
    let gw = Gateway::start(
        1,
        &[
            "--session-rate",
            "1",
            "--session-burst",
            "3",
            "--player-session-rate",
            "1",
            "--player-session-burst",
            "2",
        ],
    );
    let whip = || post_sdp(&gw, "/whip/rl", "application/sdp", MINIMAL_OFFER);
    for _ in 0..3 {
        assert_eq!(whip().0, 201);
    }
    let r = ureq::post(&format!("{}/whip/rl", gw.api))
        .set("content-type", "application/sdp")
        .send_string(MINIMAL_OFFER);
    let Err(ureq::Error::Status(429, resp)) = r else {
        panic!("expected 429, got {r:?}")
    };
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert!(resp
        .into_string()
        .unwrap()
        .contains("too many new sessions"));
    // RTP ingests count against the same bucket.
    let (code, v) = gw.post("/v1/rooms/rl/ingest/rtp", json!({ "kind": "video" }));
    assert_eq!(code, 429, "{v}");
    assert_eq!(
        gw.healthz().1["udp_ports"]["in_use"],
        3,
        "refusals allocate nothing"
    );
    // WHEP players have their own bucket: the publishers' is empty, theirs is not.
    let player_offer = MINIMAL_OFFER.replace("a=sendonly", "a=recvonly");
    let whep = || post_sdp(&gw, "/whep/rl", "application/sdp", &player_offer);
    for _ in 0..2 {
        let (code, _, body) = whep();
        assert_eq!(code, 201, "{body}");
    }
    let (code, _, body) = whep();
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("too many new players"), "{body}");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(whip().0, 201);
}
