//! The device applier: a package pushed in chunks of any size (as a download arrives, or read
//! back from a staging partition) becomes the new image in a destination slot on NOR flash, in
//! bounded RAM. All state lives in the caller-owned [`Applier`] (no globals), so a C bootloader
//! can drive it through a C API.
//!
//! RAM: three caller-provided buffers and the codec's window, never anything proportional to the
//! image or the slice count:
//!
//! | buffer     | size                                                      | holds |
//! |------------|-----------------------------------------------------------|-------|
//! | `manifest` | >= 32 + `manifest_len` ([`Applier::manifest_buffer_len`]) | header and manifest, until the signatures are checked, then the slice records |
//! | `payload`  | >= the largest slice payload ([`Applier::payload_buffer_len`], at most the slice size) | one slice payload, whose SHA-256 is checked before it is decoded |
//! | `write`    | a non-zero multiple of the flash's `WRITE_SIZE`            | flash programming |
//!
//! plus the zstd decoder's heap when a slice is `zstd` or `patch`: allocated once, exactly
//! [`crate::ram::zstd_heap`] (the window, twice the largest block, 9.5 KiB of tables).
//!
//! What is checked before what:
//!
//! | step | input consumed                 | checked before going on                                       | flash |
//! |------|--------------------------------|---------------------------------------------------------------|-------|
//! | 1    | header (32 bytes)              | magic, version, lengths; manifest fits the buffer             | untouched |
//! | 2    | manifest                       | every manifest rule; largest payload fits the buffer; image fits the slot | untouched |
//! | 3    | signature block                | each signature from a trusted key verifies; the policy holds  | untouched |
//! | 4    | (none)                         | delta kinds: base image size and SHA-256                      | untouched |
//! | 5    | each slice payload, in order   | payload SHA-256 (against the signed manifest), *then* decode  | the slice is written as it decodes; its SHA-256 is checked at its end, then the slice is read back from flash and checked again ([`Event::SliceDone`]) |
//! | 6    | trailer (28 bytes)             | whole-image SHA-256 (of the stream; skipped after a resume), trailer MD5 over all bytes before it (skipped after a [`jump`](Applier::jump)) | nothing more |
//! | 7    | [`Applier::finish`]            | the whole image read back from flash matches the manifest's SHA-256 | untouched |
//!
//! Nothing reaches flash before the manifest is authenticated and the slice's payload matched
//! its signed digest. A slice whose decoded output then fails its digest (a decoder fault) stops
//! the update with an error; the destination slot must not be activated unless
//! [`Applier::finish`] returned `Ok` (two-slot updates: the running image is never touched).
//!
//! An in-place delta (kind 2) is accepted too and applied here as a two-slot update, in slice
//! index order: its base stays intact, and the decoder still holds each slice to its read
//! window. Overwriting the base in its own slot is a different loop (scratch sector, apply
//! order, power-fail state).

use crate::decode::SliceDecoder;
use crate::error::{Error, Result};
use crate::keys::{check_entry, TrustedKey};
use crate::package::signed_message;
use crate::patch::BaseImage;
use crate::verify::{check_base, Policy, SignatureSummary, SignatureTally};
use crate::wire::header::{Header, HEADER_LEN};
use crate::wire::manifest::{Kind, Manifest};
use crate::wire::sigblock::{
    Algorithm, SignatureEntry, BLOCK_HEAD_LEN, ENTRY_HEAD_LEN, MAX_SIGNATURES,
};
use crate::wire::trailer::{Trailer, TRAILER_LEN};
use crate::wire::{digest_at, le_u16};
use embedded_storage::nor_flash::NorFlash;
use md5::Md5;
use sha2::{Digest, Sha256};

/// The longest signature this applier checks (RSA-4096).
const MAX_SIG_LEN: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Header,
    Manifest,
    SigHead,
    EntryHead,
    /// Buffering a signature to check (true) or skipping an untrusted one (false).
    EntryBody(bool),
    Payload,
    Trailer,
    Done,
    Failed(Error),
}

/// Something the caller may act on, returned by [`Applier::push_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The header, manifest and signatures are checked and the policy holds (and, for delta
    /// kinds, the base image matched); nothing has been written yet. The caller may check the
    /// [manifest](Applier::manifest) against the device, record the update, and
    /// [resume](Applier::resume_from) before any flash write.
    Authenticated,
    /// Slice `n` is in flash, read back and matched its digest.
    SliceDone(u32),
}

/// Where the applier is, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Package bytes consumed so far.
    pub consumed: u64,
    /// Slices written and verified so far, of `slice_count`.
    pub slices_done: u32,
    pub slice_count: u32,
}

impl Progress {
    /// 0-100, by slices written (0 until the manifest is known).
    pub fn percent(&self) -> u8 {
        if self.slice_count == 0 {
            return 0;
        }
        (u64::from(self.slices_done) * 100 / u64::from(self.slice_count)) as u8
    }
}

/// Bytes the payload buffer needs for this manifest: its largest payload segment (the largest
/// payload when payloads are not segmented, [`Manifest::segment_log`]).
pub fn payload_buffer_len(manifest: &Manifest<'_>) -> usize {
    let segment = manifest.segment_size();
    manifest
        .slices()
        .map(|r| {
            let len = u64::from(r.payload_len());
            let n = if segment == 0 { len } else { len.min(segment) };
            usize::try_from(n).unwrap_or(usize::MAX)
        })
        .max()
        .unwrap_or(0)
}

/// Streams a package into a destination slot. See the module documentation.
pub struct Applier<'a, F: NorFlash> {
    trusted: &'a [TrustedKey],
    policy: Policy,
    manifest_buf: &'a mut [u8],
    payload_buf: &'a mut [u8],
    write_buf: &'a mut [u8],
    flash: F,
    base: Option<&'a mut dyn BaseImage>,
    decoder: SliceDecoder,

    step: Step,
    /// Bytes gathered for the current step (header, manifest, entry head, payload, trailer).
    have: usize,
    consumed: u64,
    manifest_len: usize,
    payload_len: u32,
    md5: Md5,
    /// Bytes fed to the MD5: everything before the trailer.
    md5_len: u64,
    image: Sha256,
    tally: SignatureTally,
    summary: SignatureSummary,
    message: [u8; 64],
    sig_count: usize,
    sig_index: usize,
    seen_ids: [[u8; 32]; MAX_SIGNATURES],
    entry_head: [u8; ENTRY_HEAD_LEN],
    entry_len: usize,
    sig: [u8; MAX_SIG_LEN],
    trailer: [u8; TRAILER_LEN],
    slice: u32,
    slice_count: u32,
    out: FlashOut,
    /// SHA-256 of header and manifest (the package id), once the manifest is in.
    package_id: [u8; 32],
    device: Option<crate::policy::DeviceInfo<'a>>,
    /// An event waiting to be returned by `push_step`.
    event: Option<Event>,
    /// Payload bytes to drop before the next slice's payload (after `resume_from`).
    skip: u64,
    /// Slices before this one were written by an earlier session.
    resumed_at: Option<u32>,
    /// The caller jumped over part of the package (the trailer MD5 cannot be checked).
    jumped: bool,
    /// Check everything, write nothing (see [`Applier::set_verify_only`]).
    verify_only: bool,
    /// The decoder has begun slice `slice`.
    begun: bool,
}

/// Programs the destination slot sequentially through the write buffer, erasing each sector
/// the first time it is touched.
#[derive(Debug, Default)]
pub(crate) struct FlashOut {
    /// Image bytes accepted so far (written or in the write buffer).
    pub(crate) pos: u64,
    /// Bytes in the write buffer.
    pub(crate) fill: usize,
    /// Everything below this offset is erased (or already written).
    pub(crate) erased_to: u64,
}

/// A base image read from flash (the running slot): `len` bytes from offset 0. Patches read
/// at any offset, so the flash's `READ_SIZE` must be 1.
pub struct FlashBase<'f, F: embedded_storage::nor_flash::ReadNorFlash> {
    flash: &'f mut F,
    len: u64,
}

impl<'f, F: embedded_storage::nor_flash::ReadNorFlash> FlashBase<'f, F> {
    pub fn new(flash: &'f mut F, len: u64) -> Result<Self> {
        if F::READ_SIZE != 1 || len > flash.capacity() as u64 {
            return Err(Error::BaseRead);
        }
        Ok(FlashBase { flash, len })
    }
}

impl<F: embedded_storage::nor_flash::ReadNorFlash> BaseImage for FlashBase<'_, F> {
    fn len(&self) -> u64 {
        self.len
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(Error::BaseRead)?;
        if end > self.len {
            return Err(Error::BaseRead);
        }
        let at = u32::try_from(offset).map_err(|_| Error::BaseRead)?;
        self.flash.read(at, buf).map_err(|_| Error::BaseRead)
    }
}

/// The SHA-256 of `len` bytes of `flash` from `start`, read through `buf`.
pub(crate) fn read_back<F: NorFlash>(
    flash: &mut F,
    buf: &mut [u8],
    start: u64,
    len: u64,
) -> Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut off = start;
    let end = start.checked_add(len).ok_or(Error::SlotTooSmall)?;
    // Reads cover whole READ_SIZE units; the hash takes only the image bytes.
    let unit = F::READ_SIZE.max(1);
    let step = (buf.len() / unit) * unit;
    if step == 0 {
        return Err(Error::BufferTooSmall {
            needed: unit as u64,
        });
    }
    while off < end {
        let n = ((end - off) as usize).min(step);
        let padded = n.div_ceil(unit) * unit;
        let at = u32::try_from(off).map_err(|_| Error::SlotTooSmall)?;
        let chunk = buf.get_mut(..padded).ok_or(Error::Output)?;
        flash.read(at, chunk).map_err(|_| Error::Output)?;
        h.update(chunk.get(..n).unwrap_or(&[]));
        off += n as u64;
    }
    Ok(h.finalize().into())
}

impl FlashOut {
    pub(crate) fn put<F: NorFlash>(
        &mut self,
        flash: &mut F,
        wbuf: &mut [u8],
        mut data: &[u8],
    ) -> Result<()> {
        while !data.is_empty() {
            let room = wbuf.len() - self.fill;
            let n = room.min(data.len());
            let (head, rest) = data.split_at(n);
            wbuf.get_mut(self.fill..self.fill + n)
                .ok_or(Error::Output)?
                .copy_from_slice(head);
            self.fill += n;
            self.pos += n as u64;
            data = rest;
            if self.fill == wbuf.len() {
                self.program(flash, wbuf, wbuf.len())?;
            }
        }
        Ok(())
    }

    /// Writes the first `len` bytes of the write buffer at the block's place.
    fn program<F: NorFlash>(&mut self, flash: &mut F, wbuf: &mut [u8], len: usize) -> Result<()> {
        let at = self.pos - self.fill as u64;
        let end = at + len as u64;
        if end > flash.capacity() as u64 {
            return Err(Error::SlotTooSmall);
        }
        while self.erased_to < end {
            let from = u32::try_from(self.erased_to).map_err(|_| Error::SlotTooSmall)?;
            let to = from
                .checked_add(F::ERASE_SIZE as u32)
                .ok_or(Error::SlotTooSmall)?;
            flash.erase(from, to).map_err(|_| Error::Output)?;
            self.erased_to = u64::from(to);
        }
        let at32 = u32::try_from(at).map_err(|_| Error::SlotTooSmall)?;
        flash
            .write(at32, wbuf.get(..len).ok_or(Error::Output)?)
            .map_err(|_| Error::Output)?;
        self.fill = 0;
        Ok(())
    }

    /// Pads the last block with the erase value to the write size and programs it.
    pub(crate) fn flush<F: NorFlash>(
        &mut self,
        flash: &mut F,
        wbuf: &mut [u8],
        erase_value: u8,
    ) -> Result<()> {
        if self.fill == 0 {
            return Ok(());
        }
        let len = self.fill.div_ceil(F::WRITE_SIZE) * F::WRITE_SIZE;
        wbuf.get_mut(self.fill..len)
            .ok_or(Error::Output)?
            .fill(erase_value);
        self.program(flash, wbuf, len)
    }
}

impl<'a, F: NorFlash> Applier<'a, F> {
    /// An applier writing the image at offset 0 of `flash` (the destination slot). `base` is the
    /// image a delta package applies to (the running slot), if any.
    pub fn new(
        trusted: &'a [TrustedKey],
        policy: Policy,
        flash: F,
        base: Option<&'a mut dyn BaseImage>,
        manifest_buf: &'a mut [u8],
        payload_buf: &'a mut [u8],
        write_buf: &'a mut [u8],
    ) -> Result<Self> {
        if write_buf.is_empty()
            || F::WRITE_SIZE == 0
            || !write_buf.len().is_multiple_of(F::WRITE_SIZE)
        {
            return Err(Error::BufferTooSmall {
                needed: F::WRITE_SIZE as u64,
            });
        }
        if F::ERASE_SIZE == 0
            || write_buf.len() > F::ERASE_SIZE && !write_buf.len().is_multiple_of(F::ERASE_SIZE)
        {
            return Err(Error::BufferTooSmall {
                needed: F::ERASE_SIZE as u64,
            });
        }
        if manifest_buf.len() < HEADER_LEN {
            return Err(Error::BufferTooSmall {
                needed: HEADER_LEN as u64,
            });
        }
        Ok(Applier {
            trusted,
            policy,
            manifest_buf,
            payload_buf,
            write_buf,
            flash,
            base,
            decoder: SliceDecoder::new(),
            step: Step::Header,
            have: 0,
            consumed: 0,
            manifest_len: 0,
            payload_len: 0,
            md5: Md5::new(),
            md5_len: 0,
            image: Sha256::new(),
            tally: SignatureTally::default(),
            summary: SignatureSummary::default(),
            message: [0; 64],
            sig_count: 0,
            sig_index: 0,
            seen_ids: [[0; 32]; MAX_SIGNATURES],
            entry_head: [0; ENTRY_HEAD_LEN],
            entry_len: 0,
            sig: [0; MAX_SIG_LEN],
            trailer: [0; TRAILER_LEN],
            slice: 0,
            slice_count: 0,
            out: FlashOut::default(),
            package_id: [0; 32],
            device: None,
            event: None,
            skip: 0,
            resumed_at: None,
            jumped: false,
            verify_only: false,
            begun: false,
        })
    }

    /// Bytes the manifest buffer needs for a package whose header is `header` (32 bytes).
    pub fn manifest_buffer_len(header: &[u8]) -> Result<usize> {
        let h = Header::new_checked(header)?;
        let needed = HEADER_LEN as u64 + u64::from(h.manifest_len());
        usize::try_from(needed).map_err(|_| Error::BufferTooSmall { needed })
    }

    /// Bytes the payload buffer needs for this manifest ([`payload_buffer_len`]).
    pub fn payload_buffer_len(manifest: &Manifest<'_>) -> usize {
        payload_buffer_len(manifest)
    }

    pub fn progress(&self) -> Progress {
        Progress {
            consumed: self.consumed,
            slices_done: self.slice,
            slice_count: self.slice_count,
        }
    }

    /// The manifest, once it has been received (authenticated once past the signatures).
    pub fn manifest(&self) -> Option<Manifest<'_>> {
        if matches!(self.step, Step::Header | Step::Manifest) || self.manifest_len == 0 {
            return None;
        }
        let bytes = self
            .manifest_buf
            .get(HEADER_LEN..HEADER_LEN + self.manifest_len)?;
        Some(Manifest::new_unchecked(bytes))
    }

    /// Consumes the next piece of the package. After an error every further call returns it.
    /// Events are not reported (see [`Applier::push_step`]).
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<()> {
        loop {
            let (used, event) = self.push_step(chunk)?;
            chunk = chunk.get(used..).unwrap_or(&[]);
            if chunk.is_empty() && event.is_none() {
                return Ok(());
            }
        }
    }

    /// Consumes the next piece of the package up to the next [`Event`]: returns the bytes used
    /// and the event, if one happened (call again with the rest). After an error every further
    /// call returns it.
    pub fn push_step(&mut self, chunk: &[u8]) -> Result<(usize, Option<Event>)> {
        if let Step::Failed(e) = self.step {
            return Err(e);
        }
        match self.push_inner(chunk) {
            Ok(used) => Ok((used, self.event.take())),
            Err(e) => {
                self.step = Step::Failed(e);
                Err(e)
            }
        }
    }

    /// Checks the whole package and writes nothing: every slice is decoded and its digest
    /// checked, the image digest and the trailer MD5 too, and `finish` returns `Ok` only if all
    /// hold. The flash is not touched (not even for the slot-size check). Used to verify a
    /// staged in-place package before the running image is touched. Call before the first push.
    pub fn set_verify_only(&mut self) {
        self.verify_only = true;
    }

    /// Checks the manifest against the device, right after the signatures (before any write).
    /// See [`crate::policy`].
    pub fn set_device(&mut self, device: crate::policy::DeviceInfo<'a>) {
        self.device = Some(device);
    }

    /// The SHA-256 of header and manifest (what the signatures cover): identifies the package.
    /// Valid once the manifest is in.
    pub fn package_id(&self) -> Option<[u8; 32]> {
        self.manifest().map(|_| self.package_id)
    }

    /// Continues an update that an earlier session left after `slices_done` slices (all
    /// written, read back and verified, as recorded by the caller). Only right after
    /// [`Event::Authenticated`]. The payload bytes of those slices are then skipped: push them
    /// (they are hashed for the trailer MD5 and dropped), or [`jump`](Applier::jump) to
    /// [`wanted_offset`](Applier::wanted_offset) and push from there. The slice size must be a
    /// multiple of the flash's erase size, so the first slice redone erases only its own
    /// sectors.
    pub fn resume_from(&mut self, slices_done: u32) -> Result<()> {
        let m = self.manifest().ok_or(Error::WrongState {
            what: "resume before the manifest",
        })?;
        if self.step != Step::Payload || self.slice != 0 || self.have != 0 || self.skip != 0 {
            return Err(Error::WrongState {
                what: "resume only right after authentication",
            });
        }
        if slices_done > m.slice_count() {
            return Err(Error::WrongState {
                what: "more slices done than the package has",
            });
        }
        if F::ERASE_SIZE == 0 || !(m.slice_size() as usize).is_multiple_of(F::ERASE_SIZE) {
            return Err(Error::WrongState {
                what: "resume needs slices that are whole erase sectors",
            });
        }
        let skip = match m.slice(slices_done) {
            Some(r) => u64::from(r.payload_offset()),
            None => u64::from(self.payload_len),
        };
        let pos = u64::from(slices_done) << m.slice_log2();
        self.skip = skip;
        self.slice = slices_done;
        self.out = FlashOut {
            pos,
            fill: 0,
            erased_to: pos,
        };
        self.resumed_at = Some(slices_done);
        self.begun = false;
        Ok(())
    }

    /// The package offset of the next byte the applier needs, when it is past what was pushed
    /// (after [`resume_from`](Applier::resume_from)): ask the server for the package from there
    /// (HTTP Range) and call [`jump`](Applier::jump).
    pub fn wanted_offset(&self) -> Option<u64> {
        (self.skip > 0).then_some(self.consumed + self.skip)
    }

    /// The next bytes pushed start at package offset `offset`, which must be
    /// [`wanted_offset`](Applier::wanted_offset). The trailer MD5 (a transport checksum) is then
    /// not checked; the signatures and every digest still are.
    pub fn jump(&mut self, offset: u64) -> Result<()> {
        if self.wanted_offset() != Some(offset) {
            return Err(Error::WrongState {
                what: "jump to an offset the applier did not ask for",
            });
        }
        self.consumed = offset;
        self.md5_len = offset;
        self.skip = 0;
        self.jumped = true;
        Ok(())
    }

    /// Whether the trailer MD5 is checked (false after a [`jump`](Applier::jump)).
    pub fn md5_checked(&self) -> bool {
        !self.jumped
    }

    /// Ends the update: `Ok` only if the whole package arrived and every check passed, and the
    /// image is completely written. Only then may the slot be activated.
    ///
    /// Before it returns `Ok`, the whole image is read back from flash and its SHA-256 checked
    /// against the manifest, so slices written by an earlier, interrupted session count only if
    /// they are still intact.
    pub fn finish(mut self) -> Result<SignatureSummary> {
        match self.step {
            Step::Done => {
                if self.verify_only {
                    // The stream hash of every slice was checked against the image digest.
                    return Ok(self.summary);
                }
                let erase_value = self.erase_value();
                self.out
                    .flush(&mut self.flash, self.write_buf, erase_value)?;
                let (size, expected) = {
                    let m = self
                        .manifest()
                        .ok_or(Error::Truncated { what: "manifest" })?;
                    (m.image_size(), m.image_sha256())
                };
                let digest = read_back(&mut self.flash, self.write_buf, 0, size)?;
                if digest != expected {
                    return Err(Error::ImageDigest);
                }
                Ok(self.summary)
            }
            Step::Failed(e) => Err(e),
            _ => Err(Error::Truncated { what: "package" }),
        }
    }

    fn erase_value(&self) -> u8 {
        self.manifest().map_or(0xFF, |m| m.erase_value())
    }

    /// Copies up to `want - have` bytes of `input` into `dst[have..want]`; returns the rest.
    fn gather<'i>(
        dst: &mut [u8],
        have: &mut usize,
        want: usize,
        input: &'i [u8],
    ) -> Result<&'i [u8]> {
        let n = (want - *have).min(input.len());
        let (head, rest) = input.split_at(n);
        dst.get_mut(*have..*have + n)
            .ok_or(Error::Malformed { what: "buffer" })?
            .copy_from_slice(head);
        *have += n;
        Ok(rest)
    }

    fn push_inner(&mut self, mut input: &[u8]) -> Result<usize> {
        let total = input.len();
        loop {
            if self.event.is_some() {
                break;
            }
            // Starting a slice, ending one (after its last segment, or at once for a fill or
            // copy) and the end of the payloads need no input.
            if self.step == Step::Payload && self.skip == 0 {
                if !self.begun {
                    self.begin_slice()?;
                    continue;
                }
                if self.decoder.next_segment_len() == 0 {
                    self.end_slice()?;
                    continue;
                }
            }
            if input.is_empty() {
                break;
            }
            let start = input;
            let step = self.step;
            match step {
                Step::Header => {
                    input = Self::gather(self.manifest_buf, &mut self.have, HEADER_LEN, input)?;
                    if self.have == HEADER_LEN {
                        self.on_header()?;
                    }
                }
                Step::Manifest => {
                    let want = HEADER_LEN + self.manifest_len;
                    input = Self::gather(self.manifest_buf, &mut self.have, want, input)?;
                    if self.have == want {
                        self.on_manifest()?;
                    }
                }
                Step::SigHead => {
                    input =
                        Self::gather(&mut self.entry_head, &mut self.have, BLOCK_HEAD_LEN, input)?;
                    if self.have == BLOCK_HEAD_LEN {
                        self.on_sig_head()?;
                    }
                }
                Step::EntryHead => {
                    input =
                        Self::gather(&mut self.entry_head, &mut self.have, ENTRY_HEAD_LEN, input)?;
                    if self.have == ENTRY_HEAD_LEN {
                        self.on_entry_head()?;
                    }
                }
                Step::EntryBody(check) => {
                    if check {
                        input = Self::gather(&mut self.sig, &mut self.have, self.entry_len, input)?;
                    } else {
                        let n = (self.entry_len - self.have).min(input.len());
                        self.have += n;
                        input = input.get(n..).unwrap_or(&[]);
                    }
                    if self.have == self.entry_len {
                        self.on_entry_body(check)?;
                    }
                }
                Step::Payload if self.skip > 0 => {
                    // Payloads of slices an earlier session finished: hashed (MD5), dropped.
                    let n = self.skip.min(input.len() as u64) as usize;
                    self.skip -= n as u64;
                    input = input.get(n..).unwrap_or(&[]);
                }
                Step::Payload => {
                    let want = self.decoder.next_segment_len();
                    if want > self.payload_buf.len() {
                        return Err(Error::BufferTooSmall {
                            needed: want as u64,
                        });
                    }
                    input = Self::gather(self.payload_buf, &mut self.have, want, input)?;
                    if self.have == want {
                        self.on_segment()?;
                    }
                }
                Step::Trailer => {
                    input = Self::gather(&mut self.trailer, &mut self.have, TRAILER_LEN, input)?;
                    if self.have == TRAILER_LEN {
                        self.on_trailer()?;
                    }
                }
                Step::Done => {
                    return Err(Error::LengthMismatch {
                        what: "package",
                        expected: self.consumed,
                        actual: self.consumed + input.len() as u64,
                    })
                }
                Step::Failed(e) => return Err(e),
            }
            let used = start.len() - input.len();
            if step != Step::Trailer {
                // The trailer's MD5 covers every byte before the trailer.
                self.md5.update(start.get(..used).unwrap_or(&[]));
                self.md5_len += used as u64;
            }
            self.consumed += used as u64;
        }
        Ok(total - input.len())
    }

    fn on_header(&mut self) -> Result<()> {
        let h = Header::new_checked(self.manifest_buf)?;
        self.manifest_len = h.manifest_len() as usize;
        self.payload_len = h.payload_len();
        let needed = HEADER_LEN as u64 + u64::from(h.manifest_len());
        if needed > self.manifest_buf.len() as u64 {
            return Err(Error::BufferTooSmall { needed });
        }
        self.step = Step::Manifest;
        Ok(())
    }

    fn on_manifest(&mut self) -> Result<()> {
        let bytes = self
            .manifest_buf
            .get(..HEADER_LEN + self.manifest_len)
            .ok_or(Error::Truncated { what: "manifest" })?;
        let (head, body) = bytes.split_at(HEADER_LEN);
        let h = Header::new_checked(head)?;
        let m = Manifest::new_checked(body, h.format_version(), self.payload_len)?;
        if !(m.slice_size() as usize).is_multiple_of(F::WRITE_SIZE) {
            return Err(Error::BufferTooSmall {
                needed: F::WRITE_SIZE as u64,
            });
        }
        let needed = Self::payload_buffer_len(&m);
        if needed > self.payload_buf.len() {
            return Err(Error::BufferTooSmall {
                needed: needed as u64,
            });
        }
        let image_end = m.image_size().div_ceil(F::WRITE_SIZE as u64) * F::WRITE_SIZE as u64;
        if !self.verify_only && image_end > self.flash.capacity() as u64 {
            return Err(Error::SlotTooSmall);
        }
        self.slice_count = m.slice_count();
        self.package_id = Sha256::digest(bytes).into();
        self.message = signed_message(&self.package_id);
        self.have = 0;
        self.step = Step::SigHead;
        Ok(())
    }

    fn on_sig_head(&mut self) -> Result<()> {
        let count = usize::from(le_u16(&self.entry_head, 0));
        if count > MAX_SIGNATURES {
            return Err(Error::Malformed {
                what: "more than 16 signatures",
            });
        }
        if le_u16(&self.entry_head, 2) != 0 {
            return Err(Error::Malformed {
                what: "reserved signature block bytes are not zero",
            });
        }
        self.sig_count = count;
        self.have = 0;
        self.step = Step::EntryHead;
        self.after_entry()
    }

    fn on_entry_head(&mut self) -> Result<()> {
        let id = digest_at(&self.entry_head, 0);
        let alg = Algorithm::from_u16(le_u16(&self.entry_head, 32));
        let len = usize::from(le_u16(&self.entry_head, 34));
        if !alg.sig_len_ok(len) {
            return Err(Error::Malformed {
                what: "signature length does not fit its algorithm",
            });
        }
        if self
            .seen_ids
            .get(..self.sig_index)
            .unwrap_or(&[])
            .contains(&id)
        {
            return Err(Error::DuplicateSignature);
        }
        if let Some(slot) = self.seen_ids.get_mut(self.sig_index) {
            *slot = id;
        }
        self.entry_len = len;
        self.have = 0;
        // Buffer it only if it names a trusted key (its check decides); skip the rest.
        let check = self.trusted.iter().any(|k| k.id() == id) && len <= MAX_SIG_LEN;
        self.step = Step::EntryBody(check);
        Ok(())
    }

    fn on_entry_body(&mut self, checked: bool) -> Result<()> {
        let id = digest_at(&self.entry_head, 0);
        let algorithm = Algorithm::from_u16(le_u16(&self.entry_head, 32));
        let signature = if checked {
            self.sig.get(..self.entry_len).unwrap_or(&[])
        } else {
            &[]
        };
        let entry = SignatureEntry {
            key_id: id,
            algorithm,
            signature,
        };
        let (status, key) = check_entry(&entry, &self.message, self.trusted);
        self.tally.add(&id, status, key)?;
        self.sig_index += 1;
        self.have = 0;
        self.step = Step::EntryHead;
        self.after_entry()
    }

    /// After the last signature entry: apply the policy, check the base, start the payloads.
    fn after_entry(&mut self) -> Result<()> {
        if self.sig_index < self.sig_count {
            return Ok(());
        }
        self.summary = self.tally.finish(&self.policy)?;
        let (kind, base_size, base_sha256) = {
            let m = self
                .manifest()
                .ok_or(Error::Truncated { what: "manifest" })?;
            if let Some(device) = &self.device {
                crate::policy::check_device(&m, device)?;
            }
            (m.kind(), m.base_size(), m.base_sha256())
        };
        if kind == Kind::Full {
            self.base = None;
        } else {
            let base = self.base.as_deref_mut().ok_or(Error::BaseRequired)?;
            // The base is hashed through whichever free buffer is larger: the payload buffer
            // may be empty (a delta of only copy and fill slices has no payload), and the
            // signature buffer is no longer needed.
            let scratch = if self.payload_buf.len() >= self.sig.len() {
                &mut *self.payload_buf
            } else {
                &mut self.sig[..]
            };
            check_base(base, base_size, &base_sha256, scratch)?;
        }
        self.have = 0;
        self.step = Step::Payload;
        self.event = Some(Event::Authenticated);
        Ok(())
    }

    /// Starts the next slice, or after the last one checks the image digest.
    fn begin_slice(&mut self) -> Result<()> {
        if self.slice == self.slice_count {
            let m = self
                .manifest()
                .ok_or(Error::Truncated { what: "manifest" })?;
            let expected = m.image_sha256();
            let digest: [u8; 32] = self.image.clone().finalize().into();
            // After a resume the stream hash misses the earlier slices: `finish` reads the
            // whole image back instead.
            if self.resumed_at.is_none() && digest != expected {
                return Err(Error::ImageDigest);
            }
            self.have = 0;
            self.step = Step::Trailer;
            return Ok(());
        }
        let manifest = Manifest::new_unchecked(
            self.manifest_buf
                .get(HEADER_LEN..HEADER_LEN + self.manifest_len)
                .unwrap_or(&[]),
        );
        let rec = manifest.slice(self.slice).ok_or(Error::Truncated {
            what: "slice record",
        })?;
        if self.out.pos != u64::from(rec.index()) << manifest.slice_log2() {
            return Err(Error::Malformed {
                what: "slice out of order",
            });
        }
        self.decoder.begin(&manifest, &rec)?;
        self.begun = true;
        self.have = 0;
        Ok(())
    }

    /// One payload segment is in the payload buffer: the decoder checks its digest, then
    /// decodes it straight to flash (or, verifying only, to the image hash).
    fn on_segment(&mut self) -> Result<()> {
        let Applier {
            payload_buf,
            write_buf,
            flash,
            base,
            decoder,
            out,
            image,
            have,
            verify_only,
            ..
        } = self;
        let segment = payload_buf
            .get(..*have)
            .ok_or(Error::Truncated { what: "payload" })?;
        let b = base.as_mut().map(|b| &mut **b as &mut dyn BaseImage);
        if *verify_only {
            decoder.feed_segment(segment, b, &mut |chunk| {
                image.update(chunk);
                out.pos += chunk.len() as u64;
                Ok(())
            })?;
        } else {
            decoder.feed_segment(segment, b, &mut |chunk| {
                image.update(chunk);
                out.put(flash, write_buf, chunk)
            })?;
        }
        *have = 0;
        Ok(())
    }

    /// The slice's payload is all in: the decoder finishes it (a fill or copy slice is produced
    /// here) and checks its digest; the slice is programmed and read back.
    fn end_slice(&mut self) -> Result<()> {
        let Applier {
            manifest_buf,
            write_buf,
            flash,
            base,
            decoder,
            out,
            image,
            ..
        } = self;
        let manifest = Manifest::new_unchecked(
            manifest_buf
                .get(HEADER_LEN..HEADER_LEN + self.manifest_len)
                .unwrap_or(&[]),
        );
        let rec = manifest.slice(self.slice).ok_or(Error::Truncated {
            what: "slice record",
        })?;
        let b = base.as_mut().map(|b| &mut **b as &mut dyn BaseImage);
        self.begun = false;
        if self.verify_only {
            decoder.end(b, &mut |chunk| {
                image.update(chunk);
                out.pos += chunk.len() as u64;
                Ok(())
            })?;
            self.slice += 1;
            self.have = 0;
            return Ok(());
        }
        decoder.end(b, &mut |chunk| {
            image.update(chunk);
            out.put(flash, write_buf, chunk)
        })?;
        // Program the slice's last bytes and read the slice back: it counts as done only once
        // flash holds exactly what the manifest promised.
        out.flush(flash, write_buf, manifest.erase_value())?;
        let start = u64::from(rec.index()) << manifest.slice_log2();
        let len = u64::from(manifest.slice_len(rec.index()));
        if read_back(flash, write_buf, start, len)? != rec.slice_sha256() {
            return Err(Error::Readback { offset: start });
        }
        self.event = Some(Event::SliceDone(self.slice));
        self.slice += 1;
        self.have = 0;
        Ok(())
    }

    fn on_trailer(&mut self) -> Result<()> {
        let total = self.md5_len + TRAILER_LEN as u64;
        let total = usize::try_from(total).map_err(|_| Error::Malformed {
            what: "package larger than 4 GiB",
        })?;
        let t = Trailer::new_checked(&self.trailer, total)?;
        let md5: [u8; 16] = self.md5.clone().finalize().into();
        if !self.jumped && md5 != t.md5() {
            return Err(Error::Md5Mismatch);
        }
        self.step = Step::Done;
        Ok(())
    }
}
