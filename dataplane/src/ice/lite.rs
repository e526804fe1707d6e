//! The ICE-lite side of one WebRTC session (RFC 8445 §2.5, §7.3).
//!
//! A lite agent has only host candidates, never sends checks, and answers
//! the full agent's Binding requests. It is always controlled: the peer picks
//! the pair with USE-CANDIDATE, and media goes to that address.
//!
//! Drive loop (sans-IO, time is an argument):
//!
//! ```text
//! datagram classified as STUN  ─▶ handle_stun(now, src, pkt, out)
//!                                    Ok(n)  → send out[..n] back to src
//!                                    Err(d) → count d, send nothing
//! every turn / timer           ─▶ consent_expired(now) → close the session
//! sending media                ─▶ remote() → where to send
//! ```

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use super::stun::{self, Message, Writer};

/// RFC 7675 §5.1: consent expires 30 s after the last successful check.
pub const CONSENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a STUN datagram got no answer; each is counted by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StunDrop {
    /// Does not parse as STUN.
    Malformed,
    /// Not a Binding request (indications are consumed silently as keep-alives).
    NotARequest,
    /// USERNAME missing or not `<our ufrag>:<their ufrag>`.
    WrongUser,
    /// MESSAGE-INTEGRITY missing or wrong: not someone holding our password.
    BadIntegrity,
    /// FINGERPRINT present but wrong.
    BadFingerprint,
    /// The output buffer is too small for the response.
    NoRoom,
}

pub struct IceLite {
    local_ufrag: Box<[u8]>,
    local_pwd: Box<[u8]>,
    /// The peer's ufrag from its SDP, if known: checked against USERNAME.
    remote_ufrag: Option<Box<[u8]>>,
    nominated: Option<SocketAddrV4>,
    last_valid: Option<(SocketAddrV4, Instant)>,
}

impl IceLite {
    pub fn new(local_ufrag: &str, local_pwd: &str, remote_ufrag: Option<&str>) -> IceLite {
        IceLite {
            local_ufrag: local_ufrag.as_bytes().into(),
            local_pwd: local_pwd.as_bytes().into(),
            remote_ufrag: remote_ufrag.map(|u| u.as_bytes().into()),
            nominated: None,
            last_valid: None,
        }
    }

    /// Answers a Binding request from `src`: writes the success response into
    /// `out` and returns its length.
    pub fn handle_stun(
        &mut self,
        now: Instant,
        src: SocketAddrV4,
        pkt: &[u8],
        out: &mut [u8],
    ) -> Result<usize, StunDrop> {
        let m = Message::parse(pkt).map_err(|_| StunDrop::Malformed)?;
        if m.kind != stun::BINDING_REQUEST {
            return Err(StunDrop::NotARequest);
        }
        // RFC 8445 §7.3: USERNAME is "<receiver's ufrag>:<sender's ufrag>".
        let user = m.username().ok_or(StunDrop::WrongUser)?;
        let ours = &self.local_ufrag[..];
        let theirs = match user.split_at_checked(ours.len()) {
            Some((head, rest)) if head == ours && rest.first() == Some(&b':') => &rest[1..],
            _ => return Err(StunDrop::WrongUser),
        };
        if self.remote_ufrag.as_deref().is_some_and(|r| r != theirs) {
            return Err(StunDrop::WrongUser);
        }
        if !m.verify_integrity(&self.local_pwd) {
            return Err(StunDrop::BadIntegrity);
        }
        if m.verify_fingerprint() == Some(false) {
            return Err(StunDrop::BadFingerprint);
        }
        // A valid check: consent is refreshed (RFC 7675 §5.1) and, with
        // USE-CANDIDATE, this address becomes the selected pair.
        self.last_valid = Some((src, now));
        if m.use_candidate {
            self.nominated = Some(src);
        }
        let mut w = Writer::new(out, stun::BINDING_SUCCESS, &m.transaction_id)
            .map_err(|_| StunDrop::NoRoom)?;
        w.xor_mapped_address(src).map_err(|_| StunDrop::NoRoom)?;
        w.integrity(&self.local_pwd).map_err(|_| StunDrop::NoRoom)?;
        w.fingerprint().map_err(|_| StunDrop::NoRoom)?;
        Ok(w.finish())
    }

    /// Where to send media: the nominated address, or before nomination the
    /// last address that passed a check.
    pub fn remote(&self) -> Option<SocketAddrV4> {
        self.nominated.or(self.last_valid.map(|(a, _)| a))
    }

    /// Whether `src` has proven it holds our password (a valid check came from
    /// it): only such an address may do DTLS and send media.
    pub fn is_verified(&self, src: SocketAddrV4) -> bool {
        self.nominated == Some(src) || self.last_valid.is_some_and(|(a, _)| a == src)
    }

    pub fn nominated(&self) -> bool {
        self.nominated.is_some()
    }

    /// True once no valid check has arrived for [`CONSENT_TIMEOUT`]; a
    /// session that never got one expires that long after `created`.
    pub fn consent_expired(&self, now: Instant, created: Instant) -> bool {
        let since = self.last_valid.map_or(created, |(_, t)| t);
        now.saturating_duration_since(since) >= CONSENT_TIMEOUT
    }
}

#[cfg(test)]
mod tests {
    use super::super::stun::tests::{RFC5769_PASSWORD, RFC5769_REQUEST};
    use super::super::stun::{attr, BINDING_INDICATION};
    use super::*;

    fn src() -> SocketAddrV4 {
        "192.0.2.1:32853".parse().unwrap()
    }

    /// A Binding request as a browser sends it.
    fn request(user: &str, pwd: &[u8], use_candidate: bool) -> Vec<u8> {
        let mut buf = [0u8; 256];
        let mut w = Writer::new(&mut buf, stun::BINDING_REQUEST, &[7; 12]).unwrap();
        w.attribute(attr::USERNAME, user.as_bytes()).unwrap();
        w.attribute(attr::ICE_CONTROLLING, &[1; 8]).unwrap();
        if use_candidate {
            w.attribute(attr::USE_CANDIDATE, &[]).unwrap();
        }
        w.integrity(pwd).unwrap();
        w.fingerprint().unwrap();
        let n = w.finish();
        buf[..n].to_vec()
    }

    #[test]
    fn answers_the_rfc5769_request_with_a_verifiable_response() {
        // In the vector, "evtj" is the receiver's ufrag and "h6vY" the sender's.
        let mut ice = IceLite::new("evtj", "VOkJxbRl1RmTxUk/WvJxBt", Some("h6vY"));
        let now = Instant::now();
        let mut out = [0u8; 128];
        let n = ice
            .handle_stun(now, src(), &RFC5769_REQUEST, &mut out)
            .unwrap();
        let r = Message::parse(&out[..n]).unwrap();
        assert_eq!(r.kind, stun::BINDING_SUCCESS);
        assert_eq!(r.transaction_id, RFC5769_REQUEST[8..20]);
        assert_eq!(r.xor_mapped_address(), Some(src()));
        assert!(r.verify_integrity(RFC5769_PASSWORD));
        assert_eq!(r.verify_fingerprint(), Some(true));
        assert_eq!(
            ice.remote(),
            Some(src()),
            "a valid check sets the remote before nomination"
        );
        assert!(!ice.nominated());
    }

    #[test]
    fn use_candidate_nominates_and_consent_expires() {
        let t0 = Instant::now();
        let mut ice = IceLite::new("local", "localpassword1234567890", None);
        let mut out = [0u8; 128];
        assert!(!ice.consent_expired(t0 + Duration::from_secs(29), t0));
        assert!(
            ice.consent_expired(t0 + CONSENT_TIMEOUT, t0),
            "never checked"
        );
        let req = request("local:remote", b"localpassword1234567890", true);
        ice.handle_stun(t0 + Duration::from_secs(10), src(), &req, &mut out)
            .unwrap();
        assert!(ice.nominated());
        assert!(!ice.consent_expired(t0 + Duration::from_secs(39), t0));
        assert!(ice.consent_expired(t0 + Duration::from_secs(40), t0));
        // A later check without USE-CANDIDATE from elsewhere keeps the nomination.
        let other: SocketAddrV4 = "192.0.2.9:1000".parse().unwrap();
        let req = request("local:remote", b"localpassword1234567890", false);
        ice.handle_stun(t0 + Duration::from_secs(41), other, &req, &mut out)
            .unwrap();
        assert_eq!(ice.remote(), Some(src()));
    }

    #[test]
    fn wrong_credentials_get_no_answer() {
        let t0 = Instant::now();
        let mut ice = IceLite::new("local", "localpassword1234567890", Some("remote"));
        let mut out = [0u8; 128];
        let mut try_ = |pkt: &[u8]| ice.handle_stun(t0, src(), pkt, &mut out);
        let pwd = b"localpassword1234567890";
        assert_eq!(
            try_(&request("other:remote", pwd, true)),
            Err(StunDrop::WrongUser)
        );
        assert_eq!(
            try_(&request("local:stranger", pwd, true)),
            Err(StunDrop::WrongUser)
        );
        assert_eq!(
            try_(&request("localx:remote", pwd, true)),
            Err(StunDrop::WrongUser)
        );
        assert_eq!(try_(&request("loc", pwd, true)), Err(StunDrop::WrongUser));
        assert_eq!(
            try_(&request("local:remote", b"guess", true)),
            Err(StunDrop::BadIntegrity)
        );
        assert_eq!(try_(b"\x00\x01junk"), Err(StunDrop::Malformed));
        let mut ind = request("local:remote", pwd, false);
        ind[0..2].copy_from_slice(&BINDING_INDICATION.to_be_bytes());
        assert_eq!(try_(&ind), Err(StunDrop::NotARequest));
        let mut bad_fp = request("local:remote", pwd, false);
        let last = bad_fp.len() - 1;
        bad_fp[last] ^= 0xff;
        assert_eq!(try_(&bad_fp), Err(StunDrop::BadFingerprint));
        assert_eq!(ice.remote(), None, "nothing was accepted");
        assert_eq!(
            ice.handle_stun(
                t0,
                src(),
                &request("local:remote", pwd, false),
                &mut [0u8; 40]
            ),
            Err(StunDrop::NoRoom)
        );
    }
}
