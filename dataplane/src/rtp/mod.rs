//! RTP and RTCP wire views over caller-owned buffers.
//!
//! The forwarding path needs five header fields and the header length. The
//! `rtp` crate parses into an owned struct with `Vec`s (measured 70-150 ns and an
//! allocation per packet with extensions), so the hot path reads the fixed
//! offsets directly here; the crate remains the tool for tests and edge paths.

pub mod extensions;
pub mod header;

/// Largest RTP packet (plaintext, header included) the gateway forwards:
/// an Ethernet MTU's worth. Checked where packets enter (UDP ingress, the
/// RTMP → RTP packetizer), so every send slot, retransmission cache entry
/// and bridge buffer can assume it; a larger packet is dropped and counted
/// as `oversize`, never copied. Jumbo-frame senders (`ffmpeg -pkt_size
/// 1900`) must be set to 1500 or less: browsers never send more than ~1200.
pub const MAX_PACKET: usize = 1500;

pub use extensions::{audio_level, one_byte_extension, write_audio_level, write_extensions};
pub use header::{is_rtcp, RtpError, RtpHeader};
