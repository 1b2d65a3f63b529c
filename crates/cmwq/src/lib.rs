//! # cmwq: the Linux kernel's Concurrency Managed Workqueue, in user space
//!
//! Deferred work for long-running programs on Linux: work items with identity, queued on
//! named workqueues, run by shared pools of worker threads that keep each CPU busy with as
//! few running threads as possible. This page teaches the ideas first, for readers who have
//! never met the kernel's workqueues; the [glossary](#kernel-to-crate-glossary) at the end
//! maps kernel names to this crate's for those who have.
//!
//! ## What a workqueue is
//!
//! A workqueue runs functions *later*, on threads it manages. Code that must not or need not
//! do something now (the kernel's interrupt handler, a path that holds a lock, a request
//! that should answer quickly) puts a *work item* on a workqueue and carries on; a worker
//! thread runs the item soon after.
//!
//! A workqueue is a policy, not a thread pool: a name, flags (per-CPU or unbound, priority),
//! a limit on how many of its items run at once (`max_active`), and a domain to flush and
//! drain. It owns no threads. Every queue is served by the same shared worker pools, so a
//! program can have a queue per subsystem without a thread pool per subsystem.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use cmwq::{Work, Workqueue, WqFlags};
//!
//! let wq = Workqueue::new("example", WqFlags::UNBOUND, 0)?; // name, flags, max_active (0: default)
//! let hits = Arc::new(AtomicUsize::new(0));
//! let h = hits.clone();
//! let work = Work::new(move |_| { h.fetch_add(1, Ordering::Relaxed); });
//! wq.queue(&work);
//! wq.flush();                 // waits for everything queued before this call
//! assert_eq!(hits.load(Ordering::Relaxed), 1);
//!
//! // One-shot closures with a result are work items too:
//! let answer = cmwq::spawn(|| 6 * 7);
//! assert_eq!(answer.join().unwrap(), 42);
//! # Ok::<(), cmwq::Error>(())
//! ```
//!
//! ## Work items have identity
//!
//! A [`Work`] is not a job submitted once but an object, made once and queued again and again
//! ("this needs doing"). Its identity gives two rules that make most of its uses simple:
//!
//! * **Queueing a pending item does nothing.** [`Workqueue::queue`] returns `true` if it
//!   queued the item and `false` if the item was already pending (queued, not yet started).
//!   Many requests made before the item starts coalesce into one run, and that run sees every
//!   store made before each of those `queue` calls. An item that says "the cache is stale" or
//!   "there are events to handle" therefore never piles up.
//! * **An item never runs on two workers at once.** Queued again while it runs, it runs again
//!   afterwards, so its function needs no lock against itself. (This holds per workqueue: as
//!   in the kernel, queueing one item on two queues at once is allowed and voids it.)
//!
//! Clones of a `Work` are the same item. An item can also be embedded in your own struct
//! ([`WorkField`] + [`WorkItem`], or [`DelayedWorkField`] + [`DelayedWorkItem`]), as a kernel
//! driver embeds a `work_struct`: the item then needs no allocation of its own, and queueing
//! an existing item never allocates. [`spawn`](fn@spawn) and [`scope`](fn@scope), in
//! contrast, make a fresh item for each closure and hand back its result.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::mpsc::channel;
//! use std::sync::{Arc, Mutex};
//! use cmwq::{Work, Workqueue, WqFlags};
//!
//! // An ordered queue runs one item at a time; a first item holds it while we queue.
//! let wq = Workqueue::ordered("identity", WqFlags::empty())?;
//! let (open, gate) = channel::<()>();
//! let gate = Mutex::new(gate);
//! wq.queue(&Work::new(move |_| { gate.lock().unwrap().recv().ok(); }));
//!
//! let runs = Arc::new(AtomicUsize::new(0));
//! let r = runs.clone();
//! let refresh = Work::new(move |_| { r.fetch_add(1, Ordering::Relaxed); });
//! assert!(wq.queue(&refresh));          // newly queued
//! assert!(!wq.queue(&refresh));         // already pending: nothing happens
//! assert!(!wq.queue(&refresh.clone())); // a clone is the same item
//! open.send(()).unwrap();
//! wq.flush();
//! assert_eq!(runs.load(Ordering::Relaxed), 1);
//! # Ok::<(), cmwq::Error>(())
//! ```
//!
//! ## Per-CPU and unbound queues
//!
//! * **Per-CPU (bound) queues**, the default ([`WqFlags::empty()`], as in the kernel): an
//!   item runs on the CPU that queued it ([`Workqueue::queue`]) or on the one named
//!   ([`Workqueue::queue_on`]), served by that CPU's pool, with the caches still warm.
//!   `max_active` counts per CPU. These are the queues concurrency management (below) runs.
//!   One thread queueing everything puts everything on its own CPU: per-CPU queues do not
//!   spread work out.
//! * **Unbound queues** ([`WqFlags::UNBOUND`]): an item runs on any CPU of the queue's
//!   cpumask, starting at once up to `max_active` (a limit for the whole queue, split between
//!   NUMA nodes, each node getting at least `min_active`: see
//!   [`Workqueue::set_min_active`]). Use them for long or CPU-heavy items and to spread the
//!   work of one producer over the machine.
//!   [`spawn`](fn@spawn) and [`scope`](fn@scope) use the unbound [`system_dfl_wq`].
//!
//! Other flags ask for the high-priority pools ([`WqFlags::HIGHPRI`]), keep CPU hogs out of
//! concurrency management ([`WqFlags::CPU_INTENSIVE`]), or give the queue a rescuer thread
//! that guarantees progress when no worker can be created ([`WqFlags::MEM_RECLAIM`]).
//! [`Workqueue::ordered`] makes a queue that runs one item at a time in queueing order.
//! [`WqFlags::FREEZABLE`] queues stop starting new items between [`freeze`] and [`thaw`]
//! (the kernel's freezer; [`freeze_busy`] tells when the items already started have
//! finished), and [`WqFlags::POWER_EFFICIENT`] ones are unbound when
//! [`Config::power_efficient`] is set.
//! Shared system queues ([`system_wq`], [`system_unbound_wq`], ...) exist for code that needs
//! no policy of its own.
//!
//! ## Concurrency management
//!
//! A per-CPU pool keeps exactly one of its workers running while it has work: its items run
//! one after the other on that worker, and its CPU is never shared between two of them. When
//! the running worker blocks, the pool starts the next item on another worker, so a sleeping
//! item never holds up the rest; when it wakes, the other worker takes no new item after its
//! current one, and the pool is back to one runner. The kernel
//! learns of the sleep from its scheduler. User space has no such hook, so an item that is
//! about to block says so with [`blocking`]; a monitor thread also notices unannounced
//! sleeps, but only after a few milliseconds.
//!
//! ```
//! use std::time::Duration;
//! use cmwq::{system_wq, Work};
//!
//! let read_sensor = Work::new(|_| {
//!     // While this sleeps, other items queued on this CPU start on another worker.
//!     cmwq::blocking(|| std::thread::sleep(Duration::from_millis(1)));
//! });
//! system_wq().queue(&read_sensor);
//! read_sensor.flush();
//! ```
//!
//! Unbound queues are not managed this way: their items start at once, up to `max_active`,
//! as in Linux (their pools grow past one worker per CPU only once the monitor has seen spare
//! CPU; [`design`] has the details). The thresholds and timeouts, the kernel's values by
//! default, can be changed before first use with [`configure`].
//!
//! ## Delayed work, waiting and cancelling
//!
//! A [`DelayedWork`] is a work item with a timer: [`Workqueue::queue_delayed`] arms it,
//! [`Workqueue::mod_delayed`] re-arms it (one call per event gives a debounce: one run once
//! the events stop). [`Work::flush`] waits for an item's last queued run,
//! [`Workqueue::flush`] for everything queued before it, [`Workqueue::drain`] until the
//! queue is empty. [`Work::cancel_sync`] returns only when the item is neither pending nor
//! running, even if it re-queues itself. Each wait has an `async` form
//! ([`Work::flush_async`], [`Workqueue::flush_async`], ...), and [`WorkHandle`] is a
//! `Future`.
//!
//! ```
//! use std::time::Duration;
//! use cmwq::{system_wq, DelayedWork};
//!
//! let save = DelayedWork::new(|_| println!("saved"));
//! assert!(!system_wq().mod_delayed(&save, Duration::from_secs(3600))); // was idle: armed
//! assert!(system_wq().mod_delayed(&save, Duration::from_secs(3600)));  // pending: re-armed
//! assert!(save.flush()); // fires the timer now and waits for the run
//! ```
//!
//! ## When to choose cmwq, and when not
//!
//! * **cmwq** suits the background work of a long-running program: items that coalesce
//!   ("refresh", "write back", "handle what the device raised"), debounced and periodic work,
//!   per-CPU locality, queues with their own limits, priority and ordering, shutdown that
//!   can wait for or cancel exactly what it must ([`Work::cancel_sync`], [`Workqueue::drain`]),
//!   and counters to watch it run ([`Workqueue::stats`], the [`control`] endpoint and the
//!   `cmwq` tool). It is also the natural home for code that follows kernel idioms.
//! * **rayon** is for data parallelism: one computation split over every core (parallel
//!   iterators, `join`), with work stealing tuned for it. cmwq's [`scope`](fn@scope) can fan
//!   out a few closures, but it is no substitute for a parallel iterator.
//! * **tokio** is for asynchronous I/O: many sockets and timers waited on by few threads.
//!   Its worker threads must not compute for long or block; hand such work to cmwq and
//!   `.await` the [`WorkHandle`] (see the `async_service` example).
//! * **Not cmwq**: programs that must run off Linux (the crate does not build there), hard
//!   real-time deadlines, or a job that a single thread or channel does well enough.
//!
//! ## Examples
//!
//! The crate's `examples/` folder holds four programs, each run with
//! `cargo run -p cmwq --example NAME`:
//!
//! * `autosave`: a debounced save with [`DelayedWork`] and [`Workqueue::mod_delayed`]: many
//!   edits, one save.
//! * `hash_files`: a pipeline that reads files on a per-CPU queue with [`blocking`] and
//!   hashes them with [`spawn`](fn@spawn).
//! * `async_service`: a tokio service awaiting [`WorkHandle`]s, [`Work::flush_async`],
//!   [`DelayedWork::cancel_sync_async`] and [`Workqueue::drain_async`].
//! * `driver`: a kernel-style driver: a bottom half embedded in the device struct, a watchdog
//!   that re-arms itself, an ordered queue that keeps events in order.
//!
//! ## Looking inside
//!
//! [`Workqueue::stats`] gives the counters of the kernel's `wq_monitor`, [`show_workqueues`]
//! the state dump, [`set_stall_hook`] a callback for stuck pools. A process started with
//! `CMWQ_CONTROL=1` (or that calls [`control::serve`]) can be watched from outside with the
//! `cmwq` tool of the `cmwq-cli` crate (`cmwq stats`, `cmwq top`, `cmwq dump`).
//!
//! ## Kernel-to-crate glossary
//!
//! | kernel | cmwq |
//! |---|---|
//! | `struct work_struct`, `INIT_WORK` | [`Work`], [`Work::new`], [`WorkField`] + [`WorkItem`] for embedding |
//! | `DECLARE_WORK`, `DECLARE_DELAYED_WORK` | [`StaticWork`], [`StaticDelayedWork`] |
//! | `alloc_workqueue(name, flags, max_active)` | [`Workqueue::new`], [`Workqueue::builder`] |
//! | `alloc_ordered_workqueue` | [`Workqueue::ordered`] |
//! | `destroy_workqueue` | [`Workqueue::destroy`] (or drop the last handle) |
//! | `WQ_UNBOUND`, `WQ_HIGHPRI`, ... | [`WqFlags::UNBOUND`], [`WqFlags::HIGHPRI`], ... |
//! | `queue_work`, `queue_work_on` | [`Workqueue::queue`], [`Workqueue::queue_on`] |
//! | `schedule_work`, `schedule_work_on` | [`schedule_work`], [`schedule_work_on`] |
//! | `queue_work_node` | [`Workqueue::queue_node`] |
//! | `work_on_cpu`, `schedule_on_each_cpu` | [`work_on_cpu`], [`schedule_on_each_cpu`] |
//! | `cpu_online_mask`, CPU hotplug callbacks (`workqueue_online_cpu`, `workqueue_offline_cpu`), `POOL_DISASSOCIATED` | [`online_cpus`], [`refresh_cpus`] (and the monitor), [`PoolStats::disassociated`] |
//! | `flush_work`, `flush_workqueue`, `drain_workqueue` | [`Work::flush`], [`Workqueue::flush`], [`Workqueue::drain`] |
//! | `cancel_work`, `cancel_work_sync` | [`Work::cancel`], [`Work::cancel_sync`] |
//! | `disable_work[_sync]`, `enable_work`, `enable_and_queue_work` | [`Work::disable`], [`Work::disable_sync`], [`Work::enable`], [`Workqueue::enable_and_queue`] |
//! | `work_pending`, `work_busy` | [`Work::is_pending`], [`Work::busy`] |
//! | `workqueue_set_max_active` | [`Workqueue::set_max_active`] |
//! | `workqueue_set_min_active` | [`Workqueue::set_min_active`] |
//! | `current_work()` | [`current_work`] |
//! | `struct delayed_work`, `queue_delayed_work[_on]`, `mod_delayed_work` | [`DelayedWork`], [`Workqueue::queue_delayed`], [`Workqueue::queue_delayed_on`], [`Workqueue::mod_delayed`] |
//! | `flush_delayed_work`, `cancel_delayed_work[_sync]`, `schedule_delayed_work` | [`DelayedWork::flush`], [`DelayedWork::cancel`], [`DelayedWork::cancel_sync`], [`schedule_delayed_work`] |
//! | `wq_worker_sleeping` / `wq_worker_running` (scheduler hooks) | [`blocking`] |
//! | `system_wq`, `system_highpri_wq`, ... | [`system_wq`], [`system_highpri_wq`], ... |
//! | `worker_pool`, `pool_workqueue`, `worker` | `WorkerPool`, `PoolWorkqueue`, `Worker` (internal) |
//! | `nr_running`, `nr_active`, `max_active`, flush colors | same names, same meaning (see [`design`]) |
//! | `system_dfl_wq`, `system_percpu_wq` (the 6.17 names) | [`system_dfl_wq`], [`system_percpu_wq`] |
//! | `WQ_MAX_ACTIVE`, `WQ_DFL_ACTIVE` | [`WQ_MAX_ACTIVE`], [`WQ_DFL_ACTIVE`] |
//! | `WQ_DFL_MIN_ACTIVE` | [`WQ_DFL_MIN_ACTIVE`] |
//! | rescuer (`kworker/R-name`), mayday | the same, for [`WqFlags::MEM_RECLAIM`] queues |
//! | `IDLE_WORKER_TIMEOUT`, `CREATE_COOLDOWN`, `MAYDAY_*`, `wq_cpu_intensive_thresh_us` | [`Config`] fields, with the same defaults |
//! | `show_all_workqueues()`, `wq_monitor.py`, the workqueue watchdog | [`show_all_workqueues`], [`Workqueue::stats`], [`set_stall_hook`] |
//! | `set_worker_desc`, `wq_watchdog_touch` | [`set_worker_desc`], [`touch_watchdog`] |
//! | `kworker/3:1H`, `kworker/u4:2`, `kworker/R-name` | the same thread names, cut to 15 bytes |
//!
//! ## Further reading
//!
//! * [`design`] (the repository's `docs/DESIGN.md`): the concepts in depth, every guarantee,
//!   example timelines, how concurrency management decides, and the differences from Linux.
//! * [`protocol`] (`src/CONCURRENCY.md`): the data-word state table, the lock order, who
//!   guards what, and the memory orderings.
//!
//! ## Platforms and features
//!
//! Linux only, and Android, which runs the same kernel: the crate fails to build elsewhere
//! with a message saying why. The `serde` feature derives `Serialize` for [`WqStats`],
//! [`PoolStats`] and [`BusyWorker`].

#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

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
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod time;
#[cfg(not(feature = "test-util"))]
mod time;
mod work;

#[doc = include_str!("CONCURRENCY.md")]
pub mod protocol {}

// Rendered here, the document's link to CONCURRENCY.md goes to the `protocol` module: the
// first definition of a link label wins, and this one comes before the document's own.
#[doc = "[concurrency-md]: crate::protocol\n"]
#[doc = include_str!("../DESIGN.md")]
pub mod design {}

pub use cm::blocking;
#[cfg(feature = "test-util")]
pub use config::fail_worker_creation;
pub use config::{config, configure, Config, SOFT_CAP_INTERVAL};
pub use error::Error;
pub use observe::control;
pub use observe::dump::{show_all_workqueues, show_workqueues};
pub use observe::prometheus::prometheus_text;
pub use observe::stats::{pools, BusyWorker, PoolStats, WqStats};
pub use observe::watchdog::{set_stall_hook, touch_watchdog, Stall};
pub use os::cpu_topology::{topology, Topology};
pub use os::topology::online_cpus;

pub use cm::monitor::monitor_unparks;
pub use pool::invariant_violations;
pub use pool::panic::{set_panic_hook, WorkPanic};
pub use pool::refresh_cpus;
pub use pool::worker::{current_work, current_worker, set_worker_desc, WorkerInfo};
#[doc(hidden)]
pub use queue::apply::pwq_counts;
pub use queue::attrs::{AffinityScope, WorkqueueAttrs};
pub use queue::freezer::{freeze, freeze_busy, thaw};
pub use queue::node_active::WQ_DFL_MIN_ACTIVE;
pub use queue::percpu::{schedule_on_each_cpu, work_on_cpu};
pub use queue::system::{
    schedule_work, schedule_work_on, system_dfl_wq, system_freezable_power_efficient_wq,
    system_freezable_wq, system_highpri_wq, system_long_wq, system_percpu_wq,
    system_power_efficient_wq, system_unbound_wq, system_wq, try_schedule_work,
    try_schedule_work_on,
};
pub use queue::workqueue::{Workqueue, WorkqueueBuilder, WqFlags, WQ_DFL_ACTIVE, WQ_MAX_ACTIVE};
pub use spawn::{
    scope, spawn, JoinError, Scope, ScopedHandle, WorkHandle, WorkWait, WorkqueueWait,
};
pub use work::delayed::{
    schedule_delayed_work, schedule_delayed_work_on, try_schedule_delayed_work,
    try_schedule_delayed_work_on, DelayedWork, DelayedWorkField, DelayedWorkItem,
};
pub use work::item::{StaticWork, Work, WorkBusy, WorkField, WorkItem};
pub use work::static_delayed::StaticDelayedWork;
