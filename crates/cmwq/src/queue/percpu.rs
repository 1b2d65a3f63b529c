//! Per-CPU helpers: [`work_on_cpu`], [`schedule_on_each_cpu`] and
//! [`Workqueue::queue_node`] (the kernel's `work_on_cpu`, `schedule_on_each_cpu` and
//! `queue_work_node`).
//!
//! The first two are clients of the spawn layer's scopes (`spawn/scope.rs`): each call is a
//! scope whose items are queued on a given CPU (`Scope::spawn_on_cpu`), so a closure may
//! borrow from the caller's stack, its result comes back through the scoped handle, and its
//! panic is re-raised on the caller. Both wait for their items even when one panics, as the
//! kernel's versions wait for theirs.
//!
//! # Why borrowing is sound
//!
//! This file has no `unsafe`: the one lifetime erasure is in `Scope::spawn_at`, and its
//! argument (the module docs of `spawn/scope.rs`) holds here unchanged. The scope returns,
//! normally or by unwinding, only after every item it spawned has run or been dropped, and
//! queueing on a given CPU changes none of the ways an item can end: it runs, or a refusal
//! (an invalid CPU included) drops it unrun before `spawn_on_cpu` returns. Nobody else holds
//! the items' handles, so none is cancelled. A panic in a closure is caught in its item and
//! re-raised here from inside the scope's closure, which the scope catches, waits for its
//! items, and re-raises: no unwinding path skips the wait.

use std::panic::resume_unwind;
use std::sync::OnceLock;

use crate::os::{cpu_topology, topology};
use crate::queue::system::system_percpu_wq;
use crate::queue::workqueue::{Workqueue, WqFlags};
use crate::spawn::JoinError;
use crate::{Error, Work};

/// The queue [`work_on_cpu`] uses: per-CPU, `MEM_RECLAIM`, private to this module.
///
/// Why a queue of its own and not [`system_percpu_wq`] (which the kernel's `work_on_cpu`
/// uses, keeping apart only the lockdep class of each call site's item): a caller that runs
/// on a worker of the target CPU waits for an item queued on its own pool, and that item must
/// be able to start. Three things make sure it does:
///
/// 1. The caller's wait is announced to concurrency management ([`blocking`](crate::blocking),
///    inside the scoped handle's `join`), so the pool starts the item on another worker
///    instead of waiting for the caller to return.
/// 2. Only `work_on_cpu` queues on this queue, so no unrelated item can use up its per-CPU
///    `max_active` (1024): every active item of it is a `work_on_cpu` closure, running or
///    itself waiting for a nested call. Items of [`system_percpu_wq`] that the caller's own
///    code left waiting there (an ordered chain, a flush) cannot hold it up.
/// 3. `MEM_RECLAIM` gives it a rescuer: if no worker thread can be created for the pool, the
///    rescuer runs the item.
///
/// What can still hang is what would hang in the kernel: a closure that waits for something
/// the caller holds (a lock, a channel it never sends on), nesting deeper than `max_active`
/// on one CPU, or nesting while no worker can be created (the rescuer runs one item at a
/// time, and the outer closure holds it).
fn work_on_cpu_wq() -> &'static Workqueue {
    static WQ: OnceLock<Workqueue> = OnceLock::new();
    WQ.get_or_init(|| {
        Workqueue::new_system("work_on_cpu", WqFlags::PERCPU | WqFlags::MEM_RECLAIM, 0)
    })
}

/// The error of a scoped item that did not panic: a refusal by its queue. (Nobody else holds
/// the handle, so it cannot have been cancelled; that case is reported as a refusal too.)
fn refusal(err: JoinError, wq: &Workqueue) -> Error {
    err.refusal().cloned().unwrap_or_else(|| Error::Destroyed {
        workqueue: wq.name().to_string(),
    })
}

/// Runs `f` on `cpu`'s per-CPU worker pool, waits for it and returns its result (the
/// kernel's `work_on_cpu`).
///
/// `f` runs inside a work item on a worker pinned to `cpu`
/// ([`current_worker()`](crate::current_worker) reports that CPU). It may borrow from the
/// caller: the call returns only once `f` has run, even if it panics. `Err(Error::InvalidCpu)`
/// if `cpu` is not one of [`online_cpus()`](crate::online_cpus) (the kernel's
/// `work_on_cpu_safe` answers `-ENODEV` for an offline CPU); then `f` is dropped unrun.
///
/// Safe to call from a work item, including one running on `cpu`'s own pool: the closure
/// goes to a private per-CPU `MEM_RECLAIM` queue, and the wait is reported to concurrency
/// management, so the pool starts it on another worker (or its rescuer runs it if no worker
/// can be created). As in the kernel, `f` must not wait for something the caller holds.
///
/// ```
/// let cpu = cmwq::online_cpus()[0];
/// let name = String::from("probe");
/// // The closure borrows `name`; it runs on a worker of `cpu`.
/// let (len, ran_on) = cmwq::work_on_cpu(cpu, || {
///     (name.len(), cmwq::current_worker().and_then(|w| w.cpu))
/// })?;
/// assert_eq!((len, ran_on), (5, Some(cpu)));
///
/// assert!(matches!(
///     cmwq::work_on_cpu(usize::MAX, || ()),
///     Err(cmwq::Error::InvalidCpu { .. })
/// ));
/// # Ok::<(), cmwq::Error>(())
/// ```
///
/// # Panics
///
/// If `f` panics, the panic is re-raised on the caller (with the original payload) after the
/// item has finished; it is not reported to the panic hook of
/// [`set_panic_hook`](crate::set_panic_hook).
///
/// # Blocking
///
/// Sleeps until `f` has run; on a worker thread the sleep is reported to concurrency
/// management.
pub fn work_on_cpu<F, R>(cpu: usize, f: F) -> Result<R, Error>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    topology::check_online(cpu)?;
    let wq = work_on_cpu_wq();
    // Borrowing `f` is sound because the scope waits for its item (module docs).
    wq.scope(|s| match s.spawn_on_cpu(cpu, f).join() {
        Ok(value) => Ok(value),
        Err(err) => match err.try_into_panic() {
            // Joined: the scope does not re-raise it; we do, once the item is gone.
            Ok(payload) => resume_unwind(payload),
            Err(err) => Err(refusal(err, wq)),
        },
    })
}

/// Runs `f` once on every CPU of [`online_cpus()`](crate::online_cpus), each call in a work
/// item on that CPU's pool of [`system_percpu_wq`](fn@crate::system_percpu_wq), and waits
/// for all of them (the kernel's `schedule_on_each_cpu`, which uses `system_wq`, the same
/// queue).
///
/// `f` may borrow from the caller; the calls may run at the same time on different CPUs.
/// `Err` if the queue refused an item (it is being drained:
/// `Err(Error::Draining)`); `f` may then have run on some CPUs, and those runs have finished.
///
/// Slow, as in the kernel: it waits for one item per CPU behind whatever else is queued on
/// [`system_percpu_wq`] there. Calling it from an item of that queue works (the wait is
/// reported to concurrency management) unless that CPU's `max_active` is used up by items
/// that wait as well.
///
/// ```
/// use std::sync::Mutex;
///
/// let seen = Mutex::new(Vec::new());
/// cmwq::schedule_on_each_cpu(|| {
///     let cpu = cmwq::current_worker().and_then(|w| w.cpu).unwrap();
///     seen.lock().unwrap().push(cpu);
/// })?;
/// let mut seen = seen.into_inner().unwrap();
/// seen.sort_unstable();
/// assert_eq!(seen, cmwq::online_cpus());
/// # Ok::<(), cmwq::Error>(())
/// ```
///
/// # Panics
///
/// If `f` panics on any CPU, the first such panic (in CPU order) is re-raised on the caller
/// after every call has finished; the others are dropped.
///
/// # Blocking
///
/// Sleeps until every call has run; on a worker thread the sleep is reported to concurrency
/// management.
pub fn schedule_on_each_cpu<F>(f: F) -> Result<(), Error>
where
    F: Fn() + Send + Sync,
{
    let wq = system_percpu_wq();
    let f = &f;
    wq.scope(|s| {
        let handles: Vec<_> = topology::online_cpus()
            .iter()
            .map(|&cpu| s.spawn_on_cpu(cpu, f))
            .collect();
        let mut panic = None;
        let mut refused = None;
        // Joined in order: each join waits, so after the loop every item has finished.
        for handle in handles {
            if let Err(err) = handle.join() {
                match err.try_into_panic() {
                    Ok(payload) if panic.is_none() => panic = Some(payload),
                    Ok(payload) => crate::pool::panic::drop_payload(payload),
                    Err(err) => {
                        refused.get_or_insert_with(|| refusal(err, wq));
                    }
                }
            }
        }
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
        refused.map_or(Ok(()), Err)
    })
}

impl Workqueue {
    /// Queues `work` on a CPU of NUMA node `node` (the kernel's `queue_work_node`).
    ///
    /// On a per-CPU queue: on the calling CPU if it belongs to `node`, else on the first CPU
    /// of `node` that is in [`online_cpus()`](crate::online_cpus); if none of the node's CPUs
    /// is (the process's affinity mask leaves the node out), on the calling CPU, as the
    /// kernel falls back to `WORK_CPU_UNBOUND`. On an unbound queue: as
    /// [`queue`](Self::queue) (its pool already spans the queue's cpumask).
    ///
    /// Returns what [`queue`](Self::queue) returns. `Err(Error::InvalidNode)` if the node
    /// does not exist (the kernel queues such an item as `queue_work` would; here it is the
    /// caller's mistake, reported like an unknown CPU), and then nothing is queued.
    ///
    /// Nodes are read once from `/sys/devices/system/node/node<N>/cpulist`; without that
    /// directory every CPU is on node 0, the only node.
    ///
    /// ```
    /// use cmwq::{system_wq, Work};
    ///
    /// let item = Work::new(|_| {});
    /// assert_eq!(system_wq().queue_node(0, &item), Ok(true));
    /// item.flush();
    /// assert!(system_wq().queue_node(1 << 20, &item).is_err());
    /// ```
    pub fn queue_node(&self, node: usize, work: &Work) -> Result<bool, Error> {
        match self.node_cpu(node)? {
            Some(cpu) => self.queue_on(cpu, work),
            None => Ok(self.queue(work)),
        }
    }

    /// Like [`queue_node`](Self::queue_node), with the queue's refusals as errors too
    /// (`Err(Error::Draining)`, `Err(Error::Destroyed)`; the item is left not pending), as
    /// [`try_queue_on`](Self::try_queue_on).
    pub fn try_queue_node(&self, node: usize, work: &Work) -> Result<bool, Error> {
        match self.node_cpu(node)? {
            Some(cpu) => self.try_queue_on(cpu, work),
            None => self.try_queue(work),
        }
    }

    /// The CPU `queue_node` queues on (`None`: as `queue`), or `Err(InvalidNode)`.
    fn node_cpu(&self, node: usize) -> Result<Option<usize>, Error> {
        let cpus = node_cpus(node).ok_or(Error::InvalidNode { node })?;
        if self.flags().contains(WqFlags::UNBOUND) {
            return Ok(None);
        }
        let here = topology::current_cpu();
        let online = |cpu: &usize| topology::possible().is_online(*cpu);
        Ok(if cpus.contains(&here) && online(&here) {
            Some(here)
        } else {
            cpus.iter().copied().find(online)
        })
    }
}

// ===== NUMA nodes =====
//
// By node id, with every CPU of the node (online for this process or not): what
// `queue_work_node` needs, where `cmwq::topology()` groups only the process's CPUs. Read
// under the same sysfs root (`CMWQ_SYSFS_ROOT` for tests) with the same CPU-list parser.

/// The CPUs of NUMA node `node` (all of them, online for this process or not), or `None` if
/// there is no such node. Read once.
fn node_cpus(node: usize) -> Option<&'static [usize]> {
    static NODES: OnceLock<Vec<Option<Vec<usize>>>> = OnceLock::new();
    NODES
        .get_or_init(|| read_nodes(&cpu_topology::sysfs_root().join("devices/system/node")))
        .get(node)?
        .as_deref()
}

/// The node table under `root` (`root/node<N>/cpulist`), indexed by node id; `None` for ids
/// that have no node. Without `root`, one node 0 holding every CPU of the process.
fn read_nodes(root: &std::path::Path) -> Vec<Option<Vec<usize>>> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return vec![Some(topology::online_cpus())];
    };
    let mut nodes: Vec<Option<Vec<usize>>> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("node"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let Some(cpus) = std::fs::read_to_string(entry.path().join("cpulist"))
            .ok()
            .and_then(|s| cpu_topology::parse_cpulist(&s))
        else {
            continue;
        };
        if nodes.len() <= id {
            nodes.resize(id + 1, None);
        }
        nodes[id] = Some(cpus);
    }
    if nodes.is_empty() {
        // A node directory without readable nodes: treat it as absent.
        nodes.push(Some(topology::online_cpus()));
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::read_nodes;

    #[test]
    fn node_table_from_a_directory() {
        let root = std::env::temp_dir().join(format!("cmwq-nodes-{}", std::process::id()));
        for (node, list) in [("node0", "0-1\n"), ("node2", "2-3\n")] {
            std::fs::create_dir_all(root.join(node)).unwrap();
            std::fs::write(root.join(node).join("cpulist"), list).unwrap();
        }
        std::fs::create_dir_all(root.join("power")).unwrap();
        let nodes = read_nodes(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(nodes, vec![Some(vec![0, 1]), None, Some(vec![2, 3])]);
    }

    #[test]
    fn without_the_directory_every_cpu_is_on_node_0() {
        let nodes = read_nodes(std::path::Path::new("/nonexistent/cmwq/node"));
        assert_eq!(nodes, vec![Some(crate::online_cpus())]);
    }
}
