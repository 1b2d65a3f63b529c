//! The kernel's workqueue tracepoints as `tracing` events under target `cmwq`, with the
//! kernel's field names, and a span around each execution.
//!
//! | event | fields | when |
//! |---|---|---|
//! | `workqueue_queue_work` | `work`, `function`, `workqueue`, `req_cpu`, `cpu` | an item is put on a pwq (`req_cpu`: the CPU asked for, `cpu`: the pool's CPU; −1 for none or unbound) |
//! | `workqueue_activate_work` | `work`, `function` | an item becomes active: at once when queued below `max_active`, or when it leaves the inactive list |
//! | `workqueue_execute_start` | `work`, `function` | a worker is about to call the function |
//! | `workqueue_execute_end` | `work`, `function` | the function returned (or panicked) |
//!
//! `work` is the item's address, as the kernel prints the `work_struct` pointer. The span
//! `work` (level INFO, fields `workqueue` and `function`) is entered around the function, so
//! that events an item logs are attributed to it.
//!
//! A subscriber is user code: it is never called under an engine lock. An item activated by
//! another's retirement (under the pool lock) is noted in a thread-local list and its event
//! emitted once the lock is dropped ([`emit_deferred`]); that list is only used while a
//! subscriber wants the event, so it costs nothing otherwise.

use std::cell::RefCell;

use crate::pool::panic::contain_quiet;

/// An optional CPU as the kernel's tracepoints print it: −1 for none.
fn cpu_field(cpu: Option<usize>) -> i64 {
    cpu.map_or(-1, |c| c as i64)
}

/// `workqueue_queue_work` (and `workqueue_activate_work` if the item went straight to the
/// worklist). Call with no lock held.
#[inline]
pub(crate) fn queue_work(
    work: usize,
    function: &'static str,
    workqueue: &str,
    req_cpu: Option<usize>,
    cpu: Option<usize>,
    active: bool,
) {
    if !tracing::enabled!(target: "cmwq", tracing::Level::TRACE) {
        return;
    }
    contain_quiet(|| {
        tracing::trace!(
            target: "cmwq",
            work,
            function,
            workqueue,
            req_cpu = cpu_field(req_cpu),
            cpu = cpu_field(cpu),
            "workqueue_queue_work"
        );
        if active {
            tracing::trace!(target: "cmwq", work, function, "workqueue_activate_work");
        }
    });
}

thread_local! {
    /// Activations noted under a pool lock, emitted once it is dropped.
    static DEFERRED: RefCell<Vec<(usize, &'static str)>> = const { RefCell::new(Vec::new()) };
}

/// Notes that `work` left an inactive list (called under the pool lock).
#[inline]
pub(crate) fn defer_activate(work: usize, function: &'static str) {
    if tracing::enabled!(target: "cmwq", tracing::Level::TRACE) {
        DEFERRED.with(|d| d.borrow_mut().push((work, function)));
    }
}

/// Whether activations wait to be emitted.
#[inline]
pub(crate) fn has_deferred() -> bool {
    DEFERRED.with(|d| !d.borrow().is_empty())
}

/// Emits the activations noted by [`defer_activate`]. Call with no lock held.
#[inline]
pub(crate) fn emit_deferred() {
    if !has_deferred() {
        return;
    }
    let noted = DEFERRED.with(|d| std::mem::take(&mut *d.borrow_mut()));
    contain_quiet(|| {
        for (work, function) in noted {
            tracing::trace!(target: "cmwq", work, function, "workqueue_activate_work");
        }
    });
}

/// `workqueue_execute_start`.
#[inline]
pub(crate) fn execute_start(work: usize, function: &'static str) {
    tracing::trace!(target: "cmwq", work, function, "workqueue_execute_start");
}

/// `workqueue_execute_end`.
#[inline]
pub(crate) fn execute_end(work: usize, function: &'static str) {
    tracing::trace!(target: "cmwq", work, function, "workqueue_execute_end");
}

/// The span entered around an execution.
#[inline]
pub(crate) fn execution_span(workqueue: &str, function: &'static str) -> tracing::Span {
    tracing::info_span!(target: "cmwq", "work", workqueue, function)
}
