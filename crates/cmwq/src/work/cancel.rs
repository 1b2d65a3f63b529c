//! Cancelling, disabling and enabling work items (the kernel's `try_to_grab_pending` family).

use crate::pool::worker;
use crate::pool::{pool_by_id, Entry, PoolLocked};
use crate::queue::flush::flush_work;
use crate::queue::node_active::NodeHandoff;
use crate::work::data::{self, State};
use crate::Work;

/// What the canceller found when it took `PENDING`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Grabbed {
    /// The item was idle.
    Idle,
    /// The item was queued and has been taken off its list.
    Pending,
}

/// Takes ownership of `work`'s `PENDING`, taking the item off whatever list it is on. Returns
/// what it found and the item's (last) pool id and disable depth. The caller must store a new
/// word to give `PENDING` up.
pub(crate) fn grab_pending(work: &Work) -> (Grabbed, u32, u32) {
    let d = work.data();
    let mut tries = 0u32;
    loop {
        // A delayed item's armed timer: disarming it hands us PENDING (set when it was armed).
        if work.delayed().is_some_and(|dw| dw.del_timer()) {
            match d.state() {
                State::OffQueue { pool, disable, .. } => return (Grabbed::Pending, pool, disable),
                State::Queued { .. } => unreachable!("an armed item is not queued"),
            }
        }
        if d.try_set_pending() {
            match d.state() {
                State::OffQueue { pool, disable, .. } => return (Grabbed::Idle, pool, disable),
                State::Queued { .. } => unreachable!("an idle item cannot be queued"),
            }
        }
        if let st @ State::Queued { pool: pool_id, .. } = d.state() {
            if let Some(pool) = pool_by_id(pool_id) {
                let mut g = pool.locked.lock();
                if d.state() == st {
                    let (entry, waiters, handoff) = take_queued(&mut g, work, st);
                    d.set(data::off_queue(pool_id, 0, true));
                    drop(g);
                    // A freed slot of a shared node goes to its next waiting pwq, unlocked.
                    handoff.run();
                    drop(entry);
                    // Completed unlocked: an async waiter's completion wakes its task.
                    for w in waiters.into_iter().flatten() {
                        w.complete();
                    }
                    return (Grabbed::Pending, pool_id, 0);
                }
            }
        }
        // Transient: a queuer or another canceller owns PENDING between lists. Their window
        // holds no lock we could be holding, so it ends.
        tries += 1;
        if tries < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}

/// Removes a queued item from its list and retires it from the pwq's counters. Returns the
/// entry, the item's flush waiters, to be completed once the pool lock is released, and the
/// node handoff to run then (`queue/node_active.rs`).
fn take_queued(
    g: &mut PoolLocked,
    work: &Work,
    st: State,
) -> (
    Entry,
    Option<Vec<std::sync::Arc<crate::os::sync::Completion>>>,
    NodeHandoff,
) {
    let State::Queued {
        slot,
        color,
        inactive,
        ..
    } = st
    else {
        unreachable!("take_queued on an item that is not queued")
    };
    let key = work.key();
    let entry = if inactive {
        g.pwq(slot).inactive.remove(work)
    } else if let Some(entry) = g.worklist.remove(work) {
        Some(entry)
    } else {
        // Re-queued while it runs: on the running worker's own (short) list.
        let is_it = |e: &Entry| e.work.key() == key;
        g.workers.iter_mut().flatten().find_map(|w| {
            let i = w.scheduled.iter().position(is_it)?;
            w.scheduled.remove(i)
        })
    };
    let entry = entry.expect("a queued item is on one of its pool's lists");
    let handoff = g.dec_nr_in_flight(slot, color, !inactive);
    let waiters = g.flush_waiters.remove(&key);
    (entry, waiters, handoff)
}

impl Work {
    /// Takes the item off its queue if it is pending; does not wait for a running instance.
    /// Returns whether it was pending.
    pub fn cancel(&self) -> bool {
        let (found, pool, disable) = grab_pending(self);
        self.data().set(data::off_queue(pool, disable, false));
        found == Grabbed::Pending
    }

    /// Cancels the item and waits for a running instance to finish. On return the item is
    /// neither pending nor running, even if it re-queues itself, unless someone queues it
    /// again after the return. Queueing attempts while it waits fail. Returns whether it was
    /// pending.
    ///
    /// From inside the item itself it cannot wait for its own return: it cancels the pending
    /// instance, logs a warning and returns.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use cmwq::{Work, Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::new("cancel-sync-example", WqFlags::UNBOUND, 0)?;
    /// let runs = Arc::new(AtomicUsize::new(0));
    /// let (r, w) = (runs.clone(), wq.clone());
    /// // An item that queues itself again on every run, for ever.
    /// let poller = Work::new(move |me| {
    ///     r.fetch_add(1, Ordering::SeqCst);
    ///     w.queue(me);
    /// });
    /// wq.queue(&poller);
    /// poller.cancel_sync(); // stops it, and waits if it is running
    /// assert!(!poller.is_pending());
    /// let after = runs.load(Ordering::SeqCst);
    /// wq.flush();
    /// assert_eq!(runs.load(Ordering::SeqCst), after); // it never ran again
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    ///
    /// # Blocking
    ///
    /// May sleep; on a worker thread the sleep is reported to concurrency management.
    pub fn cancel_sync(&self) -> bool {
        let was_pending = self.disable();
        self.wait_running();
        self.enable();
        was_pending
    }

    /// Cancels the item and increments its disable depth: queueing it does nothing until
    /// [`enable`](Self::enable) has been called as many times. Returns whether it was pending.
    ///
    /// ```
    /// use cmwq::{system_wq, Work};
    ///
    /// let item = Work::new(|_| {});
    /// item.disable();
    /// assert!(!system_wq().queue(&item)); // disabled: queueing does nothing
    /// assert!(!item.is_pending());
    /// assert!(item.enable()); // depth back to zero
    /// assert!(system_wq().queue(&item));
    /// item.flush();
    /// ```
    ///
    /// # Panics
    ///
    /// If the depth would exceed 65535 (a bug, as in the kernel).
    pub fn disable(&self) -> bool {
        let (found, pool, disable) = grab_pending(self);
        if disable >= data::MAX_DISABLE {
            self.data().set(data::off_queue(pool, disable, false));
            panic!("work item disabled more than {} times", data::MAX_DISABLE);
        }
        self.data().set(data::off_queue(pool, disable + 1, false));
        found == Grabbed::Pending
    }

    /// [`disable`](Self::disable), then waits for a running instance to finish.
    pub fn disable_sync(&self) -> bool {
        let was_pending = self.disable();
        self.wait_running();
        was_pending
    }

    /// Decrements the disable depth. Returns `true` if it reached zero (the item may be queued
    /// again). Does not queue the item.
    ///
    /// # Panics
    ///
    /// If the item is not disabled (the kernel warns of an underflow: a bug).
    pub fn enable(&self) -> bool {
        let (_, pool, disable) = grab_pending(self);
        if disable == 0 {
            self.data().set(data::off_queue(pool, 0, false));
            panic!("Work::enable on an item that is not disabled");
        }
        self.data().set(data::off_queue(pool, disable - 1, false));
        disable == 1
    }

    fn wait_running(&self) {
        if worker::is_current(self) {
            tracing::warn!(
                target: "cmwq",
                function = self.func_name(),
                "cancel_sync/disable_sync from inside the item cannot wait for itself"
            );
            return;
        }
        // Waiting for the running instance only: never a dependency error.
        let _ = flush_work(self, true);
    }
}

impl crate::Workqueue {
    /// Enables `work` ([`Work::enable`]) and, if that brought its disable depth to zero,
    /// queues it on this queue ([`queue`](Self::queue)): the kernel's
    /// `enable_and_queue_work`, for an item that must run once it is allowed to, because
    /// events may have come while it was disabled.
    ///
    /// Returns what `queue` returned, or `false` (nothing queued) if the item is still
    /// disabled. The kernel returns `true` whenever the depth reached zero; the answers differ
    /// only when the item was queued by someone else in between or the queue refused it
    /// (draining or destroyed), where this says `false`. As in the kernel, the item is queued
    /// whenever the depth reaches zero, whether or not anything happened while it was
    /// disabled.
    ///
    /// ```
    /// use cmwq::{system_wq, Work};
    ///
    /// let tx = Work::new(|_| println!("send what queued up"));
    /// tx.disable();
    /// tx.disable();
    /// assert!(!system_wq().enable_and_queue(&tx)); // depth 2 -> 1: still disabled
    /// assert!(!tx.is_pending());
    /// assert!(system_wq().enable_and_queue(&tx)); // depth 1 -> 0: queued
    /// tx.flush();
    /// ```
    ///
    /// # Panics
    ///
    /// If the item is not disabled, as [`Work::enable`].
    pub fn enable_and_queue(&self, work: &Work) -> bool {
        work.enable() && self.queue(work)
    }
}
