//! Delayed work on the paused test clock (`cmwq::time::pause`): pending state, deadlines,
//! re-queueing, `mod_delayed`, cancel / cancel_sync / flush, the recorded workqueue and CPU,
//! and destroying a workqueue with armed items.
//!
//! Every test pauses the process-wide clock, so the tests of this file run one after another.
//! Negative checks ("it did not run") first wait for the item with `Work::flush` (which does not
//! fire a timer: it only waits for a queued or running instance) and then watch a short
//! settle window.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use cmwq::time::{pause, TestClock};
use cmwq::{
    current_worker, online_cpus, schedule_delayed_work, schedule_delayed_work_on, system_wq,
    DelayedWork, DelayedWorkField, DelayedWorkItem, Error, Work, Workqueue, WqFlags,
};
use common::{
    current_tid, join, open_on_drop, unique, wait_for, wait_thread_blocked, with_deadline, Blocker,
    Counter, Latch, SETTLE,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A delayed item that counts its runs.
fn counting() -> (DelayedWork, Arc<Counter>) {
    let runs = Arc::new(Counter::new());
    let r = runs.clone();
    (DelayedWork::new(move |_| r.inc()), runs)
}

/// Asserts that `dw` has run exactly `expected` times and does not run again within a settle
/// window (after waiting for any queued or running instance).
#[track_caller]
fn assert_runs_stay(dw: &DelayedWork, runs: &Counter, expected: usize, what: &str) {
    let w = dw.work().clone();
    with_deadline("work flush", move || w.flush());
    std::thread::sleep(SETTLE);
    assert_eq!(runs.get(), expected, "{what}");
}

fn flush_wq(wq: &Workqueue) {
    let w = wq.clone();
    with_deadline("workqueue flush", move || w.flush());
}

fn flush_dw(dw: &DelayedWork) -> bool {
    let dw = dw.clone();
    with_deadline("delayed flush", move || dw.flush())
}

fn cancel_sync(dw: &DelayedWork) -> bool {
    let dw = dw.clone();
    with_deadline("cancel_sync", move || dw.cancel_sync())
}

/// An ordered workqueue plugged by the returned blocker (until its gate opens or it is dropped).
fn plugged_ordered() -> (Workqueue, Blocker) {
    let wq = Workqueue::ordered(&unique("dly-ord"), WqFlags::empty()).unwrap();
    let plug = Blocker::new();
    assert!(wq.queue(&plug.item));
    plug.started.wait();
    (wq, plug)
}

/// Waits until the timer thread sleeps, so that the next `advance` alone fires due timers.
fn wait_timer_thread_asleep() {
    let tid = common::threads()
        .into_iter()
        .find(|(_, name)| name == "cmwq-timer")
        .map(|(tid, _)| tid);
    if let Some(tid) = tid {
        wait_thread_blocked("the timer thread to sleep", tid);
    }
}

/// Advances `clock` by four hours, one hour at a time.
fn advance_far(clock: &TestClock) {
    for _ in 0..4 {
        clock.advance(Duration::from_secs(3600));
    }
}

// ===== semantic 1: pending until it starts, never early, zero delay =====

#[test]
fn pending_from_the_call_until_it_starts_and_never_before_its_delay() {
    let clock = pause();
    let runs = Arc::new(Counter::new());
    let pending_inside = Arc::new(Mutex::new(None));
    let dw = {
        let (runs, pending_inside) = (runs.clone(), pending_inside.clone());
        DelayedWork::new(move |dw| {
            *pending_inside.lock().unwrap() = Some(dw.is_pending());
            runs.inc();
        })
    };
    assert!(!dw.is_pending());
    assert!(system_wq().queue_delayed(&dw, ms(50)));
    assert!(dw.is_pending(), "pending right after queue_delayed");

    clock.advance(ms(49));
    assert!(dw.is_pending(), "still pending 1 ms before the deadline");
    assert_runs_stay(&dw, &runs, 0, "ran before its delay");
    assert!(dw.is_pending(), "still pending 1 ms before the deadline");

    clock.advance(ms(1));
    runs.wait_for(1);
    assert_eq!(
        *pending_inside.lock().unwrap(),
        Some(false),
        "a running delayed item is no longer pending"
    );
    wait_for("item idle after its run", || !dw.is_pending());
    advance_far(&clock);
    assert_runs_stay(&dw, &runs, 1, "one arming, one run");
}

#[test]
fn the_delay_counts_from_the_queueing_call() {
    let clock = pause();
    clock.advance(ms(500));
    let (dw, runs) = counting();
    assert!(system_wq().queue_delayed(&dw, ms(20)));
    clock.advance(ms(19));
    assert_runs_stay(&dw, &runs, 0, "ran 1 ms early");
    clock.advance(ms(1));
    runs.wait_for(1);
}

#[test]
fn zero_delay_queues_at_once_without_a_timer() {
    let _clock = pause();
    let (dw, runs) = counting();
    // The clock is paused and never advanced: only an immediate queueing can run these.
    assert!(system_wq().queue_delayed(&dw, Duration::ZERO));
    runs.wait_for(1);
    wait_for("idle after the zero-delay run", || !dw.is_pending());

    assert!(!system_wq().mod_delayed(&dw, Duration::ZERO), "idle: false");
    runs.wait_for(2);

    let cpu = online_cpus()[0];
    assert_eq!(
        system_wq().queue_delayed_on(cpu, &dw, Duration::ZERO),
        Ok(true)
    );
    runs.wait_for(3);

    // The work item itself reports it was queued (flush waits for it, no timer involved).
    wait_for("idle", || !dw.is_pending());
    assert!(system_wq().queue_delayed(&dw, Duration::ZERO));
    flush_dw(&dw);
    assert_eq!(runs.get(), 4);
}

#[test]
fn embedded_delayed_item_runs_after_its_delay() {
    struct Tick {
        field: DelayedWorkField,
        runs: AtomicUsize,
    }
    impl DelayedWorkItem for Tick {
        fn delayed_work_field(&self) -> &DelayedWorkField {
            &self.field
        }
        fn run(&self, dw: &DelayedWork) {
            assert!(dw.work().downcast_arc::<Tick>().is_some());
            self.runs.fetch_add(1, Ordering::SeqCst);
        }
    }

    let clock = pause();
    let tick = Arc::new(Tick {
        field: DelayedWorkField::new(),
        runs: AtomicUsize::new(0),
    });
    let dw = DelayedWork::from_arc(tick.clone());
    assert_eq!(dw, DelayedWork::from_arc(tick.clone()), "same identity");
    assert!(system_wq().queue_delayed(&dw, ms(10)));
    assert!(DelayedWork::from_arc(tick.clone()).is_pending());
    clock.advance(ms(9));
    let w = dw.work().clone();
    with_deadline("work flush", move || w.flush());
    assert_eq!(tick.runs.load(Ordering::SeqCst), 0);
    clock.advance(ms(1));
    wait_for("embedded item ran", || {
        tick.runs.load(Ordering::SeqCst) == 1
    });
    let back = dw.work().downcast_arc::<Tick>().expect("downcast");
    assert!(Arc::ptr_eq(&back, &tick));
}

#[test]
fn advance_fires_due_timers_in_deadline_order() {
    let clock = pause();
    let wq = Workqueue::ordered(&unique("dly-order"), WqFlags::empty()).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let delays = [30u64, 10, 25, 5, 20];
    let items: Vec<DelayedWork> = delays
        .iter()
        .map(|&d| {
            let order = order.clone();
            DelayedWork::new(move |_| order.lock().unwrap().push(d))
        })
        .collect();
    for (dw, &d) in items.iter().zip(&delays) {
        assert!(wq.queue_delayed(dw, ms(d)));
    }
    // (Racing with the timer thread is `advance_queues_due_items_before_returning`'s job.)
    wait_timer_thread_asleep();
    clock.advance(ms(30));
    wait_for("all five ran", || order.lock().unwrap().len() == 5);
    assert_eq!(*order.lock().unwrap(), vec![5, 10, 20, 25, 30]);
}

/// `advance` queues every due item before it returns: an item queued on an ordered queue
/// right after `advance` runs after the delayed one. (Arming wakes the timer thread, which
/// may be looking at the heap while `advance` runs.)
#[test]
fn advance_queues_due_items_before_returning() {
    const N: usize = 4000;
    let clock = pause();
    let wq = Workqueue::ordered(&unique("dly-adv"), WqFlags::empty()).unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let dw = {
        let order = order.clone();
        DelayedWork::new(move |_| order.lock().unwrap().push("delayed"))
    };
    let marker = {
        let order = order.clone();
        Work::new(move |_| order.lock().unwrap().push("marker"))
    };
    let mut late = Vec::new();
    for i in 0..N {
        assert!(wq.queue_delayed(&dw, ms(1)));
        // Give the woken timer thread a chance to be mid-way through its heap check.
        for _ in 0..(i % 64) * 16 {
            std::hint::spin_loop();
        }
        clock.advance(ms(1));
        assert!(wq.queue(&marker));
        wait_for("both ran", || order.lock().unwrap().len() == 2);
        let got = std::mem::take(&mut *order.lock().unwrap());
        if got != ["delayed", "marker"] {
            late.push(i);
        }
        wait_for("both idle", || !dw.is_pending() && !marker.is_pending());
    }
    assert!(
        late.is_empty(),
        "the due item was not yet queued when advance returned in {} of {N} iterations \
         (first: {:?})",
        late.len(),
        &late[..late.len().min(5)]
    );
}

// ===== semantic 2: re-queueing a pending item, mod_delayed =====

#[test]
fn queueing_a_pending_item_returns_false_and_keeps_its_deadline() {
    let clock = pause();
    let (dw, runs) = counting();
    assert!(system_wq().queue_delayed(&dw, ms(30)));
    assert!(!system_wq().queue_delayed(&dw, ms(100)), "later deadline");
    assert!(!system_wq().queue_delayed(&dw, ms(1)), "earlier deadline");
    assert!(
        !system_wq().queue_delayed(&dw, Duration::ZERO),
        "zero delay"
    );
    assert_eq!(
        system_wq().queue_delayed_on(online_cpus()[0], &dw, ms(1)),
        Ok(false)
    );
    assert!(!schedule_delayed_work(&dw, ms(1)));
    assert!(!system_wq().queue(dw.work()), "plain queue of the work");

    clock.advance(ms(1));
    assert_runs_stay(&dw, &runs, 0, "an earlier deadline replaced the timer");
    clock.advance(ms(28));
    assert_runs_stay(&dw, &runs, 0, "ran before the original deadline");
    assert!(dw.is_pending());
    clock.advance(ms(1));
    runs.wait_for(1);
    // A later deadline (100 ms) must not fire a second time.
    clock.advance(ms(100));
    assert_runs_stay(&dw, &runs, 1, "a second instance fired");
}

#[test]
fn mod_delayed_rearms_an_armed_timer() {
    let clock = pause();
    let (dw, runs) = counting();

    // Idle: mod_delayed arms it and says it was not pending.
    assert!(!system_wq().mod_delayed(&dw, ms(30)));
    assert!(dw.is_pending());
    // Pending: re-armed later.
    assert!(system_wq().mod_delayed(&dw, ms(100)));
    assert!(dw.is_pending());
    clock.advance(ms(30));
    assert_runs_stay(&dw, &runs, 0, "the old deadline fired after mod_delayed");
    assert!(dw.is_pending());
    clock.advance(ms(69));
    assert_runs_stay(&dw, &runs, 0, "ran before the new deadline");
    clock.advance(ms(1));
    runs.wait_for(1);
    wait_for("idle", || !dw.is_pending());

    // Pending: re-armed earlier.
    assert!(system_wq().queue_delayed(&dw, ms(100)));
    assert!(system_wq().mod_delayed(&dw, ms(10)));
    clock.advance(ms(9));
    assert_runs_stay(&dw, &runs, 1, "ran before the new, earlier deadline");
    clock.advance(ms(1));
    runs.wait_for(2);
    // The stale 100 ms deadline fires nothing.
    clock.advance(ms(200));
    assert_runs_stay(&dw, &runs, 2, "the replaced deadline fired too");

    // Many re-arms (debouncing) still give one run.
    assert!(!system_wq().mod_delayed(&dw, ms(10)));
    for _ in 0..100 {
        clock.advance(ms(5));
        assert!(system_wq().mod_delayed(&dw, ms(10)));
    }
    assert_runs_stay(&dw, &runs, 2, "ran while being debounced");
    clock.advance(ms(10));
    runs.wait_for(3);
    assert_runs_stay(&dw, &runs, 3, "debounced item ran more than once");
}

#[test]
fn mod_delayed_takes_a_queued_item_off_its_queue_and_arms_it() {
    let clock = pause();
    let (wq, plug) = plugged_ordered();
    let (dw, runs) = counting();

    // Queued behind the plug (zero delay: on the queue at once).
    assert!(wq.queue_delayed(&dw, Duration::ZERO));
    assert!(dw.is_pending());
    assert!(wq.mod_delayed(&dw, ms(50)), "it was pending (queued)");
    assert!(dw.is_pending());
    plug.gate.open();
    flush_wq(&wq);
    assert_runs_stay(
        &dw,
        &runs,
        0,
        "mod_delayed left the queued instance on the queue",
    );
    assert!(dw.is_pending(), "re-armed");
    clock.advance(ms(49));
    assert_runs_stay(&dw, &runs, 0, "ran before the new delay");
    clock.advance(ms(1));
    runs.wait_for(1);
    assert_runs_stay(&dw, &runs, 1, "ran twice");
}

#[test]
fn mod_delayed_takes_a_fired_item_off_its_queue() {
    let clock = pause();
    let (wq, plug) = plugged_ordered();
    let (dw, runs) = counting();

    // Armed, then fired onto the queue behind the plug.
    assert!(wq.queue_delayed(&dw, ms(10)));
    clock.advance(ms(10));
    assert!(wq.mod_delayed(&dw, ms(10)));
    plug.gate.open();
    flush_wq(&wq);
    assert_runs_stay(&dw, &runs, 0, "the fired instance still ran");
    clock.advance(ms(10));
    runs.wait_for(1);
    assert_runs_stay(&dw, &runs, 1, "ran twice");
}

// ===== semantic 3: cancel, cancel_sync, flush =====

#[test]
fn cancel_stops_an_armed_timer() {
    let clock = pause();
    let (dw, runs) = counting();
    assert!(!dw.cancel(), "idle: nothing to cancel");
    assert!(system_wq().queue_delayed(&dw, ms(10)));
    assert!(dw.cancel(), "it was pending");
    assert!(!dw.is_pending());
    assert!(!dw.cancel(), "second cancel finds nothing");
    clock.advance(ms(10));
    advance_far(&clock);
    assert_runs_stay(&dw, &runs, 0, "a cancelled timer fired");

    // The item is fully idle again: it can be armed and runs once.
    assert!(system_wq().queue_delayed(&dw, ms(10)));
    clock.advance(ms(10));
    runs.wait_for(1);
    assert_runs_stay(&dw, &runs, 1, "ran twice");
}

#[test]
fn cancel_removes_a_queued_delayed_item() {
    let clock = pause();
    let (wq, plug) = plugged_ordered();
    let (dw, runs) = counting();
    assert!(wq.queue_delayed(&dw, ms(10)));
    clock.advance(ms(10)); // fired: now queued behind the plug
    assert!(dw.is_pending());
    assert!(dw.cancel(), "it was pending (queued)");
    assert!(!dw.is_pending());
    plug.gate.open();
    flush_wq(&wq);
    advance_far(&clock);
    assert_runs_stay(&dw, &runs, 0, "a cancelled queued item ran");
}

#[test]
fn cancel_sync_stops_an_armed_timer() {
    let clock = pause();
    let (dw, runs) = counting();
    assert!(!cancel_sync(&dw), "idle");
    assert!(system_wq().queue_delayed(&dw, ms(10)));
    assert!(cancel_sync(&dw), "it was pending");
    assert!(!dw.is_pending());
    advance_far(&clock);
    assert_runs_stay(&dw, &runs, 0, "a cancelled timer fired");
    // Enabled again afterwards.
    assert!(system_wq().queue_delayed(&dw, ms(10)));
    clock.advance(ms(10));
    runs.wait_for(1);
}

#[test]
fn cancel_sync_waits_for_a_running_instance() {
    let clock = pause();
    let started = Arc::new(Latch::new());
    let gate = Arc::new(Latch::new());
    let _open = open_on_drop(&[&gate]);
    let finished = Arc::new(AtomicBool::new(false));
    let dw = {
        let (started, gate, finished) = (started.clone(), gate.clone(), finished.clone());
        DelayedWork::new(move |_| {
            started.open();
            gate.wait_blocking();
            finished.store(true, Ordering::SeqCst);
        })
    };
    assert!(system_wq().queue_delayed(&dw, ms(10)));
    clock.advance(ms(10));
    started.wait();

    let (tx, rx) = mpsc::channel();
    let helper = {
        let (dw, finished) = (dw.clone(), finished.clone());
        std::thread::spawn(move || {
            tx.send(current_tid()).unwrap();
            let was_pending = dw.cancel_sync();
            (was_pending, finished.load(Ordering::SeqCst))
        })
    };
    let tid = rx.recv_timeout(common::DEADLINE).expect("helper started");
    wait_thread_blocked("cancel_sync waiting for the running item", tid);
    assert!(
        !helper.is_finished(),
        "cancel_sync returned while the item ran"
    );
    gate.open();
    let (was_pending, finished_at_return) = join("cancel_sync helper", helper);
    assert!(!was_pending, "it was running, not pending");
    assert!(
        finished_at_return,
        "cancel_sync returned before the run ended"
    );
    assert!(!dw.is_pending());
}

#[test]
fn cancel_sync_stops_a_periodic_item_that_rearms_itself() {
    let clock = pause();
    let runs = Arc::new(Counter::new());
    let rearms = Arc::new(Mutex::new(Vec::new()));
    let started = Arc::new(Latch::new());
    let gate = Arc::new(Latch::new());
    let _open = open_on_drop(&[&gate]);
    let dw = {
        let (runs, rearms, started, gate) =
            (runs.clone(), rearms.clone(), started.clone(), gate.clone());
        DelayedWork::new(move |dw| {
            runs.inc();
            if runs.get() == 3 {
                started.open();
                gate.wait_blocking();
            }
            let ok = system_wq().queue_delayed(dw, ms(10));
            rearms.lock().unwrap().push(ok);
        })
    };
    assert!(system_wq().queue_delayed(&dw, ms(10)));
    for k in 1..=2 {
        clock.advance(ms(10));
        runs.wait_for(k);
        wait_for("the item re-armed itself", || {
            rearms.lock().unwrap().len() == k
        });
        assert!(dw.is_pending(), "periodic item re-armed");
    }
    clock.advance(ms(10));
    started.wait(); // third run, blocked

    let (tx, rx) = mpsc::channel();
    let helper = {
        let dw = dw.clone();
        std::thread::spawn(move || {
            tx.send(current_tid()).unwrap();
            dw.cancel_sync()
        })
    };
    let tid = rx.recv_timeout(common::DEADLINE).expect("helper started");
    wait_thread_blocked("cancel_sync waiting for the periodic item", tid);
    gate.open();
    let was_pending = join("cancel_sync helper", helper);
    assert!(!was_pending, "it was running, not pending");
    assert_eq!(
        *rearms.lock().unwrap(),
        vec![true, true, false],
        "re-arming from inside the item must fail while cancel_sync runs"
    );
    assert!(!dw.is_pending(), "nothing pending after cancel_sync");
    advance_far(&clock);
    assert_runs_stay(&dw, &runs, 3, "the periodic item ran after cancel_sync");

    // cancel_sync leaves the item usable.
    assert!(system_wq().queue_delayed(&dw, ms(10)));
    assert!(cancel_sync(&dw));
}

#[test]
fn cancel_sync_stops_a_periodic_item_between_runs() {
    let clock = pause();
    let runs = Arc::new(Counter::new());
    let dw = {
        let runs = runs.clone();
        DelayedWork::new(move |dw| {
            runs.inc();
            let _ = system_wq().queue_delayed(dw, ms(10));
        })
    };
    assert!(system_wq().queue_delayed(&dw, ms(10)));
    for k in 1..=3 {
        clock.advance(ms(10));
        runs.wait_for(k);
        // Wait until it re-armed (pending again and not running).
        wait_for("re-armed", || dw.is_pending() && !dw.work().busy().running);
    }
    assert!(cancel_sync(&dw), "the armed timer was pending");
    assert!(!dw.is_pending());
    advance_far(&clock);
    assert_runs_stay(&dw, &runs, 3, "ran after cancel_sync");
}

#[test]
fn flush_fires_a_pending_timer_at_once_and_waits_for_the_run() {
    let clock = pause();
    let (dw, runs) = counting();
    assert!(!flush_dw(&dw), "idle: false");
    let before = clock.now();
    assert!(system_wq().queue_delayed(&dw, Duration::from_secs(3600)));
    // (Its return value for a pending item is checked in `delayed.rs`.)
    flush_dw(&dw);
    assert_eq!(runs.get(), 1, "flush returned before the run");
    assert_eq!(clock.now(), before, "flush moved the clock");
    assert!(!dw.is_pending());
    assert!(!flush_dw(&dw), "idle again");
    // The fired timer's deadline fires nothing more.
    advance_far(&clock);
    assert_runs_stay(&dw, &runs, 1, "ran again at the old deadline");
}

#[test]
fn flush_waits_for_a_queued_delayed_item() {
    let clock = pause();
    let (wq, plug) = plugged_ordered();
    let (dw, runs) = counting();
    assert!(wq.queue_delayed(&dw, ms(10)));
    wait_timer_thread_asleep();
    clock.advance(ms(10)); // queued behind the plug

    let (tx, rx) = mpsc::channel();
    let helper = {
        let dw = dw.clone();
        std::thread::spawn(move || {
            tx.send(current_tid()).unwrap();
            dw.flush()
        })
    };
    let tid = rx.recv_timeout(common::DEADLINE).expect("helper started");
    wait_thread_blocked("flush waiting for the queued item", tid);
    assert_eq!(runs.get(), 0);
    plug.gate.open();
    assert!(join("flush helper", helper));
    assert_eq!(runs.get(), 1, "flush returned before the run");
}

// ===== semantic 4: the recorded workqueue and CPU =====

#[test]
fn runs_on_the_cpu_recorded_when_armed() {
    let clock = pause();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let dw = {
        let seen = seen.clone();
        DelayedWork::new(move |_| {
            let w = current_worker().expect("runs on a worker");
            seen.lock().unwrap().push(w.cpu);
        })
    };
    let cpus = online_cpus();
    let wq = Workqueue::new(&unique("dly-cpu"), WqFlags::empty(), 0).unwrap();
    let mut expected = Vec::new();
    for &cpu in &cpus {
        // Timer path.
        assert_eq!(wq.queue_delayed_on(cpu, &dw, ms(10)), Ok(true));
        clock.advance(ms(10));
        expected.push(Some(cpu));
        wait_for("ran", || seen.lock().unwrap().len() == expected.len());
        // flush path (fires the timer itself).
        assert_eq!(wq.queue_delayed_on(cpu, &dw, ms(3600)), Ok(true));
        flush_dw(&dw);
        expected.push(Some(cpu));
        assert_eq!(
            seen.lock().unwrap().len(),
            expected.len(),
            "flush did not wait"
        );
        // mod_delayed_on moves it to another CPU.
        let other = cpus[(cpus.iter().position(|&c| c == cpu).unwrap() + 1) % cpus.len()];
        assert_eq!(wq.queue_delayed_on(cpu, &dw, ms(10)), Ok(true));
        assert_eq!(wq.mod_delayed_on(other, &dw, ms(10)), Ok(true));
        clock.advance(ms(10));
        expected.push(Some(other));
        wait_for("ran", || seen.lock().unwrap().len() == expected.len());
        // schedule_delayed_work_on: the system workqueue.
        assert_eq!(schedule_delayed_work_on(cpu, &dw, ms(10)), Ok(true));
        clock.advance(ms(10));
        expected.push(Some(cpu));
        wait_for("ran", || seen.lock().unwrap().len() == expected.len());
        wait_for("idle", || !dw.is_pending());
    }
    assert_eq!(*seen.lock().unwrap(), expected);
}

#[test]
fn invalid_cpu_is_refused() {
    let _clock = pause();
    let (dw, _runs) = counting();
    let bad = online_cpus().iter().max().unwrap() + 1000;
    assert_eq!(
        system_wq().queue_delayed_on(bad, &dw, ms(10)),
        Err(Error::InvalidCpu { cpu: bad })
    );
    assert_eq!(
        system_wq().mod_delayed_on(bad, &dw, ms(10)),
        Err(Error::InvalidCpu { cpu: bad })
    );
    assert_eq!(
        schedule_delayed_work_on(bad, &dw, ms(10)),
        Err(Error::InvalidCpu { cpu: bad })
    );
    assert!(!dw.is_pending());
}

#[test]
fn runs_on_the_workqueue_recorded_when_armed() {
    let clock = pause();
    let hi = Workqueue::new(&unique("dly-hi"), WqFlags::HIGHPRI, 0).unwrap();
    let lo = Workqueue::new(&unique("dly-lo"), WqFlags::empty(), 0).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let dw = {
        let seen = seen.clone();
        DelayedWork::new(move |_| {
            let w = current_worker().expect("runs on a worker");
            seen.lock().unwrap().push(w.highpri);
        })
    };
    let mut expected = Vec::new();
    let mut check = |want: bool, seen: &Mutex<Vec<bool>>| {
        expected.push(want);
        wait_for("ran", || seen.lock().unwrap().len() == expected.len());
        assert_eq!(*seen.lock().unwrap(), expected);
    };

    assert!(hi.queue_delayed(&dw, ms(10)));
    clock.advance(ms(10));
    check(true, &seen);
    wait_for("idle", || !dw.is_pending());

    assert!(lo.queue_delayed(&dw, ms(10)));
    clock.advance(ms(10));
    check(false, &seen);
    wait_for("idle", || !dw.is_pending());

    // Queueing a pending item elsewhere does not move it.
    assert!(hi.queue_delayed(&dw, ms(10)));
    assert!(!lo.queue_delayed(&dw, ms(10)));
    clock.advance(ms(10));
    check(true, &seen);
    wait_for("idle", || !dw.is_pending());

    // mod_delayed moves it to the queue it is called on.
    assert!(hi.queue_delayed(&dw, ms(10)));
    assert!(lo.mod_delayed(&dw, ms(10)));
    clock.advance(ms(10));
    check(false, &seen);
    wait_for("idle", || !dw.is_pending());

    // mod_delayed part-way through the delay: the new queue and the new deadline.
    assert!(lo.queue_delayed(&dw, ms(10)));
    clock.advance(ms(5));
    assert!(hi.mod_delayed(&dw, ms(5)));
    clock.advance(ms(5));
    check(true, &seen);
}

// ===== semantic 5: destroy with armed items =====

#[test]
fn destroy_disarms_armed_delayed_items() {
    let clock = pause();
    let wq = Workqueue::new(&unique("dly-destroy"), WqFlags::empty(), 0).unwrap();
    let other = wq.clone();
    let (a, a_runs) = counting();
    let (b, b_runs) = counting();
    let (c, c_runs) = counting();
    assert!(wq.queue_delayed(&a, ms(10)));
    assert_eq!(
        wq.queue_delayed_on(online_cpus()[0], &b, ms(3600)),
        Ok(true)
    );
    assert!(system_wq().queue_delayed(&c, ms(10))); // another queue: unaffected
    clock.advance(ms(5));

    with_deadline("destroy", move || wq.destroy());
    assert!(!a.is_pending(), "armed item still pending after destroy");
    assert!(!b.is_pending(), "armed item still pending after destroy");
    assert!(c.is_pending(), "destroy touched another queue's timer");

    clock.advance(ms(5));
    c_runs.wait_for(1);
    advance_far(&clock);
    assert_runs_stay(&a, &a_runs, 0, "an item of a destroyed queue ran");
    assert_runs_stay(&b, &b_runs, 0, "an item of a destroyed queue ran");

    // The destroyed queue refuses new arming; the items work elsewhere.
    assert!(!other.queue_delayed(&a, ms(10)));
    assert!(!other.mod_delayed(&a, ms(10)));
    assert!(!a.is_pending());
    assert!(system_wq().queue_delayed(&a, ms(10)));
    clock.advance(ms(10));
    a_runs.wait_for(1);
}

#[test]
fn dropping_the_last_handle_disarms_armed_delayed_items() {
    let clock = pause();
    let wq = Workqueue::new(&unique("dly-drop"), WqFlags::empty(), 0).unwrap();
    let (a, a_runs) = counting();
    assert!(wq.queue_delayed(&a, ms(10)));
    with_deadline("drop", move || drop(wq));
    assert!(
        !a.is_pending(),
        "armed item still pending after the last drop"
    );
    advance_far(&clock);
    assert_runs_stay(&a, &a_runs, 0, "an item of a destroyed queue ran");
}
