//! Semantic 7: `Workqueue::flush` waits for every item queued before the call and for none
//! queued after it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use cmwq::{Work, Workqueue, WqFlags};
use common::{
    current_tid, join_all, unique, wait_for, wait_thread_blocked, with_deadline, Latch, DEADLINE,
    SETTLE,
};

fn gated_item(gate: Arc<Latch>, started: Arc<Latch>, done: Arc<AtomicBool>) -> Work {
    Work::new(move |_| {
        started.open();
        gate.wait_blocking();
        done.store(true, Ordering::SeqCst);
    })
}

/// Starts `wq.flush()` on a helper thread and waits until that thread is blocked inside it.
fn start_flush(wq: &Workqueue) -> mpsc::Receiver<()> {
    let (tid_tx, tid_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let wq = wq.clone();
    std::thread::spawn(move || {
        tid_tx.send(current_tid()).unwrap();
        wq.flush();
        let _ = tx.send(());
    });
    let tid = tid_rx
        .recv_timeout(DEADLINE)
        .expect("flusher thread started");
    wait_thread_blocked("flusher to block inside flush()", tid);
    rx
}

fn before_not_after(wq: Workqueue) {
    let (l1, s1, d1) = (
        Arc::new(Latch::new()),
        Arc::new(Latch::new()),
        Arc::new(AtomicBool::new(false)),
    );
    let (l2, s2, d2) = (
        Arc::new(Latch::new()),
        Arc::new(Latch::new()),
        Arc::new(AtomicBool::new(false)),
    );
    let _release = common::open_on_drop(&[&l1, &l2]);
    let a = gated_item(l1.clone(), s1.clone(), d1.clone());
    let b = gated_item(l2.clone(), s2.clone(), d2.clone());

    assert!(wq.queue(&a));
    s1.wait();
    let rx = start_flush(&wq);
    assert!(wq.queue(&b), "B queued after the flush started");
    s2.wait();
    assert!(
        matches!(
            rx.recv_timeout(SETTLE),
            Err(mpsc::RecvTimeoutError::Timeout)
        ),
        "flush returned while A (queued before it) was still running"
    );
    l1.open();
    let r = rx.recv_timeout(DEADLINE);
    let b_done = d2.load(Ordering::SeqCst);
    l2.open();
    assert!(
        r.is_ok(),
        "flush did not return after A finished (it must not wait for B, queued after it)"
    );
    assert!(d1.load(Ordering::SeqCst));
    assert!(!b_done, "B cannot have finished: it was still blocked");
    let w = wq.clone();
    with_deadline("second flush", move || w.flush());
    assert!(d2.load(Ordering::SeqCst));
}

#[test]
fn flush_waits_for_earlier_items_only_bound() {
    before_not_after(Workqueue::new(&unique("fq-b"), WqFlags::empty(), 0).unwrap());
}

#[test]
fn flush_waits_for_earlier_items_only_unbound() {
    before_not_after(Workqueue::new(&unique("fq-u"), WqFlags::UNBOUND, 0).unwrap());
}

/// Items still waiting for an active slot (inactive) when flush starts are waited for too.
#[test]
fn flush_waits_for_inactive_items() {
    let wq = Workqueue::new(&unique("fq-ina"), WqFlags::UNBOUND, 1).unwrap();
    let (l1, s1, d1) = (
        Arc::new(Latch::new()),
        Arc::new(Latch::new()),
        Arc::new(AtomicBool::new(false)),
    );
    let _release = common::open_on_drop(&[&l1]);
    let a = gated_item(l1.clone(), s1.clone(), d1.clone());
    let ran = Arc::new(AtomicUsize::new(0));
    let items: Vec<Work> = (0..5)
        .map(|_| {
            let ran = ran.clone();
            Work::new(move |_| {
                ran.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    assert!(wq.queue(&a));
    s1.wait();
    for i in &items {
        assert!(wq.queue(i));
    }
    let rx = start_flush(&wq);
    l1.open();
    rx.recv_timeout(DEADLINE).expect("flush returned");
    assert_eq!(
        ran.load(Ordering::SeqCst),
        5,
        "flush returned before inactive items ran"
    );
}

#[test]
fn flush_of_empty_workqueue_returns() {
    let wq = Workqueue::new(&unique("fq-empty"), WqFlags::empty(), 0).unwrap();
    let w = wq.clone();
    with_deadline("flush of a fresh wq", move || w.flush());
    let w = wq.clone();
    with_deadline("try_flush", move || w.try_flush().unwrap());
}

fn self_requeue_cannot_livelock_flush(wq: Workqueue) {
    let stop = Arc::new(AtomicBool::new(false));
    let runs = Arc::new(AtomicUsize::new(0));
    let item = {
        let (stop, runs, wq) = (stop.clone(), runs.clone(), wq.clone());
        Work::new(move |w| {
            runs.fetch_add(1, Ordering::SeqCst);
            std::hint::spin_loop();
            if !stop.load(Ordering::SeqCst) {
                wq.queue(w);
            }
        })
    };
    assert!(wq.queue(&item));
    wait_for("item to spin", || runs.load(Ordering::SeqCst) > 10);
    for round in 0..20 {
        let w = wq.clone();
        with_deadline(
            &format!("flush #{round} with a self-requeueing item"),
            move || w.flush(),
        );
    }
    let before = runs.load(Ordering::SeqCst);
    wait_for("still requeueing after the flushes", || {
        runs.load(Ordering::SeqCst) > before
    });
    stop.store(true, Ordering::SeqCst);
    let i = item.clone();
    with_deadline("flush item after stop", move || i.flush());
    let w = wq.clone();
    with_deadline("final flush", move || w.flush());
    assert!(!item.is_pending());
}

#[test]
fn self_requeueing_item_cannot_make_flush_hang_bound() {
    self_requeue_cannot_livelock_flush(
        Workqueue::new(&unique("fq-srb"), WqFlags::empty(), 0).unwrap(),
    );
}

#[test]
fn self_requeueing_item_cannot_make_flush_hang_unbound() {
    self_requeue_cannot_livelock_flush(
        Workqueue::new(&unique("fq-sru"), WqFlags::UNBOUND, 0).unwrap(),
    );
}

#[test]
fn self_requeueing_item_cannot_make_flush_hang_ordered() {
    self_requeue_cannot_livelock_flush(
        Workqueue::ordered(&unique("fq-sro"), WqFlags::empty()).unwrap(),
    );
}

/// 40 threads (more than the 16 flush colors) each queue their own item and flush, repeatedly;
/// every flush returns and has waited for the caller's item.
fn many_flushers(wq: Workqueue) {
    const THREADS: usize = 40;
    const ROUNDS: usize = 15;
    let handles = (0..THREADS)
        .map(|t| {
            let wq = wq.clone();
            std::thread::spawn(move || {
                let runs = Arc::new(AtomicUsize::new(0));
                let item = {
                    let runs = runs.clone();
                    Work::new(move |_| {
                        if t % 4 == 0 {
                            cmwq::blocking(|| {
                                std::thread::sleep(std::time::Duration::from_micros(300))
                            });
                        }
                        runs.fetch_add(1, Ordering::SeqCst);
                    })
                };
                for round in 0..ROUNDS {
                    assert!(wq.queue(&item), "idle after the previous flush");
                    wq.flush();
                    assert_eq!(
                        runs.load(Ordering::SeqCst),
                        round + 1,
                        "flush returned before an item queued before it had run"
                    );
                }
            })
        })
        .collect::<Vec<_>>();
    join_all("40 concurrent flushers", handles);
}

#[test]
fn many_concurrent_flushers_bound() {
    many_flushers(Workqueue::new(&unique("fq-mb"), WqFlags::empty(), 0).unwrap());
}

#[test]
fn many_concurrent_flushers_unbound() {
    many_flushers(Workqueue::new(&unique("fq-mu"), WqFlags::UNBOUND, 0).unwrap());
}

#[test]
fn many_concurrent_flushers_ordered() {
    many_flushers(Workqueue::ordered(&unique("fq-mo"), WqFlags::empty()).unwrap());
}
