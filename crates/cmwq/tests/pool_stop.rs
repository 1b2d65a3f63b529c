//! Destroying the last queue of an unbound pool stops every worker, busy ones included: a
//! worker killed while it finishes its last item leaves the idle list on its way out, so the
//! pool's idle count and list stay equal to the idle slots (debug builds check, and count
//! violations in `cmwq::invariant_violations`).
//!
//! Its own test binary: no other queue may share the pool, or destroying the queue would
//! not stop the pool's workers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cmwq::{Work, Workqueue, WqFlags};

#[test]
fn stopping_busy_workers_keeps_the_idle_list_exact() {
    let done = Arc::new(AtomicUsize::new(0));
    for round in 0..200 {
        // A private unbound pool (attributes no other queue has), new each round.
        let wq = Workqueue::builder(&format!("pool_stop{round}"))
            .flags(WqFlags::UNBOUND)
            .nice(1)
            .build()
            .expect("a valid queue");
        let items: Vec<Work> = (0..8)
            .map(|_| {
                let done = done.clone();
                Work::new(move |_| {
                    done.fetch_add(1, Ordering::Relaxed);
                })
            })
            .collect();
        for item in &items {
            wq.queue(item);
        }
        // Destroy at once: it drains, then stops workers that may still be on their way
        // from their last item back to idle.
        wq.destroy();
    }
    assert_eq!(done.load(Ordering::Relaxed), 200 * 8);
    assert_eq!(cmwq::invariant_violations(), 0);
}
