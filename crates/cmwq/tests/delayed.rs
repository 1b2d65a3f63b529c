//! Delayed work in real time: delays are honoured on the real clock, periodic items stop on
//! `cancel_sync`, `flush` does not wait for the delay, and cancel / flush racing with a timer
//! that is firing account for every instance exactly once.
//!
//! The clock is never paused in this file (tests that pause it live in `delayed_clock.rs`, a
//! separate process).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmwq::{
    current_worker, online_cpus, schedule_delayed_work, schedule_delayed_work_on, system_wq,
    DelayedWork, DelayedWorkField, DelayedWorkItem, Workqueue, WqFlags,
};
use common::{unique, wait_for, with_deadline, Counter, Rng, SETTLE};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn counting() -> (DelayedWork, Arc<Counter>) {
    let runs = Arc::new(Counter::new());
    let r = runs.clone();
    (DelayedWork::new(move |_| r.inc()), runs)
}

/// Spins (without sleeping) for `d`.
fn spin_for(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

#[test]
fn runs_no_earlier_than_its_delay_on_the_real_clock() {
    let delays = [1u64, 5, 20, 50];
    let starts: Vec<Arc<Mutex<Option<Instant>>>> =
        delays.iter().map(|_| Arc::new(Mutex::new(None))).collect();
    let items: Vec<DelayedWork> = starts
        .iter()
        .map(|slot| {
            let slot = slot.clone();
            DelayedWork::new(move |_| *slot.lock().unwrap() = Some(Instant::now()))
        })
        .collect();
    let mut armed_at = Vec::new();
    for (dw, &d) in items.iter().zip(&delays) {
        armed_at.push(Instant::now());
        assert!(system_wq().queue_delayed(dw, ms(d)));
        assert!(dw.is_pending());
    }
    for (i, &d) in delays.iter().enumerate() {
        wait_for("delayed item ran", || starts[i].lock().unwrap().is_some());
        let started = starts[i].lock().unwrap().unwrap();
        let waited = started - armed_at[i];
        assert!(
            waited >= ms(d),
            "item with a {d} ms delay started after only {waited:?}"
        );
    }
}

#[test]
fn zero_delay_runs_at_once_and_embedded_items_work() {
    struct Tick {
        field: DelayedWorkField,
        runs: AtomicUsize,
    }
    impl DelayedWorkItem for Tick {
        fn delayed_work_field(&self) -> &DelayedWorkField {
            &self.field
        }
        fn run(&self, _dw: &DelayedWork) {
            self.runs.fetch_add(1, Ordering::SeqCst);
        }
    }
    let tick = Arc::new(Tick {
        field: DelayedWorkField::new(),
        runs: AtomicUsize::new(0),
    });
    let dw = DelayedWork::from_arc(tick.clone());
    assert!(schedule_delayed_work(&dw, Duration::ZERO));
    wait_for("zero-delay item ran", || {
        tick.runs.load(Ordering::SeqCst) == 1
    });
    wait_for("idle", || !dw.is_pending());
    assert!(schedule_delayed_work(&dw, ms(2)));
    wait_for("delayed item ran", || tick.runs.load(Ordering::SeqCst) == 2);
}

#[test]
fn schedule_delayed_work_on_runs_on_that_cpu_of_the_system_queue() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let dw = {
        let seen = seen.clone();
        DelayedWork::new(move |_| {
            let w = current_worker().expect("runs on a worker");
            seen.lock().unwrap().push((w.cpu, w.highpri));
        })
    };
    let cpus = online_cpus();
    for (i, &cpu) in cpus.iter().enumerate() {
        assert_eq!(schedule_delayed_work_on(cpu, &dw, ms(2)), Ok(true));
        wait_for("ran", || seen.lock().unwrap().len() == i + 1);
        wait_for("idle", || !dw.is_pending());
        assert_eq!(seen.lock().unwrap()[i], (Some(cpu), false));
    }
}

#[test]
fn flush_does_not_wait_for_the_delay() {
    let (dw, runs) = counting();
    assert!(system_wq().queue_delayed(&dw, Duration::from_secs(600)));
    let d = dw.clone();
    // A 10-minute delay flushed under the 20 s deadline: the timer was fired at once.
    with_deadline("flush", move || d.flush());
    assert_eq!(runs.get(), 1, "flush returned before the run");
    assert!(!dw.is_pending());
}

/// `DelayedWork::flush` returns `false` only if the item was idle: for an armed item it fires
/// the timer and waits, so it returns `true` even if the run is quick.
#[test]
fn flush_of_a_pending_item_returns_true() {
    const N: usize = 200;
    let (dw, runs) = counting();
    let mut falses = 0;
    for i in 0..N {
        assert!(system_wq().queue_delayed(&dw, Duration::from_secs(600)));
        let d = dw.clone();
        if !with_deadline("flush", move || d.flush()) {
            falses += 1;
        }
        assert_eq!(runs.get(), i + 1, "flush returned before the run");
        wait_for("idle", || !dw.work().busy().running);
        let d = dw.clone();
        assert!(!with_deadline("flush", move || d.flush()), "idle: false");
    }
    assert_eq!(
        falses, 0,
        "flush of an armed item returned false (\"idle\") in {falses} of {N} calls"
    );
}

#[test]
fn cancel_sync_stops_a_periodic_item_on_the_real_clock() {
    let runs = Arc::new(Counter::new());
    let dw = {
        let runs = runs.clone();
        DelayedWork::new(move |dw| {
            runs.inc();
            let _ = system_wq().queue_delayed(dw, ms(1));
        })
    };
    assert!(system_wq().queue_delayed(&dw, ms(1)));
    runs.wait_for(20);
    let d = dw.clone();
    with_deadline("cancel_sync", move || d.cancel_sync());
    assert!(!dw.is_pending(), "periodic item pending after cancel_sync");
    let after = runs.get();
    std::thread::sleep(SETTLE); // 100 periods
    assert_eq!(runs.get(), after, "periodic item ran after cancel_sync");
    assert!(!dw.is_pending());
}

/// Debouncing on the real clock: every `mod_delayed` that found the item idle armed one
/// instance, every instance ran once, and the last run started no earlier than its delay
/// after the last `mod_delayed`.
#[test]
fn mod_delayed_debounces_on_the_real_clock() {
    const DELAY: Duration = Duration::from_millis(200);
    let starts = Arc::new(Mutex::new(Vec::new()));
    let dw = {
        let starts = starts.clone();
        DelayedWork::new(move |_| starts.lock().unwrap().push(Instant::now()))
    };
    let mut armed_from_idle = 0;
    let mut last = Instant::now();
    for _ in 0..50 {
        last = Instant::now();
        if !system_wq().mod_delayed(&dw, DELAY) {
            armed_from_idle += 1;
        }
        std::thread::sleep(ms(1));
    }
    wait_for("debounced runs", || {
        starts.lock().unwrap().len() == armed_from_idle
    });
    wait_for("idle", || !dw.is_pending());
    std::thread::sleep(SETTLE);
    let starts = starts.lock().unwrap();
    assert_eq!(starts.len(), armed_from_idle, "runs != armings from idle");
    let final_start = *starts.last().unwrap();
    assert!(
        final_start - last >= DELAY,
        "the last run started {:?} after the last mod_delayed",
        final_start - last
    );
}

/// `cancel_sync` racing with the timer firing: after it returns, the item either ran (and
/// finished) or was cancelled, never both, never neither.
#[test]
fn cancel_sync_racing_with_the_timer_accounts_for_every_instance() {
    let wq = Workqueue::new(&unique("dly-race"), WqFlags::empty(), 0).unwrap();
    let (dw, runs) = counting();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut ran, mut cancelled) = (0, 0);
    for i in 0..1000 {
        assert!(wq.queue_delayed(&dw, Duration::from_micros(500)));
        spin_for(Duration::from_micros(rng.next() % 1000));
        if dw.cancel_sync() {
            cancelled += 1;
        } else {
            ran += 1;
        }
        assert_eq!(
            runs.get(),
            ran,
            "iteration {i}: cancel_sync returned false but the run had not finished (or it \
             returned true and the item ran)"
        );
        assert!(!dw.is_pending(), "iteration {i}: pending after cancel_sync");
    }
    std::thread::sleep(SETTLE);
    assert_eq!(runs.get(), ran);
    eprintln!("cancel_sync race: {ran} ran, {cancelled} cancelled");
}

/// `cancel` racing with the timer firing: `true` means that instance never runs; `false` means
/// it ran or is running.
#[test]
fn cancel_racing_with_the_timer_accounts_for_every_instance() {
    let wq = Workqueue::new(&unique("dly-race"), WqFlags::empty(), 0).unwrap();
    let (dw, runs) = counting();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut ran = 0;
    for i in 0..1000 {
        assert!(wq.queue_delayed(&dw, Duration::from_micros(500)));
        spin_for(Duration::from_micros(rng.next() % 1000));
        if !dw.cancel() {
            ran += 1;
        }
        wait_for("the uncancelled instance ran", || runs.get() >= ran);
        // Wait until it is fully idle before re-arming (a run may still be returning).
        wait_for("idle", || !dw.work().busy().running && !dw.is_pending());
        assert_eq!(runs.get(), ran, "iteration {i}: a cancelled instance ran");
    }
}

/// `flush` racing with the timer firing: when it returns, the instance that was pending when
/// it was called has run to completion.
#[test]
fn flush_racing_with_the_timer_waits_for_the_run() {
    let wq = Workqueue::new(&unique("dly-race"), WqFlags::empty(), 0).unwrap();
    let (dw, runs) = counting();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    const N: usize = 5000;
    let mut early = 0;
    for i in 0..N {
        assert!(wq.queue_delayed(&dw, Duration::from_micros(500)));
        // Around the deadline, where the timer thread is firing it.
        spin_for(Duration::from_micros(300 + rng.next() % 400));
        let flushed = dw.flush();
        let seen = runs.get();
        if seen != i + 1 {
            early += 1;
            eprintln!(
                "iteration {i}: flush returned {flushed} with {seen} runs (expected {})",
                i + 1
            );
        }
        wait_for("the instance ran", || runs.get() == i + 1);
        wait_for("idle", || !dw.work().busy().running && !dw.is_pending());
    }
    assert_eq!(
        early, 0,
        "flush returned before the pending instance had run in {early} of {N} iterations"
    );
}
