//! Receive-side bandwidth estimate and REMB, for WebRTC publishers without
//! transport-cc (aiortc, older stacks): the delay-based half of Google
//! congestion control (draft-ietf-rmcat-gcc-02 §5) run here, its result sent
//! back as a Receiver Estimated Maximum Bitrate (draft-alvestrand-rmcat-remb-03)
//! that the publisher's encoder follows.
//!
//! ```text
//! SRTP packet in ─▶ abs-send-time (24 bits, 1/2^18 s) + arrival time + size ─▶ on_packet
//!   packets sent within 5 ms of each other form a group; per pair of groups
//!       d = Δarrival − Δsend            (how much longer the path took)
//!   trendline: slope of the smoothed accumulated d over the last 20 groups
//!   detector:  slope × gain against an adaptive threshold ─▶ normal / overuse / underuse
//!   AIMD:      normal: +8 %/s (additive once near the capacity last seen)
//!              overuse: 0.85 × the rate received over the last 500 ms
//!              underuse: hold (the queue drains)
//! ─▶ REMB (PSFB fmt 15) at once on a drop of 3 % or more, else every second
//! ```
//!
//! A queue building up anywhere on the publisher's path shows as a growing
//! d long before packets are lost, so the publisher backs off on delay, not
//! on loss. Everything is fixed-size: no allocation per packet. The same
//! estimator runs on the send side of a player's path ([`crate::bwe`]),
//! fed from its transport-cc feedback through [`Estimator::on_sample`].
//!
//! The constants are libwebrtc's (its trendline estimator, overuse detector
//! and AIMD rate control), which the draft describes and browsers and aiortc
//! run on the other side of the same feedback.

use std::time::Instant;

/// Packets sent within this span belong to one group (µs).
const GROUP_SPAN_US: i64 = 5_000;
/// A packet arriving this soon after its group's last, and sooner than it
/// was sent after it, is part of the same burst (µs).
const BURST_US: i64 = 5_000;
/// Groups the trendline's regression looks at.
const WINDOW: usize = 20;
/// Exponential smoothing of the accumulated delay.
const SMOOTHING: f64 = 0.9;
/// The slope is scaled by min(deltas, 60) × this before the threshold.
const GAIN: f64 = 4.0;
const MIN_DELTAS: f64 = 60.0;
/// Adaptive threshold (ms): start, bounds, and how fast it follows the
/// trend up and down (GCC's K_u and K_d).
const THRESHOLD_START: f64 = 12.5;
const THRESHOLD_MIN: f64 = 6.0;
const THRESHOLD_MAX: f64 = 600.0;
const K_UP: f64 = 0.0087;
const K_DOWN: f64 = 0.039;
/// A trend this far over the threshold is an outlier: it does not move it.
const MAX_ADAPT_MS: f64 = 15.0;
/// Over the threshold for this long (ms of send time) is overuse.
const OVERUSE_MS: f64 = 10.0;
/// The received rate is measured over this window, in these buckets.
const RATE_BUCKETS: usize = 20;
const BUCKET_US: i64 = 50_000;
/// The decrease on overuse takes the rate of this many newest buckets.
const RECENT_BUCKETS: usize = 10;
/// The first estimate is the rate received over the first this-long (µs):
/// before that, the publisher's own start-up rate stands.
const INIT_US: i64 = 2_000_000;
/// Rate control runs at least this often (µs), and at once on overuse.
const UPDATE_US: i64 = 500_000;
/// REMB goes out this often (µs), or at once when the estimate drops by
/// more than [`DROP_NOW`].
const REMB_EVERY_US: i64 = 1_000_000;
const DROP_NOW: f64 = 0.97;
/// Never ask for less than this (bit/s): audio and a minimal picture.
const MIN_BPS: f64 = 50_000.0;
/// Assumed round-trip time (ms) for the additive increase: a publisher
/// sends us no reports to measure it from.
const RTT_MS: f64 = 200.0;

/// What the delay trend says about the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    Normal,
    Overuse,
    Underuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RateState {
    Hold,
    Increase,
}

#[derive(Clone, Copy)]
struct Group {
    /// Send times (µs).
    first_send: i64,
    last_send: i64,
    /// Arrival of its last packet (µs since the estimator's start).
    last_arrival: i64,
}

/// One publisher's receive-side estimate and its REMB schedule.
pub struct Estimator {
    start: Instant,
    // Send-time extension.
    last_raw: Option<u32>,
    send_ext: i64,
    // Groups.
    group: Option<Group>,
    prev: Option<Group>,
    // Trendline.
    deltas: u32,
    accumulated: f64,
    smoothed: f64,
    first_arrival_ms: Option<f64>,
    points: [(f64, f64); WINDOW],
    points_len: usize,
    points_head: usize,
    // Detector.
    usage: Usage,
    threshold: f64,
    threshold_updated_ms: Option<f64>,
    overuse_ms: Option<f64>,
    overuse_count: u32,
    prev_trend: f64,
    // Received rate.
    buckets: [u64; RATE_BUCKETS],
    bucket_at: i64,
    first_packet_us: Option<i64>,
    // AIMD rate control.
    estimate: Option<f64>,
    state: RateState,
    last_change_us: i64,
    last_update_us: Option<i64>,
    /// Mean and variance (normalized) of the rate at overuse, kbit/s: near
    /// it the increase is additive.
    max_kbps: Option<f64>,
    max_var: f64,
    near_max: bool,
    // REMB.
    sent: Option<(i64, f64)>,
}

impl Estimator {
    pub fn new(now: Instant) -> Estimator {
        Estimator {
            start: now,
            last_raw: None,
            send_ext: 0,
            group: None,
            prev: None,
            deltas: 0,
            accumulated: 0.0,
            smoothed: 0.0,
            first_arrival_ms: None,
            points: [(0.0, 0.0); WINDOW],
            points_len: 0,
            points_head: 0,
            usage: Usage::Normal,
            threshold: THRESHOLD_START,
            threshold_updated_ms: None,
            overuse_ms: None,
            overuse_count: 0,
            prev_trend: 0.0,
            buckets: [0; RATE_BUCKETS],
            bucket_at: 0,
            first_packet_us: None,
            estimate: None,
            state: RateState::Hold,
            last_change_us: 0,
            last_update_us: None,
            max_kbps: None,
            max_var: 0.4,
            near_max: false,
            sent: None,
        }
    }

    /// The current estimate (bit/s), once there is one.
    pub fn estimate(&self) -> Option<u32> {
        self.estimate.map(|e| e as u32)
    }

    /// Bit/s that arrived over the last second (of arrival time), once
    /// anything did: for the send side, what the player acknowledged.
    pub fn received(&self) -> Option<u32> {
        let at = (self.bucket_at + 1) * BUCKET_US;
        self.received_bps(at, RATE_BUCKETS).map(|r| r as u32)
    }

    /// The path was seen to carry `bps` (a probe passed): the estimate is
    /// at least that, and the increase starts from there.
    pub fn raise_to(&mut self, bps: u32) {
        let bps = bps as f64;
        if self.estimate.is_none_or(|e| e < bps) {
            self.estimate = Some(bps.max(MIN_BPS));
        }
    }

    /// What the delay trend said last.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    fn micros(&self, now: Instant) -> i64 {
        now.saturating_duration_since(self.start).as_micros() as i64
    }

    /// A packet of `size` bytes, sent at `abs_send_time` (the extension's
    /// 24-bit value), arrived at `now`.
    pub fn on_packet(&mut self, now: Instant, abs_send_time: u32, size: usize) {
        let at = self.micros(now);
        let send = to_us(self.extend(abs_send_time & 0xff_ffff));
        self.on_sample(at, send, size);
    }

    /// A packet of `size` bytes sent at `send` and arrived at `at` (µs, each
    /// on its own clock: only differences count). The receive side (above)
    /// and the send side of a player's path ([`crate::bwe`], from its
    /// transport-cc feedback) both run the estimate on these. Arrivals
    /// before 0 are not taken.
    pub fn on_sample(&mut self, at: i64, send: i64, size: usize) {
        if at < 0 {
            return;
        }
        self.count_bytes(at, size);
        match self.group {
            None => self.group = Some(Group::new(send, at)),
            Some(g) if send < g.first_send => {} // reordered: no delay sample
            Some(mut g) if g.takes(send, at) => {
                g.last_send = g.last_send.max(send);
                g.last_arrival = at;
                self.group = Some(g);
            }
            Some(g) => {
                if let Some(p) = self.prev {
                    let send_us = g.last_send - p.last_send;
                    self.on_delta(send_us, g.last_arrival - p.last_arrival, g.last_arrival);
                }
                self.prev = Some(g);
                self.group = Some(Group::new(send, at));
            }
        }
        let due = self.last_update_us.is_none_or(|t| at - t >= UPDATE_US);
        if due || self.usage == Usage::Overuse {
            self.update_rate(at);
        }
    }

    /// Extends the 24-bit send time past its wrap (every 64 s).
    fn extend(&mut self, raw: u32) -> i64 {
        if let Some(last) = self.last_raw {
            let d = (raw.wrapping_sub(last) & 0xff_ffff) as i64;
            self.send_ext += if d >= 0x80_0000 { d - 0x100_0000 } else { d };
        }
        self.last_raw = Some(raw);
        self.send_ext
    }

    /// One delay-variation sample between two groups (µs), the later
    /// group's arrival at `arrival` (µs).
    fn on_delta(&mut self, send_us: i64, arrival_us: i64, arrival: i64) {
        let send_ms = send_us as f64 / 1000.0;
        let d = (arrival_us - send_us) as f64 / 1000.0;
        let arrival_ms = arrival as f64 / 1000.0;
        self.deltas = (self.deltas + 1).min(1000);
        self.accumulated += d;
        self.smoothed = SMOOTHING * self.smoothed + (1.0 - SMOOTHING) * self.accumulated;
        let first = *self.first_arrival_ms.get_or_insert(arrival_ms);
        self.points[self.points_head] = (arrival_ms - first, self.smoothed);
        self.points_head = (self.points_head + 1) % WINDOW;
        self.points_len = (self.points_len + 1).min(WINDOW);
        let trend = if self.points_len == WINDOW {
            slope(&self.points).unwrap_or(self.prev_trend)
        } else {
            self.prev_trend
        };
        self.detect(trend, send_ms, arrival_ms);
    }

    fn detect(&mut self, trend: f64, send_ms: f64, now_ms: f64) {
        if self.deltas < 2 {
            return;
        }
        let modified = (self.deltas as f64).min(MIN_DELTAS) * trend * GAIN;
        if modified > self.threshold {
            let t = match self.overuse_ms {
                None => send_ms / 2.0,
                Some(t) => t + send_ms,
            };
            self.overuse_ms = Some(t);
            self.overuse_count += 1;
            if t > OVERUSE_MS && self.overuse_count > 1 && trend >= self.prev_trend {
                self.overuse_ms = Some(0.0);
                self.overuse_count = 0;
                self.usage = Usage::Overuse;
            }
        } else if modified < -self.threshold {
            self.overuse_ms = None;
            self.overuse_count = 0;
            self.usage = Usage::Underuse;
        } else {
            self.overuse_ms = None;
            self.overuse_count = 0;
            self.usage = Usage::Normal;
        }
        self.prev_trend = trend;
        // The threshold follows the trend: slowly up (a noisy path does not
        // read as overuse forever), faster down.
        let last = *self.threshold_updated_ms.get_or_insert(now_ms);
        if modified.abs() <= self.threshold + MAX_ADAPT_MS {
            let k = if modified.abs() < self.threshold {
                K_DOWN
            } else {
                K_UP
            };
            let dt = (now_ms - last).min(100.0);
            self.threshold += k * (modified.abs() - self.threshold) * dt;
            self.threshold = self.threshold.clamp(THRESHOLD_MIN, THRESHOLD_MAX);
        }
        self.threshold_updated_ms = Some(now_ms);
    }

    fn count_bytes(&mut self, at: i64, size: usize) {
        self.first_packet_us.get_or_insert(at);
        roll(&mut self.buckets, &mut self.bucket_at, at / BUCKET_US);
        self.buckets[self.bucket_at as usize % RATE_BUCKETS] += size as u64;
    }

    /// Bit/s received over the last `buckets` buckets (or since the first
    /// packet).
    fn received_bps(&self, at: i64, buckets: usize) -> Option<f64> {
        let first = self.first_packet_us?;
        let buckets = buckets.clamp(1, RATE_BUCKETS);
        let span = (at - first).clamp(BUCKET_US, buckets as i64 * BUCKET_US);
        let newest = self.bucket_at;
        let bytes: u64 = (0..buckets as i64)
            .map(|back| self.buckets[(newest - back).rem_euclid(RATE_BUCKETS as i64) as usize])
            .sum();
        Some(bytes as f64 * 8.0 * 1e6 / span as f64)
    }

    fn update_rate(&mut self, at: i64) {
        self.last_update_us = Some(at);
        let Some(received) = self.received_bps(at, RATE_BUCKETS) else {
            return;
        };
        let started = self.first_packet_us.unwrap_or(at);
        let current = match self.estimate {
            Some(e) => e,
            // Until the first estimate the publisher's own start-up rate
            // stands, unless the path is already overused.
            None if at - started >= INIT_US || self.usage == Usage::Overuse => {
                self.last_change_us = at;
                received
            }
            None => return,
        };
        let received_kbps = received / 1000.0;
        let sigma = |avg: f64, var: f64| (var * avg).sqrt();
        let mut next = current;
        match self.usage {
            // The queue drains: hold until it has.
            Usage::Underuse => self.state = RateState::Hold,
            Usage::Normal => {
                if self.state == RateState::Hold {
                    self.state = RateState::Increase;
                    self.last_change_us = at;
                }
                if let Some(avg) = self.max_kbps {
                    if received_kbps >= avg + 3.0 * sigma(avg, self.max_var) {
                        // Well past the capacity seen before: it changed.
                        self.near_max = false;
                        self.max_kbps = None;
                    }
                }
                let elapsed_ms = ((at - self.last_change_us) as f64 / 1000.0).clamp(0.0, 1000.0);
                next += if self.near_max {
                    // About one packet per response time.
                    let bits_per_frame = current / 30.0;
                    let packets = (bits_per_frame / (8.0 * 1200.0)).ceil().max(1.0);
                    let per_s = (bits_per_frame / packets) * 1000.0 / (RTT_MS + 100.0);
                    elapsed_ms * per_s.max(4000.0) / 1000.0
                } else {
                    (1.08f64.powf(elapsed_ms / 1000.0) - 1.0) * current
                }
                .max(1000.0);
                self.last_change_us = at;
            }
            Usage::Overuse => {
                if let Some(avg) = self.max_kbps {
                    if received_kbps < avg - 3.0 * sigma(avg, self.max_var) {
                        self.max_kbps = None;
                    }
                }
                let avg = match self.max_kbps {
                    None => received_kbps,
                    Some(avg) => 0.95 * avg + 0.05 * received_kbps,
                };
                let norm = avg.max(1.0);
                self.max_var = (0.95 * self.max_var + 0.05 * (avg - received_kbps).powi(2) / norm)
                    .clamp(0.4, 2.5);
                self.max_kbps = Some(avg);
                self.near_max = true;
                // What the path carries now: the last half second only
                // (the draft allows 0.5-1 s). Over a whole second, the
                // first decrease after a capacity drop still counts the
                // rate from before it, and takes two more to get under.
                let recent = self.received_bps(at, RECENT_BUCKETS).unwrap_or(received);
                next = 0.85 * recent;
                self.state = RateState::Hold;
                self.last_change_us = at;
                // One decrease per overuse: the next must be detected anew.
                self.usage = Usage::Normal;
            }
        }
        // Never far above what actually arrives: an encoder that does not
        // use its room must not be promised more.
        let ceiling = (1.5 * received + 10_000.0).max(current);
        self.estimate = Some(next.min(ceiling).max(MIN_BPS));
    }

    /// Whether a REMB is due: the estimate dropped by more than 3 % since
    /// the last one, or a second passed.
    pub fn due(&self, now: Instant) -> bool {
        let Some(e) = self.estimate else {
            return false;
        };
        let at = self.micros(now);
        match self.sent {
            None => true,
            Some((t, last)) => at - t >= REMB_EVERY_US || e < DROP_NOW * last,
        }
    }

    /// Writes the REMB due now for the publisher's `ssrcs` (a whole RTCP
    /// packet, plaintext) into `out`; 0 if none is due or it does not fit.
    pub fn write_remb(
        &mut self,
        now: Instant,
        sender_ssrc: u32,
        ssrcs: &[u32],
        out: &mut [u8],
    ) -> usize {
        if !self.due(now) {
            return 0;
        }
        let Some(e) = self.estimate else { return 0 };
        let n = crate::rtcp::write_remb(out, sender_ssrc, e as u64, ssrcs);
        if n > 0 {
            self.sent = Some((self.micros(now), e));
        }
        n
    }
}

impl Group {
    fn new(send: i64, at: i64) -> Group {
        Group {
            first_send: send,
            last_send: send,
            last_arrival: at,
        }
    }

    /// Whether a packet sent at `send` arriving at `at` belongs here.
    fn takes(&self, send: i64, at: i64) -> bool {
        let arrival_delta = at - self.last_arrival;
        let send_delta = send - self.last_send;
        let burst = send_delta == 0 || (arrival_delta < send_delta && arrival_delta <= BURST_US);
        burst || send - self.first_send <= GROUP_SPAN_US
    }
}

/// Moves a ring of byte counts per time bucket (`buckets`, the newest
/// numbered `newest`) on to bucket number `bucket`: those passed in between
/// are emptied. The received rate here and a player's rates in
/// [`crate::bwe`] keep their windows this way.
pub(crate) fn roll<const N: usize>(buckets: &mut [u64; N], newest: &mut i64, bucket: i64) {
    if bucket - *newest >= N as i64 {
        *buckets = [0; N];
    } else {
        for b in *newest + 1..=bucket {
            buckets[b as usize % N] = 0;
        }
    }
    *newest = (*newest).max(bucket);
}

/// abs-send-time units (1/2^18 s) to µs.
fn to_us(units: i64) -> i64 {
    (units * 1_000_000) >> 18
}

/// Least-squares slope of the (x, y) points; `None` if x does not vary.
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), p| (a + p.0, b + p.1));
    let (mx, my) = (sx / n, sy / n);
    let (mut num, mut den) = (0.0, 0.0);
    for &(x, y) in points {
        num += (x - mx) * (y - my);
        den += (x - mx) * (x - mx);
    }
    (den != 0.0).then(|| num / den)
}

/// The abs-send-time (24 bits) in an RTP header's one-byte extension block
/// under id `id` (0: not negotiated).
pub fn send_time(header: &[u8], id: u8) -> Option<u32> {
    let v = crate::rtp::one_byte_extension(header, id)?;
    Some(u32::from_be_bytes([0, *v.first()?, *v.get(1)?, *v.get(2)?]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const UNITS_PER_MS: f64 = 262.144;

    /// A publisher's path on virtual time: 30 frames a second, cut into
    /// packets of 1200 bytes, through a link (a FIFO: a packet leaves when
    /// the link has sent the ones before it) and 20 ms of propagation.
    struct Path {
        now: Instant,
        t0: Instant,
        send_ms: f64,
        link_free_ms: f64,
    }

    impl Path {
        fn new() -> Path {
            let t0 = Instant::now();
            Path {
                now: t0,
                t0,
                send_ms: 0.0,
                link_free_ms: 0.0,
            }
        }

        /// Runs `ms` of sending at `bps` through `link_bps`; REMBs written.
        fn run(&mut self, e: &mut Estimator, ms: f64, bps: f64, link_bps: f64) -> Vec<u32> {
            let mut rembs = Vec::new();
            let end = self.send_ms + ms;
            let frame_bytes = bps / 8.0 / 30.0;
            while self.send_ms < end {
                let packets = (frame_bytes / 1200.0).ceil() as usize;
                for i in 0..packets {
                    let size = if i + 1 < packets {
                        1200
                    } else {
                        (frame_bytes as usize - 1200 * i).max(1)
                    };
                    let leave =
                        self.link_free_ms.max(self.send_ms) + size as f64 * 8.0 * 1000.0 / link_bps;
                    self.link_free_ms = leave;
                    let arrive = leave + 20.0;
                    self.now = self.t0 + Duration::from_micros((arrive * 1000.0) as u64);
                    let abs = ((self.send_ms * UNITS_PER_MS) as u64 & 0xff_ffff) as u32;
                    e.on_packet(self.now, abs, size);
                    let mut out = [0u8; 64];
                    if e.write_remb(self.now, 1, &[7], &mut out) > 0 {
                        rembs.push(e.estimate().unwrap());
                    }
                }
                self.send_ms += 1000.0 / 30.0;
            }
            rembs
        }
    }

    #[test]
    fn an_unloaded_path_lets_the_estimate_grow() {
        let mut e = Estimator::new(Instant::now());
        let mut p = Path::new();
        p.run(&mut e, 2500.0, 1_000_000.0, 10_000_000.0);
        let first = e.estimate().expect("an estimate after 2 s");
        // What arrived over the last second.
        assert!((950_000..1_050_000).contains(&first), "{first}");
        let later = p.run(&mut e, 5000.0, 1_000_000.0, 10_000_000.0);
        // 8 %/s for 5 s, held under 1.5 × what arrives.
        let last = *later.last().unwrap();
        assert!(last as f64 > first as f64 * 1.3, "{first} → {last}");
        assert!(last as f64 <= 1.5 * 1_000_000.0 + 10_000.0, "{last}");
        assert_eq!(e.usage(), Usage::Normal);
    }

    #[test]
    fn a_queue_building_up_brings_the_estimate_under_the_link() {
        let mut e = Estimator::new(Instant::now());
        let mut p = Path::new();
        p.run(&mut e, 3000.0, 2_000_000.0, 10_000_000.0);
        let before = e.estimate().unwrap();
        assert!(before > 1_800_000, "{before}");
        // The link drops to 800 kbit/s: the queue grows by 1.2 Mbit/s, so
        // delay climbs 1.5 s a second; within half a second the estimate
        // must fall under the link, long before a 300 ms queue would drop.
        let rembs = p.run(&mut e, 500.0, 2_000_000.0, 800_000.0);
        let after = e.estimate().unwrap();
        assert!(after < 800_000, "{before} → {after}");
        assert!(
            rembs.iter().any(|&r| r < 800_000),
            "sent at once: {rembs:?}"
        );
    }

    /// A publisher that follows its REMB (as aiortc's encoder does, 100 ms
    /// late) behind a link that drops from 3 Mbit/s to 800 kbit/s: the
    /// estimate is under the new link within a second, before the queue
    /// reaches 300 ms, and stays there with the queue drained.
    #[test]
    fn a_following_publisher_is_under_a_dropped_link_within_a_second() {
        let mut e = Estimator::new(Instant::now());
        let mut p = Path::new();
        let mut rate = 1_000_000.0;
        let mut follow = |p: &mut Path, e: &mut Estimator, ms: f64, link: f64| {
            let mut worst_queue: f64 = 0.0;
            for _ in 0..(ms / 100.0) as usize {
                p.run(e, 100.0, rate, link);
                worst_queue = worst_queue.max(p.link_free_ms - p.send_ms);
                rate = e.estimate().map_or(rate, f64::from);
            }
            worst_queue
        };
        follow(&mut p, &mut e, 8000.0, 3_000_000.0);
        let before = e.estimate().unwrap();
        assert!(before > 1_300_000, "grown on the free link: {before}");
        let peak_queue = follow(&mut p, &mut e, 1000.0, 800_000.0);
        let after = e.estimate().unwrap();
        assert!(
            after < 800_000,
            "{before} → {after} a second after the drop"
        );
        assert!(peak_queue < 300.0, "the queue reached {peak_queue:.0} ms");
        let queue = follow(&mut p, &mut e, 5000.0, 800_000.0);
        let settled = e.estimate().unwrap();
        assert!(settled < 800_000, "{settled}");
        assert!(queue < 150.0, "a standing queue of {queue:.0} ms");
    }

    #[test]
    fn jitter_alone_is_not_overuse() {
        let mut e = Estimator::new(Instant::now());
        let t0 = Instant::now();
        let mut overuse = 0;
        // 1 Mbit/s, each frame's packets delayed by 0-15 ms at random
        // (a fixed pseudo-random sequence), on an uncongested path.
        let mut seed = 12345u32;
        for frame in 0..300u32 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let jitter = (seed >> 16) % 15;
            let send_ms = frame as f64 * 33.3;
            for k in 0..4u64 {
                let at = t0
                    + Duration::from_micros(
                        ((send_ms + 20.0 + jitter as f64) * 1000.0) as u64 + k * 100,
                    );
                e.on_packet(at, ((send_ms * UNITS_PER_MS) as u32) & 0xff_ffff, 1200);
                overuse += (e.usage() == Usage::Overuse) as u32;
            }
        }
        assert_eq!(overuse, 0);
        assert!(e.estimate().unwrap() >= 1_000_000);
    }

    #[test]
    fn send_times_wrap_every_64_seconds() {
        let mut e = Estimator::new(Instant::now());
        assert_eq!(e.extend(0xff_fff0), 0);
        assert_eq!(e.extend(0x00_0010), 0x20);
        assert_eq!(e.extend(0x00_0008), 0x18, "reordered across the wrap");
    }

    #[test]
    fn send_time_is_read_from_its_extension() {
        // X=1, profile 0xBEDE, one word: id 3, length 3 (L=2), value 0x123456.
        let mut h = vec![0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9];
        h.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x32, 0x12, 0x34, 0x56]);
        assert_eq!(send_time(&h, 3), Some(0x12_3456));
        assert_eq!(send_time(&h, 2), None);
        assert_eq!(send_time(&h, 0), None);
    }
}
