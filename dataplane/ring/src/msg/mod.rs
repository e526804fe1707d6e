//! Versioned, fixed-size messages between the processes.
//!
//! Slot layout: `[version u8][tag u8][fields, little-endian]`, zero padded to
//! [`SLOT_SIZE`]. Decoding checks the version, the tag, every enum value and
//! every length, so a corrupt slot becomes a [`DecodeError`].

use crate::ids::{RoomId, SessionId};
use crate::layout::SLOT_SIZE;

/// Message encoding version; bump with any incompatible field change.
pub const MSG_VERSION: u8 = 12;
/// Longest room name carried in a message (the controlplane validates names).
pub const MAX_NAME: usize = 64;
/// Longest description carried in an event (cut at a character boundary).
pub const MAX_TEXT: usize = 200;

/// Room names: 1-64 of `A-Za-z0-9_-`, not starting with `-` (they appear in
/// URLs and RTMP stream keys).
pub fn valid_room_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !name.starts_with('-')
}

/// The shard that hosts a room: a hash of its name, so the controlplane and
/// every shard agree without asking each other (an RTMP connection names
/// its room only after it has been accepted by some shard).
pub fn room_shard(name: &str, shards: u32) -> u32 {
    // FNV-1a, 32 bit.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h % shards.max(1)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message version {0}, expected {MSG_VERSION}")]
    Version(u8),
    #[error("unknown message tag {0}")]
    Tag(u8),
    #[error("bad value for {0}")]
    Value(&'static str),
    #[error("message truncated")]
    UnexpectedEnd,
    #[error("ring overrun: producer ran ahead of the consumer")]
    Overrun,
}

/// Something that fits in one ring slot.
pub trait Message: Sized {
    fn encode(&self, slot: &mut [u8; SLOT_SIZE]);
    fn decode(slot: &[u8]) -> Result<Self, DecodeError>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Video = 0,
    Audio = 1,
}

/// A media line's codec, as the controlplane negotiated it: the names
/// both processes use (what each codec means to the media path is the
/// dataplane's `codec/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    Opus = 0,
    /// RFC 6184, packetization mode 1.
    H264 = 1,
    /// RFC 7741.
    Vp8 = 2,
    /// RFC 9628, profile 0.
    Vp9 = 3,
    /// The AOM RTP payload format, profile 0 (main).
    Av1 = 4,
}

impl Codec {
    /// Every video codec, in the server's default order of preference.
    pub const VIDEO: [Codec; 4] = [Codec::H264, Codec::Vp8, Codec::Vp9, Codec::Av1];

    /// Its encoding name in SDP (`a=rtpmap`), as operators write it.
    pub const fn name(self) -> &'static str {
        match self {
            Codec::Opus => "opus",
            Codec::H264 => "H264",
            Codec::Vp8 => "VP8",
            Codec::Vp9 => "VP9",
            Codec::Av1 => "AV1",
        }
    }

    /// The video codec called `name` (case-insensitive, as SDP compares).
    pub fn video(name: &str) -> Option<Codec> {
        Codec::VIDEO
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SrtpSuite {
    /// RFC 3711: AES-128 counter mode, HMAC-SHA1 80-bit tag; 16-byte key, 14-byte salt.
    AesCm128HmacSha1_80 = 1,
    /// RFC 7714: AES-128-GCM, 16-byte tag; 16-byte key, 12-byte salt.
    AeadAes128Gcm = 2,
    /// RFC 7714: AES-256-GCM, 16-byte tag; 32-byte key, 12-byte salt.
    AeadAes256Gcm = 3,
}

impl SrtpSuite {
    /// Length of master key || master salt.
    pub const fn key_material_len(self) -> usize {
        match self {
            SrtpSuite::AesCm128HmacSha1_80 => 30,
            SrtpSuite::AeadAes128Gcm => 28,
            SrtpSuite::AeadAes256Gcm => 44,
        }
    }

    /// Length of the master key alone.
    pub const fn key_len(self) -> usize {
        match self {
            SrtpSuite::AeadAes256Gcm => 32,
            _ => 16,
        }
    }
}

/// The longest master key || master salt (AEAD_AES_256_GCM).
pub const MAX_KEY_MATERIAL: usize = 44;

/// An SRTP suite and its master key || master salt.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SrtpKey {
    pub suite: SrtpSuite,
    material: [u8; MAX_KEY_MATERIAL],
}

impl SrtpKey {
    /// `None` if `material` has the wrong length for `suite`.
    pub fn new(suite: SrtpSuite, material: &[u8]) -> Option<SrtpKey> {
        if material.len() != suite.key_material_len() {
            return None;
        }
        let mut m = [0; MAX_KEY_MATERIAL];
        m[..material.len()].copy_from_slice(material);
        Some(SrtpKey { suite, material: m })
    }

    pub fn material(&self) -> &[u8] {
        &self.material[..self.suite.key_material_len()]
    }
}

impl std::fmt::Debug for SrtpKey {
    // Never print keys into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SrtpKey({:?}, <redacted>)", self.suite)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSpec {
    pub room: RoomId,
    pub name: String,
}

/// Receive (S)RTP from a sender on `port`, RTCP muxed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestSpec {
    pub session: SessionId,
    pub room: RoomId,
    pub port: u16,
    pub kind: MediaKind,
    pub payload_type: u8,
    pub clock_rate: u32,
    pub srtp: Option<SrtpKey>,
    /// Unix milliseconds when the session was created (kept for resync).
    pub created_ms: u64,
    /// The participant whose track this is ([`valid_room_name`] rules); a
    /// participant's video and audio ingests share it.
    pub participant: String,
}

/// Send every track of the room from local `port` to `dest` (video to
/// `dest_port`, audio to `dest_port + 2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressSpec {
    pub session: SessionId,
    pub room: RoomId,
    pub port: u16,
    pub dest_ip: [u8; 4],
    pub dest_port: u16,
    pub srtp: Option<SrtpKey>,
    pub created_ms: u64,
}

/// Which way media flows on a WebRTC or RTMP session, seen from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// WHIP, RTMP `publish`: the client sends its tracks into the room.
    Publish = 0,
    /// WHEP, RTMP `play`, HTTP-FLV: the client receives the room's tracks.
    Subscribe = 1,
}

/// Our side of a WebRTC session's DTLS handshake, chosen by the offer's
/// `a=setup` (RFC 4145 §4.1, as RFC 8842 uses it for DTLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DtlsRole {
    /// The offer said `actpass` or `active`: we answer `passive` and wait
    /// for the client's ClientHello (the only role before `MSG_VERSION` 9).
    #[default]
    Server = 0,
    /// The offer said `passive` (FFmpeg's WHIP muxer does): we answer
    /// `active` and send the ClientHello.
    Client = 1,
}

/// Longest ICE ufrag carried (RFC 8839 allows 256; browsers use 4-16).
pub const MAX_UFRAG: usize = 32;

/// Longest ICE password carried: only ours crosses the ring (the
/// controlplane makes 24 characters), and a tight bound leaves the slot's
/// room for media lines.
pub const MAX_PWD: usize = 32;

/// One negotiated media line of a WebRTC session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackSpec {
    pub kind: MediaKind,
    /// The codec the line negotiated (Opus for audio) ...
    pub codec: Codec,
    /// ... and the payload type this peer uses for it.
    pub pt: u8,
    /// Subscribe: the SSRC we send this track on (announced in the answer).
    /// Publish: 0 (learned from the packets).
    pub ssrc: u32,
    /// Subscribe: [`participant_key`] of the publisher the answer's `a=msid`
    /// named for this line (0: none), so the line carries that publisher
    /// while it publishes. Publish: 0.
    pub source: u32,
    /// Audio: the RTP header extension id of RFC 6464 audio levels the
    /// answer accepted (0: none): read from a publisher's packets, written
    /// into a player's.
    pub audio_level: u8,
    /// The RTP header extension id of transport-wide sequence numbers the
    /// answer accepted, with `transport-cc` feedback (0: none): read from a
    /// publisher's packets, written into a player's.
    pub twcc: u8,
    /// Publish: the RTP header extension id of abs-send-time the answer
    /// accepted with `goog-remb` feedback, for a publisher without
    /// transport-cc (0: none). Its packets' send times feed our receive-side
    /// estimate, sent back as REMB.
    pub abs_send_time: u8,
    /// Video: the payload type of its RTX stream (RFC 4588, `apt=` this
    /// track's), so retransmissions (and a publisher's padding) go on an
    /// SSRC and sequence of their own: a publisher's (learned from its
    /// packets), a player's [`rtx_ssrc`]. 0: none, resends go on the media
    /// SSRC.
    pub rtx_pt: u8,
    /// Subscribe, video: every codec the line carries (a bit per
    /// `1 << codec as u8`, `codec` among them), each on the session's
    /// payload types ([`WebrtcSpec::video_pts`]): the line takes whichever
    /// of them its publisher sends. 0 for the others.
    pub codecs: u8,
}

/// The SSRC of the RTX stream (RFC 4588) that goes with a player's video
/// SSRC `media`: derived, so both processes agree without sending it (the
/// answer's `a=ssrc-group:FID` announces it, the dataplane resends on it).
pub fn rtx_ssrc(media: u32) -> u32 {
    media ^ 0x5254_5800
}

/// A participant name as 32 bits for [`TrackSpec::source`] (FNV-1a, never
/// 0). A hint only: a collision makes a line prefer the wrong publisher, it
/// never sends a participant its own media (that check compares ids).
pub fn participant_key(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// Most media lines a WebRTC session carries (a player may ask for several
/// publishers' tracks by offering several recvonly m-lines). Bounded by the
/// ring slot: a [`WebrtcSpec`] with the longest fields and 16 tracks encodes
/// to 487 of its 512 bytes (checked by the round-trip test).
pub const MAX_TRACKS: usize = 16;

/// A WebRTC peer on `port`: ICE-lite, DTLS-SRTP (in the role the offer
/// left us), BUNDLE and rtcp-mux, video (H264, VP8, VP9 or AV1) and/or Opus
/// tracks as the SDP negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebrtcSpec {
    pub session: SessionId,
    pub room: RoomId,
    pub port: u16,
    pub direction: Direction,
    /// Our ICE credentials (from the answer) and the peer's ufrag (from the offer).
    pub ice_ufrag: String,
    pub ice_pwd: String,
    pub remote_ufrag: String,
    /// SHA-256 fingerprint of the peer's DTLS certificate (from the offer).
    pub remote_fingerprint: [u8; 32],
    /// At most [`MAX_TRACKS`]; more are not encoded.
    pub tracks: Vec<TrackSpec>,
    /// Subscribe: the payload type and RTX payload type of each video
    /// codec the answer gave its lines, by [`Codec::VIDEO`] order (H264,
    /// VP8, VP9, AV1; (0, 0): none).
    pub video_pts: [(u8, u8); 4],
    pub created_ms: u64,
    /// Who publishes (WHIP) or plays (WHEP: never sent its own tracks).
    pub participant: String,
    /// Whether we are the DTLS server or client. Encoded last, as 0 for
    /// the server: a server-role session's fields keep their offsets and
    /// bytes.
    pub dtls_role: DtlsRole,
}

impl WebrtcSpec {
    /// The audio-level header extension id of its audio (0: none).
    pub fn audio_level_id(&self) -> u8 {
        self.tracks
            .iter()
            .find(|t| t.kind == MediaKind::Audio)
            .map_or(0, |t| t.audio_level)
    }

    /// The transport-wide sequence number extension id (0: none).
    pub fn twcc_id(&self) -> u8 {
        self.tracks
            .iter()
            .map(|t| t.twcc)
            .find(|&id| id != 0)
            .unwrap_or(0)
    }

    /// The abs-send-time extension id, when the publisher gets REMB (0: none).
    pub fn abs_send_time_id(&self) -> u8 {
        self.tracks
            .iter()
            .map(|t| t.abs_send_time)
            .find(|&id| id != 0)
            .unwrap_or(0)
    }

    /// The RTX payload type of its video (0: none).
    pub fn rtx_pt(&self) -> u8 {
        self.tracks
            .iter()
            .find(|t| t.kind == MediaKind::Video)
            .map_or(0, |t| t.rtx_pt)
    }

    /// The codec of its first video track, if it has one.
    pub fn video_codec(&self) -> Option<Codec> {
        self.tracks
            .iter()
            .find(|t| t.kind == MediaKind::Video)
            .map(|t| t.codec)
    }

    /// The (payload type, RTX payload type) a player's lines send video
    /// `codec` on, if the answer gave it one.
    pub fn video_pt(&self, codec: Codec) -> Option<(u8, u8)> {
        let i = Codec::VIDEO.iter().position(|&c| c == codec)?;
        Some(self.video_pts[i]).filter(|&(pt, _)| pt != 0)
    }

    /// The payload type of the first track of `kind` (0 if none).
    pub fn pt(&self, kind: MediaKind) -> u8 {
        self.tracks
            .iter()
            .find(|t| t.kind == kind)
            .map_or(0, |t| t.pt)
    }
}

/// An RTMP client publishing or playing a room (reported by the dataplane,
/// which accepted it; the controlplane lists it as a participant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtmpSpec {
    /// In the dataplane's own id range ([`SessionId::rtmp`]).
    pub session: SessionId,
    pub room: RoomId,
    /// Publish or play. Encoded as the publish flag it was before the
    /// type (1: publish, 0: play), not as the enum's value.
    pub direction: Direction,
    /// The client's address.
    pub peer_ip: [u8; 4],
    pub peer_port: u16,
    pub created_ms: u64,
    /// Who publishes, or whom the player plays as (from the stream key).
    pub participant: String,
}

/// Upper bounds (µs) of the loop-turn histogram buckets; the last is +Inf.
pub const TURN_BUCKETS_US: [u64; 7] = [10, 50, 100, 500, 1_000, 5_000, 10_000];

/// How long one shard's loop turns take (busy time, not the wait for
/// completions), as counts per bucket since the dataplane started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShardStats {
    pub shard: u32,
    /// Turns whose busy time fell in each bucket (not cumulative); the last
    /// entry counts those over the largest bound.
    pub turns: [u64; TURN_BUCKETS_US.len() + 1],
    pub busy_us: u64,
    /// UDP `sendmsg` operations the shard submitted, and the datagrams they
    /// carried: more datagrams than sends is GSO batching at work.
    pub udp_sends: u64,
    pub udp_datagrams: u64,
    /// Connections and sessions refused or ended by a protective limit, per [`Limit`].
    pub limits: [u64; Limit::COUNT],
    /// Panics contained while handling one session's input (that session
    /// was ended with [`EndReason::Internal`]; the shard went on).
    pub panics: u64,
}

/// Why the dataplane ended a session by itself ([`Event::SessionEnded`]).
/// On the wire, its `u16` value. A value no variant has is a decode error,
/// as for every enum here: both processes encode with this crate, and a new
/// reason is a new encoding ([`MSG_VERSION`]), so an unknown one is a
/// corrupt slot, not news from a newer dataplane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// A WebRTC peer sent no valid STUN check for 30 s (RFC 7675 consent).
    ConsentExpired = 1,
    /// A WebRTC peer's DTLS handshake failed.
    DtlsFailed = 2,
    /// An RTMP or HTTP-FLV client left, or its connection was closed.
    RtmpClosed = 3,
    /// An RTMP or HTTP-FLV player fell 5 s behind its stream and was closed.
    SlowConsumer = 4,
    /// A panic while handling this session's input (or a timer of its
    /// bridge) was contained; the session was ended, the shard went on.
    Internal = 5,
    /// An RTMP publisher whose participant pushed again from a new
    /// connection (which continues its stream).
    TakenOver = 6,
}

impl EndReason {
    pub const ALL: [EndReason; 6] = [
        EndReason::ConsentExpired,
        EndReason::DtlsFailed,
        EndReason::RtmpClosed,
        EndReason::SlowConsumer,
        EndReason::Internal,
        EndReason::TakenOver,
    ];

    /// Its wire value.
    pub const fn code(self) -> u16 {
        self as u16
    }

    /// The reason with wire value `code`, if any.
    pub fn from_code(code: u16) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// What operators read: a session's `end_reason` in the API, the
    /// `reason` of its `session_failed` event, the log.
    pub fn describe(self) -> &'static str {
        match self {
            EndReason::ConsentExpired => "ICE consent expired (no valid STUN check for 30 s)",
            EndReason::DtlsFailed => "DTLS handshake failed",
            EndReason::RtmpClosed => "RTMP connection closed",
            EndReason::SlowConsumer => "slow consumer: fell 5 s behind the stream",
            EndReason::Internal => {
                "internal error (contained: this session ended, the others went on)"
            }
            EndReason::TakenOver => {
                "taken over: the participant published again from a new connection"
            }
        }
    }
}

/// A protective limit of the dataplane; the index is stable (an array
/// index on both sides of the ring).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// An RTMP connection refused: the process holds `--rtmp-max-conns`.
    RtmpConns = 0,
    /// An RTMP or HTTP-FLV connection refused: its IP holds
    /// `--rtmp-max-nonplaying-per-ip` connections that do not play.
    RtmpNonplayingPerIp = 1,
    /// An RTMP connection closed: no `publish`/`play` within the set-up timeout.
    RtmpSetupTimeout = 2,
    /// An RTMP connection closed: idle (nothing received) too long.
    RtmpIdle = 3,
    /// An RTMP connection closed: over its memory bounds (message size,
    /// partial messages, or output it does not read).
    RtmpMemory = 4,
    /// An audio job dropped: the shard's transcoder queue was full.
    TranscodeQueue = 5,
    /// An RTMP or HTTP-FLV connection in set-up closed before its set-up
    /// timeout: silent for a while, its place went to a new connection from
    /// its address, which was at `--rtmp-max-nonplaying-per-ip`.
    RtmpSetupStalled = 6,
    /// A packet or message for another shard dropped: the lane to it was
    /// full (that shard is far behind; its players recover at the next
    /// keyframe).
    RelayLane = 7,
}

impl Limit {
    pub const COUNT: usize = 8;
    pub const ALL: [Limit; Self::COUNT] = [
        Limit::RtmpConns,
        Limit::RtmpNonplayingPerIp,
        Limit::RtmpSetupTimeout,
        Limit::RtmpIdle,
        Limit::RtmpMemory,
        Limit::TranscodeQueue,
        Limit::RtmpSetupStalled,
        Limit::RelayLane,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Limit::RtmpConns => "rtmp_conns",
            Limit::RtmpNonplayingPerIp => "rtmp_nonplaying_per_ip",
            Limit::RtmpSetupTimeout => "rtmp_setup_timeout",
            Limit::RtmpIdle => "rtmp_idle",
            Limit::RtmpMemory => "rtmp_memory",
            Limit::TranscodeQueue => "transcode_queue",
            Limit::RtmpSetupStalled => "rtmp_setup_stalled",
            Limit::RelayLane => "relay_lane",
        }
    }
}

/// Why a packet was dropped. The index is stable: it is an array index on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not RTP/RTCP, a header that does not parse, or an unusable H264
    /// parameter set (SPS/PPS too short for its fields, or too long).
    Malformed = 0,
    /// SRTP/SRTCP authentication (or AEAD) failed: wrong key or tampering.
    Auth = 1,
    /// SRTP replay window rejected the index.
    Replay = 2,
    /// From an address that is not the session's peer.
    UnknownSource = 3,
    /// RTP payload type other than the ingest's.
    PayloadType = 4,
    /// The kernel refused the send or no send slot was free.
    Send = 5,
    /// STUN with wrong ICE credentials or integrity: not our peer.
    Ice = 6,
    /// Media before the DTLS handshake gave us keys.
    NotReady = 7,
    /// Larger than any packet the gateway forwards (`dataplane::rtp::MAX_PACKET`).
    Oversize = 8,
    /// Over a per-session budget (NACK answers per second).
    RateLimited = 9,
    /// A worker thread's queue (transcoder, DTLS) was full.
    Overload = 10,
}

impl DropReason {
    pub const COUNT: usize = 11;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Malformed,
        DropReason::Auth,
        DropReason::Replay,
        DropReason::UnknownSource,
        DropReason::PayloadType,
        DropReason::Send,
        DropReason::Ice,
        DropReason::NotReady,
        DropReason::Oversize,
        DropReason::RateLimited,
        DropReason::Overload,
    ];
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Auth => "auth_failed",
            DropReason::Replay => "replay",
            DropReason::UnknownSource => "unknown_source",
            DropReason::PayloadType => "payload_type",
            DropReason::Send => "send_failed",
            DropReason::Ice => "ice_rejected",
            DropReason::NotReady => "not_ready",
            DropReason::Oversize => "oversize",
            DropReason::RateLimited => "rate_limited",
            DropReason::Overload => "overload",
        }
    }
}

/// Counters of one session, as the shard sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStats {
    pub session: SessionId,
    /// Packets received (ingest) or sent (egress).
    pub packets: u64,
    pub bytes: u64,
    pub drops: [u64; DropReason::COUNT],
    /// WebRTC subscriber: packets resent from the cache to answer its NACKs.
    pub retransmits: u64,
    /// Keyframe requests (PLI) sent to this publisher / received from this subscriber.
    pub keyframe_requests: u64,
    /// WebRTC publisher, its bridge to RTMP: gaps in its video filled
    /// (reordered packets, or resent on our NACK) ...
    pub bridge_gaps_filled: u64,
    /// ... and given up on: its RTMP players' picture froze to the next
    /// keyframe.
    pub bridge_gaps_given_up: u64,
    /// WebRTC player that offered transport-cc: the estimate of its path
    /// from its feedback, bit/s (0: none yet).
    pub estimate_bps: u64,
    /// ... and the times its video paused: its path could not take it.
    pub video_pauses: u64,
}

impl Default for SessionStats {
    /// Every counter at 0, of session id 0, which neither process gives
    /// (set the session before it goes out).
    fn default() -> Self {
        SessionStats {
            session: SessionId::new(0),
            packets: 0,
            bytes: 0,
            drops: [0; DropReason::COUNT],
            retransmits: 0,
            keyframe_requests: 0,
            bridge_gaps_filled: 0,
            bridge_gaps_given_up: 0,
            estimate_bps: 0,
            video_pauses: 0,
        }
    }
}

/// Result codes of [`Event::Done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok = 0,
    /// The UDP port could not be bound (in use by another program?).
    PortInUse = 1,
    /// The room or session id is not known to the shard.
    NotFound = 2,
    /// The id already exists on the shard.
    Exists = 3,
    /// The shard is at its session limit.
    Capacity = 4,
    /// The request was refused for another reason (see dataplane log).
    Failed = 5,
}

/// Controlplane → shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    CreateRoom(RoomSpec),
    /// Ends every session of the room.
    DeleteRoom {
        room: RoomId,
    },
    CreateIngest(IngestSpec),
    CreateEgress(EgressSpec),
    CreateWebrtc(WebrtcSpec),
    DeleteSession {
        session: SessionId,
    },
    /// Report every room and session (a restarted controlplane rebuilds its view).
    Resync,
}

/// Shard → controlplane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Reply to a command (every one but `Resync`, which `ResyncDone` ends).
    Done { request: Request, outcome: Outcome },
    /// Resync: one room.
    Room(RoomSpec),
    /// Resync: one ingest.
    Ingest(IngestSpec),
    /// Resync: one egress.
    Egress(EgressSpec),
    /// Resync: one WebRTC session.
    Webrtc(WebrtcSpec),
    /// An RTMP client started publishing or playing (also sent on resync).
    Rtmp(RtmpSpec),
    /// Periodic loop-turn timing of a shard.
    Shard(ShardStats),
    /// Resync finished; `epoch` is the dataplane's.
    ResyncDone { epoch: u64 },
    /// Periodic counters of one session.
    Stats(SessionStats),
    /// The shard ended a session by itself.
    SessionEnded {
        session: SessionId,
        reason: EndReason,
    },
    /// Media line `line` of WebRTC player `session` now carries
    /// `participant`'s track (empty: nobody's).
    Line {
        session: SessionId,
        line: u8,
        participant: String,
    },
    /// The room's active speaker changed (empty: nobody speaks).
    Speaker { room: RoomId, participant: String },
    /// Media of publisher `session` that the other side cannot be given
    /// (a codec or format the bridge does not carry) or cannot play
    /// (B-frames for browsers), named in `what`.
    MediaWarning { session: SessionId, what: String },
}

/// The command an [`Event::Done`] answers: its kind and the room or
/// session it named (what the controlplane waits on). On the wire, the
/// command's tag and the id as a `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Request {
    CreateRoom(RoomId),
    DeleteRoom(RoomId),
    CreateIngest(SessionId),
    CreateEgress(SessionId),
    CreateWebrtc(SessionId),
    DeleteSession(SessionId),
}

impl Command {
    pub const TAG_CREATE_ROOM: u8 = 1;
    pub const TAG_DELETE_ROOM: u8 = 2;
    pub const TAG_CREATE_INGEST: u8 = 3;
    pub const TAG_CREATE_EGRESS: u8 = 4;
    pub const TAG_DELETE_SESSION: u8 = 5;
    pub const TAG_RESYNC: u8 = 6;
    pub const TAG_CREATE_WEBRTC: u8 = 7;

    pub fn tag(&self) -> u8 {
        match self {
            Command::CreateRoom(_) => Self::TAG_CREATE_ROOM,
            Command::DeleteRoom { .. } => Self::TAG_DELETE_ROOM,
            Command::CreateIngest(_) => Self::TAG_CREATE_INGEST,
            Command::CreateEgress(_) => Self::TAG_CREATE_EGRESS,
            Command::CreateWebrtc(_) => Self::TAG_CREATE_WEBRTC,
            Command::DeleteSession { .. } => Self::TAG_DELETE_SESSION,
            Command::Resync => Self::TAG_RESYNC,
        }
    }

    /// What its [`Event::Done`] will answer; `None` for `Resync`.
    pub fn request(&self) -> Option<Request> {
        Some(match self {
            Command::CreateRoom(r) => Request::CreateRoom(r.room),
            Command::DeleteRoom { room } => Request::DeleteRoom(*room),
            Command::CreateIngest(s) => Request::CreateIngest(s.session),
            Command::CreateEgress(s) => Request::CreateEgress(s.session),
            Command::CreateWebrtc(s) => Request::CreateWebrtc(s.session),
            Command::DeleteSession { session } => Request::DeleteSession(*session),
            Command::Resync => return None,
        })
    }
}

mod wire;
pub use wire::fuzz_decode;

#[cfg(test)]
mod tests;
