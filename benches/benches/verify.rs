//! Verification throughput: `Package::parse` alone, and full `verify_package` (trailer MD5,
//! signature, every payload and slice digest, zstd decode, image digest) of each image signed
//! with Ed25519 and with RSA-4096. The signature check alone is timed too: its cost is fixed
//! per package, whatever the image size.

mod common;

use common::{
    config, load_image, signed_package, signing_key, trusted_key, ED25519, IMAGES, RSA_4096,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use otapack_core::decode::SliceDecoder;
use otapack_core::verify::{check_signatures, verify_package, Policy};
use otapack_core::Package;
use std::hint::black_box;

/// Parses and fully verifies `bytes`; the sink only looks at each verified slice.
fn verify(bytes: &[u8], trusted: &[otapack_core::keys::TrustedKey]) {
    let pkg = Package::parse(bytes).expect("parse");
    let mut buf = vec![0u8; pkg.manifest().slice_size() as usize];
    verify_package(
        &pkg,
        trusted,
        &Policy::default(),
        &mut SliceDecoder::new(),
        None, // full package: no base image
        &mut buf,
        |offset, data| {
            black_box((offset, data));
            Ok(())
        },
    )
    .expect("verify_package");
}

fn bench_verify(c: &mut Criterion) {
    let keys = [ED25519, RSA_4096].map(|k| (k, signing_key(k), [trusted_key(k)]));
    let mut group = c.benchmark_group("verify");
    for &(name, file) in IMAGES {
        let image = load_image(file);
        group.throughput(Throughput::Bytes(image.data.len() as u64));
        let ed25519_pkg = signed_package(&image, &keys[0].1);
        group.bench_with_input(BenchmarkId::new("parse", name), &ed25519_pkg, |b, pkg| {
            b.iter(|| Package::parse(black_box(pkg)).expect("parse"))
        });
        for (key_name, key, trusted) in &keys {
            let pkg = if *key_name == ED25519 {
                ed25519_pkg.clone()
            } else {
                signed_package(&image, key)
            };
            let id = BenchmarkId::new(
                format!("full-{}", key_name.trim_start_matches("test-")),
                name,
            );
            group.bench_with_input(id, &pkg, |b, pkg| {
                b.iter(|| verify(black_box(pkg), trusted))
            });
        }
    }
    group.finish();

    // The signature check alone (one package; it covers only header and manifest).
    let image = load_image(IMAGES[0].1);
    let mut group = c.benchmark_group("verify-signature-only");
    for (key_name, key, trusted) in &keys {
        let bytes = signed_package(&image, key);
        let pkg = Package::parse(&bytes).expect("parse");
        group.bench_function(key_name.trim_start_matches("test-"), |b| {
            b.iter(|| {
                check_signatures(black_box(&pkg), trusted, &Policy::default())
                    .expect("check_signatures")
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_verify
}
criterion_main!(benches);
