//! `/metrics` as Prometheus sees it: parsed by the `prometheus_client`
//! text parser (not ours), with counters that move with real traffic and do
//! not go down when sessions end.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::*;

/// `name{labels}` → value, as the Prometheus client library parses it.
fn scrape(gw: &Gateway) -> HashMap<String, f64> {
    let text = ureq::get(&format!("{}/metrics", gw.api))
        .call()
        .expect("GET /metrics")
        .into_string()
        .unwrap();
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let mut child = Command::new(aiortc_python())
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected:\n{text}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sum(m: &HashMap<String, f64>, prefix: &str) -> f64 {
    m.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

#[test]
fn metrics_parse_and_count_real_traffic() {
    let started = std::time::Instant::now();
    let gw = Gateway::start(2, &[]);
    let m = scrape(&gw);
    assert_eq!(m["mgw_up{}"], 1.0, "{m:?}");
    assert_eq!(m["mgw_shard_alive{shard=1}"], 1.0);
    assert_eq!(sum(&m, "mgw_packets_total{"), 0.0);

    gw.room("m");
    let video = gw.ingest("m", json!({ "kind": "video" }));
    let audio = gw.ingest("m", json!({ "kind": "audio" }));
    let base = free_udp_quad();
    let _sink = UdpSocket::bind(("127.0.0.1", base)).unwrap();
    let egress = gw.egress("m", json!({ "host": "127.0.0.1", "port": base }));
    let target = |v: &Value| RtpTarget {
        port: port_of(v),
        srtp_key: None,
    };
    let mut sender = ffmpeg_send(&target(&video), &target(&audio), 2);
    assert!(wait_bounded(&mut sender, Duration::from_secs(15)));
    // Every packet ffmpeg sent is counted (and reported) before the scrape.
    gw.settled_ingest("m", &video, 0);
    gw.settled_ingest("m", &audio, 0);
    let m = scrape(&gw);
    let sent_in = sum(&m, "mgw_packets_total{direction=in");
    let sent_out = sum(&m, "mgw_packets_total{direction=out");
    // One egress: every media packet in goes out once (RTCP is counted in,
    // consumed, not forwarded).
    assert!(
        sent_in > 50.0 && sent_out > 50.0 && sent_out <= sent_in,
        "in {sent_in} out {sent_out}"
    );
    assert!(sum(&m, "mgw_bytes_total{direction=in") > 10_000.0);
    assert_eq!(m["mgw_room_sessions{role=ingest,room=m}"], 2.0);
    assert_eq!(m["mgw_room_sessions{role=egress,room=m}"], 1.0);
    assert_eq!(sum(&m, "mgw_sessions{kind=rtp_ingest"), 2.0);
    assert_eq!(m["mgw_udp_ports_in_use{}"], 3.0);
    assert!(m.contains_key("mgw_drops_total{reason=auth_failed,shard=0}"));
    // The shards' loop-turn histogram counts turns, cumulative by bucket.
    let turns = |shard: u32| m[&format!("mgw_loop_turn_seconds_count{{shard={shard}}}")];
    let (busy, idle) = if turns(0) >= turns(1) { (0, 1) } else { (1, 0) };
    assert!(turns(busy) > 100.0, "{}", turns(busy));
    for shard in [0, 1] {
        assert_eq!(
            m[&format!("mgw_loop_turn_seconds_bucket{{le=+Inf,shard={shard}}}")],
            turns(shard)
        );
        assert!(
            m[&format!("mgw_loop_turn_seconds_bucket{{le=0.0001,shard={shard}}}")]
                <= m[&format!("mgw_loop_turn_seconds_bucket{{le=0.001,shard={shard}}}")]
        );
    }
    // The shard without the room sleeps until a deadline (counters and
    // RTCP every 250 ms, RTMP timeouts every 500 ms) or its doorbell: a
    // few turns a second, where a fixed 2 ms wake made 500.
    let alive = started.elapsed().as_secs_f64();
    assert!(
        turns(idle) < 50.0 * alive,
        "shard {idle} turned {} times in {alive:.1} s without work",
        turns(idle)
    );

    // Sessions end; their packets stay counted.
    for (kind, v) in [("ingest", &video), ("ingest", &audio), ("egress", &egress)] {
        assert_eq!(
            gw.delete(&format!("/v1/rooms/m/{kind}/{}", id_of(v))).0,
            204
        );
    }
    let m = scrape(&gw);
    assert_eq!(sum(&m, "mgw_packets_total{direction=in"), sent_in);
    assert_eq!(m["mgw_udp_ports_in_use{}"], 0.0);
}
