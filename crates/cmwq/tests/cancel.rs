//! Semantic 10: cancel, cancel_sync, disable / enable, disable_sync.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use cmwq::{online_cpus, Work, Workqueue, WqFlags};
use common::{
    call_while_running, counting_item, join_all, unique, wait_for, with_deadline, Blocker,
    OverlapDetector, DEADLINE, SETTLE,
};

fn flush_wq(wq: &Workqueue) {
    let w = wq.clone();
    with_deadline("wq flush", move || w.flush());
}

#[test]
fn cancel_removes_a_pending_item_which_never_runs() {
    let wq = Workqueue::ordered(&unique("ca-p"), WqFlags::empty()).unwrap();
    let blocker = Blocker::new();
    let (item, runs) = counting_item();
    assert!(!item.cancel(), "idle item: cancel returns false");
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    assert!(wq.queue(&item));
    assert!(item.is_pending());
    assert!(item.cancel(), "pending item: cancel returns true");
    assert!(!item.is_pending());
    assert!(!item.cancel(), "second cancel finds nothing");
    blocker.gate.open();
    flush_wq(&wq);
    assert_eq!(runs.load(Ordering::SeqCst), 0, "a cancelled item ran");
    assert!(!item.flush());
    // The item can be queued again afterwards.
    assert!(wq.queue(&item));
    flush_wq(&wq);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!item.cancel(), "finished item: cancel returns false");
}

/// Cancel of an inactive item (waiting for max_active) on bound and unbound queues.
#[test]
fn cancel_inactive_item() {
    let cpu = online_cpus()[0];
    for flags in [WqFlags::empty(), WqFlags::UNBOUND] {
        let wq = Workqueue::new(&unique("ca-ina"), flags, 1).unwrap();
        let blocker = Blocker::new();
        let (a, ra) = counting_item();
        let (b, rb) = counting_item();
        assert!(wq.queue_on(cpu, &blocker.item).unwrap());
        blocker.started.wait();
        assert!(wq.queue_on(cpu, &a).unwrap());
        assert!(wq.queue_on(cpu, &b).unwrap());
        assert!(a.cancel());
        blocker.gate.open();
        flush_wq(&wq);
        assert_eq!(ra.load(Ordering::SeqCst), 0);
        assert_eq!(
            rb.load(Ordering::SeqCst),
            1,
            "the item behind a cancelled one still runs"
        );
    }
}

/// cancel() does not wait for a running instance.
#[test]
fn cancel_of_running_item_returns_false_without_waiting() {
    let wq = Workqueue::new(&unique("ca-run"), WqFlags::UNBOUND, 0).unwrap();
    let blocker = Blocker::new();
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    assert!(!blocker.item.cancel(), "running, not pending");
    assert!(blocker.item.busy().running);
    blocker.gate.open();
    flush_wq(&wq);
}

fn self_requeueing(wq: &Workqueue, sleep: bool) -> (Work, Arc<AtomicUsize>, Arc<OverlapDetector>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let det = Arc::new(OverlapDetector::new());
    let item = {
        let (runs, det, wq) = (runs.clone(), det.clone(), wq.clone());
        Work::new(move |w| {
            let _g = det.enter();
            runs.fetch_add(1, Ordering::SeqCst);
            if sleep {
                cmwq::blocking(|| std::thread::sleep(Duration::from_micros(500)));
            }
            wq.queue(w);
        })
    };
    (item, runs, det)
}

fn cancel_sync_stops_self_requeue(wq: Workqueue, sleep: bool) {
    let (item, runs, det) = self_requeueing(&wq, sleep);
    for round in 0..5 {
        let base = runs.load(Ordering::SeqCst);
        assert!(wq.queue(&item) || round > 0);
        wait_for("self-requeueing item to run", || {
            runs.load(Ordering::SeqCst) > base + 5
        });
        let i = item.clone();
        with_deadline("cancel_sync", move || i.cancel_sync());
        let b = item.busy();
        assert!(!b.pending, "pending after cancel_sync");
        assert!(!b.running, "running after cancel_sync");
        let after = runs.load(Ordering::SeqCst);
        std::thread::sleep(SETTLE);
        assert_eq!(
            runs.load(Ordering::SeqCst),
            after,
            "ran after cancel_sync returned"
        );
        assert!(!item.is_pending());
        // It can be queued again.
        assert!(
            wq.queue(&item),
            "cancel_sync must not leave the item disabled"
        );
    }
    let i = item.clone();
    with_deadline("final cancel_sync", move || i.cancel_sync());
    assert!(!det.overlapped());
}

#[test]
fn cancel_sync_stops_a_self_requeueing_item_bound() {
    cancel_sync_stops_self_requeue(
        Workqueue::new(&unique("ca-sb"), WqFlags::empty(), 0).unwrap(),
        true,
    );
}

#[test]
fn cancel_sync_stops_a_self_requeueing_item_unbound() {
    cancel_sync_stops_self_requeue(
        Workqueue::new(&unique("ca-su"), WqFlags::UNBOUND, 0).unwrap(),
        false,
    );
}

#[test]
fn cancel_sync_stops_a_self_requeueing_item_ordered() {
    cancel_sync_stops_self_requeue(
        Workqueue::ordered(&unique("ca-so"), WqFlags::empty()).unwrap(),
        false,
    );
}

/// Calls `op` (named `name`) on `blocker`'s item while it runs on `wq`; checks that `op` returns
/// only once the gate opens, and returns what it returned.
#[track_caller]
fn sync_op_on_running(
    wq: &Workqueue,
    blocker: &Blocker,
    name: &str,
    op: fn(&Work) -> bool,
) -> bool {
    let rx = call_while_running(wq, blocker, op);
    assert!(
        matches!(
            rx.recv_timeout(SETTLE),
            Err(mpsc::RecvTimeoutError::Timeout)
        ),
        "{name} returned while the item was running"
    );
    blocker.gate.open();
    match rx.recv_timeout(DEADLINE) {
        Ok(r) => r,
        Err(e) => panic!("{name} returned: {e:?}"),
    }
}

#[test]
fn cancel_sync_waits_for_the_running_instance() {
    let wq = Workqueue::new(&unique("ca-w"), WqFlags::empty(), 0).unwrap();
    let blocker = Blocker::new();
    let was_pending = sync_op_on_running(&wq, &blocker, "cancel_sync", Work::cancel_sync);
    assert!(!was_pending, "it was running, not pending");
    let b = blocker.item.busy();
    assert!(!b.pending && !b.running);
    assert!(
        !blocker.item.cancel_sync(),
        "idle: cancel_sync returns false"
    );
}

#[test]
fn cancel_sync_of_pending_item_returns_true() {
    let wq = Workqueue::ordered(&unique("ca-sp"), WqFlags::empty()).unwrap();
    let blocker = Blocker::new();
    let (item, runs) = counting_item();
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    assert!(wq.queue(&item));
    let i = item.clone();
    assert!(with_deadline("cancel_sync", move || i.cancel_sync()));
    blocker.gate.open();
    flush_wq(&wq);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

/// Threads keep queueing the item while another keeps cancel_sync-ing it: bounded iterations,
/// no deadlock, no overlap, never more runs than successful queues.
fn race_cancel_sync_against_queue(wq: Workqueue) {
    const QUEUERS: usize = 3;
    const ITERS: usize = 3_000;
    const CANCELS: usize = 500;
    let det = Arc::new(OverlapDetector::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let item = {
        let (det, runs) = (det.clone(), runs.clone());
        Work::new(move |_| {
            let _g = det.enter();
            runs.fetch_add(1, Ordering::SeqCst);
            for _ in 0..100 {
                std::hint::spin_loop();
            }
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for t in 0..QUEUERS {
        let (wq, item, stop) = (wq.clone(), item.clone(), stop.clone());
        handles.push(std::thread::spawn(move || {
            let cpus = online_cpus();
            let mut ok = 0usize;
            for i in 0..ITERS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let q = if i % 2 == 0 {
                    wq.queue(&item)
                } else {
                    wq.queue_on(cpus[(i + t) % cpus.len()], &item).unwrap()
                };
                ok += usize::from(q);
            }
            ok
        }));
    }
    let canceller = {
        let item = item.clone();
        std::thread::spawn(move || {
            let mut cancelled = 0usize;
            for i in 0..CANCELS {
                let r = if i % 3 == 0 {
                    item.cancel()
                } else {
                    item.cancel_sync()
                };
                cancelled += usize::from(r);
            }
            cancelled
        })
    };
    let cancelled = common::join("canceller", canceller);
    stop.store(true, Ordering::Relaxed);
    let queued: usize = join_all("queuers", handles).into_iter().sum();
    let i = item.clone();
    with_deadline("flush", move || i.flush());
    flush_wq(&wq);
    assert!(!det.overlapped(), "overlapping runs");
    assert_eq!(
        runs.load(Ordering::SeqCst) + cancelled,
        queued,
        "runs must equal successful queues minus successful cancels"
    );
    let i = item.clone();
    with_deadline("cancel_sync at the end", move || i.cancel_sync());
    assert!(wq.queue(&item), "usable after the race");
    let i = item.clone();
    with_deadline("flush", move || i.flush());
}

#[test]
fn cancel_sync_racing_queue_bound() {
    race_cancel_sync_against_queue(Workqueue::new(&unique("ca-rb"), WqFlags::empty(), 0).unwrap());
}

#[test]
fn cancel_sync_racing_queue_unbound() {
    race_cancel_sync_against_queue(Workqueue::new(&unique("ca-ru"), WqFlags::UNBOUND, 0).unwrap());
}

#[test]
fn disable_nests() {
    let wq = Workqueue::new(&unique("ca-dis"), WqFlags::empty(), 0).unwrap();
    let (item, runs) = counting_item();
    assert!(
        !item.disable(),
        "idle: disable returns false (was not pending)"
    );
    assert!(!item.disable());
    assert!(!wq.queue(&item), "disabled: queue returns false");
    assert!(matches!(wq.try_queue(&item), Ok(false)));
    assert!(!wq.queue_on(online_cpus()[0], &item).unwrap());
    assert!(!cmwq::schedule_work(&item));
    assert!(!item.is_pending());
    assert!(!item.enable(), "depth 2 -> 1");
    assert!(!wq.queue(&item), "still disabled once");
    assert!(!item.is_pending());
    assert!(item.enable(), "depth 1 -> 0");
    assert!(wq.queue(&item), "enabled again");
    let i = item.clone();
    with_deadline("flush", move || i.flush());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn disable_cancels_a_pending_item() {
    let wq = Workqueue::ordered(&unique("ca-dp"), WqFlags::empty()).unwrap();
    let blocker = Blocker::new();
    let (item, runs) = counting_item();
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    assert!(wq.queue(&item));
    assert!(item.disable(), "was pending");
    assert!(!item.is_pending());
    blocker.gate.open();
    flush_wq(&wq);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(item.enable());
}

#[test]
fn enable_of_an_item_that_is_not_disabled_panics() {
    let (item, _) = counting_item();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| item.enable()));
    assert!(r.is_err(), "enable() without disable() must panic");
}

#[test]
fn disable_sync_waits_for_the_running_instance() {
    let wq = Workqueue::new(&unique("ca-ds"), WqFlags::UNBOUND, 0).unwrap();
    let blocker = Blocker::new();
    let was_pending = sync_op_on_running(&wq, &blocker, "disable_sync", Work::disable_sync);
    assert!(!was_pending);
    let b = blocker.item.busy();
    assert!(!b.pending && !b.running, "idle after disable_sync");
    assert!(!wq.queue(&blocker.item), "disabled");
    assert!(blocker.item.enable());
    assert!(wq.queue(&blocker.item), "enabled again");
    flush_wq(&wq);
}

/// While cancel_sync waits for a running instance, queue attempts fail.
#[test]
fn queue_fails_while_cancel_sync_waits() {
    let wq = Workqueue::new(&unique("ca-qw"), WqFlags::UNBOUND, 0).unwrap();
    let blocker = Blocker::new();
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    let (tid_tx, tid_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    {
        let item = blocker.item.clone();
        std::thread::spawn(move || {
            tid_tx.send(common::current_tid()).unwrap();
            let _ = tx.send(item.cancel_sync());
        });
    }
    let tid = tid_rx.recv_timeout(DEADLINE).expect("thread started");
    common::wait_thread_blocked("cancel_sync to block on the running item", tid);
    let queued = wq.queue(&blocker.item);
    let pending = blocker.item.is_pending();
    blocker.gate.open();
    let was_pending = rx.recv_timeout(DEADLINE).expect("cancel_sync returned");
    assert!(!queued, "queue must fail while cancel_sync waits");
    assert!(!pending, "a refused queue must not leave the item pending");
    assert!(!was_pending);
    let b = blocker.item.busy();
    assert!(!b.pending && !b.running, "idle after cancel_sync");
    assert!(
        wq.queue(&blocker.item),
        "queueable after cancel_sync returned"
    );
    flush_wq(&wq);
}
