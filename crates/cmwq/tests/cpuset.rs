//! The engine follows the process's CPU set (issue 15; the kernel's CPU hotplug path): pools
//! of CPUs that leave become disassociated (workers unpinned, no concurrency management,
//! items still run), CPUs that come back rebind their workers, the monitor notices a change
//! by itself, `queue_on` takes possible CPUs and refuses others, and the cgroup's cpuset cuts
//! the set.
//!
//! The CPU set is process-wide (the main thread's mask), so every scenario runs in a child
//! process (`harden_util::isolated`). The scenario runs on the child's test thread, which is
//! not the main thread: it changes the set with `sched_setaffinity(getpid(), ..)`. Scenarios
//! that need a fake sysfs tree (`CMWQ_SYSFS_ROOT`, read at first use) write it from the child
//! before the engine's first use.

mod common;
mod harden_util;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmwq::{current_worker, online_cpus, refresh_cpus, Error, Work, Workqueue, WqFlags};
use common::{threads, wait_for, Latch, DEADLINE};
use harden_util::{isolated, must_return, pin_to, PROMPT};

/// The calling thread's OS CPU.
fn os_cpu() -> usize {
    // SAFETY: sched_getcpu has no preconditions.
    unsafe { libc::sched_getcpu() as usize }
}

/// The affinity of the process's main thread (what defines the CPU set).
fn main_affinity() -> Vec<usize> {
    // SAFETY: getpid has no preconditions.
    common::affinity_of(unsafe { libc::getpid() })
}

/// Sets the main thread's affinity (the process's CPU set) to `cpus`.
fn set_main_affinity(cpus: &[usize]) {
    // SAFETY: getpid has no preconditions.
    common::set_affinity(unsafe { libc::getpid() }, cpus);
}

/// Parses a kernel CPU list (`0-2,5`).
fn parse_list(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.parse::<usize>().unwrap()..=b.parse().unwrap()),
            None => out.push(part.parse().unwrap()),
        }
    }
    out
}

/// The CPUs thread `tid` of this process is allowed (`Cpus_allowed_list`), `None` once it
/// has exited.
fn allowed_of(tid: u32) -> Option<Vec<usize>> {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).ok()?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    Some(parse_list(line))
}

/// The calling thread's allowed CPUs.
fn allowed_here() -> Vec<usize> {
    allowed_of(common::current_tid()).expect("own status")
}

/// Every worker thread of CPU `cpu`'s pools (`kworker/<cpu>:<id>[H]`), with its allowed CPUs.
fn workers_of(cpu: usize) -> Vec<(String, Vec<usize>)> {
    let prefix = format!("kworker/{cpu}:");
    threads()
        .into_iter()
        .filter(|(_, name)| name.starts_with(&prefix))
        .filter_map(|(tid, name)| Some((name, allowed_of(tid)?)))
        .collect()
}

/// Whether the pools of `cpu` are shown disassociated (each one listed).
fn disassociated(cpu: usize) -> Vec<bool> {
    cmwq::pools()
        .into_iter()
        .filter(|p| p.cpu == Some(cpu))
        .map(|p| p.disassociated)
        .collect()
}

/// What an item saw: its worker's CPU (pool), the OS CPU and its allowed CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    pool_cpu: Option<usize>,
    os_cpu: usize,
    allowed: Vec<usize>,
}

fn seen_now() -> Seen {
    Seen {
        pool_cpu: current_worker().and_then(|w| w.cpu),
        os_cpu: os_cpu(),
        allowed: allowed_here(),
    }
}

/// An item that records what it saw into `log`.
fn recording_item(log: &Arc<Mutex<Vec<Seen>>>) -> Work {
    let log = log.clone();
    Work::new(move |_| log.lock().unwrap().push(seen_now()))
}

/// Two items that each wait (spinning, on the CPU) until both have started, for at most
/// [`PROMPT`]; the count of those that saw the other start, and the most workers counted in
/// `nr_running` by their pool that one saw once both ran.
fn two_spinners() -> (Work, Work, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let started = Arc::new(AtomicUsize::new(0));
    let met = Arc::new(AtomicUsize::new(0));
    let counted = Arc::new(AtomicUsize::new(0));
    let make = || {
        let (started, met, counted) = (started.clone(), met.clone(), counted.clone());
        Work::new(move |_| {
            started.fetch_add(1, Ordering::SeqCst);
            let t = Instant::now();
            while started.load(Ordering::SeqCst) < 2 && t.elapsed() < PROMPT {
                std::hint::spin_loop();
            }
            if started.load(Ordering::SeqCst) >= 2 {
                met.fetch_add(1, Ordering::SeqCst);
                let me = current_worker().unwrap().pool_id;
                let pool = cmwq::pools().into_iter().find(|p| p.id == me).unwrap();
                counted.fetch_max(pool.nr_running, Ordering::SeqCst);
            }
        })
    };
    (make(), make(), met, counted)
}

fn flush_all(items: &[Work]) {
    let items = items.to_vec();
    must_return("flush the items", DEADLINE, move || {
        for item in &items {
            item.flush();
        }
    });
}

/// No hog detection and no detection of unannounced sleeps: only disassociation may then let
/// a second CPU-bound item start beside a first on one CPU's pool.
fn configure_without_detection() {
    cmwq::configure(cmwq::Config {
        cpu_intensive_thresh: Duration::ZERO,
        detect_blocking: false,
        ..cmwq::Config::default()
    })
    .unwrap();
}

/// The scenario needs CPUs 0 and 1 in the process's set; prints why it skips otherwise.
fn has_two_cpus() -> bool {
    let cpus = main_affinity();
    let ok = cpus.contains(&0) && cpus.contains(&1);
    if !ok {
        println!("skipped: needs CPUs 0 and 1, the process has {cpus:?}");
    }
    ok
}

#[test]
fn shrink_to_one_cpu_and_grow_back() {
    isolated("shrink_to_one_cpu_and_grow_back", || {
        if !has_two_cpus() {
            return;
        }
        // Only disassociation may let a second CPU-bound item start beside the first: no
        // hog detection, no detection of unannounced sleeps.
        configure_without_detection();
        let start = online_cpus();
        assert_eq!(start, main_affinity());

        // On CPU 1: one item blocked, five waiting behind it (max_active 1).
        let limited = Workqueue::new("cpuset-limited", WqFlags::PERCPU, 1).unwrap();
        let (gate, running) = (Arc::new(Latch::new()), Arc::new(Latch::new()));
        let _open = common::open_on_drop(&[&gate]);
        let blocker_tid = Arc::new(AtomicUsize::new(0));
        let blocker = {
            let (gate, running, tid) = (gate.clone(), running.clone(), blocker_tid.clone());
            Work::new(move |_| {
                tid.store(common::current_tid() as usize, Ordering::SeqCst);
                running.open();
                gate.wait();
            })
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let waiting: Vec<Work> = (0..5).map(|_| recording_item(&log)).collect();
        assert_eq!(limited.queue_on(1, &blocker), Ok(true));
        for item in &waiting {
            assert_eq!(limited.queue_on(1, item), Ok(true));
        }
        running.wait();
        let tid = blocker_tid.load(Ordering::SeqCst) as u32;
        assert_eq!(allowed_of(tid), Some(vec![1]), "a bound worker is pinned");

        // An unbound queue whose worker exists before the change.
        let unbound = Workqueue::new("cpuset-unbound", WqFlags::UNBOUND, 0).unwrap();
        let ulog = Arc::new(Mutex::new(Vec::new()));
        let uitem = recording_item(&ulog);
        unbound.queue(&uitem);
        flush_all(std::slice::from_ref(&uitem));

        // Shrink the set to CPU 0.
        set_main_affinity(&[0]);
        assert!(refresh_cpus(), "the set changed");
        assert_eq!(online_cpus(), [0]);
        assert!(!refresh_cpus(), "no change the second time");
        // The topology and new unbound queues follow; existing unbound queues keep their
        // attributes (no `wq_update_pod`).
        assert_eq!(cmwq::topology().cpus(), [0]);
        let later = Workqueue::new("cpuset-later", WqFlags::UNBOUND, 0).unwrap();
        assert_eq!(later.attrs().cpumask, [0]);
        assert_eq!(unbound.attrs().cpumask, start);
        // CPU 1's normal pool (its high-priority one, never used, is not listed now).
        assert_eq!(disassociated(1), [true]);
        assert_eq!(disassociated(0), [false, false]);
        assert!(cmwq::show_all_workqueues().contains("cpus=1 DISASSOCIATED"));
        // The blocked item's worker, and every worker of CPU 1, may run on CPU 0 only now.
        assert_eq!(allowed_of(tid), Some(vec![0]), "the blocked item's worker");
        let workers = workers_of(1);
        assert!(!workers.is_empty());
        assert!(workers.iter().all(|(_, a)| *a == [0]), "{workers:?}");

        // Everything queued on CPU 1 runs, on CPU 1's pool, on CPU 0.
        gate.open();
        let mut all = waiting.clone();
        all.push(blocker.clone());
        flush_all(&all);
        let ran = log.lock().unwrap().clone();
        assert_eq!(ran.len(), 5, "{ran:?}");
        let expect = Seen {
            pool_cpu: Some(1),
            os_cpu: 0,
            allowed: vec![0],
        };
        assert!(ran.iter().all(|s| *s == expect), "{ran:?}");

        // queue_on(1) still runs there; concurrency management is off: two CPU-bound items
        // both start.
        let free = Workqueue::new("cpuset-free", WqFlags::PERCPU, 0).unwrap();
        let (a, b, met, counted) = two_spinners();
        assert_eq!(free.queue_on(1, &a), Ok(true));
        assert_eq!(free.queue_on(1, &b), Ok(true));
        flush_all(&[a, b]);
        assert_eq!(
            met.load(Ordering::SeqCst),
            2,
            "both started on the disassociated pool"
        );
        // Including a worker made after the change (the pool had one idle spare at most).
        assert_eq!(
            counted.load(Ordering::SeqCst),
            0,
            "nobody counted in nr_running"
        );

        // The unbound worker is kept on online CPUs.
        let uitem = recording_item(&ulog);
        unbound.queue(&uitem);
        flush_all(&[uitem]);
        assert_eq!(ulog.lock().unwrap().last().unwrap().allowed, [0]);

        // queue() from a thread on an online CPU is unaffected.
        let here = must_return("queue from CPU 0", DEADLINE, move || {
            pin_to(0);
            let log = Arc::new(Mutex::new(Vec::new()));
            let item = recording_item(&log);
            free.queue(&item);
            item.flush();
            let seen = log.lock().unwrap()[0].clone();
            seen
        });
        assert_eq!(here.pool_cpu, Some(0));

        // Grow it back: CPU 1's workers are pinned to CPU 1 again.
        set_main_affinity(&start);
        assert!(refresh_cpus());
        assert_eq!(online_cpus(), start);
        assert_eq!(cmwq::topology().cpus(), start);
        assert_eq!(disassociated(1), [false, false]);
        assert_eq!(allowed_of(tid), Some(vec![1]), "the same worker, rebound");
        let workers = workers_of(1);
        assert!(workers.iter().all(|(_, a)| *a == [1]), "{workers:?}");
        let item = recording_item(&log);
        assert_eq!(limited.queue_on(1, &item), Ok(true));
        flush_all(&[item]);
        let last = log.lock().unwrap().last().unwrap().clone();
        let expect = Seen {
            pool_cpu: Some(1),
            os_cpu: 1,
            allowed: vec![1],
        };
        assert_eq!(last, expect);
        println!("CHILD OK");
    });
}

#[test]
fn bound_again_cpu_has_concurrency_management() {
    isolated("bound_again_cpu_has_concurrency_management", || {
        if !has_two_cpus() {
            return;
        }
        configure_without_detection();
        let start = online_cpus();
        let wq = Workqueue::new("cpuset-cm", WqFlags::PERCPU, 0).unwrap();
        set_main_affinity(&[0]);
        assert!(refresh_cpus());
        set_main_affinity(&start);
        assert!(refresh_cpus());
        // Bound again: the kernel's rule holds, the second CPU-bound item waits for the first.
        let order = Arc::new(Mutex::new(Vec::new()));
        let make = |tag: u8, spin: Duration| {
            let order = order.clone();
            Work::new(move |_| {
                order.lock().unwrap().push((tag, 's'));
                let t = Instant::now();
                while t.elapsed() < spin {
                    std::hint::spin_loop();
                }
                order.lock().unwrap().push((tag, 'e'));
            })
        };
        let (a, b) = (make(1, Duration::from_millis(200)), make(2, Duration::ZERO));
        assert_eq!(wq.queue_on(1, &a), Ok(true));
        assert_eq!(wq.queue_on(1, &b), Ok(true));
        flush_all(&[a, b]);
        let order = order.lock().unwrap().clone();
        assert_eq!(order, [(1, 's'), (1, 'e'), (2, 's'), (2, 'e')]);
        println!("CHILD OK");
    });
}

#[test]
fn the_monitor_notices_a_change() {
    isolated("the_monitor_notices_a_change", || {
        if !has_two_cpus() {
            return;
        }
        let start = online_cpus();
        // Start the engine (and its monitor).
        let item = Work::new(|_| {});
        cmwq::system_wq().queue_on(1, &item).unwrap();
        flush_all(&[item]);
        set_main_affinity(&[0]);
        wait_for("the monitor to see the set shrink", || online_cpus() == [0]);
        wait_for("CPU 1's pools to be disassociated", || {
            disassociated(1).iter().all(|d| *d)
        });
        set_main_affinity(&start);
        wait_for("the monitor to see the set grow", || online_cpus() == start);
        assert!(disassociated(1).iter().all(|d| !d));
        println!("CHILD OK");
    });
}

#[test]
fn changes_while_items_stream_lose_nothing_and_run_nothing_twice() {
    isolated(
        "changes_while_items_stream_lose_nothing_and_run_nothing_twice",
        || {
            if !has_two_cpus() {
                return;
            }
            let start = online_cpus();
            let wq = Workqueue::new("cpuset-stream", WqFlags::PERCPU, 0).unwrap();
            let unbound = Workqueue::new("cpuset-stream-u", WqFlags::UNBOUND, 0).unwrap();
            const N: usize = 3000;
            let runs: Arc<Vec<AtomicUsize>> =
                Arc::new((0..N).map(|_| AtomicUsize::new(0)).collect());
            let items: Vec<Work> = (0..N)
                .map(|i| {
                    let runs = runs.clone();
                    Work::new(move |_| {
                        runs[i].fetch_add(1, Ordering::SeqCst);
                        if i % 7 == 0 {
                            // Some sleep, with and without the hint.
                            std::thread::sleep(Duration::from_micros(200));
                        } else if i % 11 == 0 {
                            cmwq::blocking(|| std::thread::sleep(Duration::from_micros(200)));
                        }
                    })
                })
                .collect();
            let producer = {
                let (items, wq, unbound) = (items.clone(), wq.clone(), unbound.clone());
                std::thread::spawn(move || {
                    for (i, item) in items.iter().enumerate() {
                        let queued = match i % 4 {
                            0 => wq.queue_on(0, item).unwrap(),
                            1 => wq.queue_on(1, item).unwrap(),
                            2 => wq.queue(item),
                            _ => unbound.queue(item),
                        };
                        assert!(queued, "item {i} was idle");
                    }
                })
            };
            // Changes all along the stream, and at least 20 of them.
            let mut round = 0;
            while round < 20 || !producer.is_finished() {
                set_main_affinity(if round % 2 == 0 { &[0] } else { &start });
                assert!(refresh_cpus(), "round {round} changed the set");
                round += 1;
            }
            set_main_affinity(&start);
            refresh_cpus();
            must_return("the producer", DEADLINE, move || producer.join().unwrap());
            flush_all(&items);
            let counts: Vec<usize> = runs.iter().map(|r| r.load(Ordering::SeqCst)).collect();
            assert!(counts.iter().all(|&c| c == 1), "runs per item: {counts:?}");
            assert_eq!(online_cpus(), start);
            assert_eq!(cmwq::invariant_violations(), 0);
            println!("CHILD OK");
        },
    );
}

#[test]
fn refresh_before_first_use_leaves_the_configuration_open() {
    isolated(
        "refresh_before_first_use_leaves_the_configuration_open",
        || {
            if !has_two_cpus() {
                return;
            }
            let start = online_cpus();
            assert!(!refresh_cpus(), "no change since the first read");
            // A change before the engine's first use: nothing to move, nothing fixed.
            set_main_affinity(&[0]);
            assert!(refresh_cpus());
            assert_eq!(online_cpus(), [0]);
            cmwq::configure(cmwq::Config::default()).expect("configure after refresh_cpus");
            // The pools are made with the set of their time: CPU 1's disassociated.
            let log = Arc::new(Mutex::new(Vec::new()));
            let item = recording_item(&log);
            assert_eq!(cmwq::system_wq().queue_on(1, &item), Ok(true));
            flush_all(std::slice::from_ref(&item));
            assert_eq!(log.lock().unwrap()[0].allowed, [0]);
            assert_eq!(disassociated(1), [true]);
            set_main_affinity(&start);
            assert!(refresh_cpus());
            assert_eq!(disassociated(1), [false, false]);
            println!("CHILD OK");
        },
    );
}

/// A fake sysfs tree under the temp folder, set as `CMWQ_SYSFS_ROOT` (before the engine's
/// first use), with `devices/system/cpu/possible` saying `possible`.
fn fake_root(name: &str, possible: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("cmwq-cpuset-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let cpu = root.join("devices/system/cpu");
    std::fs::create_dir_all(&cpu).unwrap();
    std::fs::write(cpu.join("possible"), possible).unwrap();
    // The child has only the test thread and libtest's main thread, which reads no
    // environment meanwhile.
    std::env::set_var("CMWQ_SYSFS_ROOT", &root);
    root
}

#[test]
fn possible_cpus_that_are_not_online() {
    isolated("possible_cpus_that_are_not_online", || {
        if main_affinity().iter().any(|&c| c >= 255) {
            println!("skipped: the machine has CPU 255");
            return;
        }
        let root = fake_root("possible", "0-255\n");
        let online = online_cpus();
        assert_eq!(online, main_affinity());
        // CPU 255 is possible: its (disassociated) pool runs the item, on an online CPU.
        let wq = Workqueue::new("cpuset-possible", WqFlags::PERCPU, 0).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let item = recording_item(&log);
        assert_eq!(wq.queue_on(255, &item), Ok(true));
        flush_all(std::slice::from_ref(&item));
        let seen = log.lock().unwrap()[0].clone();
        assert_eq!(seen.pool_cpu, Some(255));
        assert_eq!(seen.allowed, online);
        assert!(online.contains(&seen.os_cpu));
        assert_eq!(disassociated(255), [true]);
        // A possible CPU never used and not online is left out of the pool list.
        assert!(disassociated(254).is_empty());
        // CPU 256 is not possible.
        assert_eq!(wq.queue_on(256, &item), Err(Error::InvalidCpu { cpu: 256 }));
        assert_eq!(
            wq.queue_on(usize::MAX, &item),
            Err(Error::InvalidCpu { cpu: usize::MAX })
        );
        // work_on_cpu and schedule_on_each_cpu follow the online CPUs.
        assert_eq!(
            cmwq::work_on_cpu(255, || ()),
            Err(Error::InvalidCpu { cpu: 255 })
        );
        assert_eq!(
            cmwq::work_on_cpu(online[0], || current_worker().and_then(|w| w.cpu)),
            Ok(Some(online[0]))
        );
        let covered = Mutex::new(Vec::new());
        cmwq::schedule_on_each_cpu(|| {
            covered
                .lock()
                .unwrap()
                .push(current_worker().and_then(|w| w.cpu).unwrap());
        })
        .unwrap();
        let mut covered = covered.into_inner().unwrap();
        covered.sort_unstable();
        assert_eq!(covered, online);
        let _ = std::fs::remove_dir_all(root);
        println!("CHILD OK");
    });
}

#[test]
fn the_cgroup_cpuset_cuts_the_set() {
    isolated("the_cgroup_cpuset_cuts_the_set", || {
        if !has_two_cpus() {
            return;
        }
        let Some(rel) = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("0::").map(str::to_owned))
            })
        else {
            println!("skipped: no cgroup v2 line in /proc/self/cgroup");
            return;
        };
        let root = fake_root("cgroup", "0-1\n");
        let dir = root
            .join("fs/cgroup")
            .join(rel.trim().trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("cpuset.cpus.effective");
        std::fs::write(&file, "0\n").unwrap();
        // The main thread may run on 0 and 1; the cgroup allows CPU 0.
        assert_eq!(online_cpus(), [0]);
        assert_eq!(disassociated(1), Vec::<bool>::new(), "never used yet");
        // CPU 1 was never online: its pool is disassociated from the start.
        let log = Arc::new(Mutex::new(Vec::new()));
        let item = recording_item(&log);
        assert_eq!(cmwq::system_wq().queue_on(1, &item), Ok(true));
        flush_all(std::slice::from_ref(&item));
        assert_eq!(log.lock().unwrap()[0].allowed, [0]);
        assert_eq!(disassociated(1), [true]);
        // The cgroup gets CPU 1: it is new to the engine, and its pool binds.
        std::fs::write(&file, "0-1\n").unwrap();
        assert!(refresh_cpus());
        assert_eq!(online_cpus(), [0, 1]);
        assert_eq!(disassociated(1), [false, false]);
        assert_eq!(cmwq::system_wq().queue_on(1, &item), Ok(true));
        flush_all(&[item]);
        let seen = log.lock().unwrap()[1].clone();
        let expect = Seen {
            pool_cpu: Some(1),
            os_cpu: 1,
            allowed: vec![1],
        };
        assert_eq!(seen, expect);
        // An intersection that would be empty leaves the cgroup out.
        set_main_affinity(&[0]);
        std::fs::write(&file, "1\n").unwrap();
        assert!(refresh_cpus());
        assert_eq!(online_cpus(), [0]);
        let _ = std::fs::remove_dir_all(root);
        println!("CHILD OK");
    });
}
