//! The CPU topology the affinity scopes are built from: SMT siblings, last-level-cache groups
//! and NUMA nodes of the process's CPUs, read from sysfs (the kernel's `wq_pod_type` tables
//! come from the same facts: `cpu_smt_mask`, `cpus_share_cache`, `cpu_to_node`).
//!
//! Files read, under the sysfs root (`/sys`, or `CMWQ_SYSFS_ROOT` at first use):
//!
//! * `devices/system/cpu/cpuN/topology/thread_siblings_list`: the SMT group of CPU N;
//! * `devices/system/cpu/cpuN/cache/indexK/{level,shared_cpu_list}`: the cache of the highest
//!   level is the last-level cache, and its `shared_cpu_list` the LLC group;
//! * `devices/system/node/nodeM/cpulist`: the CPUs of NUMA node M.
//!
//! Where a file is missing or unreadable the CPU makes a group of its own, so every scope
//! still partitions the CPUs. Groups are cut down to the process's CPUs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

/// The environment variable that replaces the sysfs root, read once at first use.
pub(crate) const SYSFS_ROOT_VAR: &str = "CMWQ_SYSFS_ROOT";

/// The CPUs of the process and how they group: SMT siblings, last-level caches, NUMA nodes.
///
/// Each kind of group is a partition of [`cpus`](Self::cpus): every CPU is in exactly one
/// group, groups are ascending and ordered by their first CPU. [`pods`](Self::pods) gives the
/// groups of an [`AffinityScope`](crate::AffinityScope).
///
/// ```
/// let topo = cmwq::topology();
/// assert_eq!(topo.cpus(), cmwq::online_cpus());
/// let in_groups: usize = topo.llc_groups().iter().map(Vec::len).sum();
/// assert_eq!(in_groups, topo.cpus().len());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Topology {
    cpus: Vec<usize>,
    smt: Vec<Vec<usize>>,
    llc: Vec<Vec<usize>>,
    node: Vec<Vec<usize>>,
}

impl Topology {
    /// The process's CPUs, ascending (the same as [`online_cpus`](crate::online_cpus)).
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The SMT groups (hardware threads of one core).
    pub fn smt_groups(&self) -> &[Vec<usize>] {
        &self.smt
    }

    /// The last-level-cache groups (CPUs sharing their highest-level cache).
    pub fn llc_groups(&self) -> &[Vec<usize>] {
        &self.llc
    }

    /// The NUMA node groups.
    pub fn node_groups(&self) -> &[Vec<usize>] {
        &self.node
    }

    /// Builds the topology of `cpus` from the sysfs tree at `root`.
    pub(crate) fn read(root: &Path, cpus: &[usize]) -> Topology {
        let cpu_dir = root.join("devices/system/cpu");
        let smt: Vec<Option<Vec<usize>>> = cpus
            .iter()
            .map(|&c| read_cpulist(&cpu_dir.join(format!("cpu{c}/topology/thread_siblings_list"))))
            .collect();
        let llc: Vec<Option<Vec<usize>>> = cpus
            .iter()
            .map(|&c| read_llc(&cpu_dir.join(format!("cpu{c}/cache"))))
            .collect();
        let nodes = read_nodes(&root.join("devices/system/node"));
        let node: Vec<Option<Vec<usize>>> = cpus
            .iter()
            .map(|c| nodes.iter().find(|n| n.contains(c)).cloned())
            .collect();
        Topology {
            cpus: cpus.to_vec(),
            smt: partition(cpus, &smt),
            llc: partition(cpus, &llc),
            node: partition(cpus, &node),
        }
    }
}

/// The topology of the process's CPUs (see [`Topology`]), read from sysfs at first use and
/// again after the process's CPU set has changed ([`refresh_cpus`](crate::refresh_cpus)).
///
/// The sysfs root is `/sys` unless the environment variable `CMWQ_SYSFS_ROOT` names another
/// folder when the engine is first used (the possible CPUs are read then), which lets tests
/// describe machines they do not run on.
pub fn topology() -> Topology {
    (*cached()).clone()
}

/// The topology of the online CPUs now: the last one read while they are the same, else
/// read again (unbound queues created after a change get pods of the new CPUs; existing
/// queues keep theirs).
pub(crate) fn cached() -> Arc<Topology> {
    static TOPOLOGY: Mutex<Option<Arc<Topology>>> = Mutex::new(None);
    let online = super::topology::online_cpus();
    let mut g = TOPOLOGY.lock();
    match &*g {
        Some(t) if t.cpus == online => t.clone(),
        _ => {
            let t = Arc::new(Topology::read(sysfs_root(), &online));
            *g = Some(t.clone());
            t
        }
    }
}

/// The sysfs root: `/sys`, or the folder `CMWQ_SYSFS_ROOT` names at first use.
pub(crate) fn sysfs_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        std::env::var_os(SYSFS_ROOT_VAR)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/sys"))
    })
}

/// Parses a kernel CPU list (`"0-3,8,10-11\n"`), ascending without duplicates; `None` if it
/// is malformed. An empty list is `Some(vec![])`.
pub(crate) fn parse_cpulist(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse().ok()?, hi.trim().parse().ok()?),
            None => {
                let c: usize = part.trim().parse().ok()?;
                (c, c)
            }
        };
        if lo > hi || hi >= 1 << 16 {
            return None;
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Some(out)
}

fn read_cpulist(path: &Path) -> Option<Vec<usize>> {
    parse_cpulist(&std::fs::read_to_string(path).ok()?)
}

/// The `shared_cpu_list` of the highest-level cache under `cache_dir` (`cpuN/cache`).
fn read_llc(cache_dir: &Path) -> Option<Vec<usize>> {
    let mut best: Option<(u32, Vec<usize>)> = None;
    for entry in std::fs::read_dir(cache_dir).ok()?.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with("index") {
            continue;
        }
        let dir = entry.path();
        let Some(level) = std::fs::read_to_string(dir.join("level"))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            continue;
        };
        let Some(shared) = read_cpulist(&dir.join("shared_cpu_list")) else {
            continue;
        };
        if best.as_ref().is_none_or(|(l, _)| level > *l) {
            best = Some((level, shared));
        }
    }
    best.map(|(_, shared)| shared)
}

/// The CPU lists of every `nodeM` under `node_dir`.
fn read_nodes(node_dir: &Path) -> Vec<Vec<usize>> {
    let Ok(entries) = std::fs::read_dir(node_dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<(usize, Vec<usize>)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let id: usize = name.strip_prefix("node")?.parse().ok()?;
            Some((id, read_cpulist(&e.path().join("cpulist"))?))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, cpus)| cpus).collect()
}

/// Cuts the per-CPU group lists `of[i]` (the group sysfs gives `cpus[i]`, if any) into a
/// partition of `cpus`: groups in order of their first CPU, each cut to `cpus`; a CPU with no
/// group, or already taken by an earlier one, is never put twice (a CPU without a group is a
/// group of its own).
pub(crate) fn partition(cpus: &[usize], of: &[Option<Vec<usize>>]) -> Vec<Vec<usize>> {
    let mut taken = vec![false; cpus.len()];
    let mut groups = Vec::new();
    for (i, &cpu) in cpus.iter().enumerate() {
        if taken[i] {
            continue;
        }
        let mut group = vec![cpu];
        taken[i] = true;
        if let Some(list) = &of[i] {
            for (j, c) in cpus.iter().enumerate() {
                if !taken[j] && list.contains(c) {
                    taken[j] = true;
                    group.push(*c);
                }
            }
        }
        group.sort_unstable();
        groups.push(group);
    }
    groups
}

#[cfg(test)]
#[path = "cpu_topology_tests.rs"]
mod tests;
