//! The per-node limit of unbound workqueues (the kernel's 6.9 `wq_node_nr_active`,
//! `wq_update_node_max_active`, `pwq_tryinc_nr_active`, `node_activate_pending_pwq`,
//! `pwq_dec_nr_active`).
//!
//! An unbound queue's `max_active` is a limit for the whole queue, enforced per NUMA node:
//! each node gets a share of it in proportion to the CPUs of the queue's cpumask on that node,
//! at least `min_active` (so up to `min_active` interdependent items can always run at once,
//! whatever the layout) and at most `max_active` ([`effective_limit`], the one place this is
//! computed). The shares may add up to more than `max_active`, as in the kernel.
//!
//! **Two ways to count.** A node that holds one pool workqueue of the queue (one pod per node:
//! every layout with one LLC per node, the `Numa` scope, and single-node machines with one
//! pod) needs no shared counter: that pwq's own `max_active` is the node's limit, and queueing
//! costs what it costs for a per-CPU queue. A node with two or more pwqs of the queue (pods
//! smaller than a node) counts its active items in [`NodeNrActive::nr`], shared by those pwqs
//! (`PwqLocked::shared_node`); a pwq that finds the node full waits on the node's pending list
//! and is served in turn when a slot frees (round-robin, one item per turn, as the kernel does:
//! order across pwqs is not queueing order; within a pwq it is). Whether a pwq's node is
//! shared is decided when its pwq set is linked and does not change.
//!
//! The counters live in `WqShared` (per queue, per node, plus a last slot for pods that span
//! nodes, the kernel's `NUMA_NO_NODE`, whose limit is `max_active`), so pwq sets replaced at
//! run time share them. The protocol (pool lock → node lock; a pwq on another pool is
//! activated with no lock held first) is in CONCURRENCY.md, "Per-node active limits".

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::os::cpu_topology::Topology;
use crate::pool::{self, kick_pool, Kick, PoolLocked, WorkerPool};
use crate::queue::pwq::PwqLocked;
use crate::queue::workqueue::{WqLocked, WqShared};

/// The default per-node floor of an unbound workqueue: a queue's `min_active` starts at
/// `min(max_active, WQ_DFL_MIN_ACTIVE)` (the kernel's `WQ_DFL_MIN_ACTIVE`); see
/// [`Workqueue::set_min_active`](crate::Workqueue::set_min_active).
pub const WQ_DFL_MIN_ACTIVE: usize = 8;

/// `PwqLocked::node` of a per-CPU queue's pwqs: no node counter, the limit is `max_active`.
pub(crate) const NO_NODE: u32 = u32::MAX;

/// One node's share of an unbound queue's `max_active` (the kernel's `wq_node_nr_active`).
#[derive(Default)]
pub(crate) struct NodeNrActive {
    /// The node's effective limit: [`effective_limit`] of the node, 0 while the freezer holds
    /// the queue. Written under the wq mutex (by [`update_node_limits`]); read Relaxed under a
    /// pool lock (a stale value is corrected by the passes of `wq_adjust_max_active` that
    /// follow every write).
    pub(crate) max: AtomicUsize,
    /// CPUs of the queue's cpumask on this node (the share's weight). Written with `max`.
    pub(crate) cpus: AtomicUsize,
    /// Active items of the node's shared pwqs (0 for a node whose one pwq counts alone).
    /// Relaxed: a pure count; the items it admits are published by their pool's lock, and the
    /// lost-wake-up argument goes through the node lock (CONCURRENCY.md).
    pub(crate) nr: AtomicUsize,
    /// The node lock: shared pwqs waiting for a slot, served in turn (the kernel's
    /// `pending_pwqs`). Taken under the waiting pwq's pool lock, never the other way.
    pending: Mutex<VecDeque<PendingPwq>>,
}

/// A pwq on a node's pending list, by pool id and slot (checked against the queue's id when
/// served: an entry left by a pwq that was released is skipped).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct PendingPwq {
    pool_id: u32,
    slot: u32,
}

impl NodeNrActive {
    /// Takes a slot if the node is below its limit (the kernel's `tryinc_node_nr_active`).
    fn tryinc(&self) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        self.nr
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |nr| {
                (nr < max).then_some(nr + 1)
            })
            .is_ok()
    }

    /// How many pwqs wait for a slot (dumps and tests).
    pub(crate) fn nr_pending(&self) -> usize {
        self.pending.lock().len()
    }
}

/// The effective limit of a node (the kernel's `wq_update_node_max_active` for one node):
/// `ceil(max_active × cpus / total)` clamped to `min_active..=max_active`; `min_active` when
/// the queue has no CPU at all (`total` 0), `max_active` for the slot of pods spanning nodes
/// (`cpus` `None`), 0 while frozen. The single place a pool workqueue's limit is computed:
/// per-CPU pwqs use it with `None` too.
pub(crate) fn effective_limit(
    max_active: usize,
    min_active: usize,
    cpus: Option<(usize, usize)>,
    frozen: bool,
) -> usize {
    if frozen {
        return 0;
    }
    let min_active = min_active.min(max_active);
    match cpus {
        None => max_active,
        Some((_, 0)) => min_active,
        Some((cpus, total)) => (max_active * cpus)
            .div_ceil(total)
            .clamp(min_active, max_active),
    }
}

/// The node slot of each pod: the index of the node group holding all its CPUs, or
/// `topo.node_groups().len()` (the slot for pods spanning nodes).
pub(crate) fn pod_nodes(topo: &Topology, pods: &[Vec<usize>]) -> Vec<u32> {
    let nodes = topo.node_groups();
    pods.iter()
        .map(|pod| {
            nodes
                .iter()
                .position(|n| pod.iter().all(|c| n.contains(c)))
                .unwrap_or(nodes.len()) as u32
        })
        .collect()
}

/// The node slot of an unbound pool's pod (as [`pod_nodes`]); [`NO_NODE`] for a per-CPU
/// pool.
pub(crate) fn pool_node(pool: &WorkerPool) -> u32 {
    if !pool.is_unbound() {
        return NO_NODE;
    }
    pod_nodes(
        &crate::os::cpu_topology::cached(),
        std::slice::from_ref(&pool.attrs.cpumask),
    )[0]
}

/// The node counters of a new unbound queue with `cpumask`: one per node of `topo` and one
/// for pods spanning nodes, with their CPU weights ([`set_node_cpus`]; limits are set by
/// [`update_node_limits`]).
pub(crate) fn new_node_counters(topo: &Topology, cpumask: &[usize]) -> Vec<NodeNrActive> {
    let v: Vec<NodeNrActive> = (0..=topo.node_groups().len())
        .map(|_| NodeNrActive::default())
        .collect();
    set_node_cpus(&v, topo, cpumask);
    v
}

/// Sets each node's weight to its CPUs in `cpumask` (the slot for pods spanning nodes has
/// none). Under the wq mutex, followed by `wq_adjust_max_active` (a cpumask changed at run
/// time re-splits the limit this way).
pub(crate) fn set_node_cpus(counters: &[NodeNrActive], topo: &Topology, cpumask: &[usize]) {
    for (c, n) in counters.iter().zip(topo.node_groups()) {
        c.cpus.store(
            n.iter().filter(|x| cpumask.contains(x)).count(),
            Ordering::Relaxed,
        );
    }
}

/// Whether each pod's pwq shares its node's counter: its node holds two or more pods (the
/// slot of pods spanning nodes included).
pub(crate) fn shared_nodes(nodes: &[u32]) -> Vec<bool> {
    nodes
        .iter()
        .map(|n| nodes.iter().filter(|m| *m == n).count() > 1)
        .collect()
}

/// Sets every node's limit from the queue's configured `max_active` and `min_active` (the
/// kernel's `wq_update_node_max_active`); 0 while `frozen`. The caller holds the wq mutex and
/// then sets each pwq's `max_active` to [`pwq_limit`].
pub(crate) fn update_node_limits(wq: &WqShared, l: &WqLocked, frozen: bool) {
    let Some((last, nodes)) = wq.node_nr_active.split_last() else {
        return;
    };
    let total: usize = nodes.iter().map(|n| n.cpus.load(Ordering::Relaxed)).sum();
    for n in nodes {
        let cpus = n.cpus.load(Ordering::Relaxed);
        let max = effective_limit(l.max_active, l.min_active, Some((cpus, total)), frozen);
        n.max.store(max, Ordering::Relaxed);
    }
    last.max.store(
        effective_limit(l.max_active, l.min_active, None, frozen),
        Ordering::Relaxed,
    );
}

/// The effective limit of a pwq on `node` once [`update_node_limits`] ran: its node's limit,
/// or, for a per-CPU queue's pwqs ([`NO_NODE`]), `max_active` (0 while frozen).
pub(crate) fn pwq_limit(wq: &WqShared, l: &WqLocked, node: u32, frozen: bool) -> usize {
    match wq.node_nr_active.get(node as usize) {
        Some(n) => n.max.load(Ordering::Relaxed),
        None => effective_limit(l.max_active, l.min_active, None, frozen),
    }
}

/// Whether `pwq` may make one more item active, taking the slot if so (the kernel's
/// `pwq_tryinc_nr_active` for a shared node; the caller holds `pwq`'s pool lock and counts the
/// item in `pwq.nr_active` on success). A pwq already waiting for the node does not jump the
/// line unless `fill` (a raised limit, or a thaw, filling the node). On failure the pwq is on
/// the node's pending list.
pub(crate) fn tryinc_shared(pwq: &mut PwqLocked, pool_id: u32, slot: u32, fill: bool) -> bool {
    if pwq.on_pending && !fill {
        return false;
    }
    // Disjoint borrows: the node counter through `wq`, the flag mutably.
    let PwqLocked {
        wq,
        node,
        on_pending,
        ..
    } = pwq;
    let node = &wq.node_nr_active[*node as usize];
    if node.tryinc() {
        return true;
    }
    // Pool lock → node lock. A slot freed before we take it is seen by the retry below; one
    // freed after is handed to us by its releaser, which looks at the list under this lock.
    let mut pending = node.pending.lock();
    if !*on_pending {
        pending.push_back(PendingPwq { pool_id, slot });
        *on_pending = true;
    }
    let obtained = node.tryinc();
    if obtained && !fill {
        // Still pending from an earlier fill is harmless: its turn finds nothing to do.
        let me = PendingPwq { pool_id, slot };
        pending.retain(|p| *p != me);
        *on_pending = false;
    }
    obtained
}

/// A slot freed on a shared node whose pending list was not empty, to be handed to the first
/// waiting pwq once the caller has released its pool lock ([`NodeHandoff::run`]).
#[must_use = "a freed node slot must be handed on, with no pool lock held"]
pub(crate) struct NodeHandoff(Option<(Arc<WqShared>, u32)>);

impl NodeHandoff {
    pub(crate) const NONE: NodeHandoff = NodeHandoff(None);

    /// Whether there is a slot to hand on.
    #[inline]
    pub(crate) fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// Hands the slot on (the kernel's `node_activate_pending_pwq`). Takes no lock on entry;
    /// the caller holds none.
    pub(crate) fn run(self) {
        if let Some((wq, node)) = self.0 {
            activate_pending(&wq, node as usize);
        }
    }
}

/// Releases one active item of shared pwq `slot` from its node (the node half of the
/// kernel's `pwq_dec_nr_active`; the caller holds the pool lock and has decremented the pwq's
/// own count). Returns the handoff to run unlocked if the node has room and pwqs wait.
pub(crate) fn dec_shared(pwq: &PwqLocked) -> NodeHandoff {
    let node = &pwq.wq.node_nr_active[pwq.node as usize];
    let nr = node.nr.fetch_sub(1, Ordering::Relaxed) - 1;
    if nr >= node.max.load(Ordering::Relaxed) {
        return NodeHandoff::NONE;
    }
    // Under the node lock: a pwq that failed to get a slot is on the list before it retries,
    // so either its retry sees our decrement or we see it here.
    if node.pending.lock().is_empty() {
        return NodeHandoff::NONE;
    }
    NodeHandoff(Some((pwq.wq.clone(), pwq.node)))
}

/// Serves the first pwq waiting on `node` of `wq`: locks its pool (no lock held before),
/// then the node lock, takes a slot, activates its first inactive item and rotates it to the
/// end of the list if more wait (or drops it from the list if none do). A pwq found with
/// nothing inactive (cancelled meanwhile) is dropped and the next one served. If another
/// queuer took the freed slot first, nothing is activated: that queuer's item hands its slot
/// on when it retires.
fn activate_pending(wq: &WqShared, node: usize) {
    let nna = &wq.node_nr_active[node];
    loop {
        let Some(first) = nna.pending.lock().front().copied() else {
            return;
        };
        let Some(pool) = pool::pool_by_id(first.pool_id) else {
            // The pool is gone: so is the pwq.
            drop_entry(nna, first);
            continue;
        };
        let mut g = pool.locked.lock();
        let mut pending = nna.pending.lock();
        if pending.front() != Some(&first) {
            continue; // served or rotated meanwhile: look again
        }
        let waiting = g
            .pwq_of(first.slot, wq.id)
            .filter(|p| p.on_pending && p.shared_node && p.node as usize == node);
        let Some(p) = waiting else {
            pending.pop_front();
            continue;
        };
        if p.inactive.is_empty() {
            p.on_pending = false;
            pending.pop_front();
            continue;
        }
        if !nna.tryinc() {
            return;
        }
        p.nr_active += 1;
        pending.pop_front();
        if p.inactive.len() > 1 {
            pending.push_back(first);
        } else {
            p.on_pending = false;
        }
        drop(pending);
        g.activate_head(first.slot);
        let kick = kick_pool(&mut g);
        drop(g);
        if kick == Kick::CreateFirstWorker {
            pool::manage::create_first_worker(&pool);
        }
        return;
    }
}

/// Drops `entry` from the front of the list if it is still there.
fn drop_entry(nna: &NodeNrActive, entry: PendingPwq) {
    let mut pending = nna.pending.lock();
    if pending.front() == Some(&entry) {
        pending.pop_front();
    }
}

impl PoolLocked {
    /// Moves the first inactive item of `slot` to the worklist; the caller has counted it
    /// active.
    pub(crate) fn activate_head(&mut self, slot: u32) {
        let pwq = self.pwq(slot);
        let entry = pwq
            .inactive
            .pop_front()
            .expect("activate_head on an empty inactive list");
        entry.work.data().clear_inactive();
        self.worklist.push_back(entry);
    }
}

#[cfg(test)]
mod tests {
    use super::{effective_limit, shared_nodes};

    #[test]
    fn the_share_is_by_cpus_rounded_up_and_clamped() {
        // Two equal nodes split max_active.
        assert_eq!(effective_limit(16, 1, Some((4, 8)), false), 8);
        assert_eq!(effective_limit(9, 1, Some((4, 8)), false), 5);
        // The floor: one CPU of sixteen still gets min_active.
        assert_eq!(effective_limit(64, 8, Some((1, 16)), false), 8);
        assert_eq!(effective_limit(64, 2, Some((1, 16)), false), 4);
        // Never above max_active, even with a floor above it.
        assert_eq!(effective_limit(4, 8, Some((1, 16)), false), 4);
        assert_eq!(effective_limit(4, 0, Some((16, 16)), false), 4);
        // min_active 0: the share alone, at least one item for a node with a CPU.
        assert_eq!(effective_limit(1, 0, Some((1, 16)), false), 1);
        // No CPU of the queue online: the floor. Pods spanning nodes: max_active.
        assert_eq!(effective_limit(32, 8, Some((0, 0)), false), 8);
        assert_eq!(effective_limit(32, 8, None, false), 32);
        // Frozen: nothing activates.
        assert_eq!(effective_limit(32, 8, Some((4, 8)), true), 0);
        assert_eq!(effective_limit(32, 8, None, true), 0);
    }

    #[test]
    fn a_node_is_shared_when_it_holds_two_pods() {
        assert_eq!(
            shared_nodes(&[0, 0, 1, 2, 2, 2]),
            [true, true, false, true, true, true]
        );
        assert_eq!(shared_nodes(&[0]), [false]);
    }
}
