//! The streaming device applier on simulated NOR flash: any chunking gives the same image,
//! corruption is refused, and nothing reaches flash before the manifest is authenticated.

mod common;
use common::*;
use otapack::apply::{apply_streaming, HostFlash};
use otapack::build::{build_delta, build_full};
use otapack::image::{load, LoadOptions};
use otapack::otapack_core::apply::Applier;
use otapack::otapack_core::keys::TrustedKey;
use otapack::otapack_core::patch::BaseImage;
use otapack::otapack_core::verify::Policy;
use otapack::otapack_core::{Error, Package};
use proptest::prelude::*;

/// Runs the applier with explicit buffers and returns the result and the flash afterwards.
fn run(
    pkg: &[u8],
    base: Option<&[u8]>,
    trusted: &[TrustedKey],
    pieces: &[usize],
    flash_size: usize,
) -> (Result<Vec<u8>, Error>, HostFlash) {
    let mut flash = HostFlash::new(flash_size);
    let mut manifest_buf = vec![0u8; 64 * 1024];
    let mut payload_buf = vec![0u8; 64 * 1024];
    let mut write_buf = [0u8; 64];
    let mut base = base;
    let b = base.as_mut().map(|b| b as &mut dyn BaseImage);
    let result = (|| {
        let mut a = Applier::new(
            trusted,
            Policy::default(),
            &mut flash,
            b,
            &mut manifest_buf,
            &mut payload_buf,
            &mut write_buf,
        )?;
        let mut rest = pkg;
        let mut i = 0;
        while !rest.is_empty() {
            let n = pieces
                .get(i % pieces.len().max(1))
                .copied()
                .unwrap_or(rest.len())
                .clamp(1, rest.len());
            a.push(&rest[..n])?;
            rest = &rest[n..];
            i += 1;
        }
        a.finish()?;
        Ok(())
    })();
    let size = Package::parse(pkg)
        .map(|p| p.manifest().image_size() as usize)
        .unwrap_or(0);
    (result.map(|_| flash.data[..size].to_vec()), flash)
}

#[test]
fn real_packages_at_any_chunk_size() {
    let k = key("test-ed25519");
    let trusted = [pubkey("test-ed25519").key];
    for (old, new) in PAIRS {
        let old = load(
            &testdata(&format!("firmware/{old}")),
            &LoadOptions::default(),
        )
        .unwrap();
        let new = load(
            &testdata(&format!("firmware/{new}")),
            &LoadOptions::default(),
        )
        .unwrap();
        let full = build_full(&new, &options(), &[&k]).unwrap();
        let delta = build_delta(&old, &new, &options(), &[&k]).unwrap();
        for chunk in [1usize, 13, 512, 4096, 1 << 20] {
            if chunk == 1 && new.data.len() > 150_000 {
                continue; // byte-at-a-time on the largest image is slow in debug builds
            }
            let a = apply_streaming(&full, &trusted, &Policy::default(), None, chunk).unwrap();
            assert_eq!(a.image, new.data);
            assert_eq!(a.signatures.valid, 1);
            // Each sector is erased once, nothing is written twice.
            assert_eq!(a.flash.erases_max_per_sector(), 1);
            let a = apply_streaming(&delta, &trusted, &Policy::default(), Some(&old.data), chunk)
                .unwrap();
            assert_eq!(a.image, new.data);
        }
    }
}

#[test]
fn corruption_before_the_payloads_never_touches_flash() {
    let pkg = small_package(&[&key("test-ed25519")]);
    let trusted = [pubkey("test-ed25519").key];
    let payload_start = Package::parse(&pkg).unwrap().payload_start();
    for i in 0..payload_start {
        let mut bad = pkg.clone();
        bad[i] ^= 0x04;
        fix_trailer(&mut bad);
        let (r, flash) = run(&bad, None, &trusted, &[1000], 64 * 1024);
        assert!(r.is_err(), "flip at {i} accepted");
        assert_eq!(
            flash.erases_total(),
            0,
            "flip at {i}: flash erased before authentication"
        );
        assert_eq!(
            flash.bytes_written, 0,
            "flip at {i}: flash written before authentication"
        );
    }
}

#[test]
fn every_byte_flip_and_truncation_fails_the_update() {
    let pkg = small_package(&[&key("test-ed25519")]);
    let trusted = [pubkey("test-ed25519").key];
    assert_eq!(
        run(&pkg, None, &trusted, &[333], 64 * 1024).0.unwrap(),
        mixed_image()
    );
    for i in 0..pkg.len() {
        let mut bad = pkg.clone();
        bad[i] ^= 0x40;
        assert!(
            run(&bad, None, &trusted, &[333], 64 * 1024).0.is_err(),
            "flip at {i}"
        );
    }
    for n in (0..pkg.len()).step_by(7) {
        assert!(
            run(&pkg[..n], None, &trusted, &[100], 64 * 1024).0.is_err(),
            "truncated to {n}"
        );
    }
    let mut longer = pkg.clone();
    longer.push(0);
    assert!(run(&longer, None, &trusted, &[100], 64 * 1024).0.is_err());
}

#[test]
fn undersized_buffers_and_slots_are_typed_errors_before_writing() {
    let pkg = small_package(&[&key("test-ed25519")]);
    let trusted = [pubkey("test-ed25519").key];
    // Slot smaller than the image.
    let (r, flash) = run(&pkg, None, &trusted, &[4096], 8192);
    assert_eq!(r.unwrap_err(), Error::SlotTooSmall);
    assert_eq!(flash.bytes_written, 0);
    // Manifest buffer too small.
    let mut flash = HostFlash::new(64 * 1024);
    let (mut m, mut p, mut w) = (vec![0u8; 100], vec![0u8; 4096], [0u8; 64]);
    let mut a = Applier::new(
        &trusted,
        Policy::default(),
        &mut flash,
        None,
        &mut m,
        &mut p,
        &mut w,
    )
    .unwrap();
    assert!(matches!(a.push(&pkg), Err(Error::BufferTooSmall { .. })));
    // Payload buffer smaller than the largest payload.
    let (mut m, mut p, mut w) = (vec![0u8; 4096], vec![0u8; 100], [0u8; 64]);
    let mut a = Applier::new(
        &trusted,
        Policy::default(),
        &mut flash,
        None,
        &mut m,
        &mut p,
        &mut w,
    )
    .unwrap();
    assert!(matches!(a.push(&pkg), Err(Error::BufferTooSmall { .. })));
    // A write buffer that is not a multiple of the program unit.
    let (mut m, mut p, mut w) = (vec![0u8; 4096], vec![0u8; 4096], [0u8; 6]);
    assert!(Applier::new(
        &trusted,
        Policy::default(),
        &mut flash,
        None,
        &mut m,
        &mut p,
        &mut w
    )
    .is_err());
}

#[test]
fn delta_with_the_wrong_base_fails_before_writing() {
    let old = mixed_image();
    let mut new = old.clone();
    new[100] ^= 0x55;
    let mut o = options();
    o.slice_log2 = 12;
    o.zstd_window_log = 12;
    let pkg = build_delta(
        &raw_image(old.clone()),
        &raw_image(new.clone()),
        &o,
        &[&key("test-ed25519")],
    )
    .unwrap();
    let trusted = [pubkey("test-ed25519").key];
    let (r, _) = run(&pkg, Some(&old), &trusted, &[777], 64 * 1024);
    assert_eq!(r.unwrap(), new);
    let (r, flash) = run(&pkg, Some(&new), &trusted, &[777], 64 * 1024);
    assert_eq!(r.unwrap_err(), Error::BaseMismatch);
    assert_eq!(flash.bytes_written, 0);
    let (r, flash) = run(&pkg, None, &trusted, &[777], 64 * 1024);
    assert_eq!(r.unwrap_err(), Error::BaseRequired);
    assert_eq!(flash.bytes_written, 0);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn any_chunking_gives_the_same_image(pieces in proptest::collection::vec(1usize..5000, 1..20)) {
        let pkg = small_package(&[&key("test-ed25519")]);
        let (r, _) = run(&pkg, None, &[pubkey("test-ed25519").key], &pieces, 64 * 1024);
        prop_assert_eq!(r.unwrap(), mixed_image());
    }
}

#[test]
fn a_header_declaring_a_4_gib_manifest_allocates_nothing_large() {
    // 60 bytes: a header claiming a manifest of 0xFFFF_FFE0 bytes, then a valid trailer.
    let mut pkg = otapack::otapack_core::wire::header::HeaderRepr {
        manifest_len: 0xFFFF_FFE0,
        payload_len: 0,
    }
    .emit()
    .to_vec();
    pkg.extend_from_slice(&[0; 28]);
    fix_trailer(&mut pkg);
    let trusted = [pubkey("test-ed25519").key];
    let err = apply_streaming(&pkg, &trusted, &Policy::default(), None, 4096).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    // The device applier refuses before buffering anything.
    let (r, flash) = run(&pkg, None, &trusted, &[7], 4096);
    assert!(matches!(r, Err(Error::BufferTooSmall { .. })));
    assert_eq!(flash.bytes_written, 0);
    assert_eq!(
        Applier::<&mut HostFlash>::manifest_buffer_len(&pkg).unwrap(),
        32 + 0xFFFF_FFE0,
        "64-bit host: the length is exact, never wrapped"
    );
}

#[test]
fn progress_counts_slices_written() {
    let pkg = small_package(&[&key("test-ed25519")]);
    let trusted = [pubkey("test-ed25519").key];
    let mut flash = HostFlash::new(64 * 1024);
    let (mut m, mut p, mut w) = (vec![0u8; 4096], vec![0u8; 4096], [0u8; 64]);
    let mut a = Applier::new(
        &trusted,
        Policy::default(),
        &mut flash,
        None,
        &mut m,
        &mut p,
        &mut w,
    )
    .unwrap();
    assert_eq!(a.progress().percent(), 0);
    let mut seen = Vec::new();
    for chunk in pkg.chunks(500) {
        a.push(chunk).unwrap();
        let pr = a.progress();
        // Known once the manifest (about 700 bytes here) has arrived.
        assert_eq!(
            pr.slice_count,
            if pr.consumed < 700 { 0 } else { 5 },
            "{pr:?}"
        );
        seen.push(pr.percent());
    }
    assert_eq!(a.progress().consumed, pkg.len() as u64);
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "progress went backwards: {seen:?}"
    );
    assert_eq!(*seen.last().unwrap(), 100);
    assert!(
        seen.iter().any(|&p| p > 0 && p < 100),
        "no intermediate progress: {seen:?}"
    );
    a.finish().unwrap();
}
