//! The watchdog, with a 200 ms threshold for this test binary: a pool whose worklist makes no
//! progress is reported once, with the dump; a pool that keeps starting items is not, nor is
//! one whose long item touches the watchdog.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmwq::{Work, Workqueue, WqFlags};
use common::{counting_item, unique, wait_for, wait_until, Latch};

const THRESH: Duration = Duration::from_millis(200);

static STALLS: Mutex<Vec<cmwq::Stall>> = Mutex::new(Vec::new());

/// Configures the engine once for this binary: a short threshold, and no automatic help for a
/// blocked worker (unannounced-sleep and CPU-hog detection off), so that an item that waits
/// without the hint holds its CPU's pool.
fn setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        cmwq::configure(cmwq::Config {
            watchdog_thresh: THRESH,
            detect_blocking: false,
            cpu_intensive_thresh: Duration::ZERO,
            ..Default::default()
        })
        .expect("configured before first use");
        cmwq::set_stall_hook(|s| STALLS.lock().unwrap().push(s.clone()));
    });
}

/// Tests here share the stall list and per-CPU pools: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn stalls_of(cpu: usize) -> usize {
    STALLS
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.cpu == Some(cpu))
        .count()
}

#[test]
fn a_stuck_pool_is_reported_once_with_the_dump() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    setup();
    let cpu = *cmwq::online_cpus().last().unwrap();
    let name = unique("stuck");
    let wq = Workqueue::new(&name, WqFlags::empty(), 0).unwrap();
    let gate = Arc::new(Latch::new());
    let g = gate.clone();
    // Waits without the hint: its pool's one running worker is taken, nothing else starts.
    let stuck = Work::new(move |_| g.wait());
    let (behind, runs) = counting_item();
    let before = stalls_of(cpu);
    assert!(wq.queue_on(cpu, &stuck).unwrap());
    wait_for("the stuck item to run", || stuck.busy().running);
    assert!(wq.queue_on(cpu, &behind).unwrap());
    wait_for("a stall report", || stalls_of(cpu) > before);
    {
        let stalls = STALLS.lock().unwrap();
        let s = stalls.iter().rev().find(|s| s.cpu == Some(cpu)).unwrap();
        assert!(s.stalled_for >= THRESH, "{s:?}");
        assert!(s.dump.contains(&format!("workqueue {name}")), "{}", s.dump);
    }
    // Once per stall: still stuck after several more thresholds, still one report.
    assert!(!wait_until(THRESH * 4, || stalls_of(cpu) > before + 1));
    gate.open();
    wait_for("the waiting item to run", || {
        runs.load(Ordering::SeqCst) == 1
    });
    wq.flush();
}

#[test]
fn a_pool_that_keeps_starting_items_is_not_reported() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    setup();
    let cpu = cmwq::online_cpus()[0];
    let wq = Workqueue::new(&unique("busy"), WqFlags::empty(), 0).unwrap();
    let before = stalls_of(cpu);
    // A backlog that takes several thresholds to work through, one short item at a time.
    let done = Arc::new(AtomicUsize::new(0));
    let items: Vec<Work> = (0..400)
        .map(|_| {
            let d = done.clone();
            Work::new(move |_| {
                common::burn(Duration::from_millis(2));
                d.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    for w in &items {
        assert!(wq.queue_on(cpu, w).unwrap());
    }
    wait_for("the backlog", || done.load(Ordering::SeqCst) == items.len());
    assert_eq!(stalls_of(cpu), before, "progress is not a stall");
}

#[test]
fn touching_the_watchdog_keeps_a_long_item_from_being_reported() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    setup();
    let cpu = *cmwq::online_cpus().last().unwrap();
    let wq = Workqueue::new(&unique("touch"), WqFlags::empty(), 0).unwrap();
    let started = Arc::new(Latch::new());
    let s = started.clone();
    let long = Work::new(move |_| {
        s.open();
        for _ in 0..(THRESH * 5).as_millis() / 20 {
            std::thread::sleep(Duration::from_millis(20));
            cmwq::touch_watchdog();
        }
    });
    let (behind, runs) = counting_item();
    let before = stalls_of(cpu);
    assert!(wq.queue_on(cpu, &long).unwrap());
    started.wait();
    assert!(wq.queue_on(cpu, &behind).unwrap());
    wait_for("the item behind", || runs.load(Ordering::SeqCst) == 1);
    assert_eq!(stalls_of(cpu), before, "a touched watchdog does not report");
}
