//! Statistics in the kernel's vocabulary: a workqueue's counters (the columns of
//! `tools/workqueue/wq_monitor.py`), each pool's workers, and `workqueue_congested`.

use std::time::Duration;

use crate::pool::{self, WorkerPool};
use crate::queue::pwq::RetiredCounters;
use crate::queue::workqueue::{WqFlags, WqShared};
use crate::Workqueue;

/// A workqueue's counters, summed over its pool workqueues (the columns of the kernel's
/// `wq_monitor.py`). Read under each pool's lock in turn: exact at quiescence, a consistent
/// snapshot per pool otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct WqStats {
    /// Items started (`total`): every run, rescued ones included.
    pub total: u64,
    /// Items whose run has ended.
    pub completed: u64,
    /// Items running now (`infl`: started and not completed).
    pub in_flight: u64,
    /// CPU time of the queue's items (`CPUtime`), credited by the monitor's samples to the
    /// item running at each sample, as the kernel credits scheduler ticks: a ballpark, not
    /// an exact sum (items shorter than a sample may be credited to their neighbours).
    pub cpu_time: Duration,
    /// Items marked CPU-intensive for hogging the CPU past `cpu_intensive_thresh`
    /// (`CPUitsv`).
    pub cpu_intensive: u64,
    /// Times a worker of this queue went to sleep in `blocking()` and another was woken in
    /// its place (`CMW`: concurrency-management wake-ups).
    pub cm_wakeups: u64,
    /// Items whose non-strict unbound worker was found outside its affinity pod when it
    /// started them, and put back into the pod first (`RPR`).
    pub repatriated: u64,
    /// Times the queue's rescuer was called to a pool (`mayday`).
    pub mayday: u64,
    /// Items run by the rescuer (`rescued`).
    pub rescued: u64,
    /// Items queued and active, waiting for a worker now (on a worklist or behind a running
    /// instance of themselves).
    pub pending: usize,
    /// Items waiting on inactive lists for a `max_active` slot now.
    pub inactive: usize,
    /// The configured `max_active`.
    pub max_active: usize,
}

pub(crate) fn wq_stats(wq: &WqShared) -> WqStats {
    // A pwq released while the walk runs moves its counters from the walk's reach to
    // `retired`: walk again until no release happened meanwhile (a few tries; a release is
    // rare), so that nothing is counted twice or missed.
    let mut tries = 0;
    loop {
        let before = *wq.retired.lock();
        let s = walk_stats(wq, &before);
        let after = wq.retired.lock().nr_released;
        tries += 1;
        if after == before.nr_released || tries == 8 {
            return s;
        }
    }
}

fn walk_stats(wq: &WqShared, r: &RetiredCounters) -> WqStats {
    // The released pwqs' counters, plus every linked pwq's.
    let mut sum = *r;
    let (mut pending, mut inactive) = (0, 0);
    for pwq in wq.pwqs() {
        let mut g = pwq.pool.locked.lock();
        let running = g
            .workers
            .iter()
            .flatten()
            .filter(|w| w.current.is_some_and(|(_, slot)| slot == pwq.slot))
            .count();
        let Some(p) = g.pwq_of(pwq.slot, wq.id) else {
            continue; // released (by destroy, or idle and replaced)
        };
        sum.add(p);
        pending += p.nr_active.saturating_sub(running);
        inactive += p.inactive.len();
    }
    WqStats {
        max_active: wq.max_active(),
        total: sum.nr_started,
        completed: sum.nr_completed,
        in_flight: sum.nr_started - sum.nr_completed.min(sum.nr_started),
        cpu_time: sum.cpu_time,
        cpu_intensive: sum.nr_cpu_intensive,
        cm_wakeups: sum.nr_cm_wakeup,
        mayday: sum.nr_mayday,
        rescued: sum.nr_rescued,
        repatriated: sum.nr_repatriated,
        pending,
        inactive,
        ..WqStats::default()
    }
}

impl Workqueue {
    /// The queue's counters (see [`WqStats`]).
    ///
    /// ```
    /// use cmwq::{Work, Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::new("stats_example", WqFlags::UNBOUND, 0)?;
    /// let work = Work::new(|_| {});
    /// wq.queue(&work);
    /// wq.flush();
    /// let s = wq.stats();
    /// assert_eq!((s.total, s.completed, s.in_flight), (1, 1, 0));
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    pub fn stats(&self) -> WqStats {
        wq_stats(self.shared())
    }

    /// Whether items wait on the inactive list of `cpu`'s pool workqueue (the calling CPU's
    /// for `None`; for unbound queues the pwq of that CPU's pod): the kernel's
    /// `workqueue_congested`, a hint that more queueing will wait for `max_active`.
    pub fn congested(&self, cpu: Option<usize>) -> bool {
        let wq = self.shared();
        let pwqs = wq.pwqs();
        let pwq = if wq.flags.contains(WqFlags::UNBOUND) {
            pwqs.first().map(|_| wq.select_pwq(cpu))
        } else {
            let cpu = cpu.unwrap_or_else(crate::os::topology::current_cpu);
            crate::os::topology::possible()
                .index_of(cpu)
                .and_then(|i| pwqs.get(i))
        };
        pwq.is_some_and(|pwq| {
            pwq.pool
                .locked
                .lock()
                .pwq_of(pwq.slot, wq.id)
                .is_some_and(|p| !p.inactive.is_empty())
        })
    }
}

/// A worker that is running an item, as [`PoolStats::busy`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct BusyWorker {
    /// The worker thread's name (`kworker/0:1`, `kworker/u4:2`, `kworker/R-name`).
    pub thread: String,
    /// The workqueue of the item.
    pub workqueue: String,
    /// The type name of the item's function.
    pub function: &'static str,
    /// What the item said it does ([`set_worker_desc`](crate::set_worker_desc)).
    pub desc: Option<String>,
    /// How long the item has run, to within one monitor sample (zero if not yet sampled).
    pub running_for: Duration,
}

/// A worker pool's state, as [`pools`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PoolStats {
    /// The pool's id (the `u<id>` of unbound worker names).
    pub id: usize,
    /// The CPU of a per-CPU pool; `None` for unbound pools.
    pub cpu: Option<usize>,
    /// A high-priority pool.
    pub highpri: bool,
    /// The nice value its workers ask for.
    pub nice: i32,
    /// Workers of the pool (rescuers attached to it not counted).
    pub nr_workers: usize,
    /// Idle workers.
    pub nr_idle: usize,
    /// Workers running and counted by concurrency management (`nr_running`).
    pub nr_running: usize,
    /// Items on the worklist.
    pub worklist: usize,
    /// The workers running an item, with the item.
    pub busy: Vec<BusyWorker>,
    /// A per-CPU pool whose CPU is not in the process's CPU set now (the kernel's
    /// `POOL_DISASSOCIATED`): its workers run on any online CPU, outside concurrency
    /// management, until the CPU comes back (see [`refresh_cpus`](crate::refresh_cpus)).
    pub disassociated: bool,
}

pub(crate) fn pool_stats(pool: &WorkerPool) -> PoolStats {
    let g = pool.locked.lock();
    let busy = g
        .workers
        .iter()
        .flatten()
        .filter_map(|w| {
            let (_, slot) = w.current?;
            let p = g.pwqs.get(slot as usize)?.as_ref()?;
            Some(BusyWorker {
                thread: w.name.clone(),
                workqueue: p.wq.name.clone(),
                function: w.current_function,
                desc: w.desc.clone(),
                running_for: w.seen_running_at.map_or(Duration::ZERO, |t| t.elapsed()),
            })
        })
        .collect();
    PoolStats {
        id: pool.id as usize,
        cpu: pool.cpu,
        highpri: pool.highpri,
        nice: pool.attrs.nice,
        nr_workers: g.nr_workers,
        nr_idle: g.nr_idle,
        nr_running: g.nr_running,
        worklist: g.worklist.len(),
        busy,
        disassociated: g.disassociated,
    }
}

/// Every worker pool: per-CPU ones first (normal, then high priority, per CPU), then the
/// unbound ones. The per-CPU pools listed are those of online CPUs and those that have had a
/// worker (a possible CPU that is offline and was never used has its pools, unlisted).
pub fn pools() -> Vec<PoolStats> {
    pool::all_pools().iter().map(|p| pool_stats(p)).collect()
}
