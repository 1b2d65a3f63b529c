//! Loom models of the work data word protocol (queue vs cancel vs execute vs flush).
//!
//! The word's code is `src/work/data.rs` itself, compiled here against loom's atomics; the pool is
//! modelled as a loom mutex around the item's single possible list slot, as the engine's pool
//! lock guards its lists. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg cmwq_loom" cargo test -p cmwq --release --test loom_work_data
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
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

const POOL: u32 = 1;

/// One work item and the pool list it can sit on (the item appears at most once).
struct Model {
    word: WorkData,
    /// The pool lock and its list: `true` when the item is on it.
    listed: Mutex<bool>,
    runs: AtomicUsize,
    /// Payload written by producers before queueing.
    payload: AtomicU64,
}

impl Model {
    fn new() -> Arc<Model> {
        Arc::new(Model {
            word: WorkData::new(),
            listed: Mutex::new(false),
            runs: AtomicUsize::new(0),
            payload: AtomicU64::new(0),
        })
    }

    /// `queue_work`: test-and-set PENDING, then insert under the pool lock.
    fn queue(&self) -> bool {
        if !self.word.try_set_pending() {
            return false;
        }
        if let State::OffQueue { disable, .. } = self.word.state() {
            if disable > 0 {
                self.word.release_pending();
                return false;
            }
        }
        let mut l = self.listed.lock().unwrap();
        assert!(!*l, "a pending item was listed twice");
        self.word.set(data::queued(POOL, 0, 0, false));
        *l = true;
        true
    }

    /// A worker: takes the item off the list under the lock and clears PENDING, then runs.
    /// Returns the payload the run saw, if it ran.
    fn process_one(&self) -> Option<u64> {
        {
            let mut l = self.listed.lock().unwrap();
            if !*l {
                return None;
            }
            *l = false;
            self.word.start_execution(POOL);
        }
        self.runs.fetch_add(1, Ordering::Relaxed);
        Some(self.payload.load(Ordering::Relaxed))
    }

    /// `try_to_grab_pending` + finishing a cancel. Returns whether it was pending.
    fn cancel(&self, add_disable: i32) -> bool {
        loop {
            if self.word.try_set_pending() {
                let State::OffQueue { disable, .. } = self.word.state() else {
                    panic!("owner found the item queued");
                };
                let d = (disable as i32 + add_disable) as u32;
                self.word.set(data::off_queue(POOL, d, false));
                return false;
            }
            if let st @ State::Queued { .. } = self.word.state() {
                let mut l = self.listed.lock().unwrap();
                if self.word.state() == st {
                    assert!(*l, "word says queued but the list is empty");
                    *l = false;
                    self.word.set(data::off_queue(POOL, 0, true));
                    drop(l);
                    let d = add_disable.max(0) as u32;
                    self.word.set(data::off_queue(POOL, d, false));
                    return true;
                }
            }
            thread::yield_now();
        }
    }
}

/// "Every store made before a queue() call, whatever it returned, is seen by a run that starts
/// after the call": the last run must see the producer's payload.
#[test]
fn queue_false_still_publishes_stores() {
    loom::model(|| {
        let m = Model::new();
        assert!(m.queue());
        let p = m.clone();
        let producer = thread::spawn(move || {
            p.payload.store(1, Ordering::Relaxed);
            p.queue();
        });
        let w = m.clone();
        let worker = thread::spawn(move || {
            let mut last = None;
            for _ in 0..2 {
                if let Some(v) = w.process_one() {
                    last = Some(v);
                }
            }
            last
        });
        producer.join().unwrap();
        let mut last = worker.join().unwrap();
        if let Some(v) = m.process_one() {
            last = Some(v);
        }
        assert_eq!(
            last,
            Some(1),
            "the last run missed a store made before queue()"
        );
    });
}

/// Queue, cancel and execute racing: every successful queue ends in exactly one run or one
/// successful cancel; the list and the word never disagree.
#[test]
fn queue_cancel_execute_account_exactly() {
    loom::model(|| {
        let m = Model::new();
        let queued = Arc::new(AtomicUsize::new(usize::from(m.queue())));
        let cancelled = Arc::new(AtomicUsize::new(0));

        let (mq, q) = (m.clone(), queued.clone());
        let queuer = thread::spawn(move || {
            if mq.queue() {
                q.fetch_add(1, Ordering::Relaxed);
            }
        });
        let (mc, c) = (m.clone(), cancelled.clone());
        let canceller = thread::spawn(move || {
            if mc.cancel(0) {
                c.fetch_add(1, Ordering::Relaxed);
            }
        });
        let mw = m.clone();
        let worker = thread::spawn(move || {
            mw.process_one();
        });
        queuer.join().unwrap();
        canceller.join().unwrap();
        worker.join().unwrap();
        while m.process_one().is_some() {}
        assert_eq!(
            queued.load(Ordering::Relaxed),
            m.runs.load(Ordering::Relaxed) + cancelled.load(Ordering::Relaxed)
        );
        assert!(!*m.listed.lock().unwrap());
        assert!(matches!(
            m.word.state(),
            State::OffQueue { pending: false, .. }
        ));
    });
}

/// Disable racing a queue: while disabled nothing is queued and PENDING is never left stuck;
/// enable makes the item queueable again.
#[test]
fn disable_refuses_queue_and_never_sticks() {
    loom::model(|| {
        let m = Model::new();
        let md = m.clone();
        let disabler = thread::spawn(move || md.cancel(1));
        let mq = m.clone();
        let queuer = thread::spawn(move || mq.queue());
        disabler.join().unwrap();
        let queued = queuer.join().unwrap();
        while m.process_one().is_some() {}
        // Disabled now: queueing is refused and leaves the word idle.
        assert!(!m.queue());
        assert!(matches!(
            m.word.state(),
            State::OffQueue {
                pending: false,
                disable: 1,
                ..
            }
        ));
        // Enable (cancel with -1 on an idle item) and queue again.
        assert!(!m.cancel(-1));
        assert!(m.queue());
        assert_eq!(m.process_one().is_some(), true);
        let _ = queued;
    });
}

/// Flush (waiting for the queued instance) racing the worker: under the pool lock the flusher
/// either sees the item queued (and the run completes it later) or finds it taken; it never
/// registers on an item that already left the list.
#[test]
fn flush_sees_queued_or_gone() {
    loom::model(|| {
        let m = Model::new();
        assert!(m.queue());
        let waiter = Arc::new(Mutex::new(false)); // registered
        let done = Arc::new(AtomicUsize::new(0));
        let (mf, wf) = (m.clone(), waiter.clone());
        let flusher = thread::spawn(move || {
            let l = mf.listed.lock().unwrap();
            let queued = matches!(mf.word.state(), State::Queued { .. });
            assert_eq!(queued, *l, "word and list disagree under the lock");
            if queued {
                *wf.lock().unwrap() = true;
            }
            queued
        });
        let (mw, ww, dw) = (m.clone(), waiter.clone(), done.clone());
        let worker = thread::spawn(move || {
            let mut l = mw.listed.lock().unwrap();
            if *l {
                *l = false;
                mw.word.start_execution(POOL);
                // The worker moves registered waiters to itself under the same lock.
                if *ww.lock().unwrap() {
                    dw.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let registered = flusher.join().unwrap();
        worker.join().unwrap();
        if registered {
            assert_eq!(
                done.load(Ordering::Relaxed),
                1,
                "a registered flusher was lost"
            );
        }
    });
}
