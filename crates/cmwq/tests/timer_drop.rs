//! No user `Drop` runs under a timer lock: a `DelayedWork` reference that the timer service
//! gives up (a cancelled arming, a fired entry) is dropped with none of its locks held, so the
//! drop may destroy a workqueue (which disarms that queue's timers) or use the timer service.
//!
//! Each test in its own process would be cleaner, but every wait here has a deadline, so a
//! wedged timer service fails the test instead of hanging.

mod common;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use cmwq::{system_wq, DelayedWork, Workqueue, WqFlags};
use common::{unique, with_deadline, Counter, DEADLINE};

/// Sends the name of the thread that drops it.
struct DropReport(mpsc::Sender<String>);

impl Drop for DropReport {
    fn drop(&mut self) {
        let name = std::thread::current().name().unwrap_or("").to_string();
        let _ = self.0.send(name);
    }
}

/// A delayed item whose closure owns the last handle of a fresh workqueue, and the channel
/// that reports when the closure (and so the queue) has been dropped.
fn item_owning_a_queue() -> (DelayedWork, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let wq = Workqueue::new(&unique("tdrop"), WqFlags::empty(), 0).unwrap();
    let report = DropReport(tx);
    let dw = DelayedWork::new(move |_| {
        let _ = (&wq, &report);
    });
    (dw, rx)
}

/// Checks that the timer service still arms and fires.
fn timers_still_work() {
    with_deadline("a delayed item fires", || {
        let runs = Arc::new(Counter::new());
        let r = runs.clone();
        let dw = DelayedWork::new(move |_| r.inc());
        assert!(system_wq().queue_delayed(&dw, Duration::from_millis(1)));
        common::wait_for("the delayed item to run", || runs.get() == 1);
    });
}

#[test]
fn the_last_reference_of_a_rearmed_item_among_many_cancelled_timers() {
    // The item is armed for an hour, re-armed to fire at once, runs, and its handle is
    // dropped: what is left of it is whatever the timer service still holds for the first
    // arming. Its closure owns a queue's last handle, and destroying that queue disarms the
    // queue's timers (timer locks). Thousands of armings are then made and cancelled: the
    // timer service must give up every reference with none of its locks held (formerly heap
    // compaction dropped the old arming's entry under the heap lock and deadlocked).
    let rx = with_deadline("arm, re-arm and cancel", || {
        let (x, rx) = item_owning_a_queue();
        assert!(system_wq().queue_delayed(&x, Duration::from_secs(3600)));
        assert!(system_wq().mod_delayed(&x, Duration::from_millis(1)));
        common::wait_for("the re-armed item to run", || !x.is_pending());
        x.work().flush();
        drop(x);
        for _ in 0..6000 {
            let dw = DelayedWork::new(|_| {});
            assert!(system_wq().queue_delayed(&dw, Duration::from_secs(3600)));
            assert!(dw.cancel());
        }
        rx
    });
    rx.recv_timeout(DEADLINE)
        .expect("the item (and the queue it owned) was dropped");
    timers_still_work();
}

#[test]
fn a_drop_run_by_the_timer_thread_may_use_the_timer_service() {
    // Formerly the timer thread dropped a stale entry (the last reference of a cancelled item)
    // while holding the lock that `TestClock::advance` takes: a drop that advances the test
    // clock deadlocked the timer service. Now cancel gives the reference up at once, with no
    // timer lock held, on whichever thread drops it last.
    struct UsesTimers(mpsc::Sender<()>);
    impl Drop for UsesTimers {
        fn drop(&mut self) {
            let clock = cmwq::time::pause();
            clock.advance(Duration::ZERO);
            drop(clock);
            let _ = self.0.send(());
        }
    }
    let (tx, rx) = mpsc::channel();
    with_deadline("arm and cancel", move || {
        let guard = UsesTimers(tx);
        let x = DelayedWork::new(move |_| {
            let _ = &guard;
        });
        assert!(system_wq().queue_delayed(&x, Duration::from_millis(20)));
        assert!(x.cancel());
        drop(x);
    });
    // Past the old deadline, so that a leftover entry would have come up on the timer thread.
    std::thread::sleep(Duration::from_millis(50));
    rx.recv_timeout(DEADLINE)
        .expect("the item was dropped and its drop could use the timer service");
    timers_still_work();
}

#[test]
fn a_fired_fire_and_forget_item_owning_the_last_handle_of_a_queue() {
    // The item's references are the timer's (until it has queued the item) and the pool's
    // (until the run ends): whichever goes last destroys the queue its closure owns, and
    // neither may hold a timer lock then. (The queue is not the one the item runs on: dropping
    // the last handle of its own queue from the item's drop on a worker is the worker's case.)
    for _ in 0..20 {
        let (dw, rx) = item_owning_a_queue();
        assert!(system_wq().queue_delayed(&dw, Duration::from_millis(2)));
        drop(dw);
        rx.recv_timeout(DEADLINE)
            .expect("the item (and the queue it owned) was dropped after its run");
    }
    timers_still_work();
}
