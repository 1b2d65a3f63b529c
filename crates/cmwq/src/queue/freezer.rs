//! The freezer (the kernel's `freeze_workqueues_begin`, `freeze_workqueues_busy`,
//! `thaw_workqueues`): while the process is frozen, every pool workqueue of a
//! [`FREEZABLE`](WqFlags::FREEZABLE) queue has an effective `max_active` of 0.
//!
//! That one number is the whole mechanism, as in the kernel: `insert_work` puts an item on
//! the worklist only below the pwq's effective limit, so newly queued items (and delayed items
//! whose timers fire) go to the inactive list in queueing order and stay pending; items
//! already active (on the worklist or running) finish, which is what [`freeze_busy`] reports;
//! [`thaw`] restores each pwq's limit to its share of the queue's configured `max_active` and
//! activates the held items in order. Queues created while frozen start frozen; `set_max_active` while
//! frozen stores the new limit for the thaw (both go through [`wq_adjust_max_active`]).
//!
//! Lock order: the freezer lock → the workqueue list (taken and released to copy it) → a
//! workqueue's mutex → a pool lock. [`wq_adjust_max_active`] reads the freezing flag under the
//! workqueue mutex and never takes the freezer lock, so `set_max_active` (which holds the
//! mutex) cannot deadlock against a freeze.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::pool;
use crate::queue::node_active;
use crate::queue::pwq::PwqLocked;
use crate::queue::workqueue::{all_workqueues, WqFlags, WqLocked, WqShared};
use crate::work::data::State;
use crate::Work;

/// Serialises [`freeze`], [`thaw`], [`freeze_busy`] and the adjustment of a new queue (the
/// part of the kernel's `wq_pool_mutex` that guards the freezer). Guards no data: the flag it
/// orders is [`FREEZING`].
static FREEZER: Mutex<()> = Mutex::new(());

/// Whether the freezer is on (the kernel's `workqueue_freezing`).
///
/// | value | meaning | written by |
/// |---|---|---|
/// | `false` | thawed: every pwq's effective limit is its queue's `max_active` (initial) | [`thaw`] |
/// | `true` | frozen: pwqs of `FREEZABLE` queues have an effective limit of 0 | [`freeze`] |
///
/// Written only under [`FREEZER`]. Relaxed everywhere: the writer stores it before it takes
/// each workqueue's mutex to adjust that queue, and [`wq_adjust_max_active`] reads it under the
/// same mutex, so the mutex orders the store before every read that could miss the writer's
/// own adjustment (a read that the writer's adjustment follows is overwritten by it). Queue
/// creation reads it under [`FREEZER`].
static FREEZING: AtomicBool = AtomicBool::new(false);

impl PwqLocked {
    /// Whether the freezer holds this pwq: its effective limit is 0 and it is not plugged
    /// (an ordered queue's pwq waiting for older ones, see `apply_attrs`), which happens only
    /// while frozen (a configured `max_active` of 0 means 1024).
    pub(crate) fn is_frozen(&self) -> bool {
        self.max_active == 0 && !self.plugged
    }
}

/// The effective `max_active` of a pwq of `wq` on `node` (the one place that computes it,
/// for every adjustment and for an ordered queue's unplugged pwq): 0 while `plugged` (an
/// ordered queue's pwq waiting for older ones, see `apply_attrs`) or, for a `FREEZABLE`
/// queue, while frozen; else its share of the configured `max_active`
/// (`node_active::effective_limit`: `max_active` itself for a per-CPU queue). The caller
/// holds the workqueue mutex (`l` is its guarded state).
pub(crate) fn pwq_max_active(wq: &WqShared, l: &WqLocked, node: u32, plugged: bool) -> usize {
    let frozen = wq.flags.contains(WqFlags::FREEZABLE) && FREEZING.load(Ordering::Relaxed);
    if plugged {
        0
    } else {
        node_active::pwq_limit(wq, l, node, frozen)
    }
}

/// Sets every linked pwq of `wq` (old and new ones across `apply_attrs`) to its effective
/// limit ([`pwq_max_active`], the kernel's `wq_adjust_max_active`); activates what
/// the new limits let go, in passes over the pwqs until one activates nothing (a pwq on a
/// shared node activates one item per pass, so the node's slots are shared in turn). The
/// caller holds the workqueue mutex (`l` is its guarded state).
pub(crate) fn wq_adjust_max_active(wq: &WqShared, l: &WqLocked) {
    let frozen = wq.flags.contains(WqFlags::FREEZABLE) && FREEZING.load(Ordering::Relaxed);
    node_active::update_node_limits(wq, l, frozen);
    let mut first = true;
    loop {
        let mut moved = 0;
        // Only pwqs on shared nodes activate one item per pass; without any, one pass is all.
        let mut any_shared = false;
        for pwq in wq.pwqs() {
            let mut g = pwq.pool.locked.lock();
            // A slot a destroy racing with us has released (and maybe reused) is skipped.
            let Some(p) = g.pwq_of(pwq.slot, wq.id) else {
                continue;
            };
            if first {
                p.max_active = pwq_max_active(wq, l, p.node, p.plugged);
            }
            any_shared |= p.shared_node;
            // Items held since before the pool's first item ever ran: the pool may have no
            // worker yet (queueing an inactive item never makes one). Made with the pool lock
            // dropped.
            let (n, kick) = g.activate_inactive(pwq.pool.id, pwq.slot);
            moved += n;
            drop(g);
            if kick == pool::Kick::CreateFirstWorker {
                pool::manage::create_first_worker(&pwq.pool);
            }
        }
        first = false;
        if moved == 0 || !any_shared {
            return;
        }
    }
}

/// Called by creation once the new queue is on the workqueue list and before its handle is
/// returned: a `FREEZABLE` queue created while frozen starts frozen. Either a concurrent
/// [`freeze`] found the queue on the list (and adjusted it), or it had released the freezer
/// lock before this call takes it, so the flag read here is set.
pub(crate) fn adjust_new(wq: &WqShared) {
    if !wq.flags.contains(WqFlags::FREEZABLE) {
        return;
    }
    let _freezer = FREEZER.lock();
    let l = wq.mutex.lock();
    wq_adjust_max_active(wq, &l);
}

fn adjust_all() {
    for wq in all_workqueues() {
        if wq.flags.contains(WqFlags::FREEZABLE) {
            let l = wq.mutex.lock();
            wq_adjust_max_active(&wq, &l);
        }
    }
}

/// Freezes the [`FREEZABLE`](WqFlags::FREEZABLE) workqueues (the kernel's
/// `freeze_workqueues_begin`): from now until [`thaw`], items queued on them (and delayed
/// items whose timers fire) are held on their inactive lists, in queueing order, and stay
/// pending; items already active finish (poll [`freeze_busy`] to know when). Other queues run
/// normally; freezable queues created while frozen start frozen.
///
/// Returns `true` if it froze. Freezing does not nest: a second `freeze` while frozen logs a
/// warning and returns `false` (the kernel warns too), and one [`thaw`] thaws.
///
/// While frozen, `Workqueue::flush`, `Work::flush`, `drain` and `destroy` wait for held items
/// until the thaw (as in the kernel); their `try_` forms return
/// [`Error::Frozen`](crate::Error::Frozen) instead when the freezer holds what they would wait
/// for.
///
/// ```
/// use cmwq::{Work, Workqueue, WqFlags};
///
/// let wq = Workqueue::new("freeze-example", WqFlags::FREEZABLE, 0)?;
/// let item = Work::new(|_| {});
/// assert!(cmwq::freeze());
/// assert!(wq.queue(&item)); // held until the thaw
/// assert!(!wq.queue(&item)); // still pending: queueing again coalesces
/// assert!(matches!(wq.try_flush(), Err(cmwq::Error::Frozen { .. })));
/// while cmwq::freeze_busy() {
///     std::thread::yield_now(); // items active before the freeze finish
/// }
/// assert!(cmwq::thaw());
/// wq.flush(); // the held item has run
/// assert!(!item.is_pending());
/// # Ok::<(), cmwq::Error>(())
/// ```
pub fn freeze() -> bool {
    let changed = set_freezing(true);
    if !changed {
        tracing::warn!(target: "cmwq", "freeze() while already frozen: ignored (freezing does not nest)");
    }
    changed
}

/// Sets the freezing state and re-applies every freezable pwq's limit; returns `false`, and
/// changes nothing, if it already was `on`. The warning of a caller that changed nothing is
/// logged after the freezer lock is released (a subscriber is user code).
fn set_freezing(on: bool) -> bool {
    let _freezer = FREEZER.lock();
    if FREEZING.load(Ordering::Relaxed) == on {
        return false;
    }
    FREEZING.store(on, Ordering::Relaxed);
    adjust_all();
    true
}

/// Thaws the freezable workqueues (the kernel's `thaw_workqueues`): restores each pool
/// workqueue's `max_active` (the latest set, also while frozen) and activates the held items
/// in queueing order. Returns `true` if it thawed; without a [`freeze`] before it logs a
/// warning and returns `false` (the kernel ignores it).
pub fn thaw() -> bool {
    let changed = set_freezing(false);
    if !changed {
        tracing::warn!(target: "cmwq", "thaw() while not frozen: ignored");
    }
    changed
}

/// Whether items of freezable workqueues are still active (the kernel's
/// `freeze_workqueues_busy`): queued before the freeze and not yet finished, on a worklist or
/// running. Held items do not count. Called while not frozen it logs a warning (the kernel
/// warns once) and reports the same count.
pub fn freeze_busy() -> bool {
    if !FREEZING.load(Ordering::Relaxed) {
        tracing::warn!(target: "cmwq", "freeze_busy() while not frozen");
    }
    let _freezer = FREEZER.lock();
    all_workqueues()
        .iter()
        .filter(|wq| wq.flags.contains(WqFlags::FREEZABLE))
        .any(|wq| {
            wq.pwqs().iter().any(|pwq| {
                let mut g = pwq.pool.locked.lock();
                g.pwq_of(pwq.slot, wq.id).is_some_and(|p| p.nr_active > 0)
            })
        })
}

/// Whether the freezer holds items of `wq` now (on the inactive list of a pwq whose effective
/// limit is 0): a flush or drain of `wq` would wait for the thaw.
pub(crate) fn holds_items_of(wq: &WqShared) -> bool {
    wq.pwqs().iter().any(|pwq| {
        let mut g = pwq.pool.locked.lock();
        g.pwq_of(pwq.slot, wq.id)
            .is_some_and(|p| p.is_frozen() && !p.inactive.is_empty())
    })
}

/// The name of the queue whose freezer holds `work` now (queued on an inactive list of a
/// frozen pwq), if it does: flushing it would wait for the thaw.
pub(crate) fn holder_of(work: &Work) -> Option<String> {
    let pool = crate::pool::pool_by_id(work.data().state().pool())?;
    let mut g = pool.locked.lock();
    // Under the pool lock the word is stable as far as this pool is concerned.
    let st = work.data().state();
    if st.pool() != pool.id {
        return None; // moved meanwhile: not held here
    }
    match st {
        State::Queued {
            slot,
            inactive: true,
            ..
        } => {
            let p = g.pwq(slot);
            p.is_frozen().then(|| p.wq.name.clone())
        }
        _ => None,
    }
}

/// Logs once per call that a drain (or destroy) of `wq` waits for the thaw, if the freezer
/// holds its items: such a wait is never silent.
pub(crate) fn warn_if_held(wq: &WqShared) {
    if holds_items_of(wq) {
        tracing::warn!(
            target: "cmwq",
            workqueue = %wq.name,
            "workqueue {:?} is frozen: draining it waits for thaw()",
            wq.name
        );
    }
}
