//! Shared pieces of the otapack fuzz targets: the test keys, a slice buffer, a checking sink
//! that asserts what a successful verification promises, the structure-aware mutator
//! ([`resign`]) and a RAM NOR flash ([`flash`]).

pub mod flash;
pub mod resign;

use otapack_core::decode::SliceDecoder;
use otapack_core::keys::TrustedKey;
use otapack_core::patch::BaseImage;
use otapack_core::verify::{verify_package, Policy, SignatureSummary};
use otapack_core::Package;
use sha2::{Digest, Sha256};
use std::cell::RefCell;
use std::sync::OnceLock;

/// SubjectPublicKeyInfo DER of the test keys (`openssl pkey -pubin -in
/// testdata/keys/NAME.pub.pem -outform DER`).
pub const ED25519_PUB_DER: &[u8] = include_bytes!("../keys/test-ed25519.pub.der");
pub const RSA_2048_PUB_DER: &[u8] = include_bytes!("../keys/test-rsa-2048.pub.der");
pub const RSA_PSS_2048_PUB_DER: &[u8] = include_bytes!("../keys/test-rsa-pss-2048.pub.der");

/// The base image the delta seeds apply to: the first 12000 bytes of SeaBIOS 1.16.2.
pub fn base_image() -> &'static [u8] {
    &include_bytes!("../../testdata/firmware/seabios-1.16.2-bios.bin")[..12000]
}

/// The largest slice the format allows (slice_log2 = 20).
pub const MAX_SLICE: usize = 1 << 20;

/// The trusted Ed25519 test key.
pub fn ed25519_trusted() -> &'static TrustedKey {
    static K: OnceLock<TrustedKey> = OnceLock::new();
    K.get_or_init(|| TrustedKey::from_spki_der(ED25519_PUB_DER).expect("test Ed25519 SPKI"))
}

/// Ed25519, RSA PKCS#1 v1.5 and RSA-PSS test keys, all trusted.
pub fn all_trusted() -> &'static [TrustedKey] {
    static K: OnceLock<Vec<TrustedKey>> = OnceLock::new();
    K.get_or_init(|| {
        [ED25519_PUB_DER, RSA_2048_PUB_DER, RSA_PSS_2048_PUB_DER]
            .iter()
            .map(|der| TrustedKey::from_spki_der(der).expect("test SPKI"))
            .collect()
    })
}

/// The Ed25519 test private key, read once from testdata/keys/test-ed25519.pem.
pub fn ed25519_signing() -> &'static otapack::keys::SigningKey {
    static K: OnceLock<otapack::keys::SigningKey> = OnceLock::new();
    K.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../testdata/keys/test-ed25519.pem");
        otapack::keys::SigningKey::from_pem_file(&path).expect("test Ed25519 private key")
    })
}

thread_local! {
    static SLICE_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0u8; MAX_SLICE]);
}

/// Runs `f` with a reusable buffer of `len` bytes (at most [`MAX_SLICE`], which the format
/// guarantees for a parsed package's slice size).
pub fn with_slice_buf<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    assert!(
        len <= MAX_SLICE,
        "slice size {len} above the 1 MiB format limit"
    );
    SLICE_BUF.with(|b| f(&mut b.borrow_mut()[..len]))
}

/// `verify_package` with a sink that checks each slice arrives in order with its declared
/// length; on `Ok`, asserts the decoded image is exactly what the manifest declares. `base`
/// is handed to delta packages (and ignored by full ones).
pub fn verify_checked(
    pkg: &Package<'_>,
    trusted: &[TrustedKey],
    policy: &Policy,
    decoder: &mut SliceDecoder,
    base: Option<&[u8]>,
) -> otapack_core::Result<SignatureSummary> {
    let mut base = base;
    let m = pkg.manifest();
    let mut image = Sha256::new();
    let mut next: u64 = 0;
    let mut slices: u32 = 0;
    let result = with_slice_buf(m.slice_size() as usize, |buf| {
        let base = base.as_mut().map(|b| b as &mut dyn BaseImage);
        verify_package(pkg, trusted, policy, decoder, base, buf, |offset, data| {
            assert_eq!(offset, next, "slice handed on out of order");
            assert_eq!(
                data.len() as u64,
                u64::from(m.slice_len(slices)),
                "slice {slices} has the wrong length"
            );
            image.update(data);
            next += data.len() as u64;
            slices += 1;
            Ok(())
        })
    });
    if let Ok(summary) = &result {
        assert_eq!(slices, m.slice_count(), "verified with slices missing");
        assert_eq!(next, m.image_size(), "verified image has the wrong size");
        let digest: [u8; 32] = image.finalize().into();
        assert_eq!(
            digest,
            m.image_sha256(),
            "verified image does not hash to image_sha256"
        );
        assert!(pkg.check_md5().is_ok(), "verified with a bad trailer MD5");
        if !policy.allow_unsigned {
            assert!(
                summary.valid >= policy.required_signatures.max(1),
                "verified without enough valid signatures: {summary:?}"
            );
        }
        assert!(summary.total as usize == pkg.signatures().count());
    }
    result
}
