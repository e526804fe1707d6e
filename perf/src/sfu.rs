//! Scenario `sfu`: one WebRTC publisher (WHIP) and `--subscribers`
//! WebRTC players (WHEP, one video line each) in one room, every one a real
//! client of [`crate::webrtc_client`] (the driver is [`crate::rooms`]),
//! in `--codec`. Run in H264 and in VP8 one after the other, it says what
//! a VP8 line costs the SFU beside an H264 one: the picture ids it
//! rewrites, the keyframe it starts at.

use serde_json::Value;

use crate::rooms::{self, Layout, VIDEO_PT};
use crate::webrtc_client::Mode;
use crate::Args;

pub fn run(args: &Args) -> Result<Value, String> {
    let layout = Layout {
        rooms: 1,
        publishers: 1,
        players: args.subscribers,
        play: Mode::Play {
            video: 1,
            audio: 0,
            codec: args.codec,
            twcc: args.twcc,
        },
        pt: VIDEO_PT,
        copies: args.subscribers as u64,
    };
    rooms::run(args, "sfu", &layout)
}

pub fn print_table(r: &Value) {
    println!(
        "sfu: 1 WHIP publisher -> {} WHEP players in {} (DTLS-SRTP), {} pkt/s of {} B, {} s",
        r["subscribers"], r["codec"], r["rate_per_publisher"], r["packet_size"], r["seconds"]
    );
    rooms::print_table(r);
}
