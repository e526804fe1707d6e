//! Who is in each room of a shard, whatever protocol they came by.
//!
//! A participant is a name in a room; it holds sessions (a WHIP publisher
//! and a WHEP player, an RTMP push and RTMP plays, two RTP ingests) and is
//! known here by a [`ParticipantId`] while any of them lives. Media carries
//! the id of the participant it comes from, so a player is never sent its
//! own tracks and an RTMP player can ask for one participant's stream.
//!
//! ```text
//! session created ─▶ join(room, name) ─▶ ParticipantId (same name, same id)
//!                    publish(pid, kinds) ─▶ refused if a kind is taken
//! session ends    ─▶ unpublish(pid, kinds), leave(pid) ─▶ forgotten at 0 sessions
//! ```
//!
//! Sans-IO and allocation-free on the media path: packets carry ids, names
//! are looked up only when sessions start and end.

use std::collections::HashMap;

use gateway_ring::msg::{participant_key, MediaKind};
use gateway_ring::RoomId;

/// A participant's id, given by [`Participants::join`]: unique in the
/// process (the shard's index in its top 8 bits), so media relayed from
/// another shard never carries an id that means someone else here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(u32);

impl ParticipantId {
    /// Nobody (an RTP egress): never equal to a participant's id.
    pub const NOBODY: ParticipantId = ParticipantId(0);

    /// The id with value `raw` (tests and fuzz harnesses; ids are given by
    /// [`Participants::join`]).
    pub const fn new(raw: u32) -> ParticipantId {
        ParticipantId(raw)
    }

    /// Its value (logs; a seed where a number per participant is wanted).
    pub const fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The kinds of media a session publishes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub video: bool,
    pub audio: bool,
}

impl Kinds {
    pub const BOTH: Kinds = Kinds {
        video: true,
        audio: true,
    };
    pub const NONE: Kinds = Kinds {
        video: false,
        audio: false,
    };

    pub fn of(kind: MediaKind) -> Kinds {
        Kinds {
            video: kind == MediaKind::Video,
            audio: kind == MediaKind::Audio,
        }
    }

    pub fn any(self) -> bool {
        self.video || self.audio
    }
}

#[derive(Debug)]
struct Participant {
    room: RoomId,
    name: String,
    key: u32,
    /// Live sessions holding this participant.
    sessions: u32,
    /// Live publishing sessions per kind (video, audio): one each at most.
    video: u32,
    audio: u32,
    /// The publisher is an RTMP connection (taken over by a new push of
    /// the same name rather than refused).
    rtmp: bool,
    /// Order of arrival as a publisher, for "the room's first publisher".
    since: u64,
}

/// Why a session could not publish as its participant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// Another live session of the participant publishes that kind.
    ByWebrtcOrRtp,
    /// A live RTMP connection publishes as the participant.
    ByRtmp,
}

#[derive(Default)]
pub struct Participants {
    by_pid: HashMap<ParticipantId, Participant>,
    /// Per room: names to ids.
    by_name: HashMap<RoomId, HashMap<String, ParticipantId>>,
    /// The last id given (its low 24 bits), and the shard's high 8.
    next: u32,
    base: u32,
    order: u64,
}

impl Participants {
    /// The participants of shard `shard`, whose ids carry its index.
    pub fn for_shard(shard: u32) -> Participants {
        Participants {
            base: (shard & 0xff) << 24,
            ..Participants::default()
        }
    }

    /// The id of `name` in `room`, made if new; each call is one session
    /// more ([`Self::leave`] once per call).
    pub fn join(&mut self, room: RoomId, name: &str) -> ParticipantId {
        if let Some(pid) = self.find(room, name) {
            if let Some(p) = self.by_pid.get_mut(&pid) {
                p.sessions += 1;
            }
            return pid;
        }
        let id = |next: u32| ParticipantId(self.base | next);
        self.next = (self.next + 1) & 0xff_ffff;
        while self.next == 0 || self.by_pid.contains_key(&id(self.next)) {
            self.next = (self.next + 1) & 0xff_ffff;
        }
        let pid = id(self.next);
        self.by_pid.insert(
            pid,
            Participant {
                room,
                name: name.to_string(),
                key: participant_key(name),
                sessions: 1,
                video: 0,
                audio: 0,
                rtmp: false,
                since: 0,
            },
        );
        self.by_name
            .entry(room)
            .or_default()
            .insert(name.to_string(), pid);
        pid
    }

    /// One session of `pid` ended.
    pub fn leave(&mut self, pid: ParticipantId) {
        let Some(p) = self.by_pid.get_mut(&pid) else {
            return;
        };
        p.sessions = p.sessions.saturating_sub(1);
        if p.sessions == 0 {
            let p = self.by_pid.remove(&pid).expect("just found");
            if let Some(names) = self.by_name.get_mut(&p.room) {
                names.remove(&p.name);
                if names.is_empty() {
                    self.by_name.remove(&p.room);
                }
            }
        }
    }

    /// A session of `pid` starts publishing `kinds`; refused when one of
    /// them is published already.
    pub fn publish(&mut self, pid: ParticipantId, kinds: Kinds, rtmp: bool) -> Result<(), Taken> {
        let Some(p) = self.by_pid.get_mut(&pid) else {
            return Ok(());
        };
        if (kinds.video && p.video > 0) || (kinds.audio && p.audio > 0) {
            return Err(if p.rtmp {
                Taken::ByRtmp
            } else {
                Taken::ByWebrtcOrRtp
            });
        }
        if p.video == 0 && p.audio == 0 {
            self.order += 1;
            p.since = self.order;
        }
        p.video += kinds.video as u32;
        p.audio += kinds.audio as u32;
        p.rtmp = rtmp;
        Ok(())
    }

    /// A publishing session of `pid` stopped publishing `kinds`; returns
    /// whether the participant publishes nothing now.
    pub fn unpublish(&mut self, pid: ParticipantId, kinds: Kinds) -> bool {
        let Some(p) = self.by_pid.get_mut(&pid) else {
            return false;
        };
        p.video = p.video.saturating_sub(kinds.video as u32);
        p.audio = p.audio.saturating_sub(kinds.audio as u32);
        let none = p.video == 0 && p.audio == 0;
        if none {
            p.rtmp = false;
        }
        none && kinds.any()
    }

    pub fn find(&self, room: RoomId, name: &str) -> Option<ParticipantId> {
        self.by_name.get(&room)?.get(name).copied()
    }

    pub fn name(&self, pid: ParticipantId) -> Option<&str> {
        self.by_pid.get(&pid).map(|p| p.name.as_str())
    }

    pub fn room_of(&self, pid: ParticipantId) -> Option<RoomId> {
        self.by_pid.get(&pid).map(|p| p.room)
    }

    /// [`participant_key`] of `pid`'s name (0 for nobody).
    pub fn key(&self, pid: ParticipantId) -> u32 {
        self.by_pid.get(&pid).map_or(0, |p| p.key)
    }

    pub fn is_publishing(&self, pid: ParticipantId) -> bool {
        self.by_pid
            .get(&pid)
            .is_some_and(|p| p.video > 0 || p.audio > 0)
    }

    /// The room's publishing participants other than `except`, the
    /// earliest publisher first.
    pub fn publishers(&self, room: RoomId, except: ParticipantId) -> Vec<ParticipantId> {
        let mut v: Vec<(u64, ParticipantId)> = self
            .by_pid
            .iter()
            .filter(|(&pid, p)| p.room == room && pid != except && (p.video > 0 || p.audio > 0))
            .map(|(&pid, p)| (p.since, pid))
            .collect();
        v.sort_unstable();
        v.into_iter().map(|(_, pid)| pid).collect()
    }

    /// Forgets every participant of a deleted room.
    pub fn remove_room(&mut self, room: RoomId) {
        self.by_pid.retain(|_, p| p.room != room);
        self.by_name.remove(&room);
    }

    pub fn len(&self) -> usize {
        self.by_pid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_pid.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R1: RoomId = RoomId::new(1);
    const R2: RoomId = RoomId::new(2);

    #[test]
    fn a_name_is_one_participant_per_room_until_its_last_session_leaves() {
        let mut p = Participants::default();
        let a = p.join(R1, "alice");
        assert_eq!(p.join(R1, "alice"), a, "a second session, same participant");
        let other_room = p.join(R2, "alice");
        assert_ne!(other_room, a);
        assert_eq!(p.name(a), Some("alice"));
        assert_eq!(p.key(a), participant_key("alice"));
        p.leave(a);
        assert_eq!(p.find(R1, "alice"), Some(a));
        p.leave(a);
        assert_eq!(p.find(R1, "alice"), None);
        assert_eq!(p.len(), 1);
        p.remove_room(R2);
        assert!(p.is_empty());
    }

    #[test]
    fn each_kind_has_one_publisher_and_the_earliest_publisher_comes_first() {
        let mut p = Participants::default();
        let a = p.join(R1, "a");
        let b = p.join(R1, "b");
        // RTP ingests: video and audio are two sessions of one participant.
        assert_eq!(p.publish(b, Kinds::of(MediaKind::Video), false), Ok(()));
        assert_eq!(p.publish(b, Kinds::of(MediaKind::Audio), false), Ok(()));
        assert_eq!(p.publish(b, Kinds::BOTH, false), Err(Taken::ByWebrtcOrRtp));
        assert_eq!(p.publish(a, Kinds::BOTH, true), Ok(()));
        assert_eq!(p.publish(a, Kinds::BOTH, true), Err(Taken::ByRtmp));
        assert_eq!(p.publishers(R1, ParticipantId::NOBODY), vec![b, a]);
        assert_eq!(p.publishers(R1, b), vec![a]);
        assert!(!p.unpublish(b, Kinds::of(MediaKind::Video)));
        assert!(
            p.unpublish(b, Kinds::of(MediaKind::Audio)),
            "b publishes nothing now"
        );
        assert!(!p.is_publishing(b));
        assert_eq!(p.publishers(R1, ParticipantId::NOBODY), vec![a]);
    }
}
