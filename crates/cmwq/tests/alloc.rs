//! Semantic 12: queueing an existing item allocates nothing on the calling thread.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use cmwq::{online_cpus, Work, Workqueue, WqFlags};
use common::{unique, with_deadline, Blocker};

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
fn the_counter_counts() {
    let (v, n) = allocations_in(|| vec![1u8; 16]);
    drop(v);
    assert!(n >= 1, "the counting allocator does not see allocations");
    let (_, n) = allocations_in(|| 1 + 1);
    assert_eq!(n, 0);
}

fn flush(item: &Work) {
    let i = item.clone();
    with_deadline("flush item", move || i.flush());
}

fn queue_path_allocates_nothing(wq: Workqueue, on_cpu: Option<usize>) {
    let item = Work::new(|_| {
        std::hint::black_box(0);
    });
    let queue = |wq: &Workqueue| match on_cpu {
        Some(cpu) => wq.queue_on(cpu, &item).unwrap(),
        None => wq.queue(&item),
    };
    // Warm-up: create workers, lazily initialised state, thread-locals. The calling thread may
    // migrate between CPUs, so every CPU's pool gets its workers first.
    for _ in 0..5 {
        for cpu in online_cpus() {
            assert!(wq.queue_on(cpu, &item).unwrap());
            flush(&item);
        }
    }
    for _ in 0..20 {
        assert!(queue(&wq));
        flush(&item);
    }
    let mut total = 0;
    for _ in 0..200 {
        let (queued, n) = allocations_in(|| queue(&wq));
        assert!(queued);
        total += n;
        flush(&item);
    }
    assert_eq!(
        total,
        0,
        "queueing an existing item allocated {total} times over 200 calls ({} / {:?})",
        wq.name(),
        on_cpu
    );
}

#[test]
fn queue_allocates_nothing_bound() {
    queue_path_allocates_nothing(
        Workqueue::new("alloc-b", WqFlags::empty(), 0).unwrap(),
        None,
    );
}

#[test]
fn queue_on_allocates_nothing_bound() {
    for cpu in online_cpus() {
        queue_path_allocates_nothing(
            Workqueue::new("alloc-bo", WqFlags::empty(), 0).unwrap(),
            Some(cpu),
        );
    }
}

#[test]
fn queue_allocates_nothing_unbound() {
    queue_path_allocates_nothing(
        Workqueue::new("alloc-u", WqFlags::UNBOUND, 0).unwrap(),
        None,
    );
}

#[test]
fn queue_allocates_nothing_system_wq() {
    queue_path_allocates_nothing(cmwq::system_wq().clone(), None);
}

/// The item is kept pending behind a blocker (max_active 1): queueing it (into the inactive
/// list) and queueing it again (the `false` path) allocate nothing.
fn pending_paths_allocate_nothing(wq: Workqueue) {
    let cpu = online_cpus()[0];
    let item = Work::new(|_| {
        std::hint::black_box(0);
    });
    for c in online_cpus() {
        assert!(wq.queue_on(c, &item).unwrap());
        flush(&item);
    }
    let mut inactive_total = 0;
    let mut pending_total = 0;
    for round in 0..25 {
        let blocker = Blocker::new();
        assert!(wq.queue_on(cpu, &blocker.item).unwrap());
        blocker.started.wait();
        // queue_on: a bound queue's limit is per CPU, so target the blocked CPU.
        let (first, n1) = allocations_in(|| wq.queue_on(cpu, &item).unwrap());
        let (again, n2) = allocations_in(|| wq.queue(&item));
        let (again_on, n3) = allocations_in(|| wq.queue_on(cpu, &item).unwrap());
        let (again_try, n4) = allocations_in(|| wq.try_queue(&item));
        blocker.gate.open();
        flush(&item);
        flush(&blocker.item);
        assert!(first);
        assert!(!again && !again_on);
        assert!(matches!(again_try, Ok(false)));
        // The first rounds are warm-up.
        if round >= 5 {
            inactive_total += n1;
            pending_total += n2 + n3 + n4;
        }
    }
    assert_eq!(
        pending_total,
        0,
        "queueing an already pending item allocated ({})",
        wq.name()
    );
    assert_eq!(
        inactive_total,
        0,
        "queueing an item that has to wait for max_active allocated ({})",
        wq.name()
    );
}

#[test]
fn pending_paths_allocate_nothing_bound() {
    pending_paths_allocate_nothing(Workqueue::new("alloc-pb", WqFlags::empty(), 1).unwrap());
}

#[test]
fn pending_paths_allocate_nothing_unbound() {
    pending_paths_allocate_nothing(Workqueue::new("alloc-pu", WqFlags::UNBOUND, 1).unwrap());
}

/// `spawn` makes one allocation on the calling thread (the item, closure and result slot in
/// one `Arc`), queueing and `join` none, in steady state.
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
