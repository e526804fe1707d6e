//! Who a client is in a room, decided the same way by both processes: the
//! controlplane for WHIP/WHEP and RTP sessions, the dataplane for RTMP.
//!
//! The room token's `participant` claim wins; without one, the
//! `?participant=NAME` of the URL or stream key; without either, a generated
//! name the client is told (a response header, the `onStatus` description).
//! A query that contradicts the token is refused rather than ignored, so a
//! client never acts under a name it did not expect.

use crate::msg::{valid_room_name, MAX_NAME};

/// Why a participant name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Not a usable name (HTTP 400, `NetStream.*.BadName`).
    Bad(String),
    /// The query names someone other than the token (HTTP 403).
    NotYours(String),
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Bad(m) | NameError::NotYours(m) => f.write_str(m),
        }
    }
}

/// Participant names follow the room-name rules.
pub fn valid_participant(name: &str) -> bool {
    valid_room_name(name)
}

fn check(name: &str) -> Result<(), NameError> {
    if valid_participant(name) {
        Ok(())
    } else {
        Err(NameError::Bad(format!(
            "bad participant name {name:?}: use 1-{MAX_NAME} characters of A-Z, a-z, 0-9, '_' and '-'"
        )))
    }
}

/// The participant name, and whether it was generated. `claim` is the
/// token's `participant`, `query` the URL's; `random` seeds a generated one.
pub fn resolve(
    claim: Option<&str>,
    query: Option<&str>,
    random: [u8; 4],
) -> Result<(String, bool), NameError> {
    if let Some(q) = query {
        check(q)?;
    }
    match (claim, query) {
        (Some(c), Some(q)) if c != q => Err(NameError::NotYours(format!(
            "the token is for participant {c:?}, not {q:?}"
        ))),
        (Some(c), _) => {
            check(c)?;
            Ok((c.to_string(), false))
        }
        (None, Some(q)) => Ok((q.to_string(), false)),
        (None, None) => Ok((generated(random), true)),
    }
}

/// `guest-` and eight hex digits.
pub fn generated(random: [u8; 4]) -> String {
    format!("guest-{:08x}", u32::from_be_bytes(random))
}

/// The value of `key` in a query string (`a=1&participant=bob`), if any.
pub fn query_value<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_wins_query_must_agree_and_names_are_checked() {
        let r = [1, 2, 3, 4];
        assert_eq!(resolve(Some("al"), None, r), Ok(("al".into(), false)));
        assert_eq!(resolve(Some("al"), Some("al"), r), Ok(("al".into(), false)));
        assert!(matches!(
            resolve(Some("al"), Some("bo"), r),
            Err(NameError::NotYours(_))
        ));
        assert_eq!(resolve(None, Some("bo"), r), Ok(("bo".into(), false)));
        assert_eq!(resolve(None, None, r), Ok(("guest-01020304".into(), true)));
        for bad in ["", "a b", "-x", "é", &"n".repeat(MAX_NAME + 1)] {
            assert!(
                matches!(resolve(None, Some(bad), r), Err(NameError::Bad(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            query_value("token=t&participant=bo", "participant"),
            Some("bo")
        );
        assert_eq!(query_value("token=t", "participant"), None);
    }
}
