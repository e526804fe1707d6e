//! The dataplane: pinned shards on io_uring that own UDP ports and sessions,
//! terminate SRTP and relay RTP between ingests and egresses of a room.
//!
//! Layers, bottom up:
//! - [`rtp`], [`srtp`]: sans-IO wire formats and crypto framing on caller buffers.
//! - [`demux`], [`ice`]: RFC 7983 first-byte demux and ICE-lite (STUN) for WebRTC sessions (sans-IO).
//! - [`codec`]: video codecs behind one seam: keyframes, RTP ↔ FLV repacketization (sans-IO).
//! - [`router`]: rooms, UDP sessions and the per-packet forwarding decision (sans-IO).
//! - [`hub`]: RTMP and HTTP-FLV connections, participant streams, programs and the bridges (sans-IO; [`rtmp`] is the protocol).
//! - [`uring`]: the Linux-only I/O layer (io_uring, sockets, CPU pinning).
//! - [`shard`]: the drive loop that joins the two and talks to the controlplane rings.

pub mod bwe;
pub mod codec;
pub mod core;
pub mod demux;
pub mod dtls;
pub mod dtls_verify;
pub mod fuzz;
pub mod hub;
pub mod ice;
pub mod limits;
pub mod media;
pub mod mix;
pub mod nack;
pub mod output;
pub mod participants;
#[cfg(feature = "reencode")]
pub mod reencode;
pub mod relay;
pub mod remb;
pub mod reorder;
pub mod router;
pub mod rtcp;
pub mod rtmp;
pub mod rtp;
pub mod shard;
pub mod speakers;
pub mod srtp;
pub mod transcode;
pub mod twcc;
pub mod uring;
pub mod webrtc;
