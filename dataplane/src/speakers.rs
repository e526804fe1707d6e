//! Who is speaking in each room (sans-IO): RFC 6464 audio levels of the
//! participants' audio, smoothed, and one active speaker per room that
//! changes only when someone else is clearly louder for a while.
//!
//! ```text
//! audio packet (level: -dBov, 0 loudest, 127 silence) ─▶ on_level(now, room, pid, level)
//!     loudness = 127 - level, smoothed per participant (a 20 ms packet weighs 1/8)
//!     every EVAL_EVERY: the loudest above SPEECH, if it beats the current
//!     speaker by MARGIN and the current one held for HOLD ─▶ Some(new speaker)
//! ```
//!
//! No allocation per packet once a room's participants are known; time is
//! an argument.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use gateway_ring::RoomId;

use crate::participants::ParticipantId;

/// Loudness (127 - level) above which a participant counts as speaking:
/// -50 dBov and louder. A quiet room has no speaker change.
pub const SPEECH: f32 = 77.0;
/// How much louder (dB) a challenger must be than the current speaker.
pub const MARGIN: f32 = 6.0;
/// The shortest time a speaker keeps the floor (no flapping).
pub const HOLD: Duration = Duration::from_millis(1500);
/// How often a room's speaker is reconsidered.
pub const EVAL_EVERY: Duration = Duration::from_millis(100);
/// A participant with no level for this long is not a candidate.
pub const STALE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Room {
    loudness: HashMap<ParticipantId, (f32, Instant)>,
    speaker: Option<(ParticipantId, Instant)>,
    next_eval: Option<Instant>,
}

#[derive(Default)]
pub struct Speakers {
    rooms: HashMap<RoomId, Room>,
}

impl Speakers {
    /// One audio level of participant `pid` in `room`; the room's new
    /// active speaker, if it changed.
    pub fn on_level(
        &mut self,
        now: Instant,
        room: RoomId,
        pid: ParticipantId,
        level: u8,
    ) -> Option<ParticipantId> {
        let r = self.rooms.entry(room).or_default();
        let loud = 127.0 - level.min(127) as f32;
        let e = r.loudness.entry(pid).or_insert((0.0, now));
        e.0 += (loud - e.0) / 8.0;
        e.1 = now;
        if r.next_eval.is_some_and(|t| now < t) {
            return None;
        }
        r.next_eval = Some(now + EVAL_EVERY);
        let fresh = |(_, at): &(f32, Instant)| now.saturating_duration_since(*at) < STALE;
        let (best, best_loud) = r
            .loudness
            .iter()
            .filter(|(_, v)| fresh(v))
            .map(|(&p, &(l, _))| (p, l))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        if best_loud < SPEECH {
            return None;
        }
        match r.speaker {
            Some((current, _)) if current == best => None,
            Some((current, since)) => {
                let current_loud = r
                    .loudness
                    .get(&current)
                    .filter(|v| fresh(v))
                    .map_or(0.0, |v| v.0);
                let held = now.saturating_duration_since(since) >= HOLD;
                if held && best_loud >= current_loud + MARGIN {
                    r.speaker = Some((best, now));
                    Some(best)
                } else {
                    None
                }
            }
            None => {
                r.speaker = Some((best, now));
                Some(best)
            }
        }
    }

    /// The room's active speaker.
    pub fn speaker(&self, room: RoomId) -> Option<ParticipantId> {
        self.rooms.get(&room)?.speaker.map(|(p, _)| p)
    }

    /// A participant stopped publishing: no longer a candidate.
    pub fn forget(&mut self, room: RoomId, pid: ParticipantId) {
        if let Some(r) = self.rooms.get_mut(&room) {
            r.loudness.remove(&pid);
            if r.speaker.is_some_and(|(p, _)| p == pid) {
                r.speaker = None;
            }
        }
    }

    pub fn remove_room(&mut self, room: RoomId) {
        self.rooms.remove(&room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOM: RoomId = RoomId::new(1);
    const P1: ParticipantId = ParticipantId::new(1);
    const P2: ParticipantId = ParticipantId::new(2);

    /// 50 levels a second (20 ms packets) from each of `who` for `ms`.
    fn talk(
        s: &mut Speakers,
        t: &mut Instant,
        who: &[(ParticipantId, u8)],
        ms: u64,
    ) -> Vec<ParticipantId> {
        let mut changes = Vec::new();
        for _ in 0..ms / 20 {
            *t += Duration::from_millis(20);
            for &(pid, level) in who {
                changes.extend(s.on_level(*t, ROOM, pid, level));
            }
        }
        changes
    }

    #[test]
    fn the_loudest_takes_the_floor_and_keeps_it_for_the_hold_time() {
        let mut s = Speakers::default();
        let mut t = Instant::now();
        // Silence (127) and murmur (-70 dBov): nobody speaks.
        assert!(talk(&mut s, &mut t, &[(P1, 127), (P2, 70)], 1000).is_empty());
        // 1 speaks at -20 dBov: the floor is 1's.
        assert_eq!(talk(&mut s, &mut t, &[(P1, 20), (P2, 70)], 1000), vec![P1]);
        // 2 talks as loud as 1: not clearly louder, 1 keeps it.
        assert!(talk(&mut s, &mut t, &[(P1, 20), (P2, 20)], 2000).is_empty());
        // 1 stops, 2 goes on: the floor passes to 2 within 0.3 s.
        assert_eq!(talk(&mut s, &mut t, &[(P1, 127), (P2, 20)], 300), vec![P2]);
        // A burst of 1 inside 2's hold time changes nothing; after it, 1
        // takes the floor back.
        assert!(talk(&mut s, &mut t, &[(P1, 5), (P2, 127)], 200).is_empty());
        assert_eq!(s.speaker(ROOM), Some(P2));
        assert_eq!(talk(&mut s, &mut t, &[(P1, 5), (P2, 127)], 2000), vec![P1]);
        s.forget(ROOM, P1);
        assert_eq!(s.speaker(ROOM), None);
    }
}
