//! The baseline: what the kernel allows a minimal relay on this machine.
//! Every datagram received on one socket goes to every destination port, in
//! batches (`recvmmsg` up to 64, then `sendmmsg` of up to 1024 copies), with
//! no crypto and no header rewrite; with `--gso`, each received batch goes
//! to each destination as one GSO send (`UDP_SEGMENT`). The gateway's figures read as a ratio
//! to this one measured in the same run.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

use dataplane::uring::{set_udp_segment, CmsgU16};

const BATCH_IN: usize = 64;
const BATCH_OUT: usize = 1024;
const MAX_DGRAM: usize = 2048;

pub fn run(listen: u16, to: &[u16], gso: bool) {
    let sock = UdpSocket::bind(("127.0.0.1", listen)).expect("bind relay socket");
    let fd = sock.as_raw_fd();
    let size: libc::c_int = 8 << 20;
    for opt in [libc::SO_RCVBUF, libc::SO_SNDBUF] {
        // SAFETY: valid fd and option pointer/length.
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &size as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
    }
    let dests: Vec<libc::sockaddr_in> = to
        .iter()
        .map(|&p| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: p.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        })
        .collect();
    let mut bufs = vec![[0u8; MAX_DGRAM]; BATCH_IN];
    // SAFETY (for the zeroed structs below): plain C structs, all-zero is valid.
    let mut iov_in: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: MAX_DGRAM,
        })
        .collect();
    let mut msgs_in: Vec<libc::mmsghdr> = (0..BATCH_IN)
        .map(|i| {
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = &mut iov_in[i];
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    if gso {
        relay_gso(fd, &dests, &mut msgs_in, &mut bufs);
    }
    let mut iov_out: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH_OUT];
    let mut msgs_out: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH_OUT];
    loop {
        let n = recv_batch(fd, &mut msgs_in);
        let mut k = 0;
        for i in 0..n {
            let len = msgs_in[i].msg_len as usize;
            for d in &dests {
                iov_out[k] = libc::iovec {
                    iov_base: bufs[i].as_mut_ptr() as *mut libc::c_void,
                    iov_len: len,
                };
                let m = header_to(d, &mut iov_out[k], 1);
                queue(fd, &mut msgs_out, &mut k, m);
            }
        }
        if k > 0 {
            send_all(fd, &mut msgs_out[..k]);
        }
    }
}

/// Waits for at least one datagram and takes up to a batch; their lengths
/// are in `msg_len`.
fn recv_batch(fd: i32, msgs_in: &mut [libc::mmsghdr]) -> usize {
    // SAFETY: msgs_in points at live iovecs and buffers.
    let n = unsafe {
        libc::recvmmsg(
            fd,
            msgs_in.as_mut_ptr(),
            msgs_in.len() as u32,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    n.max(0) as usize
}

/// The GSO baseline: each received batch goes to each destination as GSO
/// sends (runs of equal-sized datagrams, the last of a run may be shorter),
/// so a frame's burst costs one send per subscriber.
fn relay_gso(
    fd: i32,
    dests: &[libc::sockaddr_in],
    msgs_in: &mut [libc::mmsghdr],
    bufs: &mut [[u8; MAX_DGRAM]],
) -> ! {
    const MAX_SEGS: usize = 64;
    let mut iov: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH_IN];
    let mut cmsgs: Vec<CmsgU16> = vec![CmsgU16::default(); BATCH_OUT];
    let mut msgs_out: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH_OUT];
    let mut runs: Vec<(usize, usize, usize)> = Vec::with_capacity(BATCH_IN); // (first, count, segment size)
    loop {
        let n = recv_batch(fd, msgs_in);
        for i in 0..n {
            iov[i] = libc::iovec {
                iov_base: bufs[i].as_mut_ptr() as *mut libc::c_void,
                iov_len: msgs_in[i].msg_len as usize,
            };
        }
        // Runs of the batch that one GSO send can carry.
        runs.clear();
        let mut i = 0;
        while i < n {
            let seg = iov[i].iov_len;
            let mut j = i + 1;
            let mut bytes = seg;
            while j < n
                && j - i < MAX_SEGS
                && iov[j].iov_len <= seg
                && bytes + iov[j].iov_len <= 65_507
            {
                bytes += iov[j].iov_len;
                j += 1;
                if iov[j - 1].iov_len < seg {
                    break;
                }
            }
            runs.push((i, j - i, seg));
            i = j;
        }
        let mut k = 0;
        for d in dests {
            for &(first, count, seg) in &runs {
                let mut m = header_to(d, &mut iov[first], count);
                if count > 1 {
                    set_udp_segment(&mut m.msg_hdr, &mut cmsgs[k], seg as u16);
                }
                queue(fd, &mut msgs_out, &mut k, m);
            }
        }
        if k > 0 {
            send_all(fd, &mut msgs_out[..k]);
        }
    }
}

/// Puts `m` at `msgs[*k]`; a full batch goes to the kernel and `*k` restarts.
fn queue(fd: i32, msgs: &mut [libc::mmsghdr], k: &mut usize, m: libc::mmsghdr) {
    msgs[*k] = m;
    *k += 1;
    if *k == msgs.len() {
        send_all(fd, msgs);
        *k = 0;
    }
}

/// A `sendmmsg` entry for `count` iovecs starting at `iov`, to `dest`.
fn header_to(dest: &libc::sockaddr_in, iov: &mut libc::iovec, count: usize) -> libc::mmsghdr {
    // SAFETY: a plain C struct; all-zero is valid.
    let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
    m.msg_hdr.msg_name = dest as *const _ as *mut libc::c_void;
    m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    m.msg_hdr.msg_iov = iov;
    m.msg_hdr.msg_iovlen = count as _;
    m
}

fn send_all(fd: i32, msgs: &mut [libc::mmsghdr]) {
    let mut off = 0;
    while off < msgs.len() {
        // SAFETY: every header points at a live destination and buffer.
        let n =
            unsafe { libc::sendmmsg(fd, msgs[off..].as_mut_ptr(), (msgs.len() - off) as u32, 0) };
        if n <= 0 {
            return; // dropped, as the kernel would under overload
        }
        off += n as usize;
    }
}
