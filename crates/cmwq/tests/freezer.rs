//! The freezer: `cmwq::freeze`, `cmwq::freeze_busy`, `cmwq::thaw` (the kernel's
//! `freeze_workqueues_begin`, `freeze_workqueues_busy`, `thaw_workqueues`).
//!
//! While frozen, items queued on `FREEZABLE` queues (and delayed items whose timers fire) are
//! held pending on their inactive lists in queueing order; items already active finish; thaw
//! runs the held items once each, in order. Other queues run normally.
//!
//! The freezer is process-wide, so the tests of this file run one after another (`Frozen`
//! holds a lock and thaws on drop, also when a test fails). "Held" is checked exactly through
//! `Workqueue::stats().inactive` (an item is on the inactive list when `queue` returns), never
//! by sleeping.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cmwq::{
    online_cpus, system_freezable_power_efficient_wq, system_freezable_wq, DelayedWork, Error,
    Work, Workqueue, WqFlags,
};
use common::{
    counting_item, join, spawn, unique, wait_for, wait_until, Blocker, Counter, Latch, SETTLE,
};

static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the file's lock and keeps the freezer on until [`Frozen::thaw`] or the drop.
struct Frozen {
    thawed: bool,
    _serial: MutexGuard<'static, ()>,
}

impl Frozen {
    fn thaw(&mut self) {
        assert!(!self.thawed, "thawed twice by the test");
        self.thawed = true;
        assert!(cmwq::thaw(), "thaw() found the freezer off");
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if !self.thawed {
            cmwq::thaw();
        }
    }
}

/// Takes the file's lock without freezing.
fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes the file's lock and freezes.
fn freeze_now(serial: MutexGuard<'static, ()>) -> Frozen {
    assert!(cmwq::freeze(), "freeze() found the freezer on");
    Frozen {
        thawed: false,
        _serial: serial,
    }
}

fn frozen() -> Frozen {
    freeze_now(serial())
}

/// Items that append their index to `log`.
fn logging_items(n: usize) -> (Vec<Work>, Arc<Mutex<Vec<usize>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let items = (0..n)
        .map(|i| {
            let log = log.clone();
            Work::new(move |_| log.lock().unwrap().push(i))
        })
        .collect();
    (items, log)
}

fn inactive(wq: &Workqueue) -> usize {
    wq.stats().inactive
}

#[track_caller]
fn assert_held_in_order(wq: &Workqueue, queue: impl Fn(&Work) -> bool) {
    let (items, log) = logging_items(16);
    let mut f = frozen();
    for item in &items {
        assert!(queue(item), "queued while frozen");
    }
    assert_eq!(inactive(wq), 16, "every item held on the inactive list");
    for item in &items {
        assert!(item.is_pending());
        assert!(!queue(item), "queueing a held item again coalesces");
    }
    assert!(log.lock().unwrap().is_empty());
    f.thaw();
    wq.flush();
    assert_eq!(*log.lock().unwrap(), (0..16).collect::<Vec<_>>());
    assert_eq!(inactive(wq), 0);
}

#[test]
fn ordered_queue_holds_items_in_order() {
    let wq = Workqueue::ordered(&unique("frz-ordered"), WqFlags::FREEZABLE).unwrap();
    assert_held_in_order(&wq, |w| wq.queue(w));
}

#[test]
fn per_cpu_queue_holds_items_in_order() {
    // One active item per CPU: the items of one CPU's pwq run in queueing order.
    let wq = Workqueue::new(&unique("frz-percpu"), WqFlags::FREEZABLE, 1).unwrap();
    let cpu = online_cpus()[0];
    assert_held_in_order(&wq, |w| wq.queue_on(cpu, w).unwrap());
}

#[test]
fn thaw_runs_every_held_item_exactly_once() {
    let percpu = Workqueue::new(&unique("frz-once-p"), WqFlags::FREEZABLE, 0).unwrap();
    let unbound = Workqueue::new(
        &unique("frz-once-u"),
        WqFlags::FREEZABLE | WqFlags::UNBOUND,
        0,
    )
    .unwrap();
    let cpus = online_cpus();
    let items: Vec<(Work, Arc<AtomicUsize>)> = (0..200).map(|_| counting_item()).collect();
    let mut f = frozen();
    for (i, (item, _)) in items.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(percpu.queue_on(cpus[i % cpus.len()], item), Ok(true));
            assert_eq!(percpu.queue_on(cpus[i % cpus.len()], item), Ok(false));
        } else {
            assert!(unbound.queue(item));
            assert!(!unbound.queue(item));
        }
    }
    assert_eq!(inactive(&percpu) + inactive(&unbound), 200);
    assert!(items.iter().all(|(_, n)| n.load(Ordering::SeqCst) == 0));
    f.thaw();
    percpu.flush();
    unbound.flush();
    for (i, (item, runs)) in items.iter().enumerate() {
        assert_eq!(runs.load(Ordering::SeqCst), 1, "item {i} ran once");
        assert!(!item.is_pending());
    }
}

#[test]
fn other_queues_run_while_frozen() {
    let _f = frozen();
    let plain = Workqueue::new(&unique("frz-plain"), WqFlags::UNBOUND, 0).unwrap();
    let (item, runs) = counting_item();
    assert!(plain.queue(&item));
    plain.flush();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // A non-freezable queue created while frozen runs too, and so does system_wq.
    let (item, runs) = counting_item();
    assert!(cmwq::system_wq().queue(&item));
    item.flush();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn freeze_busy_until_active_items_finish() {
    let wq = Workqueue::new(
        &unique("frz-busy"),
        WqFlags::FREEZABLE | WqFlags::UNBOUND,
        0,
    )
    .unwrap();
    let s = serial();
    let blocker = Blocker::new();
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    let mut f = freeze_now(s);
    assert!(
        cmwq::freeze_busy(),
        "an item that started before the freeze runs"
    );
    let (held, runs) = counting_item();
    assert!(wq.queue(&held));
    assert_eq!(inactive(&wq), 1);
    blocker.gate.open();
    wait_for("freeze_busy() to turn false", || !cmwq::freeze_busy());
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the held item did not run");
    assert!(held.is_pending());
    f.thaw();
    wq.flush();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn cancel_and_cancel_sync_take_held_items() {
    let wq = Workqueue::new(&unique("frz-cancel"), WqFlags::FREEZABLE, 0).unwrap();
    let (a, a_runs) = counting_item();
    let (b, b_runs) = counting_item();
    let mut f = frozen();
    assert!(wq.queue(&a));
    assert!(wq.queue(&b));
    assert_eq!(inactive(&wq), 2);
    assert!(a.cancel(), "a held item is pending: cancel takes it");
    let b2 = b.clone();
    assert!(join(
        "cancel_sync of a held item",
        spawn(move || b2.cancel_sync())
    ));
    assert!(!a.is_pending() && !b.is_pending());
    assert_eq!(inactive(&wq), 0);
    // Usable again, still held while frozen.
    assert!(wq.queue(&a));
    assert_eq!(inactive(&wq), 1);
    f.thaw();
    wq.flush();
    assert_eq!(a_runs.load(Ordering::SeqCst), 1);
    assert_eq!(b_runs.load(Ordering::SeqCst), 0);
}

#[test]
fn try_forms_report_frozen_and_flush_waits_for_thaw() {
    let wq = Workqueue::new(&unique("frz-flush"), WqFlags::FREEZABLE, 0).unwrap();
    let name = wq.name().to_string();
    let mut f = frozen();
    // Nothing held yet: flushing returns.
    assert_eq!(wq.try_flush(), Ok(()));
    let (item, runs) = counting_item();
    assert!(wq.queue(&item));
    let frozen_err = Err(Error::Frozen {
        workqueue: name.clone(),
    });
    assert_eq!(wq.try_flush(), frozen_err);
    assert_eq!(wq.try_drain(), frozen_err);
    assert_eq!(
        item.try_flush(),
        Err(Error::Frozen {
            workqueue: name.clone()
        })
    );
    assert!(item.is_pending(), "refusing to flush leaves the item held");
    // The waiting forms wait for the thaw: the flush returns only after the item ran.
    let (w, r) = (wq.clone(), runs.clone());
    let flusher = spawn(move || {
        w.flush();
        r.load(Ordering::SeqCst)
    });
    let it = item.clone();
    let item_flusher = spawn(move || it.flush());
    assert!(
        !wait_until(SETTLE, || flusher.is_finished()
            || item_flusher.is_finished()),
        "a flush of a held item returned while frozen"
    );
    f.thaw();
    assert_eq!(join("flush after thaw", flusher), 1);
    join("Work::flush after thaw", item_flusher);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn destroy_of_a_frozen_queue_waits_for_thaw() {
    let wq = Workqueue::new(&unique("frz-destroy"), WqFlags::FREEZABLE, 0).unwrap();
    let (item, runs) = counting_item();
    let mut f = frozen();
    assert!(wq.queue(&item));
    let leftover = wq.clone();
    let destroyer = spawn(move || wq.destroy());
    assert!(
        !wait_until(SETTLE, || destroyer.is_finished()),
        "destroy returned while its queue held an item"
    );
    f.thaw();
    join("destroy after thaw", destroyer);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "destroy drained the held item"
    );
    assert!(matches!(
        leftover.try_queue(&item),
        Err(Error::Destroyed { .. })
    ));
}

#[test]
fn set_max_active_while_frozen_applies_at_thaw() {
    let wq = Workqueue::new(&unique("frz-max"), WqFlags::FREEZABLE | WqFlags::UNBOUND, 1).unwrap();
    let started = Arc::new(Counter::new());
    let gate = Arc::new(Latch::new());
    let items: Vec<Work> = (0..4)
        .map(|_| {
            let (s, g) = (started.clone(), gate.clone());
            Work::new(move |_| {
                s.inc();
                g.wait_blocking();
            })
        })
        .collect();
    let _open = common::open_on_drop(&[&gate]);
    let mut f = frozen();
    assert_eq!(wq.set_max_active(2), Ok(()));
    assert_eq!(wq.max_active(), 2, "the new limit is stored");
    for item in &items {
        assert!(wq.queue(item));
    }
    assert_eq!(inactive(&wq), 4, "still held after set_max_active");
    f.thaw();
    started.wait_for(2);
    // Two run, two wait for the new limit (exact: they cannot activate before one returns).
    assert_eq!(inactive(&wq), 2);
    assert_eq!(started.get(), 2);
    gate.open();
    wq.flush();
    assert_eq!(started.get(), 4);
}

#[test]
fn queue_created_while_frozen_starts_frozen() {
    let mut f = frozen();
    let wq = Workqueue::new(&unique("frz-new"), WqFlags::FREEZABLE, 0).unwrap();
    let (item, runs) = counting_item();
    assert!(wq.queue(&item));
    assert_eq!(inactive(&wq), 1);
    f.thaw();
    wq.flush();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn nested_freeze_and_thaw_without_freeze_are_ignored() {
    let _s = serial();
    assert!(!cmwq::thaw(), "thaw without freeze is ignored");
    let wq = Workqueue::new(&unique("frz-nest"), WqFlags::FREEZABLE, 0).unwrap();
    let (item, runs) = counting_item();
    assert!(cmwq::freeze());
    assert!(wq.queue(&item));
    assert!(!cmwq::freeze(), "freezing does not nest");
    assert_eq!(inactive(&wq), 1, "a second freeze changes nothing");
    assert!(cmwq::thaw(), "one thaw thaws");
    wq.flush();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(!cmwq::thaw());
}

#[test]
fn system_freezable_queues_are_frozen() {
    let mut f = frozen();
    let (a, a_runs) = counting_item();
    let (b, b_runs) = counting_item();
    assert!(system_freezable_wq().queue(&a));
    assert!(system_freezable_power_efficient_wq().queue(&b));
    assert!(inactive(system_freezable_wq()) >= 1);
    assert!(inactive(system_freezable_power_efficient_wq()) >= 1);
    assert!(a.is_pending() && b.is_pending());
    assert_eq!(
        a_runs.load(Ordering::SeqCst) + b_runs.load(Ordering::SeqCst),
        0
    );
    f.thaw();
    a.flush();
    b.flush();
    assert_eq!(a_runs.load(Ordering::SeqCst), 1);
    assert_eq!(b_runs.load(Ordering::SeqCst), 1);
}

#[test]
fn delayed_items_fire_into_the_held_list_in_order() {
    let s = serial();
    let clock = cmwq::time::pause();
    let wq = Workqueue::ordered(&unique("frz-delayed"), WqFlags::FREEZABLE).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let items: Vec<DelayedWork> = (0..3)
        .map(|i| {
            let log = log.clone();
            DelayedWork::new(move |_| log.lock().unwrap().push(i))
        })
        .collect();
    // Armed before the freeze, with deadlines in reverse of arming order.
    for (i, dw) in items.iter().enumerate() {
        assert!(wq.queue_delayed(dw, Duration::from_secs(30 - 10 * i as u64)));
    }
    let mut f = freeze_now(s);
    // `advance` fires every due timer before it returns: into the held list.
    clock.advance(Duration::from_secs(30));
    assert_eq!(inactive(&wq), 3, "fired timers queue held items");
    for dw in &items {
        assert!(dw.is_pending());
        assert!(!wq.queue_delayed(dw, Duration::ZERO), "held: coalesces");
    }
    assert!(log.lock().unwrap().is_empty());
    f.thaw();
    wq.flush();
    assert_eq!(
        *log.lock().unwrap(),
        [2, 1, 0],
        "in firing (deadline) order"
    );
}

#[test]
fn thaw_starts_a_pool_that_never_had_a_worker() {
    // No other test of this binary uses a high-priority pool: the last CPU's has no worker
    // when the held item is activated, and the thaw must make one.
    let wq = Workqueue::new(
        &unique("frz-first"),
        WqFlags::FREEZABLE | WqFlags::HIGHPRI,
        0,
    )
    .unwrap();
    let cpu = *online_cpus().last().unwrap();
    let (item, runs) = counting_item();
    let mut f = frozen();
    assert_eq!(wq.queue_on(cpu, &item), Ok(true));
    f.thaw();
    if !wait_until(common::DEADLINE, || runs.load(Ordering::SeqCst) == 1) {
        // Dropping the queue would drain it, waiting for ever for the item: fail instead.
        std::mem::forget(wq);
        panic!("the held item did not run after the thaw (no worker was made)");
    }
    item.flush();
}
