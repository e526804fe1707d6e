//! An HTTP-FLV player's side of the wire, sans-IO: the request, then a
//! streaming reader of the answer that hands out FLV tags as they complete.
//!
//! ```text
//! GET /live/KEY.flv HTTP/1.1 ─▶ server
//!   ◀─ head (≤ 8 KiB): status line, headers, blank line
//!        200: the body, de-chunked if `Transfer-Encoding: chunked`
//!             ─▶ FLV header (9 bytes) + PreviousTagSize0
//!             ─▶ tags: [header 11: type, size 24, time 24+8, stream 24][body][PreviousTagSize 4]
//!        else: the status and the body's text are the reason, kept until the server closes
//! ```
//!
//! Bytes arrive as the socket gives them: a tag may span reads and HTTP
//! chunks, a read may hold many tags. Whole tags in a read are handed out in
//! place; only a tag cut by the end of a read is gathered, and that buffer
//! holds one tag at most ([`crate::flv::MAX_TAG`]) and is let go when it grew large, so
//! thousands of players do not each keep their largest keyframe.

/// Most bytes of an answer's head.
const MAX_HEAD: usize = 8 * 1024;
/// Most bytes of a refusal's body kept as its reason.
const MAX_REASON: usize = 512;
/// A chunk-size line longer than this (hex size and extensions) is junk.
const MAX_SIZE_LINE: usize = 64;

use crate::flv::TagReader;

/// The request for `path` (e.g. `/live/KEY.flv`) on `host`.
pub fn request(path: &str, host: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

/// The reader of one answer.
pub struct HttpFlv {
    state: State,
}

enum State {
    /// The head so far, until its blank line.
    Head(Vec<u8>),
    /// A 200: the body, de-chunked when `chunks` is set, then FLV.
    Stream {
        chunks: Option<Chunks>,
        flv: TagReader,
    },
    /// Not a 200: the status (without the version) and the start of the
    /// body, the reason; `length` from `Content-Length`.
    Refused {
        status: String,
        body: Vec<u8>,
        length: Option<usize>,
    },
}

/// Chunked transfer coding (RFC 9112 §7.1), where the body is now.
enum Chunks {
    /// In a chunk-size line (hex size, maybe `;extensions`), up to its LF.
    Size(Vec<u8>),
    /// In a chunk's data: this many bytes to go.
    Data(usize),
    /// After a chunk's data: this many bytes of its CRLF seen.
    Crlf(usize),
    /// The last chunk (size 0) came: the body ended.
    Done,
}

impl Default for HttpFlv {
    fn default() -> Self {
        HttpFlv {
            state: State::Head(Vec::new()),
        }
    }
}

impl HttpFlv {
    /// Reads bytes of the answer; `tag(type, body)` is called for each tag
    /// (audio 8, video 9, script data 18) as it completes. An error is the
    /// reason the player failed: a refusal the server finished saying, an
    /// answer that is not HTTP, or a body that is not chunked FLV.
    pub fn input(&mut self, data: &[u8], tag: &mut dyn FnMut(u8, &[u8])) -> Result<(), String> {
        match &mut self.state {
            State::Head(head) => {
                let from = head.len().saturating_sub(3);
                let took = data.len().min(MAX_HEAD - head.len());
                head.extend_from_slice(&data[..took]);
                let Some(at) = head[from..].windows(4).position(|w| w == b"\r\n\r\n") else {
                    if head.len() >= MAX_HEAD {
                        return Err("the answer's head is over 8 KiB".into());
                    }
                    return Ok(());
                };
                let end = from + at + 4;
                let head = std::mem::take(head);
                self.state = answer(&head[..end])?;
                self.input(&head[end..], tag)?;
                self.input(&data[took..], tag)
            }
            State::Stream { chunks, flv } => {
                let tag = &mut |kind, _ms, body: &[u8]| tag(kind, body);
                match chunks {
                    Some(chunks) => chunks.input(data, flv, tag),
                    None => flv.input(data, tag),
                }
            }
            State::Refused { body, length, .. } => {
                let room = MAX_REASON.saturating_sub(body.len());
                body.extend_from_slice(&data[..data.len().min(room)]);
                let whole = length.map_or(body.len() >= MAX_REASON, |n| {
                    body.len() >= n.min(MAX_REASON)
                });
                match whole {
                    true => Err(self.closed()),
                    false => Ok(()),
                }
            }
        }
    }

    /// Why the player failed when the server closed the connection now.
    pub fn closed(&self) -> String {
        match &self.state {
            State::Head(h) if h.is_empty() => {
                "server closed the connection without answering".into()
            }
            State::Head(_) => {
                "server closed the connection in the middle of the answer's head".into()
            }
            State::Refused { status, body, .. } => {
                let why = String::from_utf8_lossy(body);
                format!("HTTP {status}: {}", why.trim())
            }
            State::Stream {
                chunks: Some(Chunks::Done),
                ..
            } => "server ended the stream (last chunk) and closed the connection".into(),
            State::Stream { .. } => "server closed the connection".into(),
        }
    }
}

/// What the head says comes next.
fn answer(head: &[u8]) -> Result<State, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let (version, status) = line.split_once(' ').unwrap_or((line, ""));
    let code = status.split(' ').next().and_then(|c| c.parse::<u16>().ok());
    let (true, Some(code)) = (version.starts_with("HTTP/1."), code) else {
        return Err(format!("not an HTTP/1.x answer: {line:?}"));
    };
    let (mut chunked, mut length) = (false, None);
    for (name, value) in lines.filter_map(|l| l.split_once(':')) {
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        }
    }
    Ok(match code {
        200 => State::Stream {
            chunks: chunked.then(|| Chunks::Size(Vec::new())),
            flv: TagReader::default(),
        },
        _ => State::Refused {
            status: status.to_string(),
            body: Vec::new(),
            length,
        },
    })
}

impl Chunks {
    /// De-chunks `data` into `flv`.
    fn input(
        &mut self,
        mut data: &[u8],
        flv: &mut TagReader,
        tag: &mut dyn FnMut(u8, u32, &[u8]),
    ) -> Result<(), String> {
        while let Some(&first) = data.first() {
            match self {
                Chunks::Size(line) => {
                    let lf = data.iter().position(|&b| b == b'\n');
                    let part = &data[..lf.unwrap_or(data.len())];
                    if line.len() + part.len() > MAX_SIZE_LINE {
                        return Err("a chunk-size line over 64 bytes".into());
                    }
                    line.extend_from_slice(part);
                    let Some(lf) = lf else {
                        return Ok(());
                    };
                    data = &data[lf + 1..];
                    *self = match chunk_size(line)? {
                        0 => Chunks::Done,
                        n => Chunks::Data(n),
                    };
                }
                Chunks::Data(left) => {
                    let n = (*left).min(data.len());
                    flv.input(&data[..n], tag)?;
                    data = &data[n..];
                    *left -= n;
                    if *left == 0 {
                        *self = Chunks::Crlf(0);
                    }
                }
                Chunks::Crlf(seen) => {
                    if first != b"\r\n"[*seen] {
                        return Err("a chunk's data not followed by CRLF".into());
                    }
                    data = &data[1..];
                    *seen += 1;
                    if *seen == 2 {
                        *self = Chunks::Size(Vec::new());
                    }
                }
                // Trailers, and anything after them, are not read.
                Chunks::Done => return Ok(()),
            }
        }
        Ok(())
    }
}

/// The size a chunk-size line (without its LF) gives.
fn chunk_size(line: &[u8]) -> Result<usize, String> {
    let text = String::from_utf8_lossy(line);
    let hex = text.trim_end_matches('\r').split(';').next().unwrap_or("");
    usize::from_str_radix(hex.trim(), 16).map_err(|_| format!("a bad chunk-size line {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: video/x-flv\r\n\
        Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";

    fn flv_tag(kind: u8, body: &[u8]) -> Vec<u8> {
        let n = body.len() as u32;
        let mut t = vec![
            kind,
            (n >> 16) as u8,
            (n >> 8) as u8,
            n as u8,
            0,
            0,
            1,
            0,
            0,
            0,
            0,
        ];
        t.extend_from_slice(body);
        t.extend_from_slice(&(11 + n).to_be_bytes());
        t
    }

    fn chunk(parts: &[u8]) -> Vec<u8> {
        let mut c = format!("{:x}\r\n", parts.len()).into_bytes();
        c.extend_from_slice(parts);
        c.extend_from_slice(b"\r\n");
        c
    }

    /// The server's answer: a head, the FLV header in a chunk, then one
    /// chunk per tag.
    fn answer_bytes(tags: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = HEAD.to_vec();
        out.extend(chunk(&[b'F', b'L', b'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0]));
        for (kind, body) in tags {
            out.extend(chunk(&flv_tag(*kind, body)));
        }
        out
    }

    /// The tags read, then how the reading ended.
    type Read = (Vec<(u8, Vec<u8>)>, Result<(), String>);

    fn read_in_pieces(bytes: &[u8], piece: usize) -> Read {
        let mut r = HttpFlv::default();
        let mut got = Vec::new();
        for p in bytes.chunks(piece) {
            if let Err(e) = r.input(p, &mut |k, b| got.push((k, b.to_vec()))) {
                return (got, Err(e));
            }
        }
        (got, Ok(()))
    }

    /// Tags come out whole and in order however the bytes are cut: in the
    /// head, in chunk-size lines, in CRLFs, in tag headers and bodies.
    #[test]
    fn tags_come_out_whatever_the_reads() {
        let tags = vec![
            (18, b"onMetaData".to_vec()),
            (9, vec![0x17, 0, 0, 0, 0]),
            (8, vec![0xaf, 1, 2, 3]),
            (9, vec![0x27; 70_000]),
            (9, vec![0x27, 1, 0, 0, 0, 9]),
        ];
        let bytes = answer_bytes(&tags);
        for piece in [1, 2, 3, 7, 11, 13, 100, 4096, bytes.len()] {
            let (got, r) = read_in_pieces(&bytes, piece);
            assert_eq!(r, Ok(()), "piece {piece}");
            assert_eq!(got, tags, "piece {piece}");
        }
    }

    /// Without chunked coding the body is FLV as it is.
    #[test]
    fn an_identity_body_is_read_as_flv() {
        let mut bytes = b"HTTP/1.0 200 OK\r\nContent-Type: video/x-flv\r\n\r\n".to_vec();
        bytes.extend_from_slice(&[b'F', b'L', b'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0]);
        bytes.extend(flv_tag(9, &[0x17, 1, 0, 0, 0, 1]));
        let (got, r) = read_in_pieces(&bytes, 5);
        assert_eq!(r, Ok(()));
        assert_eq!(got, vec![(9, vec![0x17, 1, 0, 0, 0, 1])]);
    }

    /// A refusal is the status and the server's one-line reason, as soon as
    /// the body is all there, or when the server closes.
    #[test]
    fn a_refusal_is_a_reason() {
        let body = "no participant \"x\" in room \"r\"\n";
        let answer = format!(
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let (got, r) = read_in_pieces(answer.as_bytes(), 9);
        assert!(got.is_empty());
        assert_eq!(
            r,
            Err("HTTP 404 Not Found: no participant \"x\" in room \"r\"".into())
        );
        let mut r = HttpFlv::default();
        let head = b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\nbad tok";
        assert_eq!(r.input(head, &mut |_, _| {}), Ok(()));
        assert_eq!(r.closed(), "HTTP 403 Forbidden: bad tok");
    }

    /// Junk is a failure with a reason, never a wait or a panic.
    #[test]
    fn junk_fails() {
        let mut r = HttpFlv::default();
        assert!(r.input(b"RTMP?\r\n\r\n", &mut |_, _| {}).is_err());
        let mut r = HttpFlv::default();
        let endless = vec![b'a'; MAX_HEAD + 10];
        assert!(r.input(&endless, &mut |_, _| {}).is_err());
        let mut not_flv = HEAD.to_vec();
        not_flv.extend(chunk(b"<html>hello</html>"));
        assert!(read_in_pieces(&not_flv, 3).1.is_err());
        let mut bad_size = HEAD.to_vec();
        bad_size.extend_from_slice(b"zz\r\n");
        assert!(read_in_pieces(&bad_size, 1).1.is_err());
        let mut bad_prev = answer_bytes(&[]);
        let mut t = flv_tag(9, &[1, 2, 3]);
        let last = t.len() - 1;
        t[last] ^= 1;
        bad_prev.extend(chunk(&t));
        assert!(read_in_pieces(&bad_prev, 4).1.is_err());
        let mut huge = answer_bytes(&[]);
        huge.extend(chunk(&[9, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0]));
        assert!(read_in_pieces(&huge, 64).1.is_err());
    }

    /// The last chunk ends the body; the close then says so.
    #[test]
    fn the_last_chunk_ends_the_stream() {
        let mut bytes = answer_bytes(&[(8, vec![0xaf, 1])]);
        bytes.extend_from_slice(b"0\r\n\r\n");
        let mut r = HttpFlv::default();
        let mut n = 0;
        assert_eq!(r.input(&bytes, &mut |_, _| n += 1), Ok(()));
        assert_eq!(n, 1);
        assert!(r.closed().contains("last chunk"), "{}", r.closed());
    }
}
