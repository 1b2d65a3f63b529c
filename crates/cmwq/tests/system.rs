//! System workqueues, `schedule_work*`, work item identity, embedded and static items.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use cmwq::{
    current_work, current_worker, online_cpus, Error, StaticWork, Work, WorkField, WorkItem,
    Workqueue, WqFlags,
};
use common::{counting_item, unique, with_deadline, Blocker};

fn flush(item: &Work) -> bool {
    let i = item.clone();
    with_deadline("flush item", move || i.flush())
}

#[test]
fn system_workqueues_have_kernel_names_and_flags() {
    type Accessor = fn() -> &'static Workqueue;
    let table: [(Accessor, &str, WqFlags, WqFlags); 7] = [
        (
            cmwq::system_wq,
            "events",
            WqFlags::empty(),
            WqFlags::UNBOUND | WqFlags::HIGHPRI,
        ),
        (
            cmwq::system_highpri_wq,
            "events_highpri",
            WqFlags::HIGHPRI,
            WqFlags::UNBOUND,
        ),
        (
            cmwq::system_long_wq,
            "events_long",
            WqFlags::empty(),
            WqFlags::UNBOUND | WqFlags::HIGHPRI,
        ),
        (
            cmwq::system_unbound_wq,
            "events_unbound",
            WqFlags::UNBOUND,
            WqFlags::HIGHPRI | WqFlags::PERCPU,
        ),
        (
            cmwq::system_freezable_wq,
            "events_freezable",
            WqFlags::FREEZABLE,
            WqFlags::UNBOUND | WqFlags::HIGHPRI,
        ),
        (
            cmwq::system_power_efficient_wq,
            "events_power_efficient",
            WqFlags::POWER_EFFICIENT,
            WqFlags::HIGHPRI | WqFlags::FREEZABLE,
        ),
        (
            cmwq::system_freezable_power_efficient_wq,
            "events_freezable_pwr_efficient",
            WqFlags::FREEZABLE | WqFlags::POWER_EFFICIENT,
            WqFlags::HIGHPRI,
        ),
    ];
    let mut seen = HashSet::new();
    for (get, name, has, lacks) in table {
        let wq = get();
        assert_eq!(wq.name(), name);
        assert!(
            wq.flags().contains(has),
            "{name}: flags {:#x} lack {:#x}",
            wq.flags().bits(),
            has.bits()
        );
        assert!(
            !wq.flags().intersects(lacks),
            "{name}: flags {:#x} must not contain {:#x}",
            wq.flags().bits(),
            lacks.bits()
        );
        assert!(
            !wq.flags().contains(WqFlags::MEM_RECLAIM),
            "{name}: system workqueues have no rescuer"
        );
        assert!(!wq.is_ordered(), "{name} is not ordered");
        assert!(
            std::ptr::eq(wq, get()),
            "{name}: accessor returns the same queue"
        );
        assert!(seen.insert(name));
    }
    assert_eq!(cmwq::system_unbound_wq().max_active(), 2048);
}

#[test]
fn every_system_workqueue_runs_items() {
    let all: [&'static Workqueue; 7] = [
        cmwq::system_wq(),
        cmwq::system_highpri_wq(),
        cmwq::system_long_wq(),
        cmwq::system_unbound_wq(),
        cmwq::system_freezable_wq(),
        cmwq::system_power_efficient_wq(),
        cmwq::system_freezable_power_efficient_wq(),
    ];
    for wq in all {
        let (item, runs) = counting_item();
        assert!(wq.queue(&item));
        flush(&item);
        assert_eq!(runs.load(Ordering::SeqCst), 1, "{}", wq.name());
    }
}

#[test]
fn schedule_work_runs_on_system_wq() {
    let info = Arc::new(Mutex::new(None));
    let item = {
        let info = info.clone();
        Work::new(move |_| {
            let w = current_worker().expect("on a worker");
            *info.lock().unwrap() = Some((w.cpu, w.highpri));
        })
    };
    assert!(cmwq::schedule_work(&item));
    flush(&item);
    let (cpu, highpri) = info.lock().unwrap().take().expect("item ran");
    assert!(cpu.is_some(), "system_wq is per-CPU");
    assert!(!highpri);

    for cpu in online_cpus() {
        assert!(cmwq::schedule_work_on(cpu, &item).unwrap());
        flush(&item);
        let (ran_on, _) = info.lock().unwrap().take().expect("item ran");
        assert_eq!(ran_on, Some(cpu), "schedule_work_on({cpu})");
    }
    let r = cmwq::schedule_work_on(100_000, &item);
    assert!(matches!(r, Err(Error::InvalidCpu { .. })), "{r:?}");
    assert!(!item.is_pending());
}

#[test]
fn schedule_work_coalesces() {
    let blocker = Blocker::new();
    let cpu = online_cpus()[0];
    let blocker_wq = Workqueue::new(&unique("sys-blk"), WqFlags::empty(), 1).unwrap();
    let (item, runs) = counting_item();
    // Keep `item` pending on a blocked max_active-1 queue, then schedule_work it: false.
    assert!(blocker_wq.queue_on(cpu, &blocker.item).unwrap());
    blocker.started.wait();
    assert!(blocker_wq.queue_on(cpu, &item).unwrap());
    assert!(
        !cmwq::schedule_work(&item),
        "pending item: schedule_work returns false"
    );
    blocker.gate.open();
    flush(&item);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[test]
fn work_identity() {
    let a = Work::new(|_| {});
    let b = Work::new(|_| {});
    let a2 = a.clone();
    assert!(Work::ptr_eq(&a, &a2));
    assert!(a == a2);
    assert!(!Work::ptr_eq(&a, &b));
    assert!(a != b);
    let mut set = HashSet::new();
    set.insert(a.clone());
    set.insert(a2.clone());
    set.insert(b.clone());
    assert_eq!(set.len(), 2);
    assert!(set.contains(&a2));
    assert!(!a.is_pending());
    let busy = a.busy();
    assert!(!busy.pending && !busy.running);
}

#[test]
fn current_work_is_the_running_item() {
    let ok = Arc::new(AtomicBool::new(false));
    let item = {
        let ok = ok.clone();
        Work::new(move |w| {
            let cur = current_work().expect("current_work() inside a work function");
            ok.store(Work::ptr_eq(&cur, w), Ordering::SeqCst);
        })
    };
    assert!(cmwq::system_unbound_wq().queue(&item));
    flush(&item);
    assert!(ok.load(Ordering::SeqCst));
    assert!(current_work().is_none());
}

struct Embedded {
    field: WorkField,
    tag: u32,
    hits: AtomicUsize,
    self_ok: AtomicBool,
    handle_ok: AtomicBool,
}

impl WorkItem for Embedded {
    fn work_field(&self) -> &WorkField {
        &self.field
    }

    fn run(&self, work: &Work) {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let back = work.downcast_arc::<Embedded>();
        self.self_ok.store(
            back.is_some_and(|b| std::ptr::eq(Arc::as_ptr(&b), self) && b.tag == self.tag),
            Ordering::SeqCst,
        );
        self.handle_ok.store(
            current_work().is_some_and(|c| Work::ptr_eq(&c, work)),
            Ordering::SeqCst,
        );
    }
}

struct Other {
    field: WorkField,
}

impl WorkItem for Other {
    fn work_field(&self) -> &WorkField {
        &self.field
    }
    fn run(&self, _: &Work) {}
}

#[test]
fn embedded_items_run_and_keep_identity() {
    let obj = Arc::new(Embedded {
        field: WorkField::new(),
        tag: 77,
        hits: AtomicUsize::new(0),
        self_ok: AtomicBool::new(false),
        handle_ok: AtomicBool::new(false),
    });
    let w = Work::from_arc(obj.clone());
    let w2 = Work::from_arc(obj.clone());
    assert!(
        Work::ptr_eq(&w, &w2),
        "two handles from the same Arc are the same item"
    );
    assert!(w == w2);

    let back = w
        .downcast_arc::<Embedded>()
        .expect("downcast to the embedding type");
    assert!(Arc::ptr_eq(&back, &obj));
    assert!(
        w.downcast_arc::<Other>().is_none(),
        "downcast to another type"
    );
    assert!(Work::new(|_| {}).downcast_arc::<Embedded>().is_none());

    assert!(cmwq::system_wq().queue(&w));
    flush(&w);
    assert_eq!(obj.hits.load(Ordering::SeqCst), 1);
    assert!(
        obj.self_ok.load(Ordering::SeqCst),
        "downcast_arc inside run() gives self"
    );
    assert!(
        obj.handle_ok.load(Ordering::SeqCst),
        "current_work() inside run()"
    );

    // Coalescing through the two handles: they share one pending state.
    let wq = Workqueue::ordered(&unique("sys-emb"), WqFlags::empty()).unwrap();
    let blocker = Blocker::new();
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    assert!(wq.queue(&w));
    assert!(
        !wq.queue(&w2),
        "same item through another handle: already pending"
    );
    assert!(w2.is_pending());
    blocker.gate.open();
    flush(&w2);
    assert_eq!(obj.hits.load(Ordering::SeqCst), 2);

    // The item keeps the object alive while queued; dropping handles after a flush is fine.
    drop(back);
    drop(w);
    drop(w2);
    common::wait_for("the engine to release its references to the object", || {
        Arc::strong_count(&obj) == 1
    });
}

#[test]
fn embedded_item_outlives_its_last_user_handle_while_queued() {
    let obj = Arc::new(Embedded {
        field: WorkField::new(),
        tag: 5,
        hits: AtomicUsize::new(0),
        self_ok: AtomicBool::new(false),
        handle_ok: AtomicBool::new(false),
    });
    let weak = Arc::downgrade(&obj);
    let w = Work::from_arc(obj);
    let wq = Workqueue::new(&unique("sys-own"), WqFlags::UNBOUND, 0).unwrap();
    assert!(wq.queue(&w));
    drop(w); // the queue keeps it alive
    let w = wq.clone();
    with_deadline("wq flush", move || w.flush());
    common::wait_for("embedded object freed after it ran", || {
        weak.upgrade().is_none()
    });
}

static STATIC_HITS: AtomicUsize = AtomicUsize::new(0);
static STATIC_SELF_OK: AtomicBool = AtomicBool::new(false);
static STATIC_ITEM: StaticWork = StaticWork::new(static_fn);

fn static_fn(w: &Work) {
    STATIC_HITS.fetch_add(1, Ordering::SeqCst);
    STATIC_SELF_OK.store(Work::ptr_eq(w, STATIC_ITEM.work()), Ordering::SeqCst);
}

#[test]
fn static_work_runs_and_keeps_identity() {
    let a = STATIC_ITEM.work();
    let b = STATIC_ITEM.work();
    assert!(Work::ptr_eq(a, b));
    assert!(a == &a.clone());
    assert!(cmwq::schedule_work(STATIC_ITEM.work()));
    flush(STATIC_ITEM.work());
    assert_eq!(STATIC_HITS.load(Ordering::SeqCst), 1);
    assert!(STATIC_SELF_OK.load(Ordering::SeqCst));
    for cpu in online_cpus() {
        assert!(cmwq::system_highpri_wq()
            .queue_on(cpu, STATIC_ITEM.work())
            .unwrap());
        flush(STATIC_ITEM.work());
    }
    assert_eq!(STATIC_HITS.load(Ordering::SeqCst), 1 + online_cpus().len());
}

#[test]
fn invalid_flags_and_ordered_constructor() {
    let r = Workqueue::new(&unique("sys-bad"), WqFlags::UNBOUND | WqFlags::PERCPU, 0);
    assert!(matches!(r, Err(Error::InvalidFlags { .. })));
    let wq = Workqueue::new(&unique("sys-pc"), WqFlags::PERCPU, 0).unwrap();
    assert!(!wq.flags().contains(WqFlags::UNBOUND));
    let o = Workqueue::ordered(&unique("sys-ord"), WqFlags::empty()).unwrap();
    assert!(o.is_ordered());
    assert_eq!(o.max_active(), 1);
    let name = unique("sys-name");
    let n = Workqueue::new(&name, WqFlags::HIGHPRI, 3).unwrap();
    assert_eq!(n.name(), name);
    assert!(n.flags().contains(WqFlags::HIGHPRI));
    assert_eq!(n.max_active(), 3);
    assert_eq!(n.clone().name(), name, "clones share the queue");
}
