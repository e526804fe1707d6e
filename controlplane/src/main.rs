//! `controlplane`: the HTTP API, rooms and ports, and the dataplane's supervisor.
//!
//! Start-up: create (spawn mode) or open (attach mode) the shared-memory
//! region, start the event pump, spawn the dataplane (spawn mode), wait for
//! every shard's heartbeat, resync rooms and sessions from the dataplane, then
//! serve HTTP.

mod api;
mod auth;
mod cluster;
mod config;
mod error;
mod events;
mod link;
mod metrics;
mod offer;
mod openapi;
mod ratelimit;
mod sdp;
mod signal;
mod state;
mod supervisor;
mod whip;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gateway_ring::Region;
use tracing::{error, info, warn};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

async fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !ok() {
        if Instant::now() >= deadline {
            warn!("{what}: not within {timeout:?}, continuing");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("shutting down");
}

/// Connects to the pool's store at `url`, checking that this node has the
/// pool's secrets (which a pool needs set: generated ones differ per node)
/// and that no live node has its id.
async fn join_pool(cfg: &config::Config, url: &str) -> Result<cluster::Pool, String> {
    let (Some(admin), Some(token)) = (&cfg.admin_key, &cfg.token_secret) else {
        return Err("--cluster needs --admin-key and --token-secret, the same on every node of the pool (generated ones would differ per node)".into());
    };
    let store = cluster::RedisStore::connect(url).await?;
    let secrets = cluster::secrets_fingerprint(admin, token);
    cluster::check_secrets(&store, &secrets).await?;
    let id = cfg.node_id.clone().unwrap_or_else(cluster::default_node_id);
    let instance = cluster::new_instance();
    cluster::check_node_id(&store, &id, &instance).await?;
    Ok(cluster::Pool::new(id, instance, secrets, Box::new(store)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cfg = match config::Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let (_, Some(deprecated)) = cfg.nonplaying_per_ip() {
        warn!("{deprecated}");
    }
    // Refused (e.g. --production without its secrets) before anything is
    // created: a refused start leaves no shared memory behind.
    let auth = match auth::Auth::from_config(&cfg) {
        Ok(a) => a,
        Err(e) => {
            error!("{e}");
            std::process::exit(2);
        }
    };
    // A node that cannot join its pool does not start (before anything is
    // created, as above).
    let pool = match &cfg.cluster {
        Some(url) => match join_pool(&cfg, url).await {
            Ok(pool) => {
                info!(node = %pool.id, "joining the pool at {url}");
                Some(Arc::new(pool))
            }
            Err(e) => {
                error!("{e}");
                std::process::exit(2);
            }
        },
        None => None,
    };
    let cores = std::thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1);
    let shards = cfg.shards.unwrap_or(cores).max(1);
    let path = cfg.shm_path();

    let region = if cfg.attach {
        info!(shm = %path.display(), "attach mode: waiting for the dataplane's shared memory");
        loop {
            match Region::open(&path, Duration::from_secs(5)) {
                Ok(r) => break r,
                Err(e) => warn!("still waiting for the dataplane: {e}"),
            }
        }
    } else {
        match Region::create(&path, shards) {
            Ok(r) => r,
            Err(e) => {
                error!("cannot create shared memory: {e}");
                std::process::exit(2);
            }
        }
    };
    // This controlplane starts undrained, and so does the dataplane it
    // speaks for (a drain set by the one before it, in attach mode, ends).
    region.set_draining(false);
    let shards = region.shards();
    let ports = state::port_slices(cfg.udp_ports.0, cfg.udp_ports.1, shards);
    let link = Arc::new(link::Link::new(region));
    let mut st = state::State::new(ports);
    if let Some(url) = &cfg.webhook_url {
        let secret = cfg
            .webhook_secret
            .clone()
            .or_else(|| cfg.admin_key.clone())
            .unwrap_or_default();
        if secret.is_empty() {
            warn!("--webhook-url without --webhook-secret or --admin-key: webhooks are signed with an empty key");
        }
        st.events.start_webhook(url.clone(), secret.into_bytes());
        info!(url, "room events go to the webhook");
    }
    let state = Arc::new(Mutex::new(st));
    link::spawn_pump(link.clone(), state.clone());
    if auth.dev_admin_key {
        warn!(
            "no --admin-key: development admin key for /v1/* is {} (use Authorization: Bearer <key>; --production refuses to start without one)",
            auth.admin_key()
        );
    }
    if !auth.require_tokens {
        warn!("no --token-secret: WHIP and WHEP are open to anyone who can reach this address");
    }
    let app = Arc::new(api::App {
        pool: pool.clone(),
        draining: AtomicBool::new(false),
        auth,
        limiter: ratelimit::SessionLimits::new(&cfg),
        cfg: cfg.clone(),
        state,
        link: link.clone(),
        restarts: AtomicU64::new(0),
        dataplane_pid: AtomicU32::new(0),
        dataplane_running: AtomicBool::new(false),
        shutting_down: AtomicBool::new(false),
    });

    if !cfg.attach {
        let bin = supervisor::dataplane_bin(cfg.dataplane_bin.clone());
        let mut args = vec![
            "--shards".to_string(),
            shards.to_string(),
            "--shm-name".into(),
            path.display().to_string(),
            "--bind-ip".into(),
            cfg.bind_ip.to_string(),
            "--rtmp".into(),
            cfg.rtmp.clone(),
            "--http-flv".into(),
            cfg.http_flv.clone(),
            "--gop-cache".into(),
            cfg.gop_cache.to_string(),
            "--auto-room".into(),
            cfg.auto_room.to_string(),
        ];
        if cfg.no_pin {
            args.push("--no-pin".into());
        }
        for (flag, value) in cfg.dataplane_limits() {
            args.push(format!("--{flag}={value}"));
        }
        tokio::spawn(supervisor::supervise(app.clone(), bin, args));
    }

    if wait_for("dataplane heartbeat", Duration::from_secs(15), || {
        link.all_alive()
    })
    .await
    {
        // The epoch may have moved while we waited (spawn mode): adopt it before resync.
        link.epoch
            .store(link.region.dataplane_epoch(), Ordering::SeqCst);
        match link.start_resync() {
            Ok(()) => {
                wait_for("resync", Duration::from_secs(5), || link.resync_done()).await;
            }
            Err(e) => warn!("resync not sent: {}", e.message),
        }
        let st = app.state.lock().expect("state lock");
        info!(
            rooms = st.rooms.len(),
            sessions = st.sessions.len(),
            "view of the dataplane recovered"
        );
    }

    if let Some(pool) = pool {
        let (app, me) = (app.clone(), pool.clone());
        cluster::spawn_heartbeat(pool, move || api::node_record(&app, &me));
    }

    let listener = match tokio::net::TcpListener::bind(cfg.http).await {
        Ok(l) => l,
        Err(e) => {
            error!(http = %cfg.http, "cannot listen: {e}");
            std::process::exit(2);
        }
    };
    info!(
        http = %cfg.http,
        shards,
        udp_ports = format!("{}-{}", cfg.udp_ports.0, cfg.udp_ports.1),
        public_ip = %cfg.public_ip,
        mode = if cfg.attach { "attach" } else { "spawn" },
        "HTTP API listening on http://{}",
        cfg.http
    );
    let served = axum::serve(
        listener,
        api::router(app.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await;
    if let Err(e) = served {
        error!("HTTP server failed: {e}");
    }
    app.shutting_down.store(true, Ordering::SeqCst);
    if !cfg.attach {
        supervisor::stop_dataplane(&app).await;
        let _ = std::fs::remove_file(&path);
    }
}
