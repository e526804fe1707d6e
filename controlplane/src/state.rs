//! The controlplane's view: rooms, sessions, and each shard's slice of UDP ports.
//!
//! The dataplane is the source of truth for what is live; this view is rebuilt
//! from it after a controlplane restart (resync) and marked ended when the
//! dataplane is lost.

use std::collections::{HashMap, HashSet, VecDeque};

use base64::Engine;
use gateway_ring::msg::{
    Codec, Direction, EgressSpec, EndReason, IngestSpec, MediaKind, RoomSpec, RtmpSpec,
    SessionStats, SrtpKey, SrtpSuite, WebrtcSpec,
};
use gateway_ring::{ControlIds, RoomId, SessionId};

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Ended sessions kept per room for inspection.
const ENDED_KEPT: usize = 64;

/// SRTP suite and key as the API shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SrtpParams(pub SrtpKey);

impl SrtpParams {
    pub fn suite_name(&self) -> &'static str {
        suite_name(self.0.suite)
    }
    pub fn key_b64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0.material())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({ "suite": self.suite_name(), "key": self.key_b64() })
    }
}

pub fn suite_name(s: SrtpSuite) -> &'static str {
    match s {
        SrtpSuite::AesCm128HmacSha1_80 => "AES_CM_128_HMAC_SHA1_80",
        SrtpSuite::AeadAes128Gcm => "AEAD_AES_128_GCM",
        SrtpSuite::AeadAes256Gcm => "AEAD_AES_256_GCM",
    }
}

pub fn kind_name(k: MediaKind) -> &'static str {
    match k {
        MediaKind::Video => "video",
        MediaKind::Audio => "audio",
    }
}

#[derive(Clone, Debug)]
pub enum Role {
    Ingest(IngestSpec),
    Egress(EgressSpec),
    /// WHIP publisher or WHEP player.
    Webrtc(WebrtcSpec),
    /// RTMP publisher or player (no UDP port).
    Rtmp(RtmpSpec),
}

impl Role {
    /// The participant kind operators see (events, metrics).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Role::Ingest(_) => "rtp_ingest",
            Role::Egress(_) => "rtp_egress",
            Role::Webrtc(w) if w.direction == Direction::Publish => "whip",
            Role::Webrtc(_) => "whep",
            Role::Rtmp(r) if r.direction == Direction::Publish => "rtmp_publish",
            Role::Rtmp(_) => "rtmp_play",
        }
    }

    /// Whether the session brings media into the room (RTP ingest, WHIP).
    pub fn is_ingest(&self) -> bool {
        match self {
            Role::Ingest(_) => true,
            Role::Egress(_) => false,
            Role::Webrtc(w) => w.direction == Direction::Publish,
            Role::Rtmp(r) => r.direction == Direction::Publish,
        }
    }

    /// (session id, room id, UDP port; 0 for RTMP, which holds none).
    fn ids(&self) -> (SessionId, RoomId, u16) {
        match self {
            Role::Ingest(s) => (s.session, s.room, s.port),
            Role::Egress(s) => (s.session, s.room, s.port),
            Role::Webrtc(s) => (s.session, s.room, s.port),
            Role::Rtmp(s) => (s.session, s.room, 0),
        }
    }

    pub fn session_id(&self) -> SessionId {
        self.ids().0
    }

    /// The participant the session belongs to (empty for an RTP egress).
    pub fn participant(&self) -> &str {
        match self {
            Role::Ingest(s) => &s.participant,
            Role::Egress(_) => "",
            Role::Webrtc(s) => &s.participant,
            Role::Rtmp(s) => &s.participant,
        }
    }

    /// What it publishes: its video's codec, and whether it sends audio.
    /// An RTP ingest's and an RTMP push's video is H264 (their SDP, FLV).
    pub fn published(&self) -> (Option<Codec>, bool) {
        match self {
            Role::Ingest(s) => (
                (s.kind == MediaKind::Video).then_some(Codec::H264),
                s.kind == MediaKind::Audio,
            ),
            Role::Webrtc(w) if w.direction == Direction::Publish => (
                w.video_codec(),
                w.tracks.iter().any(|t| t.kind == MediaKind::Audio),
            ),
            Role::Rtmp(r) if r.direction == Direction::Publish => (Some(Codec::H264), true),
            _ => (None, false),
        }
    }
}

#[derive(Clone, Debug)]
pub struct SessionRecord {
    pub id: SessionId,
    pub shard: u32,
    pub role: Role,
    pub stats: SessionStats,
    /// `None` while live; the reason once ended.
    pub ended: Option<String>,
}

impl SessionRecord {
    pub fn port(&self) -> u16 {
        self.role.ids().2
    }
    pub fn room_id(&self) -> RoomId {
        self.role.ids().1
    }
}

pub struct Room {
    pub id: RoomId,
    pub name: String,
    /// The room's owner: its publishers' shard (`room_shard` of its name).
    pub shard: u32,
    /// The other shards the room was made on for their players, a bit
    /// each (a player goes to the least loaded shard), and those it is
    /// being made on now.
    pub replicas: u64,
    pub making: u64,
    pub live: Vec<SessionId>,
    pub ended: VecDeque<SessionRecord>,
}

/// A shard's UDP ports, handed out round-robin so a just-freed port is not
/// reused at once.
pub struct PortPool {
    lo: u16,
    hi: u16,
    cursor: u16,
    used: HashSet<u16>,
}

impl PortPool {
    pub fn new(lo: u16, hi: u16) -> PortPool {
        PortPool {
            lo,
            hi,
            cursor: lo,
            used: HashSet::new(),
        }
    }
    pub fn allocate(&mut self) -> Option<u16> {
        let n = (self.hi - self.lo) as u32 + 1;
        for _ in 0..n {
            let p = self.cursor;
            self.cursor = if self.cursor >= self.hi {
                self.lo
            } else {
                self.cursor + 1
            };
            if self.used.insert(p) {
                return Some(p);
            }
        }
        None
    }
    pub fn release(&mut self, p: u16) {
        self.used.remove(&p);
    }
    pub fn mark_used(&mut self, p: u16) {
        self.used.insert(p);
    }
    pub fn in_use(&self) -> usize {
        self.used.len()
    }
    pub fn size(&self) -> usize {
        (self.hi - self.lo) as usize + 1
    }
}

/// Splits `lo..=hi` into `shards` contiguous slices.
pub fn port_slices(lo: u16, hi: u16, shards: u32) -> Vec<PortPool> {
    let total = (hi - lo) as u32 + 1;
    (0..shards)
        .map(|i| {
            let a = lo as u32 + total * i / shards;
            let b = lo as u32 + total * (i + 1) / shards;
            PortPool::new(a as u16, (b.max(a + 1) - 1) as u16)
        })
        .collect()
}

pub struct State {
    pub rooms: HashMap<String, Room>,
    pub room_names: HashMap<RoomId, String>,
    pub sessions: HashMap<SessionId, SessionRecord>,
    pub ports: Vec<PortPool>,
    /// Per shard: the counters of sessions that ended, so totals in
    /// `/metrics` never go down when a session leaves.
    pub retired: Vec<Totals>,
    /// Participant joined / left / failed, for SSE streams and webhooks.
    pub events: crate::events::Events,
    /// Latest loop-turn timing per shard.
    pub shard_stats: Vec<gateway_ring::msg::ShardStats>,
    /// Per shard: how busy its loop is (the share of a core, smoothed over
    /// its last reports), and the report it was last measured from.
    pub shard_busy: Vec<(f64, Option<(std::time::Instant, u64)>)>,
    /// Per shard: sessions being opened now (placed, not answered yet).
    pub opening: Vec<usize>,
    /// Participants' signalling connections and messages.
    pub signal: crate::signal::Signal,
    /// The ids we give rooms and sessions.
    ids: ControlIds,
}

/// Why the controlplane marks a session ended: the `end_reason` the API
/// shows, and whether its room hears `participant_left` or `session_failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Deleted through the API (or by its WHIP/WHEP client).
    Deleted,
    /// The dataplane ended it, for this reason.
    ByDataplane(EndReason),
    /// A new dataplane process: the old one's sessions are gone.
    DataplaneRestarted,
    /// The dataplane process exited (spawn mode; it is restarted).
    DataplaneExited,
}

impl Ended {
    pub fn text(self) -> &'static str {
        match self {
            Ended::Deleted => "deleted",
            Ended::ByDataplane(reason) => reason.describe(),
            Ended::DataplaneRestarted => "dataplane restarted",
            Ended::DataplaneExited => "dataplane exited",
        }
    }

    /// Whether the participant left on purpose (the API, its client, a new
    /// push of its name), which is no failure.
    pub fn left(self) -> bool {
        matches!(
            self,
            Ended::Deleted | Ended::ByDataplane(EndReason::RtmpClosed | EndReason::TakenOver)
        )
    }
}

/// Counters summed over sessions.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub drops: [u64; gateway_ring::msg::DropReason::COUNT],
    pub retransmits: u64,
    pub keyframe_requests: u64,
    pub bridge_gaps_filled: u64,
    pub bridge_gaps_given_up: u64,
}

impl Totals {
    pub fn add(&mut self, s: &SessionStats, ingest: bool) {
        if ingest {
            self.packets_in += s.packets;
            self.bytes_in += s.bytes;
        } else {
            self.packets_out += s.packets;
            self.bytes_out += s.bytes;
        }
        for (t, d) in self.drops.iter_mut().zip(s.drops) {
            *t += d;
        }
        self.retransmits += s.retransmits;
        self.keyframe_requests += s.keyframe_requests;
        self.bridge_gaps_filled += s.bridge_gaps_filled;
        self.bridge_gaps_given_up += s.bridge_gaps_given_up;
    }
}

/// A shard whose loop is busier than this (a share of its core) takes no
/// new player while another shard is not.
pub const BUSY_SHARD: f64 = 0.8;
/// How much of each report's busy share moves the smoothed one (at a
/// report every 250 ms, about a second to follow a change).
const BUSY_SMOOTHING: f64 = 0.3;

impl State {
    pub fn new(ports: Vec<PortPool>) -> State {
        State {
            retired: vec![Totals::default(); ports.len()],
            events: Default::default(),
            shard_stats: vec![Default::default(); ports.len()],
            shard_busy: vec![(0.0, None); ports.len()],
            opening: vec![0; ports.len()],
            signal: Default::default(),
            rooms: HashMap::new(),
            room_names: HashMap::new(),
            sessions: HashMap::new(),
            ports,
            ids: ControlIds::default(),
        }
    }

    /// An id for a new room; `None` once they are used up.
    pub fn new_room_id(&mut self) -> Option<RoomId> {
        self.ids.room()
    }

    /// An id for a new session; `None` once they are used up.
    pub fn new_session_id(&mut self) -> Option<SessionId> {
        self.ids.session()
    }

    pub fn add_room(&mut self, spec: &RoomSpec, shard: u32) {
        // Ours are not given again (after a resync); the dataplane's own
        // ids live in their own range.
        self.ids.saw_room(spec.room);
        self.room_names.insert(spec.room, spec.name.clone());
        self.rooms.insert(
            spec.name.clone(),
            Room {
                id: spec.room,
                name: spec.name.clone(),
                shard,
                replicas: 0,
                making: 0,
                live: Vec::new(),
                ended: VecDeque::new(),
            },
        );
    }

    pub fn remove_room(&mut self, name: &str) -> Option<Room> {
        let mut room = self.rooms.remove(name)?;
        self.room_names.remove(&room.id);
        for id in std::mem::take(&mut room.live) {
            if let Some(s) = self.sessions.remove(&id) {
                self.ports[s.shard as usize].release(s.port());
            }
        }
        Some(room)
    }

    /// A shard's report (every 250 ms): its counters, and how busy its
    /// loop was since the last one, smoothed (an EWMA over about a second).
    pub fn shard_report(&mut self, s: gateway_ring::msg::ShardStats, now: std::time::Instant) {
        let i = s.shard as usize;
        if let Some(slot) = self.shard_stats.get_mut(i) {
            *slot = s;
        }
        if let Some((busy, last)) = self.shard_busy.get_mut(i) {
            if let Some((then, us)) = *last {
                let dt = now.saturating_duration_since(then).as_micros() as f64;
                // A counter that went back is a new dataplane: start afresh.
                if dt > 0.0 && s.busy_us >= us {
                    let share = ((s.busy_us - us) as f64 / dt).min(1.0);
                    *busy += BUSY_SMOOTHING * (share - *busy);
                }
            }
            *last = Some((now, s.busy_us));
        }
    }

    /// Where a new player of room `owner`'s room goes: the shard with the
    /// fewest live sessions, the owner on a tie (its players need no
    /// relay). Every shard forwards, so a big audience spreads over every
    /// core; a shard whose ports are exhausted is skipped, and so is one
    /// whose loop is over [`BUSY_SHARD`] while another is not (sessions
    /// differ in cost: a shard with 2000 RTMP players, which are no
    /// sessions here, or a big fan-out, is busy with few).
    pub fn player_shard(&self, owner: u32) -> u32 {
        // Sessions being opened count too: a burst of offers spreads
        // before any of them is live.
        let mut live = self.opening.clone();
        live.resize(self.ports.len(), 0);
        for s in self.sessions.values() {
            if let Some(n) = live.get_mut(s.shard as usize) {
                *n += 1;
            }
        }
        let free = |sh: usize| self.ports[sh].in_use() < self.ports[sh].size();
        let busy = |sh: usize| self.shard_busy.get(sh).is_some_and(|b| b.0 > BUSY_SHARD);
        let open: Vec<usize> = (0..self.ports.len()).filter(|&sh| free(sh)).collect();
        let calm = open.iter().any(|&sh| !busy(sh));
        open.into_iter()
            .filter(|&sh| !calm || !busy(sh))
            .min_by_key(|&sh| (live[sh], sh as u32 != owner))
            .map_or(owner, |sh| sh as u32)
    }

    /// Records a live session (new, or learned from a resync).
    pub fn add_session(&mut self, shard: u32, role: Role) -> bool {
        let (id, room, port) = role.ids();
        let Some(name) = self.room_names.get(&room).cloned() else {
            return false;
        };
        let Some(r) = self.rooms.get_mut(&name) else {
            return false;
        };
        r.live.push(id);
        // Likewise (RTMP participants have ids from the dataplane's range).
        self.ids.saw_session(id);
        // RTMP clients hold no UDP port (0).
        if let Some(pool) = self.ports.get_mut(shard as usize).filter(|_| port != 0) {
            pool.mark_used(port);
        }
        self.sessions.insert(
            id,
            SessionRecord {
                id,
                shard,
                role,
                stats: SessionStats {
                    session: id,
                    ..SessionStats::default()
                },
                ended: None,
            },
        );
        let role = &self.sessions[&id].role;
        self.emit(&name, "participant_joined", role, None);
        if role.is_ingest() {
            self.emit(&name, "track_published", role, None);
        }
        true
    }

    fn emit(&self, room: &str, event: &'static str, role: &Role, reason: Option<String>) {
        self.events.emit(crate::events::RoomEvent {
            room: room.to_string(),
            event,
            participant: role.participant().to_string(),
            session: role.session_id().to_string(),
            kind: role.kind_name(),
            reason,
            line: None,
            source: None,
            at_ms: now_ms(),
        });
    }

    /// Media line `line` of player `session` now carries `source` (empty: nobody).
    pub fn line_changed(&self, session: SessionId, line: u8, source: String) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let Some(room) = self.room_names.get(&s.room_id()) else {
            return;
        };
        self.events.emit(crate::events::RoomEvent {
            room: room.clone(),
            event: "line_changed",
            participant: s.role.participant().to_string(),
            session: session.to_string(),
            kind: s.role.kind_name(),
            reason: None,
            line: Some(line),
            source: Some(source),
            at_ms: now_ms(),
        });
    }

    /// Publisher `session` sends media the other side cannot be given or
    /// cannot play (`what` names it): a room event, so the operator hears
    /// of it instead of the players hearing silence.
    pub fn media_warning(&self, session: SessionId, what: String) {
        let Some(s) = self.sessions.get(&session) else {
            return;
        };
        let Some(room) = self.room_names.get(&s.room_id()) else {
            return;
        };
        tracing::warn!(%session, room = %room, "media warning: {what}");
        self.events.emit(crate::events::RoomEvent {
            room: room.clone(),
            event: "media_warning",
            participant: s.role.participant().to_string(),
            session: session.to_string(),
            kind: s.role.kind_name(),
            reason: Some(what),
            line: None,
            source: None,
            at_ms: now_ms(),
        });
    }

    /// Room `room`'s active speaker is now `participant` (from its audio levels).
    pub fn active_speaker(&self, room: RoomId, participant: String) {
        let Some(name) = self.room_names.get(&room) else {
            return;
        };
        self.events.emit(crate::events::RoomEvent {
            room: name.clone(),
            event: "active_speaker",
            participant,
            session: String::new(),
            kind: "audio",
            reason: None,
            line: None,
            source: None,
            at_ms: now_ms(),
        });
    }

    /// Whether `name` has a live session in `room`.
    pub fn has_participant(&self, room: &str, name: &str) -> bool {
        self.rooms.get(room).is_some_and(|r| {
            r.live
                .iter()
                .filter_map(|id| self.sessions.get(id))
                .any(|s| s.role.participant() == name)
        })
    }

    /// Each participant of `room` once: its live sessions, the tracks it
    /// publishes, and those connected only to the room's signalling.
    pub fn participants_json(&self, room: &str) -> serde_json::Value {
        use serde_json::json;
        let mut out: Vec<serde_json::Value> = Vec::new();
        let Some(r) = self.rooms.get(room) else {
            return json!(out);
        };
        let live = r.live.iter().filter_map(|id| self.sessions.get(id));
        for s in live.filter(|s| !s.role.participant().is_empty()) {
            let name = s.role.participant();
            let i = match out.iter().position(|p| p["name"] == name) {
                Some(i) => i,
                None => {
                    out.push(json!({ "name": name, "sessions": [], "tracks": [] }));
                    out.len() - 1
                }
            };
            let p = &mut out[i];
            if let Some(list) = p["sessions"].as_array_mut() {
                list.push(json!({ "id": s.id.to_string(), "kind": s.role.kind_name() }));
            }
            let (video, audio) = s.role.published();
            for (has, kind) in [(video.is_some(), "video"), (audio, "audio")] {
                if let Some(tracks) = p["tracks"].as_array_mut() {
                    if has && !tracks.iter().any(|t| t == kind) {
                        tracks.push(json!(kind));
                    }
                }
            }
        }
        for name in self.signal.members(room) {
            if !out.iter().any(|p| p["name"] == name.as_str()) {
                out.push(json!({ "name": name, "sessions": [], "tracks": [] }));
            }
        }
        json!(out)
    }

    /// The participants that publish in `room` now, other than `except`, in
    /// the order they started, with what they publish: (name, the video's
    /// codec, audio).
    pub fn publishers(&self, room: &str, except: &str) -> Vec<(String, Option<Codec>, bool)> {
        let mut out: Vec<(String, Option<Codec>, bool)> = Vec::new();
        let Some(r) = self.rooms.get(room) else {
            return out;
        };
        for s in r.live.iter().filter_map(|id| self.sessions.get(id)) {
            let (video, audio) = s.role.published();
            let name = s.role.participant();
            if !(video.is_some() || audio) || name == except {
                continue;
            }
            match out.iter_mut().find(|(n, _, _)| n == name) {
                Some(p) => {
                    p.1 = p.1.or(video);
                    p.2 |= audio;
                }
                None => out.push((name.to_string(), video, audio)),
            }
        }
        out
    }

    /// The WebRTC players in `room` now, other than `except`'s, with video
    /// lines and none in `codec`: each a name, once (they cannot be given
    /// a publisher in `codec`), and the codecs their lines have.
    pub fn players_without(
        &self,
        room: &str,
        codec: Codec,
        except: &str,
    ) -> Vec<(String, Vec<Codec>)> {
        let mut out: Vec<(String, Vec<Codec>)> = Vec::new();
        let Some(r) = self.rooms.get(room) else {
            return out;
        };
        for s in r.live.iter().filter_map(|id| self.sessions.get(id)) {
            let Role::Webrtc(w) = &s.role else { continue };
            let lines: Vec<Codec> = w
                .tracks
                .iter()
                .filter(|t| t.kind == MediaKind::Video)
                .flat_map(|t| {
                    Codec::VIDEO
                        .into_iter()
                        .filter(move |c| t.codec == *c || t.codecs & (1 << *c as u8) != 0)
                })
                .fold(Vec::new(), |mut v, c| {
                    if !v.contains(&c) {
                        v.push(c);
                    }
                    v
                });
            let fits = lines.contains(&codec);
            if w.direction != Direction::Subscribe
                || lines.is_empty()
                || fits
                || w.participant == except
            {
                continue;
            }
            if !out.iter().any(|(n, _)| *n == w.participant) {
                out.push((w.participant.clone(), lines));
            }
        }
        out
    }

    /// Ends one live session: frees its port, keeps it in the room's ended list.
    pub fn end_session(&mut self, id: SessionId, why: Ended) -> Option<SessionRecord> {
        let mut s = self.sessions.remove(&id)?;
        if s.port() != 0 {
            self.ports[s.shard as usize].release(s.port());
        }
        if let Some(t) = self.retired.get_mut(s.shard as usize) {
            t.add(&s.stats, s.role.is_ingest());
        }
        s.ended = Some(why.text().to_string());
        if let Some(room) = self.room_names.get(&s.room_id()) {
            if s.role.is_ingest() {
                self.emit(room, "track_unpublished", &s.role, None);
            }
            let (event, reason) = if why.left() {
                ("participant_left", None)
            } else {
                ("session_failed", Some(why.text().to_string()))
            };
            self.emit(room, event, &s.role, reason);
        }
        if let Some(r) = self
            .room_names
            .get(&s.room_id())
            .and_then(|n| self.rooms.get_mut(n))
        {
            r.live.retain(|&x| x != id);
            if r.ended.len() >= ENDED_KEPT {
                r.ended.pop_front();
            }
            r.ended.push_back(s.clone());
        }
        Some(s)
    }

    /// The dataplane is gone: every live session with it.
    pub fn end_all(&mut self, why: Ended) -> usize {
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        for &id in &ids {
            self.end_session(id, why);
        }
        ids.len()
    }

    /// Per shard: everything counted so far, live sessions and ended ones.
    pub fn totals(&self) -> Vec<Totals> {
        let mut t = self.retired.clone();
        for s in self.sessions.values() {
            if let Some(x) = t.get_mut(s.shard as usize) {
                x.add(&s.stats, s.role.is_ingest());
            }
        }
        t
    }

    pub fn update_stats(&mut self, s: SessionStats) {
        let Some(rec) = self.sessions.get_mut(&s.session) else {
            return;
        };
        let more_keyframes = s.keyframe_requests > rec.stats.keyframe_requests;
        rec.stats = s;
        // Counted by the dataplane (a player joined or asked, a publisher
        // was asked); reported once per stats period.
        if more_keyframes {
            let rec = &self.sessions[&s.session];
            if let Some(name) = self.room_names.get(&rec.room_id()) {
                self.emit(name, "keyframe_requested", &rec.role, None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_slices_cover_the_range_without_overlap() {
        let s = port_slices(40000, 40999, 3);
        assert_eq!(s.iter().map(PortPool::size).sum::<usize>(), 1000);
        assert_eq!((s[0].lo, s[2].hi), (40000, 40999));
        assert_eq!(s[0].hi + 1, s[1].lo);
    }

    /// A state with one shard's ports 10-20 and room "r" (id 1) on it.
    fn state_with_room_r() -> State {
        let mut st = State::new(vec![PortPool::new(10, 20)]);
        st.add_room(
            &RoomSpec {
                room: RoomId::new(1),
                name: "r".into(),
            },
            0,
        );
        st
    }

    /// Players go to the shard with the fewest sessions (the owner on a
    /// tie), but not to one whose loop is over BUSY_SHARD while another is
    /// not; the busy share follows the shards' reports, smoothed.
    #[test]
    fn players_go_to_the_least_loaded_shard_that_is_not_busy() {
        let mut st = State::new(port_slices(40000, 40099, 2));
        let t0 = std::time::Instant::now();
        let report = |st: &mut State, shard: u32, ms: u64, busy_us: u64| {
            let s = gateway_ring::msg::ShardStats {
                shard,
                busy_us,
                ..Default::default()
            };
            st.shard_report(s, t0 + std::time::Duration::from_millis(ms));
        };
        // Shard 0 busy 90 % of every 250 ms, shard 1 10 %, for 2 s.
        for k in 0..=8u64 {
            report(&mut st, 0, k * 250, k * 225_000);
            report(&mut st, 1, k * 250, k * 25_000);
        }
        let (b0, b1) = (st.shard_busy[0].0, st.shard_busy[1].0);
        assert!(
            (0.82..=0.9).contains(&b0) && (0.08..=0.1).contains(&b1),
            "{b0} {b1}"
        );
        st.opening[1] = 5; // shard 1 has more sessions
        assert_eq!(st.player_shard(0), 1, "not the busy owner");
        // Both busy: the fewest sessions again.
        for k in 9..=16u64 {
            report(&mut st, 0, k * 250, 8 * 225_000 + (k - 8) * 225_000);
            report(&mut st, 1, k * 250, 8 * 25_000 + (k - 8) * 225_000);
        }
        assert_eq!(st.player_shard(0), 0);
        // Calm again (a new dataplane: its counters start from 0).
        report(&mut st, 0, 5000, 0);
        st.shard_busy[0].0 = 0.3;
        assert_eq!(st.player_shard(1), 0, "fewer sessions, not busy");
    }

    #[test]
    fn keyframe_requests_counted_by_the_dataplane_become_events() {
        let mut st = state_with_room_r();
        let mut rx = st.events.subscribe();
        let spec = EgressSpec {
            session: SessionId::new(5),
            room: RoomId::new(1),
            port: 10,
            dest_ip: [127, 0, 0, 1],
            dest_port: 5004,
            srtp: None,
            created_ms: 0,
        };
        assert!(st.add_session(0, Role::Egress(spec)));
        assert_eq!(rx.try_recv().unwrap().event, "participant_joined");
        let mut s = SessionStats {
            session: SessionId::new(5),
            ..SessionStats::default()
        };
        st.update_stats(s);
        assert!(rx.try_recv().is_err(), "no new request, no event");
        s.keyframe_requests = 2;
        st.update_stats(s);
        let e = rx.try_recv().unwrap();
        assert_eq!(
            (e.event, e.kind, e.room.as_str()),
            ("keyframe_requested", "rtp_egress", "r")
        );
    }

    /// How a session ended decides its `end_reason` and its room's event,
    /// as the strings did before the reasons were typed: leaving (deleted,
    /// an RTMP client gone, taken over) is no failure; the rest are, with
    /// their text.
    #[test]
    fn end_reasons_read_as_before_and_only_leaving_is_no_failure() {
        let mut st = state_with_room_r();
        let mut rx = st.events.subscribe();
        let cases = [
            (Ended::Deleted, "deleted", None),
            (
                Ended::ByDataplane(EndReason::RtmpClosed),
                "RTMP connection closed",
                None,
            ),
            (
                Ended::ByDataplane(EndReason::TakenOver),
                "taken over: the participant published again from a new connection",
                None,
            ),
            (
                Ended::ByDataplane(EndReason::ConsentExpired),
                "ICE consent expired (no valid STUN check for 30 s)",
                Some("ICE consent expired (no valid STUN check for 30 s)"),
            ),
            (
                Ended::ByDataplane(EndReason::Internal),
                "internal error (contained: this session ended, the others went on)",
                Some("internal error (contained: this session ended, the others went on)"),
            ),
            (
                Ended::DataplaneRestarted,
                "dataplane restarted",
                Some("dataplane restarted"),
            ),
        ];
        for (n, (why, text, failure)) in (1u64..).zip(cases) {
            let spec = EgressSpec {
                session: SessionId::new(n),
                room: RoomId::new(1),
                port: 10,
                dest_ip: [127, 0, 0, 1],
                dest_port: 5004,
                srtp: None,
                created_ms: 0,
            };
            assert!(st.add_session(0, Role::Egress(spec)));
            assert_eq!(rx.try_recv().unwrap().event, "participant_joined");
            let ended = st.end_session(SessionId::new(n), why).unwrap();
            assert_eq!(ended.ended.as_deref(), Some(text));
            let e = rx.try_recv().unwrap();
            let event = if failure.is_some() {
                "session_failed"
            } else {
                "participant_left"
            };
            assert_eq!((e.event, e.reason.as_deref()), (event, failure), "{why:?}");
        }
    }

    #[test]
    fn pool_round_robins_and_exhausts() {
        let mut p = PortPool::new(10, 12);
        assert_eq!(
            (p.allocate(), p.allocate(), p.allocate()),
            (Some(10), Some(11), Some(12))
        );
        assert_eq!(p.allocate(), None);
        p.release(10);
        p.release(11);
        assert_eq!(p.allocate(), Some(10));
        assert_eq!(p.allocate(), Some(11));
    }
}
