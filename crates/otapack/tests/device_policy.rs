//! Device policy (otapack_core::policy) as the streaming applier enforces it: a package for
//! other hardware or software, an older security counter, or an expired package is refused
//! right after the signatures, before any flash operation.

mod common;
use common::*;
use otapack::build::build_full;
use otapack::otapack_core::apply::Applier;
use otapack::otapack_core::error::Error;
use otapack::otapack_core::policy::DeviceInfo;
use otapack::otapack_core::verify::Policy;
use otapack::otapack_core::Package;
use otapack::sim::SimFlash;

/// Pushes `pkg` through an applier with `device` set; returns the result and the flash.
fn apply_with(pkg: &[u8], device: DeviceInfo<'_>) -> (Result<(), Error>, SimFlash<4, 4096>) {
    let p = Package::parse(pkg).unwrap();
    let m = p.manifest();
    let mut flash = SimFlash::<4, 4096>::new(m.image_size() as usize);
    let mut manifest_buf = vec![0u8; 32 + m.as_bytes().len()];
    let mut payload_buf = vec![0u8; 4096];
    let mut write_buf = [0u8; 256];
    let trusted = [pubkey("test-ed25519").key];
    let mut a = Applier::new(
        &trusted,
        Policy::default(),
        &mut flash,
        None,
        &mut manifest_buf,
        &mut payload_buf,
        &mut write_buf,
    )
    .unwrap();
    a.set_device(device);
    let r = a.push(pkg).and_then(|()| a.finish().map(|_| ()));
    (r, flash)
}

fn package(expires: Option<u64>) -> Vec<u8> {
    let mut o = options(); // software type "app", hardware board-a and board-b, counter 7
    o.slice_log2 = 12;
    o.zstd_window_log = 12;
    o.expires = expires;
    build_full(&raw_image(mixed_image()), &o, &[&key("test-ed25519")]).unwrap()
}

#[test]
fn matching_device_accepts() {
    let pkg = package(Some(1_800_000_000));
    let ok = DeviceInfo {
        hardware_version: Some("board-b"),
        software_type: Some("app"),
        security_counter: 7, // equal: accepted
        now: Some(1_799_999_999),
    };
    let (r, flash) = apply_with(&pkg, ok);
    r.unwrap();
    assert_eq!(&flash.data[..mixed_image().len()], &mixed_image()[..]);
    // A device that checks nothing accepts too.
    apply_with(&pkg, DeviceInfo::default()).0.unwrap();
}

#[test]
fn each_refusal_happens_before_any_flash_operation() {
    let pkg = package(Some(1_800_000_000));
    let good = DeviceInfo {
        hardware_version: Some("board-a"),
        software_type: Some("app"),
        security_counter: 7,
        now: Some(1_700_000_001),
    };
    let cases: [(DeviceInfo<'_>, Error); 5] = [
        (
            DeviceInfo {
                hardware_version: Some("board-c"),
                ..good
            },
            Error::WrongHardware,
        ),
        (
            DeviceInfo {
                software_type: Some("bootloader"),
                ..good
            },
            Error::WrongSoftwareType,
        ),
        (
            DeviceInfo {
                security_counter: 8,
                ..good
            },
            Error::Rollback {
                package: 7,
                device: 8,
            },
        ),
        (
            DeviceInfo {
                now: Some(1_800_000_000),
                ..good
            },
            Error::Expired {
                expires: 1_800_000_000,
                now: 1_800_000_000,
            },
        ),
        (
            DeviceInfo {
                now: Some(u64::MAX),
                ..good
            },
            Error::Expired {
                expires: 1_800_000_000,
                now: u64::MAX,
            },
        ),
    ];
    for (device, want) in cases {
        let (r, flash) = apply_with(&pkg, device);
        assert_eq!(r.unwrap_err(), want);
        assert_eq!(
            want.report_code(),
            -1,
            "policy refusals report 'upgrade failed'"
        );
        assert_eq!(flash.erases_total(), 0, "{want}: flash erased");
        assert_eq!(flash.writes, 0, "{want}: flash written");
    }
}

#[test]
fn no_expiry_and_no_hardware_list_mean_any() {
    let mut o = options();
    o.slice_log2 = 12;
    o.hardware_versions.clear();
    o.software_type = None;
    let pkg = build_full(&raw_image(mixed_image()), &o, &[&key("test-ed25519")]).unwrap();
    let d = DeviceInfo {
        hardware_version: Some("anything"),
        software_type: None,
        security_counter: 0,
        now: Some(u64::MAX),
    };
    apply_with(&pkg, d).0.unwrap();
    // But a device that names its software type refuses a package that names none.
    let typed = DeviceInfo {
        software_type: Some("app"),
        ..d
    };
    assert_eq!(
        apply_with(&pkg, typed).0.unwrap_err(),
        Error::WrongSoftwareType
    );
}
