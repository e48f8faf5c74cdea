//! Key loading on arbitrary DER: `TrustedKey::from_spki_der` (public keys, what a device or
//! `otapack verify --key` loads), `TrustedKey::from_ed25519_bytes`, and
//! `otapack::keys::SigningKey::from_pkcs8_der` (private keys). An accepted public key's id
//! must be the SHA-256 of the DER it was loaded from; an accepted private key must sign a
//! message its own public key verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otapack_core::keys::TrustedKey;
use otapack_core::package::signed_message;
use sha2::{Digest, Sha256};
use std::hint::black_box;

fuzz_target!(|data: &[u8]| {
    let message = signed_message(&Sha256::digest(data).into());
    if let Ok(k) = TrustedKey::from_spki_der(data) {
        let id: [u8; 32] = Sha256::digest(data).into();
        assert_eq!(k.id(), id, "key id is not the SHA-256 of the SPKI DER");
        black_box((k.algorithm().name(), k.material_id()));
        // A signature of every plausible length, made of the input itself.
        for len in [64usize, 256, 384, 512] {
            let mut sig = data.to_vec();
            sig.resize(len, 0x5A);
            black_box(k.verify(&message, &sig));
        }
        black_box(k.verify(&message, data));
    }
    if let Some(raw) = data.get(..32).and_then(|b| <&[u8; 32]>::try_from(b).ok()) {
        if let Ok(k) = TrustedKey::from_ed25519_bytes(raw) {
            black_box(k.verify(&message, data));
        }
    }
    if let Ok(sk) = otapack::keys::SigningKey::from_pkcs8_der(data) {
        black_box((sk.algorithm(), sk.key_id()));
        assert_eq!(sk.key_id(), <[u8; 32]>::from(Sha256::digest(sk.spki_der())));
        // The SPKI a loaded private key derives must load as a trusted key of the same
        // algorithm, and what the private key signs must verify under it.
        let tk = sk
            .trusted_key()
            .unwrap_or_else(|e| panic!("private key loads but its public key does not: {e}"));
        assert_eq!(tk.algorithm(), sk.algorithm());
        assert_eq!(tk.id(), sk.key_id());
        let sig = sk
            .sign(&message)
            .unwrap_or_else(|e| panic!("loaded private key cannot sign: {e}"));
        assert!(tk.verify(&message, &sig), "own signature does not verify");
    }
});
