//! A worker gives up the references it keeps to items it ran only while it holds no item:
//! the `Drop` of such a reference is user code and may wait for anything the engine does,
//! including an item that this very worker would run next.
//!
//! Item `a` owns the last handle of workqueue `q2` once the test has dropped its own; `b`, an
//! item of `q2`, is queued on the same CPU behind `a`, so the worker that runs `a` takes `b`
//! next. When `a`'s reference goes, its `Drop` destroys `q2`, which waits for `b`. Were that
//! reference given up while the worker held `b` (in `b`'s unlocked window, say), the destroy
//! would wait for ever on the worker running it.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cmwq::{Work, Workqueue, WqFlags};
use common::{wait_for, Latch};

#[test]
fn a_kept_reference_whose_drop_destroys_the_next_items_queue_does_not_hang() {
    for round in 0..20 {
        let q1 = Workqueue::new("deferred_q1", WqFlags::PERCPU, 0).expect("q1");
        let q2 = Workqueue::new("deferred_q2", WqFlags::PERCPU, 0).expect("q2");
        let b_ran = Arc::new(AtomicBool::new(false));
        let b = {
            let b_ran = b_ran.clone();
            Work::new(move |_| b_ran.store(true, Ordering::SeqCst))
        };
        let started = Arc::new(Latch::new());
        let go = Arc::new(AtomicBool::new(false));
        let a = {
            let (started, go) = (started.clone(), go.clone());
            // Owns the last handle of q2 once the test drops its own.
            let q2 = q2.clone();
            Work::new(move |_| {
                let _keep = &q2;
                started.open();
                // Spin (not sleep): the worker stays the CPU's running one, so `b` waits for
                // it instead of going to another worker.
                while !go.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
            })
        };
        assert!(q1.queue_on(0, &a).expect("cpu 0"));
        started.wait();
        assert!(q2.queue_on(0, &b).expect("cpu 0"));
        drop(q2);
        drop(a);
        go.store(true, Ordering::SeqCst);
        wait_for(
            &format!("round {round}: b ran and q2 was destroyed"),
            || b_ran.load(Ordering::SeqCst),
        );
        q1.flush();
    }
}
