//! The size probes' global allocator: a bump allocator over a static 256 KiB heap that never
//! frees (the probes only need to link and measure code size). Shared by `bin/size-probe.rs`
//! and `bin/size-probe-apply.rs`.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const HEAP_SIZE: usize = 256 * 1024;

struct Heap(UnsafeCell<[u8; HEAP_SIZE]>);
// SAFETY: only the allocator touches it, handing out disjoint blocks.
unsafe impl Sync for Heap {}
static HEAP: Heap = Heap(UnsafeCell::new([0; HEAP_SIZE]));

/// The simplest allocator: bump, never free.
struct Bump(AtomicUsize);

#[global_allocator]
static ALLOC: Bump = Bump(AtomicUsize::new(0));

// SAFETY: blocks are disjoint: each starts at or after the end of the previous one.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = HEAP.0.get() as usize;
        let start = (base + self.0.load(Relaxed)).next_multiple_of(layout.align()) - base;
        match start.checked_add(layout.size()) {
            Some(end) if end <= HEAP_SIZE => {
                self.0.store(end, Relaxed);
                (base + start) as *mut u8
            }
            _ => core::ptr::null_mut(),
        }
    }
    unsafe fn dealloc(&self, _: *mut u8, _: Layout) {}
}
