//! The per-CPU helpers: `work_on_cpu`, `schedule_on_each_cpu` and `Workqueue::queue_node`.
//!
//! Every wait has a deadline (`with_deadline`, `recv_timeout`): a hang fails the test.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use cmwq::{current_worker, online_cpus, Error, Work, Workqueue, WqFlags};
use common::{unique, with_deadline, DEADLINE};

/// The CPU the calling thread runs on, as the OS says.
fn os_cpu() -> usize {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    assert!(cpu >= 0, "sched_getcpu failed");
    cpu as usize
}

/// The CPU of the per-CPU pool running the caller (`None` off a worker or on an unbound one).
fn worker_cpu() -> Option<usize> {
    current_worker().and_then(|w| w.cpu)
}

/// The payload of a caught panic as text.
fn message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<not a string>")
}

#[test]
fn work_on_cpu_returns_the_value_computed_on_that_cpu() {
    with_deadline("work_on_cpu on every CPU", || {
        let label = String::from("borrowed from the caller's stack");
        for cpu in online_cpus() {
            let (len, worker, os) =
                cmwq::work_on_cpu(cpu, || (label.len(), worker_cpu(), os_cpu())).unwrap();
            assert_eq!(len, label.len());
            assert_eq!(worker, Some(cpu), "current_worker() names the pool's CPU");
            assert_eq!(os, cpu, "the worker runs on that CPU");
        }
    });
}

#[test]
fn work_on_cpu_moves_a_borrowed_mutable_result_out() {
    with_deadline("work_on_cpu with a mutable borrow", || {
        let mut log = Vec::new();
        let cpu = *online_cpus().last().unwrap();
        let out = cmwq::work_on_cpu(cpu, || {
            log.push(cpu);
            vec![1u8; 3]
        })
        .unwrap();
        assert_eq!(out, [1, 1, 1]);
        assert_eq!(log, [cpu]);
    });
}

#[test]
fn work_on_cpu_rejects_a_cpu_that_is_not_online_and_does_not_run_f() {
    let ran = AtomicBool::new(false);
    let beyond = online_cpus().iter().max().unwrap() + 1;
    for cpu in [beyond, usize::MAX] {
        let r = cmwq::work_on_cpu(cpu, || ran.store(true, Ordering::SeqCst));
        assert_eq!(r, Err(Error::InvalidCpu { cpu }));
    }
    assert!(!ran.load(Ordering::SeqCst));
}

#[test]
fn a_panic_in_work_on_cpu_reaches_the_caller_with_its_payload() {
    with_deadline("work_on_cpu that panics", || {
        let reported = Arc::new(AtomicUsize::new(0));
        let r = reported.clone();
        cmwq::set_panic_hook(move |_| {
            r.fetch_add(1, Ordering::SeqCst);
        });
        let cpu = online_cpus()[0];
        let finished = AtomicBool::new(false);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            cmwq::work_on_cpu(cpu, || {
                finished.store(true, Ordering::SeqCst);
                panic!("boom on cpu {cpu}");
            })
        }))
        .expect_err("the panic propagates");
        assert_eq!(message(&*caught), format!("boom on cpu {cpu}"));
        assert!(
            finished.load(Ordering::SeqCst),
            "the closure ran before the panic came back"
        );
        // The helper still works afterwards.
        assert_eq!(cmwq::work_on_cpu(cpu, || 7), Ok(7));
        // The caller got the panic: nothing went to the hook (no item of this file panics
        // unjoined).
        assert_eq!(reported.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn work_on_cpu_from_an_item_on_that_cpus_pool_does_not_hang() {
    for cpu in online_cpus() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let caller = Work::new(move |_| {
            let outer = worker_cpu();
            let inner = cmwq::work_on_cpu(cpu, || (worker_cpu(), os_cpu()));
            let _ = tx.lock().unwrap().send((outer, inner));
        });
        cmwq::system_wq().queue_on(cpu, &caller).unwrap();
        let (outer, inner) = rx
            .recv_timeout(DEADLINE)
            .unwrap_or_else(|_| panic!("work_on_cpu({cpu}) from cpu {cpu}'s own pool hung"));
        assert_eq!(outer, Some(cpu));
        assert_eq!(inner, Ok((Some(cpu), cpu)));
        with_deadline("flush the caller", move || caller.flush());
    }
}

#[test]
fn nested_work_on_cpu_on_the_same_cpu_does_not_hang() {
    with_deadline("work_on_cpu inside work_on_cpu", || {
        let cpu = online_cpus()[0];
        let depth = cmwq::work_on_cpu(cpu, || {
            cmwq::work_on_cpu(cpu, || cmwq::work_on_cpu(cpu, worker_cpu).map(|c| (c, 3)))
        });
        assert_eq!(depth, Ok(Ok(Ok((Some(cpu), 3)))));
    });
}

#[test]
fn work_on_cpu_from_an_item_of_a_one_at_a_time_per_cpu_queue_does_not_hang() {
    // The caller's own queue has room for one item per CPU: the helper must not need it.
    let wq = Workqueue::new(&unique("woc-max1"), WqFlags::PERCPU, 1).unwrap();
    let cpu = online_cpus()[0];
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let caller = Work::new(move |_| {
        let _ = tx.lock().unwrap().send(cmwq::work_on_cpu(cpu, worker_cpu));
    });
    wq.queue_on(cpu, &caller).unwrap();
    let got = rx.recv_timeout(DEADLINE).expect("work_on_cpu hung");
    assert_eq!(got, Ok(Some(cpu)));
    with_deadline("destroy", move || wq.destroy());
}

#[test]
fn schedule_on_each_cpu_runs_once_on_every_cpu_and_waits_for_all() {
    with_deadline("schedule_on_each_cpu", || {
        let cpus = online_cpus();
        let max = *cpus.iter().max().unwrap();
        // Borrowed by the closure: the call must not return before every run ended.
        let runs: Vec<AtomicUsize> = (0..=max).map(|_| AtomicUsize::new(0)).collect();
        let misplaced = AtomicUsize::new(0);
        cmwq::schedule_on_each_cpu(|| {
            let cpu = worker_cpu().expect("runs on a per-CPU worker");
            if os_cpu() != cpu {
                misplaced.fetch_add(1, Ordering::SeqCst);
            }
            runs[cpu].fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        for (cpu, n) in runs.iter().enumerate() {
            let want = usize::from(cpus.contains(&cpu));
            assert_eq!(n.load(Ordering::SeqCst), want, "runs on cpu {cpu}");
        }
        assert_eq!(misplaced.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn schedule_on_each_cpu_reraises_a_panic_after_every_cpu_finished() {
    with_deadline("schedule_on_each_cpu with a panic", || {
        let cpus = online_cpus();
        let first = cpus[0];
        let others = AtomicUsize::new(0);
        let caught = catch_unwind(AssertUnwindSafe(|| {
            cmwq::schedule_on_each_cpu(|| {
                if worker_cpu() == Some(first) {
                    panic!("first cpu fails");
                }
                others.fetch_add(1, Ordering::SeqCst);
            })
        }))
        .expect_err("the panic propagates");
        assert_eq!(message(&*caught), "first cpu fails");
        assert_eq!(others.load(Ordering::SeqCst), cpus.len() - 1);
    });
}

#[test]
fn schedule_on_each_cpu_from_an_item_of_system_wq_does_not_hang() {
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let caller = Work::new(move |_| {
        let count = AtomicUsize::new(0);
        let r = cmwq::schedule_on_each_cpu(|| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        let _ = tx.lock().unwrap().send((r, count.into_inner()));
    });
    cmwq::system_wq()
        .queue_on(online_cpus()[0], &caller)
        .unwrap();
    let (r, count) = rx
        .recv_timeout(DEADLINE)
        .expect("schedule_on_each_cpu hung");
    assert_eq!(r, Ok(()));
    assert_eq!(count, online_cpus().len());
}

/// The CPUs of NUMA node 0 as sysfs lists them (every CPU without the node directory).
fn node0_cpus() -> Vec<usize> {
    let Ok(list) = std::fs::read_to_string("/sys/devices/system/node/node0/cpulist") else {
        return online_cpus();
    };
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => cpus.push(part.parse().unwrap()),
        }
    }
    cpus
}

#[test]
fn queue_node_puts_the_item_on_a_cpu_of_node_0() {
    let node0: Vec<usize> = node0_cpus()
        .into_iter()
        .filter(|c| online_cpus().contains(c))
        .collect();
    if node0.is_empty() {
        eprintln!("skipped: no CPU of node 0 is in this process's affinity mask");
        return;
    }
    let wq = Workqueue::new(&unique("node"), WqFlags::PERCPU, 0).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let item = Work::new(move |_| s.lock().unwrap().push((worker_cpu(), os_cpu())));
    for _ in 0..8 {
        assert_eq!(wq.queue_node(0, &item), Ok(true));
        with_deadline("flush", {
            let item = item.clone();
            move || item.flush()
        });
    }
    for &(worker, os) in seen.lock().unwrap().iter() {
        let worker = worker.expect("a per-CPU worker");
        assert!(
            node0.contains(&worker),
            "cpu {worker} is not on node 0 {node0:?}"
        );
        assert_eq!(os, worker);
    }
    assert_eq!(seen.lock().unwrap().len(), 8);
    with_deadline("destroy", move || wq.destroy());
}

#[test]
fn queue_node_on_an_unbound_queue_queues_as_queue_does() {
    let wq = Workqueue::new(&unique("node-unbound"), WqFlags::UNBOUND, 0).unwrap();
    let (item, runs) = common::counting_item();
    assert_eq!(wq.queue_node(0, &item), Ok(true));
    with_deadline("flush", move || item.flush());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    with_deadline("destroy", move || wq.destroy());
}

#[test]
fn queue_node_rejects_a_node_that_does_not_exist_and_queues_nothing() {
    let (item, runs) = common::counting_item();
    for wq in [cmwq::system_wq(), cmwq::system_unbound_wq()] {
        for node in [1 << 20, usize::MAX] {
            assert_eq!(wq.queue_node(node, &item), Err(Error::InvalidNode { node }));
            assert!(!item.is_pending());
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[test]
fn try_queue_node_reports_a_refusal_that_queue_node_logs() {
    for flags in [WqFlags::PERCPU, WqFlags::UNBOUND] {
        let wq = Workqueue::new(&unique("node-refused"), flags, 0).unwrap();
        let leftover = wq.clone();
        with_deadline("destroy", move || wq.destroy());
        let (item, runs) = common::counting_item();
        assert_eq!(leftover.queue_node(0, &item), Ok(false));
        assert!(matches!(
            leftover.try_queue_node(0, &item),
            Err(Error::Destroyed { .. })
        ));
        let node = 1 << 20;
        assert_eq!(
            leftover.try_queue_node(node, &item),
            Err(Error::InvalidNode { node })
        );
        assert!(!item.is_pending());
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }
}
