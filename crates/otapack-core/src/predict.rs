//! Reference prediction for patch format 2: what a base byte most likely became once the code
//! around it moved.
//!
//! When firmware is re-linked, code and data shift, and every reference that crosses a shift
//! changes: the 32-bit absolute pointers in literal pools and vector tables, the PC-relative
//! offsets of Thumb `BL` and AArch64 `B`/`BL` instructions, AArch64 `ADRP` address pairs,
//! the offsets of s390x relative-long instructions, Xtensa `L32R`, `CALLn` and `J`
//! offsets, and the absolute targets of MIPS16e `JAL`s.
//! bsdiff's add-with-difference stores each such change as a non-zero add byte (on the micro:bit pair in `testdata/`, 6,900 changed words, 8,252 add
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
//! | AArch64 `ADRP` pair (flag bit 3; never with bit 0) | for `a = x & !3`, the pair at `b = a` or `b = a - 4`: `b + 8 <= base_size`, `w = le32(base[b..b+4])` has `w & 0x9F00_0000 == 0x9000_0000` (ADRP, register `Rd = w & 31`), and `s = le32(base[b+4..b+8])` uses `Rd` as its base register (`(s >> 5) & 31 == Rd`) and is `ADD Xd, Xn, #imm12` (`s & 0xFFC0_0000 == 0x9100_0000`, scale `k = 0`) or an integer load/store with unsigned offset (`s & 0x3F00_0000 == 0x3900_0000`, `k = s >> 30`); `t = (b & !0xFFF) + sext21(immhi:immlo) * 4096 + ((s >> 10) & 0xFFF) * 2^k`, `nt = map(t)` with its low `k` bits zero | `n = ((nt & !0xFFF) - ((b + d) & !0xFFF)) >> 12`; the ADRP word with `immlo = n & 3`, `immhi = (n >> 2) & 0x7FFFF`, and the second word with `imm12 = (nt & 0xFFF) >> k`; byte `x - b` of the two |
//! | pointer (flag bit 1) | for `a = x & !3`: `a + 4 <= base_size`, no byte of `[a, a+4)` is a Thumb BL byte, the word is not an AArch64 branch nor in an ADRP pair (per the rows above, for the flags set), and `v = le32(base[a..a+4])` has `v - address < base_size` | `le32(map(v - address) + address)`, byte `x - a` of it |
//! | s390x relative-long (flag bit 4, alone) | `x` in `[p+2, p+6)` for an even `p` with `p + 6 <= base_size` that matches: `base[p]` and the low nibble of `base[p+1]` are in [`S390_RIL_OPCODES`], and `t = p + 2 * be32(base[p+2..p+6])` is below `base_size`; and neither `p - 2` nor `p - 4` matches | `n = map(t) - (p + d)`; the offset `be32(n >> 1)` (arithmetic shift), byte `x - p - 2` of it |
//! | Xtensa (flag bit 5, with bit 1 at most) | `x` in `[p, p+3)` for the smallest `p` of `x-2 ..= x` that matches: `p + 3 <= base_size`; `L32R` (`b0 & 0x0F == 1`, `t = ((p+3) & !3) + ((b1 \| b2 << 8) << 2 \| 0xFFFC_0000)`), `CALLn` (`b0 & 0x0F == 5`, `t = (p & !3) + 4 * o18 + 4`) or `J` (`b0 & 0x3F == 6`, `t = p + 4 + o18`), `o18` the signed 18 bits `b0 >> 6 \| b1 << 2 \| b2 << 10`; `t < base_size`; with bit 1, neither word of the instruction is a pointer (row below) | with `q = p + d`: `L32R` `n = map(t) - ((q+3) & !3)`, bytes `b0, n >> 2, n >> 10`; `CALLn` `n = (map(t) - (q & !3) - 4) >> 2`, `J` `n = map(t) - q - 4`, bytes `b0 & 0x3F \| (n & 3) << 6, n >> 2, n >> 10`; byte `x - p` |
//! | MIPS16e `JAL` (flag bit 6, with bit 1 at most) | `x` in `[p, p+4)` for the smallest even `p` of `x-3 ..= x` that matches: `p + 4 <= base_size`, `h = hw(p)` has `h >> 11 == 3`, `t = ((address + p + 4) & 0xF000_0000 \| t26 << 2) - address < base_size` for `t26 = (h & 0x1F) << 21 \| ((h >> 5) & 0x1F) << 16 \| hw(p+2)`, and with bit 1 neither word of the instruction is a pointer | `n = ((map(t) + address) >> 2) & 0x3FF_FFFF`; halfwords `h & 0xFC00 \| ((n >> 16) & 0x1F) << 5 \| (n >> 21) & 0x1F` and `n & 0xFFFF`; byte `x - p` |
//! | otherwise | | `base[x]` |
//!
//! A halfword cannot be both a BL's first half (`11110…`) and its second (`11111…`), so BLs
//! never overlap; a word is an ADRP or an ADD/load/store, never both, and ADRP pairs are never
//! predicted with Thumb BLs; the s390x rule goes alone and keeps the first of overlapping
//! instructions; Xtensa and MIPS16 matches lie in no pointer word and each byte takes the
//! earliest overlapping one: each byte belongs to at most one rule. The rules read base bytes up to 9
//! before (s390x) and 7 after (ADRP pairs) the byte predicted, never outside the base. The prediction depends only on the base, the header and `d`, never on how the op
//! stream was cut into pieces.

use crate::error::Result;
use crate::patch::BaseImage;

/// Flag bit 0: predict ARM Thumb `BL` offsets (ARMv6-M and ARMv7-M, offsets within ±4 MiB).
pub const THUMB_BL: u8 = 1;
/// Flag bit 1: predict 32-bit little-endian absolute pointers into the base image.
pub const POINTER32: u8 = 2;
/// Flag bit 2: predict AArch64 `B` and `BL` offsets (offsets within ±128 MiB).
pub const A64_BRANCH: u8 = 4;
/// Flag bit 3: predict AArch64 `ADRP` followed by the `ADD` or load/store that completes its
/// address (the page and the low 12 bits of a moved target).
pub const A64_ADRP: u8 = 8;
/// Flag bit 4: predict the 32-bit big-endian halfword offsets of s390x relative-long
/// instructions (`LARL`, `BRASL`, `BRCL` and the `C4`/`C6` loads, stores and compares). Set
/// alone: a header with it and any other flag is refused.
pub const S390_RIL: u8 = 16;
/// Flag bit 5: predict little-endian Xtensa `L32R` literal offsets and `CALL0/4/8/12` and `J`
/// offsets (ESP32, ESP32-S2/S3). Allowed with [`POINTER32`] only.
pub const XTENSA: u8 = 32;
/// Flag bit 6: predict the absolute targets of little-endian MIPS16e `JAL`/`JALX` (Realtek
/// Wi-Fi firmware, MIPS routers), through the header's address as for pointers. Allowed with
/// [`POINTER32`] only.
pub const MIPS16_JAL: u8 = 64;
/// Every flag format 2 defines (a header may not set both [`THUMB_BL`] and [`A64_ADRP`], nor
/// [`S390_RIL`] with any other, nor [`XTENSA`] or [`MIPS16_JAL`] with any but [`POINTER32`]).
pub const ALL_FLAGS: u8 =
    THUMB_BL | POINTER32 | A64_BRANCH | A64_ADRP | S390_RIL | XTENSA | MIPS16_JAL;
/// The second opcode nibbles (bit n: nibble n) of the s390x relative-long (RIL-b/c)
/// instructions [`S390_RIL`] predicts, for first opcode bytes `C0`, `C4` and `C6`: `C0`
/// `LARL` (0), `BRCL` (4), `BRASL` (5); `C4` the `...RL` loads and stores (2, 4-8, B-F);
/// `C6` `EXRL` (0), `PFDRL` (2) and the `...RL` compares (4-8, A, C-F).
pub const S390_RIL_OPCODES: [(u8, u16); 3] = [(0xC0, 0x0031), (0xC4, 0xF9F4), (0xC6, 0xF5F5)];
/// The base offset an s390x relative-long instruction at base offset `p` reaches (`p` + twice
/// the big-endian offset, modulo 2^32), or `None` if `op` is no opcode of
/// [`S390_RIL_OPCODES`]. Whether the target lies in the base is the caller's check.
pub fn s390_ril_target(op: [u8; 2], imm: [u8; 4], p: u32) -> Option<u32> {
    let (_, mask) = S390_RIL_OPCODES.iter().find(|&&(o, _)| o == op[0])?;
    (mask >> (op[1] & 0x0F) & 1 != 0).then(|| p.wrapping_add(u32::from_be_bytes(imm) << 1))
}

/// The base offset a MIPS16e `JAL`/`JALX` (halfwords `h`, `l`) at base offset `p` calls when
/// the base is loaded at `address` (the 256 MiB region of `address + p + 4`, modulo 2^32), or
/// `None` if `h` is no `JAL`/`JALX`. Whether the target lies in the base is the caller's check.
pub fn mips16_jal_target(h: u16, l: u16, p: u32, address: u32) -> Option<u32> {
    if h >> 11 != 3 {
        return None;
    }
    let (h, l) = (u32::from(h), u32::from(l));
    let t26 = (h & 0x1F) << 21 | ((h >> 5) & 0x1F) << 16 | l;
    let region = address.wrapping_add(p).wrapping_add(4) & 0xF000_0000;
    Some((region | t26 << 2).wrapping_sub(address))
}

/// Most address-map entries a format-2 header may carry (the applier holds them, 8 bytes each).
pub const MAX_MAP_ENTRIES: usize = 64;
/// Base bytes a prediction reads before the first and after the last byte it predicts.
pub const CONTEXT: u64 = 10;

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
    /// map entries `(start, shift)`; `None` if a flag is unknown, [`THUMB_BL`] and
    /// [`A64_ADRP`] are both set (their rules would overlap), there are more than
    /// [`MAX_MAP_ENTRIES`] entries, or the starts do not strictly increase.
    pub fn new(flags: u8, address: u32, entries: &[(u32, u32)]) -> Option<Self> {
        let mut p = Predict::empty(flags, address)?;
        for &(start, shift) in entries {
            p.push(start, shift)?;
        }
        Some(p)
    }

    pub(crate) fn empty(flags: u8, address: u32) -> Option<Self> {
        let thumb_and_adrp = THUMB_BL | A64_ADRP;
        let s390_with_other = flags & S390_RIL != 0 && flags != S390_RIL;
        let xtensa_with_other = flags & XTENSA != 0 && flags & !(XTENSA | POINTER32) != 0;
        let mips_with_other = flags & MIPS16_JAL != 0 && flags & !(MIPS16_JAL | POINTER32) != 0;
        let alone = !s390_with_other && !xtensa_with_other && !mips_with_other;
        (flags & !ALL_FLAGS == 0 && flags & thumb_and_adrp != thumb_and_adrp && alone).then_some(
            Predict {
                flags,
                address,
                len: 0,
                map: [(0, 0); MAX_MAP_ENTRIES],
            },
        )
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
        // An AArch64 ADRP at the 4-aligned `a` and the ADD or load/store after it that uses
        // its register, both re-encoded for the moved target. A header never sets this with
        // THUMB_BL (`empty` refuses it), so no Thumb BL can overlap the pair.
        let adrp = |a: u64| -> Option<([u8; 4], [u8; 4])> {
            if self.flags & A64_ADRP == 0 || !a.is_multiple_of(4) || a + 8 > base_len {
                return None;
            }
            let w = u32::from_le_bytes([at(a)?, at(a + 1)?, at(a + 2)?, at(a + 3)?]);
            let s = u32::from_le_bytes([at(a + 4)?, at(a + 5)?, at(a + 6)?, at(a + 7)?]);
            if w & 0x9F00_0000 != 0x9000_0000 || (s >> 5) & 0x1F != w & 0x1F {
                return None;
            }
            let scale = if s & 0xFFC0_0000 == 0x9100_0000 {
                0 // ADD Xd, Xn, #imm12
            } else if s & 0x3F00_0000 == 0x3900_0000 {
                s >> 30 // LDR/STR (integer, unsigned offset), imm12 scaled by the size
            } else {
                return None;
            };
            let imm = ((w >> 29) & 3) | (((w >> 5) & 0x7_FFFF) << 2);
            let page = (((imm << 11) as i32) >> 11) as u32;
            let a32 = a as u32;
            let t = (a32 & !0xFFF)
                .wrapping_add(page << 12)
                .wrapping_add(((s >> 10) & 0xFFF) << scale);
            let nt = self.map(t);
            if nt & ((1 << scale) - 1) != 0 {
                return None;
            }
            let n = (nt & !0xFFF).wrapping_sub(a32.wrapping_add(d) & !0xFFF) >> 12;
            let nw = (w & 0x9F00_001F) | (n & 3) << 29 | ((n >> 2) & 0x7_FFFF) << 5;
            let ns = (s & !(0xFFF << 10)) | ((nt & 0xFFF) >> scale) << 10;
            Some((nw.to_le_bytes(), ns.to_le_bytes()))
        };
        // An s390x relative-long instruction at the even `p` whose target lies in the base:
        // the target.
        let ril_at = |p: u64| -> Option<u32> {
            if self.flags & S390_RIL == 0 || !p.is_multiple_of(2) || p + 6 > base_len {
                return None;
            }
            let imm = [at(p + 2)?, at(p + 3)?, at(p + 4)?, at(p + 5)?];
            let t = s390_ril_target([at(p)?, at(p + 1)?], imm, p as u32)?;
            (u64::from(t) < base_len).then_some(t)
        };
        // Its offset re-encoded for the moved target, unless an instruction that matches too
        // starts 2 or 4 bytes before it (and so overlaps it): the earlier one is kept.
        let ril = |p: u64| -> Option<[u8; 4]> {
            let t = ril_at(p)?;
            let overlapped = [2, 4]
                .into_iter()
                .any(|back| p.checked_sub(back).and_then(ril_at).is_some());
            if overlapped {
                return None;
            }
            let n = self.map(t).wrapping_sub((p as u32).wrapping_add(d));
            Some((((n as i32) >> 1) as u32).to_be_bytes())
        };
        // A pointer word at the 4-aligned `a`: the offset it points at.
        let pointer_at = |a: u64| -> Option<u32> {
            if self.flags & POINTER32 == 0 || a + 4 > base_len {
                return None;
            }
            let v = u32::from_le_bytes([at(a)?, at(a + 1)?, at(a + 2)?, at(a + 3)?]);
            let off = v.wrapping_sub(self.address);
            (u64::from(off) < base_len).then_some(off)
        };
        // An Xtensa L32R, CALLn or J at `p` whose target lies in the base and whose bytes
        // are in no pointer word: its kind (0, 1, 2) and target.
        let xt_at = |p: u64| -> Option<(u8, u32)> {
            if self.flags & XTENSA == 0 || p + 3 > base_len {
                return None;
            }
            let (b0, b1, b2) = (at(p)?, at(p + 1)?, at(p + 2)?);
            let p32 = p as u32;
            let off18 = || {
                let v = u32::from(b0 >> 6) | u32::from(b1) << 2 | u32::from(b2) << 10;
                ((v << 14) as i32 >> 14) as u32
            };
            let (kind, t) = if b0 & 0x0F == 0x1 {
                let imm = u32::from(b1) | u32::from(b2) << 8;
                let t = (p32.wrapping_add(3) & !3).wrapping_add(imm << 2 | 0xFFFC_0000);
                (0, t)
            } else if b0 & 0x0F == 0x5 {
                (1, (p32 & !3).wrapping_add(off18() << 2).wrapping_add(4))
            } else if b0 & 0x3F == 0x06 {
                (2, p32.wrapping_add(4).wrapping_add(off18()))
            } else {
                return None;
            };
            let in_pointer = pointer_at(p & !3).is_some() || pointer_at((p + 2) & !3).is_some();
            (u64::from(t) < base_len && !in_pointer).then_some((kind, t))
        };
        // Re-encoded for the moved target.
        let xt = |p: u64| -> Option<[u8; 3]> {
            let (kind, t) = xt_at(p)?;
            let b0 = at(p)?;
            let q = (p as u32).wrapping_add(d);
            let nt = self.map(t);
            if kind == 0 {
                let n = nt.wrapping_sub(q.wrapping_add(3) & !3);
                let [lo, hi, ..] = (n >> 2).to_le_bytes();
                return Some([b0, lo, hi]);
            }
            let n = if kind == 1 {
                nt.wrapping_sub(q & !3).wrapping_sub(4) >> 2
            } else {
                nt.wrapping_sub(q).wrapping_sub(4)
            };
            Some([
                (b0 & 0x3F) | ((n & 3) as u8) << 6,
                (n >> 2) as u8,
                (n >> 10) as u8,
            ])
        };
        // A MIPS16e JAL/JALX at the even `p` whose target lies in the base and whose bytes are
        // in no pointer word, re-encoded for the moved target.
        let jal16 = |p: u64| -> Option<[u8; 4]> {
            if self.flags & MIPS16_JAL == 0 || !p.is_multiple_of(2) || p + 4 > base_len {
                return None;
            }
            let h = hw(p)?;
            let off = mips16_jal_target(h, hw(p + 2)?, p as u32, self.address)?;
            let h = u32::from(h);
            let in_pointer = pointer_at(p & !3).is_some() || pointer_at((p + 2) & !3).is_some();
            if u64::from(off) >= base_len || in_pointer {
                return None;
            }
            let n = (self.map(off).wrapping_add(self.address) >> 2) & 0x03FF_FFFF;
            let nh = (h & 0xFC00) | ((n >> 16) & 0x1F) << 5 | ((n >> 21) & 0x1F);
            let [h0, h1] = (nh as u16).to_le_bytes();
            let [l0, l1] = (n as u16).to_le_bytes();
            Some([h0, h1, l0, l1])
        };
        let end = x.saturating_add(out.len() as u64);
        for (o, i) in out.iter_mut().zip(x..end) {
            *o = at(i).unwrap_or(0);
        }
        let mut put = |start: u64, bytes: &[u8]| {
            for (k, &b) in bytes.iter().enumerate() {
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
                    put(p, &bytes);
                }
                p += 2;
            }
        }
        if self.flags & A64_BRANCH != 0 {
            let mut a = x & !3;
            while a < end {
                if let Some(bytes) = a64(a) {
                    put(a, &bytes);
                }
                a += 4;
            }
        }
        if self.flags & A64_ADRP != 0 {
            let mut a = (x & !3).saturating_sub(4);
            while a < end {
                if let Some((first, second)) = adrp(a) {
                    put(a, &first);
                    put(a + 4, &second);
                }
                a += 4;
            }
        }
        if self.flags & S390_RIL != 0 {
            let mut p = (x & !1).saturating_sub(4);
            while p < end {
                if let Some(offset) = ril(p) {
                    put(p + 2, &offset);
                }
                p += 2;
            }
        }
        if self.flags & XTENSA != 0 {
            // Back to front, so that where matches overlap each byte takes the earliest.
            for p in (x.saturating_sub(2)..end).rev() {
                if let Some(bytes) = xt(p) {
                    put(p, &bytes);
                }
            }
        }
        if self.flags & MIPS16_JAL != 0 {
            // Back to front, so that where matches overlap each byte takes the earliest.
            for p in ((x & !1).saturating_sub(2)..end)
                .rev()
                .filter(|p| p % 2 == 0)
            {
                if let Some(bytes) = jal16(p) {
                    put(p, &bytes);
                }
            }
        }
        if self.flags & POINTER32 != 0 {
            let mut a = x & !3;
            while a < end {
                let covered = bl(a.checked_sub(2)).is_some()
                    || bl(Some(a)).is_some()
                    || bl(Some(a + 2)).is_some()
                    || a64(a).is_some()
                    || adrp(a).is_some()
                    || a.checked_sub(4).and_then(adrp).is_some();
                if let Some(off) = pointer_at(a).filter(|_| !covered) {
                    put(a, &self.map(off).wrapping_add(self.address).to_le_bytes());
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
        let le32 = |a: usize| {
            (a + 4 <= base.len()).then(|| u32::from_le_bytes(base[a..a + 4].try_into().unwrap()))
        };
        let pointer = |a: usize| {
            p.flags() & POINTER32 != 0
                && le32(a).is_some_and(|v| (v.wrapping_sub(p.address()) as usize) < base.len())
        };
        if p.flags() & MIPS16_JAL != 0 {
            // The earliest JAL/JALX at an even q covering x whose target lies in the base and
            // whose words are no pointers.
            let hw = |i: usize| u16::from_le_bytes([base[i], base[i + 1]]) as u32;
            for q in (x.saturating_sub(3)..=x).filter(|q| q % 2 == 0) {
                if q + 4 > base.len()
                    || hw(q) >> 11 != 3
                    || pointer(q & !3)
                    || pointer((q + 2) & !3)
                {
                    continue;
                }
                let t26 = (hw(q) & 31) << 21 | ((hw(q) >> 5) & 31) << 16 | hw(q + 2);
                let abs = (p.address().wrapping_add(q as u32 + 4) & 0xF000_0000) | t26 << 2;
                let off = abs.wrapping_sub(p.address());
                if (off as usize) >= base.len() {
                    continue;
                }
                let n = (p.map(off).wrapping_add(p.address()) >> 2) & 0x03FF_FFFF;
                let nh = (hw(q) & 0xFC00) | ((n >> 16) & 31) << 5 | ((n >> 21) & 31);
                let bytes = [nh as u8, (nh >> 8) as u8, n as u8, (n >> 8) as u8];
                return bytes[x - q];
            }
        }
        if p.flags() & XTENSA != 0 {
            // (kind, target) of an instruction at q: L32R (low nibble 1), CALLn (5), J (06).
            let xt_at = |q: usize| -> Option<(u8, u32)> {
                let b = base.get(q..q + 3)?;
                let off18 = {
                    let v = (b[0] as u32 >> 6) | (b[1] as u32) << 2 | (b[2] as u32) << 10;
                    if v & (1 << 17) != 0 {
                        v | 0xFFFC_0000
                    } else {
                        v
                    }
                };
                let q32 = q as u32;
                let (kind, t) = if b[0] & 15 == 1 {
                    let imm = b[1] as u32 | (b[2] as u32) << 8;
                    let t = ((q32 + 3) & !3).wrapping_sub(4 * (65536 - imm));
                    (0, t)
                } else if b[0] & 15 == 5 {
                    (
                        1,
                        (q32 & !3)
                            .wrapping_add(off18.wrapping_mul(4))
                            .wrapping_add(4),
                    )
                } else if b[0] & 63 == 6 {
                    (2, (q32 + 4).wrapping_add(off18))
                } else {
                    return None;
                };
                let in_pointer = pointer(q & !3) || pointer((q + 2) & !3);
                ((t as usize) < base.len() && !in_pointer).then_some((kind, t))
            };
            // The earliest match covering x.
            for q in x.saturating_sub(2)..=x {
                if let Some((kind, t)) = xt_at(q) {
                    let at = (q as u32).wrapping_add(d);
                    let nt = p.map(t);
                    let bytes = match kind {
                        0 => {
                            let n = nt.wrapping_sub((at + 3) & !3) >> 2;
                            [base[q], n as u8, (n >> 8) as u8]
                        }
                        _ => {
                            let n = if kind == 1 {
                                nt.wrapping_sub(at & !3).wrapping_sub(4) / 4
                            } else {
                                nt.wrapping_sub(at).wrapping_sub(4)
                            };
                            [
                                base[q] & 63 | ((n & 3) as u8) << 6,
                                (n >> 2) as u8,
                                (n >> 10) as u8,
                            ]
                        }
                    };
                    return bytes[x - q];
                }
            }
        }
        if p.flags() & S390_RIL != 0 {
            // An instruction at even q: a listed opcode, its target inside the base.
            let ril_at = |q: usize| {
                let (op, nibble) = (*base.get(q)?, *base.get(q + 1)? & 15);
                let imm = u32::from_be_bytes(base.get(q + 2..q + 6)?.try_into().unwrap());
                let listed = match op {
                    0xC0 => [0, 4, 5].contains(&nibble),
                    0xC4 => [2, 4, 5, 6, 7, 8, 11, 12, 13, 14, 15].contains(&nibble),
                    0xC6 => [0, 2, 4, 5, 6, 7, 8, 10, 12, 13, 14, 15].contains(&nibble),
                    _ => false,
                };
                let t = (q as u32).wrapping_add(imm.wrapping_mul(2));
                (q.is_multiple_of(2) && listed && (t as usize) < base.len()).then_some(t)
            };
            // x in the offset of an instruction at q (x - 5 ..= x - 2) that no matching one at
            // q - 2 or q - 4 overlaps.
            for q in x.saturating_sub(5)..=x.saturating_sub(2) {
                if q + 2 > x {
                    break;
                }
                let overlapped =
                    (q >= 2 && ril_at(q - 2).is_some()) || (q >= 4 && ril_at(q - 4).is_some());
                if let (Some(t), false) = (ril_at(q), overlapped) {
                    let n = p.map(t).wrapping_sub((q as u32).wrapping_add(d)) as i32;
                    return ((n >> 1) as u32).to_be_bytes()[x - q - 2];
                }
            }
            return base[x];
        }
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
        let word = |i: usize| {
            (i + 4 <= base.len()).then(|| u32::from_le_bytes(base[i..i + 4].try_into().unwrap()))
        };
        let pair = |b: usize| -> Option<[u8; 8]> {
            if p.flags() & A64_ADRP == 0 || !b.is_multiple_of(4) {
                return None;
            }
            let (w, s) = (word(b)?, word(b + 4)?);
            if w & 0x9F00_0000 != 0x9000_0000 || (s >> 5) & 31 != w & 31 {
                return None;
            }
            let k = if s & 0xFFC0_0000 == 0x9100_0000 {
                0
            } else if s & 0x3F00_0000 == 0x3900_0000 {
                s >> 30
            } else {
                return None;
            };
            let imm = (((w >> 5) & 0x7FFFF) << 2) | ((w >> 29) & 3);
            let imm = if imm & (1 << 20) != 0 {
                imm | 0xFFE0_0000
            } else {
                imm
            };
            let t = ((b as u32) & !0xFFF)
                .wrapping_add(imm << 12)
                .wrapping_add(((s >> 10) & 0xFFF) << k);
            let nt = p.map(t);
            if !nt.is_multiple_of(1 << k) {
                return None;
            }
            let n = (nt & !0xFFF).wrapping_sub((b as u32).wrapping_add(d) & !0xFFF) >> 12;
            let nw = (w & 0x9F00_001F) | (n & 3) << 29 | ((n >> 2) & 0x7FFFF) << 5;
            let ns = (s & !(0xFFF << 10)) | ((nt & 0xFFF) >> k) << 10;
            let mut out = [0u8; 8];
            out[..4].copy_from_slice(&nw.to_le_bytes());
            out[4..].copy_from_slice(&ns.to_le_bytes());
            Some(out)
        };
        // A word is an ADRP or an ADD/load/store, never both: at most one pair holds it.
        if let Some(b) = [Some(a), a.checked_sub(4)]
            .into_iter()
            .flatten()
            .find(|&b| pair(b).is_some())
        {
            return pair(b).unwrap()[x - b];
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
        let p = Predict::new(THUMB_BL | POINTER32, 0x1000_0000, &[(0x30, 8)]).unwrap();
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
    fn a_moved_adrp_pair_is_predicted_exactly() {
        // ADRP x0, page of 0 at 0x10; ADD x0, x0, #0x40 at 0x14 (target 0x40); at 0x20 ADRP
        // x0 again and LDR x1, [x0, #0x48] at 0x24 (target 0x48, scaled by 8).
        let mut base = [0u8; 0x60];
        for (at, w) in [
            (0x10, 0x9000_0000u32),
            (0x14, 0x9101_0000),
            (0x20, 0x9000_0000),
            (0x24, 0xF940_2401),
        ] {
            base[at..at + 4].copy_from_slice(&u32::to_le_bytes(w));
        }
        // Everything from 0x30 moved up by 0x10: the low 12 bits follow.
        let p = Predict::new(A64_ADRP, 0, &[(0x30, 0x10)]).unwrap();
        let mut out = [0u8; 0x30];
        p.predict(&base, 0, base.len() as u64, 0, 0, &mut out);
        let word = |o: &[u8], at: usize| u32::from_le_bytes(o[at..at + 4].try_into().unwrap());
        assert_eq!(word(&out, 0x10), 0x9000_0000);
        assert_eq!(word(&out, 0x14), 0x9101_4000); // #0x50
        assert_eq!(word(&out, 0x24), 0xF940_2C01); // #0x58 = 11 * 8
                                                   // Moved up by 0x1000 instead: the page moves by one, the low bits stay.
        let far = Predict::new(A64_ADRP, 0, &[(0x30, 0x1000)]).unwrap();
        far.predict(&base, 0, base.len() as u64, 0, 0, &mut out);
        assert_eq!(word(&out, 0x10), 0xB000_0000); // immlo = 1
        assert_eq!(word(&out, 0x14), 0x9101_0000);
        // Read on its own from the second word, the pair is still predicted.
        let mut second = [0u8; 4];
        p.predict(&base, 0, base.len() as u64, 0x14, 0, &mut second);
        assert_eq!(second, 0x9101_4000u32.to_le_bytes());
        // Thumb calls and ADRP pairs may not be predicted together.
        assert!(Predict::new(A64_ADRP | THUMB_BL, 0, &[]).is_none());
    }

    #[test]
    fn a_moved_s390_call_is_predicted_exactly() {
        // Base of 0x40 bytes: at 0x10 `C0 E5 00 00 00 10`, BRASL %r14 to 0x10 + 2 * 0x10 =
        // 0x30; at 0x18 `C0 20 FF FF FF FC`, LARL %r2 to 0x18 - 8 = 0x10. Everything from 0x30
        // moved up by 0x10.
        let mut base = [0u8; 0x40];
        base[0x10..0x16].copy_from_slice(&[0xC0, 0xE5, 0x00, 0x00, 0x00, 0x10]);
        base[0x18..0x1E].copy_from_slice(&[0xC0, 0x20, 0xFF, 0xFF, 0xFF, 0xFC]);
        let p = Predict::new(S390_RIL, 0, &[(0x30, 0x10)]).unwrap();
        let mut out = [0u8; 0x20];
        p.predict(&base, 0, base.len() as u64, 0, 0, &mut out);
        // To 0x40: 0x18 halfwords. The LARL's target did not move.
        assert_eq!(out[0x10..0x16], [0xC0, 0xE5, 0x00, 0x00, 0x00, 0x18]);
        assert_eq!(out[0x18..0x1E], base[0x18..0x1E]);
        // Read by an op displaced by +4 (the code moved, its target 0x10 did not): -12
        // bytes, -6 halfwords.
        let mut larl = [0u8; 4];
        p.predict(&base, 0, base.len() as u64, 0x1A, 4, &mut larl);
        assert_eq!(larl, [0xFF, 0xFF, 0xFF, 0xFA]);
        // Overlaps: a LARL at 0 whose offset `00 00 C0 05` (to 0x1800A) holds what would be
        // a BRCL at 4 (`C0 05 00 00 00 10`, to 0x24). Both match; the earlier one is kept.
        let mut big = alloc::vec![0u8; 0x20000];
        big[..10].copy_from_slice(&[0xC0, 0x00, 0x00, 0x00, 0xC0, 0x05, 0x00, 0x00, 0x00, 0x10]);
        let p = Predict::new(S390_RIL, 0, &[(0x20, 0x10)]).unwrap();
        let mut o = [0u8; 10];
        p.predict(&big, 0, big.len() as u64, 0, 0, &mut o);
        assert_eq!(
            o,
            [0xC0, 0x00, 0x00, 0x00, 0xC0, 0x0D, 0x00, 0x00, 0x00, 0x10]
        );
        // The applier reads one byte at a time with enough context to see the LARL 9 bytes
        // before the BRCL's last offset byte.
        for (x, &want) in o.iter().enumerate() {
            let mut one = [0u8; 1];
            p.read(&mut &big[..], x as u64, 0, &mut one).unwrap();
            assert_eq!(one[0], want, "byte {x}");
        }
        // Without the LARL, the BRCL is predicted: to 0x34, 0x18 halfwords.
        big[0] = 0;
        p.predict(&big, 0, big.len() as u64, 0, 0, &mut o);
        assert_eq!(
            o,
            [0x00, 0x00, 0x00, 0x00, 0xC0, 0x05, 0x00, 0x00, 0x00, 0x18]
        );
    }

    #[test]
    fn a_moved_xtensa_call_literal_and_pointer_are_predicted_exactly() {
        // At 0x10 `81 FE FF`: L32R a8 from the literal at 0x10 - 2 * 4 = 0x8; at 0x13
        // `E5 01 00`: CALL8 to (0x10) + 7 * 4 + 4 = 0x30; at 0x16 `86 01 00`: J to 0x16 + 4 +
        // 6 = 0x20; at 0x1C a pointer to 0x30 (address 0x4000_0000). At 0x23 `06` and at 0x24
        // a pointer to 0x4 (`04 00 00 40`): a J to 0x37 by its bytes, but it lies in a pointer
        // word. Everything from 0x20 moved up by 0x10.
        let mut base = [0u8; 0x60];
        base[0x10..0x19].copy_from_slice(&[0x81, 0xFE, 0xFF, 0xE5, 0x01, 0x00, 0x86, 0x01, 0x00]);
        base[0x1C..0x20].copy_from_slice(&0x4000_0030u32.to_le_bytes());
        base[0x23] = 0x06;
        base[0x24..0x28].copy_from_slice(&0x4000_0004u32.to_le_bytes());
        let p = Predict::new(XTENSA | POINTER32, 0x4000_0000, &[(0x20, 0x10)]).unwrap();
        let mut out = [0u8; 0x30];
        p.predict(&base, 0, base.len() as u64, 0, 0, &mut out);
        // The literal did not move: the L32R stays. CALL8 to 0x40: 11 words, `E5 02 00`; J
        // to 0x30: 22 bytes, `86 05 00`; the pointer becomes 0x4000_0040.
        assert_eq!(
            out[0x10..0x19],
            [0x81, 0xFE, 0xFF, 0xE5, 0x02, 0x00, 0x86, 0x05, 0x00]
        );
        assert_eq!(out[0x1C..0x20], 0x4000_0040u32.to_le_bytes());
        // The J-like byte in front of a pointer word is no instruction: both stay, also with
        // a shift that is no multiple of 4 (as a J, its first byte would become 0x46).
        assert_eq!(out[0x23..0x28], base[0x23..0x28]);
        let odd = Predict::new(XTENSA | POINTER32, 0x4000_0000, &[(0x20, 0x11)]).unwrap();
        odd.predict(&base, 0, base.len() as u64, 0, 0, &mut out);
        assert_eq!(out[0x23..0x28], base[0x23..0x28]);
        // Read by an op displaced by 4 (the code moved, the literal did not): 0x8 - 0x14 is
        // -3 words, `81 FD FF`.
        let mut l32r = [0u8; 3];
        p.predict(&base, 0, base.len() as u64, 0x10, 4, &mut l32r);
        assert_eq!(l32r, [0x81, 0xFD, 0xFF]);
        // Without pointers, the byte at 0x23 is a J (to 0x37, moved to 0x47: 0x20 bytes).
        let no_pointers = Predict::new(XTENSA, 0, &[(0x20, 0x10)]).unwrap();
        no_pointers.predict(&base, 0, base.len() as u64, 0, 0, &mut out);
        assert_eq!(out[0x23..0x26], [0x06, 0x08, 0x00]);
    }

    #[test]
    fn a_moved_mips16_call_is_predicted_exactly() {
        // Loaded at 0x8010_0000: at 0x10 `80 18 10 00`, JAL to 0x8010_0040 (t26 = 0x4_0010);
        // at 0x18 `80 1C 08 00`, JALX to 0x8010_0020. Everything from 0x30 moved up by 0x10.
        let mut base = [0u8; 0x60];
        base[0x10..0x14].copy_from_slice(&[0x80, 0x18, 0x10, 0x00]);
        base[0x18..0x1C].copy_from_slice(&[0x80, 0x1C, 0x08, 0x00]);
        let p = Predict::new(MIPS16_JAL, 0x8010_0000, &[(0x30, 0x10)]).unwrap();
        let mut out = [0u8; 0x20];
        // Absolute targets: the displacement does not matter.
        p.predict(&base, 0, base.len() as u64, 0, 7, &mut out);
        // JAL to 0x8010_0050: t26 = 0x4_0014. The JALX's target did not move.
        assert_eq!(out[0x10..0x14], [0x80, 0x18, 0x14, 0x00]);
        assert_eq!(out[0x18..0x1C], base[0x18..0x1C]);
        // Crossing a 256 KiB boundary of the target changes the first halfword: moved up by
        // 0x4_0000, t26 = 0x5_0010, `A0 18 10 00`.
        let far = Predict::new(MIPS16_JAL, 0x8010_0000, &[(0x30, 0x4_0000)]).unwrap();
        far.predict(&base, 0, base.len() as u64, 0, 0, &mut out);
        assert_eq!(out[0x10..0x14], [0xA0, 0x18, 0x10, 0x00]);
        // At another load address the same bytes point outside the base: nothing changes.
        let elsewhere = Predict::new(MIPS16_JAL, 0x9000_0000, &[(0x30, 0x10)]).unwrap();
        elsewhere.predict(&base, 0, base.len() as u64, 0, 0, &mut out);
        assert_eq!(out[..], base[..0x20]);
        // With pointers, a JAL that shares a word with a pointer is none: the pointer wins.
        let mut b = base;
        b[0x14..0x18].copy_from_slice(&0x8010_0044u32.to_le_bytes());
        let both = Predict::new(MIPS16_JAL | POINTER32, 0x8010_0000, &[(0x30, 0x10)]).unwrap();
        both.predict(&b, 0, b.len() as u64, 0, 0, &mut out);
        assert_eq!(out[0x10..0x14], [0x80, 0x18, 0x14, 0x00]);
        assert_eq!(out[0x14..0x18], 0x8010_0054u32.to_le_bytes());
        // `80 18` at 0x12 and the pointer `10 00 10 80` at 0x14 read as a JAL to 0x8010_0040,
        // but its second half is a pointer word: no JAL. Without pointers it is one, and a
        // move by 0x4_0000 changes its first half.
        b[0x12..0x14].copy_from_slice(&[0x80, 0x18]);
        b[0x14..0x18].copy_from_slice(&0x8010_0010u32.to_le_bytes());
        let mut one = [0u8; 2];
        let far_both = Predict::new(MIPS16_JAL | POINTER32, 0x8010_0000, &[(0x30, 0x4_0000)]);
        far_both
            .unwrap()
            .predict(&b, 0, b.len() as u64, 0x12, 0, &mut one);
        assert_eq!(one, [0x80, 0x18]);
        far.predict(&b, 0, b.len() as u64, 0x12, 0, &mut one);
        assert_eq!(one, [0xA0, 0x18]);
    }

    #[test]
    fn headers_are_checked() {
        assert!(Predict::new(128, 0, &[]).is_none());
        // MIPS16 goes with pointers only.
        assert!(Predict::new(MIPS16_JAL | POINTER32, 0, &[]).is_some());
        for other in [THUMB_BL, A64_BRANCH, A64_ADRP, S390_RIL, XTENSA] {
            assert!(Predict::new(MIPS16_JAL | other, 0, &[]).is_none());
        }
        // Xtensa goes with pointers only.
        assert!(Predict::new(XTENSA | POINTER32, 0, &[]).is_some());
        for other in [THUMB_BL, A64_BRANCH, A64_ADRP, S390_RIL] {
            assert!(Predict::new(XTENSA | other, 0, &[]).is_none());
        }
        // s390x goes alone.
        assert!(Predict::new(S390_RIL, 0, &[]).is_some());
        for other in [THUMB_BL, POINTER32, A64_BRANCH, A64_ADRP] {
            assert!(Predict::new(S390_RIL | other, 0, &[]).is_none());
        }
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
                // ADRP (page -1, 0 or +1) with a random register, a later ADD/LDR uses.
                (0u32..3, 0u32..2).prop_map(|(page, rd)| {
                    let imm = page.wrapping_sub(1) & 0x1F_FFFF;
                    0x9000_0000 | (imm & 3) << 29 | (imm >> 2) << 5 | rd
                }),
                (any::<bool>(), 0u32..0x1000, 0u32..4, 0u32..2, any::<u32>()).prop_map(
                    |(add, imm12, size, rn, v)| if add {
                        0x9100_0000 | imm12 << 10 | rn << 5 | (v & 31)
                    } else {
                        size << 30 | 0x3900_0000 | (v & 0x00C0_001F) | imm12 << 10 | rn << 5
                    }
                ),
                // s390x: an opcode and the top of a small offset, and the rest of one.
                prop_oneof![(0usize..3, 0u8..16, any::<bool>()).prop_map(|(op, nibble, neg)| {
                    let high = if neg { 0xFF } else { 0 };
                    u32::from_le_bytes([[0xC0, 0xC4, 0xC6][op], nibble << 4 | nibble, high, high])
                }),
                (any::<bool>(), any::<u16>()).prop_map(|(neg, v)| {
                    let [a, b] = v.to_le_bytes();
                    u32::from_le_bytes([if neg { 0xFF } else { 0 }, a & 0x7F, 0xC0, b & 0x0F])
                })],
                // Xtensa: L32R back a few words, CALLn and J near by, at any byte offset; or
                // MIPS16 JAL/JALX halves with small targets (address 0x2000_0000), aligned or not.
                prop_oneof![(0u32..2, 0u32..80, any::<bool>()).prop_map(|(x, t, shifted)| {
                    let jal = (0x1800 | x << 10) | ((t >> 2) << 16);
                    if shifted { jal << 16 | 0x1800 } else { jal }
                }),
                (0usize..4, 0u8..3, any::<u8>(), any::<bool>()).prop_map(|(at, kind, v, back)| {
                    let ins = match kind {
                        0 => [0x01 | (v & 0xF0), 0xF0 | (v & 0x0F), 0xFF],
                        1 => [0x05 | (v & 0xF0), v & 0x1F, if back { 0xFF } else { 0 }],
                        _ => [0x06 | (v & 0xC0), v & 0x3F, if back { 0xFF } else { 0 }],
                    };
                    let mut w = [0x0Fu8; 4];
                    for (k, b) in ins.into_iter().enumerate() {
                        if let Some(slot) = w.get_mut(at + k) {
                            *slot = b;
                        }
                    }
                    u32::from_le_bytes(w)
                })],
            ], 1..80),
            tail in 0usize..4,
            flags in prop_oneof![
                0u8..16,
                Just(S390_RIL),
                Just(XTENSA),
                Just(XTENSA | POINTER32),
                Just(MIPS16_JAL),
                Just(MIPS16_JAL | POINTER32),
            ],
            map in proptest::collection::btree_map(0u32..0x500, any::<u32>(), 0..6),
            x in 0usize..400,
            n in 1usize..crate::patch::ADD_BLOCK + 1,
            d in any::<u32>(),
        ) {
            let mut base: alloc::vec::Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            base.truncate(base.len().saturating_sub(tail).max(1));
            let entries: alloc::vec::Vec<(u32, u32)> = map.into_iter().collect();
            let Some(p) = Predict::new(flags, 0x2000_0000, &entries) else {
                prop_assert_eq!(flags & (THUMB_BL | A64_ADRP), THUMB_BL | A64_ADRP);
                return Ok(());
            };
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
