//! Packet index estimation and the replay window.
//!
//! RFC 3711 §3.3.1: "the receiver ... must estimate the index i of the packet
//! ... i = 2^16 * v + SEQ, where v is chosen from the set { ROC-1, ROC, ROC+1 }
//! such that i is closest (in modulo 2^16 sense) to the value 2^16 * ROC + s_l".
//! RFC 3711 §3.3.2: replay protection with a sliding window; the window is
//! updated only after the packet authenticated.

/// Window width: packets older than the highest index by this many are rejected.
pub const WINDOW: u64 = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("replayed or too old")]
pub struct Replayed;

/// Receive-side state of one SRTP stream (one SSRC).
#[derive(Debug, Clone, Default)]
pub struct RtpIndex {
    started: bool,
    roc: u32,
    /// s_l: the highest sequence number received.
    s_l: u16,
    window: Window,
}

impl RtpIndex {
    /// RFC 3711 Appendix A: the 48-bit index this sequence number most likely has.
    pub fn estimate(&self, seq: u16) -> u64 {
        if !self.started {
            return seq as u64;
        }
        let v = if self.s_l < 32768 {
            if seq as i32 - self.s_l as i32 > 32768 {
                self.roc.wrapping_sub(1)
            } else {
                self.roc
            }
        } else if (self.s_l as i32 - 32768) > seq as i32 {
            self.roc.wrapping_add(1)
        } else {
            self.roc
        };
        ((v as u64) << 16) | seq as u64
    }

    pub fn check(&self, index: u64) -> Result<(), Replayed> {
        if self.started {
            self.window.check(index)
        } else {
            Ok(())
        }
    }

    /// Call after the packet with `index` authenticated.
    pub fn accept(&mut self, index: u64) {
        let roc = (index >> 16) as u32;
        let seq = index as u16;
        if !self.started {
            self.started = true;
            self.roc = roc;
            self.s_l = seq;
        } else if roc == self.roc.wrapping_add(1) || (roc == self.roc && seq > self.s_l) {
            self.roc = roc;
            self.s_l = seq;
        }
        self.window.accept(index);
    }
}

/// A 128-entry sliding window over 64-bit indices (RFC 3711 §3.3.2, RFC 4303 §A.1).
#[derive(Debug, Clone, Default)]
pub struct Window {
    top: u64,
    bits: u128,
    any: bool,
}

impl Window {
    pub fn check(&self, index: u64) -> Result<(), Replayed> {
        if !self.any || index > self.top {
            return Ok(());
        }
        let age = self.top - index;
        if age >= WINDOW || self.bits & (1u128 << age) != 0 {
            return Err(Replayed);
        }
        Ok(())
    }

    pub fn accept(&mut self, index: u64) {
        if !self.any {
            self.any = true;
            self.top = index;
            self.bits = 1;
        } else if index > self.top {
            let shift = index - self.top;
            self.bits = if shift >= WINDOW {
                0
            } else {
                self.bits << shift
            };
            self.bits |= 1;
            self.top = index;
        } else {
            let age = self.top - index;
            if age < WINDOW {
                self.bits |= 1u128 << age;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_rejects_duplicates_and_old_packets() {
        let mut w = Window::default();
        w.accept(1000);
        assert_eq!(w.check(1000), Err(Replayed));
        assert!(w.check(999).is_ok());
        w.accept(999);
        assert_eq!(w.check(999), Err(Replayed));
        w.accept(1200);
        assert_eq!(w.check(1000), Err(Replayed)); // 200 behind: outside the window
        assert!(w.check(1150).is_ok());
        assert!(w.check(1201).is_ok());
    }

    #[test]
    fn index_follows_sequence_wrap_and_reordering() {
        let mut s = RtpIndex::default();
        for seq in [65530u16, 65533, 65535] {
            let i = s.estimate(seq);
            assert_eq!(i, seq as u64);
            s.accept(i);
        }
        // Wraps: ROC becomes 1.
        let i = s.estimate(2);
        assert_eq!(i, (1 << 16) | 2);
        s.accept(i);
        // A late packet from before the wrap still maps to ROC 0.
        assert_eq!(s.estimate(65534), 65534);
        assert!(s.check(65534).is_ok());
        assert_eq!(s.check((1 << 16) | 2), Err(Replayed));
    }
}
