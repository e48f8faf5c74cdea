//! A bare-metal program that only verifies a package: parse, the two test keys, and
//! `verify_package` (MD5, Ed25519 and RSA signatures, zstd slices, SHA-256 digests). Linked for
//! thumbv7em-none-eabihf by `.ci/nostd-check.sh` to report what that costs in code size on a
//! Cortex-M4F. It is not run (no vector table, no linker script): the size is what matters.
//! Inputs go through `black_box` so that nothing is evaluated at compile time.
#![no_std]
#![no_main]

extern crate alloc;

use core::cell::UnsafeCell;
use core::hint::black_box;
use core::sync::atomic::{AtomicI32, Ordering::Relaxed};

use otapack_core::decode::SliceDecoder;
use otapack_core::keys::TrustedKey;
use otapack_core::verify::{verify_package, Policy};
use otapack_core::{Package, Result};

const PACKAGE: &[u8] = include_bytes!("../../fixture.ota.md5.bin");
const ED25519_SPKI: &[u8] = include_bytes!("../../test-ed25519.pub.der");
const RSA_SPKI: &[u8] = include_bytes!("../../test-rsa-2048.pub.der");

/// 0 while running, then 1 if the package verified, 2 if not (for a debugger).
static RESULT: AtomicI32 = AtomicI32::new(0);

struct SliceBuf(UnsafeCell<[u8; 64 * 1024]>);
// SAFETY: used once, by the one thread.
unsafe impl Sync for SliceBuf {}
static SLICE_BUF: SliceBuf = SliceBuf(UnsafeCell::new([0; 64 * 1024]));

fn verify(package: &[u8], keys: [&[u8]; 2], buf: &mut [u8]) -> Result<()> {
    let pkg = Package::parse(package)?;
    let trusted = [
        TrustedKey::from_spki_der(keys[0])?,
        TrustedKey::from_spki_der(keys[1])?,
    ];
    let policy = Policy {
        required_signatures: 2,
        allow_unsigned: false,
    };
    let mut decoder = SliceDecoder::new();
    verify_package(
        &pkg,
        &trusted,
        &policy,
        &mut decoder,
        None,
        buf,
        |_, data| {
            black_box(data);
            Ok(())
        },
    )?;
    Ok(())
}

#[unsafe(no_mangle)]
extern "C" fn _start() -> ! {
    // SAFETY: the only reference to SLICE_BUF.
    let buf = unsafe { &mut *SLICE_BUF.0.get() };
    let ok = verify(black_box(PACKAGE), black_box([ED25519_SPKI, RSA_SPKI]), buf).is_ok();
    RESULT.store(if ok { 1 } else { 2 }, Relaxed);
    #[allow(clippy::empty_loop)]
    loop {}
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    RESULT.store(3, Relaxed);
    #[allow(clippy::empty_loop)]
    loop {}
}

#[path = "../probe_bump.rs"]
mod probe_bump;
