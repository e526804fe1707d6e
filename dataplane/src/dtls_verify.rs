//! The check of a DTLS peer's signature (its ServerKeyExchange, or a
//! client's CertificateVerify) against its certificate: dimpl's own, plus
//! ECDSA on P-224.
//!
//! Why P-224: FFmpeg's WHIP muxer, built on GnuTLS (Debian's, and the
//! FFmpeg 8 that PyAV bundles), makes its self-signed certificate on
//! P-224; dimpl's verifier (aws-lc-rs) knows P-256 and P-384 only, so the
//! handshake failed with "unsupported EC curve". WebRTC authenticates the
//! certificate by the SDP fingerprint, not by its curve, so any curve a
//! browser or FFmpeg uses should do. The arithmetic is RustCrypto's `p224`,
//! not ours; every other certificate goes to dimpl's verifier unchanged.

use dimpl::crypto::{
    CryptoProvider, HashAlgorithm, NamedGroup, SignatureAlgorithm, SignatureVerifier,
};
use dimpl::CryptoError;
use p224::ecdsa::signature::hazmat::PrehashVerifier;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::Decode;

/// `id-ecPublicKey` (RFC 5480).
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// `secp224r1` (RFC 5480).
const SECP224R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.33");

/// dimpl's default crypto provider with [`Verifier`] in place of its
/// signature verifier.
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        signature_verification: &Verifier,
        ..dimpl::crypto::aws_lc_rs::default_provider()
    }
}

/// dimpl's verifier, with P-224 certificates checked here.
#[derive(Debug)]
pub struct Verifier;

impl SignatureVerifier for Verifier {
    fn verify_signature(
        &self,
        cert_der: &[u8],
        data: &[u8],
        signature: &[u8],
        hash_alg: HashAlgorithm,
        sig_alg: SignatureAlgorithm,
    ) -> Result<(), CryptoError> {
        match p224_key(cert_der) {
            Some(key) => verify_p224(&key?, data, signature, hash_alg, sig_alg),
            None => dimpl::crypto::aws_lc_rs::default_provider()
                .signature_verification
                .verify_signature(cert_der, data, signature, hash_alg, sig_alg),
        }
    }
}

/// The certificate's public key if it is an EC key on P-224 (`None`: some
/// other key, for dimpl's verifier).
fn p224_key(cert_der: &[u8]) -> Option<Result<p224::ecdsa::VerifyingKey, CryptoError>> {
    let cert = x509_cert::Certificate::from_der(cert_der).ok()?;
    let spki = cert.tbs_certificate().subject_public_key_info();
    let curve = spki.algorithm.parameters.as_ref()?;
    let on_p224 = spki.algorithm.oid == EC_PUBLIC_KEY
        && curve.decode_as::<ObjectIdentifier>().ok()? == SECP224R1;
    if !on_p224 {
        return None;
    }
    Some(
        spki.subject_public_key
            .as_bytes()
            .and_then(|k| p224::ecdsa::VerifyingKey::from_sec1_bytes(k).ok())
            .ok_or(CryptoError::InvalidPublicKey(NamedGroup::Secp224r1)),
    )
}

/// ECDSA on P-224 over `data` hashed with `hash_alg` (the hash is cut to
/// the curve's 224 bits, as ECDSA specifies).
fn verify_p224(
    key: &p224::ecdsa::VerifyingKey,
    data: &[u8],
    signature: &[u8],
    hash_alg: HashAlgorithm,
    sig_alg: SignatureAlgorithm,
) -> Result<(), CryptoError> {
    let unsupported = CryptoError::UnsupportedSignatureVerification {
        signature: sig_alg,
        hash: hash_alg,
        group: NamedGroup::Secp224r1,
    };
    if sig_alg != SignatureAlgorithm::ECDSA {
        return Err(unsupported);
    }
    let digest = match hash_alg {
        HashAlgorithm::SHA256 => ring::digest::digest(&ring::digest::SHA256, data),
        HashAlgorithm::SHA384 => ring::digest::digest(&ring::digest::SHA384, data),
        _ => return Err(unsupported),
    };
    let sig = p224::ecdsa::Signature::from_der(signature)
        .map_err(|_| CryptoError::InvalidSignatureFormat)?;
    key.verify_prehash(digest.as_ref(), &sig).map_err(|_| {
        CryptoError::SignatureVerificationFailed {
            signature: sig_alg,
            hash: hash_alg,
            group: NamedGroup::Secp224r1,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by OpenSSL: a self-signed certificate on P-224 (as GnuTLS makes
    /// for FFmpeg) and its key's ECDSA-SHA256 signature over [`DATA`]
    /// (`openssl dgst -sha256 -sign`).
    const CERT: &[u8] = include_bytes!("../testdata/p224-cert.der");
    const SIG: &[u8] = include_bytes!("../testdata/p224-sig.der");
    const DATA: &[u8] = b"the ServerKeyExchange params";

    fn verify(data: &[u8], sig: &[u8], hash: HashAlgorithm) -> Result<(), CryptoError> {
        Verifier.verify_signature(CERT, data, sig, hash, SignatureAlgorithm::ECDSA)
    }

    #[test]
    fn a_p224_signature_made_by_openssl_verifies() {
        assert!(verify(DATA, SIG, HashAlgorithm::SHA256).is_ok());
    }

    #[test]
    fn a_wrong_p224_signature_or_hash_is_refused() {
        assert!(matches!(
            verify(b"other params", SIG, HashAlgorithm::SHA256),
            Err(CryptoError::SignatureVerificationFailed { .. })
        ));
        assert!(verify(DATA, SIG, HashAlgorithm::SHA384).is_err());
        assert!(matches!(
            verify(DATA, &SIG[..SIG.len() - 1], HashAlgorithm::SHA256),
            Err(CryptoError::InvalidSignatureFormat)
        ));
        assert!(Verifier
            .verify_signature(
                CERT,
                DATA,
                SIG,
                HashAlgorithm::SHA256,
                SignatureAlgorithm::RSA
            )
            .is_err());
    }

    #[test]
    fn other_certificates_go_to_dimpls_verifier() {
        // Not a certificate at all: dimpl's verifier says so.
        let junk = Verifier.verify_signature(
            b"junk",
            DATA,
            SIG,
            HashAlgorithm::SHA256,
            SignatureAlgorithm::ECDSA,
        );
        assert!(
            matches!(junk, Err(CryptoError::CertificateParseFailed)),
            "{junk:?}"
        );
    }
}
