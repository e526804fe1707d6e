//! Connections: each one's state ([`ConnState`]: protocol, send queue, role,
//! session) and memory bounds ([`ConnLimits`]); the bytes that arrive on it
//! (RTMP, or an HTTP-FLV request head) and the protocol output it is sent;
//! the session it is reported as, with its counters; and its end (taken out
//! and detached from what it published or played, or closed with its room).

use std::time::Instant;

use bytes::Bytes;

use super::timers::Timer;
use super::{Hub, Rooms};
use crate::output::{Action, Note, Output, Outputs};
use crate::participants::{Kinds, ParticipantId, Participants};
use crate::rtmp::chunk::MediaLimits;
use crate::rtmp::conn::{Conn, Event, RtmpError};
use crate::rtmp::http;
use crate::rtmp::stream::PlayerQueue;
use crate::transcode::Job;
use gateway_ring::msg::{Direction, EndReason, Event as RingEvent, Limit, RtmpSpec, SessionStats};
use gateway_ring::{RoomId, SessionId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    New,
    Publisher {
        room: RoomId,
        pid: ParticipantId,
    },
    /// Plays participant `stream`'s stream (`live/ROOM/NAME`).
    Player {
        room: RoomId,
        stream: ParticipantId,
    },
    /// Plays the room's program (`live/ROOM`): its active speaker.
    Program {
        room: RoomId,
        program: u64,
    },
    /// Waits for the owner of its room, another shard, to answer for the
    /// stream it asked to play (see `relay.rs`); still in set-up.
    Waiting,
}

/// One connection's protocol state and send queue; moves between shards
/// with its socket.
pub struct ConnState {
    pub conn: Conn,
    pub queue: PlayerQueue,
    pub(super) role: Role,
    /// The client's address (for the participant list).
    pub peer: Option<std::net::SocketAddrV4>,
    /// Session id once publishing or playing.
    pub(super) session: Option<SessionId>,
    /// Who the client is in its room.
    pub(super) name: String,
    /// The participant this connection holds a session of (a publisher's
    /// own; a player's of NAME, so NAME's stream waits for its return),
    /// and whether it counts as that participant's publisher.
    pub(super) joined: Option<ParticipantId>,
    pub(super) publishing: bool,
    /// Media messages and bytes received (publisher) or queued (player),
    /// and messages dropped for a slow player; `dirty` until reported.
    pub(super) stats: SessionStats,
    pub(super) dirty: bool,
    /// Dropped for falling behind (reported as such).
    pub(super) slow: bool,
    /// An HTTP-FLV player (its `conn` unused), and its request head so far.
    pub http: bool,
    pub(super) http_head: Vec<u8>,
    /// Kinds of its published media already warned about
    /// ([`media_warning`](super::flv_to_rtp::media_warning)'s bits).
    pub(super) warned: u8,
}

impl ConnState {
    /// A connection accepted on the HTTP-FLV listener.
    pub fn http_flv() -> ConnState {
        ConnState {
            http: true,
            ..Default::default()
        }
    }
}

impl Default for ConnState {
    fn default() -> Self {
        ConnState {
            conn: Conn::new(),
            queue: PlayerQueue::default(),
            role: Role::New,
            peer: None,
            session: None,
            name: String::new(),
            joined: None,
            publishing: false,
            stats: SessionStats::default(),
            dirty: false,
            slow: false,
            http: false,
            http_head: Vec::new(),
            warned: 0,
        }
    }
}

/// Memory bounds of one RTMP connection (see [`crate::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub media: MediaLimits,
    /// Bytes queued for it that it has not read, control output included.
    pub max_unread: usize,
}

impl From<&crate::limits::Limits> for ConnLimits {
    /// The memory bounds of one RTMP connection under `limits`.
    fn from(limits: &crate::limits::Limits) -> Self {
        ConnLimits {
            media: MediaLimits {
                max_message: limits.rtmp_max_message,
                max_pending: limits.rtmp_max_pending,
            },
            max_unread: limits.rtmp_max_unread,
        }
    }
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            media: MediaLimits::default(),
            max_unread: crate::rtmp::stream::MAX_UNREAD,
        }
    }
}

impl Hub {
    pub fn insert(&mut self, idx: u32, mut state: ConnState) {
        state.queue.max_unread = self.limits.max_unread;
        // A player handed over from another shard may be behind already.
        let behind = state.queue.poll_timeout();
        self.conns.insert(idx, state);
        self.schedule(Timer::Player(idx), behind);
    }

    /// Takes a connection out (closing or handing over), detaching it from
    /// its stream and its participant.
    pub fn remove(
        &mut self,
        now: Instant,
        idx: u32,
        parts: &mut Participants,
    ) -> Option<ConnState> {
        let mut st = self.conns.remove(&idx)?;
        if let Some(session) = st.session.take() {
            self.out.event(RingEvent::SessionEnded {
                session,
                reason: if st.slow {
                    EndReason::SlowConsumer
                } else {
                    EndReason::RtmpClosed
                },
            });
        }
        // Unpublished first: the players that followed it look for the
        // room's next publisher.
        if let (Some(pid), true) = (st.joined, std::mem::take(&mut st.publishing)) {
            parts.unpublish(pid, Kinds::BOTH);
        }
        let role = std::mem::replace(&mut st.role, Role::New);
        self.detach(now, idx, role, parts);
        if let Some(pid) = st.joined.take() {
            parts.leave(pid);
        }
        Some(st)
    }

    /// Detaches connection `idx` that had `role` from its stream.
    pub(super) fn detach(&mut self, now: Instant, idx: u32, role: Role, parts: &mut Participants) {
        match role {
            Role::Publisher { room, pid } => {
                if let Some(s) = self.streams.get_mut(&pid) {
                    if s.publisher == Some(idx) {
                        s.publisher = None;
                        s.rtp = None;
                        self.publisher_gone(now, room, pid, parts);
                        // The rest of the core hears it as of a WebRTC
                        // publisher: the room's speakers, and the shards
                        // that watch it (its relayed tracks end there).
                        self.out.note(Note::Unpublished {
                            room,
                            pid,
                            rtmp: true,
                        });
                    }
                }
            }
            Role::Player { stream, .. } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.players.retain(|&p| p != idx);
                }
                if !self.forget_replica_if_unplayed(stream, parts) {
                    self.forget_if_unused(stream, parts);
                }
            }
            Role::Waiting => self.stop_waiting(idx),
            Role::Program { program, .. } => {
                if let Some(p) = self.programs.get_mut(&program) {
                    p.players.retain(|&x| x != idx);
                }
                self.forget_program_if_unplayed(program, parts);
            }
            Role::New => {}
        }
    }

    /// Bytes arrived on connection `idx`.
    pub fn on_bytes(
        &mut self,
        now: Instant,
        idx: u32,
        data: &[u8],
        rooms: &mut dyn Rooms,
        actions: &mut Outputs,
    ) {
        let Some(st) = self.conns.get_mut(&idx) else {
            return;
        };
        if st.http {
            return self.on_http_bytes(now, idx, data, rooms, actions);
        }
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let result: Result<(), RtmpError> = st.conn.on_bytes(data, &mut events);
        self.flush_conn(idx, actions);
        if let Err(e) = result {
            if e.is_memory_limit() {
                self.limit_hits[Limit::RtmpMemory as usize] += 1;
            }
            actions.rtmp(Action::Close {
                idx,
                why: e.to_string(),
                flush: false,
            });
            self.events = events;
            return;
        }
        let mut rest = events.drain(..);
        while let Some(ev) = rest.next() {
            self.on_event(now, idx, ev, rooms, actions);
            // Handed over: what follows belongs to the other shard.
            if let Some(Action::Handoff { idx: i, events, .. }) = actions.last_rtmp_mut() {
                if *i == idx {
                    events.extend(rest.by_ref());
                }
            }
        }
        drop(rest);
        self.events = events;
    }

    /// Bytes from an HTTP-FLV client: its request head (bounded by
    /// [`http::MAX_REQUEST`]), then a play like an RTMP `play` of the same
    /// address; what it sends after the head is ignored.
    fn on_http_bytes(
        &mut self,
        now: Instant,
        idx: u32,
        data: &[u8],
        rooms: &mut dyn Rooms,
        actions: &mut Outputs,
    ) {
        let Some(st) = self.conns.get_mut(&idx) else {
            return;
        };
        if st.role != Role::New || st.session.is_some() {
            return;
        }
        let room = http::MAX_REQUEST.saturating_sub(st.http_head.len());
        st.http_head
            .extend_from_slice(&data[..data.len().min(room)]);
        let request = http::parse_request(&st.http_head);
        if request != http::Request::Partial {
            st.http_head = Vec::new();
        }
        match request {
            http::Request::Partial => {}
            http::Request::Preflight => {
                st.queue.push_control(http::preflight_response());
                actions.rtmp(Action::Wake(idx));
                actions.rtmp(Action::Close {
                    idx,
                    why: "CORS preflight answered".into(),
                    flush: true,
                });
            }
            http::Request::Refuse { status, why } => {
                // (The onStatus code is for RTMP clients; this one gets `status`.)
                self.reject(idx, "NetStream.Play.Failed", status, &why, actions)
            }
            http::Request::Play { app, key, query } => {
                self.on_event(now, idx, Event::Play { app, key, query }, rooms, actions)
            }
        }
    }

    /// Moves the connection's pending protocol output into its queue; a
    /// connection that does not read what it is sent is closed.
    pub(super) fn flush_conn(&mut self, idx: u32, actions: &mut Outputs) {
        if let Some(st) = self.conns.get_mut(&idx) {
            if st.conn.has_output() {
                if st.queue.push_control(Bytes::from(st.conn.take_output())) {
                    actions.rtmp(Action::Wake(idx));
                } else {
                    self.limit_hits[Limit::RtmpMemory as usize] += 1;
                    actions.rtmp(Action::Close {
                        idx,
                        why: "does not read what it is sent".into(),
                        flush: false,
                    });
                }
            }
        }
    }

    /// Reports a connection that started publishing or playing as a participant.
    pub(super) fn announce(&mut self, now: Instant, idx: u32, room: RoomId, direction: Direction) {
        // The wall clock is an input (the core passes it in at its ticks).
        let created_ms = self.wall.map_or(0, |(at, ms)| {
            ms + now.saturating_duration_since(at).as_millis() as u64
        });
        let Some(st) = self.conns.get_mut(&idx) else {
            return;
        };
        self.next_session += 1;
        let session = SessionId::rtmp(self.shard, self.next_session);
        st.session = Some(session);
        let peer = st
            .peer
            .unwrap_or(std::net::SocketAddrV4::new([0; 4].into(), 0));
        self.out.event(RingEvent::Rtmp(RtmpSpec {
            session,
            room,
            direction,
            peer_ip: peer.ip().octets(),
            peer_port: peer.port(),
            created_ms,
            participant: st.name.clone(),
        }));
    }

    /// Every live participant (controlplane resync).
    pub fn participants(&self) -> Vec<RtmpSpec> {
        let mut out = Vec::new();
        for st in self.conns.values() {
            let (
                Some(session),
                Role::Publisher { room, .. }
                | Role::Player { room, .. }
                | Role::Program { room, .. },
            ) = (st.session, st.role)
            else {
                continue;
            };
            let peer = st
                .peer
                .unwrap_or(std::net::SocketAddrV4::new([0; 4].into(), 0));
            out.push(RtmpSpec {
                session,
                room,
                direction: match st.role {
                    Role::Publisher { .. } => Direction::Publish,
                    _ => Direction::Subscribe,
                },
                peer_ip: peer.ip().octets(),
                peer_port: peer.port(),
                created_ms: 0,
                participant: st.name.clone(),
            });
        }
        out
    }

    /// Counters of participants that changed since the last call.
    pub fn take_dirty_stats(&mut self, out: &mut Vec<SessionStats>) {
        for st in self.conns.values_mut() {
            if let (true, Some(session)) = (st.dirty, st.session) {
                st.dirty = false;
                out.push(SessionStats {
                    session,
                    ..st.stats
                });
            }
        }
    }

    /// The connection of participant `session`, if it is here.
    pub fn find_session(&self, session: SessionId) -> Option<u32> {
        self.conns
            .iter()
            .find(|(_, st)| st.session == Some(session))
            .map(|(&idx, _)| idx)
    }

    /// Whether connection `idx` publishes or plays (set-up done).
    pub fn is_set_up(&self, idx: u32) -> bool {
        self.conns
            .get(&idx)
            .is_some_and(|c| !matches!(c.role, Role::New | Role::Waiting))
    }

    /// Whether connection `idx` publishes.
    pub fn is_publisher(&self, idx: u32) -> bool {
        self.conns
            .get(&idx)
            .is_some_and(|c| matches!(c.role, Role::Publisher { .. }))
    }

    /// Ends every connection of a deleted room.
    pub fn close_room(&mut self, room: RoomId, actions: &mut Outputs) {
        let pids: Vec<ParticipantId> = self
            .streams
            .iter()
            .filter(|(_, s)| s.room == room)
            .map(|(&pid, _)| pid)
            .collect();
        let ids = self.programs_of(room, |_| true);
        let mut conns: Vec<u32> = Vec::new();
        for id in ids {
            if let Some(p) = self.remove_program(id) {
                conns.extend(p.players);
            }
        }
        for pid in pids {
            if let Some(s) = self.streams.remove(&pid) {
                if let Some(origin) = s.origin {
                    self.replicas.remove(&origin);
                    self.replica_names.retain(|_, &mut l| l != pid);
                }
                conns.extend(s.publisher.into_iter().chain(s.players));
                self.out.push(Output::Transcode {
                    job: Job::Reset { stream: pid },
                    from: None,
                });
            }
        }
        for idx in conns {
            actions.rtmp(Action::Close {
                idx,
                why: "room deleted".into(),
                flush: false,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::fixtures::*;
    use crate::output::Outputs;
    use crate::rtmp::chunk::write_message;
    use crate::rtmp::conn::{types, Media};

    /// An HTTP-FLV player gets the answer head, the FLV header and the
    /// cached stream as FLV tags in chunks; a request for someone who is
    /// not in the room gets 404 with the reason, then the connection closes.
    #[test]
    fn an_http_flv_player_gets_the_stream_as_chunked_flv() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(1);
        send(&mut h, &mut rooms, 0, "publish", "r/bob");
        frame_at(&mut h, &mut rooms, 0, 0xb1, 40, true, Instant::now());
        h.insert(1, ConnState::http_flv());
        h.insert(2, ConnState::http_flv());
        let mut a = Outputs::default();
        // The head may come in pieces.
        h.on_bytes(
            Instant::now(),
            1,
            b"GET /live/r/bob.flv HT",
            &mut rooms,
            &mut a,
        );
        assert!(h.queue(1).unwrap().is_empty(), "half a head: nothing yet");
        h.on_bytes(Instant::now(), 1, b"TP/1.1\r\n\r\n", &mut rooms, &mut a);
        let mut out = Vec::new();
        let q = h.queue(1).unwrap();
        while let Some(b) = q.front() {
            out.extend_from_slice(b);
            let n = b.len();
            q.consumed(n);
        }
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        let body = &out[text.find("\r\n\r\n").unwrap() + 4..];
        assert!(body.starts_with(b"d\r\nFLV\x01\x05"));
        // The sequence header, then the keyframe, each an FLV video tag.
        let keyframe = http::tag_chunk(&Media {
            type_id: types::VIDEO,
            timestamp: 40,
            payload: Bytes::from_static(&[0x17, 1, 0, 0, 0, 0xb1]),
        });
        assert!(body.ends_with(&keyframe), "the cached keyframe last");
        assert_eq!(
            body.windows(keyframe.len())
                .filter(|w| *w == &keyframe[..])
                .count(),
            1
        );

        h.on_bytes(
            Instant::now(),
            2,
            b"GET /live/r/carol.flv HTTP/1.1\r\n\r\n",
            &mut rooms,
            &mut a,
        );
        let q = h.queue(2).unwrap();
        let answer = String::from_utf8_lossy(q.front().unwrap()).into_owned();
        assert!(answer.starts_with("HTTP/1.1 404 Not Found\r\n"), "{answer}");
        assert!(answer.contains("carol"), "{answer}");
        assert_eq!(
            closed(&a, 2),
            Some("no participant \"carol\" in room \"r\"")
        );
    }

    /// A client that sends pings and never reads the answers cannot make
    /// the shard queue them without end: closed once MAX_UNREAD is queued.
    #[test]
    fn a_client_that_never_reads_its_answers_is_closed() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(1);
        let t0 = Instant::now();
        let mut a = Outputs::default();
        h.on_bytes(t0, 0, &connect(), &mut rooms, &mut a);
        let mut ping = Vec::new();
        write_message(
            &mut ping,
            2,
            0,
            types::USER_CONTROL,
            0,
            &[0, 6, 0, 0, 0, 1],
            128,
        );
        let pings: Vec<u8> = ping.repeat(1000);
        let mut closed = false;
        for _ in 0..200 {
            a.clear();
            h.on_bytes(t0, 0, &pings, &mut rooms, &mut a);
            if a.actions()
                .any(|x| matches!(x, Action::Close { idx: 0, .. }))
            {
                closed = true;
                break;
            }
        }
        assert!(closed, "never closed");
        assert_eq!(h.limit_hits[Limit::RtmpMemory as usize], 1);
        assert!(h.queue(0).unwrap().bytes() <= crate::rtmp::stream::MAX_UNREAD);
    }
}
