//! Hostile input: every single-byte change and every truncation of a signed package is
//! rejected; absurd declared lengths are typed errors; random input never panics.

mod common;
use common::*;
use otapack::otapack_core::keys::TrustedKey;
use otapack::otapack_core::verify::Policy;
use otapack::otapack_core::{Error, Package};
use proptest::prelude::*;

fn check(pkg: &[u8], trusted: &[TrustedKey]) -> Result<(), Error> {
    verify_collect(pkg, None, trusted, &Policy::default()).map(|_| ())
}

fn trusted() -> Vec<TrustedKey> {
    vec![pubkey("test-ed25519").key]
}

#[test]
fn every_single_byte_flip_is_rejected() {
    let pkg = small_package(&[&key("test-ed25519")]);
    let trusted = trusted();
    check(&pkg, &trusted).unwrap();
    for i in 0..pkg.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut bad = pkg.clone();
            bad[i] ^= mask;
            assert!(
                check(&bad, &trusted).is_err(),
                "flip {mask:#x} at {i} accepted"
            );
        }
    }
}

#[test]
fn every_byte_flip_behind_a_fixed_trailer_is_still_rejected() {
    // With the MD5 recomputed, the signature and digests must catch every change.
    let pkg = small_package(&[&key("test-ed25519")]);
    let trusted = trusted();
    for i in 0..pkg.len() - 28 {
        let mut bad = pkg.clone();
        bad[i] ^= 0x01;
        fix_trailer(&mut bad);
        assert!(
            check(&bad, &trusted).is_err(),
            "flip at {i} accepted behind a valid MD5"
        );
    }
}

#[test]
fn every_truncation_and_extension_is_rejected() {
    let pkg = small_package(&[&key("test-ed25519")]);
    let trusted = trusted();
    for n in 0..pkg.len() {
        assert!(
            check(&pkg[..n], &trusted).is_err(),
            "truncation to {n} accepted"
        );
    }
    let mut longer = pkg.clone();
    longer.push(0);
    assert!(check(&longer, &trusted).is_err());
    // Extra bytes before the trailer, with a consistent trailer: rejected as trailing bytes.
    let mut padded = pkg[..pkg.len() - 28].to_vec();
    padded.extend_from_slice(&[0; 16]);
    padded.extend_from_slice(&[0; 28]);
    fix_trailer(&mut padded);
    assert!(matches!(
        Package::parse(&padded),
        Err(Error::LengthMismatch { .. })
    ));
}

/// Sets a little-endian u32 at `at` and fixes the trailer.
fn with_u32(pkg: &[u8], at: usize, v: u32) -> Vec<u8> {
    let mut b = pkg.to_vec();
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    fix_trailer(&mut b);
    b
}

#[test]
fn absurd_declared_lengths_are_typed_errors() {
    let pkg = small_package(&[&key("test-ed25519")]);
    // header.manifest_len and header.payload_len
    for v in [0, 1, 135, u32::MAX, u32::MAX - 31, 0x8000_0000] {
        let e = Package::parse(&with_u32(&pkg, 12, v)).unwrap_err();
        assert!(
            matches!(e, Error::Truncated { .. } | Error::LengthMismatch { .. }),
            "{v}: {e:?}"
        );
        let e = Package::parse(&with_u32(&pkg, 16, v)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::Truncated { .. } | Error::LengthMismatch { .. } | Error::Malformed { .. }
            ),
            "{v}: {e:?}"
        );
    }
    // manifest slice_count (at 32 + 8) and tlv_len (at 32 + 12)
    for v in [0, 1, 4, 6, u32::MAX] {
        let e = Package::parse(&with_u32(&pkg, 40, v)).unwrap_err();
        assert!(
            matches!(
                e,
                Error::LengthMismatch {
                    what: "slice_count",
                    ..
                }
            ),
            "{v}: {e:?}"
        );
    }
    for v in [0, 4097, u32::MAX] {
        assert!(Package::parse(&with_u32(&pkg, 44, v)).is_err(), "{v}");
    }
    // image_size (u64 at 32 + 48): absurd and off-by-one
    let mut b = pkg.clone();
    b[80..88].copy_from_slice(&u64::MAX.to_le_bytes());
    fix_trailer(&mut b);
    assert!(matches!(Package::parse(&b), Err(Error::Malformed { .. })));
    // A slice record whose payload_len claims gigabytes (first record's payload_len).
    let p = Package::parse(&pkg).unwrap();
    let rec0 = 32 + 136 + p.manifest().tlv_len() as usize;
    for v in [1, u32::MAX] {
        assert!(Package::parse(&with_u32(&pkg, rec0 + 12, v)).is_err());
    }
    // The trailer's length field.
    let n = pkg.len();
    assert!(matches!(
        Package::parse(&{
            let mut b = pkg.clone();
            b[n - 24..n - 20].copy_from_slice(&u32::MAX.to_le_bytes());
            b
        }),
        Err(Error::LengthMismatch { .. })
    ));
}

#[test]
fn signature_block_with_many_entries_is_refused() {
    let pkg = small_package(&[]);
    let p = Package::parse(&pkg).unwrap();
    let at = 32 + p.manifest().as_bytes().len();
    let mut b = pkg.clone();
    b[at..at + 2].copy_from_slice(&u16::MAX.to_le_bytes());
    fix_trailer(&mut b);
    assert!(matches!(Package::parse(&b), Err(Error::Malformed { .. })));
}

#[test]
fn reordered_or_duplicated_slice_records_are_refused() {
    let pkg = small_package(&[]);
    let p = Package::parse(&pkg).unwrap();
    let rec = |i: usize| 32 + 136 + p.manifest().tlv_len() as usize + i * 96;
    // Swap records 0 and 1.
    let mut b = pkg.clone();
    let (r0, r1) = (pkg[rec(0)..rec(1)].to_vec(), pkg[rec(1)..rec(2)].to_vec());
    b[rec(0)..rec(1)].copy_from_slice(&r1);
    b[rec(1)..rec(2)].copy_from_slice(&r0);
    fix_trailer(&mut b);
    assert!(Package::parse(&b).is_err());
    // Duplicate record 2 over record 3 (same payload range twice).
    let mut b = pkg.clone();
    let r2 = pkg[rec(2)..rec(3)].to_vec();
    b[rec(3)..rec(4)].copy_from_slice(&r2);
    fix_trailer(&mut b);
    assert!(Package::parse(&b).is_err());
}

#[test]
fn zstd_frame_asking_for_a_huge_window_is_refused_before_decoding() {
    // Raise the manifest's window log beyond the slice size: refused at parse.
    let pkg = small_package(&[]);
    let mut b = pkg.clone();
    b[32 + 5] = 20;
    fix_trailer(&mut b);
    assert!(matches!(Package::parse(&b), Err(Error::Malformed { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = check(&data, &trusted());
    }

    #[test]
    fn random_mutations_never_panic_or_pass(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        fix in any::<bool>(),
    ) {
        let pkg = small_package(&[&key("test-ed25519")]);
        let mut b = pkg.clone();
        for (i, v) in &edits {
            let at = i.index(b.len());
            b[at] = *v;
        }
        if fix {
            fix_trailer(&mut b);
        }
        let r = check(&b, &trusted());
        prop_assert!(b == pkg || r.is_err());
    }
}
