//! Issue 11, lifecycle edges: defect 3 (`set_max_active` lowered below the running items
//! kills a worker on an internal assertion), defect 5 (operations through a handle left over
//! after `destroy`), and from 9: a NUL byte in a `MEM_RECLAIM` queue's name, and destroy
//! cutting a chain of items that hop between CPUs with `queue_on`.
//!
//! Each scenario runs in its own child process (`harden_util::isolated`).

mod common;
mod harden_util;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cmwq::{online_cpus, DelayedWork, Error, Work, Workqueue, WqFlags};
use common::{unique, wait_until, Counter, Latch};
use harden_util::{
    assert_no_failures, isolated, must_return, pool_alive_failures, signalling_item, within,
    Failed, PROMPT,
};

// ===== defect 3 =====

/// Panics of worker threads (thread names `kworker/...`) seen by the process's panic hook,
/// other than the work functions' own (this scenario has none).
static WORKER_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn record_worker_panics() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        if let Some(name) = thread.name().filter(|n| n.starts_with("kworker")) {
            WORKER_PANICS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("{name}: {info}"));
        }
        prev(info);
    }));
}

fn worker_panics() -> Vec<String> {
    WORKER_PANICS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// `n` items on `cpu` that each wait (inside `blocking`) until all `n` have started: they need
/// `n` live workers of the pool at once.
fn mutual_waiters_failures(wq: &Workqueue, cpu: usize, n: usize, what: &str) -> Vec<String> {
    let started = Arc::new(Counter::new());
    let finished = Arc::new(Counter::new());
    let items: Vec<Work> = (0..n)
        .map(|_| {
            let (started, finished) = (started.clone(), finished.clone());
            Work::new(move |_| {
                started.inc();
                cmwq::blocking(|| {
                    wait_until(Duration::from_secs(15), || started.get() >= n);
                });
                finished.inc();
            })
        })
        .collect();
    for item in &items {
        assert!(wq.queue_on(cpu, item).unwrap());
    }
    if wait_until(PROMPT, || finished.get() >= n) {
        Vec::new()
    } else {
        vec![format!(
            "{what}: {n} items waiting for each other on CPU {cpu}: only {} of them started \
             within {PROMPT:?} (dead workers left on the idle list are \"woken\" instead of \
             live ones)",
            started.get()
        )]
    }
}

fn lowering_max_active_below_running(flags: WqFlags) {
    record_worker_panics();
    let cpu = online_cpus()[0];
    let wq = Workqueue::new(&unique("hl-lower"), flags, 4).unwrap();
    let gate = Arc::new(Latch::new());
    let started = Arc::new(Counter::new());
    let done = Arc::new(Counter::new());
    let items: Vec<Work> = (0..8)
        .map(|_| {
            let (gate, started, done) = (gate.clone(), started.clone(), done.clone());
            Work::new(move |_| {
                started.inc();
                gate.wait_blocking();
                done.inc();
            })
        })
        .collect();
    for item in &items {
        assert!(wq.queue_on(cpu, item).unwrap());
    }
    // Four run (max_active 4), four wait.
    assert!(
        wait_until(PROMPT, || started.get() >= 4),
        "only {} items started",
        started.get()
    );
    let w = wq.clone();
    must_return(
        "set_max_active(1) below the running items",
        PROMPT,
        move || w.set_max_active(1),
    )
    .expect("set_max_active(1)");
    gate.open();

    let mut failures = Vec::new();
    if !wait_until(Duration::from_secs(20), || done.get() >= 8) {
        failures.push(format!(
            "defect 3: after lowering max_active below the running items, only {} of 8 items \
             completed",
            done.get()
        ));
    }
    // The mutual waiters need 6 active at once: on another queue of the same pool (this
    // one's limit is 1 now, under which they would wait for each other for ever, by design).
    let same_pool = Workqueue::new(&unique("hl-lower-probe"), flags, 0).unwrap();
    failures.extend(mutual_waiters_failures(
        &same_pool,
        cpu,
        6,
        "defect 3 (after set_max_active lowered the limit)",
    ));
    failures.extend(pool_alive_failures(
        &wq,
        cpu,
        "defect 3 (after set_max_active lowered the limit)",
    ));
    let panics = worker_panics();
    if !panics.is_empty() {
        failures.push(format!(
            "defect 3: {} worker thread(s) panicked outside any work function (an internal \
             check killed them): {panics:?}",
            panics.len()
        ));
    }
    assert_no_failures(&failures);
}

#[test]
fn lowering_max_active_below_running_items_kills_no_per_cpu_worker() {
    isolated(
        "lowering_max_active_below_running_items_kills_no_per_cpu_worker",
        || lowering_max_active_below_running(WqFlags::empty()),
    );
}

#[test]
fn lowering_max_active_below_running_items_kills_no_unbound_worker() {
    isolated(
        "lowering_max_active_below_running_items_kills_no_unbound_worker",
        || lowering_max_active_below_running(WqFlags::UNBOUND),
    );
}

// ===== defect 5 =====

fn kinds() -> Vec<(&'static str, Workqueue)> {
    vec![
        (
            "per-CPU",
            Workqueue::new(&unique("hl-left-pcpu"), WqFlags::empty(), 0).unwrap(),
        ),
        (
            "per-CPU HIGHPRI",
            Workqueue::new(&unique("hl-left-hi"), WqFlags::HIGHPRI, 0).unwrap(),
        ),
        (
            "unbound",
            Workqueue::new(&unique("hl-left-unb"), WqFlags::UNBOUND, 0).unwrap(),
        ),
        (
            "ordered",
            Workqueue::ordered(&unique("hl-left-ord"), WqFlags::empty()).unwrap(),
        ),
        (
            "MEM_RECLAIM",
            Workqueue::new(&unique("hl-left-rec"), WqFlags::MEM_RECLAIM, 0).unwrap(),
        ),
    ]
}

/// Runs `op` on a helper thread; a panic or a hang becomes a failure line.
fn check_op<T: Send + 'static>(
    failures: &mut Vec<String>,
    kind: &str,
    what: &str,
    op: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match within(PROMPT, op) {
        Ok(v) => Some(v),
        Err(e @ Failed::Panicked(_)) | Err(e @ Failed::TimedOut(_)) => {
            failures.push(format!(
                "defect 5 ({kind}): {what} through a handle left over after destroy {e}"
            ));
            None
        }
    }
}

#[test]
fn set_max_active_through_a_leftover_handle_after_destroy_does_not_panic() {
    isolated(
        "set_max_active_through_a_leftover_handle_after_destroy_does_not_panic",
        || {
            let mut failures = Vec::new();
            for (kind, wq) in kinds() {
                let left = wq.clone();
                must_return("destroy", PROMPT, move || wq.destroy());
                for n in [4, 0, 1] {
                    let l = left.clone();
                    check_op(
                        &mut failures,
                        kind,
                        &format!("set_max_active({n})"),
                        move || l.set_max_active(n),
                    );
                }
            }
            assert_no_failures(&failures);
        },
    );
}

#[test]
fn every_operation_through_a_leftover_handle_after_destroy_is_refused_cleanly() {
    isolated(
        "every_operation_through_a_leftover_handle_after_destroy_is_refused_cleanly",
        || {
            let cpu = online_cpus()[0];
            let mut failures = Vec::new();
            for (kind, wq) in kinds() {
                // An item that ran on the queue before it was destroyed.
                let (item, ran, _) = signalling_item();
                assert!(wq.queue(&item));
                assert!(ran.wait_timeout(PROMPT));
                let left = wq.clone();
                must_return("destroy", PROMPT, move || wq.destroy());

                let f = &mut failures;
                let (l, w) = (left.clone(), item.clone());
                if let Some(q) = check_op(f, kind, "queue", move || l.queue(&w)) {
                    if q {
                        f.push(format!("{kind}: queue on a destroyed queue returned true"));
                    }
                }
                let (l, w) = (left.clone(), item.clone());
                if let Some(r) = check_op(f, kind, "try_queue", move || l.try_queue(&w)) {
                    if !matches!(r, Err(Error::Destroyed { .. })) {
                        f.push(format!("{kind}: try_queue after destroy gave {r:?}"));
                    }
                }
                let (l, w) = (left.clone(), item.clone());
                if let Some(r) = check_op(f, kind, "queue_on", move || l.queue_on(cpu, &w)) {
                    if r != Ok(false) {
                        f.push(format!("{kind}: queue_on after destroy gave {r:?}"));
                    }
                }
                let dw = DelayedWork::new(|_| {});
                let (l, d) = (left.clone(), dw.clone());
                check_op(f, kind, "queue_delayed", move || {
                    l.queue_delayed(&d, Duration::from_millis(1))
                });
                let (l, d) = (left.clone(), dw.clone());
                check_op(f, kind, "queue_delayed(zero)", move || {
                    l.queue_delayed(&d, Duration::ZERO)
                });
                let (l, d) = (left.clone(), dw.clone());
                check_op(f, kind, "queue_delayed_on", move || {
                    l.queue_delayed_on(cpu, &d, Duration::from_secs(1))
                });
                let (l, d) = (left.clone(), dw.clone());
                check_op(f, kind, "mod_delayed", move || {
                    l.mod_delayed(&d, Duration::from_secs(1))
                });
                let (l, d) = (left.clone(), dw.clone());
                check_op(f, kind, "mod_delayed_on", move || {
                    l.mod_delayed_on(cpu, &d, Duration::from_secs(1))
                });
                let l = left.clone();
                check_op(f, kind, "flush", move || l.flush());
                let l = left.clone();
                check_op(f, kind, "try_flush", move || l.try_flush());
                let l = left.clone();
                check_op(f, kind, "drain", move || l.drain());
                let l = left.clone();
                check_op(f, kind, "try_drain", move || l.try_drain());
                let l = left.clone();
                check_op(f, kind, "set_max_active(8)", move || l.set_max_active(8));
                let l = left.clone();
                check_op(f, kind, "set_max_active(5000)", move || {
                    l.set_max_active(5000)
                });
                let l = left.clone();
                check_op(
                    f,
                    kind,
                    "max_active/name/flags/is_ordered/Debug",
                    move || {
                        (
                            l.max_active(),
                            l.name().to_string(),
                            l.flags(),
                            l.is_ordered(),
                            format!("{l:?}"),
                        )
                    },
                );
                let w = item.clone();
                check_op(
                    f,
                    kind,
                    "Work ops on an item of the destroyed queue",
                    move || {
                        (
                            w.flush(),
                            w.cancel(),
                            w.cancel_sync(),
                            w.busy(),
                            w.is_pending(),
                        )
                    },
                );
                let d = dw.clone();
                check_op(f, kind, "DelayedWork ops after refused arms", move || {
                    (d.flush(), d.cancel(), d.cancel_sync(), d.is_pending())
                });
                if item.is_pending() || dw.is_pending() {
                    f.push(format!("{kind}: a refused item was left pending"));
                }
                let l = left.clone();
                check_op(f, kind, "destroy of a leftover clone", move || l.destroy());
                check_op(f, kind, "drop of the last leftover handle", move || {
                    drop(left)
                });
            }
            assert_no_failures(&failures);
        },
    );
}

// ===== defect 9: NUL in a MEM_RECLAIM queue's name =====

#[test]
fn mem_reclaim_queue_with_a_nul_in_its_name_does_not_panic() {
    isolated(
        "mem_reclaim_queue_with_a_nul_in_its_name_does_not_panic",
        || {
            let mut failures = Vec::new();
            for name in ["a\0b", "\0", "ab\0cdefghijklmnop"] {
                for ordered in [false, true] {
                    let what = format!(
                        "{}({name:?}, MEM_RECLAIM)",
                        if ordered {
                            "Workqueue::ordered"
                        } else {
                            "Workqueue::new"
                        }
                    );
                    let n = name.to_string();
                    let created = within(PROMPT, move || {
                        if ordered {
                            Workqueue::ordered(&n, WqFlags::MEM_RECLAIM)
                        } else {
                            Workqueue::new(&n, WqFlags::MEM_RECLAIM, 0)
                        }
                    });
                    match created {
                        Err(e) => failures.push(format!("defect 9: {what} {e}")),
                        Ok(Err(err)) => eprintln!("{what} refused cleanly: {err}"),
                        Ok(Ok(wq)) => {
                            // It must work like any queue.
                            let (item, ran, _) = signalling_item();
                            assert!(wq.queue(&item));
                            if !ran.wait_timeout(PROMPT) {
                                failures.push(format!("{what}: its item did not run"));
                            }
                            if let Err(e) = within(PROMPT, move || wq.destroy()) {
                                failures.push(format!("{what}: destroy {e}"));
                            }
                        }
                    }
                }
            }
            assert_no_failures(&failures);
        },
    );
}

// ===== defect 9: destroy and a chain hopping between CPUs =====

/// Two items that hand over to each other on alternating CPUs with `queue_on`.
struct Chain {
    wq: Workqueue,
    cpus: [usize; 2],
    items: OnceLock<[Work; 2]>,
    links_left: AtomicUsize,
    runs: AtomicUsize,
    accepted: AtomicUsize,
    refused: Mutex<Vec<String>>,
}

impl Chain {
    fn run(&self, me: usize) {
        self.runs.fetch_add(1, Ordering::SeqCst);
        let left = self.links_left.load(Ordering::SeqCst);
        if left == 0 {
            return;
        }
        self.links_left.store(left - 1, Ordering::SeqCst);
        let other = 1 - me;
        let items = self.items.get().expect("items set");
        match self.wq.queue_on(self.cpus[other], &items[other]) {
            Ok(true) => {
                self.accepted.fetch_add(1, Ordering::SeqCst);
            }
            r => self
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("link with {left} to go: queue_on gave {r:?}")),
        }
    }
}

#[test]
fn destroy_does_not_cut_a_chain_hopping_between_cpus() {
    isolated("destroy_does_not_cut_a_chain_hopping_between_cpus", || {
        let cpus = online_cpus();
        if cpus.len() < 2 {
            eprintln!("only one CPU: a chain cannot hop between CPUs; nothing to check");
            return;
        }
        for round in 0..5 {
            let wq = Workqueue::new(&unique("hl-chain"), WqFlags::empty(), 0).unwrap();
            let chain = Arc::new(Chain {
                wq: wq.clone(),
                cpus: [cpus[0], cpus[1]],
                items: OnceLock::new(),
                links_left: AtomicUsize::new(5_000),
                runs: AtomicUsize::new(0),
                accepted: AtomicUsize::new(0),
                refused: Mutex::new(Vec::new()),
            });
            let items = [0, 1].map(|i| {
                let c = Arc::downgrade(&chain);
                Work::new(move |_| {
                    if let Some(c) = c.upgrade() {
                        c.run(i);
                    }
                })
            });
            let _ = chain.items.set(items.clone());
            assert!(wq.queue_on(cpus[0], &items[0]).unwrap());
            assert!(
                wait_until(PROMPT, || chain.runs.load(Ordering::SeqCst) >= 100),
                "the chain did not start"
            );
            // Destroy while the chain hops: its own queueing must go on until it stops.
            must_return("destroy while the chain runs", Duration::from_secs(60), {
                let wq = wq.clone();
                move || wq.destroy()
            });
            let refused = chain
                .refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let (runs, accepted) = (
                chain.runs.load(Ordering::SeqCst),
                chain.accepted.load(Ordering::SeqCst),
            );
            assert!(
                refused.is_empty(),
                "defect 9: round {round}: destroy cut a chain hopping between CPUs: {} chained \
                 queue_on call(s) from the chain's own items were refused while destroy drained \
                 (first: {}); {runs} runs, {accepted} links accepted",
                refused.len(),
                refused[0]
            );
            assert_eq!(
                runs,
                accepted + 1,
                "round {round}: every accepted link must run before destroy returns"
            );
            assert_eq!(
                chain.links_left.load(Ordering::SeqCst),
                0,
                "round {round}: the chain stopped early"
            );
        }
    });
}
