//! Operating-system probes: thread counts, context switches, CPU spin, machine facts.

use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Number of OS threads of this process, from `/proc/self/stat` (`num_threads`).
pub fn process_threads() -> usize {
    ThreadCount::open().and_then(|mut c| c.read()).unwrap_or(0)
}

/// Reads this process's thread count from `/proc/self/stat`, re-reading one open file: a
/// read costs ~3 us here, against ~14 us to open and read `/proc/self/status` (the sampler
/// does it every millisecond, on a CPU the workload is using).
struct ThreadCount {
    file: std::fs::File,
    buf: Vec<u8>,
}

impl ThreadCount {
    fn open() -> Option<ThreadCount> {
        Some(ThreadCount {
            file: std::fs::File::open("/proc/self/stat").ok()?,
            buf: vec![0; 4096],
        })
    }

    fn read(&mut self) -> Option<usize> {
        use std::os::unix::fs::FileExt;
        let n = self.file.read_at(&mut self.buf, 0).ok()?;
        let text = std::str::from_utf8(&self.buf[..n]).ok()?;
        // Fields after the command name (which may hold spaces and parentheses) start with
        // field 3, the state; `num_threads` is field 20.
        let rest = &text[text.rfind(')')? + 1..];
        rest.split_ascii_whitespace().nth(17)?.parse().ok()
    }
}

/// Number of threads of this process whose name (`comm`) starts with `prefix`.
pub fn threads_named(prefix: &str) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .map(|c| c.starts_with(prefix))
                .unwrap_or(false)
        })
        .count()
}

/// Context switches and CPU time of a `getrusage` target.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub voluntary: i64,
    pub involuntary: i64,
    pub cpu: Duration,
}

impl Usage {
    pub fn minus(self, earlier: Usage) -> Usage {
        Usage {
            voluntary: self.voluntary - earlier.voluntary,
            involuntary: self.involuntary - earlier.involuntary,
            cpu: self.cpu.saturating_sub(earlier.cpu),
        }
    }
}

fn rusage(who: libc::c_int) -> Usage {
    // SAFETY: `rusage` is plain old data, so the all-zero value is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage` and `who` is RUSAGE_SELF or RUSAGE_THREAD.
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return Usage::default();
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    Usage {
        voluntary: ru.ru_nvcsw as i64,
        involuntary: ru.ru_nivcsw as i64,
        cpu: tv(ru.ru_utime) + tv(ru.ru_stime),
    }
}

/// Whole-process usage (all threads, live and exited).
pub fn process_usage() -> Usage {
    rusage(libc::RUSAGE_SELF)
}

/// Usage of the calling thread only.
pub fn thread_usage() -> Usage {
    rusage(libc::RUSAGE_THREAD)
}

/// Sets the calling thread's timer slack to 1 ns so short sleeps wake on time.
pub fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and only affects the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Samples the process thread count every millisecond on its own thread.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<SamplerOut>,
}

/// What a [`Sampler`] saw.
pub struct SamplerOut {
    /// `(when, process threads)` pairs.
    pub trace: Vec<(Instant, usize)>,
    /// The sampler thread's own context switches, to subtract from process totals.
    pub own: Usage,
}

impl Sampler {
    pub fn start() -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("bench-sampler".into())
            .spawn(move || {
                tight_timer_slack();
                let before = thread_usage();
                let mut count = ThreadCount::open();
                let mut trace = Vec::with_capacity(16_384);
                while !flag.load(Ordering::Relaxed) {
                    if let Some(n) = count.as_mut().and_then(ThreadCount::read) {
                        trace.push((Instant::now(), n));
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                SamplerOut {
                    trace,
                    own: thread_usage().minus(before),
                }
            })
            .expect("spawn sampler thread");
        Sampler { stop, handle }
    }

    pub fn stop(self) -> SamplerOut {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("sampler thread panicked")
    }
}

/// Spin rates measured by [`Spin::measure`], in iterations per microsecond.
#[derive(Clone, Copy, Debug)]
pub struct Rates {
    pub median: f64,
    pub fastest: f64,
}

/// A calibrated CPU spin loop.
#[derive(Clone, Copy, Debug)]
pub struct Spin {
    /// Loop iterations per microsecond.
    pub iters_per_us: f64,
}

#[inline(never)]
fn spin_iters(n: u64) -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15_u64;
    for i in 0..n {
        x = (x.rotate_left(5) ^ i).wrapping_mul(0x2545_F491_4F6C_DD1D);
    }
    black_box(x)
}

impl Spin {
    /// Times a fixed loop on every core at once, 9 rounds, and keeps the median round. All
    /// cores spin together because the workloads keep all cores busy, and a core may run the
    /// loop slower while its siblings are busy (SMT, shared caches, frequency limits). The
    /// median, not the fastest round, so that one lucky round does not set the lower bounds
    /// (on this project's 2-core machine the two differ by under 1%).
    pub fn calibrate() -> Spin {
        Spin {
            iters_per_us: Self::measure(cores()).median,
        }
    }

    /// Iterations per microsecond of one of `threads` threads spinning at once (the mean of
    /// the threads per round), over 9 rounds.
    pub fn measure(threads: usize) -> Rates {
        let n = 2_000_000_u64;
        let threads = threads.max(1);
        let barrier = std::sync::Barrier::new(threads);
        let mut rounds: Vec<Duration> = (0..9)
            .map(|_| {
                std::thread::scope(|s| {
                    let handles: Vec<_> = (0..threads)
                        .map(|_| {
                            s.spawn(|| {
                                spin_iters(n / 4);
                                barrier.wait();
                                let t = Instant::now();
                                spin_iters(black_box(n));
                                t.elapsed()
                            })
                        })
                        .collect();
                    let total: Duration = handles
                        .into_iter()
                        .map(|h| h.join().expect("calibration thread"))
                        .sum();
                    total / threads as u32
                })
            })
            .collect();
        rounds.sort();
        let rate = |d: Duration| n as f64 / (d.as_nanos().max(1) as f64 / 1000.0);
        Rates {
            median: rate(rounds[rounds.len() / 2]),
            fastest: rate(rounds[0]),
        }
    }

    pub fn iters_for(&self, d: Duration) -> u64 {
        (d.as_nanos() as f64 / 1000.0 * self.iters_per_us).round() as u64
    }

    #[inline]
    pub fn run(iters: u64) {
        spin_iters(iters);
    }
}

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), in nanoseconds.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What one thread-CPU-clock reading adds to a measured interval (the median of 1,001
/// back-to-back pairs), subtracted from every metered spin.
fn clock_read_ns() -> u64 {
    static COST: OnceLock<u64> = OnceLock::new();
    *COST.get_or_init(|| {
        let mut d: Vec<u64> = (0..1001)
            .map(|_| {
                let a = thread_cpu_ns();
                thread_cpu_ns().saturating_sub(a)
            })
            .collect();
        d.sort_unstable();
        d[d.len() / 2]
    })
}

/// Every `METER_EVERY`-th spin of each thread is timed on the thread's CPU clock.
const METER_EVERY: u32 = 16;

/// CPUs the meter keeps apart; spins on CPUs past the last are counted in the last.
const METER_CPUS: usize = 256;

/// Metered nanoseconds and iterations, per CPU the spin started on.
static METERED: [(AtomicU64, AtomicU64); METER_CPUS] =
    [const { (AtomicU64::new(0), AtomicU64::new(0)) }; METER_CPUS];

thread_local! {
    static SPINS: Cell<u32> = const { Cell::new(0) };
}

/// The CPU cost of the spin loop measured inside a workload's own items while it runs, so
/// that its lower bound is the CPU the items really took (immune to the machine's speed
/// drifting from the start-up calibration). Each thread times its first spin and one in
/// [`METER_EVERY`] after it on its CPU clock, which counts only the time the thread ran (not
/// time preempted, not the hypervisor's steal), so executor overhead and waiting stay out of
/// it. A timed spin during which the thread was switched out is dropped: an executor that
/// runs more threads than CPUs would otherwise have the cost of refilling caches after its
/// preemptions counted as item CPU (a probe with 60 threads sleeping 5 ms and spinning
/// 200 us on 2 cores measured 6% more CPU per spin than with 2). The cost of a clock read is
/// subtracted; the rest (about 1.4 us per 16 spins here: two thread-clock reads and two
/// `getrusage` calls, ~410 and ~260 ns each in a C probe) is the meter's overhead, charged to
/// the executor under test.
pub struct SpinMeter;

impl SpinMeter {
    /// Starts a new measurement (one per repetition).
    pub fn reset() {
        clock_read_ns();
        for (ns, iters) in &METERED {
            ns.store(0, Ordering::Relaxed);
            iters.store(0, Ordering::Relaxed);
        }
    }

    /// Spins `iters` iterations; one call in [`METER_EVERY`] per thread is timed.
    #[inline]
    pub fn run(iters: u64) {
        let nth = SPINS.with(|c| {
            let n = c.get();
            c.set(n.wrapping_add(1));
            n
        });
        if nth % METER_EVERY != 0 {
            spin_iters(iters);
            return;
        }
        // SAFETY: sched_getcpu has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() }.clamp(0, METER_CPUS as i32 - 1) as usize;
        let switches = || {
            let u = thread_usage();
            u.voluntary + u.involuntary
        };
        let s0 = switches();
        let t0 = thread_cpu_ns();
        spin_iters(iters);
        let ns = thread_cpu_ns()
            .saturating_sub(t0)
            .saturating_sub(clock_read_ns());
        if switches() != s0 {
            // Preempted mid-spin: the caches and TLB it refilled afterwards are the cost of
            // the executor's oversubscription, which must not raise the bound. Not counted.
            return;
        }
        // Relaxed: read after the repetition's items are all done, which the tracker's
        // wait already orders.
        METERED[cpu].0.fetch_add(ns, Ordering::Relaxed);
        METERED[cpu].1.fetch_add(iters, Ordering::Relaxed);
    }

    /// Nanoseconds of CPU per spin iteration since the last [`reset`](Self::reset).
    pub fn ns_per_iter() -> Option<f64> {
        let (ns, iters) = METERED.iter().fold((0, 0), |(n, i), (ns, iters)| {
            (
                n + ns.load(Ordering::Relaxed),
                i + iters.load(Ordering::Relaxed),
            )
        });
        (iters > 0).then(|| ns as f64 / iters as f64)
    }

    /// The same per CPU (where the metered spin started), for the CPUs with a measurement:
    /// `(cpu, ns per iteration)`. A spin of an unpinned thread may move mid-way; for
    /// pinned workers (per-CPU pools) this is the speed of each CPU.
    pub fn ns_per_iter_by_cpu() -> Vec<(usize, f64)> {
        METERED
            .iter()
            .enumerate()
            .filter_map(|(cpu, (ns, iters))| {
                let iters = iters.load(Ordering::Relaxed);
                (iters > 0).then(|| (cpu, ns.load(Ordering::Relaxed) as f64 / iters as f64))
            })
            .collect()
    }
}

/// Prints the all-core spin rate every 5 s for `total`, and its range at the end.
pub fn spin_drift(total: Duration) {
    let t0 = Instant::now();
    let (mut lo, mut hi) = (f64::MAX, 0.0_f64);
    while t0.elapsed() < total {
        let r = Spin::measure(cores());
        lo = lo.min(r.median);
        hi = hi.max(r.median);
        println!(
            "{:6.1} s  median {:.1}  fastest {:.1} iterations/us per core",
            t0.elapsed().as_secs_f64(),
            r.median,
            r.fastest
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    if hi > 0.0 {
        println!(
            "range of the medians: {lo:.1} - {hi:.1} ({:.1}% of the lowest)",
            (hi - lo) / lo * 100.0
        );
    }
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Busy CPU time of the whole machine, all processes (`/proc/stat`, first line).
pub fn machine_busy() -> Duration {
    let ticks: u64 = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().next()?.to_string();
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            // user nice system idle iowait irq softirq steal: everything but idle and iowait.
            Some(
                f.iter()
                    .take(8)
                    .enumerate()
                    .filter(|(i, _)| *i != 3 && *i != 4)
                    .map(|(_, v)| v)
                    .sum(),
            )
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// CPU time of this process plus its waited-for children.
pub fn own_and_children_cpu() -> Duration {
    process_usage().cpu + rusage(libc::RUSAGE_CHILDREN).cpu
}

/// Current UTC time as `YYYY-MM-DD HH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
