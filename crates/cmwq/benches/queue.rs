//! Criterion benchmarks for cmwq's producer path and queue-to-run throughput.
//!
//! * `queue/*`: the cost of one `queue()` call, on an idle pre-created item (each item is
//!   queued once per batch; the batch is flushed outside the timed part) and on an item that is
//!   already pending (the `false` path).
//! * `throughput_1M/*`: time from the first `queue()` until 1,000,000 empty items have run,
//!   for fresh `Work::new` items and for re-queued existing items, on a bound and an unbound
//!   workqueue, next to rayon's `spawn` and tokio's `spawn_blocking` in the same run.
//!
//! Run with `cargo bench -p cmwq --bench queue`.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cmwq::{Work, Workqueue, WqFlags};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};

/// Items per throughput iteration.
const ITEMS: usize = 1_000_000;
/// Pre-created items for the producer-cost benchmark; each is queued once per batch.
const BATCH: usize = 4096;

/// Counts completions and wakes the waiter at the target. Leaked so that items capture a
/// `&'static` and touch no reference count.
struct Done {
    count: AtomicUsize,
    target: AtomicUsize,
    done: Mutex<bool>,
    cv: Condvar,
}

impl Done {
    fn leak() -> &'static Done {
        Box::leak(Box::new(Done {
            count: AtomicUsize::new(0),
            target: AtomicUsize::new(usize::MAX),
            done: Mutex::new(false),
            cv: Condvar::new(),
        }))
    }

    fn reset(&self, target: usize) {
        *self.done.lock().unwrap() = false;
        self.count.store(0, Ordering::SeqCst);
        self.target.store(target, Ordering::SeqCst);
    }

    #[inline]
    fn hit(&self) {
        if self.count.fetch_add(1, Ordering::SeqCst) + 1 == self.target.load(Ordering::SeqCst) {
            *self.done.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    fn wait(&self) {
        let mut done = self.done.lock().unwrap();
        while !*done {
            let (d, res) = self
                .cv
                .wait_timeout(done, Duration::from_secs(120))
                .unwrap();
            done = d;
            assert!(
                *done || !res.timed_out(),
                "items did not all run within 120 s ({} of {})",
                self.count.load(Ordering::SeqCst),
                self.target.load(Ordering::SeqCst)
            );
        }
    }
}

fn wq_kinds() -> [(&'static str, WqFlags); 2] {
    [("bound", WqFlags::empty()), ("unbound", WqFlags::UNBOUND)]
}

/// (a) Producer cost of `queue()`.
fn queue_cost(c: &mut Criterion) {
    let mut g = c.benchmark_group("queue");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .throughput(Throughput::Elements(1));

    for (name, flags) in wq_kinds() {
        let wq = Workqueue::new(&format!("bq-idle-{name}"), flags, 0).unwrap();
        let works: Vec<Work> = (0..BATCH).map(|_| Work::new(|_| {})).collect();
        g.bench_function(BenchmarkId::new("idle_item", name), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(BATCH);
                    let start = Instant::now();
                    for w in &works[..n] {
                        black_box(wq.queue(w));
                    }
                    total += start.elapsed();
                    wq.flush();
                    left -= n;
                }
                total
            })
        });
        wq.destroy();
    }

    // The already-pending path: an ordered queue is held by a blocker, so the victim item
    // stays pending and every further `queue()` returns `false`.
    let ordered = Workqueue::ordered("bq-pending", WqFlags::UNBOUND).unwrap();
    g.bench_function("already_pending", |b| {
        b.iter_custom(|iters| {
            let gate = Arc::new((Mutex::new(false), Condvar::new()));
            let g2 = gate.clone();
            let blocker = Work::new(move |_| {
                let (m, cv) = &*g2;
                let mut open = m.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
            });
            let victim = Work::new(|_| {});
            assert!(ordered.queue(&blocker));
            assert!(ordered.queue(&victim));
            let start = Instant::now();
            let mut accepted = 0u64;
            for _ in 0..iters {
                accepted += u64::from(ordered.queue(black_box(&victim)));
            }
            let elapsed = start.elapsed();
            *gate.0.lock().unwrap() = true;
            gate.1.notify_all();
            ordered.flush();
            assert_eq!(accepted, 0, "queue() of a pending item returned true");
            elapsed
        })
    });
    g.finish();
    ordered.destroy();
}

/// Times `iters` rounds of `round` (which queues `ITEMS` items), each until all items ran.
fn timed_rounds(iters: u64, done: &'static Done, mut round: impl FnMut()) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        done.reset(ITEMS);
        let start = Instant::now();
        round();
        done.wait();
        total += start.elapsed();
    }
    total
}

/// (b) Queue-to-run throughput of 1,000,000 empty items.
fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("throughput_1M");
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(ITEMS as u64));

    for (name, flags) in wq_kinds() {
        let wq = Workqueue::new(&format!("bq-tput-{name}"), flags, 0).unwrap();
        let done = Done::leak();
        g.bench_function(BenchmarkId::new("cmwq_fresh", name), |b| {
            b.iter_custom(|iters| {
                timed_rounds(iters, done, || {
                    for _ in 0..ITEMS {
                        wq.queue(&Work::new(move |_| done.hit()));
                    }
                })
            })
        });
        let works: Vec<Work> = (0..ITEMS).map(|_| Work::new(move |_| done.hit())).collect();
        g.bench_function(BenchmarkId::new("cmwq_requeue", name), |b| {
            b.iter_custom(|iters| {
                timed_rounds(iters, done, || {
                    for w in &works {
                        wq.queue(w);
                    }
                })
            })
        });
        wq.destroy();
        drop(works);
    }

    let done = Done::leak();
    g.bench_function("rayon_spawn", |b| {
        b.iter_custom(|iters| {
            timed_rounds(iters, done, || {
                for _ in 0..ITEMS {
                    rayon::spawn(move || done.hit());
                }
            })
        })
    });

    let rt = tokio::runtime::Builder::new_multi_thread().build().unwrap();
    g.bench_function("tokio_spawn_blocking", |b| {
        b.iter_custom(|iters| {
            timed_rounds(iters, done, || {
                for _ in 0..ITEMS {
                    drop(rt.spawn_blocking(move || done.hit()));
                }
            })
        })
    });
    g.finish();
    rt.shutdown_timeout(Duration::from_secs(10));
}

criterion_group!(benches, queue_cost, throughput);
criterion_main!(benches);
