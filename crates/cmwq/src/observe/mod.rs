//! Observability in the kernel's vocabulary: the statistics of `wq_monitor.py`, the state
//! dump of `show_all_workqueues()`, the trace events, and the watchdog.
//!
//! Reads every other layer (under their locks, never holding two pool locks) and is read by
//! none of them, except that the monitor calls the watchdog's check and the queue and worker
//! paths emit its trace events.

pub mod control;
pub(crate) mod dump;
pub(crate) mod prometheus;
pub(crate) mod stats;
pub(crate) mod trace;
pub(crate) mod watchdog;
