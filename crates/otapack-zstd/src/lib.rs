//! A zstd frame decoder (RFC 8878) whose memory is fixed before the first byte: no
//! allocation, the window lives in a buffer the caller provides, and each sequence is executed
//! as soon as it is decoded.
//!
//! ruzstd 0.9 (which otapack used before) keeps a ring buffer of twice the window rounded up
//! to a power of two, a whole block's literals, and every sequence of a block in a `Vec` grown
//! by doubling; a 32 KiB window measured up to 285 KB of heap. libzstd
//! does not fit a bootloader either. Here the memory is:
//!
//! | what | bytes |
//! |---|---|
//! | [`Decoder`] (entropy tables, repeat offsets, checksum state) | `size_of::<Decoder>()`, about 9.3 KiB |
//! | the ring the caller passes | [`ring_len`]`(window, block)` = window + largest block |
//!
//! The ring holds the last `window` bytes of output and the block being decoded. A block's
//! literals are decoded into the ring's far end, where the block's output can never overtake
//! them: output = literals + matches, and the matches are checked to total at most
//! `block - literals` before they are copied (libzstd does the same in its own buffer).
//!
//! The entropy decoders (`bits`, `fse`, `huf`) are forked from ruzstd 0.9.1 (MIT, see
//! `LICENSE-MIT.ruzstd`): the same algorithms in fixed-size tables, with every `assert!`,
//! `panic!` and index on input turned into an [`Error`]. Literals, sequences and their
//! execution are written for this bounded layout. Only frames otapack needs are accepted:
//! no dictionaries, no skippable frames.
//!
//! Usage, one frame: [`FrameHeader::parse`], [`Decoder::begin_frame`], then
//! [`Decoder::decode_block`] for each block (each call hands back that block's output, still
//! in the ring, valid until the next call), then [`Decoder::checksum`] against the frame's
//! 4-byte trailer when it has one.
//!
//! A frame may also be decoded against a *prefix*: bytes that precede its content without
//! being part of it, as libzstd's `ZSTD_CCtx_refPrefix` (and `zstd --patch-from`) writes them.
//! The prefix is not held in the ring: a match that reaches before the content's start reads
//! it through [`Prefix`] (otapack reads the old image from flash), so the ring still holds only
//! the content. [`Decoder::begin_frame_with_prefix`] bounds the *content* by the window instead
//! of the frame's declared window (which covers prefix and content), and
//! [`Decoder::decode_block_with`] passes the reader.
#![no_std]
#![forbid(unsafe_code)]

mod bits;
mod block;
mod fse;
mod huf;

use core::hash::Hasher;

pub use block::MAX_BLOCK;

/// Why a frame was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Malformed input; the text says which part.
    Corrupt(&'static str),
    /// The frame needs a window larger than the decoder was given.
    WindowTooLarge { window: u64 },
    /// The ring passed is not the size [`Decoder::begin_frame`] was told.
    RingSize { needed: usize },
    /// A frame feature this decoder does not take (a dictionary).
    Unsupported(&'static str),
    /// The [`Prefix`] reader failed (its own error says why).
    Prefix,
    /// [`Decoder::decode_block`] without a frame begun, or after its last block.
    NoFrame,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Corrupt(what) => write!(f, "corrupt zstd frame: {what}"),
            Error::WindowTooLarge { window } => {
                write!(
                    f,
                    "zstd frame needs a {window}-byte window, more than allowed"
                )
            }
            Error::RingSize { needed } => write!(f, "zstd ring must be {needed} bytes"),
            Error::Unsupported(what) => write!(f, "unsupported zstd frame: {what}"),
            Error::NoFrame => f.write_str("no zstd frame begun"),
            Error::Prefix => f.write_str("the frame's prefix could not be read"),
        }
    }
}

/// The zstd frame magic number, little-endian.
pub const MAGIC: [u8; 4] = [0x28, 0xB5, 0x2F, 0xFD];

/// A parsed frame header (RFC 8878 §3.1.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Window_Size: the content size for a single-segment frame.
    pub window_size: u64,
    /// Frame_Content_Size, when declared.
    pub content_size: Option<u64>,
    /// Whether a 4-byte content checksum follows the last block.
    pub checksum: bool,
    /// Bytes of the header, magic included.
    pub len: usize,
}

impl FrameHeader {
    /// The header's length (magic included) for Frame_Header_Descriptor `fhd`: what a reader
    /// must gather once it has the first 5 bytes.
    pub fn len_for(fhd: u8) -> usize {
        let single = fhd & 0x20 != 0;
        let fcs_len = match fhd >> 6 {
            0 => usize::from(single),
            1 => 2,
            2 => 4,
            _ => 8,
        };
        5 + usize::from(!single) + fcs_len
    }

    /// Parses the header at the start of `buf`. `Ok(None)`: `buf` is too short to tell yet.
    pub fn parse(buf: &[u8]) -> Result<Option<FrameHeader>, Error> {
        let Some((magic, rest)) = buf.split_first_chunk::<4>() else {
            return Ok(None);
        };
        if *magic != MAGIC {
            return Err(Error::Corrupt("not a zstd frame"));
        }
        let Some((&fhd, rest)) = rest.split_first() else {
            return Ok(None);
        };
        if fhd & 0x08 != 0 {
            return Err(Error::Corrupt("reserved frame header bit set"));
        }
        if fhd & 0x03 != 0 {
            return Err(Error::Unsupported("dictionary"));
        }
        let single = fhd & 0x20 != 0;
        let len = Self::len_for(fhd);
        let wd_len = usize::from(!single);
        let fcs_len = len - 5 - wd_len;
        let Some(fields) = rest.get(..wd_len + fcs_len) else {
            return Ok(None);
        };
        let (wd, fcs) = fields.split_at(wd_len);
        let content_size = (fcs_len > 0).then(|| {
            let mut v = [0u8; 8];
            if let Some(dst) = v.get_mut(..fcs_len) {
                dst.copy_from_slice(fcs);
            }
            let v = u64::from_le_bytes(v);
            if fcs_len == 2 {
                v + 256
            } else {
                v
            }
        });
        let window_size = match (wd.first(), content_size) {
            (Some(&wd), _) => {
                let base = 1u64 << (10 + (wd >> 3));
                base + base / 8 * u64::from(wd & 7)
            }
            (None, Some(size)) => size,
            (None, None) => return Err(Error::Corrupt("frame header")),
        };
        Ok(Some(FrameHeader {
            window_size,
            content_size,
            checksum: fhd & 0x04 != 0,
            len,
        }))
    }
}

/// The bytes before a frame's content that its matches may reach into (see the crate
/// documentation): read on demand, never held.
pub trait Prefix {
    /// Reads `buf.len()` bytes from offset `at` of the prefix. The decoder asks only for bytes
    /// below the prefix length given to [`Decoder::begin_frame_with_prefix`]. An error (by
    /// convention [`Error::Prefix`]) stops the frame and is returned as it is.
    fn read(&mut self, at: u64, buf: &mut [u8]) -> Result<(), Error>;
}

/// The ring a frame of window `window` and blocks of at most `block` bytes needs.
pub const fn ring_len(window: usize, block: usize) -> usize {
    window + block
}

/// What a block produced: its bytes, in order, as one or two pieces of the ring (two when
/// they wrap around its end). Valid until the next call on the decoder.
#[derive(Debug)]
pub struct Output<'r> {
    pub first: &'r [u8],
    pub second: &'r [u8],
    /// Whether this was the frame's last block.
    pub last: bool,
}

impl Output<'_> {
    pub fn len(&self) -> usize {
        self.first.len() + self.second.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A zstd decoder: entropy tables and frame state, no buffers (the caller's ring holds the
/// window). Reusable across frames.
#[derive(Clone)]
pub struct Decoder {
    pub(crate) tables: block::Tables,
    /// The frame's window and largest block, the ring size, where the next block starts in
    /// the ring, and what the frame produced so far.
    window: u64,
    block_max: usize,
    ring: usize,
    pos: usize,
    produced: u64,
    /// The frame's prefix length (0: none).
    prefix: u64,
    in_frame: bool,
    hash: twox_hash::XxHash64,
}

impl core::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Decoder")
            .field("window", &self.window)
            .field("block_max", &self.block_max)
            .field("produced", &self.produced)
            .finish_non_exhaustive()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    pub fn new() -> Self {
        Decoder {
            tables: block::Tables::new(),
            window: 0,
            block_max: 0,
            ring: 0,
            pos: 0,
            produced: 0,
            prefix: 0,
            in_frame: false,
            hash: twox_hash::XxHash64::with_seed(0),
        }
    }

    /// Starts the frame `header`. Its window must be at most `max_window`; its blocks are held
    /// to `max_block` (at most [`MAX_BLOCK`]) besides the RFC's min(window, 128 KiB). The ring
    /// passed to every [`decode_block`](Self::decode_block) of this frame must be exactly
    /// `ring` bytes, at least [`ring_len`]`(max_window, max_block)`.
    pub fn begin_frame(
        &mut self,
        header: &FrameHeader,
        max_window: u64,
        max_block: usize,
        ring: usize,
    ) -> Result<(), Error> {
        self.in_frame = false;
        if header.window_size > max_window {
            return Err(Error::WindowTooLarge {
                window: header.window_size,
            });
        }
        self.start(header, header.window_size, max_block, ring, 0)
    }

    /// Starts the frame `header`, whose matches may reach `prefix_len` bytes before its
    /// content into a [`Prefix`] passed to each [`decode_block_with`](Self::decode_block_with).
    /// The frame must declare its content size, at most `max_content`: the ring holds the
    /// content only, so it must be exactly `ring` bytes, at least
    /// [`ring_len`]`(max_content, max_block)`. The declared window is not bounded (it covers
    /// the prefix); a match is held to the prefix and the content produced before it.
    pub fn begin_frame_with_prefix(
        &mut self,
        header: &FrameHeader,
        max_content: u64,
        max_block: usize,
        ring: usize,
        prefix_len: u64,
    ) -> Result<(), Error> {
        self.in_frame = false;
        let content = header.content_size.ok_or(Error::Corrupt(
            "a frame with a prefix must declare its size",
        ))?;
        if content > max_content {
            return Err(Error::WindowTooLarge { window: content });
        }
        let reach = content.saturating_add(prefix_len);
        self.start(header, content, max_block, ring, prefix_len)?;
        self.window = reach;
        Ok(())
    }

    /// Sets up a frame whose ring must hold `held` bytes of output besides the block.
    fn start(
        &mut self,
        header: &FrameHeader,
        held: u64,
        max_block: usize,
        ring: usize,
        prefix: u64,
    ) -> Result<(), Error> {
        let block_max = (header.window_size.min(MAX_BLOCK as u64) as usize).min(max_block);
        // In u64: a window that does not fit usize (32-bit targets) must not wrap around. An
        // empty ring is refused even for an empty frame, so ring positions never divide by 0.
        let needed = held.saturating_add(block_max as u64).max(1);
        if (ring as u64) < needed || max_block > MAX_BLOCK {
            return Err(Error::RingSize {
                needed: usize::try_from(needed).unwrap_or(usize::MAX),
            });
        }
        self.tables.reset();
        self.window = header.window_size;
        self.block_max = block_max;
        self.ring = ring;
        self.pos = 0;
        self.produced = 0;
        self.prefix = prefix;
        self.in_frame = true;
        self.hash = twox_hash::XxHash64::with_seed(0);
        Ok(())
    }

    /// Total bytes the frame produced so far.
    pub fn produced(&self) -> u64 {
        self.produced
    }

    /// The frame's largest block, as [`begin_frame`](Self::begin_frame) settled it.
    pub fn block_max(&self) -> usize {
        self.block_max
    }

    /// The length of the block unit at the start of `buf` (3-byte header plus content) once
    /// its header is there, after checking it: `Ok(None)` while `buf` is shorter than 3.
    pub fn block_len(&self, buf: &[u8]) -> Result<Option<usize>, Error> {
        let Some(&[h0, h1, h2]) = buf.get(..3) else {
            return Ok(None);
        };
        let header = u32::from(h0) | u32::from(h1) << 8 | u32::from(h2) << 16;
        let size = (header >> 3) as usize;
        if size > self.block_max {
            return Err(Error::Corrupt("block larger than the frame allows"));
        }
        Ok(Some(
            3 + match (header >> 1) & 3 {
                0 | 2 => size,
                1 => 1,
                _ => return Err(Error::Corrupt("reserved block type")),
            },
        ))
    }

    /// Decodes one block: `block` is its 3-byte header and exactly its content. `ring` is the
    /// window buffer (see [`begin_frame`](Self::begin_frame)). Returns the block's output.
    pub fn decode_block<'r>(
        &mut self,
        ring: &'r mut [u8],
        block: &[u8],
    ) -> Result<Output<'r>, Error> {
        self.decode_block_with(ring, block, None)
    }

    /// [`decode_block`](Self::decode_block) for a frame begun with
    /// [`begin_frame_with_prefix`](Self::begin_frame_with_prefix): a match that reaches before
    /// the content reads `prefix` (none given: such a match is corrupt).
    pub fn decode_block_with<'r>(
        &mut self,
        ring: &'r mut [u8],
        block: &[u8],
        prefix: Option<&mut dyn Prefix>,
    ) -> Result<Output<'r>, Error> {
        if !self.in_frame {
            return Err(Error::NoFrame);
        }
        if ring.len() != self.ring {
            return Err(Error::RingSize { needed: self.ring });
        }
        // An error ends the frame: the tables and ring no longer hold a consistent state.
        self.in_frame = false;
        let n = self
            .block_len(block)?
            .ok_or(Error::Corrupt("block truncated"))?;
        if n != block.len() {
            return Err(Error::Corrupt("block length"));
        }
        let (header, body) = block.split_at(3);
        let last = header.first().is_some_and(|h| h & 1 != 0);
        let size = (u32::from_le_bytes([
            header.first().copied().unwrap_or(0),
            header.get(1).copied().unwrap_or(0),
            header.get(2).copied().unwrap_or(0),
            0,
        ]) >> 3) as usize;
        let mut w = block::Writer {
            ring,
            start: self.pos,
            len: 0,
            block_max: self.block_max,
            window: self.window,
            before: self.produced,
            prefix: prefix.filter(|_| self.prefix > 0),
            prefix_len: self.prefix,
        };
        match header.first().map(|h| (h >> 1) & 3) {
            Some(0) => w.literal_bytes(body)?,
            Some(1) => {
                let byte = body.first().copied().ok_or(Error::Corrupt("RLE block"))?;
                w.fill(byte, size)?;
            }
            Some(2) => block::decode_compressed(&mut self.tables, &mut w, body)?,
            _ => return Err(Error::Corrupt("reserved block type")),
        }
        let out_len = w.len;
        let start = self.pos;
        let ring_len = self.ring;
        self.pos = (start + out_len) % ring_len;
        self.produced += out_len as u64;
        let (first, second) = if start + out_len <= ring_len {
            (ring.get(start..start + out_len).unwrap_or(&[]), &[][..])
        } else {
            let (head, tail) = ring.split_at(start);
            let wrap = start + out_len - ring_len;
            (tail, head.get(..wrap).unwrap_or(&[]))
        };
        self.hash.write(first);
        self.hash.write(second);
        self.in_frame = !last;
        Ok(Output {
            first,
            second,
            last,
        })
    }

    /// The low 32 bits of XXH64 over the frame's output so far: after the last block, compare
    /// with the frame's 4-byte trailer (little-endian).
    pub fn checksum(&self) -> u32 {
        self.hash.finish() as u32
    }
}
