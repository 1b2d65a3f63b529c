//! The demonstration: each section exercises one guarantee on the embedded workload and
//! checks it, printing what it saw.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmwq::{Work, Workqueue, WqFlags};

/// The embedded default workload.
struct Workload {
    /// Empty items for the throughput section.
    throughput_items: usize,
    /// Items of the ordered-queue section.
    ordered_items: usize,
    /// Sleeping items queued on one CPU in the blocking section, and their sleep.
    blocking_items: usize,
    blocking_sleep: Duration,
    /// max_active of the throttling section.
    max_active: usize,
}

const DEFAULT: Workload = Workload {
    throughput_items: 200_000,
    ordered_items: 1_000,
    blocking_items: 8,
    blocking_sleep: Duration::from_millis(50),
    max_active: 2,
};

struct Report {
    failures: usize,
}

impl Report {
    fn line(&mut self, ok: bool, section: &str, detail: String) {
        if !ok {
            self.failures += 1;
        }
        println!(
            "  [{}] {section:<22} {detail}",
            if ok { " ok " } else { "FAIL" }
        );
    }
}

pub fn run(scale: usize) -> bool {
    let w = Workload {
        throughput_items: DEFAULT.throughput_items * scale,
        ordered_items: DEFAULT.ordered_items * scale,
        ..DEFAULT
    };
    let cpus = cmwq::online_cpus();
    println!("cmwq demo: concurrency-managed workqueues, Linux CMWQ semantics in user space");
    println!("  CPUs in this process's affinity mask: {cpus:?}");
    println!();
    let mut r = Report { failures: 0 };
    let t0 = Instant::now();
    coalescing(&mut r);
    per_cpu(&mut r, &cpus);
    reentrancy(&mut r, &cpus);
    throughput(&mut r, &w);
    ordered(&mut r, &w);
    max_active(&mut r, &w, cpus[0]);
    blocking(&mut r, &w, cpus[0]);
    flush_and_cancel(&mut r);
    panics(&mut r);
    println!();
    println!(
        "{} in {:.2?}: {} check(s) failed",
        if r.failures == 0 {
            "all good"
        } else {
            "PROBLEMS"
        },
        t0.elapsed(),
        r.failures
    );
    r.failures == 0
}

fn counter_work(n: &Arc<AtomicUsize>) -> Work {
    let n = n.clone();
    Work::new(move |_| {
        n.fetch_add(1, Ordering::Relaxed);
    })
}

fn coalescing(r: &mut Report) {
    let wq = Workqueue::new("demo_coalesce", WqFlags::UNBOUND, 0).expect("create");
    let gate = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let (g, n) = (gate.clone(), runs.clone());
    let blocker = Work::new(move |_| {
        while !g.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
    });
    let item = Work::new(move |_| {
        n.fetch_add(1, Ordering::Relaxed);
    });
    // Ordered behind the blocker so the item stays pending while we queue it again.
    let o = Workqueue::ordered("demo_coalesce_o", WqFlags::empty()).expect("create");
    o.queue(&blocker);
    let results: Vec<bool> = (0..5).map(|_| o.queue(&item)).collect();
    gate.store(true, Ordering::Release);
    o.flush();
    let ran = runs.load(Ordering::Relaxed);
    r.line(
        results == [true, false, false, false, false] && ran == 1,
        "coalescing",
        format!("queue() x5 on a pending item returned {results:?}; it ran {ran} time(s)"),
    );
    drop(wq);
}

fn per_cpu(r: &mut Report, cpus: &[usize]) {
    let wq = Workqueue::new("demo_percpu", WqFlags::empty(), 0).expect("create");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut ok = true;
    for &cpu in cpus {
        let s = seen.clone();
        let work = Work::new(move |_| {
            let info = cmwq::current_worker().expect("on a worker");
            s.lock().unwrap().push((info.cpu, info.name));
        });
        ok &= wq.queue_on(cpu, &work).expect("cpu is online");
        work.flush();
    }
    let seen = seen.lock().unwrap().clone();
    ok &= seen
        .iter()
        .zip(cpus)
        .all(|((c, _), want)| *c == Some(*want));
    let names: Vec<&str> = seen.iter().map(|(_, n)| n.as_str()).collect();
    r.line(ok, "queue_on(cpu)", format!("ran on workers {names:?}"));
    let bad = wq.queue_on(usize::MAX >> 1, &Work::new(|_| {}));
    r.line(
        bad.is_err(),
        "queue_on(bad cpu)",
        bad.err().map_or("accepted!".into(), |e| e.to_string()),
    );
    let hp = Arc::new(Mutex::new(None));
    let h = hp.clone();
    let work = Work::new(move |_| *h.lock().unwrap() = cmwq::current_worker());
    cmwq::system_highpri_wq().queue(&work);
    work.flush();
    let info = hp.lock().unwrap().clone().expect("ran");
    r.line(
        info.highpri && info.name.ends_with('H'),
        "highpri pool",
        format!("ran on {} (nice {} requested)", info.name, info.nice),
    );
}

fn reentrancy(r: &mut Report, cpus: &[usize]) {
    let wq = Workqueue::new("demo_reentrancy", WqFlags::empty(), 0).expect("create");
    let running = Arc::new(AtomicUsize::new(0));
    let overlap = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let (ru, ov, n) = (running.clone(), overlap.clone(), runs.clone());
    let work = Work::new(move |_| {
        if ru.fetch_add(1, Ordering::SeqCst) != 0 {
            ov.store(true, Ordering::SeqCst);
        }
        n.fetch_add(1, Ordering::Relaxed);
        std::hint::black_box((0..2_000).sum::<u64>());
        ru.fetch_sub(1, Ordering::SeqCst);
    });
    let mut queued = 0;
    for i in 0..2_000 {
        let cpu = cpus[i % cpus.len()];
        if wq.queue_on(cpu, &work).expect("online") {
            queued += 1;
        }
        // Let it start, so the next queue (on another CPU) lands while it runs.
        while work.is_pending() {
            std::hint::spin_loop();
        }
    }
    wq.flush();
    let ran = runs.load(Ordering::Relaxed);
    r.line(
        !overlap.load(Ordering::SeqCst) && ran == queued,
        "non-reentrancy",
        format!("queued on alternating CPUs: {queued} accepted, {ran} runs, never two at once"),
    );
}

fn throughput(r: &mut Report, w: &Workload) {
    for (name, flags) in [("bound", WqFlags::empty()), ("unbound", WqFlags::UNBOUND)] {
        let wq = Workqueue::new("demo_throughput", flags, 0).expect("create");
        let n = Arc::new(AtomicUsize::new(0));
        let items: Vec<Work> = (0..w.throughput_items).map(|_| counter_work(&n)).collect();
        let t = Instant::now();
        for item in &items {
            wq.queue(item);
        }
        let produced = t.elapsed();
        wq.flush();
        let total = t.elapsed();
        let per = |d: Duration| d.as_nanos() as f64 / w.throughput_items as f64;
        r.line(
            n.load(Ordering::Relaxed) == w.throughput_items,
            &format!("throughput ({name})"),
            format!(
                "{} existing items: queue() {:.0} ns/item, queue-to-done {:.0} ns/item (one run, this machine)",
                w.throughput_items,
                per(produced),
                per(total)
            ),
        );
    }
}

fn ordered(r: &mut Report, w: &Workload) {
    let wq = Workqueue::ordered("demo_ordered", WqFlags::empty()).expect("create");
    let order = Arc::new(Mutex::new(Vec::new()));
    let items: Vec<Work> = (0..w.ordered_items)
        .map(|i| {
            let o = order.clone();
            Work::new(move |_| o.lock().unwrap().push(i))
        })
        .collect();
    for item in &items {
        wq.queue(item);
    }
    wq.flush();
    let got = order.lock().unwrap().clone();
    r.line(
        got == (0..w.ordered_items).collect::<Vec<_>>(),
        "ordered queue",
        format!("{} items ran one at a time in queueing order", got.len()),
    );
}

fn max_active(r: &mut Report, w: &Workload, cpu: usize) {
    let wq = Workqueue::new("demo_max_active", WqFlags::empty(), w.max_active).expect("create");
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let items: Vec<Work> = (0..8)
        .map(|_| {
            let (a, p) = (active.clone(), peak.clone());
            Work::new(move |_| {
                let now = a.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                cmwq::blocking(|| std::thread::sleep(Duration::from_millis(10)));
                a.fetch_sub(1, Ordering::SeqCst);
            })
        })
        .collect();
    for item in &items {
        wq.queue_on(cpu, item).expect("online");
    }
    wq.flush();
    let peak = peak.load(Ordering::SeqCst);
    r.line(
        peak <= w.max_active,
        "max_active",
        format!(
            "8 sleeping items on cpu {cpu} with max_active {}: at most {peak} active at once",
            w.max_active
        ),
    );
}

fn blocking(r: &mut Report, w: &Workload, cpu: usize) {
    let wq = Workqueue::new("demo_blocking", WqFlags::empty(), 0).expect("create");
    let items: Vec<Work> = (0..w.blocking_items)
        .map(|_| {
            let d = w.blocking_sleep;
            Work::new(move |_| cmwq::blocking(|| std::thread::sleep(d)))
        })
        .collect();
    let t = Instant::now();
    for item in &items {
        wq.queue_on(cpu, item).expect("online");
    }
    wq.flush();
    let took = t.elapsed();
    let serial = w.blocking_sleep * w.blocking_items as u32;
    r.line(
        took < serial,
        "blocking() hint",
        format!(
            "{} items sleeping {:?} on one CPU took {:.0?} (serial would be {:?}): sleepers overlap",
            w.blocking_items, w.blocking_sleep, took, serial
        ),
    );
}

fn flush_and_cancel(r: &mut Report) {
    let wq = Workqueue::new("demo_flush", WqFlags::UNBOUND, 0).expect("create");
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    let again = Work::new(move |me| {
        if n2.fetch_add(1, Ordering::Relaxed) < 99 {
            cmwq::current_work().expect("inside").flush(); // self-flush: reported, no hang
            let _ = me;
        }
    });
    let wq2 = wq.clone();
    let chain = Work::new(move |me| {
        if n.fetch_add(1, Ordering::Relaxed) < 1_000 {
            wq2.queue(me);
        }
    });
    wq.queue(&chain);
    wq.drain();
    r.line(
        !chain.is_pending(),
        "drain",
        "a self-requeueing chain of 1,000 runs drained to empty".into(),
    );
    wq.queue(&again);
    let waited = again.flush();
    r.line(
        waited || !again.is_pending(),
        "Work::flush",
        "waited for the last queued instance".into(),
    );

    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let wq3 = wq.clone();
    let periodic = Work::new(move |me| {
        if !s.load(Ordering::Relaxed) {
            wq3.queue(me);
        }
    });
    wq.queue(&periodic);
    std::thread::sleep(Duration::from_millis(5));
    periodic.cancel_sync();
    let idle = !periodic.is_pending() && !periodic.busy().running;
    r.line(
        idle,
        "cancel_sync",
        "a self-requeueing item is neither pending nor running after cancel_sync".into(),
    );
    periodic.disable();
    periodic.disable();
    let refused = !wq.queue(&periodic);
    let first = periodic.enable();
    let second = periodic.enable();
    r.line(
        refused && !first && second,
        "disable/enable nest",
        format!("disabled twice: queue refused; enable() -> {first}, then {second}"),
    );
    stop.store(true, Ordering::Relaxed);
    let leftover = wq.clone();
    wq.destroy();
    let w = Work::new(|_| {});
    let res = leftover.try_queue(&w);
    r.line(
        res.is_err() && !w.is_pending(),
        "destroy",
        format!(
            "queue through a leftover handle: {}",
            res.err().map_or("accepted!".into(), |e| e.to_string())
        ),
    );
}

fn panics(r: &mut Report) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    cmwq::set_panic_hook(move |p| {
        s.lock()
            .unwrap()
            .push(format!("{}: {}", p.workqueue, p.message))
    });
    let wq = Workqueue::new("demo_panic", WqFlags::empty(), 0).expect("create");
    let bad = Work::new(|_| panic!("demo panic inside a work item"));
    // Silence the default panic message for this expected panic.
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    wq.queue(&bad);
    bad.flush();
    std::panic::set_hook(prev);
    let n = Arc::new(AtomicUsize::new(0));
    let after = counter_work(&n);
    wq.queue(&after);
    after.flush();
    let seen = seen.lock().unwrap().clone();
    r.line(
        n.load(Ordering::Relaxed) == 1 && seen.len() == 1 && !bad.busy().running,
        "panic in work",
        format!("reported {seen:?}; the pool ran the next item"),
    );
}
