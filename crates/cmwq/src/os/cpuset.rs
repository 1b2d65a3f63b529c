//! The process's CPU set and the possible CPUs (the kernel's `cpu_online_mask` and
//! `cpu_possible_mask`, as a process sees them).
//!
//! * **Possible CPUs** are fixed for the life of the process, read at first use: the list in
//!   `devices/system/cpu/possible` under the sysfs root (`/sys`, or `CMWQ_SYSFS_ROOT`), with
//!   the CPUs online then added; without that file, CPUs `0..` the configured count
//!   (`sysconf(_SC_NPROCESSORS_CONF)`) and the CPUs online then. Only ids below
//!   `CPU_SETSIZE` (1024) count. Per-CPU pools and per-CPU pool workqueues exist for every
//!   possible CPU, so their tables never change shape.
//! * **Online CPUs** are the process's CPU set now: the main thread's affinity mask
//!   (`sched_getaffinity(getpid())`: the main thread's id is the process id) intersected with
//!   the cgroup's effective cpuset where it can be read (cgroup v2: `cpuset.cpus.effective` of
//!   the process's cgroup, named by the `0::` line of `/proc/self/cgroup`, under the sysfs
//!   root's `fs/cgroup`), and with the possible CPUs. An intersection that would be empty
//!   leaves the cgroup out; a set that would be empty is not taken. They change when
//!   [`reread`] finds a new set (`cmwq::refresh_cpus()`, and the monitor, periodically).
//!
//! The online list is read under a reader-writer lock, never on the queueing path: that path
//! indexes pool workqueues by possible CPU ([`Possible::index_of`], fixed) and never asks
//! whether a CPU is online.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use parking_lot::RwLock;

use super::cpu_topology::{parse_cpulist, sysfs_root};

/// Largest CPU id plus one that a `cpu_set_t` holds.
const SETSIZE: usize = libc::CPU_SETSIZE as usize;

/// The possible CPUs, with an online bit per CPU.
pub(crate) struct Possible {
    /// Possible CPU ids, ascending.
    pub(crate) list: Vec<usize>,
    /// `index[cpu]` is the position of `cpu` in `list`.
    index: Vec<Option<usize>>,
    /// Bit `cpu % 64` of word `cpu / 64`: `cpu` is online. Written by [`reread`] (under the
    /// online list's write lock), read Relaxed: a hint for paths that need no exact answer
    /// (the non-strict repatriation), which also find the pools' own state under their locks.
    online_bits: Vec<AtomicU64>,
}

impl Possible {
    /// Position of `cpu` in the possible list, if it is possible.
    #[inline]
    pub(crate) fn index_of(&self, cpu: usize) -> Option<usize> {
        self.index.get(cpu).copied().flatten()
    }

    /// Whether `cpu` is online now (Relaxed: a hint, see `online_bits`).
    pub(crate) fn is_online(&self, cpu: usize) -> bool {
        self.online_bits
            .get(cpu / 64)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (cpu % 64)) != 0)
    }

    fn set_online_bits(&self, online: &[usize]) {
        let mut words = vec![0u64; self.online_bits.len()];
        for &cpu in online {
            words[cpu / 64] |= 1 << (cpu % 64);
        }
        for (w, v) in self.online_bits.iter().zip(words) {
            w.store(v, Ordering::Relaxed);
        }
    }
}

/// The online CPUs, ascending (empty until [`possible`] first runs).
static ONLINE: RwLock<Vec<usize>> = RwLock::new(Vec::new());

/// The possible CPUs (read at first use, which also reads the first online set).
pub(crate) fn possible() -> &'static Possible {
    static POSSIBLE: OnceLock<Possible> = OnceLock::new();
    POSSIBLE.get_or_init(|| {
        let mut online = read_cpu_set();
        if online.is_empty() {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            online = (0..n.min(SETSIZE)).collect();
        }
        let mut list = read_possible().unwrap_or_else(|| (0..configured_cpus()).collect());
        list.extend(online.iter().copied());
        list.retain(|&c| c < SETSIZE);
        list.sort_unstable();
        list.dedup();
        let max = list.last().copied().unwrap_or(0);
        let mut index = vec![None; max + 1];
        for (i, &cpu) in list.iter().enumerate() {
            index[cpu] = Some(i);
        }
        let p = Possible {
            list,
            index,
            online_bits: (0..max / 64 + 1).map(|_| AtomicU64::new(0)).collect(),
        };
        p.set_online_bits(&online);
        *ONLINE.write() = online;
        p
    })
}

/// The online CPUs now, ascending.
pub(crate) fn online() -> Vec<usize> {
    let _ = possible();
    ONLINE.read().clone()
}

/// Whether `cpu` is online now (exact: under the online list's lock).
pub(crate) fn is_online_exact(cpu: usize) -> bool {
    let _ = possible();
    ONLINE.read().binary_search(&cpu).is_ok()
}

/// `mask` cut to the online CPUs, or every online CPU if none of `mask` is online: the CPUs a
/// thread meant for `mask` may be allowed now (never only CPUs that left).
pub(crate) fn restrict_to_online(mask: &[usize]) -> Vec<usize> {
    let online = online();
    let cut: Vec<usize> = mask
        .iter()
        .copied()
        .filter(|c| online.binary_search(c).is_ok())
        .collect();
    if cut.is_empty() {
        online
    } else {
        cut
    }
}

/// A change of the online set.
pub(crate) struct Change {
    pub(crate) old: Vec<usize>,
    pub(crate) new: Vec<usize>,
}

/// Reads the process's CPU set again and makes it the online set; returns the change, if
/// any. Callers serialise (the pool layer's hotplug lock), so that changes are applied to the
/// pools in the order they are made here.
pub(crate) fn reread() -> Option<Change> {
    let p = possible();
    let mut new = read_cpu_set();
    new.retain(|&c| p.index_of(c).is_some());
    if new.is_empty() {
        return None;
    }
    let mut g = ONLINE.write();
    if *g == new {
        return None;
    }
    p.set_online_bits(&new);
    let old = std::mem::replace(&mut *g, new.clone());
    Some(Change { old, new })
}

/// The main thread's affinity mask cut to the cgroup's effective cpuset (module docs);
/// empty if the mask cannot be read.
fn read_cpu_set() -> Vec<usize> {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    let mask = super::topology::affinity_of(pid);
    match cgroup_effective() {
        Some(eff) => {
            let cut: Vec<usize> = mask.iter().copied().filter(|c| eff.contains(c)).collect();
            if cut.is_empty() {
                mask
            } else {
                cut
            }
        }
        None => mask,
    }
}

/// The CPUs of the process's cgroup v2 cpuset (`cpuset.cpus.effective`), if readable. The
/// file's path is found once (a process that moves to another cgroup keeps reading its
/// first one); its content is read each time.
fn cgroup_effective() -> Option<Vec<usize>> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    let path = PATH.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let rel = rel.trim().trim_start_matches('/');
        Some(
            sysfs_root()
                .join("fs/cgroup")
                .join(rel)
                .join("cpuset.cpus.effective"),
        )
    });
    let list = parse_cpulist(&std::fs::read_to_string(path.as_ref()?).ok()?)?;
    (!list.is_empty()).then_some(list)
}

/// The kernel's possible CPUs under the sysfs root, if readable.
fn read_possible() -> Option<Vec<usize>> {
    let text = std::fs::read_to_string(sysfs_root().join("devices/system/cpu/possible")).ok()?;
    parse_cpulist(&text).filter(|l| !l.is_empty())
}

/// The configured CPU count (`_SC_NPROCESSORS_CONF`), at least 1 and at most `CPU_SETSIZE`.
fn configured_cpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    (n.max(1) as usize).min(SETSIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn online_cpus_are_possible_and_indexed() {
        let p = possible();
        let online = online();
        assert!(!online.is_empty());
        assert!(p.list.windows(2).all(|w| w[0] < w[1]));
        for (i, &cpu) in p.list.iter().enumerate() {
            assert_eq!(p.index_of(cpu), Some(i));
        }
        for &cpu in &online {
            assert!(p.index_of(cpu).is_some());
            assert!(p.is_online(cpu));
            assert!(is_online_exact(cpu));
        }
        assert_eq!(p.index_of(100_000), None);
        assert!(!p.is_online(100_000));
    }

    #[test]
    fn restricting_falls_back_to_the_online_set() {
        let online = online();
        assert_eq!(restrict_to_online(&[100_000]), online);
        assert_eq!(restrict_to_online(&online[..1]), online[..1].to_vec());
    }
}
