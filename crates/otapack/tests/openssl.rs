//! Interoperability with the real `openssl` binary (CI installs it): our signatures verify with
//! openssl, openssl's signatures verify with otapack, and keys pass between the two.

mod common;
use common::*;
use otapack::keys::{KeyAlgorithm, SigningKey};
use otapack::otapack_core::Package;
use std::path::Path;
use std::process::Command;

fn openssl(args: &[&str]) -> std::process::Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("the openssl binary is required for these tests (.ci/run installs it)")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// openssl arguments to verify `sig` over `msg` with a public key of the given key file name.
fn openssl_verify(name: &str, pubkey: &Path, msg: &Path, sig: &Path) -> bool {
    let out = if name.contains("ed25519") {
        openssl(&[
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            p(pubkey),
            "-rawin",
            "-in",
            p(msg),
            "-sigfile",
            p(sig),
        ])
    } else if name.contains("pss") {
        openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            p(pubkey),
            "-sigopt",
            "rsa_padding_mode:pss",
            "-sigopt",
            "rsa_pss_saltlen:auto",
            "-signature",
            p(sig),
            p(msg),
        ])
    } else {
        openssl(&[
            "dgst",
            "-sha256",
            "-verify",
            p(pubkey),
            "-signature",
            p(sig),
            p(msg),
        ])
    };
    out.status.success()
}

fn openssl_sign(name: &str, key: &Path, msg: &Path, sig: &Path) {
    let out = if name.contains("ed25519") {
        openssl(&[
            "pkeyutl",
            "-sign",
            "-inkey",
            p(key),
            "-rawin",
            "-in",
            p(msg),
            "-out",
            p(sig),
        ])
    } else if name.contains("pss") {
        openssl(&[
            "dgst",
            "-sha256",
            "-sign",
            p(key),
            "-sigopt",
            "rsa_padding_mode:pss",
            "-out",
            p(sig),
            p(msg),
        ])
    } else {
        openssl(&["dgst", "-sha256", "-sign", p(key), "-out", p(sig), p(msg)])
    };
    assert!(
        out.status.success(),
        "openssl sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn otapack_signatures_verify_with_openssl_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let msg = dir.path().join("msg");
    let sig = dir.path().join("sig");
    for name in KEY_NAMES {
        let k = key(name);
        let pkg = small_package(&[&k]);
        let pkg = Package::parse(&pkg).unwrap();
        let message = pkg.signed_message();
        std::fs::write(&msg, message).unwrap();
        let entry = pkg.signatures().entries().next().unwrap();
        std::fs::write(&sig, entry.signature).unwrap();
        let pubpath = testdata(&format!("keys/{name}.pub.pem"));
        assert!(
            openssl_verify(name, &pubpath, &msg, &sig),
            "{name}: openssl rejects our signature"
        );
        // And openssl notices a wrong message.
        let mut other = message;
        other[40] ^= 1;
        std::fs::write(&msg, other).unwrap();
        assert!(
            !openssl_verify(name, &pubpath, &msg, &sig),
            "{name}: openssl accepts a wrong message"
        );

        // openssl signs the message; otapack's verifier accepts it, and only for that message.
        std::fs::write(&msg, message).unwrap();
        openssl_sign(name, &testdata(&format!("keys/{name}.pem")), &msg, &sig);
        let theirs = std::fs::read(&sig).unwrap();
        let trusted = pubkey(name).key;
        assert!(
            trusted.verify(&message, &theirs),
            "{name}: otapack rejects openssl's signature"
        );
        assert!(!trusted.verify(&other, &theirs), "{name}");
    }
}

#[test]
fn generated_keys_load_in_openssl_with_the_same_public_key() {
    let dir = tempfile::tempdir().unwrap();
    for alg in [
        KeyAlgorithm::Ed25519,
        KeyAlgorithm::Rsa(2048),
        KeyAlgorithm::RsaPss(2048),
    ] {
        let k = SigningKey::generate(alg).unwrap();
        let priv_path = dir.path().join("k.pem");
        std::fs::write(&priv_path, k.to_pkcs8_pem().unwrap().as_bytes()).unwrap();
        let out = openssl(&["pkey", "-in", p(&priv_path), "-pubout", "-outform", "DER"]);
        assert!(
            out.status.success(),
            "{alg:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            out.stdout,
            k.spki_der(),
            "{alg:?}: openssl derives another public key"
        );
        let pub_path = dir.path().join("k.pub.pem");
        std::fs::write(&pub_path, k.public_pem().unwrap()).unwrap();
        let out = openssl(&["pkey", "-pubin", "-in", p(&pub_path), "-noout"]);
        assert!(out.status.success(), "{alg:?}");
        let out = openssl(&["asn1parse", "-in", p(&pub_path)]);
        let is_pss = String::from_utf8_lossy(&out.stdout).contains("rsassaPss");
        assert_eq!(is_pss, matches!(alg, KeyAlgorithm::RsaPss(_)), "{alg:?}");
    }
}

#[test]
fn key_id_is_sha256_of_the_spki_der_openssl_writes() {
    for name in KEY_NAMES {
        let out = openssl(&[
            "pkey",
            "-pubin",
            "-in",
            p(&testdata(&format!("keys/{name}.pub.pem"))),
            "-outform",
            "DER",
        ]);
        assert!(out.status.success());
        let id = otapack::otapack_core::keys::key_id(&out.stdout);
        assert_eq!(pubkey(name).key.id(), id, "{name}");
        assert_eq!(key(name).key_id(), id, "{name}");
    }
}
