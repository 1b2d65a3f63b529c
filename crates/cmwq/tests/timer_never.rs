//! Delays past the range of `Instant` (`Duration::MAX` is the usual way to say "never"): the
//! item is armed and pending until cancelled or flushed, never fires, and nothing panics with
//! `PENDING` held (which used to leave the item pending forever and every later cancel spinning).

mod common;

use std::sync::Arc;
use std::time::Duration;

use cmwq::{online_cpus, system_wq, DelayedWork, Workqueue, WqFlags};
use common::{unique, with_deadline, Counter, SETTLE};

/// Far past `Instant`'s range from now, but not `Duration::MAX`.
const FAR: Duration = Duration::from_secs(u64::MAX / 2);

fn counting() -> (DelayedWork, Arc<Counter>) {
    let runs = Arc::new(Counter::new());
    let r = runs.clone();
    (DelayedWork::new(move |_| r.inc()), runs)
}

/// `f` arms `dw` with a delay that never comes; then the item is pending, does not run, and
/// `cancel` takes it back.
fn never_fires_and_cancels(what: &'static str, f: fn(&Workqueue, &DelayedWork) -> bool) {
    with_deadline(what, move || {
        let wq = Workqueue::new(&unique("tnever"), WqFlags::empty(), 0).unwrap();
        let (dw, runs) = counting();
        assert!(f(&wq, &dw), "{what}: armed");
        assert!(dw.is_pending(), "{what}: pending");
        std::thread::sleep(SETTLE);
        assert_eq!(runs.get(), 0, "{what}: did not run");
        assert!(dw.cancel(), "{what}: cancel finds it armed");
        assert!(!dw.is_pending(), "{what}: not pending after cancel");
        assert_eq!(runs.get(), 0);
    });
}

#[test]
fn queue_delayed_with_duration_max() {
    never_fires_and_cancels("queue_delayed", |wq, dw| {
        wq.queue_delayed(dw, Duration::MAX)
    });
    never_fires_and_cancels("queue_delayed far", |wq, dw| wq.queue_delayed(dw, FAR));
}

#[test]
fn queue_delayed_on_with_duration_max() {
    never_fires_and_cancels("queue_delayed_on", |wq, dw| {
        wq.queue_delayed_on(online_cpus()[0], dw, Duration::MAX)
            .unwrap()
    });
}

#[test]
fn mod_delayed_with_duration_max() {
    // Idle item: mod_delayed arms it (returns false: it was idle).
    never_fires_and_cancels("mod_delayed idle", |wq, dw| {
        !wq.mod_delayed(dw, Duration::MAX)
    });
    // Pending item: re-armed to never.
    never_fires_and_cancels("mod_delayed pending", |wq, dw| {
        assert!(wq.queue_delayed(dw, Duration::from_secs(3600)));
        wq.mod_delayed(dw, Duration::MAX)
    });
    never_fires_and_cancels("mod_delayed_on", |wq, dw| {
        !wq.mod_delayed_on(online_cpus()[0], dw, Duration::MAX)
            .unwrap()
    });
    // From never back to a real delay.
    with_deadline("mod_delayed from never to soon", || {
        let (dw, runs) = counting();
        assert!(system_wq().queue_delayed(&dw, Duration::MAX));
        assert!(system_wq().mod_delayed(&dw, Duration::from_millis(1)));
        runs.wait_for(1);
    });
}

#[test]
fn cancel_sync_disable_and_flush_of_a_never_timer() {
    with_deadline("cancel_sync, disable, flush", || {
        let (dw, runs) = counting();
        assert!(system_wq().queue_delayed(&dw, Duration::MAX));
        assert!(dw.cancel_sync());
        assert!(!dw.is_pending());

        assert!(system_wq().queue_delayed(&dw, Duration::MAX));
        assert!(dw.work().disable());
        assert!(!dw.is_pending());
        assert!(!system_wq().queue_delayed(&dw, Duration::MAX), "disabled");
        assert!(dw.work().enable());

        // flush fires a pending timer at once, however far its deadline.
        assert!(system_wq().queue_delayed(&dw, Duration::MAX));
        assert!(dw.flush());
        assert_eq!(runs.get(), 1);
        assert!(!dw.is_pending());
    });
}

#[test]
fn destroy_disarms_a_never_timer() {
    with_deadline("destroy", || {
        let wq = Workqueue::new(&unique("tnever-d"), WqFlags::empty(), 0).unwrap();
        let (dw, runs) = counting();
        assert!(wq.queue_delayed(&dw, Duration::MAX));
        wq.destroy();
        assert!(!dw.is_pending());
        assert_eq!(runs.get(), 0);
    });
}

#[test]
fn the_timer_thread_sleeps_while_only_never_timers_are_armed() {
    let (dw, runs) = counting();
    assert!(system_wq().queue_delayed(&dw, Duration::MAX));
    // Earlier timers still fire on time.
    let (soon, soon_runs) = counting();
    assert!(system_wq().queue_delayed(&soon, Duration::from_millis(1)));
    soon_runs.wait_for(1);
    let tid = common::threads()
        .into_iter()
        .find(|(_, name)| name == "cmwq-timer")
        .map(|(tid, _)| tid)
        .expect("the timer thread runs");
    common::wait_thread_blocked("the timer thread to sleep", tid);
    assert_eq!(runs.get(), 0);
    assert!(dw.cancel());
}
