//! A bounded reorder buffer before the RTP → FLV depacketizer (sans-IO):
//! the bridge to RTMP needs every packet of a frame in order, and one
//! reordered or lost packet would otherwise drop video to the next IDR and
//! cost a keyframe round trip.
//!
//! ```text
//! packet seq == next ─▶ released at once (no copy), then what was held after it
//! packet ahead       ─▶ held (copied); the missing ones are NACKed to the publisher,
//!                       and once more after RENACK if still missing
//! gap older than WAIT, or HOLD packets held ─▶ give up: release what is held in
//!                       order; the depacketizer sees the gap and waits for an IDR
//! packet behind next ─▶ dropped (a duplicate, or later than we could wait)
//! ```
//!
//! The re-NACK and the give-up are deadlines ([`Reorder::poll_timeout`]):
//! the owner calls [`Reorder::handle_timeout`] when one passes, so a gap
//! is given up on (and the frames held behind it released) when its wait
//! ends, not at the next packet, which may never come. A packet that
//! arrives first checks them too, as before.
//!
//! In-order packets (nearly all of them) pass through without allocation;
//! only a gap copies what arrives after it, at most [`HOLD`] packets.

use std::time::{Duration, Instant};

/// Longest a gap is waited for (a retransmission takes one round trip).
pub const WAIT: Duration = Duration::from_millis(100);
/// Most packets held behind a gap.
pub const HOLD: usize = 64;
/// Most sequence numbers one gap asks to be resent.
const MAX_NACK: u16 = 32;
/// A gap still open this long is asked for once more (the retransmission,
/// or the NACK, may have been lost too).
pub const RENACK: Duration = Duration::from_millis(40);

struct Held {
    seq: u16,
    ts: u32,
    marker: bool,
    payload: Vec<u8>,
}

#[derive(Default)]
pub struct Reorder {
    /// The next sequence number to release.
    next: Option<u16>,
    /// Packets after a gap, in sequence order.
    held: Vec<Held>,
    /// When the current gap was noticed, and whether it was asked for again.
    gap_since: Option<Instant>,
    renacked: bool,
    /// Packets still held behind a further gap once the first was filled:
    /// since when. A packet that comes opens that gap's own wait
    /// (`gap_since`), as it always did; without one, its deadlines run
    /// from here ([`Self::poll_timeout`]), so the held frames are not
    /// kept until a packet comes.
    left_since: Option<Instant>,
    /// Gaps filled (the packet came late, or again on our NACK) and gaps
    /// given up on (for stats).
    pub filled: u64,
    pub given_up: u64,
}

impl Reorder {
    /// One RTP packet: `release` gets the packets now in order (this one,
    /// and what was held behind it); `nack` the sequence numbers to ask
    /// the publisher for.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        now: Instant,
        seq: u16,
        ts: u32,
        marker: bool,
        payload: &[u8],
        nack: &mut Vec<u16>,
        mut release: impl FnMut(u16, u32, bool, &[u8]),
    ) {
        let next = *self.next.get_or_insert(seq);
        let ahead = seq.wrapping_sub(next);
        if ahead >= 0x8000 {
            return; // behind: a duplicate, or too late
        }
        if ahead == 0 {
            release(seq, ts, marker, payload);
            self.next = Some(seq.wrapping_add(1));
            self.drain(now, &mut release);
        } else if self.held.iter().all(|h| h.seq != seq) {
            if self.gap_since.is_none() {
                self.gap_since = Some(now);
                // Its own wait, afresh (a timer may have re-NACKed
                // the gap that was left, on `left_since`).
                self.renacked = false;
                self.left_since = None;
                let missing = ahead.min(MAX_NACK);
                nack.extend((0..missing).map(|i| next.wrapping_add(i)));
            } else if let Some(last) = self.held.last().map(|h| h.seq) {
                // A further gap behind the first: ask for it too.
                let d = seq.wrapping_sub(last);
                if (2..0x8000).contains(&d) {
                    let missing = (d - 1).min(MAX_NACK);
                    nack.extend((1..=missing).map(|i| last.wrapping_add(i)));
                }
            }
            let at = self
                .held
                .iter()
                .position(|h| h.seq.wrapping_sub(next) > ahead)
                .unwrap_or(self.held.len());
            self.held.insert(
                at,
                Held {
                    seq,
                    ts,
                    marker,
                    payload: payload.to_vec(),
                },
            );
        }
        self.fire(now, self.gap_since, nack, &mut release);
    }

    /// When [`Self::handle_timeout`] has something to do: the re-NACK of
    /// the open gap, then giving up on it; `None` while nothing is held.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let since = self.gap_since.or(self.left_since)?;
        Some(since + if self.renacked { WAIT } else { RENACK })
    }

    /// What is due at `now` without a packet: the gap asked for once more
    /// (into `nack`) after [`RENACK`], given up on after [`WAIT`] (what is
    /// held goes to `release`, in order), as a packet arriving now would
    /// have done.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        nack: &mut Vec<u16>,
        mut release: impl FnMut(u16, u32, bool, &[u8]),
    ) {
        self.fire(now, self.gap_since.or(self.left_since), nack, &mut release);
    }

    /// The re-NACK and the give-up of a gap open since `since`, if due.
    fn fire(
        &mut self,
        now: Instant,
        since: Option<Instant>,
        nack: &mut Vec<u16>,
        release: &mut impl FnMut(u16, u32, bool, &[u8]),
    ) {
        if let Some(since) = since.filter(|_| !self.renacked) {
            if now.saturating_duration_since(since) >= RENACK {
                self.renacked = true;
                self.missing(nack);
            }
        }
        let waited = since.is_some_and(|t| now.saturating_duration_since(t) >= WAIT);
        if waited || self.held.len() > HOLD {
            tracing::debug!(
                next = self.next,
                held = self.held.len(),
                first_held = self.held.first().map(|h| h.seq),
                waited_ms = since.map(|t| now.saturating_duration_since(t).as_millis() as u64),
                "reorder: giving up on a gap"
            );
            self.give_up(release);
        }
    }

    /// Appends the sequence numbers still missing before the held packets.
    fn missing(&self, nack: &mut Vec<u16>) {
        let (Some(next), Some(last)) = (self.next, self.held.last().map(|h| h.seq)) else {
            return;
        };
        let span = last.wrapping_sub(next);
        let mut asked = 0;
        for i in 0..span {
            let s = next.wrapping_add(i);
            if asked < MAX_NACK && self.held.iter().all(|h| h.seq != s) {
                nack.push(s);
                asked += 1;
            }
        }
    }

    /// Releases held packets that are next in order.
    fn drain(&mut self, now: Instant, release: &mut impl FnMut(u16, u32, bool, &[u8])) {
        let mut n = 0;
        while let Some(h) = self.held.get(n) {
            if Some(h.seq) != self.next {
                break;
            }
            release(h.seq, h.ts, h.marker, &h.payload);
            self.next = Some(h.seq.wrapping_add(1));
            n += 1;
        }
        if n > 0 {
            self.filled += 1;
            self.held.drain(..n);
        }
        if self.held.is_empty() || n > 0 {
            // Filled (or the first gap filled, another behind it: its own wait).
            self.gap_since = None;
            self.renacked = false;
            self.left_since = (!self.held.is_empty()).then_some(now);
        }
    }

    /// The gap is not coming: release what is held, in order, past it.
    fn give_up(&mut self, release: &mut impl FnMut(u16, u32, bool, &[u8])) {
        self.given_up += 1;
        for h in self.held.drain(..) {
            release(h.seq, h.ts, h.marker, &h.payload);
            self.next = Some(h.seq.wrapping_add(1));
        }
        self.gap_since = None;
        self.renacked = false;
        self.left_since = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(r: &mut Reorder, now: Instant, seq: u16, nack: &mut Vec<u16>) -> Vec<u16> {
        let mut out = Vec::new();
        r.push(
            now,
            seq,
            seq as u32 * 10,
            false,
            &[seq as u8],
            nack,
            |s, _, _, p| {
                assert_eq!(p, [s as u8]);
                out.push(s)
            },
        );
        out
    }

    #[test]
    fn in_order_passes_reordered_is_put_back_and_gaps_are_nacked() {
        let t = Instant::now();
        let mut r = Reorder::default();
        let mut nack = Vec::new();
        assert_eq!(run(&mut r, t, 65534, &mut nack), [65534]);
        assert_eq!(run(&mut r, t, 65535, &mut nack), [65535]);
        // 0 and 1 swapped across the wrap.
        assert!(run(&mut r, t, 1, &mut nack).is_empty());
        assert_eq!(nack, [0], "the missing one asked for once");
        assert_eq!(run(&mut r, t, 0, &mut nack), [0, 1]);
        assert_eq!(run(&mut r, t, 2, &mut nack), [2]);
        assert_eq!(nack, [0]);
        // A duplicate and a late packet are dropped.
        assert!(run(&mut r, t, 1, &mut nack).is_empty());
        assert_eq!((r.filled, r.given_up), (1, 0));
    }

    #[test]
    fn a_lost_packet_is_given_up_after_the_wait_and_the_rest_flows() {
        let t = Instant::now();
        let ms = |m: u64| t + Duration::from_millis(m);
        let mut r = Reorder::default();
        let mut nack = Vec::new();
        run(&mut r, ms(0), 10, &mut nack);
        // 11 and 12 lost; 13..15 held.
        for (i, s) in [13u16, 14, 15].into_iter().enumerate() {
            assert!(run(&mut r, ms(10 + i as u64), s, &mut nack).is_empty());
        }
        assert_eq!(nack, [11, 12]);
        // 40 ms on, still missing: asked for once more.
        assert!(run(&mut r, ms(50), 16, &mut nack).is_empty());
        assert_eq!(nack, [11, 12, 11, 12]);
        assert!(run(&mut r, ms(60), 17, &mut nack).is_empty());
        assert_eq!(nack.len(), 4, "only once more");
        // The retransmission of 11 comes; 12 never does.
        assert_eq!(run(&mut r, ms(70), 11, &mut nack), [11]);
        assert_eq!(
            run(&mut r, ms(200), 18, &mut nack),
            [13, 14, 15, 16, 17, 18]
        );
        assert_eq!(r.given_up, 1);
        assert_eq!(run(&mut r, ms(201), 19, &mut nack), [19]);
        assert!(run(&mut r, ms(202), 12, &mut nack).is_empty(), "too late");
    }

    /// With no further packet, the gap's deadlines fire by themselves:
    /// asked for once more at RENACK, given up at WAIT (what was held
    /// behind it released in order); nothing a moment before either. A
    /// further gap left behind a filled one waits its own WAIT from then.
    #[test]
    fn a_gap_is_given_up_at_its_deadline_without_another_packet() {
        let t = Instant::now();
        let ms = |m: u64| t + Duration::from_millis(m);
        let mut r = Reorder::default();
        let mut nack = Vec::new();
        assert_eq!(r.poll_timeout(), None, "nothing held");
        run(&mut r, ms(0), 10, &mut nack);
        assert!(run(&mut r, ms(10), 13, &mut nack).is_empty());
        assert_eq!(nack, [11, 12]);
        let timeout = |r: &mut Reorder, at: Instant, nack: &mut Vec<u16>| {
            let mut out = Vec::new();
            r.handle_timeout(at, nack, |s, _, _, _| out.push(s));
            out
        };
        assert_eq!(r.poll_timeout(), Some(ms(10) + RENACK));
        assert!(timeout(
            &mut r,
            ms(10) + RENACK - Duration::from_millis(1),
            &mut nack
        )
        .is_empty());
        assert_eq!(nack, [11, 12], "not asked again before RENACK");
        assert!(timeout(&mut r, ms(10) + RENACK, &mut nack).is_empty());
        assert_eq!(nack, [11, 12, 11, 12], "asked once more at RENACK");
        assert_eq!(r.poll_timeout(), Some(ms(10) + WAIT));
        let just_before = ms(10) + WAIT - Duration::from_millis(1);
        assert!(timeout(&mut r, just_before, &mut nack).is_empty());
        assert_eq!(r.given_up, 0);
        assert_eq!(timeout(&mut r, ms(10) + WAIT, &mut nack), [13]);
        assert_eq!((r.given_up, r.poll_timeout()), (1, None));
        assert_eq!(nack.len(), 4);

        // 15 and 17 missing behind 14; 15 comes: 16 goes, 18 waits for 17
        // from then (asked for when 18 came).
        run(&mut r, ms(200), 14, &mut nack);
        run(&mut r, ms(201), 16, &mut nack);
        run(&mut r, ms(202), 18, &mut nack);
        assert_eq!(run(&mut r, ms(210), 15, &mut nack), [15, 16]);
        assert_eq!(r.poll_timeout(), Some(ms(210) + RENACK));
        nack.clear();
        assert!(timeout(&mut r, ms(210) + RENACK, &mut nack).is_empty());
        assert_eq!(nack, [17]);
        assert!(timeout(&mut r, ms(210) + WAIT - Duration::from_millis(1), &mut nack).is_empty());
        assert_eq!(timeout(&mut r, ms(210) + WAIT, &mut nack), [18]);
        assert_eq!((r.given_up, r.poll_timeout()), (2, None));
        assert_eq!(run(&mut r, ms(320), 19, &mut nack), [19]);
    }

    #[test]
    fn holding_is_bounded() {
        let t = Instant::now();
        let mut r = Reorder::default();
        let mut nack = Vec::new();
        run(&mut r, t, 0, &mut nack);
        let mut released = Vec::new();
        for s in 2..=(HOLD as u16 + 2) {
            released.extend(run(&mut r, t, s, &mut nack));
        }
        assert_eq!(released.len(), HOLD + 1, "given up when over HOLD");
        assert!(r.held.is_empty());
        // Junk sequence numbers far ahead do not grow it either.
        for s in (1000..60_000).step_by(997) {
            run(&mut r, t, s as u16, &mut nack);
            assert!(r.held.len() <= HOLD);
        }
        assert!(nack.len() < 10_000);
    }
}
