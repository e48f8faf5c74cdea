//! Host-side apply: rebuild the image from a package, and write it only once all of it verified.

use crate::error::{io, Error, Result};
use otapack_core::decode::SliceDecoder;
use otapack_core::keys::TrustedKey;
use otapack_core::patch::BaseImage;
use otapack_core::verify::{verify_package, Policy};
use otapack_core::Package;
use std::io::Write;
use std::path::Path;

/// Verifies `package` (a delta package against `base`, the image it applies to) and writes
/// the image to `out`. The image goes to a temporary file
/// beside `out`, which is renamed over `out` only after the image digest matched; on any
/// failure `out` is left as it was and the temporary file is removed.
pub fn apply_to_file(
    package: &[u8],
    trusted: &[TrustedKey],
    policy: &Policy,
    base: Option<&[u8]>,
    out: &Path,
) -> Result<()> {
    let pkg = Package::parse(package)?;
    let mut base = base;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".otapack-apply-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    let mut w = std::io::BufWriter::new(tmp);
    let mut write_err: Option<std::io::Error> = None;
    let mut buf = vec![0u8; pkg.manifest().slice_size() as usize];
    let result = verify_package(
        &pkg,
        trusted,
        policy,
        &mut SliceDecoder::new(),
        base_image(&mut base),
        &mut buf,
        |_, data| {
            w.write_all(data).map_err(|e| {
                write_err = Some(e);
                otapack_core::Error::Output
            })
        },
    );
    if let Some(e) = write_err {
        return Err(Error::Io {
            path: out.to_path_buf(),
            source: e,
        });
    }
    result?;
    let tmp = w.into_inner().map_err(|e| Error::Io {
        path: out.to_path_buf(),
        source: e.into_error(),
    })?;
    tmp.as_file().sync_all().map_err(io(out))?;
    tmp.persist(out).map_err(|e| Error::Io {
        path: out.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// A base image as the core's read trait.
pub(crate) fn base_image<'a>(base: &'a mut Option<&[u8]>) -> Option<&'a mut dyn BaseImage> {
    base.as_mut().map(|b| b as &mut dyn BaseImage)
}
