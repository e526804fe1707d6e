//! Send-side bandwidth estimate of a WebRTC player's path, from its
//! transport-cc feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01,
//! draft-ietf-rmcat-gcc-02): what tells how much of the room a player
//! behind a narrow link can take.
//!
//! ```text
//! packet out to the player ─▶ on_sent: its transport-wide seq (written under the
//!                             player's extension id) + send time + size, in a ring
//! RTPFB fmt 15 from the player ─▶ on_feedback: per packet reported, arrival time
//!     received ─▶ remb::Estimator::on_sample(arrival, send, size)   delay-based
//!                 (the same trendline, detector and AIMD as a publisher's REMB)
//!     lost     ─▶ loss over ≥ 20 packets reported:                  loss-based
//!                 (from the first loss over 10 % on)
//!                 > 10 %: × (1 − loss/2), not under what was received;
//!                 < 2 %: +5 %/s, not under the delay-based;
//!                 else held, not under what was received
//! estimate = min(delay-based, loss-based)
//!
//! each video packet offered to the player, on its line of rank r
//! (the active speaker's line first) ─▶ video(now, r, size): the gate keeps
//! the lines of the first ranks flowing, the rest paused (audio goes on)
//!     Steady  ─▶ estimate under 80 % of what the flowing lines are offered
//!                (their last second) for 1 s ─▶ pause lines from the last
//!                rank until the rest fit ─▶ Backoff
//!     Backoff ─▶ after it (2 s, doubling to 8 s) ─▶ Trial: one line more,
//!                from a keyframe, as a probe of the path
//!     Trial   ─▶ after 2 s (once its video went out): the player lost
//!                ≤ 10 % of what was sent meanwhile ─▶ kept (the estimate
//!                raised to what it acknowledged; the next line's trial
//!                after 2 s), else paused again
//! ```
//!
//! The feedback's format is read by `rtcp-types` (the GStreamer RTP
//! developers' crate, which `twcc.rs` writes it with); the bookkeeping is
//! ours. Fixed-size: nothing is allocated per packet or per feedback.
//! While video flows the delay-based estimate stays within 1.5 × what the
//! player acknowledges; past a pause, a trial of the video itself is the
//! probe (padding probes, and layers to fall back on, are still to come).

use std::time::{Duration, Instant};

use rtcp_types::{RtcpPacketParser, TransportFeedback, Twcc, TwccPacketStatus};

use crate::remb::{roll, Estimator, Usage};

/// Packets remembered by transport-wide sequence number: at 4 Mbit/s (about
/// 400 packets a second) a feedback up to 2.5 s late (browsers send one
/// every 100 ms) still finds its packets; 16 KiB a player.
const RING: usize = 1024;
/// The loss-based controller decides on at least this many packets.
const LOSS_WINDOW: u32 = 20;
/// Above this loss the estimate falls; below [`LOSS_LOW`] it may rise.
const LOSS_HIGH: f64 = 0.10;
const LOSS_LOW: f64 = 0.02;
/// The loss-based increase per second while loss stays low.
const LOSS_INCREASE: f64 = 1.05;
/// Never less than this (bit/s): audio and a minimal picture.
const MIN_BPS: f64 = 50_000.0;
/// Lines pause when the estimate stays under this share of what the
/// player's flowing video lines are offered for [`PAUSE_AFTER`]: on a
/// healthy path the estimate is at least what the player acknowledges, and
/// the dip of one overuse (85 %) is lifted at the next feedback, so only a
/// link that cannot take them stays under it.
const PAUSE_BELOW: f64 = 0.8;
const PAUSE_AFTER: Duration = Duration::from_secs(1);
/// A trial resumes video for this long, and passes if the player lost at
/// most [`TRIAL_LOSS`] of what went out to it meanwhile (a link that
/// cannot take it drops the rest at its queue; one that takes 90 % would
/// pass each trial and pause again: the pause needs under 80 %).
const TRIAL: Duration = Duration::from_secs(2);
const TRIAL_LOSS: f64 = 0.1;
/// Resends take at most this share of the estimate (in packets of
/// [`RESEND_SIZE`] bytes), and are never held under [`RESEND_MIN`] a second:
/// what the link cannot take, resent, only pushes out what comes next.
const RESEND_SHARE: f64 = 0.25;
const RESEND_SIZE: f64 = 1200.0;
const RESEND_MIN: u32 = 20;
/// The wait before a trial: doubled by each failed one, to the last.
const BACKOFF_MIN: Duration = Duration::from_secs(2);
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// What the player's video lines are offered is counted in buckets of
/// this many µs, over [`OFFER_BUCKETS`] of them (1 s).
const OFFER_BUCKET_US: i64 = 100_000;
const OFFER_BUCKETS: usize = 10;

/// A trial whose line has sent under this share of what it is offered
/// (waiting for a keyframe) runs on, a second at a time, up to
/// [`TRIAL_WAITS`] times.
const TRIAL_CARRIED: f64 = 0.5;
const TRIAL_WAITS: u32 = 4;

/// Bit/s over the last second of `buckets` (at `at` µs of its clock).
fn bps(buckets: &[u64; OFFER_BUCKETS], at: i64) -> f64 {
    let span = at.clamp(OFFER_BUCKET_US, OFFER_BUCKETS as i64 * OFFER_BUCKET_US);
    buckets.iter().sum::<u64>() as f64 * 8.0 * 1e6 / span as f64
}

/// Video lines of a player the gate ranks (more share the last rank).
const MAX_LINES: usize = 16;

/// What a player's video line does with the packet offered now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Video {
    /// Send it (a line that was paused starts again at a keyframe).
    Flow,
    /// Do not: the player's path cannot take this line now.
    Paused,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gate {
    /// Every line offered flows, or as many as the last trial left.
    Steady,
    /// Some lines paused: the next trial at `retry_at`.
    Backoff { retry_at: Instant },
    /// One line more flows until `until`, on trial.
    Trial { until: Instant },
}

#[derive(Clone, Copy, Default)]
struct Sent {
    /// Extended sequence number + 1, its low 32 bits (0: empty slot; a
    /// slot is overwritten long before they wrap).
    seq: u32,
    size: u32,
    /// Microseconds since the estimate's start.
    at_us: i64,
}

/// One player's numbering of what it is sent, and the estimate its
/// feedback gives.
pub struct SendSide {
    start: Instant,
    /// The next extended transport-wide sequence number.
    next: u64,
    ring: Box<[Sent; RING]>,
    /// The highest extended sequence number a feedback reported: later
    /// feedbacks take only what follows (a report is read once).
    acked: Option<u64>,
    /// The player's clock: its feedback's reference time (24 bits of
    /// 64 ms) extended past its wrap, and where it started.
    last_ref: Option<u32>,
    ref_ext: i64,
    first_ref: i64,
    delay: Estimator,
    /// Loss-based: its estimate, the packets reported and lost since it
    /// last decided, and when that was (µs of our clock).
    loss_bps: Option<f64>,
    reported: u32,
    lost: u32,
    loss_at: i64,
    /// The loss the controller last decided on.
    last_loss: f64,
    /// Feedback packets that did not parse.
    pub malformed: u64,
    /// Which of its video lines flow: all but the `paused` of the last
    /// ranks, and since when the estimate has been too low for those.
    gate: Gate,
    paused: usize,
    low_since: Option<Instant>,
    backoff: Duration,
    /// The bytes of video offered to each rank per bucket (the newest at
    /// `offered_at`, µs / [`OFFER_BUCKET_US`]).
    offered: Box<[[u64; OFFER_BUCKETS]; MAX_LINES]>,
    offered_at: i64,
    /// The bytes sent to it per bucket (the newest at `sent_at`), and how
    /// often the running trial waited for its line's first packets.
    sent: [u64; OFFER_BUCKETS],
    sent_at: i64,
    waited: u32,
    /// Packets the player reported, and lost, since the trial began.
    trial: (u32, u32),
    /// Times its video paused.
    pub pauses: u64,
}

impl SendSide {
    pub fn new(now: Instant) -> SendSide {
        SendSide {
            start: now,
            next: 0,
            ring: Box::new([Sent::default(); RING]),
            acked: None,
            last_ref: None,
            ref_ext: 0,
            first_ref: 0,
            delay: Estimator::new(now),
            loss_bps: None,
            reported: 0,
            lost: 0,
            loss_at: 0,
            last_loss: 0.0,
            malformed: 0,
            gate: Gate::Steady,
            paused: 0,
            low_since: None,
            backoff: BACKOFF_MIN,
            offered: Box::new([[0; OFFER_BUCKETS]; MAX_LINES]),
            offered_at: 0,
            sent: [0; OFFER_BUCKETS],
            sent_at: 0,
            waited: 0,
            trial: (0, 0),
            pauses: 0,
        }
    }

    /// A video packet of `size` bytes is offered to the player now, on its
    /// line of priority `rank` (0 first): whether to send it. Time moves
    /// the gate on (see the module's drive loop): packets come while
    /// publishers send, so no timer is needed.
    pub fn video(&mut self, now: Instant, rank: usize, size: usize) -> Video {
        let rank = rank.min(MAX_LINES - 1);
        let at = self.micros(now);
        self.count_offered(at, rank, size);
        self.step(now, at);
        let lines = self.lines_offered();
        if rank < lines.saturating_sub(self.paused) {
            Video::Flow
        } else {
            Video::Paused
        }
    }

    /// The gate's next state at `now` (`at` µs).
    fn step(&mut self, now: Instant, at: i64) {
        let lines = self.lines_offered();
        self.paused = self.paused.min(lines);
        let flowing = lines - self.paused;
        if let Gate::Trial { until } = self.gate {
            if now < until {
                return;
            }
            // The line on trial waits for a keyframe (an RTMP push's may
            // be seconds away): the trial runs on until video went out.
            let sent = bps(&self.sent, at);
            if sent < TRIAL_CARRIED * self.needed(at, flowing) && self.waited < TRIAL_WAITS {
                self.waited += 1;
                self.gate = Gate::Trial {
                    until: now + PAUSE_AFTER,
                };
                return;
            }
            self.waited = 0;
            // Passed if the path lost little of what went out meanwhile.
            let (reported, lost) = std::mem::take(&mut self.trial);
            let acked = self.delay.received().unwrap_or(0) as f64;
            if reported >= LOSS_WINDOW && (lost as f64) <= TRIAL_LOSS * reported as f64 {
                // The trial was the probe: the path carries what it took.
                self.delay.raise_to(acked as u32);
                self.loss_bps = self.loss_bps.map(|l| l.max(acked));
                self.backoff = BACKOFF_MIN;
                self.gate = match self.paused {
                    0 => Gate::Steady,
                    _ => Gate::Backoff {
                        retry_at: now + BACKOFF_MIN,
                    },
                };
            } else {
                self.paused += 1;
                self.pauses += 1;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                self.gate = Gate::Backoff {
                    retry_at: now + self.backoff,
                };
            }
            self.low_since = None;
            return;
        }
        // Down at once, to what fits, once the estimate has stayed low.
        let estimate = self.estimate().map(|e| e as f64);
        let low =
            flowing > 0 && estimate.is_some_and(|e| e < PAUSE_BELOW * self.needed(at, flowing));
        self.low_since = if low {
            Some(self.low_since.unwrap_or(now))
        } else {
            None
        };
        if let (Some(since), Some(e)) = (self.low_since, estimate) {
            if now.saturating_duration_since(since) >= PAUSE_AFTER {
                let mut keep = flowing - 1;
                while keep > 0 && self.needed(at, keep) > e {
                    keep -= 1;
                }
                self.paused = lines - keep;
                self.pauses += 1;
                self.low_since = None;
                self.gate = Gate::Backoff {
                    retry_at: now + self.backoff,
                };
                return;
            }
        }
        match self.gate {
            Gate::Backoff { .. } if self.paused == 0 => self.gate = Gate::Steady,
            Gate::Backoff { retry_at } if now >= retry_at => {
                self.paused -= 1;
                self.trial = (0, 0);
                self.gate = Gate::Trial { until: now + TRIAL };
            }
            _ => {}
        }
    }

    fn count_offered(&mut self, at: i64, rank: usize, size: usize) {
        // Every rank's window moves on together, from the same newest bucket.
        let bucket = at / OFFER_BUCKET_US;
        for r in self.offered.iter_mut() {
            let mut newest = self.offered_at;
            roll(r, &mut newest, bucket);
        }
        self.offered_at = self.offered_at.max(bucket);
        self.offered[rank][(self.offered_at as usize) % OFFER_BUCKETS] += size as u64;
    }

    /// How many ranks were offered video in the last second (the first
    /// ones: lines with a publisher rank before those without).
    fn lines_offered(&self) -> usize {
        self.offered
            .iter()
            .rposition(|r| r.iter().any(|&b| b > 0))
            .map_or(0, |last| last + 1)
    }

    /// Bit/s of video offered over the last second to the first `lines` ranks.
    fn needed(&self, at: i64, lines: usize) -> f64 {
        self.offered.iter().take(lines).map(|r| bps(r, at)).sum()
    }

    /// Resends the player may be sent per second: the operator's `limit`,
    /// within a share of the estimate; none while all its video is paused
    /// (it resumes from a keyframe).
    pub fn resend_rate(&self, limit: u32) -> u32 {
        if self.paused > 0 && self.paused >= self.lines_offered() {
            return 0;
        }
        match self.estimate() {
            Some(e) => {
                let share = (e as f64 * RESEND_SHARE / (8.0 * RESEND_SIZE)) as u32;
                limit.min(share.max(RESEND_MIN))
            }
            None => limit,
        }
    }

    fn micros(&self, now: Instant) -> i64 {
        now.saturating_duration_since(self.start).as_micros() as i64
    }

    /// A packet of `size` bytes goes to the player now: its transport-wide
    /// sequence number, to write into it.
    pub fn on_sent(&mut self, now: Instant, size: usize) -> u16 {
        let seq = self.next;
        self.next += 1;
        let at = self.micros(now);
        roll(&mut self.sent, &mut self.sent_at, at / OFFER_BUCKET_US);
        self.sent[(self.sent_at as usize) % OFFER_BUCKETS] += size as u64;
        self.ring[seq as usize % RING] = Sent {
            seq: (seq + 1) as u32,
            at_us: self.micros(now),
            size: size as u32,
        };
        seq as u16
    }

    /// The estimate of the player's path (bit/s), once there is one.
    pub fn estimate(&self) -> Option<u32> {
        let delay = self.delay.estimate()? as f64;
        let both = self.loss_bps.map_or(delay, |l| l.min(delay));
        Some(both as u32)
    }

    /// A transport-cc feedback (one RTCP packet, RTPFB fmt 15) from the
    /// player, at `now`. Junk is counted in [`SendSide::malformed`].
    pub fn on_feedback(&mut self, now: Instant, packet: &[u8]) {
        let Ok(fb) = TransportFeedback::parse(packet) else {
            self.malformed += 1;
            return;
        };
        let Ok(twcc) = fb.parse_fci::<Twcc>() else {
            self.malformed += 1;
            return;
        };
        let reference = self.player_clock(twcc.reference_time());
        let mut arrival = reference;
        let mut acked = self.acked;
        for status in twcc.packets() {
            let Ok((seq, status)) = status else {
                self.malformed += 1;
                break;
            };
            let Some((ext, sent)) = self.sent(seq) else {
                continue;
            };
            if acked.is_some_and(|a| ext <= a) {
                continue;
            }
            acked = Some(ext);
            self.reported += 1;
            self.trial.0 += 1;
            match status {
                TwccPacketStatus::NotReceived => {
                    self.lost += 1;
                    self.trial.1 += 1;
                }
                TwccPacketStatus::Received { delta } => {
                    arrival += delta as i64 * 250;
                    self.delay
                        .on_sample(arrival, sent.at_us, sent.size as usize);
                }
            }
        }
        self.acked = acked;
        self.on_loss(self.micros(now));
        // What the player acknowledged on a path that shows no overuse and
        // little loss, it can take: the estimate is at least that. (GCC's
        // increase assumes the sender follows the estimate; the publisher
        // does not follow one player's, and its own ramp-up must not read
        // as a path too narrow.)
        if self.delay.usage() != Usage::Overuse && self.last_loss <= LOSS_HIGH {
            if let Some(received) = self.delay.received() {
                self.delay.raise_to(received);
            }
        }
    }

    /// The packet sent with sequence number `seq` (its extended number),
    /// if it is still known.
    fn sent(&self, seq: u16) -> Option<(u64, Sent)> {
        let back = (self.next as u16).wrapping_sub(seq) as u64;
        if back == 0 || back > RING as u64 || back > self.next {
            return None;
        }
        let ext = self.next - back;
        let s = self.ring[ext as usize % RING];
        (s.seq == (ext + 1) as u32).then_some((ext, s))
    }

    /// Reference time `raw` (24 bits of 64 ms) in µs on the player's clock,
    /// counted from its first feedback.
    fn player_clock(&mut self, raw: u32) -> i64 {
        let raw = raw & 0xff_ffff;
        match self.last_ref {
            None => {
                self.ref_ext = raw as i64;
                self.first_ref = raw as i64;
            }
            Some(last) => {
                let d = (raw.wrapping_sub(last) & 0xff_ffff) as i64;
                self.ref_ext += if d >= 0x80_0000 { d - 0x100_0000 } else { d };
            }
        }
        self.last_ref = Some(raw);
        (self.ref_ext - self.first_ref) * 64_000
    }

    /// The loss-based controller, once enough packets were reported.
    fn on_loss(&mut self, at: i64) {
        if self.reported < LOSS_WINDOW {
            return;
        }
        let loss = self.lost as f64 / self.reported as f64;
        self.last_loss = loss;
        let elapsed = ((at - self.loss_at) as f64 / 1e6).clamp(0.0, 1.0);
        (self.reported, self.lost, self.loss_at) = (0, 0, at);
        let Some(delay) = self.delay.estimate() else {
            return;
        };
        let received = self.delay.received().unwrap_or(0) as f64;
        // The loss-based bound exists from the first heavy loss on.
        let next = match self.loss_bps {
            None if loss <= LOSS_HIGH => return,
            None => delay as f64 * (1.0 - 0.5 * loss),
            // GCC's decrease, but never under what the player received:
            // packets we send past its link are lost whatever we estimate
            // (an SFU does not slow the publisher for one player), and
            // what gets through is what the link carries.
            Some(current) if loss > LOSS_HIGH => {
                (current * (1.0 - 0.5 * loss)).max(received.min(current))
            }
            // Little loss: no bound under the delay-based estimate.
            Some(current) if loss < LOSS_LOW => {
                current.max(delay as f64) * LOSS_INCREASE.powf(elapsed)
            }
            // Some loss: held, but not under what got through.
            Some(current) => current.max(received.min(delay as f64)),
        };
        // Loss alone never lifts the estimate past what the delay allows
        // by much: it only brings it down.
        self.loss_bps = Some(next.clamp(MIN_BPS, (delay as f64).max(MIN_BPS) * 1.5));
    }
}

/// The body of the `rtcp_walk` fuzz target's second half: a player's
/// transport-cc feedback, whatever it says, read by a send-side
/// estimate that has sent it 300 packets: every feedback found lies within
/// the compound, and the estimate takes it (junk counted) without a panic.
/// Returns how many feedbacks it found.
pub fn fuzz_feedback(data: &[u8]) -> usize {
    let t0 = std::time::Instant::now();
    let ms = std::time::Duration::from_millis;
    let mut bwe = SendSide::new(t0);
    for i in 0..300 {
        bwe.on_sent(t0 + ms(i * 3), 1200);
    }
    let mut found = 0;
    for (i, p) in crate::rtcp::transport_feedbacks(data).enumerate() {
        let inside = data.as_ptr_range();
        assert!(inside.start <= p.as_ptr() && p.as_ptr_range().end <= inside.end);
        bwe.on_feedback(t0 + ms(1000 + 100 * i as u64), p);
        found += 1;
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtcp_types::{RtcpPacketWriterExt, TransportFeedback};
    use std::time::Duration;

    /// A player behind a link of `link_bps` (a drop-tail queue of
    /// `queue_ms`, `loss` of what leaves it lost at random), sent `bps` of
    /// 1200-byte packets for `ms`, feeding back every 100 ms as a browser
    /// does. Returns the estimate at the end.
    struct Link {
        t0: Instant,
        now_ms: f64,
        free_ms: f64,
        pending: Vec<(u16, Option<f64>)>,
        fb_count: u8,
        seed: u64,
    }

    impl Link {
        fn new() -> Link {
            Link {
                t0: Instant::now(),
                now_ms: 0.0,
                free_ms: 0.0,
                pending: Vec::new(),
                fb_count: 0,
                seed: 7,
            }
        }

        fn random(&mut self) -> f64 {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            (self.seed % 10_000) as f64 / 10_000.0
        }

        fn run(&mut self, s: &mut SendSide, ms: f64, bps: f64, link_bps: f64, loss: f64) {
            let end = self.now_ms + ms;
            let gap = 1200.0 * 8.0 * 1000.0 / bps;
            let mut next_fb = (self.now_ms / 100.0).floor() * 100.0 + 100.0;
            while self.now_ms < end {
                let now = self.t0 + Duration::from_micros((self.now_ms * 1000.0) as u64);
                let seq = s.on_sent(now, 1200);
                let leave = self.free_ms.max(self.now_ms) + 1200.0 * 8.0 * 1000.0 / link_bps;
                let arrival = if leave - self.now_ms > 300.0 {
                    None // the queue is full: dropped
                } else {
                    self.free_ms = leave;
                    (self.random() >= loss).then_some(leave + 20.0)
                };
                self.pending.push((seq, arrival));
                self.now_ms += gap;
                if self.now_ms >= next_fb {
                    let at = self.t0 + Duration::from_micros((self.now_ms * 1000.0) as u64);
                    let fb = self.feedback();
                    s.on_feedback(at, &fb);
                    next_fb += 100.0;
                }
            }
        }

        /// A feedback of what is pending (written by rtcp-types, as twcc.rs does).
        fn feedback(&mut self) -> Vec<u8> {
            let pending = std::mem::take(&mut self.pending);
            let first = pending.iter().find_map(|p| p.1).unwrap_or(0.0);
            let reference = (first / 64.0).floor() as u32;
            let mut last = reference as f64 * 64.0;
            let statuses: Vec<TwccPacketStatus> = pending
                .iter()
                .map(|p| match p.1 {
                    None => TwccPacketStatus::NotReceived,
                    Some(a) => {
                        let delta = ((a - last) * 4.0).round() as i16;
                        last += delta as f64 / 4.0;
                        TwccPacketStatus::Received { delta }
                    }
                })
                .collect();
            let base = pending.first().map_or(0, |p| p.0);
            let fci = Twcc::builder(base, reference, self.fb_count, &statuses, None);
            self.fb_count = self.fb_count.wrapping_add(1);
            let b = TransportFeedback::builder(&fci)
                .sender_ssrc(1)
                .media_ssrc(2);
            let mut out = vec![0; 1500];
            let n = b.write_into(&mut out).expect("a feedback");
            out.truncate(n);
            out
        }
    }

    #[test]
    fn the_estimate_follows_a_link_down_and_holds_on_an_open_one() {
        let mut s = SendSide::new(Instant::now());
        let mut link = Link::new();
        link.run(&mut s, 4000.0, 1_500_000.0, 10_000_000.0, 0.0);
        let open = s.estimate().expect("an estimate after 4 s");
        assert!(open >= 1_400_000, "open link: {open}");
        link.run(&mut s, 3000.0, 1_500_000.0, 500_000.0, 0.0);
        let capped = s.estimate().unwrap();
        assert!(
            (250_000..=600_000).contains(&capped),
            "capped at 500 kbit/s: {capped}"
        );
    }

    #[test]
    fn heavy_loss_brings_the_estimate_down_light_loss_does_not() {
        let run = |loss: f64| {
            let mut s = SendSide::new(Instant::now());
            let mut link = Link::new();
            link.run(&mut s, 6000.0, 1_000_000.0, 10_000_000.0, loss);
            s.estimate().unwrap()
        };
        let (none, light, heavy) = (run(0.0), run(0.01), run(0.25));
        assert!(
            light as f64 > 0.9 * none as f64,
            "1 %: {light} against {none}"
        );
        assert!(
            (heavy as f64) < 0.6 * none as f64,
            "25 %: {heavy} against {none}"
        );
    }

    /// A publisher that ramps up from 300 kbit/s to 2.5 Mbit/s in 5 s (as a
    /// browser's encoder does) on an open path: the estimate follows what
    /// the player acknowledges, and its video never pauses.
    #[test]
    fn a_publishers_ramp_up_is_not_a_narrow_path() {
        let mut s = SendSide::new(Instant::now());
        let mut link = Link::new();
        for step in 0..10 {
            let bps = 300_000.0 + 220_000.0 * step as f64;
            let t0 = link.now_ms;
            link.run(&mut s, 500.0, bps, 20_000_000.0, 0.0);
            // Every packet sent was offered to the gate as video.
            let packets = ((link.now_ms - t0) * bps / (1200.0 * 8.0 * 1000.0)) as usize;
            let now = link.t0 + Duration::from_micros((link.now_ms * 1000.0) as u64);
            for _ in 0..packets {
                assert_eq!(s.video(now, 0, 1200), Video::Flow, "paused at {bps} bit/s");
            }
        }
        let e = s.estimate().unwrap();
        assert!(e >= 2_000_000, "{e}");
    }

    /// The `rtcp_walk` fuzz target reaches the estimate: a compound of a
    /// receiver report and a real feedback holds one feedback.
    #[test]
    fn the_fuzz_target_reaches_the_estimate() {
        let mut link = Link::new();
        link.pending = (0..40).map(|q| (q, Some(q as f64 * 3.0))).collect();
        let fb = link.feedback();
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 9];
        let compound = [&rr[..], &fb].concat();
        assert_eq!(fuzz_feedback(&compound), 1);
    }

    #[test]
    fn junk_late_and_repeated_feedback_is_counted_or_ignored() {
        let t0 = Instant::now();
        let mut s = SendSide::new(t0);
        s.on_feedback(t0, &[0x8f, 205, 0, 1, 0, 0]);
        s.on_feedback(t0, b"not rtcp at all");
        assert_eq!(s.malformed, 2);
        // Statuses for packets never sent: nothing taken.
        let mut link = Link::new();
        link.pending = (100..200).map(|q| (q, Some(q as f64))).collect();
        let fb = link.feedback();
        s.on_feedback(t0, &fb);
        assert_eq!((s.reported, s.estimate()), (0, None));
        // A real run, then the same feedback again: read once.
        link.run(&mut s, 3000.0, 1_000_000.0, 10_000_000.0, 0.0);
        let before = s.acked;
        link.pending = vec![(0, Some(1.0)), (1, Some(2.0))];
        let again = link.feedback();
        s.on_feedback(t0, &again);
        assert_eq!(s.acked, before);
    }
}
