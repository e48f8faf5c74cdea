//! Property tests: manifest parse/emit round trips, and build/verify/apply round trips on
//! random images (runs of fill, random and repetitive data, odd sizes).

mod common;
use common::*;
use otapack::build::build_full;
use otapack::otapack_core::decode::SliceDecoder;
use otapack::otapack_core::verify::{verify_package, Policy};
use otapack::otapack_core::wire::manifest::{Kind, Manifest, ManifestRepr, SHA256_EMPTY};
use otapack::otapack_core::wire::slice::{Method, SliceRepr};
use otapack::otapack_core::Package;
use proptest::prelude::*;

fn text() -> impl Strategy<Value = String> {
    "[ -~]{1,64}"
}

prop_compose! {
    fn manifest()(
        slice_log2 in 12u8..=20,
        sizes in proptest::collection::vec(1u64..=3, 1..6),
        last in 1u32..=4096,
        erase_value in any::<u8>(),
        security_counter in any::<u64>(),
        created in 0u64..u64::MAX / 2,
        expires_after in proptest::option::of(1u64..u64::MAX / 2),
        load_address in 0u64..=u64::MAX - (1 << 32),
        image_sha256 in any::<[u8; 32]>(),
        software_version in text(),
        software_type in proptest::option::of(text()),
        hardware_versions in proptest::collection::btree_set(text(), 0..16),
        methods in proptest::collection::vec(0u8..3, 6),
        digests in any::<[u8; 32]>(),
    ) -> ManifestRepr {
        let n = sizes.len();
        let slice_size = 1u32 << slice_log2;
        let image_size = (n as u64 - 1) * u64::from(slice_size) + u64::from(last.min(slice_size));
        let mut off = 0u32;
        let slices = (0..n).map(|i| {
            let len = if i == n - 1 { last.min(slice_size) } else { slice_size };
            let (method, payload_len, arg, psha) = match methods[i] {
                0 => (Method::Fill, 0, u64::from(erase_value), SHA256_EMPTY),
                1 => (Method::Raw, len, 0, digests),
                _ if len > 1 => (Method::Zstd, len / 2, 0, digests),
                _ => (Method::Raw, len, 0, digests),
            };
            let r = SliceRepr { index: i as u32, method, payload_offset: off, payload_len, arg, payload_sha256: psha, slice_sha256: digests };
            off += payload_len;
            r
        }).collect();
        ManifestRepr {
            kind: Kind::Full, erase_value, slice_log2, zstd_window_log: 10,
            security_counter, created, expires: expires_after.map(|d| created + d), load_address, image_size, image_sha256,
            base_size: 0, base_sha256: [0; 32], apply_descending: false, zstd_block_log: 0, segment_log: 0, segment_link_len: 0, device_ram: 0, software_version, software_type,
            hardware_versions: hardware_versions.into_iter().collect(), slices,
        }
    }
}

fn image() -> impl Strategy<Value = Vec<u8>> {
    let run = prop_oneof![
        (any::<u8>(), 1usize..20_000).prop_map(|(b, n)| vec![b; n]),
        proptest::collection::vec(any::<u8>(), 1..9000),
        (proptest::collection::vec(any::<u8>(), 1..64), 1usize..300).prop_map(|(pat, n)| pat
            .iter()
            .cycle()
            .take(pat.len() * n)
            .copied()
            .collect()),
    ];
    proptest::collection::vec(run, 1..6).prop_map(|runs| runs.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn manifest_emit_parse_round_trip(m in manifest()) {
        let bytes = m.emit().unwrap();
        let payload_len: u32 = m.slices.iter().map(|s| s.payload_len).sum();
        let view = Manifest::new_checked(&bytes, 1, payload_len).unwrap();
        prop_assert_eq!(ManifestRepr::parse(&view), m.clone());
        prop_assert_eq!(ManifestRepr::parse(&view).emit().unwrap(), bytes);
    }

    #[test]
    fn build_verify_apply_round_trip(data in image(), log2 in 12u8..=14, window in 10u8..=14) {
        let mut o = options();
        o.slice_log2 = log2;
        o.zstd_window_log = window;
        let k = key("test-ed25519");
        let pkg = build_full(&raw_image(data.clone()), &o, &[&k]).unwrap();
        let p = Package::parse(&pkg).unwrap();
        let mut buf = vec![0u8; p.manifest().slice_size() as usize];
        let mut out = Vec::new();
        verify_package(&p, &[pubkey("test-ed25519").key], &Policy::default(), &mut SliceDecoder::new(), None, &mut buf, |_, d| {
            out.extend_from_slice(d);
            Ok(())
        }).unwrap();
        prop_assert_eq!(out, data.clone());
        // Never larger than storing every slice raw, plus fixed overhead and, with payload
        // segments (4 KiB by default), a 32-byte link per segment after a payload's first.
        let m = p.manifest();
        let slices = m.slice_count() as usize;
        let links = match m.segment_size() as usize {
            0 => 0,
            g => (m.slice_size() as usize).div_ceil(g - 32) - 1,
        };
        let overhead = 32 + 136 + 64 + 96 * slices + 4 + 100 + 28 + 32 * links * slices;
        prop_assert!(pkg.len() <= data.len() + overhead + 64);
    }
}
