//! HTTP-FLV players (sans-IO): the request, the answer, and FLV tags as
//! HTTP chunks. WeChat's `live-player` and flv.js play `http://HOST/….flv`;
//! they get the same streams, GOP cache and slow-consumer rules as RTMP
//! players, only framed differently.
//!
//! ```text
//! GET /live/ROOM.flv?participant=ME&token=T   ─▶ the room's program (as `live/ROOM`)
//! GET /live/ROOM/NAME.flv?token=T             ─▶ NAME's stream (as `live/ROOM/NAME`)
//!   ◀─ 200, Transfer-Encoding: chunked, CORS; FLV header; then per message one
//!      chunk: [tag header 11][body][PreviousTagSize 4]
//!   ◀─ 400 / 403 / 404 / 405 / 431 with a one-line reason, then closed
//! ```
//!
//! The request head is parsed by `httparse` (hyper's parser: no allocation,
//! strict about what a request line may hold), bounded by [`MAX_REQUEST`].

use bytes::Bytes;

use super::conn::{types, Media};

/// Most bytes of a request head (line and headers) a client may send.
pub const MAX_REQUEST: usize = 8 * 1024;
/// Most headers in a request.
const MAX_HEADERS: usize = 32;

/// What a request head asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The head is not complete yet.
    Partial,
    /// Play a stream: the same `app`, `key` and `query` an RTMP `play` of
    /// `rtmp://HOST/APP/KEY?QUERY` has.
    Play {
        app: String,
        key: String,
        query: String,
    },
    /// A CORS preflight: answered, then closed.
    Preflight,
    /// Refused with this status and reason.
    Refuse { status: u16, why: String },
}

/// Reads a request head from what arrived so far (`buf`, at most
/// [`MAX_REQUEST`] bytes are looked at).
pub fn parse_request(buf: &[u8]) -> Request {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let refuse = |status, why: &str| Request::Refuse {
        status,
        why: why.to_string(),
    };
    match req.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST => {
            return refuse(431, "request head over 8 KiB");
        }
        Ok(httparse::Status::Partial) => return Request::Partial,
        Ok(httparse::Status::Complete(_)) => {}
        Err(httparse::Error::TooManyHeaders) => return refuse(431, "more than 32 headers"),
        Err(e) => return refuse(400, &format!("malformed request: {e}")),
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return refuse(400, "malformed request");
    };
    match method {
        "GET" => {}
        "OPTIONS" => return Request::Preflight,
        _ => return refuse(405, &format!("{method} is not served; use GET")),
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let Some(stream) = path.strip_prefix('/').and_then(|p| p.strip_suffix(".flv")) else {
        return refuse(404, "not found: use /live/ROOM.flv or /live/ROOM/NAME.flv");
    };
    let (app, key) = stream.split_once('/').unwrap_or((stream, ""));
    if key.is_empty() {
        return refuse(404, "not found: use /live/ROOM.flv or /live/ROOM/NAME.flv");
    }
    Request::Play {
        app: app.to_string(),
        key: key.to_string(),
        query: query.to_string(),
    }
}

/// Headers every answer carries: flv.js fetches across origins.
const COMMON: &str = "Access-Control-Allow-Origin: *\r\n\
    Access-Control-Allow-Methods: GET, OPTIONS\r\n\
    Access-Control-Allow-Headers: *\r\n\
    Server: mediagw\r\n";

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

/// A refusal: the status, and the reason as a one-line text body.
pub fn error_response(status: u16, why: &str) -> Bytes {
    let body = format!("{why}\n");
    let allow = if status == 405 {
        "Allow: GET, OPTIONS\r\n"
    } else {
        ""
    };
    Bytes::from(format!(
        "HTTP/1.1 {status} {}\r\n{COMMON}{allow}Content-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason(status),
        body.len()
    ))
}

/// The answer to a CORS preflight.
pub fn preflight_response() -> Bytes {
    Bytes::from(format!(
        "HTTP/1.1 204 {}\r\n{COMMON}Access-Control-Max-Age: 600\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n",
        reason(204)
    ))
}

/// The answer that starts a stream: the head, then the first chunk with
/// the FLV file header (audio and video present) and PreviousTagSize0.
pub fn stream_head() -> Bytes {
    let mut out = format!(
        "HTTP/1.1 200 OK\r\n{COMMON}Content-Type: video/x-flv\r\n\
         Transfer-Encoding: chunked\r\nCache-Control: no-cache, no-store\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes();
    let header: [u8; 13] = [b'F', b'L', b'V', 1, 0x05, 0, 0, 0, 9, 0, 0, 0, 0];
    chunk(&mut out, &[&header]);
    Bytes::from(out)
}

/// One media message as an FLV tag in one HTTP chunk, the same bytes for
/// every HTTP-FLV player.
pub fn tag_chunk(m: &Media) -> Bytes {
    let len = m.payload.len() as u32;
    let ts = m.timestamp;
    let tag_type = match m.type_id {
        types::AUDIO => 8,
        types::VIDEO => 9,
        _ => 18, // script data (onMetaData)
    };
    let head = [
        tag_type,
        (len >> 16) as u8,
        (len >> 8) as u8,
        len as u8,
        (ts >> 16) as u8,
        (ts >> 8) as u8,
        ts as u8,
        (ts >> 24) as u8, // TimestampExtended: the high byte
        0,
        0,
        0,
    ];
    let size = (11 + len).to_be_bytes();
    let mut out = Vec::with_capacity(m.payload.len() + 32);
    chunk(&mut out, &[&head, &m.payload, &size]);
    Bytes::from(out)
}

/// Appends `parts` as one chunk of chunked transfer coding (RFC 9112 §7.1).
fn chunk(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let n: usize = parts.iter().map(|p| p.len()).sum();
    out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn play(app: &str, key: &str, query: &str) -> Request {
        Request::Play {
            app: app.into(),
            key: key.into(),
            query: query.into(),
        }
    }

    #[test]
    fn requests_map_to_play_addresses() {
        let get = |target: &str| {
            parse_request(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        };
        assert_eq!(get("/live/r.flv"), play("live", "r", ""));
        assert_eq!(
            get("/live/r/bob.flv?token=abc"),
            play("live", "r/bob", "token=abc")
        );
        assert_eq!(
            get("/live/r.flv?participant=me"),
            play("live", "r", "participant=me")
        );
        for bad in ["/live.flv", "/live/r", "/", "/live/r.mp4"] {
            assert!(
                matches!(get(bad), Request::Refuse { status: 404, .. }),
                "{bad}"
            );
        }
        let partial = b"GET /live/r.flv HTTP/1.1\r\nHost: x\r\n";
        assert_eq!(parse_request(partial), Request::Partial);
        let post = b"POST /live/r.flv HTTP/1.1\r\n\r\n";
        assert!(matches!(
            parse_request(post),
            Request::Refuse { status: 405, .. }
        ));
        let options = b"OPTIONS /live/r.flv HTTP/1.1\r\n\r\n";
        assert_eq!(parse_request(options), Request::Preflight);
    }

    /// Junk, an endless head and too many headers are refused, not waited on.
    #[test]
    fn bad_heads_are_refused() {
        assert!(matches!(
            parse_request(b"\x16\x03\x01junk\r\n\r\n"),
            Request::Refuse { status: 400, .. }
        ));
        let mut long = b"GET /live/r.flv HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_REQUEST, b'a');
        assert!(matches!(
            parse_request(&long),
            Request::Refuse { status: 431, .. }
        ));
        let mut many = b"GET /live/r.flv HTTP/1.1\r\n".to_vec();
        for i in 0..40 {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert!(matches!(
            parse_request(&many),
            Request::Refuse { status: 431, .. }
        ));
        let e = error_response(405, "POST is not served");
        let text = String::from_utf8_lossy(&e);
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("Allow: GET, OPTIONS\r\n"));
        assert!(text.ends_with("\r\n\r\nPOST is not served\n"));
    }

    /// The stream is chunked FLV: header, then tags with their sizes, each
    /// in its own chunk; timestamps past 24 bits use the extended byte.
    #[test]
    fn tags_are_flv_in_chunks() {
        let head = stream_head();
        let text = String::from_utf8_lossy(&head);
        assert!(text.contains("Transfer-Encoding: chunked\r\n"));
        assert!(text.ends_with("\r\n\r\nd\r\nFLV\x01\x05\0\0\0\x09\0\0\0\0\r\n"));
        let m = Media {
            type_id: types::VIDEO,
            timestamp: 0x0123_4567,
            payload: Bytes::from_static(&[0x17, 1, 0, 0, 0, 0xaa]),
        };
        let c = tag_chunk(&m);
        assert!(c.starts_with(b"15\r\n"), "11 + 6 + 4 = 0x15 bytes");
        let tag = &c[4..4 + 0x15];
        assert_eq!(&tag[..11], &[9, 0, 0, 6, 0x23, 0x45, 0x67, 0x01, 0, 0, 0]);
        assert_eq!(&tag[11..17], &m.payload[..]);
        assert_eq!(&tag[17..], &17u32.to_be_bytes());
        assert!(c.ends_with(b"\r\n"));
    }
}
