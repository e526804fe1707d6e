//! One RTMP connection, sans-IO: handshake, chunk stream, protocol control
//! messages and the NetConnection / NetStream commands a server answers.
//!
//! ```text
//! bytes in ─▶ on_bytes ─▶ handshake (rml_rtmp) ─▶ ChunkReader ─▶ messages
//!                          control (chunk size, ack window, ping) → handled here
//!                          connect / createStream / releaseStream ... → answered here
//!                          publish / play  → Event::Publish / Event::Play (the shard decides,
//!                                            then calls accept_* or reject)
//!                          audio / video / @setDataFrame → Event::Media
//! bytes out ◀─ take_output (responses); media is queued by the shard
//! ```

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use std::collections::HashMap;

use super::chunk::{write_message, ChunkError, ChunkReader, MediaLimits, Message, OUT_CHUNK_SIZE};

/// Message type ids (RTMP spec §5.4, §7.1).
pub mod types {
    pub const SET_CHUNK_SIZE: u8 = 1;
    pub const ABORT: u8 = 2;
    pub const ACK: u8 = 3;
    pub const USER_CONTROL: u8 = 4;
    pub const WINDOW_ACK_SIZE: u8 = 5;
    pub const SET_PEER_BANDWIDTH: u8 = 6;
    pub const AUDIO: u8 = 8;
    pub const VIDEO: u8 = 9;
    pub const DATA_AMF3: u8 = 15;
    pub const COMMAND_AMF3: u8 = 17;
    pub const DATA_AMF0: u8 = 18;
    pub const COMMAND_AMF0: u8 = 20;
}

/// Chunk stream ids we send on.
pub const CSID_CONTROL: u8 = 2;
pub const CSID_COMMAND: u8 = 3;
pub const CSID_AUDIO: u8 = 4;
pub const CSID_STREAM: u8 = 5;
pub const CSID_VIDEO: u8 = 6;
/// The one message stream a client gets from createStream.
pub const STREAM_ID: u32 = 1;
/// Longest AMF0 command or data message parsed. Real ones are well under
/// 2 KB; the bound also bounds the AMF0 parser's recursion depth.
pub const MAX_AMF: usize = 8 * 1024;
const WINDOW_ACK: u32 = 2_500_000;

#[derive(Debug, thiserror::Error)]
pub enum RtmpError {
    #[error("handshake: {0}")]
    Handshake(String),
    #[error("chunk stream: {0}")]
    Chunk(#[from] ChunkError),
    #[error("AMF0 message of {0} bytes is over the {MAX_AMF}-byte limit")]
    AmfTooLong(usize),
    #[error("malformed {0}")]
    Malformed(&'static str),
}

impl RtmpError {
    /// Whether the peer hit a memory bound (counted as `rtmp_memory`).
    pub fn is_memory_limit(&self) -> bool {
        match self {
            RtmpError::Chunk(e) => e.is_memory_limit(),
            RtmpError::AmfTooLong(_) => true,
            _ => false,
        }
    }
}

/// Audio, video or script data from a publisher: an FLV tag body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Media {
    pub type_id: u8,
    pub timestamp: u32,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `publish` on `rtmp://host/{app}/{key}[?{query}]`: accept or reject
    /// (the hub reads the address, see [`super::address`]).
    Publish {
        app: String,
        key: String,
        query: String,
    },
    /// `play`: accept or reject.
    Play {
        app: String,
        key: String,
        query: String,
    },
    Media(Media),
    /// The client stopped publishing or playing (deleteStream, FCUnpublish).
    Stopped,
    /// A command we do not implement (answered with `_error`).
    Unknown(String),
}

enum Phase {
    Handshake(Box<Handshake>),
    Chunks,
}

pub struct Conn {
    phase: Phase,
    reader: ChunkReader,
    out: Vec<u8>,
    app: String,
    received: u64,
    acked: u64,
    peer_window: Option<u32>,
}

impl Default for Conn {
    fn default() -> Self {
        Conn::new()
    }
}

fn cmd(name: &str, txn: f64, args: Vec<Amf0Value>) -> Vec<u8> {
    let mut v = vec![Amf0Value::Utf8String(name.into()), Amf0Value::Number(txn)];
    v.extend(args);
    rml_amf0::serialize(&v).unwrap_or_default()
}

fn obj(pairs: &[(&str, Amf0Value)]) -> Amf0Value {
    Amf0Value::Object(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<HashMap<_, _>>(),
    )
}

fn status(level: &str, code: &str, description: &str) -> Amf0Value {
    obj(&[
        ("level", Amf0Value::Utf8String(level.into())),
        ("code", Amf0Value::Utf8String(code.into())),
        ("description", Amf0Value::Utf8String(description.into())),
    ])
}

impl Conn {
    pub fn new() -> Conn {
        Conn {
            phase: Phase::Handshake(Box::new(Handshake::new(PeerType::Server))),
            reader: ChunkReader::default(),
            out: Vec::new(),
            app: String::new(),
            received: 0,
            acked: 0,
            peer_window: None,
        }
    }

    /// A connection whose handshake is done (tests and fuzzing start here).
    pub fn new_after_handshake() -> Conn {
        Conn {
            phase: Phase::Chunks,
            ..Conn::new()
        }
    }

    /// Bytes to send now (responses and control messages).
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    fn send(&mut self, csid: u8, type_id: u8, stream_id: u32, payload: &[u8]) {
        write_message(
            &mut self.out,
            csid,
            0,
            type_id,
            stream_id,
            payload,
            OUT_CHUNK_SIZE,
        );
    }

    fn send_command(&mut self, stream_id: u32, name: &str, txn: f64, args: Vec<Amf0Value>) {
        let body = cmd(name, txn, args);
        let csid = if stream_id == 0 {
            CSID_COMMAND
        } else {
            CSID_STREAM
        };
        self.send(csid, types::COMMAND_AMF0, stream_id, &body);
    }

    fn user_control(&mut self, event: u16, data: &[u8]) {
        let mut p = event.to_be_bytes().to_vec();
        p.extend_from_slice(data);
        self.send(CSID_CONTROL, types::USER_CONTROL, 0, &p);
    }

    /// Feeds received bytes; appends what happened to `events`.
    pub fn on_bytes(&mut self, data: &[u8], events: &mut Vec<Event>) -> Result<(), RtmpError> {
        let rest = match &mut self.phase {
            Phase::Handshake(h) => match h.process_bytes(data) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    self.out.extend_from_slice(&response_bytes);
                    return Ok(());
                }
                Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                }) => {
                    self.out.extend_from_slice(&response_bytes);
                    self.phase = Phase::Chunks;
                    remaining_bytes
                }
                Err(e) => return Err(RtmpError::Handshake(format!("{e:?}"))),
            },
            Phase::Chunks => {
                return self.on_chunk_bytes(data, events);
            }
        };
        self.on_chunk_bytes(&rest, events)
    }

    fn on_chunk_bytes(&mut self, data: &[u8], events: &mut Vec<Event>) -> Result<(), RtmpError> {
        self.received += data.len() as u64;
        let mut msgs = Vec::new();
        self.reader.push(data, |m| {
            msgs.push(m);
            Ok(())
        })?;
        for m in msgs {
            self.on_message(m, events)?;
        }
        if let Some(w) = self.peer_window {
            if self.received - self.acked >= w as u64 {
                self.acked = self.received;
                let seq = (self.received as u32).to_be_bytes();
                self.send(CSID_CONTROL, types::ACK, 0, &seq);
            }
        }
        Ok(())
    }

    fn on_message(&mut self, m: Message, events: &mut Vec<Event>) -> Result<(), RtmpError> {
        match m.type_id {
            // Applied by the chunk reader itself.
            types::SET_CHUNK_SIZE => {}
            types::WINDOW_ACK_SIZE => {
                let p = &m.payload;
                if p.len() >= 4 {
                    let w = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                    self.peer_window = (w > 0).then_some(w);
                }
            }
            types::USER_CONTROL => {
                // Ping request (6) → ping response (7) with the same time.
                let p = &m.payload;
                if p.len() >= 6 && u16::from_be_bytes([p[0], p[1]]) == 6 {
                    let t = [p[2], p[3], p[4], p[5]];
                    self.user_control(7, &t);
                }
            }
            types::ABORT | types::ACK | types::SET_PEER_BANDWIDTH => {}
            types::AUDIO | types::VIDEO => events.push(Event::Media(Media {
                type_id: m.type_id,
                timestamp: m.timestamp,
                payload: m.payload,
            })),
            types::DATA_AMF0 | types::DATA_AMF3 => {
                let body = if m.type_id == types::DATA_AMF3 {
                    m.payload.slice(m.payload.len().min(1)..)
                } else {
                    m.payload
                };
                if body.len() > MAX_AMF {
                    return Err(RtmpError::AmfTooLong(body.len()));
                }
                if let Some(meta) = metadata_for_players(&body) {
                    events.push(Event::Media(Media {
                        type_id: types::DATA_AMF0,
                        timestamp: m.timestamp,
                        payload: meta,
                    }));
                }
            }
            types::COMMAND_AMF0 | types::COMMAND_AMF3 => {
                let body = if m.type_id == types::COMMAND_AMF3 {
                    m.payload.slice(m.payload.len().min(1)..)
                } else {
                    m.payload
                };
                if body.len() > MAX_AMF {
                    return Err(RtmpError::AmfTooLong(body.len()));
                }
                let values = rml_amf0::deserialize(&mut &body[..])
                    .map_err(|_| RtmpError::Malformed("AMF0 command"))?;
                self.on_command(m.stream_id, values, events);
            }
            _ => {}
        }
        Ok(())
    }

    fn on_command(&mut self, stream_id: u32, values: Vec<Amf0Value>, events: &mut Vec<Event>) {
        let mut it = values.into_iter();
        let Some(Amf0Value::Utf8String(name)) = it.next() else {
            return;
        };
        let txn = match it.next() {
            Some(Amf0Value::Number(n)) => n,
            _ => 0.0,
        };
        let command_object = it.next();
        let args: Vec<Amf0Value> = it.collect();
        let first_string = || match args.first() {
            Some(Amf0Value::Utf8String(s)) => Some(s.clone()),
            _ => None,
        };
        match name.as_str() {
            "connect" => {
                if let Some(Amf0Value::Object(o)) = command_object {
                    if let Some(Amf0Value::Utf8String(app)) = o.get("app") {
                        self.app = app.trim_end_matches('/').to_string();
                    }
                }
                self.send(
                    CSID_CONTROL,
                    types::WINDOW_ACK_SIZE,
                    0,
                    &WINDOW_ACK.to_be_bytes(),
                );
                let mut bw = WINDOW_ACK.to_be_bytes().to_vec();
                bw.push(2); // dynamic
                self.send(CSID_CONTROL, types::SET_PEER_BANDWIDTH, 0, &bw);
                self.send(
                    CSID_CONTROL,
                    types::SET_CHUNK_SIZE,
                    0,
                    &(OUT_CHUNK_SIZE as u32).to_be_bytes(),
                );
                let props = obj(&[
                    ("fmsVer", Amf0Value::Utf8String("FMS/3,0,1,123".into())),
                    ("capabilities", Amf0Value::Number(31.0)),
                ]);
                let mut info = status(
                    "status",
                    "NetConnection.Connect.Success",
                    "Connection succeeded.",
                );
                if let Amf0Value::Object(o) = &mut info {
                    o.insert("objectEncoding".into(), Amf0Value::Number(0.0));
                }
                self.send_command(0, "_result", txn, vec![props, info]);
            }
            "createStream" => {
                self.send_command(
                    0,
                    "_result",
                    txn,
                    vec![Amf0Value::Null, Amf0Value::Number(STREAM_ID as f64)],
                );
            }
            // Live streams have no length; ffmpeg reads a number here.
            "getStreamLength" => {
                self.send_command(
                    0,
                    "_result",
                    txn,
                    vec![Amf0Value::Null, Amf0Value::Number(0.0)],
                );
            }
            "releaseStream" | "FCPublish" | "checkBandwidth" | "_checkbw" => {
                if txn > 0.0 {
                    self.send_command(
                        0,
                        "_result",
                        txn,
                        vec![Amf0Value::Null, Amf0Value::Undefined],
                    );
                }
            }
            "publish" => match first_string() {
                Some(key) => {
                    let (key, query) = split_key(&key);
                    events.push(Event::Publish {
                        app: self.app.clone(),
                        key,
                        query,
                    })
                }
                None => self.reject(
                    stream_id,
                    "NetStream.Publish.BadName",
                    "publish needs a stream name",
                ),
            },
            "play" => match first_string() {
                Some(key) => {
                    let (key, query) = split_key(&key);
                    events.push(Event::Play {
                        app: self.app.clone(),
                        key,
                        query,
                    })
                }
                None => self.reject(
                    stream_id,
                    "NetStream.Play.StreamNotFound",
                    "play needs a stream name",
                ),
            },
            "deleteStream" | "FCUnpublish" | "closeStream" => events.push(Event::Stopped),
            "pause" | "receiveAudio" | "receiveVideo" | "setBuffer" => {}
            other => {
                if txn > 0.0 {
                    let err = status("error", "NetConnection.Call.Failed", "unknown command");
                    self.send_command(0, "_error", txn, vec![Amf0Value::Null, err]);
                }
                events.push(Event::Unknown(other.to_string()));
            }
        }
    }

    /// Publishing may start: media-sized messages are accepted from now on.
    pub fn accept_publish(&mut self, key: &str, limits: MediaLimits) {
        self.reader.allow_media(limits);
        let s = status(
            "status",
            "NetStream.Publish.Start",
            &format!("{key} is now published."),
        );
        self.send_command(STREAM_ID, "onStatus", 0.0, vec![Amf0Value::Null, s]);
    }

    /// Playing starts: media follows (the shard queues it after this output).
    pub fn accept_play(&mut self, key: &str) {
        self.user_control(0, &STREAM_ID.to_be_bytes()); // StreamBegin
        let reset = status(
            "status",
            "NetStream.Play.Reset",
            &format!("Playing and resetting {key}."),
        );
        self.send_command(STREAM_ID, "onStatus", 0.0, vec![Amf0Value::Null, reset]);
        let start = status(
            "status",
            "NetStream.Play.Start",
            &format!("Started playing {key}."),
        );
        self.send_command(STREAM_ID, "onStatus", 0.0, vec![Amf0Value::Null, start]);
        let access = rml_amf0::serialize(&vec![
            Amf0Value::Utf8String("|RtmpSampleAccess".into()),
            Amf0Value::Boolean(true),
            Amf0Value::Boolean(true),
        ])
        .unwrap_or_default();
        self.send(CSID_STREAM, types::DATA_AMF0, STREAM_ID, &access);
    }

    /// Refuses a publish or play with an `onStatus` error (the shard then closes).
    pub fn reject(&mut self, stream_id: u32, code: &str, description: &str) {
        let s = status("error", code, description);
        let sid = if stream_id == 0 { STREAM_ID } else { stream_id };
        self.send_command(sid, "onStatus", 0.0, vec![Amf0Value::Null, s]);
    }
}

/// `room?token=T&x=y` → (`room`, `token=T&x=y`): the name, and the query
/// (a token, a participant name) apart from it.
fn split_key(key: &str) -> (String, String) {
    let (name, query) = key.split_once('?').unwrap_or((key, ""));
    (name.to_string(), query.to_string())
}

/// A publisher's `@setDataFrame("onMetaData", {...})` as players expect it:
/// `onMetaData({...})`. Other data messages are not forwarded.
fn metadata_for_players(body: &Bytes) -> Option<Bytes> {
    // AMF0 string "@setDataFrame": 0x02, length 13, the bytes.
    const SET_DATA_FRAME: &[u8] = b"\x02\x00\x0d@setDataFrame";
    const ON_METADATA: &[u8] = b"\x02\x00\x0aonMetaData";
    if body.starts_with(SET_DATA_FRAME) {
        let rest = body.slice(SET_DATA_FRAME.len()..);
        return rest.starts_with(ON_METADATA).then_some(rest);
    }
    body.starts_with(ON_METADATA).then(|| body.clone())
}

/// The body of the `rtmp_conn` fuzz target: bytes after a valid handshake
/// go through chunks, control and AMF0 without panicking.
pub fn fuzz_conn(data: &[u8]) {
    let mut c = Conn::new();
    c.phase = Phase::Chunks;
    let mut events = Vec::new();
    for part in data.chunks(113) {
        if c.on_bytes(part, &mut events).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amf_command(name: &str, txn: f64, args: Vec<Amf0Value>) -> Vec<u8> {
        let mut wire = Vec::new();
        write_message(
            &mut wire,
            3,
            0,
            types::COMMAND_AMF0,
            0,
            &cmd(name, txn, args),
            128,
        );
        wire
    }

    fn connected() -> Conn {
        let mut c = Conn::new();
        c.phase = Phase::Chunks;
        c
    }

    #[test]
    fn connect_create_publish_flow() {
        let mut c = connected();
        let mut ev = Vec::new();
        let app = obj(&[("app", Amf0Value::Utf8String("live".into()))]);
        let mut wire = amf_command("connect", 1.0, vec![app]);
        wire.extend(amf_command("createStream", 2.0, vec![Amf0Value::Null]));
        wire.extend(amf_command(
            "publish",
            0.0,
            vec![
                Amf0Value::Null,
                Amf0Value::Utf8String("room1?token=x".into()),
                Amf0Value::Utf8String("live".into()),
            ],
        ));
        c.on_bytes(&wire, &mut ev).unwrap();
        assert_eq!(
            ev,
            vec![Event::Publish {
                app: "live".into(),
                key: "room1".into(),
                query: "token=x".into(),
            }]
        );
        // The answers parse back: control messages then two _result.
        let out = c.take_output();
        let mut r = ChunkReader::default();
        let mut names = Vec::new();
        r.push(&out, |m| {
            if m.type_id == types::SET_CHUNK_SIZE {
                names.push("chunk".to_string());
            }
            if m.type_id == types::COMMAND_AMF0 {
                let v = rml_amf0::deserialize(&mut &m.payload[..]).unwrap();
                if let Amf0Value::Utf8String(s) = &v[0] {
                    names.push(s.clone());
                }
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(names, vec!["chunk", "_result", "_result"]);
    }

    #[test]
    fn media_and_metadata_become_events() {
        let mut c = connected();
        let mut ev = Vec::new();
        let mut wire = Vec::new();
        write_message(
            &mut wire,
            6,
            33,
            types::VIDEO,
            1,
            &[0x17, 0, 0, 0, 0, 1],
            128,
        );
        let meta = rml_amf0::serialize(&vec![
            Amf0Value::Utf8String("@setDataFrame".into()),
            Amf0Value::Utf8String("onMetaData".into()),
            obj(&[("width", Amf0Value::Number(640.0))]),
        ])
        .unwrap();
        write_message(&mut wire, 5, 0, types::DATA_AMF0, 1, &meta, 128);
        c.on_bytes(&wire, &mut ev).unwrap();
        assert!(
            matches!(&ev[0], Event::Media(m) if m.type_id == types::VIDEO && m.timestamp == 33)
        );
        let Event::Media(m) = &ev[1] else {
            panic!("{ev:?}")
        };
        let v = rml_amf0::deserialize(&mut &m.payload[..]).unwrap();
        assert_eq!(v[0], Amf0Value::Utf8String("onMetaData".into()));
    }

    #[test]
    fn unknown_commands_get_an_error_and_oversized_amf_closes() {
        let mut c = connected();
        let mut ev = Vec::new();
        c.on_bytes(&amf_command("frobnicate", 3.0, vec![]), &mut ev)
            .unwrap();
        assert_eq!(ev, vec![Event::Unknown("frobnicate".into())]);
        assert!(c.has_output(), "_error sent");
        let mut wire = Vec::new();
        write_message(
            &mut wire,
            3,
            0,
            types::COMMAND_AMF0,
            0,
            &vec![5u8; MAX_AMF + 1],
            128,
        );
        assert!(matches!(
            c.on_bytes(&wire, &mut ev),
            Err(RtmpError::AmfTooLong(_))
        ));
    }

    #[test]
    fn junk_never_panics() {
        for seed in 0..300u32 {
            let data: Vec<u8> = (0..400u32)
                .map(|i| {
                    (i.wrapping_mul(2_654_435_761)
                        .wrapping_add(seed.wrapping_mul(40503))
                        >> 11) as u8
                })
                .collect();
            fuzz_conn(&data);
            let mut c = Conn::new();
            let _ = c.on_bytes(&data, &mut Vec::new());
        }
    }
}
