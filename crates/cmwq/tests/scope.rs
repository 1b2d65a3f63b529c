//! Scopes: items borrowing from the stack, waiting for every item, panics of items and of the
//! scope closure, cancelled and refused scoped items.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cmwq::{Workqueue, WqFlags};
use common::{open_on_drop, unique, with_deadline, Latch};

/// Sets its flag when dropped.
struct DropFlag<'a>(&'a AtomicBool);

impl Drop for DropFlag<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn items_borrow_from_the_stack_and_are_waited_for() {
    let (sums, done) = with_deadline("scope", || {
        let data: Vec<u64> = (1..=100).collect();
        let mut sums = [0u64; 4];
        let done = AtomicUsize::new(0);
        cmwq::scope(|s| {
            for (chunk, out) in data.chunks(25).zip(sums.iter_mut()) {
                let done = &done;
                // Not joined: the scope waits anyway.
                let _ = s.spawn(move || {
                    std::thread::sleep(Duration::from_millis(20));
                    *out = chunk.iter().sum();
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (sums, done.load(Ordering::SeqCst))
    });
    assert_eq!(done, 4, "every item finished before the scope returned");
    assert_eq!(sums, [325, 950, 1575, 2200]);
}

#[test]
fn workqueue_scope_joins_results() {
    let wq = Workqueue::new(&unique("scope-wq"), WqFlags::empty(), 0).unwrap();
    let total = with_deadline("scope", move || {
        let text = String::from("hello scoped world");
        let words: Vec<&str> = text.split(' ').collect();
        wq.scope(|s| {
            let hs: Vec<_> = words.iter().map(|w| s.spawn(move || w.len())).collect();
            // A handle moved into another scoped item is joined there.
            let first = s.spawn(|| 1);
            let chained = s.spawn(move || first.join().unwrap() * 100);
            hs.into_iter().map(|h| h.join().unwrap()).sum::<usize>() + chained.join().unwrap()
        })
    });
    assert_eq!(total, 5 + 6 + 5 + 100);
}

#[test]
fn item_panic_propagates_after_all_items_finish() {
    let (payload, finished) = with_deadline("scope", || {
        let finished = AtomicBool::new(false);
        let r = catch_unwind(AssertUnwindSafe(|| {
            cmwq::scope(|s| {
                let _ = s.spawn(|| -> () { panic!("scoped item panic") });
                let _ = s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(50));
                    finished.store(true, Ordering::SeqCst);
                });
            })
        }));
        (r.unwrap_err(), finished.load(Ordering::SeqCst))
    });
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"scoped item panic"));
    assert!(
        finished,
        "the slow item finished before the scope re-panicked"
    );
}

#[test]
fn joined_panic_is_not_reraised_by_the_scope() {
    let out = with_deadline("scope", || {
        cmwq::scope(|s| {
            let h = s.spawn(|| -> u8 { panic!("taken by join") });
            let err = h.join().unwrap_err();
            assert!(err.is_panic());
            "scope returned normally"
        })
    });
    assert_eq!(out, "scope returned normally");
}

#[test]
fn closure_panic_waits_for_items_then_propagates() {
    let (payload, finished) = with_deadline("scope", || {
        let finished = AtomicBool::new(false);
        let r = catch_unwind(AssertUnwindSafe(|| {
            cmwq::scope(|s| {
                let _ = s.spawn(|| {
                    std::thread::sleep(Duration::from_millis(50));
                    finished.store(true, Ordering::SeqCst);
                });
                // An item panic too: the closure's own panic wins.
                let _ = s.spawn(|| -> () { panic!("item") });
                panic!("scope closure panic");
            })
        }));
        (r.unwrap_err(), finished.load(Ordering::SeqCst))
    });
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"scope closure panic"));
    assert!(
        finished,
        "the items finished before the panic left the scope"
    );
}

#[test]
fn cancelled_scoped_item_never_runs_and_is_dropped() {
    let wq = Workqueue::ordered(&unique("scope-cancel"), WqFlags::empty()).unwrap();
    let (ran, dropped) = with_deadline("scope", move || {
        let gate = Arc::new(Latch::new());
        let _open = open_on_drop(&[&gate]);
        let started = Latch::new();
        let ran = AtomicBool::new(false);
        let dropped = AtomicBool::new(false);
        wq.scope(|s| {
            let blocker = s.spawn(|| {
                started.open();
                gate.wait_blocking();
            });
            started.wait();
            let flag = DropFlag(&dropped);
            let h = s.spawn(|| {
                let _flag = flag;
                ran.store(true, Ordering::SeqCst);
            });
            assert!(h.cancel());
            assert!(dropped.load(Ordering::SeqCst), "dropped by cancel");
            assert!(h.is_finished());
            assert!(h.join().unwrap_err().is_cancelled());
            gate.open();
            blocker.join().unwrap();
        });
        (ran.load(Ordering::SeqCst), dropped.load(Ordering::SeqCst))
    });
    assert!(!ran && dropped);
}

#[test]
fn refused_scoped_item_is_dropped_and_scope_returns() {
    let wq = Workqueue::new(&unique("scope-refused"), WqFlags::UNBOUND, 0).unwrap();
    let leftover = wq.clone();
    with_deadline("destroy", move || wq.destroy());
    let (ran, dropped, refused) = with_deadline("scope", move || {
        let ran = AtomicBool::new(false);
        let dropped = AtomicBool::new(false);
        let refused = leftover.scope(|s| {
            let flag = DropFlag(&dropped);
            let h = s.spawn(|| {
                let _flag = flag;
                ran.store(true, Ordering::SeqCst);
            });
            h.join().unwrap_err().is_refused()
        });
        (
            ran.load(Ordering::SeqCst),
            dropped.load(Ordering::SeqCst),
            refused,
        )
    });
    assert!(refused && dropped && !ran);
}

#[test]
fn unjoined_handle_dropped_before_the_item_finishes() {
    // The job drops the result itself (the handle is gone) before the scope returns.
    let dropped = with_deadline("scope", || {
        let dropped = AtomicBool::new(false);
        cmwq::scope(|s| {
            let h = s.spawn(|| {
                std::thread::sleep(Duration::from_millis(30));
                DropFlag(&dropped)
            });
            drop(h);
        });
        dropped.load(Ordering::SeqCst)
    });
    assert!(
        dropped,
        "the result borrowing the stack was dropped inside the scope"
    );
}
