//! The synchronisation primitives the engine is built from.
//!
//! The engine's own waits (flushes, `cancel_sync`, drains) wait on a [`Completion`]; the queue
//! layer wraps each wait in [`crate::blocking`], so concurrency management sees it as a sleep.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, Thread};

/// A one-shot completion with a single waiter (the kernel's `struct completion` as used by
/// flush barriers and flushers).
///
/// The waiter is the thread that created it. `complete` may be called from any thread, once
/// or more; `wait` returns once it has been called.
#[derive(Debug)]
pub(crate) struct Completion {
    done: AtomicBool,
    waiter: Thread,
}

impl Completion {
    /// A completion whose waiter is the calling thread.
    pub(crate) fn new() -> Self {
        Self {
            done: AtomicBool::new(false),
            waiter: thread::current(),
        }
    }

    /// Marks it done and wakes the waiter.
    pub(crate) fn complete(&self) {
        // Release: pairs with the Acquire load in `wait`, so everything the completing thread
        // did before (the item's run, the counters it retired) is visible to the waiter.
        self.done.store(true, Ordering::Release);
        self.waiter.unpark();
    }

    /// Whether `complete` has been called.
    pub(crate) fn is_done(&self) -> bool {
        // Acquire: pairs with the Release store in `complete`.
        self.done.load(Ordering::Acquire)
    }

    /// Waits until `complete` has been called. Must be called by the thread that created it.
    ///
    /// A plain wait: callers on worker threads wrap it in [`crate::blocking`] so that
    /// concurrency management knows the worker sleeps (the OS layer knows nothing of pools).
    pub(crate) fn wait(&self) {
        debug_assert_eq!(thread::current().id(), self.waiter.id());
        // `park` may return spuriously, or because someone else unparked this thread: the
        // flag is the truth.
        while !self.is_done() {
            thread::park();
        }
    }
}

/// Atomics used by the data word (swapped for loom's in `tests/loom_work_data.rs`).
pub(crate) mod atomic {
    pub(crate) use std::sync::atomic::{AtomicU64, Ordering};
}
