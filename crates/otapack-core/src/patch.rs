//! The `patch` slice method's op stream (patch format 1), decoded as it streams in.
//!
//! A patch rebuilds one slice of the new image from the base (old) image. After its zstd frame is
//! decoded, the payload is a sequence of ops; an old-image cursor starts at 0:
//!
//! | field    | encoding                  | meaning                                              |
//! |----------|---------------------------|------------------------------------------------------|
//! | seek     | signed LEB128, zigzag     | `cursor += seek`; the cursor must stay in `0..=base_size` |
//! | add_len  | unsigned LEB128           | the next `add_len` output bytes are `base[cursor + i] + add[i]` (mod 256); `cursor += add_len` |
//! | add      | `add_len` bytes           |                                                      |
//! | copy_len | unsigned LEB128           | the next `copy_len` output bytes are literal         |
//! | copy     | `copy_len` bytes          |                                                      |
//!
//! Every op produces at least one byte (`add_len + copy_len >= 1`), no op may produce more than
//! the slice still needs, and the stream ends exactly when the slice is complete: a byte after
//! that, or a stream that ends early, is an error. LEB128 values must be minimal (no trailing
//! zero group), take at most 10 bytes and fit the field (lengths <= the slice length, seeks
//! within the base image). The zstd frame holding the stream must declare a content size of at
//! most [`MAX_STREAM_FACTOR`] x the slice length, so decoding time stays linear in the slice. Reads outside the
//! base image are errors. This is bsdiff's add/extra/seek scheme (as in bidiff), with the seek
//! moved to the front of each op so a slice needs no initial cursor.
//!
//! The decoder is a state machine fed bytes in pieces of any size: it holds one partial varint,
//! never the patch, and reads the base in small blocks through [`BaseImage`].

use crate::error::{Error, Result};
use crate::predict::{Predict, MAX_MAP_ENTRIES};

/// Read access to the base (old) image, e.g. the running slot in flash.
pub trait BaseImage {
    /// Size in bytes.
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`; the range is within `len()` (callers check).
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl BaseImage for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let start = usize::try_from(offset).map_err(|_| Error::BaseRead)?;
        let src = self.get(start..start + buf.len()).ok_or(Error::BaseRead)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// Patch format 1: ops only (the record's `arg`).
pub const PATCH_FORMAT_1: u64 = 1;
/// Patch format 2: a reference-prediction header ([`crate::predict`]), then ops whose add bytes
/// are added to the *predicted* base bytes. Two-slot deltas (kind 1) only.
pub const PATCH_FORMAT_2: u64 = 2;

/// Largest op stream per slice byte: an op producing one byte takes at most a 5-byte seek
/// (base images <= 4 GiB), a 1-byte add length, one add byte and a 1-byte copy length.
pub const MAX_STREAM_FACTOR: u64 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Format 2 header: flags, load address, map length, then each entry's start and shift.
    Flags,
    Address,
    MapLen,
    MapStart,
    MapShift,
    Seek,
    AddLen,
    Add,
    CopyLen,
    Copy,
}

/// Streaming decoder of one slice's op stream; output goes to a sink in pieces.
#[derive(Debug)]
pub struct PatchDecoder {
    slice: u32,
    phase: Phase,
    varint: u64,
    shift: u32,
    /// Bytes left in the current add or copy run.
    run: u64,
    /// Bytes the current op produced so far (an op must produce at least one).
    op_len: u64,
    cursor: u64,
    base_len: u64,
    /// Bytes produced so far, and the slice length.
    pos: u64,
    len: u64,
    /// Format 2: the slice's offset in the new image, the prediction header (its map filled
    /// as it streams in), the map entries still to come, the entry being read, and the
    /// current add op's displacement (new offset − base offset).
    start: u64,
    predict: Option<Predict>,
    map_left: u64,
    entry_start: u32,
    delta: u32,
}

impl PatchDecoder {
    /// A decoder for slice `slice` of `len` bytes against a base of `base_len` bytes.
    pub fn new(slice: u32, len: u64, base_len: u64) -> Self {
        PatchDecoder {
            slice,
            phase: Phase::Seek,
            start: 0,
            predict: None,
            map_left: 0,
            entry_start: 0,
            delta: 0,
            varint: 0,
            shift: 0,
            run: 0,
            op_len: 0,
            cursor: 0,
            base_len,
            pos: 0,
            len,
        }
    }

    /// A decoder for patch format `format` (the record's `arg`): slice `slice` of `len` bytes at
    /// new-image offset `start`, against a base of `base_len` bytes. `None` for an unknown
    /// format.
    pub fn with_format(
        format: u64,
        slice: u32,
        start: u64,
        len: u64,
        base_len: u64,
    ) -> Option<Self> {
        let mut d = Self::new(slice, len, base_len);
        d.start = start;
        match format {
            PATCH_FORMAT_1 => {}
            PATCH_FORMAT_2 => d.phase = Phase::Flags,
            _ => return None,
        }
        Some(d)
    }

    fn bad(&self) -> Error {
        Error::Decode { slice: self.slice }
    }

    /// Takes one complete header varint (format 2).
    fn header_field(&mut self, v: u64) -> Result<()> {
        let bad = self.bad();
        match self.phase {
            Phase::Flags => {
                let flags = u8::try_from(v).map_err(|_| bad)?;
                self.predict = Some(Predict::empty(flags, 0).ok_or(bad)?);
                self.phase = Phase::Address;
            }
            Phase::Address => {
                let p = self.predict.as_mut().ok_or(bad)?;
                *p = Predict::empty(p.flags(), u32::try_from(v).map_err(|_| bad)?).ok_or(bad)?;
                self.phase = Phase::MapLen;
            }
            Phase::MapLen => {
                if v > MAX_MAP_ENTRIES as u64 {
                    return Err(bad);
                }
                self.map_left = v;
                self.phase = if v == 0 { Phase::Seek } else { Phase::MapStart };
            }
            Phase::MapStart => {
                let p = self.predict.as_ref().ok_or(bad)?;
                // The first start is absolute, later ones add at least 1 to the one before.
                let start = match p.entries().last() {
                    None => v,
                    Some(&(last, _)) if v >= 1 => u64::from(last).checked_add(v).ok_or(bad)?,
                    Some(_) => return Err(bad),
                };
                self.entry_start = u32::try_from(start).map_err(|_| bad)?;
                self.phase = Phase::MapShift;
            }
            Phase::MapShift => {
                // A zigzag change from the shift before (0 before the first).
                let p = self.predict.as_mut().ok_or(bad)?;
                let before = p.entries().last().map_or(0, |&(_, s)| s);
                let change = ((v >> 1) as i64 ^ -((v & 1) as i64)) as u32;
                p.push(self.entry_start, before.wrapping_add(change))
                    .ok_or(bad)?;
                self.map_left -= 1;
                self.phase = if self.map_left == 0 {
                    Phase::Seek
                } else {
                    Phase::MapStart
                };
            }
            _ => return Err(bad), // not a header phase
        }
        Ok(())
    }

    /// Accumulates a LEB128 byte; returns the value when complete.
    fn varint_byte(&mut self, b: u8) -> Result<Option<u64>> {
        if self.shift >= 64 || (self.shift == 63 && b > 1) {
            return Err(self.bad());
        }
        self.varint |= u64::from(b & 0x7F) << self.shift;
        self.shift += 7;
        if b & 0x80 != 0 {
            return Ok(None);
        }
        if b == 0 && self.shift > 7 {
            return Err(self.bad()); // non-minimal LEB128 (a trailing zero group)
        }
        let v = self.varint;
        self.varint = 0;
        self.shift = 0;
        Ok(Some(v))
    }

    /// Feeds the next piece of the op stream; produced bytes go to `sink`, in order.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        base: &mut dyn BaseImage,
        sink: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        while let Some((&b, rest)) = input.split_first() {
            let left = self.len - self.pos;
            match self.phase {
                Phase::Flags
                | Phase::Address
                | Phase::MapLen
                | Phase::MapStart
                | Phase::MapShift => {
                    input = rest;
                    if let Some(v) = self.varint_byte(b)? {
                        self.header_field(v)?;
                    }
                }
                Phase::Seek | Phase::AddLen | Phase::CopyLen => {
                    if self.phase == Phase::Seek && left == 0 {
                        return Err(self.bad()); // bytes after the slice is complete
                    }
                    input = rest;
                    let Some(v) = self.varint_byte(b)? else {
                        continue;
                    };
                    match self.phase {
                        Phase::Seek => {
                            let seek = (v >> 1) as i64 ^ -((v & 1) as i64); // zigzag
                            let c = i128::from(self.cursor) + i128::from(seek);
                            if c < 0 || c > i128::from(self.base_len) {
                                return Err(self.bad());
                            }
                            self.cursor = c as u64;
                            self.op_len = 0;
                            self.phase = Phase::AddLen;
                        }
                        Phase::AddLen => {
                            let fits_base = self
                                .cursor
                                .checked_add(v)
                                .is_some_and(|e| e <= self.base_len);
                            if v > left || !fits_base {
                                return Err(self.bad());
                            }
                            self.run = v;
                            self.op_len = v;
                            // Truncated to 32 bits on purpose: predictions work modulo 2^32.
                            self.delta = (self.start + self.pos).wrapping_sub(self.cursor) as u32;
                            self.phase = if v == 0 { Phase::CopyLen } else { Phase::Add };
                        }
                        _ => {
                            if v > left || self.op_len + v == 0 {
                                return Err(self.bad());
                            }
                            self.run = v;
                            self.phase = if v == 0 { Phase::Seek } else { Phase::Copy };
                        }
                    }
                }
                Phase::Add => {
                    let n = (self.run as usize).min(input.len()).min(ADD_BLOCK);
                    let (chunk, rest) = input.split_at(n);
                    let mut block = [0u8; ADD_BLOCK];
                    let block = block.get_mut(..n).ok_or(self.bad())?;
                    match &self.predict {
                        Some(p) => p.read(base, self.cursor, self.delta, block)?,
                        None => base.read(self.cursor, block)?,
                    }
                    for (o, &a) in block.iter_mut().zip(chunk) {
                        *o = o.wrapping_add(a);
                    }
                    sink(block)?;
                    self.pos += n as u64;
                    self.cursor += n as u64;
                    self.run -= n as u64;
                    input = rest;
                    if self.run == 0 {
                        self.phase = Phase::CopyLen;
                    }
                }
                Phase::Copy => {
                    let n = (self.run as usize).min(input.len());
                    let (chunk, rest) = input.split_at(n);
                    sink(chunk)?;
                    self.pos += n as u64;
                    self.run -= n as u64;
                    input = rest;
                    if self.run == 0 {
                        self.phase = Phase::Seek;
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks the stream ended exactly at the end of the slice.
    pub fn finish(&self) -> Result<()> {
        if self.phase == Phase::Seek && self.shift == 0 && self.pos == self.len {
            Ok(())
        } else {
            Err(self.bad())
        }
    }
}

/// Base bytes read per block while adding (stack buffer).
pub(crate) const ADD_BLOCK: usize = 256;

/// One op of a patch, for the encoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op<'a> {
    pub seek: i64,
    pub add: &'a [u8],
    pub copy: &'a [u8],
}

/// Encodes ops as a patch-format-1 stream.
#[cfg(feature = "alloc")]
pub fn encode(ops: &[Op<'_>]) -> alloc::vec::Vec<u8> {
    encode_into(alloc::vec::Vec::new(), ops)
}

/// Encodes a patch-format-2 stream: `predict`'s header, then `ops`, whose add bytes must be
/// taken against the predicted base.
#[cfg(feature = "alloc")]
pub fn encode_format2(predict: &Predict, ops: &[Op<'_>]) -> alloc::vec::Vec<u8> {
    let mut out = alloc::vec::Vec::new();
    uvarint(&mut out, predict.flags().into());
    uvarint(&mut out, predict.address().into());
    uvarint(&mut out, predict.entries().len() as u64);
    let (mut start, mut shift) = (0u32, 0u32);
    for &(s, h) in predict.entries() {
        uvarint(&mut out, u64::from(s - start));
        let change = h.wrapping_sub(shift) as i32 as i64;
        uvarint(&mut out, ((change << 1) ^ (change >> 63)) as u64);
        (start, shift) = (s, h);
    }
    encode_into(out, ops)
}

#[cfg(feature = "alloc")]
fn uvarint(out: &mut alloc::vec::Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

#[cfg(feature = "alloc")]
fn encode_into(mut out: alloc::vec::Vec<u8>, ops: &[Op<'_>]) -> alloc::vec::Vec<u8> {
    for op in ops {
        uvarint(&mut out, ((op.seek << 1) ^ (op.seek >> 63)) as u64);
        uvarint(&mut out, op.add.len() as u64);
        out.extend_from_slice(op.add);
        uvarint(&mut out, op.copy.len() as u64);
        out.extend_from_slice(op.copy);
    }
    out
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;

    /// Feeds `stream` to `d` in pieces of `piece` bytes and returns what it produced.
    fn feed_all(
        mut d: PatchDecoder,
        stream: &[u8],
        base: &[u8],
        piece: usize,
    ) -> Result<alloc::vec::Vec<u8>> {
        let mut out = alloc::vec::Vec::new();
        let mut b = base;
        for chunk in stream.chunks(piece.max(1)) {
            d.feed(chunk, &mut b, &mut |p| {
                out.extend_from_slice(p);
                Ok(())
            })?;
        }
        d.finish()?;
        Ok(out)
    }

    fn apply(stream: &[u8], base: &[u8], len: usize, piece: usize) -> Result<alloc::vec::Vec<u8>> {
        let d = PatchDecoder::new(0, len as u64, base.len() as u64);
        let out = feed_all(d, stream, base, piece)?;
        assert_eq!(out.len(), len);
        Ok(out)
    }

    #[test]
    fn decodes_in_pieces_of_any_size() {
        let base = b"hello world, hello otapack";
        let ops = [
            Op {
                seek: 6,
                add: &[0, 0, 0, 0, 0],
                copy: b"!",
            }, // "world!"
            Op {
                seek: -11,
                add: &[0, 0, 0, 0, 1],
                copy: b"",
            }, // "hellp"
            Op {
                seek: 15,
                add: &[],
                copy: b" end",
            }, // literal only
        ];
        let stream = encode(&ops);
        for piece in 1..stream.len() + 1 {
            assert_eq!(apply(&stream, base, 15, piece).unwrap(), b"world!hellp end");
        }
    }

    #[test]
    fn rejects_out_of_range_and_malformed_streams() {
        let base = [7u8; 16];
        let enc = |ops: &[Op<'_>]| encode(ops);
        // Seek before the start or past the end.
        assert!(apply(
            &enc(&[Op {
                seek: -1,
                add: &[0],
                copy: &[]
            }]),
            &base,
            1,
            3
        )
        .is_err());
        assert!(apply(
            &enc(&[Op {
                seek: 17,
                add: &[],
                copy: &[1]
            }]),
            &base,
            1,
            3
        )
        .is_err());
        // Add running past the base.
        assert!(apply(
            &enc(&[Op {
                seek: 10,
                add: &[0; 7],
                copy: &[]
            }]),
            &base,
            7,
            3
        )
        .is_err());
        // Empty op.
        assert!(apply(
            &enc(&[
                Op {
                    seek: 0,
                    add: &[],
                    copy: &[]
                },
                Op {
                    seek: 0,
                    add: &[],
                    copy: &[1]
                }
            ]),
            &base,
            1,
            3
        )
        .is_err());
        // More output than the slice, too little, trailing bytes.
        assert!(apply(
            &enc(&[Op {
                seek: 0,
                add: &[],
                copy: &[1, 2]
            }]),
            &base,
            1,
            3
        )
        .is_err());
        assert!(apply(
            &enc(&[Op {
                seek: 0,
                add: &[],
                copy: &[1]
            }]),
            &base,
            2,
            3
        )
        .is_err());
        let mut s = enc(&[Op {
            seek: 0,
            add: &[],
            copy: &[1],
        }]);
        s.push(0);
        assert!(apply(&s, &base, 1, 3).is_err());
        // An 11-byte varint.
        assert!(apply(&[0xFF; 11], &base, 1, 3).is_err());
        // A stream cut inside a varint.
        assert!(apply(&[0x80], &base, 1, 3).is_err());
        // Non-minimal LEB128: seek 0 written as 80 00.
        let mut s = alloc::vec![0x80, 0x00];
        s.extend_from_slice(
            &enc(&[Op {
                seek: 0,
                add: &[],
                copy: &[1],
            }])[1..],
        );
        assert!(apply(&s, &base, 1, 3).is_err());
        assert_eq!(apply(&s[1..], &base, 1, 3).unwrap(), [1]);
    }

    fn apply2(
        stream: &[u8],
        base: &[u8],
        start: u64,
        len: usize,
        piece: usize,
    ) -> Result<alloc::vec::Vec<u8>> {
        let d = PatchDecoder::with_format(PATCH_FORMAT_2, 0, start, len as u64, base.len() as u64)
            .unwrap();
        feed_all(d, stream, base, piece)
    }

    /// Base for the format-2 examples: a Thumb `BL` at 0 calling offset 8 (F000 F802), and at 4
    /// a pointer to offset 8 with load address 0x100 (0x108).
    const BASE2: [u8; 12] = [
        0x00, 0xF0, 0x02, 0xF8, 0x08, 0x01, 0, 0, 0xAA, 0xBB, 0xCC, 0xDD,
    ];

    #[test]
    fn format_2_header_and_ops_pinned() {
        // Everything from offset 8 moved up by 4: the call and the pointer follow.
        use crate::predict::{POINTER32, THUMB_BL};
        let p = Predict::new(THUMB_BL | POINTER32, 0x100, &[(8, 4)]).unwrap();
        let ops = [Op {
            seek: 0,
            add: &[0; 12],
            copy: b"",
        }];
        let stream = encode_format2(&p, &ops);
        assert_eq!(
            stream[..7],
            [
                0x03, // flags: Thumb BL and pointers
                0x80, 0x02, // address 0x100
                0x01, // one map entry
                0x08, // start 8
                0x08, // shift +4 (zigzag)
                0x00, // op: seek 0
            ]
        );
        for piece in 1..=stream.len() {
            let out = apply2(&stream, &BASE2, 0, 12, piece).unwrap();
            // F000 F804: the call now jumps 12 - 4 = 8 bytes; the pointer is 0x10C.
            assert_eq!(
                out,
                [0x00, 0xF0, 0x04, 0xF8, 0x0C, 0x01, 0, 0, 0xAA, 0xBB, 0xCC, 0xDD]
            );
        }
        // The same stream as format 1 adds to the base bytes as they are.
        let mut f1 = PatchDecoder::with_format(PATCH_FORMAT_1, 0, 0, 12, 12).unwrap();
        let mut b: &[u8] = &BASE2;
        assert!(f1.feed(&encode(&ops), &mut b, &mut |_| Ok(())).is_ok());
        // The slice's position in the new image moves the call's prediction (d = 2 here).
        let ops = [Op {
            seek: 0,
            add: &[0; 4],
            copy: b"",
        }];
        let out = apply2(&encode_format2(&p, &ops), &BASE2, 2, 4, 4).unwrap();
        assert_eq!(out, [0x00, 0xF0, 0x03, 0xF8]); // 12 - (2 + 4) = 6 bytes
                                                   // Without the map entry, nothing moved: the base comes out as it is.
        let still = Predict::new(THUMB_BL | POINTER32, 0x100, &[]).unwrap();
        let ops = [Op {
            seek: 0,
            add: &[0; 12],
            copy: b"",
        }];
        assert_eq!(
            apply2(&encode_format2(&still, &ops), &BASE2, 0, 12, 5).unwrap(),
            BASE2
        );
        assert!(PatchDecoder::with_format(3, 0, 0, 1, 1).is_none());
    }

    #[test]
    fn format_2_headers_are_checked() {
        let op = [0x00, 0x00, 0x01, 0x2A]; // seek 0, no add, one literal byte
        let with = |header: &[u8]| {
            let mut s = header.to_vec();
            s.extend_from_slice(&op);
            apply2(&s, &BASE2, 0, 1, 1)
        };
        assert_eq!(with(&[0x00, 0x00, 0x00]).unwrap(), [0x2A]); // no flags, no map
        assert_eq!(with(&[0x10, 0x00, 0x00]).unwrap(), [0x2A]); // s390x alone
        assert_eq!(with(&[0x22, 0x00, 0x00]).unwrap(), [0x2A]); // Xtensa with pointers
        assert_eq!(with(&[0x42, 0x00, 0x00]).unwrap(), [0x2A]); // MIPS16 with pointers
        assert_eq!(
            with(&[0x03, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x00]).unwrap(),
            [0x2A]
        );
        let bad = [
            &[0x80, 0x01, 0x00, 0x00][..],               // unknown flag (bit 7)
            &[0x41, 0x00, 0x00],                         // MIPS16 with Thumb BL
            &[0x12, 0x00, 0x00],                         // s390x with pointers
            &[0x21, 0x00, 0x00],                         // Xtensa with Thumb BL
            &[0x09, 0x00, 0x00],                         // Thumb BL with ADRP pairs
            &[0x80, 0x02, 0x00, 0x00],                   // flags 0x100
            &[0x01, 0x80, 0x80, 0x80, 0x80, 0x10, 0x00], // address 2^32
            &[0x01, 0x00, 0x41],                         // 65 map entries
            &[0x01, 0x00, 0x02, 0x05, 0x02, 0x00, 0x02], // second start not after the first
            &[
                0x01, 0x00, 0x02, 0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x00, 0x01, 0x00,
            ], // start 2^32
        ];
        for h in bad {
            assert_eq!(with(h), Err(Error::Decode { slice: 0 }), "{h:02x?}");
        }
        // The 64th entry is the last allowed.
        let mut h = alloc::vec![0x01, 0x00, 0x40];
        for _ in 0..64 {
            h.extend_from_slice(&[0x01, 0x02]);
        }
        assert_eq!(with(&h).unwrap(), [0x2A]);
        // A header alone, with no op, or a stream that ends inside the header, ends early.
        assert!(apply2(&[0x00, 0x00, 0x00], &BASE2, 0, 1, 1).is_err());
        assert!(apply2(&[0x01, 0x00, 0x02, 0x05], &BASE2, 0, 1, 1).is_err());
    }
}
