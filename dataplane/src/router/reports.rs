//! Periodic work and RTCP reports: consent expiry (RFC 7675), receiver
//! reports to publishers, sender reports to players, BYE when a stream ends,
//! and the expiry of idle track caches.

use std::time::Instant;

use gateway_ring::msg::EndReason;

use crate::rtcp::{self, SenderInfo};

use super::sessions::Role;
use super::track_cache::TRACK_CACHE_IDLE;
use super::{Handle, Router, Source, REPORT_INTERVAL};

impl Router {
    pub(super) fn send_bye(&mut self, h: Handle, ssrc: u32) {
        self.send_rtcp(h, |_, buf| rtcp::write_bye(buf, &[ssrc]));
    }

    /// The latest RTCP sender report (NTP, RTP time) of WebRTC publisher
    /// `source`'s stream `ssrc`, if it sent one.
    pub fn publisher_sr(&self, source: Source, ssrc: u32) -> Option<(u64, u32)> {
        let h = self.source_handle(source)?;
        let Role::Webrtc(w) = &self.session(h)?.role else {
            return None;
        };
        [&w.peer.video_in, &w.peer.audio_in]
            .into_iter()
            .find(|s| s.ssrc == ssrc)
            .and_then(|s| s.sr)
            .map(|(ntp, rtp, _)| (ntp, rtp))
    }

    /// Periodic work: consent freshness (RFC 7675) and RTCP reports. Call a
    /// few times a second; `ntp_now` is the wall clock in NTP format (RFC
    /// 3550 §4), for sender reports.
    pub fn tick(&mut self, now: Instant, ntp_now: u64) {
        let mut expired = Vec::new();
        for h in 0..self.sessions.len() as Handle {
            let Some(Role::Webrtc(w)) = self.session(h).map(|s| &s.role) else {
                continue;
            };
            if w.peer.ice.consent_expired(now, w.peer.created) {
                expired.push(w.peer.spec.session);
                continue;
            }
            self.send_reports(now, ntp_now, h);
        }
        for session in expired {
            self.end_session(session, EndReason::ConsentExpired);
        }
        // A track gone quiet for a while (an RTMP publisher's: a session's
        // goes with its session): its cache goes.
        self.track_caches
            .retain(|_, c| now.saturating_duration_since(c.last) < TRACK_CACHE_IDLE);
    }

    /// One compound a second per peer: receiver reports to a publisher, sender
    /// reports (mapped from the publisher's) to a subscriber.
    fn send_reports(&mut self, now: Instant, ntp_now: u64, h: Handle) {
        // Sender reports map RTP time to NTP: from the publisher's own SR
        // when it sends them (WebRTC), else from our clock at the track's
        // last packet (RTP ingests, RTMP publishers).
        let mut srs: Vec<SenderInfo> = Vec::new();
        if let Some(Role::Webrtc(w)) = self.session(h).map(|s| &s.role) {
            if !w.peer.is_publisher() {
                for t in &w.tracks {
                    let Some((source, in_ssrc)) = t.source else {
                        continue;
                    };
                    let publisher_sr = self.source_handle(source).and_then(|ph| {
                        match self.session(ph).map(|s| &s.role) {
                            Some(Role::Webrtc(p)) => [&p.peer.video_in, &p.peer.audio_in]
                                .into_iter()
                                .find(|s| s.ssrc == in_ssrc)
                                .and_then(|s| s.sr),
                            _ => None,
                        }
                    });
                    let (ntp, rtp_ts) = match (publisher_sr, t.last_at) {
                        (Some((ntp, rtp_ts, at)), _) => {
                            let dt = now.saturating_duration_since(at).as_secs_f64();
                            let ticks = (dt * t.clock_rate as f64) as u32;
                            (
                                ntp.wrapping_add((dt * 4_294_967_296.0) as u64),
                                rtp_ts.wrapping_add(ticks).wrapping_add(t.ts_delta),
                            )
                        }
                        (None, Some(at)) => {
                            let dt = now.saturating_duration_since(at).as_secs_f64();
                            let ticks = (dt * t.clock_rate as f64) as u32;
                            (ntp_now, t.last_ts.wrapping_add(ticks))
                        }
                        (None, None) => continue,
                    };
                    srs.push(SenderInfo {
                        ssrc: t.ssrc,
                        ntp,
                        rtp_ts,
                        packets: t.sent,
                        octets: t.octets,
                    });
                }
            }
        }
        self.send_rtcp(h, |peer, buf| {
            if peer
                .last_report
                .is_some_and(|t| now.saturating_duration_since(t) < REPORT_INTERVAL)
            {
                return 0;
            }
            peer.last_report = Some(now);
            if peer.is_publisher() {
                let blocks: Vec<_> = [peer.video_in.report(now), peer.audio_in.report(now)]
                    .into_iter()
                    .flatten()
                    .collect();
                return rtcp::write_rr(buf, peer.rtcp_ssrc(), &blocks);
            }
            let mut n = 0;
            for sr in &srs {
                n += rtcp::write_sr(&mut buf[n..], sr);
            }
            if n == 0 {
                n = rtcp::write_rr(buf, peer.rtcp_ssrc(), &[]);
            }
            n
        });
    }
}
