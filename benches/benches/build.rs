//! `build_full` throughput: each image unsigned and Ed25519-signed at the default zstd level
//! (19), and unsigned at level 3 to show the speed/size trade-off. The package size of each
//! configuration is printed once, before it is timed.

mod common;

use common::{config, load_image, options, signing_key, ED25519, IMAGES};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use otapack::build::{build_full, DEFAULT_ZSTD_LEVEL};
use otapack::keys::SigningKey;
use std::hint::black_box;

fn bench_build(c: &mut Criterion) {
    let ed25519 = signing_key(ED25519);
    let configs: [(&str, i32, Option<&SigningKey>); 3] = [
        ("unsigned-l19", DEFAULT_ZSTD_LEVEL, None),
        ("ed25519-l19", DEFAULT_ZSTD_LEVEL, Some(&ed25519)),
        ("unsigned-l3", 3, None),
    ];
    let mut group = c.benchmark_group("build");
    // One build of a 231 KB image at level 19 takes tens of milliseconds: flat sampling keeps
    // the iteration count (and so the run time) bounded.
    group.sampling_mode(SamplingMode::Flat);
    for &(name, file) in IMAGES {
        let image = load_image(file);
        group.throughput(Throughput::Bytes(image.data.len() as u64));
        for &(config_name, level, key) in &configs {
            let opts = options(level);
            let keys: Vec<&SigningKey> = key.into_iter().collect();
            let size = build_full(&image, &opts, &keys).expect("build_full").len();
            eprintln!(
                "build/{config_name}/{name}: image {} bytes -> package {size} bytes ({:.1}%)",
                image.data.len(),
                100.0 * size as f64 / image.data.len() as f64
            );
            group.bench_with_input(BenchmarkId::new(config_name, name), &image, |b, image| {
                b.iter(|| build_full(black_box(image), &opts, &keys).expect("build_full"))
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_build
}
criterion_main!(benches);
