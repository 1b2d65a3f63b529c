//! One-shot closures with results: [`spawn`], [`Workqueue::spawn`], [`WorkHandle`], and
//! borrowing scopes ([`scope`], [`Workqueue::scope`]).
//!
//! This layer is a client of the engine, not part of it: a spawned closure is an ordinary
//! work item (a [`WorkItem`](crate::WorkItem) embedding its [`WorkField`](crate::WorkField))
//! queued with [`Workqueue::try_queue`] and cancelled with [`Work::cancel`](crate::Work::cancel).
//! It may use the item layer (`work/`) and the queue layer (`queue/`): their public
//! operations, and for the awaitable waits the registration half of the item flush
//! (`queue::flush::register_flush_work`), the flush/drain entry points and the OS layer's
//! async `Completion`; plus [`blocking`](crate::blocking) around its own waits. Nothing in
//! the engine uses it. Its users are the crate's public API (re-exported from the crate root) and the
//! programs built on it.
//!
//! - [`handle`]: [`WorkHandle`] (join, cancel, `Future`) and [`JoinError`].
//! - [`task`]: the spawned item: one allocation holding the work field, the closure and the
//!   result slot, and the slot's state table.
//! - [`scope`](mod@scope): scopes whose items may borrow from the caller's stack.
//! - [`wait`]: awaitable flushes and cancels ([`WorkWait`], [`WorkqueueWait`]).
//!
//! No user code (the closure, the `Drop` of its captures or of its result, `Waker::wake` and
//! `Waker::clone`) runs while any lock is held, the engine's or this layer's own.

pub(crate) mod handle;
pub(crate) mod scope;
pub(crate) mod task;
pub(crate) mod wait;

pub use handle::{JoinError, WorkHandle};
pub use scope::{Scope, ScopedHandle};
pub use wait::{WorkWait, WorkqueueWait};

use crate::queue::system::system_dfl_wq;
use crate::Workqueue;

impl Workqueue {
    /// Runs `f` once on this queue and returns a handle on its result.
    ///
    /// The closure becomes a fresh work item (one allocation holds the item, the closure and
    /// the result slot) queued as [`queue`](Self::queue) would. Never panics: if the queue
    /// refuses the item (it is draining or destroyed), the closure is dropped unrun and
    /// [`join`](WorkHandle::join) returns an error for which
    /// [`is_refused`](JoinError::is_refused) holds.
    ///
    /// A panic in `f` is caught and handed to [`join`](WorkHandle::join) (or the future); it
    /// is not reported to the hook of [`set_panic_hook`](crate::set_panic_hook) (nor to the
    /// queue's [`panic_handler`](crate::WorkqueueBuilder::panic_handler)), unless the
    /// handle had already been dropped when the panic was caught: then nobody can receive
    /// it, and it is reported like any work item's panic. (The standard library's own panic
    /// hook runs at the panic site, as for any panic, before cmwq sees it.)
    ///
    /// ```
    /// use cmwq::{Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::new("spawn-example", WqFlags::UNBOUND, 0)?;
    /// let data = vec![1, 2, 3];
    /// let sum = wq.spawn(move || data.iter().sum::<i32>());
    /// assert_eq!(sum.join().unwrap(), 6);
    ///
    /// let oops = wq.spawn(|| -> i32 { panic!("boom") });
    /// assert!(oops.join().unwrap_err().is_panic());
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    pub fn spawn<F, T>(&self, f: F) -> WorkHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        task::spawn_on(self, f)
    }

    /// Runs `f` with a [`Scope`] whose [`spawn`](Scope::spawn) queues closures on this queue
    /// that may borrow from outside the scope; returns after every item spawned in the scope
    /// has finished (run, or been cancelled or refused) and its closure has been dropped.
    ///
    /// If `f` panics, the scope still waits for its items, then re-raises `f`'s panic. If an
    /// item panicked and its panic was not taken by [`ScopedHandle::join`], the scope re-raises
    /// the first such panic after `f` returned and every item finished.
    ///
    /// Waiting inside a work item for items of the same ordered queue (or of a queue whose
    /// `max_active` the waiter itself uses up) deadlocks, as a flush would.
    ///
    /// ```
    /// use cmwq::{Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::new("scope-example", WqFlags::UNBOUND, 0)?;
    /// let mut numbers = vec![1, 2, 3, 4];
    /// let (left, right) = numbers.split_at_mut(2);
    /// let total = wq.scope(|s| {
    ///     let a = s.spawn(|| { left.iter_mut().for_each(|x| *x *= 10); left.iter().sum::<i32>() });
    ///     let b = s.spawn(|| right.iter().sum::<i32>());
    ///     a.join().unwrap() + b.join().unwrap()
    /// });
    /// assert_eq!(total, 37);
    /// assert_eq!(numbers, [10, 20, 3, 4]);
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    pub fn scope<'env, F, R>(&'env self, f: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        scope::scope_on(self, f)
    }
}

/// Runs `f` once on [`system_dfl_wq`](fn@crate::system_dfl_wq) (unbound) and returns a
/// handle on its result; see [`Workqueue::spawn`].
///
/// ```
/// let handle = cmwq::spawn(|| 6 * 7);
/// assert_eq!(handle.join().unwrap(), 42);
/// ```
pub fn spawn<F, T>(f: F) -> WorkHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    system_dfl_wq().spawn(f)
}

/// A scope on [`system_dfl_wq`](fn@crate::system_dfl_wq) (unbound); see
/// [`Workqueue::scope`].
///
/// ```
/// let words = ["alpha", "beta", "gamma"];
/// let mut lengths = [0usize; 3];
/// cmwq::scope(|s| {
///     for (word, len) in words.iter().zip(lengths.iter_mut()) {
///         s.spawn(move || *len = word.len());
///     }
/// });
/// assert_eq!(lengths, [5, 4, 5]);
/// ```
pub fn scope<'env, F, R>(f: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    system_dfl_wq().scope(f)
}
