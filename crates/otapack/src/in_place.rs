//! A host model of a single-slot device applying an in-place delta (kind 2): the base image is
//! overwritten in its own slot, slice by slice in the package's apply order, each slice decoded
//! from the slot's current contents into a scratch buffer and then copied over its own region.
//!
//! It reads the base only through what is left of it in the slot, never a pristine copy, so a
//! package that applies here proves that every slice's read window
//! ([`otapack_core::wire::manifest::Manifest::read_window`]) holds only bytes still intact when
//! the slice is decoded. It models the data flow, not flash: no erase granularity, no
//! power-fail state.

use crate::error::{Error, Result};
use otapack_core::decode::SliceDecoder;
use otapack_core::keys::TrustedKey;
use otapack_core::verify::{check_base, check_signatures, Policy, SignatureSummary};
use otapack_core::wire::manifest::Kind;
use otapack_core::Package;
use sha2::{Digest, Sha256};

/// Applies the in-place delta `package` to `slot`, which holds its base image, by overwriting
/// it in place. Checks the trailer MD5, the signatures against `trusted` and `policy`, and the
/// base's size and SHA-256 before anything is written; then, for each slice in apply order:
/// payload digest, decode from the slot's current bytes (reads outside the slice's window fail
/// with `ReadOutsideWindow`), slice digest, write over the slice's region. At the end the slot
/// is cut to the image size and its SHA-256 must equal the manifest's.
///
/// On success `slot` holds the new image. On an error after the base check, `slot` is left part
/// updated, as a device's slot would be (this model has no power-fail recovery).
pub fn apply_in_place(
    package: &[u8],
    slot: &mut Vec<u8>,
    trusted: &[TrustedKey],
    policy: &Policy,
) -> Result<SignatureSummary> {
    let pkg = Package::parse(package)?;
    let m = pkg.manifest();
    if m.kind() != Kind::DeltaInPlace {
        return Err(Error::Invalid(format!(
            "not an in-place delta package (kind {})",
            m.kind().name()
        )));
    }
    pkg.check_md5()?;
    let summary = check_signatures(&pkg, trusted, policy)?;
    let slice_size = m.slice_size() as usize;
    let mut scratch = vec![0u8; slice_size];
    check_base(
        &mut slot.as_slice(),
        m.base_size(),
        &m.base_sha256(),
        &mut scratch,
    )?;
    let base_len = slot.len();
    let image_len = usize::try_from(m.image_size())
        .map_err(|_| Error::Invalid("image larger than this host's memory".into()))?;
    // The slot must hold the new image too; bytes past the base read as erased flash.
    slot.resize(base_len.max(image_len), m.erase_value());
    let mut decoder = SliceDecoder::new();
    for index in m.apply_order() {
        let rec = m.slice(index).ok_or(otapack_core::Error::Truncated {
            what: "slice record",
        })?;
        // The base as it is now: the first base_size bytes of the slot, part overwritten.
        let mut current: &[u8] = &slot[..base_len];
        let data = decoder.decode(
            &m,
            &rec,
            pkg.payload(&rec),
            Some(&mut current),
            &mut scratch,
        )?;
        let at = index as usize * slice_size;
        slot[at..at + data.len()].copy_from_slice(data);
    }
    slot.truncate(image_len);
    let digest: [u8; 32] = Sha256::digest(&slot[..]).into();
    if digest != m.image_sha256() {
        return Err(otapack_core::Error::ImageDigest.into());
    }
    Ok(summary)
}
