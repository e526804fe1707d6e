//! One shard: a pinned thread with its own io_uring and sockets, driving
//! its room core ([`crate::core::Core`]). The shard does I/O only: what
//! arrives goes into the core, and what the core's outputs ask for goes out.
//!
//! Drive loop, one turn:
//!
//! 1. beat the heartbeat in shared memory; read the doorbell (the futex
//!    word whoever gives the shard work bumps and wakes) and keep a futex
//!    wait on it armed;
//! 2. take the work others queued: commands from the controlplane ring
//!    (bind/close sockets, core changes), RTMP connections handed over by
//!    other shards, DTLS and transcoder results; arm multishot receives for
//!    new sockets (and re-arm ended ones); run what is due (the core's
//!    timeout, counters to the controlplane every [`STATS_EVERY`], the RTMP
//!    timeouts) and drain the core's outputs;
//! 3. submit everything queued and sleep until a completion (I/O, or the
//!    doorbell) or the earliest deadline: no fixed wake interval, so an idle
//!    shard turns a few times a second, not 500;
//! 4. for each completion: a datagram goes through the core (unprotected
//!    in place, bridged to the participant's RTMP players); if it is media
//!    its receive buffer is held for the turn's fan-out; RTMP bytes go to
//!    the core too; a finished send frees its slots;
//! 5. take the packets that arrived meanwhile (a frame's tail), then fan the
//!    held media out subscriber by subscriber: each egress gets all of the
//!    turn's packets at once, each copied into a send slot, rewritten and
//!    protected there, and added to that egress's GSO batch ([`gso`]);
//!    every [`SUBMIT_EVERY_BYTES`] the batches so far are sealed and handed
//!    to the kernel; when every slot is in flight, the shard seals the
//!    batches, submits and waits up to [`RECLAIM_WAIT`] for some to come back;
//! 6. drain the core's outputs (control datagrams, DTLS records, RTMP
//!    actions, transcoder jobs, RTMP publishers' RTP to fan out, events);
//! 7. seal the turn's remaining batches: one `SendMsg` per egress (with
//!    `UDP_SEGMENT` when it holds several packets).
//!
//! Why subscriber by subscriber (measured, docs/PERFORMANCE.md): packet by
//! packet, a turn's 13 packets to 1000 subscribers were 13 000 slots (15 MB)
//! written before the first went to the kernel, which then copied them out
//! of memory rather than cache, and each subscriber's keys were loaded 13
//! times; at 400 packets/s in the shard used 0.78-0.80 cores, now 0.63-0.79
//! (four runs).

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_ring::msg::{
    Command, DropReason, EndReason, Event, Outcome, SessionStats, ShardStats, TURN_BUCKETS_US,
};
use gateway_ring::{Consumer, Producer, Region};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use tracing::{debug, error, info, warn};

use crate::core::{Core, CoreConfig, Removed};
use crate::dtls::{self, DtlsIdentity, DtlsLink, FromDtls, ToDtls};
use crate::media::{Handle, Inbound};
use crate::output::Output;
use crate::srtp::MAX_TRAILER;
use crate::uring::{bind_udp, parse_sockaddr_in, sockaddr_in, BufRing};

pub mod gso;
mod relay;
pub mod rtmp;
mod send;
use rtmp::{RtmpConfig, RtmpIo, OP_ACCEPT, OP_HTTP_ACCEPT, OP_TCP_RECV, OP_TCP_SEND};

/// Longest sleep where the kernel has no io_uring futex wait (before Linux
/// 6.7): without a doorbell, commands and other threads' results are seen
/// only when the loop turns.
pub const NO_DOORBELL_WAIT: Duration = Duration::from_millis(2);
/// How often changed session counters go to the controlplane.
pub const STATS_EVERY: Duration = Duration::from_millis(250);

/// Longest a turn handles completions before it lets the loop go round
/// (heartbeat, commands, stats); the rest wait for the next turn. Only an
/// overloaded shard gets there. Not shorter: a turn's end seals its GSO
/// batches, and at the edge of capacity (1 → 1000 at 600 packets/s in)
/// budgets of 20 and 100 ms split frames often enough to lose throughput
/// (480-495k packets/s out against 604k with 250 ms, same build).
const REAP_BUDGET: Duration = Duration::from_millis(250);

/// Most extra reaps per turn for packets that arrived meanwhile ([`Shard::drain_arrivals`]).
const DRAIN_PASSES: usize = 4;
/// No extra reap once the turn has been busy this long.
const DRAIN_BUDGET: Duration = Duration::from_millis(1);

/// Most received media packets held for the turn's fan-out before it runs
/// anyway ([`Shard::fan_out_held`]); their receive buffers wait with them.
const HOLD_MAX: usize = 64;
/// During a fan-out, sealed batches go to the kernel every this many bytes
/// prepared: the kernel copies them out while they are still in cache (the
/// L2 is 1-2 MiB here), and the first subscribers' sends leave before the
/// last ones are encrypted.
const SUBMIT_EVERY_BYTES: usize = 256 * 1024;

/// Longest wait for a send slot to come back when all are in flight.
pub const RECLAIM_WAIT: Duration = Duration::from_millis(1);

const RECV_BUFS: u16 = 4096;
const RECV_BUF_SIZE: usize = 2048;
const SEND_SLOTS: usize = 16384;
/// A forwarded packet with its SRTP trailer ([`crate::rtp::MAX_PACKET`] is
/// checked where packets enter; `send_copy` checks again, never trusting it).
const SEND_BUF_SIZE: usize = crate::rtp::MAX_PACKET + MAX_TRAILER;
const SQ_ENTRIES: u32 = 4096;
const BGID: u16 = 0;

const OP_RECV: u64 = 1;
const OP_SEND: u64 = 2;
const OP_CANCEL: u64 = 3;
/// A GSO batch of media (`index` is the batch); RTMP and HTTP-FLV use 4-6 and 8.
const OP_GSO_SEND: u64 = 7;
/// The futex wait on the doorbell ended: something was queued for us.
const OP_DOORBELL: u64 = 9;
/// futex2 flags of a 32-bit, process-shared word (`FUTEX2_SIZE_U32`, no
/// `FUTEX2_PRIVATE`: the controlplane rings from its own process).
const FUTEX2_SIZE_U32: u32 = 0x02;
/// Any waker's bitset matches (`FUTEX_BITSET_MATCH_ANY`: a plain FUTEX_WAKE).
const FUTEX_BITSET_MATCH_ANY: u64 = 0xffff_ffff;

fn user_data(op: u64, gen: u32, index: u32) -> u64 {
    (op << 56) | (((gen & 0xff_ffff) as u64) << 32) | index as u64
}

fn split_user_data(u: u64) -> (u64, u32, u32) {
    (u >> 56, ((u >> 32) & 0xff_ffff) as u32, u as u32)
}

/// The wall clock as a 64-bit NTP timestamp (seconds since 1900 . fraction).
fn ntp_now() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    let frac = ((d.subsec_nanos() as u64) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// A received media packet waiting for the turn's fan-out: its plaintext
/// stays in receive buffer `bid` at `start` until then.
#[derive(Clone, Copy)]
struct Held {
    bid: u16,
    start: usize,
    inbound: Inbound,
}

/// Where the plaintext of a packet to fan out is.
enum Plain<'a> {
    /// In the receive buffer `bid`, at `start`.
    Recv { bid: u16, start: usize },
    /// Elsewhere: RTMP video packetized as RTP, a packet another shard
    /// relayed.
    Bytes(&'a [u8]),
}

pub struct ShardConfig {
    pub index: u32,
    pub bind_ip: Ipv4Addr,
    pub region: Region,
    pub epoch: u64,
    /// Core to pin to, if any.
    pub core: Option<usize>,
    /// The DTLS certificate WebRTC sessions present.
    pub dtls: DtlsIdentity,
    /// RTMP and HTTP-FLV listeners and hand-over channels; `None` with both off.
    pub rtmp: Option<RtmpConfig>,
    /// Batch each turn's packets to one destination into UDP GSO sends.
    pub gso: bool,
    /// What one client may cost (see [`crate::limits`]).
    pub limits: crate::limits::Limits,
    /// Honour the test-only panic triggers ([`PANIC_SESSION`], [`PANIC_SHARD`]).
    pub panic_triggers: bool,
    /// This shard's links to the others (`None` with one shard).
    pub relay: Option<crate::relay::Link>,
}

/// Test-only (with `--test-panic-triggers`): a datagram starting with this
/// panics while its session's input is handled, as a bug would.
pub const PANIC_SESSION: &[u8] = b"MGW-TEST-PANIC-SESSION";
/// Test-only: a datagram starting with this panics the shard outside any
/// session, at the end of the turn.
pub const PANIC_SHARD: &[u8] = b"MGW-TEST-PANIC-SHARD";

/// Runs one session's input handler; a panic in it is caught and its
/// message returned, so the caller ends that session and the shard goes on.
/// The panic hook (set in `main`) has logged it with its location already.
fn contained<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| panic_message(&*p))
}

/// The message a panic carried (`panic!` makes a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

struct SocketSlot {
    sock: UdpSocket,
    gen: u32,
    armed: bool,
}

/// A send in flight: the kernel reads `msg`, `iov`, `addr` and `buf` until
/// the completion arrives, so slots live in a boxed slice that never moves.
#[repr(C)]
struct SendSlot {
    msg: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_in,
    session: Handle,
    buf: [u8; SEND_BUF_SIZE],
}

pub struct Shard {
    // Field order is drop order: the ring goes before the buffers it points into.
    ring: IoUring,
    bufs: BufRing,
    sends: Box<[SendSlot]>,
    free_sends: Vec<u32>,
    gso: gso::Batcher,
    /// Open batches being sealed (kept to reuse its allocation).
    sealing: Vec<u32>,
    recv_msg: Box<libc::msghdr>,
    sockets: Vec<Option<SocketSlot>>,
    next_gen: u32,
    core: Core,
    cfg: ShardConfig,
    commands: Consumer,
    events: Producer,
    outbox: VecDeque<Event>,
    /// Completions to handle, oldest first; what a turn leaves when its
    /// [`REAP_BUDGET`] runs out waits here for the next turn.
    cqes: VecDeque<(u64, i32, u32)>,
    /// Completions taken by `collect_completions` (kept to reuse its allocation).
    spill: Vec<(u64, i32, u32)>,
    fanout: Vec<Handle>,
    /// Media received this turn, fanned out together at its end.
    held: Vec<Held>,
    stats: Vec<SessionStats>,
    next_stats: Instant,
    dtls: DtlsLink,
    rtmp: Option<RtmpIo>,
    /// Opus ↔ AAC off the packet loop (with RTMP on).
    transcode: Option<crate::transcode::TranscodeLink>,
    /// Loop-turn timing since start, reported with the session counters.
    turns: ShardStats,
    /// Rung by whoever queues work for this shard (see the module doc).
    doorbell: gateway_ring::Doorbell,
    /// A futex wait on the doorbell is in the ring.
    doorbell_armed: bool,
    /// The kernel took our futex wait (false after it refused one).
    doorbell_works: bool,
    /// Links to the other shards (see `relay.rs`), and the announcements
    /// a relayed packet goes after (kept to reuse its allocation).
    relay: Option<crate::relay::Link>,
    announce: Vec<(u32, crate::relay::Message)>,
    /// Datagrams received whose session is gone, or that do not parse as a message.
    pub stray: u64,
    /// Test-only: [`PANIC_SHARD`] arrived.
    panic_at_turn_end: bool,
}

impl Shard {
    pub fn new(mut cfg: ShardConfig) -> io::Result<Shard> {
        let ring = IoUring::builder()
            .setup_cqsize(SQ_ENTRIES * 4)
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(SQ_ENTRIES)?;
        let bufs = BufRing::register(&ring.submitter(), BGID, RECV_BUFS, RECV_BUF_SIZE)?;
        // SAFETY: SendSlot is plain data (pointers, integers, bytes); all-zero is valid.
        let sends: Box<[SendSlot]> = (0..SEND_SLOTS)
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        // SAFETY: as above for msghdr.
        let mut recv_msg: Box<libc::msghdr> = Box::new(unsafe { std::mem::zeroed() });
        recv_msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let doorbell = cfg.region.doorbell(cfg.index);
        let dtls = dtls::spawn(
            cfg.index,
            cfg.dtls.clone(),
            cfg.limits.dtls_queue,
            doorbell.clone(),
        )?;
        let core = Core::new(
            CoreConfig {
                shard: cfg.index,
                shards: cfg.region.shards(),
                limits: cfg.limits,
                gop_cache: cfg.rtmp.as_ref().is_some_and(|r| r.gop_cache),
                auto_room: cfg.rtmp.as_ref().is_some_and(|r| r.auto_room),
                tokens: cfg.rtmp.as_ref().and_then(|r| r.tokens.clone()),
                random: crate::core::system_random(),
            },
            Instant::now(),
        );
        let rtmp = cfg.rtmp.take().map(RtmpIo::new);
        let relay = cfg.relay.take();
        let transcode = match &rtmp {
            Some(_) => Some(crate::transcode::spawn(
                cfg.index,
                cfg.limits.transcode_queue,
                crate::limits::bframe_reencodes(&cfg.limits) > 0
                    || crate::limits::video_transcodes(&cfg.limits) > 0,
                doorbell.clone(),
            )?),
            None => None,
        };
        Ok(Shard {
            ring,
            bufs,
            sends,
            free_sends: (0..SEND_SLOTS as u32).rev().collect(),
            gso: gso::Batcher::new(cfg.gso),
            sealing: Vec::new(),
            recv_msg,
            sockets: Vec::new(),
            next_gen: 1,
            core,
            commands: cfg.region.command_consumer(cfg.index),
            events: cfg.region.event_producer(cfg.index),
            cfg,
            outbox: VecDeque::new(),
            cqes: VecDeque::with_capacity(SQ_ENTRIES as usize * 8),
            spill: Vec::with_capacity(SQ_ENTRIES as usize * 4),
            fanout: Vec::new(),
            held: Vec::with_capacity(HOLD_MAX),
            // The most a report takes of UDP sessions: never grown on the media path.
            stats: Vec::with_capacity(1024),
            next_stats: Instant::now(),
            dtls,
            transcode,
            rtmp,
            turns: ShardStats::default(),
            doorbell,
            doorbell_armed: false,
            doorbell_works: true,
            relay,
            announce: Vec::new(),
            stray: 0,
            panic_at_turn_end: false,
        })
    }

    /// Runs until `stop` is set.
    pub fn run(mut self, stop: Arc<AtomicBool>) -> io::Result<()> {
        if let Some(core) = self.cfg.core {
            match crate::uring::pin_to_core(core) {
                Ok(()) => info!(shard = self.cfg.index, core, "shard pinned"),
                Err(e) => warn!(shard = self.cfg.index, core, "could not pin shard: {e}"),
            }
        }
        while !stop.load(Ordering::Relaxed) {
            let turn_start = Instant::now();
            self.cfg.region.beat_shard(self.cfg.index);
            self.core.set_draining(self.cfg.region.draining());
            // Read before looking for work: a ring after this ends the sleep.
            self.arm_doorbell();
            self.poll_commands(turn_start);
            self.drain_relay(turn_start);
            self.arm_receives();
            self.rtmp_turn(turn_start);
            self.poll_dtls(turn_start);
            self.poll_transcoder(turn_start);
            self.run_due(turn_start);
            self.drain_core(turn_start);
            self.seal_batches();
            self.flush_events();
            self.wake_peers();
            let before_wait = Instant::now();
            // With a backlog from the last turn (or another shard's): submit,
            // do not sleep.
            let wait = if self.cqes.is_empty() && !self.relay_pending() {
                let until = self.next_deadline().saturating_duration_since(before_wait);
                match self.doorbell_works {
                    true => until,
                    false => until.min(NO_DOORBELL_WAIT),
                }
            } else {
                Duration::ZERO
            };
            self.submit_and_wait(wait)?;
            let after_wait = Instant::now();
            self.reap(after_wait);
            self.drain_arrivals(after_wait);
            let now = Instant::now();
            self.fan_out_held(now);
            self.drain_core(now);
            self.seal_batches();
            self.wake_peers();
            // Busy time of the turn: everything but the sleep.
            let busy = before_wait.duration_since(turn_start) + after_wait.elapsed();
            self.record_turn(busy);
            self.flush_events();
            if std::mem::take(&mut self.panic_at_turn_end) {
                panic!("test trigger: a bug in the shard loop, outside any session");
            }
        }
        info!(
            shard = self.cfg.index,
            sessions = self.core.session_count(),
            "shard stopping"
        );
        Ok(())
    }

    /// Keeps a futex wait on the doorbell in the ring, armed with the value
    /// read now: if anyone rings before the kernel looks, the wait ends at
    /// once (the word differs), so no work queued after this read sleeps.
    fn arm_doorbell(&mut self) {
        if self.doorbell_armed || !self.doorbell_works {
            return;
        }
        let word = self.doorbell.word();
        let seen = word.load(Ordering::Acquire);
        let e = opcode::FutexWait::new(
            word.as_ptr(),
            seen as u64,
            FUTEX_BITSET_MATCH_ANY,
            FUTEX2_SIZE_U32,
        )
        .build()
        .user_data(user_data(OP_DOORBELL, 0, 0));
        self.push_sqe(&e);
        self.doorbell_armed = true;
    }

    /// The doorbell's wait ended: rung (0), or the word had moved before
    /// the kernel looked (EAGAIN). Anything else: this kernel cannot wait
    /// on a futex in io_uring, and the loop turns every [`NO_DOORBELL_WAIT`].
    fn on_doorbell(&mut self, res: i32) {
        self.doorbell_armed = false;
        if res >= 0 || res == -libc::EAGAIN || res == -libc::EINTR {
            return;
        }
        warn!(
            shard = self.cfg.index,
            "io_uring futex wait refused ({}): the shard turns every {:?} to look for work",
            io::Error::from_raw_os_error(-res),
            NO_DOORBELL_WAIT
        );
        self.doorbell_works = false;
    }

    /// What is due now: the core's timeout, counters to the controlplane.
    fn run_due(&mut self, now: Instant) {
        if now >= self.core.poll_timeout() {
            self.core.handle_timeout(now, ntp_now());
        }
        if now >= self.next_stats {
            self.next_stats = now + STATS_EVERY;
            self.push_stats();
        }
    }

    /// The earliest deadline: the core's, the next counters, RTMP timeouts.
    fn next_deadline(&self) -> Instant {
        let mut at = self.core.poll_timeout().min(self.next_stats);
        if let Some(sweep) = self.rtmp.as_ref().and_then(|io| io.next_sweep) {
            at = at.min(sweep);
        }
        at
    }

    /// Packets that arrived while this turn worked join its fan-out. Under a
    /// frame burst the first packet wakes the shard, and the rest land while
    /// it handles that one: reaped now, a frame leaves as one GSO send per
    /// egress rather than 1 + (k-1). Bounded by [`DRAIN_PASSES`] and
    /// [`DRAIN_BUDGET`] so the first packet's sends are not held back long.
    fn drain_arrivals(&mut self, turn_start: Instant) {
        for _ in 0..DRAIN_PASSES {
            let backlog = !self.cqes.is_empty();
            let waiting = !self.held.is_empty() || self.gso.has_open();
            if backlog || !waiting || turn_start.elapsed() >= DRAIN_BUDGET {
                return;
            }
            // Entering the kernel runs the deferred receive completions
            // (coop taskrun); it also starts the control sends queued so far.
            if !self.submit() {
                return;
            }
            if self.ring.completion().is_empty() {
                return;
            }
            self.reap(Instant::now());
        }
    }

    fn record_turn(&mut self, busy: Duration) {
        let us = busy.as_micros() as u64;
        let b = TURN_BUCKETS_US
            .iter()
            .position(|&bound| us <= bound)
            .unwrap_or(TURN_BUCKETS_US.len());
        self.turns.turns[b] += 1;
        self.turns.busy_us += us;
    }

    fn emit(&mut self, e: Event) {
        self.outbox.push_back(e);
    }

    fn flush_events(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        while let Some(e) = self.outbox.front() {
            if self.events.push_deferred(e).is_err() {
                // The controlplane is behind or away; keep the rest for later turns.
                break;
            }
            self.outbox.pop_front();
        }
        // One publication for the whole batch.
        self.events.publish();
    }

    fn poll_commands(&mut self, now: Instant) {
        // Bound the work per turn so media keeps flowing under a command burst.
        for _ in 0..256 {
            match self.commands.pop::<Command>() {
                None => break,
                Some(Ok(c)) => self.apply(now, c),
                Some(Err(e)) => warn!(shard = self.cfg.index, "undecodable command dropped: {e}"),
            }
        }
    }

    fn apply(&mut self, now: Instant, c: Command) {
        let request = c.request();
        let outcome = match c {
            Command::CreateRoom(spec) => self.core.add_room(spec),
            Command::DeleteRoom { room } => match self.core.remove_room(now, room) {
                Some(handles) => {
                    for h in handles {
                        self.close_socket(h);
                    }
                    Outcome::Ok
                }
                None => Outcome::NotFound,
            },
            Command::CreateIngest(spec) => {
                let port = spec.port;
                self.open_session(port, |c| c.add_ingest(spec))
            }
            Command::CreateEgress(spec) => {
                let port = spec.port;
                self.open_session(port, |c| c.add_egress(spec))
            }
            Command::CreateWebrtc(spec) => {
                let (session, port) = (spec.session, spec.port);
                let (fingerprint, role) = (spec.remote_fingerprint, spec.dtls_role);
                let outcome = self.open_session(port, |c| c.add_webrtc(now, spec));
                if outcome == Outcome::Ok {
                    self.dtls.send(ToDtls::Open {
                        session,
                        fingerprint,
                        role,
                    });
                }
                outcome
            }
            Command::DeleteSession { session } => match self.core.remove_session(now, session) {
                Removed::Socket(h) => {
                    self.close_socket(h);
                    Outcome::Ok
                }
                // Its connection closes through an output.
                Removed::Rtmp => Outcome::Ok,
                Removed::NotFound => Outcome::NotFound,
            },
            Command::Resync => {
                let everything = self.core.resync();
                self.outbox.extend(everything);
                self.emit(Event::ResyncDone {
                    epoch: self.cfg.epoch,
                });
                return;
            }
        };
        debug!(
            shard = self.cfg.index,
            ?request,
            ?outcome,
            "command applied"
        );
        // Every command but Resync (which returned above) names a request.
        if let Some(request) = request {
            self.emit(Event::Done { request, outcome });
        }
    }

    fn open_session(
        &mut self,
        port: u16,
        add: impl FnOnce(&mut Core) -> Result<Handle, Outcome>,
    ) -> Outcome {
        let sock = match bind_udp(self.cfg.bind_ip, port) {
            Ok(s) => s,
            Err(e) => {
                warn!(shard = self.cfg.index, port, "bind failed: {e}");
                return Outcome::PortInUse;
            }
        };
        match add(&mut self.core) {
            Ok(h) => {
                let gen = self.next_gen;
                self.next_gen = (self.next_gen + 1) & 0xff_ffff;
                let idx = h as usize;
                if self.sockets.len() <= idx {
                    self.sockets.resize_with(idx + 1, || None);
                }
                self.sockets[idx] = Some(SocketSlot {
                    sock,
                    gen,
                    armed: false,
                });
                Outcome::Ok
            }
            Err(o) => o,
        }
    }

    fn close_socket(&mut self, h: Handle) {
        if let Some(slot) = self.sockets.get_mut(h as usize).and_then(Option::take) {
            if slot.armed {
                let target = user_data(OP_RECV, slot.gen, h);
                let cancel = opcode::AsyncCancel::new(target)
                    .build()
                    .user_data(user_data(OP_CANCEL, 0, 0));
                self.push_sqe(&cancel);
            }
            // Packets batched for it this turn were never submitted.
            self.gso.drop_session(h, &mut self.free_sends);
            // Dropping the socket closes our fd; the kernel releases the port
            // once the cancelled receive lets go of the file.
            drop(slot.sock);
        }
    }

    fn push_sqe(&mut self, e: &squeue::Entry) {
        loop {
            // SAFETY: every entry we build points into memory that outlives the
            // operation (boxed msghdr, send slots, buffer ring).
            if unsafe { self.ring.submission().push(e) }.is_ok() {
                return;
            }
            // Submission queue full: hand what we have to the kernel.
            self.submit();
        }
    }

    /// Hands the queued entries to the kernel without waiting; false (and
    /// logged) if it refused them.
    fn submit(&mut self) -> bool {
        match self.ring.submit() {
            Ok(_) => true,
            Err(e) => {
                warn!(shard = self.cfg.index, "submit failed: {e}");
                false
            }
        }
    }

    fn arm_receives(&mut self) {
        for i in 0..self.sockets.len() {
            let Some(slot) = self.sockets[i].as_mut() else {
                continue;
            };
            if slot.armed {
                continue;
            }
            slot.armed = true;
            let fd = types::Fd(slot.sock.as_raw_fd());
            let e = opcode::RecvMsgMulti::new(fd, &*self.recv_msg as *const _, BGID)
                .build()
                .user_data(user_data(OP_RECV, slot.gen, i as u32));
            self.push_sqe(&e);
        }
    }

    fn reap(&mut self, now: Instant) {
        self.collect_completions();
        // `reclaim_sends` may append completions it found while waiting for
        // free send slots; under overload that would never end, so the turn
        // stops after its budget and the heartbeat, commands and stats go on.
        // Receive buffers held by the backlog are what bounds it: when all
        // are taken the kernel drops at the socket.
        while let Some((ud, res, flags)) = self.cqes.pop_front() {
            let (op, gen, index) = split_user_data(ud);
            match op {
                OP_RECV => self.on_recv(now, gen, index, res, flags),
                OP_ACCEPT => self.on_accept(now, res, cqueue::more(flags), false),
                OP_HTTP_ACCEPT => self.on_accept(now, res, cqueue::more(flags), true),
                OP_TCP_RECV => self.on_tcp_recv(now, gen, index, res),
                OP_TCP_SEND => self.on_tcp_send(gen, index, res),
                OP_DOORBELL => self.on_doorbell(res),
                _ => {}
            }
            if now.elapsed() >= REAP_BUDGET {
                break;
            }
        }
    }

    fn on_recv(&mut self, now: Instant, gen: u32, index: u32, res: i32, flags: u32) {
        let bid = cqueue::buffer_select(flags);
        let live = matches!(self.sockets.get(index as usize), Some(Some(s)) if s.gen == gen);
        if live && !cqueue::more(flags) {
            // The multishot receive ended (ENOBUFS, or an error): re-arm next turn.
            if let Some(Some(s)) = self.sockets.get_mut(index as usize) {
                s.armed = false;
            }
            if res < 0 && res != -libc::ENOBUFS {
                debug!(
                    shard = self.cfg.index,
                    index,
                    "receive ended: {}",
                    io::Error::from_raw_os_error(-res)
                );
            }
        }
        let Some(bid) = bid else { return };
        if res > 0 && live {
            // A bug reached through one session's bytes costs that session,
            // not the shard: everything `on_datagram` touches belongs to it,
            // and a held buffer is pushed last, after anything can panic.
            let mark = self.core.output_mark();
            match contained(|| self.on_datagram(now, index, bid, res as usize)) {
                Ok(true) => {
                    // Held for the fan-out, which recycles the buffer.
                    if self.held.len() >= HOLD_MAX {
                        self.fan_out_held(now);
                    }
                    return;
                }
                Ok(false) => {}
                Err(why) => {
                    self.core.discard_outputs(mark);
                    self.end_after_panic(now, index, &why);
                }
            }
        } else if res > 0 {
            self.stray += 1;
        }
        self.bufs.recycle(bid);
    }

    /// A panic was contained while handling session `h`: end it (reason
    /// [`EndReason::Internal`], so its client and the operator hear of it),
    /// count it.
    fn end_after_panic(&mut self, now: Instant, h: Handle, why: &str) {
        self.turns.panics += 1;
        let session = self.core.session_id(h);
        error!(
            shard = self.cfg.index,
            ?session,
            "panic contained while handling a session's input ({why}); ending that session"
        );
        if let Some(session) = session {
            self.core.end_session(now, session, EndReason::Internal);
        }
    }

    /// Handles one datagram; returns whether its buffer is held as media
    /// for this turn's fan-out.
    fn on_datagram(&mut self, now: Instant, h: Handle, bid: u16, len: usize) -> bool {
        let msg = &*self.recv_msg;
        let buf = self.bufs.buf_mut(bid, len);
        let Ok(out) = types::RecvMsgOut::parse(buf, msg) else {
            self.core.count_drop(h, DropReason::Malformed);
            return false;
        };
        if out.is_payload_truncated() {
            // Larger than the receive buffer: far over `rtp::MAX_PACKET`.
            self.core.count_drop(h, DropReason::Oversize);
            return false;
        }
        let Some(src) = parse_sockaddr_in(out.name_data()) else {
            self.core.count_drop(h, DropReason::Malformed);
            return false;
        };
        let start = out.payload_data().as_ptr() as usize - buf.as_ptr() as usize;
        let end = start + out.payload_data().len();
        if self.cfg.panic_triggers {
            let payload = &buf[start..end];
            if payload.starts_with(PANIC_SESSION) {
                panic!("test trigger: a bug in session {h}'s input handling");
            }
            self.panic_at_turn_end |= payload.starts_with(PANIC_SHARD);
        }
        let Some(inbound) = self.core.handle_datagram(now, h, src, &mut buf[start..end]) else {
            return false;
        };
        // Within capacity (the caller fans out at HOLD_MAX): no allocation, no panic.
        self.held.push(Held {
            bid,
            start,
            inbound,
        });
        true
    }

    /// Results from the DTLS thread: records to send, keys, failures.
    fn poll_dtls(&mut self, now: Instant) {
        // Bounded per turn, like commands.
        for _ in 0..1024 {
            let Ok(m) = self.dtls.from.try_recv() else {
                break;
            };
            match m {
                FromDtls::Send { session, data } => {
                    if let Some((h, dest)) = self.core.dtls_destination(session) {
                        self.send_control(h, dest, &data);
                    }
                }
                FromDtls::Keys { session, rx, tx } => {
                    info!(shard = self.cfg.index, %session, suite = ?rx.suite, "DTLS-SRTP connected");
                    self.core.handle_dtls_keys(now, session, &rx, &tx);
                }
                FromDtls::Failed { session, .. } => {
                    self.core.end_session(now, session, EndReason::DtlsFailed)
                }
            }
        }
    }

    /// Does what the core asks, until it asks nothing more: sends, DTLS
    /// records to the DTLS thread, sockets to close, RTMP actions,
    /// transcoder jobs, RTMP publishers' RTP to fan out, events.
    fn drain_core(&mut self, now: Instant) {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Transmit(c) => {
                    self.send_control(c.from, c.dest, &c.data);
                    self.core.recycle(c.data);
                }
                Output::Dtls { session, data } => {
                    if !self.dtls.send_datagram(session, data) {
                        self.core.count_drop_by_id(session, DropReason::Overload);
                    }
                }
                // Never dropped, unlike datagrams: a lost start would leave
                // the handshake waiting for good.
                Output::DtlsStart { session } => self.dtls.send(ToDtls::Start { session }),
                Output::DtlsClosed { session } => self.dtls.send(ToDtls::Close { session }),
                Output::CloseSocket(h) => self.close_socket(h),
                Output::Event(e) => self.emit(e),
                Output::Rtmp(a) => self.run_action(a),
                Output::Transcode { job, from } => self.send_job(job, from),
                Output::Rtp { rtp, kind } => self.fan_out_rtp(now, &rtp, kind),
                Output::Relay { to, msg } => {
                    if let Some(link) = self.relay.as_mut() {
                        link.send(to, msg);
                    }
                }
            }
        }
    }

    /// Submits everything queued and waits for one completion or `timeout`.
    /// A timeout, a signal or a full completion queue are not errors: the
    /// caller reaps whatever is there.
    fn submit_and_wait(&mut self, timeout: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn push_stats(&mut self) {
        self.turns.shard = self.cfg.index;
        self.stats.clear();
        self.core.take_dirty_stats(&mut self.stats, 1024);
        let mut turns = self.turns;
        for (total, hub) in turns.limits.iter_mut().zip(self.core.rtmp_limit_hits()) {
            *total += hub;
        }
        turns.limits[gateway_ring::msg::Limit::RelayLane as usize] +=
            self.relay.as_ref().map_or(0, |l| l.dropped);
        self.outbox.push_back(Event::Shard(turns));
        for k in 0..self.stats.len() {
            self.outbox.push_back(Event::Stats(self.stats[k]));
        }
    }
}

/// Builds a shard and runs it on the current thread.
pub fn run_shard(cfg: ShardConfig, stop: Arc<AtomicBool>) -> io::Result<()> {
    let shard = Shard::new(cfg)?;
    shard.run(stop)
}
