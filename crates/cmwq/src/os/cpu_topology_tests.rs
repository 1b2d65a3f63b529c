//! Tests of the sysfs reader on fake trees written under the test's own temp folder.

use super::*;
use std::fs;

/// A fresh, empty folder for one test.
fn temp_root(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cmwq-topo-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn list(cpus: &[usize]) -> String {
    let v: Vec<String> = cpus.iter().map(usize::to_string).collect();
    format!("{}\n", v.join(","))
}

/// 16 CPUs: 2 nodes x 2 LLCs x 2 cores x 2 threads, numbered as Linux does on x86 (CPU c and
/// c + 8 are the two threads of core c % 8; cores 0-3 are node 0, LLCs are pairs of cores).
fn two_socket(root: &Path) {
    let cpu = root.join("devices/system/cpu");
    for c in 0..16usize {
        let core = c % 8;
        let smt = [core, core + 8];
        let llc_cores = [core / 2 * 2, core / 2 * 2 + 1];
        let llc: Vec<usize> = llc_cores.iter().flat_map(|&k| [k, k + 8]).collect();
        let d = cpu.join(format!("cpu{c}"));
        write(
            &d.join("topology/thread_siblings_list"),
            &format!("{},{}\n", smt[0], smt[1]),
        );
        // L1d and L2 private to the core, L3 per LLC group; index order is not level order.
        write(&d.join("cache/index3/level"), "3\n");
        write(&d.join("cache/index3/shared_cpu_list"), &list(&llc));
        write(&d.join("cache/index0/level"), "1\n");
        write(
            &d.join("cache/index0/shared_cpu_list"),
            &format!("{}-{}\n", c, c),
        );
        write(&d.join("cache/index2/level"), "2\n");
        write(&d.join("cache/index2/shared_cpu_list"), &list(&smt));
    }
    write(
        &root.join("devices/system/node/node0/cpulist"),
        "0-3,8-11\n",
    );
    write(
        &root.join("devices/system/node/node1/cpulist"),
        "4-7,12-15\n",
    );
    // Not a node folder: ignored.
    write(&root.join("devices/system/node/possible"), "0-1\n");
}

#[test]
fn cpulists_parse() {
    assert_eq!(
        parse_cpulist("0-3,8-11\n"),
        Some(vec![0, 1, 2, 3, 8, 9, 10, 11])
    );
    assert_eq!(parse_cpulist("5"), Some(vec![5]));
    assert_eq!(parse_cpulist("3,1,1-2"), Some(vec![1, 2, 3]));
    assert_eq!(parse_cpulist("\n"), Some(vec![]));
    assert_eq!(parse_cpulist("3-1"), None);
    assert_eq!(parse_cpulist("a"), None);
    assert_eq!(parse_cpulist("0-99999999"), None);
}

#[test]
fn partition_covers_every_cpu_once() {
    let cpus = [0, 1, 2, 3];
    // Inconsistent lists: 1 says {1,2}, 2 says {2,3}; CPU 3 has none.
    let of = [None, Some(vec![1, 2]), Some(vec![2, 3]), None];
    assert_eq!(partition(&cpus, &of), [vec![0], vec![1, 2], vec![3]]);
    // Lists naming CPUs the process does not have are cut down.
    let of = [
        Some(vec![0, 8]),
        Some(vec![1, 9]),
        Some(vec![3, 2, 12]),
        None,
    ];
    assert_eq!(partition(&cpus, &of), [vec![0], vec![1], vec![2, 3]]);
}

#[test]
fn two_socket_smt_layout_groups() {
    let root = temp_root("two-socket");
    two_socket(&root);
    let cpus: Vec<usize> = (0..16).collect();
    let t = Topology::read(&root, &cpus);
    assert_eq!(t.cpus(), &cpus[..]);
    let smt: Vec<Vec<usize>> = (0..8).map(|k| vec![k, k + 8]).collect();
    assert_eq!(t.smt_groups(), &smt[..]);
    assert_eq!(
        t.llc_groups(),
        &[
            vec![0, 1, 8, 9],
            vec![2, 3, 10, 11],
            vec![4, 5, 12, 13],
            vec![6, 7, 14, 15]
        ][..]
    );
    assert_eq!(
        t.node_groups(),
        &[
            vec![0, 1, 2, 3, 8, 9, 10, 11],
            vec![4, 5, 6, 7, 12, 13, 14, 15]
        ][..]
    );

    // A process allowed only some CPUs sees its groups cut down.
    let some = [1, 2, 9, 12];
    let t = Topology::read(&root, &some);
    assert_eq!(t.smt_groups(), &[vec![1, 9], vec![2], vec![12]][..]);
    assert_eq!(t.llc_groups(), &[vec![1, 9], vec![2], vec![12]][..]);
    assert_eq!(t.node_groups(), &[vec![1, 2, 9], vec![12]][..]);
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn missing_files_fall_back_to_one_group_per_cpu() {
    let root = temp_root("missing");
    let cpu = root.join("devices/system/cpu");
    // CPU 0 and 1 say they are siblings; 2 and 3 have no topology folder at all.
    write(&cpu.join("cpu0/topology/thread_siblings_list"), "0-1\n");
    write(&cpu.join("cpu1/topology/thread_siblings_list"), "0-1\n");
    // A cache without a level, one with a malformed list: neither counts.
    write(&cpu.join("cpu0/cache/index0/shared_cpu_list"), "0-3\n");
    write(&cpu.join("cpu1/cache/index3/level"), "3\n");
    write(&cpu.join("cpu1/cache/index3/shared_cpu_list"), "x\n");
    // No node folder.
    let t = Topology::read(&root, &[0, 1, 2, 3]);
    assert_eq!(t.smt_groups(), &[vec![0, 1], vec![2], vec![3]][..]);
    let singles: Vec<Vec<usize>> = (0..4).map(|c| vec![c]).collect();
    assert_eq!(t.llc_groups(), &singles[..]);
    assert_eq!(t.node_groups(), &singles[..]);
    // No tree at all.
    let t = Topology::read(&root.join("nothing"), &[0, 1]);
    assert_eq!(t.smt_groups(), &[vec![0], vec![1]][..]);
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn the_real_machine_reads_as_a_partition() {
    let t = cached();
    for groups in [t.smt_groups(), t.llc_groups(), t.node_groups()] {
        let mut all: Vec<usize> = groups.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, t.cpus());
    }
}

#[test]
fn pods_of_every_scope_on_two_sockets() {
    use crate::AffinityScope;
    let root = temp_root("pods");
    two_socket(&root);
    let cpus: Vec<usize> = (0..16).collect();
    let t = Topology::read(&root, &cpus);
    let singles: Vec<Vec<usize>> = cpus.iter().map(|&c| vec![c]).collect();
    assert_eq!(t.pods(AffinityScope::Cpu), singles);
    assert_eq!(t.pods(AffinityScope::Smt), t.smt_groups());
    assert_eq!(t.pods(AffinityScope::Cache), t.llc_groups());
    assert_eq!(t.pods(AffinityScope::Numa), t.node_groups());
    assert_eq!(t.pods(AffinityScope::System), [cpus]);
    // The configured default is Cache.
    assert_eq!(t.pods(AffinityScope::Default), t.llc_groups());

    // A queue's pods are cut to its cpumask, empty ones dropped.
    let mask = [0, 1, 4, 9, 15];
    let pods = crate::queue::attrs::queue_pods(&t, AffinityScope::Cache, &mask);
    assert_eq!(pods, [vec![0, 1, 9], vec![4], vec![15]]);
    let pods = crate::queue::attrs::queue_pods(&t, AffinityScope::Numa, &mask);
    assert_eq!(pods, [vec![0, 1, 9], vec![4, 15]]);
    let _ = fs::remove_dir_all(&root);
}
