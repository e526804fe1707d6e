//! UDP GSO batching: the packets one loop turn sends from the same socket to
//! the same address leave in one `sendmsg` with a `UDP_SEGMENT` control
//! message, and the kernel cuts them into datagrams.
//!
//! Why: a UDP send costs this machine ~2.6 µs per datagram through the
//! kernel, a GSO send ~0.8-0.9 µs per segment (the issue 5 baseline relay,
//! `loadgen relay --gso`). At 1 → N fan-out a turn that received k packets
//! of a frame sends k packets to each of N subscribers: with batching that is
//! N sends of k segments instead of N·k sends. Nothing waits for a batch to
//! fill: the shard seals every open batch before it submits (during a
//! fan-out, every 256 KiB prepared), so a packet leaves in the same turn it
//! would have left without GSO. Under light load a
//! turn holds one packet per subscriber and a batch of one goes out as a
//! plain send.
//!
//! The segments of a batch are the shard's send slots themselves (one iovec
//! each, no copy). The kernel's rule: every segment has the batch's segment
//! size except the last, which may be shorter; at most [`MAX_SEGMENTS`] and
//! [`MAX_BYTES`] in all.
//!
//! ```text
//! add(session, slot, len) ─▶ Joined            (same socket, address, size)
//!                         ─▶ Started           (a new batch for this session)
//!                         ─▶ Replaced(old)     (caller seals `old`, new one started)
//!                         ─▶ Unbatched         (GSO off, or no batch free)
//! seal(batch)  ─▶ one slot: a plain send; more: SendMsg + UDP_SEGMENT
//! completion   ─▶ finish(batch): its slots go back to the free list
//! ```

use std::net::SocketAddrV4;
use std::os::fd::RawFd;

use crate::media::Handle;
use crate::uring::{set_udp_segment, sockaddr_in, CmsgU16};

/// Most segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS` before 6.x
/// raised it to 128).
pub const MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO send (an IPv4 datagram's limit).
pub const MAX_BYTES: usize = 65_507;
/// Batches that may be open or in flight at once.
const BATCHES: usize = 2048;
const NONE: u32 = u32::MAX;

/// One batch: the `msghdr` the kernel reads until the completion arrives,
/// so batches live in a boxed slice that never moves.
#[repr(C)]
pub struct Batch {
    msg: libc::msghdr,
    iov: [libc::iovec; MAX_SEGMENTS],
    addr: libc::sockaddr_in,
    cmsg: CmsgU16,
    pub session: Handle,
    pub fd: RawFd,
    pub dest: SocketAddrV4,
    seg: usize,
    bytes: usize,
    /// The last segment is shorter than `seg`: nothing may follow it.
    closed: bool,
    /// Handed to the kernel: an index may sit in the open list twice (a
    /// batch replaced, freed and reused in one turn), it is sent once.
    sealed: bool,
    pub slots: [u32; MAX_SEGMENTS],
    pub count: usize,
}

/// What [`Batcher::add`] did with a packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Add {
    Joined,
    Started,
    /// The session's open batch could not take it: seal this one (it is no
    /// longer open); the packet started a new batch.
    Replaced(u32),
    /// Send the packet on its own.
    Unbatched,
}

/// A sealed batch, ready for the submission queue.
pub enum Sealed {
    /// One packet: send slot `slot` as a plain datagram (the batch is free again).
    Single {
        slot: u32,
        len: usize,
        session: Handle,
        fd: RawFd,
        dest: SocketAddrV4,
    },
    /// Several: submit `SendMsg` on `msg` from `fd`; call
    /// [`Batcher::finish`] with `batch` when it completes.
    Gso {
        batch: u32,
        fd: RawFd,
        msg: *const libc::msghdr,
        /// Datagrams the kernel will cut it into.
        count: usize,
    },
}

pub struct Batcher {
    batches: Box<[Batch]>,
    free: Vec<u32>,
    /// Batches being filled this turn.
    open: Vec<u32>,
    /// Per session handle: its open batch, or `NONE`.
    open_of: Vec<u32>,
    /// Off: every packet is sent on its own (`--gso false`, or the kernel refused one).
    pub enabled: bool,
}

impl Batcher {
    pub fn new(enabled: bool) -> Batcher {
        // SAFETY: Batch is plain data (C structs, integers, arrays); all-zero is valid.
        let batches: Box<[Batch]> = (0..BATCHES)
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        Batcher {
            batches,
            free: (0..BATCHES as u32).rev().collect(),
            open: Vec::with_capacity(BATCHES),
            open_of: Vec::new(),
            enabled,
        }
    }

    /// Adds send slot `slot`, whose bytes are `buf[..len]`, for `session`
    /// (socket `fd`) to `dest`.
    pub fn add(
        &mut self,
        session: Handle,
        fd: RawFd,
        dest: SocketAddrV4,
        slot: u32,
        buf: &mut [u8],
        len: usize,
    ) -> Add {
        if !self.enabled {
            return Add::Unbatched;
        }
        let h = session as usize;
        if self.open_of.len() <= h {
            self.open_of.resize(h + 1, NONE);
        }
        let current = self.open_of[h];
        if current != NONE {
            let b = &mut self.batches[current as usize];
            let fits = b.fd == fd
                && b.dest == dest
                && !b.closed
                && len <= b.seg
                && b.count < MAX_SEGMENTS
                && b.bytes + len <= MAX_BYTES;
            if fits {
                b.push(slot, buf, len);
                return Add::Joined;
            }
        }
        let Some(idx) = self.free.pop() else {
            return Add::Unbatched;
        };
        let b = &mut self.batches[idx as usize];
        b.session = session;
        b.fd = fd;
        b.dest = dest;
        b.seg = len;
        b.bytes = 0;
        b.count = 0;
        b.closed = false;
        b.sealed = false;
        b.push(slot, buf, len);
        self.open_of[h] = idx;
        self.open.push(idx);
        if current == NONE {
            Add::Started
        } else {
            // `current` stays in `open` until `take_open`; `seal` skips
            // batches it has sealed already.
            Add::Replaced(current)
        }
    }

    /// Whether any batch is being filled this turn.
    pub fn has_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// The open batches, to seal before the shard submits.
    pub fn take_open(&mut self, out: &mut Vec<u32>) {
        out.append(&mut self.open);
    }

    /// Closes batch `idx` to new packets and says how to send it; `None` if
    /// it was sealed (or dropped) already.
    pub fn seal(&mut self, idx: u32) -> Option<Sealed> {
        let b = &mut self.batches[idx as usize];
        if b.count == 0 || b.sealed {
            return None;
        }
        b.sealed = true;
        let h = b.session as usize;
        if self.open_of.get(h) == Some(&idx) {
            self.open_of[h] = NONE;
        }
        if b.count == 1 {
            let single = Sealed::Single {
                slot: b.slots[0],
                len: b.iov[0].iov_len,
                session: b.session,
                fd: b.fd,
                dest: b.dest,
            };
            b.count = 0;
            self.free.push(idx);
            return Some(single);
        }
        b.build_msg();
        Some(Sealed::Gso {
            batch: idx,
            fd: b.fd,
            msg: &b.msg,
            count: b.count,
        })
    }

    /// Batch `idx` completed: its send slots go to `slots_out`, the batch is free.
    pub fn finish(&mut self, idx: u32, slots_out: &mut Vec<u32>) -> Option<(Handle, usize)> {
        let b = self.batches.get_mut(idx as usize)?;
        if b.count == 0 {
            return None;
        }
        slots_out.extend_from_slice(&b.slots[..b.count]);
        let done = (b.session, b.count);
        b.count = 0;
        self.free.push(idx);
        Some(done)
    }

    /// Session `h` is closing: its open batch (not submitted yet) is
    /// dropped and its send slots returned.
    pub fn drop_session(&mut self, h: Handle, slots_out: &mut Vec<u32>) {
        let Some(&idx) = self.open_of.get(h as usize) else {
            return;
        };
        if idx == NONE {
            return;
        }
        self.open_of[h as usize] = NONE;
        self.finish(idx, slots_out);
    }

    /// Batches not free (open or in flight), for tests and invariants.
    pub fn busy(&self) -> usize {
        BATCHES - self.free.len()
    }
}

impl Batch {
    fn push(&mut self, slot: u32, buf: &mut [u8], len: usize) {
        self.iov[self.count] = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: len,
        };
        self.slots[self.count] = slot;
        self.count += 1;
        self.bytes += len;
        if len < self.seg {
            self.closed = true;
        }
    }

    /// Fills in the `msghdr`: address, the iovecs, and `UDP_SEGMENT = seg`.
    fn build_msg(&mut self) {
        self.addr = sockaddr_in(self.dest);
        self.msg.msg_name = &mut self.addr as *mut _ as *mut libc::c_void;
        self.msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.count as _;
        set_udp_segment(&mut self.msg, &mut self.cmsg, self.seg as u16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn dest(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)
    }

    #[test]
    fn equal_segments_join_and_a_short_one_closes_the_batch() {
        let mut b = Batcher::new(true);
        let mut buf = vec![0u8; 1500];
        assert_eq!(b.add(3, 10, dest(1), 0, &mut buf, 1200), Add::Started);
        assert_eq!(b.add(3, 10, dest(1), 1, &mut buf, 1200), Add::Joined);
        assert_eq!(b.add(3, 10, dest(1), 2, &mut buf, 700), Add::Joined);
        // After a short segment the kernel would cut wrongly: a new batch.
        assert_eq!(b.add(3, 10, dest(1), 3, &mut buf, 1200), Add::Replaced(0));
        let Some(Sealed::Gso { batch, .. }) = b.seal(0) else {
            panic!("three segments make a GSO send");
        };
        assert!(b.seal(0).is_none(), "a batch in flight is not sent twice");
        let mut slots = Vec::new();
        assert_eq!(b.finish(batch, &mut slots), Some((3, 3)));
        assert_eq!(slots, vec![0, 1, 2]);
        // The new batch holds one packet: a plain send.
        let mut open = Vec::new();
        b.take_open(&mut open);
        let sealed: Vec<_> = open.iter().filter_map(|&i| b.seal(i)).collect();
        assert_eq!(sealed.len(), 1, "the sealed batch is not sealed twice");
        assert!(matches!(
            sealed[0],
            Sealed::Single {
                slot: 3,
                len: 1200,
                ..
            }
        ));
        assert_eq!(b.busy(), 0);
    }

    #[test]
    fn another_address_size_or_full_batch_starts_a_new_one() {
        let mut b = Batcher::new(true);
        let mut buf = vec![0u8; 1500];
        assert_eq!(b.add(1, 10, dest(1), 0, &mut buf, 900), Add::Started);
        // Audio of an RTP egress goes to port + 2: not the same datagram stream.
        assert_eq!(b.add(1, 10, dest(3), 1, &mut buf, 900), Add::Replaced(0));
        // Larger than the segment size.
        assert_eq!(b.add(1, 10, dest(3), 2, &mut buf, 1000), Add::Replaced(1));
        for k in 1..MAX_SEGMENTS as u32 {
            assert_eq!(b.add(1, 10, dest(3), 2 + k, &mut buf, 1000), Add::Joined);
        }
        assert!(matches!(
            b.add(1, 10, dest(3), 99, &mut buf, 1000),
            Add::Replaced(2)
        ));
        // Another session has its own batch.
        assert_eq!(b.add(2, 11, dest(3), 100, &mut buf, 1000), Add::Started);
    }

    #[test]
    fn the_byte_limit_holds() {
        let mut b = Batcher::new(true);
        let mut buf = vec![0u8; 1500];
        let mut started = 0;
        for k in 0..200 {
            if b.add(1, 10, dest(1), k, &mut buf, 1472) != Add::Joined {
                started += 1;
            }
        }
        // 44 segments of 1472 bytes fit under 65 507.
        assert_eq!(started, 200usize.div_ceil(44));
    }

    #[test]
    fn a_closing_session_gives_its_slots_back_and_off_means_unbatched() {
        let mut b = Batcher::new(true);
        let mut buf = vec![0u8; 1500];
        b.add(5, 10, dest(1), 7, &mut buf, 100);
        b.add(5, 10, dest(1), 8, &mut buf, 100);
        let mut slots = Vec::new();
        b.drop_session(5, &mut slots);
        assert_eq!(slots, vec![7, 8]);
        let mut open = Vec::new();
        b.take_open(&mut open);
        assert!(open.iter().all(|&i| b.seal(i).is_none()));
        assert_eq!(b.busy(), 0);
        let mut off = Batcher::new(false);
        assert_eq!(off.add(1, 10, dest(1), 0, &mut buf, 100), Add::Unbatched);
    }
}
