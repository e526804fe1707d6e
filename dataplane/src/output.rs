//! The core's one way out: what the shard must do ([`Output`]), queued in
//! order in an [`Outputs`], and what one of the core's parts tells another
//! ([`Note`]), settled by the core before anything leaves.
//!
//! Every part of the core (the router, the hub, the core itself) queues
//! into an `Outputs` of its own, and [`crate::core::Core::poll_output`]
//! gathers them into the core's, settles the notes, and hands the shard one
//! output at a time. A [`Mark`] taken before an input lets the core discard
//! everything that input queued, anywhere, if handling it panicked.

use std::collections::VecDeque;
use std::net::SocketAddrV4;

use gateway_ring::msg::{Event, MediaKind};
use gateway_ring::{RoomId, SessionId};

use crate::media::{Handle, RtpFromRtmp, Source};
use crate::participants::ParticipantId;
use crate::rtmp::conn::Event as RtmpEvent;
use crate::transcode::Job;

/// A packet to send from a session's socket that is not a fan-out copy:
/// STUN answers, DTLS records, RTCP feedback and reports, retransmissions.
#[derive(Debug)]
pub struct Control {
    /// The session whose socket sends it.
    pub from: Handle,
    pub dest: SocketAddrV4,
    pub data: Vec<u8>,
}

/// Something to do with an RTMP or HTTP-FLV connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Close the connection (after flushing what is queued, if `flush`).
    Close { idx: u32, why: String, flush: bool },
    /// Move the connection to `shard`, which replays `events` there (the
    /// one that named the room, and any that came after it in the same read).
    Handoff {
        idx: u32,
        shard: u32,
        events: Vec<RtmpEvent>,
    },
    /// The connection has bytes to send.
    Wake(u32),
}

/// What the core asks the shard to do.
#[derive(Debug)]
pub enum Output {
    /// Send a datagram from a session's socket (STUN answers, DTLS records,
    /// RTCP, retransmissions); give the buffer back with
    /// [`crate::core::Core::recycle`].
    Transmit(Control),
    /// A DTLS datagram of `session` for the DTLS thread.
    Dtls { session: SessionId, data: Vec<u8> },
    /// We are `session`'s DTLS client and its peer's address is known now:
    /// the DTLS thread may send the ClientHello.
    DtlsStart { session: SessionId },
    /// The session's DTLS state can go (it ended).
    DtlsClosed { session: SessionId },
    /// The core ended a UDP session by itself: close its socket.
    CloseSocket(Handle),
    /// For the controlplane.
    Event(Event),
    /// Something to do with an RTMP connection.
    Rtmp(Action),
    /// Work for the transcoder thread; a full queue is counted against
    /// session `from`, if given.
    Transcode { job: Job, from: Option<SessionId> },
    /// RTP an RTMP publisher's media became: fan it out to the room's
    /// WebRTC players and RTP egresses.
    Rtp { rtp: RtpFromRtmp, kind: MediaKind },
    /// For another shard (see `relay.rs`).
    Relay { to: u32, msg: crate::relay::Message },
}

/// What one part of the core tells another, settled inside the core.
#[derive(Debug)]
pub enum Note {
    /// A participant stopped publishing: RTMP players that followed it move
    /// on, it is no longer a speaker, and the shards that watch its room
    /// end its relayed tracks. `rtmp`: an RTMP push, whose programs and
    /// bridges the hub let go already.
    Unpublished {
        room: RoomId,
        pid: ParticipantId,
        rtmp: bool,
    },
    /// RTP an RTMP publisher's video became: kept in the router's track
    /// cache (for NACKs and GOP replays), then fanned out.
    RtmpVideo(RtpFromRtmp),
    /// A bridged publisher is asked for a keyframe (if it is a session:
    /// an RTMP publisher cannot be asked).
    KeyframeWanted { source: Source },
    /// A bridged publisher is asked to resend a video packet (likewise).
    Nack { source: Source, seq: u16 },
}

impl Note {
    /// The room it concerns, where it names one.
    pub fn room(&self) -> Option<RoomId> {
        match self {
            Note::Unpublished { room, .. } => Some(*room),
            Note::RtmpVideo(rtp) => Some(rtp.room),
            Note::KeyframeWanted { .. } | Note::Nack { .. } => None,
        }
    }
}

/// What [`Outputs::take`]'s chooser makes of an output.
pub enum Pick<T> {
    Take(T),
    Keep(Output),
}

/// Outputs and notes in the order they were queued.
#[derive(Debug, Default)]
pub struct Outputs {
    queue: VecDeque<Output>,
    notes: VecDeque<Note>,
    /// Counted since the start, so a [`Mark`] survives pops at the front.
    pushed: u64,
    noted: u64,
}

/// Where an [`Outputs`] stood before an input (see [`Outputs::discard_since`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pushed: u64,
    noted: u64,
}

impl Outputs {
    pub fn push(&mut self, o: Output) {
        self.queue.push_back(o);
        self.pushed += 1;
    }

    /// An event for the controlplane.
    pub fn event(&mut self, e: Event) {
        self.push(Output::Event(e));
    }

    /// Something to do with RTMP connection.
    pub fn rtmp(&mut self, a: Action) {
        self.push(Output::Rtmp(a));
    }

    /// The last output, if it is an RTMP action (a hand-over that takes
    /// the rest of a read's events along).
    pub fn last_rtmp_mut(&mut self) -> Option<&mut Action> {
        match self.queue.back_mut() {
            Some(Output::Rtmp(a)) => Some(a),
            _ => None,
        }
    }

    pub fn note(&mut self, n: Note) {
        self.notes.push_back(n);
        self.noted += 1;
    }

    pub fn pop(&mut self) -> Option<Output> {
        self.queue.pop_front()
    }

    pub fn pop_note(&mut self) -> Option<Note> {
        self.notes.pop_front()
    }

    /// Moves everything `other` holds behind what this holds.
    pub fn append(&mut self, other: &mut Outputs) {
        self.pushed += other.queue.len() as u64;
        self.noted += other.notes.len() as u64;
        self.queue.append(&mut other.queue);
        self.notes.append(&mut other.notes);
    }

    /// Drops the notes `drop` names (a room removed: what it noted is moot).
    pub fn drop_notes(&mut self, drop: impl Fn(&Note) -> bool) {
        self.notes.retain(|n| !drop(n));
    }

    pub fn mark(&self) -> Mark {
        Mark {
            pushed: self.pushed,
            noted: self.noted,
        }
    }

    /// Drops what was queued (or appended) since `mark`: the input handled
    /// meanwhile panicked, and what it asked for is not trusted. What was
    /// popped meanwhile is gone already (the core pops nothing during an
    /// input).
    pub fn discard_since(&mut self, mark: Mark) {
        let n = (self.pushed - mark.pushed).min(self.queue.len() as u64) as usize;
        self.queue.truncate(self.queue.len() - n);
        let n = (self.noted - mark.noted).min(self.notes.len() as u64) as usize;
        self.notes.truncate(self.notes.len() - n);
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.notes.is_empty()
    }

    /// Whether an output (not only a note) waits.
    pub fn has_output(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Drops everything queued (its marks stay valid).
    pub fn clear(&mut self) {
        self.queue.clear();
        self.notes.clear();
    }

    /// The queued RTMP actions, in order, left in place.
    pub fn actions(&self) -> impl Iterator<Item = &Action> {
        self.queue.iter().filter_map(|o| match o {
            Output::Rtmp(a) => Some(a),
            _ => None,
        })
    }

    /// The queued transcoder jobs, in order, left in place.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.queue.iter().filter_map(|o| match o {
            Output::Transcode { job, .. } => Some(job),
            _ => None,
        })
    }

    /// The queued events, in order, left in place.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.queue.iter().filter_map(|o| match o {
            Output::Event(e) => Some(e),
            _ => None,
        })
    }

    /// The queued notes, in order, left in place.
    pub fn notes(&self) -> impl Iterator<Item = &Note> {
        self.notes.iter()
    }

    /// RTP made from RTMP publishers' video, noted for the router, in order.
    pub fn rtmp_video(&self) -> impl Iterator<Item = &RtpFromRtmp> {
        self.notes.iter().filter_map(|n| match n {
            Note::RtmpVideo(rtp) => Some(rtp),
            _ => None,
        })
    }

    /// Takes the queued outputs `pick` makes something of, leaving the
    /// rest (given back as [`Pick::Keep`]) in order.
    pub fn take<T>(&mut self, mut pick: impl FnMut(Output) -> Pick<T>) -> Vec<T> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for o in self.queue.drain(..) {
            match pick(o) {
                Pick::Take(t) => taken.push(t),
                Pick::Keep(o) => kept.push_back(o),
            }
        }
        self.queue = kept;
        taken
    }

    /// Takes the queued datagrams to send (tests and the fuzz harnesses).
    pub fn take_transmits(&mut self) -> Vec<Control> {
        self.take(|o| match o {
            Output::Transmit(c) => Pick::Take(c),
            o => Pick::Keep(o),
        })
    }

    /// Takes the queued RTMP actions (tests and the fuzz harnesses).
    pub fn take_actions(&mut self) -> Vec<Action> {
        self.take(|o| match o {
            Output::Rtmp(a) => Pick::Take(a),
            o => Pick::Keep(o),
        })
    }

    /// Takes the queued transcoder jobs (tests and the fuzz harnesses).
    pub fn take_jobs(&mut self) -> Vec<Job> {
        self.take(|o| match o {
            Output::Transcode { job, .. } => Pick::Take(job),
            o => Pick::Keep(o),
        })
    }

    /// Takes the queued events (tests).
    pub fn take_events(&mut self) -> Vec<Event> {
        self.take(|o| match o {
            Output::Event(e) => Pick::Take(e),
            o => Pick::Keep(o),
        })
    }

    /// Takes the queued notes (tests and the fuzz harnesses).
    pub fn take_notes(&mut self) -> Vec<Note> {
        self.notes.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mark survives pops at the front and appends into another queue:
    /// what came after it is discarded wherever it went, and nothing before.
    #[test]
    fn discard_drops_exactly_what_came_after_the_mark() {
        let wake = |i| Output::Rtmp(Action::Wake(i));
        let (mut core, mut part) = (Outputs::default(), Outputs::default());
        core.push(wake(1));
        part.push(wake(2));
        core.append(&mut part);
        assert!(matches!(core.pop(), Some(Output::Rtmp(Action::Wake(1)))));
        let (core_mark, part_mark) = (core.mark(), part.mark());
        part.push(wake(3));
        part.note(Note::KeyframeWanted {
            source: Source::Session(SessionId::new(9)),
        });
        core.append(&mut part);
        core.push(wake(4));
        part.push(wake(5));
        core.discard_since(core_mark);
        part.discard_since(part_mark);
        let left: Vec<_> = std::iter::from_fn(|| core.pop()).collect();
        assert!(
            matches!(left[..], [Output::Rtmp(Action::Wake(2))]),
            "{left:?}"
        );
        assert!(part.is_empty() && core.is_empty());
    }
}
