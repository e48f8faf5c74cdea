//! The signature block: self-delimiting, so adding a signature changes neither the header nor
//! the manifest (which is what the signatures cover).
//!
//! | offset | size | field     | rule            |
//! |--------|------|-----------|-----------------|
//! | 0      | 2    | count     | 0..=16          |
//! | 2      | 2    | reserved  | 0               |
//! | 4      | ...  | entries   | `count` entries |
//!
//! Entry:
//!
//! | offset | size    | field     | rule                                              |
//! |--------|---------|-----------|---------------------------------------------------|
//! | 0      | 32      | key_id    | SHA-256 of the signer's SubjectPublicKeyInfo DER  |
//! | 32     | 2       | algorithm | 1 Ed25519, 2 RSA PKCS#1 v1.5 SHA-256, 3 RSA-PSS SHA-256; other codes: unknown (kept, never trusted) |
//! | 34     | 2       | sig_len   | Ed25519: 64; RSA: 256, 384 or 512; unknown: 1..=65535 |
//! | 36     | sig_len | signature |                                                   |
//!
//! Key ids are unique within a block.

use super::{all_zero, digest_at, le_u16};
use crate::error::{Error, Result};

pub const MAX_SIGNATURES: usize = 16;
pub const BLOCK_HEAD_LEN: usize = 4;
pub const ENTRY_HEAD_LEN: usize = 36;

/// A signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Ed25519,
    RsaPkcs1v15Sha256,
    RsaPssSha256,
    /// A code this reader does not know. Such an entry is kept (it may be a newer algorithm
    /// beside a known one, during a migration) and counts as untrusted; no key verifies it.
    Unknown(u16),
}

impl Algorithm {
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => Algorithm::Ed25519,
            2 => Algorithm::RsaPkcs1v15Sha256,
            3 => Algorithm::RsaPssSha256,
            other => Algorithm::Unknown(other),
        }
    }
    pub fn code(self) -> u16 {
        match self {
            Algorithm::Ed25519 => 1,
            Algorithm::RsaPkcs1v15Sha256 => 2,
            Algorithm::RsaPssSha256 => 3,
            Algorithm::Unknown(c) => c,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ed25519 => "ed25519",
            Algorithm::RsaPkcs1v15Sha256 => "rsa-pkcs1v15-sha256",
            Algorithm::RsaPssSha256 => "rsa-pss-sha256",
            Algorithm::Unknown(_) => "unknown",
        }
    }
    pub(crate) fn sig_len_ok(self, len: usize) -> bool {
        match self {
            Algorithm::Ed25519 => len == 64,
            Algorithm::RsaPkcs1v15Sha256 | Algorithm::RsaPssSha256 => {
                matches!(len, 256 | 384 | 512)
            }
            Algorithm::Unknown(_) => len > 0,
        }
    }
}

/// One signature entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureEntry<'a> {
    pub key_id: [u8; 32],
    pub algorithm: Algorithm,
    pub signature: &'a [u8],
}

/// A checked view of the signature block.
#[derive(Debug, Clone, Copy)]
pub struct SignatureBlock<'a> {
    buf: &'a [u8],
}

impl<'a> SignatureBlock<'a> {
    /// Parses the block at the front of `buf` (which may continue with payloads) and returns it
    /// with exactly its own bytes.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self> {
        let head = buf.get(..BLOCK_HEAD_LEN).ok_or(Error::Truncated {
            what: "signature block",
        })?;
        let count = usize::from(le_u16(head, 0));
        if count > MAX_SIGNATURES {
            return Err(Error::Malformed {
                what: "more than 16 signatures",
            });
        }
        if !all_zero(head, 2..4) {
            return Err(Error::Malformed {
                what: "reserved signature block bytes are not zero",
            });
        }
        let mut at = BLOCK_HEAD_LEN;
        for i in 0..count {
            let e = buf.get(at..at + ENTRY_HEAD_LEN).ok_or(Error::Truncated {
                what: "signature entry",
            })?;
            let alg = Algorithm::from_u16(le_u16(e, 32));
            let len = usize::from(le_u16(e, 34));
            if !alg.sig_len_ok(len) {
                return Err(Error::Malformed {
                    what: "signature length does not fit its algorithm",
                });
            }
            buf.get(at + ENTRY_HEAD_LEN..at + ENTRY_HEAD_LEN + len)
                .ok_or(Error::Truncated { what: "signature" })?;
            let block = SignatureBlock {
                buf: buf.get(..at).unwrap_or(&[]),
            };
            let id = digest_at(e, 0);
            if block.entries_upto(i).any(|prev| prev.key_id == id) {
                return Err(Error::DuplicateSignature);
            }
            at += ENTRY_HEAD_LEN + len;
        }
        Ok(SignatureBlock {
            buf: buf.get(..at).unwrap_or(&[]),
        })
    }

    /// The block's own bytes.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }
    pub fn count(&self) -> usize {
        usize::from(le_u16(self.buf, 0))
    }

    fn entries_upto(&self, n: usize) -> impl Iterator<Item = SignatureEntry<'a>> + 'a {
        let buf = self.buf;
        let mut at = BLOCK_HEAD_LEN;
        (0..n).map_while(move |_| {
            let e = buf.get(at..at + ENTRY_HEAD_LEN)?;
            let algorithm = Algorithm::from_u16(le_u16(e, 32));
            let len = usize::from(le_u16(e, 34));
            let signature = buf.get(at + ENTRY_HEAD_LEN..at + ENTRY_HEAD_LEN + len)?;
            at += ENTRY_HEAD_LEN + len;
            Some(SignatureEntry {
                key_id: digest_at(e, 0),
                algorithm,
                signature,
            })
        })
    }

    /// The entries, in block order (checked at construction).
    pub fn entries(&self) -> impl Iterator<Item = SignatureEntry<'a>> + 'a {
        self.entries_upto(self.count())
    }
}

/// Emits a signature block from entries (at most 16, unique key ids, valid lengths).
#[cfg(feature = "alloc")]
pub fn emit(entries: &[SignatureEntry<'_>]) -> Result<alloc::vec::Vec<u8>> {
    let mut b = alloc::vec::Vec::new();
    b.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    for e in entries {
        b.extend_from_slice(&e.key_id);
        b.extend_from_slice(&e.algorithm.code().to_le_bytes());
        b.extend_from_slice(&(e.signature.len() as u16).to_le_bytes());
        b.extend_from_slice(e.signature);
    }
    SignatureBlock::new_checked(&b)?;
    Ok(b)
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    #[test]
    fn emit_pins_exact_bytes_and_roundtrips() {
        let sig = [0x5A; 64];
        let e = SignatureEntry {
            key_id: [0x01; 32],
            algorithm: Algorithm::Ed25519,
            signature: &sig,
        };
        let b = emit(&[e]).unwrap();
        assert_eq!(&b[..4], &[1, 0, 0, 0]);
        assert_eq!(&b[4..36], &[0x01; 32]);
        assert_eq!(&b[36..40], &[1, 0, 64, 0]);
        assert_eq!(b.len(), 4 + 36 + 64);
        let mut with_tail = b.clone();
        with_tail.extend_from_slice(&[9; 10]);
        let blk = SignatureBlock::new_checked(&with_tail).unwrap();
        assert_eq!(blk.len(), b.len());
        assert_eq!(blk.entries().collect::<alloc::vec::Vec<_>>(), [e]);
    }

    #[test]
    fn rejects_duplicates_bad_lengths_and_too_many() {
        let sig = [0u8; 64];
        let e = SignatureEntry {
            key_id: [7; 32],
            algorithm: Algorithm::Ed25519,
            signature: &sig,
        };
        assert_eq!(emit(&[e, e]).unwrap_err(), Error::DuplicateSignature);
        let short = SignatureEntry {
            signature: &sig[..63],
            ..e
        };
        assert!(emit(&[short]).is_err());
        let rsa = SignatureEntry {
            algorithm: Algorithm::RsaPssSha256,
            ..e
        };
        assert!(emit(&[rsa]).is_err());
        let mut b = emit(&[]).unwrap();
        b[0] = 17;
        assert!(SignatureBlock::new_checked(&b).is_err());
        // An unknown algorithm (a newer one) is kept, with any non-empty length.
        let mut b = emit(&[e]).unwrap();
        b[36] = 9;
        let blk = SignatureBlock::new_checked(&b).unwrap();
        assert_eq!(
            blk.entries().next().unwrap().algorithm,
            Algorithm::Unknown(9)
        );
        b[38..40].copy_from_slice(&0u16.to_le_bytes());
        assert!(SignatureBlock::new_checked(&b).is_err());
    }
}
