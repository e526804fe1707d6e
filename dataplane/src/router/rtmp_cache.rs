//! An RTMP publisher's RTP, kept for its players (it cannot be asked for a
//! resend or a keyframe): NACKs are answered from it, and a player's PLI by
//! replaying the GOP from its latest keyframe at the next frame boundary.

use std::net::SocketAddrV4;
use std::time::Instant;

use gateway_ring::msg::MediaKind;

use crate::codec::VideoCodec;
use crate::nack::NackCache;
use crate::participants::ParticipantId;
use crate::rtp::RtpHeader;
use crate::webrtc::Peer;

use super::egress::OutTrack;
use super::{control_buf, Control, Handle, Output, Outputs, Router, KEYFRAME_REQUEST_INTERVAL};

/// Replays an RTMP publisher's cached GOP to one player line: the packets
/// from its latest keyframe up to `next` (exclusive: the live packet about
/// to go, which begins a new frame), numbered on from the line's last packet
/// and stamped one tick apart per frame just after it, so the player's
/// decoder gets the keyframe and every frame since at once (it shows the
/// last). The line's mapping then moves past them: the live stream goes on
/// with no gap in sequence and its own, later, timestamps (a GOP is under
/// 1024 packets here, less than a frame's 3000 ticks). Returns the packets
/// sent; none if the GOP is no longer whole in the cache.
#[allow(clippy::too_many_arguments)]
pub(super) fn replay_gop(
    cache: &RtmpCache,
    t: &mut OutTrack,
    peer: &mut Peer,
    next: u16,
    pool: &mut Vec<Vec<u8>>,
    out: &mut Outputs,
    from: Handle,
    dest: SocketAddrV4,
    now: Instant,
) -> u64 {
    t.last_replay = Some(now);
    let Some(k) = cache.keyframe else { return 0 };
    let n = next.wrapping_sub(k);
    let whole = (0..n).all(|j| cache.packets.get(k.wrapping_add(j)).is_some());
    if n == 0 || n as usize >= crate::nack::SLOTS || !whole {
        return 0;
    }
    let (base_seq, base_ts) = (t.last_seq, t.last_ts);
    let (mut frame, mut prev_ts) = (1u32, None);
    for j in 0..n {
        let Some(pkt) = cache.packets.get(k.wrapping_add(j)) else {
            continue;
        };
        let Ok(h) = RtpHeader::parse(pkt) else {
            continue;
        };
        if prev_ts.is_some_and(|p| p != h.timestamp) {
            frame += 1;
        }
        prev_ts = Some(h.timestamp);
        let mut buf = control_buf(pool);
        let len = pkt.len();
        buf[..len].copy_from_slice(pkt);
        let (seq, ts) = (base_seq.wrapping_add(1 + j), base_ts.wrapping_add(frame));
        RtpHeader::rewrite(&mut buf, t.pt, seq, ts, t.ssrc);
        let Ok(m) = peer.protect_rtp(&mut buf, len) else {
            continue;
        };
        buf.truncate(m);
        t.sent = t.sent.wrapping_add(1);
        t.octets = t.octets.wrapping_add(len.saturating_sub(12) as u32);
        out.push(Output::Transmit(Control {
            from,
            dest,
            data: buf,
        }));
    }
    t.seq_delta = t.seq_delta.wrapping_add(n);
    t.last_seq = base_seq.wrapping_add(n);
    t.last_ts = base_ts.wrapping_add(frame);
    t.replayed_until = Some(t.last_seq.wrapping_add(1));
    n as u64
}

/// An RTMP publisher's retransmission cache is dropped after this long
/// without a packet.
pub(super) const RTMP_CACHE_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

/// An RTMP publisher's RTP, kept for its players: NACKs are answered from
/// it, and a player's PLI by replaying the GOP from its keyframe.
pub(super) struct RtmpCache {
    pub(super) packets: Box<NackCache>,
    pub(super) last: Instant,
    /// Its video codec, which tells where a keyframe starts.
    pub(super) codec: VideoCodec,
    /// Sequence number of the packet that began the latest keyframe.
    pub(super) keyframe: Option<u16>,
}

impl Router {
    /// A video RTP packet of participant `pid`'s RTMP publisher, kept for
    /// players' NACKs.
    pub fn cache_rtmp_video(&mut self, now: Instant, pid: ParticipantId, packet: &[u8]) {
        let Ok(h) = RtpHeader::parse(packet) else {
            return;
        };
        let cache = self.rtmp_caches.entry(pid).or_insert_with(|| RtmpCache {
            packets: Box::default(),
            last: now,
            codec: VideoCodec::NEGOTIATED,
            keyframe: None,
        });
        cache.packets.insert(h.seq_no, packet);
        cache.last = now;
        let payload = packet.get(h.len..).unwrap_or_default();
        if cache.codec.starts_keyframe(payload) {
            // The packetizer opens each keyframe with its parameter sets
            // (each may look like its start): the first packet of the
            // keyframe is where a replay starts.
            let same = cache.keyframe.is_some_and(|k| h.seq_no.wrapping_sub(k) < 4);
            if !same {
                cache.keyframe = Some(h.seq_no);
            }
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
    }
}
