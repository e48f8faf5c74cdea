#![allow(dead_code)]
//! Shared test helpers: paths into testdata/, key loading, small packages.

use otapack::build::{build_full, BuildOptions};
use otapack::image::{Image, ImageFormat};
use otapack::keys::{load_public_key, PublicKeyFile, SigningKey};
use std::path::PathBuf;

pub fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(rel)
}

pub fn key(name: &str) -> SigningKey {
    SigningKey::from_pem_file(&testdata(&format!("keys/{name}.pem"))).unwrap()
}

pub fn pubkey(name: &str) -> PublicKeyFile {
    load_public_key(&testdata(&format!("keys/{name}.pub.pem"))).unwrap()
}

/// Every signing key shipped in testdata/keys (name, key).
pub const KEY_NAMES: &[&str] = &[
    "test-ed25519",
    "test-rsa-2048",
    "test-rsa-3072",
    "test-rsa-4096",
    "test-rsa-pss-2048",
];

pub fn raw_image(data: Vec<u8>) -> Image {
    Image {
        data,
        load_address: 0x0800_0000,
        format: ImageFormat::Bin,
    }
}

pub fn options() -> BuildOptions {
    let mut o = BuildOptions::new("1.2.3");
    o.software_type = Some("app".into());
    o.hardware_versions = vec!["board-a".into(), "board-b".into()];
    o.security_counter = 7;
    o.created = 1_700_000_000;
    o
}

/// A small image whose 4 KiB slices take every method: fill (0xFF and 0x00), zstd, raw, and a
/// short last slice.
pub fn mixed_image() -> Vec<u8> {
    let mut v = vec![0xFFu8; 4096];
    v.extend(vec![0u8; 4096]);
    v.extend((0..4096u32).map(|i| (i % 7) as u8 * 3)); // compressible
    let mut x: u32 = 0x1234_5678;
    v.extend((0..4096).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    })); // incompressible
    v.extend((0..1000u32).map(|i| (i / 10) as u8));
    v
}

/// A small signed package (4 KiB slices) of `mixed_image`.
pub fn small_package(keys: &[&SigningKey]) -> Vec<u8> {
    let mut o = options();
    o.slice_log2 = 12;
    o.zstd_window_log = 12;
    build_full(&raw_image(mixed_image()), &o, keys).unwrap()
}

/// Recomputes the trailer so a mutated package reaches the checks behind the MD5.
pub fn fix_trailer(pkg: &mut Vec<u8>) {
    let n = pkg.len() - 28;
    pkg.truncate(n);
    let t = otapack::otapack_core::wire::trailer::emit(pkg).unwrap();
    pkg.extend_from_slice(&t);
}

/// Verifies a package in memory (a delta against `base`) and returns the image it rebuilds,
/// checking that slices arrive in order.
pub fn verify_collect(
    pkg: &[u8],
    base: Option<&[u8]>,
    trusted: &[otapack::otapack_core::keys::TrustedKey],
    policy: &otapack::otapack_core::verify::Policy,
) -> Result<Vec<u8>, otapack::otapack_core::Error> {
    use otapack::otapack_core::patch::BaseImage;
    let p = otapack::otapack_core::Package::parse(pkg)?;
    let mut buf = vec![0u8; p.manifest().slice_size() as usize];
    let mut out = Vec::new();
    let mut base = base;
    let b = base.as_mut().map(|b| b as &mut dyn BaseImage);
    let mut decoder = otapack::otapack_core::decode::SliceDecoder::new();
    otapack::otapack_core::verify::verify_package(
        &p,
        trusted,
        policy,
        &mut decoder,
        b,
        &mut buf,
        |off, d| {
            assert_eq!(off, out.len() as u64, "slices out of order");
            out.extend_from_slice(d);
            Ok(())
        },
    )?;
    Ok(out)
}

/// The old/new firmware pairs shipped in testdata/firmware.
pub const PAIRS: &[(&str, &str)] = &[
    (
        "microbit-micropython-1.0.0.bin",
        "microbit-micropython-1.0.1.bin",
    ),
    ("seabios-1.16.2-bios.bin", "seabios-1.16.3-bios.bin"),
    (
        "opensbi-0.9-generic-fw_jump.elf",
        "opensbi-1.1-generic-fw_jump.elf",
    ),
];

/// Signs manifest bytes (Ed25519 test key) and lays out the package, without checking it.
pub fn signed(manifest: &[u8], payloads: &[u8]) -> Vec<u8> {
    let header = otapack::otapack_core::wire::header::HeaderRepr {
        manifest_len: manifest.len() as u32,
        payload_len: payloads.len() as u32,
    }
    .emit();
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(header);
    h.update(manifest);
    let msg = otapack::otapack_core::package::signed_message(&h.finalize().into());
    let k = key("test-ed25519");
    let sig = k.sign(&msg).unwrap();
    let block = otapack::otapack_core::wire::sigblock::emit(&[
        otapack::otapack_core::wire::sigblock::SignatureEntry {
            key_id: k.key_id(),
            algorithm: k.algorithm(),
            signature: &sig,
        },
    ])
    .unwrap();
    let mut out = [&header[..], manifest, &block, payloads].concat();
    let trailer = otapack::otapack_core::wire::trailer::emit(&out).unwrap();
    out.extend_from_slice(&trailer);
    out
}

/// A plain manifest for tests that craft packages by hand: 4 KiB slices, created 1, software
/// version "1", load address 0; a delta (`kind`) over `base`, or full without one.
pub fn test_manifest(
    kind: otapack::otapack_core::wire::manifest::Kind,
    image: &[u8],
    base: Option<&[u8]>,
    zstd_window_log: u8,
    slices: Vec<otapack::otapack_core::wire::slice::SliceRepr>,
) -> otapack::otapack_core::wire::manifest::ManifestRepr {
    use sha2::Digest;
    otapack::otapack_core::wire::manifest::ManifestRepr {
        kind,
        erase_value: 0xFF,
        slice_log2: 12,
        zstd_window_log,
        security_counter: 0,
        created: 1,
        expires: None,
        load_address: 0,
        image_size: image.len() as u64,
        image_sha256: sha2::Sha256::digest(image).into(),
        base_size: base.map_or(0, |b| b.len() as u64),
        base_sha256: base.map_or([0; 32], |b| sha2::Sha256::digest(b).into()),
        apply_descending: false,
        zstd_block_log: 0,
        segment_log: 0,
        segment_link_len: 0,
        device_ram: 0,
        software_version: "1".into(),
        software_type: None,
        hardware_versions: vec![],
        slices,
    }
}

/// A simulated device for the streaming applier: caller buffers of exactly the sizes the
/// applier documents for one package (`manifest_buffer_len`, `payload_buffer_len`), a 256-byte
/// write buffer, and a flash slot rounded up to 4 KiB sectors.
pub struct ExactDevice {
    pub flash: otapack::apply::HostFlash,
    manifest: Vec<u8>,
    payload: Vec<u8>,
    write: [u8; 256],
}

impl ExactDevice {
    pub fn for_package(pkg: &[u8]) -> Self {
        use otapack::apply::HostFlash;
        use otapack::otapack_core::apply::Applier;
        let p = otapack::otapack_core::Package::parse(pkg).unwrap();
        let m = p.manifest();
        ExactDevice {
            flash: HostFlash::new((m.image_size() as usize).div_ceil(4096) * 4096),
            manifest: vec![0u8; Applier::<&mut HostFlash>::manifest_buffer_len(pkg).unwrap()],
            payload: vec![0u8; Applier::<&mut HostFlash>::payload_buffer_len(&m).max(1)],
            write: [0u8; 256],
        }
    }

    /// Pushes `pkg` in `chunk`-byte pieces, then finishes. Allocates nothing itself, so a heap
    /// measured around it is the applier's own.
    pub fn apply(
        &mut self,
        pkg: &[u8],
        base: Option<&[u8]>,
        trusted: &[otapack::otapack_core::keys::TrustedKey],
        chunk: usize,
    ) -> Result<(), otapack::otapack_core::Error> {
        use otapack::otapack_core::patch::BaseImage;
        let mut base = base;
        let mut a = otapack::otapack_core::apply::Applier::new(
            trusted,
            otapack::otapack_core::verify::Policy::default(),
            &mut self.flash,
            base.as_mut().map(|b| b as &mut dyn BaseImage),
            &mut self.manifest,
            &mut self.payload,
            &mut self.write,
        )?;
        for c in pkg.chunks(chunk) {
            a.push(c)?;
        }
        a.finish().map(|_| ())
    }
}

/// `n` incompressible bytes: xorshift32 from `x`, one byte per step.
pub fn noise(n: usize, mut x: u32) -> Vec<u8> {
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}
