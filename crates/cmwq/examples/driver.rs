//! A kernel-style driver: an interrupt's bottom half as a work item embedded in the device
//! struct, a watchdog that re-arms itself as delayed work, and an ordered queue that hands
//! events to their consumer in the order the device raised them.
//!
//! * The "interrupt handler" (here, the main thread) records an event and queues the bottom
//!   half. While the bottom half is pending, queueing it again does nothing, so many
//!   interrupts are served by few runs, each of which drains every recorded event.
//! * The bottom half never runs on two workers at once, so its batches reach the ordered
//!   queue in the order they left the FIFO: two instances running at once could interleave
//!   their batches there.
//! * The watchdog kicks the bottom half if events wait, and re-arms itself; `cancel_sync`
//!   stops it even though it re-arms from its own function.
//! * Events go to an ordered workqueue (one item at a time, in queueing order), so their
//!   consumer sees them in order although the bottom half runs on any worker.
//!
//! ```sh
//! cargo run -p cmwq --example driver
//! ```

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmwq::{
    DelayedWork, DelayedWorkField, DelayedWorkItem, Work, WorkField, WorkItem, Workqueue, WqFlags,
};

const NR_INTERRUPTS: usize = 10_000;
const WATCHDOG_PERIOD: Duration = Duration::from_millis(5);

/// The device: its state and its bottom half (the kernel's `struct work_struct` member).
struct Device {
    bottom_half: WorkField,
    /// Events the interrupt handler recorded and the bottom half has not taken yet.
    fifo: Mutex<VecDeque<usize>>,
    /// Where handled events go, in order.
    events: Workqueue,
    delivered: Arc<Mutex<Vec<usize>>>,
    bottom_half_runs: AtomicUsize,
}

impl WorkItem for Device {
    fn work_field(&self) -> &WorkField {
        &self.bottom_half
    }

    /// The bottom half: takes every recorded event and hands each to the ordered queue.
    fn run(&self, _work: &Work) {
        self.bottom_half_runs.fetch_add(1, Ordering::Relaxed);
        let batch: Vec<usize> = self.fifo.lock().unwrap().drain(..).collect();
        for event in batch {
            let delivered = self.delivered.clone();
            // A one-shot item per event; the ordered queue runs them in this order. Dropping
            // the handle detaches the item (it still runs).
            drop(
                self.events
                    .spawn(move || delivered.lock().unwrap().push(event)),
            );
        }
    }
}

/// The watchdog: delayed work holding the device, re-armed from its own function.
struct Watchdog {
    dwork: DelayedWorkField,
    device: Arc<Device>,
    /// Told about each check, so `main` can wait for a few without guessing a sleep.
    checked: Sender<usize>,
}

impl DelayedWorkItem for Watchdog {
    fn delayed_work_field(&self) -> &DelayedWorkField {
        &self.dwork
    }

    /// Events waiting means the bottom half must be pending or running: kick it anyway (a
    /// fresh handle on the embedded item is the same item, so this coalesces with a pending
    /// run), then re-arm.
    fn run(&self, dw: &DelayedWork) {
        let backlog = self.device.fifo.lock().unwrap().len();
        if backlog > 0 {
            cmwq::schedule_work(&Work::from_arc(self.device.clone()));
        }
        self.checked.send(backlog).ok();
        cmwq::system_wq().queue_delayed(dw, WATCHDOG_PERIOD);
    }
}

fn main() -> Result<(), cmwq::Error> {
    // probe(): allocate the queues and the device, start the watchdog.
    let events = Workqueue::ordered("mydev_events", WqFlags::empty())?;
    let delivered = Arc::new(Mutex::new(Vec::new()));
    let device = Arc::new(Device {
        bottom_half: WorkField::new(),
        fifo: Mutex::new(VecDeque::new()),
        events: events.clone(),
        delivered: delivered.clone(),
        bottom_half_runs: AtomicUsize::new(0),
    });
    let bottom_half = Work::from_arc(device.clone());
    let (checked, checks) = channel();
    let watchdog = Arc::new(Watchdog {
        dwork: DelayedWorkField::new(),
        device: device.clone(),
        checked,
    });
    let watchdog_work = DelayedWork::from_arc(watchdog.clone());
    cmwq::schedule_delayed_work(&watchdog_work, WATCHDOG_PERIOD);

    // Interrupts: record the event, queue the bottom half (a no-op while it is pending).
    for event in 0..NR_INTERRUPTS {
        device.fifo.lock().unwrap().push_back(event);
        cmwq::schedule_work(&bottom_half);
    }
    println!("{NR_INTERRUPTS} interrupts raised");

    // Wait for three watchdog checks.
    for _ in 0..3 {
        checks.recv().expect("the watchdog checks");
    }
    println!("watchdog: 3 checks or more, re-arming itself every {WATCHDOG_PERIOD:?}");

    // remove(): stop the watchdog (cancel_sync wins even against its re-arming: queueing
    // attempts made while it waits fail), then finish the bottom half and deliver every
    // event before the device goes.
    watchdog_work.cancel_sync();
    assert!(!watchdog_work.is_pending());
    bottom_half.flush();
    events.flush();
    let runs = device.bottom_half_runs.load(Ordering::Relaxed);
    assert!(runs >= 1 && device.fifo.lock().unwrap().is_empty());
    println!("bottom half: each run drained the FIFO, no event handled twice");

    let delivered = delivered.lock().unwrap();
    assert_eq!(delivered.len(), NR_INTERRUPTS);
    assert!(delivered.iter().copied().eq(0..NR_INTERRUPTS));
    println!(
        "ordered queue: {} events delivered, in the order raised",
        delivered.len()
    );
    drop(delivered);

    bottom_half.cancel_sync();
    events.destroy();
    Ok(())
}
