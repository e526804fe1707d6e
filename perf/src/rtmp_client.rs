//! The rtmp scenario's clients: one RTMP publisher, on rml_rtmp's sans-IO
//! client session, that paces the clip in real time and stamps each video
//! frame with its send time, and many players on one epoll thread, RTMP
//! players (rml_rtmp again) and HTTP-FLV players (a plain HTTP/1.1 `GET`
//! and [`crate::http_flv`]'s streaming reader), that count what arrives,
//! when the first keyframe came, and each frame's delay: one
//! [`Tally::media`] for both kinds, fed an RTMP message's payload or an FLV
//! tag's body (the same bytes).
//!
//! ```text
//! publisher ─connect/publish─▶ server ─▶ RTMP players: handshake → connect → play → messages ─┐
//!   clip tags at their time,           └▶ HTTP-FLV players: GET /live/KEY.flv → 200 → FLV tags ┤
//!   SEI send time in each frame                                                               ▼
//!                                         Tally::media: first keyframe → time to first frame,
//!                                         stamped frames in the window → delay, count
//! ```
//!
//! The drive loop ([`play`]), one turn:
//! 1. connect the players whose time on the ramp has come (the two kinds
//!    interleaved along it; blocking connects, loopback), send the first
//!    bytes (RTMP C0+C1, or the HTTP request), make the socket non-blocking
//!    and add it to the epoll set, its index in `players` as the event's data;
//! 2. wait at most 2 ms for readable sockets;
//! 3. read each ready socket dry into one 256 KiB buffer, and feed the bytes
//!    to its player's stage (RTMP: handshake → session → events; HTTP-FLV:
//!    the answer's head → de-chunking → tags), then write what the player
//!    could not send before (RTMP answers; rare).
//!
//! A player the server refuses or closes, or whose bytes make no sense,
//! fails with the reason and keeps what it counted until then; at the end
//! each player's counts go to its kind's [`Group`].

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent as Ev, ClientSessionResult,
    PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;

use crate::flv::{self, Tag};
use crate::http_flv::{self, HttpFlv};

/// The RTMP application both servers are asked for.
const APP: &str = "live";

/// When things happen, shared by the publisher and the players. Frames sent
/// (publisher) or received (players) count when their send time falls in
/// `window`.
#[derive(Clone, Copy)]
pub struct Plan {
    pub t0: Instant,
    /// Players connect evenly spread over this span (one GOP or more, so
    /// joins land at every point of a GOP).
    pub ramp: (Instant, Instant),
    pub window: (Instant, Instant),
    /// Everything stops.
    pub end: Instant,
}

impl Plan {
    /// Whether a frame sent at `sent_ns` (since `t0`) counts.
    fn in_window(&self, sent_ns: u64) -> bool {
        self.measuring(self.t0 + Duration::from_nanos(sent_ns))
    }

    /// Whether `at` is in the window (what arrives then is counted).
    fn measuring(&self, at: Instant) -> bool {
        at >= self.window.0 && at < self.window.1
    }
}

fn write_results(s: &mut TcpStream, results: Vec<ClientSessionResult>) -> Result<Vec<Ev>, String> {
    let mut events = Vec::new();
    for r in results {
        match r {
            ClientSessionResult::OutboundResponse(p) => {
                s.write_all(&p.bytes).map_err(|e| e.to_string())?
            }
            ClientSessionResult::RaisedEvent(e) => events.push(e),
            ClientSessionResult::UnhandleableMessageReceived(_) => {}
        }
    }
    Ok(events)
}

/// Connects, shakes hands and asks for the app (blocking; the publisher).
fn connect_blocking(addr: SocketAddr) -> Result<(TcpStream, ClientSession), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("RTMP connect {addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut hs = Handshake::new(PeerType::Client);
    let p0p1 = hs
        .generate_outbound_p0_and_p1()
        .map_err(|e| format!("{e:?}"))?;
    s.write_all(&p0p1).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    let rest = loop {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("RTMP handshake: {e}"))?;
        if n == 0 {
            return Err("RTMP server closed during the handshake".into());
        }
        match hs.process_bytes(&buf[..n]).map_err(|e| format!("{e:?}"))? {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).map_err(|e| e.to_string())?
            }
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                s.write_all(&response_bytes).map_err(|e| e.to_string())?;
                break remaining_bytes;
            }
        }
    };
    let (mut session, _) =
        ClientSession::new(ClientSessionConfig::new()).map_err(|e| format!("{e:?}"))?;
    let r = session
        .request_connection(APP.into())
        .map_err(|e| format!("{e:?}"))?;
    write_results(&mut s, vec![r])?;
    let mut pending = rest;
    loop {
        let results = session
            .handle_input(&pending)
            .map_err(|e| format!("{e:?}"))?;
        for e in write_results(&mut s, results)? {
            match e {
                Ev::ConnectionRequestAccepted => return Ok((s, session)),
                Ev::ConnectionRequestRejected { description } => {
                    return Err(format!("RTMP connect refused: {description}"))
                }
                _ => {}
            }
        }
        let n = s.read(&mut buf).map_err(|e| format!("RTMP connect: {e}"))?;
        if n == 0 {
            return Err("RTMP server closed the connection".into());
        }
        pending = buf[..n].to_vec();
    }
}

/// What the publisher did.
pub struct Published {
    /// Stamped video frames whose send time is in the window.
    pub frames_in_window: u64,
    /// Video messages (frames, and the clip's end-of-sequence once a lap)
    /// whose send time is in the window.
    pub video_in_window: u64,
    pub bytes: u64,
}

/// Publishes `tags` on `key`, in real time from the plan's start, looping
/// the clip, until the plan's end. Each video frame carries its send time.
pub fn publish(addr: SocketAddr, key: &str, tags: &[Tag], plan: Plan) -> Result<Published, String> {
    let (mut s, mut session) = connect_blocking(addr)?;
    let r = session
        .request_publishing(key.into(), PublishRequestType::Live)
        .map_err(|e| format!("{e:?}"))?;
    write_results(&mut s, vec![r])?;
    let mut buf = vec![0u8; 65536];
    'accepted: loop {
        let n = s.read(&mut buf).map_err(|e| format!("RTMP publish: {e}"))?;
        if n == 0 {
            return Err(format!("RTMP server refused to let us publish {key}"));
        }
        let results = session
            .handle_input(&buf[..n])
            .map_err(|e| format!("{e:?}"))?;
        for e in write_results(&mut s, results)? {
            if matches!(e, Ev::PublishRequestAccepted) {
                break 'accepted;
            }
        }
    }
    let clip_ms = tags.iter().map(|t| t.ms).max().unwrap_or(0) + 33;
    let send = |s: &mut TcpStream, session: &mut ClientSession, t: &Tag, body: Vec<u8>, ms| {
        let ts = RtmpTimestamp::new(ms);
        let body = Bytes::from(body);
        let r = if t.kind == flv::VIDEO {
            session.publish_video_data(body, ts, false)
        } else {
            session.publish_audio_data(body, ts, false)
        };
        write_results(s, vec![r.map_err(|e| format!("{e:?}"))?]).map(|_| ())
    };
    let mut out = Published {
        frames_in_window: 0,
        video_in_window: 0,
        bytes: 0,
    };
    for t in tags.iter().filter(|t| t.is_config()) {
        send(&mut s, &mut session, t, t.body.clone(), 0)?;
    }
    let start = Instant::now();
    for lap in 0u32.. {
        for t in tags.iter().filter(|t| !t.is_config()) {
            let ms = lap * clip_ms + t.ms;
            let due = start + Duration::from_millis(ms as u64);
            if due >= plan.end {
                return Ok(out);
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut body = t.body.clone();
            if t.kind == flv::VIDEO {
                let now = plan.t0.elapsed().as_nanos() as u64;
                let counts = plan.in_window(now) as u64;
                out.video_in_window += counts;
                if flv::is_video_frame(&body) {
                    flv::stamp(&mut body, now);
                    out.frames_in_window += counts;
                }
            }
            out.bytes += body.len() as u64;
            send(&mut s, &mut session, t, body, ms)?;
            // Acknowledgements and pings from the server: answer, never wait.
            // SAFETY: recv into our buffer on our socket, without blocking.
            let n = unsafe {
                libc::recv(
                    s.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                let results = session
                    .handle_input(&buf[..n as usize])
                    .map_err(|e| format!("{e:?}"))?;
                write_results(&mut s, results)?;
            } else if n == 0 {
                return Err("RTMP server closed the publisher's connection".into());
            }
        }
    }
    Ok(out)
}

enum Stage {
    /// Both boxed: kilobytes of state each, one at a time per player.
    Handshake(Box<Handshake>),
    Session(Box<ClientSession>),
    /// An HTTP-FLV player, its request sent: the answer, then the stream.
    Http(Box<HttpFlv>),
    Failed(String),
}

/// What one player received, whatever its kind.
struct Tally {
    connected_at: Instant,
    /// Connect → first keyframe.
    first_keyframe: Option<Duration>,
    /// Bytes read and audio/video messages received in the window (by arrival).
    bytes: u64,
    messages: u64,
    /// The video ones among `messages`.
    video_messages: u64,
    /// Stamped frames sent in the window that reached this player.
    frames: u64,
}

impl Tally {
    /// One message as it arrives: `kind` is the RTMP message type or FLV
    /// tag type (the same numbers), `body` its payload, the FLV tag body
    /// either way. Only audio and video count; a stamped frame's delay goes
    /// to `latencies_us`.
    fn media(
        &mut self,
        now: Instant,
        kind: u8,
        body: &[u8],
        plan: &Plan,
        latencies_us: &mut Vec<u64>,
    ) {
        if kind != flv::VIDEO && kind != flv::AUDIO {
            return;
        }
        let measuring = plan.measuring(now) as u64;
        self.messages += measuring;
        if kind != flv::VIDEO {
            return;
        }
        self.video_messages += measuring;
        if self.first_keyframe.is_none() && flv::is_keyframe(body) {
            self.first_keyframe = Some(now - self.connected_at);
        }
        if let Some(sent) = flv::stamped(body) {
            if plan.in_window(sent) {
                self.frames += 1;
                let now_ns = (now - plan.t0).as_nanos() as u64;
                latencies_us.push(now_ns.saturating_sub(sent) / 1000);
            }
        }
    }
}

/// One player connection.
struct Player {
    sock: TcpStream,
    stage: Stage,
    /// An HTTP-FLV player (else RTMP).
    flv: bool,
    tally: Tally,
    /// Bytes the socket would not take yet (answers are small; rare).
    unsent: Vec<u8>,
}

/// Where players of one kind connect, and how many there are.
#[derive(Clone, Copy)]
pub struct Players {
    pub addr: SocketAddr,
    pub count: usize,
}

/// What the players of one kind saw.
#[derive(Default)]
pub struct Group {
    /// One reason per failed player: it could not connect, the server
    /// refused or closed it, or its bytes made no sense.
    pub failed: Vec<String>,
    pub first_keyframe_ms: Vec<f64>,
    pub never_keyframe: usize,
    pub bytes: u64,
    pub messages: u64,
    pub frames: u64,
    pub latencies_us: Vec<u64>,
    /// One per player that did not fail.
    pub delivered: Vec<Delivery>,
}

/// What one player that did not fail got.
pub struct Delivery {
    /// Stamped frames sent in the window that reached it.
    pub frames: u64,
    /// Video messages that reached it in the window.
    pub video_messages: u64,
}

/// What all players saw, by kind.
#[derive(Default)]
pub struct Played {
    pub rtmp: Group,
    pub flv: Group,
}

impl Played {
    fn group(&mut self, flv: bool) -> &mut Group {
        if flv {
            &mut self.flv
        } else {
            &mut self.rtmp
        }
    }
}

impl Player {
    /// A connected socket (blocking connect: loopback), then non-blocking.
    fn new(addr: SocketAddr, flv: bool, stage: Stage, hello: &[u8]) -> Result<Player, String> {
        let connected_at = Instant::now();
        let what = if flv { "HTTP-FLV" } else { "RTMP" };
        let sock = TcpStream::connect(addr).map_err(|e| format!("{what} connect {addr}: {e}"))?;
        sock.set_nodelay(true).map_err(|e| e.to_string())?;
        sock.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut p = Player {
            sock,
            stage,
            flv,
            tally: Tally {
                connected_at,
                first_keyframe: None,
                bytes: 0,
                messages: 0,
                video_messages: 0,
                frames: 0,
            },
            unsent: Vec::new(),
        };
        p.send(hello);
        Ok(p)
    }

    /// An RTMP player: C0+C1 sent.
    fn rtmp(addr: SocketAddr) -> Result<Player, String> {
        let mut hs = Handshake::new(PeerType::Client);
        let p0p1 = hs
            .generate_outbound_p0_and_p1()
            .map_err(|e| format!("{e:?}"))?;
        Player::new(addr, false, Stage::Handshake(Box::new(hs)), &p0p1)
    }

    /// An HTTP-FLV player of `rtmp://HOST/APP/KEY`'s twin,
    /// `http://ADDR/APP/KEY.flv`: the request sent.
    fn http_flv(addr: SocketAddr, key: &str) -> Result<Player, String> {
        let get = http_flv::request(&format!("/{APP}/{key}.flv"), &addr.to_string());
        let stage = Stage::Http(Box::default());
        Player::new(addr, true, stage, get.as_bytes())
    }

    fn send(&mut self, bytes: &[u8]) {
        self.unsent.extend_from_slice(bytes);
        self.flush();
    }

    fn flush(&mut self) {
        while !self.unsent.is_empty() {
            match self.sock.write(&self.unsent) {
                Ok(n) => {
                    self.unsent.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.stage = Stage::Failed(format!("write: {e}"));
                    return;
                }
            }
        }
    }

    fn results(&mut self, results: Vec<ClientSessionResult>) -> Vec<Ev> {
        let mut events = Vec::new();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => self.send(&p.bytes),
                ClientSessionResult::RaisedEvent(e) => events.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        events
    }

    /// The server closed the connection: failed, with the server's reason
    /// when it gave one (an HTTP refusal).
    fn closed(&mut self) {
        let why = match &self.stage {
            Stage::Failed(_) => return,
            Stage::Http(h) => h.closed(),
            _ => "server closed the connection".into(),
        };
        self.stage = Stage::Failed(why);
    }

    /// Feeds received bytes through the handshake, the session or the
    /// HTTP-FLV reader.
    fn input(&mut self, data: &[u8], key: &str, plan: &Plan, latencies_us: &mut Vec<u64>) {
        let now = Instant::now();
        if plan.measuring(now) {
            self.tally.bytes += data.len() as u64;
        }
        let session_bytes = match &mut self.stage {
            Stage::Failed(_) => return,
            Stage::Http(h) => {
                let tally = &mut self.tally;
                let mut tag = |kind, body: &[u8]| tally.media(now, kind, body, plan, latencies_us);
                if let Err(why) = h.input(data, &mut tag) {
                    self.stage = Stage::Failed(why);
                }
                return;
            }
            Stage::Handshake(hs) => match hs.process_bytes(data) {
                Err(e) => {
                    self.stage = Stage::Failed(format!("handshake: {e:?}"));
                    return;
                }
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    self.send(&response_bytes);
                    return;
                }
                Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                }) => {
                    self.send(&response_bytes);
                    let (mut session, _) = ClientSession::new(ClientSessionConfig::new())
                        .expect("a client session needs no I/O");
                    match session.request_connection(APP.into()) {
                        Ok(r) => {
                            self.results(vec![r]);
                        }
                        Err(e) => {
                            self.stage = Stage::Failed(format!("connect: {e:?}"));
                            return;
                        }
                    }
                    self.stage = Stage::Session(Box::new(session));
                    remaining_bytes
                }
            },
            Stage::Session(_) => data.to_vec(),
        };
        let Stage::Session(session) = &mut self.stage else {
            return;
        };
        let results = match session.handle_input(&session_bytes) {
            Ok(r) => r,
            Err(e) => {
                self.stage = Stage::Failed(format!("session: {e:?}"));
                return;
            }
        };
        for e in self.results(results) {
            match e {
                Ev::ConnectionRequestAccepted => {
                    let Stage::Session(session) = &mut self.stage else {
                        return;
                    };
                    match session.request_playback(key.into()) {
                        Ok(r) => {
                            self.results(vec![r]);
                        }
                        Err(e) => self.stage = Stage::Failed(format!("play: {e:?}")),
                    }
                }
                Ev::ConnectionRequestRejected { description } => {
                    self.stage = Stage::Failed(format!("connect refused: {description}"))
                }
                Ev::VideoDataReceived { data, .. } => {
                    self.tally.media(now, flv::VIDEO, &data, plan, latencies_us)
                }
                Ev::AudioDataReceived { data, .. } => {
                    self.tally.media(now, flv::AUDIO, &data, plan, latencies_us)
                }
                _ => {}
            }
        }
    }
}

/// Whether the `i`-th of `total` players on the ramp is one of the `flv`
/// HTTP-FLV ones: they are spread evenly among the RTMP ones.
fn is_flv(i: usize, flv: usize, total: usize) -> bool {
    (i + 1) * flv / total > i * flv / total
}

/// Connects the `rtmp` players and the `flv` HTTP-FLV players of `key`
/// along the plan's ramp, interleaved, and reads until its end, on this
/// thread.
pub fn play(key: &str, rtmp: Players, flv: Option<Players>, plan: Plan) -> Played {
    let mut out = Played::default();
    let flv = flv.unwrap_or(Players {
        addr: rtmp.addr,
        count: 0,
    });
    let total = rtmp.count + flv.count;
    // SAFETY: plain epoll syscalls on descriptors we own; errors checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1");
    let mut players: Vec<Player> = Vec::with_capacity(total);
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = vec![0u8; 256 * 1024];
    let (ramp0, ramp1) = plan.ramp;
    let step = (ramp1 - ramp0) / total.max(1) as u32;
    // Players started so far, connected or not.
    let mut started = 0;
    loop {
        let now = Instant::now();
        if now >= plan.end {
            break;
        }
        // Players whose time has come.
        while started < total && now >= ramp0 + step * started as u32 {
            let http = is_flv(started, flv.count, total);
            started += 1;
            let p = match http {
                true => Player::http_flv(flv.addr, key),
                false => Player::rtmp(rtmp.addr),
            };
            match p {
                Ok(p) => {
                    let mut ev = libc::epoll_event {
                        events: libc::EPOLLIN as u32,
                        u64: players.len() as u64,
                    };
                    // SAFETY: valid epoll fd, socket fd and event.
                    unsafe {
                        libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, p.sock.as_raw_fd(), &mut ev)
                    };
                    players.push(p);
                }
                Err(e) => out.group(http).failed.push(e),
            }
        }
        // SAFETY: events has room for 256 entries.
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 256, 2) };
        for e in &events[..n.max(0) as usize] {
            let p = &mut players[e.u64 as usize];
            let latencies_us = &mut out.group(p.flv).latencies_us;
            loop {
                match p.sock.read(&mut buf) {
                    Ok(0) => {
                        p.closed();
                        // SAFETY: removing our own socket from our epoll set.
                        unsafe {
                            libc::epoll_ctl(
                                ep,
                                libc::EPOLL_CTL_DEL,
                                p.sock.as_raw_fd(),
                                std::ptr::null_mut(),
                            )
                        };
                        break;
                    }
                    Ok(got) => p.input(&buf[..got], key, &plan, latencies_us),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => {
                        p.stage = Stage::Failed(format!("read: {e}"));
                        break;
                    }
                }
            }
            p.flush();
        }
    }
    // SAFETY: closing the epoll fd we created.
    unsafe { libc::close(ep) };
    for p in players {
        let g = out.group(p.flv);
        let t = p.tally;
        match p.stage {
            Stage::Failed(why) => g.failed.push(why),
            _ => g.delivered.push(Delivery {
                frames: t.frames,
                video_messages: t.video_messages,
            }),
        }
        match t.first_keyframe {
            Some(d) => g.first_keyframe_ms.push(d.as_secs_f64() * 1000.0),
            None => g.never_keyframe += 1,
        }
        g.bytes += t.bytes;
        g.messages += t.messages;
        g.frames += t.frames;
    }
    out
}
