//! Scenario `churn`: create and delete `--sessions` RTP egress sessions
//! through the API, `--subscribers` live at a time, and check that the
//! dataplane gives everything back: its RSS, its open file descriptors
//! (one UDP socket per session) and the controlplane's port pool end where
//! they started.
//!
//! The "start" is taken after one warm-up round of the same size, so the
//! allocator's and the tables' working set is in it: what is compared is
//! growth per round, which a leak of even a few bytes per session shows
//! over 100 000 sessions.

use std::time::Instant;

use serde_json::{json, Value};

use crate::api::Api;
use crate::fanout::percentile;
use crate::proc_stats::{open_fds, rss_bytes};
use crate::Args;

/// API clients working at once.
const WORKERS: u32 = 8;

/// Ports the controlplane's pool has handed out, from `/healthz`.
pub(crate) fn ports_in_use(api: &Api) -> Result<u64, String> {
    api.call("GET", "/healthz", None)?["udp_ports"]["in_use"]
        .as_u64()
        .ok_or_else(|| "no udp_ports.in_use in /healthz".into())
}

/// Creates `n` egresses in `room` and deletes them; appends each create's
/// latency (µs).
fn round(api: &Api, room: &str, n: u32, latencies: &mut Vec<u64>) -> Result<(), String> {
    let mut ids = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = Instant::now();
        let e = api.call(
            "POST",
            &format!("/v1/rooms/{room}/egress/rtp"),
            // The discard port: nothing is sent without a publisher.
            Some(json!({ "host": "127.0.0.1", "port": 9 })),
        )?;
        latencies.push(t.elapsed().as_micros() as u64);
        ids.push(e["id"].as_str().ok_or("no egress id")?.to_string());
    }
    for id in ids {
        api.call("DELETE", &format!("/v1/rooms/{room}/egress/{id}"), None)?;
    }
    Ok(())
}

pub fn run(args: &Args) -> Result<Value, String> {
    let api = Api::new(args);
    let pid = api.dataplane_pid()?;
    let room = format!("loadgen-churn-{}", std::process::id());
    api.call("POST", "/v1/rooms", Some(json!({ "name": room })))?;
    let result = (|| {
        let batch = args.subscribers.max(1);
        let mut warm = Vec::new();
        round(&api, &room, batch, &mut warm)?;
        let (rss0, fds0, ports0) = (rss_bytes(pid), open_fds(pid), ports_in_use(&api)?);
        let started = Instant::now();
        // Several API clients at once, as an operator's many users would be;
        // each keeps its share of `batch` sessions live.
        let per_worker = args.sessions.div_ceil(WORKERS);
        let results: Vec<Result<(u32, Vec<u64>), String>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..WORKERS)
                .map(|_| {
                    let (api, room) = (&api, &room);
                    s.spawn(move || {
                        let mut latencies = Vec::with_capacity(per_worker as usize);
                        let mut done = 0u32;
                        let live = batch.div_ceil(WORKERS);
                        while done < per_worker {
                            let n = live.min(per_worker - done);
                            round(api, room, n, &mut latencies)?;
                            done += n;
                        }
                        Ok((done, latencies))
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_else(|_| Err("worker panicked".into())))
                .collect()
        });
        let secs = started.elapsed().as_secs_f64();
        let mut latencies = Vec::new();
        let mut done = 0u32;
        for r in results {
            let (n, l) = r?;
            done += n;
            latencies.extend(l);
        }
        let (rss1, fds1, ports1) = (rss_bytes(pid), open_fds(pid), ports_in_use(&api)?);
        latencies.sort_unstable();
        Ok(json!({
            "scenario": "churn",
            "sessions": done,
            "live_at_once": batch.div_ceil(WORKERS) * WORKERS,
            "api_clients": WORKERS,
            "seconds": secs,
            "sessions_per_s": done as f64 / secs,
            "create_latency_us": {
                "p50": percentile(&latencies, 0.5),
                "p99": percentile(&latencies, 0.99),
                "p999": percentile(&latencies, 0.999),
            },
            "rss_before_bytes": rss0,
            "rss_after_bytes": rss1,
            "rss_growth_per_session_bytes": match (rss0, rss1) {
                (Some(a), Some(b)) => json!((b as f64 - a as f64) / done as f64),
                _ => Value::Null,
            },
            "fds_before": fds0,
            "fds_after": fds1,
            "ports_in_use_before": ports0,
            "ports_in_use_after": ports1,
        }))
    })();
    let _ = api.call("DELETE", &format!("/v1/rooms/{room}"), None);
    result
}

pub fn print_table(r: &Value) {
    println!(
        "churn: {} sessions created and deleted, {} live at once, {:.1} s",
        r["sessions"],
        r["live_at_once"],
        r["seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  {:.0} sessions/s; create latency p50 {} us, p99 {} us, p99.9 {} us",
        r["sessions_per_s"].as_f64().unwrap_or(0.0),
        r["create_latency_us"]["p50"],
        r["create_latency_us"]["p99"],
        r["create_latency_us"]["p999"]
    );
    println!(
        "  dataplane RSS {} -> {} bytes ({:.2} bytes/session), fds {} -> {}, ports in use {} -> {}",
        r["rss_before_bytes"],
        r["rss_after_bytes"],
        r["rss_growth_per_session_bytes"]
            .as_f64()
            .unwrap_or(f64::NAN),
        r["fds_before"],
        r["fds_after"],
        r["ports_in_use_before"],
        r["ports_in_use_after"]
    );
}
