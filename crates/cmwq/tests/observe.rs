//! Observability: counters exact at quiescence, `congested`, the pools view, the state dump,
//! `set_worker_desc`, the Prometheus text.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use cmwq::{Work, Workqueue, WqFlags};
use common::{counting_item, unique, wait_for, Blocker};

#[test]
fn counters_are_exact_at_quiescence() {
    for flags in [WqFlags::empty(), WqFlags::UNBOUND] {
        let wq = Workqueue::new(&unique("stats"), flags, 0).unwrap();
        let items: Vec<_> = (0..50).map(|_| counting_item()).collect();
        for (item, _) in &items {
            assert!(wq.queue(item));
        }
        wq.flush();
        let runs: usize = items.iter().map(|(_, r)| r.load(Ordering::SeqCst)).sum();
        let s = wq.stats();
        assert_eq!(s.total, runs as u64, "{flags:?}");
        assert_eq!(s.completed, s.total);
        assert_eq!((s.in_flight, s.pending, s.inactive), (0, 0, 0));
        assert_eq!(s.max_active, cmwq::WQ_DFL_ACTIVE);
        // A cancelled item is not counted as started.
        let blocker = Blocker::new();
        let (late, _) = counting_item();
        let ordered = Workqueue::ordered(&unique("stats_o"), WqFlags::empty()).unwrap();
        assert!(ordered.queue(&blocker.item));
        blocker.started.wait();
        assert!(ordered.queue(&late));
        let s = ordered.stats();
        assert_eq!((s.total, s.in_flight, s.inactive), (1, 1, 1));
        assert!(late.cancel());
        blocker.gate.open();
        ordered.flush();
        let s = ordered.stats();
        assert_eq!(
            (s.total, s.completed, s.in_flight, s.inactive),
            (1, 1, 0, 0)
        );
    }
}

#[test]
fn cm_wakeups_count_blocking_items_that_woke_another() {
    // The CPU's pool may run more than one item at once for a while after earlier tests (a
    // raised concurrency target): then the other item starts without a wake-up. Rounds are
    // repeated until one shows the kernel's case; one wake-up counted is the pass.
    let wq = Workqueue::new(&unique("cmw"), WqFlags::empty(), 0).unwrap();
    let cpu = cmwq::online_cpus()[0];
    for _round in 0..50 {
        let gate = std::sync::Arc::new(common::Latch::new());
        let queued = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, q) = (gate.clone(), queued.clone());
        // Runs (counted in nr_running, so the other item waits) until the other item is
        // queued, then sleeps with the hint: the pool wakes a worker for it (a CMW).
        let sleeper = Work::new(move |_| {
            while !q.load(Ordering::SeqCst) {
                std::hint::spin_loop();
            }
            cmwq::blocking(|| g.wait_blocking());
        });
        let (other, runs) = counting_item();
        assert!(wq.queue_on(cpu, &sleeper).unwrap());
        wait_for("the sleeper to run", || sleeper.busy().running);
        assert!(wq.queue_on(cpu, &other).unwrap());
        queued.store(true, Ordering::SeqCst);
        wait_for("the other item to run", || runs.load(Ordering::SeqCst) == 1);
        gate.open();
        wq.flush();
        if wq.stats().cm_wakeups >= 1 {
            return;
        }
    }
    panic!("no CMW counted in 50 rounds: {:?}", wq.stats());
}

#[test]
fn cpu_intensive_counts_a_hog() {
    let wq = Workqueue::new(&unique("hog"), WqFlags::empty(), 0).unwrap();
    let hog = Work::new(|_| common::burn(Duration::from_millis(60)));
    assert!(wq.queue(&hog));
    wq.flush();
    let s = wq.stats();
    assert_eq!(s.cpu_intensive, 1, "{s:?}");
    assert!(s.cpu_time > Duration::ZERO, "sampled CPU time: {s:?}");
}

#[test]
fn congested_exactly_while_items_wait_inactive() {
    let wq = Workqueue::new(&unique("cong"), WqFlags::UNBOUND, 1).unwrap();
    assert!(!wq.congested(None));
    let blocker = Blocker::new();
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    assert!(!wq.congested(None), "one active item, nothing waiting");
    let (item, _) = counting_item();
    assert!(wq.queue(&item));
    assert!(wq.congested(None));
    blocker.gate.open();
    wq.flush();
    assert!(!wq.congested(None));
    // Per-CPU: the CPU's own pwq.
    let cpu = cmwq::online_cpus()[0];
    let pc = Workqueue::new(&unique("cong_pc"), WqFlags::empty(), 1).unwrap();
    let blocker = Blocker::new();
    assert!(pc.queue_on(cpu, &blocker.item).unwrap());
    blocker.started.wait();
    assert!(pc.queue_on(cpu, &item).unwrap());
    assert!(pc.congested(Some(cpu)));
    if let Some(&other) = cmwq::online_cpus().get(1) {
        assert!(!pc.congested(Some(other)));
    }
    blocker.gate.open();
    pc.flush();
    assert!(!pc.congested(Some(cpu)));
}

#[test]
fn the_dump_and_pools_name_a_busy_item_with_its_description() {
    let name = unique("dumpq");
    let wq = Workqueue::new(&name, WqFlags::UNBOUND, 0).unwrap();
    let gate = std::sync::Arc::new(common::Latch::new());
    let started = std::sync::Arc::new(common::Latch::new());
    let (g, s) = (gate.clone(), started.clone());
    let busy = Work::new(move |_| {
        cmwq::set_worker_desc("scrubbing disk 3");
        s.open();
        g.wait_blocking();
    });
    assert!(wq.queue(&busy));
    started.wait();
    let dump = cmwq::show_workqueues();
    assert!(dump.contains(&format!("workqueue {name}")), "{dump}");
    assert!(dump.contains("in-flight: kworker/u"), "{dump}");
    assert!(dump.contains("scrubbing disk 3"), "{dump}");
    assert!(
        dump.contains("the_dump_and_pools_name_a_busy_item"),
        "function: {dump}"
    );
    let worker = cmwq::pools()
        .into_iter()
        .flat_map(|p| p.busy)
        .find(|b| b.workqueue == name)
        .expect("the busy worker is listed");
    assert_eq!(worker.desc.as_deref(), Some("scrubbing disk 3"));
    assert!(worker.thread.starts_with("kworker/u"));
    gate.open();
    wq.flush();
    let dump = cmwq::show_workqueues();
    assert!(
        !dump.contains(&format!("workqueue {name}")),
        "idle queues are left out: {dump}"
    );
    assert!(cmwq::show_all_workqueues().contains(&format!("workqueue {name}")));
}

#[test]
fn the_description_ends_with_the_item() {
    let wq = Workqueue::new(&unique("desc"), WqFlags::UNBOUND, 1).unwrap();
    let first = Work::new(|_| cmwq::set_worker_desc("first"));
    assert!(wq.queue(&first));
    wq.flush();
    let b = Blocker::new();
    assert!(wq.queue(&b.item));
    b.started.wait();
    let listed = cmwq::pools()
        .into_iter()
        .flat_map(|p| p.busy)
        .find(|w| w.workqueue == wq.name())
        .expect("busy worker");
    assert_eq!(listed.desc, None);
    // Outside a work item it does nothing.
    cmwq::set_worker_desc("nobody");
}

/// One sample line: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Parses the Prometheus text format's lines: comments, and `name{labels} value`.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            let kind = line.split_whitespace().nth(3);
            if line.starts_with("# TYPE ") {
                assert!(matches!(kind, Some("counter" | "gauge")), "{line}");
            }
            continue;
        }
        let (name, rest) = line.split_once('{').expect("labels");
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'));
        let (labels, value) = rest.rsplit_once("} ").expect("value");
        let mut parsed = Vec::new();
        let mut chars = labels.chars().peekable();
        while chars.peek().is_some() {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert_eq!(chars.next(), Some('"'), "{line}");
            let mut val = String::new();
            loop {
                match chars.next().expect("closing quote") {
                    '\\' => match chars.next().expect("escape") {
                        'n' => val.push('\n'),
                        c => val.push(c),
                    },
                    '"' => break,
                    c => val.push(c),
                }
            }
            parsed.push((key, val));
            if chars.peek() == Some(&',') {
                chars.next();
            }
        }
        samples.push((name.to_string(), parsed, value.parse().expect("a number")));
    }
    samples
}

#[test]
fn prometheus_text_parses_and_matches_the_stats() {
    let name = format!("{}\"odd\\name\n", unique("prom"));
    let wq = Workqueue::new(&name, WqFlags::UNBOUND, 0).unwrap();
    for _ in 0..7 {
        let (item, _) = counting_item();
        wq.queue(&item);
    }
    wq.flush();
    let samples = parse_prometheus(&cmwq::prometheus_text());
    let total = samples
        .iter()
        .find(|(n, labels, _)| {
            n == "cmwq_workqueue_total"
                && labels.iter().any(|(k, v)| k == "workqueue" && *v == name)
        })
        .expect("the queue's total");
    assert_eq!(total.2, 7.0);
    assert!(samples
        .iter()
        .any(|(n, l, v)| n == "cmwq_workqueue_max_active"
            && l.iter().any(|(_, v2)| *v2 == name)
            && *v == cmwq::WQ_DFL_ACTIVE as f64));
}
