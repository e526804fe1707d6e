//! The ids that cross the ring, as `Copy` newtypes: a room ([`RoomId`]) and
//! a session ([`SessionId`]), and the controlplane's numbering of both
//! ([`ControlIds`]).
//!
//! Both processes give ids, each from its own range; which range an id is
//! in is a method of its type, here and nowhere else:
//!
//! | id | given by | range |
//! |---|---|---|
//! | [`RoomId`] | the controlplane (API, WHIP) | `1 ..= 0x7fff_ffff`, from [`ControlIds`] |
//! | [`RoomId`] | a shard, for an RTMP publish into a room nobody created | bit 31 set; the shard in bits 24-30, the shard's count in bits 0-23 ([`RoomId::dataplane`]) |
//! | [`SessionId`] | the controlplane (RTP ingest and egress, WHIP, WHEP) | `1 .. 2^61`, from [`ControlIds`] |
//! | [`SessionId`] | a shard, for an RTMP or HTTP-FLV client | bit 61 set; the shard in bits 40-60, the shard's count in bits 0-39 ([`SessionId::rtmp`]) |
//!
//! On the wire a room id is its `u32`, a session id its `u64`
//! (little-endian, as every field); operators see both as decimal numbers
//! ([`Display`](std::fmt::Display), [`FromStr`]).

use std::fmt;
use std::str::FromStr;

/// A room, on both sides of the ring (the room's name is the operators'
/// handle; this is the processes').
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(u32);

impl RoomId {
    /// Set in the ids the dataplane gives.
    const DATAPLANE: u32 = 0x8000_0000;
    /// Bits of a dataplane room id that count a shard's rooms.
    const DATAPLANE_COUNT_BITS: u32 = 24;

    /// The id whose wire value is `raw` (decoding, tests).
    pub const fn new(raw: u32) -> RoomId {
        RoomId(raw)
    }

    /// Its wire value.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The id shard `shard` gives the `n`-th room it creates for an RTMP
    /// publisher (kept below 128 shards and 2^24 rooms per shard: the
    /// bits above wrap, as they always did).
    pub const fn dataplane(shard: u32, n: u32) -> RoomId {
        let count = n & ((1 << Self::DATAPLANE_COUNT_BITS) - 1);
        RoomId(Self::DATAPLANE | ((shard << Self::DATAPLANE_COUNT_BITS) & !Self::DATAPLANE) | count)
    }

    /// Whether a shard gave it ([`Self::dataplane`]), not the controlplane.
    pub const fn is_dataplane(self) -> bool {
        self.0 & Self::DATAPLANE != 0
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A session: an RTP ingest or egress, a WHIP or WHEP peer, an RTMP or
/// HTTP-FLV client. Operators see it as the `id` of a session in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

impl SessionId {
    /// Set in the ids of RTMP clients, which the dataplane numbers.
    const RTMP: u64 = 1 << 61;
    /// Bits of an RTMP session id that count a shard's sessions.
    const RTMP_COUNT_BITS: u32 = 40;

    /// The id whose wire value is `raw` (decoding, tests).
    pub const fn new(raw: u64) -> SessionId {
        SessionId(raw)
    }

    /// Its wire value.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The id shard `shard` gives its `n`-th RTMP or HTTP-FLV session
    /// (up to 2^40 per shard).
    pub const fn rtmp(shard: u32, n: u64) -> SessionId {
        let count = n & ((1 << Self::RTMP_COUNT_BITS) - 1);
        let shard = ((shard as u64) << Self::RTMP_COUNT_BITS) & (Self::RTMP - 1);
        SessionId(Self::RTMP | shard | count)
    }

    /// Whether a shard gave it to an RTMP client ([`Self::rtmp`]), not the
    /// controlplane.
    pub const fn is_rtmp(self) -> bool {
        self.0 & Self::RTMP != 0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Parses what [`Display`](fmt::Display) wrote: the API's session ids in
/// URLs (any `u64` parses; whether such a session exists is the caller's
/// question).
impl FromStr for SessionId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<SessionId, Self::Err> {
        s.parse().map(SessionId)
    }
}

/// The controlplane's numbering: rooms and sessions from one sequence
/// (1, 2, 3, ...), below the ranges the dataplane gives ids from. After a
/// resync it goes on above the highest id of its own it was told of
/// ([`Self::saw_room`], [`Self::saw_session`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlIds {
    next: u64,
}

impl Default for ControlIds {
    fn default() -> Self {
        ControlIds { next: 1 }
    }
}

impl ControlIds {
    /// The next room id; `None` once the sequence has left the room range
    /// (2^31 ids).
    pub fn room(&mut self) -> Option<RoomId> {
        let id = u32::try_from(self.next)
            .ok()
            .map(RoomId)
            .filter(|r| !r.is_dataplane())?;
        self.next += 1;
        Some(id)
    }

    /// The next session id; `None` once the sequence has reached the RTMP
    /// range (2^61 ids).
    pub fn session(&mut self) -> Option<SessionId> {
        let id = Some(SessionId(self.next)).filter(|s| !s.is_rtmp())?;
        self.next += 1;
        Some(id)
    }

    /// A room the dataplane reported: one of ours is not given again.
    pub fn saw_room(&mut self, room: RoomId) {
        if !room.is_dataplane() {
            self.next = self.next.max(room.0 as u64 + 1);
        }
    }

    /// A session the dataplane reported: one of ours is not given again.
    pub fn saw_session(&mut self, session: SessionId) {
        if !session.is_rtmp() {
            self.next = self.next.max(session.0 + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The dataplane's ids are the bit patterns they always were, and tell
    /// themselves apart from the controlplane's.
    #[test]
    fn dataplane_ids_keep_their_bits_and_are_told_apart() {
        let room = RoomId::dataplane(3, 7);
        assert_eq!(room.get(), 0x8000_0000 | (3 << 24) | 7);
        assert!(room.is_dataplane());
        assert_eq!(
            RoomId::dataplane(1, 0x0100_0005).get(),
            0x8100_0005,
            "the count wraps within its bits"
        );
        assert!(!RoomId::new(1).is_dataplane());
        assert!(!RoomId::new(0x7fff_ffff).is_dataplane());

        let rtmp = SessionId::rtmp(2, 9);
        assert_eq!(rtmp.get(), (1 << 61) | (2 << 40) | 9);
        assert!(rtmp.is_rtmp());
        assert!(!SessionId::new(9).is_rtmp());
        assert!(!SessionId::new((1 << 61) - 1).is_rtmp());
        assert_ne!(SessionId::rtmp(0, 1), SessionId::rtmp(1, 1));
    }

    #[test]
    fn ids_print_and_parse_as_decimal_numbers() {
        assert_eq!(RoomId::new(42).to_string(), "42");
        let s = SessionId::rtmp(1, 5);
        assert_eq!(s.to_string(), s.get().to_string());
        assert_eq!(s.to_string().parse::<SessionId>(), Ok(s));
        assert!("x1".parse::<SessionId>().is_err());
    }

    /// One sequence for rooms and sessions, as before the types; after a
    /// resync it goes on above the highest own id, whatever the dataplane's.
    #[test]
    fn the_controlplane_numbers_rooms_and_sessions_from_one_sequence() {
        let mut ids = ControlIds::default();
        assert_eq!(ids.room(), Some(RoomId::new(1)));
        assert_eq!(ids.session(), Some(SessionId::new(2)));
        ids.saw_session(SessionId::new(10));
        ids.saw_session(SessionId::rtmp(0, 99));
        ids.saw_room(RoomId::dataplane(0, 99));
        assert_eq!(ids.room(), Some(RoomId::new(11)));
        ids.saw_room(RoomId::new(20));
        assert_eq!(ids.session(), Some(SessionId::new(21)));

        ids.saw_session(SessionId::new(0x7fff_fffe));
        assert_eq!(ids.room(), Some(RoomId::new(0x7fff_ffff)));
        assert_eq!(ids.room(), None, "past the room range");
        assert_eq!(ids.session(), Some(SessionId::new(0x8000_0000)));
        ids.saw_session(SessionId::new((1 << 61) - 2));
        assert!(ids.session().is_some());
        assert_eq!(ids.session(), None, "at the RTMP range");
    }
}
