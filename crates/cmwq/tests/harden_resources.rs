//! Issue 11, resources: defect 7 (memory and ids grow with every workqueue ever created),
//! defect 8 (the per-pool worker cap deadlocks items that wait for one another), and from 9:
//! a failed worker creation whose demand went away keeps the monitor from ever parking.
//!
//! Each scenario runs in its own child process (`harden_util::isolated`): they measure the
//! process (its RSS, its threads' context switches) or leave hundreds of threads behind.

mod common;
mod harden_util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cmwq::{current_worker, online_cpus, Work, Workqueue, WqFlags};
use common::{unique, wait_until, Latch};
use harden_util::{
    assert_no_failures, isolated, must_return, rss_bytes, voluntary_switches, PROMPT,
};

// ===== defect 7 =====

fn churn(n: usize, flags: WqFlags) {
    for _ in 0..n {
        Workqueue::new("hr-churn", flags, 0)
            .expect("create workqueue")
            .destroy();
    }
}

/// Per-CPU queues add a pool-workqueue slot to every CPU's pool; destroying one must let the
/// slot be reused, so creating and destroying queues in a loop keeps memory flat.
#[test]
fn per_cpu_queue_churn_does_not_grow_memory() {
    isolated("per_cpu_queue_churn_does_not_grow_memory", || {
        // Warm up the engine and the allocator.
        churn(2_000, WqFlags::empty());
        let before = rss_bytes();
        let start = Instant::now();
        const N: usize = 30_000;
        churn(N, WqFlags::empty());
        let grown = rss_bytes().saturating_sub(before);
        eprintln!(
            "{N} per-CPU create/destroy cycles on {} CPUs took {:?}; RSS grew by {} KiB",
            online_cpus().len(),
            start.elapsed(),
            grown / 1024
        );
        assert!(
            grown < 3 * 1024 * 1024,
            "defect 7: creating and destroying {N} per-CPU workqueues grew RSS by {} KiB (bound \
             3 MiB): pool-workqueue slots are never reused",
            grown / 1024
        );
    });
}

/// Same for unbound queues sharing one unbound pool (kept alive by a long-lived queue with
/// the same attributes): each new queue adds a slot to that pool.
#[test]
fn unbound_queue_churn_on_a_shared_pool_does_not_grow_memory() {
    isolated(
        "unbound_queue_churn_on_a_shared_pool_does_not_grow_memory",
        || {
            let keep = Workqueue::new(&unique("hr-keep"), WqFlags::UNBOUND, 0).unwrap();
            churn(2_000, WqFlags::UNBOUND);
            let before = rss_bytes();
            const N: usize = 40_000;
            churn(N, WqFlags::UNBOUND);
            let grown = rss_bytes().saturating_sub(before);
            eprintln!(
                "{N} unbound create/destroy cycles: RSS grew by {} KiB",
                grown / 1024
            );
            assert!(
                grown < 3 * 1024 * 1024,
                "defect 7: creating and destroying {N} unbound workqueues sharing a pool grew \
                 RSS by {} KiB (bound 3 MiB): the pool's slots are never reused",
                grown / 1024
            );
            keep.destroy();
        },
    );
}

/// Unbound queues with attributes no other queue has get a pool of their own, destroyed with
/// them; the pool ids (visible to items through `current_worker().pool_id`) must be reused,
/// not grow with every pool ever made.
#[test]
fn unbound_pool_ids_are_reused() {
    isolated("unbound_pool_ids_are_reused", || {
        let cpus = online_cpus();
        let mut max_id = 0;
        let mut ids = std::collections::BTreeSet::new();
        const CYCLES: usize = 1_000;
        for i in 0..CYCLES {
            let wq = Workqueue::builder(&unique("hr-ids"))
                .flags(WqFlags::UNBOUND)
                .nice(5 + (i % 5) as i32)
                .cpumask([cpus[i % cpus.len()]])
                .build()
                .unwrap();
            let seen = Arc::new(AtomicUsize::new(usize::MAX));
            let ran = Arc::new(Latch::new());
            let item = {
                let (seen, ran) = (seen.clone(), ran.clone());
                Work::new(move |_| {
                    let id = current_worker().map_or(usize::MAX - 1, |w| w.pool_id);
                    seen.store(id, Ordering::SeqCst);
                    ran.open();
                })
            };
            assert!(wq.queue(&item));
            assert!(ran.wait_timeout(PROMPT), "cycle {i}: the item did not run");
            let id = seen.load(Ordering::SeqCst);
            max_id = max_id.max(id);
            ids.insert(id);
            must_return("destroy", PROMPT, move || wq.destroy());
        }
        assert!(
            max_id < 64,
            "defect 7: after {CYCLES} create/destroy cycles of unbound queues with their own \
             attributes, pool ids reached {max_id} ({} distinct): unbound pool ids are never \
             reused",
            ids.len()
        );
    });
}

// ===== defect 8 =====

/// A barrier whose waiters give up after a deadline (so a failing run leaves no thread stuck).
struct TimedBarrier {
    n: usize,
    arrived: Mutex<usize>,
    cv: Condvar,
}

impl TimedBarrier {
    fn wait(&self, limit: Duration) -> bool {
        let mut g = self.arrived.lock().unwrap();
        *g += 1;
        if *g >= self.n {
            self.cv.notify_all();
            return true;
        }
        let (g, _) = self
            .cv
            .wait_timeout_while(g, limit, |a| *a < self.n)
            .unwrap();
        *g >= self.n
    }

    fn arrived(&self) -> usize {
        *self.arrived.lock().unwrap()
    }
}

#[test]
fn six_hundred_items_waiting_for_each_other_on_one_pool_all_finish() {
    isolated(
        "six_hundred_items_waiting_for_each_other_on_one_pool_all_finish",
        || {
            const N: usize = 600;
            const LIMIT: Duration = Duration::from_secs(60);
            let cpu = online_cpus()[0];
            let wq = Workqueue::new(&unique("hr-barrier"), WqFlags::empty(), 0).unwrap();
            let barrier = Arc::new(TimedBarrier {
                n: N,
                arrived: Mutex::new(0),
                cv: Condvar::new(),
            });
            let passed = Arc::new(AtomicUsize::new(0));
            let items: Vec<Work> = (0..N)
                .map(|_| {
                    let (barrier, passed) = (barrier.clone(), passed.clone());
                    Work::new(move |_| {
                        if cmwq::blocking(|| barrier.wait(LIMIT + Duration::from_secs(5))) {
                            passed.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            let start = Instant::now();
            for item in &items {
                assert!(wq.queue_on(cpu, item).unwrap());
            }
            let done = wait_until(LIMIT, || passed.load(Ordering::SeqCst) >= N);
            eprintln!(
                "{} of {N} items reached the barrier, {} passed it, in {:?}",
                barrier.arrived(),
                passed.load(Ordering::SeqCst),
                start.elapsed()
            );
            assert!(
                done,
                "defect 8: {N} items of one per-CPU queue waiting for each other (a barrier, \
                 inside blocking()) did not all finish within {LIMIT:?}: only {} reached the \
                 barrier (the pool stops at max_workers_per_pool = {} workers and nothing \
                 rescues a queue without MEM_RECLAIM)",
                barrier.arrived(),
                cmwq::config().max_workers_per_pool
            );
        },
    );
}

// ===== defect 9: a failed creation whose demand went away =====

#[test]
fn monitor_parks_after_a_failed_creation_whose_demand_went_away() {
    isolated(
        "monitor_parks_after_a_failed_creation_whose_demand_went_away",
        || {
            let cpu = online_cpus()[0];
            let wq = Workqueue::new(&unique("hr-fail"), WqFlags::empty(), 0).unwrap();
            // The CPU's pool has no worker yet: queueing tries to make the first one, and
            // that fails.
            cmwq::fail_worker_creation(true);
            let (item, _, runs) = harden_util::signalling_item();
            assert!(wq.queue_on(cpu, &item).unwrap());
            std::thread::sleep(Duration::from_millis(50));
            // The demand goes away before any creation succeeds.
            assert!(
                item.cancel(),
                "the item ran although no worker could be made"
            );
            cmwq::fail_worker_creation(false);
            assert_eq!(runs.load(Ordering::SeqCst), 0);

            // Nothing is queued anywhere: the engine must go quiet. Count how often the
            // process's threads go to sleep over one second once it has settled.
            std::thread::sleep(Duration::from_millis(500));
            let before = voluntary_switches();
            std::thread::sleep(Duration::from_secs(1));
            let switches = voluntary_switches().saturating_sub(before);
            eprintln!("voluntary context switches in 1 s of idleness: {switches}");
            let mut failures = Vec::new();
            if switches > 50 {
                failures.push(format!(
                    "defect 9: with nothing queued, the process's threads slept {switches} \
                     times in one second (bound 50): the monitor never parks, because a \
                     failed worker creation whose demand went away stays recorded \
                     (creation_failed_since is cleared only by a successful creation)"
                ));
            }
            // And the pool still works.
            failures.extend(harden_util::pool_alive_failures(
                &wq,
                cpu,
                "after the failure",
            ));
            assert_no_failures(&failures);
        },
    );
}
