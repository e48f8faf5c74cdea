//! Power-fail-safe update state on NOR flash: which slot boots, the stored anti-rollback
//! counter, and how far an update has come, so that a device that loses power at any moment
//! resumes where it stopped and never boots a half-written image.
//!
//! The state region is two erase sectors ("pages") of an [`embedded_storage`] `NorFlash`
//! (the first `2 * ERASE_SIZE` bytes of the flash the caller hands over). Each page holds one
//! *record* and, after it, a run of write-once *step markers*:
//!
//! | page offset         | size            | content |
//! |---------------------|-----------------|---------|
//! | 0                   | `R` = 96 rounded up to `WRITE_SIZE` | record (layout below), padded with 0xFF |
//! | `R + i * M`         | `M` = `WRITE_SIZE` | marker `i`: all `0x00` = one step done; all `0xFF` = unused; anything else = torn |
//!
//! Record layout (little-endian, 96 bytes):
//!
//! | offset | size | field |
//! |--------|------|-------|
//! | 0      | 4    | magic `"OTST"` |
//! | 4      | 1    | layout version, 1 |
//! | 5      | 1    | `active_slot`: the slot the bootloader boots |
//! | 6      | 1    | `mode`: 0 idle, 1 two-slot update in progress, 2 in-place update in progress, 3 trial (new image activated, not confirmed yet) |
//! | 7      | 1    | `target_slot`: two-slot: the slot being written; trial: the slot to revert to |
//! | 8      | 4    | `seq`: incremented by every record write; the valid record with the higher `seq` wins |
//! | 12     | 4    | `steps_base`: steps done before this record's first marker |
//! | 16     | 8    | `security_counter`: the confirmed anti-rollback counter |
//! | 24     | 8    | `pending_counter`: the counter of the package being applied or on trial |
//! | 32     | 32   | `package_id`: SHA-256 of the package's header and manifest (what its signatures cover) |
//! | 64     | 8    | `aux`: mode-specific (in-place: bytes of the package staged when the record was written) |
//! | 72     | 16   | reserved, zero |
//! | 88     | 8    | check: the first 8 bytes of SHA-256 of bytes 0..88 |
//!
//! A page is *valid* when its magic, version and check match. Steps done =
//! `steps_base` + the number of markers that read all `0x00`.
//!
//! Every change is one of two flash operations, each atomic with respect to power loss:
//!
//! | operation | flash steps | cut during it leaves | after reboot |
//! |-----------|-------------|----------------------|--------------|
//! | [`StateStore::step`] (one more step done) | program the next unused marker | a torn marker (neither all-0 nor all-FF) or an unchanged one | the step is not counted; the next marker goes after the torn one; the caller redoes the step (steps are idempotent) |
//! | [`StateStore::commit`] (new record) | 1. erase the *other* page; 2. program the record there | 1: the other page is garbage or still holds its older record; 2: the new record fails its check | the current page is still valid and has the higher `seq`: the state is exactly as before the commit, which the caller redoes |
//!
//! When a page runs out of markers, [`StateStore::step`] commits a copy of the record with
//! `steps_base` = the steps done so far, so the markers continue on the other page.
//!
//! Reading (after every reset, [`StateStore::open`]):
//!
//! | page 0  | page 1  | state |
//! |---------|---------|-------|
//! | invalid | invalid | fresh device: slot 0 active, idle, counter 0 |
//! | valid   | invalid | page 0 |
//! | invalid | valid   | page 1 |
//! | valid   | valid   | the one with the higher `seq` (wrapping comparison) |
//!
//! Erased flash must read `0xFF`, and `WRITE_SIZE` must be at most 64 bytes.

use crate::error::{Error, Result};
use crate::wire::{digest_at, le_u32, le_u64};
use embedded_storage::nor_flash::NorFlash;
use sha2::{Digest, Sha256};

const MAGIC: [u8; 4] = *b"OTST";
const LAYOUT_VERSION: u8 = 1;
/// Record length before padding.
pub const RECORD_LEN: usize = 96;
const CHECKED_LEN: usize = 88;
/// The largest `WRITE_SIZE` the state region supports.
pub const MAX_WRITE_SIZE: usize = 64;
/// The smallest number of markers a page must hold.
const MIN_MARKERS: usize = 8;

/// What the device is doing, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Running `active_slot`; no update in progress.
    #[default]
    Idle,
    /// Writing a new image into `target_slot`; steps = slices written and verified.
    TwoSlot,
    /// Overwriting the running image in place; steps as the in-place applier defines them.
    InPlace,
    /// The new image was activated and has not been confirmed yet; `target_slot` is the slot
    /// to go back to if it does not confirm.
    Trial,
}

impl Mode {
    fn code(self) -> u8 {
        match self {
            Mode::Idle => 0,
            Mode::TwoSlot => 1,
            Mode::InPlace => 2,
            Mode::Trial => 3,
        }
    }
    fn from_code(c: u8) -> Option<Self> {
        Some(match c {
            0 => Mode::Idle,
            1 => Mode::TwoSlot,
            2 => Mode::InPlace,
            3 => Mode::Trial,
            _ => return None,
        })
    }
}

/// One state record (see the module documentation for its layout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateRecord {
    pub active_slot: u8,
    pub mode: Mode,
    pub target_slot: u8,
    pub steps_base: u32,
    pub security_counter: u64,
    pub pending_counter: u64,
    pub package_id: [u8; 32],
    pub aux: u64,
}

impl StateRecord {
    fn emit(&self, seq: u32) -> [u8; RECORD_LEN] {
        let mut b = [0u8; RECORD_LEN];
        let mut put = |at: usize, v: &[u8]| {
            if let Some(d) = b.get_mut(at..at + v.len()) {
                d.copy_from_slice(v);
            }
        };
        put(0, &MAGIC);
        put(
            4,
            &[
                LAYOUT_VERSION,
                self.active_slot,
                self.mode.code(),
                self.target_slot,
            ],
        );
        put(8, &seq.to_le_bytes());
        put(12, &self.steps_base.to_le_bytes());
        put(16, &self.security_counter.to_le_bytes());
        put(24, &self.pending_counter.to_le_bytes());
        put(32, &self.package_id);
        put(64, &self.aux.to_le_bytes());
        let check = Sha256::digest(b.get(..CHECKED_LEN).unwrap_or(&[]));
        if let (Some(d), Some(s)) = (b.get_mut(CHECKED_LEN..), check.get(..8)) {
            d.copy_from_slice(s);
        }
        b
    }

    /// The record and its `seq`, if `b` holds a valid one.
    fn parse(b: &[u8; RECORD_LEN]) -> Option<(Self, u32)> {
        let check = Sha256::digest(b.get(..CHECKED_LEN)?);
        if b.get(..4)? != MAGIC
            || b.get(4) != Some(&LAYOUT_VERSION)
            || b.get(CHECKED_LEN..)? != check.get(..8)?
        {
            return None;
        }
        let rec = StateRecord {
            active_slot: *b.get(5)?,
            mode: Mode::from_code(*b.get(6)?)?,
            target_slot: *b.get(7)?,
            steps_base: le_u32(b, 12),
            security_counter: le_u64(b, 16),
            pending_counter: le_u64(b, 24),
            package_id: digest_at(b, 32),
            aux: le_u64(b, 64),
        };
        Some((rec, le_u32(b, 8)))
    }
}

/// What a marker reads as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Unused,
    Done,
    Torn,
}

/// The update state region. See the module documentation for the algorithm.
#[derive(Debug)]
pub struct StateStore<S: NorFlash> {
    flash: S,
    rec: StateRecord,
    seq: u32,
    /// The page holding `rec` (0 or 1); for a fresh device, 1, so the first commit goes to 0.
    page: u32,
    /// Markers used on the current page (done, torn or being written), counting from 0.
    next_marker: u32,
    /// Markers that read done on the current page.
    done: u32,
}

impl<S: NorFlash> StateStore<S> {
    /// Bytes of the record area (the record rounded up to the write size).
    fn record_area() -> usize {
        RECORD_LEN.div_ceil(S::WRITE_SIZE.max(1)) * S::WRITE_SIZE.max(1)
    }

    fn marker_len() -> usize {
        S::WRITE_SIZE.max(1)
    }

    /// Markers per page.
    fn markers_per_page() -> u32 {
        let room = S::ERASE_SIZE.saturating_sub(Self::record_area());
        u32::try_from(room / Self::marker_len()).unwrap_or(u32::MAX)
    }

    /// Reads the state from `flash` (the state region: its first two erase sectors).
    pub fn open(mut flash: S) -> Result<Self> {
        if S::WRITE_SIZE == 0
            || S::WRITE_SIZE > MAX_WRITE_SIZE
            || S::ERASE_SIZE < Self::record_area() + MIN_MARKERS * Self::marker_len()
            || flash.capacity() < 2 * S::ERASE_SIZE
            || S::READ_SIZE == 0
            || !RECORD_LEN.is_multiple_of(S::READ_SIZE)
            || !Self::marker_len().is_multiple_of(S::READ_SIZE)
        {
            return Err(Error::StateLayout);
        }
        let mut best: Option<(StateRecord, u32, u32)> = None;
        for page in 0..2u32 {
            let mut b = [0u8; RECORD_LEN];
            let at = page * S::ERASE_SIZE as u32;
            flash.read(at, &mut b).map_err(|_| Error::StateFlash)?;
            if let Some((rec, seq)) = StateRecord::parse(&b) {
                let newer = match best {
                    None => true,
                    Some((_, s, _)) => (seq.wrapping_sub(s) as i32) > 0,
                };
                if newer {
                    best = Some((rec, seq, page));
                }
            }
        }
        let mut store = match best {
            Some((rec, seq, page)) => StateStore {
                flash,
                rec,
                seq,
                page,
                next_marker: 0,
                done: 0,
            },
            None => {
                return Ok(StateStore {
                    flash,
                    rec: StateRecord::default(),
                    seq: 0,
                    page: 1,
                    // No valid record: no markers to count, and the first step commits.
                    next_marker: Self::markers_per_page(),
                    done: 0,
                });
            }
        };
        store.scan_markers()?;
        Ok(store)
    }

    fn marker_at(&self, i: u32) -> u32 {
        self.page * S::ERASE_SIZE as u32
            + Self::record_area() as u32
            + i * Self::marker_len() as u32
    }

    fn read_marker(&mut self, i: u32) -> Result<Marker> {
        let mut b = [0u8; MAX_WRITE_SIZE];
        let m = b.get_mut(..Self::marker_len()).ok_or(Error::StateLayout)?;
        let at = self.marker_at(i);
        self.flash.read(at, m).map_err(|_| Error::StateFlash)?;
        Ok(if m.iter().all(|&x| x == 0) {
            Marker::Done
        } else if m.iter().all(|&x| x == 0xFF) {
            Marker::Unused
        } else {
            Marker::Torn
        })
    }

    fn scan_markers(&mut self) -> Result<()> {
        let (mut done, mut next) = (0, 0);
        for i in 0..Self::markers_per_page() {
            match self.read_marker(i)? {
                Marker::Done => {
                    done += 1;
                    next = i + 1;
                }
                Marker::Torn => next = i + 1,
                Marker::Unused => {}
            }
        }
        self.done = done;
        self.next_marker = next;
        Ok(())
    }

    /// The current record.
    pub fn record(&self) -> &StateRecord {
        &self.rec
    }

    /// Steps done in the current mode.
    pub fn steps(&self) -> u32 {
        self.rec.steps_base.saturating_add(self.done)
    }

    /// Writes `rec` as the new state (atomically: see the module documentation). The steps
    /// done restart from `rec.steps_base`.
    pub fn commit(&mut self, rec: StateRecord) -> Result<()> {
        let other = 1 - self.page;
        let from = other * S::ERASE_SIZE as u32;
        let seq = self.seq.wrapping_add(1);
        self.flash
            .erase(from, from + S::ERASE_SIZE as u32)
            .map_err(|_| Error::StateFlash)?;
        let bytes = rec.emit(seq);
        let area = Self::record_area();
        let mut buf = [0xFFu8; RECORD_LEN + MAX_WRITE_SIZE];
        buf.get_mut(..RECORD_LEN)
            .ok_or(Error::StateLayout)?
            .copy_from_slice(&bytes);
        self.flash
            .write(from, buf.get(..area).ok_or(Error::StateLayout)?)
            .map_err(|_| Error::StateFlash)?;
        self.rec = rec;
        self.seq = seq;
        self.page = other;
        self.next_marker = 0;
        self.done = 0;
        Ok(())
    }

    /// Records one more step done (one marker; a new record when the page is full).
    pub fn step(&mut self) -> Result<u32> {
        if self.next_marker >= Self::markers_per_page() {
            let mut rec = self.rec;
            rec.steps_base = self.steps();
            self.commit(rec)?;
        }
        let at = self.marker_at(self.next_marker);
        // Counted as used even if the write fails: a torn marker must not be written again.
        self.next_marker += 1;
        let zeros = [0u8; MAX_WRITE_SIZE];
        self.flash
            .write(
                at,
                zeros.get(..Self::marker_len()).ok_or(Error::StateLayout)?,
            )
            .map_err(|_| Error::StateFlash)?;
        self.done += 1;
        Ok(self.steps())
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> S {
        self.flash
    }

    /// The flash, for callers sharing it.
    pub fn flash_mut(&mut self) -> &mut S {
        &mut self.flash
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_storage::nor_flash::{ErrorType, NorFlashErrorKind, ReadNorFlash};

    /// 256-byte pages, 4-byte program units (40 markers a page), programmed once per erase,
    /// with a power cut that tears the cut operation in half.
    #[derive(Clone)]
    struct Tiny {
        data: [u8; 512],
        ops: u32,
        cut_at: Option<u32>,
        /// Whether the cut operation half happens (true) or not at all.
        tear: bool,
        off: bool,
    }
    impl ErrorType for Tiny {
        type Error = NorFlashErrorKind;
    }
    impl ReadNorFlash for Tiny {
        const READ_SIZE: usize = 1;
        fn read(&mut self, at: u32, b: &mut [u8]) -> core::result::Result<(), Self::Error> {
            let at = at as usize;
            b.copy_from_slice(&self.data[at..at + b.len()]);
            Ok(())
        }
        fn capacity(&self) -> usize {
            512
        }
    }
    impl Tiny {
        fn op(&mut self) -> core::result::Result<bool, NorFlashErrorKind> {
            if self.off {
                return Err(NorFlashErrorKind::Other);
            }
            self.ops += 1;
            if self.cut_at == Some(self.ops) {
                self.off = true;
                return Ok(true);
            }
            Ok(false)
        }
    }
    impl NorFlash for Tiny {
        const WRITE_SIZE: usize = 4;
        const ERASE_SIZE: usize = 256;
        fn erase(&mut self, from: u32, to: u32) -> core::result::Result<(), Self::Error> {
            let (from, to) = (from as usize, to as usize);
            let torn = self.op()?;
            let end = match (torn, self.tear) {
                (false, _) => to,
                (true, true) => from + (to - from) / 2,
                (true, false) => from,
            };
            self.data[from..end].fill(0xFF);
            if torn {
                Err(NorFlashErrorKind::Other)
            } else {
                Ok(())
            }
        }
        fn write(&mut self, at: u32, b: &[u8]) -> core::result::Result<(), Self::Error> {
            let at = at as usize;
            assert!(at.is_multiple_of(4) && b.len().is_multiple_of(4));
            assert!(
                self.data[at..at + b.len()].iter().all(|&x| x == 0xFF),
                "programmed twice without an erase at {at}"
            );
            let torn = self.op()?;
            let n = match (torn, self.tear) {
                (false, _) => b.len(),
                (true, true) => b.len() / 2,
                (true, false) => 0,
            };
            self.data[at..at + n].copy_from_slice(&b[..n]);
            if torn {
                Err(NorFlashErrorKind::Other)
            } else {
                Ok(())
            }
        }
    }

    fn tiny() -> Tiny {
        Tiny {
            data: [0xFF; 512],
            ops: 0,
            cut_at: None,
            tear: true,
            off: false,
        }
    }

    /// A workload: begin an update (commit), 100 steps (two page roll-overs), end (commit).
    /// Returns the logical position reached: 0 before the begin record, 1 + steps after it,
    /// 102 after the end record.
    fn workload(flash: &mut Tiny) -> core::result::Result<(), Error> {
        let mut s = StateStore::open(&mut *flash)?;
        let mut pos = position(&s);
        if pos == 0 {
            s.commit(StateRecord {
                mode: Mode::TwoSlot,
                pending_counter: 5,
                package_id: [7; 32],
                ..*s.record()
            })?;
            pos = 1;
        }
        while pos < 101 {
            s.step()?;
            pos += 1;
        }
        if pos == 101 {
            s.commit(StateRecord {
                mode: Mode::Idle,
                active_slot: 1,
                security_counter: 5,
                ..StateRecord::default()
            })?;
        }
        Ok(())
    }

    fn position<S: NorFlash>(s: &StateStore<S>) -> u32 {
        match s.record().mode {
            Mode::Idle if s.record().active_slot == 1 => 102,
            Mode::Idle => 0,
            Mode::TwoSlot => {
                assert_eq!(s.record().package_id, [7; 32]);
                1 + s.steps()
            }
            m => panic!("unexpected mode {m:?}"),
        }
    }

    #[test]
    fn clean_run_and_roll_over() {
        let mut f = tiny();
        workload(&mut f).unwrap();
        let s = StateStore::open(&mut f).unwrap();
        assert_eq!(position(&s), 102);
        assert_eq!(s.record().security_counter, 5);
        // 2 commits + 100 markers + 2 roll-over commits (40 markers a page), 2 ops per commit.
        assert_eq!(f.ops, 2 * 2 + 100 + 2 * 2);
    }

    /// The position after a clean run of exactly `j` operations.
    fn position_after(j: u32) -> u32 {
        let mut f = tiny();
        f.cut_at = Some(j + 1);
        f.tear = false;
        let _ = workload(&mut f);
        f.off = false;
        position(&StateStore::open(&mut f).unwrap())
    }

    /// A cut during every operation, tearing it: afterwards the state reads as the position
    /// just before or just after the interrupted operation, never anything else, and resuming
    /// reaches the end.
    #[test]
    fn every_cut_keeps_the_position() {
        let mut clean = tiny();
        workload(&mut clean).unwrap();
        for k in 1..=clean.ops {
            let mut f = tiny();
            f.cut_at = Some(k);
            assert!(workload(&mut f).is_err(), "cut {k} must interrupt");
            f.off = false;
            f.cut_at = None;
            let pos = position(&StateStore::open(&mut f).unwrap());
            let (before, after) = (position_after(k - 1), position_after(k));
            assert!(
                pos == before || pos == after,
                "cut {k}: position {pos}, expected {before} or {after}"
            );
            workload(&mut f).unwrap();
            assert_eq!(position(&StateStore::open(&mut f).unwrap()), 102, "cut {k}");
        }
    }
}
