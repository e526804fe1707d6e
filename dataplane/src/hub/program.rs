//! The rooms' programs ([`Program`], `live/ROOM`): the room's active speaker
//! other than the player (or its first publisher), switched at a keyframe,
//! on the program's own time, with its own GOP cache and metadata; its audio
//! the mix of everyone but its `me`, made on the transcoder thread.

use std::time::Instant;

use bytes::Bytes;
use gateway_ring::RoomId;

use super::connections::Role;
use super::streams::replay_of;
use super::Hub;
use crate::output::{Note, Output, Outputs};
use crate::participants::{ParticipantId, Participants};
use crate::rtmp::conn::{types, Media};
use crate::rtmp::meta::{self, Meta};
use crate::rtmp::stream::{Frame, GopCache};
use crate::transcode::Job;

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
pub(super) struct Program {
    pub(super) room: RoomId,
    me: String,
    pub(super) source: Option<ParticipantId>,
    /// Switching to this participant at its next keyframe.
    pub(super) pending: Option<ParticipantId>,
    pub(super) players: Vec<u32>,
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
    /// The shards it is relayed to, a bit each (players of it there; see
    /// `relay.rs`).
    pub(super) relays: u64,
}

impl Program {
    /// Its headers and GOP so far (a new player's, or a new shard's, start).
    pub(super) fn cache_replay(&self) -> impl Iterator<Item = &Media> {
        self.cache.replay()
    }

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

impl Hub {
    /// Participant `pid` of `room` stopped publishing (its RTMP push ended,
    /// or its last WebRTC/RTP publishing session): its own players wait for
    /// it; the room's programs that showed it move on. The next publisher
    /// starts a fresh bridge.
    pub fn publisher_gone(
        &mut self,
        now: Instant,
        room: RoomId,
        pid: ParticipantId,
        parts: &mut Participants,
    ) {
        if let Some(s) = self.streams.get_mut(&pid) {
            // Its transcoders (the re-encode thread's video, the audio) go
            // with its bridge, not with the stream its players still hold.
            if s.bridge.take().is_some() {
                self.out.push(Output::Transcode {
                    job: Job::Reset { stream: pid },
                    from: None,
                });
            }
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
        let mut actions = Outputs::default();
        self.choose_all(now, room, parts, &mut actions);
        self.out.append(&mut actions);
    }

    /// The core found `room`'s active speaker: its programs switch to it
    /// (each but the speaker's own) at its next keyframe.
    pub fn speaker_changed(
        &mut self,
        now: Instant,
        room: RoomId,
        pid: ParticipantId,
        parts: &mut Participants,
    ) {
        self.speakers.insert(room, pid);
        let mut actions = Outputs::default();
        self.choose_all(now, room, parts, &mut actions);
        self.out.append(&mut actions);
    }

    /// The ids of `room`'s programs that `pick` takes.
    pub(super) fn programs_of(&self, room: RoomId, pick: impl Fn(&Program) -> bool) -> Vec<u64> {
        let ids = self.room_programs.get(&room).map_or(&[][..], |v| v);
        ids.iter()
            .copied()
            .filter(|id| self.programs.get(id).is_some_and(&pick))
            .collect()
    }

    /// Forgets program `id` (nobody plays it, or its room went), and its
    /// mix on the transcoder thread.
    pub(super) fn remove_program(&mut self, id: u64) -> Option<Program> {
        let p = self.programs.remove(&id)?;
        if let Some(ids) = self.room_programs.get_mut(&p.room) {
            ids.retain(|&x| x != id);
            if ids.is_empty() {
                self.room_programs.remove(&p.room);
            }
        }
        self.out.push(Output::Transcode {
            job: Job::MixEnd { program: id },
            from: None,
        });
        Some(p)
    }

    /// Every program of `room` looks again at whom it should show.
    pub(super) fn choose_all(
        &mut self,
        now: Instant,
        room: RoomId,
        parts: &Participants,
        actions: &mut Outputs,
    ) {
        for id in self.programs_of(room, |_| true) {
            self.choose(now, id, parts, actions);
        }
    }

    /// Whom program `id` should show: the room's active speaker other than
    /// its `me`, else the room's earliest publisher other than `me`. A new
    /// choice is pending until its keyframe (at once from a cached GOP).
    pub(super) fn choose(
        &mut self,
        now: Instant,
        id: u64,
        parts: &Participants,
        actions: &mut Outputs,
    ) {
        let Some(p) = self.programs.get(&id) else {
            return;
        };
        let room = p.room;
        let me = parts
            .find(room, &p.me)
            .unwrap_or(crate::participants::ParticipantId::NOBODY);
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
        if let Some(source) = ask {
            self.out.note(Note::KeyframeWanted { source });
        }
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
    pub(super) fn unwatch(&mut self, id: u64, pid: ParticipantId, parts: &Participants) {
        if let Some(s) = self.streams.get_mut(&pid) {
            s.watchers.retain(|&w| w != id);
        }
        self.forget_if_unused(pid, parts);
    }

    /// The id of `room`'s program as `me`, made if new (it starts at `now`).
    pub(super) fn program_for(&mut self, now: Instant, room: RoomId, me: &str) -> u64 {
        let existing = self.programs_of(room, |p| p.me == me).first().copied();
        match existing {
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
                        relays: 0,
                    },
                );
                id
            }
        }
    }

    /// Makes `idx` a player of `room`'s program as `me`: the program's
    /// headers and GOP at once (made when its first player comes).
    pub(super) fn attach_program(
        &mut self,
        now: Instant,
        idx: u32,
        room: RoomId,
        me: &str,
        parts: &Participants,
        actions: &mut Outputs,
    ) {
        let id = self.program_for(now, room, me);
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

    /// A video message of participant `pid`'s stream, for program `id`:
    /// shown if `pid` is its source, or the switch to `pid` at its keyframe.
    /// `sync` is when `pid`'s newest frame arrived and its source time
    /// (later than `m`'s when `m` comes from its cached GOP). The
    /// program's audio is its mix ([`Self::on_mix`]), never its source's.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn feed(
        &mut self,
        now: Instant,
        id: u64,
        pid: ParticipantId,
        m: &Media,
        sync: (Instant, u32),
        actions: &mut Outputs,
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
        self.relay_program(id, &timed);
    }

    /// AAC tags of program `id`'s mix, from the transcoder: stamped 1024
    /// samples apart on the program's time, starting where it is now (and
    /// again after a gap: nobody sent audio for a while).
    pub fn on_mix(&mut self, now: Instant, id: u64, tags: Vec<Vec<u8>>, actions: &mut Outputs) {
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
        self.relay_program(id, &timed);
    }

    /// Program `id` when nobody plays it, here or on another shard: it
    /// stops watching its participants, and is forgotten.
    pub(super) fn forget_program_if_unplayed(&mut self, id: u64, parts: &Participants) {
        let unplayed = self
            .programs
            .get(&id)
            .is_some_and(|p| p.players.is_empty() && p.relays == 0);
        if unplayed {
            let p = self.remove_program(id).expect("just found");
            for pid in p.source.into_iter().chain(p.pending) {
                self.unwatch(id, pid, parts);
            }
        }
    }

    /// The programs of `room` whose mix takes participant `pid`'s audio:
    /// every one but `pid`'s own.
    pub fn mixes_for(&self, room: RoomId, pid: ParticipantId, parts: &Participants) -> Vec<u64> {
        if !self.room_programs.contains_key(&room) {
            return Vec::new();
        }
        let name = parts.name(pid).unwrap_or("");
        self.programs_of(room, |p| p.me.is_empty() || p.me != name)
    }
}

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
    use crate::hub::fixtures::*;
    use crate::output::Outputs;
    use crate::rtmp::chunk::write_message;

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

    /// Keyframes (mark, FLV time) of the video queued for player `idx`.
    fn keyframes(h: &mut Hub, idx: u32) -> Vec<(u8, u32)> {
        let q = h.queue(idx).unwrap();
        q.take_messages()
            .into_iter()
            .filter(|m| m.type_id == types::VIDEO && m.payload.len() == 6 && m.payload[1] == 1)
            .map(|m| (m.payload[5], m.timestamp))
            .collect()
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
            rooms.parts.find(R77, "alice").unwrap(),
            rooms.parts.find(R77, "bob").unwrap(),
        );
        // bob speaks at 1.5 s: carol's program switches at once from bob's
        // cached GOP; its keyframe (older than alice's last picture) right
        // after that picture, its newest frame when it arrived.
        h.speaker_changed(at(1_500), R77, bob, &mut rooms.parts);
        frame_at(&mut h, &mut rooms, 1, 0xb3, 52_500, true, at(2_500));
        frame_at(&mut h, &mut rooms, 0, 0xa3, 2_000, true, at(2_500));
        assert_eq!(
            keyframes(&mut h, 2),
            vec![(0xb1, 1_001), (0xb2, 1_400), (0xb3, 2_500)]
        );
        // alice speaks: alice's own program stays on bob.
        h.speaker_changed(at(3_000), R77, alice, &mut rooms.parts);
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
            rooms.parts.find(R77, "alice").unwrap(),
            rooms.parts.find(R77, "bob").unwrap(),
        );
        let ids = h.programs_of(R77, |_| true);
        assert_eq!(ids.len(), 2, "alice's and the anonymous players' one");
        let mine = h.programs_of(R77, |p| p.me == "alice")[0];
        let anon = h.programs_of(R77, |p| p.me.is_empty())[0];
        let sorted = |mut v: Vec<u64>| {
            v.sort();
            v
        };
        assert_eq!(h.mixes_for(R77, alice, &rooms.parts), vec![anon]);
        assert_eq!(
            sorted(h.mixes_for(R77, bob, &rooms.parts)),
            sorted(vec![mine, anon])
        );
        // bob's AAC goes to the transcoder with both mixes; not to players.
        frame_at(&mut h, &mut rooms, 1, 0xb1, 0, true, at(0));
        h.out.clear();
        let mut m = Vec::new();
        write_message(&mut m, 4, 10, types::AUDIO, 1, &[0xaf, 1, 0x21, 0x10], 128);
        h.on_bytes(at(10), 1, &m, &mut rooms, &mut Outputs::default());
        assert!(matches!(
            h.out.jobs().collect::<Vec<_>>()[..],
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
        h.on_mix(at(2_000), mine, tags, &mut Outputs::default());
        assert_eq!(audio(&mut h, 2), vec![(2_000, 0), (2_000, 1), (2_021, 1)]);
        assert!(audio(&mut h, 3).is_empty(), "another program's mix");
        // Steady 21.3 ms steps while on time; after a gap, from the clock.
        h.on_mix(
            at(2_050),
            mine,
            vec![vec![0xaf, 1, 3]],
            &mut Outputs::default(),
        );
        h.on_mix(
            at(3_000),
            mine,
            vec![vec![0xaf, 1, 4]],
            &mut Outputs::default(),
        );
        assert_eq!(audio(&mut h, 2), vec![(2_042, 1), (3_000, 1)]);
        // The last anonymous player leaves: its mix ends on the transcoder.
        h.out.clear();
        h.remove(at(4_000), 3, &mut rooms.parts);
        assert!(h.out.jobs().next().is_none(), "one player of it is left");
        h.remove(at(4_000), 4, &mut rooms.parts);
        assert!(
            matches!(h.out.jobs().collect::<Vec<_>>()[..], [Job::MixEnd { program }] if *program == anon)
        );
    }
}
