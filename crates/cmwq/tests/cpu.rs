//! Semantic 3: CPU locality of bound workqueues, invalid CPUs, high-priority pools and worker
//! thread names.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use cmwq::{current_worker, online_cpus, Error, Work, Workqueue, WqFlags};
use common::{current_comm, current_os_cpu, unique, with_deadline, Latch};

/// What a work function saw about the thread it ran on.
#[derive(Clone, Default)]
struct Seen {
    worker_cpu: Option<usize>,
    os_cpu: usize,
    highpri: bool,
    name: String,
    comm: String,
    thread_name: Option<String>,
    pool_id: usize,
    nice: i32,
}

fn recording_item(out: Arc<Mutex<Vec<Seen>>>) -> Work {
    Work::new(move |_| {
        let info = current_worker().expect("current_worker() must be Some on a worker thread");
        out.lock().unwrap().push(Seen {
            worker_cpu: info.cpu,
            os_cpu: current_os_cpu(),
            highpri: info.highpri,
            name: info.name.clone(),
            comm: current_comm(),
            thread_name: std::thread::current().name().map(str::to_string),
            pool_id: info.pool_id,
            nice: info.nice,
        });
    })
}

fn run_on(wq: &Workqueue, cpu: Option<usize>) -> Seen {
    let out = Arc::new(Mutex::new(Vec::new()));
    let item = recording_item(out.clone());
    match cpu {
        Some(cpu) => assert!(wq.queue_on(cpu, &item).unwrap()),
        None => assert!(wq.queue(&item)),
    }
    let i = item.clone();
    // The item may finish before flush looks at it, so flush's result is not checked.
    with_deadline("flush item", move || i.flush());
    let v = out.lock().unwrap();
    assert_eq!(v.len(), 1);
    v[0].clone()
}

/// Parses `kworker/<cpu>:<id>[H]` into (cpu, id, highpri).
fn parse_percpu_name(name: &str) -> Option<(usize, usize, bool)> {
    let rest = name.strip_prefix("kworker/")?;
    let (cpu, id) = rest.split_once(':')?;
    let (id, h) = match id.strip_suffix('H') {
        Some(id) => (id, true),
        None => (id, false),
    };
    Some((cpu.parse().ok()?, id.parse().ok()?, h))
}

/// Parses `kworker/u<pool>:<id>` into (pool, id).
fn parse_unbound_name(name: &str) -> Option<(usize, usize)> {
    let rest = name.strip_prefix("kworker/u")?;
    let (pool, id) = rest.split_once(':')?;
    Some((pool.parse().ok()?, id.parse().ok()?))
}

#[test]
fn online_cpus_is_sane() {
    let cpus = online_cpus();
    assert!(!cpus.is_empty());
    let mut sorted = cpus.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), cpus.len(), "online_cpus() has duplicates");
    assert!(current_worker().is_none(), "not a worker thread");
}

#[test]
fn queue_on_runs_on_that_cpu() {
    let wq = Workqueue::new(&unique("cpu-b"), WqFlags::empty(), 0).unwrap();
    for _round in 0..3 {
        for cpu in online_cpus() {
            let seen = run_on(&wq, Some(cpu));
            assert_eq!(seen.worker_cpu, Some(cpu), "current_worker().cpu");
            assert_eq!(
                seen.os_cpu, cpu,
                "queue_on({cpu}) ran on OS cpu {} (per /proc/thread-self/stat)",
                seen.os_cpu
            );
            assert!(!seen.highpri);
        }
    }
}

#[test]
fn system_wq_queue_on_runs_on_that_cpu() {
    for cpu in online_cpus() {
        let seen = run_on(cmwq::system_wq(), Some(cpu));
        assert_eq!(seen.worker_cpu, Some(cpu));
        assert_eq!(seen.os_cpu, cpu);
    }
}

#[test]
fn queue_on_invalid_cpu_is_an_error_and_item_stays_idle() {
    let wq = Workqueue::new(&unique("cpu-inv"), WqFlags::empty(), 0).unwrap();
    let uwq = Workqueue::new(&unique("cpu-invu"), WqFlags::UNBOUND, 0).unwrap();
    let ran = Arc::new(AtomicBool::new(false));
    let item = {
        let ran = ran.clone();
        Work::new(move |_| ran.store(true, Ordering::SeqCst))
    };
    let max = *online_cpus().iter().max().unwrap();
    for bad in [100_000, usize::MAX, max + 4096] {
        for q in [&wq, &uwq] {
            let r = q.queue_on(bad, &item);
            assert!(
                matches!(r, Err(Error::InvalidCpu { .. })),
                "queue_on({bad}) returned {r:?}"
            );
            assert!(
                !item.is_pending(),
                "item must stay not pending after InvalidCpu"
            );
        }
        let r = cmwq::schedule_work_on(bad, &item);
        assert!(matches!(r, Err(Error::InvalidCpu { .. })), "{r:?}");
        assert!(!item.is_pending());
    }
    assert!(!item.flush(), "never queued: flush returns false");
    assert!(!ran.load(Ordering::SeqCst));
    // The item is still usable.
    assert!(wq.queue_on(online_cpus()[0], &item).unwrap());
    let i = item.clone();
    with_deadline("flush", move || i.flush());
    assert!(ran.load(Ordering::SeqCst));
}

fn check_highpri(seen: &Seen) {
    assert!(seen.highpri, "current_worker().highpri must be true");
    assert!(
        seen.name.ends_with('H'),
        "highpri worker name {:?} must end in 'H'",
        seen.name
    );
    assert!(
        seen.comm.ends_with('H'),
        "highpri OS thread name {:?} must end in 'H'",
        seen.comm
    );
}

#[test]
fn highpri_items_run_on_highpri_workers() {
    let seen = run_on(cmwq::system_highpri_wq(), None);
    check_highpri(&seen);
    assert!(seen.worker_cpu.is_some(), "system_highpri_wq is per-CPU");

    let wq = Workqueue::new(&unique("cpu-hi"), WqFlags::HIGHPRI, 0).unwrap();
    for cpu in online_cpus() {
        let seen = run_on(&wq, Some(cpu));
        check_highpri(&seen);
        assert_eq!(seen.worker_cpu, Some(cpu));
        assert_eq!(seen.os_cpu, cpu);
        let (c, _, h) = parse_percpu_name(&seen.name)
            .unwrap_or_else(|| panic!("bad highpri worker name {:?}", seen.name));
        assert_eq!(c, cpu);
        assert!(h);
    }
    let normal = run_on(cmwq::system_wq(), None);
    assert!(!normal.highpri);
    assert!(!normal.name.ends_with('H'), "{:?}", normal.name);
}

/// The normal pool of CPU c is occupied by an item that waits on a latch without telling the
/// engine it sleeps; a highpri item queued on c must still run meanwhile.
#[test]
fn highpri_items_never_wait_behind_normal_ones() {
    let cpu = online_cpus()[0];
    let normal_wq = Workqueue::new(&unique("cpu-occ"), WqFlags::empty(), 0).unwrap();
    let gate = Arc::new(Latch::new());
    let _release = common::open_on_drop(&[&gate]);
    let started = Arc::new(Latch::new());
    let normal_done = Arc::new(AtomicBool::new(false));
    let hog = {
        let (gate, started, normal_done) = (gate.clone(), started.clone(), normal_done.clone());
        Work::new(move |_| {
            started.open();
            // Deliberately no `blocking`: the pool believes this worker is running.
            let opened = gate.wait_timeout(common::DEADLINE);
            normal_done.store(true, Ordering::SeqCst);
            assert!(opened);
        })
    };
    assert!(normal_wq.queue_on(cpu, &hog).unwrap());
    started.wait();

    let out = Arc::new(Mutex::new(Vec::new()));
    let hi = recording_item(out.clone());
    let hi_wq = Workqueue::new(&unique("cpu-hiq"), WqFlags::HIGHPRI, 0).unwrap();
    assert!(hi_wq.queue_on(cpu, &hi).unwrap());
    let ran = wait_for_len(&out, 1);
    let hog_still_blocked = !normal_done.load(Ordering::SeqCst);
    // Also through the system highpri queue.
    let out2 = Arc::new(Mutex::new(Vec::new()));
    let hi2 = recording_item(out2.clone());
    assert!(cmwq::system_highpri_wq().queue_on(cpu, &hi2).unwrap());
    let ran2 = wait_for_len(&out2, 1);
    let hog_still_blocked2 = !normal_done.load(Ordering::SeqCst);
    gate.open();
    let h = hog.clone();
    with_deadline("flush hog", move || h.flush());

    assert!(
        ran,
        "highpri item did not run while the normal pool of cpu {cpu} was busy"
    );
    assert!(hog_still_blocked);
    assert!(
        ran2,
        "system_highpri_wq item did not run while the normal pool was busy"
    );
    assert!(hog_still_blocked2);
    let seen = out.lock().unwrap()[0].clone();
    check_highpri(&seen);
    assert_eq!(seen.worker_cpu, Some(cpu));
}

fn wait_for_len(v: &Mutex<Vec<Seen>>, n: usize) -> bool {
    common::wait_until(common::DEADLINE, || v.lock().unwrap().len() >= n)
}

#[test]
fn percpu_worker_names() {
    for cpu in online_cpus() {
        for (wq, highpri) in [
            (cmwq::system_wq(), false),
            (cmwq::system_highpri_wq(), true),
        ] {
            let seen = run_on(wq, Some(cpu));
            let (c, _id, h) = parse_percpu_name(&seen.name).unwrap_or_else(|| {
                panic!(
                    "per-CPU worker name {:?} is not kworker/<cpu>:<id>",
                    seen.name
                )
            });
            assert_eq!(c, cpu, "name {:?} names the wrong CPU", seen.name);
            assert_eq!(h, highpri, "name {:?}", seen.name);
            assert!(
                seen.name.len() <= 15,
                "name {:?} longer than 15 bytes",
                seen.name
            );
            assert_eq!(
                seen.comm, seen.name,
                "OS thread name differs from worker name"
            );
            if let Some(t) = &seen.thread_name {
                assert!(t.starts_with("kworker/"), "std thread name {t:?}");
            }
        }
    }
}

#[test]
fn unbound_worker_names() {
    let wq = Workqueue::new(&unique("cpu-un"), WqFlags::UNBOUND, 0).unwrap();
    for seen in [run_on(&wq, None), run_on(cmwq::system_unbound_wq(), None)] {
        let (pool, _id) = parse_unbound_name(&seen.name).unwrap_or_else(|| {
            panic!(
                "unbound worker name {:?} is not kworker/u<pool>:<id>",
                seen.name
            )
        });
        assert!(
            seen.name.len() <= 15,
            "name {:?} longer than 15 bytes",
            seen.name
        );
        if seen.name.len() < 15 {
            assert_eq!(pool, seen.pool_id, "name {:?} vs pool id", seen.name);
        }
        assert_eq!(seen.comm, seen.name);
        assert!(seen.worker_cpu.is_none(), "unbound workers have no cpu");
        assert!(!seen.highpri);
    }
    let ord = Workqueue::ordered(&unique("cpu-ord"), WqFlags::empty()).unwrap();
    let seen = run_on(&ord, None);
    assert!(parse_unbound_name(&seen.name).is_some(), "{:?}", seen.name);
    assert!(seen.worker_cpu.is_none());
}

#[test]
fn unbound_nice_attribute_applies_to_workers() {
    let wq = Workqueue::builder(&unique("cpu-nice"))
        .flags(WqFlags::UNBOUND)
        .nice(5)
        .build()
        .unwrap();
    let seen = run_on(&wq, None);
    assert_eq!(seen.nice, 5, "WorkerInfo.nice");
    assert!(parse_unbound_name(&seen.name).is_some(), "{:?}", seen.name);
    let out = Arc::new(Mutex::new(0));
    let item = {
        let out = out.clone();
        Work::new(move |_| *out.lock().unwrap() = common::current_os_nice())
    };
    assert!(wq.queue(&item));
    let i = item.clone();
    with_deadline("flush", move || i.flush());
    assert_eq!(
        *out.lock().unwrap(),
        5,
        "OS nice value of the worker thread"
    );
}

#[test]
fn unbound_cpumask_restricts_where_items_run() {
    let cpus = online_cpus();
    let only = *cpus.last().unwrap();
    let wq = Workqueue::builder(&unique("cpu-mask"))
        .flags(WqFlags::UNBOUND)
        .cpumask([only])
        .build()
        .unwrap();
    for _ in 0..10 {
        let seen = run_on(&wq, None);
        assert_eq!(
            seen.os_cpu, only,
            "unbound item with cpumask [{only}] ran elsewhere"
        );
    }
}

#[test]
fn current_worker_and_work_are_none_outside_workers() {
    assert!(current_worker().is_none());
    assert!(cmwq::current_work().is_none());
}
