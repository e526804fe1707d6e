//! The router's sessions: RTP ingests and egresses and WebRTC peers. Adding
//! them (each joins its participant to the room), removing them (a leaving
//! publisher frees the lines it fed, and its players get a BYE), ending them,
//! the keys from the DTLS thread, their counters and drop counts, and the
//! specs for a controlplane resync.

use crate::output::{Note, Output};
use gateway_ring::msg::Event;
use std::net::SocketAddrV4;
use std::time::Instant;
use tracing::info;

use gateway_ring::msg::{
    Direction, DropReason, EgressSpec, EndReason, IngestSpec, MediaKind, Outcome, RoomSpec,
    SessionStats, SrtpKey, WebrtcSpec,
};
use gateway_ring::{RoomId, SessionId};

use crate::codec::{FlvCodec, VideoCodec};
use crate::participants::{Kinds, ParticipantId};
use crate::srtp::SrtpContext;
use crate::webrtc::Peer;

use super::egress::OutTrack;
use super::{Handle, Router, Source, EGRESS_AUDIO_PT, EGRESS_VIDEO_PT, MAX_SESSIONS};

pub(super) struct Ingest {
    pub(super) spec: IngestSpec,
    pub(super) peer: Option<SocketAddrV4>,
    pub(super) last_rx: Option<Instant>,
}

pub(super) struct Egress {
    pub(super) spec: EgressSpec,
    pub(super) video: OutTrack,
    pub(super) audio: OutTrack,
}

/// A WebRTC peer and, when it subscribes, the rewrite state of its tracks.
pub(super) struct WebrtcSession {
    pub(super) peer: Peer,
    /// Subscriber: one per media line it offered to receive; each carries
    /// one publisher's track at a time.
    pub(super) tracks: Vec<OutTrack>,
    /// Retransmissions (and NACKs passed on) this player may still cause:
    /// a NACK storm must not make the shard resend its cache at line rate.
    pub(super) nack_budget: crate::limits::Budget,
}

pub(super) enum Role {
    Ingest(Ingest),
    Egress(Box<Egress>),
    Webrtc(Box<WebrtcSession>),
    /// A publisher of another shard (see `relayed.rs`): no socket, no
    /// counters of its own (its owner reports it).
    Relayed(super::relayed::Relayed),
}

pub(super) struct Session {
    pub(super) room: RoomId,
    /// Whose session it is ([`ParticipantId::NOBODY`] for RTP egresses), its name's
    /// [`gateway_ring::msg::participant_key`], and what it publishes.
    pub(super) pid: ParticipantId,
    pub(super) key: u32,
    pub(super) kinds: Kinds,
    pub(super) stats: SessionStats,
    pub(super) dirty: bool,
    pub(super) srtp: Option<SrtpContext>,
    pub(super) role: Role,
}

impl Router {
    /// The session id of handle `h`, if it is live.
    pub fn session_id(&self, h: Handle) -> Option<SessionId> {
        self.session(h).map(|s| s.stats.session)
    }

    /// A room's publishers are on its owner: a replica here takes players only.
    fn check_publisher_here(&self, room: RoomId) -> Result<(), Outcome> {
        match self.owner_of(room) {
            Some(owner) => {
                info!(%room, owner, "a publisher refused: the room's publishers are on its owner shard");
                Err(Outcome::Failed)
            }
            None => Ok(()),
        }
    }

    fn check_new(&self, id: SessionId, room: RoomId) -> Result<(), Outcome> {
        if self.by_id.contains_key(&id) {
            return Err(Outcome::Exists);
        }
        if !self.rooms.contains_key(&room) {
            return Err(Outcome::NotFound);
        }
        if self.by_id.len() >= MAX_SESSIONS {
            return Err(Outcome::Capacity);
        }
        Ok(())
    }

    fn insert(&mut self, id: SessionId, s: Session) -> Handle {
        let h = self.store(s);
        self.by_id.insert(id, h);
        h
    }

    /// Puts `s` in a free slot (or a new one): its handle.
    pub(super) fn store(&mut self, s: Session) -> Handle {
        match self.free.pop() {
            Some(h) => {
                self.sessions[h as usize] = Some(s);
                h
            }
            None => {
                self.sessions.push(Some(s));
                (self.sessions.len() - 1) as Handle
            }
        }
    }

    pub fn add_ingest(&mut self, spec: IngestSpec) -> Result<Handle, Outcome> {
        self.check_new(spec.session, spec.room)?;
        self.check_publisher_here(spec.room)?;
        let (room, kinds) = (spec.room, Kinds::of(spec.kind));
        let pid = self.join_publishing(room, &spec.participant, kinds)?;
        let role = Role::Ingest(Ingest {
            spec,
            peer: None,
            last_rx: None,
        });
        Ok(self.add_session(role, pid, kinds))
    }

    /// Joins `name` to `room` as a session publishing `kinds` (none: a
    /// player); `Exists` if the participant publishes one of them already.
    fn join_publishing(
        &mut self,
        room: RoomId,
        name: &str,
        kinds: Kinds,
    ) -> Result<ParticipantId, Outcome> {
        let pid = self.participants.join(room, name);
        if kinds.any() && self.participants.publish(pid, kinds, false).is_err() {
            self.participants.leave(pid);
            return Err(Outcome::Exists);
        }
        Ok(pid)
    }

    pub fn add_egress(&mut self, spec: EgressSpec) -> Result<Handle, Outcome> {
        self.check_new(spec.session, spec.room)?;
        // Per-egress SSRCs, stable for the session's life.
        let base = (spec.session.get().wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
        let role = Role::Egress(Box::new(Egress {
            spec,
            video: OutTrack::new(
                MediaKind::Video,
                Some(FlvCodec::NEGOTIATED.video()),
                base | 1,
                EGRESS_VIDEO_PT,
                0,
            ),
            audio: OutTrack::new(
                MediaKind::Audio,
                None,
                base.wrapping_add(0x1000) | 1,
                EGRESS_AUDIO_PT,
                0,
            ),
        }));
        // An RTP egress sends the whole room: it is nobody.
        Ok(self.add_session(role, ParticipantId::NOBODY, Kinds::NONE))
    }

    /// A WebRTC publisher (an ingest of the room) or subscriber (an egress).
    pub fn add_webrtc(&mut self, now: Instant, spec: WebrtcSpec) -> Result<Handle, Outcome> {
        self.check_new(spec.session, spec.room)?;
        let (tracks, kinds) = match spec.direction {
            Direction::Subscribe => (
                spec.tracks
                    .iter()
                    .map(|t| {
                        let mut line = OutTrack {
                            audio_level: t.audio_level,
                            rtx_pt: t.rtx_pt,
                            ..OutTrack::new(
                                t.kind,
                                VideoCodec::of_wire(t.codec),
                                t.ssrc,
                                t.pt,
                                t.source,
                            )
                        };
                        // Its own codec, and the others it carries on
                        // the session's payload types.
                        for c in VideoCodec::ALL {
                            let also = t.codecs & (1 << c.wire() as u8) != 0;
                            if let Some(pts) = spec.video_pt(c.wire()).filter(|_| also) {
                                line.pts[c.index()] = pts;
                            }
                        }
                        if let Some(c) = line.codec {
                            line.pts[c.index()] = (t.pt, t.rtx_pt);
                        }
                        line
                    })
                    .collect(),
                Kinds::NONE,
            ),
            Direction::Publish => (
                {
                    self.check_publisher_here(spec.room)?;
                    Vec::new()
                },
                Kinds {
                    video: spec.tracks.iter().any(|t| t.kind == MediaKind::Video),
                    audio: spec.tracks.iter().any(|t| t.kind == MediaKind::Audio),
                },
            ),
        };
        let pid = self.join_publishing(spec.room, &spec.participant, kinds)?;
        let role = Role::Webrtc(Box::new(WebrtcSession {
            peer: Peer::new(spec, now),
            tracks,
            nack_budget: crate::limits::Budget::new(),
        }));
        Ok(self.add_session(role, pid, kinds))
    }

    /// Stores a session whose room `check_new` has confirmed, and lists it in the room.
    fn add_session(&mut self, role: Role, pid: ParticipantId, kinds: Kinds) -> Handle {
        let (id, room, srtp, is_ingest) = match &role {
            Role::Ingest(i) => (i.spec.session, i.spec.room, i.spec.srtp.as_ref(), true),
            Role::Egress(e) => (e.spec.session, e.spec.room, e.spec.srtp.as_ref(), false),
            Role::Webrtc(w) => {
                let spec = &w.peer.spec;
                let publish = spec.direction == Direction::Publish;
                (spec.session, spec.room, None, publish)
            }
            Role::Relayed(_) => unreachable!("relayed sessions are added by add_relayed"),
        };
        let s = Session {
            room,
            pid,
            key: self.participants.key(pid),
            kinds,
            stats: SessionStats {
                session: id,
                ..SessionStats::default()
            },
            dirty: true,
            srtp: srtp.map(SrtpContext::new),
            role,
        };
        let h = self.insert(id, s);
        let r = self.rooms.get_mut(&room).expect("check_new found the room");
        if is_ingest {
            r.ingests.push(h);
        } else {
            r.egresses.push(h);
            self.players_changed(room);
        }
        h
    }

    /// Removes one session; returns its handle so the shard closes the socket.
    pub fn remove_session(&mut self, id: SessionId) -> Option<Handle> {
        let h = *self.by_id.get(&id)?;
        let room = self.session(h)?.room;
        if let Some(r) = self.rooms.get_mut(&room) {
            r.ingests.retain(|&x| x != h);
            r.egresses.retain(|&x| x != h);
        }
        self.release(h);
        self.players_changed(room);
        Some(h)
    }

    pub(super) fn release(&mut self, h: Handle) {
        let Some(s) = self.sessions.get_mut(h as usize).and_then(Option::take) else {
            return;
        };
        // Its track's cache goes with it.
        match &s.role {
            Role::Relayed(r) => {
                self.relayed.remove(&r.source);
                self.track_caches.remove(&r.source);
            }
            _ => {
                self.by_id.remove(&s.stats.session);
                self.track_caches.remove(&Source::Session(s.stats.session));
            }
        }
        self.free.push(h);
        if self.participants.unpublish(s.pid, s.kinds) {
            self.out.note(Note::Unpublished {
                room: s.room,
                pid: s.pid,
                rtmp: false,
            });
        }
        self.participants.leave(s.pid);
        if let Some(r) = self.rooms.get_mut(&s.room) {
            r.replays.retain(|&p| p != h);
        }
        if matches!(s.role, Role::Webrtc(_)) {
            self.out.push(Output::DtlsClosed {
                session: s.stats.session,
            });
        }
        // An ingest that leaves frees the egress tracks it fed, so a new
        // publisher continues the same output streams at once.
        let publisher = match &s.role {
            Role::Ingest(i) => Some(Source::Session(i.spec.session)),
            Role::Webrtc(w) if w.peer.is_publisher() => Some(Source::Session(w.peer.spec.session)),
            Role::Relayed(r) => Some(r.source),
            _ => None,
        };
        if let Some(id) = publisher {
            self.free_lines(s.room, |source| source == id);
        }
    }

    /// RTMP push `pid` of `room` ended (its connection closed or was taken
    /// over): its track caches go, and the lines it fed are freed as a
    /// leaving ingest's are. A push of the same name again (a
    /// mini-program that reconnects) restarts its RTP at sequence 0 on the
    /// same source: it must find the lines free, to continue each in its
    /// player's numbering, and no cached GOP of the old push.
    pub fn push_ended(&mut self, room: RoomId, pid: ParticipantId) {
        let of_push = move |source: Source| match source {
            Source::Rtmp(p) | Source::RtmpTranscoded(p, _) => p == pid,
            Source::Session(_) => false,
        };
        self.track_caches.retain(|&source, _| !of_push(source));
        self.free_lines(room, of_push);
    }

    /// Frees the egress tracks and player lines of `room` that `ended`
    /// sources fed, keeping each one's numbering for the next publisher;
    /// WebRTC players hear that the stream ended (RTCP BYE, a `Line`
    /// event), and a later publisher continues on the same SSRCs.
    fn free_lines(&mut self, room: RoomId, ended: impl Fn(Source) -> bool) {
        let Some(room) = self.rooms.get(&room) else {
            return;
        };
        let mut byes: Vec<(Handle, u32)> = Vec::new();
        for &e in &room.egresses {
            let Some(sub) = self.sessions[e as usize].as_mut() else {
                continue;
            };
            let session = sub.stats.session;
            let (tracks, webrtc): (Vec<&mut OutTrack>, bool) = match &mut sub.role {
                Role::Egress(eg) => (vec![&mut eg.video, &mut eg.audio], false),
                Role::Webrtc(w) => (w.tracks.iter_mut().collect(), true),
                _ => continue,
            };
            for (line, t) in tracks.into_iter().enumerate() {
                if !t.source.is_some_and(|s| ended(s.0)) {
                    continue;
                }
                t.source = None;
                if webrtc {
                    byes.push((e, t.ssrc));
                    if t.source_pid != ParticipantId::NOBODY {
                        self.out.event(Event::Line {
                            session,
                            line: line as u8,
                            participant: String::new(),
                        });
                    }
                }
                t.source_pid = ParticipantId::NOBODY;
                t.source_key = 0;
            }
        }
        for (sub, ssrc) in byes {
            self.send_bye(sub, ssrc);
        }
    }

    pub fn session_count(&self) -> usize {
        self.by_id.len()
    }

    /// Counts a drop against the session with id `session`, if it exists.
    pub fn count_drop_by_id(&mut self, session: SessionId, reason: DropReason) {
        if let Some(&h) = self.by_id.get(&session) {
            self.count_drop(h, reason);
        }
    }

    /// Counts what publisher `session`'s bridge to RTMP did with gaps in
    /// its video: filled (reordered, or resent on our NACK), given up on.
    pub fn count_bridge_gaps(&mut self, session: SessionId, filled: u64, given_up: u64) {
        if let Some(s) = self
            .by_id
            .get(&session)
            .copied()
            .and_then(|h| self.session_mut(h))
        {
            s.stats.bridge_gaps_filled += filled;
            s.stats.bridge_gaps_given_up += given_up;
            s.dirty = true;
        }
    }

    /// Counts a drop against a session.
    pub fn count_drop(&mut self, h: Handle, reason: DropReason) {
        if let Some(s) = self.session_mut(h) {
            s.stats.drops[reason as usize] += 1;
            s.dirty = true;
        }
    }

    /// Where a DTLS record for `session` goes: its socket and verified peer.
    pub fn dtls_destination(&self, session: SessionId) -> Option<(Handle, SocketAddrV4)> {
        let h = *self.by_id.get(&session)?;
        match &self.session(h)?.role {
            Role::Webrtc(w) => Some((h, w.peer.ice.remote()?)),
            _ => None,
        }
    }

    /// The DTLS handshake of `session` finished: media may flow. A new
    /// player gets a picture at once rather than at each publisher's next
    /// periodic keyframe: the room's publishers that can be asked are asked
    /// for a keyframe, and its video lines want a GOP replay, which an RTMP
    /// publisher's track cache serves at its next frame boundary (as it
    /// serves a PLI), starting the line at its keyframe.
    pub fn install_keys(&mut self, now: Instant, session: SessionId, rx: &SrtpKey, tx: &SrtpKey) {
        let Some(&h) = self.by_id.get(&session) else {
            return;
        };
        let Some(w) = self.webrtc_mut(h) else {
            return;
        };
        w.peer.install_keys(rx, tx);
        if w.peer.is_publisher() {
            return;
        }
        for t in w.tracks.iter_mut().filter(|t| t.kind == MediaKind::Video) {
            t.replay_wanted = true;
        }
        self.replay_wanted_by(h);
        if let Some(room) = self.session(h).map(|s| s.room) {
            self.request_room_keyframes(now, room);
        }
    }

    /// Ends `session` for `reason` (consent expired, DTLS failed, a
    /// contained panic); its socket is closed through an output.
    pub fn end_session(&mut self, session: SessionId, reason: EndReason) {
        if let Some(handle) = self.remove_session(session) {
            info!(%session, ?reason, "session ended by the dataplane");
            self.out.push(Output::CloseSocket(handle));
            self.out.event(Event::SessionEnded { session, reason });
        }
    }

    /// Appends the counters of every session that changed since the last call
    /// (at most `max`), clearing their dirty marks.
    pub fn take_dirty_stats(&mut self, out: &mut Vec<SessionStats>, max: usize) {
        for s in self.sessions.iter_mut().flatten() {
            if out.len() >= max {
                break;
            }
            if s.dirty && !matches!(s.role, Role::Relayed(_)) {
                s.dirty = false;
                out.push(s.stats);
            }
        }
    }

    /// Everything the shard holds, for a controlplane resync.
    pub fn rooms(&self) -> impl Iterator<Item = &RoomSpec> {
        self.rooms.values().map(|r| &r.spec)
    }

    pub fn ingests(&self) -> impl Iterator<Item = &IngestSpec> {
        self.sessions
            .iter()
            .flatten()
            .filter_map(|s| match &s.role {
                Role::Ingest(i) => Some(&i.spec),
                _ => None,
            })
    }

    pub fn egress_specs(&self) -> impl Iterator<Item = &EgressSpec> {
        self.sessions
            .iter()
            .flatten()
            .filter_map(|s| match &s.role {
                Role::Egress(e) => Some(&e.spec),
                _ => None,
            })
    }

    pub fn webrtc_specs(&self) -> impl Iterator<Item = &WebrtcSpec> {
        self.sessions
            .iter()
            .flatten()
            .filter_map(|s| match &s.role {
                Role::Webrtc(w) => Some(&w.peer.spec),
                _ => None,
            })
    }
}
