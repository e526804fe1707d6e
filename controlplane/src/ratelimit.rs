//! Per-client limits on creating sessions: a token bucket per client IP and
//! kind of session, over the limit 429 with `Retry-After`, and nothing is
//! allocated.
//!
//! Two kinds, because they cost and arrive differently:
//! - publishing and RTP sessions (WHIP, RTP ingest and egress): a person
//!   publishes once, and a publisher costs the room (ingest, transcoding,
//!   every player's share): `--session-rate` per second, burst
//!   `--session-burst` (20, 40);
//! - WHEP players: an audience behind one address (a carrier-grade NAT, a
//!   school, an office) joins together, a few hundred within seconds, and a
//!   player costs a port and one DTLS handshake (about a millisecond):
//!   `--player-session-rate`, burst `--player-session-burst` (100, 300). A
//!   flood of thousands of offers a second from one address is still
//!   refused past the burst.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::App;
use crate::error::ApiError;

/// Buckets kept before idle ones are pruned.
const MAX_CLIENTS: usize = 10_000;

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate: f64, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: rate.max(0.001),
            burst: burst.max(1) as f64,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `ip`; on refusal, how long until one is there.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut b = self.buckets.lock().expect("rate limiter lock");
        if b.len() >= MAX_CLIENTS {
            // Idle long enough to be full again: forgetting them changes nothing.
            let full_after = Duration::from_secs_f64(self.burst / self.rate);
            b.retain(|_, (_, at)| now.saturating_duration_since(*at) < full_after);
        }
        let (tokens, at) = b.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.rate)
            .min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

/// The two buckets of every client IP (see the module doc).
pub struct SessionLimits {
    pub publishers: RateLimiter,
    pub players: RateLimiter,
}

impl SessionLimits {
    pub fn new(cfg: &crate::config::Config) -> SessionLimits {
        SessionLimits {
            publishers: RateLimiter::new(cfg.session_rate, cfg.session_burst),
            players: RateLimiter::new(cfg.player_session_rate, cfg.player_session_burst),
        }
    }
}

/// Which bucket a session-creating route takes from.
#[derive(Clone, Copy)]
pub enum Kind {
    /// WHIP, RTP ingest and egress.
    Publishers,
    /// WHEP.
    Players,
}

/// Middleware on the session-creating routes, with the bucket's kind as
/// its state: `from_fn_with_state((app, Kind::Players), limit_sessions)`.
pub async fn limit_sessions(
    State((app, kind)): State<(Arc<App>, Kind)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let (what, bucket, rate, burst) = match kind {
        Kind::Publishers => (
            "sessions",
            &app.limiter.publishers,
            app.cfg.session_rate,
            app.cfg.session_burst,
        ),
        Kind::Players => (
            "players",
            &app.limiter.players,
            app.cfg.player_session_rate,
            app.cfg.player_session_burst,
        ),
    };
    match bucket.take(peer.ip(), Instant::now()) {
        Ok(()) => next.run(req).await,
        Err(wait) => too_many(what, peer.ip(), rate, burst, wait),
    }
}

/// The 429: what was refused, the limit, and when to come back.
fn too_many(what: &str, ip: IpAddr, rate: f64, burst: u32, wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut r = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "too many new {what} from {ip}: at most {rate} per second (burst {burst}); retry in {secs} s"
        ),
    )
    .into_response();
    r.headers_mut().insert(
        header::RETRY_AFTER,
        secs.to_string().parse().expect("digits"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_the_rate_and_caps_at_the_burst() {
        let l = RateLimiter::new(2.0, 3);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let t0 = Instant::now();
        assert!((0..3).all(|_| l.take(ip, t0).is_ok()));
        let wait = l.take(ip, t0).unwrap_err();
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert!(l.take(ip, t0 + Duration::from_millis(500)).is_ok());
        // Another client has its own bucket.
        assert!(l.take("10.0.0.2".parse().unwrap(), t0).is_ok());
        // Idle for long: full again, not more.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| l.take(ip, later).is_ok()));
        assert!(l.take(ip, later).is_err());
    }
}
