//! What the media path carries between the core's parts and the shard:
//! a session's handle, where a packet comes from ([`Source`]), a packet's
//! routing facts ([`Inbound`]), and RTP an RTMP publisher's media became
//! ([`RtpFromRtmp`]). Plain data, no logic beyond reading an RTP header:
//! every part uses it, it uses none.

use bytes::Bytes;
use gateway_ring::msg::MediaKind;
use gateway_ring::{RoomId, SessionId};

use crate::codec::VideoCodec;
use crate::participants::ParticipantId;

/// A session's slot in the shard; the same index names its socket.
pub type Handle = u32;

/// Where media in the fan-out comes from: a publishing UDP session (an RTP
/// ingest, a WHIP publisher), or an RTMP publisher, which enters the
/// fan-out as its participant (its connection is no UDP session): its own
/// media, and for an E-RTMP push of AV1 or VP9 also its video transcoded
/// to H264 (`RtmpTranscoded`, naming the codec it was transcoded from),
/// for the lines that do not carry that codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Session(SessionId),
    Rtmp(ParticipantId),
    RtmpTranscoded(ParticipantId, VideoCodec),
}

impl Source {
    /// The publishing session, if it is one (only a session can be asked
    /// for a keyframe or a resend).
    pub fn session(self) -> Option<SessionId> {
        match self {
            Source::Session(s) => Some(s),
            Source::Rtmp(_) | Source::RtmpTranscoded(..) => None,
        }
    }

    /// Whether a WebRTC line that carries `codec`s per `carries` takes
    /// this source's packets: a transcode only where the line does not
    /// carry what it was transcoded from (that line takes the push as it is).
    #[inline]
    pub fn fits(self, carries: impl Fn(VideoCodec) -> bool) -> bool {
        match self {
            Source::RtmpTranscoded(_, from) => !carries(from),
            Source::Session(_) | Source::Rtmp(_) => true,
        }
    }
}

/// `codec` for a video packet, nothing for audio: an [`Inbound`]'s codec.
#[inline]
pub fn video_codec(kind: MediaKind, codec: VideoCodec) -> Option<VideoCodec> {
    match kind {
        MediaKind::Video => Some(codec),
        MediaKind::Audio => None,
    }
}

/// A plaintext RTP packet, now at the front of the receive buffer, to fan out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound {
    pub room: RoomId,
    pub source: Source,
    /// The participant it comes from (never sent back to it) and its key.
    pub participant: ParticipantId,
    pub key: u32,
    /// Audio: its RFC 6464 level, when the publisher sends them.
    pub level: Option<u8>,
    pub kind: MediaKind,
    /// Video: its codec (a player's line carries only its own codec).
    pub codec: Option<VideoCodec>,
    pub len: usize,
    pub seq_no: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Packets of its stream missing just before this one (WebRTC audio:
    /// concealed on the transcoder, so the bridged audio keeps its time).
    pub lost_before: u16,
}

/// An RTMP publisher's media as RTP, for the room's WebRTC side: video in
/// `codec` (audio: Opus, `codec` unused), a transcode of the push's own
/// codec `transcoded_from` if it is one.
#[derive(Debug, Clone)]
pub struct RtpFromRtmp {
    pub room: RoomId,
    pub pid: ParticipantId,
    pub key: u32,
    pub packet: Bytes,
    pub codec: VideoCodec,
    pub transcoded_from: Option<VideoCodec>,
}

impl RtpFromRtmp {
    /// The source it enters the fan-out as: its participant's RTMP push,
    /// or the H264 made of it.
    pub fn source(&self) -> Source {
        match self.transcoded_from {
            Some(from) => Source::RtmpTranscoded(self.pid, from),
            None => Source::Rtmp(self.pid),
        }
    }

    /// What the fan-out sees of it: a `kind` packet of its source (`None`
    /// if it is no RTP packet).
    pub fn inbound(&self, kind: MediaKind) -> Option<Inbound> {
        let h = crate::rtp::RtpHeader::parse(&self.packet).ok()?;
        Some(Inbound {
            room: self.room,
            source: self.source(),
            participant: self.pid,
            key: self.key,
            level: None,
            kind,
            codec: video_codec(kind, self.codec),
            len: self.packet.len(),
            seq_no: h.seq_no,
            timestamp: h.timestamp,
            ssrc: h.ssrc,
            lost_before: 0,
        })
    }
}
