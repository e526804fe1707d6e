//! Room events for operators: participant joined / left, session failed
//! (with its reason), track published / unpublished, keyframe requested. Streamed by `GET /v1/rooms/{room}/events` as
//! Server-Sent Events, and POSTed to `--webhook-url` when set, signed with
//! HMAC-SHA256 (`X-Mgw-Signature: sha256=<hex>` over the body) and retried
//! with back-off.
//!
//! ```text
//! State::add_session / end_session ─▶ Events::emit ─▶ broadcast ─▶ SSE streams (per room)
//!                                                  └▶ webhook thread (bounded queue) ─▶ POST, retries
//! ```

use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;
use tracing::{debug, warn};

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
    /// `track_published`, `track_unpublished` or `keyframe_requested`.
    pub event: &'static str,
    pub participant: String,
    /// `rtp_ingest`, `rtp_egress`, `whip`, `whep`, `rtmp_publish`, `rtmp_play`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
            participant: "7".into(),
            kind: "whip",
            reason: None,
            at_ms: 1,
        });
        let got = rx.try_recv().unwrap();
        assert_eq!(got.event, "participant_joined");
        let json = serde_json::to_string(&got).unwrap();
        assert!(!json.contains("reason"), "{json}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k");
        assert!(signature(&key, b"x").starts_with("sha256=") && signature(&key, b"x").len() == 71);
    }
}
