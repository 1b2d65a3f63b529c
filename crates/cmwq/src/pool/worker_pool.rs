//! Worker pools: the shared worklist, the workers, and the rules that decide when a worker runs.
//!
//! Two pools per possible CPU (normal and high priority, workers pinned to the CPU while it is
//! online, disassociated while not: `pool/hotplug.rs`) exist for the life of the process; unbound pools are created per distinct [`Attrs`] and shared by every
//! unbound workqueue with equal attributes, and destroyed when the last one goes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};
use rustc_hash::FxHashMap;

use crate::os::sync::Completion;
use crate::pool::list::ItemList;
use crate::queue::pwq::PwqLocked;
use crate::Work;

/// Nice value of high-priority pools (the kernel's `HIGHPRI_NICE_LEVEL`).
pub(crate) const HIGHPRI_NICE: i32 = -20;

/// Attributes of an unbound pool: pools with equal attributes are shared (the kernel's
/// `unbound_pool_hash` key: nice, pod cpumask, strictness, and the cpumask if non-strict).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Attrs {
    pub(crate) nice: i32,
    /// The CPUs the pool serves (its pod; one CPU for a per-CPU pool), ascending.
    pub(crate) cpumask: Vec<usize>,
    /// Workers confined to `cpumask` (per-CPU pools are strict).
    pub(crate) strict: bool,
    /// The CPUs the workers may run on: `cpumask` if strict, else the queue's whole cpumask
    /// (non-strict workers start in the pod and are put back when found outside it).
    pub(crate) allowed: Vec<usize>,
}

impl Attrs {
    /// Strict attributes for `cpumask`.
    pub(crate) fn strict(nice: i32, cpumask: Vec<usize>) -> Attrs {
        Attrs {
            nice,
            allowed: cpumask.clone(),
            cpumask,
            strict: true,
        }
    }

    /// Whether a worker of this pool may wander out of its pod (non-strict, and the pod is
    /// smaller than what it may run on): only these workers check their CPU per item.
    pub(crate) fn may_leave_pod(&self) -> bool {
        !self.strict && self.allowed.len() > self.cpumask.len()
    }

    /// Whether `cpu` is in the pod.
    #[inline]
    pub(crate) fn in_pod(&self, cpu: usize) -> bool {
        self.cpumask.binary_search(&cpu).is_ok()
    }
}

/// One queued item: the work, the pwq slot it was queued on and its flush color, and the name
/// of its function (asked of the item once, unlocked, when it was queued: `WorkItem::name` is
/// user code, never called under a lock).
pub(crate) struct Entry {
    pub(crate) work: Work,
    pub(crate) slot: u32,
    pub(crate) color: u8,
    pub(crate) function: &'static str,
}

/// Worker flags (the kernel's `WORKER_*`).
pub(crate) mod flags {
    /// Not processing: set while idle and while preparing.
    pub(crate) const PREP: u32 = 1 << 3;
    /// Excluded from concurrency management for the current item.
    pub(crate) const CPU_INTENSIVE: u32 = 1 << 6;
    /// Worker of an unbound or disassociated pool: never counts in `nr_running`.
    pub(crate) const UNBOUND: u32 = 1 << 7;
    /// Flags that keep a worker out of `nr_running`.
    pub(crate) const NOT_RUNNING: u32 = PREP | CPU_INTENSIVE | UNBOUND;
}

/// Whether a worker is asleep as far as concurrency management knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sleep {
    Awake,
    /// Inside `blocking()` since the given time: taken out of `nr_running` by the hint.
    Hinted(Instant),
}

/// A worker's state, guarded by its pool's lock.
pub(crate) struct WorkerSlot {
    pub(crate) flags: u32,
    /// Set by a waker, cleared by the worker when it wakes (no lost wake-ups).
    pub(crate) wake: bool,
    /// Set when the worker must exit.
    pub(crate) die: bool,
    pub(crate) idle: bool,
    /// Out of `nr_running` because it sleeps (`blocking()`).
    pub(crate) sleep: Sleep,
    /// Bumped when the worker starts an item or wakes from a sleep: the monitor's samples of a
    /// worker are comparable only within one epoch.
    pub(crate) epoch: u64,
    /// A rescuer attached to this pool (not counted in `nr_workers`).
    pub(crate) rescuer: bool,
    /// Items this worker runs next (re-queued instances of what it runs: non-reentrancy).
    pub(crate) scheduled: VecDeque<Entry>,
    /// Identity of the item it runs, with its pwq slot.
    pub(crate) current: Option<(usize, u32)>,
    /// The type name of the function it runs (meaningful while `current` is set).
    pub(crate) current_function: &'static str,
    /// The thread's name (`kworker/0:1`).
    pub(crate) name: String,
    /// Waiters to complete when the current execution ends (flush and cancel_sync).
    pub(crate) current_waiters: Vec<Arc<Completion>>,
    pub(crate) cv: Arc<Condvar>,
    /// The `epoch` of the item whose function the worker is inside, 0 in the engine's own
    /// code around it (see [`WorkerCtx::in_item`](crate::pool::worker::WorkerCtx)). Written by
    /// the worker without the pool lock, read by the monitor: Relaxed, a hint only (a worker
    /// waiting for the pool lock between items is not asleep in an item).
    pub(crate) in_item: Arc<AtomicU64>,
    pub(crate) tid: i32,
    pub(crate) join: Option<JoinHandle<()>>,
    pub(crate) last_active: Instant,
    /// What the running item said it does (`set_worker_desc`); cleared when the item ends.
    pub(crate) desc: Option<String>,
    /// When the monitor first saw the current item running (cleared when the item ends): how
    /// long an item has run, for the dump, to within one monitor sample.
    pub(crate) seen_running_at: Option<Instant>,
}

/// Everything the pool lock guards.
pub(crate) struct PoolLocked {
    /// Runnable items of every pwq mapped to this pool, FIFO.
    pub(crate) worklist: ItemList,
    /// Workers by id (the number in the thread name).
    pub(crate) workers: Vec<Option<WorkerSlot>>,
    /// Idle workers, most recently idle last (the kernel's LIFO idle list).
    pub(crate) idle: Vec<usize>,
    /// Item identity → the worker executing it.
    pub(crate) busy: FxHashMap<usize, usize>,
    /// Items started by this pool's workers (the watchdog's measure of progress).
    pub(crate) nr_started: u64,
    /// Workers running and counted for concurrency management.
    pub(crate) nr_running: usize,
    /// Workers inside `blocking()` (out of `nr_running` by the hint, still holding an item).
    pub(crate) nr_hinted: usize,
    pub(crate) nr_workers: usize,
    pub(crate) nr_idle: usize,
    /// Workers that ran out of items and look for more for a few µs before going idle
    /// (`pool::worker`): while one does, a queued item needs no wake-up.
    pub(crate) nr_spinning: usize,
    /// How well spinning before idle has paid off lately (see `worker::may_spin`): up by 2
    /// when a spin found work, down by 1 when it did not, within 0..=`SPIN_SCORE_MAX`.
    pub(crate) spin_score: u8,
    /// Idle transitions without a spin since the score reached 0 (every 16th spins anyway,
    /// to notice that it would pay again).
    pub(crate) spin_skipped: u8,
    /// Some thread holds the manager role (is creating a worker).
    pub(crate) manager_active: bool,
    /// The pwqs mapped to this pool, by slot.
    pub(crate) pwqs: Vec<Option<PwqLocked>>,
    /// Slots of destroyed queues' pwqs, reused by the next queues.
    pub(crate) free_slots: Vec<u32>,
    /// Flush waiters for queued items, by identity: moved to the worker when it starts the item.
    pub(crate) flush_waiters: FxHashMap<usize, Vec<Arc<Completion>>>,
    /// The pool is being destroyed: no more workers are made.
    pub(crate) destroying: bool,
    /// A per-CPU pool whose CPU is not in the process's CPU set (the kernel's
    /// `POOL_DISASSOCIATED`): its workers carry [`flags::UNBOUND`] (no concurrency
    /// management) and may run on every online CPU. Changed by `pool/hotplug.rs` only, with
    /// its lock held.
    pub(crate) disassociated: bool,
    /// Workers the saturation gate always allows (CPU-intensive ones aside): a runner and a
    /// spare per CPU, i.e. 2 for a per-CPU pool and cpus + 1 for an unbound one.
    pub(crate) gate_floor: usize,
    /// Concurrency target (1 in the kernel): how many workers may hold items (running or
    /// asleep) at once beyond the kernel's one runner. The monitor raises it while the pool's
    /// workers sleep and its CPU idles with work waiting; see `need_more_worker`.
    pub(crate) cm_target: usize,
    /// The monitor's moving average of the pool's workers' CPU use is at least
    /// `SATURATED_PERMILLE` of its CPUs: a per-CPU pool's manager makes no new spares
    /// meanwhile (unbound pools use `cm_spare_cpu` instead).
    pub(crate) cpu_saturated: bool,
    /// Unbound pools only: the monitor saw the pool busy, its CPUs below saturation and none
    /// of its workers preempted in its last two samples. Until then the pool makes no more
    /// workers than one per CPU and a spare (its saturation gate is closed).
    pub(crate) cm_spare_cpu: bool,
    /// An unbound pool: as in Linux, no concurrency management (every waiting item may
    /// start), its workers limited by the saturation gate only.
    pub(crate) cm_unbound: bool,
    /// Workers holding items that keep the pool's CPUs busy, by the monitor's last
    /// measurement with items waiting and the CPUs at least half used (Little's law: the
    /// workers holding items over the CPUs' utilisation; see `enough_workers`); `usize::MAX` until
    /// measured. Kept across busy periods, so that a new burst that finds enough idle workers
    /// does not add threads: see [`create_interval`].
    pub(crate) cm_enough: usize,
    /// When worker creation started failing (cleared by a success).
    pub(crate) creation_failed_since: Option<Instant>,
    /// Last creation attempt, for the cooldown.
    pub(crate) last_create_attempt: Option<Instant>,
    /// Last time the rescuers were called for this pool.
    pub(crate) last_mayday: Option<Instant>,
}

/// A pool of workers.
pub(crate) struct WorkerPool {
    /// Id in the registry (the data word's pool field); reused after an unbound pool is
    /// destroyed.
    pub(crate) id: u32,
    /// Never reused: tells a pool from an earlier one with the same id (the monitor's samples).
    pub(crate) serial: u64,
    /// The CPU of a per-CPU pool.
    pub(crate) cpu: Option<usize>,
    pub(crate) highpri: bool,
    pub(crate) attrs: Attrs,
    pub(crate) locked: Mutex<PoolLocked>,
    /// A worker could not get the pool's nice value (no CAP_SYS_NICE); recorded, not fatal.
    pub(crate) nice_failed: AtomicBool,
    /// Number of pwqs using an unbound pool (guarded by the registry lock).
    pub(super) refcnt: Mutex<usize>,
    /// The pool has had a worker (set once, by the first creation; Relaxed: a filter for the
    /// pool walks, which lock the pool before they read anything of it).
    started: AtomicBool,
}

// ===== the concurrency-management predicates (kernel names), pure over the counters =====

/// Counters the predicates read: a snapshot of `PoolLocked`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Counters {
    pub(crate) worklist_empty: bool,
    pub(crate) nr_running: usize,
    pub(crate) nr_workers: usize,
    pub(crate) nr_idle: usize,
    pub(crate) manager_active: bool,
    /// Workers holding an item and counted: `nr_running` plus the hinted sleepers.
    pub(crate) nr_active: usize,
    /// Concurrency target (1 in the kernel).
    pub(crate) target: usize,
}

/// Work is waiting and nobody runs (the kernel's rule), or fewer workers hold items than a
/// raised target. Unbound workers never count, so an unbound pool starts every waiting item.
pub(crate) fn need_more_worker(c: Counters) -> bool {
    !c.worklist_empty && (c.nr_running == 0 || c.nr_active < c.target)
}

/// An idle worker exists to take over if this one blocks.
pub(crate) fn may_start_working(c: Counters) -> bool {
    c.nr_idle > 0
}

/// A running worker should take another item (kernel: at most one runs).
pub(crate) fn keep_working(c: Counters) -> bool {
    !c.worklist_empty && (c.nr_running <= 1 || c.nr_active <= c.target)
}

/// A worker is needed and none is idle.
pub(crate) fn need_to_create_worker(c: Counters) -> bool {
    need_more_worker(c) && !may_start_working(c)
}

/// Making a new worker could help: the pool has fewer than `floor` besides its CPU-intensive
/// ones (which are outside concurrency management), or the saturation gate is open.
pub(crate) fn may_create_worker(
    nr_workers: usize,
    floor: usize,
    nr_cpu_intensive: usize,
    gate_open: bool,
) -> bool {
    nr_workers < floor + nr_cpu_intensive || gate_open
}

/// How much slower a pool makes workers once it has [`PoolLocked::cm_enough`] holding items.
pub(crate) const ENOUGH_SLOWDOWN: u32 = 16;

/// The least time between two worker creations: `base` (`worker_create_interval`), or
/// [`ENOUGH_SLOWDOWN`] times that while at least `enough` workers hold items. Beyond the
/// measured need a new worker is a guess (items that sleep before they use the CPU make every
/// burst look short of workers at its start); creation goes on, slowly, so that items waiting
/// for one another still get workers.
pub(crate) fn create_interval(base: Duration, holding: usize, enough: usize) -> Duration {
    if holding >= enough {
        base * ENOUGH_SLOWDOWN
    } else {
        base
    }
}

/// Idle workers beyond two, at a ratio of one per four busy (`MAX_IDLE_WORKERS_RATIO`).
pub(crate) fn too_many_workers(c: Counters) -> bool {
    let nr_idle = c.nr_idle + usize::from(c.manager_active);
    let nr_busy = c.nr_workers - nr_idle.min(c.nr_workers);
    nr_idle > 2 && (nr_idle - 2) * 4 >= nr_busy
}

impl PoolLocked {
    pub(crate) fn counters(&self) -> Counters {
        Counters {
            worklist_empty: self.worklist.is_empty(),
            nr_running: self.nr_running,
            nr_workers: self.nr_workers,
            nr_idle: self.nr_idle,
            manager_active: self.manager_active,
            nr_active: self.nr_running + self.nr_hinted,
            target: self.cm_target,
        }
    }

    /// The saturation gate for making a new worker (see `may_create_worker`).
    pub(crate) fn may_create_worker(&self) -> bool {
        let intensive = self.nr_cpu_intensive();
        // One runner per CPU and a spare; more while the CPUs are not saturated, which for an
        // unbound pool must have been seen by the monitor since the pool got busy.
        let gate_open = if self.cm_unbound {
            self.cm_spare_cpu
        } else {
            !self.cpu_saturated
        };
        may_create_worker(self.nr_workers, self.gate_floor, intensive, gate_open)
    }

    /// Workers marked CPU-intensive (they hold an item; outside concurrency management).
    fn nr_cpu_intensive(&self) -> usize {
        self.workers
            .iter()
            .flatten()
            .filter(|w| w.flags & flags::CPU_INTENSIVE != 0)
            .count()
    }

    /// The least time between two creations now (see [`create_interval`]), at least
    /// [`SOFT_CAP_INTERVAL`](crate::SOFT_CAP_INTERVAL) past the soft cap. The workers holding
    /// items are counted as the estimate counts them, CPU-intensive ones aside.
    pub(crate) fn create_interval(&self) -> Duration {
        let cfg = crate::config::config();
        let interval = if self.cm_enough == usize::MAX {
            cfg.worker_create_interval
        } else {
            create_interval(
                cfg.worker_create_interval,
                self.busy.len().saturating_sub(self.nr_cpu_intensive()),
                self.cm_enough,
            )
        };
        if self.nr_workers >= cfg.max_workers_per_pool {
            interval.max(crate::config::SOFT_CAP_INTERVAL)
        } else {
            interval
        }
    }

    pub(crate) fn worker(&mut self, id: usize) -> &mut WorkerSlot {
        self.workers[id].as_mut().expect("worker slot")
    }

    /// Sets worker flags, leaving `nr_running` when entering the NOT_RUNNING set.
    pub(crate) fn worker_set_flags(&mut self, id: usize, f: u32) {
        let w = self.worker(id);
        let was_running = w.flags & flags::NOT_RUNNING == 0 && w.sleep == Sleep::Awake;
        w.flags |= f;
        if was_running && f & flags::NOT_RUNNING != 0 {
            self.nr_running -= 1;
        }
    }

    /// Clears worker flags, joining `nr_running` when leaving the NOT_RUNNING set.
    pub(crate) fn worker_clr_flags(&mut self, id: usize, f: u32) {
        let w = self.worker(id);
        let old = w.flags;
        w.flags &= !f;
        if old & flags::NOT_RUNNING != 0
            && w.flags & flags::NOT_RUNNING == 0
            && w.sleep == Sleep::Awake
        {
            self.nr_running += 1;
        }
    }

    /// Takes an idle worker out of the pool and tells it to exit; returns its thread.
    pub(crate) fn kill_worker(&mut self, id: usize) -> Option<JoinHandle<()>> {
        if self.worker(id).idle {
            self.worker_leave_idle(id);
        }
        let w = self.worker(id);
        w.die = true;
        w.wake = true;
        w.cv.notify_one();
        let join = w.join.take();
        if !w.rescuer {
            self.nr_workers -= 1;
        }
        join
    }

    pub(crate) fn worker_enter_idle(&mut self, id: usize) {
        let w = self.worker(id);
        if w.idle {
            VIOLATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        w.idle = true;
        w.last_active = Instant::now();
        self.nr_idle += 1;
        self.idle.push(id);
    }

    pub(crate) fn worker_leave_idle(&mut self, id: usize) {
        let w = self.worker(id);
        if !w.idle {
            VIOLATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        w.idle = false;
        self.nr_idle -= 1;
        if let Some(pos) = self.idle.iter().rposition(|&i| i == id) {
            self.idle.remove(pos);
        }
    }

    /// Wakes worker `id` (idempotent until it has woken).
    pub(crate) fn wake_worker(&mut self, id: usize) {
        let w = self.worker(id);
        if !w.wake {
            w.wake = true;
            w.cv.notify_one();
        }
    }

    /// Debug builds: checks the counters against the lists. A violation is counted (see
    /// [`invariant_violations`]) and printed, never a panic: an internal check must not kill
    /// the worker that runs it (its pool would be left with a dead slot).
    pub(crate) fn debug_check(&self) {
        if !cfg!(debug_assertions) {
            return;
        }
        let nr_workers = self
            .workers
            .iter()
            .flatten()
            .filter(|w| !w.die && !w.rescuer)
            .count();
        let nr_idle = self.workers.iter().flatten().filter(|w| w.idle).count();
        let mut bad = Vec::new();
        if nr_idle != self.nr_idle || self.idle.len() != self.nr_idle {
            bad.push("nr_idle does not match the idle list");
        }
        if self.nr_workers > nr_workers + usize::from(self.manager_active) {
            bad.push("nr_workers exceeds the live workers");
        }
        // Items wait only while the active ones fill the limit (lowering the limit below the
        // running items is legal: they finish). `max_active` is the effective limit: 0 while
        // the freezer holds a freezable queue's pwq, so held items never trip this. On a
        // shared node the other pwqs may fill the node: items wait while the pwq is on the
        // node's pending list.
        if self.pwqs.iter().flatten().any(|p| {
            !p.inactive.is_empty()
                && if p.shared_node {
                    !p.on_pending
                } else {
                    p.nr_active < p.max_active
                }
        }) {
            bad.push("an inactive item waits below max_active");
        }
        // No lost wake-up: while work waits that needs a worker, an idle worker has been told
        // to wake (checked as a worker goes idle: it must not sleep on such work).
        if need_more_worker(self.counters())
            && self.nr_spinning == 0
            && !self.idle.is_empty()
            && !self
                .idle
                .iter()
                .any(|&id| self.workers[id].as_ref().is_some_and(|w| w.wake))
        {
            bad.push("a worker went idle while work waits and no idle worker was woken");
        }
        if !bad.is_empty() {
            VIOLATIONS.fetch_add(bad.len(), std::sync::atomic::Ordering::Relaxed);
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("cmwq: internal invariant violated: {}\n", bad.join("; ")),
            );
        }
    }
}

/// Highest [`PoolLocked::spin_score`] (a pool starts there).
pub(crate) const SPIN_SCORE_MAX: u8 = 16;

/// Internal invariant violations seen by debug builds' checks (Relaxed: a statistic).
static VIOLATIONS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// How many internal invariant violations debug builds have seen (always 0 in release
/// builds). For the crate's own stress tests.
#[doc(hidden)]
pub fn invariant_violations() -> usize {
    VIOLATIONS.load(std::sync::atomic::Ordering::Relaxed)
}

/// What the caller of [`kick_pool`] must do after unlocking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub(crate) enum Kick {
    Nothing,
    /// An idle worker was woken.
    Woke,
    /// The pool has no worker at all: make the first one.
    CreateFirstWorker,
}

/// Wakes the most recently idle worker if work waits and nobody runs (the kernel's
/// `kick_pool`).
pub(crate) fn kick_pool(g: &mut PoolLocked) -> Kick {
    if !need_more_worker(g.counters()) {
        return Kick::Nothing;
    }
    if g.nr_spinning > 0 {
        // A worker that just ran out of items is looking for more: it takes this one.
        return Kick::Nothing;
    }
    if let Some(&id) = g.idle.last() {
        g.wake_worker(id);
        Kick::Woke
    } else if g.nr_workers == 0 && !g.manager_active && !g.destroying {
        Kick::CreateFirstWorker
    } else {
        Kick::Nothing
    }
}

impl WorkerPool {
    /// A pool; `warm` gives its lists their usual starting capacity (pools of CPUs offline at
    /// first use start empty).
    pub(super) fn new(
        id: u32,
        cpu: Option<usize>,
        highpri: bool,
        attrs: Attrs,
        warm: bool,
    ) -> Self {
        let cap = |n: usize| if warm { n } else { 0 };
        let gate_floor = if cpu.is_some() {
            2
        } else {
            attrs.cpumask.len().max(1) + 1
        };
        static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        WorkerPool {
            id,
            // Relaxed: a unique number, nothing published through it.
            serial: SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            cpu,
            highpri,
            attrs,
            locked: Mutex::new(PoolLocked {
                worklist: ItemList::with_capacity(cap(256)),
                workers: Vec::new(),
                idle: Vec::new(),
                busy: FxHashMap::with_capacity_and_hasher(cap(64), Default::default()),
                nr_started: 0,
                nr_running: 0,
                nr_hinted: 0,
                nr_workers: 0,
                nr_idle: 0,
                nr_spinning: 0,
                spin_score: SPIN_SCORE_MAX,
                spin_skipped: 0,
                manager_active: false,
                pwqs: Vec::new(),
                free_slots: Vec::new(),
                flush_waiters: FxHashMap::default(),
                destroying: false,
                disassociated: false,
                gate_floor,
                cm_target: 1,
                cpu_saturated: false,
                cm_spare_cpu: false,
                cm_unbound: cpu.is_none(),
                cm_enough: usize::MAX,
                creation_failed_since: None,
                last_create_attempt: None,
                last_mayday: None,
            }),
            nice_failed: AtomicBool::new(false),
            refcnt: Mutex::new(0),
            started: AtomicBool::new(false),
        }
    }

    /// Whether the pool has ever had a worker.
    pub(crate) fn ever_started(&self) -> bool {
        self.started.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records that the pool has a worker (see `started`).
    pub(crate) fn note_started(&self) {
        if !self.ever_started() {
            self.started
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(crate) fn is_unbound(&self) -> bool {
        self.cpu.is_none()
    }

    /// Puts `pwq` in a free slot (a destroyed queue's, or a new one); returns the slot. A
    /// handle left over from a destroyed queue tells its old slot from the new owner's by the
    /// workqueue id (`PoolLocked::pwq_of`). `None` if the pool has as many live queues as the
    /// data word can name.
    pub(crate) fn add_pwq(&self, pwq: PwqLocked) -> Option<u32> {
        let mut g = self.locked.lock();
        if let Some(slot) = g.free_slots.pop() {
            g.pwqs[slot as usize] = Some(pwq);
            return Some(slot);
        }
        if g.pwqs.len() > crate::work::data::MAX_SLOT {
            return None;
        }
        g.pwqs.push(Some(pwq));
        Some((g.pwqs.len() - 1) as u32)
    }

    /// Tells every worker to exit and returns their threads (pool lock held by the caller).
    pub(super) fn stop_workers(g: &mut MutexGuard<'_, PoolLocked>) -> Vec<JoinHandle<()>> {
        g.destroying = true;
        let ids: Vec<usize> = (0..g.workers.len())
            .filter(|&i| g.workers[i].as_ref().is_some_and(|w| !w.die))
            .collect();
        ids.into_iter().filter_map(|id| g.kill_worker(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(worklist: usize, nr_running: usize, nr_workers: usize, nr_idle: usize) -> Counters {
        Counters {
            worklist_empty: worklist == 0,
            nr_running,
            nr_workers,
            nr_idle,
            manager_active: false,
            nr_active: nr_running,
            target: 1,
        }
    }

    #[test]
    fn need_more_worker_wants_work_and_nobody_running() {
        assert!(need_more_worker(c(1, 0, 1, 1)));
        assert!(!need_more_worker(c(0, 0, 1, 1)));
        assert!(!need_more_worker(c(1, 1, 2, 1)));
    }

    #[test]
    fn may_start_working_wants_an_idle_spare() {
        assert!(may_start_working(c(1, 0, 2, 1)));
        assert!(!may_start_working(c(1, 0, 1, 0)));
    }

    #[test]
    fn keep_working_stops_when_two_run() {
        assert!(keep_working(c(1, 1, 2, 1)));
        assert!(keep_working(c(1, 0, 2, 1)));
        assert!(!keep_working(c(1, 2, 3, 1)));
        assert!(!keep_working(c(0, 1, 2, 1)));
    }

    #[test]
    fn need_to_create_worker_when_nobody_idle() {
        assert!(need_to_create_worker(c(1, 0, 1, 0)));
        assert!(!need_to_create_worker(c(1, 0, 2, 1)));
        assert!(!need_to_create_worker(c(1, 1, 1, 0)));
    }

    #[test]
    fn the_saturation_gate_spares_two_workers_and_cpu_intensive_ones() {
        assert!(may_create_worker(1, 2, 0, false));
        assert!(!may_create_worker(2, 2, 0, false));
        assert!(may_create_worker(2, 2, 0, true));
        // A CPU-intensive worker does not count against the managed ones.
        assert!(may_create_worker(2, 2, 1, false));
        assert!(!may_create_worker(3, 2, 1, false));
        // An unbound pool on two CPUs: three before the monitor has seen spare CPU.
        assert!(may_create_worker(2, 3, 0, false));
        assert!(!may_create_worker(3, 3, 0, false));
    }

    #[test]
    fn a_raised_target_lets_more_run() {
        let mut x = c(1, 1, 3, 1);
        assert!(!need_more_worker(x));
        x.target = 3;
        assert!(need_more_worker(x));
        x.nr_running = 3;
        x.nr_active = 3;
        assert!(!need_more_worker(x));
        assert!(keep_working(x));
        x.nr_running = 4;
        x.nr_active = 4;
        assert!(!keep_working(x));
    }

    #[test]
    fn hinted_sleepers_count_against_a_raised_target_only() {
        // Kernel rule: one runner; a hinted sleeper does not stop another from starting.
        let mut x = c(1, 0, 3, 1);
        x.nr_active = 2;
        assert!(need_more_worker(x));
        x.nr_running = 1;
        x.nr_active = 3;
        assert!(!need_more_worker(x));
        assert!(keep_working(x));
        // A raised target of 5: up to 5 items held, asleep or running.
        x.target = 5;
        assert!(need_more_worker(x));
        x.nr_running = 2;
        x.nr_active = 5;
        assert!(!need_more_worker(x));
        assert!(keep_working(x));
        x.nr_active = 6;
        assert!(!keep_working(x));
    }

    #[test]
    fn unbound_pools_start_every_waiting_item() {
        // Unbound workers never count in `nr_running`: with any number of them busy, a
        // waiting item may start and a finishing worker keeps working (Linux).
        let x = c(1, 0, 8, 0);
        assert!(need_more_worker(x));
        assert!(keep_working(x));
    }

    #[test]
    fn too_many_workers_keeps_two_idle_and_one_per_four_busy() {
        // 3 idle, 4 busy: (3-2)*4 >= 4.
        assert!(too_many_workers(c(0, 0, 7, 3)));
        // 3 idle, 5 busy: 4 < 5.
        assert!(!too_many_workers(c(0, 0, 8, 3)));
        // 2 idle never counts as too many.
        assert!(!too_many_workers(c(0, 0, 2, 2)));
        // A manager counts as idle.
        let mut m = c(0, 0, 3, 2);
        m.manager_active = true;
        assert!(too_many_workers(m));
    }
}
