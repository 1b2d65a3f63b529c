//! The kernel documentation's example execution scenarios (workqueue.rst, "Example Execution
//! Scenarios"), played on one CPU's pool and checked with tolerances.
//!
//! w0 burns CPU for 5 ms, sleeps 10 ms, burns 5 ms again; w1 and w2 burn 5 ms then sleep
//! 10 ms. The timeline records when each phase starts, and the assertions place each event
//! inside a phase of another item (w1 starts while w0 sleeps, ...), which holds however the
//! machine stretches the phases. Burns are scaled to 20 ms and sleeps to 80 ms so that
//! scheduling noise on a shared 2-core machine stays small against them.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmwq::{Work, Workqueue, WqFlags};
use common::burn;

const UNIT: Duration = Duration::from_millis(20); // the documentation's 5 ms
/// Slack for "starts once both are done": scheduling latency on a noisy machine.
const SLACK: Duration = Duration::from_millis(50);

static SERIAL: Mutex<()> = Mutex::new(());

/// The documentation's burns (5 ms) are below the kernel's 10 ms CPU-hog threshold; ours are
/// scaled to 20 ms, so the threshold is scaled too (the hog rule has its own test).
fn setup() -> std::sync::MutexGuard<'static, ()> {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        cmwq::configure(cmwq::Config {
            cpu_intensive_thresh: Duration::from_millis(200),
            ..cmwq::Config::default()
        })
        .expect("configure before first use");
    });
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy, Debug, Default)]
struct Phases {
    start: Option<Instant>,
    sleep: Option<Instant>,
    wake: Option<Instant>,
    end: Option<Instant>,
}

type Log = Arc<Mutex<[Phases; 3]>>;

fn item(log: &Log, i: usize, second_burn: bool, hint: bool) -> Work {
    let log = log.clone();
    Work::new(move |_| {
        log.lock().unwrap()[i].start = Some(Instant::now());
        burn(UNIT);
        log.lock().unwrap()[i].sleep = Some(Instant::now());
        let sleep = || std::thread::sleep(UNIT * 4);
        if hint {
            cmwq::blocking(sleep);
        } else {
            sleep();
        }
        log.lock().unwrap()[i].wake = Some(Instant::now());
        if second_burn {
            burn(UNIT);
        }
        log.lock().unwrap()[i].end = Some(Instant::now());
    })
}

/// Runs w0 on `q0` and w1, w2 on `q1` (the same queue unless CPU_INTENSIVE is tested), all on
/// one CPU; returns the phases relative to w0's start.
fn play(q0: &Workqueue, q1: &Workqueue, hint: bool) -> [Phases; 3] {
    let cpu = cmwq::online_cpus()[0];
    let log: Log = Arc::default();
    let items = [
        item(&log, 0, true, hint),
        item(&log, 1, false, hint),
        item(&log, 2, false, hint),
    ];
    q0.queue_on(cpu, &items[0]).unwrap();
    q1.queue_on(cpu, &items[1]).unwrap();
    q1.queue_on(cpu, &items[2]).unwrap();
    for w in &items {
        w.flush();
    }
    let phases = *log.lock().unwrap();
    for (i, p) in phases.iter().enumerate() {
        assert!(p.end.is_some(), "w{i} did not finish: {phases:?}");
    }
    phases
}

fn t(p: Option<Instant>, zero: Instant) -> Duration {
    p.expect("phase recorded").saturating_duration_since(zero)
}

fn show(ph: &[Phases; 3]) -> String {
    let z = ph[0].start.unwrap();
    ph.iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "w{i}: start {:?} sleep {:?} wake {:?} end {:?}",
                t(p.start, z),
                t(p.sleep, z),
                t(p.wake, z),
                t(p.end, z)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether `at` falls in `[from, to)`.
fn within(at: Option<Instant>, from: Option<Instant>, to: Option<Instant>) -> bool {
    at >= from && at < to
}

/// "With cmwq with max_active >= 3": w1 starts when w0 sleeps, w2 when w1 sleeps; no item
/// starts while another burns, and all three sleep at once.
fn check_max_active_3(ph: &[Phases; 3]) {
    let s = show(ph);
    assert!(
        within(ph[1].start, ph[0].sleep, ph[0].wake),
        "w1 did not start while w0 slept: {s}"
    );
    assert!(
        within(ph[2].start, ph[1].sleep, ph[1].wake),
        "w2 did not start while w1 slept: {s}"
    );
    assert!(
        ph[2].start < ph[0].wake,
        "the three sleeps did not overlap: {s}"
    );
}

#[test]
fn max_active_3_with_blocking_hint() {
    let _g = setup();
    let q0 = Workqueue::new("scn_q0", WqFlags::empty(), 3).unwrap();
    check_max_active_3(&play(&q0, &q0, true));
}

#[test]
fn max_active_3_without_hint_is_detected() {
    let _g = setup();
    let q0 = Workqueue::new("scn_q0_auto", WqFlags::empty(), 3).unwrap();
    check_max_active_3(&play(&q0, &q0, false));
}

#[test]
fn max_active_2_makes_w2_wait_for_a_slot() {
    let _g = setup();
    let q0 = Workqueue::new("scn_q0_ma2", WqFlags::empty(), 2).unwrap();
    let ph = play(&q0, &q0, true);
    let (z, s) = (ph[0].start.unwrap(), show(&ph));
    assert!(
        within(ph[1].start, ph[0].sleep, ph[0].wake),
        "w1 did not start while w0 slept: {s}"
    );
    // w2 waits on the inactive list until one of the first two finishes; it starts once a
    // slot is free and nothing else burns (at the latest when both are done).
    let first_end = ph[0].end.min(ph[1].end);
    let both_done = ph[0].end.max(ph[1].end);
    assert!(
        ph[2].start >= first_end,
        "w2 started before a slot was free: {s}"
    );
    assert!(
        t(ph[2].start, z) <= t(both_done, z) + SLACK,
        "w2 did not start once a slot was free: {s}"
    );
}

#[test]
fn cpu_intensive_items_start_together_when_w0_sleeps() {
    let _g = setup();
    let q0 = Workqueue::new("scn_q0_ci", WqFlags::empty(), 0).unwrap();
    let q1 = Workqueue::new("scn_q1_ci", WqFlags::CPU_INTENSIVE, 0).unwrap();
    let ph = play(&q0, &q1, true);
    let s = show(&ph);
    // CPU-intensive items still wait for concurrency management to let them start...
    assert!(
        within(ph[1].start, ph[0].sleep, ph[0].wake),
        "w1 did not start while w0 slept: {s}"
    );
    // ...but do not count once running: w2 starts while w1 still burns.
    assert!(
        within(ph[2].start, ph[1].start, ph[1].sleep),
        "w2 did not start while w1 burned: {s}"
    );
}

#[test]
fn without_concurrency_management_items_would_serialise() {
    // The contrast the documentation draws with the original workqueue: on an ordered queue
    // (one at a time) the same items take the full serial time.
    let _g = setup();
    let q = Workqueue::ordered("scn_ordered", WqFlags::empty()).unwrap();
    let ph = play(&q, &q, true);
    let s = show(&ph);
    assert!(ph[1].start >= ph[0].end, "{s}");
    assert!(ph[2].start >= ph[1].end, "{s}");
}
