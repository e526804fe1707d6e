//! `GET /metrics`: Prometheus text exposition (format 0.0.4).
//!
//! Counters are sums over sessions as the dataplane last reported them
//! (every 250 ms), plus those of sessions that ended, so they never go down
//! while the controlplane runs.

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State as Ext;
use axum::http::header;
use axum::response::IntoResponse;
use gateway_ring::msg::{DropReason, Limit, TURN_BUCKETS_US};

/// Bounds of the players' estimate histogram (bit/s): a mobile link's
/// low layer, 360p, 540p, 720p and above.
const ESTIMATE_BUCKETS_BPS: [u64; 7] = [
    150_000, 300_000, 500_000, 1_000_000, 1_500_000, 2_500_000, 4_000_000,
];

use crate::api::{lock, App};

/// One metric family: HELP and TYPE, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        let _ = write!(self.out, "{name}");
        if !labels.is_empty() {
            let l: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
                .collect();
            let _ = write!(self.out, "{{{}}}", l.join(","));
        }
        let _ = writeln!(self.out, " {value}");
    }
}

pub async fn metrics(Ext(app): Ext<Arc<App>>) -> impl IntoResponse {
    let mut out = String::new();
    let now = Instant::now();
    let alive: Vec<bool> = app
        .link
        .health
        .lock()
        .expect("health lock")
        .iter()
        .map(|h| h.alive(now))
        .collect();
    let up = app.link.ready() && (app.cfg.attach || app.dataplane_running.load(Ordering::SeqCst));
    Family::new(
        &mut out,
        "mgw_up",
        "gauge",
        "1 when the dataplane is alive and in step.",
    )
    .sample("mgw_up", &[], up as u8);
    Family::new(
        &mut out,
        "mgw_dataplane_restarts_total",
        "counter",
        "Dataplane restarts by the supervisor.",
    )
    .sample(
        "mgw_dataplane_restarts_total",
        &[],
        app.restarts.load(Ordering::Relaxed),
    );
    let mut f = Family::new(
        &mut out,
        "mgw_shard_alive",
        "gauge",
        "1 while the shard's heartbeat moves.",
    );
    for (i, a) in alive.iter().enumerate() {
        f.sample("mgw_shard_alive", &[("shard", &i.to_string())], *a as u8);
    }
    let mut f = Family::new(
        &mut out,
        "mgw_command_ring_depth",
        "gauge",
        "Commands waiting in the shard's ring.",
    );
    for (i, d) in app.link.command_depths().iter().enumerate() {
        f.sample("mgw_command_ring_depth", &[("shard", &i.to_string())], d);
    }

    let st = lock(&app);
    let totals = st.totals();
    let shard = |i: usize| i.to_string();
    let mut f = Family::new(
        &mut out,
        "mgw_packets_total",
        "counter",
        "Packets received from publishers (in) and sent to receivers (out).",
    );
    for (i, t) in totals.iter().enumerate() {
        f.sample(
            "mgw_packets_total",
            &[("shard", &shard(i)), ("direction", "in")],
            t.packets_in,
        );
        f.sample(
            "mgw_packets_total",
            &[("shard", &shard(i)), ("direction", "out")],
            t.packets_out,
        );
    }
    let mut f = Family::new(
        &mut out,
        "mgw_bytes_total",
        "counter",
        "Bytes received (in) and sent (out).",
    );
    for (i, t) in totals.iter().enumerate() {
        f.sample(
            "mgw_bytes_total",
            &[("shard", &shard(i)), ("direction", "in")],
            t.bytes_in,
        );
        f.sample(
            "mgw_bytes_total",
            &[("shard", &shard(i)), ("direction", "out")],
            t.bytes_out,
        );
    }
    let mut f = Family::new(
        &mut out,
        "mgw_drops_total",
        "counter",
        "Packets dropped, by reason.",
    );
    for (i, t) in totals.iter().enumerate() {
        for r in DropReason::ALL {
            f.sample(
                "mgw_drops_total",
                &[("shard", &shard(i)), ("reason", r.name())],
                t.drops[r as usize],
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "mgw_retransmits_total",
        "counter",
        "Packets resent to WebRTC players from the NACK cache.",
    );
    for (i, t) in totals.iter().enumerate() {
        f.sample(
            "mgw_retransmits_total",
            &[("shard", &shard(i))],
            t.retransmits,
        );
    }
    let mut f = Family::new(
        &mut out,
        "mgw_bridge_video_gaps_total",
        "counter",
        "Gaps in WebRTC publishers' video on its way to RTMP: filled (a reordered packet, or resent on our NACK) and given_up (the RTMP players' picture froze to the next keyframe).",
    );
    for (i, t) in totals.iter().enumerate() {
        for (outcome, n) in [
            ("filled", t.bridge_gaps_filled),
            ("given_up", t.bridge_gaps_given_up),
        ] {
            f.sample(
                "mgw_bridge_video_gaps_total",
                &[("shard", &shard(i)), ("outcome", outcome)],
                n,
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "mgw_keyframe_requests_total",
        "counter",
        "Keyframe requests (PLI) sent to publishers and received from players.",
    );
    for (i, t) in totals.iter().enumerate() {
        f.sample(
            "mgw_keyframe_requests_total",
            &[("shard", &shard(i))],
            t.keyframe_requests,
        );
    }

    let mut f = Family::new(
        &mut out,
        "mgw_loop_turn_seconds",
        "histogram",
        "Busy time of shard loop turns (not the wait for completions).",
    );
    for (i, s) in st.shard_stats.iter().enumerate() {
        let shard = i.to_string();
        let mut cumulative = 0;
        for (k, bound) in TURN_BUCKETS_US.iter().enumerate() {
            cumulative += s.turns[k];
            let le = format!("{}", *bound as f64 / 1e6);
            f.sample(
                "mgw_loop_turn_seconds_bucket",
                &[("shard", &shard), ("le", &le)],
                cumulative,
            );
        }
        let count: u64 = s.turns.iter().sum();
        f.sample(
            "mgw_loop_turn_seconds_bucket",
            &[("shard", &shard), ("le", "+Inf")],
            count,
        );
        f.sample(
            "mgw_loop_turn_seconds_sum",
            &[("shard", &shard)],
            s.busy_us as f64 / 1e6,
        );
        f.sample("mgw_loop_turn_seconds_count", &[("shard", &shard)], count);
    }
    // Players' estimates as a distribution per shard, not a series per
    // player: thousands of players would be thousands of series (each
    // player's own is in GET /v1/rooms/{room}).
    let mut f = Family::new(
        &mut out,
        "mgw_player_estimate_bps",
        "histogram",
        "Live WebRTC players' path estimates (bit/s, from their transport-cc feedback).",
    );
    for (i, _) in st.shard_stats.iter().enumerate() {
        let shard = i.to_string();
        let estimates: Vec<u64> = st
            .sessions
            .values()
            .filter(|r| r.shard == i as u32 && r.ended.is_none() && r.stats.estimate_bps > 0)
            .map(|r| r.stats.estimate_bps)
            .collect();
        for bound in ESTIMATE_BUCKETS_BPS {
            let below = estimates.iter().filter(|&&e| e <= bound).count();
            let le = bound.to_string();
            f.sample(
                "mgw_player_estimate_bps_bucket",
                &[("shard", &shard), ("le", &le)],
                below,
            );
        }
        let (count, sum) = (estimates.len(), estimates.iter().sum::<u64>());
        f.sample(
            "mgw_player_estimate_bps_bucket",
            &[("shard", &shard), ("le", "+Inf")],
            count,
        );
        f.sample("mgw_player_estimate_bps_sum", &[("shard", &shard)], sum);
        f.sample("mgw_player_estimate_bps_count", &[("shard", &shard)], count);
    }
    for (name, help, value) in [
        (
            "mgw_udp_sends_total",
            "UDP sendmsg operations submitted (one per GSO batch).",
            (|s: &gateway_ring::msg::ShardStats| s.udp_sends) as fn(&_) -> u64,
        ),
        (
            "mgw_udp_datagrams_total",
            "UDP datagrams those sends carried (more than sends: GSO batching).",
            |s| s.udp_datagrams,
        ),
        (
            "mgw_contained_panics_total",
            "Panics caught while handling one session's input (that session ended, the shard went on).",
            |s| s.panics,
        ),
    ] {
        let mut f = Family::new(&mut out, name, "counter", help);
        for (i, s) in st.shard_stats.iter().enumerate() {
            f.sample(name, &[("shard", &i.to_string())], value(s));
        }
    }
    let mut f = Family::new(
        &mut out,
        "mgw_limit_hits_total",
        "counter",
        "Connections refused or closed, and jobs dropped, by a protective limit.",
    );
    for (i, s) in st.shard_stats.iter().enumerate() {
        for l in Limit::ALL {
            f.sample(
                "mgw_limit_hits_total",
                &[("shard", &i.to_string()), ("limit", l.name())],
                s.limits[l as usize],
            );
        }
    }
    let mut f = Family::new(
        &mut out,
        "mgw_room_messages_total",
        "counter",
        "Messages participants sent over their rooms' signalling, by what became of them.",
    );
    for o in crate::signal::Outcome::ALL {
        f.sample(
            "mgw_room_messages_total",
            &[("result", o.name())],
            st.signal.counts[o as usize],
        );
    }
    let mut f = Family::new(
        &mut out,
        "mgw_limit",
        "gauge",
        "The dataplane's protective limits as configured (flag name; seconds for timeouts).",
    );
    for (name, value) in app.cfg.dataplane_limits() {
        f.sample("mgw_limit", &[("name", name)], value);
    }
    let mut by_kind = std::collections::BTreeMap::new();
    for s in st.sessions.values() {
        *by_kind.entry((s.shard, s.role.kind_name())).or_insert(0u64) += 1;
    }
    let mut f = Family::new(
        &mut out,
        "mgw_sessions",
        "gauge",
        "Live sessions by shard and kind.",
    );
    for ((sh, kind), n) in &by_kind {
        f.sample(
            "mgw_sessions",
            &[("shard", &sh.to_string()), ("kind", kind)],
            n,
        );
    }
    Family::new(&mut out, "mgw_rooms", "gauge", "Rooms.").sample("mgw_rooms", &[], st.rooms.len());
    let mut f = Family::new(
        &mut out,
        "mgw_room_sessions",
        "gauge",
        "Live sessions per room, publishers (ingest) and receivers (egress).",
    );
    let mut rooms: Vec<_> = st.rooms.values().collect();
    rooms.sort_by(|a, b| a.name.cmp(&b.name));
    for r in rooms {
        let ingest = r
            .live
            .iter()
            .filter(|id| st.sessions.get(id).is_some_and(|s| s.role.is_ingest()))
            .count();
        f.sample(
            "mgw_room_sessions",
            &[("room", &r.name), ("role", "ingest")],
            ingest,
        );
        f.sample(
            "mgw_room_sessions",
            &[("room", &r.name), ("role", "egress")],
            r.live.len() - ingest,
        );
    }
    let (in_use, total): (usize, usize) = st
        .ports
        .iter()
        .fold((0, 0), |(u, t), p| (u + p.in_use(), t + p.size()));
    Family::new(
        &mut out,
        "mgw_udp_ports_in_use",
        "gauge",
        "UDP media ports allocated.",
    )
    .sample("mgw_udp_ports_in_use", &[], in_use);
    Family::new(
        &mut out,
        "mgw_udp_ports",
        "gauge",
        "UDP media ports configured.",
    )
    .sample("mgw_udp_ports", &[], total);
    drop(st);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
