//! Room tokens, shared by both processes: the controlplane mints them and
//! checks them on WHIP/WHEP; the dataplane checks them on RTMP stream keys
//! (`rtmp://host/live/ROOM?token=...`).
//!
//! A token is a JWT (RFC 7519) signed with HS256 over the claims
//! `{"room", "role": "publish"|"subscribe", "exp"}` and, when minted for
//! one, `"participant"` (who the holder is in the room; see
//! [`crate::participant`]); expiry has no leeway.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    Publish,
    Subscribe,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    room: String,
    role: TokenRole,
    exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    participant: Option<String>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Missing, malformed, forged or expired (HTTP 401).
    Invalid(String),
    /// Valid, but for another room or role (HTTP 403).
    Forbidden(String),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Invalid(m) | TokenError::Forbidden(m) => f.write_str(m),
        }
    }
}

pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenKeys {
    pub fn new(secret: &[u8]) -> TokenKeys {
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
        }
    }

    /// A token for `room` and `role` (as `participant`, if given) that
    /// expires at Unix time `exp`.
    pub fn mint(
        &self,
        room: &str,
        role: TokenRole,
        participant: Option<&str>,
        exp: u64,
    ) -> Result<String, String> {
        let claims = Claims {
            room: room.to_string(),
            role,
            exp,
            participant: participant.map(str::to_string),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| e.to_string())
    }

    /// Accepts `token` for `role` on `room`; returns its participant claim.
    pub fn verify(
        &self,
        token: Option<&str>,
        room: &str,
        role: TokenRole,
    ) -> Result<Option<String>, TokenError> {
        let Some(token) = token else {
            return Err(TokenError::Invalid("a room token is required".into()));
        };
        let mut v = Validation::new(Algorithm::HS256);
        v.leeway = 0;
        v.set_required_spec_claims(&["exp"]);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map_err(|e| TokenError::Invalid(format!("room token rejected: {e}")))?
            .claims;
        if claims.room != room {
            return Err(TokenError::Forbidden(format!(
                "the token is for room {:?}, not {room:?}",
                claims.room
            )));
        }
        if claims.role != role {
            return Err(TokenError::Forbidden(format!(
                "the token allows {:?}, not {role:?}",
                claims.role
            )));
        }
        Ok(claims.participant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_role_expiry_and_signature_are_checked() {
        let k = TokenKeys::new(b"0123456789abcdef");
        let far = 4_000_000_000;
        let t = k.mint("r", TokenRole::Publish, None, far).unwrap();
        assert_eq!(k.verify(Some(&t), "r", TokenRole::Publish), Ok(None));
        let named = k.mint("r", TokenRole::Publish, Some("al"), far).unwrap();
        assert_eq!(
            k.verify(Some(&named), "r", TokenRole::Publish),
            Ok(Some("al".into()))
        );
        assert!(matches!(
            k.verify(Some(&t), "x", TokenRole::Publish),
            Err(TokenError::Forbidden(_))
        ));
        assert!(matches!(
            k.verify(Some(&t), "r", TokenRole::Subscribe),
            Err(TokenError::Forbidden(_))
        ));
        let old = k.mint("r", TokenRole::Publish, None, 1_000).unwrap();
        assert!(matches!(
            k.verify(Some(&old), "r", TokenRole::Publish),
            Err(TokenError::Invalid(_))
        ));
        let other = TokenKeys::new(b"another-secret!!")
            .mint("r", TokenRole::Publish, None, far)
            .unwrap();
        assert!(matches!(
            k.verify(Some(&other), "r", TokenRole::Publish),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            k.verify(None, "r", TokenRole::Publish),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            k.verify(Some("junk"), "r", TokenRole::Publish),
            Err(TokenError::Invalid(_))
        ));
    }
}
