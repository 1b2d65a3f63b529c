//! Semantic 2: an item queued while it runs runs again afterwards, and never on two workers at
//! once.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cmwq::{online_cpus, Work, Workqueue, WqFlags};
use common::{join_all, unique, wait_for, with_deadline, Latch, OverlapDetector, SETTLE};

/// An item that spins a little and records overlap.
fn spinning_item(det: Arc<OverlapDetector>, runs: Arc<AtomicUsize>) -> Work {
    Work::new(move |_| {
        let _g = det.enter();
        let mut x = 0u64;
        for i in 0..2_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
            std::hint::spin_loop();
        }
        std::hint::black_box(x);
        runs.fetch_add(1, Ordering::SeqCst);
    })
}

/// Threads hammer `queue_on` to every online CPU; every successful queue yields exactly one run
/// and runs never overlap.
fn hammer(wq: Workqueue) {
    const THREADS: usize = 4;
    const ITERS: usize = 3_000;
    let det = Arc::new(OverlapDetector::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let item = spinning_item(det.clone(), runs.clone());
    let cpus = online_cpus();
    assert!(!cpus.is_empty());

    let handles = (0..THREADS)
        .map(|t| {
            let (wq, item, cpus) = (wq.clone(), item.clone(), cpus.clone());
            std::thread::spawn(move || {
                let mut ok = 0usize;
                for i in 0..ITERS {
                    let cpu = cpus[(i + t) % cpus.len()];
                    let queued = if i % 5 == 4 {
                        wq.queue(&item)
                    } else {
                        wq.queue_on(cpu, &item).unwrap()
                    };
                    if queued {
                        ok += 1;
                    }
                }
                ok
            })
        })
        .collect::<Vec<_>>();
    let successes: usize = join_all("requeuers", handles).into_iter().sum();
    let i = item.clone();
    with_deadline("flush item", move || i.flush());
    let w = wq.clone();
    with_deadline("flush wq", move || w.flush());

    assert!(!det.overlapped(), "two workers ran the same item at once");
    assert!(successes >= 1);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        successes,
        "every successful queue must produce exactly one run"
    );
}

#[test]
fn no_overlap_bound() {
    hammer(Workqueue::new(&unique("re-b"), WqFlags::empty(), 0).unwrap());
}

#[test]
fn no_overlap_unbound() {
    hammer(Workqueue::new(&unique("re-u"), WqFlags::UNBOUND, 0).unwrap());
}

#[test]
fn no_overlap_bound_cpu_intensive() {
    hammer(Workqueue::new(&unique("re-ci"), WqFlags::CPU_INTENSIVE, 0).unwrap());
}

#[test]
fn no_overlap_system_wq() {
    hammer(cmwq::system_wq().clone());
}

/// The item blocks during its first run; queueing it meanwhile (to every CPU) succeeds once,
/// and the second run starts only after the first one ended.
fn queued_while_running_runs_again_afterwards(wq: Workqueue) {
    let det = Arc::new(OverlapDetector::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Latch::new());
    let _release = common::open_on_drop(&[&gate]);
    let started = Arc::new(Latch::new());
    let where_ran = Arc::new(Mutex::new(Vec::<Option<usize>>::new()));
    let item = {
        let (det, runs, gate, started, where_ran) = (
            det.clone(),
            runs.clone(),
            gate.clone(),
            started.clone(),
            where_ran.clone(),
        );
        Work::new(move |_| {
            let _g = det.enter();
            where_ran
                .lock()
                .unwrap()
                .push(cmwq::current_worker().and_then(|w| w.cpu));
            let n = runs.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                started.open();
                gate.wait_blocking();
            }
        })
    };
    let cpus = online_cpus();
    assert!(wq.queue_on(cpus[0], &item).unwrap());
    started.wait();
    let b = item.busy();
    assert!(b.running && !b.pending, "running, not pending");

    // Queue to the other CPUs (or the same one if there is only one).
    let target = *cpus.last().unwrap();
    assert!(
        wq.queue_on(target, &item).unwrap(),
        "queueing a running (not pending) item must succeed"
    );
    for &cpu in &cpus {
        assert!(!wq.queue_on(cpu, &item).unwrap(), "already pending");
    }
    let b = item.busy();
    assert!(b.running && b.pending, "running and pending");

    // The second instance must not start while the first one still runs.
    std::thread::sleep(SETTLE);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "second run started early");
    gate.open();
    wait_for("second run", || runs.load(Ordering::SeqCst) == 2);
    let i = item.clone();
    with_deadline("flush item", move || i.flush());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert!(!det.overlapped(), "overlapping runs");
    assert!(!item.busy().pending && !item.busy().running);
    let where_ran = where_ran.lock().unwrap().clone();
    if !wq.flags().contains(WqFlags::UNBOUND) {
        assert_eq!(
            where_ran[0],
            Some(cpus[0]),
            "first run on the requested CPU"
        );
        assert!(where_ran[1].is_some(), "second run on a per-CPU worker");
    }
}

#[test]
fn requeue_while_running_bound() {
    queued_while_running_runs_again_afterwards(
        Workqueue::new(&unique("re-rb"), WqFlags::empty(), 0).unwrap(),
    );
}

#[test]
fn requeue_while_running_unbound() {
    queued_while_running_runs_again_afterwards(
        Workqueue::new(&unique("re-ru"), WqFlags::UNBOUND, 0).unwrap(),
    );
}

/// An item that requeues itself from its own function keeps running one instance at a time.
#[test]
fn self_requeue_never_overlaps_with_outside_requeue() {
    const TARGET: usize = 2_000;
    let wq = Workqueue::new(&unique("re-self"), WqFlags::UNBOUND, 0).unwrap();
    let det = Arc::new(OverlapDetector::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let item = {
        let (det, runs, wq) = (det.clone(), runs.clone(), wq.clone());
        Work::new(move |w| {
            let _g = det.enter();
            if runs.fetch_add(1, Ordering::SeqCst) + 1 < TARGET {
                wq.queue(w);
            }
        })
    };
    assert!(wq.queue(&item));
    let handles = (0..2)
        .map(|_| {
            let (wq, item, runs) = (wq.clone(), item.clone(), runs.clone());
            std::thread::spawn(move || {
                let cpus = online_cpus();
                let mut i = 0;
                while runs.load(Ordering::SeqCst) < TARGET && i < 100_000 {
                    let _ = wq.queue_on(cpus[i % cpus.len()], &item).unwrap();
                    i += 1;
                }
            })
        })
        .collect::<Vec<_>>();
    join_all("outside requeuers", handles);
    wait_for("self requeue chain", || {
        runs.load(Ordering::SeqCst) >= TARGET
    });
    let i = item.clone();
    with_deadline("flush item", move || i.flush());
    assert!(!det.overlapped(), "overlapping runs");
    drop(item);
}
