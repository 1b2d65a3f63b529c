//! A demo workload that keeps running, for the tools to look at: `cmwq demo --serve` serves it
//! to other processes, `cmwq top` without `--pid` shows it in-process.
//!
//! A driver thread queues items on a handful of queues, each showing one kind of behaviour
//! in the wq_monitor columns, at a rate that swells and ebbs over a ten-second cycle. It is
//! light (a few percent of one CPU).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cmwq::{Work, Workqueue, WqFlags};

/// One tick of the driver.
const TICK: Duration = Duration::from_millis(20);
/// Ticks per swell-and-ebb cycle of the rate.
const CYCLE: u64 = 500;

/// Spins for `d` (CPU work that does not sleep).
fn spin(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// Items of one queue, queued round-robin (one still pending is skipped, as a real
/// producer's would coalesce).
struct Feed {
    wq: Workqueue,
    items: Vec<Work>,
    next: usize,
}

impl Feed {
    /// `n` items running `f`, a named function, so that dumps and `cmwq top` name it.
    fn new<F>(wq: Workqueue, n: usize, f: F) -> Feed
    where
        F: Fn(&Work) + Copy + Send + Sync + 'static,
    {
        let items = (0..n).map(|_| Work::new(f)).collect();
        Feed { wq, items, next: 0 }
    }

    fn queue(&mut self, n: usize) {
        for _ in 0..n {
            let w = &self.items[self.next];
            self.next = (self.next + 1) % self.items.len();
            self.wq.queue(w);
        }
    }

    /// Queues `n` on one CPU, so that they share a pool (blocking items overlap there).
    fn queue_on(&mut self, cpu: usize, n: usize) {
        for _ in 0..n {
            let w = &self.items[self.next];
            self.next = (self.next + 1) % self.items.len();
            let _ = self.wq.queue_on(cpu, w);
        }
    }
}

/// `demo_events`: short CPU work on the per-CPU pools.
fn short_item(_: &Work) {
    spin(Duration::from_micros(20));
}

/// `demo_unbound`: longer CPU work on the unbound pool.
fn unbound_item(_: &Work) {
    spin(Duration::from_micros(100));
}

/// `demo_blocking`: sleepers sharing a CPU's pool; each sleep lets concurrency management
/// wake another worker (CMW).
fn sleeper(_: &Work) {
    cmwq::set_worker_desc("sleeping 3 ms in blocking()");
    cmwq::blocking(|| std::thread::sleep(Duration::from_millis(3)));
}

/// `demo_hog`: now and then hogs the CPU past `cpu_intensive_thresh` (CPUitsv).
fn cpu_hog(_: &Work) {
    cmwq::set_worker_desc("hogging the CPU on purpose");
    spin(Duration::from_millis(30));
}

/// `demo_sysfs` (SYSFS, max_active 2): bursts wait on the inactive list; `cmwq ctl --pid PID
/// demo_sysfs max_active N` changes how many run at once, `cmwq ctl --pid PID demo_sysfs`
/// shows its attributes.
fn throttled(_: &Work) {
    cmwq::blocking(|| std::thread::sleep(Duration::from_millis(20)));
}

/// `demo_reclaim` (MEM_RECLAIM): its rescuer's mayday and rescued columns are shown.
fn reclaim_item(_: &Work) {
    spin(Duration::from_micros(50));
}

/// `demo_ordered`: one at a time, in order.
fn ordered_item(_: &Work) {
    spin(Duration::from_micros(30));
}

/// The running workload; dropping it stops the driver and destroys the queues.
pub struct Live {
    stop: Arc<AtomicBool>,
    driver: Option<JoinHandle<()>>,
}

/// The queues of the workload, by name.
pub const QUEUES: &[&str] = &[
    "demo_events",
    "demo_unbound",
    "demo_blocking",
    "demo_hog",
    "demo_sysfs",
    "demo_reclaim",
    "demo_ordered",
];

impl Live {
    pub fn start() -> Result<Live, cmwq::Error> {
        let cpus = cmwq::online_cpus();
        let mut events = Feed::new(
            Workqueue::new("demo_events", WqFlags::empty(), 0)?,
            64,
            short_item,
        );
        let mut unbound = Feed::new(
            Workqueue::new("demo_unbound", WqFlags::UNBOUND, 0)?,
            32,
            unbound_item,
        );
        let mut blocking = Feed::new(
            Workqueue::new("demo_blocking", WqFlags::empty(), 0)?,
            16,
            sleeper,
        );
        let mut hog = Feed::new(Workqueue::new("demo_hog", WqFlags::empty(), 0)?, 2, cpu_hog);
        let mut sysfs = Feed::new(
            Workqueue::new("demo_sysfs", WqFlags::SYSFS | WqFlags::UNBOUND, 2)?,
            16,
            throttled,
        );
        let mut reclaim = Feed::new(
            Workqueue::new("demo_reclaim", WqFlags::MEM_RECLAIM | WqFlags::UNBOUND, 0)?,
            8,
            reclaim_item,
        );
        let mut ordered = Feed::new(
            Workqueue::ordered("demo_ordered", WqFlags::empty())?,
            16,
            ordered_item,
        );
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let driver = std::thread::Builder::new()
            .name("demo-driver".into())
            .spawn(move || {
                let mut tick: u64 = 0;
                let t0 = Instant::now();
                while !s.load(Ordering::Relaxed) {
                    // 0 ..= 10 and back over a cycle: the rates swell and ebb.
                    let phase = tick % CYCLE;
                    let swell = (10 * phase.min(CYCLE - phase) / (CYCLE / 2)) as usize;
                    events.queue(2 + 2 * swell);
                    unbound.queue(1 + swell / 2);
                    ordered.queue(1 + swell / 3);
                    if tick % 5 == 0 {
                        blocking.queue_on(cpus[(tick / 5) as usize % cpus.len()], 4);
                        reclaim.queue(2);
                    }
                    if tick % 25 == 0 {
                        sysfs.queue(2 + swell);
                    }
                    if tick % 150 == 75 {
                        hog.queue(1);
                    }
                    tick += 1;
                    // Paced on the clock, not on the sleeps.
                    let next = t0 + TICK * tick as u32;
                    std::thread::sleep(next.saturating_duration_since(Instant::now()));
                }
                // The feeds (and their queues) are dropped here: each drains first.
            })
            .map_err(|_| cmwq::Error::InvalidAttrs {
                reason: "cannot start the demo driver thread".into(),
            })?;
        Ok(Live {
            stop,
            driver: Some(driver),
        })
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
    }
}

/// `cmwq demo --serve`: the workload with the control endpoint on, until killed (or for
/// `seconds`).
pub fn serve(seconds: Option<u64>) -> bool {
    let endpoint = match cmwq::control::serve() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("cmwq demo --serve: {e}");
            return false;
        }
    };
    let live = match Live::start() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("cmwq demo --serve: {e}");
            return false;
        }
    };
    let pid = std::process::id();
    println!(
        "cmwq demo: serving the control endpoint at {} (pid {pid})",
        endpoint.path().display()
    );
    println!("  workqueues: {}", QUEUES.join(", "));
    println!("  try: cmwq stats --pid {pid}    cmwq top --pid {pid}");
    println!(
        "       cmwq ctl --pid {pid} demo_sysfs max_active 4    cmwq ctl --pid {pid} demo_sysfs"
    );
    match seconds {
        Some(s) => println!("  stops after {s} s"),
        None => println!("  runs until interrupted (Ctrl-C)"),
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let t = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if seconds.is_some_and(|s| t.elapsed() >= Duration::from_secs(s)) {
            break;
        }
    }
    drop(live);
    drop(endpoint);
    true
}
