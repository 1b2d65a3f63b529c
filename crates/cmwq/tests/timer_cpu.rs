//! Delayed work armed without a CPU on a bound (per-CPU) queue runs on the CPU that armed it
//! (the kernel queues it where its timer fires, which is the arming CPU), not on the CPU of
//! whichever thread fires the timer.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmwq::time::pause;
use cmwq::{current_worker, online_cpus, system_wq, DelayedWork, Workqueue, WqFlags};
use common::{unique, wait_for};

/// Restricts the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    // SAFETY: an all-zero `cpu_set_t` is a valid empty set; the set outlives the call.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity({cpu})");
    }
    // SAFETY: no preconditions.
    let now = unsafe { libc::sched_getcpu() };
    assert_eq!(now, cpu as i32, "not moved to cpu {cpu}");
}

#[test]
fn delayed_work_without_a_cpu_runs_on_the_arming_cpu() {
    let cpus = online_cpus();
    if cpus.len() < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let dw = {
        let seen = seen.clone();
        DelayedWork::new(move |_| {
            let w = current_worker().expect("runs on a worker");
            seen.lock().unwrap().push(w.cpu);
        })
    };
    let wq = Workqueue::new(&unique("tcpu"), WqFlags::empty(), 0).unwrap();
    let clock = pause();
    let mut expected = Vec::new();
    for (i, &cpu) in cpus.iter().enumerate() {
        let other = cpus[(i + 1) % cpus.len()];
        let arms: [fn(&Workqueue, &DelayedWork) -> bool; 3] = [
            |wq: &Workqueue, dw: &DelayedWork| wq.queue_delayed(dw, Duration::from_millis(10)),
            |wq: &Workqueue, dw: &DelayedWork| !wq.mod_delayed(dw, Duration::from_millis(10)),
            |_: &Workqueue, dw: &DelayedWork| {
                system_wq().queue_delayed(dw, Duration::from_millis(10))
            },
        ];
        for arm in arms {
            // Armed on `cpu`, fired by this thread on `other`.
            pin_to(cpu);
            assert!(arm(&wq, &dw));
            pin_to(other);
            clock.advance(Duration::from_millis(10));
            expected.push(Some(cpu));
            wait_for("the item to run", || {
                seen.lock().unwrap().len() == expected.len()
            });
            wait_for("the item to be idle", || !dw.is_pending());
        }
    }
    assert_eq!(*seen.lock().unwrap(), expected);
}
