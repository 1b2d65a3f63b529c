//! The bad-input table of docs/DESIGN.md, one test per row: every public call's invalid
//! inputs and states, and what each gets. A row's test is named after it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cmwq::{DelayedWork, Error, Work, Workqueue, WqFlags, WQ_MAX_ACTIVE};
use common::{counting_item, unique, with_deadline, Blocker};

/// A CPU id that is not online for this process.
fn bad_cpu() -> usize {
    cmwq::online_cpus().last().copied().unwrap_or(0) + 1000
}

#[test]
fn new_rejects_an_empty_name() {
    assert_eq!(
        Workqueue::new("", WqFlags::empty(), 0).unwrap_err(),
        Error::InvalidName
    );
}

#[test]
fn new_rejects_max_active_above_the_limit() {
    for flags in [WqFlags::empty(), WqFlags::UNBOUND] {
        let err = Workqueue::new(&unique("bad"), flags, WQ_MAX_ACTIVE + 1).unwrap_err();
        assert!(matches!(err, Error::InvalidMaxActive { .. }), "{err:?}");
    }
    // The largest valid value and 0 (the default) are accepted.
    let wq = Workqueue::new(&unique("ok"), WqFlags::empty(), WQ_MAX_ACTIVE).unwrap();
    assert_eq!(wq.max_active(), WQ_MAX_ACTIVE);
    let wq = Workqueue::new(&unique("ok"), WqFlags::empty(), 0).unwrap();
    assert_eq!(wq.max_active(), cmwq::WQ_DFL_ACTIVE);
}

#[test]
fn new_rejects_contradictory_flags() {
    let err = Workqueue::new(&unique("bad"), WqFlags::UNBOUND | WqFlags::PERCPU, 0).unwrap_err();
    assert!(matches!(err, Error::InvalidFlags { .. }), "{err:?}");
    let err = Workqueue::ordered(&unique("bad"), WqFlags::PERCPU).unwrap_err();
    assert!(matches!(err, Error::InvalidFlags { .. }), "{err:?}");
}

#[test]
fn builder_rejects_bad_attributes() {
    let per_cpu_nice = Workqueue::builder(&unique("bad")).nice(5).build();
    assert!(matches!(per_cpu_nice, Err(Error::InvalidAttrs { .. })));
    let nice = Workqueue::builder(&unique("bad"))
        .flags(WqFlags::UNBOUND)
        .nice(20)
        .build();
    assert!(matches!(nice, Err(Error::InvalidAttrs { .. })));
    let empty = Workqueue::builder(&unique("bad"))
        .flags(WqFlags::UNBOUND)
        .cpumask([])
        .build();
    assert!(matches!(empty, Err(Error::InvalidAttrs { .. })));
    let offline = Workqueue::builder(&unique("bad"))
        .flags(WqFlags::UNBOUND)
        .cpumask([bad_cpu()])
        .build();
    assert_eq!(offline.unwrap_err(), Error::InvalidCpu { cpu: bad_cpu() });
}

#[test]
fn a_nul_in_a_mem_reclaim_name_is_accepted() {
    let wq = Workqueue::new("nul\0name", WqFlags::MEM_RECLAIM, 0).expect("created");
    let (item, runs) = counting_item();
    assert!(wq.queue(&item));
    common::wait_for("the item to run", || runs.load(Ordering::SeqCst) == 1);
    wq.destroy();
}

#[test]
fn calls_with_an_offline_cpu_are_errors_and_queue_nothing() {
    let wq = Workqueue::new(&unique("cpu"), WqFlags::empty(), 0).unwrap();
    let (item, _) = counting_item();
    let dw = DelayedWork::new(|_| {});
    let cpu = bad_cpu();
    assert_eq!(wq.queue_on(cpu, &item), Err(Error::InvalidCpu { cpu }));
    assert_eq!(
        cmwq::schedule_work_on(cpu, &item),
        Err(Error::InvalidCpu { cpu })
    );
    let d = Duration::from_millis(1);
    assert_eq!(
        wq.queue_delayed_on(cpu, &dw, d),
        Err(Error::InvalidCpu { cpu })
    );
    assert_eq!(
        wq.mod_delayed_on(cpu, &dw, d),
        Err(Error::InvalidCpu { cpu })
    );
    let ran = std::sync::atomic::AtomicBool::new(false);
    assert_eq!(
        cmwq::work_on_cpu(cpu, || ran.store(true, Ordering::SeqCst)),
        Err(Error::InvalidCpu { cpu })
    );
    assert!(!ran.load(Ordering::SeqCst), "work_on_cpu ran nothing");
    assert!(!item.is_pending() && !dw.is_pending());
}

#[test]
fn queue_node_with_a_node_that_does_not_exist_is_an_error_and_queues_nothing() {
    let (item, runs) = counting_item();
    let node = 1 << 20;
    for wq in [cmwq::system_wq(), cmwq::system_unbound_wq()] {
        assert_eq!(wq.queue_node(node, &item), Err(Error::InvalidNode { node }));
        assert_eq!(
            wq.try_queue_node(node, &item),
            Err(Error::InvalidNode { node })
        );
        assert!(!item.is_pending());
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[test]
fn set_max_active_rejects_out_of_range_ordered_and_destroyed() {
    let wq = Workqueue::new(&unique("sma"), WqFlags::empty(), 4).unwrap();
    assert!(matches!(
        wq.set_max_active(WQ_MAX_ACTIVE + 1),
        Err(Error::InvalidMaxActive { .. })
    ));
    assert_eq!(wq.max_active(), 4, "a refused value changes nothing");
    wq.set_max_active(0).unwrap();
    assert_eq!(wq.max_active(), cmwq::WQ_DFL_ACTIVE);
    let ordered = Workqueue::ordered(&unique("sma_o"), WqFlags::empty()).unwrap();
    assert!(matches!(
        ordered.set_max_active(2),
        Err(Error::Ordered { .. })
    ));
    let leftover = wq.clone();
    wq.destroy();
    assert!(matches!(
        leftover.set_max_active(8),
        Err(Error::Destroyed { .. })
    ));
}

#[test]
fn queueing_on_a_draining_queue_from_outside_is_refused_and_leaves_the_item_idle() {
    let wq = Workqueue::new(&unique("drain"), WqFlags::empty(), 0).unwrap();
    let blocker = Blocker::new();
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    let w2 = wq.clone();
    let drainer = std::thread::spawn(move || w2.drain());
    let (item, runs) = counting_item();
    // The drain has begun once queueing from outside is refused (a probe, not `item`: the
    // probe may run if it was queued before the drain began).
    let probe = Work::new(|_| {});
    common::wait_for("drain to refuse outside queueing", || {
        matches!(wq.try_queue(&probe), Err(Error::Draining { .. }))
    });
    assert!(!wq.queue(&item));
    assert!(!item.is_pending());
    blocker.gate.open();
    common::join("drain", drainer);
    assert!(wq.queue(&item), "usable again once the drain ended");
    item.flush();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn every_call_through_a_leftover_handle_after_destroy_is_refused_or_harmless() {
    let wq = Workqueue::new(&unique("gone"), WqFlags::empty(), 0).unwrap();
    let leftover = wq.clone();
    wq.destroy();
    let (item, runs) = counting_item();
    let dw = DelayedWork::new(|_| {});
    let cpu = cmwq::online_cpus()[0];
    let d = Duration::from_millis(1);
    with_deadline("calls after destroy", move || {
        assert!(!leftover.queue(&item));
        assert!(matches!(
            leftover.try_queue(&item),
            Err(Error::Destroyed { .. })
        ));
        assert_eq!(leftover.queue_on(cpu, &item), Ok(false));
        assert!(!leftover.queue_delayed(&dw, d));
        assert_eq!(leftover.queue_delayed_on(cpu, &dw, d), Ok(false));
        assert!(!leftover.mod_delayed(&dw, d));
        assert!(!item.is_pending() && !dw.is_pending());
        leftover.flush();
        assert!(leftover.try_flush().is_ok());
        leftover.drain();
        assert!(leftover.try_drain().is_ok());
        assert!(leftover.set_max_active(3).is_err());
        let _ = (leftover.max_active(), leftover.name(), leftover.flags());
        leftover.destroy(); // a second destroy is a no-op
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn flushing_or_draining_from_inside_is_an_error_not_a_deadlock() {
    let wq = Workqueue::new(&unique("self"), WqFlags::empty(), 0).unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s, w2) = (seen.clone(), wq.clone());
    let item = Work::new(move |me| {
        let mut s = s.lock().unwrap();
        s.push(me.try_flush().err());
        s.push(w2.try_flush().err());
        s.push(w2.try_drain().err());
        s.push((!me.flush()).then_some(Error::SelfFlush));
        me.cancel_sync(); // cancels nothing, does not wait for itself
    });
    assert!(wq.queue(&item));
    let w3 = wq.clone();
    with_deadline("flush", move || w3.flush());
    assert_eq!(*seen.lock().unwrap(), vec![Some(Error::SelfFlush); 4]);
}

#[test]
fn enable_without_disable_panics_and_leaves_the_item_usable() {
    let (item, runs) = counting_item();
    let i2 = item.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || i2.enable()));
    assert!(
        r.is_err(),
        "enable of an item that is not disabled is a bug"
    );
    assert!(!item.is_pending());
    let i3 = item.clone();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        cmwq::system_wq().enable_and_queue(&i3)
    }));
    assert!(r.is_err(), "enable_and_queue panics as enable does");
    assert!(!item.is_pending(), "and queues nothing");
    assert!(cmwq::system_wq().queue(&item));
    item.flush();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn disabling_past_the_depth_limit_panics_and_leaves_the_item_disabled() {
    let item = Work::new(|_| {});
    for _ in 0..u16::MAX {
        item.disable();
    }
    let i2 = item.clone();
    assert!(std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || i2.disable())).is_err());
    assert!(!cmwq::system_wq().queue(&item), "still disabled");
    assert!(!item.is_pending());
}

#[test]
fn destroying_a_system_workqueue_panics() {
    let r = std::panic::catch_unwind(|| cmwq::system_unbound_wq().clone().destroy());
    assert!(r.is_err());
    let (item, runs) = counting_item();
    assert!(cmwq::system_unbound_wq().queue(&item));
    item.flush();
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the system queue still works"
    );
}

#[test]
fn destroy_from_the_queues_own_item_finishes_after_it_returns() {
    let wq = Workqueue::new(&unique("selfdestroy"), WqFlags::empty(), 0).unwrap();
    let done = Arc::new(common::Latch::new());
    let (d, w2) = (done.clone(), std::sync::Mutex::new(Some(wq.clone())));
    let item = Work::new(move |_| {
        if let Some(w) = w2.lock().unwrap().take() {
            w.destroy();
        }
        d.open();
    });
    assert!(wq.queue(&item));
    done.wait();
    common::wait_for("queue destroyed", || {
        matches!(
            wq.try_queue(&Work::new(|_| {})),
            Err(Error::Destroyed { .. })
        )
    });
}

#[test]
fn configure_after_first_use_is_refused() {
    cmwq::system_wq(); // the engine is in use
    let err = cmwq::configure(cmwq::Config::default()).unwrap_err();
    assert_eq!(err, Error::ConfigLocked);
}

#[test]
fn a_zero_delay_queues_at_once() {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let dw = DelayedWork::new(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let wq = Workqueue::new(&unique("zero"), WqFlags::UNBOUND, 0).unwrap();
    assert!(wq.queue_delayed(&dw, Duration::ZERO));
    common::wait_for("first run", || runs.load(Ordering::SeqCst) == 1);
    common::wait_for("idle", || !dw.work().busy().running);
    assert!(
        !wq.mod_delayed(&dw, Duration::ZERO),
        "idle: false, and it queues"
    );
    common::wait_for("second run", || runs.load(Ordering::SeqCst) == 2);
}

#[test]
fn a_duration_max_delay_means_never_and_stays_cancellable() {
    let wq = Workqueue::new(&unique("never"), WqFlags::empty(), 0).unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let dw = DelayedWork::new(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    let cpu = cmwq::online_cpus()[0];
    with_deadline("Duration::MAX delays", move || {
        assert!(wq.queue_delayed(&dw, Duration::MAX));
        assert!(dw.is_pending());
        assert!(dw.cancel(), "cancel finds the armed timer");
        assert_eq!(wq.queue_delayed_on(cpu, &dw, Duration::MAX), Ok(true));
        assert!(wq.mod_delayed(&dw, Duration::MAX), "was pending");
        assert!(dw.cancel_sync());
        assert!(!wq.mod_delayed(&dw, Duration::MAX));
        assert!(dw.work().disable());
        dw.work().enable();
        assert!(!dw.is_pending());
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn mod_delayed_leaves_a_disabled_item_alone() {
    let wq = Workqueue::new(&unique("moddis"), WqFlags::empty(), 0).unwrap();
    let dw = DelayedWork::new(|_| {});
    dw.work().disable();
    assert!(!wq.mod_delayed(&dw, Duration::from_millis(1)));
    assert!(!wq.queue_delayed(&dw, Duration::from_millis(1)));
    assert!(!dw.is_pending());
    assert!(dw.work().enable());
}

#[test]
fn flushing_an_item_queued_behind_the_caller_on_a_one_at_a_time_queue_is_an_error() {
    for (what, wq) in [
        (
            "ordered",
            Workqueue::ordered(&unique("dep_o"), WqFlags::empty()).unwrap(),
        ),
        (
            "max_active 1",
            Workqueue::new(&unique("dep_1"), WqFlags::empty(), 1).unwrap(),
        ),
    ] {
        let (behind, runs) = counting_item();
        let seen = Arc::new(std::sync::Mutex::new(None));
        let (s, b, w2) = (seen.clone(), behind.clone(), wq.clone());
        let cpu = cmwq::online_cpus()[0];
        let first = Work::new(move |_| {
            assert!(w2.queue_on(cpu, &b).unwrap());
            *s.lock().unwrap() = Some((b.try_flush(), b.flush()));
        });
        assert!(wq.queue_on(cpu, &first).unwrap());
        let w3 = wq.clone();
        with_deadline("flush", move || w3.flush());
        let got = seen.lock().unwrap().take().expect("the first item ran");
        assert!(
            matches!(got.0, Err(Error::FlushDependency { .. })),
            "{what}: {got:?}"
        );
        assert!(!got.1, "{what}: flush warns and returns false");
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "{what}: it ran after the caller"
        );
    }
    // With room for two, the flush simply waits.
    let wq = Workqueue::new(&unique("dep_2"), WqFlags::UNBOUND, 2).unwrap();
    let (behind, runs) = counting_item();
    let (b, w2) = (behind.clone(), wq.clone());
    let waited = Arc::new(AtomicUsize::new(0));
    let w = waited.clone();
    let first = Work::new(move |_| {
        assert!(w2.queue(&b));
        // Waits (true), or finds it already run by the other active slot (false): no error.
        if b.try_flush().is_ok() {
            w.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert!(wq.queue(&first));
    let w3 = wq.clone();
    with_deadline("flush", move || w3.flush());
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(waited.load(Ordering::SeqCst), 1);
}
