//! The kernel 6.9 split of an unbound queue's `max_active` between NUMA nodes, the
//! `min_active` floor and `Workqueue::set_min_active` (issue 15).
//!
//! The layouts are fake sysfs trees (`CMWQ_SYSFS_ROOT`, read at first use, so each scenario
//! runs in a child process through `harden_util::isolated_env`) over the CPUs this process
//! may run on: a two-socket SMT layout with two LLCs per socket, the process's CPUs placed on
//! it by a table. On a 2-CPU machine "spread" puts both CPUs on node 0 in different LLCs (two
//! pods sharing a node: the shared counter and its pending list), "lopsided" puts them on
//! different nodes (one pod per node: each pwq's own limit is its node's share); with 4 CPUs
//! or more "spread" gives 4 pods on 2 nodes and "lopsided" a node with 1 CPU of many. The
//! expected limits are computed here from the layout with the kernel's rule, written out
//! independently of the engine's.

mod common;
mod harden_util;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cmwq::{AffinityScope, Error, Work, Workqueue, WqFlags};
use common::{open_on_drop, wait_for, wait_until, Latch, SETTLE};
use harden_util::isolated_env;

/// Node and LLC of the core at each of the 8 core positions of the model (LLC / 2 = node).
type Placement = [usize; 8];
/// Cores alternate between the LLCs of node 0, then of node 1.
const SPREAD: Placement = [0, 1, 2, 3, 0, 1, 2, 3];
/// The first core alone on node 1 (LLC 2), every other on node 0.
const LOPSIDED: Placement = [2, 0, 1, 0, 1, 0, 1, 0];

/// The process's CPUs placed on the model: CPU at position `i` is a thread of core `i % 8`
/// (its sibling is position `i + 8`), in LLC `placement[i % 8]`. Returns (cpu, llc) pairs.
fn place(placement: &Placement) -> Vec<(usize, usize)> {
    cmwq::online_cpus()
        .into_iter()
        .enumerate()
        .map(|(i, cpu)| (cpu, placement[i % 8]))
        .collect()
}

fn list(cpus: impl IntoIterator<Item = usize>) -> String {
    let v: Vec<String> = cpus.into_iter().map(|c| c.to_string()).collect();
    format!("{}\n", v.join(","))
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// Writes the fake tree of `placement` under a fresh folder and returns the child's
/// environment naming it.
fn tree(root: &Path, placement: &Placement) -> Vec<(String, OsString)> {
    let _ = fs::remove_dir_all(root);
    let placed = place(placement);
    let cpu_dir = root.join("devices/system/cpu");
    for (i, &(cpu, llc)) in placed.iter().enumerate() {
        let d = cpu_dir.join(format!("cpu{cpu}"));
        let siblings = placed
            .iter()
            .enumerate()
            .filter(|(j, _)| j % 8 == i % 8)
            .map(|(_, &(c, _))| c);
        write(&d.join("topology/thread_siblings_list"), &list(siblings));
        write(&d.join("cache/index0/level"), "1\n");
        write(&d.join("cache/index0/shared_cpu_list"), &list([cpu]));
        write(&d.join("cache/index3/level"), "3\n");
        let same_llc = placed.iter().filter(|p| p.1 == llc).map(|p| p.0);
        write(&d.join("cache/index3/shared_cpu_list"), &list(same_llc));
    }
    for node in 0..2 {
        let cpus = placed.iter().filter(|p| p.1 / 2 == node).map(|p| p.0);
        write(
            &root.join(format!("devices/system/node/node{node}/cpulist")),
            &list(cpus),
        );
    }
    vec![("CMWQ_SYSFS_ROOT".into(), root.as_os_str().to_owned())]
}

/// Runs `scenario` in a child process over the fake layout `placement`; the parent removes
/// the tree afterwards.
#[track_caller]
fn on_layout(name: &str, placement: &'static Placement, scenario: impl FnOnce()) {
    let root: PathBuf =
        std::env::temp_dir().join(format!("cmwq-node-active-{}-{name}", std::process::id()));
    let r = root.clone();
    isolated_env(name, move || tree(&r, placement), scenario);
    // Only the parent wrote it (the child's pid names another folder).
    let _ = fs::remove_dir_all(&root);
}

/// The kernel's rule, for the test: each node's limit is `ceil(max × cpus / total)` clamped
/// to `min(min_active, max)..=max`.
fn node_limit(max: usize, min: usize, cpus: usize, total: usize) -> usize {
    (max * cpus).div_ceil(total).clamp(min.min(max), max)
}

/// The nodes of the (fake) topology that hold CPUs, with their CPUs.
fn nodes() -> Vec<Vec<usize>> {
    cmwq::topology().node_groups().to_vec()
}

fn node_of(cpu: usize) -> usize {
    nodes().iter().position(|n| n.contains(&cpu)).unwrap()
}

/// What ran at once, per node and in total.
#[derive(Default)]
struct Counts {
    running: Vec<AtomicUsize>,
    high: Vec<AtomicUsize>,
    total: AtomicUsize,
    total_high: AtomicUsize,
    /// Items in the order they started: (item, pod index).
    started: Mutex<Vec<(usize, usize)>>,
    ran: AtomicUsize,
}

impl Counts {
    fn new() -> Arc<Self> {
        let n = nodes().len();
        Arc::new(Counts {
            running: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            high: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            ..Counts::default()
        })
    }

    fn started(&self) -> Vec<(usize, usize)> {
        self.started.lock().unwrap().clone()
    }
}

/// A batch of blocking items on one queue: item `i` is queued from a CPU of pod `pod_of[i]`,
/// runs until its own gate opens, and records what ran at once.
struct Batch {
    items: Vec<Work>,
    gates: Vec<Arc<Latch>>,
    counts: Arc<Counts>,
    _open: common::OpenOnDrop,
}

impl Batch {
    /// `per_pod[p]` items on pod `p` of `pods`, queued pod after pod.
    fn queue(wq: &Workqueue, pods: &[Vec<usize>], per_pod: &[usize]) -> Batch {
        let counts = Counts::new();
        let mut items = Vec::new();
        let mut gates = Vec::new();
        for (pod, (&n, cpus)) in per_pod.iter().zip(pods).enumerate() {
            let cpu = cpus[0];
            let node = node_of(cpu);
            for _ in 0..n {
                let id = items.len();
                let gate = Arc::new(Latch::new());
                let (g, c) = (gate.clone(), counts.clone());
                let item = Work::new(move |_| {
                    let now = c.running[node].fetch_add(1, Ordering::SeqCst) + 1;
                    c.high[node].fetch_max(now, Ordering::SeqCst);
                    let total = c.total.fetch_add(1, Ordering::SeqCst) + 1;
                    c.total_high.fetch_max(total, Ordering::SeqCst);
                    c.started.lock().unwrap().push((id, pod));
                    g.wait_blocking();
                    c.running[node].fetch_sub(1, Ordering::SeqCst);
                    c.total.fetch_sub(1, Ordering::SeqCst);
                    c.ran.fetch_add(1, Ordering::SeqCst);
                });
                assert!(wq.queue_on(cpu, &item).expect("online cpu"));
                items.push(item);
                gates.push(gate);
            }
        }
        let open = open_on_drop(&gates.iter().collect::<Vec<_>>());
        Batch {
            items,
            gates,
            counts,
            _open: open,
        }
    }

    /// Waits until every item has either started or waits on an inactive list.
    fn settle(&self, wq: &Workqueue) {
        wait_for("the items to start or wait", || {
            self.counts.started.lock().unwrap().len() + wq.stats().inactive == self.items.len()
        });
    }

    fn running(&self) -> Vec<usize> {
        self.counts
            .running
            .iter()
            .map(|r| r.load(Ordering::SeqCst))
            .collect()
    }

    /// Opens every gate and waits for every item to have run once.
    fn finish(self, wq: &Workqueue) {
        for g in &self.gates {
            g.open();
        }
        wq.flush();
        assert_eq!(self.counts.ran.load(Ordering::SeqCst), self.items.len());
        for item in &self.items {
            assert!(!item.is_pending());
        }
    }
}

/// The pods of `wq` (its scope over its cpumask) and each one's node.
fn pods_of(wq: &Workqueue) -> Vec<Vec<usize>> {
    let a = wq.attrs();
    cmwq::topology()
        .pods(a.affinity_scope)
        .into_iter()
        .map(|p| {
            p.into_iter()
                .filter(|c| a.cpumask.contains(c))
                .collect::<Vec<_>>()
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// Two pods of `wq` on the node of the first CPU, if it has two (it needs two CPUs).
fn two_pods_of_first_node(wq: &Workqueue) -> Option<Vec<Vec<usize>>> {
    let node = node_of(cmwq::online_cpus()[0]);
    let pods: Vec<Vec<usize>> = pods_of(wq)
        .into_iter()
        .filter(|p| node_of(p[0]) == node)
        .take(2)
        .collect();
    (pods.len() == 2).then_some(pods)
}

/// Per node, the CPUs of `wq`'s cpumask there.
fn cpus_per_node(wq: &Workqueue) -> Vec<usize> {
    let mask = wq.attrs().cpumask;
    nodes()
        .iter()
        .map(|n| n.iter().filter(|c| mask.contains(c)).count())
        .collect()
}

/// The limits the rule gives each node for `wq` now.
fn limits(wq: &Workqueue) -> Vec<usize> {
    let per_node = cpus_per_node(wq);
    let total: usize = per_node.iter().sum();
    per_node
        .iter()
        .map(|&c| node_limit(wq.max_active(), wq.min_active(), c, total))
        .collect()
}

/// Queues `per_pod` items on every pod, waits for them to settle and checks that each node
/// runs exactly its limit (or all it has, if fewer), never more, and the total the sum.
fn check_split(wq: &Workqueue, per_pod: usize) -> Batch {
    let pods = pods_of(wq);
    let batch = Batch::queue(wq, &pods, &vec![per_pod; pods.len()]);
    batch.settle(wq);
    let limits = limits(wq);
    let mut queued = vec![0; limits.len()];
    for p in &pods {
        queued[node_of(p[0])] += per_pod;
    }
    let expect: Vec<usize> = limits
        .iter()
        .zip(&queued)
        .map(|(&l, &q)| if q == 0 { 0 } else { l.min(q) })
        .collect();
    assert_eq!(
        batch.running(),
        expect,
        "running per node (limits {limits:?}, queued {queued:?}, pods {pods:?})\n{}",
        cmwq::show_workqueues()
    );
    for (node, high) in batch.counts.high.iter().enumerate() {
        assert!(
            high.load(Ordering::SeqCst) <= expect[node],
            "node {node} ran more than its limit at some point"
        );
    }
    let sum: usize = expect.iter().sum();
    assert_eq!(batch.counts.total_high.load(Ordering::SeqCst), sum);
    batch
}

#[test]
fn a_cache_scope_queue_shares_each_nodes_limit_between_its_pods() {
    const NAME: &str = "a_cache_scope_queue_shares_each_nodes_limit_between_its_pods";
    on_layout(NAME, &SPREAD, || {
        let wq = Workqueue::builder("node-split")
            .flags(WqFlags::UNBOUND)
            .max_active(8)
            .affinity_scope(AffinityScope::Cache)
            .build()
            .unwrap();
        let pods = pods_of(&wq);
        if pods.len() < 2 {
            eprintln!("needs two CPUs");
            return;
        }
        // Every node gets min_active = max_active = 8: the node's pods share them (one pod per
        // LLC here, two LLCs per node).
        assert_eq!(wq.min_active(), 8);
        check_split(&wq, 12).finish(&wq);
        // Without the floor, each node gets its share of the 8 by its CPUs.
        wq.set_min_active(1).unwrap();
        check_split(&wq, 12).finish(&wq);
        let dump = cmwq::show_all_workqueues();
        assert!(
            dump.contains("node_nr/max_active: min=1 max=8"),
            "the dump shows the per-node limits:\n{dump}"
        );
        println!("passed");
    });
}

#[test]
fn the_pods_of_a_node_are_served_in_turn() {
    const NAME: &str = "the_pods_of_a_node_are_served_in_turn";
    on_layout(NAME, &SPREAD, || {
        let wq = Workqueue::builder("node-turns")
            .flags(WqFlags::UNBOUND)
            .max_active(4)
            .affinity_scope(AffinityScope::Cache)
            .build()
            .unwrap();
        // Two pods of the first CPU's node.
        let Some(pods) = two_pods_of_first_node(&wq) else {
            eprintln!("needs two CPUs");
            return;
        };
        let node = node_of(pods[0][0]);
        let limit = limits(&wq)[node];
        assert_eq!(limit, 4);
        // Pod A fills the node and queues as many again; then pod B queues as many.
        let batch = Batch::queue(&wq, &pods, &[2 * limit, 2 * limit]);
        batch.settle(&wq);
        let first = batch.counts.started();
        assert_eq!(first.len(), limit);
        assert!(first.iter().all(|&(_, pod)| pod == 0), "{first:?}");
        // Free one slot at a time: the node hands it to the waiting pods in turn, one item
        // each (A was waiting first).
        let mut turns = Vec::new();
        for k in 0..2 * limit {
            let started = batch.counts.started();
            let (victim, _) = started[k];
            batch.gates[victim].open();
            wait_for("a waiting item to take the freed slot", || {
                batch.counts.started.lock().unwrap().len() > started.len()
            });
            turns.push(batch.counts.started()[started.len()].1);
            assert_eq!(batch.running()[node], limit, "the node stays full");
        }
        let expect: Vec<usize> = (0..2 * limit).map(|k| k % 2).collect();
        assert_eq!(turns, expect, "pods served in turn");
        batch.finish(&wq);
        println!("passed");
    });
}

#[test]
fn a_node_with_few_cpus_still_gets_min_active() {
    const NAME: &str = "a_node_with_few_cpus_still_gets_min_active";
    on_layout(NAME, &LOPSIDED, || {
        if cmwq::online_cpus().len() < 2 {
            eprintln!("needs two CPUs");
            return;
        }
        // One pod per node: each pwq's own limit is its node's share.
        let wq = Workqueue::builder("node-floor")
            .flags(WqFlags::UNBOUND)
            .max_active(10)
            .affinity_scope(AffinityScope::Numa)
            .build()
            .unwrap();
        let per_node = cpus_per_node(&wq);
        // The node of the first CPU, alone on its node.
        let lone = node_of(cmwq::online_cpus()[0]);
        assert_eq!(per_node[lone], 1, "one CPU on that node: {per_node:?}");
        // ceil(10 x 1 / n) is at most 5, but the floor (min_active 8) gives the node eight.
        assert_eq!(limits(&wq)[lone], 8);
        check_split(&wq, 12).finish(&wq);
        // Lowering the floor gives the node its share alone.
        wq.set_min_active(0).unwrap();
        assert_eq!(limits(&wq)[lone], 10usize.div_ceil(per_node.iter().sum()));
        check_split(&wq, 12).finish(&wq);
        println!("passed");
    });
}

#[test]
fn set_max_active_splits_the_limit_again_at_run_time() {
    const NAME: &str = "set_max_active_splits_the_limit_again_at_run_time";
    on_layout(NAME, &LOPSIDED, || {
        if cmwq::online_cpus().len() < 2 {
            eprintln!("needs two CPUs");
            return;
        }
        let wq = Workqueue::builder("node-resplit")
            .flags(WqFlags::UNBOUND)
            .max_active(16)
            .affinity_scope(AffinityScope::Numa)
            .build()
            .unwrap();
        wq.set_min_active(1).unwrap();
        check_split(&wq, 20).finish(&wq);
        // Lowered while idle: the new split holds; min_active follows it down.
        wq.set_max_active(4).unwrap();
        assert_eq!(wq.min_active(), 1);
        let batch = check_split(&wq, 20);
        // Raised while items wait: more start at once, up to the new split.
        wq.set_max_active(12).unwrap();
        let want: usize = limits(&wq).iter().sum();
        wait_for("the raised limit to start waiting items", || {
            batch.running().iter().sum::<usize>() == want
        });
        assert_eq!(batch.running(), limits(&wq));
        batch.finish(&wq);
        println!("passed");
    });
}

#[test]
fn apply_attrs_splits_the_limit_by_the_new_cpumask() {
    const NAME: &str = "apply_attrs_splits_the_limit_by_the_new_cpumask";
    on_layout(NAME, &LOPSIDED, || {
        if cmwq::online_cpus().len() < 2 {
            eprintln!("needs two CPUs");
            return;
        }
        let wq = Workqueue::builder("node-apply")
            .flags(WqFlags::UNBOUND)
            .max_active(16)
            .affinity_scope(AffinityScope::Numa)
            .build()
            .unwrap();
        wq.set_min_active(1).unwrap();
        // Both nodes hold CPUs of the mask: each gets its share.
        check_split(&wq, 20).finish(&wq);
        // The mask cut to node 0 at run time: node 0 now has every CPU of it, so the whole
        // limit, and the new pwqs count under the same node counters as the old ones did.
        let node0 = nodes()[0].clone();
        wq.apply_attrs(&wq.attrs().with_cpumask(node0)).unwrap();
        assert_eq!(limits(&wq)[0], 16);
        let batch = check_split(&wq, 20);
        assert_eq!(batch.running()[0], 16);
        batch.finish(&wq);
        println!("passed");
    });
}

#[test]
fn a_queue_on_one_node_keeps_its_limit_queue_wide() {
    const NAME: &str = "a_queue_on_one_node_keeps_its_limit_queue_wide";
    on_layout(NAME, &SPREAD, || {
        let node0 = nodes()[0].clone();
        let wq = Workqueue::builder("node-one")
            .flags(WqFlags::UNBOUND)
            .max_active(3)
            .cpumask(node0.clone())
            .affinity_scope(AffinityScope::Cache)
            .build()
            .unwrap();
        assert_eq!(limits(&wq)[0], 3);
        let batch = check_split(&wq, 5);
        assert_eq!(batch.running()[0], 3);
        batch.finish(&wq);
        println!("passed");
    });
}

#[test]
fn a_frozen_shared_node_holds_its_items_and_thaw_runs_them_in_order() {
    const NAME: &str = "a_frozen_shared_node_holds_its_items_and_thaw_runs_them_in_order";
    on_layout(NAME, &SPREAD, || {
        // Node limit 1: the items run one at a time, so their order is the activation order.
        let wq = Workqueue::builder("node-frozen")
            .flags(WqFlags::UNBOUND | WqFlags::FREEZABLE)
            .max_active(1)
            .affinity_scope(AffinityScope::Cache)
            .build()
            .unwrap();
        let Some(pods) = two_pods_of_first_node(&wq) else {
            eprintln!("needs two CPUs");
            return;
        };
        assert!(cmwq::freeze());
        let log: Arc<Mutex<BTreeMap<usize, Vec<usize>>>> = Arc::default();
        let items: Vec<(usize, Work)> = (0..12)
            .map(|i| {
                let pod = i % 2;
                let log = log.clone();
                let item = Work::new(move |_| {
                    log.lock().unwrap().entry(pod).or_default().push(i);
                });
                (pod, item)
            })
            .collect();
        for (pod, item) in &items {
            assert!(wq.queue_on(pods[*pod][0], item).unwrap());
        }
        assert!(!wait_until(SETTLE, || !log.lock().unwrap().is_empty()));
        assert_eq!(wq.stats().inactive, items.len());
        assert!(matches!(wq.try_flush(), Err(Error::Frozen { .. })));
        assert!(cmwq::thaw());
        wq.flush();
        let log = log.lock().unwrap();
        for pod in 0..2 {
            let want: Vec<usize> = (0..12).filter(|i| i % 2 == pod).collect();
            assert_eq!(log[&pod], want, "pod {pod} ran its items once, in order");
        }
        println!("passed");
    });
}

#[test]
fn flushing_an_item_behind_the_callers_node_slot_is_an_error() {
    const NAME: &str = "flushing_an_item_behind_the_callers_node_slot_is_an_error";
    on_layout(NAME, &SPREAD, || {
        // Node limit 1, shared by two pods: an item of pod A that flushes one it queued on
        // pod B waits for its own slot.
        let wq = Workqueue::builder("node-dep")
            .flags(WqFlags::UNBOUND)
            .max_active(1)
            .affinity_scope(AffinityScope::Cache)
            .build()
            .unwrap();
        let Some(pods) = two_pods_of_first_node(&wq) else {
            eprintln!("needs two CPUs");
            return;
        };
        let (behind, runs) = common::counting_item();
        let seen = Arc::new(Mutex::new(None));
        let (s, b, w2, cpu_b) = (seen.clone(), behind.clone(), wq.clone(), pods[1][0]);
        let first = Work::new(move |_| {
            assert!(w2.queue_on(cpu_b, &b).unwrap());
            *s.lock().unwrap() = Some(b.try_flush());
        });
        assert!(wq.queue_on(pods[0][0], &first).unwrap());
        first.flush();
        let got = seen.lock().unwrap().take().expect("the first item ran");
        assert!(matches!(got, Err(Error::FlushDependency { .. })), "{got:?}");
        // The caller's slot went to pod B once it returned.
        behind.flush();
        assert_eq!(runs.load(Ordering::SeqCst), 1, "it ran after the caller");
        println!("passed");
    });
}

#[test]
fn set_min_active_follows_the_kernels_rules() {
    // No process-wide state: runs in the test process.
    let wq = Workqueue::new("min-rules", WqFlags::UNBOUND, 4).unwrap();
    assert_eq!(wq.min_active(), 4, "min(max_active, 8)");
    let dfl = Workqueue::new("min-rules-dfl", WqFlags::UNBOUND, 0).unwrap();
    assert_eq!(dfl.min_active(), cmwq::WQ_DFL_MIN_ACTIVE);
    assert_eq!(
        wq.set_min_active(5),
        Err(Error::InvalidMinActive {
            min_active: 5,
            max_active: 4
        })
    );
    assert_eq!(wq.min_active(), 4, "a refused value changes nothing");
    wq.set_min_active(0).unwrap();
    assert_eq!(wq.min_active(), 0);
    wq.set_min_active(4).unwrap();
    // Lowering max_active lowers min_active; raising it does not raise it back.
    wq.set_max_active(2).unwrap();
    assert_eq!(wq.min_active(), 2);
    wq.set_max_active(16).unwrap();
    assert_eq!(wq.min_active(), 2);

    let percpu = Workqueue::new("min-rules-percpu", WqFlags::PERCPU, 4).unwrap();
    assert!(matches!(
        percpu.set_min_active(1),
        Err(Error::MinActiveUnsupported { .. })
    ));
    let ordered = Workqueue::ordered("min-rules-ordered", WqFlags::empty()).unwrap();
    assert!(matches!(
        ordered.set_min_active(1),
        Err(Error::MinActiveUnsupported { .. })
    ));
    assert_eq!(ordered.min_active(), 1);
    let gone = wq.clone();
    wq.destroy();
    assert!(matches!(
        gone.set_min_active(1),
        Err(Error::Destroyed { .. })
    ));
}
