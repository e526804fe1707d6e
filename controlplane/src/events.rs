//! Room events for operators: participant joined / left, session failed
//! (with its reason), track published / unpublished, keyframe requested,
//! a player's line changed hands. Streamed by `GET /v1/rooms/{room}/events` as
//! Server-Sent Events, and POSTed to `--webhook-url` when set, signed with
//! HMAC-SHA256 (`X-Mgw-Signature: sha256=<hex>` over the body) and retried
//! with back-off.
//!
//! ```text
//! State::add_session / end_session ─▶ Events::emit ─▶ broadcast ─▶ SSE streams (per room)
//!                                                  └▶ webhook thread (bounded queue) ─▶ POST, retries
//! ```

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast;
use tracing::{debug, warn};

use crate::api::{lock, App};
use crate::auth::Caller;
use crate::error::ApiError;

/// Events buffered per SSE subscriber; a slower one misses the oldest.
const SSE_BUFFER: usize = 1024;
/// Events waiting for the webhook; beyond it they are dropped (and logged).
const WEBHOOK_QUEUE: usize = 4096;
/// Webhook attempts per event, and the first wait between them (doubling).
const WEBHOOK_ATTEMPTS: u32 = 4;
const WEBHOOK_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RoomEvent {
    pub room: String,
    /// `participant_joined`, `participant_left`, `session_failed`,
    /// `track_published`, `track_unpublished`, `keyframe_requested`,
    /// `line_changed`, `active_speaker` (`participant` speaks now) or
    /// `media_warning` (`reason` names media of the participant that the
    /// other side cannot be given or cannot play: a codec, a format, B-frames).
    pub event: &'static str,
    /// The participant's name in the room.
    pub participant: String,
    /// The session (of the participant) the event is about.
    pub session: String,
    /// `rtp_ingest`, `rtp_egress`, `whip`, `whep`, `rtmp_publish`, `rtmp_play`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `line_changed`: the player's media line (0-based, in offer order)
    /// and the participant it now carries (empty: nobody).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub at_ms: u64,
}

pub struct Events {
    tx: broadcast::Sender<RoomEvent>,
    webhook: Option<SyncSender<RoomEvent>>,
}

impl Default for Events {
    fn default() -> Self {
        Events {
            tx: broadcast::channel(SSE_BUFFER).0,
            webhook: None,
        }
    }
}

impl Events {
    pub fn emit(&self, ev: RoomEvent) {
        // No SSE subscriber is not an error.
        let _ = self.tx.send(ev.clone());
        if let Some(w) = &self.webhook {
            match w.try_send(ev) {
                Ok(()) => {}
                Err(TrySendError::Full(ev)) => {
                    warn!(room = %ev.room, event = ev.event, "webhook queue full: event dropped")
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RoomEvent> {
        self.tx.subscribe()
    }

    /// Starts delivering every event to `url`, signed with `secret`.
    pub fn start_webhook(&mut self, url: String, secret: Vec<u8>) {
        let (tx, rx) = mpsc::sync_channel::<RoomEvent>(WEBHOOK_QUEUE);
        self.webhook = Some(tx);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
        let spawned = std::thread::Builder::new()
            .name("webhook".into())
            .spawn(move || {
                let agent = ureq::AgentBuilder::new()
                    .timeout(Duration::from_secs(5))
                    .build();
                while let Ok(ev) = rx.recv() {
                    deliver(&agent, &url, &key, &ev);
                }
            });
        if let Err(e) = spawned {
            warn!("webhook thread not started: {e}");
        }
    }
}

/// The events of `room` from `rx` on.
fn room_stream(rx: broadcast::Receiver<RoomEvent>, room: String) -> impl Stream<Item = RoomEvent> {
    futures_util::stream::unfold(rx, move |mut rx| {
        let room = room.clone();
        async move {
            use broadcast::error::RecvError;
            loop {
                match rx.recv().await {
                    Ok(ev) if ev.room == room => return Some((ev, rx)),
                    // A lagging reader skips what it missed rather than stop.
                    Ok(_) | Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return None,
                }
            }
        }
    })
}

/// `GET /v1/rooms/{room}/events`: for the operator (admin key),
/// Server-Sent Events (`event: <name>`, `data: <json>`), or JSON text
/// messages over a WebSocket upgrade; for a participant (a room token),
/// the room's signalling over a WebSocket ([`crate::signal`]).
pub async fn room_events(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let caller = app.auth.room_caller(&headers, query.as_deref(), &room)?;
    let rx = {
        let st = lock(&app);
        if !st.rooms.contains_key(&room) {
            return Err(ApiError::not_found(format!("no room {room:?}")));
        }
        st.events.subscribe()
    };
    let events = room_stream(rx, room.clone());
    if let Caller::Participant(me) = caller {
        let Ok(ws) = ws else {
            return Err(ApiError::bad_request(
                "participants connect with a WebSocket (ws://HOST/v1/rooms/ROOM/events?token=...)",
            ));
        };
        return Ok(ws
            .max_message_size(crate::signal::MAX_FRAME)
            .on_upgrade(move |socket| crate::signal::participant(socket, app, room, me, events))
            .into_response());
    }
    // Not a WebSocket upgrade (the rejection): Server-Sent Events.
    Ok(match ws.ok() {
        Some(ws) => ws
            .on_upgrade(move |socket| forward_to_socket(socket, events))
            .into_response(),
        None => {
            let sse = events.map(|ev| {
                Ok::<_, std::convert::Infallible>(
                    SseEvent::default()
                        .event(ev.event)
                        .json_data(&ev)
                        .unwrap_or_default(),
                )
            });
            Sse::new(sse)
                .keep_alive(KeepAlive::default())
                .into_response()
        }
    })
}

/// Sends each event as a text message; ends when the client closes (its
/// close frame is answered, so it does not wait) or goes away.
async fn forward_to_socket(mut socket: WebSocket, events: impl Stream<Item = RoomEvent>) {
    let mut events = Box::pin(events);
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { return };
                let text = serde_json::to_string(&ev).expect("events serialize");
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
            msg = socket.recv() => match msg {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {} // pings are answered by the library; other input is ignored
            },
        }
    }
}

/// The signature header value for `body`.
pub fn signature(key: &ring::hmac::Key, body: &[u8]) -> String {
    let tag = ring::hmac::sign(key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn deliver(agent: &ureq::Agent, url: &str, key: &ring::hmac::Key, ev: &RoomEvent) {
    let body = serde_json::to_vec(ev).expect("events serialize");
    let sig = signature(key, &body);
    let mut wait = WEBHOOK_BACKOFF;
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        let r = agent
            .post(url)
            .set("content-type", "application/json")
            .set("x-mgw-signature", &sig)
            .send_bytes(&body);
        match r {
            Ok(_) => {
                debug!(event = ev.event, attempt, "webhook delivered");
                return;
            }
            Err(e) if attempt < WEBHOOK_ATTEMPTS => {
                debug!(attempt, "webhook failed, retrying in {wait:?}: {e}");
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(e) => {
                warn!(event = ev.event, room = %ev.room, "webhook gave up after {attempt} attempts: {e}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_reach_subscribers_and_serialize_without_empty_reasons() {
        let e = Events::default();
        let mut rx = e.subscribe();
        e.emit(RoomEvent {
            room: "r".into(),
            event: "participant_joined",
            participant: "alice".into(),
            session: "7".into(),
            kind: "whip",
            reason: None,
            line: None,
            source: None,
            at_ms: 1,
        });
        let got = rx.try_recv().unwrap();
        assert_eq!(got.event, "participant_joined");
        let json = serde_json::to_string(&got).unwrap();
        assert!(!json.contains("reason") && !json.contains("line"), "{json}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
        assert!(signature(&key, b"x").starts_with("sha256=") && signature(&key, b"x").len() == 71);
    }
}
