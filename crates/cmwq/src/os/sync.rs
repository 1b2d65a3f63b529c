//! The synchronisation primitives the engine is built from.
//!
//! The engine's own waits (flushes, `cancel_sync`, drains) wait on a [`Completion`]; the queue
//! layer wraps each wait in [`crate::blocking`], so concurrency management sees it as a sleep.

use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Waker;
use std::thread::{self, Thread};

use parking_lot::Mutex;

/// A one-shot completion with a single waiter (the kernel's `struct completion` as used by
/// flush barriers and flushers).
///
/// The waiter is either the thread that created it ([`new`](Self::new), waits with
/// [`wait`](Self::wait)) or an async task ([`new_async`](Self::new_async), registers its
/// waker with [`register`](Self::register)). `complete` may be called from any thread, once
/// or more; the waiter sees `is_done` once it has been called.
///
/// `done` states: `false` (not completed) → `true` (completed; final).
#[derive(Debug)]
pub(crate) struct Completion {
    done: AtomicBool,
    waiter: Waiter,
}

#[derive(Debug)]
enum Waiter {
    Thread(Thread),
    /// The waker of the task that waits, if registered. A leaf lock; `Waker::wake`,
    /// `Waker::clone` and the waker's `Drop` (user code) never run under it.
    Task(Mutex<Option<Waker>>),
}

impl Completion {
    /// A completion whose waiter is the calling thread.
    pub(crate) fn new() -> Self {
        Self {
            done: AtomicBool::new(false),
            waiter: Waiter::Thread(thread::current()),
        }
    }

    /// A completion whose waiter is an async task (see [`register`](Self::register)).
    /// `complete` calls the task's `Waker::wake`, which is user code: complete it only with
    /// no engine lock held.
    pub(crate) fn new_async() -> Self {
        Self {
            done: AtomicBool::new(false),
            waiter: Waiter::Task(Mutex::new(None)),
        }
    }

    /// Marks it done and wakes the waiter.
    pub(crate) fn complete(&self) {
        // Release: pairs with the Acquire load in `is_done` (from `wait` or after `register`),
        // so everything the completing thread did before (the item's run, the counters it
        // retired) is visible to the waiter.
        self.done.store(true, Ordering::Release);
        match &self.waiter {
            Waiter::Thread(t) => t.unpark(),
            Waiter::Task(slot) => {
                // Taken after `done` is set: a `register` that stored its waker after this
                // take finds `done` set (see `register`).
                let waker = slot.lock().take();
                if let Some(w) = waker {
                    w.wake();
                }
            }
        }
    }

    /// Whether `complete` has been called.
    pub(crate) fn is_done(&self) -> bool {
        // Acquire: pairs with the Release store in `complete`.
        self.done.load(Ordering::Acquire)
    }

    /// For an async completion: stores `waker` (replacing an earlier one) and returns whether
    /// it is already done. No wake-up is lost: `complete` sets `done` before it takes the
    /// waker under the slot lock, so either it takes ours, or our lock (after its) orders its
    /// `done` store before our `is_done` load.
    pub(crate) fn register(&self, waker: &Waker) -> bool {
        let Waiter::Task(slot) = &self.waiter else {
            unreachable!("register on a thread completion")
        };
        if self.is_done() {
            return true;
        }
        let new = waker.clone();
        let old = slot.lock().replace(new);
        drop(old);
        self.is_done()
    }

    /// For an async completion: drops the registered waker, if any (the waiting future is
    /// gone). The completion itself stays wherever the engine listed it, harmless, until it
    /// is completed and dropped.
    pub(crate) fn unregister(&self) {
        if let Waiter::Task(slot) = &self.waiter {
            let old = slot.lock().take();
            drop(old);
        }
    }

    /// Waits until `complete` has been called. Must be called by the thread that created it.
    ///
    /// A plain wait: callers on worker threads wrap it in [`crate::blocking`] so that
    /// concurrency management knows the worker sleeps (the OS layer knows nothing of pools).
    pub(crate) fn wait(&self) {
        debug_assert!(
            matches!(&self.waiter, Waiter::Thread(t) if t.id() == thread::current().id()),
            "Completion::wait by a thread that is not its waiter"
        );
        // `park` may return spuriously, or because someone else unparked this thread: the
        // flag is the truth.
        while !self.is_done() {
            thread::park();
        }
    }
}

/// Atomics used by the data word and by [`Published`](crate::os::published::Published)
/// (swapped for loom's in `tests/loom_work_data.rs` and `tests/loom_published.rs`).
pub(crate) mod atomic {
    pub(crate) use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
}
