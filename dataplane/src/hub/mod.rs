//! Every RTMP connection and participant stream of one shard (sans-IO):
//! who publishes, who plays, and what each connection is sent.
//!
//! The shard owns the sockets and calls in with bytes and closures; the hub
//! answers with [`Action`]s and leaves bytes in each connection's
//! [`PlayerQueue`] (taken with [`Hub::queue`]). A room lives on one shard,
//! its owner. A publisher, or a player of the room's program, that names a
//! room of another shard is handed over to it with the event that named
//! it; a player of a participant's stream plays where it was accepted,
//! from a replica of the stream that the owner relays (`relay.rs`).
//!
//! Streams are per participant ([`ParticipantId`]): whoever publishes as NAME (RTMP,
//! or WebRTC/RTP bridged here) feeds NAME's stream, with its own GOP cache,
//! bridge and RTP side, shared by all of NAME's players.
//!
//! ```text
//! on_bytes(idx, data) ─▶ Conn events ─▶ Publish ROOM[/NAME]: local?  NAME's publisher (a stale
//!                                                                     push of NAME is taken over)
//!                                                            remote?  Action::Handoff
//!                                                            missing? create (if allowed)
//!                                       Play ROOM/NAME:  NAME's player: headers + GOP cache now
//!                                       Play ROOM:       the room's program: its active speaker
//!                                       Media:           cache, chunk once, offer to each player
//! ```
//!
//! The hub's files, one concept each: `connections` (each connection's
//! state, bytes in and out, sessions, its end), `admission` (a publish or
//! play let in or refused, and started), `streams` (each participant's
//! stream and its players), `program` (each room's active-speaker view and
//! its mix), `rtp_to_flv` (WebRTC/RTP publishers for RTMP players),
//! `flv_to_rtp` (RTMP publishers for WebRTC players), `relay` (streams
//! for players on other shards, and their replicas) and `timers` (what
//! is due with no packet: [`Hub::poll_timeout`], [`Hub::handle_timeout`]).

use std::collections::HashMap;
use std::time::Instant;

use crate::participants::{ParticipantId, Participants};
use crate::rtmp::conn::Event;
use crate::rtmp::stream::PlayerQueue;
use gateway_ring::msg::Limit;
use gateway_ring::RoomId;

mod admission;
mod connections;
#[cfg(test)]
mod fixtures;
mod flv_to_rtp;
mod program;
mod relay;
mod rtp_to_flv;
mod streams;
mod timers;

use crate::output::Outputs;
pub use crate::rtmp::address::APP;
pub use connections::{ConnLimits, ConnState};
pub use rtp_to_flv::{Bridged, ALIGN_WAIT};

use program::Program;
use streams::Stream;

/// Where a room lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Local(RoomId),
    /// On another shard (by index).
    Remote(u32),
    Missing,
}

/// The shard's side of room lookups.
pub trait Rooms {
    fn place(&self, name: &str) -> Place;
    /// Whether `token` lets its holder publish (or play) `room`; the
    /// token's participant claim, if any.
    fn authorize(
        &self,
        room: &str,
        publish: bool,
        token: Option<&str>,
    ) -> Result<Option<String>, String>;
    /// Creates a room here for an RTMP publisher, if the operator allows it.
    fn create(&mut self, name: &str) -> Option<RoomId>;
    /// Who is in the shard's rooms (shared with the WebRTC side).
    fn participants(&mut self) -> &mut Participants;
    /// Seeds a generated participant name.
    fn random(&mut self) -> [u8; 4];
}

/// Counters for the shard's logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    pub published_messages: u64,
    pub player_messages: u64,
    pub player_drops: u64,
    pub rejected: u64,
}

pub struct Hub {
    /// What the hub asks for (RTMP actions outside a call that takes an
    /// action list, transcoder jobs, events) and tells the router
    /// (RTMP publishers' RTP, keyframes and resends wanted of bridged
    /// publishers); the core gathers it.
    pub out: Outputs,
    shard: u32,
    next_session: u64,
    conns: HashMap<u32, ConnState>,
    streams: HashMap<ParticipantId, Stream>,
    /// The rooms' programs (players of `live/ROOM`), by id.
    programs: HashMap<u64, Program>,
    /// Each room's program ids (looked up at every audio packet).
    room_programs: HashMap<RoomId, Vec<u64>>,
    next_program: u64,
    /// Each room's active speaker, as the core told it.
    speakers: HashMap<RoomId, ParticipantId>,
    /// When an idle program (nobody to show) may look at a publisher's
    /// packets again: not at every packet of, say, its own participant.
    next_idle_choose: Option<Instant>,
    /// A publisher's packet came before `next_idle_choose`: the idle
    /// programs look then ([`Hub::handle_timeout`]).
    idle_choose_wanted: bool,
    /// The bridges' and players' deadlines (see `timers`).
    deadlines: timers::Deadlines,
    gop_cache: bool,
    pub stats: HubStats,
    events: Vec<Event>,
    /// Connections closed by a memory bound ([`Limit::RtmpMemory`]), since start.
    pub limit_hits: [u64; Limit::COUNT],
    /// The wall clock (ms since the Unix epoch) at an instant, as the core
    /// last passed it in: what a session's `created_ms` is read from.
    pub wall: Option<(Instant, u64)>,
    /// What one connection may make the shard hold.
    pub limits: ConnLimits,
    /// RTMP publishers with B-frames whose video this shard may re-encode
    /// for WebRTC players at once (0 when the feature is not built in).
    pub bframe_reencodes: u32,
    /// WebRTC and RTP publishers in VP8, VP9 or AV1 whose video this shard
    /// may transcode to H264 for RTMP players at once (0 when the feature
    /// is not built in).
    pub video_transcodes: u32,
    /// The node drains: `publish` and `play` are refused (503 over HTTP-FLV).
    pub draining: bool,
    /// Streams of other shards' rooms relayed here for this shard's
    /// players (see `relay.rs`): by (owner, the owner's stream id), and by
    /// (room name, participant name); the players waiting for an owner's
    /// answer (a key here: the owner was asked).
    replicas: HashMap<(u32, crate::relay::FlvKey), ParticipantId>,
    replica_names: HashMap<(String, crate::relay::FlvTarget), ParticipantId>,
    waiting: HashMap<(String, crate::relay::FlvTarget), relay::Waiting>,
    /// The last id given to a program's replica.
    next_program_replica: u32,
}

impl Hub {
    pub fn new(gop_cache: bool, shard: u32) -> Hub {
        Hub {
            out: Outputs::default(),
            shard,
            next_session: 0,
            conns: HashMap::new(),
            streams: HashMap::new(),
            programs: HashMap::new(),
            room_programs: HashMap::new(),
            next_program: 0,
            speakers: HashMap::new(),
            next_idle_choose: None,
            idle_choose_wanted: false,
            deadlines: timers::Deadlines::default(),
            gop_cache,
            stats: HubStats::default(),
            events: Vec::new(),
            limit_hits: [0; Limit::COUNT],
            wall: None,
            limits: ConnLimits::default(),
            bframe_reencodes: 0,
            video_transcodes: 0,
            draining: false,
            replicas: HashMap::new(),
            replica_names: HashMap::new(),
            waiting: HashMap::new(),
            next_program_replica: 0,
        }
    }

    pub fn queue(&mut self, idx: u32) -> Option<&mut PlayerQueue> {
        self.conns.get_mut(&idx).map(|c| &mut c.queue)
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }
}
