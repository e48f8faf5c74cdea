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
use otapack::otapack_core::wire::manifest::{segmented_data_len, segmented_payload_len};
use otapack::otapack_core::wire::slice::Method;
use otapack::otapack_core::{Error, Package};
use proptest::prelude::*;

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
    fn segment_lengths_invert(data in 0u64..1 << 22, log in 6u32..20) {
        let s = 1u64 << log;
        let l = segmented_payload_len(data, s);
        prop_assert_eq!(segmented_data_len(l, s), data);
        prop_assert!(l >= data);
    }

    #[test]
    fn segment_payload_matches_the_arithmetic(len in 0usize..9000, log in 10u32..13) {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
        let (payload, _) = segment_payload(&data, 1 << log);
        prop_assert_eq!(payload.len() as u64, segmented_payload_len(len as u64, 1 << log));
    }

    #[test]
    fn segmented_packages_apply_at_any_chunk_size(
        seed in any::<u64>(),
        segment_log in 10u8..=12,
        block_log in prop::sample::select(vec![0u8, 10, 11, 12]),
        chunk in 1usize..5000,
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
        for (pkg, base) in [
            (build_full(&new, &o, &[&k]).unwrap(), None),
            (build_delta(&old, &new, &o, &[&k]).unwrap(), Some(&old.data[..])),
        ] {
            let p = Package::parse(&pkg).unwrap();
            let m = p.manifest();
            prop_assert_eq!(m.segment_log(), segment_log);
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
    // of five segments (992 + 992 + 992 + 992 + 128 data bytes).
    let k = key("test-ed25519");
    let mut o = options();
    o.slice_log2 = 12;
    o.zstd_window_log = 12;
    o.segment_log = 10;
    let mut x: u32 = 0x9E37_79B9;
    let img: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let mut pkg = build_full(&raw_image(img.clone()), &o, &[&k]).unwrap();
    let p = Package::parse(&pkg).unwrap();
    let m = p.manifest();
    let rec = m.slice(0).unwrap();
    assert_eq!(rec.method(), Method::Raw);
    assert_eq!(rec.payload_len(), 4096 + 4 * 32);
    let start = p.payload_start() + rec.payload_offset() as usize;
    let intact = apply(&pkg, None, 333);
    assert_eq!(intact.0, Ok(()));
    // Flip one data byte of the third segment: the second segment's link no longer matches.
    pkg[start + 2 * 1024 + 10] ^= 1;
    fix_trailer(&mut pkg);
    for chunk in [1, 100, 4096, pkg.len()] {
        let (r, flash) = apply(&pkg, None, chunk);
        assert_eq!(r, Err(Error::PayloadDigest { slice: 0 }), "chunk {chunk}");
        // The first two segments' data (1984 bytes) may be in flash or in the write buffer;
        // nothing of the third segment's is.
        let got = &flash.data[..4096];
        assert!(got[1984..].iter().all(|&b| b == 0xFF), "chunk {chunk}");
        assert_eq!(&got[..1792], &img[..1792], "chunk {chunk}");
    }
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
