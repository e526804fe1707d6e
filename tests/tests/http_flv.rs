//! HTTP-FLV (`http://HOST/live/ROOM/NAME.flv`, `…/live/ROOM.flv`): what
//! WeChat's `live-player` and flv.js pages play. ffmpeg plays it from the
//! GOP cache like an RTMP player, with the same streams (a participant's,
//! the room's program); bad requests get their status and a reason.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use e2e::*;

/// Sends `request` on a new connection to the HTTP-FLV listener; the
/// answer's status and head, and the first bytes of its body (read until
/// the server closes, `limit` bytes, or 5 s).
fn exchange(gw: &Gateway, request: &[u8], limit: usize) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", gw.http_flv)).expect("connect HTTP-FLV");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A server that refuses early may close before the request is all
    // written: what it answered is still read below.
    let _ = s.write_all(request);
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while got.len() < limit {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(got.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&got[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head, got[end..].to_vec())
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// A mini-program pushes over RTMP; ffmpeg plays its HTTP-FLV address:
/// video and audio decode, the picture comes from the GOP cache as fast as
/// an RTMP player's (both measured in the same run, alternating), the
/// room's program has its HTTP-FLV twin, and the answer is chunked FLV
/// with CORS for flv.js.
#[test]
fn ffmpeg_plays_http_flv_like_an_rtmp_player() {
    let gw = Gateway::start(1, &[]);
    gw.room("hf");
    let clip = clip_sized(320, 240, 440);
    let _bob = Reap(ffmpeg_rtmp_push(&gw, "hf/bob", &clip, 60));
    let (rtmp, flv) = (gw.rtmp_url("hf/bob"), gw.flv_url("hf/bob", ""));
    wait_playing(&rtmp);

    let (video, audio, log) = ffmpeg_rtmp_play(&flv, 3, Duration::from_secs(20));
    assert!(
        video >= 60 && audio >= 100,
        "{video} video / {audio} audio\n{log}"
    );
    let streams = ffprobe_streams(&flv);
    assert!(
        streams
            .iter()
            .any(|s| s["width"] == 320 && s["height"] == 240),
        "{streams:?}"
    );
    assert!(
        streams.iter().any(|s| s["codec_name"] == "aac"),
        "{streams:?}"
    );

    // Time to the first picture, RTMP and HTTP-FLV alternating.
    let (mut by_rtmp, mut by_flv) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        by_rtmp.push(rtmp_first_frame(&rtmp).expect("RTMP plays"));
        by_flv.push(rtmp_first_frame(&flv).expect("HTTP-FLV plays"));
    }
    eprintln!(
        "first picture (ffmpeg, median of 5): RTMP {:?}, HTTP-FLV {:?}; all RTMP {by_rtmp:?}, all HTTP-FLV {by_flv:?}",
        median(by_rtmp.clone()),
        median(by_flv.clone())
    );

    // The room's program, as alice (who is nobody here yet): bob.
    let program = gw.flv_url("hf", "?participant=alice");
    let (video, _, log) = ffmpeg_rtmp_play(&program, 2, Duration::from_secs(20));
    assert!(video >= 30, "{video} frames of the program\n{log}");

    // What flv.js needs: CORS, FLV, chunked; the body starts with the FLV
    // header in the first chunk, then the cached stream's tags.
    let (status, head, body) = exchange(&gw, &get("/live/hf/bob.flv"), 4096);
    assert_eq!(status, 200, "{head}");
    for h in [
        "Access-Control-Allow-Origin: *",
        "Content-Type: video/x-flv",
        "Transfer-Encoding: chunked",
    ] {
        assert!(head.contains(h), "{h} missing:\n{head}");
    }
    assert!(
        body.starts_with(b"d\r\nFLV\x01\x05\0\0\0\x09\0\0\0\0\r\n"),
        "{:?}",
        &body[..body.len().min(32)]
    );
    let (status, head, _) = exchange(&gw, b"OPTIONS /live/hf/bob.flv HTTP/1.1\r\n\r\n", 4096);
    assert_eq!(status, 204, "{head}");
    assert!(head.contains("Access-Control-Allow-Methods: GET"), "{head}");
}

/// What a client can get wrong, each with its status and a reason, and
/// the stream plays on for the others.
#[test]
fn bad_http_flv_requests_get_clear_answers() {
    let gw = Gateway::start(1, &[]);
    gw.room("bad");
    let clip = clip_sized(320, 240, 440);
    let _bob = Reap(ffmpeg_rtmp_push(&gw, "bad/bob", &clip, 60));
    wait_playing(&gw.rtmp_url("bad/bob"));
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (get("/live/nope.flv"), 404, "no stream"),
        (get("/live/bad/carol.flv"), 404, "carol"),
        (get("/live/bad/bob"), 404, "/live/ROOM.flv"),
        (get("/other/bad/bob.flv"), 400, ""),
        (get("/live/bad.flv?participant=b%20b"), 400, ""),
        (
            b"POST /live/bad/bob.flv HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec(),
            405,
            "POST",
        ),
        (
            b"\x16\x03\x01\x02\x00junk\r\n\r\n".to_vec(),
            400,
            "malformed",
        ),
        (
            format!("GET /live/{}.flv HTTP/1.1\r\n", "a".repeat(8300)).into_bytes(),
            431,
            "8 KiB",
        ),
    ];
    for (request, want, says) in &cases {
        let (status, head, body) = exchange(&gw, request, 64 * 1024);
        let body = String::from_utf8_lossy(&body);
        let shown = String::from_utf8_lossy(&request[..request.len().min(60)]);
        assert_eq!(status, *want, "{shown:?}\n{head}{body}");
        assert!(body.contains(says), "{shown:?}: {body}");
        assert!(head.contains("Connection: close"), "{head}");
    }
    // A client that sends half a head and stops is closed at the set-up
    // timeout (10 s), like an RTMP client that never plays: not waited on
    // for ever. Meanwhile, bob plays on.
    let mut stalled = TcpStream::connect(("127.0.0.1", gw.http_flv)).unwrap();
    stalled
        .write_all(b"GET /live/bad/bob.flv HTTP/1.1\r\n")
        .unwrap();
    let (video, _, log) = ffmpeg_rtmp_play(&gw.flv_url("bad/bob", ""), 2, Duration::from_secs(20));
    assert!(video >= 30, "{video}\n{log}");
    stalled
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let t0 = Instant::now();
    let mut buf = [0u8; 64];
    let n = stalled.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(t0.elapsed() < Duration::from_secs(15));
    // Counted as the set-up timeout (the shards report every second).
    let deadline = Instant::now() + Duration::from_secs(5);
    while gw.metric("mgw_limit_hits_total", "rtmp_setup_timeout") < 1.0 {
        assert!(Instant::now() < deadline, "the timeout was not counted");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// With room tokens, HTTP-FLV needs `?token=` like RTMP play: none or a
/// wrong one is 403, a subscribe token of the room plays.
#[test]
fn http_flv_needs_room_tokens_when_configured() {
    let gw = Gateway::start(1, &["--token-secret", "e2e-token-secret-0123456789"]);
    let mint = |role: &str| gw.mint_token("ht", role);
    let publish = mint("publish");
    let clip = clip_sized(320, 240, 440);
    let _bob = Reap(ffmpeg_rtmp_push(
        &gw,
        &format!("ht/bob?token={publish}"),
        &clip,
        60,
    ));
    let subscribe = mint("subscribe");
    wait_playing(&gw.flv_url("ht/bob", &format!("?token={subscribe}")));
    for path in [
        "/live/ht/bob.flv".to_string(),
        "/live/ht/bob.flv?token=not-a-jwt".to_string(),
    ] {
        let (status, head, body) = exchange(&gw, &get(&path), 4096);
        assert_eq!(
            status,
            403,
            "{path}: {head}{}",
            String::from_utf8_lossy(&body)
        );
    }
}

/// The FLV tags (type, time, body) at the start of an HTTP-FLV answer:
/// chunked transfer undone, the file header skipped.
fn flv_tags(gw: &Gateway, path: &str, bytes: usize) -> Vec<(u8, u32, Vec<u8>)> {
    let (status, head, body) = exchange(gw, &get(path), bytes);
    assert_eq!(status, 200, "{head}");
    let mut flv = Vec::new();
    let mut rest = &body[..];
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let Ok(n) = usize::from_str_radix(&String::from_utf8_lossy(&rest[..eol]), 16) else {
            break;
        };
        let start = eol + 2;
        if rest.len() < start + n + 2 {
            break;
        }
        flv.extend_from_slice(&rest[start..start + n]);
        rest = &rest[start + n + 2..];
    }
    assert!(flv.starts_with(b"FLV\x01"), "an FLV file");
    let mut tags = Vec::new();
    let mut at = 13;
    while at + 11 <= flv.len() {
        let len = u32::from_be_bytes([0, flv[at + 1], flv[at + 2], flv[at + 3]]) as usize;
        let ts = u32::from_be_bytes([flv[at + 7], flv[at + 4], flv[at + 5], flv[at + 6]]);
        if at + 11 + len + 4 > flv.len() {
            break;
        }
        tags.push((flv[at], ts, flv[at + 11..at + 11 + len].to_vec()));
        at += 11 + len + 4;
    }
    tags
}

/// The fields of an `onMetaData` script tag body.
fn metadata(body: &[u8]) -> std::collections::HashMap<String, rml_amf0::Amf0Value> {
    let values = rml_amf0::deserialize(&mut &body[..]).expect("AMF0");
    assert_eq!(
        values[0],
        rml_amf0::Amf0Value::Utf8String("onMetaData".into())
    );
    match &values[1] {
        rml_amf0::Amf0Value::Object(f) => f.clone(),
        other => panic!("{other:?}"),
    }
}

/// Complete `onMetaData` on every FLV output, before the sequence headers
/// and the first frame: from an RTMP publisher (ffmpeg copying its video,
/// so its own metadata says `videodatarate` 0) and from a WebRTC one
/// (aiortc: no metadata of its own at all). ffprobe reads the data rates.
#[test]
fn flv_metadata_is_complete_whoever_publishes() {
    use rml_amf0::Amf0Value::{Boolean, Number};
    let gw = Gateway::start(1, &[]);
    gw.room("meta");
    let clip = clip_sized(320, 240, 440);
    let _bob = Reap(ffmpeg_rtmp_push(&gw, "meta/bob", &clip, 60));
    let web_clip = clip_sized(256, 144, 880);
    let mut web =
        AiortcPublisher::start_with(&gw, "meta?participant=web", &web_clip, 30.0, &["--encode"]);
    web.connected();
    // Both streams carry audio and video by now (a WebRTC publisher's
    // audio joins its bridge once lined up with the video, within 2 s).
    for name in ["bob", "web"] {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let streams = ffprobe_streams(&gw.rtmp_url(&format!("meta/{name}")));
            let has = |c: &str| streams.iter().any(|s| s["codec_name"] == c);
            if has("h264") && has("aac") {
                break;
            }
            assert!(Instant::now() < deadline, "{name}: {streams:?}");
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    for (name, w, h) in [("bob", 320.0, 240.0), ("web", 256.0, 144.0)] {
        let tags = flv_tags(&gw, &format!("/live/meta/{name}.flv"), 64 * 1024);
        let kinds: Vec<u8> = tags.iter().map(|t| t.0).take(4).collect();
        assert_eq!(kinds[0], 18, "{name}: metadata first: {kinds:?}");
        let first_frame = tags
            .iter()
            .position(|t| t.0 == 9 && t.2.get(1) == Some(&1))
            .expect("a frame");
        let headers = tags[..first_frame]
            .iter()
            .filter(|t| t.0 != 18 && t.2.get(1) == Some(&0))
            .count();
        assert_eq!(
            headers, 2,
            "{name}: both sequence headers before the first frame"
        );
        let f = metadata(&tags[0].2);
        eprintln!("{name}'s onMetaData: {f:?}");
        let num = |k: &str| match f.get(k) {
            Some(Number(n)) => *n,
            other => panic!("{name}: {k} is {other:?} in {f:?}"),
        };
        assert_eq!((num("width"), num("height")), (w, h), "{name}");
        assert_eq!((num("videocodecid"), num("audiocodecid")), (7.0, 10.0));
        assert_eq!(num("audiosamplerate"), 48_000.0, "{name}");
        assert!(
            num("audiochannels") >= 1.0 && f.contains_key("stereo"),
            "{name}"
        );
        assert!(num("framerate") > 0.0, "{name}");
        assert!(
            num("videodatarate") > 0.0 && num("audiodatarate") > 0.0,
            "{name}"
        );
        if name == "web" {
            assert_eq!(f["stereo"], Boolean(true), "transcoded to AAC stereo");
        }
        // ffmpeg's FLV reader takes each stream's bit rate from the data rates.
        let streams = ffprobe_streams(&gw.rtmp_url(&format!("meta/{name}")));
        let rate = |codec: &str| {
            streams
                .iter()
                .find(|s| s["codec_name"] == codec)
                .and_then(|s| s["bit_rate"].as_str()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        assert!(rate("h264") > 0 && rate("aac") > 0, "{name}: {streams:?}");
    }
}

/// A TCP connection to `port` whose receive buffer is `rcvbuf` bytes, set
/// before connecting so the window stays small.
fn small_window_connect(port: u16, rcvbuf: i32) -> TcpStream {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor we own until it is wrapped.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &rcvbuf as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
            },
            sin_zero: [0; 8],
        };
        let rc = libc::connect(
            fd,
            &addr as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(rc, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}

/// An HTTP-FLV client that asks for a stream and never reads is a slow
/// player like an RTMP one: it falls behind, skips to keyframes, and is
/// disconnected after 5 s behind (`session_failed`, slow consumer); a
/// player that reads goes on undisturbed.
#[test]
fn an_http_flv_client_that_never_reads_is_dropped_as_slow() {
    let gw = Gateway::start(1, &[]);
    gw.room("slow");
    let mut events = gw.events("slow");
    let clip = clip_sized(640, 360, 440);
    let _bob = Reap(ffmpeg_rtmp_push(&gw, "slow/bob", &clip, 90));
    wait_playing(&gw.rtmp_url("slow/bob"));
    let mut stalled = small_window_connect(gw.http_flv, 4096);
    stalled
        .write_all(b"GET /live/slow/bob.flv HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let t0 = Instant::now();
    let e = events.next_matching(Duration::from_secs(75), |e| {
        e["event"] == "session_failed" && e["reason"].as_str().unwrap_or("").contains("slow")
    });
    eprintln!(
        "the client that never reads was dropped after {:?}: {e}",
        t0.elapsed()
    );
    assert_eq!(e["kind"], "rtmp_play", "{e}");
    let (video, _, log) = ffmpeg_rtmp_play(&gw.flv_url("slow/bob", ""), 2, Duration::from_secs(20));
    assert!(video >= 30, "{video}\n{log}");
}
