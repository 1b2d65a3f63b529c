//! Randomised op storms (issue 11, "Proof beyond the cases above").
//!
//! Several threads (4 by default) apply seeded random operations to a few items spread over
//! workqueues of every kind: per-CPU with `max_active` 1, 2 and the default (large), unbound with
//! 2 and the default, ordered, `HIGHPRI`, `CPU_INTENSIVE`, `MEM_RECLAIM`, `UNBOUND | HIGHPRI`,
//! plus one spare queue per thread that the thread destroys and replaces (cycling through every
//! kind, an unbound one with its own pool among them). The ops: `queue`, `queue_on` (valid and
//! invalid CPUs), `try_queue`, `cancel`, `cancel_sync`, `flush` and `try_flush` of items, `flush`
//! and `drain` of queues, `disable`, `disable_sync`, `enable`, `set_max_active` (raising and
//! lowering, on ordered queues and out of range too), `queue_delayed[_on]`, `mod_delayed[_on]`,
//! delayed `cancel`, `cancel_sync` and `flush` (delays of 0-3 ms, sometimes one hour or
//! `Duration::MAX`), destroy of spare queues, every operation through a leftover handle of a
//! destroyed queue, brief worker-creation outages (`fail_worker_creation`, so the rescuers work),
//! and items that panic at random or re-queue themselves (chains, periodic delayed work).
//!
//! Invariants, checked while the storm runs and at quiescence (all threads stopped, every queue
//! and item flushed, every item enabled and cancelled with `cancel_sync`):
//!
//! * accepted queueings = runs + successful cancels (+ armed timers that a destroy dropped, which
//!   the thread that owns the item and the queue counts exactly). `queue*` count when they return
//!   `true`; `mod_delayed` counts a new instance unless the item is disabled, and a cancel of the
//!   old one when it returns `true` (it was pending); `cancel`, `cancel_sync`, `disable` count a
//!   cancel when they return `true`;
//! * no two runs of one item at once (items that stay on one workqueue);
//! * a flush (of the item, of its queue, or the drain of a destroy) returns only after a run that
//!   started after the flusher's own accepted queueing has finished, unless the item was cancelled
//!   (or a cancel was attempted) in between;
//! * nothing runs after `cancel_sync` returns until the item is queued again (items that only
//!   their owner thread queues, including ones that re-queue themselves);
//! * `max_active` is never exceeded: a count per pool workqueue kept inside the items is checked
//!   against the largest limit in force since the queue last had nothing of its measured items in
//!   flight (lowering the limit lets running items finish, so the old limit stays in the window);
//! * an ordered queue runs its items one at a time in queueing order (one thread queues and
//!   cancels them, so the order is known exactly);
//! * `enable` returns `true` exactly when the depth reaches zero;
//! * every deliberate panic is reported once to the panic hook, and no engine thread panics;
//! * nothing is pending after destroy; ops through leftover handles return `false` / `Err`
//!   (never panic, never accept);
//! * once every queue is destroyed and every handle dropped, the items are freed (the engine
//!   keeps no reference) and the `kworker` threads fall back to their floor after the idle
//!   timeout.
//!
//! Every wait has a deadline: the test's main thread is a watchdog; an operation that does not
//! return within `CMWQ_STORM_STALL_SECS` (30 s) fails the test with the seed and what each
//! thread was doing. The seed is printed at the start and in every failure; replay with
//! `CMWQ_STORM_SEED=<seed>`. The op sequence of each thread is a function of the seed; the
//! interleaving is not, so a replay reproduces the mix, not the exact schedule.
//!
//! Runs:
//! * `cargo test -p cmwq --test storm`: the CI-sized storm (`CI_OPS` = 1,000,000 ops in all,
//!   about 13 s in a debug build on 2 cores).
//! * `cargo test -p cmwq --release --test storm -- --ignored`: the soak, 10,000,000 ops by
//!   default, or `CMWQ_STORM_OPS`.
//! * `CMWQ_STORM_THREADS` changes the number of storm threads (4).
//! * `CMWQ_STORM_SKIP=a,b,...` leaves out op families, to run the rest of the storm while a known
//!   defect is open: `dmax` (`Duration::MAX` delays: issue 11 defect 4), `long` (one-hour delays
//!   that are cancelled, which the final leak check catches: defect 6), `sma` (`set_max_active`
//!   on live queues: defect 3), `leftover_sma` (`set_max_active` through a leftover handle:
//!   defect 5), `outage` (worker-creation outages), `panic` (panicking items), `leak` (the final
//!   check that items are freed), `floor` (the thread-floor check), `destroy_pending` (the
//!   check that a delayed item is not pending when the destroy of its queue returns: a race this
//!   storm found, see `hint_for`; skipped, the test waits up to 1 s for it to clear); `known`
//!   stands for `dmax,long,sma,leftover_sma,destroy_pending`.
//!
//! Alone in its test binary (with the soak, which is ignored by default): it configures the
//! engine (short idle timeout) before anything else touches it, installs a panic hook, and counts
//! the process's threads.

mod common;
mod storm_util;

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cmwq::{DelayedWork, Error, Work, Workqueue, WqFlags};
use common::{burn, OverlapDetector};
use storm_util::{census, env_u64, mix, payload_text, seed_from_env, wait_until, SeededRng};

/// Ops of the CI-sized run, all threads together.
const CI_OPS: u64 = 1_000_000;
/// Ops of the soak (`--ignored`) unless `CMWQ_STORM_OPS` says otherwise.
const SOAK_OPS: u64 = 10_000_000;
/// Idle workers are reaped after this (configured before first use).
const IDLE_TIMEOUT: Duration = Duration::from_millis(150);
/// After the first failure, how long the other threads get to finish their current op.
const GRACE: Duration = Duration::from_secs(5);
/// Prefix of the message of every deliberate panic.
const DELIBERATE: &str = "storm: deliberate panic";
/// Queue references above this are spare-queue ids (+ `SPARE_BASE`); below, permanent indices.
const SPARE_BASE: u64 = 1_000;
/// The limit that `max_active` 0 stands for.
const DFL_ACTIVE: usize = cmwq::WQ_DFL_ACTIVE;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ===== process-wide setup (this binary only) =====

/// Panics on engine threads (`kworker/*`, `cmwq-*`) and non-deliberate work-item panics.
static ENGINE_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// Deliberate panics reported to `cmwq::set_panic_hook`.
static REPORTED: AtomicU64 = AtomicU64::new(0);
/// One storm at a time (the CI run and the soak share the engine and the thread census).
static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    /// The last panic on this thread, with its location, for the op that caught it.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

fn init() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        cmwq::configure(cmwq::Config {
            idle_worker_timeout: IDLE_TIMEOUT,
            create_cooldown: Duration::from_millis(10),
            ..cmwq::Config::default()
        })
        .expect("storm: cmwq::configure must be the first use of cmwq in this binary");
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = payload_text(info.payload());
            if msg.starts_with(DELIBERATE) {
                return;
            }
            let at = info
                .location()
                .map_or_else(String::new, |l| format!(" at {}:{}", l.file(), l.line()));
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("<unnamed>");
            let text = format!("{msg}{at}");
            if name.starts_with("kworker/") || name.starts_with("cmwq-") {
                lock(&ENGINE_PANICS).push(format!("thread {name}: {text}"));
            }
            LAST_PANIC.with(|l| *l.borrow_mut() = Some(text));
            prev(info);
        }));
        cmwq::set_panic_hook(|p| {
            if p.message.starts_with(DELIBERATE) {
                REPORTED.fetch_add(1, SeqCst);
            } else {
                lock(&ENGINE_PANICS).push(format!(
                    "work item panic that is not the storm's, on {}: {}",
                    p.workqueue, p.message
                ));
            }
        });
    });
}

// ===== which op families run =====

#[derive(Clone, Copy, Debug, Default)]
struct Skip {
    dmax: bool,
    long: bool,
    sma: bool,
    leftover_sma: bool,
    outage: bool,
    panic: bool,
    leak: bool,
    floor: bool,
    destroy_pending: bool,
}

impl Skip {
    fn from_env() -> Skip {
        let mut s = Skip::default();
        let raw = std::env::var("CMWQ_STORM_SKIP").unwrap_or_default();
        for word in raw.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "dmax" => s.dmax = true,
                "long" => s.long = true,
                "sma" => s.sma = true,
                "leftover_sma" => s.leftover_sma = true,
                "outage" => s.outage = true,
                "panic" => s.panic = true,
                "leak" => s.leak = true,
                "floor" => s.floor = true,
                "destroy_pending" => s.destroy_pending = true,
                "known" => {
                    s.dmax = true;
                    s.long = true;
                    s.sma = true;
                    s.leftover_sma = true;
                    s.destroy_pending = true;
                }
                other => panic!("CMWQ_STORM_SKIP: unknown family {other:?}"),
            }
        }
        s
    }
}

// ===== permanent queues, with what the items check against =====

/// `limits[i]` is the `max_active` in force from log index `i` on; `cache` speeds up the
/// maximum over a suffix (the log only grows).
struct LimitLog {
    limits: Vec<usize>,
    cache: (usize, usize, usize),
}

impl LimitLog {
    /// The largest limit from index `from` to the end.
    fn bound_since(&mut self, from: usize) -> usize {
        let from = from.min(self.limits.len() - 1);
        let (c_from, c_upto, c_max) = self.cache;
        let (start, mut m) = if c_from == from {
            (c_upto, c_max)
        } else {
            (from, 0)
        };
        for &l in &self.limits[start..] {
            m = m.max(l);
        }
        self.cache = (from, self.limits.len(), m);
        m
    }
}

struct QInfo {
    name: String,
    wq: Workqueue,
    /// `set_max_active` is applied to it during the storm.
    varying: bool,
    ordered: bool,
    /// Instances of its homed items in flight, an upper bound (incremented before a queueing
    /// call, decremented after a refusal, a successful cancel or the end of a run).
    qin: AtomicI64,
    log: Mutex<LimitLog>,
    /// Index of the newest log entry.
    cur_idx: AtomicUsize,
    /// Log index read just before `qin` last fell to zero: every instance in flight now was
    /// queued after it, so the limits from there on bound what may run.
    window_start: AtomicUsize,
    /// Homed items running now, by pool id (one pool workqueue per pool).
    conc: Mutex<HashMap<usize, usize>>,
    max_conc: AtomicUsize,
    /// Queueing order of its ordered items (thread 0 only) and their run order.
    ord_qseq: AtomicU64,
    ord_rseq: AtomicU64,
}

impl QInfo {
    fn qin_inc(&self) {
        self.qin.fetch_add(1, SeqCst);
    }

    fn qin_dec(&self) {
        let idx = self.cur_idx.load(SeqCst);
        if self.qin.fetch_sub(1, SeqCst) == 1 {
            self.window_start.fetch_max(idx, SeqCst);
        }
    }
}

// ===== items =====

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// Queued by any thread, on its home queue only.
    Homed(usize),
    /// On the ordered queue; queued, cancelled and disabled by thread 0 only.
    Ordered(usize),
    /// Queued by any thread on any queue (permanent, spare, leftover).
    Roaming,
    /// Touched by its owner thread only, on the owner's spare queue; re-queues itself.
    Private(usize),
}

struct ItemSt {
    id: usize,
    name: String,
    class: Class,
    delayed: bool,
    accepted: AtomicU64,
    runs: AtomicU64,
    cancels: AtomicU64,
    /// Armed instances that the destroy of their queue dropped (private delayed items).
    drops: AtomicU64,
    /// Bumped before / after every cancel-like call (cancel, cancel_sync, disable,
    /// mod_delayed, a destroy that may drop a timer): a queueing is recorded for the flush
    /// checks only if no such call was in progress, and checked only if none began since.
    cstart: AtomicU64,
    cend: AtomicU64,
    /// The same for `DelayedWork::flush`, which owns PENDING between taking the timer and
    /// queueing the item: a second flusher may find it neither armed nor queued and return at
    /// once (as in the kernel), so its check counts only if no other such flush overlapped.
    fstart: AtomicU64,
    fend: AtomicU64,
    /// Largest start stamp of a run that has finished.
    max_done: AtomicU64,
    det: OverlapDetector,
    overlap_reported: AtomicBool,
    /// Disable depth as the test knows it; held around disable, enable, cancel_sync and
    /// mod_delayed so the depth is exact during each.
    ctl: Mutex<u32>,
    /// An op on it panicked in the calling thread: its state is unknown.
    wedged: AtomicBool,
    panics: AtomicU64,
    /// Ordered items: queue-order indices of the instances not cancelled, and the run-order
    /// index of each run.
    ord_inst: Mutex<Vec<u64>>,
    ord_runs: Mutex<Vec<u64>>,
    /// Private items: re-queueings left in the current chain, and where.
    chain: AtomicU32,
    target: Mutex<Option<Workqueue>>,
    /// Private items: `runs` when the last `cancel_sync` returned (`u64::MAX`: none since).
    synced_runs: AtomicU64,
    /// Private delayed item: armed instances that a drain or destroy of its queue may have
    /// dropped since it was last reconciled (one per drain or destroy, plus one per chained
    /// re-arm accepted meanwhile).
    drop_chances: AtomicU64,
    /// Private delayed item: its owner is draining or destroying its queue.
    tearing: AtomicBool,
}

impl ItemSt {
    fn home(&self) -> Option<usize> {
        match self.class {
            Class::Homed(q) | Class::Ordered(q) => Some(q),
            _ => None,
        }
    }

    /// The cancel generation if no cancel-like call is in progress now.
    fn quiet_gen(&self) -> Option<u64> {
        let e = self.cend.load(SeqCst);
        let s = self.cstart.load(SeqCst);
        (s == e).then_some(s)
    }

    fn begin_cancel(&self) -> u64 {
        self.cstart.fetch_add(1, SeqCst) + 1
    }

    fn end_cancel(&self) {
        self.cend.fetch_add(1, SeqCst);
    }

    fn checks_overlap(&self) -> bool {
        self.class != Class::Roaming
    }
}

#[derive(Clone)]
enum Handle {
    W(Work),
    D(DelayedWork),
}

impl Handle {
    fn work(&self) -> &Work {
        match self {
            Handle::W(w) => w,
            Handle::D(d) => d.work(),
        }
    }

    fn is_pending(&self) -> bool {
        self.work().is_pending()
    }

    fn cancel(&self) -> bool {
        match self {
            Handle::W(w) => w.cancel(),
            Handle::D(d) => d.cancel(),
        }
    }

    fn cancel_sync(&self) -> bool {
        match self {
            Handle::W(w) => w.cancel_sync(),
            Handle::D(d) => d.cancel_sync(),
        }
    }

    fn flush(&self) -> bool {
        match self {
            Handle::W(w) => w.flush(),
            Handle::D(d) => d.flush(),
        }
    }
}

struct Item {
    st: Arc<ItemSt>,
    h: Handle,
}

// ===== the storm's shared state =====

#[derive(Default)]
struct Stats {
    ops: AtomicU64,
    flush_checks: AtomicU64,
    conc_checks: AtomicU64,
    sync_checks: AtomicU64,
    destroys: AtomicU64,
    leftover_ops: AtomicU64,
    outages: AtomicU64,
    sma: AtomicU64,
    dmax: AtomicU64,
    long: AtomicU64,
}

/// What the work functions need (no item handles: the items hold an `Arc` of it).
struct Shared {
    seed: u64,
    skip: Skip,
    t0: Instant,
    stamp: AtomicU64,
    queues: Vec<QInfo>,
    stop: AtomicBool,
    failures: Mutex<Vec<String>>,
    /// Failures beyond the first few of their kind, by kind.
    more_failures: Mutex<std::collections::BTreeMap<String, u64>>,
    first_failure_ms: AtomicU64,
    thrown: AtomicU64,
    stats: Stats,
}

impl Shared {
    fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// Records a failure (at most 3 of each kind are kept, the rest counted) and stops the
    /// storm.
    fn fail(&self, what: &str, msg: String) {
        {
            let mut f = lock(&self.failures);
            let tag = format!("[{what}]");
            let same = f.iter().filter(|l| l.starts_with(&tag)).count();
            if same < 3 && f.len() < 40 {
                f.push(format!("{tag} {msg}"));
            } else {
                *lock(&self.more_failures)
                    .entry(what.to_string())
                    .or_default() += 1;
            }
        }
        let _ = self
            .first_failure_ms
            .compare_exchange(0, self.ms() + 1, SeqCst, SeqCst);
        self.stop.store(true, SeqCst);
    }

    fn failed(&self) -> bool {
        !lock(&self.failures).is_empty()
    }
}

struct Spare {
    wq: Workqueue,
    qid: u64,
    kind: usize,
}

/// A storm thread's current op, for the watchdog.
#[derive(Default)]
struct Slot {
    /// Milliseconds since the start + 1 when the op began; 0 when between ops.
    since: AtomicU64,
    op: AtomicUsize,
    arg: AtomicUsize,
}

/// Everything the storm threads share besides `Shared`.
struct World {
    sh: Arc<Shared>,
    items: Vec<Item>,
    homed: Vec<usize>,
    homed_d: Vec<usize>,
    ordered: Vec<usize>,
    roaming: Vec<usize>,
    private: Vec<(usize, usize)>,
    spares: Vec<Mutex<Option<Spare>>>,
    leftovers: Mutex<VecDeque<(Workqueue, u64)>>,
    slots: Vec<Slot>,
    next_qid: AtomicU64,
    cpus: Vec<usize>,
    outage: AtomicBool,
}

// ===== the work function =====

enum Me<'a> {
    W(&'a Work),
    D(&'a DelayedWork),
}

/// Ends a run: the per-pool count, the finished stamp, the in-flight count (also on panic).
struct RunGuard<'a> {
    sh: &'a Shared,
    st: &'a ItemSt,
    stamp: u64,
    pool: Option<usize>,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if let (Some(q), Some(pool)) = (self.st.home(), self.pool) {
            if let Some(n) = lock(&self.sh.queues[q].conc).get_mut(&pool) {
                *n -= 1;
            }
        }
        self.st.max_done.fetch_max(self.stamp, SeqCst);
        if let Some(q) = self.st.home() {
            self.sh.queues[q].qin_dec();
        }
    }
}

fn item_body(sh: &Shared, st: &ItemSt, me: Me<'_>) {
    let stamp = sh.stamp.fetch_add(1, SeqCst);
    let n = st.runs.fetch_add(1, SeqCst);
    let mut guard = RunGuard {
        sh,
        st,
        stamp,
        pool: None,
    };
    let _running = st.det.enter();
    if st.checks_overlap() && st.det.overlapped() && !st.overlap_reported.swap(true, SeqCst) {
        sh.fail(
            "overlap",
            format!(
                "item {} ran on two workers at once (run {n}, {} running)",
                st.name,
                st.det.running()
            ),
        );
    }
    if let Some(qi) = st.home() {
        let q = &sh.queues[qi];
        let pool = cmwq::current_worker().map_or(usize::MAX, |w| w.pool_id);
        let c = {
            let mut m = lock(&q.conc);
            let e = m.entry(pool).or_insert(0);
            *e += 1;
            *e
        };
        guard.pool = Some(pool);
        q.max_conc.fetch_max(c, Relaxed);
        let ws = q.window_start.load(SeqCst);
        let bound = lock(&q.log).bound_since(ws);
        sh.stats.conc_checks.fetch_add(1, Relaxed);
        if c > bound {
            sh.fail(
                "max_active",
                format!(
                    "{} items of queue {} ran at once on pool {pool} (item {} started), but no \
                     max_active above {bound} was in force since its measured items were last \
                     all idle",
                    c, q.name, st.name
                ),
            );
        }
        if q.ordered {
            lock(&st.ord_runs).push(q.ord_rseq.fetch_add(1, SeqCst));
        }
    }
    let h = mix(sh.seed ^ ((st.id as u64) << 40), n);
    // Mostly short; some sleep (announced), so that per-CPU pools run several at once.
    match h % 100 {
        0..=49 => {}
        50..=74 => burn(Duration::from_micros(5 + (h >> 8) % 45)),
        75..=84 => burn(Duration::from_micros(100 + (h >> 8) % 200)),
        _ => cmwq::blocking(|| std::thread::sleep(Duration::from_micros(300 + (h >> 8) % 1_700))),
    }
    if matches!(st.class, Class::Private(_))
        && st
            .chain
            .fetch_update(SeqCst, SeqCst, |c| c.checked_sub(1))
            .is_ok()
    {
        let target = lock(&st.target).clone();
        if let Some(t) = target {
            let ok = match me {
                Me::W(w) => t.queue(w),
                Me::D(dw) => t.queue_delayed(dw, Duration::from_micros((h >> 20) % 2_000)),
            };
            if ok {
                st.accepted.fetch_add(1, SeqCst);
                // Chained re-arming while the owner drains or destroys the queue: the
                // destroy (or a timer that fires during the drain) may drop it too.
                if st.tearing.load(SeqCst) {
                    st.drop_chances.fetch_add(1, SeqCst);
                }
            }
        }
    }
    if !sh.skip.panic && (h >> 12) % 37 == 0 {
        st.panics.fetch_add(1, SeqCst);
        sh.thrown.fetch_add(1, SeqCst);
        panic!("{DELIBERATE}: item {} run {n}", st.name);
    }
}

// ===== building the world =====

fn perm_queues(seed: u64) -> Vec<QInfo> {
    let tag = seed % 1000;
    let specs: Vec<(&str, Result<Workqueue, Error>, bool)> = vec![
        (
            "pcpu-dfl",
            Workqueue::new(&format!("st{tag}-pcpu-dfl"), WqFlags::empty(), 0),
            false,
        ),
        (
            "pcpu-1",
            Workqueue::new(&format!("st{tag}-pcpu-1"), WqFlags::empty(), 1),
            false,
        ),
        (
            "pcpu-2",
            Workqueue::new(&format!("st{tag}-pcpu-2"), WqFlags::empty(), 2),
            false,
        ),
        (
            "unb-2",
            Workqueue::new(&format!("st{tag}-unb-2"), WqFlags::UNBOUND, 2),
            false,
        ),
        (
            "unb-dfl",
            Workqueue::new(&format!("st{tag}-unb-dfl"), WqFlags::UNBOUND, 0),
            false,
        ),
        (
            "ordered",
            Workqueue::ordered(&format!("st{tag}-ordered"), WqFlags::empty()),
            false,
        ),
        (
            "highpri",
            Workqueue::new(&format!("st{tag}-highpri"), WqFlags::HIGHPRI, 2),
            true,
        ),
        (
            "cpu-int",
            Workqueue::new(&format!("st{tag}-cpu-int"), WqFlags::CPU_INTENSIVE, 2),
            true,
        ),
        (
            "reclaim",
            Workqueue::new(&format!("st{tag}-reclaim"), WqFlags::MEM_RECLAIM, 2),
            true,
        ),
        (
            "unb-hi",
            Workqueue::new(
                &format!("st{tag}-unb-hi"),
                WqFlags::UNBOUND | WqFlags::HIGHPRI,
                3,
            ),
            true,
        ),
    ];
    specs
        .into_iter()
        .map(|(name, wq, varying)| {
            let wq = wq.unwrap_or_else(|e| panic!("storm: creating queue {name}: {e}"));
            let limit = wq.max_active();
            QInfo {
                name: name.to_string(),
                ordered: wq.is_ordered(),
                wq,
                varying,
                qin: AtomicI64::new(0),
                log: Mutex::new(LimitLog {
                    limits: vec![limit],
                    cache: (usize::MAX, 0, 0),
                }),
                cur_idx: AtomicUsize::new(0),
                window_start: AtomicUsize::new(0),
                conc: Mutex::new(HashMap::new()),
                max_conc: AtomicUsize::new(0),
                ord_qseq: AtomicU64::new(0),
                ord_rseq: AtomicU64::new(0),
            }
        })
        .collect()
}

const ORDERED_Q: usize = 5;
/// Permanent queues with a homed delayed item.
const DELAYED_HOMES: [usize; 6] = [0, 2, 3, 6, 8, 9];

fn make_item(sh: &Arc<Shared>, id: usize, name: String, class: Class, delayed: bool) -> Item {
    let st = Arc::new(ItemSt {
        id,
        name,
        class,
        delayed,
        accepted: AtomicU64::new(0),
        runs: AtomicU64::new(0),
        cancels: AtomicU64::new(0),
        drops: AtomicU64::new(0),
        cstart: AtomicU64::new(0),
        cend: AtomicU64::new(0),
        fstart: AtomicU64::new(0),
        fend: AtomicU64::new(0),
        max_done: AtomicU64::new(0),
        det: OverlapDetector::new(),
        overlap_reported: AtomicBool::new(false),
        ctl: Mutex::new(0),
        wedged: AtomicBool::new(false),
        panics: AtomicU64::new(0),
        ord_inst: Mutex::new(Vec::new()),
        ord_runs: Mutex::new(Vec::new()),
        chain: AtomicU32::new(0),
        target: Mutex::new(None),
        synced_runs: AtomicU64::new(u64::MAX),
        drop_chances: AtomicU64::new(0),
        tearing: AtomicBool::new(false),
    });
    let (sh2, st2) = (sh.clone(), st.clone());
    let h = if delayed {
        Handle::D(DelayedWork::new(move |dw| item_body(&sh2, &st2, Me::D(dw))))
    } else {
        Handle::W(Work::new(move |w| item_body(&sh2, &st2, Me::W(w))))
    };
    Item { st, h }
}

/// Spare-queue kinds, cycled through by each thread.
const SPARE_KINDS: usize = 8;

fn make_spare(seed: u64, tid: usize, n: u64, kind: usize) -> Workqueue {
    let name = format!("sp{}-{tid}-{n}", seed % 100);
    let r = match kind {
        0 => Workqueue::new(&name, WqFlags::empty(), 0),
        1 => Workqueue::new(&name, WqFlags::UNBOUND, 2),
        2 => Workqueue::ordered(&name, WqFlags::empty()),
        3 => Workqueue::new(&name, WqFlags::MEM_RECLAIM, 1),
        4 => Workqueue::new(&name, WqFlags::HIGHPRI, 0),
        5 => Workqueue::new(&name, WqFlags::CPU_INTENSIVE, 2),
        // Its own unbound pool: destroy joins its workers.
        6 => Workqueue::builder(&name)
            .flags(WqFlags::UNBOUND)
            .nice(5)
            .max_active(3)
            .build(),
        _ => Workqueue::new(&name, WqFlags::UNBOUND | WqFlags::MEM_RECLAIM, 0),
    };
    r.unwrap_or_else(|e| panic!("storm: creating spare queue kind {kind}: {e}"))
}

fn build_world(sh: &Arc<Shared>, threads: usize) -> World {
    let mut items = Vec::new();
    let (mut homed, mut homed_d, mut ordered, mut roaming, mut private) =
        (vec![], vec![], vec![], vec![], vec![]);
    for q in 0..sh.queues.len() {
        if q == ORDERED_Q {
            continue;
        }
        // More candidates than the limit on the queues whose limit changes.
        let n = if sh.queues[q].varying { 4 } else { 3 };
        for k in 0..n {
            let id = items.len();
            items.push(make_item(
                sh,
                id,
                format!("h{q}.{k}@{}", sh.queues[q].name),
                Class::Homed(q),
                false,
            ));
            homed.push(id);
        }
    }
    for q in DELAYED_HOMES {
        let id = items.len();
        items.push(make_item(
            sh,
            id,
            format!("hd{q}@{}", sh.queues[q].name),
            Class::Homed(q),
            true,
        ));
        homed.push(id);
        homed_d.push(id);
    }
    for k in 0..3 {
        let id = items.len();
        items.push(make_item(
            sh,
            id,
            format!("o{k}@ordered"),
            Class::Ordered(ORDERED_Q),
            false,
        ));
        ordered.push(id);
    }
    for k in 0..4 {
        let id = items.len();
        items.push(make_item(sh, id, format!("r{k}"), Class::Roaming, false));
        roaming.push(id);
    }
    let mut spares = Vec::new();
    let next_qid = AtomicU64::new(1);
    for t in 0..threads {
        let p = items.len();
        items.push(make_item(sh, p, format!("p{t}"), Class::Private(t), false));
        let pd = items.len();
        items.push(make_item(sh, pd, format!("pd{t}"), Class::Private(t), true));
        private.push((p, pd));
        let kind = t % SPARE_KINDS;
        let qid = next_qid.fetch_add(1, SeqCst);
        let wq = make_spare(sh.seed, t, qid, kind);
        *lock(&items[p].st.target) = Some(wq.clone());
        *lock(&items[pd].st.target) = Some(wq.clone());
        spares.push(Mutex::new(Some(Spare { wq, qid, kind })));
    }
    World {
        sh: sh.clone(),
        items,
        homed,
        homed_d,
        ordered,
        roaming,
        private,
        spares,
        leftovers: Mutex::new(VecDeque::new()),
        slots: (0..=threads).map(|_| Slot::default()).collect(),
        next_qid,
        cpus: cmwq::online_cpus(),
        outage: AtomicBool::new(false),
    }
}

// ===== ops =====

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Queue,
    QueueOn,
    TryQueue,
    QueueOnBadCpu,
    QueueDelayed,
    QueueDelayedOn,
    ModDelayed,
    ModDelayedOn,
    QueueDwWork,
    DelayedLong,
    DelayedMax,
    Cancel,
    CancelSync,
    Disable,
    DisableSync,
    Enable,
    FlushItem,
    TryFlushItem,
    FlushQueue,
    FlushSpare,
    DrainSpare,
    SetMaxActive,
    SetMaxActiveBad,
    RoamPerm,
    RoamSpare,
    PrivQueue,
    PrivCancelSync,
    PrivFlush,
    PrivCancel,
    DestroySpare,
    Leftover,
    Outage,
    Peek,
    OrdQueue,
    OrdCancel,
    OrdDisable,
    OrdEnable,
    OrdCancelSync,
    // Not drawn at random: the quiescence and teardown steps.
    QuiesceEnable,
    QuiesceFlush,
    QuiesceCancelSync,
    Teardown,
}

const ALL_OPS: [Op; 42] = [
    Op::Queue,
    Op::QueueOn,
    Op::TryQueue,
    Op::QueueOnBadCpu,
    Op::QueueDelayed,
    Op::QueueDelayedOn,
    Op::ModDelayed,
    Op::ModDelayedOn,
    Op::QueueDwWork,
    Op::DelayedLong,
    Op::DelayedMax,
    Op::Cancel,
    Op::CancelSync,
    Op::Disable,
    Op::DisableSync,
    Op::Enable,
    Op::FlushItem,
    Op::TryFlushItem,
    Op::FlushQueue,
    Op::FlushSpare,
    Op::DrainSpare,
    Op::SetMaxActive,
    Op::SetMaxActiveBad,
    Op::RoamPerm,
    Op::RoamSpare,
    Op::PrivQueue,
    Op::PrivCancelSync,
    Op::PrivFlush,
    Op::PrivCancel,
    Op::DestroySpare,
    Op::Leftover,
    Op::Outage,
    Op::Peek,
    Op::OrdQueue,
    Op::OrdCancel,
    Op::OrdDisable,
    Op::OrdEnable,
    Op::OrdCancelSync,
    Op::QuiesceEnable,
    Op::QuiesceFlush,
    Op::QuiesceCancelSync,
    Op::Teardown,
];

/// (op, weight) of the storm threads; thread 0 also runs the ordered-queue ops.
const WEIGHTS: &[(Op, u32)] = &[
    (Op::Queue, 90),
    (Op::QueueOn, 40),
    (Op::TryQueue, 20),
    (Op::QueueOnBadCpu, 3),
    (Op::QueueDelayed, 40),
    (Op::QueueDelayedOn, 15),
    (Op::ModDelayed, 35),
    (Op::ModDelayedOn, 10),
    (Op::QueueDwWork, 10),
    (Op::DelayedLong, 2),
    (Op::DelayedMax, 2),
    (Op::Cancel, 40),
    (Op::CancelSync, 20),
    (Op::Disable, 8),
    (Op::DisableSync, 4),
    (Op::Enable, 14),
    (Op::FlushItem, 35),
    (Op::TryFlushItem, 5),
    (Op::FlushQueue, 20),
    (Op::FlushSpare, 8),
    (Op::DrainSpare, 3),
    (Op::SetMaxActive, 14),
    (Op::SetMaxActiveBad, 3),
    (Op::RoamPerm, 30),
    (Op::RoamSpare, 25),
    (Op::PrivQueue, 35),
    (Op::PrivCancelSync, 12),
    (Op::PrivFlush, 12),
    (Op::PrivCancel, 8),
    (Op::DestroySpare, 4),
    (Op::Leftover, 14),
    (Op::Outage, 1),
    (Op::Peek, 5),
];

const ORDERED_WEIGHTS: &[(Op, u32)] = &[
    (Op::OrdQueue, 60),
    (Op::OrdCancel, 12),
    (Op::OrdDisable, 5),
    (Op::OrdEnable, 7),
    (Op::OrdCancelSync, 5),
];

/// A recorded accepted queueing by this thread: stamp before the call, cancel generation
/// before it, and whether it armed a timer (item and queue flushes do not wait for timers).
#[derive(Clone, Copy, Debug)]
struct Rec {
    s: u64,
    cg: u64,
    delayed: bool,
}

struct Actor {
    sh: Arc<Shared>,
    w: Arc<World>,
    tid: usize,
    rng: SeededRng,
    recs: HashMap<(usize, u64), Rec>,
}

impl Actor {
    fn new(w: &Arc<World>, tid: usize) -> Actor {
        Actor {
            sh: w.sh.clone(),
            w: w.clone(),
            tid,
            rng: SeededRng::new(mix(w.sh.seed, 0x5107 + tid as u64)),
            recs: HashMap::new(),
        }
    }

    fn st(&self, id: usize) -> Arc<ItemSt> {
        self.w.items[id].st.clone()
    }

    fn h(&self, id: usize) -> Handle {
        self.w.items[id].h.clone()
    }

    fn arg_desc(&self, arg: usize) -> String {
        match arg {
            a if a < self.w.items.len() => format!("item {}", self.w.items[a].st.name),
            a if (10_000..10_100).contains(&a) => {
                format!("queue {}", self.sh.queues[a - 10_000].name)
            }
            a if a >= 20_000 => format!("spare queue #{}", a - 20_000),
            _ => "-".to_string(),
        }
    }

    /// Runs `f` as op `op` on `arg` (an item id, 10_000 + a queue index, 20_000 + a spare id):
    /// the watchdog sees it, and a panic in the calling thread is a failure (`None`).
    fn guarded<R>(&self, op: Op, arg: usize, f: impl FnOnce() -> R) -> Option<R> {
        let slot = &self.w.slots[self.tid];
        slot.op.store(op as usize, SeqCst);
        slot.arg.store(arg, SeqCst);
        slot.since.store(self.sh.ms() + 1, SeqCst);
        let r = catch_unwind(AssertUnwindSafe(f));
        slot.since.store(0, SeqCst);
        match r {
            Ok(v) => Some(v),
            Err(p) => {
                let text = LAST_PANIC
                    .with(|l| l.borrow_mut().take())
                    .unwrap_or_else(|| payload_text(&*p));
                if arg < self.w.items.len() {
                    self.w.items[arg].st.wedged.store(true, SeqCst);
                }
                self.sh.fail(
                    "op-panic",
                    format!(
                        "{op:?} on {} panicked in the calling thread: {text}",
                        self.arg_desc(arg),
                    ),
                );
                None
            }
        }
    }

    fn pick(&mut self, table: &[(Op, u32)]) -> Op {
        let total: u32 = table.iter().map(|&(_, w)| w).sum();
        let mut r = self.rng.below(u64::from(total)) as u32;
        for &(op, w) in table {
            if r < w {
                return op;
            }
            r -= w;
        }
        table[0].0
    }

    fn cpu(&mut self) -> usize {
        self.w.cpus[self.rng.index(self.w.cpus.len())]
    }

    fn short_delay(&mut self) -> Duration {
        match self.rng.below(8) {
            0 => Duration::ZERO,
            _ => Duration::from_micros(self.rng.below(3_000)),
        }
    }

    /// A random id of one of the world's item lists.
    fn pick_from(&mut self, list: fn(&World) -> &Vec<usize>) -> usize {
        let w = self.w.clone();
        let v = list(&w);
        v[self.rng.index(v.len())]
    }

    /// An item any thread may cancel, flush, disable: homed and roaming ones.
    fn shared_item(&mut self) -> usize {
        let n = self.w.homed.len() + self.w.roaming.len();
        let i = self.rng.index(n);
        if i < self.w.homed.len() {
            self.w.homed[i]
        } else {
            self.w.roaming[i - self.w.homed.len()]
        }
    }

    // ----- accounting helpers -----

    /// A queueing call on `id` towards queue `qref`: counts it if accepted and records it for
    /// the flush checks.
    fn queue_op(
        &mut self,
        op: Op,
        id: usize,
        qref: u64,
        delayed: bool,
        call: impl FnOnce() -> bool,
    ) -> Option<bool> {
        let st = self.st(id);
        let cg = st.quiet_gen();
        let s = self.sh.stamp.fetch_add(1, SeqCst);
        let home = st.home().map(|q| &self.sh.queues[q]);
        if let Some(q) = home {
            q.qin_inc();
        }
        let r = self.guarded(op, id, call)?;
        if r {
            st.accepted.fetch_add(1, SeqCst);
            if let Some(cg) = cg {
                self.recs.insert((id, qref), Rec { s, cg, delayed });
            }
        } else if let Some(q) = home {
            q.qin_dec();
        }
        Some(r)
    }

    /// A successful cancel of `id`'s pending instance.
    fn resolved_by_cancel(&self, st: &ItemSt) {
        st.cancels.fetch_add(1, SeqCst);
        if let Some(q) = st.home() {
            self.sh.queues[q].qin_dec();
        }
        if matches!(st.class, Class::Ordered(_)) {
            lock(&st.ord_inst).pop();
        }
    }

    fn do_cancel(&mut self, op: Op, id: usize) {
        let (st, h) = (self.st(id), self.h(id));
        st.begin_cancel();
        let r = self.guarded(op, id, || h.cancel());
        if r == Some(true) {
            self.resolved_by_cancel(&st);
        }
        st.end_cancel();
    }

    fn do_cancel_sync(&mut self, op: Op, id: usize) -> Option<bool> {
        let (st, h) = (self.st(id), self.h(id));
        let _ctl = lock(&st.ctl);
        st.begin_cancel();
        let r = self.guarded(op, id, || h.cancel_sync())?;
        if r {
            self.resolved_by_cancel(&st);
        }
        st.end_cancel();
        Some(r)
    }

    fn do_disable(&mut self, op: Op, id: usize, sync: bool) {
        let (st, h) = (self.st(id), self.h(id));
        let mut depth = lock(&st.ctl);
        if *depth >= 3 {
            return;
        }
        st.begin_cancel();
        let r = self.guarded(op, id, || {
            if sync {
                h.work().disable_sync()
            } else {
                h.work().disable()
            }
        });
        let Some(r) = r else { return };
        *depth += 1;
        if r {
            self.resolved_by_cancel(&st);
        }
        st.end_cancel();
    }

    fn do_enable(&mut self, op: Op, id: usize) {
        let (st, h) = (self.st(id), self.h(id));
        let mut depth = lock(&st.ctl);
        if *depth == 0 {
            return;
        }
        let Some(r) = self.guarded(op, id, || h.work().enable()) else {
            return;
        };
        *depth -= 1;
        if r != (*depth == 0) {
            self.sh.fail(
                "enable",
                format!(
                    "enable of {} returned {r} with the depth now {} (true exactly at zero)",
                    st.name, *depth
                ),
            );
        }
    }

    /// After a flush of `id` (or of a queue, `qref`) returned: every accepted queueing this
    /// thread recorded for it has finished a run, unless a cancel was attempted since.
    fn check_flush(&mut self, what: &str, id: Option<usize>, qref: Option<u64>, timers: bool) {
        let keys: Vec<(usize, u64)> = self
            .recs
            .iter()
            .filter(|((i, q), r)| {
                id.is_none_or(|x| x == *i) && qref.is_none_or(|x| x == *q) && (timers || !r.delayed)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let rec = self.recs.remove(&key).expect("listed above");
            let st = self.st(key.0);
            if st.cstart.load(SeqCst) != rec.cg {
                continue;
            }
            self.sh.stats.flush_checks.fetch_add(1, Relaxed);
            let done = st.max_done.load(SeqCst);
            if done < rec.s {
                self.sh.fail(
                    "flush",
                    format!(
                        "{what} returned but {} has not finished a run queued by thread {} \
                         (stamp {} before its accepted queueing on {}; last finished run \
                         started at {done}; {} runs, {} accepted, pending {})",
                        st.name,
                        self.tid,
                        rec.s,
                        self.qref_name(key.1),
                        st.runs.load(SeqCst),
                        st.accepted.load(SeqCst),
                        self.w.items[key.0].h.is_pending(),
                    ),
                );
            }
        }
    }

    fn qref_name(&self, qref: u64) -> String {
        if qref >= SPARE_BASE {
            format!("spare #{}", qref - SPARE_BASE)
        } else {
            self.sh.queues[qref as usize].name.clone()
        }
    }

    fn random_spare(&mut self) -> Option<(Workqueue, u64)> {
        let i = self.rng.index(self.w.spares.len());
        lock(&self.w.spares[i])
            .as_ref()
            .map(|s| (s.wq.clone(), s.qid))
    }

    fn own_spare(&self) -> Option<(Workqueue, u64)> {
        lock(&self.w.spares[self.tid])
            .as_ref()
            .map(|s| (s.wq.clone(), s.qid))
    }

    // ----- the storm loop -----

    fn storm(&mut self, ops: u64) {
        for _ in 0..ops {
            if self.sh.stop.load(Relaxed) {
                return;
            }
            let op = if self.tid == 0 && self.rng.chance(1, 6) {
                self.pick(ORDERED_WEIGHTS)
            } else {
                self.pick(WEIGHTS)
            };
            self.step(op);
            self.sh.stats.ops.fetch_add(1, Relaxed);
        }
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Queue | Op::QueueOn | Op::TryQueue => self.op_queue_homed(op),
            Op::QueueOnBadCpu => {
                let id = self.shared_item();
                let h = self.h(id);
                let q = &self.sh.queues[self.rng.index(self.sh.queues.len())];
                let bad = self.w.cpus.iter().max().copied().unwrap_or(0) + 1 + self.rng.index(1000);
                if let Some(r) = self.guarded(op, id, || q.wq.queue_on(bad, h.work())) {
                    if !matches!(r, Err(Error::InvalidCpu { .. })) {
                        self.sh.fail(
                            "contract",
                            format!(
                                "queue_on(cpu {bad}) on {} gave {r:?}, not InvalidCpu",
                                q.name
                            ),
                        );
                    }
                }
            }
            Op::QueueDelayed
            | Op::QueueDelayedOn
            | Op::ModDelayed
            | Op::ModDelayedOn
            | Op::QueueDwWork
            | Op::DelayedLong
            | Op::DelayedMax => self.op_delayed(op),
            Op::Cancel => {
                let id = self.shared_item();
                self.do_cancel(op, id);
            }
            Op::CancelSync => {
                let id = self.shared_item();
                self.do_cancel_sync(op, id);
            }
            Op::Disable | Op::DisableSync => {
                let id = self.shared_item();
                self.do_disable(op, id, op == Op::DisableSync);
            }
            Op::Enable => {
                let id = self.shared_item();
                self.do_enable(op, id);
            }
            Op::FlushItem | Op::TryFlushItem => self.op_flush_item(op),
            Op::FlushQueue => {
                let qi = self.rng.index(self.sh.queues.len());
                let wq = self.sh.queues[qi].wq.clone();
                if self.guarded(op, 10_000 + qi, || wq.flush()).is_some() {
                    self.check_flush("Workqueue::flush", None, Some(qi as u64), false);
                }
            }
            Op::DrainSpare => self.op_drain_own_spare(),
            Op::FlushSpare => {
                let Some((wq, qid)) = self.random_spare() else {
                    return;
                };
                if self
                    .guarded(op, 20_000 + qid as usize, || wq.flush())
                    .is_some()
                {
                    self.check_flush("flush", None, Some(SPARE_BASE + qid), false);
                }
            }
            Op::SetMaxActive => self.op_set_max_active(),
            Op::SetMaxActiveBad => self.op_set_max_active_bad(),
            Op::RoamPerm | Op::RoamSpare => self.op_roam(op),
            Op::PrivQueue | Op::PrivCancelSync | Op::PrivFlush | Op::PrivCancel => {
                self.op_private(op)
            }
            Op::DestroySpare => self.destroy_spare_of(self.tid, true),
            Op::Leftover => self.op_leftover(),
            Op::Outage => self.op_outage(),
            Op::Peek => {
                let id = self.rng.index(self.w.items.len());
                let h = self.h(id);
                let _ = self.guarded(op, id, || (h.work().busy(), h.is_pending()));
            }
            Op::OrdQueue => self.op_ord_queue(),
            Op::OrdCancel => {
                let id = self.pick_from(|w| &w.ordered);
                self.do_cancel(op, id);
            }
            Op::OrdDisable => {
                let id = self.pick_from(|w| &w.ordered);
                self.do_disable(op, id, false);
            }
            Op::OrdEnable => {
                let id = self.pick_from(|w| &w.ordered);
                self.do_enable(op, id);
            }
            Op::OrdCancelSync => {
                let id = self.pick_from(|w| &w.ordered);
                self.do_cancel_sync(op, id);
            }
            Op::QuiesceEnable | Op::QuiesceFlush | Op::QuiesceCancelSync | Op::Teardown => {}
        }
    }

    fn op_queue_homed(&mut self, op: Op) {
        let id = self.pick_from(|w| &w.homed);
        let st = self.st(id);
        let qi = st.home().expect("homed");
        let wq = self.sh.queues[qi].wq.clone();
        let h = self.h(id);
        let cpu = self.cpu();
        let sh = self.sh.clone();
        let name = st.name.clone();
        self.queue_op(op, id, qi as u64, false, move || match op {
            Op::Queue => wq.queue(h.work()),
            Op::QueueOn => match wq.queue_on(cpu, h.work()) {
                Ok(b) => b,
                Err(e) => {
                    sh.fail("contract", format!("queue_on({cpu}) of {name}: {e}"));
                    false
                }
            },
            _ => match wq.try_queue(h.work()) {
                Ok(b) => b,
                Err(e) => {
                    sh.fail(
                        "contract",
                        format!("try_queue of {name} on a live queue: {e}"),
                    );
                    false
                }
            },
        });
    }

    fn op_delayed(&mut self, op: Op) {
        let id = self.pick_from(|w| &w.homed_d);
        let st = self.st(id);
        let qi = st.home().expect("homed");
        let wq = self.sh.queues[qi].wq.clone();
        let Handle::D(dw) = self.h(id) else {
            unreachable!("homed_d holds delayed items")
        };
        let cpu = self.cpu();
        let delay = match op {
            Op::DelayedLong => {
                if self.sh.skip.long {
                    return;
                }
                self.sh.stats.long.fetch_add(1, Relaxed);
                Duration::from_secs(3600)
            }
            Op::DelayedMax => {
                if self.sh.skip.dmax {
                    return;
                }
                self.sh.stats.dmax.fetch_add(1, Relaxed);
                Duration::MAX
            }
            _ => self.short_delay(),
        };
        // Long and MAX delays use every arming call in turn.
        let style = match op {
            Op::DelayedLong | Op::DelayedMax => match self.rng.below(3) {
                0 => Op::QueueDelayed,
                1 => Op::QueueDelayedOn,
                _ => Op::ModDelayed,
            },
            other => other,
        };
        let sh = self.sh.clone();
        let name = st.name.clone();
        match style {
            Op::QueueDelayed => {
                self.queue_op(op, id, qi as u64, true, move || {
                    wq.queue_delayed(&dw, delay)
                });
            }
            Op::QueueDelayedOn => {
                self.queue_op(op, id, qi as u64, true, move || {
                    match wq.queue_delayed_on(cpu, &dw, delay) {
                        Ok(b) => b,
                        Err(e) => {
                            sh.fail(
                                "contract",
                                format!("queue_delayed_on({cpu}) of {name}: {e}"),
                            );
                            false
                        }
                    }
                });
            }
            Op::QueueDwWork => {
                self.queue_op(op, id, qi as u64, false, move || wq.queue(dw.work()));
            }
            _ => {
                // mod_delayed: under the item's control lock, so the disable depth is known.
                let depth_guard = lock(&st.ctl);
                let depth = *depth_guard;
                let quiet = st.quiet_gen();
                let g = st.begin_cancel();
                let s = self.sh.stamp.fetch_add(1, SeqCst);
                let q = &self.sh.queues[qi];
                q.qin_inc();
                let on = style == Op::ModDelayedOn;
                let r = self.guarded(op, id, || {
                    if on {
                        match wq.mod_delayed_on(cpu, &dw, delay) {
                            Ok(b) => b,
                            Err(e) => {
                                sh.fail(
                                    "contract",
                                    format!("mod_delayed_on({cpu}) of {name}: {e}"),
                                );
                                false
                            }
                        }
                    } else {
                        wq.mod_delayed(&dw, delay)
                    }
                });
                let Some(was_pending) = r else { return };
                if was_pending {
                    self.resolved_by_cancel(&st);
                }
                st.end_cancel();
                if depth == 0 {
                    st.accepted.fetch_add(1, SeqCst);
                    // Recorded only if no other cancel-like call overlapped this one.
                    if quiet == Some(g - 1) {
                        self.recs.insert(
                            (id, qi as u64),
                            Rec {
                                s,
                                cg: g,
                                delayed: true,
                            },
                        );
                    }
                } else {
                    q.qin_dec();
                    if was_pending {
                        self.sh.fail(
                            "mod_delayed",
                            format!("mod_delayed of disabled {} said it was pending", st.name),
                        );
                    }
                }
                drop(depth_guard);
            }
        }
    }

    fn op_flush_item(&mut self, op: Op) {
        let id = if self.rng.chance(1, 8) {
            self.pick_from(|w| &w.ordered)
        } else {
            self.shared_item()
        };
        let h = self.h(id);
        let st = self.st(id);
        // A delayed item's own flush fires its timer; its Work's flush does not wait for one.
        let via_dw = op == Op::FlushItem && matches!(h, Handle::D(_)) && self.rng.chance(3, 4);
        let quiet = st.fend.load(SeqCst) == st.fstart.load(SeqCst);
        let mine = if via_dw {
            st.fstart.fetch_add(1, SeqCst) + 1
        } else {
            0
        };
        let sh = self.sh.clone();
        let name = st.name.clone();
        let r = self.guarded(op, id, || {
            if op == Op::TryFlushItem {
                if let Err(e) = h.work().try_flush() {
                    sh.fail(
                        "contract",
                        format!("try_flush of {name} from a plain thread: {e}"),
                    );
                }
            } else if via_dw {
                h.flush();
            } else {
                h.work().flush();
            }
        });
        if via_dw {
            st.fend.fetch_add(1, SeqCst);
        }
        let alone = !via_dw || (quiet && st.fstart.load(SeqCst) == mine);
        if r.is_some() && alone {
            let what = if via_dw {
                "DelayedWork::flush"
            } else {
                "Work::flush"
            };
            self.check_flush(what, Some(id), None, via_dw);
        }
    }

    fn op_set_max_active(&mut self) {
        if self.sh.skip.sma {
            return;
        }
        let varying: Vec<usize> = (0..self.sh.queues.len())
            .filter(|&i| self.sh.queues[i].varying)
            .collect();
        let qi = varying[self.rng.index(varying.len())];
        let new = if self.rng.chance(1, 60) {
            0
        } else {
            1 + self.rng.index(4)
        };
        let eff = if new == 0 { DFL_ACTIVE } else { new };
        let sh = self.sh.clone();
        let q = &sh.queues[qi];
        let mut log = lock(&q.log);
        let old = *log.limits.last().expect("never empty");
        let push = |log: &mut LimitLog| {
            log.limits.push(eff);
            q.cur_idx.store(log.limits.len() - 1, SeqCst);
        };
        // A raise is logged before it takes effect, a lowering after: the log never claims a
        // lower limit than the engine may be using.
        if eff >= old {
            push(&mut log);
        }
        let r = self.guarded(Op::SetMaxActive, 10_000 + qi, || q.wq.set_max_active(new));
        if eff < old {
            push(&mut log);
        }
        // Still under the log lock: nobody else changes the limit meanwhile.
        let now = q.wq.max_active();
        drop(log);
        sh.stats.sma.fetch_add(1, Relaxed);
        match r {
            Some(Ok(())) if now == eff => {}
            Some(r) => sh.fail(
                "contract",
                format!(
                    "set_max_active({new}) on {} gave {r:?}, max_active() then {now}",
                    q.name
                ),
            ),
            None => {}
        }
    }

    fn op_set_max_active_bad(&mut self) {
        let sh = self.sh.clone();
        if self.rng.chance(1, 2) {
            let q = &sh.queues[ORDERED_Q];
            let n = 1 + self.rng.index(4);
            let r = self.guarded(Op::SetMaxActiveBad, 10_000 + ORDERED_Q, || {
                q.wq.set_max_active(n)
            });
            if let Some(r) = r {
                if !matches!(r, Err(Error::Ordered { .. })) || q.wq.max_active() != 1 {
                    sh.fail(
                        "contract",
                        format!("set_max_active({n}) on an ordered queue: {r:?}"),
                    );
                }
            }
        } else {
            let qi = self.rng.index(sh.queues.len());
            let q = &sh.queues[qi];
            let before = q.wq.max_active();
            let n = cmwq::WQ_MAX_ACTIVE + 1 + self.rng.index(10_000);
            let r = self.guarded(Op::SetMaxActiveBad, 10_000 + qi, || q.wq.set_max_active(n));
            if let Some(r) = r {
                let ok = if q.ordered {
                    matches!(
                        r,
                        Err(Error::Ordered { .. }) | Err(Error::InvalidMaxActive { .. })
                    )
                } else {
                    matches!(r, Err(Error::InvalidMaxActive { .. }))
                };
                // A concurrent set_max_active may change the value; only the fixed ones are
                // compared.
                if !ok || (!q.varying && q.wq.max_active() != before) {
                    sh.fail(
                        "contract",
                        format!("set_max_active({n}) on {}: {r:?}", q.name),
                    );
                }
            }
        }
    }

    fn op_roam(&mut self, op: Op) {
        let id = self.pick_from(|w| &w.roaming);
        let h = self.h(id);
        if op == Op::RoamPerm {
            let qi = self.rng.index(self.sh.queues.len());
            let wq = self.sh.queues[qi].wq.clone();
            let cpu = self.cpu();
            let on = self.rng.chance(1, 3);
            self.queue_op(op, id, qi as u64, false, move || {
                if on {
                    wq.queue_on(cpu, h.work()).unwrap_or(false)
                } else {
                    wq.queue(h.work())
                }
            });
        } else {
            let Some((wq, qid)) = self.random_spare() else {
                return;
            };
            // Refused (false) while the queue drains or is destroyed by its owner meanwhile.
            self.queue_op(op, id, SPARE_BASE + qid, false, move || wq.queue(h.work()));
        }
    }

    /// Drains this thread's spare. A timer of the private delayed item that fires meanwhile is
    /// refused (as in the kernel, where that is the caller's bug) and never runs: it is
    /// accounted for at the item's next quiescent point (`reconcile_private`).
    fn op_drain_own_spare(&mut self) {
        let Some((wq, qid)) = self.own_spare() else {
            return;
        };
        let pd = self.w.private[self.tid].1;
        let st = self.st(pd);
        st.begin_cancel();
        st.drop_chances.fetch_add(1, SeqCst);
        st.tearing.store(true, SeqCst);
        let r = self.guarded(Op::DrainSpare, 20_000 + qid as usize, || wq.drain());
        st.tearing.store(false, SeqCst);
        if r.is_none() {
            return;
        }
        st.end_cancel();
        self.check_flush("drain", None, Some(SPARE_BASE + qid), false);
    }

    /// A private item its owner has just made quiescent (`cancel_sync`, or the destroy of its
    /// queue for the plain one): what was accepted either ran, was cancelled, or (delayed item
    /// only) was dropped by one of the drains or destroys since the last reconciliation (see
    /// `drop_chances`).
    fn reconcile_private(&self, id: usize, when: &str) {
        let st = self.st(id);
        let chances = st.drop_chances.swap(0, SeqCst) as i64;
        let inflight = st.accepted.load(SeqCst) as i64
            - st.runs.load(SeqCst) as i64
            - st.cancels.load(SeqCst) as i64
            - st.drops.load(SeqCst) as i64;
        let allowed = if st.delayed { chances } else { 0 };
        if (0..=allowed).contains(&inflight) {
            st.drops.fetch_add(inflight as u64, SeqCst);
        } else {
            self.sh.fail(
                "accounting",
                format!(
                    "{} after {when}: {inflight} accepted instance(s) neither ran nor were \
                     cancelled, while drains and destroys of its queue may have dropped at most \
                     {allowed}",
                    st.name
                ),
            );
        }
    }

    fn op_private(&mut self, op: Op) {
        let (p, pd) = self.w.private[self.tid];
        let id = if self.rng.chance(1, 2) { p } else { pd };
        let st = self.st(id);
        let h = self.h(id);
        match op {
            Op::PrivQueue => {
                let Some((wq, qid)) = self.own_spare() else {
                    return;
                };
                let synced = st.synced_runs.swap(u64::MAX, SeqCst);
                let runs = st.runs.load(SeqCst);
                if synced != u64::MAX && runs != synced {
                    self.sh.fail(
                        "cancel_sync",
                        format!(
                            "{} ran {} time(s) after cancel_sync returned, without being queued \
                             again",
                            st.name,
                            runs - synced
                        ),
                    );
                }
                st.chain.store(self.rng.below(4) as u32, SeqCst);
                let delay = self.short_delay();
                let delayed = matches!(h, Handle::D(_));
                self.queue_op(op, id, SPARE_BASE + qid, delayed, move || match &h {
                    Handle::W(w) => wq.queue(w),
                    Handle::D(d) => wq.queue_delayed(d, delay),
                });
            }
            Op::PrivCancelSync => {
                let Some(_) = self.do_cancel_sync(op, id) else {
                    return;
                };
                self.sh.stats.sync_checks.fetch_add(1, Relaxed);
                let running = st.det.running();
                let pending = h.is_pending();
                if running != 0 || pending {
                    self.sh.fail(
                        "cancel_sync",
                        format!(
                            "after cancel_sync of {} returned: {running} run(s) in progress, \
                             pending {pending}",
                            st.name
                        ),
                    );
                }
                st.synced_runs.store(st.runs.load(SeqCst), SeqCst);
                self.reconcile_private(id, "cancel_sync");
            }
            Op::PrivFlush => {
                if self.guarded(op, id, || h.flush()).is_some() {
                    self.check_flush("flush of a private item", Some(id), None, true);
                }
            }
            _ => self.do_cancel(op, id),
        }
    }

    /// Destroys this thread's spare queue and checks what it leaves; makes a new one if
    /// `replace`.
    fn destroy_spare_of(&mut self, owner: usize, replace: bool) {
        let Some(spare) = lock(&self.w.spares[owner]).take() else {
            return;
        };
        let (p, pd) = self.w.private[owner];
        let keep = spare.wq.clone();
        let qid = spare.qid;
        // A timer of the private delayed item may be dropped by the destroy.
        let pd_st = self.st(pd);
        pd_st.begin_cancel();
        pd_st.tearing.store(true, SeqCst);
        let wq = spare.wq;
        let r = self.guarded(Op::DestroySpare, 20_000 + qid as usize, move || {
            wq.destroy()
        });
        pd_st.tearing.store(false, SeqCst);
        if r.is_none() {
            return;
        }
        pd_st.end_cancel();
        self.sh.stats.destroys.fetch_add(1, Relaxed);
        for id in [p, pd] {
            let st = self.st(id);
            let h = self.h(id);
            let running = st.det.running();
            let mut pending = h.is_pending();
            if pending && st.delayed && self.sh.skip.destroy_pending {
                // A timer fire in flight when destroy returned: it is refused and released.
                pending = !wait_until(Duration::from_secs(1), || !h.is_pending());
            }
            if running != 0 || pending {
                self.sh.fail(
                    "destroy",
                    format!(
                        "destroy of spare #{qid} (kind {}) returned with {} still pending \
                         {pending}, {running} run(s) in progress ({:?})",
                        spare.kind,
                        st.name,
                        h.work(),
                    ),
                );
            }
        }
        // The destroy may have dropped the delayed item's armed timer: make it quiescent and
        // account for it.
        self.st(pd).drop_chances.fetch_add(1, SeqCst);
        if self.do_cancel_sync(Op::DestroySpare, pd).is_some() {
            self.reconcile_private(p, "destroy");
            self.reconcile_private(pd, "destroy");
        }
        // Everything queued on it before the destroy has run (the destroy drains).
        self.check_flush("destroy (drain)", None, Some(SPARE_BASE + qid), true);
        {
            let mut l = lock(&self.w.leftovers);
            l.push_back((keep, qid));
            while l.len() > 8 {
                l.pop_front();
            }
        }
        if replace {
            let kind = (spare.kind + 1) % SPARE_KINDS;
            let qid = self.w.next_qid.fetch_add(1, SeqCst);
            let wq = make_spare(self.sh.seed, owner, qid, kind);
            *lock(&self.w.items[p].st.target) = Some(wq.clone());
            *lock(&self.w.items[pd].st.target) = Some(wq.clone());
            *lock(&self.w.spares[owner]) = Some(Spare { wq, qid, kind });
        }
    }

    fn op_leftover(&mut self) {
        let pick = {
            let l = lock(&self.w.leftovers);
            if l.is_empty() {
                None
            } else {
                let i = self.rng.index(l.len());
                Some(l[i].clone())
            }
        };
        let Some((wq, qid)) = pick else { return };
        let which = self.rng.below(9);
        self.leftover_check(&wq, 20_000 + qid as usize, which);
    }

    /// One op through a handle of a destroyed queue: refused, never accepted, never a panic.
    /// `arg` names the queue for the watchdog (see [`Actor::guarded`]).
    fn leftover_check(&mut self, wq: &Workqueue, arg: usize, which: u64) {
        self.sh.stats.leftover_ops.fetch_add(1, Relaxed);
        let name = wq.name().to_string();
        let id = self.pick_from(|w| &w.roaming);
        let st = self.st(id);
        let h = self.h(id);
        let cpu = self.cpu();
        let bad = |what: &str, got: String| {
            format!("{what} through a leftover handle of destroyed queue {name:?} gave {got}")
        };
        match which {
            0..=2 => {
                let r = self.guarded(Op::Leftover, arg, || match which {
                    0 => Ok(wq.queue(h.work())),
                    1 => wq.try_queue(h.work()),
                    _ => wq.queue_on(cpu, h.work()),
                });
                let Some(r) = r else { return };
                let refused = matches!(
                    (which, &r),
                    (1, Err(Error::Destroyed { .. })) | (_, Ok(false))
                );
                if !refused {
                    if matches!(r, Ok(true)) {
                        // Count it, so quiescence shows whether it ever ran.
                        st.accepted.fetch_add(1, SeqCst);
                    }
                    self.sh
                        .fail("leftover", bad("queue of a roaming item", format!("{r:?}")));
                }
            }
            3..=5 => {
                let tmp = DelayedWork::new(|_| {});
                let delay = if which == 5 {
                    Duration::ZERO
                } else {
                    self.short_delay()
                };
                let r = self.guarded(Op::Leftover, arg, || match which {
                    3 => Ok(wq.queue_delayed(&tmp, delay)),
                    4 => Ok(wq.mod_delayed(&tmp, delay)),
                    _ => wq.queue_delayed_on(cpu, &tmp, delay),
                });
                let Some(r) = r else { return };
                if !matches!(r, Ok(false)) || tmp.is_pending() {
                    self.sh.fail(
                        "leftover",
                        bad(
                            "arming a delayed item",
                            format!("{r:?}, pending {}", tmp.is_pending()),
                        ),
                    );
                    tmp.cancel();
                }
            }
            6 | 7 => {
                let r = self.guarded(Op::Leftover, arg, || {
                    wq.flush();
                    let f = wq.try_flush();
                    wq.drain();
                    (f, wq.try_drain(), wq.max_active(), wq.is_ordered())
                });
                if let Some((f, d, _, _)) = r {
                    let ok =
                        |x: &Result<(), Error>| matches!(x, Ok(()) | Err(Error::Destroyed { .. }));
                    if !ok(&f) || !ok(&d) {
                        self.sh.fail(
                            "leftover",
                            bad("try_flush / try_drain", format!("{f:?} / {d:?}")),
                        );
                    }
                }
            }
            _ => {
                if self.sh.skip.leftover_sma {
                    return;
                }
                let n = 1 + self.rng.index(4);
                let r = self.guarded(Op::Leftover, arg, || wq.set_max_active(n));
                if let Some(r) = r {
                    // Refusing is the natural answer; accepting a limit nothing uses is harmless.
                    if !matches!(
                        r,
                        Ok(()) | Err(Error::Destroyed { .. }) | Err(Error::Ordered { .. })
                    ) {
                        self.sh.fail(
                            "leftover",
                            bad(&format!("set_max_active({n})"), format!("{r:?}")),
                        );
                    }
                }
            }
        }
    }

    fn op_outage(&mut self) {
        if self.sh.skip.outage || self.w.outage.swap(true, SeqCst) {
            return;
        }
        self.sh.stats.outages.fetch_add(1, Relaxed);
        let d = Duration::from_micros(500 + self.rng.below(8_000));
        let _ = self.guarded(Op::Outage, usize::MAX, || {
            cmwq::fail_worker_creation(true);
            std::thread::sleep(d);
            cmwq::fail_worker_creation(false);
        });
        self.w.outage.store(false, SeqCst);
    }

    fn op_ord_queue(&mut self) {
        let id = self.pick_from(|w| &w.ordered);
        let q = &self.sh.queues[ORDERED_Q];
        let o = q.ord_qseq.fetch_add(1, SeqCst);
        let wq = q.wq.clone();
        let h = self.h(id);
        let cpu = self.cpu();
        let on = self.rng.chance(1, 3);
        let r = self.queue_op(Op::OrdQueue, id, ORDERED_Q as u64, false, move || {
            if on {
                wq.queue_on(cpu, h.work()).unwrap_or(false)
            } else {
                wq.queue(h.work())
            }
        });
        if r == Some(true) {
            lock(&self.st(id).ord_inst).push(o);
        }
    }

    // ----- quiescence -----

    fn quiesce(&mut self) {
        cmwq::fail_worker_creation(false);
        let ids: Vec<usize> = (0..self.w.items.len())
            .filter(|&i| !self.w.items[i].st.wedged.load(SeqCst))
            .collect();
        for &id in &ids {
            let (st, h) = (self.st(id), self.h(id));
            let mut depth = lock(&st.ctl);
            while *depth > 0 {
                let Some(r) = self.guarded(Op::QuiesceEnable, id, || h.work().enable()) else {
                    break;
                };
                *depth -= 1;
                if r != (*depth == 0) {
                    self.sh.fail(
                        "enable",
                        format!("enable of {} returned {r} at depth {}", st.name, *depth),
                    );
                }
            }
        }
        self.flush_all_queues();
        for &id in &ids {
            let (st, h) = (self.st(id), self.h(id));
            if self.do_cancel_sync(Op::QuiesceCancelSync, id).is_none() {
                continue;
            }
            let running = st.det.running();
            if running != 0 || h.is_pending() || h.work().busy().running {
                self.sh.fail(
                    "cancel_sync",
                    format!(
                        "after the final cancel_sync of {}: {running} run(s) in progress, \
                         busy {:?}",
                        st.name,
                        h.work().busy()
                    ),
                );
            }
        }
        self.flush_all_queues();
        for &id in &ids {
            let h = self.h(id);
            self.guarded(Op::QuiesceFlush, id, || h.flush());
        }
        for &(p, pd) in &self.w.private.clone() {
            for id in [p, pd] {
                if !self.w.items[id].st.wedged.load(SeqCst) {
                    self.reconcile_private(id, "the final cancel_sync");
                }
            }
        }
        self.check_accounting(&ids);
        self.check_ordered();
        for q in &self.sh.queues {
            let n = q.qin.load(SeqCst);
            if n != 0 && !self.sh.failed() {
                self.sh.fail(
                    "bookkeeping",
                    format!(
                        "queue {}: {n} homed instances still counted in flight",
                        q.name
                    ),
                );
            }
        }
        let thrown = self.sh.thrown.load(SeqCst);
        let reported = REPORTED.load(SeqCst);
        if thrown != reported {
            self.sh.fail(
                "panic-report",
                format!(
                    "{thrown} deliberate panics thrown by items, {reported} reported to the hook"
                ),
            );
        }
    }

    fn flush_all_queues(&mut self) {
        for qi in 0..self.sh.queues.len() {
            let wq = self.sh.queues[qi].wq.clone();
            self.guarded(Op::QuiesceFlush, 10_000 + qi, || wq.flush());
        }
        for i in 0..self.w.spares.len() {
            let spare = lock(&self.w.spares[i])
                .as_ref()
                .map(|s| (s.wq.clone(), s.qid));
            if let Some((wq, qid)) = spare {
                self.guarded(Op::QuiesceFlush, 20_000 + qid as usize, || wq.flush());
            }
        }
    }

    fn check_accounting(&self, ids: &[usize]) {
        for &id in ids {
            let st = self.st(id);
            let (a, r, c, d) = (
                st.accepted.load(SeqCst),
                st.runs.load(SeqCst),
                st.cancels.load(SeqCst),
                st.drops.load(SeqCst),
            );
            if a != r + c + d {
                self.sh.fail(
                    "accounting",
                    format!(
                        "{}: {a} accepted queueings != {r} runs + {c} successful cancels + {d} \
                         timers dropped by destroy ({})",
                        st.name,
                        if a > r + c + d {
                            "accepted instances were lost"
                        } else {
                            "runs or cancels nobody queued"
                        }
                    ),
                );
            }
        }
    }

    fn check_ordered(&self) {
        let mut pairs: Vec<(u64, u64, usize)> = Vec::new();
        for &id in &self.w.ordered {
            let st = self.st(id);
            if st.wedged.load(SeqCst) {
                return;
            }
            let inst = lock(&st.ord_inst).clone();
            let runs = lock(&st.ord_runs).clone();
            if inst.len() != runs.len() {
                // The accounting check reports the difference.
                return;
            }
            pairs.extend(runs.into_iter().zip(inst).map(|(r, q)| (r, q, id)));
        }
        pairs.sort_unstable();
        for w in pairs.windows(2) {
            let ((r1, q1, i1), (r2, q2, i2)) = (w[0], w[1]);
            if q2 < q1 {
                self.sh.fail(
                    "ordered",
                    format!(
                        "ordered queue ran {} (queued #{q1}) as run #{r1} before {} (queued \
                         #{q2}) as run #{r2}: not in queueing order",
                        self.w.items[i1].st.name, self.w.items[i2].st.name
                    ),
                );
                return;
            }
        }
    }

    /// Destroys every queue and checks what the destroys and the leftover handles do.
    fn teardown(&mut self) -> Vec<Workqueue> {
        let mut leftovers = Vec::new();
        for owner in 0..self.w.spares.len() {
            self.destroy_spare_of(owner, false);
        }
        for qi in 0..self.sh.queues.len() {
            let wq = self.sh.queues[qi].wq.clone();
            leftovers.push(wq.clone());
            self.guarded(Op::Teardown, 10_000 + qi, move || wq.destroy());
        }
        for id in 0..self.w.items.len() {
            let st = self.st(id);
            if !st.wedged.load(SeqCst) && self.w.items[id].h.is_pending() {
                self.sh.fail(
                    "destroy",
                    format!("{} pending after every queue was destroyed", st.name),
                );
            }
        }
        let spare_left: Vec<(Workqueue, u64)> = lock(&self.w.leftovers).iter().cloned().collect();
        for (qi, wq) in leftovers.iter().enumerate() {
            for which in 0..9 {
                self.leftover_check(wq, 10_000 + qi, which);
            }
        }
        for (wq, qid) in &spare_left {
            for which in 0..9 {
                self.leftover_check(wq, 20_000 + *qid as usize, which);
            }
        }
        leftovers
    }
}

// ===== the watchdog =====

fn op_name(i: usize) -> String {
    ALL_OPS
        .get(i)
        .map_or_else(|| format!("op#{i}"), |op| format!("{op:?}"))
}

/// Waits for `handles`; returns descriptions of stuck ops (an op running longer than `stall`,
/// or, after a failure, still running after the grace period).
fn watch(w: &World, handles: &[JoinHandle<()>], tids: &[usize], stall: Duration) -> Vec<String> {
    let sh = &w.sh;
    let mut last_panics = 0;
    loop {
        if handles.iter().all(JoinHandle::is_finished) {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(20));
        let panics = lock(&ENGINE_PANICS).len();
        if panics > last_panics {
            last_panics = panics;
            sh.stop.store(true, SeqCst);
            let _ = sh
                .first_failure_ms
                .compare_exchange(0, sh.ms() + 1, SeqCst, SeqCst);
        }
        let now = sh.ms() + 1;
        let first = sh.first_failure_ms.load(SeqCst);
        let grace_over = first != 0 && now > first + GRACE.as_millis() as u64;
        let mut stuck = Vec::new();
        for &t in tids {
            let slot = &w.slots[t];
            let since = slot.since.load(SeqCst);
            if since == 0 {
                continue;
            }
            let held = Duration::from_millis(now.saturating_sub(since));
            if held > stall || grace_over {
                let actor_desc = {
                    let arg = slot.arg.load(SeqCst);
                    if arg < w.items.len() {
                        format!("item {}", w.items[arg].st.name)
                    } else if (10_000..10_100).contains(&arg) {
                        format!("queue {}", sh.queues[arg - 10_000].name)
                    } else if arg >= 20_000 && arg != usize::MAX {
                        format!("spare queue #{}", arg - 20_000)
                    } else {
                        "-".into()
                    }
                };
                stuck.push(format!(
                    "thread {t}: {} on {actor_desc} has not returned for {held:?}",
                    op_name(slot.op.load(SeqCst))
                ));
            }
        }
        if !stuck.is_empty() {
            return stuck;
        }
        if grace_over && handles.iter().any(|h| !h.is_finished()) {
            return vec!["a storm thread did not stop after the first failure".into()];
        }
    }
}

// ===== the run =====

fn hint_for(line: &str) -> &'static str {
    if line.contains("nr_active <= ") {
        " => issue 11 defect 3: lowering max_active below the running items trips a debug \
         assertion that kills a worker"
    } else if line.contains("pwq slot used after release") {
        " => issue 11 defect 5: set_max_active through a leftover handle after destroy panics"
    } else if line.contains("DelayedMax") || line.contains("overflow when adding") {
        " => issue 11 defect 4: Duration::MAX delays panic with PENDING held"
    } else if line.contains("still pending") && line.starts_with("[destroy]") {
        " => not one of issue 11's numbered defects (its 'audit every path that takes PENDING'): \
         destroy's cancel_for_wq snapshots the timer heap, so an entry that fire_due has popped \
         but not yet fired is missed and destroy returns while the timer thread still owns \
         PENDING (it then refuses and drops the item)"
    } else if line.starts_with("[leak]") {
        " => issue 11 defect 6: cancelled or re-armed delayed items stay referenced until their \
         old deadline"
    } else {
        ""
    }
}

struct Outcome {
    failures: Vec<String>,
    summary: String,
}

fn run_storm(label: &str, total_ops: u64) {
    init();
    let _serial = lock(&SERIAL);
    let seed = seed_from_env("CMWQ_STORM_SEED");
    let threads = env_u64("CMWQ_STORM_THREADS").unwrap_or(4).max(1) as usize;
    let stall = Duration::from_secs(env_u64("CMWQ_STORM_STALL_SECS").unwrap_or(30));
    let skip = Skip::from_env();
    let skip_env = std::env::var("CMWQ_STORM_SKIP").unwrap_or_default();
    let replay = format!(
        "CMWQ_STORM_SEED={seed}{}",
        if skip_env.is_empty() {
            String::new()
        } else {
            format!(" CMWQ_STORM_SKIP={skip_env}")
        }
    );
    eprintln!(
        "storm[{label}]: seed {seed}, {total_ops} ops on {threads} threads, skip {skip:?} \
         (replay: {replay})"
    );
    let started = Instant::now();
    let panics_before = lock(&ENGINE_PANICS).len();
    let census_before = census();
    let outcome = storm_body(seed, skip, threads, stall, total_ops, panics_before);
    let mut failures = outcome.failures;
    if failures.is_empty() && !skip.floor {
        let ok = wait_until(Duration::from_secs(20), || census().at_floor());
        if !ok {
            failures.push(format!(
                "[threads] kworker threads did not fall back to their floor (at most 2 per \
                 per-CPU pool, no unbound pool or rescuer left) within 20 s of the last destroy: \
                 {} (before the storm: {census_before})",
                census()
            ));
        }
    }
    eprintln!(
        "storm[{label}]: {} in {:?}; threads after: {}",
        outcome.summary,
        started.elapsed(),
        census()
    );
    if !failures.is_empty() {
        let mut msg = format!(
            "storm[{label}] FAILED, seed {seed} (replay: {replay}); {} failure(s):\n",
            failures.len()
        );
        for f in &failures {
            let _ = writeln!(msg, "  - {f}{}", hint_for(f));
            // An op stuck on an item whose earlier op panicked in the calling thread.
            if f.starts_with("[stuck]") {
                let wedged = failures.iter().any(|p| {
                    p.starts_with("[op-panic]")
                        && f.split(" on item ")
                            .nth(1)
                            .and_then(|rest| rest.split(' ').next())
                            .is_some_and(|item| p.contains(&format!(" on item {item} ")))
                });
                if wedged {
                    let _ = writeln!(
                        msg,
                        "      (its item was left PENDING by the panic above: later cancels, \
                         disables and mod_delayed spin in grab_pending; issue 11 defect 4)"
                    );
                }
            }
        }
        let _ = write!(msg, "{}", outcome.summary);
        panic!("{msg}");
    }
}

fn storm_body(
    seed: u64,
    skip: Skip,
    threads: usize,
    stall: Duration,
    total_ops: u64,
    panics_before: usize,
) -> Outcome {
    let sh = Arc::new(Shared {
        seed,
        skip,
        t0: Instant::now(),
        stamp: AtomicU64::new(1),
        queues: perm_queues(seed),
        stop: AtomicBool::new(false),
        failures: Mutex::new(Vec::new()),
        more_failures: Mutex::new(std::collections::BTreeMap::new()),
        first_failure_ms: AtomicU64::new(0),
        thrown: AtomicU64::new(0),
        stats: Stats::default(),
    });
    REPORTED.store(0, SeqCst);
    let world = Arc::new(build_world(&sh, threads));
    let per_thread = total_ops.div_ceil(threads as u64);
    let handles: Vec<JoinHandle<()>> = (0..threads)
        .map(|t| {
            let w = world.clone();
            std::thread::Builder::new()
                .name(format!("storm-{t}"))
                .spawn(move || Actor::new(&w, t).storm(per_thread))
                .expect("spawn storm thread")
        })
        .collect();
    let tids: Vec<usize> = (0..threads).collect();
    let mut stuck = watch(&world, &handles, &tids, stall);
    let storm_time = sh.t0.elapsed();
    let mut weak: Vec<(String, Weak<ItemSt>)> = Vec::new();
    let mut quiesced = false;
    if stuck.is_empty() {
        for h in handles {
            let _ = h.join();
        }
        // Quiescence and teardown on a helper thread, watched like the storm.
        let w = world.clone();
        let q = std::thread::Builder::new()
            .name("storm-quiesce".into())
            .spawn(move || {
                let mut a = Actor::new(&w, w.slots.len() - 1);
                a.quiesce();
                drop(a.teardown());
                // The destroys may have dropped timers (accounted for there): the books
                // must still balance.
                if !a.sh.failed() {
                    let ids: Vec<usize> = (0..a.w.items.len()).collect();
                    a.check_accounting(&ids);
                }
            })
            .expect("spawn quiescence thread");
        let qh = [q];
        stuck = watch(&world, &qh, &[threads], stall);
        if stuck.is_empty() {
            let [q] = qh;
            let _ = q.join();
            quiesced = true;
        }
    }
    for s in &stuck {
        sh.fail("stuck", s.clone());
    }
    let engine: Vec<String> = lock(&ENGINE_PANICS)[panics_before..].to_vec();
    for e in &engine {
        sh.fail("engine-panic", e.clone());
    }
    let st = &sh.stats;
    let mut summary = format!(
        "{} ops in {storm_time:?}; {} flush checks, {} max_active checks, {} cancel_sync \
         checks, {} spare destroys, {} leftover ops, {} set_max_active, {} outages, {} MAX \
         delays, {} 1h delays, {} deliberate panics",
        st.ops.load(SeqCst),
        st.flush_checks.load(SeqCst),
        st.conc_checks.load(SeqCst),
        st.sync_checks.load(SeqCst),
        st.destroys.load(SeqCst),
        st.leftover_ops.load(SeqCst),
        st.sma.load(SeqCst),
        st.outages.load(SeqCst),
        st.dmax.load(SeqCst),
        st.long.load(SeqCst),
        sh.thrown.load(SeqCst),
    );
    let _ = write!(summary, "; most running at once per queue:");
    for q in &sh.queues {
        let _ = write!(summary, " {}={}", q.name, q.max_conc.load(SeqCst));
    }
    let (acc, runs, cancels): (u64, u64, u64) = world.items.iter().fold((0, 0, 0), |t, it| {
        (
            t.0 + it.st.accepted.load(SeqCst),
            t.1 + it.st.runs.load(SeqCst),
            t.2 + it.st.cancels.load(SeqCst),
        )
    });
    let _ = write!(summary, "; {acc} accepted, {runs} runs, {cancels} cancels");
    if quiesced {
        // Drop every handle: the engine must not keep any item alive.
        // Items wedged by a panicking op are reported already.
        for it in world.items.iter().filter(|it| !it.st.wedged.load(SeqCst)) {
            weak.push((it.st.name.clone(), Arc::downgrade(&it.st)));
        }
        drop(world);
        if !skip.leak {
            let freed = wait_until(Duration::from_secs(3), || {
                weak.iter().all(|(_, w)| w.upgrade().is_none())
            });
            if !freed {
                let alive: Vec<&str> = weak
                    .iter()
                    .filter(|(_, w)| w.upgrade().is_some())
                    .map(|(n, _)| n.as_str())
                    .collect();
                sh.fail(
                    "leak",
                    format!(
                        "items still referenced 3 s after they were cancelled, their queues \
                         destroyed and every handle dropped: {alive:?}"
                    ),
                );
            }
        }
    }
    let mut failures = lock(&sh.failures).clone();
    for (what, n) in lock(&sh.more_failures).iter() {
        failures.push(format!("[{what}] ... and {n} more of this kind"));
    }
    Outcome { failures, summary }
}

/// The CI-sized storm: `CI_OPS` (1,000,000) ops on 4 threads; about 13 s in a debug build on
/// this project's 2-core machine with the known-defect families skipped (it stops at the first
/// failure otherwise).
#[test]
fn storm() {
    run_storm("ci", CI_OPS);
}

/// The soak: 10 million ops (or `CMWQ_STORM_OPS`). Run in release:
/// `cargo test -p cmwq --release --test storm -- --ignored`.
#[test]
#[ignore = "soak: run in release with --ignored"]
fn storm_soak() {
    run_storm("soak", env_u64("CMWQ_STORM_OPS").unwrap_or(SOAK_OPS));
}
