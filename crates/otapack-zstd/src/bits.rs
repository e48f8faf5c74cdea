//! Bit readers (RFC 8878 §4.1): forward for FSE table descriptions, backward for the
//! entropy-coded bitstreams. Forked from ruzstd 0.9.1 `bit_io` (MIT); every read is checked.

use crate::Error;

/// Reads bits from the start of a buffer, least significant first (FSE table descriptions).
pub(crate) struct BitReader<'s> {
    /// Bits already read.
    idx: usize,
    source: &'s [u8],
}

impl<'s> BitReader<'s> {
    pub(crate) fn new(source: &'s [u8]) -> Self {
        BitReader { idx: 0, source }
    }

    pub(crate) fn bits_read(&self) -> usize {
        self.idx
    }

    /// Gives back the last `n` bits read (n <= what was read).
    pub(crate) fn return_bits(&mut self, n: usize) {
        self.idx = self.idx.saturating_sub(n);
    }

    /// The next `n` (at most 32) bits.
    pub(crate) fn get_bits(&mut self, n: u32) -> Result<u32, Error> {
        let mut value = 0u64;
        let mut done = 0u32;
        while done < n {
            let byte = *self
                .source
                .get(self.idx / 8)
                .ok_or(Error::Corrupt("table description truncated"))?;
            let in_byte = (self.idx % 8) as u32;
            let take = (8 - in_byte).min(n - done);
            let bits = (u64::from(byte) >> in_byte) & ((1u64 << take) - 1);
            value |= bits << done;
            done += take;
            self.idx += take as usize;
        }
        Ok(value as u32)
    }
}

/// Reads a bitstream backwards from its end (RFC 8878 §4.1): a container of up to 64 bits is
/// refilled a byte at a time. Reading past the start yields zero bits and makes
/// [`bits_remaining`](Self::bits_remaining) negative, which the callers check.
pub(crate) struct BitReaderReversed<'s> {
    /// The index of the last byte loaded into the container.
    index: usize,
    /// Bits of `container` already consumed.
    consumed: u8,
    /// Bits consumed past the start of the input.
    extra: usize,
    source: &'s [u8],
    container: u64,
}

impl<'s> BitReaderReversed<'s> {
    pub(crate) fn new(source: &'s [u8]) -> Self {
        BitReaderReversed {
            index: source.len(),
            consumed: 64,
            extra: 0,
            source,
            container: 0,
        }
    }

    /// Skips the padding: the zero bits and the first set bit of the last byte. The last byte
    /// must not be zero.
    pub(crate) fn skip_padding(source: &'s [u8]) -> Result<Self, Error> {
        let last = *source.last().ok_or(Error::Corrupt("empty bitstream"))?;
        if last == 0 {
            return Err(Error::Corrupt("bitstream without its end mark"));
        }
        let mut br = Self::new(source);
        br.get_bits(last.leading_zeros() as u8 + 1);
        Ok(br)
    }

    /// Bits left to read; negative once the reader went past the start.
    pub(crate) fn bits_remaining(&self) -> isize {
        self.index as isize * 8 + (64 - self.consumed as isize) - self.extra as isize
    }

    fn refill(&mut self) {
        let bytes_consumed = usize::from(self.consumed / 8);
        if bytes_consumed == 0 {
            return;
        }
        if self.index >= bytes_consumed {
            self.index -= bytes_consumed;
            self.consumed &= 7;
            let mut word = [0u8; 8];
            let end = self.index + 8;
            if let Some(src) = self.source.get(self.index..end) {
                word.copy_from_slice(src);
            }
            self.container = u64::from_le_bytes(word);
        } else if self.index > 0 {
            let mut word = [0u8; 8];
            let n = self.source.len().min(8);
            if let (Some(dst), Some(src)) = (word.get_mut(..n), self.source.get(..n)) {
                dst.copy_from_slice(src);
            }
            self.container = u64::from_le_bytes(word);
            self.consumed -= 8 * self.index as u8;
            self.index = 0;
            self.container <<= self.consumed;
            self.extra += usize::from(self.consumed);
            self.consumed = 0;
        } else if self.consumed < 64 {
            self.container <<= self.consumed;
            self.extra += usize::from(self.consumed);
            self.consumed = 0;
        } else {
            self.extra += usize::from(self.consumed);
            self.consumed = 0;
            self.container = 0;
        }
    }

    /// The next `n` (at most 56) bits; zeros past the start.
    #[inline(always)]
    pub(crate) fn get_bits(&mut self, n: u8) -> u64 {
        if n == 0 {
            return 0;
        }
        if self.consumed + n > 64 {
            self.refill();
        }
        let shift = 64 - self.consumed - n;
        let value = (self.container >> shift) & ((1u64 << n) - 1);
        self.consumed += n;
        value
    }

    /// Up to 64 bits, in two reads when needed.
    pub(crate) fn get_bits_wide(&mut self, n: u8) -> u64 {
        if n <= 56 {
            self.get_bits(n)
        } else {
            let high = self.get_bits(n - 32);
            (high << 32) | self.get_bits(32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reversed_reads_from_the_end_and_pads_with_zeros() {
        let data = [0b1010_1010, 0b0101_0101];
        let mut br = BitReaderReversed::new(&data);
        assert_eq!(br.get_bits(1), 0);
        assert_eq!(br.get_bits(1), 1);
        assert_eq!(br.get_bits(1), 0);
        assert_eq!(br.get_bits(4), 0b1010);
        assert_eq!(br.get_bits(4), 0b1101);
        assert_eq!(br.get_bits(4), 0b0101);
        assert_eq!(br.get_bits(4), 0b0000);
        assert_eq!(br.get_bits(4), 0b0000);
        assert_eq!(br.bits_remaining(), -7);
    }

    #[test]
    fn reversed_skips_padding_and_refuses_a_zero_end() {
        let data = [0xFF, 0b0001_0110];
        let mut br = BitReaderReversed::skip_padding(&data).unwrap();
        assert_eq!(br.bits_remaining(), 12);
        assert_eq!(br.get_bits(4), 0b0110);
        assert!(BitReaderReversed::skip_padding(&[1, 0]).is_err());
        assert!(BitReaderReversed::skip_padding(&[]).is_err());
    }

    #[test]
    fn reversed_long_reads_cross_the_container() {
        let data: [u8; 16] = core::array::from_fn(|i| (i as u8).wrapping_mul(37) ^ 0x5A);
        let mut br = BitReaderReversed::new(&data);
        let whole = u128::from_le_bytes(data);
        let a = br.get_bits_wide(63);
        let b = br.get_bits_wide(65 - 32);
        let c = br.get_bits(32);
        assert_eq!(u128::from(a), whole >> 65);
        assert_eq!(u128::from(b), (whole >> 32) & ((1 << 33) - 1));
        assert_eq!(u128::from(c), whole & 0xFFFF_FFFF);
        assert_eq!(br.bits_remaining(), 0);
    }

    #[test]
    fn forward_reads_least_significant_first() {
        let data = [0b1011_0110, 0b0000_0011];
        let mut br = BitReader::new(&data);
        assert_eq!(br.get_bits(3).unwrap(), 0b110);
        assert_eq!(br.get_bits(7).unwrap(), 0b11_10110);
        br.return_bits(2);
        assert_eq!(br.get_bits(2).unwrap(), 0b11);
        assert_eq!(br.bits_read(), 10);
        assert!(br.get_bits(7).is_err());
    }
}
