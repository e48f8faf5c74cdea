//! Shared setup for the benchmarks: the firmware images, test keys and criterion settings.
//! Everything here runs outside the timed loops.
#![allow(dead_code)] // each bench target uses a different subset

use criterion::Criterion;
use otapack::build::{build_full, BuildOptions, DEFAULT_ZSTD_LEVEL};
use otapack::image::{Image, LoadOptions};
use otapack::keys::{load_public_key, SigningKey};
use otapack_core::keys::TrustedKey;
use std::path::PathBuf;
use std::time::Duration;

/// Real firmware from `testdata/firmware/`: (short name for the benchmark id, file name).
pub const IMAGES: &[(&str, &str)] = &[
    ("microbit-1.0.1", "microbit-micropython-1.0.1.bin"),
    ("opensbi-1.1", "opensbi-1.1-generic-fw_jump.bin"),
    ("seabios-1.16.3", "seabios-1.16.3-bios.bin"),
];

pub const ED25519: &str = "test-ed25519";
pub const RSA_4096: &str = "test-rsa-4096";

/// Few samples and a short measurement so the whole suite takes a few minutes on 2 cores. No
/// plots: criterion would otherwise draw them with gnuplot whenever it is installed.
pub fn config() -> Criterion {
    Criterion::default()
        .without_plots()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata")
        .join(rel)
}

pub fn load_image(file: &str) -> Image {
    let path = testdata(&format!("firmware/{file}"));
    otapack::image::load(&path, &LoadOptions::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

pub fn signing_key(name: &str) -> SigningKey {
    let path = testdata(&format!("keys/{name}.pem"));
    SigningKey::from_pem_file(&path).unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
}

pub fn trusted_key(name: &str) -> TrustedKey {
    let path = testdata(&format!("keys/{name}.pub.pem"));
    load_public_key(&path)
        .unwrap_or_else(|e| panic!("loading {}: {e}", path.display()))
        .key
}

/// Default build options (64 KiB slices, 32 KiB zstd window) at the given zstd level.
pub fn options(zstd_level: i32) -> BuildOptions {
    let mut o = BuildOptions::new("1.0.0");
    o.created = 1_700_000_000;
    o.zstd_level = zstd_level;
    o
}

/// A package of `image` built with the default options, signed by `key`.
pub fn signed_package(image: &Image, key: &SigningKey) -> Vec<u8> {
    build_full(image, &options(DEFAULT_ZSTD_LEVEL), &[key]).expect("build_full")
}
