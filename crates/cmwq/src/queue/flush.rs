//! Flushing: waiting for one item ([`Work::flush`]), for everything queued on a workqueue
//! before a point ([`Workqueue::flush`], by flush colors), and until a workqueue is empty
//! ([`Workqueue::drain`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::os::sync::Completion;
use crate::pool::pool_by_id;
use crate::pool::worker;
use crate::queue::node_active;
use crate::queue::workqueue::{state, WqFlags, WqShared};
use crate::work::data::{State, NR_COLORS};
use crate::{Error, Work, Workqueue};

/// Waits for `c`, as a sleep for concurrency management when it has to wait at all.
pub(crate) fn wait(c: &Completion) {
    if !c.is_done() {
        crate::cm::blocking(|| c.wait());
    }
}

fn next_color(c: u8) -> u8 {
    ((c as usize + 1) % NR_COLORS) as u8
}

// ===== Work::flush =====

impl Work {
    /// Waits until the last queued instance of this item has finished. Returns `false` at once
    /// if the item was idle (neither pending nor running).
    ///
    /// Called from inside the item itself this would wait for itself forever: it logs a warning
    /// and returns `false` instead (see [`try_flush`](Self::try_flush)).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use cmwq::{system_unbound_wq, Work};
    ///
    /// let result = Arc::new(Mutex::new(None));
    /// let r = result.clone();
    /// let item = Work::new(move |_| *r.lock().unwrap() = Some(6 * 7));
    /// system_unbound_wq().queue(&item);
    /// // Waits for the run (`true`), or returns `false` at once if it already finished.
    /// item.flush();
    /// assert_eq!(*result.lock().unwrap(), Some(42)); // either way, the run's writes are seen
    /// assert!(!item.flush()); // idle now: returns at once
    /// ```
    ///
    /// # Blocking
    ///
    /// May sleep; on a worker thread the sleep is reported to concurrency management.
    ///
    /// An instance held by the freezer ([`freeze`](crate::freeze)) is waited for until the
    /// [`thaw`](crate::thaw), as in the kernel.
    pub fn flush(&self) -> bool {
        let result = if worker::is_current(self) {
            Err(Error::SelfFlush)
        } else {
            flush_work(self, false)
        };
        result.unwrap_or_else(|err| {
            tracing::warn!(target: "cmwq", function = self.func_name(), "{err}");
            false
        })
    }

    /// Like [`flush`](Self::flush), with the flushes that cannot finish reported as errors:
    /// `Err(Error::SelfFlush)` from inside the item itself, and `Err(Error::FlushDependency)`
    /// from an item whose queue can run one item at a time (ordered, or `max_active` 1) when
    /// this item waits behind the caller on that queue: it cannot start before the caller
    /// returns. `Err(Error::Frozen)` if, at the call, the freezer holds the instance it would
    /// wait for (it runs only after [`thaw`](crate::thaw); `flush` waits for it).
    pub fn try_flush(&self) -> Result<bool, Error> {
        if worker::is_current(self) {
            return Err(Error::SelfFlush);
        }
        if let Some(workqueue) = crate::queue::freezer::holder_of(self) {
            return Err(Error::Frozen { workqueue });
        }
        flush_work(self, false)
    }
}

/// Waits for the pending instance of `work` (unless `running_only`) or, if it is not queued,
/// for the running one. Returns whether it waited; `Err(FlushDependency)` instead of waiting
/// for an instance that can only start after the calling item returns.
pub(crate) fn flush_work(work: &Work, running_only: bool) -> Result<bool, Error> {
    match register_flush_work(work, running_only, Completion::new)? {
        Some(done) => {
            wait(&done);
            Ok(true)
        }
        None => Ok(false),
    }
}

/// The registration half of [`flush_work`]: lists a completion made by `new` where the
/// instance it waits for will complete it, and returns it (`None`: nothing to wait for). The
/// completion is completed with no pool lock held (by the worker after the run, or by a
/// cancel after it unlocked), so it may be an async one.
pub(crate) fn register_flush_work(
    work: &Work,
    running_only: bool,
    new: fn() -> Completion,
) -> Result<Option<Arc<Completion>>, Error> {
    let key = work.key();
    let me = worker::with_worker(|w| (w.pool.id, w.id));
    loop {
        let Some(pool) = pool_by_id(work.data().state().pool()) else {
            return Ok(None);
        };
        let done = Arc::new(new());
        let target_flags;
        {
            let mut g = pool.locked.lock();
            // Under the pool lock the word is stable as far as this pool is concerned: an item
            // whose word names this pool as queued is on one of its lists (ownership rule).
            let st = work.data().state();
            if st.pool() != pool.id {
                continue; // moved meanwhile: look again
            }
            match st {
                State::Queued { slot, inactive, .. } if !running_only => {
                    let p = g.pwq(slot);
                    target_flags = p.wq.flags;
                    // The configured limit, also while the freezer holds the pwq at 0: what
                    // matters is whether the item can start once thawed.
                    let max_active = if p.is_frozen() {
                        p.wq.max_active()
                    } else {
                        p.max_active
                    };
                    // The caller holds the only active slot of the pwq this item waits on, or
                    // of its node, shared with the caller's pwq (`queue/node_active.rs`).
                    let shared_with_me = inactive
                        && max_active <= 1
                        && p.shared_node
                        && worker::current_wq_id() == Some(p.wq.id)
                        && worker::with_worker(|w| node_active::pool_node(&w.pool) == p.node)
                            .unwrap_or(false);
                    let blocked_by_me = shared_with_me
                        || inactive
                            && max_active <= 1
                            && me.is_some_and(|(pool_id, id)| {
                                pool_id == pool.id
                                    && g.workers[id]
                                        .as_ref()
                                        .is_some_and(|w| w.current.is_some_and(|(_, s)| s == slot))
                            });
                    if blocked_by_me {
                        return Err(Error::FlushDependency {
                            workqueue: g.pwq(slot).wq.name.clone(),
                        });
                    }
                    g.flush_waiters.entry(key).or_default().push(done.clone());
                }
                _ => match g.busy.get(&key) {
                    Some(&w) => {
                        let (_, slot) = g.worker(w).current.expect("a busy worker has an item");
                        target_flags = g.pwq(slot).wq.flags;
                        g.worker(w).current_waiters.push(done.clone());
                    }
                    None => return Ok(None),
                },
            }
        }
        check_flush_dependency(target_flags);
        return Ok(Some(done));
    }
}

/// The kernel's `check_flush_dependency`: an item of a `MEM_RECLAIM` queue that waits for a
/// queue without it may wait for ever when memory is short (that queue has no rescuer).
/// Warned once per process, as the kernel's `WARN_ONCE`.
fn check_flush_dependency(target: WqFlags) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if target.contains(WqFlags::MEM_RECLAIM) {
        return;
    }
    if !worker::current_wq_flags().is_some_and(|f| f.contains(WqFlags::MEM_RECLAIM)) {
        return;
    }
    let Some(name) = worker::current_wq_name() else {
        return;
    };
    // Relaxed: a once-flag for a warning.
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            target: "cmwq",
            workqueue = %name,
            "an item of MEM_RECLAIM workqueue {name:?} waits for a workqueue without \
             MEM_RECLAIM: it may wait for ever when threads cannot be made"
        );
    }
}

// ===== Workqueue::flush (flush colors) =====

/// Flush-color state guarded by the workqueue mutex.
#[derive(Default)]
pub(crate) struct FlushLocked {
    /// Color stamped on new items.
    work_color: u8,
    /// Oldest color still being flushed.
    flush_color: u8,
    /// The flusher that watches the pwqs and cascades when they drain.
    first_flusher: Option<Arc<Completion>>,
    /// Flushers waiting their turn, with their colors.
    flusher_queue: VecDeque<(u8, Arc<Completion>)>,
    /// Flushers that found all 16 colors in use.
    flusher_overflow: VecDeque<Arc<Completion>>,
}

/// Flush state touched under pool locks.
#[derive(Default)]
pub(crate) struct FlushState {
    /// Pwqs still holding items of the flushed color (+1 while arming).
    nr_pwqs_to_flush: AtomicUsize,
    /// The first flusher's completion (a leaf lock: taken under pool locks).
    first_flusher_done: Mutex<Option<Arc<Completion>>>,
}

impl FlushState {
    /// Called under a pool lock when a pwq's last item of the flushed color retires.
    pub(crate) fn pwq_flushed(&self) {
        // AcqRel: the decrement that reaches zero acquires every earlier decrement's release,
        // so the flusher woken below sees all retirements.
        if self.nr_pwqs_to_flush.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(c) = &*self.first_flusher_done.lock() {
                c.complete();
            }
        }
    }
}

impl FlushLocked {
    /// The color stamped on new items: a pwq linked now starts with it (the kernel's
    /// `link_pwq`), so that flushes in progress wait only for what was queued before them.
    pub(crate) fn work_color(&self) -> u8 {
        self.work_color
    }
}

fn set_first_flusher(wq: &WqShared, f: &mut FlushLocked, c: Option<Arc<Completion>>) {
    *wq.flush_state.first_flusher_done.lock() = c.clone();
    f.first_flusher = c;
}

/// Arms the pwqs for `flush_color` and/or advances their work color (the kernel's
/// `flush_workqueue_prep_pwqs`). Returns whether some pwq has items of `flush_color`; if none
/// has, the first flusher is completed here.
fn prep_pwqs(wq: &WqShared, flush_color: Option<u8>, work_color: Option<u8>) -> bool {
    let st = &wq.flush_state;
    if flush_color.is_some() {
        debug_assert_eq!(st.nr_pwqs_to_flush.load(Ordering::Relaxed), 0);
        st.nr_pwqs_to_flush.store(1, Ordering::Relaxed);
    }
    let mut wait = false;
    for pwq in wq.pwqs() {
        let mut g = pwq.pool.locked.lock();
        let Some(p) = g.pwq_of(pwq.slot, wq.id) else {
            continue; // released by destroy: nothing in flight there
        };
        if let Some(fc) = flush_color {
            if p.nr_in_flight[fc as usize] > 0 {
                p.flush_color = Some(fc);
                st.nr_pwqs_to_flush.fetch_add(1, Ordering::Relaxed);
                wait = true;
            }
        }
        if let Some(wc) = work_color {
            p.work_color = wc;
        }
    }
    if flush_color.is_some() {
        st.pwq_flushed();
    }
    wait
}

/// `__flush_workqueue`: waits for every item queued before the call.
pub(crate) fn flush_shared(wq: &WqShared) -> Result<(), Error> {
    if wq.is_current() {
        return Err(Error::SelfFlush);
    }
    check_flush_dependency(wq.flags);
    let me = Arc::new(Completion::new());
    {
        let mut l = wq.mutex.lock();
        let f = &mut l.flush;
        let next = next_color(f.work_color);
        if next != f.flush_color {
            let my_color = f.work_color;
            f.work_color = next;
            if f.first_flusher.is_none() {
                set_first_flusher(wq, f, Some(me.clone()));
                if !prep_pwqs(wq, Some(my_color), Some(next)) {
                    // Nothing in flight: done.
                    f.flush_color = next;
                    set_first_flusher(wq, f, None);
                    return Ok(());
                }
            } else {
                f.flusher_queue.push_back((my_color, me.clone()));
                prep_pwqs(wq, None, Some(next));
            }
        } else {
            // All colors are in use: wait for one to free up.
            f.flusher_overflow.push_back(me.clone());
        }
    }
    wait(&me);

    // Only the first flusher cascades to the next colors.
    let mut l = wq.mutex.lock();
    let f = &mut l.flush;
    if !f
        .first_flusher
        .as_ref()
        .is_some_and(|c| Arc::ptr_eq(c, &me))
    {
        return Ok(());
    }
    set_first_flusher(wq, f, None);
    loop {
        while f
            .flusher_queue
            .front()
            .is_some_and(|(c, _)| *c == f.flush_color)
        {
            let (_, done) = f.flusher_queue.pop_front().expect("checked");
            done.complete();
        }
        f.flush_color = next_color(f.flush_color);
        if !f.flusher_overflow.is_empty() {
            let color = f.work_color;
            for done in f.flusher_overflow.drain(..) {
                f.flusher_queue.push_back((color, done));
            }
            f.work_color = next_color(f.work_color);
            prep_pwqs(wq, None, Some(f.work_color));
        }
        let Some((color, next)) = f.flusher_queue.pop_front() else {
            debug_assert_eq!(f.flush_color, f.work_color);
            break;
        };
        debug_assert_eq!(color, f.flush_color);
        set_first_flusher(wq, f, Some(next));
        if prep_pwqs(wq, Some(f.flush_color), None) {
            break;
        }
        // That color had nothing in flight (prep completed the flusher): cascade again.
        set_first_flusher(wq, f, None);
    }
    Ok(())
}

/// `drain_workqueue`: flushes until the queue is empty, refusing outside queueing meanwhile.
pub(crate) fn drain_shared(wq: &WqShared) -> Result<(), Error> {
    if wq.is_current() {
        return Err(Error::SelfFlush);
    }
    crate::queue::freezer::warn_if_held(wq);
    {
        let mut l = wq.mutex.lock();
        l.nr_drainers += 1;
        // Release: pairs with the Acquire state load in `insert_owned`.
        wq.state.fetch_or(state::DRAINING, Ordering::Release);
    }
    let mut flushes = 0u32;
    loop {
        flush_shared(wq)?;
        if quiescent(wq) {
            break;
        }
        flushes += 1;
        if flushes == 10 || (flushes % 100 == 0 && flushes <= 1000) {
            tracing::warn!(
                target: "cmwq",
                workqueue = %wq.name,
                "drain isn't complete after {flushes} tries"
            );
        }
    }
    let mut l = wq.mutex.lock();
    l.nr_drainers -= 1;
    if l.nr_drainers == 0 {
        wq.state.fetch_and(!state::DRAINING, Ordering::Release);
    }
    Ok(())
}

/// One pwq's emptiness and insertion count, read under its pool lock; `None` if it holds an
/// item (queued, inactive or running).
fn scan(wq: &WqShared) -> Option<Vec<u64>> {
    wq.pwqs()
        .iter()
        .map(|pwq| {
            let mut g = pwq.pool.locked.lock();
            match g.pwq_of(pwq.slot, wq.id) {
                Some(p) if p.is_idle() => Some(p.nr_queued),
                Some(_) => None,
                None => Some(u64::MAX), // released by destroy
            }
        })
        .collect()
}

/// Whether no item of `wq` is queued or running anywhere, proven at one moment across all its
/// pwqs although their pools are locked one at a time: two scans that both find every pwq
/// empty, each pwq with the same insertion count in both.
///
/// Why that is a proof: every item enters a pwq by an insertion, counted under its pool lock.
/// Between the end of the first scan and the start of the second, no pwq received an
/// insertion (its count did not change between its two readings, which enclose that
/// interval). An item in flight then was inserted before its pwq's first reading, so that
/// reading would have seen it. So at that interval nothing was in flight; afterwards only a
/// running item of `wq` could queue onto it (chained queueing) while it drains or is being
/// destroyed, and none runs. A chain hopping between CPUs with `queue_on` always has a link
/// in flight (the next one is inserted before the current one retires), so it is never
/// mistaken for quiescence.
pub(crate) fn quiescent(wq: &WqShared) -> bool {
    match (scan(wq), scan(wq)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

impl Workqueue {
    /// Waits for every item queued before the call (inactive ones included) and for none
    /// queued after: a self-requeueing item cannot make it wait forever.
    ///
    /// From one of this queue's own items it would wait for itself: it logs a warning and
    /// returns at once (see [`try_flush`](Self::try_flush)).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use cmwq::{Work, Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::new("flush-example", WqFlags::empty(), 0)?;
    /// let done = Arc::new(AtomicUsize::new(0));
    /// let items: Vec<Work> = (0..8)
    ///     .map(|_| {
    ///         let d = done.clone();
    ///         Work::new(move |_| {
    ///             d.fetch_add(1, Ordering::SeqCst);
    ///         })
    ///     })
    ///     .collect();
    /// for item in &items {
    ///     wq.queue(item);
    /// }
    /// wq.flush(); // every item queued before the call has finished
    /// assert_eq!(done.load(Ordering::SeqCst), 8);
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    ///
    /// Items held by the freezer ([`freeze`](crate::freeze)) are waited for until the
    /// [`thaw`](crate::thaw), as in the kernel: do not flush a frozen queue from the thread
    /// that will thaw it ([`try_flush`](Self::try_flush) reports it instead).
    pub fn flush(&self) {
        if let Err(err) = flush_shared(self.shared()) {
            tracing::warn!(target: "cmwq", workqueue = %self.name(), "{err}");
        }
    }

    /// Like [`flush`](Self::flush), with the self-flush reported as `Err(Error::SelfFlush)`,
    /// and `Err(Error::Frozen)` at once, without waiting, if the freezer holds items of this
    /// queue at the call (they were queued before it, so the flush would wait for the thaw).
    pub fn try_flush(&self) -> Result<(), Error> {
        check_not_held(self.shared())?;
        flush_shared(self.shared())
    }

    /// Waits until the queue is empty, chained self-requeues included. Meanwhile queueing from
    /// anywhere but the queue's own items is refused (`false` from `queue`, `Err` from
    /// `try_queue`) and leaves the item not pending.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use cmwq::{Work, Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::new("drain-example", WqFlags::UNBOUND, 0)?;
    /// let steps = Arc::new(AtomicUsize::new(0));
    /// let (s, w) = (steps.clone(), wq.clone());
    /// // Each run queues the next one, five runs in all: a chain `flush` would not wait for.
    /// let chain = Work::new(move |me| {
    ///     if s.fetch_add(1, Ordering::SeqCst) + 1 < 5 {
    ///         w.queue(me);
    ///     }
    /// });
    /// wq.queue(&chain);
    /// wq.drain(); // waits for the whole chain
    /// assert_eq!(steps.load(Ordering::SeqCst), 5);
    /// assert!(!chain.is_pending());
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    ///
    /// On a frozen queue holding items it logs a warning and waits for the
    /// [`thaw`](crate::thaw) (as `destroy` does, like the kernel's).
    pub fn drain(&self) {
        if let Err(err) = drain_shared(self.shared()) {
            tracing::warn!(target: "cmwq", workqueue = %self.name(), "{err}");
        }
    }

    /// Like [`drain`](Self::drain), with draining from the queue's own item reported as
    /// `Err(Error::SelfFlush)`, and `Err(Error::Frozen)` at once if the freezer holds items of
    /// this queue at the call.
    pub fn try_drain(&self) -> Result<(), Error> {
        check_not_held(self.shared())?;
        drain_shared(self.shared())
    }
}

/// `Err(Error::Frozen)` if the freezer holds items of `wq` now.
fn check_not_held(wq: &WqShared) -> Result<(), Error> {
    if crate::queue::freezer::holds_items_of(wq) {
        return Err(Error::Frozen {
            workqueue: wq.name.clone(),
        });
    }
    Ok(())
}
