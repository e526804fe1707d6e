//! Publishers of other shards, for this shard's players (see `relay.rs`).
//!
//! A room this shard does not own is a *replica* here: it holds players
//! only (WebRTC players, RTP egresses), and its publishers are sessions of
//! the owner. While the replica has players it watches the room; each
//! publisher the owner announces becomes a relayed session in the room's
//! ingests, so the fan-out, the line choice, "never your own tracks", the
//! BYE when it stops and every feedback path treat it as a local one. What
//! differs is where feedback goes: a keyframe request crosses back to the
//! owner; a NACK is answered from the relayed session's own copy of the
//! video (an RTMP publisher's from the track cache, as on its owner), and a
//! miss crosses back.

use std::time::Instant;

use gateway_ring::msg::MediaKind;
use gateway_ring::{RoomId, SessionId};

use super::track_cache::TrackCache;
use crate::media::{Inbound, Source};
use crate::output::Output;
use crate::participants::Kinds;
use crate::relay::Message;

use super::sessions::{Role, Session};
use super::{Handle, Router, KEYFRAME_REQUEST_INTERVAL};

/// A publisher of another shard, relayed here.
pub(super) struct Relayed {
    pub(super) source: Source,
    /// The shard it publishes on (the room's owner).
    pub(super) origin: u32,
    pub(super) last_keyframe_request: Option<Instant>,
}

impl Router {
    /// The room's owner, if it is a replica here.
    pub(super) fn owner_of(&self, room: RoomId) -> Option<u32> {
        self.rooms.get(&room)?.owner
    }

    /// Whether room `room` is here and owned here (not a replica).
    pub fn owns(&self, room: RoomId) -> bool {
        self.rooms.get(&room).is_some_and(|r| r.owner.is_none())
    }

    /// Asks every publisher of `room` that can be asked for a keyframe:
    /// players joined (here, or on a shard that watches the room).
    pub fn request_room_keyframes(&mut self, now: Instant, room: RoomId) {
        let publishers = self
            .rooms
            .get(&room)
            .map(|r| r.ingests.clone())
            .unwrap_or_default();
        for p in publishers {
            self.request_keyframe(now, p);
        }
    }

    /// Publisher `source` of room `room` (a replica here, owned by
    /// `origin`), as the owner announced it. False if the room is not a
    /// replica here, or the publisher is known already.
    pub fn add_relayed(
        &mut self,
        room: RoomId,
        source: Source,
        name: &str,
        key: u32,
        origin: u32,
    ) -> bool {
        if self.owner_of(room) != Some(origin) || self.relayed.contains_key(&source) {
            return false;
        }
        // It publishes on its owner, which holds its claim: here it is one
        // session more of its name (so a player of the same name here
        // never gets its tracks).
        let pid = self.participants.join(room, name);
        let s = Session {
            room,
            pid,
            key,
            kinds: Kinds::NONE,
            stats: gateway_ring::msg::SessionStats {
                session: source.session().unwrap_or(SessionId::new(0)),
                ..Default::default()
            },
            dirty: false,
            srtp: None,
            role: Role::Relayed(Relayed {
                source,
                origin,
                last_keyframe_request: None,
            }),
        };
        // Known by its source, not by a session id of this shard.
        let h = self.store(s);
        self.relayed.insert(source, h);
        if let Some(r) = self.rooms.get_mut(&room) {
            r.ingests.push(h);
        }
        true
    }

    /// The owner says publisher `source` stopped: its lines here are free.
    pub fn remove_relayed(&mut self, source: Source) {
        let Some(h) = self.relayed.get(&source).copied() else {
            return;
        };
        if let Some(room) = self.session(h).map(|s| s.room) {
            if let Some(r) = self.rooms.get_mut(&room) {
                r.ingests.retain(|&x| x != h);
            }
        }
        self.release(h);
    }

    /// The shard publisher `source` is relayed from, if it was announced here.
    pub fn relayed_origin(&self, source: Source) -> Option<u32> {
        let h = *self.relayed.get(&source)?;
        match &self.session(h)?.role {
            Role::Relayed(r) => Some(r.origin),
            _ => None,
        }
    }

    /// A packet relayed from shard `from`: its routing facts as this
    /// shard's fan-out sees them (the participant is this shard's id of
    /// its name), and a session's video kept for NACKs. `None` for a
    /// publisher not announced (it stopped, or the room is not watched
    /// any more): dropped.
    pub fn relayed_inbound(
        &mut self,
        now: Instant,
        from: u32,
        inbound: &Inbound,
        data: &[u8],
    ) -> Option<Inbound> {
        let h = *self.relayed.get(&inbound.source)?;
        let s = self.sessions.get_mut(h as usize)?.as_mut()?;
        let Role::Relayed(r) = &mut s.role else {
            return None;
        };
        if r.origin != from || s.room != inbound.room {
            return None;
        }
        if inbound.kind == MediaKind::Video && inbound.source.session().is_some() {
            self.track_caches
                .entry(inbound.source)
                .or_insert_with(|| TrackCache::window(now))
                .copy(now, inbound.seq_no, &data[..inbound.len.min(data.len())]);
        }
        Some(Inbound {
            participant: s.pid,
            key: s.key,
            ..*inbound
        })
    }

    /// Relayed session `h`'s publisher is asked for a keyframe on its
    /// owner (at most once per [`KEYFRAME_REQUEST_INTERVAL`] from here; an
    /// RTMP publisher cannot be asked: its players here replay the track
    /// cache). Returns false if `h` is no relayed session.
    pub(super) fn request_relayed_keyframe(&mut self, now: Instant, h: Handle) -> bool {
        let Some(Session {
            role: Role::Relayed(r),
            ..
        }) = self.sessions.get_mut(h as usize).and_then(Option::as_mut)
        else {
            return false;
        };
        let recent = r
            .last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL);
        if r.source.session().is_some() && !recent {
            r.last_keyframe_request = Some(now);
            let (to, source) = (r.origin, r.source);
            self.out.push(Output::Relay {
                to,
                msg: Message::KeyframeWanted { source },
            });
        }
        true
    }

    /// A NACK for relayed session `h`'s video packet `seq` its copy here
    /// does not hold: the owner asks the publisher (whose resend is
    /// relayed like any packet). Returns false if `h` is no relayed session.
    pub(super) fn nack_relayed(&mut self, h: Handle, seq: u16) -> bool {
        let Some(Session {
            role: Role::Relayed(r),
            ..
        }) = self.session(h)
        else {
            return false;
        };
        if r.source.session().is_some() {
            let (to, source) = (r.origin, r.source);
            self.out.push(Output::Relay {
                to,
                msg: Message::Nack { source, seq },
            });
        }
        true
    }

    /// Room `room`'s players changed: a replica here that just got its
    /// first player watches the owner's room; one that lost its last stops,
    /// and forgets the publishers it was relayed.
    pub(super) fn players_changed(&mut self, room: RoomId) {
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        let Some(owner) = r.owner else { return };
        let watching = !r.egresses.is_empty();
        if watching == r.watching {
            return;
        }
        r.watching = watching;
        if watching {
            self.out.push(Output::Relay {
                to: owner,
                msg: Message::Watch { room },
            });
            return;
        }
        self.out.push(Output::Relay {
            to: owner,
            msg: Message::Unwatch { room },
        });
        let ingests = r.ingests.clone();
        let relayed: Vec<Source> = ingests
            .iter()
            .filter_map(|&h| match &self.session(h)?.role {
                Role::Relayed(x) => Some(x.source),
                _ => None,
            })
            .collect();
        for source in relayed {
            self.remove_relayed(source);
        }
    }
}
