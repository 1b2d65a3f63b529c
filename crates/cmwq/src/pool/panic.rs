//! Containing user code: panics of work functions, of the `Drop` of items and what they
//! capture, of panic payloads' own `Drop`, of the panic hook and of `tracing` subscribers.
//!
//! Every call a worker makes into user code goes through [`contain`]: a panic there is caught,
//! reported like a work function's, and the worker carries on with its pool consistent. The
//! panic hook is called with no engine lock held (the hook may call [`set_panic_hook`] itself),
//! and a payload whose `Drop` panics is dropped under a guard too (a second panic from the
//! same payload chain is leaked, not unwound).

use std::any::Any;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use crate::queue::workqueue::WqShared;

/// A work function's panic, as given to the hook set with [`set_panic_hook`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkPanic {
    /// Name of the workqueue the item ran on.
    pub workqueue: String,
    /// The panic message (or a placeholder for non-string payloads).
    pub message: String,
    /// Type name of the work function or item.
    pub function: &'static str,
}

/// The global hook, and a queue's own handler ([`WorkqueueBuilder::panic_handler`]).
///
/// [`WorkqueueBuilder::panic_handler`]: crate::WorkqueueBuilder::panic_handler
pub(crate) type PanicHook = Arc<dyn Fn(&WorkPanic) + Send + Sync>;

fn panic_hook() -> &'static RwLock<Option<PanicHook>> {
    static HOOK: OnceLock<RwLock<Option<PanicHook>>> = OnceLock::new();
    HOOK.get_or_init(|| RwLock::new(None))
}

/// Sets the function told about every panic caught in a work function, and in the `Drop` of
/// an item or of what it captured (replacing the default, which prints one line with the
/// workqueue's name to stderr). The worker that caught the panic carries on with the next
/// item.
///
/// The hook runs on the worker thread with no engine lock held: it may queue work, call
/// `set_panic_hook` or panic (a panicking hook is reported on stderr and ignored).
pub fn set_panic_hook(hook: impl Fn(&WorkPanic) + Send + Sync + 'static) {
    let new: PanicHook = Arc::new(hook);
    let old = panic_hook().write().replace(new);
    // The old hook (and what it captured) is dropped with the lock released.
    contain_quiet(move || drop(old));
}

/// The name of `work`'s function (`WorkItem::name`, user code), or a placeholder if it
/// panics.
#[inline]
pub(crate) fn function_name(work: &crate::Work) -> &'static str {
    match catch_unwind(AssertUnwindSafe(|| work.func_name())) {
        Ok(name) => name,
        Err(payload) => {
            drop_payload(payload);
            "<WorkItem::name panicked>"
        }
    }
}

/// What a panic was caught in, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Site {
    /// The work function.
    Run,
    /// The `Drop` of the item or of what it captured.
    Drop,
    /// A `tracing` subscriber called for one of the engine's events.
    Trace,
}

/// Runs user code `f` for an item of workqueue `wq` (function `function`), reporting a panic
/// instead of unwinding (to the queue's handler if it has one, else to the global hook).
/// Returns whether `f` completed.
#[inline]
pub(crate) fn contain(wq: &WqShared, function: &'static str, site: Site, f: impl FnOnce()) -> bool {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => true,
        Err(payload) => {
            // Cloned out of its lock: the handler is called, and may be dropped, unlocked.
            report(&wq.name, wq.panic_handler(), function, site, payload);
            false
        }
    }
}

/// Runs `f`, dropping (under a guard) whatever it panics with. For user code whose panic has
/// nobody to be reported to (a hook's `Drop`, a payload's `Drop`).
pub(crate) fn contain_quiet(f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        drop_payload(payload);
    }
}

/// Drops a panic payload; if its `Drop` panics, that second payload is leaked (dropping it
/// could panic again, without end).
pub(crate) fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(again) = catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(again);
    }
}

fn message_of(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Reports a caught panic: a `tracing` error event and `handler` (the queue's own), else the
/// global panic hook (or stderr). Never unwinds, whatever the subscriber, the handler, the
/// hook or the payload do. Call with no engine lock held: `handler` is called and dropped
/// here.
pub(crate) fn report(
    workqueue: &str,
    handler: Option<PanicHook>,
    function: &'static str,
    site: Site,
    payload: Box<dyn Any + Send>,
) {
    let mut message = message_of(&*payload);
    drop_payload(payload);
    match site {
        Site::Run => {}
        Site::Drop => message.insert_str(0, "in Drop: "),
        Site::Trace => message.insert_str(0, "in a tracing subscriber: "),
    }
    let report = WorkPanic {
        workqueue: workqueue.to_string(),
        message,
        function,
    };
    if site != Site::Trace {
        contain_quiet(|| {
            tracing::error!(
                target: "cmwq",
                workqueue = %report.workqueue,
                function = report.function,
                "work function panicked: {}",
                report.message
            )
        });
    }
    // Cloned out of the lock: the hook may call `set_panic_hook`, or take long.
    let (hook, which) = match handler {
        Some(handler) => (Some(handler), "the workqueue's panic handler"),
        None => (panic_hook().read().clone(), "the panic hook"),
    };
    let delivered = catch_unwind(AssertUnwindSafe(|| match &hook {
        Some(hook) => hook(&report),
        None => stderr_line(&format!(
            "cmwq: work item {} on workqueue {:?} panicked: {}",
            report.function, report.workqueue, report.message
        )),
    }));
    if let Err(payload) = delivered {
        drop_payload(payload);
        stderr_line(&format!(
            "cmwq: {which} panicked while reporting {} on workqueue {:?}: {}",
            report.function, report.workqueue, report.message
        ));
    }
    // Our clone may be the last one if the hook was replaced, or the queue destroyed,
    // meanwhile.
    contain_quiet(move || drop(hook));
}

/// One line on stderr; a closed stderr is ignored (`eprintln!` would panic).
fn stderr_line(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}
