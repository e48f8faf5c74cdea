//! Build / verify / apply round trips on real firmware, for every key type.

mod common;
use common::*;
use otapack::build::build_full;
use otapack::otapack_core::keys::TrustedKey;
use otapack::otapack_core::verify::Policy;
use otapack::otapack_core::wire::slice::Method;
use otapack::otapack_core::{Error, Package};
use otapack::report;
use otapack::sign::add_signatures;

fn rebuild(pkg: &[u8], trusted: &[TrustedKey], policy: &Policy) -> Result<Vec<u8>, Error> {
    verify_collect(pkg, None, trusted, policy)
}

#[test]
fn every_key_type_builds_verifies_and_applies_real_firmware() {
    let image = std::fs::read(testdata("firmware/seabios-1.16.3-bios.bin")).unwrap();
    for name in KEY_NAMES {
        let k = key(name);
        let pkg = build_full(&raw_image(image.clone()), &options(), &[&k]).unwrap();
        let trusted = [pubkey(name).key];
        assert_eq!(
            rebuild(&pkg, &trusted, &Policy::default()).unwrap(),
            image,
            "{name}"
        );
        // Any other key is not trusted for it.
        let other = pubkey("test-untrusted-ed25519").key;
        assert_eq!(
            rebuild(&pkg, &[other], &Policy::default()).unwrap_err(),
            Error::NotEnoughTrustedSignatures {
                required: 1,
                found: 0
            },
            "{name}"
        );
        let r = report::verify(&pkg, &[pubkey(name)], &Policy::default(), None);
        assert!(r.ok, "{name}: {:?}", r.error);
        assert_eq!(r.valid_trusted_signatures, 1);
        assert_eq!(r.signatures[0].status, "valid");
    }
}

#[test]
fn apply_to_file_writes_only_verified_images() {
    let dir = tempfile::tempdir().unwrap();
    let k = key("test-ed25519");
    let pkg = small_package(&[&k]);
    let out = dir.path().join("image.bin");
    let trusted = [pubkey("test-ed25519").key];
    otapack::apply::apply_to_file(&pkg, &trusted, &Policy::default(), None, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), mixed_image());

    // A corrupt package: no output file, and no temporary left behind.
    let out2 = dir.path().join("bad.bin");
    let mut bad = pkg.clone();
    let at = Package::parse(&pkg).unwrap().payload_start() + 5;
    bad[at] ^= 1;
    fix_trailer(&mut bad);
    let err =
        otapack::apply::apply_to_file(&bad, &trusted, &Policy::default(), None, &out2).unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");
    assert!(!out2.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only image.bin remains"
    );
}

#[test]
fn small_package_uses_every_method() {
    let pkg = small_package(&[]);
    let p = Package::parse(&pkg).unwrap();
    let methods: Vec<Method> = p.manifest().slices().map(|r| r.method()).collect();
    assert_eq!(
        methods,
        [
            Method::Fill,
            Method::Fill,
            Method::Zstd,
            Method::Raw,
            Method::Zstd
        ]
    );
    let args: Vec<u64> = p.manifest().slices().map(|r| r.arg()).collect();
    assert_eq!(&args[..2], &[0xFF, 0x00]);
}

#[test]
fn unsigned_packages_need_explicit_permission() {
    let pkg = small_package(&[]);
    let trusted = [pubkey("test-ed25519").key];
    assert_eq!(
        rebuild(&pkg, &trusted, &Policy::default()).unwrap_err(),
        Error::Unsigned
    );
    let lax = Policy {
        required_signatures: 1,
        allow_unsigned: true,
    };
    assert_eq!(rebuild(&pkg, &trusted, &lax).unwrap(), mixed_image());
}

#[test]
fn sign_adds_signatures_for_key_rotation() {
    let old = key("test-ed25519");
    let new = key("test-rsa-3072");
    let pkg = small_package(&[&old]);
    let both = add_signatures(&pkg, &[&new], None).unwrap();
    // The signed bytes did not change, so the old signature still holds.
    assert_eq!(
        Package::parse(&pkg).unwrap().signed_bytes(),
        Package::parse(&both).unwrap().signed_bytes()
    );
    for trusted in [
        vec![pubkey("test-ed25519").key],
        vec![pubkey("test-rsa-3072").key],
    ] {
        assert_eq!(
            rebuild(&both, &trusted, &Policy::default()).unwrap(),
            mixed_image()
        );
    }
    let all = [pubkey("test-ed25519").key, pubkey("test-rsa-3072").key];
    let two = Policy {
        required_signatures: 2,
        allow_unsigned: false,
    };
    rebuild(&both, &all, &two).unwrap();
    assert_eq!(
        rebuild(&pkg, &all, &two).unwrap_err(),
        Error::NotEnoughTrustedSignatures {
            required: 2,
            found: 1
        }
    );
    // The same key twice is refused.
    let err = add_signatures(&both, &[&old], None).unwrap_err();
    assert!(err.to_string().contains("already signed"), "{err}");
    // Signing an unsigned package works too.
    let signed = add_signatures(&small_package(&[]), &[&old], None).unwrap();
    rebuild(&signed, &[pubkey("test-ed25519").key], &Policy::default()).unwrap();
}

#[test]
fn sign_refuses_corrupt_packages() {
    let pkg = small_package(&[]);
    let mut bad = pkg.clone();
    let at = Package::parse(&pkg).unwrap().payload_start() + 3;
    bad[at] ^= 0x40;
    fix_trailer(&mut bad);
    assert!(add_signatures(&bad, &[&key("test-ed25519")], None).is_err());
}

#[test]
fn an_invalid_trusted_signature_fails_even_beside_a_valid_one() {
    let a = key("test-ed25519");
    let b = key("test-rsa-2048");
    let pkg = small_package(&[&a, &b]);
    let p = Package::parse(&pkg).unwrap();
    // Corrupt the RSA signature's last byte (second entry), keep the trailer consistent.
    let sig_end = p.payload_start();
    let mut bad = pkg.clone();
    bad[sig_end - 1] ^= 1;
    fix_trailer(&mut bad);
    let trusted = [pubkey("test-ed25519").key, pubkey("test-rsa-2048").key];
    let err = rebuild(&bad, &trusted, &Policy::default()).unwrap_err();
    assert!(matches!(err, Error::BadSignature { .. }), "{err:?}");
    // Trusting only the Ed25519 key, the RSA entry is just untrusted.
    rebuild(&bad, &trusted[..1], &Policy::default()).unwrap();
}

#[test]
fn generated_keys_round_trip_through_pem() {
    use otapack::keys::{KeyAlgorithm, SigningKey};
    for alg in [
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa(2048),
        KeyAlgorithm::RsaPss(2048),
    ] {
        let k = SigningKey::generate(alg).unwrap();
        let pem = k.to_pkcs8_pem().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.pem");
        std::fs::write(&p, pem.as_bytes()).unwrap();
        let loaded = SigningKey::from_pem_file(&p).unwrap();
        assert_eq!(loaded.key_id(), k.key_id(), "{alg:?}");
        assert_eq!(loaded.algorithm(), k.algorithm(), "{alg:?}");
        let pubp = dir.path().join("k.pub.pem");
        std::fs::write(&pubp, k.public_pem().unwrap()).unwrap();
        let pubk = otapack::keys::load_public_key(&pubp).unwrap();
        assert_eq!(pubk.key.id(), k.key_id());
        let pkg = small_package(&[&loaded]);
        assert_eq!(
            rebuild(&pkg, &[pubk.key], &Policy::default()).unwrap(),
            mixed_image()
        );
    }
}
