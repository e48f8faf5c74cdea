//! Structure-aware: start from a valid small package, edit its header, manifest and payloads
//! with the fuzzer's bytes, optionally repair the digests the edits broke, then re-sign the
//! result with the Ed25519 test private key and write a fresh trailer
//! ([`otapack_fuzz::resign::mutate`]). The fuzzer thereby gets past the MD5 and signature
//! checks into the manifest rules, the digest checks and the decoders, under a trusted
//! signature. Verified packages must hash to their image digest.
//!
//! Input: one flags byte, then 4-byte edits `[op, offset_lo, offset_hi, value]`. The layout
//! of both is documented in `fuzz/src/resign.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otapack_core::decode::SliceDecoder;
use otapack_core::Package;
use otapack_fuzz::resign::mutate;
use otapack_fuzz::{base_image, ed25519_trusted, verify_checked};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, script)) = data.split_first() else {
        return;
    };
    let Some(pkg) = mutate(flags, script) else {
        return;
    };
    let result = Package::parse(&pkg.bytes).and_then(|p| {
        verify_checked(
            &p,
            std::slice::from_ref(ed25519_trusted()),
            &pkg.policy(),
            &mut SliceDecoder::new(),
            Some(base_image()),
        )
    });
    if pkg.untouched {
        // Repairs are idempotent on an intact package: it must still verify.
        let summary = result.unwrap_or_else(|e| panic!("intact re-signed package refused: {e}"));
        assert_eq!(summary.valid, u8::from(!pkg.unsigned));
    }
});
