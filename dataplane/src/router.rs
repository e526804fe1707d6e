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

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use gateway_ring::msg::{
    Direction, DropReason, EgressSpec, IngestSpec, MediaKind, Outcome, RoomSpec, SessionStats,
    SrtpKey, WebrtcSpec,
};

use crate::nack::NackCache;
use crate::participants::{Kinds, Participants, Pid, NOBODY};
use crate::rtcp::{self, Feedback, SenderInfo};
use crate::rtp::{is_rtcp, RtpHeader};
use crate::srtp::{SrtpContext, SrtpError, MAX_TRAILER};
use crate::webrtc::{Peer, PeerEvent};

/// A session's slot in the shard; the same index names its socket.
pub type Handle = u32;

/// Payload types the egress SDP announces.
pub const EGRESS_VIDEO_PT: u8 = 96;
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

/// `Event::SessionEnded` reasons.
pub const END_CONSENT: u16 = 1;
pub const END_DTLS: u16 = 2;

/// A packet the router wants sent that is not a fan-out copy: STUN answers,
/// DTLS records, RTCP feedback and reports, retransmissions.
#[derive(Debug)]
pub struct Control {
    /// The session whose socket sends it.
    pub from: Handle,
    pub dest: SocketAddrV4,
    pub data: Vec<u8>,
}

/// A session the router ended by itself (consent lost, DTLS failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ended {
    pub session: u64,
    pub handle: Handle,
    pub reason: u16,
}

struct Room {
    spec: RoomSpec,
    ingests: Vec<Handle>,
    egresses: Vec<Handle>,
}

struct Ingest {
    spec: IngestSpec,
    peer: Option<SocketAddrV4>,
    last_rx: Option<Instant>,
}

struct Egress {
    spec: EgressSpec,
    video: OutTrack,
    audio: OutTrack,
}

/// A WebRTC peer and, when it subscribes, the rewrite state of its tracks.
struct WebrtcSession {
    peer: Peer,
    /// Subscriber: one per media line it offered to receive; each carries
    /// one publisher's track at a time.
    tracks: Vec<OutTrack>,
    /// Retransmissions (and NACKs passed on) this player may still cause:
    /// a NACK storm must not make the shard resend its cache at line rate.
    nack_budget: crate::limits::Budget,
}

/// The track of `tracks` that should carry `kind` media from `ingest`
/// (participant key `key`), and whether it takes the track from a live
/// source: the one already bound to it; else the line the answer's
/// `a=msid` named for this participant (taken from whoever holds it); else
/// a free line the answer named for nobody, or for someone who has not
/// come within [`SOURCE_TIMEOUT`] (of the player's start, or of the line's
/// last packet); else one whose source went silent.
fn pick_track(
    tracks: &[OutTrack],
    kind: MediaKind,
    ingest: u64,
    key: u32,
    created: Instant,
    now: Instant,
) -> Option<(usize, bool)> {
    let of_kind = || tracks.iter().enumerate().filter(|(_, t)| t.kind == kind);
    let long_ago = |at: Option<Instant>| {
        at.is_none_or(|at| now.saturating_duration_since(at) >= SOURCE_TIMEOUT)
    };
    if let Some((i, _)) = of_kind().find(|(_, t)| t.source.is_some_and(|s| s.0 == ingest)) {
        return Some((i, false));
    }
    if let Some((i, _)) = of_kind().find(|(_, t)| t.want == key && t.source_key != key) {
        return Some((i, true));
    }
    of_kind()
        .find(|(_, t)| t.source.is_none() && (t.want == 0 || long_ago(t.last_at.or(Some(created)))))
        .or_else(|| of_kind().find(|(_, t)| t.source.is_some() && long_ago(t.last_at)))
        .map(|(i, _)| (i, false))
}

/// A buffer for a packet that is not a fan-out copy, from `pool`: room for
/// the largest packet, wrapped as RTX (2 bytes more) and protected.
fn control_buf(pool: &mut Vec<Vec<u8>>) -> Vec<u8> {
    let mut b = pool.pop().unwrap_or_default();
    b.clear();
    b.resize(crate::rtp::MAX_PACKET + 2 + MAX_TRAILER, 0);
    b
}

/// Replays an RTMP publisher's cached GOP to one player line: the packets
/// from its latest keyframe up to `next` (exclusive: the live packet about
/// to go, which begins a new frame), numbered on from the line's last packet
/// and stamped one tick apart per frame just after it, so the player's
/// decoder gets the keyframe and every frame since at once (it shows the
/// last). The line's mapping then moves past them: the live stream goes on
/// with no gap in sequence and its own, later, timestamps (a GOP is under
/// 1024 packets here, less than a frame's 3000 ticks). Returns the packets
/// sent; none if the GOP is no longer whole in the cache.
#[allow(clippy::too_many_arguments)]
fn replay_gop(
    cache: &RtmpCache,
    t: &mut OutTrack,
    peer: &mut Peer,
    next: u16,
    pool: &mut Vec<Vec<u8>>,
    controls: &mut Vec<Control>,
    from: Handle,
    dest: SocketAddrV4,
    now: Instant,
) -> u64 {
    t.last_replay = Some(now);
    let Some(k) = cache.keyframe else { return 0 };
    let n = next.wrapping_sub(k);
    let whole = (0..n).all(|j| cache.packets.get(k.wrapping_add(j)).is_some());
    if n == 0 || n as usize >= crate::nack::SLOTS || !whole {
        return 0;
    }
    let (base_seq, base_ts) = (t.last_seq, t.last_ts);
    let (mut frame, mut prev_ts) = (1u32, None);
    for j in 0..n {
        let Some(pkt) = cache.packets.get(k.wrapping_add(j)) else {
            continue;
        };
        let Ok(h) = RtpHeader::parse(pkt) else {
            continue;
        };
        if prev_ts.is_some_and(|p| p != h.timestamp) {
            frame += 1;
        }
        prev_ts = Some(h.timestamp);
        let mut buf = control_buf(pool);
        let len = pkt.len();
        buf[..len].copy_from_slice(pkt);
        let (seq, ts) = (base_seq.wrapping_add(1 + j), base_ts.wrapping_add(frame));
        RtpHeader::rewrite(&mut buf, t.pt, seq, ts, t.ssrc);
        let Ok(m) = peer.protect_rtp(&mut buf, len) else {
            continue;
        };
        buf.truncate(m);
        t.sent = t.sent.wrapping_add(1);
        t.octets = t.octets.wrapping_add(len.saturating_sub(12) as u32);
        controls.push(Control {
            from,
            dest,
            data: buf,
        });
    }
    t.seq_delta = t.seq_delta.wrapping_add(n);
    t.last_seq = base_seq.wrapping_add(n);
    t.last_ts = base_ts.wrapping_add(frame);
    t.replayed_until = Some(t.last_seq.wrapping_add(1));
    n as u64
}

enum Role {
    Ingest(Ingest),
    Egress(Egress),
    Webrtc(Box<WebrtcSession>),
}

struct Session {
    room: u32,
    /// Whose session it is ([`NOBODY`] for RTP egresses), its name's
    /// [`gateway_ring::msg::participant_key`], and what it publishes.
    pid: Pid,
    key: u32,
    kinds: Kinds,
    stats: SessionStats,
    dirty: bool,
    srtp: Option<SrtpContext>,
    role: Role,
}

/// A plaintext RTP packet, now at the front of the receive buffer, to fan out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound {
    pub room: u32,
    pub ingest: u64,
    /// The participant it comes from (never sent back to it) and its key.
    pub participant: Pid,
    pub key: u32,
    /// Audio: its RFC 6464 level, when the publisher sends them.
    pub level: Option<u8>,
    pub kind: MediaKind,
    pub len: usize,
    pub seq_no: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Packets of its stream missing just before this one (WebRTC audio:
    /// concealed on the transcoder, so the bridged audio keeps its time).
    pub lost_before: u16,
}

/// Rewrite state of one outgoing track of an egress: receivers see one SSRC
/// with continuous sequence numbers and timestamps, whichever ingest feeds it.
struct OutTrack {
    kind: MediaKind,
    ssrc: u32,
    pt: u8,
    clock_rate: u32,
    /// (ingest session id, its SSRC) currently mapped.
    source: Option<(u64, u32)>,
    /// The participant of `source`, and its key.
    source_pid: Pid,
    source_key: u32,
    /// Subscribe: the key of the participant the answer named for this line (0: none).
    want: u32,
    seq_delta: u16,
    ts_delta: u32,
    last_seq: u16,
    last_ts: u32,
    last_at: Option<Instant>,
    /// Packets and payload octets sent, for sender reports.
    sent: u32,
    octets: u32,
    /// The player lost the picture of this line's RTMP publisher (PLI), which
    /// cannot be asked for a keyframe: its cached GOP is replayed at the
    /// next frame boundary. When the last replay was.
    replay_wanted: bool,
    last_replay: Option<Instant>,
    /// WebRTC player, video: the RTX payload type its answer took (0: none,
    /// resends go on the media SSRC), and the RTX stream's next sequence.
    rtx_pt: u8,
    rtx_seq: u16,
    /// WebRTC player, audio: the id its answer gave RFC 6464 audio levels
    /// (0: none); each packet's level, read from the publisher's own id at
    /// ingress, is written back under it.
    audio_level: u8,
    /// Output sequence numbers up to here (exclusive) are from before the
    /// last replay or in it: NACKs for them are not answered (the mapping
    /// moved past them).
    replayed_until: Option<u16>,
}

impl OutTrack {
    fn new(kind: MediaKind, ssrc: u32, pt: u8, want: u32) -> OutTrack {
        let clock_rate = match kind {
            MediaKind::Video => 90_000,
            MediaKind::Audio => 48_000,
        };
        OutTrack {
            kind,
            ssrc,
            pt,
            clock_rate,
            source: None,
            source_pid: NOBODY,
            source_key: 0,
            want,
            seq_delta: 0,
            ts_delta: 0,
            last_seq: 0,
            last_ts: 0,
            last_at: None,
            sent: 0,
            octets: 0,
            replay_wanted: false,
            last_replay: None,
            audio_level: 0,
            replayed_until: None,
            rtx_pt: 0,
            rtx_seq: 0,
        }
    }

    /// Maps an input (seq, ts) to the output stream, or `None` when another
    /// live ingest owns this track (unless `take`: the line is this source's).
    fn map(
        &mut self,
        now: Instant,
        source: (u64, u32),
        seq: u16,
        ts: u32,
        take: bool,
    ) -> Option<(u16, u32)> {
        if self.source != Some(source) {
            let current_silent = match self.last_at {
                Some(at) => now.saturating_duration_since(at) >= SOURCE_TIMEOUT,
                None => true,
            };
            let same_ingest = self.source.map(|s| s.0) == Some(source.0);
            if self.source.is_some() && !current_silent && !same_ingest && !take {
                return None;
            }
            if let Some(at) = self.last_at {
                // Continue where the previous source stopped: next sequence
                // number, and a timestamp advanced by the wall time in between.
                let gap = now.saturating_duration_since(at).as_secs_f64();
                let ticks = ((gap * self.clock_rate as f64) as u32).max(1);
                self.seq_delta = self.last_seq.wrapping_add(1).wrapping_sub(seq);
                self.ts_delta = self.last_ts.wrapping_add(ticks).wrapping_sub(ts);
            }
            self.source = Some(source);
        }
        let out_seq = seq.wrapping_add(self.seq_delta);
        let out_ts = ts.wrapping_add(self.ts_delta);
        if self.last_at.is_none() || (out_seq.wrapping_sub(self.last_seq) as i16) > 0 {
            self.last_seq = out_seq;
            self.last_ts = out_ts;
        }
        self.last_at = Some(now);
        Some((out_seq, out_ts))
    }
}

/// An RTMP publisher's retransmission cache is dropped after this long
/// without a packet.
const RTMP_CACHE_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// An RTMP publisher's RTP, kept for its players: NACKs are answered from
/// it, and a player's PLI by replaying the GOP from its keyframe.
struct RtmpCache {
    packets: Box<NackCache>,
    last: Instant,
    /// Sequence number of the packet that began the latest keyframe.
    keyframe: Option<u16>,
}

/// Rooms and sessions of one shard.
pub struct Router {
    /// Retransmissions per second one WebRTC player may cause ([`crate::limits::Limits::nack_per_s`]).
    nack_per_s: u32,
    sessions: Vec<Option<Session>>,
    free: Vec<Handle>,
    by_id: HashMap<u64, Handle>,
    rooms: HashMap<u32, Room>,
    /// Room ids by name (RTMP streams name their room).
    names: HashMap<String, u32>,
    /// Packets to send that are not fan-out copies; the shard drains them.
    controls: Vec<Control>,
    /// DTLS datagrams for the DTLS thread: (session, bytes).
    dtls_in: Vec<(u64, Vec<u8>)>,
    /// WebRTC sessions where we are the DTLS client whose peer just passed
    /// its first check: their handshake can start.
    dtls_starts: Vec<u64>,
    /// Spent control buffers, reused so steady state does not allocate.
    pool: Vec<Vec<u8>>,
    scratch: Vec<u8>,
    feedback: Vec<Feedback>,
    ended: Vec<Ended>,
    /// WebRTC sessions removed since the last call (their DTLS state goes too).
    closed_webrtc: Vec<u64>,
    /// WebRTC players connected since the last call: (room, handle).
    joined: Vec<(u32, Handle)>,
    /// Who is in each room; the RTMP side joins its connections here too.
    pub participants: Participants,
    /// Participants that stopped publishing anything since the last call: (room, pid).
    unpublished: Vec<(u32, Pid)>,
    /// Player lines that changed hands since the last call: (session, line, pid).
    lines: Vec<(u64, u8, Pid)>,
    /// The video RTP of RTMP publishers (virtual ingests, by source id), so
    /// players' NACKs for them are answered like any publisher's (an RTMP
    /// publisher cannot be asked), with when each was last fed.
    rtmp_caches: HashMap<u64, RtmpCache>,
}

impl Default for Router {
    fn default() -> Self {
        Router::new(&crate::limits::Limits::default())
    }
}

impl Router {
    pub fn new(limits: &crate::limits::Limits) -> Router {
        Router {
            nack_per_s: limits.nack_per_s,
            sessions: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            rooms: HashMap::new(),
            names: HashMap::new(),
            controls: Vec::new(),
            dtls_in: Vec::new(),
            dtls_starts: Vec::new(),
            pool: Vec::new(),
            scratch: Vec::new(),
            feedback: Vec::new(),
            ended: Vec::new(),
            closed_webrtc: Vec::new(),
            joined: Vec::new(),
            participants: Participants::default(),
            unpublished: Vec::new(),
            lines: Vec::new(),
            rtmp_caches: HashMap::new(),
        }
    }

    /// A video RTP packet of RTMP publisher `source` (a virtual ingest id),
    /// kept for players' NACKs.
    pub fn cache_rtmp_video(&mut self, now: Instant, source: u64, packet: &[u8]) {
        let Ok(h) = RtpHeader::parse(packet) else {
            return;
        };
        let cache = self.rtmp_caches.entry(source).or_insert_with(|| RtmpCache {
            packets: Box::default(),
            last: now,
            keyframe: None,
        });
        cache.packets.insert(h.seq_no, packet);
        cache.last = now;
        if crate::h264::starts_keyframe(packet.get(h.len..).unwrap_or_default()) {
            // The packetizer opens each IDR with its SPS/PPS: the first
            // packet of the keyframe is where a replay starts.
            let same = cache.keyframe.is_some_and(|k| h.seq_no.wrapping_sub(k) < 4);
            if !same {
                cache.keyframe = Some(h.seq_no);
            }
        }
    }

    /// The session id of handle `h`, if it is live.
    pub fn session_id(&self, h: Handle) -> Option<u64> {
        self.session(h).map(|s| s.stats.session)
    }

    pub fn add_room(&mut self, spec: RoomSpec) -> Outcome {
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
            },
        );
        Outcome::Ok
    }

    /// Removes the room and returns the handles of its sessions (now removed)
    /// so the shard can close their sockets.
    pub fn remove_room(&mut self, room: u32) -> Option<Vec<Handle>> {
        let r = self.rooms.remove(&room)?;
        self.names.remove(&r.spec.name);
        let handles: Vec<Handle> = r.ingests.iter().chain(&r.egresses).copied().collect();
        for &h in &handles {
            self.release(h);
        }
        self.participants.remove_room(room);
        self.unpublished.retain(|&(r, _)| r != room);
        Some(handles)
    }

    pub fn room_by_name(&self, name: &str) -> Option<u32> {
        self.names.get(name).copied()
    }

    fn check_new(&self, id: u64, room: u32) -> Result<(), Outcome> {
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

    fn insert(&mut self, id: u64, s: Session) -> Handle {
        let h = match self.free.pop() {
            Some(h) => {
                self.sessions[h as usize] = Some(s);
                h
            }
            None => {
                self.sessions.push(Some(s));
                (self.sessions.len() - 1) as Handle
            }
        };
        self.by_id.insert(id, h);
        h
    }

    pub fn add_ingest(&mut self, spec: IngestSpec) -> Result<Handle, Outcome> {
        self.check_new(spec.session, spec.room)?;
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
    fn join_publishing(&mut self, room: u32, name: &str, kinds: Kinds) -> Result<Pid, Outcome> {
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
        let base = (spec.session.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
        let role = Role::Egress(Egress {
            spec,
            video: OutTrack::new(MediaKind::Video, base | 1, EGRESS_VIDEO_PT, 0),
            audio: OutTrack::new(
                MediaKind::Audio,
                base.wrapping_add(0x1000) | 1,
                EGRESS_AUDIO_PT,
                0,
            ),
        });
        // An RTP egress sends the whole room: it is nobody.
        Ok(self.add_session(role, NOBODY, Kinds::NONE))
    }

    /// A WebRTC publisher (an ingest of the room) or subscriber (an egress).
    pub fn add_webrtc(&mut self, now: Instant, spec: WebrtcSpec) -> Result<Handle, Outcome> {
        self.check_new(spec.session, spec.room)?;
        let (tracks, kinds) = match spec.direction {
            Direction::Subscribe => (
                spec.tracks
                    .iter()
                    .map(|t| OutTrack {
                        audio_level: t.audio_level,
                        rtx_pt: t.rtx_pt,
                        ..OutTrack::new(t.kind, t.ssrc, t.pt, t.source)
                    })
                    .collect(),
                Kinds::NONE,
            ),
            Direction::Publish => (
                Vec::new(),
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
    fn add_session(&mut self, role: Role, pid: Pid, kinds: Kinds) -> Handle {
        let (id, room, srtp, is_ingest) = match &role {
            Role::Ingest(i) => (i.spec.session, i.spec.room, i.spec.srtp.as_ref(), true),
            Role::Egress(e) => (e.spec.session, e.spec.room, e.spec.srtp.as_ref(), false),
            Role::Webrtc(w) => {
                let spec = &w.peer.spec;
                let publish = spec.direction == Direction::Publish;
                (spec.session, spec.room, None, publish)
            }
        };
        let s = Session {
            room,
            pid,
            key: self.participants.key(pid),
            kinds,
            stats: SessionStats {
                session: id,
                ..Default::default()
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
        }
        h
    }

    /// Removes one session; returns its handle so the shard closes the socket.
    pub fn remove_session(&mut self, id: u64) -> Option<Handle> {
        let h = *self.by_id.get(&id)?;
        let room = self.session(h)?.room;
        if let Some(r) = self.rooms.get_mut(&room) {
            r.ingests.retain(|&x| x != h);
            r.egresses.retain(|&x| x != h);
        }
        self.release(h);
        Some(h)
    }

    fn release(&mut self, h: Handle) {
        let Some(s) = self.sessions.get_mut(h as usize).and_then(Option::take) else {
            return;
        };
        self.by_id.remove(&s.stats.session);
        self.free.push(h);
        if self.participants.unpublish(s.pid, s.kinds) {
            self.unpublished.push((s.room, s.pid));
        }
        self.participants.leave(s.pid);
        if matches!(s.role, Role::Webrtc(_)) {
            self.closed_webrtc.push(s.stats.session);
        }
        // An ingest that leaves frees the egress tracks it fed, so a new
        // publisher continues the same output streams at once.
        let publisher = match &s.role {
            Role::Ingest(i) => Some(i.spec.session),
            Role::Webrtc(w) if w.peer.is_publisher() => Some(w.peer.spec.session),
            _ => None,
        };
        let mut byes: Vec<(Handle, u32)> = Vec::new();
        if let (Some(id), Some(room)) = (publisher, self.rooms.get(&s.room)) {
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
                    if t.source.map(|s| s.0) == Some(id) {
                        t.source = None;
                        if webrtc {
                            byes.push((e, t.ssrc));
                            if t.source_pid != NOBODY {
                                self.lines.push((session, line as u8, NOBODY));
                            }
                        }
                        t.source_pid = NOBODY;
                        t.source_key = 0;
                    }
                }
            }
        }
        // WebRTC subscribers hear that the stream ended (RTCP BYE); a later
        // publisher continues on the same SSRCs.
        for (sub, ssrc) in byes {
            self.send_bye(sub, ssrc);
        }
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
                self.controls.push(Control {
                    from: h,
                    dest,
                    data: buf,
                });
                true
            }
            None => {
                self.recycle(buf);
                false
            }
        }
    }

    fn send_bye(&mut self, h: Handle, ssrc: u32) {
        self.send_rtcp(h, |_, buf| rtcp::write_bye(buf, &[ssrc]));
    }

    fn session(&self, h: Handle) -> Option<&Session> {
        self.sessions.get(h as usize).and_then(Option::as_ref)
    }

    fn session_mut(&mut self, h: Handle) -> Option<&mut Session> {
        self.sessions.get_mut(h as usize).and_then(Option::as_mut)
    }

    pub fn session_count(&self) -> usize {
        self.by_id.len()
    }

    /// Counts a drop against the session with id `session`, if it exists.
    pub fn count_drop_by_id(&mut self, session: u64, reason: DropReason) {
        if let Some(&h) = self.by_id.get(&session) {
            self.count_drop(h, reason);
        }
    }

    /// Counts what publisher `session`'s bridge to RTMP did with gaps in
    /// its video: filled (reordered, or resent on our NACK), given up on.
    pub fn count_bridge_gaps(&mut self, session: u64, filled: u64, given_up: u64) {
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

    /// One datagram arrived on session `h`'s port. Returns the plaintext RTP
    /// packet to fan out, if it is one; RTCP and bad packets return `None`
    /// (bad ones counted by reason).
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        h: Handle,
        src: SocketAddrV4,
        buf: &mut [u8],
    ) -> Option<Inbound> {
        let s = self.sessions.get_mut(h as usize)?.as_mut()?;
        let result = match &mut s.role {
            Role::Ingest(ing) => Self::ingest_datagram(now, ing, &mut s.srtp, src, buf),
            Role::Egress(_) => {
                // Receiver reports from the egress peer: counted, not forwarded.
                Err(None)
            }
            Role::Webrtc(w) => {
                if self.scratch.len() < 1500 {
                    self.scratch.resize(1500, 0);
                }
                let room = s.room;
                let ev = w.peer.on_datagram(now, src, buf, &mut self.scratch);
                let session = w.peer.spec.session;
                match ev {
                    Ok(PeerEvent::Media {
                        kind,
                        len,
                        seq_no,
                        timestamp,
                        ssrc,
                        level,
                        lost_before,
                    }) => Ok(Inbound {
                        room,
                        ingest: session,
                        participant: NOBODY,
                        key: 0,
                        level,
                        kind,
                        len,
                        seq_no,
                        timestamp,
                        ssrc,
                        lost_before,
                    }),
                    Ok(PeerEvent::Reply { len, start_dtls }) => {
                        let mut data = self.pool.pop().unwrap_or_default();
                        data.clear();
                        data.extend_from_slice(&self.scratch[..len]);
                        self.controls.push(Control {
                            from: h,
                            dest: src,
                            data,
                        });
                        if start_dtls {
                            self.dtls_starts.push(session);
                        }
                        Err(None)
                    }
                    Ok(PeerEvent::Dtls) => {
                        self.dtls_in.push((session, buf.to_vec()));
                        Err(None)
                    }
                    Ok(PeerEvent::Rtcp(n)) => {
                        let fb = &mut self.feedback;
                        fb.clear();
                        rtcp::walk(&buf[..n], |f| fb.push(f));
                        s.stats.packets += 1;
                        s.stats.bytes += buf.len() as u64;
                        s.dirty = true;
                        self.on_feedback(now, h);
                        return None;
                    }
                    Ok(PeerEvent::Consumed) => Err(None),
                    Err(reason) => Err(Some(reason)),
                }
            }
        };
        match result {
            Ok(inbound) if inbound.len > crate::rtp::MAX_PACKET => {
                // Bounded here, where packets enter: send slots, the NACK
                // cache and the RTMP bridge all rely on it.
                s.stats.drops[DropReason::Oversize as usize] += 1;
                s.dirty = true;
                None
            }
            Ok(inbound) => {
                s.stats.packets += 1;
                s.stats.bytes += buf.len() as u64;
                s.dirty = true;
                let feedback = matches!(&s.role, Role::Webrtc(w) if w.peer.feedback_due(now));
                let inbound = Inbound {
                    room: s.room,
                    participant: s.pid,
                    key: s.key,
                    ..inbound
                };
                if feedback {
                    // At most every 100 ms per publisher: never per packet.
                    self.send_rtcp(h, |peer, out| peer.write_feedback(now, out));
                }
                Some(inbound)
            }
            Err(Some(reason)) => {
                s.stats.drops[reason as usize] += 1;
                s.dirty = true;
                None
            }
            Err(None) => {
                s.stats.packets += 1;
                s.stats.bytes += buf.len() as u64;
                s.dirty = true;
                None
            }
        }
    }

    /// `Err(Some(reason))` drops, `Err(None)` consumes (RTCP).
    fn ingest_datagram(
        now: Instant,
        ing: &mut Ingest,
        srtp: &mut Option<SrtpContext>,
        src: SocketAddrV4,
        buf: &mut [u8],
    ) -> Result<Inbound, Option<DropReason>> {
        if buf.len() < 12 || buf[0] >> 6 != 2 {
            return Err(Some(DropReason::Malformed));
        }
        let rtcp = is_rtcp(buf);
        if let Some(peer) = ing.peer {
            let silent = ing
                .last_rx
                .is_none_or(|t| now.saturating_duration_since(t) >= SOURCE_TIMEOUT);
            // Senders without rtcp-mux (ffmpeg) send RTCP from a second socket:
            // accept RTCP from the publisher's host. It is consumed, never forwarded.
            let same_host_rtcp = rtcp && peer.ip() == src.ip();
            if peer != src && !silent && !same_host_rtcp {
                return Err(Some(DropReason::UnknownSource));
            }
        }
        let srtp_err = |e: SrtpError| match e {
            SrtpError::Auth => DropReason::Auth,
            SrtpError::Replay => DropReason::Replay,
            SrtpError::Malformed | SrtpError::NoRoom => DropReason::Malformed,
        };
        let len = match srtp {
            Some(ctx) if rtcp => ctx.unprotect_rtcp(buf).map_err(|e| Some(srtp_err(e)))?,
            Some(ctx) => ctx.unprotect_rtp(buf).map_err(|e| Some(srtp_err(e)))?,
            None => buf.len(),
        };
        // Authentic (or plain and well-formed below): this source is the publisher.
        let latch = |ing: &mut Ingest| {
            ing.peer = Some(src);
            ing.last_rx = Some(now);
        };
        if rtcp {
            // RTCP never latches the publisher: ffmpeg's first datagram is an
            // SR from its separate RTCP socket.
            return Err(None);
        }
        let h = RtpHeader::parse(&buf[..len]).map_err(|_| Some(DropReason::Malformed))?;
        if h.pt != ing.spec.payload_type {
            return Err(Some(DropReason::PayloadType));
        }
        latch(ing);
        Ok(Inbound {
            room: ing.spec.room,
            ingest: ing.spec.session,
            participant: NOBODY,
            key: 0,
            level: None,
            kind: ing.spec.kind,
            len,
            seq_no: h.seq_no,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
            lost_before: 0,
        })
    }

    /// Egress handles of a room, in order.
    pub fn egresses(&self, room: u32) -> &[Handle] {
        self.rooms
            .get(&room)
            .map(|r| r.egresses.as_slice())
            .unwrap_or(&[])
    }

    /// Prepares `pkt[..inbound.len]` (a copy of the inbound plaintext) for
    /// egress `h`: rewrites the header, applies SRTP, counts it. Returns the
    /// wire length and destination, or `None` if this egress does not take it.
    pub fn prepare_egress(
        &mut self,
        now: Instant,
        h: Handle,
        inbound: &Inbound,
        pkt: &mut [u8],
    ) -> Option<(usize, SocketAddrV4)> {
        let s = self.sessions.get_mut(h as usize)?.as_mut()?;
        let source = (inbound.ingest, inbound.ssrc);
        let session = s.stats.session;
        let (len, dest) = match &mut s.role {
            Role::Egress(eg) => {
                let (track, port) = match inbound.kind {
                    MediaKind::Video => (&mut eg.video, eg.spec.dest_port),
                    MediaKind::Audio => (&mut eg.audio, eg.spec.dest_port.wrapping_add(2)),
                };
                let (seq, ts) = track.map(now, source, inbound.seq_no, inbound.timestamp, false)?;
                RtpHeader::rewrite(pkt, track.pt, seq, ts, track.ssrc);
                let len = match &mut s.srtp {
                    Some(ctx) => match ctx.protect_rtp(pkt, inbound.len) {
                        Ok(n) => n,
                        Err(_) => {
                            s.stats.drops[DropReason::Send as usize] += 1;
                            return None;
                        }
                    },
                    None => inbound.len,
                };
                let dest = SocketAddrV4::new(Ipv4Addr::from(eg.spec.dest_ip), port);
                (len, dest)
            }
            Role::Webrtc(w) => {
                // A participant never gets its own tracks; the publisher
                // itself, a player not connected yet, or no media line free.
                if inbound.participant == s.pid {
                    return None;
                }
                let dest = w.peer.destination()?;
                let created = w.peer.created;
                let (i, take) = pick_track(
                    &w.tracks,
                    inbound.kind,
                    inbound.ingest,
                    inbound.key,
                    created,
                    now,
                )?;
                let track = &mut w.tracks[i];
                if track.replay_wanted && track.source == Some(source) {
                    let new_frame = inbound.timestamp.wrapping_add(track.ts_delta) != track.last_ts;
                    if let (true, Some(cache)) = (new_frame, self.rtmp_caches.get(&inbound.ingest))
                    {
                        track.replay_wanted = false;
                        let sent = replay_gop(
                            cache,
                            track,
                            &mut w.peer,
                            inbound.seq_no,
                            &mut self.pool,
                            &mut self.controls,
                            h,
                            dest,
                            now,
                        );
                        s.stats.retransmits += sent;
                    }
                }
                let (seq, ts) = track.map(now, source, inbound.seq_no, inbound.timestamp, take)?;
                if track.source_pid != inbound.participant {
                    // The line changed hands: the room's events say so.
                    track.source_pid = inbound.participant;
                    track.source_key = inbound.key;
                    self.lines.push((session, i as u8, inbound.participant));
                }
                RtpHeader::rewrite(pkt, track.pt, seq, ts, track.ssrc);
                track.sent = track.sent.wrapping_add(1);
                track.octets = track
                    .octets
                    .wrapping_add((inbound.len.saturating_sub(12)) as u32);
                let len = match inbound.level {
                    Some(level) if track.audio_level != 0 => {
                        // Room for SRTP's trailer stays behind it.
                        let room = pkt.len().saturating_sub(MAX_TRAILER);
                        let pkt = &mut pkt[..room];
                        crate::rtp::write_audio_level(pkt, inbound.len, track.audio_level, level)
                    }
                    _ => inbound.len,
                };
                match w.peer.protect_rtp(pkt, len) {
                    Ok(n) => (n, dest),
                    Err(_) => {
                        s.stats.drops[DropReason::Send as usize] += 1;
                        return None;
                    }
                }
            }
            Role::Ingest(_) => return None,
        };
        s.stats.packets += 1;
        s.stats.bytes += len as u64;
        s.dirty = true;
        Some((len, dest))
    }

    fn control_buf(&mut self) -> Vec<u8> {
        control_buf(&mut self.pool)
    }

    /// Packets to send that are not fan-out copies. Give the buffers back
    /// with [`Self::recycle`] once copied.
    pub fn take_controls(&mut self, out: &mut Vec<Control>) {
        out.append(&mut self.controls);
    }

    pub fn recycle(&mut self, buf: Vec<u8>) {
        if self.pool.len() < 256 {
            self.pool.push(buf);
        }
    }

    /// DTLS datagrams received since the last call, for the DTLS thread.
    pub fn take_dtls(&mut self, out: &mut Vec<(u64, Vec<u8>)>) {
        out.append(&mut self.dtls_in);
    }

    /// Sessions whose DTLS client may send its ClientHello now (their
    /// peer's address became known since the last call).
    pub fn take_dtls_starts(&mut self, out: &mut Vec<u64>) {
        out.append(&mut self.dtls_starts);
    }

    /// Participants that stopped publishing since the last call: (room, pid).
    pub fn take_unpublished(&mut self, out: &mut Vec<(u32, Pid)>) {
        out.append(&mut self.unpublished);
    }

    /// Player lines that changed hands since the last call: (session, line, pid).
    pub fn take_lines(&mut self, out: &mut Vec<(u64, u8, Pid)>) {
        out.append(&mut self.lines);
    }

    /// WebRTC players whose DTLS finished since the last call.
    pub fn take_joined(&mut self, out: &mut Vec<(u32, Handle)>) {
        out.append(&mut self.joined);
    }

    /// WebRTC sessions removed since the last call, however they ended.
    pub fn take_closed_webrtc(&mut self, out: &mut Vec<u64>) {
        out.append(&mut self.closed_webrtc);
    }

    /// Sessions the router ended by itself since the last call (already
    /// removed: close their sockets and tell the controlplane).
    pub fn take_ended(&mut self, out: &mut Vec<Ended>) {
        out.append(&mut self.ended);
    }

    /// Player `h`'s line `i` lost the picture of an RTMP publisher (which
    /// cannot be asked for a keyframe): its GOP is replayed at the next
    /// frame boundary, at most once per [`KEYFRAME_REQUEST_INTERVAL`].
    fn want_replay(&mut self, now: Instant, h: Handle, i: usize) {
        let Some(t) = self.webrtc_mut(h).and_then(|w| w.tracks.get_mut(i)) else {
            return;
        };
        let recent = t
            .last_replay
            .is_some_and(|at| now.saturating_duration_since(at) < KEYFRAME_REQUEST_INTERVAL);
        if t.kind != MediaKind::Video || t.replay_wanted || recent {
            return;
        }
        t.replay_wanted = true;
    }

    fn webrtc_mut(&mut self, h: Handle) -> Option<&mut WebrtcSession> {
        match &mut self.session_mut(h)?.role {
            Role::Webrtc(w) => Some(w),
            _ => None,
        }
    }

    /// Where a DTLS record for `session` goes: its socket and verified peer.
    pub fn dtls_destination(&self, session: u64) -> Option<(Handle, SocketAddrV4)> {
        let h = *self.by_id.get(&session)?;
        match &self.session(h)?.role {
            Role::Webrtc(w) => Some((h, w.peer.ice.remote()?)),
            _ => None,
        }
    }

    /// The DTLS handshake of `session` finished: media may flow. A new
    /// subscriber asks the room's publishers for a keyframe so its first
    /// picture comes at once rather than at the next periodic keyframe.
    pub fn install_keys(&mut self, now: Instant, session: u64, rx: &SrtpKey, tx: &SrtpKey) {
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
        if let Some(room) = self.session(h).map(|s| s.room) {
            self.joined.push((room, h));
        }
        let room = self.session(h).map(|s| s.room);
        let publishers: Vec<Handle> = room
            .and_then(|r| self.rooms.get(&r))
            .map(|r| r.ingests.clone())
            .unwrap_or_default();
        for p in publishers {
            self.request_keyframe(now, p);
        }
    }

    /// Ends `session` (DTLS failed); returns its handle for the shard to close.
    pub fn end_session(&mut self, session: u64, reason: u16) {
        if let Some(handle) = self.remove_session(session) {
            self.ended.push(Ended {
                session,
                handle,
                reason,
            });
        }
    }

    /// The latest RTCP sender report (NTP, RTP time) of WebRTC publisher
    /// `session`'s stream `ssrc`, if it sent one.
    pub fn publisher_sr(&self, session: u64, ssrc: u32) -> Option<(u64, u32)> {
        let h = *self.by_id.get(&session)?;
        let Role::Webrtc(w) = &self.session(h)?.role else {
            return None;
        };
        [&w.peer.video_in, &w.peer.audio_in]
            .into_iter()
            .find(|s| s.ssrc == ssrc)
            .and_then(|s| s.sr)
            .map(|(ntp, rtp, _)| (ntp, rtp))
    }

    /// Asks WebRTC publisher `session` to resend its video packet `seq`
    /// (a player or the bridge to RTMP is waiting for it; an RTMP
    /// publisher's virtual ingest is no session here, and cannot be asked).
    pub fn nack_publisher(&mut self, session: u64, seq: u16) {
        let Some(&h) = self.by_id.get(&session) else {
            return;
        };
        self.send_rtcp(h, |peer, buf| {
            if !peer.is_publisher() {
                return 0;
            }
            rtcp::write_nack(buf, peer.rtcp_ssrc(), peer.video_in.ssrc, seq, 0)
        });
    }

    /// Asks the publisher with session id `session` for a keyframe (rate
    /// limited; only WebRTC publishers can be asked).
    pub fn request_keyframe_by_id(&mut self, now: Instant, session: u64) {
        if let Some(&h) = self.by_id.get(&session) {
            self.request_keyframe(now, h);
        }
    }

    /// Sends publisher `p` a PLI for its video, at most once per
    /// [`KEYFRAME_REQUEST_INTERVAL`]. RTP ingests (no RTCP path back) are skipped.
    fn request_keyframe(&mut self, now: Instant, p: Handle) {
        let sent = self.send_rtcp(p, |peer, buf| {
            let recent = peer
                .last_keyframe_request
                .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL);
            if peer.video_in.ssrc == 0 || recent {
                return 0;
            }
            peer.last_keyframe_request = Some(now);
            rtcp::write_pli(buf, peer.rtcp_ssrc(), peer.video_in.ssrc)
        });
        if sent {
            if let Some(s) = self.session_mut(p) {
                s.stats.keyframe_requests += 1;
                s.dirty = true;
            }
        }
    }

    /// Acts on the RTCP items in `self.feedback` that session `h` sent.
    fn on_feedback(&mut self, now: Instant, h: Handle) {
        let items = std::mem::take(&mut self.feedback);
        for f in &items {
            match *f {
                Feedback::KeyframeRequest { media_ssrc } => {
                    let Some((src, i)) = self.track_source_id(h, media_ssrc) else {
                        continue;
                    };
                    if let Some(s) = self.session_mut(h) {
                        s.stats.keyframe_requests += 1;
                        s.dirty = true;
                    }
                    if self.rtmp_caches.contains_key(&src) {
                        self.want_replay(now, h, i);
                    } else if let Some(&p) = self.by_id.get(&src) {
                        self.request_keyframe(now, p);
                    }
                }
                Feedback::Nack {
                    media_ssrc,
                    pid,
                    blp,
                } => {
                    for seq in Feedback::nacked(pid, blp) {
                        let rate = self.nack_per_s;
                        let Some(w) = self.webrtc_mut(h) else { break };
                        if !w.nack_budget.take(now, rate) {
                            self.count_drop(h, DropReason::RateLimited);
                            continue;
                        }
                        self.retransmit(h, media_ssrc, seq);
                    }
                }
                Feedback::SenderReport(sr) => {
                    if let Some(w) = self.webrtc_mut(h) {
                        w.peer.note_sender_report(now, &sr);
                    }
                }
                Feedback::Bye => {}
            }
        }
        self.feedback = items;
    }

    /// Publisher `source`'s cached video packet with sequence number
    /// `seq`: a WebRTC publisher's, or an RTMP publisher's.
    fn cached(&self, source: u64, seq: u16) -> Option<&[u8]> {
        if let Some(cache) = self.rtmp_caches.get(&source) {
            return cache.packets.get(seq);
        }
        match &self.session(*self.by_id.get(&source)?)?.role {
            Role::Webrtc(w) => w.peer.cache.as_ref()?.get(seq),
            _ => None,
        }
    }

    /// The source id (a session, or an RTMP publisher's virtual ingest) of
    /// subscriber `h`'s track with our SSRC `media_ssrc` (its first video
    /// track if no SSRC matches), and the track's index.
    fn track_source_id(&self, h: Handle, media_ssrc: u32) -> Option<(u64, usize)> {
        let Role::Webrtc(w) = &self.session(h)?.role else {
            return None;
        };
        let i = w
            .tracks
            .iter()
            .position(|t| t.ssrc == media_ssrc)
            .or_else(|| w.tracks.iter().position(|t| t.kind == MediaKind::Video))?;
        let (id, _) = w.tracks[i].source?;
        Some((id, i))
    }

    /// Answers a subscriber's NACK for its sequence number `out_seq` on our
    /// SSRC `media_ssrc` from the publisher's cache (a WebRTC publisher's,
    /// or an RTMP publisher's RTP); a miss becomes a NACK to a WebRTC
    /// publisher.
    fn retransmit(&mut self, h: Handle, media_ssrc: u32, out_seq: u16) {
        let Some((src, i)) = self.track_source_id(h, media_ssrc) else {
            return;
        };
        let Some(Role::Webrtc(sub)) = self.session(h).map(|s| &s.role) else {
            return;
        };
        let t = &sub.tracks[i];
        if t.kind != MediaKind::Video {
            return;
        }
        if t.replayed_until
            .is_some_and(|end| (out_seq.wrapping_sub(end) as i16) < 0)
        {
            return; // before or in a GOP replay: the mapping moved on
        }
        let (seq_delta, ts_delta, pt, ssrc, rtx_pt) =
            (t.seq_delta, t.ts_delta, t.pt, t.ssrc, t.rtx_pt);
        let in_seq = out_seq.wrapping_sub(seq_delta);
        if self.cached(src, in_seq).is_none() {
            self.nack_publisher(src, in_seq);
            return;
        }
        let mut buf = self.control_buf();
        let Some(pkt) = self.cached(src, in_seq) else {
            return;
        };
        let Ok(hd) = RtpHeader::parse(pkt) else {
            return;
        };
        let mut len = pkt.len();
        buf[..len].copy_from_slice(pkt);
        let Some(s) = self.session_mut(h) else { return };
        let Role::Webrtc(w) = &mut s.role else { return };
        let Some(dest) = w.peer.destination() else {
            return;
        };
        let ts = hd.timestamp.wrapping_add(ts_delta);
        if rtx_pt != 0 {
            // RFC 4588: on the line's RTX stream, its own sequence, the
            // original sequence number first in the payload.
            let t = &mut w.tracks[i];
            buf.copy_within(hd.len..len, hd.len + 2);
            buf[hd.len..hd.len + 2].copy_from_slice(&out_seq.to_be_bytes());
            len += 2;
            let rtx_ssrc = gateway_ring::msg::rtx_ssrc(ssrc);
            RtpHeader::rewrite(&mut buf, rtx_pt, t.rtx_seq, ts, rtx_ssrc);
            t.rtx_seq = t.rtx_seq.wrapping_add(1);
        } else {
            RtpHeader::rewrite(&mut buf, pt, out_seq, ts, ssrc);
        }
        let Ok(n) = w.peer.protect_rtp(&mut buf, len) else {
            return;
        };
        buf.truncate(n);
        s.stats.retransmits += 1;
        s.dirty = true;
        self.controls.push(Control {
            from: h,
            dest,
            data: buf,
        });
    }

    /// Periodic work: consent freshness (RFC 7675) and RTCP reports. Call a
    /// few times a second; `ntp_now` is the wall clock in NTP format (RFC
    /// 3550 §4), for sender reports.
    pub fn tick(&mut self, now: Instant, ntp_now: u64) {
        let mut expired = Vec::new();
        for h in 0..self.sessions.len() as Handle {
            let Some(Role::Webrtc(w)) = self.session(h).map(|s| &s.role) else {
                continue;
            };
            if w.peer.ice.consent_expired(now, w.peer.created) {
                expired.push(w.peer.spec.session);
                continue;
            }
            self.send_reports(now, ntp_now, h);
        }
        for session in expired {
            self.end_session(session, END_CONSENT);
        }
        // An RTMP publisher gone quiet for a while: its cache goes.
        self.rtmp_caches
            .retain(|_, c| now.saturating_duration_since(c.last) < RTMP_CACHE_IDLE);
    }

    /// One compound a second per peer: receiver reports to a publisher, sender
    /// reports (mapped from the publisher's) to a subscriber.
    fn send_reports(&mut self, now: Instant, ntp_now: u64, h: Handle) {
        // Sender reports map RTP time to NTP: from the publisher's own SR
        // when it sends them (WebRTC), else from our clock at the track's
        // last packet (RTP ingests, RTMP publishers).
        let mut srs: Vec<SenderInfo> = Vec::new();
        if let Some(Role::Webrtc(w)) = self.session(h).map(|s| &s.role) {
            if !w.peer.is_publisher() {
                for t in &w.tracks {
                    let Some((pid, in_ssrc)) = t.source else {
                        continue;
                    };
                    let publisher_sr = self.by_id.get(&pid).and_then(|&ph| {
                        match self.session(ph).map(|s| &s.role) {
                            Some(Role::Webrtc(p)) => [&p.peer.video_in, &p.peer.audio_in]
                                .into_iter()
                                .find(|s| s.ssrc == in_ssrc)
                                .and_then(|s| s.sr),
                            _ => None,
                        }
                    });
                    let (ntp, rtp_ts) = match (publisher_sr, t.last_at) {
                        (Some((ntp, rtp_ts, at)), _) => {
                            let dt = now.saturating_duration_since(at).as_secs_f64();
                            let ticks = (dt * t.clock_rate as f64) as u32;
                            (
                                ntp.wrapping_add((dt * 4_294_967_296.0) as u64),
                                rtp_ts.wrapping_add(ticks).wrapping_add(t.ts_delta),
                            )
                        }
                        (None, Some(at)) => {
                            let dt = now.saturating_duration_since(at).as_secs_f64();
                            let ticks = (dt * t.clock_rate as f64) as u32;
                            (ntp_now, t.last_ts.wrapping_add(ticks))
                        }
                        (None, None) => continue,
                    };
                    srs.push(SenderInfo {
                        ssrc: t.ssrc,
                        ntp,
                        rtp_ts,
                        packets: t.sent,
                        octets: t.octets,
                    });
                }
            }
        }
        self.send_rtcp(h, |peer, buf| {
            if peer
                .last_report
                .is_some_and(|t| now.saturating_duration_since(t) < REPORT_INTERVAL)
            {
                return 0;
            }
            peer.last_report = Some(now);
            if peer.is_publisher() {
                let blocks: Vec<_> = [peer.video_in.report(now), peer.audio_in.report(now)]
                    .into_iter()
                    .flatten()
                    .collect();
                return rtcp::write_rr(buf, peer.rtcp_ssrc(), &blocks);
            }
            let mut n = 0;
            for sr in &srs {
                n += rtcp::write_sr(&mut buf[n..], sr);
            }
            if n == 0 {
                n = rtcp::write_rr(buf, peer.rtcp_ssrc(), &[]);
            }
            n
        });
    }

    /// Appends the counters of every session that changed since the last call
    /// (at most `max`), clearing their dirty marks.
    pub fn take_dirty_stats(&mut self, out: &mut Vec<SessionStats>, max: usize) {
        for s in self.sessions.iter_mut().flatten() {
            if out.len() >= max {
                break;
            }
            if s.dirty {
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

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn room(r: &mut Router) {
        assert_eq!(
            r.add_room(RoomSpec {
                room: 1,
                name: "demo".into()
            }),
            Outcome::Ok
        );
    }

    pub(super) fn ingest(id: u64, kind: MediaKind, pt: u8) -> IngestSpec {
        IngestSpec {
            session: id,
            room: 1,
            port: 40000 + id as u16,
            kind,
            payload_type: pt,
            clock_rate: 90_000,
            srtp: None,
            created_ms: 0,
            participant: format!("cam{id}"),
        }
    }

    fn egress(id: u64) -> EgressSpec {
        EgressSpec {
            session: id,
            room: 1,
            port: 41000 + id as u16,
            dest_ip: [127, 0, 0, 1],
            dest_port: 5004,
            srtp: None,
            created_ms: 0,
        }
    }

    fn rtp(pt: u8, seq: u16, ts: u32, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(b"payload");
        p
    }

    fn addr(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
    }

    #[test]
    fn sessions_need_a_room_and_unique_ids() {
        let mut r = Router::default();
        assert_eq!(
            r.add_ingest(ingest(1, MediaKind::Video, 96)),
            Err(Outcome::NotFound)
        );
        room(&mut r);
        assert_eq!(
            r.add_room(RoomSpec {
                room: 1,
                name: "again".into()
            }),
            Outcome::Exists
        );
        let h = r.add_ingest(ingest(1, MediaKind::Video, 96)).unwrap();
        assert_eq!(r.add_egress(egress(1)), Err(Outcome::Exists));
        assert_eq!(r.remove_session(1), Some(h));
        assert_eq!(r.remove_session(1), None);
        assert_eq!(r.session_count(), 0);
    }

    #[test]
    fn forwards_with_rewrite_and_counts_drops() {
        let mut r = Router::default();
        room(&mut r);
        let i = r.add_ingest(ingest(1, MediaKind::Video, 96)).unwrap();
        let e = r.add_egress(egress(2)).unwrap();
        let t0 = Instant::now();
        let mut p = rtp(96, 100, 9000, 0xabc);
        let inb = r.handle_datagram(t0, i, addr(6000), &mut p).unwrap();
        assert_eq!(inb.kind, MediaKind::Video);
        let mut out = p.clone();
        let (n, dest) = r.prepare_egress(t0, e, &inb, &mut out).unwrap();
        assert_eq!(n, p.len());
        assert_eq!(dest, addr(5004));
        let h = RtpHeader::parse(&out).unwrap();
        assert_eq!((h.pt, h.seq_no, h.timestamp), (EGRESS_VIDEO_PT, 100, 9000));
        assert_ne!(h.ssrc, 0xabc);

        // Another source while the publisher is live: dropped as unknown.
        assert!(r
            .handle_datagram(t0, i, addr(6666), &mut rtp(96, 101, 9000, 0xabc))
            .is_none());
        // Wrong payload type and junk.
        assert!(r
            .handle_datagram(t0, i, addr(6000), &mut rtp(97, 101, 9000, 0xabc))
            .is_none());
        assert!(r
            .handle_datagram(t0, i, addr(6000), &mut [1, 2, 3])
            .is_none());
        let mut stats = Vec::new();
        r.take_dirty_stats(&mut stats, 10);
        let s = stats.iter().find(|s| s.session == 1).unwrap();
        assert_eq!(s.packets, 1);
        assert_eq!(s.drops[DropReason::UnknownSource as usize], 1);
        assert_eq!(s.drops[DropReason::PayloadType as usize], 1);
        assert_eq!(s.drops[DropReason::Malformed as usize], 1);
        let s = stats.iter().find(|s| s.session == 2).unwrap();
        assert_eq!(s.packets, 1);
    }

    #[test]
    fn rtcp_from_a_second_socket_neither_latches_nor_drops() {
        let mut r = Router::default();
        room(&mut r);
        let i = r.add_ingest(ingest(1, MediaKind::Video, 96)).unwrap();
        let t0 = Instant::now();
        let mut sr = vec![0x80, 200, 0, 6, 0, 0, 0, 1];
        sr.extend_from_slice(&[0; 20]);
        assert!(r
            .handle_datagram(t0, i, addr(6001), &mut sr.clone())
            .is_none());
        assert!(r
            .handle_datagram(t0, i, addr(6000), &mut rtp(96, 1, 0, 7))
            .is_some());
        assert!(r.handle_datagram(t0, i, addr(6001), &mut sr).is_none());
        let mut stats = Vec::new();
        r.take_dirty_stats(&mut stats, 10);
        assert_eq!(stats[0].drops, [0; DropReason::COUNT]);
        assert_eq!(stats[0].packets, 3);
    }

    #[test]
    fn publisher_restart_continues_the_output_stream() {
        let mut r = Router::default();
        room(&mut r);
        let i = r.add_ingest(ingest(1, MediaKind::Video, 96)).unwrap();
        let e = r.add_egress(egress(2)).unwrap();
        let t0 = Instant::now();
        let mut last = (0u16, 0u32);
        for k in 0..3u16 {
            let mut p = rtp(96, 500 + k, 1000 + 3000 * k as u32, 0x1);
            let inb = r.handle_datagram(t0, i, addr(6000), &mut p).unwrap();
            r.prepare_egress(t0, e, &inb, &mut p).unwrap();
            let h = RtpHeader::parse(&p).unwrap();
            last = (h.seq_no, h.timestamp);
        }
        // The publisher restarts: new source port, SSRC, sequence and timestamp base, 2 s later.
        let t1 = t0 + Duration::from_secs(2);
        let mut p = rtp(96, 7, 123, 0x2);
        let inb = r
            .handle_datagram(t1, i, addr(7000), &mut p)
            .expect("new source latched after silence");
        r.prepare_egress(t1, e, &inb, &mut p).unwrap();
        let h = RtpHeader::parse(&p).unwrap();
        assert_eq!(h.seq_no, last.0.wrapping_add(1));
        let advanced = h.timestamp.wrapping_sub(last.1);
        assert!(
            (170_000..=190_000).contains(&advanced),
            "timestamp advanced by ~2 s: {advanced}"
        );
    }

    #[test]
    fn removing_a_room_ends_its_sessions() {
        let mut r = Router::default();
        room(&mut r);
        r.add_ingest(ingest(1, MediaKind::Audio, 111)).unwrap();
        r.add_egress(egress(2)).unwrap();
        assert_eq!(r.remove_room(1).unwrap().len(), 2);
        assert_eq!(r.session_count(), 0);
        assert!(r.remove_room(1).is_none());
    }

    /// A packet over `rtp::MAX_PACKET` is counted, never forwarded: the
    /// shard's send slots are sized on the bound.
    #[test]
    fn an_oversize_packet_is_dropped_where_it_enters() {
        let mut r = Router::default();
        room(&mut r);
        let h = r.add_ingest(ingest(1, MediaKind::Video, 96)).unwrap();
        let mut pkt = rtp(96, 1, 0, 0x1234);
        pkt.resize(crate::rtp::MAX_PACKET + 1, 0);
        assert!(r
            .handle_datagram(Instant::now(), h, addr(7000), &mut pkt)
            .is_none());
        pkt.truncate(crate::rtp::MAX_PACKET);
        assert!(r
            .handle_datagram(Instant::now(), h, addr(7000), &mut pkt)
            .is_some());
        let mut stats = Vec::new();
        r.take_dirty_stats(&mut stats, 10);
        assert_eq!(stats[0].drops[DropReason::Oversize as usize], 1);
        assert_eq!(stats[0].packets, 1);
    }
}

/// WebRTC sessions in the router, driven as a shard would: a real STUN
/// check verifies the peer, keys are installed as the DTLS thread would.
#[cfg(test)]
mod webrtc_tests {
    use super::tests::{ingest, room};
    use super::*;
    use gateway_ring::msg::{participant_key, DtlsRole, SrtpSuite, TrackSpec};

    // The same WebRTC session spec and ICE check the fuzz harness uses.
    use crate::fuzz::{check, webrtc as spec};

    fn keys(seed: u8) -> SrtpKey {
        SrtpKey::new(SrtpSuite::AeadAes128Gcm, &[seed; 28]).unwrap()
    }

    fn srtp(ctx: &mut SrtpContext, pt: u8, seq: u16, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, pt];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0x65; 100]);
        let len = p.len();
        p.resize(len + MAX_TRAILER, 0);
        let n = ctx.protect_rtp(&mut p, len).unwrap();
        p.truncate(n);
        p
    }

    fn addr(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
    }

    /// A router with room 1 ("w"), and the test's start time.
    fn room_w() -> (Router, Instant) {
        let mut r = Router::default();
        r.add_room(RoomSpec {
            room: 1,
            name: "w".into(),
        });
        (r, Instant::now())
    }

    /// A publisher and a subscriber, both verified and keyed. Returns the
    /// router, their handles, and the publisher's client-side SRTP context.
    fn connected() -> (Router, Handle, Handle, SrtpContext, Instant) {
        let (mut r, t0) = room_w();
        let p = r.add_webrtc(t0, spec(1, Direction::Publish)).unwrap();
        let s = r.add_webrtc(t0, spec(2, Direction::Subscribe)).unwrap();
        for (h, port) in [(p, 5001), (s, 5002)] {
            let mut c = check(if h == p { 1 } else { 2 });
            assert!(r.handle_datagram(t0, h, addr(port), &mut c).is_none());
        }
        let mut out = Vec::new();
        r.take_controls(&mut out);
        assert_eq!(out.len(), 2, "both checks answered");
        // Client → server keys are the client's "tx"; the server receives with them.
        r.install_keys(t0, 1, &keys(1), &keys(2));
        r.install_keys(t0, 2, &keys(3), &keys(4));
        (r, p, s, SrtpContext::new(&keys(1)), t0)
    }

    /// Video packets `seqs` from the publisher, each fanned out to the subscriber.
    fn forward(
        r: &mut Router,
        (p, s): (Handle, Handle),
        client: &mut SrtpContext,
        t0: Instant,
        seqs: std::ops::Range<u16>,
    ) {
        for seq in seqs {
            let mut pkt = srtp(client, 102, seq, 0xabc);
            let inb = r.handle_datagram(t0, p, addr(5001), &mut pkt).unwrap();
            let mut out = vec![0u8; 1600];
            out[..inb.len].copy_from_slice(&pkt[..inb.len]);
            r.prepare_egress(t0, s, &inb, &mut out).unwrap();
        }
    }

    #[test]
    fn stun_with_wrong_credentials_gets_no_answer() {
        let (mut r, t0) = room_w();
        let h = r.add_webrtc(t0, spec(1, Direction::Publish)).unwrap();
        let mut wrong_user = check(9);
        let mut tampered = check(1);
        let n = tampered.len();
        tampered[n - 20] ^= 1; // inside the MESSAGE-INTEGRITY value
        for c in [&mut wrong_user, &mut tampered] {
            assert!(r.handle_datagram(t0, h, addr(5001), c).is_none());
        }
        let mut out = Vec::new();
        r.take_controls(&mut out);
        assert!(out.is_empty(), "no answer to a stranger");
        let mut stats = Vec::new();
        r.take_dirty_stats(&mut stats, 10);
        assert_eq!(stats[0].drops[DropReason::Ice as usize], 2);
        // Media and DTLS from the unverified address are refused too.
        let mut media = srtp(&mut SrtpContext::new(&keys(1)), 102, 1, 7);
        assert!(r.handle_datagram(t0, h, addr(5001), &mut media).is_none());
        assert!(r
            .handle_datagram(t0, h, addr(5001), &mut [22, 0xfe, 0xfd, 0])
            .is_none());
        let mut dtls = Vec::new();
        r.take_dtls(&mut dtls);
        assert!(dtls.is_empty());
    }

    /// Where we are the DTLS client, the peer's first valid check starts
    /// the handshake, once, when its address is there to send to; a
    /// server-role session never starts one.
    #[test]
    fn a_dtls_client_starts_at_its_peers_first_valid_check() {
        let (mut r, t0) = room_w();
        let client_role = WebrtcSpec {
            dtls_role: DtlsRole::Client,
            ..spec(1, Direction::Publish)
        };
        let c = r.add_webrtc(t0, client_role).unwrap();
        let s = r.add_webrtc(t0, spec(2, Direction::Subscribe)).unwrap();
        let mut starts = Vec::new();
        let mut tampered = check(1);
        let n = tampered.len();
        tampered[n - 20] ^= 1; // inside the MESSAGE-INTEGRITY value
        assert!(r
            .handle_datagram(t0, c, addr(5001), &mut tampered)
            .is_none());
        r.take_dtls_starts(&mut starts);
        assert!(starts.is_empty(), "a stranger starts nothing");
        assert!(r.dtls_destination(1).is_none());
        r.handle_datagram(t0, c, addr(5001), &mut check(1));
        r.take_dtls_starts(&mut starts);
        assert_eq!(starts, [1]);
        assert_eq!(r.dtls_destination(1), Some((c, addr(5001))));
        // Later checks (consent, another address) start nothing again.
        r.handle_datagram(t0, c, addr(5001), &mut check(1));
        r.handle_datagram(t0, c, addr(5003), &mut check(1));
        r.handle_datagram(t0, s, addr(5002), &mut check(2));
        starts.clear();
        r.take_dtls_starts(&mut starts);
        assert!(starts.is_empty(), "{starts:?}");
        let mut out = Vec::new();
        r.take_controls(&mut out);
        assert_eq!(out.len(), 4, "every valid check answered");
    }

    #[test]
    fn publisher_media_fans_out_and_srtp_forgeries_are_counted() {
        let (mut r, p, s, mut client, t0) = connected();
        let mut pkt = srtp(&mut client, 102, 10, 0xabc);
        let inb = r.handle_datagram(t0, p, addr(5001), &mut pkt).unwrap();
        assert_eq!(inb.kind, MediaKind::Video);
        let mut out = vec![0u8; 1600];
        out[..inb.len].copy_from_slice(&pkt[..inb.len]);
        let (n, dest) = r.prepare_egress(t0, s, &inb, &mut out).unwrap();
        assert_eq!(dest, addr(5002));
        // The subscriber's side decrypts with the server's send key.
        let mut sub_rx = SrtpContext::new(&keys(4));
        let m = sub_rx.unprotect_rtp(&mut out[..n]).unwrap();
        let h = RtpHeader::parse(&out[..m]).unwrap();
        assert_eq!((h.pt, h.ssrc), (102, 0x5002));

        // Wrong key, a replay, and a stranger: counted, nothing forwarded.
        let mut forged = srtp(&mut SrtpContext::new(&keys(9)), 102, 11, 0xabc);
        assert!(r.handle_datagram(t0, p, addr(5001), &mut forged).is_none());
        let mut again = srtp(&mut SrtpContext::new(&keys(1)), 102, 10, 0xabc);
        assert!(r.handle_datagram(t0, p, addr(5001), &mut again).is_none());
        let mut stranger = srtp(&mut client, 102, 12, 0xabc);
        assert!(r
            .handle_datagram(t0, p, addr(6666), &mut stranger)
            .is_none());
        // The real stream continues.
        let mut next = srtp(&mut client, 102, 13, 0xabc);
        assert!(r.handle_datagram(t0, p, addr(5001), &mut next).is_some());
        let mut stats = Vec::new();
        r.take_dirty_stats(&mut stats, 10);
        let pub_stats = stats.iter().find(|x| x.session == 1).unwrap();
        assert_eq!(pub_stats.drops[DropReason::Auth as usize], 1);
        assert_eq!(pub_stats.drops[DropReason::Replay as usize], 1);
        assert_eq!(pub_stats.drops[DropReason::UnknownSource as usize], 1);
    }

    /// RTX (RFC 4588, payload type 103 `apt=102` in these specs): a resent
    /// packet comes on an SSRC and sequence of its own and goes on as the
    /// packet it resends; a padding-only probe is taken for congestion
    /// control only, not counted as a drop.
    #[test]
    fn rtx_is_unwrapped_into_the_packet_it_resends() {
        let (mut r, p, _s, mut client, t0) = connected();
        let mut first = srtp(&mut client, 102, 10, 0xabc);
        assert!(r.handle_datagram(t0, p, addr(5001), &mut first).is_some());
        let rtx = |client: &mut SrtpContext, seq: u16, body: &[u8], padding: bool| {
            let mut pkt = vec![0x80 | if padding { 0x20 } else { 0 }, 103];
            pkt.extend_from_slice(&seq.to_be_bytes());
            pkt.extend_from_slice(&27_000u32.to_be_bytes());
            pkt.extend_from_slice(&0xdefu32.to_be_bytes());
            pkt.extend_from_slice(body);
            let len = pkt.len();
            pkt.resize(len + MAX_TRAILER, 0);
            let n = client.protect_rtp(&mut pkt, len).unwrap();
            pkt.truncate(n);
            pkt
        };
        // Original sequence number 9, then the original payload.
        let mut body = vec![0, 9];
        body.extend_from_slice(&[0x65; 100]);
        let mut resent = rtx(&mut client, 500, &body, false);
        let inb = r.handle_datagram(t0, p, addr(5001), &mut resent).unwrap();
        assert_eq!(
            (inb.kind, inb.seq_no, inb.ssrc, inb.len),
            (MediaKind::Video, 9, 0xabc, 112)
        );
        let h = RtpHeader::parse(&resent[..inb.len]).unwrap();
        assert_eq!(
            (h.pt, h.seq_no, h.timestamp, h.ssrc),
            (102, 9, 27_000, 0xabc)
        );
        assert_eq!(&resent[12..inb.len], &[0x65; 100]);
        // A bandwidth probe: padding only.
        let mut probe = rtx(&mut client, 501, &[0, 0, 0, 4], true);
        assert!(r.handle_datagram(t0, p, addr(5001), &mut probe).is_none());
        let mut stats = Vec::new();
        r.take_dirty_stats(&mut stats, 10);
        let pub_stats = stats.iter().find(|x| x.session == 1).unwrap();
        assert_eq!(pub_stats.drops.iter().sum::<u64>(), 0, "{pub_stats:?}");
    }

    #[test]
    fn subscriber_nack_is_answered_from_cache_and_pli_is_rate_limited() {
        let (mut r, p, s, mut client, t0) = connected();
        forward(&mut r, (p, s), &mut client, t0, 100..110);
        let mut controls = Vec::new();
        r.take_controls(&mut controls);
        controls.clear();
        // The subscriber NACKs 103 and 105 (pid 103, blp bit 1) and sends two PLIs.
        let mut sub_tx = SrtpContext::new(&keys(3));
        let mut fb = vec![0u8; 200];
        let mut n = rtcp::write_nack(&mut fb, 9, 0x5002, 103, 0b10);
        n += rtcp::write_pli(&mut fb[n..], 9, 0x5002);
        n += rtcp::write_pli(&mut fb[n..], 9, 0x5002);
        let n = sub_tx.protect_rtcp(&mut fb, n).unwrap();
        fb.truncate(n);
        assert!(r.handle_datagram(t0, s, addr(5002), &mut fb).is_none());
        r.take_controls(&mut controls);
        let to_sub: Vec<_> = controls.iter().filter(|c| c.from == s).collect();
        let to_pub: Vec<_> = controls.iter().filter(|c| c.from == p).collect();
        assert_eq!(to_sub.len(), 2, "two retransmissions");
        // On the line's RTX stream (RFC 4588; these specs answer RTX 103):
        // its own SSRC and sequence, the original sequence number first in
        // the payload, then the original payload.
        let mut sub_rx = SrtpContext::new(&keys(4));
        let mut got = Vec::new();
        for c in &to_sub {
            let mut d = c.data.clone();
            let m = sub_rx.unprotect_rtp(&mut d).unwrap();
            let h = RtpHeader::parse(&d[..m]).unwrap();
            let osn = u16::from_be_bytes([d[h.len], d[h.len + 1]]);
            assert_eq!(&d[h.len + 2..m], &[0x65; 100][..]);
            got.push((h.pt, h.ssrc, h.seq_no, osn));
        }
        let rtx = gateway_ring::msg::rtx_ssrc(0x5002);
        assert_eq!(got, vec![(103, rtx, 0, 103), (103, rtx, 1, 105)]);
        assert_eq!(to_pub.len(), 1, "two PLIs within a second: one request");
        let mut pub_rx = SrtpContext::new(&keys(2));
        let mut d = to_pub[0].data.clone();
        let m = pub_rx.unprotect_rtcp(&mut d).unwrap();
        let mut items = Vec::new();
        rtcp::walk(&d[..m], |f| items.push(f));
        assert_eq!(items, vec![Feedback::KeyframeRequest { media_ssrc: 0xabc }]);
        // A NACK for a packet never cached goes on to the publisher.
        controls.clear();
        let mut fb = vec![0u8; 200];
        let n = rtcp::write_nack(&mut fb, 9, 0x5002, 5000, 0);
        let n = sub_tx.protect_rtcp(&mut fb, n).unwrap();
        fb.truncate(n);
        r.handle_datagram(t0, s, addr(5002), &mut fb);
        r.take_controls(&mut controls);
        assert!(controls.len() == 1 && controls[0].from == p, "{controls:?}");
    }

    /// A player whose answer took RFC 6464 audio levels gets each packet's
    /// level under its own id (the publisher's id means nothing to it); one
    /// that did not gets the publisher's block blanked, as before.
    #[test]
    fn audio_levels_reach_players_under_their_own_ids() {
        let (mut r, t0) = room_w();
        // The publisher sends levels under id 1 (these specs' audio).
        let p = r.add_webrtc(t0, spec(1, Direction::Publish)).unwrap();
        let mut with = spec(2, Direction::Subscribe);
        with.tracks[1].audio_level = 9;
        let mut without = spec(3, Direction::Subscribe);
        without.tracks[1].audio_level = 0;
        let players = [
            r.add_webrtc(t0, with).unwrap(),
            r.add_webrtc(t0, without).unwrap(),
        ];
        for (h, session) in [(p, 1), (players[0], 2), (players[1], 3)] {
            let mut c = check(session);
            r.handle_datagram(t0, h, addr(5000 + session as u16), &mut c);
            r.install_keys(
                t0,
                session,
                &keys(session as u8 * 2 - 1),
                &keys(session as u8 * 2),
            );
        }
        // Opus with a one-word block: the level, 42 (-42 dBov), under id 1.
        let mut pkt = vec![0x90, 111, 0, 7, 0, 0, 0, 9, 0, 0, 0xab, 0xc1];
        pkt.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 42, 0, 0]);
        pkt.extend_from_slice(&[0x55; 60]);
        let len = pkt.len();
        pkt.resize(len + MAX_TRAILER, 0);
        let n = SrtpContext::new(&keys(1))
            .protect_rtp(&mut pkt, len)
            .unwrap();
        pkt.truncate(n);
        let inb = r.handle_datagram(t0, p, addr(5001), &mut pkt).unwrap();
        assert_eq!((inb.kind, inb.level), (MediaKind::Audio, Some(42)));
        let mut got = Vec::new();
        for (h, key) in [(players[0], 4), (players[1], 6)] {
            let mut out = vec![0u8; 1600];
            out[..inb.len].copy_from_slice(&pkt[..inb.len]);
            let (n, _) = r.prepare_egress(t0, h, &inb, &mut out).unwrap();
            let m = SrtpContext::new(&keys(key))
                .unprotect_rtp(&mut out[..n])
                .unwrap();
            let hd = RtpHeader::parse(&out[..m]).unwrap();
            got.push((
                crate::webrtc::audio_level(&out[..hd.len], 9),
                crate::webrtc::audio_level(&out[..hd.len], 1),
                out[hd.len..m] == [0x55; 60],
            ));
        }
        assert_eq!(got, vec![(Some(42), None, true), (None, None, true)]);
    }

    /// A player's PLI for an RTMP publisher's line (which cannot be asked)
    /// is answered at the next frame boundary by replaying the cached GOP
    /// from its keyframe: numbered on from the line's last packet, stamped
    /// a tick apart per frame, and the live stream continues after it with
    /// no gap; NACKs from before the replay are not answered with the
    /// moved mapping; a second PLI within a second replays nothing.
    #[test]
    fn a_pli_for_an_rtmp_publisher_replays_its_gop() {
        let (mut r, _p, s, _client, t0) = connected();
        let mut sub_rx = SrtpContext::new(&keys(4));
        let mut sub_tx = SrtpContext::new(&keys(3));
        // SPS, IDR (frame 0); then one-packet P frames, 3000 ticks apart.
        let packet = |seq: u16, ts: u32, nal: u8| {
            let mut p = vec![0x80, 0x80 | 96];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&0x77u32.to_be_bytes());
            p.extend_from_slice(&[nal, 0xaa, 0xbb]);
            p
        };
        let mut live = |r: &mut Router, seq: u16, ts: u32, nal: u8| {
            let pkt = packet(seq, ts, nal);
            let rtp = crate::rtmp::hub::RtpFromRtmp {
                room: 1,
                pid: 77,
                key: 0,
                packet: bytes::Bytes::from(pkt.clone()),
            };
            r.cache_rtmp_video(t0, rtp.source(), &pkt);
            let inb = rtp.inbound(MediaKind::Video).unwrap();
            let mut out = vec![0u8; 1600];
            out[..pkt.len()].copy_from_slice(&pkt);
            let (n, _) = r.prepare_egress(t0, s, &inb, &mut out).unwrap();
            let m = sub_rx.unprotect_rtp(&mut out[..n]).unwrap();
            let h = RtpHeader::parse(&out[..m]).unwrap();
            (h.seq_no, h.timestamp)
        };
        let first = live(&mut r, 100, 0, 0x67);
        live(&mut r, 101, 0, 0x65);
        live(&mut r, 102, 3000, 0x41);
        let last = live(&mut r, 103, 6000, 0x41);
        let mut controls = Vec::new();
        let mut feedback = |r: &mut Router, write: &dyn Fn(&mut [u8]) -> usize| {
            let mut fb = vec![0u8; 200];
            let n = write(&mut fb);
            let n = sub_tx.protect_rtcp(&mut fb, n).unwrap();
            fb.truncate(n);
            assert!(r.handle_datagram(t0, s, addr(5002), &mut fb).is_none());
        };
        feedback(&mut r, &|b| rtcp::write_pli(b, 9, 0x5002));
        r.take_controls(&mut controls);
        assert!(
            controls.is_empty(),
            "nobody to ask, nothing yet: {controls:?}"
        );
        // The next frame: first the GOP (SPS, IDR, two P frames), then it.
        let next = live(&mut r, 104, 9000, 0x41);
        r.take_controls(&mut controls);
        let mut replay_rx = SrtpContext::new(&keys(4));
        let replayed: Vec<(u16, u32, u8)> = controls
            .drain(..)
            .map(|c| {
                let mut d = c.data;
                let m = replay_rx.unprotect_rtp(&mut d).unwrap();
                let h = RtpHeader::parse(&d[..m]).unwrap();
                (h.seq_no, h.timestamp, d[h.len])
            })
            .collect();
        let (s0, t) = last;
        assert_eq!(
            replayed,
            vec![
                (s0 + 1, t + 1, 0x67),
                (s0 + 2, t + 1, 0x65),
                (s0 + 3, t + 2, 0x41),
                (s0 + 4, t + 3, 0x41)
            ]
        );
        assert_eq!(
            next,
            (s0 + 5, first.1 + 9000),
            "the live stream goes on after it"
        );
        // A NACK from before the replay is not answered (the mapping moved);
        // one after it is.
        feedback(&mut r, &|b| rtcp::write_nack(b, 9, 0x5002, s0, 0));
        r.take_controls(&mut controls);
        assert!(controls.is_empty());
        feedback(&mut r, &|b| rtcp::write_nack(b, 9, 0x5002, s0 + 5, 0));
        r.take_controls(&mut controls);
        assert_eq!(controls.len(), 1);
        controls.clear();
        // Another PLI within the second: no second replay.
        feedback(&mut r, &|b| rtcp::write_pli(b, 9, 0x5002));
        assert_eq!(live(&mut r, 105, 12000, 0x41), (s0 + 6, first.1 + 12000));
        r.take_controls(&mut controls);
        assert!(controls.is_empty());
        let mut stats = Vec::new();
        r.take_dirty_stats(&mut stats, 10);
        let sub = stats.iter().find(|x| x.session == 2).unwrap();
        assert_eq!((sub.keyframe_requests, sub.retransmits), (2, 5));
    }

    /// A NACK storm (hundreds of NACK items per packet, many packets a
    /// second) is answered up to the player's budget; the rest is counted.
    #[test]
    fn a_nack_storm_is_answered_within_the_budget() {
        let (mut r, p, s, mut client, t0) = connected();
        forward(&mut r, (p, s), &mut client, t0, 0..100);
        let mut controls = Vec::new();
        r.take_controls(&mut controls);
        let mut sub_tx = SrtpContext::new(&keys(3));
        let budget = crate::limits::Limits::default().nack_per_s as usize;
        let mut sent = 0;
        // Each packet NACKs all 100 cached packets (pid + 16 in blp each).
        for k in 0..20 {
            let mut fb = vec![0u8; 1400];
            let mut n = 0;
            for pid in (0..100u16).step_by(17) {
                n += rtcp::write_nack(&mut fb[n..], 9, 0x5002, pid, 0xffff);
            }
            let n = sub_tx.protect_rtcp(&mut fb, n).unwrap();
            fb.truncate(n);
            let at = t0 + std::time::Duration::from_millis(k);
            r.handle_datagram(at, s, addr(5002), &mut fb);
            controls.clear();
            r.take_controls(&mut controls);
            sent += controls.iter().filter(|c| c.from == s).count();
        }
        assert!(sent <= budget + 2, "{sent} retransmissions in 20 ms");
        assert!(sent >= budget - 2, "{sent}: the burst is answered");
        let mut stats = Vec::new();
        r.take_dirty_stats(&mut stats, 10);
        let sub = stats.iter().find(|x| x.session == 2).unwrap();
        assert_eq!(sub.retransmits as usize, sent);
        assert!(sub.drops[DropReason::RateLimited as usize] as usize >= 20 * 100 - budget - 2);
    }

    /// A player that offered two video lines sees two publishers at once.
    #[test]
    fn each_publisher_gets_its_own_track_of_a_multi_line_player() {
        let (mut r, t0) = room_w();
        let mut sub = spec(3, Direction::Subscribe);
        sub.tracks.push(TrackSpec {
            kind: MediaKind::Video,
            pt: 102,
            ssrc: 0x7003,
            source: 0,
            audio_level: 0,
            twcc: 0,
            abs_send_time: 0,
            rtx_pt: 0,
        });
        let s = r.add_webrtc(t0, sub).unwrap();
        let mut c = check(3);
        r.handle_datagram(t0, s, addr(5003), &mut c);
        r.install_keys(t0, 3, &keys(3), &keys(4));
        let mut sub_rx = SrtpContext::new(&keys(4));
        let mut got = Vec::new();
        for (publisher, ssrc) in [(10u64, 0xaaa), (11, 0xbbb), (10, 0xaaa), (12, 0xccc)] {
            let inb = Inbound {
                room: 1,
                ingest: publisher,
                participant: publisher as u32 + 100,
                key: publisher as u32 + 100,
                level: None,
                kind: MediaKind::Video,
                len: 40,
                seq_no: got.len() as u16,
                timestamp: 0,
                ssrc,
                lost_before: 0,
            };
            let mut out = vec![0u8; 1600];
            out[..40].copy_from_slice(&[0x80, 102, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0].repeat(4)[..40]);
            match r.prepare_egress(t0, s, &inb, &mut out) {
                Some((n, _)) => {
                    let m = sub_rx.unprotect_rtp(&mut out[..n]).unwrap();
                    got.push(Some(RtpHeader::parse(&out[..m]).unwrap().ssrc));
                }
                None => got.push(None),
            }
        }
        // Publisher 10 on the first line, 11 on the second, 12 finds none free.
        assert_eq!(got, vec![Some(0x5003), Some(0x7003), Some(0x5003), None]);
    }

    /// A player's copy of video packet `seq` from participant `pid`, if it
    /// takes it: the SSRC (line) it went out on.
    fn offer(r: &mut Router, s: Handle, ingest: u64, pid: Pid, key: u32, seq: u16) -> Option<u32> {
        let inb = Inbound {
            room: 1,
            ingest,
            participant: pid,
            key,
            level: None,
            kind: MediaKind::Video,
            len: 40,
            seq_no: seq,
            timestamp: 0,
            ssrc: ingest as u32,
            lost_before: 0,
        };
        let mut out = vec![0u8; 1600];
        out[..12].copy_from_slice(&[0x80, 102, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let (n, _) = r.prepare_egress(Instant::now(), s, &inb, &mut out)?;
        let m = SrtpContext::new(&keys(4))
            .unprotect_rtp(&mut out[..n])
            .ok()?;
        Some(RtpHeader::parse(&out[..m]).ok()?.ssrc)
    }

    /// A keyed player of room 1 with `video_lines` video lines wanting the
    /// participants with keys `wants`, playing as `me`.
    fn player(r: &mut Router, session: u64, me: &str, wants: &[u32]) -> Handle {
        let t0 = Instant::now();
        let mut sub = spec(session, Direction::Subscribe);
        sub.participant = me.into();
        sub.tracks.retain(|t| t.kind == MediaKind::Video);
        sub.tracks[0].source = wants.first().copied().unwrap_or(0);
        for (i, &want) in wants.iter().enumerate().skip(1) {
            sub.tracks.push(TrackSpec {
                kind: MediaKind::Video,
                pt: 102,
                ssrc: 0x7000 + i as u32,
                source: want,
                audio_level: 0,
                twcc: 0,
                abs_send_time: 0,
                rtx_pt: 0,
            });
        }
        let s = r.add_webrtc(t0, sub).unwrap();
        let mut c = check(session);
        r.handle_datagram(t0, s, addr(5000 + session as u16), &mut c);
        r.install_keys(t0, session, &keys(3), &keys(4));
        s
    }

    /// A participant playing the room never receives its own tracks, and
    /// the others' come through.
    #[test]
    fn a_participant_never_receives_its_own_tracks() {
        let mut r = Router::default();
        room(&mut r);
        let mut alice = spec(1, Direction::Publish);
        alice.participant = "alice".into();
        r.add_webrtc(Instant::now(), alice).unwrap();
        let a = r.participants.find(1, "alice").unwrap();
        let s = player(&mut r, 2, "alice", &[]);
        assert_eq!(
            r.participants.find(1, "alice"),
            Some(a),
            "one participant, two sessions"
        );
        assert_eq!(offer(&mut r, s, 1, a, participant_key("alice"), 1), None);
        let bob = r.participants.join(1, "bob");
        assert_eq!(
            offer(&mut r, s, 9, bob, participant_key("bob"), 1),
            Some(0x5002)
        );
    }

    /// A name publishes each kind once: a second WHIP publisher of a live
    /// name is refused; an RTP participant's video and audio ingests are two
    /// sessions of one participant.
    #[test]
    fn a_live_name_publishes_each_kind_once() {
        let mut r = Router::default();
        room(&mut r);
        let t0 = Instant::now();
        let mut first = spec(1, Direction::Publish);
        first.participant = "alice".into();
        let mut second = spec(2, Direction::Publish);
        second.participant = "alice".into();
        r.add_webrtc(t0, first).unwrap();
        assert_eq!(r.add_webrtc(t0, second).err(), Some(Outcome::Exists));
        assert_eq!(r.session_count(), 1);
        let mut video = ingest(3, MediaKind::Video, 96);
        let mut audio = ingest(4, MediaKind::Audio, 111);
        let mut again = ingest(5, MediaKind::Video, 96);
        for s in [&mut video, &mut audio, &mut again] {
            s.participant = "cam".into();
        }
        r.add_ingest(video).unwrap();
        r.add_ingest(audio).unwrap();
        assert_eq!(r.add_ingest(again).err(), Some(Outcome::Exists));
        // Once the publisher leaves, the name publishes again.
        r.remove_session(1);
        let mut third = spec(6, Direction::Publish);
        third.participant = "alice".into();
        assert!(r.add_webrtc(t0, third).is_ok());
    }

    /// Each line carries the publisher the answer named for it (its
    /// `a=msid`), whoever sends first; lines that change hands are reported.
    #[test]
    fn lines_carry_the_publishers_the_answer_named() {
        let mut r = Router::default();
        room(&mut r);
        let (kb, kc) = (participant_key("bob"), participant_key("carol"));
        let s = player(&mut r, 2, "alice", &[kb, kc]);
        let (bob, carol, dave) = (
            r.participants.join(1, "bob"),
            r.participants.join(1, "carol"),
            r.participants.join(1, "dave"),
        );
        // Carol sends first, yet gets her own line (the second), not bob's.
        assert_eq!(offer(&mut r, s, 11, carol, kc, 1), Some(0x7001));
        assert_eq!(offer(&mut r, s, 10, bob, kb, 1), Some(0x5002));
        // Dave was named for no line: none is free.
        assert_eq!(offer(&mut r, s, 12, dave, participant_key("dave"), 1), None);
        let mut lines = Vec::new();
        r.take_lines(&mut lines);
        assert_eq!(lines, vec![(2, 1, carol), (2, 0, bob)]);
    }

    #[test]
    fn a_leaving_publisher_sends_its_subscribers_a_bye() {
        let (mut r, p, s, mut client, t0) = connected();
        let mut pkt = srtp(&mut client, 102, 1, 0xabc);
        let inb = r.handle_datagram(t0, p, addr(5001), &mut pkt).unwrap();
        let mut out = vec![0u8; 1600];
        out[..inb.len].copy_from_slice(&pkt[..inb.len]);
        r.prepare_egress(t0, s, &inb, &mut out).unwrap();
        let mut controls = Vec::new();
        r.take_controls(&mut controls);
        controls.clear();
        r.remove_session(1);
        r.take_controls(&mut controls);
        assert_eq!(controls.len(), 1);
        let mut d = controls[0].data.clone();
        let m = SrtpContext::new(&keys(4)).unprotect_rtcp(&mut d).unwrap();
        let mut items = Vec::new();
        rtcp::walk(&d[..m], |f| items.push(f));
        assert_eq!(items, vec![Feedback::Bye]);
    }

    /// A source that sends no SR of its own (RTP ingest, RTMP, or a WebRTC
    /// publisher before its first SR): players still get sender reports,
    /// mapped from our clock at the track's last packet.
    #[test]
    fn players_get_sender_reports_without_a_publisher_sr() {
        let (mut r, p, s, mut client, t0) = connected();
        let mut pkt = srtp(&mut client, 102, 1, 0xabc);
        let inb = r.handle_datagram(t0, p, addr(5001), &mut pkt).unwrap();
        let mut out = vec![0u8; 1600];
        out[..inb.len].copy_from_slice(&pkt[..inb.len]);
        r.prepare_egress(t0, s, &inb, &mut out).unwrap();
        let mut controls = Vec::new();
        r.take_controls(&mut controls);
        controls.clear();
        let ntp = 0x1234_5678_0000_0000;
        r.tick(t0 + Duration::from_millis(500), ntp);
        r.take_controls(&mut controls);
        let to_sub = controls.iter().find(|c| c.from == s).expect("an SR");
        let mut d = to_sub.data.clone();
        let m = SrtpContext::new(&keys(4)).unprotect_rtcp(&mut d).unwrap();
        let mut items = Vec::new();
        rtcp::walk(&d[..m], |f| items.push(f));
        let Some(Feedback::SenderReport(sr)) = items.first() else {
            panic!("{items:?}")
        };
        assert_eq!((sr.ssrc, sr.ntp, sr.packets), (0x5002, ntp, 1));
        // 0.5 s after the packet at RTP time 3000 (seq 1 x 3000), at 90 kHz.
        assert_eq!(sr.rtp_ts, 3000 + 45_000);
    }

    #[test]
    fn consent_expiry_ends_the_session() {
        let (mut r, _, _, _, t0) = connected();
        r.tick(t0 + Duration::from_secs(10), 0);
        let mut ended = Vec::new();
        r.take_ended(&mut ended);
        assert!(ended.is_empty());
        r.tick(
            t0 + crate::ice::lite::CONSENT_TIMEOUT + Duration::from_secs(1),
            0,
        );
        r.take_ended(&mut ended);
        assert_eq!(ended.len(), 2);
        assert!(ended.iter().all(|e| e.reason == END_CONSENT));
        assert_eq!(r.session_count(), 0);
        let mut closed = Vec::new();
        r.take_closed_webrtc(&mut closed);
        assert_eq!(closed.len(), 2, "their DTLS state is released too");
    }
}
