//! The timer service behind delayed work: one thread for all timers, an indexed heap of
//! deadlines on the monotonic clock, and a clock that tests can pause and advance by hand.
//!
//! The service is generic over its client ([`Timers`]): it stores the client's item handles
//! and targets and calls the client back when a timer fires or is disarmed for a tag, so this
//! layer knows nothing of work items or queues. The delayed-work layer is the one client.
//!
//! Every armed timer has one entry in the heap (`time/heap.rs`); the item's timer slot
//! remembers the entry's handle. Arming inserts (O(log n)), disarming removes the entry at once
//! (O(log n)), firing pops the earliest. There are no stale entries to skip or compact, so a
//! cancelled or re-armed item is not kept alive by its old arming.
//!
//! No client handle or target that the service gives up is dropped while it holds a lock:
//! their `Drop` may run user code (the last reference of an item whose closure owns a
//! workqueue destroys it, and destroy disarms timers).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[cfg(feature = "test-util")]
use parking_lot::MutexGuard;
use parking_lot::{Condvar, Mutex};

use crate::time::heap::{Handle, TimerHeap};
use crate::Error;

// ===== the clock =====

struct ClockState {
    /// The frozen virtual time while a `TestClock` lives.
    paused_at: Option<Instant>,
    /// Since the last `TestClock` was dropped: `(real, virtual)` at that moment. Virtual time
    /// is `virtual + (Instant::now() - real)`; it may be behind or ahead of real time (an
    /// offset of either sign, which a `Duration` could not hold).
    resumed: Option<(Instant, Instant)>,
}

impl ClockState {
    fn now(&self) -> Instant {
        if let Some(p) = self.paused_at {
            return p;
        }
        let real = Instant::now();
        match self.resumed {
            // `checked_add` can only fail near the end of `Instant`'s range (a test advanced
            // that far): the clock then stands still rather than panicking.
            Some((r, v)) => v.checked_add(real.duration_since(r)).unwrap_or(v),
            None => real,
        }
    }
}

static CLOCK: Mutex<ClockState> = Mutex::new(ClockState {
    paused_at: None,
    resumed: None,
});

/// Fast path: no test clock was ever used.
static CLOCK_TOUCHED: AtomicBool = AtomicBool::new(false);

/// The current time on the timer clock (real monotonic time, or the test clock's).
pub(crate) fn now() -> Instant {
    // Relaxed: a stale `false` only means a test clock is being set up concurrently, which the
    // `TestClock` guard orders by taking the clock lock before it changes anything.
    if !CLOCK_TOUCHED.load(Ordering::Relaxed) {
        return Instant::now();
    }
    CLOCK.lock().now()
}

/// A paused timer clock for tests: while it lives, delayed work only fires when
/// [`advance`](TestClock::advance) moves time past its deadline.
///
/// Pausing is process-wide; a second `pause()` waits until the first `TestClock` is dropped,
/// so tests that pause run one after another. Dropping it resumes the clock from the virtual
/// time reached, at real speed: time spent paused beyond what was advanced is not added.
///
/// ```
/// use std::time::Duration;
/// use cmwq::{DelayedWork, system_wq};
///
/// let clock = cmwq::time::pause();
/// let dw = DelayedWork::new(|_| println!("fired"));
/// system_wq().queue_delayed(&dw, Duration::from_secs(3600));
/// assert!(dw.is_pending());
/// clock.advance(Duration::from_secs(3600)); // due timers are queued before this returns
/// dw.work().flush();
/// assert!(!dw.is_pending());
/// ```
///
/// Available with the `test-util` feature.
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub struct TestClock {
    _serial: MutexGuard<'static, ()>,
}

/// Pauses the timer clock (see [`TestClock`]).
///
/// Available with the `test-util` feature.
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub fn pause() -> TestClock {
    static SERIAL: Mutex<()> = Mutex::new(());
    let serial = SERIAL.lock();
    {
        let mut c = CLOCK.lock();
        CLOCK_TOUCHED.store(true, Ordering::Relaxed);
        let now = c.now();
        c.paused_at = Some(now);
    }
    if let Some(s) = client() {
        s.wake();
    }
    TestClock { _serial: serial }
}

#[cfg(feature = "test-util")]
impl TestClock {
    /// Moves time forward by `d` and queues every delayed item that became due, in deadline
    /// order, before returning.
    ///
    /// # Panics
    ///
    /// If the virtual time would leave the range of `Instant`.
    pub fn advance(&self, d: Duration) {
        {
            let mut c = CLOCK.lock();
            let p = c.paused_at.expect("a TestClock keeps the clock paused");
            let to = p
                .checked_add(d)
                .expect("TestClock::advance beyond the range of Instant");
            c.paused_at = Some(to);
        }
        if let Some(s) = client() {
            s.fire_due();
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        now()
    }
}

#[cfg(feature = "test-util")]
impl Drop for TestClock {
    fn drop(&mut self) {
        {
            let mut c = CLOCK.lock();
            if let Some(p) = c.paused_at.take() {
                // Resume from the virtual time reached, even if it is behind real time.
                c.resumed = Some((Instant::now(), p));
            }
        }
        if let Some(s) = client() {
            s.wake();
        }
    }
}

/// The real instant at which the timer clock reaches `deadline`; `None` while the clock is
/// paused (only `advance` moves it) or if that instant is past `Instant`'s range.
fn real_instant(deadline: Instant) -> Option<Instant> {
    if !CLOCK_TOUCHED.load(Ordering::Relaxed) {
        return Some(deadline);
    }
    let c = CLOCK.lock();
    if c.paused_at.is_some() {
        return None;
    }
    match c.resumed {
        Some((r, v)) => match deadline.checked_duration_since(v) {
            Some(ahead) => r.checked_add(ahead),
            None => Some(r),
        },
        None => Some(deadline),
    }
}

// ===== the client interface =====

/// What the timer service stores and calls back: implemented by its client (the delayed-work
/// layer).
pub(crate) trait Timers: 'static {
    /// A strong handle on an item with a timer. The service holds one clone per armed timer
    /// and drops the clones it gives up with none of its locks held.
    type Item: Clone + Send + 'static;
    /// Where an armed item goes when it fires (recorded at arming).
    type Target: Send + 'static;

    /// The item's timer slot. Must return the same slot on every call.
    fn field(item: &Self::Item) -> &TimerField<Self::Target>;

    /// The timer of `item` came due and has been disarmed. Called with the item's timer lock
    /// held, so that anyone who takes that lock afterwards finds the item handed on. Must not
    /// drop client handles; the error (a refusal) is logged by the service after unlocking.
    fn fire(item: &Self::Item, target: &Self::Target) -> Result<(), Error>;

    /// The timer of `item` was disarmed by [`cancel_for_wq`]. Called with no lock held.
    fn disarmed(item: &Self::Item, target: Self::Target);
}

/// A deadline that never comes (a delay past `Instant`'s range, or more than 584 years past
/// the service's epoch). Deadlines are nanoseconds on the timer clock since the epoch.
const NEVER: u64 = u64::MAX;

/// The state of an armed timer, in its slot: the handle of its heap entry (which names this
/// arming: a later arming gets another handle), its tag and its target.
struct Armed<T> {
    entry: Handle,
    tag: u64,
    target: T,
}

/// The timer part of an item: whether and how it is armed (guarded by its own small lock, the
/// item's timer lock).
pub(crate) struct TimerField<T> {
    slot: Mutex<Option<Armed<T>>>,
}

impl<T> TimerField<T> {
    pub(crate) const fn new() -> Self {
        TimerField {
            slot: Mutex::new(None),
        }
    }

    pub(crate) fn is_armed(&self) -> bool {
        self.slot.lock().is_some()
    }
}

// ===== the service =====

/// Guarded by `TimerService::heap`.
struct Heap<I> {
    /// The service's clone of each armed item, with the tag given at arming (the delayed-work
    /// layer passes the workqueue id).
    timers: TimerHeap<I>,
    /// Whether the timer thread was started (or is being started).
    thread_started: bool,
    /// While the timer thread waits on `cv`: the deadline it will wake at by itself (`NEVER`
    /// if none). `None` while it is awake: it looks at the heap before it waits again. An
    /// arming notifies it only for an earlier deadline.
    sleeping_until: Option<u64>,
}

/// The timer service of client `H`: the heap of armed timers and the thread that fires them.
pub(crate) struct TimerService<H: Timers> {
    /// The origin of the heap's deadlines: the timer clock at the first arming. Set once;
    /// every later reading of the (monotonic) clock is at or after it.
    epoch: OnceLock<Instant>,
    heap: Mutex<Heap<H::Item>>,
    /// Held while one due entry is popped and fired: `TestClock::advance` waits for a firing in
    /// progress on the timer thread, so every due item is queued when it returns. Released
    /// before what the firing gave up is dropped.
    firing: Mutex<()>,
    /// The timer thread waits on it with the heap lock; notified when an earlier deadline is
    /// armed or the clock changes.
    cv: Condvar,
    _client: PhantomData<fn() -> H>,
}

/// What the clock and `destroy` call on the service, without knowing its client.
trait Service: Sync {
    #[cfg(feature = "test-util")]
    fn fire_due(&self);
    #[cfg(feature = "test-util")]
    fn wake(&self);
    fn cancel_tagged(&self, tag: u64);
}

/// The service that armed a timer first (there is one client); set once, when it starts.
static CLIENT: OnceLock<&'static dyn Service> = OnceLock::new();

fn client() -> Option<&'static dyn Service> {
    CLIENT.get().copied()
}

impl<H: Timers> TimerService<H> {
    pub(crate) const fn new() -> Self {
        TimerService {
            epoch: OnceLock::new(),
            heap: Mutex::new(Heap {
                timers: TimerHeap::new(),
                thread_started: false,
                sleeping_until: None,
            }),
            firing: Mutex::new(()),
            cv: Condvar::new(),
            _client: PhantomData,
        }
    }

    /// Arms `item` (whose `PENDING` the caller owns) to fire with `target` after `delay`; `tag`
    /// names the timer for [`cancel_for_wq`]. A delay past `Instant`'s range never fires: the
    /// item stays armed until disarmed. Does not panic.
    pub(crate) fn arm(&'static self, item: &H::Item, target: H::Target, tag: u64, delay: Duration) {
        let now = now();
        let epoch = *self.epoch.get_or_init(|| now);
        // Saturating: a deadline past `Instant`'s range, or `NEVER` nanoseconds or more from
        // the epoch, never comes.
        let at = now
            .checked_add(delay)
            .and_then(|d| u64::try_from(d.saturating_duration_since(epoch).as_nanos()).ok())
            .unwrap_or(NEVER);
        let clone = item.clone();
        let mut slot = H::field(item).slot.lock();
        debug_assert!(slot.is_none(), "arming an armed timer");
        // Lock order: timer slot → heap.
        let (entry, wake, start) = {
            let mut h = self.heap.lock();
            let entry = h.timers.insert(at, tag, clone);
            // The thread sleeps past this deadline: wake it (it recomputes its wait). Awake, it
            // looks at the heap before waiting again, under this lock.
            let wake = h.sleeping_until.is_some_and(|until| at < until);
            if wake {
                h.sleeping_until = Some(at);
            }
            let start = !h.thread_started;
            h.thread_started = true;
            (entry, wake, start)
        };
        *slot = Some(Armed { entry, tag, target });
        drop(slot);
        if start {
            self.start();
        }
        if wake {
            self.cv.notify_one();
        }
    }

    /// Registers the service with the clock and starts the timer thread. A failure to start
    /// it is logged and retried at the next arming; armed timers stay armed (cancel, flush and
    /// `TestClock::advance` still work on them).
    #[cold]
    fn start(&'static self) {
        let _ = CLIENT.set(self);
        let spawned = std::thread::Builder::new()
            .name("cmwq-timer".into())
            .spawn(move || self.run());
        if let Err(err) = spawned {
            tracing::error!(
                target: "cmwq",
                "cannot start the timer thread (retried at the next arming): {err}"
            );
            self.heap.lock().thread_started = false;
        }
    }

    /// Disarms the item's timer (the kernel's `timer_delete`) and returns the target recorded
    /// at arming: the caller now owns the item's `PENDING`, set when it was armed. `None` if
    /// it was not armed.
    pub(crate) fn del_timer(&self, field: &TimerField<H::Target>) -> Option<H::Target> {
        let mut slot = field.slot.lock();
        let armed = slot.take()?;
        // Lock order: timer slot → heap. `None` if a firing popped the entry and waits for
        // this slot lock: it will find the slot disarmed and give up.
        let entry = self.heap.lock().timers.remove(armed.entry);
        drop(slot);
        drop(entry);
        Some(armed.target)
    }

    /// The timer clock's reading as nanoseconds since the epoch (below `NEVER`).
    fn now_ns(&self) -> u64 {
        let Some(epoch) = self.epoch.get() else {
            return 0; // nothing was ever armed
        };
        let ns = now().saturating_duration_since(*epoch).as_nanos();
        u64::try_from(ns).unwrap_or(NEVER).min(NEVER - 1)
    }

    /// Pops every due entry and fires it. Called by the timer thread and by
    /// `TestClock::advance`.
    fn fire_due(&self) {
        loop {
            let firing = self.firing.lock();
            let due = {
                let mut h = self.heap.lock();
                h.timers.pop_due(self.now_ns())
            };
            // The heap lock is released before the slot lock is taken (lock order).
            let Some((handle, item)) = due else {
                return;
            };
            let mut slot = H::field(&item).slot.lock();
            // Not armed with this entry: disarmed (and maybe re-armed) after the pop; whoever
            // disarmed it owns `PENDING`.
            let fired = slot.take_if(|a| a.entry == handle).map(|armed| {
                let queued = H::fire(&item, &armed.target);
                (armed, queued)
            });
            drop(slot);
            drop(firing);
            if let Some((_, Err(err))) = &fired {
                tracing::warn!(target: "cmwq", "a timer fired on a target that refuses it: {err}");
            }
            // With no lock held: the last reference may run user code.
            drop(fired);
            drop(item);
        }
    }

    fn run(&self) {
        loop {
            self.fire_due();
            let mut h = self.heap.lock();
            let next = h.timers.peek().unwrap_or(NEVER);
            if next <= self.now_ns() {
                continue;
            }
            // `None`: no deadline, the clock is paused (only `advance` fires), or the deadline
            // is past `Instant`'s range.
            let real = self
                .epoch
                .get()
                .filter(|_| next != NEVER)
                .and_then(|epoch| epoch.checked_add(Duration::from_nanos(next)))
                .and_then(real_instant);
            h.sleeping_until = Some(if real.is_some() { next } else { NEVER });
            match real {
                Some(real) => {
                    let _ = self.cv.wait_until(&mut h, real);
                }
                None => self.cv.wait(&mut h),
            }
            h.sleeping_until = None;
        }
    }
}

impl<H: Timers> Service for TimerService<H> {
    #[cfg(feature = "test-util")]
    fn fire_due(&self) {
        TimerService::fire_due(self)
    }

    #[cfg(feature = "test-util")]
    fn wake(&self) {
        let _h = self.heap.lock();
        self.cv.notify_one();
    }

    /// Disarms every timer armed with `tag` and hands each item to `H::disarmed`.
    fn cancel_tagged(&self, tag: u64) {
        // Clone only this tag's items; the scan is O(armed timers) under the heap lock.
        let candidates: Vec<H::Item> = {
            let h = self.heap.lock();
            h.timers.tagged(tag).cloned().collect()
        };
        for item in candidates {
            let mut slot = H::field(&item).slot.lock();
            // Re-armed for another tag meanwhile, or fired: not ours. Re-armed for this tag:
            // disarmed with its new entry.
            let Some(armed) = slot.take_if(|a| a.tag == tag) else {
                continue;
            };
            let entry = self.heap.lock().timers.remove(armed.entry);
            drop(slot);
            H::disarmed(&item, armed.target);
            drop(entry);
        }
        // A firing that popped one of this tag's entries before the scan holds `firing` until
        // it has handed the item on (or its target refused it and released `PENDING`): wait
        // for it, so that nothing of this tag is still owned by the timer when we return.
        drop(self.firing.lock());
    }
}

/// Disarms every armed timer that targets workqueue `wq_id` (the tag the delayed-work layer
/// arms with) and releases the items' `PENDING`. Clones and locks only those items.
pub(crate) fn cancel_for_wq(wq_id: u64) {
    if let Some(s) = client() {
        s.cancel_tagged(wq_id);
    }
}
