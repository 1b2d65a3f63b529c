//! `spawn` makes one allocation on the calling thread (the item, closure and result slot in one
//! `Arc`), queueing and `join` none, in steady state.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cmwq::{Workqueue, WqFlags};
use common::unique;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

fn note_alloc() {
    let _ = MEASURING.try_with(|m| {
        if m.get() {
            let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
        }
    });
}

struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counters
// are const-initialised thread-locals without destructors, so touching them never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged; `ptr` was allocated by `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` and returns how many allocations it made on this thread.
fn allocations_in<R>(f: impl FnOnce() -> R) -> (R, u64) {
    ALLOCS.with(|a| a.set(0));
    MEASURING.with(|m| m.set(true));
    let r = f();
    MEASURING.with(|m| m.set(false));
    (r, ALLOCS.with(|a| a.get()))
}

#[test]
fn spawn_allocates_once() {
    let wq = Workqueue::new(&unique("spawn-alloc"), WqFlags::UNBOUND, 0).unwrap();
    let payload = [7u64; 4];
    // Warm up: workers, thread handles, lazily made structures.
    for _ in 0..50 {
        let h = wq.spawn(move || payload.iter().sum::<u64>());
        common::wait_for("warm-up", || h.is_finished());
        assert_eq!(h.join().unwrap(), 28);
    }
    let mut best = u64::MAX;
    for _ in 0..20 {
        let (h, n) = allocations_in(|| wq.spawn(move || payload.iter().sum::<u64>()));
        common::wait_for("finished", || h.is_finished());
        let (r, j) = allocations_in(|| h.join());
        assert_eq!(r.unwrap(), 28);
        assert_eq!(j, 0, "join of a finished item allocates nothing");
        best = best.min(n);
    }
    assert_eq!(best, 1, "one allocation per spawn in steady state");
}
