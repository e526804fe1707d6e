//! The baseline: what the kernel allows a minimal relay on this machine.
//! Every datagram received on one socket goes to every destination port, in
//! batches (`recvmmsg` up to 64, then `sendmmsg` of up to 1024 copies), with
//! no crypto and no header rewrite. The gateway's figures read as a ratio
//! to this one measured in the same run.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

const BATCH_IN: usize = 64;
const BATCH_OUT: usize = 1024;
const MAX_DGRAM: usize = 2048;

pub fn run(listen: u16, to: &[u16]) {
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
    let mut iov_out: Vec<libc::iovec> = vec![unsafe { std::mem::zeroed() }; BATCH_OUT];
    let mut msgs_out: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH_OUT];
    loop {
        // SAFETY: msgs_in points at live iovecs and buffers.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                msgs_in.as_mut_ptr(),
                BATCH_IN as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n <= 0 {
            continue;
        }
        let mut k = 0;
        for i in 0..n as usize {
            let len = msgs_in[i].msg_len as usize;
            for d in &dests {
                iov_out[k] = libc::iovec {
                    iov_base: bufs[i].as_mut_ptr() as *mut libc::c_void,
                    iov_len: len,
                };
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_name = d as *const _ as *mut libc::c_void;
                m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = &mut iov_out[k];
                m.msg_hdr.msg_iovlen = 1;
                msgs_out[k] = m;
                k += 1;
                if k == BATCH_OUT {
                    send_all(fd, &mut msgs_out[..k]);
                    k = 0;
                }
            }
        }
        if k > 0 {
            send_all(fd, &mut msgs_out[..k]);
        }
    }
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
