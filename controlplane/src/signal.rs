//! Room signalling for participants: the room's WebSocket
//! (`GET /v1/rooms/{room}/events`, upgraded) opened with a room token
//! instead of the admin key.
//!
//! ```text
//! client ── ws://HOST/v1/rooms/ROOM/events?token=T ──▶ who: the token's participant
//!        ◀── {"type":"participants","you":NAME,"participants":[{name,sessions,tracks}]}
//!        ◀── {"type":"event", ...}        joins, leaves, tracks, lines, as operators see them
//!        ── {"type":"message","to":null|"NAME","data":...} ──▶ checks ──▶ the others (or NAME)
//!        ◀── {"type":"message","from":SENDER,"to":..,"data":..}  (SENDER set here: no impersonation)
//!        ◀── {"type":"error","error":"..."}  a message refused: too big, too fast, unknown NAME, junk
//! ```
//!
//! With room tokens on, the token must name its participant (minted with
//! `"participant"`); without tokens (a laptop), `?participant=NAME` says
//! who one is. The admin key still sees every room's events (read only).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{Message, WebSocket};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::broadcast;

use crate::api::{lock, App};
use crate::events::RoomEvent;

/// Largest message a participant may send (the whole JSON frame).
pub const MAX_MESSAGE: usize = 16 * 1024;
/// Messages one connection may send: this many a second, in bursts of [`BURST`].
pub const MESSAGES_PER_S: f64 = 10.0;
pub const BURST: f64 = 20.0;
/// Frames larger than this close the connection (the library's own bound).
pub const MAX_FRAME: usize = 64 * 1024;
/// Messages buffered per receiving connection; a slower one misses the oldest.
const BUFFER: usize = 1024;

/// A message between participants of a room.
#[derive(Debug, Clone, Serialize)]
pub struct RoomMessage {
    #[serde(skip)]
    pub room: String,
    pub from: String,
    pub to: Option<String>,
    pub data: Value,
}

/// What happened to messages participants sent, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered = 0,
    Oversize = 1,
    RateLimited = 2,
    UnknownTarget = 3,
    Malformed = 4,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Delivered,
        Outcome::Oversize,
        Outcome::RateLimited,
        Outcome::UnknownTarget,
        Outcome::Malformed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Oversize => "oversize",
            Outcome::RateLimited => "rate_limited",
            Outcome::UnknownTarget => "unknown_participant",
            Outcome::Malformed => "malformed",
        }
    }
}

/// The rooms' signalling: who is connected, the message bus, counters.
pub struct Signal {
    tx: broadcast::Sender<RoomMessage>,
    /// Per room: participants connected here (a name may connect twice).
    members: HashMap<String, HashMap<String, u32>>,
    pub counts: [u64; 5],
}

impl Default for Signal {
    fn default() -> Self {
        Signal {
            tx: broadcast::channel(BUFFER).0,
            members: HashMap::new(),
            counts: [0; 5],
        }
    }
}

impl Signal {
    fn join(&mut self, room: &str, name: &str) {
        *self
            .members
            .entry(room.to_string())
            .or_default()
            .entry(name.to_string())
            .or_default() += 1;
    }

    fn leave(&mut self, room: &str, name: &str) {
        let Some(names) = self.members.get_mut(room) else {
            return;
        };
        if let Some(n) = names.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                names.remove(name);
            }
        }
        if names.is_empty() {
            self.members.remove(room);
        }
    }

    /// Whether `name` is connected to `room`'s signalling.
    pub fn is_member(&self, room: &str, name: &str) -> bool {
        self.members
            .get(room)
            .is_some_and(|names| names.contains_key(name))
    }

    /// The participants connected to the room's signalling.
    pub fn members<'a>(&'a self, room: &str) -> impl Iterator<Item = &'a String> {
        self.members.get(room).into_iter().flat_map(|m| m.keys())
    }
}

/// A token bucket over one connection's messages.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + dt * MESSAGES_PER_S).min(BURST);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What one frame from a participant does: a message for the others, or
/// an error for the sender.
fn handle_frame(
    app: &App,
    room: &str,
    me: &str,
    text: &str,
    bucket: &mut Bucket,
    now: Instant,
) -> Result<RoomMessage, (Outcome, String)> {
    if text.len() > MAX_MESSAGE {
        return Err((
            Outcome::Oversize,
            format!(
                "message of {} bytes is over the limit of {MAX_MESSAGE}",
                text.len()
            ),
        ));
    }
    if !bucket.take(now) {
        return Err((
            Outcome::RateLimited,
            format!("too many messages: at most {MESSAGES_PER_S} a second (bursts of {BURST})"),
        ));
    }
    let v: Value =
        serde_json::from_str(text).map_err(|e| (Outcome::Malformed, format!("not JSON: {e}")))?;
    if v["type"] != "message" {
        return Err((
            Outcome::Malformed,
            r#"send {"type":"message","to":null|"NAME","data":...}"#.to_string(),
        ));
    }
    let to = match &v["to"] {
        Value::Null => None,
        Value::String(name) => Some(name.clone()),
        _ => {
            return Err((
                Outcome::Malformed,
                "\"to\" is null (everyone) or a participant's name".into(),
            ))
        }
    };
    if let Some(name) = &to {
        let st = lock(app);
        let in_room = st.has_participant(room, name) || st.signal.is_member(room, name);
        if !in_room {
            return Err((
                Outcome::UnknownTarget,
                format!("no participant {name:?} in room {room:?}"),
            ));
        }
    }
    Ok(RoomMessage {
        room: room.to_string(),
        from: me.to_string(),
        to,
        data: v["data"].clone(),
    })
}

fn count(app: &App, outcome: Outcome) {
    lock(app).signal.counts[outcome as usize] += 1;
}

/// Serves participant `me` of `room` on `socket` until either side closes.
pub async fn participant(
    mut socket: WebSocket,
    app: Arc<App>,
    room: String,
    me: String,
    events: impl futures_util::Stream<Item = RoomEvent>,
) {
    let (snapshot, mut messages) = {
        let mut st = lock(&app);
        st.signal.join(&room, &me);
        let list = st.participants_json(&room);
        (list, st.signal.tx.subscribe())
    };
    let hello = json!({ "type": "participants", "you": me, "participants": snapshot });
    let mut events = Box::pin(events);
    let mut bucket = Bucket {
        tokens: BURST,
        at: Instant::now(),
    };
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_ok()
    {
        loop {
            let out: Option<String> = tokio::select! {
                ev = events.next() => match ev {
                    Some(ev) => {
                        let mut v = serde_json::to_value(&ev).unwrap_or(Value::Null);
                        v["type"] = json!("event");
                        Some(v.to_string())
                    }
                    None => break,
                },
                m = messages.recv() => match m {
                    Ok(m) if m.room == room && m.from != me
                        && m.to.as_ref().is_none_or(|t| *t == me) => {
                        let mut v = serde_json::to_value(&m).unwrap_or(Value::Null);
                        v["type"] = json!("message");
                        Some(v.to_string())
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => None,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                frame = socket.recv() => match frame {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                    Some(Ok(Message::Text(text))) => {
                        match handle_frame(&app, &room, &me, &text, &mut bucket, Instant::now()) {
                            Ok(m) => {
                                count(&app, Outcome::Delivered);
                                let _ = lock(&app).signal.tx.send(m);
                                None
                            }
                            Err((outcome, why)) => {
                                count(&app, outcome);
                                Some(json!({ "type": "error", "error": why }).to_string())
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        count(&app, Outcome::Malformed);
                        Some(json!({ "type": "error", "error": "send JSON text frames" }).to_string())
                    }
                    Some(Ok(_)) => None, // pings are answered by the library
                },
            };
            if let Some(text) = out {
                let send = socket.send(Message::Text(text.into()));
                match tokio::time::timeout(Duration::from_secs(5), send).await {
                    Ok(Ok(())) => {}
                    // Gone, or not reading: drop it rather than queue without end.
                    _ => break,
                }
            }
        }
    }
    lock(&app).signal.leave(&room, &me);
}
