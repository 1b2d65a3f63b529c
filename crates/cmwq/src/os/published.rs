//! A value that a writer replaces now and then and that readers load without a lock: the
//! stand-in for the kernel's RCU-protected pointers (an unbound workqueue's `cpu_pwq` table,
//! which `apply_workqueue_attrs` replaces).
//!
//! There is no grace period here: every value ever published is kept (by an `Arc` in
//! [`Published::kept`]) until the `Published` itself drops, so a reference a reader got from
//! [`Published::get`] stays valid for as long as it borrows the `Published`. The cost is one
//! small allocation per replacement, kept for the owner's life; replacements are rare
//! (attribute changes), so that is the trade made for a read that is one Acquire load.
//!
//! The atomics come from `crate::os::sync::atomic`, so that `tests/loom_published.rs` can
//! compile this very file against loom's.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::os::sync::atomic::{AtomicPtr, Ordering};

/// The pointer and the values it may point at.
///
/// | `current` | meaning | written by |
/// |---|---|---|
/// | the first value | as created | [`new`](Self::new) |
/// | a later value | the latest [`publish`](Self::publish) | `publish` (Release) |
///
/// `current` always points into an `Arc` held by `kept`, never at anything freed.
pub(crate) struct Published<T> {
    /// Release store in `publish`, Acquire load in `get`: pairs so that a reader that loads
    /// the new pointer sees every write made to the value before it was published.
    current: AtomicPtr<T>,
    /// Every value published, oldest first (the current one last). Only `publish` locks
    /// it; a leaf lock.
    kept: Mutex<Vec<Arc<T>>>,
}

impl<T: Send + Sync> Published<T> {
    /// `value` published.
    pub(crate) fn new(value: T) -> Self {
        let value = Arc::new(value);
        Published {
            current: AtomicPtr::new(Arc::as_ptr(&value).cast_mut()),
            kept: Mutex::new(vec![value]),
        }
    }

    /// The value published last (or one published just before, for a reader racing with a
    /// `publish`).
    #[inline]
    pub(crate) fn get(&self) -> &T {
        // Acquire: pairs with the Release store of `publish`.
        let p = self.current.load(Ordering::Acquire);
        // SAFETY: `p` came from `Arc::as_ptr` of an `Arc` that `kept` holds until `self`
        // drops (nothing is ever taken out of `kept`), so the value lives at least as long as
        // the borrow of `self`; it is only ever read through shared references (`T: Sync`),
        // and the Acquire load makes its initialisation visible here.
        unsafe { &*p }
    }

    /// Makes `value` the current one. Callers serialise their publishes (the workqueue
    /// mutex); a reader sees either the old value or the new one, both valid.
    pub(crate) fn publish(&self, value: T) {
        let value = Arc::new(value);
        let p = Arc::as_ptr(&value).cast_mut();
        self.kept.lock().push(value);
        // Release: pairs with the Acquire load of `get`.
        self.current.store(p, Ordering::Release);
    }
}

#[cfg(all(test, not(cmwq_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_reference_stays_valid_across_publishes() {
        let p = Published::new(vec![1, 2, 3]);
        let first = p.get();
        p.publish(vec![4]);
        p.publish(vec![5, 6]);
        assert_eq!(first, &[1, 2, 3]);
        assert_eq!(p.get(), &[5, 6]);
        assert_eq!(p.kept.lock().len(), 3);
    }
}
