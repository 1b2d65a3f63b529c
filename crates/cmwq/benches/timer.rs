//! Criterion benchmarks for cmwq's timer service (delayed work), next to tokio's timer.
//!
//! Background load in every case: 10,000 timers armed with 60 s deadlines (cmwq: delayed
//! items on the bench workqueue; tokio: registered `Sleep`s on the runtime).
//!
//! * `lateness_{1ms,10ms}/*`: one timer armed with the delay, waited for. Criterion reports
//!   the mean time from arming to the start of the run (delay + lateness); the bench itself
//!   prints the lateness distribution (actual start minus intended deadline: p50 / p99 /
//!   max, over every sample taken, warm-up included). cmwq: a `DelayedWork` on a bound
//!   workqueue; "start" is the first instruction of the work function, on a worker thread.
//!   tokio: `tokio::time::sleep` awaited in `block_on`, on a multi-thread runtime (driver on a
//!   worker thread) and on a current-thread runtime (driver on the bench thread); "start" is
//!   the return of the `.await`. tokio's timer wheel has 1 ms resolution and rounds deadlines
//!   up, so its lateness includes up to 1 ms of rounding by design.
//! * `arm_cancel/*`: the cost of arming one timer and cancelling it (cmwq: `queue_delayed` +
//!   `cancel`; tokio: create a `Sleep`, poll it once so that it registers, drop it), and of
//!   re-arming a pending timer (cmwq: `mod_delayed` on a pending item; tokio: `Sleep::reset`).
//!   The delay (30 s) is earlier than every background timer's, the worst case of cmwq's heap
//!   (the timer goes to the top and comes back down); the `*_latest` variants use 90 s, later
//!   than all of them, the usual case of timeouts armed with one delay.
//! * `destroy/cmwq_create_destroy_with_timers_armed`: creating and destroying an empty
//!   workqueue while the background timers (of another queue) are armed: destroy disarms only
//!   its own queue's timers, so this is the cost of a scan of the armed timers, without
//!   touching theirs; `destroy/cmwq_create_destroy` is the same with no timer armed.
//!
//! Run with `cargo bench -p cmwq --bench timer`.

use std::future::Future;
use std::hint::black_box;
use std::pin::{pin, Pin};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use cmwq::{DelayedWork, Workqueue, WqFlags};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};

/// Timers armed in the background while measuring.
const BACKGROUND: usize = 10_000;
/// Deadline of the background timers.
const BACKGROUND_DELAY: Duration = Duration::from_secs(60);
/// Delay used by the arm/cancel benchmarks (never reached): earlier than the background's.
const ARM_DELAY: Duration = Duration::from_secs(30);
/// Delay of the `*_latest` arm/cancel benchmarks: later than the background's.
const ARM_DELAY_LATEST: Duration = Duration::from_secs(90);
/// Longest wait for one probe before the bench gives up.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);

/// Where a probe's work function records when it started.
struct Probe {
    started: Mutex<Option<Instant>>,
    cv: Condvar,
}

impl Probe {
    fn new() -> Arc<Probe> {
        Arc::new(Probe {
            started: Mutex::new(None),
            cv: Condvar::new(),
        })
    }

    fn hit(&self) {
        let now = Instant::now();
        *self.started.lock().unwrap() = Some(now);
        self.cv.notify_one();
    }

    /// Waits for the next start and takes it.
    fn wait(&self) -> Instant {
        let guard = self.started.lock().unwrap();
        let (mut guard, timeout) = self
            .cv
            .wait_timeout_while(guard, PROBE_DEADLINE, |s| s.is_none())
            .unwrap();
        assert!(
            !timeout.timed_out(),
            "a probe timer did not fire within {PROBE_DEADLINE:?}"
        );
        guard.take().unwrap()
    }
}

/// Lateness samples (signed nanoseconds: negative means the timer fired early).
#[derive(Default)]
struct Lateness(Vec<i64>);

impl Lateness {
    fn record(&mut self, started: Instant, deadline: Instant) {
        let ns = if started >= deadline {
            (started - deadline).as_nanos() as i64
        } else {
            -((deadline - started).as_nanos() as i64)
        };
        self.0.push(ns);
    }

    fn report(&mut self, what: &str) {
        let v = &mut self.0;
        if v.is_empty() {
            return;
        }
        v.sort_unstable();
        let pct = |p: usize| v[((v.len() - 1) * p) / 100];
        let us = |ns: i64| ns as f64 / 1_000.0;
        println!(
            "lateness {what:<22} n={:<6} p50={:>9.1}µs p99={:>9.1}µs max={:>9.1}µs min={:>8.1}µs",
            v.len(),
            us(pct(50)),
            us(pct(99)),
            us(*v.last().unwrap()),
            us(v[0]),
        );
        v.clear();
    }
}

/// The cmwq side: a bound workqueue with `BACKGROUND` armed items.
struct CmwqTimers {
    wq: Workqueue,
    background: Vec<DelayedWork>,
}

impl CmwqTimers {
    fn new() -> CmwqTimers {
        let wq = Workqueue::new("bench-timer", WqFlags::empty(), 0).unwrap();
        let background: Vec<DelayedWork> =
            (0..BACKGROUND).map(|_| DelayedWork::new(|_| {})).collect();
        for dw in &background {
            assert!(wq.queue_delayed(dw, BACKGROUND_DELAY));
        }
        CmwqTimers { wq, background }
    }
}

impl Drop for CmwqTimers {
    fn drop(&mut self) {
        for dw in &self.background {
            dw.cancel();
        }
    }
}

/// Registers `BACKGROUND` sleeps on the runtime entered by the caller.
fn tokio_background() -> Vec<Pin<Box<tokio::time::Sleep>>> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut v: Vec<_> = (0..BACKGROUND)
        .map(|_| Box::pin(tokio::time::sleep(BACKGROUND_DELAY)))
        .collect();
    for s in &mut v {
        assert!(s.as_mut().poll(&mut cx).is_pending());
    }
    v
}

fn tokio_mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap()
}

fn tokio_ct() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn lateness(c: &mut Criterion) {
    let cmwq_timers = CmwqTimers::new();
    let probe = Probe::new();
    let dw = {
        let probe = probe.clone();
        DelayedWork::new(move |_| probe.hit())
    };
    let mt = tokio_mt();
    let ct = tokio_ct();
    let _mt_bg = {
        let _g = mt.enter();
        tokio_background()
    };
    let _ct_bg = {
        let _g = ct.enter();
        tokio_background()
    };

    for (name, delay) in [
        ("1ms", Duration::from_millis(1)),
        ("10ms", Duration::from_millis(10)),
    ] {
        let mut g = c.benchmark_group(format!("lateness_{name}"));
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(20)
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(if delay.as_millis() < 5 {
                2
            } else {
                4
            }));
        let mut samples = Lateness::default();

        g.bench_function(BenchmarkId::new("cmwq", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let armed = Instant::now();
                    assert!(cmwq_timers.wq.queue_delayed(&dw, delay));
                    let started = probe.wait();
                    samples.record(started, armed + delay);
                    total += started - armed;
                }
                total
            })
        });
        samples.report(&format!("cmwq {name}"));

        for (rt_name, rt) in [("tokio_mt", &mt), ("tokio_ct", &ct)] {
            g.bench_function(BenchmarkId::new(rt_name, name), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let armed = Instant::now();
                            tokio::time::sleep(delay).await;
                            let started = Instant::now();
                            samples.record(started, armed + delay);
                            total += started - armed;
                        }
                        total
                    })
                })
            });
            samples.report(&format!("{rt_name} {name}"));
        }
        g.finish();
    }
    drop(cmwq_timers);
}

fn arm_cancel(c: &mut Criterion) {
    let cmwq_timers = CmwqTimers::new();
    let mt = tokio_mt();
    let _enter = mt.enter();
    let _bg = tokio_background();

    let mut g = c.benchmark_group("arm_cancel");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));

    let wq = &cmwq_timers.wq;
    let dw = DelayedWork::new(|_| {});
    g.bench_function("cmwq_queue_delayed_cancel", |b| {
        b.iter(|| {
            black_box(wq.queue_delayed(&dw, ARM_DELAY));
            black_box(dw.cancel());
        })
    });
    assert!(wq.queue_delayed(&dw, ARM_DELAY));
    g.bench_function("cmwq_mod_delayed_pending", |b| {
        b.iter(|| black_box(wq.mod_delayed(&dw, ARM_DELAY)))
    });
    assert!(dw.cancel());
    g.bench_function("cmwq_queue_delayed_cancel_latest", |b| {
        b.iter(|| {
            black_box(wq.queue_delayed(&dw, ARM_DELAY_LATEST));
            black_box(dw.cancel());
        })
    });
    assert!(wq.queue_delayed(&dw, ARM_DELAY_LATEST));
    g.bench_function("cmwq_mod_delayed_pending_latest", |b| {
        b.iter(|| black_box(wq.mod_delayed(&dw, ARM_DELAY_LATEST)))
    });
    assert!(dw.cancel());

    let mut cx = Context::from_waker(Waker::noop());
    g.bench_function("tokio_sleep_register_drop", |b| {
        b.iter(|| {
            let mut s = pin!(tokio::time::sleep(ARM_DELAY));
            black_box(s.as_mut().poll(&mut cx).is_pending());
        })
    });
    let mut s = Box::pin(tokio::time::sleep(ARM_DELAY));
    assert!(s.as_mut().poll(&mut cx).is_pending());
    g.bench_function("tokio_sleep_reset_pending", |b| {
        b.iter(|| {
            s.as_mut()
                .reset(tokio::time::Instant::now() + black_box(ARM_DELAY));
        })
    });
    g.finish();
}

fn destroy(c: &mut Criterion) {
    let mut g = c.benchmark_group("destroy");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2));
    let create_destroy = || {
        let wq = Workqueue::new("bench-destroy", WqFlags::empty(), 0).unwrap();
        wq.destroy();
    };
    g.bench_function("cmwq_create_destroy", |b| b.iter(create_destroy));
    let cmwq_timers = CmwqTimers::new();
    g.bench_function("cmwq_create_destroy_with_timers_armed", |b| {
        b.iter(create_destroy)
    });
    drop(cmwq_timers);
    g.finish();
}

criterion_group!(benches, lateness, arm_cancel, destroy);
criterion_main!(benches);
