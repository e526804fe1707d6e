//! Scenario `fanout`: one SRTP publisher → S SRTP subscribers through the
//! gateway (and, with `--baseline`, the same fan-out through the no-crypto
//! relay), at `--rate` packets/s of `--size` bytes for `--seconds`.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use dataplane::rtp::{is_rtcp, RtpHeader};
use dataplane::srtp::{SrtpContext, MAX_TRAILER};
use dataplane::twcc::{sequence, Recorder};
use gateway_ring::msg::{SrtpKey, SrtpSuite};
use serde_json::{json, Value};

use crate::api::Api;
use crate::proc_stats::{cpu_seconds, keep_off, pinned_cpu, rss_bytes, set_affinity};
use crate::webrtc_client::TWCC_ID;
use crate::Args;

/// One in this many packets per subscriber is decrypted for its latency.
const SAMPLE_EVERY: u64 = 16;
const SSRC: u32 = 0x5eed_0001;

fn srtp_key(v: &Value) -> Result<SrtpKey, String> {
    let material = base64::engine::general_purpose::STANDARD
        .decode(
            v["srtp"]["key"]
                .as_str()
                .ok_or("no srtp key in the answer")?,
        )
        .map_err(|e| e.to_string())?;
    SrtpKey::new(SrtpSuite::AeadAes128Gcm, &material).ok_or_else(|| "bad key length".into())
}

/// What the receivers saw.
#[derive(Default)]
struct Received {
    packets: u64,
    bytes: u64,
    latencies_us: Vec<u64>,
}

const RECV_BATCH: usize = 32;

/// `recvmmsg` buffers: one syscall drains up to [`RECV_BATCH`] datagrams of
/// a socket, so the load tool's receive side costs less than what it measures.
struct RecvBatch {
    bufs: Vec<[u8; 2048]>,
    iov: Vec<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl RecvBatch {
    fn new() -> RecvBatch {
        let mut bufs = vec![[0u8; 2048]; RECV_BATCH];
        let mut iov: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let msgs = (0..RECV_BATCH)
            .map(|i| {
                // SAFETY: a plain C struct; all-zero is valid.
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = &mut iov[i];
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        RecvBatch { bufs, iov, msgs }
    }

    /// Takes what is queued on `fd` without waiting; returns how many.
    fn recv(&mut self, fd: i32) -> usize {
        debug_assert_eq!(self.iov.len(), RECV_BATCH);
        // SAFETY: the headers point at `iov` and `bufs`, which live as long as self.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.msgs.as_mut_ptr(),
                RECV_BATCH as u32,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        n.max(0) as usize
    }

    fn packet(&mut self, k: usize) -> &mut [u8] {
        let len = self.msgs[k].msg_len as usize;
        &mut self.bufs[k][..len]
    }
}

/// Receives on every socket until `stop`; unprotects a sample for latency.
fn receive(
    socks: Vec<UdpSocket>,
    mut ctxs: Vec<Option<SrtpContext>>,
    feedback: Vec<Option<SrtpContext>>,
    t0: Instant,
    stop: Arc<AtomicBool>,
) -> Received {
    // Players that offered transport-cc feed back what arrived, as a
    // browser does: the numbers are read from the SRTP header as it came
    // (extensions are not encrypted), the feedback every 100 ms.
    let mut twcc: Vec<Option<(SrtpContext, Box<Recorder>)>> = feedback
        .into_iter()
        .map(|tx| tx.map(|tx| (tx, Box::new(Recorder::new(Instant::now())))))
        .collect();
    let mut next_feedback = Instant::now();
    // SAFETY: plain epoll syscalls on descriptors we own; errors checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1");
    for (i, s) in socks.iter().enumerate() {
        s.set_nonblocking(true).expect("nonblocking");
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: valid epoll fd, socket fd and event.
        unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
    }
    let mut out = Received::default();
    let mut counts = vec![0u64; socks.len()];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut batch = RecvBatch::new();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: events has room for 256 entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 256, 10) };
        for e in &events[..n.max(0) as usize] {
            let i = e.u64 as usize;
            loop {
                let got = batch.recv(socks[i].as_raw_fd());
                for k in 0..got {
                    let buf = batch.packet(k);
                    let len = buf.len();
                    // RTP only: not the RTCP reports or STUN answers a
                    // WebRTC session also gets.
                    if len < 12 || buf[0] >> 6 != 2 || is_rtcp(buf) {
                        continue;
                    }
                    out.packets += 1;
                    out.bytes += len as u64;
                    counts[i] += 1;
                    if let Some(Some((_, r))) = twcc.get_mut(i) {
                        let header = RtpHeader::parse(buf).map(|h| &buf[..h.len]);
                        if let Some(seq) = header.ok().and_then(|h| sequence(h, TWCC_ID)) {
                            r.record(seq, Instant::now());
                        }
                    }
                    if counts[i] % SAMPLE_EVERY != 1 {
                        continue;
                    }
                    let plain = match &mut ctxs[i] {
                        Some(ctx) => match ctx.unprotect_rtp(buf) {
                            Ok(n) => n,
                            Err(_) => continue,
                        },
                        None => len,
                    };
                    if plain >= 20 {
                        let at = plain - 8;
                        let sent = u64::from_be_bytes(buf[at..plain].try_into().expect("8 bytes"));
                        let now = t0.elapsed().as_nanos() as u64;
                        out.latencies_us.push(now.saturating_sub(sent) / 1000);
                    }
                }
                if got < RECV_BATCH {
                    break;
                }
            }
        }
        let now = Instant::now();
        if now >= next_feedback {
            next_feedback = now + Duration::from_millis(10);
            let mut fb = [0u8; 1500];
            for (i, player) in twcc.iter_mut().enumerate() {
                let Some((tx, r)) = player else { continue };
                if !r.due(now) {
                    continue;
                }
                let n = r.feedback(now, 1, 0, &mut fb);
                if n > 0 {
                    if let Ok(m) = tx.protect_rtcp(&mut fb, n) {
                        let _ = socks[i].send(&fb[..m]);
                    }
                }
            }
        }
    }
    // SAFETY: closing the epoll fd we created.
    unsafe { libc::close(ep) };
    out
}

/// One publisher's way in: a socket connected to the gateway (or relay),
/// its SRTP context and the payload type its media goes with.
pub(crate) struct Target {
    pub sock: UdpSocket,
    pub ctx: Option<SrtpContext>,
    pub pt: u8,
    pub ssrc: u32,
    /// VP8 (`--codec vp8` on a video line): each packet starts with a
    /// VP8 payload descriptor, and a frame's first packet with a VP8 frame
    /// header, a keyframe's each second.
    pub vp8: bool,
}

impl Target {
    /// A plain RTP ingest (or the relay) at `port`, from a socket of its own.
    fn to_port(port: u16, ctx: Option<SrtpContext>) -> Target {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("sender socket");
        sock.connect(("127.0.0.1", port))
            .expect("connect the sender");
        Target {
            sock,
            ctx,
            pt: 96,
            ssrc: SSRC,
            vp8: false,
        }
    }
}

/// Sends `--rate` packets/s of `--size` bytes from every target for
/// `--seconds`, each with its send time (ns since `t0`) in the payload's
/// last 8 bytes (its start is the codec's); returns the packets each sent. With `--fps F` the packets go
/// out as F frame bursts a second (one RTP timestamp each, marker on the
/// last), as an unpaced encoder sends them; with `--fps 0` evenly spaced.
/// Publishers are independent: target i of n starts its frames i/n of a
/// frame interval after target 0, so their packets do not arrive in step.
fn send(targets: &mut [Target], args: &Args, t0: Instant) -> u64 {
    let (rate, size) = (args.rate as u64, packet_size(args));
    let mut buf = vec![0u8; size + MAX_TRAILER];
    let total = (rate as f64 * args.seconds) as u64;
    // Packet k belongs to "frame" k·fps/rate, which leaves at frame/fps.
    let per_second = if args.fps > 0 { args.fps as u64 } else { rate };
    let frame_of = |k: u64| k * per_second / rate;
    let n = targets.len() as f64;
    let start = Instant::now();
    let mut first = 0;
    while first < total {
        let frame = frame_of(first);
        let end = (first..=total)
            .find(|&k| k == total || frame_of(k) != frame)
            .unwrap_or(total);
        let ts = (frame * 90_000 / per_second) as u32;
        for (i, t) in targets.iter_mut().enumerate() {
            let phase = (frame as f64 + i as f64 / n) / per_second as f64;
            let due = start + Duration::from_secs_f64(phase);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            for k in first..end {
                let marker = if k + 1 == end { 0x80 } else { 0 };
                buf[..12].copy_from_slice(&[0x80, t.pt | marker, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                buf[2..4].copy_from_slice(&(k as u16).to_be_bytes());
                buf[4..8].copy_from_slice(&ts.to_be_bytes());
                buf[8..12].copy_from_slice(&t.ssrc.to_be_bytes());
                if t.vp8 {
                    vp8_head(&mut buf[12..12 + VP8_HEAD], frame, k == first, per_second);
                }
                buf[size - 8..size]
                    .copy_from_slice(&(t0.elapsed().as_nanos() as u64).to_be_bytes());
                let n = match &mut t.ctx {
                    Some(c) => c.protect_rtp(&mut buf, size).expect("room for the tag"),
                    None => size,
                };
                let _ = t.sock.send(&buf[..n]);
            }
        }
        first = end;
    }
    total
}

/// The size of the packets sent: `--size`, or the least that holds a
/// header, a VP8 head and the send time.
pub(crate) fn packet_size(args: &Args) -> usize {
    args.size.max(12 + VP8_HEAD + 8)
}

/// The bytes [`vp8_head`] writes: a descriptor and a keyframe's header.
const VP8_HEAD: usize = 4 + 10;

/// RFC 7741's payload descriptor (X, I with a 15-bit picture id: the
/// frame's number; S on the frame's first packet), and on that packet the
/// frame header (RFC 6386 §9.1: a keyframe every `per_second` frames, its
/// start code and 640x360). What the SFU reads of a VP8 packet.
fn vp8_head(out: &mut [u8], frame: u64, first: bool, per_second: u64) {
    let pic = (frame & 0x7fff) as u16 | 0x8000;
    out[..4].copy_from_slice(&[
        0x80 | if first { 0x10 } else { 0 },
        0x80,
        (pic >> 8) as u8,
        pic as u8,
    ]);
    let header: [u8; 10] = match (first, frame.is_multiple_of(per_second)) {
        (true, true) => [0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01],
        (true, false) => [0x51, 0x2a, 0x00, 0, 0, 0, 0, 0, 0, 0],
        (false, _) => [0; 10],
    };
    out[4..].copy_from_slice(&header);
}

/// p50, p99, p99.9 and the sample count of sorted delays (µs).
pub(crate) fn latency_json(sorted_us: &[u64]) -> Value {
    json!({
        "p50": percentile(sorted_us, 0.5),
        "p99": percentile(sorted_us, 0.99),
        "p999": percentile(sorted_us, 0.999),
        "samples": sorted_us.len(),
    })
}

pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Drives one run: the targets send, the receivers count; each packet sent
/// should reach `copies` receivers. `cpu_pid` is the process whose CPU is
/// measured.
pub(crate) fn drive(
    mut targets: Vec<Target>,
    copies: u64,
    socks: Vec<UdpSocket>,
    ctxs: Vec<Option<SrtpContext>>,
    feedback: Vec<Option<SrtpContext>>,
    args: &Args,
    cpu_pid: u32,
) -> Value {
    // The measured process has its core to itself: the sender (this
    // thread) and the receiver (started next) run on the others.
    if let Some(cpu) = pinned_cpu(cpu_pid) {
        if let Err(e) = keep_off(cpu) {
            eprintln!("loadgen: could not keep off cpu {cpu}: {e}");
        }
    }
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let rx = std::thread::spawn(move || receive(socks, ctxs, feedback, t0, s));
    let cpu0 = cpu_seconds(cpu_pid);
    let started = Instant::now();
    let sent = send(&mut targets, args, t0) * targets.len() as u64;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(cpu_pid);
    std::thread::sleep(Duration::from_millis(300)); // the last packets land
    stop.store(true, Ordering::Relaxed);
    let mut got = rx.join().expect("receiver thread");
    got.latencies_us.sort_unstable();
    let expected = sent * copies;
    json!({
        "pps_in": sent as f64 / elapsed,
        "pps_out": got.packets as f64 / elapsed,
        "mbps_out": got.bytes as f64 * 8.0 / elapsed / 1e6,
        "loss_ratio": 1.0 - got.packets as f64 / expected.max(1) as f64,
        "latency_us": latency_json(&got.latencies_us),
        "cpu": match (cpu0, cpu1) { (Some(a), Some(b)) => json!((b - a) / elapsed), _ => Value::Null },
    })
}

pub(crate) fn sockets(n: u32) -> Result<Vec<UdpSocket>, String> {
    (0..n)
        .map(|_| UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("receiver socket: {e}")))
        .collect()
}

pub fn run(args: &Args) -> Result<Value, String> {
    let api = Api::new(args);
    let pid = api.dataplane_pid()?;
    let room = format!("loadgen-{}", std::process::id());
    api.call("POST", "/v1/rooms", Some(json!({ "name": room })))?;
    let result = (|| {
        // `--plain`: RTP without SRTP both ways, to tell the crypto's cost
        // from the rest of the gateway's.
        let srtp = if args.plain {
            Value::Null
        } else {
            json!({ "suite": "AEAD_AES_128_GCM" })
        };
        let key = |answer: &Value| {
            if args.plain {
                Ok(None)
            } else {
                srtp_key(answer).map(|k| Some(SrtpContext::new(&k)))
            }
        };
        let ingest = api.call(
            "POST",
            &format!("/v1/rooms/{room}/ingest/rtp"),
            Some(json!({ "kind": "video", "srtp": srtp })),
        )?;
        let ingest_port = ingest["port"].as_u64().ok_or("no ingest port")? as u16;
        let rss0 = rss_bytes(pid);
        let socks = sockets(args.subscribers)?;
        let mut ctxs = Vec::new();
        for s in &socks {
            let port = s.local_addr().map_err(|e| e.to_string())?.port();
            let e = api.call(
                "POST",
                &format!("/v1/rooms/{room}/egress/rtp"),
                Some(json!({ "host": "127.0.0.1", "port": port, "srtp": srtp })),
            )?;
            ctxs.push(key(&e)?);
        }
        let rss1 = rss_bytes(pid);
        let sends0 = api.udp_sends();
        let target = Target::to_port(ingest_port, key(&ingest)?);
        let copies = args.subscribers as u64;
        let gw = drive(vec![target], copies, socks, ctxs, Vec::new(), args, pid);
        let mut report = json!({
            "scenario": "fanout",
            "srtp": !args.plain,
            "publishers": 1,
            "subscribers": args.subscribers,
            "seconds": args.seconds,
            "rate_per_publisher": args.rate,
            "packet_size": packet_size(args),
            "fps": args.fps,
            "pps_in": gw["pps_in"],
            "pps_out": gw["pps_out"],
            "mbps_out": gw["mbps_out"],
            "loss_ratio": gw["loss_ratio"],
            "latency_us": gw["latency_us"],
            "dataplane_cpu": gw["cpu"],
            "rss_per_session_bytes": match (rss0, rss1) {
                (Some(a), Some(b)) => json!(b.saturating_sub(a) / args.subscribers.max(1) as u64),
                _ => Value::Null,
            },
        });
        add_udp_sends(&mut report, sends0, api.udp_sends());
        if args.baseline {
            add_baselines(&mut report, args, 1)?;
        }
        Ok(report)
    })();
    let _ = api.call("DELETE", &format!("/v1/rooms/{room}"), None);
    result
}

/// How many UDP sends the gateway made between two readings of its
/// counters, and how many datagrams each carried (GSO batching).
pub(crate) fn add_udp_sends(
    report: &mut Value,
    before: Option<(u64, u64)>,
    after: Option<(u64, u64)>,
) {
    if let (Some(a), Some(b)) = (before, after) {
        let (sends, datagrams) = (b.0 - a.0, b.1 - a.1);
        report["udp_sends"] = json!(sends);
        report["datagrams_per_send"] = json!(datagrams as f64 / sends.max(1) as f64);
    }
}

/// Runs the report's fan-out (`publishers` senders, `subscribers`
/// receivers, every packet to every receiver) through both baseline relays
/// and adds their figures as `baseline_…` and `baseline_gso_…`.
pub(crate) fn add_baselines(
    report: &mut Value,
    args: &Args,
    publishers: u32,
) -> Result<(), String> {
    // The relay runs on the core the gateway's shard is pinned to.
    let cpu = Api::new(args).dataplane_pid().ok().and_then(pinned_cpu);
    for (prefix, gso) in [("baseline_", false), ("baseline_gso_", true)] {
        let base = baseline(args, publishers, gso, cpu)?;
        for k in [
            "pps_in",
            "pps_out",
            "mbps_out",
            "loss_ratio",
            "latency_us",
            "cpu",
        ] {
            report[format!("{prefix}{k}")] = base[k].clone();
        }
    }
    Ok(())
}

/// The same fan-out through `loadgen relay` (no crypto), in a child process.
fn baseline(args: &Args, publishers: u32, gso: bool, cpu: Option<usize>) -> Result<Value, String> {
    let socks = sockets(args.subscribers)?;
    let ports: Vec<String> = socks
        .iter()
        .map(|s| {
            s.local_addr()
                .map(|a| a.port().to_string())
                .map_err(|e| e.to_string())
        })
        .collect::<Result<_, _>>()?;
    let listen = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(exe)
        .args([
            "relay",
            "--listen",
            &listen.to_string(),
            "--to",
            &ports.join(","),
        ])
        .args(gso.then_some("--gso"))
        .spawn()
        .map_err(|e| format!("starting the baseline relay: {e}"))?;
    if let Some(cpu) = cpu {
        if let Err(e) = set_affinity(child.id(), &[cpu]) {
            eprintln!("loadgen: could not pin the relay to cpu {cpu}: {e}");
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let ctxs = socks.iter().map(|_| None).collect();
    let targets = (0..publishers)
        .map(|i| Target {
            ssrc: SSRC + i,
            ..Target::to_port(listen, None)
        })
        .collect();
    let r = drive(
        targets,
        args.subscribers as u64,
        socks,
        ctxs,
        Vec::new(),
        args,
        child.id(),
    );
    let _ = child.kill();
    let _ = child.wait();
    Ok(r)
}

pub fn print_table(r: &Value) {
    println!(
        "fanout: 1 publisher -> {} subscribers, {} pkt/s of {} B, {} s{}",
        r["subscribers"],
        r["rate_per_publisher"],
        r["packet_size"],
        r["seconds"],
        if r["srtp"] == false {
            ", plain RTP (--plain)"
        } else {
            ", SRTP AES-128-GCM"
        }
    );
    print_measurements(r);
}

/// A figure as the tables show it: integers plain, others with 4 decimals.
pub(crate) fn fmt(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            if f.fract() == 0.0 {
                format!("{f:.0}")
            } else {
                format!("{f:.4}")
            }
        }
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The media figures of a fan-out report, with both relays' beside the
/// gateway's when the report has them (`--baseline`).
pub(crate) fn print_measurements(r: &Value) {
    let relays = !r["baseline_pps_out"].is_null();
    // Each row: the gateway's figure, then both relays' (`baseline_…`,
    // `baseline_gso_…`); `path` goes into nested objects.
    let row = |name: &str, gateway_key: &str, key: &str, path: &[&str]| {
        let at = |v: &Value| path.iter().fold(v.clone(), |v, k| v[*k].clone());
        print!("{name:<22} {:>14}", fmt(&at(&r[gateway_key])));
        if relays {
            print!(
                " {:>14} {:>14}",
                fmt(&at(&r[format!("baseline_{key}")])),
                fmt(&at(&r[format!("baseline_gso_{key}")]))
            );
        }
        println!();
    };
    print!("{:<22} {:>14}", "", "gateway");
    if relays {
        print!(" {:>14} {:>14}", "relay", "relay+GSO");
    }
    println!();
    row("packets/s in", "pps_in", "pps_in", &[]);
    row("packets/s out", "pps_out", "pps_out", &[]);
    row("Mbit/s out", "mbps_out", "mbps_out", &[]);
    row("loss ratio", "loss_ratio", "loss_ratio", &[]);
    row("latency p50 (us)", "latency_us", "latency_us", &["p50"]);
    row("latency p99 (us)", "latency_us", "latency_us", &["p99"]);
    row("latency p99.9 (us)", "latency_us", "latency_us", &["p999"]);
    row("CPU (cores)", "dataplane_cpu", "cpu", &[]);
    println!(
        "gateway: RSS/session {} bytes, {} datagrams per UDP send",
        fmt(&r["rss_per_session_bytes"]),
        fmt(&r["datagrams_per_send"])
    );
}
