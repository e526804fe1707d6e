//! Scenario `meeting`: `--rooms` rooms of `--participants` people, each a
//! real WebRTC client: a WHIP session that sends video at `--rate`
//! packets/s and a WHEP session with one video line per other participant
//! (the driver is [`crate::rooms`]). A WHEP session does not know which
//! WHIP session is its owner's, so each player gets `participants-1` of the
//! room's publishers, whichever sent first: on average every packet sent
//! should reach `participants-1` players.

use serde_json::Value;

use crate::rooms::{self, Layout, VIDEO_PT};
use crate::webrtc_client::Mode;
use crate::Args;

pub fn run(args: &Args) -> Result<Value, String> {
    if args.participants < 2 {
        return Err("a meeting needs --participants 2 or more".into());
    }
    let others = args.participants - 1;
    let layout = Layout {
        rooms: args.rooms,
        publishers: args.participants,
        players: args.participants,
        play: Mode::Play {
            video: others as usize,
            audio: 0,
            codec: args.codec,
            twcc: false,
        },
        pt: VIDEO_PT,
        copies: others as u64,
    };
    let mut report = rooms::run(args, "meeting", &layout)?;
    report["participants"] = args.participants.into();
    Ok(report)
}

pub fn print_table(r: &Value) {
    println!(
        "meeting: {} rooms x {} participants (WHIP + WHEP each, DTLS-SRTP), {} pkt/s of {} B per publisher, {} s",
        r["rooms"], r["participants"], r["rate_per_publisher"], r["packet_size"], r["seconds"]
    );
    rooms::print_table(r);
}
