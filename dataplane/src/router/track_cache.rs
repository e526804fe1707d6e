//! The router's cache of each video track, whatever its origin: one per
//! track, keyed by its [`Source`], and the one place a NACK is answered
//! from and a GOP replayed from.
//!
//! What is kept depends on what the origin can be asked for:
//!
//! - a session's track (a WebRTC publisher, an RTP ingest, or one of
//!   either relayed from another shard) can be asked for a keyframe and a
//!   resend: the latest [`NACK_WINDOW`] packets are copied into slots
//!   allocated once ([`NackCache`]), so the hot path allocates nothing;
//! - an RTMP publisher's RTP ([`Source::Rtmp`], on its shard or relayed)
//!   can be asked for neither: its packets are kept as the hub's
//!   packetizer made them (shared with the fan-out, not copied), back to
//!   the latest keyframe ([`Gop`]). Everything a player wants of such a
//!   track again comes from here: NACK answers, and one GOP replay from
//!   its latest keyframe into a player's line, served when the packet that
//!   begins the next frame is taken in, before that packet is fanned out
//!   (so the replay reaches the player first), to the lines that want one:
//!   those of a player that has just connected (`install_keys` marks its
//!   video lines) or lost the picture (PLI).
//!
//! A GOP is bounded by what it is for: the latest [`NACK_WINDOW`] packets,
//! and back to the latest keyframe up to [`MAX_GOP_BYTES`], the FLV GOP
//! cache's bound (beyond it, no replay until the next keyframe). A
//! session's cache goes with its session, an RTMP track's after
//! [`TRACK_CACHE_IDLE`] without a packet.

use std::collections::{vec_deque, HashMap, VecDeque};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_ring::msg::MediaKind;
use gateway_ring::RoomId;

use crate::codec::VideoCodec;
use crate::media::{Inbound, RtpFromRtmp, Source};
use crate::nack::NackCache;
use crate::participants::ParticipantId;
use crate::rtmp::stream::MAX_GOP_BYTES;
use crate::rtp::RtpHeader;
use crate::webrtc::Peer;

use super::egress::{pick_track, OutTrack};
use super::sessions::Role;
use super::{control_buf, Control, Handle, Output, Outputs, Router, KEYFRAME_REQUEST_INTERVAL};

/// Packets kept for NACKs whatever the GOP.
pub(super) const NACK_WINDOW: usize = crate::nack::SLOTS;

/// Most packets kept: a GOP of [`MAX_GOP_BYTES`] in full-size packets is
/// about 7000; under half the sequence space, so numbers stay unambiguous.
pub(super) const MAX_PACKETS: usize = 8192;

/// A track's cache is dropped after this long without a packet.
pub(super) const TRACK_CACHE_IDLE: Duration = Duration::from_secs(10);

/// One video track's packets: for NACK answers, and GOP replays where
/// the track cannot be asked for a keyframe.
pub(super) struct TrackCache {
    /// When it was last fed.
    pub(super) last: Instant,
    held: Held,
}

enum Held {
    /// A session's track: its latest packets, copied.
    Window(Box<NackCache>),
    /// An RTMP publisher's track: its packets back to its latest keyframe.
    Gop(Gop),
}

impl TrackCache {
    /// The cache of a session's track.
    pub(super) fn window(now: Instant) -> TrackCache {
        TrackCache {
            last: now,
            held: Held::Window(Box::default()),
        }
    }

    /// The cache of an RTMP publisher's track.
    fn gop(now: Instant, ssrc: u32, codec: VideoCodec) -> TrackCache {
        TrackCache {
            last: now,
            held: Held::Gop(Gop::new(codec, ssrc)),
        }
    }

    /// Keeps a copy of packet `pkt` (sequence number `seq`) of a session's
    /// track; nothing is allocated once the window has gone round once.
    #[inline]
    pub(super) fn copy(&mut self, now: Instant, seq: u16, pkt: &[u8]) {
        self.last = now;
        if let Held::Window(w) = &mut self.held {
            w.insert(seq, pkt);
        }
    }

    /// Keeps `packet`, an RTMP publisher's next RTP packet, itself.
    fn keep(&mut self, now: Instant, packet: Bytes) {
        self.last = now;
        if let Held::Gop(g) = &mut self.held {
            g.insert(packet);
        }
    }

    /// The packet with sequence number `seq`, if still held.
    pub(super) fn get(&self, seq: u16) -> Option<&[u8]> {
        match &self.held {
            Held::Window(w) => w.get(seq),
            Held::Gop(g) => g.get(seq),
        }
    }

    /// Whether a GOP can be replayed from here (an RTMP publisher's track).
    pub(super) fn replays(&self) -> bool {
        matches!(self.held, Held::Gop(_))
    }

    fn as_gop(&self) -> Option<&Gop> {
        match &self.held {
            Held::Gop(g) => Some(g),
            Held::Window(_) => None,
        }
    }

    /// The GOP cache of `source`'s `ssrc` in `codec` in `caches`: a new
    /// one if there is none, or if the one there holds another SSRC (a
    /// name pushed again: its RTP starts afresh) or another codec (where a
    /// keyframe starts is the codec's).
    fn gop_of(
        caches: &mut HashMap<Source, TrackCache>,
        source: Source,
        ssrc: u32,
        codec: VideoCodec,
        now: Instant,
    ) -> &mut TrackCache {
        let cache = caches
            .entry(source)
            .or_insert_with(|| TrackCache::gop(now, ssrc, codec));
        if cache
            .as_gop()
            .is_some_and(|g| g.codec != codec || g.ssrc != ssrc)
        {
            *cache = TrackCache::gop(now, ssrc, codec);
        }
        cache
    }
}

/// An RTMP publisher's RTP, back to its latest keyframe.
pub(super) struct Gop {
    /// Consecutive packets, oldest first: `packets[i]` has sequence number
    /// `first + i`.
    packets: VecDeque<Bytes>,
    first: u16,
    /// Bytes held.
    bytes: usize,
    /// Its video codec, which tells where a keyframe starts.
    codec: VideoCodec,
    /// The SSRC it holds.
    ssrc: u32,
    /// Sequence number of the packet that began the latest keyframe, while
    /// it is held.
    keyframe: Option<u16>,
}

impl Gop {
    fn new(codec: VideoCodec, ssrc: u32) -> Gop {
        Gop {
            packets: VecDeque::new(),
            first: 0,
            bytes: 0,
            codec,
            ssrc,
            keyframe: None,
        }
    }

    /// Keeps `packet`, the track's next RTP packet, and lets go of what is
    /// neither in the NACK window nor in the latest GOP (within its bound).
    /// A packet that does not follow the last one starts the cache again
    /// (a new publisher of the name numbers its packets anew).
    fn insert(&mut self, packet: Bytes) {
        let Ok(h) = RtpHeader::parse(&packet) else {
            return;
        };
        if packet.len() > crate::rtp::MAX_PACKET {
            return;
        }
        let expected = self.first.wrapping_add(self.packets.len() as u16);
        if self.packets.is_empty() || h.seq_no != expected {
            self.packets.clear();
            self.bytes = 0;
            self.keyframe = None;
            self.first = h.seq_no;
        }
        if self
            .codec
            .starts_keyframe(packet.get(h.len..).unwrap_or_default())
        {
            // The packetizer opens each keyframe with its parameter sets,
            // and an encoder may cut it in slices (x264's zerolatency
            // does): each looks like its start, all have its RTP time. The
            // first is where a replay starts.
            let held = self
                .keyframe
                .and_then(|k| RtpHeader::parse(self.get(k)?).ok());
            let same = held.is_some_and(|k| k.timestamp == h.timestamp);
            if !same {
                self.keyframe = Some(h.seq_no);
            }
        }
        self.bytes += packet.len();
        self.packets.push_back(packet);
        while self.packets.len() > NACK_WINDOW {
            let over = self.bytes > MAX_GOP_BYTES || self.packets.len() > MAX_PACKETS;
            if self.keyframe == Some(self.first) && !over {
                break;
            }
            let Some(old) = self.packets.pop_front() else {
                break;
            };
            self.bytes -= old.len();
            if self.keyframe == Some(self.first) {
                self.keyframe = None;
            }
            self.first = self.first.wrapping_add(1);
        }
    }

    /// The packet with sequence number `seq`, if still held.
    pub(super) fn get(&self, seq: u16) -> Option<&[u8]> {
        let i = seq.wrapping_sub(self.first) as usize;
        self.packets.get(i).map(|p| &p[..])
    }

    /// Whether held packet `seq` begins a frame: the one before it has
    /// another RTP time, or is not held.
    pub(super) fn starts_frame(&self, seq: u16) -> bool {
        let ts = |s: u16| Some(RtpHeader::parse(self.get(s)?).ok()?.timestamp);
        match (ts(seq), ts(seq.wrapping_sub(1))) {
            (Some(t), Some(prev)) => t != prev,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// The packets from the latest keyframe up to `next` (exclusive), if
    /// they are all held.
    fn gop_before(&self, next: u16) -> Option<vec_deque::Iter<'_, Bytes>> {
        let k = self.keyframe?.wrapping_sub(self.first) as usize;
        let n = next.wrapping_sub(self.first) as usize;
        (k <= n && n <= self.packets.len()).then(|| self.packets.range(k..n))
    }

    /// Test hook: replaces held packet `seq` (to tell which cache a
    /// replay or an answer came from).
    #[cfg(test)]
    pub(super) fn replace(&mut self, seq: u16, packet: Bytes) {
        let i = seq.wrapping_sub(self.first) as usize;
        if let Some(p) = self.packets.get_mut(i) {
            self.bytes = self.bytes - p.len() + packet.len();
            *p = packet;
        }
    }
}

/// Replays a track's cached GOP into one player line, ahead of the live
/// packet `live` (which begins a frame and goes to this line next): the
/// packets from its latest keyframe up to `live`, so the player's decoder
/// gets the keyframe and every frame since at once. Two cases, one cache:
///
/// - the line has carried nothing yet (a player that just connected): it
///   starts at the keyframe, and the replay is the publisher's packets at
///   their own numbers and times, through the line's new mapping, as the
///   live packets after them will be (presentation times with B-frames
///   stay in order; NACKs for them are answered as for any packet);
/// - the line carries this track (a PLI): the player has shown later
///   frames, so the replay is numbered on from the line's last packet and
///   stamped one tick apart per frame just after it, and the line's
///   mapping moves past it; the live stream goes on with no gap in
///   sequence and its own, later, timestamps (a GOP has fewer frames than
///   a frame has ticks).
///
/// A line that carries another track is left wanting (it may switch to
/// this one). Returns the packets sent: none if the GOP is not held whole.
#[allow(clippy::too_many_arguments)]
fn replay_gop(
    cache: &Gop,
    t: &mut OutTrack,
    peer: &mut Peer,
    live: &Inbound,
    take: bool,
    pool: &mut Vec<Vec<u8>>,
    out: &mut Outputs,
    from: Handle,
    dest: SocketAddrV4,
    now: Instant,
) -> u16 {
    let source = (live.source, live.ssrc);
    let fresh = t.last_at.is_none();
    if !fresh && t.source != Some(source) {
        return 0;
    }
    t.replay_wanted = false;
    t.last_replay = Some(now);
    if let Some(c) = live.codec.filter(|&c| t.codec != Some(c)) {
        t.carry(c);
    }
    let Some(gop) = cache.gop_before(live.seq_no) else {
        return 0;
    };
    let (base_seq, base_ts) = (t.last_seq, t.last_ts);
    let (mut frame, mut prev, mut n) = (1u32, None, 0u16);
    for pkt in gop {
        let Ok(h) = RtpHeader::parse(pkt) else {
            continue;
        };
        if prev.is_some_and(|p| p != h.timestamp) {
            frame += 1;
        }
        prev = Some(h.timestamp);
        let (seq, ts) = if fresh {
            match t.map(now, source, h.seq_no, h.timestamp, take) {
                Some(mapped) => mapped,
                None => break,
            }
        } else {
            (base_seq.wrapping_add(1 + n), base_ts.wrapping_add(frame))
        };
        let mut buf = control_buf(pool);
        let len = pkt.len();
        buf[..len].copy_from_slice(pkt);
        RtpHeader::rewrite(&mut buf, t.pt, seq, ts, t.ssrc);
        let Ok(m) = peer.protect_rtp(now, &mut buf, len, None) else {
            continue;
        };
        buf.truncate(m);
        n += 1;
        t.sent = t.sent.wrapping_add(1);
        t.octets = t.octets.wrapping_add(len.saturating_sub(12) as u32);
        out.push(Output::Transmit(Control {
            from,
            dest,
            data: buf,
        }));
    }
    if !fresh && n > 0 {
        t.seq_delta = t.seq_delta.wrapping_add(n);
        t.last_seq = base_seq.wrapping_add(n);
        t.last_ts = base_ts.wrapping_add(frame);
        // Answers to NACKs up to here would be numbered by the old mapping.
        t.replayed_until = Some(t.last_seq.wrapping_add(1));
    }
    n
}

impl Router {
    /// A video RTP packet of an RTMP publisher (participant `rtp.pid`'s),
    /// before it is fanned out: kept in its track cache, for its players'
    /// NACKs and GOP replays. When it begins a frame, the players of its
    /// room that want a replay on the line it goes to get it now, so the
    /// replay is queued ahead of the packet.
    pub fn cache_rtmp_video(&mut self, now: Instant, rtp: &RtpFromRtmp) {
        if let Some(live) = rtp.inbound(MediaKind::Video) {
            self.keep_video(now, &live, rtp.packet.clone());
        }
    }

    /// Keeps `packet` (routing facts `live`) in its source's track cache,
    /// and serves the replays it begins a frame for: an RTMP publisher's
    /// RTP on its own shard, or relayed to another (whose players' line
    /// choice and "never your own tracks" see `live`'s participant).
    pub fn keep_video(&mut self, now: Instant, live: &Inbound, packet: Bytes) {
        let Router {
            track_caches,
            rooms,
            sessions,
            pool,
            out,
            ..
        } = self;
        let codec = live.codec.unwrap_or(VideoCodec::NEGOTIATED);
        let cache = TrackCache::gop_of(track_caches, live.source, live.ssrc, codec, now);
        cache.keep(now, packet);
        let Some(cache) = cache.as_gop() else {
            return;
        };
        let Some(room) = rooms.get_mut(&live.room) else {
            return;
        };
        if room.replays.is_empty() || !cache.starts_frame(live.seq_no) {
            return;
        }
        room.replays.retain(|&h| {
            let Some(s) = sessions.get_mut(h as usize).and_then(Option::as_mut) else {
                return false;
            };
            let Role::Webrtc(w) = &mut s.role else {
                return false;
            };
            if s.room != live.room {
                return false;
            }
            // The line this packet goes to, as `prepare_egress` picks it.
            let dest = w.peer.destination();
            let line = pick_track(
                &w.tracks,
                live.kind,
                live.codec,
                live.source,
                live.key,
                w.peer.created,
                now,
            );
            if let (Some(dest), Some((i, take)), false) = (dest, line, live.participant == s.pid) {
                let t = &mut w.tracks[i];
                if t.replay_wanted {
                    let sent =
                        replay_gop(cache, t, &mut w.peer, live, take, pool, out, h, dest, now);
                    s.stats.retransmits += sent as u64;
                    s.dirty = true;
                }
            }
            w.tracks.iter().any(|t| t.replay_wanted)
        });
    }

    /// The GOPs held of room `room`'s RTMP publishers (each one's latest
    /// keyframe and every packet since): what a shard that starts watching
    /// the room is sent ([`crate::relay::Message::Gop`]).
    pub fn rtmp_gops(&self, room: RoomId) -> Vec<(Source, ParticipantId, VideoCodec, Vec<Bytes>)> {
        let mut gops = Vec::new();
        for (&source, cache) in &self.track_caches {
            let (Source::Rtmp(pid) | Source::RtmpTranscoded(pid, _)) = source else {
                continue;
            };
            if self.participants.room_of(pid) != Some(room) {
                continue;
            }
            let Some(cache) = cache.as_gop() else {
                continue;
            };
            let next = cache.first.wrapping_add(cache.packets.len() as u16);
            if let Some(gop) = cache.gop_before(next) {
                gops.push((source, pid, cache.codec, gop.cloned().collect()));
            }
        }
        gops
    }

    /// Fills `source`'s track cache with `packets`, the GOP its owner sent
    /// when this shard started watching: the players here that want a
    /// replay get it at the track's next frame, as on the owner. Nothing
    /// is fanned out now.
    pub fn seed_video(
        &mut self,
        now: Instant,
        source: Source,
        codec: VideoCodec,
        packets: &[Bytes],
    ) {
        let Some(first) = packets.first().and_then(|p| RtpHeader::parse(p).ok()) else {
            return;
        };
        let cache = TrackCache::gop_of(&mut self.track_caches, source, first.ssrc, codec, now);
        for p in packets {
            cache.keep(now, p.clone());
        }
    }

    /// Player `h`'s line `i` lost the picture of an RTMP publisher (which
    /// cannot be asked for a keyframe): its GOP is replayed at the next
    /// frame boundary, at most once per [`KEYFRAME_REQUEST_INTERVAL`].
    pub(super) fn want_replay(&mut self, now: Instant, h: Handle, i: usize) {
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
        self.replay_wanted_by(h);
    }

    /// Lists player `h` among its room's players that want a replay.
    pub(super) fn replay_wanted_by(&mut self, h: Handle) {
        let Some(room) = self.session(h).map(|s| s.room) else {
            return;
        };
        if let Some(r) = self.rooms.get_mut(&room) {
            if !r.replays.contains(&h) {
                r.replays.push(h);
            }
        }
    }

    /// Test hook: the cache of `source`'s track.
    #[cfg(test)]
    pub(super) fn track_cache_mut(&mut self, source: crate::media::Source) -> Option<&mut Gop> {
        match &mut self.track_caches.get_mut(&source)?.held {
            Held::Gop(g) => Some(g),
            Held::Window(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An RTP packet of `len` bytes: sequence number `seq`, time `ts`, a
    /// keyframe's start (an SPS) or not (a P slice).
    fn packet(seq: u16, ts: u32, key: bool, len: usize) -> Bytes {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        p.push(if key { 0x67 } else { 0x41 });
        p.resize(len.max(13), 0xaa);
        Bytes::from(p)
    }

    /// A track pushed again in another codec, or on another SSRC (a push
    /// that took over from a stale one), under the same source gets a new
    /// cache (where its keyframes start and its numbering are its own);
    /// the same codec and SSRC keep what they held.
    #[test]
    fn a_track_in_another_codec_or_ssrc_starts_a_cache_of_its_own() {
        let now = Instant::now();
        let source = Source::Rtmp(ParticipantId::new(3));
        let mut caches = HashMap::new();
        TrackCache::gop_of(&mut caches, source, 7, VideoCodec::H264, now)
            .keep(now, packet(1, 0, true, 50));
        let same = TrackCache::gop_of(&mut caches, source, 7, VideoCodec::H264, now);
        assert!(same.as_gop().unwrap().get(1).is_some(), "kept");
        let av1 = TrackCache::gop_of(&mut caches, source, 7, VideoCodec::Av1, now);
        let g = av1.as_gop().unwrap();
        assert_eq!((g.codec, g.get(1).is_some()), (VideoCodec::Av1, false));
        av1.keep(now, packet(1, 0, true, 50));
        let next = TrackCache::gop_of(&mut caches, source, 8, VideoCodec::Av1, now);
        assert!(next.as_gop().unwrap().get(1).is_none(), "a new push's own");
    }

    /// The oldest sequence number held, counted back from `last`.
    fn oldest(c: &Gop, last: u16) -> u16 {
        let mut s = last;
        while c.get(s.wrapping_sub(1)).is_some() {
            s = s.wrapping_sub(1);
        }
        s
    }

    /// A GOP longer than the NACK window is kept whole from its keyframe
    /// (across the sequence wrap), and what came before the keyframe goes;
    /// a GOP over the byte bound is let go (no replay) down to the NACK
    /// window; without a keyframe the NACK window is all that is kept.
    #[test]
    fn keeps_the_nack_window_and_the_latest_gop_within_its_bound() {
        let mut c = Gop::new(VideoCodec::H264, 1);
        let start = 65000u16;
        // 100 packets before the keyframe, then a GOP of 3000 packets.
        for k in 0..3100u16 {
            let seq = start.wrapping_add(k);
            c.insert(packet(seq, k as u32 / 10, k == 100, 1000));
        }
        let key = start.wrapping_add(100);
        let last = start.wrapping_add(3099);
        assert_eq!(c.keyframe, Some(key));
        assert_eq!(oldest(&c, last), key, "from the keyframe, no earlier");
        assert_eq!(c.gop_before(last).map(|g| g.len()), Some(2999));
        assert!(c.starts_frame(start.wrapping_add(110)));
        assert!(!c.starts_frame(start.wrapping_add(111)));
        assert_eq!(c.bytes, 3000 * 1000);
        // Full-size packets past MAX_GOP_BYTES: the GOP goes, the NACK
        // window stays.
        let mut seq = last;
        while c.bytes + crate::rtp::MAX_PACKET <= MAX_GOP_BYTES {
            seq = seq.wrapping_add(1);
            c.insert(packet(seq, 0, false, crate::rtp::MAX_PACKET));
        }
        assert_eq!(c.keyframe, Some(key), "still within the bound");
        seq = seq.wrapping_add(1);
        c.insert(packet(seq, 0, false, crate::rtp::MAX_PACKET));
        assert_eq!(c.keyframe, None, "over the bound: no replay");
        assert!(c.gop_before(seq).is_none());
        assert_eq!(c.packets.len(), NACK_WINDOW);
        assert_eq!(oldest(&c, seq), seq.wrapping_sub(NACK_WINDOW as u16 - 1));
        assert!(c.bytes <= NACK_WINDOW * crate::rtp::MAX_PACKET);
    }

    /// A keyframe in parameter sets and several slices (x264's
    /// zerolatency cuts frames in slices), each slice's first packet
    /// looking like a keyframe's start, begins at its parameter sets: what
    /// a replay starts from; the next keyframe, at another RTP time, moves
    /// it.
    #[test]
    fn a_keyframe_in_slices_begins_at_its_parameter_sets() {
        let mut c = Gop::new(VideoCodec::H264, 1);
        let mut seq = 0u16;
        let mut push = |c: &mut Gop, ts: u32, payload: &[u8]| {
            let mut p = vec![0x80, 96];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&ts.to_be_bytes());
            p.extend_from_slice(&7u32.to_be_bytes());
            p.extend_from_slice(payload);
            c.insert(Bytes::from(p));
            seq += 1;
            seq - 1
        };
        push(&mut c, 0, &[0x41, 1]);
        let stap_a = [0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce];
        let start = push(&mut c, 3000, &stap_a);
        for _slice in 0..4 {
            push(&mut c, 3000, &[0x7c, 0x85, 1]); // an IDR slice's first FU-A
            for _ in 0..3 {
                push(&mut c, 3000, &[0x7c, 0x05, 1]);
            }
            push(&mut c, 3000, &[0x7c, 0x45, 1]);
        }
        let next = push(&mut c, 6000, &[0x41, 2]);
        assert_eq!(c.keyframe, Some(start));
        assert_eq!(c.gop_before(next).map(|g| g.len()), Some(21));
        let again = push(&mut c, 9000, &stap_a);
        push(&mut c, 9000, &[0x7c, 0x85, 1]);
        assert_eq!(c.keyframe, Some(again));
    }

    /// A packet that does not follow the last (a new publisher of the name
    /// numbers from 0) starts the cache again: nothing of the old track is
    /// answered or replayed as the new one's.
    #[test]
    fn a_track_numbered_anew_starts_the_cache_again() {
        let mut c = Gop::new(VideoCodec::H264, 1);
        for seq in 500..520u16 {
            c.insert(packet(seq, seq as u32, seq == 505, 100));
        }
        assert!(c.gop_before(519).is_some());
        c.insert(packet(0, 0, false, 100));
        assert!(c.get(519).is_none() && c.get(505).is_none());
        assert_eq!((c.packets.len(), c.bytes, c.keyframe), (1, 100, None));
        assert!(c.gop_before(1).is_none());
    }
}
