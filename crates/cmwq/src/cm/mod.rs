//! Concurrency management: the `blocking` hint (the scheduler's `wq_worker_sleeping` /
//! `wq_worker_running` hooks), the monitor's sampling that notices unannounced sleeps and CPU
//! hogs, and the monitor thread itself (standing in for the scheduler tick and the pools'
//! timers).
//!
//! Uses the pool layer: it reads and changes pool counters under the pool lock, and the
//! monitor calls the managers and rescuers. Used by the queue layer (its waits are sleeps)
//! and by the pool layer only to wake a parked monitor.

mod blocking;
pub(crate) mod monitor;
pub(crate) mod sample;

pub use blocking::blocking;
