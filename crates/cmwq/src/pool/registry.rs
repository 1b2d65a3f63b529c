//! The pool registry (the kernel's `worker_pool_idr`, per-CPU pools and `unbound_pool_hash`):
//! two pools per possible CPU for the life of the process, unbound pools shared by equal
//! attributes and destroyed with their last user.
//!
//! Per-CPU pools exist for every possible CPU (`os/cpuset.rs`), online or not, so that a CPU
//! that comes into the process's CPU set finds its pools (and every per-CPU queue its pool
//! workqueue) already there. A pool without workers costs a few hundred bytes; those of CPUs
//! offline at first use start with empty lists, which grow when used.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use parking_lot::RwLock;

use crate::os::topology;
use crate::pool::{Attrs, WorkerPool, HIGHPRI_NICE};

struct Registry {
    by_id: Vec<Option<Arc<WorkerPool>>>,
    /// Ids of destroyed unbound pools, reused by the next ones (so the registry, and the
    /// monitor's walk over it, stay as large as the live pools).
    ///
    /// A reused id cannot mislead: a data word names a pool either as the one an item is
    /// queued on (which lives until its queues are destroyed, and they drain first) or as the
    /// last one it ran on, a hint that every reader checks under that pool's lock against
    /// its lists and busy map, where an item of the old pool is never found.
    free_ids: Vec<u32>,
    unbound: HashMap<Attrs, Arc<WorkerPool>>,
}

struct Pools {
    /// `[normal, highpri]` per possible CPU, in possible-CPU order.
    per_cpu: Vec<[Arc<WorkerPool>; 2]>,
    registry: RwLock<Registry>,
}

/// The pools, made at the engine's first use.
static POOLS: OnceLock<Pools> = OnceLock::new();

/// Whether the engine's pools have been made (a CPU-set change before that has nothing to
/// move: the pools are made with the set of their time).
pub(crate) fn pools_made() -> bool {
    POOLS.get().is_some()
}

fn pools() -> &'static Pools {
    POOLS.get_or_init(|| {
        let _ = crate::config::config();
        // Against a CPU-set change meanwhile: the pools start with the online state read
        // here, and a change applied after this sees them made (`pool/hotplug.rs`).
        let _attach = crate::pool::hotplug::WQ_POOL_ATTACH_MUTEX.lock();
        let possible = topology::possible();
        let mut by_id = Vec::new();
        let mut per_cpu = Vec::new();
        for &cpu in &possible.list {
            let warm = possible.is_online(cpu);
            let mut pair = Vec::new();
            for highpri in [false, true] {
                let id = by_id.len() as u32;
                let nice = if highpri { HIGHPRI_NICE } else { 0 };
                let attrs = Attrs::strict(nice, vec![cpu]);
                let mut pool = WorkerPool::new(id, Some(cpu), highpri, attrs, warm);
                // A CPU offline at first use starts disassociated (the kernel's pools of
                // possible CPUs not yet online are created with `POOL_DISASSOCIATED`).
                pool.locked.get_mut().disassociated = !warm;
                let pool = Arc::new(pool);
                by_id.push(Some(pool.clone()));
                pair.push(pool);
            }
            let highpri = pair.pop().expect("two pools");
            let normal = pair.pop().expect("two pools");
            per_cpu.push([normal, highpri]);
        }
        // The engine's first use: `CMWQ_CONTROL=1` starts the control endpoint here. It
        // only binds a socket and spawns its thread, which touches the pools only later.
        crate::observe::control::start_from_env();
        Pools {
            per_cpu,
            registry: RwLock::new(Registry {
                by_id,
                free_ids: Vec::new(),
                unbound: HashMap::new(),
            }),
        }
    })
}

/// The per-CPU pool of possible-CPU index `idx` (position in the possible list).
pub(crate) fn per_cpu_pool(idx: usize, highpri: bool) -> Arc<WorkerPool> {
    pools().per_cpu[idx][usize::from(highpri)].clone()
}

/// The per-CPU pools of every possible CPU, `[normal, highpri]` each, in possible-CPU order.
pub(crate) fn per_cpu_pools() -> &'static [[Arc<WorkerPool>; 2]] {
    &pools().per_cpu
}

/// Every live pool (per-CPU ones first), leaving out the per-CPU pools of CPUs that are not
/// online and never had a worker: the monitor, the stats and the dump see the pools of a
/// machine whose possible CPUs are many and whose CPU set is small as they see a small one.
pub(crate) fn all_pools() -> Vec<Arc<WorkerPool>> {
    let possible = topology::possible();
    pools()
        .registry
        .read()
        .by_id
        .iter()
        .flatten()
        .filter(|p| {
            p.cpu
                .is_none_or(|cpu| possible.is_online(cpu) || p.ever_started())
        })
        .cloned()
        .collect()
}

/// The pool with this id, if it still exists. Per-CPU pools (ids `0..2 * CPUs`, normal then
/// high priority per CPU) are found without the registry lock: the queue path asks for an
/// item's last pool whenever the item moves between pools (`queue_on` round-robin), and a
/// shared reader count would be a write to one cache line from every queueing thread.
pub(crate) fn pool_by_id(id: u32) -> Option<Arc<WorkerPool>> {
    let p = pools();
    if let Some(pair) = p.per_cpu.get(id as usize / 2) {
        return Some(pair[id as usize % 2].clone());
    }
    p.registry
        .read()
        .by_id
        .get(id as usize)
        .and_then(Clone::clone)
}

/// Finds or creates the unbound pool for `attrs` and takes a reference on it.
pub(crate) fn get_unbound_pool(attrs: &Attrs) -> Arc<WorkerPool> {
    let mut reg = pools().registry.write();
    if let Some(pool) = reg.unbound.get(attrs) {
        *pool.refcnt.lock() += 1;
        return pool.clone();
    }
    let id = match reg.free_ids.pop() {
        Some(id) => id,
        None => {
            let id = reg.by_id.len() as u32;
            // One pool per distinct live attributes: 2^31 of them is out of reach.
            assert!(id < crate::work::data::POOL_NONE, "pool ids exhausted");
            reg.by_id.push(None);
            id
        }
    };
    let pool = Arc::new(WorkerPool::new(
        id,
        None,
        attrs.nice < 0,
        attrs.clone(),
        true,
    ));
    *pool.refcnt.lock() = 1;
    reg.by_id[id as usize] = Some(pool.clone());
    reg.unbound.insert(attrs.clone(), pool.clone());
    pool
}

/// Drops a reference on an unbound pool; the last one destroys it and joins its workers.
pub(crate) fn put_unbound_pool(pool: &Arc<WorkerPool>) {
    let joins = {
        let mut reg = pools().registry.write();
        let mut refcnt = pool.refcnt.lock();
        *refcnt -= 1;
        if *refcnt > 0 {
            return;
        }
        reg.unbound.remove(&pool.attrs);
        reg.by_id[pool.id as usize] = None;
        reg.free_ids.push(pool.id);
        drop(refcnt);
        let mut g = pool.locked.lock();
        WorkerPool::stop_workers(&mut g)
    };
    let me = std::thread::current().id();
    for j in joins {
        if j.thread().id() != me {
            let _ = j.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_cpu_pools_are_found_by_id_without_the_registry() {
        for (idx, _) in topology::possible().list.iter().enumerate() {
            for highpri in [false, true] {
                let pool = per_cpu_pool(idx, highpri);
                let found = pool_by_id(pool.id).expect("per-CPU pools live for ever");
                assert!(Arc::ptr_eq(&pool, &found));
                assert_eq!(found.highpri, highpri);
            }
        }
        // The first id past the per-CPU pools goes through the registry.
        let past = 2 * topology::possible().list.len() as u32;
        if let Some(pool) = pool_by_id(past) {
            assert!(pool.is_unbound());
        }
    }
}
