//! `cmwq::topology()` and unbound pods from a fake sysfs tree named by `CMWQ_SYSFS_ROOT`
//! (issue 15). The variable is read at first use, so each scenario runs in a child process:
//! the test writes the tree under its own temp folder and re-executes its test binary with a
//! filter selecting only itself and the variable set.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmwq::{AffinityScope, Work, Workqueue, WqFlags};

/// Set in the child: the scenario to run.
const CHILD_VAR: &str = "CMWQ_TOPO_CHILD";
/// Printed by the child once its scenario passed.
const PASSED: &str = "cmwq-topo-child-passed";

/// Runs the calling test `name` again in a child with `CMWQ_SYSFS_ROOT=root`; fails with the
/// child's output unless it passes within a generous deadline.
fn run_child(name: &str, root: &Path) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, name)
        .env("CMWQ_SYSFS_ROOT", root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        status.success() && text.contains(PASSED),
        "child {name} failed ({status}):\n{text}"
    );
    let _ = fs::remove_dir_all(root);
}

fn is_child(name: &str) -> bool {
    match std::env::var(CHILD_VAR) {
        Ok(which) => {
            assert_eq!(which, name, "child started for another scenario");
            true
        }
        Err(_) => false,
    }
}

fn temp_root(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cmwq-topo-env-{}-{name}", std::process::id()));
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

/// The model of the 16-CPU two-socket layout: CPU c and c + 8 are the threads of core c % 8,
/// cores {0,1},{2,3},{4,5},{6,7} share an LLC, cores 0-3 are node 0.
fn smt_of(c: usize) -> Vec<usize> {
    vec![c % 8, c % 8 + 8]
}
fn llc_of(c: usize) -> Vec<usize> {
    let k = c % 8 / 2 * 2;
    vec![k, k + 1, k + 8, k + 9]
}
fn node_of(c: usize) -> Vec<usize> {
    let k = c % 8 / 4 * 4;
    (k..k + 4).chain(k + 8..k + 12).collect()
}

fn two_socket(root: &Path) {
    let cpu = root.join("devices/system/cpu");
    for c in 0..16 {
        let d = cpu.join(format!("cpu{c}"));
        write(&d.join("topology/thread_siblings_list"), &list(&smt_of(c)));
        write(&d.join("cache/index1/level"), "1\n");
        write(&d.join("cache/index1/shared_cpu_list"), &list(&[c]));
        write(&d.join("cache/index3/level"), "3\n");
        write(&d.join("cache/index3/shared_cpu_list"), &list(&llc_of(c)));
    }
    for n in 0..2 {
        write(
            &root.join(format!("devices/system/node/node{n}/cpulist")),
            &list(&node_of(n * 4)),
        );
    }
}

/// The groups of `of` cut to the process's CPUs (the model's answer for `online_cpus()`).
fn expected(of: fn(usize) -> Vec<usize>) -> Vec<Vec<usize>> {
    let cpus = cmwq::online_cpus();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for &c in &cpus {
        if groups.iter().any(|g| g.contains(&c)) {
            continue;
        }
        let g: Vec<usize> = if c < 16 {
            of(c).into_iter().filter(|x| cpus.contains(x)).collect()
        } else {
            vec![c]
        };
        groups.push(g);
    }
    groups
}

/// The pool each CPU's items run in, for `wq`.
fn pool_per_cpu(wq: &Workqueue) -> BTreeMap<usize, usize> {
    cmwq::online_cpus()
        .into_iter()
        .map(|cpu| {
            let got = Arc::new(Mutex::new(None));
            let g = got.clone();
            let item = Work::new(move |_| {
                *g.lock().unwrap() = Some(cmwq::current_worker().expect("worker").pool_id);
            });
            wq.queue_on(cpu, &item).unwrap();
            item.flush();
            let id = got.lock().unwrap().expect("ran");
            (cpu, id)
        })
        .collect()
}

/// Whether two CPUs share a pool exactly when they share a pod.
fn pools_follow(pools: &BTreeMap<usize, usize>, pods: &[Vec<usize>]) {
    for (&a, &pa) in pools {
        for (&b, &pb) in pools {
            let same_pod = pods.iter().any(|p| p.contains(&a) && p.contains(&b));
            assert_eq!(pa == pb, same_pod, "CPUs {a} and {b}: pods {pods:?}");
        }
    }
}

#[test]
fn two_socket_tree_through_the_environment() {
    const NAME: &str = "two_socket_tree_through_the_environment";
    if !is_child(NAME) {
        let root = temp_root("two-socket");
        two_socket(&root);
        return run_child(NAME, &root);
    }
    let t = cmwq::topology();
    assert_eq!(t.cpus(), cmwq::online_cpus());
    assert_eq!(t.smt_groups(), expected(smt_of));
    assert_eq!(t.llc_groups(), expected(llc_of));
    assert_eq!(t.node_groups(), expected(node_of));
    assert_eq!(t.pods(AffinityScope::Default), expected(llc_of));
    assert_eq!(t.pods(AffinityScope::Smt), expected(smt_of));
    assert_eq!(t.pods(AffinityScope::Numa), expected(node_of));
    // Queues follow the pods of their scope.
    for scope in [
        AffinityScope::Cpu,
        AffinityScope::Smt,
        AffinityScope::Cache,
        AffinityScope::Numa,
        AffinityScope::System,
    ] {
        let wq = Workqueue::builder("topo-env")
            .flags(WqFlags::UNBOUND)
            .affinity_scope(scope)
            .build()
            .unwrap();
        pools_follow(&pool_per_cpu(&wq), &t.pods(scope));
    }
    println!("{PASSED}");
}

#[test]
fn missing_files_give_one_group_per_cpu() {
    const NAME: &str = "missing_files_give_one_group_per_cpu";
    if !is_child(NAME) {
        // Only an empty cpu folder: nothing about any CPU.
        let root = temp_root("missing");
        fs::create_dir_all(root.join("devices/system/cpu")).unwrap();
        return run_child(NAME, &root);
    }
    let t = cmwq::topology();
    let singles: Vec<Vec<usize>> = cmwq::online_cpus().into_iter().map(|c| vec![c]).collect();
    assert_eq!(t.smt_groups(), singles);
    assert_eq!(t.llc_groups(), singles);
    assert_eq!(t.node_groups(), singles);
    // The default scope (Cache) then gives every CPU a pod, and a pool, of its own.
    let wq = Workqueue::new("topo-missing", WqFlags::UNBOUND, 0).unwrap();
    pools_follow(&pool_per_cpu(&wq), &singles);
    println!("{PASSED}");
}
