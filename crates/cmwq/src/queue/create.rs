//! Creating a workqueue (the kernel's `alloc_workqueue`): the builder for the attributes
//! `Workqueue::new` does not take, the checks of what was asked, and the linking of one pool
//! workqueue per possible CPU (per-CPU queues) or per pod (unbound queues).

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::os::published::Published;
use crate::os::topology;
use crate::pool::panic::PanicHook;
use crate::pool::rescuer::Rescuer;
use crate::pool::{self, HIGHPRI_NICE};
use crate::queue::attrs::{unbound_pods, AffinityScope, WorkqueueAttrs};
use crate::queue::flush::{FlushLocked, FlushState};
use crate::queue::node_active::{self, WQ_DFL_MIN_ACTIVE};
use crate::queue::pwq::{PoolWorkqueue, PwqLocked, PwqTable};
use crate::queue::workqueue::{
    registry, Workqueue, WqFlags, WqHandle, WqLocked, WqShared, WQ_DFL_ACTIVE, WQ_MAX_ACTIVE,
};
use crate::work::data;
use crate::{Error, WorkPanic};

/// Builds a [`Workqueue`] with non-default attributes.
///
/// ```
/// use cmwq::{Work, Workqueue, WqFlags};
///
/// let wq = Workqueue::builder("builder-example")
///     .flags(WqFlags::UNBOUND)
///     .max_active(4)
///     .build()?;
/// let item = Work::new(|_| {});
/// assert!(wq.queue(&item));
/// item.flush();
/// # Ok::<(), cmwq::Error>(())
/// ```
#[derive(Clone)]
#[must_use]
pub struct WorkqueueBuilder {
    name: String,
    flags: WqFlags,
    max_active: usize,
    nice: Option<i32>,
    cpumask: Option<Vec<usize>>,
    affinity_scope: Option<AffinityScope>,
    affinity_strict: Option<bool>,
    ordered: bool,
    panic_handler: Option<PanicHook>,
}

impl fmt::Debug for WorkqueueBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkqueueBuilder")
            .field("name", &self.name)
            .field("flags", &self.flags)
            .field("max_active", &self.max_active)
            .field("nice", &self.nice)
            .field("cpumask", &self.cpumask)
            .field("affinity_scope", &self.affinity_scope)
            .field("affinity_strict", &self.affinity_strict)
            .field("ordered", &self.ordered)
            .field(
                "panic_handler",
                &self.panic_handler.as_ref().map(|_| "Fn(&WorkPanic)"),
            )
            .finish()
    }
}

impl WorkqueueBuilder {
    /// A builder with every attribute at its default (`Workqueue::builder`).
    pub(super) fn new(name: &str) -> Self {
        WorkqueueBuilder {
            name: name.to_string(),
            flags: WqFlags::empty(),
            max_active: 0,
            nice: None,
            cpumask: None,
            affinity_scope: None,
            affinity_strict: None,
            ordered: false,
            panic_handler: None,
        }
    }

    /// Creation flags.
    pub fn flags(mut self, flags: WqFlags) -> Self {
        self.flags = flags;
        self
    }

    /// Most items active at once (0: the default, 1024): per CPU for a per-CPU queue; for
    /// the whole queue, split between NUMA nodes, for an unbound one (see
    /// [`Workqueue::set_min_active`]).
    pub fn max_active(mut self, max_active: usize) -> Self {
        self.max_active = max_active;
        self
    }

    /// Nice value of the workers (unbound queues only; -20..=19).
    pub fn nice(mut self, nice: i32) -> Self {
        self.nice = Some(nice);
        self
    }

    /// CPUs the workers may run on (unbound queues only; a subset of `online_cpus()`).
    pub fn cpumask(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
        let mut v: Vec<usize> = cpus.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        self.cpumask = Some(v);
        self
    }

    /// How the cpumask is cut into pods, one pool workqueue each (unbound queues only; the
    /// default is [`AffinityScope::Default`], which
    /// [`Config::default_affinity_scope`](crate::Config::default_affinity_scope) resolves).
    /// Ordered queues keep one pwq over the whole cpumask whatever the scope. Whatever the
    /// scope, `max_active` is a limit for the whole queue, split between NUMA nodes (see
    /// [`Workqueue::set_min_active`]).
    pub fn affinity_scope(mut self, scope: AffinityScope) -> Self {
        self.affinity_scope = Some(scope);
        self
    }

    /// Whether workers are confined to their pod (unbound queues only; default `false`:
    /// workers may run on the whole cpumask and are put back into their pod when they start
    /// an item outside it).
    pub fn affinity_strict(mut self, strict: bool) -> Self {
        self.affinity_strict = Some(strict);
        self
    }

    /// Makes the queue ordered: one item at a time, in queueing order, as
    /// [`Workqueue::ordered`] does. Ordered queues are unbound: with
    /// [`WqFlags::PERCPU`] in [`flags`](Self::flags), [`build`](Self::build) fails with
    /// [`Error::InvalidFlags`]; [`max_active`](Self::max_active) is ignored (always 1).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use cmwq::{Work, Workqueue};
    ///
    /// let wq = Workqueue::builder("ordered-builder").ordered().build()?;
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let items: Vec<Work> = (0..4)
    ///     .map(|i| {
    ///         let log = log.clone();
    ///         Work::new(move |_| log.lock().unwrap().push(i))
    ///     })
    ///     .collect();
    /// for item in &items {
    ///     wq.queue(item);
    /// }
    /// wq.flush();
    /// assert_eq!(*log.lock().unwrap(), [0, 1, 2, 3]);
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    pub fn ordered(mut self) -> Self {
        self.ordered = true;
        self
    }

    /// Sets this queue's own handler for the panics of its items, instead of the global hook
    /// of [`set_panic_hook`](crate::set_panic_hook) (which stays in force for queues without
    /// a handler). It gets every report the hook would have got for this queue: a panic in a
    /// work function, or in the `Drop` of an item or of what it captured.
    ///
    /// As the hook, it runs on the worker thread with no engine lock held, and may queue work
    /// or panic (a panicking handler is reported on stderr and ignored; the worker carries on
    /// with the next item). It is dropped, with no lock held, when the queue is destroyed;
    /// a report made after that (the `Drop` of an item whose last reference the engine gives
    /// up late) goes to the global hook.
    ///
    /// Items of [`Workqueue::spawn`] and [`Workqueue::scope`] hand their panics to their
    /// handle or scope instead, so the handler sees them only when nobody can receive them
    /// (a spawned item whose handle was dropped before the panic was caught), exactly as the
    /// global hook would.
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use cmwq::{Work, Workqueue};
    ///
    /// let (tx, rx) = mpsc::channel();
    /// let tx = std::sync::Mutex::new(tx);
    /// let wq = Workqueue::builder("handled")
    ///     .panic_handler(move |p| {
    ///         let _ = tx.lock().unwrap().send(p.message.clone());
    ///     })
    ///     .build()?;
    /// let item = Work::new(|_| panic!("bad item"));
    /// wq.queue(&item);
    /// item.flush();
    /// let message = rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap();
    /// assert_eq!(message, "bad item");
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    pub fn panic_handler(mut self, handler: impl Fn(&WorkPanic) + Send + Sync + 'static) -> Self {
        self.panic_handler = Some(Arc::new(handler));
        self
    }

    /// Creates the workqueue.
    pub fn build(self) -> Result<Workqueue, Error> {
        create(self, false)
    }
}

pub(super) fn effective_max_active(max_active: usize) -> Result<usize, Error> {
    match max_active {
        0 => Ok(WQ_DFL_ACTIVE),
        n if n <= WQ_MAX_ACTIVE => Ok(n),
        n => Err(Error::InvalidMaxActive {
            max_active: n,
            max: WQ_MAX_ACTIVE,
        }),
    }
}

/// The checks of an unbound queue's attributes, at creation and in `apply_attrs`: nice in
/// -20..=19, a cpumask neither empty nor naming a CPU outside `online_cpus()`.
pub(super) fn check_unbound_attrs(a: &WorkqueueAttrs) -> Result<(), Error> {
    if !(-20..=19).contains(&a.nice) {
        return Err(Error::InvalidAttrs {
            reason: format!("nice {} is outside -20..=19", a.nice),
        });
    }
    if a.cpumask.is_empty() {
        return Err(Error::InvalidAttrs {
            reason: "empty cpumask".into(),
        });
    }
    let online = topology::online_cpus();
    if let Some(&cpu) = a.cpumask.iter().find(|c| !online.contains(c)) {
        return Err(Error::InvalidCpu { cpu });
    }
    Ok(())
}

/// Links one new pwq of `wq` per pool, taking a slot in each, with `work_color` and, for
/// pool `i`, the node counter `nodes[i]` (node index, whether it is shared; per-CPU queues
/// pass none: `node_active::NO_NODE`). The new pwqs' limit is 0 until the caller's
/// `wq_adjust_max_active` sets it. `None`, with every slot taken given back, if a pool has
/// no free slot. The caller owns the pools' references.
pub(super) fn link_pwqs(
    wq: &Arc<WqShared>,
    pools: &[Arc<pool::WorkerPool>],
    nodes: &[(u32, bool)],
    work_color: u8,
    plugged: bool,
) -> Option<Vec<PoolWorkqueue>> {
    let mut pwqs: Vec<PoolWorkqueue> = Vec::with_capacity(pools.len());
    for (i, pool) in pools.iter().enumerate() {
        let (node, shared_node) = nodes
            .get(i)
            .copied()
            .unwrap_or((node_active::NO_NODE, false));
        let mut p = PwqLocked::new(wq.clone(), 0, work_color, node, shared_node);
        p.plugged = plugged;
        match pool.add_pwq(p) {
            Some(slot) => pwqs.push(PoolWorkqueue {
                pool: pool.clone(),
                slot,
            }),
            None => {
                for pwq in &pwqs {
                    let taken = pwq.pool.locked.lock().take_pwq(pwq.slot);
                    drop(taken);
                }
                return None;
            }
        }
    }
    Some(pwqs)
}

pub(super) fn create(b: WorkqueueBuilder, system: bool) -> Result<Workqueue, Error> {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    if b.name.is_empty() {
        return Err(Error::InvalidName);
    }
    let mut flags = b.flags;
    if flags.contains(WqFlags::UNBOUND | WqFlags::PERCPU) {
        return Err(Error::InvalidFlags {
            reason: "UNBOUND and PERCPU are mutually exclusive",
        });
    }
    // The kernel's `workqueue.power_efficient`: such queues become unbound (PERCPU, which
    // they may also carry, gives way as the kernel's `WQ_UNBOUND` overrides it).
    if flags.contains(WqFlags::POWER_EFFICIENT) && crate::config().power_efficient {
        flags.remove(WqFlags::PERCPU);
        flags |= WqFlags::UNBOUND;
    }
    let max_active = if b.ordered {
        if flags.contains(WqFlags::PERCPU) {
            return Err(Error::InvalidFlags {
                reason: "an ordered workqueue is unbound",
            });
        }
        flags |= WqFlags::UNBOUND;
        1
    } else {
        effective_max_active(b.max_active)?
    };
    let unbound = flags.contains(WqFlags::UNBOUND);
    if !unbound
        && (b.nice.is_some()
            || b.cpumask.is_some()
            || b.affinity_scope.is_some()
            || b.affinity_strict.is_some())
    {
        return Err(Error::InvalidAttrs {
            reason: "nice, cpumask and affinity apply to UNBOUND workqueues only".into(),
        });
    }
    let attrs = if unbound {
        let nice = b.nice.unwrap_or(if flags.contains(WqFlags::HIGHPRI) {
            HIGHPRI_NICE
        } else {
            0
        });
        let cpumask = b.cpumask.clone().unwrap_or_else(topology::online_cpus);
        let attrs = WorkqueueAttrs::new()
            .with_nice(nice)
            .with_cpumask(cpumask)
            .with_affinity_scope(b.affinity_scope.unwrap_or_default())
            .with_affinity_strict(b.affinity_strict.unwrap_or(false));
        check_unbound_attrs(&attrs)?;
        Some(attrs)
    } else {
        None
    };
    let (pool_attrs, pod_of_cpu) = match &attrs {
        Some(a) => unbound_pods(a, b.ordered),
        None => (Vec::new(), Vec::new()),
    };
    // Unbound: the node counters, each pod's node and whether it shares it with other pods.
    let topo = crate::os::cpu_topology::cached();
    let (node_nr_active, pod_node, pod_shared) = match &attrs {
        Some(a) => {
            let pods: Vec<Vec<usize>> = pool_attrs.iter().map(|p| p.cpumask.clone()).collect();
            let nodes = node_active::pod_nodes(&topo, &pods);
            let shared = node_active::shared_nodes(&nodes);
            (
                node_active::new_node_counters(&topo, &a.cpumask),
                nodes,
                shared,
            )
        }
        None => (Vec::new(), Vec::new(), Vec::new()),
    };
    let attrs = attrs.unwrap_or_else(|| {
        WorkqueueAttrs::new()
            .with_nice(if flags.contains(WqFlags::HIGHPRI) {
                HIGHPRI_NICE
            } else {
                0
            })
            .with_affinity_scope(AffinityScope::Cpu)
            .with_affinity_strict(true)
    });

    let min_active = max_active.min(WQ_DFL_MIN_ACTIVE);
    let shared = Arc::new(WqShared {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        name: b.name.clone(),
        flags,
        ordered: b.ordered,
        system,
        state: AtomicU32::new(0),
        // Empty until the pwqs are linked below; nobody can queue on the queue before.
        table: Published::new(PwqTable {
            pwqs: Vec::new(),
            pod_of_cpu: Vec::new(),
            attrs: attrs.clone(),
        }),
        linked: Mutex::new(Vec::new()),
        retired: Mutex::new(Default::default()),
        mutex: Mutex::new(WqLocked {
            flush: FlushLocked::default(),
            nr_drainers: 0,
            max_active,
            min_active,
        }),
        flush_state: FlushState::default(),
        max_active: AtomicUsize::new(max_active),
        min_active: AtomicUsize::new(min_active),
        node_nr_active,
        rescuer: Mutex::new(None),
        panic_handler: Mutex::new(b.panic_handler),
    });
    let pools: Vec<Arc<pool::WorkerPool>> = if unbound {
        pool_attrs.iter().map(pool::get_unbound_pool).collect()
    } else {
        // One per possible CPU, online or not, by possible-CPU index: the table keeps its
        // shape when the CPU set changes (`pool/hotplug.rs`).
        (0..topology::possible().list.len())
            .map(|idx| pool::per_cpu_pool(idx, flags.contains(WqFlags::HIGHPRI)))
            .collect()
    };
    let nodes: Vec<(u32, bool)> = pod_node
        .iter()
        .copied()
        .zip(pod_shared.iter().copied())
        .collect();
    let Some(pwqs) = link_pwqs(&shared, &pools, &nodes, 0, false) else {
        // Give back what was taken: the unbound pools (`link_pwqs` gave the slots back).
        for pool in &pools {
            if pool.is_unbound() {
                pool::put_unbound_pool(pool);
            }
        }
        return Err(Error::TooManyWorkqueues {
            max: data::MAX_SLOT + 1,
        });
    };
    *shared.linked.lock() = pwqs.clone();
    shared.table.publish(PwqTable {
        pwqs,
        pod_of_cpu,
        attrs,
    });
    // Each pwq's limit is set here, before any item can be queued.
    crate::queue::freezer::wq_adjust_max_active(&shared, &shared.mutex.lock());
    registry().lock().push(Arc::downgrade(&shared));
    crate::queue::freezer::adjust_new(&shared);
    if flags.contains(WqFlags::MEM_RECLAIM) {
        *shared.rescuer.lock() = Some(Rescuer::start(&shared));
    }
    Ok(Workqueue {
        handle: Arc::new(WqHandle { shared }),
    })
}
