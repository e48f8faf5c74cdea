//! Host-side apply: the device applier (`otapack_core::apply`) run on a simulated NOR flash,
//! so `otapack apply` exercises exactly what a bootloader runs. The image file is written only
//! after the applier finished with every check passed.

use crate::error::Result;
use crate::sim::SimFlash;
use otapack_core::apply::Applier;
use otapack_core::keys::TrustedKey;
use otapack_core::patch::BaseImage;
use otapack_core::verify::{Policy, SignatureSummary};
use otapack_core::wire::header::HEADER_LEN;
use otapack_core::Package;
use std::path::Path;

/// The flash the host applier writes to: 4-byte program units, 4 KiB sectors.
pub type HostFlash = SimFlash<4, 4096>;

/// What one streaming apply did.
#[derive(Debug)]
pub struct Applied {
    pub image: Vec<u8>,
    pub flash: HostFlash,
    pub signatures: SignatureSummary,
}

/// Runs the device applier over `package`, pushed in pieces of `chunk` bytes, into a fresh
/// simulated flash sized for the image; `base` is the image a delta package applies to.
pub fn apply_streaming(
    package: &[u8],
    trusted: &[TrustedKey],
    policy: &Policy,
    base: Option<&[u8]>,
    chunk: usize,
) -> Result<Applied> {
    // Buffer sizes, as a device would size them from the header and manifest (parsed first,
    // so no buffer is sized from an unchecked length).
    let pkg = Package::parse(package)?;
    let m = pkg.manifest();
    let mut manifest_buf = vec![0u8; HEADER_LEN + m.as_bytes().len()];
    let mut payload_buf = vec![0u8; Applier::<&mut HostFlash>::payload_buffer_len(&m).max(4096)];
    let mut write_buf = [0u8; 256];
    let image_size = m.image_size() as usize;
    let mut flash = HostFlash::new(image_size);
    let mut base = base;
    let base = base.as_mut().map(|b| b as &mut dyn BaseImage);
    let mut applier = Applier::new(
        trusted,
        *policy,
        &mut flash,
        base,
        &mut manifest_buf,
        &mut payload_buf,
        &mut write_buf,
    )?;
    for piece in package.chunks(chunk.max(1)) {
        applier.push(piece)?;
    }
    let signatures = applier.finish()?;
    let image = flash
        .data
        .get(..image_size)
        .ok_or(otapack_core::Error::SlotTooSmall)?
        .to_vec();
    Ok(Applied {
        image,
        flash,
        signatures,
    })
}

/// Applies `package` (a delta package against `base`, the image it applies to) and writes the
/// image to `out`, atomically, only after every check passed; on failure `out` is untouched.
pub fn apply_to_file(
    package: &[u8],
    trusted: &[TrustedKey],
    policy: &Policy,
    base: Option<&[u8]>,
    out: &Path,
) -> Result<Applied> {
    let applied = apply_streaming(package, trusted, policy, base, 64 * 1024)?;
    crate::write_atomic(out, &applied.image)?;
    Ok(applied)
}

/// A base image as the core's read trait.
pub(crate) fn base_image<'a>(base: &'a mut Option<&[u8]>) -> Option<&'a mut dyn BaseImage> {
    base.as_mut().map(|b| b as &mut dyn BaseImage)
}
