//! Loom model of the per-node active limit of unbound queues (`queue/node_active.rs`,
//! CONCURRENCY.md "Per-node active limits"): pwqs on two pools share a node counter `nr`
//! bounded by `max`; a queuer takes a slot with a lock-free CAS, and on failure goes on the
//! node's pending list (node lock) and tries once more; a releaser decrements, and if the node
//! has room and the list is not empty (looked at under the node lock) hands the slot on after
//! dropping its own pool lock: it reads the head, locks that pwq's pool, then the node lock
//! (pool → node), and activates one of its inactive items, rotating it to the tail.
//!
//! It checks that no slot is lost (at the end, a pwq with inactive items means the node is
//! full), that the node never admits more than `max`, that `nr` matches the pwqs' active
//! counts, that pending pwqs are served in turn, and that nothing deadlocks (never two pool
//! locks at once).
//!
//! ```text
//! RUSTFLAGS="--cfg cmwq_loom" cargo test -p cmwq --release --test loom_node_active
//! ```
#![cfg(cmwq_loom)]

use std::collections::VecDeque;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// A pwq's state, under its pool's lock (one pwq per pool in the model).
#[derive(Default)]
struct Pwq {
    nr_active: usize,
    inactive: usize,
    on_pending: bool,
    /// Items made active, ever (by queueing or by a handoff).
    activated: usize,
}

struct Node {
    nr: AtomicUsize,
    max: usize,
    /// The node lock: pool indices waiting for a slot.
    pending: Mutex<VecDeque<usize>>,
}

struct World {
    pools: Vec<Mutex<Pwq>>,
    node: Node,
}

impl Node {
    fn tryinc(&self) -> bool {
        let mut nr = self.nr.load(Ordering::Relaxed);
        loop {
            if nr >= self.max {
                return false;
            }
            match self
                .nr
                .compare_exchange(nr, nr + 1, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => nr = now,
            }
        }
    }
}

/// `tryinc_shared` without `fill`: the caller holds pool `i`'s lock (`pwq`).
fn tryinc_shared(w: &World, i: usize, pwq: &mut Pwq) -> bool {
    if pwq.on_pending {
        return false;
    }
    if w.node.tryinc() {
        return true;
    }
    let mut pending = w.node.pending.lock().unwrap();
    if !pwq.on_pending {
        pending.push_back(i);
        pwq.on_pending = true;
    }
    let obtained = w.node.tryinc();
    if obtained {
        pending.retain(|&p| p != i);
        pwq.on_pending = false;
    }
    obtained
}

/// `insert_work` on pool `i`.
fn queue(w: &World, i: usize) {
    let mut pwq = w.pools[i].lock().unwrap();
    if pwq.inactive == 0 && tryinc_shared(w, i, &mut pwq) {
        pwq.nr_active += 1;
        pwq.activated += 1;
    } else {
        pwq.inactive += 1;
    }
}

/// An active item of pool `i` retires (`dec_nr_in_flight` + `dec_shared`); the handoff runs
/// with the pool lock dropped.
fn retire(w: &World, i: usize) {
    let handoff = {
        let mut pwq = w.pools[i].lock().unwrap();
        pwq.nr_active -= 1;
        let nr = w.node.nr.fetch_sub(1, Ordering::Relaxed) - 1;
        nr < w.node.max && !w.node.pending.lock().unwrap().is_empty()
    };
    if handoff {
        activate_pending(w);
    }
}

/// `activate_pending`: no lock held on entry.
fn activate_pending(w: &World) {
    loop {
        let Some(first) = w.node.pending.lock().unwrap().front().copied() else {
            return;
        };
        let mut pwq = w.pools[first].lock().unwrap();
        let mut pending = w.node.pending.lock().unwrap();
        if pending.front() != Some(&first) {
            continue;
        }
        if !pwq.on_pending {
            pending.pop_front();
            continue;
        }
        if pwq.inactive == 0 {
            pwq.on_pending = false;
            pending.pop_front();
            continue;
        }
        if !w.node.tryinc() {
            return;
        }
        pwq.nr_active += 1;
        pwq.activated += 1;
        pending.pop_front();
        if pwq.inactive > 1 {
            pending.push_back(first);
        } else {
            pwq.on_pending = false;
        }
        pwq.inactive -= 1;
        return;
    }
}

fn world(max: usize, active: &[usize]) -> Arc<World> {
    let pools = active
        .iter()
        .map(|&n| {
            Mutex::new(Pwq {
                nr_active: n,
                activated: n,
                ..Pwq::default()
            })
        })
        .collect();
    Arc::new(World {
        pools,
        node: Node {
            nr: AtomicUsize::new(active.iter().sum()),
            max,
            pending: Mutex::new(VecDeque::new()),
        },
    })
}

/// The end state: counts agree, the limit held, and no slot was lost.
fn check(w: &World) {
    let pwqs: Vec<_> = w.pools.iter().map(|p| p.lock().unwrap()).collect();
    let active: usize = pwqs.iter().map(|p| p.nr_active).sum();
    let nr = w.node.nr.load(Ordering::Relaxed);
    assert_eq!(nr, active, "the node counts what its pwqs count");
    assert!(nr <= w.node.max, "the node admitted more than its limit");
    let waiting: usize = pwqs.iter().map(|p| p.inactive).sum();
    if waiting > 0 {
        assert_eq!(nr, w.node.max, "a slot was lost while items wait");
    }
    for (i, p) in pwqs.iter().enumerate() {
        if p.inactive > 0 {
            assert!(p.on_pending, "pwq {i} waits without being on the list");
        }
    }
}

/// A release on pool 0 races with a queuer on pool 1 (node full, limit 1).
#[test]
fn a_release_races_with_a_queuer_on_another_pool() {
    loom::model(|| {
        let w = world(1, &[1, 0]);
        let w1 = w.clone();
        let t = thread::spawn(move || retire(&w1, 0));
        queue(&w, 1);
        t.join().unwrap();
        check(&w);
        // The queued item got the slot, one way or the other.
        assert_eq!(w.pools[1].lock().unwrap().activated, 1);
    });
}

/// Two queuers on different pools and a release, limit 1: one of the two waits, the other
/// runs; nothing is lost.
#[test]
fn two_queuers_and_a_release() {
    loom::model(|| {
        let w = world(1, &[1, 0]);
        let (w1, w2) = (w.clone(), w.clone());
        let t1 = thread::spawn(move || retire(&w1, 0));
        let t2 = thread::spawn(move || queue(&w2, 0));
        queue(&w, 1);
        t1.join().unwrap();
        t2.join().unwrap();
        check(&w);
        let activated: usize = w.pools.iter().map(|p| p.lock().unwrap().activated).sum();
        assert_eq!(activated, 2, "the first item and one of the two new ones");
    });
}

/// Two releases at once with waiting pwqs on both pools (limit 2): both slots are handed on.
#[test]
fn two_releases_hand_both_slots_on() {
    loom::model(|| {
        let w = world(2, &[1, 1]);
        // Both pools have an item waiting, pool 0 first on the list.
        queue(&w, 0);
        queue(&w, 1);
        let w1 = w.clone();
        let t = thread::spawn(move || retire(&w1, 0));
        retire(&w, 1);
        t.join().unwrap();
        check(&w);
        for p in &w.pools {
            let p = p.lock().unwrap();
            assert_eq!((p.activated, p.inactive), (2, 0));
        }
    });
}

/// Served in turn: pool 0 waits first with two items, pool 1 second; two releases in a row
/// serve pool 0 then pool 1.
#[test]
fn pending_pwqs_are_served_in_turn() {
    loom::model(|| {
        let w = world(1, &[1, 0]);
        queue(&w, 0);
        queue(&w, 0);
        queue(&w, 1);
        retire(&w, 0);
        assert_eq!(w.pools[0].lock().unwrap().activated, 2);
        retire(&w, 0);
        assert_eq!(w.pools[1].lock().unwrap().activated, 1, "pool 1's turn");
        check(&w);
    });
}
