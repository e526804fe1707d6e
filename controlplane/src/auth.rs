//! Who may do what.
//!
//! - `/v1/*` (the operator API) needs the admin key: `Authorization: Bearer KEY`.
//! - WHIP and WHEP need a room token when a token secret is configured:
//!   a JWT (HS256) with `room`, `role` (`publish` for WHIP, `subscribe` for
//!   WHEP) and `exp`, minted by `POST /v1/rooms/{room}/tokens`.
//!
//! Without `--admin-key` a development key is generated and printed at
//! start, and without `--token-secret` WHIP/WHEP are open (tokens can still
//! be minted, with a generated secret), so the one-command start and the
//! demo page just work on a laptop. `--production` refuses to start without
//! both secrets.

use axum::http::{header, HeaderMap, StatusCode};
use gateway_ring::participant::NameError;
pub use gateway_ring::token::TokenRole;
use gateway_ring::token::{TokenError, TokenKeys};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

use crate::config::Config;
use crate::error::ApiError;

/// Shortest secrets accepted (bytes).
pub const MIN_SECRET: usize = 16;
/// Longest token lifetime that can be minted.
pub const MAX_TTL_S: u64 = 7 * 24 * 3600;

/// Who opened a room's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The operator: every event, read only.
    Admin,
    /// A participant of the room, by name: its signalling.
    Participant(String),
}

pub struct Auth {
    admin_key: String,
    // (Debug below never prints the secrets.)
    keys: TokenKeys,
    /// WHIP/WHEP need a token (a secret was configured).
    pub require_tokens: bool,
    /// The admin key was generated (development mode).
    pub dev_admin_key: bool,
}

fn random_secret() -> Result<String, String> {
    let mut b = [0u8; 24];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| "no randomness available".to_string())?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("require_tokens", &self.require_tokens)
            .field("dev_admin_key", &self.dev_admin_key)
            .finish_non_exhaustive()
    }
}

impl Auth {
    pub fn from_config(cfg: &Config) -> Result<Auth, String> {
        if cfg.production && (cfg.admin_key.is_none() || cfg.token_secret.is_none()) {
            return Err(
                "--production needs --admin-key and --token-secret (or MGW_ADMIN_KEY and MGW_TOKEN_SECRET)"
                    .into(),
            );
        }
        for (name, v) in [
            ("--admin-key", &cfg.admin_key),
            ("--token-secret", &cfg.token_secret),
        ] {
            if v.as_ref().is_some_and(|s| s.len() < MIN_SECRET) {
                return Err(format!("{name} must be at least {MIN_SECRET} characters"));
            }
        }
        let (admin_key, dev_admin_key) = match &cfg.admin_key {
            Some(k) => (k.clone(), false),
            None => (random_secret()?, true),
        };
        let secret = match &cfg.token_secret {
            Some(s) => s.clone(),
            None => random_secret()?,
        };
        Ok(Auth {
            admin_key,
            keys: TokenKeys::new(secret.as_bytes()),
            require_tokens: cfg.token_secret.is_some(),
            dev_admin_key,
        })
    }

    pub fn admin_key(&self) -> &str {
        &self.admin_key
    }

    fn bearer(headers: &HeaderMap) -> Option<&str> {
        headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")
            .map(str::trim)
    }

    /// The operator API: 401 without a key, 403 with a wrong one.
    pub fn check_admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = Self::bearer(headers) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "the API needs the admin key: Authorization: Bearer <key> (--admin-key; printed at start in development)",
            ));
        };
        if bool::from(key.as_bytes().ct_eq(self.admin_key.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::forbidden("wrong admin key"))
        }
    }

    /// A room token for `room` and `role` (as `participant`, if given),
    /// valid `ttl_s` seconds.
    pub fn mint(
        &self,
        room: &str,
        role: TokenRole,
        participant: Option<&str>,
        ttl_s: u64,
        now_s: u64,
    ) -> Result<String, ApiError> {
        if ttl_s == 0 || ttl_s > MAX_TTL_S {
            return Err(ApiError::bad_request(format!(
                "ttl_s must be 1-{MAX_TTL_S} seconds"
            )));
        }
        self.keys
            .mint(room, role, participant, now_s + ttl_s)
            .map_err(|e| ApiError::unavailable(format!("minting the token failed: {e}")))
    }

    /// Who a WHIP/WHEP client is in `room` (see
    /// [`gateway_ring::participant`]): the token's participant, else
    /// `?participant=` (`query`), else a generated name (`true`). 400 for a
    /// bad name, 403 for a query that contradicts the token; the token is
    /// checked as by [`Self::check_stream`].
    pub fn participant(
        &self,
        headers: &HeaderMap,
        room: &str,
        role: TokenRole,
        query: Option<&str>,
    ) -> Result<(String, bool), ApiError> {
        let claim = self.check_stream(headers, room, role)?;
        let mut random = [0u8; 4];
        SystemRandom::new()
            .fill(&mut random)
            .map_err(|_| ApiError::unavailable("no randomness available"))?;
        gateway_ring::participant::resolve(claim.as_deref(), query, random).map_err(|e| match e {
            NameError::Bad(m) => ApiError::bad_request(m),
            NameError::NotYours(m) => ApiError::forbidden(m),
        })
    }

    /// Who opens `room`'s events: the operator (the admin key), or a
    /// participant of the room. With tokens on, a participant brings a room
    /// token (`Authorization: Bearer` or `?token=`, either role) that names
    /// it; without, `?participant=NAME` says who it is. 401 without either,
    /// 403 for a token of another room, one that names nobody, or a query
    /// that names someone else.
    pub fn room_caller(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        room: &str,
    ) -> Result<Caller, ApiError> {
        use gateway_ring::participant::query_value;
        let bearer = Self::bearer(headers);
        if bearer.is_some_and(|k| bool::from(k.as_bytes().ct_eq(self.admin_key.as_bytes()))) {
            return Ok(Caller::Admin);
        }
        let asked = query.and_then(|q| query_value(q, "participant"));
        if !self.require_tokens {
            if bearer.is_some() {
                // Not a participant's way in here: a wrong admin key.
                self.check_admin(headers)?;
            }
            return match asked {
                Some(name) if gateway_ring::participant::valid_participant(name) => {
                    Ok(Caller::Participant(name.to_string()))
                }
                Some(name) => Err(ApiError::bad_request(format!(
                    "bad participant name {name:?}"
                ))),
                None => Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "room events need the admin key (Authorization: Bearer <key>), or ?participant=NAME for a participant",
                )),
            };
        }
        let Some(token) = bearer.or_else(|| query.and_then(|q| query_value(q, "token"))) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("room events need the admin key, or a room token naming its participant (?token=..., POST /v1/rooms/{room}/tokens with \"participant\")"),
            ));
        };
        let claim = self
            .keys
            .verify(Some(token), room, TokenRole::Publish)
            .or_else(|_| self.keys.verify(Some(token), room, TokenRole::Subscribe))
            .map_err(|e| match e {
                TokenError::Invalid(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
                TokenError::Forbidden(m) => ApiError::forbidden(m),
            })?;
        let Some(name) = claim else {
            return Err(ApiError::forbidden(
                "this token names no participant: mint it with \"participant\" to use the room's signalling",
            ));
        };
        match asked {
            Some(q) if q != name => Err(ApiError::forbidden(format!(
                "the token is for participant {name:?}, not {q:?}"
            ))),
            _ => Ok(Caller::Participant(name)),
        }
    }

    /// WHIP (`Publish`) or WHEP (`Subscribe`) on `room`: 401 for a missing,
    /// malformed, forged or expired token; 403 for another room or role.
    /// Returns the token's participant, if it names one.
    pub fn check_stream(
        &self,
        headers: &HeaderMap,
        room: &str,
        role: TokenRole,
    ) -> Result<Option<String>, ApiError> {
        if !self.require_tokens {
            return Ok(None);
        }
        let Some(token) = Self::bearer(headers) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("this server needs a room token: Authorization: Bearer <token> (POST /v1/rooms/{room}/tokens)"),
            ));
        };
        self.keys
            .verify(Some(token), room, role)
            .map_err(|e| match e {
                TokenError::Invalid(m) => ApiError::new(StatusCode::UNAUTHORIZED, m),
                TokenError::Forbidden(m) => ApiError::forbidden(m),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn auth(args: &[&str]) -> Result<Auth, String> {
        let mut v = vec!["cp"];
        v.extend_from_slice(args);
        Auth::from_config(&Config::parse_from(v))
    }

    fn bearer(t: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {t}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn tokens_bind_room_role_and_time() {
        let a = auth(&[
            "--admin-key",
            "0123456789abcdef0",
            "--token-secret",
            "fedcba98765432100",
        ])
        .unwrap();
        let now = 1_800_000_000;
        let t = a.mint("r", TokenRole::Publish, None, 60, now).unwrap();
        assert!(a.check_stream(&bearer(&t), "r", TokenRole::Publish).is_ok());
        let e = a
            .check_stream(&bearer(&t), "other", TokenRole::Publish)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let e = a
            .check_stream(&bearer(&t), "r", TokenRole::Subscribe)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let old = a.mint("r", TokenRole::Publish, None, 1, 1_000_000).unwrap();
        let e = a
            .check_stream(&bearer(&old), "r", TokenRole::Publish)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED, "{}", e.message);
        let forged = auth(&["--token-secret", "another-secret-123"])
            .unwrap()
            .mint("r", TokenRole::Publish, None, 60, now)
            .unwrap();
        let e = a
            .check_stream(&bearer(&forged), "r", TokenRole::Publish)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            a.check_stream(&HeaderMap::new(), "r", TokenRole::Publish)
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
        assert!(a.mint("r", TokenRole::Publish, None, 0, now).is_err());
        // A token minted for a participant names it; a query must agree.
        let alice = a
            .mint("r", TokenRole::Publish, Some("alice"), 60, now)
            .unwrap();
        let who = a.participant(&bearer(&alice), "r", TokenRole::Publish, None);
        assert_eq!(who.unwrap(), ("alice".to_string(), false));
        let e = a
            .participant(&bearer(&alice), "r", TokenRole::Publish, Some("bob"))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        let e = a
            .participant(&bearer(&t), "r", TokenRole::Publish, Some("no way"))
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let (name, generated) = a
            .participant(&bearer(&t), "r", TokenRole::Publish, None)
            .unwrap();
        assert!(generated && name.starts_with("guest-"), "{name}");
    }

    #[test]
    fn admin_key_and_modes() {
        let a = auth(&["--admin-key", "0123456789abcdef0"]).unwrap();
        assert!(a.check_admin(&bearer("0123456789abcdef0")).is_ok());
        assert_eq!(
            a.check_admin(&bearer("nope")).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            a.check_admin(&HeaderMap::new()).unwrap_err().status,
            StatusCode::UNAUTHORIZED
        );
        assert!(!a.require_tokens, "no secret: WHIP/WHEP open");
        let dev = auth(&[]).unwrap();
        assert!(dev.dev_admin_key && dev.admin_key().len() >= MIN_SECRET);
        assert!(auth(&["--production"]).unwrap_err().contains("--admin-key"));
        assert!(auth(&["--admin-key", "short"]).unwrap_err().contains("16"));
    }
}
