//! The hub's deadlines: what happens with no packet to make it happen.
//! A bridge's reorder gap re-NACKed and given up on and its audio placed
//! by arrival after [`ALIGN_WAIT`](super::ALIGN_WAIT) (`rtp_to_flv`), a
//! player behind for [`BEHIND_TIMEOUT`](crate::rtmp::stream::BEHIND_TIMEOUT)
//! closed (`streams`), idle programs looking at the publishers again
//! (`rtp_to_flv`).
//!
//! ```text
//! packet path: a bridge's or a player's deadline appeared or moved earlier ─▶ Deadlines::schedule
//! Hub::poll_timeout  = the earliest of Deadlines (the top of a heap) and the idle programs' look
//! Hub::handle_timeout(now): each timer due ─▶ its owner's handle_timeout(now) ─▶ outputs, as the
//!                           packet path makes them; then its next deadline, if any, scheduled
//! ```
//!
//! `poll_timeout` is called at every turn of the shard's loop, and a shard
//! may hold thousands of players and streams: it reads the top of a heap,
//! never scans them. Each timer (a bridge, a player) has at most one live
//! entry, its earliest deadline known; an entry replaced by an earlier one
//! is stale and skipped when it comes up. A deadline that went away (a gap
//! filled, a player that caught up) is not unscheduled: its entry fires
//! once for nothing, and the owner, asked, has nothing due.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use gateway_ring::SessionId;

use super::rtp_to_flv::Bridged;
use super::Hub;
use crate::media::Source;
use crate::output::Outputs;
use crate::participants::{ParticipantId, Participants};

#[cfg(test)]
thread_local! {
    /// Test-only: the next timer's handling panics.
    pub(super) static PANIC_IN_NEXT_TIMER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What [`Hub::handle_timeout`] leaves the core to do.
#[derive(Debug, Default)]
pub struct TimerResults {
    /// For each bridge whose reorder buffer let go of packets, its
    /// publisher and what to tell or count it for (as
    /// [`Hub::on_rtp_video`] returns).
    pub bridged: Vec<(Source, Bridged)>,
    /// Publishing sessions whose bridge's timer panicked: end them.
    pub failed: Vec<SessionId>,
}

/// Something of the hub that has deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Timer {
    /// A participant's bridge RTP → FLV (reorder gap, audio alignment).
    Bridge(ParticipantId),
    /// Connection `u32` as a player (behind for too long).
    Player(u32),
}

/// The earliest deadline of each [`Timer`], earliest first: a min-heap
/// whose top is always live (stale entries under it are dropped as they
/// come up), so [`Self::next`] is exact and O(1).
#[derive(Default)]
pub(super) struct Deadlines {
    heap: BinaryHeap<Reverse<(Instant, Timer)>>,
    /// Each timer's live entry; a heap entry that differs is stale.
    live: HashMap<Timer, Instant>,
}

impl Deadlines {
    /// `timer` has something due at `at`. Kept if earlier than the one it
    /// has; a later one is asked for again when the earlier one fires.
    pub(super) fn schedule(&mut self, timer: Timer, at: Instant) {
        if self.live.get(&timer).is_some_and(|&t| t <= at) {
            return;
        }
        self.live.insert(timer, at);
        // The entry it replaces is later, so under this one: the top stays live.
        self.heap.push(Reverse((at, timer)));
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _))| *at)
    }

    /// A timer due at `now`, taken out (its owner schedules its next one).
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let &Reverse((at, timer)) = self.heap.peek()?;
        if at > now {
            return None;
        }
        self.heap.pop();
        self.live.remove(&timer);
        self.drop_stale();
        Some(timer)
    }

    /// Pops stale entries off the top.
    fn drop_stale(&mut self) {
        while let Some(&Reverse((at, timer))) = self.heap.peek() {
            if self.live.get(&timer) == Some(&at) {
                return;
            }
            self.heap.pop();
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }
}

impl Hub {
    /// The earliest instant [`Self::handle_timeout`] has something to do;
    /// `None` when nothing is pending. O(1): see the module doc.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.next_idle_choose.filter(|_| self.idle_choose_wanted);
        match (self.deadlines.next(), idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires what is due at `now`: RTMP actions into `actions`, the rest
    /// into the hub's own queue, as the packet path does. For each bridge
    /// whose reorder buffer let go of packets, its publisher's ingest and
    /// what to tell or count it for (as [`Self::on_rtp_video`] returns).
    ///
    /// Each timer runs inside a panic boundary of its own, as each
    /// session's input does in the shard: a bug reached through one
    /// bridge's or player's state costs that bridge (its publisher's
    /// ingest is in [`TimerResults::failed`], to be ended) or that player
    /// (closed), and what it queued is discarded; never the shard.
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        parts: &Participants,
        actions: &mut Outputs,
    ) -> TimerResults {
        if self.idle_choose_wanted && self.next_idle_choose.is_none_or(|t| now >= t) {
            self.choose_idle(now, parts);
        }
        let mut results = TimerResults::default();
        let mut fired = Vec::new();
        while let Some(timer) = self.deadlines.pop_due(now) {
            let marks = (actions.mark(), self.out.mark());
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match timer {
                #[cfg(test)]
                _ if PANIC_IN_NEXT_TIMER.take() => panic!("test trigger: a bug in a timer"),
                Timer::Bridge(pid) => self.bridge_timeout(now, pid, actions),
                Timer::Player(idx) => {
                    self.player_timeout(now, idx, actions);
                    None
                }
            }));
            match ran {
                Ok(bridged) => results.bridged.extend(bridged),
                Err(_) => {
                    actions.discard_since(marks.0);
                    self.out.discard_since(marks.1);
                    self.timer_failed(timer, actions, &mut results);
                    continue;
                }
            }
            fired.push(timer);
        }
        // Rescheduled once all due ones ran: an owner that still had
        // something due could not keep this loop turning.
        for timer in fired {
            let at = self.deadline_of(timer);
            self.schedule(timer, at);
        }
        results
    }

    /// A timer's handling panicked: its owner goes (a bridge is dropped and
    /// its publisher's ingest ended by the core; a player is closed), so
    /// the same state cannot panic again at the next turn.
    fn timer_failed(&mut self, timer: Timer, actions: &mut Outputs, results: &mut TimerResults) {
        tracing::error!(?timer, "a hub timer panicked; its bridge or player goes");
        match timer {
            Timer::Bridge(pid) => {
                let bridge = self.streams.get_mut(&pid).and_then(|s| s.bridge.take());
                let source = bridge.and_then(|b| b.video.map(|a| a.source.0));
                if let Some(session) = source.and_then(Source::session) {
                    results.failed.push(session);
                }
            }
            Timer::Player(idx) => {
                if let Some(st) = self.conns.get_mut(&idx) {
                    st.slow = true;
                }
                actions.rtmp(crate::output::Action::Close {
                    idx,
                    why: "internal error".into(),
                    flush: false,
                });
            }
        }
    }

    /// `timer`'s deadline as its owner has it now.
    fn deadline_of(&self, timer: Timer) -> Option<Instant> {
        match timer {
            Timer::Bridge(pid) => self.streams.get(&pid)?.bridge.as_ref()?.poll_timeout(),
            Timer::Player(idx) => {
                let st = self.conns.get(&idx)?;
                // Closing already: nothing more to fire.
                (!st.slow).then(|| st.queue.poll_timeout())?
            }
        }
    }

    /// `timer` has `at` due (if any): on the heap, if earlier than what it has.
    pub(super) fn schedule(&mut self, timer: Timer, at: Option<Instant>) {
        if let Some(at) = at {
            self.deadlines.schedule(timer, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The earliest live deadline is on top; a later one for the same
    /// timer is kept back, a replaced one never fires, and what pops is
    /// due.
    #[test]
    fn deadlines_fire_earliest_first_once_each() {
        let t = Instant::now();
        let ms = |m: u64| t + Duration::from_millis(m);
        let mut d = Deadlines::default();
        assert_eq!((d.next(), d.pop_due(ms(1_000))), (None, None));
        d.schedule(Timer::Player(1), ms(50));
        d.schedule(Timer::Bridge(ParticipantId::new(7)), ms(30));
        d.schedule(Timer::Bridge(ParticipantId::new(7)), ms(40)); // later: kept back
        d.schedule(Timer::Player(1), ms(10)); // earlier: replaces 50
        assert_eq!(d.next(), Some(ms(10)));
        assert_eq!(d.pop_due(ms(9)), None, "not due yet");
        assert_eq!(d.pop_due(ms(10)), Some(Timer::Player(1)));
        assert_eq!(
            d.next(),
            Some(ms(30)),
            "the replaced 50 is gone from the top"
        );
        assert_eq!(
            d.pop_due(ms(100)),
            Some(Timer::Bridge(ParticipantId::new(7)))
        );
        assert_eq!(d.pop_due(ms(100)), None, "Player(1) at 50 was replaced");
        assert_eq!((d.next(), d.len()), (None, 0));
    }
}
