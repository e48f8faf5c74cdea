//! Whole-package verification for packages held in memory (host tools, or a device that
//! verifies a staged package in memory-mapped flash before it applies it).
//!
//! Order of checks: structure (`Package::parse`), trailer MD5 (transport corruption),
//! signatures (authenticity of header and manifest), then every slice: payload digest, decode,
//! slice digest, and the whole image digest at the end. Each verified slice goes to a sink in
//! image order; a sink must not treat the image as good until this returns `Ok`.

use crate::decode::SliceDecoder;
use crate::error::{Error, Result};
use crate::keys::{check_entry, SignatureStatus, TrustedKey};
use crate::package::Package;
use crate::patch::BaseImage;
use crate::wire::manifest::Kind;
use crate::wire::sigblock::MAX_SIGNATURES;
use sha2::{Digest, Sha256};

/// What signatures a verifier requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Valid signatures from distinct trusted keys needed (at least 1 unless `allow_unsigned`).
    pub required_signatures: u8,
    /// Accept a package without a valid trusted signature (integrity checks only); then
    /// `required_signatures` is not applied. A signature that names a trusted key and does not
    /// verify still fails.
    pub allow_unsigned: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            required_signatures: 1,
            allow_unsigned: false,
        }
    }
}

/// Counts from a signature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SignatureSummary {
    pub total: u8,
    /// Valid signatures from distinct trusted keys (distinct key material).
    pub valid: u8,
    pub untrusted: u8,
}

/// Counts signature statuses entry by entry and applies the policy at the end. Shared by
/// [`check_signatures`] (a package in memory) and the streaming applier.
#[derive(Debug, Clone, Default)]
pub struct SignatureTally {
    sum: SignatureSummary,
    /// Key material of the valid signatures so far: one key counts once, whatever its ids.
    seen: [[u8; 32]; MAX_SIGNATURES],
}

impl SignatureTally {
    /// Records one entry's status; an invalid or mismatched signature from a trusted key fails
    /// at once.
    pub fn add(
        &mut self,
        key_id: &[u8; 32],
        status: SignatureStatus,
        key: Option<&TrustedKey>,
    ) -> Result<()> {
        self.sum.total = self.sum.total.saturating_add(1);
        match status {
            SignatureStatus::Valid => {
                let material = key.map(|k| k.material_id()).unwrap_or_default();
                let valid = usize::from(self.sum.valid);
                if !self.seen.get(..valid).unwrap_or(&[]).contains(&material) {
                    if let Some(slot) = self.seen.get_mut(valid) {
                        *slot = material;
                    }
                    self.sum.valid = self.sum.valid.saturating_add(1);
                }
            }
            SignatureStatus::Untrusted => self.sum.untrusted = self.sum.untrusted.saturating_add(1),
            SignatureStatus::Invalid => return Err(Error::BadSignature { key_id: *key_id }),
            SignatureStatus::AlgorithmMismatch => {
                return Err(Error::AlgorithmMismatch { key_id: *key_id })
            }
        }
        Ok(())
    }

    /// Applies the policy to what was counted.
    pub fn finish(&self, policy: &Policy) -> Result<SignatureSummary> {
        let sum = self.sum;
        if policy.allow_unsigned {
            return Ok(sum);
        }
        if sum.total == 0 {
            return Err(Error::Unsigned);
        }
        let required = policy.required_signatures.max(1);
        if sum.valid < required {
            return Err(Error::NotEnoughTrustedSignatures {
                required,
                found: sum.valid,
            });
        }
        Ok(sum)
    }
}

/// Checks the signature block against the trusted keys and the policy.
pub fn check_signatures(
    pkg: &Package<'_>,
    trusted: &[TrustedKey],
    policy: &Policy,
) -> Result<SignatureSummary> {
    let message = pkg.signed_message();
    let mut tally = SignatureTally::default();
    for entry in pkg.signatures().entries() {
        let (status, key) = check_entry(&entry, &message, trusted);
        tally.add(&entry.key_id, status, key)?;
    }
    tally.finish(policy)
}

/// Verifies a whole package and passes every verified slice, in image order, to
/// `sink(image_offset, bytes)`. `buf` must hold one slice (`manifest.slice_size()` bytes).
/// `base` is the image a delta package applies to (ignored for full packages); its size and
/// SHA-256 are checked against the manifest before any slice is decoded. A sink error stops
/// verification and is returned as is.
///
/// An in-place delta (kind 2) is verified the same way, slice by slice in index order against
/// the pristine base: that decodes exactly what applying it in place would, because each
/// slice may only read its read window ([`crate::wire::manifest::Manifest::read_window`]), base
/// bytes that are still intact when the slice is applied in place.
pub fn verify_package(
    pkg: &Package<'_>,
    trusted: &[TrustedKey],
    policy: &Policy,
    decoder: &mut SliceDecoder,
    mut base: Option<&mut dyn BaseImage>,
    buf: &mut [u8],
    mut sink: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<SignatureSummary> {
    pkg.check_md5()?;
    let summary = check_signatures(pkg, trusted, policy)?;
    let manifest = pkg.manifest();
    if manifest.kind() == Kind::Full {
        base = None;
    } else {
        let b = base.as_deref_mut().ok_or(Error::BaseRequired)?;
        check_base(b, manifest.base_size(), &manifest.base_sha256(), buf)?;
    }
    let mut image = Sha256::new();
    for rec in manifest.slices() {
        // Reborrow with a shorter trait-object lifetime for this one call.
        let b = base.as_mut().map(|b| &mut **b as &mut dyn BaseImage);
        let data = decoder.decode(&manifest, &rec, pkg.payload(&rec), b, buf)?;
        image.update(data);
        sink(u64::from(rec.index()) << manifest.slice_log2(), data)?;
    }
    let digest: [u8; 32] = image.finalize().into();
    if digest != manifest.image_sha256() {
        return Err(Error::ImageDigest);
    }
    Ok(summary)
}

/// Checks a base image's size and SHA-256, reading it through `scratch`.
pub fn check_base(
    base: &mut dyn BaseImage,
    size: u64,
    sha256: &[u8; 32],
    scratch: &mut [u8],
) -> Result<()> {
    if scratch.is_empty() {
        return Err(Error::BufferTooSmall { needed: 1 });
    }
    if base.len() != size {
        return Err(Error::BaseMismatch);
    }
    let mut h = Sha256::new();
    let mut off = 0u64;
    while off < size {
        let n = (size - off).min(scratch.len() as u64) as usize;
        let chunk = scratch.get_mut(..n).ok_or(Error::BaseRead)?;
        base.read(off, chunk)?;
        h.update(&*chunk);
        off += n as u64;
    }
    let digest: [u8; 32] = h.finalize().into();
    if &digest != sha256 {
        return Err(Error::BaseMismatch);
    }
    Ok(())
}
