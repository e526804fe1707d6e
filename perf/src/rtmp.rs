//! Scenario `rtmp`: one RTMP publisher → S RTMP players of a 1 Mbit/s
//! H264 + AAC stream through the gateway and, with `--baseline`, through
//! nginx-rtmp in the same run (same clip, same players, same timing).
//!
//! Each run: the publisher starts; 1.5 s later the players connect, spread
//! over one GOP (2 s); after 1 s to settle, the window of `--seconds` is
//! measured (server CPU from /proc, bytes and messages that reach the
//! players, delay and loss of the frames sent in it); then everything stops.
//! Time to first frame is connect → first keyframe, for every player: with
//! the gateway's GOP cache it is the set-up alone, without a cache (nginx)
//! up to a GOP more.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::Api;
use crate::fanout::latency_json;
use crate::flv::{self, Tag};
use crate::nginx::Nginx;
use crate::proc_stats::{cpu_seconds, rss_bytes};
use crate::rtmp_client::{self, Plan};
use crate::Args;

const LEAD: Duration = Duration::from_millis(1500);
const RAMP: Duration = Duration::from_secs(2);
const SETTLE: Duration = Duration::from_secs(1);
const DRAIN: Duration = Duration::from_millis(500);

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

/// One run against one server; `pid` is the process whose CPU and memory
/// are measured.
fn drive(
    addr: SocketAddr,
    key: &str,
    tags: &Arc<Vec<Tag>>,
    args: &Args,
    pid: u32,
) -> Result<Value, String> {
    let t0 = Instant::now();
    let window0 = t0 + LEAD + RAMP + SETTLE;
    let window1 = window0 + Duration::from_secs_f64(args.seconds);
    let plan = Plan {
        t0,
        ramp: (t0 + LEAD, t0 + LEAD + RAMP),
        window: (window0, window1),
        end: window1 + DRAIN,
    };
    let (k, clip) = (key.to_string(), tags.clone());
    let publisher = std::thread::spawn(move || rtmp_client::publish(addr, &k, &clip, plan));
    let k = key.to_string();
    let count = args.subscribers as usize;
    let players = std::thread::spawn(move || rtmp_client::play(addr, &k, count, plan));
    sleep_until(plan.ramp.0);
    let rss0 = rss_bytes(pid);
    sleep_until(window0);
    let rss1 = rss_bytes(pid);
    let (cpu0, own0) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    sleep_until(window1);
    let (cpu1, own1) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let published = publisher.join().map_err(|_| "publisher panicked")??;
    let mut got = players.join().map_err(|_| "players panicked")?;
    got.latencies_us.sort_unstable();
    got.first_keyframe_ms.sort_by(f64::total_cmp);
    let secs = args.seconds;
    let expected = published.frames_in_window * count as u64;
    let ms = |v: &[f64], p: f64| {
        v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
    };
    let rate = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => json!((b - a) / secs),
        _ => Value::Null,
    };
    if !got.failed.is_empty() {
        eprintln!(
            "loadgen: {} of {count} players failed at {addr}, first: {}",
            got.failed.len(),
            got.failed[0]
        );
    }
    Ok(json!({
        "pps_out": got.messages as f64 / secs,
        "mbps_out": got.bytes as f64 * 8.0 / secs / 1e6,
        "loss_ratio": 1.0 - got.frames as f64 / expected.max(1) as f64,
        "latency_us": latency_json(&got.latencies_us),
        "first_frame_ms": {
            "p50": ms(&got.first_keyframe_ms, 0.5),
            "p99": ms(&got.first_keyframe_ms, 0.99),
            "max": got.first_keyframe_ms.last(),
            "never": got.never_keyframe,
        },
        "cpu": rate(cpu0, cpu1),
        "loadgen_cpu": rate(own0, own1),
        "rss_per_session_bytes": match (rss0, rss1) {
            (Some(a), Some(b)) => json!(b.saturating_sub(a) / count.max(1) as u64),
            _ => Value::Null,
        },
        "players_failed": got.failed.len(),
        "published_kbps": published.bytes as f64 * 8.0 / (window1 + DRAIN - t0).as_secs_f64() / 1e3,
    }))
}

/// Keys of a run's result, in the report with or without `baseline_`.
const KEYS: [&str; 9] = [
    "pps_out",
    "mbps_out",
    "loss_ratio",
    "latency_us",
    "first_frame_ms",
    "loadgen_cpu",
    "rss_per_session_bytes",
    "players_failed",
    "published_kbps",
];

pub fn run(args: &Args) -> Result<Value, String> {
    let api = Api::new(args);
    let pid = api.dataplane_pid()?;
    let addr = args
        .rtmp
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("--rtmp {}: not an address", args.rtmp))?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .ok_or("no directory for the clip")?
        .join("perf-media");
    let tags = Arc::new(flv::read_tags(&flv::clip(&dir)?)?);
    let room = format!("loadgen-rtmp-{}", std::process::id());
    api.call("POST", "/v1/rooms", Some(json!({ "name": room })))?;
    let gw = drive(addr, &room, &tags, args, pid);
    let _ = api.call("DELETE", &format!("/v1/rooms/{room}"), None);
    let gw = gw?;
    let mut report = json!({
        "scenario": "rtmp",
        "publishers": 1,
        "subscribers": args.subscribers,
        "seconds": args.seconds,
        "dataplane_cpu": gw["cpu"],
    });
    for k in KEYS {
        report[k] = gw[k].clone();
    }
    if args.baseline {
        let nginx = Nginx::start()?;
        let base = drive(nginx.addr, "loadgen", &tags, args, nginx.pid())?;
        report["baseline_server"] = json!("nginx-rtmp");
        report["baseline_cpu"] = base["cpu"].clone();
        for k in KEYS {
            report[format!("baseline_{k}")] = base[k].clone();
        }
    }
    Ok(report)
}

pub fn print_table(r: &Value) {
    let fmt = |v: &Value| match v.as_f64() {
        Some(f) if f.fract() == 0.0 => format!("{f:.0}"),
        Some(f) => format!("{f:.4}"),
        None => "-".into(),
    };
    let row = |name: &str, key: &str, path: &[&str]| {
        let at = |v: &Value| path.iter().fold(v.clone(), |v, k| v[*k].clone());
        println!(
            "{name:<24} {:>14} {:>14}",
            fmt(&at(&r[key])),
            fmt(&at(&r[format!("baseline_{key}")]))
        );
    };
    println!(
        "rtmp: 1 publisher (1 Mbit/s H264 + AAC) -> {} RTMP players, {} s",
        r["subscribers"], r["seconds"]
    );
    println!("{:<24} {:>14} {:>14}", "", "gateway", "nginx-rtmp");
    row("messages/s out", "pps_out", &[]);
    row("Mbit/s out", "mbps_out", &[]);
    row("video frames lost", "loss_ratio", &[]);
    row("delay p50 (us)", "latency_us", &["p50"]);
    row("delay p99 (us)", "latency_us", &["p99"]);
    row("delay p99.9 (us)", "latency_us", &["p999"]);
    row("first frame p50 (ms)", "first_frame_ms", &["p50"]);
    row("first frame p99 (ms)", "first_frame_ms", &["p99"]);
    println!(
        "{:<24} {:>14} {:>14}",
        "server CPU (cores)",
        fmt(&r["dataplane_cpu"]),
        fmt(&r["baseline_cpu"])
    );
    row("server RSS/player (B)", "rss_per_session_bytes", &[]);
    row("loadgen CPU (cores)", "loadgen_cpu", &[]);
    row("players failed", "players_failed", &[]);
}
