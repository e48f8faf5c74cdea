//! Measures what device code uses when run on the host: peak heap (a counting global
//! allocator) and peak stack (painting). `otapack simulate` reports these figures.
//!
//! - Heap: install [`CountingAlloc`] as the binary's `#[global_allocator]`; then [`measure`]
//!   reports the peak bytes allocated during a closure, above what was allocated before it.
//!   A `realloc` counts the old and the new block as both live at its peak, as on a device
//!   allocator that cannot grow a block in place.
//!   Without it installed, the heap figure is `None`.
//! - Stack: [`measure`] fills [`STACK_PAINT`] bytes below its frame with a pattern (the frame
//!   of a call that returns), runs the closure at the same depth, then finds the deepest byte
//!   that changed. The figure is the depth the closure reached below `measure`'s frame,
//!   including the harness's small call frames. Deeper use than `STACK_PAINT` is reported as
//!   `STACK_PAINT`.
//!
//! This is the crate's only unsafe code: the allocator forwards to `System`, and the scan
//! reads stack bytes below the current frame with volatile reads.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Bytes of stack painted and scanned by [`measure`].
pub const STACK_PAINT: usize = 256 * 1024;
const PATTERN: u8 = 0xA5;

/// A global allocator that counts live bytes and their peak.
pub struct CountingAlloc;

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        INSTALLED.store(true, SeqCst);
        let now = CURRENT.fetch_add(l.size(), SeqCst) + l.size();
        PEAK.fetch_max(now, SeqCst);
        // SAFETY: forwards the caller's layout to the system allocator unchanged.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CURRENT.fetch_sub(l.size(), SeqCst);
        // SAFETY: `p` came from `System.alloc` with this layout (see `alloc`).
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        INSTALLED.store(true, SeqCst);
        // Counted as a small-device allocator does it: a new block, a copy, then the old block
        // freed, so both are live at the peak.
        let before = CURRENT.fetch_add(new, SeqCst);
        PEAK.fetch_max(before + new, SeqCst);
        CURRENT.fetch_sub(l.size(), SeqCst);
        // SAFETY: `p` and `l` are the caller's, valid for `System` (see `alloc`).
        unsafe { System.realloc(p, l, new) }
    }
}

/// What a closure used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Measured {
    /// Peak heap bytes above what was live when the closure started; `None` if
    /// [`CountingAlloc`] is not the global allocator.
    pub peak_heap: Option<u64>,
    /// Peak stack bytes below the caller's frame.
    pub peak_stack: u64,
}

/// Paints `STACK_PAINT` bytes in its own frame (just below the caller's) and returns their
/// address range.
#[inline(never)]
fn paint() -> (usize, usize) {
    let mut a = [PATTERN; STACK_PAINT];
    black_box(&mut a);
    let lo = a.as_ptr() as usize;
    (lo, lo + STACK_PAINT)
}

/// Bytes between the deepest byte no longer holding the pattern and the top of the painted
/// range: the stack depth reached since [`paint`] returned.
#[inline(never)]
fn scan(lo: usize, hi: usize) -> usize {
    let mut at = lo;
    while at < hi {
        // SAFETY: `lo..hi` was `paint`'s array, on this thread's stack below the current
        // frame of `measure`: mapped memory that deeper calls reuse. It is read as plain bytes
        // with volatile reads and never written.
        let b = unsafe { std::ptr::read_volatile(at as *const u8) };
        if b != PATTERN {
            break;
        }
        at += 1;
    }
    hi - at
}

#[inline(never)]
fn run(f: &mut dyn FnMut()) {
    f();
}

/// Runs `f` once and reports its peak heap and stack.
pub fn measure(f: &mut dyn FnMut()) -> Measured {
    let (lo, hi) = paint();
    let base = CURRENT.load(SeqCst);
    PEAK.store(base, SeqCst);
    run(f);
    let peak_heap = PEAK.load(SeqCst).saturating_sub(base) as u64;
    let peak_stack = scan(lo, hi) as u64;
    Measured {
        peak_heap: INSTALLED.load(SeqCst).then_some(peak_heap),
        peak_stack,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static A: CountingAlloc = CountingAlloc;

    #[inline(never)]
    fn uses_stack(n: usize) -> u8 {
        let mut a = [0u8; 48 * 1024];
        for (i, x) in a.iter_mut().enumerate().take(n) {
            *x = i as u8;
        }
        black_box(&mut a);
        a[n / 2]
    }

    #[test]
    fn sees_heap_and_stack() {
        let m = measure(&mut || {
            let v = black_box(vec![1u8; 100_000]);
            drop(v);
            black_box(uses_stack(48 * 1024));
        });
        let heap = m.peak_heap.unwrap();
        assert!((100_000..110_000).contains(&heap), "{heap}");
        assert!(
            (48 * 1024..64 * 1024).contains(&(m.peak_stack as usize)),
            "{}",
            m.peak_stack
        );
        let small = measure(&mut || {
            black_box(1 + 1);
        });
        assert_eq!(small.peak_heap, Some(0));
        assert!(small.peak_stack < 4096, "{}", small.peak_stack);
    }
}
