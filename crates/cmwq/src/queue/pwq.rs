//! Pool workqueues: the link between one workqueue and one worker pool.
//!
//! A [`PoolWorkqueue`] is the workqueue's handle on its slot in a pool; the slot's mutable state
//! ([`PwqLocked`]: `nr_active`, the inactive list, the per-color in-flight counts) lives inside
//! the pool's [`PoolLocked`], so the pool lock guards it, as `pool->lock` guards a pwq's counters
//! in the kernel.

use std::sync::Arc;

use crate::pool::list::ItemList;
use crate::pool::{kick_pool, Entry, Kick, PoolLocked, WorkerPool};
use crate::queue::attrs::WorkqueueAttrs;
use crate::queue::node_active::{self, NodeHandoff};
use crate::queue::workqueue::WqShared;
use crate::work::data::{self, NR_COLORS};

/// The workqueue's handle on its slot in a pool.
#[derive(Clone)]
pub(crate) struct PoolWorkqueue {
    pub(crate) pool: Arc<WorkerPool>,
    /// Index in `PoolLocked::pwqs`.
    pub(crate) slot: u32,
}

/// What [`select_pwq`](crate::queue::workqueue::WqShared::select_pwq) reads: the pwqs new
/// items go to and, for an unbound queue with several pods, the pod of each CPU; with the
/// attributes they were made for. Immutable once published: per-CPU queues keep the one of
/// their creation, `apply_attrs` publishes a new one for an unbound queue (the kernel's
/// `cpu_pwq` and `dfl_pwq` after `apply_wqattrs_commit`).
pub(crate) struct PwqTable {
    /// One per possible CPU, by possible-CPU index (per-CPU queues), one per pod (unbound) or
    /// exactly one (ordered).
    pub(crate) pwqs: Vec<PoolWorkqueue>,
    /// Unbound queues with several pods: `pod_of_cpu[idx]` is the index in `pwqs` of the pod
    /// of the possible CPU at index `idx` (0, the first pod, for CPUs outside the cpumask).
    /// Empty otherwise.
    pub(crate) pod_of_cpu: Vec<u32>,
    /// The attributes in force (see [`Workqueue::attrs`](crate::Workqueue::attrs)).
    pub(crate) attrs: WorkqueueAttrs,
}

/// The report counters of pwqs summed: those of a queue's released pwqs (`apply_attrs`
/// replaced them), kept so that the queue's statistics do not go back when a pwq goes, and the
/// sum the statistics make of them and the linked pwqs' (`observe/stats.rs`). `PwqLocked`
/// keeps the same counters as fields of its own rather than one of these: `nr_started` and
/// `nr_completed` belong in its first cache line, the others in its cold tail.
#[derive(Clone, Copy, Default)]
pub(crate) struct RetiredCounters {
    /// Pwqs released so far: tells a reader whether a release happened while it walked.
    pub(crate) nr_released: u64,
    pub(crate) nr_started: u64,
    pub(crate) nr_completed: u64,
    pub(crate) nr_cpu_intensive: u64,
    pub(crate) nr_cm_wakeup: u64,
    pub(crate) nr_mayday: u64,
    pub(crate) nr_rescued: u64,
    pub(crate) nr_repatriated: u64,
    pub(crate) cpu_time: std::time::Duration,
}

impl RetiredCounters {
    /// Adds the counters of `p` (and counts it in `nr_released`: meaningful for the kept
    /// counters of released pwqs only).
    pub(crate) fn add(&mut self, p: &PwqLocked) {
        self.nr_released += 1;
        self.nr_started += p.nr_started;
        self.nr_completed += p.nr_completed;
        self.nr_cpu_intensive += p.nr_cpu_intensive;
        self.nr_cm_wakeup += p.nr_cm_wakeup;
        self.nr_mayday += p.nr_mayday;
        self.nr_rescued += p.nr_rescued;
        self.nr_repatriated += p.nr_repatriated;
        self.cpu_time += p.cpu_time;
    }
}

/// A pwq's state, guarded by its pool's lock.
///
/// Laid out by hand (`repr(C)`, aligned to a cache line): the fields that queueing and
/// retiring touch for every item come first and share one cache line, then the inactive
/// list, then the per-color counts (one line of them is used at a time), then the report
/// counters that only starts, the monitor and reports touch. A producer and a worker on
/// different CPUs pass these lines back and forth for every item.
#[repr(C, align(64))]
pub(crate) struct PwqLocked {
    pub(crate) wq: Arc<WqShared>,
    /// Items on the pool worklist, on a worker's list, or running (not counting inactive ones).
    pub(crate) nr_active: usize,
    /// Effective limit for `nr_active`: `max_active` (per-CPU queues) or the node's share
    /// (unbound queues, `node_active::effective_limit`); 0 while frozen.
    pub(crate) max_active: usize,
    /// Items ever put on this pwq (queued, re-queued or activated from a timer): the proof of
    /// quiescence compares it across two scans (see `flush::quiescent`).
    pub(crate) nr_queued: u64,
    /// Counters for reports (the kernel's `PWQ_STAT_*`; guarded by the pool lock).
    pub(crate) nr_started: u64,
    pub(crate) nr_completed: u64,
    /// The node counter of the queue this pwq counts under (index in
    /// `WqShared::node_nr_active`), or `node_active::NO_NODE` (per-CPU queues). `I`.
    pub(crate) node: u32,
    /// Color stamped on newly queued items.
    pub(crate) work_color: u8,
    /// The color this pwq is being flushed for, if it takes part in a workqueue flush.
    pub(crate) flush_color: Option<u8>,
    /// Whether the node holds other pwqs of the queue too: then an active slot is also taken
    /// from the node's shared counter (`node_active::tryinc_shared`). `I`.
    pub(crate) shared_node: bool,
    /// On the node's pending list, waiting for a slot (shared nodes only; changed with both
    /// this pool's lock and the node lock held).
    pub(crate) on_pending: bool,
    /// No longer in the queue's table (`apply_attrs` linked newer pwqs): released, its slot
    /// freed and its pool put, as soon as it is idle (the kernel drops the table's reference
    /// and `pwq_release_workfn` runs at the last `put_pwq`).
    pub(crate) replaced: bool,
    /// An ordered queue's pwq made while older ones still held items: its effective
    /// `max_active` stays 0 until it is the oldest linked pwq (the kernel's `pwq->plugged`,
    /// cleared by `unplug_oldest_pwq`), so its items run after every item of the older ones.
    pub(crate) plugged: bool,
    /// Items throttled by `max_active`, in queueing order (`INACTIVE` set in their data word).
    pub(crate) inactive: ItemList,
    /// Items queued or running, per flush color (inactive ones included).
    pub(crate) nr_in_flight: [usize; NR_COLORS],
    pub(crate) nr_cpu_intensive: u64,
    pub(crate) nr_cm_wakeup: u64,
    pub(crate) nr_mayday: u64,
    pub(crate) nr_rescued: u64,
    /// Items started by a non-strict worker found outside its pod, put back first
    /// (`PWQ_STAT_REPATRIATED`).
    pub(crate) nr_repatriated: u64,
    /// CPU time of this pwq's items, credited by the monitor's samples (`CPUtime`).
    pub(crate) cpu_time: std::time::Duration,
}

impl PwqLocked {
    pub(crate) fn new(
        wq: Arc<WqShared>,
        max_active: usize,
        work_color: u8,
        node: u32,
        shared_node: bool,
    ) -> Self {
        Self {
            wq,
            nr_active: 0,
            max_active,
            node,
            shared_node,
            on_pending: false,
            inactive: ItemList::default(),
            nr_in_flight: [0; NR_COLORS],
            work_color,
            flush_color: None,
            nr_queued: 0,
            nr_started: 0,
            nr_completed: 0,
            nr_cpu_intensive: 0,
            nr_cm_wakeup: 0,
            nr_mayday: 0,
            nr_rescued: 0,
            nr_repatriated: 0,
            cpu_time: std::time::Duration::ZERO,
            replaced: false,
            plugged: false,
        }
    }

    /// Takes an active slot if the limit allows (the kernel's `pwq_tryinc_nr_active`): the
    /// pwq's own limit, and, on a shared node, a slot of the node's counter (`fill`: see
    /// `node_active::tryinc_shared`). Counts the item in `nr_active` on success.
    #[inline]
    pub(crate) fn tryinc_nr_active(&mut self, pool_id: u32, slot: u32, fill: bool) -> bool {
        let ok = if self.shared_node {
            node_active::tryinc_shared(self, pool_id, slot, fill)
        } else {
            self.nr_active < self.max_active
        };
        if ok {
            self.nr_active += 1;
        }
        ok
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.nr_active == 0 && self.inactive.is_empty() && self.nr_in_flight.iter().all(|&n| n == 0)
    }
}

impl PoolLocked {
    /// The pwq in `slot`, which the caller knows to be in use (an item queued or running on
    /// it names it).
    pub(crate) fn pwq(&mut self, slot: u32) -> &mut PwqLocked {
        self.pwqs[slot as usize]
            .as_mut()
            .expect("pwq slot used after release")
    }

    /// The pwq in `slot` if it still belongs to workqueue `wq_id`. Slots are reused once a
    /// queue is destroyed; a handle left over from the destroyed queue finds `None` here,
    /// never the new owner's pwq (workqueue ids are never reused).
    pub(crate) fn pwq_of(&mut self, slot: u32, wq_id: u64) -> Option<&mut PwqLocked> {
        self.pwqs
            .get_mut(slot as usize)?
            .as_mut()
            .filter(|p| p.wq.id == wq_id)
    }

    /// Frees `slot` for reuse (destroy once the queue is quiescent, or an idle replaced pwq)
    /// and returns its state, for the caller to drop with the pool lock released (it holds a
    /// reference to the queue).
    pub(crate) fn take_pwq(&mut self, slot: u32) -> Option<PwqLocked> {
        let taken = self.pwqs[slot as usize].take();
        if taken.is_some() {
            self.free_slots.push(slot);
        }
        taken
    }

    /// Puts an item whose `PENDING` the caller owns on pwq `slot`: on the worklist if an active
    /// slot is free and nothing waits before it, else on the inactive list (the kernel's
    /// `__queue_work` steps 8 and 9). Returns whether the pool should be kicked.
    pub(crate) fn insert_work(
        &mut self,
        pool_id: u32,
        slot: u32,
        entry_work: crate::Work,
        function: &'static str,
    ) -> bool {
        let pwq = self.pwq(slot);
        let color = pwq.work_color;
        pwq.nr_in_flight[color as usize] += 1;
        pwq.nr_queued += 1;
        let entry = Entry {
            work: entry_work,
            slot,
            color,
            function,
        };
        if pwq.inactive.is_empty() && pwq.tryinc_nr_active(pool_id, slot, false) {
            entry
                .work
                .data()
                .set(data::queued(pool_id, slot, color, false));
            self.worklist.push_back(entry);
            true
        } else {
            entry
                .work
                .data()
                .set(data::queued(pool_id, slot, color, true));
            pwq.inactive.push_back(entry);
            false
        }
    }

    /// Moves the first inactive item of `slot` to the worklist if the limit allows it
    /// (the kernel's `pwq_activate_first_inactive`; `fill`: a raised limit or a thaw filling a
    /// shared node, see `node_active::tryinc_shared`).
    pub(crate) fn activate_first_inactive(&mut self, pool_id: u32, slot: u32, fill: bool) -> bool {
        let pwq = self.pwq(slot);
        if pwq.inactive.is_empty() || !pwq.tryinc_nr_active(pool_id, slot, fill) {
            return false;
        }
        self.activate_head(slot);
        true
    }

    /// Activates inactive items of `slot` up to its limit (on a shared node: one, so that the
    /// caller's passes over the pwqs share the node's slots in turn); returns how many moved
    /// and kicks the pool if any did. The caller makes the pool's first worker, with the lock
    /// dropped, on [`Kick::CreateFirstWorker`]: items held by the freezer may wait on a pool
    /// that never had a worker.
    pub(crate) fn activate_inactive(&mut self, pool_id: u32, slot: u32) -> (usize, Kick) {
        let one = self.pwq(slot).shared_node;
        let mut n = 0;
        while self.activate_first_inactive(pool_id, slot, true) {
            n += 1;
            if one {
                break;
            }
        }
        if n > 0 {
            (n, kick_pool(self))
        } else {
            (0, Kick::Nothing)
        }
    }

    /// Retires one in-flight item of `slot` and `color` (the kernel's `pwq_dec_nr_in_flight`):
    /// frees its active slot (activating the next inactive item) unless it was inactive, and
    /// completes the workqueue's first flusher when the last pwq of the flushed color drains.
    /// On a shared node the freed slot goes to the node's first waiting pwq, which may be on
    /// another pool: the caller runs the returned handoff once it has released this pool's
    /// lock (`NodeHandoff::NONE` everywhere else, at no cost).
    #[inline]
    pub(crate) fn dec_nr_in_flight(
        &mut self,
        slot: u32,
        color: u8,
        was_active: bool,
    ) -> NodeHandoff {
        let mut handoff = NodeHandoff::NONE;
        if was_active {
            let pwq = self.pwq(slot);
            pwq.nr_active -= 1;
            if pwq.shared_node {
                handoff = node_active::dec_shared(pwq);
            } else if pwq.nr_active < pwq.max_active && !pwq.inactive.is_empty() {
                pwq.nr_active += 1;
                self.activate_head(slot);
                let _ = kick_pool(self);
            }
        }
        let pwq = self.pwq(slot);
        let c = color as usize;
        pwq.nr_in_flight[c] -= 1;
        if pwq.flush_color == Some(color) && pwq.nr_in_flight[c] == 0 {
            pwq.flush_color = None;
            pwq.wq.flush_state.pwq_flushed();
        }
        if pwq.replaced && pwq.is_idle() {
            crate::queue::apply::release_replaced(self, slot);
        }
        handoff
    }
}
