//! The fixed 32-byte header.
//!
//! | offset | size | field            | value                                  |
//! |--------|------|------------------|----------------------------------------|
//! | 0      | 8    | magic            | `89 4F 54 41 0D 0A 1A 0A` ("\x89OTA\r\n\x1a\n") |
//! | 8      | 2    | format_version   | 1                                      |
//! | 10     | 2    | header_len       | 32                                     |
//! | 12     | 4    | manifest_len     | bytes of manifest that follow          |
//! | 16     | 4    | payload_len      | bytes of slice payloads                |
//! | 20     | 4    | flags            | 0 (reserved)                           |
//! | 24     | 8    | reserved         | 0                                      |

use super::{all_zero, le_u16, le_u32};
use crate::error::{Error, Result};

pub const MAGIC: [u8; 8] = [0x89, b'O', b'T', b'A', 0x0D, 0x0A, 0x1A, 0x0A];
pub const FORMAT_VERSION: u16 = 1;
pub const HEADER_LEN: usize = 32;

pub mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..8;
    pub const FORMAT_VERSION: usize = 8;
    pub const HEADER_LEN: usize = 10;
    pub const MANIFEST_LEN: usize = 12;
    pub const PAYLOAD_LEN: usize = 16;
    pub const FLAGS: Range<usize> = 20..24;
    pub const RESERVED: Range<usize> = 24..32;
}

/// A checked view of the header bytes.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    buf: &'a [u8],
}

impl<'a> Header<'a> {
    /// Checks magic, version, header length and reserved fields. `buf` may be longer than the
    /// header (the whole package); only the first 32 bytes are looked at.
    pub fn new_checked(buf: &'a [u8]) -> Result<Self> {
        // Whatever part of the magic is present must match: a short non-package file is
        // "not a package", a short package is "truncated".
        let n = buf.len().min(MAGIC.len());
        if buf.get(..n) != MAGIC.get(..n) {
            return Err(Error::BadMagic { what: "header" });
        }
        let buf = buf
            .get(..HEADER_LEN)
            .ok_or(Error::Truncated { what: "header" })?;
        let version = le_u16(buf, field::FORMAT_VERSION);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion(version));
        }
        if usize::from(le_u16(buf, field::HEADER_LEN)) != HEADER_LEN {
            return Err(Error::Malformed {
                what: "header_len is not 32",
            });
        }
        if !all_zero(buf, field::FLAGS) || !all_zero(buf, field::RESERVED) {
            return Err(Error::Malformed {
                what: "reserved header bytes are not zero",
            });
        }
        Ok(Header { buf })
    }

    pub fn as_bytes(&self) -> &'a [u8] {
        self.buf
    }
    pub fn format_version(&self) -> u16 {
        le_u16(self.buf, field::FORMAT_VERSION)
    }
    pub fn manifest_len(&self) -> u32 {
        le_u32(self.buf, field::MANIFEST_LEN)
    }
    pub fn payload_len(&self) -> u32 {
        le_u32(self.buf, field::PAYLOAD_LEN)
    }
}

/// The header's variable fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderRepr {
    pub manifest_len: u32,
    pub payload_len: u32,
}

impl HeaderRepr {
    pub fn parse(h: &Header<'_>) -> Self {
        HeaderRepr {
            manifest_len: h.manifest_len(),
            payload_len: h.payload_len(),
        }
    }

    /// Writes the 32 header bytes.
    pub fn emit(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[field::MAGIC].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        b[12..16].copy_from_slice(&self.manifest_len.to_le_bytes());
        b[16..20].copy_from_slice(&self.payload_len.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BYTES: [u8; 32] = [
        0x89, 0x4F, 0x54, 0x41, 0x0D, 0x0A, 0x1A, 0x0A, // magic
        0x01, 0x00, 0x20, 0x00, // version 1, header_len 32
        0x10, 0x02, 0x00, 0x00, // manifest_len 0x210
        0x00, 0x00, 0x01, 0x00, // payload_len 0x10000
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    #[test]
    fn emit_pins_exact_bytes() {
        let r = HeaderRepr {
            manifest_len: 0x210,
            payload_len: 0x10000,
        };
        assert_eq!(r.emit(), BYTES);
        let h = Header::new_checked(&BYTES).unwrap();
        assert_eq!(HeaderRepr::parse(&h), r);
    }

    #[test]
    fn rejects_bad_fields() {
        let mut b = BYTES;
        b[0] = 0x7F;
        assert_eq!(
            Header::new_checked(&b).unwrap_err(),
            Error::BadMagic { what: "header" }
        );
        let mut b = BYTES;
        b[8] = 2;
        assert_eq!(
            Header::new_checked(&b).unwrap_err(),
            Error::UnsupportedVersion(2)
        );
        let mut b = BYTES;
        b[10] = 33;
        assert!(matches!(
            Header::new_checked(&b),
            Err(Error::Malformed { .. })
        ));
        for i in 20..32 {
            let mut b = BYTES;
            b[i] = 1;
            assert!(matches!(
                Header::new_checked(&b),
                Err(Error::Malformed { .. })
            ));
        }
        for n in 0..32 {
            assert_eq!(
                Header::new_checked(&BYTES[..n]).unwrap_err(),
                Error::Truncated { what: "header" }
            );
        }
        assert_eq!(
            Header::new_checked(b"hello").unwrap_err(),
            Error::BadMagic { what: "header" }
        );
    }
}
