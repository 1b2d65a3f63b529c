//! Worker pools: the shared worklist, worker threads and their main loop, creating and
//! reaping workers (the manager role), and rescuers.
//!
//! Uses the item layer's type and data word, the OS layer (pinning, nice, thread ids) and the
//! configuration. Used by the queue layer (queueing, flushing), by concurrency management
//! (which reads and adjusts the pool counters under the pool lock) and by cancel.
//!
//! Two upward calls are the design: a worker reads its item's workqueue through the pool
//! workqueue (flags, name, flush accounting: the kernel's `worker->current_pwq->wq`), and a
//! pool that gets busy wakes the monitor ([`crate::cm::monitor::note_busy`]), as the kernel's
//! pool code arms its idle and mayday timers.

pub(crate) mod hotplug;
pub(crate) mod list;
pub(crate) mod manage;
pub(crate) mod panic;
pub(crate) mod registry;
pub(crate) mod rescuer;
pub(crate) mod worker;
mod worker_pool;

pub use hotplug::refresh_cpus;
pub(crate) use registry::*;
pub use worker_pool::invariant_violations;
pub(crate) use worker_pool::*;
