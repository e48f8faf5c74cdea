//! Key files: PKCS#8 PEM private keys and SPKI PEM public keys, generation, key ids, signing.
//!
//! Private key material lives in zeroizing buffers (PEM text, DER) and in key types that
//! zeroize on drop (`ed25519_dalek::SigningKey`, `rsa::RsaPrivateKey`).

use crate::error::{io, Error, Result};
use otapack_core::keys::{key_id, TrustedKey, OID_ED25519, OID_RSASSA_PSS, OID_RSA_ENCRYPTION};
use otapack_core::wire::sigblock::Algorithm;
use pkcs8::der::pem::LineEnding;
use pkcs8::der::{Decode, Encode};
use pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey};
use sha2::Sha256;
use std::path::Path;
use zeroize::Zeroizing;

/// Algorithms `keygen` makes (the names are part of the CLI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    Ed25519,
    Rsa(usize),
    RsaPss(usize),
}

impl KeyAlgorithm {
    pub const NAMES: &'static [&'static str] = &[
        "ed25519",
        "rsa-2048",
        "rsa-3072",
        "rsa-4096",
        "rsa-pss-2048",
        "rsa-pss-3072",
        "rsa-pss-4096",
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "ed25519" => KeyAlgorithm::Ed25519,
            "rsa-2048" => KeyAlgorithm::Rsa(2048),
            "rsa-3072" => KeyAlgorithm::Rsa(3072),
            "rsa-4096" => KeyAlgorithm::Rsa(4096),
            "rsa-pss-2048" => KeyAlgorithm::RsaPss(2048),
            "rsa-pss-3072" => KeyAlgorithm::RsaPss(3072),
            "rsa-pss-4096" => KeyAlgorithm::RsaPss(4096),
            _ => return None,
        })
    }
}

enum Secret {
    Ed25519(ed25519_dalek::SigningKey),
    Rsa(rsa::RsaPrivateKey),
}

/// A private key that signs packages.
pub struct SigningKey {
    secret: Secret,
    algorithm: Algorithm,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("algorithm", &self.algorithm)
            .field("key_id", &hex(&self.key_id()))
            .finish_non_exhaustive()
    }
}

fn key_err(path: Option<&Path>, reason: impl Into<String>) -> Error {
    Error::Key {
        path: path.map(Path::to_path_buf),
        reason: reason.into(),
    }
}

/// Splits a PEM file into its label and DER bytes (zeroized on drop).
fn read_pem(path: &Path) -> Result<(String, Zeroizing<Vec<u8>>)> {
    let text = Zeroizing::new(std::fs::read(path).map_err(io(path))?);
    let (label, der) = pkcs8::der::pem::decode_vec(&text)
        .map_err(|e| key_err(Some(path), format!("not a PEM file ({e})")))?;
    Ok((label.to_string(), Zeroizing::new(der)))
}

fn rsa_spki_der(key: &rsa::RsaPublicKey, pss: bool) -> Result<Vec<u8>> {
    let der = key
        .to_public_key_der()
        .map_err(|e| key_err(None, e.to_string()))?;
    if !pss {
        return Ok(der.as_bytes().to_vec());
    }
    // Same key, RSASSA-PSS algorithm identifier (no parameters), as openssl writes it.
    let spki = spki::SubjectPublicKeyInfoRef::from_der(der.as_bytes())
        .map_err(|e| key_err(None, e.to_string()))?;
    let pss = spki::SubjectPublicKeyInfoRef {
        algorithm: spki::AlgorithmIdentifierRef {
            oid: OID_RSASSA_PSS,
            parameters: None,
        },
        subject_public_key: spki.subject_public_key,
    };
    pss.to_der().map_err(|e| key_err(None, e.to_string()))
}

impl SigningKey {
    /// Loads a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), as `openssl genpkey`
    /// writes it: Ed25519, RSA (PKCS#1 v1.5 signatures) or RSA-PSS.
    pub fn from_pem_file(path: &Path) -> Result<Self> {
        let (label, der) = read_pem(path)?;
        match label.as_str() {
            "PRIVATE KEY" => Self::from_pkcs8_der(&der).map_err(|e| match e {
                Error::Key { path: None, reason } => key_err(Some(path), reason),
                other => other,
            }),
            "ENCRYPTED PRIVATE KEY" => Err(key_err(
                Some(path),
                "encrypted keys are not supported; decrypt with `openssl pkey -in KEY -out PLAIN`",
            )),
            "RSA PRIVATE KEY" => Err(key_err(
                Some(path),
                "PKCS#1 RSA key; convert to PKCS#8 with `openssl pkey -in KEY -out KEY.p8.pem`",
            )),
            other => Err(key_err(
                Some(path),
                format!("PEM label '{other}' is not a private key"),
            )),
        }
    }

    /// From PKCS#8 DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        let info = pkcs8::PrivateKeyInfoRef::try_from(der)
            .map_err(|e| key_err(None, format!("malformed PKCS#8 ({e})")))?;
        let oid = info.algorithm.oid;
        if oid == OID_ED25519 {
            let sk = ed25519_dalek::SigningKey::from_pkcs8_der(der)
                .map_err(|e| key_err(None, format!("bad Ed25519 key ({e})")))?;
            return Ok(Self::from_ed25519(sk));
        }
        if oid == OID_RSA_ENCRYPTION || oid == OID_RSASSA_PSS {
            let sk = rsa::RsaPrivateKey::from_pkcs8_der(der)
                .map_err(|e| key_err(None, format!("bad RSA key ({e})")))?;
            return Self::from_rsa(sk, oid == OID_RSASSA_PSS);
        }
        Err(key_err(
            None,
            format!("unsupported key algorithm {oid} (want Ed25519 or RSA)"),
        ))
    }

    fn from_ed25519(sk: ed25519_dalek::SigningKey) -> Self {
        let mut spki_der = otapack_core::keys::ED25519_SPKI_PREFIX.to_vec();
        spki_der.extend_from_slice(sk.verifying_key().as_bytes());
        SigningKey {
            secret: Secret::Ed25519(sk),
            algorithm: Algorithm::Ed25519,
            spki_der,
        }
    }

    fn from_rsa(sk: rsa::RsaPrivateKey, pss: bool) -> Result<Self> {
        use rsa::traits::PublicKeyParts;
        if !matches!(sk.n().bits(), 2048 | 3072 | 4096) {
            return Err(key_err(None, "RSA key must be 2048, 3072 or 4096 bits"));
        }
        let spki_der = rsa_spki_der(sk.as_ref(), pss)?;
        let algorithm = if pss {
            Algorithm::RsaPssSha256
        } else {
            Algorithm::RsaPkcs1v15Sha256
        };
        Ok(SigningKey {
            secret: Secret::Rsa(sk),
            algorithm,
            spki_der,
        })
    }

    /// Makes a new key from the operating system's random number generator.
    pub fn generate(alg: KeyAlgorithm) -> Result<Self> {
        let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
        match alg {
            KeyAlgorithm::Ed25519 => {
                let mut seed = Zeroizing::new([0u8; 32]);
                getrandom::fill(seed.as_mut())
                    .map_err(|e| key_err(None, format!("no system randomness: {e}")))?;
                Ok(Self::from_ed25519(ed25519_dalek::SigningKey::from_bytes(
                    &seed,
                )))
            }
            KeyAlgorithm::Rsa(bits) | KeyAlgorithm::RsaPss(bits) => {
                let sk = rsa::RsaPrivateKey::new(&mut rng, bits)
                    .map_err(|e| key_err(None, format!("RSA key generation failed: {e}")))?;
                Self::from_rsa(sk, matches!(alg, KeyAlgorithm::RsaPss(_)))
            }
        }
    }

    /// The private key as PKCS#8 PEM (zeroized on drop).
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        let fail = |e: pkcs8::Error| key_err(None, e.to_string());
        match &self.secret {
            // PKCS#8 v1 without the optional public key, as `openssl genpkey` writes it:
            // OpenSSL 3.0 cannot read the v2 form ed25519-dalek writes by default.
            Secret::Ed25519(sk) => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: sk.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(fail),
            Secret::Rsa(sk) => {
                let doc = sk.to_pkcs8_der().map_err(fail)?;
                if self.algorithm != Algorithm::RsaPssSha256 {
                    return doc
                        .to_pem("PRIVATE KEY", LineEnding::LF)
                        .map_err(|e| key_err(None, e.to_string()));
                }
                let info = pkcs8::PrivateKeyInfoRef::try_from(doc.as_bytes()).map_err(fail)?;
                let pss = pkcs8::PrivateKeyInfoRef::new(
                    spki::AlgorithmIdentifierRef {
                        oid: OID_RSASSA_PSS,
                        parameters: None,
                    },
                    info.private_key,
                );
                pss.to_pkcs8_pem(LineEnding::LF).map_err(fail)
            }
        }
    }

    /// The public key as SPKI PEM.
    pub fn public_pem(&self) -> Result<String> {
        pkcs8::der::pem::encode_string("PUBLIC KEY", LineEnding::LF, &self.spki_der)
            .map_err(|e| key_err(None, e.to_string()))
    }

    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }
    pub fn key_id(&self) -> [u8; 32] {
        key_id(&self.spki_der)
    }
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
    /// The matching trusted (public) key.
    pub fn trusted_key(&self) -> Result<TrustedKey> {
        Ok(TrustedKey::from_spki_der(&self.spki_der)?)
    }

    /// Signs a 64-byte signed message.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer};
        let fail = |e: rsa::signature::Error| key_err(None, format!("signing failed: {e}"));
        Ok(match &self.secret {
            Secret::Ed25519(sk) => sk.sign(message).to_bytes().to_vec(),
            Secret::Rsa(sk) if self.algorithm == Algorithm::RsaPssSha256 => {
                let mut rng = rand_core::UnwrapErr(getrandom::SysRng);
                let signer = rsa::pss::SigningKey::<Sha256>::new(sk.clone());
                signer
                    .try_sign_with_rng(&mut rng, message)
                    .map_err(fail)?
                    .to_vec()
            }
            Secret::Rsa(sk) => {
                let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(sk.clone());
                signer.try_sign(message).map_err(fail)?.to_vec()
            }
        })
    }
}

/// A trusted public key loaded from an SPKI PEM file, with its DER.
#[derive(Debug, Clone)]
pub struct PublicKeyFile {
    pub path: std::path::PathBuf,
    pub key: TrustedKey,
}

/// Loads an SPKI PEM public key (`-----BEGIN PUBLIC KEY-----`).
pub fn load_public_key(path: &Path) -> Result<PublicKeyFile> {
    let (label, der) = read_pem(path)?;
    match label.as_str() {
        "PUBLIC KEY" => {}
        "PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" | "RSA PRIVATE KEY" => {
            return Err(key_err(
                Some(path),
                "this is a private key; pass the public key (`openssl pkey -in KEY -pubout`)",
            ))
        }
        other => {
            return Err(key_err(
                Some(path),
                format!("PEM label '{other}' is not a public key"),
            ))
        }
    }
    let key = TrustedKey::from_spki_der(&der).map_err(|e| key_err(Some(path), e.to_string()))?;
    Ok(PublicKeyFile {
        path: path.to_path_buf(),
        key,
    })
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
