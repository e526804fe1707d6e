//! What enforces the protective limits ([`Limits`], defined in
//! `gateway_ring::limits` with their defaults and reasons): the process-wide
//! RTMP connection counter, the token bucket behind the NACK budget, and
//! each RTMP connection's memory bounds.

pub use gateway_ring::limits::Limits;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::rtmp::chunk::MediaLimits;
use crate::rtmp::hub::ConnLimits;

/// The memory bounds of one RTMP connection under `limits`.
pub fn rtmp_conn(limits: &Limits) -> ConnLimits {
    ConnLimits {
        media: MediaLimits {
            max_message: limits.rtmp_max_message,
            max_pending: limits.rtmp_max_pending,
        },
        max_unread: limits.rtmp_max_unread,
    }
}

/// RTMP publishers with B-frames one shard re-encodes at once: the limit,
/// when the `reencode` feature is built in; else none.
pub fn bframe_reencodes(limits: &Limits) -> u32 {
    if cfg!(feature = "reencode") {
        limits.bframe_reencodes
    } else {
        0
    }
}

/// Slots of the per-IP connection table: IPs share a slot only when their
/// hashes collide (then they share one limit), which at 64 Ki slots takes
/// thousands of distinct client IPs at once.
const IP_SLOTS: usize = 1 << 16;

/// RTMP connections held by the whole process, in all and per client IP,
/// shared by every shard: the kernel spreads one client's connections over
/// the shards (`SO_REUSEPORT`), so a per-shard count would not bound it.
/// Touched at accept and close only, never on the media path; atomics, no lock.
pub struct ConnCounter {
    total: AtomicU32,
    per_ip: Box<[AtomicU32]>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    PerIp,
}

impl Default for ConnCounter {
    fn default() -> Self {
        ConnCounter {
            total: AtomicU32::new(0),
            per_ip: (0..IP_SLOTS).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

fn ip_slot(ip: Ipv4Addr) -> usize {
    // FNV-1a over the four octets.
    let mut h: u32 = 0x811c_9dc5;
    for b in ip.octets() {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    (h as usize) % IP_SLOTS
}

/// Adds one to `c` unless it is at `max`.
fn take(c: &AtomicU32, max: u32) -> bool {
    c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
        (n < max).then_some(n + 1)
    })
    .is_ok()
}

impl ConnCounter {
    /// Counts a new connection from `ip` in, or says which limit refuses it.
    /// Every `Ok` must be matched by one [`Self::release`].
    pub fn admit(&self, ip: Ipv4Addr, limits: &Limits) -> Result<(), Refused> {
        if !take(&self.total, limits.rtmp_max_conns) {
            return Err(Refused::Total);
        }
        if !take(&self.per_ip[ip_slot(ip)], limits.rtmp_max_conns_per_ip) {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::PerIp);
        }
        Ok(())
    }

    /// A connection admitted from `ip` closed.
    pub fn release(&self, ip: Ipv4Addr) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        self.per_ip[ip_slot(ip)].fetch_sub(1, Ordering::AcqRel);
    }

    pub fn total(&self) -> u32 {
        self.total.load(Ordering::Acquire)
    }
}

/// A token bucket on virtual time: `rate` tokens a second, at most `rate`
/// held (so the burst is one second's worth).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    tokens: f64,
    last: Option<std::time::Instant>,
}

impl Budget {
    pub const fn new() -> Budget {
        Budget {
            tokens: 0.0,
            last: None,
        }
    }

    /// Takes one token at `now`, if there is one.
    pub fn take(&mut self, now: std::time::Instant, rate: u32) -> bool {
        let rate = rate as f64;
        self.tokens = match self.last {
            None => rate,
            Some(t) => {
                (self.tokens + now.saturating_duration_since(t).as_secs_f64() * rate).min(rate)
            }
        };
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn connections_are_bounded_in_all_and_per_ip() {
        let limits = Limits {
            rtmp_max_conns: 3,
            rtmp_max_conns_per_ip: 2,
            ..Limits::default()
        };
        let c = ConnCounter::default();
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(c.admit(a, &limits), Ok(()));
        assert_eq!(c.admit(a, &limits), Ok(()));
        assert_eq!(c.admit(a, &limits), Err(Refused::PerIp));
        assert_eq!(c.admit(b, &limits), Ok(()));
        assert_eq!(c.admit(b, &limits), Err(Refused::Total));
        assert_eq!(c.total(), 3, "refusals leave no count behind");
        c.release(a);
        assert_eq!(c.admit(b, &limits), Ok(()));
        assert_eq!(c.admit(a, &limits), Err(Refused::Total));
    }

    #[test]
    fn a_budget_refills_at_its_rate_up_to_one_second() {
        let t0 = Instant::now();
        let mut b = Budget::new();
        let taken = (0..1000).filter(|_| b.take(t0, 100)).count();
        assert_eq!(taken, 100, "the burst is one second's worth");
        assert!(!b.take(t0, 100));
        let t1 = t0 + Duration::from_millis(50);
        let taken = (0..1000).filter(|_| b.take(t1, 100)).count();
        assert_eq!(taken, 5, "50 ms at 100/s");
        let t2 = t1 + Duration::from_secs(60);
        let taken = (0..1000).filter(|_| b.take(t2, 100)).count();
        assert_eq!(taken, 100, "never more than the burst");
    }
}
