//! The manifest: everything a device must know before it writes a byte.
//!
//! A fixed 136-byte part, then `tlv_len` bytes of identity fields ([`super::tlv`]), then
//! `slice_count` slice records of 96 bytes ([`super::slice`]), nothing else.
//!
//! | offset | size | field            | rule                                               |
//! |--------|------|------------------|----------------------------------------------------|
//! | 0      | 2    | format_version   | 1, equal to the header's                           |
//! | 2      | 1    | kind             | 0 full, 1 delta, 2 delta-in-place                  |
//! | 3      | 1    | erase_value      | the flash's erased byte (usually 0xFF)             |
//! | 4      | 1    | slice_log2       | 12..=20 (slice size 4 KiB .. 1 MiB)                |
//! | 5      | 1    | zstd_window_log  | 0 = no zstd payloads; else 10..=slice_log2         |
//! | 6      | 2    | flags            | bit 0 APPLY_DESCENDING (kind 2 only); others 0     |
//! | 8      | 4    | slice_count      | ceil(image_size / slice size)                      |
//! | 12     | 4    | tlv_len          | 0..=4096                                           |
//! | 16     | 8    | security_counter | anti-rollback counter                              |
//! | 24     | 8    | created          | Unix seconds                                       |
//! | 32     | 8    | expires          | Unix seconds, 0 = never; else later than `created` |
//! | 40     | 8    | load_address     | where the image lives; + image_size fits in u64    |
//! | 48     | 8    | image_size       | 1..=2^32-1 bytes                                   |
//! | 56     | 32   | image_sha256     | SHA-256 of the whole target image                  |
//! | 88     | 8    | base_size        | delta kinds: size of the base image; full: 0       |
//! | 96     | 32   | base_sha256      | delta kinds: SHA-256 of the base image; full: 0    |
//! | 128    | 1    | zstd_block_log   | 0 = RFC 8878's limit; else 10..=17, ≤ zstd_window_log: every zstd block decodes to at most 2^n bytes |
//! | 129    | 1    | segment_log      | 0 = one digest per payload; else 10..=slice_log2: longer payloads are hash-chained segments of 2^n bytes |
//! | 130    | 1    | segment_link_len | 0 = 32-byte links (SHA-256); 16 = 16-byte links (its first 16 bytes); 16 needs segment_log ≠ 0 |
//! | 131    | 1    | reserved         | 0                                                  |
//! | 132    | 4    | device_ram       | RAM (bytes) the builder computed for otapack-core's applier; 0 = not stated; informational |

use super::slice::{Method, SliceRecord, RECORD_LEN};
use super::tlv::{self, TlvIter};
use super::{all_zero, digest_at, le_u16, le_u32, le_u64};
use crate::error::{Error, Result};
use core::ops::Range;

pub const FIXED_LEN: usize = 136;
pub const MIN_SLICE_LOG2: u8 = 12;
pub const MAX_SLICE_LOG2: u8 = 20;
pub const MIN_WINDOW_LOG: u8 = 10;
/// The smallest and largest `zstd_block_log` (1 KiB, and RFC 8878's 128 KiB block limit).
pub const MIN_BLOCK_LOG: u8 = 10;
pub const MAX_BLOCK_LOG: u8 = 17;
/// The smallest `segment_log` (1 KiB segments).
pub const MIN_SEGMENT_LOG: u8 = 10;
/// Bytes of the link (the next segment's SHA-256) that ends every segment but the last, when
/// the manifest's `segment_link_len` byte is 0.
pub const SEGMENT_LINK_LEN: u64 = 32;
/// Bytes of a short link: the first 16 bytes of the next segment's SHA-256 (`segment_link_len`
/// = 16). Forging a segment still takes a second preimage of 128 bits.
pub const SHORT_LINK_LEN: u64 = 16;
pub const MAX_IMAGE_SIZE: u64 = u32::MAX as u64;

/// Manifest `flags` bit 0: an in-place delta (kind 2) is applied from the last slice to the
/// first instead of from the first to the last. Not allowed in any other kind.
pub const FLAG_APPLY_DESCENDING: u16 = 1;

/// SHA-256 of the empty string: the payload digest of a `fill` slice.
pub const SHA256_EMPTY: [u8; 32] = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

pub mod field {
    use core::ops::Range;
    pub const FORMAT_VERSION: usize = 0;
    pub const KIND: usize = 2;
    pub const ERASE_VALUE: usize = 3;
    pub const SLICE_LOG2: usize = 4;
    pub const ZSTD_WINDOW_LOG: usize = 5;
    pub const FLAGS: Range<usize> = 6..8;
    pub const SLICE_COUNT: usize = 8;
    pub const TLV_LEN: usize = 12;
    pub const SECURITY_COUNTER: usize = 16;
    pub const CREATED: usize = 24;
    pub const EXPIRES: usize = 32;
    pub const LOAD_ADDRESS: usize = 40;
    pub const IMAGE_SIZE: usize = 48;
    pub const IMAGE_SHA256: usize = 56;
    pub const BASE_SIZE: usize = 88;
    pub const BASE_SHA256: usize = 96;
    pub const ZSTD_BLOCK_LOG: usize = 128;
    pub const SEGMENT_LOG: usize = 129;
    pub const SEGMENT_LINK_LEN: usize = 130;
    pub const RESERVED: Range<usize> = 131..132;
    pub const DEVICE_RAM: usize = 132;
}

/// The bytes of data (decoder input) in a payload of `payload_len` bytes cut into segments of
/// `segment` bytes (0: not segmented) with links of `link` bytes. A payload longer than
/// `segment` is a chain: every segment but the last is exactly `segment` bytes, its data then
/// the link (the SHA-256 of the next segment, or its first `link` bytes); the last holds the
/// remaining bytes (at most `segment`), all data.
pub fn segmented_data_len(payload_len: u64, segment: u64, link: u64) -> u64 {
    if segment == 0 || payload_len <= segment {
        return payload_len;
    }
    let links = payload_len.div_ceil(segment) - 1;
    payload_len.saturating_sub(links.saturating_mul(link))
}

/// The payload length that carries `data_len` bytes of data in segments of `segment` bytes
/// (0: not segmented) with links of `link` bytes; the inverse of [`segmented_data_len`].
pub fn segmented_payload_len(data_len: u64, segment: u64, link: u64) -> u64 {
    if segment <= link || data_len <= segment {
        return data_len;
    }
    // Every linked segment carries `segment - link` data bytes; the last carries the rest.
    let per = segment - link;
    let links = (data_len - segment).div_ceil(per);
    data_len.saturating_add(links.saturating_mul(link))
}

/// What the package rebuilds the image from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Every slice from the package alone.
    Full = 0,
    /// Slices from the package and a base image kept intact (two slots).
    Delta = 1,
    /// Slices from the package and a base image overwritten as the update goes (one slot).
    DeltaInPlace = 2,
}

impl Kind {
    pub fn from_u8(v: u8) -> Result<Self> {
        match v {
            0 => Ok(Kind::Full),
            1 => Ok(Kind::Delta),
            2 => Ok(Kind::DeltaInPlace),
            other => Err(Error::UnsupportedKind(other)),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Kind::Full => "full",
            Kind::Delta => "delta",
            Kind::DeltaInPlace => "delta-in-place",
        }
    }
}

/// The read window of slice `index` of an in-place delta (kind 2) with slices of `slice_size`
/// bytes over a base of `base_size` bytes: `[min(index·S, B), B)` when applied in ascending
/// order, `[0, min((index+1)·S, B))` when `descending`. [`Manifest::read_window`] uses it; a
/// builder can use it before there is a manifest.
pub fn in_place_window(
    index: u32,
    slice_size: u64,
    base_size: u64,
    descending: bool,
) -> Range<u64> {
    let index = u64::from(index);
    if descending {
        0..index
            .saturating_add(1)
            .saturating_mul(slice_size)
            .min(base_size)
    } else {
        index.saturating_mul(slice_size).min(base_size)..base_size
    }
}

/// Slice indices in apply order ([`Manifest::apply_order`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyOrder {
    left: Range<u32>,
    descending: bool,
}

impl Iterator for ApplyOrder {
    type Item = u32;
    fn next(&mut self) -> Option<u32> {
        if self.descending {
            self.left.next_back()
        } else {
            self.left.next()
        }
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.left.size_hint()
    }
}

impl ExactSizeIterator for ApplyOrder {}
impl core::iter::FusedIterator for ApplyOrder {}

/// A checked view of the manifest bytes (exactly `header.manifest_len` of them).
#[derive(Debug, Clone, Copy)]
pub struct Manifest<'a> {
    buf: &'a [u8],
}

impl<'a> Manifest<'a> {
    /// Validates every field and record. `payload_len` is the header's: records must tile the
    /// payload area exactly, in order, with no gap and no overlap.
    pub fn new_checked(buf: &'a [u8], header_version: u16, payload_len: u32) -> Result<Self> {
        if buf.len() < FIXED_LEN {
            return Err(Error::Truncated { what: "manifest" });
        }
        let m = Manifest { buf };
        let version = le_u16(buf, field::FORMAT_VERSION);
        if version != header_version {
            return Err(Error::Malformed {
                what: "manifest format_version differs from the header's",
            });
        }
        if version != super::header::FORMAT_VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        let kind = Kind::from_u8(m.kind_code())?;
        let log2 = m.slice_log2();
        if !(MIN_SLICE_LOG2..=MAX_SLICE_LOG2).contains(&log2) {
            return Err(Error::Malformed {
                what: "slice_log2 outside 12..=20",
            });
        }
        let wlog = m.zstd_window_log();
        if wlog != 0 && !(MIN_WINDOW_LOG..=log2).contains(&wlog) {
            return Err(Error::Malformed {
                what: "zstd_window_log outside 10..=slice_log2",
            });
        }
        let blog = m.zstd_block_log();
        if blog != 0 && (wlog == 0 || !(MIN_BLOCK_LOG..=MAX_BLOCK_LOG.min(wlog)).contains(&blog)) {
            return Err(Error::Malformed {
                what: "zstd_block_log outside 10..=min(17, zstd_window_log)",
            });
        }
        let slog = m.segment_log();
        if slog != 0 && !(MIN_SEGMENT_LOG..=log2).contains(&slog) {
            return Err(Error::Malformed {
                what: "segment_log outside 10..=slice_log2",
            });
        }
        match m.segment_link_code() {
            0 => {}
            16 if slog != 0 => {}
            _ => {
                return Err(Error::Malformed {
                    what: "segment_link_len is neither 0 nor 16 with segments",
                })
            }
        }
        let flags = m.flags();
        if flags & !FLAG_APPLY_DESCENDING != 0 || !all_zero(buf, field::RESERVED) {
            return Err(Error::Malformed {
                what: "reserved manifest bytes are not zero",
            });
        }
        if flags & FLAG_APPLY_DESCENDING != 0 && kind != Kind::DeltaInPlace {
            return Err(Error::Malformed {
                what: "APPLY_DESCENDING flag outside an in-place delta package",
            });
        }
        let size = m.image_size();
        if size == 0 || size > MAX_IMAGE_SIZE {
            return Err(Error::Malformed {
                what: "image_size must be 1..=4294967295",
            });
        }
        if m.load_address().checked_add(size).is_none() {
            return Err(Error::Malformed {
                what: "load_address + image_size overflows",
            });
        }
        if m.expires().is_some_and(|e| e <= m.created()) {
            return Err(Error::Malformed {
                what: "expires is not later than created",
            });
        }
        let expected_count = size.div_ceil(1u64 << log2);
        if u64::from(m.slice_count()) != expected_count {
            return Err(Error::LengthMismatch {
                what: "slice_count",
                expected: expected_count,
                actual: m.slice_count().into(),
            });
        }
        let tlv_len = u64::from(m.tlv_len());
        if tlv_len > tlv::MAX_TLV_AREA as u64 {
            return Err(Error::Malformed {
                what: "tlv_len larger than 4096",
            });
        }
        let expected_len = FIXED_LEN as u64 + tlv_len + expected_count * RECORD_LEN as u64;
        if buf.len() as u64 != expected_len {
            return Err(Error::LengthMismatch {
                what: "manifest_len",
                expected: expected_len,
                actual: buf.len() as u64,
            });
        }
        tlv::check_area(m.tlv_area())?;
        if kind == Kind::Full && (m.base_size() != 0 || m.base_sha256() != [0; 32]) {
            return Err(Error::Malformed {
                what: "full package with a base image",
            });
        }
        if kind != Kind::Full && (m.base_size() == 0 || m.base_size() > MAX_IMAGE_SIZE) {
            return Err(Error::Malformed {
                what: "delta package base_size must be 1..=4294967295",
            });
        }
        m.check_records(payload_len)?;
        Ok(m)
    }

    fn check_records(&self, payload_len: u32) -> Result<()> {
        let mut next_offset: u64 = 0;
        for i in 0..self.slice_count() {
            let at = FIXED_LEN + self.tlv_len() as usize + i as usize * RECORD_LEN;
            let rec = SliceRecord::new_checked(self.buf.get(at..).unwrap_or(&[]))?;
            if rec.index() != i {
                return Err(Error::Malformed {
                    what: "slice records out of order",
                });
            }
            if u64::from(rec.payload_offset()) != next_offset {
                return Err(Error::Malformed {
                    what: "slice payloads overlap, leave gaps or are out of order",
                });
            }
            let len = rec.payload_len();
            let data = self.data_len(&rec);
            let single = data == u64::from(len);
            let slice_len = self.slice_len(i);
            let not_allowed = Error::MethodNotAllowed {
                slice: i,
                method: rec.method() as u8,
            };
            let ok = match rec.method() {
                Method::Fill => {
                    len == 0 && rec.arg() <= 0xFF && rec.payload_sha256() == SHA256_EMPTY
                }
                Method::Raw => {
                    data == u64::from(slice_len)
                        && rec.arg() == 0
                        && (!single || rec.payload_sha256() == rec.slice_sha256())
                }
                Method::Zstd => {
                    if self.zstd_window_log() == 0 {
                        return Err(not_allowed);
                    }
                    data > 0 && data < u64::from(slice_len) && rec.arg() == 0
                }
                Method::Copy | Method::Patch | Method::ZstdRef if self.kind() == Kind::Full => {
                    return Err(not_allowed)
                }
                Method::Copy => {
                    len == 0
                        && rec.payload_sha256() == SHA256_EMPTY
                        && rec
                            .arg()
                            .checked_add(slice_len.into())
                            .is_some_and(|e| e <= self.base_size())
                }
                Method::Patch => {
                    if self.zstd_window_log() == 0 {
                        return Err(not_allowed);
                    }
                    // Format 2 reads base bytes around each add run, so only where the
                    // whole base is readable (kind 1).
                    data > 0
                        && data < u64::from(slice_len)
                        && (rec.arg() == crate::patch::PATCH_FORMAT_1
                            || (rec.arg() == crate::patch::PATCH_FORMAT_2
                                && self.kind() == Kind::Delta))
                }
                Method::ZstdRef => {
                    if self.zstd_window_log() == 0 {
                        return Err(not_allowed);
                    }
                    let (start, region) = crate::wire::slice::ref_region(rec.arg());
                    data > 0
                        && data < u64::from(slice_len)
                        && region > 0
                        && start + region <= self.base_size()
                }
            };
            if !ok {
                return Err(Error::Malformed {
                    what: "slice record fields break its method's rules",
                });
            }
            if self.kind() == Kind::DeltaInPlace {
                // In place, a copy or a prefix may only read base bytes still intact when the
                // slice is decoded.
                let reads = match rec.method() {
                    Method::Copy => Some((rec.arg(), u64::from(slice_len))),
                    Method::ZstdRef => Some(crate::wire::slice::ref_region(rec.arg())),
                    _ => None,
                };
                if let Some((start, n)) = reads {
                    let window = self.read_window(i);
                    if start < window.start || start.saturating_add(n) > window.end {
                        return Err(Error::ReadOutsideWindow { slice: i });
                    }
                }
            }
            next_offset += u64::from(len);
            if next_offset > u64::from(payload_len) {
                return Err(Error::Malformed {
                    what: "slice payload beyond the payload area",
                });
            }
        }
        if next_offset != u64::from(payload_len) {
            return Err(Error::LengthMismatch {
                what: "payload_len",
                expected: next_offset,
                actual: payload_len.into(),
            });
        }
        Ok(())
    }

    /// Wraps bytes already checked by `new_checked` (accessors never panic either way).
    pub(crate) fn new_unchecked(buf: &'a [u8]) -> Self {
        Manifest { buf }
    }
    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    /// Record `i` (checked at construction), in O(1).
    pub fn slice(&self, i: u32) -> Option<SliceRecord<'a>> {
        if i >= self.slice_count() {
            return None;
        }
        let at = FIXED_LEN + self.tlv_len() as usize + i as usize * RECORD_LEN;
        self.buf
            .get(at..at + RECORD_LEN)
            .map(SliceRecord::new_unchecked)
    }
    fn kind_code(&self) -> u8 {
        self.buf.get(field::KIND).copied().unwrap_or(0xFF)
    }
    pub fn kind(&self) -> Kind {
        Kind::from_u8(self.kind_code()).unwrap_or(Kind::Full)
    }
    pub fn erase_value(&self) -> u8 {
        self.buf.get(field::ERASE_VALUE).copied().unwrap_or(0xFF)
    }
    pub fn slice_log2(&self) -> u8 {
        self.buf.get(field::SLICE_LOG2).copied().unwrap_or(0)
    }
    /// Slice size in bytes (all slices but the last have this size).
    pub fn slice_size(&self) -> u32 {
        1u32 << self.slice_log2().min(31)
    }
    /// 0 when no payload is zstd; else the log2 of the largest window a frame may use.
    pub fn zstd_window_log(&self) -> u8 {
        self.buf.get(field::ZSTD_WINDOW_LOG).copied().unwrap_or(0)
    }
    /// The raw `flags` field (checked at construction: at most [`FLAG_APPLY_DESCENDING`]).
    /// 0, or the log2 of the most bytes any zstd block of this package decodes to (§6.3).
    pub fn zstd_block_log(&self) -> u8 {
        self.buf.get(field::ZSTD_BLOCK_LOG).copied().unwrap_or(0)
    }
    /// 0, or the log2 of the payload segment size (§5.5).
    pub fn segment_log(&self) -> u8 {
        self.buf.get(field::SEGMENT_LOG).copied().unwrap_or(0)
    }
    /// The payload segment size in bytes, 0 when payloads are not segmented.
    pub fn segment_size(&self) -> u64 {
        match self.segment_log() {
            0 => 0,
            n => 1u64 << n.min(63),
        }
    }
    /// The `segment_link_len` byte as stored: 0 (32-byte links) or 16 (§5.5).
    pub fn segment_link_code(&self) -> u8 {
        self.buf.get(field::SEGMENT_LINK_LEN).copied().unwrap_or(0)
    }
    /// Bytes of each segment link: [`SEGMENT_LINK_LEN`] (32), or [`SHORT_LINK_LEN`] (16).
    pub fn segment_link_len(&self) -> u64 {
        match self.segment_link_code() {
            0 => SEGMENT_LINK_LEN,
            _ => SHORT_LINK_LEN,
        }
    }
    /// Bytes of decoder input (a zstd frame, or a raw slice) in slice `rec`'s payload: its
    /// length less the segment links.
    pub fn data_len(&self, rec: &SliceRecord<'_>) -> u64 {
        segmented_data_len(
            rec.payload_len().into(),
            self.segment_size(),
            self.segment_link_len(),
        )
    }
    /// The RAM the builder computed for otapack-core's applier, in bytes (0: not stated).
    /// Informational: a reader does not check it.
    pub fn device_ram(&self) -> u32 {
        le_u32(self.buf, field::DEVICE_RAM)
    }
    pub fn flags(&self) -> u16 {
        le_u16(self.buf, field::FLAGS.start)
    }
    /// Whether an in-place delta is applied from the last slice to the first
    /// ([`FLAG_APPLY_DESCENDING`]); always `false` for other kinds.
    pub fn apply_descending(&self) -> bool {
        self.flags() & FLAG_APPLY_DESCENDING != 0
    }
    /// The slice indices in the order a device applies them: ascending (0, 1, ...) unless
    /// [`Manifest::apply_descending`]. Payloads stay in index order in the file whatever the
    /// order.
    pub fn apply_order(&self) -> ApplyOrder {
        ApplyOrder {
            left: 0..self.slice_count(),
            descending: self.apply_descending(),
        }
    }
    /// The base-image bytes slice `index` may read (a copy range, every byte a patch adds to).
    ///
    /// In an in-place delta (kind 2), with `S` the slice size and `B` the base size, it is
    /// `[min(index·S, B), B)` when slices are applied in ascending order and
    /// `[0, min((index+1)·S, B))` when descending: exactly the base bytes still intact in the
    /// slot when slice `index` is decoded (slices applied earlier have overwritten their own
    /// regions; the slice's own old region is overwritten only after it is decoded). In a
    /// two-slot delta the whole base `[0, B)`; in a full package empty.
    pub fn read_window(&self, index: u32) -> Range<u64> {
        let base = self.base_size();
        let size = u64::from(self.slice_size());
        match self.kind() {
            Kind::Full => 0..0,
            Kind::Delta => 0..base,
            Kind::DeltaInPlace => in_place_window(index, size, base, self.apply_descending()),
        }
    }
    pub fn slice_count(&self) -> u32 {
        le_u32(self.buf, field::SLICE_COUNT)
    }
    pub fn tlv_len(&self) -> u32 {
        le_u32(self.buf, field::TLV_LEN)
    }
    pub fn security_counter(&self) -> u64 {
        le_u64(self.buf, field::SECURITY_COUNTER)
    }
    pub fn created(&self) -> u64 {
        le_u64(self.buf, field::CREATED)
    }
    /// `None` when the package never expires.
    pub fn expires(&self) -> Option<u64> {
        Some(le_u64(self.buf, field::EXPIRES)).filter(|&e| e != 0)
    }
    pub fn load_address(&self) -> u64 {
        le_u64(self.buf, field::LOAD_ADDRESS)
    }
    pub fn image_size(&self) -> u64 {
        le_u64(self.buf, field::IMAGE_SIZE)
    }
    pub fn image_sha256(&self) -> [u8; 32] {
        digest_at(self.buf, field::IMAGE_SHA256)
    }
    pub fn base_size(&self) -> u64 {
        le_u64(self.buf, field::BASE_SIZE)
    }
    pub fn base_sha256(&self) -> [u8; 32] {
        digest_at(self.buf, field::BASE_SHA256)
    }
    /// Length of slice `i`: the slice size, except for a shorter last slice.
    pub fn slice_len(&self, i: u32) -> u32 {
        let start = u64::from(i) << self.slice_log2();
        let len = self
            .image_size()
            .saturating_sub(start)
            .min(u64::from(self.slice_size()));
        len as u32
    }
    fn tlv_area(&self) -> &'a [u8] {
        self.buf
            .get(FIXED_LEN..FIXED_LEN + self.tlv_len() as usize)
            .unwrap_or(&[])
    }
    /// The identity fields, in package order (checked at construction).
    pub fn fields(&self) -> impl Iterator<Item = tlv::Tlv<'a>> + 'a {
        TlvIter::new(self.tlv_area()).filter_map(|t| t.ok())
    }
    fn text(&self, kind: u16) -> impl Iterator<Item = &'a str> + 'a {
        self.fields()
            .filter(move |t| t.kind == kind)
            .filter_map(|t| core::str::from_utf8(t.value).ok())
    }
    pub fn software_version(&self) -> &'a str {
        self.text(tlv::SOFTWARE_VERSION).next().unwrap_or("")
    }
    pub fn software_type(&self) -> Option<&'a str> {
        self.text(tlv::SOFTWARE_TYPE).next()
    }
    pub fn hardware_versions(&self) -> impl Iterator<Item = &'a str> + 'a {
        self.text(tlv::HARDWARE_VERSION)
    }
    /// The slice records, in order (checked at construction).
    pub fn slices(&self) -> impl ExactSizeIterator<Item = SliceRecord<'a>> + 'a {
        let start = FIXED_LEN + self.tlv_len() as usize;
        let table = self.buf.get(start..).unwrap_or(&[]);
        let n = self.slice_count() as usize;
        (0..n).map(move |i| {
            SliceRecord::new_unchecked(
                table
                    .get(i * RECORD_LEN..(i + 1) * RECORD_LEN)
                    .unwrap_or(&[]),
            )
        })
    }
}

#[cfg(feature = "alloc")]
pub use repr::*;

#[cfg(feature = "alloc")]
mod repr {
    use super::*;
    use crate::wire::put;
    use crate::wire::slice::SliceRepr;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;

    /// An owned manifest: what the builder fills in and emits.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ManifestRepr {
        pub kind: Kind,
        pub erase_value: u8,
        pub slice_log2: u8,
        pub zstd_window_log: u8,
        /// 0, or every zstd block decodes to at most 2^n bytes ([`Manifest::zstd_block_log`]).
        pub zstd_block_log: u8,
        /// 0, or payloads longer than 2^n bytes are hash-chained segments.
        pub segment_log: u8,
        /// The `segment_link_len` byte: 0 (32-byte links) or 16 (16-byte links).
        pub segment_link_len: u8,
        /// The RAM the applier needs, as the builder computed it (0: not stated).
        pub device_ram: u32,
        pub security_counter: u64,
        pub created: u64,
        pub expires: Option<u64>,
        pub load_address: u64,
        pub image_size: u64,
        pub image_sha256: [u8; 32],
        pub base_size: u64,
        pub base_sha256: [u8; 32],
        /// Kind 2 only: apply the slices from the last to the first ([`FLAG_APPLY_DESCENDING`]).
        pub apply_descending: bool,
        pub software_version: String,
        pub software_type: Option<String>,
        pub hardware_versions: Vec<String>,
        pub slices: Vec<SliceRepr>,
    }

    impl ManifestRepr {
        pub fn parse(m: &Manifest<'_>) -> Self {
            ManifestRepr {
                kind: m.kind(),
                erase_value: m.erase_value(),
                slice_log2: m.slice_log2(),
                zstd_window_log: m.zstd_window_log(),
                zstd_block_log: m.zstd_block_log(),
                segment_log: m.segment_log(),
                segment_link_len: m.segment_link_code(),
                device_ram: m.device_ram(),
                security_counter: m.security_counter(),
                created: m.created(),
                expires: m.expires(),
                load_address: m.load_address(),
                image_size: m.image_size(),
                image_sha256: m.image_sha256(),
                base_size: m.base_size(),
                base_sha256: m.base_sha256(),
                apply_descending: m.apply_descending(),
                software_version: m.software_version().to_string(),
                software_type: m.software_type().map(|s| s.to_string()),
                hardware_versions: m.hardware_versions().map(|s| s.to_string()).collect(),
                slices: m.slices().map(|r| SliceRepr::parse(&r)).collect(),
            }
        }

        /// The manifest bytes. The result is checked by the same rules as a parsed manifest
        /// before it is returned, so a builder cannot emit what a device would refuse.
        pub fn emit(&self) -> Result<Vec<u8>> {
            let mut tlvs = Vec::new();
            tlv::emit(
                &mut tlvs,
                tlv::SOFTWARE_VERSION,
                self.software_version.as_bytes(),
            );
            if let Some(t) = &self.software_type {
                tlv::emit(&mut tlvs, tlv::SOFTWARE_TYPE, t.as_bytes());
            }
            for h in &self.hardware_versions {
                tlv::emit(&mut tlvs, tlv::HARDWARE_VERSION, h.as_bytes());
            }
            let mut b = alloc::vec![0u8; FIXED_LEN];
            put(
                &mut b,
                field::FORMAT_VERSION,
                &super::super::header::FORMAT_VERSION.to_le_bytes(),
            );
            put(&mut b, field::KIND, &[self.kind as u8]);
            put(&mut b, field::ERASE_VALUE, &[self.erase_value]);
            put(&mut b, field::SLICE_LOG2, &[self.slice_log2]);
            put(&mut b, field::ZSTD_WINDOW_LOG, &[self.zstd_window_log]);
            let flags = if self.apply_descending {
                FLAG_APPLY_DESCENDING
            } else {
                0
            };
            put(&mut b, field::FLAGS.start, &flags.to_le_bytes());
            put(
                &mut b,
                field::SLICE_COUNT,
                &(self.slices.len() as u32).to_le_bytes(),
            );
            put(&mut b, field::TLV_LEN, &(tlvs.len() as u32).to_le_bytes());
            put(
                &mut b,
                field::SECURITY_COUNTER,
                &self.security_counter.to_le_bytes(),
            );
            put(&mut b, field::CREATED, &self.created.to_le_bytes());
            put(
                &mut b,
                field::EXPIRES,
                &self.expires.unwrap_or(0).to_le_bytes(),
            );
            put(
                &mut b,
                field::LOAD_ADDRESS,
                &self.load_address.to_le_bytes(),
            );
            put(&mut b, field::IMAGE_SIZE, &self.image_size.to_le_bytes());
            put(&mut b, field::IMAGE_SHA256, &self.image_sha256);
            put(&mut b, field::BASE_SIZE, &self.base_size.to_le_bytes());
            put(&mut b, field::BASE_SHA256, &self.base_sha256);
            put(&mut b, field::ZSTD_BLOCK_LOG, &[self.zstd_block_log]);
            put(&mut b, field::SEGMENT_LOG, &[self.segment_log]);
            put(&mut b, field::SEGMENT_LINK_LEN, &[self.segment_link_len]);
            put(&mut b, field::DEVICE_RAM, &self.device_ram.to_le_bytes());
            b.extend_from_slice(&tlvs);
            for s in &self.slices {
                b.extend_from_slice(&s.emit());
            }
            let payload_len: u64 = self.slices.iter().map(|s| u64::from(s.payload_len)).sum();
            let payload_len = u32::try_from(payload_len).map_err(|_| Error::Malformed {
                what: "payloads exceed 4 GiB",
            })?;
            Manifest::new_checked(&b, super::super::header::FORMAT_VERSION, payload_len)?;
            Ok(b)
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A manifest with 4 KiB slices and payload-less records (`(method, arg)`: fill or copy),
    /// software version "1".
    fn manifest(kind: u8, flags: u16, image: u64, base: u64, recs: &[(Method, u64)]) -> Vec<u8> {
        let mut b = std::vec![0u8; FIXED_LEN];
        b[field::FORMAT_VERSION..][..2].copy_from_slice(&1u16.to_le_bytes());
        b[field::KIND] = kind;
        b[field::SLICE_LOG2] = 12;
        b[field::FLAGS].copy_from_slice(&flags.to_le_bytes());
        b[field::SLICE_COUNT..][..4].copy_from_slice(&(recs.len() as u32).to_le_bytes());
        b[field::TLV_LEN..][..4].copy_from_slice(&5u32.to_le_bytes());
        b[field::IMAGE_SIZE..][..8].copy_from_slice(&image.to_le_bytes());
        b[field::BASE_SIZE..][..8].copy_from_slice(&base.to_le_bytes());
        b.extend_from_slice(&[1, 0, 1, 0, b'1']);
        for (i, &(method, arg)) in recs.iter().enumerate() {
            let mut r = [0u8; RECORD_LEN];
            r[..4].copy_from_slice(&(i as u32).to_le_bytes());
            r[4] = method as u8;
            r[16..24].copy_from_slice(&arg.to_le_bytes());
            r[32..64].copy_from_slice(&SHA256_EMPTY);
            b.extend_from_slice(&r);
        }
        b
    }

    fn parse(b: &[u8]) -> Result<Manifest<'_>> {
        Manifest::new_checked(b, 1, 0)
    }

    const S: u64 = 4096;

    #[test]
    fn segment_link_len_is_0_or_16_with_segments() {
        let fills = [(Method::Fill, 0); 2];
        for (segment_log, link, ok, len) in [
            (0, 0, true, SEGMENT_LINK_LEN),
            (0, 16, false, 0),
            (10, 0, true, SEGMENT_LINK_LEN),
            (10, 16, true, SHORT_LINK_LEN),
            (10, 32, false, 0),
            (10, 8, false, 0),
            (10, 0x90, false, 0),
        ] {
            let mut b = manifest(0, 0, 2 * S, 0, &fills);
            b[field::SEGMENT_LOG] = segment_log;
            b[field::SEGMENT_LINK_LEN] = link;
            match parse(&b) {
                Ok(m) => {
                    assert!(ok, "{segment_log} {link}");
                    assert_eq!(m.segment_link_len(), len);
                }
                Err(e) => {
                    assert!(!ok, "{segment_log} {link}");
                    assert!(matches!(e, Error::Malformed { .. }), "{e:?}");
                }
            }
        }
        // Byte 131 stays reserved.
        let mut b = manifest(0, 0, 2 * S, 0, &fills);
        b[131] = 1;
        assert!(matches!(parse(&b), Err(Error::Malformed { .. })));
    }

    #[test]
    fn short_links_change_the_data_length() {
        // 4 KiB of data in 1 KiB segments: 16-byte links fit 1008 data bytes per linked
        // segment (4 links, last segment 64 bytes), 32-byte links 992 (4 links, last 128).
        assert_eq!(segmented_payload_len(4096, 1024, 16), 4096 + 4 * 16);
        assert_eq!(segmented_payload_len(4096, 1024, 32), 4096 + 4 * 32);
        assert_eq!(segmented_data_len(4096 + 4 * 16, 1024, 16), 4096);
        // 3000 bytes: 1008 + 1008 + 984 with short links.
        assert_eq!(segmented_payload_len(3000, 1024, 16), 3032);
        assert_eq!(segmented_payload_len(1024, 1024, 16), 1024);
        assert_eq!(segmented_payload_len(1025, 1024, 16), 1041);
    }

    #[test]
    fn in_place_kind_is_accepted_and_the_flag_is_kind_2_only() {
        let fills = [(Method::Fill, 0); 3];
        for flags in [0, FLAG_APPLY_DESCENDING] {
            let b = manifest(2, flags, 3 * S, 2 * S, &fills);
            let m = parse(&b).unwrap();
            assert_eq!(m.kind(), Kind::DeltaInPlace);
            assert_eq!(m.apply_descending(), flags != 0);
        }
        for kind in [0, 1] {
            let base = if kind == 0 { 0 } else { S };
            assert!(parse(&manifest(kind, 0, 3 * S, base, &fills)).is_ok());
            assert!(matches!(
                parse(&manifest(kind, FLAG_APPLY_DESCENDING, 3 * S, base, &fills)),
                Err(Error::Malformed { .. })
            ));
        }
        for bit in 1..16 {
            assert!(matches!(
                parse(&manifest(2, 1 << bit, 3 * S, S, &fills)),
                Err(Error::Malformed { .. })
            ));
        }
        // Kind 2 needs a base, as kind 1 does.
        assert!(matches!(
            parse(&manifest(2, 0, 3 * S, 0, &fills)),
            Err(Error::Malformed { .. })
        ));
        assert_eq!(
            parse(&manifest(3, 0, 3 * S, S, &fills)).unwrap_err(),
            Error::UnsupportedKind(3)
        );
    }

    #[test]
    fn read_windows_and_apply_order() {
        // 3 slices (the last one 100 bytes) over a base of 2.5 slices.
        let fills = [(Method::Fill, 0); 3];
        let (image, base) = (2 * S + 100, 2 * S + S / 2);
        let b = manifest(2, 0, image, base, &fills);
        let m = parse(&b).unwrap();
        assert_eq!(m.read_window(0), 0..base);
        assert_eq!(m.read_window(1), S..base);
        assert_eq!(m.read_window(2), 2 * S..base);
        assert_eq!(m.apply_order().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(m.apply_order().len(), 3);
        let b = manifest(2, FLAG_APPLY_DESCENDING, image, base, &fills);
        let m = parse(&b).unwrap();
        assert_eq!(m.read_window(0), 0..S);
        assert_eq!(m.read_window(1), 0..2 * S);
        assert_eq!(m.read_window(2), 0..base);
        assert_eq!(m.apply_order().collect::<Vec<_>>(), [2, 1, 0]);
        // A base shorter than the image: ascending windows past it are empty.
        let b = manifest(2, 0, image, S / 2, &fills);
        let m = parse(&b).unwrap();
        assert_eq!(m.read_window(1), S / 2..S / 2);
        assert_eq!(m.read_window(u32::MAX), S / 2..S / 2);
        let b = manifest(2, FLAG_APPLY_DESCENDING, image, S / 2, &fills);
        assert_eq!(parse(&b).unwrap().read_window(u32::MAX), 0..S / 2);
        // Other kinds: the whole base, or nothing.
        let b = manifest(1, 0, image, base, &fills);
        assert_eq!(parse(&b).unwrap().read_window(2), 0..base);
        assert_eq!(
            parse(&b).unwrap().apply_order().collect::<Vec<_>>(),
            [0, 1, 2]
        );
        let b = manifest(0, 0, image, 0, &fills);
        assert_eq!(parse(&b).unwrap().read_window(0), 0..0);
    }

    #[test]
    fn copies_must_lie_inside_their_window() {
        let base = 3 * S;
        let fill = (Method::Fill, 0);
        // Ascending: slice 1 may copy from [S, 3S).
        for (arg, ok) in [(S, true), (2 * S, true), (S - 1, false), (0, false)] {
            let b = manifest(2, 0, 3 * S, base, &[fill, (Method::Copy, arg), fill]);
            match parse(&b) {
                Ok(_) => assert!(ok, "arg {arg}"),
                Err(e) => {
                    assert!(!ok, "arg {arg}");
                    assert_eq!(e, Error::ReadOutsideWindow { slice: 1 });
                }
            }
            // The same record in a two-slot delta is fine.
            let b = manifest(1, 0, 3 * S, base, &[fill, (Method::Copy, arg), fill]);
            assert!(parse(&b).is_ok());
        }
        // Descending: slice 1 may copy from [0, 2S).
        let flags = FLAG_APPLY_DESCENDING;
        for (arg, ok) in [(0, true), (S, true), (S + 1, false), (2 * S, false)] {
            let b = manifest(2, flags, 3 * S, base, &[fill, (Method::Copy, arg), fill]);
            assert_eq!(parse(&b).is_ok(), ok, "arg {arg}");
            if !ok {
                assert_eq!(
                    parse(&b).unwrap_err(),
                    Error::ReadOutsideWindow { slice: 1 }
                );
            }
        }
        // A copy past the base is Malformed (the method rule is checked first).
        let b = manifest(2, 0, 3 * S, base, &[fill, (Method::Copy, 2 * S + 1), fill]);
        assert!(matches!(parse(&b), Err(Error::Malformed { .. })));
    }
}
