//! DTLS-SRTP handshakes (RFC 5764) off the media path.
//!
//! A handshake costs about a millisecond of CPU (ECDHE, ECDSA), far too much
//! to run inline on a shard that relays a packet every microsecond. Each shard
//! therefore has a companion DTLS thread. The shard forwards DTLS datagrams of
//! ICE-verified peers to it and sends whatever it answers; when a handshake
//! completes, the thread hands back the two SRTP master keys and the shard
//! builds its contexts. Media never waits on a handshake.
//!
//! ```text
//! shard ──ToDtls::Open{session, fingerprint}──▶ DTLS thread     (session created)
//! shard ──ToDtls::Datagram{session, bytes}───▶                   (first byte 20..=63)
//!       ◀──FromDtls::Send{session, bytes}─────  records to send to the peer
//!       ◀──FromDtls::Keys{session, rx, tx}────  handshake done, fingerprint matched
//!       ◀──FromDtls::Failed{session, why}─────  fatal: bad certificate, timeout, alert
//! ```
//!
//! The protocol engine is `dimpl` (sans-IO, `forbid(unsafe_code)`, the DTLS of
//! str0m): measured to interoperate with OpenSSL `s_client -use_srtp` with
//! byte-identical exported keys, while `webrtc-dtls` needs tokio sockets (see
//! CRATES.md §5). [`Endpoints`] is the sans-IO core, tested without threads;
//! [`spawn`] runs it on a thread with two channels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dimpl::{Config, Dtls, DtlsCertificate, Output, SrtpProfile};
use gateway_ring::msg::{SrtpKey, SrtpSuite};
use ring::digest;
use tracing::{debug, info, warn};

/// The dataplane's certificate and its SHA-256 fingerprint (for SDP answers).
#[derive(Clone)]
pub struct DtlsIdentity {
    pub certificate: DtlsCertificate,
    pub fingerprint: [u8; 32],
}

impl DtlsIdentity {
    /// A fresh self-signed ECDSA P-256 certificate (WebRTC authenticates it by
    /// the fingerprint in the signalling, not by a CA).
    pub fn generate() -> Result<DtlsIdentity, String> {
        let certificate = dimpl::certificate::generate_self_signed_certificate()
            .map_err(|e| format!("generating the DTLS certificate: {e}"))?;
        let fingerprint = sha256(&certificate.certificate);
        Ok(DtlsIdentity {
            certificate,
            fingerprint,
        })
    }
}

/// SHA-256 of a DER certificate: its SDP fingerprint (RFC 8122).
pub fn sha256(der: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, der);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Shard → DTLS thread.
pub enum ToDtls {
    /// A WebRTC session exists: expect a ClientHello whose certificate has
    /// this SHA-256 fingerprint (from the peer's SDP).
    Open {
        session: u64,
        fingerprint: [u8; 32],
    },
    /// A DTLS datagram from the session's ICE-verified peer.
    Datagram {
        session: u64,
        data: Vec<u8>,
    },
    Close {
        session: u64,
    },
}

impl ToDtls {
    pub fn session(&self) -> u64 {
        match self {
            ToDtls::Open { session, .. }
            | ToDtls::Datagram { session, .. }
            | ToDtls::Close { session } => *session,
        }
    }
}

/// DTLS thread → shard.
#[derive(Debug)]
pub enum FromDtls {
    /// A datagram for the session's peer.
    Send { session: u64, data: Vec<u8> },
    /// Handshake complete: `rx` unprotects what the peer sends, `tx` protects
    /// what we send (RFC 5764 §4.2: the server decrypts with the client half).
    Keys {
        session: u64,
        rx: SrtpKey,
        tx: SrtpKey,
    },
    /// The handshake failed for good; the session cannot carry media.
    Failed { session: u64, why: String },
}

struct Peer {
    dtls: Dtls,
    expected: [u8; 32],
    cert_ok: bool,
    next_timeout: Option<Instant>,
    done: bool,
}

/// Every DTLS server of one shard (sans-IO: time is an argument).
pub struct Endpoints {
    identity: DtlsIdentity,
    config: Arc<Config>,
    peers: HashMap<u64, Peer>,
    buf: Vec<u8>,
}

/// How long a handshake may take before the session is told it failed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

impl Endpoints {
    pub fn new(identity: DtlsIdentity) -> Endpoints {
        let config = Config::builder()
            .handshake_timeout(HANDSHAKE_TIMEOUT)
            .build()
            .expect("dimpl's default configuration is valid");
        Endpoints {
            identity,
            config: Arc::new(config),
            peers: HashMap::new(),
            buf: vec![0; 2048],
        }
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    pub fn handle(&mut self, now: Instant, msg: ToDtls, out: &mut Vec<FromDtls>) {
        match msg {
            ToDtls::Open {
                session,
                fingerprint,
            } => {
                // WebRTC's DTLS is 1.2 (RFC 8827); browsers that offer 1.3
                // negotiate down. We are always the server (a=setup:passive).
                let mut dtls =
                    Dtls::new_12(self.config.clone(), self.identity.certificate.clone(), now);
                dtls.set_active(false);
                // dimpl draws its random and starts its clock in the first
                // timeout; packets before it would find no ServerHello random.
                if let Err(e) = dtls.handle_timeout(now) {
                    self.fail(session, format!("DTLS: {e}"), out);
                    return;
                }
                self.peers.insert(
                    session,
                    Peer {
                        dtls,
                        expected: fingerprint,
                        cert_ok: false,
                        next_timeout: None,
                        done: false,
                    },
                );
            }
            ToDtls::Close { session } => {
                self.peers.remove(&session);
            }
            ToDtls::Datagram { session, data } => {
                let Some(peer) = self.peers.get_mut(&session) else {
                    return;
                };
                if let Err(e) = peer.dtls.handle_packet(&data) {
                    self.fail(session, format!("DTLS: {e}"), out);
                    return;
                }
                self.drain(session, out);
            }
        }
    }

    /// Drives retransmissions and handshake timeouts that are due.
    pub fn handle_timeouts(&mut self, now: Instant, out: &mut Vec<FromDtls>) {
        let due: Vec<u64> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_timeout.is_some_and(|t| t <= now))
            .map(|(&s, _)| s)
            .collect();
        for session in due {
            let Some(peer) = self.peers.get_mut(&session) else {
                continue;
            };
            if let Err(e) = peer.dtls.handle_timeout(now) {
                self.fail(session, format!("DTLS: {e}"), out);
                continue;
            }
            self.drain(session, out);
        }
    }

    /// The earliest instant [`Self::handle_timeouts`] has work.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.peers.values().filter_map(|p| p.next_timeout).min()
    }

    fn fail(&mut self, session: u64, why: String, out: &mut Vec<FromDtls>) {
        self.peers.remove(&session);
        out.push(FromDtls::Failed { session, why });
    }

    fn drain(&mut self, session: u64, out: &mut Vec<FromDtls>) {
        let Some(peer) = self.peers.get_mut(&session) else {
            return;
        };
        let mut failure = None;
        while failure.is_none() {
            match peer.dtls.poll_output(&mut self.buf) {
                Output::Packet(p) => out.push(FromDtls::Send {
                    session,
                    data: p.to_vec(),
                }),
                Output::BufferTooSmall { needed } => self.buf.resize(needed, 0),
                Output::Timeout(t) => {
                    peer.next_timeout = Some(t);
                    break;
                }
                Output::PeerCert(der) => {
                    // The only authentication WebRTC has: the certificate must
                    // be the one the peer's SDP named (RFC 8122 §5).
                    if sha256(der) == peer.expected {
                        peer.cert_ok = true;
                    } else {
                        failure = Some("peer certificate does not match the SDP fingerprint");
                    }
                }
                Output::KeyingMaterial(km, profile) => {
                    if !peer.cert_ok {
                        failure = Some("keys offered before a matching certificate");
                    }
                    match split_keys(&km, profile) {
                        Some((rx, tx)) if !peer.done => {
                            peer.done = true;
                            debug!(session, ?profile, "DTLS-SRTP keys exported");
                            out.push(FromDtls::Keys { session, rx, tx });
                        }
                        Some(_) => {}
                        None => failure = Some("unexpected keying material length"),
                    }
                }
                Output::Connected => {}
                Output::CloseNotify => {
                    failure = Some("peer closed the DTLS connection");
                }
                _ => {}
            }
        }
        if let Some(why) = failure {
            self.fail(session, why.to_string(), out);
        }
    }
}

/// RFC 5764 §4.2: `client_key | server_key | client_salt | server_salt`.
/// Returns (client = what we receive, server = what we send).
pub fn split_keys(km: &[u8], profile: SrtpProfile) -> Option<(SrtpKey, SrtpKey)> {
    let suite = match profile {
        SrtpProfile::AES128_CM_SHA1_80 => SrtpSuite::AesCm128HmacSha1_80,
        SrtpProfile::AEAD_AES_128_GCM => SrtpSuite::AeadAes128Gcm,
        SrtpProfile::AEAD_AES_256_GCM => SrtpSuite::AeadAes256Gcm,
        _ => return None,
    };
    let k = suite.key_len();
    let s = suite.key_material_len() - k;
    if km.len() != 2 * (k + s) {
        return None;
    }
    let (client_key, rest) = km.split_at(k);
    let (server_key, rest) = rest.split_at(k);
    let (client_salt, server_salt) = rest.split_at(s);
    let join = |key: &[u8], salt: &[u8]| {
        let mut m = key.to_vec();
        m.extend_from_slice(salt);
        SrtpKey::new(suite, &m)
    };
    Some((
        join(client_key, client_salt)?,
        join(server_key, server_salt)?,
    ))
}

/// Longest the thread sleeps when no timer is due (it wakes on every message).
const IDLE_WAIT: Duration = Duration::from_millis(100);

/// Default for the most DTLS datagrams waiting for the DTLS thread
/// (`--dtls-queue`). Beyond it, datagrams are dropped (and counted by the
/// shard as `overload`), so a peer flooding DTLS cannot grow the queue
/// without bound; handshakes retransmit what is lost.
pub const MAX_QUEUED_DATAGRAMS: usize = gateway_ring::limits::DEFAULT.dtls_queue;

/// The shard's ends of a DTLS thread's channels.
pub struct DtlsLink {
    to: Sender<ToDtls>,
    pub from: Receiver<FromDtls>,
    queued: Arc<AtomicUsize>,
    max_queued: usize,
}

impl DtlsLink {
    /// Opening and closing sessions is never dropped.
    pub fn send(&self, msg: ToDtls) {
        // Err only if the DTLS thread is gone; the shard then has no DTLS,
        // which its handshakes' timeouts will show.
        let _ = self.to.send(msg);
    }

    /// Queues a datagram; `false` if the queue is full (drop and count it).
    pub fn send_datagram(&self, session: u64, data: Vec<u8>) -> bool {
        if self.queued.load(Ordering::Relaxed) >= self.max_queued {
            return false;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        self.send(ToDtls::Datagram { session, data });
        true
    }
}

/// Starts a DTLS thread for shard `index` with room for `max_queued`
/// datagrams. It exits when the shard drops its [`DtlsLink`].
pub fn spawn(index: u32, identity: DtlsIdentity, max_queued: usize) -> std::io::Result<DtlsLink> {
    let (to, inbox) = mpsc::channel::<ToDtls>();
    let (outbox, from) = mpsc::channel::<FromDtls>();
    let queued = Arc::new(AtomicUsize::new(0));
    let dequeued = queued.clone();
    std::thread::Builder::new()
        .name(format!("dtls-{index}"))
        .spawn(move || {
            let mut eps = Endpoints::new(identity);
            let mut out = Vec::new();
            loop {
                let now = Instant::now();
                let wait = eps
                    .next_timeout()
                    .map(|t| t.saturating_duration_since(now))
                    .unwrap_or(IDLE_WAIT)
                    .min(IDLE_WAIT);
                let msg = match inbox.recv_timeout(wait) {
                    Ok(msg) => {
                        if matches!(msg, ToDtls::Datagram { .. }) {
                            dequeued.fetch_sub(1, Ordering::Relaxed);
                        }
                        Some(msg)
                    }
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                };
                // A bug in the protocol engine must cost one handshake, not
                // every session of the shard: contain panics to the session.
                let session = msg.as_ref().map(ToDtls::session);
                let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    if let Some(msg) = msg {
                        eps.handle(Instant::now(), msg, &mut out);
                    }
                    eps.handle_timeouts(Instant::now(), &mut out);
                }));
                if turn.is_err() {
                    warn!(
                        shard = index,
                        ?session,
                        "DTLS engine panicked; dropping the session"
                    );
                    if let Some(session) = session {
                        eps.peers.remove(&session);
                        out.push(FromDtls::Failed {
                            session,
                            why: "DTLS engine error".into(),
                        });
                    }
                }
                for m in out.drain(..) {
                    if let FromDtls::Failed { session, why } = &m {
                        warn!(shard = index, session, "DTLS handshake failed: {why}");
                    }
                    if outbox.send(m).is_err() {
                        return;
                    }
                }
            }
            info!(shard = index, "DTLS thread stopping");
        })?;
    Ok(DtlsLink {
        to,
        from,
        queued,
        max_queued,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dimpl client against our endpoint: the handshake completes, both
    /// sides export the same keys, and our split gives the client's send key
    /// as our receive key.
    fn handshake(client_cert: DtlsCertificate, expected: [u8; 32]) -> Vec<FromDtls> {
        let server = DtlsIdentity::generate().unwrap();
        let mut eps = Endpoints::new(server);
        let t0 = Instant::now();
        eps.handle(
            t0,
            ToDtls::Open {
                session: 7,
                fingerprint: expected,
            },
            &mut Vec::new(),
        );
        let mut client = Dtls::new_12(Arc::new(Config::default()), client_cert, t0);
        client.set_active(true);
        client.handle_timeout(t0).unwrap();
        let mut buf = vec![0u8; 4096];
        let mut results = Vec::new();
        let mut client_km = None;
        for _ in 0..20 {
            let mut to_server = Vec::new();
            loop {
                match client.poll_output(&mut buf) {
                    Output::Packet(p) => to_server.push(p.to_vec()),
                    Output::Timeout(_) => break,
                    Output::KeyingMaterial(km, _) => client_km = Some(km.to_vec()),
                    _ => {}
                }
            }
            let mut out = Vec::new();
            for d in to_server {
                eps.handle(
                    t0,
                    ToDtls::Datagram {
                        session: 7,
                        data: d,
                    },
                    &mut out,
                );
            }
            for m in out {
                match m {
                    FromDtls::Send { data, .. } => client.handle_packet(&data).unwrap(),
                    other => results.push(other),
                }
            }
            if !results.is_empty() {
                break;
            }
        }
        if let (Some(km), Some(FromDtls::Keys { rx, tx, .. })) = (client_km, results.first()) {
            let len = rx.material().len();
            let k = rx.suite.key_len();
            // client_key | server_key | client_salt | server_salt
            assert_eq!(&rx.material()[..k], &km[..k]);
            assert_eq!(&tx.material()[..k], &km[k..2 * k]);
            assert_eq!(&rx.material()[k..], &km[2 * k..2 * k + len - k]);
        }
        results
    }

    #[test]
    fn handshake_exports_split_keys() {
        let cert = dimpl::certificate::generate_self_signed_certificate().unwrap();
        let fp = sha256(&cert.certificate);
        let r = handshake(cert, fp);
        assert!(
            matches!(r.as_slice(), [FromDtls::Keys { session: 7, .. }]),
            "{r:?}"
        );
    }

    #[test]
    fn wrong_fingerprint_fails_the_handshake() {
        let cert = dimpl::certificate::generate_self_signed_certificate().unwrap();
        let r = handshake(cert, [0xab; 32]);
        assert!(
            matches!(r.as_slice(), [FromDtls::Failed { session: 7, why }] if why.contains("fingerprint")),
            "{r:?}"
        );
    }

    #[test]
    fn junk_is_ignored_and_unknown_sessions_are_dropped() {
        let mut eps = Endpoints::new(DtlsIdentity::generate().unwrap());
        let t0 = Instant::now();
        let mut out = Vec::new();
        eps.handle(
            t0,
            ToDtls::Open {
                session: 1,
                fingerprint: [0; 32],
            },
            &mut out,
        );
        for junk in [vec![22u8; 3], vec![23u8; 40], vec![20u8, 0xfe, 0xfd]] {
            eps.handle(
                t0,
                ToDtls::Datagram {
                    session: 1,
                    data: junk.clone(),
                },
                &mut out,
            );
            eps.handle(
                t0,
                ToDtls::Datagram {
                    session: 99,
                    data: junk,
                },
                &mut out,
            );
        }
        // Junk never yields keys, and a session nobody opened gets nothing.
        assert!(
            out.iter().all(|m| match m {
                FromDtls::Keys { .. } => false,
                FromDtls::Send { session, .. } | FromDtls::Failed { session, .. } => *session == 1,
            }),
            "{out:?}"
        );
    }

    #[test]
    fn key_split_follows_rfc5764() {
        let km: Vec<u8> = (0u8..56).collect();
        let (rx, tx) = split_keys(&km, SrtpProfile::AEAD_AES_128_GCM).unwrap();
        assert_eq!(&rx.material()[..16], &km[..16]);
        assert_eq!(&tx.material()[..16], &km[16..32]);
        assert_eq!(&rx.material()[16..], &km[32..44]);
        assert_eq!(&tx.material()[16..], &km[44..56]);
        assert!(split_keys(&km[..50], SrtpProfile::AEAD_AES_128_GCM).is_none());
        let km: Vec<u8> = (0u8..88).collect();
        let (rx, _) = split_keys(&km, SrtpProfile::AEAD_AES_256_GCM).unwrap();
        assert_eq!(rx.suite, SrtpSuite::AeadAes256Gcm);
    }
}
