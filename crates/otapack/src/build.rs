//! Building packages: cut the image into slices, store each the cheapest way (`fill`, `zstd`,
//! `raw`, and for deltas `copy` and `patch`), hash, sign, assemble, and verify the result
//! through the device code path.

use crate::error::{Error, Result};
use crate::image::Image;
use crate::keys::SigningKey;
use otapack_core::package::{assemble, signed_message};
use otapack_core::patch::{PATCH_FORMAT_1, PATCH_FORMAT_2};
use otapack_core::predict::Predict;
use otapack_core::ram;
use otapack_core::verify::Policy;
use otapack_core::wire::header::HeaderRepr;
use otapack_core::wire::manifest::{
    in_place_window, segmented_payload_len, Kind, Manifest, ManifestRepr, MAX_SLICE_LOG2,
    MIN_SLICE_LOG2, MIN_WINDOW_LOG, SEGMENT_LINK_LEN, SHA256_EMPTY, SHORT_LINK_LEN,
};
use otapack_core::wire::sigblock::{self, SignatureEntry, MAX_SIGNATURES};
use otapack_core::wire::slice::{Method, SliceRepr};
use otapack_core::wire::tlv;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::ops::Range;

/// Default slice size: 64 KiB.
pub const DEFAULT_SLICE_LOG2: u8 = 16;
/// Default zstd window: 8 KiB, so that with [`DEFAULT_SEGMENT_LOG`] the applier needs about
/// 55 KiB plus the manifest (`otapack_core::ram`): a device with 64 KiB for the updater. Each
/// doubling costs the decoder twice that much more RAM (window and block); each halving costs
/// a few percent of size (see the README's measurements).
pub const DEFAULT_WINDOW_LOG: u8 = 13;
/// Default payload segment: 4 KiB, what a device buffers of a payload at a time.
pub const DEFAULT_SEGMENT_LOG: u8 = 12;
/// Default segment link: 16 bytes. A link only has to resist a second preimage (the builder
/// makes every segment, and the signed manifest holds the first one's whole SHA-256), for
/// which 128 bits are as many as Ed25519 gives; it halves the 0.8 % that 32-byte links add to
/// a 4 KiB-segmented payload.
pub const DEFAULT_SEGMENT_LINK_LEN: u8 = 16;
pub const DEFAULT_ZSTD_LEVEL: i32 = 19;
/// The device RAM `otapack build` fits its settings to when none are given: 64 KiB for the
/// updater, stack included (issue 3's target device).
pub const DEFAULT_DEVICE_RAM: u64 = 64 * 1024;

/// What goes into a package besides the image.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub slice_log2: u8,
    pub zstd_level: i32,
    /// Largest zstd window a device must provide (log2; clamped to the slice size).
    pub zstd_window_log: u8,
    /// 0, or the log2 of the most bytes a zstd block may decode to (10..=17, at most the
    /// window): smaller blocks bound the decoder's block buffers.
    pub zstd_block_log: u8,
    /// 0, or the log2 of the payload segment size: payloads longer than that are cut into
    /// hash-chained segments, so a device buffers one segment, not one payload.
    pub segment_log: u8,
    /// Bytes of each segment link: 16 (the default: the first half of the next segment's
    /// SHA-256, 128-bit second-preimage resistance) or 32 (the whole SHA-256).
    pub segment_link_len: u8,
    /// The device RAM the package must fit (`otapack_core::ram`); the build fails if it needs
    /// more. [`BuildOptions::fit_device_ram`] picks settings for a budget.
    pub device_ram: Option<u64>,
    /// Set by [`BuildOptions::fit_device_ram`]: the image length the settings were fitted
    /// for. The build may then pick another of [`BuildOptions::fit_candidates`] if it gives a
    /// smaller package.
    pub fit_image_len: Option<u64>,
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
            zstd_block_log: 0,
            segment_log: DEFAULT_SEGMENT_LOG,
            segment_link_len: DEFAULT_SEGMENT_LINK_LEN,
            device_ram: None,
            fit_image_len: None,
            software_version: software_version.into(),
            software_type: None,
            hardware_versions: Vec::new(),
            security_counter: 0,
            created: 0,
            expires: None,
            erase_value: 0xFF,
        }
    }

    /// Chooses the zstd window, the zstd block limit and the payload segment size for a device
    /// that gives the updater `budget` bytes of RAM (stack included, see `otapack_core::ram`),
    /// for an image of `image_len` bytes: the largest block limit that fits, then the largest
    /// window, then the largest segment (at least 4 KiB when possible). Smaller settings cost
    /// package size (see the README). Records `budget` so the build fails rather than exceed it,
    /// and lets the build trade window for segment size within it when that makes the package
    /// smaller ([`BuildOptions::fit_candidates`]).
    pub fn fit_device_ram(&mut self, budget: u64, image_len: u64) -> Result<()> {
        self.fit_with(budget, image_len, ram::STACK_RESERVE)
    }

    /// [`fit_device_ram`](Self::fit_device_ram) for a single-slot (in-place) package, whose
    /// device session needs the larger stack reserve `ram::IN_PLACE_STACK_RESERVE`.
    pub fn fit_device_ram_in_place(&mut self, budget: u64, image_len: u64) -> Result<()> {
        self.fit_with(budget, image_len, ram::IN_PLACE_STACK_RESERVE)?;
        // The trade of window for segments (`refit`) is for two-slot and full builds only.
        self.fit_image_len = None;
        Ok(())
    }

    fn fit_with(&mut self, budget: u64, image_len: u64, stack: u64) -> Result<()> {
        let candidates = self.candidates(budget, image_len, stack);
        let &(window, block, segment) = candidates.first().ok_or_else(|| {
            Error::Invalid(format!(
                "a device RAM budget of {budget} bytes is too small: even a 1KiB zstd window, \
                 1KiB blocks and 1KiB payload segments need {} bytes with {}-byte slices",
                self.fixed_need(image_len, stack) + ram::zstd_heap(10, 10) + 1024,
                1u64 << self.slice_log2
            ))
        })?;
        self.zstd_window_log = window;
        self.zstd_block_log = block;
        self.segment_log = segment;
        self.device_ram = Some(budget);
        self.fit_image_len = Some(image_len);
        Ok(())
    }

    /// What the applier needs besides the zstd decoder and the payload segment: the manifest
    /// buffer, the write buffer and the stack reserve `stack`.
    fn fixed_need(&self, image_len: u64, stack: u64) -> u64 {
        let slices = image_len.div_ceil(1 << self.slice_log2).max(1);
        let tlv: u64 = 4
            + self.software_version.len() as u64
            + self
                .software_type
                .as_ref()
                .map_or(0, |t| 4 + t.len() as u64)
            + self
                .hardware_versions
                .iter()
                .map(|h| 4 + h.len() as u64)
                .sum::<u64>();
        let manifest = 32 + 136 + tlv + 96 * slices;
        manifest + ram::WRITE_BUFFER + stack
    }

    /// The `(window, block, segment)` logs that fit `budget` for an image of `image_len`
    /// bytes, best first: the [`fit_device_ram`](Self::fit_device_ram) choice, then each
    /// smaller window and block that leaves room for a larger segment than any before it. A
    /// smaller window compresses worse, but larger segments need fewer 16- or 32-byte links,
    /// which pays when most of the package is stored raw (compressed firmware inside the
    /// image). Empty when nothing fits.
    pub fn fit_candidates(&self, budget: u64, image_len: u64) -> Vec<(u8, u8, u8)> {
        self.candidates(budget, image_len, ram::STACK_RESERVE)
    }

    fn candidates(&self, budget: u64, image_len: u64, stack: u64) -> Vec<(u8, u8, u8)> {
        let fixed = self.fixed_need(image_len, stack);
        let slice = self.slice_log2;
        // The largest segment that fits beside a decoder for (window, block), at least
        // `min_segment`.
        let segment_for = |window: u8, block: u8, min_segment: u8| {
            (min_segment..=slice).rev().find(|&segment| {
                fixed + ram::zstd_heap(window, block) + (1u64 << segment) <= budget
            })
        };
        // First with segments of at least 4 KiB (smaller ones cost a link per segment), then
        // with any.
        let first = |min_segment: u8| {
            (10..=17u8.min(slice)).rev().find_map(|block| {
                (block..=slice).rev().find_map(|window| {
                    Some((window, block, segment_for(window, block, min_segment)?))
                })
            })
        };
        let Some(best) = first(12.min(slice)).or_else(|| first(10)) else {
            return Vec::new();
        };
        let mut out = vec![best];
        // Smaller windows, each with blocks of min(the chosen block limit, the window).
        for window in (10..best.0).rev() {
            let block = best.1.min(window);
            if let Some(segment) = segment_for(window, block, 10) {
                if out.last().is_some_and(|&(_, _, s)| segment > s) {
                    out.push((window, block, segment));
                }
            }
        }
        out
    }

    /// The manifest's `segment_link_len` byte: 0 for 32-byte links (and always without
    /// segments), 16 for 16-byte links.
    pub(crate) fn link_code(&self) -> u8 {
        if self.segment_log == 0 || self.segment_link_len == 32 {
            0
        } else {
            16
        }
    }

    /// The payload segment size in bytes, 0 without segments.
    fn segment_bytes(&self) -> u64 {
        match self.segment_log {
            0 => 0,
            n => 1u64 << n,
        }
    }

    /// Bytes of each segment link the manifest's [`link_code`](Self::link_code) stands for.
    fn link_bytes(&self) -> u64 {
        match self.link_code() {
            0 => SEGMENT_LINK_LEN,
            _ => SHORT_LINK_LEN,
        }
    }

    /// The zstd block log actually written: 0, or clamped to the window.
    pub(crate) fn block_log(&self) -> u8 {
        match self.zstd_block_log {
            0 => 0,
            b => b.min(self.zstd_window_log.min(self.slice_log2)).min(17),
        }
    }

    fn check(&self) -> Result<()> {
        if !(MIN_SLICE_LOG2..=MAX_SLICE_LOG2).contains(&self.slice_log2) {
            return Err(Error::Invalid(
                "slice size must be a power of two from 4KiB to 1MiB".into(),
            ));
        }
        if self.zstd_block_log != 0 && self.zstd_block_log < 10 {
            return Err(Error::Invalid(
                "zstd block size must be at least 1KiB (log 10)".into(),
            ));
        }
        if self.segment_log != 0 && !(10..=self.slice_log2).contains(&self.segment_log) {
            return Err(Error::Invalid(
                "payload segment size must be from 1KiB to the slice size".into(),
            ));
        }
        if !matches!(self.segment_link_len, 16 | 32) {
            return Err(Error::Invalid(
                "segment links must be 16 or 32 bytes".into(),
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
#[derive(Clone)]
pub(crate) struct Encoded {
    method: Method,
    arg: u64,
    payload: Vec<u8>,
    slice_sha256: [u8; 32],
}

fn encode_slice(data: &[u8], level: i32, window_log: u8, block_log: u8) -> Result<Encoded> {
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
    let compressed = zstd_compress(data, level, window_log, block_log)?;
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
pub(crate) fn zstd_compress(
    data: &[u8],
    level: i32,
    window_log: u8,
    block_log: u8,
) -> Result<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    let fail = |e: std::io::Error| Error::Invalid(format!("zstd: {e}"));
    let mut c = zstd::bulk::Compressor::new(level).map_err(fail)?;
    c.set_parameter(CParameter::WindowLog(window_log.into()))
        .map_err(fail)?;
    frame_parameters(c.context_mut(), block_log)
        .map_err(|e| Error::Invalid(format!("zstd: {}", zstd::zstd_safe::get_error_name(e))))?;
    c.compress(data).map_err(fail)
}

/// A `zstd-ref` payload: `data` cut into frames of `2^window_log` bytes (the last one
/// shorter), each compressed against `prefix` (libzstd's `ZSTD_CCtx_refPrefix`, as
/// `zstd --patch-from` does) with its content size recorded and no checksum. The device holds
/// one frame's content in its zstd ring and reads the prefix from the base as matches need it.
pub fn zstd_ref_compress(
    prefix: &[u8],
    data: &[u8],
    level: i32,
    window_log: u8,
    block_log: u8,
) -> Result<Vec<u8>> {
    use zstd::zstd_safe::CParameter;
    // The frame's window must reach over the prefix to its start.
    let reach = (prefix.len() + (1usize << window_log))
        .next_power_of_two()
        .trailing_zeros();
    zstd_ref_frames(data, window_log, block_log, |c| {
        c.set_parameter(CParameter::CompressionLevel(level))?;
        c.set_parameter(CParameter::WindowLog(reach.clamp(10, 30)))?;
        c.ref_prefix(prefix)
    })
}

/// What every zstd frame otapack writes has: no checksum (the slice's SHA-256 covers it), its
/// content size, no dictionary id, and blocks held to `2^block_log` (0: no limit).
fn frame_parameters(
    c: &mut zstd::zstd_safe::CCtx<'_>,
    block_log: u8,
) -> zstd::zstd_safe::SafeResult {
    use zstd::zstd_safe::CParameter;
    c.set_parameter(CParameter::ChecksumFlag(false))?;
    c.set_parameter(CParameter::ContentSizeFlag(true))?;
    c.set_parameter(CParameter::DictIdFlag(false))?;
    if block_log != 0 {
        c.set_parameter(CParameter::MaxBlockSize(1 << block_log))?;
    }
    Ok(0)
}

/// The frames of a zstd-ref payload (see [`zstd_ref_compress`]): `refer` sets what each frame
/// refers to (and its own parameters) after the common ones.
fn zstd_ref_frames<'p>(
    data: &[u8],
    window_log: u8,
    block_log: u8,
    refer: impl Fn(&mut zstd::zstd_safe::CCtx<'p>) -> zstd::zstd_safe::SafeResult,
) -> Result<Vec<u8>> {
    use zstd::zstd_safe::CCtx;
    let fail = |e: zstd::zstd_safe::ErrorCode| {
        Error::Invalid(format!("zstd: {}", zstd::zstd_safe::get_error_name(e)))
    };
    let mut c = CCtx::create();
    let mut out = Vec::new();
    for chunk in data.chunks(1usize << window_log) {
        c.reset(zstd::zstd_safe::ResetDirective::SessionAndParameters)
            .map_err(fail)?;
        frame_parameters(&mut c, block_log).map_err(fail)?;
        refer(&mut c).map_err(fail)?;
        let mut frame = Vec::with_capacity(zstd::zstd_safe::compress_bound(chunk.len()));
        c.compress2(&mut frame, chunk).map_err(fail)?;
        out.extend_from_slice(&frame);
    }
    Ok(out)
}

/// Builds a full package for `image`, signed by `keys` (none: an unsigned package).
pub fn build_full(image: &Image, opts: &BuildOptions, keys: &[&SigningKey]) -> Result<Vec<u8>> {
    opts.check()?;
    let slice_size = 1usize << opts.slice_log2;
    let encode = |o: &BuildOptions, i: usize| {
        let s = slice_of(&image.data, slice_size, i);
        encode_slice(
            s,
            o.zstd_level,
            o.zstd_window_log.min(o.slice_log2),
            o.block_log(),
        )
    };
    let encoded: Vec<Encoded> = (0..image.data.len().div_ceil(slice_size))
        .into_par_iter()
        .map(|i| encode(opts, i))
        .collect::<Result<_>>()?;
    let (opts, encoded) = refit(opts, encoded, encode)?;
    package(image, None, Kind::Full, false, encoded, &opts, keys)
}

/// Slice `i` of `data` cut in slices of `slice_size` bytes (empty past the end).
fn slice_of(data: &[u8], slice_size: usize, i: usize) -> &[u8] {
    let start = i.saturating_mul(slice_size).min(data.len());
    data.get(start..start.saturating_add(slice_size).min(data.len()))
        .unwrap_or(&[])
}

/// The payload bytes `encoded` takes with `opts`' segments and links.
fn payload_bytes(opts: &BuildOptions, encoded: &[Encoded]) -> u64 {
    let (segment, link) = (opts.segment_bytes(), opts.link_bytes());
    encoded
        .iter()
        .map(|e| segmented_payload_len(e.payload.len() as u64, segment, link))
        .sum()
}

/// For settings fitted to a RAM budget ([`BuildOptions::fit_device_ram`]), tries the other
/// [`BuildOptions::fit_candidates`] (smaller window, larger segments) and keeps whichever
/// gives the fewest payload bytes. Only the zstd, patch and zstd-ref slices are encoded
/// again (with `encode`, by slice index): fill, copy and raw slices do not depend on the
/// window. A candidate is tried only if the raw slices' links alone shrink by more than
/// 0.25 % of the other slices' bytes, so an image without raw slices is encoded once.
///
/// Measured on OVMF (3.6 MB, 21 of 56 slices raw LZMA data; 16-byte links): 8 KiB window and
/// 8 KiB segments 1,521,865 bytes, 4 KiB window, 4 KiB blocks and 16 KiB segments fewer.
fn refit(
    opts: &BuildOptions,
    encoded: Vec<Encoded>,
    encode: impl Fn(&BuildOptions, usize) -> Result<Encoded> + Sync,
) -> Result<(BuildOptions, Vec<Encoded>)> {
    let (Some(budget), Some(image_len)) = (opts.device_ram, opts.fit_image_len) else {
        return Ok((opts.clone(), encoded));
    };
    let candidates = opts.fit_candidates(budget, image_len);
    // Only settings still as `fit_device_ram` left them: edited ones are the caller's.
    let current = (opts.zstd_window_log, opts.zstd_block_log, opts.segment_log);
    if candidates.first() != Some(&current) {
        return Ok((opts.clone(), encoded));
    }
    let coded = |e: &Encoded| matches!(e.method, Method::Zstd | Method::Patch | Method::ZstdRef);
    let coded_bytes: u64 = encoded
        .iter()
        .filter(|e| coded(e))
        .map(|e| e.payload.len() as u64)
        .sum();
    let stored: Vec<Encoded> = encoded.iter().filter(|e| !coded(e)).cloned().collect();
    let mut best_bytes = payload_bytes(opts, &encoded);
    let mut best = (opts.clone(), encoded);
    for (window, block, segment) in candidates.into_iter().skip(1) {
        let mut o = best.0.clone();
        o.zstd_window_log = window;
        o.zstd_block_log = block;
        o.segment_log = segment;
        let saved = payload_bytes(&best.0, &stored).saturating_sub(payload_bytes(&o, &stored));
        if saved * 400 <= coded_bytes {
            continue;
        }
        let again: Vec<(usize, Encoded)> = best
            .1
            .par_iter()
            .enumerate()
            .filter(|(_, e)| coded(e))
            .map(|(i, _)| Ok((i, encode(&o, i)?)))
            .collect::<Result<_>>()?;
        let mut e: Vec<Encoded> = best.1.clone();
        for (i, x) in again {
            if let Some(slot) = e.get_mut(i) {
                *slot = x;
            }
        }
        let bytes = payload_bytes(&o, &e);
        if bytes < best_bytes {
            best_bytes = bytes;
            best = (o, e);
        }
    }
    Ok(best)
}

/// Builds a two-slot delta package: `new` rebuilt from `old` (kept intact on the device) and
/// the package. Each slice is stored the cheapest way among `fill`, `copy` (a range of the old
/// image), `patch` (bsdiff-style ops against the old image, zstd-compressed), `zstd-ref` (zstd
/// frames whose matches also reach into the old image), `zstd` and `raw`,
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
    let matches = crate::delta::slice_matches(&old.data, &new.data, slice_size)?;
    let whole = 0..old.data.len();
    let predict = prediction(old, &new.data, &matches);
    // Every slice refers to the same zstd-ref prefix when the whole base is small enough.
    let shared = (whole.len() <= crate::delta::MAX_REF_REGION)
        .then(|| RefPrefix::new(&old.data, whole.clone(), opts.zstd_level))
        .flatten();
    let encode = |o: &BuildOptions, i: usize| {
        encode_delta_slice(
            &old.data,
            &new.data,
            i,
            slice_of(&new.data, slice_size, i),
            matches.get(i).map_or(&[][..], |m| &m[..]),
            &whole,
            predict.as_ref(),
            shared.as_ref(),
            o,
        )
    };
    let encoded: Vec<Encoded> = (0..new.data.len().div_ceil(slice_size))
        .into_par_iter()
        .map(|i| encode(opts, i))
        .collect::<Result<_>>()?;
    let (opts, encoded) = refit(opts, encoded, encode)?;
    package(
        new,
        Some(&old.data),
        Kind::Delta,
        false,
        encoded,
        &opts,
        keys,
    )
}

/// The patch-format-2 header for a two-slot delta: the instruction rule of what the old image
/// is made of ([`branch_flag`]: Thumb `BL`, AArch64, s390x or Xtensa; MIPS16 `JAL`s, see
/// [`mips16_calls`]) and 32-bit pointers predicted through the address map of `matches`, at
/// the address [`crate::delta::pointer_address`] infers (the old image's load address when it
/// fits 32 bits and nothing predicts better; no pointers when neither exists, nor with s390x).
/// `None` when nothing moved.
fn prediction(old: &Image, new: &[u8], matches: &[Vec<crate::delta::Match>]) -> Option<Predict> {
    use otapack_core::predict::{MIPS16_JAL, POINTER32, S390_RIL, THUMB_BL};
    let map = crate::delta::address_map(old.data.len(), matches);
    if map.iter().all(|&(_, shift)| shift == 0) {
        return None;
    }
    let (branch, thumb) = branch_flag(&old.data);
    if branch == S390_RIL {
        // s390x is big-endian: the (little-endian) pointer rule cannot go with it.
        return Predict::new(branch, 0, &map);
    }
    let load = u32::try_from(old.load_address).ok();
    let pointers = crate::delta::pointer_address(&old.data, new, matches, &map, load);
    if branch == THUMB_BL {
        // MIPS16 calls are absolute: counted at the pointers' address and at the load address,
        // and predicted at the one where more lie inside the image (with pointers only if
        // that is the pointers' address).
        let best = [pointers, load]
            .into_iter()
            .flatten()
            .map(|a| (mips16_calls(&old.data, a), a))
            .max_by_key(|&(calls, _)| calls);
        if let Some((calls, a)) = best {
            if calls >= 64 && calls >= old.data.len() / 1024 && calls > 4 * thumb {
                let with_pointers = if pointers == Some(a) { POINTER32 } else { 0 };
                return Predict::new(MIPS16_JAL | with_pointers, a, &map);
            }
        }
    }
    let (flags, address) = match pointers {
        Some(a) => (branch | POINTER32, a),
        None => (branch, 0),
    };
    Predict::new(flags, address, &map)
}

/// The MIPS16e `JAL`/`JALX` instructions (`00011x` halfword, then the low 16 target bits) at
/// even offsets of `image` whose targets lie inside it when it is loaded at `address`. The
/// builder predicts them when there are at least 64, one per KiB and more than 4x the Thumb
/// `BL`s. On the old images in testdata: 1,335 in rtw88's 202 KB firmware (at the inferred
/// 0x800E_D438; 4 Thumb `BL`s); chance matches elsewhere, at most 331 (OVMF, 3.6 MB) and
/// never one per KiB.
fn mips16_calls(image: &[u8], address: u32) -> usize {
    use otapack_core::predict::mips16_jal_target;
    (0..image.len().saturating_sub(3))
        .step_by(2)
        .filter(|&p| {
            let h = u16::from_le_bytes([image[p], image[p + 1]]);
            let l = u16::from_le_bytes([image[p + 2], image[p + 3]]);
            mips16_jal_target(h, l, p as u32, address).is_some_and(|t| (t as usize) < image.len())
        })
        .count()
}

/// Which call instructions `image` is made of: [`S390_RIL`] (s390x relative-long
/// instructions) if it holds at least 32 s390x `BRASL` calls (at even offsets) whose targets
/// lie inside the image and more than 4x as many as either kind below; else [`A64_BRANCH`] and
/// [`A64_ADRP`] (AArch64 calls and ADRP pairs) if it holds at least 32 AArch64 `BL`s whose
/// targets lie inside the image and more than 4x as many as such Thumb `BL`s; else
/// [`THUMB_BL`] (as before the AArch64 rules). Counted on the old images in testdata (AArch64 /
/// Thumb calls): U-Boot 9,183 / 29, TF-A 662 / 0, micro:bit 6 / 6,180, nRF52 3 / 1,796, OVMF
/// (x86-64, mostly LZMA data) 78 / 333, and at most 12 of either in the other x86, RISC-V,
/// Xtensa and s390x images. `BRASL`s: 1,299 in the s390x image, none in any other.
///
/// Before all of these, [`XTENSA`] if the image holds at least 32 Xtensa `ENTRY a1, n`
/// instructions (`36 x1 0y`, the first instruction of every windowed-ABI function) and at
/// least one per KiB: 139 in the 26 KB ESP32 bootloader, at most 48 (U-Boot, 770 KB) in any
/// other image in testdata.
///
/// [`XTENSA`]: otapack_core::predict::XTENSA
/// [`S390_RIL`]: otapack_core::predict::S390_RIL
/// [`A64_BRANCH`]: otapack_core::predict::A64_BRANCH
/// [`A64_ADRP`]: otapack_core::predict::A64_ADRP
/// [`THUMB_BL`]: otapack_core::predict::THUMB_BL
///
/// Also returns the Thumb `BL` count (0 for Xtensa), which decides against MIPS16 calls once
/// the pointer address is known (see [`prediction`]).
fn branch_flag(image: &[u8]) -> (u8, usize) {
    use otapack_core::predict::{
        s390_ril_target, A64_ADRP, A64_BRANCH, S390_RIL, THUMB_BL, XTENSA,
    };
    let len = image.len() as i64;
    let inside = |t: i64| (0..len).contains(&t);
    let word = |i: usize| {
        image
            .get(i..i + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let entries = image
        .windows(3)
        .filter(|w| w[0] == 0x36 && w[1] & 0x0F == 1 && w[2] < 0x10)
        .count();
    if entries >= 32 && entries >= image.len() / 1024 {
        return (XTENSA, 0);
    }
    let (mut a64, mut thumb, mut brasl) = (0usize, 0usize, 0usize);
    for i in (0..image.len().saturating_sub(3)).step_by(2) {
        let w = word(i);
        if let (Some(&[0xC0, op2]), Some(&[a, b, c, d])) =
            (image.get(i..i + 2), image.get(i + 2..i + 6))
        {
            // BRASL (C0 x5) with a target the device's rule would see inside the image.
            let target = s390_ril_target([0xC0, op2], [a, b, c, d], i as u32);
            brasl +=
                usize::from(op2 & 0x0F == 5 && target.is_some_and(|t| (t as usize) < image.len()));
        }
        if i % 4 == 0 && w >> 26 == 0x25 {
            let off = (((w & 0x03FF_FFFF) << 6) as i32 >> 4) as i64;
            a64 += usize::from(inside(i as i64 + off));
        }
        let (h, l) = (w & 0xFFFF, w >> 16);
        if h & 0xF800 == 0xF000 && l & 0xF800 == 0xF800 {
            let imm = ((h & 0x7FF) << 12) | ((l & 0x7FF) << 1);
            let off = ((imm << 9) as i32 >> 9) as i64;
            thumb += usize::from(inside(i as i64 + 4 + off));
        }
    }
    let flag = if brasl >= 32 && brasl > 4 * a64.max(thumb) {
        S390_RIL
    } else if a64 >= 32 && a64 > 4 * thumb {
        A64_BRANCH | A64_ADRP
    } else {
        THUMB_BL
    };
    (flag, thumb)
}

/// The cheapest encoding of slice `i` (`s`) of a delta: fill, copy, patch (format 1, or format
/// 2 with `predict` when that is smaller), zstd-ref, zstd or raw, with copies, patches and
/// zstd-ref prefixes reading only `old[window]` (a two-slot delta's window is all of `old`).
/// `shared` is a prefix digested once for every slice, used when its range is this slice's.
#[allow(clippy::too_many_arguments)]
fn encode_delta_slice<'a>(
    old: &'a [u8],
    new: &[u8],
    i: usize,
    s: &[u8],
    matches: &[crate::delta::Match],
    window: &Range<usize>,
    predict: Option<&Predict>,
    shared: Option<&RefPrefix<'a>>,
    opts: &BuildOptions,
) -> Result<Encoded> {
    let slice_size = 1usize << opts.slice_log2;
    let window_log = opts.zstd_window_log.min(opts.slice_log2);
    let (level, block_log) = (opts.zstd_level, opts.block_log());
    let quick = level.min(SCREEN_LEVEL);
    // Every candidate is first compressed at the quick level; only those that come within a
    // third of the best quick size are compressed again at the build's level (level 19 was
    // at most 30 % smaller than level 9 on the shipped pairs). Level 19 on every candidate was
    // most of the build time on small images (perf: 70 % in libzstd's optimal parser).
    let plain = encode_slice(s, quick, window_log, block_log)?;
    if plain.method == Method::Fill {
        return Ok(plain);
    }
    let slice_sha256 = plain.slice_sha256;
    let start = i * slice_size;
    if let Some(at) = crate::delta::find_copy(old, s, start, matches, window) {
        return Ok(Encoded {
            method: Method::Copy,
            arg: at,
            payload: Vec::new(),
            slice_sha256,
        });
    }
    let mut candidates = vec![Candidate {
        method: plain.method,
        arg: 0,
        payload: plain.payload,
        source: Source::Plain,
    }];
    let formats =
        std::iter::once((PATCH_FORMAT_1, None)).chain(predict.map(|p| (PATCH_FORMAT_2, Some(p))));
    for (format, p) in formats {
        if let Some(stream) = crate::delta::patch_stream_with(old, new, start, s.len(), matches, p)
        {
            candidates.push(Candidate {
                method: Method::Patch,
                arg: format,
                payload: zstd_compress(&stream, quick, window_log, block_log)?,
                source: Source::Patch(stream),
            });
        }
    }
    // The slice in zstd frames whose matches also reach into the base (what
    // `zstd --patch-from` does): wins where code changed too much for bsdiff-style add runs.
    // Both passes use the prefix digested once (a libzstd CDict), not indexed again for every
    // frame.
    let region = crate::delta::ref_region(window, matches, start, s.len());
    let local;
    let rp = match shared {
        Some(r) if r.region == region => Some(r),
        _ => {
            local = RefPrefix::new(old, region, level);
            local.as_ref()
        }
    };
    if let Some(rp) = rp {
        let payload = match rp.dict(true) {
            Some(dict) => zstd_ref_compress_with(dict, s, window_log, block_log)?,
            None => zstd_ref_compress(rp.prefix, s, quick, window_log, block_log)?,
        };
        candidates.push(Candidate {
            method: Method::ZstdRef,
            arg: (rp.region.start as u64) << 32 | rp.region.len() as u64,
            payload,
            source: Source::Ref(rp),
        });
    }
    let best_quick = candidates
        .iter()
        .map(|c| c.payload.len())
        .min()
        .unwrap_or(0);
    // The other patch format's best quick size: format 1 and format 2 streams differ only in
    // what prediction removed, so one more than 10 % behind at level 9 did not catch up at the
    // final level on the 13 comparison pairs, and is not compressed again.
    let best_patch_quick = |not: u64| {
        candidates
            .iter()
            .filter(|c| c.method == Method::Patch && c.arg != not)
            .map(|c| c.payload.len())
            .min()
    };
    let behind: Vec<bool> = candidates
        .iter()
        .map(|c| {
            c.method == Method::Patch
                && best_patch_quick(c.arg)
                    .is_some_and(|b| 10 * c.payload.len() > 11usize.saturating_mul(b))
        })
        .collect();
    for (c, behind) in candidates.iter_mut().zip(behind) {
        if level <= quick
            || 3 * c.payload.len() >= 4 * best_quick
            || c.method == Method::Raw
            || behind
        {
            continue;
        }
        let full = match &c.source {
            Source::Plain => zstd_compress(s, level, window_log, block_log)?,
            Source::Patch(stream) => {
                zstd_compress(stream, patch_level(level), window_log, block_log)?
            }
            Source::Ref(rp) => match rp.dict(false) {
                Some(dict) => zstd_ref_compress_with(dict, s, window_log, block_log)?,
                None => continue,
            },
        };
        if full.len() < c.payload.len() {
            c.payload = full;
        }
    }
    // Smallest first; a patch or zstd-ref payload is kept only once the host decoders rebuild
    // the slice from it (the package as a whole then goes through the device path too).
    candidates.sort_by_key(|c| c.payload.len());
    for c in candidates {
        let rebuilds = match &c.source {
            Source::Plain => true,
            Source::Patch(_) => {
                crate::delta::patch_rebuilds(old, &c.payload, c.arg, start, s, window)
            }
            Source::Ref(rp) => {
                crate::delta::zstd_ref_rebuilds(rp.prefix, &c.payload, s, window_log)
            }
        };
        if rebuilds && c.payload.len() < s.len() {
            return Ok(Encoded {
                method: c.method,
                arg: c.arg,
                payload: c.payload,
                slice_sha256,
            });
        }
    }
    Ok(Encoded {
        method: Method::Raw,
        arg: 0,
        payload: s.to_vec(),
        slice_sha256,
    })
}

/// A way to store a delta slice, while `encode_delta_slice` compares them.
struct Candidate<'r, 'a> {
    method: Method,
    arg: u64,
    payload: Vec<u8>,
    source: Source<'r, 'a>,
}

/// What a [`Candidate`]'s payload is compressed from.
enum Source<'r, 'a> {
    /// The slice itself (zstd, or raw).
    Plain,
    /// A patch op stream.
    Patch(Vec<u8>),
    /// The slice against this prefix (zstd-ref).
    Ref(&'r RefPrefix<'a>),
}

/// A zstd-ref prefix (a range of the old image) and, once a slice needs it, libzstd's
/// digested form of it at the build's level: indexed once and shared by every frame and slice
/// that refers to the same range, where `ZSTD_CCtx_refPrefix` indexes it again for each frame
/// (most of the build time on large images, measured).
pub(crate) struct RefPrefix<'a> {
    region: Range<usize>,
    prefix: &'a [u8],
    level: i32,
    /// At [`SCREEN_LEVEL`] and at `level`, each made when first needed.
    dicts: [std::sync::OnceLock<Option<zstd::zstd_safe::CDict<'a>>>; 2],
}

impl<'a> RefPrefix<'a> {
    /// `None` for an empty range, or one that starts like a zstd dictionary (libzstd would
    /// read it as one, not as raw content).
    fn new(old: &'a [u8], region: Range<usize>, level: i32) -> Option<Self> {
        let prefix = old.get(region.clone()).filter(|p| !p.is_empty())?;
        if prefix.starts_with(&[0x37, 0xA4, 0x30, 0xEC]) {
            return None;
        }
        Some(RefPrefix {
            region,
            prefix,
            level,
            dicts: Default::default(),
        })
    }

    /// The prefix digested for the quick pass (`quick`) or the build's level.
    fn dict(&self, quick: bool) -> Option<&zstd::zstd_safe::CDict<'a>> {
        let level = if quick {
            self.level.min(SCREEN_LEVEL)
        } else {
            self.level
        };
        self.dicts[usize::from(!quick)]
            .get_or_init(|| zstd::zstd_safe::CDict::try_create_by_reference(self.prefix, level))
            .as_ref()
    }
}

/// [`zstd_ref_compress`] against a digested prefix (the level is the dictionary's).
fn zstd_ref_compress_with(
    dict: &zstd::zstd_safe::CDict<'_>,
    data: &[u8],
    window_log: u8,
    block_log: u8,
) -> Result<Vec<u8>> {
    zstd_ref_frames(data, window_log, block_log, |c| c.ref_cdict(dict))
}

/// The zstd level every delta-slice candidate is first compressed at (see `encode_delta_slice`).
const SCREEN_LEVEL: i32 = 9;

/// The level a patch op stream is compressed at for a build at `level`: 22 from level 19 up
/// (the default), else `level`. An op stream is long runs of zero add bytes and small
/// varints, and level 22's deeper search (search log 9, target length 999 against 6 and 256)
/// finds them. Measured on the 13 comparison pairs (signed): U-Boot 15,790 -> 15,147 bytes,
/// micro:bit 2,246 -> 2,191, s390-ccw 2,998 -> 2,923, nRF52 1,530 -> 1,504, geometric mean
/// 0.938 -> 0.929x HDiffPatch; level 22 on zstd and zstd-ref slices gained nothing (SeaBIOS
/// 6 bytes larger). U-Boot's build went from about 0.20 to 0.25 s.
fn patch_level(level: i32) -> i32 {
    if level >= DEFAULT_ZSTD_LEVEL {
        22
    } else {
        level
    }
}

/// Builds a single-slot in-place delta package (kind 2, `delta-in-place`): `new` is written
/// over `old` in the same slot, slice by slice, each slice decoded into the device's scratch
/// area of `scratch_size` bytes before it is copied over its own region. The slice size must
/// not exceed `scratch_size`.
///
/// Slice k may only read base bytes still intact when it is decoded (its read window,
/// [`otapack_core::wire::manifest::in_place_window`]). Which bytes those are depends on the
/// apply order, so the slices are encoded for both orders and the smaller package is kept
/// (ascending on a tie). Methods are chosen per slice as for [`build_delta`]. The package is
/// verified through the device decoder and applied through the host in-place model
/// ([`crate::in_place::apply_in_place`]) before it is returned.
pub fn build_in_place(
    old: &Image,
    new: &Image,
    opts: &BuildOptions,
    scratch_size: u64,
    keys: &[&SigningKey],
) -> Result<Vec<u8>> {
    check_in_place(old, opts, scratch_size)?;
    let (asc, desc) = rayon::join(
        || encode_in_place(old, new, opts, false),
        || encode_in_place(old, new, opts, true),
    );
    let (asc, desc) = (asc?, desc?);
    // Both orders give manifests of the same length: the payloads decide.
    let payload = |e: &[Encoded]| e.iter().map(|x| x.payload.len()).sum::<usize>();
    let descending = payload(&desc) < payload(&asc);
    let encoded = if descending { desc } else { asc };
    package(
        new,
        Some(&old.data),
        Kind::DeltaInPlace,
        descending,
        encoded,
        opts,
        keys,
    )
}

/// [`build_in_place`] with the apply order given rather than chosen (for measurements).
pub fn build_in_place_ordered(
    old: &Image,
    new: &Image,
    opts: &BuildOptions,
    scratch_size: u64,
    descending: bool,
    keys: &[&SigningKey],
) -> Result<Vec<u8>> {
    check_in_place(old, opts, scratch_size)?;
    let encoded = encode_in_place(old, new, opts, descending)?;
    package(
        new,
        Some(&old.data),
        Kind::DeltaInPlace,
        descending,
        encoded,
        opts,
        keys,
    )
}

fn check_in_place(old: &Image, opts: &BuildOptions, scratch_size: u64) -> Result<()> {
    opts.check()?;
    if old.data.is_empty() {
        return Err(Error::Invalid("the old image is empty".into()));
    }
    let slice_size = 1u64 << opts.slice_log2;
    if slice_size > scratch_size {
        return Err(Error::Invalid(format!(
            "in-place slices of {slice_size} bytes do not fit the device's scratch area of \
             {scratch_size} bytes: use a slice size of at most the scratch size"
        )));
    }
    Ok(())
}

/// Every slice of an in-place delta applied in the given order, matched only against its
/// read window.
fn encode_in_place(
    old: &Image,
    new: &Image,
    opts: &BuildOptions,
    descending: bool,
) -> Result<Vec<Encoded>> {
    let slice_size = 1usize << opts.slice_log2;
    let base_len = old.data.len() as u64;
    let window = |k: usize| {
        let w = in_place_window(k as u32, slice_size as u64, base_len, descending);
        w.start as usize..w.end as usize
    };
    // Matching: one bidiff run per slice against its window sub-slice, rather than the
    // two-slot delta's single suffix sort with its matches clipped to the window (the parts
    // of an add outside the window turned into literals). Measured on the testdata pairs
    // (zstd 19, release build), in-place package bytes in the chosen order, windowed vs
    // clipped: 64 KiB slices 7862/7862, 23128/23131, 50373/50373; 16 KiB slices 9553/9553,
    // 24924/25038, 51964/52372; 4 KiB slices 15617/15617, 29260/29614, 56425/57137. In the
    // chosen order the windowed diff was never larger (it finds other matches inside the
    // window where the best global match lies outside it); in the other order it lost once,
    // by 3 bytes of 7988 (micro:bit, 64 KiB, ascending). It costs one suffix sort per slice,
    // which zstd level 19 dwarfs at 64 KiB slices (about 0.05-0.1 s per order either way) and
    // which at 4 KiB slices took 0.43 s against 0.12 s per order for the 231 KB micro:bit pair.
    let matches = crate::delta::slice_matches_windowed(&old.data, &new.data, slice_size, window)?;
    new.data
        .par_chunks(slice_size)
        .zip(matches.par_iter())
        .enumerate()
        .map(|(i, (s, m))| {
            encode_delta_slice(&old.data, &new.data, i, s, m, &window(i), None, None, opts)
        })
        .collect()
}

/// A payload holding `data`, cut into hash-chained segments of `segment` bytes when it is
/// longer than that (0: never), and the SHA-256 the slice record names: that of the first
/// segment. Every segment but the last is `segment` bytes: its data, then its link, the first
/// `link` bytes (32: all) of the next segment's SHA-256. A device can so check each segment
/// on its own before decoding it.
pub fn segment_payload(data: &[u8], segment: usize, link: usize) -> (Vec<u8>, [u8; 32]) {
    if data.is_empty() {
        return (Vec::new(), SHA256_EMPTY);
    }
    let link = link.min(32);
    if segment <= link || data.len() <= segment {
        return (data.to_vec(), Sha256::digest(data).into());
    }
    let per = segment - link;
    let mut pieces = Vec::new();
    let mut rest = data;
    while rest.len() > segment {
        let (piece, tail) = rest.split_at(per);
        pieces.push(piece);
        rest = tail;
    }
    // Built back to front: each segment carries the digest of the one after it.
    let mut segments = vec![rest.to_vec()];
    let mut next: [u8; 32] = Sha256::digest(rest).into();
    for piece in pieces.iter().rev() {
        let mut seg = piece.to_vec();
        seg.extend_from_slice(&next[..link]);
        next = Sha256::digest(&seg).into();
        segments.push(seg);
    }
    segments.reverse();
    (segments.concat(), next)
}

/// Hashes, lays out, signs and assembles encoded slices.
fn package(
    image: &Image,
    base: Option<&[u8]>,
    kind: Kind,
    apply_descending: bool,
    encoded: Vec<Encoded>,
    opts: &BuildOptions,
    keys: &[&SigningKey],
) -> Result<Vec<u8>> {
    let window_log = opts.zstd_window_log.min(opts.slice_log2);

    let (segment, link) = (opts.segment_bytes() as usize, opts.link_bytes() as usize);
    let mut slices = Vec::with_capacity(encoded.len());
    let mut payloads = Vec::new();
    for (i, e) in encoded.iter().enumerate() {
        let (payload, payload_sha256) = segment_payload(&e.payload, segment, link);
        slices.push(SliceRepr {
            index: i as u32,
            method: e.method,
            payload_offset: u32::try_from(payloads.len())
                .map_err(|_| Error::Invalid("package would exceed 4 GiB".into()))?,
            payload_len: u32::try_from(payload.len())
                .map_err(|_| Error::Invalid("payload would exceed 4 GiB".into()))?,
            arg: e.arg,
            payload_sha256,
            slice_sha256: e.slice_sha256,
        });
        payloads.extend_from_slice(&payload);
    }
    let any_zstd = slices
        .iter()
        .any(|s| matches!(s.method, Method::Zstd | Method::Patch | Method::ZstdRef));
    let mut manifest = ManifestRepr {
        kind,
        erase_value: opts.erase_value,
        slice_log2: opts.slice_log2,
        zstd_window_log: if any_zstd { window_log } else { 0 },
        zstd_block_log: if any_zstd { opts.block_log() } else { 0 },
        segment_log: opts.segment_log,
        segment_link_len: opts.link_code(),
        device_ram: 0,
        security_counter: opts.security_counter,
        created: opts.created,
        expires: opts.expires,
        load_address: image.load_address,
        image_size: image.data.len() as u64,
        image_sha256: Sha256::digest(&image.data).into(),
        base_size: base.map_or(0, |b| b.len() as u64),
        base_sha256: base.map_or([0; 32], |b| Sha256::digest(b).into()),
        apply_descending,
        software_version: opts.software_version.clone(),
        software_type: opts.software_type.clone(),
        hardware_versions: opts.hardware_versions.clone(),
        slices,
    };
    // Record what otapack-core's applier needs for this package (a function of the manifest).
    let draft = manifest.emit()?;
    let need = ram::needed(&Manifest::new_checked(
        &draft,
        otapack_core::wire::header::FORMAT_VERSION,
        manifest.slices.iter().map(|s| s.payload_len).sum(),
    )?);
    manifest.device_ram = u32::try_from(need.total()).unwrap_or(u32::MAX);
    if let Some(budget) = opts.device_ram {
        if need.total() > budget {
            return Err(Error::Invalid(format!(
                "the package needs {} bytes of device RAM (manifest {}, payload segment {}, \
                 write buffer {}, zstd decoder {}, stack reserve {}), more than --device-ram {budget}",
                need.total(),
                need.manifest_buffer,
                need.payload_buffer,
                need.write_buffer,
                need.decoder_heap,
                need.stack_reserve
            )));
        }
    }
    let manifest = manifest.emit()?;
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
    self_check(&out, base, &image.data)?;
    Ok(out)
}

/// Verifies a freshly built package through the same code a device runs, so the builder never
/// emits a package a device would refuse (or rebuild wrongly). An in-place delta is also
/// applied over a copy of the base through the in-place model, which must give `image`.
fn self_check(package: &[u8], base: Option<&[u8]>, image: &[u8]) -> Result<()> {
    let internal = |e: &dyn std::fmt::Display| {
        Error::Invalid(format!(
            "internal error: the built package does not verify: {e}"
        ))
    };
    let pkg = otapack_core::Package::parse(package)?;
    crate::report::verify_contents(&pkg, base).map_err(|e| internal(&e))?;
    if let (Kind::DeltaInPlace, Some(base)) = (pkg.manifest().kind(), base) {
        let mut slot = base.to_vec();
        let lax = Policy {
            required_signatures: 0,
            allow_unsigned: true,
        };
        crate::in_place::apply_in_place(package, &mut slot, &[], &lax).map_err(|e| internal(&e))?;
        if slot != image {
            return Err(internal(&"the in-place model rebuilds another image"));
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_streams_take_level_22_from_the_default_level_up() {
        assert_eq!(patch_level(DEFAULT_ZSTD_LEVEL), 22);
        assert_eq!(patch_level(20), 22);
        assert_eq!(patch_level(18), 18);
        assert_eq!(patch_level(3), 3);
    }
}
