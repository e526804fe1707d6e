//! Fixtures of the hub's tests: a room lookup ([`OneRoom`]), a hub with
//! connections past the handshake, RTMP commands and media as clients send
//! them, and what players were sent.

use std::collections::HashMap;
use std::time::Instant;

use bytes::Bytes;
use gateway_ring::RoomId;
use rml_amf0::Amf0Value;

use super::{ConnState, Hub, Place, Rooms};
use crate::output::{Action, Outputs};
use crate::participants::Participants;
use crate::rtmp::chunk::write_message;
use crate::rtmp::conn::{types, Conn};

/// The room a publish creates (room "r" of most tests).
pub(super) const R77: RoomId = RoomId::new(77);

#[derive(Default)]
pub(super) struct OneRoom {
    pub(super) rooms: HashMap<String, Place>,
    pub(super) allow_create: bool,
    pub(super) parts: Participants,
    pub(super) names: u8,
}

impl OneRoom {
    /// No room yet; a publish creates it.
    pub(super) fn creating() -> OneRoom {
        OneRoom {
            allow_create: true,
            ..Default::default()
        }
    }
}

impl Rooms for OneRoom {
    fn place(&self, name: &str) -> Place {
        self.rooms.get(name).copied().unwrap_or(Place::Missing)
    }
    fn authorize(&self, _: &str, _: bool, token: Option<&str>) -> Result<Option<String>, String> {
        match token {
            Some("bad") => Err("token rejected".into()),
            Some(t) => Ok(t.strip_prefix("as-").map(str::to_string)),
            None => Ok(None),
        }
    }
    fn participants(&mut self) -> &mut Participants {
        &mut self.parts
    }
    fn random(&mut self) -> [u8; 4] {
        self.names += 1;
        [0, 0, 0, self.names]
    }
    fn create(&mut self, name: &str) -> Option<RoomId> {
        if !self.allow_create {
            return None;
        }
        self.rooms.insert(name.into(), Place::Local(R77));
        Some(R77)
    }
}

pub(super) fn command(name: &str, args: Vec<Amf0Value>) -> Vec<u8> {
    let mut v = vec![
        Amf0Value::Utf8String(name.into()),
        Amf0Value::Number(0.0),
        Amf0Value::Null,
    ];
    v.extend(args);
    let mut w = Vec::new();
    write_message(
        &mut w,
        3,
        0,
        types::COMMAND_AMF0,
        1,
        &rml_amf0::serialize(&v).unwrap(),
        128,
    );
    w
}

pub(super) fn connect() -> Vec<u8> {
    let mut props = HashMap::new();
    props.insert("app".to_string(), Amf0Value::Utf8String("live".into()));
    let v = vec![
        Amf0Value::Utf8String("connect".into()),
        Amf0Value::Number(1.0),
        Amf0Value::Object(props),
    ];
    let mut w = Vec::new();
    write_message(
        &mut w,
        3,
        0,
        types::COMMAND_AMF0,
        0,
        &rml_amf0::serialize(&v).unwrap(),
        128,
    );
    w
}

/// A hub with connections past the handshake.
pub(super) fn hub_with(n: u32) -> Hub {
    let mut h = Hub::new(true, 0);
    for i in 0..n {
        let st = ConnState {
            conn: Conn::new_after_handshake(),
            ..Default::default()
        };
        h.insert(i, st);
    }
    h
}

pub(super) fn drain(h: &mut Hub, idx: u32) -> Vec<(u8, Bytes)> {
    let q = h.queue(idx).unwrap();
    q.take_messages()
        .into_iter()
        .map(|m| (m.type_id, m.payload))
        .collect()
}

pub(super) fn send(h: &mut Hub, rooms: &mut OneRoom, idx: u32, cmd: &str, key: &str) -> Outputs {
    send_at(h, rooms, idx, cmd, key, Instant::now())
}

/// A keyframe of publisher `idx` whose payload ends in `mark`.
pub(super) fn keyframe(h: &mut Hub, rooms: &mut OneRoom, idx: u32, mark: u8) -> Outputs {
    frame_at(h, rooms, idx, mark, 0, true, Instant::now())
}

/// The marks of the keyframes player `idx` was sent.
pub(super) fn marks(h: &mut Hub, idx: u32) -> Vec<u8> {
    drain(h, idx)
        .iter()
        .filter(|(t, p)| *t == types::VIDEO && p.len() == 6 && p[1] == 1)
        .map(|(_, p)| p[5])
        .collect()
}

pub(super) fn closed(a: &Outputs, idx: u32) -> Option<&str> {
    a.actions().find_map(|x| match x {
        Action::Close { idx: i, why, .. } if *i == idx => Some(why.as_str()),
        _ => None,
    })
}

/// A video frame (a keyframe with its sequence header, or a delta)
/// marked `mark` at FLV time `ts` from publisher `idx`, arriving at `now`.
#[allow(clippy::too_many_arguments)]
pub(super) fn frame_at(
    h: &mut Hub,
    rooms: &mut OneRoom,
    idx: u32,
    mark: u8,
    ts: u32,
    key: bool,
    now: Instant,
) -> Outputs {
    let mut m = Vec::new();
    if key {
        write_message(&mut m, 6, ts, types::VIDEO, 1, &[0x17, 0, 1, 2, 3], 128);
    }
    let kind = if key { 0x17 } else { 0x27 };
    write_message(
        &mut m,
        6,
        ts,
        types::VIDEO,
        1,
        &[kind, 1, 0, 0, 0, mark],
        128,
    );
    let mut a = Outputs::default();
    h.on_bytes(now, idx, &m, rooms, &mut a);
    a
}

/// `connect` and then `cmd key` on connection `idx`, arriving at `now`.
pub(super) fn send_at(
    h: &mut Hub,
    rooms: &mut OneRoom,
    idx: u32,
    cmd: &str,
    key: &str,
    now: Instant,
) -> Outputs {
    let bytes = [
        connect(),
        command(cmd, vec![Amf0Value::Utf8String(key.into())]),
    ]
    .concat();
    let mut a = Outputs::default();
    h.on_bytes(now, idx, &bytes, rooms, &mut a);
    a
}
