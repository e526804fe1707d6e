//! One audio mix of a room: the decoded PCM of several participants summed
//! into one stream, for a program's RTMP players (`live/ROOM?participant=ME`
//! hears everyone but ME). Runs on the transcoder thread, fed by the
//! decoders there; sans-IO and clock-free.
//!
//! ```text
//! push(pid, pcm) ─▶ per-participant queue ─┐
//! push(pid, pcm) ─▶ per-participant queue ─┼─▶ pull(): sum one frame ─▶ limiter ─▶ AAC encoder
//! push(pid, pcm) ─▶ per-participant queue ─┘
//! ```
//!
//! The mix has no clock of its own: its participants' packets drive it. A
//! frame is mixed when every participant who is sending has a frame queued,
//! or when one of them has waited [`MAX_WAIT`] for the others (late or lost
//! packets, a clock that runs slow): then the late ones add what they have.
//! Who stops sending stops holding the mix back after [`STARVED`] frames,
//! and is mixed again once a whole frame of it has arrived. Each queue is
//! bounded by [`MAX_QUEUE`] (a publisher whose clock runs fast, or a burst
//! after a stall), dropping its oldest samples, so the mix never lags.
//!
//! The sum of loud voices goes over full scale; a limiter (instant attack,
//! slow release, gain ramped across each frame so it does not click) keeps
//! the peaks under it instead of clipping them into distortion.

use std::collections::VecDeque;

use crate::participants::ParticipantId;

/// Interleaved channels of the mix (48 kHz stereo, as the codecs use).
pub const CHANNELS: usize = 2;
/// Samples per channel in one mixed frame: one AAC-LC frame.
pub const FRAME: usize = 1024;
/// Longest a queued frame waits for the others (100 ms at 48 kHz).
pub const MAX_WAIT: usize = 4_800;
/// Most samples per channel queued for one participant (200 ms).
pub const MAX_QUEUE: usize = 9_600;
/// Frames a participant may miss before the mix stops waiting for it.
pub const STARVED: u32 = 3;
/// Peak the limiter holds the mix under (about -0.1 dBFS).
const CEILING: f32 = 0.99;
/// Share of the way back to unity gain per frame (release over ~0.3 s).
const RELEASE: f32 = 0.07;

struct Source {
    pid: ParticipantId,
    /// Interleaved samples, oldest first.
    pcm: VecDeque<f32>,
    /// Frames mixed in a row without a whole frame of it.
    starved: u32,
}

impl Source {
    fn frames(&self) -> usize {
        self.pcm.len() / CHANNELS
    }

    fn live(&self) -> bool {
        self.starved < STARVED
    }
}

/// The mix of one program (see the module doc).
pub struct Mixer {
    sources: Vec<Source>,
    /// The limiter's gain at the end of the last frame.
    gain: f32,
}

impl Default for Mixer {
    fn default() -> Self {
        Mixer {
            sources: Vec::new(),
            gain: 1.0,
        }
    }
}

impl Mixer {
    /// Queues interleaved stereo samples of participant `pid`.
    pub fn push(&mut self, pid: ParticipantId, pcm: &[f32]) {
        let i = match self.sources.iter().position(|s| s.pid == pid) {
            Some(i) => i,
            None => {
                self.sources.push(Source {
                    pid,
                    pcm: VecDeque::with_capacity(MAX_QUEUE * CHANNELS),
                    starved: 0,
                });
                self.sources.len() - 1
            }
        };
        let s = &mut self.sources[i];
        s.pcm.extend(pcm.iter().copied());
        let over = s.pcm.len().saturating_sub(MAX_QUEUE * CHANNELS);
        s.pcm.drain(..over);
    }

    /// Forgets participant `pid` (it left, or its publisher changed).
    pub fn remove(&mut self, pid: ParticipantId) {
        self.sources.retain(|s| s.pid != pid);
    }

    /// Participants in the mix (for tests and logs).
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// Whether a frame should be mixed now (see the module doc).
    fn ready(&self) -> bool {
        let most = self.sources.iter().map(Source::frames).max().unwrap_or(0);
        if most >= MAX_WAIT {
            return true;
        }
        most >= FRAME
            && self
                .sources
                .iter()
                .filter(|s| s.live())
                .all(|s| s.frames() >= FRAME)
    }

    /// Mixes the next frame into `out` (`FRAME * CHANNELS` samples, in
    /// [-1, 1]); false when it is not due yet.
    pub fn pull(&mut self, out: &mut [f32]) -> bool {
        debug_assert_eq!(out.len(), FRAME * CHANNELS);
        if !self.ready() {
            return false;
        }
        out.fill(0.0);
        for s in &mut self.sources {
            let whole = s.frames() >= FRAME;
            // A participant back from silence joins with a whole frame, so
            // it is not mixed as scraps with gaps between them.
            if !whole && !s.live() {
                s.starved = s.starved.saturating_add(1);
                continue;
            }
            let n = s.pcm.len().min(out.len());
            for (o, x) in out.iter_mut().zip(s.pcm.drain(..n)) {
                *o += x;
            }
            s.starved = if whole { 0 } else { s.starved + 1 };
        }
        self.limit(out);
        true
    }

    /// Keeps the frame's peak under [`CEILING`]: the gain drops at once to
    /// what this frame needs and comes back slowly, ramped sample by sample.
    fn limit(&mut self, out: &mut [f32]) {
        let peak = out.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let release = self.gain + (1.0 - self.gain) * RELEASE;
        let need = if peak > 0.0 {
            release.min(CEILING / peak)
        } else {
            release
        }
        .min(1.0);
        let (from, to) = (self.gain, need);
        let frames = (out.len() / CHANNELS) as f32;
        for (i, pair) in out.chunks_exact_mut(CHANNELS).enumerate() {
            // Attack within the frame: never above what its peak allows.
            let g = if to < from {
                to
            } else {
                from + (to - from) * (i as f32 / frames)
            };
            for x in pair {
                *x = (*x * g).clamp(-1.0, 1.0);
            }
        }
        self.gain = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(hz: f32, amp: f32, start: usize, frames: usize) -> Vec<f32> {
        (start..start + frames)
            .flat_map(|i| {
                let x = (i as f32 * hz * std::f32::consts::TAU / 48_000.0).sin() * amp;
                [x, x]
            })
            .collect()
    }

    fn pull_all(m: &mut Mixer) -> Vec<Vec<f32>> {
        let mut frames = Vec::new();
        let mut out = vec![0.0; FRAME * CHANNELS];
        while m.pull(&mut out) {
            frames.push(out.clone());
        }
        frames
    }

    /// Mixes only when everyone sending has a frame; the sum is the
    /// samples' sum while it stays under full scale.
    #[test]
    fn waits_for_everyone_then_sums() {
        let mut m = Mixer::default();
        m.push(ParticipantId::new(1), &tone(440.0, 0.25, 0, 960));
        m.push(ParticipantId::new(2), &tone(880.0, 0.25, 0, 960));
        assert!(pull_all(&mut m).is_empty(), "960 < 1024 samples each");
        m.push(ParticipantId::new(1), &tone(440.0, 0.25, 960, 960));
        assert!(pull_all(&mut m).is_empty(), "2 has no whole frame yet");
        m.push(ParticipantId::new(2), &tone(880.0, 0.25, 960, 960));
        let frames = pull_all(&mut m);
        assert_eq!(frames.len(), 1);
        let want: Vec<f32> = tone(440.0, 0.25, 0, FRAME)
            .iter()
            .zip(tone(880.0, 0.25, 0, FRAME))
            .map(|(a, b)| a + b)
            .collect();
        let err = frames[0]
            .iter()
            .zip(&want)
            .fold(0.0f32, |e, (a, b)| e.max((a - b).abs()));
        assert!(err < 1e-6, "{err}");
    }

    /// One participant that stops sending holds the mix back for at most
    /// MAX_WAIT, then not at all; it is mixed again when it comes back.
    #[test]
    fn a_silent_participant_stops_holding_the_mix() {
        let mut m = Mixer::default();
        m.push(ParticipantId::new(1), &tone(440.0, 0.2, 0, 2048));
        m.push(ParticipantId::new(2), &tone(880.0, 0.2, 0, 2048));
        assert_eq!(pull_all(&mut m).len(), 2);
        // 2 goes quiet: 1 alone is mixed once it has waited MAX_WAIT.
        let mut sent = 2048;
        let mut mixed = 0;
        for _ in 0..20 {
            m.push(ParticipantId::new(1), &tone(440.0, 0.2, sent, 960));
            sent += 960;
            mixed += pull_all(&mut m).len();
        }
        let queued = sent - 2048 - mixed * FRAME;
        assert!(queued < FRAME, "no lag left behind: {queued} samples");
        assert!(mixed >= 12, "{mixed} frames of 1 alone");
        // 2 comes back with a whole frame and is in the next one.
        m.push(ParticipantId::new(2), &vec![0.5; FRAME * CHANNELS]);
        m.push(ParticipantId::new(1), &tone(440.0, 0.2, sent, FRAME));
        let frames = pull_all(&mut m);
        let last = frames.last().expect("a frame");
        assert!(last.iter().all(|&x| x > 0.25), "2's 0.5 is in it");
    }

    /// Loud voices together stay under full scale without hard clipping,
    /// and the gain comes back once they are quiet.
    #[test]
    fn the_limiter_keeps_the_sum_under_full_scale() {
        let mut m = Mixer::default();
        for p in 1..=4 {
            m.push(
                ParticipantId::new(p),
                &tone(300.0 + p as f32 * 110.0, 0.9, 0, 8 * FRAME),
            );
        }
        let frames = pull_all(&mut m);
        assert_eq!(frames.len(), 8);
        for f in &frames {
            let peak = f.iter().fold(0.0f32, |a, x| a.max(x.abs()));
            assert!(peak <= CEILING + 1e-6, "{peak}");
            assert!(peak > 0.5, "still loud: {peak}");
        }
        let mut frames = Vec::new();
        for i in 0..100 {
            for p in 1..=4 {
                m.push(ParticipantId::new(p), &tone(440.0, 0.01, i * FRAME, FRAME));
            }
            frames.extend(pull_all(&mut m));
        }
        assert!(m.gain > 0.99, "gain back to {}", m.gain);
        let last = frames.last().unwrap();
        let peak = last.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        assert!(peak > 0.02, "quiet voices at their level: {peak}");
    }

    /// A participant far ahead (a burst, a fast clock) is trimmed to
    /// MAX_QUEUE; a removed one is no longer mixed.
    #[test]
    fn queues_are_bounded_and_leavers_forgotten() {
        let mut m = Mixer::default();
        m.push(ParticipantId::new(7), &vec![0.1; 20 * FRAME * CHANNELS]);
        assert!(m.sources[0].frames() <= MAX_QUEUE);
        m.push(ParticipantId::new(8), &vec![0.1; FRAME * CHANNELS]);
        assert_eq!(m.len(), 2);
        m.remove(ParticipantId::new(7));
        assert_eq!(m.len(), 1);
        assert_eq!(pull_all(&mut m).len(), 1);
        assert!(m.is_empty() || m.sources[0].frames() == 0);
    }
}
