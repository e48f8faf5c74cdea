//! A bare-metal program that only applies a package: the trusted keys, then the streaming
//! applier (`otapack_core::apply::Applier`: header and manifest checks, signatures, payload
//! SHA-256, zstd decoding, slice and image SHA-256, trailer MD5) writing onto a NOR flash. Linked
//! for thumbv7em-none-eabihf by `.ci/nostd-check.sh` to report what that costs in code size on a
//! Cortex-M4F, twice: with the default features (Ed25519 and RSA keys) and with
//! `--no-default-features` (Ed25519 only, the realistic bootloader set; the package's RSA
//! signature is then skipped as untrusted). zstd is always in. It is not run (no vector table,
//! no linker script): the size is what matters. Inputs go through `black_box` so that nothing is
//! evaluated at compile time.
#![no_std]
#![no_main]

extern crate alloc;

#[path = "../ram_flash.rs"]
mod ram_flash;

use core::cell::UnsafeCell;
use core::hint::black_box;
use core::sync::atomic::{AtomicI32, Ordering::Relaxed};

use otapack_core::apply::Applier;
use otapack_core::keys::TrustedKey;
use otapack_core::verify::Policy;
use otapack_core::Result;
use ram_flash::RamFlash;

const PACKAGE: &[u8] = include_bytes!("../../fixture.ota.md5.bin");
const ED25519_SPKI: &[u8] = include_bytes!("../../test-ed25519.pub.der");
#[cfg(feature = "rsa")]
const RSA_SPKI: &[u8] = include_bytes!("../../test-rsa-2048.pub.der");

/// The keys the device trusts.
#[cfg(feature = "rsa")]
const KEYS: [&[u8]; 2] = [ED25519_SPKI, RSA_SPKI];
#[cfg(not(feature = "rsa"))]
const KEYS: [&[u8]; 1] = [ED25519_SPKI];

/// 0 while running, then 1 if the package was applied, 2 if not (for a debugger).
static RESULT: AtomicI32 = AtomicI32::new(0);

/// A static buffer (one thread, each borrowed once).
struct Static<T>(UnsafeCell<T>);
// SAFETY: used once, by the one thread.
unsafe impl<T> Sync for Static<T> {}

/// The destination slot (stands in for the flash controller) and the caller's buffers.
const FLASH_LEN: usize = 128 * 1024;
static FLASH: Static<[u8; FLASH_LEN]> = Static(UnsafeCell::new([0; FLASH_LEN]));
static MANIFEST_BUF: Static<[u8; 1024]> = Static(UnsafeCell::new([0; 1024]));
static PAYLOAD_BUF: Static<[u8; 64 * 1024]> = Static(UnsafeCell::new([0; 64 * 1024]));
static WRITE_BUF: Static<[u8; 256]> = Static(UnsafeCell::new([0; 256]));

fn apply(package: &[u8], keys: &[&[u8]], flash: &mut RamFlash<'_>) -> Result<()> {
    let trusted = [
        TrustedKey::from_spki_der(keys[0])?,
        #[cfg(feature = "rsa")]
        TrustedKey::from_spki_der(keys[1])?,
    ];
    let policy = Policy {
        required_signatures: trusted.len() as u8,
        allow_unsigned: false,
    };
    // SAFETY: `apply` runs once: the only references to these buffers.
    let (manifest_buf, payload_buf, write_buf) = unsafe {
        (
            &mut *MANIFEST_BUF.0.get(),
            &mut *PAYLOAD_BUF.0.get(),
            &mut *WRITE_BUF.0.get(),
        )
    };
    let mut applier = Applier::new(
        &trusted,
        policy,
        flash,
        None,
        manifest_buf,
        payload_buf,
        write_buf,
    )?;
    // As a download would arrive.
    for piece in package.chunks(black_box(1000)) {
        applier.push(piece)?;
    }
    applier.finish()?;
    Ok(())
}

#[unsafe(no_mangle)]
extern "C" fn _start() -> ! {
    // SAFETY: the only reference to FLASH.
    let mut flash = RamFlash::new(unsafe { &mut *FLASH.0.get() });
    let ok = apply(black_box(PACKAGE), &black_box(KEYS), &mut flash).is_ok();
    black_box((flash.contents(), flash.erases, flash.written));
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
