//! Concurrency management dynamics on one CPU: sleepers overlap (with and without the hint),
//! CPU-bound items do not pile up workers, CPU hogs are marked CPU-intensive, and an idle pool
//! shrinks to its floor once the (shortened) idle timeout passes.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use cmwq::{Work, Workqueue, WqFlags};
use common::{burn, wait_until, DEADLINE};

static SERIAL: Mutex<()> = Mutex::new(());
const IDLE_TIMEOUT: Duration = Duration::from_millis(300);

fn setup() -> std::sync::MutexGuard<'static, ()> {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        cmwq::configure(cmwq::Config {
            idle_worker_timeout: IDLE_TIMEOUT,
            ..cmwq::Config::default()
        })
        .expect("configure before first use");
    });
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Worker threads of the normal per-CPU pool of `cpu` (named `kworker/<cpu>:<n>`).
fn pool_threads(cpu: usize) -> usize {
    let prefix = format!("kworker/{cpu}:");
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .filter(|c| {
            let c = c.trim_end();
            c.starts_with(&prefix) && !c.ends_with('H')
        })
        .count()
}

fn run_sleepers(hint: bool) -> Duration {
    let cpu = cmwq::online_cpus()[0];
    let wq = Workqueue::new("dyn_sleepers", WqFlags::empty(), 0).unwrap();
    let items: Vec<Work> = (0..8)
        .map(|_| {
            Work::new(move |_| {
                let nap = || std::thread::sleep(Duration::from_millis(100));
                if hint {
                    cmwq::blocking(nap)
                } else {
                    nap()
                }
            })
        })
        .collect();
    let t = Instant::now();
    for w in &items {
        wq.queue_on(cpu, w).unwrap();
    }
    wq.flush();
    t.elapsed()
}

#[test]
fn sleepers_overlap_on_one_cpu_with_the_hint() {
    let _g = setup();
    let took = run_sleepers(true);
    assert!(
        took < Duration::from_millis(400),
        "8 x 100 ms hinted sleepers took {took:?}"
    );
}

#[test]
fn sleepers_overlap_on_one_cpu_without_any_hint() {
    let _g = setup();
    let took = run_sleepers(false);
    // Serial would be 800 ms; detection costs a sample or two per step.
    assert!(
        took < Duration::from_millis(500),
        "8 x 100 ms unhinted sleepers took {took:?}"
    );
}

#[test]
fn cpu_bound_items_do_not_pile_up_workers() {
    let _g = setup();
    let cpu = cmwq::online_cpus()[0];
    let wq = Workqueue::new("dyn_cpu_bound", WqFlags::empty(), 0).unwrap();
    let before = pool_threads(cpu);
    let items: Vec<Work> = (0..300)
        .map(|_| Work::new(|_| burn(Duration::from_millis(1))))
        .collect();
    let peak = Arc::new(AtomicUsize::new(0));
    let p = peak.clone();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let d = done.clone();
    let sampler = std::thread::spawn(move || {
        while !d.load(Ordering::Relaxed) {
            p.fetch_max(pool_threads(cpu), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(2));
        }
    });
    for w in &items {
        wq.queue_on(cpu, w).unwrap();
    }
    wq.flush();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let peak = peak.load(Ordering::Relaxed);
    // One running worker plus the spare the manager keeps (and whatever earlier tests left).
    assert!(
        peak <= before.max(2) + 2,
        "CPU-bound items grew the pool from {before} to {peak} workers"
    );
}

#[test]
fn a_cpu_hog_is_marked_cpu_intensive_and_lets_others_start() {
    let _g = setup();
    let cpu = cmwq::online_cpus()[0];
    let wq = Workqueue::new("dyn_hog", WqFlags::empty(), 0).unwrap();
    let started = Arc::new(Mutex::new(None));
    let hog = Work::new(|_| burn(Duration::from_millis(400)));
    let s = started.clone();
    let other = Work::new(move |_| *s.lock().unwrap() = Some(Instant::now()));
    let t0 = Instant::now();
    wq.queue_on(cpu, &hog).unwrap();
    wq.queue_on(cpu, &other).unwrap();
    assert!(wait_until(DEADLINE, || started.lock().unwrap().is_some()));
    let after = started.lock().unwrap().unwrap() - t0;
    // Without hog detection `other` would wait the whole 400 ms behind the hog.
    assert!(
        after < Duration::from_millis(250),
        "the second item started after {after:?}"
    );
    hog.flush();
}

#[test]
fn an_idle_pool_shrinks_to_its_floor() {
    let _g = setup();
    let cpu = cmwq::online_cpus()[0];
    let wq = Workqueue::new("dyn_reap", WqFlags::empty(), 0).unwrap();
    let items: Vec<Work> = (0..16)
        .map(|_| Work::new(|_| cmwq::blocking(|| std::thread::sleep(Duration::from_millis(100)))))
        .collect();
    for w in &items {
        wq.queue_on(cpu, w).unwrap();
    }
    wq.flush();
    let burst = pool_threads(cpu);
    assert!(
        burst > 4,
        "the burst should have grown the pool (it has {burst} workers)"
    );
    let t = Instant::now();
    // Floor: the kernel keeps two idle workers.
    assert!(
        wait_until(DEADLINE, || pool_threads(cpu) <= 2),
        "pool still has {} workers after {:?}",
        pool_threads(cpu),
        t.elapsed()
    );
    let took = t.elapsed();
    // Within the idle timeout plus one reaping period (timeout / 4) and scheduling slack.
    assert!(
        took < IDLE_TIMEOUT + IDLE_TIMEOUT / 4 + Duration::from_millis(500),
        "shrinking took {took:?}"
    );
}

#[test]
fn items_spinning_inside_blocking_do_not_starve_the_item_they_wait_for() {
    // Workers that spin (or yield in a loop) inside `blocking()` look asleep to concurrency
    // management but keep their CPU busy and runnable: the saturation gate and the "a woken
    // sleeper is about to run" check both hold creation back. The item they wait for must
    // still get a worker (after a bounded delay), never wait for ever.
    let _g = setup();
    let cpu = cmwq::online_cpus()[0];
    let wq = Workqueue::new("dyn_spin_hint", WqFlags::empty(), 0).unwrap();
    // More spinners than the pool has workers, so the last ones need new workers too.
    let n = pool_threads(cpu) + 2;
    let spinners = common::spinners(n, true);
    for w in &spinners.items {
        wq.queue_on(cpu, w).unwrap();
    }
    wq.queue_on(cpu, &spinners.releaser).unwrap();
    wq.flush();
    assert_eq!(
        spinners.gave_up.load(Ordering::Relaxed),
        0,
        "{n} spinners waited {DEADLINE:?} for an item queued behind them"
    );
}
