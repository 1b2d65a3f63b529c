//! Stress: several threads hammer `queue_delayed`, `queue_delayed_on`, `mod_delayed`,
//! `mod_delayed_on`, `cancel`, `cancel_sync` and `flush` on a few delayed items with small real
//! delays (0..2 ms), while some items re-arm themselves from their own function. At the end
//! every item is cancelled synchronously and the instances are accounted for:
//!
//! `armed == runs + cancelled + stolen`
//!
//! where `armed` counts every call that created an instance (`queue_delayed*` returning
//! `true`, every `mod_delayed*` call), `cancelled` every `cancel*` returning `true` and
//! `stolen` every `mod_delayed*` returning `true` (it took over a pending instance, which ends
//! there, and armed a new one).
//!
//! `mod_delayed` on an item that `cancel_sync` has disabled returns `false` without arming (as
//! in the kernel), which is indistinguishable from "was idle, now armed"; so `mod_delayed*` and
//! `cancel_sync` on the *same* item are kept apart by a per-item read/write lock. Every other
//! pair of operations races freely.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cmwq::{online_cpus, DelayedWork, Workqueue, WqFlags};
use common::{join_all, unique, with_deadline, OverlapDetector, Rng, SETTLE};

const ITEMS: usize = 4;
const THREADS: usize = 4;
const OPS_PER_THREAD: usize = 25_000;

#[derive(Default)]
struct Stats {
    armed: AtomicUsize,
    runs: AtomicUsize,
    cancelled: AtomicUsize,
    stolen: AtomicUsize,
    self_rearmed: AtomicUsize,
    det: OverlapDetector,
}

struct Item {
    dw: DelayedWork,
    stats: Arc<Stats>,
    /// Read: `mod_delayed*`; write: `cancel_sync` (see the module comment).
    rw: RwLock<()>,
}

/// A random delay of 0..=2 ms drawn from `rng`.
fn delay(rng: &mut Rng) -> Duration {
    Duration::from_micros(rng.next() % 2_001)
}

fn make_items(wq: &Workqueue) -> Vec<Arc<Item>> {
    (0..ITEMS)
        .map(|i| {
            let stats = Arc::new(Stats::default());
            let dw = {
                let (stats, wq) = (stats.clone(), wq.clone());
                DelayedWork::new(move |dw| {
                    let _g = stats.det.enter();
                    let n = stats.runs.fetch_add(1, Ordering::SeqCst) + 1;
                    // Items 0 and 1 are periodic every fourth run.
                    if i < 2 && n % 4 != 0 && wq.queue_delayed(dw, Duration::from_micros(300)) {
                        stats.armed.fetch_add(1, Ordering::SeqCst);
                        stats.self_rearmed.fetch_add(1, Ordering::SeqCst);
                    }
                })
            };
            Arc::new(Item {
                dw,
                stats,
                rw: RwLock::new(()),
            })
        })
        .collect()
}

fn hammer(seed: u64, wq: Workqueue, items: Vec<Arc<Item>>) {
    let cpus = online_cpus();
    let mut rng = Rng(seed);
    for _ in 0..OPS_PER_THREAD {
        let it = &items[(rng.next() % ITEMS as u64) as usize];
        let (dw, st) = (&it.dw, &it.stats);
        let cpu = cpus[(rng.next() % cpus.len() as u64) as usize];
        match rng.next() % 12 {
            0..=2 => {
                if wq.queue_delayed(dw, delay(&mut rng)) {
                    st.armed.fetch_add(1, Ordering::SeqCst);
                }
            }
            3 => {
                if wq.queue_delayed_on(cpu, dw, delay(&mut rng)).unwrap() {
                    st.armed.fetch_add(1, Ordering::SeqCst);
                }
            }
            4..=5 => {
                let _r = it.rw.read().unwrap();
                st.armed.fetch_add(1, Ordering::SeqCst);
                if wq.mod_delayed(dw, delay(&mut rng)) {
                    st.stolen.fetch_add(1, Ordering::SeqCst);
                }
            }
            6 => {
                let _r = it.rw.read().unwrap();
                st.armed.fetch_add(1, Ordering::SeqCst);
                if wq.mod_delayed_on(cpu, dw, delay(&mut rng)).unwrap() {
                    st.stolen.fetch_add(1, Ordering::SeqCst);
                }
            }
            7..=8 => {
                if dw.cancel() {
                    st.cancelled.fetch_add(1, Ordering::SeqCst);
                }
            }
            9 => {
                let _w = it.rw.write().unwrap();
                if dw.cancel_sync() {
                    st.cancelled.fetch_add(1, Ordering::SeqCst);
                }
            }
            10 => {
                dw.flush();
            }
            _ => {
                // A short pause lets timers fire on their own now and then.
                let end = Instant::now() + delay(&mut rng) / 4;
                while Instant::now() < end {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

#[test]
fn racing_delayed_operations_lose_and_duplicate_no_run() {
    let start = Instant::now();
    let wq = Workqueue::new(&unique("dly-stress"), WqFlags::empty(), 0).unwrap();
    let items = make_items(&wq);

    let handles = (0..THREADS)
        .map(|t| {
            let (wq, items) = (wq.clone(), items.clone());
            let seed = 0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(t as u64 + 1) | 1;
            std::thread::spawn(move || hammer(seed, wq, items))
        })
        .collect();
    join_all("hammering threads", handles);

    for (i, it) in items.iter().enumerate() {
        let dw = it.dw.clone();
        if with_deadline("final cancel_sync", move || dw.cancel_sync()) {
            it.stats.cancelled.fetch_add(1, Ordering::SeqCst);
        }
        assert!(!it.dw.is_pending(), "item {i} pending after cancel_sync");
    }
    let runs_at_end: Vec<usize> = items
        .iter()
        .map(|it| it.stats.runs.load(Ordering::SeqCst))
        .collect();
    std::thread::sleep(SETTLE); // > 50 times the longest delay
    for (i, it) in items.iter().enumerate() {
        let s = &it.stats;
        let (armed, runs, cancelled, stolen) = (
            s.armed.load(Ordering::SeqCst),
            s.runs.load(Ordering::SeqCst),
            s.cancelled.load(Ordering::SeqCst),
            s.stolen.load(Ordering::SeqCst),
        );
        eprintln!(
            "item {i}: armed {armed} (self {}), runs {runs}, cancelled {cancelled}, stolen {stolen}",
            s.self_rearmed.load(Ordering::SeqCst)
        );
        assert_eq!(
            runs, runs_at_end[i],
            "item {i} ran after the final cancel_sync"
        );
        assert!(
            !it.dw.is_pending(),
            "item {i} pending after the final cancel_sync"
        );
        assert!(!s.det.overlapped(), "item {i} ran concurrently with itself");
        assert_eq!(
            armed,
            runs + cancelled + stolen,
            "item {i}: instances lost or duplicated (armed {armed}, runs {runs}, cancelled \
             {cancelled}, stolen {stolen})"
        );
    }
    with_deadline("destroy", move || wq.destroy());
    let took = start.elapsed();
    eprintln!("stress took {took:?}");
    assert!(took < Duration::from_secs(20), "stress took {took:?}");
}
