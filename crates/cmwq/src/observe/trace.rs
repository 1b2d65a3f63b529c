//! The kernel's workqueue tracepoints as `tracing` events under target `cmwq`, with the
//! kernel's field names, and a span around each execution.
//!
//! | event | fields | when |
//! |---|---|---|
//! | `workqueue_queue_work` | `work`, `function`, `workqueue`, `req_cpu`, `cpu` | an item is put on a pwq (`req_cpu`: the CPU asked for, `cpu`: the pool's CPU; −1 for none or unbound) |
//! | `workqueue_activate_work` | `work`, `function` | the item is about to start (emitted by the worker, see below) |
//! | `workqueue_execute_start` | `work`, `function` | a worker is about to call the function |
//! | `workqueue_execute_end` | `work`, `function` | the function returned (or panicked) |
//!
//! `work` is the item's address, as the kernel prints the `work_struct` pointer. The span
//! `work` (level INFO, fields `workqueue` and `function`) is entered around the function, so
//! that events an item logs are attributed to it.
//!
//! A subscriber is user code: it is never called under an engine lock. So the queuer emits
//! `workqueue_queue_work` just before it takes the pool lock to insert the item (an insert
//! that then races with a destroy and is refused has had its event), and the worker that
//! starts the item emits `workqueue_activate_work` right before `workqueue_execute_start`:
//! an item's events always come in the kernel's order, and the activation event carries the
//! time the item started rather than the time it left the inactive list.

use crate::pool::panic::contain_quiet;

/// An optional CPU as the kernel's tracepoints print it: −1 for none.
fn cpu_field(cpu: Option<usize>) -> i64 {
    cpu.map_or(-1, |c| c as i64)
}

/// `workqueue_queue_work`. Call with no lock held, before the item is inserted.
#[inline]
pub(crate) fn queue_work(
    work: usize,
    function: &'static str,
    workqueue: &str,
    req_cpu: Option<usize>,
    cpu: Option<usize>,
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
        )
    });
}

/// `workqueue_activate_work`, then `workqueue_execute_start`.
/// Whether a subscriber may want the execution events or the span (TRACE events, an INFO
/// span): one cached check per item when nobody listens.
#[inline]
pub(crate) fn enabled() -> bool {
    tracing::enabled!(target: "cmwq", tracing::Level::INFO)
}

#[inline]
pub(crate) fn execute_start(work: usize, function: &'static str) {
    tracing::trace!(target: "cmwq", work, function, "workqueue_activate_work");
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
