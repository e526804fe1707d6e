//! One room over two shards without I/O: two cores and the lanes between
//! them, driven the way the shards drive them (`shard/relay.rs`), on
//! virtual time. The core's tests use [`TwoShards`]; [`fuzz_two_shards`]
//! is the body of the `two_shards` fuzz target.

use std::time::{Duration, Instant};

use gateway_ring::msg::{room_shard, Direction, RoomSpec};
use gateway_ring::SessionId;

use crate::core::{Core, CoreConfig};
use crate::hub::ConnState;
use crate::media::{Handle, Inbound};
use crate::output::{Action, Output};
use crate::relay::{mesh, Item, Link, Message, Packet, DRAIN_BUDGET};
use crate::rtmp::conn::Conn;
use crate::srtp::{SrtpContext, MAX_TRAILER};

use super::{addr, check, egress, framed_inputs, key, protect, video_ingest, webrtc, ROOM};

/// Two shards' cores and the lanes between them.
pub struct TwoShards {
    pub cores: Vec<Core>,
    pub links: Vec<Link>,
    /// Per shard: what its egresses were sent (egress, the datagram as it
    /// left, protected where the egress is keyed).
    pub sent: Vec<Vec<(Handle, Vec<u8>)>>,
    /// Per shard: its outputs that are neither for the other shard nor
    /// media to fan out (the test or the harness carries them out).
    pub outputs: Vec<Vec<Output>>,
    /// Messages each shard read from the other, by kind name.
    pub read: Vec<Vec<&'static str>>,
}

/// A room name whose owner, of two shards, is shard 0.
pub fn room_of_shard_0() -> String {
    (0..)
        .map(|i| format!("room{i}"))
        .find(|n| room_shard(n, 2) == 0)
        .expect("some name hashes to shard 0")
}

impl TwoShards {
    /// Two cores at `now` (deterministic randomness), their lanes `slots` deep.
    pub fn new(now: Instant, slots: usize) -> TwoShards {
        let cores = (0..2)
            .map(|shard| {
                let random = Box::new(|b: &mut [u8]| b.fill(7));
                Core::new(CoreConfig::harness(shard, 2, random), now)
            })
            .collect();
        TwoShards {
            cores,
            links: mesh(2, slots),
            sent: vec![Vec::new(), Vec::new()],
            outputs: vec![Vec::new(), Vec::new()],
            read: vec![Vec::new(), Vec::new()],
        }
    }

    /// What shard `s` fans out of `inbound` (plaintext `pkt`): to the
    /// watchers first, then to its own egresses, into slot-sized buffers.
    pub fn fan_out(&mut self, s: usize, now: Instant, inbound: &Inbound, pkt: &[u8]) {
        let mut announce = Vec::new();
        let shards = self.cores[s].relay_targets(inbound, &mut announce);
        for (to, msg) in announce {
            self.links[s].send(to, msg);
        }
        self.links[s].send_packet(shards, inbound, pkt);
        let mut buf = vec![0u8; crate::rtp::MAX_PACKET + MAX_TRAILER];
        for e in self.cores[s].egresses(inbound.room).to_vec() {
            let n = inbound.len.min(pkt.len());
            buf[..n].copy_from_slice(&pkt[..n]);
            if let Some((m, _)) = self.cores[s].prepare_egress(now, e, inbound, &mut buf) {
                assert!((12..=buf.len()).contains(&m));
                self.sent[s].push((e, buf[..m].to_vec()));
            }
        }
    }

    /// Carries out what each shard queued: messages into the lanes, RTP
    /// an RTMP push became fanned out, the rest kept in `outputs`.
    pub fn poll(&mut self, now: Instant) {
        for s in 0..2 {
            while let Some(o) = self.cores[s].poll_output() {
                match o {
                    Output::Relay { to, msg } => {
                        self.links[s].send(to, msg);
                    }
                    Output::Rtp { rtp, kind } => {
                        if let Some(inbound) = rtp.inbound(kind) {
                            self.fan_out(s, now, &inbound, &rtp.packet);
                        }
                    }
                    o => self.outputs[s].push(o),
                }
            }
        }
    }

    /// Each shard reads up to `budget` items the other left it, as the
    /// shard does at each turn; returns how many.
    pub fn deliver(&mut self, now: Instant, budget: usize) -> usize {
        let mut got = Vec::new();
        for s in 0..2 {
            self.links[s].drain(budget, |from, item| {
                got.push((
                    s,
                    from,
                    match item {
                        Item::Message(m) => Err(m.clone()),
                        Item::Packet(p) => Ok((p.inbound, p.payload().to_vec())),
                    },
                ))
            });
        }
        let n = got.len();
        for (s, from, item) in got {
            match item {
                Err(m) => {
                    self.read[s].push(kind_of(&m));
                    self.cores[s].handle_relay_message(now, from, &m);
                }
                Ok((inbound, data)) => {
                    let mut pkt = Packet {
                        inbound,
                        data: [0; crate::rtp::MAX_PACKET],
                    };
                    pkt.data[..data.len()].copy_from_slice(&data);
                    if let Some(i) = self.cores[s].handle_relayed(now, from, &pkt) {
                        self.fan_out(s, now, &i, &data);
                    }
                }
            }
        }
        n
    }

    /// Polls and delivers until nothing is left in flight.
    pub fn settle(&mut self, now: Instant) {
        for _ in 0..16 {
            self.poll(now);
            if self.deliver(now, DRAIN_BUDGET) == 0 {
                return;
            }
        }
        self.poll(now);
    }
}

fn kind_of(m: &Message) -> &'static str {
    match m {
        Message::Watch { .. } => "watch",
        Message::Unwatch { .. } => "unwatch",
        Message::TrackUp { .. } => "track_up",
        Message::TrackDown { .. } => "track_down",
        Message::Gop { .. } => "gop",
        Message::KeyframeWanted { .. } => "keyframe_wanted",
        Message::Nack { .. } => "nack",
        Message::FlvSubscribe { .. } => "flv_subscribe",
        Message::FlvSubscribed { .. } => "flv_subscribed",
        Message::FlvRefused { .. } => "flv_refused",
        Message::Flv { .. } => "flv",
        Message::FlvUnsubscribe { .. } => "flv_unsubscribe",
    }
}

/// The shard's side of the outputs `poll` kept: control packets bounded
/// and recycled, closed connections taken out, players' queues read.
fn carry_out(t: &mut TwoShards, now: Instant) {
    for s in 0..2 {
        for o in std::mem::take(&mut t.outputs[s]) {
            match o {
                Output::Transmit(c) => {
                    assert!(c.data.len() <= crate::rtp::MAX_PACKET + 2 + MAX_TRAILER);
                    t.cores[s].recycle(c.data);
                }
                Output::Rtmp(Action::Close { idx, .. } | Action::Handoff { idx, .. }) => {
                    t.cores[s].rtmp_remove(now, idx);
                }
                Output::Rtmp(Action::Wake(idx)) => {
                    if let Some(q) = t.cores[s].rtmp_queue(idx) {
                        assert!(q.bytes() <= q.max_unread + crate::rtmp::chunk::MAX_MESSAGE);
                        let n = q.front().map_or(0, |b| b.len());
                        q.consumed(n);
                    }
                }
                _ => {}
            }
        }
    }
}

/// What [`fuzz_two_shards`] reached.
#[derive(Debug, Default, Clone, Copy)]
pub struct TwoShardsReach {
    /// Packets relayed from the owner and prepared for an egress on the
    /// other shard.
    pub relayed_out: usize,
    /// Feedback of the other shard's players the owner read (keyframe
    /// requests, NACKs).
    pub feedback_back: usize,
    /// FLV messages the owner relayed that the other shard read.
    pub flv_read: usize,
}

/// The body of the `two_shards` fuzz target: one room over two shards. The
/// owner (shard 0) has an RTP ingest and a keyed WebRTC publisher, and
/// RTMP connections; the other shard an RTP egress, a keyed WebRTC player
/// and RTMP and HTTP-FLV connections. Inputs go to either side, the lanes
/// (16 items deep, so they fill) are read only when the input says so, in
/// part, and sessions and the room come and go on either side, so
/// announcements, watches, feedback and FLV subscriptions race with media
/// as they can between real shards. Nothing may panic, and nothing may
/// come out larger than a slot.
///
/// Input: `[op][len: u16 big-endian][len bytes]`...: op % 14 is 0 raw → RTP
/// ingest (owner), 1 SRTP(payload) → publisher (owner), 2 SRTCP(payload)
/// → player (other), 3 raw → player (other), 4 read up to `len % 64` items
/// from each lane, 5 time + `len` ms (both cores' deadlines), 6-7 bytes of
/// connection op - 6 on the owner, 8-10 of connection op - 8 on the other
/// (10: HTTP-FLV), 11 remove session `bytes[0] % 16` on shard `bytes[0] >> 4
/// & 1`, 12 remove the room on shard `bytes[0] & 1` and make it again with
/// its sessions there, 13 an RTP egress more on the other shard.
pub fn fuzz_two_shards(data: &[u8]) -> TwoShardsReach {
    let t0 = Instant::now();
    let mut t = TwoShards::new(t0, 16);
    let mut reach = TwoShardsReach::default();
    let (Some(k1), Some(k2), Some(k3), Some(k4)) = (key(1), key(2), key(3), key(4)) else {
        return reach;
    };
    let spec = RoomSpec {
        room: ROOM,
        name: room_of_shard_0(),
    };
    // The room and its sessions on shard `s` (again after op 12).
    let setup = |t: &mut TwoShards, s: usize, now: Instant| -> Option<(Handle, Handle)> {
        let core = &mut t.cores[s];
        core.add_room(spec.clone());
        let made = if s == 0 {
            let ingest = core.add_ingest(video_ingest(10)).ok()?;
            let publisher = core.add_webrtc(now, webrtc(1, Direction::Publish)).ok()?;
            core.handle_datagram(now, publisher, addr(5001), &mut check(1));
            core.handle_dtls_keys(now, SessionId::new(1), &k1, &k2);
            (ingest, publisher)
        } else {
            let _ = core.add_egress(egress(11)).ok()?;
            let player = core.add_webrtc(now, webrtc(2, Direction::Subscribe)).ok()?;
            core.handle_datagram(now, player, addr(5002), &mut check(2));
            core.handle_dtls_keys(now, SessionId::new(2), &k3, &k4);
            (player, player)
        };
        for idx in 0..2 {
            let mut st = ConnState::default();
            st.conn = Conn::new_after_handshake();
            core.rtmp_insert(idx, st);
        }
        core.rtmp_insert(2, ConnState::http_flv());
        Some(made)
    };
    let (Some((mut ingest, mut publisher)), Some((mut player, _))) =
        (setup(&mut t, 0, t0), setup(&mut t, 1, t0))
    else {
        return reach;
    };
    let mut pub_tx = SrtpContext::new(&k1);
    let mut player_tx = SrtpContext::new(&k3);
    let mut now = t0;
    let mut next_egress = 20;
    for (op, len, body) in framed_inputs(data) {
        let mut buf = body.to_vec();
        let first = body.first().copied().unwrap_or(0);
        let datagram = match op % 14 {
            0 => Some((0, ingest, addr(6000))),
            1 => protect(&mut buf, |b, n| pub_tx.protect_rtp(b, n)).then_some((
                0,
                publisher,
                addr(5001),
            )),
            2 => protect(&mut buf, |b, n| player_tx.protect_rtcp(b, n)).then_some((
                1,
                player,
                addr(5002),
            )),
            3 => Some((1, player, addr(5002))),
            4 => {
                t.deliver(now, (len % 64) as usize);
                None
            }
            5 => {
                let due = t.cores[0].poll_timeout().min(t.cores[1].poll_timeout());
                now = (now + Duration::from_millis(len as u64)).min(due.max(now));
                for core in &mut t.cores {
                    core.handle_timeout(now, 0);
                }
                None
            }
            op @ 6..=7 => {
                t.cores[0].handle_rtmp_bytes(now, (op - 6) as u32, body);
                None
            }
            op @ 8..=10 => {
                t.cores[1].handle_rtmp_bytes(now, (op - 8) as u32, body);
                None
            }
            11 => {
                let s = (first >> 4 & 1) as usize;
                t.cores[s].remove_session(now, SessionId::new((first % 16) as u64));
                None
            }
            12 => {
                let s = (first & 1) as usize;
                t.cores[s].remove_room(now, ROOM);
                t.poll(now);
                carry_out(&mut t, now);
                match (s, setup(&mut t, s, now)) {
                    (0, Some(made)) => (ingest, publisher) = made,
                    (_, Some((p, _))) => player = p,
                    (_, None) => return reach,
                }
                None
            }
            _ => {
                next_egress += 1;
                let _ = t.cores[1].add_egress(egress(next_egress));
                None
            }
        };
        if let Some((s, h, from)) = datagram {
            if let Some(inbound) = t.cores[s].handle_datagram(now, h, from, &mut buf) {
                assert!(inbound.len <= crate::rtp::MAX_PACKET && inbound.len <= buf.len());
                let plain = buf[..inbound.len].to_vec();
                t.fan_out(s, now, &inbound, &plain);
            }
        }
        t.poll(now);
        carry_out(&mut t, now);
        reach.relayed_out = t.sent[1].len();
    }
    reach.feedback_back = t.read[0]
        .iter()
        .filter(|k| matches!(**k, "keyframe_wanted" | "nack"))
        .count();
    reach.flv_read = t.read[1].iter().filter(|k| **k == "flv").count();
    reach
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Structured input reaches every relay path: the owner's media fanned
    /// out on the other shard, its player's feedback read on the owner, an
    /// RTMP push's FLV read by the other shard's player; junk is harmless.
    #[test]
    fn the_two_shard_harness_reaches_every_relay_path() {
        use crate::fuzz::client::{flv_video, framed, rtmp_command, FLV_KEYFRAME};
        let mut input = Vec::new();
        // The room's publisher sends keyed video, delivered, twice.
        for seq in 1..3u8 {
            let mut rtp = vec![0x80, 102, 0, seq, 0, 0, 0, 1, 0, 0, 0x50, 0x01];
            rtp.extend_from_slice(&[0x65; 100]);
            framed(&mut input, 1, &rtp);
            framed(&mut input, 4, &[0; 63]);
            framed(&mut input, 4, &[0; 63]);
        }
        // The other shard's player asks for a keyframe and a resend.
        let mut fb = vec![0u8; 64];
        let n = crate::rtcp::write_pli(&mut fb, 9, 0x5002);
        let m = crate::rtcp::write_nack(&mut fb[n..], 9, 0x5002, 1, 0);
        framed(&mut input, 2, &fb[..n + m]);
        framed(&mut input, 4, &[0; 63]);
        // An RTMP push on the owner, played on the other shard.
        let room = room_of_shard_0();
        framed(
            &mut input,
            6,
            &rtmp_command("publish", &format!("{room}/bob")),
        );
        framed(&mut input, 8, &rtmp_command("play", &format!("{room}/bob")));
        for _ in 0..4 {
            framed(&mut input, 4, &[0; 63]);
        }
        framed(&mut input, 6, &flv_video(&FLV_KEYFRAME));
        framed(&mut input, 4, &[0; 63]);
        let reach = fuzz_two_shards(&input);
        assert!(reach.relayed_out >= 2, "{reach:?}");
        assert!(reach.feedback_back >= 1, "{reach:?}");
        assert!(reach.flv_read >= 1, "{reach:?}");

        let junk = crate::fuzz::client::junk(0x9e37_79b9_7f4a_7c15, 20_000);
        fuzz_two_shards(&junk);
        for w in junk.chunks(500) {
            fuzz_two_shards(w);
        }
    }
}
