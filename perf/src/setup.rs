//! Scenario `setup`: how fast the gateway opens WebRTC sessions with real
//! ICE and DTLS. `--publishers` WHIP and then `--subscribers` WHEP sessions
//! in one room, from 8 clients at once (each a browser-like client of
//! [`crate::webrtc_client`]); each set-up is timed from the POST of the
//! offer to the exported SRTP keys, in three steps (API, ICE, DTLS). All
//! sessions stay up (consent refreshed) until the last one is connected,
//! then are deleted; the port pool must come back.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::api::Api;
use crate::churn::ports_in_use;
use crate::fanout::percentile;
use crate::proc_stats::{cpu_seconds, parent_pid, rss_bytes};
use crate::webrtc_client::{self, Identity, Mode, Times, WORKERS};
use crate::Args;

fn ms(sorted_us: &[u64]) -> Value {
    let f = |p| percentile(sorted_us, p) as f64 / 1000.0;
    json!({ "p50": f(0.5), "p99": f(0.99), "max": sorted_us.last().map(|u| *u as f64 / 1000.0) })
}

fn sorted_us(times: &[Times], step: impl Fn(&Times) -> Duration) -> Vec<u64> {
    let mut v: Vec<u64> = times.iter().map(|t| step(t).as_micros() as u64).collect();
    v.sort_unstable();
    v
}

pub fn run(args: &Args) -> Result<Value, String> {
    let api = Api::new(args);
    let pid = api.dataplane_pid()?;
    // In the default mode the controlplane started the dataplane.
    let cp_pid = parent_pid(pid).filter(|p| *p > 1);
    let id = Identity::generate()?;
    let room = format!("loadgen-setup-{}", std::process::id());
    api.call("POST", "/v1/rooms", Some(json!({ "name": room })))?;
    let ports0 = ports_in_use(&api)?;
    let rss0 = rss_bytes(pid);
    let total = args.publishers + args.subscribers;
    // The first `--publishers` are WHIP, the rest WHEP.
    let jobs: Vec<(String, Mode)> = (0..total)
        .map(|i| {
            if i < args.publishers {
                (format!("/whip/{room}"), Mode::Publish { codec: args.codec })
            } else {
                let play = Mode::Play {
                    video: 1,
                    audio: 1,
                    codec: args.codec,
                    twcc: false,
                };
                (format!("/whep/{room}"), play)
            }
        })
        .collect();
    let cpu0 = (cpu_seconds(pid), cp_pid.and_then(cpu_seconds));
    let t0 = Instant::now();
    let results = webrtc_client::connect_parallel(&api, &id, &jobs);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = (cpu_seconds(pid), cp_pid.and_then(cpu_seconds));
    let rss1 = rss_bytes(pid);
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(first)) = results.iter().find(|r| r.is_err()) {
        eprintln!("loadgen: {failed} of {total} set-ups failed, first: {first}");
    }
    let sessions: Vec<_> = results.into_iter().filter_map(Result::ok).collect();
    let times: Vec<Times> = sessions.iter().map(|s| s.times).collect();
    let connected = times.len();
    let ports1 = ports_in_use(&api)?;
    for s in &sessions {
        api.delete_location(&s.location)?;
    }
    drop(sessions);
    let _ = api.call("DELETE", &format!("/v1/rooms/{room}"), None);
    let ports2 = ports_in_use(&api)?;
    let total_us = sorted_us(&times, Times::total);
    let under_1s = total_us.iter().filter(|u| **u < 1_000_000).count();
    let rate = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => json!((b - a) / elapsed),
        _ => Value::Null,
    };
    Ok(json!({
        "scenario": "setup",
        "publishers": args.publishers,
        "subscribers": args.subscribers,
        "connected": connected,
        "failed": failed,
        "seconds": elapsed,
        "sessions_per_s": connected as f64 / elapsed,
        "setup_ms": ms(&total_us),
        "api_ms": ms(&sorted_us(&times, |t| t.api)),
        "ice_ms": ms(&sorted_us(&times, |t| t.ice)),
        "dtls_ms": ms(&sorted_us(&times, |t| t.dtls)),
        "under_1s_ratio": under_1s as f64 / total.max(1) as f64,
        "dataplane_cpu": rate(cpu0.0, cpu1.0),
        "controlplane_cpu": rate(cpu0.1, cpu1.1),
        "rss_per_session_bytes": match (rss0, rss1) {
            (Some(a), Some(b)) => json!(b.saturating_sub(a) / connected.max(1) as u64),
            _ => Value::Null,
        },
        "ports_in_use_before": ports0,
        "ports_in_use_connected": ports1,
        "ports_in_use_after": ports2,
    }))
}

pub fn print_table(r: &Value) {
    println!(
        "setup: {} WHIP + {} WHEP sessions with ICE and DTLS, {} clients at once",
        r["publishers"], r["subscribers"], WORKERS
    );
    println!(
        "connected {} of {} in {:.2} s: {:.1} sessions/s, {:.1} % under 1 s",
        r["connected"],
        r["publishers"].as_u64().unwrap_or(0) + r["subscribers"].as_u64().unwrap_or(0),
        r["seconds"].as_f64().unwrap_or(0.0),
        r["sessions_per_s"].as_f64().unwrap_or(0.0),
        r["under_1s_ratio"].as_f64().unwrap_or(0.0) * 100.0
    );
    println!(
        "{:<16} {:>10} {:>10} {:>10}",
        "set-up (ms)", "p50", "p99", "max"
    );
    for (name, k) in [
        ("total", "setup_ms"),
        ("API", "api_ms"),
        ("ICE", "ice_ms"),
        ("DTLS", "dtls_ms"),
    ] {
        let f = |p: &str| r[k][p].as_f64().map_or("-".into(), |v| format!("{v:.2}"));
        println!(
            "{name:<16} {:>10} {:>10} {:>10}",
            f("p50"),
            f("p99"),
            f("max")
        );
    }
    println!(
        "CPU (cores): dataplane {}, controlplane {}; RSS/session {} B; ports in use {} -> {} -> {}",
        r["dataplane_cpu"],
        r["controlplane_cpu"],
        r["rss_per_session_bytes"],
        r["ports_in_use_before"],
        r["ports_in_use_connected"],
        r["ports_in_use_after"]
    );
}
