//! `loadgen`: drives a running gateway through its HTTP API with SRTP
//! publishers and subscribers on loopback, and measures what comes out:
//! packets/s, Mbit/s, loss, added latency percentiles, the dataplane's CPU
//! and memory per session. With `--baseline` the same fan-out also runs
//! through a minimal no-crypto `recvmmsg`/`sendmmsg` relay (`loadgen relay`,
//! a child process) in the same run, so results read as ratios.
//!
//! ```text
//! sender ─SRTP─▶ gateway ingest ─▶ shard fan-out ─SRTP─▶ S receiver sockets
//!   (send time in the payload)                           seq → loss, sampled
//!                                                        unprotect → latency
//! ```
//!
//! Scenarios: `fanout` (P=1 publisher → S subscribers), `sfu` (one WHIP
//! publisher → S WHEP players, in `--codec` H264 or VP8), `meeting` (rooms
//! of WebRTC participants), `audio` (P WebRTC audio publishers → S WebRTC
//! players hearing all of them; `--baseline` runs the same fan-out through
//! the relays), `rtmp` (one RTMP publisher → S RTMP players and
//! `--flv-players` HTTP-FLV players; `--baseline` runs the RTMP players
//! against nginx-rtmp), `setup` (WHIP/WHEP set-up with real
//! ICE and DTLS) and `churn` (create and delete `--sessions` sessions; RSS,
//! descriptors and ports must come back).

mod api;
mod audio;
mod churn;
mod fanout;
mod flv;
mod http_flv;
mod meeting;
mod nginx;
mod proc_stats;
mod relay;
mod rooms;
mod rtmp;
mod rtmp_client;
mod setup;
mod sfu;
mod webrtc_client;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(about = "Load tool for the media gateway (see perf/README section in the main README)")]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Gateway API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Admin key for /v1/* (default: MGW_ADMIN_KEY).
    #[arg(long, env = "MGW_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Gateway RTMP listener (scenario rtmp).
    #[arg(long, default_value = "127.0.0.1:1935")]
    rtmp: String,
    /// Gateway HTTP-FLV listener (scenario rtmp, with --flv-players).
    #[arg(long, default_value = "127.0.0.1:8088")]
    http_flv: String,
    /// HTTP-FLV players of the same stream besides the --subscribers RTMP
    /// ones, interleaved along the same ramp (scenario rtmp; the gateway
    /// only: nginx-rtmp has no HTTP-FLV, so --baseline runs the RTMP ones).
    #[arg(long, default_value_t = 0)]
    flv_players: u32,
    /// Scenario rtmp: publish and play a participant's stream
    /// (`ROOM/pub`) rather than the room (`ROOM`, its program). Players of
    /// a stream play on the shard that accepted them; a program's players
    /// are handed over to the room's shard.
    #[arg(long)]
    stream: bool,
    #[arg(long, default_value = "fanout")]
    scenario: String,
    /// The video codec of the WebRTC scenarios' offers and packets (sfu,
    /// meeting, setup).
    #[arg(long, value_enum, default_value = "h264")]
    codec: webrtc_client::VideoCodec,
    /// sfu: the players offer transport-cc, as browsers do, and feed back
    /// every 100 ms what arrived: the gateway numbers every packet it sends
    /// them and runs an estimate of each one's path.
    #[arg(long)]
    twcc: bool,
    /// Publishers (audio: 10).
    #[arg(long, default_value_t = 1)]
    publishers: u32,
    #[arg(long, default_value_t = 100)]
    subscribers: u32,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Packets per second per publisher (1 Mbit/s of 1200-byte packets ≈ 104;
    /// audio: 50).
    #[arg(long, default_value_t = 104)]
    rate: u32,
    /// Frames per second: packets leave in this many bursts a second (0:
    /// evenly spaced; audio: 0).
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// RTP packet size in bytes (header + payload; audio: 100).
    #[arg(long, default_value_t = 1200)]
    size: usize,
    /// Rooms (scenario meeting).
    #[arg(long, default_value_t = 50)]
    rooms: u32,
    /// Participants per room, each publishing (WHIP) and playing the
    /// others (WHEP) (scenario meeting).
    #[arg(long, default_value_t = 4)]
    participants: u32,
    /// Sessions to create and delete (scenario churn).
    #[arg(long, default_value_t = 100_000)]
    sessions: u32,
    /// Write the results here as JSON (and print a table).
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// fanout: plain RTP in and out, no SRTP (what the crypto costs is the
    /// difference to a normal run).
    #[arg(long)]
    plain: bool,
    /// Also run the same fan-out through the baseline relay.
    #[arg(long)]
    baseline: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// The baseline: a no-crypto relay that sends every datagram received on
    /// `--listen` to every `--to` port, with recvmmsg/sendmmsg.
    Relay {
        #[arg(long)]
        listen: u16,
        #[arg(long, value_delimiter = ',')]
        to: Vec<u16>,
        /// Send each received batch to each destination as GSO sends.
        #[arg(long)]
        gso: bool,
    },
}

/// A scenario's driver and how it prints its report.
type Scenario = fn(&Args) -> Result<serde_json::Value, String>;
type Table = fn(&serde_json::Value);

impl Args {
    /// The command line, with the `audio` scenario's own defaults where the
    /// command line leaves an option out (an Opus voice call, not video).
    fn parse_with_scenario_defaults() -> Args {
        let matches = Args::command().get_matches();
        let mut args = Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
        let unset =
            |m: &ArgMatches, id: &str| m.value_source(id) == Some(ValueSource::DefaultValue);
        if args.scenario == "audio" {
            if unset(&matches, "publishers") {
                args.publishers = audio::DEFAULT_PUBLISHERS;
            }
            if unset(&matches, "rate") {
                args.rate = audio::DEFAULT_RATE;
            }
            if unset(&matches, "size") {
                args.size = audio::DEFAULT_SIZE;
            }
            if unset(&matches, "fps") {
                args.fps = audio::DEFAULT_FPS;
            }
        }
        args
    }
}

fn main() {
    let args = Args::parse_with_scenario_defaults();
    if let Some(Cmd::Relay { listen, to, gso }) = &args.cmd {
        relay::run(*listen, to, *gso);
        return;
    }
    let (run, table): (Scenario, Table) = match args.scenario.as_str() {
        "fanout" if args.publishers == 1 => (fanout::run, fanout::print_table),
        "fanout" => {
            eprintln!("loadgen: fanout has one publisher (--publishers 1)");
            std::process::exit(2);
        }
        "churn" => (churn::run, churn::print_table),
        "setup" => (setup::run, setup::print_table),
        "meeting" => (meeting::run, meeting::print_table),
        "sfu" => (sfu::run, sfu::print_table),
        "audio" => (audio::run, audio::print_table),
        "rtmp" if args.publishers == 1 => (rtmp::run, rtmp::print_table),
        "rtmp" => {
            eprintln!("loadgen: rtmp has one publisher (--publishers 1)");
            std::process::exit(2);
        }
        other => {
            eprintln!(
                "loadgen: unknown scenario {other:?}; use fanout, sfu, meeting, audio, rtmp, setup or churn"
            );
            std::process::exit(2);
        }
    };
    match run(&args) {
        Ok(report) => {
            table(&report);
            if let Some(path) = &args.json {
                let text = serde_json::to_string_pretty(&report).expect("json");
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("loadgen: {}: {e}", path.display());
                    std::process::exit(1);
                }
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}
