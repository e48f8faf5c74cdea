//! Measures the device applier's heap: a counting global allocator (`otapack-probe`, which
//! counts a `realloc`'s old and new blocks as both live) records the peak while the applier
//! runs, apart from the caller-provided buffers. Checks it against the bound the manifest
//! records (`otapack_core::ram`), on every shipped pair at several settings, and prints the
//! figures the README reports.

mod common;
use common::*;
use otapack::build::{build_delta, build_full, BuildOptions};
use otapack::image::{load, Image, LoadOptions};
use otapack::otapack_core::ram;
use otapack::otapack_core::Package;
use otapack_probe::{measure, CountingAlloc};

#[global_allocator]
static A: CountingAlloc = CountingAlloc;

/// Peak heap the applier itself allocates while applying `pkg` in 1 KiB chunks.
fn applier_heap(pkg: &[u8], base: Option<&[u8]>) -> u64 {
    let trusted = [pubkey("test-ed25519").key];
    let mut device = ExactDevice::for_package(pkg);
    let measured = measure(&mut || device.apply(pkg, base, &trusted, 1024).unwrap());
    measured
        .peak_heap
        .expect("the counting allocator is installed")
}

fn pairs() -> Vec<(&'static str, Image, Image)> {
    let l = |f: &str| load(&testdata(&format!("firmware/{f}")), &LoadOptions::default()).unwrap();
    vec![
        (
            "micro:bit",
            l("microbit-micropython-1.0.0.bin"),
            l("microbit-micropython-1.0.1.bin"),
        ),
        (
            "SeaBIOS",
            l("seabios-1.16.2-bios.bin"),
            l("seabios-1.16.3-bios.bin"),
        ),
        (
            "OpenSBI",
            l("opensbi-0.9-generic-fw_jump.elf"),
            l("opensbi-1.1-generic-fw_jump.elf"),
        ),
    ]
}

#[test]
fn applier_heap_stays_within_the_recorded_bound() {
    let k = key("test-ed25519");
    println!("| pair | kind | window / block / segment | package | peak heap | heap bound | device RAM (manifest) |");
    println!("|---|---|---|---:|---:|---:|---:|");
    // (window log, block log, segment log), or None for the default: fitted to 64 KiB (for
    // these pairs a 16 KiB window, 8 KiB blocks, 4 KiB segments); then the fixed default
    // before the fit, the fit for raw-heavy images such as OVMF (4 KiB window and blocks,
    // 16 KiB segments), the default before otapack-zstd (32 KiB window, no segments), and a
    // small setting.
    for setting in [
        None,
        Some((13u8, 0u8, 12u8)),
        Some((12, 12, 14)),
        Some((15, 0, 0)),
        Some((12, 10, 12)),
    ] {
        for (name, old, new) in pairs() {
            let mut o = BuildOptions::new("1");
            match setting {
                Some((w, b, s)) => {
                    o.zstd_window_log = w;
                    o.zstd_block_log = b;
                    o.segment_log = s;
                }
                None => o
                    .fit_device_ram(otapack::build::DEFAULT_DEVICE_RAM, new.data.len() as u64)
                    .unwrap(),
            }
            let (w, b, s) = (o.zstd_window_log, o.zstd_block_log, o.segment_log);
            for (kind, pkg, base) in [
                ("full", build_full(&new, &o, &[&k]).unwrap(), None),
                (
                    "delta",
                    build_delta(&old, &new, &o, &[&k]).unwrap(),
                    Some(&old.data[..]),
                ),
            ] {
                let heap = applier_heap(&pkg, base);
                let p = Package::parse(&pkg).unwrap();
                let m = p.manifest();
                let need = ram::needed(&m);
                println!(
                    "| {name} | {kind} | {} / {} / {} | {} | {heap} | {} | {} |",
                    1u32 << w,
                    if b == 0 {
                        "-".into()
                    } else {
                        (1u32 << b).to_string()
                    },
                    if s == 0 {
                        "-".into()
                    } else {
                        (1u32 << s).to_string()
                    },
                    pkg.len(),
                    need.decoder_heap,
                    m.device_ram(),
                );
                assert!(
                    heap <= need.decoder_heap,
                    "{name} {kind} {w}/{b}/{s}: heap {heap} above the bound {}",
                    need.decoder_heap
                );
                // The decoder allocates its fixed buffers and nothing else, so the bound is
                // tight: only `ram::ZSTD_STATE`'s rounding separates them.
                assert!(
                    heap + 512 > need.decoder_heap,
                    "{name} {kind} {w}/{b}/{s}: heap {heap} far below the bound {}",
                    need.decoder_heap
                );
                if s != 0 {
                    assert!(need.payload_buffer <= 1 << s);
                }
            }
        }
    }
}
