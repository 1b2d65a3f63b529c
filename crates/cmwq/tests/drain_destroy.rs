//! Semantics 8 and 9: `drain` waits until the workqueue is empty (chained self-requeues
//! included) and rejects other queueing meanwhile; `destroy` drains, rejects later queueing and
//! joins the workqueue's own threads.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use cmwq::{Error, Work, Workqueue, WqFlags};
use common::{
    counting_item, current_comm, current_tid, thread_exists, unique, wait_for, wait_until,
    with_deadline, Blocker, Counter, Latch, DEADLINE,
};

/// An item that requeues itself from its own function until it has run `n` times. The third
/// value records a refused chained requeue.
fn chain(wq: &Workqueue, n: usize) -> (Work, Arc<AtomicUsize>, Arc<Mutex<Option<String>>>) {
    let count = Arc::new(AtomicUsize::new(0));
    let refused = Arc::new(Mutex::new(None));
    let item = {
        let (count, wq, refused) = (count.clone(), wq.clone(), refused.clone());
        Work::new(move |w| {
            let done = count.fetch_add(1, Ordering::SeqCst) + 1;
            if done < n {
                let r = wq.try_queue(w);
                if !matches!(r, Ok(true)) {
                    *refused.lock().unwrap() = Some(format!("run {done}: try_queue -> {r:?}"));
                }
            }
        })
    };
    (item, count, refused)
}

fn check_chain(count: &AtomicUsize, refused: &Mutex<Option<String>>, n: usize) {
    if let Some(r) = refused.lock().unwrap().as_ref() {
        panic!("a chained requeue (from the item itself) was refused: {r}");
    }
    assert_eq!(
        count.load(Ordering::SeqCst),
        n,
        "returned before the chain ended"
    );
}

fn drain_waits_for_chain(wq: Workqueue) {
    const N: usize = 1_000;
    let (item, count, refused) = chain(&wq, N);
    assert!(wq.queue(&item));
    let w = wq.clone();
    with_deadline("drain", move || w.drain());
    check_chain(&count, &refused, N);
    assert!(!item.is_pending());
    // The workqueue is usable again after drain.
    let (item2, count2, refused2) = chain(&wq, 3);
    assert!(wq.queue(&item2));
    let w = wq.clone();
    with_deadline("try_drain", move || w.try_drain().unwrap());
    check_chain(&count2, &refused2, 3);
}

#[test]
fn drain_includes_chained_requeues_bound() {
    drain_waits_for_chain(Workqueue::new(&unique("dd-cb"), WqFlags::empty(), 0).unwrap());
}

#[test]
fn drain_includes_chained_requeues_unbound() {
    drain_waits_for_chain(Workqueue::new(&unique("dd-cu"), WqFlags::UNBOUND, 0).unwrap());
}

#[test]
fn drain_includes_chained_requeues_ordered() {
    drain_waits_for_chain(Workqueue::ordered(&unique("dd-co"), WqFlags::empty()).unwrap());
}

fn outside_queueing_rejected_while_draining(wq: Workqueue) {
    let blocker = Blocker::new();
    let (probe, _probe_runs) = counting_item();
    let late_ran = Arc::new(AtomicBool::new(false));
    let late = {
        let r = late_ran.clone();
        Work::new(move |_| r.store(true, Ordering::SeqCst))
    };
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();

    let (tx, rx) = mpsc::channel();
    {
        let wq = wq.clone();
        std::thread::spawn(move || {
            wq.drain();
            let _ = tx.send(());
        });
    }
    // Once the drain has started, outside queueing is refused.
    wait_for("try_queue to report Draining", || {
        matches!(wq.try_queue(&probe), Err(Error::Draining { .. }))
    });
    let q = wq.queue(&late);
    let tq = wq.try_queue(&late);
    let pending_after = late.is_pending();
    let busy_after = late.busy();
    let still_draining = matches!(
        rx.recv_timeout(common::SETTLE),
        Err(mpsc::RecvTimeoutError::Timeout)
    );
    blocker.gate.open();
    rx.recv_timeout(DEADLINE)
        .expect("drain did not return after the blocker finished");

    assert!(!q, "queue() during drain must return false");
    assert!(
        matches!(tq, Err(Error::Draining { .. })),
        "try_queue() during drain: {tq:?}"
    );
    assert!(!pending_after, "a rejected item must not be left pending");
    assert!(!busy_after.pending && !busy_after.running);
    assert!(
        still_draining,
        "drain returned while the blocker was still running"
    );
    assert!(!late_ran.load(Ordering::SeqCst), "a rejected item ran");
    assert!(!late.is_pending());
    // Cancel of the rejected item finds nothing and does not hang.
    let l = late.clone();
    assert!(!with_deadline("cancel_sync of rejected item", move || l.cancel_sync()));
    // After the drain, queueing works again.
    assert!(matches!(wq.try_queue(&late), Ok(true)));
    let l = late.clone();
    with_deadline("flush", move || l.flush());
    assert!(late_ran.load(Ordering::SeqCst));
}

#[test]
fn outside_queueing_is_rejected_while_draining_bound() {
    outside_queueing_rejected_while_draining(
        Workqueue::new(&unique("dd-rb"), WqFlags::empty(), 0).unwrap(),
    );
}

#[test]
fn outside_queueing_is_rejected_while_draining_unbound() {
    outside_queueing_rejected_while_draining(
        Workqueue::new(&unique("dd-ru"), WqFlags::UNBOUND, 0).unwrap(),
    );
}

fn counting_items(n: usize, counter: &Arc<AtomicUsize>, sleep_us: u64) -> Vec<Work> {
    (0..n)
        .map(|_| {
            let c = counter.clone();
            Work::new(move |_| {
                if sleep_us > 0 {
                    cmwq::blocking(|| {
                        std::thread::sleep(std::time::Duration::from_micros(sleep_us))
                    });
                }
                c.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect()
}

fn destroy_rejects_later_queueing(wq: Workqueue) {
    let leftover = wq.clone();
    let count = Arc::new(AtomicUsize::new(0));
    let items = counting_items(20, &count, 500);
    for i in &items {
        assert!(wq.queue(i));
    }
    with_deadline("destroy", move || wq.destroy());
    assert_eq!(count.load(Ordering::SeqCst), 20, "destroy must drain first");

    let late = Work::new(|_| panic!("must never run"));
    assert!(
        !leftover.queue(&late),
        "queue through a leftover handle after destroy"
    );
    let r = leftover.try_queue(&late);
    assert!(
        matches!(r, Err(Error::Destroyed { .. })),
        "try_queue after destroy: {r:?}"
    );
    assert!(!late.is_pending());
    let r = leftover.queue_on(cmwq::online_cpus()[0], &late);
    assert!(
        matches!(r, Ok(false) | Err(Error::Destroyed { .. })),
        "queue_on after destroy: {r:?}"
    );
    assert!(!late.is_pending(), "rejected item left pending");
    assert!(!late.flush());
    // The leftover handle still answers questions.
    assert!(!leftover.name().is_empty());
}

#[test]
fn destroy_drains_and_rejects_later_queueing_bound() {
    destroy_rejects_later_queueing(Workqueue::new(&unique("dd-db"), WqFlags::empty(), 0).unwrap());
}

#[test]
fn destroy_drains_and_rejects_later_queueing_unbound() {
    destroy_rejects_later_queueing(Workqueue::new(&unique("dd-du"), WqFlags::UNBOUND, 0).unwrap());
}

#[test]
fn destroy_drains_and_rejects_later_queueing_ordered() {
    destroy_rejects_later_queueing(Workqueue::ordered(&unique("dd-do"), WqFlags::empty()).unwrap());
}

/// Flush and drain through a leftover handle of a destroyed workqueue return.
#[test]
fn flush_and_drain_after_destroy_return() {
    let wq = Workqueue::new(&unique("dd-fa"), WqFlags::UNBOUND, 0).unwrap();
    let leftover = wq.clone();
    wq.destroy();
    let l = leftover.clone();
    with_deadline("flush after destroy", move || l.flush());
    let l = leftover.clone();
    with_deadline("drain after destroy", move || l.drain());
}

/// Destroy with chained self-requeues in flight waits for the chain to end.
#[test]
fn destroy_waits_for_chained_requeues() {
    let wq = Workqueue::new(&unique("dd-ch"), WqFlags::UNBOUND, 0).unwrap();
    let (item, count, refused) = chain(&wq, 500);
    assert!(wq.queue(&item));
    let w = wq.clone();
    with_deadline("destroy", move || w.destroy());
    check_chain(&count, &refused, 500);
    assert!(!item.is_pending());
}

#[test]
fn dropping_the_last_handle_destroys() {
    for flags in [WqFlags::empty(), WqFlags::UNBOUND] {
        let wq = Workqueue::new(&unique("dd-drop"), flags, 0).unwrap();
        let second = wq.clone();
        let count = Arc::new(AtomicUsize::new(0));
        let items = counting_items(30, &count, 300);
        for (i, item) in items.iter().enumerate() {
            if i % 2 == 0 {
                assert!(wq.queue(item));
            } else {
                assert!(second.queue(item));
            }
        }
        drop(second);
        with_deadline("drop of the last handle", move || drop(wq));
        assert_eq!(
            count.load(Ordering::SeqCst),
            30,
            "items queued before the last handle was dropped must all have run"
        );
        for item in &items {
            assert!(!item.is_pending());
        }
    }
}

/// An unbound workqueue with unusual attributes gets its own pool; destroying it joins the
/// pool's worker threads.
fn destroy_joins_threads(nice: i32, destroy: impl FnOnce(Workqueue) + Send + 'static) {
    const N: usize = 4;
    let before: Vec<u32> = common::threads()
        .into_iter()
        .filter(|(_, c)| c.starts_with("kworker/u"))
        .map(|(t, _)| t)
        .collect();
    let wq = Workqueue::builder(&unique("dd-nice"))
        .flags(WqFlags::UNBOUND)
        .nice(nice)
        .build()
        .unwrap();
    let gate = Arc::new(Latch::new());
    let _release = common::open_on_drop(&[&gate]);
    let started = Arc::new(Counter::new());
    let workers = Arc::new(Mutex::new(Vec::<(u32, String, i32)>::new()));
    let items: Vec<Work> = (0..N)
        .map(|_| {
            let (gate, started, workers) = (gate.clone(), started.clone(), workers.clone());
            Work::new(move |_| {
                let nice = cmwq::current_worker().map_or(i32::MIN, |w| w.nice);
                workers
                    .lock()
                    .unwrap()
                    .push((current_tid(), current_comm(), nice));
                started.inc();
                gate.wait_blocking();
            })
        })
        .collect();
    for i in &items {
        assert!(wq.queue(i));
    }
    // All N at once: forces the pool to have at least N workers.
    started.wait_for(N);
    gate.open();
    let workers = workers.lock().unwrap().clone();
    let tids: Vec<u32> = workers.iter().map(|w| w.0).collect();
    for (tid, comm, w_nice) in &workers {
        assert!(comm.starts_with("kworker/u"), "worker {tid} named {comm:?}");
        assert_eq!(
            *w_nice, nice,
            "WorkerInfo.nice of a nice({nice}) workqueue's worker"
        );
        assert!(
            !before.contains(tid),
            "nice({nice}) pool reused a pre-existing worker"
        );
    }
    with_deadline("destroy", move || destroy(wq));
    let gone = wait_until(DEADLINE, || tids.iter().all(|t| !thread_exists(*t)));
    let left: Vec<(u32, String)> = common::threads()
        .into_iter()
        .filter(|(t, _)| tids.contains(t))
        .collect();
    assert!(
        gone,
        "worker threads of the destroyed workqueue still exist: {left:?}"
    );
    let after: Vec<String> = common::threads()
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| c.starts_with("kworker/u"))
        .collect();
    eprintln!(
        "kworker/u* threads: {} before, {} of this wq, {} after destroy",
        before.len(),
        tids.len(),
        after.len()
    );
}

#[test]
fn destroy_joins_its_threads() {
    // Distinct nice values: the two tests run in parallel and must not share a pool.
    destroy_joins_threads(5, |wq| wq.destroy());
}

#[test]
fn dropping_last_handle_joins_its_threads() {
    destroy_joins_threads(6, drop);
}
