//! `work_on_cpu` keeps its promise when no worker thread can be created: its private
//! `MEM_RECLAIM` queue's rescuer runs the closure, called from a plain thread or from an
//! item that is itself being rescued on the same CPU's pool.
//!
//! Fault injection is process-wide, so the scenario runs in a child process (this test
//! binary re-executed with an environment variable), as in `tests/rescuer.rs`.

mod common;

use std::sync::{mpsc, Mutex};
use std::time::Duration;

use cmwq::{Work, Workqueue, WqFlags};

const CHILD: &str = "CMWQ_PERCPU_RESCUER_CHILD";
const NAME: &str = "work_on_cpu_runs_through_its_rescuer_while_worker_creation_fails";

#[test]
fn work_on_cpu_runs_through_its_rescuer_while_worker_creation_fails() {
    if std::env::var_os(CHILD).is_some() {
        // On failure, exit before unwinding: drops would wait for items that cannot run.
        std::panic::set_hook(Box::new(|info| {
            println!("CHILD FAILED: {info}");
            std::process::exit(1);
        }));
        child();
        println!("CHILD OK");
        // Exit without running destructors (the queues would drain through rescuers).
        std::process::exit(0);
    }
    common::run_in_child(NAME, CHILD, Duration::from_secs(60));
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

fn child() {
    // Before any worker exists: every pool fails to make its first one.
    cmwq::fail_worker_creation(true);
    let cpu = cmwq::online_cpus()[0];

    // From a plain thread.
    let name = cmwq::work_on_cpu(cpu, thread_name).unwrap();
    assert!(name.starts_with("kworker/R-"), "ran on {name}");

    // From an item of another MEM_RECLAIM queue on the same CPU, itself run by its rescuer:
    // no worker of that pool exists, and none can be made.
    let other = Workqueue::new("caller", WqFlags::MEM_RECLAIM, 0).unwrap();
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let caller = Work::new(move |_| {
        let outer = thread_name();
        let inner = cmwq::work_on_cpu(cpu, thread_name);
        let _ = tx.lock().unwrap().send((outer, inner));
    });
    other.queue_on(cpu, &caller).unwrap();
    let (outer, inner) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("work_on_cpu from a rescued item hung");
    let inner = inner.unwrap();
    assert!(outer.starts_with("kworker/R-"), "caller ran on {outer}");
    assert!(inner.starts_with("kworker/R-"), "closure ran on {inner}");
    assert_ne!(
        outer, inner,
        "two rescuers: the caller's queue's and work_on_cpu's"
    );
    std::mem::forget(other);
}
