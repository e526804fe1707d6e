//! RTMP chunk stream (Adobe RTMP spec §5.3): messages cut into chunks,
//! interleaved by chunk stream id, with compressed headers.
//!
//! ```text
//! basic header   fmt(2) csid(6) [+1 or +2 bytes for csid >= 64]
//! message header fmt 0: ts(3) len(3) type(1) stream(4, LE)   a new message, absolute ts
//!                fmt 1: ts-delta(3) len(3) type(1)           same stream
//!                fmt 2: ts-delta(3)                          same stream, len, type
//!                fmt 3: nothing                              continuation, or repeat
//! [extended timestamp (4) when the 24-bit field is 0xFFFFFF]
//! chunk data     min(chunk size, bytes left of the message)
//! ```
//!
//! Why our own reader: it enforces limits a server needs against hostile
//! peers (message length, partially received messages, header sanity) and
//! copies chunk data straight into the message, whatever the chunk size.
//! The crate we measured (`rml_rtmp`) reserves a declared message length
//! before the data arrives and buffers whole chunks.
//!
//! The writer always emits type-0 headers for a message's first chunk, so
//! the bytes of one media message are the same for every player and are
//! serialized once per message, not once per player.

use bytes::Bytes;

/// Longest message accepted from a publisher (a keyframe of a high-bitrate stream fits).
pub const MAX_MESSAGE: usize = gateway_ring::limits::DEFAULT.rtmp_max_message;
/// Most chunk streams with a message in progress at once.
pub const MAX_PARTIAL: usize = 16;
/// Most bytes of messages in progress at once, all chunk streams together,
/// from a publisher: what one connection can make the shard hold for it.
pub const MAX_PARTIAL_BYTES: usize = gateway_ring::limits::DEFAULT.rtmp_max_pending;
/// Before a connection publishes (handshake, `connect`, `createStream`,
/// `play`; every player, every client that has not authenticated): the
/// longest message and the most bytes in progress. Commands are small
/// (AMF0 is bounded at 8 KiB); nothing bigger is legitimate before `publish`.
pub const SETUP_MAX_MESSAGE: usize = 64 << 10;
/// Chunk size we send with (announced by Set Chunk Size at connect).
pub const OUT_CHUNK_SIZE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error(
        "message of {0} bytes is over the connection's limit ({SETUP_MAX_MESSAGE} before publish)"
    )]
    TooLong(usize),
    #[error("chunk header continues a chunk stream that never started")]
    NoPreviousHeader,
    #[error("more than {MAX_PARTIAL} messages in progress at once")]
    TooManyPartial,
    #[error("chunk size {0} out of range")]
    BadChunkSize(u32),
    #[error("a new message header arrived in the middle of a message")]
    Interleaved,
    #[error("over {0} bytes of messages in progress at once")]
    TooMuchPartial(usize),
}

impl ChunkError {
    /// Whether the peer hit a memory bound (rather than sending junk).
    pub fn is_memory_limit(self) -> bool {
        matches!(
            self,
            ChunkError::TooLong(_) | ChunkError::TooManyPartial | ChunkError::TooMuchPartial(_)
        )
    }
}

/// One reassembled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub csid: u32,
    pub timestamp: u32,
    pub type_id: u8,
    pub stream_id: u32,
    pub payload: Bytes,
}

#[derive(Default, Clone)]
struct StreamState {
    timestamp: u32,
    delta: u32,
    length: u32,
    type_id: u8,
    stream_id: u32,
    extended: bool,
    /// Bytes received of the message in progress (empty between messages).
    partial: Vec<u8>,
    started: bool,
}

enum Stage {
    /// Collecting header bytes into `head`.
    Header,
    /// Copying `left` bytes of chunk data for `csid`.
    Data { csid: u32, left: usize },
}

pub struct ChunkReader {
    chunk_size: usize,
    streams: std::collections::HashMap<u32, StreamState>,
    head: Vec<u8>,
    stage: Stage,
    /// Longest message accepted now ([`SETUP_MAX_MESSAGE`] until
    /// [`Self::allow_media`], then [`MAX_MESSAGE`]).
    max_message: usize,
    /// Most bytes in progress over all chunk streams now.
    max_partial_bytes: usize,
    /// Bytes in progress over all chunk streams.
    partial_bytes: usize,
}

impl Default for ChunkReader {
    fn default() -> Self {
        ChunkReader {
            chunk_size: 128,
            streams: Default::default(),
            head: Vec::with_capacity(18),
            stage: Stage::Header,
            max_message: SETUP_MAX_MESSAGE,
            max_partial_bytes: SETUP_MAX_MESSAGE,
            partial_bytes: 0,
        }
    }
}

/// Length of the header that starts with `head[0]`, if enough bytes are
/// there to tell; the extended timestamp is decided later.
fn header_len(head: &[u8]) -> Option<usize> {
    let b = *head.first()?;
    let basic = match b & 0x3f {
        0 => 2,
        1 => 3,
        _ => 1,
    };
    Some(
        basic
            + match b >> 6 {
                0 => 11,
                1 => 7,
                2 => 3,
                _ => 0,
            },
    )
}

fn u24(b: &[u8]) -> u32 {
    (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32
}

/// What a publishing connection may send: the longest message, and the most
/// bytes of messages in progress at once (`--rtmp-max-message`, `--rtmp-max-pending`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaLimits {
    pub max_message: usize,
    pub max_pending: usize,
}

impl Default for MediaLimits {
    fn default() -> Self {
        MediaLimits {
            max_message: MAX_MESSAGE,
            max_pending: MAX_PARTIAL_BYTES,
        }
    }
}

impl ChunkReader {
    /// The connection publishes now: media messages within `limits`.
    pub fn allow_media(&mut self, limits: MediaLimits) {
        self.max_message = limits.max_message;
        self.max_partial_bytes = limits.max_pending;
    }

    /// Applies a Set Chunk Size (the reader does so itself for type-1 messages).
    pub fn set_chunk_size(&mut self, size: u32) -> Result<(), ChunkError> {
        if size == 0 || size > 0x7fff_ffff {
            return Err(ChunkError::BadChunkSize(size));
        }
        self.chunk_size = size as usize;
        Ok(())
    }

    /// Feeds received bytes; calls `on_message` for each completed message.
    /// An error means the connection must be closed.
    pub fn push(
        &mut self,
        mut input: &[u8],
        mut on_message: impl FnMut(Message) -> Result<(), ChunkError>,
    ) -> Result<(), ChunkError> {
        loop {
            match self.stage {
                Stage::Header => {
                    // Take bytes until the header (and any extended timestamp) is complete.
                    let need = match header_len(&self.head) {
                        None => 1,
                        Some(n) if self.head.len() < n => n,
                        Some(n) => n + self.extended_len(n)?,
                    };
                    if self.head.len() < need {
                        if input.is_empty() {
                            return Ok(());
                        }
                        let take = (need - self.head.len()).min(input.len());
                        self.head.extend_from_slice(&input[..take]);
                        input = &input[take..];
                        continue;
                    }
                    self.finish_header()?;
                }
                Stage::Data { csid, left } => {
                    if left > 0 && input.is_empty() {
                        return Ok(());
                    }
                    let take = left.min(input.len());
                    let Some(st) = self.streams.get_mut(&csid) else {
                        // `finish_header` created it; unreachable, but not worth a panic.
                        return Err(ChunkError::NoPreviousHeader);
                    };
                    if self.partial_bytes + take > self.max_partial_bytes {
                        return Err(ChunkError::TooMuchPartial(self.max_partial_bytes));
                    }
                    st.partial.extend_from_slice(&input[..take]);
                    self.partial_bytes += take;
                    input = &input[take..];
                    if left > take {
                        self.stage = Stage::Data {
                            csid,
                            left: left - take,
                        };
                        continue;
                    }
                    self.stage = Stage::Header;
                    if st.partial.len() == st.length as usize {
                        self.partial_bytes -= st.partial.len();
                        let payload = Bytes::from(std::mem::take(&mut st.partial));
                        let m = Message {
                            csid,
                            timestamp: st.timestamp,
                            type_id: st.type_id,
                            stream_id: st.stream_id,
                            payload,
                        };
                        // Set Chunk Size applies from the very next chunk,
                        // which may be in this same read.
                        if m.type_id == 1 {
                            let p = &m.payload;
                            if p.len() < 4 {
                                return Err(ChunkError::BadChunkSize(0));
                            }
                            self.set_chunk_size(u32::from_be_bytes([p[0], p[1], p[2], p[3]]))?;
                        }
                        on_message(m)?;
                    }
                }
            }
        }
    }

    fn csid(&self) -> u32 {
        match self.head[0] & 0x3f {
            0 => 64 + self.head[1] as u32,
            1 => 64 + self.head[1] as u32 + 256 * self.head[2] as u32,
            c => c as u32,
        }
    }

    /// 4 if the header in `head[..n]` is followed by an extended timestamp.
    fn extended_len(&self, n: usize) -> Result<usize, ChunkError> {
        let fmt = self.head[0] >> 6;
        let basic = n - [11, 7, 3, 0][fmt as usize];
        let ext = if fmt == 3 {
            let st = self
                .streams
                .get(&self.csid())
                .ok_or(ChunkError::NoPreviousHeader)?;
            st.extended
        } else {
            u24(&self.head[basic..]) == 0xff_ffff
        };
        Ok(if ext { 4 } else { 0 })
    }

    fn finish_header(&mut self) -> Result<(), ChunkError> {
        // Called once `push` has collected a whole header.
        let Some(n) = header_len(&self.head) else {
            return Err(ChunkError::NoPreviousHeader);
        };
        let fmt = self.head[0] >> 6;
        let basic = n - [11, 7, 3, 0][fmt as usize];
        let csid = self.csid();
        let h = std::mem::take(&mut self.head);
        let partial_count = self
            .streams
            .values()
            .filter(|s| !s.partial.is_empty())
            .count();
        let st = match (fmt, self.streams.get_mut(&csid)) {
            (0, Some(st)) => st,
            (0, None) => self.streams.entry(csid).or_default(),
            (_, Some(st)) if st.started => st,
            _ => return Err(ChunkError::NoPreviousHeader),
        };
        let new_message = st.partial.is_empty();
        if fmt != 3 && !new_message {
            // A new header in the middle of a message: the peer lost track.
            return Err(ChunkError::Interleaved);
        }
        let m = &h[basic..];
        let ext = (h.len() > n).then(|| u32::from_be_bytes([h[n], h[n + 1], h[n + 2], h[n + 3]]));
        match fmt {
            0 => {
                let ts = u24(m);
                st.length = u24(&m[3..]);
                st.type_id = m[6];
                st.stream_id = u32::from_le_bytes([m[7], m[8], m[9], m[10]]);
                st.extended = ts == 0xff_ffff;
                st.timestamp = ext.unwrap_or(ts);
                st.delta = 0;
            }
            1 | 2 => {
                let d = u24(m);
                st.extended = d == 0xff_ffff;
                st.delta = ext.unwrap_or(d);
                if fmt == 1 {
                    st.length = u24(&m[3..]);
                    st.type_id = m[6];
                }
                st.timestamp = st.timestamp.wrapping_add(st.delta);
            }
            _ => {
                // A type-3 chunk that starts a message repeats the last delta.
                if new_message {
                    st.timestamp = st.timestamp.wrapping_add(st.delta);
                }
            }
        }
        st.started = true;
        if st.length as usize > self.max_message {
            return Err(ChunkError::TooLong(st.length as usize));
        }
        if new_message && st.length > 0 && partial_count >= MAX_PARTIAL {
            return Err(ChunkError::TooManyPartial);
        }
        let left = (st.length as usize - st.partial.len()).min(self.chunk_size);
        self.head = h;
        self.head.clear();
        // A zero-length message completes in the Data arm with nothing to copy.
        self.stage = Stage::Data { csid, left };
        Ok(())
    }
}

/// Appends `payload` as one message in chunks of `chunk_size`: a type-0
/// header, then type-3 continuation headers.
pub fn write_message(
    out: &mut Vec<u8>,
    csid: u8,
    timestamp: u32,
    type_id: u8,
    stream_id: u32,
    payload: &[u8],
    chunk_size: usize,
) {
    debug_assert!((2..64).contains(&csid));
    let ext = timestamp >= 0xff_ffff;
    let ts24 = if ext { 0xff_ffff } else { timestamp };
    out.push(csid);
    out.extend_from_slice(&ts24.to_be_bytes()[1..]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(type_id);
    out.extend_from_slice(&stream_id.to_le_bytes());
    if ext {
        out.extend_from_slice(&timestamp.to_be_bytes());
    }
    for (i, chunk) in payload.chunks(chunk_size.max(1)).enumerate() {
        if i > 0 {
            out.push(0xc0 | csid);
            if ext {
                out.extend_from_slice(&timestamp.to_be_bytes());
            }
        }
        out.extend_from_slice(chunk);
    }
}

/// The body of the `rtmp_chunks` fuzz target: any input either parses into
/// bounded messages or fails cleanly.
pub fn fuzz_chunks(data: &[u8]) {
    let mut r = ChunkReader::default();
    for part in data.chunks(97) {
        let ok = r.push(part, |m| {
            assert!(m.payload.len() <= MAX_MESSAGE);
            Ok(())
        });
        if ok.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads as from a publisher (media-sized messages allowed).
    fn read_all(bytes: &[u8], split: usize) -> Result<Vec<Message>, ChunkError> {
        let mut r = ChunkReader::default();
        r.allow_media(MediaLimits::default());
        r.set_chunk_size(4096).unwrap();
        let mut out = Vec::new();
        for part in bytes.chunks(split) {
            r.push(part, |m| {
                out.push(m);
                Ok(())
            })?;
        }
        Ok(out)
    }

    #[test]
    fn writer_output_reads_back_at_any_split() {
        let big: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        write_message(&mut wire, 6, 40, 9, 1, &big, 4096);
        write_message(&mut wire, 4, 0x0100_0000, 8, 1, b"aac", 4096);
        write_message(&mut wire, 3, 5, 20, 0, b"", 4096);
        for split in [1, 2, 7, 100, 5000, 100_000] {
            let msgs = read_all(&wire, split).unwrap();
            assert_eq!(msgs.len(), 3, "split {split}");
            assert_eq!(msgs[0].payload, big[..]);
            assert_eq!(
                (msgs[0].timestamp, msgs[0].type_id, msgs[0].stream_id),
                (40, 9, 1)
            );
            assert_eq!(msgs[1].timestamp, 0x0100_0000, "extended timestamp");
            assert_eq!(&msgs[1].payload[..], b"aac");
            assert!(msgs[2].payload.is_empty());
        }
    }

    /// The header compression a client like ffmpeg uses: type 1, 2 and 3
    /// headers carry deltas from the previous message on the chunk stream.
    #[test]
    fn compressed_headers_accumulate_deltas() {
        let mut wire = Vec::new();
        write_message(&mut wire, 4, 1000, 8, 1, b"first", 128);
        // fmt 1: delta 23, length 2, type 8
        wire.extend_from_slice(&[0x44, 0, 0, 23, 0, 0, 2, 8, b'o', b'k']);
        // fmt 2: delta 20 (same length and type)
        wire.extend_from_slice(&[0x84, 0, 0, 20, b'h', b'i']);
        // fmt 3 starting a message: repeats delta 20
        wire.extend_from_slice(&[0xc4, b'y', b'o']);
        let msgs = read_all(&wire, 3).unwrap();
        let ts: Vec<u32> = msgs.iter().map(|m| m.timestamp).collect();
        assert_eq!(ts, vec![1000, 1023, 1043, 1063]);
        assert_eq!(&msgs[3].payload[..], b"yo");
    }

    /// Before `publish` a connection is not trusted with media-sized
    /// messages; after it, messages in progress are bounded in bytes.
    #[test]
    fn memory_a_peer_can_pin_is_bounded_before_and_after_publish() {
        let big = vec![7u8; SETUP_MAX_MESSAGE + 1];
        let mut wire = Vec::new();
        write_message(&mut wire, 6, 0, 9, 1, &big, 4096);
        let mut r = ChunkReader::default();
        let e = r.push(&wire, |_| Ok(())).unwrap_err();
        assert!(matches!(e, ChunkError::TooLong(_)) && e.is_memory_limit());
        let mut r = ChunkReader::default();
        r.allow_media(MediaLimits::default());
        r.set_chunk_size(4096).unwrap();
        let mut n = 0;
        r.push(&wire, |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1, "a publisher's keyframe of that size is fine");
        // Five 3 MiB messages, 2 MiB of each sent: over MAX_PARTIAL_BYTES.
        let mut r = ChunkReader::default();
        r.allow_media(MediaLimits::default());
        r.set_chunk_size(1 << 20).unwrap();
        let len = (3u32 << 20).to_be_bytes();
        let mut err = None;
        for csid in 3..8u8 {
            let mut w = vec![csid, 0, 0, 0, len[1], len[2], len[3], 9, 1, 0, 0, 0];
            w.resize(w.len() + (1 << 20), 0);
            for _ in 0..2 {
                if let Err(e) = r.push(&w, |_| Ok(())) {
                    err = Some(e);
                }
                w = vec![0xc0 | csid];
                w.resize(1 + (1 << 20), 0);
            }
        }
        assert_eq!(err, Some(ChunkError::TooMuchPartial(MAX_PARTIAL_BYTES)));
    }

    #[test]
    fn hostile_headers_are_refused() {
        // A message longer than the limit.
        let mut wire = vec![0x03, 0, 0, 0];
        wire.extend_from_slice(&((MAX_MESSAGE as u32 + 1).to_be_bytes()[1..]));
        wire.extend_from_slice(&[20, 0, 0, 0, 0]);
        assert!(matches!(read_all(&wire, 64), Err(ChunkError::TooLong(_))));
        // A continuation on a chunk stream never opened.
        assert_eq!(
            read_all(&[0xc5, 1, 2, 3], 64),
            Err(ChunkError::NoPreviousHeader)
        );
        // Many messages left half-sent, each on its own chunk stream.
        let mut r = ChunkReader::default();
        let mut err = None;
        for csid in 3..40u8 {
            let mut w = vec![csid, 0, 0, 0, 0, 1, 0, 9, 1, 0, 0, 0];
            w.extend_from_slice(&[0; 128]);
            if let Err(e) = r.push(&w, |_| Ok(())) {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(ChunkError::TooManyPartial));
        assert!(ChunkReader::default().set_chunk_size(0).is_err());
        assert!(ChunkReader::default().set_chunk_size(0x8000_0000).is_err());
    }

    #[test]
    fn junk_never_panics() {
        for seed in 0..200u32 {
            let data: Vec<u8> = (0..300u32)
                .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97) >> 13) as u8)
                .collect();
            fuzz_chunks(&data);
        }
    }
}
