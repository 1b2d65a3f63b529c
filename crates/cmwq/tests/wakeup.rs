//! No lost wake-ups: an item queued while the pool's workers are going idle is always taken
//! by a worker that was woken for it. Debug builds also check, each time a worker goes idle,
//! that it does not sleep while work waits with no idle worker told to wake (counted in
//! `cmwq::invariant_violations`).
//!
//! The pool is held to two workers, one of them kept busy by a blocker item, so that the other
//! is the only one that can take new items. Each item is queued the moment the previous one
//! has run, while its worker finishes it and heads for idle (the test holds a clone of every
//! item, so the worker gives its reference up in an unlocked moment on its way). If that
//! worker went to sleep without taking the new item, nobody would be left to run it until
//! the blocker ends: the test would see the item not run.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cmwq::{Config, Work, Workqueue, WqFlags};

fn handoffs(flags: WqFlags) {
    let wq = Workqueue::new("wakeup", flags, 0).expect("workqueue");
    let release = Arc::new(AtomicBool::new(false));
    let blocker_started = Arc::new(AtomicBool::new(false));
    let blocker = {
        let (release, started) = (release.clone(), blocker_started.clone());
        Work::new(move |_| {
            started.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(120);
            while !release.load(Ordering::SeqCst) && Instant::now() < deadline {
                cmwq::blocking(|| std::thread::sleep(Duration::from_millis(1)));
            }
        })
    };
    let before = cmwq::invariant_violations();
    assert!(wq.queue_on(0, &blocker).expect("cpu 0"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !blocker_started.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the blocker never started");
        std::hint::spin_loop();
    }
    let ran = Arc::new(AtomicUsize::new(0));
    let mut kept = Vec::new();
    let mut missed = None;
    for i in 0..20_000 {
        let item = {
            let ran = ran.clone();
            Work::new(move |_| {
                ran.fetch_add(1, Ordering::SeqCst);
            })
        };
        assert!(wq.queue_on(0, &item).expect("cpu 0"));
        kept.push(item);
        // Wait until it has run (the next is queued right away, as its worker finishes).
        let deadline = Instant::now() + Duration::from_secs(5);
        while ran.load(Ordering::SeqCst) <= i {
            if Instant::now() >= deadline {
                missed = Some(i);
                break;
            }
            std::hint::spin_loop();
        }
        if missed.is_some() {
            break;
        }
        if kept.len() > 64 {
            kept.clear();
        }
    }
    release.store(true, Ordering::SeqCst);
    wq.flush();
    assert_eq!(
        missed, None,
        "an item waited behind the blocker: lost wake-up"
    );
    assert_eq!(
        cmwq::invariant_violations() - before,
        0,
        "a worker slept while work waited (see stderr)"
    );
}

fn two_workers() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        cmwq::configure(Config {
            max_workers_per_pool: 2,
            ..Config::default()
        })
        .expect("configure");
    });
}

#[test]
fn unbound_workers_never_sleep_on_waiting_work() {
    two_workers();
    handoffs(WqFlags::UNBOUND);
}

#[test]
fn per_cpu_workers_never_sleep_on_waiting_work() {
    two_workers();
    handoffs(WqFlags::PERCPU);
}
