//! Image loaders against real firmware: ELF and Intel HEX give exactly the raw images.

mod common;
use common::*;
use otapack::image::{load, ImageFormat, LoadOptions};

#[test]
fn elf_loads_like_objcopy_binary() {
    let elf = load(
        &testdata("firmware/opensbi-1.1-generic-fw_jump.elf"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(elf.format, ImageFormat::Elf);
    assert_eq!(elf.load_address, 0x8000_0000);
    let bin = std::fs::read(testdata("firmware/opensbi-1.1-generic-fw_jump.bin")).unwrap();
    assert_eq!(elf.data, bin);
    let old = load(
        &testdata("firmware/opensbi-0.9-generic-fw_jump.elf"),
        &LoadOptions::default(),
    )
    .unwrap();
    assert_eq!(old.load_address, 0x8000_0000);
}

#[test]
fn intel_hex_loads_like_the_documented_conversion() {
    for v in ["1.0.0", "1.0.1"] {
        let hex = testdata(&format!("firmware/microbit-micropython-{v}.hex"));
        // Sparse (flash + UICR far apart): refused without a range, with a hint.
        let err = load(&hex, &LoadOptions::default()).unwrap_err().to_string();
        assert!(err.contains("--address-range"), "{err}");
        let opts = LoadOptions {
            range: Some((0, 0x1000_0000)),
            erase_value: 0xFF,
            ..Default::default()
        };
        let img = load(&hex, &opts).unwrap();
        assert_eq!(img.format, ImageFormat::IntelHex);
        let bin =
            std::fs::read(testdata(&format!("firmware/microbit-micropython-{v}.bin"))).unwrap();
        assert_eq!(img.data, bin, "{v}");
    }
}

#[test]
fn raw_binary_takes_its_load_address_from_the_range_start() {
    let opts = LoadOptions {
        range: Some((0x1000, u64::MAX)),
        ..Default::default()
    };
    let img = load(&testdata("firmware/seabios-1.16.2-bios.bin"), &opts).unwrap();
    assert_eq!(img.load_address, 0x1000);
    assert_eq!(img.data.len(), 131072);
}
