//! The exact path of concurrency management: [`blocking`], the user-space stand-in for the
//! scheduler's `wq_worker_sleeping` / `wq_worker_running` hooks.

use std::sync::Arc;
use std::time::Instant;

use crate::pool::worker;
use crate::pool::{flags, kick_pool, Kick, Sleep, WorkerPool};

/// Runs `f`, telling concurrency management that the calling worker sleeps meanwhile.
///
/// Wrap calls that block (I/O, sleeps, lock and channel waits) in work items of per-CPU
/// workqueues, so that other items queued on the same CPU start on another worker at once
/// instead of waiting behind the sleeper (the monitor also notices unannounced sleeps, but
/// only after a sample or two). Outside a worker thread, nested inside another `blocking`, or
/// on workers already outside concurrency management (unbound, CPU-intensive, rescuers) it
/// just calls `f`. cmwq's own waits (`flush`, `cancel_sync`, `drain`) use it.
///
/// Two items on one CPU's pool, the first waiting for a message the second sends: with the
/// hint the pool starts the second while the first sleeps.
///
/// ```
/// use std::sync::{mpsc, Arc, Mutex};
/// use std::time::Duration;
/// use cmwq::{online_cpus, system_wq, Work};
///
/// let cpu = online_cpus()[0];
/// let (tx, rx) = mpsc::channel::<u32>();
/// let (rx, got) = (Mutex::new(rx), Arc::new(Mutex::new(None)));
/// let g = got.clone();
/// let waiter = Work::new(move |_| {
///     let rx = rx.lock().unwrap();
///     // The generous timeout only bounds a failure; the message comes at once.
///     let msg = cmwq::blocking(|| rx.recv_timeout(Duration::from_secs(60)));
///     *g.lock().unwrap() = msg.ok();
/// });
/// let tx = Mutex::new(tx);
/// let sender = Work::new(move |_| {
///     let _ = tx.lock().unwrap().send(7);
/// });
/// system_wq().queue_on(cpu, &waiter)?;
/// system_wq().queue_on(cpu, &sender)?;
/// waiter.flush();
/// assert_eq!(*got.lock().unwrap(), Some(7));
/// # Ok::<(), cmwq::Error>(())
/// ```
pub fn blocking<R>(f: impl FnOnce() -> R) -> R {
    // Workers of unbound pools always carry `WORKER_UNBOUND` (outside concurrency
    // management): nothing to account, so no trip through the pool lock.
    let Some((pool, id)) =
        worker::with_worker(|w| (!w.pool.is_unbound()).then(|| (w.pool.clone(), w.id))).flatten()
    else {
        return f();
    };
    let entered = {
        let mut g = pool.locked.lock();
        let w = g.worker(id);
        if w.sleep != Sleep::Awake || w.flags & flags::NOT_RUNNING != 0 {
            false
        } else {
            w.sleep = Sleep::Hinted(Instant::now());
            g.nr_running -= 1;
            g.nr_hinted += 1;
            // The kernel's wq_worker_sleeping: wake a spare if work now waits.
            if kick_pool(&mut g) == Kick::Woke {
                if let Some((_, slot)) = g.worker(id).current {
                    g.pwq(slot).nr_cm_wakeup += 1;
                }
            }
            true
        }
    };
    /// Restores the accounting even if `f` unwinds (the kernel's wq_worker_running).
    struct Running {
        pool: Arc<WorkerPool>,
        id: usize,
        entered: bool,
    }
    impl Drop for Running {
        fn drop(&mut self) {
            if self.entered {
                let mut g = self.pool.locked.lock();
                let w = g.worker(self.id);
                w.sleep = Sleep::Awake;
                w.epoch += 1; // CPU-hog detection measures from the wake-up
                if w.flags & flags::NOT_RUNNING == 0 {
                    g.nr_running += 1;
                }
                g.nr_hinted -= 1;
            }
        }
    }
    let _running = Running { pool, id, entered };
    f()
}
