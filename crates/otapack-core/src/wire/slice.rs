//! Slice records: one 96-byte record per slice of the target image.
//!
//! | offset | size | field          | meaning                                              |
//! |--------|------|----------------|------------------------------------------------------|
//! | 0      | 4    | index          | slice number (slice k covers image bytes k*S..)      |
//! | 4      | 1    | method         | 0 fill, 1 raw, 2 zstd, 3 copy, 4 patch               |
//! | 5      | 3    | reserved       | 0                                                    |
//! | 8      | 4    | payload_offset | from the start of the payload area                   |
//! | 12     | 4    | payload_len    | bytes                                                |
//! | 16     | 8    | arg            | fill: the byte value; copy: offset in the base image; patch: patch format (1) |
//! | 24     | 8    | reserved       | 0                                                    |
//! | 32     | 32   | payload_sha256 | SHA-256 of the payload bytes (of the empty string for `fill`) |
//! | 64     | 32   | slice_sha256   | SHA-256 of the slice as written to the target        |

use super::{all_zero, digest_at, le_u32, le_u64};
use crate::error::{Error, Result};

pub const RECORD_LEN: usize = 96;

pub mod field {
    use core::ops::Range;
    pub const INDEX: usize = 0;
    pub const METHOD: usize = 4;
    pub const RESERVED0: Range<usize> = 5..8;
    pub const PAYLOAD_OFFSET: usize = 8;
    pub const PAYLOAD_LEN: usize = 12;
    pub const ARG: usize = 16;
    pub const RESERVED1: Range<usize> = 24..32;
    pub const PAYLOAD_SHA256: usize = 32;
    pub const SLICE_SHA256: usize = 64;
}

/// How a slice is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Method {
    /// Every byte of the slice is `arg as u8`; no payload.
    Fill = 0,
    /// The payload is the slice.
    Raw = 1,
    /// The payload is one zstd frame that decodes to the slice.
    Zstd = 2,
    /// The slice is `base[arg .. arg + len]`, a range of the base image (delta kinds only).
    Copy = 3,
    /// The payload is one zstd frame holding a patch op stream against the base image, in the
    /// patch format `arg` (delta kinds only; see [`crate::patch`]).
    Patch = 4,
    /// The payload is zstd frames, one after another, that decode to the slice; each frame's
    /// matches may reach into a prefix, the base range `arg >> 32` (start) and `arg & 0xFFFF_FFFF`
    /// (length), read from the base as they are needed. Each frame declares its content size,
    /// at most the manifest's zstd window (delta kinds only; see [`ref_region`]).
    ZstdRef = 5,
}

/// The base range `start..start + len` a `zstd-ref` slice's frames refer to, from its `arg`.
pub fn ref_region(arg: u64) -> (u64, u64) {
    (arg >> 32, arg & 0xFFFF_FFFF)
}

impl Method {
    pub fn from_u8(v: u8) -> Result<Self> {
        Ok(match v {
            0 => Method::Fill,
            1 => Method::Raw,
            2 => Method::Zstd,
            3 => Method::Copy,
            4 => Method::Patch,
            5 => Method::ZstdRef,
            other => return Err(Error::UnknownMethod(other)),
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Method::Fill => "fill",
            Method::Raw => "raw",
            Method::Zstd => "zstd",
            Method::Copy => "copy",
            Method::Patch => "patch",
            Method::ZstdRef => "zstd-ref",
        }
    }
}

/// A checked view of one record. Construction checks only what the record alone can tell
/// (method code, reserved bytes); the manifest checks it against its neighbours.
#[derive(Debug, Clone, Copy)]
pub struct SliceRecord<'a> {
    buf: &'a [u8],
}

impl<'a> SliceRecord<'a> {
    pub fn new_checked(buf: &'a [u8]) -> Result<Self> {
        let buf = buf.get(..RECORD_LEN).ok_or(Error::Truncated {
            what: "slice record",
        })?;
        let rec = SliceRecord { buf };
        Method::from_u8(rec.method_code())?;
        if !all_zero(buf, field::RESERVED0) || !all_zero(buf, field::RESERVED1) {
            return Err(Error::Malformed {
                what: "reserved slice record bytes are not zero",
            });
        }
        Ok(rec)
    }
    /// Wraps bytes already checked by `new_checked` (accessors never panic either way).
    pub(crate) fn new_unchecked(buf: &'a [u8]) -> Self {
        SliceRecord { buf }
    }
    pub fn index(&self) -> u32 {
        le_u32(self.buf, field::INDEX)
    }
    fn method_code(&self) -> u8 {
        self.buf.get(field::METHOD).copied().unwrap_or(0xFF)
    }
    /// The storage method (checked at construction).
    pub fn method(&self) -> Method {
        Method::from_u8(self.method_code()).unwrap_or(Method::Raw)
    }
    pub fn payload_offset(&self) -> u32 {
        le_u32(self.buf, field::PAYLOAD_OFFSET)
    }
    pub fn payload_len(&self) -> u32 {
        le_u32(self.buf, field::PAYLOAD_LEN)
    }
    pub fn arg(&self) -> u64 {
        le_u64(self.buf, field::ARG)
    }
    pub fn payload_sha256(&self) -> [u8; 32] {
        digest_at(self.buf, field::PAYLOAD_SHA256)
    }
    pub fn slice_sha256(&self) -> [u8; 32] {
        digest_at(self.buf, field::SLICE_SHA256)
    }
}

/// An owned record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SliceRepr {
    pub index: u32,
    pub method: Method,
    pub payload_offset: u32,
    pub payload_len: u32,
    pub arg: u64,
    pub payload_sha256: [u8; 32],
    pub slice_sha256: [u8; 32],
}

impl SliceRepr {
    pub fn parse(r: &SliceRecord<'_>) -> Self {
        SliceRepr {
            index: r.index(),
            method: r.method(),
            payload_offset: r.payload_offset(),
            payload_len: r.payload_len(),
            arg: r.arg(),
            payload_sha256: r.payload_sha256(),
            slice_sha256: r.slice_sha256(),
        }
    }

    pub fn emit(&self) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        b[0..4].copy_from_slice(&self.index.to_le_bytes());
        b[4] = self.method as u8;
        b[8..12].copy_from_slice(&self.payload_offset.to_le_bytes());
        b[12..16].copy_from_slice(&self.payload_len.to_le_bytes());
        b[16..24].copy_from_slice(&self.arg.to_le_bytes());
        b[32..64].copy_from_slice(&self.payload_sha256);
        b[64..96].copy_from_slice(&self.slice_sha256);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_pins_exact_bytes() {
        let r = SliceRepr {
            index: 0x0102_0304,
            method: Method::Zstd,
            payload_offset: 0x1000,
            payload_len: 0x0234,
            arg: 0xAB,
            payload_sha256: [0x11; 32],
            slice_sha256: [0x22; 32],
        };
        let b = r.emit();
        assert_eq!(
            &b[..24],
            &[
                4, 3, 2, 1, 2, 0, 0, 0, 0x00, 0x10, 0, 0, 0x34, 0x02, 0, 0, 0xAB, 0, 0, 0, 0, 0, 0,
                0
            ]
        );
        assert_eq!(&b[24..32], &[0; 8]);
        assert_eq!(&b[32..64], &[0x11; 32]);
        assert_eq!(&b[64..96], &[0x22; 32]);
        assert_eq!(SliceRepr::parse(&SliceRecord::new_checked(&b).unwrap()), r);
    }

    #[test]
    fn rejects_unknown_method_and_reserved() {
        let mut b = SliceRepr {
            index: 0,
            method: Method::Raw,
            payload_offset: 0,
            payload_len: 0,
            arg: 0,
            payload_sha256: [0; 32],
            slice_sha256: [0; 32],
        }
        .emit();
        b[4] = 5;
        assert_eq!(
            SliceRecord::new_checked(&b).map(|r| r.method()),
            Ok(Method::ZstdRef)
        );
        b[4] = 6;
        assert_eq!(
            SliceRecord::new_checked(&b).unwrap_err(),
            Error::UnknownMethod(6)
        );
        b[4] = 1;
        for i in (5..8).chain(24..32) {
            let mut c = b;
            c[i] = 1;
            assert!(SliceRecord::new_checked(&c).is_err());
        }
        assert!(SliceRecord::new_checked(&b[..95]).is_err());
    }
}
