//! Delta packages: real firmware pairs, random pairs (proptest), a differential check of the
//! device patch decoder against `bipatch`, and refusal of the wrong base.

mod common;
use common::*;
use otapack::build::{build_delta, build_full};
use otapack::image::{load, LoadOptions};
use otapack::otapack_core::keys::TrustedKey;
use otapack::otapack_core::patch::{encode, BaseImage, Op, PatchDecoder};
use otapack::otapack_core::verify::Policy;
use otapack::otapack_core::wire::manifest::Kind;
use otapack::otapack_core::wire::slice::Method;
use otapack::otapack_core::{Error, Package};
use proptest::prelude::*;
use std::io::Read;

fn apply(
    pkg: &[u8],
    base: Option<&[u8]>,
    trusted: &[TrustedKey],
    policy: &Policy,
) -> Result<Vec<u8>, Error> {
    verify_collect(pkg, base, trusted, policy)
}

#[test]
fn real_firmware_pairs_round_trip_and_beat_full_packages() {
    let trusted = [pubkey("test-ed25519").key];
    for (old, new) in PAIRS {
        let old = load(
            &testdata(&format!("firmware/{old}")),
            &LoadOptions::default(),
        )
        .unwrap();
        let new = load(
            &testdata(&format!("firmware/{new}")),
            &LoadOptions::default(),
        )
        .unwrap();
        let delta = delta_round_trips(&old, &new);
        assert_eq!(
            Package::parse(&delta).unwrap().manifest().kind(),
            Kind::Delta
        );
        // The wrong base, or none, is refused before anything is produced.
        assert_eq!(
            apply(&delta, None, &trusted, &Policy::default()),
            Err(Error::BaseRequired)
        );
        assert_eq!(
            apply(&delta, Some(&new.data), &trusted, &Policy::default()),
            Err(Error::BaseMismatch)
        );
        let mut flipped = old.data.clone();
        flipped[100] ^= 1;
        assert_eq!(
            apply(&delta, Some(&flipped), &trusted, &Policy::default()),
            Err(Error::BaseMismatch)
        );
    }
}

/// The other pairs in testdata (the comparison's: ESP32 and ESP32-C3 bootloaders, an nRF52
/// app from a sparse HEX file, Wi-Fi firmware, AArch64 and big-endian s390x ELF files, an x86
/// option ROM), loaded as `benches/compare/run.sh` loads them: each delta applies through the
/// device path to the new image and is smaller than the full package.
#[test]
fn comparison_firmware_pairs_round_trip() {
    type Pair = (&'static str, &'static str, Option<(u64, u64)>);
    let pairs: &[Pair] = &[
        (
            "espflash-4.6.0-esp32-bootloader.bin",
            "espflash-4.7.0-esp32-bootloader.bin",
            None,
        ),
        (
            "espflash-4.2.0-esp32c3-bootloader.bin",
            "espflash-4.3.0-esp32c3-bootloader.bin",
            None,
        ),
        (
            "nrf52-connectivity-4.1.1-usb-for-s132-5.1.0.hex",
            "nrf52-connectivity-4.1.2-usb-for-s132-5.1.0.hex",
            Some((0x23000, 0x50000)),
        ),
        (
            "ath9k-htc-9271-1.4.0-106.fw",
            "ath9k-htc-9271-1.4.0-108.fw",
            None,
        ),
        ("rtw8822c-fw-9.9.14.bin", "rtw8822c-fw-9.9.15.bin", None),
        (
            "tf-a-2.4-rk3328-bl31.elf",
            "tf-a-2.8-rk3328-bl31.elf",
            Some((0x40000, 0x80000)),
        ),
        (
            "u-boot-2021.01+dfsg-5-qemu_arm64.elf",
            "u-boot-2021.01+dfsg-5+deb11u3-qemu_arm64.elf",
            None,
        ),
        (
            "qemu-10.0.2-s390-ccw.img",
            "qemu-10.0.13-s390-ccw.img",
            None,
        ),
        (
            "seabios-1.16.2-vgabios-stdvga.bin",
            "seabios-1.16.3-vgabios-stdvga.bin",
            None,
        ),
    ];
    for &(old, new, range) in pairs {
        let opts = LoadOptions {
            range,
            ..LoadOptions::default()
        };
        let old = load(&testdata(&format!("firmware/{old}")), &opts).unwrap();
        let new = load(&testdata(&format!("firmware/{new}")), &opts).unwrap();
        assert_ne!(old.data, new.data);
        delta_round_trips(&old, &new);
    }
}

/// A signed delta from `old` to `new`, checked: it applies through the device path to `new`
/// and is smaller than the full package.
fn delta_round_trips(old: &otapack::image::Image, new: &otapack::image::Image) -> Vec<u8> {
    let k = key("test-ed25519");
    let trusted = [pubkey("test-ed25519").key];
    let delta = build_delta(old, new, &options(), &[&k]).unwrap();
    let full = build_full(new, &options(), &[&k]).unwrap();
    assert_eq!(
        apply(&delta, Some(&old.data), &trusted, &Policy::default()).unwrap(),
        new.data
    );
    assert!(
        delta.len() < full.len(),
        "{}: delta {} >= full {}",
        new.data.len(),
        delta.len(),
        full.len()
    );
    delta
}

/// One bidiff scan covers several slices (`SCAN_CHUNK`), so its matches can run across slice
/// boundaries; they are cut there, and each slice's matches tile it exactly and rebuild it.
#[test]
fn matches_are_cut_at_slice_boundaries() {
    use otapack::delta::{patch_rebuilds, patch_stream, slice_matches, SCAN_CHUNK};
    let old = noise(3 * SCAN_CHUNK / 2, 0x1234_5678);
    let mut new = old.clone();
    new.splice(1000..1000, noise(77, 3));
    new.drain(200_000..200_100);
    new[300_000] ^= 0x55;
    for slice in [4096, 65536] {
        let matches = slice_matches(&old, &new, slice).unwrap();
        assert_eq!(matches.len(), new.len().div_ceil(slice));
        let mut crossing = 0;
        for (i, m) in matches.iter().enumerate() {
            let start = i * slice;
            let s = &new[start..new.len().min(start + slice)];
            // Without the cut, a long match would stay whole in the slice where it starts.
            crossing += usize::from(
                m.first()
                    .is_some_and(|m| m.add_new == start && m.add_len > 0),
            );
            let stream = patch_stream(&old, &new, start, s.len(), m)
                .unwrap_or_else(|| panic!("slice {i} of {slice}: matches do not tile it"));
            let payload = zstd::bulk::compress(&stream, 3).unwrap();
            assert!(patch_rebuilds(&old, &payload, 1, start, s, &(0..old.len())));
        }
        assert!(
            crossing > new.len() / slice / 2,
            "{crossing} slices start inside a match"
        );
    }
}

#[test]
fn unchanged_and_moved_slices_become_copies() {
    let old = noise(7 * 4096, 0x9E37_79B9);
    // new: slice 0 moved to where slice 2 was, the rest identical.
    let mut new = old.clone();
    let s0 = old[..4096].to_vec();
    new[8192..12288].copy_from_slice(&s0);
    new[..4096].copy_from_slice(&old[12288..16384]);
    let mut o = options();
    o.slice_log2 = 12;
    o.zstd_window_log = 12;
    let pkg = build_delta(&raw_image(old.clone()), &raw_image(new.clone()), &o, &[]).unwrap();
    let p = Package::parse(&pkg).unwrap();
    let copies: Vec<(u32, u64)> = p
        .manifest()
        .slices()
        .filter(|r| r.method() == Method::Copy)
        .map(|r| (r.index(), r.arg()))
        .collect();
    assert!(copies.contains(&(0, 12288)), "{copies:?}");
    assert!(copies.contains(&(2, 0)), "{copies:?}");
    assert!(copies.contains(&(3, 12288)), "{copies:?}");
    let lax = Policy {
        required_signatures: 0,
        allow_unsigned: true,
    };
    assert_eq!(apply(&pkg, Some(&old), &[], &lax).unwrap(), new);
}

#[test]
fn empty_old_image_is_refused() {
    assert!(build_delta(
        &raw_image(vec![]),
        &raw_image(vec![1, 2, 3]),
        &options(),
        &[]
    )
    .is_err());
}

/// Edits that look like firmware changes: inserted, deleted and replaced runs.
fn edited(old: Vec<u8>) -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let n = old.len();
    proptest::collection::vec(
        (
            0..n.max(1),
            0usize..64,
            proptest::collection::vec(any::<u8>(), 0..64),
        ),
        0..12,
    )
    .prop_map(move |edits| {
        let mut new = old.clone();
        for (at, del, ins) in edits {
            let at = at.min(new.len());
            let del = del.min(new.len() - at);
            new.splice(at..at + del, ins);
        }
        (old.clone(), new)
    })
}

fn pair() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 1..20_000).prop_flat_map(edited),
        (1usize..30_000)
            .prop_map(|n| (0..n).map(|i| (i % 97) as u8 ^ (i / 700) as u8).collect())
            .prop_flat_map(edited),
        (
            proptest::collection::vec(any::<u8>(), 1..5000),
            proptest::collection::vec(any::<u8>(), 1..5000)
        ),
    ]
    .prop_filter("new must not be empty", |(_, new)| !new.is_empty())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn delta_round_trips_and_is_never_larger_than_full((old, new) in pair(), log2 in 12u8..=13) {
        let mut o = options();
        o.slice_log2 = log2;
        o.zstd_window_log = log2;
        let delta = build_delta(&raw_image(old.clone()), &raw_image(new.clone()), &o, &[]).unwrap();
        let full = build_full(&raw_image(new.clone()), &o, &[]).unwrap();
        let lax = Policy { required_signatures: 0, allow_unsigned: true };
        prop_assert_eq!(apply(&delta, Some(&old), &[], &lax).unwrap(), new);
        prop_assert!(delta.len() <= full.len(), "delta {} > full {}", delta.len(), full.len());
    }

    /// The device decoder gives what bipatch gives, for plain (whole-file) bidiff patches.
    #[test]
    fn patch_decoder_matches_bipatch((old, new) in pair(), piece in 1usize..300) {
        let mut bidiff_patch = Vec::new();
        bidiff::simple_diff(&old, &new, &mut bidiff_patch).unwrap();
        let mut by_bipatch = Vec::new();
        bipatch::Reader::new(&bidiff_patch[..], std::io::Cursor::new(&old[..]))
            .unwrap()
            .read_to_end(&mut by_bipatch)
            .unwrap();

        // Re-encode bidiff's ops (add, copy, seek-after) as patch format 1 (seek-before).
        let ops = parse_bidiff(&bidiff_patch);
        let mut seek = 0i64;
        let mut ours_ops = Vec::new();
        for (add, copy, next_seek) in &ops {
            if !add.is_empty() || !copy.is_empty() {
                ours_ops.push(Op { seek, add, copy });
                seek = 0;
            }
            seek += next_seek;
        }
        let stream = encode(&ours_ops);
        let mut out = Vec::new();
        let mut d = PatchDecoder::new(0, new.len() as u64, old.len() as u64);
        let mut base: &[u8] = &old;
        for chunk in stream.chunks(piece) {
            d.feed(chunk, &mut base, &mut |p| {
                out.extend_from_slice(p);
                Ok(())
            })
            .unwrap();
        }
        d.finish().unwrap();
        prop_assert_eq!(&out, &by_bipatch);
        prop_assert_eq!(out, new);
    }
}

/// bidiff wire format: u32 magic, u32 version, then {uvarint add_len, add, uvarint copy_len,
/// copy, svarint seek}*.
fn parse_bidiff(p: &[u8]) -> Vec<(&[u8], &[u8], i64)> {
    fn uvarint(p: &[u8], at: &mut usize) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let b = p[*at];
            *at += 1;
            v |= u64::from(b & 0x7F) << shift;
            if b & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }
    let mut at = 8;
    let mut ops = Vec::new();
    while at < p.len() {
        let n = uvarint(p, &mut at) as usize;
        let add = &p[at..at + n];
        at += n;
        let n = uvarint(p, &mut at) as usize;
        let copy = &p[at..at + n];
        at += n;
        let z = uvarint(p, &mut at);
        ops.push((add, copy, (z >> 1) as i64 ^ -((z & 1) as i64)));
    }
    ops
}

fn small_delta() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut old = noise(4 * 4096, 7);
    old.extend(vec![0xFF; 4096]);
    let mut new = old.clone();
    new[5000..5010].copy_from_slice(b"0123456789");
    new.splice(9000..9000, b"inserted bytes".iter().copied());
    let mut o = options();
    o.slice_log2 = 12;
    o.zstd_window_log = 12;
    let pkg = build_delta(
        &raw_image(old.clone()),
        &raw_image(new.clone()),
        &o,
        &[&key("test-ed25519")],
    )
    .unwrap();
    (old, new, pkg)
}

#[test]
fn every_byte_flip_of_a_delta_package_is_rejected() {
    let (old, new, pkg) = small_delta();
    let trusted = [pubkey("test-ed25519").key];
    assert_eq!(
        apply(&pkg, Some(&old), &trusted, &Policy::default()).unwrap(),
        new
    );
    let methods: Vec<Method> = Package::parse(&pkg)
        .unwrap()
        .manifest()
        .slices()
        .map(|r| r.method())
        .collect();
    // Small edits in noise: the edited slices are zstd-ref (a few matches into the base),
    // the others copies.
    assert!(
        methods.contains(&Method::ZstdRef) && methods.contains(&Method::Copy),
        "{methods:?}"
    );
    for i in 0..pkg.len() {
        let mut bad = pkg.clone();
        bad[i] ^= 0x20;
        assert!(
            apply(&bad, Some(&old), &trusted, &Policy::default()).is_err(),
            "flip at {i}"
        );
        if i < pkg.len() - 28 {
            fix_trailer(&mut bad);
            assert!(
                apply(&bad, Some(&old), &trusted, &Policy::default()).is_err(),
                "flip at {i} behind a fixed MD5"
            );
        }
    }
}

#[test]
fn delta_records_out_of_range_are_refused_at_parse() {
    let (_, _, pkg) = small_delta();
    let p = Package::parse(&pkg).unwrap();
    let table = 32 + 136 + p.manifest().tlv_len() as usize;
    for (i, rec) in p.manifest().slices().enumerate() {
        let at = table + i * 96;
        let mut bad = pkg.clone();
        match rec.method() {
            Method::Copy => {
                // Copy source past the end of the base image.
                let arg =
                    p.manifest().base_size() - u64::from(p.manifest().slice_len(i as u32)) + 1;
                bad[at + 16..at + 24].copy_from_slice(&arg.to_le_bytes());
            }
            Method::Patch => bad[at + 16] = 3, // unknown patch format (1 and 2 are defined)
            Method::ZstdRef => {
                // A prefix that runs one byte past the end of the base image.
                let (start, len) = otapack_core::wire::slice::ref_region(rec.arg());
                let arg = (start + 1) << 32 | len;
                assert_eq!(start + len, p.manifest().base_size());
                bad[at + 16..at + 24].copy_from_slice(&arg.to_le_bytes());
            }
            _ => continue,
        }
        fix_trailer(&mut bad);
        assert!(
            matches!(Package::parse(&bad), Err(Error::Malformed { .. })),
            "record {i}"
        );
    }
    // Patch format 2 reads base bytes around each add, so an in-place delta may not use it.
    let mut o = options();
    o.slice_log2 = 12;
    let (old, new) = (noise(4 * 4096, 3), noise(4 * 4096, 3));
    let mut new = new;
    new[100..110].copy_from_slice(b"0123456789");
    let inplace = otapack::build::build_in_place(
        &raw_image(old),
        &raw_image(new),
        &o,
        4096,
        &[&key("test-ed25519")],
    )
    .unwrap();
    let p = Package::parse(&inplace).unwrap();
    assert_eq!(p.manifest().kind(), Kind::DeltaInPlace);
    let table = 32 + 136 + p.manifest().tlv_len() as usize;
    let i = p
        .manifest()
        .slices()
        .position(|r| r.payload_len() > 0)
        .expect("a slice with a payload");
    // Its record as a patch: format 1 parses, format 2 does not.
    let mut bad = inplace.clone();
    let at = table + i * 96;
    bad[at + 4] = Method::Patch as u8;
    bad[at + 16..at + 24].copy_from_slice(&1u64.to_le_bytes());
    fix_trailer(&mut bad);
    assert!(Package::parse(&bad).is_ok());
    bad[at + 16] = 2;
    fix_trailer(&mut bad);
    assert!(matches!(Package::parse(&bad), Err(Error::Malformed { .. })));
    // A full package may not use copy or patch: flip the kind of a delta to full.
    let mut bad = pkg.clone();
    bad[32 + 2] = 0;
    fix_trailer(&mut bad);
    assert!(Package::parse(&bad).is_err());
}

/// A synthetic Thumb firmware: functions of random non-call halfwords with `BL` calls to other
/// functions, each followed by a literal pool of pointers to functions (load address
/// `ADDRESS`). `sizes` are the functions' code lengths in words; `calls` and `pointers` pick
/// targets by index.
const ADDRESS: u32 = 0x0800_0000;

fn thumb_image(
    sizes: &[usize],
    calls: &[(usize, usize, usize)],
    pool: usize,
    seed: u64,
) -> Vec<u8> {
    code_image(sizes, calls, pool, seed, false)
}

/// [`thumb_image`], or with `a64` the same made of AArch64 words: random words that are no
/// branch and AArch64 `BL` calls.
fn code_image(
    sizes: &[usize],
    calls: &[(usize, usize, usize)],
    pool: usize,
    seed: u64,
    a64: bool,
) -> Vec<u8> {
    let mut starts = Vec::new();
    let mut at = 0usize;
    for &s in sizes {
        starts.push(at);
        at += 4 * (s + pool);
    }
    let mut img = vec![0u8; at];
    for (f, &s) in sizes.iter().enumerate() {
        // Each function's code depends on its index alone, so growing one leaves the others.
        let mut rng = (seed ^ f as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for w in 0..s {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // Two halfwords below 0x8000: never a Thumb BL half; with bit 30 also never an
            // AArch64 B or BL (top bits x00101).
            let v = (rng as u32) & 0x7FFF_7FFF | if a64 { 0x4000_0000 } else { 0 };
            img[starts[f] + 4 * w..][..4].copy_from_slice(&v.to_le_bytes());
        }
        for p in 0..pool {
            let target = starts[(f + p + 1) % sizes.len()] as u32 + ADDRESS;
            img[starts[f] + 4 * (s + p)..][..4].copy_from_slice(&target.to_le_bytes());
        }
    }
    for &(f, w, t) in calls {
        let (f, t) = (f % sizes.len(), t % sizes.len());
        let from = starts[f] + 4 * (w % sizes[f]);
        if a64 {
            let n = (starts[t] as u32).wrapping_sub(from as u32);
            let bl = 0x9400_0000 | (n >> 2) & 0x03FF_FFFF;
            img[from..from + 4].copy_from_slice(&bl.to_le_bytes());
            continue;
        }
        let n = (starts[t] as u32).wrapping_sub(from as u32 + 4);
        let h = 0xF000u16 | ((n >> 12) & 0x7FF) as u16;
        let l = 0xF800u16 | ((n >> 1) & 0x7FF) as u16;
        img[from..from + 2].copy_from_slice(&h.to_le_bytes());
        img[from + 2..from + 4].copy_from_slice(&l.to_le_bytes());
    }
    img
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    /// Re-linked Thumb firmware (an early function grew, so everything after it moved): the delta
    /// round-trips through the device applier, and patch format 2 is chosen for some slice
    /// because predicting the moved calls and pointers makes it smaller.
    #[test]
    fn moved_thumb_code_round_trips_with_predicted_references(
        sizes in proptest::collection::vec(8usize..200, 20..60),
        calls in proptest::collection::vec((0usize..64, 0usize..200, 0usize..64), 50..400),
        grow in (0usize..3, 1usize..12),
        seed in any::<u64>(),
    ) {
        let old = thumb_image(&sizes, &calls, 3, seed);
        let mut bigger = sizes.clone();
        bigger[grow.0 % sizes.len()] += grow.1;
        let new = thumb_image(&bigger, &calls, 3, seed);
        let mut o = options();
        o.slice_log2 = 12;
        o.zstd_window_log = 12;
        let image = |data: Vec<u8>| {
            let mut i = raw_image(data);
            i.load_address = ADDRESS.into();
            i
        };
        let delta = build_delta(&image(old.clone()), &image(new.clone()), &o, &[]).unwrap();
        let lax = Policy { required_signatures: 0, allow_unsigned: true };
        prop_assert_eq!(apply(&delta, Some(&old), &[], &lax).unwrap(), new);
        let p = Package::parse(&delta).unwrap();
        let formats: Vec<u64> = p
            .manifest()
            .slices()
            .filter(|r| r.method() == Method::Patch)
            .map(|r| r.arg())
            .collect();
        prop_assert!(formats.contains(&2), "patch formats {:?}", formats);
    }
}

/// Builds a two-slot delta of `old` -> `new` (16 KiB slices, 4 KiB window, no segments),
/// checks that the device applier rebuilds `new` from it, and returns the header flags (the
/// op stream's first byte) of each format-2 patch slice.
fn format2_flags(old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut o = options();
    o.slice_log2 = 14;
    o.zstd_window_log = 12;
    o.segment_log = 0;
    let delta = build_delta(&raw_image(old.to_vec()), &raw_image(new.to_vec()), &o, &[]).unwrap();
    let lax = Policy {
        required_signatures: 0,
        allow_unsigned: true,
    };
    assert_eq!(apply(&delta, Some(old), &[], &lax).unwrap(), new);
    let p = Package::parse(&delta).unwrap();
    p.manifest()
        .slices()
        .filter(|r| r.method() == Method::Patch && r.arg() == 2)
        .map(|r| zstd::bulk::decompress(p.payload(&r), 1 << 20).unwrap()[0])
        .collect()
}

/// How many bytes of `new[0x4000 + d ..][..0x8000]` differ from `old[0x4000..][..0x8000]` as
/// predicted with `flags` and `address` (an add run of displacement `d`), through the address
/// map of the pair's matches: what a format-2 patch still pays add bytes for.
fn changed_after_prediction(old: &[u8], new: &[u8], flags: u8, address: u32, d: u32) -> usize {
    let map = otapack::delta::address_map(
        old.len(),
        &otapack::delta::slice_matches(old, new, 1 << 14).unwrap(),
    );
    let pr = otapack::otapack_core::predict::Predict::new(flags, address, &map).unwrap();
    let (from, len) = (0x4000usize, 0x8000usize);
    let mut b = vec![0u8; len];
    pr.predict(old, 0, old.len() as u64, from as u64, d, &mut b);
    let at = from + d as usize;
    b.iter()
        .zip(&new[at..at + len])
        .filter(|(x, y)| x != y)
        .count()
}

/// An image of `functions` functions (10 to 49 instruction slots each) with `refs` calls or
/// references between them, made by `image`, and the same with function 3 grown by 4 slots:
/// a re-link that moves everything after it.
type CodeImage = fn(&[usize], &[(usize, usize, usize)]) -> Vec<u8>;
fn relinked(image: CodeImage, functions: usize, refs: usize) -> (Vec<u8>, Vec<u8>) {
    let sizes: Vec<usize> = (0..functions).map(|i| 10 + (i * 7919) % 40).collect();
    let refs: Vec<(usize, usize, usize)> = (0..refs)
        .map(|i| (i * 31, i * 17, i * 7 + functions / 2))
        .collect();
    let mut bigger = sizes.clone();
    bigger[3] += 4;
    (image(&sizes, &refs), image(&bigger, &refs))
}

/// The builder predicts `old` -> `new` with `rule` (and pointers at most): at least
/// `min_slices` format-2 slices, every one with that rule, and the rule leaves under a
/// twentieth of the changed bytes an add run of displacement `d` pays without it. Returns the
/// slices' flags.
fn assert_predicted_with(
    old: &[u8],
    new: &[u8],
    rule: u8,
    address: u32,
    d: u32,
    min_slices: usize,
) -> Vec<u8> {
    use otapack::otapack_core::predict::POINTER32;
    let flags = format2_flags(old, new);
    assert!(flags.len() >= min_slices, "{} format-2 slices", flags.len());
    assert!(
        flags.iter().all(|&f| f & !POINTER32 == rule),
        "flags {flags:?}, expected {rule}"
    );
    let with = changed_after_prediction(old, new, rule, address, d);
    let without = changed_after_prediction(old, new, 0, address, d);
    assert!(
        with * 20 < without,
        "changed bytes: with the rule {with}, without {without}"
    );
    flags
}

/// Re-linked AArch64 firmware: 600 functions calling each other, one early function grown by
/// 40 bytes. The builder sees AArch64 calls, so slices after the growth are format-2 patches
/// whose header asks for AArch64 prediction (flags bits 2 and 3, not the Thumb bit 0), and
/// the AArch64 rule leaves under a twentieth of the changed bytes the Thumb rule leaves.
#[test]
fn moved_aarch64_code_is_predicted() {
    use otapack::otapack_core::predict::{A64_ADRP, A64_BRANCH, THUMB_BL};
    let sizes: Vec<usize> = (0..600).map(|i| 20 + (i * 7919) % 60).collect();
    let calls: Vec<(usize, usize, usize)> =
        (0..6000).map(|i| (i * 31, i * 17, i * 7 + 300)).collect();
    let old = code_image(&sizes, &calls, 0, 5, true);
    let mut bigger = sizes.clone();
    bigger[3] += 10;
    let new = code_image(&bigger, &calls, 0, 5, true);
    // Pointers are predicted too (the load address is 0).
    let flags = format2_flags(&old, &new);
    assert!(flags.len() >= 4, "{} format-2 slices", flags.len());
    for f in flags {
        assert_eq!(
            f & (A64_BRANCH | A64_ADRP | THUMB_BL),
            A64_BRANCH | A64_ADRP
        );
    }
    let a64 = changed_after_prediction(&old, &new, A64_BRANCH, 0, 40);
    let thumb = changed_after_prediction(&old, &new, THUMB_BL, 0, 40);
    assert!(
        a64 * 20 < thumb,
        "changed bytes: AArch64 rule {a64}, Thumb rule {thumb}"
    );
}

/// Where each function of `sizes` slots of `slot` bytes starts, laid end to end, and a zeroed
/// image that holds them all.
fn functions_of(sizes: &[usize], slot: usize) -> (Vec<usize>, Vec<u8>) {
    let starts: Vec<usize> = sizes
        .iter()
        .scan(0, |at, &s| {
            let start = *at;
            *at += slot * s;
            Some(start)
        })
        .collect();
    (starts, vec![0u8; slot * sizes.iter().sum::<usize>()])
}

/// An endless xorshift64 stream from `seed` (each function's filler depends on its index
/// alone, so growing one function leaves the others' bytes as they were).
fn xorshift(seed: u64) -> impl Iterator<Item = u64> {
    let mut r = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    std::iter::from_fn(move || {
        r ^= r << 13;
        r ^= r >> 7;
        r ^= r << 17;
        Some(r)
    })
}

/// A synthetic s390x image: functions of `sizes[f]` 6-byte slots each, random bytes that are
/// no relative-long instruction, and `BRASL`/`LARL` instructions (`calls`: function, slot,
/// target function) to other functions.
fn s390_image(sizes: &[usize], calls: &[(usize, usize, usize)]) -> Vec<u8> {
    let (starts, mut img) = functions_of(sizes, 6);
    for (f, &s) in sizes.iter().enumerate() {
        let bytes = &mut img[starts[f]..starts[f] + 6 * s];
        for (b, r) in bytes.iter_mut().zip(xorshift(f as u64 + 1)) {
            *b = (r as u8) & 0x7F; // never C0, C4 or C6
        }
    }
    for (k, &(f, slot, t)) in calls.iter().enumerate() {
        let (f, t) = (f % sizes.len(), t % sizes.len());
        let from = starts[f] + 6 * (slot % sizes[f]);
        let imm = ((starts[t] as i64 - from as i64) / 2) as i32;
        let op = if k % 2 == 0 {
            [0xC0, 0xE5]
        } else {
            [0xC0, 0x20]
        };
        img[from..from + 2].copy_from_slice(&op);
        img[from + 2..from + 6].copy_from_slice(&imm.to_be_bytes());
    }
    img
}

/// Re-linked s390x code: the builder sees `BRASL`s, predicts relative-long offsets alone
/// (flags exactly `S390_RIL`: no little-endian pointers), and the slices after the growth
/// are format-2 patches that leave under a twentieth of the changed bytes.
#[test]
fn moved_s390_code_is_predicted() {
    use otapack::otapack_core::predict::S390_RIL;
    let (old, new) = relinked(s390_image, 600, 4000);
    let flags = assert_predicted_with(&old, &new, S390_RIL, 0, 24, 4);
    assert!(flags.iter().all(|&f| f == S390_RIL), "flags {flags:?}");
}

/// A synthetic ESP32-style Xtensa image: a 4 KiB literal pool, then functions that start
/// with `ENTRY a1, 32` and hold `sizes[f]` 3-byte slots (padded to 4 bytes) of bytes that are
/// no L32R, CALLn or J, with `L32R`s into the pool and `CALL8`s to other functions (`refs`:
/// function, slot, target; even k a call, odd k a literal load).
fn xtensa_image(sizes: &[usize], refs: &[(usize, usize, usize)]) -> Vec<u8> {
    const POOL: usize = 4096;
    let safe = |r: u64| [0x20u8, 0x03, 0x48, 0x0C, 0x9A, 0x7E, 0xB2, 0xF0][(r % 8) as usize];
    let mut starts = Vec::new();
    let mut at = POOL;
    for &s in sizes {
        starts.push(at);
        at += (3 * (s + 1)).next_multiple_of(4);
    }
    let mut img = vec![0u8; at];
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    for b in img.iter_mut() {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        *b = safe(rng >> 8);
    }
    for (f, &s) in sizes.iter().enumerate() {
        img[starts[f]..starts[f] + 3].copy_from_slice(&[0x36, 0x41, 0x00]);
        // Each function's body depends on its index alone, so growing one leaves the others.
        let mut r = (f as u64 + 7).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let end = starts[f] + (3 * (s + 1)).next_multiple_of(4);
        for b in &mut img[starts[f] + 3..end] {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            *b = safe(r >> 8);
        }
    }
    for (k, &(f, slot, t)) in refs.iter().enumerate() {
        let f = f % sizes.len();
        let p = starts[f] + 3 * (1 + slot % sizes[f]);
        let ins = if k % 2 == 0 {
            let target = starts[t % sizes.len()] as i64;
            let off = ((target - (p as i64 & !3) - 4) / 4) as u32 & 0x3FFFF;
            [
                0x25 | ((off & 3) as u8) << 6,
                (off >> 2) as u8,
                (off >> 10) as u8,
            ]
        } else {
            let literal = 4 * (t % (POOL / 4)) as i64;
            let words = ((((p + 3) & !3) as i64 - literal) / 4) as u32;
            let imm = 65536 - words;
            [0x81, imm as u8, (imm >> 8) as u8]
        };
        img[p..p + 3].copy_from_slice(&ins);
    }
    img
}

/// Re-linked Xtensa code (a function grew by 12 bytes; the literal pool stayed): the builder
/// sees windowed-ABI functions, predicts L32R and CALLn offsets (flags XTENSA, with pointers),
/// and the Xtensa rule leaves under a twentieth of the changed bytes.
#[test]
fn moved_xtensa_code_is_predicted() {
    use otapack::otapack_core::predict::XTENSA;
    let (old, new) = relinked(xtensa_image, 500, 5000);
    assert_predicted_with(&old, &new, XTENSA, 0, 12, 3);
}

/// A synthetic MIPS16 image (loaded at `ADDRESS`): functions of `sizes[f]` 4-byte slots of
/// halfwords that are no JAL (and no Thumb `BL` half), with `JAL`s (`calls`: function, slot,
/// target function) to other functions' absolute addresses.
fn mips16_image(sizes: &[usize], calls: &[(usize, usize, usize)]) -> Vec<u8> {
    let (starts, mut img) = functions_of(sizes, 4);
    for (f, &s) in sizes.iter().enumerate() {
        let halves = img[starts[f]..starts[f] + 4 * s].chunks_mut(2);
        for (h, r) in halves.zip(xorshift(f as u64 + 3)) {
            h.copy_from_slice(&(0x2000 | (r as u16 & 0x07FF)).to_le_bytes());
        }
    }
    for &(f, slot, t) in calls {
        let (f, t) = (f % sizes.len(), t % sizes.len());
        let at = starts[f] + 4 * (slot % sizes[f]);
        let t26 = (ADDRESS + starts[t] as u32) >> 2;
        let h = 0x1800 | ((t26 >> 16) & 0x1F) << 5 | ((t26 >> 21) & 0x1F);
        img[at..at + 2].copy_from_slice(&(h as u16).to_le_bytes());
        img[at + 2..at + 4].copy_from_slice(&(t26 as u16).to_le_bytes());
    }
    img
}

/// Re-linked MIPS16 code: the builder counts the `JAL`s whose absolute targets lie in the
/// image, predicts them (flags MIPS16_JAL, with pointers at most), and the rule leaves under a
/// twentieth of the changed bytes.
#[test]
fn moved_mips16_code_is_predicted() {
    use otapack::otapack_core::predict::MIPS16_JAL;
    let (old, new) = relinked(mips16_image, 600, 4000);
    assert_predicted_with(&old, &new, MIPS16_JAL, ADDRESS, 16, 4);
}

/// A raw binary carries no load address (0), yet its literal pools point where it runs
/// (`ADDRESS`). The builder infers the pointer rule's address from how the moved words
/// changed: with it the pointers after a grown function are predicted, where address 0
/// predicts none of them; an image whose load address is known keeps it.
#[test]
fn pointer_address_is_inferred_for_a_raw_image() {
    use otapack::otapack_core::predict::POINTER32;
    let sizes: Vec<usize> = (0..300).map(|i| 20 + (i * 7919) % 60).collect();
    let old = thumb_image(&sizes, &[], 4, 9);
    let mut bigger = sizes.clone();
    bigger[2] += 6;
    let new = thumb_image(&bigger, &[], 4, 9);
    let matches = otapack::delta::slice_matches(&old, &new, 1 << 14).unwrap();
    let map = otapack::delta::address_map(old.len(), &matches);
    let changed = |address| changed_after_prediction(&old, &new, POINTER32, address, 24);
    let inferred = otapack::delta::pointer_address(&old, &new, &matches, &map, Some(0)).unwrap();
    let (at_zero, at_inferred) = (changed(0), changed(inferred));
    assert!(at_zero > 400, "{at_zero} bytes changed with address 0");
    assert_eq!(at_inferred, 0, "address {inferred:#x}");
    assert_eq!(
        otapack::delta::pointer_address(&old, &new, &matches, &map, Some(ADDRESS)),
        Some(ADDRESS)
    );
    // Unrelated images give no better address than the load address.
    let (a, b) = (noise(1 << 15, 1), noise(1 << 15, 2));
    let m = otapack::delta::slice_matches(&a, &b, 1 << 14).unwrap();
    let map = otapack::delta::address_map(a.len(), &m);
    assert_eq!(
        otapack::delta::pointer_address(&a, &b, &m, &map, Some(0)),
        Some(0)
    );
}

/// A format-2 header can make a short slice's op stream longer than the device allows
/// (`MAX_STREAM_FACTOR` bytes per slice byte); the builder's rebuild check refuses it, so such a
/// patch is never chosen, even though the ops themselves rebuild the slice.
#[test]
fn a_format_2_stream_over_the_length_bound_is_not_kept() {
    use otapack::otapack_core::patch::{encode_format2, PATCH_FORMAT_2};
    use otapack::otapack_core::predict::{Predict, POINTER32, THUMB_BL};
    let old = vec![0x11u8; 64];
    let slice = [0x11u8, 0x22];
    let ops = [Op {
        seek: 0,
        add: &[0],
        copy: &[0x22],
    }];
    let payload = |entries: &[(u32, u32)]| {
        let p = Predict::new(THUMB_BL | POINTER32, 0, entries).unwrap();
        zstd::bulk::compress(&encode_format2(&p, &ops), 3).unwrap()
    };
    let window = 0..old.len();
    // 3 header bytes + 5 op bytes: within 8 x 2.
    assert!(otapack::delta::patch_rebuilds(
        &old,
        &payload(&[]),
        PATCH_FORMAT_2,
        0,
        &slice,
        &window
    ));
    // Eight map entries (2 bytes each) make the stream 3 + 16 + 5 = 24 bytes > 16.
    let eight: Vec<(u32, u32)> = (1..=8).map(|i| (i, i)).collect();
    assert!(!otapack::delta::patch_rebuilds(
        &old,
        &payload(&eight),
        PATCH_FORMAT_2,
        0,
        &slice,
        &window
    ));
}

/// The zstd-ref example of docs/format.md §6.7: a 64-byte base, one 33-byte slice, and a
/// one-frame payload whose first match starts 23 bytes before the content, in the prefix.
const REF_BASE: &[u8; 64] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const REF_SLICE: &[u8; 33] = b"89abcdef0123456789abcdef01234567!";
const REF_FRAME: [u8; 20] = [
    0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x21, // magic; single segment, content size 33
    0x5d, 0x00, 0x00, // last compressed block, 11 bytes
    0x10, 0x38, 0x21, // 2 raw literals: "8", "!"
    0x02, 0x00, 0x33, 0x11, 0xd8, 0x6e, 0x5e, 0x01, // 2 sequences, predefined tables
];

/// A signed delta package of one zstd-ref slice over `REF_BASE` (1 KiB window).
fn ref_package(arg: u64, payload: &[u8], image: &[u8]) -> Vec<u8> {
    use otapack::otapack_core::wire::slice::SliceRepr;
    use sha2::{Digest, Sha256};
    let slices = vec![SliceRepr {
        index: 0,
        method: Method::ZstdRef,
        payload_offset: 0,
        payload_len: payload.len() as u32,
        arg,
        payload_sha256: Sha256::digest(payload).into(),
        slice_sha256: Sha256::digest(image).into(),
    }];
    let manifest = test_manifest(Kind::Delta, image, Some(REF_BASE), 10, slices)
        .emit()
        .unwrap();
    signed(&manifest, payload)
}

#[test]
fn zstd_ref_frame_pinned() {
    let trusted = [pubkey("test-ed25519").key];
    let strict = Policy::default();
    let whole = 64; // prefix: all of the base
    let pkg = ref_package(whole, &REF_FRAME, REF_SLICE);
    assert_eq!(
        verify_collect(&pkg, Some(REF_BASE), &trusted, &strict).unwrap(),
        REF_SLICE
    );
    let applied = otapack::apply::apply_streaming(&pkg, &trusted, &strict, Some(REF_BASE), 1);
    assert_eq!(applied.unwrap().image, REF_SLICE);
    // The builder writes the same frame for the same input (libzstd 1.5.7, level 19).
    assert_eq!(
        otapack::build::zstd_ref_compress(REF_BASE, REF_SLICE, 19, 10, 0).unwrap(),
        REF_FRAME
    );

    // Prefixes are read back from their end: base[1..64] serves as well as all of it.
    let pkg = ref_package(1 << 32 | 63, &REF_FRAME, REF_SLICE);
    assert_eq!(
        verify_collect(&pkg, Some(REF_BASE), &trusted, &strict).unwrap(),
        REF_SLICE
    );
    // The prefix one byte shorter: the match reads 23 bytes before the prefix's end, now
    // base[40..55] ("89ab…") instead of base[41..56], so the slice fails its digest.
    let pkg = ref_package(63, &REF_FRAME, REF_SLICE);
    assert_eq!(
        verify_collect(&pkg, Some(REF_BASE), &trusted, &strict),
        Err(Error::SliceDigest { slice: 0 })
    );
    // A prefix shorter than the match reaches back: refused while decoding.
    let pkg = ref_package(8, &REF_FRAME, REF_SLICE);
    assert_eq!(
        verify_collect(&pkg, Some(REF_BASE), &trusted, &strict),
        Err(Error::Decode { slice: 0 })
    );
    // A byte after the slice is whole, and a slice one byte longer than its frames.
    let pkg = ref_package(whole, &[&REF_FRAME[..], &[0x28]].concat(), REF_SLICE);
    assert_eq!(
        verify_collect(&pkg, Some(REF_BASE), &trusted, &strict),
        Err(Error::Decode { slice: 0 })
    );
    let longer = [&REF_SLICE[..], b"?"].concat();
    let pkg = ref_package(whole, &REF_FRAME, &longer);
    assert_eq!(
        verify_collect(&pkg, Some(REF_BASE), &trusted, &strict),
        Err(Error::Decode { slice: 0 })
    );
    // Two frames that together make the slice: the second one repeats it.
    let doubled = [&REF_SLICE[..], &REF_SLICE[..]].concat();
    let two = [&REF_FRAME[..], &REF_FRAME[..]].concat();
    let pkg = ref_package(whole, &two, &doubled);
    assert_eq!(
        verify_collect(&pkg, Some(REF_BASE), &trusted, &strict).unwrap(),
        doubled
    );
}

#[test]
fn zstd_ref_records_are_checked_at_parse() {
    let bad = |arg: u64| {
        let mut pkg = ref_package(64, &REF_FRAME, REF_SLICE);
        let table = 32 + 136 + Package::parse(&pkg).unwrap().manifest().tlv_len() as usize;
        pkg[table + 16..table + 24].copy_from_slice(&arg.to_le_bytes());
        fix_trailer(&mut pkg);
        Package::parse(&pkg).map(|_| ())
    };
    let rules = Err(Error::Malformed {
        what: "slice record fields break its method's rules",
    });
    assert_eq!(bad(64), Ok(()));
    assert_eq!(bad(1 << 32 | 63), Ok(()));
    assert_eq!(bad(1 << 32 | 64), rules); // one byte past the base
    assert_eq!(bad(0), rules); // an empty prefix
    assert_eq!(bad(64 << 32 | 1), rules);
    assert_eq!(bad(u64::MAX), rules);
}

/// An old image that starts like a zstd dictionary (magic `37 A4 30 EC`) must still be used as
/// raw prefix content: the builder skips libzstd's dictionary parsing for it, and whatever it
/// keeps rebuilds the image.
#[test]
fn an_old_image_that_starts_with_the_zstd_dictionary_magic_is_still_a_raw_prefix() {
    let text: Vec<u8> = (0..20_000u32)
        .flat_map(|i| format!("fn f{}() {{ call(0x{:x}); }}\n", i % 700, i * 7).into_bytes())
        .take(60_000)
        .collect();
    let old = [&[0x37, 0xA4, 0x30, 0xEC][..], &text].concat();
    let mut new = old.clone();
    new.splice(30_000..30_000, b"a new function body".iter().copied());
    for b in new.iter_mut().skip(40_000).step_by(97) {
        *b ^= 0x20;
    }
    let pkg = build_delta(
        &raw_image(old.clone()),
        &raw_image(new.clone()),
        &options(),
        &[&key("test-ed25519")],
    )
    .unwrap();
    let trusted = [pubkey("test-ed25519").key];
    assert_eq!(
        apply(&pkg, Some(&old), &trusted, &Policy::default()).unwrap(),
        new
    );
}
