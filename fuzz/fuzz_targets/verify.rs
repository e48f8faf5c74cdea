//! `verify_package` on arbitrary bytes, trusting the Ed25519, RSA PKCS#1 v1.5 and RSA-PSS test
//! keys, under the default policy and under `allow_unsigned`, with one `SliceDecoder` reused
//! across calls. A mutated package almost always fails the trailer MD5 first, so a second pass
//! repairs the MD5 of a copy and verifies that under `allow_unsigned`: corrupted payloads then
//! reach the digest checks and the decoders (as an unsigned package would on a device that
//! allows them). Delta packages get the base image the delta seeds were built against
//! ([`otapack_fuzz::base_image`]). `otapack::report::verify` must reach the same verdict as the core.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otapack_core::decode::SliceDecoder;
use otapack_core::verify::Policy;
use otapack_core::wire::trailer::{self, TRAILER_LEN};
use otapack_core::{Error, Package};
use otapack_fuzz::{all_trusted, base_image, verify_checked};

const UNSIGNED_OK: Policy = Policy {
    required_signatures: 1,
    allow_unsigned: true,
};

fn report_keys() -> &'static [otapack::keys::PublicKeyFile] {
    static K: std::sync::OnceLock<Vec<otapack::keys::PublicKeyFile>> = std::sync::OnceLock::new();
    K.get_or_init(|| {
        all_trusted()
            .iter()
            .map(|k| otapack::keys::PublicKeyFile {
                path: "test.pub.pem".into(),
                key: k.clone(),
            })
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(pkg) = Package::parse(data) else {
        return;
    };
    let mut decoder = SliceDecoder::new();
    let strict = verify_checked(
        &pkg,
        all_trusted(),
        &Policy::default(),
        &mut decoder,
        Some(base_image()),
    );
    let lenient = verify_checked(
        &pkg,
        all_trusted(),
        &UNSIGNED_OK,
        &mut decoder,
        Some(base_image()),
    );
    if strict.is_ok() {
        assert!(
            lenient.is_ok(),
            "allow_unsigned refused what the default policy accepted"
        );
    }
    let report =
        otapack::report::verify(data, report_keys(), &Policy::default(), Some(base_image()));
    assert_eq!(
        report.ok,
        strict.is_ok(),
        "report::verify disagrees: {:?}",
        report.error
    );

    if lenient == Err(Error::Md5Mismatch) {
        let mut fixed = data.to_vec();
        let at = fixed.len() - TRAILER_LEN;
        let md5 = trailer::md5(&fixed[..at]);
        fixed[at + 8..at + 24].copy_from_slice(&md5);
        let pkg = Package::parse(&fixed).expect("repairing the MD5 broke the structure");
        let again = verify_checked(
            &pkg,
            all_trusted(),
            &UNSIGNED_OK,
            &mut decoder,
            Some(base_image()),
        );
        assert_ne!(again, Err(Error::Md5Mismatch));
    }
});
