//! The shard's RTMP and HTTP-FLV side: TCP listeners (one of each per
//! shard, `SO_REUSEPORT`, so the kernel spreads connections), one receive
//! and at most one send in flight per connection on the shard's io_uring,
//! and hand-over of a connection to the shard that hosts its room. The
//! protocols and the streams are the core's
//! ([`crate::core::Core::handle_rtmp_bytes`]); an HTTP-FLV player is an
//! RTMP player with another framing, under the same limits and timeouts.
//!
//! ```text
//! AcceptMulti ─▶ new connection: TCP_NODELAY, Recv armed
//! Recv done   ─▶ Core::handle_rtmp_bytes ─▶ outputs: Wake → pump sends; Close; Handoff
//!                re-arm Recv (unless closing or handing over)
//! Send done   ─▶ PlayerQueue::consumed(n) ─▶ pump: one vectored send of
//!                what is queued (up to 64 buffers, 256 KiB)
//! Handoff     ─▶ when nothing is in flight: socket + protocol state + the
//!                events that named the room go to the other shard's inbox
//! ```
//!
//! A connection is dropped (its fd closed) only once no operation on it is
//! in flight: closing shuts the socket down, which completes them.

use std::net::{SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, types};
use tracing::{debug, info, warn};

use super::{user_data, Shard};
use crate::hub::ConnState;
use crate::limits::{Admission, ConnCounter, Limits, Refused};
use crate::media::RtpFromRtmp;
use crate::output::Action;
use crate::rtmp::conn::Event;
use crate::transcode::Job;
use gateway_ring::msg::{DropReason, Limit, MediaKind};
use gateway_ring::token::TokenKeys;
use gateway_ring::SessionId;

pub(super) const OP_ACCEPT: u64 = 4;
pub(super) const OP_TCP_RECV: u64 = 5;
pub(super) const OP_TCP_SEND: u64 = 6;
pub(super) const OP_HTTP_ACCEPT: u64 = 8;

/// Receive buffer per connection.
const RECV_BUF: usize = 16 * 1024;
/// Most RTMP connections one shard holds.
pub const MAX_RTMP_CONNS: usize = 8192;

/// A connection moving to the shard that hosts its room.
pub struct Handoff {
    pub sock: TcpStream,
    pub state: ConnState,
    pub events: Vec<Event>,
    /// Counted in [`ConnCounter`] at accept; the receiving shard releases it.
    pub admission: Option<Admission>,
    pub accepted_at: Instant,
}

/// What `main` gives each shard for RTMP.
pub struct RtmpConfig {
    /// RTMP, HTTP-FLV: either may be off.
    pub listener: Option<TcpListener>,
    pub http_listener: Option<TcpListener>,
    pub inbox: Receiver<Box<Handoff>>,
    /// Every shard's inbox, by shard index.
    pub peers: Arc<Vec<Sender<Box<Handoff>>>>,
    pub gop_cache: bool,
    pub auto_room: bool,
    pub shards: u32,
    /// Room-token keys: when set, publish and play need `?token=`.
    pub tokens: Option<Arc<TokenKeys>>,
    pub limits: Limits,
    /// Connections of the whole process, shared by every shard.
    pub conns: Arc<ConnCounter>,
}

/// How often the shard looks for RTMP connections past their timeouts.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// A connection in set-up that has sent nothing for this long gives its
/// place to a new connection from its address when the address is at
/// `--rtmp-max-nonplaying-per-ip`. A client setting up answers each of our
/// messages within a round trip (under a second on a mobile link), so only
/// a stalled one (a slow-handshake attack, a client gone) is this silent;
/// without this, such connections from one address would shut out its new
/// players until the set-up timeout.
const STALLED: std::time::Duration = std::time::Duration::from_secs(2);

/// A listening socket on `addr` that several shards share (`SO_REUSEPORT`).
pub fn listen(addr: SocketAddrV4) -> std::io::Result<TcpListener> {
    // SAFETY: plain socket syscalls on a descriptor we own; errors checked.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        for opt in [libc::SO_REUSEADDR, libc::SO_REUSEPORT] {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        let sa = crate::uring::sockaddr_in(addr);
        if libc::bind(
            fd,
            &sa as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ) < 0
            || libc::listen(fd, 1024) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(listener)
    }
}

/// Kernel send buffer asked for each connection (Linux doubles it). With
/// autotuning a player that stops reading parks up to `tcp_wmem`'s 4 MiB
/// in the kernel per connection, and the slow-player rule (512 KiB queued
/// here: skip to keyframes; 5 s behind: closed) only starts once that is
/// full, a minute later at 500 kbit/s. 256 KiB in flight still carries 7
/// Mbit/s at a 300 ms round trip.
const SEND_BUFFER: libc::c_int = 128 * 1024;

fn bound_send_buffer(sock: &TcpStream) {
    // SAFETY: setsockopt(2) on a socket we own, with a c_int value.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &SEND_BUFFER as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Most buffers one vectored send carries.
const SEND_IOVS: usize = 64;
/// A vectored send stops adding buffers past this many bytes: twice
/// [`SEND_BUFFER`] is what the kernel holds for the connection, so more
/// would not be taken in one go anyway.
const SEND_BATCH: usize = 2 * SEND_BUFFER as usize;

/// One connection's vectored send: the buffers it reads (held until it
/// completes, since the queue may drop or split them meanwhile; a send is
/// in flight exactly while there are some), and the iovecs and `msghdr`
/// the kernel reads. Boxed once per connection, so its address is stable
/// (slots move when the table grows) and sending allocates nothing.
struct Sending {
    bufs: Vec<bytes::Bytes>,
    iov: [libc::iovec; SEND_IOVS],
    msg: libc::msghdr,
}

impl Default for Sending {
    fn default() -> Self {
        Sending {
            bufs: Vec::with_capacity(SEND_IOVS),
            iov: [libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            }; SEND_IOVS],
            // SAFETY: an all-zero msghdr is a valid empty one.
            msg: unsafe { std::mem::zeroed() },
        }
    }
}

impl Sending {
    fn in_flight(&self) -> bool {
        !self.bufs.is_empty()
    }

    /// Points the iovecs at `bufs` and the `msghdr` at the iovecs. The
    /// pointer is valid until the send completes.
    fn prepare(&mut self) -> *const libc::msghdr {
        for (iov, b) in self.iov.iter_mut().zip(&self.bufs) {
            iov.iov_base = b.as_ptr() as *mut libc::c_void;
            iov.iov_len = b.len();
        }
        self.msg.msg_iov = self.iov.as_mut_ptr();
        self.msg.msg_iovlen = self.bufs.len();
        &self.msg
    }
}

struct TcpSlot {
    sock: TcpStream,
    gen: u32,
    buf: Box<[u8]>,
    recv_armed: bool,
    /// The vectored send of this connection (at most one in flight).
    out: Box<Sending>,
    closing: bool,
    close_after_flush: bool,
    handoff: Option<(u32, Vec<Event>)>,
    /// What [`ConnCounter`] counted for this connection (moves with it on
    /// a hand-over; released when it is freed).
    admission: Option<Admission>,
    /// When it was accepted (set-up timeout) and last sent us bytes (idle timeout).
    accepted_at: Instant,
    last_rx: Instant,
}

pub(super) struct RtmpIo {
    listener: Option<TcpListener>,
    http_listener: Option<TcpListener>,
    accept_armed: bool,
    http_accept_armed: bool,
    conns: Vec<Option<TcpSlot>>,
    free: Vec<u32>,
    next_gen: u32,
    inbox: Receiver<Box<Handoff>>,
    peers: Arc<Vec<Sender<Box<Handoff>>>>,
    limits: Limits,
    counter: Arc<ConnCounter>,
    pub(super) next_sweep: Option<Instant>,
    /// Reused by the sweep.
    expired: Vec<(u32, Limit)>,
}

impl RtmpIo {
    /// The I/O side; the core got the rest of `cfg` (GOP cache, rooms, tokens).
    pub(super) fn new(cfg: RtmpConfig) -> RtmpIo {
        RtmpIo {
            listener: cfg.listener,
            http_listener: cfg.http_listener,
            accept_armed: false,
            http_accept_armed: false,
            conns: Vec::new(),
            free: Vec::new(),
            next_gen: 1,
            inbox: cfg.inbox,
            peers: cfg.peers,
            limits: cfg.limits,
            counter: cfg.conns,
            next_sweep: None,
            expired: Vec::new(),
        }
    }
}

impl Shard {
    /// Per turn: keep the accept armed and adopt handed-over connections.
    pub(super) fn rtmp_turn(&mut self, now: Instant) {
        let Some(io) = self.rtmp.as_mut() else { return };
        let mut arm = [None, None];
        if let Some(l) = io.listener.as_ref().filter(|_| !io.accept_armed) {
            io.accept_armed = true;
            arm[0] = Some((l.as_raw_fd(), OP_ACCEPT));
        }
        if let Some(l) = io.http_listener.as_ref().filter(|_| !io.http_accept_armed) {
            io.http_accept_armed = true;
            arm[1] = Some((l.as_raw_fd(), OP_HTTP_ACCEPT));
        }
        for (fd, op) in arm.into_iter().flatten() {
            let e = opcode::AcceptMulti::new(types::Fd(fd))
                .build()
                .user_data(user_data(op, 0, 0));
            self.push_sqe(&e);
        }
        for _ in 0..64 {
            let Some(io) = self.rtmp.as_mut() else { return };
            let Ok(h) = io.inbox.try_recv() else { break };
            let Handoff {
                sock,
                state,
                events,
                admission,
                accepted_at,
            } = *h;
            let Some(idx) = self.adopt(now, sock, state, admission) else {
                continue;
            };
            if let Some(slot) = self.tcp_slot(idx) {
                // The set-up timeout runs from the first accept.
                slot.accepted_at = accepted_at;
            }
            debug!(
                shard = self.cfg.index,
                idx, "RTMP connection handed over to this shard"
            );
            let mark = self.core.output_mark();
            let replayed = super::contained(|| self.core.handle_rtmp_events(now, idx, events));
            if let Err(why) = replayed {
                self.rtmp_panic_contained(idx, &why, mark);
                continue;
            }
            self.drain_core(now);
            self.note_playing(idx);
            self.arm_tcp_recv(idx);
        }
        self.sweep_rtmp(now);
    }

    /// Closes connections past their timeouts: no `publish`/`play` within
    /// the set-up timeout (a client that connects and stalls holds a slot
    /// and buffers for nothing), or a publisher that sent nothing for the
    /// idle timeout (a stale push after the client lost its network).
    /// Players are not idle-checked: they only ack, and dead ones fail
    /// their sends or fall behind.
    fn sweep_rtmp(&mut self, now: Instant) {
        let Some(io) = self.rtmp.as_mut() else { return };
        if io.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        io.next_sweep = Some(now + SWEEP_EVERY);
        let mut expired = std::mem::take(&mut io.expired);
        let core = &self.core;
        for (idx, slot) in io.conns.iter().enumerate() {
            let Some(slot) = slot.as_ref().filter(|s| !s.closing && s.handoff.is_none()) else {
                continue;
            };
            let idx = idx as u32;
            if !core.rtmp_is_set_up(idx)
                && now.saturating_duration_since(slot.accepted_at) >= io.limits.rtmp_setup_timeout
            {
                expired.push((idx, Limit::RtmpSetupTimeout));
            } else if core.rtmp_is_publisher(idx)
                && now.saturating_duration_since(slot.last_rx) >= io.limits.rtmp_idle_timeout
            {
                expired.push((idx, Limit::RtmpIdle));
            }
        }
        for &(idx, limit) in &expired {
            self.turns.limits[limit as usize] += 1;
            let why = match limit {
                Limit::RtmpSetupTimeout => "no publish or play within the set-up timeout",
                _ => "publisher sent nothing within the idle timeout",
            };
            info!(
                shard = self.cfg.index,
                idx, "closing RTMP connection: {why}"
            );
            self.close_tcp(idx, why);
            self.maybe_release(idx);
        }
        expired.clear();
        if let Some(io) = self.rtmp.as_mut() {
            io.expired = expired;
        }
    }

    /// Takes a connection into this shard: a new one (`admission` is what
    /// [`ConnCounter::admit`] counted), or one handed over (counted when it
    /// was accepted). `None` if the shard has no slot for it; the caller's
    /// count is then released here.
    fn adopt(
        &mut self,
        now: Instant,
        sock: TcpStream,
        state: ConnState,
        admission: Option<Admission>,
    ) -> Option<u32> {
        let io = self.rtmp.as_mut()?;
        let live = io.conns.len() - io.free.len();
        if live >= MAX_RTMP_CONNS {
            warn!(
                shard = self.cfg.index,
                "RTMP connection slots of this shard are full; refusing a connection"
            );
            if let Some(a) = admission {
                io.counter.release(a);
            }
            return None;
        }
        let _ = sock.set_nodelay(true);
        bound_send_buffer(&sock);
        let gen = io.next_gen;
        io.next_gen = (io.next_gen + 1) & 0xff_ffff;
        let slot = TcpSlot {
            sock,
            gen,
            buf: vec![0u8; RECV_BUF].into_boxed_slice(),
            recv_armed: false,
            out: Box::default(),
            closing: false,
            close_after_flush: false,
            handoff: None,
            admission,
            accepted_at: now,
            last_rx: now,
        };
        let idx = match io.free.pop() {
            Some(i) => {
                io.conns[i as usize] = Some(slot);
                i
            }
            None => {
                io.conns.push(Some(slot));
                (io.conns.len() - 1) as u32
            }
        };
        self.core.rtmp_insert(idx, state);
        Some(idx)
    }

    /// A connection accepted on the RTMP listener, or on the HTTP-FLV one.
    pub(super) fn on_accept(&mut self, now: Instant, res: i32, more: bool, http: bool) {
        let Some(io) = self.rtmp.as_mut() else { return };
        if !more {
            if http {
                io.http_accept_armed = false;
            } else {
                io.accept_armed = false;
            }
        }
        if res < 0 {
            debug!(
                shard = self.cfg.index,
                "accept: {}",
                std::io::Error::from_raw_os_error(-res)
            );
            return;
        }
        // SAFETY: the kernel gave us this new descriptor; we own it now.
        let sock = unsafe { TcpStream::from_raw_fd(res) };
        let mut state = if http {
            ConnState::http_flv()
        } else {
            ConnState::default()
        };
        state.peer = match sock.peer_addr() {
            Ok(std::net::SocketAddr::V4(a)) => Some(a),
            _ => None,
        };
        let admission = match state.peer {
            Some(peer) => match self.admit(now, *peer.ip()) {
                Ok(a) => Some(a),
                Err((limit, max)) => {
                    self.turns.limits[limit as usize] += 1;
                    debug!(
                        shard = self.cfg.index,
                        %peer,
                        "RTMP connection refused: {} at its limit of {max}",
                        limit.name()
                    );
                    // Dropping the socket closes it: the client sees a reset.
                    return;
                }
            },
            None => None,
        };
        if let Some(idx) = self.adopt(now, sock, state, admission) {
            self.arm_tcp_recv(idx);
        }
    }

    /// Counts a new connection from `ip` in; at its address's limit, in
    /// place of a stalled one ([`STALLED`]) if this shard has one. Else the
    /// limit that refuses it, and its value.
    fn admit(&mut self, now: Instant, ip: std::net::Ipv4Addr) -> Result<Admission, (Limit, u32)> {
        let io = self.rtmp.as_mut().ok_or((Limit::RtmpConns, 0))?;
        let (max_total, max_per_ip) = (
            io.limits.rtmp_max_conns,
            io.limits.rtmp_max_nonplaying_per_ip,
        );
        match io.counter.admit(ip, &io.limits) {
            Ok(a) => Ok(a),
            Err(Refused::Total) => Err((Limit::RtmpConns, max_total)),
            Err(Refused::NonplayingPerIp) => self
                .evict_stalled(now, ip)
                .ok_or((Limit::RtmpNonplayingPerIp, max_per_ip)),
        }
    }

    /// Closes this shard's connection from `ip` that has been silent in
    /// set-up longest, if for [`STALLED`] or more, and hands its place in
    /// the per-IP count over (see [`STALLED`]). Scans the shard's
    /// connections: only on a refusal, which is rare unless under attack.
    fn evict_stalled(&mut self, now: Instant, ip: std::net::Ipv4Addr) -> Option<Admission> {
        let io = self.rtmp.as_mut()?;
        let core = &self.core;
        let (idx, _) = io
            .conns
            .iter()
            .enumerate()
            .filter_map(|(idx, slot)| {
                let slot = slot.as_ref()?;
                let stalled = !slot.closing
                    && slot.handoff.is_none()
                    && slot.admission.as_ref().is_some_and(|a| a.ip() == ip)
                    && !core.rtmp_is_set_up(idx as u32)
                    && now.saturating_duration_since(slot.last_rx) >= STALLED;
                stalled.then_some((idx as u32, slot.last_rx))
            })
            .min_by_key(|&(_, last_rx)| last_rx)?;
        let place = io.conns[idx as usize].as_mut()?.admission.take();
        self.turns.limits[Limit::RtmpSetupStalled as usize] += 1;
        debug!(
            shard = self.cfg.index,
            idx,
            "closing an RTMP connection stalled in set-up: a new one from {ip} takes its place"
        );
        self.close_tcp(idx, "stalled in set-up");
        self.maybe_release(idx);
        place
    }

    /// After a connection's input was handled: if it now plays, it stops
    /// counting against its IP's limit (see [`ConnCounter`]).
    fn note_playing(&mut self, idx: u32) {
        let Some(io) = self.rtmp.as_mut() else { return };
        let Some(Some(slot)) = io.conns.get_mut(idx as usize) else {
            return;
        };
        let Some(a) = slot.admission.as_mut().filter(|a| a.counts_per_ip()) else {
            return;
        };
        if self.core.rtmp_is_set_up(idx) && !self.core.rtmp_is_publisher(idx) {
            io.counter.playing(a);
        }
    }

    fn arm_tcp_recv(&mut self, idx: u32) {
        let Some(slot) = self.tcp_slot(idx) else {
            return;
        };
        if slot.recv_armed || slot.closing || slot.handoff.is_some() {
            return;
        }
        slot.recv_armed = true;
        let e = opcode::Recv::new(
            types::Fd(slot.sock.as_raw_fd()),
            slot.buf.as_mut_ptr(),
            slot.buf.len() as u32,
        )
        .build()
        .user_data(user_data(OP_TCP_RECV, slot.gen, idx));
        self.push_sqe(&e);
    }

    fn tcp_slot(&mut self, idx: u32) -> Option<&mut TcpSlot> {
        self.rtmp.as_mut()?.conns.get_mut(idx as usize)?.as_mut()
    }

    fn live_slot(&mut self, gen: u32, idx: u32) -> Option<&mut TcpSlot> {
        self.tcp_slot(idx).filter(|s| s.gen == gen)
    }

    pub(super) fn on_tcp_recv(&mut self, now: Instant, gen: u32, idx: u32, res: i32) {
        let Some(slot) = self.live_slot(gen, idx) else {
            return;
        };
        slot.recv_armed = false;
        if slot.closing || slot.handoff.is_some() {
            self.maybe_release(idx);
            return;
        }
        if res <= 0 {
            self.close_tcp(idx, "peer closed the connection");
            self.maybe_release(idx);
            return;
        }
        let n = res as usize;
        if let Some(slot) = self.tcp_slot(idx) {
            slot.last_rx = now;
        }
        // The receive buffer is lent to the hub for this call, then put back.
        let Some(buf) = self.tcp_slot(idx).map(|s| std::mem::take(&mut s.buf)) else {
            return;
        };
        // A bug reached through one connection's bytes closes that
        // connection, not the shard (see `Shard::on_recv`).
        let mark = self.core.output_mark();
        let handled = super::contained(|| self.core.handle_rtmp_bytes(now, idx, &buf[..n]));
        if let Some(slot) = self.tcp_slot(idx) {
            slot.buf = buf;
        }
        if let Err(why) = handled {
            self.rtmp_panic_contained(idx, &why, mark);
            return;
        }
        self.drain_core(now);
        self.note_playing(idx);
        self.arm_tcp_recv(idx);
    }

    /// A panic was contained while handling connection `idx`'s input: close
    /// it (its state in the core may be half-changed), drop what the core
    /// was asked for since `mark`, count it.
    fn rtmp_panic_contained(&mut self, idx: u32, why: &str, mark: crate::output::Mark) {
        self.turns.panics += 1;
        tracing::error!(
            shard = self.cfg.index,
            idx,
            "panic contained while handling an RTMP connection ({why}); closing it"
        );
        self.core.discard_outputs(mark);
        self.close_tcp(idx, "internal error");
        self.maybe_release(idx);
    }

    pub(super) fn on_tcp_send(&mut self, gen: u32, idx: u32, res: i32) {
        let Some(slot) = self.live_slot(gen, idx) else {
            return;
        };
        slot.out.bufs.clear();
        if res < 0 {
            self.close_tcp(idx, "send failed");
            self.maybe_release(idx);
            return;
        }
        if let Some(q) = self.core.rtmp_queue(idx) {
            q.consumed(res as usize);
        }
        self.pump(idx);
        self.maybe_release(idx);
    }

    /// Starts the next send if none is in flight: everything queued, up to
    /// [`SEND_IOVS`] buffers and [`SEND_BATCH`] bytes, in one `SendMsg`.
    /// Why vectored: a player that keeps up has a message or two queued,
    /// but one that fell behind (a GOP at join, a stall on its link) has
    /// dozens; one operation per message made catching up cost as much as
    /// falling behind, and at 2000 players one core could not do both.
    fn pump(&mut self, idx: u32) {
        let Some(io) = self.rtmp.as_mut() else { return };
        let Some(Some(slot)) = io.conns.get_mut(idx as usize) else {
            return;
        };
        if slot.out.in_flight() || slot.closing {
            return;
        }
        let out = &mut *slot.out;
        if let Some(q) = self.core.rtmp_queue(idx) {
            let mut bytes = 0;
            for b in q.front_bufs().take(SEND_IOVS) {
                if bytes >= SEND_BATCH {
                    break;
                }
                bytes += b.len();
                out.bufs.push(b.clone());
            }
        }
        if out.bufs.is_empty() {
            if slot.close_after_flush {
                self.close_tcp(idx, "closed after its last message");
                self.maybe_release(idx);
            }
            return;
        }
        let e = opcode::SendMsg::new(types::Fd(slot.sock.as_raw_fd()), out.prepare())
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(user_data(OP_TCP_SEND, slot.gen, idx));
        self.push_sqe(&e);
    }

    /// Does what the core asked for one connection.
    pub(super) fn run_action(&mut self, a: Action) {
        {
            match a {
                Action::Wake(idx) => self.pump(idx),
                Action::Close { idx, why, flush } => {
                    debug!(
                        shard = self.cfg.index,
                        idx, "closing RTMP connection: {why}"
                    );
                    match self.tcp_slot(idx) {
                        Some(slot) if flush => {
                            slot.close_after_flush = true;
                            self.pump(idx);
                        }
                        Some(_) => self.close_tcp(idx, &why),
                        None => {}
                    }
                    self.maybe_release(idx);
                }
                Action::Handoff { idx, shard, events } => {
                    if let Some(slot) = self.tcp_slot(idx) {
                        slot.handoff = Some((shard, events));
                    }
                    self.maybe_release(idx);
                }
            }
        }
    }

    /// Stops a connection: detached from its stream at once, the socket shut
    /// down so operations in flight complete, released when none is left.
    fn close_tcp(&mut self, idx: u32, why: &str) {
        let Some(io) = self.rtmp.as_mut() else { return };
        let Some(Some(slot)) = io.conns.get_mut(idx as usize) else {
            return;
        };
        if slot.closing {
            return;
        }
        slot.closing = true;
        debug!(idx, "RTMP connection closing: {why}");
        self.core.rtmp_remove(Instant::now(), idx);
        // SAFETY: shutdown(2) on a descriptor we own.
        unsafe { libc::shutdown(slot.sock.as_raw_fd(), libc::SHUT_RDWR) };
    }

    /// Frees a closing slot, or hands one over, once nothing is in flight.
    fn maybe_release(&mut self, idx: u32) {
        let Some(io) = self.rtmp.as_mut() else { return };
        let Some(Some(slot)) = io.conns.get_mut(idx as usize) else {
            return;
        };
        if slot.recv_armed || slot.out.in_flight() {
            return;
        }
        if slot.closing {
            if let Some(a) = slot.admission.take() {
                io.counter.release(a);
            }
            io.conns[idx as usize] = None;
            io.free.push(idx);
            return;
        }
        let Some((shard, events)) = slot.handoff.take() else {
            return;
        };
        let slot = io.conns[idx as usize].take().expect("checked above");
        io.free.push(idx);
        let Some(state) = self.core.rtmp_remove(Instant::now(), idx) else {
            if let Some(a) = slot.admission {
                io.counter.release(a);
            }
            return;
        };
        let handoff = Box::new(Handoff {
            sock: slot.sock,
            state,
            events,
            admission: slot.admission,
            accepted_at: slot.accepted_at,
        });
        // What could not be handed over comes back, to be released here.
        let undelivered = match io.peers.get(shard as usize) {
            Some(peer) => peer.send(handoff).err().map(|e| e.0),
            None => Some(handoff),
        };
        match undelivered {
            None => {
                self.cfg.region.doorbell(shard).ring();
                debug!(
                    shard = self.cfg.index,
                    to = shard,
                    "RTMP connection handed over"
                )
            }
            Some(h) => {
                if let Some(a) = h.admission {
                    io.counter.release(a);
                }
                warn!(
                    shard = self.cfg.index,
                    to = shard,
                    "RTMP hand-over failed; connection dropped"
                )
            }
        }
    }

    /// An RTMP publisher's RTP to the room's WebRTC players and RTP
    /// egresses, from its source (`Source::Rtmp` of its participant).
    pub(super) fn fan_out_rtp(&mut self, now: Instant, p: &RtpFromRtmp, kind: MediaKind) {
        let Some(inbound) = p.inbound(kind) else {
            return;
        };
        self.fan_out(now, &super::Plain::Bytes(&p.packet), &inbound);
    }

    /// Hands a job to the transcoder thread without waiting; a full queue
    /// is counted (against session `from`, if given).
    pub(super) fn send_job(&mut self, job: Job, from: Option<SessionId>) {
        let Some(tc) = self.transcode.as_ref() else {
            return;
        };
        if !tc.send(job) {
            self.turns.limits[Limit::TranscodeQueue as usize] += 1;
            if let Some(session) = from {
                self.core.count_drop_by_id(session, DropReason::Overload);
            }
        }
    }

    /// What the transcoder thread finished, into the core.
    pub(super) fn poll_transcoder(&mut self, now: Instant) {
        for _ in 0..256 {
            let Some(tc) = self.transcode.as_ref() else {
                return;
            };
            let Ok(done) = tc.from.try_recv() else { break };
            self.core.handle_transcoded(now, done);
        }
    }
}
