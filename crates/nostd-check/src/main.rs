//! Proves that otapack-core (features `rsa` and `zstd`) builds and links without std, and that
//! the freestanding build works: it parses and fully verifies a real package, signed with
//! Ed25519 and RSA-2048 and made of zstd slices (so Ed25519, RSA, SHA-256, MD5 and otapack-zstd are
//! all linked and run), then requires that corrupted copies are refused with the right error.
//! Then it streams the same package through the device applier (`otapack_core::apply`) in
//! 1000-byte chunks onto a NOR flash over a static buffer ([`ram_flash`]), with static caller
//! buffers, checks the SHA-256 of what landed in flash against the manifest, and requires that
//! the applier refuses a copy with a payload byte flipped. The good package's verification and
//! applier run are measured for peak stack use by stack painting ([`stack_peak`]), and repeated
//! at the end to check that the measurement is repeatable.
//!
//! A `#![no_std] #![no_main]` static x86_64 Linux executable with its own `_start`, panic
//! handler, bump allocator and `mem*` symbols; it leaves through the raw `exit_group` syscall.
//! `.ci/nostd-check.sh` links it with `-nostartfiles -nostdlib -static` and requires a
//! self-contained result. Anything that pulls in std fails to compile (E0152: std's panic
//! handler against ours); a native symbol without a library fails the link; one from a library
//! a crate declares (`-lc`, which rustc passes even with -nostdlib) leaves a NEEDED entry and
//! undefined symbols, which the script refuses.
//!
//! Exit status: 0 when every check passes, otherwise the code of the failed check ([`Fail`]).
//! One line per check goes to stdout, the cause of a failure to stderr.
#![no_std]
#![no_main]

extern crate alloc;

mod ram_flash;

use core::alloc::{GlobalAlloc, Layout};
use core::arch::{asm, naked_asm};
use core::cell::UnsafeCell;
use core::fmt::{self, Write};
use core::hint::black_box;
use core::mem::size_of;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

use otapack_core::apply::Applier;
use otapack_core::decode::SliceDecoder;
use otapack_core::keys::{TrustedKey, ED25519_SPKI_PREFIX};
use otapack_core::verify::{verify_package, Policy, SignatureSummary};
use otapack_core::wire::header::HEADER_LEN;
use otapack_core::wire::sigblock::Algorithm;
use otapack_core::wire::slice::Method;
use otapack_core::wire::trailer::{self, TRAILER_LEN};
use otapack_core::{Error, Package};
use ram_flash::{RamFlash, ERASE_SIZE};
use sha2::{Digest, Sha256};

/// `otapack build --new testdata/firmware/opensbi-1.1-generic-fw_jump.bin --key
/// testdata/keys/test-ed25519.pem --key testdata/keys/test-rsa-2048.pem --software-version 1.1
/// --created 1700000000`: two zstd slices, an Ed25519 and an RSA PKCS#1 v1.5 signature.
const PACKAGE: &[u8] = include_bytes!("../fixture.ota.md5.bin");
/// Size of the image the package rebuilds (opensbi-1.1-generic-fw_jump.bin).
const IMAGE_SIZE: u64 = 115_328;
/// `testdata/keys/test-ed25519.pub.pem` and `test-rsa-2048.pub.pem`, base64-decoded.
const ED25519_SPKI: &[u8] = include_bytes!("../test-ed25519.pub.der");
const RSA_SPKI: &[u8] = include_bytes!("../test-rsa-2048.pub.der");

/// A static buffer (this program has one thread).
#[repr(C, align(16))]
struct Static<T>(UnsafeCell<T>);
// SAFETY: one thread; each buffer is borrowed once (`run` for all but HEAP, the allocator).
unsafe impl<T> Sync for Static<T> {}

/// One slice (the fixture's slice size is the default, 64 KiB).
const SLICE_BUF_LEN: usize = 64 * 1024;
static SLICE_BUF: Static<[u8; SLICE_BUF_LEN]> = Static(UnsafeCell::new([0; SLICE_BUF_LEN]));
/// Where corrupted copies of the package are made.
static COPY: Static<[u8; PACKAGE.len()]> = Static(UnsafeCell::new([0; PACKAGE.len()]));

/// The applier's destination slot: the image rounded up to whole sectors. It starts out zeroed
/// (not erased), so a write the applier did not erase for first fails.
const FLASH_LEN: usize = (IMAGE_SIZE as usize).div_ceil(ERASE_SIZE) * ERASE_SIZE;
static FLASH: Static<[u8; FLASH_LEN]> = Static(UnsafeCell::new([0; FLASH_LEN]));
/// The applier's buffers, sized for the fixture: header + manifest (32 + 335 bytes), its
/// largest slice payload (38022 bytes: slice 0, 64 KiB compressed with zstd), one write block.
const MANIFEST_BUF_LEN: usize = 512;
const PAYLOAD_BUF_LEN: usize = 40 * 1024;
const WRITE_BUF_LEN: usize = 256;
static MANIFEST_BUF: Static<[u8; MANIFEST_BUF_LEN]> =
    Static(UnsafeCell::new([0; MANIFEST_BUF_LEN]));
static PAYLOAD_BUF: Static<[u8; PAYLOAD_BUF_LEN]> = Static(UnsafeCell::new([0; PAYLOAD_BUF_LEN]));
static WRITE_BUF: Static<[u8; WRITE_BUF_LEN]> = Static(UnsafeCell::new([0; WRITE_BUF_LEN]));
/// The applier is pushed the package in pieces of this many bytes (not a multiple of anything
/// in the format, so pieces end mid-field).
const APPLY_CHUNK: usize = 1000;

/// Exit status of each failed check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
enum Fail {
    /// The package does not parse.
    Parse = 10,
    /// The Ed25519 SPKI DER is refused.
    Ed25519Key = 11,
    /// The raw-bytes Ed25519 key is refused or differs from the SPKI one.
    Ed25519RawKey = 12,
    /// The RSA SPKI DER is refused.
    RsaKey = 13,
    /// The package is not signed by exactly the two test keys (it would not test both).
    Signers = 14,
    /// The package's slices do not fit `SLICE_BUF`, or are not all zstd.
    Slices = 15,
    /// memcpy, memmove, memset or memcmp gives a wrong result.
    Mem = 16,
    /// The good package does not verify.
    Verify = 20,
    /// It verifies, but not with 2 valid signatures out of 2.
    Summary = 21,
    /// The slices handed to the sink do not make up the whole image, in order.
    Output = 22,
    /// A payload byte flipped: accepted / refused for another reason than the trailer MD5.
    FlippedAccepted = 30,
    FlippedWrongError = 31,
    /// A payload byte flipped and the trailer MD5 recomputed: accepted / not a payload digest error.
    RetrailerAccepted = 32,
    RetrailerWrongError = 33,
    /// A byte of the Ed25519 signature flipped (trailer recomputed): accepted / wrong error.
    Ed25519SigAccepted = 34,
    Ed25519SigWrongError = 35,
    /// A byte of the RSA signature flipped (trailer recomputed): accepted / wrong error.
    RsaSigAccepted = 36,
    RsaSigWrongError = 37,
    /// The applier refuses the good package.
    Apply = 40,
    /// The applier accepts it, but not with 2 valid signatures out of 2.
    ApplySummary = 41,
    /// The flash does not hold the image: its SHA-256 differs from the manifest's image_sha256.
    ApplyImage = 42,
    /// The applier accepts a package with a payload byte flipped / refuses it for another
    /// reason than slice 0's payload digest.
    ApplyFlippedAccepted = 43,
    ApplyFlippedWrongError = 44,
    /// A stack measurement is implausible: nothing below the unpainted gap was touched (it
    /// reads as 0), the whole painted region was (the real peak is larger: it reads ">= N"), or
    /// the painter's own frame reached into the region it paints.
    StackImplausible = 50,
    /// The two measurements of the same run differ by more than `STACK_REPEAT_TOLERANCE`.
    StackUnrepeatable = 51,
    /// RLIMIT_STACK is too small to paint `STACK_PAINT_LEN` bytes below the stack pointer.
    StackLimit = 52,
    /// A panic.
    Panic = 101,
    /// The heap ran out (reported through the panic handler).
    OutOfMemory = 102,
}

fn run() -> Result<(), Fail> {
    // SAFETY: single-threaded, and `run` is called once: these are the only references.
    let slice_buf: &mut [u8] = unsafe { &mut *SLICE_BUF.0.get() };
    let copy: &mut [u8] = unsafe { &mut *COPY.0.get() };
    let mut bufs = ApplyBufs {
        manifest: unsafe { &mut *MANIFEST_BUF.0.get() },
        payload: unsafe { &mut *PAYLOAD_BUF.0.get() },
        write: unsafe { &mut *WRITE_BUF.0.get() },
    };
    let mut flash = RamFlash::new(unsafe { &mut *FLASH.0.get() });

    check_mem()?;
    check_stack_limit()?;
    let pkg = Package::parse(PACKAGE).map_err(|e| failed(Fail::Parse, "parse", e))?;
    let manifest = pkg.manifest();

    // Keys: Ed25519 both from its SPKI DER and from the raw 32 bytes, RSA from its SPKI DER.
    let ed25519 = TrustedKey::from_spki_der(ED25519_SPKI)
        .map_err(|e| failed(Fail::Ed25519Key, "Ed25519 key", e))?;
    let raw = ED25519_SPKI
        .strip_prefix(&ED25519_SPKI_PREFIX[..])
        .and_then(|r| <&[u8; 32]>::try_from(r).ok())
        .ok_or_else(|| failed(Fail::Ed25519RawKey, "Ed25519 key", "not an Ed25519 SPKI"))?;
    let ed25519_raw = TrustedKey::from_ed25519_bytes(raw)
        .map_err(|e| failed(Fail::Ed25519RawKey, "Ed25519 raw key", e))?;
    if ed25519_raw.id() != ed25519.id() || ed25519.algorithm() != Algorithm::Ed25519 {
        return Err(failed(
            Fail::Ed25519RawKey,
            "Ed25519 raw key",
            "id or algorithm differs from the SPKI key",
        ));
    }
    let rsa =
        TrustedKey::from_spki_der(RSA_SPKI).map_err(|e| failed(Fail::RsaKey, "RSA key", e))?;
    if rsa.algorithm() != Algorithm::RsaPkcs1v15Sha256 {
        return Err(failed(Fail::RsaKey, "RSA key", "not rsa-pkcs1v15-sha256"));
    }

    // The package must be signed by exactly these two keys, and hold only zstd slices.
    let mut signers = [[0u8; 32]; 2];
    let mut n = 0;
    for entry in pkg.signatures().entries() {
        if let Some(s) = signers.get_mut(n) {
            *s = entry.key_id;
        }
        n += 1;
    }
    if n != 2 || signers != [ed25519.id(), rsa.id()] {
        return Err(failed(
            Fail::Signers,
            "signers",
            "not the Ed25519 and RSA test keys, in that order",
        ));
    }
    if manifest.slice_size() as usize > SLICE_BUF_LEN
        || manifest.slices().any(|r| r.method() != Method::Zstd)
    {
        return Err(failed(
            Fail::Slices,
            "slices",
            "larger than 64 KiB, or not all zstd",
        ));
    }

    let trusted = [ed25519, rsa];
    let policy = Policy {
        required_signatures: 2,
        allow_unsigned: false,
    };

    // The real package verifies completely: MD5, both signatures, every slice, the image.
    let (res, verify_stack) = stack_peak(&mut || verify(&pkg, &trusted, &policy, slice_buf));
    let (summary, len) = match res {
        Ok(v) => v,
        Err(Error::Output) => return Err(failed(Fail::Output, "sink", "slices out of order")),
        Err(e) => return Err(failed(Fail::Verify, "verify", e)),
    };
    let want = SignatureSummary {
        total: 2,
        valid: 2,
        untrusted: 0,
    };
    if summary != want {
        return Err(failed(
            Fail::Summary,
            "verify",
            "not 2 of 2 signatures valid",
        ));
    }
    if len != IMAGE_SIZE || len != manifest.image_size() {
        return Err(failed(Fail::Output, "sink", "did not get the whole image"));
    }
    say(format_args!(
        "package verified: {} of {} signatures valid (ed25519, rsa-pkcs1v15-sha256), {} zstd slices, {} image bytes",
        summary.valid,
        summary.total,
        manifest.slice_count(),
        len
    ));

    // Corrupted copies must be refused, each for the right reason.
    let first = manifest
        .slices()
        .next()
        .ok_or_else(|| failed(Fail::Slices, "slices", "none"))?;
    let payload_byte =
        pkg.payload_start() + first.payload_offset() as usize + first.payload_len() as usize / 2;
    let mut sig_byte = [0usize; 2];
    for (at, entry) in sig_byte.iter_mut().zip(pkg.signatures().entries()) {
        // Offset of the signature's middle byte in the file.
        *at = entry.signature.as_ptr() as usize - PACKAGE.as_ptr() as usize
            + entry.signature.len() / 2;
    }
    let [ed25519_id, rsa_id] = [trusted[0].id(), trusted[1].id()];
    let cases = [
        (
            "payload byte flipped",
            payload_byte,
            false,
            Error::Md5Mismatch,
            Fail::FlippedAccepted,
            Fail::FlippedWrongError,
        ),
        (
            "payload byte flipped, trailer MD5 recomputed",
            payload_byte,
            true,
            Error::PayloadDigest { slice: 0 },
            Fail::RetrailerAccepted,
            Fail::RetrailerWrongError,
        ),
        (
            "Ed25519 signature byte flipped, trailer MD5 recomputed",
            sig_byte[0],
            true,
            Error::BadSignature { key_id: ed25519_id },
            Fail::Ed25519SigAccepted,
            Fail::Ed25519SigWrongError,
        ),
        (
            "RSA signature byte flipped, trailer MD5 recomputed",
            sig_byte[1],
            true,
            Error::BadSignature { key_id: rsa_id },
            Fail::RsaSigAccepted,
            Fail::RsaSigWrongError,
        ),
    ];
    for (what, at, retrailer, expected, accepted, wrong) in cases {
        copy.copy_from_slice(PACKAGE);
        copy[at] ^= 0x01;
        if retrailer {
            let (body, tail) = copy.split_at_mut(PACKAGE.len() - TRAILER_LEN);
            let t = trailer::emit(body).map_err(|e| failed(wrong, what, e))?;
            tail.copy_from_slice(&t);
        }
        match Package::parse(copy).and_then(|p| verify(&p, &trusted, &policy, slice_buf)) {
            Ok(_) => return Err(failed(accepted, what, "ACCEPTED: must be refused")),
            Err(e) if e == expected => say(format_args!("{what}: refused: {e}")),
            Err(e) => {
                return Err(failed(
                    wrong,
                    what,
                    format_args!("refused for the wrong reason: {e} (expected: {expected})"),
                ))
            }
        }
    }

    // The streaming applier: the good package lands in flash, verified.
    let (res, apply_stack) =
        stack_peak(&mut || apply(PACKAGE, &trusted, &policy, &mut flash, &mut bufs));
    let summary = match res {
        Ok(s) => s,
        Err(e) => return Err(failed(Fail::Apply, "apply", e)),
    };
    if summary != want {
        return Err(failed(
            Fail::ApplySummary,
            "apply",
            "not 2 of 2 signatures valid",
        ));
    }
    let image = flash
        .contents()
        .get(..IMAGE_SIZE as usize)
        .ok_or_else(|| failed(Fail::ApplyImage, "apply", "flash smaller than the image"))?;
    let digest: [u8; 32] = Sha256::digest(image).into();
    if digest != manifest.image_sha256() {
        return Err(failed(
            Fail::ApplyImage,
            "apply",
            "flash SHA-256 differs from the manifest's image_sha256",
        ));
    }
    let manifest_needed =
        Applier::<&mut RamFlash>::manifest_buffer_len(&PACKAGE[..HEADER_LEN]).unwrap_or(0);
    let payload_needed = Applier::<&mut RamFlash>::payload_buffer_len(&manifest);
    say(format_args!(
        "package applied in {APPLY_CHUNK}-byte pushes: {} of {} signatures valid, flash SHA-256 = \
         image_sha256, {} sectors erased, {} bytes programmed; buffers: manifest {} of \
         {MANIFEST_BUF_LEN}, payload {} of {PAYLOAD_BUF_LEN}, write {WRITE_BUF_LEN}",
        summary.valid, summary.total, flash.erases, flash.written, manifest_needed, payload_needed,
    ));

    // A payload byte flipped: refused before that slice is decoded (the payload digest is
    // checked first), so nothing should reach flash (reported, not required here).
    let what = "apply, payload byte flipped";
    copy.copy_from_slice(PACKAGE);
    copy[payload_byte] ^= 0x01;
    flash.erases = 0;
    flash.written = 0;
    match apply(copy, &trusted, &policy, &mut flash, &mut bufs) {
        Ok(_) => {
            return Err(failed(
                Fail::ApplyFlippedAccepted,
                what,
                "ACCEPTED: must be refused",
            ))
        }
        Err(Error::PayloadDigest { slice: 0 }) => say(format_args!(
            "{what}: refused: {}; {} sectors erased, {} bytes programmed",
            Error::PayloadDigest { slice: 0 },
            flash.erases,
            flash.written
        )),
        Err(e) => {
            return Err(failed(
                Fail::ApplyFlippedWrongError,
                what,
                format_args!(
                    "refused for the wrong reason: {e} (expected: {})",
                    Error::PayloadDigest { slice: 0 }
                ),
            ))
        }
    }

    // Read before the stack check's repeat runs: the bump allocator does not get back all
    // that a run frees while the keys are live, so the repeats would raise it.
    let heap_peak = ALLOC.peak.load(Relaxed);
    let stack = StackRuns {
        verify: verify_stack,
        apply: apply_stack,
    };
    check_stack(
        stack, &pkg, &trusted, &policy, slice_buf, &mut flash, &mut bufs, want,
    )?;

    say(format_args!(
        "ok: peak heap {heap_peak} of {HEAP_SIZE} bytes"
    ));
    Ok(())
}

/// Verifies `pkg` with a fresh decoder, checking only that the sink gets the image in order
/// (verify_package checks its digests); returns the signature summary and the image length.
fn verify(
    pkg: &Package<'_>,
    trusted: &[TrustedKey],
    policy: &Policy,
    buf: &mut [u8],
) -> Result<(SignatureSummary, u64), Error> {
    let mut decoder = SliceDecoder::new();
    let mut next = 0u64;
    let summary = verify_package(
        pkg,
        trusted,
        policy,
        &mut decoder,
        None,
        buf,
        |offset, data| {
            if offset != next {
                return Err(Error::Output);
            }
            next += data.len() as u64;
            Ok(())
        },
    )?;
    Ok((summary, next))
}

/// The applier's caller-owned buffers.
struct ApplyBufs<'a> {
    manifest: &'a mut [u8],
    payload: &'a mut [u8],
    write: &'a mut [u8],
}

/// Streams `package` through a fresh applier onto `flash`, in `APPLY_CHUNK`-byte pieces.
fn apply(
    package: &[u8],
    trusted: &[TrustedKey],
    policy: &Policy,
    flash: &mut RamFlash<'_>,
    bufs: &mut ApplyBufs<'_>,
) -> Result<SignatureSummary, Error> {
    let mut applier = Applier::new(
        trusted,
        *policy,
        flash,
        None,
        &mut *bufs.manifest,
        &mut *bufs.payload,
        &mut *bufs.write,
    )?;
    for piece in package.chunks(APPLY_CHUNK) {
        applier.push(piece)?;
    }
    applier.finish()
}

// ---------------------------------------------------------------------------------------------
// Peak stack use, by stack painting.

/// Bytes painted below the unpainted gap: the deepest measurable stack use is about this plus
/// `STACK_GAP`. Linux grows the main thread's stack on demand up to RLIMIT_STACK.
const STACK_PAINT_LEN: usize = 512 * 1024;
/// Unpainted bytes between the measuring frame's stack pointer and the painted region: room for
/// the frames of `paint` and `lowest_touched` (and the red zone below them), which run there.
/// A run that uses less than this reads as 0 (and is refused as implausible).
const STACK_GAP: usize = 4096;
/// The x86_64 SysV red zone: a leaf function may use this much below its stack pointer.
const RED_ZONE: usize = 128;
/// The paint, one byte repeated.
const STACK_PATTERN: u8 = 0xA5;
/// Two measurements of the same run may differ by this many bytes. (Within one process they
/// come out equal; between processes they can differ by 16 bytes: some of curve25519-dalek's
/// AVX2 functions align their frames to 32 bytes, and where the stack starts moves with the
/// environment and ASLR.)
const STACK_REPEAT_TOLERANCE: usize = 64;

/// What one measured call did to the painted region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StackUse {
    /// The call touched nothing below the gap: it used less than about `STACK_GAP` bytes.
    InGap,
    /// Peak use in bytes: the measuring frame's stack pointer minus the lowest byte touched
    /// (the return address the call pushes is included).
    Bytes(usize),
    /// The lowest painted byte was touched: the call used at least this many bytes.
    AtLeast(usize),
    /// Not measured: the painter's own stack pointer was less than `RED_ZONE` bytes above
    /// the region to paint.
    PainterOverlap,
}

#[inline(always)]
fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: reads a register.
    unsafe { asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

/// Calls `f` and measures its peak stack use by stack painting: fills `STACK_PAINT_LEN` bytes
/// below a `STACK_GAP`-byte gap under this frame's stack pointer with `STACK_PATTERN`, calls
/// `f`, then finds the lowest byte that is no longer the pattern. `f` is called through an
/// opaque pointer so that none of it can be inlined into this frame (whose locals sit above the
/// stack pointer read here and would not be counted). Only what is written counts: stack space
/// a frame reserves but never writes is not seen (x86_64 stack probes rewrite the word they
/// probe unchanged).
#[inline(never)]
fn stack_peak<R>(f: &mut dyn FnMut() -> R) -> (R, StackUse) {
    let sp = stack_pointer();
    let top = (sp - STACK_GAP) & !15;
    let bottom = top - STACK_PAINT_LEN;
    // SAFETY: [bottom, top) lies below every live frame (`paint` checks its own) in the main
    // thread's stack mapping, which the kernel extends on demand (check_stack_limit checked
    // that RLIMIT_STACK allows it); nothing else uses that memory while it is painted.
    let painted = unsafe { paint(bottom, top) };
    let f = black_box(f);
    let r = f();
    if !painted {
        return (r, StackUse::PainterOverlap);
    }
    // SAFETY: as for `paint`: [bottom, top) is mapped now (painted), and below every live frame.
    let used = match unsafe { lowest_touched(bottom, top) } {
        None => StackUse::InGap,
        Some(low) if low == bottom => StackUse::AtLeast(sp - bottom),
        Some(low) => StackUse::Bytes(sp - low),
    };
    (r, used)
}

/// Fills [bottom, top) with `STACK_PATTERN`, from the top down (the stack mapping grows towards
/// each fault), with volatile writes; returns false without writing if this function's own
/// frame or red zone reaches into that range.
///
/// SAFETY: [bottom, top) must be stack memory below every live frame but this one's, 8-aligned.
#[inline(never)]
unsafe fn paint(bottom: usize, top: usize) -> bool {
    if stack_pointer() < top + RED_ZONE {
        return false;
    }
    let word = u64::from_ne_bytes([STACK_PATTERN; 8]);
    let mut at = top;
    while at > bottom {
        at -= 8;
        // SAFETY: the caller's contract.
        unsafe { core::ptr::with_exposed_provenance_mut::<u64>(at).write_volatile(word) };
    }
    true
}

/// The lowest address in [bottom, top) whose byte is no longer `STACK_PATTERN`, scanning up.
///
/// SAFETY: [bottom, top) must be mapped stack memory below every live frame but this one's.
#[inline(never)]
unsafe fn lowest_touched(bottom: usize, top: usize) -> Option<usize> {
    // SAFETY: the caller's contract.
    (bottom..top).find(|&at| unsafe {
        core::ptr::with_exposed_provenance::<u8>(at).read_volatile() != STACK_PATTERN
    })
}

const SYS_GETRLIMIT: usize = 97;
const RLIMIT_STACK: usize = 3;
const RLIM_INFINITY: u64 = u64::MAX;

/// Fails unless RLIMIT_STACK leaves room for the painted region below what is already in use
/// (this program's frames, and above them argv, the environment and the auxiliary vector, for
/// which 256 KiB is allowed): past the limit, touching the stack is a SIGSEGV, not an error.
fn check_stack_limit() -> Result<(), Fail> {
    let mut lim = [0u64; 2]; // struct rlimit { rlim_cur, rlim_max }
    let ret: isize;
    // SAFETY: getrlimit(resource, *rlim) writes one struct rlimit (16 bytes) to `lim`.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_GETRLIMIT as isize => ret,
            in("rdi") RLIMIT_STACK,
            in("rsi") lim.as_mut_ptr(),
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        )
    }
    let need = (STACK_GAP + STACK_PAINT_LEN + 256 * 1024) as u64;
    if ret != 0 {
        return Err(failed(
            Fail::StackLimit,
            "stack",
            format_args!("getrlimit(RLIMIT_STACK) failed: {ret}"),
        ));
    }
    if lim[0] != RLIM_INFINITY && lim[0] < need {
        return Err(failed(
            Fail::StackLimit,
            "stack",
            format_args!(
                "RLIMIT_STACK is {} bytes; stack painting needs at least {need} (ulimit -s)",
                lim[0]
            ),
        ));
    }
    Ok(())
}

/// The peak of a plausible measurement.
fn plausible(what: &str, used: StackUse) -> Result<usize, Fail> {
    let fail = |why: fmt::Arguments<'_>| failed(Fail::StackImplausible, what, why);
    match used {
        StackUse::Bytes(n) => Ok(n),
        StackUse::InGap => Err(fail(format_args!(
            "0 bytes: nothing below the {STACK_GAP}-byte unpainted gap was touched"
        ))),
        StackUse::AtLeast(n) => Err(fail(format_args!(
            ">= {n} bytes: the whole painted region was used (raise STACK_PAINT_LEN)"
        ))),
        StackUse::PainterOverlap => Err(fail(format_args!(
            "not measured: the painter's frame reaches into the region to paint"
        ))),
    }
}

/// The first measurement of each measured run (made by `run`, on the checks' own calls).
struct StackRuns {
    verify: StackUse,
    apply: StackUse,
}

/// Repeats `verify` and `apply` with the good package (each must succeed again; `apply` leaves
/// the image in `flash` again), measuring them as `run` did the first time: all four
/// measurements must be plausible, and each pair agree within `STACK_REPEAT_TOLERANCE` bytes.
#[allow(clippy::too_many_arguments)]
fn check_stack(
    first: StackRuns,
    pkg: &Package<'_>,
    trusted: &[TrustedKey],
    policy: &Policy,
    slice_buf: &mut [u8],
    flash: &mut RamFlash<'_>,
    bufs: &mut ApplyBufs<'_>,
    want: SignatureSummary,
) -> Result<(), Fail> {
    let what = "stack: verify";
    let v0 = plausible(what, first.verify)?;
    let (res, used) = stack_peak(&mut || verify(pkg, trusted, policy, slice_buf));
    match res {
        Ok((summary, len)) if summary == want && len == IMAGE_SIZE => {}
        Ok(_) => {
            return Err(failed(
                Fail::Summary,
                what,
                "not 2 of 2, or not the whole image",
            ))
        }
        Err(e) => return Err(failed(Fail::Verify, what, e)),
    }
    let v1 = plausible(what, used)?;

    let what = "stack: apply";
    let a0 = plausible(what, first.apply)?;
    let (res, used) = stack_peak(&mut || apply(PACKAGE, trusted, policy, flash, bufs));
    match res {
        Ok(summary) if summary == want => {}
        Ok(_) => return Err(failed(Fail::ApplySummary, what, "not 2 of 2")),
        Err(e) => return Err(failed(Fail::Apply, what, e)),
    }
    let a1 = plausible(what, used)?;

    say(format_args!(
        "peak stack: verify {} bytes, apply {} bytes (x86_64, opt-level {})",
        v0.max(v1),
        a0.max(a1),
        env!("NOSTD_CHECK_OPT_LEVEL"),
    ));
    say(format_args!(
        "stack runs: verify {v0} then {v1} bytes, apply {a0} then {a1} bytes (painted \
         {STACK_PAINT_LEN} bytes below a {STACK_GAP}-byte gap; includes the on-stack \
         SliceDecoder, {} bytes, and Applier, {} bytes)",
        size_of::<SliceDecoder>(),
        size_of::<Applier<'_, &mut RamFlash<'_>>>(),
    ));
    for (what, a, b) in [("stack: verify", v0, v1), ("stack: apply", a0, a1)] {
        if a.abs_diff(b) > STACK_REPEAT_TOLERANCE {
            return Err(failed(
                Fail::StackUnrepeatable,
                what,
                format_args!(
                    "two runs measured {a} and {b} bytes (tolerance {STACK_REPEAT_TOLERANCE})"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks this file's mem* functions (called directly: the compiler might inline or drop calls
/// to the intrinsics, and memmove and memcmp may have no caller at all).
fn check_mem() -> Result<(), Fail> {
    let bad = |what| failed(Fail::Mem, what, "wrong result");
    let mut a = [0u8; 37];
    for (i, b) in a.iter_mut().enumerate() {
        *b = i as u8;
    }
    let orig = a;
    let p = a.as_mut_ptr();
    // SAFETY: every range lies within `a` (or `orig`); memcpy's ranges do not overlap.
    unsafe {
        memmove(p.add(3), p, black_box(30)); // dest above src: copied backwards
        if a[..3] != orig[..3] || a[3..33] != orig[..30] || a[33..] != orig[33..] {
            return Err(bad("memmove up"));
        }
        memmove(p, p.add(3), black_box(30)); // dest below src: copied forwards
        if a[..30] != orig[..30] || a[30..33] != orig[27..30] || a[33..] != orig[33..] {
            return Err(bad("memmove down"));
        }
        memset(p.add(1), black_box(0x1A5), black_box(35));
        if a[0] != 0 || a[1..36].iter().any(|&b| b != 0xA5) || a[36] != 36 {
            return Err(bad("memset"));
        }
        memcpy(p.add(4), orig.as_ptr().add(10), black_box(20));
        if a[4..24] != orig[10..30] || a[3] != 0xA5 || a[24] != 0xA5 {
            return Err(bad("memcpy"));
        }
        let (x, y) = (b"abcdef".as_ptr(), b"abcxef".as_ptr());
        if memcmp(x, y, black_box(6)) >= 0
            || memcmp(y, x, black_box(6)) <= 0
            || memcmp(x, y, black_box(3)) != 0
            || bcmp(x, y, black_box(6)) == 0
        {
            return Err(bad("memcmp"));
        }
    }
    Ok(())
}

fn say(msg: fmt::Arguments<'_>) {
    let _ = writeln!(Fd(1), "nostd-check: {msg}");
}

/// Reports a failed check on stderr and returns its exit code.
fn failed(code: Fail, what: &str, why: impl fmt::Display) -> Fail {
    let _ = writeln!(
        Fd(2),
        "nostd-check: FAILED ({}): {what}: {why}",
        code as i32
    );
    code
}

// ---------------------------------------------------------------------------------------------
// The freestanding runtime: entry point, exit, output, panics, heap, mem* functions.

/// The ELF entry point. The kernel leaves `rsp` 16-byte aligned with argc on top; a normal
/// function expects the alignment *after* a `call`, so this one is naked and makes the call.
#[unsafe(naked)]
#[unsafe(no_mangle)]
unsafe extern "C" fn _start() -> ! {
    naked_asm!(
        "xor ebp, ebp",
        "and rsp, -16",
        "call {entry}",
        "ud2",
        entry = sym entry,
    )
}

extern "C" fn entry() -> ! {
    exit(match run() {
        Ok(()) => 0,
        Err(code) => code as i32,
    })
}

const SYS_WRITE: usize = 1;
const SYS_EXIT_GROUP: usize = 231;
const EINTR: isize = 4;

fn exit(status: i32) -> ! {
    // SAFETY: exit_group takes one integer argument and does not return.
    unsafe {
        asm!(
            "syscall",
            in("rax") SYS_EXIT_GROUP,
            in("rdi") status as isize,
            options(noreturn, nostack)
        )
    }
}

/// A file descriptor written with the raw `write` syscall.
struct Fd(usize);

impl Write for Fd {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut rest = s.as_bytes();
        while !rest.is_empty() {
            let ret: isize;
            // SAFETY: write(fd, buf, len) only reads `len` bytes from `buf`.
            unsafe {
                asm!(
                    "syscall",
                    inlateout("rax") SYS_WRITE as isize => ret,
                    in("rdi") self.0,
                    in("rsi") rest.as_ptr(),
                    in("rdx") rest.len(),
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack)
                )
            }
            match ret {
                n if n > 0 => rest = rest.get(n as usize..).unwrap_or_default(),
                n if n == -EINTR => {}
                _ => return Err(fmt::Error),
            }
        }
        Ok(())
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let code = if ALLOC.exhausted.load(Relaxed) {
        Fail::OutOfMemory
    } else {
        Fail::Panic
    };
    failed(code, "panic", info);
    exit(code as i32)
}

const HEAP_SIZE: usize = 1 << 20;

static HEAP: Static<[u8; HEAP_SIZE]> = Static(UnsafeCell::new([0; HEAP_SIZE]));

/// A bump allocator over `HEAP`. It gives back only what it can cheaply: the most recent
/// block (freed or grown in place), and everything once no block is live.
struct Bump {
    next: AtomicUsize,
    live: AtomicUsize,
    peak: AtomicUsize,
    exhausted: AtomicBool,
}

#[global_allocator]
static ALLOC: Bump = Bump {
    next: AtomicUsize::new(0),
    live: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
    exhausted: AtomicBool::new(false),
};

impl Bump {
    fn base() -> usize {
        HEAP.0.get() as usize
    }

    /// Moves the top of the heap to `end` (an offset), if it fits.
    fn set_top(&self, end: usize) -> bool {
        if end > HEAP_SIZE {
            self.exhausted.store(true, Relaxed);
            return false;
        }
        self.next.store(end, Relaxed);
        self.peak.fetch_max(end, Relaxed);
        true
    }
}

// SAFETY: single-threaded program; blocks never overlap: each one lies between the previous
// top and the new top, and the top only moves down over blocks that are no longer live.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = Self::base();
        let Some(start) = (base + self.next.load(Relaxed))
            .checked_next_multiple_of(layout.align())
            .map(|p| p - base)
        else {
            return core::ptr::null_mut();
        };
        if !self.set_top(start.saturating_add(layout.size())) {
            return core::ptr::null_mut();
        }
        self.live.fetch_add(1, Relaxed);
        (base + start) as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let start = ptr as usize - Self::base();
        if self.live.fetch_sub(1, Relaxed) == 1 {
            self.next.store(0, Relaxed);
        } else if start + layout.size() == self.next.load(Relaxed) {
            self.next.store(start, Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let start = ptr as usize - Self::base();
        if start + layout.size() == self.next.load(Relaxed) {
            // The top block: grow or shrink it in place.
            return if self.set_top(start.saturating_add(new_size)) {
                ptr
            } else {
                core::ptr::null_mut()
            };
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the GlobalAlloc contract, as in the default `realloc`.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                core::ptr::copy_nonoverlapping(ptr, new, layout.size());
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

// The mem* functions the compiler calls; libc would provide them. Copies and fills use
// `rep movsb`/`rep stosb` (what Linux uses on x86_64): an optimiser can never turn them back
// into a call to the function they are in, whatever it does with loops. Compares are byte loops.
// `check_mem` tests them, memmove's overlapping cases included.

/// SAFETY: the C contract: `dest` and `src` valid for `n` bytes, not overlapping.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags)
        )
    };
    dest
}

/// SAFETY: the C contract: `dest` and `src` valid for `n` bytes; they may overlap.
#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // dest is below src, or past its end: a forward copy never overwrites unread bytes.
        return unsafe { memcpy(dest, src, n) };
    }
    // Backwards, from the last byte (direction flag set, and cleared again as the ABI wants).
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dest.wrapping_add(n).wrapping_sub(1) => _,
            inout("rsi") src.wrapping_add(n).wrapping_sub(1) => _,
            options(nostack)
        )
    };
    dest
}

/// SAFETY: the C contract: `s` valid for `n` bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn memset(s: *mut u8, c: i32, n: usize) -> *mut u8 {
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") s => _,
            in("al") c as u8,
            options(nostack, preserves_flags)
        )
    };
    s
}

/// SAFETY: the C contract: `a` and `b` valid for `n` bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// SAFETY: the C contract: `a` and `b` valid for `n` bytes.
#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    unsafe { memcmp(a, b, n) }
}
