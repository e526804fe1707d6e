//! AES_CM_128_HMAC_SHA1_80 (RFC 3711 §4.1.1 and §4.2.1), in place.
//!
//! Primitives come from crates: AES-CTR from RustCrypto `aes`/`ctr` (AES-NI),
//! HMAC-SHA1 from `ring`. Only the SRTP framing around them is ours.

use aes::cipher::{InnerIvInit, KeyInit, StreamCipher};
use ring::hmac;

use super::kdf::{derive, Label};

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;

/// RFC 3711 §5.2: "the default authentication tag length ... SHALL be 80 bits".
pub const TAG_LEN: usize = 10;

/// Session keys of one direction of RTP or RTCP.
pub struct CmKeys {
    aes: aes::Aes128,
    salt: [u8; 14],
    auth: hmac::Key,
}

impl CmKeys {
    pub fn derive(master_key: &[u8; 16], master_salt: &[u8], rtcp: bool) -> CmKeys {
        let (le, la, ls) = if rtcp {
            (Label::RtcpEncryption, Label::RtcpAuth, Label::RtcpSalt)
        } else {
            (Label::RtpEncryption, Label::RtpAuth, Label::RtpSalt)
        };
        let mut k = [0u8; 16];
        let mut a = [0u8; 20];
        let mut salt = [0u8; 14];
        derive(master_key, master_salt, le, &mut k);
        derive(master_key, master_salt, la, &mut a);
        derive(master_key, master_salt, ls, &mut salt);
        CmKeys {
            aes: aes::Aes128::new(&k.into()),
            salt,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &a),
        }
    }

    /// RFC 3711 §4.1.1: "IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)".
    pub fn iv(&self, ssrc: u32, index: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(&self.salt);
        for (d, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *d ^= s;
        }
        for (d, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *d ^= s;
        }
        iv
    }

    /// Encrypts or decrypts `data` (the same operation in counter mode).
    pub fn apply_keystream(&self, ssrc: u32, index: u64, data: &mut [u8]) {
        let iv = self.iv(ssrc, index);
        // Cloning the expanded key schedule is a copy of a few hundred bytes,
        // far cheaper than expanding the key per packet.
        let core = ctr::CtrCore::<aes::Aes128, ctr::flavors::Ctr128BE>::inner_iv_init(
            self.aes.clone(),
            &iv.into(),
        );
        Aes128Ctr::from_core(core).apply_keystream(data);
    }

    /// HMAC-SHA1 over `authenticated || trailer`, truncated to 80 bits.
    pub fn tag(&self, authenticated: &[u8], trailer: &[u8]) -> [u8; TAG_LEN] {
        let mut ctx = hmac::Context::with_key(&self.auth);
        ctx.update(authenticated);
        ctx.update(trailer);
        let full = ctx.sign();
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(&full.as_ref()[..TAG_LEN]);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::test_vectors::*;

    /// RFC 3711 B.2: keystream for SSRC 0, index 0 from the session key and salt.
    #[test]
    fn rfc3711_b2_keystream() {
        let keys = CmKeys {
            aes: aes::Aes128::new(&RFC3711_B2_SESSION_KEY.into()),
            salt: RFC3711_B2_SESSION_SALT,
            auth: hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &[0; 20]),
        };
        let mut zeros = [0u8; 48];
        keys.apply_keystream(0, 0, &mut zeros);
        let want: Vec<u8> = RFC3711_B2_KEYSTREAM.iter().flat_map(|b| hex(b)).collect();
        assert_eq!(zeros.to_vec(), want);
    }
}
