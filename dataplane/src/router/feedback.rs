//! RTCP feedback: a player's keyframe requests (PLI, FIR) and NACKs, answered
//! from a publisher's cache (on the player's RTX stream when it took one) or
//! passed on to a WebRTC publisher; keyframe requests and NACKs we send
//! publishers.

use std::time::Instant;

use gateway_ring::msg::{DropReason, MediaKind};

use crate::rtcp::{self, Feedback};
use crate::rtp::RtpHeader;

use super::sessions::Role;
use super::{Control, Handle, Output, Router, Source, KEYFRAME_REQUEST_INTERVAL};

impl Router {
    /// Asks WebRTC publisher `source` to resend its video packet `seq`
    /// (a player or the bridge to RTMP is waiting for it; an RTMP
    /// publisher is no session here, and cannot be asked).
    pub fn nack_publisher(&mut self, source: Source, seq: u16) {
        let Some(h) = self.source_handle(source) else {
            return;
        };
        if self.nack_relayed(h, seq) {
            return;
        }
        self.send_rtcp(h, |peer, buf| {
            if !peer.is_publisher() {
                return 0;
            }
            rtcp::write_nack(buf, peer.rtcp_ssrc(), peer.video_in.ssrc, seq, 0)
        });
    }

    /// Asks publisher `source` for a keyframe (rate limited; only WebRTC
    /// publishers can be asked).
    pub fn request_keyframe_of(&mut self, now: Instant, source: Source) {
        if let Some(h) = self.source_handle(source) {
            self.request_keyframe(now, h);
        }
    }

    /// Sends publisher `p` a PLI for its video, at most once per
    /// [`KEYFRAME_REQUEST_INTERVAL`]. RTP ingests (no RTCP path back) are skipped.
    pub(super) fn request_keyframe(&mut self, now: Instant, p: Handle) {
        if self.request_relayed_keyframe(now, p) {
            return;
        }
        let sent = self.send_rtcp(p, |peer, buf| {
            let recent = peer
                .last_keyframe_request
                .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL);
            if peer.video_in.ssrc == 0 || recent {
                return 0;
            }
            peer.last_keyframe_request = Some(now);
            rtcp::write_pli(buf, peer.rtcp_ssrc(), peer.video_in.ssrc)
        });
        if sent {
            if let Some(s) = self.session_mut(p) {
                s.stats.keyframe_requests += 1;
                s.dirty = true;
            }
        }
    }

    /// Acts on the RTCP items in `self.feedback` that session `h` sent.
    pub(super) fn on_feedback(&mut self, now: Instant, h: Handle) {
        let items = std::mem::take(&mut self.feedback);
        for f in &items {
            match *f {
                Feedback::KeyframeRequest { media_ssrc } => {
                    let Some((src, i)) = self.track_source(h, media_ssrc) else {
                        continue;
                    };
                    if let Some(s) = self.session_mut(h) {
                        s.stats.keyframe_requests += 1;
                        s.dirty = true;
                    }
                    match src {
                        Source::Rtmp(_) | Source::RtmpTranscoded(..)
                            if self.track_caches.get(&src).is_some_and(|c| c.replays()) =>
                        {
                            self.want_replay(now, h, i)
                        }
                        Source::Rtmp(_) | Source::RtmpTranscoded(..) => {}
                        Source::Session(_) => self.request_keyframe_of(now, src),
                    }
                }
                Feedback::Nack {
                    media_ssrc,
                    pid,
                    blp,
                } => {
                    for seq in Feedback::nacked(pid, blp) {
                        let limit = self.nack_per_s;
                        let Some(w) = self.webrtc_mut(h) else { break };
                        let rate = w.peer.resend_rate(limit);
                        if !w.nack_budget.take(now, rate) {
                            self.count_drop(h, DropReason::RateLimited);
                            continue;
                        }
                        self.retransmit(now, h, media_ssrc, seq);
                    }
                }
                Feedback::SenderReport(sr) => {
                    if let Some(w) = self.webrtc_mut(h) {
                        w.peer.note_sender_report(now, &sr);
                    }
                }
                Feedback::Bye => {}
            }
        }
        self.feedback = items;
    }

    /// Publisher `source`'s cached video packet with sequence number
    /// `seq`, from its track's cache.
    fn cached(&self, source: Source, seq: u16) -> Option<&[u8]> {
        self.track_caches.get(&source)?.get(seq)
    }

    /// The source (a session, or an RTMP publisher) of subscriber `h`'s
    /// track with our SSRC `media_ssrc` (its first video track if no SSRC
    /// matches), and the track's index.
    fn track_source(&self, h: Handle, media_ssrc: u32) -> Option<(Source, usize)> {
        let Role::Webrtc(w) = &self.session(h)?.role else {
            return None;
        };
        let i = w
            .tracks
            .iter()
            .position(|t| t.ssrc == media_ssrc)
            .or_else(|| w.tracks.iter().position(|t| t.kind == MediaKind::Video))?;
        let (id, _) = w.tracks[i].source?;
        Some((id, i))
    }

    /// Answers a subscriber's NACK for its sequence number `out_seq` on our
    /// SSRC `media_ssrc` from the publisher's cache (a WebRTC publisher's,
    /// or an RTMP publisher's RTP); a miss becomes a NACK to a WebRTC
    /// publisher.
    fn retransmit(&mut self, now: Instant, h: Handle, media_ssrc: u32, out_seq: u16) {
        let Some((src, i)) = self.track_source(h, media_ssrc) else {
            return;
        };
        let Some(Role::Webrtc(sub)) = self.session(h).map(|s| &s.role) else {
            return;
        };
        let t = &sub.tracks[i];
        if t.kind != MediaKind::Video {
            return;
        }
        if t.replayed_until
            .is_some_and(|end| (out_seq.wrapping_sub(end) as i16) < 0)
        {
            return; // before or in a GOP replay: the mapping moved on
        }
        let (seq_delta, ts_delta, pt, ssrc, rtx_pt) =
            (t.seq_delta, t.ts_delta, t.pt, t.ssrc, t.rtx_pt);
        let in_seq = out_seq.wrapping_sub(seq_delta);
        if self.cached(src, in_seq).is_none() {
            self.nack_publisher(src, in_seq);
            return;
        }
        let mut buf = self.control_buf();
        let Some(pkt) = self.cached(src, in_seq) else {
            return;
        };
        let Ok(hd) = RtpHeader::parse(pkt) else {
            return;
        };
        let mut len = pkt.len();
        buf[..len].copy_from_slice(pkt);
        let Some(s) = self.session_mut(h) else { return };
        let Role::Webrtc(w) = &mut s.role else { return };
        let Some(dest) = w.peer.destination() else {
            return;
        };
        // VP8, VP9: the picture ids the original went out with.
        let t = &mut w.tracks[i];
        if let Some(codec) = t.codec.filter(|c| c.switches_at_keyframes()) {
            codec.rewrite_picture_ids(&mut buf[hd.len..len], &mut t.pictures, false, true);
        }
        let ts = hd.timestamp.wrapping_add(ts_delta);
        if rtx_pt != 0 {
            // RFC 4588: on the line's RTX stream, its own sequence, the
            // original sequence number first in the payload.
            let t = &mut w.tracks[i];
            buf.copy_within(hd.len..len, hd.len + 2);
            buf[hd.len..hd.len + 2].copy_from_slice(&out_seq.to_be_bytes());
            len += 2;
            let rtx_ssrc = gateway_ring::msg::rtx_ssrc(ssrc);
            RtpHeader::rewrite(&mut buf, rtx_pt, t.rtx_seq, ts, rtx_ssrc);
            t.rtx_seq = t.rtx_seq.wrapping_add(1);
        } else {
            RtpHeader::rewrite(&mut buf, pt, out_seq, ts, ssrc);
        }
        let Ok(n) = w.peer.protect_rtp(now, &mut buf, len, None) else {
            return;
        };
        buf.truncate(n);
        s.stats.retransmits += 1;
        s.dirty = true;
        self.out.push(Output::Transmit(Control {
            from: h,
            dest,
            data: buf,
        }));
    }
}
