//! Following the process's CPU set (the kernel's CPU hotplug path for worker pools:
//! `unbind_workers`, `rebind_workers`, `POOL_DISASSOCIATED`).
//!
//! When a CPU leaves the set, its two per-CPU pools become **disassociated**: every worker gets
//! [`flags::UNBOUND`] (which takes a running one out of `nr_running`, so the pool's counter
//! drops to 0 as the kernel zaps it), the pool is kicked so that waiting items find a worker
//! (with nobody counted, every waiting item may start), and the workers are allowed every
//! online CPU. Their items still run; items queued on the CPU with `queue_on` keep going to
//! this pool. When the CPU comes back, the flag is cleared on every worker (joining
//! `nr_running` again those that are running, under the pool lock, so no counter goes wrong:
//! the kernel needs `WORKER_REBOUND` for this because it zapped the counter) and the workers
//! are pinned to the CPU again. A CPU new to the set finds its pools already there (they exist
//! for every possible CPU, disassociated while offline) and is a CPU that comes back.
//!
//! Unbound pools keep their pods, but their workers' affinity is cut to the online CPUs
//! (every online CPU if none of the pool's is): never only CPUs that left.
//!
//! Affinity is set from here with `sched_setaffinity(tid)` on each worker, and by a new worker
//! on itself when it starts. [`WQ_POOL_ATTACH_MUTEX`] (the kernel's `wq_pool_attach_mutex`)
//! keeps the two apart: a worker reads its pool's state and sets its affinity under it, so it
//! either starts after a change (and reads the new state) or has its thread id recorded before
//! it (and is moved by it). Lock order: `WQ_POOL_ATTACH_MUTEX` → pool lock; no pool lock is
//! held across a system call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::os::{cpuset, topology};
use crate::pool::manage::create_first_worker;
use crate::pool::panic::contain_quiet;
use crate::pool::{flags, kick_pool, Kick, PoolLocked, WorkerPool};

/// Serialises CPU-set changes against one another, against workers setting their own
/// affinity as they start (module docs), and against the making of the pools (the registry
/// takes it while it makes them). So nothing may make the pools while holding it: a change
/// looks at them only once they are made (`pools_made`, which does not wait).
pub(crate) static WQ_POOL_ATTACH_MUTEX: Mutex<()> = Mutex::new(());

/// How often the monitor re-reads the CPU set (one `sched_getaffinity`, and one read of the
/// cgroup's cpuset file where there is one).
pub(crate) const RECHECK_PERIOD: Duration = Duration::from_millis(250);

/// Reads the process's CPU set again and, if it changed, makes the engine follow it: pools of
/// CPUs that left become disassociated, pools of CPUs that came back or are new are bound to
/// their CPU again, and unbound workers are kept on online CPUs (the kernel's CPU hotplug
/// callbacks for workqueues). Returns whether the set changed.
///
/// The process's CPU set is the main thread's affinity mask cut to the cgroup's effective
/// cpuset where it can be read (see [`online_cpus`](crate::online_cpus)). The engine's
/// monitor also re-reads it about every 250 ms while it runs, so calling this is needed only
/// to have a change take effect at once (right after `sched_setaffinity` on the main thread,
/// say). CPUs that are not possible (`/sys/devices/system/cpu/possible`) are ignored, and a
/// set that would be empty is not taken.
///
/// Items queued on a CPU that left still run, on that CPU's disassociated pool, whose workers
/// may run on any online CPU and are outside concurrency management meanwhile (every waiting
/// item may start). [`Workqueue::queue_on`](crate::Workqueue::queue_on) keeps accepting such a
/// CPU.
///
/// ```
/// // Nothing changed: the set is the one already known.
/// let before = cmwq::online_cpus();
/// cmwq::refresh_cpus();
/// assert_eq!(cmwq::online_cpus(), before);
/// ```
pub fn refresh_cpus() -> bool {
    let attach = WQ_POOL_ATTACH_MUTEX.lock();
    let Some(change) = cpuset::reread() else {
        return false;
    };
    let first = apply(&change);
    drop(attach);
    // Pools with items and no worker yet: their first worker is made with no lock held, as
    // every first worker is.
    for pool in first {
        create_first_worker(&pool);
    }
    contain_quiet(
        || tracing::info!(target: "cmwq", old = ?change.old, new = ?change.new, "CPU set changed"),
    );
    true
}

/// The monitor's periodic re-read: [`refresh_cpus`] once `RECHECK_PERIOD` has passed since
/// `last`.
pub(crate) fn refresh_if_due(last: &mut Instant) {
    if last.elapsed() >= RECHECK_PERIOD {
        *last = Instant::now();
        refresh_cpus();
    }
}

/// Applies `change` to every pool (with `WQ_POOL_ATTACH_MUTEX` held); returns the pools that
/// need a first worker.
fn apply(change: &cpuset::Change) -> Vec<Arc<WorkerPool>> {
    let mut first = Vec::new();
    if !crate::pool::pools_made() {
        // Not before the engine's first use: that would fix the configuration
        // (`cmwq::configure` must come first), and there is nothing to move yet.
        return first;
    }
    for pair in crate::pool::per_cpu_pools() {
        for pool in pair {
            let Some(cpu) = pool.cpu else { continue };
            let online = change.new.binary_search(&cpu).is_ok();
            let mut g = pool.locked.lock();
            if online && !g.disassociated {
                continue; // bound and staying bound
            }
            // A disassociated pool that stays so is moved too: the online CPUs changed.
            let target: Vec<usize> = if online {
                rebind_workers(&mut g);
                vec![cpu]
            } else {
                unbind_workers(&mut g);
                change.new.clone()
            };
            // With nobody counted now, waiting items may start: wake an idle worker (or
            // have the first one made, for a pool with items and no worker yet).
            if kick_pool(&mut g) == Kick::CreateFirstWorker {
                first.push(pool.clone());
            }
            let tids = worker_tids(&g);
            drop(g);
            pin_all(pool, &tids, &target);
        }
    }
    for pool in crate::pool::all_pools() {
        if !pool.is_unbound() {
            continue;
        }
        let tids = worker_tids(&pool.locked.lock());
        let target = cpuset::restrict_to_online(&pool.attrs.allowed);
        pin_all(&pool, &tids, &target);
    }
    first
}

/// The kernel's `unbind_workers` for one pool (lock held): every worker out of concurrency
/// management, the pool disassociated. A no-op on a pool already disassociated.
fn unbind_workers(g: &mut PoolLocked) {
    if g.disassociated {
        return;
    }
    g.disassociated = true;
    for id in live_workers(g) {
        g.worker_set_flags(id, flags::UNBOUND);
    }
}

/// The kernel's `rebind_workers` for one pool (lock held): the flag cleared on every worker
/// (running ones count in `nr_running` again at once), the pool associated.
fn rebind_workers(g: &mut PoolLocked) {
    if !g.disassociated {
        return;
    }
    g.disassociated = false;
    for id in live_workers(g) {
        g.worker_clr_flags(id, flags::UNBOUND);
    }
}

/// Ids of the pool's workers (rescuers attached to it aside: they are never pinned, and their
/// `PREP` keeps them out of `nr_running` whatever else they carry).
fn live_workers(g: &PoolLocked) -> Vec<usize> {
    (0..g.workers.len())
        .filter(|&id| g.workers[id].as_ref().is_some_and(|w| !w.rescuer))
        .collect()
}

/// Thread ids of the workers that have recorded theirs (the others set their affinity
/// themselves when they start, under [`WQ_POOL_ATTACH_MUTEX`]).
fn worker_tids(g: &PoolLocked) -> Vec<i32> {
    g.workers
        .iter()
        .flatten()
        .filter(|w| !w.rescuer && !w.die && w.tid != 0)
        .map(|w| w.tid)
        .collect()
}

/// Sets the affinity of threads `tids` of `pool` to `cpus`. A thread that exited meanwhile
/// (`ESRCH`) is skipped; another failure is logged.
fn pin_all(pool: &WorkerPool, tids: &[i32], cpus: &[usize]) {
    for &tid in tids {
        if let Err(err) = topology::pin_thread(tid, cpus) {
            if err.raw_os_error() != Some(libc::ESRCH) {
                contain_quiet(
                    || tracing::warn!(target: "cmwq", pool = pool.id, tid, %err, "could not move worker"),
                );
            }
        }
    }
}

/// The CPUs a worker of `pool` starting now is allowed, and first the pod it starts in if that
/// differs (non-strict unbound pools), read with the pool lock held and `WQ_POOL_ATTACH_MUTEX`
/// held by the caller.
pub(crate) fn worker_affinity(pool: &WorkerPool, g: &PoolLocked) -> (Vec<usize>, Vec<usize>) {
    match pool.cpu {
        Some(cpu) if !g.disassociated => (vec![cpu], vec![cpu]),
        Some(_) => {
            let online = cpuset::online();
            (online.clone(), online)
        }
        None => (
            cpuset::restrict_to_online(&pool.attrs.cpumask),
            cpuset::restrict_to_online(&pool.attrs.allowed),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use parking_lot::Condvar;

    use super::*;
    use crate::pool::manage::{alloc_worker_id, new_slot};
    use crate::pool::{Attrs, Sleep};

    /// A pool (not registered) with three workers: one running and counted, one inside
    /// `blocking()`, one idle (`PREP`).
    fn pool_with_workers() -> (WorkerPool, [usize; 3]) {
        let pool = WorkerPool::new(u32::MAX, Some(0), false, Attrs::strict(0, vec![0]), false);
        let ids = {
            let mut g = pool.locked.lock();
            let mut add = |flags: u32| {
                let id = alloc_worker_id(&mut g);
                g.workers[id] = Some(new_slot(flags, Arc::new(Condvar::new()), "t".into()));
                g.nr_workers += 1;
                id
            };
            let running = add(0);
            let hinted = add(0);
            let idle = add(flags::PREP);
            g.worker(hinted).sleep = Sleep::Hinted(Instant::now());
            g.nr_running = 1;
            g.nr_hinted = 1;
            [running, hinted, idle]
        };
        (pool, ids)
    }

    #[test]
    fn unbinding_takes_every_worker_out_of_nr_running_and_rebinding_puts_them_back() {
        let (pool, [running, hinted, idle]) = pool_with_workers();
        let mut g = pool.locked.lock();
        unbind_workers(&mut g);
        assert!(g.disassociated);
        assert_eq!(g.nr_running, 0);
        for id in [running, hinted, idle] {
            assert_ne!(g.worker(id).flags & flags::UNBOUND, 0);
        }
        // Unbinding twice changes nothing.
        unbind_workers(&mut g);
        assert_eq!(g.nr_running, 0);
        // The sleeper wakes while disassociated: it does not count (blocking()'s exit).
        g.worker(hinted).sleep = Sleep::Awake;
        g.nr_hinted -= 1;
        rebind_workers(&mut g);
        assert!(!g.disassociated);
        // The two awake, processing workers count again; the idle one (PREP) does not.
        assert_eq!(g.nr_running, 2);
        for id in [running, hinted, idle] {
            assert_eq!(g.worker(id).flags & flags::UNBOUND, 0);
        }
        assert_ne!(g.worker(idle).flags & flags::PREP, 0);
        rebind_workers(&mut g);
        assert_eq!(g.nr_running, 2);
    }

    #[test]
    fn a_new_worker_of_a_disassociated_pool_may_run_on_every_online_cpu() {
        let (pool, _) = pool_with_workers();
        let mut g = pool.locked.lock();
        assert_eq!(worker_affinity(&pool, &g), (vec![0], vec![0]));
        unbind_workers(&mut g);
        let online = cpuset::online();
        assert_eq!(worker_affinity(&pool, &g), (online.clone(), online));
    }
}
