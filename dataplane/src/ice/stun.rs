//! STUN messages (RFC 5389) as far as an ICE-lite server needs them: parse a
//! Binding request in place, check MESSAGE-INTEGRITY and FINGERPRINT, and
//! write a Binding success response into a caller-owned buffer.
//!
//! HMAC-SHA1 comes from `ring`, CRC-32 from `crc32fast`; only the framing is
//! written here. Nothing allocates.

use std::net::{Ipv4Addr, SocketAddrV4};

use ring::hmac;

pub const MAGIC_COOKIE: u32 = 0x2112_A442;
pub const HEADER_LEN: usize = 20;
/// RFC 5389 §15.5: the CRC-32 is XOR'ed with this so STUN is told from other CRC'd protocols.
const FINGERPRINT_XOR: u32 = 0x5354_554e;
const INTEGRITY_LEN: usize = 20;

pub const BINDING_REQUEST: u16 = 0x0001;
pub const BINDING_INDICATION: u16 = 0x0011;
pub const BINDING_SUCCESS: u16 = 0x0101;

/// Attribute types used here (RFC 5389 §18.2, RFC 8445 §16.1).
pub mod attr {
    pub const USERNAME: u16 = 0x0006;
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    pub const PRIORITY: u16 = 0x0024;
    pub const USE_CANDIDATE: u16 = 0x0025;
    pub const SOFTWARE: u16 = 0x8022;
    pub const FINGERPRINT: u16 = 0x8028;
    pub const ICE_CONTROLLED: u16 = 0x8029;
    pub const ICE_CONTROLLING: u16 = 0x802A;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StunError {
    #[error("shorter than a STUN header")]
    TooShort,
    #[error("not a STUN message (top bits or magic cookie)")]
    NotStun,
    #[error("length field disagrees with the datagram")]
    BadLength,
    #[error("an attribute runs past the end of the message")]
    AttributeOverrun,
    #[error("attributes after FINGERPRINT")]
    AfterFingerprint,
    #[error("no room in the output buffer")]
    NoRoom,
}

/// A parsed view of one STUN message; attribute positions are offsets into `buf`.
#[derive(Debug)]
pub struct Message<'a> {
    buf: &'a [u8],
    pub kind: u16,
    pub transaction_id: [u8; 12],
    username: Option<(usize, usize)>,
    /// Offset of the MESSAGE-INTEGRITY attribute's header.
    integrity_at: Option<usize>,
    /// Offset of the FINGERPRINT attribute's header.
    fingerprint_at: Option<usize>,
    xor_mapped: Option<(usize, usize)>,
    pub priority: Option<u32>,
    pub use_candidate: bool,
    pub ice_controlling: bool,
    pub ice_controlled: bool,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl<'a> Message<'a> {
    pub fn parse(buf: &'a [u8]) -> Result<Message<'a>, StunError> {
        if buf.len() < HEADER_LEN {
            return Err(StunError::TooShort);
        }
        // RFC 5389 §6: "The most significant 2 bits of every STUN message MUST be zeroes."
        if buf[0] & 0xc0 != 0 || be32(buf, 4) != MAGIC_COOKIE {
            return Err(StunError::NotStun);
        }
        let len = be16(buf, 2) as usize;
        if !len.is_multiple_of(4) || HEADER_LEN + len != buf.len() {
            return Err(StunError::BadLength);
        }
        let mut m = Message {
            buf,
            kind: be16(buf, 0),
            transaction_id: buf[8..20]
                .try_into()
                .expect("12 bytes after the 20-byte check"),
            username: None,
            integrity_at: None,
            fingerprint_at: None,
            xor_mapped: None,
            priority: None,
            use_candidate: false,
            ice_controlling: false,
            ice_controlled: false,
        };
        let mut at = HEADER_LEN;
        while at < buf.len() {
            if m.fingerprint_at.is_some() {
                return Err(StunError::AfterFingerprint);
            }
            if at + 4 > buf.len() {
                return Err(StunError::AttributeOverrun);
            }
            let (typ, vlen) = (be16(buf, at), be16(buf, at + 2) as usize);
            let value = at + 4;
            if value + vlen > buf.len() {
                return Err(StunError::AttributeOverrun);
            }
            // RFC 5389 §15.4: attributes after MESSAGE-INTEGRITY other than
            // FINGERPRINT are ignored.
            let counted = m.integrity_at.is_none() || typ == attr::FINGERPRINT;
            match typ {
                _ if !counted => {}
                attr::USERNAME => m.username = Some((value, vlen)),
                attr::MESSAGE_INTEGRITY if vlen == INTEGRITY_LEN => m.integrity_at = Some(at),
                attr::FINGERPRINT if vlen == 4 => m.fingerprint_at = Some(at),
                attr::XOR_MAPPED_ADDRESS => m.xor_mapped = Some((value, vlen)),
                attr::PRIORITY if vlen == 4 => m.priority = Some(be32(buf, value)),
                attr::USE_CANDIDATE => m.use_candidate = true,
                attr::ICE_CONTROLLING => m.ice_controlling = true,
                attr::ICE_CONTROLLED => m.ice_controlled = true,
                _ => {}
            }
            at = value + vlen.next_multiple_of(4);
        }
        if at != buf.len() {
            return Err(StunError::AttributeOverrun);
        }
        Ok(m)
    }

    pub fn username(&self) -> Option<&'a [u8]> {
        self.username.map(|(at, len)| &self.buf[at..at + len])
    }

    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// RFC 5389 §15.4: HMAC-SHA1 with the short-term password over the message
    /// up to MESSAGE-INTEGRITY, with the length field covering MESSAGE-INTEGRITY.
    pub fn verify_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let tag = integrity(self.buf, at, key);
        let got = &self.buf[at + 4..at + 4 + INTEGRITY_LEN];
        crate::srtp::tags_equal(tag.as_ref(), got)
    }

    /// `None` without a FINGERPRINT attribute, else whether it matches.
    pub fn verify_fingerprint(&self) -> Option<bool> {
        let at = self.fingerprint_at?;
        Some(fingerprint(self.buf, at) == be32(self.buf, at + 4))
    }

    /// The XOR-MAPPED-ADDRESS of a response, for IPv4.
    pub fn xor_mapped_address(&self) -> Option<SocketAddrV4> {
        let (at, len) = self.xor_mapped?;
        if len != 8 || self.buf[at + 1] != 0x01 {
            return None;
        }
        let port = be16(self.buf, at + 2) ^ (MAGIC_COOKIE >> 16) as u16;
        let ip = be32(self.buf, at + 4) ^ MAGIC_COOKIE;
        Some(SocketAddrV4::new(Ipv4Addr::from(ip), port))
    }
}

/// The header with its length field set as if the message ended at `end`.
fn header_ending_at(buf: &[u8], end: usize) -> [u8; HEADER_LEN] {
    let mut h: [u8; HEADER_LEN] = buf[..HEADER_LEN]
        .try_into()
        .expect("caller parsed a header");
    h[2..4].copy_from_slice(&((end - HEADER_LEN) as u16).to_be_bytes());
    h
}

fn integrity(buf: &[u8], at: usize, key: &[u8]) -> hmac::Tag {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(&header_ending_at(buf, at + 4 + INTEGRITY_LEN));
    ctx.update(&buf[HEADER_LEN..at]);
    ctx.sign()
}

fn fingerprint(buf: &[u8], at: usize) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header_ending_at(buf, at + 8));
    h.update(&buf[HEADER_LEN..at]);
    h.finalize() ^ FINGERPRINT_XOR
}

/// Builds a message in a caller-owned buffer. Attributes go in call order;
/// `integrity` and `fingerprint` come last, in that order.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Writer<'a> {
    pub fn new(
        buf: &'a mut [u8],
        kind: u16,
        transaction_id: &[u8; 12],
    ) -> Result<Writer<'a>, StunError> {
        if buf.len() < HEADER_LEN {
            return Err(StunError::NoRoom);
        }
        buf[0..2].copy_from_slice(&kind.to_be_bytes());
        buf[2..4].fill(0);
        buf[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        buf[8..20].copy_from_slice(transaction_id);
        Ok(Writer {
            buf,
            len: HEADER_LEN,
        })
    }

    pub fn attribute(&mut self, typ: u16, value: &[u8]) -> Result<(), StunError> {
        let padded = value.len().next_multiple_of(4);
        let end = self.len + 4 + padded;
        if end > self.buf.len() || value.len() > u16::MAX as usize {
            return Err(StunError::NoRoom);
        }
        let b = &mut self.buf[self.len..end];
        b[0..2].copy_from_slice(&typ.to_be_bytes());
        b[2..4].copy_from_slice(&(value.len() as u16).to_be_bytes());
        b[4..4 + value.len()].copy_from_slice(value);
        b[4 + value.len()..].fill(0);
        self.len = end;
        self.buf[2..4].copy_from_slice(&((self.len - HEADER_LEN) as u16).to_be_bytes());
        Ok(())
    }

    /// RFC 5389 §15.2: port XOR the cookie's top 16 bits, address XOR the cookie.
    pub fn xor_mapped_address(&mut self, addr: SocketAddrV4) -> Result<(), StunError> {
        let mut v = [0u8; 8];
        v[1] = 0x01; // IPv4
        v[2..4].copy_from_slice(&(addr.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes());
        v[4..8].copy_from_slice(&(u32::from(*addr.ip()) ^ MAGIC_COOKIE).to_be_bytes());
        self.attribute(attr::XOR_MAPPED_ADDRESS, &v)
    }

    pub fn integrity(&mut self, key: &[u8]) -> Result<(), StunError> {
        let at = self.len;
        self.attribute(attr::MESSAGE_INTEGRITY, &[0; INTEGRITY_LEN])?;
        let tag = integrity(self.buf, at, key);
        self.buf[at + 4..at + 4 + INTEGRITY_LEN].copy_from_slice(tag.as_ref());
        Ok(())
    }

    pub fn fingerprint(&mut self) -> Result<(), StunError> {
        let at = self.len;
        self.attribute(attr::FINGERPRINT, &[0; 4])?;
        let crc = fingerprint(self.buf, at);
        self.buf[at + 4..at + 8].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }

    /// The message's length on the wire.
    pub fn finish(self) -> usize {
        self.len
    }
}

/// The body of the `stun_parse` fuzz target: any bytes parse or fail cleanly,
/// and every check on a parsed message runs without panicking.
pub fn fuzz_parse(data: &[u8]) {
    if let Ok(m) = Message::parse(data) {
        let _ = m.verify_integrity(b"key");
        let _ = m.verify_fingerprint();
        let _ = m.xor_mapped_address();
        let _ = m.username();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// RFC 5769 §2.1 "Sample Request": SOFTWARE, PRIORITY, ICE-CONTROLLED,
    /// USERNAME "evtj:h6vY", MESSAGE-INTEGRITY, FINGERPRINT.
    pub const RFC5769_REQUEST: [u8; 108] = [
        0x00, 0x01, 0x00, 0x58, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x10, 0x53, 0x54, 0x55, 0x4e, 0x20, 0x74,
        0x65, 0x73, 0x74, 0x20, 0x63, 0x6c, 0x69, 0x65, 0x6e, 0x74, 0x00, 0x24, 0x00, 0x04, 0x6e,
        0x00, 0x01, 0xff, 0x80, 0x29, 0x00, 0x08, 0x93, 0x2f, 0xf9, 0xb1, 0x51, 0x26, 0x3b, 0x36,
        0x00, 0x06, 0x00, 0x09, 0x65, 0x76, 0x74, 0x6a, 0x3a, 0x68, 0x36, 0x76, 0x59, 0x20, 0x20,
        0x20, 0x00, 0x08, 0x00, 0x14, 0x9a, 0xea, 0xa7, 0x0c, 0xbf, 0xd8, 0xcb, 0x56, 0x78, 0x1e,
        0xf2, 0xb5, 0xb2, 0xd3, 0xf2, 0x49, 0xc1, 0xb5, 0x71, 0xa2, 0x80, 0x28, 0x00, 0x04, 0xe5,
        0x7a, 0x3b, 0xcf,
    ];
    /// RFC 5769 §2.2 "Sample IPv4 Response": SOFTWARE, XOR-MAPPED-ADDRESS
    /// 192.0.2.1:32853, MESSAGE-INTEGRITY, FINGERPRINT.
    pub const RFC5769_IPV4_RESPONSE: [u8; 80] = [
        0x01, 0x01, 0x00, 0x3c, 0x21, 0x12, 0xa4, 0x42, 0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6,
        0x86, 0xfa, 0x87, 0xdf, 0xae, 0x80, 0x22, 0x00, 0x0b, 0x74, 0x65, 0x73, 0x74, 0x20, 0x76,
        0x65, 0x63, 0x74, 0x6f, 0x72, 0x20, 0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1,
        0x12, 0xa6, 0x43, 0x00, 0x08, 0x00, 0x14, 0x2b, 0x91, 0xf5, 0x99, 0xfd, 0x9e, 0x90, 0xc3,
        0x8c, 0x74, 0x89, 0xf9, 0x2a, 0xf9, 0xba, 0x53, 0xf0, 0x6b, 0xe7, 0xd7, 0x80, 0x28, 0x00,
        0x04, 0xc0, 0x7d, 0x4c, 0x96,
    ];
    pub const RFC5769_PASSWORD: &[u8] = b"VOkJxbRl1RmTxUk/WvJxBt";
    const RFC5769_MAPPED: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 32853);

    #[test]
    fn rfc5769_request_parses_and_verifies() {
        let m = Message::parse(&RFC5769_REQUEST).unwrap();
        assert_eq!(m.kind, BINDING_REQUEST);
        assert_eq!(m.username(), Some(&b"evtj:h6vY"[..]));
        assert_eq!(m.priority, Some(0x6e0001ff));
        assert!(m.ice_controlled && !m.ice_controlling && !m.use_candidate);
        assert!(m.verify_integrity(RFC5769_PASSWORD));
        assert!(!m.verify_integrity(b"wrong password"));
        assert_eq!(m.verify_fingerprint(), Some(true));
    }

    #[test]
    fn rfc5769_response_parses_and_verifies() {
        let m = Message::parse(&RFC5769_IPV4_RESPONSE).unwrap();
        assert_eq!(m.kind, BINDING_SUCCESS);
        assert_eq!(m.xor_mapped_address(), Some(RFC5769_MAPPED));
        assert!(m.verify_integrity(RFC5769_PASSWORD));
        assert_eq!(m.verify_fingerprint(), Some(true));
    }

    #[test]
    fn writer_reproduces_the_rfc5769_response_bytes() {
        // The vector pads SOFTWARE with a space; padding is free-form, so
        // write the same byte to compare the whole message.
        let mut out = [0u8; 128];
        let tx: [u8; 12] = RFC5769_IPV4_RESPONSE[8..20].try_into().unwrap();
        let mut w = Writer::new(&mut out, BINDING_SUCCESS, &tx).unwrap();
        w.attribute(attr::SOFTWARE, b"test vector").unwrap();
        w.buf[w.len - 1] = b' ';
        w.xor_mapped_address(RFC5769_MAPPED).unwrap();
        w.integrity(RFC5769_PASSWORD).unwrap();
        w.fingerprint().unwrap();
        let n = w.finish();
        assert_eq!(&out[..n], &RFC5769_IPV4_RESPONSE[..]);
    }

    #[test]
    fn tampering_is_detected() {
        let mut pkt = RFC5769_REQUEST;
        pkt[30] ^= 1; // inside SOFTWARE, covered by both checks
        let m = Message::parse(&pkt).unwrap();
        assert!(!m.verify_integrity(RFC5769_PASSWORD));
        assert_eq!(m.verify_fingerprint(), Some(false));
    }

    #[test]
    fn malformed_messages_are_errors() {
        assert_eq!(
            Message::parse(&RFC5769_REQUEST[..19]).unwrap_err(),
            StunError::TooShort
        );
        let mut p = RFC5769_REQUEST;
        p[4] = 0;
        assert_eq!(Message::parse(&p).unwrap_err(), StunError::NotStun);
        assert_eq!(
            Message::parse(&RFC5769_REQUEST[..104]).unwrap_err(),
            StunError::BadLength
        );
        let mut p = RFC5769_REQUEST;
        p[23] = 0xff; // SOFTWARE claims 255 bytes
        assert_eq!(Message::parse(&p).unwrap_err(), StunError::AttributeOverrun);
        let mut p = RFC5769_REQUEST.to_vec();
        p.extend_from_slice(&[0x80, 0x22, 0, 0]); // after FINGERPRINT
        p[3] += 4;
        assert_eq!(Message::parse(&p).unwrap_err(), StunError::AfterFingerprint);
        for n in 0..RFC5769_REQUEST.len() {
            fuzz_parse(&RFC5769_REQUEST[..n]);
        }
    }
}
