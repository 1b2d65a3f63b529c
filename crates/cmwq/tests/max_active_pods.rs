//! A queue that sets its own `max_active` and leaves the affinity scope to the default keeps
//! its limit queue-wide even where the default scope cuts the CPUs into several pods (each
//! pod's pool workqueue applies `max_active` by itself until the kernel's 6.9 split of the
//! limit is done). This binary makes the default scope `Cpu`, one pod per CPU.

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

#[test]
fn a_queue_with_its_own_limit_and_the_default_scope_keeps_the_limit_queue_wide() {
    setup();
    if cmwq::online_cpus().len() < 2 {
        eprintln!("needs two CPUs");
        return;
    }
    let wq = Workqueue::new("pods-limit", WqFlags::UNBOUND, 1).unwrap();
    assert_eq!(wq.attrs().affinity_scope, AffinityScope::System);
    assert_eq!(
        started_at_once(&wq),
        1,
        "max_active 1 ran more than one item"
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
fn an_explicit_scope_keeps_its_pods_with_the_limit_per_pod() {
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
    assert_eq!(started_at_once(&wq), cmwq::online_cpus().len());
}
