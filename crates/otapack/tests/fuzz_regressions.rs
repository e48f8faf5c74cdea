//! Regressions found by the fuzz targets (reproducers in fuzz/regressions/T/). Each test
//! states the input class and the promise that broke; plain `cargo test`, no nightly needed.

mod common;
use common::*;
use otapack::apply::HostFlash;
use otapack::build::build_delta;
use otapack::otapack_core::apply::Applier;
use otapack::otapack_core::patch::BaseImage;
use otapack::otapack_core::verify::Policy;
use otapack::otapack_core::wire::header::HEADER_LEN;
use otapack::otapack_core::Package;

/// apply_stream, fuzz/regressions/apply_stream/delta-without-payload.bin: a delta package
/// whose slices are all copies (or fills) has no payload, so `payload_buffer_len` is 0. With
/// the buffers sized as the applier documents, the applier refused it (`BufferTooSmall {
/// needed: 1 }`, from hashing the base image through the empty payload buffer) although
/// `verify_package` accepts it.
#[test]
fn delta_without_payload_applies_with_documented_buffers() {
    let k = key("test-ed25519");
    let trusted = [pubkey("test-ed25519").key];
    let old = mixed_image();
    // The new image is the old one: every slice is a copy from the base.
    let mut o = options();
    o.slice_log2 = 12;
    o.zstd_window_log = 12;
    let pkg = build_delta(&raw_image(old.clone()), &raw_image(old.clone()), &o, &[&k]).unwrap();
    let p = Package::parse(&pkg).unwrap();
    let m = p.manifest();
    assert_eq!(p.payload_area().len(), 0, "expected a delta of copies only");
    assert_eq!(
        verify_collect(&pkg, Some(&old), &trusted, &Policy::default()).unwrap(),
        old
    );

    let mut manifest_buf =
        vec![0u8; Applier::<&mut HostFlash>::manifest_buffer_len(&pkg[..HEADER_LEN]).unwrap()];
    let mut payload_buf = vec![0u8; Applier::<&mut HostFlash>::payload_buffer_len(&m)];
    assert!(payload_buf.is_empty());
    let mut write_buf = [0u8; 64];
    let mut flash = HostFlash::new(old.len());
    let mut base: &[u8] = &old;
    let mut a = Applier::new(
        &trusted,
        Policy::default(),
        &mut flash,
        Some(&mut base as &mut dyn BaseImage),
        &mut manifest_buf,
        &mut payload_buf,
        &mut write_buf,
    )
    .unwrap();
    a.push(&pkg).unwrap();
    a.finish().unwrap();
    assert_eq!(&flash.data[..old.len()], &old[..]);
}
