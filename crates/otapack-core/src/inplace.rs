//! Single-slot in-place delta updates (package kind 2) for devices with room for one image:
//! the package is downloaded whole into a staging area, verified completely, and only then is
//! the running image overwritten, slice by slice, through a scratch area, so that a power cut
//! at any moment resumes correctly.
//!
//! Flash areas (each an `embedded-storage` `NorFlash`): the *slot* (the running image, read
//! as the base and overwritten), the *staging* area (at least the package's size), the
//! *scratch* area (at least one slice, whole erase sectors) and the update *state* region
//! ([`crate::state`]). The slice size must be a multiple of the slot's and the scratch's
//! erase size.
//!
//! Steps recorded in the state (mode `InPlace`), with `D` the number of staging sectors
//! (`⌈package_len / staging ERASE_SIZE⌉`) and `n` the slice count:
//!
//! | steps done        | phase | what the next step does | a reset during it leaves |
//! |-------------------|-------|-------------------------|--------------------------|
//! | (record written by [`begin_download`]) | download | — | old image intact and bootable |
//! | `0 .. D`          | download | stage one more sector of the package ([`Stager`]); marker | old image intact; the download resumes at sector `steps` ([`staged_len`]) |
//! | `D`               | verify | read the staged package and check all of it: signatures, device policy, base image size and SHA-256, every payload and slice digest, image digest, trailer MD5 (nothing is written); then a new record with the package id (`steps_base` = `D + 1`) | old image intact; verification runs again |
//! | `D + 1 + 2j`      | apply slice `k` (the `j`-th in apply order), part 1 | erase the scratch, decode slice `k` from its staged payload (payload digest first) and the slot's still-intact base bytes (its read window) into the scratch, read it back against the slice digest; marker | the slot is mixed: old from slice `k`'s region on (ascending) and new before it; the bootloader must resume (it does not boot a slot in this state). The step is redone from the start: the bytes it reads are still intact |
//! | `D + 2 + 2j`      | apply slice `k`, part 2 | erase slice `k`'s sectors in the slot, copy the scratch there, read it back against the slice digest; marker | as above; the copy is redone from the scratch, which holds the verified slice |
//! | `D + 1 + 2n`      | finish | read the whole slot back against the image digest; record `Trial` | the new image in the slot; finishing runs again |
//!
//! The staged package itself is untrusted until the verify step, and re-checked wherever it
//! is read again: the manifest read back for the apply steps must hash to the package id
//! recorded after verification, and each payload must match its digest before it is decoded.

use crate::apply::{read_back, Applier, FlashBase, FlashOut};
use crate::decode::SliceDecoder;
use crate::error::{Error, Result};
use crate::keys::TrustedKey;
use crate::policy::DeviceInfo;
use crate::state::{Mode, StateRecord, StateStore};
use crate::verify::Policy;
use crate::wire::header::{Header, HEADER_LEN};
use crate::wire::manifest::{Kind, Manifest};
use crate::wire::trailer::TRAILER_LEN;
use embedded_storage::nor_flash::NorFlash;
use sha2::{Digest, Sha256};

/// Caller-provided buffers (sized as for [`Applier`]).
pub struct Buffers<'b> {
    /// At least 32 + `manifest_len`.
    pub manifest: &'b mut [u8],
    /// At least the largest payload segment ([`crate::apply::Applier::payload_buffer_len`]).
    pub payload: &'b mut [u8],
    /// A non-zero multiple of every area's `WRITE_SIZE`.
    pub write: &'b mut [u8],
}

fn sectors<G: NorFlash>(len: u64) -> u32 {
    u32::try_from(len.div_ceil(G::ERASE_SIZE.max(1) as u64)).unwrap_or(u32::MAX)
}

/// Starts an in-place update of a package of `package_len` bytes (as the OTA service
/// announced it): records mode `InPlace` with the length, so the download can resume.
pub fn begin_download<S: NorFlash>(state: &mut StateStore<S>, package_len: u64) -> Result<()> {
    let rec = *state.record();
    match rec.mode {
        Mode::Idle => {}
        _ => {
            return Err(Error::WrongState {
                what: "another update is in progress or on trial",
            })
        }
    }
    if package_len < (HEADER_LEN + TRAILER_LEN) as u64 || package_len > u64::from(u32::MAX) {
        return Err(Error::WrongState {
            what: "announced package length out of range",
        });
    }
    state.commit(StateRecord {
        mode: Mode::InPlace,
        target_slot: rec.active_slot,
        steps_base: 0,
        pending_counter: 0,
        package_id: [0; 32],
        aux: package_len,
        ..rec
    })
}

/// Package bytes already staged (where the download resumes), for staging area type `G`.
pub fn staged_len<G: NorFlash, S: NorFlash>(state: &StateStore<S>) -> u64 {
    let rec = state.record();
    if rec.mode != Mode::InPlace {
        return 0;
    }
    (u64::from(state.steps()) * G::ERASE_SIZE as u64).min(rec.aux)
}

/// Whether the staged package has been verified (the apply steps have begun or may begin):
/// then there is nothing more to download, and [`install`] resumes the apply steps.
pub fn verified<S: NorFlash>(state: &StateStore<S>) -> bool {
    let rec = state.record();
    rec.mode == Mode::InPlace && rec.package_id != [0; 32]
}

/// Writes the downloaded package into the staging area, sector by sector, recording each
/// finished sector so the download resumes after a reset.
pub struct Stager<'a, G: NorFlash, S: NorFlash> {
    stage: &'a mut G,
    state: &'a mut StateStore<S>,
    write: &'a mut [u8],
    out: FlashOut,
    total: u64,
}

impl<'a, G: NorFlash, S: NorFlash> Stager<'a, G, S> {
    /// Continues staging at [`staged_len`]: push the package from that offset on.
    pub fn new(
        stage: &'a mut G,
        state: &'a mut StateStore<S>,
        write: &'a mut [u8],
    ) -> Result<Self> {
        let rec = *state.record();
        if rec.mode != Mode::InPlace || rec.package_id != [0; 32] {
            return Err(Error::WrongState {
                what: "no in-place download in progress",
            });
        }
        if rec.aux > stage.capacity() as u64 {
            return Err(Error::SlotTooSmall);
        }
        if write.is_empty() || !write.len().is_multiple_of(G::WRITE_SIZE.max(1)) {
            return Err(Error::BufferTooSmall {
                needed: G::WRITE_SIZE as u64,
            });
        }
        let at = staged_len::<G, S>(state);
        Ok(Stager {
            stage,
            state,
            write,
            out: FlashOut {
                pos: at,
                fill: 0,
                erased_to: at,
            },
            total: rec.aux,
        })
    }

    /// The package offset the next pushed byte belongs to.
    pub fn offset(&self) -> u64 {
        self.out.pos
    }

    /// Stages the next bytes of the package.
    pub fn push(&mut self, mut chunk: &[u8]) -> Result<()> {
        let sector = G::ERASE_SIZE as u64;
        while !chunk.is_empty() {
            if self.out.pos >= self.total {
                return Err(Error::LengthMismatch {
                    what: "downloaded package",
                    expected: self.total,
                    actual: self.out.pos + chunk.len() as u64,
                });
            }
            // Up to the end of the current sector (or of the package).
            let end = ((self.out.pos / sector + 1) * sector).min(self.total);
            let n = ((end - self.out.pos) as usize).min(chunk.len());
            let (head, rest) = chunk.split_at(n);
            self.out.put(self.stage, self.write, head)?;
            chunk = rest;
            if self.out.pos == end {
                self.out.flush(self.stage, self.write, 0xFF)?;
                self.state.step()?;
            }
        }
        Ok(())
    }

    /// Whether the whole package is staged.
    pub fn complete(&self) -> bool {
        self.out.pos == self.total
    }
}

/// Reads the staged header and manifest into `buf` and checks their structure (not their
/// authenticity).
fn peek_manifest<'m, G: NorFlash>(stage: &mut G, buf: &'m mut [u8]) -> Result<Manifest<'m>> {
    let head = buf.get_mut(..HEADER_LEN).ok_or(Error::BufferTooSmall {
        needed: HEADER_LEN as u64,
    })?;
    read_stage(stage, 0, head)?;
    let h = Header::new_checked(head)?;
    let (version, payload_len) = (h.format_version(), h.payload_len());
    let mlen = HEADER_LEN + h.manifest_len() as usize;
    let mbytes = buf.get_mut(..mlen).ok_or(Error::BufferTooSmall {
        needed: mlen as u64,
    })?;
    read_stage(stage, 0, mbytes)?;
    let mbytes: &'m [u8] = mbytes;
    Manifest::new_checked(
        mbytes.get(HEADER_LEN..).unwrap_or(&[]),
        version,
        payload_len,
    )
}

/// Reads `dst.len()` staged bytes from `at`.
fn read_stage<G: NorFlash>(stage: &mut G, at: u64, dst: &mut [u8]) -> Result<()> {
    let at = u32::try_from(at).map_err(|_| Error::Truncated { what: "package" })?;
    stage.read(at, dst).map_err(|_| Error::BaseRead)
}

/// Verifies the staged package (unless already recorded as verified) and applies it in place,
/// resuming at the recorded step; then records `Trial`. See the module documentation.
#[allow(clippy::too_many_arguments)]
pub fn install<'k, F: NorFlash, G: NorFlash, C: NorFlash, S: NorFlash>(
    slot: &mut F,
    stage: &mut G,
    scratch: &mut C,
    state: &mut StateStore<S>,
    trusted: &'k [TrustedKey],
    policy: Policy,
    device: DeviceInfo<'k>,
    bufs: Buffers<'_>,
) -> Result<()> {
    let rec = *state.record();
    if rec.mode != Mode::InPlace {
        return Err(Error::WrongState {
            what: "no in-place update in progress",
        });
    }
    let total = rec.aux;
    let d = sectors::<G>(total);
    if state.steps() < d {
        return Err(Error::Truncated { what: "package" });
    }
    if rec.package_id == [0; 32] {
        verify_staged(
            stage,
            slot,
            state,
            trusted,
            policy,
            device,
            total,
            bufs.manifest,
            bufs.payload,
            bufs.write,
        )?;
    }
    apply_staged(slot, stage, scratch, state, total, bufs)
}

/// The verify step: the whole staged package through a verify-only [`Applier`].
#[allow(clippy::too_many_arguments)]
fn verify_staged<F: NorFlash, G: NorFlash, S: NorFlash>(
    stage: &mut G,
    slot: &mut F,
    state: &mut StateStore<S>,
    trusted: &[TrustedKey],
    policy: Policy,
    device: DeviceInfo<'_>,
    total: u64,
    manifest_buf: &mut [u8],
    payload_buf: &mut [u8],
    write_buf: &mut [u8],
) -> Result<()> {
    let rec = *state.record();
    let (id, counter) = {
        // The base is the slot, intact until this step records success. Its length is the
        // manifest's base size (an unverified peek; the applier then checks the base's
        // SHA-256 against the authenticated manifest).
        let base_len = peek_manifest(stage, manifest_buf)?.base_size();
        let mut base = FlashBase::new(slot, base_len)?;
        let mut read = [0u8; 256];
        // The flash type parameter is unused in verify-only mode; the stage stands in.
        let mut dummy = NoFlash;
        let mut applier = Applier::new(
            trusted,
            policy,
            &mut dummy,
            Some(&mut base),
            manifest_buf,
            payload_buf,
            write_buf,
        )?;
        applier.set_verify_only();
        let mut device = device;
        device.security_counter = device.security_counter.max(rec.security_counter);
        applier.set_device(device);
        let mut at = 0u64;
        while at < total {
            let n = ((total - at) as usize).min(read.len());
            let chunk = read.get_mut(..n).ok_or(Error::Output)?;
            read_stage(stage, at, chunk)?;
            applier.push(chunk)?;
            at += n as u64;
        }
        let m = applier
            .manifest()
            .ok_or(Error::Truncated { what: "manifest" })?;
        if m.kind() != Kind::DeltaInPlace {
            return Err(Error::UnsupportedKind(m.kind() as u8));
        }
        let counter = m.security_counter();
        let id = applier
            .package_id()
            .ok_or(Error::Truncated { what: "manifest" })?;
        applier.finish()?;
        (id, counter)
    };
    state.commit(StateRecord {
        steps_base: state.steps() + 1,
        pending_counter: counter,
        package_id: id,
        ..rec
    })
}

/// The apply steps, from the recorded one on.
fn apply_staged<F: NorFlash, G: NorFlash, C: NorFlash, S: NorFlash>(
    slot: &mut F,
    stage: &mut G,
    scratch: &mut C,
    state: &mut StateStore<S>,
    total: u64,
    bufs: Buffers<'_>,
) -> Result<()> {
    let rec = *state.record();
    let Buffers {
        manifest: manifest_buf,
        payload: payload_buf,
        write: write_buf,
    } = bufs;
    // Read header and manifest back and hold them to the verified package id.
    let m = peek_manifest(stage, manifest_buf)?;
    let mlen = HEADER_LEN + m.as_bytes().len();
    let payload_len = {
        let all = manifest_buf
            .get(..mlen)
            .ok_or(Error::Truncated { what: "manifest" })?;
        if <[u8; 32]>::from(Sha256::digest(all)) != rec.package_id {
            return Err(Error::WrongState {
                what: "the staged package changed after it was verified",
            });
        }
        let h = Header::new_checked(all)?;
        (h.format_version(), h.payload_len())
    };
    let (version, payload_len) = payload_len;
    let m = Manifest::new_checked(
        manifest_buf.get(HEADER_LEN..mlen).unwrap_or(&[]),
        version,
        payload_len,
    )?;
    let payload_start = total
        .checked_sub(TRAILER_LEN as u64 + u64::from(payload_len))
        .ok_or(Error::Truncated { what: "package" })?;
    let size = u64::from(m.slice_size());
    for erase in [F::ERASE_SIZE, C::ERASE_SIZE] {
        if erase == 0 || !size.is_multiple_of(erase as u64) {
            return Err(Error::WrongState {
                what: "in-place slices must be whole erase sectors of slot and scratch",
            });
        }
    }
    if (scratch.capacity() as u64) < size
        || (slot.capacity() as u64) < m.image_size().max(m.base_size())
    {
        return Err(Error::SlotTooSmall);
    }
    let first = rec.steps_base;
    let mut decoder = SliceDecoder::new();
    let steps_total = 2 * m.slice_count();
    while state.steps() < first + steps_total {
        let j = state.steps() - first;
        let k = m
            .apply_order()
            .nth((j / 2) as usize)
            .ok_or(Error::Truncated { what: "slice" })?;
        let r = m.slice(k).ok_or(Error::Truncated { what: "slice" })?;
        let len = u64::from(m.slice_len(k));
        let start = u64::from(k) * size;
        if j.is_multiple_of(2) {
            // Part 1: decode into the scratch, one payload segment at a time.
            let base_len = m.base_size();
            let mut base = FlashBase::new(slot, base_len)?;
            let mut out = FlashOut::default();
            decoder.begin(&m, &r)?;
            let mut at = payload_start + u64::from(r.payload_offset());
            loop {
                let n = decoder.next_segment_len();
                if n == 0 {
                    break;
                }
                let segment = payload_buf
                    .get_mut(..n)
                    .ok_or(Error::BufferTooSmall { needed: n as u64 })?;
                read_stage(stage, at, segment)?;
                decoder.feed_segment(segment, Some(&mut base), &mut |chunk| {
                    out.put(scratch, write_buf, chunk)
                })?;
                at += n as u64;
            }
            decoder.end(Some(&mut base), &mut |chunk| {
                out.put(scratch, write_buf, chunk)
            })?;
            out.flush(scratch, write_buf, m.erase_value())?;
            if read_back(scratch, write_buf, 0, len)? != r.slice_sha256() {
                return Err(Error::Readback { offset: start });
            }
        } else {
            // Part 2: copy the scratch over the slice's place.
            let mut out = FlashOut {
                pos: start,
                fill: 0,
                erased_to: start,
            };
            let mut at = 0u64;
            let mut piece = [0u8; 256];
            while at < len {
                let n = ((len - at) as usize).min(piece.len());
                let p = piece.get_mut(..n).ok_or(Error::Output)?;
                let a32 = u32::try_from(at).map_err(|_| Error::Output)?;
                scratch.read(a32, p).map_err(|_| Error::Output)?;
                out.put(slot, write_buf, p)?;
                at += n as u64;
            }
            out.flush(slot, write_buf, m.erase_value())?;
            if read_back(slot, write_buf, start, len)? != r.slice_sha256() {
                return Err(Error::Readback { offset: start });
            }
        }
        state.step()?;
    }
    if read_back(slot, write_buf, 0, m.image_size())? != m.image_sha256() {
        return Err(Error::ImageDigest);
    }
    state.commit(StateRecord {
        mode: Mode::Trial,
        steps_base: 0,
        ..rec
    })
}

/// A flash that is never written: the verify-only applier's type parameter.
struct NoFlash;

impl embedded_storage::nor_flash::ErrorType for NoFlash {
    type Error = embedded_storage::nor_flash::NorFlashErrorKind;
}

impl embedded_storage::nor_flash::ReadNorFlash for NoFlash {
    const READ_SIZE: usize = 1;
    fn read(&mut self, _: u32, _: &mut [u8]) -> core::result::Result<(), Self::Error> {
        Err(embedded_storage::nor_flash::NorFlashErrorKind::Other)
    }
    fn capacity(&self) -> usize {
        0
    }
}

impl NorFlash for NoFlash {
    const WRITE_SIZE: usize = 1;
    const ERASE_SIZE: usize = 1;
    fn erase(&mut self, _: u32, _: u32) -> core::result::Result<(), Self::Error> {
        Err(embedded_storage::nor_flash::NorFlashErrorKind::Other)
    }
    fn write(&mut self, _: u32, _: &[u8]) -> core::result::Result<(), Self::Error> {
        Err(embedded_storage::nor_flash::NorFlashErrorKind::Other)
    }
}
