//! WebRTC rooms under load, the driver the `meeting` and `audio` scenarios
//! share. Every participant is a real WebRTC client of
//! [`crate::webrtc_client`] (ICE, DTLS, SRTP on the exported keys): a room
//! holds some WHIP publishers and some WHEP players whose offers ask for
//! one line per publisher they should see. Once all are connected (8
//! clients at once), each publisher sends `--rate` packets/s of `--size`
//! bytes and the players count what arrives, as in `fanout`; consent
//! checks keep every session alive throughout, and all are deleted at the
//! end, whatever happened.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dataplane::srtp::SrtpContext;
use serde_json::{json, Value};

use crate::api::Api;
use crate::fanout::{add_udp_sends, drive, fmt, print_measurements, Target};
use crate::proc_stats::rss_bytes;
use crate::webrtc_client::{self, Identity, Mode, Session, VideoCodec};
use crate::Args;

/// Payload types of the offers `webrtc_client` makes.
pub(crate) const VIDEO_PT: u8 = 102;
pub(crate) const AUDIO_PT: u8 = 111;

/// What each room holds and what its publishers send.
pub(crate) struct Layout {
    pub rooms: u32,
    /// WHIP sessions per room.
    pub publishers: u32,
    /// WHEP sessions per room, each offering these lines.
    pub players: u32,
    pub play: Mode,
    /// What the publishers send: [`VIDEO_PT`] or [`AUDIO_PT`].
    pub pt: u8,
    /// Players each packet should reach, on average.
    pub copies: u64,
}

/// The rooms' sessions, deleted when dropped.
struct Opened<'a> {
    api: &'a Api<'a>,
    rooms: Vec<String>,
    publishers: Vec<Session>,
    players: Vec<Session>,
}

impl Drop for Opened<'_> {
    fn drop(&mut self) {
        for s in self.publishers.iter().chain(&self.players) {
            let _ = self.api.delete_location(&s.location);
        }
        for room in &self.rooms {
            let _ = self.api.call("DELETE", &format!("/v1/rooms/{room}"), None);
        }
    }
}

/// Opens `layout`'s rooms and sessions, runs the media through them and
/// returns the measurements (the caller adds what names the scenario).
pub(crate) fn run(args: &Args, scenario: &str, layout: &Layout) -> Result<Value, String> {
    let api = Api::new(args);
    let pid = api.dataplane_pid()?;
    let id = Identity::generate()?;
    let mut opened = Opened {
        api: &api,
        rooms: Vec::new(),
        publishers: Vec::new(),
        players: Vec::new(),
    };
    let mut jobs = Vec::new();
    for r in 0..layout.rooms {
        let room = format!("loadgen-{scenario}-{}-{r}", std::process::id());
        api.call("POST", "/v1/rooms", Some(json!({ "name": room })))?;
        jobs.extend((0..layout.players).map(|_| (format!("/whep/{room}"), layout.play)));
        let publish = Mode::Publish { codec: args.codec };
        jobs.extend((0..layout.publishers).map(|_| (format!("/whip/{room}"), publish)));
        opened.rooms.push(room);
    }
    let rss0 = rss_bytes(pid);
    for (s, (_, mode)) in webrtc_client::connect_all(&api, &id, &jobs)?
        .into_iter()
        .zip(&jobs)
    {
        match mode {
            Mode::Publish { .. } => opened.publishers.push(s),
            Mode::Play { .. } => opened.players.push(s),
        }
    }
    let rss1 = rss_bytes(pid);
    let mut setup_ms: Vec<f64> = opened
        .publishers
        .iter()
        .chain(&opened.players)
        .map(|s| s.times.total().as_secs_f64() * 1000.0)
        .collect();
    setup_ms.sort_by(f64::total_cmp);

    // Consent for every session while media flows.
    let consents = opened
        .publishers
        .iter()
        .chain(&opened.players)
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
    let targets = opened
        .publishers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Ok(Target {
                sock: s.sock.try_clone().map_err(|e| e.to_string())?,
                ctx: Some(SrtpContext::new(&s.tx)),
                pt: layout.pt,
                ssrc: 0x4d00_0000 + i as u32,
                vp8: layout.pt == VIDEO_PT && args.codec == VideoCodec::Vp8,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let socks = opened
        .players
        .iter()
        .map(|p| p.sock.try_clone().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let ctxs = opened
        .players
        .iter()
        .map(|p| Some(SrtpContext::new(&p.rx)))
        .collect();
    // Players that offered transport-cc send their feedback with their keys.
    let twcc = matches!(layout.play, Mode::Play { twcc: true, .. });
    let feedback = opened
        .players
        .iter()
        .map(|p| twcc.then(|| SrtpContext::new(&p.tx)))
        .collect();
    let sends0 = api.udp_sends();
    let r = drive(targets, layout.copies, socks, ctxs, feedback, args, pid);
    let sends1 = api.udp_sends();
    stop.store(true, Ordering::Relaxed);
    let _ = keeper.join();
    let n = (opened.publishers.len() + opened.players.len()) as u64;
    let mut report = json!({
        "scenario": scenario,
        "rooms": layout.rooms,
        "publishers": opened.publishers.len(),
        "subscribers": opened.players.len(),
        "seconds": args.seconds,
        "rate_per_publisher": args.rate,
        "packet_size": crate::fanout::packet_size(args),
        "codec": format!("{:?}", args.codec),
        "twcc": twcc,
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
    });
    add_udp_sends(&mut report, sends0, sends1);
    Ok(report)
}

/// The media figures, then how long the sessions took to set up.
pub(crate) fn print_table(r: &Value) {
    print_measurements(r);
    println!(
        "set-up p50 {} ms, max {} ms",
        fmt(&r["setup_ms"]["p50"]),
        fmt(&r["setup_ms"]["max"])
    );
}
