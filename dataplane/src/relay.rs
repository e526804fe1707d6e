//! The links between the shards of one process: how one room is served by
//! every core.
//!
//! A room has an owner shard (`room_shard(name)`), where its publishers
//! are. A shard with WebRTC players of a room it does not own *watches* the
//! room: the owner then relays each packet of the room's publishers to it,
//! announcing each publisher before its first packet, and the watcher fans
//! the packets out to its own players as it would its own publishers'. A
//! player's feedback goes back by the same link: a keyframe request to the
//! publisher, a NACK the watcher's copy cannot answer.
//!
//! ```text
//!  owner shard                                watcher shard
//!  publisher ─▶ fan-out ─▶ its players
//!                  └─▶ Link::send_packet ═══▶ Link::drain ─▶ Core::handle_relayed ─▶ fan-out ─▶ its players
//!  Core::handle_relay_message ◀═══ Watch, Unwatch, KeyframeWanted, Nack ◀═══ Output::Relay
//!                  ═══▶ TrackUp (before a publisher's first packet), TrackDown ═══▶
//! ```
//!
//! Each ordered pair of shards has one lane: an `rtrb` ring of [`Item`]s,
//! written by one shard and read by the other, wait-free, allocated once at
//! start. One lane carries both messages and packets, so an announcement
//! is always read before the packets it announces. A full lane drops (and
//! counts) what does not fit rather than wait: the link is loopback memory,
//! so it fills only when the watcher is far behind, and a video player
//! recovers at the next keyframe as from any loss (counted as the
//! `relay_lane` limit). A sender rings the
//! receiver's doorbell once per turn it sent something ([`Link::wake`]).

use bytes::Bytes;
use gateway_ring::RoomId;
use rtrb::{Consumer, Producer, RingBuffer};

use crate::media::{Inbound, Source};
use crate::participants::ParticipantId;
use crate::rtmp::conn::Media;
use crate::rtp::MAX_PACKET;

/// Items in flight per lane: 512 × ~1.6 KiB = 0.8 MiB per ordered pair of
/// shards, about 12 ms of a publisher fanned out at 40 k packets/s.
pub const LANE_SLOTS: usize = 512;

/// Most items a shard reads from one peer per turn: a busy peer cannot
/// starve the shard's own sockets.
pub const DRAIN_BUDGET: usize = 256;

/// What shards tell each other about a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The sender has players in `room`, which the receiver owns: relay
    /// the room's media to it.
    Watch { room: RoomId },
    /// The sender's last player of `room` left.
    Unwatch { room: RoomId },
    /// A publisher of a watched room, sent before its first relayed packet:
    /// its participant's name and key (a player never gets its own tracks,
    /// and the room's events name whose track a line carries).
    TrackUp {
        room: RoomId,
        source: Source,
        name: String,
        key: u32,
    },
    /// That publisher stopped: its lines on the watcher are free again.
    TrackDown { room: RoomId, source: Source },
    /// An RTMP publisher's cached GOP (its latest keyframe and every
    /// packet since, as RTP), sent with its `TrackUp` to a shard that
    /// starts watching: that shard's new players get a picture at its next
    /// frame, as they would on the owner, not at the next keyframe (a
    /// push cannot be asked for one). The packets are shared, not copied.
    Gop {
        source: Source,
        codec: crate::codec::VideoCodec,
        packets: Vec<Bytes>,
    },
    /// A player on the sender lost the picture of `source` (a WebRTC or RTP
    /// publisher on the receiver): ask it for a keyframe.
    KeyframeWanted { source: Source },
    /// A player on the sender misses video packet `seq` of `source`, and
    /// the sender's copy of the track has none: ask the publisher.
    Nack { source: Source, seq: u16 },
    /// An RTMP or HTTP-FLV player on the sender wants `target` of room
    /// `room` (by name: the sender may not know the room).
    FlvSubscribe { room: String, target: FlvTarget },
    /// The answer: the room's id, and the stream's id on the owner (what
    /// its messages come with, see [`FlvKey`]). Its headers and GOP follow.
    FlvSubscribed {
        room_name: String,
        target: FlvTarget,
        room: RoomId,
        stream: FlvKey,
        key: u32,
    },
    /// No such room or participant: the waiting players are refused.
    FlvRefused {
        room: String,
        target: FlvTarget,
        why: String,
    },
    /// A message of stream `stream`, as its players on the owner get it.
    Flv { stream: FlvKey, media: Media },
    /// The sender's last player of `stream` left.
    FlvUnsubscribe { stream: FlvKey },
}

/// What an RTMP or HTTP-FLV player plays: a participant's stream
/// (`live/ROOM/NAME`), or the room's program as `me` (`live/ROOM`; empty
/// for anonymous players, who share one).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FlvTarget {
    Stream { name: String },
    Program { me: String },
}

/// A relayed FLV stream's id on its owner: a participant's stream, or a
/// program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FlvKey {
    Stream(ParticipantId),
    Program(u64),
}

/// A plaintext RTP packet of a relayed publisher, with its routing facts
/// (the participant in them is the owner's id: the watcher rewrites it).
pub struct Packet {
    pub inbound: Inbound,
    pub data: [u8; MAX_PACKET],
}

impl Packet {
    pub fn payload(&self) -> &[u8] {
        &self.data[..self.inbound.len.min(MAX_PACKET)]
    }
}

/// What a lane carries. Every slot is a packet's size: a boxed packet
/// would cost an allocation per packet, and a lane is made once.
#[allow(clippy::large_enum_variant)]
pub enum Item {
    Message(Message),
    Packet(Packet),
}

/// Rings another shard's doorbell.
pub type Wake = Box<dyn Fn() + Send>;

/// One shard's ends of its lanes to and from every other shard.
pub struct Link {
    shard: u32,
    to: Vec<Option<Producer<Item>>>,
    from: Vec<Option<Consumer<Item>>>,
    wakers: Vec<Option<Wake>>,
    /// Peers sent something since the last [`Self::wake`] (a bit per shard).
    unwoken: u64,
    /// Items a full lane refused, since start.
    pub dropped: u64,
}

/// Most shards a process links (a bit each in a `u64` set).
pub const MAX_SHARDS: usize = 64;

/// The links of `n` shards: lane (i, j) is written by shard i and read by
/// shard j. Wakers are set by [`Link::set_wakers`].
pub fn mesh(n: usize, slots: usize) -> Vec<Link> {
    assert!(n <= MAX_SHARDS, "at most {MAX_SHARDS} shards");
    let mut links: Vec<Link> = (0..n)
        .map(|i| Link {
            shard: i as u32,
            to: (0..n).map(|_| None).collect(),
            from: (0..n).map(|_| None).collect(),
            wakers: (0..n).map(|_| None).collect(),
            unwoken: 0,
            dropped: 0,
        })
        .collect();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let (p, c) = RingBuffer::new(slots);
                links[i].to[j] = Some(p);
                links[j].from[i] = Some(c);
            }
        }
    }
    links
}

/// The links of `region`'s shards, each able to ring the others' doorbells:
/// what the dataplane runs with (`slots` deep: [`LANE_SLOTS`]).
pub fn doorbell_mesh(region: &gateway_ring::Region, slots: usize) -> Vec<Link> {
    let n = region.shards();
    let mut links = mesh(n as usize, slots);
    for link in &mut links {
        let wakers = (0..n)
            .map(|j| {
                let bell = region.doorbell(j);
                Some(Box::new(move || bell.ring()) as Wake)
            })
            .collect();
        link.set_wakers(wakers);
    }
    links
}

impl Link {
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// How to ring each peer's doorbell, by shard index (its own is unused).
    pub fn set_wakers(&mut self, wakers: Vec<Option<Wake>>) {
        self.wakers = wakers;
    }

    fn push(&mut self, to: u32, item: Item) -> bool {
        let Some(p) = self.to.get_mut(to as usize).and_then(Option::as_mut) else {
            return false;
        };
        match p.push(item) {
            Ok(()) => {
                self.unwoken |= 1 << to;
                true
            }
            Err(_) => {
                self.dropped += 1;
                false
            }
        }
    }

    /// Queues `msg` for shard `to`; false if the lane is full (counted).
    pub fn send(&mut self, to: u32, msg: Message) -> bool {
        self.push(to, Item::Message(msg))
    }

    /// Queues a copy of the packet `data` (routing facts `inbound`) for
    /// each shard in `shards` (a bit per shard).
    pub fn send_packet(&mut self, shards: u64, inbound: &Inbound, data: &[u8]) {
        let n = inbound.len.min(data.len()).min(MAX_PACKET);
        let mut rest = shards & !(1 << self.shard);
        while rest != 0 {
            let to = rest.trailing_zeros();
            rest &= rest - 1;
            // Written in place: an item is 1.5 KiB, and this runs per packet.
            let Some(p) = self.to.get_mut(to as usize).and_then(Option::as_mut) else {
                continue;
            };
            let Ok(mut chunk) = p.write_chunk_uninit(1) else {
                self.dropped += 1;
                continue;
            };
            let (slots, _) = chunk.as_mut_slices();
            let slot = slots[0].write(Item::Packet(Packet {
                inbound: Inbound { len: n, ..*inbound },
                data: [0; MAX_PACKET],
            }));
            if let Item::Packet(pkt) = slot {
                pkt.data[..n].copy_from_slice(&data[..n]);
            }
            // SAFETY: the one slot of the chunk was written just above.
            unsafe { chunk.commit_all() };
            self.unwoken |= 1 << to;
        }
    }

    /// Rings the doorbell of every peer sent something since the last call.
    pub fn wake(&mut self) {
        let mut rest = std::mem::take(&mut self.unwoken);
        while rest != 0 {
            let to = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            if let Some(Some(w)) = self.wakers.get(to) {
                w();
            }
        }
    }

    /// Whether any peer has left an item for this shard.
    pub fn has_input(&self) -> bool {
        self.from.iter().flatten().any(|c| !c.is_empty())
    }

    /// Hands `f` up to `budget` items from each peer (the peer's index, the
    /// item), in the order each peer sent them; returns how many.
    pub fn drain(&mut self, budget: usize, mut f: impl FnMut(u32, &Item)) -> usize {
        let mut total = 0;
        for (from, c) in self.from.iter_mut().enumerate() {
            let Some(c) = c.as_mut() else { continue };
            for _ in 0..budget {
                // Read in place, dropped in place: no copy of a packet.
                let Ok(chunk) = c.read_chunk(1) else { break };
                let (a, _) = chunk.as_slices();
                f(from as u32, &a[0]);
                chunk.commit_all();
                total += 1;
            }
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_ring::msg::MediaKind;
    use gateway_ring::SessionId;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn inbound(len: usize) -> Inbound {
        Inbound {
            room: RoomId::new(7),
            source: Source::Session(SessionId::new(3)),
            participant: ParticipantId::new(1),
            key: 9,
            level: None,
            kind: MediaKind::Video,
            codec: Some(crate::codec::VideoCodec::H264),
            len,
            seq_no: 1,
            timestamp: 2,
            ssrc: 3,
            lost_before: 0,
        }
    }

    /// Messages and packets from one peer arrive in the order sent; each
    /// peer is rung once per turn it sent something; a full lane drops
    /// and counts, and never blocks.
    #[test]
    fn a_lane_keeps_order_wakes_once_and_drops_when_full() {
        let mut links = mesh(3, 4);
        let rung = Arc::new([AtomicU32::new(0), AtomicU32::new(0), AtomicU32::new(0)]);
        let wakers = (0..3)
            .map(|i| {
                let r = rung.clone();
                Some(Box::new(move || {
                    r[i].fetch_add(1, Ordering::Relaxed);
                }) as Wake)
            })
            .collect();
        links[0].set_wakers(wakers);
        let room = RoomId::new(7);
        assert!(links[0].send(1, Message::Watch { room }));
        links[0].send_packet(0b110, &inbound(5), &[1, 2, 3, 4, 5, 6]);
        links[0].wake();
        links[0].wake();
        assert_eq!(rung[1].load(Ordering::Relaxed), 1);
        assert_eq!(rung[2].load(Ordering::Relaxed), 1);
        assert_eq!(rung[0].load(Ordering::Relaxed), 0);
        let mut seen = Vec::new();
        links[1].drain(DRAIN_BUDGET, |from, item| {
            seen.push(match item {
                Item::Message(m) => format!("{from}:{m:?}"),
                Item::Packet(p) => format!("{from}:{:?}", p.payload()),
            })
        });
        assert_eq!(
            seen,
            vec![
                format!("0:{:?}", Message::Watch { room }),
                "0:[1, 2, 3, 4, 5]".to_string()
            ]
        );
        assert!(!links[1].has_input());
        assert!(links[2].has_input());
        for _ in 0..3 {
            links[0].send_packet(0b100, &inbound(1), &[0]);
        }
        // Shard 2 holds 4 now; the lane is full.
        assert!(!links[0].send(2, Message::Unwatch { room }));
        assert_eq!(links[0].dropped, 1);
        assert_eq!(links[2].drain(2, |_, _| {}), 2);
        assert_eq!(links[2].drain(DRAIN_BUDGET, |_, _| {}), 2);
    }
}
