//! The workqueue watchdog (the kernel's `wq_watchdog`): a pool whose worklist makes no progress
//! for `Config::watchdog_thresh` (items wait, none starts) is reported once per stall, with
//! the state dump: a `tracing` error event, the hook set by [`set_stall_hook`], and an abort
//! if `Config::panic_on_stall` is set.
//!
//! The monitor runs the check on its rounds, which it makes only while some pool is busy: a
//! stalled pool has items waiting, so it keeps the monitor awake, and an idle engine pays
//! nothing. Progress is the pool's count of started items, bumped under the pool lock as each
//! item starts (no clock read on that path).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::config::config;
use crate::pool::panic::contain_quiet;
use crate::pool::WorkerPool;

/// A stalled pool, as given to the hook set with [`set_stall_hook`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Stall {
    /// The pool's id (as in [`PoolStats::id`](crate::PoolStats::id)).
    pub pool_id: usize,
    /// The CPU of a per-CPU pool; `None` for unbound pools.
    pub cpu: Option<usize>,
    /// How long its worklist has made no progress.
    pub stalled_for: Duration,
    /// The state dump ([`show_workqueues`](crate::show_workqueues)) at the time.
    pub dump: String,
}

type StallHook = Arc<dyn Fn(&Stall) + Send + Sync>;

fn stall_hook() -> &'static RwLock<Option<StallHook>> {
    static HOOK: OnceLock<RwLock<Option<StallHook>>> = OnceLock::new();
    HOOK.get_or_init(|| RwLock::new(None))
}

/// Sets the function told about every stall the watchdog finds (once per stall). It runs on
/// the monitor thread with no engine lock held; a panic in it is caught.
pub fn set_stall_hook(hook: impl Fn(&Stall) + Send + Sync + 'static) {
    let new: StallHook = Arc::new(hook);
    let old = stall_hook().write().replace(new);
    contain_quiet(move || drop(old));
}

/// The process's start, the base of [`TOUCHED`].
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds after [`base`] of the last [`touch_watchdog`] (Relaxed: a timestamp, read
/// by the monitor alone; a stale read delays a report by one round at most).
static TOUCHED: AtomicU64 = AtomicU64::new(0);

/// Tells the watchdog that the caller is making progress (the kernel's
/// `touch_softlockup_watchdog` as workqueues use it): every pool's stall timer starts again.
/// Call it from items that legitimately keep others waiting for long.
pub fn touch_watchdog() {
    let ns = base().elapsed().as_nanos() as u64;
    TOUCHED.fetch_max(ns, Ordering::Relaxed);
}

/// What the monitor remembers of one pool for the watchdog.
#[derive(Debug)]
pub(crate) struct Watch {
    started: u64,
    since: Instant,
    reported: bool,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            started: 0,
            since: Instant::now(),
            reported: false,
        }
    }
}

/// The monitor's round for `pool`: notes when busy workers were first seen running (for the
/// dump's "for"), and reports a stall.
pub(crate) fn check(pool: &WorkerPool, w: &mut Watch, now: Instant) {
    let thresh = config().watchdog_thresh;
    let (waiting, started) = {
        let mut g = pool.locked.lock();
        for slot in g.workers.iter_mut().flatten() {
            if slot.current.is_some() && slot.seen_running_at.is_none() {
                slot.seen_running_at = Some(now);
            }
        }
        (!g.worklist.is_empty(), g.nr_started)
    };
    if !waiting || started != w.started {
        w.started = started;
        w.since = now;
        w.reported = false;
        return;
    }
    if thresh.is_zero() || w.reported {
        return;
    }
    let touched = base() + Duration::from_nanos(TOUCHED.load(Ordering::Relaxed));
    let since = w.since.max(touched);
    let stalled_for = now.saturating_duration_since(since);
    if stalled_for < thresh {
        return;
    }
    w.reported = true;
    let stall = Stall {
        pool_id: pool.id as usize,
        cpu: pool.cpu,
        stalled_for,
        dump: crate::show_workqueues(),
    };
    report(&stall);
}

fn report(stall: &Stall) {
    contain_quiet(|| {
        tracing::error!(
            target: "cmwq",
            pool = stall.pool_id,
            cpu = stall.cpu.map_or(-1, |c| c as i64),
            stalled_for = ?stall.stalled_for,
            "workqueue lockup: pool {} stuck for {:?}\n{}",
            stall.pool_id,
            stall.stalled_for,
            stall.dump
        )
    });
    let hook = stall_hook().read().clone();
    if let Some(hook) = &hook {
        contain_quiet(|| hook(stall));
    }
    contain_quiet(move || drop(hook));
    if config().panic_on_stall {
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!(
                "cmwq: workqueue lockup: pool {} stuck for {:?} (panic_on_stall)\n{}",
                stall.pool_id, stall.stalled_for, stall.dump
            ),
        );
        std::process::abort();
    }
}
