//! A worker runs at its pool's nice value, whoever made it. A new thread starts at its
//! creator's nice, and a pool's first worker is made on the thread that queues the first
//! item (later ones by the pool's workers or by the monitor, which runs at nice -20), so a
//! worker that kept its creator's value would run at the queueing thread's nice here.
//!
//! Its own test binary: the pools must be new, so that this thread makes their first worker.

mod common;

use std::sync::{Arc, Mutex};

use cmwq::{Work, Workqueue, WqFlags};
use common::{current_os_nice, unique, with_deadline};

/// Sets the calling thread's nice value.
fn set_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority has no memory-safety preconditions; `gettid` names this thread.
    let rc = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::syscall(libc::SYS_gettid) as libc::id_t,
            nice,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether a thread of this process may lower its nice value again (CAP_SYS_NICE, or an
/// RLIMIT_NICE that allows it): without that, a worker cannot leave a creator's higher value.
fn may_lower_nice() -> bool {
    std::thread::spawn(|| set_nice(4).is_ok() && set_nice(0).is_ok())
        .join()
        .unwrap()
}

/// The OS nice value of the worker that runs an item of `wq`.
fn worker_nice(wq: &Workqueue) -> i32 {
    let out = Arc::new(Mutex::new(None));
    let item = {
        let out = out.clone();
        Work::new(move |_| *out.lock().unwrap() = Some(current_os_nice()))
    };
    assert!(wq.queue(&item));
    let i = item.clone();
    with_deadline("flush", move || i.flush());
    let nice = out.lock().unwrap().expect("the item ran");
    nice
}

#[test]
fn workers_take_their_pools_nice_not_the_queueing_threads() {
    if !may_lower_nice() {
        eprintln!("skipped: this process may not lower a thread's nice value");
        return;
    }
    std::thread::spawn(|| {
        set_nice(4).unwrap();
        // A fresh unbound pool at the default nice: its first worker is made here.
        let unbound = Workqueue::builder(&unique("nice-ub"))
            .flags(WqFlags::UNBOUND)
            .build()
            .unwrap();
        assert_eq!(
            worker_nice(&unbound),
            0,
            "unbound worker made by a nice-4 thread"
        );
        // And one with its own nice value, below the creator's.
        let two = Workqueue::builder(&unique("nice-ub2"))
            .flags(WqFlags::UNBOUND)
            .nice(2)
            .build()
            .unwrap();
        assert_eq!(
            worker_nice(&two),
            2,
            "nice-2 worker made by a nice-4 thread"
        );
        // A per-CPU pool's first worker too.
        let percpu = Workqueue::new(&unique("nice-percpu"), WqFlags::empty(), 0).unwrap();
        assert_eq!(
            worker_nice(&percpu),
            0,
            "per-CPU worker made by a nice-4 thread"
        );
        assert_eq!(
            current_os_nice(),
            4,
            "the queueing thread keeps its own value"
        );
    })
    .join()
    .unwrap();
}
