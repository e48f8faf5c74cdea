//! In-place delta packages (kind 2): built for random and real pairs, applied over the base
//! in its own buffer through the host in-place model (which reads only what is left of the
//! base), verified against the pristine base; crafted packages that read outside a slice's
//! window, and the APPLY_DESCENDING flag outside kind 2, are refused.

mod common;
use common::*;
use otapack::apply::apply_streaming;
use otapack::build::{build_delta, build_in_place, build_in_place_ordered, BuildOptions};
use otapack::image::{load, Image, LoadOptions};
use otapack::in_place::apply_in_place;
use otapack::otapack_core::patch::{encode, Op};
use otapack::otapack_core::verify::Policy;
use otapack::otapack_core::wire::manifest::{Kind, ManifestRepr, SHA256_EMPTY};
use otapack::otapack_core::wire::slice::{Method, SliceRepr};
use otapack::otapack_core::{Error, Package};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

fn lax() -> Policy {
    Policy {
        required_signatures: 0,
        allow_unsigned: true,
    }
}

/// The in-place model over a copy of `old`: the image it leaves in the slot.
fn model(pkg: &[u8], old: &[u8], policy: &Policy) -> Result<Vec<u8>, otapack::Error> {
    let trusted = [pubkey("test-ed25519").key];
    let mut slot = old.to_vec();
    apply_in_place(pkg, &mut slot, &trusted, policy)?;
    Ok(slot)
}

fn small_options(log2: u8) -> BuildOptions {
    let mut o = options();
    o.slice_log2 = log2;
    o.zstd_window_log = log2;
    o
}

/// Firmware-like edits: blocks inserted (shifting the rest later), deleted (shifting it
/// earlier), replaced, and moved; the new image ends up longer or shorter than the old.
fn edited(old: Vec<u8>) -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let n = old.len();
    proptest::collection::vec(
        (
            0..4u8,
            0..n.max(1),
            0usize..3000,
            proptest::collection::vec(any::<u8>(), 0..3000),
            0..n.max(1),
        ),
        0..6,
    )
    .prop_map(move |edits| {
        let mut new = old.clone();
        for (op, at, len, bytes, to) in edits {
            let at = at.min(new.len());
            let len = len.min(new.len() - at);
            match op {
                0 => drop(new.splice(at..at, bytes)),
                1 => drop(new.drain(at..at + len)),
                2 => drop(new.splice(at..at + len.min(bytes.len()), bytes)),
                _ => {
                    let block: Vec<u8> = new.drain(at..at + len).collect();
                    let to = to.min(new.len());
                    new.splice(to..to, block);
                }
            }
        }
        (old.clone(), new)
    })
}

fn pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop_oneof![
        (1usize..40_000, any::<u32>())
            .prop_map(|(n, seed)| noise(n, seed | 1))
            .prop_flat_map(edited),
        (1usize..40_000)
            .prop_map(|n| (0..n).map(|i| (i % 251) as u8 ^ (i / 900) as u8).collect())
            .prop_flat_map(edited),
        (
            proptest::collection::vec(any::<u8>(), 1..9000),
            proptest::collection::vec(any::<u8>(), 1..9000)
        ),
    ]
    .prop_filter("new must not be empty", |(_, new)| !new.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Both apply orders rebuild `new` when overwriting `old` in place, and verify against the
    /// pristine base; the automatic build keeps the smaller of the two.
    #[test]
    fn in_place_round_trips_through_the_in_place_model((old, new) in pair(), log2 in 12u8..=13) {
        let o = small_options(log2);
        let (oldi, newi) = (raw_image(old.clone()), raw_image(new.clone()));
        let mut sizes = Vec::new();
        for descending in [false, true] {
            let pkg = build_in_place_ordered(&oldi, &newi, &o, 1 << log2, descending, &[]).unwrap();
            let m = Package::parse(&pkg).unwrap().manifest();
            prop_assert_eq!(m.kind(), Kind::DeltaInPlace);
            prop_assert_eq!(m.apply_descending(), descending);
            prop_assert_eq!(model(&pkg, &old, &lax()).unwrap(), new.clone());
            prop_assert_eq!(verify_collect(&pkg, Some(&old), &[], &lax()).unwrap(), new.clone());
            sizes.push(pkg.len());
        }
        let pkg = build_in_place(&oldi, &newi, &o, 1 << log2, &[]).unwrap();
        prop_assert_eq!(pkg.len(), sizes[0].min(sizes[1]));
        let descending = Package::parse(&pkg).unwrap().manifest().apply_descending();
        prop_assert_eq!(descending, sizes[1] < sizes[0], "ties go to ascending");
        prop_assert_eq!(model(&pkg, &old, &lax()).unwrap(), new);
    }
}

fn load_pair(old: &str, new: &str) -> (Image, Image) {
    let load = |n: &str| load(&testdata(&format!("firmware/{n}")), &LoadOptions::default());
    (load(old).unwrap(), load(new).unwrap())
}

/// The testdata firmware pairs build in place, round-trip through the in-place model with a
/// signature checked, verify against the pristine base, and apply through the streaming
/// device applier (two-slot, windows still enforced).
#[test]
fn firmware_pairs_round_trip_in_place() {
    let k = key("test-ed25519");
    let trusted = [pubkey("test-ed25519").key];
    for (old, new) in PAIRS {
        let (old, new) = load_pair(old, new);
        let pkg = build_in_place(&old, &new, &options(), 1 << 16, &[&k]).unwrap();
        assert_eq!(
            Package::parse(&pkg).unwrap().manifest().kind(),
            Kind::DeltaInPlace
        );
        assert_eq!(
            model(&pkg, &old.data, &Policy::default()).unwrap(),
            new.data
        );
        assert_eq!(
            verify_collect(&pkg, Some(&old.data), &trusted, &Policy::default()).unwrap(),
            new.data
        );
        let applied =
            apply_streaming(&pkg, &trusted, &Policy::default(), Some(&old.data), 4096).unwrap();
        assert_eq!(applied.image, new.data);
        // The model refuses the wrong base before writing anything, and other kinds.
        let mut wrong = new.data.clone();
        assert!(matches!(
            apply_in_place(&pkg, &mut wrong, &trusted, &Policy::default()),
            Err(otapack::Error::Package(Error::BaseMismatch))
        ));
        assert_eq!(wrong, new.data);
        let delta = build_delta(&old, &new, &options(), &[&k]).unwrap();
        assert!(
            apply_in_place(&delta, &mut old.data.clone(), &trusted, &Policy::default()).is_err()
        );
    }
}

/// The size cost of in place against a two-slot delta on the testdata pairs, as in the
/// README's delta table (software version only, no signature): `cargo test -p otapack --test
/// in_place -- --nocapture size_cost`.
#[test]
fn size_cost_of_in_place_on_firmware_pairs() {
    println!("| pair | slices / window | two-slot delta | in place, ascending | in place, descending | in place / delta | chosen order |");
    println!("|---|---|---:|---:|---:|---:|---|");
    for (o, n) in PAIRS {
        let (old, new) = load_pair(o, n);
        for (log2, wlog) in [(16u8, 15u8), (14, 12)] {
            let mut opts = BuildOptions::new("1");
            opts.slice_log2 = log2;
            opts.zstd_window_log = wlog;
            let scratch = 1u64 << log2;
            let delta = build_delta(&old, &new, &opts, &[]).unwrap();
            let asc = build_in_place_ordered(&old, &new, &opts, scratch, false, &[]).unwrap();
            let desc = build_in_place_ordered(&old, &new, &opts, scratch, true, &[]).unwrap();
            let chosen = build_in_place(&old, &new, &opts, scratch, &[]).unwrap();
            let descending = Package::parse(&chosen)
                .unwrap()
                .manifest()
                .apply_descending();
            assert_eq!(chosen.len(), asc.len().min(desc.len()));
            assert_eq!(descending, desc.len() < asc.len());
            println!(
                "| {o} → {n} | {} KiB / {} KiB | {} | {} | {} | {:.4} | {} |",
                1 << (log2 - 10),
                1 << (wlog - 10),
                delta.len(),
                asc.len(),
                desc.len(),
                chosen.len() as f64 / delta.len() as f64,
                if descending {
                    "descending"
                } else {
                    "ascending"
                }
            );
        }
    }
}

fn zstd_frame(data: &[u8]) -> Vec<u8> {
    use zstd::zstd_safe::CParameter;
    let mut c = zstd::bulk::Compressor::new(19).unwrap();
    c.set_parameter(CParameter::WindowLog(12)).unwrap();
    c.set_parameter(CParameter::ContentSizeFlag(true)).unwrap();
    c.compress(data).unwrap()
}

/// A signed 3-slice (4 KiB) in-place package over `old` (3 slices): slices 0 and 2 raw copies
/// of `old`, slice 1 stored as `(method, arg, payload)` and decoding to `slice1`.
fn crafted(
    kind: Kind,
    descending: bool,
    old: &[u8],
    slice1: &[u8],
    method: Method,
    arg: u64,
    payload: &[u8],
) -> Vec<u8> {
    let image: Vec<u8> = [&old[..4096], slice1, &old[8192..]].concat();
    let mut slices = Vec::new();
    let mut payloads = Vec::new();
    for (i, (m, a, p, data)) in [
        (Method::Raw, 0, &old[..4096], &old[..4096]),
        (method, arg, payload, slice1),
        (Method::Raw, 0, &old[8192..], &old[8192..]),
    ]
    .into_iter()
    .enumerate()
    {
        slices.push(SliceRepr {
            index: i as u32,
            method: m,
            payload_offset: payloads.len() as u32,
            payload_len: p.len() as u32,
            arg: a,
            payload_sha256: if p.is_empty() {
                SHA256_EMPTY
            } else {
                Sha256::digest(p).into()
            },
            slice_sha256: Sha256::digest(data).into(),
        });
        payloads.extend_from_slice(p);
    }
    // Emitted as a two-slot delta (emit refuses what a reader refuses), then turned into the
    // kind asked for: an in-place package may thus break the window rules.
    let mut manifest = test_manifest(Kind::Delta, &image, Some(old), 12, slices)
        .emit()
        .unwrap();
    manifest[2] = kind as u8;
    manifest[6] = u8::from(descending);
    signed(&manifest, &payloads)
}

#[test]
fn reads_outside_the_window_are_refused() {
    let old = noise(3 * 4096, 0x2545_F491);
    let trusted = [pubkey("test-ed25519").key];
    let strict = Policy::default();
    let outside = Error::ReadOutsideWindow { slice: 1 };
    // (descending, old range slice 1's patch reads): ascending, slice 1's window is
    // [4096, 12288); descending, [0, 8192). Each read is outside by at least one byte.
    for (descending, from) in [(false, 0usize), (false, 4095), (true, 8192), (true, 4097)] {
        let slice1 = &old[from..from + 4096];
        let stream = encode(&[Op {
            seek: from as i64,
            add: &[0; 4096],
            copy: &[],
        }]);
        let payload = zstd_frame(&stream);
        let pkg = crafted(
            Kind::DeltaInPlace,
            descending,
            &old,
            slice1,
            Method::Patch,
            1,
            &payload,
        );
        // It parses and is validly signed: the read is caught while decoding.
        assert!(Package::parse(&pkg).is_ok());
        assert_eq!(
            verify_collect(&pkg, Some(&old), &trusted, &strict),
            Err(outside),
            "descending {descending}, from {from}"
        );
        assert!(matches!(
            model(&pkg, &old, &strict),
            Err(otapack::Error::Package(e)) if e == outside
        ));
        assert!(matches!(
            apply_streaming(&pkg, &trusted, &strict, Some(&old), 1000),
            Err(otapack::Error::Package(e)) if e == outside
        ));
        // The same slices in a two-slot delta are fine: only the window refuses them.
        let two_slot = crafted(Kind::Delta, false, &old, slice1, Method::Patch, 1, &payload);
        let rebuilt = verify_collect(&two_slot, Some(&old), &trusted, &strict).unwrap();
        assert_eq!(&rebuilt[4096..8192], slice1);

        // A copy of the same range is refused when the manifest is parsed.
        let pkg = crafted(
            Kind::DeltaInPlace,
            descending,
            &old,
            slice1,
            Method::Copy,
            from as u64,
            &[],
        );
        assert_eq!(Package::parse(&pkg).unwrap_err(), outside);
        let two_slot = crafted(
            Kind::Delta,
            false,
            &old,
            slice1,
            Method::Copy,
            from as u64,
            &[],
        );
        assert!(verify_collect(&two_slot, Some(&old), &trusted, &strict).is_ok());

        // So is a zstd-ref prefix over it, whatever its frames hold (the record alone is
        // refused, before any payload is read).
        let arg = (from as u64) << 32 | 4096;
        let pkg = crafted(
            Kind::DeltaInPlace,
            descending,
            &old,
            slice1,
            Method::ZstdRef,
            arg,
            &[0x28, 0xB5, 0x2F, 0xFD],
        );
        assert_eq!(Package::parse(&pkg).unwrap_err(), outside);
    }
    // Reads just inside the window pass.
    for (descending, from) in [(false, 4096usize), (false, 8192), (true, 0), (true, 4096)] {
        let slice1 = &old[from..from + 4096];
        let payload = zstd_frame(&encode(&[Op {
            seek: from as i64,
            add: &[0; 4096],
            copy: &[],
        }]));
        for (method, arg, payload) in [
            (Method::Patch, 1, &payload[..]),
            (Method::Copy, from as u64, &[][..]),
        ] {
            let pkg = crafted(
                Kind::DeltaInPlace,
                descending,
                &old,
                slice1,
                method,
                arg,
                payload,
            );
            let want: Vec<u8> = [&old[..4096], slice1, &old[8192..]].concat();
            assert_eq!(model(&pkg, &old, &strict).unwrap(), want);
            assert_eq!(
                verify_collect(&pkg, Some(&old), &trusted, &strict).unwrap(),
                want
            );
        }
    }
}

#[test]
fn apply_descending_flag_outside_kind_2_is_malformed() {
    let k = key("test-ed25519");
    let (old, new) = load_pair(PAIRS[1].0, PAIRS[1].1);
    let mut o = options();
    o.slice_log2 = 14;
    for pkg in [
        otapack::build::build_full(&new, &o, &[&k]).unwrap(),
        build_delta(&old, &new, &o, &[&k]).unwrap(),
    ] {
        let mut bad = pkg.clone();
        bad[32 + 6] |= 1; // manifest flags, bit 0
        fix_trailer(&mut bad);
        assert!(matches!(Package::parse(&bad), Err(Error::Malformed { .. })));
        // Emitting one is refused too.
        let mut m = ManifestRepr::parse(&Package::parse(&pkg).unwrap().manifest());
        m.apply_descending = true;
        assert!(matches!(m.emit(), Err(Error::Malformed { .. })));
    }
    // In kind 2 the flag round-trips, and any other flag bit is refused.
    let pkg = build_in_place_ordered(&old, &new, &o, 1 << 14, true, &[&k]).unwrap();
    let m = ManifestRepr::parse(&Package::parse(&pkg).unwrap().manifest());
    assert!(m.apply_descending);
    for bit in 1..16u16 {
        let mut bad = pkg.clone();
        bad[32 + 6..32 + 8].copy_from_slice(&(1u16 | 1 << bit).to_le_bytes());
        fix_trailer(&mut bad);
        assert!(
            matches!(Package::parse(&bad), Err(Error::Malformed { .. })),
            "bit {bit}"
        );
    }
}

#[test]
fn slices_larger_than_the_scratch_area_are_refused() {
    let (old, new) = load_pair(PAIRS[1].0, PAIRS[1].1);
    let err = build_in_place(&old, &new, &options(), 32 * 1024, &[]).unwrap_err();
    assert!(err.to_string().contains("scratch"), "{err}");
    assert!(build_in_place(&raw_image(vec![]), &new, &options(), 1 << 16, &[]).is_err());
}

/// A single-slot package reserves the in-place session's larger stack: fitted to the same
/// budget as a two-slot delta, it gets settings that leave 8 KiB more room, and the RAM it
/// records counts that reserve.
#[test]
fn the_in_place_fit_keeps_the_larger_stack_reserve() {
    use otapack::otapack_core::ram;
    let l = |f: &str| load(&testdata(&format!("firmware/{f}")), &LoadOptions::default()).unwrap();
    let old = l("seabios-1.16.2-bios.bin");
    let new = l("seabios-1.16.3-bios.bin");
    let budget = 64 * 1024;
    let mut two = options();
    two.fit_device_ram(budget, new.data.len() as u64).unwrap();
    let mut one = options();
    one.fit_device_ram_in_place(budget, new.data.len() as u64)
        .unwrap();
    assert!(
        one.zstd_window_log < two.zstd_window_log,
        "in place {} two-slot {}",
        one.zstd_window_log,
        two.zstd_window_log
    );
    let pkg = build_in_place(&old, &new, &one, 1 << one.slice_log2, &[]).unwrap();
    let p = Package::parse(&pkg).unwrap();
    let need = ram::needed(&p.manifest());
    assert_eq!(need.stack_reserve, ram::IN_PLACE_STACK_RESERVE);
    assert!(need.total() <= budget, "{need:?}");
    assert_eq!(u64::from(p.manifest().device_ram()), need.total());
    let pkg = build_delta(&old, &new, &two, &[]).unwrap();
    let need = ram::needed(&Package::parse(&pkg).unwrap().manifest());
    assert_eq!(need.stack_reserve, ram::STACK_RESERVE);
    assert!(need.total() <= budget, "{need:?}");
}
