//! otapack host library: load firmware images, build signed update packages, add signatures,
//! verify with a report, apply on the host, and describe a package for a cloud OTA service.
//!
//! The format itself, verification and decoding live in [`otapack_core`] (no_std), which is
//! what devices link; this crate builds on it and never re-implements a check.
#![forbid(unsafe_code)]

pub mod apply;
pub mod build;
pub mod delta;
pub mod describe;
pub mod error;
pub mod image;
pub mod in_place;
pub mod keys;
pub mod report;
pub mod sign;
pub mod sim;
pub mod simulate;

pub use error::{Error, Result};
pub use otapack_core;

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced, then renamed. A
/// failure leaves no partial file behind.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".otapack-")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(error::io(dir))?;
    tmp.write_all(bytes).map_err(error::io(path))?;
    tmp.as_file().sync_all().map_err(error::io(path))?;
    tmp.persist(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}
