//! The executors under test behind one `spawn` interface.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::workloads::Tracker;

use cmwq::{Work, Workqueue, WqFlags};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// cmwq per-CPU (bound) workqueue, `queue()` from the producer's CPU.
    CmwqBound,
    /// cmwq bound workqueue, `queue_on()` round-robin over the online CPUs.
    CmwqBoundRr,
    /// cmwq unbound workqueue.
    CmwqUnbound,
    Rayon,
    Tokio,
    ThreadPool,
    Blocking,
}

pub const PEERS: [Kind; 4] = [Kind::Rayon, Kind::Tokio, Kind::ThreadPool, Kind::Blocking];

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::CmwqBound => "cmwq-bound",
            Kind::CmwqBoundRr => "cmwq-bound-rr",
            Kind::CmwqUnbound => "cmwq-unbound",
            Kind::Rayon => "rayon",
            Kind::Tokio => "tokio",
            Kind::ThreadPool => "threadpool",
            Kind::Blocking => "blocking",
        }
    }

    pub fn is_cmwq(self) -> bool {
        matches!(
            self,
            Kind::CmwqBound | Kind::CmwqBoundRr | Kind::CmwqUnbound
        )
    }

    /// Prefix of the names of the OS threads this executor runs work on.
    pub fn thread_prefix(self) -> &'static str {
        match self {
            Kind::CmwqBound | Kind::CmwqBoundRr | Kind::CmwqUnbound => "kworker",
            Kind::Rayon => "bench-rayon",
            Kind::Tokio => "bench-tokio",
            Kind::ThreadPool => "bench-tp",
            Kind::Blocking => "blocking",
        }
    }
}

pub enum Pool {
    Cmwq {
        wq: Workqueue,
        cpus: Vec<usize>,
        rr: bool,
        next: AtomicUsize,
    },
    Rayon(rayon::ThreadPool),
    Tokio(tokio::runtime::Runtime),
    ThreadPool(threadpool::ThreadPool),
    Blocking,
}

static WQ_SEQ: AtomicUsize = AtomicUsize::new(0);

impl Pool {
    pub fn new(kind: Kind, cores: usize) -> Result<Pool, String> {
        Ok(match kind {
            Kind::CmwqBound | Kind::CmwqBoundRr | Kind::CmwqUnbound => {
                let (flags, tag) = if kind == Kind::CmwqUnbound {
                    (WqFlags::UNBOUND, "u")
                } else {
                    (WqFlags::empty(), "b")
                };
                let name = format!("bench-{tag}{}", WQ_SEQ.fetch_add(1, Ordering::Relaxed));
                let wq = Workqueue::new(&name, flags, 0).map_err(|e| e.to_string())?;
                Pool::Cmwq {
                    wq,
                    cpus: cmwq::online_cpus(),
                    rr: kind == Kind::CmwqBoundRr,
                    next: AtomicUsize::new(0),
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
        })
    }

    /// Runs `f` once on the executor. Returns `false` if it was refused.
    #[inline]
    pub fn spawn<F: Fn() + Send + Sync + 'static>(&self, f: F) -> bool {
        match self {
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
        }
    }

    /// Runs one no-op item (on every CPU for a bound cmwq queue) and waits for it.
    pub fn warm_up(&self, t: &'static Tracker) -> bool {
        match self {
            Pool::Cmwq { wq, cpus, .. } if !wq.flags().contains(WqFlags::UNBOUND) => {
                t.reset(cpus.len());
                for &cpu in cpus {
                    if !wq
                        .queue_on(cpu, &Work::new(move |_| t.hit()))
                        .unwrap_or(false)
                    {
                        return false;
                    }
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
            Pool::Cmwq { wq, cpus, rr, next } => {
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
            Pool::Cmwq { wq, .. } => wq.destroy(),
            Pool::Rayon(p) => drop(p),
            Pool::Tokio(rt) => rt.shutdown_timeout(Duration::from_secs(10)),
            Pool::ThreadPool(p) => {
                p.join();
                drop(p);
            }
            Pool::Blocking => {}
        }
    }
}
