//! Rules added after a review of the format spec against the code: zstd frames as strict as
//! libzstd, one key counted once whatever its ids, unknown algorithms skipped, manifest sanity.

mod common;
use common::*;
use otapack::keys::SigningKey;
use otapack::otapack_core::keys::{TrustedKey, OID_RSASSA_PSS};
use otapack::otapack_core::package::assemble;
use otapack::otapack_core::verify::Policy;
use otapack::otapack_core::wire::manifest::{Kind, ManifestRepr, SHA256_EMPTY};
use otapack::otapack_core::wire::sigblock::{self, Algorithm, SignatureEntry};
use otapack::otapack_core::wire::slice::{Method, SliceRepr};
use otapack::otapack_core::{Error, Package};
use pkcs8::der::Encode;
use sha2::{Digest, Sha256};

/// A one-slice package whose slice is the given zstd payload, signed with Ed25519.
fn zstd_package(slice: &[u8], payload: &[u8]) -> Vec<u8> {
    let slices = vec![SliceRepr {
        index: 0,
        method: Method::Zstd,
        payload_offset: 0,
        payload_len: payload.len() as u32,
        arg: 0,
        payload_sha256: Sha256::digest(payload).into(),
        slice_sha256: Sha256::digest(slice).into(),
    }];
    let manifest = test_manifest(Kind::Full, slice, None, 12, slices);
    signed(&manifest.emit().unwrap(), payload)
}

fn verify(pkg: &[u8], trusted: &[TrustedKey], policy: &Policy) -> Result<(), Error> {
    verify_collect(pkg, None, trusted, policy).map(|_| ())
}

fn frame(data: &[u8], content_size: bool, checksum: bool) -> Vec<u8> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::bulk::Compressor::new(19).unwrap();
    c.set_parameter(CParameter::WindowLog(12)).unwrap();
    c.set_parameter(CParameter::ContentSizeFlag(content_size))
        .unwrap();
    c.set_parameter(CParameter::ChecksumFlag(checksum)).unwrap();
    c.compress(data).unwrap()
}

#[test]
fn zstd_frames_must_be_as_strict_as_libzstd() {
    let slice: Vec<u8> = (0..4096u32).map(|i| (i % 13) as u8).collect();
    let trusted = [pubkey("test-ed25519").key];
    let ok = frame(&slice, true, true);
    verify(&zstd_package(&slice, &ok), &trusted, &Policy::default()).unwrap();
    // The checksum, when present, is checked.
    let mut bad_sum = ok.clone();
    let n = bad_sum.len();
    bad_sum[n - 1] ^= 1;
    assert_eq!(
        verify(
            &zstd_package(&slice, &bad_sum),
            &trusted,
            &Policy::default()
        ),
        Err(Error::Decode { slice: 0 })
    );
    // No content size declared.
    let no_size = frame(&slice, false, false);
    assert_eq!(
        verify(
            &zstd_package(&slice, &no_size),
            &trusted,
            &Policy::default()
        ),
        Err(Error::Decode { slice: 0 })
    );
    // Reserved descriptor bit set (libzstd: "Unsupported frame parameter").
    let mut reserved = frame(&slice, true, false);
    reserved[4] |= 0x08;
    assert_eq!(
        verify(
            &zstd_package(&slice, &reserved),
            &trusted,
            &Policy::default()
        ),
        Err(Error::Decode { slice: 0 })
    );
    // Trailing bytes after the frame.
    let mut trailing = frame(&slice, true, false);
    trailing.push(0);
    assert_eq!(
        verify(
            &zstd_package(&slice, &trailing),
            &trusted,
            &Policy::default()
        ),
        Err(Error::Decode { slice: 0 })
    );
    // A frame decoding to a shorter slice than declared.
    let short = frame(&slice[..4000], true, false);
    assert!(verify(&zstd_package(&slice, &short), &trusted, &Policy::default()).is_err());
}

/// The same DER with the algorithm identifier replaced by RSASSA-PSS (no parameters).
fn relabel_private_as_pss(der: &[u8]) -> Vec<u8> {
    let info = pkcs8::PrivateKeyInfoRef::try_from(der).unwrap();
    pkcs8::PrivateKeyInfoRef::new(
        spki::AlgorithmIdentifierRef {
            oid: OID_RSASSA_PSS,
            parameters: None,
        },
        info.private_key,
    )
    .to_der()
    .unwrap()
}

#[test]
fn one_rsa_key_under_two_algorithm_ids_counts_once() {
    let pem = std::fs::read_to_string(testdata("keys/test-rsa-2048.pem")).unwrap();
    let (_, der) = pkcs8::der::pem::decode_vec(pem.as_bytes()).unwrap();
    let pkcs1 = SigningKey::from_pkcs8_der(&der).unwrap();
    let pss = SigningKey::from_pkcs8_der(&relabel_private_as_pss(&der)).unwrap();
    assert_ne!(pkcs1.key_id(), pss.key_id());
    let pkg = small_package(&[&pkcs1, &pss]);
    let trusted = [pkcs1.trusted_key().unwrap(), pss.trusted_key().unwrap()];
    assert_eq!(trusted[0].material_id(), trusted[1].material_id());
    verify(&pkg, &trusted, &Policy::default()).unwrap();
    let two = Policy {
        required_signatures: 2,
        allow_unsigned: false,
    };
    assert_eq!(
        verify(&pkg, &trusted, &two),
        Err(Error::NotEnoughTrustedSignatures {
            required: 2,
            found: 1
        })
    );
    // Two different keys do make two.
    let ed = key("test-ed25519");
    let pkg = small_package(&[&pkcs1, &ed]);
    verify(
        &pkg,
        &[trusted[0].clone(), pubkey("test-ed25519").key],
        &two,
    )
    .unwrap();
}

#[test]
fn unknown_signature_algorithms_are_skipped_not_fatal() {
    let k = key("test-ed25519");
    let pkg = small_package(&[&k]);
    let p = Package::parse(&pkg).unwrap();
    let mut entries: Vec<SignatureEntry<'_>> = p.signatures().entries().collect();
    let future = vec![0xAB; 2420]; // e.g. a post-quantum signature of a newer format
    entries.push(SignatureEntry {
        key_id: [0x42; 32],
        algorithm: Algorithm::Unknown(77),
        signature: &future,
    });
    let block = sigblock::emit(&entries).unwrap();
    let both = assemble(p.manifest().as_bytes(), &block, p.payload_area()).unwrap();
    verify(&both, &[pubkey("test-ed25519").key], &Policy::default()).unwrap();
    // But an entry that names a trusted key with an unknown algorithm fails the package.
    let mut entries: Vec<SignatureEntry<'_>> = p.signatures().entries().collect();
    entries[0].algorithm = Algorithm::Unknown(77);
    let block = sigblock::emit(&entries).unwrap();
    let bad = assemble(p.manifest().as_bytes(), &block, p.payload_area()).unwrap();
    assert!(matches!(
        verify(&bad, &[pubkey("test-ed25519").key], &Policy::default()),
        Err(Error::AlgorithmMismatch { .. })
    ));
}

#[test]
fn manifest_sanity_rules() {
    let slice = vec![7u8; 4096];
    let base = |f: &dyn Fn(&mut ManifestRepr)| {
        let slices = vec![SliceRepr {
            index: 0,
            method: Method::Fill,
            payload_offset: 0,
            payload_len: 0,
            arg: 7,
            payload_sha256: SHA256_EMPTY,
            slice_sha256: Sha256::digest(&slice).into(),
        }];
        let mut m = test_manifest(Kind::Full, &slice, None, 0, slices);
        m.created = 100;
        f(&mut m);
        m.emit()
    };
    base(&|_| {}).unwrap();
    assert!(base(&|m| m.expires = Some(100)).is_err());
    assert!(base(&|m| m.expires = Some(50)).is_err());
    base(&|m| m.expires = Some(101)).unwrap();
    assert!(base(&|m| m.load_address = u64::MAX - 100).is_err());
    // A raw record whose payload digest differs from its slice digest cannot be right.
    assert!(base(&|m| {
        m.slices[0].method = Method::Raw;
        m.slices[0].arg = 0;
        m.slices[0].payload_len = 4096;
        m.slices[0].payload_sha256 = [1; 32];
    })
    .is_err());
    // 17 hardware versions.
    assert!(base(&|m| m.hardware_versions = (0..17).map(|i| format!("hw{i}")).collect()).is_err());
    base(&|m| m.hardware_versions = (0..16).map(|i| format!("hw{i}")).collect()).unwrap();
}

#[test]
fn rsa_keys_must_have_exactly_2048_3072_or_4096_bits() {
    // A 2041-bit modulus occupies 256 bytes like a 2048-bit one, and must still be refused.
    let dir = tempfile::tempdir().unwrap();
    let k = dir.path().join("k.pem");
    let ok = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2041",
            "-out",
        ])
        .arg(&k)
        .status()
        .unwrap();
    assert!(ok.success());
    let err = SigningKey::from_pem_file(&k).unwrap_err().to_string();
    assert!(err.contains("2048, 3072 or 4096"), "{err}");
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&k)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(matches!(
        TrustedKey::from_spki_der(&out.stdout),
        Err(Error::BadKey { .. })
    ));
}
