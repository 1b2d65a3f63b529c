//! The monitor thread: samples busy pools for concurrency management (blocked workers and CPU
//! hogs of per-CPU pools, the creation gates of all), retries worker creation after failures,
//! calls the rescuers (mayday), reaps idle workers, and re-reads the process's CPU set
//! (`pool/hotplug.rs`). It stands in for the kernel's scheduler tick, idle timers, mayday
//! timers and CPU hotplug notifications.
//!
//! Its interval adapts: `monitor_interval` (1 ms by default) while a pool is changing, four
//! times that while pools are busy but steady, and while every pool is idle it parks until a
//! worker starts processing (or the next reaping period).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread::Thread;
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

use crate::cm::sample::{sample_pool, PoolSample};
use crate::config::config;
use crate::pool::{self, manage, rescuer};

static MONITOR: OnceLock<Thread> = OnceLock::new();
/// Set while the monitor is parked for lack of busy pools.
static PARKED: AtomicBool = AtomicBool::new(false);

/// Times a worker woke the parked monitor (Relaxed: a statistic).
static UNPARKS: AtomicU64 = AtomicU64::new(0);

/// How many times workers have woken the parked monitor. For the crate's own tests.
#[doc(hidden)]
pub fn monitor_unparks() -> u64 {
    UNPARKS.load(Ordering::Relaxed)
}

/// Starts the monitor thread if it is not running.
pub(crate) fn ensure_started() {
    MONITOR.get_or_init(|| {
        std::thread::Builder::new()
            .name("cmwq-monitor".into())
            .spawn(run)
            .expect("cmwq: cannot start the monitor thread")
            .thread()
            .clone()
    });
}

/// Called when a worker starts processing (after it left the idle list under the pool lock),
/// or when a pool is left short of workers: wakes a parked monitor.
#[inline]
pub(crate) fn note_busy() {
    // SeqCst, pairs with the monitor's SeqCst store of PARKED before its re-scan (Dekker):
    // either the monitor's re-scan sees this worker busy, or this load sees PARKED set and
    // unparks (an unpark before the park makes the park return at once).
    if PARKED.load(Ordering::SeqCst) && PARKED.swap(false, Ordering::SeqCst) {
        // Relaxed: a statistic.
        UNPARKS.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = MONITOR.get() {
            t.unpark();
        }
    }
}

/// Consecutive idle samples (taken 4 monitor intervals apart) before the monitor parks.
const IDLE_ROUNDS_BEFORE_PARK: u32 = 8;

/// Whether any pool has work, a running worker, or a busy one (the monitor's re-scan).
fn any_pool_busy(pools: &[std::sync::Arc<pool::WorkerPool>]) -> bool {
    pools.iter().any(|p| {
        let g = p.locked.lock();
        g.nr_running > 0
            || !g.worklist.is_empty()
            || g.cm_target > 1
            || g.workers.iter().flatten().any(|w| w.current.is_some())
    })
}

/// How often idle workers are looked at for reaping.
pub(crate) fn reap_period() -> Duration {
    (config().idle_worker_timeout / 4).clamp(Duration::from_millis(1), Duration::from_secs(1))
}

fn run() {
    // The monitor stands in for the scheduler tick: let it run promptly when CPUs are busy
    // (kept at the default nice if the process may not raise priority).
    let _ = crate::os::topology::set_current_nice(crate::pool::HIGHPRI_NICE);
    let cfg = config();
    let mut samples: FxHashMap<u64, PoolSample> = FxHashMap::default();
    let mut watches: FxHashMap<u64, crate::observe::watchdog::Watch> = FxHashMap::default();
    let mut last_reap = Instant::now();
    let mut last_cpus = Instant::now();
    let mut steady_rounds = 0u32;
    let mut idle_rounds = 0u32;
    loop {
        // The CPU set, every `RECHECK_PERIOD` (also while parked: it wakes at least every
        // reaping period, at most 1 s).
        pool::hotplug::refresh_if_due(&mut last_cpus);
        let pools = pool::all_pools();
        let mut busy = false;
        let mut changed = false;
        for p in &pools {
            let s = samples.entry(p.serial).or_default();
            let sampled = sample_pool(p, s);
            busy |= sampled.busy;
            changed |= sampled.changed;
            manage::retry_creation(p);
            rescuer::check_mayday(p);
            let watch = watches.entry(p.serial).or_default();
            crate::observe::watchdog::check(p, watch, Instant::now());
        }
        samples.retain(|serial, _| pools.iter().any(|p| p.serial == *serial));
        watches.retain(|serial, _| pools.iter().any(|p| p.serial == *serial));
        if last_reap.elapsed() >= reap_period() {
            last_reap = Instant::now();
            for p in &pools {
                manage::reap_idle_workers(p);
            }
        }
        let failing = pools
            .iter()
            .any(|p| p.locked.lock().creation_failed_since.is_some());
        idle_rounds = if busy || failing { 0 } else { idle_rounds + 1 };
        if idle_rounds > 0 && idle_rounds <= IDLE_ROUNDS_BEFORE_PARK {
            // Idle for now: items that come often but briefly (a probe every 50 µs) leave
            // the pools idle at most samples; parking at the first idle one had each of them
            // wake the monitor (thousands of wake-ups a second, at the monitor's high
            // priority, on the CPU the item's worker needs). Sample slowly a while first.
            std::thread::sleep(cfg.monitor_interval * 4);
        } else if busy || failing {
            steady_rounds = if changed { 0 } else { steady_rounds + 1 };
            let interval = if steady_rounds < 8 {
                cfg.monitor_interval
            } else {
                cfg.monitor_interval * 4
            };
            std::thread::sleep(interval);
        } else {
            // Forget stale samples: the next busy period starts fresh, and unbound pools
            // start it with their creation gate closed (spare CPU not yet seen).
            samples.clear();
            watches.clear();
            for p in &pools {
                p.locked.lock().cm_spare_cpu = false;
            }
            // SeqCst: pairs with the load in `note_busy` (see there).
            PARKED.store(true, Ordering::SeqCst);
            if !any_pool_busy(&pools) {
                std::thread::park_timeout(reap_period());
            }
            // SeqCst: as the store above. `false` here: a worker woke it (`note_busy`).
            if !PARKED.swap(false, Ordering::SeqCst) {
                // Woken by work: a fresh run of idle samples before parking again (after a
                // timeout, with nothing to do, it parks again at once).
                idle_rounds = 0;
            }
        }
    }
}
