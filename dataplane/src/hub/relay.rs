//! Participants' streams for RTMP and HTTP-FLV players on other shards
//! (see [`crate::relay`]): a player is served by the shard that accepted
//! it, whatever shard owns its room.
//!
//! ```text
//!  player's shard                                     room's owner
//!  play ROOM/NAME (or ROOM as ME), room owned elsewhere:
//!    a replica of it here? ─ yes ─▶ plays it at once
//!    no: waits; first waiter ─▶ FlvSubscribe ═══▶ NAME in ROOM? ─ no ─▶ FlvRefused ═══▶ waiters refused (404)
//!                                                 yes: the subscription holds NAME (as a player does);
//!                                                 for a program: ME's program, made if new
//!    replica stream made ◀══════ FlvSubscribed ◀═══
//!    waiters play it     ◀══════ Flv (headers, GOP) ◀═ catch-up from the GOP cache
//!    its players         ◀══════ Flv (each message) ◀═ the stream, as it goes to its players there
//!  last player leaves ─▶ FlvUnsubscribe ═══▶ the hold on NAME given back (a program nobody
//!                                            plays is forgotten)
//! ```
//!
//! The replica is a stream like any other here (its own GOP cache, its
//! players' queues and slow-player rule); what the owner sends is what its
//! own players get, metadata included, so the replica only caches and
//! offers it. A player that waits past the set-up timeout is closed as any
//! connection in set-up.

use std::time::Instant;

use super::connections::Role;
use super::{Hub, Place, Rooms};
use crate::output::{Note, Output, Outputs};
use crate::participants::{ParticipantId, Participants};
use crate::relay::{FlvKey, FlvTarget, Message};
use gateway_ring::msg::{participant_key, Direction};
use gateway_ring::RoomId;

/// Players waiting for the owner's answer, and what they will be shown as.
pub(super) type Waiting = Vec<(u32, String)>;

/// The replicas of programs have ids of their own, out of the participants'
/// range (a shard's index is at most 63, so ids never reach this byte).
const PROGRAM_REPLICA: u32 = 0xff00_0000;

impl Hub {
    /// Player `idx` of `target` in `room`, a room shard `owner` owns: plays
    /// this shard's replica of it, or waits for the owner's answer (the
    /// first waiter asks). `shown` is how its `onStatus` names what it plays.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn play_relayed(
        &mut self,
        now: Instant,
        idx: u32,
        owner: u32,
        room: &str,
        target: FlvTarget,
        shown: String,
        parts: &mut Participants,
        actions: &mut Outputs,
    ) {
        let names = (room.to_string(), target.clone());
        if let Some(&local) = self.replica_names.get(&names) {
            if let Some(s) = self.streams.get(&local) {
                let (room, key) = (s.room, s.key);
                let hold = held_name(&target);
                return self.begin_play(now, idx, room, &shown, hold, local, key, parts, actions);
            }
        }
        if let Some(st) = self.conns.get_mut(&idx) {
            st.role = Role::Waiting;
        }
        let asked = self.waiting.contains_key(&names);
        self.waiting.entry(names).or_default().push((idx, shown));
        if !asked {
            self.out.push(Output::Relay {
                to: owner,
                msg: Message::FlvSubscribe {
                    room: room.to_string(),
                    target,
                },
            });
        }
    }

    /// Player `idx` of `room` starts playing stream `pid` (key `key`)
    /// here: accepted, reported, holding participant `hold` if given (a
    /// participant's stream: so it outlasts a publisher that reconnects),
    /// headers and GOP at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn begin_play(
        &mut self,
        now: Instant,
        idx: u32,
        room: RoomId,
        shown: &str,
        hold: Option<&str>,
        pid: ParticipantId,
        key: u32,
        parts: &mut Participants,
        actions: &mut Outputs,
    ) {
        let Some(st) = self.conns.get_mut(&idx) else {
            return;
        };
        if st.http {
            st.queue.push_control(crate::rtmp::http::stream_head());
            actions.rtmp(crate::output::Action::Wake(idx));
        } else {
            let me = st.name.clone();
            st.conn.accept_play(&format!("{shown} as {me}"));
        }
        self.announce(now, idx, room, Direction::Subscribe);
        self.flush_conn(idx, actions);
        if let Some(name) = hold {
            let held = parts.join(room, name);
            debug_assert_eq!(held, pid);
            if let Some(st) = self.conns.get_mut(&idx) {
                st.joined = Some(held);
            }
        }
        self.attach_player(now, idx, room, pid, key, actions);
    }

    /// What shard `from` says about relayed streams (the other messages
    /// are the core's).
    pub fn on_relay_message(
        &mut self,
        now: Instant,
        from: u32,
        msg: &Message,
        rooms: &mut dyn Rooms,
        actions: &mut Outputs,
    ) {
        match msg {
            Message::FlvSubscribe { room, target } => {
                self.subscribed(now, from, room, target, rooms, actions)
            }
            Message::FlvSubscribed {
                room_name,
                target,
                room,
                stream,
                key,
            } => {
                let names = (room_name.clone(), target.clone());
                let waiting = self.waiting.remove(&names).unwrap_or_default();
                let parts = rooms.participants();
                let hold = held_name(target);
                let local = match self.replica_names.get(&names) {
                    Some(&local) => local,
                    None => {
                        let local = match hold {
                            // Held by the replica while it has players.
                            Some(name) => parts.join(*room, name),
                            None => {
                                self.next_program_replica += 1;
                                ParticipantId::new(PROGRAM_REPLICA | self.next_program_replica)
                            }
                        };
                        let s = self.stream(*room, local, *key);
                        s.origin = Some((from, *stream));
                        self.replicas.insert((from, *stream), local);
                        self.replica_names.insert(names, local);
                        local
                    }
                };
                for (idx, shown) in waiting {
                    let waits = self
                        .conns
                        .get(&idx)
                        .is_some_and(|c| c.role == Role::Waiting);
                    if waits {
                        self.begin_play(now, idx, *room, &shown, hold, local, *key, parts, actions);
                    }
                }
                // Nobody waits any more (they left meanwhile): let it go.
                self.forget_replica_if_unplayed(local, parts);
            }
            Message::FlvRefused { room, target, why } => {
                let names = (room.clone(), target.clone());
                for (idx, _) in self.waiting.remove(&names).unwrap_or_default() {
                    self.reject(idx, "NetStream.Play.StreamNotFound", 404, why, actions);
                }
            }
            Message::Flv { stream, media } => {
                if let Some(&local) = self.replicas.get(&(from, *stream)) {
                    self.send_on(now, local, media.clone(), actions);
                }
            }
            Message::FlvUnsubscribe { stream } => {
                let parts = rooms.participants();
                let bit = 1u64 << from;
                match *stream {
                    FlvKey::Stream(pid) => {
                        let Some(s) = self.streams.get_mut(&pid) else {
                            return;
                        };
                        if s.relays & bit != 0 {
                            s.relays &= !bit;
                            parts.leave(pid);
                            self.forget_if_unused(pid, parts);
                        }
                    }
                    FlvKey::Program(id) => {
                        if let Some(p) = self.programs.get_mut(&id) {
                            p.relays &= !bit;
                        }
                        self.forget_program_if_unplayed(id, parts);
                    }
                }
            }
            _ => {}
        }
    }

    /// Shard `from` has a player of `target` in room `room`, which this
    /// shard owns: the answer, then the stream's headers and GOP.
    fn subscribed(
        &mut self,
        now: Instant,
        from: u32,
        room_name: &str,
        target: &FlvTarget,
        rooms: &mut dyn Rooms,
        actions: &mut Outputs,
    ) {
        let refuse = |why: String| Output::Relay {
            to: from,
            msg: Message::FlvRefused {
                room: room_name.to_string(),
                target: target.clone(),
                why,
            },
        };
        let Place::Local(room) = rooms.place(room_name) else {
            return self.out.push(refuse(format!("no stream {room_name:?}")));
        };
        let parts = rooms.participants();
        let bit = 1u64 << from;
        let (stream, key, replay, ask) = match target {
            FlvTarget::Stream { name } => {
                if parts.find(room, name).is_none() {
                    let why = format!("no participant {name:?} in room {room_name:?}");
                    return self.out.push(refuse(why));
                }
                // Held while the other shard has players of it, as a player
                // here holds it.
                let pid = parts.join(room, name);
                let key = participant_key(name);
                let s = self.stream(room, pid, key);
                if s.relays & bit != 0 {
                    parts.leave(pid);
                }
                s.relays |= bit;
                let replay: Vec<_> = s.cache.replay().cloned().collect();
                (FlvKey::Stream(pid), key, replay, s.keyframe_source())
            }
            FlvTarget::Program { me } => {
                let id = self.program_for(now, room, me);
                let Some(p) = self.programs.get_mut(&id) else {
                    return;
                };
                p.relays |= bit;
                let replay: Vec<_> = p.cache_replay().cloned().collect();
                (FlvKey::Program(id), 0, replay, None)
            }
        };
        self.out.push(Output::Relay {
            to: from,
            msg: Message::FlvSubscribed {
                room_name: room_name.to_string(),
                target: target.clone(),
                room,
                stream,
                key,
            },
        });
        for media in replay {
            self.out.push(Output::Relay {
                to: from,
                msg: Message::Flv { stream, media },
            });
        }
        if let Some(source) = ask {
            self.out.note(Note::KeyframeWanted { source });
        }
        if let FlvKey::Program(id) = stream {
            // Whom it shows (a new program starts here).
            self.choose(now, id, parts, actions);
        }
    }

    /// The messages of program `id` (on program time) go to the shards
    /// that play it too.
    pub(super) fn relay_program(&mut self, id: u64, timed: &[crate::rtmp::conn::Media]) {
        let Some(p) = self.programs.get(&id) else {
            return;
        };
        let mut relays = p.relays;
        while relays != 0 {
            let to = relays.trailing_zeros();
            relays &= relays - 1;
            for media in timed {
                self.out.push(Output::Relay {
                    to,
                    msg: Message::Flv {
                        stream: FlvKey::Program(id),
                        media: media.clone(),
                    },
                });
            }
        }
    }

    /// Replica `local` with no player left: the owner stops sending it, and
    /// it is gone here. Returns whether it was a replica.
    pub(super) fn forget_replica_if_unplayed(
        &mut self,
        local: ParticipantId,
        parts: &mut Participants,
    ) -> bool {
        let Some(s) = self.streams.get(&local) else {
            return false;
        };
        let Some((owner, stream)) = s.origin else {
            return false;
        };
        if !s.players.is_empty() {
            return true;
        }
        self.streams.remove(&local);
        self.replicas.remove(&(owner, stream));
        self.replica_names.retain(|_, &mut l| l != local);
        if let FlvKey::Stream(_) = stream {
            parts.leave(local);
        }
        self.out.push(Output::Relay {
            to: owner,
            msg: Message::FlvUnsubscribe { stream },
        });
        true
    }

    /// Connection `idx`, which waited for an owner's answer, is gone. A
    /// stream nobody waits for any more is asked for again by its next
    /// player: an answer lost on the way (a full lane) costs the players
    /// who waited for it, never the ones after.
    pub(super) fn stop_waiting(&mut self, idx: u32) {
        for list in self.waiting.values_mut() {
            list.retain(|(i, _)| *i != idx);
        }
        self.waiting.retain(|_, list| !list.is_empty());
    }
}

/// The participant a player of `target` holds: a stream's; a program's
/// players hold nobody.
fn held_name(target: &FlvTarget) -> Option<&str> {
    match target {
        FlvTarget::Stream { name } => Some(name),
        FlvTarget::Program { .. } => None,
    }
}
