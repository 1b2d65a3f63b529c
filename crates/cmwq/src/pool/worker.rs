//! Worker threads: creation by the manager, the main loop, and running one item.

use std::any::Any;
use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, MutexGuard, RwLock};

use crate::os::topology;
use crate::pool::manage::{manage_workers, sleeper_ready};
use crate::pool::{
    flags, keep_working, kick_pool, may_start_working, need_more_worker, Entry, PoolLocked,
    WorkerPool,
};
use crate::queue::workqueue::{WqFlags, WqShared};
use crate::Work;

// ===== thread-local context =====

/// Set once on every worker thread.
pub(crate) struct WorkerCtx {
    pub(crate) pool: Arc<WorkerPool>,
    pub(crate) id: usize,
    pub(crate) name: String,
}

/// What the worker is executing.
struct Current {
    work: Work,
    wq: Arc<WqShared>,
}

thread_local! {
    static WORKER: RefCell<Option<WorkerCtx>> = const { RefCell::new(None) };
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Runs `f` with the calling worker's context, if the caller is a worker.
pub(crate) fn with_worker<R>(f: impl FnOnce(&WorkerCtx) -> R) -> Option<R> {
    WORKER.with(|w| w.borrow().as_ref().map(f))
}

/// The item the calling worker thread is executing, if any (the kernel's `current_work()`).
pub fn current_work() -> Option<Work> {
    CURRENT.with(|c| c.borrow().as_ref().map(|c| c.work.clone()))
}

/// Id of the workqueue whose item the calling thread executes.
pub(crate) fn current_wq_id() -> Option<u64> {
    CURRENT.with(|c| c.borrow().as_ref().map(|c| c.wq.id))
}

/// Whether the calling thread is executing `work`.
pub(crate) fn is_current(work: &Work) -> bool {
    CURRENT.with(|c| c.borrow().as_ref().is_some_and(|c| c.work == *work))
}

/// Describes the worker thread the caller runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Id of the worker pool (the `u<id>` of unbound worker names).
    pub pool_id: usize,
    /// The CPU of a per-CPU pool; `None` for unbound pools.
    pub cpu: Option<usize>,
    /// Whether the pool is a high-priority one.
    pub highpri: bool,
    /// The nice value the pool asks for (whether the OS granted it is logged at creation).
    pub nice: i32,
    /// The thread's name, as given to the OS.
    pub name: String,
}

/// Information about the calling worker thread; `None` on other threads.
pub fn current_worker() -> Option<WorkerInfo> {
    with_worker(|w| WorkerInfo {
        pool_id: w.pool.id as usize,
        cpu: w.pool.cpu,
        highpri: w.pool.highpri,
        nice: w.pool.attrs.nice,
        name: w.name.clone(),
    })
}

// ===== panic reports =====

/// A work function's panic, as given to the hook set with [`set_panic_hook`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct WorkPanic {
    /// Name of the workqueue the item ran on.
    pub workqueue: String,
    /// The panic message (or a placeholder for non-string payloads).
    pub message: String,
    /// Type name of the work function or item.
    pub function: &'static str,
}

type PanicHook = Box<dyn Fn(&WorkPanic) + Send + Sync>;

fn panic_hook() -> &'static RwLock<Option<PanicHook>> {
    static HOOK: OnceLock<RwLock<Option<PanicHook>>> = OnceLock::new();
    HOOK.get_or_init(|| RwLock::new(None))
}

/// Sets the function told about every panic caught in a work function (replacing the default,
/// which prints one line with the workqueue's name to stderr). The worker that caught the panic
/// carries on with the next item.
pub fn set_panic_hook(hook: impl Fn(&WorkPanic) + Send + Sync + 'static) {
    *panic_hook().write() = Some(Box::new(hook));
}

fn report_panic(wq: &WqShared, work: &Work, payload: Box<dyn Any + Send>) {
    let message = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    };
    let report = WorkPanic {
        workqueue: wq.name.clone(),
        message,
        function: work.func_name(),
    };
    tracing::error!(
        target: "cmwq",
        workqueue = %report.workqueue,
        function = report.function,
        "work function panicked: {}",
        report.message
    );
    match &*panic_hook().read() {
        Some(hook) => hook(&report),
        None => eprintln!(
            "cmwq: work item {} on workqueue {:?} panicked: {}",
            report.function, report.workqueue, report.message
        ),
    }
}

// ===== the worker thread =====

fn setup_thread(pool: &WorkerPool) {
    if let Err(err) = topology::pin_current_thread(&pool.attrs.cpumask) {
        tracing::warn!(target: "cmwq", pool = pool.id, %err, "could not set worker affinity");
    }
    if pool.attrs.nice != 0 {
        if let Err(err) = topology::set_current_nice(pool.attrs.nice) {
            // Negative nice needs CAP_SYS_NICE or RLIMIT_NICE: keep working at the default.
            tracing::debug!(
                target: "cmwq",
                pool = pool.id,
                nice = pool.attrs.nice,
                %err,
                "could not set worker nice value"
            );
            pool.nice_failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Sets the calling thread's worker context (also used by rescuers while attached).
pub(crate) fn set_worker_ctx(ctx: Option<WorkerCtx>) {
    WORKER.with(|w| *w.borrow_mut() = ctx);
}

pub(crate) fn worker_thread(pool: Arc<WorkerPool>, id: usize, cv: Arc<Condvar>, name: String) {
    setup_thread(&pool);
    set_worker_ctx(Some(WorkerCtx {
        pool: pool.clone(),
        id,
        name,
    }));
    let mut g = pool.locked.lock();
    if let Some(w) = g.workers[id].as_mut() {
        w.tid = topology::gettid();
        // SAFETY: pthread_self has no preconditions.
        w.pthread = Some(unsafe { libc::pthread_self() });
    }
    loop {
        // Sleep until woken (or told to die; `kill_worker` did the accounting).
        loop {
            let w = g.worker(id);
            if w.die {
                g.workers[id] = None;
                return;
            }
            if w.wake {
                w.wake = false;
                break;
            }
            cv.wait(&mut g);
        }
        g.worker_leave_idle(id);

        if should_process(&pool, &mut g) {
            g.worker_clr_flags(id, flags::PREP);
            crate::cm::monitor::note_busy();
            loop {
                let Some(entry) = g.worklist.pop_front() else {
                    break;
                };
                if assign_work(&mut g, id, entry) {
                    process_scheduled(&pool, &mut g, id);
                }
                if !keep_working(g.counters()) {
                    break;
                }
            }
            g.worker_set_flags(id, flags::PREP);
        }
        g.worker_enter_idle(id);
        g.debug_check();
    }
}

/// The kernel's `recheck:` step: is there work for this worker, and is there a spare idle
/// worker to take over if it blocks (else become the manager and make one)?
fn should_process(pool: &Arc<WorkerPool>, g: &mut MutexGuard<'_, PoolLocked>) -> bool {
    loop {
        let c = g.counters();
        if !need_more_worker(c) {
            return false;
        }
        if !may_start_working(c) {
            if g.may_create_worker() && !sleeper_ready(pool, g) && manage_workers(pool, g) {
                continue;
            }
            // Going on without a spare (another thread manages, or the CPU is saturated):
            // make sure the monitor watches this pool.
            crate::cm::monitor::note_busy();
        }
        return true;
    }
}

/// Puts `entry` on the list of the worker already running the same item, if any
/// (non-reentrancy), else on `id`'s list. Returns whether `id` got it.
pub(crate) fn assign_work(g: &mut PoolLocked, id: usize, entry: Entry) -> bool {
    let key = entry.work.key();
    if let Some(&other) = g.busy.get(&key) {
        if other != id {
            g.worker(other).scheduled.push_back(entry);
            return false;
        }
    }
    g.worker(id).scheduled.push_back(entry);
    true
}

/// Runs `id`'s scheduled list to empty (it may grow meanwhile).
pub(crate) fn process_scheduled(
    pool: &Arc<WorkerPool>,
    g: &mut MutexGuard<'_, PoolLocked>,
    id: usize,
) {
    while let Some(entry) = g.worker(id).scheduled.pop_front() {
        process_one_work(pool, g, id, entry);
    }
}

/// Runs one item with the pool lock dropped around the call (the kernel's
/// `process_one_work`).
fn process_one_work(
    pool: &Arc<WorkerPool>,
    g: &mut MutexGuard<'_, PoolLocked>,
    id: usize,
    entry: Entry,
) {
    let Entry { work, slot, color } = entry;
    let key = work.key();
    g.busy.insert(key, id);
    let wq = {
        let pwq = g.pwq(slot);
        pwq.nr_started += 1;
        pwq.wq.clone()
    };
    let cpu_intensive = wq.flags.contains(WqFlags::CPU_INTENSIVE);
    let w = g.worker(id);
    w.current = Some((key, slot));
    w.epoch += 1;
    if cpu_intensive {
        g.worker_set_flags(id, flags::CPU_INTENSIVE);
    }
    // For workers outside concurrency management this chains execution: one more idle worker
    // is woken while work remains.
    let _ = kick_pool(g);
    work.data().start_execution(pool.id);
    if !g.flush_waiters.is_empty() {
        if let Some(waiters) = g.flush_waiters.remove(&key) {
            g.worker(id).current_waiters.extend(waiters);
        }
    }

    MutexGuard::unlocked(g, || run_work(work, wq));

    // Set by the queue's flag or by the monitor's CPU-hog detection; ends with the item.
    g.worker_clr_flags(id, flags::CPU_INTENSIVE);
    g.busy.remove(&key);
    let w = g.worker(id);
    w.current = None;
    for c in w.current_waiters.drain(..) {
        c.complete();
    }
    g.pwq(slot).nr_completed += 1;
    g.dec_nr_in_flight(slot, color, true);
}

fn run_work(work: Work, wq: Arc<WqShared>) {
    tracing::trace!(target: "cmwq", work = work.key(), function = work.func_name(), "workqueue_execute_start");
    CURRENT.with(|c| *c.borrow_mut() = Some(Current { work, wq }));
    let result = CURRENT.with(|c| {
        let cur = c.borrow();
        let cur = cur.as_ref().expect("current work set above");
        catch_unwind(AssertUnwindSafe(|| cur.work.run()))
    });
    let Current { work, wq } = CURRENT
        .with(|c| c.borrow_mut().take())
        .expect("current work set above");
    tracing::trace!(target: "cmwq", work = work.key(), "workqueue_execute_end");
    if let Err(payload) = result {
        report_panic(&wq, &work, payload);
    }
}
