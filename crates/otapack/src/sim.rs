//! A simulated NOR flash for tests, `otapack apply` and `otapack simulate`: erases to 0xFF,
//! programming can only clear bits (programming a 0 back to 1 is an error, as on real NOR),
//! erase and write granularity are enforced, and erases are counted per sector.
//!
//! Power loss: flashes that share a [`PowerCut`] count their erase and program operations
//! together. When the count reaches the cut point, that operation is *torn* (a program
//! writes only its first bytes, an erase resets only the first part of its range, as set by
//! [`PowerCut::torn_permille`]) and fails, and every later operation fails until
//! [`PowerCut::restore`]: the device is off. The code under test sees flash errors and stops;
//! the test then "reboots" it.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use std::cell::Cell;
use std::rc::Rc;

/// A power cut shared by the flashes of one simulated device.
#[derive(Debug, Default)]
pub struct PowerCut {
    /// Erase and program operations so far (all flashes sharing this).
    pub ops: Cell<u64>,
    /// The operation (1-based) during which power fails.
    pub cut_at: Cell<Option<u64>>,
    /// How much of the cut operation still happens, in thousandths (0 = none, 500 = half).
    pub torn_permille: Cell<u32>,
    /// Power is off.
    pub off: Cell<bool>,
    /// Cuts that happened.
    pub cuts: Cell<u64>,
}

impl PowerCut {
    pub fn new() -> Rc<Self> {
        Rc::new(PowerCut::default())
    }
    /// Schedules a cut during operation `op` (counted from now), tearing `torn_permille`.
    pub fn arm(&self, op: u64, torn_permille: u32) {
        self.cut_at.set(Some(self.ops.get() + op));
        self.torn_permille.set(torn_permille.min(1000));
    }
    /// Power comes back (a reboot); no cut is armed.
    pub fn restore(&self) {
        self.off.set(false);
        self.cut_at.set(None);
    }
    /// Counts one operation; returns `Some(bytes that still happen)` if this one is cut, and
    /// `Err` if power is already off.
    fn op(&self, len: usize) -> Result<Option<usize>, SimFlashError> {
        if self.off.get() {
            return Err(SimFlashError(NorFlashErrorKind::Other));
        }
        let n = self.ops.get() + 1;
        self.ops.set(n);
        if self.cut_at.get() == Some(n) {
            self.off.set(true);
            self.cuts.set(self.cuts.get() + 1);
            let done = len * self.torn_permille.get() as usize / 1000;
            return Ok(Some(done));
        }
        Ok(None)
    }
}

/// A NOR flash of `WRITE`-byte program units and `ERASE`-byte sectors.
#[derive(Debug, Clone)]
pub struct SimFlash<const WRITE: usize, const ERASE: usize> {
    pub data: Vec<u8>,
    /// Erases per sector.
    pub erases: Vec<u32>,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub writes: u64,
    /// Shared power-cut control, if this flash takes part in fault injection.
    pub power: Option<Rc<PowerCut>>,
    /// Each program unit may be programmed once per erase (flash with ECC, such as many
    /// Cortex-M internal flashes): programming a unit that is not all 0xFF fails, even if it
    /// would only clear bits.
    pub program_once: bool,
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
            bytes_read: 0,
            writes: 0,
            power: None,
            program_once: false,
        }
    }
    /// The same, taking part in the power cuts of `power`.
    pub fn with_power(capacity: usize, power: &Rc<PowerCut>) -> Self {
        let mut f = Self::new(capacity);
        f.power = Some(Rc::clone(power));
        f
    }
    /// Counts an operation of `len` bytes against the power cut, if any.
    fn power_op(&self, len: usize) -> Result<Option<usize>, SimFlashError> {
        match &self.power {
            Some(p) => p.op(len),
            None => Ok(None),
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
        if self.power.as_ref().is_some_and(|p| p.off.get()) {
            return Err(SimFlashError(NorFlashErrorKind::Other));
        }
        let at = offset as usize;
        let src = self
            .data
            .get(at..at + bytes.len())
            .ok_or(SimFlashError(NorFlashErrorKind::OutOfBounds))?;
        bytes.copy_from_slice(src);
        self.bytes_read += bytes.len() as u64;
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
        if let Some(done) = self.power_op(to - from)? {
            // A torn erase: the first part of the range is reset, the rest is not.
            self.data[from..from + done].fill(0xFF);
            return Err(SimFlashError(NorFlashErrorKind::Other));
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
        if self.program_once && dst.iter().any(|&b| b != 0xFF) {
            return Err(SimFlashError(NorFlashErrorKind::Other));
        }
        if dst.iter().zip(bytes).any(|(&old, &new)| new & !old != 0) {
            // NOR programming only clears bits: this write needed an erase first.
            return Err(SimFlashError(NorFlashErrorKind::Other));
        }
        let torn = self.power_op(bytes.len())?;
        let n = torn.unwrap_or(bytes.len());
        let dst = &mut self.data[at..at + n];
        for (d, &b) in dst.iter_mut().zip(bytes) {
            *d &= b;
        }
        self.bytes_written += n as u64;
        self.writes += 1;
        match torn {
            Some(_) => Err(SimFlashError(NorFlashErrorKind::Other)),
            None => Ok(()),
        }
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
