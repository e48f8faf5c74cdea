//! What the applier needs in RAM for a package, from its manifest alone: the caller's buffers,
//! the zstd decoder's heap, and a reserve for stack and the applier's own state. The builder
//! records the total in the manifest (`device_ram`) and `--device-ram` chooses settings that
//! fit a budget; a device can compare [`needed`] with what it has before it starts.
//!
//! The zstd decoder (ruzstd 0.9) allocates, for a frame window `W` and blocks that decode to at
//! most `B` bytes (`zstd_block_log`, else min(W, 128 KiB)):
//!
//! | allocation | bound |
//! |---|---|
//! | ring buffer (window + one block; allocated once, see `decode::primed_decoder`) | next_pow2(W + B) + 1 |
//! | entropy tables (Huffman, three FSE) and their build buffers | [`ZSTD_TABLES`] |
//! | a compressed block's bytes, its literals (grown by doubling: up to 2B each) | 4B |
//! | the sequences (12 bytes each, at most B/3 per block, grown by doubling) | 8B |
//! | one vector's growth: old and new block live together while it is copied | 4B |
//! | a block cut by a payload segment boundary, gathered by the applier | B + 7 |
//!
//! so at most `next_pow2(W + B) + 1 + ZSTD_TABLES + 17B`. `tests/ram.rs` checks the measured
//! peak against this bound on real packages at several settings.
//!
//! The bound holds for frames that keep to their limits, as otapack's builder writes them. The
//! reader checks a block's header, literals and sequence count against `B`, but ruzstd checks
//! what a block decodes to only against the window, and reserves a match before checking it,
//! so a *signed* hostile frame can make it allocate more (`docs/format.md` §6.3).

use crate::wire::header::HEADER_LEN;
use crate::wire::manifest::Manifest;
use crate::wire::slice::Method;

/// Bytes kept for the stack and the applier's own state (on the stack, caller-owned). The
/// applier peaks at about 14 KiB of stack with curve25519-dalek's portable backend (the one
/// Cortex-M uses), measured on x86_64 (see the README).
pub const STACK_RESERVE: u64 = 16 * 1024;
/// The flash write buffer assumed (a multiple of common NOR program sizes).
pub const WRITE_BUFFER: u64 = 256;
/// ruzstd's entropy tables and fixed state, measured (with margin) on the host.
pub const ZSTD_TABLES: u64 = 16 * 1024;

/// What the applier needs for one package. All figures in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RamNeed {
    /// Header and manifest (`Applier::manifest_buffer_len`).
    pub manifest_buffer: u64,
    /// The largest payload segment (`Applier::payload_buffer_len`).
    pub payload_buffer: u64,
    /// The flash write buffer ([`WRITE_BUFFER`]).
    pub write_buffer: u64,
    /// The zstd decoder's heap ([`zstd_heap`]); 0 without zstd or patch slices.
    pub decoder_heap: u64,
    /// Stack and applier state ([`STACK_RESERVE`]).
    pub stack_reserve: u64,
}

impl RamNeed {
    pub fn total(&self) -> u64 {
        self.manifest_buffer
            + self.payload_buffer
            + self.write_buffer
            + self.decoder_heap
            + self.stack_reserve
    }
}

/// The most bytes a zstd block decodes to, for a window of `2^window_log` and a
/// `zstd_block_log` (0: none).
pub fn zstd_block(window_log: u8, block_log: u8) -> u64 {
    let window = 1u64 << window_log.min(40);
    match block_log {
        0 => window.min(128 * 1024),
        b => (1u64 << b.min(17)).min(window),
    }
}

/// The zstd decoder's heap bound (see the module documentation).
pub fn zstd_heap(window_log: u8, block_log: u8) -> u64 {
    let window = 1u64 << window_log.min(40);
    let block = zstd_block(window_log, block_log);
    (window + block).next_power_of_two() + 1 + ZSTD_TABLES + 17 * block
}

/// What the applier needs for the package whose manifest is `m`.
pub fn needed(m: &Manifest<'_>) -> RamNeed {
    let zstd = m
        .slices()
        .any(|r| matches!(r.method(), Method::Zstd | Method::Patch));
    RamNeed {
        manifest_buffer: (HEADER_LEN + m.as_bytes().len()) as u64,
        payload_buffer: crate::apply::payload_buffer_len(m) as u64,
        write_buffer: WRITE_BUFFER,
        decoder_heap: if zstd {
            zstd_heap(m.zstd_window_log(), m.zstd_block_log())
        } else {
            0
        },
        stack_reserve: STACK_RESERVE,
    }
}
