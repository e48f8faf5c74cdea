//! Power-fail safety of two-slot updates, proven by simulation: a power cut during every
//! flash operation of an update (each operation torn in several ways), then reboot and
//! resume. After every cut the device boots the old image intact or the new one, and every
//! update ends with the new image running, confirmed, its security counter stored.

mod common;
use common::*;
use otapack::build::{build_delta, build_full};
use otapack::otapack_core::error::Error as CoreError;
use otapack::otapack_core::state::{Mode, StateStore};
use otapack::simulate::{power_on, simulate, CutPlan, Device, SimOptions, SimReport};
use otapack::Error;

fn no_meter(f: &mut dyn FnMut()) -> otapack_probe::Measured {
    f();
    otapack_probe::Measured::default()
}

/// An old image and a new one that shares most of it (a delta has copy and patch slices).
fn pair() -> (Vec<u8>, Vec<u8>) {
    let old = mixed_image(); // 17 KiB: five 4 KiB slices, the last short
    let mut new = old.clone();
    new[100..200].fill(0x42); // patched in place
    new.splice(9000..9000, (0..300u32).map(|i| i as u8)); // inserted: later data shifts
    new.extend_from_slice(b"tail of the new image");
    (old, new)
}

fn opts() -> otapack::build::BuildOptions {
    let mut o = options();
    o.slice_log2 = 12;
    o.zstd_window_log = 12;
    o
}

fn every_cut(pkg: &[u8], base: Option<&[u8]>, torn: u32) -> SimReport {
    let trusted = [pubkey("test-ed25519").key];
    let o = SimOptions {
        cuts: CutPlan::Every,
        torn_permille: torn,
        chunk: 700,
        ..SimOptions::default()
    };
    let r = simulate(pkg, base, &trusted, &o, &no_meter).unwrap();
    assert!(r.flash_ops > 20, "{r:?}");
    assert_eq!(r.cuts_injected, r.flash_ops, "one run per operation");
    assert_eq!(
        r.cuts_survived, r.cuts_injected,
        "first failure: {:?}",
        r.first_failure
    );
    r
}

#[test]
fn full_package_survives_a_cut_at_every_flash_operation() {
    let (_, new) = pair();
    let pkg = build_full(&raw_image(new), &opts(), &[&key("test-ed25519")]).unwrap();
    for torn in [0, 500, 1000] {
        every_cut(&pkg, None, torn);
    }
}

#[test]
fn delta_package_survives_a_cut_at_every_flash_operation() {
    let (old, new) = pair();
    let pkg = build_delta(
        &raw_image(old.clone()),
        &raw_image(new),
        &opts(),
        &[&key("test-ed25519")],
    )
    .unwrap();
    for torn in [0, 250, 500, 1000] {
        every_cut(&pkg, Some(&old), torn);
    }
}

#[test]
fn a_second_cut_while_resuming_is_survived_too() {
    let (old, new) = pair();
    let pkg = build_delta(
        &raw_image(old.clone()),
        &raw_image(new),
        &opts(),
        &[&key("test-ed25519")],
    )
    .unwrap();
    let trusted = [pubkey("test-ed25519").key];
    for recut in [1, 2, 3, 7, 20] {
        let o = SimOptions {
            cuts: CutPlan::Every,
            recut: Some(recut),
            chunk: 500,
            ..SimOptions::default()
        };
        let r = simulate(&pkg, Some(&old), &trusted, &o, &no_meter).unwrap();
        assert_eq!(
            r.cuts_survived, r.cuts_injected,
            "recut {recut}: {:?}",
            r.first_failure
        );
    }
}

#[test]
fn long_update_survives_sampled_cuts() {
    // 64 slices of 4 KiB, cuts spread over the whole update. (State page roll-over under
    // cuts is tested exhaustively in otapack-core's state module, on 256-byte pages.)
    let image: Vec<u8> = (0..64 * 4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let pkg = build_full(&raw_image(image), &opts(), &[&key("test-ed25519")]).unwrap();
    let trusted = [pubkey("test-ed25519").key];
    let o = SimOptions {
        cuts: CutPlan::Sample(40),
        ..SimOptions::default()
    };
    let r = simulate(&pkg, None, &trusted, &o, &no_meter).unwrap();
    assert_eq!(r.cuts_injected, 40);
    assert_eq!(r.cuts_survived, 40, "{:?}", r.first_failure);
}

#[test]
fn corrupted_slice_stops_before_activation_and_old_image_boots() {
    let (old, new) = pair();
    let mut pkg = build_full(&raw_image(new), &opts(), &[&key("test-ed25519")]).unwrap();
    // Corrupt the last payload byte (inside slice payloads, before the trailer) and fix the
    // trailer MD5, as a transport that recomputes it would.
    let at = pkg.len() - 28 - 1;
    pkg[at] ^= 0x55;
    fix_trailer(&mut pkg);
    let trusted = [pubkey("test-ed25519").key];
    let mut dev = Device::new(&old, 32 * 1024);
    let err = power_on(&mut dev, &pkg, &trusted, &SimOptions::default(), false).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Package(CoreError::PayloadDigest { .. } | CoreError::Decode { .. })
        ),
        "{err}"
    );
    if let Error::Package(e) = err {
        assert_eq!(e.report_code(), -3);
    }
    assert_eq!(
        dev.booted(old.len()).unwrap(),
        old,
        "the old image still boots"
    );
    let state = StateStore::open(&mut dev.state).unwrap();
    assert_eq!(state.record().mode, Mode::TwoSlot, "not activated");
    assert_eq!(state.record().active_slot, 0);
}

#[test]
fn rollback_refused_after_confirm() {
    let (old, new) = pair();
    let trusted = [pubkey("test-ed25519").key];
    let mut o = opts();
    o.security_counter = 9;
    let newer = build_full(&raw_image(new.clone()), &o, &[&key("test-ed25519")]).unwrap();
    let mut dev = Device::new(&old, 32 * 1024);
    power_on(&mut dev, &newer, &trusted, &SimOptions::default(), false).unwrap();
    {
        let state = StateStore::open(&mut dev.state).unwrap();
        assert_eq!(state.record().security_counter, 9);
        assert_eq!(state.record().active_slot, 1);
    }
    // An older package (counter 8) is refused before anything is written.
    o.security_counter = 8;
    let older = build_full(&raw_image(old.clone()), &o, &[&key("test-ed25519")]).unwrap();
    let writes_before = dev.slots[0].writes + dev.slots[1].writes + dev.state.writes;
    let err = power_on(&mut dev, &older, &trusted, &SimOptions::default(), false).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Package(CoreError::Rollback {
                package: 8,
                device: 9
            })
        ),
        "{err}"
    );
    assert_eq!(
        dev.slots[0].writes + dev.slots[1].writes + dev.state.writes,
        writes_before,
        "nothing written"
    );
}

fn in_place_pkg(old: &[u8], new: &[u8]) -> Vec<u8> {
    otapack::build::build_in_place(
        &raw_image(old.to_vec()),
        &raw_image(new.to_vec()),
        &opts(),
        4096,
        &[&key("test-ed25519")],
    )
    .unwrap()
}

#[test]
fn in_place_delta_survives_a_cut_at_every_flash_operation() {
    let (old, new) = pair();
    let pkg = in_place_pkg(&old, &new);
    for torn in [0, 500, 1000] {
        let r = every_cut(&pkg, Some(&old), torn);
        assert_eq!(r.layout, "in-place");
        assert_eq!(r.scratch_bytes, 4096);
    }
    // And when the new image is shorter than the old one.
    let shorter = new[..9000].to_vec();
    every_cut(&in_place_pkg(&old, &shorter), Some(&old), 500);
}

#[test]
fn in_place_survives_a_second_cut_while_resuming() {
    let (old, new) = pair();
    let pkg = in_place_pkg(&old, &new);
    let trusted = [pubkey("test-ed25519").key];
    for recut in [1, 3, 11] {
        let o = SimOptions {
            cuts: CutPlan::Every,
            recut: Some(recut),
            ..SimOptions::default()
        };
        let r = simulate(&pkg, Some(&old), &trusted, &o, &no_meter).unwrap();
        assert_eq!(
            r.cuts_survived, r.cuts_injected,
            "recut {recut}: {:?}",
            r.first_failure
        );
    }
}

#[test]
fn in_place_corrupted_slice_is_refused_before_the_running_image_is_touched() {
    let (old, new) = pair();
    let mut pkg = in_place_pkg(&old, &new);
    let at = pkg.len() - 28 - 1; // the last payload byte
    pkg[at] ^= 0x01;
    fix_trailer(&mut pkg);
    let trusted = [pubkey("test-ed25519").key];
    let slot = old.len().div_ceil(4096) * 4096 + 4096;
    let mut dev = Device::in_place(&old, slot, pkg.len(), 4096);
    let err = power_on(&mut dev, &pkg, &trusted, &SimOptions::default(), false).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Package(CoreError::PayloadDigest { .. } | CoreError::Decode { .. })
        ),
        "{err}"
    );
    assert_eq!(
        &dev.slots[0].data[..old.len()],
        &old[..],
        "running image untouched"
    );
    assert_eq!(dev.slots[0].writes, 0);
    assert_eq!(dev.slots[0].erases_total(), 0);
    assert_eq!(
        dev.scratch.writes, 0,
        "nothing decoded into the scratch either"
    );
}
