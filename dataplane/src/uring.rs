//! The Linux-only layer: io_uring provided-buffer rings, UDP sockets, CPU
//! pinning, address conversions. All `unsafe` of the dataplane's I/O is here.
//!
//! Why raw `io-uring` 0.7: measured on this machine it is the only Rust path to
//! multishot `RecvMsgMulti` with a provided-buffer ring and `SendMsg` with
//! control messages (GSO); tokio-uring 0.5 (unmaintained, no multishot) relayed
//! 110-248k packets/s against 339k here, and glommio 0.9 exposes neither
//! multishot nor cmsgs. See docs/ARCHITECTURE.md.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// A ring of receive buffers the kernel picks from (IORING_REGISTER_PBUF_RING).
///
/// The kernel takes a buffer for each datagram and names it in the
/// completion's flags; we hand it back with [`BufRing::recycle`] once the
/// packet has been processed (and fanned out: sends copy from it).
pub struct BufRing {
    entries: *mut BufRingEntry,
    entries_len: usize,
    count: u16,
    tail: u16,
    buf_size: usize,
    bufs: Box<[u8]>,
    pub bgid: u16,
}

impl BufRing {
    /// Allocates `count` (a power of two) buffers of `buf_size` bytes and
    /// registers them as buffer group `bgid`.
    pub fn register(
        submitter: &Submitter<'_>,
        bgid: u16,
        count: u16,
        buf_size: usize,
    ) -> io::Result<BufRing> {
        assert!(count.is_power_of_two());
        let entries_len = count as usize * std::mem::size_of::<BufRingEntry>();
        // SAFETY: anonymous private mapping; checked for MAP_FAILED below. The
        // ring must be page aligned, which mmap guarantees.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                entries_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut ring = BufRing {
            entries: ptr as *mut BufRingEntry,
            entries_len,
            count,
            tail: 0,
            buf_size,
            bufs: vec![0u8; count as usize * buf_size].into_boxed_slice(),
            bgid,
        };
        // SAFETY: the mapping lives as long as `ring`, which the shard drops
        // only after the io_uring instance (Drop order in `Shard`).
        unsafe { submitter.register_buf_ring_with_flags(ptr as u64, count, bgid, 0)? };
        for bid in 0..count {
            ring.push(bid);
        }
        ring.publish();
        Ok(ring)
    }

    fn push(&mut self, bid: u16) {
        let idx = (self.tail & (self.count - 1)) as usize;
        // SAFETY: idx < count; the entry is ours until the tail is published.
        let e = unsafe { &mut *self.entries.add(idx) };
        e.set_addr(self.bufs[bid as usize * self.buf_size..].as_ptr() as u64);
        e.set_len(self.buf_size as u32);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays entry 0's `resv`; the kernel reads it
        // with acquire semantics, so we store it with release.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// Gives buffer `bid` back to the kernel.
    pub fn recycle(&mut self, bid: u16) {
        self.push(bid);
        self.publish();
    }

    /// The bytes the kernel wrote into buffer `bid`.
    pub fn buf_mut(&mut self, bid: u16, len: usize) -> &mut [u8] {
        let start = bid as usize * self.buf_size;
        &mut self.bufs[start..start + len.min(self.buf_size)]
    }

    pub fn buf_size(&self) -> usize {
        self.buf_size
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `register`.
        unsafe { libc::munmap(self.entries as *mut libc::c_void, self.entries_len) };
    }
}

/// Raises the soft limit on open files to the hard one: a shard holds a
/// socket per session, and the usual default soft limit of 1024 would
/// refuse sessions (bind fails with EMFILE) long before the ports run out.
/// Returns the limit now in force.
pub fn raise_open_files_limit() -> io::Result<u64> {
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// Binds a UDP socket with large kernel buffers (best effort: capped by
/// net.core.rmem_max / wmem_max; see docs for the bare-metal sysctls).
pub fn bind_udp(ip: Ipv4Addr, port: u16) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(SocketAddrV4::new(ip, port))?;
    let size: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: valid fd and option value pointer/length.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    Ok(sock)
}

/// Pins the calling thread to `core`.
pub fn pin_to_core(core: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET indexes within it (core checked).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if core >= libc::CPU_SETSIZE as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "core index too large",
            ));
        }
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Room for one control message carrying a `u16`, aligned for `cmsghdr`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Default)]
pub struct CmsgU16(pub [u8; 32]);

/// Makes `msg` carry `UDP_SEGMENT = seg` (UDP GSO: the kernel cuts the
/// payload into datagrams of `seg` bytes, the last may be shorter), with
/// the control message in `cmsg`, which must outlive the send.
pub fn set_udp_segment(msg: &mut libc::msghdr, cmsg: &mut CmsgU16, seg: u16) {
    // SAFETY: CMSG_SPACE(2) = 24 ≤ 32 bytes of an 8-aligned buffer; the
    // header and data pointers come from the libc macros on that buffer.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        debug_assert!(space <= cmsg.0.len());
        msg.msg_control = cmsg.0.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as _;
        std::ptr::copy_nonoverlapping(
            seg.to_ne_bytes().as_ptr(),
            libc::CMSG_DATA(c),
            std::mem::size_of::<u16>(),
        );
    }
}

pub fn sockaddr_in(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(a.ip().octets()),
        },
        sin_zero: [0; 8],
    }
}

/// Reads an IPv4 source address from the name bytes of a received message.
pub fn parse_sockaddr_in(name: &[u8]) -> Option<SocketAddrV4> {
    if name.len() < 8 || u16::from_ne_bytes([name[0], name[1]]) != libc::AF_INET as u16 {
        return None;
    }
    let port = u16::from_be_bytes([name[2], name[3]]);
    let ip = Ipv4Addr::new(name[4], name[5], name[6], name[7]);
    Some(SocketAddrV4::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_files_limit_is_raised_to_the_hard_one() {
        // SAFETY: getrlimit/setrlimit read and write the struct we pass.
        let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        // Start from the usual default, as a fresh login shell would.
        lim.rlim_cur = lim.rlim_max.min(1024);
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
        let now = raise_open_files_limit().unwrap();
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, lim.rlim_max);
        assert_eq!(now, lim.rlim_cur);
    }

    #[test]
    fn sockaddr_round_trip() {
        let a = SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 1), 40123);
        let s = sockaddr_in(a);
        // SAFETY: reading the plain-data struct as bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                &s as *const _ as *const u8,
                std::mem::size_of::<libc::sockaddr_in>(),
            )
        };
        assert_eq!(parse_sockaddr_in(bytes), Some(a));
        assert_eq!(parse_sockaddr_in(&[0; 4]), None);
    }
}
