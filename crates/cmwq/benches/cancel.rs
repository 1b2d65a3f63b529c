//! Criterion benchmark: cancelling one item among 100,000 queued ones, then queueing it again.
//!
//! * `cancel_100k/inactive`: the items wait on an ordered queue's inactive list behind an item
//!   that blocks.
//! * `cancel_100k/worklist`: the items wait on a CPU's worklist behind an item that blocks its
//!   pool's one running worker (unannounced-sleep detection and CPU-hog detection are off for
//!   this process, so no second worker starts).
//!
//! Each iteration cancels a different item from the middle third and queues it again (it goes
//! to the back), so the cost measured is that of finding and taking one item off a long list.
//! (`max_active` is at most 2048, so the worklist variant spreads the items over 49 queues
//! with that limit, all on one CPU.)
//! Run with `cargo bench -p cmwq --bench cancel`.

use std::hint::black_box;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use cmwq::{Work, Workqueue, WqFlags};
use criterion::{criterion_group, criterion_main, Criterion};

const QUEUED: usize = 100_000;

/// A gate the blocking item waits on until the benchmark ends.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }

    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

/// Queues the blocking item on `wqs[0]` and `QUEUED` items round-robin over `wqs`, then
/// measures cancel + re-queue of items from the middle third.
fn run(
    c: &mut Criterion,
    name: &str,
    wqs: &[Workqueue],
    queue: impl Fn(&Workqueue, &Work) -> bool,
) {
    let gate = Arc::new(Gate::default());
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let g = gate.clone();
    let blocker = Work::new(move |_| {
        let _ = started_tx.send(());
        g.wait();
    });
    assert!(queue(&wqs[0], &blocker));
    started_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the blocking item started");
    let items: Vec<Work> = (0..QUEUED).map(|_| Work::new(|_| {})).collect();
    for (i, w) in items.iter().enumerate() {
        assert!(queue(&wqs[i % wqs.len()], w));
    }
    let (lo, hi) = (QUEUED / 3, 2 * QUEUED / 3);
    let mut i = lo;
    c.bench_function(name, |b| {
        b.iter(|| {
            let w = &items[i];
            black_box(w.cancel());
            black_box(queue(&wqs[i % wqs.len()], w));
            i = if i + 1 == hi { lo } else { i + 1 };
        })
    });
    gate.open();
    for wq in wqs {
        wq.flush();
    }
}

fn cancel_100k(c: &mut Criterion) {
    cmwq::configure(cmwq::Config {
        detect_blocking: false,
        cpu_intensive_thresh: Duration::ZERO,
        ..Default::default()
    })
    .expect("configured before first use");
    let ordered = Workqueue::ordered("bench_cancel_inactive", WqFlags::empty()).unwrap();
    run(c, "cancel_100k/inactive", &[ordered], |wq, w| wq.queue(w));
    // max_active is at most 2048 per queue: 49 queues keep all 100,000 on the worklist.
    let cpu = cmwq::online_cpus()[0];
    let percpu: Vec<Workqueue> = (0..QUEUED.div_ceil(cmwq::WQ_MAX_ACTIVE))
        .map(|_| {
            Workqueue::new(
                "bench_cancel_worklist",
                WqFlags::empty(),
                cmwq::WQ_MAX_ACTIVE,
            )
            .unwrap()
        })
        .collect();
    run(c, "cancel_100k/worklist", &percpu, move |wq, w| {
        wq.queue_on(cpu, w).unwrap()
    });
}

criterion_group!(benches, cancel_100k);
criterion_main!(benches);
