//! Engine configuration: every timeout, threshold and cap, with the kernel's values as
//! defaults. Set once, before first use; plus the fault-injection switch for tests (with the
//! `test-util` feature).

#[cfg(feature = "test-util")]
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use crate::Error;

/// Tunables of the engine. [`Config::default()`] gives the kernel's values.
///
/// ```
/// use std::time::Duration;
/// let cfg = cmwq::Config {
///     idle_worker_timeout: Duration::from_secs(5),
///     ..cmwq::Config::default()
/// };
/// // Must happen before the first workqueue is created or used:
/// let _ = cmwq::configure(cfg);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]

pub struct Config {
    /// Idle workers beyond the floor are reaped after this long idle (kernel
    /// `IDLE_WORKER_TIMEOUT`, 300 s).
    pub idle_worker_timeout: Duration,
    /// Wait after a failed worker-thread creation before retrying (kernel `CREATE_COOLDOWN`,
    /// 1 s).
    pub create_cooldown: Duration,
    /// How long a pool may fail to create a worker before it calls the rescuers (kernel
    /// `MAYDAY_INITIAL_TIMEOUT`, 10 ms).
    pub mayday_initial_timeout: Duration,
    /// How often the call is repeated while creation keeps failing (kernel `MAYDAY_INTERVAL`,
    /// 100 ms).
    pub mayday_interval: Duration,
    /// Items running longer than this on CPU without sleeping are marked CPU-intensive and
    /// leave concurrency management (kernel `cpu_intensive_thresh_us`, 10 ms). Zero disables.
    pub cpu_intensive_thresh: Duration,
    /// Items a rescuer runs for one pool workqueue before turning to others that called
    /// (kernel `RESCUER_BATCH`, 16).
    pub rescuer_batch: usize,
    /// Whether the monitor detects workers that block without a [`blocking`](crate::blocking)
    /// hint and lets their pools start more workers.
    pub detect_blocking: bool,
    /// Sampling period of the monitor while pools are busy (the shortest of its adaptive
    /// interval; it samples 4x slower while a pool is steady, and parks when all are idle).
    pub monitor_interval: Duration,
    /// Least time between two worker creations in one pool once it has two workers (a
    /// throttle the kernel does not have; like XNU's and .NET's, it stops a backlog of
    /// sleeping items from creating a thread per item in a burst). Zero disables.
    pub worker_create_interval: Duration,
    /// Workers one pool makes at the normal pace (a soft cap the kernel does not have).
    /// Beyond it creation goes on, one worker per [`SOFT_CAP_INTERVAL`](crate::SOFT_CAP_INTERVAL)
    /// at most: a runaway backlog of sleeping items grows threads slowly, while items that wait
    /// for one another still get the workers they need (a hard cap would deadlock them).
    pub max_workers_per_pool: usize,
    /// How long a pool's worklist may make no progress (items waiting, none started) before
    /// the watchdog reports a stall (the kernel's `workqueue.watchdog_thresh`, 30 s). Zero
    /// turns the watchdog off.
    pub watchdog_thresh: Duration,
    /// Abort the process on a stall instead of only reporting it (the kernel's
    /// `workqueue.panic_on_stall`; off by default).
    pub panic_on_stall: bool,
    /// The affinity scope of unbound queues created with [`AffinityScope::Default`]
    /// (the kernel's `workqueue.default_affinity_scope`, `Cache` by default; `Default` here
    /// also means `Cache`).
    ///
    /// [`AffinityScope::Default`]: crate::AffinityScope::Default
    pub default_affinity_scope: crate::AffinityScope,
    /// Makes [`POWER_EFFICIENT`](crate::WqFlags::POWER_EFFICIENT) workqueues unbound (the
    /// kernel's `workqueue.power_efficient`; off by default, as in Linux): it trades locality
    /// for letting idle CPUs stay idle. Read when a queue is created, so it must be set before
    /// the first queue, including [`system_power_efficient_wq`](crate::system_power_efficient_wq)
    /// and [`system_freezable_power_efficient_wq`](crate::system_freezable_power_efficient_wq),
    /// which are created at their first use: `configure` before any use of the engine.
    pub power_efficient: bool,
}

/// Least time between two worker creations in a pool past
/// [`Config::max_workers_per_pool`]: 100 new workers a second at most.
pub const SOFT_CAP_INTERVAL: Duration = Duration::from_millis(10);

impl Default for Config {
    fn default() -> Self {
        Config {
            idle_worker_timeout: Duration::from_secs(300),
            create_cooldown: Duration::from_secs(1),
            mayday_initial_timeout: Duration::from_millis(10),
            mayday_interval: Duration::from_millis(100),
            cpu_intensive_thresh: Duration::from_millis(10),
            rescuer_batch: 16,
            detect_blocking: true,
            monitor_interval: Duration::from_millis(1),
            worker_create_interval: Duration::from_micros(200),
            max_workers_per_pool: 512,
            watchdog_thresh: Duration::from_secs(30),
            panic_on_stall: false,
            default_affinity_scope: crate::AffinityScope::Cache,
            power_efficient: false,
        }
    }
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// Sets the configuration. Must be called before the engine is first used (before any
/// workqueue is created or queued on); afterwards it returns `Err(Error::ConfigLocked)`.
pub fn configure(config: Config) -> Result<(), Error> {
    if config.rescuer_batch == 0 || config.max_workers_per_pool < 2 {
        return Err(Error::InvalidAttrs {
            reason: "rescuer_batch must be >= 1 and max_workers_per_pool >= 2".into(),
        });
    }
    CONFIG.set(config).map_err(|_| Error::ConfigLocked)
}

/// The configuration in force (the defaults if `configure` was not called first).
pub fn config() -> &'static Config {
    CONFIG.get_or_init(Config::default)
}

#[cfg(feature = "test-util")]
static FAIL_CREATION: AtomicBool = AtomicBool::new(false);

/// Fault injection for tests: while on, every worker-thread creation fails as if the OS had
/// refused the thread. Workqueues with `MEM_RECLAIM` keep making progress through their
/// rescuers; the others wait until creation works again.
///
/// Available with the `test-util` feature.
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub fn fail_worker_creation(on: bool) {
    FAIL_CREATION.store(on, Ordering::Relaxed);
}

/// Whether [`fail_worker_creation`] is on.
#[cfg(feature = "test-util")]
pub(crate) fn creation_fails() -> bool {
    FAIL_CREATION.load(Ordering::Relaxed)
}

/// Without `test-util` creation never fails on purpose.
#[cfg(not(feature = "test-util"))]
#[inline(always)]
pub(crate) fn creation_fails() -> bool {
    false
}
