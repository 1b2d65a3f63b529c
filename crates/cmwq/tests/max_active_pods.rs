//! An unbound queue's `max_active` holds for the whole queue, split between NUMA nodes (the
//! kernel's 6.9 rules), even where its scope cuts the CPUs into several pods: the pods of one
//! node share the node's slots. This binary makes the default scope `Cpu`, one pod per CPU;
//! the detailed split is tested on fake layouts in `tests/node_active.rs`.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cmwq::{AffinityScope, Config, Work, Workqueue, WqFlags};
use common::{wait_for, Latch};

fn setup() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        cmwq::configure(Config {
            default_affinity_scope: AffinityScope::Cpu,
            ..Config::default()
        })
        .expect("configure");
    });
}

/// Queues one blocker item on each CPU; returns how many started before the gate opened.
fn started_at_once(wq: &Workqueue) -> usize {
    let gate = Arc::new(Latch::new());
    let _open = common::open_on_drop(&[&gate]);
    let started = Arc::new(AtomicUsize::new(0));
    let cpus = cmwq::online_cpus();
    let items: Vec<Work> = cpus
        .iter()
        .map(|_| {
            let (gate, started) = (gate.clone(), started.clone());
            Work::new(move |_| {
                started.fetch_add(1, Ordering::SeqCst);
                gate.wait_blocking();
            })
        })
        .collect();
    for (cpu, w) in cpus.iter().zip(&items) {
        assert!(wq.queue_on(*cpu, w).expect("online cpu"));
    }
    wait_for("the first item to start", || {
        started.load(Ordering::SeqCst) >= 1
    });
    // Either all of them start (several pods) or only one may (one pod, limit 1): wait for
    // the inactive list to fill or for every item to start.
    wait_for("the items to settle", || {
        let s = wq.stats();
        started.load(Ordering::SeqCst) + s.inactive == items.len()
    });
    let n = started.load(Ordering::SeqCst);
    gate.open();
    wq.flush();
    n
}

/// How many items a queue with `max_active` 1 may run at once: one per NUMA node (each node
/// gets at least `min_active`, here 1).
fn nodes() -> usize {
    cmwq::topology().node_groups().len()
}

#[test]
fn a_queue_with_its_own_limit_and_the_default_scope_keeps_the_limit_queue_wide() {
    setup();
    if cmwq::online_cpus().len() < 2 {
        eprintln!("needs two CPUs");
        return;
    }
    let wq = Workqueue::new("pods-limit", WqFlags::UNBOUND, 1).unwrap();
    // The configured scope: no longer replaced by `System` for a queue with its own limit.
    assert_eq!(wq.attrs().affinity_scope, AffinityScope::Default);
    assert_eq!(
        started_at_once(&wq),
        nodes(),
        "max_active 1 ran more than one item per node"
    );
}

#[test]
fn a_queue_without_a_limit_uses_the_default_scopes_pods() {
    setup();
    if cmwq::online_cpus().len() < 2 {
        eprintln!("needs two CPUs");
        return;
    }
    let wq = Workqueue::new("pods-default", WqFlags::UNBOUND, 0).unwrap();
    assert_eq!(wq.attrs().affinity_scope, AffinityScope::Default);
    assert_eq!(started_at_once(&wq), cmwq::online_cpus().len());
}

#[test]
fn an_explicit_scope_keeps_its_pods_with_the_limit_per_node() {
    setup();
    if cmwq::online_cpus().len() < 2 {
        eprintln!("needs two CPUs");
        return;
    }
    let wq = Workqueue::builder("pods-explicit")
        .flags(WqFlags::UNBOUND)
        .max_active(1)
        .affinity_scope(AffinityScope::Cpu)
        .build()
        .unwrap();
    assert_eq!(wq.attrs().affinity_scope, AffinityScope::Cpu);
    assert_eq!(started_at_once(&wq), nodes());
}
