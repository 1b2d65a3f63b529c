//! Semantic 4: `max_active` limits how many items of a workqueue run at once (per CPU for bound
//! workqueues, workqueue-wide for unbound ones); the others wait in queueing order.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cmwq::{online_cpus, Error, Work, Workqueue, WqFlags};
use common::{unique, wait_for, with_deadline, Latch, SETTLE};

/// A batch of items, each blocking on its own latch, recording start order and concurrency.
struct Batch {
    items: Vec<Work>,
    gates: Vec<Arc<Latch>>,
    order: Arc<Mutex<Vec<usize>>>,
    running: Arc<AtomicUsize>,
    max_running: Arc<AtomicUsize>,
    done: Arc<AtomicUsize>,
}

impl Batch {
    fn new(n: usize) -> Self {
        let order = Arc::new(Mutex::new(Vec::new()));
        let running = Arc::new(AtomicUsize::new(0));
        let max_running = Arc::new(AtomicUsize::new(0));
        let done = Arc::new(AtomicUsize::new(0));
        let gates: Vec<Arc<Latch>> = (0..n).map(|_| Arc::new(Latch::new())).collect();
        let items = (0..n)
            .map(|i| {
                let (gate, order, running, max_running, done) = (
                    gates[i].clone(),
                    order.clone(),
                    running.clone(),
                    max_running.clone(),
                    done.clone(),
                );
                Work::new(move |_| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    max_running.fetch_max(now, Ordering::SeqCst);
                    order.lock().unwrap().push(i);
                    // The pool would run the others concurrently while this one sleeps.
                    gate.wait_blocking();
                    running.fetch_sub(1, Ordering::SeqCst);
                    done.fetch_add(1, Ordering::SeqCst);
                })
            })
            .collect();
        Batch {
            items,
            gates,
            order,
            running,
            max_running,
            done,
        }
    }

    fn started(&self) -> usize {
        self.order.lock().unwrap().len()
    }

    fn order(&self) -> Vec<usize> {
        self.order.lock().unwrap().clone()
    }

    /// Waits until at least `n` items have started; panics with the actual progress otherwise.
    #[track_caller]
    fn wait_started(&self, n: usize, what: &str) {
        if !common::wait_until(common::DEADLINE, || self.started() >= n) {
            panic!(
                "timed out waiting for {what}: {} of the {n} expected items started (order {:?}, {} running)",
                self.started(),
                self.order(),
                self.running.load(Ordering::SeqCst)
            );
        }
    }

    fn release_all(&self) {
        for g in &self.gates {
            g.open();
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // Never leave workers blocked if an assertion failed.
        self.release_all();
    }
}

/// Queue `n` items with `queue_fn`, limit `limit`: exactly `limit` start, the rest wait, and they
/// start one by one in queueing order as earlier ones are released.
fn check_limit_and_order(n: usize, limit: usize, queue_fn: impl Fn(&Work) -> bool) {
    let b = Batch::new(n);
    for item in &b.items {
        assert!(queue_fn(item));
    }
    b.wait_started(limit, "first items to start");
    std::thread::sleep(SETTLE);
    assert_eq!(b.started(), limit, "more than max_active items started");
    assert_eq!(b.running.load(Ordering::SeqCst), limit);
    // The first `limit` to start are the first `limit` queued (in any order among themselves).
    let mut first = b.order();
    first.sort_unstable();
    assert_eq!(
        first,
        (0..limit).collect::<Vec<_>>(),
        "wrong items started first"
    );

    // Release in queueing order; each release lets exactly the next queued item start.
    for i in 0..n {
        b.gates[i].open();
        let expect_started = (i + 1 + limit).min(n);
        wait_for("next item to start", || b.done.load(Ordering::SeqCst) > i);
        b.wait_started(expect_started, "next item to start");
        assert!(b.max_running.load(Ordering::SeqCst) <= limit);
        if expect_started > limit {
            assert_eq!(
                b.order()[expect_started - 1],
                expect_started - 1,
                "inactive items must start in queueing order; got {:?}",
                b.order()
            );
        }
    }
    wait_for("all done", || b.done.load(Ordering::SeqCst) == n);
    assert!(
        b.max_running.load(Ordering::SeqCst) <= limit,
        "max concurrently running {} > max_active {limit}",
        b.max_running.load(Ordering::SeqCst)
    );
}

#[test]
fn bound_max_active_is_a_per_cpu_limit() {
    let cpu = online_cpus()[0];
    let wq = Workqueue::new(&unique("ma-b"), WqFlags::empty(), 2).unwrap();
    assert_eq!(wq.max_active(), 2);
    check_limit_and_order(6, 2, |w| wq.queue_on(cpu, w).unwrap());
}

#[test]
fn bound_max_active_one() {
    let cpu = *online_cpus().last().unwrap();
    let wq = Workqueue::new(&unique("ma-b1"), WqFlags::empty(), 1).unwrap();
    check_limit_and_order(5, 1, |w| wq.queue_on(cpu, w).unwrap());
}

#[test]
fn bound_limit_applies_to_each_cpu_separately() {
    let cpus = online_cpus();
    if cpus.len() < 2 {
        return;
    }
    let wq = Workqueue::new(&unique("ma-bc"), WqFlags::empty(), 1).unwrap();
    let b = Batch::new(2);
    assert!(wq.queue_on(cpus[0], &b.items[0]).unwrap());
    assert!(wq.queue_on(cpus[1], &b.items[1]).unwrap());
    b.wait_started(2, "one item running on each cpu");
    b.release_all();
    wait_for("done", || b.done.load(Ordering::SeqCst) == 2);
}

/// An unbound queue with `max_active` 2 and one pod over every CPU.
fn system_scope(name: &str) -> Workqueue {
    Workqueue::builder(&unique(name))
        .flags(WqFlags::UNBOUND)
        .max_active(2)
        .affinity_scope(cmwq::AffinityScope::System)
        .build()
        .unwrap()
}

#[test]
fn unbound_max_active_is_workqueue_wide() {
    // One pod (scope System): one pwq, so the limit is the queue's. With several pods it
    // applies per pod for now (DESIGN.md, "Affinity scopes and pods").
    let wq = system_scope("ma-u");
    check_limit_and_order(6, 2, |w| wq.queue(w));
}

#[test]
fn unbound_max_active_is_workqueue_wide_across_cpus() {
    let cpus = online_cpus();
    let wq = system_scope("ma-uc");
    let b = Batch::new(6);
    for (i, item) in b.items.iter().enumerate() {
        assert!(wq.queue_on(cpus[i % cpus.len()], item).unwrap());
    }
    b.wait_started(2, "two started");
    std::thread::sleep(SETTLE);
    assert_eq!(b.started(), 2, "unbound max_active must hold across CPUs");
    b.release_all();
    wait_for("all done", || b.done.load(Ordering::SeqCst) == 6);
    assert!(b.max_running.load(Ordering::SeqCst) <= 2);
}

fn raise_limit(wq: Workqueue, queue_fn: impl Fn(&Work) -> bool) {
    let b = Batch::new(5);
    for item in &b.items {
        assert!(queue_fn(item));
    }
    b.wait_started(1, "first item");
    std::thread::sleep(SETTLE);
    assert_eq!(b.started(), 1);
    wq.set_max_active(3).unwrap();
    assert_eq!(wq.max_active(), 3);
    b.wait_started(3, "raising max_active lets more items start");
    std::thread::sleep(SETTLE);
    assert_eq!(b.started(), 3, "raised to 3, more than 3 started");
    let mut first = b.order();
    first.sort_unstable();
    assert_eq!(
        first,
        vec![0, 1, 2],
        "activation must follow queueing order"
    );
    b.release_all();
    wait_for("all done", || b.done.load(Ordering::SeqCst) == 5);
    assert!(b.max_running.load(Ordering::SeqCst) <= 3);
}

#[test]
fn set_max_active_raises_limit_at_run_time_bound() {
    let cpu = online_cpus()[0];
    let wq = Workqueue::new(&unique("ma-rb"), WqFlags::empty(), 1).unwrap();
    let q = wq.clone();
    raise_limit(wq, move |w| q.queue_on(cpu, w).unwrap());
}

#[test]
fn set_max_active_raises_limit_at_run_time_unbound() {
    let wq = Workqueue::new(&unique("ma-ru"), WqFlags::UNBOUND, 1).unwrap();
    let q = wq.clone();
    raise_limit(wq, move |w| q.queue(w));
}

#[test]
fn max_active_bounds() {
    let wq = Workqueue::new(&unique("ma-0"), WqFlags::empty(), 0).unwrap();
    assert_eq!(wq.max_active(), 1024, "0 means the default 1024");
    let wq = Workqueue::new(&unique("ma-0u"), WqFlags::UNBOUND, 0).unwrap();
    assert_eq!(wq.max_active(), 1024);

    let wq = Workqueue::new(&unique("ma-2048"), WqFlags::empty(), 2048).unwrap();
    assert_eq!(wq.max_active(), 2048);
    let wq1 = Workqueue::new(&unique("ma-1"), WqFlags::UNBOUND, 1).unwrap();
    assert_eq!(wq1.max_active(), 1);

    for flags in [WqFlags::empty(), WqFlags::UNBOUND] {
        let r = Workqueue::new(&unique("ma-2049"), flags, 2049);
        assert!(
            matches!(r, Err(Error::InvalidMaxActive { .. })),
            "new(.., 2049) must fail"
        );
        let r = Workqueue::builder(&unique("ma-b2049"))
            .flags(flags)
            .max_active(2049)
            .build();
        assert!(matches!(r, Err(Error::InvalidMaxActive { .. })));
    }
    let r = Workqueue::new(&unique("ma-huge"), WqFlags::empty(), usize::MAX);
    assert!(matches!(r, Err(Error::InvalidMaxActive { .. })));

    let r = wq.set_max_active(2049);
    assert!(matches!(r, Err(Error::InvalidMaxActive { .. })), "{r:?}");
    assert_eq!(
        wq.max_active(),
        2048,
        "a rejected set_max_active changes nothing"
    );
    wq.set_max_active(7).unwrap();
    assert_eq!(wq.max_active(), 7);
    wq.set_max_active(2048).unwrap();
    assert_eq!(wq.max_active(), 2048);
    wq1.set_max_active(2048).unwrap();
    assert_eq!(wq1.max_active(), 2048);
    let r = wq1.set_max_active(2049);
    assert!(matches!(r, Err(Error::InvalidMaxActive { .. })), "{r:?}");

    let wq = Workqueue::builder(&unique("ma-bld"))
        .max_active(2048)
        .build()
        .unwrap();
    assert_eq!(wq.max_active(), 2048);
    let wq = Workqueue::builder(&unique("ma-bld0")).build().unwrap();
    assert_eq!(wq.max_active(), 1024, "builder default");
}

/// Items on an unbound queue with a big limit do run concurrently (the limit is the only
/// throttle): guards against an engine that serialises everything.
#[test]
fn unbound_items_run_concurrently_up_to_the_limit() {
    let wq = Workqueue::new(&unique("ma-par"), WqFlags::UNBOUND, 4).unwrap();
    let b = Batch::new(4);
    for item in &b.items {
        assert!(wq.queue(item));
    }
    b.wait_started(4, "all four running at once");
    assert_eq!(b.running.load(Ordering::SeqCst), 4);
    b.release_all();
    let w = wq.clone();
    with_deadline("flush", move || w.flush());
    assert_eq!(b.done.load(Ordering::SeqCst), 4);
}
