//! `spawn`, `WorkHandle` and `JoinError`: results, panics, cancellation, refusal, detaching,
//! and the handle as a future polled by a tiny hand-written executor.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use cmwq::{Error, JoinError, WorkHandle, Workqueue, WqFlags};
use common::{
    open_on_drop, thread_waker, unique, wait_for, with_deadline, Latch, DEADLINE, SETTLE,
};

/// Joins with a deadline: waits for `is_finished` first, so a bug fails instead of hanging.
#[track_caller]
fn join<T>(what: &str, h: WorkHandle<T>) -> Result<T, JoinError> {
    wait_for(what, || h.is_finished());
    h.join()
}

/// Sets its flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// The executor: polls `fut` on this thread, parking between polls, until it is ready or
/// [`DEADLINE`] passes (then it panics).
#[track_caller]
fn block_on<F: Future + Unpin>(mut fut: F) -> (F::Output, usize) {
    let (w, waker) = thread_waker();
    let mut cx = Context::from_waker(&waker);
    let start = Instant::now();
    loop {
        if let Poll::Ready(out) = Pin::new(&mut fut).poll(&mut cx) {
            return (out, w.wakes.load(Ordering::SeqCst));
        }
        let left = DEADLINE.saturating_sub(start.elapsed());
        assert!(!left.is_zero(), "future not ready within {DEADLINE:?}");
        std::thread::park_timeout(left);
    }
}

/// An ordered queue blocked by a spawned item until the returned latch opens.
fn blocked_ordered_queue(name: &str) -> (Workqueue, WorkHandle<()>, Arc<Latch>) {
    let wq = Workqueue::ordered(&unique(name), WqFlags::empty()).unwrap();
    let gate = Arc::new(Latch::new());
    let started = Arc::new(Latch::new());
    let blocker = {
        let (gate, started) = (gate.clone(), started.clone());
        wq.spawn(move || {
            started.open();
            gate.wait_blocking();
        })
    };
    started.wait();
    (wq, blocker, gate)
}

#[test]
fn spawn_returns_results() {
    let wq = Workqueue::new(&unique("spawn-res"), WqFlags::UNBOUND, 0).unwrap();
    let data = vec![1u64, 2, 3, 4];
    let h = wq.spawn(move || data.into_iter().sum::<u64>());
    assert_eq!(join("sum", h).unwrap(), 10);

    // A non-Copy, non-Sync result moves out.
    let h = wq.spawn(|| std::cell::Cell::new(String::from("moved")));
    assert_eq!(join("string", h).unwrap().into_inner(), "moved");

    // The free function goes to the unbound system queue.
    let h = cmwq::spawn(|| {
        cmwq::current_worker()
            .expect("runs on a worker")
            .name
            .contains('u')
    });
    assert!(
        join("system_dfl_wq", h).unwrap(),
        "ran on an unbound kworker/uN:M"
    );

    let handles: Vec<_> = (0..64u64).map(|i| wq.spawn(move || i * i)).collect();
    let got: Vec<u64> = handles
        .into_iter()
        .map(|h| join("many", h).unwrap())
        .collect();
    assert_eq!(got, (0..64u64).map(|i| i * i).collect::<Vec<_>>());
}

#[test]
fn system_queue_names() {
    assert_eq!(
        cmwq::system_dfl_wq().name(),
        cmwq::system_unbound_wq().name()
    );
    assert!(cmwq::system_dfl_wq().flags().contains(WqFlags::UNBOUND));
    assert_eq!(cmwq::system_percpu_wq().name(), cmwq::system_wq().name());
}

#[test]
fn panic_goes_to_join_and_reraises() {
    let wq = Workqueue::new(&unique("spawn-panic"), WqFlags::UNBOUND, 0).unwrap();
    let h = wq.spawn(|| -> u32 { panic!("boom in a spawned closure") });
    let err = join("panicking", h).unwrap_err();
    assert!(err.is_panic() && !err.is_cancelled() && !err.is_refused());
    assert!(
        err.to_string().contains("boom in a spawned closure"),
        "{err}"
    );
    assert!(format!("{err:?}").contains("Panic"), "{err:?}");
    let payload = err.into_panic();
    let reraised = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        std::panic::resume_unwind(payload)
    }))
    .expect_err("into_panic re-raises");
    assert_eq!(
        reraised.downcast_ref::<&str>(),
        Some(&"boom in a spawned closure")
    );

    // A String payload, and the queue keeps working afterwards.
    let h = wq.spawn(|| -> u32 { std::panic::panic_any(String::from("owned")) });
    let err = join("string panic", h).unwrap_err();
    assert_eq!(
        err.try_into_panic()
            .unwrap()
            .downcast_ref::<String>()
            .unwrap(),
        "owned"
    );
    assert_eq!(join("after panics", wq.spawn(|| 7)).unwrap(), 7);
}

#[test]
fn panic_hook_only_for_detached_items() {
    let name = unique("spawn-hook");
    let wq = Workqueue::new(&name, WqFlags::UNBOUND, 0).unwrap();
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let (seen, name) = (seen.clone(), name.clone());
        cmwq::set_panic_hook(move |p| {
            if p.workqueue == name {
                seen.lock().unwrap().push(p.message.clone());
            }
        });
    }
    // Joined: the payload is the joiner's, the hook is not told.
    let err = join("joined", wq.spawn(|| -> () { panic!("joined panic") })).unwrap_err();
    assert!(err.is_panic());
    // Detached before it panics: reported to the hook.
    let gate = Arc::new(Latch::new());
    let _open = open_on_drop(&[&gate]);
    let h = {
        let gate = gate.clone();
        wq.spawn(move || {
            gate.wait_blocking();
            panic!("detached panic")
        })
    };
    drop(h);
    gate.open();
    wait_for("the hook hears of the detached panic", || {
        !seen.lock().unwrap().is_empty()
    });
    with_deadline("flush", {
        let wq = wq.clone();
        move || wq.flush()
    });
    assert_eq!(*seen.lock().unwrap(), vec!["detached panic".to_string()]);
}

#[test]
fn cancel_before_start() {
    let (wq, blocker, gate) = blocked_ordered_queue("spawn-cancel");
    let _open = open_on_drop(&[&gate]);
    let ran = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let h = {
        let ran = ran.clone();
        let flag = DropFlag(dropped.clone());
        wq.spawn(move || {
            let _flag = &flag;
            ran.store(true, Ordering::SeqCst);
            5
        })
    };
    assert!(!h.is_finished());
    assert!(h.cancel(), "queued behind the blocker: not started");
    assert!(
        dropped.load(Ordering::SeqCst),
        "the closure is dropped by cancel"
    );
    assert!(h.is_finished());
    assert!(!h.cancel(), "a second cancel finds nothing");
    gate.open();
    join("blocker", blocker).unwrap();
    with_deadline("flush", {
        let wq = wq.clone();
        move || wq.flush()
    });
    assert!(
        !ran.load(Ordering::SeqCst),
        "a cancelled closure never runs"
    );
    let err = h.join().unwrap_err();
    assert!(
        err.is_cancelled() && !err.is_panic() && !err.is_refused(),
        "{err:?}"
    );
    assert!(err.to_string().contains("cancelled"));
    // Cancel after the run: false, and the result is still there.
    let h = wq.spawn(|| 9);
    wait_for("ran", || h.is_finished());
    assert!(!h.cancel());
    assert_eq!(h.join().unwrap(), 9);
}

#[test]
fn cancel_while_running_is_false() {
    let (wq, blocker, gate) = blocked_ordered_queue("spawn-cancel-run");
    let _open = open_on_drop(&[&gate]);
    assert!(!blocker.cancel(), "started: cannot be cancelled");
    assert!(!blocker.is_finished());
    gate.open();
    join("blocker", blocker).unwrap();
    drop(wq);
}

#[test]
fn spawn_on_destroyed_queue_is_refused() {
    let wq = Workqueue::new(&unique("spawn-refused"), WqFlags::empty(), 0).unwrap();
    let leftover = wq.clone();
    with_deadline("destroy", move || wq.destroy());
    let ran = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicBool::new(false));
    let h = {
        let ran = ran.clone();
        let flag = DropFlag(dropped.clone());
        leftover.spawn(move || {
            let _flag = &flag;
            ran.store(true, Ordering::SeqCst);
        })
    };
    assert!(h.is_finished(), "a refused item is finished at once");
    assert!(
        dropped.load(Ordering::SeqCst),
        "its closure is dropped unrun"
    );
    assert!(!h.cancel());
    let err = h.join().unwrap_err();
    assert!(err.is_refused() && !err.is_panic() && !err.is_cancelled());
    assert!(
        matches!(err.refusal(), Some(Error::Destroyed { .. })),
        "{err:?}"
    );
    assert!(std::error::Error::source(&err).is_some());
    assert!(err.to_string().contains("destroyed"), "{err}");
    assert!(!ran.load(Ordering::SeqCst));
}

#[test]
fn join_error_is_send_sync_error() {
    fn assert_traits<E: std::error::Error + Send + Sync + 'static>() {}
    assert_traits::<JoinError>();
    let err = join("boxed", cmwq::spawn(|| -> () { panic!("into a box") })).unwrap_err();
    let boxed: Box<dyn std::error::Error + Send + Sync> = err.into();
    assert!(boxed.to_string().contains("into a box"));
}

#[test]
fn spawn_on_draining_queue_is_refused() {
    let wq = Workqueue::new(&unique("spawn-draining"), WqFlags::UNBOUND, 0).unwrap();
    let gate = Arc::new(Latch::new());
    let _open = open_on_drop(&[&gate]);
    let blocker = {
        let gate = gate.clone();
        wq.spawn(move || gate.wait_blocking())
    };
    let drainer = {
        let wq = wq.clone();
        std::thread::spawn(move || wq.drain())
    };
    let mut refused = None;
    wait_for("a spawn refused while the queue drains", || {
        let err = wq.spawn(|| ()).join_refusal();
        refused = err;
        refused.is_some()
    });
    let err = refused.unwrap();
    assert!(err.is_refused());
    assert!(
        matches!(err.refusal(), Some(Error::Draining { .. })),
        "{err:?}"
    );
    gate.open();
    join("blocker", blocker).unwrap();
    common::join("drainer", drainer);
}

/// A refusal shows at once (`is_finished`); otherwise the handle is detached.
trait JoinRefusal {
    fn join_refusal(self) -> Option<JoinError>;
}

impl JoinRefusal for WorkHandle<()> {
    fn join_refusal(self) -> Option<JoinError> {
        if self.is_finished() {
            self.join().err().filter(JoinError::is_refused)
        } else {
            None
        }
    }
}

#[test]
fn is_finished_tracks_the_run() {
    let wq = Workqueue::new(&unique("spawn-finished"), WqFlags::UNBOUND, 0).unwrap();
    let gate = Arc::new(Latch::new());
    let _open = open_on_drop(&[&gate]);
    let h = {
        let gate = gate.clone();
        wq.spawn(move || {
            gate.wait_blocking();
            "done"
        })
    };
    std::thread::sleep(SETTLE);
    assert!(!h.is_finished());
    gate.open();
    wait_for("finished", || h.is_finished());
    assert_eq!(h.join().unwrap(), "done");
}

#[test]
fn dropped_handle_detaches() {
    let wq = Workqueue::new(&unique("spawn-detach"), WqFlags::UNBOUND, 0).unwrap();
    let gate = Arc::new(Latch::new());
    let _open = open_on_drop(&[&gate]);
    let ran = Arc::new(AtomicBool::new(false));
    let result_dropped = Arc::new(AtomicBool::new(false));
    let h = {
        let (gate, ran, rd) = (gate.clone(), ran.clone(), result_dropped.clone());
        wq.spawn(move || {
            gate.wait_blocking();
            ran.store(true, Ordering::SeqCst);
            DropFlag(rd)
        })
    };
    drop(h);
    gate.open();
    wait_for("a detached item still runs", || ran.load(Ordering::SeqCst));
    wait_for("its result is dropped", || {
        result_dropped.load(Ordering::SeqCst)
    });

    // Dropped after it finished: the result is dropped with the handle.
    let rd = Arc::new(AtomicBool::new(false));
    let h = {
        let rd = rd.clone();
        wq.spawn(move || DropFlag(rd))
    };
    wait_for("finished", || h.is_finished());
    assert!(!rd.load(Ordering::SeqCst));
    drop(h);
    assert!(rd.load(Ordering::SeqCst));
}

#[test]
fn join_inside_a_work_item() {
    let wq = Workqueue::new(&unique("spawn-nested"), WqFlags::empty(), 0).unwrap();
    let inner_wq = wq.clone();
    let h = wq.spawn(move || {
        let inner = inner_wq.spawn(|| 20);
        inner.join().unwrap() + 1
    });
    assert_eq!(join("nested", h).unwrap(), 21);
}

#[test]
fn future_completes_from_another_threads_progress() {
    let wq = Workqueue::new(&unique("spawn-future"), WqFlags::UNBOUND, 0).unwrap();
    let gate = Arc::new(Latch::new());
    let _open = open_on_drop(&[&gate]);
    let mut h = {
        let gate = gate.clone();
        wq.spawn(move || {
            gate.wait_blocking();
            99
        })
    };
    let (_w, waker) = thread_waker();
    assert!(Pin::new(&mut h)
        .poll(&mut Context::from_waker(&waker))
        .is_pending());
    let opener = {
        let gate = gate.clone();
        std::thread::spawn(move || {
            std::thread::sleep(SETTLE);
            gate.open();
        })
    };
    let (out, wakes) = block_on(h);
    assert_eq!(out.unwrap(), 99);
    assert!(wakes >= 1, "completed by a wake-up, not by luck");
    opener.join().unwrap();

    // Ready at once when already finished; errors come through the future too.
    let h = wq.spawn(|| -> u8 { panic!("async boom") });
    wait_for("finished", || h.is_finished());
    assert!(block_on(h).0.unwrap_err().is_panic());
}

#[test]
fn future_dropped_early_leaves_nothing_registered() {
    let wq = Workqueue::new(&unique("spawn-future-drop"), WqFlags::UNBOUND, 0).unwrap();
    let gate = Arc::new(Latch::new());
    let _open = open_on_drop(&[&gate]);
    let ran = Arc::new(AtomicBool::new(false));
    let mut h = {
        let (gate, ran) = (gate.clone(), ran.clone());
        wq.spawn(move || {
            gate.wait_blocking();
            ran.store(true, Ordering::SeqCst);
        })
    };
    let (w, waker) = thread_waker();
    assert!(Pin::new(&mut h)
        .poll(&mut Context::from_waker(&waker))
        .is_pending());
    drop(waker);
    assert_eq!(Arc::strong_count(&w), 2, "the handle holds the waker");
    drop(h);
    assert_eq!(
        Arc::strong_count(&w),
        1,
        "dropping the future drops its waker at once"
    );
    gate.open();
    wait_for("the detached item still runs", || {
        ran.load(Ordering::SeqCst)
    });
    with_deadline("flush", {
        let wq = wq.clone();
        move || wq.flush()
    });
    assert_eq!(w.wakes.load(Ordering::SeqCst), 0, "never woken");
    with_deadline("destroy", move || wq.destroy());
    assert_eq!(cmwq::invariant_violations(), 0);
}

#[test]
fn spawn_from_many_threads() {
    let wq = Workqueue::new(&unique("spawn-mt"), WqFlags::empty(), 0).unwrap();
    let producers: Vec<_> = (0..4u64)
        .map(|t| {
            let wq = wq.clone();
            std::thread::spawn(move || {
                let hs: Vec<_> = (0..200u64)
                    .map(|i| wq.spawn(move || t * 1000 + i))
                    .collect();
                hs.into_iter().map(|h| join("mt", h).unwrap()).sum::<u64>()
            })
        })
        .collect();
    let total: u64 = common::join_all("producers", producers).into_iter().sum();
    let expect: u64 = (0..4u64)
        .map(|t| (0..200u64).map(|i| t * 1000 + i).sum::<u64>())
        .sum();
    assert_eq!(total, expect);
}
