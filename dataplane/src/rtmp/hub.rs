//! Every RTMP connection and participant stream of one shard (sans-IO):
//! who publishes, who plays, and what each connection is sent.
//!
//! The shard owns the sockets and calls in with bytes and closures; the hub
//! answers with [`Action`]s and leaves bytes in each connection's
//! [`PlayerQueue`] (taken with [`Hub::queue`]). A room lives on one shard; a
//! connection that names a room of another shard is handed over to it with
//! the event that named it.
//!
//! Streams are per participant ([`Pid`]): whoever publishes as NAME (RTMP,
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

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;

use super::address::{self, Address};
use super::chunk::MediaLimits;
use super::conn::types;
use super::conn::{Conn, Event, Media, RtmpError, STREAM_ID};
use super::http;
use super::meta::{self, Meta};
use super::stream::{chunked, Frame, GopCache, Offer, PlayerQueue};
use crate::h264::{Depacketizer, Out, Packetizer, Pushed};
use crate::participants::{Kinds, Participants, Pid, Taken};
use crate::reorder::Reorder;
use crate::transcode::Job;
use gateway_ring::msg::{
    participant_key, DropReason, Event as RingEvent, Limit, RtmpSpec, SessionStats, END_TAKEN_OVER,
    RTMP_SESSION_IDS,
};
use gateway_ring::participant::{resolve, NameError};

pub use super::address::APP;

/// Where a room lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    Local(u32),
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
    fn create(&mut self, name: &str) -> Option<u32>;
    /// Who is in the shard's rooms (shared with the WebRTC side).
    fn participants(&mut self) -> &mut Participants;
    /// Seeds a generated participant name.
    fn random(&mut self) -> [u8; 4];
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Close the connection (after flushing what is queued, if `flush`).
    Close { idx: u32, why: String, flush: bool },
    /// Move the connection to `shard`, which replays `events` there (the
    /// one that named the room, and any that came after it in the same read).
    Handoff {
        idx: u32,
        shard: u32,
        events: Vec<Event>,
    },
    /// The connection has bytes to send.
    Wake(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    New,
    Publisher {
        room: u32,
        pid: Pid,
    },
    /// Plays participant `stream`'s stream (`live/ROOM/NAME`).
    Player {
        room: u32,
        stream: Pid,
    },
    /// Plays the room's program (`live/ROOM`): its active speaker.
    Program {
        room: u32,
        program: u64,
    },
}

/// One connection's protocol state and send queue; moves between shards
/// with its socket.
pub struct ConnState {
    pub conn: Conn,
    pub queue: PlayerQueue,
    role: Role,
    /// The client's address (for the participant list).
    pub peer: Option<std::net::SocketAddrV4>,
    /// Session id once publishing or playing.
    session: Option<u64>,
    /// Who the client is in its room.
    name: String,
    /// The participant this connection holds a session of (a publisher's
    /// own; a player's of NAME, so NAME's stream waits for its return),
    /// and whether it counts as that participant's publisher.
    joined: Option<Pid>,
    publishing: bool,
    /// Media messages and bytes received (publisher) or queued (player),
    /// and messages dropped for a slow player; `dirty` until reported.
    stats: SessionStats,
    dirty: bool,
    /// Dropped for falling behind (reported as such).
    slow: bool,
    /// An HTTP-FLV player (its `conn` unused), and its request head so far.
    pub http: bool,
    http_head: Vec<u8>,
    /// Kinds of its published media already warned about ([`media_warning`]'s bits).
    warned: u8,
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

/// `Event::SessionEnded` reason for an RTMP client that left or was closed.
pub const END_RTMP: u16 = 3;
/// `Event::SessionEnded` reason for a player dropped for being too slow.
pub const END_SLOW: u16 = 4;

/// One participant's stream for RTMP players.
struct Stream {
    room: u32,
    /// [`participant_key`] of the participant's name.
    key: u32,
    /// The participant's RTMP publisher, if it publishes over RTMP.
    publisher: Option<u32>,
    players: Vec<u32>,
    cache: GopCache,
    /// RTP from the participant's WebRTC or RTP publisher, repacketized
    /// for RTMP players while no RTMP client publishes as it.
    bridge: Option<Bridge>,
    /// The RTMP publisher's video as H264 RTP for the room's WebRTC players
    /// and RTP egresses.
    rtp: Option<RtpOut>,
    /// Programs that show this participant now, or switch to it at its next keyframe.
    watchers: Vec<u64>,
    /// When its newest video frame arrived, and its FLV time.
    last_video: Option<(Instant, u32)>,
    /// Its `onMetaData`, written from what passes through.
    meta: Meta,
}

/// The room as one stream for the RTMP players who are `me` (the room's
/// "program", `live/ROOM?participant=ME`; anonymous players share the one
/// whose `me` is empty): the video of the active speaker other than `me`
/// (or, before anyone spoke, the room's first publisher), switched at the
/// new speaker's keyframe, and the audio of everyone but `me` mixed into
/// one AAC stream on the transcoder thread. Chunked once for all its
/// players, with its own GOP cache.
///
/// Program time is wall time since the program started, so the mix (made
/// from several participants' clocks) and the video (one at a time) stay
/// together: a switch places the new speaker's frames on it where they
/// arrived. A switch from a cached GOP packs the frames older than the
/// previous picture just after it (1 ms apart), so the player decodes up
/// to now at once instead of running behind by the age of the cache.
struct Program {
    room: u32,
    me: String,
    source: Option<Pid>,
    /// Switching to this participant at its next keyframe.
    pending: Option<Pid>,
    players: Vec<u32>,
    cache: GopCache,
    /// Program time 0.
    start: Instant,
    /// Program time = source time + offset (ms), set at each switch.
    offset: i64,
    /// Program time of the latest video frame and mixed audio frame.
    last_video: Option<u32>,
    mix_ms: Option<f64>,
    /// Its own `onMetaData` (the size changes with the speaker).
    meta: Meta,
}

impl Program {
    /// Program time at `now` (ms).
    fn clock(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.start).as_millis() as u32
    }

    /// `m` (on program time) goes out: into the cache and `out`, after
    /// the metadata it calls for.
    fn emit(&mut self, m: Media, out: &mut Vec<Media>) {
        match self.meta.before(&m) {
            meta::Send::Players(meta) => {
                self.cache.on_media(&meta);
                out.push(meta);
            }
            meta::Send::Cache(meta) => self.cache.on_media(&meta),
            meta::Send::Nothing => {}
        }
        self.cache.on_media(&m);
        out.push(m);
    }
}

impl Stream {
    /// The ingest to ask for a keyframe when someone starts watching: a
    /// bridged WebRTC publisher, when the cache holds no GOP (an encoder
    /// with long GOPs, or the cache was bounded out). An RTMP publisher
    /// cannot be asked.
    fn keyframe_source(&self) -> Option<u64> {
        if self.cache.gop_len() > 0 {
            return None;
        }
        self.bridge.as_ref()?.video.map(|a| a.source.0)
    }
}

/// FLV video → RTP for one participant, with the RTP packets of the latest
/// GOP so a WHEP player joining gets a picture at once (an RTMP publisher
/// cannot be asked for a keyframe).
struct RtpOut {
    packetizer: Packetizer,
    gop: Vec<Bytes>,
    gop_bytes: usize,
    /// Decided at its publisher's first B-frame, for the publisher's life:
    /// whether its video goes through the shard's re-encode thread
    /// ([`Job::Video`]) before the packetizer (under the shard's limit then).
    reencode: Option<bool>,
    audio_ssrc: u32,
    audio_seq: u16,
    /// RTP time of the next Opus packet.
    audio_ts: Option<u32>,
}

impl Bridge {
    fn new(now: Instant) -> Bridge {
        Bridge {
            reorder: Reorder::default(),
            depack: Depacketizer::new(),
            // A second of room before the first packet, so an audio anchor
            // moved earlier than the video's stays on the timeline.
            epoch: now
                .checked_sub(std::time::Duration::from_secs(1))
                .unwrap_or(now),
            video: None,
            audio: None,
            video_sr: None,
            audio_sr: None,
            audio_aligned: false,
            held: Vec::new(),
            aac_ms: None,
        }
    }

    /// Lines the audio anchor up with the video's by the sender reports
    /// (RFC 3550 §6.4.1: both map RTP time to the sender's one NTP clock),
    /// or gives up waiting after [`ALIGN_WAIT`] and keeps arrival order.
    fn align_audio(&mut self, now: Instant) {
        if self.audio_aligned {
            return;
        }
        let Some(a) = self.audio.as_mut() else { return };
        if let (Some(v), Some(vsr), Some(asr)) = (self.video, self.video_sr, self.audio_sr) {
            let d = capture_ms(asr, a.first_ts, a.ticks_per_ms)
                - capture_ms(vsr, v.first_ts, v.ticks_per_ms);
            a.first_ms = (v.first_ms as i64 + d).max(0) as u32;
            self.audio_aligned = true;
        } else if now.saturating_duration_since(a.created) >= ALIGN_WAIT {
            self.audio_aligned = true;
        }
    }
}

/// Session ids of the virtual ingests that carry RTMP publishers' media
/// into the router's fan-out: this bit plus the participant's [`Pid`].
pub const RTMP_SOURCE: u64 = 1 << 62;

impl RtpOut {
    /// One FLV video tag body at RTP time `ts` into RTP packets for the
    /// fan-out (`rtp_out`), kept as the latest GOP too.
    fn push(
        &mut self,
        body: &[u8],
        ts: u32,
        room: u32,
        key: u32,
        pid: Pid,
        rtp_out: &mut Vec<RtpFromRtmp>,
    ) -> Pushed {
        let mut packets = Vec::new();
        let pushed = self.packetizer.push(body, ts, &mut packets);
        if packets.is_empty() {
            return pushed;
        }
        if body[0] >> 4 == 1 {
            self.gop.clear();
            self.gop_bytes = 0;
        }
        for p in packets {
            let p = Bytes::from(p);
            // Bounded like the FLV cache; beyond it, no replay until the next keyframe.
            if self.gop_bytes + p.len() <= super::stream::MAX_GOP_BYTES {
                self.gop_bytes += p.len();
                self.gop.push(p.clone());
            } else {
                self.gop.clear();
            }
            rtp_out.push(RtpFromRtmp {
                room,
                pid,
                key,
                packet: p,
            });
        }
        pushed
    }

    fn new(pid: Pid) -> RtpOut {
        RtpOut {
            packetizer: Packetizer::new(pid.wrapping_mul(0x9e37_79b1) | 1, 96),
            gop: Vec::new(),
            gop_bytes: 0,
            reencode: None,
            audio_ssrc: pid.wrapping_mul(0x85eb_ca6b) | 1,
            audio_seq: 0,
            audio_ts: None,
        }
    }
}

/// H264 RTP → FLV video tags for one participant's stream.
struct Bridge {
    /// Packets back in order (gaps NACKed and waited for) before the depacketizer.
    reorder: Reorder,
    depack: Depacketizer,
    /// FLV time 0.
    epoch: Instant,
    video: Option<Anchor>,
    audio: Option<Anchor>,
    /// The publisher's latest RTCP sender reports (NTP, RTP time) per stream.
    video_sr: Option<(u64, u32)>,
    audio_sr: Option<(u64, u32)>,
    /// Audio waits (as AAC tags, with their RTP time) until its anchor is
    /// lined up with the video's by the sender reports, or [`ALIGN_WAIT`].
    audio_aligned: bool,
    held: Vec<(u32, Vec<Vec<u8>>)>,
    /// FLV time of the next AAC frame from the transcoder.
    aac_ms: Option<f64>,
}

/// The bridged AAC clock behind the publisher's RTP time by more than this
/// (beyond the encoder's delay) jumps ahead.
const AAC_RESYNC_MS: f64 = 150.0;

/// Longest audio waits for sender reports before it is placed by arrival.
pub const ALIGN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Milliseconds of a 64-bit NTP time.
fn ntp_ms(ntp: u64) -> i64 {
    ((ntp >> 32) * 1000 + (((ntp & 0xffff_ffff) * 1000) >> 32)) as i64
}

/// NTP milliseconds of RTP time `ts`, from a sender report of the stream.
fn capture_ms(sr: (u64, u32), ts: u32, ticks_per_ms: u32) -> i64 {
    ntp_ms(sr.0) + (ts.wrapping_sub(sr.1) as i32 as i64) / ticks_per_ms as i64
}

/// Where one RTP stream sits on the FLV timeline: its first packet's RTP
/// time at its arrival time. The audio anchor is then moved to where the
/// publisher's RTCP sender reports say it was captured relative to the video.
#[derive(Clone, Copy)]
struct Anchor {
    source: (u64, u32),
    first_ts: u32,
    first_ms: u32,
    ticks_per_ms: u32,
    created: Instant,
}

impl Anchor {
    fn ms(&self, ts: u32) -> u32 {
        self.first_ms
            .wrapping_add(ts.wrapping_sub(self.first_ts) / self.ticks_per_ms)
    }
}

/// The anchor of `source` in `slot`, made afresh if the source changed;
/// true if it did.
fn anchor(
    slot: &mut Option<Anchor>,
    epoch: Instant,
    now: Instant,
    source: (u64, u32),
    ts: u32,
    ticks_per_ms: u32,
) -> (Anchor, bool) {
    match slot {
        Some(a) if a.source == source => (*a, false),
        _ => {
            let a = Anchor {
                source,
                first_ts: ts,
                first_ms: now.saturating_duration_since(epoch).as_millis() as u32,
                ticks_per_ms,
                created: now,
            };
            *slot = Some(a);
            (a, true)
        }
    }
}

/// Counters for the shard's logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HubStats {
    pub published_messages: u64,
    pub player_messages: u64,
    pub player_drops: u64,
    pub rejected: u64,
}

/// An RTMP publisher's media as RTP, for the room's WebRTC side.
#[derive(Debug, Clone)]
pub struct RtpFromRtmp {
    pub room: u32,
    pub pid: Pid,
    pub key: u32,
    pub packet: Bytes,
}

impl RtpFromRtmp {
    /// The virtual ingest it enters the fan-out as ([`RTMP_SOURCE`] | pid).
    pub fn source(&self) -> u64 {
        RTMP_SOURCE | self.pid as u64
    }

    /// What the fan-out sees of it: a `kind` packet of that virtual ingest
    /// (`None` if it is no RTP packet).
    pub fn inbound(&self, kind: gateway_ring::msg::MediaKind) -> Option<crate::router::Inbound> {
        let h = crate::rtp::RtpHeader::parse(&self.packet).ok()?;
        Some(crate::router::Inbound {
            room: self.room,
            ingest: self.source(),
            participant: self.pid,
            key: self.key,
            level: None,
            kind,
            len: self.packet.len(),
            seq_no: h.seq_no,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
            lost_before: 0,
        })
    }
}

pub struct Hub {
    /// Participants started and ended, for the controlplane.
    pub events_out: Vec<RingEvent>,
    shard: u32,
    next_session: u64,
    /// RTP packets of RTMP publishers' video to fan out.
    pub rtp_out: Vec<RtpFromRtmp>,
    /// Audio for the transcoder thread.
    pub jobs: Vec<Job>,
    /// Ingest sessions (WebRTC publishers bridged to RTMP) to ask for a
    /// keyframe: a player joined and the GOP cache had none.
    pub keyframe_requests: Vec<u64>,
    /// Video packets a bridged publisher should resend: (ingest session, seq).
    pub nack_requests: Vec<(u64, u16)>,
    /// Actions taken outside a call that has an action list (a publisher
    /// left, a bridged publisher started): the owner drains them.
    pub deferred: Vec<Action>,
    conns: HashMap<u32, ConnState>,
    streams: HashMap<Pid, Stream>,
    /// The rooms' programs (players of `live/ROOM`), by id.
    programs: HashMap<u64, Program>,
    /// Each room's program ids (looked up at every audio packet).
    room_programs: HashMap<u32, Vec<u64>>,
    next_program: u64,
    /// Each room's active speaker, as the core told it.
    speakers: HashMap<u32, Pid>,
    /// When an idle program (nobody to show) may look at a publisher's
    /// packets again: not at every packet of, say, its own participant.
    next_idle_choose: Option<Instant>,
    gop_cache: bool,
    pub stats: HubStats,
    events: Vec<Event>,
    /// Connections closed by a memory bound ([`Limit::RtmpMemory`]), since start.
    pub limit_hits: [u64; Limit::COUNT],
    /// What one connection may make the shard hold.
    pub limits: ConnLimits,
    /// RTMP publishers with B-frames whose video this shard may re-encode
    /// for WebRTC players at once (0 when the feature is not built in).
    pub bframe_reencodes: u32,
}

/// Memory bounds of one RTMP connection (see [`crate::limits`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    pub media: MediaLimits,
    /// Bytes queued for it that it has not read, control output included.
    pub max_unread: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            media: MediaLimits::default(),
            max_unread: super::stream::MAX_UNREAD,
        }
    }
}

/// What bridging one RTP video packet to RTMP asks of the shard.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Bridged {
    /// Data was lost (or the source changed): ask the publisher for a keyframe.
    pub need_keyframe: bool,
    /// SPS/PPS NAL units refused as unusable: count them against the publisher.
    pub bad_parameter_sets: u32,
    /// The reorder buffer: gaps filled, gaps given up on.
    pub gaps_filled: u64,
    pub gaps_given_up: u64,
}

impl Hub {
    pub fn new(gop_cache: bool, shard: u32) -> Hub {
        Hub {
            events_out: Vec::new(),
            shard,
            next_session: 0,
            rtp_out: Vec::new(),
            jobs: Vec::new(),
            keyframe_requests: Vec::new(),
            nack_requests: Vec::new(),
            deferred: Vec::new(),
            conns: HashMap::new(),
            streams: HashMap::new(),
            programs: HashMap::new(),
            room_programs: HashMap::new(),
            next_program: 0,
            speakers: HashMap::new(),
            next_idle_choose: None,
            gop_cache,
            stats: HubStats::default(),
            events: Vec::new(),
            limit_hits: [0; Limit::COUNT],
            limits: ConnLimits::default(),
            bframe_reencodes: 0,
        }
    }

    pub fn insert(&mut self, idx: u32, mut state: ConnState) {
        state.queue.max_unread = self.limits.max_unread;
        self.conns.insert(idx, state);
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
            self.events_out.push(RingEvent::SessionEnded {
                session,
                reason: if st.slow { END_SLOW } else { END_RTMP },
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
    fn detach(&mut self, now: Instant, idx: u32, role: Role, parts: &mut Participants) {
        match role {
            Role::Publisher { room, pid } => {
                if let Some(s) = self.streams.get_mut(&pid) {
                    if s.publisher == Some(idx) {
                        s.publisher = None;
                        s.rtp = None;
                        self.publisher_gone(now, room, pid, parts);
                    }
                }
            }
            Role::Player { stream, .. } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.players.retain(|&p| p != idx);
                }
                self.forget_if_unused(stream, parts);
            }
            Role::Program { program, .. } => {
                let Some(p) = self.programs.get_mut(&program) else {
                    return;
                };
                p.players.retain(|&x| x != idx);
                if p.players.is_empty() {
                    // Nobody plays it: it stops watching its participants.
                    let p = self.remove_program(program).expect("just found");
                    for pid in p.source.into_iter().chain(p.pending) {
                        self.unwatch(program, pid, parts);
                    }
                }
            }
            Role::New => {}
        }
    }

    /// Drops `pid`'s stream once nothing needs it: no publisher here, no
    /// players, and no WebRTC/RTP publisher whose bridge state it keeps.
    fn forget_if_unused(&mut self, pid: Pid, parts: &Participants) {
        let unused = self.streams.get(&pid).is_some_and(|s| {
            s.publisher.is_none()
                && s.players.is_empty()
                && s.watchers.is_empty()
                && !parts.is_publishing(pid)
        });
        if unused {
            self.streams.remove(&pid);
            self.jobs.push(Job::Reset { stream: pid });
        }
    }

    /// Participant `pid` of `room` stopped publishing (its RTMP push ended,
    /// or its last WebRTC/RTP publishing session): its own players wait for
    /// it; the room's programs that showed it move on. The next publisher
    /// starts a fresh bridge.
    pub fn publisher_gone(&mut self, now: Instant, room: u32, pid: Pid, parts: &mut Participants) {
        if let Some(s) = self.streams.get_mut(&pid) {
            s.bridge = None;
        }
        if self.speakers.get(&room) == Some(&pid) {
            self.speakers.remove(&room);
        }
        let ids = self.programs_of(room, |p| p.source == Some(pid) || p.pending == Some(pid));
        for id in ids {
            if let Some(p) = self.programs.get_mut(&id) {
                if p.source == Some(pid) {
                    p.source = None;
                }
                if p.pending == Some(pid) {
                    p.pending = None;
                }
            }
            self.unwatch(id, pid, parts);
        }
        self.forget_if_unused(pid, parts);
        let mut actions = std::mem::take(&mut self.deferred);
        self.choose_all(now, room, parts, &mut actions);
        self.deferred = actions;
    }

    /// The core found `room`'s active speaker: its programs switch to it
    /// (each but the speaker's own) at its next keyframe.
    pub fn speaker_changed(&mut self, now: Instant, room: u32, pid: Pid, parts: &mut Participants) {
        self.speakers.insert(room, pid);
        let mut actions = std::mem::take(&mut self.deferred);
        self.choose_all(now, room, parts, &mut actions);
        self.deferred = actions;
    }

    /// The ids of `room`'s programs that `pick` takes.
    fn programs_of(&self, room: u32, pick: impl Fn(&Program) -> bool) -> Vec<u64> {
        let ids = self.room_programs.get(&room).map_or(&[][..], |v| v);
        ids.iter()
            .copied()
            .filter(|id| self.programs.get(id).is_some_and(&pick))
            .collect()
    }

    /// Forgets program `id` (nobody plays it, or its room went), and its
    /// mix on the transcoder thread.
    fn remove_program(&mut self, id: u64) -> Option<Program> {
        let p = self.programs.remove(&id)?;
        if let Some(ids) = self.room_programs.get_mut(&p.room) {
            ids.retain(|&x| x != id);
            if ids.is_empty() {
                self.room_programs.remove(&p.room);
            }
        }
        self.jobs.push(Job::MixEnd { program: id });
        Some(p)
    }

    /// Every program of `room` looks again at whom it should show.
    fn choose_all(
        &mut self,
        now: Instant,
        room: u32,
        parts: &Participants,
        actions: &mut Vec<Action>,
    ) {
        for id in self.programs_of(room, |_| true) {
            self.choose(now, id, parts, actions);
        }
    }

    /// Whom program `id` should show: the room's active speaker other than
    /// its `me`, else the room's earliest publisher other than `me`. A new
    /// choice is pending until its keyframe (at once from a cached GOP).
    fn choose(&mut self, now: Instant, id: u64, parts: &Participants, actions: &mut Vec<Action>) {
        let Some(p) = self.programs.get(&id) else {
            return;
        };
        let room = p.room;
        let me = parts
            .find(room, &p.me)
            .unwrap_or(crate::participants::NOBODY);
        let speaker = self
            .speakers
            .get(&room)
            .copied()
            .filter(|&s| s != me && parts.is_publishing(s));
        let Some(target) = speaker.or_else(|| parts.publishers(room, me).first().copied()) else {
            return;
        };
        if p.source == Some(target) || p.pending == Some(target) {
            return;
        }
        let old_pending = p.pending;
        if let Some(old) = old_pending {
            self.unwatch(id, old, parts);
        }
        let key = parts.key(target);
        let s = self.stream(room, target, key);
        s.watchers.push(id);
        let ask = s.keyframe_source();
        let cached: Vec<Media> = s.cache.gop().to_vec();
        let sync = s.last_video.unwrap_or((now, 0));
        self.keyframe_requests.extend(ask);
        if let Some(p) = self.programs.get_mut(&id) {
            p.pending = Some(target);
        }
        // The target's cached GOP switches the program at once, caught up
        // to its newest frame.
        for m in &cached {
            self.feed(now, id, target, m, sync, actions);
        }
    }

    /// Program `id` no longer shows or waits for `pid`.
    fn unwatch(&mut self, id: u64, pid: Pid, parts: &Participants) {
        if let Some(s) = self.streams.get_mut(&pid) {
            s.watchers.retain(|&w| w != id);
        }
        self.forget_if_unused(pid, parts);
    }

    /// A video message of participant `pid`'s stream, for program `id`:
    /// shown if `pid` is its source, or the switch to `pid` at its keyframe.
    /// `sync` is when `pid`'s newest frame arrived and its source time
    /// (later than `m`'s when `m` comes from its cached GOP). The
    /// program's audio is its mix ([`Self::on_mix`]), never its source's.
    #[allow(clippy::too_many_arguments)]
    fn feed(
        &mut self,
        now: Instant,
        id: u64,
        pid: Pid,
        m: &Media,
        sync: (Instant, u32),
        actions: &mut Vec<Action>,
    ) {
        if m.type_id != types::VIDEO {
            return; // the program's audio is its mix, its metadata its own
        }
        let Some(p) = self.programs.get_mut(&id) else {
            return;
        };
        let mut out: Vec<Media> = Vec::new();
        if p.pending == Some(pid) && Frame::of(m) == Frame::Key {
            // Switch: the source's newest frame where it arrived on the
            // program's time.
            p.offset = p.clock(sync.0) as i64 - sync.1 as i64;
            let old = p.source.replace(pid);
            p.pending = None;
            if let Some(s) = self.streams.get(&pid) {
                out.extend(
                    s.cache
                        .configs()
                        .filter(|c| c.type_id == types::VIDEO)
                        .cloned(),
                );
            }
            out.push(m.clone());
            if let Some(old) = old.filter(|&o| o != pid) {
                if let Some(s) = self.streams.get_mut(&old) {
                    s.watchers.retain(|&w| w != id);
                }
            }
        } else if p.source == Some(pid) {
            out.push(m.clone());
        } else {
            return;
        }
        let Some(p) = self.programs.get_mut(&id) else {
            return;
        };
        let mut timed = Vec::with_capacity(out.len());
        for m in out {
            let t = (m.timestamp as i64 + p.offset).clamp(0, u32::MAX as i64) as u32;
            // Headers at the current picture; frames strictly after it
            // (a cached GOP packed 1 ms apart), so decode order holds.
            let t = match p.last_video {
                Some(last) if is_config_or_meta(&m) => last,
                Some(last) => t.max(last.wrapping_add(1)),
                None => t,
            };
            if !is_config_or_meta(&m) {
                p.last_video = Some(t);
            }
            let m = Media {
                type_id: m.type_id,
                timestamp: t,
                payload: m.payload,
            };
            p.emit(m, &mut timed);
        }
        let players = p.players.clone();
        for m in &timed {
            self.offer_to(now, &players, m, actions);
        }
    }

    /// AAC tags of program `id`'s mix, from the transcoder: stamped 1024
    /// samples apart on the program's time, starting where it is now (and
    /// again after a gap: nobody sent audio for a while).
    pub fn on_mix(&mut self, now: Instant, id: u64, tags: Vec<Vec<u8>>, actions: &mut Vec<Action>) {
        let Some(p) = self.programs.get_mut(&id) else {
            return;
        };
        let clock = p.clock(now) as f64;
        let mut t = match p.mix_ms {
            Some(t) if t + MIX_RESYNC_MS >= clock => t,
            _ => clock,
        };
        let mut timed = Vec::with_capacity(tags.len());
        for tag in tags {
            let config = tag.get(1) == Some(&0);
            let m = Media {
                type_id: types::AUDIO,
                timestamp: t as u32,
                payload: Bytes::from(tag),
            };
            if !config {
                t += crate::mix::FRAME as f64 / 48.0;
            }
            p.emit(m, &mut timed);
        }
        p.mix_ms = Some(t);
        let players = p.players.clone();
        for m in &timed {
            self.offer_to(now, &players, m, actions);
        }
    }

    /// The programs of `room` whose mix takes participant `pid`'s audio:
    /// every one but `pid`'s own.
    pub fn mixes_for(&self, room: u32, pid: Pid, parts: &Participants) -> Vec<u64> {
        if !self.room_programs.contains_key(&room) {
            return Vec::new();
        }
        let name = parts.name(pid).unwrap_or("");
        self.programs_of(room, |p| p.me.is_empty() || p.me != name)
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

    /// The session of participant `pid`'s RTMP publisher, if it has one here.
    pub fn publisher_session(&self, pid: Pid) -> Option<u64> {
        let idx = self.streams.get(&pid)?.publisher?;
        self.conns.get(&idx)?.session
    }

    /// Players of participant `pid`'s stream (for tests and stats).
    pub fn players(&self, pid: Pid) -> usize {
        self.streams.get(&pid).map_or(0, |s| s.players.len())
    }

    /// Bytes arrived on connection `idx`.
    pub fn on_bytes(
        &mut self,
        now: Instant,
        idx: u32,
        data: &[u8],
        rooms: &mut dyn Rooms,
        actions: &mut Vec<Action>,
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
            actions.push(Action::Close {
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
            if let Some(Action::Handoff { idx: i, events, .. }) = actions.last_mut() {
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
        actions: &mut Vec<Action>,
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
                actions.push(Action::Wake(idx));
                actions.push(Action::Close {
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

    /// Reports a connection that started publishing or playing as a participant.
    fn announce(&mut self, idx: u32, room: u32, publish: bool) {
        let Some(st) = self.conns.get_mut(&idx) else {
            return;
        };
        self.next_session += 1;
        let session = RTMP_SESSION_IDS | ((self.shard as u64) << 40) | self.next_session;
        st.session = Some(session);
        let peer = st
            .peer
            .unwrap_or(std::net::SocketAddrV4::new([0; 4].into(), 0));
        self.events_out.push(RingEvent::Rtmp(RtmpSpec {
            session,
            room,
            publish,
            peer_ip: peer.ip().octets(),
            peer_port: peer.port(),
            created_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
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
                publish: matches!(st.role, Role::Publisher { .. }),
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
    pub fn find_session(&self, session: u64) -> Option<u32> {
        self.conns
            .iter()
            .find(|(_, st)| st.session == Some(session))
            .map(|(&idx, _)| idx)
    }

    /// Ends every connection of a deleted room.
    pub fn close_room(&mut self, room: u32, actions: &mut Vec<Action>) {
        let pids: Vec<Pid> = self
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
                conns.extend(s.publisher.into_iter().chain(s.players));
                self.jobs.push(Job::Reset { stream: pid });
            }
        }
        for idx in conns {
            actions.push(Action::Close {
                idx,
                why: "room deleted".into(),
                flush: false,
            });
        }
    }

    /// Moves the connection's pending protocol output into its queue; a
    /// connection that does not read what it is sent is closed.
    fn flush_conn(&mut self, idx: u32, actions: &mut Vec<Action>) {
        if let Some(st) = self.conns.get_mut(&idx) {
            if st.conn.has_output() {
                if st.queue.push_control(Bytes::from(st.conn.take_output())) {
                    actions.push(Action::Wake(idx));
                } else {
                    self.limit_hits[Limit::RtmpMemory as usize] += 1;
                    actions.push(Action::Close {
                        idx,
                        why: "does not read what it is sent".into(),
                        flush: false,
                    });
                }
            }
        }
    }

    /// Whether connection `idx` publishes or plays (set-up done).
    pub fn is_set_up(&self, idx: u32) -> bool {
        self.conns.get(&idx).is_some_and(|c| c.role != Role::New)
    }

    /// Whether connection `idx` publishes.
    pub fn is_publisher(&self, idx: u32) -> bool {
        self.conns
            .get(&idx)
            .is_some_and(|c| matches!(c.role, Role::Publisher { .. }))
    }

    /// Refuses a publish or play: an `onStatus` error `code` to an RTMP
    /// client, the HTTP `status` to an HTTP-FLV one; then closes it.
    fn reject(&mut self, idx: u32, code: &str, status: u16, why: &str, actions: &mut Vec<Action>) {
        if let Some(st) = self.conns.get_mut(&idx) {
            if st.http {
                st.queue.push_control(http::error_response(status, why));
                actions.push(Action::Wake(idx));
            } else {
                st.conn.reject(STREAM_ID, code, why);
            }
        }
        self.stats.rejected += 1;
        self.flush_conn(idx, actions);
        actions.push(Action::Close {
            idx,
            why: why.to_string(),
            flush: true,
        });
    }

    /// Handles one connection event; also called by the shard that received
    /// a handed-over connection, with the event that named its room.
    pub fn on_event(
        &mut self,
        now: Instant,
        idx: u32,
        ev: Event,
        rooms: &mut dyn Rooms,
        actions: &mut Vec<Action>,
    ) {
        match ev {
            Event::Publish {
                ref app,
                ref key,
                ref query,
            }
            | Event::Play {
                ref app,
                ref key,
                ref query,
            } => {
                let publish = matches!(ev, Event::Publish { .. });
                let (bad, not_found) = if publish {
                    ("NetStream.Publish.BadName", "NetStream.Publish.BadName")
                } else {
                    (
                        "NetStream.Play.StreamNotFound",
                        "NetStream.Play.StreamNotFound",
                    )
                };
                // One stream per connection at a time (a publisher that
                // stopped may publish again).
                if self.conns.get(&idx).is_some_and(|c| c.role != Role::New) {
                    let why = "this connection already publishes or plays";
                    return self.reject(idx, bad, 400, why, actions);
                }
                let addr = match address::parse(app, key, query) {
                    Ok(a) => a,
                    Err(why) => return self.reject(idx, bad, 400, &why, actions),
                };
                let claim = match rooms.authorize(&addr.room, publish, addr.token.as_deref()) {
                    Ok(claim) => claim,
                    Err(why) => {
                        let code = if publish {
                            "NetStream.Publish.Unauthorized"
                        } else {
                            "NetStream.Play.Failed"
                        };
                        return self.reject(idx, code, 403, &why, actions);
                    }
                };
                let room = match rooms.place(&addr.room) {
                    Place::Local(room) => room,
                    Place::Remote(shard) => {
                        actions.push(Action::Handoff {
                            idx,
                            shard,
                            events: vec![ev.clone()],
                        });
                        return;
                    }
                    Place::Missing if publish => match rooms.create(&addr.room) {
                        Some(room) => room,
                        None => {
                            let why = format!(
                                "no room {:?}, and creating rooms on publish is off",
                                addr.room
                            );
                            return self.reject(idx, not_found, 404, &why, actions);
                        }
                    },
                    Place::Missing => {
                        let why = format!("no stream {:?}", addr.room);
                        return self.reject(idx, not_found, 404, &why, actions);
                    }
                };
                // Who the client is: the token's participant, else the
                // path's NAME (a push) or `?participant=`, else generated.
                let asked = match (&addr.name, &addr.participant) {
                    (Some(n), Some(q)) if publish && n != q => {
                        let why = format!(
                            "the stream name {n:?} and ?participant={q:?} name different participants"
                        );
                        return self.reject(idx, bad, 400, &why, actions);
                    }
                    (Some(n), _) if publish => Some(n.clone()),
                    (_, q) => q.clone(),
                };
                let random = rooms.random();
                let (me, generated) = match resolve(claim.as_deref(), asked.as_deref(), random) {
                    Ok(x) => x,
                    Err(NameError::Bad(why)) => return self.reject(idx, bad, 400, &why, actions),
                    Err(NameError::NotYours(why)) => {
                        let code = if publish {
                            "NetStream.Publish.Unauthorized"
                        } else {
                            "NetStream.Play.Failed"
                        };
                        return self.reject(idx, code, 403, &why, actions);
                    }
                };
                if let Some(st) = self.conns.get_mut(&idx) {
                    st.name = me.clone();
                }
                let parts = rooms.participants();
                if publish {
                    self.start_publish(now, idx, room, &addr, &me, generated, parts, actions);
                } else {
                    self.start_play(now, idx, room, &addr, &me, generated, parts, actions);
                }
            }
            Event::Media(m) => self.on_media(now, idx, m, rooms.participants(), actions),
            Event::Stopped => {
                let Some(st) = self.conns.get_mut(&idx) else {
                    return;
                };
                if !matches!(st.role, Role::Publisher { .. }) {
                    return;
                }
                let role = std::mem::replace(&mut st.role, Role::New);
                if let Some(session) = st.session.take() {
                    self.events_out.push(RingEvent::SessionEnded {
                        session,
                        reason: END_RTMP,
                    });
                }
                let publishing = std::mem::take(&mut st.publishing);
                let joined = st.joined.take();
                let parts = rooms.participants();
                if let (Some(pid), true) = (joined, publishing) {
                    parts.unpublish(pid, Kinds::BOTH);
                }
                self.detach(now, idx, role, parts);
                // The connection may publish again, as anyone: a new session.
                if let Some(pid) = joined {
                    parts.leave(pid);
                }
            }
            Event::Unknown(_) => self.flush_conn(idx, actions),
        }
    }

    fn stream(&mut self, room: u32, pid: Pid, key: u32) -> &mut Stream {
        let gop_cache = self.gop_cache;
        self.streams.entry(pid).or_insert_with(|| Stream {
            room,
            key,
            publisher: None,
            players: Vec::new(),
            cache: GopCache::new(gop_cache),
            bridge: None,
            rtp: None,
            watchers: Vec::new(),
            last_video: None,
            meta: Meta::default(),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn start_publish(
        &mut self,
        now: Instant,
        idx: u32,
        room: u32,
        addr: &Address,
        me: &str,
        generated: bool,
        parts: &mut Participants,
        actions: &mut Vec<Action>,
    ) {
        let pid = parts.join(room, me);
        match parts.publish(pid, Kinds::BOTH, true) {
            Ok(()) => {}
            Err(Taken::ByRtmp) => {
                // The same name pushes again (a phone that moved from Wi-Fi
                // to 4G): the stale push ends, the new one continues its
                // stream and players at its first keyframe.
                let old = self.streams.get(&pid).and_then(|s| s.publisher);
                if let Some(old) = old.filter(|&o| o != idx) {
                    self.take_over(old, actions);
                }
            }
            Err(Taken::ByWebrtcOrRtp) => {
                parts.leave(pid);
                let why = format!(
                    "participant {me:?} already publishes in room {:?} over WebRTC or RTP",
                    addr.room
                );
                return self.reject(idx, "NetStream.Publish.BadName", 400, &why, actions);
            }
        }
        let key = participant_key(me);
        let s = self.stream(room, pid, key);
        s.publisher = Some(idx);
        // A new publisher's GOP starts afresh; headers come with its first
        // messages. An RTMP publisher takes over from bridged RTP.
        s.cache = GopCache::new(s.cache.enabled);
        s.bridge = None;
        s.rtp = None;
        self.jobs.push(Job::Reset { stream: pid });
        let shown = match &addr.name {
            Some(_) => format!("{}/{me}", addr.room),
            None if generated => format!("{} as participant {me}", addr.room),
            None => format!("{} as {me}", addr.room),
        };
        if let Some(st) = self.conns.get_mut(&idx) {
            st.role = Role::Publisher { room, pid };
            st.joined = Some(pid);
            st.publishing = true;
            st.conn.accept_publish(&shown, self.limits.media);
        }
        self.announce(idx, room, true);
        self.flush_conn(idx, actions);
        self.choose_all(now, room, parts, actions);
    }

    /// Ends publisher `old`, whose name a new connection pushes: it keeps
    /// its participant session until closed, but no longer publishes.
    fn take_over(&mut self, old: u32, actions: &mut Vec<Action>) {
        let Some(st) = self.conns.get_mut(&old) else {
            return;
        };
        st.role = Role::New;
        st.publishing = false;
        if let Some(session) = st.session.take() {
            self.events_out.push(RingEvent::SessionEnded {
                session,
                reason: END_TAKEN_OVER,
            });
        }
        actions.push(Action::Close {
            idx: old,
            why: "taken over by a new publish of the same participant".into(),
            flush: false,
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn start_play(
        &mut self,
        now: Instant,
        idx: u32,
        room: u32,
        addr: &Address,
        me: &str,
        generated: bool,
        parts: &mut Participants,
        actions: &mut Vec<Action>,
    ) {
        // NAME's stream, whoever publishes it: NAME must be in the room (a
        // session of any kind); its stream waits for NAME to publish (again).
        if let Some(name) = &addr.name {
            if parts.find(room, name).is_none() {
                let why = format!("no participant {name:?} in room {:?}", addr.room);
                return self.reject(idx, "NetStream.Play.StreamNotFound", 404, &why, actions);
            }
        }
        let shown = match &addr.name {
            Some(n) => format!("{}/{n}", addr.room),
            None => addr.room.clone(),
        };
        if let Some(st) = self.conns.get_mut(&idx) {
            if st.http {
                st.queue.push_control(http::stream_head());
                actions.push(Action::Wake(idx));
            } else {
                st.conn.accept_play(&format!("{shown} as {me}"));
            }
        }
        self.announce(idx, room, false);
        self.flush_conn(idx, actions);
        match &addr.name {
            Some(name) => {
                // Held while this player lives, so NAME's stream (and id)
                // outlast a publisher that reconnects.
                let pid = parts.join(room, name);
                if let Some(st) = self.conns.get_mut(&idx) {
                    st.joined = Some(pid);
                }
                self.attach_player(now, idx, room, pid, participant_key(name), actions);
            }
            // Anonymous players (a generated name) share one program,
            // which leaves nobody out.
            None => {
                let me = if generated { "" } else { me };
                self.attach_program(now, idx, room, me, parts, actions)
            }
        }
    }

    /// Makes `idx` a player of `room`'s program as `me`: the program's
    /// headers and GOP at once (made when its first player comes).
    fn attach_program(
        &mut self,
        now: Instant,
        idx: u32,
        room: u32,
        me: &str,
        parts: &Participants,
        actions: &mut Vec<Action>,
    ) {
        let existing = self.programs_of(room, |p| p.me == me).first().copied();
        let id = match existing {
            Some(id) => id,
            None => {
                self.next_program += 1;
                let id = self.next_program;
                self.room_programs.entry(room).or_default().push(id);
                self.programs.insert(
                    id,
                    Program {
                        room,
                        me: me.to_string(),
                        source: None,
                        pending: None,
                        players: Vec::new(),
                        cache: GopCache::new(self.gop_cache),
                        start: now,
                        offset: 0,
                        last_video: None,
                        mix_ms: None,
                        meta: Meta::default(),
                    },
                );
                id
            }
        };
        let Some(p) = self.programs.get_mut(&id) else {
            return;
        };
        p.players.push(idx);
        let replay = replay_of(&p.cache, self.conns.get(&idx).is_some_and(|c| c.http));
        self.start_player(
            now,
            idx,
            Role::Program { room, program: id },
            replay,
            actions,
        );
        self.choose(now, id, parts, actions);
    }

    /// Player `idx` starts with `replay` (a GOP cache's headers and GOP,
    /// chunked for it), waiting for a keyframe if there is none.
    fn start_player(
        &mut self,
        now: Instant,
        idx: u32,
        role: Role,
        replay: Vec<(Bytes, Frame)>,
        actions: &mut Vec<Action>,
    ) {
        let Some(st) = self.conns.get_mut(&idx) else {
            return;
        };
        st.role = role;
        // Video before a keyframe cannot be decoded: without a cached GOP
        // the player waits for the publisher's next keyframe.
        st.queue.wait_keyframe = true;
        for (b, frame) in &replay {
            // The cached GOP is one coherent unit: never dropped.
            let frame = if *frame == Frame::Delta {
                Frame::Config
            } else {
                *frame
            };
            st.queue.offer(now, b, frame);
        }
        if !replay.is_empty() {
            actions.push(Action::Wake(idx));
        }
    }

    /// Makes `idx` a player of participant `pid`'s stream: headers and the
    /// GOP so far at once, or a keyframe request to a bridged publisher.
    #[allow(clippy::too_many_arguments)]
    fn attach_player(
        &mut self,
        now: Instant,
        idx: u32,
        room: u32,
        pid: Pid,
        key: u32,
        actions: &mut Vec<Action>,
    ) {
        let s = self.stream(room, pid, key);
        s.players.push(idx);
        let ask = s.keyframe_source();
        self.keyframe_requests.extend(ask);
        // A picture at once: headers and the GOP so far, serialized for this player.
        let http = self.conns.get(&idx).is_some_and(|c| c.http);
        let replay = self.streams.get(&pid).map(|s| replay_of(&s.cache, http));
        let role = Role::Player { room, stream: pid };
        self.start_player(now, idx, role, replay.unwrap_or_default(), actions);
    }

    fn on_media(
        &mut self,
        now: Instant,
        idx: u32,
        m: Media,
        parts: &Participants,
        actions: &mut Vec<Action>,
    ) {
        let Some(Role::Publisher { room, pid }) = self.conns.get(&idx).map(|c| c.role) else {
            return; // media from a connection that is not publishing
        };
        self.stats.published_messages += 1;
        let pushed = match m.type_id {
            types::VIDEO => self.packetize_for_webrtc(pid, &m),
            _ => Pushed::Nothing,
        };
        // Only B-frames' warning depends on it: no lookup for the rest.
        let reencoded = has_bframes(&m)
            && self
                .streams
                .get(&pid)
                .and_then(|s| s.rtp.as_ref())
                .is_some_and(|r| r.reencode == Some(true));
        let limit = self.bframe_reencodes;
        if let Some(st) = self.conns.get_mut(&idx) {
            st.stats.packets += 1;
            st.stats.bytes += m.payload.len() as u64;
            st.dirty = true;
            if pushed == Pushed::BadConfig {
                st.stats.drops[DropReason::Malformed as usize] += 1;
            }
            let warning = media_warning(&m, reencoded, limit);
            if let Some((kind, what)) = warning.filter(|(k, _)| st.warned & k == 0) {
                st.warned |= kind;
                if let Some(session) = st.session {
                    tracing::info!(session, "RTMP publisher's media: {what}");
                    self.events_out
                        .push(RingEvent::MediaWarning { session, what });
                }
            }
        }
        if m.type_id == types::AUDIO {
            // The RTP side exists once video started; audio joins it.
            if let Some(s) = self.streams.get_mut(&pid) {
                let rtp = s.rtp.get_or_insert_with(|| RtpOut::new(pid));
                if Frame::of(&m) == Frame::Config {
                    rtp.audio_ts = None;
                }
            }
            let mixes = self.mixes_for(room, pid, parts);
            self.jobs.push(Job::Aac {
                stream: pid,
                ms: m.timestamp,
                flv: m.payload.to_vec(),
                mixes,
            });
        }
        self.deliver(now, pid, m, actions);
    }

    /// Packetizes an RTMP publisher's video for the room's WebRTC side, or
    /// hands it to the re-encode thread when it has B-frames (which
    /// browsers cannot play) and the shard re-encodes fewer than its limit.
    fn packetize_for_webrtc(&mut self, pid: Pid, m: &Media) -> Pushed {
        let reencoded = |s: &Stream| s.rtp.as_ref().is_some_and(|r| r.reencode == Some(true));
        // Decided once per publisher, at its first B-frame.
        let decide = has_bframes(m)
            && self
                .streams
                .get(&pid)
                .is_some_and(|s| s.rtp.as_ref().is_none_or(|r| r.reencode.is_none()));
        let start = decide
            && self.streams.values().filter(|s| reencoded(s)).count()
                < self.bframe_reencodes as usize;
        let Some(s) = self.streams.get_mut(&pid) else {
            return Pushed::Nothing;
        };
        let (room, key) = (s.room, s.key);
        let out = s.rtp.get_or_insert_with(|| RtpOut::new(pid));
        if decide {
            out.reencode = Some(start);
        }
        if start {
            tracing::info!(
                pid,
                "RTMP publisher's video has B-frames: re-encoded for WebRTC players"
            );
            out.gop.clear();
            out.gop_bytes = 0;
            // The decoder starts from the stream's parameter sets and the
            // GOP so far (empty when the offsets start on a keyframe, as
            // x264's do): WebRTC players need not wait for the next one.
            let config = s
                .cache
                .configs()
                .filter(|c| super::stream::is_video_config(c));
            let gop = s.cache.gop().iter().filter(|g| g.type_id == types::VIDEO);
            self.jobs.extend(config.chain(gop).map(|c| Job::Video {
                stream: pid,
                ms: c.timestamp,
                flv: c.payload.to_vec(),
            }));
        }
        if out.reencode == Some(true) {
            self.jobs.push(Job::Video {
                stream: pid,
                ms: m.timestamp,
                flv: m.payload.to_vec(),
            });
            return Pushed::Nothing;
        }
        let ts = presentation_ms(m).wrapping_mul(90);
        out.push(&m.payload, ts, room, key, pid, &mut self.rtp_out)
    }

    /// Video of participant `pid`'s RTMP publisher re-encoded without
    /// B-frames (FLV tag bodies at their presentation times), for the
    /// room's WebRTC side.
    pub fn on_reencoded(&mut self, pid: Pid, tags: Vec<(u32, Vec<u8>)>) {
        let Some(s) = self.streams.get_mut(&pid) else {
            return;
        };
        let (room, key) = (s.room, s.key);
        // A publisher since then that is not re-encoded: stale output.
        let Some(out) = s.rtp.as_mut().filter(|r| r.reencode == Some(true)) else {
            return;
        };
        for (ms, body) in tags {
            out.push(
                &body,
                ms.wrapping_mul(90),
                room,
                key,
                pid,
                &mut self.rtp_out,
            );
        }
    }

    /// The RTP packets of the latest GOP of each RTMP publisher of `room`,
    /// for a WebRTC player that just connected.
    pub fn rtp_gops(&self, room: u32) -> Vec<RtpFromRtmp> {
        let mut out = Vec::new();
        for (&pid, s) in self.streams.iter().filter(|(_, s)| s.room == room) {
            for p in s.rtp.iter().flat_map(|r| &r.gop) {
                out.push(RtpFromRtmp {
                    room,
                    pid,
                    key: s.key,
                    packet: p.clone(),
                });
            }
        }
        out
    }

    /// Whether RTP video of participant `pid` should be bridged to RTMP:
    /// its stream has players or programs watching it (an idle program may
    /// choose `pid` now), and no RTMP client publishes as `pid`.
    pub fn wants_rtp(&mut self, now: Instant, pid: Pid, parts: &Participants) -> bool {
        if let Some(s) = self.streams.get(&pid) {
            return s.publisher.is_none();
        }
        // Idle programs (nobody to show) look at the publishers at most
        // every IDLE_CHOOSE_EVERY, all rooms at once: not a scan at every
        // packet of a publisher nobody plays over RTMP.
        if self.next_idle_choose.is_some_and(|t| now < t) {
            return false;
        }
        self.next_idle_choose = Some(now + IDLE_CHOOSE_EVERY);
        let mut idle: Vec<u32> = self
            .programs
            .values()
            .filter(|p| p.source.is_none() && p.pending.is_none())
            .map(|p| p.room)
            .collect();
        idle.sort_unstable();
        idle.dedup();
        let mut actions = std::mem::take(&mut self.deferred);
        for r in idle {
            self.choose_all(now, r, parts, &mut actions);
        }
        self.deferred = actions;
        self.streams.contains_key(&pid)
    }

    /// One H264 RTP packet of participant `pid`'s publisher (`source` =
    /// ingest session and SSRC): what the publisher must be told or counted for.
    #[allow(clippy::too_many_arguments)]
    pub fn on_rtp_video(
        &mut self,
        now: Instant,
        pid: Pid,
        source: (u64, u32),
        sr: Option<(u64, u32)>,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
        actions: &mut Vec<Action>,
    ) -> Bridged {
        let mut bridged = Bridged::default();
        let Some(s) = self.streams.get_mut(&pid) else {
            return bridged;
        };
        if s.publisher.is_some() {
            return bridged;
        }
        let b = s.bridge.get_or_insert_with(|| Bridge::new(now));
        let (a, changed) = anchor(&mut b.video, b.epoch, now, source, ts, 90);
        if sr.is_some() {
            b.video_sr = sr;
        }
        if changed {
            // A new publisher session (or SSRC) of this participant: a fresh
            // depacketizer waiting for its first IDR, on the same timeline.
            bridged.need_keyframe = true;
            b.depack = Depacketizer::new();
            b.reorder = Reorder::default();
        }
        let mut out = Vec::new();
        let mut nacks = Vec::new();
        let Bridge {
            reorder, depack, ..
        } = b;
        let before = (reorder.filled, reorder.given_up);
        reorder.push(now, seq, ts, marker, payload, &mut nacks, |s, t, m, p| {
            depack.push(s, t, m, p, &mut out)
        });
        bridged.gaps_filled = reorder.filled - before.0;
        bridged.gaps_given_up = reorder.given_up - before.1;
        self.nack_requests
            .extend(nacks.into_iter().map(|s| (source.0, s)));
        let mut media = Vec::new();
        for o in out {
            match o {
                Out::NeedKeyframe => bridged.need_keyframe = true,
                Out::BadParameterSet => bridged.bad_parameter_sets += 1,
                Out::Config(body) => media.push((a.ms(ts), body)),
                Out::Frame { rtp_ts, body, .. } => media.push((a.ms(rtp_ts), body)),
            }
        }
        for (timestamp, body) in media {
            let m = Media {
                type_id: types::VIDEO,
                timestamp,
                payload: Bytes::from(body),
            };
            self.deliver(now, pid, m, actions);
        }
        bridged
    }

    /// Whether an Opus RTP packet of participant `pid`'s publisher should go
    /// to RTMP players (transcoded to AAC): `Some(true)` when its source
    /// changed and the transcoder must start afresh.
    pub fn on_rtp_audio(
        &mut self,
        now: Instant,
        pid: Pid,
        source: (u64, u32),
        sr: Option<(u64, u32)>,
        ts: u32,
    ) -> Option<bool> {
        let s = self.streams.get_mut(&pid)?;
        if s.publisher.is_some() {
            return None;
        }
        let b = s.bridge.get_or_insert_with(|| Bridge::new(now));
        let (_, changed) = anchor(&mut b.audio, b.epoch, now, source, ts, 48);
        if changed {
            b.aac_ms = None;
            b.audio_aligned = false;
            b.held.clear();
        }
        if sr.is_some() {
            b.audio_sr = sr;
        }
        Some(changed)
    }

    /// AAC tags the transcoder made from Opus of RTP time `rtp_ts`: held
    /// until the audio is aligned, then stamped a steady 1024 samples
    /// (21.3 ms) apart from the first.
    pub fn on_aac(
        &mut self,
        now: Instant,
        pid: Pid,
        rtp_ts: u32,
        tags: Vec<Vec<u8>>,
        actions: &mut Vec<Action>,
    ) {
        let Some(b) = self.streams.get_mut(&pid).and_then(|s| s.bridge.as_mut()) else {
            return;
        };
        b.held.push((rtp_ts, tags));
        b.align_audio(now);
        let Some(a) = b.audio.filter(|_| b.audio_aligned) else {
            return;
        };
        let mut media = Vec::new();
        for (ts, tags) in std::mem::take(&mut b.held) {
            let mut clock = *b.aac_ms.get_or_insert(a.ms(ts) as f64);
            // A pause (no packets, or more lost than concealed): the steady
            // clock jumps to where the publisher's time says, never back.
            let expected = a.ms(ts) as f64;
            if expected - clock > AAC_RESYNC_MS {
                clock = expected;
            }
            for tag in tags {
                let config = tag.get(1) == Some(&0);
                media.push((clock as u32, tag));
                if !config {
                    clock += crate::transcode::AAC_FRAME as f64 / 48.0;
                }
            }
            b.aac_ms = Some(clock);
        }
        for (timestamp, body) in media {
            let m = Media {
                type_id: types::AUDIO,
                timestamp,
                payload: Bytes::from(body),
            };
            self.deliver(now, pid, m, actions);
        }
    }

    /// RTP packets for Opus the transcoder made from participant `pid`'s
    /// RTMP publisher's AAC at FLV time `ms`: 20 ms apart, on its audio SSRC.
    pub fn opus_rtp(&mut self, pid: Pid, ms: u32, packets: Vec<Vec<u8>>) -> Vec<RtpFromRtmp> {
        let Some(s) = self.streams.get_mut(&pid) else {
            return Vec::new();
        };
        let (room, key) = (s.room, s.key);
        let Some(out) = s.rtp.as_mut() else {
            return Vec::new();
        };
        let mut ts = *out.audio_ts.get_or_insert(ms.wrapping_mul(48));
        let mut rtp = Vec::with_capacity(packets.len());
        for p in packets {
            let mut pkt = Vec::with_capacity(12 + p.len());
            pkt.extend_from_slice(&[0x80, 111]);
            pkt.extend_from_slice(&out.audio_seq.to_be_bytes());
            pkt.extend_from_slice(&ts.to_be_bytes());
            pkt.extend_from_slice(&out.audio_ssrc.to_be_bytes());
            pkt.extend_from_slice(&p);
            out.audio_seq = out.audio_seq.wrapping_add(1);
            ts = ts.wrapping_add(crate::transcode::OPUS_FRAME as u32);
            rtp.push(RtpFromRtmp {
                room,
                pid,
                key,
                packet: Bytes::from(pkt),
            });
        }
        out.audio_ts = Some(ts);
        rtp
    }

    /// A message of participant `pid`'s stream: into the GOP cache, chunked
    /// once, offered to every player; then to the programs that show it.
    /// The stream's own metadata goes first when it calls for it (the
    /// publisher's is merged into it, not sent on).
    fn deliver(&mut self, now: Instant, pid: Pid, m: Media, actions: &mut Vec<Action>) {
        let Some(s) = self.streams.get_mut(&pid) else {
            return;
        };
        let publisher_meta = m.type_id == types::DATA_AMF0;
        let send = if publisher_meta {
            s.meta.from_publisher(&m)
        } else {
            s.meta.before(&m)
        };
        match send {
            meta::Send::Players(meta) => self.send_on(now, pid, meta, actions),
            meta::Send::Cache(meta) => s.cache.on_media(&meta),
            meta::Send::Nothing => {}
        }
        if !publisher_meta {
            self.send_on(now, pid, m, actions);
        }
    }

    /// [`Self::deliver`] once the metadata is dealt with.
    fn send_on(&mut self, now: Instant, pid: Pid, m: Media, actions: &mut Vec<Action>) {
        let Some(s) = self.streams.get_mut(&pid) else {
            return;
        };
        s.cache.on_media(&m);
        if m.type_id == types::VIDEO {
            s.last_video = Some((now, m.timestamp));
        }
        let watchers = s.watchers.clone();
        if !s.players.is_empty() {
            let players = s.players.clone();
            self.offer_to(now, &players, &m, actions);
        }
        for id in watchers {
            self.feed(now, id, pid, &m, (now, m.timestamp), actions);
        }
    }

    /// `m` chunked once and offered to each of `players`.
    fn offer_to(&mut self, now: Instant, players: &[u32], m: &Media, actions: &mut Vec<Action>) {
        if players.is_empty() {
            return;
        }
        // Serialized once per wire format that a player here speaks.
        let (rtmp, flv) = (std::cell::OnceCell::new(), std::cell::OnceCell::new());
        let frame = Frame::of(m);
        for &p in players {
            let Some(st) = self.conns.get_mut(&p) else {
                continue;
            };
            st.dirty = true;
            let bytes = if st.http {
                flv.get_or_init(|| http::tag_chunk(m))
            } else {
                rtmp.get_or_init(|| chunked(m))
            };
            match st.queue.offer(now, bytes, frame) {
                Offer::Queued => {
                    st.stats.packets += 1;
                    st.stats.bytes += bytes.len() as u64;
                    self.stats.player_messages += 1;
                    actions.push(Action::Wake(p));
                }
                Offer::Dropped => {
                    st.stats.drops[DropReason::Send as usize] += 1;
                    self.stats.player_drops += 1
                }
                Offer::Disconnect => {
                    st.slow = true;
                    actions.push(Action::Close {
                        idx: p,
                        why: "player too slow: behind for 5 s".into(),
                        flush: false,
                    })
                }
            }
        }
    }
}

/// A video message's presentation time (ms): its FLV time (decode time)
/// plus the AVC packet's composition time offset, a signed 24-bit field.
fn presentation_ms(m: &Media) -> u32 {
    let cts = crate::h264::composition_offset(&m.payload);
    m.timestamp.wrapping_add(cts as u32)
}

/// Whether an FLV video message is H264 with B-frames: a composition time
/// offset (presentation order differs from decode order).
fn has_bframes(m: &Media) -> bool {
    m.type_id == types::VIDEO
        && m.payload.first().is_some_and(|f| f & 0x0f == 7)
        && m.payload.get(1) == Some(&1)
        && presentation_ms(m) != m.timestamp
}

/// What of an RTMP publisher's message WebRTC players cannot be given or
/// cannot play, or get only at a cost: its kind (1 video codec, 2 audio
/// format, 4 B-frames) and a description for the room's event. RTMP and
/// HTTP-FLV players get it as it is.
///
/// B-frames: Chromium's WebRTC decoder takes the output delay reordering
/// needs for an error ("avcodec_receive_frame error: -11"), drops the
/// frames and asks for keyframes, whatever the RTP times (measured: 9 of
/// 150 frames in 5 s; tests/tests/webrtc_chromium.rs). So they are
/// re-encoded away for the WebRTC side (`reencoded`, up to `limit` per
/// shard; crate::reencode), or, past the limit or without the feature,
/// bridged as they are with presentation times as RTP times, which
/// decoders that reorder (ffmpeg, aiortc) play in order. Either way the
/// encoder can spare the cost: the event names the setting.
fn media_warning(m: &Media, reencoded: bool, limit: u32) -> Option<(u8, String)> {
    let first = *m.payload.first()?;
    let over = "RTMP and HTTP-FLV players get it as is";
    // Events carry 200 bytes (gateway_ring::msg::MAX_TEXT): the fix first.
    let fix = "x264 bframes=0 (OBS: x264 options) avoids it";
    match m.type_id {
        types::VIDEO if first & 0x80 != 0 => {
            let fourcc = m.payload.get(1..5).unwrap_or_default();
            let fourcc = String::from_utf8_lossy(fourcc);
            Some((1, format!("video: {fourcc} (enhanced RTMP) is not bridged to WebRTC, only H264 is; {over}")))
        }
        types::VIDEO if first & 0x0f != 7 => {
            let name = match first & 0x0f {
                2 => "Sorenson H.263",
                3 | 6 => "Screen video",
                4 | 5 => "VP6",
                12 => "HEVC",
                13 => "AV1",
                _ => "unknown",
            };
            let id = first & 0x0f;
            Some((1, format!("video: {name} (FLV codec id {id}) is not bridged to WebRTC, only H264 is; {over}")))
        }
        types::VIDEO if has_bframes(m) && reencoded => Some((
            4,
            format!("video: H264 with B-frames, which browsers cannot play, is re-encoded for WebRTC at a CPU cost; {fix}; RTMP and HTTP-FLV get it as is"),
        )),
        types::VIDEO if has_bframes(m) => {
            let why = match limit {
                0 => "re-encoding is off or not built in".to_string(),
                n => format!("the shard already re-encodes {n}, --bframe-reencodes"),
            };
            Some((4, format!("video: H264 with B-frames, which browsers cannot play, goes to WebRTC as is ({why}); {fix}")))
        }
        types::AUDIO if first >> 4 != 10 => {
            let name = match first >> 4 {
                0 | 3 => "linear PCM",
                1 => "ADPCM",
                2 | 14 => "MP3",
                4..=6 => "Nellymoser",
                7 => "G.711 A-law",
                8 => "G.711 mu-law",
                11 => "Speex",
                _ => "unknown",
            };
            let format = first >> 4;
            Some((2, format!("audio: {name} (FLV sound format {format}) is not bridged to WebRTC, only AAC is; {over}")))
        }
        _ => None,
    }
}

/// A GOP cache's headers and GOP, as RTMP chunks or HTTP-FLV tags, for a
/// player that starts.
fn replay_of(cache: &GopCache, http: bool) -> Vec<(Bytes, Frame)> {
    let wire = if http { http::tag_chunk } else { chunked };
    cache.replay().map(|m| (wire(m), Frame::of(m))).collect()
}

/// How often an idle program looks at arriving WebRTC/RTP publishers.
const IDLE_CHOOSE_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

/// A mix behind the program's time by more than this (nobody sent audio
/// for a while) starts again at the program's now.
const MIX_RESYNC_MS: f64 = 200.0;

/// Metadata or a sequence header: placed at the program's current time.
fn is_config_or_meta(m: &Media) -> bool {
    m.type_id == types::DATA_AMF0 || Frame::of(m) == Frame::Config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::chunk::write_message;
    use crate::rtmp::conn::types;
    use rml_amf0::Amf0Value;

    #[derive(Default)]
    struct OneRoom {
        rooms: HashMap<String, Place>,
        allow_create: bool,
        parts: Participants,
        names: u8,
    }

    impl OneRoom {
        /// No room yet; a publish creates it.
        fn creating() -> OneRoom {
            OneRoom {
                allow_create: true,
                ..Default::default()
            }
        }
    }

    impl Rooms for OneRoom {
        fn place(&self, name: &str) -> Place {
            self.rooms.get(name).copied().unwrap_or(Place::Missing)
        }
        fn authorize(
            &self,
            _: &str,
            _: bool,
            token: Option<&str>,
        ) -> Result<Option<String>, String> {
            match token {
                Some("bad") => Err("token rejected".into()),
                Some(t) => Ok(t.strip_prefix("as-").map(str::to_string)),
                None => Ok(None),
            }
        }
        fn participants(&mut self) -> &mut Participants {
            &mut self.parts
        }
        fn random(&mut self) -> [u8; 4] {
            self.names += 1;
            [0, 0, 0, self.names]
        }
        fn create(&mut self, name: &str) -> Option<u32> {
            if !self.allow_create {
                return None;
            }
            self.rooms.insert(name.into(), Place::Local(77));
            Some(77)
        }
    }

    fn command(name: &str, args: Vec<Amf0Value>) -> Vec<u8> {
        let mut v = vec![
            Amf0Value::Utf8String(name.into()),
            Amf0Value::Number(0.0),
            Amf0Value::Null,
        ];
        v.extend(args);
        let mut w = Vec::new();
        write_message(
            &mut w,
            3,
            0,
            types::COMMAND_AMF0,
            1,
            &rml_amf0::serialize(&v).unwrap(),
            128,
        );
        w
    }

    fn connect() -> Vec<u8> {
        let mut props = HashMap::new();
        props.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
        let v = vec![
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            Amf0Value::Object(props),
        ];
        let mut w = Vec::new();
        write_message(
            &mut w,
            3,
            0,
            types::COMMAND_AMF0,
            0,
            &rml_amf0::serialize(&v).unwrap(),
            128,
        );
        w
    }

    /// A hub with connections past the handshake.
    fn hub_with(n: u32) -> Hub {
        let mut h = Hub::new(true, 0);
        for i in 0..n {
            let st = ConnState {
                conn: Conn::new_after_handshake(),
                ..Default::default()
            };
            h.insert(i, st);
        }
        h
    }

    fn drain(h: &mut Hub, idx: u32) -> Vec<(u8, Bytes)> {
        let q = h.queue(idx).unwrap();
        q.take_messages()
            .into_iter()
            .map(|m| (m.type_id, m.payload))
            .collect()
    }

    #[test]
    fn publish_then_late_player_gets_headers_and_gop_at_once() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(3);
        let t0 = Instant::now();
        let mut a = Vec::new();
        let publish = [
            connect(),
            command("publish", vec![Amf0Value::Utf8String("r".into())]),
        ]
        .concat();
        h.on_bytes(t0, 0, &publish, &mut rooms, &mut a);
        assert!(
            a.iter().all(|x| !matches!(x, Action::Close { .. })),
            "{a:?}"
        );
        let mut media = Vec::new();
        write_message(&mut media, 6, 0, types::VIDEO, 1, &[0x17, 0, 1, 2, 3], 128);
        write_message(
            &mut media,
            6,
            0,
            types::VIDEO,
            1,
            &[0x17, 1, 0, 0, 0, 9],
            128,
        );
        write_message(
            &mut media,
            6,
            33,
            types::VIDEO,
            1,
            &[0x27, 1, 0, 0, 0, 8],
            128,
        );
        h.on_bytes(t0, 0, &media, &mut rooms, &mut a);
        // A player joins after the keyframe.
        let play = [
            connect(),
            command("play", vec![Amf0Value::Utf8String("r".into())]),
        ]
        .concat();
        h.on_bytes(t0, 1, &play, &mut rooms, &mut a);
        let got = drain(&mut h, 1);
        let videos: Vec<&Bytes> = got
            .iter()
            .filter(|(t, _)| *t == types::VIDEO)
            .map(|(_, p)| p)
            .collect();
        assert_eq!(videos.len(), 3, "config, keyframe, delta: {got:?}");
        assert_eq!(videos[1][0], 0x17);
        // Another push of the room is another participant: both publish.
        a.clear();
        h.on_bytes(t0, 2, &publish, &mut rooms, &mut a);
        assert!(
            a.iter().all(|x| !matches!(x, Action::Close { .. })),
            "{a:?}"
        );
        assert_eq!(h.stats.rejected, 0);
    }

    fn send(h: &mut Hub, rooms: &mut OneRoom, idx: u32, cmd: &str, key: &str) -> Vec<Action> {
        send_at(h, rooms, idx, cmd, key, Instant::now())
    }

    /// A keyframe of publisher `idx` whose payload ends in `mark`.
    fn keyframe(h: &mut Hub, rooms: &mut OneRoom, idx: u32, mark: u8) -> Vec<Action> {
        frame_at(h, rooms, idx, mark, 0, true, Instant::now())
    }

    /// The marks of the keyframes player `idx` was sent.
    fn marks(h: &mut Hub, idx: u32) -> Vec<u8> {
        drain(h, idx)
            .iter()
            .filter(|(t, p)| *t == types::VIDEO && p.len() == 6 && p[1] == 1)
            .map(|(_, p)| p[5])
            .collect()
    }

    fn closed(a: &[Action], idx: u32) -> Option<&str> {
        a.iter().find_map(|x| match x {
            Action::Close { idx: i, why, .. } if *i == idx => Some(why.as_str()),
            _ => None,
        })
    }

    /// `live/ROOM/NAME` is NAME's stream: two participants push into one
    /// room, and each player gets the one it asked for, in either URL split.
    #[test]
    fn each_participant_has_its_own_stream_in_a_room() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(5);
        assert_eq!(
            closed(&send(&mut h, &mut rooms, 0, "publish", "r/alice"), 0),
            None
        );
        assert_eq!(
            closed(&send(&mut h, &mut rooms, 1, "publish", "r/bob"), 1),
            None
        );
        keyframe(&mut h, &mut rooms, 0, 0xa1);
        keyframe(&mut h, &mut rooms, 1, 0xb1);
        send(&mut h, &mut rooms, 2, "play", "r/bob");
        send(&mut h, &mut rooms, 3, "play", "r/alice");
        keyframe(&mut h, &mut rooms, 0, 0xa2);
        keyframe(&mut h, &mut rooms, 1, 0xb2);
        assert_eq!(marks(&mut h, 2), vec![0xb1, 0xb2]);
        assert_eq!(marks(&mut h, 3), vec![0xa1, 0xa2]);
        // Nobody called carol: an onStatus error naming her, then closed.
        let a = send(&mut h, &mut rooms, 4, "play", "r/carol");
        assert!(closed(&a, 4).is_some_and(|w| w.contains("carol")), "{a:?}");
    }

    /// A phone that moved from Wi-Fi to 4G pushes its name again: the stale
    /// push is closed at once and the players go on with the new one.
    #[test]
    fn a_new_push_of_a_live_name_takes_the_stale_one_over() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(3);
        send(&mut h, &mut rooms, 0, "publish", "r/bob");
        keyframe(&mut h, &mut rooms, 0, 1);
        send(&mut h, &mut rooms, 1, "play", "r/bob");
        let a = send(&mut h, &mut rooms, 2, "publish", "r/bob");
        assert!(
            closed(&a, 0).is_some_and(|w| w.contains("taken over")),
            "{a:?}"
        );
        assert_eq!(closed(&a, 2), None);
        h.remove(Instant::now(), 0, &mut rooms.parts);
        // The stale connection's late media is not the stream's any more.
        keyframe(&mut h, &mut rooms, 0, 9);
        keyframe(&mut h, &mut rooms, 2, 2);
        assert_eq!(marks(&mut h, 1), vec![1, 2]);
        assert!(rooms
            .parts
            .find(77, "bob")
            .is_some_and(|p| rooms.parts.is_publishing(p)));
    }

    /// `live/ROOM` plays the room's publisher: a player that comes first
    /// waits for one, and moves to the next when it leaves.
    #[test]
    fn a_room_player_follows_the_rooms_publisher() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(3);
        // The room exists once someone pushed into it.
        send(&mut h, &mut rooms, 0, "publish", "r/alice");
        let a = send(&mut h, &mut rooms, 1, "play", "r");
        assert_eq!(closed(&a, 1), None);
        send(&mut h, &mut rooms, 2, "publish", "r/bob");
        keyframe(&mut h, &mut rooms, 0, 0xa1);
        keyframe(&mut h, &mut rooms, 2, 0xb1);
        assert_eq!(marks(&mut h, 1), vec![0xa1], "alice published first");
        h.remove(Instant::now(), 0, &mut rooms.parts);
        keyframe(&mut h, &mut rooms, 2, 0xb2);
        assert_eq!(marks(&mut h, 1), vec![0xb1, 0xb2], "bob's GOP, then bob");
    }

    /// A publisher that stops and publishes again on its connection is a
    /// new session; its names are forgotten once it closes. A second
    /// `play` on a playing connection is refused.
    #[test]
    fn a_connection_holds_one_stream_at_a_time() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(2);
        send(&mut h, &mut rooms, 0, "publish", "r/bob");
        let mut a = Vec::new();
        h.on_bytes(
            Instant::now(),
            0,
            &command("FCUnpublish", vec![]),
            &mut rooms,
            &mut a,
        );
        assert!(rooms.parts.find(77, "bob").is_none(), "bob left");
        let again = send(&mut h, &mut rooms, 0, "publish", "r/carol");
        assert_eq!(closed(&again, 0), None, "{again:?}");
        h.remove(Instant::now(), 0, &mut rooms.parts);
        assert!(rooms.parts.is_empty(), "nobody is left behind");
        send(&mut h, &mut rooms, 1, "publish", "r/dave");
        let a = send(&mut h, &mut rooms, 1, "play", "r/dave");
        assert!(
            closed(&a, 1).is_some_and(|w| w.contains("already")),
            "{a:?}"
        );
    }

    /// Keyframes (mark, FLV time) of the video queued for player `idx`.
    fn keyframes(h: &mut Hub, idx: u32) -> Vec<(u8, u32)> {
        let q = h.queue(idx).unwrap();
        q.take_messages()
            .into_iter()
            .filter(|m| m.type_id == types::VIDEO && m.payload.len() == 6 && m.payload[1] == 1)
            .map(|m| (m.payload[5], m.timestamp))
            .collect()
    }

    /// A video frame (a keyframe with its sequence header, or a delta)
    /// marked `mark` at FLV time `ts` from publisher `idx`, arriving at `now`.
    #[allow(clippy::too_many_arguments)]
    fn frame_at(
        h: &mut Hub,
        rooms: &mut OneRoom,
        idx: u32,
        mark: u8,
        ts: u32,
        key: bool,
        now: Instant,
    ) -> Vec<Action> {
        let mut m = Vec::new();
        if key {
            write_message(&mut m, 6, ts, types::VIDEO, 1, &[0x17, 0, 1, 2, 3], 128);
        }
        let kind = if key { 0x17 } else { 0x27 };
        write_message(
            &mut m,
            6,
            ts,
            types::VIDEO,
            1,
            &[kind, 1, 0, 0, 0, mark],
            128,
        );
        let mut a = Vec::new();
        h.on_bytes(now, idx, &m, rooms, &mut a);
        a
    }

    /// `connect` and then `cmd key` on connection `idx`, arriving at `now`.
    fn send_at(
        h: &mut Hub,
        rooms: &mut OneRoom,
        idx: u32,
        cmd: &str,
        key: &str,
        now: Instant,
    ) -> Vec<Action> {
        let bytes = [
            connect(),
            command(cmd, vec![Amf0Value::Utf8String(key.into())]),
        ]
        .concat();
        let mut a = Vec::new();
        h.on_bytes(now, idx, &bytes, rooms, &mut a);
        a
    }

    /// `live/ROOM?participant=ME` is the room's program: the active
    /// speaker other than ME, switched at the speaker's keyframe (at once
    /// from its cached GOP), on the program's own time (wall time since it
    /// started): a cached GOP is packed after the last picture and caught
    /// up to the program's now, so the player is not left behind.
    #[test]
    fn the_program_follows_the_active_speaker_on_its_own_time() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(4);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        send_at(&mut h, &mut rooms, 0, "publish", "r/alice", t0);
        send_at(&mut h, &mut rooms, 1, "publish", "r/bob", t0);
        send_at(&mut h, &mut rooms, 2, "play", "r?participant=carol", t0);
        send_at(&mut h, &mut rooms, 3, "play", "r?participant=alice", t0);
        frame_at(&mut h, &mut rooms, 0, 0xa1, 0, true, at(0));
        frame_at(&mut h, &mut rooms, 1, 0xb1, 50_000, true, at(0));
        frame_at(&mut h, &mut rooms, 0, 0xa2, 1_000, true, at(1_000));
        frame_at(&mut h, &mut rooms, 1, 0xb2, 51_400, false, at(1_400));
        // Before anyone spoke: the first publisher (but never yourself).
        assert_eq!(keyframes(&mut h, 2), vec![(0xa1, 0), (0xa2, 1_000)]);
        assert_eq!(
            keyframes(&mut h, 3),
            vec![(0xb1, 0), (0xb2, 1_400)],
            "alice sees bob"
        );
        let (alice, bob) = (
            rooms.parts.find(77, "alice").unwrap(),
            rooms.parts.find(77, "bob").unwrap(),
        );
        // bob speaks at 1.5 s: carol's program switches at once from bob's
        // cached GOP; its keyframe (older than alice's last picture) right
        // after that picture, its newest frame when it arrived.
        h.speaker_changed(at(1_500), 77, bob, &mut rooms.parts);
        frame_at(&mut h, &mut rooms, 1, 0xb3, 52_500, true, at(2_500));
        frame_at(&mut h, &mut rooms, 0, 0xa3, 2_000, true, at(2_500));
        assert_eq!(
            keyframes(&mut h, 2),
            vec![(0xb1, 1_001), (0xb2, 1_400), (0xb3, 2_500)]
        );
        // alice speaks: alice's own program stays on bob.
        h.speaker_changed(at(3_000), 77, alice, &mut rooms.parts);
        frame_at(&mut h, &mut rooms, 1, 0xb4, 53_500, true, at(3_500));
        let mine = keyframes(&mut h, 3);
        assert!(mine.iter().all(|(mark, _)| mark >> 4 == 0xb), "{mine:?}");
    }

    /// A program's audio is its mix: the source's own audio is not sent;
    /// the mix takes everyone but the program's `me` (anonymous players
    /// share a program that leaves nobody out), and is stamped on the
    /// program's time, 1024 samples apart, from where the program is now.
    #[test]
    fn a_programs_audio_is_the_mix_of_everyone_but_me() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(5);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + std::time::Duration::from_millis(ms);
        send_at(&mut h, &mut rooms, 0, "publish", "r/alice", t0);
        send_at(&mut h, &mut rooms, 1, "publish", "r/bob", t0);
        send_at(&mut h, &mut rooms, 2, "play", "r?participant=alice", t0);
        send_at(&mut h, &mut rooms, 3, "play", "r", t0);
        send_at(&mut h, &mut rooms, 4, "play", "r", t0);
        let (alice, bob) = (
            rooms.parts.find(77, "alice").unwrap(),
            rooms.parts.find(77, "bob").unwrap(),
        );
        let ids = h.programs_of(77, |_| true);
        assert_eq!(ids.len(), 2, "alice's and the anonymous players' one");
        let mine = h.programs_of(77, |p| p.me == "alice")[0];
        let anon = h.programs_of(77, |p| p.me.is_empty())[0];
        let sorted = |mut v: Vec<u64>| {
            v.sort();
            v
        };
        assert_eq!(h.mixes_for(77, alice, &rooms.parts), vec![anon]);
        assert_eq!(
            sorted(h.mixes_for(77, bob, &rooms.parts)),
            sorted(vec![mine, anon])
        );
        // bob's AAC goes to the transcoder with both mixes; not to players.
        frame_at(&mut h, &mut rooms, 1, 0xb1, 0, true, at(0));
        h.jobs.clear();
        let mut m = Vec::new();
        write_message(&mut m, 4, 10, types::AUDIO, 1, &[0xaf, 1, 0x21, 0x10], 128);
        h.on_bytes(at(10), 1, &m, &mut rooms, &mut Vec::new());
        assert!(matches!(
            h.jobs.as_slice(),
            [Job::Aac { mixes, .. }] if sorted(mixes.clone()) == sorted(vec![mine, anon])
        ));
        let audio = |h: &mut Hub, idx: u32| -> Vec<(u32, u8)> {
            h.queue(idx)
                .unwrap()
                .take_messages()
                .into_iter()
                .filter(|m| m.type_id == types::AUDIO)
                .map(|m| (m.timestamp, m.payload[1]))
                .collect()
        };
        assert!(audio(&mut h, 2).is_empty(), "bob's own audio is not sent");
        // The mix arrives at 2 s: config and two frames from there.
        let tags = vec![
            vec![0xaf, 0, 0x11, 0x90],
            vec![0xaf, 1, 1],
            vec![0xaf, 1, 2],
        ];
        h.on_mix(at(2_000), mine, tags, &mut Vec::new());
        assert_eq!(audio(&mut h, 2), vec![(2_000, 0), (2_000, 1), (2_021, 1)]);
        assert!(audio(&mut h, 3).is_empty(), "another program's mix");
        // Steady 21.3 ms steps while on time; after a gap, from the clock.
        h.on_mix(at(2_050), mine, vec![vec![0xaf, 1, 3]], &mut Vec::new());
        h.on_mix(at(3_000), mine, vec![vec![0xaf, 1, 4]], &mut Vec::new());
        assert_eq!(audio(&mut h, 2), vec![(2_042, 1), (3_000, 1)]);
        // The last anonymous player leaves: its mix ends on the transcoder.
        h.jobs.clear();
        h.remove(at(4_000), 3, &mut rooms.parts);
        assert!(h.jobs.is_empty(), "one player of it is left");
        h.remove(at(4_000), 4, &mut rooms.parts);
        assert!(matches!(h.jobs.as_slice(), [Job::MixEnd { program }] if *program == anon));
    }

    /// A WebRTC participant's RTP reaches the players of its name only.
    #[test]
    fn bridged_rtp_goes_to_its_participants_players() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(3);
        send(&mut h, &mut rooms, 0, "publish", "r/bob");
        let web = rooms.parts.join(77, "web");
        rooms.parts.publish(web, Kinds::BOTH, false).unwrap();
        send(&mut h, &mut rooms, 1, "play", "r/web");
        send(&mut h, &mut rooms, 2, "play", "r/bob");
        let t0 = Instant::now();
        assert!(h.wants_rtp(t0, web, &rooms.parts));
        let mut a = Vec::new();
        // SPS, PPS, IDR as single NAL unit packets.
        let sps = [0x67, 0x42, 0x00, 0x1f, 0xe9, 0x02, 0xc1, 0x2c, 0x80];
        let nals: [&[u8]; 3] = [&sps, &[0x68, 0xce, 0x3c, 0x80], &[0x65, 0x88, 0x84]];
        for (i, nal) in nals.iter().enumerate() {
            h.on_rtp_video(t0, web, (5, 5), None, i as u16, 0, i == 2, nal, &mut a);
        }
        let web_got = drain(&mut h, 1);
        assert!(
            web_got
                .iter()
                .any(|(t, p)| *t == types::VIDEO && p[0] == 0x17 && p[1] == 1),
            "web's keyframe: {web_got:?}"
        );
        assert!(drain(&mut h, 2).iter().all(|(t, _)| *t != types::VIDEO));
    }

    /// Audio that arrives 100 ms after video but, per the sender reports,
    /// was captured at the same instant lands at the same FLV time.
    #[test]
    fn sender_reports_line_audio_up_with_video() {
        let t0 = Instant::now();
        let mut b = Bridge::new(t0);
        let ntp = 1000u64 << 32;
        anchor(&mut b.video, b.epoch, t0, (1, 1), 90_000, 90);
        let later = t0 + std::time::Duration::from_millis(100);
        anchor(&mut b.audio, b.epoch, later, (1, 2), 48_000, 48);
        b.video_sr = Some((ntp, 90_000));
        b.align_audio(later);
        assert!(!b.audio_aligned, "waits for the audio's report");
        b.audio_sr = Some((ntp, 48_000));
        b.align_audio(later);
        assert!(b.audio_aligned);
        let (v, a) = (b.video.unwrap(), b.audio.unwrap());
        assert_eq!(v.ms(90_000), a.ms(48_000));
        assert_eq!(v.ms(90_000 + 90 * 500), a.ms(48_000 + 48 * 500));

        // Without reports, arrival order stands after the wait.
        let mut c = Bridge::new(t0);
        anchor(&mut c.audio, c.epoch, t0, (1, 2), 0, 48);
        c.align_audio(t0 + ALIGN_WAIT);
        assert!(c.audio_aligned);
    }

    /// A player whose queue never drains is dropped after the timeout and
    /// reported as a slow consumer, not as an ordinary leave.
    #[test]
    fn a_player_that_never_reads_is_dropped_as_slow() {
        // RTMP and HTTP-FLV players alike.
        for http in [false, true] {
            let mut rooms = OneRoom::creating();
            let mut h = hub_with(2);
            let t0 = Instant::now();
            let mut a = Vec::new();
            let publish = [
                connect(),
                command(
                    "publish",
                    vec![Amf0Value::Utf8String("s".into()), Amf0Value::Null],
                ),
            ]
            .concat();
            h.on_bytes(t0, 0, &publish, &mut rooms, &mut a);
            let play = if http {
                h.insert(1, ConnState::http_flv());
                b"GET /live/s.flv HTTP/1.1\r\n\r\n".to_vec()
            } else {
                [
                    connect(),
                    command("play", vec![Amf0Value::Utf8String("s".into())]),
                ]
                .concat()
            };
            h.on_bytes(t0, 1, &play, &mut rooms, &mut a);
            let mut frame = vec![0x27u8, 1, 0, 0, 0];
            frame.resize(200_000, 7);
            let mut closed = false;
            for i in 0..40u32 {
                a.clear();
                // A keyframe first: a new player waits for one.
                frame[0] = if i == 0 { 0x17 } else { 0x27 };
                let mut m = Vec::new();
                write_message(&mut m, 6, i * 33, types::VIDEO, 1, &frame, 128);
                let now = t0 + std::time::Duration::from_millis(200 * i as u64);
                h.on_bytes(now, 0, &m, &mut rooms, &mut a);
                if a.iter().any(|x| matches!(x, Action::Close { idx: 1, .. })) {
                    closed = true;
                    break;
                }
            }
            assert!(
                closed,
                "the stalled player was never dropped (http: {http})"
            );
            h.events_out.clear();
            h.remove(Instant::now(), 1, &mut rooms.parts);
            assert!(
                h.events_out.iter().any(|e| matches!(
                    e,
                    RingEvent::SessionEnded {
                        reason: END_SLOW,
                        ..
                    }
                )),
                "{:?}",
                h.events_out
            );
        }
    }

    /// RTP time for WebRTC is presentation time: the FLV time plus the
    /// signed 24-bit composition offset (B-frames); the room is warned once
    /// per kind about what browsers cannot play.
    #[test]
    fn presentation_times_and_media_warnings() {
        let video = |ts: u32, head: [u8; 5]| Media {
            type_id: types::VIDEO,
            timestamp: ts,
            payload: Bytes::copy_from_slice(&[&head[..], &[0x65, 0]].concat()),
        };
        assert_eq!(presentation_ms(&video(1000, [0x27, 1, 0, 0, 66])), 1066);
        assert_eq!(
            presentation_ms(&video(1000, [0x27, 1, 0xff, 0xff, 0xdf])),
            967
        );
        assert_eq!(presentation_ms(&video(1000, [0x17, 1, 0, 0, 0])), 1000);
        assert_eq!(
            media_warning(&video(1000, [0x17, 1, 0, 0, 0]), false, 2),
            None
        );
        for (reencoded, limit, says) in [
            (true, 2, "is re-encoded"),
            (false, 2, "already re-encodes 2"),
            (false, 0, "re-encoding is off"),
        ] {
            let bframes = media_warning(&video(1000, [0x27, 1, 0, 0, 66]), reencoded, limit);
            let (kind, what) = bframes.unwrap();
            assert_eq!(kind, 4);
            assert!(what.contains("B-frames") && what.contains(says), "{what}");
            assert!(what.contains("bframes=0"), "{what}");
            assert!(what.len() <= gateway_ring::msg::MAX_TEXT, "{what}");
        }
        let hevc = media_warning(&video(0, [0x1c, 1, 0, 0, 0]), false, 2).unwrap();
        assert_eq!(hevc.0, 1);
        assert!(hevc.1.contains("HEVC"), "{}", hevc.1);
        let mp3 = Media {
            type_id: types::AUDIO,
            timestamp: 0,
            payload: Bytes::from_static(&[0x2f, 0xff]),
        };
        let mp3 = media_warning(&mp3, false, 2).unwrap();
        assert_eq!(mp3.0, 2);
        assert!(mp3.1.contains("MP3"), "{}", mp3.1);
    }

    /// `connect` and `publish` of `name`, as a client sends them.
    fn publish_of(name: &str) -> Vec<u8> {
        let name = Amf0Value::Utf8String(name.into());
        [connect(), command("publish", vec![name])].concat()
    }

    /// A hub of `conns` connections that re-encodes one B-frame publisher,
    /// and an FLV AVC sequence header for its publishers.
    fn reencoding_hub(conns: u32) -> (Hub, Vec<u8>) {
        let mut h = hub_with(conns);
        h.bframe_reencodes = 1;
        let sps = [0x67, 0x42, 0x00, 0x1f, 0xe9, 0x02, 0xc1, 0x2c, 0x80];
        let config = crate::h264::config_tag(&sps, &[0x68, 0xce, 0x06, 0xe2]).unwrap();
        (h, config)
    }

    /// RTMP publishers with B-frames: up to the shard's limit their video
    /// goes to the re-encode thread (its sequence header first) and only
    /// what comes back is packetized, at its presentation time; past the
    /// limit it is packetized as it is. The room is told which, per
    /// publisher.
    #[test]
    fn b_frames_are_reencoded_up_to_the_shards_limit() {
        let mut rooms = OneRoom::creating();
        let (mut h, config) = reencoding_hub(2);
        let t0 = Instant::now();
        let mut a = Vec::new();
        // An IDR shown 66 ms after it is decoded: B-frames follow.
        let idr = [0x17, 1, 0, 0, 66, 0, 0, 0, 2, 0x65, 0x88];
        let mut pids = Vec::new();
        for (idx, name) in [(0, "a"), (1, "b")] {
            let publish = publish_of(&format!("r/{name}"));
            h.on_bytes(t0, idx, &publish, &mut rooms, &mut a);
            let mut media = Vec::new();
            write_message(&mut media, 6, 0, types::VIDEO, 1, &config, 128);
            write_message(&mut media, 6, 1000, types::VIDEO, 1, &idr, 128);
            h.on_bytes(t0, idx, &media, &mut rooms, &mut a);
            let Some(Role::Publisher { pid, .. }) = h.conns.get(&idx).map(|c| c.role) else {
                panic!("{name} publishes");
            };
            pids.push(pid);
        }
        let (a_pid, b_pid) = (pids[0], pids[1]);
        let videos: Vec<(Pid, u32, u8)> = h
            .jobs
            .iter()
            .filter_map(|j| match j {
                Job::Video { stream, ms, flv } => Some((*stream, *ms, flv[1])),
                _ => None,
            })
            .collect();
        assert_eq!(videos, [(a_pid, 0, 0), (a_pid, 1000, 1)]);
        let rtp_ts = |h: &Hub, pid: Pid| -> Vec<u32> {
            h.rtp_out
                .iter()
                .filter(|r| r.pid == pid)
                .map(|r| crate::rtp::RtpHeader::parse(&r.packet).unwrap().timestamp)
                .collect()
        };
        assert!(rtp_ts(&h, a_pid).is_empty());
        // b's as it is: parameter sets and the IDR, at presentation time.
        assert_eq!(rtp_ts(&h, b_pid), [1066 * 90, 1066 * 90]);
        let warnings: Vec<String> = h
            .events_out
            .iter()
            .filter_map(|e| match e {
                RingEvent::MediaWarning { what, .. } => Some(what.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("is re-encoded"), "{warnings:?}");
        assert!(warnings[1].contains("already re-encodes 1"), "{warnings:?}");
        // What the re-encode thread made of a's: packetized at its time.
        h.rtp_out.clear();
        h.on_reencoded(a_pid, vec![(1066, config.clone()), (1066, idr.to_vec())]);
        assert_eq!(rtp_ts(&h, a_pid), [1066 * 90, 1066 * 90]);
        // Its output for b, which is not re-encoded, is stale: dropped.
        h.rtp_out.clear();
        h.on_reencoded(b_pid, vec![(1100, idr.to_vec())]);
        assert!(h.rtp_out.is_empty());
    }

    /// A publisher whose composition offsets start after its keyframe:
    /// the re-encoder gets the GOP so far first, so WebRTC players need not
    /// wait for the next keyframe.
    #[test]
    fn a_reencode_that_starts_mid_gop_starts_from_its_keyframe() {
        let mut rooms = OneRoom::creating();
        let (mut h, config) = reencoding_hub(1);
        let t0 = Instant::now();
        let mut a = Vec::new();
        h.on_bytes(t0, 0, &publish_of("r/a"), &mut rooms, &mut a);
        let mut media = Vec::new();
        write_message(&mut media, 6, 0, types::VIDEO, 1, &config, 128);
        let idr = [0x17, 1, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88];
        write_message(&mut media, 6, 1000, types::VIDEO, 1, &idr, 128);
        write_message(&mut media, 8, 1010, types::AUDIO, 1, &[0xaf, 1, 9], 128);
        let b = [0x27, 1, 0, 0, 33, 0, 0, 0, 2, 0x41, 0x9a];
        write_message(&mut media, 6, 1033, types::VIDEO, 1, &b, 128);
        h.on_bytes(t0, 0, &media, &mut rooms, &mut a);
        let videos: Vec<(u32, u8)> = h
            .jobs
            .iter()
            .filter_map(|j| match j {
                Job::Video { ms, flv, .. } => Some((*ms, flv[0])),
                _ => None,
            })
            .collect();
        assert_eq!(videos, [(0, 0x17), (1000, 0x17), (1033, 0x27)]);
    }

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
        let mut a = Vec::new();
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
        let mut a = Vec::new();
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
            if a.iter().any(|x| matches!(x, Action::Close { idx: 0, .. })) {
                closed = true;
                break;
            }
        }
        assert!(closed, "never closed");
        assert_eq!(h.limit_hits[Limit::RtmpMemory as usize], 1);
        assert!(h.queue(0).unwrap().bytes() <= crate::rtmp::stream::MAX_UNREAD);
    }

    #[test]
    fn unknown_rooms_apps_and_remote_rooms() {
        let mut rooms = OneRoom {
            rooms: HashMap::from([("far".to_string(), Place::Remote(1))]),
            allow_create: false,
            ..Default::default()
        };
        let mut h = hub_with(3);
        let t0 = Instant::now();
        let mut a = Vec::new();
        let play = [
            connect(),
            command("play", vec![Amf0Value::Utf8String("none".into())]),
        ]
        .concat();
        h.on_bytes(t0, 0, &play, &mut rooms, &mut a);
        assert!(
            a.iter().any(
                |x| matches!(x, Action::Close { idx: 0, why, .. } if why.contains("no stream"))
            ),
            "{a:?}"
        );
        a.clear();
        let publish = [
            connect(),
            command("publish", vec![Amf0Value::Utf8String("new".into())]),
        ]
        .concat();
        h.on_bytes(t0, 1, &publish, &mut rooms, &mut a);
        assert!(
            a.iter()
                .any(|x| matches!(x, Action::Close { idx: 1, why, .. } if why.contains("off"))),
            "{a:?}"
        );
        a.clear();
        let far = [
            connect(),
            command("play", vec![Amf0Value::Utf8String("far".into())]),
        ]
        .concat();
        h.on_bytes(t0, 2, &far, &mut rooms, &mut a);
        assert!(
            a.iter().any(|x| matches!(
                x,
                Action::Handoff {
                    idx: 2,
                    shard: 1,
                    ..
                }
            )),
            "{a:?}"
        );
    }
}
