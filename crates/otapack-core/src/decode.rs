//! Decoding one slice from its payload, with both digests checked.
//!
//! The payload's SHA-256 is checked *before* it reaches a decoder, and the decoded slice's
//! SHA-256 after, so a decoder only ever sees bytes the signed manifest vouches for, and no
//! output is handed on unless it is exactly what the manifest promised.

use crate::error::{Error, Result};
use crate::patch::{BaseImage, PatchDecoder};
use crate::wire::manifest::Manifest;
use crate::wire::slice::{Method, SliceRecord};
use sha2::{Digest, Sha256};

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
    /// slices need it.
    pub fn decode<'o>(
        &mut self,
        manifest: &Manifest<'_>,
        rec: &SliceRecord<'_>,
        payload: &[u8],
        base: Option<&mut dyn BaseImage>,
        out: &'o mut [u8],
    ) -> Result<&'o [u8]> {
        let slice = rec.index();
        let len = manifest.slice_len(slice) as usize;
        let out = out
            .get_mut(..len)
            .ok_or(Error::BufferTooSmall { needed: len as u64 })?;
        let payload_digest: [u8; 32] = Sha256::digest(payload).into();
        if payload_digest != rec.payload_sha256() {
            return Err(Error::PayloadDigest { slice });
        }
        let window_log = manifest.zstd_window_log();
        match rec.method() {
            Method::Fill => out.fill(rec.arg() as u8),
            Method::Raw => {
                if payload.len() != out.len() {
                    return Err(Error::Decode { slice });
                }
                out.copy_from_slice(payload);
            }
            Method::Zstd => {
                let mut pos = 0usize;
                self.zstd(slice, window_log, payload, Some(len as u64), &mut |chunk| {
                    let dst = out
                        .get_mut(pos..pos + chunk.len())
                        .ok_or(Error::Decode { slice })?;
                    dst.copy_from_slice(chunk);
                    pos += chunk.len();
                    Ok(())
                })?;
                if pos != len {
                    return Err(Error::Decode { slice });
                }
            }
            Method::Copy => {
                let base = base.ok_or(Error::BaseRequired)?;
                let end = rec
                    .arg()
                    .checked_add(len as u64)
                    .ok_or(Error::Decode { slice })?;
                if end > base.len() {
                    return Err(Error::Decode { slice });
                }
                base.read(rec.arg(), out)?;
            }
            Method::Patch => {
                let base = base.ok_or(Error::BaseRequired)?;
                let mut p = PatchDecoder::new(slice, base.len());
                self.zstd(slice, window_log, payload, None, &mut |chunk| {
                    p.feed(chunk, base, out)
                })?;
                p.finish(len)?;
            }
        }
        let slice_digest: [u8; 32] = Sha256::digest(&*out).into();
        if slice_digest != rec.slice_sha256() {
            return Err(Error::SliceDigest { slice });
        }
        Ok(out)
    }

    /// Decodes one zstd frame, passing the output in pieces to `sink`. `content_size`, when
    /// given, must be what the frame declares.
    #[cfg(feature = "zstd")]
    fn zstd(
        &mut self,
        slice: u32,
        window_log: u8,
        payload: &[u8],
        content_size: Option<u64>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        use ruzstd::decoding::errors::FrameDecoderError;
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
            FrameDecoderError::WindowSizeTooBig { .. } => Error::WindowTooLarge { slice },
            _ => bad,
        })?;
        if content_size.is_some_and(|c| c != dec.content_size()) {
            return Err(bad);
        }
        let declared = dec.content_size();
        let mut produced = 0u64;
        let mut chunk = [0u8; 1024];
        loop {
            let finished = dec
                .decode_blocks(&mut src, BlockDecodingStrategy::UptoBytes(16 * 1024))
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
        _: Option<u64>,
        _: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        Err(Error::CodecUnavailable { slice })
    }
}
