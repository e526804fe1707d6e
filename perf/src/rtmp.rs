//! Scenario `rtmp`: one RTMP publisher → S RTMP players (`--subscribers`)
//! and N HTTP-FLV players (`--flv-players`) of a 1 Mbit/s H264 + AAC stream
//! through the gateway and, with `--baseline`, the same publisher and RTMP
//! players through nginx-rtmp in the same run (same clip, same timing).
//! nginx-rtmp has no HTTP-FLV: the baseline has no HTTP-FLV players, and
//! its `baseline_` figures are the RTMP players' as always.
//!
//! ```text
//! t0 ── LEAD 1.5 s ──┬── RAMP 2 s (one GOP) ──┬─ SETTLE 1 s ─┬── window (--seconds) ──┬─ DRAIN 0.5 s ─┤
//!  publisher starts  │ players connect, RTMP  │              │ counted: CPU, bytes,   │ everything
//!                    │ and HTTP-FLV spread    │              │ messages, the frames   │ stops
//!                    │ evenly and interleaved │              │ sent in it (delay)     │
//! ```
//!
//! [`drive`] runs that once against one server: the publisher on its own
//! thread (`rtmp_client::publish`), all players on one epoll thread
//! (`rtmp_client::play`), and this thread samples the server's CPU and RSS
//! at the window's edges. Each kind of player is then summed up the same way
//! ([`figures`]): messages and bytes out, the stamped frames sent in the
//! window that did not arrive over all of them (`loss_ratio`), and per
//! player (`worst_player_ratio`, `players_below_99`,
//! `video_msgs_per_player_s` beside the publisher's
//! `published_video_msgs_s`), delay, time to first frame (connect → first
//! keyframe: with the gateway's GOP cache it is the set-up alone, without a
//! cache, nginx, up to a GOP more) and failures. HTTP-FLV players' figures
//! carry `flv_`; the server's CPU is for both kinds together.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::uring::raise_open_files_limit;
use serde_json::{json, Value};

use crate::api::Api;
use crate::fanout::latency_json;
use crate::flv::{self, Tag};
use crate::nginx::Nginx;
use crate::proc_stats::{cpu_seconds, keep_off, pinned_cpu, rss_bytes};
use crate::rtmp_client::{self, Group, Plan, Players, Published};
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

/// One kind of players' figures: `count` of them were to play what
/// `published` sent, `secs` the window.
fn figures(g: &mut Group, count: usize, published: &Published, secs: f64) -> Value {
    g.latencies_us.sort_unstable();
    g.first_keyframe_ms.sort_by(f64::total_cmp);
    let sent = published.frames_in_window;
    let expected = sent * count as u64;
    let ms = |v: &[f64], p: f64| {
        v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
    };
    // Per player that did not fail (a failed one is in `players_failed`).
    let worst = g.delivered.iter().map(|d| d.frames).min();
    let below_99 = g
        .delivered
        .iter()
        .filter(|d| (d.frames as f64) < 0.99 * sent as f64);
    let video: u64 = g.delivered.iter().map(|d| d.video_messages).sum();
    let playing = g.delivered.len();
    json!({
        "pps_out": g.messages as f64 / secs,
        "mbps_out": g.bytes as f64 * 8.0 / secs / 1e6,
        "loss_ratio": 1.0 - g.frames as f64 / expected.max(1) as f64,
        "worst_player_ratio": worst.filter(|_| sent > 0).map(|f| f as f64 / sent as f64),
        "players_below_99": below_99.count(),
        "video_msgs_per_player_s": (playing > 0).then(|| video as f64 / playing as f64 / secs),
        "latency_us": latency_json(&g.latencies_us),
        "first_frame_ms": {
            "p50": ms(&g.first_keyframe_ms, 0.5),
            "p99": ms(&g.first_keyframe_ms, 0.99),
            "max": g.first_keyframe_ms.last(),
            "never": g.never_keyframe,
        },
        "players_failed": g.failed.len(),
    })
}

/// One run against one server: the RTMP players at `addr`, and the
/// HTTP-FLV ones if `flv` says where; `pid` is the process whose CPU and
/// memory are measured. The RTMP players' figures and the run's, and the
/// HTTP-FLV players' (unprefixed) if there were any.
fn drive(
    addr: SocketAddr,
    flv: Option<Players>,
    key: &str,
    tags: &Arc<Vec<Tag>>,
    args: &Args,
    pid: u32,
) -> Result<(Value, Option<Value>), String> {
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
    let rtmp = Players {
        addr,
        count: args.subscribers as usize,
    };
    let players = std::thread::spawn(move || rtmp_client::play(&k, rtmp, flv, plan));
    sleep_until(plan.ramp.0);
    let rss0 = rss_bytes(pid);
    sleep_until(window0);
    let rss1 = rss_bytes(pid);
    let (cpu0, own0) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    sleep_until(window1);
    let (cpu1, own1) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let published = publisher.join().map_err(|_| "publisher panicked")??;
    let mut got = players.join().map_err(|_| "players panicked")?;
    let secs = args.seconds;
    let rate = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => json!((b - a) / secs),
        _ => Value::Null,
    };
    let flv_count = flv.map_or(0, |f| f.count);
    for (kind, g, at) in [("RTMP", &got.rtmp, Some(rtmp)), ("HTTP-FLV", &got.flv, flv)] {
        if let (Some(first), Some(at)) = (g.failed.first(), at) {
            let (failed, n, addr) = (g.failed.len(), at.count, at.addr);
            eprintln!("loadgen: {failed} of {n} {kind} players failed at {addr}, first: {first}");
        }
    }
    let sessions = (rtmp.count + flv_count).max(1) as u64;
    let mut run = figures(&mut got.rtmp, rtmp.count, &published, secs);
    run["cpu"] = rate(cpu0, cpu1);
    run["loadgen_cpu"] = rate(own0, own1);
    run["rss_per_session_bytes"] = match (rss0, rss1) {
        (Some(a), Some(b)) => json!(b.saturating_sub(a) / sessions),
        _ => Value::Null,
    };
    run["published_kbps"] =
        json!(published.bytes as f64 * 8.0 / (window1 + DRAIN - t0).as_secs_f64() / 1e3);
    run["published_video_msgs_s"] = json!(published.video_in_window as f64 / secs);
    let flv = flv.map(|f| figures(&mut got.flv, f.count, &published, secs));
    Ok((run, flv))
}

/// Keys of a run's result, in the report with or without `baseline_`.
const KEYS: [&str; 13] = [
    "pps_out",
    "mbps_out",
    "loss_ratio",
    "worst_player_ratio",
    "players_below_99",
    "video_msgs_per_player_s",
    "published_video_msgs_s",
    "latency_us",
    "first_frame_ms",
    "loadgen_cpu",
    "rss_per_session_bytes",
    "players_failed",
    "published_kbps",
];

/// `value` of `flag` as a socket address.
fn address(flag: &str, value: &str) -> Result<SocketAddr, String> {
    value
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("{flag} {value}: not an address"))
}

/// Makes sure this process may hold `sockets` descriptors (plus a margin),
/// raising its soft open-files limit (to the hard one) if it is lower.
fn room_for(sockets: usize) -> Result<(), String> {
    let need = sockets as u64 + 64;
    let limit = raise_open_files_limit().map_err(|e| format!("open files limit: {e}"))?;
    if limit < need {
        return Err(format!(
            "{sockets} players need {need} open files, the hard limit is {limit} (ulimit -Hn)"
        ));
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<Value, String> {
    let api = Api::new(args);
    let pid = api.dataplane_pid()?;
    // The load tool's threads (publisher, players) stay off the shard's
    // pinned core, for both servers: else the kernel's wake-up affinity
    // pulls the player thread onto the shard's core, and the two share it.
    if let Some(cpu) = pinned_cpu(pid) {
        if let Err(e) = keep_off(cpu) {
            eprintln!("loadgen: could not keep off cpu {cpu}: {e}");
        }
    }
    let addr = address("--rtmp", &args.rtmp)?;
    let flv = match args.flv_players {
        0 => None,
        count => Some(Players {
            addr: address("--http-flv", &args.http_flv)?,
            count: count as usize,
        }),
    };
    room_for(args.subscribers as usize + args.flv_players as usize)?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe
        .parent()
        .ok_or("no directory for the clip")?
        .join("perf-media");
    let tags = Arc::new(flv::read_tags(&flv::clip(&dir)?)?);
    let room = format!("loadgen-rtmp-{}", std::process::id());
    api.call("POST", "/v1/rooms", Some(json!({ "name": room })))?;
    let key = match args.stream {
        true => format!("{room}/pub"),
        false => room.clone(),
    };
    let gw = drive(addr, flv, &key, &tags, args, pid);
    let _ = api.call("DELETE", &format!("/v1/rooms/{room}"), None);
    let (gw, gw_flv) = gw?;
    let mut report = json!({
        "scenario": "rtmp",
        "publishers": 1,
        "subscribers": args.subscribers,
        "flv_players": args.flv_players,
        "stream": args.stream,
        "seconds": args.seconds,
        "dataplane_cpu": gw["cpu"],
    });
    for k in KEYS {
        report[k] = gw[k].clone();
    }
    if let Some(Value::Object(figures)) = gw_flv {
        report["http_flv"] = json!(args.http_flv);
        for (k, v) in figures {
            report[format!("flv_{k}")] = v;
        }
    }
    if args.baseline {
        let nginx = Nginx::start()?;
        let (base, _) = drive(nginx.addr, None, "loadgen", &tags, args, nginx.pid())?;
        report["baseline_server"] = json!("nginx-rtmp");
        report["baseline_cpu"] = base["cpu"].clone();
        for k in KEYS {
            report[format!("baseline_{k}")] = base[k].clone();
        }
    }
    Ok(report)
}

/// The table's rows for one kind of players: label, key, path in it.
const PLAYER_ROWS: [(&str, &str, &[&str]); 12] = [
    ("messages/s out", "pps_out", &[]),
    ("Mbit/s out", "mbps_out", &[]),
    ("video frames lost", "loss_ratio", &[]),
    ("worst player's frames", "worst_player_ratio", &[]),
    ("players < 99 % frames", "players_below_99", &[]),
    ("video msgs/s per player", "video_msgs_per_player_s", &[]),
    ("delay p50 (us)", "latency_us", &["p50"]),
    ("delay p99 (us)", "latency_us", &["p99"]),
    ("delay p99.9 (us)", "latency_us", &["p999"]),
    ("first frame p50 (ms)", "first_frame_ms", &["p50"]),
    ("first frame p99 (ms)", "first_frame_ms", &["p99"]),
    ("players failed", "players_failed", &[]),
];

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
    let flv = r["flv_players"].as_u64().unwrap_or(0);
    println!(
        "rtmp: 1 publisher (1 Mbit/s H264 + AAC) -> {} RTMP players{}, {} s",
        r["subscribers"],
        match flv {
            0 => String::new(),
            n => format!(" + {n} HTTP-FLV players (gateway only)"),
        },
        r["seconds"]
    );
    println!("{:<24} {:>14} {:>14}", "", "gateway", "nginx-rtmp");
    for (name, key, path) in PLAYER_ROWS {
        row(name, key, path);
    }
    row("video msgs/s published", "published_video_msgs_s", &[]);
    println!(
        "{:<24} {:>14} {:>14}",
        match flv {
            0 => "server CPU (cores)",
            _ => "server CPU, all (cores)",
        },
        fmt(&r["dataplane_cpu"]),
        fmt(&r["baseline_cpu"])
    );
    row("server RSS/player (B)", "rss_per_session_bytes", &[]);
    row("loadgen CPU (cores)", "loadgen_cpu", &[]);
    if flv > 0 {
        println!("HTTP-FLV players ({flv}; gateway only: nginx-rtmp has no HTTP-FLV)");
        for (name, key, path) in PLAYER_ROWS {
            row(name, &format!("flv_{key}"), path);
        }
    }
}
