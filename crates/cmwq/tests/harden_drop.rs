//! Issue 11, defect 1: dropping the last `Workqueue` handle from the engine's own drop of an
//! item (a worker dropping the item after its run, the timer service dropping a stale heap
//! entry) must neither hang nor deadlock the engine.
//!
//! Each scenario runs in its own child process (`harden_util::isolated`): today they wedge a
//! worker or the timer service for the rest of the process.

mod common;
mod harden_util;

use std::sync::Arc;
use std::time::Duration;

use cmwq::{online_cpus, DelayedWork, Work, Workqueue, WqFlags};
use common::{unique, Latch};
use harden_util::{assert_no_failures, isolated, must_return, pool_alive_failures, within, PROMPT};

const HOUR: Duration = Duration::from_secs(3600);

/// Owns a `Workqueue` handle; when dropped it drops the handle first (which destroys the
/// queue if it was the last one) and only then opens `destroyed`.
struct Holder {
    wq: Option<Workqueue>,
    destroyed: Arc<Latch>,
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.wq.take());
        self.destroyed.open();
    }
}

fn holder(wq: &Workqueue) -> (Holder, Arc<Latch>) {
    let destroyed = Arc::new(Latch::new());
    (
        Holder {
            wq: Some(wq.clone()),
            destroyed: destroyed.clone(),
        },
        destroyed,
    )
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    PerCpu,
    Unbound,
    Ordered,
}

fn make(kind: Kind, prefix: &str) -> Workqueue {
    let name = unique(prefix);
    match kind {
        Kind::PerCpu => Workqueue::new(&name, WqFlags::empty(), 0),
        Kind::Unbound => Workqueue::new(&name, WqFlags::UNBOUND, 0),
        Kind::Ordered => Workqueue::ordered(&name, WqFlags::empty()),
    }
    .expect("create workqueue")
}

/// The item's closure owns the last handle of its queue: the caller drops its own handles
/// while the item runs. Once the item has run, the worker's drop of the item destroys the
/// queue; that must finish, and the CPU's pool must go on working.
fn last_handle_owned_by_the_running_item(kind: Kind) {
    let cpu = online_cpus()[0];
    let wq = make(kind, "hd-own");
    let (holder, destroyed) = holder(&wq);
    let started = Arc::new(Latch::new());
    let gate = Arc::new(Latch::new());
    let ran = Arc::new(Latch::new());
    let item = {
        let (started, gate, ran) = (started.clone(), gate.clone(), ran.clone());
        Work::new(move |_| {
            let _owned = &holder;
            started.open();
            gate.wait_blocking();
            ran.open();
        })
    };
    assert!(wq.queue_on(cpu, &item).expect("queue_on"));
    assert!(started.wait_timeout(PROMPT), "the item did not start");
    // From here on the item's closure holds the only handle of the queue.
    drop(item);
    must_return(
        "dropping the test's own Workqueue handle",
        PROMPT,
        move || drop(wq),
    );
    gate.open();
    assert!(ran.wait_timeout(PROMPT), "the item did not finish its run");

    let mut failures = Vec::new();
    if !destroyed.wait_timeout(PROMPT) {
        failures.push(format!(
            "defect 1 ({kind:?}): the queue whose last handle its own item owned was not \
             destroyed within {PROMPT:?} after the item ran: the worker dropping the item \
             hangs in destroy (the drain waits for the in-flight count of this very item)"
        ));
    }
    // A different queue on the same CPU, and system_wq there, must still work.
    let other = make(Kind::PerCpu, "hd-own-other");
    failures.extend(pool_alive_failures(&other, cpu, "defect 1"));
    let other2 = make(kind, "hd-own-other-kind");
    failures.extend(pool_alive_failures(&other2, cpu, "defect 1"));
    assert_no_failures(&failures);
}

#[test]
fn per_cpu_item_owning_the_last_handle_of_its_queue_destroys_it_without_hanging() {
    isolated(
        "per_cpu_item_owning_the_last_handle_of_its_queue_destroys_it_without_hanging",
        || last_handle_owned_by_the_running_item(Kind::PerCpu),
    );
}

#[test]
fn unbound_item_owning_the_last_handle_of_its_queue_destroys_it_without_hanging() {
    isolated(
        "unbound_item_owning_the_last_handle_of_its_queue_destroys_it_without_hanging",
        || last_handle_owned_by_the_running_item(Kind::Unbound),
    );
}

#[test]
fn ordered_item_owning_the_last_handle_of_its_queue_destroys_it_without_hanging() {
    isolated(
        "ordered_item_owning_the_last_handle_of_its_queue_destroys_it_without_hanging",
        || last_handle_owned_by_the_running_item(Kind::Ordered),
    );
}

/// The item is still queued (behind a blocker on an ordered queue) when the caller drops its
/// handles; it runs later and its drop on the worker destroys the queue.
#[test]
fn queued_item_owning_the_last_handle_of_its_queue_destroys_it_without_hanging() {
    isolated(
        "queued_item_owning_the_last_handle_of_its_queue_destroys_it_without_hanging",
        || {
            let wq = make(Kind::Ordered, "hd-queued");
            let (holder, destroyed) = holder(&wq);
            let started = Arc::new(Latch::new());
            let gate = Arc::new(Latch::new());
            let blocker = {
                let (started, gate) = (started.clone(), gate.clone());
                Work::new(move |_| {
                    started.open();
                    gate.wait_blocking();
                })
            };
            let ran = Arc::new(Latch::new());
            let item = {
                let ran = ran.clone();
                Work::new(move |_| {
                    let _owned = &holder;
                    ran.open();
                })
            };
            assert!(wq.queue(&blocker));
            assert!(started.wait_timeout(PROMPT), "the blocker did not start");
            assert!(wq.queue(&item));
            drop(item);
            must_return(
                "dropping the test's own Workqueue handle",
                PROMPT,
                move || drop(wq),
            );
            gate.open();
            assert!(ran.wait_timeout(PROMPT), "the queued item did not run");
            let mut failures = Vec::new();
            if !destroyed.wait_timeout(PROMPT) {
                failures.push(format!(
                    "defect 1: the queue whose last handle a queued item owned was not \
                     destroyed within {PROMPT:?} after the item ran (the worker hangs in \
                     destroy)"
                ));
            }
            let other = make(Kind::Ordered, "hd-queued-other");
            failures.extend(pool_alive_failures(&other, online_cpus()[0], "defect 1"));
            assert_no_failures(&failures);
        },
    );
}

/// Stale timer-heap entries (left by re-arming with `mod_delayed`) hold the last reference to
/// a delayed item whose closure owns the last handle of its queue. The heap's compaction,
/// run by a later arm on another queue, drops them: today under the heap lock, and the
/// destroy it triggers takes that lock again.
#[test]
fn compaction_dropping_the_last_handle_of_a_queue_does_not_deadlock_the_timer_service() {
    isolated(
        "compaction_dropping_the_last_handle_of_a_queue_does_not_deadlock_the_timer_service",
        || {
            let wq = make(Kind::PerCpu, "hd-compact");
            let (holder, destroyed) = holder(&wq);
            let ran = Arc::new(Latch::new());
            let dw = {
                let ran = ran.clone();
                DelayedWork::new(move |_| {
                    let _owned = &holder;
                    ran.open();
                })
            };
            // 4,000 stale entries with an hour to go (fewer than the compaction threshold),
            // then a short arming that fires and runs: its own entry leaves the heap.
            for _ in 0..4000 {
                wq.mod_delayed(&dw, HOUR);
            }
            wq.mod_delayed(&dw, Duration::from_millis(10));
            assert!(ran.wait_timeout(PROMPT), "the delayed item did not run");
            let d = dw.clone();
            must_return("flush of the delayed item", PROMPT, move || {
                d.work().flush()
            });
            // Now only the stale heap entries refer to the item, and so to the queue.
            drop(dw);
            must_return(
                "dropping the test's own Workqueue handle",
                PROMPT,
                move || drop(wq),
            );

            // Arm another queue's item again and again: the heap compacts its dead entries.
            let mut failures = Vec::new();
            let other = make(Kind::PerCpu, "hd-compact-other");
            let (dw2, fired2) = {
                let fired = Arc::new(Latch::new());
                let f = fired.clone();
                (DelayedWork::new(move |_| f.open()), fired)
            };
            let (o, d2) = (other.clone(), dw2.clone());
            if let Err(e) = within(PROMPT, move || {
                for _ in 0..300 {
                    o.mod_delayed(&d2, HOUR);
                }
                o.mod_delayed(&d2, Duration::from_millis(10));
            }) {
                failures.push(format!(
                    "defect 1: re-arming a delayed item of another queue 300 times {e}: the \
                     timer heap's compaction dropped the last handle of a queue under the heap \
                     lock and the destroy it ran deadlocked on that lock"
                ));
            } else if !fired2.wait_timeout(PROMPT) {
                failures.push(format!(
                    "defect 1: a delayed item of another queue did not fire within {PROMPT:?} \
                     after the compaction"
                ));
            }
            if !destroyed.wait_timeout(PROMPT) {
                failures.push(format!(
                    "defect 1: the queue whose last handle only stale timer entries held was \
                     not destroyed within {PROMPT:?} of the compaction"
                ));
            }
            // The timer service must still fire items of a third queue.
            let third = make(Kind::Unbound, "hd-compact-third");
            let fired3 = Arc::new(Latch::new());
            let dw3 = {
                let f = fired3.clone();
                DelayedWork::new(move |_| f.open())
            };
            let (t, d3) = (third.clone(), dw3.clone());
            match within(PROMPT, move || {
                t.queue_delayed(&d3, Duration::from_millis(10))
            }) {
                Ok(true) => {
                    if !fired3.wait_timeout(PROMPT) {
                        failures.push(format!(
                            "defect 1: a delayed item armed afterwards did not fire within \
                             {PROMPT:?}: the timer service is dead"
                        ));
                    }
                }
                Ok(false) => failures.push("queue_delayed on a fresh queue refused".into()),
                Err(e) => failures.push(format!(
                    "defect 1: arming a delayed item afterwards {e}: the timer service is \
                     deadlocked"
                )),
            }
            assert_no_failures(&failures);
        },
    );
}

/// A cancelled delayed item whose closure owns the last handle of queue A: its stale heap
/// entry is the last reference, so when it comes due the timer thread drops it and destroys
/// A. A has an item running that waits for a delayed item of queue B: if the timer thread runs
/// A's drain itself, B's timer never fires and the two wait for each other.
#[test]
fn stale_timer_entry_dropping_the_last_handle_does_not_stop_other_timers() {
    isolated(
        "stale_timer_entry_dropping_the_last_handle_does_not_stop_other_timers",
        || {
            let a = make(Kind::PerCpu, "hd-stale-a");
            let b = make(Kind::PerCpu, "hd-stale-b");
            // X runs on A until B's delayed item has run (or 15 s pass).
            let b_ran = Arc::new(Latch::new());
            let x_started = Arc::new(Latch::new());
            let x = {
                let (b_ran, x_started) = (b_ran.clone(), x_started.clone());
                Work::new(move |_| {
                    x_started.open();
                    cmwq::blocking(|| b_ran.wait_timeout(Duration::from_secs(15)));
                })
            };
            assert!(a.queue(&x));
            assert!(x_started.wait_timeout(PROMPT), "X did not start");

            let (holder, destroyed) = holder(&a);
            let dwa = DelayedWork::new(move |_| {
                let _owned = &holder;
            });
            let dwb = {
                let b_ran = b_ran.clone();
                DelayedWork::new(move |_| b_ran.open())
            };
            assert!(b.queue_delayed(&dwb, Duration::from_millis(800)));
            assert!(a.queue_delayed(&dwa, Duration::from_millis(300)));
            assert!(dwa.cancel());
            // The stale heap entry now holds the last reference to dwa, and so to A. (An
            // engine that frees the entry at cancel destroys A right here instead, which
            // returns once B's item has fired and X has finished.)
            must_return("dropping the test's handles of A", PROMPT, move || {
                drop(dwa);
                drop(a);
            });
            let mut failures = Vec::new();
            if !b_ran.wait_timeout(PROMPT) {
                failures.push(format!(
                    "defect 1: a delayed item of another queue (800 ms) did not fire within \
                     {PROMPT:?}: the timer thread dropped a stale entry holding the last handle \
                     of a queue and is stuck destroying it (its drain waits for an item that \
                     waits for this timer)"
                ));
            }
            if !destroyed.wait_timeout(Duration::from_secs(20)) {
                failures.push(
                    "defect 1: the queue whose last handle a stale timer entry held was never \
                     destroyed"
                        .into(),
                );
            }
            assert_no_failures(&failures);
        },
    );
}
