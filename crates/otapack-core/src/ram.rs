//! What the applier needs in RAM for a package, from its manifest alone: the caller's buffers,
//! the zstd decoder's heap, and a reserve for stack and the applier's own state. The builder
//! records the total in the manifest (`device_ram`) and `--device-ram` chooses settings that
//! fit a budget; a device can compare [`needed`] with what it has before it starts.
//!
//! The zstd decoder (otapack-zstd) allocates once, when the first zstd or patch slice begins,
//! exactly what the manifest's window `W` and largest block `B` (`zstd_block_log`, else
//! min(W, 128 KiB)) call for, and never grows:
//!
//! | allocation | bytes |
//! |---|---|
//! | entropy tables, repeat offsets, checksum state, buffer handles | at most [`ZSTD_STATE`] |
//! | the ring: the window and the block being decoded | W + B |
//! | a block cut by a payload segment boundary, gathered by the applier | B + 7 |
//!
//! so exactly `ZSTD_STATE + W + 2B + 7` at most ([`zstd_heap`]), whatever the frames hold: a
//! frame that asks for more is refused, not accommodated. `tests/ram.rs` measures it.

use crate::wire::header::HEADER_LEN;
use crate::wire::manifest::{Kind, Manifest};
use crate::wire::slice::Method;

/// Bytes kept for the stack and the applier's own state (on the stack, caller-owned). The
/// applier peaks at about 14 KiB of stack with curve25519-dalek's portable backend (the one
/// Cortex-M uses), measured on x86_64 (see the README).
pub const STACK_RESERVE: u64 = 16 * 1024;
/// Bytes kept for the stack in a single-slot update (kind 2, in place): its device session
/// took about 7 KB more stack than the two-slot one (`otapack simulate` on x86_64: 27,752
/// against 20,744 bytes), so [`STACK_RESERVE`] plus 8 KiB.
pub const IN_PLACE_STACK_RESERVE: u64 = STACK_RESERVE + 8 * 1024;
/// The flash write buffer assumed (a multiple of common NOR program sizes).
pub const WRITE_BUFFER: u64 = 256;
/// The zstd decoder's fixed state (`size_of` of otapack-core's boxed decoder, 9,448 bytes on
/// 64-bit hosts, less on 32-bit targets), rounded up; a unit test holds it to this.
pub const ZSTD_STATE: u64 = 9728;

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
    /// Stack and applier state ([`stack_reserve`]).
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

/// The stack reserve for a package of `kind`: [`IN_PLACE_STACK_RESERVE`] in place, else
/// [`STACK_RESERVE`].
pub fn stack_reserve(kind: Kind) -> u64 {
    match kind {
        Kind::DeltaInPlace => IN_PLACE_STACK_RESERVE,
        Kind::Full | Kind::Delta => STACK_RESERVE,
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

/// The zstd decoder's heap (see the module documentation).
pub fn zstd_heap(window_log: u8, block_log: u8) -> u64 {
    let window = 1u64 << window_log.min(40);
    let block = zstd_block(window_log, block_log);
    ZSTD_STATE + window + block + (block + 7)
}

/// What the applier needs for the package whose manifest is `m`.
pub fn needed(m: &Manifest<'_>) -> RamNeed {
    let zstd = m
        .slices()
        .any(|r| matches!(r.method(), Method::Zstd | Method::Patch | Method::ZstdRef));
    RamNeed {
        manifest_buffer: (HEADER_LEN + m.as_bytes().len()) as u64,
        payload_buffer: crate::apply::payload_buffer_len(m) as u64,
        write_buffer: WRITE_BUFFER,
        decoder_heap: if zstd {
            zstd_heap(m.zstd_window_log(), m.zstd_block_log())
        } else {
            0
        },
        stack_reserve: stack_reserve(m.kind()),
    }
}

#[cfg(all(test, feature = "zstd"))]
mod tests {
    use super::*;

    #[test]
    fn the_decoder_state_fits_its_constant() {
        let state = core::mem::size_of::<crate::decode::Zstd>() as u64;
        assert!(state <= ZSTD_STATE, "{state} > {ZSTD_STATE}");
        assert!(state + 512 > ZSTD_STATE, "ZSTD_STATE is far above {state}");
    }

    #[test]
    fn pending_is_counted_as_the_decoder_allocates_it() {
        for (wl, bl) in [(10u8, 0u8), (13, 0), (14, 13), (17, 0), (20, 0), (16, 10)] {
            let block = zstd_block(wl, bl) as usize;
            let heap = zstd_heap(wl, bl);
            let buffers =
                otapack_zstd::ring_len(1 << wl, block) + crate::decode::Zstd::pending_len(block);
            assert_eq!(heap, ZSTD_STATE + buffers as u64);
        }
    }
}
