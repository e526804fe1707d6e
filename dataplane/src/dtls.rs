//! DTLS-SRTP handshakes (RFC 5764) off the media path.
//!
//! A handshake costs about a millisecond of CPU (ECDHE, ECDSA), far too much
//! to run inline on a shard that relays a packet every microsecond. Each shard
//! therefore has a companion DTLS thread. The shard forwards DTLS datagrams of
//! ICE-verified peers to it and sends whatever it answers; when a handshake
//! completes, the thread hands back the two SRTP master keys and the shard
//! builds its contexts. Media never waits on a handshake.
//!
//! We are the DTLS server, except for an offer of `a=setup:passive` (FFmpeg's
//! WHIP muxer), which makes us the client ([`DtlsRole`]).
//!
//! ```text
//! shard ──ToDtls::Open{session, fingerprint, role}─▶ DTLS thread  (session created)
//! shard ──ToDtls::Start{session}────────────────▶   client only: the peer passed
//!                                                    its first ICE check, send the ClientHello
//! shard ──ToDtls::Datagram{session, bytes}──────▶   (first byte 20..=63)
//!       ◀──FromDtls::Send{session, bytes}────────  records to send to the peer
//!       ◀──FromDtls::Keys{session, rx, tx}───────  handshake done, fingerprint matched
//!       ◀──FromDtls::Failed{session, why}────────  fatal: bad certificate, timeout, alert
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
use gateway_ring::msg::{DtlsRole, SrtpKey, SrtpSuite};
use gateway_ring::SessionId;
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
    /// A WebRTC session exists: the peer's certificate must have this
    /// SHA-256 fingerprint (from its SDP). As the server we wait for its
    /// ClientHello; as the client, for [`ToDtls::Start`].
    Open {
        session: SessionId,
        fingerprint: [u8; 32],
        role: DtlsRole,
    },
    /// We are the session's DTLS client and its peer has just passed its
    /// first ICE check: send the ClientHello. Not sooner, because until
    /// then the shard has no address to send it to (records go to the
    /// ICE-verified peer only) and would drop it, and dimpl would resend
    /// it only after its first retransmission timer (1 s).
    Start {
        session: SessionId,
    },
    /// A DTLS datagram from the session's ICE-verified peer.
    Datagram {
        session: SessionId,
        data: Vec<u8>,
    },
    Close {
        session: SessionId,
    },
}

impl ToDtls {
    pub fn session(&self) -> SessionId {
        match self {
            ToDtls::Open { session, .. }
            | ToDtls::Start { session }
            | ToDtls::Datagram { session, .. }
            | ToDtls::Close { session } => *session,
        }
    }
}

/// DTLS thread → shard.
#[derive(Debug)]
pub enum FromDtls {
    /// A datagram for the session's peer.
    Send { session: SessionId, data: Vec<u8> },
    /// Handshake complete: `rx` unprotects what the peer sends, `tx` protects
    /// what we send (RFC 5764 §4.2: each side protects with its own write
    /// key, so a server's `tx` is the server half and a client's the client
    /// half).
    Keys {
        session: SessionId,
        rx: SrtpKey,
        tx: SrtpKey,
    },
    /// The handshake failed for good; the session cannot carry media.
    Failed { session: SessionId, why: String },
}

struct Peer {
    dtls: Dtls,
    role: DtlsRole,
    expected: [u8; 32],
    cert_ok: bool,
    next_timeout: Option<Instant>,
    done: bool,
}

/// Every DTLS endpoint of one shard, server or client (sans-IO: time is an
/// argument).
pub struct Endpoints {
    identity: DtlsIdentity,
    /// The server role's configuration, and the client role's (its first
    /// retransmission sooner: [`CLIENT_FIRST_RETRY`]).
    server: Arc<Config>,
    client: Arc<Config>,
    peers: HashMap<SessionId, Peer>,
    buf: Vec<u8>,
}

/// How long a handshake may take before the session is told it failed.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);

/// When a client-role flight is first sent again (dimpl's default: 1 s,
/// doubling). FFmpeg's WHIP muxer (GnuTLS) drops a ClientHello that comes
/// right after the answer to its ICE check, before its DTLS listens, and
/// answers the retry: with 1 s its set-up took a second. 300 ms is a mobile
/// round trip; a slower peer costs one extra flight, no more.
const CLIENT_FIRST_RETRY: Duration = Duration::from_millis(300);

impl Endpoints {
    pub fn new(identity: DtlsIdentity) -> Endpoints {
        let config = |first_retry: Duration| {
            let c = Config::builder()
                .handshake_timeout(HANDSHAKE_TIMEOUT)
                .flight_start_rto(first_retry)
                .with_crypto_provider(crate::dtls_verify::provider())
                .build()
                .expect("dimpl's configuration with our timers is valid");
            Arc::new(c)
        };
        Endpoints {
            identity,
            server: config(Duration::from_secs(1)),
            client: config(CLIENT_FIRST_RETRY),
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
                role,
            } => {
                // WebRTC's DTLS is 1.2 (RFC 8827); browsers that offer 1.3
                // negotiate down.
                let config = match role {
                    DtlsRole::Server => &self.server,
                    DtlsRole::Client => &self.client,
                };
                let mut dtls = Dtls::new_12(config.clone(), self.identity.certificate.clone(), now);
                dtls.set_active(role == DtlsRole::Client);
                // dimpl draws its random and starts its clock in the first
                // timeout: a server's packets before it would find no
                // ServerHello random. A client's first timeout sends its
                // ClientHello, which waits for `Start`.
                if role == DtlsRole::Server {
                    if let Err(e) = dtls.handle_timeout(now) {
                        self.fail(session, format!("DTLS: {e}"), out);
                        return;
                    }
                }
                self.peers.insert(
                    session,
                    Peer {
                        dtls,
                        role,
                        expected: fingerprint,
                        cert_ok: false,
                        next_timeout: None,
                        done: false,
                    },
                );
            }
            ToDtls::Start { session } => {
                if self
                    .peers
                    .get(&session)
                    .is_some_and(|p| p.role == DtlsRole::Client)
                {
                    self.advance(now, session, out);
                }
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
        let due: Vec<SessionId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_timeout.is_some_and(|t| t <= now))
            .map(|(&s, _)| s)
            .collect();
        for session in due {
            self.advance(now, session, out);
        }
    }

    /// Runs `session`'s timers at `now` (a client's first run sends its
    /// ClientHello) and hands on what they produce.
    fn advance(&mut self, now: Instant, session: SessionId, out: &mut Vec<FromDtls>) {
        let Some(peer) = self.peers.get_mut(&session) else {
            return;
        };
        if let Err(e) = peer.dtls.handle_timeout(now) {
            self.fail(session, format!("DTLS: {e}"), out);
            return;
        }
        self.drain(session, out);
    }

    /// The earliest instant [`Self::handle_timeouts`] has work.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.peers.values().filter_map(|p| p.next_timeout).min()
    }

    fn fail(&mut self, session: SessionId, why: String, out: &mut Vec<FromDtls>) {
        self.peers.remove(&session);
        out.push(FromDtls::Failed { session, why });
    }

    fn drain(&mut self, session: SessionId, out: &mut Vec<FromDtls>) {
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
                    // be the one the peer's SDP named (RFC 8122 §5), whether
                    // the peer is the client or the server.
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
                        Some((client, server)) if !peer.done => {
                            // RFC 5764 §4.2: the client protects with the
                            // client write key and salt, the server with the
                            // server's; each unprotects with the other's.
                            let (rx, tx) = match peer.role {
                                DtlsRole::Server => (client, server),
                                DtlsRole::Client => (server, client),
                            };
                            peer.done = true;
                            debug!(%session, ?profile, "DTLS-SRTP keys exported");
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
/// Returns (client write key, server write key), each key || salt: which
/// one protects what we send depends on our role.
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
    pub fn send_datagram(&self, session: SessionId, data: Vec<u8>) -> bool {
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
/// `bell` wakes the shard when records, keys or failures wait for it.
pub fn spawn(
    index: u32,
    identity: DtlsIdentity,
    max_queued: usize,
    bell: gateway_ring::Doorbell,
) -> std::io::Result<DtlsLink> {
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
                let any = !out.is_empty();
                for m in out.drain(..) {
                    if let FromDtls::Failed { session, why } = &m {
                        warn!(shard = index, %session, "DTLS handshake failed: {why}");
                    }
                    if outbox.send(m).is_err() {
                        return;
                    }
                }
                if any {
                    bell.ring();
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

    const S1: SessionId = SessionId::new(1);
    const S7: SessionId = SessionId::new(7);
    const S99: SessionId = SessionId::new(99);

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
                session: S7,
                fingerprint: expected,
                role: DtlsRole::Server,
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
                        session: S7,
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
        // The server's last flight reached the client in the last round:
        // its export is still to be polled.
        loop {
            match client.poll_output(&mut buf) {
                Output::KeyingMaterial(km, _) => client_km = Some(km.to_vec()),
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        if let Some(FromDtls::Keys { rx, tx, .. }) = results.first() {
            let km = client_km.expect("the dimpl client finished too");
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
            matches!(r.as_slice(), [FromDtls::Keys { session: S7, .. }]),
            "{r:?}"
        );
    }

    #[test]
    fn wrong_fingerprint_fails_the_handshake() {
        let cert = dimpl::certificate::generate_self_signed_certificate().unwrap();
        let r = handshake(cert, [0xab; 32]);
        assert!(
            matches!(r.as_slice(), [FromDtls::Failed { session: S7, why }] if why.contains("fingerprint")),
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
                session: S1,
                fingerprint: [0; 32],
                role: DtlsRole::Server,
            },
            &mut out,
        );
        // A start is for a client: a server sends nothing on it.
        eps.handle(t0, ToDtls::Start { session: S1 }, &mut out);
        assert!(out.is_empty(), "{out:?}");
        for junk in [vec![22u8; 3], vec![23u8; 40], vec![20u8, 0xfe, 0xfd]] {
            eps.handle(
                t0,
                ToDtls::Datagram {
                    session: S1,
                    data: junk.clone(),
                },
                &mut out,
            );
            eps.handle(
                t0,
                ToDtls::Datagram {
                    session: S99,
                    data: junk,
                },
                &mut out,
            );
        }
        // Junk never yields keys, and a session nobody opened gets nothing.
        assert!(
            out.iter().all(|m| match m {
                FromDtls::Keys { .. } => false,
                FromDtls::Send { session, .. } | FromDtls::Failed { session, .. } => *session == S1,
            }),
            "{out:?}"
        );
    }

    const CLIENT: SessionId = SessionId::new(1);
    const SERVER: SessionId = SessionId::new(2);

    /// Our client-role endpoints (session `CLIENT`) and our server-role
    /// endpoints (session `SERVER`) on a network that delivers at once
    /// unless told to lose a datagram; time is virtual.
    struct Pair {
        now: Instant,
        client: Endpoints,
        server: Endpoints,
        /// Datagrams in flight to each side.
        to_client: Vec<Vec<u8>>,
        to_server: Vec<Vec<u8>>,
        /// What each side handed back other than datagrams.
        client_results: Vec<FromDtls>,
        server_results: Vec<FromDtls>,
    }

    impl Pair {
        /// The client checks the server's certificate against `expected`
        /// (`None`: the server's real fingerprint); the server checks the
        /// client's real one. Both are open; the client has not started.
        fn new(expected: Option<[u8; 32]>) -> Pair {
            let (client_id, server_id) = (
                DtlsIdentity::generate().unwrap(),
                DtlsIdentity::generate().unwrap(),
            );
            let now = Instant::now();
            let mut p = Pair {
                now,
                client: Endpoints::new(client_id.clone()),
                server: Endpoints::new(server_id.clone()),
                to_client: Vec::new(),
                to_server: Vec::new(),
                client_results: Vec::new(),
                server_results: Vec::new(),
            };
            let open = |session, fingerprint, role| ToDtls::Open {
                session,
                fingerprint,
                role,
            };
            let mut out = Vec::new();
            let fingerprint = expected.unwrap_or(server_id.fingerprint);
            p.client
                .handle(now, open(CLIENT, fingerprint, DtlsRole::Client), &mut out);
            p.server.handle(
                now,
                open(SERVER, client_id.fingerprint, DtlsRole::Server),
                &mut out,
            );
            assert!(out.is_empty(), "opening sends nothing: {out:?}");
            p
        }

        /// Sorts what one side handed back: datagrams into flight.
        fn sort(&mut self, from_client: bool, out: Vec<FromDtls>) {
            for m in out {
                match (m, from_client) {
                    (FromDtls::Send { data, .. }, true) => self.to_server.push(data),
                    (FromDtls::Send { data, .. }, false) => self.to_client.push(data),
                    (m, true) => self.client_results.push(m),
                    (m, false) => self.server_results.push(m),
                }
            }
        }

        fn start(&mut self) {
            let mut out = Vec::new();
            let start = ToDtls::Start { session: CLIENT };
            self.client.handle(self.now, start, &mut out);
            self.sort(true, out);
        }

        /// Both sides' timers at `at`.
        fn timeouts(&mut self, at: Instant) {
            self.now = at;
            let (mut c, mut s) = (Vec::new(), Vec::new());
            self.client.handle_timeouts(at, &mut c);
            self.server.handle_timeouts(at, &mut s);
            self.sort(true, c);
            self.sort(false, s);
        }

        /// One datagram into one side; its answers are sorted.
        fn receive(&mut self, to_client: bool, data: Vec<u8>) {
            let (eps, session) = match to_client {
                true => (&mut self.client, CLIENT),
                false => (&mut self.server, SERVER),
            };
            let mut out = Vec::new();
            eps.handle(self.now, ToDtls::Datagram { session, data }, &mut out);
            self.sort(to_client, out);
        }

        /// Delivers what is in flight, both ways, until nothing is.
        fn deliver(&mut self) {
            while !(self.to_client.is_empty() && self.to_server.is_empty()) {
                for data in std::mem::take(&mut self.to_server) {
                    self.receive(false, data);
                }
                for data in std::mem::take(&mut self.to_client) {
                    self.receive(true, data);
                }
            }
        }

        /// Both sides' keys, if both finished.
        fn keys(&self) -> Option<((SrtpKey, SrtpKey), (SrtpKey, SrtpKey))> {
            match (&self.client_results[..], &self.server_results[..]) {
                (
                    [FromDtls::Keys {
                        session: CLIENT,
                        rx: crx,
                        tx: ctx,
                    }],
                    [FromDtls::Keys {
                        session: SERVER,
                        rx: srx,
                        tx: stx,
                    }],
                ) => Some(((*crx, *ctx), (*srx, *stx))),
                _ => None,
            }
        }
    }

    /// A DTLS record of a ClientHello: handshake content (22), message type
    /// 1 after the 13-byte record header.
    fn is_client_hello(d: &[u8]) -> bool {
        d.first() == Some(&22) && d.get(13) == Some(&1)
    }

    /// Our client against our server: each side's receive key is the other
    /// side's send key (the server's split is checked against a dimpl
    /// client's raw export in `handshake_exports_split_keys`, so the
    /// client's halves are the right way round too).
    #[test]
    fn our_client_and_server_agree_on_crosswise_keys() {
        let mut p = Pair::new(None);
        p.start();
        assert!(p.to_server.iter().any(|d| is_client_hello(d)));
        p.deliver();
        let ((client_rx, client_tx), (server_rx, server_tx)) =
            p.keys().expect("both sides finished");
        assert_eq!(client_rx, server_tx);
        assert_eq!(client_tx, server_rx);
        assert_ne!(client_rx, client_tx, "two directions, two keys");
    }

    /// Opening a client sends nothing and arms no timer: without `Start`
    /// (the peer's first ICE check) it has nowhere to send its ClientHello.
    #[test]
    fn a_client_waits_for_the_start() {
        let mut p = Pair::new(None);
        assert_eq!(p.client.next_timeout(), None);
        p.timeouts(p.now + Duration::from_secs(5));
        assert!(p.to_server.is_empty() && p.client_results.is_empty());
        p.start();
        assert!(p.to_server.iter().all(|d| is_client_hello(d)));
        assert_eq!(p.to_server.len(), 1);
        assert!(p.client.next_timeout().is_some_and(|t| t > p.now));
    }

    /// The server's certificate is checked against the offer's fingerprint
    /// exactly as a client's is: a mismatch fails the session, no keys.
    #[test]
    fn a_client_fails_on_the_wrong_server_fingerprint() {
        let mut p = Pair::new(Some([0xab; 32]));
        p.start();
        p.deliver();
        assert!(
            matches!(
                p.client_results.as_slice(),
                [FromDtls::Failed { session: CLIENT, why }] if why.contains("fingerprint")
            ),
            "{:?}",
            p.client_results
        );
        assert_eq!(p.client.len(), 0, "the failed session is gone");
        assert!(
            !p.server_results
                .iter()
                .any(|m| matches!(m, FromDtls::Keys { .. })),
            "{:?}",
            p.server_results
        );
    }

    /// A lost ClientHello is sent again when the client's timer fires, not
    /// before, and the handshake then completes.
    #[test]
    fn a_lost_client_hello_is_sent_again_on_the_timer() {
        let mut p = Pair::new(None);
        p.start();
        let lost = std::mem::take(&mut p.to_server);
        assert!(lost.iter().all(|d| is_client_hello(d)) && !lost.is_empty());
        let due = p.client.next_timeout().expect("a retransmission timer");
        assert!(due > p.now);
        // Sooner than dimpl's default second (its jitter is ±25 %): FFmpeg
        // drops the first ClientHello and answers this one.
        assert!(
            due - p.now <= CLIENT_FIRST_RETRY * 5 / 4,
            "{:?}",
            due - p.now
        );
        p.timeouts(due - Duration::from_millis(1));
        assert!(p.to_server.is_empty(), "nothing before the timer");
        p.timeouts(due);
        assert!(
            !p.to_server.is_empty() && p.to_server.iter().all(|d| is_client_hello(d)),
            "the ClientHello again"
        );
        p.deliver();
        let ((client_rx, client_tx), (server_rx, server_tx)) =
            p.keys().expect("both sides finished");
        assert_eq!((client_rx, client_tx), (server_tx, server_rx));
    }

    /// A server that never answers: the client resends on its timer and
    /// gives up by the handshake timeout, and the session is failed.
    #[test]
    fn a_client_nobody_answers_fails_by_the_handshake_timeout() {
        let mut p = Pair::new(None);
        let started = p.now;
        p.start();
        let mut sent = 0;
        while p.client_results.is_empty() {
            sent += std::mem::take(&mut p.to_server).len();
            let due = p.client.next_timeout().expect("a timer while it waits");
            assert!(due <= started + HANDSHAKE_TIMEOUT, "{:?}", due - started);
            p.timeouts(due);
        }
        assert!(sent >= 3, "the ClientHello was resent: {sent}");
        assert!(
            matches!(
                p.client_results.as_slice(),
                [FromDtls::Failed {
                    session: CLIENT,
                    ..
                }]
            ),
            "{:?}",
            p.client_results
        );
        assert_eq!(p.client.len(), 0);
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
