//! The core's side of one room over every shard (see `relay.rs`).
//!
//! On a room's owner: which shards watch it, and which of its publishers
//! each was told of. Every packet the owner fans out in a watched room is
//! relayed to the watchers ([`Core::relay_targets`]), after a `TrackUp`
//! for a publisher they have not heard of; a publisher that stops is a
//! `TrackDown`. On a watcher: what the owner says ([`Core::handle_relay_message`])
//! and the packets it relays ([`Core::handle_relayed`]), which the shard then
//! fans out to its own players.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use gateway_ring::msg::{MediaKind, RoomSpec};
use gateway_ring::RoomId;

use crate::media::{Inbound, Source};
use crate::output::Output;
use crate::participants::ParticipantId;
use crate::relay::{Message, Packet};

use super::Core;

/// A room of this shard that other shards watch.
#[derive(Default)]
pub(super) struct Watched {
    /// The watching shards, a bit each.
    shards: u64,
    /// Its publishers seen since it was first watched, and the shards
    /// each was announced to.
    sources: Vec<Announced>,
}

struct Announced {
    source: Source,
    pid: ParticipantId,
    told: u64,
}

#[derive(Default)]
pub(super) struct Watchers {
    rooms: HashMap<RoomId, Watched>,
}

impl Core {
    /// The shards packet `inbound` of this shard's room goes to (a bit
    /// each; 0 when nobody watches). A publisher a watcher has not heard of
    /// is announced first: the `TrackUp`s are appended to `announce`, for
    /// the shard to send ahead of the packet. On the hot path: one map
    /// lookup when some room of the shard is watched, nothing otherwise.
    #[inline]
    pub fn relay_targets(&mut self, inbound: &Inbound, announce: &mut Vec<(u32, Message)>) -> u64 {
        if self.watchers.rooms.is_empty() {
            return 0;
        }
        let Some(w) = self.watchers.rooms.get_mut(&inbound.room) else {
            return 0;
        };
        let i = match w.sources.iter().position(|a| a.source == inbound.source) {
            Some(i) => i,
            None => {
                w.sources.push(Announced {
                    source: inbound.source,
                    pid: inbound.participant,
                    told: 0,
                });
                w.sources.len() - 1
            }
        };
        let a = &mut w.sources[i];
        let mut untold = w.shards & !a.told;
        if untold != 0 {
            a.told |= untold;
            let name = self
                .router
                .participants
                .name(inbound.participant)
                .unwrap_or("")
                .to_string();
            while untold != 0 {
                let to = untold.trailing_zeros();
                untold &= untold - 1;
                announce.push((
                    to,
                    Message::TrackUp {
                        room: inbound.room,
                        source: inbound.source,
                        name: name.clone(),
                        key: inbound.key,
                    },
                ));
            }
        }
        w.shards
    }

    /// Participant `pid` of this shard's room `room` stopped publishing:
    /// its watchers hear it.
    pub(super) fn relay_unpublished(&mut self, room: RoomId, pid: ParticipantId) {
        let Some(w) = self.watchers.rooms.get_mut(&room) else {
            return;
        };
        let out = &mut self.out;
        w.sources.retain(|a| {
            if a.pid != pid {
                return true;
            }
            let mut told = a.told;
            while told != 0 {
                let to = told.trailing_zeros();
                told &= told - 1;
                out.push(Output::Relay {
                    to,
                    msg: Message::TrackDown {
                        room,
                        source: a.source,
                    },
                });
            }
            false
        });
    }

    /// Shard `to` starts watching `room`: each RTMP publisher of the room
    /// whose GOP is held is announced to it, and the GOP sent after.
    fn send_gops(&mut self, room: RoomId, to: u32) {
        let bit = 1u64 << (to % 64);
        for (source, pid, codec, packets) in self.router.rtmp_gops(room) {
            let Some(w) = self.watchers.rooms.get_mut(&room) else {
                return;
            };
            let i = match w.sources.iter().position(|a| a.source == source) {
                Some(i) => i,
                None => {
                    w.sources.push(Announced {
                        source,
                        pid,
                        told: 0,
                    });
                    w.sources.len() - 1
                }
            };
            if w.sources[i].told & bit == 0 {
                w.sources[i].told |= bit;
                let name = self.router.participants.name(pid).unwrap_or("").to_string();
                let key = self.router.participants.key(pid);
                let msg = Message::TrackUp {
                    room,
                    source,
                    name,
                    key,
                };
                self.out.push(Output::Relay { to, msg });
            }
            let msg = Message::Gop {
                source,
                codec,
                packets,
            };
            self.out.push(Output::Relay { to, msg });
        }
    }

    /// A room of this shard is gone: nobody watches it any more.
    pub(super) fn relay_room_removed(&mut self, room: RoomId) {
        self.watchers.rooms.remove(&room);
    }

    /// What shard `from` says (see [`Message`]).
    pub fn handle_relay_message(&mut self, now: Instant, from: u32, msg: &Message) {
        self.now = self.now.max(now);
        let bit = 1u64 << (from % 64);
        match msg {
            Message::Watch { room } => {
                // Only a room of this shard is watched here.
                if self.router.owns(*room) {
                    let w = self.watchers.rooms.entry(*room).or_default();
                    let fresh = w.shards & bit == 0;
                    w.shards |= bit;
                    // Its publishers' next packets are announced to it; a
                    // WebRTC one is asked for a keyframe for its new
                    // players, an RTMP one's GOP is sent now.
                    self.router.request_room_keyframes(now, *room);
                    if fresh {
                        self.send_gops(*room, from);
                    }
                }
            }
            Message::Unwatch { room } => {
                if let Some(w) = self.watchers.rooms.get_mut(room) {
                    w.shards &= !bit;
                    for a in &mut w.sources {
                        a.told &= !bit;
                    }
                    if w.shards == 0 {
                        self.watchers.rooms.remove(room);
                    }
                }
            }
            Message::TrackUp {
                room,
                source,
                name,
                key,
            } => {
                self.router.add_relayed(*room, *source, name, *key, from);
            }
            Message::TrackDown { source, .. } => self.router.remove_relayed(*source),
            Message::Gop {
                source,
                codec,
                packets,
            } => {
                // Only for a publisher announced here (by the `TrackUp`
                // just before it).
                if self.router.relayed_origin(*source) == Some(from) {
                    self.router.seed_video(now, *source, *codec, packets);
                }
            }
            Message::KeyframeWanted { source } => self.router.request_keyframe_of(now, *source),
            Message::Nack { source, seq } => self.router.nack_publisher(*source, *seq),
            Message::FlvSubscribed {
                room_name, room, ..
            } => {
                // The room, for this shard: a replica (its deletion closes
                // the players here).
                let spec = RoomSpec {
                    room: *room,
                    name: room_name.clone(),
                };
                if self.router.room_by_name(room_name).is_none() {
                    self.router.add_room(spec, Some(from));
                }
                self.rtmp_input(now, |hub, rooms, actions| {
                    hub.on_relay_message(now, from, msg, rooms, actions)
                });
            }
            Message::FlvSubscribe { .. }
            | Message::FlvRefused { .. }
            | Message::Flv { .. }
            | Message::FlvUnsubscribe { .. } => self.rtmp_input(now, |hub, rooms, actions| {
                hub.on_relay_message(now, from, msg, rooms, actions)
            }),
        }
        self.collect(now);
    }

    /// A packet shard `from` relayed: its routing facts for this shard's
    /// fan-out, or `None` (a publisher this shard was not told of, or no
    /// longer watches). An RTMP publisher's video is kept in the track
    /// cache first, as on its owner, for NACKs and GOP replays here.
    pub fn handle_relayed(&mut self, now: Instant, from: u32, pkt: &Packet) -> Option<Inbound> {
        self.now = self.now.max(now);
        let data = pkt.payload();
        let inbound = self.router.relayed_inbound(now, from, &pkt.inbound, data)?;
        if inbound.kind == MediaKind::Video && inbound.source.session().is_none() {
            self.router
                .keep_video(now, &inbound, Bytes::copy_from_slice(data));
        }
        Some(inbound)
    }
}
