//! A simulated network on virtual time: clients on the far side of paths
//! that lose, reorder, delay and cap what they carry, and the shards'
//! cores ([`TwoShards`]) on the near side, stepped millisecond by
//! millisecond with no I/O and no real clock. Deterministic: every path
//! draws from its own seeded generator, so a failing run fails again.
//!
//! The clients are what real ones do, no more: a WebRTC publisher sends
//! H264 (keyframes when asked), keeps what it sent and resends it on RTX
//! when NACKed, and reads the estimates it is sent; a WebRTC player
//! NACKs the gaps it sees, retries, asks for a keyframe, and counts what
//! it decoded; an RTMP client pushes FLV or plays by reading its queue.
//! (As str0m's `TestRtc` and quinn's `Pair::drive`; `remb.rs`'s `Path`
//! was the seed of [`Path`].)
//!
//! ```text
//!  Client ──up Path──▶ core of its shard ◀──relay lanes──▶ core of the other
//!    ▲                      │
//!    └─────down Path────────┘  (media it was sent, control datagrams)
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use gateway_ring::msg::{
    rtx_ssrc, Direction, Event, IngestSpec, RoomSpec, SessionStats, WebrtcSpec,
};
use gateway_ring::SessionId;

use crate::codec::VideoCodec;
use crate::hub::ConnState;
use crate::media::Handle;
use crate::output::{Action, Output};
use crate::rtcp::{self, Feedback};
use crate::rtmp::chunk::Message;
use crate::rtmp::conn::{types, Conn};
use crate::rtp::{is_rtcp, RtpHeader};
use crate::srtp::SrtpContext;
use crate::transcode::{Done, Job};

use super::client::{flv_avc_config, flv_video_at, rtmp_command, SPS};
use super::two_shards::{room_of_shard_0, TwoShards};
use super::{addr, check, key, protect, ROOM};

/// What a path does to the datagrams it carries.
#[derive(Clone, Copy, Debug)]
pub struct Impairment {
    /// The share of datagrams lost (0 to 1).
    pub loss: f64,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Extra delay drawn per datagram between 0 and this: datagrams sent
    /// closer together than it arrive reordered.
    pub jitter: Duration,
    /// The link's rate in bits per second (0: uncapped). A datagram
    /// leaves once the ones before it have: a burst queues.
    pub rate_bps: u64,
    /// The longest a datagram may queue behind the cap before the link
    /// drops it (a router's drop-tail buffer).
    pub queue: Duration,
}

impl Impairment {
    /// A good path: 10 ms, nothing lost, no cap.
    pub const CLEAN: Impairment = Impairment {
        loss: 0.0,
        delay: Duration::from_millis(10),
        jitter: Duration::ZERO,
        rate_bps: 0,
        queue: Duration::from_millis(200),
    };

    /// A mobile path: `loss`, 30 ms, up to 20 ms of jitter (so reordered).
    pub fn lossy(loss: f64) -> Impairment {
        Impairment {
            loss,
            delay: Duration::from_millis(30),
            jitter: Duration::from_millis(20),
            ..Impairment::CLEAN
        }
    }
}

/// xorshift64: enough randomness for a path, and the same every run.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One direction between a client and the gateway.
pub struct Path {
    pub imp: Impairment,
    rng: Rng,
    /// When the capped link has sent what it holds.
    busy_until: Option<Instant>,
    /// (arrival, order sent, datagram).
    flight: BinaryHeap<Reverse<(Instant, u64, Vec<u8>)>>,
    order: u64,
    pub sent: usize,
    pub lost: usize,
    /// Dropped at the cap: the queue was full.
    pub overflowed: usize,
}

impl Path {
    pub fn new(imp: Impairment, seed: u64) -> Path {
        Path {
            imp,
            rng: Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1),
            busy_until: None,
            flight: BinaryHeap::new(),
            order: 0,
            sent: 0,
            lost: 0,
            overflowed: 0,
        }
    }

    pub fn send(&mut self, now: Instant, datagram: Vec<u8>) {
        self.sent += 1;
        let mut leave = now;
        let bits = (datagram.len() as u64 + 28) * 8; // with IP and UDP headers
        if let Some(ns) = (bits * 1_000_000_000).checked_div(self.imp.rate_bps) {
            let start = self.busy_until.map_or(now, |b| b.max(now));
            if start - now > self.imp.queue {
                self.overflowed += 1;
                return;
            }
            leave = start + Duration::from_nanos(ns);
            self.busy_until = Some(leave);
        }
        if self.rng.unit() < self.imp.loss {
            self.lost += 1;
            return;
        }
        let jitter = self.imp.jitter.mul_f64(self.rng.unit());
        self.order += 1;
        self.flight.push(Reverse((
            leave + self.imp.delay + jitter,
            self.order,
            datagram,
        )));
    }

    /// The next datagram that has arrived by `now`.
    pub fn arrived(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.flight.peek()?.0 .0 > now {
            return None;
        }
        self.flight.pop().map(|Reverse((_, _, d))| d)
    }
}

impl Publisher {
    /// A publisher of SSRC `ssrc` and payload type `pt`, its slices
    /// filled with `fill`; abs-send-time under `abs_send_time` if not 0.
    fn new(ssrc: u32, pt: u8, abs_send_time: u8, fill: u8) -> Publisher {
        Publisher {
            ssrc,
            pt,
            codec: VideoCodec::H264,
            seq: 1000,
            rtx_seq: 0,
            history: HashMap::new(),
            abs_send_time,
            slices: 2,
            slice_bytes: 600,
            fill,
            frames: 0,
            keyframes: 0,
            keyframe_wanted: true,
            nacked: 0,
            resent: 0,
            plis: 0,
            rembs: Vec::new(),
        }
    }

    /// How many packets it sent (not counting resends).
    pub fn history_len(&self) -> usize {
        self.history.len()
    }
}

/// An H264 WebRTC publisher: a frame every 33 ms, each frame `slices`
/// packets of `slice_bytes` (a keyframe: SPS, PPS and an IDR first).
pub struct Publisher {
    pub ssrc: u32,
    pt: u8,
    /// What it sends: H264 (single NAL units), or VP8.
    pub codec: VideoCodec,
    seq: u16,
    rtx_seq: u16,
    /// What it sent, by sequence number: what a NACK can have back.
    history: HashMap<u16, Vec<u8>>,
    /// The abs-send-time extension's id (0: none).
    pub abs_send_time: u8,
    pub slices: usize,
    pub slice_bytes: usize,
    /// The byte its slices are filled with: whose picture a player got.
    pub fill: u8,
    pub frames: u32,
    pub keyframes: u32,
    pub keyframe_wanted: bool,
    pub nacked: usize,
    pub resent: usize,
    pub plis: usize,
    /// The REMB estimates it was sent, bits per second.
    pub rembs: Vec<u64>,
}

/// A WebRTC player: what it got of each stream, and its NACKs.
pub struct Player {
    /// Per our line's SSRC: each sequence number (extended) it got.
    pub got: BTreeMap<u32, BTreeMap<u64, Vec<u8>>>,
    /// Per SSRC: the highest extended sequence number so far.
    highest: HashMap<u32, u64>,
    /// Missing (SSRC, extended seq) → (last NACK, NACKs sent).
    missing: BTreeMap<(u32, u64), (Instant, u32)>,
    pub nacks: usize,
    pub rtx: usize,
    pub plis: usize,
    /// Keyframes it saw begin (distinct timestamps).
    pub keyframes: usize,
    /// Each line's codec, by our SSRC.
    codecs: HashMap<u32, VideoCodec>,
    /// The RTX payload types its answer gave it.
    rtx_pts: Vec<u8>,
    /// The codec of each video payload type (and RTX type) of the session's table.
    pt_codecs: HashMap<u8, VideoCodec>,
    /// The payload type of each media packet it got, in order.
    pub pts: Vec<u8>,
    last_keyframe: Option<u32>,
    /// It offered transport-cc (as a browser does): the extension id, and
    /// the arrivals it feeds back every 100 ms.
    twcc: Option<(u8, Box<crate::twcc::Recorder>)>,
}

/// An RTMP client: its connection's index on its shard.
pub struct Rtmp {
    pub idx: u32,
    /// Video messages it was sent (players).
    pub videos: Vec<Message>,
}

pub enum Kind {
    Publisher(Publisher),
    Player(Player),
    Rtmp(Rtmp),
}

/// A client: where it is served, its two paths and its keys.
pub struct Client {
    pub shard: usize,
    pub handle: Option<Handle>,
    pub session: SessionId,
    pub addr: SocketAddrV4,
    pub up: Path,
    pub down: Path,
    tx: Option<SrtpContext>,
    rx: Option<SrtpContext>,
    pub kind: Kind,
}

impl Client {
    pub fn publisher(&mut self) -> &mut Publisher {
        match &mut self.kind {
            Kind::Publisher(p) => p,
            _ => panic!("not a publisher"),
        }
    }
    pub fn player(&mut self) -> &mut Player {
        match &mut self.kind {
            Kind::Player(p) => p,
            _ => panic!("not a player"),
        }
    }
    pub fn rtmp(&mut self) -> &mut Rtmp {
        match &mut self.kind {
            Kind::Rtmp(r) => r,
            _ => panic!("not an RTMP client"),
        }
    }
}

/// One room over two shards (owned by shard 0) and its clients.
pub struct Net {
    pub t: TwoShards,
    pub t0: Instant,
    pub now: Instant,
    pub clients: Vec<Client>,
    /// The latest counters of each session.
    pub stats: HashMap<SessionId, SessionStats>,
    /// The events the shards emitted, in order.
    pub events: Vec<Event>,
    /// How often an RTMP push sends a keyframe.
    pub push_gop: Duration,
    /// What each shard gave its re-encode thread to transcode to H264 (a
    /// stand-in answers each frame with an H264 picture, a keyframe for a
    /// keyframe): (shard, frame number, keyframe, frame length).
    pub transcoded: Vec<(usize, u32, bool, usize)>,
    next_idx: u32,
}

/// How often a player looks for gaps to NACK, and the least time between
/// two NACKs of one packet.
const NACK_EVERY: Duration = Duration::from_millis(10);
const NACK_RETRY: Duration = Duration::from_millis(100);

impl Net {
    pub fn new() -> Net {
        let t0 = Instant::now();
        let mut t = TwoShards::new(t0, 512);
        let spec = RoomSpec {
            room: ROOM,
            name: room_of_shard_0(),
        };
        for core in &mut t.cores {
            core.add_room(spec.clone());
        }
        Net {
            t,
            t0,
            now: t0,
            clients: Vec::new(),
            stats: HashMap::new(),
            events: Vec::new(),
            push_gop: Duration::from_millis(990),
            transcoded: Vec::new(),
            next_idx: 0,
        }
    }

    /// The room's name (its owner is shard 0).
    pub fn room_name(&self) -> String {
        room_of_shard_0()
    }

    /// A keyed WebRTC session `spec` on `shard` behind `up` and `down`
    /// (ICE checked, SRTP keyed as after DTLS); its index in `clients`.
    pub fn webrtc(
        &mut self,
        shard: usize,
        spec: WebrtcSpec,
        up: Impairment,
        down: Impairment,
    ) -> usize {
        let n = self.clients.len() as u64;
        let session = spec.session;
        let publisher = spec.direction == Direction::Publish;
        let video = spec.tracks.iter().find(|t| t.rtx_pt != 0).map(|t| t.ssrc);
        let codecs: HashMap<u32, VideoCodec> = spec
            .tracks
            .iter()
            .filter_map(|t| Some((t.ssrc, VideoCodec::of_wire(t.codec)?)))
            .collect();
        let rtx_pts: Vec<u8> = spec
            .tracks
            .iter()
            .map(|t| t.rtx_pt)
            .chain(spec.video_pts.iter().map(|p| p.1))
            .filter(|&pt| pt != 0)
            .collect();
        let pt_codecs: HashMap<u8, VideoCodec> = VideoCodec::ALL
            .into_iter()
            .flat_map(|c| {
                let (pt, rtx) = spec.video_pt(c.wire()).unwrap_or((0, 0));
                [(pt, c), (rtx, c)]
            })
            .filter(|(pt, _)| *pt != 0)
            .collect();
        let publisher_codec = spec
            .video_codec()
            .and_then(VideoCodec::of_wire)
            .unwrap_or(VideoCodec::H264);
        let abs_send_time = spec.abs_send_time_id();
        let twcc_id = spec.twcc_id();
        let s = session.get() as u8;
        let (Some(remote), Some(local)) = (key(2 * s + 1), key(2 * s + 2)) else {
            panic!("keys");
        };
        let core = &mut self.t.cores[shard];
        let h = core.add_webrtc(self.now, spec).expect("session made");
        let from = addr(5000 + session.get() as u16);
        core.handle_datagram(self.now, h, from, &mut check(session.get()));
        core.handle_dtls_keys(self.now, session, &remote, &local);
        let kind = if publisher {
            Kind::Publisher(Publisher {
                codec: publisher_codec,
                ..Publisher::new(video.unwrap_or(0), 102, abs_send_time, s)
            })
        } else {
            Kind::Player(Player {
                got: BTreeMap::new(),
                highest: HashMap::new(),
                missing: BTreeMap::new(),
                nacks: 0,
                rtx: 0,
                plis: 0,
                keyframes: 0,
                codecs: codecs.clone(),
                rtx_pts,
                pt_codecs,
                pts: Vec::new(),
                last_keyframe: None,
                twcc: Some(twcc_id)
                    .filter(|&id| id != 0)
                    .map(|id| (id, Box::new(crate::twcc::Recorder::new(self.now)))),
            })
        };
        self.clients.push(Client {
            shard,
            handle: Some(h),
            session,
            addr: from,
            up: Path::new(up, 2 * n + 1),
            down: Path::new(down, 2 * n + 2),
            tx: Some(SrtpContext::new(&remote)),
            rx: Some(SrtpContext::new(&local)),
            kind,
        });
        self.settle();
        self.clients.len() - 1
    }

    /// A plain RTP video ingest `spec` on `shard` (an ffmpeg camera) behind
    /// `up`: a publisher that cannot be asked for anything.
    pub fn rtp_ingest(&mut self, shard: usize, spec: IngestSpec, up: Impairment) -> usize {
        let n = self.clients.len() as u64;
        let session = spec.session;
        let pt = spec.payload_type;
        let h = self.t.cores[shard].add_ingest(spec).expect("ingest made");
        self.clients.push(Client {
            shard,
            handle: Some(h),
            session,
            addr: addr(6000 + session.get() as u16),
            up: Path::new(up, 2 * n + 1),
            down: Path::new(Impairment::CLEAN, 2 * n + 2),
            tx: None,
            rx: None,
            kind: Kind::Publisher(Publisher::new(
                0x7000 + session.get() as u32,
                pt,
                0,
                session.get() as u8,
            )),
        });
        self.clients.len() - 1
    }

    /// RTMP client `c`'s connection closes (as a pusher that quits).
    pub fn close_rtmp(&mut self, c: usize) {
        let (shard, idx) = (self.clients[c].shard, self.clients[c].rtmp().idx);
        self.t.cores[shard].rtmp_remove(self.now, idx);
    }

    /// An RTMP client on `shard` that sent `cmd` (publish or play) of
    /// `key` (TCP: in order and lossless, so no path).
    pub fn rtmp(&mut self, shard: usize, cmd: &str, key: &str) -> usize {
        self.next_idx += 1;
        let idx = self.next_idx;
        let core = &mut self.t.cores[shard];
        let mut st = ConnState::default();
        st.conn = Conn::new_after_handshake();
        core.rtmp_insert(idx, st);
        core.handle_rtmp_bytes(self.now, idx, &rtmp_command(cmd, key));
        self.clients.push(Client {
            shard,
            handle: None,
            session: SessionId::new(0),
            addr: addr(0),
            up: Path::new(Impairment::CLEAN, 0),
            down: Path::new(Impairment::CLEAN, 0),
            tx: None,
            rx: None,
            kind: Kind::Rtmp(Rtmp {
                idx,
                videos: Vec::new(),
            }),
        });
        self.settle();
        self.clients.len() - 1
    }

    /// RTMP client `c` pushes an H264 frame at `ms` (a keyframe: the
    /// sequence header first when `config`).
    pub fn push_frame(&mut self, c: usize, ms: u32, key: bool, config: bool) {
        let (shard, idx) = (self.clients[c].shard, self.clients[c].rtmp().idx);
        let mut bytes = Vec::new();
        if config {
            bytes.extend(flv_video_at(ms, &flv_avc_config()));
        }
        let nal: Vec<u8> = if key {
            [&[0x65u8, 0x88][..], &[0x84; 400]].concat()
        } else {
            [&[0x41u8, 0x9a][..], &[0x21; 300]].concat()
        };
        let mut body = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        body.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        body.extend_from_slice(&nal);
        bytes.extend(flv_video_at(ms, &body));
        self.t.cores[shard].handle_rtmp_bytes(self.now, idx, &bytes);
    }

    /// Publisher `c` sends its next frame (a keyframe when one was asked
    /// for), up its path.
    pub fn send_frame(&mut self, c: usize) {
        let now = self.now;
        let ms = (now - self.t0).as_millis() as u32;
        let client = &mut self.clients[c];
        let Kind::Publisher(p) = &mut client.kind else {
            return;
        };
        let key = std::mem::take(&mut p.keyframe_wanted);
        let mut nals: Vec<Vec<u8>> = Vec::new();
        match p.codec {
            VideoCodec::Vp8 => {
                // RFC 7741: X, I (a 7-bit picture id); S on the frame's
                // first packet, whose frame tag says key or not.
                let pic = (p.frames & 0x7f) as u8;
                for i in 0..p.slices {
                    let start = if i == 0 { 0x10 } else { 0 };
                    let mut payload = vec![0x80 | start, 0x80, pic];
                    if i == 0 && key {
                        payload.extend_from_slice(&[0x50, 0x2a, 0x00, 0x9d, 0x01, 0x2a]);
                    } else if i == 0 {
                        payload.extend_from_slice(&[0x51, 0x2a, 0x00]);
                    }
                    payload.extend(std::iter::repeat_n(p.fill, p.slice_bytes));
                    nals.push(payload);
                }
            }
            _ => {
                if key {
                    nals.push(SPS.to_vec());
                    nals.push(vec![0x68, 0xce, 0x3c, 0x80]);
                }
                for _ in 0..p.slices {
                    let head: &[u8] = if key { &[0x65, 0x88] } else { &[0x41, 0x9a] };
                    nals.push([head, &vec![p.fill; p.slice_bytes]].concat());
                }
            }
        }
        p.frames += 1;
        p.keyframes += key as u32;
        let ts = ms.wrapping_mul(90);
        let last = nals.len() - 1;
        for (i, nal) in nals.into_iter().enumerate() {
            let mut pkt = rtp_header(
                p.pt,
                p.seq,
                ts,
                p.ssrc,
                i == last,
                p.abs_send_time,
                now - self.t0,
            );
            pkt.extend_from_slice(&nal);
            p.history.insert(p.seq, pkt.clone());
            p.seq = p.seq.wrapping_add(1);
            // An RTP ingest without SRTP sends it as it is.
            let sent = match client.tx.as_mut() {
                Some(tx) => protect(&mut pkt, |b, n| tx.protect_rtp(b, n)),
                None => true,
            };
            if sent {
                client.up.send(now, pkt);
            }
        }
    }

    /// Player `c` asks for a keyframe of its line `media_ssrc`.
    pub fn send_pli(&mut self, c: usize, media_ssrc: u32) {
        let client = &mut self.clients[c];
        let mut buf = vec![0u8; 64];
        let n = rtcp::write_pli(&mut buf, 0xc1, media_ssrc);
        buf.truncate(n);
        client.player().plis += 1;
        send_rtcp(client, self.now, buf);
    }

    /// Runs `ms` of virtual time, a step a millisecond; each of `senders`
    /// sends a frame every 33 ms meanwhile (a WebRTC publisher a keyframe
    /// when asked, an RTMP push one every [`Net::push_gop`]).
    pub fn run(&mut self, ms: u64, senders: &[usize]) {
        for _ in 0..ms {
            self.now += Duration::from_millis(1);
            let elapsed = (self.now - self.t0).as_millis() as u64;
            if elapsed.is_multiple_of(33) {
                for &c in senders {
                    match self.clients[c].kind {
                        Kind::Publisher(_) => self.send_frame(c),
                        Kind::Rtmp(_) => {
                            let ms = elapsed as u32;
                            let gop = self.push_gop.as_millis() as u64;
                            self.push_frame(c, ms, elapsed.is_multiple_of(gop), false)
                        }
                        Kind::Player(_) => {}
                    }
                }
            }
            self.step(elapsed.is_multiple_of(NACK_EVERY.as_millis() as u64));
        }
    }

    /// One step at `now`: what arrived goes in, what is due fires, what
    /// came out goes down the paths or to the RTMP clients.
    fn step(&mut self, nack_round: bool) {
        let now = self.now;
        for c in 0..self.clients.len() {
            let (shard, Some(h), from) = (
                self.clients[c].shard,
                self.clients[c].handle,
                self.clients[c].addr,
            ) else {
                continue;
            };
            while let Some(mut d) = self.clients[c].up.arrived(now) {
                if let Some(inbound) = self.t.cores[shard].handle_datagram(now, h, from, &mut d) {
                    let plain = d[..inbound.len].to_vec();
                    self.t.fan_out(shard, now, &inbound, &plain);
                }
            }
        }
        for core in &mut self.t.cores {
            if core.poll_timeout() <= now {
                core.handle_timeout(now, 0);
            }
        }
        self.settle();
        for c in 0..self.clients.len() {
            while let Some(d) = self.clients[c].down.arrived(now) {
                self.receive(c, d);
            }
            if nack_round {
                self.nack(c);
            }
        }
    }

    /// Carries the relay lanes until quiet, and takes what each shard
    /// sent: datagrams down their client's path, RTMP players' messages.
    fn settle(&mut self) {
        let now = self.now;
        self.t.settle(now);
        let mut stats = Vec::new();
        for s in 0..2 {
            for (h, d) in std::mem::take(&mut self.t.sent[s]) {
                if let Some(c) = self.client_of(s, h) {
                    self.clients[c].down.send(now, d);
                }
            }
            for o in std::mem::take(&mut self.t.outputs[s]) {
                match o {
                    Output::Transmit(t) => {
                        if let Some(c) = self.client_of(s, t.from) {
                            self.clients[c].down.send(now, t.data);
                        }
                    }
                    Output::Rtmp(Action::Wake(idx)) => {
                        let q = self.t.cores[s].rtmp_queue(idx);
                        let msgs = q.map(|q| q.take_messages()).unwrap_or_default();
                        if let Some(c) = self.clients.iter_mut().find(|c| {
                            c.shard == s && matches!(&c.kind, Kind::Rtmp(r) if r.idx == idx)
                        }) {
                            let videos = msgs.into_iter().filter(|m| m.type_id == types::VIDEO);
                            c.rtmp().videos.extend(videos);
                        }
                    }
                    Output::Rtmp(Action::Close { idx, .. } | Action::Handoff { idx, .. }) => {
                        self.t.cores[s].rtmp_remove(now, idx);
                    }
                    Output::Event(e) => self.events.push(e),
                    Output::Transcode {
                        job:
                            Job::Transcode {
                                stream,
                                n,
                                ms,
                                key,
                                frame,
                                ..
                            },
                        ..
                    } => {
                        self.transcoded.push((s, n, key, frame.len()));
                        let mut tags = Vec::new();
                        if key {
                            tags.push((ms, flv_avc_config()));
                        }
                        let nal: &[u8] = if key {
                            &[0x65, 0x88, 0x84]
                        } else {
                            &[0x41, 0x9a, 0x21]
                        };
                        let mut body = vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0, 0, 0, 0, 3];
                        body.extend_from_slice(nal);
                        tags.push((ms, body));
                        self.t.cores[s].handle_transcoded(now, Done::Transcoded { stream, tags });
                    }
                    _ => {}
                }
            }
            self.t.cores[s].take_dirty_stats(&mut stats, usize::MAX);
        }
        for st in stats {
            self.stats.insert(st.session, st);
        }
    }

    fn client_of(&self, shard: usize, h: Handle) -> Option<usize> {
        self.clients
            .iter()
            .position(|c| c.shard == shard && c.handle == Some(h))
    }

    /// Client `c` reads datagram `d` from the gateway.
    fn receive(&mut self, c: usize, mut d: Vec<u8>) {
        let now = self.now;
        let client = &mut self.clients[c];
        if d.len() < 12 || d[0] >> 6 != 2 {
            return; // STUN
        }
        let Some(rx) = client.rx.as_mut() else { return };
        if is_rtcp(&d) {
            let Ok(n) = rx.unprotect_rtcp(&mut d) else {
                return;
            };
            d.truncate(n);
            let mut nacks = Vec::new();
            let mut plis = 0;
            rtcp::walk(&d, |f| match f {
                Feedback::Nack { pid, blp, .. } => nacks.extend(Feedback::nacked(pid, blp)),
                Feedback::KeyframeRequest { .. } => plis += 1,
                _ => {}
            });
            let rembs = remb_estimates(&d);
            if let Kind::Publisher(p) = &mut client.kind {
                p.plis += plis;
                p.keyframe_wanted |= plis > 0;
                p.rembs.extend(rembs);
                p.nacked += nacks.len();
                for seq in nacks {
                    let Some(orig) = p.history.get(&seq) else {
                        continue;
                    };
                    // RFC 4588: its own stream and sequence, the
                    // original sequence number first in the payload.
                    let Ok(h) = RtpHeader::parse(orig) else {
                        continue;
                    };
                    let mut pkt = orig[..h.len].to_vec();
                    RtpHeader::rewrite(&mut pkt, 103, p.rtx_seq, h.timestamp, rtx_ssrc(p.ssrc));
                    pkt.extend_from_slice(&seq.to_be_bytes());
                    pkt.extend_from_slice(&orig[h.len..]);
                    p.rtx_seq = p.rtx_seq.wrapping_add(1);
                    p.resent += 1;
                    let tx = client.tx.as_mut().expect("keyed");
                    if protect(&mut pkt, |b, n| tx.protect_rtp(b, n)) {
                        client.up.send(now, pkt);
                    }
                }
            }
            return;
        }
        let Ok(n) = rx.unprotect_rtp(&mut d) else {
            return;
        };
        d.truncate(n);
        let Kind::Player(p) = &mut client.kind else {
            return;
        };
        let Ok(h) = RtpHeader::parse(&d) else { return };
        p.pts.push(h.pt);
        if let Some((id, r)) = &mut p.twcc {
            if let Some(seq) = crate::twcc::sequence(&d[..h.len], *id) {
                r.record(seq, now);
            }
        }
        let (ssrc, seq, payload) = if p.rtx_pts.contains(&h.pt) {
            // RTX: the original sequence number leads the payload.
            let Some(osn) = d.get(h.len..h.len + 2) else {
                return;
            };
            p.rtx += 1;
            let seq = u16::from_be_bytes([osn[0], osn[1]]);
            (rtx_ssrc(h.ssrc), seq, d[h.len + 2..].to_vec())
        } else {
            (h.ssrc, h.seq_no, d[h.len..].to_vec())
        };
        let top = p.highest.get(&ssrc).copied();
        let ext = match top {
            None => seq as u64 + (1 << 16),
            Some(top) => {
                let delta = seq.wrapping_sub(top as u16) as i16 as i64;
                (top as i64 + delta) as u64
            }
        };
        if let Some(top) = top {
            for gap in top + 1..ext {
                p.missing
                    .entry((ssrc, gap))
                    .or_insert((now - NACK_RETRY, 0));
            }
        }
        if top.is_none_or(|t| ext > t) {
            p.highest.insert(ssrc, ext);
        }
        p.missing.remove(&(ssrc, ext));
        // The codec of its payload type (its RTX type's for a resend), else
        // its line's.
        let codec = (p.pt_codecs.get(&h.pt).copied())
            .or_else(|| p.codecs.get(&ssrc).copied())
            .unwrap_or(VideoCodec::H264);
        if codec.starts_keyframe(&payload) && p.last_keyframe != Some(h.timestamp) {
            p.last_keyframe = Some(h.timestamp);
            p.keyframes += 1;
        }
        p.got.entry(ssrc).or_default().insert(ext, payload);
    }

    /// Player `c` NACKs the gaps due a NACK (ten tries each).
    fn nack(&mut self, c: usize) {
        let now = self.now;
        let client = &mut self.clients[c];
        let Kind::Player(p) = &mut client.kind else {
            return;
        };
        let mut due = Vec::new();
        for (&(ssrc, ext), (last, tries)) in p.missing.iter_mut() {
            if *tries < 10 && now - *last >= NACK_RETRY {
                *last = now;
                *tries += 1;
                due.push((ssrc, ext as u16));
            }
        }
        p.nacks += due.len();
        let feedback = match &mut p.twcc {
            Some((_, r)) if r.due(now) => {
                let mut buf = vec![0u8; 1500];
                let n = r.feedback(now, 0xc1, 0, &mut buf);
                buf.truncate(n);
                (n > 0).then_some(buf)
            }
            _ => None,
        };
        for (ssrc, seq) in due {
            let mut buf = vec![0u8; 64];
            let n = rtcp::write_nack(&mut buf, 0xc1, ssrc, seq, 0);
            buf.truncate(n);
            send_rtcp(client, now, buf);
        }
        if let Some(buf) = feedback {
            send_rtcp(client, now, buf);
        }
    }
}

fn send_rtcp(client: &mut Client, now: Instant, mut buf: Vec<u8>) {
    let tx = client.tx.as_mut().expect("keyed");
    if protect(&mut buf, |b, n| tx.protect_rtcp(b, n)) {
        client.up.send(now, buf);
    }
}

/// An RTP header (with abs-send-time under `abs_id` if not 0, at `since`).
fn rtp_header(
    pt: u8,
    seq: u16,
    ts: u32,
    ssrc: u32,
    marker: bool,
    abs_id: u8,
    since: Duration,
) -> Vec<u8> {
    let mut p = vec![
        if abs_id != 0 { 0x90 } else { 0x80 },
        pt | if marker { 0x80 } else { 0 },
    ];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&ts.to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    if abs_id != 0 {
        // 6.18 fixed-point seconds, 24 bits (the abs-send-time draft).
        let v = ((since.as_micros() as u64) << 18) / 1_000_000;
        let v = (v & 0xff_ffff) as u32;
        p.extend_from_slice(&[0xbe, 0xde, 0, 1, abs_id << 4 | 2]);
        p.extend_from_slice(&v.to_be_bytes()[1..]);
    }
    p
}

/// The REMB estimates in compound RTCP `d`.
fn remb_estimates(mut d: &[u8]) -> Vec<u64> {
    let mut out = Vec::new();
    while d.len() >= 4 {
        let len = (u16::from_be_bytes([d[2], d[3]]) as usize + 1) * 4;
        let Some(p) = d.get(..len) else { break };
        if p[1] == 206 && p[0] & 0x1f == 15 && p.get(12..16) == Some(b"REMB") && p.len() >= 20 {
            let exp = p[17] >> 2;
            let mantissa = ((p[17] as u64 & 3) << 16) | (p[18] as u64) << 8 | p[19] as u64;
            out.push(mantissa << exp);
        }
        d = &d[len..];
    }
    out
}
