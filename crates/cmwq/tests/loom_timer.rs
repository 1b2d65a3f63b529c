//! Loom model of the delayed-work handoff: the timer firing, `mod_delayed`, cancel, flush,
//! destroy's `cancel_for_wq` and a worker racing on one item. `PENDING` is owned by whoever
//! armed the timer until the timer either fires (and queues the item) or is disarmed, whose
//! caller then owns it.
//!
//! The model follows the protocol of `time/timer.rs` (CONCURRENCY.md, "Delayed work: the timer
//! and `PENDING`"): arming inserts a heap entry under the item's timer lock (slot → heap);
//! disarming takes the slot's entry handle and removes the entry (slot → heap); firing pops an
//! entry under the heap lock, releases it, then locks the slot and fires only if the slot
//! still holds that entry (the model's `key` stands for the heap handle). It checks that every
//! armed or queued instance ends in exactly one run or one successful cancel/modify/destroy
//! (nothing lost, nothing duplicated), that the heap never holds an entry for a dead arming,
//! that every item reference the engine gives up is dropped with no lock held, that none is
//! leaked, and that nothing deadlocks.
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

use std::cell::Cell;
use std::ops::{Deref, DerefMut};

use data::{State, WorkData};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex, MutexGuard};
use loom::thread;

const POOL: u32 = 1;
/// The tag (workqueue id) every arming of the model uses.
const TAG: u64 = 7;

loom::thread_local! {
    /// Model locks the current thread holds.
    static HELD: Cell<usize> = Cell::new(0);
}

/// A mutex that counts the locks its thread holds.
struct Lock<T>(Mutex<T>);

struct Held<'a, T>(MutexGuard<'a, T>);

impl<T> Lock<T> {
    fn new(v: T) -> Self {
        Lock(Mutex::new(v))
    }

    fn lock(&self) -> Held<'_, T> {
        let g = self.0.lock().unwrap();
        HELD.with(|h| h.set(h.get() + 1));
        Held(g)
    }
}

impl<T> Drop for Held<'_, T> {
    fn drop(&mut self) {
        HELD.with(|h| h.set(h.get() - 1));
    }
}

impl<T> Deref for Held<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Held<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// An armed timer in its slot.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Armed {
    key: u64,
    tag: u64,
}

/// The service's heap: `(key, tag)` per entry (each holds an item reference), and the arming
/// counter.
struct Heap {
    entries: Vec<(u64, u64)>,
    seq: u64,
}

struct Model {
    word: WorkData,
    /// The item's timer slot (the timer lock).
    slot: Lock<Option<Armed>>,
    /// The timer service's heap (the heap lock). (Firings are serialised by the service's
    /// `firing` lock; every model has one firer, so the model leaves that lock out.)
    heap: Lock<Heap>,
    /// The pool lock and its list (holding an item reference while listed).
    listed: Lock<bool>,
    /// Instances created (armings) and ended (runs, successful steals, destroy's disarms).
    created: AtomicUsize,
    ended: AtomicUsize,
    /// Item references the engine holds (heap entries, popped entries, collected candidates,
    /// the list's).
    refs: AtomicUsize,
}

impl Model {
    fn new() -> Arc<Model> {
        Arc::new(Model {
            word: WorkData::new(),
            slot: Lock::new(None),
            heap: Lock::new(Heap {
                entries: Vec::new(),
                seq: 0,
            }),
            listed: Lock::new(false),
            created: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            refs: AtomicUsize::new(0),
        })
    }

    fn clone_ref(&self) {
        self.refs.fetch_add(1, Ordering::Relaxed);
    }

    /// Gives up an item reference: it may be the last one, whose drop runs user code.
    fn drop_ref(&self) {
        assert_eq!(
            HELD.with(Cell::get),
            0,
            "an item reference was given up under a lock"
        );
        self.refs.fetch_sub(1, Ordering::Relaxed);
    }

    /// The owner of PENDING arms the timer: heap insert under the slot lock.
    fn arm_owned(&self) {
        let mut s = self.slot.lock();
        assert!(s.is_none(), "armed twice");
        let key = {
            let mut h = self.heap.lock();
            h.seq += 1;
            let key = h.seq;
            h.entries.push((key, TAG));
            self.clone_ref();
            assert!(h.entries.len() <= 1, "an entry outlived its arming");
            key
        };
        *s = Some(Armed { key, tag: TAG });
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

    /// The owner of PENDING puts the item on the list.
    fn insert_owned_locked(&self) {
        let mut l = self.listed.lock();
        assert!(!*l, "listed twice");
        self.word.set(data::queued(POOL, 0, 0, false));
        self.clone_ref();
        *l = true;
    }

    /// The timer thread (or `advance`): pop the earliest entry, then fire it if the slot still
    /// holds its key.
    fn fire(&self) {
        let popped = {
            let mut h = self.heap.lock();
            if h.entries.is_empty() {
                None
            } else {
                Some(h.entries.remove(0))
            }
        };
        let Some((key, _tag)) = popped else {
            return;
        };
        let mut s = self.slot.lock();
        if s.is_some_and(|a| a.key == key) {
            *s = None;
            // Queued under the timer lock.
            self.insert_owned_locked();
        }
        drop(s);
        self.drop_ref(); // the popped entry's reference
    }

    /// `del_timer`: disarm and remove the entry. `true`: the caller owns PENDING.
    fn del_timer(&self) -> bool {
        let mut s = self.slot.lock();
        let Some(armed) = s.take() else {
            return false;
        };
        let removed = {
            let mut h = self.heap.lock();
            let i = h.entries.iter().position(|e| e.0 == armed.key);
            i.map(|i| h.entries.remove(i)).is_some()
        };
        drop(s);
        if removed {
            self.drop_ref();
        }
        assert!(matches!(
            self.word.state(),
            State::OffQueue { pending: true, .. }
        ));
        true
    }

    /// `try_to_grab_pending` with a timer: returns whether an instance was stolen.
    fn grab(&self) -> bool {
        loop {
            if self.del_timer() {
                return true;
            }
            if self.word.try_set_pending() {
                return false;
            }
            if let st @ State::Queued { .. } = self.word.state() {
                let mut l = self.listed.lock();
                if self.word.state() == st {
                    *l = false;
                    self.word.set(data::off_queue(POOL, 0, true));
                    drop(l);
                    self.drop_ref(); // the list's reference
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

    /// `DelayedWork::flush`'s first half: fire a pending timer now.
    fn flush_fire(&self) {
        if self.del_timer() {
            self.insert_owned_locked();
        }
    }

    /// Destroy's `cancel_for_wq`: clone the tag's entries under the heap lock, then disarm
    /// each under its slot lock and release PENDING.
    fn cancel_for_wq(&self) {
        let candidates = {
            let h = self.heap.lock();
            let n = h.entries.iter().filter(|e| e.1 == TAG).count();
            for _ in 0..n {
                self.clone_ref();
            }
            n
        };
        for _ in 0..candidates {
            let mut s = self.slot.lock();
            if let Some(armed) = s.take_if(|a| a.tag == TAG) {
                let removed = {
                    let mut h = self.heap.lock();
                    let i = h.entries.iter().position(|e| e.0 == armed.key);
                    i.map(|i| h.entries.remove(i)).is_some()
                };
                drop(s);
                self.word.release_pending();
                self.ended.fetch_add(1, Ordering::Relaxed);
                if removed {
                    self.drop_ref();
                }
            } else {
                drop(s);
            }
            self.drop_ref(); // the candidate
        }
    }

    fn process_one(&self) -> bool {
        {
            let mut l = self.listed.lock();
            if !*l {
                return false;
            }
            *l = false;
            self.word.start_execution(POOL);
        }
        self.ended.fetch_add(1, Ordering::Relaxed);
        self.drop_ref(); // the list's reference, after the run
        true
    }

    fn settle(&self) {
        {
            // Quiescent: every entry in the heap is the slot's current arming.
            let s = self.slot.lock();
            let h = self.heap.lock();
            for e in &h.entries {
                assert_eq!(s.map(|a| a.key), Some(e.0), "a heap entry of a dead arming");
            }
        }
        self.fire();
        while self.process_one() {}
        assert_eq!(
            self.created.load(Ordering::Relaxed),
            self.ended.load(Ordering::Relaxed),
            "an instance was lost or duplicated"
        );
        assert!(self.slot.lock().is_none());
        assert!(self.heap.lock().entries.is_empty(), "an entry was left");
        assert_eq!(self.refs.load(Ordering::Relaxed), 0, "a reference leaked");
        assert!(matches!(
            self.word.state(),
            State::OffQueue { pending: false, .. }
        ));
    }
}

/// Runs `f` under loom with at most four preemptions per execution (unless
/// `LOOM_MAX_PREEMPTIONS` says otherwise): every interleaving that needs four or fewer forced
/// switches. Unbounded, these models take many minutes; a bound of 5 takes about a minute.
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(4);
    }
    b.check(f);
}

#[test]
fn fire_vs_mod_delayed_vs_worker() {
    model(|| {
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
        let _was_pending = modder.join().unwrap();
        worker.join().unwrap();
        m.settle();
    });
}

#[test]
fn fire_vs_cancel_vs_requeue() {
    model(|| {
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

#[test]
fn fire_vs_destroy_vs_mod_delayed() {
    model(|| {
        let m = Model::new();
        assert!(m.queue_delayed());
        let t = m.clone();
        let timer = thread::spawn(move || t.fire());
        let d = m.clone();
        let destroyer = thread::spawn(move || d.cancel_for_wq());
        let md = m.clone();
        let modder = thread::spawn(move || md.mod_delayed());
        timer.join().unwrap();
        destroyer.join().unwrap();
        modder.join().unwrap();
        m.settle();
    });
}

#[test]
fn fire_vs_flush_vs_cancel() {
    model(|| {
        let m = Model::new();
        assert!(m.queue_delayed());
        let t = m.clone();
        let timer = thread::spawn(move || t.fire());
        let f = m.clone();
        let flusher = thread::spawn(move || f.flush_fire());
        let c = m.clone();
        let canceller = thread::spawn(move || c.cancel());
        timer.join().unwrap();
        flusher.join().unwrap();
        canceller.join().unwrap();
        m.settle();
    });
}
