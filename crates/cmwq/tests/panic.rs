//! Semantic 11: a panicking work function is caught, reported with the workqueue's name, and
//! leaves the pool (and anyone waiting on the item) healthy.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

use cmwq::{online_cpus, Work, Workqueue, WqFlags};
use common::{
    call_while_running, counting_item, global_hook, unique, wait_until, with_deadline, Blocker,
    DEADLINE,
};

/// The messages reported for `wq`, once there are `n` of them (or the deadline passed).
fn wait_reports(wq: &str, n: usize) -> Vec<String> {
    wait_until(DEADLINE, || global_hook::reports_for(wq).len() >= n);
    global_hook::reports_for(wq)
}

#[test]
fn panic_is_reported_with_the_workqueue_name() {
    global_hook::install();
    let name = unique("pn-report");
    let wq = Workqueue::new(&name, WqFlags::empty(), 0).unwrap();
    let item = Work::new(|_| panic!("boom-formatted-{}", 42));
    assert!(wq.queue(&item));
    let i = item.clone();
    with_deadline("flush of a panicking item", move || i.flush());
    let got = wait_reports(&name, 1);
    assert_eq!(
        got.len(),
        1,
        "expected one report for {name:?}, got {got:?}"
    );
    assert!(got[0].contains("boom-formatted-42"), "message {:?}", got[0]);

    // A &'static str payload too.
    let item2 = Work::new(|_| panic!("boom-static"));
    assert!(wq.queue(&item2));
    let i = item2.clone();
    with_deadline("flush", move || i.flush());
    let got = wait_reports(&name, 2);
    assert!(got.iter().any(|m| m.contains("boom-static")), "{got:?}");
}

#[test]
fn panic_report_names_unbound_and_ordered_workqueues() {
    global_hook::install();
    for wq in [
        Workqueue::new(&unique("pn-unb"), WqFlags::UNBOUND, 0).unwrap(),
        Workqueue::ordered(&unique("pn-ord"), WqFlags::empty()).unwrap(),
    ] {
        let item = Work::new(|_| panic!("boom-kind"));
        assert!(wq.queue(&item));
        let w = wq.clone();
        with_deadline("wq flush", move || w.flush());
        let got = wait_reports(wq.name(), 1);
        assert_eq!(got.len(), 1, "{}: {got:?}", wq.name());
        assert!(got[0].contains("boom-kind"));
    }
}

/// After panics, the same workqueue and CPU still run items (repeatedly, so a leaked worker or
/// concurrency slot per panic would show).
#[test]
fn pool_stays_healthy_after_panics() {
    global_hook::install();
    for flags in [WqFlags::empty(), WqFlags::UNBOUND] {
        let name = unique("pn-health");
        let wq = Workqueue::new(&name, flags, 1).unwrap();
        for cpu in online_cpus() {
            let (good, runs) = counting_item();
            for round in 0..10 {
                let bad = Work::new(|_| panic!("boom-health"));
                assert!(wq.queue_on(cpu, &bad).unwrap());
                assert!(wq.queue_on(cpu, &good).unwrap());
                let g = good.clone();
                with_deadline("flush of the good item after a panic", move || g.flush());
                assert_eq!(runs.load(Ordering::SeqCst), round + 1);
                assert!(!bad.is_pending());
                assert!(!bad.busy().running);
            }
        }
        let w = wq.clone();
        with_deadline("wq flush", move || w.flush());
        let n = online_cpus().len() * 10;
        assert_eq!(wait_reports(&name, n).len(), n, "one report per panic");
    }
}

/// A blocker whose item panics once its gate opens.
fn block_then_panic() -> Blocker {
    Blocker::then(|| panic!("boom-after-wait"))
}

#[test]
fn flush_waiting_on_a_panicking_item_returns() {
    global_hook::install();
    let wq = Workqueue::new(&unique("pn-flush"), WqFlags::empty(), 0).unwrap();
    let b = block_then_panic();
    let rx = call_while_running(&wq, &b, Work::flush);
    let (wtx, wrx) = mpsc::channel();
    {
        let wq = wq.clone();
        std::thread::spawn(move || {
            wq.flush();
            let _ = wtx.send(());
        });
    }
    b.gate.open();
    let r = rx.recv_timeout(DEADLINE);
    let wr = wrx.recv_timeout(DEADLINE);
    assert!(
        r.is_ok(),
        "Work::flush waiting on a panicking item did not return"
    );
    assert!(
        wr.is_ok(),
        "Workqueue::flush waiting on a panicking item did not return"
    );
    let bz = b.item.busy();
    assert!(!bz.pending && !bz.running);
    let got = wait_reports(wq.name(), 1);
    assert!(got.iter().any(|m| m.contains("boom-after-wait")), "{got:?}");
}

#[test]
fn cancel_sync_waiting_on_a_panicking_item_returns() {
    global_hook::install();
    let wq = Workqueue::new(&unique("pn-cancel"), WqFlags::UNBOUND, 0).unwrap();
    let b = block_then_panic();
    let rx = call_while_running(&wq, &b, Work::cancel_sync);
    b.gate.open();
    let r = rx.recv_timeout(DEADLINE);
    assert!(
        r.is_ok(),
        "cancel_sync waiting on a panicking item did not return"
    );
    let bz = b.item.busy();
    assert!(!bz.pending && !bz.running);
    // The item is still usable (cancel_sync did not leave it disabled).
    let w = wq.clone();
    with_deadline("drain", move || w.drain());
    assert!(wq.queue(&b.item));
    let w = wq.clone();
    with_deadline("wq flush", move || w.flush());
}

#[test]
fn panicking_item_can_requeue_and_run_again() {
    global_hook::install();
    let wq = Workqueue::new(&unique("pn-again"), WqFlags::empty(), 0).unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let item = {
        let runs = runs.clone();
        Work::new(move |_| {
            runs.fetch_add(1, Ordering::SeqCst);
            panic!("boom-again");
        })
    };
    for n in 1..=5 {
        assert!(wq.queue(&item));
        let i = item.clone();
        with_deadline("flush", move || i.flush());
        assert_eq!(runs.load(Ordering::SeqCst), n);
    }
    assert_eq!(wait_reports(wq.name(), 5).len(), 5);
}
