//! Shared by the benches: a global allocator that counts live heap bytes.
//!
//! The benches *measure* what a series costs instead of trusting each
//! component's own estimate. Steady-state scoring does not allocate, so the
//! counting never touches a timed path. (Not a bench target itself: cargo
//! only discovers `benches/*.rs` and `benches/*/main.rs`.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Heap bytes currently allocated by this process, counted by [`Counting`].
static LIVE_HEAP: AtomicUsize = AtomicUsize::new(0);

/// The system allocator plus a count of live bytes.
pub struct Counting;

// SAFETY: every call is forwarded unchanged to `System`; the counter is
// only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_HEAP.fetch_add(new_size, Ordering::Relaxed);
        LIVE_HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap bytes live right now (allocator overhead not included).
pub fn live_heap() -> usize {
    LIVE_HEAP.load(Ordering::Relaxed)
}
