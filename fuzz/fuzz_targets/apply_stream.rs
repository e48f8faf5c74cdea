//! The streaming device applier (`otapack_core::apply::Applier`) against the batch verifier.
//! The package comes from the same structure-aware mutator as `resigned` (edit a seed package,
//! repair digests, re-sign with the Ed25519 test key; see `fuzz/src/resign.rs`). It is pushed
//! into the applier in chunks whose sizes come from the input, onto a RAM NOR flash
//! ([`otapack_fuzz::flash::RamFlash`]) whose old contents must be erased before programming.
//!
//! Asserted:
//! - the applier's verdict (`finish()` is `Ok`) equals `verify_package`'s on the same bytes,
//!   with the same trusted key, policy and base image, and on `Ok` the signature summaries
//!   are equal;
//! - on `Ok`: the first `image_size` bytes of flash hash to `image_sha256`, the last write
//!   block is padded with `erase_value`, and every byte was consumed;
//! - flash is untouched (no erase, no write) when the applier fails on the header, manifest,
//!   signatures, policy or base image, when the package parses but its signed part fails
//!   `check_signatures`, and while the input pushed so far ends inside the signature block;
//!   a payload digest failure in slice `k` leaves nothing of slice `k` written beyond what its
//!   segments before the failing one decode to (nothing, when the first or only one fails: the
//!   applier decodes each checked segment straight to flash, format §5.5 and §6.2);
//! - after an error, `push` and `finish` return that same error; the flash itself asserts
//!   aligned, in-range, erase-before-program use.
//!
//! Input: `[flags, ctl, (extra), schedule..., edits...]`. `flags` and the 4-byte edits are
//! [`otapack_fuzz::resign::mutate`]'s. `ctl` bits 0-1 pick the flash geometry (write size /
//! sector: 1/4096, 4/4096, 8/256, 16/65536), bits 2-3 the write buffer (1, 2, 16 or 64 write
//! units), bits 4-6 the number of schedule bytes (0-7), and bit 7 says an `extra` byte follows:
//! one more signature entry in the block ([`otapack_fuzz::resign::ExtraEntry`]), so the
//! applier's streaming signature parser sees several entries, skips untrusted ones and meets
//! duplicate ids and mismatched algorithms. `extra` bits 0-1: unknown algorithm with a
//! `1 + 2047 * (bits 3-7)`-byte signature, untrusted RSA-2048, bad signature under the
//! trusted id, RSA code under the trusted id; bit 2: before the Ed25519 entry. Each schedule
//! byte is a chunk size: below 0xE0 the byte itself (0 pushes an empty chunk), from 0xE0 on
//! 256 << (byte - 0xE0), capped at what is left. The schedule repeats until the package is all
//! pushed; no schedule pushes the whole package at once.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otapack_core::apply::Applier;
use otapack_core::decode::SliceDecoder;
use otapack_core::keys::TrustedKey;
use otapack_core::patch::BaseImage;
use otapack_core::verify::{check_signatures, Policy, SignatureSummary};
use otapack_core::wire::header::{Header, HEADER_LEN};
use otapack_core::wire::manifest::Manifest;
use otapack_core::wire::sigblock::{BLOCK_HEAD_LEN, ENTRY_HEAD_LEN};
use otapack_core::{Error, Package};
use otapack_fuzz::flash::RamFlash;
use otapack_fuzz::resign::{mutate_with, ExtraEntry};
use otapack_fuzz::{base_image, ed25519_trusted, verify_checked};
use sha2::{Digest, Sha256};

/// Largest slot the target simulates; a manifest asking for more must fail with
/// `SlotTooSmall` (and the verdicts are not compared).
const MAX_SLOT: u64 = 64 << 20;

/// What the old slot contents are before the update: not erased, so a write without an erase
/// trips the flash's check.
const OLD_CONTENTS: u8 = 0x00;

/// The header and manifest, when they pass the applier's own first two checks.
fn signed_part(bytes: &[u8]) -> Option<(Header<'_>, Manifest<'_>)> {
    let h = Header::new_checked(bytes.get(..HEADER_LEN)?).ok()?;
    let body = bytes.get(HEADER_LEN..HEADER_LEN + h.manifest_len() as usize)?;
    let m = Manifest::new_checked(body, h.format_version(), h.payload_len()).ok()?;
    Some((h, m))
}

/// Where the signature block ends (from its entry lengths), when the bytes say.
fn sigblock_end(bytes: &[u8]) -> Option<usize> {
    let h = Header::new_checked(bytes.get(..HEADER_LEN)?).ok()?;
    let start = HEADER_LEN + h.manifest_len() as usize;
    let head = bytes.get(start..start + BLOCK_HEAD_LEN)?;
    let count = u16::from_le_bytes([head[0], head[1]]);
    let mut at = start + BLOCK_HEAD_LEN;
    for _ in 0..count {
        let e = bytes.get(at..at + ENTRY_HEAD_LEN)?;
        at += ENTRY_HEAD_LEN + usize::from(u16::from_le_bytes([e[34], e[35]]));
    }
    Some(at)
}

/// Errors only the header, manifest, signature and base checks raise, before any slice is
/// decoded: flash must still be untouched. (The trailer's bad magic and the generic
/// `Malformed`/`Truncated`/`LengthMismatch` can come later; the position check covers those
/// in the signed part.)
fn before_payloads(e: &Error) -> bool {
    matches!(
        e,
        Error::BadMagic { what: "header" }
            | Error::UnsupportedVersion(_)
            | Error::UnknownCriticalField(_)
            | Error::UnknownMethod(_)
            | Error::MethodNotAllowed { .. }
            | Error::UnsupportedKind(_)
            | Error::DuplicateSignature
            | Error::BadSignature { .. }
            | Error::AlgorithmMismatch { .. }
            | Error::Unsigned
            | Error::NotEnoughTrustedSignatures { .. }
            | Error::BufferTooSmall { .. }
            | Error::BaseRequired
            | Error::BaseMismatch
            | Error::SlotTooSmall
    )
}

/// Bytes of slice `k` that its payload segments before the first failing one decode to, with a
/// fresh decoder on the bytes the applier was given for that payload: all that flash may hold
/// of slice `k` after the applier fails with a payload digest error there. 0 when the first
/// segment (or the unsegmented payload) fails. The payload may run past the end of the input
/// (edits can shorten the payload area): then only its whole segments present count, as in
/// the applier.
fn verified_prefix(pkg: &[u8], m: &Manifest<'_>, k: u32) -> u64 {
    let (Some(rec), Some(start)) = (m.slice(k), sigblock_end(pkg)) else {
        return 0;
    };
    let at = start + rec.payload_offset() as usize;
    let Some(payload) = pkg.get(at..) else {
        return 0;
    };
    let mut rest = &payload[..payload.len().min(rec.payload_len() as usize)];
    let mut dec = SliceDecoder::new();
    if dec.begin(m, &rec).is_err() {
        return 0;
    }
    let mut base = base_image();
    let mut out = 0u64;
    loop {
        let n = dec.next_segment_len();
        if n == 0 || n > rest.len() {
            break;
        }
        let (segment, tail) = rest.split_at(n);
        let b = Some(&mut base as &mut dyn BaseImage);
        let fed = dec.feed_segment(segment, b, &mut |chunk| {
            out += chunk.len() as u64;
            Ok(())
        });
        if fed.is_err() {
            break;
        }
        rest = tail;
    }
    out
}

/// Chunk sizes from the schedule bytes, repeating.
struct Schedule<'a> {
    bytes: &'a [u8],
    next: usize,
}

impl Schedule<'_> {
    fn chunk(&mut self, left: usize) -> usize {
        let Some(&b) = self.bytes.get(self.next % self.bytes.len().max(1)) else {
            return left;
        };
        self.next += 1;
        let n = if b < 0xE0 {
            usize::from(b)
        } else {
            256usize << (b - 0xE0)
        };
        n.min(left)
    }
    /// True when a whole round of the schedule pushes nothing (all zeros).
    fn stalls(&self) -> bool {
        self.bytes.iter().all(|&b| b == 0)
    }
}

/// The applier's result and the flash after it.
struct Outcome<const W: usize, const E: usize> {
    result: Result<SignatureSummary, Error>,
    flash: RamFlash<W, E>,
}

fn apply<const W: usize, const E: usize>(
    pkg: &[u8],
    policy: Policy,
    trusted: &[TrustedKey],
    wbuf_units: usize,
    schedule: &[u8],
) -> Outcome<W, E> {
    let parts = signed_part(pkg);
    let image_size = parts.as_ref().map_or(0, |(_, m)| m.image_size());
    let slot = image_size.div_ceil(E as u64).max(1) * E as u64;
    let mut flash = RamFlash::<W, E>::new(slot.min(MAX_SLOT) as usize, OLD_CONTENTS);
    let log = flash.log.clone();

    // Buffers exactly as large as the applier documents (or, when the header/manifest is
    // broken, as large as the package: the applier must fail on its own checks).
    let manifest_len = pkg
        .get(..HEADER_LEN)
        .and_then(|h| Applier::<&mut RamFlash<W, E>>::manifest_buffer_len(h).ok())
        .filter(|&n| n <= pkg.len())
        .unwrap_or(pkg.len().max(HEADER_LEN));
    let payload_len = parts.as_ref().map_or(pkg.len(), |(_, m)| {
        Applier::<&mut RamFlash<W, E>>::payload_buffer_len(m)
    });
    let mut manifest_buf = vec![0u8; manifest_len];
    let mut payload_buf = vec![0u8; payload_len];
    let mut write_buf = vec![0u8; W * wbuf_units];
    let sig_end = sigblock_end(pkg);
    let authentic = parts.is_some()
        && Package::parse(pkg).map_or(true, |p| check_signatures(&p, trusted, &policy).is_ok());

    let mut base = base_image();
    let base = Some(&mut base as &mut dyn BaseImage);
    let result = {
        let mut a = Applier::new(
            trusted,
            policy,
            &mut flash,
            base,
            &mut manifest_buf,
            &mut payload_buf,
            &mut write_buf,
        )
        .expect("buffers the applier documents are accepted");
        let mut sched = Schedule {
            bytes: schedule,
            next: 0,
        };
        let mut rest = pkg;
        let mut pushed = 0usize;
        let mut failed = None;
        let mut round = 0usize;
        while !rest.is_empty() {
            let mut n = sched.chunk(rest.len());
            round += 1;
            if sched.stalls() && round > schedule.len() {
                n = rest.len();
            }
            let (chunk, tail) = rest.split_at(n);
            let r = a.push(chunk);
            pushed += n;
            rest = tail;
            if let Err(e) = r {
                assert_eq!(a.push(&[0]), Err(e), "push after an error must repeat it");
                failed = Some(e);
                break;
            }
            // Nothing reaches flash before the signature block has been read in full.
            assert!(
                sig_end.is_some_and(|end| pushed >= end) || !log.touched(),
                "flash touched with {pushed} bytes pushed, signature block ends at {sig_end:?}"
            );
        }
        if failed.is_none() {
            let p = a.progress();
            assert_eq!(
                p.consumed,
                pkg.len() as u64,
                "bytes pushed but not consumed"
            );
            assert!(p.percent() <= 100);
        }
        let r = a.finish();
        if let Some(e) = failed {
            assert_eq!(r, Err(e), "finish after an error must repeat it");
        }
        r
    };

    if let Err(e) = &result {
        if before_payloads(e) {
            assert!(!log.touched(), "flash touched before failing with {e:?}");
        }
        if let (Error::PayloadDigest { slice }, Some((_, m))) = (e, &parts) {
            let start = u64::from(*slice) << m.slice_log2();
            let verified = verified_prefix(pkg, m, *slice);
            assert!(
                log.written_end.get() as u64 <= start + verified,
                "slice {slice} programmed (to {:#x}) past the {verified} bytes its checked \
                 segments decode to",
                log.written_end.get()
            );
        }
    }
    if log.touched() {
        assert!(
            authentic,
            "flash touched for a package whose header, manifest or signatures fail"
        );
    }
    Outcome { result, flash }
}

fn check<const W: usize, const E: usize>(
    pkg: &[u8],
    policy: Policy,
    wbuf_units: usize,
    schedule: &[u8],
) {
    let trusted = std::slice::from_ref(ed25519_trusted());
    let Outcome { result, flash } = apply::<W, E>(pkg, policy, trusted, wbuf_units, schedule);
    let batch = Package::parse(pkg).and_then(|p| {
        verify_checked(
            &p,
            trusted,
            &policy,
            &mut SliceDecoder::new(),
            Some(base_image()),
        )
    });
    let Some((_, m)) = signed_part(pkg) else {
        assert!(result.is_err() && batch.is_err(), "{result:?} / {batch:?}");
        return;
    };
    if m.image_size() > MAX_SLOT {
        assert_eq!(result, Err(Error::SlotTooSmall));
        return;
    }
    match (&result, &batch) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "signature summaries differ"),
        (Err(_), Err(_)) => {}
        _ => panic!("applier says {result:?}, verify_package says {batch:?}"),
    }
    if result.is_ok() {
        let size = m.image_size() as usize;
        let image = &flash.data[..size];
        let digest: [u8; 32] = Sha256::digest(image).into();
        assert_eq!(digest, m.image_sha256(), "flash does not hold the image");
        let padded = size.div_ceil(W) * W;
        assert!(
            flash.data[size..padded]
                .iter()
                .all(|&b| b == m.erase_value()),
            "last write block not padded with erase_value"
        );
        assert_eq!(
            flash.log.written_end.get(),
            padded,
            "flash written past the image"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [flags, ctl, rest @ ..] = data else {
        return;
    };
    let mut rest = rest;
    let mut extra = None;
    if ctl & 0x80 != 0 {
        let Some((&e, tail)) = rest.split_first() else {
            return;
        };
        rest = tail;
        let entry = match e & 3 {
            0 => ExtraEntry::Unknown {
                len: 1 + 2047 * u16::from(e >> 3),
            },
            1 => ExtraEntry::UntrustedRsa,
            2 => ExtraEntry::BadTrusted,
            _ => ExtraEntry::WrongAlgorithm,
        };
        extra = Some((entry, e & 4 != 0));
    }
    let n_sched = usize::from((ctl >> 4) & 7).min(rest.len());
    let (schedule, script) = rest.split_at(n_sched);
    let Some(pkg) = mutate_with(*flags, script, extra) else {
        return;
    };
    let policy = pkg.policy();
    let units = [1, 2, 16, 64][usize::from((ctl >> 2) & 3)];
    match ctl & 3 {
        0 => check::<1, 4096>(&pkg.bytes, policy, units, schedule),
        1 => check::<4, 4096>(&pkg.bytes, policy, units, schedule),
        2 => check::<8, 256>(&pkg.bytes, policy, units, schedule),
        _ => check::<16, 65536>(&pkg.bytes, policy, units, schedule),
    }
});
