//! The dataplane's protective limits: what one client may cost the process
//! before it is refused, throttled or closed, whether it authenticated or not.
//!
//! Each knob is a `dataplane` flag (and `MGW_*` variable, and a key of the
//! controlplane's config file, which passes it on). What a limit refuses is
//! counted: per shard in `mgw_limit_hits_total{limit}` (connections), per
//! session in `stats.drops` (packets: `oversize`, `rate_limited`, `overload`).
//!
//! | limit | default | why that number |
//! |---|---|---|
//! | `rtp::MAX_PACKET` | 1500 B | an Ethernet MTU; send slots and caches are sized on it |
//! | RTMP connections | 4096 | each costs ≥ 16 KiB of buffers plus its queue |
//! | RTMP connections per IP | 64 | a mini-program pushes 1 and plays a few; NAT'd offices share IPs |
//! | RTMP set-up timeout | 10 s | `connect` + `publish`/`play` takes < 1 s on a mobile link |
//! | RTMP idle timeout | 10 s | a live pusher sends audio every 20-40 ms; a player sends acks |
//! | RTMP message before set-up | 64 KiB (fixed) | commands only (AMF0 ≤ 8 KiB); no media before `publish` |
//! | RTMP message of a publisher | 4 MiB | a keyframe of a 20 Mbit/s stream |
//! | RTMP messages in progress | 8 MiB in all | 2 such keyframes in flight at once |
//! | RTMP unread output | 1 MiB | twice what a player may fall behind (512 KiB) before skipping |
//! | NACK answers per player | 400/s, burst 400 | a 4 Mbit/s stream at 100 % loss |
//! | transcoder queue | 2048 jobs | ~2 s of audio for 50 rooms on one shard |
//! | DTLS queue | 4096 datagrams | a thousand handshakes' flights at once |

use std::net::Ipv4Addr;

use crate::rtmp::chunk::MediaLimits;
use crate::rtmp::hub::ConnLimits;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The knobs, as set by flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub rtmp_max_conns: u32,
    pub rtmp_max_conns_per_ip: u32,
    pub rtmp_setup_timeout: Duration,
    pub rtmp_idle_timeout: Duration,
    /// Retransmissions (and NACKs passed on to the publisher) per second
    /// one WebRTC player may cause; also the burst.
    pub nack_per_s: u32,
    pub transcode_queue: usize,
    /// Longest RTMP message a publisher may send.
    pub rtmp_max_message: usize,
    /// Most bytes of RTMP messages in progress on one connection.
    pub rtmp_max_pending: usize,
    /// Most bytes queued for one RTMP connection that it has not read.
    pub rtmp_max_unread: usize,
    /// DTLS datagrams waiting for a shard's DTLS thread.
    pub dtls_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rtmp_max_conns: 4096,
            rtmp_max_conns_per_ip: 64,
            rtmp_setup_timeout: Duration::from_secs(10),
            rtmp_idle_timeout: Duration::from_secs(10),
            nack_per_s: 400,
            transcode_queue: 2048,
            rtmp_max_message: crate::rtmp::chunk::MAX_MESSAGE,
            rtmp_max_pending: crate::rtmp::chunk::MAX_PARTIAL_BYTES,
            rtmp_max_unread: crate::rtmp::stream::MAX_UNREAD,
            dtls_queue: crate::dtls::MAX_QUEUED_DATAGRAMS,
        }
    }
}

impl Limits {
    /// The memory bounds of one RTMP connection.
    pub fn rtmp_conn(&self) -> ConnLimits {
        ConnLimits {
            media: MediaLimits {
                max_message: self.rtmp_max_message,
                max_pending: self.rtmp_max_pending,
            },
            max_unread: self.rtmp_max_unread,
        }
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
    use std::time::Instant;

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
