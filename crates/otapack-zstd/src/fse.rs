//! FSE decoding tables (RFC 8878 §4.1.1), in fixed arrays. Forked from ruzstd 0.9.1
//! `fse/fse_decoder.rs` (MIT): the table description reader and the symbol spread are
//! ruzstd's; the storage is fixed-size and every bound is checked.

use crate::bits::{BitReader, BitReaderReversed};
use crate::Error;

/// One table cell: the symbol, and how to reach the next state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) base_line: u16,
    pub(crate) num_bits: u8,
    pub(crate) symbol: u8,
}

/// An FSE decoding table of at most `N` (= 2^max accuracy log) states. An accuracy log of 0
/// with a single cell is an RLE table: always the same symbol, no bits read.
#[derive(Debug, Clone)]
pub(crate) struct FseTable<const N: usize> {
    entries: [Entry; N],
    accuracy_log: u8,
    /// Whether the table holds a decoded description (the Repeat mode needs one).
    pub(crate) valid: bool,
}

/// `Accuracy_Log` is the first 4 bits of a description plus this.
const ACC_LOG_OFFSET: u32 = 5;

impl<const N: usize> FseTable<N> {
    pub(crate) const fn new() -> Self {
        FseTable {
            entries: [Entry {
                base_line: 0,
                num_bits: 0,
                symbol: 0,
            }; N],
            accuracy_log: 0,
            valid: false,
        }
    }

    fn max_log() -> u8 {
        N.trailing_zeros() as u8
    }

    /// An RLE table: `symbol` every time.
    pub(crate) fn set_rle(&mut self, symbol: u8) {
        self.accuracy_log = 0;
        if let Some(e) = self.entries.first_mut() {
            *e = Entry {
                base_line: 0,
                num_bits: 0,
                symbol,
            };
        }
        self.valid = true;
    }

    /// Reads a table description from the start of `source` (symbols up to `max_symbol`);
    /// returns the bytes it used.
    pub(crate) fn read(&mut self, source: &[u8], max_symbol: u8) -> Result<usize, Error> {
        self.valid = false;
        let mut probs = [0i16; 256];
        let mut br = BitReader::new(source);
        let acc_log = ACC_LOG_OFFSET + br.get_bits(4)?;
        if acc_log > u32::from(Self::max_log()) {
            return Err(Error::Corrupt("FSE accuracy log too large"));
        }
        let sum = 1u32 << acc_log;
        let mut counter = 0u32;
        let mut symbols = 0usize;
        while counter < sum {
            let max_remaining = sum - counter + 1;
            let bits = u32::BITS - max_remaining.leading_zeros();
            let unchecked = br.get_bits(bits)?;
            let low_threshold = ((1u32 << bits) - 1) - max_remaining;
            let mask = (1u32 << (bits - 1)) - 1;
            let small = unchecked & mask;
            let value = if small < low_threshold {
                br.return_bits(1);
                small
            } else if unchecked > mask {
                unchecked - low_threshold
            } else {
                unchecked
            };
            let prob = value as i32 - 1;
            *probs
                .get_mut(symbols)
                .ok_or(Error::Corrupt("FSE table has too many symbols"))? = prob as i16;
            symbols += 1;
            if prob != 0 {
                counter += if prob > 0 { prob as u32 } else { 1 };
            } else {
                // A run of zero probabilities: 2-bit repeat counts, 3 meaning "and more".
                loop {
                    let skip = br.get_bits(2)? as usize;
                    symbols += skip;
                    if symbols > 256 {
                        return Err(Error::Corrupt("FSE table has too many symbols"));
                    }
                    if skip != 3 {
                        break;
                    }
                }
            }
        }
        if counter != sum {
            return Err(Error::Corrupt("FSE probabilities do not add up"));
        }
        if symbols > usize::from(max_symbol) + 1 {
            return Err(Error::Corrupt("FSE symbol out of range"));
        }
        let probs = probs.get(..symbols).unwrap_or(&[]);
        self.build(acc_log as u8, probs)?;
        Ok(br.bits_read().div_ceil(8))
    }

    /// Builds the table from normalised probabilities (-1: "less than one").
    pub(crate) fn build(&mut self, acc_log: u8, probs: &[i16]) -> Result<(), Error> {
        self.valid = false;
        if acc_log == 0 || acc_log > Self::max_log() || probs.len() > 256 {
            return Err(Error::Corrupt("FSE accuracy log out of range"));
        }
        let size = 1usize << acc_log;
        let cells = self
            .entries
            .get_mut(..size)
            .ok_or(Error::Corrupt("FSE table too large"))?;
        cells.fill(Entry::default());
        // Symbols of probability -1 take one cell each, from the top.
        let mut high = size;
        for (symbol, &p) in probs.iter().enumerate() {
            if p == -1 {
                high = high
                    .checked_sub(1)
                    .ok_or(Error::Corrupt("FSE probabilities overflow the table"))?;
                let e = cells.get_mut(high).ok_or(Error::Corrupt("FSE table"))?;
                *e = Entry {
                    base_line: 0,
                    num_bits: acc_log,
                    symbol: symbol as u8,
                };
            }
        }
        // The others are spread over the remaining cells, which they must fill exactly.
        let positive: usize = probs.iter().map(|&p| p.max(0) as usize).sum();
        if positive != high {
            return Err(Error::Corrupt("FSE probabilities do not fill the table"));
        }
        let step = (size >> 1) + (size >> 3) + 3;
        let mut position = 0usize;
        for (symbol, &p) in probs.iter().enumerate() {
            for _ in 0..p.max(0) {
                let e = cells
                    .get_mut(position)
                    .ok_or(Error::Corrupt("FSE probabilities overflow the table"))?;
                e.symbol = symbol as u8;
                loop {
                    position = (position + step) & (size - 1);
                    if position < high {
                        break;
                    }
                }
            }
        }
        if position != 0 {
            return Err(Error::Corrupt("FSE probabilities do not fill the table"));
        }
        // Baselines and bit counts, once every symbol is placed.
        let mut seen = [0u16; 256];
        for e in cells.iter_mut().take(high) {
            let p = *probs
                .get(usize::from(e.symbol))
                .ok_or(Error::Corrupt("FSE table"))?;
            let count = seen
                .get_mut(usize::from(e.symbol))
                .ok_or(Error::Corrupt("FSE table"))?;
            let (base_line, num_bits) = baseline_and_bits(size as u32, p.max(0) as u32, *count);
            if num_bits > acc_log {
                return Err(Error::Corrupt("FSE table"));
            }
            *count += 1;
            e.base_line = base_line as u16;
            e.num_bits = num_bits;
        }
        self.accuracy_log = acc_log;
        self.valid = true;
        Ok(())
    }

    fn entry(&self, state: usize) -> Entry {
        // `state` < 2^accuracy_log <= N by construction (baseline + bits read).
        self.entries.get(state).copied().unwrap_or_default()
    }
}

/// A decoding state walking one table.
pub(crate) struct FseDecoder<'t, const N: usize> {
    table: &'t FseTable<N>,
    state: Entry,
}

impl<'t, const N: usize> FseDecoder<'t, N> {
    /// Reads the initial state from `br`. The table must be valid.
    pub(crate) fn new(
        table: &'t FseTable<N>,
        br: &mut BitReaderReversed<'_>,
    ) -> Result<Self, Error> {
        if !table.valid {
            return Err(Error::Corrupt("repeat of an FSE table never sent"));
        }
        let state = table.entry(br.get_bits(table.accuracy_log) as usize);
        Ok(FseDecoder { table, state })
    }

    pub(crate) fn symbol(&self) -> u8 {
        self.state.symbol
    }

    pub(crate) fn update(&mut self, br: &mut BitReaderReversed<'_>) {
        let add = br.get_bits(self.state.num_bits) as usize;
        self.state = self.table.entry(usize::from(self.state.base_line) + add);
    }
}

fn baseline_and_bits(total: u32, prob: u32, nth: u16) -> (u32, u8) {
    if prob == 0 {
        return (0, 0);
    }
    let nth = u32::from(nth);
    let slices = prob.next_power_of_two();
    let double = slices - prob;
    let single = prob - double;
    let width = total / slices;
    let bits = (u32::BITS - width.leading_zeros()).saturating_sub(1);
    if nth < double {
        (single * width + nth * width * 2, bits as u8 + 1)
    } else {
        ((nth - double) * width, bits as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predefined_tables_give_each_symbol_its_probability_and_valid_transitions() {
        for (log, probs) in [
            (6u8, &crate::block::LL_DEFAULT[..]),
            (6, &crate::block::ML_DEFAULT[..]),
            (5, &crate::block::OF_DEFAULT[..]),
        ] {
            let mut t = FseTable::<512>::new();
            t.build(log, probs).unwrap();
            let size = 1usize << log;
            for (symbol, &p) in probs.iter().enumerate() {
                let cells = (0..size).filter(|&s| usize::from(t.entry(s).symbol) == symbol);
                assert_eq!(cells.count(), p.unsigned_abs() as usize, "symbol {symbol}");
            }
            for s in 0..size {
                let e = t.entry(s);
                assert!(
                    usize::from(e.base_line) + (1 << e.num_bits) <= size,
                    "state {s}"
                );
            }
        }
    }

    #[test]
    fn descriptions_that_do_not_add_up_are_refused() {
        let mut t = FseTable::<64>::new();
        // Accuracy log 5 + 15 = 20: above the table's 6.
        assert!(t.read(&[0x0F, 0xFF], 255).is_err());
        assert!(!t.valid);
        // Truncated: the probabilities run out of bits.
        assert!(t.read(&[0x00], 255).is_err());
    }
}
