//! Delta packages on the shipped firmware pairs: `build_delta` throughput (one bidiff suffix
//! sort plus per-slice encoding, and the builder's self-check), and the device applier's
//! throughput applying the delta to the base image on a simulated NOR flash. Throughput is in
//! new-image bytes. Each pair's package size is printed once, before it is timed.

mod common;

use common::{config, options, signing_key, testdata, trusted_key, ED25519};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use otapack::apply::apply_streaming;
use otapack::build::{build_delta, DEFAULT_ZSTD_LEVEL};
use otapack::image::{load, LoadOptions};
use otapack_core::verify::Policy;
use std::hint::black_box;

/// (short name, old file, new file) from `testdata/firmware/`.
const PAIRS: &[(&str, &str, &str)] = &[
    (
        "microbit-1.0.0-1.0.1",
        "microbit-micropython-1.0.0.bin",
        "microbit-micropython-1.0.1.bin",
    ),
    (
        "seabios-1.16.2-1.16.3",
        "seabios-1.16.2-bios.bin",
        "seabios-1.16.3-bios.bin",
    ),
    (
        "opensbi-0.9-1.1",
        "opensbi-0.9-generic-fw_jump.elf",
        "opensbi-1.1-generic-fw_jump.elf",
    ),
];

fn bench_delta(c: &mut Criterion) {
    let key = signing_key(ED25519);
    let trusted = [trusted_key(ED25519)];
    let opts = options(DEFAULT_ZSTD_LEVEL);
    let mut build = c.benchmark_group("delta-build");
    build.sampling_mode(SamplingMode::Flat);
    let mut packages = Vec::new();
    for &(name, old, new) in PAIRS {
        let load1 = |f: &str| load(&testdata(&format!("firmware/{f}")), &LoadOptions::default());
        let (old, new) = (load1(old).expect("old"), load1(new).expect("new"));
        let pkg = build_delta(&old, &new, &opts, &[&key]).expect("build_delta");
        eprintln!(
            "delta/{name}: new image {} bytes -> package {} bytes ({:.2}%)",
            new.data.len(),
            pkg.len(),
            100.0 * pkg.len() as f64 / new.data.len() as f64
        );
        build.throughput(Throughput::Bytes(new.data.len() as u64));
        build.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| build_delta(black_box(&old), &new, &opts, &[&key]).expect("build_delta"))
        });
        packages.push((name, old, new, pkg));
    }
    build.finish();

    let mut apply = c.benchmark_group("delta-apply");
    for (name, old, new, pkg) in &packages {
        apply.throughput(Throughput::Bytes(new.data.len() as u64));
        apply.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                apply_streaming(
                    black_box(pkg),
                    &trusted,
                    &Policy::default(),
                    Some(&old.data),
                    4096,
                )
                .expect("apply")
            })
        });
        let applied = apply_streaming(pkg, &trusted, &Policy::default(), Some(&old.data), 4096)
            .expect("apply");
        assert_eq!(applied.image, new.data, "{name}: applied image differs");
    }
    apply.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_delta
}
criterion_main!(benches);
