//! WHIP (RFC 9725) and WHEP: WebRTC publish and play over one HTTP request.
//!
//! ```text
//! POST   /whip/{room}[?participant=NAME]  application/sdp offer → 201, Location, answer
//! POST   /whep/{room}[?participant=NAME]  application/sdp offer → 201, Location, answer
//! PATCH  /whip/{room}/{id}   trickle ICE fragment  → 204 (ICE-lite: nothing to do)
//! DELETE /whip/{room}/{id}                         → 200, session ended
//! OPTIONS on any of them                           → 204 with CORS headers
//! ```
//!
//! The client is a participant of the room: the token's, the query's, or a
//! generated name, told in the `X-Participant` response header. A WHEP
//! player is never sent its own participant's tracks; each of its media
//! lines carries one other publisher, named in the answer's `a=msid`.
//!
//! Every response carries CORS headers so a page served from another origin
//! can publish and play. Errors are the API's `{"error": "..."}` with a
//! 4xx/5xx that says what to fix (for an offer: what it lacks).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State as Ext};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{patch, post};
use axum::Router;
use gateway_ring::msg::{
    participant_key, Codec, Command, Direction, MediaKind, TrackSpec, WebrtcSpec,
};
use gateway_ring::participant::query_value;
use gateway_ring::SessionId;
use ring::rand::{SecureRandom, SystemRandom};

use crate::api::{create_room_named, delete_session, lock, now_ms, open_session, App};
use crate::auth::TokenRole;
use crate::error::ApiError;
use crate::offer::{self, AnswerParams, Chosen, Mode};
use crate::state::Role;

pub fn router(app: Arc<App>) -> Router<Arc<App>> {
    use crate::ratelimit::{limit_sessions, Kind};
    let limit = |kind| axum::middleware::from_fn_with_state((app.clone(), kind), limit_sessions);
    let (publishers, players) = (limit(Kind::Publishers), limit(Kind::Players));
    Router::new()
        .route(
            "/whip/{room}",
            post(whip).route_layer(publishers).options(preflight),
        )
        .route(
            "/whep/{room}",
            post(whep).route_layer(players).options(preflight),
        )
        .route(
            "/whip/{room}/{id}",
            patch(trickle).delete(delete_whip).options(preflight),
        )
        .route(
            "/whep/{room}/{id}",
            patch(trickle).delete(delete_whep).options(preflight),
        )
        .layer(axum::middleware::map_response(cors))
}

/// Lets browsers on other origins call these endpoints and read `Location`.
async fn cors(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, X-Participant"),
    );
    r
}

async fn preflight() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "POST, PATCH, DELETE, OPTIONS",
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "Content-Type, Authorization, If-Match",
            ),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
        ],
    )
        .into_response()
}

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// ICE credentials: RFC 8839 §5.4 asks for at least 24 bits of randomness
/// in the ufrag and 128 in the password.
fn random_token(rng: &SystemRandom, len: usize) -> Result<String, ApiError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bytes = vec![0u8; len];
    rng.fill(&mut bytes)
        .map_err(|_| ApiError::unavailable("no randomness available"))?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[(*b & 63) as usize] as char)
        .collect())
}

fn random_ssrc(rng: &SystemRandom) -> Result<u32, ApiError> {
    let mut b = [0u8; 4];
    rng.fill(&mut b)
        .map_err(|_| ApiError::unavailable("no randomness available"))?;
    Ok(u32::from_be_bytes(b).max(1))
}

type Body = Result<Bytes, BytesRejection>;

/// The body, or the extractor's refusal (413 over the limit) as an API error.
fn body_bytes(body: Body) -> Result<Bytes, ApiError> {
    body.map_err(|r| ApiError::new(r.status(), format!("request body: {}", r.body_text())))
}

async fn whip(
    Ext(app): Ext<Arc<App>>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let asked = query.as_deref().and_then(|q| query_value(q, "participant"));
    let (me, _) = app
        .auth
        .participant(&headers, &room, TokenRole::Publish, asked)?;
    offer_answer(&app, room, Mode::Publish, me, &headers, &body_bytes(body)?).await
}

async fn whep(
    Ext(app): Ext<Arc<App>>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let asked = query.as_deref().and_then(|q| query_value(q, "participant"));
    let (me, _) = app
        .auth
        .participant(&headers, &room, TokenRole::Subscribe, asked)?;
    offer_answer(&app, room, Mode::Play, me, &headers, &body_bytes(body)?).await
}

/// For a player as `me`: the publisher each negotiated line is named for
/// (its `a=msid` and the dataplane's preference), in line order: the
/// room's publishers other than `me` as they started, one per line of
/// each kind; `None` for a line left for whoever comes. A video line named
/// for a publisher takes the publisher's codec (if the player's offer has
/// it for that line: else the publisher waits for a line that can); the
/// players' lines that fit no publisher's codec are returned as warnings,
/// one per publisher left out.
fn line_sources(app: &App, room: &str, me: &str, lines: &mut [Chosen]) -> LineSources {
    let publishers = lock(app).publishers(room, me);
    let mut video: Vec<(&String, Codec)> = publishers
        .iter()
        .filter_map(|p| Some((&p.0, p.1?)))
        .collect();
    let mut audio = publishers.iter().filter(|p| p.2);
    let names = lines
        .iter_mut()
        .map(|line| match line.kind {
            MediaKind::Audio => audio.next().map(|p| p.0.clone()),
            MediaKind::Video => {
                let i = video.iter().position(|&(_, codec)| line.prefer(codec))?;
                Some(video.remove(i).0.clone())
            }
        })
        .collect();
    let offered: Vec<&str> = lines
        .iter()
        .flat_map(|l| l.options.iter().map(|o| o.0.name()))
        .fold(Vec::new(), |mut v, n| {
            if !v.contains(&n) {
                v.push(n);
            }
            v
        });
    let unfit =
        video
            .into_iter()
            .filter(|(_, codec)| {
                !lines
                    .iter()
                    .any(|l| l.options.iter().any(|o| o.0 == *codec))
            })
            .map(|(name, codec)| {
                format!(
                "video {} of {name}: player {me} offered {} only, so no line of it carries {name}",
                codec.name(),
                if offered.is_empty() { "no video".to_string() } else { offered.join(", ") }
            )
            })
            .collect();
    LineSources { names, unfit }
}

/// What [`line_sources`] found.
struct LineSources {
    names: Vec<Option<String>>,
    unfit: Vec<String>,
}

async fn offer_answer(
    app: &App,
    room: String,
    mode: Mode,
    me: String,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    if !content_type_is(headers, "application/sdp") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent as Content-Type: application/sdp",
        ));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the SDP offer is not UTF-8"))?;
    let parsed = offer::parse(text).map_err(ApiError::bad_request)?;
    let mut neg =
        offer::negotiate(&parsed, mode, &app.cfg.video_codecs).map_err(ApiError::bad_request)?;
    crate::api::validate_room_name(&room)?;
    let exists = lock(app).rooms.contains_key(&room);
    if !exists {
        match mode {
            Mode::Publish if app.cfg.auto_room => {
                match create_room_named(app, room.clone()).await {
                    // Lost a race with another publisher creating it: fine.
                    Ok(_) => {}
                    Err(e) if e.status == StatusCode::CONFLICT => {}
                    Err(e) => return Err(e),
                }
            }
            Mode::Publish => {
                return Err(ApiError::not_found(format!(
                    "no room {room:?}, and the operator turned off creating rooms on publish"
                )))
            }
            Mode::Play => {
                return Err(ApiError::not_found(format!(
                    "no room {room:?}: nothing is published there"
                )))
            }
        }
    }
    let rng = SystemRandom::new();
    let ice_ufrag = random_token(&rng, 8)?;
    let ice_pwd = random_token(&rng, 24)?;
    let ssrcs: Vec<u32> = match mode {
        Mode::Publish => vec![0; neg.tracks.len()],
        Mode::Play => neg
            .tracks
            .iter()
            .map(|_| random_ssrc(&rng))
            .collect::<Result<_, _>>()?,
    };
    let created_ms = now_ms();
    let (sources, unfit, video_pts) = match mode {
        Mode::Publish => (vec![None; neg.tracks.len()], Vec::new(), [(0, 0); 4]),
        Mode::Play => {
            let found = line_sources(app, &room, &me, &mut neg.tracks);
            // Each line carries every codec it offered (on the session's
            // payload types): a publisher that comes later in another
            // codec than the line's first still finds it.
            let video_pts = offer::carry_every_codec(&mut neg.tracks);
            (found.names, found.unfit, video_pts)
        }
    };
    let make_spec = |session, room, port| WebrtcSpec {
        session,
        room,
        port,
        direction: match mode {
            Mode::Publish => Direction::Publish,
            Mode::Play => Direction::Subscribe,
        },
        ice_ufrag: ice_ufrag.clone(),
        ice_pwd: ice_pwd.clone(),
        remote_ufrag: neg.remote_ufrag.clone(),
        remote_fingerprint: neg.remote_fingerprint,
        tracks: neg
            .tracks
            .iter()
            .zip(&ssrcs)
            .zip(&sources)
            .map(|((t, &ssrc), source)| TrackSpec {
                kind: t.kind,
                codec: t.wire,
                codecs: t
                    .also
                    .iter()
                    .fold(1 << t.wire as u8, |mask, (c, _, _)| mask | 1 << *c as u8),
                pt: t.codec.pt,
                ssrc,
                source: source.as_deref().map_or(0, participant_key),
                audio_level: t.audio_level.unwrap_or(0),
                twcc: t.twcc.unwrap_or(0),
                abs_send_time: t.abs_send_time.unwrap_or(0),
                rtx_pt: t.rtx.as_ref().map_or(0, |r| r.pt),
            })
            .collect(),
        video_pts,
        created_ms,
        participant: me.clone(),
        dtls_role: neg.dtls_role,
    };
    let placement = match mode {
        Mode::Publish => crate::api::Placement::Owner,
        Mode::Play => crate::api::Placement::Player,
    };
    let (id, port) = open_session(app, &room, placement, |session, room, port| {
        let spec = make_spec(session, room, port);
        (Command::CreateWebrtc(spec.clone()), Role::Webrtc(spec))
    })
    .await
    .map_err(|e| crate::api::published_already(e, &me, &room))?;
    {
        let state = lock(app);
        for what in unfit {
            state.media_warning(id, what);
        }
        // A publisher's video that players already here have no line for.
        let publishing = neg.tracks.iter().find(|t| t.kind == MediaKind::Video);
        if let (Mode::Publish, Some(video)) = (mode, publishing) {
            let codec = video.wire;
            for (player, lines) in state.players_without(&room, codec, &me) {
                let names: Vec<&str> = lines.iter().map(|c| c.name()).collect();
                let what = format!(
                    "video {} of {me}: player {player}'s lines take {} only, so none carries {me}",
                    codec.name(),
                    names.join(", ")
                );
                state.media_warning(id, what);
            }
        }
    }
    let fingerprint = app.link.region.dtls_fingerprint();
    let answer = offer::answer(
        &parsed,
        &neg,
        &AnswerParams {
            mode,
            session: id,
            ip: app.cfg.public_ip,
            port,
            ice_ufrag: &ice_ufrag,
            ice_pwd: &ice_pwd,
            fingerprint: &fingerprint,
            ssrcs: &ssrcs,
            sources: &sources,
        },
    );
    let path = match mode {
        Mode::Publish => "whip",
        Mode::Play => "whep",
    };
    tracing::info!(room = %room, session = %id, port, participant = %me, "{path} session created");
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/sdp".to_string()),
            (header::LOCATION, format!("/{path}/{room}/{id}")),
            (header::ETAG, format!("\"{id}\"")),
            (header::HeaderName::from_static("x-participant"), me.clone()),
        ],
        answer,
    )
        .into_response())
}

/// Trickle ICE (RFC 8840 fragments). An ICE-lite server put its only
/// candidate in the answer and learns the client's address from its checks,
/// so a fragment changes nothing; an ICE restart is not supported.
async fn trickle(
    Ext(app): Ext<Arc<App>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    // The session URL is not a secret: the token that made it is needed.
    let role = if is_whep(&app, &room, &id) {
        TokenRole::Subscribe
    } else {
        TokenRole::Publish
    };
    app.auth.check_stream(&headers, &room, role)?;
    let body = body_bytes(body)?;
    if !content_type_is(&headers, "application/trickle-ice-sdpfrag") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PATCH takes Content-Type: application/trickle-ice-sdpfrag",
        ));
    }
    let id: SessionId = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("no session {id:?}")))?;
    let ufrag = {
        let st = lock(&app);
        match st.sessions.get(&id).map(|s| &s.role) {
            Some(Role::Webrtc(w)) if st.room_names.get(&w.room) == Some(&room) => {
                w.remote_ufrag.clone()
            }
            _ => {
                return Err(ApiError::not_found(format!(
                    "no session {id} in room {room:?}"
                )))
            }
        }
    };
    let text = String::from_utf8_lossy(&body);
    let restart = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .any(|u| u.trim() != ufrag);
    if restart {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ICE restart is not supported: start a new session (POST) instead",
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_whip(
    Ext(app): Ext<Arc<App>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    app.auth.check_stream(&headers, &room, TokenRole::Publish)?;
    delete_session(&app, &room, &id, Some(true)).await?;
    Ok(StatusCode::OK)
}

/// Whether session `id` of `room` is a WHEP player (PATCH serves both).
fn is_whep(app: &App, room: &str, id: &str) -> bool {
    let st = lock(app);
    id.parse::<SessionId>()
        .ok()
        .and_then(|id| st.sessions.get(&id))
        .is_some_and(|s| {
            !s.role.is_ingest() && st.room_names.get(&s.room_id()).map(String::as_str) == Some(room)
        })
}

async fn delete_whep(
    Ext(app): Ext<Arc<App>>,
    Path((room, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    app.auth
        .check_stream(&headers, &room, TokenRole::Subscribe)?;
    delete_session(&app, &room, &id, Some(false)).await?;
    Ok(StatusCode::OK)
}
