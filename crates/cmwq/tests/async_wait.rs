//! Awaitable waits: `Work::flush_async`, `Work::cancel_sync_async`, their `DelayedWork` forms,
//! `Workqueue::flush_async` and `Workqueue::drain_async`, polled by a tiny hand-written
//! executor (a thread-parking waker); futures completed by another thread's progress and
//! futures dropped early.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use cmwq::{DelayedWork, Work, Workqueue, WqFlags};
use common::{
    thread_waker, unique, wait_for, with_deadline, Blocker, Counter, ThreadWaker, DEADLINE, SETTLE,
};

/// Polls once with a fresh counting waker.
fn poll_once<F: Future + Unpin>(fut: &mut F) -> (Poll<F::Output>, Arc<ThreadWaker>) {
    let (w, waker) = thread_waker();
    let p = Pin::new(fut).poll(&mut Context::from_waker(&waker));
    (p, w)
}

/// The executor: polls on this thread, parking between polls, until ready; panics after
/// [`DEADLINE`]. Returns the output and how many wake-ups it got.
#[track_caller]
fn block_on<F: Future + Unpin>(mut fut: F) -> (F::Output, usize) {
    let (w, waker) = thread_waker();
    let mut cx = Context::from_waker(&waker);
    let start = Instant::now();
    loop {
        if let Poll::Ready(out) = Pin::new(&mut fut).poll(&mut cx) {
            return (out, w.wakes.load(Ordering::SeqCst));
        }
        let left = DEADLINE.saturating_sub(start.elapsed());
        assert!(!left.is_zero(), "future not ready within {DEADLINE:?}");
        std::thread::park_timeout(left);
    }
}

/// Opens `gate` from another thread after a pause.
fn open_later(gate: &Arc<common::Latch>) -> std::thread::JoinHandle<()> {
    let gate = gate.clone();
    std::thread::spawn(move || {
        std::thread::sleep(SETTLE);
        gate.open();
    })
}

#[test]
fn work_flush_async_completes_from_a_worker() {
    let wq = Workqueue::new(&unique("aw-flush"), WqFlags::UNBOUND, 0).unwrap();
    let b = Blocker::new();
    assert!(wq.queue(&b.item));
    b.started.wait();
    let mut fut = b.item.flush_async();
    assert!(poll_once(&mut fut).0.is_pending());
    let opener = open_later(&b.gate);
    let (waited, wakes) = block_on(fut);
    assert!(waited);
    assert!(wakes >= 1, "woken by the worker, not by luck");
    opener.join().unwrap();

    // Idle: ready at once with false.
    let idle = Work::new(|_| {});
    assert!(!block_on(idle.flush_async()).0);
}

#[test]
fn work_flush_async_completed_by_cancel() {
    let wq = Workqueue::ordered(&unique("aw-flush-cancel"), WqFlags::empty()).unwrap();
    let b = Blocker::new();
    assert!(wq.queue(&b.item));
    b.started.wait();
    let (item, runs) = common::counting_item();
    assert!(wq.queue(&item));
    let mut fut = item.flush_async();
    let (p, w) = poll_once(&mut fut);
    assert!(p.is_pending());
    assert!(item.cancel(), "pending behind the blocker");
    wait_for("cancel wakes the flusher", || {
        w.wakes.load(Ordering::SeqCst) >= 1
    });
    assert!(block_on(fut).0);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[test]
fn work_flush_async_dropped_early_leaves_nothing_registered() {
    let wq = Workqueue::new(&unique("aw-flush-drop"), WqFlags::UNBOUND, 0).unwrap();
    let b = Blocker::new();
    assert!(wq.queue(&b.item));
    b.started.wait();
    let mut fut = b.item.flush_async();
    let (p, w) = poll_once(&mut fut);
    assert!(p.is_pending());
    assert_eq!(Arc::strong_count(&w), 2, "the completion holds the waker");
    drop(fut);
    assert_eq!(
        Arc::strong_count(&w),
        1,
        "dropping the future drops its waker"
    );
    b.gate.open();
    // The completion left on the instance's waiter list is completed by the run and freed;
    // the engine carries on: a new flush, a destroy, no invariant violation.
    let item = b.item.clone();
    let _ = with_deadline("flush", move || item.flush());
    assert_eq!(w.wakes.load(Ordering::SeqCst), 0, "never woken");
    with_deadline("destroy", move || wq.destroy());
    assert_eq!(cmwq::invariant_violations(), 0);
}

#[test]
fn cancel_sync_async_waits_for_the_running_instance() {
    let wq = Workqueue::new(&unique("aw-cancel"), WqFlags::UNBOUND, 0).unwrap();
    let b = Blocker::new();
    assert!(wq.queue(&b.item));
    b.started.wait();
    let mut fut = b.item.cancel_sync_async();
    assert!(poll_once(&mut fut).0.is_pending());
    assert!(!wq.queue(&b.item), "disabled while the cancel waits");
    let opener = open_later(&b.gate);
    let (was_pending, wakes) = block_on(fut);
    assert!(!was_pending, "it was running, not pending");
    assert!(wakes >= 1);
    assert!(!b.item.busy().running);
    opener.join().unwrap();
    // Enabled again afterwards.
    assert!(wq.queue(&b.item));
    let item = b.item.clone();
    with_deadline("flush", move || item.flush());

    // Pending: taken off the queue, ready at once with true.
    let ordered = Workqueue::ordered(&unique("aw-cancel-ord"), WqFlags::empty()).unwrap();
    let b2 = Blocker::new();
    assert!(ordered.queue(&b2.item));
    b2.started.wait();
    let (item, runs) = common::counting_item();
    assert!(ordered.queue(&item));
    assert!(block_on(item.cancel_sync_async()).0);
    drop(b2);
    with_deadline("flush", move || ordered.flush());
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[test]
fn cancel_sync_async_dropped_early_reenables() {
    let wq = Workqueue::new(&unique("aw-cancel-drop"), WqFlags::UNBOUND, 0).unwrap();
    let b = Blocker::new();
    assert!(wq.queue(&b.item));
    b.started.wait();
    let mut fut = b.item.cancel_sync_async();
    let (p, w) = poll_once(&mut fut);
    assert!(p.is_pending());
    drop(fut);
    assert_eq!(Arc::strong_count(&w), 1, "no waker left behind");
    assert!(wq.queue(&b.item), "enabled again by the drop");
    b.gate.open();
    let item = b.item.clone();
    with_deadline("flush", move || item.flush());
    with_deadline("destroy", move || wq.destroy());
    assert_eq!(cmwq::invariant_violations(), 0);
}

#[test]
fn delayed_flush_async_fires_the_timer() {
    let wq = Workqueue::new(&unique("aw-delayed"), WqFlags::UNBOUND, 0).unwrap();
    let runs = Arc::new(Counter::new());
    let dw = {
        let runs = runs.clone();
        DelayedWork::new(move |_| runs.inc())
    };
    assert!(wq.queue_delayed(&dw, Duration::from_secs(3600)));
    let (fired, _) = block_on(dw.flush_async());
    assert!(fired);
    assert_eq!(runs.get(), 1);
    assert!(!dw.is_pending());
    // Nothing armed or queued: ready with false.
    assert!(!block_on(dw.flush_async()).0);
}

#[test]
fn delayed_cancel_sync_async_stops_the_timer() {
    let wq = Workqueue::new(&unique("aw-delayed-cancel"), WqFlags::UNBOUND, 0).unwrap();
    let runs = Arc::new(Counter::new());
    let dw = {
        let runs = runs.clone();
        DelayedWork::new(move |_| runs.inc())
    };
    assert!(wq.queue_delayed(&dw, Duration::from_millis(200)));
    assert!(block_on(dw.cancel_sync_async()).0, "it was pending");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(runs.get(), 0, "a cancelled timer never fires");
    // Enabled again: it can be queued.
    assert!(wq.queue_delayed(&dw, Duration::ZERO));
    let dw2 = dw.clone();
    with_deadline("flush", move || dw2.flush());
    assert_eq!(runs.get(), 1);
}

#[test]
fn workqueue_flush_and_drain_async() {
    let wq = Workqueue::new(&unique("aw-wq"), WqFlags::UNBOUND, 0).unwrap();
    let b = Blocker::new();
    assert!(wq.queue(&b.item));
    b.started.wait();
    let mut fut = wq.flush_async();
    assert!(poll_once(&mut fut).0.is_pending());
    std::thread::sleep(SETTLE);
    assert!(poll_once(&mut fut).0.is_pending(), "the item still runs");
    let opener = open_later(&b.gate);
    let ((), wakes) = block_on(fut);
    assert!(wakes >= 1);
    assert!(!b.item.busy().running);
    opener.join().unwrap();

    // Drain: a self-requeueing chain of 5 runs ends before the future is ready.
    let left = Arc::new(AtomicUsize::new(5));
    let chain = {
        let (left, wq2) = (left.clone(), wq.clone());
        Work::new(move |w| {
            if left.fetch_sub(1, Ordering::SeqCst) > 1 {
                wq2.queue(w);
            }
        })
    };
    assert!(wq.queue(&chain));
    block_on(wq.drain_async());
    assert_eq!(left.load(Ordering::SeqCst), 0);
}

#[test]
fn workqueue_flush_async_dropped_early_is_harmless() {
    let wq = Workqueue::new(&unique("aw-wq-drop"), WqFlags::UNBOUND, 0).unwrap();
    let b = Blocker::new();
    assert!(wq.queue(&b.item));
    b.started.wait();
    let mut fut = wq.flush_async();
    let (p, w) = poll_once(&mut fut);
    assert!(p.is_pending());
    drop(fut);
    assert_eq!(
        Arc::strong_count(&w),
        1,
        "the waker is dropped with the future"
    );
    // The helper's flush is still waiting; it ends (and is freed) when the flush completes.
    b.gate.open();
    block_on(wq.flush_async());
    assert_eq!(w.wakes.load(Ordering::SeqCst), 0);
    with_deadline("destroy", move || wq.destroy());
    assert_eq!(cmwq::invariant_violations(), 0);
}
