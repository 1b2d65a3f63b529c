//! Workqueues: the user-facing policy object (flags, `max_active`, the flush domain), their
//! pool workqueues (the link to a worker pool), flushing and draining, the system queues, and the
//! per-CPU helpers (`work_on_cpu`, `schedule_on_each_cpu`, `queue_node`; [`percpu`] runs its
//! closures through the spawn layer's scopes, a call upward named here as design).
//!
//! Uses the pool layer (to put items on pools and to find where an item runs), the
//! concurrency-management hint (its waits are sleeps), the timer service (destroy disarms
//! timers) and the OS layer. Used by the item operations above it and by the API.
//!
//! The pool layer reaches back into [`pwq`] by design: a pool workqueue's counters live under
//! its pool's lock (as `pool->lock` guards them in the kernel), so the pool owns their storage
//! and a worker retires its item's flush color there.

pub(crate) mod apply;
pub(crate) mod attrs;
pub(crate) mod create;
pub(crate) mod flush;
pub(crate) mod freezer;
pub(crate) mod node_active;
pub(crate) mod percpu;
pub(crate) mod pwq;
pub(crate) mod system;
pub(crate) mod workqueue;
