//! Trusted public keys and signature checks.
//!
//! A verifier is handed the keys it trusts; the algorithm of a signature is the one of the
//! trusted key, never what the package says: an entry that names a trusted key id with another
//! algorithm is refused. A key's algorithm comes from its SubjectPublicKeyInfo:
//!
//! | SPKI algorithm OID               | signature algorithm                 |
//! |----------------------------------|-------------------------------------|
//! | 1.3.101.112 (Ed25519)            | Ed25519 (RFC 8032, strict verify)   |
//! | 1.2.840.113549.1.1.1 (rsaEncryption) | RSASSA-PKCS1-v1_5 with SHA-256 |
//! | 1.2.840.113549.1.1.10 (RSASSA-PSS, no parameters) | RSASSA-PSS with SHA-256, MGF1-SHA-256, any salt length |
//!
//! RSA keys must be 2048, 3072 or 4096 bits. The key id is SHA-256 of the SPKI DER.

use crate::error::{Error, Result};
use crate::package::SIGNED_MESSAGE_LEN;
use crate::wire::sigblock::{Algorithm, SignatureEntry};
use sha2::{Digest, Sha256};
use spki::der::Decode;
use spki::ObjectIdentifier;

pub const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
pub const OID_RSA_ENCRYPTION: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
pub const OID_RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");

/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32 key bytes follow.
pub const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// SHA-256 of a SubjectPublicKeyInfo DER: how packages name keys.
pub fn key_id(spki_der: &[u8]) -> [u8; 32] {
    Sha256::digest(spki_der).into()
}

#[derive(Debug, Clone)]
enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    #[cfg(feature = "rsa")]
    Rsa(rsa::RsaPublicKey),
}

/// A public key the verifier trusts, with the one algorithm it is used with.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    id: [u8; 32],
    /// SHA-256 of the bare key material (Ed25519: the 32 bytes; RSA: n || e, big-endian), so
    /// one key trusted under two algorithm identifiers still counts once.
    material: [u8; 32],
    algorithm: Algorithm,
    key: PublicKey,
}

impl TrustedKey {
    /// From a DER SubjectPublicKeyInfo (what an SPKI PEM file holds, base64-decoded).
    pub fn from_spki_der(der: &[u8]) -> Result<Self> {
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(|_| Error::BadKey {
            what: "not a DER SubjectPublicKeyInfo",
        })?;
        let oid = spki.algorithm.oid;
        if oid == OID_ED25519 {
            if spki.algorithm.parameters.is_some() {
                return Err(Error::BadKey {
                    what: "Ed25519 key with algorithm parameters",
                });
            }
            let raw = spki
                .subject_public_key
                .as_bytes()
                .and_then(|b| <&[u8; 32]>::try_from(b).ok())
                .ok_or(Error::BadKey {
                    what: "Ed25519 key is not 32 bytes",
                })?;
            return Self::from_ed25519_bytes(raw);
        }
        if oid == OID_RSA_ENCRYPTION || oid == OID_RSASSA_PSS {
            return Self::rsa_from_spki(spki, der);
        }
        Err(Error::BadKey {
            what: "unsupported key algorithm (want Ed25519 or RSA)",
        })
    }

    #[cfg(feature = "rsa")]
    fn rsa_from_spki(spki: spki::SubjectPublicKeyInfoRef<'_>, der: &[u8]) -> Result<Self> {
        use rsa::traits::PublicKeyParts;
        let algorithm = if spki.algorithm.oid == OID_RSASSA_PSS {
            Algorithm::RsaPssSha256
        } else {
            Algorithm::RsaPkcs1v15Sha256
        };
        let key = rsa::RsaPublicKey::try_from(spki).map_err(|_| Error::BadKey {
            what: "malformed RSA public key",
        })?;
        if !matches!(key.n().bits(), 2048 | 3072 | 4096) {
            return Err(Error::BadKey {
                what: "RSA key must be 2048, 3072 or 4096 bits",
            });
        }
        let mut h = Sha256::new();
        h.update(key.n().to_be_bytes_trimmed_vartime());
        h.update([0u8]);
        h.update(key.e().to_be_bytes_trimmed_vartime());
        Ok(TrustedKey {
            id: key_id(der),
            material: h.finalize().into(),
            algorithm,
            key: PublicKey::Rsa(key),
        })
    }

    #[cfg(not(feature = "rsa"))]
    fn rsa_from_spki(_: spki::SubjectPublicKeyInfoRef<'_>, _: &[u8]) -> Result<Self> {
        Err(Error::BadKey {
            what: "RSA support is not built in (feature `rsa`)",
        })
    }

    /// From the 32 raw bytes of an Ed25519 public key (e.g. compiled into a bootloader).
    pub fn from_ed25519_bytes(raw: &[u8; 32]) -> Result<Self> {
        let vk = ed25519_dalek::VerifyingKey::from_bytes(raw).map_err(|_| Error::BadKey {
            what: "Ed25519 key is not a valid point",
        })?;
        if vk.is_weak() {
            return Err(Error::BadKey {
                what: "Ed25519 key is a weak (small-order) point",
            });
        }
        let mut der = [0u8; 44];
        der[..12].copy_from_slice(&ED25519_SPKI_PREFIX);
        der[12..].copy_from_slice(raw);
        Ok(TrustedKey {
            id: key_id(&der),
            material: Sha256::digest(raw).into(),
            algorithm: Algorithm::Ed25519,
            key: PublicKey::Ed25519(vk),
        })
    }

    pub fn id(&self) -> [u8; 32] {
        self.id
    }
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// Identifies the key material regardless of algorithm identifier (see the field).
    pub fn material_id(&self) -> [u8; 32] {
        self.material
    }

    /// Checks `signature` over the 64-byte signed message with this key's algorithm.
    pub fn verify(&self, message: &[u8; SIGNED_MESSAGE_LEN], signature: &[u8]) -> bool {
        match &self.key {
            PublicKey::Ed25519(vk) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| vk.verify_strict(message, &sig).is_ok()),
            #[cfg(feature = "rsa")]
            PublicKey::Rsa(key) => {
                use rsa::signature::Verifier;
                match self.algorithm {
                    Algorithm::RsaPssSha256 => {
                        let vk =
                            rsa::pss::VerifyingKey::<Sha256>::new_with_auto_salt_len(key.clone());
                        rsa::pss::Signature::try_from(signature)
                            .is_ok_and(|sig| vk.verify(message, &sig).is_ok())
                    }
                    _ => {
                        let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(key.clone());
                        rsa::pkcs1v15::Signature::try_from(signature)
                            .is_ok_and(|sig| vk.verify(message, &sig).is_ok())
                    }
                }
            }
        }
    }
}

/// What one signature entry amounts to under a set of trusted keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureStatus {
    /// Made by a trusted key, and it verifies.
    Valid,
    /// Names a trusted key, but does not verify: the package was altered or mis-signed.
    Invalid,
    /// Names a trusted key with an algorithm that key is not used with.
    AlgorithmMismatch,
    /// Made by a key that is not trusted here (ignored, e.g. during key rotation).
    Untrusted,
}

impl SignatureStatus {
    pub fn name(self) -> &'static str {
        match self {
            SignatureStatus::Valid => "valid",
            SignatureStatus::Invalid => "INVALID",
            SignatureStatus::AlgorithmMismatch => "ALGORITHM MISMATCH",
            SignatureStatus::Untrusted => "untrusted key",
        }
    }
}

/// Checks one entry against the trusted keys; returns the status and the key it names.
pub fn check_entry<'k>(
    entry: &SignatureEntry<'_>,
    message: &[u8; SIGNED_MESSAGE_LEN],
    trusted: &'k [TrustedKey],
) -> (SignatureStatus, Option<&'k TrustedKey>) {
    let key = trusted.iter().find(|k| k.id == entry.key_id);
    let status = match key {
        None => SignatureStatus::Untrusted,
        Some(k) if k.algorithm != entry.algorithm => SignatureStatus::AlgorithmMismatch,
        Some(k) if k.verify(message, entry.signature) => SignatureStatus::Valid,
        Some(_) => SignatureStatus::Invalid,
    };
    (status, key)
}
