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
#[cfg(feature = "zstd")]
use crate::wire::manifest::MIN_WINDOW_LOG;
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

/// The frame header's first bytes (magic and Frame_Header_Descriptor) and a block header.
#[cfg(feature = "zstd")]
const FRAME_PROBE: usize = 5;
#[cfg(feature = "zstd")]
const BLOCK_HEADER: usize = 3;

/// Where the zstd frame of the current slice stands.
#[cfg(feature = "zstd")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// Waiting for the frame header.
    Header,
    /// Decoding blocks: the frame's declared content size, and whether a content checksum
    /// follows the last block.
    Blocks { declared: u64, checksum: bool },
    /// The last block was decoded.
    Done,
}

/// The slice being decoded: its digests, the segment chain, and the method's own state.
#[cfg_attr(not(feature = "zstd"), allow(dead_code))]
struct Active {
    slice: u32,
    method: Method,
    arg: u64,
    /// The slice's length and the bytes produced so far, hashed as they go.
    len: u64,
    /// The slice's offset in the new image.
    start: u64,
    produced: u64,
    hash: Sha256,
    slice_sha256: [u8; 32],
    /// The SHA-256 the next payload segment must have (its first `expected_len` bytes: all 32
    /// for the first segment, the link length after it), the payload bytes not yet received,
    /// the segment size (0: one segment) and the link length.
    expected: [u8; 32],
    expected_len: usize,
    left: u64,
    segment: u64,
    link: usize,
    window_log: u8,
    block_log: u8,
    /// Kind 2: the base bytes this slice may read.
    window: Option<Range<u64>>,
    patch: Option<PatchDecoder>,
    #[cfg(feature = "zstd")]
    frame: Frame,
}

impl Active {
    fn bad(&self) -> Error {
        Error::Decode { slice: self.slice }
    }

    /// Counts, bounds and hashes produced bytes, then hands them on.
    fn out(
        produced: &mut u64,
        hash: &mut Sha256,
        len: u64,
        bad: Error,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
        chunk: &[u8],
    ) -> Result<()> {
        *produced += chunk.len() as u64;
        if *produced > len {
            return Err(bad);
        }
        hash.update(chunk);
        sink(chunk)
    }
}

/// Reusable decoding state: the zstd decoder keeps its buffers across slices, and the slice
/// being decoded is held here between payload segments (no globals, no hidden state).
///
/// A slice is decoded in three calls, so a device can stream its payload in segments and never
/// hold more than one ([`Manifest::segment_log`]):
/// 1. [`begin`](Self::begin) with the slice's record;
/// 2. while [`next_segment_len`](Self::next_segment_len) is not 0, [`feed_segment`](Self::feed_segment)
///    with exactly that many payload bytes: the segment's SHA-256 is checked (against the signed
///    record for the first, against the previous segment's link after that) *before* any of
///    its bytes reach a decoder;
/// 3. [`end`](Self::end), which checks the slice's length and SHA-256.
///
/// An `Err` from any step means the slice's output already passed to the sink must be
/// discarded. [`decode_to`](Self::decode_to) and [`decode`](Self::decode) do all three for a
/// payload held whole.
#[derive(Default)]
pub struct SliceDecoder {
    #[cfg(feature = "zstd")]
    zstd: Option<alloc::boxed::Box<Zstd>>,
    active: Option<Active>,
}

/// The zstd decoder and its buffers, allocated once at the sizes the manifest sets
/// ([`crate::ram::zstd_heap`]) and never grown.
#[cfg(feature = "zstd")]
pub struct Zstd {
    dec: otapack_zstd::Decoder,
    /// The window and the block being decoded.
    ring: alloc::vec::Vec<u8>,
    /// A frame header or block (with its checksum) cut by a segment boundary, gathered here:
    /// at most one block unit, so its capacity is fixed.
    pending: alloc::vec::Vec<u8>,
    /// The manifest's window and largest block these buffers were sized for.
    window: usize,
    block: usize,
}

#[cfg(feature = "zstd")]
impl Zstd {
    /// The largest unit `pending` may gather: a block header, the block, a checksum.
    pub(crate) const fn pending_len(block: usize) -> usize {
        3 + block + 4
    }

    /// Buffers for a manifest's zstd window and block limit; `None` if the allocator cannot
    /// provide them.
    fn new(window: usize, block: usize) -> Option<Self> {
        let mut ring = alloc::vec::Vec::new();
        ring.try_reserve_exact(otapack_zstd::ring_len(window, block))
            .ok()?;
        ring.resize(otapack_zstd::ring_len(window, block), 0);
        let mut pending = alloc::vec::Vec::new();
        pending.try_reserve_exact(Self::pending_len(block)).ok()?;
        Some(Zstd {
            dec: otapack_zstd::Decoder::new(),
            ring,
            pending,
            window,
            block,
        })
    }
}

impl core::fmt::Debug for SliceDecoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SliceDecoder")
    }
}

/// Restricts `base` to `window` (kind 2) for one call.
macro_rules! windowed {
    ($base:ident, $window:expr, $slice:expr, $holder:ident) => {
        let mut $holder;
        let $base = match ($base, $window) {
            (Some(b), Some(w)) => {
                $holder = WindowedBase::new(b, w, $slice);
                Some(&mut $holder as &mut dyn BaseImage)
            }
            (b, _) => b.map(|b| &mut *b as &mut dyn BaseImage),
        };
    };
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

    /// Decodes slice `rec` from its whole `payload` and passes its bytes, in order and in
    /// pieces, to `sink`: [`begin`](Self::begin), every segment, [`end`](Self::end).
    pub fn decode_to(
        &mut self,
        manifest: &Manifest<'_>,
        rec: &SliceRecord<'_>,
        payload: &[u8],
        mut base: Option<&mut dyn BaseImage>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let slice = rec.index();
        if payload.len() as u64 != u64::from(rec.payload_len()) {
            return Err(Error::PayloadDigest { slice });
        }
        self.begin(manifest, rec)?;
        let mut rest = payload;
        loop {
            let n = self.next_segment_len();
            if n == 0 {
                break;
            }
            let (segment, tail) = rest
                .split_at_checked(n)
                .ok_or(Error::PayloadDigest { slice })?;
            let b = base.as_mut().map(|b| &mut **b as &mut dyn BaseImage);
            self.feed_segment(segment, b, sink)?;
            rest = tail;
        }
        self.end(base, sink)
    }

    /// Starts slice `rec` of `manifest` (a package already parsed and authenticated). Drops
    /// whatever an unfinished slice left.
    pub fn begin(&mut self, manifest: &Manifest<'_>, rec: &SliceRecord<'_>) -> Result<()> {
        let slice = rec.index();
        let window = (manifest.kind() == Kind::DeltaInPlace).then(|| manifest.read_window(slice));
        #[cfg(feature = "zstd")]
        if matches!(rec.method(), Method::Zstd | Method::Patch | Method::ZstdRef) {
            let wl = manifest.zstd_window_log();
            if !(MIN_WINDOW_LOG..=crate::wire::manifest::MAX_SLICE_LOG2).contains(&wl) {
                return Err(Error::MethodNotAllowed {
                    slice,
                    method: rec.method() as u8,
                });
            }
            let window = 1usize << wl;
            let block = crate::ram::zstd_block(wl, manifest.zstd_block_log()) as usize;
            match &mut self.zstd {
                Some(z) if z.window == window && z.block == block => z.pending.clear(),
                z => {
                    // Free the old buffers before taking new ones.
                    *z = None;
                    let needed = crate::ram::zstd_heap(wl, manifest.zstd_block_log());
                    let fresh = Zstd::new(window, block).ok_or(Error::OutOfMemory { needed })?;
                    *z = Some(alloc::boxed::Box::new(fresh));
                }
            }
        }
        self.active = Some(Active {
            slice,
            method: rec.method(),
            arg: rec.arg(),
            len: u64::from(manifest.slice_len(slice)),
            start: u64::from(slice) << manifest.slice_log2(),
            produced: 0,
            hash: Sha256::new(),
            slice_sha256: rec.slice_sha256(),
            expected: rec.payload_sha256(),
            expected_len: 32,
            left: u64::from(rec.payload_len()),
            segment: manifest.segment_size(),
            link: manifest.segment_link_len() as usize,
            window_log: manifest.zstd_window_log(),
            block_log: manifest.zstd_block_log(),
            window,
            patch: None,
            #[cfg(feature = "zstd")]
            frame: Frame::Header,
        });
        Ok(())
    }

    /// Bytes of the next payload segment of the slice begun, 0 when the whole payload was fed
    /// (or no slice is begun).
    pub fn next_segment_len(&self) -> usize {
        let Some(a) = &self.active else { return 0 };
        let n = if a.segment == 0 {
            a.left
        } else {
            a.left.min(a.segment)
        };
        usize::try_from(n).unwrap_or(usize::MAX)
    }

    /// Checks the next payload segment (exactly [`next_segment_len`](Self::next_segment_len)
    /// bytes) against its SHA-256, then decodes its data, passing output to `sink`.
    pub fn feed_segment(
        &mut self,
        segment: &[u8],
        base: Option<&mut dyn BaseImage>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let want = self.next_segment_len();
        let a = self.active.as_mut().ok_or(Error::WrongState {
            what: "no slice begun",
        })?;
        let slice = a.slice;
        if want == 0 || segment.len() != want {
            return Err(Error::PayloadDigest { slice });
        }
        let digest: [u8; 32] = Sha256::digest(segment).into();
        let n = a.expected_len;
        if digest.get(..n) != a.expected.get(..n) || n == 0 {
            return Err(Error::PayloadDigest { slice });
        }
        a.left -= segment.len() as u64;
        let data = if a.left > 0 {
            // Every segment but the last ends with its link: the next segment's SHA-256, or
            // its first `link` bytes (§5.5).
            let at = segment
                .len()
                .checked_sub(a.link)
                .ok_or(Error::PayloadDigest { slice })?;
            let (data, link) = segment.split_at(at);
            a.expected
                .get_mut(..link.len())
                .ok_or(Error::PayloadDigest { slice })?
                .copy_from_slice(link);
            a.expected_len = link.len();
            data
        } else {
            segment
        };
        windowed!(base, a.window.clone(), slice, holder);
        match a.method {
            Method::Raw => {
                let bad = a.bad();
                Active::out(&mut a.produced, &mut a.hash, a.len, bad, sink, data)
            }
            Method::Zstd | Method::Patch | Method::ZstdRef => self.zstd_feed(data, base, sink),
            // fill and copy have no payload: `next_segment_len` is 0 for them.
            Method::Fill | Method::Copy => Err(a.bad()),
        }
    }

    /// Finishes the slice begun: produces a fill or copy slice, checks that a zstd frame or
    /// patch ended, then the slice's length and SHA-256.
    pub fn end(
        &mut self,
        base: Option<&mut dyn BaseImage>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut a = self.active.take().ok_or(Error::WrongState {
            what: "no slice begun",
        })?;
        let bad = a.bad();
        if a.left != 0 {
            return Err(bad);
        }
        let slice = a.slice;
        let (method, arg) = (a.method, a.arg);
        windowed!(base, a.window.clone(), slice, holder);
        let Active {
            produced,
            hash,
            len,
            ..
        } = &mut a;
        let len = *len;
        let mut out = |chunk: &[u8]| Active::out(produced, hash, len, bad, sink, chunk);
        match method {
            Method::Fill => {
                let block = [arg as u8; BLOCK];
                let mut left = len;
                while left > 0 {
                    let n = left.min(BLOCK as u64) as usize;
                    out(block.get(..n).unwrap_or(&[]))?;
                    left -= n as u64;
                }
            }
            Method::Copy => {
                let base = base.ok_or(Error::BaseRequired)?;
                let end = arg.checked_add(len).ok_or(bad)?;
                if end > base.len() {
                    return Err(bad);
                }
                let mut block = [0u8; BLOCK];
                let mut at = arg;
                while at < end {
                    let n = (end - at).min(BLOCK as u64) as usize;
                    let b = block.get_mut(..n).ok_or(bad)?;
                    base.read(at, b)?;
                    out(b)?;
                    at += n as u64;
                }
            }
            Method::Raw => {}
            Method::Zstd | Method::Patch | Method::ZstdRef => {
                #[cfg(feature = "zstd")]
                if a.frame != Frame::Done
                    || self.zstd.as_ref().is_some_and(|z| !z.pending.is_empty())
                {
                    return Err(bad); // a short frame
                }
                if let Some(p) = &a.patch {
                    p.finish()?;
                } else if method == Method::Patch {
                    return Err(bad);
                }
            }
        }
        if a.produced != len {
            return Err(bad);
        }
        let slice_digest: [u8; 32] = a.hash.finalize().into();
        if slice_digest != a.slice_sha256 {
            return Err(Error::SliceDigest { slice });
        }
        Ok(())
    }

    /// Feeds zstd frame bytes (a zstd slice's content, or a patch's op stream). Whole units (the
    /// frame header, then one block at a time) are decoded straight from `input`; a unit cut by
    /// a segment boundary is gathered in `pending` first, whose fixed capacity holds the
    /// largest unit the frame allows (its header is checked before any byte is kept).
    #[cfg(feature = "zstd")]
    fn zstd_feed(
        &mut self,
        mut input: &[u8],
        mut base: Option<&mut dyn BaseImage>,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let SliceDecoder { zstd, active } = self;
        let a = active.as_mut().ok_or(Error::WrongState {
            what: "no slice begun",
        })?;
        let bad = a.bad();
        let z = zstd.as_deref_mut().ok_or(bad)?;
        let Zstd {
            dec, ring, pending, ..
        } = z;
        loop {
            if a.frame == Frame::Done && a.method == Method::ZstdRef && a.produced < a.len {
                // A zstd-ref slice is a run of frames: the next one starts here.
                a.frame = Frame::Header;
            }
            if a.frame == Frame::Done {
                if input.is_empty() && pending.is_empty() {
                    return Ok(());
                }
                return Err(bad); // bytes after the frame
            }
            if pending.is_empty() {
                match unit_len(a, dec, input)? {
                    Some(n) if n <= input.len() => {
                        let (unit, rest) = input.split_at(n);
                        decode_unit(
                            dec,
                            ring,
                            a,
                            unit,
                            base.as_mut().map(|b| &mut **b as _),
                            sink,
                        )?;
                        input = rest;
                    }
                    _ => {
                        // An incomplete unit: shorter than its header says, and its header
                        // was bounded, so it fits `pending`.
                        gather(pending, input, bad)?;
                        return Ok(());
                    }
                }
            } else {
                let probe = if a.frame == Frame::Header {
                    FRAME_PROBE
                } else {
                    BLOCK_HEADER
                };
                let need = unit_len(a, dec, pending)?.unwrap_or(probe);
                let take = need.saturating_sub(pending.len()).min(input.len());
                let (head, rest) = input.split_at(take);
                gather(pending, head, bad)?;
                input = rest;
                if pending.len() < need {
                    return Ok(()); // all input taken; the unit waits for the next segment
                }
                if let Some(n) = unit_len(a, dec, pending)? {
                    if pending.len() == n {
                        decode_unit(
                            dec,
                            ring,
                            a,
                            pending,
                            base.as_mut().map(|b| &mut **b as _),
                            sink,
                        )?;
                        pending.clear();
                    }
                }
            }
        }
    }

    #[cfg(not(feature = "zstd"))]
    fn zstd_feed(
        &mut self,
        _: &[u8],
        _: Option<&mut dyn BaseImage>,
        _: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let slice = self.active.as_ref().map_or(0, |a| a.slice);
        Err(Error::CodecUnavailable { slice })
    }
}

/// Appends `bytes` to `pending` within its fixed capacity (never reallocating).
#[cfg(feature = "zstd")]
fn gather(pending: &mut alloc::vec::Vec<u8>, bytes: &[u8], bad: Error) -> Result<()> {
    if pending.capacity() - pending.len() < bytes.len() {
        return Err(bad);
    }
    pending.extend_from_slice(bytes);
    Ok(())
}

/// The length of the next zstd unit at the start of `buf` (the frame header, or a block with
/// its header and, for the last block, the checksum that follows), once `buf` holds enough of
/// it to tell; `None` before that. Checks what it reads: the frame header's descriptor, and
/// a block's header against the frame's largest block.
#[cfg(feature = "zstd")]
fn unit_len(a: &Active, dec: &otapack_zstd::Decoder, buf: &[u8]) -> Result<Option<usize>> {
    let bad = a.bad();
    match a.frame {
        Frame::Header => {
            let Some(&[m0, m1, m2, m3, fhd]) = buf.get(..FRAME_PROBE) else {
                return Ok(None);
            };
            if [m0, m1, m2, m3] != otapack_zstd::MAGIC {
                return Err(bad); // not a zstd frame (a skippable frame included)
            }
            // The reserved bit must be clear, no dictionary, and the content size must be
            // declared (as libzstd requires of the same frame).
            let content_size_present = fhd >> 6 != 0 || fhd & 0x20 != 0;
            if fhd & 0x08 != 0 || fhd & 0x03 != 0 || !content_size_present {
                return Err(bad);
            }
            Ok(Some(otapack_zstd::FrameHeader::len_for(fhd)))
        }
        Frame::Blocks { checksum, .. } => {
            let Some(n) = dec.block_len(buf).map_err(|_| bad)? else {
                return Ok(None);
            };
            let last = buf.first().is_some_and(|h| h & 1 != 0);
            Ok(Some(n + if last && checksum { 4 } else { 0 }))
        }
        Frame::Done => Err(bad),
    }
}

/// A `zstd-ref` slice's prefix: its base range, read through the base image, keeping the
/// base's own error for the caller.
#[cfg(feature = "zstd")]
struct RefPrefix<'b> {
    base: &'b mut dyn BaseImage,
    start: u64,
    failed: Option<Error>,
}

#[cfg(feature = "zstd")]
impl otapack_zstd::Prefix for RefPrefix<'_> {
    fn read(&mut self, at: u64, buf: &mut [u8]) -> core::result::Result<(), otapack_zstd::Error> {
        let at = self.start.saturating_add(at);
        self.base.read(at, buf).map_err(|e| {
            self.failed = Some(e);
            otapack_zstd::Error::Prefix
        })
    }
}

/// Decodes one whole unit (see [`unit_len`]) and passes what it produced on: to the patch
/// decoder for a patch slice, else to the slice's output.
#[cfg(feature = "zstd")]
fn decode_unit(
    dec: &mut otapack_zstd::Decoder,
    ring: &mut [u8],
    a: &mut Active,
    unit: &[u8],
    base: Option<&mut dyn BaseImage>,
    sink: &mut dyn FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let slice = a.slice;
    let bad = a.bad();
    match a.frame {
        Frame::Header => {
            if a.window_log == 0 {
                return Err(Error::MethodNotAllowed {
                    slice,
                    method: a.method as u8,
                });
            }
            let header = otapack_zstd::FrameHeader::parse(unit)
                .map_err(|_| bad)?
                .filter(|h| h.len == unit.len())
                .ok_or(bad)?;
            let block = crate::ram::zstd_block(a.window_log, a.block_log) as usize;
            let window = 1u64 << a.window_log;
            let begun = if a.method == Method::ZstdRef {
                let (_, prefix) = crate::wire::slice::ref_region(a.arg);
                dec.begin_frame_with_prefix(&header, window, block, ring.len(), prefix)
            } else {
                dec.begin_frame(&header, window, block, ring.len())
            };
            begun.map_err(|e| match e {
                otapack_zstd::Error::WindowTooLarge { .. } => Error::WindowTooLarge { slice },
                _ => bad,
            })?;
            let declared = header.content_size.ok_or(bad)?;
            // A zstd slice declares exactly its length; a patch's op stream is bounded; a
            // zstd-ref frame holds some of what the slice still lacks (and at most the
            // window, which `begin_frame_with_prefix` checked).
            let ok = match a.method {
                Method::Zstd => declared == a.len,
                Method::ZstdRef => declared > 0 && declared <= a.len.saturating_sub(a.produced),
                _ => declared <= crate::patch::MAX_STREAM_FACTOR * a.len,
            };
            if !ok {
                return Err(bad);
            }
            a.frame = Frame::Blocks {
                declared,
                checksum: header.checksum,
            };
            Ok(())
        }
        Frame::Blocks { declared, checksum } => {
            let last = unit.first().is_some_and(|h| h & 1 != 0);
            let tail = if last && checksum { 4 } else { 0 };
            let (block, trailer) = unit
                .split_at_checked(unit.len().saturating_sub(tail))
                .ok_or(bad)?;
            let mut base = base;
            let out = if a.method == Method::ZstdRef {
                let base = base.as_mut().ok_or(Error::BaseRequired)?;
                let (start, _) = crate::wire::slice::ref_region(a.arg);
                let mut prefix = RefPrefix {
                    base: &mut **base,
                    start,
                    failed: None,
                };
                let out = dec.decode_block_with(ring, block, Some(&mut prefix));
                if let Some(e) = prefix.failed {
                    return Err(e); // the base read's own error (flash, window)
                }
                out
            } else {
                dec.decode_block(ring, block)
            }
            .map_err(|_| bad)?;
            if out.last != last {
                return Err(bad);
            }
            if dec.produced() > declared {
                return Err(bad); // more than the frame declared
            }
            for piece in [out.first, out.second] {
                if piece.is_empty() {
                    continue;
                }
                let Active {
                    produced: out_produced,
                    hash,
                    len,
                    patch,
                    method,
                    arg,
                    start,
                    ..
                } = &mut *a;
                let len = *len;
                let mut out = |c: &[u8]| Active::out(out_produced, hash, len, bad, sink, c);
                if *method == Method::Patch {
                    let base = base.as_mut().ok_or(Error::BaseRequired)?;
                    let p = match patch {
                        Some(p) => p,
                        None => patch.insert(
                            PatchDecoder::with_format(*arg, slice, *start, len, base.len())
                                .ok_or(bad)?,
                        ),
                    };
                    p.feed(piece, &mut **base, &mut out)?;
                } else {
                    out(piece)?;
                }
            }
            if last {
                if dec.produced() != declared {
                    return Err(bad); // a short frame
                }
                if let Ok(sum) = <[u8; 4]>::try_from(trailer) {
                    if u32::from_le_bytes(sum) != dec.checksum() {
                        return Err(bad);
                    }
                }
                a.frame = Frame::Done;
            }
            Ok(())
        }
        Frame::Done => Err(bad),
    }
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
