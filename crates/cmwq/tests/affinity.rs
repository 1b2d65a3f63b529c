//! Affinity scopes on the real machine (issue 15): unbound queues with one pwq per pod, items
//! inside their pod, strict and non-strict workers, repatriation, attributes read back, and
//! nothing lost or run twice across several pwqs.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cmwq::{AffinityScope, Error, Work, Workqueue, WorkqueueAttrs, WqFlags};
use common::{wait_for, Latch, DEADLINE};

/// The calling thread's allowed CPUs.
fn allowed_cpus() -> Vec<usize> {
    common::affinity_of(0)
}

/// Restricts the calling thread to `cpus`.
fn pin(cpus: &[usize]) {
    common::set_affinity(0, cpus);
}

/// What an item saw of its worker.
#[derive(Clone, Debug)]
struct Seen {
    allowed: Vec<usize>,
    pool_id: usize,
}

/// Runs one item on `wq` with `queue_on(cpu)` and returns what it saw.
fn probe_on(wq: &Workqueue, cpu: usize) -> Seen {
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let item = Work::new(move |_| {
        let info = cmwq::current_worker().expect("runs on a worker");
        *s.lock().unwrap() = Some(Seen {
            allowed: allowed_cpus(),
            pool_id: info.pool_id,
        });
    });
    assert!(wq.queue_on(cpu, &item).expect("queue_on"));
    item.flush();
    let seen = seen.lock().unwrap().clone();
    seen.expect("the item ran")
}

fn cpu_scope(name: &str, strict: bool) -> Workqueue {
    Workqueue::builder(name)
        .flags(WqFlags::UNBOUND)
        .affinity_scope(AffinityScope::Cpu)
        .affinity_strict(strict)
        .build()
        .expect("build")
}

#[test]
fn strict_cpu_scope_items_run_pinned_to_their_cpu() {
    let wq = cpu_scope("aff-strict", true);
    let mut pools = BTreeSet::new();
    for cpu in cmwq::online_cpus() {
        let seen = probe_on(&wq, cpu);
        assert_eq!(seen.allowed, [cpu], "a strict worker stays in its pod");
        pools.insert(seen.pool_id);
    }
    assert_eq!(pools.len(), cmwq::online_cpus().len(), "one pool per pod");
}

#[test]
fn non_strict_workers_may_use_the_whole_cpumask() {
    let wq = cpu_scope("aff-loose", false);
    let mut pools = BTreeSet::new();
    for cpu in cmwq::online_cpus() {
        let seen = probe_on(&wq, cpu);
        assert_eq!(
            seen.allowed,
            cmwq::online_cpus(),
            "non-strict: the whole mask"
        );
        pools.insert(seen.pool_id);
    }
    assert_eq!(pools.len(), cmwq::online_cpus().len(), "one pool per pod");
    // Another queue with equal attributes shares the pools, pod by pod.
    let twin = cpu_scope("aff-loose-twin", false);
    for cpu in cmwq::online_cpus() {
        assert_eq!(probe_on(&twin, cpu).pool_id, probe_on(&wq, cpu).pool_id);
    }
    // A strict one does not (strictness is part of the key).
    let strict = cpu_scope("aff-loose-strict", true);
    let cpu = cmwq::online_cpus()[0];
    assert_ne!(probe_on(&strict, cpu).pool_id, probe_on(&wq, cpu).pool_id);
}

#[test]
fn queue_from_each_cpu_lands_in_that_cpus_pod() {
    let wq = cpu_scope("aff-from-cpu", true);
    for cpu in cmwq::online_cpus() {
        let expected = probe_on(&wq, cpu).pool_id;
        let wq2 = wq.clone();
        // A thread pinned to `cpu` queues with plain `queue()`.
        let seen = std::thread::spawn(move || {
            pin(&[cpu]);
            let got = Arc::new(Mutex::new(None));
            let g = got.clone();
            let item = Work::new(move |_| {
                *g.lock().unwrap() = Some((
                    cmwq::current_worker().expect("worker").pool_id,
                    allowed_cpus(),
                ));
            });
            assert!(wq2.queue(&item));
            item.flush();
            let got = got.lock().unwrap().clone();
            got.expect("ran")
        })
        .join()
        .expect("queueing thread");
        assert_eq!(seen, (expected, vec![cpu]), "queued from CPU {cpu}");
    }
}

#[test]
fn restricted_cpumask_cuts_the_pods() {
    let cpus = cmwq::online_cpus();
    let last = *cpus.last().unwrap();
    let wq = Workqueue::builder("aff-mask")
        .flags(WqFlags::UNBOUND)
        .cpumask([last])
        .affinity_scope(AffinityScope::Cpu)
        .build()
        .unwrap();
    // Every CPU, in the mask or not, is served by the one pod there is.
    let pool = probe_on(&wq, last).pool_id;
    for &cpu in &cpus {
        let seen = probe_on(&wq, cpu);
        assert_eq!(seen.pool_id, pool);
        assert_eq!(seen.allowed, [last]);
    }
}

#[test]
fn repatriation_puts_wandering_workers_back() {
    let cpus = cmwq::online_cpus();
    if cpus.len() < 2 {
        eprintln!("needs two CPUs");
        return;
    }
    let (home, away) = (cpus[0], cpus[1]);
    // Nice 1: pools of its own, so the worker it moves is no other test's.
    let wq = Workqueue::builder("aff-repatriate")
        .flags(WqFlags::UNBOUND)
        .nice(1)
        .affinity_scope(AffinityScope::Cpu)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let (st, r, q) = (stop.clone(), runs.clone(), wq.clone());
    let item = Work::new(move |me| {
        r.fetch_add(1, Ordering::SeqCst);
        // Wander off: the next item this worker starts finds it outside its pod.
        pin(&[away]);
        if !st.load(Ordering::SeqCst) && r.load(Ordering::SeqCst) < 10_000 {
            let _ = q.queue_on(home, me);
        }
    });
    assert!(wq.queue_on(home, &item).unwrap());
    wait_for("a repatriated item", || wq.stats().repatriated > 0);
    stop.store(true, Ordering::SeqCst);
    item.flush();
    wq.flush();
    let s = wq.stats();
    assert!(s.repatriated >= 1 && s.repatriated <= s.total, "{s:?}");
    assert_eq!(s.total as usize, runs.load(Ordering::SeqCst));
    // A worker that was put back has its whole mask again.
    let seen = probe_on(&wq, home);
    assert!(seen.allowed == cpus || seen.allowed == [away], "{seen:?}");
}

#[test]
fn attrs_read_back() {
    let cpus = cmwq::online_cpus();
    assert_eq!(cmwq::config().default_affinity_scope, AffinityScope::Cache);
    assert_eq!(AffinityScope::Default.resolve(), AffinityScope::Cache);
    assert_eq!(AffinityScope::Numa.resolve(), AffinityScope::Numa);

    let wq = Workqueue::builder("aff-attrs")
        .flags(WqFlags::UNBOUND)
        .nice(3)
        .cpumask([cpus[0]])
        .affinity_scope(AffinityScope::Smt)
        .affinity_strict(true)
        .build()
        .unwrap();
    let want = WorkqueueAttrs::new()
        .with_nice(3)
        .with_cpumask([cpus[0]])
        .with_affinity_scope(AffinityScope::Smt)
        .with_affinity_strict(true);
    assert_eq!(wq.attrs(), want);

    let dfl = Workqueue::new("aff-attrs-dfl", WqFlags::UNBOUND, 0).unwrap();
    assert_eq!(dfl.attrs(), WorkqueueAttrs::new());
    assert_eq!(WorkqueueAttrs::default(), WorkqueueAttrs::new());
    let hi = Workqueue::new("aff-attrs-hi", WqFlags::UNBOUND | WqFlags::HIGHPRI, 0).unwrap();
    assert_eq!(hi.attrs().nice, -20);

    let percpu = Workqueue::new("aff-attrs-percpu", WqFlags::empty(), 0).unwrap();
    let a = percpu.attrs();
    assert_eq!((a.nice, &a.cpumask), (0, &cpus));
    assert_eq!(a.affinity_scope, AffinityScope::Cpu);
    assert!(a.affinity_strict);
    let a = Workqueue::new("aff-attrs-percpu-hi", WqFlags::HIGHPRI, 0)
        .unwrap()
        .attrs();
    assert_eq!(a.nice, -20);

    // Affinity is for unbound queues only.
    for b in [
        Workqueue::builder("aff-bad").affinity_scope(AffinityScope::Cpu),
        Workqueue::builder("aff-bad").affinity_strict(false),
    ] {
        assert!(matches!(b.build(), Err(Error::InvalidAttrs { .. })));
    }
}

#[test]
fn ordered_queues_keep_one_pwq() {
    let wq = Workqueue::builder("aff-ordered")
        .ordered()
        .affinity_scope(AffinityScope::Cpu)
        .build()
        .unwrap();
    let pools: BTreeSet<usize> = cmwq::online_cpus()
        .into_iter()
        .map(|cpu| probe_on(&wq, cpu).pool_id)
        .collect();
    assert_eq!(pools.len(), 1);
    let log = Arc::new(Mutex::new(Vec::new()));
    let items: Vec<Work> = (0..64)
        .map(|i| {
            let log = log.clone();
            Work::new(move |_| log.lock().unwrap().push(i))
        })
        .collect();
    let cpus = cmwq::online_cpus();
    for (i, item) in items.iter().enumerate() {
        wq.queue_on(cpus[i % cpus.len()], item).unwrap();
    }
    wq.flush();
    assert_eq!(*log.lock().unwrap(), (0..64).collect::<Vec<_>>());
}

/// `max_active` holds per NUMA node, not per pod: the pods of one node share its slots (the
/// kernel's 6.9 split; `tests/node_active.rs` tests it on fake layouts).
#[test]
fn max_active_applies_per_node_across_pods() {
    let cpus = cmwq::online_cpus();
    if cpus.len() < 2 {
        eprintln!("needs two CPUs");
        return;
    }
    let wq = Workqueue::builder("aff-max-active")
        .flags(WqFlags::UNBOUND)
        .max_active(1)
        .affinity_scope(AffinityScope::Cpu)
        .build()
        .unwrap();
    let nodes = cmwq::topology().node_groups().to_vec();
    let node_of = |c: usize| nodes.iter().position(|n| n.contains(&c));
    let one_node = node_of(cpus[0]) == node_of(cpus[1]);
    let gate = Arc::new(Latch::new());
    let _open = common::open_on_drop(&[&gate]);
    let started = Arc::new(AtomicUsize::new(0));
    let blocker = |gate: Arc<Latch>, started: Arc<AtomicUsize>| {
        Work::new(move |_| {
            started.fetch_add(1, Ordering::SeqCst);
            gate.wait();
        })
    };
    let a = blocker(gate.clone(), started.clone());
    let b = blocker(gate.clone(), started.clone());
    let c = blocker(gate.clone(), started.clone());
    wq.queue_on(cpus[0], &a).unwrap();
    wq.queue_on(cpus[0], &b).unwrap();
    wq.queue_on(cpus[1], &c).unwrap();
    // One item per node runs (min_active 1); the others wait for their node's slot.
    let running = if one_node { 1 } else { 2 };
    wait_for("one item per node", || {
        started.load(Ordering::SeqCst) + wq.stats().inactive == 3
    });
    assert_eq!(started.load(Ordering::SeqCst), running);
    assert!(wq.congested(Some(cpus[0])));
    assert_eq!(wq.congested(Some(cpus[1])), one_node);
    assert_eq!(wq.stats().inactive, 3 - running);
    gate.open();
    wq.flush();
    assert_eq!(started.load(Ordering::SeqCst), 3);
}

/// Items spread over several pwqs from several threads; each counts its runs.
fn batch(wq: &Workqueue, n: usize, counts: &Arc<Vec<AtomicUsize>>) -> Vec<Work> {
    let cpus = cmwq::online_cpus();
    let items: Vec<Work> = (0..n)
        .map(|i| {
            let counts = counts.clone();
            Work::new(move |_| {
                counts[i].fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let items = &items;
            let cpus = &cpus;
            s.spawn(move || {
                for (i, item) in items.iter().enumerate().filter(|(i, _)| i % 4 == t) {
                    if i % 2 == 0 {
                        assert!(wq.queue_on(cpus[i % cpus.len()], item).unwrap());
                    } else {
                        assert!(wq.queue(item));
                    }
                }
            });
        }
    });
    items
}

#[test]
fn several_pwqs_lose_nothing_and_run_nothing_twice() {
    const N: usize = 2000;
    let wq = Workqueue::builder("aff-several")
        .flags(WqFlags::UNBOUND)
        .max_active(2)
        .affinity_scope(AffinityScope::Cpu)
        .build()
        .unwrap();
    let counts: Arc<Vec<AtomicUsize>> = Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
    let check = |round: usize| {
        for (i, c) in counts.iter().enumerate() {
            assert_eq!(
                c.load(Ordering::SeqCst),
                round,
                "item {i} after round {round}"
            );
        }
    };
    // Flush.
    let _items = batch(&wq, N, &counts);
    wq.flush();
    check(1);
    // Drain.
    let _items = batch(&wq, N, &counts);
    wq.drain();
    check(2);
    let s = wq.stats();
    assert_eq!(
        (s.total, s.completed, s.in_flight),
        (2 * N as u64, 2 * N as u64, 0)
    );
    // Destroy drains first.
    let _items = batch(&wq, N, &counts);
    let start = std::time::Instant::now();
    wq.destroy();
    assert!(start.elapsed() < DEADLINE);
    check(3);
}
