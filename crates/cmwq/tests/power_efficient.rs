//! `Config::power_efficient` (the kernel's `workqueue.power_efficient`): with it set before
//! the queues are created, `POWER_EFFICIENT` queues are unbound, the system ones included.
//!
//! The configuration is process-wide and fixed at first use, so this file is its own test
//! binary and every test calls [`setup`] before it touches the engine.

mod common;

use std::sync::{Arc, Mutex};

use cmwq::{
    current_worker, system_freezable_power_efficient_wq, system_power_efficient_wq, Config, Work,
    Workqueue, WqFlags,
};
use common::unique;

/// Configures power-efficient mode once for the binary (the first test to get here sets it,
/// the others find it set).
fn setup() {
    let _ = cmwq::configure(Config {
        power_efficient: true,
        ..Config::default()
    });
    assert!(
        cmwq::config().power_efficient,
        "something used the engine before configure"
    );
}

/// The CPU of the pool that ran an item queued by `queue` (`None`: an unbound pool).
fn ran_on(queue: impl FnOnce(&Work) -> bool) -> Option<usize> {
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    let item = Work::new(move |_| {
        *s.lock().unwrap() = Some(current_worker().expect("runs on a worker").cpu);
    });
    assert!(queue(&item));
    item.flush();
    let cpu = seen.lock().unwrap().expect("the item ran");
    cpu
}

#[test]
fn power_efficient_queues_are_unbound() {
    setup();
    let wq = Workqueue::new(&unique("pe"), WqFlags::POWER_EFFICIENT, 0).unwrap();
    assert!(wq.flags().contains(WqFlags::UNBOUND));
    assert_eq!(ran_on(|w| wq.queue(w)), None);
    // Explicitly per-CPU too: the kernel's WQ_UNBOUND wins.
    let wq = Workqueue::new(
        &unique("pe-percpu"),
        WqFlags::POWER_EFFICIENT | WqFlags::PERCPU,
        0,
    )
    .unwrap();
    assert!(wq.flags().contains(WqFlags::UNBOUND));
    assert!(!wq.flags().contains(WqFlags::PERCPU));
    assert_eq!(ran_on(|w| wq.queue(w)), None);
}

#[test]
fn system_power_efficient_queues_are_unbound() {
    setup();
    for wq in [
        system_power_efficient_wq(),
        system_freezable_power_efficient_wq(),
    ] {
        assert!(wq.flags().contains(WqFlags::UNBOUND), "{}", wq.name());
        assert_eq!(ran_on(|w| wq.queue(w)), None, "{}", wq.name());
    }
}

#[test]
fn other_queues_stay_per_cpu() {
    setup();
    let wq = Workqueue::new(&unique("pe-plain"), WqFlags::empty(), 0).unwrap();
    assert!(!wq.flags().contains(WqFlags::UNBOUND));
    let cpu = *cmwq::online_cpus().last().unwrap();
    assert_eq!(ran_on(|w| wq.queue_on(cpu, w).unwrap()), Some(cpu));
}
