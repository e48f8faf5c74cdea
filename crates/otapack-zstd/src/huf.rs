//! Huffman literal decoding (RFC 8878 §4.2), in a fixed table. Forked from ruzstd 0.9.1
//! `huff0/huff0_decoder.rs` (MIT): the weight reader and table construction are ruzstd's; the
//! storage is fixed-size and the asserts are errors.

use crate::bits::BitReaderReversed;
use crate::fse::{FseDecoder, FseTable};
use crate::Error;

/// RFC 8878: a Huffman code is at most 11 bits long.
pub(crate) const MAX_BITS: u8 = 11;
const TABLE: usize = 1 << MAX_BITS;

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    symbol: u8,
    num_bits: u8,
}

/// A Huffman decoding table: 2^max_bits cells indexed by the next `max_bits` bits.
#[derive(Debug, Clone)]
pub(crate) struct HufTable {
    decode: [Entry; TABLE],
    pub(crate) max_bits: u8,
}

impl HufTable {
    pub(crate) const fn new() -> Self {
        HufTable {
            decode: [Entry {
                symbol: 0,
                num_bits: 0,
            }; TABLE],
            max_bits: 0,
        }
    }

    /// Whether a table was read (a Treeless literals section reuses it).
    pub(crate) fn valid(&self) -> bool {
        self.max_bits != 0
    }

    /// Reads a Huffman tree description from the start of `source`; returns the bytes used.
    pub(crate) fn read(&mut self, source: &[u8]) -> Result<usize, Error> {
        self.max_bits = 0;
        let mut weights = [0u8; 256];
        let (count, used) = read_weights(source, &mut weights)?;
        self.build(weights.get(..count).unwrap_or(&[]))?;
        Ok(used)
    }

    fn build(&mut self, weights: &[u8]) -> Result<(), Error> {
        let corrupt = Error::Corrupt("Huffman weights");
        let mut sum = 0u32;
        for &w in weights {
            if w > MAX_BITS {
                return Err(corrupt);
            }
            if w > 0 {
                sum += 1 << (w - 1);
            }
        }
        if sum == 0 {
            return Err(corrupt);
        }
        let max_bits = (u32::BITS - sum.leading_zeros()) as u8;
        if max_bits > MAX_BITS {
            return Err(corrupt);
        }
        // The last symbol's weight is implied: what completes a power of two.
        let left_over = (1u32 << max_bits) - sum;
        if !left_over.is_power_of_two() {
            return Err(corrupt);
        }
        let last_weight = (u32::BITS - left_over.leading_zeros()) as u8;
        let symbols = weights.len() + 1;
        if symbols > 256 {
            return Err(corrupt);
        }
        let bits_of = |symbol: usize| -> u8 {
            let w = weights.get(symbol).copied().unwrap_or(last_weight);
            if w > 0 {
                max_bits + 1 - w
            } else {
                0
            }
        };
        // Cells per code length, then each length's first cell (longest codes first).
        let mut rank_count = [0u32; MAX_BITS as usize + 2];
        for s in 0..symbols {
            let b = usize::from(bits_of(s));
            *rank_count.get_mut(b).ok_or(corrupt)? += 1;
        }
        let mut rank_start = [0usize; MAX_BITS as usize + 2];
        for b in (1..=usize::from(max_bits)).rev() {
            let next = *rank_start.get(b).ok_or(corrupt)?;
            let count = *rank_count.get(b).ok_or(corrupt)? as usize;
            *rank_start.get_mut(b - 1).ok_or(corrupt)? =
                next + count * (1 << (usize::from(max_bits) - b));
        }
        if rank_start.first().copied() != Some(1 << max_bits) {
            return Err(corrupt);
        }
        for s in 0..symbols {
            let b = bits_of(s);
            if b == 0 {
                continue;
            }
            let start = rank_start.get_mut(usize::from(b)).ok_or(corrupt)?;
            let len = 1usize << (max_bits - b);
            let cells = self.decode.get_mut(*start..*start + len).ok_or(corrupt)?;
            cells.fill(Entry {
                symbol: s as u8,
                num_bits: b,
            });
            *start += len;
        }
        self.max_bits = max_bits;
        Ok(())
    }

    /// Decodes exactly `out.len()` symbols from one stream, which they must consume exactly.
    pub(crate) fn decode_stream(
        &self,
        stream: &[u8],
        out: &mut dyn FnMut(u8) -> Result<(), Error>,
        count: usize,
    ) -> Result<(), Error> {
        if !self.valid() {
            return Err(Error::Corrupt("treeless literals before any Huffman table"));
        }
        let mut br = BitReaderReversed::skip_padding(stream)?;
        let mask = (1usize << self.max_bits) - 1;
        let mut state = br.get_bits(self.max_bits) as usize;
        for _ in 0..count {
            let e = self.decode.get(state & mask).copied().unwrap_or_default();
            out(e.symbol)?;
            state = ((state << e.num_bits) & mask) | br.get_bits(e.num_bits) as usize;
        }
        if br.bits_remaining() != -isize::from(self.max_bits) {
            return Err(Error::Corrupt("Huffman stream length"));
        }
        Ok(())
    }
}

/// Reads the weights of a tree description (RFC 8878 §4.2.1.2): FSE-compressed, or 4 bits
/// each. Returns how many weights and the bytes used.
fn read_weights(source: &[u8], weights: &mut [u8; 256]) -> Result<(usize, usize), Error> {
    let corrupt = Error::Corrupt("Huffman tree description");
    let header = usize::from(*source.first().ok_or(corrupt)?);
    let body = source.get(1..).unwrap_or(&[]);
    if header < 128 {
        let compressed = body.get(..header).ok_or(corrupt)?;
        let mut table = FseTable::<64>::new();
        let used = table.read(compressed, 255)?;
        let stream = compressed.get(used..).ok_or(corrupt)?;
        let mut br = BitReaderReversed::skip_padding(stream)?;
        let mut d1 = FseDecoder::new(&table, &mut br)?;
        let mut d2 = FseDecoder::new(&table, &mut br)?;
        let mut n = 0usize;
        let mut push = |w: u8, n: &mut usize| -> Result<(), Error> {
            *weights.get_mut(*n).ok_or(corrupt)? = w;
            *n += 1;
            Ok(())
        };
        // Two interleaved states over one stream, until it is exhausted.
        loop {
            push(d1.symbol(), &mut n)?;
            d1.update(&mut br);
            if br.bits_remaining() <= -1 {
                push(d2.symbol(), &mut n)?;
                break;
            }
            push(d2.symbol(), &mut n)?;
            d2.update(&mut br);
            if br.bits_remaining() <= -1 {
                push(d1.symbol(), &mut n)?;
                break;
            }
        }
        if n > 255 {
            return Err(corrupt);
        }
        Ok((n, 1 + header))
    } else {
        let n = header - 127;
        let packed = body.get(..n.div_ceil(2)).ok_or(corrupt)?;
        for i in 0..n {
            let byte = *packed.get(i / 2).ok_or(corrupt)?;
            *weights.get_mut(i).ok_or(corrupt)? = if i % 2 == 0 { byte >> 4 } else { byte & 0xF };
        }
        Ok((n, 1 + packed.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_weights_build_a_complete_code() {
        // Weights 2, 1, 1 (and an implied last one): 2^1 + 1 + 1 = 4, so max_bits 3 and the
        // last weight completes 8 with 4, i.e. weight 3.
        let mut t = HufTable::new();
        let used = t.read(&[127 + 3, 0x21, 0x10]).unwrap();
        assert_eq!(used, 3);
        assert_eq!(t.max_bits, 3);
        // Symbol 3 (weight 3) has a 1-bit code: half the cells.
        let s3 = t.decode.iter().take(8).filter(|e| e.symbol == 3).count();
        assert_eq!(s3, 4);
        assert!(t.decode.iter().take(8).all(|e| e.num_bits >= 1));
    }

    #[test]
    fn weights_that_leave_no_power_of_two_are_refused() {
        let mut t = HufTable::new();
        // Weights 2 and 1 sum to 3: the remainder to 4 is 1 (fine); 3, 3, 1 sum to 9: the
        // remainder to 16 is 7, not a power of two.
        assert!(t.read(&[127 + 3, 0x33, 0x10]).is_err());
        assert!(!t.valid());
        assert!(t.read(&[]).is_err());
        assert!(t.read(&[127 + 4, 0x11]).is_err()); // truncated
    }
}
