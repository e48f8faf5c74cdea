//! otapack-zstd through otapack's zstd slice wrapper, on arbitrary frames. The input is one
//! parameter byte followed by the payload. The harness builds a valid one-slice manifest around
//! the payload (method zstd, payload_sha256 = SHA-256 of the payload, so the payload reaches
//! the decoder) and runs `SliceDecoder::decode`.
//!
//! Parameter byte: bits 0-3: zstd_window_log = 10 + bits, clamped to slice_log2; bit 4 set:
//! image size 4096; bit 4 clear: image size = the frame's declared Frame_Content_Size when it
//! is 1..=1 MiB, else 4096. slice_log2 is the smallest that holds the image in one slice (at
//! least 12). The payload must be shorter than the slice (the manifest rule for zstd).
//!
//! When a frame decodes fully (only the made-up slice digest is wrong), decoding again with
//! the right digest, with the same decoder, must succeed and give the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use otapack_core::decode::SliceDecoder;
use otapack_core::wire::manifest::{Kind, Manifest, ManifestRepr, SHA256_EMPTY};
use otapack_core::wire::slice::{Method, SliceRepr};
use otapack_core::Error;
use otapack_fuzz::{with_slice_buf, MAX_SLICE};
use sha2::{Digest, Sha256};

/// Frame_Content_Size of a zstd frame header (RFC 8878 §3.1.1.1), if declared.
fn frame_content_size(p: &[u8]) -> Option<u64> {
    if p.get(..4)? != [0x28, 0xB5, 0x2F, 0xFD] {
        return None;
    }
    let fhd = *p.get(4)?;
    let single = fhd & 0x20 != 0;
    let fcs_len = match fhd >> 6 {
        0 if single => 1,
        0 => return None,
        1 => 2,
        2 => 4,
        _ => 8,
    };
    let at = 5 + usize::from(!single) + [0, 1, 2, 4][usize::from(fhd & 3)];
    let mut v = [0u8; 8];
    v[..fcs_len].copy_from_slice(p.get(at..at + fcs_len)?);
    let n = u64::from_le_bytes(v);
    Some(if fcs_len == 2 { n + 256 } else { n })
}

fuzz_target!(|data: &[u8]| {
    let Some((&params, payload)) = data.split_first() else {
        return;
    };
    let image_size = match frame_content_size(payload) {
        Some(n) if params & 0x10 == 0 && (1..=MAX_SLICE as u64).contains(&n) => n,
        _ => 4096,
    };
    let slice_log2 = (64 - (image_size - 1).leading_zeros()).max(12) as u8;
    let zstd_window_log = (10 + (params & 0x0f)).min(slice_log2);
    if payload.is_empty() || payload.len() as u64 >= image_size {
        return; // the manifest forbids such a zstd record: the decoder never sees it
    }
    let mut slice = SliceRepr {
        index: 0,
        method: Method::Zstd,
        payload_offset: 0,
        payload_len: payload.len() as u32,
        arg: 0,
        payload_sha256: Sha256::digest(payload).into(),
        slice_sha256: SHA256_EMPTY,
    };
    let mut repr = ManifestRepr {
        kind: Kind::Full,
        erase_value: 0xFF,
        slice_log2,
        zstd_window_log,
        security_counter: 0,
        created: 0,
        expires: None,
        load_address: 0,
        image_size,
        image_sha256: [0; 32],
        base_size: 0,
        base_sha256: [0; 32],
        apply_descending: false,
        zstd_block_log: 0,
        segment_log: 0,
        segment_link_len: 0,
        device_ram: 0,
        software_version: "fuzz".into(),
        software_type: None,
        hardware_versions: Vec::new(),
        slices: vec![slice],
    };
    let bytes = repr.emit().expect("one-slice zstd manifest");
    let m = Manifest::new_checked(&bytes, 1, payload.len() as u32).expect("manifest parses");
    let rec = m.slices().next().expect("one record");
    let len = image_size as usize;

    let mut dec = SliceDecoder::new();
    let first = with_slice_buf(len, |buf| match dec.decode(&m, &rec, payload, None, buf) {
        Ok(_) => panic!("decoded to the made-up slice digest"),
        Err(Error::SliceDigest { .. }) => Some(buf.to_vec()),
        Err(Error::Decode { .. } | Error::WindowTooLarge { .. }) => None,
        Err(e) => panic!("unexpected error from a zstd slice: {e}"),
    });
    let Some(decoded) = first else { return };

    slice.slice_sha256 = Sha256::digest(&decoded).into();
    repr.slices = vec![slice];
    let bytes = repr.emit().expect("one-slice zstd manifest");
    let m = Manifest::new_checked(&bytes, 1, payload.len() as u32).expect("manifest parses");
    let rec = m.slices().next().expect("one record");
    with_slice_buf(len, |buf| {
        let again = dec
            .decode(&m, &rec, payload, None, buf)
            .unwrap_or_else(|e| panic!("second decode of the same frame failed: {e}"));
        assert_eq!(again, &decoded[..], "second decode gave other bytes");
    });
});
