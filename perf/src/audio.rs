//! Scenario `audio`: `--publishers` WebRTC publishers sending Opus-sized
//! packets (defaults: 10 publishers, 50 packets/s of 100 B each, evenly
//! spaced: 20 ms frames of ~35 kbit/s) into one room, and `--subscribers`
//! WebRTC players each offering one audio line per publisher, so every
//! player hears every publisher: each packet should reach every player.
//! Real ICE and DTLS for all of them (the driver is [`crate::rooms`]).
//! With `--baseline` the same fan-out (every packet of every publisher to
//! every subscriber) also runs through both relays.

use gateway_ring::msg::MAX_TRACKS;
use serde_json::Value;

use crate::fanout::add_baselines;
use crate::rooms::{self, Layout, AUDIO_PT};
use crate::webrtc_client::Mode;
use crate::Args;

/// What `audio` uses where the command line does not say.
pub const DEFAULT_PUBLISHERS: u32 = 10;
pub const DEFAULT_RATE: u32 = 50;
pub const DEFAULT_SIZE: usize = 100;
pub const DEFAULT_FPS: u32 = 0;

pub fn run(args: &Args) -> Result<Value, String> {
    if args.publishers == 0 || args.publishers as usize > MAX_TRACKS {
        return Err(format!(
            "audio needs 1 to {MAX_TRACKS} publishers (a player takes at most {MAX_TRACKS} lines)"
        ));
    }
    let layout = Layout {
        rooms: 1,
        publishers: args.publishers,
        players: args.subscribers,
        play: Mode::Play {
            video: 0,
            audio: args.publishers as usize,
            codec: args.codec,
            twcc: false,
        },
        pt: AUDIO_PT,
        copies: args.subscribers as u64,
    };
    let mut report = rooms::run(args, "audio", &layout)?;
    if args.baseline {
        add_baselines(&mut report, args, args.publishers)?;
    }
    Ok(report)
}

pub fn print_table(r: &Value) {
    println!(
        "audio: {} publishers -> {} subscribers hearing all of them (WebRTC, DTLS-SRTP), {} pkt/s of {} B per publisher, {} s",
        r["publishers"], r["subscribers"], r["rate_per_publisher"], r["packet_size"], r["seconds"]
    );
    rooms::print_table(r);
}
