//! Harness for end-to-end tests: runs the real `controlplane` and `dataplane`
//! binaries on loopback, talks to the HTTP API, and drives ffmpeg.
//!
//! The binaries come from the same target directory as the test executable,
//! so run `cargo build --workspace` first (the README's test command does).
//! Every process a test starts is stopped when its handle drops.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use serde_json::{json, Value};

/// `target/debug` (or release) holding this test executable.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps layout")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

/// `N` distinct free TCP ports for servers under test, from below the
/// kernel's ephemeral range (32768-60999 here). A port the kernel hands out
/// for `:0` is an ephemeral one: released for the server to bind, it can be
/// taken first by any client's outgoing connection (CI saw the
/// controlplane fail with "Address already in use"). Ports here are never
/// handed out that way; a counter (from a per-process start) keeps this
/// process's picks apart, and each is checked bindable.
pub fn free_tcp_ports<const N: usize>() -> [u16; N] {
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() % 60) * 200;
    std::array::from_fn(|_| loop {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::SeqCst)) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    })
}

/// An even UDP port `p` with `p..p+4` free (video RTP/RTCP, audio RTP/RTCP).
pub fn free_udp_quad() -> u16 {
    for _ in 0..200 {
        let p = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
            & !1;
        if !(1024..=65000).contains(&p) {
            continue;
        }
        let socks: Vec<_> = (0..4)
            .map(|i| UdpSocket::bind(("127.0.0.1", p + i)))
            .collect();
        if socks.iter().all(Result::is_ok) {
            return p;
        }
    }
    panic!("no four consecutive free UDP ports");
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name no other call in this process (or another test process) uses.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// A distinct UDP range per gateway in this process, so parallel tests do not collide.
fn media_ports(count: u16) -> (u16, u16) {
    let slot = SEQ.fetch_add(1, Ordering::SeqCst) as u16 % 40;
    let base = 42000 + (std::process::id() as u16 % 20) * 1000 + slot * 25;
    (base, base + count - 1)
}

/// Sends SIGTERM, then SIGKILL if the process has not gone within `grace`.
pub fn stop(child: &mut Child, grace: Duration) {
    if child.try_wait().ok().flatten().is_some() {
        return;
    }
    // SAFETY: kill(2) on a child we own.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for a child to exit by itself, stopping it after `timeout`;
/// returns whether it exited on its own.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop(child, Duration::from_secs(1));
    false
}

pub fn kill9(pid: u32) {
    // SAFETY: kill(2) with SIGKILL on a process this test started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

/// How long [`wait_for`] is given for what takes well under a second on an
/// idle machine (counters reported every 250 ms, a session ended, a port
/// freed): CI runs the tests in parallel on two busy cores.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// Polls `probe` every 50 ms until `done` accepts what it returned, and
/// returns that. Panics once `limit` has passed, naming `what` was awaited
/// and the last value seen.
///
/// The way to check what the gateway reports (counters, states, ports)
/// rather than a fixed sleep: a sleep is too short on a busy machine and
/// then asserts a stale value. A wait for a condition that must never hold
/// (a counter staying 0) passes by luck; wait instead for something that
/// happens after (a later packet counted: [`Gateway::settled_ingest`]) and
/// then assert.
pub fn wait_for<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> T,
    mut done: impl FnMut(&T) -> bool,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let seen = probe();
        if done(&seen) {
            return seen;
        }
        if Instant::now() >= deadline {
            panic!("waited {limit:?} for {what}; last seen: {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether some socket is bound to UDP `port` (read from /proc, so the
/// check never races the program about to bind it).
pub fn udp_port_bound(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let wanted = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .any(|local| local.ends_with(&wanted))
}

/// Waits until every one of `ports` is bound: a receiver (an ffmpeg started
/// on an egress's SDP) listens before the first packet is sent. Under
/// parallel tests ffmpeg's start-up took over 500 ms.
pub fn wait_udp_bound(ports: &[u16]) {
    wait_for(
        "the receivers to listen (ports not bound yet)",
        PATIENCE,
        || {
            ports
                .iter()
                .copied()
                .filter(|&p| !udp_port_bound(p))
                .collect::<Vec<_>>()
        },
        Vec::is_empty,
    );
}

/// Captures a child's stderr into a file so a failing test can show it.
fn log_file(name: &str) -> (std::fs::File, PathBuf) {
    let dir = target_dir().join("e2e-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.log"));
    (std::fs::File::create(&path).unwrap(), path)
}

/// The admin key every test gateway runs with.
pub const ADMIN_KEY: &str = "e2e-admin-key-0123456789";

/// A running gateway: the controlplane (which spawns the dataplane), or in
/// attach mode a dataplane and a controlplane started separately.
pub struct Gateway {
    pub api: String,
    /// `rtmp://127.0.0.1:{rtmp}/live/ROOM`
    pub rtmp: u16,
    /// `http://127.0.0.1:{http_flv}/live/ROOM.flv`
    pub http_flv: u16,
    pub shm: String,
    pub ports: (u16, u16),
    pub http: u16,
    pub shards: u32,
    pub controlplane: Option<Child>,
    pub dataplane: Option<Child>,
    pub log: PathBuf,
    /// Extra environment for the controlplane (and the dataplane it spawns).
    pub env: Vec<(String, String)>,
}

impl Gateway {
    /// Spawn mode: one command starts the product.
    pub fn start(shards: u32, extra: &[&str]) -> Gateway {
        let mut g = Gateway::new(shards, 25);
        g.spawn_controlplane(false, extra);
        g.wait_healthy(Duration::from_secs(20));
        g
    }

    /// Spawn mode with `ports` UDP media ports from a range of its own
    /// (32000-35199), for a test that opens more sessions than the usual 25.
    pub fn start_with_ports(shards: u32, ports: u16, extra: &[&str]) -> Gateway {
        assert!(ports <= 400);
        let mut g = Gateway::new(shards, 25);
        let base = 32000 + (std::process::id() as u16 % 8) * 400;
        g.ports = (base, base + ports - 1);
        g.spawn_controlplane(false, extra);
        g.wait_healthy(Duration::from_secs(20));
        g
    }

    /// Spawn mode with extra environment (inherited by the dataplane).
    pub fn start_with_env(shards: u32, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut g = Gateway::new(shards, 25);
        g.env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        g.spawn_controlplane(false, extra);
        g.wait_healthy(Duration::from_secs(20));
        g
    }

    /// The sum over shards of every `/metrics` sample named `name` whose
    /// labels include `label` (e.g. `limit="rtmp_memory"`; "" for all).
    pub fn metric(&self, name: &str, label: &str) -> f64 {
        let text = ureq::get(&format!("{}/metrics", self.api))
            .call()
            .expect("GET /metrics")
            .into_string()
            .unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(k, _)| {
                (k.starts_with(&format!("{name}{{")) || *k == name) && k.contains(label)
            })
            .filter_map(|(_, v)| v.parse::<f64>().ok())
            .sum()
    }

    /// Attach mode: the dataplane runs as its own process.
    pub fn start_attached(shards: u32) -> Gateway {
        let mut g = Gateway::new(shards, 25);
        g.spawn_dataplane();
        g.spawn_controlplane(true, &[]);
        g.wait_healthy(Duration::from_secs(20));
        g
    }

    fn new(shards: u32, ports: u16) -> Gateway {
        let shm = unique("mgw-test");
        let [http, rtmp, http_flv] = free_tcp_ports();
        Gateway {
            api: format!("http://127.0.0.1:{http}"),
            rtmp,
            http_flv,
            log: PathBuf::new(),
            shm,
            ports: media_ports(ports),
            http,
            shards,
            controlplane: None,
            dataplane: None,
            env: Vec::new(),
        }
    }

    pub fn spawn_dataplane(&mut self) {
        let (f, _) = log_file(&format!("{}-dataplane", self.shm));
        let child = Command::new(bin("dataplane"))
            .args([
                "--shards",
                &self.shards.to_string(),
                "--shm-name",
                &self.shm,
                "--no-pin",
                "--rtmp",
                &format!("127.0.0.1:{}", self.rtmp),
                "--http-flv",
                &format!("127.0.0.1:{}", self.http_flv),
            ])
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("start dataplane");
        self.dataplane = Some(child);
    }

    pub fn spawn_controlplane(&mut self, attach: bool, extra: &[&str]) {
        let (f, path) = log_file(&format!("{}-controlplane", self.shm));
        self.log = path;
        let ports = format!("{}-{}", self.ports.0, self.ports.1);
        let mut cmd = Command::new(bin("controlplane"));
        cmd.args([
            "--http",
            &format!("127.0.0.1:{}", self.http),
            "--shards",
            &self.shards.to_string(),
        ])
        .args(["--shm-name", &self.shm, "--udp-ports", &ports, "--no-pin"])
        .args(["--rtmp", &format!("127.0.0.1:{}", self.rtmp)])
        .args(["--http-flv", &format!("127.0.0.1:{}", self.http_flv)])
        .args(["--admin-key", ADMIN_KEY])
        .args(extra)
        .envs(self.env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(f);
        if attach {
            cmd.arg("--attach");
        }
        self.controlplane = Some(cmd.spawn().expect("start controlplane"));
    }

    /// The operator API (`/v1/*`) gets the admin key; WHIP/WHEP do not.
    fn authed(&self, r: ureq::Request, path: &str) -> ureq::Request {
        if path.starts_with("/v1/") {
            r.set("authorization", &format!("Bearer {ADMIN_KEY}"))
        } else {
            r
        }
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok((200, _)) = self.try_get("/healthz") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gateway not healthy in {timeout:?}; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_get(&self, path: &str) -> Result<(u16, Value), String> {
        match self
            .authed(ureq::get(&format!("{}{path}", self.api)), path)
            .timeout(Duration::from_secs(5))
            .call()
        {
            Ok(r) => Ok((r.status(), r.into_json().unwrap_or(Value::Null))),
            Err(ureq::Error::Status(code, r)) => Ok((code, r.into_json().unwrap_or(Value::Null))),
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn post_raw(&self, path: &str, body: &str) -> (u16, Value) {
        let r = self
            .authed(ureq::post(&format!("{}{path}", self.api)), path)
            .timeout(Duration::from_secs(10))
            .set("content-type", "application/json")
            .send_string(body);
        match r {
            Ok(r) => (r.status(), r.into_json().unwrap_or(Value::Null)),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("POST {path}: {e}"),
        }
    }

    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.post_raw(path, &body.to_string())
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        match self
            .authed(ureq::delete(&format!("{}{path}", self.api)), path)
            .timeout(Duration::from_secs(10))
            .call()
        {
            Ok(r) => (r.status(), Value::Null),
            Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
            Err(e) => panic!("DELETE {path}: {e}"),
        }
    }

    /// Creates a room, asserting 201.
    pub fn room(&self, name: &str) {
        let (code, body) = self.post("/v1/rooms", json!({ "name": name }));
        assert_eq!(code, 201, "create room: {body}");
    }

    /// Creates an ingest, asserting 201; returns the response.
    pub fn ingest(&self, room: &str, body: Value) -> Value {
        let (code, v) = self.post(&format!("/v1/rooms/{room}/ingest/rtp"), body);
        assert_eq!(code, 201, "create ingest: {v}");
        v
    }

    pub fn egress(&self, room: &str, body: Value) -> Value {
        let (code, v) = self.post(&format!("/v1/rooms/{room}/egress/rtp"), body);
        assert_eq!(code, 201, "create egress: {v}");
        v
    }

    /// One session's JSON from `GET /v1/rooms/{room}`.
    pub fn session(&self, room: &str, id: &str) -> Value {
        let (code, v) = self.get(&format!("/v1/rooms/{room}"));
        assert_eq!(code, 200, "{v}");
        v["ingests"]
            .as_array()
            .unwrap()
            .iter()
            .chain(v["egresses"].as_array().unwrap())
            .find(|s| s["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("session {id} not in room {room}: {v}"))
    }

    /// An RTP ingest's session once its counters include everything sent to
    /// it so far. Sends the ingest a marker, a datagram too short to be RTP
    /// (a `malformed` drop, whatever its source), and waits until the session
    /// counts `malformed + 1` such drops: the shard handles the socket's
    /// datagrams in order and reports a session's counters together, so the
    /// counters that show the marker show all that came before it. Pass the
    /// `malformed` drops the ingest had before (0 for a well-formed sender).
    pub fn settled_ingest(&self, room: &str, ingest: &Value, malformed: u64) -> Value {
        let marker = UdpSocket::bind("127.0.0.1:0").unwrap();
        marker
            .send_to(&[0x80, 0], ("127.0.0.1", port_of(ingest)))
            .unwrap();
        let id = id_of(ingest);
        wait_for(
            &format!(
                "ingest {id} to count the marker (malformed = {})",
                malformed + 1
            ),
            PATIENCE,
            || self.session(room, &id),
            |s| s["stats"]["drops"]["malformed"] == malformed + 1,
        )
    }

    pub fn healthz(&self) -> (u16, Value) {
        self.get("/healthz")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(c) = self.controlplane.as_mut() {
            stop(c, Duration::from_secs(3));
        }
        if let Some(d) = self.dataplane.as_mut() {
            stop(d, Duration::from_secs(3));
        }
        let _ = std::fs::remove_file(format!("/dev/shm/{}", self.shm));
    }
}

/// The test clip: 10 s 640x360 30 fps H264 Constrained Baseline (IDR every
/// 2 s, no B-frames) and a 440 Hz Opus tone, in Annex-B MPEG-TS so SPS/PPS
/// travel in-band. Generated once per target directory.
pub fn clip() -> PathBuf {
    static CLIP: OnceLock<PathBuf> = OnceLock::new();
    CLIP.get_or_init(|| clip_sized(640, 360, 440)).clone()
}

/// A clip like [`clip`] at `width`x`height` with a `tone_hz` tone: tests
/// with several participants tell their streams apart by size.
pub fn clip_sized(width: u32, height: u32, tone_hz: u32) -> PathBuf {
    clip_tone(width, height, tone_hz, 0)
}

/// As [`clip_sized`], its tone `gain_db` louder (negative: quieter).
pub fn clip_tone(width: u32, height: u32, tone_hz: u32, gain_db: i32) -> PathBuf {
    let gain = if gain_db == 0 {
        String::new()
    } else {
        format!("{gain_db}db")
    };
    clip_with(
        width,
        height,
        tone_hz,
        &format!("volume={gain_db}dB"),
        &gain,
    )
}

/// As [`clip_sized`], its tone through the audio filter `af` (named `tag`
/// in the file name), e.g. a volume that changes over time.
pub fn clip_with(width: u32, height: u32, tone_hz: u32, af: &str, tag: &str) -> PathBuf {
    let dir = target_dir().join("e2e-media");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!(
        "clip-{width}x{height}-{tone_hz}hz{tag}-h264-opus.ts"
    ));
    if !path.exists() {
        let tmp = dir.join(format!(
            "clip-{width}x{height}.{}.{}.tmp.ts",
            std::process::id(),
            unique("clip")
        ));
        let st = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-y"])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("testsrc=size={width}x{height}:rate=30"),
            ])
            .args([
                "-f",
                "lavfi",
                "-i",
                &format!("sine=frequency={tone_hz}:sample_rate=48000"),
                "-t",
                "10",
            ])
            .args(["-af", af])
            .args([
                "-c:v",
                "libx264",
                "-profile:v",
                "baseline",
                "-level",
                "3.1",
                "-pix_fmt",
                "yuv420p",
            ])
            .args([
                "-preset",
                "veryfast",
                "-tune",
                "zerolatency",
                "-g",
                "60",
                "-keyint_min",
                "60",
            ])
            .args([
                "-sc_threshold",
                "0",
                "-bf",
                "0",
                "-b:v",
                "400k",
                "-c:a",
                "libopus",
                "-b:a",
                "64k",
            ])
            .args(["-bsf:v", "h264_mp4toannexb", "-f", "mpegts"])
            .arg(&tmp)
            .status()
            .expect("ffmpeg must be installed (the README's test command installs it)");
        assert!(st.success(), "generating the test clip failed");
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// A detailed camera picture for Chromium's fake capture device (a y4m
/// file it loops): 1280x720 at 30 fps, a test pattern under moving noise,
/// so the encoder can use all the bitrate it is given (2 s, 83 MB, made once).
pub fn detailed_camera_y4m() -> PathBuf {
    let dir = target_dir().join("e2e-media");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("camera-1280x720-noise.y4m");
    if !path.exists() {
        let tmp = dir.join(format!("{}.tmp.y4m", unique("camera")));
        let st = Command::new("ffmpeg")
            .args(["-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=1280x720:rate=30,noise=alls=40:allf=t+u")
            .args(["-t", "2", "-pix_fmt", "yuv420p", "-f", "yuv4mpegpipe"])
            .arg(&tmp)
            .status()
            .expect("ffmpeg");
        assert!(st.success(), "making the y4m camera failed");
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// Where one track goes: an ingest port and optional SDES key (base64).
pub struct RtpTarget {
    pub port: u16,
    pub srtp_key: Option<String>,
}

fn ffmpeg_output(cmd: &mut Command, t: &RtpTarget, pt: u8) {
    // `rtcpport` = the RTP port: the ingest takes RTCP muxed on its one port.
    let query = format!("?rtcpport={}", t.port);
    cmd.args(["-c", "copy", "-f", "rtp", "-payload_type", &pt.to_string()]);
    match &t.srtp_key {
        Some(k) => {
            cmd.args([
                "-srtp_out_suite",
                "AES_CM_128_HMAC_SHA1_80",
                "-srtp_out_params",
                k,
            ]);
            cmd.arg(format!("srtp://127.0.0.1:{}{query}", t.port));
        }
        None => {
            cmd.arg(format!("rtp://127.0.0.1:{}{query}", t.port));
        }
    }
}

/// How ffmpeg feeds the clip to the gateway.
pub enum Pace {
    /// In real time (`-re`), looping, for this many seconds.
    RealTime { secs: u32 },
    /// As fast as ffmpeg can, the clip played this many times over.
    Unpaced { loops: u32 },
}

/// ffmpeg sends the clip's video and audio to two ingests.
pub fn ffmpeg_send_with(video: &RtpTarget, audio: &RtpTarget, pace: Pace) -> Child {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-nostdin", "-loglevel", "error"]);
    match pace {
        // `-t` as an input option, so both outputs end together.
        Pace::RealTime { secs } => cmd.args(["-re", "-stream_loop", "-1", "-t", &secs.to_string()]),
        Pace::Unpaced { loops } => cmd.args(["-stream_loop", &loops.saturating_sub(1).to_string()]),
    };
    cmd.arg("-i").arg(clip()).args(["-map", "0:v"]);
    ffmpeg_output(&mut cmd, video, 96);
    cmd.args(["-map", "0:a"]);
    ffmpeg_output(&mut cmd, audio, 111);
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ffmpeg sender")
}

/// ffmpeg sends the clip's video and audio, paced in real time, for `secs`.
pub fn ffmpeg_send(video: &RtpTarget, audio: &RtpTarget, secs: u32) -> Child {
    ffmpeg_send_with(video, audio, Pace::RealTime { secs })
}

/// An ffmpeg receiver decoding an SDP's video and audio to frame checksums.
pub struct Receiver {
    child: Child,
    video: PathBuf,
    audio: PathBuf,
    log: PathBuf,
}

impl Receiver {
    /// Starts ffmpeg on `sdp`; it decodes `secs` seconds of media, then exits.
    pub fn start(sdp: &str, secs: u32) -> Receiver {
        let dir = target_dir().join("e2e-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let name = unique("rx");
        let sdp_path = dir.join(format!("{name}.sdp"));
        std::fs::write(&sdp_path, sdp).unwrap();
        let video = dir.join(format!("{name}-video.framecrc"));
        let audio = dir.join(format!("{name}-audio.framecrc"));
        let log = dir.join(format!("{name}.log"));
        let child = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-loglevel",
                "info",
                "-protocol_whitelist",
                "file,udp,rtp,srtp,crypto",
            ])
            .args(["-i"])
            .arg(&sdp_path)
            .args(["-t", &secs.to_string(), "-map", "0:v", "-f", "framecrc"])
            .arg(&video)
            .args(["-t", &secs.to_string(), "-map", "0:a?", "-f", "framecrc"])
            .arg(&audio)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start ffmpeg receiver");
        Receiver {
            child,
            video,
            audio,
            log,
        }
    }

    /// Waits for ffmpeg to finish (killing it after `timeout`); returns the
    /// number of decoded (video, audio) frames and ffmpeg's log.
    pub fn finish(mut self, timeout: Duration) -> (usize, usize, String) {
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        stop(&mut self.child, Duration::from_secs(2));
        let count = |p: &Path| {
            std::fs::File::open(p)
                .map(|f| {
                    BufReader::new(f)
                        .lines()
                        .map_while(Result::ok)
                        .filter(|l| !l.starts_with('#'))
                        .count()
                })
                .unwrap_or(0)
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        (count(&self.video), count(&self.audio), log)
    }
}

/// Ensures the child is reaped even if a test panics between start and wait.
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        stop(&mut self.0, Duration::from_secs(1));
    }
}

pub fn port_of(v: &Value) -> u16 {
    v["port"]
        .as_u64()
        .unwrap_or_else(|| panic!("no port in {v}")) as u16
}

pub fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

/// The repository root (tests/ is one level down).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Pinned client versions (wheels only; see TESTING.md), and the
/// third-party checkers some tests use (Prometheus text parser, OpenAPI
/// validator).
const AIORTC_PACKAGES: [&str; 5] = [
    "aiortc==1.16.0",
    "aiohttp",
    "av==18.1.0",
    "prometheus_client",
    "openapi-spec-validator",
];

/// A Python with aiortc: `<repo>/.venv`, created and filled on first use.
/// `tests/run.sh` prepares it up front; this makes a lone `cargo test` work
/// too. A file lock keeps parallel test binaries from installing at once.
pub fn aiortc_python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = repo_root().join(".venv");
        let py = venv.join("bin/python");
        let ready = |py: &Path| {
            Command::new(py)
                .args([
                    "-c",
                    "import aiortc, aiohttp, av, prometheus_client, openapi_spec_validator",
                ])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let lock = std::fs::File::create(std::env::temp_dir().join("mgw-venv.lock")).unwrap();
        // SAFETY: flock(2) on a file we hold open; released when it closes.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        if !ready(&py) {
            let ok = Command::new("python3")
                .args(["-m", "venv"])
                .arg(&venv)
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "python3 -m venv failed: install python3-venv (tests/run.sh does)"
            );
            let ok = Command::new(venv.join("bin/pip"))
                .args(["install", "-q"])
                .args(AIORTC_PACKAGES)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "pip install {AIORTC_PACKAGES:?} failed");
        }
        assert!(ready(&py), "aiortc not importable from {}", py.display());
        py
    })
    .clone()
}

fn aiortc_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(aiortc_python());
    cmd.arg(repo_root().join("tests/webrtc/aiortc_client.py"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    cmd
}

/// The network impairment relay (`tests/impair.py`) in front of `gw`'s UDP
/// ports: the gateway must run with `--public-ip 127.0.0.2`. `args` are the
/// relay's impairment flags (`--up`, `--down`, `--script`). Stopped (SIGTERM)
/// by [`Impair::finish`], which returns its per-second reports.
pub struct Impair {
    child: Child,
    lines: std::sync::mpsc::Receiver<Value>,
}

impl Impair {
    pub fn start(gw: &Gateway, args: &[&str]) -> Impair {
        let ports = format!("{}-{}", gw.ports.0, gw.ports.1);
        let (log, _) = log_file(&unique("impair"));
        let mut child = Command::new(aiortc_python())
            .arg(repo_root().join("tests/impair.py"))
            .args([
                "--listen",
                "127.0.0.2",
                "--to",
                "127.0.0.1",
                "--ports",
                &ports,
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start the impairment relay");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let ready = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("the relay never said it was ready");
        assert_eq!(ready["ready"], true, "{ready}");
        Impair { child, lines }
    }

    /// Stops the relay; its reports since it started, in order.
    pub fn finish(mut self) -> Vec<Value> {
        // SAFETY: kill(2) on a child we own.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = wait_bounded(&mut self.child, Duration::from_secs(5));
        self.lines.try_iter().collect()
    }
}

/// What the impairment relay did to one direction over a span of its
/// per-second reports (seconds `from..=to`).
#[derive(Debug, Clone, Copy)]
pub struct LinkSpan {
    pub seconds: usize,
    /// Mean kbit/s the sender offered.
    pub offered_kbps: u64,
    /// Share of its packets lost or dropped by the cap's queue.
    pub loss: f64,
    /// Mean of the seconds' median queueing delay, and the worst p95 (ms).
    pub wait_p50_ms: f64,
    pub wait_p95_max_ms: f64,
}

impl Impair {
    /// Prints `dir`'s per-second reports (one line each) for the test log.
    pub fn print(reports: &[Value], dir: &str) {
        for r in reports
            .iter()
            .filter(|r| r["dir"] == dir && r["offered_kbps"].is_u64())
        {
            eprintln!(
                "t={:>2}s cap {:>7} offered {:>5} kbit/s, passed {:>5}, lost {}, queue drops {}, wait p50 {} p95 {} ms",
                r["t"], r["rate"], r["offered_kbps"], r["kbps"], r["lost"], r["queue_drops"],
                r["wait_ms_p50"], r["wait_ms_p95"]
            );
        }
    }

    /// Kbit/s offered in `dir` in second `t` (0 if no report).
    pub fn offered_at(reports: &[Value], dir: &str, t: u64) -> u64 {
        reports
            .iter()
            .find(|r| r["dir"] == dir && r["t"] == t && r["offered_kbps"].is_u64())
            .and_then(|r| r["offered_kbps"].as_u64())
            .unwrap_or(0)
    }

    /// `dir` over seconds `from..=to`.
    pub fn span(reports: &[Value], dir: &str, from: u64, to: u64) -> LinkSpan {
        let seconds: Vec<&Value> = reports
            .iter()
            .filter(|r| r["dir"] == dir && r["offered_kbps"].is_u64())
            .filter(|r| (from..=to).contains(&r["t"].as_u64().unwrap_or(0)))
            .collect();
        let n = seconds.len().max(1);
        let sum = |k: &str| {
            seconds
                .iter()
                .map(|r| r[k].as_u64().unwrap_or(0))
                .sum::<u64>()
        };
        let (packets, drops) = (sum("packets"), sum("queue_drops") + sum("lost"));
        let wait = |k: &'static str| seconds.iter().map(move |r| r[k].as_f64().unwrap_or(0.0));
        LinkSpan {
            seconds: seconds.len(),
            offered_kbps: sum("offered_kbps") / n as u64,
            loss: drops as f64 / (packets + drops).max(1) as f64,
            wait_p50_ms: wait("wait_ms_p50").sum::<f64>() / n as f64,
            wait_p95_max_ms: wait("wait_ms_p95").fold(0.0, f64::max),
        }
    }
}

/// A helper process that prints one JSON report a line on its stdout (the
/// Python clients: aiortc, FFmpeg's WHIP muxer); stopped when dropped.
pub struct JsonReports {
    pub child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    what: &'static str,
}

impl JsonReports {
    /// Spawns `cmd` with its stdout piped; `what` names it in panics.
    pub fn spawn(mut cmd: Command, what: &'static str) -> JsonReports {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        JsonReports { child, lines, what }
    }

    /// The next JSON line (blocks; the scripts bound their own run time).
    pub fn next_report(&mut self) -> Value {
        let what = self.what;
        let line = self
            .lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("{what} ended without output"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// The last report, then the process's exit (stopped after 10 s).
    pub fn finish(mut self) -> Value {
        let v = self.next_report();
        wait_bounded(&mut self.child, Duration::from_secs(10));
        v
    }
}

impl Drop for JsonReports {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(1));
    }
}

/// An aiortc WHIP publisher sending the test clip (H264 + Opus, no re-encode)
/// for `secs` after it connects. Its stdout carries JSON lines.
pub struct AiortcPublisher(pub JsonReports);

impl AiortcPublisher {
    pub fn start(gw: &Gateway, room: &str, secs: f64, extra: &[&str]) -> AiortcPublisher {
        Self::start_with(gw, room, &clip(), secs, extra)
    }

    /// Publishes `clip` to `/whip/{room}` (which may carry a query, e.g.
    /// `?participant=NAME`), with a room token if given.
    pub fn start_clip(
        gw: &Gateway,
        room: &str,
        clip: &Path,
        secs: f64,
        token: Option<&str>,
    ) -> AiortcPublisher {
        match token {
            Some(t) => Self::start_with(gw, room, clip, secs, &["--token", t]),
            None => Self::start_with(gw, room, clip, secs, &[]),
        }
    }

    /// As [`Self::start_clip`], with more of the script's flags (`--encode`).
    pub fn start_with(
        gw: &Gateway,
        room: &str,
        clip: &Path,
        secs: f64,
        extra: &[&str],
    ) -> AiortcPublisher {
        let mut args = vec!["--file", clip.to_str().unwrap()];
        args.extend(extra);
        Self::start_source(gw, room, secs, &args)
    }

    /// An aiortc publisher whose camera is an ffmpeg lavfi `graph`, encoded
    /// by aiortc (so it answers PLI and follows REMB).
    pub fn start_lavfi(gw: &Gateway, room: &str, graph: &str, secs: f64) -> AiortcPublisher {
        Self::start_source(gw, room, secs, &["--lavfi", graph])
    }

    /// An aiortc publisher whose camera stamps each frame's capture time
    /// into the picture (video only; `aiortc_play(.., &["--stamps"])` reads
    /// them back: glass-to-glass delay); `extra`: more of the script's
    /// flags (`--codec vp8`).
    pub fn start_stamping(gw: &Gateway, room: &str, secs: f64, extra: &[&str]) -> AiortcPublisher {
        let mut args = vec!["--stamp"];
        args.extend(extra);
        Self::start_source(gw, room, secs, &args)
    }

    fn start_source(gw: &Gateway, room: &str, secs: f64, source: &[&str]) -> AiortcPublisher {
        let url = format!("{}/whip/{room}", gw.api);
        let secs = secs.to_string();
        let mut args = vec!["publish", url.as_str(), "--seconds", secs.as_str()];
        args.extend(source);
        let (log, _) = log_file(&unique("aiortc-pub"));
        let mut cmd = aiortc_command(&args);
        cmd.stderr(log);
        AiortcPublisher(JsonReports::spawn(cmd, "aiortc publisher"))
    }

    /// The next JSON line (blocks; the script bounds its own run time).
    pub fn next_report(&mut self) -> Value {
        self.0.next_report()
    }

    /// Waits until it reports ICE+DTLS connected; asserts it did.
    pub fn connected(&mut self) -> Value {
        let v = self.next_report();
        assert_eq!(v["ok"], true, "publisher did not connect: {v}");
        v
    }

    /// Its final report (after DELETE, unless `--no-delete`).
    pub fn finish(self) -> Value {
        self.0.finish()
    }
}

/// A browser in a call (aiortc): publishes `clip` as `name` in `room` over
/// WHIP and plays the room as `name` over WHEP with `lines` video+audio
/// lines, for `secs` after it joins; `extra`: more of the script's flags
/// (`--codec vp8`).
pub struct AiortcCall(JsonReports);

impl AiortcCall {
    pub fn start(
        gw: &Gateway,
        room: &str,
        name: &str,
        clip: Option<&Path>,
        lines: u32,
        secs: f64,
        extra: &[&str],
    ) -> AiortcCall {
        let (secs, lines) = (secs.to_string(), lines.to_string());
        let mut args = vec!["call", gw.api.as_str(), room, name];
        args.extend(["--seconds", secs.as_str(), "--lines", lines.as_str()]);
        args.extend(extra);
        if let Some(c) = clip {
            args.extend(["--file", c.to_str().unwrap()]);
        }
        let (log, _) = log_file(&unique("aiortc-call"));
        let mut cmd = aiortc_command(&args);
        cmd.stderr(log);
        AiortcCall(JsonReports::spawn(cmd, "aiortc call"))
    }

    /// Waits until its player connected (it published before); asserts it did.
    pub fn joined(&mut self) {
        let v = self.0.next_report();
        assert_eq!(v["ok"], true, "the call did not connect: {v}");
    }

    /// Its report: `participant`, and per received track `mid`, `kind`,
    /// `msid`, `frames`, `width`, `height`, `first_frame_ms` (from joining).
    pub fn finish(self) -> Value {
        self.0.finish()
    }
}

/// `pyav_ertmp.py ARGS...` (FFmpeg 8 through PyAV, tests/rtmp/).
pub fn pyav_ertmp(args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["-s", "KILL", "40"])
        .arg(aiortc_python())
        .arg(repo_root().join("tests/rtmp/pyav_ertmp.py"))
        .args(args);
    cmd
}

/// Runs an aiortc WHEP player for `secs` after it connects; returns its report.
pub fn aiortc_play(gw: &Gateway, room: &str, secs: f64, extra: &[&str]) -> Value {
    let url = format!("{}/whep/{room}", gw.api);
    let secs = secs.to_string();
    let mut args = vec!["play", url.as_str(), "--seconds", secs.as_str()];
    args.extend(extra);
    aiortc_report(&args)
}

/// Glass-to-glass delay over a direct aiortc peer connection (the stamping
/// camera to a second peer in one process, no gateway), its media through
/// the impairment relay with `impair` as the `--up` spec: the baseline.
pub fn aiortc_direct_delay(secs: f64, impair: &str) -> Value {
    aiortc_report(&["direct", "--seconds", &secs.to_string(), "--impair", impair])
}

/// Glass-to-glass delay of a stamping publisher's stream played by ffmpeg
/// from `url` (RTMP or HTTP-FLV) for `secs`: the mini-program's side.
pub fn flv_stamps_delay(url: &str, secs: f64) -> Value {
    aiortc_report(&["flv-stamps", url, "--seconds", &secs.to_string()])
}

/// Runs the aiortc script with `args` to its end; its last JSON line.
fn aiortc_report(args: &[&str]) -> Value {
    let (log, log_path) = log_file(&unique("aiortc-play"));
    let child = aiortc_command(args)
        .stderr(log)
        .spawn()
        .expect("start aiortc player");
    let out = child.wait_with_output().expect("aiortc player output");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|_| {
        panic!(
            "aiortc player gave no report ({}): {text}\n{}",
            out.status,
            std::fs::read_to_string(log_path).unwrap_or_default()
        )
    })
}

/// Runs the load tool against `gw` with `args` (killed after `limit_s`),
/// asserts it succeeded, prints its table and returns its JSON report.
pub fn loadgen(gw: &Gateway, args: &[&str], limit_s: u32, json_name: &str) -> Value {
    let out = target_dir().join("e2e-logs").join(json_name);
    let _ = std::fs::create_dir_all(out.parent().unwrap());
    let run = Command::new("timeout")
        .args(["-s", "KILL", &limit_s.to_string()])
        .arg(bin("loadgen"))
        .args(["--api", &gw.api, "--admin-key", ADMIN_KEY])
        .args(args)
        .arg("--json")
        .arg(&out)
        .output()
        .expect("run loadgen");
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{table}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!("{table}");
    serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap()
}

/// Posts an SDP body; returns (status, Location, body text).
pub fn post_sdp(
    gw: &Gateway,
    path: &str,
    content_type: &str,
    body: &str,
) -> (u16, Option<String>, String) {
    post_sdp_with(gw, path, content_type, body, None)
}

/// As [`post_sdp`], with `Authorization: Bearer <token>`.
pub fn post_sdp_with(
    gw: &Gateway,
    path: &str,
    content_type: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, Option<String>, String) {
    let mut r = ureq::post(&format!("{}{path}", gw.api))
        .timeout(Duration::from_secs(10))
        .set("content-type", content_type);
    if let Some(t) = token {
        r = r.set("authorization", &format!("Bearer {t}"));
    }
    match r.send_string(body) {
        Ok(r) => (
            r.status(),
            r.header("location").map(str::to_string),
            r.into_string().unwrap_or_default(),
        ),
        Err(ureq::Error::Status(code, r)) => (code, None, r.into_string().unwrap_or_default()),
        Err(e) => panic!("POST {path}: {e}"),
    }
}

/// A minimal WHIP offer (H264 only) that the gateway accepts; no client
/// will ever connect to its answer.
pub const MINIMAL_OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n\
a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwxyz\r\n\
a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
a=setup:actpass\r\na=sendonly\r\na=rtcp-mux\r\n\
a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n";

/// A network namespace with only `lo` up, entered by the calling thread:
/// sockets it opens and processes it spawns from now on live there. Chromium
/// gathers loopback ICE candidates only in such a namespace (TESTING.md).
/// Test threads are separate, so other tests stay in the host namespace.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn enter() -> Netns {
        let name = unique("mgw-ns");
        let run = |args: &[&str]| {
            let ok = Command::new("ip")
                .args(args)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "ip {args:?} failed (needs root and iproute2)");
        };
        run(&["netns", "add", &name]);
        run(&["netns", "exec", &name, "ip", "link", "set", "lo", "up"]);
        let f = std::fs::File::open(format!("/run/netns/{name}")).expect("netns file");
        // SAFETY: setns(2) on a namespace fd we hold; it changes only this thread.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        Netns { name }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn install_apt(pkg: &str) {
    let _ = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends", pkg])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdout(Stdio::null())
        .status();
}

/// `tests/webrtc` with playwright-core installed, and Debian's Chromium.
pub fn chromium_driver_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo_root().join("tests/webrtc");
        let lock = std::fs::File::create(std::env::temp_dir().join("mgw-npm.lock")).unwrap();
        // SAFETY: flock(2) on a file we hold open; released when it closes.
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) };
        if !Path::new("/usr/bin/chromium").exists() {
            install_apt("chromium");
        }
        assert!(
            Path::new("/usr/bin/chromium").exists(),
            "Debian's chromium is needed (tests/run.sh installs it)"
        );
        if !dir.join("node_modules/playwright-core").exists() {
            let ok = Command::new("npm")
                .args(["install", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "npm install playwright-core failed");
        }
        dir
    })
    .clone()
}

impl Gateway {
    /// Every session of a room (ingests, then egresses), live and ended.
    pub fn room_sessions(&self, room: &str) -> Vec<Value> {
        let (code, v) = self.get(&format!("/v1/rooms/{room}"));
        assert_eq!(code, 200, "{v}");
        let mut all = v["ingests"].as_array().cloned().unwrap_or_default();
        all.extend(v["egresses"].as_array().cloned().unwrap_or_default());
        all
    }

    /// The first session of a room with this `kind` (`whip`, `whep`, ...).
    pub fn session_of_kind(&self, room: &str, kind: &str) -> Value {
        self.room_sessions(room)
            .into_iter()
            .find(|s| s["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} session in {room}"))
    }

    /// A room token for `room` with `role` (`publish`, `subscribe`), valid
    /// two minutes (`POST /v1/rooms/{room}/tokens`).
    pub fn mint_token(&self, room: &str, role: &str) -> String {
        let (code, v) = self.post(
            &format!("/v1/rooms/{room}/tokens"),
            json!({ "role": role, "ttl_s": 120 }),
        );
        assert_eq!(code, 201, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    pub fn rtmp_url(&self, room: &str) -> String {
        format!("rtmp://127.0.0.1:{}/live/{room}", self.rtmp)
    }

    /// `http://…/live/{path}.flv{query}`: the HTTP-FLV twin of
    /// [`Self::rtmp_url`] (`path` is `ROOM` or `ROOM/NAME`).
    pub fn flv_url(&self, path: &str, query: &str) -> String {
        format!("http://127.0.0.1:{}/live/{path}.flv{query}", self.http_flv)
    }
}

/// ffmpeg publishes the test clip over RTMP in real time, looping, for
/// `secs`: H264 copied, Opus transcoded to AAC (FLV in ffmpeg 5.1 has no Opus).
pub fn ffmpeg_rtmp_publish(gw: &Gateway, room: &str, secs: u32) -> Child {
    ffmpeg_rtmp_push(gw, room, &clip(), secs)
}

/// As [`ffmpeg_rtmp_publish`], pushing `clip` to `rtmp://…/live/{path}`
/// (a mini-program's `live-pusher`: `ROOM/NAME`).
pub fn ffmpeg_rtmp_push(gw: &Gateway, path: &str, clip: &Path, secs: u32) -> Child {
    ffmpeg_rtmp_push_with(gw, path, clip, secs, &["-c:v", "copy", "-c:a", "aac"])
}

/// An RTMP push the way OBS's default x264 settings send it: re-encoded
/// in High profile with `bframes` B-frames (OBS: 2), so decode and
/// presentation order differ and FLV carries composition times.
pub fn ffmpeg_rtmp_push_x264(
    gw: &Gateway,
    path: &str,
    clip: &Path,
    secs: u32,
    bframes: u32,
) -> Child {
    let bframes = bframes.to_string();
    let codecs = [
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-profile:v",
        "high",
        "-bf",
        &bframes,
        "-g",
        "60",
        "-pix_fmt",
        "yuv420p",
        "-b:v",
        "600k",
        "-c:a",
        "aac",
    ];
    ffmpeg_rtmp_push_with(gw, path, clip, secs, &codecs)
}

/// ffmpeg pushes `clip` (looping, in real time, for `secs`) to
/// `rtmp://…/live/{path}`, encoded as `codecs` say (`-c:v ... -c:a ...`).
pub fn ffmpeg_rtmp_push_with(
    gw: &Gateway,
    path: &str,
    clip: &Path,
    secs: u32,
    codecs: &[&str],
) -> Child {
    Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-re",
            "-stream_loop",
            "-1",
        ])
        .args(["-t", &secs.to_string(), "-i"])
        .arg(clip)
        .args(codecs)
        .args(["-f", "flv"])
        .arg(gw.rtmp_url(path))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ffmpeg RTMP publisher")
}

/// An ffmpeg RTMP player decoding `secs` of the stream; returns the number
/// of decoded (video, audio) frames and its log (bounded by `timeout`).
pub fn ffmpeg_rtmp_play(url: &str, secs: u32, timeout: Duration) -> (usize, usize, String) {
    let dir = target_dir().join("e2e-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let name = unique("rtmp-play");
    let video = dir.join(format!("{name}-video.framecrc"));
    let audio = dir.join(format!("{name}-audio.framecrc"));
    let out = Command::new("timeout")
        .args([
            "-s",
            "KILL",
            &timeout.as_secs().max(1).to_string(),
            "ffmpeg",
        ])
        .args(["-nostdin", "-loglevel", "error", "-i", url])
        .args(["-t", &secs.to_string(), "-map", "0:v", "-f", "framecrc"])
        .arg(&video)
        .args(["-t", &secs.to_string(), "-map", "0:a?", "-f", "framecrc"])
        .arg(&audio)
        .output()
        .expect("run ffmpeg RTMP player");
    let count = |p: &Path| {
        std::fs::read_to_string(p)
            .map(|s| s.lines().filter(|l| !l.starts_with('#')).count())
            .unwrap_or(0)
    };
    (
        count(&video),
        count(&audio),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The streams ffprobe sees at `url` (codec, size, sample rate), or none.
pub fn ffprobe_streams(url: &str) -> Vec<Value> {
    let out = Command::new("timeout")
        .args([
            "-s",
            "KILL",
            "15",
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
        ])
        .args([
            "stream=codec_name,width,height,sample_rate,channels,bit_rate",
            "-of",
            "json",
            url,
        ])
        .output()
        .expect("run ffprobe");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v["streams"].as_array().cloned().unwrap_or_default()
}

/// Wall time from starting an ffmpeg player to its first decoded video
/// frame (TESTING.md's method); `None` if it failed.
pub fn rtmp_first_frame(url: &str) -> Option<Duration> {
    let t0 = Instant::now();
    let st = Command::new("timeout")
        .args([
            "-s",
            "KILL",
            "15",
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
        ])
        .args(["-analyzeduration", "0", "-probesize", "32", "-threads", "1"])
        .args(["-i", url, "-an", "-frames:v", "1", "-f", "null", "-"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    st.success().then(|| t0.elapsed())
}

/// Waits until `url` (RTMP or HTTP-FLV) plays: ffmpeg decodes a first
/// frame (panics after 20 s).
pub fn wait_playing(url: &str) {
    wait_for(
        &format!("{url} to play"),
        Duration::from_secs(20),
        || rtmp_first_frame(url),
        Option::is_some,
    );
}

/// A raw RTMP client socket past the handshake (rml_rtmp's client side), for
/// sending hand-made chunks.
pub fn rtmp_raw(gw: &Gateway) -> std::net::TcpStream {
    use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.rtmp)).expect("connect RTMP");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut hs = Handshake::new(PeerType::Client);
    s.write_all(&hs.generate_outbound_p0_and_p1().unwrap())
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).expect("handshake read");
        assert!(n > 0, "server closed during the handshake");
        match hs.process_bytes(&buf[..n]).expect("handshake") {
            HandshakeProcessResult::InProgress { response_bytes } => {
                s.write_all(&response_bytes).unwrap();
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                s.write_all(&response_bytes).unwrap();
                return s;
            }
        }
    }
}

/// One hand-made RTMP message in one chunk: a type-0 header on chunk stream 3.
pub fn rtmp_message(type_id: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut w = vec![3u8, 0, 0, 0];
    w.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    w.push(type_id);
    w.extend_from_slice(&stream.to_le_bytes());
    w.extend_from_slice(payload);
    w
}

/// An AMF0 command as one RTMP message on message stream `stream`.
pub fn rtmp_command(stream: u32, name: &str, txn: f64, args: Vec<rml_amf0::Amf0Value>) -> Vec<u8> {
    let mut v = vec![
        rml_amf0::Amf0Value::Utf8String(name.into()),
        rml_amf0::Amf0Value::Number(txn),
    ];
    v.extend(args);
    rtmp_message(20, stream, &rml_amf0::serialize(&v).unwrap())
}

/// Reads until the peer closes (returns true) or `timeout` passes (false).
pub fn closed_within(s: &mut std::net::TcpStream, timeout: Duration) -> bool {
    use std::io::Read;
    let deadline = Instant::now() + timeout;
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

/// A room's Server-Sent Events, read on a thread.
pub struct Events(std::sync::mpsc::Receiver<Value>);

impl Events {
    /// The first event from now on that `pick` accepts (panics after `timeout`).
    pub fn next_matching(&mut self, timeout: Duration, pick: impl Fn(&Value) -> bool) -> Value {
        self.try_next_matching(timeout, pick)
            .unwrap_or_else(|| panic!("no matching event within {timeout:?}"))
    }

    /// As [`Self::next_matching`], `None` after `timeout`.
    pub fn try_next_matching(
        &mut self,
        timeout: Duration,
        pick: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.0.recv_timeout(left) {
                Ok(e) if pick(&e) => return Some(e),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        None
    }
}

impl Gateway {
    /// Subscribes to `GET /v1/rooms/{room}/events`.
    pub fn events(&self, room: &str) -> Events {
        let resp = ureq::get(&format!("{}/v1/rooms/{room}/events", self.api))
            .set("authorization", &format!("Bearer {ADMIN_KEY}"))
            .call()
            .expect("SSE stream");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(resp.into_reader())
                .lines()
                .map_while(Result::ok)
            {
                let Some(data) = line.strip_prefix("data: ") else {
                    continue;
                };
                let Ok(v) = serde_json::from_str::<Value>(data) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        Events(rx)
    }
}

/// Debian's `redis-server` on a free loopback port, without persistence,
/// for the node pool (`--cluster`); stopped when dropped.
pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let [port] = free_tcp_ports::<1>();
        let r = Redis {
            child: Redis::spawn(port),
            port,
        };
        r.wait_ping();
        r
    }

    fn spawn(port: u16) -> Child {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (tests/run.sh installs it)")
    }

    fn wait_ping(&self) {
        wait_for(
            "redis-server to answer PING",
            PATIENCE,
            || self.command("PING"),
            |reply| reply.starts_with("+PONG"),
        );
    }

    /// Stops it (SIGTERM, then SIGKILL): the port answers nothing.
    pub fn stop(&mut self) {
        stop(&mut self.child, Duration::from_secs(2));
    }

    /// Starts it again on the same port, empty (no persistence), as a
    /// Redis that restarted.
    pub fn restart(&mut self) {
        self.stop();
        self.child = Redis::spawn(self.port);
        self.wait_ping();
    }

    /// `redis://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One inline command's first reply line (empty if it did not answer).
    pub fn command(&self, cmd: &str) -> String {
        use std::io::{BufRead, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(format!("{cmd}\r\n").as_bytes()).is_err() {
            return String::new();
        }
        let mut line = String::new();
        let _ = std::io::BufReader::new(s).read_line(&mut line);
        line
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop(&mut self.child, Duration::from_secs(2));
    }
}
