//! AEAD_AES_128_GCM and AEAD_AES_256_GCM for SRTP and SRTCP (RFC 7714), in
//! place on `ring`'s AES-GCM.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};

use super::kdf::{derive, Label};

/// RFC 7714 §7: the 16-octet authentication tag.
pub const TAG_LEN: usize = 16;

pub struct GcmKeys {
    aead: LessSafeKey,
    salt: [u8; 12],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unauthentic;

impl GcmKeys {
    /// `master_key` is 16 bytes (AEAD_AES_128_GCM) or 32 (AEAD_AES_256_GCM).
    pub fn derive(master_key: &[u8], master_salt: &[u8], rtcp: bool) -> GcmKeys {
        let (le, ls) = if rtcp {
            (Label::RtcpEncryption, Label::RtcpSalt)
        } else {
            (Label::RtpEncryption, Label::RtpSalt)
        };
        let mut k = [0u8; 32];
        let k = &mut k[..master_key.len()];
        let mut salt = [0u8; 12];
        derive(master_key, master_salt, le, k);
        derive(master_key, master_salt, ls, &mut salt);
        GcmKeys::from_session(k, salt)
    }

    /// # Panics
    /// If `key` is neither 16 nor 32 bytes.
    pub fn from_session(key: &[u8], salt: [u8; 12]) -> GcmKeys {
        let alg = if key.len() == 32 {
            &AES_256_GCM
        } else {
            &AES_128_GCM
        };
        let unbound = UnboundKey::new(alg, key).expect("16- or 32-byte AES key");
        GcmKeys {
            aead: LessSafeKey::new(unbound),
            salt,
        }
    }

    /// RFC 7714 §8.1: "IV = (00 || 00 || SSRC || ROC || SEQ) XOR salt".
    pub fn rtp_iv(&self, ssrc: u32, index: u64) -> [u8; 12] {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
        self.xor_salt(iv)
    }

    /// RFC 7714 §9.1: "IV = (00 || 00 || SSRC || 00 || 00 || 0 || SRTCP index) XOR salt".
    pub fn rtcp_iv(&self, ssrc: u32, index: u32) -> [u8; 12] {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[8..12].copy_from_slice(&(index & 0x7fff_ffff).to_be_bytes());
        self.xor_salt(iv)
    }

    fn xor_salt(&self, mut iv: [u8; 12]) -> [u8; 12] {
        for (d, s) in iv.iter_mut().zip(self.salt) {
            *d ^= s;
        }
        iv
    }

    /// Encrypts `plaintext` in place and returns the tag to append.
    pub fn seal(&self, iv: [u8; 12], aad: &[u8], plaintext: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = self
            .aead
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), plaintext)
            // ring fails only for inputs beyond GCM's 64 GiB limit.
            .expect("packet far below the AES-GCM size limit");
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag.as_ref());
        t
    }

    /// Decrypts `ciphertext || tag` in place; returns the plaintext length.
    pub fn open(&self, iv: [u8; 12], aad: &[u8], sealed: &mut [u8]) -> Result<usize, Unauthentic> {
        self.aead
            .open_in_place(Nonce::assume_unique_for_key(iv), Aad::from(aad), sealed)
            .map(|p| p.len())
            .map_err(|_| Unauthentic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::test_vectors::*;

    #[test]
    fn rfc7714_ivs() {
        let k = GcmKeys::from_session(&RFC7714_KEY, RFC7714_SALT);
        assert_eq!(k.rtp_iv(0x5501_a0b2, 0xf17b), RFC7714_RTP_IV);
        assert_eq!(k.rtcp_iv(0x4d61_7273, 0x5d4), RFC7714_RTCP_IV);
    }
}
