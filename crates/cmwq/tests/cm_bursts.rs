//! Repeated bursts of items that sleep before they use the CPU. Every burst starts with all
//! of its workers asleep, which by the kernel's rule (nobody runs, work waits) asks for more
//! workers until the first sleeper wakes; the pool's idle workers from the last burst are
//! woken first, and without a measure of what the pool needs, each burst would add as many
//! threads again. The monitor's Little's-law estimate (`cm_enough`) slows creation once as
//! many workers hold items as kept the CPU busy last time.
//!
//! Alone in its test binary: its thread counts must not see other tests' load.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cmwq::{Work, Workqueue, WqFlags};
use common::{burn, threads, wait_until, DEADLINE};

/// Live workers of the normal-priority pool of `cpu` (`kworker/<cpu>:<id>`; the high-priority
/// pool's names end in `H`).
fn pool_workers(cpu: usize) -> usize {
    let prefix = format!("kworker/{cpu}:");
    threads()
        .iter()
        .filter(|(_, comm)| comm.starts_with(&prefix) && !comm.ends_with('H'))
        .count()
}

#[test]
fn repeated_sleeping_bursts_stop_adding_workers() {
    let wq = Workqueue::new("bursts", WqFlags::empty(), 0).unwrap();
    let cpu = cmwq::online_cpus()[0];
    // Each item sleeps 2 ms (announced), then uses 100 us of CPU: about 20 sleepers keep the
    // CPU busy, and a burst of 300 items lasts about 30 ms.
    let done = Arc::new(AtomicUsize::new(0));
    let items: Vec<Work> = (0..300)
        .map(|_| {
            let done = done.clone();
            Work::new(move |_| {
                cmwq::blocking(|| std::thread::sleep(Duration::from_millis(2)));
                burn(Duration::from_micros(100));
                done.fetch_add(1, Ordering::Relaxed);
            })
        })
        .collect();
    let mut after = vec![];
    for burst in 1..=6 {
        done.store(0, Ordering::Relaxed);
        for w in &items {
            assert!(wq.queue_on(cpu, w).unwrap(), "burst {burst}: queued");
        }
        assert!(
            wait_until(DEADLINE, || done.load(Ordering::Relaxed) == items.len()),
            "burst {burst} did not finish: {} of {} ran",
            done.load(Ordering::Relaxed),
            items.len()
        );
        after.push(pool_workers(cpu));
    }
    // The first burst builds the pool (about 20 workers and its estimate); the second may
    // top it up. From then on each burst finds enough idle workers: a burst adds a few at
    // most (creation goes on, 16 times slower, past the estimate): bursts 3-6 added 5 here,
    // 6-11 with two busy loops on the 2 CPUs. Without the estimate every burst added about 7,
    // 27-29 in all.
    let growth = after[5] - after[1];
    assert!(
        growth <= 18,
        "bursts 3-6 added {growth} workers (after each burst: {after:?})"
    );
    wq.destroy();
}
