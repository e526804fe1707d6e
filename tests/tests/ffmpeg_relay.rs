//! ffmpeg publishes H264 + Opus over RTP and over SDES-SRTP to ingests; two
//! ffmpeg receivers open the egress SDPs and decode both tracks.

use std::time::{Duration, Instant};

use e2e::*;

const RECEIVE_SECS: u32 = 4;
const SEND_SECS: u32 = 8;

/// ffmpeg's SDES key: base64 of a 16-byte key and 14-byte salt.
const SENDER_KEY: &str = "Z2F0ZXdheS10ZXN0LWtleXNhbHQtZm9yLXNydHAh";

fn relay(srtp_in: bool, srtp_out: [Option<Value>; 2]) {
    let gw = Gateway::start(1, &[]);
    gw.room("show");
    let srtp = |on: bool| {
        if on {
            json!({ "suite": "AES_CM_128_HMAC_SHA1_80", "key": SENDER_KEY })
        } else {
            Value::Null
        }
    };
    let video = gw.ingest("show", json!({ "kind": "video", "codec": "H264", "payload_type": 96, "clock_rate": 90000, "srtp": srtp(srtp_in) }));
    let audio = gw.ingest("show", json!({ "kind": "audio", "codec": "opus", "payload_type": 111, "clock_rate": 48000, "srtp": srtp(srtp_in) }));
    if srtp_in {
        assert_eq!(video["srtp"]["key"], SENDER_KEY);
    }

    let mut receivers = Vec::new();
    let mut egress_ids = Vec::new();
    for s in srtp_out {
        let port = free_udp_quad();
        let e = gw.egress(
            "show",
            json!({ "host": "127.0.0.1", "port": port, "srtp": s }),
        );
        let sdp = e["sdp"].as_str().unwrap();
        assert_eq!(
            sdp.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            !e["srtp"].is_null(),
            "{sdp}"
        );
        egress_ids.push(id_of(&e));
        receivers.push(Receiver::start(sdp, RECEIVE_SECS));
    }
    std::thread::sleep(Duration::from_millis(500)); // receivers listening before the first packet
    let key = || srtp_in.then(|| SENDER_KEY.to_string());
    let started = Instant::now();
    let sender = Reap(ffmpeg_send(
        &RtpTarget {
            port: port_of(&video),
            srtp_key: key(),
        },
        &RtpTarget {
            port: port_of(&audio),
            srtp_key: key(),
        },
        SEND_SECS,
    ));

    for (i, r) in receivers.into_iter().enumerate() {
        let (v, a, log) = r.finish(Duration::from_secs(30));
        eprintln!("receiver {i}: {v} video frames, {a} audio frames decoded");
        // 4 s of 30 fps video and 20 ms Opus frames; allow for start-up.
        assert!(
            v >= 60,
            "receiver {i} decoded {v} video frames; ffmpeg log:\n{log}"
        );
        assert!(
            a >= 100,
            "receiver {i} decoded {a} audio frames; ffmpeg log:\n{log}"
        );
    }
    let secs = started.elapsed().as_secs_f64();
    drop(sender);

    std::thread::sleep(Duration::from_millis(600)); // one stats period
    let vin = gw.session("show", &id_of(&video));
    let ain = gw.session("show", &id_of(&audio));
    for s in [&vin, &ain] {
        assert!(s["stats"]["packets"].as_u64().unwrap() > 50, "{s}");
        for reason in [
            "malformed",
            "auth_failed",
            "replay",
            "unknown_source",
            "payload_type",
        ] {
            assert_eq!(
                s["stats"]["drops"][reason], 0,
                "no {reason} drops expected: {s}"
            );
        }
    }
    let mut out = 0;
    for id in &egress_ids {
        let e = gw.session("show", id);
        let n = e["stats"]["packets"].as_u64().unwrap();
        assert!(n > 100, "egress {id} sent {n} packets: {e}");
        out += n;
    }
    let inp = vin["stats"]["packets"].as_u64().unwrap() + ain["stats"]["packets"].as_u64().unwrap();
    eprintln!(
        "relayed {inp} packets in, {out} out in {secs:.1} s: {:.0} packets/s in, {:.0} packets/s out (one shard, ffmpeg-paced)",
        inp as f64 / secs,
        out as f64 / secs
    );
}

#[test]
fn ffmpeg_rtp_ingest_reaches_two_ffmpeg_receivers() {
    relay(false, [None, None]);
}

#[test]
fn ffmpeg_srtp_ingest_reaches_two_srtp_ffmpeg_receivers() {
    let generated = json!({ "suite": "AES_CM_128_HMAC_SHA1_80" });
    let given = json!({ "suite": "AES_CM_128_HMAC_SHA1_80", "key": "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk" });
    relay(true, [Some(generated), Some(given)]);
}
