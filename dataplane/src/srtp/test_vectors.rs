//! Published test vectors, shared by the unit tests and the benches.
#![allow(dead_code)]

/// RFC 3711 Appendix B.2: AES-CM keystream.
pub const RFC3711_B2_SESSION_KEY: [u8; 16] = hex16("2B7E151628AED2A6ABF7158809CF4F3C");
pub const RFC3711_B2_SESSION_SALT: [u8; 14] = hex14("F0F1F2F3F4F5F6F7F8F9FAFBFCFD");
/// Keystream blocks 0, 1 and 2 for SSRC 0, index 0.
pub const RFC3711_B2_KEYSTREAM: [&str; 3] = [
    "E03EAD0935C95E80E166B16DD92B4EB4",
    "D23513162B02D0F72A43A2FE4A5F97AB",
    "41E95B3BB0A2E8DD477901E4FCA894C0",
];

/// RFC 3711 Appendix B.3: key derivation.
pub const RFC3711_B3_MASTER_KEY: [u8; 16] = hex16("E1F97A0D3E018BE0D64FA32C06DE4139");
pub const RFC3711_B3_MASTER_SALT: [u8; 14] = hex14("0EC675AD498AFEEBB6960B3AABE6");
pub const RFC3711_B3_CIPHER_KEY: [u8; 16] = hex16("C61E7A93744F39EE10734AFE3FF7A087");
pub const RFC3711_B3_CIPHER_SALT: [u8; 14] = hex14("30CBBC08863D8C85D49DB34A9AE1");
pub const RFC3711_B3_AUTH_KEY: [u8; 20] = hex20("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4");

/// RFC 7714 §16.1: AEAD_AES_128_GCM, session key and salt given directly.
pub const RFC7714_KEY: [u8; 16] = hex16("000102030405060708090a0b0c0d0e0f");
pub const RFC7714_SALT: [u8; 12] = hex12("517569642070726f2071756f");
/// §16.1 plaintext RTP packet (12-byte header, "Gallia est omnis divisa in partes tres").
pub const RFC7714_RTP: &str = "8040f17b8041f8d35501a0b247616c6c696120657374206f6d6e69732064697669736120696e207061727465732074726573";
/// §16.1 IV for that packet (ROC 0).
pub const RFC7714_RTP_IV: [u8; 12] = hex12("51753c6580c2726f20718414");
/// §16.1.1 protected packet: header, ciphertext, 16-byte tag.
pub const RFC7714_SRTP: &str = "8040f17b8041f8d35501a0b2f24de3a3fb34de6cacba861c9d7e4bcabe633bd50d294e6f42a5f47a51c7d19b36de3adf8833899d7f27beb16a9152cf765ee4390cce";
/// §17 SRTCP IV for SSRC "Mars" (0x4d617273) and SRTCP index 0x5d4.
pub const RFC7714_RTCP_IV: [u8; 12] = hex12("517524055203726f207170bb");

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => panic!("not hex"),
    }
}

const fn hexn<const N: usize>(s: &str) -> [u8; N] {
    let b = s.as_bytes();
    assert!(b.len() == 2 * N);
    let mut out = [0u8; N];
    let mut i = 0;
    while i < N {
        out[i] = nibble(b[2 * i]) << 4 | nibble(b[2 * i + 1]);
        i += 1;
    }
    out
}
const fn hex12(s: &str) -> [u8; 12] {
    hexn(s)
}
const fn hex14(s: &str) -> [u8; 14] {
    hexn(s)
}
const fn hex16(s: &str) -> [u8; 16] {
    hexn(s)
}
const fn hex20(s: &str) -> [u8; 20] {
    hexn(s)
}
