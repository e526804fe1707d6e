//! The room core of one shard (sans-IO): rooms, their participants, every
//! session and connection in them, and the routing of every track to every
//! kind of consumer (WebRTC players, RTP egresses, RTMP players), bridge
//! state included. The shard does I/O only: it feeds the core what arrived
//! and drains one [`Output`] queue.
//!
//! ```text
//!             ┌──────────────────────── Core ─────────────────────────┐
//! datagram ──▶│ Router (UDP sessions) ──▶ Inbound ──▶ fan-out (shard: │
//!             │   │ RTP video/audio of a participant     send slots)  │
//!             │   └──▶ Hub (RTMP conns, participant streams, bridges) │
//! RTMP bytes ▶│ Hub ──▶ FLV to players; RTP to the router's fan-out   │
//! DTLS, codec▶│ Participants: one name, one id, whatever the protocol │
//! timeout   ─▶│                                                        │──▶ poll_output()
//!             └────────────────────────────────────────────────────────┘
//! ```
//!
//! Drive loop, as the shard runs it:
//!
//! ```text
//! loop {
//!     for each completion: handle_datagram / handle_rtmp_bytes / ...
//!         (a datagram that is media comes back as an Inbound: the shard
//!          fans it out with egresses() + prepare_egress(), in its send slots)
//!     handle_dtls / handle_transcoded for what the slow-path threads sent back
//!     if now >= poll_timeout(): handle_timeout(now, ntp)
//!     while let Some(o) = poll_output() { do the I/O it asks for }
//! }
//! ```
//!
//! Nothing here reads a clock, touches a socket or blocks: time is an
//! argument, and the codec and DTLS threads are reached through outputs.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_ring::msg::{
    room_shard, valid_room_name, DropReason, EgressSpec, EndReason, Event, IngestSpec, MediaKind,
    Outcome, RoomSpec, SessionStats, SrtpKey, WebrtcSpec,
};
use gateway_ring::token::{TokenKeys, TokenRole};
use gateway_ring::{RoomId, SessionId};
use tracing::info;

use crate::hub::{Bridged, ConnState, Hub, Place, Rooms};
use crate::media::{Handle, Inbound, Source};
use crate::output::{Action, Mark, Note, Output, Outputs};
use crate::participants::{ParticipantId, Participants};
use crate::router::Router;
use crate::rtmp::conn::Event as RtmpEvent;
use crate::rtmp::stream::PlayerQueue;
use crate::rtp::RtpHeader;
use crate::transcode::{Done, Job, OpusUses};

/// How often RTCP reports go out and consent is checked.
pub const TICK_EVERY: Duration = Duration::from_millis(250);
/// Most lost audio packets in a row concealed (200 ms); a longer gap is a
/// pause, and the bridge's audio clock jumps over it.
const MAX_CONCEALED: u16 = 10;

/// What [`Core::remove_session`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// A UDP session: close this socket.
    Socket(Handle),
    /// An RTMP connection: it closes through an [`Output::Rtmp`].
    Rtmp,
    NotFound,
}

/// The core's share of the dataplane's configuration.
/// Where the core's randomness comes from (names generated for RTMP
/// clients that give none): the system's source in the shard, a fixed one
/// in tests and fuzzing. An input, like time.
pub type RandomSource = Box<dyn FnMut(&mut [u8])>;

/// An NTP timestamp (seconds since 1900 . fraction) as ms since the Unix
/// epoch (0 before it).
fn unix_ms(ntp: u64) -> u64 {
    let secs = (ntp >> 32).saturating_sub(2_208_988_800);
    secs * 1000 + (((ntp & 0xffff_ffff) * 1000) >> 32)
}

/// The system's random source (`ring`'s), for the shard. A failure leaves
/// zeros: a generated name is then `guest-00000000`, and a second such push
/// takes the first over; not worth failing for.
pub fn system_random() -> RandomSource {
    let rng = ring::rand::SystemRandom::new();
    Box::new(move |b: &mut [u8]| {
        let _ = ring::rand::SecureRandom::fill(&rng, b);
    })
}

pub struct CoreConfig {
    pub shard: u32,
    pub shards: u32,
    pub limits: crate::limits::Limits,
    /// Keep a GOP cache per participant stream for RTMP players.
    pub gop_cache: bool,
    /// Create a room for an RTMP publish that names an unknown one.
    pub auto_room: bool,
    /// Room-token keys: when set, RTMP publish and play need `?token=`.
    pub tokens: Option<Arc<TokenKeys>>,
    pub random: RandomSource,
}

impl CoreConfig {
    /// What the harnesses and tests run a core with: shard `shard` of
    /// `shards`, the default limits, a GOP cache, rooms made on publish, no
    /// tokens, randomness from `random`.
    pub fn harness(shard: u32, shards: u32, random: RandomSource) -> CoreConfig {
        CoreConfig {
            shard,
            shards,
            limits: crate::limits::Limits::default(),
            gop_cache: true,
            auto_room: true,
            tokens: None,
            random,
        }
    }
}

pub struct Core {
    router: Router,
    hub: Hub,
    /// Each room's active speaker, from its participants' audio levels.
    speakers: crate::speakers::Speakers,
    cfg: CoreConfig,
    next_room: u32,
    next_tick: Instant,
    /// The latest `now` an input brought (what [`Self::poll_output`]
    /// settles notes with).
    now: Instant,
    /// The one queue the shard drains; the router's and the hub's own
    /// queues are gathered into it ([`Self::collect`]).
    out: Outputs,
    /// Other shards watching this shard's rooms (see `watchers.rs`).
    watchers: watchers::Watchers,
}

/// Room lookups and creation for the hub, against the router's rooms.
struct CoreRooms<'a> {
    router: &'a mut Router,
    cfg: &'a mut CoreConfig,
    next_room: &'a mut u32,
}

impl Rooms for CoreRooms<'_> {
    fn place(&self, name: &str) -> Place {
        // A replica here (this shard's WebRTC players of the room) is not
        // where its RTMP connections go: the owner is.
        if let Some(room) = self
            .router
            .room_by_name(name)
            .filter(|&r| self.router.owns(r))
        {
            return Place::Local(room);
        }
        let home = room_shard(name, self.cfg.shards);
        if home != self.cfg.shard {
            Place::Remote(home)
        } else {
            Place::Missing
        }
    }

    fn authorize(
        &self,
        room: &str,
        publish: bool,
        token: Option<&str>,
    ) -> Result<Option<String>, String> {
        let Some(keys) = self.cfg.tokens.as_deref() else {
            return Ok(None);
        };
        let role = if publish {
            TokenRole::Publish
        } else {
            TokenRole::Subscribe
        };
        keys.verify(token, room, role)
            .map_err(|e| format!("{e} (rtmp://host/live/ROOM?token=...)"))
    }

    fn create(&mut self, name: &str) -> Option<RoomId> {
        if !self.cfg.auto_room || !valid_room_name(name) {
            return None;
        }
        *self.next_room += 1;
        let room = RoomId::dataplane(self.cfg.shard, *self.next_room);
        let spec = RoomSpec {
            room,
            name: name.to_string(),
        };
        self.router.add_room(spec.clone(), None);
        info!(
            shard = self.cfg.shard,
            room = name,
            "room created for an RTMP publisher"
        );
        // The controlplane learns the room as it does on a resync.
        self.router.out.event(Event::Room(spec));
        Some(room)
    }

    fn participants(&mut self) -> &mut Participants {
        &mut self.router.participants
    }

    fn random(&mut self) -> [u8; 4] {
        let mut b = [0u8; 4];
        (self.cfg.random)(&mut b);
        b
    }
}

impl Core {
    pub fn new(cfg: CoreConfig, now: Instant) -> Core {
        let mut hub = Hub::new(cfg.gop_cache, cfg.shard);
        hub.limits = (&cfg.limits).into();
        hub.bframe_reencodes = crate::limits::bframe_reencodes(&cfg.limits);
        hub.video_transcodes = crate::limits::video_transcodes(&cfg.limits);
        Core {
            router: Router::new(&cfg.limits, cfg.shard),
            hub,
            speakers: Default::default(),
            cfg,
            next_room: 0,
            next_tick: now,
            now,
            out: Outputs::default(),
            watchers: Default::default(),
        }
    }

    // ---- commands from the controlplane ----

    /// Adds a room: its own, if this shard is the room's owner
    /// (`room_shard` of its name); else a replica for this shard's
    /// players of it (see `relay.rs`).
    pub fn add_room(&mut self, spec: RoomSpec) -> Outcome {
        let owner = room_shard(&spec.name, self.cfg.shards);
        let replica = (owner != self.cfg.shard).then_some(owner);
        self.router.add_room(spec, replica)
    }

    /// Deletes a room: its UDP sessions' handles (close their sockets);
    /// its RTMP connections are closed through outputs.
    pub fn remove_room(&mut self, now: Instant, room: RoomId) -> Option<Vec<Handle>> {
        let handles = self.router.remove_room(room)?;
        self.relay_room_removed(room);
        self.speakers.remove_room(room);
        self.hub.close_room(room, &mut self.out);
        self.collect(now);
        Some(handles)
    }

    pub fn add_ingest(&mut self, spec: IngestSpec) -> Result<Handle, Outcome> {
        self.router.add_ingest(spec)
    }

    pub fn add_egress(&mut self, spec: EgressSpec) -> Result<Handle, Outcome> {
        self.router.add_egress(spec)
    }

    pub fn add_webrtc(&mut self, now: Instant, spec: WebrtcSpec) -> Result<Handle, Outcome> {
        self.router.add_webrtc(now, spec)
    }

    /// Removes a UDP session or closes an RTMP participant's connection.
    pub fn remove_session(&mut self, now: Instant, session: SessionId) -> Removed {
        if let Some(h) = self.router.remove_session(session) {
            self.collect(now);
            return Removed::Socket(h);
        }
        match self.hub.find_session(session) {
            Some(idx) => {
                self.out.push(Output::Rtmp(Action::Close {
                    idx,
                    why: "deleted through the API".into(),
                    flush: false,
                }));
                Removed::Rtmp
            }
            None => Removed::NotFound,
        }
    }

    /// Everything live, as the controlplane rebuilds its view from.
    pub fn resync(&self) -> Vec<Event> {
        let mut out: Vec<Event> = self.router.rooms().cloned().map(Event::Room).collect();
        out.extend(self.router.ingests().cloned().map(Event::Ingest));
        out.extend(self.router.egress_specs().cloned().map(Event::Egress));
        out.extend(self.router.webrtc_specs().cloned().map(Event::Webrtc));
        out.extend(self.hub.participants().into_iter().map(Event::Rtmp));
        out
    }

    // ---- UDP ----

    /// One datagram on session `h`'s socket (unprotected in place). Media
    /// comes back as an [`Inbound`] for the shard's fan-out, after the
    /// participant's RTMP players had their share.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        h: Handle,
        src: SocketAddrV4,
        buf: &mut [u8],
    ) -> Option<Inbound> {
        // What the router queued (STUN answers, DTLS records, RTCP) is
        // collected by `poll_output`, once per turn, not per datagram.
        self.now = now;
        let inbound = self.router.handle_datagram(now, h, src, buf)?;
        if let Some(level) = inbound.level {
            self.on_level(now, inbound.room, inbound.participant, level);
        }
        let plain = &buf[..inbound.len];
        match inbound.kind {
            MediaKind::Video => self.bridge_video(now, &inbound, plain),
            MediaKind::Audio => self.bridge_audio(now, &inbound, plain),
        }
        Some(inbound)
    }

    /// The room's egress handles, in order (the fan-out's list).
    #[inline]
    pub fn egresses(&self, room: RoomId) -> &[Handle] {
        self.router.egresses(room)
    }

    /// See [`Router::prepare_egress`]: the hot path, no allocation.
    #[inline]
    pub fn prepare_egress(
        &mut self,
        now: Instant,
        h: Handle,
        inbound: &Inbound,
        pkt: &mut [u8],
    ) -> Option<(usize, SocketAddrV4)> {
        self.router.prepare_egress(now, h, inbound, pkt)
    }

    pub fn count_drop(&mut self, h: Handle, reason: DropReason) {
        self.router.count_drop(h, reason);
    }

    pub fn count_drop_by_id(&mut self, session: SessionId, reason: DropReason) {
        self.router.count_drop_by_id(session, reason);
    }

    pub fn session_id(&self, h: Handle) -> Option<SessionId> {
        self.router.session_id(h)
    }

    pub fn session_count(&self) -> usize {
        self.router.session_count()
    }

    /// Ends `session` for `reason` (DTLS failed, an internal error while
    /// handling it).
    pub fn end_session(&mut self, now: Instant, session: SessionId, reason: EndReason) {
        self.router.end_session(session, reason);
        self.collect(now);
    }

    /// An audio level of a participant (sent by a WebRTC publisher, or
    /// measured from an RTMP publisher's decoded AAC): the room's active
    /// speaker may change.
    fn on_level(&mut self, now: Instant, room: RoomId, pid: ParticipantId, level: u8) {
        let Some(pid) = self.speakers.on_level(now, room, pid, level) else {
            return;
        };
        // The room's programs switch to the new speaker at its keyframe;
        // narrow players keep its line first.
        self.hub
            .speaker_changed(now, room, pid, &mut self.router.participants);
        self.router.set_speaker(room, pid);
        let participant = self.router.participants.name(pid).unwrap_or("").to_string();
        self.out.event(Event::Speaker { room, participant });
    }

    /// A participant's RTP video, to its RTMP players: depacketized (H264),
    /// or transcoded to H264 on the re-encode thread (VP8, VP9, AV1; past
    /// the shard's `--video-transcodes`, no picture and a `media_warning`).
    fn bridge_video(&mut self, now: Instant, inbound: &Inbound, pkt: &[u8]) {
        let parts = &self.router.participants;
        if !self.hub.wants_rtp(now, inbound.participant, parts) {
            return;
        }
        let Some(codec) = inbound.codec else { return };
        let Ok(h) = RtpHeader::parse(pkt) else { return };
        let mut end = pkt.len();
        if pkt[0] & 0x20 != 0 {
            // RFC 3550 §5.1 padding: the last byte counts it.
            end = end.saturating_sub(pkt[end - 1] as usize).max(h.len);
        }
        let sr = self.router.publisher_sr(inbound.source, inbound.ssrc);
        let bridged = self.hub.on_rtp_video(
            now,
            inbound.participant,
            codec,
            (inbound.source, inbound.ssrc),
            sr,
            h.seq_no,
            h.timestamp,
            h.marker,
            &pkt[h.len..end],
            &mut self.out,
        );
        self.settle_bridged(now, inbound.source, bridged);
        self.collect(now);
    }

    /// What bridging a publisher's video (a packet, or a deadline of its
    /// reorder buffer) asks of its publishing session: a keyframe, counters.
    fn settle_bridged(&mut self, now: Instant, source: Source, bridged: Bridged) {
        if bridged.need_keyframe {
            self.router.request_keyframe_of(now, source);
        }
        let Some(session) = source.session() else {
            return;
        };
        for _ in 0..bridged.bad_parameter_sets {
            self.router.count_drop_by_id(session, DropReason::Malformed);
        }
        if bridged.gaps_filled + bridged.gaps_given_up > 0 {
            self.router
                .count_bridge_gaps(session, bridged.gaps_filled, bridged.gaps_given_up);
        }
    }

    /// A participant's Opus, to the transcoder when it is wanted: by its
    /// RTMP players (as AAC), by the room's programs (in their mixes, and
    /// its level when the publisher sends none).
    fn bridge_audio(&mut self, now: Instant, inbound: &Inbound, pkt: &[u8]) {
        let sr = self.router.publisher_sr(inbound.source, inbound.ssrc);
        let stream = inbound.participant;
        let bridged = self.hub.on_rtp_audio(
            now,
            stream,
            (inbound.source, inbound.ssrc),
            sr,
            inbound.timestamp,
        );
        let mixes = self
            .hub
            .mixes_for(inbound.room, stream, &self.router.participants);
        let uses = OpusUses {
            bridge: bridged.is_some(),
            level: inbound.level.is_none() && !mixes.is_empty(),
            mixes,
        };
        if uses == OpusUses::default() {
            return;
        }
        let Ok(h) = RtpHeader::parse(pkt) else { return };
        if bridged == Some(true) {
            self.out.push(Output::Transcode {
                job: Job::Reset { stream },
                from: None,
            });
        }
        // Lost packets (up to 200 ms) are concealed by the decoder, so the
        // AAC timeline and the mixes keep the publisher's time: without
        // them every loss would pull the audio 20 ms earlier.
        let lost = inbound.lost_before.min(MAX_CONCEALED);
        for i in (1..=lost).rev() {
            let rtp_ts = h
                .timestamp
                .wrapping_sub(i as u32 * crate::transcode::OPUS_FRAME as u32);
            self.out.push(Output::Transcode {
                job: Job::Opus {
                    stream,
                    rtp_ts,
                    opus: Vec::new(),
                    uses: uses.clone(),
                },
                from: inbound.source.session(),
            });
        }
        self.out.push(Output::Transcode {
            job: Job::Opus {
                stream,
                rtp_ts: h.timestamp,
                opus: pkt[h.len..].to_vec(),
                uses,
            },
            from: inbound.source.session(),
        });
    }

    // ---- DTLS and the transcoder ----

    /// Where a DTLS record for `session` goes: its socket and verified peer.
    pub fn dtls_destination(&self, session: SessionId) -> Option<(Handle, SocketAddrV4)> {
        self.router.dtls_destination(session)
    }

    /// `session`'s DTLS handshake finished with these SRTP keys.
    pub fn handle_dtls_keys(
        &mut self,
        now: Instant,
        session: SessionId,
        rx: &SrtpKey,
        tx: &SrtpKey,
    ) {
        self.router.install_keys(now, session, rx, tx);
        self.collect(now);
    }

    /// Whether the node drains: new RTMP and HTTP-FLV clients are refused
    /// (those it has go on). The shard passes the controlplane's word in.
    #[inline]
    pub fn set_draining(&mut self, on: bool) {
        self.hub.draining = on;
    }

    /// Sets how many streams the shard transcodes to H264 (tests: as
    /// `--video-transcodes` does).
    #[cfg(test)]
    pub fn set_video_transcodes(&mut self, n: u32) {
        self.hub.video_transcodes = n;
    }

    /// What the transcoder made: AAC for a participant's RTMP players, Opus
    /// RTP from an RTMP publisher for the room's WebRTC side, a level, or a
    /// program's mix.
    pub fn handle_transcoded(&mut self, now: Instant, done: Done) {
        match done {
            Done::Aac {
                stream,
                rtp_ts,
                tags,
            } => self.hub.on_aac(now, stream, rtp_ts, tags, &mut self.out),
            Done::Level { stream, level } => {
                if let Some(room) = self.router.participants.room_of(stream) {
                    self.on_level(now, room, stream, level);
                }
            }
            Done::Mix { program, tags } => self.hub.on_mix(now, program, tags, &mut self.out),
            Done::Video { stream, tags } => self.hub.on_reencoded(stream, tags),
            Done::Transcoded { stream, tags } => {
                self.hub.on_transcoded(now, stream, tags, &mut self.out)
            }
            Done::KeyframeWanted { stream } => {
                if let Some(source) = self.hub.transcoded_source(stream) {
                    self.router.request_keyframe_of(now, source);
                }
            }
            Done::MediaWarning { stream, what } => {
                let transcoded = || self.hub.transcoded_source(stream).and_then(Source::session);
                if let Some(session) = self.hub.publisher_session(stream).or_else(transcoded) {
                    self.out.event(Event::MediaWarning { session, what });
                }
            }
            Done::Opus {
                stream,
                ms,
                packets,
                level,
            } => {
                if let (Some(level), Some(room)) = (level, self.router.participants.room_of(stream))
                {
                    self.on_level(now, room, stream, level);
                }
                for rtp in self.hub.opus_rtp(stream, ms, packets) {
                    self.out.push(Output::Rtp {
                        rtp,
                        kind: MediaKind::Audio,
                    });
                }
            }
        }
        self.collect(now);
    }

    // ---- RTMP ----

    /// A connection accepted (or handed over) as `idx`.
    pub fn rtmp_insert(&mut self, idx: u32, state: ConnState) {
        self.hub.insert(idx, state);
    }

    /// Takes a connection out (closed, or handed over to another shard).
    pub fn rtmp_remove(&mut self, now: Instant, idx: u32) -> Option<ConnState> {
        let st = self.hub.remove(now, idx, &mut self.router.participants);
        self.collect(now);
        st
    }

    /// Bytes arrived on connection `idx`.
    pub fn handle_rtmp_bytes(&mut self, now: Instant, idx: u32, data: &[u8]) {
        self.rtmp_input(now, |hub, rooms, actions| {
            hub.on_bytes(now, idx, data, rooms, actions)
        });
    }

    /// The events a handed-over connection brought from its first shard.
    pub fn handle_rtmp_events(&mut self, now: Instant, idx: u32, events: Vec<RtmpEvent>) {
        self.rtmp_input(now, |hub, rooms, actions| {
            for ev in events {
                hub.on_event(now, idx, ev, rooms, actions);
            }
        });
    }

    /// Runs `f` on the hub with the core's rooms, then collects.
    fn rtmp_input(&mut self, now: Instant, f: impl FnOnce(&mut Hub, &mut dyn Rooms, &mut Outputs)) {
        let mut rooms = CoreRooms {
            router: &mut self.router,
            cfg: &mut self.cfg,
            next_room: &mut self.next_room,
        };
        f(&mut self.hub, &mut rooms, &mut self.out);
        self.collect(now);
    }

    pub fn rtmp_queue(&mut self, idx: u32) -> Option<&mut PlayerQueue> {
        self.hub.queue(idx)
    }

    /// Whether connection `idx` publishes or plays (set-up done).
    pub fn rtmp_is_set_up(&self, idx: u32) -> bool {
        self.hub.is_set_up(idx)
    }

    /// Whether connection `idx` publishes.
    pub fn rtmp_is_publisher(&self, idx: u32) -> bool {
        self.hub.is_publisher(idx)
    }

    /// RTMP connections closed by a memory bound, since start.
    pub fn rtmp_limit_hits(&self) -> [u64; gateway_ring::msg::Limit::COUNT] {
        self.hub.limit_hits
    }

    // ---- time and output ----

    /// When [`Self::handle_timeout`] has something to do: the earlier of
    /// the next tick and the hub's earliest deadline (a bridge's reorder
    /// gap or audio alignment, a player behind, idle programs). Cheap
    /// enough for every turn of the shard's loop: the hub keeps its
    /// deadlines on a heap (see `hub/timers.rs`).
    pub fn poll_timeout(&self) -> Instant {
        match self.hub.poll_timeout() {
            Some(t) => t.min(self.next_tick),
            None => self.next_tick,
        }
    }

    /// What is due at `now`: the tick (consent freshness and RTCP reports;
    /// `ntp_now` is the wall clock in NTP format, for sender reports) when
    /// it is, and the hub's deadlines that are.
    pub fn handle_timeout(&mut self, now: Instant, ntp_now: u64) {
        let mut ran = false;
        if now >= self.next_tick {
            self.next_tick = now + TICK_EVERY;
            self.hub.wall = Some((now, unix_ms(ntp_now)));
            self.router.tick(now, ntp_now);
            ran = true;
        }
        if self.hub.poll_timeout().is_some_and(|t| now >= t) {
            let parts = &self.router.participants;
            let results = self.hub.handle_timeout(now, parts, &mut self.out);
            for (source, bridged) in results.bridged {
                self.settle_bridged(now, source, bridged);
            }
            for session in results.failed {
                self.router.end_session(session, EndReason::Internal);
            }
            ran = true;
        }
        if ran {
            self.collect(now);
        }
    }

    /// Changed session counters (UDP sessions, at most `max`; then RTMP).
    pub fn take_dirty_stats(&mut self, out: &mut Vec<SessionStats>, max: usize) {
        self.router.take_dirty_stats(out, max);
        self.hub.take_dirty_stats(out);
    }

    /// The next thing to do. Once the queue is empty, it gathers what the
    /// parts queued since (the datagram path leaves its answers there, so a
    /// datagram costs no collection of its own).
    pub fn poll_output(&mut self) -> Option<Output> {
        if !self.out.has_output() {
            self.collect(self.now);
        }
        self.out.pop()
    }

    /// Where the core's queue stands: what [`Self::discard_outputs`] goes
    /// back to. Take it before an input (it gathers what the parts queued
    /// so far, so what they queue next is the input's), and pop nothing
    /// until the input is handled.
    pub fn output_mark(&mut self) -> Mark {
        self.collect(self.now);
        self.out.mark()
    }

    /// Drops everything queued since `mark`, in every part: a panic was
    /// contained while an input was handled, and what it asked for
    /// meanwhile is not trusted.
    pub fn discard_outputs(&mut self, mark: Mark) {
        self.router.out.clear();
        self.hub.out.clear();
        self.out.discard_since(mark);
    }

    /// A spent [`Output::Transmit`] buffer, for reuse.
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.router.recycle(buf);
    }

    /// Gathers what the parts queued into the core's queue and settles what
    /// one part tells another (a publisher left: RTMP players that followed
    /// it move on; an RTMP publisher's RTP: kept in the router's track
    /// cache for NACKs and GOP replays, then fanned out; a bridged publisher
    /// asked for a keyframe or a resend), until none is left.
    fn collect(&mut self, now: Instant) {
        self.now = self.now.max(now);
        loop {
            self.out.append(&mut self.router.out);
            self.out.append(&mut self.hub.out);
            let Some(note) = self.out.pop_note() else {
                return;
            };
            match note {
                Note::Unpublished { room, pid, rtmp } => {
                    if rtmp {
                        self.router.push_ended(room, pid);
                    } else {
                        self.hub
                            .publisher_gone(now, room, pid, &mut self.router.participants);
                    }
                    self.speakers.forget(room, pid);
                    self.relay_unpublished(room, pid);
                }
                Note::RtmpVideo(rtp) => {
                    // Kept first; a GOP replay it is the frame boundary
                    // for leaves ahead of it.
                    self.router.cache_rtmp_video(now, &rtp);
                    self.out.append(&mut self.router.out);
                    self.out.push(Output::Rtp {
                        rtp,
                        kind: MediaKind::Video,
                    });
                }
                Note::KeyframeWanted { source } => self.router.request_keyframe_of(now, source),
                Note::Nack { source, seq } => self.router.nack_publisher(source, seq),
            }
        }
    }
}

#[cfg(test)]
mod net_tests;
#[cfg(test)]
mod tests;
mod watchers;
