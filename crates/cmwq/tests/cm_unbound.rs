//! Unbound pools (no concurrency management, as in Linux) and their saturation gate, which
//! goes further than Linux (see DESIGN.md): CPU-bound items stay near one worker per CPU,
//! sleeping items still overlap, and the monitor parks once the pools are idle.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmwq::{Work, Workqueue, WqFlags};
use common::{burn, wait_until};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Threads whose name starts with `prefix`.
fn threads_named(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|c| c.starts_with(prefix))
        .count()
}

/// The `kworker/u<id>:` prefix of the unbound pool serving `wq`.
fn pool_prefix(wq: &Workqueue) -> String {
    let id = Arc::new(Mutex::new(None));
    let i = id.clone();
    let probe = Work::new(move |_| *i.lock().unwrap() = cmwq::current_worker().map(|w| w.pool_id));
    wq.queue(&probe);
    // No assert on flush's result: the probe may have finished before the flush (then
    // `false`, nothing to wait for); the id below says that it ran.
    probe.flush();
    let id = id.lock().unwrap().expect("ran on a worker");
    format!("kworker/u{id}:")
}

#[test]
fn cpu_bound_unbound_items_stay_near_one_worker_per_cpu() {
    let _g = serial();
    let wq = Workqueue::new("unbound_cpu_bound", WqFlags::UNBOUND, 0).unwrap();
    let prefix = pool_prefix(&wq);
    let cpus = cmwq::online_cpus().len();
    // Let the probe's pool go idle so the burst starts from the monitor's "nothing known".
    std::thread::sleep(Duration::from_millis(50));
    let items: Vec<Work> = (0..400)
        .map(|_| Work::new(|_| burn(Duration::from_millis(1))))
        .collect();
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, prefix) = (peak.clone(), done.clone(), prefix.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(threads_named(&prefix), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    for w in &items {
        wq.queue(w);
    }
    wq.flush();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    // One worker per CPU and a spare until the monitor has seen spare CPU, plus slack. A pool
    // that makes a worker whenever none is idle (Linux) makes dozens.
    assert!(
        peak <= cpus + 4,
        "400 CPU-bound items made {peak} unbound workers on {cpus} CPUs"
    );
}

#[test]
fn sleeping_unbound_items_overlap_without_any_hint() {
    let _g = serial();
    let wq = Workqueue::new("unbound_sleepers", WqFlags::UNBOUND, 0).unwrap();
    let n = 4 * cmwq::online_cpus().len() + 4;
    let items: Vec<Work> = (0..n)
        .map(|_| Work::new(|_| std::thread::sleep(Duration::from_millis(100))))
        .collect();
    let t = Instant::now();
    for w in &items {
        wq.queue(w);
    }
    wq.flush();
    let took = t.elapsed();
    // One runner per CPU would take n / cpus x 100 ms = 400+ ms; overlapping sleepers take
    // little more than one sleep.
    assert!(
        took < Duration::from_millis(350),
        "{n} x 100 ms unbound sleepers took {took:?}"
    );
}

/// CPU time of the monitor thread, in clock ticks.
fn monitor_ticks() -> Option<u64> {
    for e in std::fs::read_dir("/proc/self/task").ok()? {
        let path = e.ok()?.path();
        let comm = std::fs::read_to_string(path.join("comm")).ok()?;
        if comm.trim_end() != "cmwq-monitor" {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).ok()?;
        let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
        return Some(fields[11].parse::<u64>().ok()? + fields[12].parse::<u64>().ok()?);
    }
    None
}

#[test]
fn the_monitor_parks_while_unbound_pools_are_idle() {
    let _g = serial();
    let wq = Workqueue::new("unbound_idle", WqFlags::UNBOUND, 0).unwrap();
    let w = Work::new(|_| burn(Duration::from_millis(5)));
    wq.queue(&w);
    assert!(w.flush());
    assert!(
        wait_until(Duration::from_secs(10), || monitor_ticks().is_some()),
        "monitor thread started"
    );
    std::thread::sleep(Duration::from_millis(100));
    let before = monitor_ticks().unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let used = monitor_ticks().unwrap() - before;
    // A monitor spinning instead of parking (it once did, when an unbound pool's base target
    // of one runner per CPU read as "raised") uses all of the 600 ms: ~60 ticks at 100 Hz.
    assert!(used <= 10, "idle monitor used {used} clock ticks in 600 ms");
}

#[test]
fn unbound_items_spinning_for_a_later_item_do_not_starve_it() {
    // More items than the gate's floor (one worker per CPU and a spare) spin, keeping the CPUs
    // saturated, until an item queued behind them runs. Linux would make a worker for it; the
    // gate must not refuse one for ever (the spinners become CPU-intensive, which raises it).
    let _g = serial();
    let wq = Workqueue::new("unbound_spin_wait", WqFlags::UNBOUND, 0).unwrap();
    let n = cmwq::online_cpus().len() + 3;
    let spinners = common::spinners(n, false);
    for w in &spinners.items {
        wq.queue(w);
    }
    wq.queue(&spinners.releaser);
    wq.flush();
    assert_eq!(
        spinners.gave_up.load(Ordering::Relaxed),
        0,
        "{n} spinners waited {:?} for an item queued behind them",
        common::DEADLINE
    );
}

#[test]
fn a_stream_of_empty_items_keeps_an_unbound_pool_at_its_floor() {
    // One producer queueing empty items: the workers spend most of their time in the engine,
    // often waiting for the pool lock, which `/proc` shows as asleep. Such waits are not
    // sleeps in an item and must not open the creation gate (they did: the pool grew to a
    // dozen workers, each item then paid a wake-up). The floor is one worker per CPU and a
    // spare. A pool of its own (nice 1), so that other tests' workers are not counted.
    let _s = serial();
    let wq = Workqueue::builder("cm-empty-stream")
        .flags(WqFlags::UNBOUND)
        .nice(1)
        .build()
        .unwrap();
    let prefix = pool_prefix(&wq);
    let ran = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut queued = 0usize;
    // Long enough for many monitor samples (1 ms apart while busy).
    while queued < 200_000 || start.elapsed() < Duration::from_millis(300) {
        let r = ran.clone();
        wq.queue(&Work::new(move |_| {
            r.fetch_add(1, Ordering::Relaxed);
        }));
        queued += 1;
    }
    wq.flush();
    assert_eq!(ran.load(Ordering::Relaxed), queued);
    let floor = cmwq::online_cpus().len() + 1;
    let workers = threads_named(&prefix);
    assert!(
        workers <= floor,
        "{workers} workers for a stream of empty items, more than the floor of {floor}"
    );
}

#[test]
fn brief_items_often_do_not_wake_the_monitor_for_each() {
    // A brief item every 50 µs leaves the pools idle at most of the monitor's samples. A
    // monitor that parked at the first idle sample was woken by about every other item
    // (thousands of wake-ups a second, each on the critical path of the item's worker);
    // it now parks only after a run of idle samples.
    let _s = serial();
    let wq = Workqueue::new("cm-brief-items", WqFlags::UNBOUND, 0).unwrap();
    let warm = Work::new(|_| {});
    wq.queue(&warm);
    warm.flush();
    let before = cmwq::monitor_unparks();
    let items = 2000;
    for _ in 0..items {
        let w = Work::new(|_| {});
        wq.queue(&w);
        let t = Instant::now();
        while t.elapsed() < Duration::from_micros(50) {
            std::hint::spin_loop();
        }
        w.flush();
    }
    let unparks = cmwq::monitor_unparks() - before;
    assert!(
        unparks <= 50,
        "{unparks} monitor wake-ups for {items} brief items 50 µs apart"
    );
}
