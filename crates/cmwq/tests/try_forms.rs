//! The `try_` form of every queueing call: `Ok(true)` when queued or armed, `Ok(false)` when
//! already pending, `Err(Draining)` / `Err(Destroyed)` when the queue refuses (the item left
//! not pending, so it can be queued again: nothing is lost), while the plain forms return
//! `false` (or `Ok(false)`) for the same refusals.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cmwq::{online_cpus, DelayedWork, Error, Work, Workqueue, WqFlags};
use common::{join, open_on_drop, unique, wait_for, with_deadline, Latch, OpenOnDrop};

/// Long enough never to fire during a test.
const LONG: Duration = Duration::from_secs(3600);

/// A per-CPU queue with `max_active` 1 whose one active slot on `cpu` is held by a blocked
/// item, so that anything queued there after it stays pending.
struct Fixture {
    wq: Workqueue,
    cpu: usize,
    gate: Arc<Latch>,
    _open: OpenOnDrop,
}

fn fixture(prefix: &str) -> Fixture {
    let wq = Workqueue::new(&unique(prefix), WqFlags::PERCPU, 1).unwrap();
    let cpu = online_cpus()[0];
    let gate = Arc::new(Latch::new());
    let started = Arc::new(Latch::new());
    let open = open_on_drop(&[&gate]);
    let (g, s) = (gate.clone(), started.clone());
    let blocker = Work::new(move |_| {
        s.open();
        g.wait_blocking();
    });
    assert_eq!(wq.queue_on(cpu, &blocker), Ok(true));
    started.wait();
    Fixture {
        wq,
        cpu,
        gate,
        _open: open,
    }
}

impl Fixture {
    /// Starts draining on a helper thread; returns once the queue refuses outside queueing.
    fn start_drain(&self) -> JoinHandle<()> {
        let w = self.wq.clone();
        let drainer = std::thread::spawn(move || w.drain());
        // A fresh probe each time: one queued before the drain began is just run by it.
        wait_for("the queue to refuse while draining", || {
            matches!(
                self.wq.try_queue(&Work::new(|_| {})),
                Err(Error::Draining { .. })
            )
        });
        drainer
    }

    /// Lets the blocker finish and waits for the drain to end.
    fn finish_drain(&self, drainer: JoinHandle<()>) {
        self.gate.open();
        join("drain", drainer);
    }

    /// Destroys the queue (with a deadline), returning a leftover handle on it.
    fn destroy(self) -> Workqueue {
        self.gate.open();
        let leftover = self.wq.clone();
        let wq = self.wq;
        with_deadline("destroy", move || wq.destroy());
        leftover
    }
}

fn counting() -> (Work, Arc<AtomicUsize>) {
    common::counting_item()
}

fn counting_delayed() -> (DelayedWork, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let dw = DelayedWork::new(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    (dw, runs)
}

fn flush(work: &Work) {
    let w = work.clone();
    with_deadline("flush", move || w.flush());
}

fn flush_delayed(dw: &DelayedWork) {
    let d = dw.clone();
    with_deadline("delayed flush", move || d.flush());
}

fn is_draining(r: Result<bool, Error>) -> bool {
    matches!(r, Err(Error::Draining { .. }))
}

fn is_destroyed(r: Result<bool, Error>) -> bool {
    matches!(r, Err(Error::Destroyed { .. }))
}

#[test]
fn try_queue_on() {
    let f = fixture("tf-qon");
    let cpu = f.cpu;
    let (item, runs) = counting();
    assert_eq!(f.wq.try_queue_on(cpu, &item), Ok(true));
    assert_eq!(f.wq.try_queue_on(cpu, &item), Ok(false), "pending");
    assert!(matches!(
        f.wq.try_queue_on(usize::MAX, &item),
        Err(Error::InvalidCpu { .. })
    ));

    let drainer = f.start_drain();
    let (other, other_runs) = counting();
    assert!(is_draining(f.wq.try_queue_on(cpu, &other)));
    assert!(!other.is_pending(), "a refused item is left not pending");
    // The plain form keeps its contract: a refusal is Ok(false), a bad CPU an error.
    assert_eq!(f.wq.queue_on(cpu, &other), Ok(false));
    assert!(matches!(
        f.wq.queue_on(usize::MAX, &other),
        Err(Error::InvalidCpu { .. })
    ));
    f.finish_drain(drainer);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "queued before the drain: ran"
    );

    // Nothing lost: the refused item can be queued once the queue takes items again.
    assert_eq!(f.wq.try_queue_on(cpu, &other), Ok(true));
    flush(&other);
    assert_eq!(other_runs.load(Ordering::SeqCst), 1);

    let leftover = f.destroy();
    assert!(is_destroyed(leftover.try_queue_on(cpu, &other)));
    assert!(!other.is_pending());
    assert_eq!(leftover.queue_on(cpu, &other), Ok(false));
    assert_eq!(other_runs.load(Ordering::SeqCst), 1);
}

#[test]
fn try_queue_delayed() {
    let f = fixture("tf-qd");
    let (dw, runs) = counting_delayed();
    assert_eq!(f.wq.try_queue_delayed(&dw, LONG), Ok(true));
    assert_eq!(f.wq.try_queue_delayed(&dw, LONG), Ok(false), "pending");
    assert!(dw.is_pending());

    let drainer = f.start_drain();
    let (other, other_runs) = counting_delayed();
    for delay in [LONG, Duration::ZERO] {
        assert!(
            is_draining(f.wq.try_queue_delayed(&other, delay)),
            "{delay:?}"
        );
        assert!(!other.is_pending());
        assert!(!f.wq.queue_delayed(&other, delay), "plain form: false");
    }
    f.finish_drain(drainer);
    assert!(dw.is_pending(), "an armed timer is not touched by drain");

    assert_eq!(f.wq.try_queue_delayed(&other, Duration::ZERO), Ok(true));
    flush_delayed(&other);
    assert_eq!(other_runs.load(Ordering::SeqCst), 1);

    let leftover = f.destroy();
    assert!(!dw.is_pending(), "destroy disarms");
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    for delay in [LONG, Duration::ZERO] {
        assert!(is_destroyed(leftover.try_queue_delayed(&other, delay)));
        assert!(!other.is_pending());
    }
}

#[test]
fn try_queue_delayed_on() {
    let f = fixture("tf-qdon");
    let cpu = f.cpu;
    let (dw, _runs) = counting_delayed();
    assert_eq!(f.wq.try_queue_delayed_on(cpu, &dw, LONG), Ok(true));
    assert_eq!(f.wq.try_queue_delayed_on(cpu, &dw, LONG), Ok(false));
    assert!(matches!(
        f.wq.try_queue_delayed_on(usize::MAX, &dw, LONG),
        Err(Error::InvalidCpu { .. })
    ));

    let drainer = f.start_drain();
    let (other, other_runs) = counting_delayed();
    assert!(is_draining(f.wq.try_queue_delayed_on(cpu, &other, LONG)));
    assert!(!other.is_pending());
    assert_eq!(f.wq.queue_delayed_on(cpu, &other, LONG), Ok(false));
    f.finish_drain(drainer);

    assert_eq!(
        f.wq.try_queue_delayed_on(cpu, &other, Duration::ZERO),
        Ok(true)
    );
    flush_delayed(&other);
    assert_eq!(other_runs.load(Ordering::SeqCst), 1);

    let leftover = f.destroy();
    assert!(is_destroyed(
        leftover.try_queue_delayed_on(cpu, &other, LONG)
    ));
    assert!(!other.is_pending());
    assert!(!dw.is_pending());
}

#[test]
fn try_mod_delayed() {
    let f = fixture("tf-md");
    let (dw, runs) = counting_delayed();
    // The kernel's sense: false if it was idle (now armed), true if it was pending.
    assert_eq!(f.wq.try_mod_delayed(&dw, LONG), Ok(false));
    assert!(dw.is_pending());
    assert_eq!(f.wq.try_mod_delayed(&dw, LONG), Ok(true));

    let drainer = f.start_drain();
    let (idle, idle_runs) = counting_delayed();
    assert!(is_draining(f.wq.try_mod_delayed(&idle, LONG)));
    assert!(!idle.is_pending());
    assert!(!f.wq.mod_delayed(&idle, LONG), "plain form: false");
    // A pending item is taken off its timer first: a refusal leaves it not pending, and says
    // so.
    assert!(is_draining(f.wq.try_mod_delayed(&dw, LONG)));
    assert!(!dw.is_pending());
    f.finish_drain(drainer);

    assert_eq!(f.wq.try_mod_delayed(&idle, Duration::ZERO), Ok(false));
    flush_delayed(&idle);
    assert_eq!(idle_runs.load(Ordering::SeqCst), 1);
    assert_eq!(runs.load(Ordering::SeqCst), 0);

    let leftover = f.destroy();
    assert!(is_destroyed(leftover.try_mod_delayed(&idle, LONG)));
    assert!(!idle.is_pending());
}

#[test]
fn try_mod_delayed_on() {
    let f = fixture("tf-mdon");
    let cpu = f.cpu;
    let (dw, _runs) = counting_delayed();
    assert_eq!(f.wq.try_mod_delayed_on(cpu, &dw, LONG), Ok(false));
    assert_eq!(f.wq.try_mod_delayed_on(cpu, &dw, LONG), Ok(true));
    assert!(matches!(
        f.wq.try_mod_delayed_on(usize::MAX, &dw, LONG),
        Err(Error::InvalidCpu { .. })
    ));
    assert!(dw.is_pending(), "a bad CPU changes nothing");

    let drainer = f.start_drain();
    let (idle, idle_runs) = counting_delayed();
    assert!(is_draining(f.wq.try_mod_delayed_on(cpu, &idle, LONG)));
    assert!(!idle.is_pending());
    assert_eq!(f.wq.mod_delayed_on(cpu, &idle, LONG), Ok(false));
    f.finish_drain(drainer);

    assert_eq!(
        f.wq.try_mod_delayed_on(cpu, &idle, Duration::ZERO),
        Ok(false)
    );
    flush_delayed(&idle);
    assert_eq!(idle_runs.load(Ordering::SeqCst), 1);

    let leftover = f.destroy();
    assert!(!dw.is_pending(), "destroy disarms");
    assert!(is_destroyed(leftover.try_mod_delayed_on(cpu, &idle, LONG)));
    assert!(!idle.is_pending());
}

/// The system-queue helpers (`system_wq` cannot be destroyed, so only draining refuses).
/// One test: draining `system_wq` refuses every helper at once.
#[test]
fn try_schedule_helpers() {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let wq = cmwq::system_wq();
    let cpu = online_cpus()[0];

    // Live: Ok(true), then Ok(false) while pending.
    let gate = Arc::new(Latch::new());
    let _open = open_on_drop(&[&gate]);
    let started = Arc::new(Latch::new());
    let (g, s) = (gate.clone(), started.clone());
    let blocker = Work::new(move |_| {
        s.open();
        g.wait_blocking();
    });
    assert_eq!(cmwq::try_schedule_work_on(cpu, &blocker), Ok(true));
    started.wait();
    assert_eq!(
        cmwq::try_schedule_work(&blocker),
        Ok(true),
        "running, not pending"
    );
    assert_eq!(cmwq::try_schedule_work(&blocker), Ok(false), "pending");
    assert_eq!(cmwq::try_schedule_work_on(cpu, &blocker), Ok(false));
    assert!(matches!(
        cmwq::try_schedule_work_on(usize::MAX, &blocker),
        Err(Error::InvalidCpu { .. })
    ));
    let (dw, _runs) = counting_delayed();
    assert_eq!(cmwq::try_schedule_delayed_work(&dw, LONG), Ok(true));
    assert_eq!(cmwq::try_schedule_delayed_work(&dw, LONG), Ok(false));
    assert_eq!(
        cmwq::try_schedule_delayed_work_on(cpu, &dw, LONG),
        Ok(false)
    );
    assert!(dw.cancel());

    // Draining: refused, left not pending.
    let w = wq.clone();
    let drainer = std::thread::spawn(move || w.drain());
    wait_for("system_wq to refuse while draining", || {
        is_draining(cmwq::try_schedule_work(&Work::new(|_| {})))
    });
    let (item, item_runs) = counting();
    assert!(is_draining(cmwq::try_schedule_work(&item)));
    assert!(is_draining(cmwq::try_schedule_work_on(cpu, &item)));
    assert!(!item.is_pending());
    assert!(!cmwq::schedule_work(&item), "plain form: false");
    assert!(is_draining(cmwq::try_schedule_delayed_work(&dw, LONG)));
    assert!(is_draining(cmwq::try_schedule_delayed_work_on(
        cpu, &dw, LONG
    )));
    assert!(!dw.is_pending());
    gate.open();
    join("system_wq drain", drainer);

    // Nothing lost: both can be queued again.
    assert_eq!(cmwq::try_schedule_work_on(cpu, &item), Ok(true));
    flush(&item);
    assert_eq!(item_runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        cmwq::try_schedule_delayed_work_on(cpu, &dw, Duration::ZERO),
        Ok(true)
    );
    flush_delayed(&dw);
}
