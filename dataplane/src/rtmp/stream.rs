//! What a room's RTMP stream keeps for its players (sans-IO): the GOP cache
//! that gives a new player a picture at once, and each player's bounded
//! send queue.
//!
//! FLV tag bodies (what RTMP audio/video messages carry):
//!
//! ```text
//! video  [frame type(4) | codec 7=AVC (4)] [AVC packet type: 0 config, 1 NALUs] [cts(3)] ...
//! audio  [format 10=AAC (4) | rate, size, channels (4)] [AAC packet type: 0 config, 1 raw] ...
//! ```

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::chunk::{write_message, OUT_CHUNK_SIZE};
use super::conn::{types, Media, CSID_AUDIO, CSID_STREAM, CSID_VIDEO, STREAM_ID};
use crate::codec::{ertmp, FlvCodec};

/// GOP cache bounds: beyond either, the cache is dropped until the next keyframe.
pub const MAX_GOP_BYTES: usize = 8 << 20;
pub const MAX_GOP_MS: u32 = 10_000;

/// A video sequence header (the decoder configuration a player needs
/// first): legacy H264's, or any E-RTMP codec's (HEVC, AV1, VP9).
pub fn is_video_config(m: &Media) -> bool {
    if m.type_id != types::VIDEO {
        return false;
    }
    if ertmp::is_enhanced(&m.payload) {
        return ertmp::is_sequence_start(&m.payload);
    }
    m.payload.len() >= 2 && FlvCodec::of_flv(&m.payload).is_some() && m.payload[1] == 0
}

/// A keyframe's coded picture, legacy (an AVC-style packet) or E-RTMP.
pub fn is_keyframe(m: &Media) -> bool {
    if m.type_id != types::VIDEO || m.payload.len() < 2 {
        return false;
    }
    if ertmp::is_enhanced(&m.payload) {
        return ertmp::is_keyframe(&m.payload);
    }
    m.payload[0] >> 4 == 1 && m.payload[1] == 1
}

/// The codec of a video sequence header as `onMetaData` names it: FLV's
/// codec id (7: H264), or for E-RTMP its FourCC as a number (the spec's
/// `videocodecid`).
pub fn video_codec_id(config: &[u8]) -> Option<f64> {
    if ertmp::is_enhanced(config) {
        return ertmp::fourcc_number(config).map(f64::from);
    }
    Some((config.first()? & 0x0f) as f64)
}

pub fn is_audio_config(m: &Media) -> bool {
    m.type_id == types::AUDIO
        && m.payload.len() >= 2
        && m.payload[0] >> 4 == 10
        && m.payload[1] == 0
}

/// The latest GOP of a stream, with the sequence headers and metadata a
/// decoder needs before it.
#[derive(Default)]
pub struct GopCache {
    pub enabled: bool,
    metadata: Option<Media>,
    video_config: Option<Media>,
    audio_config: Option<Media>,
    gop: Vec<Media>,
    bytes: usize,
}

impl GopCache {
    pub fn new(enabled: bool) -> GopCache {
        GopCache {
            enabled,
            ..Default::default()
        }
    }

    pub fn on_media(&mut self, m: &Media) {
        if m.type_id == types::DATA_AMF0 {
            self.metadata = Some(m.clone());
            return;
        }
        if is_video_config(m) {
            self.video_config = Some(m.clone());
            return;
        }
        if is_audio_config(m) {
            self.audio_config = Some(m.clone());
            return;
        }
        if !self.enabled {
            return;
        }
        if is_keyframe(m) {
            self.gop.clear();
            self.bytes = 0;
        } else if self.gop.is_empty() {
            // Nothing decodable to build on before the first keyframe.
            return;
        }
        // Signed: audio may be stamped a little before the keyframe it
        // follows (streams are interleaved as they arrive), which is not a
        // GOP of 49 days.
        let span = self.gop.first().map_or(0, |f| {
            (m.timestamp.wrapping_sub(f.timestamp) as i32).max(0) as u32
        });
        if self.bytes + m.payload.len() > MAX_GOP_BYTES || span > MAX_GOP_MS {
            self.gop.clear();
            self.bytes = 0;
            return;
        }
        self.bytes += m.payload.len();
        self.gop.push(m.clone());
    }

    /// What a new player is sent first: metadata, sequence headers, then
    /// the GOP so far (empty when the cache is off: it waits for a keyframe).
    pub fn replay(&self) -> impl Iterator<Item = &Media> {
        self.metadata
            .iter()
            .chain(&self.video_config)
            .chain(&self.audio_config)
            .chain(&self.gop)
    }

    pub fn gop_len(&self) -> usize {
        self.gop.len()
    }

    /// Metadata and sequence headers: what a decoder needs before a keyframe.
    pub fn configs(&self) -> impl Iterator<Item = &Media> {
        self.metadata
            .iter()
            .chain(&self.video_config)
            .chain(&self.audio_config)
    }

    /// The GOP so far, from its keyframe.
    pub fn gop(&self) -> &[Media] {
        &self.gop
    }
}

/// One media message as chunks, the same bytes for every player.
pub fn chunked(m: &Media) -> Bytes {
    let csid = match m.type_id {
        types::AUDIO => CSID_AUDIO,
        types::VIDEO => CSID_VIDEO,
        _ => CSID_STREAM,
    };
    let mut out = Vec::with_capacity(m.payload.len() + 16 + m.payload.len() / OUT_CHUNK_SIZE);
    write_message(
        &mut out,
        csid,
        m.timestamp,
        m.type_id,
        STREAM_ID,
        &m.payload,
        OUT_CHUNK_SIZE,
    );
    Bytes::from(out)
}

/// A player's queue is "behind" beyond this many bytes: it skips to the next
/// keyframe instead of growing (about 2 s of a 2 Mbit/s stream).
pub const QUEUE_SOFT_LIMIT: usize = 512 * 1024;
/// Most bytes waiting for one connection, media and control together;
/// media stops at [`QUEUE_SOFT_LIMIT`], so only control output it never
/// reads gets here.
pub const MAX_UNREAD: usize = gateway_ring::limits::DEFAULT.rtmp_max_unread;
/// A player that stays behind this long is disconnected.
pub const BEHIND_TIMEOUT: Duration = Duration::from_secs(5);

/// How a message matters to a decoder starting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Sequence headers and metadata: always delivered.
    Config,
    /// A video keyframe: a decoder can start here.
    Key,
    /// Other video: useless before a keyframe.
    Delta,
    /// Audio.
    Audio,
}

impl Frame {
    pub fn of(m: &Media) -> Frame {
        if is_video_config(m) || is_audio_config(m) || m.type_id == types::DATA_AMF0 {
            Frame::Config
        } else if is_keyframe(m) {
            Frame::Key
        } else if m.type_id == types::VIDEO {
            Frame::Delta
        } else {
            Frame::Audio
        }
    }
}

/// What to do with a player after offering it a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// Dropped: the player is behind and waits for a keyframe.
    Dropped,
    /// Behind for too long: close it.
    Disconnect,
}

/// Bytes waiting to be written to one player, bounded by size: a slow
/// player loses whole GOPs, not the end-to-end delay.
pub struct PlayerQueue {
    queue: VecDeque<Bytes>,
    bytes: usize,
    /// Skipping until a keyframe, since when.
    behind_since: Option<Instant>,
    /// No keyframe sent yet: video before one cannot be decoded, so a player
    /// that joined without the GOP cache waits for the next keyframe (audio
    /// too, as nginx-rtmp's `wait_video`).
    pub wait_keyframe: bool,
    pub dropped: u64,
    /// Most bytes of control output and config messages it may leave
    /// unread ([`MAX_UNREAD`] unless the hub sets `--rtmp-max-unread`).
    pub max_unread: usize,
}

impl Default for PlayerQueue {
    fn default() -> Self {
        PlayerQueue {
            queue: VecDeque::new(),
            bytes: 0,
            behind_since: None,
            wait_keyframe: false,
            dropped: 0,
            max_unread: MAX_UNREAD,
        }
    }
}

impl PlayerQueue {
    /// Test helper: everything queued, sent and read back as messages, the
    /// way a player's chunk reader sees them.
    #[cfg(test)]
    pub(crate) fn take_messages(&mut self) -> Vec<super::chunk::Message> {
        let mut bytes = Vec::new();
        while let Some(f) = self.front() {
            bytes.extend_from_slice(f);
            let n = f.len();
            self.consumed(n);
        }
        let mut out = Vec::new();
        // A player that read the earlier output has been told the chunk
        // size (the server's first message); a later call starts after it.
        let mut reader = super::chunk::ChunkReader::default();
        reader
            .set_chunk_size(super::chunk::OUT_CHUNK_SIZE as u32)
            .expect("a valid chunk size");
        reader
            .push(&bytes, |m| {
                out.push(m);
                Ok(())
            })
            .expect("the queue holds well-formed chunks");
        out
    }

    /// Control output (handshake, command answers): never dropped, but a
    /// client that lets `max_unread` pile up (pings it never reads the
    /// answers to, commands in a loop) is not reading: false, close it.
    pub fn push_control(&mut self, b: Bytes) -> bool {
        if self.bytes + b.len() > self.max_unread {
            return false;
        }
        self.bytes += b.len();
        self.queue.push_back(b);
        true
    }

    /// A media message for this player.
    pub fn offer(&mut self, now: Instant, b: &Bytes, frame: Frame) -> Offer {
        let keyframe = frame == Frame::Key;
        let config = frame == Frame::Config;
        if self.wait_keyframe {
            // Audio waits too, so playback starts with both at the keyframe.
            match frame {
                Frame::Key => self.wait_keyframe = false,
                Frame::Delta | Frame::Audio => return Offer::Dropped,
                Frame::Config => {}
            }
        }
        if let Some(since) = self.behind_since {
            let drained = self.bytes < QUEUE_SOFT_LIMIT / 2;
            if keyframe && drained {
                self.behind_since = None;
            } else if now.saturating_duration_since(since) >= BEHIND_TIMEOUT {
                return Offer::Disconnect;
            } else if !config {
                self.dropped += 1;
                return Offer::Dropped;
            }
        } else if self.bytes > QUEUE_SOFT_LIMIT && !config {
            self.behind_since = Some(now);
            self.dropped += 1;
            return Offer::Dropped;
        }
        // Config is always delivered, so it alone could grow the queue of a
        // player that never reads (a publisher sending metadata in a loop).
        if config && self.bytes + b.len() > self.max_unread {
            return Offer::Disconnect;
        }
        self.bytes += b.len();
        self.queue.push_back(b.clone());
        Offer::Queued
    }

    /// When this player will have been behind for [`BEHIND_TIMEOUT`]
    /// ([`Self::handle_timeout`] then says to close it); `None` while it
    /// keeps up.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.behind_since? + BEHIND_TIMEOUT)
    }

    /// Whether the player has been behind for [`BEHIND_TIMEOUT`] at `now`
    /// (close it), as the next message offered would have found: a player
    /// behind is dropped when its time is up, not at the next message,
    /// which may not come for a while (a publisher that paused).
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        self.poll_timeout().is_some_and(|at| now >= at)
    }

    /// The next bytes to write, if any.
    pub fn front(&self) -> Option<&Bytes> {
        self.queue.front()
    }

    /// The buffers to write next, in order: one vectored write carries a
    /// player's whole backlog, so one that fell behind catches up in one
    /// operation instead of one per message.
    pub fn front_bufs(&self) -> impl Iterator<Item = &Bytes> {
        self.queue.iter()
    }

    /// `n` bytes from the front were written, across buffers.
    pub fn consumed(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            let k = n.min(front.len());
            self.bytes -= k;
            n -= k;
            if k == front.len() {
                self.queue.pop_front();
            } else {
                let _ = front.split_to(k);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// E-RTMP tags (FourCC after an ExVideoTagHeader) are sequence headers
    /// and keyframes as legacy ones are; `onMetaData`'s `videocodecid` for
    /// them is the FourCC as a number; a legacy tag keeps its codec id.
    #[test]
    fn enhanced_rtmp_headers_and_keyframes() {
        let m = |payload: &[u8]| Media {
            type_id: types::VIDEO,
            timestamp: 0,
            payload: Bytes::copy_from_slice(payload),
        };
        let av01 = *b"av01";
        let start = [&[0x90][..], &av01, &[0x81, 0x00, 0x0c]].concat();
        assert!(is_video_config(&m(&start)) && !is_keyframe(&m(&start)));
        let key = [&[0x91][..], &av01, &[0x12, 0x00]].concat(); // CodedFrames
        let key_x = [&[0x93][..], &av01, &[0x12, 0x00]].concat(); // CodedFramesX
        let inter = [&[0xa1][..], &av01, &[0x12, 0x00]].concat();
        assert!(is_keyframe(&m(&key)) && is_keyframe(&m(&key_x)));
        assert!(!is_keyframe(&m(&inter)) && !is_video_config(&m(&key)));
        assert!(!is_video_config(&m(&[0x90, b'a', b'v'])), "cut short");
        // ModEx (packet type 7) is no H264, whatever its low bits say.
        assert_eq!(FlvCodec::of_flv(&[0x97, b'a', b'v', b'c', b'1']), None);
        assert_eq!(
            video_codec_id(&start),
            Some(u32::from_be_bytes(av01) as f64)
        );
        assert_eq!(video_codec_id(&[0x17, 0]), Some(7.0));
        assert!(is_video_config(&m(&[0x17, 0, 0, 0, 0, 1])) && is_keyframe(&m(&[0x17, 1])));
    }

    fn video(ts: u32, key: bool, len: usize) -> Media {
        let mut p = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        p.resize(len, 0xaa);
        Media {
            type_id: types::VIDEO,
            timestamp: ts,
            payload: Bytes::from(p),
        }
    }

    fn config(type_id: u8, first: u8) -> Media {
        Media {
            type_id,
            timestamp: 0,
            payload: Bytes::from(vec![first, 0, 1, 2]),
        }
    }

    #[test]
    fn cache_holds_headers_and_the_gop_since_the_last_keyframe() {
        let mut c = GopCache::new(true);
        c.on_media(&video(0, false, 100)); // before any keyframe: ignored
        c.on_media(&config(types::VIDEO, 0x17));
        c.on_media(&config(types::AUDIO, 0xaf));
        for i in 0..5 {
            c.on_media(&video(i * 33, i == 0, 100));
        }
        c.on_media(&video(165, true, 100));
        c.on_media(&video(198, false, 100));
        let r: Vec<(u32, bool)> = c.replay().map(|m| (m.timestamp, is_keyframe(m))).collect();
        assert_eq!(r, vec![(0, false), (0, false), (165, true), (198, false)]);

        let mut off = GopCache::new(false);
        off.on_media(&config(types::VIDEO, 0x17));
        off.on_media(&video(0, true, 100));
        assert_eq!(off.replay().count(), 1, "headers only without the cache");
    }

    #[test]
    fn audio_stamped_just_before_the_keyframe_does_not_flush_the_cache() {
        let mut c = GopCache::new(true);
        c.on_media(&video(1000, true, 100));
        c.on_media(&Media {
            type_id: types::AUDIO,
            timestamp: 990,
            payload: Bytes::from_static(&[0xaf, 1, 5]),
        });
        c.on_media(&video(1033, false, 100));
        assert_eq!(c.gop_len(), 3);
    }

    #[test]
    fn cache_is_bounded() {
        let mut c = GopCache::new(true);
        c.on_media(&video(0, true, 1000));
        c.on_media(&video(MAX_GOP_MS + 1, false, 1000));
        assert_eq!(c.gop_len(), 0, "a GOP longer than the bound is dropped");
        c.on_media(&video(20_000, true, MAX_GOP_BYTES / 2));
        c.on_media(&video(20_033, false, MAX_GOP_BYTES / 2 + 1));
        assert_eq!(c.gop_len(), 0);
    }

    #[test]
    fn slow_player_skips_to_a_keyframe_then_is_dropped() {
        let t0 = Instant::now();
        let mut q = PlayerQueue::default();
        let frame = Bytes::from(vec![0u8; 100 * 1024]);
        let mut offers = Vec::new();
        for i in 0..8 {
            offers.push(q.offer(t0, &frame, if i == 0 { Frame::Key } else { Frame::Delta }));
        }
        assert_eq!(offers[..6], [Offer::Queued; 6]);
        assert_eq!(offers[6], Offer::Dropped);
        // Drains, then a keyframe resumes it.
        while let Some(f) = q.front() {
            let n = f.len();
            q.consumed(n);
        }
        assert_eq!(q.offer(t0, &frame, Frame::Delta), Offer::Dropped);
        assert_eq!(q.offer(t0, &frame, Frame::Key), Offer::Queued);
        // Behind and never draining: disconnected after the timeout.
        for _ in 0..10 {
            q.offer(t0, &frame, Frame::Delta);
        }
        assert_eq!(
            q.offer(t0 + BEHIND_TIMEOUT, &frame, Frame::Delta),
            Offer::Disconnect
        );
    }

    /// The slow-player rule is a deadline: behind since `t0`, a player is
    /// to be closed at `t0 + BEHIND_TIMEOUT` with nothing offered to it
    /// in between, and not a moment before; one that caught up has none.
    #[test]
    fn behind_is_a_deadline() {
        let t0 = Instant::now();
        let mut q = PlayerQueue::default();
        assert_eq!(q.poll_timeout(), None);
        let frame = Bytes::from(vec![0u8; 100 * 1024]);
        while q.offer(t0, &frame, Frame::Delta) == Offer::Queued {}
        let due = q.poll_timeout().expect("behind");
        assert_eq!(due, t0 + BEHIND_TIMEOUT);
        assert!(!q.handle_timeout(due - Duration::from_millis(1)));
        assert!(q.handle_timeout(due));
        // Drained and resumed at a keyframe: no deadline left.
        while let Some(f) = q.front() {
            let n = f.len();
            q.consumed(n);
        }
        assert_eq!(q.offer(t0, &frame, Frame::Key), Offer::Queued);
        assert_eq!(q.poll_timeout(), None);
        assert!(!q.handle_timeout(t0 + BEHIND_TIMEOUT * 2));
    }

    /// Config messages are always delivered; a publisher sending them in a
    /// loop to a player that never reads gets that player disconnected
    /// once `max_unread` is queued, not an unbounded queue.
    #[test]
    fn config_for_a_player_that_never_reads_is_bounded() {
        let mut q = PlayerQueue {
            max_unread: 10_000,
            ..PlayerQueue::default()
        };
        let meta = Bytes::from(vec![0u8; 1000]);
        let t0 = Instant::now();
        let offers: Vec<Offer> = (0..20).map(|_| q.offer(t0, &meta, Frame::Config)).collect();
        assert_eq!(offers.iter().filter(|o| **o == Offer::Queued).count(), 10);
        assert_eq!(offers.last(), Some(&Offer::Disconnect));
        assert!(q.bytes() <= 10_000);
    }

    #[test]
    fn a_player_without_a_keyframe_gets_no_video_until_one() {
        let t0 = Instant::now();
        let mut q = PlayerQueue {
            wait_keyframe: true,
            ..Default::default()
        };
        let b = Bytes::from_static(b"x");
        assert_eq!(q.offer(t0, &b, Frame::Config), Offer::Queued);
        assert_eq!(q.offer(t0, &b, Frame::Delta), Offer::Dropped);
        assert_eq!(q.offer(t0, &b, Frame::Audio), Offer::Dropped);
        assert_eq!(q.offer(t0, &b, Frame::Key), Offer::Queued);
        assert_eq!(q.offer(t0, &b, Frame::Audio), Offer::Queued);
        assert_eq!(q.offer(t0, &b, Frame::Delta), Offer::Queued);
    }

    #[test]
    fn partial_writes_keep_order() {
        let mut q = PlayerQueue::default();
        assert!(q.push_control(Bytes::from_static(b"hello")));
        assert!(q.push_control(Bytes::from_static(b"world")));
        q.consumed(3);
        assert_eq!(&q.front().unwrap()[..], b"lo");
        q.consumed(2);
        assert_eq!(&q.front().unwrap()[..], b"world");
        assert_eq!(q.bytes(), 5);
    }

    #[test]
    fn a_vectored_write_is_consumed_across_buffers() {
        let mut q = PlayerQueue::default();
        for b in [&b"abc"[..], b"de", b"fghij"] {
            assert!(q.push_control(Bytes::copy_from_slice(b)));
        }
        let all: Vec<u8> = q.front_bufs().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(all, b"abcdefghij");
        // The kernel took the first two buffers and part of the third.
        q.consumed(7);
        assert_eq!(q.bytes(), 3);
        let rest: Vec<&[u8]> = q.front_bufs().map(|b| &b[..]).collect();
        assert_eq!(rest, [&b"hij"[..]]);
        // More than is queued: everything, nothing more.
        q.consumed(100);
        assert!(q.is_empty() && q.bytes() == 0);
    }
}
