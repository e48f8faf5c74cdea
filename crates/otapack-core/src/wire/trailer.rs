//! The 28-byte trailer, byte-compatible with AliOS Things' `ota_image_info_t`, which makes the
//! file a genuine `.ota.md5.bin` for OTA services and devices that expect one.
//!
//! | offset | size | field      | value                                           |
//! |--------|------|------------|-------------------------------------------------|
//! | 0      | 4    | magic      | u32 LE 0xEFEFEFEF                               |
//! | 4      | 4    | image_size | u32 LE length of everything before the trailer  |
//! | 8      | 16   | md5        | raw MD5 of everything before the trailer        |
//! | 24     | 4    | reserved   | FF FF FF FF                                     |
//!
//! The MD5 guards against transport corruption only: it is not keyed and not signed.

use super::le_u32;
use crate::error::{Error, Result};
use md5::{Digest, Md5};

pub const TRAILER_LEN: usize = 28;
pub const MAGIC: u32 = 0xEFEF_EFEF;

/// A checked view of the trailer (the last 28 bytes of a package).
#[derive(Debug, Clone, Copy)]
pub struct Trailer<'a> {
    buf: &'a [u8],
}

impl<'a> Trailer<'a> {
    /// Checks magic, length (against `package_len`, the whole file) and reserved bytes.
    pub fn new_checked(buf: &'a [u8], package_len: usize) -> Result<Self> {
        let buf = buf
            .get(..TRAILER_LEN)
            .ok_or(Error::Truncated { what: "trailer" })?;
        if le_u32(buf, 0) != MAGIC {
            return Err(Error::BadMagic { what: "trailer" });
        }
        let expected = package_len.saturating_sub(TRAILER_LEN) as u64;
        if u64::from(le_u32(buf, 4)) != expected {
            return Err(Error::LengthMismatch {
                what: "trailer image_size",
                expected,
                actual: le_u32(buf, 4).into(),
            });
        }
        if buf.get(24..28) != Some(&[0xFF; 4][..]) {
            return Err(Error::Malformed {
                what: "trailer reserved bytes are not FF",
            });
        }
        Ok(Trailer { buf })
    }

    pub fn md5(&self) -> [u8; 16] {
        let mut a = [0u8; 16];
        if let Some(s) = self.buf.get(8..24) {
            a.copy_from_slice(s);
        }
        a
    }
}

/// The trailer for `before` (everything that precedes it).
pub fn emit(before: &[u8]) -> Result<[u8; TRAILER_LEN]> {
    let len = u32::try_from(before.len()).map_err(|_| Error::Malformed {
        what: "package larger than 4 GiB",
    })?;
    let mut t = [0u8; TRAILER_LEN];
    t[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t[8..24].copy_from_slice(&md5(before));
    t[24..28].copy_from_slice(&[0xFF; 4]);
    Ok(t)
}

pub fn md5(bytes: &[u8]) -> [u8; 16] {
    Md5::digest(bytes).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_pins_exact_bytes() {
        // MD5("abc") = 900150983cd24fb0d6963f7d28e17f72
        let t = emit(b"abc").unwrap();
        assert_eq!(
            t,
            [
                0xEF, 0xEF, 0xEF, 0xEF, 3, 0, 0, 0, 0x90, 0x01, 0x50, 0x98, 0x3c, 0xd2, 0x4f, 0xb0,
                0xd6, 0x96, 0x3f, 0x7d, 0x28, 0xe1, 0x7f, 0x72, 0xFF, 0xFF, 0xFF, 0xFF
            ]
        );
        let tr = Trailer::new_checked(&t, 3 + 28).unwrap();
        assert_eq!(tr.md5(), md5(b"abc"));
        assert!(Trailer::new_checked(&t, 4 + 28).is_err());
    }
}
