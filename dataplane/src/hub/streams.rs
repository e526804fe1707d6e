//! Participants' streams ([`Stream`]): what whoever publishes as NAME sends
//! (over RTMP, or bridged from WebRTC/RTP), with its GOP cache and its own
//! `onMetaData`; its players, who get its headers and GOP at once; and each
//! message's way: an RTMP publisher's media counted (and warned about) and
//! sent on, cached, chunked once per wire format, offered to each player,
//! then to the programs that show it.

use std::time::Instant;

use bytes::Bytes;

use super::connections::Role;
use super::flv_to_rtp::{has_bframes, media_warning, RtpOut};
use super::rtp_to_flv::Bridge;
use super::timers::Timer;
use super::Hub;
use crate::codec::{Pushed, VideoCodec};
use crate::media::Source;
use crate::output::{Action, Note, Output, Outputs};
use crate::participants::{ParticipantId, Participants};
use crate::rtmp::conn::{types, Media};
use crate::rtmp::http;
use crate::rtmp::meta::{self, Meta};
use crate::rtmp::stream::{chunked, Frame, GopCache, Offer};
use crate::transcode::Job;
use gateway_ring::msg::{DropReason, Event as RingEvent};
use gateway_ring::{RoomId, SessionId};

/// One participant's stream for RTMP players.
pub(super) struct Stream {
    pub(super) room: RoomId,
    /// [`participant_key`](gateway_ring::msg::participant_key) of the participant's name.
    pub(super) key: u32,
    /// The participant's RTMP publisher, if it publishes over RTMP.
    pub(super) publisher: Option<u32>,
    pub(super) players: Vec<u32>,
    pub(super) cache: GopCache,
    /// RTP from the participant's WebRTC or RTP publisher, repacketized
    /// for RTMP players while no RTMP client publishes as it.
    pub(super) bridge: Option<Bridge>,
    /// The RTMP publisher's video as RTP for the room's WebRTC players
    /// and RTP egresses.
    pub(super) rtp: Option<RtpOut>,
    /// Programs that show this participant now, or switch to it at its next keyframe.
    pub(super) watchers: Vec<u64>,
    /// When its newest video frame arrived, and its FLV time.
    pub(super) last_video: Option<(Instant, u32)>,
    /// Its `onMetaData`, written from what passes through.
    meta: Meta,
    /// The video codec its publisher sends that FLV does not carry, once
    /// said (a `media_warning`).
    pub(super) unbridged: Option<VideoCodec>,
    /// The shards its messages are relayed to, a bit each (their players
    /// play their replicas of it; see `relay.rs`).
    pub(super) relays: u64,
    /// A replica: the owner shard of its room, and the stream's id there
    /// (a participant's stream, or a program).
    pub(super) origin: Option<(u32, crate::relay::FlvKey)>,
    /// RTMP pushes it has had. Each push's RTP has SSRCs of its own, so
    /// where the stream is played (lines, track caches, other shards) a
    /// push that takes over from a stale one reads as a new stream of the
    /// same source: lines go on in their numbering, caches start afresh.
    pub(super) pushes: u32,
}

impl Stream {
    /// The publisher to ask for a keyframe when someone starts watching: a
    /// bridged WebRTC publisher, when the cache holds no GOP (an encoder
    /// with long GOPs, or the cache was bounded out). An RTMP publisher
    /// cannot be asked.
    pub(super) fn keyframe_source(&self) -> Option<Source> {
        if self.cache.gop_len() > 0 {
            return None;
        }
        self.bridge.as_ref()?.video.map(|a| a.source.0)
    }
}

impl Hub {
    pub(super) fn stream(&mut self, room: RoomId, pid: ParticipantId, key: u32) -> &mut Stream {
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
            unbridged: None,
            relays: 0,
            origin: None,
            pushes: 0,
        })
    }

    /// Participant `pid` publishes video in `codec`, which FLV does not
    /// carry, to its stream's players: true the first time (say it), false
    /// after.
    pub(super) fn not_bridged(&mut self, pid: ParticipantId, codec: VideoCodec) -> bool {
        let Some(s) = self.streams.get_mut(&pid) else {
            return false;
        };
        s.unbridged.replace(codec) != Some(codec)
    }

    /// Drops `pid`'s stream once nothing needs it: no publisher here, no
    /// players, and no WebRTC/RTP publisher whose bridge state it keeps.
    pub(super) fn forget_if_unused(&mut self, pid: ParticipantId, parts: &Participants) {
        let unused = self.streams.get(&pid).is_some_and(|s| {
            s.publisher.is_none()
                && s.players.is_empty()
                && s.watchers.is_empty()
                && s.relays == 0
                && !parts.is_publishing(pid)
        });
        if unused {
            self.streams.remove(&pid);
            self.out.push(Output::Transcode {
                job: Job::Reset { stream: pid },
                from: None,
            });
        }
    }

    /// The session of participant `pid`'s RTMP publisher, if it has one here.
    pub fn publisher_session(&self, pid: ParticipantId) -> Option<SessionId> {
        let idx = self.streams.get(&pid)?.publisher?;
        self.conns.get(&idx)?.session
    }

    /// Players of participant `pid`'s stream (for tests and stats).
    pub fn players(&self, pid: ParticipantId) -> usize {
        self.streams.get(&pid).map_or(0, |s| s.players.len())
    }

    /// Makes `idx` a player of participant `pid`'s stream: headers and the
    /// GOP so far at once, or a keyframe request to a bridged publisher.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attach_player(
        &mut self,
        now: Instant,
        idx: u32,
        room: RoomId,
        pid: ParticipantId,
        key: u32,
        actions: &mut Outputs,
    ) {
        let s = self.stream(room, pid, key);
        s.players.push(idx);
        let ask = s.keyframe_source();
        if let Some(source) = ask {
            self.out.note(Note::KeyframeWanted { source });
        }
        // A picture at once: headers and the GOP so far, serialized for this player.
        let http = self.conns.get(&idx).is_some_and(|c| c.http);
        let replay = self.streams.get(&pid).map(|s| replay_of(&s.cache, http));
        let role = Role::Player { room, stream: pid };
        self.start_player(now, idx, role, replay.unwrap_or_default(), actions);
    }

    /// Player `idx` starts with `replay` (a GOP cache's headers and GOP,
    /// chunked for it), waiting for a keyframe if there is none.
    pub(super) fn start_player(
        &mut self,
        now: Instant,
        idx: u32,
        role: Role,
        replay: Vec<(Bytes, Frame)>,
        actions: &mut Outputs,
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
            actions.rtmp(Action::Wake(idx));
        }
        // A long replay can leave it behind already.
        let behind = self.conns.get(&idx).and_then(|st| st.queue.poll_timeout());
        self.schedule(Timer::Player(idx), behind);
    }

    pub(super) fn on_media(
        &mut self,
        now: Instant,
        idx: u32,
        m: Media,
        parts: &Participants,
        actions: &mut Outputs,
    ) {
        let Some(Role::Publisher { room, pid }) = self.conns.get(&idx).map(|c| c.role) else {
            return; // media from a connection that is not publishing
        };
        self.stats.published_messages += 1;
        let pushed = match m.type_id {
            types::VIDEO => self.packetize_for_webrtc(pid, &m),
            _ => Pushed::Nothing,
        };
        // Only B-frames' and E-RTMP's warnings depend on it: no lookup for
        // the rest.
        let enhanced =
            m.type_id == types::VIDEO && crate::codec::ertmp::codec(&m.payload).is_some();
        let rtp = (has_bframes(&m) || enhanced)
            .then(|| self.streams.get(&pid).and_then(|s| s.rtp.as_ref()))
            .flatten();
        let reencoded = rtp.is_some_and(|r| r.reencode == Some(true) || r.transcode == Some(true));
        let native = rtp.is_some_and(|r| r.native.is_some());
        let limits = (self.bframe_reencodes, self.video_transcodes);
        if let Some(st) = self.conns.get_mut(&idx) {
            st.stats.packets += 1;
            st.stats.bytes += m.payload.len() as u64;
            st.dirty = true;
            if pushed == Pushed::BadConfig {
                st.stats.drops[DropReason::Malformed as usize] += 1;
            }
            let warning = media_warning(&m, reencoded, native, limits);
            if let Some((kind, what)) = warning.filter(|(k, _)| st.warned & k == 0) {
                st.warned |= kind;
                if let Some(session) = st.session {
                    tracing::info!(%session, "RTMP publisher's media: {what}");
                    self.out.event(RingEvent::MediaWarning { session, what });
                }
            }
        }
        if m.type_id == types::AUDIO {
            // The RTP side exists once video started; audio joins it.
            if let Some(s) = self.streams.get_mut(&pid) {
                let rtp = s.rtp.get_or_insert_with(|| RtpOut::new(pid, s.pushes));
                if Frame::of(&m) == Frame::Config {
                    rtp.audio_ts = None;
                }
            }
            let mixes = self.mixes_for(room, pid, parts);
            self.out.push(Output::Transcode {
                job: Job::Aac {
                    stream: pid,
                    ms: m.timestamp,
                    flv: m.payload.to_vec(),
                    mixes,
                },
                from: None,
            });
        }
        self.deliver(now, pid, m, actions);
    }

    /// A message of participant `pid`'s stream: into the GOP cache, chunked
    /// once, offered to every player; then to the programs that show it.
    /// The stream's own metadata goes first when it calls for it (the
    /// publisher's is merged into it, not sent on).
    pub(super) fn deliver(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        m: Media,
        actions: &mut Outputs,
    ) {
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

    /// [`Self::deliver`] once the metadata is dealt with (and what a
    /// replica is relayed): cached, to every player, to the shards with
    /// players of it, to the programs that show it.
    pub(super) fn send_on(
        &mut self,
        now: Instant,
        pid: ParticipantId,
        m: Media,
        actions: &mut Outputs,
    ) {
        let Some(s) = self.streams.get_mut(&pid) else {
            return;
        };
        s.cache.on_media(&m);
        let mut relays = s.relays;
        while relays != 0 {
            let to = relays.trailing_zeros();
            relays &= relays - 1;
            self.out.push(Output::Relay {
                to,
                msg: crate::relay::Message::Flv {
                    stream: crate::relay::FlvKey::Stream(pid),
                    media: m.clone(),
                },
            });
        }
        let Some(s) = self.streams.get_mut(&pid) else {
            return;
        };
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
    pub(super) fn offer_to(
        &mut self,
        now: Instant,
        players: &[u32],
        m: &Media,
        actions: &mut Outputs,
    ) {
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
            let was_behind = st.queue.poll_timeout().is_some();
            match st.queue.offer(now, bytes, frame) {
                Offer::Queued => {
                    st.stats.packets += 1;
                    st.stats.bytes += bytes.len() as u64;
                    self.stats.player_messages += 1;
                    actions.rtmp(Action::Wake(p));
                }
                Offer::Dropped => {
                    st.stats.drops[DropReason::Send as usize] += 1;
                    self.stats.player_drops += 1;
                    // Fell behind just now: closed at its deadline if it
                    // stays behind, whether or not more media comes.
                    if let Some(at) = st.queue.poll_timeout().filter(|_| !was_behind) {
                        self.deadlines.schedule(Timer::Player(p), at);
                    }
                }
                Offer::Disconnect => {
                    st.slow = true;
                    actions.rtmp(Action::Close {
                        idx: p,
                        why: TOO_SLOW.into(),
                        flush: false,
                    })
                }
            }
        }
    }

    /// Player `idx` behind for [`BEHIND_TIMEOUT`](crate::rtmp::stream::BEHIND_TIMEOUT)
    /// at `now`, with no message since to find it: closed as too slow, as
    /// the next message would have closed it.
    pub(super) fn player_timeout(&mut self, now: Instant, idx: u32, actions: &mut Outputs) {
        let Some(st) = self.conns.get_mut(&idx) else {
            return;
        };
        if st.slow || !st.queue.handle_timeout(now) {
            return;
        }
        st.slow = true;
        actions.rtmp(Action::Close {
            idx,
            why: TOO_SLOW.into(),
            flush: false,
        });
    }
}

/// Why a player that fell behind is closed.
const TOO_SLOW: &str = "player too slow: behind for 5 s";

/// A GOP cache's headers and GOP, as RTMP chunks or HTTP-FLV tags, for a
/// player that starts.
pub(super) fn replay_of(cache: &GopCache, http: bool) -> Vec<(Bytes, Frame)> {
    let wire = if http { http::tag_chunk } else { chunked };
    cache.replay().map(|m| (wire(m), Frame::of(m))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::fixtures::*;
    use crate::hub::ConnState;
    use crate::output::Outputs;
    use crate::rtmp::chunk::write_message;
    use gateway_ring::msg::EndReason;
    use rml_amf0::Amf0Value;

    #[test]
    fn publish_then_late_player_gets_headers_and_gop_at_once() {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(3);
        let t0 = Instant::now();
        let mut a = Outputs::default();
        let publish = [
            connect(),
            command("publish", vec![Amf0Value::Utf8String("r".into())]),
        ]
        .concat();
        h.on_bytes(t0, 0, &publish, &mut rooms, &mut a);
        assert!(
            a.actions().all(|x| !matches!(x, Action::Close { .. })),
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
            a.actions().all(|x| !matches!(x, Action::Close { .. })),
            "{a:?}"
        );
        assert_eq!(h.stats.rejected, 0);
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

    /// A player whose queue never drains is dropped after the timeout and
    /// reported as a slow consumer, not as an ordinary leave.
    #[test]
    fn a_player_that_never_reads_is_dropped_as_slow() {
        // RTMP and HTTP-FLV players alike.
        for http in [false, true] {
            let mut rooms = OneRoom::creating();
            let mut h = hub_with(2);
            let t0 = Instant::now();
            let mut a = Outputs::default();
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
                if a.actions()
                    .any(|x| matches!(x, Action::Close { idx: 1, .. }))
                {
                    closed = true;
                    break;
                }
            }
            assert!(
                closed,
                "the stalled player was never dropped (http: {http})"
            );
            h.out.clear();
            h.remove(Instant::now(), 1, &mut rooms.parts);
            assert!(
                h.out.events().any(|e| matches!(
                    e,
                    RingEvent::SessionEnded {
                        reason: EndReason::SlowConsumer,
                        ..
                    }
                )),
                "{:?}",
                h.out
            );
        }
    }

    /// Connection 1 plays bob (connection 0), and at `t0` bob sends five
    /// 200 kB frames at once, more than the player's queue holds: it falls
    /// behind (nothing closed yet, no deadline before that).
    fn a_player_behind() -> (Hub, OneRoom, Outputs, Instant) {
        let mut rooms = OneRoom::creating();
        let mut h = hub_with(2);
        let t0 = Instant::now();
        let mut a = Outputs::default();
        send_at(&mut h, &mut rooms, 0, "publish", "r/bob", t0);
        send_at(&mut h, &mut rooms, 1, "play", "r/bob", t0);
        assert_eq!(h.poll_timeout(), None);
        let mut frame = vec![0x17u8, 1, 0, 0, 0];
        frame.resize(200_000, 7);
        for i in 0..5u32 {
            frame[0] = if i == 0 { 0x17 } else { 0x27 };
            let mut m = Vec::new();
            write_message(&mut m, 6, i * 33, types::VIDEO, 1, &frame, 128);
            h.on_bytes(t0, 0, &m, &mut rooms, &mut a);
        }
        assert!(h.stats.player_drops > 0, "behind");
        assert_eq!(closed(&a, 1), None);
        (h, rooms, a, t0)
    }

    /// A player falls behind and then no media comes at all (the
    /// publisher paused): it is closed as too slow when BEHIND_TIMEOUT is
    /// up, by the deadline alone, and not a moment before; reported as a
    /// slow consumer.
    #[test]
    fn a_player_behind_is_closed_at_its_deadline_without_further_media() {
        use crate::rtmp::stream::BEHIND_TIMEOUT;
        let (mut h, mut rooms, mut a, t0) = a_player_behind();
        let due = t0 + BEHIND_TIMEOUT;
        assert_eq!(h.poll_timeout(), Some(due));
        h.handle_timeout(
            due - std::time::Duration::from_millis(1),
            &rooms.parts,
            &mut a,
        );
        assert_eq!(closed(&a, 1), None, "closed before its time");
        h.handle_timeout(due, &rooms.parts, &mut a);
        assert_eq!(closed(&a, 1), Some(TOO_SLOW));
        assert_eq!(h.poll_timeout(), None, "fired once");
        h.out.clear();
        h.remove(due, 1, &mut rooms.parts);
        assert!(
            h.out.events().any(|e| matches!(
                e,
                RingEvent::SessionEnded {
                    reason: EndReason::SlowConsumer,
                    ..
                }
            )),
            "{:?}",
            h.out
        );
    }

    /// A bug reached through a player's timer costs that player, not the
    /// shard: the panic stays in the hub, what the timer queued is
    /// discarded, the player is closed, and the timer does not come back.
    #[test]
    fn a_timer_that_panics_costs_its_player_only() {
        use crate::hub::timers::PANIC_IN_NEXT_TIMER;
        use crate::rtmp::stream::BEHIND_TIMEOUT;
        let (mut h, rooms, mut a, t0) = a_player_behind();
        let due = t0 + BEHIND_TIMEOUT;
        assert_eq!(h.poll_timeout(), Some(due));
        a.clear();
        PANIC_IN_NEXT_TIMER.set(true);
        let results = h.handle_timeout(due, &rooms.parts, &mut a);
        assert!(results.bridged.is_empty() && results.failed.is_empty());
        assert_eq!(closed(&a, 1), Some("internal error"));
        assert_eq!(closed(&a, 0), None, "the publisher plays on");
        assert_eq!(h.poll_timeout(), None, "the timer does not come back");
    }
}
