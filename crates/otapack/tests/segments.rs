//! Payload segments and zstd block limits: packages built with `segment_log` and
//! `zstd_block_log` round-trip through the streaming applier at any chunk size and through the
//! batch verifier; the segment length arithmetic is its own inverse; a corrupted later segment
//! stops the update before any of its bytes reach flash; `--device-ram` settings fit.

mod common;
use common::*;
use otapack::apply::HostFlash;
use otapack::build::{build_delta, build_full, segment_payload};
use otapack::otapack_core::apply::Applier;
use otapack::otapack_core::ram;
use otapack::otapack_core::verify::Policy;
use otapack::otapack_core::wire::manifest::{
    segmented_data_len, segmented_payload_len, ManifestRepr,
};
use otapack::otapack_core::wire::slice::Method;
use otapack::otapack_core::{Error, Package};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

/// Applies `pkg` with the streaming applier in `chunk`-byte pushes. Unlike
/// `otapack::apply::apply_streaming`, the payload buffer is exactly
/// `payload_buffer_len` (one segment), and the flash is returned after a failure too.
fn apply(pkg: &[u8], base: Option<&[u8]>, chunk: usize) -> (Result<(), Error>, HostFlash) {
    let mut d = ExactDevice::for_package(pkg);
    let r = d.apply(pkg, base, &[pubkey("test-ed25519").key], chunk);
    (r, d.flash)
}

proptest! {
    #[test]
    fn segment_lengths_invert(data in 0u64..1 << 22, log in 6u32..20, short in any::<bool>()) {
        let s = 1u64 << log;
        let link = if short { 16 } else { 32 };
        let l = segmented_payload_len(data, s, link);
        prop_assert_eq!(segmented_data_len(l, s, link), data);
        prop_assert!(l >= data);
    }

    #[test]
    fn segment_payload_matches_the_arithmetic(len in 0usize..9000, log in 10u32..13, short in any::<bool>()) {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let link = if short { 16 } else { 32 };
        let (payload, _) = segment_payload(&data, 1 << log, link);
        prop_assert_eq!(payload.len() as u64, segmented_payload_len(len as u64, 1 << log, link as u64));
    }

    #[test]
    fn segmented_packages_apply_at_any_chunk_size(
        seed in any::<u64>(),
        segment_log in 10u8..=12,
        block_log in prop::sample::select(vec![0u8, 10, 11, 12]),
        chunk in 1usize..5000,
        short in any::<bool>(),
    ) {
        let k = key("test-ed25519");
        let mut img = mixed_image();
        let mut x = seed | 1;
        for b in img.iter_mut().step_by(97) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            *b ^= x as u8;
        }
        let old = raw_image(mixed_image());
        let new = raw_image(img.clone());
        let mut o = options();
        o.slice_log2 = 12;
        o.zstd_window_log = 12;
        o.zstd_block_log = block_log;
        o.segment_log = segment_log;
        o.segment_link_len = if short { 16 } else { 32 };
        for (pkg, base) in [
            (build_full(&new, &o, &[&k]).unwrap(), None),
            (build_delta(&old, &new, &o, &[&k]).unwrap(), Some(&old.data[..])),
        ] {
            let p = Package::parse(&pkg).unwrap();
            let m = p.manifest();
            prop_assert_eq!(m.segment_log(), segment_log);
            prop_assert_eq!(m.segment_link_len(), u64::from(o.segment_link_len));
            prop_assert!(Applier::<&mut HostFlash>::payload_buffer_len(&m) <= 1 << segment_log);
            prop_assert_eq!(u64::from(m.device_ram()), ram::needed(&m).total());
            let (r, flash) = apply(&pkg, base, chunk);
            prop_assert_eq!(r, Ok(()));
            prop_assert_eq!(&flash.data[..img.len()], &img[..]);
            let trusted = [pubkey("test-ed25519").key];
            let verified = verify_collect(&pkg, base, &trusted, &Policy::default());
            prop_assert_eq!(verified, Ok(img.clone()));
        }
    }
}

#[test]
fn a_corrupted_later_segment_never_reaches_flash() {
    // An incompressible 4 KiB slice is stored raw: with 1 KiB segments its payload is a chain
    // of five segments, 4 × (1024 − link) data bytes then the rest (992 × 4 + 128 with 32-byte
    // links, 1008 × 4 + 64 with 16-byte links).
    let k = key("test-ed25519");
    let img = noise(4096, 0x9E37_79B9);
    for link in [16usize, 32] {
        let mut o = options();
        o.slice_log2 = 12;
        o.zstd_window_log = 12;
        o.segment_log = 10;
        o.segment_link_len = link as u8;
        let mut pkg = build_full(&raw_image(img.clone()), &o, &[&k]).unwrap();
        let p = Package::parse(&pkg).unwrap();
        let m = p.manifest();
        let rec = m.slice(0).unwrap();
        assert_eq!(rec.method(), Method::Raw);
        assert_eq!(rec.payload_len() as usize, 4096 + 4 * link);
        let start = p.payload_start() + rec.payload_offset() as usize;
        let intact = apply(&pkg, None, 333);
        assert_eq!(intact.0, Ok(()));
        // Flip one data byte of the third segment: the second segment's link no longer
        // matches.
        pkg[start + 2 * 1024 + 10] ^= 1;
        fix_trailer(&mut pkg);
        let two = 2 * (1024 - link);
        for chunk in [1, 100, 4096, pkg.len()] {
            let (r, flash) = apply(&pkg, None, chunk);
            assert_eq!(
                r,
                Err(Error::PayloadDigest { slice: 0 }),
                "{link} chunk {chunk}"
            );
            // The first two segments' data may be in flash or in the 256-byte write buffer;
            // nothing of the third segment's is.
            let got = &flash.data[..4096];
            assert!(
                got[two..].iter().all(|&b| b == 0xFF),
                "{link} chunk {chunk}"
            );
            let written = two / 256 * 256;
            assert_eq!(&got[..written], &img[..written], "{link} chunk {chunk}");
        }
    }
}

#[test]
fn a_short_link_is_checked_on_all_its_16_bytes() {
    // A signer-side chain whose second link differs from the third segment's SHA-256 in its
    // 16th byte only (re-signed, so every other check passes): the third segment is refused.
    let k = key("test-ed25519");
    let img = noise(4096, 0x1234_5679);
    let mut o = options();
    o.slice_log2 = 12;
    o.zstd_window_log = 12;
    o.segment_log = 10;
    let pkg = build_full(&raw_image(img.clone()), &o, &[&k]).unwrap();
    let p = Package::parse(&pkg).unwrap();
    assert_eq!(p.manifest().segment_link_len(), 16);
    let mut repr = ManifestRepr::parse(&p.manifest());
    let start = p.payload_start();
    let mut payload = pkg[start..start + repr.slices[0].payload_len as usize].to_vec();
    payload[2 * 1024 - 1] ^= 0x80;
    let second: [u8; 32] = Sha256::digest(&payload[1024..2048]).into();
    payload[1024 - 16..1024].copy_from_slice(&second[..16]);
    repr.slices[0].payload_sha256 = Sha256::digest(&payload[..1024]).into();
    let bad = signed(&repr.emit().unwrap(), &payload);
    let (r, flash) = apply(&bad, None, 4096);
    assert_eq!(r, Err(Error::PayloadDigest { slice: 0 }));
    assert!(flash.data[2 * 1008..4096].iter().all(|&b| b == 0xFF));
}

#[test]
fn device_ram_settings_fit_their_budget() {
    let old = raw_image(mixed_image());
    let mut img = mixed_image();
    img[5000] ^= 0x55;
    let new = raw_image(img);
    for budget in [
        40 * 1024u64,
        48 * 1024,
        64 * 1024,
        96 * 1024,
        128 * 1024,
        256 * 1024,
    ] {
        let mut o = options();
        o.fit_device_ram(budget, new.data.len() as u64).unwrap();
        for pkg in [
            build_full(&new, &o, &[]).unwrap(),
            build_delta(&old, &new, &o, &[]).unwrap(),
        ] {
            let p = Package::parse(&pkg).unwrap();
            let need = ram::needed(&p.manifest()).total();
            assert!(need <= budget, "{budget}: {need}");
            assert_eq!(u64::from(p.manifest().device_ram()), need);
        }
    }
    let mut o = options();
    let e = o.fit_device_ram(28 * 1024, 1 << 20).unwrap_err();
    assert!(e.to_string().contains("too small"), "{e}");
}

/// Slices of random bytes (stored raw) and slices of compressible, varied text.
fn raw_heavy_image(raw_slices: usize, text_slices: usize) -> Vec<u8> {
    let mut v = noise(raw_slices * 65536, 0x2545_F491);
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let words = [
        "flash", "erase", "sector", "boot", "slot", "image", "retry", "ok",
    ];
    let mut i = 0u64;
    while v.len() < (raw_slices + text_slices) * 65536 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let w = words[(x % words.len() as u64) as usize];
        v.extend_from_slice(format!("{w} {i:x}; ").as_bytes());
        i += 1;
    }
    v.truncate((raw_slices + text_slices) * 65536);
    v
}

#[test]
fn fit_candidates_trade_window_for_larger_segments_within_the_budget() {
    let o = options();
    let len = 10 * 65536;
    let c = o.fit_candidates(64 * 1024, len);
    assert!(c.len() >= 2, "{c:?}");
    for w in c.windows(2) {
        let ((w0, b0, s0), (w1, b1, s1)) = (w[0], w[1]);
        assert!(w1 < w0 && b1 <= b0 && s1 > s0, "{c:?}");
    }
    // Each candidate, built, needs no more than the budget.
    let img = raw_image(raw_heavy_image(8, 2));
    for &(window, block, segment) in &c {
        let mut e = options();
        e.zstd_window_log = window;
        e.zstd_block_log = block;
        e.segment_log = segment;
        let pkg = build_full(&img, &e, &[]).unwrap();
        let need = ram::needed(&Package::parse(&pkg).unwrap().manifest()).total();
        assert!(need <= 64 * 1024, "{window} {block} {segment}: {need}");
    }
}

#[test]
fn a_raw_heavy_image_gets_larger_segments_when_that_is_smaller() {
    let k = key("test-ed25519");
    let img = raw_image(raw_heavy_image(8, 2));
    let mut o = options();
    o.fit_device_ram(64 * 1024, img.data.len() as u64).unwrap();
    let first = o.fit_candidates(64 * 1024, img.data.len() as u64)[0];
    assert_eq!((o.zstd_window_log, o.segment_log), (first.0, first.2));
    let fitted = build_full(&img, &o, &[&k]).unwrap();
    // The same image with the first candidate's settings, not fitted.
    let mut fixed = options();
    fixed.zstd_window_log = first.0;
    fixed.zstd_block_log = first.1;
    fixed.segment_log = first.2;
    let plain = build_full(&img, &fixed, &[&k]).unwrap();
    let p = Package::parse(&fitted).unwrap();
    let m = p.manifest();
    assert!(m.segment_log() > first.2, "{} {:?}", m.segment_log(), first);
    assert!(
        fitted.len() < plain.len(),
        "{} >= {}",
        fitted.len(),
        plain.len()
    );
    let need = ram::needed(&m).total();
    assert!(need <= 64 * 1024, "{need}");
    assert_eq!(u64::from(m.device_ram()), need);
    let (r, flash) = apply(&fitted, None, 1000);
    assert_eq!(r, Ok(()));
    assert_eq!(&flash.data[..img.data.len()], &img.data[..]);
}

#[test]
fn an_image_without_raw_slices_keeps_the_first_fit() {
    let img = raw_image(raw_heavy_image(0, 3));
    let mut o = options();
    o.fit_device_ram(64 * 1024, img.data.len() as u64).unwrap();
    let first = o.fit_candidates(64 * 1024, img.data.len() as u64)[0];
    let pkg = build_full(&img, &o, &[]).unwrap();
    let m = Package::parse(&pkg).unwrap().manifest();
    assert!(m.slices().all(|r| r.method() == Method::Zstd));
    assert_eq!(
        (m.zstd_window_log(), m.zstd_block_log(), m.segment_log()),
        first
    );
}

#[test]
fn settings_edited_after_the_fit_are_kept() {
    // The refit only replaces settings still as fit_device_ram left them.
    let img = raw_image(raw_heavy_image(8, 2));
    let mut o = options();
    o.fit_device_ram(64 * 1024, img.data.len() as u64).unwrap();
    o.segment_log -= 1;
    let pkg = build_full(&img, &o, &[]).unwrap();
    let p = Package::parse(&pkg).unwrap();
    assert_eq!(p.manifest().segment_log(), o.segment_log);
    assert_eq!(p.manifest().zstd_window_log(), o.zstd_window_log);
    // And an in-place fit never refits (its budget counts the larger stack reserve).
    let mut o = options();
    o.fit_device_ram_in_place(64 * 1024, img.data.len() as u64)
        .unwrap();
    assert_eq!(o.fit_image_len, None);
}
