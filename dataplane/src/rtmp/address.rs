//! What an RTMP `publish` or `play` names: a room, maybe a participant.
//!
//! ```text
//! rtmp://HOST/live/ROOM/NAME?token=T   NAME's stream in ROOM
//! rtmp://HOST/live/ROOM?participant=ME  the room (push: as ME; play: its publisher)
//! ```
//!
//! Clients split the URL into `app` and stream name differently: ffmpeg
//! sends app `live/ROOM` and stream `NAME`, librtmp-style clients app `live`
//! and stream `ROOM/NAME`; both mean the same. The query (`token`,
//! `participant`) may ride on either part.

use gateway_ring::participant::query_value;

/// The application name in `rtmp://host/{app}/{room}`.
pub const APP: &str = "live";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub room: String,
    /// The participant in the path (`ROOM/NAME`).
    pub name: Option<String>,
    /// `?participant=`: who the client is.
    pub participant: Option<String>,
    pub token: Option<String>,
}

/// Reads `app` + `key` (+ the key's `query`); the error says what to use.
pub fn parse(app: &str, key: &str, query: &str) -> Result<Address, String> {
    let (app, app_query) = app.split_once('?').unwrap_or((app, ""));
    let path = format!("{}/{}", app.trim_matches('/'), key.trim_matches('/'));
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let usage = || format!("use rtmp://host/{APP}/ROOM or rtmp://host/{APP}/ROOM/NAME");
    let (room, name) = match parts.as_slice() {
        [a, room] if *a == APP => (*room, None),
        [a, room, name] if *a == APP => (*room, Some(name.to_string())),
        [a, ..] if *a != APP => return Err(format!("unknown application {a:?}: {}", usage())),
        _ => return Err(format!("bad stream address {path:?}: {}", usage())),
    };
    let get = |k: &str| {
        query_value(query, k)
            .or_else(|| query_value(app_query, k))
            .map(str::to_string)
    };
    Ok(Address {
        room: room.to_string(),
        name,
        participant: get("participant"),
        token: get("token"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_of_splitting_the_url_name_the_same_stream() {
        let ffmpeg = parse("live/r1", "bob", "token=t").unwrap();
        let librtmp = parse("live", "r1/bob", "token=t").unwrap();
        assert_eq!(ffmpeg, librtmp);
        assert_eq!(
            ffmpeg,
            Address {
                room: "r1".into(),
                name: Some("bob".into()),
                participant: None,
                token: Some("t".into()),
            }
        );
        let room_only = parse("live", "r1", "participant=me").unwrap();
        assert_eq!(
            (room_only.name, room_only.participant.as_deref()),
            (None, Some("me"))
        );
        let query_on_app = parse("live?token=z", "r1", "").unwrap();
        assert_eq!(query_on_app.token.as_deref(), Some("z"));
        assert!(parse("vod", "r1", "")
            .unwrap_err()
            .contains("unknown application"));
        assert!(parse("live", "", "").is_err());
        assert!(parse("live", "a/b/c", "").is_err());
    }
}
