//! Workqueues: the user-facing policy object (flags, `max_active`, flush domain) and the
//! queueing path. Creation (the builder, `alloc_workqueue`) is in `queue/create.rs`.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use bitflags::bitflags;
use parking_lot::Mutex;

use crate::os::published::Published;
use crate::os::topology;
use crate::pool::panic::PanicHook;
use crate::pool::rescuer::Rescuer;
use crate::pool::worker;
use crate::pool::{self, kick_pool};
use crate::queue::attrs::WorkqueueAttrs;
pub use crate::queue::create::WorkqueueBuilder;
use crate::queue::create::{create, effective_max_active};
use crate::queue::flush::{FlushLocked, FlushState};
use crate::queue::pwq::{PoolWorkqueue, PwqTable, RetiredCounters};
use crate::work::data;
use crate::{Error, Work};

/// Largest `max_active` (the kernel's `WQ_MAX_ACTIVE`).
pub const WQ_MAX_ACTIVE: usize = 2048;
/// The `max_active` that 0 stands for (the kernel's `WQ_DFL_ACTIVE`).
pub const WQ_DFL_ACTIVE: usize = 1024;

bitflags! {
    /// Workqueue flags (the kernel's `WQ_*`).
    ///
    /// **No flag means per-CPU**, as `alloc_workqueue(name, 0, 0)` in Linux (6.17 too, which
    /// added `WQ_PERCPU` on the way to making unbound the default): `WqFlags::empty()` and
    /// [`PERCPU`](Self::PERCPU) are the same kind of queue. On a per-CPU queue,
    /// [`queue`](Workqueue::queue) puts the item on the calling thread's CPU, so one producer
    /// queueing many items puts every one of them on its own CPU, where concurrency
    /// management runs them about one at a time while they use the CPU. For thread-pool
    /// style work that should spread over all CPUs, use [`UNBOUND`](Self::UNBOUND) (as
    /// [`spawn`](fn@crate::spawn) does, on [`system_dfl_wq`](fn@crate::system_dfl_wq)), or place
    /// items with [`queue_on`](Workqueue::queue_on). See "What `WqFlags::empty()` means" in
    /// DESIGN.md.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
    pub struct WqFlags: u32 {
        /// Served by unbound pools: no concurrency management, workers on the CPUs of the
        /// queue's cpumask, one pool workqueue per pod of its
        /// [`AffinityScope`](crate::AffinityScope); `max_active` holds for the whole queue,
        /// split between NUMA nodes ([`Workqueue::set_min_active`]).
        const UNBOUND = 1 << 1;
        /// Takes part in freezing: while [`freeze`](crate::freeze) is in force, newly
        /// queued items are held (pending, in order) until [`thaw`](crate::thaw).
        const FREEZABLE = 1 << 2;
        /// Gets a rescuer thread, made at creation, for forward progress when no worker
        /// thread can be created.
        const MEM_RECLAIM = 1 << 3;
        /// Served by the high-priority pools (nice -20 where the process may set it).
        const HIGHPRI = 1 << 4;
        /// Items do not count toward concurrency management.
        const CPU_INTENSIVE = 1 << 5;
        /// The kernel exposes the queue in sysfs; here its `max_active` may be set through
        /// the [`control`](crate::control) endpoint.
        const SYSFS = 1 << 6;
        /// Per-CPU unless power-efficient mode makes it unbound:
        /// [`Config::power_efficient`](crate::Config::power_efficient) (the kernel's
        /// `workqueue.power_efficient`, off by default) set before the queue is created turns
        /// it into an [`UNBOUND`](Self::UNBOUND) queue ([`flags`](Workqueue::flags) then
        /// reports `UNBOUND`, and `PERCPU` is dropped).
        const POWER_EFFICIENT = 1 << 7;
        /// Explicitly per-CPU (the complement of `UNBOUND`; the kernel's `WQ_PERCPU`). The
        /// same as no flag at all, spelled out.
        const PERCPU = 1 << 8;
    }
}

/// State bits of a workqueue (`WqShared::state`).
pub(crate) mod state {
    pub(crate) const DRAINING: u32 = 1 << 0;
    pub(crate) const DESTROYING: u32 = 1 << 1;
    pub(crate) const DESTROYED: u32 = 1 << 2;
}

/// Fields guarded by the workqueue mutex (the kernel's `wq->mutex`).
pub(crate) struct WqLocked {
    pub(crate) flush: FlushLocked,
    pub(crate) nr_drainers: usize,
    /// Configured `max_active`.
    pub(crate) max_active: usize,
    /// Configured `min_active` (the kernel's `saved_min_active`): the per-node floor of an
    /// unbound queue, at most `max_active`.
    pub(crate) min_active: usize,
}

/// The workqueue proper, shared by handles and by its pwqs.
pub(crate) struct WqShared {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) flags: WqFlags,
    pub(crate) ordered: bool,
    pub(super) system: bool,
    /// `state::*` bits. Release on set, Acquire on read (pairs with the setter).
    pub(crate) state: AtomicU32,
    /// The pwqs new items go to (one per possible CPU, by possible-CPU index, for per-CPU
    /// queues; one per pod for unbound ones; exactly one for ordered ones), with the pod of
    /// each possible CPU and the attributes in force. Set at creation; replaced by
    /// `apply_attrs` (unbound queues only), under the wq mutex.
    pub(crate) table: Published<PwqTable>,
    /// Every linked pwq, oldest first (the kernel's `wq->pwqs`): the current table's and the
    /// replaced ones that still hold items. What flush, drain, destroy, the freezer,
    /// `set_max_active` and the reports walk. A leaf lock (taken under the wq mutex or a pool
    /// lock, never held while taking another lock): links are added by creation and
    /// `apply_attrs` (under the wq mutex), removed by the release of an idle replaced pwq
    /// (under its pool lock) and by destroy.
    pub(crate) linked: Mutex<Vec<PoolWorkqueue>>,
    /// The counters of released replaced pwqs, for the reports (a leaf lock, taken under the
    /// released pwq's pool lock).
    pub(crate) retired: Mutex<RetiredCounters>,
    /// The wq mutex. Lock order: wq mutex → pool lock → flush-done lock.
    pub(crate) mutex: Mutex<WqLocked>,
    pub(crate) flush_state: FlushState,
    /// Mirror of `WqLocked::max_active` for lock-free reads.
    pub(super) max_active: AtomicUsize,
    /// Mirror of `WqLocked::min_active` for lock-free reads.
    pub(super) min_active: AtomicUsize,
    /// Unbound queues: the per-node active counters, one per node of the topology and a last
    /// one for pods spanning nodes (`queue/node_active.rs`). Empty for per-CPU queues.
    pub(crate) node_nr_active: Vec<crate::queue::node_active::NodeNrActive>,
    pub(super) rescuer: Mutex<Option<Rescuer>>,
    /// The queue's own panic handler ([`WorkqueueBuilder::panic_handler`]). A leaf lock held
    /// only to clone or take the `Arc`; taken out (and dropped, unlocked) by destroy.
    pub(super) panic_handler: Mutex<Option<PanicHook>>,
}

/// A workqueue (the kernel's `workqueue_struct`): a named domain for queueing, flushing and
/// forward progress, served by shared worker pools.
///
/// A cheap handle: clones share the queue. Dropping the last handle destroys it (as
/// [`destroy`](Self::destroy) does).
#[derive(Clone)]
pub struct Workqueue {
    pub(super) handle: Arc<WqHandle>,
}

/// Destroys the queue when the last user handle goes.
pub(super) struct WqHandle {
    pub(super) shared: Arc<WqShared>,
}

impl Drop for WqHandle {
    fn drop(&mut self) {
        destroy_shared(&self.shared);
    }
}

impl Workqueue {
    /// Creates a workqueue (the kernel's `alloc_workqueue`). `max_active` 0 means 1024.
    ///
    /// With `WqFlags::empty()` (or [`WqFlags::PERCPU`]) the queue is **per-CPU**, as in
    /// Linux: `queue()` puts an item on the calling thread's CPU, so a single producer puts
    /// all its items on its own CPU. Pass [`WqFlags::UNBOUND`] for items that may run on any
    /// CPU. Errors: an empty name, a `max_active` above [`WQ_MAX_ACTIVE`], `UNBOUND` with
    /// `PERCPU`.
    ///
    /// ```
    /// use cmwq::{Work, Workqueue, WqFlags};
    ///
    /// // Per-CPU (no flags), at most 16 items active per CPU.
    /// let percpu = Workqueue::new("my-percpu", WqFlags::empty(), 16)?;
    /// assert!(!percpu.flags().contains(WqFlags::UNBOUND));
    /// // Unbound: items run on any CPU; max_active 0 is the default (1024).
    /// let pool = Workqueue::new("my-pool", WqFlags::UNBOUND, 0)?;
    /// assert_eq!(pool.max_active(), cmwq::WQ_DFL_ACTIVE);
    ///
    /// assert!(Workqueue::new("", WqFlags::empty(), 0).is_err());
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    pub fn new(name: &str, flags: WqFlags, max_active: usize) -> Result<Workqueue, Error> {
        Self::builder(name)
            .flags(flags)
            .max_active(max_active)
            .build()
    }

    /// Creates an ordered workqueue: one item at a time, in queueing order
    /// (`alloc_ordered_workqueue`).
    pub fn ordered(name: &str, flags: WqFlags) -> Result<Workqueue, Error> {
        Self::builder(name).flags(flags).ordered().build()
    }

    /// A builder for the attributes `new` does not take.
    pub fn builder(name: &str) -> WorkqueueBuilder {
        WorkqueueBuilder::new(name)
    }

    pub(crate) fn new_system(name: &str, flags: WqFlags, max_active: usize) -> Workqueue {
        create(
            Self::builder(name).flags(flags).max_active(max_active),
            true,
        )
        .expect("system workqueue parameters are valid")
    }

    pub(crate) fn shared(&self) -> &Arc<WqShared> {
        &self.handle.shared
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.handle.shared.name
    }

    /// The creation flags (ordered queues also carry `UNBOUND`, and so do `POWER_EFFICIENT`
    /// ones created with [`Config::power_efficient`](crate::Config::power_efficient) set).
    pub fn flags(&self) -> WqFlags {
        self.handle.shared.flags
    }

    /// Whether this is an ordered queue.
    pub fn is_ordered(&self) -> bool {
        self.handle.shared.ordered
    }

    /// The configured `max_active`.
    pub fn max_active(&self) -> usize {
        self.handle.shared.max_active.load(Ordering::Relaxed)
    }

    /// The queue's attributes in force: for an unbound queue those of the last
    /// [`apply_attrs`](Self::apply_attrs), else what the builder set (or the defaults:
    /// nice 0, or -20 with [`WqFlags::HIGHPRI`], every CPU, [`AffinityScope::Default`](crate::AffinityScope::Default),
    /// non-strict). A per-CPU queue reports its pools': their nice value, every CPU,
    /// [`AffinityScope::Cpu`](crate::AffinityScope::Cpu) and strict (each CPU is a pod of its own, its workers pinned).
    ///
    /// ```
    /// use cmwq::{AffinityScope, Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::builder("attrs-example")
    ///     .flags(WqFlags::UNBOUND)
    ///     .affinity_scope(AffinityScope::Cpu)
    ///     .affinity_strict(true)
    ///     .build()?;
    /// let attrs = wq.attrs();
    /// assert_eq!(attrs.affinity_scope, AffinityScope::Cpu);
    /// assert!(attrs.affinity_strict);
    /// assert_eq!(attrs.cpumask, cmwq::online_cpus());
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    pub fn attrs(&self) -> WorkqueueAttrs {
        self.handle.shared.table.get().attrs.clone()
    }

    /// Queues `work` on the calling CPU's pool (bound queues) or the queue's unbound pool.
    /// `false` if it was already pending, is disabled, or the queue refuses it (draining or
    /// destroyed: then a warning is logged and the item is left not pending; see
    /// [`try_queue`](Self::try_queue)).
    ///
    /// Every store made before this call, whatever it returns, is seen by a run of the item
    /// that starts after it. Never blocks on other work; allocates nothing in steady state.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use cmwq::{Work, Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::new("queue-example", WqFlags::UNBOUND, 0)?;
    /// let runs = Arc::new(AtomicUsize::new(0));
    /// let r = runs.clone();
    /// let item = Work::new(move |_| {
    ///     r.fetch_add(1, Ordering::SeqCst);
    /// });
    /// assert!(wq.queue(&item)); // queued: it will run once
    /// item.flush(); // wait for that run
    /// assert!(wq.queue(&item)); // idle again, so it can be queued again
    /// item.flush();
    /// assert_eq!(runs.load(Ordering::SeqCst), 2);
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    #[inline]
    pub fn queue(&self, work: &Work) -> bool {
        self.queue_logged(None, work)
    }

    /// Like [`queue`](Self::queue), with refusals as errors: `Ok(true)` if queued,
    /// `Ok(false)` if it was already pending or is disabled, `Err(Error::Draining)` or
    /// `Err(Error::Destroyed)` if the queue refuses it (the item is then left not pending, so
    /// it can be queued elsewhere: nothing is lost silently).
    ///
    /// ```
    /// use cmwq::{Error, Work, Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::new("try-queue-example", WqFlags::UNBOUND, 0)?;
    /// let item = Work::new(|_| {});
    /// assert_eq!(wq.try_queue(&item), Ok(true));
    /// item.flush();
    /// let leftover = wq.clone();
    /// wq.destroy();
    /// assert!(matches!(leftover.try_queue(&item), Err(Error::Destroyed { .. })));
    /// assert!(!item.is_pending());
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    pub fn try_queue(&self, work: &Work) -> Result<bool, Error> {
        queue_work(&self.handle.shared, None, work)
    }

    /// Queues `work` on CPU `cpu`'s pool (bound queues; unbound queues use their pool).
    /// `Err(Error::InvalidCpu)` if `cpu` is not a possible CPU of the machine
    /// (`/sys/devices/system/cpu/possible`); nothing is queued then. A possible CPU that is
    /// not in [`online_cpus()`](crate::online_cpus) is accepted: the item runs on that CPU's
    /// disassociated pool, whose workers run on the online CPUs (see
    /// [`refresh_cpus`](crate::refresh_cpus)). Otherwise as [`queue`](Self::queue): `Ok(false)` if it was
    /// already pending, is disabled, or the queue refuses it (draining or destroyed: logged,
    /// the item left not pending). [`try_queue_on`](Self::try_queue_on) reports the refusal
    /// as an error instead.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use cmwq::{online_cpus, Error, Work, Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::new("queue-on-example", WqFlags::empty(), 0)?;
    /// let cpu = *online_cpus().last().unwrap();
    /// let ran_on = Arc::new(Mutex::new(None));
    /// let r = ran_on.clone();
    /// let item = Work::new(move |_| {
    ///     *r.lock().unwrap() = cmwq::current_worker().and_then(|w| w.cpu);
    /// });
    /// assert_eq!(wq.queue_on(cpu, &item), Ok(true));
    /// item.flush();
    /// // A per-CPU queue runs the item on the pool of the CPU asked for.
    /// assert_eq!(*ran_on.lock().unwrap(), Some(cpu));
    /// assert!(matches!(wq.queue_on(usize::MAX, &item), Err(Error::InvalidCpu { .. })));
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    pub fn queue_on(&self, cpu: usize, work: &Work) -> Result<bool, Error> {
        topology::check_cpu(cpu)?;
        Ok(self.queue_logged(Some(cpu), work))
    }

    /// Like [`queue_on`](Self::queue_on), with the queue's refusals as errors too:
    /// `Err(Error::InvalidCpu)` for a CPU that is not possible,
    /// `Err(Error::Draining)` or `Err(Error::Destroyed)` if the queue refuses the item (left
    /// not pending); `Ok(false)` only if it was already pending or is disabled.
    pub fn try_queue_on(&self, cpu: usize, work: &Work) -> Result<bool, Error> {
        topology::check_cpu(cpu)?;
        queue_work(&self.handle.shared, Some(cpu), work)
    }

    fn queue_logged(&self, cpu: Option<usize>, work: &Work) -> bool {
        match queue_work(&self.handle.shared, cpu, work) {
            Ok(queued) => queued,
            Err(err) => {
                tracing::warn!(
                    target: "cmwq",
                    function = work.func_name(),
                    "cannot queue work: {err}"
                );
                false
            }
        }
    }

    /// Changes `max_active` at run time (0: the default). Raising it activates waiting items
    /// at once; lowering it never stops running ones. On an unbound queue the limit is split
    /// between NUMA nodes again (see [`set_min_active`](Self::set_min_active)), and
    /// `min_active` is lowered to the new `max_active` if it was above it (never raised back).
    pub fn set_max_active(&self, max_active: usize) -> Result<(), Error> {
        self.handle.shared.set_max_active(max_active)
    }

    /// The configured `min_active`: for an unbound queue, the number of active items every
    /// NUMA node of its cpumask may run at once whatever its share of `max_active`. It starts
    /// at `min(max_active, WQ_DFL_MIN_ACTIVE)` ([`WQ_DFL_MIN_ACTIVE`](crate::WQ_DFL_MIN_ACTIVE)
    /// is 8) and follows [`set_min_active`](Self::set_min_active) and lowerings of
    /// `max_active`. Per-CPU queues report it too; it has no effect on them.
    pub fn min_active(&self) -> usize {
        self.handle.shared.min_active()
    }

    /// Sets the per-node floor of an unbound queue (the kernel's `workqueue_set_min_active`).
    ///
    /// An unbound queue's `max_active` is a limit for the whole queue, split between the NUMA
    /// nodes of its cpumask in proportion to their CPUs (rounded up); each node may run at
    /// least `min_active` items at once (at most `max_active`), so that up to `min_active`
    /// items that wait for each other can always run together, however few CPUs a node
    /// brings. The shares can then add up to more than `max_active`, as in the kernel. Raising
    /// it activates waiting items at once; lowering it never stops running ones.
    ///
    /// Errors: [`Error::MinActiveUnsupported`] for a per-CPU or ordered queue (the kernel
    /// warns and ignores the call), [`Error::InvalidMinActive`] above the queue's current
    /// `max_active` (the kernel clamps), [`Error::Destroyed`] once destroyed. 0 is accepted
    /// (each node then gets its share alone, at least one item where it has a CPU).
    ///
    /// ```
    /// use cmwq::{Error, Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::new("min-active-example", WqFlags::UNBOUND, 16)?;
    /// assert_eq!(wq.min_active(), cmwq::WQ_DFL_MIN_ACTIVE);
    /// wq.set_min_active(4)?;
    /// assert_eq!(wq.min_active(), 4);
    /// assert!(matches!(wq.set_min_active(17), Err(Error::InvalidMinActive { .. })));
    ///
    /// let percpu = Workqueue::new("min-active-percpu", WqFlags::PERCPU, 16)?;
    /// assert!(matches!(percpu.set_min_active(4), Err(Error::MinActiveUnsupported { .. })));
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    pub fn set_min_active(&self, min_active: usize) -> Result<(), Error> {
        self.handle.shared.set_min_active(min_active)
    }

    /// Destroys the queue: drains it (chained queueing from its own items continues until it
    /// stops), stops its rescuer, releases its pools (joining the threads of unbound pools no
    /// other queue uses). Queueing through a leftover handle afterwards is refused and leaves
    /// the item not pending.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use cmwq::{Work, Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::new("destroy-example", WqFlags::UNBOUND, 0)?;
    /// let runs = Arc::new(AtomicUsize::new(0));
    /// let r = runs.clone();
    /// let item = Work::new(move |_| {
    ///     r.fetch_add(1, Ordering::SeqCst);
    /// });
    /// wq.queue(&item);
    /// let leftover = wq.clone();
    /// wq.destroy(); // drains first: the queued item has run when it returns
    /// assert_eq!(runs.load(Ordering::SeqCst), 1);
    /// assert!(!leftover.queue(&item)); // refused from now on
    /// assert!(!item.is_pending());
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    ///
    /// # Panics
    ///
    /// On a system workqueue (the kernel treats that as a bug).
    pub fn destroy(self) {
        destroy_shared(&self.handle.shared);
    }
}

impl fmt::Debug for Workqueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Workqueue")
            .field("name", &self.name())
            .field("flags", &self.flags())
            .field("max_active", &self.max_active())
            .field("min_active", &self.min_active())
            .finish()
    }
}

/// Every live workqueue, in creation order (the kernel's `workqueues` list), for statistics
/// and dumps. Weak: the list keeps no queue alive; destroy takes its queue out.
pub(super) fn registry() -> &'static Mutex<Vec<std::sync::Weak<WqShared>>> {
    static WORKQUEUES: Mutex<Vec<std::sync::Weak<WqShared>>> = Mutex::new(Vec::new());
    &WORKQUEUES
}

/// The live workqueues, in creation order (system ones included).
pub(crate) fn all_workqueues() -> Vec<Arc<WqShared>> {
    registry()
        .lock()
        .iter()
        .filter_map(std::sync::Weak::upgrade)
        .collect()
}

impl WqShared {
    /// The configured `max_active`.
    pub(crate) fn max_active(&self) -> usize {
        self.max_active.load(Ordering::Relaxed)
    }

    /// The configured `min_active`.
    pub(crate) fn min_active(&self) -> usize {
        self.min_active.load(Ordering::Relaxed)
    }

    /// [`Workqueue::set_max_active`], for callers holding the queue but no handle (the
    /// control endpoint).
    pub(crate) fn set_max_active(&self, max_active: usize) -> Result<(), Error> {
        let shared = self;
        if shared.ordered {
            return Err(Error::Ordered {
                workqueue: shared.name.clone(),
            });
        }
        let eff = effective_max_active(max_active)?;
        let mut l = shared.mutex.lock();
        // Acquire: pairs with destroy's Release `fetch_or`.
        let st = shared.state.load(Ordering::Acquire);
        if st & (state::DESTROYING | state::DESTROYED) != 0 {
            return Err(shared.refusal(st));
        }
        l.max_active = eff;
        shared.max_active.store(eff, Ordering::Relaxed);
        // The kernel lowers an unbound queue's floor with it (`saved_min_active`).
        l.min_active = l.min_active.min(eff);
        shared.min_active.store(l.min_active, Ordering::Relaxed);
        // While frozen a freezable queue's pwqs keep 0; the thaw applies `eff`.
        crate::queue::freezer::wq_adjust_max_active(shared, &l);
        Ok(())
    }

    /// [`Workqueue::set_min_active`].
    pub(crate) fn set_min_active(&self, min_active: usize) -> Result<(), Error> {
        if self.ordered || !self.is_unbound() {
            return Err(Error::MinActiveUnsupported {
                workqueue: self.name.clone(),
            });
        }
        let mut l = self.mutex.lock();
        // Acquire: pairs with destroy's Release `fetch_or`.
        let st = self.state.load(Ordering::Acquire);
        if st & (state::DESTROYING | state::DESTROYED) != 0 {
            return Err(self.refusal(st));
        }
        if min_active > l.max_active {
            return Err(Error::InvalidMinActive {
                min_active,
                max_active: l.max_active,
            });
        }
        l.min_active = min_active;
        self.min_active.store(min_active, Ordering::Relaxed);
        crate::queue::freezer::wq_adjust_max_active(self, &l);
        Ok(())
    }

    /// A clone of the queue's panic handler, if it has one (and is not destroyed).
    pub(crate) fn panic_handler(&self) -> Option<PanicHook> {
        self.panic_handler.lock().clone()
    }

    /// The linked pwqs, oldest first (a copy: the list changes as replaced pwqs retire).
    pub(crate) fn pwqs(&self) -> Vec<PoolWorkqueue> {
        self.linked.lock().clone()
    }

    /// Calls this queue's rescuer to `pool` for pwq `slot`.
    pub(crate) fn send_mayday(&self, pool: Arc<crate::pool::WorkerPool>, slot: u32) {
        if let Some(r) = self.rescuer.lock().as_ref() {
            r.mayday(pool, slot);
        }
    }

    pub(crate) fn is_unbound(&self) -> bool {
        self.flags.contains(WqFlags::UNBOUND)
    }

    /// The pwq serving `cpu` (or the calling CPU).
    #[inline]
    pub(crate) fn select_pwq(&self, cpu: Option<usize>) -> &PoolWorkqueue {
        let table = self.table.get();
        let pwqs = &table.pwqs;
        if self.is_unbound() {
            // One pod (or ordered): no CPU to look up.
            if table.pod_of_cpu.is_empty() {
                return &pwqs[0];
            }
            let cpu = cpu.unwrap_or_else(topology::current_cpu);
            let pod = topology::possible()
                .index_of(cpu)
                .map_or(0, |idx| table.pod_of_cpu[idx] as usize);
            return &pwqs[pod];
        }
        let cpu = cpu.unwrap_or_else(topology::current_cpu);
        let idx = topology::possible()
            .index_of(cpu)
            .unwrap_or(cpu % pwqs.len());
        &pwqs[idx]
    }

    /// Whether the calling thread runs an item of this queue ("chained" queueing).
    pub(crate) fn is_current(&self) -> bool {
        worker::current_wq_id() == Some(self.id)
    }

    pub(crate) fn refusal(&self, st: u32) -> Error {
        if st & (state::DESTROYING | state::DESTROYED) != 0 {
            Error::Destroyed {
                workqueue: self.name.clone(),
            }
        } else {
            Error::Draining {
                workqueue: self.name.clone(),
            }
        }
    }
}

/// `queue_work_on`: take `PENDING`, then put the item on a pwq.
#[inline]
pub(crate) fn queue_work(wq: &WqShared, cpu: Option<usize>, work: &Work) -> Result<bool, Error> {
    if !work.data().try_claim() {
        return Ok(false);
    }
    insert_owned(wq, cpu, work).map(|()| true)
}

/// The kernel's `__queue_work`: the caller owns `PENDING`. On refusal `PENDING` is released.
pub(crate) fn insert_owned(wq: &WqShared, cpu: Option<usize>, work: &Work) -> Result<(), Error> {
    // Acquire: pairs with the Release `fetch_or` of drain/destroy.
    let st = wq.state.load(Ordering::Acquire);
    if st != 0 && (st & state::DESTROYED != 0 || !wq.is_current()) {
        work.data().release_pending();
        return Err(wq.refusal(st));
    }
    // Asked once, here, with no lock held; a panicking `WorkItem::name` must not leave the
    // item pending.
    let function = crate::pool::panic::function_name(work);
    let mut traced = false;
    // Once round, unless the pwq found was an unbound queue's replaced one released meanwhile
    // (`apply_attrs`): then again, with the table published since (the kernel's retry on a
    // pwq whose refcount reached zero).
    loop {
        let mut pwq = wq.select_pwq(cpu);
        let redirected;
        // Non-reentrancy: if the item is running on another pool for this queue, queue it
        // there so it runs after that instance (the kernel's last-pool rule). Ordered queues
        // skip it: they queue on their newest pwq, which is plugged until the older ones are
        // idle, so a running instance still finishes first.
        let last = work.data().state().pool();
        if !wq.ordered && last != data::POOL_NONE && last != pwq.pool.id {
            if let Some(last_pool) = pool::pool_by_id(last) {
                let g = last_pool.locked.lock();
                let running_slot = g
                    .busy
                    .get(&work.key())
                    .and_then(|&w| g.workers[w].as_ref()?.current.map(|(_, slot)| slot));
                if let Some(slot) = running_slot {
                    if g.pwqs[slot as usize]
                        .as_ref()
                        .is_some_and(|p| p.wq.id == wq.id)
                    {
                        // The item runs here for this queue: its pwq (maybe a replaced one)
                        // is alive until it retires.
                        drop(g);
                        redirected = PoolWorkqueue {
                            pool: last_pool,
                            slot,
                        };
                        pwq = &redirected;
                    }
                }
            }
        }
        if !traced {
            // Before the item can be seen (and run) by a worker, with no lock held.
            crate::observe::trace::queue_work(work.key(), function, &wq.name, cpu, pwq.pool.cpu);
            traced = true;
        }
        let mut g = pwq.pool.locked.lock();
        // Again under the pool lock: destroy and drain prove a queue quiescent by scanning
        // its pwqs under their locks after setting their state bit, so an insert they did not
        // see must see the bit here. Acquire: pairs with their Release `fetch_or`, ordered for
        // us by the pool lock.
        let st = wq.state.load(Ordering::Acquire);
        let refused = st != 0 && (st & state::DESTROYED != 0 || !wq.is_current());
        if refused || g.pwq_of(pwq.slot, wq.id).is_none() {
            drop(g);
            if !refused && wq.is_unbound() && st & state::DESTROYING == 0 {
                // A replaced pwq, released since it was read: the table has changed.
                std::hint::spin_loop();
                continue;
            }
            work.data().release_pending();
            return Err(if refused {
                wq.refusal(st)
            } else {
                Error::Destroyed {
                    workqueue: wq.name.clone(),
                }
            });
        }
        let active = g.insert_work(pwq.pool.id, pwq.slot, work.clone(), function);
        let kick = if active {
            kick_pool(&mut g)
        } else {
            pool::Kick::Nothing
        };
        drop(g);
        if kick == pool::Kick::CreateFirstWorker {
            pool::manage::create_first_worker(&pwq.pool);
        }
        return Ok(());
    }
}

/// Destroy, shared by `destroy(self)` and the drop of the last handle.
fn destroy_shared(wq: &Arc<WqShared>) {
    assert!(!wq.system, "cannot destroy system workqueue {:?}", wq.name);
    if wq.state.load(Ordering::Acquire) & (state::DESTROYING | state::DESTROYED) != 0 {
        return;
    }
    if wq.is_current() {
        // Called from one of its own items: draining here would wait for ourselves. Finish
        // the destruction on a helper thread once this item has returned.
        let wq = wq.clone();
        let spawned = std::thread::Builder::new()
            .name("cmwq-destroy".into())
            .spawn(move || destroy_shared(&wq));
        if spawned.is_ok() {
            return;
        }
        tracing::error!(target: "cmwq", "could not start a thread to destroy a workqueue");
        return;
    }
    // Release: pairs with the Acquire load in `insert_owned`.
    if wq.state.fetch_or(state::DESTROYING, Ordering::AcqRel) & state::DESTROYING != 0 {
        return;
    }
    // Armed delayed items of this queue would fire into a dead queue: cancel them (the kernel
    // calls leaving them armed a bug; here they end not pending and never run).
    crate::time::timer::cancel_for_wq(wq.id);
    // Drain until quiescent: no item of the queue queued or running anywhere, proven across
    // all its pwqs at once (a chain hopping between CPUs with `queue_on` is never cut).
    // From then on nothing can queue onto it: outside queueing is refused since DESTROYING,
    // and chained queueing needs a running item.
    loop {
        let _ = crate::queue::flush::drain_shared(wq);
        if crate::queue::flush::quiescent(wq) {
            break;
        }
    }
    // The queue's own items may have armed timers while it drained.
    crate::time::timer::cancel_for_wq(wq.id);
    // Taken out of the mutex first: the rescuer is joined with no lock held.
    let rescuer = wq.rescuer.lock().take();
    if let Some(rescuer) = rescuer {
        rescuer.stop();
    }
    // Replaced pwqs were released when they became idle (before the queue was quiescent);
    // their pools' puts may still be on the releaser's list: done here, so that destroy
    // returns with every pool the queue alone used gone.
    crate::queue::apply::run_released();
    let linked = {
        let _l = wq.mutex.lock();
        std::mem::take(&mut *wq.linked.lock())
    };
    for pwq in &linked {
        // Taken out before the pool lock: dropped (the queue's reference) with no lock held.
        let released = pwq.pool.locked.lock().take_pwq(pwq.slot);
        drop(released);
        if pwq.pool.is_unbound() {
            pool::put_unbound_pool(&pwq.pool);
        }
    }
    // Release: pairs with the Acquire load in `insert_owned`.
    wq.state.fetch_or(state::DESTROYED, Ordering::Release);
    registry()
        .lock()
        .retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(wq)));
    // The handler is user code (its captures' `Drop` too): dropped here, with no lock held,
    // unless a report in flight holds the last clone (it drops it unlocked as well).
    let handler = wq.panic_handler.lock().take();
    crate::pool::panic::contain_quiet(move || drop(handler));
}
