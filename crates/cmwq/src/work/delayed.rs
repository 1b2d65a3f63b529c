//! Delayed work: a work item plus a timer that queues it when it fires (the kernel's
//! `delayed_work`).
//!
//! A delayed item is pending from the queueing call until it starts running: arming the timer
//! takes `PENDING`, and the timer hands it on when it fires (it queues the item on the
//! workqueue and CPU recorded at arming). Cancelling first tries to disarm the timer; if that
//! succeeds the canceller owns `PENDING` (the kernel's `try_to_grab_pending` with a timer).
//!
//! This layer is the timer service's client: `DelayedTimers` tells the service where an
//! item's timer is and fires it by queueing the item (the kernel's `delayed_work_timer_fn`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::os::topology;
use crate::queue::workqueue::{insert_owned, state, WqShared};
use crate::time::timer::{TimerField, TimerService, Timers};
use crate::work::cancel::{grab_pending, Grabbed};
use crate::work::data;
use crate::{Error, Work, WorkField, WorkItem, Workqueue};

/// The part of a delayed work item the engine owns: a [`WorkField`] and a timer. Embed one in
/// your own type and implement [`DelayedWorkItem`] to queue that type without a second
/// allocation.
pub struct DelayedWorkField {
    pub(crate) work: WorkField,
    pub(crate) timer: TimerField<Target>,
}

impl DelayedWorkField {
    /// A new, idle field.
    #[cfg(not(cmwq_loom))]
    pub const fn new() -> Self {
        DelayedWorkField {
            work: WorkField::new(),
            timer: TimerField::new(),
        }
    }

    /// A new, idle field (not `const` in loom model builds, as [`WorkField::new`]).
    #[cfg(cmwq_loom)]
    pub fn new() -> Self {
        DelayedWorkField {
            work: WorkField::new(),
            timer: TimerField::new(),
        }
    }

    /// Disarms a pending timer (the kernel's `timer_delete`). `true` if it was armed: the
    /// caller then owns the item's `PENDING`, set when it was armed.
    pub(crate) fn del_timer(&self) -> bool {
        TIMERS.del_timer(&self.timer).is_some()
    }
}

impl Default for DelayedWorkField {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for DelayedWorkField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedWorkField")
            .field("work", &self.work)
            .field("armed", &self.timer.is_armed())
            .finish()
    }
}

/// A type that can be queued as delayed work (Rust-for-Linux's `HasDelayedWork`).
///
/// Implementing it also makes the type a [`WorkItem`], so [`Work::from_arc`] works on it too.
pub trait DelayedWorkItem: std::any::Any + Send + Sync {
    /// The embedded [`DelayedWorkField`]. Must return the same field on every call.
    fn delayed_work_field(&self) -> &DelayedWorkField;

    /// The work function.
    fn run(&self, dw: &DelayedWork);

    /// A name for reports and traces.
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

impl<T: DelayedWorkItem> WorkItem for T {
    fn work_field(&self) -> &WorkField {
        &self.delayed_work_field().work
    }

    fn run(&self, work: &Work) {
        let me = work
            .downcast_arc::<T>()
            .expect("a delayed item's handle points at the item");
        DelayedWorkItem::run(self, &DelayedWork::from_arc(me));
    }

    fn name(&self) -> &'static str {
        DelayedWorkItem::name(self)
    }

    fn delayed_field(&self) -> Option<&DelayedWorkField> {
        Some(self.delayed_work_field())
    }
}

struct FnDelayed<F> {
    field: DelayedWorkField,
    f: F,
}

impl<F: Fn(&DelayedWork) + Send + Sync + 'static> DelayedWorkItem for FnDelayed<F> {
    fn delayed_work_field(&self) -> &DelayedWorkField {
        &self.field
    }

    fn run(&self, dw: &DelayedWork) {
        (self.f)(dw)
    }

    fn name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// A delayed work item: a [`Work`] with a timer. A cheap handle with identity; clones are the
/// same item.
///
/// It is pending from the queueing call ([`Workqueue::queue_delayed`]) until it starts
/// running: first on its timer, then on the queue.
///
/// ```
/// use std::time::Duration;
/// use cmwq::{DelayedWork, Workqueue, WqFlags};
///
/// let wq = Workqueue::new("delayed-example", WqFlags::UNBOUND, 0)?;
/// let dw = DelayedWork::new(|_| println!("an hour later (or flushed)"));
/// assert!(wq.queue_delayed(&dw, Duration::from_secs(3600)));
/// assert!(dw.is_pending()); // armed
/// assert!(!wq.queue_delayed(&dw, Duration::ZERO)); // already pending: left alone
///
/// assert!(dw.flush()); // fires the timer now and waits for the run
/// assert!(!dw.is_pending());
///
/// wq.queue_delayed(&dw, Duration::from_secs(3600));
/// assert!(dw.cancel()); // disarmed: it will not run
/// # Ok::<(), cmwq::Error>(())
/// ```
#[derive(Clone)]
pub struct DelayedWork {
    item: Arc<dyn DelayedWorkItem>,
    work: Work,
}

impl DelayedWork {
    /// A delayed item that calls `f` each time it runs.
    pub fn new<F>(f: F) -> DelayedWork
    where
        F: Fn(&DelayedWork) + Send + Sync + 'static,
    {
        Self::from_arc(Arc::new(FnDelayed {
            field: DelayedWorkField::new(),
            f,
        }))
    }

    /// A handle on a delayed item embedded in `item` (no allocation).
    pub fn from_arc<T: DelayedWorkItem>(item: Arc<T>) -> DelayedWork {
        DelayedWork {
            item: item.clone(),
            work: Work::from_arc(item),
        }
    }

    /// The embedded work item (the kernel's `dwork->work`).
    pub fn work(&self) -> &Work {
        &self.work
    }

    /// Whether the item is pending: its timer is armed, or it is queued and not yet started.
    pub fn is_pending(&self) -> bool {
        self.work.is_pending()
    }

    /// Fires a pending timer at once (queueing the item on the workqueue and CPU recorded when
    /// it was armed), then waits for the item like [`Work::flush`]. Returns `false` if the item
    /// was idle.
    pub fn flush(&self) -> bool {
        let fired = self.fire_now();
        // `|` not `||`: wait for the run even if we fired it (it may have finished already).
        self.work.flush() | fired
    }

    /// Fires a pending timer now (queues the item on the workqueue and CPU recorded when it
    /// was armed); returns whether it did. The first step of `flush` and `flush_async`.
    pub(crate) fn fire_now(&self) -> bool {
        match TIMERS.del_timer(self.timer()) {
            // We own PENDING now. A refusal (destroyed queue) releases it.
            Some(target) => insert_owned(&target.wq, target.cpu, &self.work).is_ok(),
            None => false,
        }
    }

    /// Stops a pending timer or takes the queued item off its queue; does not wait for a
    /// running instance. Returns whether it was pending.
    pub fn cancel(&self) -> bool {
        self.work.cancel()
    }

    /// Cancels and waits for a running instance; stops an item that re-arms itself from its
    /// own function (periodic work). Returns whether it was pending.
    pub fn cancel_sync(&self) -> bool {
        self.work.cancel_sync()
    }

    pub(crate) fn timer(&self) -> &TimerField<Target> {
        &self.item.delayed_work_field().timer
    }
}

impl PartialEq for DelayedWork {
    fn eq(&self, other: &Self) -> bool {
        self.work == other.work
    }
}

impl Eq for DelayedWork {}

impl fmt::Debug for DelayedWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelayedWork")
            .field("work", &self.work)
            .field("armed", &self.timer().is_armed())
            .finish()
    }
}

// ===== the timer service's client =====

/// Where an armed item goes when its timer fires, recorded at arming.
pub(crate) struct Target {
    wq: Arc<WqShared>,
    /// The CPU asked for (`queue_delayed_on`), used by `flush`; `None`: the flusher's CPU, as
    /// the kernel's `WORK_CPU_UNBOUND`.
    cpu: Option<usize>,
    /// The CPU the timer queues on: the one asked for, else the arming CPU (the kernel's
    /// timer fires on the CPU that armed it and queues there). Unbound queues ignore it.
    fire_cpu: usize,
}

/// The delayed-work layer as the timer service's client.
pub(crate) struct DelayedTimers;

impl Timers for DelayedTimers {
    type Item = DelayedWork;
    type Target = Target;

    fn field(item: &DelayedWork) -> &TimerField<Target> {
        item.timer()
    }

    /// The kernel's `delayed_work_timer_fn`: we own `PENDING` (set when armed); queueing
    /// hands it to the pool lock holder, a refusal (destroyed queue) releases it.
    fn fire(item: &DelayedWork, target: &Target) -> Result<(), Error> {
        insert_owned(&target.wq, Some(target.fire_cpu), item.work())
    }

    /// Destroy disarmed it: we own `PENDING` (the timer held it); give it up.
    fn disarmed(item: &DelayedWork, _target: Target) {
        item.work().data().release_pending();
    }
}

/// The timer service of delayed work (one thread, started at the first arming).
static TIMERS: TimerService<DelayedTimers> = TimerService::new();

// ===== queueing =====

/// Arms the timer of `dw`, whose `PENDING` the caller owns (the kernel's
/// `__queue_delayed_work`). A zero delay queues at once; a delay past `Instant`'s range never
/// fires (the item stays pending until cancelled or flushed). Refusals release `PENDING`.
fn queue_delayed_owned(
    wq: &Arc<WqShared>,
    cpu: Option<usize>,
    dw: &DelayedWork,
    delay: Duration,
) -> Result<(), Error> {
    if delay.is_zero() {
        return insert_owned(wq, cpu, &dw.work);
    }
    // Acquire: pairs with the Release state changes of drain/destroy.
    let st = wq.state.load(std::sync::atomic::Ordering::Acquire);
    if st != 0 && (st & state::DESTROYED != 0 || !wq.is_current()) {
        dw.work.data().release_pending();
        return Err(wq.refusal(st));
    }
    let target = Target {
        wq: wq.clone(),
        cpu,
        fire_cpu: cpu.unwrap_or_else(topology::current_cpu),
    };
    TIMERS.arm(dw, target, wq.id, delay);
    Ok(())
}

fn queue_delayed(
    wq: &Arc<WqShared>,
    cpu: Option<usize>,
    dw: &DelayedWork,
    delay: Duration,
) -> Result<bool, Error> {
    if !dw.work.data().try_claim() {
        return Ok(false);
    }
    queue_delayed_owned(wq, cpu, dw, delay).map(|()| true)
}

fn mod_delayed(
    wq: &Arc<WqShared>,
    cpu: Option<usize>,
    dw: &DelayedWork,
    delay: Duration,
) -> Result<bool, Error> {
    let (found, pool, disable) = grab_pending(&dw.work);
    let was_pending = found == Grabbed::Pending;
    if disable > 0 {
        dw.work.data().set(data::off_queue(pool, disable, false));
        return Ok(was_pending);
    }
    queue_delayed_owned(wq, cpu, dw, delay).map(|()| was_pending)
}

fn logged(r: Result<bool, Error>) -> bool {
    r.unwrap_or_else(|err| {
        tracing::warn!(target: "cmwq", "cannot queue delayed work: {err}");
        false
    })
}

impl Workqueue {
    /// Queues `dw` after `delay` on the CPU that armed it (bound queues: the kernel's timer
    /// fires on the arming CPU and queues there) or the queue's pool. `false` if it was
    /// already pending (its timer is left alone) or disabled. A zero delay queues at once,
    /// without a timer; a delay too large for the clock (`Duration::MAX`) never fires: the item
    /// stays pending until cancelled or flushed.
    ///
    /// A queue that refuses the item (draining or destroyed) makes it return `false` too, with
    /// a warning logged and the item left not pending; [`try_queue_delayed`](Self::try_queue_delayed)
    /// reports that as an error.
    pub fn queue_delayed(&self, dw: &DelayedWork, delay: Duration) -> bool {
        logged(queue_delayed(self.shared(), None, dw, delay))
    }

    /// Like [`queue_delayed`](Self::queue_delayed), with refusals as errors: `Ok(true)` if
    /// armed (or queued, for a zero delay), `Ok(false)` if it was already pending or is
    /// disabled, `Err(Error::Draining)` or `Err(Error::Destroyed)` if the queue refuses it
    /// (the item is left not pending).
    pub fn try_queue_delayed(&self, dw: &DelayedWork, delay: Duration) -> Result<bool, Error> {
        queue_delayed(self.shared(), None, dw, delay)
    }

    /// Like [`queue_delayed`](Self::queue_delayed), to run on `cpu`. `Err(Error::InvalidCpu)`
    /// for a CPU that is not possible (as [`queue_on`](Self::queue_on)); a refusal by the queue is
    /// `Ok(false)` (see [`try_queue_delayed_on`](Self::try_queue_delayed_on)).
    pub fn queue_delayed_on(
        &self,
        cpu: usize,
        dw: &DelayedWork,
        delay: Duration,
    ) -> Result<bool, Error> {
        topology::check_cpu(cpu)?;
        Ok(logged(queue_delayed(self.shared(), Some(cpu), dw, delay)))
    }

    /// Like [`queue_delayed_on`](Self::queue_delayed_on), with the queue's refusals as errors
    /// too (`Err(Error::Draining)`, `Err(Error::Destroyed)`; the item is left not pending).
    pub fn try_queue_delayed_on(
        &self,
        cpu: usize,
        dw: &DelayedWork,
        delay: Duration,
    ) -> Result<bool, Error> {
        topology::check_cpu(cpu)?;
        queue_delayed(self.shared(), Some(cpu), dw, delay)
    }

    /// Re-arms `dw` with `delay` wherever it is (timer or queue), or arms it if idle. Returns
    /// `true` if it was pending (modified), `false` if it was idle (the kernel's inverted
    /// sense). A disabled item is left alone.
    ///
    /// A queue that refuses it (draining or destroyed) leaves the item not pending (an earlier
    /// arming is cancelled) and logs a warning; see [`try_mod_delayed`](Self::try_mod_delayed).
    ///
    /// ```
    /// use std::time::Duration;
    /// use cmwq::{DelayedWork, Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::new("mod-delayed-example", WqFlags::UNBOUND, 0)?;
    /// let dw = DelayedWork::new(|_| println!("timeout handled"));
    /// // Idle: mod_delayed arms it and returns false.
    /// assert!(!wq.mod_delayed(&dw, Duration::from_secs(3600)));
    /// // Pending: it moves the deadline (here to "now") and returns true.
    /// assert!(wq.mod_delayed(&dw, Duration::ZERO));
    /// dw.flush();
    /// assert!(!dw.is_pending());
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    pub fn mod_delayed(&self, dw: &DelayedWork, delay: Duration) -> bool {
        logged(mod_delayed(self.shared(), None, dw, delay))
    }

    /// Like [`mod_delayed`](Self::mod_delayed), with refusals as errors: `Ok(true)` if it was
    /// pending (modified), `Ok(false)` if it was idle (now armed) or is disabled,
    /// `Err(Error::Draining)` or `Err(Error::Destroyed)` if the queue refuses it (the item is
    /// then left not pending, an earlier arming cancelled).
    pub fn try_mod_delayed(&self, dw: &DelayedWork, delay: Duration) -> Result<bool, Error> {
        mod_delayed(self.shared(), None, dw, delay)
    }

    /// Like [`mod_delayed`](Self::mod_delayed), to run on `cpu`. `Err(Error::InvalidCpu)` for
    /// a CPU that is not possible (as [`queue_on`](Self::queue_on)); a refusal by the queue is
    /// `Ok(false)` (see [`try_mod_delayed_on`](Self::try_mod_delayed_on)).
    pub fn mod_delayed_on(
        &self,
        cpu: usize,
        dw: &DelayedWork,
        delay: Duration,
    ) -> Result<bool, Error> {
        topology::check_cpu(cpu)?;
        Ok(logged(mod_delayed(self.shared(), Some(cpu), dw, delay)))
    }

    /// Like [`mod_delayed_on`](Self::mod_delayed_on), with the queue's refusals as errors too
    /// (`Err(Error::Draining)`, `Err(Error::Destroyed)`; the item is left not pending).
    pub fn try_mod_delayed_on(
        &self,
        cpu: usize,
        dw: &DelayedWork,
        delay: Duration,
    ) -> Result<bool, Error> {
        topology::check_cpu(cpu)?;
        mod_delayed(self.shared(), Some(cpu), dw, delay)
    }
}

/// Queues `dw` on [`system_wq`](crate::system_wq) after `delay`.
pub fn schedule_delayed_work(dw: &DelayedWork, delay: Duration) -> bool {
    crate::system_wq().queue_delayed(dw, delay)
}

/// Like [`schedule_delayed_work`], with refusals (the system queue is being drained) as
/// errors; see [`Workqueue::try_queue_delayed`].
pub fn try_schedule_delayed_work(dw: &DelayedWork, delay: Duration) -> Result<bool, Error> {
    crate::system_wq().try_queue_delayed(dw, delay)
}

/// Queues `dw` on [`system_wq`](crate::system_wq) on `cpu` after `delay`.
pub fn schedule_delayed_work_on(
    cpu: usize,
    dw: &DelayedWork,
    delay: Duration,
) -> Result<bool, Error> {
    crate::system_wq().queue_delayed_on(cpu, dw, delay)
}

/// Like [`schedule_delayed_work_on`], with refusals as errors; see
/// [`Workqueue::try_queue_delayed_on`].
pub fn try_schedule_delayed_work_on(
    cpu: usize,
    dw: &DelayedWork,
    delay: Duration,
) -> Result<bool, Error> {
    crate::system_wq().try_queue_delayed_on(cpu, dw, delay)
}
