//! `StaticDelayedWork` (the kernel's `DECLARE_DELAYED_WORK`) and
//! `Workqueue::enable_and_queue` (`enable_and_queue_work`).
//!
//! Every wait has a deadline (`with_deadline`): a hang fails the test.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cmwq::{system_wq, DelayedWork, StaticDelayedWork, Work, Workqueue, WqFlags};
use common::{counting_item, unique, with_deadline};

const HOUR: Duration = Duration::from_secs(3600);

static QUEUED_RUNS: AtomicUsize = AtomicUsize::new(0);
static QUEUED: StaticDelayedWork = StaticDelayedWork::new(|_: &DelayedWork| {
    QUEUED_RUNS.fetch_add(1, Ordering::SeqCst);
});

#[test]
fn a_static_delayed_item_is_queued_modified_and_flushed() {
    with_deadline("static delayed item", || {
        assert!(!QUEUED.is_pending());
        assert!(system_wq().queue_delayed(&QUEUED, HOUR));
        assert!(QUEUED.is_pending());
        // Pending: queueing again leaves it alone, mod_delayed moves it.
        assert!(!system_wq().queue_delayed(&QUEUED, Duration::ZERO));
        assert!(system_wq().mod_delayed(&QUEUED, 2 * HOUR));
        assert!(
            QUEUED.flush(),
            "flush fires the timer and waits for the run"
        );
        assert_eq!(QUEUED_RUNS.load(Ordering::SeqCst), 1);
        assert!(!QUEUED.is_pending());
        // Idle: mod_delayed arms it (false: nothing was modified); a zero delay runs it now.
        assert!(!system_wq().mod_delayed(&QUEUED, HOUR));
        assert!(system_wq().mod_delayed(&QUEUED, Duration::ZERO));
        QUEUED.work().flush();
        assert_eq!(QUEUED_RUNS.load(Ordering::SeqCst), 2);
    });
}

static CANCELLED_RUNS: AtomicUsize = AtomicUsize::new(0);
static CANCELLED: StaticDelayedWork = StaticDelayedWork::new(|_: &DelayedWork| {
    CANCELLED_RUNS.fetch_add(1, Ordering::SeqCst);
});

#[test]
fn a_static_delayed_item_is_cancelled_and_cancelled_sync() {
    with_deadline("cancel a static delayed item", || {
        let wq = Workqueue::new(&unique("static-dw"), WqFlags::UNBOUND, 0).unwrap();
        assert!(wq.queue_delayed(&CANCELLED, HOUR));
        assert!(CANCELLED.cancel());
        assert!(!CANCELLED.is_pending());
        assert!(!CANCELLED.cancel(), "idle: nothing to cancel");
        assert!(wq
            .queue_delayed_on(cmwq::online_cpus()[0], &CANCELLED, HOUR)
            .unwrap());
        assert!(CANCELLED.cancel_sync());
        assert!(!CANCELLED.flush(), "idle: nothing to flush");
        wq.destroy();
        assert_eq!(CANCELLED_RUNS.load(Ordering::SeqCst), 0);
    });
}

static SELF_ARMING_RUNS: AtomicUsize = AtomicUsize::new(0);
static SELF_ARMING: StaticDelayedWork = StaticDelayedWork::new(|me: &DelayedWork| {
    // Periodic work: re-arms itself far away; cancel_sync must stop it.
    SELF_ARMING_RUNS.fetch_add(1, Ordering::SeqCst);
    system_wq().queue_delayed(me, HOUR);
});

#[test]
fn a_static_delayed_item_that_rearms_itself_is_stopped_by_cancel_sync() {
    with_deadline("stop a periodic static item", || {
        assert!(system_wq().queue_delayed(&SELF_ARMING, Duration::ZERO));
        SELF_ARMING.work().flush();
        assert_eq!(SELF_ARMING_RUNS.load(Ordering::SeqCst), 1);
        assert!(SELF_ARMING.is_pending(), "re-armed by its own run");
        assert!(SELF_ARMING.cancel_sync());
        assert!(!SELF_ARMING.is_pending());
    });
}

#[test]
fn every_use_of_a_static_delayed_item_is_the_same_item() {
    static ONE: StaticDelayedWork = StaticDelayedWork::new(|_: &DelayedWork| {});
    assert_eq!(ONE.delayed_work(), &*ONE);
    assert_eq!(ONE.work(), ONE.delayed_work().work());
    let clone: DelayedWork = (*ONE).clone();
    assert_eq!(clone, *ONE.delayed_work());
    assert!(format!("{ONE:?}").starts_with("StaticDelayedWork"));
}

#[test]
fn enable_and_queue_on_an_item_disabled_once_queues_it() {
    let (item, runs) = counting_item();
    item.disable();
    assert!(!system_wq().queue(&item), "disabled: refused");
    assert!(system_wq().enable_and_queue(&item));
    with_deadline("flush", move || item.flush());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn enable_and_queue_on_an_item_disabled_twice_queues_it_only_at_depth_zero() {
    let wq = Workqueue::new(&unique("enable-queue"), WqFlags::UNBOUND, 0).unwrap();
    let (item, runs) = counting_item();
    item.disable();
    item.disable();
    assert!(!wq.enable_and_queue(&item), "depth 2 -> 1: still disabled");
    assert!(!item.is_pending());
    assert!(!wq.queue(&item), "still disabled");
    assert!(wq.enable_and_queue(&item), "depth 1 -> 0: queued");
    let it = item.clone();
    with_deadline("flush", move || it.flush());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Enabled now: an ordinary item again.
    assert!(wq.queue(&item));
    with_deadline("destroy", move || wq.destroy());
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[test]
fn enable_and_queue_returns_false_when_the_queue_refuses_and_leaves_the_item_enabled() {
    let wq = Workqueue::new(&unique("enable-refused"), WqFlags::UNBOUND, 0).unwrap();
    let leftover = wq.clone();
    with_deadline("destroy", move || wq.destroy());
    let (item, runs) = counting_item();
    item.disable();
    assert!(!leftover.enable_and_queue(&item), "destroyed queue refuses");
    assert!(!item.is_pending());
    // The enable itself happened: the item queues elsewhere.
    assert!(system_wq().queue(&item));
    with_deadline("flush", move || item.flush());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn enable_and_queue_on_an_item_that_is_not_disabled_panics_and_queues_nothing() {
    let item = Work::new(|_| {});
    let r = catch_unwind(AssertUnwindSafe(|| system_wq().enable_and_queue(&item)));
    assert!(r.is_err());
    assert!(!item.is_pending());
}
