//! The wire never takes a shard down: inputs that once killed one (a
//! 1900-byte RTP packet, a 1-byte SPS with an RTMP player in the room), a
//! panic in one session's handling, and clients past the RTMP limits each
//! cost only the session or connection that brought them, while another
//! room on the same shard keeps decoding every frame.

use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::*;

const STEADY_SECS: u32 = 4;

/// A room that ffmpeg publishes to and an ffmpeg receiver decodes, on the
/// same shard as whatever the test does to another room. `check` decodes and
/// asserts that (nearly) every frame of its `STEADY_SECS` arrived.
struct SteadyRoom {
    receiver: Option<Receiver>,
    _sender: Reap,
}

impl SteadyRoom {
    fn start(gw: &Gateway, room: &str) -> SteadyRoom {
        gw.room(room);
        let video = gw.ingest(room, json!({ "kind": "video" }));
        let audio = gw.ingest(room, json!({ "kind": "audio" }));
        let port = free_udp_quad();
        let e = gw.egress(room, json!({ "host": "127.0.0.1", "port": port }));
        let receiver = Receiver::start(e["sdp"].as_str().unwrap(), STEADY_SECS);
        // Listening before the first packet (the clip's first IDR): ffmpeg
        // holds both ports once it is. Under parallel tests its start-up
        // took over 500 ms, and it began at the next IDR, 2 s in.
        wait_udp_bound(&[port, port + 2]);
        let target = |v: &Value| RtpTarget {
            port: port_of(v),
            srtp_key: None,
        };
        let sender = Reap(ffmpeg_send(
            &target(&video),
            &target(&audio),
            STEADY_SECS + 4,
        ));
        SteadyRoom {
            receiver: Some(receiver),
            _sender: sender,
        }
    }

    fn check(mut self, what: &str) {
        let (v, a, log) = self
            .receiver
            .take()
            .unwrap()
            .finish(Duration::from_secs(30));
        eprintln!("steady room beside {what}: {v} video, {a} audio frames decoded");
        // 30 fps and 50 Opus frames a second; a frame or two at the edges.
        let want = STEADY_SECS as usize * 30;
        assert!(
            v + 3 >= want,
            "beside {what}, the steady room decoded {v} of {want} video frames:\n{log}"
        );
        assert!(
            a + 5 >= STEADY_SECS as usize * 50,
            "{a} audio frames:\n{log}"
        );
    }
}

fn restarts(gw: &Gateway) -> u64 {
    gw.healthz().1["dataplane"]["restarts"]
        .as_u64()
        .expect("healthz names the restarts")
}

/// Whether `room` has a live RTMP publisher.
fn publishing(gw: &Gateway, room: &str) -> bool {
    let (code, v) = gw.get(&format!("/v1/rooms/{room}"));
    code == 200
        && v["ingests"].as_array().is_some_and(|a| {
            a.iter()
                .any(|s| s["kind"] == "rtmp_publish" && s["state"] == "live")
        })
}

/// ffmpeg's RTP muxer with `-pkt_size 1900` (legal on loopback and jumbo
/// frames) once killed the shard: send slots are 1520 bytes.
#[test]
fn an_ffmpeg_publisher_with_1900_byte_packets_costs_only_its_own_room() {
    let gw = Gateway::start(1, &[]);
    let steady = SteadyRoom::start(&gw, "steady");
    gw.room("jumbo");
    let video = gw.ingest("jumbo", json!({ "kind": "video" }));
    // An egress, so the shard fans the big packets out (where it crashed).
    let out = UdpSocket::bind("127.0.0.1:0").unwrap();
    gw.egress(
        "jumbo",
        json!({ "host": "127.0.0.1", "port": out.local_addr().unwrap().port() }),
    );
    let mut jumbo = Reap(
        Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-re", "-t", "3", "-i"])
            .arg(clip())
            .args([
                "-map",
                "0:v",
                "-c",
                "copy",
                "-f",
                "rtp",
                "-payload_type",
                "96",
            ])
            .args(["-pkt_size", "1900"])
            .arg(format!("rtp://127.0.0.1:{}", port_of(&video)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg"),
    );
    assert!(wait_bounded(&mut jumbo.0, Duration::from_secs(20)));
    steady.check("a 1900-byte RTP publisher");
    // The counters reach the controlplane every 250 ms.
    let s = wait_for(
        "the big packets counted and the others through",
        PATIENCE,
        || gw.session("jumbo", &id_of(&video)),
        |s| {
            s["stats"]["drops"]["oversize"].as_u64().unwrap() > 10
                && s["stats"]["packets"].as_u64().unwrap() > 0
        },
    );
    let oversize = s["stats"]["drops"]["oversize"].as_u64().unwrap();
    assert!(oversize > 10, "the big packets were counted: {s}");
    assert!(
        s["stats"]["packets"].as_u64().unwrap() > 0,
        "packets that fit still went through: {s}"
    );
    assert_eq!(gw.healthz().0, 200);
    assert_eq!(restarts(&gw), 0, "the dataplane never died");
    assert!(gw.metric("mgw_drops_total", "reason=\"oversize\"") >= oversize as f64);
}

/// RTP H264 whose STAP-A carries `sps`, a PPS and an IDR slice.
fn h264_packet(seq: u16, sps: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 0x80 | 96];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
    p.extend_from_slice(&0x5e5e_0001u32.to_be_bytes());
    p.push(24); // STAP-A
    for nal in [
        sps,
        &[0x68, 0xce, 0x3c, 0x80],
        &[0x65, 0x88, 0x84, 0x00, 0x33],
    ] {
        p.extend_from_slice(&(nal.len() as u16).to_be_bytes());
        p.extend_from_slice(nal);
    }
    p
}

/// A publisher whose SPS is one byte once killed the shard as soon as an
/// RTMP player was in its room (the AVC config read `sps[1..=3]`).
#[test]
fn a_one_byte_sps_with_an_rtmp_player_in_the_room_costs_only_that_room() {
    let gw = Gateway::start(1, &[]);
    let steady = SteadyRoom::start(&gw, "steady");
    gw.room("tiny");
    let video = gw.ingest("tiny", json!({ "kind": "video" }));
    let url = gw.rtmp_url("tiny");
    let player = std::thread::spawn(move || ffmpeg_rtmp_play(&url, 2, Duration::from_secs(8)));
    // The player is in the room (its play bridges the room's RTP) before the SPS arrives.
    wait_for(
        "the RTMP player to join",
        Duration::from_secs(10),
        || gw.room_sessions("tiny"),
        |sessions| sessions.iter().any(|s| s["kind"] == "rtmp_play"),
    );
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    for seq in 0..60u16 {
        publisher
            .send_to(&h264_packet(seq, &[0x67]), ("127.0.0.1", port_of(&video)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(33));
    }
    let (v, _, _) = player.join().unwrap();
    assert_eq!(v, 0, "nothing decodable was sent, and nothing was");
    steady.check("a 1-byte SPS");
    wait_for(
        "each refused SPS counted (malformed >= 30)",
        PATIENCE,
        || gw.session("tiny", &id_of(&video)),
        |s| s["stats"]["drops"]["malformed"].as_u64().unwrap() >= 30,
    );
    assert_eq!(gw.healthz().0, 200);
    assert_eq!(restarts(&gw), 0, "the dataplane never died");
}

/// With the test-only triggers on: a panic while one session's datagram
/// is handled ends that session ("internal error", an event, counted) and
/// no other; a panic outside any session exits the dataplane, and the
/// supervisor has a new one serving within 2 s.
#[test]
fn a_panic_costs_its_session_and_one_outside_sessions_restarts_the_dataplane() {
    let gw = Gateway::start_with_env(1, &[], &[("MGW_TEST_PANIC_TRIGGERS", "true")]);
    let steady = SteadyRoom::start(&gw, "steady");
    gw.room("victim");
    let victim = gw.ingest("victim", json!({ "kind": "video" }));
    let mut events = gw.events("victim");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.send_to(b"MGW-TEST-PANIC-SESSION", ("127.0.0.1", port_of(&victim)))
        .unwrap();
    steady.check("a contained panic");
    let s = gw.session("victim", &id_of(&victim));
    assert_eq!(s["state"], "ended", "{s}");
    assert!(
        s["end_reason"].as_str().unwrap().contains("internal error"),
        "{s}"
    );
    let ev = events.next_matching(Duration::from_secs(5), |e| e["event"] == "session_failed");
    assert!(
        ev["reason"].as_str().unwrap().contains("internal error"),
        "{ev}"
    );
    assert_eq!(gw.metric("mgw_contained_panics_total", ""), 1.0);
    assert_eq!(restarts(&gw), 0);

    // Outside any session: the process exits, the supervisor restarts it.
    let steady_ingest = gw.ingest("steady", json!({ "kind": "audio" }));
    udp.send_to(
        b"MGW-TEST-PANIC-SHARD",
        ("127.0.0.1", port_of(&steady_ingest)),
    )
    .unwrap();
    let t0 = Instant::now();
    while restarts(&gw) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "no restart");
        std::thread::sleep(Duration::from_millis(20));
    }
    gw.wait_healthy(Duration::from_secs(5));
    let fresh = loop {
        let (code, v) = gw.post("/v1/rooms/steady/ingest/rtp", json!({ "kind": "video" }));
        if code == 201 {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "{code} {v}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let recovered = t0.elapsed();
    eprintln!("dataplane restarted and took a new session {recovered:?} after the panic");
    assert!(recovered < Duration::from_secs(2), "{recovered:?}");
    let old = gw.session("steady", &id_of(&steady_ingest));
    assert_eq!(old["state"], "ended", "{old}");
    assert_eq!(gw.session("steady", &id_of(&fresh))["state"], "live");
}

/// `connect` (app `live`), `createStream` and `publish ROOM`, after a Set
/// Chunk Size of 64 KiB so each command is one chunk.
fn publish_commands(room: &str) -> Vec<u8> {
    use rml_amf0::Amf0Value;
    let connect = Amf0Value::Object(
        [("app".to_string(), Amf0Value::Utf8String("live".into()))]
            .into_iter()
            .collect(),
    );
    let mut out = rtmp_message(1, 0, &65536u32.to_be_bytes());
    out.extend(rtmp_command(0, "connect", 1.0, vec![connect]));
    out.extend(rtmp_command(0, "createStream", 2.0, vec![Amf0Value::Null]));
    out.extend(rtmp_command(
        1,
        "publish",
        3.0,
        vec![Amf0Value::Null, Amf0Value::Utf8String(room.into())],
    ));
    out
}

/// An RTMP publisher whose SPS and PPS (1100 bytes each) do not fit one
/// STAP-A once made a packet larger than any send slot as soon as the room
/// had an RTP egress or WebRTC player: now each goes alone, within the MTU.
#[test]
fn an_rtmp_publisher_with_large_parameter_sets_reaches_rtp_in_mtu_sized_packets() {
    let gw = Gateway::start(1, &[]);
    gw.room("big");
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    gw.egress(
        "big",
        json!({ "host": "127.0.0.1", "port": rx.local_addr().unwrap().port() }),
    );
    let mut s = rtmp_raw(&gw);
    s.write_all(&publish_commands("big")).unwrap();
    wait_for(
        "the raw publisher accepted",
        PATIENCE,
        || publishing(&gw, "big"),
        |&p| p,
    );
    let sps = [&[0x67u8, 0x42, 0xc0, 0x1e][..], &[0xaa; 1096]].concat();
    let pps = [&[0x68u8][..], &[0xbb; 1099]].concat();
    let mut config = vec![0x17, 0, 0, 0, 0, 1, 0x42, 0xc0, 0x1e, 0xff, 0xe1];
    config.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    config.extend_from_slice(&sps);
    config.push(1);
    config.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    config.extend_from_slice(&pps);
    let idr = [0x65u8, 0x88, 0x84, 0x00, 0x33];
    let mut key = vec![0x17, 1, 0, 0, 0];
    key.extend_from_slice(&(idr.len() as u32).to_be_bytes());
    key.extend_from_slice(&idr);
    let mut media = rtmp_message(9, 1, &config);
    media.extend(rtmp_message(9, 1, &key));
    s.write_all(&media).unwrap();
    let mut buf = [0u8; 2048];
    let mut got = Vec::new();
    while got.len() < 3 {
        let n = rx
            .recv(&mut buf)
            .expect("the egress gets the parameter sets and the IDR");
        got.push(buf[..n].to_vec());
    }
    assert!(
        got.iter().all(|p| p.len() <= 1500),
        "{:?}",
        got.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(&got[0][12..], &sps[..], "the SPS alone");
    assert_eq!(&got[1][12..], &pps[..], "the PPS alone");
    assert_eq!(&got[2][12..], &idr[..]);
    assert_eq!(gw.healthz().0, 200);
    assert_eq!(restarts(&gw), 0, "the dataplane never died");
}

/// Writes `bytes` and reports whether the server closed the connection
/// within `timeout` (a refused connection is closed right after accept).
fn closed_after(mut s: std::net::TcpStream, bytes: &[u8], timeout: Duration) -> bool {
    let _ = s.write_all(bytes);
    closed_within(&mut s, timeout)
}

/// RTMP clients that exceed the limits are refused or closed, counted per
/// limit in /metrics; the limits are flags.
#[test]
fn rtmp_clients_over_the_limits_are_refused_and_counted() {
    let gw = Gateway::start(
        1,
        &[
            "--rtmp-max-nonplaying-per-ip",
            "3",
            "--rtmp-setup-timeout",
            "1.5",
            "--rtmp-idle-timeout",
            "3",
        ],
    );
    let connect = || std::net::TcpStream::connect(("127.0.0.1", gw.rtmp)).unwrap();
    // Three idle connections are held; a fourth from the same IP is refused.
    let held: Vec<_> = (0..3).map(|_| connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        closed_after(connect(), b"", Duration::from_secs(1)),
        "the fourth connection was not refused"
    );
    // The three never finish set-up: closed after the timeout.
    let t0 = Instant::now();
    for mut s in held {
        assert!(closed_within(&mut s, Duration::from_secs(4)));
    }
    eprintln!("idle connections closed {:?} after the check", t0.elapsed());
    // Before publish, a message larger than any command closes the connection.
    let mut s = rtmp_raw(&gw);
    let mut header = vec![0x03, 0, 0, 0];
    header.extend_from_slice(&(200_000u32.to_be_bytes()[1..]));
    header.extend_from_slice(&[20, 0, 0, 0, 0]);
    s.write_all(&header).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(2)));
    // A publisher that goes silent (a phone that lost its network) is closed
    // after the idle timeout, so a stale push does not hold the room.
    let mut s = rtmp_raw(&gw);
    s.write_all(&publish_commands("quiet")).unwrap();
    let t0 = Instant::now();
    while !publishing(&gw, "quiet") {
        assert!(
            t0.elapsed() < Duration::from_millis(2500),
            "the raw publisher was not accepted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(closed_within(&mut s, Duration::from_secs(6)));
    eprintln!("silent publisher closed after {:?}", t0.elapsed());
    wait_for(
        "the silent publisher's session to end",
        PATIENCE,
        || publishing(&gw, "quiet"),
        |&p| !p,
    );
    // Each limit hit is counted (the shards report every 250 ms).
    for (limit, hits) in [
        ("rtmp_nonplaying_per_ip", 1.0),
        ("rtmp_setup_timeout", 3.0),
        ("rtmp_memory", 1.0),
        ("rtmp_idle", 1.0),
    ] {
        wait_for(
            &format!("mgw_limit_hits_total{{limit=\"{limit}\"}} >= {hits}"),
            PATIENCE,
            || gw.metric("mgw_limit_hits_total", &format!("limit=\"{limit}\"")),
            |&n| n >= hits,
        );
    }
    assert_eq!(
        gw.metric("mgw_limit", "name=\"rtmp-max-nonplaying-per-ip\""),
        3.0
    );
    // Slots come back: a publisher still gets in and is served.
    let mut publisher = Reap(ffmpeg_rtmp_publish(&gw, "after", 3));
    wait_for(
        "a publisher to get in after the limits",
        PATIENCE,
        || publishing(&gw, "after"),
        |&p| p,
    );
    assert!(wait_bounded(&mut publisher.0, Duration::from_secs(15)));
}
