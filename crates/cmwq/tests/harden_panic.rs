//! Issue 11, defect 2 (and the payload part of 9): a panic that a worker meets outside the
//! work function's `catch_unwind` must be contained and reported, and leave the pool working.
//!
//! The sources: a value captured by the item that panics in `Drop` when the worker drops the
//! last reference, a panic payload whose `Drop` panics, a panic hook that panics, a panic hook
//! that calls `set_panic_hook`, a tracing subscriber that panics. Today each kills (or
//! deadlocks) the worker with its accounting set, which wedges the CPU's pool (`system_wq`
//! included), an ordered queue or the queue's flushes.
//!
//! Each scenario runs in its own child process (`harden_util::isolated`): the panic hook, the
//! tracing subscriber and a wedged pool are process-wide.

mod common;
mod harden_util;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmwq::{online_cpus, Work, WorkPanic, Workqueue, WqFlags};
use common::{unique, wait_until, Latch};
use harden_util::{assert_no_failures, isolated, pool_alive_failures, within, PROMPT};

/// (workqueue, message) of every panic reported through the cmwq panic hook.
static REPORTS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

fn record(p: &WorkPanic) {
    REPORTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((p.workqueue.clone(), p.message.clone()));
}

fn install_recording_hook() {
    cmwq::set_panic_hook(record);
}

fn reports() -> Vec<(String, String)> {
    REPORTS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Waits until a report on `wq` whose message contains `marker` has been made.
fn reported(wq: &str, marker: &str) -> bool {
    wait_until(PROMPT, || {
        reports().iter().any(|(w, m)| w == wq && m.contains(marker))
    })
}

/// Panics (with `marker`) when dropped, after opening `dropped`.
struct PanicOnDrop {
    marker: &'static str,
    dropped: Arc<Latch>,
}

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        self.dropped.open();
        if !std::thread::panicking() {
            panic!("{}", self.marker);
        }
    }
}

/// A fire-and-forget item whose closure owns a `PanicOnDrop`. Its run waits for the returned
/// `go` latch: the test drops its handle, then opens `go`, so the worker surely holds the last
/// reference when the run ends (a handle dropped after the run could be the last one, and
/// the bomb would go off on the test's thread).
fn item_with_bomb(marker: &'static str) -> (Work, Arc<Latch>, Arc<Latch>, Arc<Latch>) {
    let dropped = Arc::new(Latch::new());
    let ran = Arc::new(Latch::new());
    let go = Arc::new(Latch::new());
    let bomb = PanicOnDrop {
        marker,
        dropped: dropped.clone(),
    };
    let (r, g) = (ran.clone(), go.clone());
    let item = Work::new(move |_| {
        let _captured = &bomb;
        g.wait_blocking();
        r.open();
    });
    (item, go, ran, dropped)
}

#[test]
fn panicking_drop_of_a_captured_value_leaves_the_per_cpu_pool_working() {
    isolated(
        "panicking_drop_of_a_captured_value_leaves_the_per_cpu_pool_working",
        || {
            install_recording_hook();
            let cpu = online_cpus()[0];
            let wq = Workqueue::new(&unique("hp-drop"), WqFlags::empty(), 0).unwrap();
            let (item, go, ran, dropped) = item_with_bomb("drop-bomb-percpu");
            assert!(wq.queue_on(cpu, &item).unwrap());
            drop(item); // the worker holds the last reference
            go.open();
            assert!(ran.wait_timeout(PROMPT), "the item did not run");
            assert!(dropped.wait_timeout(PROMPT), "the item was not dropped");
            let mut failures = pool_alive_failures(
                &wq,
                cpu,
                "defect 2 (a captured value panicked in Drop when the worker dropped the item)",
            );
            if !reported(wq.name(), "drop-bomb-percpu") {
                failures.push(format!(
                    "defect 2: the panic in the captured value's Drop was not reported through \
                     the panic hook (reports: {:?})",
                    reports()
                ));
            }
            assert_no_failures(&failures);
        },
    );
}

#[test]
fn panicking_drop_of_a_captured_value_leaves_an_ordered_queue_working() {
    isolated(
        "panicking_drop_of_a_captured_value_leaves_an_ordered_queue_working",
        || {
            install_recording_hook();
            let wq = Workqueue::ordered(&unique("hp-drop-ord"), WqFlags::empty()).unwrap();
            let (item, go, ran, dropped) = item_with_bomb("drop-bomb-ordered");
            assert!(wq.queue(&item));
            drop(item);
            go.open();
            assert!(ran.wait_timeout(PROMPT), "the item did not run");
            assert!(dropped.wait_timeout(PROMPT), "the item was not dropped");
            let mut failures = pool_alive_failures(
                &wq,
                online_cpus()[0],
                "defect 2 (a captured value panicked in Drop on an ordered queue)",
            );
            if !reported(wq.name(), "drop-bomb-ordered") {
                failures.push(format!(
                    "defect 2: the panic in the captured value's Drop was not reported \
                     (reports: {:?})",
                    reports()
                ));
            }
            assert_no_failures(&failures);
        },
    );
}

/// A panic payload whose own `Drop` panics.
struct BadPayload {
    dropped: Arc<Latch>,
}

impl Drop for BadPayload {
    fn drop(&mut self) {
        self.dropped.open();
        if !std::thread::panicking() {
            panic!("payload-drop-bomb");
        }
    }
}

#[test]
fn panic_payload_whose_drop_panics_leaves_the_pool_working() {
    isolated(
        "panic_payload_whose_drop_panics_leaves_the_pool_working",
        || {
            install_recording_hook();
            let cpu = online_cpus()[0];
            let wq = Workqueue::new(&unique("hp-payload"), WqFlags::empty(), 0).unwrap();
            let dropped = Arc::new(Latch::new());
            let d = dropped.clone();
            let item = Work::new(move |_| {
                std::panic::panic_any(BadPayload { dropped: d.clone() });
            });
            assert!(wq.queue_on(cpu, &item).unwrap());
            drop(item);
            assert!(
                dropped.wait_timeout(PROMPT),
                "the panic payload was never dropped"
            );
            let mut failures = pool_alive_failures(
                &wq,
                cpu,
                "defects 2/9 (a work function's panic payload panicked in its Drop)",
            );
            if !wait_until(PROMPT, || reports().iter().any(|(w, _)| w == wq.name())) {
                failures.push(format!(
                    "the work function's panic was not reported (reports: {:?})",
                    reports()
                ));
            }
            assert_no_failures(&failures);
        },
    );
}

#[test]
fn panic_hook_that_panics_leaves_the_pool_working() {
    isolated("panic_hook_that_panics_leaves_the_pool_working", || {
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        cmwq::set_panic_hook(|_| {
            CALLS.fetch_add(1, Ordering::SeqCst);
            panic!("hook-bomb");
        });
        let cpu = online_cpus()[0];
        let wq = Workqueue::new(&unique("hp-hook"), WqFlags::empty(), 0).unwrap();
        let item = Work::new(|_| panic!("work-bomb"));
        assert!(wq.queue_on(cpu, &item).unwrap());
        assert!(
            wait_until(PROMPT, || CALLS.load(Ordering::SeqCst) >= 1),
            "the panic hook was not called"
        );
        assert_no_failures(&pool_alive_failures(
            &wq,
            cpu,
            "defect 2 (the panic hook itself panicked)",
        ));
        // A second panic must be reported again (the hook's panic left nothing poisoned).
        let item2 = Work::new(|_| panic!("work-bomb-2"));
        assert!(wq.queue_on(cpu, &item2).unwrap());
        assert!(
            wait_until(PROMPT, || CALLS.load(Ordering::SeqCst) >= 2),
            "defect 2: a later panic did not reach the panic hook after the hook had panicked"
        );
        assert_no_failures(&pool_alive_failures(
            &wq,
            cpu,
            "defect 2 (the panic hook panicked twice)",
        ));
    });
}

#[test]
fn panic_hook_that_calls_set_panic_hook_does_not_deadlock() {
    isolated(
        "panic_hook_that_calls_set_panic_hook_does_not_deadlock",
        || {
            static FIRST: AtomicUsize = AtomicUsize::new(0);
            static FIRST_RETURNED: AtomicUsize = AtomicUsize::new(0);
            static SECOND: AtomicUsize = AtomicUsize::new(0);
            cmwq::set_panic_hook(|_| {
                FIRST.fetch_add(1, Ordering::SeqCst);
                cmwq::set_panic_hook(|_| {
                    SECOND.fetch_add(1, Ordering::SeqCst);
                });
                FIRST_RETURNED.fetch_add(1, Ordering::SeqCst);
            });
            let cpu = online_cpus()[0];
            let wq = Workqueue::new(&unique("hp-rehook"), WqFlags::empty(), 0).unwrap();
            let item = Work::new(|_| panic!("work-bomb"));
            assert!(wq.queue_on(cpu, &item).unwrap());
            assert!(
                wait_until(PROMPT, || FIRST.load(Ordering::SeqCst) >= 1),
                "the panic hook was not called"
            );
            let mut failures = Vec::new();
            if !wait_until(PROMPT, || FIRST_RETURNED.load(Ordering::SeqCst) >= 1) {
                failures.push(format!(
                    "defect 2: set_panic_hook called from inside the panic hook did not return \
                     within {PROMPT:?} (the hook's read lock is held while it runs: deadlock)"
                ));
            }
            failures.extend(pool_alive_failures(
                &wq,
                cpu,
                "defect 2 (the panic hook called set_panic_hook)",
            ));
            if failures.is_empty() {
                let item2 = Work::new(|_| panic!("work-bomb-2"));
                assert!(wq.queue_on(cpu, &item2).unwrap());
                if !wait_until(PROMPT, || SECOND.load(Ordering::SeqCst) >= 1) {
                    failures.push(
                        "the hook set from inside the panic hook was not called for the next \
                         panic"
                            .into(),
                    );
                }
            }
            assert_no_failures(&failures);
        },
    );
}

/// First `cmwq` error event seen: the subscriber panics on it.
static SUBSCRIBER_ARMED: AtomicBool = AtomicBool::new(true);
/// `cmwq` error events seen by the subscriber.
static SUBSCRIBER_EVENTS: AtomicUsize = AtomicUsize::new(0);

/// A tracing subscriber whose first `cmwq` error event panics.
struct PanickySubscriber;

impl tracing::Subscriber for PanickySubscriber {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() == tracing::Level::ERROR
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target() == "cmwq" {
            SUBSCRIBER_EVENTS.fetch_add(1, Ordering::SeqCst);
            if SUBSCRIBER_ARMED.swap(false, Ordering::SeqCst) {
                panic!("subscriber-bomb");
            }
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[test]
fn panicking_tracing_subscriber_leaves_the_pool_working() {
    isolated(
        "panicking_tracing_subscriber_leaves_the_pool_working",
        || {
            tracing::subscriber::set_global_default(PanickySubscriber)
                .expect("set the tracing subscriber");
            install_recording_hook();
            let cpu = online_cpus()[0];
            let wq = Workqueue::new(&unique("hp-tracing"), WqFlags::empty(), 0).unwrap();
            let item = Work::new(|_| panic!("work-bomb"));
            assert!(wq.queue_on(cpu, &item).unwrap());
            assert!(
                wait_until(PROMPT, || SUBSCRIBER_EVENTS.load(Ordering::SeqCst) >= 1),
                "the engine logged no error event for the work function's panic"
            );
            assert_no_failures(&pool_alive_failures(
                &wq,
                cpu,
                "defect 2 (the tracing subscriber panicked while the worker reported a panic)",
            ));
        },
    );
}

/// The same per-CPU pool survives many panicking drops in a row (a leaked `nr_running` or
/// worker per event would show).
#[test]
fn repeated_panicking_drops_leave_the_per_cpu_pool_working() {
    isolated(
        "repeated_panicking_drops_leave_the_per_cpu_pool_working",
        || {
            install_recording_hook();
            let wq = Workqueue::new(&unique("hp-drops"), WqFlags::empty(), 0).unwrap();
            for cpu in online_cpus() {
                for round in 0..5 {
                    let (item, go, ran, dropped) = item_with_bomb("drop-bomb-repeat");
                    assert!(wq.queue_on(cpu, &item).unwrap());
                    drop(item);
                    go.open();
                    let ok = ran.wait_timeout(PROMPT) && dropped.wait_timeout(PROMPT);
                    assert!(
                        ok,
                        "defect 2: round {round} on CPU {cpu}: the item did not run and get \
                         dropped within {PROMPT:?} (an earlier panicking drop wedged the pool)"
                    );
                }
                assert_no_failures(&pool_alive_failures(
                    &wq,
                    cpu,
                    "defect 2 (after 5 panicking drops)",
                ));
            }
            let w = wq.clone();
            let r = within(Duration::from_secs(20), move || w.flush());
            assert!(r.is_ok(), "final flush: {r:?}");
        },
    );
}
