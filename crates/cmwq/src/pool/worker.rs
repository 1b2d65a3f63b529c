//! Worker threads: creation by the manager, the main loop, and running one item.

use std::cell::{Cell, RefCell};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, MutexGuard};

use crate::observe::trace;
use crate::os::topology;
use crate::pool::hotplug;
use crate::pool::manage::{manage_workers, sleeper_ready};
use crate::pool::panic::{contain, contain_quiet, Site};
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
    /// The worker slot's `in_item`: the item's epoch while this thread runs an item's
    /// function, 0 otherwise. The monitor counts a worker as asleep in an item only if it
    /// finds the same epoch there before and after reading its state in `/proc`, so that one
    /// waiting for the pool lock between tiny items does not read as a sleeper (which opened
    /// an unbound pool's creation gate and grew it to a dozen workers under a stream of empty
    /// items).
    pub(crate) in_item: Arc<AtomicU64>,
    pub(crate) name: String,
}

/// What the worker is executing.
struct Current {
    work: Work,
    /// The item's workqueue, borrowed from its pwq (see [`Current::wq`]).
    wq: *const WqShared,
}

impl Current {
    fn wq(&self) -> &WqShared {
        // SAFETY: `run_work` sets this from the `Arc<WqShared>` of the pwq the item is in
        // flight on. The pool keeps that `Arc` in the pwq's slot until the slot is released,
        // which destroy does only once the queue is quiescent, so not before this item is
        // retired; the retire comes after `run_work` has returned, and a `Current` lives only
        // inside `run_work`.
        unsafe { &*self.wq }
    }
}

thread_local! {
    static WORKER: RefCell<Option<WorkerCtx>> = const { RefCell::new(None) };
    /// The item being run by this thread: points into [`run_work`]'s frame while it calls
    /// the function, null otherwise (see [`with_current`]).
    static CURRENT: Cell<*const Current> = const { Cell::new(ptr::null()) };
}

/// Runs `f` with the item the calling thread runs, if any.
fn with_current<R>(f: impl FnOnce(Option<&Current>) -> R) -> R {
    let p = CURRENT.with(Cell::get);
    // SAFETY: `CURRENT` is non-null only while `run_work`, on this thread, is inside the call
    // that runs the function: it points to a `Current` owned by that frame, which is neither
    // moved nor mutated until the pointer has been reset (by a guard, also on unwind). Only
    // shared references are made from it, and none outlives `f`, which runs on this thread
    // during that call (user code or engine code called by it).
    f(unsafe { p.as_ref() })
}

/// Runs `f` with the calling worker's context, if the caller is a worker.
pub(crate) fn with_worker<R>(f: impl FnOnce(&WorkerCtx) -> R) -> Option<R> {
    WORKER.with(|w| w.borrow().as_ref().map(f))
}

/// The item the calling worker thread is executing, if any (the kernel's `current_work()`).
pub fn current_work() -> Option<Work> {
    with_current(|c| c.map(|c| c.work.clone()))
}

/// Id of the workqueue whose item the calling thread executes.
pub(crate) fn current_wq_id() -> Option<u64> {
    with_current(|c| c.map(|c| c.wq().id))
}

/// Flags of the workqueue whose item the calling thread executes.
pub(crate) fn current_wq_flags() -> Option<WqFlags> {
    with_current(|c| c.map(|c| c.wq().flags))
}

/// Name of the workqueue whose item the calling thread executes.
pub(crate) fn current_wq_name() -> Option<String> {
    with_current(|c| c.map(|c| c.wq().name.clone()))
}

/// Whether the calling thread is executing `work`.
pub(crate) fn is_current(work: &Work) -> bool {
    with_current(|c| c.is_some_and(|c| c.work == *work))
}

/// Describes the worker thread the caller runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkerInfo {
    /// Id of the worker pool (the `u<id>` of unbound worker names).
    pub pool_id: usize,
    /// The CPU of a per-CPU pool (also while the pool is disassociated, its CPU out of the
    /// process's CPU set and its workers running on other CPUs); `None` for unbound pools.
    pub cpu: Option<usize>,
    /// Whether the pool is a high-priority one.
    pub highpri: bool,
    /// The nice value the pool asks for (whether the OS granted it is logged at creation).
    pub nice: i32,
    /// The thread's name, as given to the OS.
    pub name: String,
}

/// Describes what the calling work item does, for dumps and [`pools`](crate::pools) (the
/// kernel's `set_worker_desc`): shown next to the worker until the item returns. Does nothing
/// outside a work item.
///
/// ```
/// use cmwq::{system_wq, Work};
///
/// let work = Work::new(|_| cmwq::set_worker_desc("sync disk 3"));
/// system_wq().queue(&work);
/// work.flush();
/// ```
pub fn set_worker_desc(desc: impl Into<String>) {
    let desc = desc.into();
    if current_work().is_none() {
        return;
    }
    if let Some((pool, id)) = with_worker(|w| (w.pool.clone(), w.id)) {
        let old = pool.locked.lock().workers[id]
            .as_mut()
            .map(|w| w.desc.replace(desc));
        drop(old); // a String: no user code, but no need to free it under the lock
    }
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

// ===== the worker thread =====

/// Records the new worker's thread id and pins it: to its CPU (per-CPU pools; every online CPU
/// while the pool is disassociated), to its pod (strict unbound pools), or into its pod and
/// then out to the queue's whole cpumask (non-strict unbound pools: it starts in the pod, the
/// scheduler may move it later); unbound masks cut to the online CPUs. Under the hotplug
/// `WQ_POOL_ATTACH_MUTEX` lock, so that a CPU-set change either sees the thread id or is seen
/// here.
fn setup_thread(pool: &WorkerPool, id: usize) {
    let res = {
        let _attach = hotplug::WQ_POOL_ATTACH_MUTEX.lock();
        let (start, allowed) = {
            let mut g = pool.locked.lock();
            if let Some(w) = g.workers[id].as_mut() {
                w.tid = topology::gettid();
            }
            hotplug::worker_affinity(pool, &g)
        };
        let mut res = topology::pin_current_thread(&start);
        if res.is_ok() && allowed != start {
            res = topology::pin_current_thread(&allowed);
        }
        res
    };
    if let Err(err) = res {
        contain_quiet(
            || tracing::warn!(target: "cmwq", pool = pool.id, %err, "could not set worker affinity"),
        );
    }
    // Always, a nice of 0 too: a new thread starts at its creator's nice, and a worker's
    // creator may be the monitor (nice -20), a worker of a high-priority pool, or a user
    // thread at any nice (`create_first_worker` runs on the queueing thread). Seen before
    // this was so, in a scheduler trace of a W5-like load: unbound workers made by the
    // monitor ran at -20.
    let nice_set = topology::set_current_nice(pool.attrs.nice);
    if let Err(err) = &nice_set {
        // A lower nice than the thread's own needs CAP_SYS_NICE or RLIMIT_NICE: keep working
        // at the inherited one.
        contain_quiet(|| {
            tracing::debug!(
                target: "cmwq",
                pool = pool.id,
                nice = pool.attrs.nice,
                %err,
                "could not set worker nice value"
            )
        });
        pool.nice_failed
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    if pool.attrs.nice < 0 && nice_set.is_ok() {
        // High-priority workers (the kernel's recipe for latency-sensitive items) also ask
        // for the shortest slice, EEVDF's knob for wake-up latency (BENCHMARKS.md, "A
        // shorter spin, workers at their pool's nice, and a short slice").
        if let Err(err) = topology::set_current_slice(HIGHPRI_SLICE, pool.attrs.nice) {
            contain_quiet(
                || tracing::debug!(target: "cmwq", pool = pool.id, %err, "could not set worker slice"),
            );
        }
    }
}

/// The time slice high-priority workers ask for: the least the kernel allows (0.1 ms).
const HIGHPRI_SLICE: Duration = Duration::from_micros(100);

/// Sets the calling thread's worker context (also used by rescuers while attached).
pub(crate) fn set_worker_ctx(ctx: Option<WorkerCtx>) {
    WORKER.with(|w| *w.borrow_mut() = ctx);
}

pub(crate) fn worker_thread(
    pool: Arc<WorkerPool>,
    id: usize,
    cv: Arc<Condvar>,
    in_item: Arc<AtomicU64>,
    name: String,
) {
    setup_thread(&pool, id);
    set_worker_ctx(Some(WorkerCtx {
        pool: pool.clone(),
        id,
        in_item,
        name,
    }));
    let mut g = pool.locked.lock();
    loop {
        // Sleep until woken (or told to die; `kill_worker` did the accounting).
        loop {
            let w = g.worker(id);
            if w.die {
                // Killed while busy (`stop_workers` kills every live worker), it has entered
                // idle since: leave again, or the idle list keeps an id whose slot is gone.
                if w.idle {
                    g.worker_leave_idle(id);
                }
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
            let mut deferred = Deferred::default();
            let mut first = true;
            loop {
                if first || keep_working(g.counters()) {
                    first = false;
                    if let Some(entry) = g.worklist.pop_front() {
                        run_entry(&pool, &mut g, id, entry, &mut deferred);
                        continue;
                    }
                }
                if deferred.is_empty() {
                    if g.worklist.is_empty() && may_spin(&pool, &mut g) && spin_for_work(&mut g) {
                        continue;
                    }
                    break;
                }
                // Unlocked, so work may arrive meanwhile, queued by someone who saw this
                // worker running and woke nobody: look again before going idle.
                MutexGuard::unlocked(&mut g, || deferred.release());
            }
            g.worker_set_flags(id, flags::PREP);
        }
        g.worker_enter_idle(id);
        g.debug_check();
    }
}

/// How long a worker that ran out of items looks for more before it goes idle: about the
/// time a producer takes to queue the next item of a stream, in looks 32, 64, 64, ... pause
/// instructions apart. A time, not a count of pauses: a pause takes 28 ns on the AMD EPYC
/// we measured (1,000 in 28 µs), and its length differs between CPU models. A longer spin
/// costs more than it finds: with W5's sleepers (`cmwq-bench`, 2 cores) the probes' median
/// was 10-22 µs with a spin of 1,000 pauses and 4 µs with this one or none, as the long
/// spinner, counted on to take the next item, often waited for a CPU itself; W1's fresh items
/// cost 245-313 ns each with the long spin, 332-393 ns with this one and 643-654 ns with none
/// (BENCHMARKS.md, "A shorter spin, workers at their pool's nice, and a short slice"). No
/// yields: a worker
/// that yielded its CPU to a busy thread could stay off it for a whole time slice while the
/// item it was counted on to take waits (measured: W5's median latency went from 7 to 66 µs
/// with two yield rounds).
const SPIN_BUDGET: Duration = Duration::from_micros(5);

/// Whether a worker that ran out of items may spin before going idle: only on an unbound
/// pool, only if no other worker of the pool spins already, and only while spinning pays
/// (`spin_score`; with the score at 0, one idle transition in 16 spins to find out whether it
/// pays again). A per-CPU pool's worker would spin on the CPU of the threads that feed it
/// (`queue()` picks the caller's CPU), keeping them from queueing the very item it waits
/// for. A second spinner, or a spinner that shares its CPU with the producer (the other CPUs
/// busy elsewhere), only takes CPU from the producer: with three spinning workers of one
/// unbound pool and one CPU left to the process, W1 went from 0.3 to 2-3 µs per item.
fn may_spin(pool: &WorkerPool, g: &mut PoolLocked) -> bool {
    if !pool.is_unbound() || g.nr_spinning > 0 {
        return false;
    }
    spin_pays(g.spin_score, &mut g.spin_skipped)
}

/// The score part of [`may_spin`]: yes while the score is above 0, else every 16th call.
fn spin_pays(score: u8, skipped: &mut u8) -> bool {
    if score > 0 {
        return true;
    }
    *skipped = skipped.wrapping_add(1);
    *skipped % 16 == 0
}

/// The score after a spin that found work or not (see `PoolLocked::spin_score`).
fn next_spin_score(score: u8, found: bool) -> u8 {
    if found {
        score.saturating_add(2).min(crate::pool::SPIN_SCORE_MAX)
    } else {
        score.saturating_sub(1)
    }
}

/// Waits a little for work to arrive on the pool's worklist, with the pool lock released
/// between looks; returns whether some did (the lock is held again either way). Meanwhile
/// the worker counts in `nr_spinning`, so an item queued now wakes nobody: this worker takes
/// it (it looks once more, under the lock, after its last round). Saves the futex wake-up of
/// an idle worker, and the worker's sleep, when items come a little slower than they run.
fn spin_for_work(g: &mut MutexGuard<'_, PoolLocked>) -> bool {
    g.nr_spinning += 1;
    let start = Instant::now();
    let mut found = false;
    let mut pauses = 32u32;
    loop {
        MutexGuard::unlocked(g, || {
            for _ in 0..pauses {
                std::hint::spin_loop();
            }
        });
        if !g.worklist.is_empty() || g.destroying {
            found = !g.worklist.is_empty();
            break;
        }
        if start.elapsed() >= SPIN_BUDGET {
            break;
        }
        pauses = (pauses * 2).min(64);
    }
    g.nr_spinning -= 1;
    g.spin_score = next_spin_score(g.spin_score, found);
    found
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

/// Takes `entry` from the worklist for worker `id`, whose scheduled list is empty, and runs
/// it and whatever lands on that list meanwhile; or hands it to the worker already running
/// the same item. The same as [`assign_work`] then [`process_scheduled`], without the trip
/// through the list.
pub(crate) fn run_entry(
    pool: &Arc<WorkerPool>,
    g: &mut MutexGuard<'_, PoolLocked>,
    id: usize,
    entry: Entry,
    deferred: &mut Deferred,
) {
    debug_assert!(g.worker(id).scheduled.is_empty());
    if let Some(&other) = g.busy.get(&entry.work.key()) {
        if other != id {
            g.worker(other).scheduled.push_back(entry);
            return;
        }
    }
    process_one_work(pool, g, id, entry, deferred);
    process_scheduled(pool, g, id, deferred);
}

/// Runs `id`'s scheduled list to empty (it may grow meanwhile).
pub(crate) fn process_scheduled(
    pool: &Arc<WorkerPool>,
    g: &mut MutexGuard<'_, PoolLocked>,
    id: usize,
    deferred: &mut Deferred,
) {
    while let Some(entry) = g.worker(id).scheduled.pop_front() {
        process_one_work(pool, g, id, entry, deferred);
    }
}

/// Runs one item with the pool lock dropped around the call (the kernel's
/// `process_one_work`).
///
/// User code (the function, the trace subscriber, and the `Drop` of the item and of what it
/// captured) runs only with the pool lock dropped, inside [`contain`]. The engine's reference
/// to the item is given up only after the item's bookkeeping is done (retired from its pwq,
/// out of the busy map): if that reference is the last, its `Drop` runs right away with the
/// lock dropped, before the item's flushers are released, if somebody waits on this run;
/// otherwise it is kept in `deferred` and given up with the others kept there, unlocked and
/// with no item held, once [`DEFERRED_MAX`] are kept or when the worker stops taking items.
fn process_one_work(
    pool: &Arc<WorkerPool>,
    g: &mut MutexGuard<'_, PoolLocked>,
    id: usize,
    entry: Entry,
    deferred: &mut Deferred,
) {
    let Entry {
        work,
        slot,
        color,
        function,
    } = entry;
    let key = work.key();
    g.busy.insert(key, id);
    g.nr_started += 1;
    let pwq = g.pwq(slot);
    pwq.nr_started += 1;
    // Borrowed, not cloned: no write to the queue's shared line per item (producers read it
    // on every queueing). Valid until the retire below: the pwq holds the queue until the
    // item is retired (see `Current::wq`).
    let wq_ptr: *const WqShared = Arc::as_ptr(&pwq.wq);
    // SAFETY: as for `Current::wq`: the pwq's `Arc` outlives every use of `wq` before the
    // retire; after it, only `g.pwq(slot).wq` (taken before the retire) is used.
    let wq: &WqShared = unsafe { &*wq_ptr };
    let cpu_intensive = wq.flags.contains(WqFlags::CPU_INTENSIVE);
    let w = g.worker(id);
    w.current = Some((key, slot));
    w.current_function = function;
    w.epoch += 1;
    let epoch = w.epoch;
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

    let may_leave_pod = pool.attrs.may_leave_pod();
    let (work, repatriated) = MutexGuard::unlocked(g, || {
        let repatriated = may_leave_pod && repatriate(pool);
        // Relaxed: a hint for the monitor's samples (see `WorkerSlot::in_item`).
        let _ = with_worker(|w| w.in_item.store(epoch, Ordering::Relaxed));
        let work = run_work(work, wq, function);
        let _ = with_worker(|w| w.in_item.store(0, Ordering::Relaxed));
        (work, repatriated)
    });
    if repatriated {
        g.pwq(slot).nr_repatriated += 1;
    }

    // Set by the queue's flag or by the monitor's CPU-hog detection; ends with the item.
    g.worker_clr_flags(id, flags::CPU_INTENSIVE);
    g.busy.remove(&key);
    let w = g.worker(id);
    w.current = None;
    w.seen_running_at = None;
    if w.desc.is_some() {
        w.desc = None;
    }
    let waiters = std::mem::take(&mut w.current_waiters);
    let pwq = g.pwq(slot);
    pwq.nr_completed += 1;
    // The queue for the item's release, counted before the retire (after it, destroy may
    // free the queue); `wq` is not used past this point. Somebody waiting for this run to end
    // (who may then expect the engine to hold no reference) has it given up at once;
    // otherwise it is kept.
    let release_now = if waiters.is_empty() {
        Err(deferred.keep(work, &pwq.wq, function))
    } else {
        Ok((work, pwq.wq.clone()))
    };
    let handoff = g.dec_nr_in_flight(slot, color, true);
    if handoff.is_some() {
        // A slot of a shared node goes to the node's next waiting pwq, maybe on another
        // pool: handed on with this pool's lock dropped (`queue/node_active.rs`).
        MutexGuard::unlocked(g, || handoff.run());
    }
    match release_now {
        Ok((work, wq)) => MutexGuard::unlocked(g, || {
            release(work, &wq, function);
            deferred.release();
            for c in waiters {
                c.complete();
            }
        }),
        Err(true) => MutexGuard::unlocked(g, || deferred.release()),
        Err(false) => {}
    }
}

/// The kernel's repatriation, emulated: a non-strict worker about to start an item while
/// running outside its pod is moved into the pod (affinity set to the pod, which migrates the
/// thread, then back to the whole cpumask). Returns whether it was moved. Inside the pod the
/// cost is one `sched_getcpu` (a vDSO call). Called with no lock held.
///
/// A pod none of whose CPUs is online (the process's CPU set lost them) takes nobody back:
/// the worker stays where it is, inside the online part of the cpumask.
fn repatriate(pool: &WorkerPool) -> bool {
    if pool.attrs.in_pod(topology::current_cpu()) {
        return false;
    }
    let possible = topology::possible();
    if !pool.attrs.cpumask.iter().any(|&c| possible.is_online(c)) {
        return false;
    }
    let res = topology::pin_current_thread(&topology::restrict_to_online(&pool.attrs.cpumask))
        .and_then(|()| {
            topology::pin_current_thread(&topology::restrict_to_online(&pool.attrs.allowed))
        });
    if let Err(err) = res {
        contain_quiet(
            || tracing::warn!(target: "cmwq", pool = pool.id, %err, "could not repatriate worker"),
        );
        return false;
    }
    true
}

/// Gives up the engine's reference to an item of `wq` (whose function is `function`),
/// containing a panic of its `Drop`.
fn release(work: crate::Work, wq: &WqShared, function: &'static str) {
    contain(wq, function, Site::Drop, move || drop(work));
}

/// References to items a worker has run, kept by the worker (or rescuer) loop until it holds
/// no lock and no item (see [`process_one_work`]): giving one up may run the item's `Drop`,
/// which is user code and may wait for anything, the engine's items included. Dropping a
/// `Deferred` that holds items is a bug (their `Drop` would run wherever it dies): call
/// [`release`](Self::release).
#[derive(Default)]
pub(crate) struct Deferred {
    kept: Vec<Kept>,
    /// The queue of the last kept item (null when none is kept): consecutive items of one
    /// queue share the first one's counted reference, so keeping costs no shared write.
    last_wq: *const WqShared,
}

/// One kept reference: `wq` is `None` when it is the same as the previous one's.
struct Kept {
    work: Work,
    wq: Option<Arc<WqShared>>,
    function: &'static str,
}

/// Most references a worker keeps before it gives them up: one unlock per this many items
/// instead of one per item.
const DEFERRED_MAX: usize = 32;

impl Deferred {
    /// Keeps one; returns whether the list is full (the caller then releases it).
    fn keep(&mut self, work: Work, wq: &Arc<WqShared>, function: &'static str) -> bool {
        if self.kept.capacity() == 0 {
            self.kept.reserve_exact(DEFERRED_MAX);
        }
        let wq = if ptr::eq(self.last_wq, Arc::as_ptr(wq)) {
            None
        } else {
            self.last_wq = Arc::as_ptr(wq);
            Some(wq.clone())
        };
        self.kept.push(Kept { work, wq, function });
        self.kept.len() >= DEFERRED_MAX
    }

    /// Whether nothing is kept.
    pub(crate) fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Gives up every kept reference. Call with no engine lock held and no item held.
    pub(crate) fn release(&mut self) {
        self.last_wq = ptr::null();
        let mut wq: Option<Arc<WqShared>> = None;
        for kept in self.kept.drain(..) {
            if kept.wq.is_some() {
                wq = kept.wq;
            }
            let wq = wq
                .as_ref()
                .expect("the first kept reference carries its queue");
            release(kept.work, wq, kept.function);
        }
    }
}

impl Drop for Deferred {
    fn drop(&mut self) {
        debug_assert!(
            self.kept.is_empty(),
            "kept item references must be released"
        );
    }
}

/// Runs the item's function with `CURRENT` set; a panic in it, or in a trace subscriber, is
/// contained and reported. Hands the item back for the bookkeeping.
fn run_work(work: Work, wq: &WqShared, function: &'static str) -> Work {
    let key = work.key();
    // Subscribers are user code: called inside `contain`, and only when one listens.
    let traced = trace::enabled();
    if traced {
        contain(wq, function, Site::Trace, || {
            trace::execute_start(key, function);
        });
    }
    let cur = Current {
        work,
        wq: ptr::from_ref(wq),
    };
    {
        /// Resets `CURRENT` to what it was, also if the call below unwinds.
        struct Restore(*const Current);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(&cur)));
        contain(cur.wq(), function, Site::Run, || {
            if traced {
                let span = trace::execution_span(&cur.wq().name, function);
                let _entered = span.enter();
                cur.work.run()
            } else {
                cur.work.run()
            }
        });
    }
    let Current { work, .. } = cur;
    if traced {
        contain(wq, function, Site::Trace, || {
            trace::execute_end(key, function)
        });
    }
    work
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spinning_stops_paying_after_failed_spins_and_is_retried_now_and_then() {
        // From the top score, 16 failed spins in a row bring it to 0.
        let mut score = crate::pool::SPIN_SCORE_MAX;
        for _ in 0..16 {
            assert!(spin_pays(score, &mut 0));
            score = next_spin_score(score, false);
        }
        assert_eq!(score, 0);
        // Then one idle transition in 16 spins, to notice when it pays again.
        let mut skipped = 0;
        let spins = (0..64).filter(|_| spin_pays(score, &mut skipped)).count();
        assert_eq!(spins, 4);
        // A spin that finds work earns two failures' worth, up to the top.
        assert_eq!(next_spin_score(0, true), 2);
        assert_eq!(
            next_spin_score(crate::pool::SPIN_SCORE_MAX, true),
            crate::pool::SPIN_SCORE_MAX
        );
    }
}
