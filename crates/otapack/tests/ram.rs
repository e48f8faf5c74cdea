//! Measures the device applier's heap: a counting global allocator records the peak while the
//! applier runs, apart from the caller-provided buffers. Prints the figures (see README) and
//! guards them against regressions.

mod common;
use common::*;
use otapack::apply::HostFlash;
use otapack::build::{build_delta, build_full, BuildOptions};
use otapack::image::{load, LoadOptions};
use otapack::otapack_core::apply::Applier;
use otapack::otapack_core::patch::BaseImage;
use otapack::otapack_core::verify::Policy;
use otapack::otapack_core::Package;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(l.size(), SeqCst) + l.size();
        PEAK.fetch_max(now, SeqCst);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CURRENT.fetch_sub(l.size(), SeqCst);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

/// Peak heap the applier itself allocates while applying `pkg`, and the caller buffers' sizes.
fn measure(pkg: &[u8], base: Option<&[u8]>) -> (usize, usize, usize) {
    let p = Package::parse(pkg).unwrap();
    let m = p.manifest();
    let mut flash = HostFlash::new(m.image_size() as usize);
    let mut manifest_buf = vec![0u8; Applier::<&mut HostFlash>::manifest_buffer_len(pkg).unwrap()];
    let mut payload_buf = vec![0u8; Applier::<&mut HostFlash>::payload_buffer_len(&m).max(1)];
    let mut write_buf = [0u8; 256];
    let trusted = [pubkey("test-ed25519").key];
    let mut base = base;
    let b = base.as_mut().map(|b| b as &mut dyn BaseImage);
    let before = CURRENT.load(SeqCst);
    PEAK.store(before, SeqCst);
    let mut a = Applier::new(
        &trusted,
        Policy::default(),
        &mut flash,
        b,
        &mut manifest_buf,
        &mut payload_buf,
        &mut write_buf,
    )
    .unwrap();
    for chunk in pkg.chunks(1024) {
        a.push(chunk).unwrap();
    }
    a.finish().unwrap();
    let peak = PEAK.load(SeqCst) - before;
    (peak, manifest_buf.len(), payload_buf.len())
}

#[test]
fn applier_heap_is_bounded_by_the_window_not_the_image() {
    let k = key("test-ed25519");
    let old = load(
        &testdata("firmware/microbit-micropython-1.0.0.bin"),
        &LoadOptions::default(),
    )
    .unwrap();
    let new = load(
        &testdata("firmware/microbit-micropython-1.0.1.bin"),
        &LoadOptions::default(),
    )
    .unwrap();
    println!(
        "| package | slice | zstd window | applier peak heap | manifest buffer | payload buffer |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (slice_log2, window_log) in [(16u8, 15u8), (16, 12), (14, 12), (12, 10)] {
        let mut o = BuildOptions::new("1.0.1");
        o.slice_log2 = slice_log2;
        o.zstd_window_log = window_log;
        for (kind, pkg, base) in [
            ("full", build_full(&new, &o, &[&k]).unwrap(), None),
            (
                "delta",
                build_delta(&old, &new, &o, &[&k]).unwrap(),
                Some(&old.data[..]),
            ),
        ] {
            let (peak, mbuf, pbuf) = measure(&pkg, base);
            println!(
                "| micro:bit 1.0.1 {kind} | {} KiB | {} KiB | {peak} | {mbuf} | {pbuf} |",
                1 << (slice_log2 - 10),
                1 << window_log >> 10
            );
            // ruzstd's buffers grow to several windows; the image (231 KB) must not matter.
            let window = 1usize << window_log;
            assert!(
                peak <= 8 * window + 48 * 1024,
                "{kind} {slice_log2}/{window_log}: peak heap {peak}"
            );
        }
    }
}
