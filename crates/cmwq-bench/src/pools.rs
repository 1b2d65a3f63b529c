//! The executors under test behind one `spawn` interface.
//!
//! `crossbeam-pool` is the simplest pool there is: `cores` threads (`bench-cb-N`) that take
//! boxed closures from one `crossbeam-channel` unbounded channel, with nothing else (no
//! work stealing, no growth, no per-item bookkeeping beyond the box). It stands for the
//! practical limit of a fixed pool: a general executor that is slower than it on a workload
//! pays for features, not for the queue.
//!
//! `cmwq-spawn` is an unbound queue fed through [`Workqueue::spawn`] (the closure layer: one
//! allocation per item holding the work field, the closure and a result slot); the handles
//! are dropped at once, so the items run detached. It sits beside `cmwq-unbound fresh`
//! (a `Work::new` per item) to show what the closure layer costs on top of a fresh item.
//! `Workqueue::spawn` never refuses loudly (a refusal shows only at `join`), so its
//! submissions always count as accepted; the benchmark never destroys a queue mid-run.
//!
//! `cmwq-highpri` (W5) is two queues: the background items go to an unbound queue, exactly
//! as in `cmwq-unbound`, and the probes ([`Pool::spawn_probe`]) to a per-CPU `HIGHPRI`
//! queue with `queue_on` round-robin over the online CPUs: the kernel's recipe for
//! latency-sensitive work beside bulk work, compared with `cmwq-unbound` under the same load.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::workloads::Tracker;

use cmwq::{Work, Workqueue, WqFlags};

/// A boxed closure, the unit of [`CrossbeamPool`].
type Job = Box<dyn FnOnce() + Send + 'static>;

/// `cores` threads named `bench-cb-N` receiving [`Job`]s from one unbounded channel.
pub struct CrossbeamPool {
    tx: crossbeam_channel::Sender<Job>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CrossbeamPool {
    fn new(threads: usize) -> Result<CrossbeamPool, String> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let threads = (0..threads)
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("bench-cb-{i}"))
                    .spawn(move || {
                        // Ends when every sender is gone and the channel is empty.
                        for job in rx {
                            job();
                        }
                    })
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CrossbeamPool { tx, threads })
    }

    #[inline]
    fn execute<F: FnOnce() + Send + 'static>(&self, f: F) -> bool {
        self.tx.send(Box::new(f)).is_ok()
    }

    /// Closes the channel, lets the threads drain it, and joins them.
    fn join(self) {
        drop(self.tx);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// cmwq per-CPU (bound) workqueue, `queue()` from the producer's CPU.
    CmwqBound,
    /// cmwq bound workqueue, `queue_on()` round-robin over the online CPUs.
    CmwqBoundRr,
    /// cmwq unbound workqueue.
    CmwqUnbound,
    /// cmwq unbound workqueue, closures through `Workqueue::spawn`, handles dropped.
    CmwqSpawn,
    /// W5: background on an unbound queue, probes on a per-CPU `HIGHPRI` queue round-robin.
    CmwqHighpri,
    Rayon,
    Tokio,
    ThreadPool,
    Blocking,
    /// `cores` threads on one crossbeam-channel of boxed closures (see the module docs).
    CrossbeamPool,
}

pub const PEERS: [Kind; 5] = [
    Kind::Rayon,
    Kind::Tokio,
    Kind::ThreadPool,
    Kind::Blocking,
    Kind::CrossbeamPool,
];

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::CmwqBound => "cmwq-bound",
            Kind::CmwqBoundRr => "cmwq-bound-rr",
            Kind::CmwqUnbound => "cmwq-unbound",
            Kind::CmwqSpawn => "cmwq-spawn",
            Kind::CmwqHighpri => "cmwq-highpri",
            Kind::Rayon => "rayon",
            Kind::Tokio => "tokio",
            Kind::ThreadPool => "threadpool",
            Kind::Blocking => "blocking",
            Kind::CrossbeamPool => "crossbeam-pool",
        }
    }

    pub fn is_cmwq(self) -> bool {
        matches!(
            self,
            Kind::CmwqBound
                | Kind::CmwqBoundRr
                | Kind::CmwqUnbound
                | Kind::CmwqSpawn
                | Kind::CmwqHighpri
        )
    }

    /// Prefix of the names of the OS threads this executor runs work on.
    pub fn thread_prefix(self) -> &'static str {
        match self {
            k if k.is_cmwq() => "kworker",
            Kind::Rayon => "bench-rayon",
            Kind::Tokio => "bench-tokio",
            Kind::ThreadPool => "bench-tp",
            Kind::Blocking => "blocking",
            Kind::CrossbeamPool => "bench-cb",
            _ => unreachable!("every cmwq kind is matched above"),
        }
    }
}

pub enum Pool {
    Cmwq {
        wq: Workqueue,
        cpus: Vec<usize>,
        rr: bool,
        next: AtomicUsize,
        /// Closures through `Workqueue::spawn` instead of a `Work` each.
        spawn: bool,
        /// Where [`Pool::spawn_probe`] sends probes (`queue_on` round-robin), if not `wq`.
        highpri: Option<(Workqueue, AtomicUsize)>,
    },
    Rayon(rayon::ThreadPool),
    Tokio(tokio::runtime::Runtime),
    ThreadPool(threadpool::ThreadPool),
    Blocking,
    Crossbeam(CrossbeamPool),
}

static WQ_SEQ: AtomicUsize = AtomicUsize::new(0);

impl Pool {
    pub fn new(kind: Kind, cores: usize) -> Result<Pool, String> {
        Ok(match kind {
            k if k.is_cmwq() => {
                let make = |flags: WqFlags, tag: &str| {
                    let name = format!("bench-{tag}{}", WQ_SEQ.fetch_add(1, Ordering::Relaxed));
                    Workqueue::new(&name, flags, 0).map_err(|e| e.to_string())
                };
                let wq = if matches!(k, Kind::CmwqBound | Kind::CmwqBoundRr) {
                    make(WqFlags::empty(), "b")?
                } else {
                    make(WqFlags::UNBOUND, "u")?
                };
                let highpri = if k == Kind::CmwqHighpri {
                    Some((make(WqFlags::HIGHPRI, "h")?, AtomicUsize::new(0)))
                } else {
                    None
                };
                Pool::Cmwq {
                    wq,
                    cpus: cmwq::online_cpus(),
                    rr: kind == Kind::CmwqBoundRr,
                    next: AtomicUsize::new(0),
                    spawn: kind == Kind::CmwqSpawn,
                    highpri,
                }
            }
            Kind::Rayon => Pool::Rayon(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(cores)
                    .thread_name(|i| format!("bench-rayon-{i}"))
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            Kind::Tokio => Pool::Tokio(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(cores)
                    .thread_name("bench-tokio")
                    .build()
                    .map_err(|e| e.to_string())?,
            ),
            Kind::ThreadPool => Pool::ThreadPool(
                threadpool::Builder::new()
                    .num_threads(cores)
                    .thread_name("bench-tp".into())
                    .build(),
            ),
            Kind::Blocking => Pool::Blocking,
            Kind::CrossbeamPool => Pool::Crossbeam(CrossbeamPool::new(cores)?),
            _ => unreachable!("every cmwq kind is matched above"),
        })
    }

    /// Runs `f` once on the executor. Returns `false` if it was refused.
    #[inline]
    pub fn spawn<F: Fn() + Send + Sync + 'static>(&self, f: F) -> bool {
        match self {
            Pool::Cmwq { wq, spawn, .. } if *spawn => {
                drop(wq.spawn(f));
                true
            }
            Pool::Cmwq { .. } => self.queue(&Work::new(move |_| f())),
            Pool::Rayon(p) => {
                p.spawn(f);
                true
            }
            Pool::Tokio(rt) => {
                drop(rt.spawn_blocking(f));
                true
            }
            Pool::ThreadPool(p) => {
                p.execute(f);
                true
            }
            Pool::Blocking => {
                blocking::unblock(f).detach();
                true
            }
            Pool::Crossbeam(p) => p.execute(f),
        }
    }

    /// Runs a W5 probe: on the `HIGHPRI` queue (round-robin over the CPUs) where the pool has
    /// one, else as [`spawn`](Self::spawn).
    #[inline]
    pub fn spawn_probe<F: Fn() + Send + Sync + 'static>(&self, f: F) -> bool {
        match self {
            Pool::Cmwq {
                cpus,
                highpri: Some((hp, next)),
                ..
            } => {
                let i = next.fetch_add(1, Ordering::Relaxed) % cpus.len();
                hp.queue_on(cpus[i], &Work::new(move |_| f()))
                    .unwrap_or(false)
            }
            _ => self.spawn(f),
        }
    }

    /// Runs one no-op item (on every CPU for a bound cmwq queue) and waits for it.
    /// (The `HIGHPRI` probe queue of `cmwq-highpri` is warmed on every CPU too.)
    pub fn warm_up(&self, t: &'static Tracker) -> bool {
        let on_every_cpu = |wq: &Workqueue, cpus: &[usize]| {
            cpus.iter().all(|&cpu| {
                wq.queue_on(cpu, &Work::new(move |_| t.hit()))
                    .unwrap_or(false)
            })
        };
        match self {
            Pool::Cmwq {
                wq, cpus, highpri, ..
            } => {
                let bound = !wq.flags().contains(WqFlags::UNBOUND);
                let n = if bound { cpus.len() } else { 1 };
                t.reset(n + highpri.as_ref().map_or(0, |_| cpus.len()));
                let queued = if bound {
                    on_every_cpu(wq, cpus)
                } else {
                    self.spawn(move || t.hit())
                };
                if !queued
                    || !highpri
                        .as_ref()
                        .is_none_or(|(hp, _)| on_every_cpu(hp, cpus))
                {
                    return false;
                }
            }
            _ => {
                t.reset(1);
                if !self.spawn(move || t.hit()) {
                    return false;
                }
            }
        }
        t.wait(Instant::now() + Duration::from_secs(30))
    }

    /// Queues an existing cmwq item (cmwq pools only).
    #[inline]
    pub fn queue(&self, w: &Work) -> bool {
        match self {
            Pool::Cmwq {
                wq, cpus, rr, next, ..
            } => {
                if *rr {
                    let i = next.fetch_add(1, Ordering::Relaxed) % cpus.len();
                    wq.queue_on(cpus[i], w).unwrap_or(false)
                } else {
                    wq.queue(w)
                }
            }
            _ => panic!("queue() of an existing item needs a cmwq pool"),
        }
    }

    /// Tears the executor down, joining its threads where it can.
    /// `clean` is false after a timeout: then nothing that could wait on stuck work is called.
    pub fn shutdown(self, clean: bool) {
        if !clean {
            std::mem::forget(self);
            return;
        }
        match self {
            Pool::Cmwq { wq, highpri, .. } => {
                wq.destroy();
                if let Some((hp, _)) = highpri {
                    hp.destroy();
                }
            }
            Pool::Rayon(p) => drop(p),
            Pool::Tokio(rt) => rt.shutdown_timeout(Duration::from_secs(10)),
            Pool::ThreadPool(p) => {
                p.join();
                drop(p);
            }
            Pool::Blocking => {}
            Pool::Crossbeam(p) => p.join(),
        }
    }
}
