//! A shard on a real io_uring, driven through a real shared-memory region:
//! commands in, RTP through loopback sockets, events and counters out; and
//! proof that forwarding a packet allocates nothing on the shard's thread,
//! nor on two shards that serve one room.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{Ipv4Addr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::shard::{run_shard, ShardConfig};
use gateway_ring::msg::{
    Command, DropReason, EgressSpec, Event, IngestSpec, MediaKind, Outcome, Request, RoomSpec,
    SrtpKey, SrtpSuite,
};
use gateway_ring::{Consumer, Producer, Region, RoomId, SessionId};

/// Counts allocations (and reallocations) made on threads that opted in:
/// the shard's thread in these tests.
struct CountingAlloc;

static SHARD_ALLOCS: AtomicU64 = AtomicU64::new(0);
/// The two shards of the two-shard test (tests of this file run in parallel).
static PAIR_ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Which counter this thread's allocations go to, if any.
    static COUNTED: Cell<Option<&'static AtomicU64>> = const { Cell::new(None) };
}

fn count() {
    // `try_with`: the thread-local may be gone while a thread exits.
    if let Some(counter) = COUNTED.try_with(Cell::get).ok().flatten() {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: forwards to the system allocator; counting has no effect on it.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_event(region: &mut gateway_ring::Consumer, mut want: impl FnMut(&Event) -> bool) -> Event {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(Ok(e)) = region.pop::<Event>() {
            if want(&e) {
                return e;
            }
            continue;
        }
        assert!(Instant::now() < deadline, "timed out waiting for an event");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn rtp(pt: u8, seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, pt];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
    p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    p.extend_from_slice(&[0xab; 1000]);
    p
}

/// A shard on its own thread with one room: an SRTP ingest and two RTP
/// egresses (plain to `rx1`, SRTP to `rx2`).
struct Relay {
    path: std::path::PathBuf,
    region: Region,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
    cmd: Producer,
    evt: Consumer,
    key: SrtpKey,
    ing_port: u16,
    rx1: UdpSocket,
    rx2: UdpSocket,
}

/// Shard `index` of `region` on loopback, unpinned, without RTMP, with its
/// links to the other shards (`relay`).
fn shard_config(region: &Region, index: u32, relay: Option<dataplane::relay::Link>) -> ShardConfig {
    ShardConfig {
        relay,
        index,
        bind_ip: Ipv4Addr::LOCALHOST,
        region: region.clone(),
        epoch: 1,
        core: None,
        dtls: dataplane::dtls::DtlsIdentity::generate().unwrap(),
        rtmp: None,
        gso: true,
        limits: Default::default(),
        panic_triggers: false,
    }
}

/// With `count_allocs`, the shard thread's allocations go to `SHARD_ALLOCS`
/// (one test only: tests of this file run in parallel).
fn start_relay(name: &str, count_allocs: bool) -> Relay {
    let path = std::env::temp_dir().join(format!("gw-{name}-{}", std::process::id()));
    let region = Region::create(&path, 1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let cfg = shard_config(&region, 0, None);
    let s = stop.clone();
    let thread = std::thread::spawn(move || {
        COUNTED.set(count_allocs.then_some(&SHARD_ALLOCS));
        run_shard(cfg, s).unwrap()
    });
    let mut cmd = region.command_producer(0);
    let mut evt = region.event_consumer(0);
    let key = SrtpKey::new(SrtpSuite::AeadAes128Gcm, &[5; 28]).unwrap();
    let (ing_port, e1_port, e2_port) = (free_port(), free_port(), free_port());
    let rx1 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rx2 = UdpSocket::bind("127.0.0.1:0").unwrap();
    for r in [&rx1, &rx2] {
        r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        roomy(r);
    }
    let room = RoomId::new(1);
    let commands = [
        Command::CreateRoom(RoomSpec {
            room,
            name: "t".into(),
        }),
        srtp_ingest(room, ing_port, key),
        egress(room, 11, e1_port, &rx1, None),
        egress(room, 12, e2_port, &rx2, Some(key)),
    ];
    for c in commands {
        apply(&mut cmd, &mut evt, c);
    }

    Relay {
        path,
        region,
        stop,
        thread,
        cmd,
        evt,
        key,
        ing_port,
        rx1,
        rx2,
    }
}

/// Room `room`'s SRTP video ingest 10 (participant "cam", payload type 100) on `port`.
fn srtp_ingest(room: RoomId, port: u16, key: SrtpKey) -> Command {
    Command::CreateIngest(IngestSpec {
        session: SessionId::new(10),
        room,
        port,
        kind: MediaKind::Video,
        payload_type: 100,
        clock_rate: 90_000,
        srtp: Some(key),
        created_ms: 0,
        participant: "cam".into(),
    })
}

/// Room `room`'s RTP egress `id` on `port`, to the socket `rx` (SRTP with `srtp`).
fn egress(room: RoomId, id: u64, port: u16, rx: &UdpSocket, srtp: Option<SrtpKey>) -> Command {
    Command::CreateEgress(EgressSpec {
        session: SessionId::new(id),
        room,
        port,
        dest_ip: [127, 0, 0, 1],
        dest_port: rx.local_addr().unwrap().port(),
        srtp,
        created_ms: 0,
    })
}

/// Sends `c` to a shard and waits for its answer, which must be Ok.
fn apply(cmd: &mut Producer, evt: &mut Consumer, c: Command) {
    let request = c.request().expect("a command answered with Done");
    cmd.push(&c).unwrap();
    let e = wait_event(
        evt,
        |e| matches!(e, Event::Done { request: r, .. } if *r == request),
    );
    assert!(
        matches!(
            e,
            Event::Done {
                outcome: Outcome::Ok,
                ..
            }
        ),
        "{c:?}: {e:?}"
    );
}

fn srtp_packet(ctx: &mut dataplane::srtp::SrtpContext, seq: u16) -> Vec<u8> {
    let mut p = rtp(100, seq);
    let len = p.len();
    p.resize(len + 32, 0);
    let n = ctx.protect_rtp(&mut p, len).unwrap();
    p.truncate(n);
    p
}

/// A receive buffer big enough for a test's whole burst (tests run as root;
/// without it, `SO_RCVBUF` is capped by `rmem_max`).
fn roomy(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket and an int option of the right size.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

#[test]
fn shard_relays_srtp_ingest_to_two_egresses_and_counts_bad_packets() {
    let Relay {
        path,
        region,
        stop,
        thread: t,
        mut cmd,
        mut evt,
        key,
        ing_port,
        rx1,
        rx2,
    } = start_relay("shard-test", false);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sender = dataplane::srtp::SrtpContext::new(&key);
    let mut receiver = dataplane::srtp::SrtpContext::new(&key);
    // More than the shard holds for one turn's fan-out (64): a burst this
    // long is fanned out in several parts, still in order per egress.
    const N: u16 = 200;
    for seq in 0..N {
        let mut p = rtp(100, seq);
        let len = p.len();
        p.resize(len + 32, 0);
        let n = sender.protect_rtp(&mut p, len).unwrap();
        tx.send_to(&p[..n], ("127.0.0.1", ing_port)).unwrap();
    }
    // Junk, a wrong key and a plain packet on the SRTP ingest: all dropped.
    tx.send_to(b"junk", ("127.0.0.1", ing_port)).unwrap();
    let mut wrong = dataplane::srtp::SrtpContext::new(
        &SrtpKey::new(SrtpSuite::AeadAes128Gcm, &[6; 28]).unwrap(),
    );
    let mut p = rtp(100, 999);
    let len = p.len();
    p.resize(len + 32, 0);
    let n = wrong.protect_rtp(&mut p, len).unwrap();
    tx.send_to(&p[..n], ("127.0.0.1", ing_port)).unwrap();

    let mut buf = [0u8; 2048];
    for seq in 0..N {
        let n = rx1.recv(&mut buf).unwrap();
        assert_eq!(n, 1012, "plain egress gets the RTP packet");
        assert_eq!(buf[1] & 0x7f, 96, "egress payload type");
        assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), seq);
        let n = rx2.recv(&mut buf).unwrap();
        let m = receiver
            .unprotect_rtp(&mut buf[..n])
            .expect("egress SRTP authenticates");
        assert_eq!(&buf[12..m], &[0xab; 1000][..]);
    }
    let stats = wait_event(
        &mut evt,
        |e| matches!(e, Event::Stats(s) if s.session == SessionId::new(10) && s.drops[DropReason::Auth as usize] > 0),
    );
    let Event::Stats(s) = stats else {
        unreachable!()
    };
    assert_eq!(s.packets, N as u64);
    assert_eq!(s.drops[DropReason::Malformed as usize], 1);
    assert_eq!(s.drops[DropReason::Auth as usize], 1);
    let shard = wait_event(
        &mut evt,
        |e| matches!(e, Event::Shard(s) if s.udp_datagrams >= 2 * N as u64),
    );
    let Event::Shard(shard) = shard else {
        unreachable!()
    };
    eprintln!(
        "udp sends {} datagrams {}",
        shard.udp_sends, shard.udp_datagrams
    );
    // The sender protects and sends back to back; the shard unprotects,
    // copies twice and protects for each packet, so packets queue between
    // its turns and leave as GSO batches (the receivers above got each one
    // as its own datagram, in order).
    assert!(
        shard.udp_sends < shard.udp_datagrams,
        "GSO batched nothing: {shard:?}"
    );

    // Resync reports everything; delete frees the port.
    cmd.push(&Command::Resync).unwrap();
    let mut seen = 0;
    wait_event(&mut evt, |e| {
        if matches!(e, Event::Ingest(_) | Event::Egress(_) | Event::Room(_)) {
            seen += 1;
        }
        matches!(e, Event::ResyncDone { epoch: 1 })
    });
    assert_eq!(seen, 4);
    cmd.push(&Command::DeleteSession {
        session: SessionId::new(10),
    })
    .unwrap();
    wait_event(&mut evt, |e| {
        matches!(
            e,
            Event::Done {
                request: Request::DeleteSession(s),
                outcome: Outcome::Ok,
            } if *s == SessionId::new(10)
        )
    });
    let deadline = Instant::now() + Duration::from_secs(2);
    while UdpSocket::bind(("127.0.0.1", ing_port)).is_err() {
        assert!(Instant::now() < deadline, "port not released");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(region.shard_heartbeat(0) > 0);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    std::fs::remove_file(path).unwrap();
}

/// The hot path's promise: once warm, a forwarded packet (receive, SRTP
/// unprotect, two copies with header rewrite, SRTP protect, GSO batching,
/// send) allocates nothing on the shard's thread. Counted by the global
/// allocator above, for the shard thread only.
#[test]
fn forwarding_allocates_nothing_on_the_shard_thread() {
    let r = start_relay("no-alloc", true);
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sender = dataplane::srtp::SrtpContext::new(&r.key);
    let mut buf = [0u8; 2048];
    // In bursts the receivers' socket buffers hold, each burst read back.
    let mut forward = |from: u32, count: u32| {
        for burst in (from..from + count).step_by(50) {
            for seq in burst..burst + 50 {
                let p = srtp_packet(&mut sender, seq as u16);
                tx.send_to(&p, ("127.0.0.1", r.ing_port)).unwrap();
            }
            for _ in 0..50 {
                r.rx1
                    .recv(&mut buf)
                    .expect("plain egress gets every packet");
                r.rx2.recv(&mut buf).expect("SRTP egress gets every packet");
            }
        }
    };
    // Warm-up: tables, queues and batches reach their working size.
    forward(0, 1000);
    let before = SHARD_ALLOCS.load(Ordering::Relaxed);
    assert!(before > 0, "the counter sees the shard thread's start-up");
    const N: u32 = 10_000;
    forward(1000, N);
    let allocs = SHARD_ALLOCS.load(Ordering::Relaxed) - before;
    eprintln!(
        "{allocs} allocations on the shard thread for {N} packets in, {} out",
        2 * N
    );
    assert!(
        allocs < 1,
        "the shard allocated {allocs} times for {N} forwarded packets"
    );
    r.stop.store(true, Ordering::Relaxed);
    r.thread.join().unwrap();
    drop(r.region);
    std::fs::remove_file(r.path).unwrap();
}

/// One room over two shards on real io_urings: the room's SRTP ingest on
/// its owner (shard 0), an SRTP egress there and a plain one on shard 1,
/// which watches the room; the owner relays each packet over the lane and
/// rings shard 1's doorbell. Both egresses get every packet, in order, and
/// in steady state neither shard's thread allocates.
#[test]
fn one_room_over_two_shards_relays_every_packet_without_allocating() {
    let path = std::env::temp_dir().join(format!("gw-pair-{}", std::process::id()));
    let region = Region::create(&path, 2).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // The links as the dataplane makes them.
    let mut links: Vec<_> = dataplane::relay::doorbell_mesh(&region, dataplane::relay::LANE_SLOTS)
        .into_iter()
        .map(Some)
        .collect();
    let threads: Vec<_> = (0..2u32)
        .map(|index| {
            let cfg = shard_config(&region, index, links[index as usize].take());
            let s = stop.clone();
            std::thread::spawn(move || {
                COUNTED.set(Some(&PAIR_ALLOCS));
                run_shard(cfg, s).unwrap()
            })
        })
        .collect();
    let name = (0..)
        .map(|i| format!("pair{i}"))
        .find(|n| gateway_ring::msg::room_shard(n, 2) == 0)
        .unwrap();
    let key = SrtpKey::new(SrtpSuite::AeadAes128Gcm, &[5; 28]).unwrap();
    let (ing_port, e0_port, e1_port) = (free_port(), free_port(), free_port());
    let rx0 = UdpSocket::bind("127.0.0.1:0").unwrap();
    let rx1 = UdpSocket::bind("127.0.0.1:0").unwrap();
    for r in [&rx0, &rx1] {
        r.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        roomy(r);
    }
    let room = RoomId::new(1);
    let commands = [
        vec![
            Command::CreateRoom(RoomSpec {
                room,
                name: name.clone(),
            }),
            srtp_ingest(room, ing_port, key),
            egress(room, 11, e0_port, &rx0, Some(key)),
        ],
        vec![
            Command::CreateRoom(RoomSpec { room, name }),
            egress(room, 12, e1_port, &rx1, None),
        ],
    ];
    for (shard, cmds) in commands.into_iter().enumerate() {
        let mut cmd = region.command_producer(shard as u32);
        let mut evt = region.event_consumer(shard as u32);
        for c in cmds {
            apply(&mut cmd, &mut evt, c);
        }
    }
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut sender = dataplane::srtp::SrtpContext::new(&key);
    let mut receiver = dataplane::srtp::SrtpContext::new(&key);
    let mut buf = [0u8; 2048];
    // The other shard watches once its egress is there: the first packets
    // may be fanned out before the owner read the watch, so warm up until
    // both get packets, then count.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seq = 0u32;
    loop {
        let p = srtp_packet(&mut sender, seq as u16);
        seq += 1;
        tx.send_to(&p, ("127.0.0.1", ing_port)).unwrap();
        rx0.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        rx1.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let got0 = rx0.recv(&mut buf).is_ok();
        if got0 && rx1.recv(&mut buf).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the other shard never got the room's media"
        );
    }
    rx0.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    rx1.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // Each egress numbers its stream continuously, from wherever it began.
    let mut last1: Option<u16> = None;
    let mut forward = |from: u32, count: u32| {
        for burst in (from..from + count).step_by(50) {
            for seq in burst..burst + 50 {
                let p = srtp_packet(&mut sender, seq as u16);
                tx.send_to(&p, ("127.0.0.1", ing_port)).unwrap();
            }
            for _ in 0..50 {
                let n = rx1
                    .recv(&mut buf)
                    .expect("the other shard's egress gets every packet");
                assert_eq!(n, 1012, "plain RTP as sent");
                let out = u16::from_be_bytes([buf[2], buf[3]]);
                if let Some(prev) = last1 {
                    assert_eq!(out, prev.wrapping_add(1), "in order, none missing");
                }
                last1 = Some(out);
                let n = rx0
                    .recv(&mut buf)
                    .expect("the owner's egress gets every packet");
                let plain = receiver
                    .unprotect_rtp(&mut buf[..n])
                    .expect("SRTP as keyed");
                assert_eq!(plain, 1012);
            }
        }
    };
    // Steady state: caches, lanes, batches at their working size.
    forward(seq, 2000);
    let before = PAIR_ALLOCS.load(Ordering::Relaxed);
    assert!(before > 0, "the counter sees the shards' start-up");
    const N: u32 = 10_000;
    forward(seq + 2000, N);
    let allocs = PAIR_ALLOCS.load(Ordering::Relaxed) - before;
    eprintln!(
        "{allocs} allocations on two shards for {N} packets in, {} out (one relayed each)",
        2 * N
    );
    assert!(
        allocs < 1,
        "the shards allocated {allocs} times for {N} packets of one room over two shards"
    );
    stop.store(true, Ordering::Relaxed);
    for i in 0..2 {
        region.doorbell(i).ring();
    }
    for t in threads {
        t.join().unwrap();
    }
    drop(region);
    std::fs::remove_file(path).unwrap();
}
