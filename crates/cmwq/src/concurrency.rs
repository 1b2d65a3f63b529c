//! Concurrency management: the user-space stand-in for the scheduler's
//! `wq_worker_sleeping`/`wq_worker_running` hooks.
//!
//! A worker of a per-CPU pool counts in the pool's `nr_running` while it processes items. When
//! it is about to sleep inside [`blocking`], it leaves `nr_running`; if that leaves work waiting
//! with nobody running, the most recently idle worker is woken at once (that worker makes a new
//! spare if it was the last idle one). When the sleep ends it counts again; two running
//! workers then shrink back to one as the first to finish an item sees `keep_working` false.

use crate::pool::{flags, kick_pool};
use crate::worker;

/// Runs `f`, telling concurrency management that the calling worker sleeps meanwhile.
///
/// Wrap calls that block (I/O, sleeps, lock and channel waits) in work items of per-CPU
/// workqueues, so that other items queued on the same CPU start on another worker instead of
/// waiting behind the sleeper. Outside a worker thread, nested inside another `blocking`, or on
/// workers that are already outside concurrency management (unbound and CPU-intensive ones) it
/// just calls `f`. cmwq's own waits (`flush`, `cancel_sync`, `drain`) use it.
///
/// ```
/// use cmwq::{Work, system_wq};
///
/// let work = Work::new(|_| {
///     cmwq::blocking(|| std::thread::sleep(std::time::Duration::from_millis(1)));
/// });
/// system_wq().queue(&work);
/// work.flush();
/// ```
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    let Some(pool_and_id) = worker::with_worker(|w| (w.pool.clone(), w.id)) else {
        return f();
    };
    let (pool, id) = pool_and_id;
    let entered = {
        let mut g = pool.locked.lock();
        let w = g.worker(id);
        if w.sleeping || w.flags & flags::NOT_RUNNING != 0 {
            false
        } else {
            w.sleeping = true;
            g.nr_running -= 1;
            // A worker is calling, so the pool has one: no first worker to create.
            let _ = kick_pool(&mut g);
            true
        }
    };
    /// Restores the accounting even if `f` unwinds.
    struct Running {
        pool: std::sync::Arc<crate::pool::WorkerPool>,
        id: usize,
        entered: bool,
    }
    impl Drop for Running {
        fn drop(&mut self) {
            if self.entered {
                let mut g = self.pool.locked.lock();
                let w = g.worker(self.id);
                w.sleeping = false;
                if w.flags & flags::NOT_RUNNING == 0 {
                    g.nr_running += 1;
                }
            }
        }
    }
    let _running = Running { pool, id, entered };
    f()
}
