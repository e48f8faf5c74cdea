//! `apply_to_file` throughput: verify an Ed25519-signed package of each image and write the
//! image to a file in a temporary directory (temporary file, fsync, rename over the output).

mod common;

use common::{config, load_image, signed_package, signing_key, trusted_key, ED25519, IMAGES};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use otapack::apply::apply_to_file;
use otapack_core::verify::Policy;
use std::hint::black_box;

fn bench_apply(c: &mut Criterion) {
    let key = signing_key(ED25519);
    let trusted = [trusted_key(ED25519)];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut group = c.benchmark_group("apply");
    for &(name, file) in IMAGES {
        let image = load_image(file);
        group.throughput(Throughput::Bytes(image.data.len() as u64));
        let pkg = signed_package(&image, &key);
        let out = dir.path().join(format!("{name}.bin"));
        group.bench_with_input(BenchmarkId::from_parameter(name), &pkg, |b, pkg| {
            b.iter(|| {
                apply_to_file(black_box(pkg), &trusted, &Policy::default(), None, &out)
                    .expect("apply_to_file")
            })
        });
        assert_eq!(std::fs::read(&out).expect("read output"), image.data);
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_apply
}
criterion_main!(benches);
