//! Either process can die without taking the other's work with it.
//!
//! - Attach mode: SIGKILL the controlplane while media flows; media keeps
//!   flowing, and a restarted controlplane recovers rooms and sessions from
//!   the dataplane over the rings.
//! - Spawn mode: SIGKILL the dataplane; `/healthz` reports it down, the
//!   controlplane restarts it, marks the lost sessions ended, and new sessions
//!   work again.
//!
//! Restart times are printed (run with `--nocapture`), never asserted.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e::*;

/// A publisher sending one small Opus-sized RTP packet every 10 ms.
struct Pacer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u16>>,
}

impl Pacer {
    fn start(port: u16) -> Pacer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut seq = 0u16;
            while !flag.load(Ordering::Relaxed) {
                let mut p = vec![0x80, 111];
                p.extend_from_slice(&seq.to_be_bytes());
                p.extend_from_slice(&(seq as u32 * 480).to_be_bytes());
                p.extend_from_slice(&0x5eed_1234u32.to_be_bytes());
                p.extend_from_slice(&[0xaa; 80]);
                let _ = s.send_to(&p, ("127.0.0.1", port));
                seq = seq.wrapping_add(1);
                std::thread::sleep(Duration::from_millis(10));
            }
            seq
        });
        Pacer {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A receiver bound where an egress sends audio (`port + 2`).
struct Sink {
    sock: UdpSocket,
}

impl Sink {
    fn new() -> (Sink, u16) {
        let base = free_udp_quad();
        let sock = UdpSocket::bind(("127.0.0.1", base + 2)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        (Sink { sock }, base)
    }

    /// Throws away what the socket has queued so far.
    fn drain(&self) {
        let mut buf = [0u8; 2048];
        self.sock.set_nonblocking(true).unwrap();
        while self.sock.recv(&mut buf).is_ok() {}
        self.sock.set_nonblocking(false).unwrap();
    }

    /// Packets received during `d` (not counting what was queued before).
    fn count_for(&self, d: Duration) -> usize {
        self.drain();
        let deadline = Instant::now() + d;
        let mut buf = [0u8; 2048];
        let mut n = 0;
        while Instant::now() < deadline {
            if self.sock.recv(&mut buf).is_ok() {
                n += 1;
            }
        }
        n
    }
}

fn ids(room: &Value, list: &str) -> Vec<String> {
    let mut v: Vec<String> = room[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn controlplane_sigkill_in_attach_mode_keeps_media_and_recovers_state() {
    let mut gw = Gateway::start_attached(1);
    gw.room("live");
    let ingest = gw.ingest("live", json!({ "kind": "audio" }));
    let (sink, base) = Sink::new();
    let egress = gw.egress("live", json!({ "host": "127.0.0.1", "port": base }));
    let _pacer = Pacer::start(port_of(&ingest));
    assert!(
        sink.count_for(Duration::from_millis(500)) > 10,
        "media flows before the kill"
    );
    let packets = |gw: &Gateway, session: &Value| {
        gw.session("live", &id_of(session))["stats"]["packets"]
            .as_u64()
            .unwrap()
    };
    let counted = |what: &str, gw: &Gateway, session: &Value| {
        wait_for(what, PATIENCE, || packets(gw, session), |&n| n > 0)
    };
    let in_before = counted("the ingest's first counters", &gw, &ingest);
    let out_before = counted("the egress's first counters", &gw, &egress);
    let (_, before) = gw.get("/v1/rooms/live");

    let mut cp = gw.controlplane.take().unwrap();
    kill9(cp.id());
    let _ = cp.wait();
    // With no controlplane at all, the dataplane keeps relaying.
    let during = sink.count_for(Duration::from_secs(1));
    assert!(
        during > 50,
        "only {during} packets in 1 s without a controlplane"
    );

    let t0 = Instant::now();
    gw.spawn_controlplane(true, &[]);
    gw.wait_healthy(Duration::from_secs(20));
    let recovered = t0.elapsed();
    println!("controlplane restart (spawn to healthy, state recovered): {recovered:?}");

    let (code, after) = gw.get("/v1/rooms/live");
    assert_eq!(code, 200, "the room survived: {after}");
    assert_eq!(ids(&after, "ingests"), ids(&before, "ingests"), "{after}");
    assert_eq!(ids(&after, "egresses"), ids(&before, "egresses"), "{after}");
    let s = gw.session("live", &id_of(&ingest));
    assert_eq!(s["state"], "live", "{s}");
    assert_eq!(s["port"], ingest["port"], "{s}");
    // Counters come from the dataplane, so they include the time we were
    // away: the first the new controlplane shows are past what was counted
    // before the kill by at least what the sink got meanwhile (counters
    // restarted from 0 would show a report's worth, about 25).
    let pkts = counted("the ingest's counters after the restart", &gw, &ingest);
    eprintln!("ingest packets: {in_before} before the kill, {during} relayed while away, {pkts} after the restart");
    assert!(
        pkts >= in_before + during as u64,
        "ingest counters recovered: {pkts}, {in_before} before the kill and {during} relayed while away"
    );
    let out = counted("the egress's counters after the restart", &gw, &egress);
    assert!(
        out >= out_before + during as u64,
        "egress counters recovered: {out}, {out_before} before the kill and {during} relayed while away"
    );

    // The recovered port is not handed out twice, ids do not repeat, and the
    // recovered sessions can be managed as before.
    let second = gw.ingest("live", json!({ "kind": "video" }));
    assert_ne!(port_of(&second), port_of(&ingest));
    assert_ne!(id_of(&second), id_of(&ingest));
    assert_ne!(id_of(&second), id_of(&egress));
    let (code, _) = gw.delete(&format!("/v1/rooms/live/egress/{}", id_of(&egress)));
    assert_eq!(code, 204);
    wait_for(
        "the egress deleted after recovery to stop (packets in the last 500 ms)",
        PATIENCE,
        || sink.count_for(Duration::from_millis(500)),
        |&n| n == 0,
    );
}

#[test]
fn dataplane_sigkill_is_reported_restarted_and_sessions_end() {
    let gw = Gateway::start(1, &[]);
    gw.room("fragile");
    let old_in = gw.ingest("fragile", json!({ "kind": "audio" }));
    let (sink, base) = Sink::new();
    let old_out = gw.egress("fragile", json!({ "host": "127.0.0.1", "port": base }));
    let (_, h) = gw.healthz();
    let pid = h["dataplane"]["pid"].as_u64().unwrap() as u32;
    let epoch = h["dataplane"]["epoch"].as_u64().unwrap();
    assert!(pid > 0, "{h}");

    let t0 = Instant::now();
    kill9(pid);
    let mut down_at = None;
    let mut up_at = None;
    while t0.elapsed() < Duration::from_secs(20) {
        let (code, h) = gw.healthz();
        if code == 503 && down_at.is_none() {
            assert_eq!(h["status"], "down", "{h}");
            down_at = Some(t0.elapsed());
        }
        if code == 200 && down_at.is_some() && h["dataplane"]["epoch"].as_u64() > Some(epoch) {
            up_at = Some(t0.elapsed());
            assert_ne!(h["dataplane"]["pid"].as_u64().unwrap() as u32, pid);
            assert_eq!(h["dataplane"]["restarts"], 1, "{h}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let down_at = down_at.expect("/healthz never reported the dead dataplane");
    let up_at = up_at.unwrap_or_else(|| panic!("dataplane not back; log:\n{}", gw.logs()));
    println!("dataplane killed: /healthz 503 after {down_at:?}, healthy again after {up_at:?}");

    // The lost sessions are ended (and say why); the room is still there.
    for id in [id_of(&old_in), id_of(&old_out)] {
        let s = gw.session("fragile", &id);
        assert_eq!(s["state"], "ended", "{s}");
    }
    let (_, h) = gw.healthz();
    assert_eq!(
        h["udp_ports"]["in_use"], 0,
        "ports of lost sessions are free: {h}"
    );

    // A new ingest and egress work on the new dataplane.
    let ingest = gw.ingest("fragile", json!({ "kind": "audio" }));
    gw.egress("fragile", json!({ "host": "127.0.0.1", "port": base }));
    let _pacer = Pacer::start(port_of(&ingest));
    let got = sink.count_for(Duration::from_secs(1));
    assert!(got > 50, "only {got} packets relayed after the restart");
}
