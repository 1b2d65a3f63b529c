//! Worker management: creating workers (the manager role), the first worker of a pool,
//! retrying after failures, and reaping idle workers.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, MutexGuard};

use crate::config::{config, creation_fails};
use crate::os::topology;
use crate::pool::{
    flags, kick_pool, need_to_create_worker, too_many_workers, PoolLocked, Sleep, WorkerPool,
    WorkerSlot,
};

fn worker_name(pool: &WorkerPool, id: usize) -> String {
    match pool.cpu {
        Some(cpu) => format!("kworker/{cpu}:{id}{}", if pool.highpri { "H" } else { "" }),
        None => format!("kworker/u{}:{id}", pool.id),
    }
}

/// A free worker id (the lowest free slot; the number in the thread name).
pub(crate) fn alloc_worker_id(g: &mut PoolLocked) -> usize {
    match g.workers.iter().position(Option::is_none) {
        Some(i) => i,
        None => {
            g.workers.push(None);
            g.workers.len() - 1
        }
    }
}

/// A fresh worker slot.
pub(crate) fn new_slot(flags: u32, cv: Arc<Condvar>, name: String) -> WorkerSlot {
    WorkerSlot {
        flags,
        wake: true,
        die: false,
        idle: false,
        sleep: Sleep::Awake,
        epoch: 0,
        rescuer: false,
        scheduled: Default::default(),
        current: None,
        current_function: "",
        name,
        current_waiters: Vec::new(),
        cv,
        in_item: Arc::new(AtomicU64::new(0)),
        tid: 0,
        join: None,
        last_active: Instant::now(),
        desc: None,
        seen_running_at: None,
    }
}

/// Creates one worker; it starts idle but woken, so it looks at the worklist once. Drops the
/// pool lock while the thread is spawned. Returns false if no thread could be made (the OS
/// refused, or fault injection); the failure time is recorded for the mayday logic.
///
/// The pool may start being destroyed while the lock is dropped (`stop_workers` then kills
/// the new slot and counts it out of `nr_workers`): the thread, if it was made, is joined here
/// (it exits at once), and a failed spawn does not count the slot out a second time.
pub(crate) fn create_worker(pool: &Arc<WorkerPool>, g: &mut MutexGuard<'_, PoolLocked>) -> bool {
    if g.destroying {
        return false;
    }
    let now = Instant::now();
    g.last_create_attempt = Some(now);
    if creation_fails() {
        g.creation_failed_since.get_or_insert(now);
        return false;
    }
    let id = alloc_worker_id(g);
    let name = worker_name(pool, id);
    let cv = Arc::new(Condvar::new());
    // Workers of unbound and disassociated pools stay out of concurrency management (the
    // kernel's `worker_attach_to_pool` sets `WORKER_UNBOUND` in a disassociated pool).
    let base = if pool.is_unbound() || g.disassociated {
        flags::UNBOUND
    } else {
        0
    };
    pool.note_started();
    let slot = new_slot(flags::PREP | base, cv.clone(), name.clone());
    let in_item = slot.in_item.clone();
    g.workers[id] = Some(slot);
    g.nr_workers += 1;
    g.worker_enter_idle(id);

    let spawned = MutexGuard::unlocked(g, || {
        let pool = pool.clone();
        let name2 = name.clone();
        std::thread::Builder::new()
            .name(topology::thread_name(&name))
            .spawn(move || crate::pool::worker::worker_thread(pool, id, cv, in_item, name2))
    });
    let killed = g.workers[id].as_ref().is_none_or(|w| w.die);
    match spawned {
        Ok(join) if killed => {
            // Stopped meanwhile: the thread sees `die` and exits; nobody else will join it.
            MutexGuard::unlocked(g, || {
                let _ = join.join();
            });
            false
        }
        Ok(join) => {
            if let Some(w) = g.workers[id].as_mut() {
                w.join = Some(join);
            }
            g.creation_failed_since = None;
            true
        }
        Err(err) => {
            if !killed {
                if g.workers[id].as_ref().is_some_and(|w| w.idle) {
                    g.worker_leave_idle(id);
                }
                g.workers[id] = None;
                g.nr_workers -= 1;
            } else {
                g.workers[id] = None;
            }
            g.creation_failed_since.get_or_insert(Instant::now());
            drop_lock_and_warn(g, pool.id, err);
            false
        }
    }
}

/// Logs a failed creation with the pool lock dropped (a subscriber is user code).
fn drop_lock_and_warn(g: &mut MutexGuard<'_, PoolLocked>, pool: u32, err: std::io::Error) {
    MutexGuard::unlocked(
        g,
        || tracing::warn!(target: "cmwq", pool, %err, "failed to create worker thread"),
    );
}

/// Takes the manager role if free and creates workers until the pool has an idle one (the
/// kernel's `manage_workers` + `maybe_create_worker`), sleeping `create_cooldown` after each
/// failure. Returns whether it managed.
pub(crate) fn manage_workers(pool: &Arc<WorkerPool>, g: &mut MutexGuard<'_, PoolLocked>) -> bool {
    if g.manager_active {
        return false;
    }
    g.manager_active = true;
    while need_to_create_worker(g.counters()) && !g.destroying {
        throttle(g);
        if !need_to_create_worker(g.counters()) || !g.may_create_worker() {
            break;
        }
        if !create_worker(pool, g) {
            let cooldown = config().create_cooldown;
            MutexGuard::unlocked(g, || std::thread::sleep(cooldown));
        }
    }
    g.manager_active = false;
    true
}

/// Most sleepers looked at by [`sleeper_ready`].
const READY_READS: usize = 2;

/// Whether a worker of this per-CPU pool that sleeps in `blocking()` has been woken and waits
/// for the CPU (state `R` in `/proc`): it counts in `nr_running` again only once it runs, and
/// until then the pool looks as if nobody could use the CPU. A new worker would only queue
/// behind it, so the manager makes none. Reads the state of the [`READY_READS`] longest
/// sleepers (the likeliest to have woken) with the pool lock dropped; false for unbound pools.
/// Workers marked CPU-intensive are left out: one that spins inside `blocking()` is marked
/// by the monitor's hog detection, and must not keep the pool from making workers.
pub(crate) fn sleeper_ready(pool: &WorkerPool, g: &mut MutexGuard<'_, PoolLocked>) -> bool {
    if pool.cpu.is_none() {
        return false;
    }
    let mut sleepers: Vec<(Instant, i32)> = g
        .workers
        .iter()
        .flatten()
        .filter(|w| w.flags & flags::CPU_INTENSIVE == 0)
        .filter_map(|w| match w.sleep {
            Sleep::Hinted(since) => Some((since, w.tid)),
            Sleep::Awake => None,
        })
        .collect();
    if sleepers.is_empty() {
        return false;
    }
    sleepers.sort_unstable();
    sleepers.truncate(READY_READS);
    MutexGuard::unlocked(g, || {
        sleepers
            .iter()
            .any(|&(_, tid)| topology::task_state(tid) == Some(b'R'))
    })
}

/// Waits out the creation interval since the pool's last creation (pools with at least two
/// workers only; see `pool::create_interval`), with the pool lock dropped.
fn throttle(g: &mut MutexGuard<'_, PoolLocked>) {
    let interval = g.create_interval();
    if g.nr_workers < 2 || interval.is_zero() {
        return;
    }
    if let Some(wait) = g
        .last_create_attempt
        .and_then(|t| interval.checked_sub(t.elapsed()))
    {
        MutexGuard::unlocked(g, || std::thread::sleep(wait));
    }
}

/// Creates a pool's first worker (a queue found the pool without any). On failure the monitor
/// retries after the cooldown.
pub(crate) fn create_first_worker(pool: &Arc<WorkerPool>) {
    crate::cm::monitor::ensure_started();
    let mut g = pool.locked.lock();
    if g.nr_workers > 0 || g.manager_active || g.destroying {
        return;
    }
    g.manager_active = true;
    // The first worker and, once it is busy, its spare (a worker that found this manager
    // active went on without making one). Re-checked after every creation, like the
    // manager's loop; beyond two workers the workers' own manager role takes over.
    loop {
        if !create_worker(pool, &mut g) {
            break;
        }
        if g.nr_workers >= 2 || !need_to_create_worker(g.counters()) {
            break;
        }
    }
    g.manager_active = false;
    let _ = kick_pool(&mut g);
    if need_to_create_worker(g.counters()) {
        // Still short (creation failed, or both are busy already): the monitor retries.
        drop(g);
        crate::cm::monitor::note_busy();
    }
}

/// Monitor duty: a pool that needs a worker, has no manager, and whose last attempt is older
/// than the cooldown gets one more creation attempt (this is how pools without any worker
/// recover once creation works again).
pub(crate) fn retry_creation(pool: &Arc<WorkerPool>) {
    let mut g = pool.locked.lock();
    if g.manager_active || g.destroying || !need_to_create_worker(g.counters()) {
        return;
    }
    if !g.may_create_worker() || sleeper_ready(pool, &mut g) {
        return;
    }
    // Re-checked: `sleeper_ready` dropped the lock.
    if g.manager_active || g.destroying || !need_to_create_worker(g.counters()) {
        return;
    }
    let wait = if g.creation_failed_since.is_some() {
        config().create_cooldown
    } else {
        g.create_interval()
    };
    if g.last_create_attempt.is_some_and(|t| t.elapsed() < wait) {
        return;
    }
    g.manager_active = true;
    create_worker(pool, &mut g);
    g.manager_active = false;
    let _ = kick_pool(&mut g);
}

/// Monitor duty: reaps the oldest idle workers while the pool has too many and they have been
/// idle for `idle_worker_timeout` (the kernel's idle timer + `idle_cull_fn`).
pub(crate) fn reap_idle_workers(pool: &Arc<WorkerPool>) {
    let timeout = config().idle_worker_timeout;
    let joins = {
        let mut g = pool.locked.lock();
        let mut joins = Vec::new();
        while too_many_workers(g.counters()) {
            let Some(&oldest) = g.idle.first() else { break };
            if g.worker(oldest).last_active.elapsed() < timeout {
                break;
            }
            if let Some(j) = g.kill_worker(oldest) {
                joins.push(j);
            }
        }
        joins
    };
    for j in joins {
        let _ = j.join();
    }
}
