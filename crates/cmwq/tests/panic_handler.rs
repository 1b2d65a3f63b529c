//! `WorkqueueBuilder::panic_handler`: a queue's own handler for the panics of its items,
//! instead of the global hook (which stays the default for the other queues).

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use cmwq::{Work, WorkField, WorkItem, WorkPanic, Workqueue, WqFlags};
use common::{global_hook, unique, wait_for, with_deadline, Latch};

type Seen = Arc<Mutex<Vec<WorkPanic>>>;

/// A builder whose handler records every report into the returned list.
fn recording(name: &str) -> (cmwq::WorkqueueBuilder, Seen) {
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let b = Workqueue::builder(name).panic_handler(move |p| {
        s.lock().unwrap_or_else(|e| e.into_inner()).push(p.clone());
    });
    (b, seen)
}

fn seen(s: &Seen) -> Vec<WorkPanic> {
    s.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// An item with its own function name, that panics when run.
struct Bomb {
    field: WorkField,
}

impl WorkItem for Bomb {
    fn work_field(&self) -> &WorkField {
        &self.field
    }

    fn run(&self, _work: &Work) {
        panic!("bomb went off");
    }

    fn name(&self) -> &'static str {
        "bomb_fn"
    }
}

fn bomb() -> Work {
    Work::from_arc(Arc::new(Bomb {
        field: WorkField::new(),
    }))
}

fn flush(item: &Work) {
    let i = item.clone();
    with_deadline("flush", move || i.flush());
}

#[test]
fn handler_gets_its_queues_panic_with_function_and_queue() {
    global_hook::install();
    let name = unique("ph-own");
    let (b, reports) = recording(&name);
    let wq = b.build().unwrap();
    let item = bomb();
    assert!(wq.queue(&item));
    flush(&item);
    wait_for("the handler's report", || !seen(&reports).is_empty());
    let got = seen(&reports);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].workqueue, name);
    assert_eq!(got[0].function, "bomb_fn");
    assert_eq!(got[0].message, "bomb went off");
    assert!(
        global_hook::reports_for(&name).is_empty(),
        "the global hook got a panic of a queue with a handler"
    );
}

#[test]
fn other_queues_still_go_to_the_global_hook() {
    global_hook::install();
    let own = unique("ph-with");
    let plain = unique("ph-without");
    let (b, reports) = recording(&own);
    let with = b.build().unwrap();
    let without = Workqueue::new(&plain, WqFlags::empty(), 0).unwrap();
    let (a, c) = (bomb(), bomb());
    assert!(with.queue(&a));
    assert!(without.queue(&c));
    flush(&a);
    flush(&c);
    wait_for("both reports", || {
        !seen(&reports).is_empty() && !global_hook::reports_for(&plain).is_empty()
    });
    assert!(seen(&reports).iter().all(|p| p.workqueue == own));
    assert!(global_hook::reports_for(&own).is_empty());
    assert_eq!(global_hook::reports_for(&plain), ["bomb went off"]);
}

#[test]
fn drop_panic_of_an_item_goes_to_the_handler() {
    global_hook::install();
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("drop went off");
            }
        }
    }
    let name = unique("ph-drop");
    let (b, reports) = recording(&name);
    let wq = b.build().unwrap();
    let guard = PanicOnDrop;
    let go = Arc::new(Latch::new());
    let g = go.clone();
    let item = Work::new(move |_| {
        let _ = &guard;
        g.wait_blocking();
    });
    assert!(wq.queue(&item));
    // The run waits until our handle is gone: the engine then holds the last reference, and
    // its `Drop` panics on a worker.
    drop(item);
    go.open();
    wait_for("the Drop panic's report", || !seen(&reports).is_empty());
    assert!(seen(&reports)[0].message.contains("drop went off"));
    assert!(global_hook::reports_for(&name).is_empty());
    wq.destroy();
}

#[test]
fn panicking_handler_leaves_the_pool_working() {
    global_hook::install();
    let name = unique("ph-bad-handler");
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let wq = Workqueue::builder(&name)
        .flags(WqFlags::UNBOUND)
        .max_active(1)
        .panic_handler(move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            panic!("the handler panics too");
        })
        .build()
        .unwrap();
    for round in 1..=3 {
        let item = bomb();
        assert!(wq.queue(&item));
        flush(&item);
        wait_for("the handler call", || calls.load(Ordering::SeqCst) >= round);
        let (next, runs) = common::counting_item();
        assert!(wq.queue(&next));
        flush(&next);
        assert_eq!(runs.load(Ordering::SeqCst), 1, "round {round}");
    }
    assert!(global_hook::reports_for(&name).is_empty());
    with_deadline("destroy", move || wq.destroy());
}

#[test]
fn handler_may_queue_work_on_its_own_queue() {
    global_hook::install();
    let name = unique("ph-requeue");
    let (follow, runs) = common::counting_item();
    let wq_slot: Arc<OnceLock<Workqueue>> = Arc::default();
    let (f, slot) = (follow.clone(), wq_slot.clone());
    let wq = Workqueue::builder(&name)
        .panic_handler(move |_| {
            if let Some(wq) = slot.get() {
                wq.queue(&f);
            }
        })
        .build()
        .unwrap();
    let _ = wq_slot.set(wq.clone());
    let item = bomb();
    assert!(wq.queue(&item));
    flush(&item);
    wait_for("the item queued by the handler", || {
        runs.load(Ordering::SeqCst) == 1
    });
    // The handler holds a handle on its own queue: break the cycle by destroying.
    with_deadline("destroy", move || wq.destroy());
}

#[test]
fn handler_is_dropped_at_destroy_with_no_lock_held() {
    struct OnDrop(Arc<AtomicBool>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            // Takes engine locks (the registry, every pool's): would deadlock or panic if
            // called under one of them.
            let _ = cmwq::pools();
            let _ = cmwq::show_workqueues();
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let capture = OnDrop(dropped.clone());
    let wq = Workqueue::builder(&unique("ph-dropped"))
        .panic_handler(move |_| {
            let _ = &capture;
        })
        .build()
        .unwrap();
    let b2 = wq.clone();
    drop(b2);
    assert!(
        !dropped.load(Ordering::SeqCst),
        "dropped while the queue lives"
    );
    with_deadline("destroy", move || wq.destroy());
    assert!(dropped.load(Ordering::SeqCst), "not dropped by destroy");
}

#[test]
fn builder_stays_clone_and_debug() {
    let (b, _reports) = recording("ph-debug");
    let b2 = b.clone().ordered();
    let text = format!("{b2:?}");
    assert!(text.contains("panic_handler"), "{text}");
    assert!(text.contains("ordered: true"), "{text}");
    drop(b);
}

/// Decision: a spawned closure's panic goes to its handle (`join`), not to the handler; only
/// a panic nobody can receive (the handle was dropped) is reported to it, as to the hook.
#[test]
fn spawn_panic_goes_to_the_handle_unless_detached() {
    global_hook::install();
    let name = unique("ph-spawn");
    let (b, reports) = recording(&name);
    let wq = b.flags(WqFlags::UNBOUND).build().unwrap();

    let joined = wq.spawn(|| -> u32 { panic!("joined panic") });
    let err = with_deadline("join", move || joined.join()).unwrap_err();
    assert!(err.is_panic());

    let go = Arc::new(Latch::new());
    let g = go.clone();
    let detached = wq.spawn(move || {
        g.wait();
        panic!("detached panic");
    });
    drop(detached);
    go.open();
    wait_for("the detached panic's report", || !seen(&reports).is_empty());
    with_deadline("flush", {
        let wq = wq.clone();
        move || wq.flush()
    });
    let got: Vec<String> = seen(&reports).into_iter().map(|p| p.message).collect();
    assert_eq!(
        got,
        ["detached panic"],
        "the joined panic must not be reported"
    );
    assert!(global_hook::reports_for(&name).is_empty());
}

/// Decision: a scoped item's panic belongs to the scope (its handle, or the scope re-raises
/// it); the handler never sees it.
#[test]
fn scope_panics_belong_to_the_scope() {
    global_hook::install();
    let name = unique("ph-scope");
    let (b, reports) = recording(&name);
    let wq = b.flags(WqFlags::UNBOUND).build().unwrap();
    let w = wq.clone();
    let outcome = with_deadline("scope", move || {
        catch_unwind(AssertUnwindSafe(|| {
            w.scope(|s| {
                let joined = s.spawn(|| -> u32 { panic!("scoped joined") });
                assert!(joined.join().unwrap_err().is_panic());
                s.spawn(|| panic!("scoped unjoined"));
            })
        }))
    });
    let payload = outcome.expect_err("the scope re-raises the unjoined panic");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"scoped unjoined"));
    with_deadline("flush", {
        let wq = wq.clone();
        move || wq.flush()
    });
    assert!(seen(&reports).is_empty(), "{:?}", seen(&reports));
    assert!(global_hook::reports_for(&name).is_empty());
}
