//! Building packages: cut the image into slices, store each the cheapest way (`fill`, `zstd`,
//! `raw`, and for deltas `copy` and `patch`), hash, sign, assemble, and verify the result
//! through the device code path.

use crate::error::{Error, Result};
use crate::image::Image;
use crate::keys::SigningKey;
use otapack_core::package::{assemble, signed_message};
use otapack_core::patch::PATCH_FORMAT_1;
use otapack_core::wire::header::HeaderRepr;
use otapack_core::wire::manifest::{
    Kind, ManifestRepr, MAX_SLICE_LOG2, MIN_SLICE_LOG2, MIN_WINDOW_LOG, SHA256_EMPTY,
};
use otapack_core::wire::sigblock::{self, SignatureEntry, MAX_SIGNATURES};
use otapack_core::wire::slice::{Method, SliceRepr};
use otapack_core::wire::tlv;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

/// Default slice size: 64 KiB.
pub const DEFAULT_SLICE_LOG2: u8 = 16;
/// Default zstd window: 32 KiB. Each doubling costs a device decoder that much more RAM; each
/// halving costs a few percent of size (see the README's measurements).
pub const DEFAULT_WINDOW_LOG: u8 = 15;
pub const DEFAULT_ZSTD_LEVEL: i32 = 19;

/// What goes into a package besides the image.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub slice_log2: u8,
    pub zstd_level: i32,
    /// Largest zstd window a device must provide (log2; clamped to the slice size).
    pub zstd_window_log: u8,
    pub software_version: String,
    pub software_type: Option<String>,
    pub hardware_versions: Vec<String>,
    pub security_counter: u64,
    /// Creation time, Unix seconds.
    pub created: u64,
    pub expires: Option<u64>,
    pub erase_value: u8,
}

impl BuildOptions {
    pub fn new(software_version: impl Into<String>) -> Self {
        BuildOptions {
            slice_log2: DEFAULT_SLICE_LOG2,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            zstd_window_log: DEFAULT_WINDOW_LOG,
            software_version: software_version.into(),
            software_type: None,
            hardware_versions: Vec::new(),
            security_counter: 0,
            created: 0,
            expires: None,
            erase_value: 0xFF,
        }
    }

    fn check(&self) -> Result<()> {
        if !(MIN_SLICE_LOG2..=MAX_SLICE_LOG2).contains(&self.slice_log2) {
            return Err(Error::Invalid(
                "slice size must be a power of two from 4KiB to 1MiB".into(),
            ));
        }
        if self.zstd_window_log < MIN_WINDOW_LOG {
            return Err(Error::Invalid(
                "zstd window must be at least 1KiB (log 10)".into(),
            ));
        }
        let text = |v: &str, what: &'static str| {
            tlv::check_text(v.as_bytes(), what)
                .map(|_| ())
                .map_err(|_| {
                    Error::Invalid(format!(
                        "{what} '{v}' must be 1 to 64 bytes of text without control or bidirectional formatting characters"
                    ))
                })
        };
        text(&self.software_version, "software version")?;
        if let Some(t) = &self.software_type {
            text(t, "software type")?;
        }
        for h in &self.hardware_versions {
            text(h, "hardware version")?;
        }
        if self.hardware_versions.len() > tlv::MAX_HARDWARE_VERSIONS {
            return Err(Error::Invalid("at most 16 hardware versions".into()));
        }
        if let Some(e) = self.expires {
            if e <= self.created {
                return Err(Error::Invalid(
                    "expiry must be later than the creation time".into(),
                ));
            }
        }
        Ok(())
    }
}

/// One encoded slice.
pub(crate) struct Encoded {
    method: Method,
    arg: u64,
    payload: Vec<u8>,
    slice_sha256: [u8; 32],
}

fn encode_slice(data: &[u8], level: i32, window_log: u8) -> Result<Encoded> {
    let slice_sha256 = Sha256::digest(data).into();
    if let Some(&b) = data.first() {
        if data.iter().all(|&x| x == b) {
            return Ok(Encoded {
                method: Method::Fill,
                arg: b.into(),
                payload: Vec::new(),
                slice_sha256,
            });
        }
    }
    let compressed = zstd_compress(data, level, window_log)?;
    Ok(if compressed.len() < data.len() {
        Encoded {
            method: Method::Zstd,
            arg: 0,
            payload: compressed,
            slice_sha256,
        }
    } else {
        Encoded {
            method: Method::Raw,
            arg: 0,
            payload: data.to_vec(),
            slice_sha256,
        }
    })
}

/// One zstd frame with the window capped, the content size recorded, and no checksum (the
/// slice's SHA-256 covers it) or dictionary id.
pub(crate) fn zstd_compress(data: &[u8], level: i32, window_log: u8) -> Result<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    let fail = |e: std::io::Error| Error::Invalid(format!("zstd: {e}"));
    let mut c = zstd::bulk::Compressor::new(level).map_err(fail)?;
    c.set_parameter(CParameter::WindowLog(window_log.into()))
        .map_err(fail)?;
    c.set_parameter(CParameter::ChecksumFlag(false))
        .map_err(fail)?;
    c.set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(fail)?;
    c.set_parameter(CParameter::DictIdFlag(false))
        .map_err(fail)?;
    c.compress(data).map_err(fail)
}

/// Builds a full package for `image`, signed by `keys` (none: an unsigned package).
pub fn build_full(image: &Image, opts: &BuildOptions, keys: &[&SigningKey]) -> Result<Vec<u8>> {
    opts.check()?;
    let slice_size = 1usize << opts.slice_log2;
    let window_log = opts.zstd_window_log.min(opts.slice_log2);
    let encoded: Vec<Encoded> = image
        .data
        .par_chunks(slice_size)
        .map(|s| encode_slice(s, opts.zstd_level, window_log))
        .collect::<Result<_>>()?;
    package(image, None, encoded, opts, keys)
}

/// Builds a two-slot delta package: `new` rebuilt from `old` (kept intact on the device) and
/// the package. Each slice is stored the cheapest way among `fill`, `copy` (a range of the old
/// image), `patch` (bsdiff-style ops against the old image, zstd-compressed), `zstd` and `raw`,
/// so the package is never larger than the full package of `new` (plus the manifest's base
/// fields). One suffix sort of `old` serves every slice; each slice's patch is independent
/// (its old-image cursor starts at 0), so a device can apply slices in any order and resume
/// at any slice.
pub fn build_delta(
    old: &Image,
    new: &Image,
    opts: &BuildOptions,
    keys: &[&SigningKey],
) -> Result<Vec<u8>> {
    opts.check()?;
    if old.data.is_empty() {
        return Err(Error::Invalid("the old image is empty".into()));
    }
    let slice_size = 1usize << opts.slice_log2;
    let window_log = opts.zstd_window_log.min(opts.slice_log2);
    let matches = crate::delta::slice_matches(&old.data, &new.data, slice_size)?;
    let encoded: Vec<Encoded> = new
        .data
        .par_chunks(slice_size)
        .zip(matches.par_iter())
        .enumerate()
        .map(|(i, (s, m))| {
            let mut best = encode_slice(s, opts.zstd_level, window_log)?;
            if best.method == Method::Fill {
                return Ok(best);
            }
            let start = i * slice_size;
            if let Some(at) = crate::delta::find_copy(&old.data, s, start, m) {
                return Ok(Encoded {
                    method: Method::Copy,
                    arg: at,
                    payload: Vec::new(),
                    slice_sha256: best.slice_sha256,
                });
            }
            if let Some(stream) =
                crate::delta::patch_stream(&old.data, &new.data, start, s.len(), m)
            {
                let payload = zstd_compress(&stream, opts.zstd_level, window_log)?;
                if payload.len() < best.payload.len()
                    && crate::delta::patch_rebuilds(&old.data, &payload, s)
                {
                    best = Encoded {
                        method: Method::Patch,
                        arg: PATCH_FORMAT_1,
                        payload,
                        slice_sha256: best.slice_sha256,
                    };
                }
            }
            Ok(best)
        })
        .collect::<Result<_>>()?;
    package(new, Some(&old.data), encoded, opts, keys)
}

/// Hashes, lays out, signs and assembles encoded slices.
fn package(
    image: &Image,
    base: Option<&[u8]>,
    encoded: Vec<Encoded>,
    opts: &BuildOptions,
    keys: &[&SigningKey],
) -> Result<Vec<u8>> {
    let window_log = opts.zstd_window_log.min(opts.slice_log2);

    let mut slices = Vec::with_capacity(encoded.len());
    let mut payloads = Vec::new();
    for (i, e) in encoded.iter().enumerate() {
        slices.push(SliceRepr {
            index: i as u32,
            method: e.method,
            payload_offset: u32::try_from(payloads.len())
                .map_err(|_| Error::Invalid("package would exceed 4 GiB".into()))?,
            payload_len: e.payload.len() as u32,
            arg: e.arg,
            payload_sha256: if e.payload.is_empty() {
                SHA256_EMPTY
            } else {
                Sha256::digest(&e.payload).into()
            },
            slice_sha256: e.slice_sha256,
        });
        payloads.extend_from_slice(&e.payload);
    }
    let any_zstd = slices
        .iter()
        .any(|s| matches!(s.method, Method::Zstd | Method::Patch));
    let manifest = ManifestRepr {
        kind: if base.is_some() {
            Kind::Delta
        } else {
            Kind::Full
        },
        erase_value: opts.erase_value,
        slice_log2: opts.slice_log2,
        zstd_window_log: if any_zstd { window_log } else { 0 },
        security_counter: opts.security_counter,
        created: opts.created,
        expires: opts.expires,
        load_address: image.load_address,
        image_size: image.data.len() as u64,
        image_sha256: Sha256::digest(&image.data).into(),
        base_size: base.map_or(0, |b| b.len() as u64),
        base_sha256: base.map_or([0; 32], |b| Sha256::digest(b).into()),
        apply_descending: false,
        software_version: opts.software_version.clone(),
        software_type: opts.software_type.clone(),
        hardware_versions: opts.hardware_versions.clone(),
        slices,
    }
    .emit()?;
    let payload_len = u32::try_from(payloads.len())
        .map_err(|_| Error::Invalid("package would exceed 4 GiB".into()))?;
    let header = HeaderRepr {
        manifest_len: manifest.len() as u32,
        payload_len,
    }
    .emit();
    let mut h = Sha256::new();
    h.update(header);
    h.update(&manifest);
    let message = signed_message(&h.finalize().into());
    let block = signature_block(&[], keys, &message)?;
    let out = assemble(&manifest, &block, &payloads)?;
    self_check(&out, base)?;
    Ok(out)
}

/// Verifies a freshly built package through the same code a device runs, so the builder never
/// emits a package a device would refuse (or rebuild wrongly).
fn self_check(package: &[u8], base: Option<&[u8]>) -> Result<()> {
    let pkg = otapack_core::Package::parse(package)?;
    crate::report::verify_contents(&pkg, base).map_err(|e| {
        Error::Invalid(format!(
            "internal error: the built package does not verify: {e}"
        ))
    })
}

/// A signature block with `existing` entries followed by one new signature per key. Each new
/// signature is checked with the public key before it is used.
pub(crate) fn signature_block(
    existing: &[SignatureEntry<'_>],
    keys: &[&SigningKey],
    message: &[u8; 64],
) -> Result<Vec<u8>> {
    if existing.len() + keys.len() > MAX_SIGNATURES {
        return Err(Error::Invalid(format!(
            "a package holds at most {MAX_SIGNATURES} signatures"
        )));
    }
    let mut sigs = Vec::with_capacity(keys.len());
    for k in keys {
        let id = k.key_id();
        if existing.iter().any(|e| e.key_id == id) || sigs.iter().any(|(i, _, _)| *i == id) {
            return Err(Error::Invalid(format!(
                "the package is already signed by key {}",
                crate::keys::hex(&id)
            )));
        }
        let sig = k.sign(message)?;
        if !k.trusted_key()?.verify(message, &sig) {
            return Err(Error::Invalid(
                "a fresh signature does not verify (faulty key or signer)".into(),
            ));
        }
        sigs.push((id, k.algorithm(), sig));
    }
    let mut entries: Vec<SignatureEntry<'_>> = existing.to_vec();
    entries.extend(sigs.iter().map(|(id, alg, sig)| SignatureEntry {
        key_id: *id,
        algorithm: *alg,
        signature: sig,
    }));
    Ok(sigblock::emit(&entries)?)
}
