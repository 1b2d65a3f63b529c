//! Loom model of the delayed-work handoff: the timer firing, `mod_delayed`, cancel and a
//! worker racing on one item. `PENDING` is owned by whoever armed the timer until the timer
//! either fires (and queues the item) or is disarmed by a canceller, who then owns it. The
//! model checks that every armed or queued instance ends in exactly one run or one successful
//! cancel/modify (nothing lost, nothing duplicated) and that nothing deadlocks.
//!
//! ```text
//! RUSTFLAGS="--cfg cmwq_loom" cargo test -p cmwq --release --test loom_timer
//! ```
#![cfg(cmwq_loom)]

#[allow(dead_code)]
mod os {
    pub mod sync {
        pub mod atomic {
            pub use loom::sync::atomic::{AtomicU64, Ordering};
        }
    }
}

#[allow(dead_code)]
#[path = "../src/work/data.rs"]
mod data;

use data::{State, WorkData};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

const POOL: u32 = 1;

struct Model {
    word: WorkData,
    /// The timer slot (the item's timer lock): armed or not.
    armed: Mutex<bool>,
    /// The pool lock and its list.
    listed: Mutex<bool>,
    /// Instances created (armings) and ended (runs, successful steals).
    created: AtomicUsize,
    ended: AtomicUsize,
}

impl Model {
    fn new() -> Arc<Model> {
        Arc::new(Model {
            word: WorkData::new(),
            armed: Mutex::new(false),
            listed: Mutex::new(false),
            created: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
        })
    }

    /// The owner of PENDING arms the timer.
    fn arm_owned(&self) {
        let mut a = self.armed.lock().unwrap();
        assert!(!*a, "armed twice");
        *a = true;
        self.created.fetch_add(1, Ordering::Relaxed);
    }

    /// `queue_delayed`: take PENDING, arm.
    fn queue_delayed(&self) -> bool {
        if !self.word.try_set_pending() {
            return false;
        }
        self.arm_owned();
        true
    }

    /// The timer thread: if still armed, disarm and queue (PENDING passes to the list).
    fn fire(&self) {
        {
            let mut a = self.armed.lock().unwrap();
            if !*a {
                return;
            }
            *a = false;
        }
        let mut l = self.listed.lock().unwrap();
        assert!(!*l);
        self.word.set(data::queued(POOL, 0, 0, false));
        *l = true;
    }

    /// `try_to_grab_pending` with a timer: returns whether an instance was stolen.
    fn grab(&self) -> bool {
        loop {
            {
                let mut a = self.armed.lock().unwrap();
                if *a {
                    *a = false;
                    assert!(matches!(
                        self.word.state(),
                        State::OffQueue { pending: true, .. }
                    ));
                    return true;
                }
            }
            if self.word.try_set_pending() {
                return false;
            }
            if let st @ State::Queued { .. } = self.word.state() {
                let mut l = self.listed.lock().unwrap();
                if self.word.state() == st {
                    *l = false;
                    self.word.set(data::off_queue(POOL, 0, true));
                    return true;
                }
            }
            thread::yield_now();
        }
    }

    fn cancel(&self) -> bool {
        let stolen = self.grab();
        if stolen {
            self.ended.fetch_add(1, Ordering::Relaxed);
        }
        self.word.set(data::off_queue(POOL, 0, false));
        stolen
    }

    /// `mod_delayed`: steal from wherever it is, re-arm. Returns whether it was pending.
    fn mod_delayed(&self) -> bool {
        let stolen = self.grab();
        if stolen {
            self.ended.fetch_add(1, Ordering::Relaxed);
        }
        self.arm_owned();
        stolen
    }

    fn process_one(&self) -> bool {
        {
            let mut l = self.listed.lock().unwrap();
            if !*l {
                return false;
            }
            *l = false;
            self.word.start_execution(POOL);
        }
        self.ended.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn settle(&self) {
        self.fire();
        while self.process_one() {}
        assert_eq!(
            self.created.load(Ordering::Relaxed),
            self.ended.load(Ordering::Relaxed),
            "an instance was lost or duplicated"
        );
        assert!(!*self.armed.lock().unwrap());
        assert!(matches!(
            self.word.state(),
            State::OffQueue { pending: false, .. }
        ));
    }
}

#[test]
fn fire_vs_mod_delayed_vs_worker() {
    loom::model(|| {
        let m = Model::new();
        assert!(m.queue_delayed());
        let t = m.clone();
        let timer = thread::spawn(move || t.fire());
        let md = m.clone();
        let modder = thread::spawn(move || md.mod_delayed());
        let w = m.clone();
        let worker = thread::spawn(move || {
            w.process_one();
        });
        timer.join().unwrap();
        let was_pending = modder.join().unwrap();
        worker.join().unwrap();
        // The item was pending (armed or queued) or had just run when mod_delayed came.
        let _ = was_pending;
        m.settle();
    });
}

#[test]
fn fire_vs_cancel_vs_requeue() {
    loom::model(|| {
        let m = Model::new();
        assert!(m.queue_delayed());
        let t = m.clone();
        let timer = thread::spawn(move || t.fire());
        let c = m.clone();
        let canceller = thread::spawn(move || c.cancel());
        let q = m.clone();
        let queuer = thread::spawn(move || q.queue_delayed());
        timer.join().unwrap();
        canceller.join().unwrap();
        queuer.join().unwrap();
        m.settle();
    });
}
