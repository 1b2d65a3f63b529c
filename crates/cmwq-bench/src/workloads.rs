//! The six workloads. Each function runs one repetition on an existing pool.
//! W5 (latency) lives in [`w5`].

mod w5;

pub use w5::{latency, Background};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use cmwq::Work;
use serde::Serialize;

use crate::pools::{Kind, Pool};
use crate::sys::{self, Sampler, Spin, SpinMeter, Usage};

/// Workload sizes. Printed and stored with the results.
#[derive(Clone, Debug, Serialize)]
pub struct Params {
    pub w1_items: usize,
    pub w2_items_per_producer: usize,
    pub w3_items: usize,
    pub w3_sleep_us: u64,
    pub w3_spin_us: u64,
    pub w4_items: usize,
    pub w4_spin_us: u64,
    pub w5_duration_ms: u64,
    pub w5_period_us: u64,
    pub w5_bg_spin_us: u64,
    pub w5_bg_load: f64,
    pub w5_sleep_min_us: u64,
    pub w5_sleep_max_us: u64,
    pub w6_items: usize,
    pub w6_sleep_us: u64,
    pub w6_idle_ms: u64,
}

impl Params {
    pub fn full() -> Params {
        Params {
            w1_items: 1_000_000,
            w2_items_per_producer: 500_000,
            w3_items: 2_000,
            w3_sleep_us: 5_000,
            w3_spin_us: 200,
            w4_items: 20_000,
            w4_spin_us: 100,
            w5_duration_ms: 2_000,
            w5_period_us: 50,
            w5_bg_spin_us: 500,
            w5_bg_load: 0.5,
            w5_sleep_min_us: 1_000,
            w5_sleep_max_us: 5_000,
            w6_items: 500,
            w6_sleep_us: 20_000,
            w6_idle_ms: 5_000,
        }
    }

    pub fn quick() -> Params {
        Params {
            w1_items: 100_000,
            w2_items_per_producer: 50_000,
            w3_items: 400,
            w4_items: 4_000,
            w5_duration_ms: 500,
            w6_items: 100,
            w6_idle_ms: 1_000,
            ..Params::full()
        }
    }
}

/// Counts completions and wakes the waiting thread when the target is reached.
/// Leaked on purpose: work items hold `&'static` references, so no refcount is touched per item.
pub struct Tracker {
    count: AtomicUsize,
    target: AtomicUsize,
    abort: AtomicBool,
    done: Mutex<bool>,
    cv: Condvar,
}

impl Tracker {
    pub fn leak() -> &'static Tracker {
        Box::leak(Box::new(Tracker {
            count: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            abort: AtomicBool::new(false),
            done: Mutex::new(false),
            cv: Condvar::new(),
        }))
    }

    pub fn reset(&self, target: usize) {
        *self.done.lock().unwrap() = false;
        self.abort.store(false, Ordering::SeqCst);
        self.count.store(0, Ordering::SeqCst);
        self.target.store(usize::MAX, Ordering::SeqCst);
        self.set_target(target);
    }

    /// Sets the number of completions to wait for (may be called after items started).
    pub fn set_target(&self, target: usize) {
        self.target.store(target, Ordering::SeqCst);
        if self.count.load(Ordering::SeqCst) >= target {
            self.finish();
        }
    }

    fn finish(&self) {
        *self.done.lock().unwrap() = true;
        self.cv.notify_all();
    }

    #[inline]
    pub fn hit(&self) {
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.target.load(Ordering::SeqCst) {
            self.finish();
        }
    }

    #[inline]
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    /// Waits until the target is reached; `false` at the deadline.
    pub fn wait(&self, deadline: Instant) -> bool {
        let mut done = self.done.lock().unwrap();
        while !*done {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            done = self.cv.wait_timeout(done, deadline - now).unwrap().0;
        }
        true
    }

    /// After a missed deadline: tell the remaining items to do nothing and wait for them to drain.
    /// Returns whether they drained (so the pool can be shut down normally).
    pub fn abort_and_drain(&self) -> bool {
        self.abort.store(true, Ordering::SeqCst);
        self.wait(Instant::now() + Duration::from_secs(30))
    }
}

/// One repetition's outcome.
#[derive(Default)]
pub struct RepOut {
    pub metrics: Vec<(&'static str, f64)>,
    /// `(ms since start, live pool threads)`.
    pub trace: Option<Vec<(f64, f64)>>,
    pub timed_out: bool,
    /// False when work may still be stuck in the pool.
    pub clean: bool,
    pub error: Option<String>,
}

impl RepOut {
    fn timeout(clean: bool) -> RepOut {
        RepOut {
            timed_out: true,
            clean,
            ..RepOut::default()
        }
    }
}

/// Thread and context-switch observation around one repetition.
struct Probe {
    sampler: Sampler,
    other: usize,
    usage0: Usage,
}

struct ProbeOut {
    peak: f64,
    trace: Vec<(f64, f64)>,
    cs: Usage,
    other: usize,
}

impl Probe {
    fn start(kind: Kind) -> Probe {
        let sampler = Sampler::start();
        let own = sys::threads_named(kind.thread_prefix());
        let other = sys::process_threads().saturating_sub(own);
        Probe {
            sampler,
            other,
            usage0: sys::process_usage(),
        }
    }

    /// Threads of the pool right now.
    fn pool_threads(&self) -> f64 {
        sys::process_threads().saturating_sub(self.other) as f64
    }

    fn stop(self, t0: Instant) -> ProbeOut {
        let out = self.sampler.stop();
        let usage = sys::process_usage().minus(self.usage0);
        let cs = Usage {
            voluntary: usage.voluntary - out.own.voluntary,
            involuntary: usage.involuntary - out.own.involuntary,
            cpu: usage.cpu.saturating_sub(out.own.cpu),
        };
        let trace: Vec<(f64, f64)> = out
            .trace
            .iter()
            .map(|&(t, n)| {
                let ms = if t >= t0 {
                    (t - t0).as_secs_f64() * 1e3
                } else {
                    -((t0 - t).as_secs_f64() * 1e3)
                };
                (ms, n.saturating_sub(self.other) as f64)
            })
            .collect();
        let peak = trace.iter().map(|p| p.1).fold(0.0, f64::max);
        ProbeOut {
            peak,
            trace,
            cs,
            other: self.other,
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// W1/W2: `producers` threads each queue `per_producer` empty items; time until all ran.
/// With `works`, producer `i` re-queues the existing items `works[i]` (cmwq only).
pub fn throughput(
    pool: &Pool,
    per_producer: usize,
    producers: usize,
    works: Option<(&[Vec<Work>], &'static Tracker)>,
    deadline: Instant,
) -> RepOut {
    let total = per_producer * producers;
    let t = match works {
        Some((_, t)) => t,
        None => Tracker::leak(),
    };
    t.reset(total);
    let produce = |i: usize| -> (Duration, usize) {
        let start = Instant::now();
        let refused = match works {
            Some((ws, _)) => ws[i].iter().filter(|w| !pool.queue(w)).count(),
            None => (0..per_producer)
                .filter(|_| !pool.spawn(move || t.hit()))
                .count(),
        };
        (start.elapsed(), refused)
    };
    let (t0, results) = if producers == 1 {
        let t0 = Instant::now();
        (t0, vec![produce(0)])
    } else {
        let barrier = Barrier::new(producers + 1);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..producers)
                .map(|i| {
                    let (barrier, produce) = (&barrier, &produce);
                    s.spawn(move || {
                        barrier.wait();
                        produce(i)
                    })
                })
                .collect();
            barrier.wait();
            let t0 = Instant::now();
            let results = handles.into_iter().map(|h| h.join().unwrap()).collect();
            (t0, results)
        })
    };
    let refused: usize = results.iter().map(|r| r.1).sum();
    if refused > 0 {
        t.set_target(total - refused);
    }
    let finished = t.wait(deadline);
    let elapsed = t0.elapsed();
    if !finished {
        return RepOut::timeout(t.abort_and_drain());
    }
    let enqueue = results.iter().map(|r| r.0).max().unwrap_or_default();
    let n = total as f64;
    RepOut {
        metrics: vec![
            ("ns/item", elapsed.as_nanos() as f64 / n),
            ("Mitems/s", n / elapsed.as_secs_f64() / 1e6),
            (
                "enqueue ns/item",
                enqueue.as_nanos() as f64 / per_producer as f64,
            ),
        ],
        clean: true,
        error: (refused > 0).then(|| format!("{refused} queue() calls returned false")),
        ..RepOut::default()
    }
}

/// Creates the items for the re-queue variants: `producers` sets of `per_producer` items.
pub fn make_works(per_producer: usize, producers: usize, t: &'static Tracker) -> Vec<Vec<Work>> {
    (0..producers)
        .map(|_| {
            (0..per_producer)
                .map(|_| Work::new(move |_| t.hit()))
                .collect()
        })
        .collect()
}

/// Shared shape of W3, W4 and W6: queue `n` copies of `item` at once, wait, observe threads.
fn burst<F: Fn() + Send + Sync + Copy + 'static>(
    pool: &Pool,
    kind: Kind,
    n: usize,
    t: &'static Tracker,
    item: F,
    deadline: Instant,
) -> (RepOut, Option<(Duration, Probe, Instant)>) {
    t.reset(n);
    let probe = Probe::start(kind);
    let floor = probe.pool_threads();
    let t0 = Instant::now();
    let refused = (0..n)
        .filter(|_| {
            !pool.spawn(move || {
                if !t.aborted() {
                    item();
                }
                t.hit();
            })
        })
        .count();
    if refused > 0 {
        t.set_target(n - refused);
    }
    let finished = t.wait(deadline);
    let makespan = t0.elapsed();
    if !finished {
        let clean = t.abort_and_drain();
        let p = probe.stop(t0);
        let mut out = RepOut::timeout(clean);
        out.trace = Some(p.trace);
        return (out, None);
    }
    let mut out = RepOut {
        clean: true,
        error: (refused > 0).then(|| format!("{refused} items refused")),
        ..RepOut::default()
    };
    out.metrics.push(("floor threads", floor));
    (out, Some((makespan, probe, t0)))
}

fn sleep_item(hint: bool, d: Duration) {
    if hint {
        cmwq::blocking(|| std::thread::sleep(d));
    } else {
        std::thread::sleep(d);
    }
}

/// W3: items sleep, then spin. `hint` wraps the sleep in `cmwq::blocking`.
pub fn mixed(
    pool: &Pool,
    kind: Kind,
    p: &Params,
    spin: Spin,
    cores: usize,
    hint: bool,
    deadline: Instant,
) -> RepOut {
    let sleep = Duration::from_micros(p.w3_sleep_us);
    let iters = spin.iters_for(Duration::from_micros(p.w3_spin_us));
    let t = Tracker::leak();
    SpinMeter::reset();
    let (mut out, rest) = burst(
        pool,
        kind,
        p.w3_items,
        t,
        move || {
            sleep_item(hint, sleep);
            SpinMeter::run(iters);
        },
        deadline,
    );
    let Some((makespan, probe, t0)) = rest else {
        return out;
    };
    let po = probe.stop(t0);
    let lb = w3_lower_bound(p, cores);
    // The same bound with the CPU the process really used in place of the calibrated spin
    // (see `cpu_bound`): immune to speed drift; above 1.0 the cores were not working.
    let used = sleep.as_secs_f64() + po.cs.cpu.as_secs_f64() / cores as f64;
    let spun = item_cpu(p.w3_items, iters, spin) / cores as f64;
    out.metrics.extend([
        ("makespan ms", ms(makespan)),
        ("x lower bound", makespan.as_secs_f64() / lb.as_secs_f64()),
        (
            "x sleep + item CPU/cores",
            makespan.as_secs_f64() / (sleep.as_secs_f64() + spun).max(1e-9),
        ),
        // The same bound for one CPU (the goal of `cmwq-bound`, whose items all go to one).
        (
            "x sleep + item CPU of 1 CPU",
            makespan.as_secs_f64() / (sleep.as_secs_f64() + spun * cores as f64).max(1e-9),
        ),
        (
            "x sleep + used CPU/cores",
            makespan.as_secs_f64() / used.max(1e-9),
        ),
        ("peak threads", po.peak),
        ("voluntary cs", po.cs.voluntary as f64),
        ("involuntary cs", po.cs.involuntary as f64),
        ("cpu s", po.cs.cpu.as_secs_f64()),
        ("other threads", po.other as f64),
    ]);
    out.trace = Some(po.trace);
    out
}

/// Seconds of CPU that `items` spins of `iters` iterations took in the repetition just run,
/// at the cost per iteration that [`SpinMeter`] measured inside the items. Every thread's
/// first spin is metered, so a finished repetition always has a measurement; the calibrated
/// rate is only a fallback.
fn item_cpu(items: usize, iters: u64, spin: Spin) -> f64 {
    let ns = SpinMeter::ns_per_iter().unwrap_or(1e3 / spin.iters_per_us);
    items as f64 * iters as f64 * ns / 1e9
}

/// W3 lower bound: no item can spin before its sleep ends, and the spinning needs
/// `items * spin / cores` of wall time even if perfectly spread: `sleep + items * spin / cores`.
pub fn w3_lower_bound(p: &Params, cores: usize) -> Duration {
    Duration::from_micros(p.w3_sleep_us)
        + Duration::from_micros(p.w3_spin_us) * p.w3_items as u32 / cores as u32
}

/// W4 lower bound: total CPU / cores.
pub fn w4_lower_bound(p: &Params, cores: usize) -> Duration {
    Duration::from_micros(p.w4_spin_us) * p.w4_items as u32 / cores as u32
}

/// W4: CPU-bound items.
pub fn cpu_bound(
    pool: &Pool,
    kind: Kind,
    p: &Params,
    spin: Spin,
    cores: usize,
    deadline: Instant,
) -> RepOut {
    let iters = spin.iters_for(Duration::from_micros(p.w4_spin_us));
    let t = Tracker::leak();
    SpinMeter::reset();
    let (mut out, rest) = burst(
        pool,
        kind,
        p.w4_items,
        t,
        move || SpinMeter::run(iters),
        deadline,
    );
    let Some((makespan, probe, t0)) = rest else {
        return out;
    };
    let po = probe.stop(t0);
    let lb = w4_lower_bound(p, cores);
    // The same against the CPU the process really used (every thread but the sampler):
    // immune to the machine's speed drifting from the start-up calibration, it shows how
    // much of the makespan the cores were not working (idle, or waiting on each other).
    let used = po.cs.cpu.as_secs_f64() / cores as f64;
    // The CPUs' own speeds, from the metered spins: where work is split evenly and pinned
    // (per-CPU pools fed round-robin), the slowest CPU's share bounds the makespan, and
    // nothing but moving work between CPUs can beat it.
    let by_cpu = SpinMeter::ns_per_iter_by_cpu();
    let slowest = by_cpu.iter().map(|c| c.1).fold(0.0, f64::max);
    let fastest = by_cpu.iter().map(|c| c.1).fold(f64::MAX, f64::min);
    let share = p.w4_items as f64 / cores as f64 * iters as f64 * slowest / 1e9;
    out.metrics.extend([
        ("makespan ms", ms(makespan)),
        ("x CPU/cores", makespan.as_secs_f64() / lb.as_secs_f64()),
        (
            "x item CPU/cores",
            makespan.as_secs_f64() / (item_cpu(p.w4_items, iters, spin) / cores as f64).max(1e-9),
        ),
        (
            "x slowest CPU's share",
            makespan.as_secs_f64() / share.max(1e-9),
        ),
        (
            "CPU speed gap %",
            if by_cpu.is_empty() {
                0.0
            } else {
                (slowest / fastest - 1.0) * 100.0
            },
        ),
        ("x used CPU/cores", makespan.as_secs_f64() / used.max(1e-9)),
        ("peak threads", po.peak),
        ("voluntary cs", po.cs.voluntary as f64),
        ("involuntary cs", po.cs.involuntary as f64),
        ("cpu s", po.cs.cpu.as_secs_f64()),
    ]);
    out
}

/// W6: a burst of sleeping items, then an idle period; threads after each.
pub fn burst_idle(pool: &Pool, kind: Kind, p: &Params, hint: bool, deadline: Instant) -> RepOut {
    let sleep = Duration::from_micros(p.w6_sleep_us);
    let t = Tracker::leak();
    let (mut out, rest) = burst(
        pool,
        kind,
        p.w6_items,
        t,
        move || sleep_item(hint, sleep),
        deadline,
    );
    let Some((makespan, probe, t0)) = rest else {
        return out;
    };
    let after_burst = probe.pool_threads();
    std::thread::sleep(Duration::from_millis(p.w6_idle_ms));
    let after_idle = probe.pool_threads();
    let po = probe.stop(t0);
    out.metrics.extend([
        ("burst ms", ms(makespan)),
        ("peak threads", po.peak),
        ("after burst", after_burst),
        ("after idle", after_idle),
    ]);
    out.trace = Some(po.trace);
    out
}
