//! What the media path carries between the core's parts and the shard:
//! a session's handle, a packet's routing facts ([`Inbound`]), and RTP an
//! RTMP publisher's media became ([`RtpFromRtmp`]). Plain data, no logic
//! beyond reading an RTP header: every part uses it, it uses none.

use bytes::Bytes;
use gateway_ring::msg::MediaKind;

use crate::participants::Pid;

/// A session's slot in the shard; the same index names its socket.
pub type Handle = u32;

/// A plaintext RTP packet, now at the front of the receive buffer, to fan out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inbound {
    pub room: u32,
    pub ingest: u64,
    /// The participant it comes from (never sent back to it) and its key.
    pub participant: Pid,
    pub key: u32,
    /// Audio: its RFC 6464 level, when the publisher sends them.
    pub level: Option<u8>,
    pub kind: MediaKind,
    pub len: usize,
    pub seq_no: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// Packets of its stream missing just before this one (WebRTC audio:
    /// concealed on the transcoder, so the bridged audio keeps its time).
    pub lost_before: u16,
}

/// Session ids of the virtual ingests that carry RTMP publishers' media
/// into the router's fan-out: this bit plus the participant's [`Pid`].
pub const RTMP_SOURCE: u64 = 1 << 62;

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
    pub fn inbound(&self, kind: MediaKind) -> Option<Inbound> {
        let h = crate::rtp::RtpHeader::parse(&self.packet).ok()?;
        Some(Inbound {
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
