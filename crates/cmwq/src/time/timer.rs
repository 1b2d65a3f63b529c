//! The timer service behind delayed work: one thread for all timers, a binary heap of
//! deadlines on the monotonic clock, and a clock that tests can pause and advance by hand.
//!
//! Arming pushes onto the heap (O(log n)); cancelling only disarms the item (O(1)): its heap
//! entry goes stale and is skipped when it comes up, and stale entries are compacted away
//! when they outnumber the armed ones, so repeated re-arming (`mod_delayed` debouncing) does
//! not grow the heap without bound.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::queue::workqueue::{insert_owned, WqShared};
use crate::DelayedWork;

// ===== the clock =====

struct ClockState {
    /// Virtual time minus real time (grows with every `advance`).
    offset: Duration,
    /// The frozen virtual time while paused.
    paused_at: Option<Instant>,
}

fn clock() -> &'static Mutex<ClockState> {
    static CLOCK: OnceLock<Mutex<ClockState>> = OnceLock::new();
    CLOCK.get_or_init(|| {
        Mutex::new(ClockState {
            offset: Duration::ZERO,
            paused_at: None,
        })
    })
}

/// Fast path: no test clock was ever used.
static CLOCK_TOUCHED: AtomicBool = AtomicBool::new(false);

/// The current time on the timer clock (real monotonic time plus test-clock advances).
pub(crate) fn now() -> Instant {
    // Relaxed: a stale `false` only means a test clock is being set up concurrently, which the
    // `TestClock` guard orders by taking the clock lock before it changes anything.
    if !CLOCK_TOUCHED.load(Ordering::Relaxed) {
        return Instant::now();
    }
    let c = clock().lock();
    c.paused_at.unwrap_or_else(|| Instant::now() + c.offset)
}

/// A paused timer clock for tests: while it lives, delayed work only fires when
/// [`advance`](TestClock::advance) moves time past its deadline.
///
/// Pausing is process-wide; a second `pause()` waits until the first `TestClock` is dropped,
/// so tests that pause run one after another. Dropping it resumes real time from the virtual
/// time reached.
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
pub struct TestClock {
    _serial: MutexGuard<'static, ()>,
}

/// Pauses the timer clock (see [`TestClock`]).
pub fn pause() -> TestClock {
    static SERIAL: Mutex<()> = Mutex::new(());
    let serial = SERIAL.lock();
    {
        let mut c = clock().lock();
        CLOCK_TOUCHED.store(true, Ordering::Relaxed);
        let now = Instant::now() + c.offset;
        c.paused_at = Some(now);
    }
    service().wake();
    TestClock { _serial: serial }
}

impl TestClock {
    /// Moves time forward by `d` and queues every delayed item that became due, in deadline
    /// order, before returning.
    pub fn advance(&self, d: Duration) {
        {
            let mut c = clock().lock();
            c.offset += d;
            if let Some(p) = c.paused_at.as_mut() {
                *p += d;
            }
        }
        service().fire_due();
    }

    /// The current virtual time.
    pub fn now(&self) -> Instant {
        now()
    }
}

impl Drop for TestClock {
    fn drop(&mut self) {
        {
            let mut c = clock().lock();
            if let Some(p) = c.paused_at.take() {
                // Resume from the virtual time reached.
                c.offset = p.saturating_duration_since(Instant::now());
            }
        }
        service().wake();
    }
}

fn is_paused() -> bool {
    CLOCK_TOUCHED.load(Ordering::Relaxed) && clock().lock().paused_at.is_some()
}

/// The real instant at which virtual `deadline` arrives.
fn to_real(deadline: Instant) -> Instant {
    if !CLOCK_TOUCHED.load(Ordering::Relaxed) {
        return deadline;
    }
    let c = clock().lock();
    deadline.checked_sub(c.offset).unwrap_or(deadline)
}

// ===== per-item timer state =====

/// Where an armed item goes when it fires.
pub(crate) struct Target {
    pub(crate) wq: Arc<WqShared>,
    pub(crate) cpu: Option<usize>,
}

struct TimerSlot {
    armed: bool,
    target: Option<Target>,
}

/// The timer part of a delayed work item (guarded by its own small lock).
pub(crate) struct TimerField {
    slot: Mutex<TimerSlot>,
    /// Generation of the current arming: heap entries with another generation are stale.
    /// Relaxed: only read as a staleness hint during compaction; the slot lock decides.
    gen: AtomicU64,
}

impl TimerField {
    pub(crate) fn new() -> Self {
        TimerField {
            slot: Mutex::new(TimerSlot {
                armed: false,
                target: None,
            }),
            gen: AtomicU64::new(0),
        }
    }

    /// Disarms a pending timer (the kernel's `timer_delete`). `true` if it was armed: the
    /// caller then owns the item's `PENDING`, set when it was armed.
    pub(crate) fn del_timer(&self) -> bool {
        let mut s = self.slot.lock();
        if !s.armed {
            return false;
        }
        s.armed = false;
        s.target = None;
        service().nr_armed.fetch_sub(1, Ordering::Relaxed);
        true
    }

    /// The target recorded at arming, taken by `del_timer`'s caller to fire the item now.
    pub(crate) fn del_timer_take(&self) -> Option<Target> {
        let mut s = self.slot.lock();
        if !s.armed {
            return None;
        }
        s.armed = false;
        service().nr_armed.fetch_sub(1, Ordering::Relaxed);
        s.target.take()
    }

    pub(crate) fn is_armed(&self) -> bool {
        self.slot.lock().armed
    }
}

// ===== the service =====

struct HeapEntry {
    deadline: Instant,
    seq: u64,
    gen: u64,
    item: DelayedWork,
}

impl PartialEq for HeapEntry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for HeapEntry {}
impl PartialOrd for HeapEntry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapEntry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

struct Heap {
    entries: BinaryHeap<Reverse<HeapEntry>>,
    seq: u64,
    thread_started: bool,
}

pub(crate) struct TimerService {
    heap: Mutex<Heap>,
    /// Held while firing: `TestClock::advance` waits for a firing already in progress on the
    /// timer thread, so every due item is queued when it returns.
    firing: Mutex<()>,
    cv: Condvar,
    nr_armed: AtomicUsize,
}

pub(crate) fn service() -> &'static TimerService {
    static SERVICE: OnceLock<TimerService> = OnceLock::new();
    SERVICE.get_or_init(|| TimerService {
        heap: Mutex::new(Heap {
            entries: BinaryHeap::new(),
            seq: 0,
            thread_started: false,
        }),
        firing: Mutex::new(()),
        cv: Condvar::new(),
        nr_armed: AtomicUsize::new(0),
    })
}

impl TimerService {
    /// Arms `item` (whose `PENDING` the caller owns) to be queued on `target` after `delay`.
    pub(crate) fn arm(&'static self, item: &DelayedWork, target: Target, delay: Duration) {
        let deadline = now() + delay;
        let timer = item.timer();
        let gen = {
            let mut s = timer.slot.lock();
            debug_assert!(!s.armed, "arming an armed timer");
            s.armed = true;
            s.target = Some(target);
            self.nr_armed.fetch_add(1, Ordering::Relaxed);
            timer.gen.fetch_add(1, Ordering::Relaxed) + 1
        };
        let mut h = self.heap.lock();
        if !h.thread_started {
            h.thread_started = true;
            std::thread::Builder::new()
                .name("cmwq-timer".into())
                .spawn(move || self.run())
                .expect("cmwq: cannot start the timer thread");
        }
        let earliest = h.entries.peek().is_none_or(|e| deadline < e.0.deadline);
        h.seq += 1;
        let seq = h.seq;
        h.entries.push(Reverse(HeapEntry {
            deadline,
            seq,
            gen,
            item: item.clone(),
        }));
        self.maybe_compact(&mut h);
        if earliest {
            self.cv.notify_one();
        }
    }

    /// Drops stale entries once they outnumber armed ones (amortised O(1) per arm).
    fn maybe_compact(&self, h: &mut Heap) {
        let armed = self.nr_armed.load(Ordering::Relaxed);
        if h.entries.len() > 2 * armed + 4096 {
            let entries = std::mem::take(&mut h.entries).into_vec();
            h.entries = entries
                .into_iter()
                .filter(|e| e.0.item.timer().gen.load(Ordering::Relaxed) == e.0.gen)
                .collect();
        }
    }

    fn wake(&self) {
        let _h = self.heap.lock();
        self.cv.notify_one();
    }

    /// Pops every due entry and fires it. Called by the timer thread and by
    /// `TestClock::advance`.
    pub(crate) fn fire_due(&self) {
        let _firing = self.firing.lock();
        loop {
            let due = {
                let mut h = self.heap.lock();
                let now = now();
                match h.entries.peek() {
                    Some(e) if e.0.deadline <= now => h.entries.pop().map(|e| e.0),
                    _ => None,
                }
            };
            match due {
                Some(entry) => fire(entry),
                None => return,
            }
        }
    }

    fn run(&self) {
        loop {
            self.fire_due();
            let mut h = self.heap.lock();
            let next = h.entries.peek().map(|e| e.0.deadline);
            match next {
                Some(d) if d <= now() => continue,
                Some(d) if !is_paused() => {
                    let _ = self.cv.wait_until(&mut h, to_real(d));
                }
                _ => self.cv.wait(&mut h),
            }
        }
    }
}

/// Disarms every armed timer that targets workqueue `wq_id` and releases the items' `PENDING`.
pub(crate) fn cancel_for_wq(wq_id: u64) {
    let candidates: Vec<DelayedWork> = {
        let h = service().heap.lock();
        h.entries.iter().map(|e| e.0.item.clone()).collect()
    };
    for item in candidates {
        let timer = item.timer();
        let mut s = timer.slot.lock();
        if s.armed && s.target.as_ref().is_some_and(|t| t.wq.id == wq_id) {
            s.armed = false;
            s.target = None;
            service().nr_armed.fetch_sub(1, Ordering::Relaxed);
            drop(s);
            // We own PENDING (the timer held it): give it up.
            item.work().data().release_pending();
        }
    }
}

/// A timer came due: if it is still the current arming, queue the item on its target.
///
/// The item is queued while its timer lock is held (lock order: timer slot → pool), so anyone
/// who takes the timer lock afterwards (`DelayedWork::flush`, cancel) finds the item either
/// armed or already queued, never in between.
fn fire(entry: HeapEntry) {
    let timer = entry.item.timer();
    let mut s = timer.slot.lock();
    if !s.armed || timer.gen.load(Ordering::Relaxed) != entry.gen {
        return; // cancelled or re-armed: stale
    }
    s.armed = false;
    service().nr_armed.fetch_sub(1, Ordering::Relaxed);
    let target = s.target.take().expect("an armed timer has a target");
    // We own PENDING (set when armed). A refusal (destroyed queue) releases it.
    if let Err(err) = insert_owned(&target.wq, target.cpu, entry.item.work()) {
        tracing::warn!(target: "cmwq", "delayed work fired on a queue that refuses it: {err}");
    }
    drop(s);
}
