//! The container, one module per structure. Each structure is a checked zero-copy view over a
//! byte buffer (`new_checked` validates every field a later accessor relies on, field offsets
//! live in one `mod field`), plus, behind the `alloc` feature, an owned `*Repr` with `emit`.
//!
//! Layout of a package, front to back (see `docs/format.md` for the byte-level spec):
//!
//! | part             | size                      |
//! |------------------|---------------------------|
//! | header           | 32                        |
//! | manifest         | `header.manifest_len`     |
//! | signature block  | 4 + sum of entries        |
//! | slice payloads   | `header.payload_len`      |
//! | trailer (AliOS)  | 28                        |

pub mod header;
pub mod manifest;
pub mod sigblock;
pub mod slice;
pub mod tlv;
pub mod trailer;

/// Reads a little-endian `u16` at `at`. Views call this only after `new_checked` proved the
/// bytes are there; should that ever be wrong it yields 0 instead of panicking.
#[inline]
pub(crate) fn le_u16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x0, x1]) => u16::from_le_bytes([x0, x1]),
        _ => 0,
    }
}

/// Reads a little-endian `u32` at `at` (see [`le_u16`]).
#[inline]
pub(crate) fn le_u32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(s) => {
            let mut a = [0u8; 4];
            a.copy_from_slice(s);
            u32::from_le_bytes(a)
        }
        None => 0,
    }
}

/// Reads a little-endian `u64` at `at` (see [`le_u16`]).
#[inline]
pub(crate) fn le_u64(b: &[u8], at: usize) -> u64 {
    match b.get(at..at + 8) {
        Some(s) => {
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            u64::from_le_bytes(a)
        }
        None => 0,
    }
}

/// Reads a 32-byte digest at `at` (see [`le_u16`]).
#[inline]
pub(crate) fn digest_at(b: &[u8], at: usize) -> [u8; 32] {
    let mut a = [0u8; 32];
    if let Some(s) = b.get(at..at + 32) {
        a.copy_from_slice(s);
    }
    a
}

/// True when every byte of `b[range]` is zero (reserved fields).
#[inline]
pub(crate) fn all_zero(b: &[u8], range: core::ops::Range<usize>) -> bool {
    b.get(range).is_some_and(|s| s.iter().all(|&x| x == 0))
}

/// Writes little-endian integers into a buffer the caller sized; used by `emit`.
#[cfg(feature = "alloc")]
pub(crate) fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    if let Some(dst) = buf.get_mut(at..at + bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}
