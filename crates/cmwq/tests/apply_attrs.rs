//! `Workqueue::apply_attrs` at run time (issue 15): new items go to the new pool workqueues,
//! old ones finish theirs and are released when idle; nothing lost or run twice, ordered
//! order kept, flushes cover both, errors typed.
//!
//! Several pods come from `AffinityScope::Cpu` (one pod per CPU), which needs no fake
//! topology. The scenarios that count process-wide resources (pool slots, pools) or freeze
//! the process run in a child process (`harden_util::isolated`).

mod common;
mod harden_util;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cmwq::{AffinityScope, Error, Work, Workqueue, WorkqueueAttrs, WqFlags};
use common::{current_tid, unique, wait_for, wait_thread_blocked, Blocker, OverlapDetector};
use harden_util::isolated;

/// The calling thread's allowed CPUs.
fn allowed_cpus() -> Vec<usize> {
    common::affinity_of(0)
}

/// `wq.flush()`, failing the test instead of hanging past the deadline.
fn flush(wq: &Workqueue) {
    let wq = wq.clone();
    common::with_deadline("flush", move || wq.flush());
}

/// `wq.destroy()`, failing the test instead of hanging past the deadline.
fn destroy(wq: Workqueue) {
    common::with_deadline("destroy", move || wq.destroy());
}

/// `item.flush()`, failing the test instead of hanging past the deadline.
fn flush_item(item: &Work) {
    let item = item.clone();
    common::with_deadline("flush the item", move || item.flush());
}

fn unbound(name: &str) -> Workqueue {
    Workqueue::new(&unique(name), WqFlags::UNBOUND, 0).expect("unbound queue")
}

/// Attribute sets to cycle through: each scope, each single CPU, nice 0 and 1.
fn variants() -> Vec<WorkqueueAttrs> {
    let cpus = cmwq::online_cpus();
    let mut v = vec![
        WorkqueueAttrs::new().with_affinity_scope(AffinityScope::Cpu),
        WorkqueueAttrs::new().with_affinity_scope(AffinityScope::System),
        WorkqueueAttrs::new().with_nice(1),
    ];
    for &c in &cpus {
        v.push(WorkqueueAttrs::new().with_cpumask([c]));
    }
    v.push(
        WorkqueueAttrs::new()
            .with_affinity_scope(AffinityScope::Cpu)
            .with_affinity_strict(true),
    );
    v
}

/// Counted items: `runs[i]` is how often item `i` ran.
fn counted(n: usize) -> (Vec<Work>, Arc<Vec<AtomicUsize>>) {
    let runs: Arc<Vec<AtomicUsize>> = Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect());
    let items = (0..n)
        .map(|i| {
            let runs = runs.clone();
            Work::new(move |_| {
                runs[i].fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    (items, runs)
}

#[test]
fn apply_while_items_run_loses_nothing_and_runs_nothing_twice() {
    let wq = unbound("apply-run");
    let (items, runs) = counted(3000);
    let items = Arc::new(items);
    let blocker = Blocker::new();
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    let producer = {
        let (wq, items) = (wq.clone(), items.clone());
        common::spawn(move || {
            for item in items.iter() {
                assert!(wq.queue(item), "each item is queued once");
            }
        })
    };
    let variants = variants();
    let mut i = 0;
    while !producer.is_finished() || i < variants.len() {
        wq.apply_attrs(&variants[i % variants.len()])
            .expect("apply_attrs");
        i += 1;
    }
    common::join("producer", producer);
    drop(blocker); // the item running on the first pwq ends
    flush(&wq);
    for (i, r) in runs.iter().enumerate() {
        assert_eq!(r.load(Ordering::SeqCst), 1, "item {i} ran once");
    }
}

#[test]
fn attrs_reports_the_attributes_in_force_and_equal_attrs_change_nothing() {
    let wq = unbound("apply-attrs");
    let before = cmwq::pwq_counts(&wq).1;
    wq.apply_attrs(&wq.attrs()).expect("the same attributes");
    assert_eq!(
        cmwq::pwq_counts(&wq).1,
        before,
        "no pwq linked for equal attrs"
    );
    let attrs = WorkqueueAttrs::new().with_nice(2);
    wq.apply_attrs(&attrs).expect("apply");
    assert_eq!(wq.attrs(), attrs);
}

#[test]
fn an_ordered_queue_switched_mid_stream_runs_everything_in_order() {
    let wq = Workqueue::ordered(&unique("apply-ordered"), WqFlags::empty()).expect("ordered");
    let log = Arc::new(Mutex::new(Vec::new()));
    let overlap = Arc::new(OverlapDetector::new());
    let blocker = Blocker::new();
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    let variants = variants();
    let items: Vec<Work> = (0..400)
        .map(|i| {
            let (log, overlap) = (log.clone(), overlap.clone());
            Work::new(move |_| {
                let _in = overlap.enter();
                log.lock().unwrap().push(i);
            })
        })
        .collect();
    for (i, item) in items.iter().enumerate() {
        assert!(wq.queue(item));
        if i % 50 == 49 {
            // Old pwqs still hold items (the first one is blocked): the new one is plugged.
            wq.apply_attrs(&variants[i / 50 % variants.len()])
                .expect("apply_attrs");
        }
    }
    drop(blocker);
    // Switches while items run, too.
    for v in &variants {
        wq.apply_attrs(v).expect("apply_attrs");
    }
    flush(&wq);
    assert_eq!(*log.lock().unwrap(), (0..400).collect::<Vec<_>>());
    assert!(
        !overlap.overlapped(),
        "an ordered queue runs one item at a time"
    );
}

#[test]
fn a_flush_issued_after_apply_waits_for_the_item_on_the_old_pwq() {
    let wq = unbound("apply-flush");
    let done = Arc::new(AtomicBool::new(false));
    let blocker = {
        let done = done.clone();
        Blocker::then(move || done.store(true, Ordering::SeqCst))
    };
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    wq.apply_attrs(&WorkqueueAttrs::new().with_nice(3))
        .expect("apply_attrs");
    let (new_item, new_runs) = common::counting_item();
    assert!(wq.queue(&new_item));
    let (tx, rx) = std::sync::mpsc::channel();
    let flusher = {
        let (wq, done) = (wq.clone(), done.clone());
        common::spawn(move || {
            tx.send(current_tid()).unwrap();
            flush(&wq);
            done.load(Ordering::SeqCst)
        })
    };
    let tid = rx.recv().unwrap();
    wait_thread_blocked("the flusher waits", tid);
    assert!(
        !flusher.is_finished(),
        "the flush waits for the old pwq's item"
    );
    drop(blocker);
    assert!(
        common::join("flusher", flusher),
        "the old pwq's item finished before the flush returned"
    );
    flush_item(&new_item);
    assert_eq!(new_runs.load(Ordering::SeqCst), 1);
}

#[test]
fn items_queued_after_apply_run_on_the_new_cpumask() {
    let cpus = cmwq::online_cpus();
    let wq = unbound("apply-mask");
    for mask in [vec![*cpus.last().unwrap()], vec![cpus[0]], cpus.clone()] {
        for strict in [false, true] {
            let attrs = WorkqueueAttrs::new()
                .with_cpumask(mask.clone())
                .with_affinity_strict(strict);
            wq.apply_attrs(&attrs).expect("apply_attrs");
            let seen = Arc::new(Mutex::new(None));
            let item = {
                let seen = seen.clone();
                Work::new(move |_| *seen.lock().unwrap() = Some(allowed_cpus()))
            };
            assert!(wq.queue(&item));
            flush_item(&item);
            let allowed = seen.lock().unwrap().clone().expect("ran");
            assert!(
                allowed.iter().all(|c| mask.contains(c)),
                "worker allowed {allowed:?}, cpumask {mask:?} (strict {strict})"
            );
        }
    }
}

#[test]
fn a_requeued_item_running_on_an_old_pwq_runs_after_that_instance() {
    let wq = unbound("apply-reentrant");
    let overlap = Arc::new(OverlapDetector::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(common::Latch::new());
    let started = Arc::new(common::Latch::new());
    let item = {
        let (overlap, runs, gate, started) =
            (overlap.clone(), runs.clone(), gate.clone(), started.clone());
        Work::new(move |_| {
            let _in = overlap.enter();
            if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                started.open();
                gate.wait_blocking();
            }
        })
    };
    assert!(wq.queue(&item));
    started.wait();
    // Another pool: the item's last pool is the old pwq's.
    wq.apply_attrs(&WorkqueueAttrs::new().with_nice(4))
        .expect("apply_attrs");
    assert!(wq.queue(&item), "idle again for queueing while it runs");
    gate.open();
    wait_for("both runs", || runs.load(Ordering::SeqCst) == 2);
    flush_item(&item);
    assert!(!overlap.overlapped(), "the second run waited for the first");
}

#[test]
fn set_max_active_applies_to_old_and_new_pwqs() {
    let wq = Workqueue::builder(&unique("apply-max"))
        .flags(WqFlags::UNBOUND)
        .max_active(1)
        .build()
        .expect("queue");
    let blocker = Blocker::new();
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    let (behind, behind_runs) = common::counting_item();
    assert!(
        wq.queue(&behind),
        "inactive behind the blocker on the old pwq"
    );
    wq.apply_attrs(
        &WorkqueueAttrs::new()
            .with_nice(5)
            .with_affinity_scope(AffinityScope::System),
    )
    .expect("apply_attrs");
    // Raising the limit activates the old pwq's waiting item while the blocker still runs.
    wq.set_max_active(2).expect("set_max_active");
    wait_for("the old pwq's inactive item ran", || {
        behind_runs.load(Ordering::SeqCst) == 1
    });
    drop(blocker);
    flush(&wq);
}

#[test]
fn errors_are_typed() {
    let percpu = Workqueue::new(&unique("apply-percpu"), WqFlags::PERCPU, 0).expect("per-CPU");
    assert!(matches!(
        percpu.apply_attrs(&WorkqueueAttrs::new()),
        Err(Error::NotUnbound { .. })
    ));
    let wq = unbound("apply-bad");
    let before = wq.attrs();
    assert!(matches!(
        wq.apply_attrs(&WorkqueueAttrs::new().with_cpumask([])),
        Err(Error::InvalidAttrs { .. })
    ));
    assert_eq!(
        wq.apply_attrs(&WorkqueueAttrs::new().with_cpumask([usize::MAX])),
        Err(Error::InvalidCpu { cpu: usize::MAX })
    );
    for nice in [-21, 20] {
        assert!(matches!(
            wq.apply_attrs(&WorkqueueAttrs::new().with_nice(nice)),
            Err(Error::InvalidAttrs { .. })
        ));
    }
    assert_eq!(wq.attrs(), before, "a refused apply changes nothing");
    let leftover = wq.clone();
    wq.destroy();
    assert!(matches!(
        leftover.apply_attrs(&WorkqueueAttrs::new().with_nice(1)),
        Err(Error::Destroyed { .. })
    ));
}

#[test]
fn destroy_right_after_apply_runs_old_and_new_items() {
    for round in 0..20 {
        let wq = unbound("apply-destroy");
        let (items, runs) = counted(40);
        let blocker = Blocker::new();
        assert!(wq.queue(&blocker.item));
        blocker.started.wait();
        for item in &items[..20] {
            assert!(wq.queue(item));
        }
        wq.apply_attrs(&variants()[round % variants().len()])
            .expect("apply_attrs");
        for item in &items[20..] {
            assert!(wq.queue(item));
        }
        let gate = blocker.gate.clone();
        let opener = common::spawn(move || gate.open());
        destroy(wq); // drains old and new
        common::join("opener", opener);
        for (i, r) in runs.iter().enumerate() {
            assert_eq!(
                r.load(Ordering::SeqCst),
                1,
                "round {round}: item {i} ran once"
            );
        }
        drop(blocker);
    }
}

#[test]
fn many_apply_cycles_leak_no_pool_slot_and_no_pool() {
    isolated("many_apply_cycles_leak_no_pool_slot_and_no_pool", || {
        let system = cmwq::system_unbound_wq();
        let (base_slots, _) = cmwq::pwq_counts(system);
        let base_pools = cmwq::pools().len();
        let wq = unbound("apply-cycles");
        let (items, runs) = counted(64);
        let variants = variants();
        for cycle in 0..300 {
            for item in items.iter().skip(cycle % 4).step_by(4) {
                wq.queue(item);
            }
            wq.apply_attrs(&variants[cycle % variants.len()])
                .expect("apply_attrs");
        }
        flush(&wq);
        let total: usize = runs.iter().map(|r| r.load(Ordering::SeqCst)).sum();
        assert!(total > 0);
        // Every replaced pwq is released once idle: only the current table's stay linked.
        let pods = cmwq::topology()
            .pods(wq.attrs().affinity_scope)
            .iter()
            .filter(|p| p.iter().any(|c| wq.attrs().cpumask.contains(c)))
            .count();
        wait_for("replaced pwqs released", || cmwq::pwq_counts(&wq).1 == pods);
        destroy(wq);
        wait_for("every slot and pool given back", || {
            cmwq::pwq_counts(system).0 == base_slots && cmwq::pools().len() == base_pools
        });
    });
}

#[test]
fn a_frozen_freezable_queue_gets_frozen_new_pwqs() {
    isolated("a_frozen_freezable_queue_gets_frozen_new_pwqs", || {
        let wq = Workqueue::new(
            &unique("apply-frozen"),
            WqFlags::UNBOUND | WqFlags::FREEZABLE,
            0,
        )
        .expect("queue");
        assert!(cmwq::freeze());
        wq.apply_attrs(&WorkqueueAttrs::new().with_nice(1))
            .expect("apply_attrs");
        let (item, runs) = common::counting_item();
        assert!(wq.queue(&item));
        assert!(
            matches!(wq.try_flush(), Err(Error::Frozen { .. })),
            "the new pwq holds the item"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert!(cmwq::thaw());
        flush(&wq);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn statistics_keep_the_counts_of_released_pwqs() {
    let wq = unbound("apply-stats");
    let (items, _runs) = counted(25);
    for item in &items {
        assert!(wq.queue(item));
    }
    flush(&wq);
    let linked = cmwq::pwq_counts(&wq).1;
    wq.apply_attrs(&WorkqueueAttrs::new().with_affinity_scope(AffinityScope::System))
        .expect("apply_attrs");
    // The old pwqs were idle: released by the call itself, the new one (one pod) is linked.
    assert_eq!(cmwq::pwq_counts(&wq).1, 1, "{linked} old pwqs released");
    let s = wq.stats();
    assert_eq!((s.total, s.completed, s.in_flight), (25, 25, 0));
    for item in &items {
        assert!(wq.queue(item));
    }
    flush(&wq);
    assert_eq!(wq.stats().total, 50);
}

#[test]
fn a_flush_after_apply_waits_for_items_of_the_new_pwq_whatever_the_flush_color() {
    let wq = unbound("apply-color");
    // Flushes with items in flight advance the queue's flush color: the new pwq must start
    // with the color in force, or a flush would not see its items.
    for _ in 0..3 {
        let (item, _) = common::counting_item();
        assert!(wq.queue(&item));
        flush(&wq);
    }
    wq.apply_attrs(&WorkqueueAttrs::new().with_nice(6))
        .expect("apply_attrs");
    let blocker = Blocker::new();
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    let (tx, rx) = std::sync::mpsc::channel();
    let flusher = {
        let wq = wq.clone();
        common::spawn(move || {
            tx.send(current_tid()).unwrap();
            wq.flush();
        })
    };
    wait_thread_blocked("the flusher waits", rx.recv().unwrap());
    assert!(
        !flusher.is_finished(),
        "the flush waits for the new pwq's item"
    );
    drop(blocker);
    common::join("flusher", flusher);
}

#[test]
fn drain_covers_a_chain_that_hops_from_old_pwqs_to_new_ones() {
    let wq = unbound("apply-drain");
    let steps = Arc::new(AtomicUsize::new(0));
    let chain = {
        let (steps, wq) = (steps.clone(), wq.clone());
        Work::new(move |me| {
            if steps.fetch_add(1, Ordering::SeqCst) + 1 < 200 {
                wq.queue(me);
            }
        })
    };
    assert!(wq.queue(&chain));
    for v in variants().iter().cycle().take(20) {
        wq.apply_attrs(v).expect("apply_attrs");
    }
    let drained = wq.clone();
    common::with_deadline("drain", move || drained.drain());
    assert_eq!(
        steps.load(Ordering::SeqCst),
        200,
        "drain waited for the whole chain"
    );
    assert!(!chain.is_pending());
}
