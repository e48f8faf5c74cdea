//! Reference prediction for patch format 2: what a base byte most likely became once the code
//! around it moved.
//!
//! When firmware is re-linked, code and data shift, and every reference that crosses a shift
//! changes: the 32-bit absolute pointers in literal pools and vector tables, and the PC-relative
//! offsets of Thumb `BL` and AArch64 `B`/`BL` instructions. bsdiff's add-with-difference stores each such change as a
//! non-zero add byte (on the micro:bit pair in `testdata/`, 6,900 changed words, 8,252 add
//! bytes). Format 2 instead sends an **address map** (which ranges of the base moved by how
//! much) and lets the applier rewrite those references in the base bytes it reads, before the
//! add bytes are added: a reference the map predicts right costs nothing.
//!
//! # The prediction of a base byte
//!
//! All arithmetic is modulo 2^32. Offsets are base-image offsets. The map is a list of
//! `(start, shift)` entries with strictly increasing starts; `map(v)` is `v + shift` of the last
//! entry whose start is `<= v`, or `v` when there is none. An add op whose first add byte is at
//! new-image offset `q0` while the cursor is at `c0` has the displacement `d = q0 - c0`.
//! Base byte `x` read by that op is predicted as:
//!
//! | rule | when | predicted |
//! |---|---|---|
//! | Thumb `BL` (flag bit 0) | `x` lies in `[p, p+4)` for an even `p` with `p + 4 <= base_size`, `hw(p) & 0xF800 == 0xF000` and `hw(p+2) & 0xF800 == 0xF800` (`hw`: little-endian u16 of the base) | the BL re-encoded for the moved target: `off` = the 23-bit sign-extended `(hw(p) & 0x7FF) << 12 \| (hw(p+2) & 0x7FF) << 1`, `t = p + 4 + off`, `n = map(t) - (p + d + 4)`; the bytes are the LE halfwords `0xF000 \| (n >> 12) & 0x7FF` and `0xF800 \| (n >> 1) & 0x7FF`; byte `x - p` of them |
//! | AArch64 `B`/`BL` (flag bit 2) | for `a = x & !3`: `a + 4 <= base_size`, no byte of `[a, a+4)` is a Thumb BL byte (per the row above, when bit 0 is set), and `w = le32(base[a..a+4])` has `w & 0x7C00_0000 == 0x1400_0000` | the branch re-encoded for the moved target: `off` = the 26-bit sign-extended `w & 0x03FF_FFFF`, times 4; `t = a + off`, `n = map(t) - (a + d)`; the word `le32((w & 0xFC00_0000) \| (n >> 2) & 0x03FF_FFFF)`, byte `x - a` of it |
//! | pointer (flag bit 1) | for `a = x & !3`: `a + 4 <= base_size`, no byte of `[a, a+4)` is a Thumb BL byte, the word is not an AArch64 branch (per the rows above, for the flags set), and `v = le32(base[a..a+4])` has `v - address < base_size` | `le32(map(v - address) + address)`, byte `x - a` of it |
//! | otherwise | | `base[x]` |
//!
//! A halfword cannot be both a BL's first half (`11110…`) and its second (`11111…`), so BLs
//! never overlap and each byte belongs to at most one rule. The rules read base bytes up to 5 before
//! and 5 after the byte predicted, never outside the base. The prediction depends only on the
//! base, the header and `d`, never on how the op stream was cut into pieces.

use crate::error::Result;
use crate::patch::BaseImage;

/// Flag bit 0: predict ARM Thumb `BL` offsets (ARMv6-M and ARMv7-M, offsets within ±4 MiB).
pub const THUMB_BL: u8 = 1;
/// Flag bit 1: predict 32-bit little-endian absolute pointers into the base image.
pub const POINTER32: u8 = 2;
/// Flag bit 2: predict AArch64 `B` and `BL` offsets (offsets within ±128 MiB).
pub const A64_BRANCH: u8 = 4;
/// Every flag format 2 defines.
pub const ALL_FLAGS: u8 = THUMB_BL | POINTER32 | A64_BRANCH;
/// Most address-map entries a format-2 header may carry (the applier holds them, 8 bytes each).
pub const MAX_MAP_ENTRIES: usize = 64;
/// Base bytes a prediction reads before the first and after the last byte it predicts.
pub const CONTEXT: u64 = 8;

/// A format-2 patch header: which references to predict, where the base is mapped, and how it
/// moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Predict {
    flags: u8,
    address: u32,
    len: usize,
    map: [(u32, u32); MAX_MAP_ENTRIES],
}

impl Predict {
    /// A header with `flags` (see [`ALL_FLAGS`]), the base's load `address` (for pointers) and
    /// map entries `(start, shift)`; `None` if a flag is unknown, there are more than
    /// [`MAX_MAP_ENTRIES`] entries, or the starts do not strictly increase.
    pub fn new(flags: u8, address: u32, entries: &[(u32, u32)]) -> Option<Self> {
        let mut p = Predict::empty(flags, address)?;
        for &(start, shift) in entries {
            p.push(start, shift)?;
        }
        Some(p)
    }

    pub(crate) fn empty(flags: u8, address: u32) -> Option<Self> {
        (flags & !ALL_FLAGS == 0).then_some(Predict {
            flags,
            address,
            len: 0,
            map: [(0, 0); MAX_MAP_ENTRIES],
        })
    }

    /// Appends a map entry; `None` if the map is full or `start` does not increase.
    pub(crate) fn push(&mut self, start: u32, shift: u32) -> Option<()> {
        if let Some(&(last, _)) = self.entries().last() {
            if start <= last {
                return None;
            }
        }
        *self.map.get_mut(self.len)? = (start, shift);
        self.len += 1;
        Some(())
    }

    pub fn flags(&self) -> u8 {
        self.flags
    }

    pub fn address(&self) -> u32 {
        self.address
    }

    /// The map entries, by increasing start.
    pub fn entries(&self) -> &[(u32, u32)] {
        self.map.get(..self.len).unwrap_or(&[])
    }

    /// Where base offset `v` went: `v + shift` of the last entry starting at or before it.
    pub fn map(&self, v: u32) -> u32 {
        let e = self.entries();
        match e.partition_point(|&(start, _)| start <= v) {
            0 => v,
            i => e.get(i - 1).map_or(v, |&(_, shift)| v.wrapping_add(shift)),
        }
    }

    /// Predicts `out.len()` base bytes from offset `x` for an op of displacement `d`, from `ctx`,
    /// the base bytes `[lo, lo + ctx.len())`, which must cover `[x - CONTEXT, x + out.len() +
    /// CONTEXT)` clipped to the base (`base_len` bytes). Bytes `ctx` lacks count as absent.
    pub fn predict(&self, ctx: &[u8], lo: u64, base_len: u64, x: u64, d: u32, out: &mut [u8]) {
        let at = |i: u64| -> Option<u8> {
            let k = usize::try_from(i.checked_sub(lo)?).ok()?;
            ctx.get(k).copied()
        };
        let hw = |i: u64| -> Option<u16> { Some(u16::from_le_bytes([at(i)?, at(i + 1)?])) };
        let bl = |p: Option<u64>| -> Option<(u64, [u8; 4])> {
            let p = p?;
            if self.flags & THUMB_BL == 0 || p % 2 != 0 || p + 4 > base_len {
                return None;
            }
            let (h, l) = (hw(p)?, hw(p + 2)?);
            if h & 0xF800 != 0xF000 || l & 0xF800 != 0xF800 {
                return None;
            }
            let imm = (u32::from(h & 0x7FF) << 12) | (u32::from(l & 0x7FF) << 1);
            let off = (((imm << 9) as i32) >> 9) as u32;
            let p32 = p as u32;
            let target = p32.wrapping_add(4).wrapping_add(off);
            let n = self
                .map(target)
                .wrapping_sub(p32.wrapping_add(d).wrapping_add(4));
            let nh = 0xF000 | ((n >> 12) & 0x7FF) as u16;
            let nl = 0xF800 | ((n >> 1) & 0x7FF) as u16;
            let [h0, h1] = nh.to_le_bytes();
            let [l0, l1] = nl.to_le_bytes();
            Some((p, [h0, h1, l0, l1]))
        };
        // An AArch64 B/BL at the 4-aligned `a`, not overlapping a Thumb BL, re-encoded.
        let a64 = |a: u64| -> Option<[u8; 4]> {
            if self.flags & A64_BRANCH == 0 || !a.is_multiple_of(4) || a + 4 > base_len {
                return None;
            }
            if bl(a.checked_sub(2)).is_some() || bl(Some(a)).is_some() || bl(Some(a + 2)).is_some()
            {
                return None;
            }
            let w = u32::from_le_bytes([at(a)?, at(a + 1)?, at(a + 2)?, at(a + 3)?]);
            if w & 0x7C00_0000 != 0x1400_0000 {
                return None;
            }
            let off = ((((w & 0x03FF_FFFF) << 6) as i32) >> 4) as u32;
            let a32 = a as u32;
            let n = self
                .map(a32.wrapping_add(off))
                .wrapping_sub(a32.wrapping_add(d));
            Some(((w & 0xFC00_0000) | ((n >> 2) & 0x03FF_FFFF)).to_le_bytes())
        };
        let end = x.saturating_add(out.len() as u64);
        for (o, i) in out.iter_mut().zip(x..end) {
            *o = at(i).unwrap_or(0);
        }
        let mut put = |start: u64, bytes: [u8; 4]| {
            for (k, b) in bytes.into_iter().enumerate() {
                let i = start + k as u64;
                if (x..end).contains(&i) {
                    if let Some(o) = usize::try_from(i - x).ok().and_then(|j| out.get_mut(j)) {
                        *o = b;
                    }
                }
            }
        };
        if self.flags & THUMB_BL != 0 {
            let mut p = (x & !1).saturating_sub(2);
            while p < end {
                if let Some((p, bytes)) = bl(Some(p)) {
                    put(p, bytes);
                }
                p += 2;
            }
        }
        if self.flags & A64_BRANCH != 0 {
            let mut a = x & !3;
            while a < end {
                if let Some(bytes) = a64(a) {
                    put(a, bytes);
                }
                a += 4;
            }
        }
        if self.flags & POINTER32 != 0 {
            let mut a = x & !3;
            while a < end {
                let covered = bl(a.checked_sub(2)).is_some()
                    || bl(Some(a)).is_some()
                    || bl(Some(a + 2)).is_some()
                    || a64(a).is_some();
                let word = (a + 4 <= base_len && !covered)
                    .then(|| Some([at(a)?, at(a + 1)?, at(a + 2)?, at(a + 3)?]))
                    .flatten();
                if let Some(w) = word {
                    let v = u32::from_le_bytes(w);
                    let off = v.wrapping_sub(self.address);
                    if u64::from(off) < base_len {
                        let nv = self.map(off).wrapping_add(self.address);
                        put(a, nv.to_le_bytes());
                    }
                }
                a += 4;
            }
        }
    }

    /// Reads base bytes `[x, x + out.len())` into `out`, predicted for an op of displacement
    /// `d`. `out` is at most [`crate::patch::ADD_BLOCK`] bytes.
    pub(crate) fn read(
        &self,
        base: &mut dyn BaseImage,
        x: u64,
        d: u32,
        out: &mut [u8],
    ) -> Result<()> {
        let base_len = base.len();
        let lo = x.saturating_sub(CONTEXT);
        let hi = x
            .saturating_add(out.len() as u64)
            .saturating_add(CONTEXT)
            .min(base_len);
        let mut ctx = [0u8; crate::patch::ADD_BLOCK + 2 * CONTEXT as usize];
        let n = usize::try_from(hi.saturating_sub(lo)).unwrap_or(usize::MAX);
        let ctx = ctx.get_mut(..n).ok_or(crate::error::Error::BaseRead)?;
        base.read(lo, ctx)?;
        self.predict(ctx, lo, base_len, x, d, out);
        Ok(())
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rules of the module documentation, byte by byte, as plainly as possible.
    fn reference(p: &Predict, base: &[u8], x: usize, d: u32) -> u8 {
        let hw = |i: usize| u16::from_le_bytes([base[i], base[i + 1]]);
        let is_bl = |q: usize| {
            p.flags() & THUMB_BL != 0
                && q.is_multiple_of(2)
                && q + 4 <= base.len()
                && hw(q) & 0xF800 == 0xF000
                && hw(q + 2) & 0xF800 == 0xF800
        };
        let bl_at = |i: usize| (i.saturating_sub(3)..=i).find(|&q| q + 4 > i && is_bl(q));
        if let Some(q) = bl_at(x) {
            let imm = ((u32::from(hw(q)) & 0x7FF) << 12) | ((u32::from(hw(q + 2)) & 0x7FF) << 1);
            let off = if imm & (1 << 22) != 0 {
                imm | 0xFF80_0000
            } else {
                imm
            };
            let t = (q as u32).wrapping_add(4).wrapping_add(off);
            let n = p
                .map(t)
                .wrapping_sub((q as u32).wrapping_add(d).wrapping_add(4));
            let h = 0xF000u16 | ((n >> 12) & 0x7FF) as u16;
            let l = 0xF800u16 | ((n >> 1) & 0x7FF) as u16;
            let bytes = [h.to_le_bytes(), l.to_le_bytes()].concat();
            return bytes[x - q];
        }
        let a = x & !3;
        let thumb_free = a + 4 <= base.len() && (a..a + 4).all(|i| bl_at(i).is_none());
        let w =
            (a + 4 <= base.len()).then(|| u32::from_le_bytes(base[a..a + 4].try_into().unwrap()));
        let branch = p.flags() & A64_BRANCH != 0
            && thumb_free
            && w.is_some_and(|w| (w >> 26) & 0b11111 == 0b00101);
        if branch {
            let w = w.unwrap();
            let imm = w & 0x03FF_FFFF;
            let off = if imm & (1 << 25) != 0 {
                (imm | 0xFC00_0000) << 2
            } else {
                imm << 2
            };
            let n = p
                .map((a as u32).wrapping_add(off))
                .wrapping_sub((a as u32).wrapping_add(d));
            return ((w & 0xFC00_0000) | ((n >> 2) & 0x03FF_FFFF)).to_le_bytes()[x - a];
        }
        if p.flags() & POINTER32 != 0 && thumb_free {
            let v = w.unwrap();
            let off = v.wrapping_sub(p.address());
            if (off as usize) < base.len() {
                return (p.map(off).wrapping_add(p.address())).to_le_bytes()[x - a];
            }
        }
        base[x]
    }

    /// An AArch64 `BL` at `from` calling `to`.
    fn a64_bl(from: u32, to: u32) -> u32 {
        0x9400_0000 | (to.wrapping_sub(from) >> 2) & 0x03FF_FFFF
    }

    fn bl(from: u32, to: u32) -> [u8; 4] {
        let n = to.wrapping_sub(from + 4);
        let h = 0xF000u16 | ((n >> 12) & 0x7FF) as u16;
        let l = 0xF800u16 | ((n >> 1) & 0x7FF) as u16;
        let mut b = [0; 4];
        b[..2].copy_from_slice(&h.to_le_bytes());
        b[2..].copy_from_slice(&l.to_le_bytes());
        b
    }

    #[test]
    fn a_moved_call_and_pointer_are_predicted_exactly() {
        // Base: a BL at 0x10 calling 0x40, a pointer at 0x20 to 0x1000_0044 (address
        // 0x1000_0000). In the new image, everything from 0x30 moved up by 8.
        let mut base = [0u8; 0x60];
        base[0x10..0x14].copy_from_slice(&bl(0x10, 0x40));
        base[0x20..0x24].copy_from_slice(&0x1000_0044u32.to_le_bytes());
        let p = Predict::new(ALL_FLAGS, 0x1000_0000, &[(0x30, 8)]).unwrap();
        let mut out = [0u8; 0x30];
        p.predict(&base, 0, base.len() as u64, 0, 0, &mut out);
        assert_eq!(out[0x10..0x14], bl(0x10, 0x48));
        assert_eq!(out[0x20..0x24], 0x1000_004Cu32.to_le_bytes());
        // The same call read by an op displaced by +2 (the caller moved too).
        let mut one = [0u8; 1];
        p.predict(&base, 0, base.len() as u64, 0x12, 2, &mut one);
        assert_eq!(one[0], bl(0x12, 0x48)[2]);
        // Exact bytes pinned: BL 0x10 -> 0x48 jumps 0x48 - 0x14 = 0x34 bytes, 0x1A halfwords:
        // F000 F81A.
        assert_eq!(bl(0x10, 0x48), [0x00, 0xF0, 0x1A, 0xF8]);
        // Without flags, nothing changes.
        let none = Predict::new(0, 0x1000_0000, &[(0x30, 8)]).unwrap();
        none.predict(&base, 0, base.len() as u64, 0, 0, &mut out);
        assert_eq!(out[..], base[..0x30]);
    }

    #[test]
    fn a_moved_aarch64_branch_is_predicted_exactly() {
        // Base: a BL at 0x10 calling 0x40, a B at 0x44 back to 0x8, and a pointer at 0x20 to
        // 0x44. Everything from 0x30 moved up by 0x10.
        let mut base = [0u8; 0x60];
        base[0x10..0x14].copy_from_slice(&a64_bl(0x10, 0x40).to_le_bytes());
        base[0x44..0x48].copy_from_slice(&0x17FF_FFF1u32.to_le_bytes()); // B -0x3C: to 0x8
        base[0x20..0x24].copy_from_slice(&0x44u32.to_le_bytes());
        let p = Predict::new(A64_BRANCH | POINTER32, 0, &[(0x30, 0x10)]).unwrap();
        let mut out = [0u8; 0x60];
        p.predict(&base, 0, base.len() as u64, 0, 0, &mut out);
        // Exact bytes pinned: BL 0x10 -> 0x50 is 0x10 words: 0x9400_0010.
        assert_eq!(out[0x10..0x14], [0x10, 0x00, 0x00, 0x94]);
        assert_eq!(out[0x20..0x24], 0x54u32.to_le_bytes());
        // The B itself moved with its block (d = 0x10): back to 0x8 is -0x4C, 0x17FF_FFED.
        let mut b = [0u8; 4];
        p.predict(&base, 0, base.len() as u64, 0x44, 0x10, &mut b);
        assert_eq!(b, 0x17FF_FFEDu32.to_le_bytes());
        // Without the flag the branch is a word like any other (here not a pointer: too big).
        let no = Predict::new(POINTER32, 0, &[(0x30, 0x10)]).unwrap();
        no.predict(&base, 0, base.len() as u64, 0, 0, &mut out);
        assert_eq!(out[0x10..0x14], base[0x10..0x14]);
    }

    #[test]
    fn headers_are_checked() {
        assert!(Predict::new(8, 0, &[]).is_none());
        assert!(Predict::new(1, 0, &[(5, 1), (5, 2)]).is_none());
        assert!(Predict::new(1, 0, &[(5, 1), (4, 2)]).is_none());
        let many: alloc::vec::Vec<(u32, u32)> = (0..65).map(|i| (i, 1)).collect();
        assert!(Predict::new(1, 0, &many[..64]).is_some());
        assert!(Predict::new(1, 0, &many).is_none());
        let p = Predict::new(1, 0, &[(10, 5), (20, u32::MAX)]).unwrap();
        assert_eq!(
            [p.map(9), p.map(10), p.map(19), p.map(20), p.map(0)],
            [9, 15, 24, 19, 0]
        );
    }

    proptest! {
        /// Any block of any base, predicted from the context the applier reads, equals the
        /// byte-by-byte rules. Bases are drawn dense in BL and pointer patterns.
        #[test]
        fn blocks_match_the_byte_rules(
            words in proptest::collection::vec(prop_oneof![
                any::<u32>(),
                (0u32..0x400, 0u32..0x400).prop_map(|(f, t)| u32::from_le_bytes(bl(f & !1, t & !1))),
                (0u32..0x400).prop_map(|v| 0x2000_0000 + v),
                (0u32..0x10000).prop_map(|v| 0xF000_F800 | (v & 0x07FF_07FF)),
                (0u32..0x400, 0u32..0x400).prop_map(|(f, t)| a64_bl(f & !3, t)),
                any::<u32>().prop_map(|v| 0x1400_0000 | (v & 0x83FF_FFFF)),
            ], 1..80),
            tail in 0usize..4,
            flags in 0u8..8,
            map in proptest::collection::btree_map(0u32..0x500, any::<u32>(), 0..6),
            x in 0usize..400,
            n in 1usize..crate::patch::ADD_BLOCK + 1,
            d in any::<u32>(),
        ) {
            let mut base: alloc::vec::Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            base.truncate(base.len().saturating_sub(tail).max(1));
            let entries: alloc::vec::Vec<(u32, u32)> = map.into_iter().collect();
            let p = Predict::new(flags, 0x2000_0000, &entries).unwrap();
            let x = x % base.len();
            let n = n.min(base.len() - x);
            let mut out = alloc::vec![0u8; n];
            let mut b: &[u8] = &base;
            p.read(&mut b, x as u64, d, &mut out).unwrap();
            for (k, &o) in out.iter().enumerate() {
                prop_assert_eq!(o, reference(&p, &base, x + k, d), "byte {}", x + k);
            }
        }
    }
}
