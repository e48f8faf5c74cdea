//! A NOR flash over a RAM buffer, for the applier checks (shared by `main.rs` and the applier
//! size probe): erasing sets whole `ERASE_SIZE` sectors to 0xFF, programming works in
//! `WRITE_SIZE` units and can only clear bits (a write that would set a bit fails: it needed an
//! erase first, as on real NOR). Reads have no alignment requirement. It counts erased sectors
//! and programmed bytes.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Program unit, in bytes.
pub const WRITE_SIZE: usize = 4;
/// Sector size, in bytes.
pub const ERASE_SIZE: usize = 4096;

pub struct RamFlash<'a> {
    mem: &'a mut [u8],
    /// Sectors erased so far (a sector erased twice counts twice).
    pub erases: u32,
    /// Bytes programmed so far.
    pub written: u32,
}

impl<'a> RamFlash<'a> {
    /// A flash over `mem` (whole sectors), left as it is: a real flash holds whatever was there.
    pub fn new(mem: &'a mut [u8]) -> Self {
        RamFlash {
            mem,
            erases: 0,
            written: 0,
        }
    }

    pub fn contents(&self) -> &[u8] {
        self.mem
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamFlashError(NorFlashErrorKind);

impl NorFlashError for RamFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

impl ErrorType for RamFlash<'_> {
    type Error = RamFlashError;
}

impl ReadNorFlash for RamFlash<'_> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), RamFlashError> {
        let at = offset as usize;
        let src = at
            .checked_add(bytes.len())
            .and_then(|end| self.mem.get(at..end))
            .ok_or(RamFlashError(NorFlashErrorKind::OutOfBounds))?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.mem.len()
    }
}

impl NorFlash for RamFlash<'_> {
    const WRITE_SIZE: usize = WRITE_SIZE;
    const ERASE_SIZE: usize = ERASE_SIZE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), RamFlashError> {
        let (from, to) = (from as usize, to as usize);
        if !from.is_multiple_of(ERASE_SIZE) || !to.is_multiple_of(ERASE_SIZE) {
            return Err(RamFlashError(NorFlashErrorKind::NotAligned));
        }
        let sectors = self
            .mem
            .get_mut(from..to)
            .ok_or(RamFlashError(NorFlashErrorKind::OutOfBounds))?;
        sectors.fill(0xFF);
        self.erases += ((to - from) / ERASE_SIZE) as u32;
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), RamFlashError> {
        let at = offset as usize;
        if !at.is_multiple_of(WRITE_SIZE) || !bytes.len().is_multiple_of(WRITE_SIZE) {
            return Err(RamFlashError(NorFlashErrorKind::NotAligned));
        }
        let dst = at
            .checked_add(bytes.len())
            .and_then(|end| self.mem.get_mut(at..end))
            .ok_or(RamFlashError(NorFlashErrorKind::OutOfBounds))?;
        if dst.iter().zip(bytes).any(|(&old, &new)| new & !old != 0) {
            // Programming only clears bits: this write needed an erase first.
            return Err(RamFlashError(NorFlashErrorKind::Other));
        }
        for (d, &b) in dst.iter_mut().zip(bytes) {
            *d &= b;
        }
        self.written += bytes.len() as u32;
        Ok(())
    }
}
