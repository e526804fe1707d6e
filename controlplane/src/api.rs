//! HTTP API v1 (JSON). Every error is `{"error": "..."}` with the right status.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State as Ext};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine;
use gateway_ring::msg::{
    Command, Direction, DropReason, EgressSpec, IngestSpec, MediaKind, Outcome, RoomSpec, SrtpKey,
    SrtpSuite,
};
use gateway_ring::{RoomId, SessionId};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::Config;
use crate::error::ApiError;
use crate::link::Link;
use crate::sdp::egress_sdp;
use crate::state::{kind_name, Ended, Role, SessionRecord, SrtpParams, State};

pub struct App {
    pub cfg: Config,
    pub auth: crate::auth::Auth,
    pub limiter: crate::ratelimit::SessionLimits,
    pub state: Arc<Mutex<State>>,
    pub link: Arc<Link>,
    pub restarts: AtomicU64,
    pub dataplane_pid: AtomicU32,
    /// Spawn mode: false from the moment the supervisor sees the child exit.
    pub dataplane_running: AtomicBool,
    pub shutting_down: AtomicBool,
    /// The pool this node is in (`--cluster`), if any.
    pub pool: Option<Arc<crate::cluster::Pool>>,
    /// `POST /v1/cluster/drain` was called: no new sessions here.
    pub draining: AtomicBool,
}

type AppState = Ext<Arc<App>>;
type Created = (StatusCode, Json<Value>);

/// Largest request body (JSON or SDP); beyond it, 413.
pub const MAX_BODY: usize = 64 * 1024;

/// A body declared over [`MAX_BODY`] but under this is read and thrown away
/// before the 413 goes out. Why: most HTTP clients write the whole body before
/// they read, and closing a socket with unread bytes makes the kernel send a
/// reset, so the client would see "broken pipe" instead of our message.
/// Beyond this size we answer at once and let the reset happen.
const DRAIN_MAX: usize = 1024 * 1024;
/// How long an oversized body may take to drain.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/v1/rooms", post(create_room).get(list_rooms))
        .route("/v1/rooms/{room}/tokens", post(mint_token))
        .route("/v1/rooms/{room}", get(get_room).delete(delete_room))
        .route(
            "/v1/rooms/{room}/ingest/rtp",
            post(create_ingest).route_layer(axum::middleware::from_fn_with_state(
                (app.clone(), crate::ratelimit::Kind::Publishers),
                crate::ratelimit::limit_sessions,
            )),
        )
        .route(
            "/v1/rooms/{room}/egress/rtp",
            post(create_egress).route_layer(axum::middleware::from_fn_with_state(
                (app.clone(), crate::ratelimit::Kind::Publishers),
                crate::ratelimit::limit_sessions,
            )),
        )
        .route("/v1/cluster", get(get_cluster))
        .route("/v1/cluster/drain", post(drain))
        .route("/v1/rooms/{room}/ingest/{id}", delete(delete_ingest))
        .route("/v1/rooms/{room}/egress/{id}", delete(delete_egress))
        .route(
            "/v1/rooms/{room}/participants/{id}",
            delete(delete_participant),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_admin,
        ));
    Router::new()
        .route("/", get(demo_page))
        .route("/vendor/flv.min.js", get(flv_js))
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::metrics))
        .route("/v1/openapi.json", get(crate::openapi::openapi))
        // The admin key or a participant's room token: checked by the handler.
        .route("/v1/rooms/{room}/events", get(crate::events::room_events))
        .merge(v1)
        .merge(crate::whip::router(app.clone()))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(refuse_oversized))
        .fallback(|| async { ApiError::not_found("no such endpoint; see the README for the API") })
        .with_state(app)
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn lock(app: &App) -> std::sync::MutexGuard<'_, State> {
    app.state.lock().expect("state lock poisoned")
}

/// 413 for a body whose `Content-Length` is over [`MAX_BODY`], before any
/// handler or auth check runs; see [`DRAIN_MAX`] for why it reads it first.
/// Bodies without a length (chunked) are cut by `DefaultBodyLimit` instead.
async fn refuse_oversized(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let Some(len) = declared.filter(|&n| n > MAX_BODY) else {
        return next.run(req).await;
    };
    if len <= DRAIN_MAX {
        let body = req.into_body();
        // The content is junk to us; only the reading matters.
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, axum::body::to_bytes(body, DRAIN_MAX)).await;
    }
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body of {len} bytes is over the limit of {MAX_BODY}"),
    )
    .into_response()
}

/// `/v1/*` needs the admin key.
async fn require_admin(
    Ext(app): AppState,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<axum::response::Response, ApiError> {
    app.auth.check_admin(req.headers())?;
    Ok(next.run(req).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    role: crate::auth::TokenRole,
    ttl_s: Option<u64>,
    /// Who the holder is in the room (WHIP/WHEP/RTMP take it from the token).
    participant: Option<String>,
}

/// Mints a room token for WHIP (`publish`) or WHEP (`subscribe`).
async fn mint_token(
    Ext(app): AppState,
    Path(room): Path<String>,
    body: Result<Json<TokenBody>, JsonRejection>,
) -> Result<Created, ApiError> {
    let Json(b) = body?;
    validate_room_name(&room)?;
    if let Some(p) = &b.participant {
        validate_participant(p)?;
    }
    let ttl = b.ttl_s.unwrap_or(3600);
    let now_s = now_ms() / 1000;
    let token = app
        .auth
        .mint(&room, b.role, b.participant.as_deref(), ttl, now_s)?;
    let path = match b.role {
        crate::auth::TokenRole::Publish => "whip",
        crate::auth::TokenRole::Subscribe => "whep",
    };
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "expires_at": now_s + ttl,
            "url": format!("/{path}/{room}"),
            "participant": b.participant,
        })),
    ))
}

/// The demo page: publish a camera with WHIP, play a room with WHEP.
async fn demo_page() -> axum::response::Html<&'static str> {
    axum::response::Html(include_str!("demo.html"))
}

/// flv.js (npm `flv.js`, vendored: see `vendor/README.md`) for the demo
/// page's HTTP-FLV player, served here so no CDN is needed.
async fn flv_js() -> impl axum::response::IntoResponse {
    (
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/javascript; charset=utf-8",
            ),
            (axum::http::header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        include_str!("vendor/flv.min.js"),
    )
}

async fn healthz(Ext(app): AppState) -> (StatusCode, Json<Value>) {
    let now = Instant::now();
    let shards: Vec<Value> = app
        .link
        .health
        .lock()
        .expect("health lock")
        .iter()
        .enumerate()
        .map(|(i, h)| json!({ "shard": i, "alive": h.alive(now), "heartbeat": h.heartbeat }))
        .collect();
    let running = app.cfg.attach || app.dataplane_running.load(Ordering::SeqCst);
    let alive = running && app.link.ready();
    let draining = app.draining.load(Ordering::SeqCst);
    let (in_use, total) = {
        let st = lock(&app);
        (
            st.ports.iter().map(|p| p.in_use()).sum::<usize>(),
            st.ports.iter().map(|p| p.size()).sum::<usize>(),
        )
    };
    let body = json!({
        "status": if !alive { "down" } else if draining { "draining" } else { "ok" },
        "shards": shards.len(),
        "shard_health": shards,
        "udp_ports": { "in_use": in_use, "total": total },
        "mode": if app.cfg.attach { "attach" } else { "spawn" },
        "rtmp": app.cfg.rtmp,
        "http_flv": app.cfg.http_flv,
        "dataplane": {
            "alive": alive,
            "pid": app.link.region.dataplane_pid(),
            "epoch": app.link.region.dataplane_epoch(),
            "restarts": app.restarts.load(Ordering::Relaxed),
        },
    });
    // A draining node is taken out of a load balancer's rotation.
    (
        if alive && !draining {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        Json(body),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoomBody {
    name: String,
}

pub(crate) fn validate_room_name(name: &str) -> Result<(), ApiError> {
    let ok = gateway_ring::msg::valid_room_name(name);
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "bad room name {name:?}: use 1-{} characters of A-Z, a-z, 0-9, '_' and '-'",
            gateway_ring::msg::MAX_NAME
        )))
    }
}

pub(crate) fn validate_participant(name: &str) -> Result<(), ApiError> {
    if gateway_ring::participant::valid_participant(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "bad participant name {name:?}: use 1-{} characters of A-Z, a-z, 0-9, '_' and '-'",
            gateway_ring::msg::MAX_NAME
        )))
    }
}

async fn create_room(
    Ext(app): AppState,
    body: Result<Json<CreateRoomBody>, JsonRejection>,
) -> Result<Created, ApiError> {
    let Json(b) = body?;
    let (name, shard) = create_room_named(&app, b.name).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "name": name, "shard": shard })),
    ))
}

/// Creates room `name` on a shard; 409 if it exists.
pub(crate) async fn create_room_named(app: &App, name: String) -> Result<(String, u32), ApiError> {
    let b = CreateRoomBody { name };
    validate_room_name(&b.name)?;
    app.link.check_ready()?;
    let spec = {
        let mut st = lock(app);
        if st.rooms.contains_key(&b.name) {
            return Err(ApiError::conflict(format!(
                "room {:?} already exists",
                b.name
            )));
        }
        let room = st
            .new_room_id()
            .ok_or_else(|| ApiError::unavailable("no room ids left"))?;
        let spec = RoomSpec {
            room,
            name: b.name.clone(),
        };
        // By name, as the dataplane places rooms it creates for RTMP publishers.
        let shard = gateway_ring::msg::room_shard(&spec.name, st.ports.len() as u32);
        // Reserve the name now so a concurrent create gets 409.
        st.add_room(&spec, shard);
        (spec, shard)
    };
    let (spec, shard) = spec;
    match app
        .link
        .request(shard, Command::CreateRoom(spec.clone()))
        .await
    {
        Ok(Outcome::Ok | Outcome::Exists) => Ok((spec.name, shard)),
        Ok(o) => {
            lock(app).remove_room(&spec.name);
            Err(ApiError::unavailable(format!(
                "dataplane refused the room: {o:?}"
            )))
        }
        Err(e) => {
            lock(app).remove_room(&spec.name);
            Err(e)
        }
    }
}

/// The pool of nodes: each live node's record (`--cluster`).
async fn get_cluster(Ext(app): AppState) -> Result<Json<Value>, ApiError> {
    let Some(pool) = &app.pool else {
        return Err(ApiError::not_found(
            "this node is in no pool: start it with --cluster redis://HOST:PORT",
        ));
    };
    let unreachable =
        |e: String| ApiError::unavailable(format!("the pool's store is unreachable: {e}"));
    let nodes = pool.store.nodes().await.map_err(unreachable)?;
    let rooms: Vec<Value> = pool
        .store
        .leases()
        .await
        .map_err(unreachable)?
        .into_iter()
        .map(|(name, home)| json!({ "name": name, "home": home }))
        .collect();
    Ok(Json(
        json!({ "node": pool.id, "nodes": nodes, "rooms": rooms }),
    ))
}

/// Stops new sessions on this node (those it has go on), for a rolling
/// restart: `/healthz` answers 503 `draining`, the pool lists it as such.
async fn drain(Ext(app): AppState) -> Json<Value> {
    if !app.draining.swap(true, Ordering::SeqCst) {
        tracing::warn!("draining: no new sessions or RTMP clients on this node");
    }
    // The dataplane refuses new RTMP and HTTP-FLV clients from its next turn.
    app.link.region.set_draining(true);
    let node = app.pool.as_ref().map(|p| p.id.clone());
    Json(json!({ "node": node, "state": "draining" }))
}

/// What this node says of itself in the pool, and the names of its rooms
/// (whose homes it leases).
pub fn node_record(app: &App, pool: &crate::cluster::Pool) -> (crate::cluster::Node, Vec<String>) {
    let (names, sessions, publishers, datagrams) = {
        let st = lock(app);
        let publishers = st.sessions.values().filter(|s| s.role.is_ingest()).count();
        let datagrams = st.shard_stats.iter().map(|s| s.udp_datagrams).sum::<u64>();
        let names: Vec<String> = st.rooms.keys().cloned().collect();
        (names, st.sessions.len(), publishers, datagrams)
    };
    let rooms = names.len();
    let cpu_us = crate::cluster::process_cpu_us(app.link.region.dataplane_pid()).unwrap_or(0);
    let (cpu, packets_per_s) =
        pool.rates
            .lock()
            .expect("rates lock")
            .update(Instant::now(), cpu_us, datagrams);
    let round = |x: f64, places: i32| (x * 10f64.powi(places)).round() / 10f64.powi(places);
    let node = crate::cluster::Node {
        id: pool.id.clone(),
        instance: pool.instance.clone(),
        state: if app.draining.load(Ordering::SeqCst) {
            "draining"
        } else {
            "up"
        }
        .into(),
        http: app.cfg.http.to_string(),
        rtmp: app.cfg.rtmp.clone(),
        http_flv: app.cfg.http_flv.clone(),
        public_ip: app.cfg.public_ip.to_string(),
        udp_ports: [app.cfg.udp_ports.0, app.cfg.udp_ports.1],
        load: crate::cluster::Load {
            rooms,
            sessions,
            publishers,
            shards: app.link.region.shards() as usize,
            cpu: round(cpu, 3),
            packets_per_s: round(packets_per_s, 0),
        },
        at_ms: crate::cluster::now_ms(),
    };
    (node, names)
}

async fn list_rooms(Ext(app): AppState) -> Json<Value> {
    let st = lock(&app);
    let mut rooms: Vec<Value> = st
        .rooms
        .values()
        .map(|r| {
            let count = |ingest: bool| {
                r.live.iter().filter(|id| st.sessions.get(id).is_some_and(|s| s.role.is_ingest()) == ingest).count()
            };
            json!({ "name": r.name, "shard": r.shard, "ingests": count(true), "egresses": count(false) })
        })
        .collect();
    rooms.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Json(json!({ "rooms": rooms }))
}

fn session_json(s: &SessionRecord, public_ip: Ipv4Addr) -> Value {
    let drops: serde_json::Map<String, Value> = DropReason::ALL
        .iter()
        .map(|r| (r.name().to_string(), json!(s.stats.drops[*r as usize])))
        .collect();
    let mut v = json!({
        "id": s.id.to_string(),
        "participant": s.role.participant(),
        "state": if s.ended.is_some() { "ended" } else { "live" },
        "shard": s.shard,
        "port": s.port(),
        "stats": {
            "packets": s.stats.packets,
            "bytes": s.stats.bytes,
            "drops": drops,
            "retransmits": s.stats.retransmits,
            "keyframe_requests": s.stats.keyframe_requests,
            "bridge_gaps_filled": s.stats.bridge_gaps_filled,
            "bridge_gaps_given_up": s.stats.bridge_gaps_given_up,
            // A WebRTC player that offered transport-cc: our estimate of
            // its path, from its feedback (null until there is one).
            "estimate_bps": (s.stats.estimate_bps > 0).then_some(s.stats.estimate_bps),
            // ... and how often its video paused: its path could not take it.
            "video_pauses": s.stats.video_pauses,
        },
    });
    if let Some(reason) = &s.ended {
        v["end_reason"] = json!(reason);
    }
    match &s.role {
        Role::Ingest(i) => {
            v["kind"] = json!(kind_name(i.kind));
            v["codec"] = json!(match i.kind {
                MediaKind::Video => "H264",
                MediaKind::Audio => "opus",
            });
            v["payload_type"] = json!(i.payload_type);
            v["clock_rate"] = json!(i.clock_rate);
            v["host"] = json!(public_ip.to_string());
            v["srtp"] = json!(i.srtp.map(|k| SrtpParams(k).suite_name()));
            v["created_ms"] = json!(i.created_ms);
        }
        Role::Rtmp(r) => {
            v["kind"] = json!(match r.direction {
                Direction::Publish => "rtmp_publish",
                Direction::Subscribe => "rtmp_play",
            });
            v["peer"] = json!(format!("{}:{}", Ipv4Addr::from(r.peer_ip), r.peer_port));
            v["created_ms"] = json!(r.created_ms);
        }
        Role::Webrtc(w) => {
            v["kind"] = json!(match w.direction {
                Direction::Publish => "whip",
                Direction::Subscribe => "whep",
            });
            v["tracks"] = w
                .tracks
                .iter()
                .map(|t| {
                    json!({
                        "kind": kind_name(t.kind),
                        "codec": t.codec.name(),
                        "payload_type": t.pt,
                    })
                })
                .collect();
            v["created_ms"] = json!(w.created_ms);
        }
        Role::Egress(e) => {
            v["host"] = json!(Ipv4Addr::from(e.dest_ip).to_string());
            v["dest_port"] = json!(e.dest_port);
            v["srtp"] = json!(e.srtp.map(|k| SrtpParams(k).suite_name()));
            v["created_ms"] = json!(e.created_ms);
        }
    }
    v
}

async fn get_room(Ext(app): AppState, Path(room): Path<String>) -> Result<Json<Value>, ApiError> {
    let st = lock(&app);
    let r = st
        .rooms
        .get(&room)
        .ok_or_else(|| ApiError::not_found(format!("no room {room:?}")))?;
    let (mut ingests, mut egresses) = (Vec::new(), Vec::new());
    let live = r.live.iter().filter_map(|id| st.sessions.get(id));
    for s in live.chain(r.ended.iter()) {
        let list = if s.role.is_ingest() {
            &mut ingests
        } else {
            &mut egresses
        };
        list.push(session_json(s, app.cfg.public_ip));
    }
    let participants = st.participants_json(&room);
    Ok(Json(json!({
        "name": r.name,
        "shard": r.shard,
        "participants": participants,
        "ingests": ingests,
        "egresses": egresses,
    })))
}

async fn delete_room(Ext(app): AppState, Path(room): Path<String>) -> Result<StatusCode, ApiError> {
    let (id, shard, replicas) = {
        let st = lock(&app);
        let r = st
            .rooms
            .get(&room)
            .ok_or_else(|| ApiError::not_found(format!("no room {room:?}")))?;
        (r.id, r.shard, r.replicas)
    };
    // Its players' shards first: a replica without its owner has nothing to show.
    for sh in (0..64u32).filter(|sh| replicas & (1 << sh) != 0) {
        let _ = app.link.request(sh, Command::DeleteRoom { room: id }).await;
    }
    match app
        .link
        .request(shard, Command::DeleteRoom { room: id })
        .await?
    {
        Outcome::Ok | Outcome::NotFound => {
            lock(&app).remove_room(&room);
            Ok(StatusCode::NO_CONTENT)
        }
        o => Err(ApiError::unavailable(format!(
            "dataplane refused to delete the room: {o:?}"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SrtpBody {
    suite: String,
    /// base64 of master key || master salt; generated when absent.
    key: Option<String>,
}

fn parse_srtp(b: Option<SrtpBody>) -> Result<Option<SrtpKey>, ApiError> {
    let Some(b) = b else { return Ok(None) };
    let suite = match b.suite.as_str() {
        "AES_CM_128_HMAC_SHA1_80" => SrtpSuite::AesCm128HmacSha1_80,
        "AEAD_AES_128_GCM" => SrtpSuite::AeadAes128Gcm,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown SRTP suite {other:?}: use AES_CM_128_HMAC_SHA1_80 or AEAD_AES_128_GCM"
            )))
        }
    };
    let need = suite.key_material_len();
    let material = match b.key {
        Some(k) => base64::engine::general_purpose::STANDARD
            .decode(k.trim())
            .map_err(|e| ApiError::bad_request(format!("srtp.key is not valid base64: {e}")))?,
        None => {
            let mut m = vec![0u8; need];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut m)
                .map_err(|_| ApiError::unavailable("no randomness available for an SRTP key"))?;
            m
        }
    };
    SrtpKey::new(suite, &material).map(Some).ok_or_else(|| {
        ApiError::bad_request(format!(
            "srtp.key must decode to {need} bytes (16-byte master key + {}-byte salt) for {}, got {}",
            need - 16,
            b.suite,
            material.len()
        ))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestBody {
    kind: String,
    codec: Option<String>,
    payload_type: Option<u8>,
    clock_rate: Option<u32>,
    srtp: Option<SrtpBody>,
    /// Whose track it is: a participant's video and audio ingests share
    /// one name. Generated when absent.
    participant: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EgressBody {
    host: String,
    port: u16,
    srtp: Option<SrtpBody>,
}

/// A generated participant name (see [`gateway_ring::participant`]).
pub(crate) fn generated_participant() -> Result<String, ApiError> {
    let mut b = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| ApiError::unavailable("no randomness available"))?;
    Ok(gateway_ring::participant::generated(b))
}

/// [`open_session`]'s 409 for a publisher, naming who publishes already.
pub(crate) fn published_already(e: ApiError, participant: &str, room: &str) -> ApiError {
    if e.status == StatusCode::CONFLICT {
        ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "participant {participant:?} already publishes in room {room:?}: one publisher per name (and kind); end it first or use another name"
            ),
        )
    } else {
        e
    }
}

fn no_room(room: &str) -> ApiError {
    ApiError::not_found(format!("no room {room:?}; create it with POST /v1/rooms"))
}

/// Who a new session is, for where it goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placement {
    /// A publisher (WHIP, an RTP ingest): on the room's owner shard.
    Owner,
    /// A player (WHEP, an RTP egress): on the least loaded shard, which the
    /// owner relays the room's media to.
    Player,
}

/// The shard a new session of `room` opens on (counted as opening there
/// until [`Opening`] is dropped); for a player on another shard than the
/// owner, the room is made there first, once: a second player meanwhile
/// waits for it.
async fn place(app: &App, room: &str, placement: Placement) -> Result<(u32, Opening), ApiError> {
    const MADE_WITHIN: Duration = Duration::from_secs(4);
    let deadline = tokio::time::Instant::now() + MADE_WITHIN;
    loop {
        let (spec, shard, opening, make) = {
            let mut st = lock(app);
            let r = st.rooms.get(room).ok_or_else(|| no_room(room))?;
            let shard = match placement {
                Placement::Owner => r.shard,
                Placement::Player => st.player_shard(r.shard),
            };
            let spec = RoomSpec {
                room: r.id,
                name: r.name.clone(),
            };
            let bit = 1u64 << shard;
            let (owner, made, making) = (r.shard, r.replicas & bit != 0, r.making & bit != 0);
            if shard == owner || made {
                return Ok((shard, Opening::new(app, shard, &mut st)));
            }
            if !making {
                if let Some(r) = st.rooms.get_mut(room) {
                    r.making |= bit;
                }
            }
            (spec, shard, Opening::new(app, shard, &mut st), !making)
        };
        if !make {
            // Another request is making it there: wait for that.
            if tokio::time::Instant::now() >= deadline {
                return Err(ApiError::unavailable(format!(
                    "room {room:?} was not made on shard {shard} in time"
                )));
            }
            drop(opening);
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        let id = spec.room;
        let result = app.link.request(shard, Command::CreateRoom(spec)).await;
        let mut st = lock(app);
        let bit = 1u64 << shard;
        let r = st.rooms.get_mut(room).filter(|r| r.id == id);
        match (result, r) {
            (Ok(Outcome::Ok | Outcome::Exists), Some(r)) => {
                r.making &= !bit;
                r.replicas |= bit;
                return Ok((shard, opening));
            }
            (Ok(Outcome::Ok | Outcome::Exists), None) => {
                // Deleted meanwhile: so is its replica.
                let _ = app.link.send(shard, &Command::DeleteRoom { room: id });
                return Err(ApiError::not_found(format!("room {room:?} was deleted")));
            }
            (outcome, r) => {
                if let Some(r) = r {
                    r.making &= !bit;
                }
                return Err(match outcome {
                    Ok(o) => ApiError::unavailable(format!(
                        "shard {shard} refused to hold room {room:?} for a player: {o:?}"
                    )),
                    Err(e) => e,
                });
            }
        }
    }
}

/// A session being opened on a shard, counted in [`State::opening`] while
/// this lives (so a burst of offers spreads before any of them is live).
pub(crate) struct Opening {
    state: Arc<Mutex<State>>,
    shard: u32,
}

impl Opening {
    fn new(app: &App, shard: u32, st: &mut State) -> Opening {
        if let Some(n) = st.opening.get_mut(shard as usize) {
            *n += 1;
        }
        Opening {
            state: app.state.clone(),
            shard,
        }
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = st.opening.get_mut(self.shard as usize) {
            *n = n.saturating_sub(1);
        }
    }
}

/// Allocates a port on the session's shard (see [`Placement`]) and asks
/// the shard to open the session; retries on another port if the kernel
/// refuses the bind. 409 when the dataplane says the session's participant
/// publishes already.
pub(crate) async fn open_session(
    app: &App,
    room: &str,
    placement: Placement,
    make: impl Fn(SessionId, RoomId, u16) -> (Command, Role),
) -> Result<(SessionId, u16), ApiError> {
    const ATTEMPTS: usize = 4;
    if app.draining.load(Ordering::SeqCst) {
        return Err(ApiError::unavailable(
            "this node is draining (POST /v1/cluster/drain): open the session on another node",
        ));
    }
    app.link.check_ready()?;
    // Counted as opening on its shard until this returns.
    let (shard, _opening) = place(app, room, placement).await?;
    for _ in 0..ATTEMPTS {
        let (id, port, cmd, role) = {
            let mut st = lock(app);
            let room_id = st
                .rooms
                .get(room)
                .map(|r| r.id)
                .ok_or_else(|| no_room(room))?;
            let pool = &mut st.ports[shard as usize];
            let port = pool.allocate().ok_or_else(|| {
                ApiError::unavailable(format!(
                    "no free UDP port on shard {shard} ({} in use)",
                    pool.in_use()
                ))
            })?;
            let Some(id) = st.new_session_id() else {
                st.ports[shard as usize].release(port);
                return Err(ApiError::unavailable("no session ids left"));
            };
            let (cmd, role) = make(id, room_id, port);
            (id, port, cmd, role)
        };
        let result = app.link.request(shard, cmd).await;
        let mut st = lock(app);
        match result {
            Ok(Outcome::Ok) => {
                if !st.add_session(shard, role) {
                    // The room was deleted while we waited; undo on the shard.
                    st.ports[shard as usize].release(port);
                    let _ = app
                        .link
                        .send(shard, &Command::DeleteSession { session: id });
                    return Err(ApiError::not_found(format!("room {room:?} was deleted")));
                }
                return Ok((id, port));
            }
            Ok(Outcome::Exists) => {
                st.ports[shard as usize].release(port);
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "the participant already publishes in this room",
                ));
            }
            Ok(Outcome::PortInUse) => {
                // Taken by another program; the round-robin pool moves on.
                st.ports[shard as usize].release(port);
                tracing::warn!(port, "port in use by another program, trying the next one");
            }
            Ok(o) => {
                st.ports[shard as usize].release(port);
                return Err(ApiError::unavailable(format!(
                    "dataplane refused the session: {o:?}"
                )));
            }
            Err(e) => {
                st.ports[shard as usize].release(port);
                return Err(e);
            }
        }
    }
    Err(ApiError::unavailable(format!(
        "no UDP port could be bound after {ATTEMPTS} attempts"
    )))
}

async fn create_ingest(
    Ext(app): AppState,
    Path(room): Path<String>,
    body: Result<Json<IngestBody>, JsonRejection>,
) -> Result<Created, ApiError> {
    let Json(b) = body?;
    let (kind, codec, default_pt, default_rate) = match b.kind.as_str() {
        "video" => (MediaKind::Video, "H264", 96, 90_000),
        "audio" => (MediaKind::Audio, "opus", 111, 48_000),
        k => {
            return Err(ApiError::bad_request(format!(
                "unknown kind {k:?}: use \"video\" or \"audio\""
            )))
        }
    };
    if let Some(c) = &b.codec {
        if !c.eq_ignore_ascii_case(codec) {
            return Err(ApiError::bad_request(format!(
                "unsupported codec {c:?} for {}: use {codec:?}",
                b.kind
            )));
        }
    }
    let payload_type = b.payload_type.unwrap_or(default_pt);
    if !(35..=127).contains(&payload_type) || (64..=95).contains(&payload_type) {
        return Err(ApiError::bad_request(format!(
            "payload_type {payload_type} is not a usable dynamic payload type (96-127, or 35-63)"
        )));
    }
    let clock_rate = b.clock_rate.unwrap_or(default_rate);
    if clock_rate != default_rate {
        return Err(ApiError::bad_request(format!(
            "clock_rate for {codec} must be {default_rate}, got {clock_rate}"
        )));
    }
    let srtp = parse_srtp(b.srtp)?;
    let participant = match b.participant {
        Some(p) => {
            validate_participant(&p)?;
            p
        }
        None => generated_participant()?,
    };
    let created_ms = now_ms();
    let (id, port) = open_session(&app, &room, Placement::Owner, |session, room, port| {
        let spec = IngestSpec {
            session,
            room,
            port,
            kind,
            payload_type,
            clock_rate,
            srtp,
            created_ms,
            participant: participant.clone(),
        };
        (Command::CreateIngest(spec.clone()), Role::Ingest(spec))
    })
    .await
    .map_err(|e| published_already(e, &participant, &room))?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": id.to_string(),
            "host": app.cfg.public_ip.to_string(),
            "port": port,
            "srtp": srtp.map(|k| SrtpParams(k).json()),
            "participant": participant,
        })),
    ))
}

async fn create_egress(
    Ext(app): AppState,
    Path(room): Path<String>,
    body: Result<Json<EgressBody>, JsonRejection>,
) -> Result<Created, ApiError> {
    let Json(b) = body?;
    let host: Ipv4Addr = b
        .host
        .parse()
        .map_err(|_| ApiError::bad_request(format!("host {:?} must be an IPv4 address", b.host)))?;
    if !app.cfg.egress_allowed(host) {
        return Err(ApiError::forbidden(format!(
            "egress to {host} is not allowed; the operator permits {} (--egress-allow)",
            app.cfg
                .egress_allow
                .iter()
                .map(|(n, b)| format!("{n}/{b}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if b.port == 0 || b.port > 65532 {
        return Err(ApiError::bad_request(format!(
            "port {} out of range: video goes to port, audio to port+2 (RTCP on +1 and +3), so use 1-65532",
            b.port
        )));
    }
    let srtp = parse_srtp(b.srtp)?;
    let created_ms = now_ms();
    let (id, _port) = open_session(&app, &room, Placement::Player, |session, room, port| {
        let spec = EgressSpec {
            session,
            room,
            port,
            dest_ip: host.octets(),
            dest_port: b.port,
            srtp,
            created_ms,
        };
        (Command::CreateEgress(spec.clone()), Role::Egress(spec))
    })
    .await?;
    let sdp = egress_sdp(
        id,
        &room,
        app.cfg.public_ip,
        host,
        b.port,
        srtp.map(SrtpParams).as_ref(),
    );
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "id": id.to_string(), "sdp": sdp, "srtp": srtp.map(|k| SrtpParams(k).json()) }),
        ),
    ))
}

/// Ends session `id` of `room`. `ingest` restricts it to publishers
/// (`Some(true)`) or receivers (`Some(false)`); `None` takes any participant.
pub(crate) async fn delete_session(
    app: &App,
    room: &str,
    id: &str,
    ingest: Option<bool>,
) -> Result<StatusCode, ApiError> {
    let what = match ingest {
        Some(true) => "ingest",
        Some(false) => "egress",
        None => "participant",
    };
    let missing = || ApiError::not_found(format!("no {what} {id:?} in room {room:?}"));
    let id: SessionId = id.parse().map_err(|_| missing())?;
    let shard = {
        let st = lock(app);
        if !st.rooms.contains_key(room) {
            return Err(ApiError::not_found(format!("no room {room:?}")));
        }
        let s = st.sessions.get(&id).ok_or_else(missing)?;
        let in_room = st.room_names.get(&s.room_id()).map(String::as_str) == Some(room);
        if !in_room || ingest.is_some_and(|i| s.role.is_ingest() != i) {
            return Err(missing());
        }
        s.shard
    };
    match app
        .link
        .request(shard, Command::DeleteSession { session: id })
        .await?
    {
        Outcome::Ok | Outcome::NotFound => {
            lock(app).end_session(id, Ended::Deleted);
            Ok(StatusCode::NO_CONTENT)
        }
        o => Err(ApiError::unavailable(format!(
            "dataplane refused to delete: {o:?}"
        ))),
    }
}

/// Removes anyone from a room: WHIP, WHEP, RTMP, RTP ingest or egress.
async fn delete_participant(
    Ext(app): AppState,
    Path((room, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete_session(&app, &room, &id, None).await
}

async fn delete_ingest(
    Ext(app): AppState,
    Path((room, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete_session(&app, &room, &id, Some(true)).await
}

async fn delete_egress(
    Ext(app): AppState,
    Path((room, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    delete_session(&app, &room, &id, Some(false)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(validate_room_name("demo_1-x").is_ok());
        for bad in ["", "-x", "a b", "ü", &"x".repeat(65), "../etc"] {
            assert!(validate_room_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn srtp_parameters() {
        let body = |suite: &str, key: Option<&str>| {
            Some(SrtpBody {
                suite: suite.into(),
                key: key.map(Into::into),
            })
        };
        assert!(parse_srtp(None).unwrap().is_none());
        let k = parse_srtp(body("AEAD_AES_128_GCM", None)).unwrap().unwrap();
        assert_eq!(k.material().len(), 28);
        let e = parse_srtp(body("AES_CM_128_HMAC_SHA1_80", Some("AAAA"))).unwrap_err();
        assert!(e.message.contains("30 bytes"), "{}", e.message);
        let e = parse_srtp(body("AES_CM_128_HMAC_SHA1_80", Some("***"))).unwrap_err();
        assert!(e.message.contains("base64"));
        assert!(parse_srtp(body("NULL", None))
            .unwrap_err()
            .message
            .contains("unknown SRTP suite"));
    }
}
