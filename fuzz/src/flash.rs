//! A RAM NOR flash for the applier target. It panics on any use the applier must never make
//! (unaligned or out-of-range erase/write, programming a bit from 0 to 1 without an erase),
//! and counts erases and writes in a [`FlashLog`] the target keeps a handle to, so it can
//! assert when flash was left untouched while the applier still holds the flash.

use embedded_storage::nor_flash::{ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash};
use std::cell::Cell;
use std::rc::Rc;

/// What has been done to a [`RamFlash`] so far.
#[derive(Debug, Default)]
pub struct FlashLog {
    /// Erase calls.
    pub erases: Cell<u32>,
    /// Write calls.
    pub writes: Cell<u32>,
    /// One past the highest byte programmed so far.
    pub written_end: Cell<usize>,
}

impl FlashLog {
    pub fn touched(&self) -> bool {
        self.erases.get() != 0 || self.writes.get() != 0
    }
}

/// `WRITE`-byte program units, `ERASE`-byte sectors; erased bytes read 0xFF.
pub struct RamFlash<const WRITE: usize, const ERASE: usize> {
    pub data: Vec<u8>,
    pub log: Rc<FlashLog>,
}

impl<const WRITE: usize, const ERASE: usize> RamFlash<WRITE, ERASE> {
    /// `capacity` bytes (a multiple of `ERASE`), filled with `fill`: the old contents of the
    /// slot, which the applier must erase before programming.
    pub fn new(capacity: usize, fill: u8) -> Self {
        assert!(capacity.is_multiple_of(ERASE));
        RamFlash {
            data: vec![fill; capacity],
            log: Rc::default(),
        }
    }
}

impl<const WRITE: usize, const ERASE: usize> ErrorType for RamFlash<WRITE, ERASE> {
    type Error = NorFlashErrorKind;
}

impl<const WRITE: usize, const ERASE: usize> ReadNorFlash for RamFlash<WRITE, ERASE> {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        let src = self
            .data
            .get(at..at + bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const WRITE: usize, const ERASE: usize> NorFlash for RamFlash<WRITE, ERASE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let (from, to) = (from as usize, to as usize);
        assert!(
            from.is_multiple_of(ERASE) && to.is_multiple_of(ERASE),
            "unaligned erase {from:#x}..{to:#x} (sector {ERASE})"
        );
        assert!(
            from <= to && to <= self.data.len(),
            "erase {from:#x}..{to:#x} outside a {:#x}-byte slot",
            self.data.len()
        );
        self.data[from..to].fill(0xFF);
        self.log.erases.set(self.log.erases.get() + 1);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        assert!(
            at.is_multiple_of(WRITE) && bytes.len().is_multiple_of(WRITE),
            "unaligned write of {} bytes at {at:#x} (write size {WRITE})",
            bytes.len()
        );
        let end = at + bytes.len();
        assert!(
            end <= self.data.len(),
            "write {at:#x}..{end:#x} outside a {:#x}-byte slot",
            self.data.len()
        );
        let dst = &mut self.data[at..end];
        if let Some(i) = dst
            .iter()
            .zip(bytes)
            .position(|(&old, &new)| new & !old != 0)
        {
            panic!("write at {:#x} sets bits that were not erased", at + i);
        }
        for (d, &b) in dst.iter_mut().zip(bytes) {
            *d &= b;
        }
        let log = &self.log;
        log.writes.set(log.writes.get() + 1);
        log.written_end.set(log.written_end.get().max(end));
        Ok(())
    }
}
