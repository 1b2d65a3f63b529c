//! A worker runs at its pool's nice value, whoever made it. A new thread starts at its
//! creator's nice, and a pool's first worker is made on the thread that queues the first
//! item (later ones by the pool's workers or by the monitor, which runs at nice -20), so a
//! worker that kept its creator's value would run at the queueing thread's nice here.
//!
//! High-priority workers also ask the scheduler for a short time slice.
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

/// The first version (48 bytes) of the kernel's `struct sched_attr`.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// The calling thread's `sched_runtime`: its time slice on kernels with custom slices (6.12+).
fn current_slice_ns() -> u64 {
    let mut attr = SchedAttr::default();
    // SAFETY: `attr` is writable and as large as the size passed; pid 0 is this thread.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            std::mem::size_of::<SchedAttr>() as u32,
            0u32,
        )
    };
    assert_eq!(rc, 0, "sched_getattr: {}", std::io::Error::last_os_error());
    attr.runtime
}

/// Whether this kernel keeps a normal thread's slice as set (EEVDF custom slices).
fn kernel_has_custom_slices() -> bool {
    std::thread::spawn(|| {
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            runtime: 200_000,
            ..SchedAttr::default()
        };
        // SAFETY: a valid `struct sched_attr` of the stated size; pid 0 is this thread.
        let rc =
            unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
        rc == 0 && current_slice_ns() == 200_000
    })
    .join()
    .unwrap()
}

/// What `f` returns on the worker that runs an item of `wq`.
fn on_worker<T: Send + 'static>(wq: &Workqueue, f: fn() -> T) -> T {
    let out = Arc::new(Mutex::new(None));
    let item = {
        let out = out.clone();
        Work::new(move |_| *out.lock().unwrap() = Some(f()))
    };
    assert!(wq.queue(&item));
    let i = item.clone();
    with_deadline("flush", move || i.flush());
    let v = out.lock().unwrap().take().expect("the item ran");
    v
}

#[test]
fn high_priority_workers_ask_for_a_short_slice() {
    if !kernel_has_custom_slices() || !may_lower_nice() {
        eprintln!("skipped: no custom slices on this kernel, or no negative nice for this process");
        return;
    }
    let hi = Workqueue::new(&unique("slice-hi"), WqFlags::HIGHPRI, 0).unwrap();
    assert_eq!(
        on_worker(&hi, current_slice_ns),
        100_000,
        "HIGHPRI worker's slice, ns"
    );
    assert_eq!(on_worker(&hi, current_os_nice), -20);
    let normal = Workqueue::new(&unique("slice-normal"), WqFlags::empty(), 0).unwrap();
    assert_ne!(
        on_worker(&normal, current_slice_ns),
        100_000,
        "a normal worker keeps the default slice"
    );
}

/// The OS nice value of the worker that runs an item of `wq`.
fn worker_nice(wq: &Workqueue) -> i32 {
    on_worker(wq, current_os_nice)
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
