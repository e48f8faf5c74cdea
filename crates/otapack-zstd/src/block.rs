//! Compressed blocks (RFC 8878 §3.1.1.3): literals decoded into the ring's far end, sequences
//! decoded and executed one at a time.

use crate::bits::BitReaderReversed;
use crate::fse::{FseDecoder, FseTable};
use crate::huf::HufTable;
use crate::Error;

/// RFC 8878's Block_Maximum_Size ceiling.
pub const MAX_BLOCK: usize = 128 * 1024;

const MAX_LL_CODE: u8 = 35;
const MAX_ML_CODE: u8 = 52;
const MAX_OF_CODE: u8 = 31;

// RFC 8878 §3.1.1.3.2.2, the predefined distributions.
pub(crate) const LL_DEFAULT: [i16; 36] = [
    4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1, 1,
    -1, -1, -1, -1,
];
pub(crate) const ML_DEFAULT: [i16; 53] = [
    1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1,
];
pub(crate) const OF_DEFAULT: [i16; 29] = [
    1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1,
];

/// Entropy tables and repeat offsets: what one block leaves to the next in a frame.
#[derive(Debug, Clone)]
pub(crate) struct Tables {
    huf: HufTable,
    ll: FseTable<512>,
    ml: FseTable<512>,
    of: FseTable<256>,
    rep: [u64; 3],
}

impl Tables {
    pub(crate) const fn new() -> Self {
        Tables {
            huf: HufTable::new(),
            ll: FseTable::new(),
            ml: FseTable::new(),
            of: FseTable::new(),
            rep: [1, 4, 8],
        }
    }

    /// A new frame: no table to repeat, the initial repeat offsets.
    pub(crate) fn reset(&mut self) {
        self.huf.max_bits = 0;
        self.ll.valid = false;
        self.ml.valid = false;
        self.of.valid = false;
        self.rep = [1, 4, 8];
    }
}

/// Writes one block's output into the ring, checking every bound: the block's size, and that
/// matches reach only into the window and the frame's output (and its prefix, if it has one).
pub(crate) struct Writer<'r, 'p> {
    pub(crate) ring: &'r mut [u8],
    /// Where the block starts in the ring, and its bytes so far.
    pub(crate) start: usize,
    pub(crate) len: usize,
    pub(crate) block_max: usize,
    pub(crate) window: u64,
    /// The frame's output before this block.
    pub(crate) before: u64,
    /// The frame's prefix and its length (0: none).
    pub(crate) prefix: Option<&'p mut dyn crate::Prefix>,
    pub(crate) prefix_len: u64,
}

impl Writer<'_, '_> {
    fn at(&self, offset: usize) -> usize {
        (self.start + offset) % self.ring.len()
    }

    fn grow(&mut self, n: usize) -> Result<usize, Error> {
        let at = self.len;
        let end = at
            .checked_add(n)
            .filter(|&e| e <= self.block_max)
            .ok_or(Error::Corrupt("block decodes to more than its maximum"))?;
        self.len = end;
        Ok(at)
    }

    /// Appends `data` (a raw block).
    pub(crate) fn literal_bytes(&mut self, data: &[u8]) -> Result<(), Error> {
        let at = self.grow(data.len())?;
        let to = self.at(at);
        write_wrapped(self.ring, to, data)
    }

    /// Appends `n` bytes of the prefix from offset `at` (the head of a match that reaches
    /// before the content), read straight into the ring.
    fn prefix_bytes(&mut self, at: u64, n: usize) -> Result<(), Error> {
        if at.checked_add(n as u64).is_none_or(|e| e > self.prefix_len) {
            return Err(Error::Corrupt("match offset beyond the prefix"));
        }
        if self.prefix.is_none() {
            return Err(Error::Corrupt("match offset beyond the window"));
        }
        let to = self.grow(n)?;
        let Some(prefix) = self.prefix.as_deref_mut() else {
            return Err(Error::Corrupt("match offset beyond the window"));
        };
        let to = (self.start + to) % self.ring.len();
        let first = n.min(self.ring.len() - to);
        let (head, tail) = self.ring.split_at_mut(to);
        let a = tail.get_mut(..first).ok_or(Error::Corrupt("ring"))?;
        prefix.read(at, a)?;
        let b = head.get_mut(..n - first).ok_or(Error::Corrupt("ring"))?;
        if !b.is_empty() {
            prefix.read(at + first as u64, b)?;
        }
        Ok(())
    }

    /// Appends `n` copies of `byte` (an RLE block).
    pub(crate) fn fill(&mut self, byte: u8, n: usize) -> Result<(), Error> {
        let at = self.grow(n)?;
        let mut to = self.at(at);
        let mut left = n;
        while left > 0 {
            let chunk = left.min(self.ring.len() - to);
            self.ring
                .get_mut(to..to + chunk)
                .ok_or(Error::Corrupt("ring"))?
                .fill(byte);
            to = (to + chunk) % self.ring.len();
            left -= chunk;
        }
        Ok(())
    }
}

/// Copies `data` into `ring` at `to`, wrapping at its end.
fn write_wrapped(ring: &mut [u8], to: usize, data: &[u8]) -> Result<(), Error> {
    let first = data.len().min(ring.len().saturating_sub(to));
    let (a, b) = data.split_at(first);
    ring.get_mut(to..to + a.len())
        .ok_or(Error::Corrupt("ring"))?
        .copy_from_slice(a);
    ring.get_mut(..b.len())
        .ok_or(Error::Corrupt("ring"))?
        .copy_from_slice(b);
    Ok(())
}

/// Copies `n` bytes within `ring` from `from` to `to` (ring positions), byte by byte in effect:
/// a source that overlaps the destination ahead of it repeats (an LZ match).
fn copy_wrapped(
    ring: &mut [u8],
    mut from: usize,
    mut to: usize,
    mut n: usize,
) -> Result<(), Error> {
    let r = ring.len();
    while n > 0 {
        let chunk = n.min(r - from.min(r)).min(r - to.min(r));
        if chunk == 0 {
            return Err(Error::Corrupt("ring"));
        }
        if from < to && to - from < chunk {
            // Overlapping forward: each byte may read one written just before.
            for i in 0..chunk {
                let b = *ring.get(from + i).ok_or(Error::Corrupt("ring"))?;
                *ring.get_mut(to + i).ok_or(Error::Corrupt("ring"))? = b;
            }
        } else {
            if ring.get(from..from + chunk).is_none() || ring.get(to..to + chunk).is_none() {
                return Err(Error::Corrupt("ring"));
            }
            ring.copy_within(from..from + chunk, to);
        }
        from = (from + chunk) % r;
        to = (to + chunk) % r;
        n -= chunk;
    }
    Ok(())
}

/// The literals section's header (RFC 8878 §3.1.1.3.1.1).
struct LiteralsHeader {
    kind: u8,
    regenerated: usize,
    compressed: usize,
    streams: u8,
    len: usize,
}

fn literals_header(body: &[u8]) -> Result<LiteralsHeader, Error> {
    let corrupt = Error::Corrupt("literals section header");
    let b = |i: usize| body.get(i).copied().map(usize::from).ok_or(corrupt);
    let b0 = b(0)?;
    let kind = (b0 & 3) as u8;
    let format = (b0 >> 2) & 3;
    Ok(match (kind, format) {
        (0 | 1, 0 | 2) => LiteralsHeader {
            kind,
            regenerated: b0 >> 3,
            compressed: 0,
            streams: 0,
            len: 1,
        },
        (0 | 1, 1) => LiteralsHeader {
            kind,
            regenerated: (b0 >> 4) + (b(1)? << 4),
            compressed: 0,
            streams: 0,
            len: 2,
        },
        (0 | 1, _) => LiteralsHeader {
            kind,
            regenerated: (b0 >> 4) + (b(1)? << 4) + (b(2)? << 12),
            compressed: 0,
            streams: 0,
            len: 3,
        },
        (_, 0 | 1) => {
            let (b1, b2) = (b(1)?, b(2)?);
            LiteralsHeader {
                kind,
                regenerated: (b0 >> 4) + ((b1 & 0x3F) << 4),
                compressed: (b1 >> 6) + (b2 << 2),
                streams: if format == 0 { 1 } else { 4 },
                len: 3,
            }
        }
        (_, 2) => {
            let (b1, b2, b3) = (b(1)?, b(2)?, b(3)?);
            LiteralsHeader {
                kind,
                regenerated: (b0 >> 4) + (b1 << 4) + ((b2 & 3) << 12),
                compressed: (b2 >> 2) + (b3 << 6),
                streams: 4,
                len: 4,
            }
        }
        _ => {
            let (b1, b2, b3, b4) = (b(1)?, b(2)?, b(3)?, b(4)?);
            LiteralsHeader {
                kind,
                regenerated: (b0 >> 4) + (b1 << 4) + ((b2 & 0x3F) << 12),
                compressed: (b2 >> 6) + (b3 << 2) + (b4 << 10),
                streams: 4,
                len: 5,
            }
        }
    })
}

/// Decodes a compressed block's body into `w`.
pub(crate) fn decode_compressed(
    t: &mut Tables,
    w: &mut Writer<'_, '_>,
    body: &[u8],
) -> Result<(), Error> {
    let corrupt = |what| Error::Corrupt(what);
    // Literals, into the ring's last `lits` bytes of this block's space.
    let h = literals_header(body)?;
    let lits = h.regenerated;
    if lits > w.block_max {
        return Err(corrupt("literals larger than the block"));
    }
    let lit_start = w.at(w.block_max - lits);
    let rest = body.get(h.len..).ok_or(corrupt("literals truncated"))?;
    let consumed = match h.kind {
        0 => {
            let data = rest.get(..lits).ok_or(corrupt("raw literals truncated"))?;
            write_wrapped(w.ring, lit_start, data)?;
            lits
        }
        1 => {
            let byte = *rest.first().ok_or(corrupt("RLE literals truncated"))?;
            let mut to = lit_start;
            for _ in 0..lits {
                *w.ring.get_mut(to).ok_or(corrupt("ring"))? = byte;
                to = (to + 1) % w.ring.len();
            }
            1
        }
        _ => {
            let section = rest
                .get(..h.compressed)
                .ok_or(corrupt("literals truncated"))?;
            let streams = if h.kind == 2 {
                let used = t.huf.read(section)?;
                section.get(used..).ok_or(corrupt("Huffman tree"))?
            } else {
                section
            };
            decode_huffman(&t.huf, w.ring, lit_start, lits, streams, h.streams)?;
            h.compressed
        }
    };
    let seq = rest.get(consumed..).ok_or(corrupt("block truncated"))?;
    sequences(t, w, seq, lit_start, lits)
}

/// Decodes Huffman literals (1 or 4 streams) into the ring at `to`.
fn decode_huffman(
    huf: &HufTable,
    ring: &mut [u8],
    to: usize,
    count: usize,
    src: &[u8],
    streams: u8,
) -> Result<(), Error> {
    let r = ring.len();
    let mut at = to;
    let mut out = |b: u8| -> Result<(), Error> {
        *ring.get_mut(at).ok_or(Error::Corrupt("ring"))? = b;
        at = (at + 1) % r;
        Ok(())
    };
    if streams == 1 {
        return huf.decode_stream(src, &mut out, count);
    }
    let corrupt = Error::Corrupt("Huffman jump table");
    let (jump, data) = src.split_first_chunk::<6>().ok_or(corrupt)?;
    let s1 = usize::from(u16::from_le_bytes([jump[0], jump[1]]));
    let s2 = usize::from(u16::from_le_bytes([jump[2], jump[3]]));
    let s3 = usize::from(u16::from_le_bytes([jump[4], jump[5]]));
    let (a, data) = data.split_at_checked(s1).ok_or(corrupt)?;
    let (b, data) = data.split_at_checked(s2).ok_or(corrupt)?;
    let (c, d) = data.split_at_checked(s3).ok_or(corrupt)?;
    let segment = count.div_ceil(4);
    let last = count.checked_sub(3 * segment).ok_or(corrupt)?;
    for (stream, n) in [(a, segment), (b, segment), (c, segment), (d, last)] {
        huf.decode_stream(stream, &mut out, n)?;
    }
    Ok(())
}

/// Reads one of the three sequence tables as its 2-bit mode says; returns the bytes used.
fn read_table<const N: usize>(
    table: &mut FseTable<N>,
    mode: u8,
    src: &[u8],
    max_symbol: u8,
    default_log: u8,
    default: &[i16],
) -> Result<usize, Error> {
    match mode {
        0 => {
            table.build(default_log, default)?;
            Ok(0)
        }
        1 => {
            let symbol = *src.first().ok_or(Error::Corrupt("RLE table truncated"))?;
            if symbol > max_symbol {
                return Err(Error::Corrupt("RLE symbol out of range"));
            }
            table.set_rle(symbol);
            Ok(1)
        }
        2 => table.read(src, max_symbol),
        _ => {
            if !table.valid {
                return Err(Error::Corrupt("repeat of an FSE table never sent"));
            }
            Ok(0)
        }
    }
}

fn ll_code(code: u8) -> (u32, u8) {
    match code {
        0..=15 => (u32::from(code), 0),
        16 => (16, 1),
        17 => (18, 1),
        18 => (20, 1),
        19 => (22, 1),
        20 => (24, 2),
        21 => (28, 2),
        22 => (32, 3),
        23 => (40, 3),
        24 => (48, 4),
        25 => (64, 6),
        26 => (128, 7),
        27 => (256, 8),
        28 => (512, 9),
        29 => (1024, 10),
        30 => (2048, 11),
        31 => (4096, 12),
        32 => (8192, 13),
        33 => (16384, 14),
        34 => (32768, 15),
        _ => (65536, 16),
    }
}

fn ml_code(code: u8) -> (u32, u8) {
    match code {
        0..=31 => (u32::from(code) + 3, 0),
        32 => (35, 1),
        33 => (37, 1),
        34 => (39, 1),
        35 => (41, 1),
        36 => (43, 2),
        37 => (47, 2),
        38 => (51, 3),
        39 => (59, 3),
        40 => (67, 4),
        41 => (83, 4),
        42 => (99, 5),
        43 => (131, 7),
        44 => (259, 8),
        45 => (515, 9),
        46 => (1027, 10),
        47 => (2051, 11),
        48 => (4099, 12),
        49 => (8195, 13),
        50 => (16387, 14),
        51 => (32771, 15),
        _ => (65539, 16),
    }
}

/// The sequences section: decodes each sequence and executes it at once (literals from the
/// ring's far end, then the match), so no sequence is ever stored.
fn sequences(
    t: &mut Tables,
    w: &mut Writer<'_, '_>,
    src: &[u8],
    lit_start: usize,
    lits: usize,
) -> Result<(), Error> {
    let corrupt = |what| Error::Corrupt(what);
    let b = |i: usize| {
        src.get(i)
            .copied()
            .map(usize::from)
            .ok_or(corrupt("sequences header"))
    };
    let (count, at) = match b(0)? {
        0 => {
            if src.len() != 1 {
                return Err(corrupt("bytes after an empty sequences section"));
            }
            (0, 1)
        }
        n @ 1..=127 => (n, 1),
        n @ 128..=254 => (((n - 128) << 8) + b(1)?, 2),
        _ => (b(1)? + (b(2)? << 8) + 0x7F00, 3),
    };
    // Literals consumed and match bytes produced so far: matches may total at most what the
    // block leaves beside its literals, so output never overtakes the literals' far end.
    let mut lit_used = 0usize;
    let mut matched = 0usize;
    let match_room = w.block_max - lits;
    if count > 0 {
        let modes = b(at)?;
        if modes & 3 != 0 {
            return Err(corrupt("reserved sequence mode bits"));
        }
        let mut used = at + 1;
        let tail = |used: usize| src.get(used..).ok_or(corrupt("sequences truncated"));
        used += read_table(
            &mut t.ll,
            (modes >> 6) as u8,
            tail(used)?,
            MAX_LL_CODE,
            6,
            &LL_DEFAULT,
        )?;
        used += read_table(
            &mut t.of,
            ((modes >> 4) & 3) as u8,
            tail(used)?,
            MAX_OF_CODE,
            5,
            &OF_DEFAULT,
        )?;
        used += read_table(
            &mut t.ml,
            ((modes >> 2) & 3) as u8,
            tail(used)?,
            MAX_ML_CODE,
            6,
            &ML_DEFAULT,
        )?;
        let mut br = BitReaderReversed::skip_padding(tail(used)?)?;
        let mut ll = FseDecoder::new(&t.ll, &mut br)?;
        let mut of = FseDecoder::new(&t.of, &mut br)?;
        let mut ml = FseDecoder::new(&t.ml, &mut br)?;
        for i in 0..count {
            let (ll_base, ll_bits) = ll_code(ll.symbol());
            let (ml_base, ml_bits) = ml_code(ml.symbol());
            let of_code = of.symbol();
            let offset_value = (1u64 << of_code) + br.get_bits_wide(of_code);
            let match_len = (ml_base + br.get_bits(ml_bits) as u32) as usize;
            let lit_len = (ll_base + br.get_bits(ll_bits) as u32) as usize;
            if i + 1 < count {
                ll.update(&mut br);
                ml.update(&mut br);
                of.update(&mut br);
            }
            if br.bits_remaining() < 0 {
                return Err(corrupt("sequences bitstream too short"));
            }
            let offset = resolve_offset(&mut t.rep, offset_value, lit_len)?;
            // Literals.
            if lit_used + lit_len > lits {
                return Err(corrupt("sequence needs more literals than the block has"));
            }
            let to = w.grow(lit_len)?;
            copy_wrapped(
                w.ring,
                (lit_start + lit_used) % w.ring.len(),
                w.at(to),
                lit_len,
            )?;
            lit_used += lit_len;
            // The match.
            if matched + match_len > match_room {
                return Err(corrupt("block decodes to more than its maximum"));
            }
            let available = w.before + w.len as u64;
            if offset > w.window || offset > available.saturating_add(w.prefix_len) {
                return Err(corrupt("match offset beyond the window"));
            }
            // A match that starts in the prefix: its head comes from there, and the rest (if
            // it runs past the prefix's end) from the content's start, `offset` back as ever.
            let mut left = match_len;
            if offset > available {
                let back = offset - available;
                let n = back.min(match_len as u64) as usize;
                w.prefix_bytes(w.prefix_len - back, n)?;
                left -= n;
            }
            let to = w.grow(left)?;
            let r = w.ring.len();
            let from = (w.at(to) + r - (offset as usize % r)) % r;
            copy_wrapped(w.ring, from, w.at(to), left)?;
            matched += match_len;
        }
        if br.bits_remaining() != 0 {
            return Err(corrupt("bits left after the last sequence"));
        }
    }
    // The literals no sequence took.
    let rest = lits - lit_used;
    let to = w.grow(rest)?;
    copy_wrapped(
        w.ring,
        (lit_start + lit_used) % w.ring.len(),
        w.at(to),
        rest,
    )
}

/// Turns an Offset_Value into an offset, updating the repeat offsets (RFC 8878 §3.1.2.5).
fn resolve_offset(rep: &mut [u64; 3], value: u64, lit_len: usize) -> Result<u64, Error> {
    let [r0, r1, r2] = *rep;
    let (offset, new) = match (value, lit_len > 0) {
        (v, _) if v > 3 => (v - 3, [v - 3, r0, r1]),
        (1, true) => (r0, [r0, r1, r2]),
        (2, true) | (1, false) => (r1, [r1, r0, r2]),
        (3, true) | (2, false) => (r2, [r2, r0, r1]),
        _ => {
            let o = r0.saturating_sub(1);
            (o, [o, r0, r1])
        }
    };
    if offset == 0 {
        return Err(Error::Corrupt("zero match offset"));
    }
    *rep = new;
    Ok(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_offsets_follow_rfc_8878() {
        let mut rep = [1, 4, 8];
        assert_eq!(resolve_offset(&mut rep, 10, 1), Ok(7));
        assert_eq!(rep, [7, 1, 4]);
        assert_eq!(resolve_offset(&mut rep, 1, 5), Ok(7));
        assert_eq!(rep, [7, 1, 4]);
        assert_eq!(resolve_offset(&mut rep, 2, 5), Ok(1));
        assert_eq!(rep, [1, 7, 4]);
        assert_eq!(resolve_offset(&mut rep, 3, 5), Ok(4));
        assert_eq!(rep, [4, 1, 7]);
        // Literal length 0 shifts the meaning by one.
        assert_eq!(resolve_offset(&mut rep, 1, 0), Ok(1));
        assert_eq!(rep, [1, 4, 7]);
        assert_eq!(resolve_offset(&mut rep, 2, 0), Ok(7));
        assert_eq!(rep, [7, 1, 4]);
        assert_eq!(resolve_offset(&mut rep, 3, 0), Ok(6));
        assert_eq!(rep, [6, 7, 1]);
        let mut one = [1, 4, 8];
        assert!(resolve_offset(&mut one, 3, 0).is_err()); // 1 - 1 = 0
    }

    #[test]
    fn copies_wrap_and_repeat_overlaps() {
        let mut ring = *b"abcdefgh";
        copy_wrapped(&mut ring, 6, 1, 3).unwrap(); // g h a, the source wrapping
        assert_eq!(&ring, b"aghaefgh");
        let mut ring = *b"xy______";
        copy_wrapped(&mut ring, 0, 2, 6).unwrap(); // offset 2, length 6: a repeat
        assert_eq!(&ring, b"xyxyxyxy");
        let mut ring = *b"cd____ab";
        // Offset 2 across the ring's end: the copy reads the bytes it has just written.
        copy_wrapped(&mut ring, 6, 0, 4).unwrap();
        assert_eq!(&ring, b"abab__ab");
    }
}
