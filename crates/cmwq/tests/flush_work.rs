//! Semantic 6: `Work::flush` waits for the last queueing instance of an item; it returns `false`
//! when the item is idle, and from inside the item itself it returns `false` at once.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmwq::{Error, Work, Workqueue, WqFlags};
use common::{
    counting_item, current_tid, unique, wait_thread_blocked, with_deadline, Latch, DEADLINE, SETTLE,
};

/// An item whose n-th run blocks on `gates[n]` (runs past the end do not block).
struct Gated {
    item: Work,
    gates: Vec<Arc<Latch>>,
    started: Vec<Arc<Latch>>,
    runs: Arc<AtomicUsize>,
}

impl Gated {
    fn new(n: usize) -> Self {
        let gates: Vec<Arc<Latch>> = (0..n).map(|_| Arc::new(Latch::new())).collect();
        let started: Vec<Arc<Latch>> = (0..n).map(|_| Arc::new(Latch::new())).collect();
        let runs = Arc::new(AtomicUsize::new(0));
        let item = {
            let (gates, started, runs) = (gates.clone(), started.clone(), runs.clone());
            Work::new(move |_| {
                let k = runs.fetch_add(1, Ordering::SeqCst);
                if k < gates.len() {
                    started[k].open();
                    gates[k].wait_blocking();
                }
            })
        };
        Gated {
            item,
            gates,
            started,
            runs,
        }
    }
}

impl Drop for Gated {
    fn drop(&mut self) {
        for g in &self.gates {
            g.open();
        }
    }
}

/// Calls `flush` on a helper thread and waits until that thread is blocked inside it; the
/// receiver yields its result.
fn flush_in_thread(item: &Work) -> mpsc::Receiver<bool> {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let item = item.clone();
    std::thread::spawn(move || {
        tid_tx.send(current_tid()).unwrap();
        let _ = tx.send(item.flush());
    });
    let tid = tid_rx
        .recv_timeout(DEADLINE)
        .expect("flusher thread started");
    wait_thread_blocked("flusher to block inside Work::flush", tid);
    rx
}

fn assert_not_returned(rx: &mpsc::Receiver<bool>, what: &str) {
    match rx.recv_timeout(SETTLE) {
        Err(mpsc::RecvTimeoutError::Timeout) => {}
        other => panic!("{what}: flush returned early ({other:?})"),
    }
}

fn recv(rx: &mpsc::Receiver<bool>, what: &str) -> bool {
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|e| panic!("{what}: flush did not return within {DEADLINE:?} ({e:?})"))
}

fn flush_waits_for_running_instance(wq: Workqueue) {
    let g = Gated::new(1);
    assert!(wq.queue(&g.item));
    g.started[0].wait();
    let rx = flush_in_thread(&g.item);
    assert_not_returned(&rx, "item still blocked");
    g.gates[0].open();
    assert!(
        recv(&rx, "after release"),
        "flush of a busy item returns true"
    );
    assert_eq!(g.runs.load(Ordering::SeqCst), 1);
    let b = g.item.busy();
    assert!(!b.pending && !b.running, "idle after flush");
}

#[test]
fn flush_waits_for_running_instance_bound() {
    flush_waits_for_running_instance(Workqueue::new(&unique("fw-b"), WqFlags::empty(), 0).unwrap());
}

#[test]
fn flush_waits_for_running_instance_unbound() {
    flush_waits_for_running_instance(Workqueue::new(&unique("fw-u"), WqFlags::UNBOUND, 0).unwrap());
}

#[test]
fn flush_waits_for_running_instance_ordered() {
    flush_waits_for_running_instance(
        Workqueue::ordered(&unique("fw-o"), WqFlags::empty()).unwrap(),
    );
}

/// The item is pending behind a blocker: flush waits until it has run.
#[test]
fn flush_waits_for_pending_instance() {
    let wq = Workqueue::ordered(&unique("fw-p"), WqFlags::empty()).unwrap();
    let blocker = Gated::new(1);
    let (item, runs) = counting_item();
    assert!(wq.queue(&blocker.item));
    blocker.started[0].wait();
    assert!(wq.queue(&item));
    let rx = flush_in_thread(&item);
    assert_not_returned(&rx, "item pending behind blocker");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    blocker.gates[0].open();
    assert!(recv(&rx, "after release"));
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "flush returned before the item ran"
    );
}

/// Running and queued again: flush waits for the second (last queued) instance too.
#[test]
fn flush_waits_for_last_queued_instance() {
    let wq = Workqueue::new(&unique("fw-last"), WqFlags::UNBOUND, 0).unwrap();
    let g = Gated::new(2);
    assert!(wq.queue(&g.item));
    g.started[0].wait();
    assert!(wq.queue(&g.item), "requeue while running");
    let rx = flush_in_thread(&g.item);
    assert_not_returned(&rx, "first run blocked");
    g.gates[0].open();
    g.started[1].wait();
    assert_not_returned(&rx, "second (last queued) run blocked");
    g.gates[1].open();
    assert!(recv(&rx, "after both runs"));
    assert_eq!(g.runs.load(Ordering::SeqCst), 2);
}

#[test]
fn flush_of_idle_item_returns_false() {
    let wq = Workqueue::new(&unique("fw-idle"), WqFlags::empty(), 0).unwrap();
    let (item, runs) = counting_item();
    assert!(!item.flush(), "never queued");
    assert!(matches!(item.try_flush(), Ok(false)));
    assert!(wq.queue(&item));
    let i = item.clone();
    // May return false if the item already finished before flush looked at it.
    with_deadline("flush", move || i.flush());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!item.flush(), "already finished");
    assert!(matches!(item.try_flush(), Ok(false)));

    // Flush of an idle item returns promptly.
    let t = Instant::now();
    assert!(!item.flush());
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[test]
fn flush_from_inside_itself_returns_false_and_try_flush_errs() {
    for wq in [
        Workqueue::new(&unique("fw-self"), WqFlags::empty(), 0).unwrap(),
        Workqueue::new(&unique("fw-selfu"), WqFlags::UNBOUND, 0).unwrap(),
        Workqueue::ordered(&unique("fw-selfo"), WqFlags::empty()).unwrap(),
    ] {
        type Res = (bool, Duration, bool, bool);
        let out: Arc<Mutex<Option<Res>>> = Arc::new(Mutex::new(None));
        let item = {
            let out = out.clone();
            Work::new(move |w| {
                let t = Instant::now();
                let r = w.flush();
                let took = t.elapsed();
                let tr = w.try_flush();
                let is_self = cmwq::current_work().is_some_and(|c| Work::ptr_eq(&c, w));
                *out.lock().unwrap() =
                    Some((r, took, matches!(tr, Err(Error::SelfFlush)), is_self));
            })
        };
        assert!(wq.queue(&item));
        let i = item.clone();
        with_deadline("outside flush", move || i.flush());
        let (r, took, self_flush_err, is_self) = out
            .lock()
            .unwrap()
            .take()
            .expect("work function did not complete (self-flush hung or panicked?)");
        assert!(!r, "flush from inside itself returns false");
        assert!(took < Duration::from_secs(5), "self flush took {took:?}");
        assert!(
            self_flush_err,
            "try_flush from inside itself is Err(Error::SelfFlush)"
        );
        assert!(is_self, "current_work() is the running item");
    }
}

/// Many threads flushing the same busy item all return once it completes.
#[test]
fn many_concurrent_flushers_of_one_item() {
    let wq = Workqueue::new(&unique("fw-many"), WqFlags::UNBOUND, 0).unwrap();
    let g = Gated::new(1);
    assert!(wq.queue(&g.item));
    g.started[0].wait();
    let rxs: Vec<_> = (0..20).map(|_| flush_in_thread(&g.item)).collect();
    assert_not_returned(&rxs[0], "blocked");
    g.gates[0].open();
    for rx in &rxs {
        recv(rx, "one of many flushers");
    }
}
