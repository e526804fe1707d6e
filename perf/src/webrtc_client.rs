//! A WebRTC client for the load tool: what a browser does to open a WHIP or
//! WHEP session, without the media engine. One session at a time per
//! thread, blocking, each step timed:
//!
//! ```text
//! POST offer ──▶ answer (ufrag, pwd, candidate, fingerprint)      api
//! STUN Binding (USE-CANDIDATE, ICE-CONTROLLING) ──▶ success        ice
//! DTLS 1.2 client (dimpl) ──▶ server certificate = answer's fingerprint,
//!                              SRTP keys exported                  dtls
//! ```
//!
//! The DTLS engine is dimpl, the same crate the dataplane uses as server;
//! the gateway's WebRTC side is tested for interoperability against aiortc
//! and Chromium (tests/tests/webrtc_*.rs), this client only makes load.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dataplane::dtls::{sha256, split_keys};
use dataplane::ice::stun::{self, attr, Message, Writer};
use dimpl::{Config, Dtls, DtlsCertificate, Output};
use gateway_ring::msg::SrtpKey;

use crate::api::Api;

/// How long each step may take before the session counts as failed.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// STUN retransmission interval while waiting for the answer to a check.
const STUN_RETRY: Duration = Duration::from_millis(100);
/// Clients setting sessions up at once in [`connect_parallel`].
pub const WORKERS: usize = 8;
/// Consent checks go out at least this often (the gateway waits 30 s).
const CONSENT_EVERY: Duration = Duration::from_secs(5);

/// The client's certificate and its SDP fingerprint, shared by all sessions.
#[derive(Clone)]
pub struct Identity {
    cert: DtlsCertificate,
    fingerprint: String,
    config: Arc<Config>,
}

impl Identity {
    pub fn generate() -> Result<Identity, String> {
        let cert = dimpl::certificate::generate_self_signed_certificate()
            .map_err(|e| format!("client certificate: {e}"))?;
        let fingerprint = hex_fingerprint(&sha256(&cert.certificate));
        Ok(Identity {
            cert,
            fingerprint,
            config: Arc::new(Config::default()),
        })
    }
}

fn hex_fingerprint(fp: &[u8; 32]) -> String {
    fp.iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // SAFETY: getrandom writes at most N bytes into the buffer we own.
    let n = unsafe { libc::getrandom(b.as_mut_ptr() as *mut libc::c_void, N, 0) };
    assert_eq!(n, N as isize, "getrandom");
    b
}

/// ICE credentials: letters and digits from random bytes.
fn random_token<const N: usize>() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    random_bytes::<N>()
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// What the session does with media.
#[derive(Clone, Copy)]
pub enum Mode {
    /// WHIP: one video line in `codec` and one Opus audio line, sendonly.
    Publish { codec: VideoCodec },
    /// WHEP: this many video lines (in `codec`) and audio lines, recvonly
    /// (one publisher's track on each).
    Play {
        video: usize,
        audio: usize,
        codec: VideoCodec,
        /// It offers transport-cc (under [`TWCC_ID`]), as a browser does.
        twcc: bool,
    },
}

/// The transport-wide sequence number extension's id in a player's offer.
pub const TWCC_ID: u8 = 3;

/// The video codec a session offers (`--codec`): what the SFU forwards
/// differs per codec (a VP8 line rewrites picture ids and starts at a
/// keyframe), so the same fan-out runs in each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VideoCodec {
    H264,
    Vp8,
}

/// A browser-like offer: BUNDLE, rtcp-mux, DTLS client (`setup:active`).
fn offer_sdp(id: &Identity, ufrag: &str, pwd: &str, mode: Mode) -> String {
    let (video, audio, dir, codec, twcc) = match mode {
        Mode::Publish { codec } => (1, 1, "sendonly", codec, false),
        Mode::Play {
            video,
            audio,
            codec,
            twcc,
        } => (video, audio, "recvonly", codec, twcc),
    };
    let kinds: Vec<&str> = std::iter::repeat_n("video", video)
        .chain(std::iter::repeat_n("audio", audio))
        .collect();
    let mids: Vec<String> = (0..kinds.len()).map(|i| i.to_string()).collect();
    let mut s = format!(
        "v=0\r\no=- {} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {}\r\n",
        u32::from_be_bytes(random_bytes::<4>()),
        mids.join(" ")
    );
    for (mid, kind) in kinds.iter().enumerate() {
        let (pt, codec) = match *kind {
            "video" if codec == VideoCodec::Vp8 => (102, "a=rtpmap:102 VP8/90000\r\n"),
            "video" => (
                102,
                "a=rtpmap:102 H264/90000\r\n\
                 a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n",
            ),
            _ => (111, "a=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"),
        };
        s.push_str(&format!(
            "m={kind} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n\
             a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n\
             a=fingerprint:sha-256 {}\r\na=setup:active\r\na={dir}\r\na=rtcp-mux\r\n{codec}",
            id.fingerprint
        ));
        if twcc {
            s.push_str(&format!(
                "a=extmap:{TWCC_ID} http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
                 a=rtcp-fb:{pt} transport-cc\r\n"
            ));
        }
    }
    s
}

/// What the client needs from the answer.
struct Answer {
    ufrag: String,
    pwd: String,
    candidate: SocketAddr,
    fingerprint: [u8; 32],
}

fn parse_answer(sdp: &str) -> Result<Answer, String> {
    let attr = |name: &str| {
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(name).map(str::to_string))
            .ok_or_else(|| format!("answer without {name}"))
    };
    let ufrag = attr("a=ice-ufrag:")?;
    let pwd = attr("a=ice-pwd:")?;
    // a=candidate:1 1 udp 2130706431 IP PORT typ host
    let cand = attr("a=candidate:")?;
    let f: Vec<&str> = cand.split_whitespace().collect();
    let candidate = format!("{}:{}", f.get(4).unwrap_or(&""), f.get(5).unwrap_or(&""))
        .parse()
        .map_err(|_| format!("answer candidate {cand:?}"))?;
    let fp = attr("a=fingerprint:sha-256 ")?;
    let bytes: Vec<u8> = fp
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    let fingerprint = bytes
        .try_into()
        .map_err(|_| format!("answer fingerprint {fp:?}"))?;
    Ok(Answer {
        ufrag,
        pwd,
        candidate,
        fingerprint,
    })
}

/// How long each step of a set-up took.
#[derive(Clone, Copy, Debug)]
pub struct Times {
    pub api: Duration,
    pub ice: Duration,
    pub dtls: Duration,
}

impl Times {
    pub fn total(&self) -> Duration {
        self.api + self.ice + self.dtls
    }
}

/// A connected session: its socket (connected to the gateway), resource
/// and SRTP keys.
pub struct Session {
    pub sock: UdpSocket,
    pub location: String,
    /// What this client protects with, and what it unprotects with.
    pub tx: SrtpKey,
    pub rx: SrtpKey,
    pub times: Times,
    /// For consent refreshes.
    stun_user: String,
    stun_key: String,
}

impl Session {
    /// A consent-freshness check (RFC 7675): the gateway ends sessions that
    /// stop sending them. The answer is left unread (or counted as not RTP).
    pub fn refresh_consent(&self) {
        send_consent(&self.sock, &self.stun_user, &self.stun_key);
    }

    /// What another thread needs to keep this session's consent fresh.
    pub fn consent(&self) -> Result<Consent, String> {
        Ok(Consent {
            sock: self.sock.try_clone().map_err(|e| e.to_string())?,
            user: self.stun_user.clone(),
            key: self.stun_key.clone(),
        })
    }
}

/// A session's consent checks, sendable from another thread.
pub struct Consent {
    sock: UdpSocket,
    user: String,
    key: String,
}

impl Consent {
    pub fn refresh(&self) {
        send_consent(&self.sock, &self.user, &self.key);
    }
}

fn send_consent(sock: &UdpSocket, user: &str, key: &str) {
    let mut buf = [0u8; 256];
    let n = binding_request(&mut buf, user, key, &random_bytes());
    let _ = sock.send(&buf[..n]);
}

fn binding_request(buf: &mut [u8], user: &str, key: &str, tid: &[u8; 12]) -> usize {
    let mut w = Writer::new(buf, stun::BINDING_REQUEST, tid).expect("room for a header");
    let build = |w: &mut Writer| -> Result<(), stun::StunError> {
        w.attribute(attr::USERNAME, user.as_bytes())?;
        w.attribute(attr::PRIORITY, &0x6e00_1eff_u32.to_be_bytes())?;
        w.attribute(attr::ICE_CONTROLLING, &random_bytes::<8>())?;
        w.attribute(attr::USE_CANDIDATE, &[])?;
        w.integrity(key.as_bytes())?;
        w.fingerprint()
    };
    build(&mut w).expect("a binding request fits 256 bytes");
    w.finish()
}

/// Opens one session on `path` (`/whip/{room}` or `/whep/{room}`).
pub fn connect(api: &Api, path: &str, id: &Identity, mode: Mode) -> Result<Session, String> {
    let ufrag = random_token::<8>();
    let pwd = random_token::<24>();
    let t0 = Instant::now();
    let (location, answer) = api.post_sdp(path, &offer_sdp(id, &ufrag, &pwd, mode))?;
    let t_api = t0.elapsed();
    // Whatever fails from here, the gateway's session is ended with it.
    establish(id, &ufrag, &answer, t_api, location.clone()).map_err(|e| {
        let _ = api.delete_location(&location);
        format!("{path}: {e}")
    })
}

/// Opens one session per `(path, mode)` job from [`WORKERS`] clients at
/// once; the results come back in the jobs' order. Sessions already open
/// keep getting consent checks while the others are set up, however long
/// that takes.
pub fn connect_parallel(
    api: &Api,
    id: &Identity,
    jobs: &[(String, Mode)],
) -> Vec<Result<Session, String>> {
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::with_capacity(jobs.len()));
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                let mut mine: Vec<(usize, Result<Session, String>)> = Vec::new();
                let mut refreshed = Instant::now();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, mode)) = jobs.get(i) else {
                        break;
                    };
                    mine.push((i, connect(api, path, id, *mode)));
                    if refreshed.elapsed() >= CONSENT_EVERY {
                        mine.iter()
                            .filter_map(|(_, r)| r.as_ref().ok())
                            .for_each(Session::refresh_consent);
                        refreshed = Instant::now();
                    }
                }
                done.lock().expect("results").append(&mut mine);
            });
        }
    });
    let mut done = done.into_inner().expect("results");
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

/// [`connect_parallel`], all or nothing: on the first failure every session
/// that did open is deleted and the failure returned.
pub fn connect_all(
    api: &Api,
    id: &Identity,
    jobs: &[(String, Mode)],
) -> Result<Vec<Session>, String> {
    let results = connect_parallel(api, id, jobs);
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        let failed = results.iter().filter(|r| r.is_err()).count();
        let e = format!("{failed} of {} set-ups failed, first: {e}", jobs.len());
        for s in results.iter().filter_map(|r| r.as_ref().ok()) {
            let _ = api.delete_location(&s.location);
        }
        return Err(e);
    }
    Ok(results.into_iter().filter_map(Result::ok).collect())
}

/// ICE and DTLS on the session the answer describes.
fn establish(
    id: &Identity,
    ufrag: &str,
    answer: &str,
    t_api: Duration,
    location: String,
) -> Result<Session, String> {
    let answer = parse_answer(answer)?;
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.connect(answer.candidate).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(10)))
        .map_err(|e| e.to_string())?;
    let stun_user = format!("{}:{ufrag}", answer.ufrag);
    let mut buf = vec![0u8; 4096];

    // ICE: the gateway is ICE-lite; we are the controlling agent and
    // nominate the one candidate pair at once.
    let tid: [u8; 12] = random_bytes();
    let t1 = Instant::now();
    let mut last_sent: Option<Instant> = None;
    loop {
        if t1.elapsed() > STEP_TIMEOUT {
            return Err(format!("no STUN answer from {}", answer.candidate));
        }
        if last_sent.is_none_or(|t| t.elapsed() >= STUN_RETRY) {
            let n = binding_request(&mut buf, &stun_user, &answer.pwd, &tid);
            sock.send(&buf[..n]).map_err(|e| e.to_string())?;
            last_sent = Some(Instant::now());
        }
        let Ok(n) = sock.recv(&mut buf) else { continue };
        if let Ok(m) = Message::parse(&buf[..n]) {
            if m.kind == stun::BINDING_SUCCESS
                && m.transaction_id == tid
                && m.verify_integrity(answer.pwd.as_bytes())
            {
                break;
            }
        }
    }
    let t_ice = t1.elapsed();

    // DTLS: we are the client (a=setup:active).
    let t2 = Instant::now();
    let mut dtls = Dtls::new_12(id.config.clone(), id.cert.clone(), t2);
    dtls.set_active(true);
    dtls.handle_timeout(t2).map_err(|e| format!("DTLS: {e}"))?;
    let mut out = vec![0u8; 4096];
    let mut cert_ok = false;
    let mut next_timeout: Instant;
    let keys = 'handshake: loop {
        loop {
            match dtls.poll_output(&mut out) {
                Output::Packet(p) => {
                    sock.send(p).map_err(|e| e.to_string())?;
                }
                Output::Timeout(t) => {
                    next_timeout = t;
                    break;
                }
                Output::BufferTooSmall { needed } => out.resize(needed, 0),
                Output::PeerCert(der) => cert_ok = sha256(der) == answer.fingerprint,
                Output::KeyingMaterial(km, profile) => {
                    if !cert_ok {
                        break 'handshake Err(
                            "server certificate does not match the answer's fingerprint"
                                .to_string(),
                        );
                    }
                    break 'handshake split_keys(&km, profile)
                        .ok_or_else(|| format!("unusable SRTP profile {profile:?}"));
                }
                _ => {}
            }
        }
        let now = Instant::now();
        if now - t2 > STEP_TIMEOUT {
            break Err("DTLS handshake timed out".to_string());
        }
        if now >= next_timeout {
            dtls.handle_timeout(now).map_err(|e| format!("DTLS: {e}"))?;
            continue;
        }
        let Ok(n) = sock.recv(&mut buf) else { continue };
        if (20..=63).contains(&buf[0]) {
            if let Err(e) = dtls.handle_packet(&buf[..n]) {
                break Err(format!("DTLS: {e}"));
            }
        }
    };
    let (client, server) = keys?;
    Ok(Session {
        sock,
        location,
        tx: client,
        rx: server,
        times: Times {
            api: t_api,
            ice: t_ice,
            dtls: t2.elapsed(),
        },
        stun_user,
        stun_key: answer.pwd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_play_offer_has_one_line_per_track_and_the_fingerprint() {
        let id = Identity::generate().unwrap();
        let sdp = offer_sdp(
            &id,
            "abcd",
            "p".repeat(24).as_str(),
            Mode::Play {
                video: 3,
                audio: 2,
                codec: VideoCodec::Vp8,
                twcc: true,
            },
        );
        assert_eq!(sdp.matches("transport-cc").count(), 5, "{sdp}");
        assert_eq!(sdp.matches("a=rtpmap:102 VP8/90000").count(), 3, "{sdp}");
        assert_eq!(sdp.matches("m=video").count(), 3, "{sdp}");
        assert_eq!(sdp.matches("m=audio").count(), 2, "{sdp}");
        assert!(sdp.contains("a=group:BUNDLE 0 1 2 3 4\r\n"), "{sdp}");
        assert!(sdp.contains(&format!("a=fingerprint:sha-256 {}", id.fingerprint)));
        assert_eq!(id.fingerprint.len(), 32 * 3 - 1);
    }

    #[test]
    fn an_answer_gives_credentials_candidate_and_fingerprint() {
        let fp = hex_fingerprint(&[0xab; 32]);
        let a = parse_answer(&format!(
            "v=0\r\na=ice-ufrag:srv1\r\na=ice-pwd:secretsecretsecret\r\n\
             a=fingerprint:sha-256 {fp}\r\na=candidate:1 1 udp 2130706431 127.0.0.1 20004 typ host\r\n"
        ))
        .unwrap();
        assert_eq!(
            (a.ufrag.as_str(), a.pwd.as_str()),
            ("srv1", "secretsecretsecret")
        );
        assert_eq!(a.candidate, "127.0.0.1:20004".parse().unwrap());
        assert_eq!(a.fingerprint, [0xab; 32]);
        assert!(parse_answer("v=0\r\n").is_err());
    }
}
