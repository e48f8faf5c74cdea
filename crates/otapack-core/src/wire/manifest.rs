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
//! | 6      | 2    | flags            | 0 (reserved)                                       |
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
//! | 128    | 8    | reserved         | 0                                                  |

use super::slice::{Method, SliceRecord, RECORD_LEN};
use super::tlv::{self, TlvIter};
use super::{all_zero, digest_at, le_u16, le_u32, le_u64};
use crate::error::{Error, Result};

pub const FIXED_LEN: usize = 136;
pub const MIN_SLICE_LOG2: u8 = 12;
pub const MAX_SLICE_LOG2: u8 = 20;
pub const MIN_WINDOW_LOG: u8 = 10;
pub const MAX_IMAGE_SIZE: u64 = u32::MAX as u64;

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
    pub const RESERVED: Range<usize> = 128..136;
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
        if kind == Kind::DeltaInPlace {
            // Reserved for single-slot in-place updates; refused until implemented.
            return Err(Error::UnsupportedKind(kind as u8));
        }
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
        if !all_zero(buf, field::FLAGS) || !all_zero(buf, field::RESERVED) {
            return Err(Error::Malformed {
                what: "reserved manifest bytes are not zero",
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
                    len == slice_len && rec.arg() == 0 && rec.payload_sha256() == rec.slice_sha256()
                }
                Method::Zstd => {
                    if self.zstd_window_log() == 0 {
                        return Err(not_allowed);
                    }
                    len > 0 && len < slice_len && rec.arg() == 0
                }
                Method::Copy | Method::Patch if self.kind() == Kind::Full => {
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
                    len > 0 && len < slice_len && rec.arg() == crate::patch::PATCH_FORMAT_1
                }
            };
            if !ok {
                return Err(Error::Malformed {
                    what: "slice record fields break its method's rules",
                });
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
        pub security_counter: u64,
        pub created: u64,
        pub expires: Option<u64>,
        pub load_address: u64,
        pub image_size: u64,
        pub image_sha256: [u8; 32],
        pub base_size: u64,
        pub base_sha256: [u8; 32],
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
                security_counter: m.security_counter(),
                created: m.created(),
                expires: m.expires(),
                load_address: m.load_address(),
                image_size: m.image_size(),
                image_sha256: m.image_sha256(),
                base_size: m.base_size(),
                base_sha256: m.base_sha256(),
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
