//! What enforces the protective limits ([`Limits`], defined in
//! `gateway_ring::limits` with their defaults and reasons): the process-wide
//! RTMP connection counter and the token bucket behind the NACK budget
//! (each RTMP connection's memory bounds are `ConnLimits::from(&Limits)`,
//! beside the connection).

pub use gateway_ring::limits::Limits;

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

/// RTMP publishers with B-frames one shard re-encodes at once: the limit,
/// when the `reencode` feature is built in; else none.
pub fn bframe_reencodes(limits: &Limits) -> u32 {
    if cfg!(feature = "reencode") {
        limits.bframe_reencodes
    } else {
        0
    }
}

/// VP8, VP9 and AV1 publishers one shard transcodes to H264 for RTMP
/// players: `--video-transcodes`, or none without the `reencode` feature.
pub fn video_transcodes(limits: &Limits) -> u32 {
    if cfg!(feature = "reencode") {
        limits.video_transcodes
    } else {
        0
    }
}

/// Slots of the per-IP connection table: IPs share a slot only when their
/// hashes collide (then they share one limit), which at 64 Ki slots takes
/// thousands of distinct client IPs at once.
const IP_SLOTS: usize = 1 << 16;

/// RTMP and HTTP-FLV connections held by the whole process: in all, and
/// per client IP those that do not play (in set-up, or publishing), shared
/// by every shard: the kernel spreads one client's connections over the
/// shards (`SO_REUSEPORT`), so a per-shard count would not bound it.
///
/// Why players leave the per-IP count: what one address may make the
/// server hold before it is authorized (a slow-handshake attack) must stay
/// bounded, but an audience behind a carrier-grade NAT, or a school, is
/// one address with thousands of players. A player is bounded by the total,
/// the slow-player rule and its queue's memory bound instead.
/// Touched at accept, play and close only, never on the media path;
/// atomics, no lock.
pub struct ConnCounter {
    total: AtomicU32,
    per_ip: Box<[AtomicU32]>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    Total,
    NonplayingPerIp,
}

/// What [`ConnCounter::admit`] counted for one connection; given back by
/// [`ConnCounter::release`] (it moves with the connection on a hand-over).
/// Not `Copy`: one connection, one release.
#[derive(Debug, PartialEq, Eq)]
pub struct Admission {
    ip: Ipv4Addr,
    /// Still counted against its IP (not playing yet).
    per_ip: bool,
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

impl Admission {
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// Whether it still counts against its IP (it does not play yet).
    pub fn counts_per_ip(&self) -> bool {
        self.per_ip
    }
}

impl ConnCounter {
    /// Counts a new connection from `ip` in (in all, and against its IP
    /// until it plays), or says which limit refuses it.
    pub fn admit(&self, ip: Ipv4Addr, limits: &Limits) -> Result<Admission, Refused> {
        if !take(&self.total, limits.rtmp_max_conns) {
            return Err(Refused::Total);
        }
        if !take(&self.per_ip[ip_slot(ip)], limits.rtmp_max_nonplaying_per_ip) {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::NonplayingPerIp);
        }
        Ok(Admission { ip, per_ip: true })
    }

    /// The connection plays: it no longer counts against its IP. A player
    /// never publishes on the same connection, so this happens once.
    pub fn playing(&self, a: &mut Admission) {
        if std::mem::take(&mut a.per_ip) {
            self.per_ip[ip_slot(a.ip)].fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// A connection admitted as `a` closed.
    pub fn release(&self, a: Admission) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        if a.per_ip {
            self.per_ip[ip_slot(a.ip)].fetch_sub(1, Ordering::AcqRel);
        }
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
    fn connections_are_bounded_in_all_and_per_ip_until_they_play() {
        let limits = Limits {
            rtmp_max_conns: 4,
            rtmp_max_nonplaying_per_ip: 2,
            ..Limits::default()
        };
        let c = ConnCounter::default();
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut a1 = c.admit(a, &limits).unwrap();
        let a2 = c.admit(a, &limits).unwrap();
        assert_eq!(c.admit(a, &limits), Err(Refused::NonplayingPerIp));
        // One of them plays: its address may set up another connection.
        c.playing(&mut a1);
        c.playing(&mut a1);
        let a3 = c.admit(a, &limits).unwrap();
        assert_eq!(c.admit(a, &limits), Err(Refused::NonplayingPerIp));
        let b1 = c.admit(b, &limits).unwrap();
        assert_eq!(c.admit(b, &limits), Err(Refused::Total));
        assert_eq!(c.total(), 4, "refusals leave no count behind");
        // The player closing frees a place in all, not against its address.
        c.release(a1);
        assert_eq!(c.admit(a, &limits), Err(Refused::NonplayingPerIp));
        let b2 = c.admit(b, &limits).unwrap();
        for x in [a2, a3, b1, b2] {
            c.release(x);
        }
        assert_eq!(c.total(), 0);
        assert!(c.admit(a, &limits).is_ok() && c.admit(a, &limits).is_ok());
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
