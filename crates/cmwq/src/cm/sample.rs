//! Concurrency management's automatic path: the monitor's samples, which notice what the
//! scheduler's `wq_worker_sleeping`/`wq_worker_running` hooks would report, and CPU hogs.
//!
//! A worker of a per-CPU pool counts in the pool's `nr_running` while it processes items, and
//! in `nr_hinted` while it sleeps inside [`blocking`](crate::blocking). The pool lets one worker run (the
//! kernel's rule) or, once the monitor raised `cm_target`, hold up to `cm_target` items
//! running or asleep. Two paths tell the pool that a running worker sleeps:
//!
//! * **Exact** — [`blocking`](crate::blocking): the worker leaves `nr_running` for the duration of the call and,
//!   if that leaves work waiting with nobody running, the most recently idle worker is woken
//!   at once (it makes a new spare if it was the last idle one).
//! * **Automatic** — [`sample_pool`], run by the monitor thread on an adaptive interval. It
//!   reads the CPU clock of every worker that ran since the last sample; when work waits and
//!   the pool is at its target and not saturated, it reads the scheduler state of the counted
//!   workers that made no progress (`S`/`D` in `/proc/self/task/<tid>/stat` is asleep; a
//!   runnable but preempted worker is `R` and does not count). The target becomes one plus
//!   the sleepers, hinted or seen (the kernel's rule, seen by sampling), or doubles when
//!   nobody runs and the CPU is mostly idle. It shrinks by a quarter per sample while the pool
//!   uses at least 90% of its CPU with two or more workers competing for it, or while
//!   nothing waits. See DESIGN.md for the law, its constants and its cost.
//!
//! Unbound pools are not concurrency-managed (as in Linux); the samples drive their creation
//! gate only.
//!
//! The same samples detect CPU hogs: an item that has used `cpu_intensive_thresh` of CPU since
//! it started or last slept is marked CPU-intensive (it leaves `nr_running` until it ends), as
//! in kernels since 6.5.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::config::config;
use crate::os::topology;
use crate::pool::{flags, kick_pool, PoolLocked, Sleep, WorkerPool};

// ===== the automatic path =====

/// What the monitor remembers of one worker between samples.
#[derive(Clone, Copy, Debug)]
struct WorkerSample {
    epoch: u64,
    /// Tells a reused worker id from the worker it had before.
    tid: i32,
    /// Busy (with an item) when read.
    busy: bool,
    /// CPU time when read; `None` for an idle worker recorded without a reading.
    cpu: Option<Duration>,
    /// CPU time when this epoch was first seen (CPU-hog detection).
    base: Duration,
}

/// One worker's CPU clock as read in a sample.
struct Reading {
    id: usize,
    epoch: u64,
    tid: i32,
    cpu: Duration,
    /// Has an item.
    busy: bool,
    /// Busy and counted in `nr_running`.
    counted: bool,
    /// Busy and under concurrency management: counted, or asleep in `blocking()`.
    managed: bool,
    intensive: bool,
    /// The worker's `in_item` word, and the epoch it held under the lock: nonzero when the
    /// worker was inside an item's function (not in the engine's bookkeeping around it).
    in_item: (Arc<AtomicU64>, u64),
    /// The pwq slot of the item it runs, with its workqueue's id (CPU-time accounting).
    item: Option<(u32, u64)>,
}

/// What the monitor remembers of one pool between samples.
#[derive(Default)]
pub(crate) struct PoolSample {
    at: Option<Instant>,
    workers: FxHashMap<usize, WorkerSample>,
    /// Moving average of the managed workers' CPU use, in thousandths of one CPU.
    util_ewma: u64,
    /// Where the next window of `/proc` reads starts among the candidates.
    cursor: usize,
    /// Consecutive samples (with a measured interval) in which the pool was busy.
    busy_samples: u32,
    /// Since when items have waited while the pool's CPUs were less than half used (every
    /// measured sample since then).
    starved_since: Option<Instant>,
}

/// The control law's decision for one sample, pure over what was measured (unit-tested).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Observation {
    /// Items wait on the worklist.
    pub(crate) waiting: bool,
    /// Workers holding an item and counted: `nr_running` plus the hinted sleepers.
    pub(crate) nr_active: usize,
    /// The current target (at least 1).
    pub(crate) target: usize,
    /// CPU used by the pool's workers over the interval, in thousandths of its CPU.
    pub(crate) used_permille: u64,
    /// Active workers asleep: hinted sleepers, plus counted workers seen asleep in the kernel
    /// (`S`/`D`; preempted ones are `R`).
    pub(crate) asleep: usize,
    /// Counted workers that used the CPU during the interval (made progress).
    pub(crate) progressing: usize,
    /// The most the target may be.
    pub(crate) cap: usize,
}

/// The next concurrency target.
pub(crate) fn next_target(o: Observation) -> usize {
    let running = o.nr_active.saturating_sub(o.asleep);
    // The kernel's rule: one running worker, and a replacement for each sleeper. When
    // every active worker sleeps and the CPUs are mostly idle, grow geometrically instead, so
    // a backlog of items that sleep at once is not started one sample at a time.
    let grow_to = if running == 0 && o.used_permille < 500 {
        (o.target * 2).max(o.asleep + 1)
    } else {
        o.asleep + 1
    };
    if o.waiting && o.nr_active >= o.target && o.asleep > 0 && grow_to > o.target {
        grow_to.min(o.cap)
    } else if o.target <= 1 {
        1
    } else if !o.waiting {
        // Nothing waits: decay back toward the kernel's rule.
        o.target - (o.target / 4).max(1)
    } else if o.used_permille >= 900 && o.progressing >= 2 {
        // The CPU is used and several workers compete for it: more active workers cannot
        // help; shrink by a quarter. (One worker using the CPU while the others sleep is the
        // state the target exists for: keep it.)
        o.target - (o.target / 4).max(1)
    } else {
        o.target
    }
}

/// Whether an unbound pool has spare CPU for one more worker (its creation gate opens):
/// busy for two measured samples, its CPUs not saturated, and the unused CPU explained by its
/// own workers sleeping: of the `stalled` watched workers (no progress since the last sample),
/// `asleep` sleep in the kernel, at least one and none preempted. Without a sleeper the CPU
/// went to other threads (a producer, another process), and one more worker would only
/// compete with them.
pub(crate) fn unbound_spare_cpu(
    busy_samples: u32,
    saturated: bool,
    asleep: usize,
    stalled: usize,
) -> bool {
    busy_samples >= 2 && !saturated && asleep > 0 && asleep >= stalled
}

/// How many workers holding items keep the pool's CPUs busy (Little's law): `holding` workers
/// (CPU-intensive ones aside) used `used_permille` thousandths of one CPU, out of `cpus`
/// CPUs, so full use needs `holding` over the utilisation. At [`FULL_PERMILLE`] or more the
/// CPUs count as fully used (the rest is the process's other threads and other processes):
/// `holding` is enough, and may be more than needed. Only measured while the CPUs
/// are at least half used: below that the sample says little about the need (a burst's
/// first items may all be asleep).
pub(crate) fn enough_workers(holding: usize, used_permille: u64, cpus: u64) -> Option<usize> {
    let cpus = cpus.max(1);
    if holding == 0 || !half_used(used_permille, cpus) {
        None
    } else if used_permille >= FULL_PERMILLE * cpus {
        Some(holding)
    } else {
        Some((holding as u64 * 1000 * cpus).div_ceil(used_permille) as usize)
    }
}

/// Whether `used_permille` (thousandths of one CPU) is at least half of `cpus` CPUs: below
/// that, [`enough_workers`] measures nothing and [`next_enough`] counts the time as starved.
fn half_used(used_permille: u64, cpus: u64) -> bool {
    used_permille * 2 >= 1000 * cpus
}

/// How long items may wait while the pool's CPUs are less than half used before the pool
/// forgets its `cm_enough` estimate: that many workers did not keep the CPUs busy.
pub(crate) const STALE_AFTER: Duration = Duration::from_millis(16);

/// The pool's next `cm_enough`: forgotten (`usize::MAX`) once the CPUs have idled with items
/// waiting for [`STALE_AFTER`] (the estimate came from other work, e.g. CPU-bound items, and
/// would hold back sleepers), else the new measurement if there is one. A burst of items that
/// sleep first idles the CPUs for about one sleep at its start, so the estimate survives
/// bursts whose items sleep less than that first.
pub(crate) fn next_enough(current: usize, measured: Option<usize>, starved: Duration) -> usize {
    if starved >= STALE_AFTER {
        usize::MAX
    } else {
        measured.unwrap_or(current)
    }
}

/// What one sample found.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Sampled {
    /// Some worker busy or work waiting: keeps the monitor sampling fast.
    pub(crate) busy: bool,
    /// The concurrency target moved.
    pub(crate) changed: bool,
}

/// Samples one pool: CPU use, CPU-hog detection and (per-CPU pools) the concurrency target.
pub(crate) fn sample_pool(pool: &Arc<WorkerPool>, s: &mut PoolSample) -> Sampled {
    let cfg = config();
    let now = Instant::now();
    // The workers whose CPU clock is read: every busy one, and every one that ran something
    // since the last sample (it may have finished and gone idle in between). Idle workers
    // that did nothing since keep their old reading.
    let mut read: Vec<Reading> = Vec::new();
    // The first sample of a busy period reads busy workers only (a pool wakes the monitor
    // often, and most of its workers are idle); the idle ones get a record without a
    // reading, and a baseline once they next run.
    let first = s.at.is_none();
    let mut unread = Vec::new();
    let (waiting, c) = {
        let g = pool.locked.lock();
        // Forget the workers that are gone.
        s.workers.retain(|&id, p| {
            g.workers
                .get(id)
                .and_then(Option::as_ref)
                .is_some_and(|w| w.tid == p.tid)
        });
        for (id, w) in g.workers.iter().enumerate() {
            let Some(w) = w else { continue };
            if w.die || w.rescuer {
                continue;
            }
            let busy = !w.idle && w.current.is_some();
            let prev = s.workers.get(&id).filter(|p| p.tid == w.tid);
            if !busy && prev.is_some_and(|p| !p.busy && p.epoch == w.epoch) {
                continue;
            }
            if first && !busy {
                unread.push((id, w.epoch, w.tid));
                continue;
            }
            read.push(Reading {
                id,
                epoch: w.epoch,
                tid: w.tid,
                cpu: Duration::ZERO,
                busy,
                counted: busy && w.flags & flags::NOT_RUNNING == 0 && w.sleep == Sleep::Awake,
                managed: busy && w.flags & flags::NOT_RUNNING == 0,
                intensive: w.flags & flags::CPU_INTENSIVE != 0,
                // Relaxed: a hint (see `WorkerSlot::in_item`).
                in_item: (w.in_item.clone(), w.in_item.load(Ordering::Relaxed)),
                item: w.current.and_then(|(_, slot)| {
                    let wq = g.pwqs.get(slot as usize)?.as_ref()?.wq.id;
                    Some((slot, wq))
                }),
            });
        }
        (!g.worklist.is_empty(), g.counters())
    };
    // The CPU clocks are read with the pool lock released (a system call each). A worker
    // that exited meanwhile has no clock any more and is left out.
    read.retain_mut(|r| match topology::thread_cpu_time(r.tid) {
        Some(cpu) => {
            r.cpu = cpu;
            true
        }
        None => false,
    });
    let elapsed = s.at.map(|t| now - t);
    s.at = Some(now);

    let mut used = Duration::ZERO;
    // The same without CPU-intensive workers, which are outside concurrency management: their
    // CPU use must not stop the pool from starting managed items (the saturation gate).
    let mut used_managed = Duration::ZERO;
    // Counted workers that may be asleep: stalled since the last sample, or new since then.
    let mut maybe_asleep = Vec::new();
    let mut hogs = Vec::new();
    // CPU time to credit to the pwqs of the items running now (the kernel's tick accounting
    // credits the current pwq the same way: a ballpark, by samples).
    let mut credits: Vec<(u32, u64, Duration)> = Vec::new();
    // Unbound workers never count; their busy ones outside the CPU-intensive set are watched
    // instead: for telling spare CPU from preemption, and for CPU hogs (the gate's floor).
    let unbound = pool.is_unbound();
    let unbound_busy = |r: &Reading| unbound && r.busy && !r.intensive;
    let watched = |r: &Reading| r.counted || unbound_busy(r);
    for r in &read {
        let prev = s.workers.get(&r.id).copied().filter(|p| p.tid == r.tid);
        let same_epoch = prev.filter(|p| p.epoch == r.epoch);
        let base = same_epoch.map_or(r.cpu, |p| p.base);
        if let Some(el) = elapsed {
            // CPU used by this thread since the last sample, whatever it ran meanwhile; a
            // thread first seen now was created since then.
            // A record without a reading gives no baseline: nothing is counted this time.
            let delta = match prev {
                Some(p) => p.cpu.map_or(Duration::ZERO, |c| r.cpu.saturating_sub(c)),
                None => r.cpu,
            };
            used += delta;
            if let Some((slot, wq)) = r.item.filter(|_| r.busy && !delta.is_zero()) {
                credits.push((slot, wq, delta));
            }
            if !r.intensive {
                used_managed += delta;
            }
            // Only a worker inside an item can be asleep in one: between items it is in the
            // engine (maybe waiting for the pool lock, which reads as asleep in `/proc`).
            if watched(r) && r.in_item.1 != 0 && (same_epoch.is_none() || delta < el / 4) {
                maybe_asleep.push((r.tid, r.in_item.clone()));
            }
        } else if watched(r) && r.in_item.1 != 0 {
            maybe_asleep.push((r.tid, r.in_item.clone()));
        }
        // A worker inside `blocking()` that keeps using the CPU is not asleep: it is a hog
        // like any other (and, unmarked, would hold back the workers its pool needs).
        if (r.managed || unbound_busy(r))
            && !cfg.cpu_intensive_thresh.is_zero()
            && r.cpu.saturating_sub(base) >= cfg.cpu_intensive_thresh
        {
            hogs.push((r.id, r.epoch));
        }
        s.workers.insert(
            r.id,
            WorkerSample {
                epoch: r.epoch,
                tid: r.tid,
                cpu: Some(r.cpu),
                base,
                busy: r.busy,
            },
        );
    }
    for (id, epoch, tid) in unread {
        s.workers.insert(
            id,
            WorkerSample {
                epoch,
                tid,
                cpu: None,
                base: Duration::MAX,
                busy: false,
            },
        );
    }
    let nr_busy = read.iter().filter(|r| r.busy).count();
    let busy = waiting || nr_busy > 0 || c.target > 1;
    let counted_total = read.iter().filter(|r| r.counted).count();
    let Some(el) = elapsed.filter(|e| !e.is_zero()) else {
        return Sampled {
            busy,
            changed: false,
        };
    };
    let used_permille = (used.as_nanos() * 1000 / el.as_nanos()) as u64;
    // The first measured interval of a burst includes its start-up (CPUs partly idle while
    // the first items are picked up): spare CPU counts only from the second one on.
    s.busy_samples = if nr_busy > 0 || waiting {
        s.busy_samples.saturating_add(1)
    } else {
        0
    };
    // The saturation gate follows an asymmetric average: it rises to a busy sample at once
    // (a CPU-bound burst closes the gate in its first sample) and decays by a quarter per
    // sample (one sample in which every worker happened to sleep must not open it).
    let managed_permille = (used_managed.as_nanos() * 1000 / el.as_nanos()) as u64;
    s.util_ewma = managed_permille.max((3 * s.util_ewma + managed_permille) / 4);
    let cpus = pool.attrs.cpumask.len().max(1) as u64;
    let saturated = s.util_ewma >= SATURATED_PERMILLE * cpus;
    // Counted workers that used the CPU during the interval.
    let progressing = counted_total.saturating_sub(maybe_asleep.len());
    let nr_hinted = c.nr_active - c.nr_running;
    // An unbound pool may have spare CPU: busy, and its CPUs not saturated.
    let maybe_spare = unbound && s.busy_samples >= 2 && !saturated;
    // Reading /proc costs a few µs: only when the answer could grow the target or tell spare
    // CPU from preemption, and for at most PROC_READS workers.
    let grow_possible =
        !unbound && waiting && c.nr_active >= c.target && used_permille < SATURATED_PERMILLE;
    let detected =
        if cfg.detect_blocking && (grow_possible || maybe_spare) && !maybe_asleep.is_empty() {
            count_asleep(&maybe_asleep, &mut s.cursor)
        } else {
            0
        };
    let spare =
        unbound && unbound_spare_cpu(s.busy_samples, saturated, detected, maybe_asleep.len());
    // Learned while items wait (the pool could use more workers) in a busy period's steady part.
    let holding = read.iter().filter(|r| r.busy && !r.intensive).count();
    let enough = (waiting && s.busy_samples >= 2)
        .then(|| enough_workers(holding, managed_permille, cpus))
        .flatten();
    s.starved_since = if waiting && !half_used(managed_permille, cpus) {
        // From the start of this interval: the CPUs idled through it.
        s.starved_since.or(Some(now - el))
    } else {
        None
    };
    let starved = s.starved_since.map_or(Duration::ZERO, |t| now - t);
    if unbound {
        // No concurrency management on unbound pools (as in Linux): the saturation gate only.
        let mut g = pool.locked.lock();
        g.cpu_saturated = saturated;
        g.cm_spare_cpu = spare;
        g.cm_enough = next_enough(g.cm_enough, enough, starved);
        // Not for concurrency (unbound workers never count) but for the creation gate, whose
        // floor grows with CPU-intensive workers: items that spin waiting for an item queued
        // behind them must not keep it from getting a worker.
        let marked = mark_hogs(&mut g, &hogs);
        credit_cpu_time(&mut g, &credits);
        drop(g);
        report_hogs(marked);
        return Sampled {
            busy,
            changed: false,
        };
    }
    let new_target = if cfg.detect_blocking {
        next_target(Observation {
            waiting,
            nr_active: c.nr_active,
            target: c.target,
            used_permille,
            asleep: nr_hinted + if grow_possible { detected } else { 0 },
            cap: cfg.max_workers_per_pool,
            progressing,
        })
    } else {
        c.target
    };

    let mut g = pool.locked.lock();
    g.cpu_saturated = saturated;
    g.cm_enough = next_enough(g.cm_enough, enough, starved);
    let marked = mark_hogs(&mut g, &hogs);
    credit_cpu_time(&mut g, &credits);
    let changed = g.cm_target != new_target.max(1);
    g.cm_target = new_target.max(1);
    let _ = kick_pool(&mut g);
    drop(g);
    report_hogs(marked);
    Sampled { busy, changed }
}

/// Adds sampled CPU time to the pwqs that were running (skipping one a destroy released).
fn credit_cpu_time(g: &mut PoolLocked, credits: &[(u32, u64, Duration)]) {
    for &(slot, wq, d) in credits {
        if let Some(p) = g.pwq_of(slot, wq) {
            p.cpu_time += d;
        }
    }
}

/// Logs the items `mark_hogs` marked, with no lock held (a subscriber is user code; one that
/// panics must not take the monitor down).
fn report_hogs(marked: Vec<(String, &'static str)>) {
    for (workqueue, advice) in marked {
        crate::pool::panic::contain_quiet(|| {
            tracing::debug!(
                target: "cmwq",
                workqueue = %workqueue,
                "work item hogged CPU for more than {:?}: marked CPU-intensive (consider {advice})",
                config().cpu_intensive_thresh
            )
        });
    }
}

/// Marks the sampled CPU hogs CPU-intensive (those still running the sampled item); returns
/// their workqueues and the advice to log.
fn mark_hogs(g: &mut PoolLocked, hogs: &[(usize, u64)]) -> Vec<(String, &'static str)> {
    let mut marked = Vec::new();
    for &(id, epoch) in hogs {
        let Some(w) = g.workers.get(id).and_then(Option::as_ref) else {
            continue;
        };
        if w.epoch != epoch || w.flags & (flags::PREP | flags::CPU_INTENSIVE) != 0 {
            continue;
        }
        let slot = w.current.map(|(_, slot)| slot);
        g.worker_set_flags(id, flags::CPU_INTENSIVE);
        if let Some(slot) = slot {
            // Unbound items are not counted already: only CPU_INTENSIVE would help them.
            let advice = if g.cm_unbound {
                "a CPU_INTENSIVE workqueue"
            } else {
                "a CPU_INTENSIVE or UNBOUND workqueue"
            };
            let p = g.pwq(slot);
            p.nr_cpu_intensive += 1;
            marked.push((p.wq.name.clone(), advice));
        }
    }
    marked
}
/// Most `/proc/self/task/<tid>/stat` reads per pool and sample.
const PROC_READS: usize = 16;

/// How many of `candidates` (thread ids, with the `in_item` word of each and the epoch it held
/// when sampled) sleep in the kernel (`S`/`D`) inside that same item: the word is read again
/// after the state, so a worker that left its item meanwhile (and now waits for the pool
/// lock, say) is not counted. Past [`PROC_READS`] candidates it reads a rotating window of
/// them and scales the count up to all candidates, so the estimate (and the target built on
/// it) is not capped at the number of reads.
fn count_asleep(candidates: &[(i32, (Arc<AtomicU64>, u64))], cursor: &mut usize) -> usize {
    let n = candidates.len();
    if n == 0 {
        return 0;
    }
    let reads = n.min(PROC_READS);
    let start = if n > reads { *cursor % n } else { 0 };
    *cursor = cursor.wrapping_add(reads);
    let asleep = (0..reads)
        .map(|i| &candidates[(start + i) % n])
        .filter(|(tid, (word, epoch))| {
            matches!(topology::task_state(*tid), Some(b'S' | b'D'))
                // Relaxed: a hint; the system call above orders the two reads in practice.
                && word.load(Ordering::Relaxed) == *epoch
        })
        .count();
    scale_sample(asleep, reads, n)
}

/// `hits` out of `reads` sampled, scaled to `total` (rounded to nearest).
fn scale_sample(hits: usize, reads: usize, total: usize) -> usize {
    (hits * total + reads / 2).checked_div(reads).unwrap_or(0)
}

/// CPU use (thousandths of one CPU, per CPU of the pool) from which a pool counts as
/// saturated: its manager then makes no new spare workers (existing idle ones are still
/// woken), since a new thread could not run anyway.
pub(crate) const SATURATED_PERMILLE: u64 = 850;

/// CPU use, in thousandths of the pool's CPUs, at which its workers count as using it fully
/// ([`enough_workers`]): the rest goes to the process's other threads and other processes.
pub(crate) const FULL_PERMILLE: u64 = 950;

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(
        waiting: bool,
        nr_active: usize,
        target: usize,
        used: u64,
        asleep: usize,
    ) -> Observation {
        Observation {
            waiting,
            nr_active,
            target,
            used_permille: used,
            asleep,
            cap: 64,
            progressing: nr_active.saturating_sub(asleep),
        }
    }

    #[test]
    fn grows_fast_when_sleepers_leave_the_cpu_idle_and_work_waits() {
        assert_eq!(next_target(obs(true, 1, 1, 10, 1)), 2);
        assert_eq!(next_target(obs(true, 8, 8, 100, 8)), 16);
        assert_eq!(next_target(obs(true, 40, 40, 100, 40)), 64, "capped");
    }

    #[test]
    fn replaces_sleepers_one_for_one_while_someone_runs() {
        // w0 asleep, w1 burning: no third worker (the documentation's scenario).
        assert_eq!(next_target(obs(true, 2, 2, 100, 1)), 2);
        // Both asleep now: w2 may start.
        assert!(next_target(obs(true, 2, 2, 100, 2)) >= 3);
        // Busy CPU: replace sleepers, no geometric growth.
        assert_eq!(next_target(obs(true, 4, 4, 800, 4)), 5);
    }

    #[test]
    fn sampled_sleepers_are_scaled_to_all_candidates() {
        assert_eq!(scale_sample(16, 16, 40), 40);
        assert_eq!(scale_sample(8, 16, 40), 20);
        assert_eq!(scale_sample(0, 16, 40), 0);
        assert_eq!(scale_sample(3, 3, 3), 3);
        assert_eq!(scale_sample(0, 0, 0), 0);
    }

    #[test]
    fn preempted_workers_do_not_count_as_blocked() {
        // Low CPU use but nobody asleep: the workers are runnable, just not running.
        assert_eq!(next_target(obs(true, 1, 1, 10, 0)), 1);
    }

    #[test]
    fn no_growth_without_waiting_work_or_below_target() {
        assert_eq!(next_target(obs(false, 1, 1, 0, 1)), 1);
        assert_eq!(next_target(obs(true, 2, 4, 0, 2)), 4);
    }

    #[test]
    fn shrinks_when_the_cpu_is_used_and_decays_when_idle() {
        assert_eq!(next_target(obs(true, 10, 10, 990, 0)), 8);
        // One worker on the CPU, the rest asleep: the target is doing its job, keep it.
        let mut one = obs(true, 10, 10, 990, 0);
        one.progressing = 1;
        assert_eq!(next_target(one), 10);
        assert_eq!(next_target(obs(true, 3, 3, 920, 0)), 2);
        assert_eq!(next_target(obs(true, 10, 10, 700, 0)), 10);
        assert_eq!(next_target(obs(false, 0, 16, 0, 0)), 12);
        assert_eq!(next_target(obs(false, 0, 2, 0, 0)), 1);
        assert_eq!(next_target(obs(false, 0, 1, 0, 0)), 1);
    }

    #[test]
    fn enough_workers_follows_littles_law() {
        // 25 workers keep one CPU busy (saturated): they are enough, maybe more than needed.
        assert_eq!(enough_workers(25, 1000, 1), Some(25));
        assert_eq!(enough_workers(25, FULL_PERMILLE, 1), Some(25));
        // 90% used: one more would fill it (a busy pool that misses the CPU it could use).
        assert_eq!(enough_workers(25, 900, 1), Some(28));
        // 10 workers use 60% of two CPUs: 17 would use them fully.
        assert_eq!(enough_workers(10, 1200, 2), Some(17));
        // CPUs mostly idle (a burst's sleeping start) or nobody busy: no measurement.
        assert_eq!(enough_workers(25, 499, 1), None);
        assert_eq!(enough_workers(0, 1000, 1), None);
    }

    #[test]
    fn the_estimate_is_kept_replaced_or_forgotten() {
        let ms = Duration::from_millis;
        assert_eq!(next_enough(20, None, ms(0)), 20);
        assert_eq!(next_enough(20, Some(25), ms(0)), 25);
        // A burst's sleeping start (W3 sleeps 5 ms first) keeps it.
        assert_eq!(next_enough(20, None, ms(5)), 20);
        // CPUs idle with items waiting for longer: it came from other work; forgotten.
        assert_eq!(next_enough(1, None, STALE_AFTER), usize::MAX);
        assert_eq!(next_enough(1, Some(1), STALE_AFTER), usize::MAX);
    }

    #[test]
    fn creation_slows_once_enough_workers_hold_items() {
        use crate::pool::{create_interval, ENOUGH_SLOWDOWN};
        let base = Duration::from_micros(200);
        assert_eq!(create_interval(base, 10, usize::MAX), base);
        assert_eq!(create_interval(base, 25, 26), base);
        assert_eq!(create_interval(base, 26, 26), base * ENOUGH_SLOWDOWN);
    }

    #[test]
    fn unbound_spare_cpu_needs_a_sleeper_and_no_preempted_worker() {
        // Two busy samples, not saturated, one stalled worker asleep: spare CPU.
        assert!(unbound_spare_cpu(2, false, 1, 1));
        // Unused CPU but every worker progressing: the CPU went to other threads.
        assert!(!unbound_spare_cpu(5, false, 0, 0));
        // A stalled worker that is not asleep was preempted.
        assert!(!unbound_spare_cpu(5, false, 1, 2));
        // Saturated, or too early in the busy period.
        assert!(!unbound_spare_cpu(5, true, 1, 1));
        assert!(!unbound_spare_cpu(1, false, 1, 1));
    }

    #[test]
    fn hinted_sleepers_raise_the_target_like_detected_ones() {
        // Hinted sleepers are part of `nr_active` and `asleep`: with the CPU idle and work
        // waiting the target grows past the kernel's one runner.
        assert_eq!(next_target(obs(true, 5, 1, 300, 5)), 6);
    }
}
