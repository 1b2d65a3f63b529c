//! Semantic 1: queueing a pending item is a no-op that returns `false`, and every store made
//! before a `queue()` call, whatever it returned, is seen by a run that starts after the call.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use cmwq::{online_cpus, Work, Workqueue, WqFlags};
use common::{counting_item, join_all, unique, with_deadline, Blocker};

/// Occupies an ordered workqueue with a blocker so that a second item stays pending.
#[test]
fn queueing_a_pending_item_returns_false_and_it_runs_once() {
    let wq = Workqueue::ordered(&unique("coal-ord"), WqFlags::empty()).unwrap();
    let blocker = Blocker::new();
    let (item, runs) = counting_item();

    assert!(!item.is_pending());
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    assert!(
        wq.queue(&item),
        "first queue of an idle item must return true"
    );
    assert!(item.is_pending());
    assert!(item.busy().pending);
    for _ in 0..100 {
        assert!(
            !wq.queue(&item),
            "queueing a pending item must return false"
        );
        assert!(matches!(wq.try_queue(&item), Ok(false)));
    }
    // Through a clone of the handle: same item.
    assert!(!wq.queue(&item.clone()));
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    blocker.gate.open();
    let w = wq.clone();
    with_deadline("wq flush", move || w.flush());
    assert_eq!(runs.load(Ordering::SeqCst), 1, "a coalesced item runs once");
    assert!(!item.is_pending());
}

/// Same on a bound workqueue with max_active 1: the second item waits inactive on the CPU.
#[test]
fn coalesce_on_bound_workqueue_with_max_active_one() {
    let cpu = online_cpus()[0];
    let wq = Workqueue::new(&unique("coal-bnd"), WqFlags::empty(), 1).unwrap();
    let blocker = Blocker::new();
    let (item, runs) = counting_item();
    assert!(wq.queue_on(cpu, &blocker.item).unwrap());
    blocker.started.wait();
    assert!(wq.queue_on(cpu, &item).unwrap());
    for other in online_cpus() {
        assert!(
            !wq.queue_on(other, &item).unwrap(),
            "pending item queued again on cpu {other} must return false"
        );
    }
    assert!(!wq.queue(&item));
    blocker.gate.open();
    let i = item.clone();
    with_deadline("flush item", move || i.flush());
    let w = wq.clone();
    with_deadline("wq flush", move || w.flush());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Producers bump `wanted` then queue; the item records `seen = wanted` at run start. Whatever
/// `queue` returned, the final run must have seen the final value.
fn no_lost_update(wq: Workqueue, use_queue_on: bool) {
    const PRODUCERS: usize = 4;
    const ROUNDS: usize = 6;
    const PER_ROUND: u64 = 5_000;

    let wanted = Arc::new(AtomicU64::new(0));
    let seen = Arc::new(AtomicU64::new(0));
    let went_backwards = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicU64::new(0));
    let item = {
        let (wanted, seen, went_backwards, runs) = (
            wanted.clone(),
            seen.clone(),
            went_backwards.clone(),
            runs.clone(),
        );
        Work::new(move |_| {
            let v = wanted.load(Ordering::Relaxed);
            let prev = seen.swap(v, Ordering::Relaxed);
            if v < prev {
                went_backwards.store(true, Ordering::Relaxed);
            }
            runs.fetch_add(1, Ordering::Relaxed);
            for _ in 0..50 {
                std::hint::spin_loop();
            }
        })
    };
    let cpus = online_cpus();

    for round in 0..ROUNDS {
        let handles = (0..PRODUCERS)
            .map(|p| {
                let (wq, item, wanted, cpus) =
                    (wq.clone(), item.clone(), wanted.clone(), cpus.clone());
                std::thread::spawn(move || {
                    let mut trues = 0u64;
                    for i in 0..PER_ROUND {
                        wanted.fetch_add(1, Ordering::Relaxed);
                        let queued = if use_queue_on {
                            let cpu = cpus[(i as usize + p) % cpus.len()];
                            wq.queue_on(cpu, &item).unwrap()
                        } else {
                            wq.queue(&item)
                        };
                        trues += u64::from(queued);
                    }
                    trues
                })
            })
            .collect::<Vec<_>>();
        let trues: u64 = join_all("producers", handles).into_iter().sum();
        let i = item.clone();
        with_deadline("flush item", move || i.flush());
        let w = wq.clone();
        with_deadline("wq flush", move || w.flush());

        let expected = (round as u64 + 1) * PRODUCERS as u64 * PER_ROUND;
        assert_eq!(wanted.load(Ordering::SeqCst), expected);
        assert_eq!(
            seen.load(Ordering::SeqCst),
            expected,
            "round {round}: the last run did not see the last store made before a queue() call"
        );
        assert!(trues >= 1);
        assert!(
            !went_backwards.load(Ordering::SeqCst),
            "a later run saw an older value"
        );
        assert!(!item.is_pending());
    }
    assert!(runs.load(Ordering::SeqCst) >= ROUNDS as u64);
}

#[test]
fn no_lost_update_bound_queue() {
    no_lost_update(
        Workqueue::new(&unique("coal-b"), WqFlags::empty(), 0).unwrap(),
        false,
    );
}

#[test]
fn no_lost_update_bound_queue_on() {
    no_lost_update(
        Workqueue::new(&unique("coal-bo"), WqFlags::empty(), 0).unwrap(),
        true,
    );
}

#[test]
fn no_lost_update_unbound() {
    no_lost_update(
        Workqueue::new(&unique("coal-u"), WqFlags::UNBOUND, 0).unwrap(),
        false,
    );
}

#[test]
fn no_lost_update_ordered() {
    no_lost_update(
        Workqueue::ordered(&unique("coal-o"), WqFlags::empty()).unwrap(),
        false,
    );
}

#[test]
fn no_lost_update_system_wq() {
    no_lost_update(cmwq::system_wq().clone(), false);
}

/// The "queue again if something changed" pattern used with a Mutex-protected value and a
/// consumer that processes whatever it finds: nothing produced is left unprocessed.
#[test]
fn mutex_protected_queue_again_pattern_never_loses_items() {
    const PRODUCERS: usize = 4;
    const PER: usize = 3_000;
    let wq = Workqueue::new(&unique("coal-m"), WqFlags::UNBOUND, 0).unwrap();
    let inbox = Arc::new(std::sync::Mutex::new(Vec::<usize>::new()));
    let processed = Arc::new(AtomicUsize::new(0));
    let item = {
        let (inbox, processed) = (inbox.clone(), processed.clone());
        Work::new(move |_| {
            let batch = std::mem::take(&mut *inbox.lock().unwrap());
            processed.fetch_add(batch.len(), Ordering::SeqCst);
        })
    };
    let handles = (0..PRODUCERS)
        .map(|p| {
            let (wq, item, inbox) = (wq.clone(), item.clone(), inbox.clone());
            std::thread::spawn(move || {
                for i in 0..PER {
                    inbox.lock().unwrap().push(p * PER + i);
                    wq.queue(&item);
                }
            })
        })
        .collect::<Vec<_>>();
    join_all("producers", handles);
    let i = item.clone();
    with_deadline("flush item", move || i.flush());
    assert_eq!(
        processed.load(Ordering::SeqCst),
        PRODUCERS * PER,
        "an item pushed before a queue() call was not processed"
    );
    assert!(inbox.lock().unwrap().is_empty());
}
