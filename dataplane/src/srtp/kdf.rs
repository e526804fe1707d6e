//! RFC 3711 §4.3: session keys from the master key with the AES-CM PRF.
//!
//! RFC 3711 §4.3.1: "Let r = index DIV key_derivation_rate ... key_id = <label> || r.
//! Let x = key_id XOR master_salt". With a key derivation rate of zero (what
//! SDES and DTLS-SRTP use) r is 0, so x is the master salt with the label
//! XORed into octet 7, and the PRF output is the AES-CM keystream for IV x·2^16.
//! RFC 7714 §11 reuses the same PRF for the GCM suites with a 96-bit master
//! salt, which (as in libsrtp) is zero-padded on the right to 112 bits.

use aes::cipher::{KeyIvInit, StreamCipher};

type Aes128Ctr = ctr::Ctr128BE<aes::Aes128>;
type Aes256Ctr = ctr::Ctr128BE<aes::Aes256>;

/// RFC 3711 §4.3.1 and §4.3.2 labels.
#[derive(Debug, Clone, Copy)]
pub enum Label {
    RtpEncryption = 0x00,
    RtpAuth = 0x01,
    RtpSalt = 0x02,
    RtcpEncryption = 0x03,
    RtcpAuth = 0x04,
    RtcpSalt = 0x05,
}

/// Fills `out` with the PRF output for `label`. A 32-byte master key uses
/// AES-256 in the same construction (RFC 6188 §3, AES_256_CM_PRF).
///
/// # Panics
/// If `master_key` is neither 16 nor 32 bytes (callers pass a suite's key).
pub fn derive(master_key: &[u8], master_salt: &[u8], label: Label, out: &mut [u8]) {
    let mut iv = [0u8; 16];
    iv[..master_salt.len()].copy_from_slice(master_salt);
    iv[7] ^= label as u8;
    out.fill(0);
    match master_key.len() {
        16 => Aes128Ctr::new(master_key.into(), &iv.into()).apply_keystream(out),
        32 => Aes256Ctr::new(master_key.into(), &iv.into()).apply_keystream(out),
        n => panic!("SRTP master key of {n} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::srtp::test_vectors::*;

    #[test]
    fn rfc3711_b3_key_derivation() {
        let mut k = [0u8; 16];
        derive(
            &RFC3711_B3_MASTER_KEY,
            &RFC3711_B3_MASTER_SALT,
            Label::RtpEncryption,
            &mut k,
        );
        assert_eq!(k, RFC3711_B3_CIPHER_KEY);
        let mut s = [0u8; 14];
        derive(
            &RFC3711_B3_MASTER_KEY,
            &RFC3711_B3_MASTER_SALT,
            Label::RtpSalt,
            &mut s,
        );
        assert_eq!(s, RFC3711_B3_CIPHER_SALT);
        let mut a = [0u8; 20];
        derive(
            &RFC3711_B3_MASTER_KEY,
            &RFC3711_B3_MASTER_SALT,
            Label::RtpAuth,
            &mut a,
        );
        assert_eq!(a, RFC3711_B3_AUTH_KEY);
    }
}
