//! A whole package: a checked zero-copy view tying header, manifest, signature block, payload
//! area and trailer together. `Package::parse` proves the structure; digests and signatures are
//! checked separately ([`crate::verify`]), because they cost time and need trusted keys.

use crate::error::{Error, Result};
use crate::wire::header::{Header, HEADER_LEN};
use crate::wire::manifest::Manifest;
use crate::wire::sigblock::SignatureBlock;
use crate::wire::slice::SliceRecord;
use crate::wire::trailer::{self, Trailer, TRAILER_LEN};
use sha2::{Digest, Sha256};

/// The first 32 bytes of every signed message: a context string, zero padded. It keeps an
/// otapack signature from being valid for anything else the same key signs.
pub const SIGNED_CONTEXT: [u8; 32] = *b"otapack package signature v1\0\0\0\0";
/// Length of the message each signature covers.
pub const SIGNED_MESSAGE_LEN: usize = 64;

/// The message every signature covers: `SIGNED_CONTEXT || SHA-256(header || manifest)`.
pub fn signed_message(header_manifest_sha256: &[u8; 32]) -> [u8; SIGNED_MESSAGE_LEN] {
    let mut m = [0u8; SIGNED_MESSAGE_LEN];
    m[..32].copy_from_slice(&SIGNED_CONTEXT);
    m[32..].copy_from_slice(header_manifest_sha256);
    m
}

/// A structurally valid package.
#[derive(Debug, Clone, Copy)]
pub struct Package<'a> {
    bytes: &'a [u8],
    header: Header<'a>,
    manifest: Manifest<'a>,
    signatures: SignatureBlock<'a>,
    payload_start: usize,
    trailer: Trailer<'a>,
}

impl<'a> Package<'a> {
    /// Checks every length, field and record; rejects trailing bytes. Allocates nothing.
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let header = Header::new_checked(bytes)?;
        let trailer_at = bytes
            .len()
            .checked_sub(TRAILER_LEN)
            .filter(|&t| t >= HEADER_LEN)
            .ok_or(Error::Truncated { what: "package" })?;
        let trailer = Trailer::new_checked(bytes.get(trailer_at..).unwrap_or(&[]), bytes.len())?;
        let body = bytes.get(..trailer_at).unwrap_or(&[]);

        let manifest_end = HEADER_LEN as u64 + u64::from(header.manifest_len());
        let manifest_bytes = usize::try_from(manifest_end)
            .ok()
            .and_then(|end| body.get(HEADER_LEN..end))
            .ok_or(Error::Truncated { what: "manifest" })?;
        let manifest = Manifest::new_checked(
            manifest_bytes,
            header.format_version(),
            header.payload_len(),
        )?;
        let after_manifest = HEADER_LEN + manifest_bytes.len();

        let signatures = SignatureBlock::new_checked(body.get(after_manifest..).unwrap_or(&[]))?;
        let payload_start = after_manifest + signatures.len();
        let actual = (body.len() - payload_start) as u64;
        if actual != u64::from(header.payload_len()) {
            return Err(if actual < u64::from(header.payload_len()) {
                Error::Truncated {
                    what: "payload area",
                }
            } else {
                Error::LengthMismatch {
                    what: "payload area",
                    expected: header.payload_len().into(),
                    actual,
                }
            });
        }
        Ok(Package {
            bytes,
            header,
            manifest,
            signatures,
            payload_start,
            trailer,
        })
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
    pub fn header(&self) -> Header<'a> {
        self.header
    }
    pub fn manifest(&self) -> Manifest<'a> {
        self.manifest
    }
    pub fn signatures(&self) -> SignatureBlock<'a> {
        self.signatures
    }
    pub fn trailer(&self) -> Trailer<'a> {
        self.trailer
    }
    /// Byte offset of the payload area in the file (for HTTP range requests).
    pub fn payload_start(&self) -> usize {
        self.payload_start
    }
    /// The header and manifest bytes: what the signatures cover.
    pub fn signed_bytes(&self) -> &'a [u8] {
        self.bytes
            .get(..HEADER_LEN + self.manifest.as_bytes().len())
            .unwrap_or(&[])
    }
    /// The payload area: every slice payload, back to back.
    pub fn payload_area(&self) -> &'a [u8] {
        let end = self.bytes.len() - TRAILER_LEN;
        self.bytes.get(self.payload_start..end).unwrap_or(&[])
    }
    /// The payload of one record (bounds proven at parse time).
    pub fn payload(&self, rec: &SliceRecord<'_>) -> &'a [u8] {
        let start = rec.payload_offset() as usize;
        self.payload_area()
            .get(start..start + rec.payload_len() as usize)
            .unwrap_or(&[])
    }
    /// SHA-256 of header and manifest.
    pub fn signed_digest(&self) -> [u8; 32] {
        Sha256::digest(self.signed_bytes()).into()
    }
    /// The 64-byte message every signature of this package covers.
    pub fn signed_message(&self) -> [u8; SIGNED_MESSAGE_LEN] {
        signed_message(&self.signed_digest())
    }
    /// Checks the trailer MD5 over everything before it.
    pub fn check_md5(&self) -> Result<()> {
        let before = self
            .bytes
            .get(..self.bytes.len() - TRAILER_LEN)
            .unwrap_or(&[]);
        if trailer::md5(before) == self.trailer.md5() {
            Ok(())
        } else {
            Err(Error::Md5Mismatch)
        }
    }
}

/// Assembles a package from its parts (emit side) and checks the result parses.
#[cfg(feature = "alloc")]
pub fn assemble(
    manifest: &[u8],
    signature_block: &[u8],
    payloads: &[u8],
) -> Result<alloc::vec::Vec<u8>> {
    use crate::wire::header::HeaderRepr;
    let too_big = Error::Malformed {
        what: "package larger than 4 GiB",
    };
    let header = HeaderRepr {
        manifest_len: u32::try_from(manifest.len()).map_err(|_| too_big)?,
        payload_len: u32::try_from(payloads.len()).map_err(|_| too_big)?,
    };
    let total = HEADER_LEN + manifest.len() + signature_block.len() + payloads.len() + TRAILER_LEN;
    let mut out = alloc::vec::Vec::with_capacity(total);
    out.extend_from_slice(&header.emit());
    out.extend_from_slice(manifest);
    out.extend_from_slice(signature_block);
    out.extend_from_slice(payloads);
    let t = trailer::emit(&out)?;
    out.extend_from_slice(&t);
    Package::parse(&out)?;
    Ok(out)
}
