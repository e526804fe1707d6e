//! Rooms, sessions and the forwarding decision for one shard (sans-IO).
//!
//! The shard owns sockets; the router owns everything else about a session:
//! its spec, peer, SRTP state, counters and, for an egress, the rewrite state
//! of each outgoing track. Drive it like this for every datagram:
//!
//! ```text
//! recv (handle, src, buf)  --handle_datagram-->  Some(Inbound { room, kind, len })
//!   for each egress of room:
//!       copy buf[..len] into a send slot
//!       prepare_egress(now, egress, &inbound, slot)  --> Some((wire_len, dest)) -> send
//! ```
//!
//! Nothing here reads a clock or touches a socket: `now` is an argument.
//!
//! The parts: `sessions` (adding, removing and ending them, their
//! counters), `ingress` (`handle_datagram`), `egress` (the rewrite of
//! each outgoing track, `prepare_egress`), `feedback` (keyframe requests,
//! NACK answers), `track_cache` (an RTMP publisher's RTP, kept once for
//! its players' NACKs and GOP replays: at a PLI, and when a player has just
//! connected) and `reports` (`tick`: consent, RTCP reports, BYE). This file
//! holds the router itself, its rooms and what it hands the shard.

mod egress;
mod feedback;
mod ingress;
mod relayed;
mod reports;
mod sessions;
#[cfg(test)]
mod tests;
mod track_cache;
#[cfg(test)]
mod webrtc_tests;

use std::collections::HashMap;
use std::time::Duration;

use gateway_ring::msg::{Outcome, RoomSpec};
use gateway_ring::{RoomId, SessionId};

use crate::media::{Handle, Inbound, Source};
use crate::output::{Control, Note, Output, Outputs};
use crate::participants::{ParticipantId, Participants};
use crate::rtcp::Feedback;
use crate::srtp::MAX_TRAILER;
use crate::webrtc::Peer;

use self::sessions::{Role, Session, WebrtcSession};
use self::track_cache::TrackCache;

/// Payload types the egress SDP announces: its video codec's, and Opus's.
pub const EGRESS_VIDEO_PT: u8 = crate::codec::FlvCodec::NEGOTIATED.payload_type();
pub const EGRESS_AUDIO_PT: u8 = 111;

/// A publisher that has been silent this long may be replaced: a new source
/// address is latched on an ingest, and an egress track switches to another ingest.
pub const SOURCE_TIMEOUT: Duration = Duration::from_secs(1);

/// Most sessions one shard holds (each has a socket and a multishot receive).
pub const MAX_SESSIONS: usize = 16_384;

/// At most one keyframe request per publisher per this interval: a burst of
/// joining subscribers costs the publisher one keyframe, not one each.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// How often a WebRTC peer gets an RTCP report from us.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(1);

struct Room {
    spec: RoomSpec,
    ingests: Vec<Handle>,
    egresses: Vec<Handle>,
    /// WebRTC players with a video line that wants a GOP replay (it just
    /// connected, or sent PLI), looked at when an RTMP publisher's packet
    /// begins a frame (see `track_cache.rs`).
    replays: Vec<Handle>,
    /// The shard that owns the room, when it is a replica here (players
    /// only; see `relayed.rs`), and whether it watches the owner's room.
    owner: Option<u32>,
    watching: bool,
    /// Its active speaker, whose line a narrow player keeps first.
    speaker: Option<ParticipantId>,
}

/// A buffer for a packet that is not a fan-out copy, from `pool`: room for
/// the largest packet, wrapped as RTX (2 bytes more) and protected.
fn control_buf(pool: &mut Vec<Vec<u8>>) -> Vec<u8> {
    let mut b = pool.pop().unwrap_or_default();
    b.clear();
    b.resize(crate::rtp::MAX_PACKET + 2 + MAX_TRAILER, 0);
    b
}

/// Rooms and sessions of one shard.
pub struct Router {
    /// Retransmissions per second one WebRTC player may cause ([`crate::limits::Limits::nack_per_s`]).
    nack_per_s: u32,
    sessions: Vec<Option<Session>>,
    free: Vec<Handle>,
    by_id: HashMap<SessionId, Handle>,
    rooms: HashMap<RoomId, Room>,
    /// Room ids by name (RTMP streams name their room).
    names: HashMap<String, RoomId>,
    /// What the router asks for (datagrams, DTLS records and starts,
    /// sessions it ended, events) and tells the hub; the core gathers it.
    pub out: Outputs,
    /// Spent control buffers, reused so steady state does not allocate.
    pool: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    feedback: Vec<Feedback>,
    /// Who is in each room; the RTMP side joins its connections here too.
    pub participants: Participants,
    /// The video RTP of the tracks that cannot be asked for a resend or a
    /// keyframe (RTMP publishers', [`Source::Rtmp`]): the one copy their
    /// players' NACKs and GOP replays are served from.
    track_caches: HashMap<Source, TrackCache>,
    /// Publishers of other shards relayed here, by source (see `relayed.rs`).
    relayed: HashMap<Source, Handle>,
}

impl Default for Router {
    fn default() -> Self {
        Router::new(&crate::limits::Limits::default(), 0)
    }
}

impl Router {
    /// The router of shard `shard` (its participants' ids carry it).
    pub fn new(limits: &crate::limits::Limits, shard: u32) -> Router {
        Router {
            nack_per_s: limits.nack_per_s,
            sessions: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            rooms: HashMap::new(),
            names: HashMap::new(),
            out: Outputs::default(),
            pool: Vec::new(),
            scratch: Vec::new(),
            feedback: Vec::new(),
            participants: Participants::for_shard(shard),
            track_caches: HashMap::new(),
            relayed: HashMap::new(),
        }
    }

    /// Adds a room; `owner` is the shard that owns it when that is not
    /// this one (a replica here: players only, its publishers relayed).
    pub fn add_room(&mut self, spec: RoomSpec, owner: Option<u32>) -> Outcome {
        if self.rooms.contains_key(&spec.room) || self.names.contains_key(&spec.name) {
            return Outcome::Exists;
        }
        self.names.insert(spec.name.clone(), spec.room);
        self.rooms.insert(
            spec.room,
            Room {
                spec,
                ingests: Vec::new(),
                egresses: Vec::new(),
                replays: Vec::new(),
                owner,
                watching: false,
                speaker: None,
            },
        );
        Outcome::Ok
    }

    /// `room`'s active speaker is now `pid`: a narrow player's line of it
    /// keeps its video first.
    pub fn set_speaker(&mut self, room: RoomId, pid: ParticipantId) {
        if let Some(r) = self.rooms.get_mut(&room) {
            r.speaker = Some(pid);
        }
    }

    /// Removes the room and returns the handles of its sessions (now removed)
    /// so the shard can close their sockets.
    pub fn remove_room(&mut self, room: RoomId) -> Option<Vec<Handle>> {
        let r = self.rooms.remove(&room)?;
        self.names.remove(&r.spec.name);
        if let (Some(to), true) = (r.owner, r.watching) {
            self.out.push(Output::Relay {
                to,
                msg: crate::relay::Message::Unwatch { room },
            });
        }
        let handles: Vec<Handle> = r.ingests.iter().chain(&r.egresses).copied().collect();
        let mut sockets = Vec::with_capacity(handles.len());
        for h in handles {
            // A relayed publisher has no socket here.
            if !matches!(self.session(h).map(|s| &s.role), Some(Role::Relayed(_))) {
                sockets.push(h);
            }
            self.release(h);
        }
        self.participants.remove_room(room);
        self.out
            .drop_notes(|n| matches!(n, Note::Unpublished { room: r, .. } if *r == room));
        Some(sockets)
    }

    pub fn room_by_name(&self, name: &str) -> Option<RoomId> {
        self.names.get(name).copied()
    }

    /// Egress handles of a room, in order.
    pub fn egresses(&self, room: RoomId) -> &[Handle] {
        self.rooms
            .get(&room)
            .map(|r| r.egresses.as_slice())
            .unwrap_or(&[])
    }

    /// Builds RTCP for WebRTC peer `h` with `write` (the peer and a buffer
    /// in; the plaintext length out, 0 for nothing to send), protects it and
    /// queues it. Returns whether a packet was queued. The buffer is taken
    /// from the pool and goes back to it when nothing is sent.
    fn send_rtcp(&mut self, h: Handle, write: impl FnOnce(&mut Peer, &mut [u8]) -> usize) -> bool {
        let mut buf = self.control_buf();
        let built = (|| {
            let Some(Session {
                role: Role::Webrtc(w),
                ..
            }) = self.sessions.get_mut(h as usize)?.as_mut()
            else {
                return None;
            };
            let dest = w.peer.destination()?;
            let n = write(&mut w.peer, &mut buf);
            if n == 0 {
                return None;
            }
            Some((dest, w.peer.protect_rtcp(&mut buf, n).ok()?))
        })();
        match built {
            Some((dest, n)) => {
                buf.truncate(n);
                self.out.push(Output::Transmit(Control {
                    from: h,
                    dest,
                    data: buf,
                }));
                true
            }
            None => {
                self.recycle(buf);
                false
            }
        }
    }

    fn session(&self, h: Handle) -> Option<&Session> {
        self.sessions.get(h as usize).and_then(Option::as_ref)
    }

    /// The handle of `source` if it is a live session, or a publisher of
    /// another shard relayed here (an RTMP publisher of this one is none).
    fn source_handle(&self, source: Source) -> Option<Handle> {
        let local = source.session().and_then(|s| self.by_id.get(&s));
        local.or_else(|| self.relayed.get(&source)).copied()
    }

    fn session_mut(&mut self, h: Handle) -> Option<&mut Session> {
        self.sessions.get_mut(h as usize).and_then(Option::as_mut)
    }

    fn webrtc_mut(&mut self, h: Handle) -> Option<&mut WebrtcSession> {
        match &mut self.session_mut(h)?.role {
            Role::Webrtc(w) => Some(w),
            _ => None,
        }
    }

    fn control_buf(&mut self) -> Vec<u8> {
        control_buf(&mut self.pool)
    }

    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < 256 {
            self.pool.push(buf);
        }
    }
}
