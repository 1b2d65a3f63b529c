//! Workqueue attributes (the kernel's `workqueue_attrs`) and affinity scopes
//! (`enum wq_affn_scope`): how an unbound queue's CPUs are cut into pods, one pool workqueue
//! per pod.

use crate::os::cpu_topology::Topology;
use crate::pool::Attrs;

/// How an unbound workqueue groups its CPUs into *pods* (the kernel's `wq_affn_scope`). Each
/// pod gets its own pool workqueue and worker pool; an item queued from a CPU runs in that
/// CPU's pod, near the caches it warmed.
///
/// ```
/// use cmwq::{AffinityScope, Workqueue, WqFlags};
///
/// let wq = Workqueue::builder("per-llc")
///     .flags(WqFlags::UNBOUND)
///     .affinity_scope(AffinityScope::Cache)
///     .build()?;
/// assert_eq!(wq.attrs().affinity_scope, AffinityScope::Cache);
/// # Ok::<(), cmwq::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AffinityScope {
    /// [`Config::default_affinity_scope`](crate::Config::default_affinity_scope) (the
    /// kernel's `WQ_AFFN_DFL`, which `workqueue.default_affinity_scope` sets).
    #[default]
    Default,
    /// One pod per CPU (`WQ_AFFN_CPU`).
    Cpu,
    /// One pod per core: its SMT siblings (`WQ_AFFN_SMT`).
    Smt,
    /// One pod per last-level cache (`WQ_AFFN_CACHE`, the kernel's default).
    Cache,
    /// One pod per NUMA node (`WQ_AFFN_NUMA`).
    Numa,
    /// One pod: every CPU (`WQ_AFFN_SYSTEM`).
    System,
}

impl AffinityScope {
    /// The scope this one stands for: [`Default`](Self::Default) is the configured default
    /// (and `Cache` if that is `Default` too); the others are themselves.
    pub fn resolve(self) -> AffinityScope {
        match self {
            AffinityScope::Default => match crate::config().default_affinity_scope {
                AffinityScope::Default => AffinityScope::Cache,
                s => s,
            },
            s => s,
        }
    }
}

impl Topology {
    /// The pods of `scope` ([`Default`](AffinityScope::Default) resolved as
    /// [`AffinityScope::resolve`] does): a partition of [`cpus`](Self::cpus), ascending,
    /// ordered by first CPU.
    ///
    /// ```
    /// use cmwq::AffinityScope;
    ///
    /// let topo = cmwq::topology();
    /// assert_eq!(topo.pods(AffinityScope::System), [topo.cpus().to_vec()]);
    /// assert_eq!(topo.pods(AffinityScope::Cpu).len(), topo.cpus().len());
    /// ```
    pub fn pods(&self, scope: AffinityScope) -> Vec<Vec<usize>> {
        match scope.resolve() {
            AffinityScope::Cpu => self.cpus().iter().map(|&c| vec![c]).collect(),
            AffinityScope::Smt => self.smt_groups().to_vec(),
            AffinityScope::Numa => self.node_groups().to_vec(),
            AffinityScope::System => vec![self.cpus().to_vec()],
            // `resolve` never gives `Default`.
            AffinityScope::Cache | AffinityScope::Default => self.llc_groups().to_vec(),
        }
    }
}

/// The attributes of a workqueue (the kernel's `workqueue_attrs`), as
/// [`Workqueue::attrs`](crate::Workqueue::attrs) reports them.
///
/// ```
/// use cmwq::{AffinityScope, WorkqueueAttrs};
///
/// let attrs = WorkqueueAttrs::new()
///     .with_nice(5)
///     .with_affinity_scope(AffinityScope::Numa)
///     .with_affinity_strict(true);
/// assert_eq!(attrs.nice, 5);
/// assert_eq!(attrs.cpumask, cmwq::online_cpus());
/// assert!(attrs.affinity_strict);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WorkqueueAttrs {
    /// Nice value of the workers.
    pub nice: i32,
    /// The CPUs the queue's workers may run on, ascending.
    pub cpumask: Vec<usize>,
    /// How the cpumask is cut into pods.
    pub affinity_scope: AffinityScope,
    /// Whether workers stay inside their pod (strict) or may run anywhere in the cpumask,
    /// starting each item inside it (non-strict, the default).
    pub affinity_strict: bool,
}

impl Default for WorkqueueAttrs {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkqueueAttrs {
    /// Nice 0, every CPU of [`online_cpus`](crate::online_cpus), the default scope,
    /// non-strict (the kernel's `alloc_workqueue_attrs` defaults).
    pub fn new() -> Self {
        WorkqueueAttrs {
            nice: 0,
            cpumask: crate::online_cpus(),
            affinity_scope: AffinityScope::Default,
            affinity_strict: false,
        }
    }

    /// Sets the nice value.
    pub fn with_nice(mut self, nice: i32) -> Self {
        self.nice = nice;
        self
    }

    /// Sets the cpumask (sorted, duplicates dropped).
    pub fn with_cpumask(mut self, cpus: impl IntoIterator<Item = usize>) -> Self {
        let mut v: Vec<usize> = cpus.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        self.cpumask = v;
        self
    }

    /// Sets the affinity scope.
    pub fn with_affinity_scope(mut self, scope: AffinityScope) -> Self {
        self.affinity_scope = scope;
        self
    }

    /// Sets strictness.
    pub fn with_affinity_strict(mut self, strict: bool) -> Self {
        self.affinity_strict = strict;
        self
    }
}

/// The pods of an unbound queue: the scope's groups cut to `cpumask`, empty ones dropped (the
/// kernel's `wq_calc_pod_cpumask` over every pod).
pub(crate) fn queue_pods(
    topo: &Topology,
    scope: AffinityScope,
    cpumask: &[usize],
) -> Vec<Vec<usize>> {
    topo.pods(scope)
        .into_iter()
        .map(|pod| {
            pod.into_iter()
                .filter(|c| cpumask.contains(c))
                .collect::<Vec<_>>()
        })
        .filter(|pod| !pod.is_empty())
        .collect()
}

/// The pool attributes of an unbound queue, one per pod (ordered queues: one pod, the whole
/// cpumask), and, with several pods, the pod index of each possible CPU, by possible-CPU
/// index (0, the first pod, for CPUs outside the cpumask); empty with one pod.
pub(crate) fn unbound_pods(a: &WorkqueueAttrs, ordered: bool) -> (Vec<Attrs>, Vec<u32>) {
    let pods = if ordered {
        vec![a.cpumask.clone()]
    } else {
        queue_pods(
            &crate::os::cpu_topology::cached(),
            a.affinity_scope,
            &a.cpumask,
        )
    };
    let pod_of_cpu = if pods.len() > 1 {
        crate::os::topology::possible()
            .list
            .iter()
            .map(|c| pods.iter().position(|p| p.contains(c)).unwrap_or(0) as u32)
            .collect()
    } else {
        Vec::new()
    };
    let pool_attrs = pods
        .into_iter()
        .map(|pod| Attrs {
            nice: a.nice,
            allowed: if a.affinity_strict {
                pod.clone()
            } else {
                a.cpumask.clone()
            },
            cpumask: pod,
            strict: a.affinity_strict,
        })
        .collect();
    (pool_attrs, pod_of_cpu)
}
