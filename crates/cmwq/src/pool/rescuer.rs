//! Rescuers: one thread per `MEM_RECLAIM` workqueue, made at creation (so it exists when new
//! threads cannot be made), named `kworker/R-<wq>`. When a pool has failed to create a worker
//! for `mayday_initial_timeout`, the monitor calls the rescuers of the `MEM_RECLAIM` queues
//! with items waiting there (again every `mayday_interval`). A rescuer attaches to the pool
//! and runs its queue's items there one at a time until the pool recovers, turning to other
//! calls after `rescuer_batch` items (the 7.0 kernel's one-by-one rescuer).

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::config::config;
use crate::os::topology;
use crate::pool::manage::{alloc_worker_id, new_slot};
use crate::pool::worker::{assign_work, process_scheduled, set_worker_ctx, Deferred, WorkerCtx};
use crate::pool::{flags, kick_pool, need_to_create_worker, WorkerPool};
use crate::queue::workqueue::{WqFlags, WqShared};

struct State {
    stop: bool,
    /// Pools (and the queue's pwq slot there) that called for help, oldest first.
    maydays: VecDeque<(Arc<WorkerPool>, u32)>,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

/// The rescuer of one workqueue.
pub(crate) struct Rescuer {
    shared: Arc<Shared>,
    join: Option<JoinHandle<()>>,
}

impl Rescuer {
    pub(crate) fn start(wq: &Arc<WqShared>) -> Rescuer {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                stop: false,
                maydays: VecDeque::new(),
            }),
            cv: Condvar::new(),
        });
        let s2 = shared.clone();
        let name = format!("kworker/R-{}", wq.name);
        let join = std::thread::Builder::new()
            .name(topology::thread_name(&name))
            .spawn(move || rescuer_thread(s2, name))
            .map_err(|err| {
                tracing::warn!(target: "cmwq", workqueue = %wq.name, %err, "could not create rescuer")
            })
            .ok();
        crate::cm::monitor::ensure_started();
        Rescuer { shared, join }
    }

    /// Asks for help on `pool` for pwq `slot` (no-op if already asked).
    pub(crate) fn mayday(&self, pool: Arc<WorkerPool>, slot: u32) {
        let mut st = self.shared.state.lock();
        if st
            .maydays
            .iter()
            .any(|(p, s)| Arc::ptr_eq(p, &pool) && *s == slot)
        {
            return;
        }
        st.maydays.push_back((pool, slot));
        self.shared.cv.notify_one();
    }

    /// Stops the thread (after it has answered the calls already made) and joins it.
    pub(crate) fn stop(mut self) {
        self.shared.state.lock().stop = true;
        self.shared.cv.notify_all();
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

fn rescuer_thread(shared: Arc<Shared>, name: String) {
    let _ = topology::set_current_nice(crate::pool::HIGHPRI_NICE);
    loop {
        let (pool, slot) = {
            let mut st = shared.state.lock();
            loop {
                if let Some(job) = st.maydays.pop_front() {
                    break job;
                }
                if st.stop {
                    return;
                }
                shared.cv.wait(&mut st);
            }
        };
        if rescue(&pool, slot, &name, &shared) {
            shared.state.lock().maydays.push_back((pool, slot));
        }
    }
}

/// Runs the queue's items waiting on `pool` one at a time while the pool still needs a worker.
/// Returns whether the call should be re-queued (batch used up while others wait).
fn rescue(pool: &Arc<WorkerPool>, slot: u32, name: &str, shared: &Shared) -> bool {
    let batch = config().rescuer_batch;
    let mut g = pool.locked.lock();
    if g.destroying || g.pwqs.get(slot as usize).is_none_or(Option::is_none) {
        return false;
    }
    // Attach: a worker slot outside nr_workers and outside concurrency management.
    let id = alloc_worker_id(&mut g);
    let mut w = new_slot(flags::PREP, Arc::new(Condvar::new()), name.to_string());
    w.rescuer = true;
    w.wake = false;
    w.tid = topology::gettid();
    let in_item = w.in_item.clone();
    g.workers[id] = Some(w);
    set_worker_ctx(Some(WorkerCtx {
        pool: pool.clone(),
        id,
        in_item,
        name: name.to_string(),
    }));
    let mut done = 0usize;
    let mut requeue = false;
    // One walk over the worklist: items before the cursor are not this queue's.
    let mut cursor = 0;
    let mut deferred = Deferred::default();
    while need_to_create_worker(g.counters()) {
        let Some(entry) = g.worklist.take_next(&mut cursor, |e| e.slot == slot) else {
            break;
        };
        g.pwq(slot).nr_rescued += 1;
        if assign_work(&mut g, id, entry) {
            process_scheduled(pool, &mut g, id, &mut deferred);
        }
        done += 1;
        if done % batch == 0 && !shared.state.lock().maydays.is_empty() {
            requeue = true;
            break;
        }
    }
    let _ = kick_pool(&mut g);
    g.workers[id] = None;
    drop(g);
    set_worker_ctx(None);
    deferred.release();
    requeue
}

/// Monitor duty: if `pool` has been failing to create a worker for `mayday_initial_timeout`,
/// call the rescuers of the `MEM_RECLAIM` queues with items on its worklist (again every
/// `mayday_interval`).
pub(crate) fn check_mayday(pool: &Arc<WorkerPool>) {
    let cfg = config();
    let calls: Vec<(Arc<WqShared>, u32)> = {
        let mut g = pool.locked.lock();
        let Some(since) = g.creation_failed_since else {
            return;
        };
        if !need_to_create_worker(g.counters()) {
            // The shortage is over (an idle worker, or nothing waits): the next one starts
            // its own mayday delay, as the kernel's manager deletes its mayday timer.
            g.creation_failed_since = None;
            return;
        }
        if since.elapsed() < cfg.mayday_initial_timeout {
            return;
        }
        if g.last_mayday
            .is_some_and(|t| t.elapsed() < cfg.mayday_interval)
        {
            return;
        }
        g.last_mayday = Some(Instant::now());
        let mut slots: Vec<u32> = g.worklist.iter().map(|e| e.slot).collect();
        slots.sort_unstable();
        slots.dedup();
        slots
            .into_iter()
            .filter_map(|slot| {
                let p = g.pwq(slot);
                if p.wq.flags.contains(WqFlags::MEM_RECLAIM) {
                    p.nr_mayday += 1;
                    Some((p.wq.clone(), slot))
                } else {
                    None
                }
            })
            .collect()
    };
    for (wq, slot) in calls {
        wq.send_mayday(pool.clone(), slot);
    }
}
