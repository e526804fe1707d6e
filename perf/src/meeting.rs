//! Scenario `meeting`: `--rooms` rooms of `--participants` people, each a
//! real WebRTC client (ICE, DTLS, SRTP from the exported keys): a WHIP
//! session that sends video at `--rate` packets/s and a WHEP session with
//! one video line per other participant. A WHEP session does not know
//! which WHIP session is its owner's, so each player gets `participants-1`
//! of the room's publishers, whichever came first: every packet sent
//! should reach `participants-1` players. Measured like `fanout`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dataplane::srtp::SrtpContext;
use serde_json::{json, Value};

use crate::api::Api;
use crate::fanout::{drive, Target};
use crate::proc_stats::rss_bytes;
use crate::webrtc_client::{self, Identity, Mode, Session};
use crate::Args;

/// The H264 payload type of the offers `webrtc_client` makes.
const VIDEO_PT: u8 = 102;

pub fn run(args: &Args) -> Result<Value, String> {
    if args.participants < 2 {
        return Err("a meeting needs --participants 2 or more".into());
    }
    let api = Api::new(args);
    let pid = api.dataplane_pid()?;
    let id = Identity::generate()?;
    let rooms: Vec<String> = (0..args.rooms)
        .map(|r| format!("loadgen-meeting-{}-{r}", std::process::id()))
        .collect();
    let rss0 = rss_bytes(pid);
    let mut sessions: Vec<Session> = Vec::new();
    let mut players: Vec<Session> = Vec::new();
    let result = (|| {
        for room in &rooms {
            api.call("POST", "/v1/rooms", Some(json!({ "name": room })))?;
            for _ in 0..args.participants {
                let play = Mode::Play {
                    video: args.participants as usize - 1,
                    audio: 0,
                };
                players.push(webrtc_client::connect(
                    &api,
                    &format!("/whep/{room}"),
                    &id,
                    play,
                )?);
                sessions.push(webrtc_client::connect(
                    &api,
                    &format!("/whip/{room}"),
                    &id,
                    Mode::Publish,
                )?);
            }
        }
        let rss1 = rss_bytes(pid);
        let mut setup_ms: Vec<f64> = sessions
            .iter()
            .chain(&players)
            .map(|s| s.times.total().as_secs_f64() * 1000.0)
            .collect();
        setup_ms.sort_by(f64::total_cmp);
        // Consent for every session while media flows.
        let consents = sessions
            .iter()
            .chain(&players)
            .map(Session::consent)
            .collect::<Result<Vec<_>, _>>()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let keeper = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                consents.iter().for_each(|c| c.refresh());
                std::thread::sleep(Duration::from_secs(5));
            }
        });
        let targets = sessions
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(Target {
                    sock: s.sock.try_clone().map_err(|e| e.to_string())?,
                    ctx: Some(SrtpContext::new(&s.tx)),
                    pt: VIDEO_PT,
                    ssrc: 0x4d00_0000 + i as u32,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let socks = players
            .iter()
            .map(|p| p.sock.try_clone().map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let ctxs = players
            .iter()
            .map(|p| Some(SrtpContext::new(&p.rx)))
            .collect();
        let copies = args.participants as u64 - 1;
        let r = drive(targets, copies, socks, ctxs, args, pid);
        stop.store(true, Ordering::Relaxed);
        let _ = keeper.join();
        let n = (sessions.len() + players.len()) as u64;
        Ok(json!({
            "scenario": "meeting",
            "rooms": args.rooms,
            "participants": args.participants,
            "publishers": sessions.len(),
            "subscribers": players.len(),
            "seconds": args.seconds,
            "rate_per_publisher": args.rate,
            "packet_size": args.size,
            "pps_in": r["pps_in"],
            "pps_out": r["pps_out"],
            "mbps_out": r["mbps_out"],
            "loss_ratio": r["loss_ratio"],
            "latency_us": r["latency_us"],
            "dataplane_cpu": r["cpu"],
            "setup_ms": {
                "p50": setup_ms.get(setup_ms.len() / 2),
                "max": setup_ms.last(),
            },
            "rss_per_session_bytes": match (rss0, rss1) {
                (Some(a), Some(b)) => json!(b.saturating_sub(a) / n.max(1)),
                _ => Value::Null,
            },
        }))
    })();
    for s in sessions.iter().chain(&players) {
        let _ = api.delete_location(&s.location);
    }
    for room in &rooms {
        let _ = api.call("DELETE", &format!("/v1/rooms/{room}"), None);
    }
    result
}

pub fn print_table(r: &Value) {
    println!(
        "meeting: {} rooms x {} participants (WHIP + WHEP each, DTLS-SRTP), {} pkt/s of {} B per publisher, {} s",
        r["rooms"], r["participants"], r["rate_per_publisher"], r["packet_size"], r["seconds"]
    );
    for (name, v) in [
        ("packets/s in", &r["pps_in"]),
        ("packets/s out", &r["pps_out"]),
        ("Mbit/s out", &r["mbps_out"]),
        ("loss ratio", &r["loss_ratio"]),
        ("latency p50 (us)", &r["latency_us"]["p50"]),
        ("latency p99 (us)", &r["latency_us"]["p99"]),
        ("latency p99.9 (us)", &r["latency_us"]["p999"]),
        ("CPU (cores)", &r["dataplane_cpu"]),
        ("set-up p50 (ms)", &r["setup_ms"]["p50"]),
        ("set-up max (ms)", &r["setup_ms"]["max"]),
        ("RSS/session (B)", &r["rss_per_session_bytes"]),
    ] {
        let f = v.as_f64().map_or("-".into(), |f| format!("{f:.4}"));
        println!("{name:<22} {f:>14}");
    }
}
