//! Bad packets are dropped and counted by reason; other sessions do not notice.

use std::net::UdpSocket;
use std::time::Duration;

use e2e::*;

fn rtp(pt: u8, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 960).to_be_bytes());
    p.extend_from_slice(&0xfeed_f00du32.to_be_bytes());
    p.extend_from_slice(&[0x55; 160]);
    p
}

#[test]
fn junk_wrong_keys_and_strangers_are_counted_and_harmless() {
    let gw = Gateway::start(1, &[]);
    gw.room("w");
    let key = "Z2F0ZXdheS10ZXN0LWtleXNhbHQtZm9yLXNydHAh";
    let good = gw.ingest("w", json!({ "kind": "audio" }));
    let secure = gw.ingest(
        "w",
        json!({ "kind": "video", "srtp": { "suite": "AES_CM_128_HMAC_SHA1_80", "key": key } }),
    );
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let dest = rx.local_addr().unwrap().port() - 2; // audio goes to port + 2
    gw.egress("w", json!({ "host": "127.0.0.1", "port": dest }));

    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = |v: &Value| ("127.0.0.1", port_of(v));
    let mut buf = [0u8; 2048];
    for seq in 0..20u16 {
        publisher.send_to(&rtp(111, seq), to(&good)).unwrap();
        // Interleaved abuse: junk, a truncated header, the wrong payload type, a stranger.
        publisher.send_to(b"\x00\x01garbage", to(&good)).unwrap();
        publisher.send_to(&[0x80, 111, 0], to(&good)).unwrap();
        publisher.send_to(&rtp(0, seq), to(&good)).unwrap();
        stranger.send_to(&rtp(111, seq + 100), to(&good)).unwrap();
        // Plain RTP to the SRTP ingest fails authentication.
        publisher.send_to(&rtp(96, seq), to(&secure)).unwrap();
        let n = rx.recv(&mut buf).expect("the good stream keeps flowing");
        assert_eq!(
            u16::from_be_bytes([buf[2], buf[3]]),
            seq,
            "in order, nothing injected"
        );
        assert_eq!(n, 172);
    }
    // A last good packet after the stranger's last: it is the next one out,
    // and once it is counted, so is everything sent to the ingest before it.
    publisher.send_to(&rtp(111, 20), to(&good)).unwrap();
    rx.recv(&mut buf).expect("the last good packet");
    assert_eq!(
        u16::from_be_bytes([buf[2], buf[3]]),
        20,
        "the stranger's packets were not forwarded"
    );
    let id = id_of(&good);
    let s = wait_for(
        "the last good packet counted",
        PATIENCE,
        || gw.session("w", &id),
        |s| s["stats"]["packets"] == 21,
    );
    let drops = |s: &Value, reason: &str| s["stats"]["drops"][reason].as_u64().unwrap();
    assert_eq!(drops(&s, "malformed"), 40, "{s}");
    assert_eq!(drops(&s, "payload_type"), 20, "{s}");
    assert_eq!(drops(&s, "unknown_source"), 20, "{s}");
    let sec = gw.settled_ingest("w", &secure, 0);
    assert_eq!(drops(&sec, "auth_failed"), 20, "{sec}");
    let (code, _) = gw.healthz();
    assert_eq!(code, 200, "the dataplane is still healthy");
}

#[test]
fn ffmpeg_with_the_wrong_srtp_key_is_dropped_as_auth_failure() {
    let gw = Gateway::start(1, &[]);
    gw.room("k");
    let srtp = json!({ "suite": "AES_CM_128_HMAC_SHA1_80" }); // generated key
    let v = gw.ingest("k", json!({ "kind": "video", "srtp": srtp }));
    let a = gw.ingest("k", json!({ "kind": "audio", "srtp": srtp }));
    let wrong = "d3Jvbmcta2V5LXdyb25nLXNhbHQtd3Jvbmcta2V5";
    let target = |x: &Value| RtpTarget {
        port: port_of(x),
        srtp_key: Some(wrong.into()),
    };
    let mut sender = ffmpeg_send(&target(&v), &target(&a), 2);
    assert!(
        wait_bounded(&mut sender, Duration::from_secs(20)),
        "ffmpeg sender did not end"
    );
    let s = gw.settled_ingest("k", &v, 0);
    assert_eq!(s["stats"]["packets"], 0, "{s}");
    assert!(
        s["stats"]["drops"]["auth_failed"].as_u64().unwrap() > 20,
        "{s}"
    );
}

/// A UDP socket with a large receive buffer that nobody reads, and how many
/// of our 1200-byte packets that buffer holds at most (the kernel doubles the
/// asked size, clamped by `rmem_max`, and charges more than the payload).
fn deaf_receiver() -> (UdpSocket, u16, u64) {
    use std::os::fd::AsRawFd;
    let base = free_udp_quad();
    let s = UdpSocket::bind(("127.0.0.1", base)).unwrap();
    let size: libc::c_int = 4 << 20;
    let mut got: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: setsockopt/getsockopt on a socket we own with correctly sized ints.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &mut got as *mut _ as *mut libc::c_void,
            &mut len,
        );
    }
    (s, base, got.max(0) as u64 / 1200)
}

#[test]
fn a_receiver_that_stops_reading_does_not_stall_the_shard() {
    let gw = Gateway::start(1, &[]);
    gw.room("slow");
    let ingest = gw.ingest("slow", json!({ "kind": "video" }));
    let (_deaf, deaf_port, deaf_holds) = deaf_receiver();
    let deaf = gw.egress("slow", json!({ "host": "127.0.0.1", "port": deaf_port }));
    let good_base = free_udp_quad();
    let good = UdpSocket::bind(("127.0.0.1", good_base)).unwrap();
    good.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    gw.egress("slow", json!({ "host": "127.0.0.1", "port": good_base }));
    // Reads until the tail's last packet, or PATIENCE: a busy machine may
    // leave any thread here unscheduled for a while, so a quiet spell is no end.
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut last = 0u16;
        let deadline = std::time::Instant::now() + PATIENCE;
        while last != 20_049 && std::time::Instant::now() < deadline {
            if let Ok(n) = good.recv(&mut buf) {
                assert!(n > 12);
                last = u16::from_be_bytes([buf[2], buf[3]]);
            }
        }
        last
    });

    // A burst far larger than the deaf receiver's buffer, as fast as we can.
    let publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut pkt = vec![0x80, 96, 0, 0, 0, 0, 0, 0, 0xde, 0xaf, 0, 1];
    pkt.resize(1200, 0x11);
    for seq in 0..20_000u16 {
        pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        let _ = publisher.send_to(&pkt, ("127.0.0.1", port_of(&ingest)));
        if seq % 16 == 0 {
            std::thread::sleep(Duration::from_micros(200)); // let the gateway keep up
        }
    }
    // Then a paced tail that the reading egress must get in full.
    for seq in 20_000..20_050u16 {
        pkt[2..4].copy_from_slice(&seq.to_be_bytes());
        publisher
            .send_to(&pkt, ("127.0.0.1", port_of(&ingest)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let last = reader.join().unwrap();
    // The first source keeps its sequence numbers on egress.
    assert_eq!(last, 20_049, "the reading egress got the tail");
    // Loopback hands the overflow to the deaf socket's queue, where the
    // kernel drops it; the gateway kept sending (or counted what it could not)
    // every packet it took in, and it took in far more than the deaf socket
    // holds (`deaf_holds` counts its bytes, an overestimate). How many it took in
    // depends on the machine's load: the ingest's own count is the reference.
    let took = |s: &Value| s["stats"]["packets"].as_u64().unwrap();
    let served = |s: &Value| {
        took(s)
            + s["stats"]["drops"]["send_failed"].as_u64().unwrap()
            + s["stats"]["drops"]["overload"].as_u64().unwrap()
    };
    // Session stats reach the API a little late: both counts are read again
    // until they agree.
    wait_for(
        "the deaf egress to be served every packet the ingest took in, \
         and that to be more than the deaf socket holds",
        PATIENCE,
        || {
            (
                gw.session("slow", &id_of(&ingest)),
                gw.session("slow", &id_of(&deaf)),
            )
        },
        |(i, d)| took(i) > deaf_holds && served(d) >= took(i),
    );
    let (code, h) = gw.healthz();
    assert_eq!(code, 200, "shard still beating: {h}");
    // And the shard still takes commands.
    gw.ingest("slow", json!({ "kind": "audio" }));
}
