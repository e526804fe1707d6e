//! ICE-lite for WebRTC sessions: STUN framing (`stun`) and the per-session
//! connectivity-check and consent state (`lite`). Sans-IO: the shard hands
//! in datagrams classified as STUN by [`crate::demux`] and sends the answers.

pub mod lite;
pub mod stun;

pub use lite::{IceLite, StunDrop, CONSENT_TIMEOUT};
