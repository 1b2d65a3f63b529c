//! Changing an unbound workqueue's attributes at run time (the kernel's
//! `apply_workqueue_attrs`): new pool workqueues are linked and published in a new table, so
//! new items go to them, while the replaced ones finish what they hold and are released when
//! idle (the kernel's `pwq_release_workfn`, here on the `cmwq-pwq-release` thread).
//!
//! Lock order as everywhere: wq mutex → pool lock → leaf locks (`WqShared::linked`, the
//! releaser's list). Pools are put, and released pwqs dropped, with no lock held: a put may
//! join exiting workers, and those may be dropping items (user code) that use the queue.

use std::sync::{Arc, Once, OnceLock};

use parking_lot::{Condvar, Mutex};

use crate::pool::{self, PoolLocked, WorkerPool};
use crate::queue::attrs::{unbound_pods, WorkqueueAttrs};
use crate::queue::create::{check_unbound_attrs, link_pwqs};
use crate::queue::freezer::{pwq_max_active, wq_adjust_max_active};
use crate::queue::node_active;
use crate::queue::pwq::{PwqLocked, PwqTable};
use crate::queue::workqueue::{state, WqLocked, WqShared};
use crate::work::data;
use crate::{Error, Workqueue};

impl Workqueue {
    /// Changes the attributes of an unbound queue at run time (the kernel's
    /// `apply_workqueue_attrs`): pool workqueues for the new attributes (one per pod, pools
    /// shared by equal attributes as at creation) are linked and new items go to them; items
    /// already queued or running finish on the old ones, which are released once idle.
    /// Nothing is lost or run twice; an item running on an old pwq and queued again runs
    /// after that instance; an ordered queue keeps its order across the switch (its new pwq
    /// starts only when the old ones are idle, the kernel's plugged pwq). A flush issued after
    /// the call waits for the items of the old pwqs and of the new; `set_max_active` and the
    /// freezer apply to both. [`attrs`](Self::attrs) reports the new attributes. Applying
    /// the attributes in force changes nothing.
    ///
    /// Errors: [`Error::NotUnbound`] for a per-CPU queue, [`Error::InvalidAttrs`] or
    /// [`Error::InvalidCpu`] for attributes the builder would refuse (nice outside
    /// -20..=19, an empty cpumask, a CPU outside [`online_cpus`](crate::online_cpus)),
    /// [`Error::Destroyed`] once the queue is being destroyed.
    ///
    /// ```
    /// use cmwq::{AffinityScope, Workqueue, WqFlags};
    ///
    /// let wq = Workqueue::new("apply-example", WqFlags::UNBOUND, 0)?;
    /// let first = cmwq::online_cpus()[0];
    /// let attrs = wq
    ///     .attrs()
    ///     .with_nice(5)
    ///     .with_cpumask([first])
    ///     .with_affinity_scope(AffinityScope::System);
    /// wq.apply_attrs(&attrs)?;
    /// assert_eq!(wq.attrs(), attrs);
    ///
    /// let percpu = Workqueue::new("apply-percpu", WqFlags::PERCPU, 0)?;
    /// assert!(matches!(percpu.apply_attrs(&attrs), Err(cmwq::Error::NotUnbound { .. })));
    /// # Ok::<(), cmwq::Error>(())
    /// ```
    pub fn apply_attrs(&self, attrs: &WorkqueueAttrs) -> Result<(), Error> {
        apply_attrs(self.shared(), attrs)
    }
}

/// [`Workqueue::apply_attrs`], for callers holding the queue but no handle (the control
/// endpoint).
pub(crate) fn apply_attrs(wq: &Arc<WqShared>, attrs: &WorkqueueAttrs) -> Result<(), Error> {
    if !wq.is_unbound() {
        return Err(Error::NotUnbound {
            workqueue: wq.name.clone(),
        });
    }
    check_unbound_attrs(attrs)?;
    ensure_releaser();
    let l = wq.mutex.lock();
    // Acquire: pairs with destroy's Release `fetch_or`. Under the wq mutex: a destroy that
    // set the bit after this check drains (its flushes take the mutex) after we are done.
    let st = wq.state.load(std::sync::atomic::Ordering::Acquire);
    if st & (state::DESTROYING | state::DESTROYED) != 0 {
        return Err(wq.refusal(st));
    }
    if wq.table.get().attrs == *attrs {
        return Ok(());
    }
    let (pool_attrs, pod_of_cpu) = unbound_pods(attrs, wq.ordered);
    let pools: Vec<Arc<WorkerPool>> = pool_attrs.iter().map(pool::get_unbound_pool).collect();
    // Each new pod's node counter, and whether the node holds other new pods (the counters
    // are the queue's, shared with the old pwqs; see `queue/node_active.rs`).
    let topo = crate::os::cpu_topology::cached();
    let pods: Vec<Vec<usize>> = pool_attrs.iter().map(|p| p.cpumask.clone()).collect();
    let pod_node = node_active::pod_nodes(&topo, &pods);
    let nodes: Vec<(u32, bool)> = pod_node
        .iter()
        .copied()
        .zip(node_active::shared_nodes(&pod_node))
        .collect();
    let old = wq.pwqs();
    // An ordered queue's new pwq waits for the old ones (unplugged below if they are idle).
    let plugged = wq.ordered && !old.is_empty();
    let Some(new) = link_pwqs(wq, &pools, &nodes, l.flush.work_color(), plugged) else {
        drop(l);
        for pool in &pools {
            pool::put_unbound_pool(pool);
        }
        return Err(Error::TooManyWorkqueues {
            max: data::MAX_SLOT + 1,
        });
    };
    wq.linked.lock().extend(new.iter().cloned());
    // From here on new items go to the new pwqs (a queuer that read the old table may still
    // put one on an old pwq: it is linked until idle, or the queuer finds it released and
    // reads the table again).
    wq.table.publish(PwqTable {
        pwqs: new,
        pod_of_cpu,
        attrs: attrs.clone(),
    });
    let mut released = Vec::new();
    for pwq in &old {
        // An old pwq released since `old` was read may have left its slot to one of the new
        // pwqs (same pool, same queue): that slot is not an old pwq any more.
        let reused = wq
            .table
            .get()
            .pwqs
            .iter()
            .any(|n| n.slot == pwq.slot && Arc::ptr_eq(&n.pool, &pwq.pool));
        if reused {
            continue;
        }
        let mut g = pwq.pool.locked.lock();
        let Some(p) = g.pwq_of(pwq.slot, wq.id) else {
            continue;
        };
        p.replaced = true;
        if p.is_idle() {
            released.extend(take_replaced(&mut g, pwq.slot));
        }
    }
    // The limits of old and new pwqs: the nodes' shares by the new cpumask (the new pwqs
    // start at 0, a plugged one stays there).
    node_active::set_node_cpus(&wq.node_nr_active, &topo, &attrs.cpumask);
    wq_adjust_max_active(wq, &l);
    unplug_oldest(wq, &l);
    drop(l);
    for r in released {
        r.finish();
    }
    Ok(())
}

/// A released pwq: its state (which holds a reference to the queue) and the pool whose
/// reference it held, both given up with no lock held.
struct Released {
    pool: Arc<WorkerPool>,
    pwq: PwqLocked,
}

impl Released {
    fn finish(self) {
        let Released { pool, pwq } = self;
        drop(pwq);
        pool::put_unbound_pool(&pool);
    }
}

/// Takes the idle replaced pwq in `slot` of the pool `g` guards out of its slot and out of
/// its queue's linked list (pool lock held, then the `linked` leaf lock).
fn take_replaced(g: &mut PoolLocked, slot: u32) -> Option<Released> {
    let me: *const PoolLocked = g;
    let pwq = g.take_pwq(slot)?;
    pwq.wq.retired.lock().add(&pwq);
    let link = {
        let mut linked = pwq.wq.linked.lock();
        let at = linked
            .iter()
            .position(|l| l.slot == slot && std::ptr::eq(l.pool.locked.data_ptr(), me))?;
        linked.remove(at)
    };
    Some(Released {
        pool: link.pool,
        pwq,
    })
}

/// Called under the pool lock by `dec_nr_in_flight` when a replaced pwq becomes idle: frees
/// its slot now (a queuer that still finds it goes to the current table) and hands the rest
/// (the pool's put, an ordered queue's unplug) to the releaser thread.
pub(crate) fn release_replaced(g: &mut PoolLocked, slot: u32) {
    if let Some(r) = take_replaced(g, slot) {
        let rel = releaser();
        rel.list.lock().push(r);
        rel.cv.notify_one();
    }
}

/// Unplugs the oldest linked pwq of an ordered queue (the kernel's `unplug_oldest_pwq`):
/// once the pwqs before it are released, its held items may start, in order. The caller
/// holds the wq mutex.
fn unplug_oldest(wq: &WqShared, l: &WqLocked) {
    if !wq.ordered {
        return;
    }
    let Some(first) = wq.linked.lock().first().cloned() else {
        return;
    };
    let mut g = first.pool.locked.lock();
    let Some(p) = g.pwq_of(first.slot, wq.id) else {
        return;
    };
    if !p.plugged {
        return;
    }
    p.plugged = false;
    p.max_active = pwq_max_active(wq, l, p.node, false);
    let (_, kick) = g.activate_inactive(first.pool.id, first.slot);
    drop(g);
    if kick == pool::Kick::CreateFirstWorker {
        pool::manage::create_first_worker(&first.pool);
    }
}

/// The pwqs released under a pool lock, waiting for their pool's put (the kernel's
/// `pwq_release_worker`).
struct Releaser {
    list: Mutex<Vec<Released>>,
    cv: Condvar,
}

fn releaser() -> &'static Releaser {
    static RELEASER: OnceLock<Releaser> = OnceLock::new();
    RELEASER.get_or_init(|| Releaser {
        list: Mutex::new(Vec::new()),
        cv: Condvar::new(),
    })
}

/// Starts the releaser thread (once, before the first pwq is replaced). If it cannot start,
/// the releases wait for the next `apply_attrs` or destroy, which run them too.
fn ensure_releaser() {
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        let spawned = std::thread::Builder::new()
            .name("cmwq-pwq-release".into())
            .spawn(|| loop {
                {
                    let rel = releaser();
                    let mut list = rel.list.lock();
                    while list.is_empty() {
                        rel.cv.wait(&mut list);
                    }
                }
                run_released();
            });
        if let Err(err) = spawned {
            tracing::error!(target: "cmwq", "cannot start the pwq release thread: {err}");
        }
    });
    run_released();
}

/// Finishes the releases waiting on the releaser's list: unplugs the next pwq of ordered
/// queues, puts the pools. Called by the releaser thread, and by destroy and `apply_attrs`
/// (no lock held).
pub(crate) fn run_released() {
    let list = std::mem::take(&mut *releaser().list.lock());
    for r in list {
        let wq = r.pwq.wq.clone();
        if wq.ordered {
            let l = wq.mutex.lock();
            unplug_oldest(&wq, &l);
        }
        r.finish();
    }
}

/// Pool workqueue slots in use over every pool, and the linked pwqs of `wq`: for tests that
/// check that replaced pwqs are released (their slots freed, their pools put).
#[doc(hidden)]
pub fn pwq_counts(wq: &Workqueue) -> (usize, usize) {
    let slots = pool::all_pools()
        .iter()
        .map(|p| p.locked.lock().pwqs.iter().flatten().count())
        .sum();
    (slots, wq.shared().linked.lock().len())
}
