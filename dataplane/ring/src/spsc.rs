//! A single-producer single-consumer ring of fixed-size slots in shared memory.
//!
//! `head` (next slot to read, written by the consumer) and `tail` (next slot
//! to write, written by the producer) live on separate cache lines so the two
//! sides do not false-share. Each side keeps a cached copy of the other's index
//! and reloads it only when the ring looks full (producer) or empty (consumer),
//! so the common case touches one shared line per message.
//!
//! Publication: the producer fills a slot, then stores `tail` with Release; the
//! consumer loads `tail` with Acquire before reading the slot, and releases
//! slots by storing `head` with Release after decoding them: every
//! `RELEASE_EVERY` messages and whenever it catches up. Batching both stores
//! took the two-process rate from ~11 M to 80-125 M msg/s here.
//!
//! Consequence: a consumer killed mid-batch leaves up to `RELEASE_EVERY - 1`
//! read messages unreleased, and its successor reads them again. The event
//! messages are idempotent for that reason (counters are totals, ends and
//! answers to unknown ids are ignored); a restarted dataplane discards its
//! command rings instead.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::layout::{Region, SLOTS, SLOT_SIZE};
use crate::msg::{DecodeError, Message};

/// The consumer stores `head` at least this often (and whenever it catches up).
const RELEASE_EVERY: u64 = 32;

#[repr(C)]
pub(crate) struct RingHeader {
    head: AtomicU64,
    _pad: [u8; 56],
    tail: AtomicU64,
}

pub(crate) fn ring_bytes(slots: u64, slot_size: usize) -> usize {
    128 + slots as usize * slot_size
}

/// The ring had no free slot: the consumer is behind (or gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("ring full")]
pub struct Full;

/// Writes messages into one ring. Not `Clone`: there is one producer per ring.
pub struct Producer {
    _region: Region,
    header: *const RingHeader,
    slots: *mut u8,
    tail: u64,
    cached_head: u64,
    /// Rung at each publication: set for a command ring, whose consumer (a
    /// shard) sleeps until its next deadline or this.
    bell: Option<crate::Doorbell>,
}

// A producer may move to the thread that uses it; it is not shared.
unsafe impl Send for Producer {}

impl Producer {
    pub(crate) fn new(
        region: Region,
        header: *const RingHeader,
        slots: *mut u8,
        bell: Option<crate::Doorbell>,
    ) -> Producer {
        // SAFETY: header points into the mapping that `region` keeps alive.
        let h = unsafe { &*header };
        let tail = h.tail.load(Ordering::Relaxed);
        let cached_head = h.head.load(Ordering::Acquire);
        Producer {
            _region: region,
            header,
            slots,
            tail,
            cached_head,
            bell,
        }
    }

    fn header(&self) -> &RingHeader {
        // SAFETY: see `new`.
        unsafe { &*self.header }
    }

    /// Encodes and publishes one message, or returns [`Full`].
    pub fn push<M: Message>(&mut self, m: &M) -> Result<(), Full> {
        self.push_deferred(m)?;
        self.publish();
        Ok(())
    }

    /// Encodes one message without making it visible: call [`publish`]
    /// after a batch. One `tail` store per batch instead of per message
    /// saves a cache-line transfer to the consumer per message.
    ///
    /// [`publish`]: Producer::publish
    pub fn push_deferred<M: Message>(&mut self, m: &M) -> Result<(), Full> {
        if self.tail - self.cached_head >= SLOTS {
            self.cached_head = self.header().head.load(Ordering::Acquire);
            if self.tail - self.cached_head >= SLOTS {
                return Err(Full);
            }
        }
        let idx = (self.tail % SLOTS) as usize;
        // SAFETY: idx < SLOTS, so the slot lies within the ring; the consumer
        // does not read it until `tail` is published below.
        let slot =
            unsafe { std::slice::from_raw_parts_mut(self.slots.add(idx * SLOT_SIZE), SLOT_SIZE) };
        let slot: &mut [u8; SLOT_SIZE] = slot.try_into().expect("slice is SLOT_SIZE long");
        m.encode(slot);
        self.tail += 1;
        Ok(())
    }

    /// Makes every message pushed so far visible to the consumer.
    pub fn publish(&mut self) {
        self.header().tail.store(self.tail, Ordering::Release);
        if let Some(bell) = &self.bell {
            bell.ring();
        }
    }

    /// Messages published and not yet consumed.
    pub fn depth(&self) -> u64 {
        self.tail - self.header().head.load(Ordering::Acquire)
    }
}

/// Reads messages from one ring. Not `Clone`: there is one consumer per ring.
pub struct Consumer {
    _region: Region,
    header: *const RingHeader,
    slots: *const u8,
    head: u64,
    cached_tail: u64,
}

unsafe impl Send for Consumer {}

impl Consumer {
    pub(crate) fn new(region: Region, header: *const RingHeader, slots: *mut u8) -> Consumer {
        // SAFETY: header points into the mapping that `region` keeps alive.
        let h = unsafe { &*header };
        let head = h.head.load(Ordering::Relaxed);
        let cached_tail = h.tail.load(Ordering::Acquire);
        Consumer {
            _region: region,
            header,
            slots,
            head,
            cached_tail,
        }
    }

    fn header(&self) -> &RingHeader {
        // SAFETY: see `new`.
        unsafe { &*self.header }
    }

    /// Takes the next message, if any. A slot that does not decode is consumed
    /// and reported as an error so the caller can count it.
    pub fn pop<M: Message>(&mut self) -> Option<Result<M, DecodeError>> {
        if self.head == self.cached_tail {
            self.cached_tail = self.header().tail.load(Ordering::Acquire);
            if self.head == self.cached_tail {
                return None;
            }
        }
        if self.cached_tail - self.head > SLOTS {
            // A producer that is not following the protocol (or a torn file):
            // resynchronise rather than read garbage forever.
            self.head = self.cached_tail;
            self.header().head.store(self.head, Ordering::Release);
            return Some(Err(DecodeError::Overrun));
        }
        let idx = (self.head % SLOTS) as usize;
        // SAFETY: idx < SLOTS; the producer published this slot (Acquire above)
        // and will not rewrite it until `head` moves past it.
        let slot =
            unsafe { std::slice::from_raw_parts(self.slots.add(idx * SLOT_SIZE), SLOT_SIZE) };
        let m = M::decode(slot);
        self.head += 1;
        // Give slots back in groups (or when caught up): the producer reads
        // `head` only when the ring looks full, so there is no hurry.
        if self.head.is_multiple_of(RELEASE_EVERY) || self.head == self.cached_tail {
            self.header().head.store(self.head, Ordering::Release);
        }
        Some(m)
    }

    /// Drops every published message (a new dataplane ignores commands sent to its predecessor).
    pub fn discard_all(&mut self) {
        self.cached_tail = self.header().tail.load(Ordering::Acquire);
        self.head = self.cached_tail;
        self.header().head.store(self.head, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Command, Event};
    use crate::SessionId;
    use std::time::Duration;

    fn region(name: &str) -> (Region, std::path::PathBuf) {
        let p = std::env::temp_dir().join(format!("gw-spsc-{}-{name}", std::process::id()));
        (Region::create(&p, 1).unwrap(), p)
    }

    #[test]
    fn fifo_and_full() {
        let (r, p) = region("fifo");
        let mut tx = r.command_producer(0);
        let mut rx = r.command_consumer(0);
        assert!(rx.pop::<Command>().is_none());
        for i in 0..SLOTS {
            tx.push(&Command::DeleteSession {
                session: SessionId::new(i),
            })
            .unwrap();
        }
        assert_eq!(tx.push(&Command::Resync), Err(Full));
        assert_eq!(tx.depth(), SLOTS);
        for i in 0..SLOTS {
            assert_eq!(
                rx.pop::<Command>(),
                Some(Ok(Command::DeleteSession {
                    session: SessionId::new(i)
                }))
            );
        }
        assert!(rx.pop::<Command>().is_none());
        tx.push(&Command::Resync).unwrap();
        assert_eq!(rx.pop::<Command>(), Some(Ok(Command::Resync)));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn a_successor_consumer_rereads_at_most_one_unreleased_batch() {
        let (r, p) = region("successor");
        let mut tx = r.event_producer(0);
        for i in 0..100 {
            tx.push(&Event::ResyncDone { epoch: i }).unwrap();
        }
        {
            // Killed after 40 pops: 32 were released, 8 were not.
            let mut rx = r.event_consumer(0);
            for _ in 0..40 {
                rx.pop::<Event>().unwrap().unwrap();
            }
        }
        let mut rx = r.event_consumer(0);
        assert_eq!(
            rx.pop::<Event>(),
            Some(Ok(Event::ResyncDone {
                epoch: RELEASE_EVERY
            }))
        );
        let mut rest = 1;
        while rx.pop::<Event>().is_some() {
            rest += 1;
        }
        assert_eq!(rest, 100 - RELEASE_EVERY);
        // Caught up: everything is released, a third consumer sees nothing.
        assert!(r.event_consumer(0).pop::<Event>().is_none());
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn survives_reopen_by_a_new_producer() {
        // A restarted controlplane opens the same file: indices continue.
        let (r, p) = region("reopen");
        let mut rx = r.event_consumer(0);
        {
            let mut tx = r.event_producer(0);
            tx.push(&Event::ResyncDone { epoch: 1 }).unwrap();
        }
        let r2 = Region::open(&p, Duration::ZERO).unwrap();
        let mut tx2 = r2.event_producer(0);
        tx2.push(&Event::ResyncDone { epoch: 2 }).unwrap();
        assert_eq!(rx.pop::<Event>(), Some(Ok(Event::ResyncDone { epoch: 1 })));
        assert_eq!(rx.pop::<Event>(), Some(Ok(Event::ResyncDone { epoch: 2 })));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn threads_pass_a_million_messages_in_order() {
        let (r, p) = region("threads");
        let mut tx = r.command_producer(0);
        let mut rx = r.command_consumer(0);
        const N: u64 = 1_000_000;
        let t = std::thread::spawn(move || {
            let mut i = 0;
            while i < N {
                if tx
                    .push(&Command::DeleteSession {
                        session: SessionId::new(i),
                    })
                    .is_ok()
                {
                    i += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        });
        let mut want = 0;
        while want < N {
            match rx.pop::<Command>() {
                Some(Ok(Command::DeleteSession { session })) => {
                    assert_eq!(session, SessionId::new(want));
                    want += 1;
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => std::hint::spin_loop(),
            }
        }
        t.join().unwrap();
        std::fs::remove_file(p).unwrap();
    }

    /// Producer and consumer in two processes: the test binary re-executes
    /// itself as the producer child. Prints the measured rate.
    #[test]
    fn two_processes_pass_messages_in_order() {
        const N: u64 = 10_000_000;
        if let Ok(path) = std::env::var("GW_RING_CHILD") {
            let r = Region::open(&path, Duration::from_secs(5)).unwrap();
            let mut tx = r.event_producer(0);
            // First half one by one, second half in batches of 64.
            let mut i = 0;
            while i < N {
                let batch = if i < N / 2 { 1 } else { 64 };
                let mut pushed = 0;
                while pushed < batch && tx.push_deferred(&Event::ResyncDone { epoch: i }).is_ok() {
                    i += 1;
                    pushed += 1;
                }
                tx.publish();
                if pushed == 0 {
                    std::hint::spin_loop();
                }
            }
            return;
        }
        let (r, p) = region("procs");
        let mut rx = r.event_consumer(0);
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "spsc::tests::two_processes_pass_messages_in_order",
                "--nocapture",
            ])
            .env("GW_RING_CHILD", &p)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        // The rate is timed from the first message, not from the child's exec.
        let mut first = None;
        let mut half = None;
        let mut want = 0;
        while want < N {
            match rx.pop::<Event>() {
                Some(Ok(Event::ResyncDone { epoch })) => {
                    assert_eq!(epoch, want);
                    first.get_or_insert_with(std::time::Instant::now);
                    if want == N / 2 {
                        half = Some(std::time::Instant::now());
                    }
                    want += 1;
                }
                Some(other) => panic!("unexpected {other:?}"),
                None => {
                    assert!(
                        start.elapsed() < Duration::from_secs(60),
                        "child stalled at {want}"
                    );
                    std::hint::spin_loop()
                }
            }
        }
        let end = std::time::Instant::now();
        assert!(child.wait().unwrap().success());
        let (first, half) = (first.unwrap(), half.unwrap());
        let rate = |from: std::time::Instant, to: std::time::Instant| {
            (N / 2) as f64 / to.duration_since(from).as_secs_f64() / 1e6
        };
        let build = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        eprintln!(
            "two-process ring ({build} build): {:.1} M msg/s published one by one, {:.1} M msg/s in batches of 64",
            rate(first, half),
            rate(half, end)
        );
        std::fs::remove_file(p).unwrap();
    }
}
