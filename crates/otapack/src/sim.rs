//! A simulated NOR flash for tests and `otapack apply`: erases to 0xFF, programming can only
//! clear bits (programming a 0 back to 1 is an error, as on real NOR), erase and write
//! granularity are enforced, and erases are counted per sector.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// A NOR flash of `WRITE`-byte program units and `ERASE`-byte sectors.
#[derive(Debug, Clone)]
pub struct SimFlash<const WRITE: usize, const ERASE: usize> {
    pub data: Vec<u8>,
    /// Erases per sector.
    pub erases: Vec<u32>,
    pub bytes_written: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimFlashError(pub NorFlashErrorKind);

impl NorFlashError for SimFlashError {
    fn kind(&self) -> NorFlashErrorKind {
        self.0
    }
}

impl<const WRITE: usize, const ERASE: usize> SimFlash<WRITE, ERASE> {
    /// An erased flash of at least `capacity` bytes (rounded up to whole sectors).
    pub fn new(capacity: usize) -> Self {
        let sectors = capacity.div_ceil(ERASE).max(1);
        SimFlash {
            data: vec![0xFF; sectors * ERASE],
            erases: vec![0; sectors],
            bytes_written: 0,
        }
    }
    pub fn erases_total(&self) -> u64 {
        self.erases.iter().map(|&e| u64::from(e)).sum()
    }
    pub fn erases_max_per_sector(&self) -> u32 {
        self.erases.iter().copied().max().unwrap_or(0)
    }
}

impl<const WRITE: usize, const ERASE: usize> ErrorType for SimFlash<WRITE, ERASE> {
    type Error = SimFlashError;
}

impl<const WRITE: usize, const ERASE: usize> ReadNorFlash for SimFlash<WRITE, ERASE> {
    const READ_SIZE: usize = 1;
    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        let src = self
            .data
            .get(at..at + bytes.len())
            .ok_or(SimFlashError(NorFlashErrorKind::OutOfBounds))?;
        bytes.copy_from_slice(src);
        Ok(())
    }
    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const WRITE: usize, const ERASE: usize> NorFlash for SimFlash<WRITE, ERASE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let (from, to) = (from as usize, to as usize);
        if !from.is_multiple_of(ERASE) || !to.is_multiple_of(ERASE) {
            return Err(SimFlashError(NorFlashErrorKind::NotAligned));
        }
        if from > to || to > self.data.len() {
            return Err(SimFlashError(NorFlashErrorKind::OutOfBounds));
        }
        self.data[from..to].fill(0xFF);
        for e in &mut self.erases[from / ERASE..to / ERASE] {
            *e += 1;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        let at = offset as usize;
        if !at.is_multiple_of(WRITE) || !bytes.len().is_multiple_of(WRITE) {
            return Err(SimFlashError(NorFlashErrorKind::NotAligned));
        }
        let dst = self
            .data
            .get_mut(at..at + bytes.len())
            .ok_or(SimFlashError(NorFlashErrorKind::OutOfBounds))?;
        if dst.iter().zip(bytes).any(|(&old, &new)| new & !old != 0) {
            // NOR programming only clears bits: this write needed an erase first.
            return Err(SimFlashError(NorFlashErrorKind::Other));
        }
        for (d, &b) in dst.iter_mut().zip(bytes) {
            *d &= b;
        }
        self.bytes_written += bytes.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_nor() {
        let mut f = SimFlash::<4, 4096>::new(8192);
        assert_eq!(f.data.len(), 8192);
        f.write(0, &[0x0F, 0xF0, 0x00, 0xFF]).unwrap();
        assert_eq!(&f.data[..4], &[0x0F, 0xF0, 0x00, 0xFF]);
        // Setting a bit without an erase fails; clearing more bits works.
        assert!(f.write(0, &[0xFF, 0xF0, 0x00, 0xFF]).is_err());
        f.write(0, &[0x0E, 0x00, 0x00, 0xFF]).unwrap();
        assert!(f.write(2, &[0; 4]).is_err(), "unaligned");
        assert!(f.erase(100, 4096).is_err(), "unaligned");
        f.erase(0, 4096).unwrap();
        assert_eq!(&f.data[..4], &[0xFF; 4]);
        assert_eq!(f.erases, [1, 0]);
        assert!(f.write(8192, &[0; 4]).is_err());
    }
}
