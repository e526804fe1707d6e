//! `dataplane`: one pinned io_uring shard per core, driven by the controlplane
//! through shared-memory rings. Usually started by the controlplane; run it
//! yourself (with `controlplane --attach`) to operate the two as services.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use dataplane::dtls::DtlsIdentity;
use dataplane::limits::{ConnCounter, Limits};
use dataplane::shard::rtmp::{self, RtmpConfig};
use dataplane::shard::{run_shard, ShardConfig};
use gateway_ring::{Region, RegionError};
use std::net::SocketAddrV4;
use std::sync::mpsc;
use tracing::{error, info, warn};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Media gateway dataplane: io_uring shards relaying (S)RTP"
)]
struct Args {
    /// Number of shards (threads), one per core. Default: available cores.
    #[arg(long, env = "MGW_SHARDS")]
    shards: Option<u32>,
    /// Name of the shared-memory file under /dev/shm (or an absolute path).
    #[arg(long, env = "MGW_SHM_NAME", default_value = "mediagw")]
    shm_name: String,
    /// Address the media sockets bind.
    #[arg(long, env = "MGW_BIND_IP", default_value = "127.0.0.1")]
    bind_ip: std::net::Ipv4Addr,
    /// Do not pin shard threads to cores.
    #[arg(long, env = "MGW_NO_PIN")]
    no_pin: bool,
    /// RTMP listen address (`rtmp://ADDR/live/ROOM`), or `off`.
    #[arg(long, env = "MGW_RTMP", default_value = "127.0.0.1:1935")]
    rtmp: String,
    /// HTTP-FLV listen address (`http://ADDR/live/ROOM.flv`), or `off`.
    #[arg(long, env = "MGW_HTTP_FLV", default_value = "127.0.0.1:8088")]
    http_flv: String,
    /// Keep each stream's latest GOP so a new RTMP player starts at once.
    #[arg(long, env = "MGW_GOP_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    gop_cache: bool,
    /// Room-token secret: RTMP publish and play then need `?token=` (a JWT
    /// minted by the controlplane). Pass it in the environment: flags show in `ps`.
    #[arg(long, env = "MGW_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// An RTMP publish to a room that does not exist creates it.
    #[arg(long, env = "MGW_AUTO_ROOM", default_value_t = true, action = clap::ArgAction::Set)]
    auto_room: bool,
    /// Send each loop turn's packets to one destination as one UDP GSO
    /// send (falls back by itself if the kernel refuses).
    #[arg(long, env = "MGW_GSO", default_value_t = true, action = clap::ArgAction::Set)]
    gso: bool,
    /// Most RTMP connections the process holds; more are refused at accept.
    #[arg(long, env = "MGW_RTMP_MAX_CONNS", default_value_t = Limits::default().rtmp_max_conns)]
    rtmp_max_conns: u32,
    /// Most RTMP and HTTP-FLV connections from one client IP that do not
    /// play (in set-up, or publishing); players count only in the total
    /// [default: 1024].
    #[arg(long, env = "MGW_RTMP_MAX_NONPLAYING_PER_IP")]
    rtmp_max_nonplaying_per_ip: Option<u32>,
    /// Deprecated name of --rtmp-max-nonplaying-per-ip.
    #[arg(long, env = "MGW_RTMP_MAX_CONNS_PER_IP", hide = true)]
    rtmp_max_conns_per_ip: Option<u32>,
    /// Seconds an RTMP connection has to finish `connect` + `publish`/`play`.
    #[arg(long, env = "MGW_RTMP_SETUP_TIMEOUT", default_value_t = Limits::default().rtmp_setup_timeout.as_secs_f64())]
    rtmp_setup_timeout: f64,
    /// Seconds an RTMP connection may send nothing before it is closed.
    #[arg(long, env = "MGW_RTMP_IDLE_TIMEOUT", default_value_t = Limits::default().rtmp_idle_timeout.as_secs_f64())]
    rtmp_idle_timeout: f64,
    /// Retransmissions per second one WebRTC player's NACKs may cause.
    #[arg(long, env = "MGW_NACK_BUDGET", default_value_t = Limits::default().nack_per_s)]
    nack_budget: u32,
    /// Audio jobs waiting for a shard's transcoder thread; more are dropped.
    #[arg(long, env = "MGW_TRANSCODE_QUEUE", default_value_t = Limits::default().transcode_queue)]
    transcode_queue: usize,
    /// Longest RTMP message (bytes) a publisher may send.
    #[arg(long, env = "MGW_RTMP_MAX_MESSAGE", default_value_t = Limits::default().rtmp_max_message)]
    rtmp_max_message: usize,
    /// Most bytes of RTMP messages in progress on one connection.
    #[arg(long, env = "MGW_RTMP_MAX_PENDING", default_value_t = Limits::default().rtmp_max_pending)]
    rtmp_max_pending: usize,
    /// Most bytes queued for one RTMP connection that it has not read.
    #[arg(long, env = "MGW_RTMP_MAX_UNREAD", default_value_t = Limits::default().rtmp_max_unread)]
    rtmp_max_unread: usize,
    /// DTLS datagrams waiting for a shard's DTLS thread; more are dropped.
    #[arg(long, env = "MGW_DTLS_QUEUE", default_value_t = Limits::default().dtls_queue)]
    dtls_queue: usize,
    /// RTMP publishers with B-frames each shard re-encodes for WebRTC
    /// players (browsers cannot play B-frames); needs the `reencode` build
    /// feature; 0: none.
    #[arg(long, env = "MGW_BFRAME_REENCODES", default_value_t = Limits::default().bframe_reencodes)]
    bframe_reencodes: u32,
    /// WebRTC and RTP publishers in VP8, VP9 or AV1 each shard transcodes
    /// to H264 for RTMP and HTTP-FLV players; needs the `reencode` build
    /// feature; 0: none.
    #[arg(long, env = "MGW_VIDEO_TRANSCODES", default_value_t = Limits::default().video_transcodes)]
    video_transcodes: u32,
    /// Test only: honour datagrams that make a shard panic (see `shard::PANIC_SESSION`).
    #[arg(long, env = "MGW_TEST_PANIC_TRIGGERS", hide = true)]
    test_panic_triggers: bool,
}

impl Args {
    fn nonplaying_per_ip(&self) -> u32 {
        let (v, deprecated) = gateway_ring::limits::nonplaying_per_ip(
            self.rtmp_max_nonplaying_per_ip,
            self.rtmp_max_conns_per_ip,
        );
        if let Some(line) = deprecated {
            warn!("{line}");
        }
        v
    }

    fn limits(&self) -> Result<Limits, String> {
        let secs = |name: &str, v: f64| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| format!("--{name} {v}: a positive number of seconds"))
        };
        Ok(Limits {
            rtmp_max_conns: self.rtmp_max_conns,
            rtmp_max_nonplaying_per_ip: self.nonplaying_per_ip(),
            rtmp_setup_timeout: secs("rtmp-setup-timeout", self.rtmp_setup_timeout)?,
            rtmp_idle_timeout: secs("rtmp-idle-timeout", self.rtmp_idle_timeout)?,
            nack_per_s: self.nack_budget,
            transcode_queue: self.transcode_queue.max(1),
            // At least a command's worth: below it no client could publish.
            rtmp_max_message: self.rtmp_max_message.max(64 << 10),
            rtmp_max_pending: self.rtmp_max_pending.max(64 << 10),
            rtmp_max_unread: self.rtmp_max_unread.max(64 << 10),
            dtls_queue: self.dtls_queue.max(1),
            bframe_reencodes: self.bframe_reencodes,
            video_transcodes: self.video_transcodes,
        })
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub fn shm_path(name: &str) -> PathBuf {
    if name.starts_with('/') {
        PathBuf::from(name)
    } else {
        PathBuf::from("/dev/shm").join(name)
    }
}

fn open_or_create(path: &PathBuf, shards: u32) -> Result<Region, RegionError> {
    match Region::open(path, Duration::from_millis(200)) {
        Ok(r) if r.shards() == shards => Ok(r),
        Ok(r) => {
            error!(
                path = %path.display(),
                "shared memory was made for {} shards, --shards is {shards}: remove the file or match the count",
                r.shards()
            );
            std::process::exit(2);
        }
        Err(RegionError::Io { .. }) => Region::create(path, shards),
        Err(e) => Err(e),
    }
}

/// `--FLAG`'s address, or `None` for `off`.
fn listen_addr(flag: &str, value: &str) -> Result<Option<SocketAddrV4>, String> {
    if value == "off" {
        return Ok(None);
    }
    value
        .parse()
        .map(Some)
        .map_err(|e| format!("--{flag} {value:?}: {e} (use IP:PORT or off)"))
}

/// One RTMP and one HTTP-FLV listener per shard on the same addresses
/// (`SO_REUSEPORT`) and the channels shards hand connections over with.
fn rtmp_configs(
    args: &Args,
    shards: u32,
    limits: Limits,
) -> Result<Option<Vec<RtmpConfig>>, String> {
    let rtmp = listen_addr("rtmp", &args.rtmp)?;
    let http = listen_addr("http-flv", &args.http_flv)?;
    if rtmp.is_none() && http.is_none() {
        return Ok(None);
    }
    let bind = |addr: Option<SocketAddrV4>, what: &str, flag: &str| {
        addr.map(|a| {
            rtmp::listen(a).map_err(|e| {
                format!(
                    "cannot listen for {what} on {a}: {e} (use --{flag} off or another address)"
                )
            })
        })
        .transpose()
    };
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..shards).map(|_| mpsc::channel()).unzip();
    let peers = Arc::new(senders);
    let tokens = args
        .token_secret
        .as_ref()
        .map(|s| Arc::new(gateway_ring::token::TokenKeys::new(s.as_bytes())));
    let conns = Arc::new(ConnCounter::default());
    let mut out = Vec::new();
    for inbox in receivers {
        out.push(RtmpConfig {
            listener: bind(rtmp, "RTMP", "rtmp")?,
            http_listener: bind(http, "HTTP-FLV", "http-flv")?,
            inbox,
            peers: peers.clone(),
            gop_cache: args.gop_cache,
            auto_room: args.auto_room,
            shards,
            tokens: tokens.clone(),
            limits,
            conns: conns.clone(),
        });
    }
    info!(
        rtmp = %args.rtmp,
        http_flv = %args.http_flv,
        gop_cache = args.gop_cache,
        tokens = tokens.is_some(),
        "RTMP and HTTP-FLV listening"
    );
    Ok(Some(out))
}

fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    // Panics go to the log with their thread and place, whether a shard
    // contains them (one session ends) or not (the process exits).
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let msg = dataplane::shard::panic_message(info.payload());
        let place = info.location().map(|l| l.to_string()).unwrap_or_default();
        error!(thread = thread.name().unwrap_or("?"), %place, "panic: {msg}");
    }));
    match dataplane::uring::raise_open_files_limit() {
        Ok(n) => info!(open_files = n, "open files limit"),
        Err(e) => warn!("cannot raise the open files limit: {e}"),
    }
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let shards = args.shards.unwrap_or(cores as u32).max(1);
    let path = shm_path(&args.shm_name);
    let region = match open_or_create(&path, shards) {
        Ok(r) => r,
        Err(e) => {
            error!("cannot open shared memory: {e}");
            std::process::exit(2);
        }
    };
    // One certificate per process: its fingerprint goes into every SDP
    // answer, so the controlplane reads it from shared memory.
    let identity = match DtlsIdentity::generate() {
        Ok(i) => i,
        Err(e) => {
            error!("{e}");
            std::process::exit(2);
        }
    };
    region.set_dtls_fingerprint(&identity.fingerprint);
    let epoch = region.start_dataplane_epoch(std::process::id());
    // SAFETY: installing an async-signal-safe handler that only stores an atomic.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    info!(shards, epoch, shm = %path.display(), bind_ip = %args.bind_ip, "dataplane starting");
    let stop = Arc::new(AtomicBool::new(false));
    let limits = match args.limits() {
        Ok(l) => l,
        Err(e) => {
            error!("{e}");
            std::process::exit(2);
        }
    };
    info!(?limits, "limits");
    if limits.bframe_reencodes > 0 && dataplane::limits::bframe_reencodes(&limits) == 0 {
        info!("H264 with B-frames from RTMP publishers reaches WebRTC players as is (browsers cannot play it): this dataplane was built without the `reencode` feature");
    }
    if limits.video_transcodes > 0 && dataplane::limits::video_transcodes(&limits) == 0 {
        info!("VP8, VP9 and AV1 publishers give RTMP and HTTP-FLV players no picture: this dataplane was built without the `reencode` feature");
    }
    if args.test_panic_triggers {
        warn!("test panic triggers are on: never run a production gateway this way");
    }
    let mut rtmp = match rtmp_configs(&args, shards, limits) {
        Ok(r) => r,
        Err(e) => {
            error!("{e}");
            std::process::exit(2);
        }
    };
    // One room over every shard: each shard's links to the others, each
    // able to ring the others' doorbells.
    let mut links: Vec<Option<dataplane::relay::Link>> = if shards > 1 {
        dataplane::relay::doorbell_mesh(&region, dataplane::relay::LANE_SLOTS)
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None]
    };
    let mut threads = Vec::new();
    for index in 0..shards {
        let cfg = ShardConfig {
            relay: links[index as usize].take(),
            index,
            bind_ip: args.bind_ip,
            region: region.clone(),
            epoch,
            core: (!args.no_pin).then_some(index as usize % cores),
            dtls: identity.clone(),
            rtmp: rtmp.as_mut().map(|v| v.remove(0)),
            gso: args.gso,
            limits,
            panic_triggers: args.test_panic_triggers,
        };
        let stop = stop.clone();
        let t = std::thread::Builder::new()
            .name(format!("shard-{index}"))
            .spawn(move || {
                // Panics of one session's input are contained in the shard;
                // one that reaches here is a bug in the loop itself. A dead
                // shard must never look alive: exit, and the supervisor
                // restarts the process (its sessions end with an event).
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_shard(cfg, stop)
                })) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        error!(shard = index, "shard failed: {e}; exiting");
                        std::process::exit(1);
                    }
                    Err(_) => {
                        error!(shard = index, "shard panicked outside a session; exiting");
                        std::process::exit(70);
                    }
                }
            })
            .expect("spawning a thread at start-up");
        threads.push(t);
    }
    while !STOP.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
    }
    info!("signal received, stopping shards");
    stop.store(true, Ordering::Relaxed);
    for index in 0..shards {
        region.doorbell(index).ring();
    }
    for t in threads {
        let _ = t.join();
    }
    info!("dataplane stopped");
}
