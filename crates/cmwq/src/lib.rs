//! # cmwq: the Linux kernel's Concurrency Managed Workqueue, in user space
//!
//! Work items with identity, queued on named workqueues, run by shared pools of worker
//! threads that keep each CPU busy with as few running workers as possible.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use cmwq::{Work, Workqueue, WqFlags};
//!
//! let wq = Workqueue::new("example", WqFlags::empty(), 0)?;
//! let hits = Arc::new(AtomicUsize::new(0));
//! let h = hits.clone();
//! let work = Work::new(move |_| { h.fetch_add(1, Ordering::Relaxed); });
//! assert!(wq.queue(&work));   // newly queued
//! wq.queue(&work);            // false if still pending: it runs once for both
//! wq.flush();                 // waits for everything queued before this call
//! assert!(hits.load(Ordering::Relaxed) >= 1);
//! # Ok::<(), cmwq::Error>(())
//! ```
//!
//! ## Kernel-to-crate glossary
//!
//! | kernel | cmwq |
//! |---|---|
//! | `struct work_struct`, `INIT_WORK` | [`Work`], [`Work::new`], [`WorkField`] + [`WorkItem`] for embedding |
//! | `DECLARE_WORK` | [`StaticWork`] |
//! | `alloc_workqueue(name, flags, max_active)` | [`Workqueue::new`], [`Workqueue::builder`] |
//! | `alloc_ordered_workqueue` | [`Workqueue::ordered`] |
//! | `destroy_workqueue` | [`Workqueue::destroy`] (or drop the last handle) |
//! | `WQ_UNBOUND`, `WQ_HIGHPRI`, ... | [`WqFlags::UNBOUND`], [`WqFlags::HIGHPRI`], ... |
//! | `queue_work`, `queue_work_on` | [`Workqueue::queue`], [`Workqueue::queue_on`] |
//! | `schedule_work`, `schedule_work_on` | [`schedule_work`], [`schedule_work_on`] |
//! | `flush_work`, `flush_workqueue`, `drain_workqueue` | [`Work::flush`], [`Workqueue::flush`], [`Workqueue::drain`] |
//! | `cancel_work`, `cancel_work_sync` | [`Work::cancel`], [`Work::cancel_sync`] |
//! | `disable_work[_sync]`, `enable_work` | [`Work::disable`], [`Work::disable_sync`], [`Work::enable`] |
//! | `work_pending`, `work_busy` | [`Work::is_pending`], [`Work::busy`] |
//! | `workqueue_set_max_active` | [`Workqueue::set_max_active`] |
//! | `current_work()` | [`current_work`] |
//! | `struct delayed_work`, `queue_delayed_work[_on]`, `mod_delayed_work` | [`DelayedWork`], [`Workqueue::queue_delayed`], [`Workqueue::queue_delayed_on`], [`Workqueue::mod_delayed`] |
//! | `flush_delayed_work`, `cancel_delayed_work[_sync]`, `schedule_delayed_work` | [`DelayedWork::flush`], [`DelayedWork::cancel`], [`DelayedWork::cancel_sync`], [`schedule_delayed_work`] |
//! | `wq_worker_sleeping` / `wq_worker_running` (scheduler hooks) | [`blocking`] |
//! | `system_wq`, `system_highpri_wq`, ... | [`system_wq`], [`system_highpri_wq`], ... |
//! | `worker_pool`, `pool_workqueue`, `worker` | `WorkerPool`, `PoolWorkqueue`, `Worker` (internal) |
//! | `nr_running`, `nr_active`, `max_active`, flush colors | same names, same meaning (see `docs/DESIGN.md`) |
//! | `kworker/3:1H`, `kworker/u4:2`, `kworker/R-name` | the same thread names, cut to 15 bytes |
//!
//! The design, the guarantees and the differences from Linux are in `docs/DESIGN.md`; the
//! concurrency protocol (data-word state table, lock order, orderings) is in
//! `crates/cmwq/src/CONCURRENCY.md`.

#![warn(missing_docs)]

// cmwq is built on Linux interfaces: per-thread CPU affinity (`sched_setaffinity`), the
// current CPU (`sched_getcpu`), per-thread CPU clocks and `/proc/self/task/*/stat` for
// concurrency management, Linux thread names, and `SO_PEERCRED` for the control endpoint.
// Android runs the Linux kernel and its libc (bionic) has every one of these calls, so it is
// allowed (compile-checked, not tested); the other Unixes lack some of them.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
compile_error!(
    "cmwq supports only Linux (and Android): its worker pools pin threads with \
     sched_setaffinity, find the current CPU with sched_getcpu, watch workers through \
     per-thread CPU clocks and /proc/self/task, and its control endpoint checks peers with \
     SO_PEERCRED. There is no fallback for other operating systems."
);

mod cm;
mod config;
mod error;
mod observe;
mod os;
mod pool;
mod queue;
mod spawn;
pub mod time;
mod work;

#[doc = include_str!("CONCURRENCY.md")]
pub mod protocol {}

#[doc = include_str!("../DESIGN.md")]
pub mod design {
    // The document names items of the crate root ([`Work`], ...): bring them into scope so
    // its links resolve here.
    #[allow(unused_imports)]
    use crate::*;
}

pub use cm::blocking;
pub use config::{config, configure, fail_worker_creation, Config, SOFT_CAP_INTERVAL};
pub use error::Error;
pub use observe::control;
pub use observe::dump::{show_all_workqueues, show_workqueues};
pub use observe::prometheus::prometheus_text;
pub use observe::stats::{pools, BusyWorker, PoolStats, WqStats};
pub use observe::watchdog::{set_stall_hook, touch_watchdog, Stall};
pub use os::topology::online_cpus;
pub use pool::invariant_violations;
pub use pool::panic::{set_panic_hook, WorkPanic};
pub use pool::worker::{current_work, current_worker, set_worker_desc, WorkerInfo};
pub use queue::system::{
    schedule_work, schedule_work_on, system_dfl_wq, system_freezable_power_efficient_wq,
    system_freezable_wq, system_highpri_wq, system_long_wq, system_percpu_wq,
    system_power_efficient_wq, system_unbound_wq, system_wq,
};
pub use queue::workqueue::{Workqueue, WorkqueueBuilder, WqFlags, WQ_DFL_ACTIVE, WQ_MAX_ACTIVE};
pub use spawn::{
    scope, spawn, JoinError, Scope, ScopedHandle, WorkHandle, WorkWait, WorkqueueWait,
};
pub use work::delayed::{
    schedule_delayed_work, schedule_delayed_work_on, DelayedWork, DelayedWorkField, DelayedWorkItem,
};
pub use work::item::{StaticWork, Work, WorkBusy, WorkField, WorkItem};
