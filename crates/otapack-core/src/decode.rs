//! Decoding one slice from its payload, with both digests checked.
//!
//! The payload's SHA-256 is checked *before* it reaches a decoder, and the decoded slice's
//! SHA-256 after, so a decoder only ever sees bytes the signed manifest vouches for, and no
//! output is handed on unless it is exactly what the manifest promised.
//!
//! In an in-place delta (kind 2) every read of the base image goes through [`WindowedBase`]:
//! a copy or patch that reads a base byte outside the slice's read window
//! ([`Manifest::read_window`]), a byte an earlier slice may already have overwritten, fails
//! with [`Error::ReadOutsideWindow`].

use crate::error::{Error, Result};
use crate::patch::{BaseImage, PatchDecoder};
use crate::wire::manifest::{Kind, Manifest};
use crate::wire::slice::{Method, SliceRecord};
use core::ops::Range;
use sha2::{Digest, Sha256};

/// Bytes produced per step for `fill` and read per step for `copy` (stack buffers).
const BLOCK: usize = 256;

/// A base image whose reads are restricted to a window of it: a read of any byte outside
/// `window` fails with [`Error::ReadOutsideWindow`] before the inner image is touched. Its
/// length is the inner image's, so a patch's cursor may still move anywhere in the base; only
/// the bytes it reads are restricted.
pub struct WindowedBase<'b> {
    inner: &'b mut dyn BaseImage,
    window: Range<u64>,
    slice: u32,
}

impl<'b> WindowedBase<'b> {
    /// Restricts `inner` to `window` for slice `slice` (named in the error).
    pub fn new(inner: &'b mut dyn BaseImage, window: Range<u64>, slice: u32) -> Self {
        WindowedBase {
            inner,
            window,
            slice,
        }
    }
}

impl core::fmt::Debug for WindowedBase<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("WindowedBase")
            .field("window", &self.window)
            .field("slice", &self.slice)
            .finish()
    }
}

impl BaseImage for WindowedBase<'_> {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let outside = Error::ReadOutsideWindow { slice: self.slice };
        let end = offset.checked_add(buf.len() as u64).ok_or(outside)?;
        if offset < self.window.start || end > self.window.end {
            return Err(outside);
        }
        self.inner.read(offset, buf)
    }
}

/// Reusable decoding state (the zstd decoder keeps its buffers across slices).
#[derive(Default)]
pub struct SliceDecoder {
    #[cfg(feature = "zstd")]
    zstd: Option<ruzstd::decoding::FrameDecoder>,
}

impl core::fmt::Debug for SliceDecoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SliceDecoder")
    }
}

impl SliceDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes slice `rec` of `manifest` from `payload` into `out`, which must be at least the
    /// slice's length; returns the decoded slice (a prefix of `out`). `base` is the image a
    /// delta package applies to (checked against the manifest by the caller); `copy` and `patch`
    /// slices need it. For an in-place delta, reads are restricted to the slice's read window
    /// (see the module documentation), so `base` may be the slot being overwritten.
    pub fn decode<'o>(
        &mut self,
        manifest: &Manifest<'_>,
        rec: &SliceRecord<'_>,
        payload: &[u8],
        base: Option<&mut dyn BaseImage>,
        out: &'o mut [u8],
    ) -> Result<&'o [u8]> {
        let len = manifest.slice_len(rec.index()) as usize;
        let out = out
            .get_mut(..len)
            .ok_or(Error::BufferTooSmall { needed: len as u64 })?;
        let mut pos = 0usize;
        self.decode_to(manifest, rec, payload, base, &mut |chunk| {
            let dst = out
                .get_mut(pos..pos + chunk.len())
                .ok_or(Error::Decode { slice: rec.index() })?;
            dst.copy_from_slice(chunk);
            pos += chunk.len();
            Ok(())
        })?;
        Ok(out)
    }

    /// Decodes slice `rec` and passes its bytes, in order and in pieces, to `sink`. The payload
    /// digest is checked before anything is decoded; the slice's length and digest are checked
    /// over what was produced, and an `Err` means the pieces already passed must be discarded.
    pub fn decode_to(
        &mut self,
        manifest: &Manifest<'_>,
        rec: &SliceRecord<'_>,
        payload: &[u8],
        base: Option<&mut dyn BaseImage>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let slice = rec.index();
        let bad = Error::Decode { slice };
        let len = u64::from(manifest.slice_len(slice));
        let mut windowed;
        let base = match base {
            Some(b) if manifest.kind() == Kind::DeltaInPlace => {
                windowed = WindowedBase::new(b, manifest.read_window(slice), slice);
                Some(&mut windowed as &mut dyn BaseImage)
            }
            other => other,
        };
        let payload_digest: [u8; 32] = Sha256::digest(payload).into();
        if payload_digest != rec.payload_sha256() {
            return Err(Error::PayloadDigest { slice });
        }
        let mut hash = Sha256::new();
        let mut produced = 0u64;
        let mut out = |chunk: &[u8]| -> Result<()> {
            produced += chunk.len() as u64;
            if produced > len {
                return Err(bad);
            }
            hash.update(chunk);
            sink(chunk)
        };
        let window_log = manifest.zstd_window_log();
        match rec.method() {
            Method::Fill => {
                let block = [rec.arg() as u8; BLOCK];
                let mut left = len;
                while left > 0 {
                    let n = left.min(BLOCK as u64) as usize;
                    out(block.get(..n).unwrap_or(&[]))?;
                    left -= n as u64;
                }
            }
            Method::Raw => {
                if payload.len() as u64 != len {
                    return Err(bad);
                }
                out(payload)?;
            }
            Method::Zstd => self.zstd(slice, window_log, payload, Ok(len), &mut out)?,
            Method::Copy => {
                let base = base.ok_or(Error::BaseRequired)?;
                let end = rec.arg().checked_add(len).ok_or(bad)?;
                if end > base.len() {
                    return Err(bad);
                }
                let mut block = [0u8; BLOCK];
                let mut at = rec.arg();
                while at < end {
                    let n = (end - at).min(BLOCK as u64) as usize;
                    let b = block.get_mut(..n).ok_or(bad)?;
                    base.read(at, b)?;
                    out(b)?;
                    at += n as u64;
                }
            }
            Method::Patch => {
                let base = base.ok_or(Error::BaseRequired)?;
                let mut p = PatchDecoder::new(slice, len, base.len());
                let max_stream = crate::patch::MAX_STREAM_FACTOR * len;
                self.zstd(slice, window_log, payload, Err(max_stream), &mut |c| {
                    p.feed(c, base, &mut out)
                })?;
                p.finish()?;
            }
        }
        if produced != len {
            return Err(bad);
        }
        let slice_digest: [u8; 32] = hash.finalize().into();
        if slice_digest != rec.slice_sha256() {
            return Err(Error::SliceDigest { slice });
        }
        Ok(())
    }

    /// Decodes one zstd frame, passing the output in pieces to `sink`. The frame must declare
    /// a content size of exactly `Ok(n)`, or at most `Err(max)`.
    #[cfg(feature = "zstd")]
    fn zstd(
        &mut self,
        slice: u32,
        window_log: u8,
        payload: &[u8],
        content_size: core::result::Result<u64, u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        use ruzstd::decoding::errors::{FrameDecoderError, FrameHeaderError};
        use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};
        use ruzstd::io::Read;

        let bad = Error::Decode { slice };
        if window_log == 0 {
            return Err(Error::MethodNotAllowed {
                slice,
                method: Method::Zstd as u8,
            });
        }
        // Frame header descriptor (byte 4, after the magic): the reserved bit must be clear, no
        // dictionary, and the content size must be declared (as libzstd requires of the same
        // frame); ruzstd itself is more lenient.
        let fhd = payload.get(4).copied().ok_or(bad)?;
        let content_size_present = fhd >> 6 != 0 || fhd & 0x20 != 0;
        if fhd & 0x08 != 0 || fhd & 0x03 != 0 || !content_size_present {
            return Err(bad);
        }
        let dec = self.zstd.get_or_insert_with(FrameDecoder::new);
        dec.set_max_window_size(1u64 << window_log.min(31));
        let mut src = payload;
        dec.reset(&mut src).map_err(|e| match e {
            // ruzstd refuses a Window_Descriptor at or above its own cap (0xFF) before it
            // compares the window with ours: that window is too large all the same.
            FrameDecoderError::WindowSizeTooBig { .. }
            | FrameDecoderError::FrameHeaderError(FrameHeaderError::WindowTooBig { .. }) => {
                Error::WindowTooLarge { slice }
            }
            _ => bad,
        })?;
        let ok = match content_size {
            Ok(exact) => dec.content_size() == exact,
            Err(max) => dec.content_size() <= max,
        };
        if !ok {
            return Err(bad);
        }
        // The frame's Block_Maximum_Size: min(Window_Size, 128 KiB). Window_Size is the
        // content size for a single-segment frame, else from the Window_Descriptor (byte 5).
        let window = if fhd & 0x20 != 0 {
            dec.content_size()
        } else {
            let wd = payload.get(5).copied().ok_or(bad)?;
            let base = 1u64 << (10 + (wd >> 3));
            base + base / 8 * u64::from(wd & 7)
        };
        check_blocks(src, window.min(128 * 1024)).ok_or(bad)?;
        let declared = dec.content_size();
        let mut produced = 0u64;
        let mut chunk = [0u8; 1024];
        loop {
            let finished = dec
                .decode_blocks(&mut src, BlockDecodingStrategy::UptoBlocks(1))
                .map_err(|_| bad)?;
            loop {
                let n = dec.read(&mut chunk).map_err(|_| bad)?;
                if n == 0 {
                    break;
                }
                produced += n as u64;
                if produced > declared {
                    return Err(bad); // more than the frame declared
                }
                sink(chunk.get(..n).unwrap_or(&[]))?;
            }
            if finished {
                break;
            }
        }
        if !src.is_empty() || produced != declared {
            return Err(bad); // trailing bytes after the frame, or a short frame
        }
        if let Some(declared) = dec.get_checksum_from_data() {
            if dec.get_calculated_checksum() != Some(declared) {
                return Err(bad);
            }
        }
        Ok(())
    }

    #[cfg(not(feature = "zstd"))]
    fn zstd(
        &mut self,
        slice: u32,
        _: u8,
        _: &[u8],
        _: core::result::Result<u64, u64>,
        _: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        Err(Error::CodecUnavailable { slice })
    }
}

/// Walks a zstd frame's blocks (`blocks`: the bytes after the frame header) and checks what
/// ruzstd would otherwise allocate for before it checks it: no block is larger than the frame's
/// Block_Maximum_Size `max` (RFC 8878 §3.1.1.2), neither its Block_Size (for RLE, the size it
/// decodes to) nor a compressed block's literals (Regenerated_Size), and a compressed block has
/// no more sequences than fit in `max` bytes (each decodes to at least 3). libzstd refuses all
/// of these frames too; ruzstd, given one, allocated up to about 2 MiB whatever the window (a
/// 5-byte block of 2^20 RLE literals, a 6-byte block announcing 98047 sequences). Allocates
/// nothing; `None` means the frame is refused.
#[cfg(feature = "zstd")]
fn check_blocks(mut blocks: &[u8], max: u64) -> Option<()> {
    loop {
        let (&[h0, h1, h2], body) = (blocks.get(..3)?, blocks.get(3..)?) else {
            return None;
        };
        let header = u32::from(h0) | u32::from(h1) << 8 | u32::from(h2) << 16;
        let size = u64::from(header >> 3);
        if size > max {
            return None;
        }
        let stored = match (header >> 1) & 3 {
            0 => size, // raw
            1 => 1,    // RLE
            2 => {
                check_compressed_block(body.get(..usize::try_from(size).ok()?)?, max)?;
                size
            }
            _ => return None, // reserved
        };
        blocks = body.get(usize::try_from(stored).ok()?..)?;
        if header & 1 != 0 {
            return Some(()); // the last block
        }
    }
}

/// The literals and the sequence count of one compressed block (RFC 8878 §3.1.1.3).
#[cfg(feature = "zstd")]
fn check_compressed_block(block: &[u8], max: u64) -> Option<()> {
    let b = |i: usize| block.get(i).copied().map(u64::from);
    let b0 = b(0)?;
    let (header_len, regenerated, stored) = match (b0 & 3, (b0 >> 2) & 3) {
        // Raw or RLE literals: 5, 12 or 20 bits of size; stored as is, or one byte.
        (kind @ (0 | 1), format) => {
            let (len, size) = match format {
                0 | 2 => (1, b0 >> 3),
                1 => (2, (b0 >> 4) + (b(1)? << 4)),
                _ => (3, (b0 >> 4) + (b(1)? << 4) + (b(2)? << 12)),
            };
            (len, size, if kind == 0 { size } else { 1 })
        }
        // Huffman-compressed literals: regenerated and compressed sizes of 10, 14 or 18 bits.
        (_, 0 | 1) => {
            let (b1, b2) = (b(1)?, b(2)?);
            (3, (b0 >> 4) + ((b1 & 0x3F) << 4), (b1 >> 6) + (b2 << 2))
        }
        (_, 2) => {
            let (b1, b2, b3) = (b(1)?, b(2)?, b(3)?);
            (
                4,
                (b0 >> 4) + (b1 << 4) + ((b2 & 3) << 12),
                (b2 >> 2) + (b3 << 6),
            )
        }
        _ => {
            let (b1, b2, b3, b4) = (b(1)?, b(2)?, b(3)?, b(4)?);
            (
                5,
                (b0 >> 4) + (b1 << 4) + ((b2 & 0x3F) << 12),
                (b2 >> 6) + (b3 << 2) + (b4 << 10),
            )
        }
    };
    if regenerated > max {
        return None;
    }
    let at = usize::try_from(header_len + stored).ok()?;
    let sequences = match block.get(at).copied()? {
        n @ 0..=127 => u64::from(n),
        n @ 128..=254 => (u64::from(n - 128) << 8) + b(at + 1)?,
        _ => b(at + 1)? + (b(at + 2)? << 8) + 0x7F00,
    };
    (sequences.saturating_mul(3) <= max).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windowed_base_reads_only_inside_its_window() {
        let bytes: [u8; 16] = core::array::from_fn(|i| i as u8);
        let mut inner: &[u8] = &bytes;
        let mut w = WindowedBase::new(&mut inner, 4..12, 7);
        assert_eq!(BaseImage::len(&w), 16);
        let mut buf = [0u8; 8];
        w.read(4, &mut buf).unwrap();
        assert_eq!(buf, [4, 5, 6, 7, 8, 9, 10, 11]);
        let outside = Err(Error::ReadOutsideWindow { slice: 7 });
        assert_eq!(w.read(3, &mut buf[..1]), outside);
        assert_eq!(w.read(5, &mut buf), outside);
        assert_eq!(w.read(12, &mut buf[..1]), outside);
        assert_eq!(w.read(u64::MAX, &mut buf[..2]), outside);
        w.read(11, &mut buf[..1]).unwrap();
        assert_eq!(buf[0], 11);
    }
}
