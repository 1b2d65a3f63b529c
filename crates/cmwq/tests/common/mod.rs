//! Shared helpers for the cmwq integration tests.
//!
//! Every wait in here has a deadline: a bug in the engine must fail a test with a clear message,
//! never hang CI.

#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Default deadline for anything that "must eventually happen".
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Short window used for negative checks ("this did NOT happen yet"). Never used to order events.
pub const SETTLE: Duration = Duration::from_millis(100);

/// Polls `cond` with short sleeps until it returns `true` or `timeout` passes. Returns the last
/// result of `cond`.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return cond();
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

/// [`wait_until`] with [`DEADLINE`], panicking with `what` on timeout.
#[track_caller]
pub fn wait_for(what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(DEADLINE, cond),
        "timed out after {DEADLINE:?} waiting for: {what}"
    );
}

/// A one-shot gate: closed until [`Latch::open`], then open forever.
#[derive(Default)]
pub struct Latch {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Latch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    pub fn is_open(&self) -> bool {
        *self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until open or `timeout` passes; returns whether it is open.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, timeout, |open| !*open)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }

    /// Waits until open; panics after [`DEADLINE`].
    #[track_caller]
    pub fn wait(&self) {
        assert!(
            self.wait_timeout(DEADLINE),
            "latch was not opened within {DEADLINE:?}"
        );
    }

    /// Waits until open from inside a work item: tells the engine the worker is about to sleep
    /// (so a bound pool may run other items meanwhile). Panics after [`DEADLINE`].
    #[track_caller]
    pub fn wait_blocking(&self) {
        let open = cmwq::blocking(|| self.wait_timeout(DEADLINE));
        assert!(
            open,
            "latch was not opened within {DEADLINE:?} (in a work item)"
        );
    }
}

/// Opens its latches when dropped, so a failing test never leaves workers blocked on them.
pub struct OpenOnDrop(pub Vec<Arc<Latch>>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        for l in &self.0 {
            l.open();
        }
    }
}

/// Guard that opens `latches` when the current scope ends (including by panic).
pub fn open_on_drop(latches: &[&Arc<Latch>]) -> OpenOnDrop {
    OpenOnDrop(latches.iter().map(|l| Arc::clone(l)).collect())
}

/// An item that opens `started` then blocks until `gate` opens; dropping the `Blocker` opens it.
pub struct Blocker {
    pub item: cmwq::Work,
    pub gate: Arc<Latch>,
    pub started: Arc<Latch>,
}

impl Blocker {
    /// A blocker whose item returns as soon as the gate opens.
    pub fn new() -> Self {
        Self::then(|| {})
    }

    /// A blocker whose item calls `after` once the gate has opened.
    pub fn then(after: impl Fn() + Send + Sync + 'static) -> Self {
        let gate = Arc::new(Latch::new());
        let started = Arc::new(Latch::new());
        let item = {
            let (gate, started) = (gate.clone(), started.clone());
            cmwq::Work::new(move |_| {
                started.open();
                gate.wait_blocking();
                after();
            })
        };
        Blocker {
            item,
            gate,
            started,
        }
    }
}

impl Drop for Blocker {
    fn drop(&mut self) {
        self.gate.open();
    }
}

/// Queues `blocker`'s item on `wq`, waits until it runs, then calls `op` on the item from a new
/// thread; the receiver gets what `op` returned.
#[track_caller]
pub fn call_while_running<T: Send + 'static>(
    wq: &cmwq::Workqueue,
    blocker: &Blocker,
    op: fn(&cmwq::Work) -> T,
) -> mpsc::Receiver<T> {
    assert!(wq.queue(&blocker.item));
    blocker.started.wait();
    let (tx, rx) = mpsc::channel();
    let item = blocker.item.clone();
    std::thread::spawn(move || {
        let _ = tx.send(op(&item));
    });
    rx
}

/// An item that adds one to the returned counter (`SeqCst`) each time it runs.
pub fn counting_item() -> (cmwq::Work, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    let item = cmwq::Work::new(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    });
    (item, runs)
}

/// Counts arrivals; lets a test wait for N of them.
#[derive(Default)]
pub struct Counter {
    n: Mutex<usize>,
    cv: Condvar,
}

impl Counter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn inc(&self) {
        *self.n.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.cv.notify_all();
    }

    pub fn get(&self) -> usize {
        *self.n.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the count is at least `n`; panics after [`DEADLINE`].
    #[track_caller]
    pub fn wait_for(&self, n: usize) {
        let guard = self.n.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, DEADLINE, |v| *v < n)
            .unwrap_or_else(|e| e.into_inner());
        assert!(
            *guard >= n,
            "counter reached {} of {n} within {DEADLINE:?}",
            *guard
        );
    }
}

/// Detects two overlapping executions of the same work item.
#[derive(Default)]
pub struct OverlapDetector {
    running: AtomicUsize,
    overlapped: AtomicBool,
    max_seen: AtomicUsize,
}

impl OverlapDetector {
    pub fn new() -> Self {
        Self::default()
    }

    /// Call at the start of the work function; returns a guard that ends the execution on drop
    /// (also when the work function panics).
    pub fn enter(&self) -> OverlapGuard<'_> {
        let before = self.running.fetch_add(1, Ordering::SeqCst);
        if before != 0 {
            self.overlapped.store(true, Ordering::SeqCst);
        }
        self.max_seen.fetch_max(before + 1, Ordering::SeqCst);
        OverlapGuard(self)
    }

    pub fn overlapped(&self) -> bool {
        self.overlapped.load(Ordering::SeqCst)
    }

    pub fn max_concurrent(&self) -> usize {
        self.max_seen.load(Ordering::SeqCst)
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }
}

pub struct OverlapGuard<'a>(&'a OverlapDetector);

impl Drop for OverlapGuard<'_> {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Spawns `f` on a new thread and returns a handle whose result can be awaited with a deadline.
pub fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    std::thread::spawn(f)
}

/// Joins `handle`, panicking if it does not finish within [`DEADLINE`] (the thread is then
/// leaked) and propagating its panic.
#[track_caller]
pub fn join<T>(what: &str, handle: JoinHandle<T>) -> T {
    assert!(
        wait_until(DEADLINE, || handle.is_finished()),
        "timed out after {DEADLINE:?} waiting for thread: {what}"
    );
    match handle.join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}

/// Joins all `handles` with one shared deadline.
#[track_caller]
pub fn join_all<T>(what: &str, handles: Vec<JoinHandle<T>>) -> Vec<T> {
    assert!(
        wait_until(DEADLINE, || handles.iter().all(|h| h.is_finished())),
        "timed out after {DEADLINE:?} waiting for threads: {what} ({} of {} still running)",
        handles.iter().filter(|h| !h.is_finished()).count(),
        handles.len()
    );
    handles
        .into_iter()
        .map(|h| match h.join() {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e),
        })
        .collect()
}

/// Runs `f` on a helper thread and returns its result; panics if it does not return within
/// [`DEADLINE`] (used to call possibly-hanging engine functions such as flush).
#[track_caller]
pub fn with_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    join(what, std::thread::spawn(f))
}

/// The kernel thread id of the calling thread.
pub fn current_tid() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").expect("readlink /proc/thread-self");
    let s = link.to_string_lossy();
    s.rsplit('/')
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("unexpected /proc/thread-self link: {s}"))
}

/// `comm` (OS thread name) of the calling thread.
pub fn current_comm() -> String {
    std::fs::read_to_string("/proc/thread-self/comm")
        .expect("read /proc/thread-self/comm")
        .trim_end_matches('\n')
        .to_string()
}

/// Fields of a `/proc/.../stat` line after the `comm` field; index 0 is field 3 ("state").
fn stat_fields_after_comm(stat: &str) -> Vec<String> {
    let close = stat.rfind(')').expect("malformed stat line");
    stat[close + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The CPU the calling thread is running on, from `/proc/thread-self/stat` field 39 ("processor").
pub fn current_os_cpu() -> usize {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("read stat");
    let fields = stat_fields_after_comm(&stat);
    // Field 3 is at index 0, so field 39 is at index 36.
    fields[36].parse().expect("processor field")
}

/// The nice value of the calling thread, from `/proc/thread-self/stat` field 19.
pub fn current_os_nice() -> i32 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("read stat");
    let fields = stat_fields_after_comm(&stat);
    fields[16].parse().expect("nice field")
}

/// The scheduler state letter of thread `tid` of this process, if it still exists.
pub fn thread_state(tid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    stat_fields_after_comm(&stat)
        .first()
        .and_then(|s| s.chars().next())
}

/// Waits until thread `tid` is asleep (blocked) and stays so across a few polls; used to know
/// that a helper thread has entered a blocking engine call (e.g. flush) after it said it would.
/// Also returns if the thread has exited (the call returned at once; the caller checks that).
#[track_caller]
pub fn wait_thread_blocked(what: &str, tid: u32) {
    let mut streak = 0;
    wait_for(what, || {
        match thread_state(tid) {
            None => return true,
            Some('S') | Some('D') => streak += 1,
            Some(_) => streak = 0,
        }
        if streak < 5 {
            std::thread::sleep(Duration::from_millis(2));
        }
        streak >= 5
    });
}

/// Thread ids of this process.
pub fn task_ids() -> Vec<u32> {
    std::fs::read_dir("/proc/self/task")
        .expect("read /proc/self/task")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// `(tid, comm)` of every thread of this process.
pub fn threads() -> Vec<(u32, String)> {
    task_ids()
        .into_iter()
        .filter_map(|tid| {
            let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
            Some((tid, comm.trim_end_matches('\n').to_string()))
        })
        .collect()
}

/// Whether thread `tid` still exists in this process.
pub fn thread_exists(tid: u32) -> bool {
    std::path::Path::new(&format!("/proc/self/task/{tid}")).exists()
}

/// A name unique within this process, for workqueues created by tests running in parallel.
pub fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Spins (CPU work, not a sleep) for `d` of wall time.
pub fn burn(d: Duration) {
    let t = Instant::now();
    while t.elapsed() < d {
        std::hint::spin_loop();
    }
}

/// A tiny xorshift generator: deterministic per seed, no dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next pseudo-random value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Items that spin until a releaser item runs (each gives up after [`DEADLINE`] and counts it
/// in `gave_up`): the shape of an item waiting, without sleeping, for one queued behind it.
pub struct Spinners {
    pub items: Vec<cmwq::Work>,
    pub releaser: cmwq::Work,
    pub gave_up: Arc<AtomicUsize>,
}

/// `n` spinners, each inside `cmwq::blocking` if `hinted`.
pub fn spinners(n: usize, hinted: bool) -> Spinners {
    let release = Arc::new(AtomicBool::new(false));
    let gave_up = Arc::new(AtomicUsize::new(0));
    let items = (0..n)
        .map(|_| {
            let (release, gave_up) = (release.clone(), gave_up.clone());
            cmwq::Work::new(move |_| {
                let spin = || {
                    let t = Instant::now();
                    while !release.load(Ordering::Acquire) {
                        if t.elapsed() > DEADLINE {
                            gave_up.fetch_add(1, Ordering::Relaxed);
                            return;
                        }
                        std::hint::spin_loop();
                    }
                };
                if hinted {
                    cmwq::blocking(spin)
                } else {
                    spin()
                }
            })
        })
        .collect();
    let releaser = cmwq::Work::new(move |_| release.store(true, Ordering::Release));
    Spinners {
        items,
        releaser,
        gave_up,
    }
}

/// A waker that unparks the polling thread and counts its wake-ups (for the tests' tiny
/// executors: no runtime dependency).
pub struct ThreadWaker {
    pub thread: std::thread::Thread,
    pub wakes: AtomicUsize,
}

impl std::task::Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// A [`ThreadWaker`] for the calling thread, and the `Waker` made from it.
pub fn thread_waker() -> (Arc<ThreadWaker>, std::task::Waker) {
    let w = Arc::new(ThreadWaker {
        thread: std::thread::current(),
        wakes: AtomicUsize::new(0),
    });
    (w.clone(), std::task::Waker::from(w))
}

/// A global panic hook that records `(workqueue, message)` of every report, installed once per
/// test binary; tests read back the reports of their own (uniquely named) queues.
#[allow(dead_code)]
pub mod global_hook {
    use std::sync::{Mutex, OnceLock};

    static REPORTS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

    /// Installs the recording hook (once; later calls do nothing).
    pub fn install() {
        static ONCE: OnceLock<()> = OnceLock::new();
        ONCE.get_or_init(|| {
            cmwq::set_panic_hook(|p: &cmwq::WorkPanic| {
                REPORTS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((p.workqueue.clone(), p.message.clone()));
            });
        });
    }

    /// The messages reported so far for workqueue `wq`.
    pub fn reports_for(wq: &str) -> Vec<String> {
        REPORTS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(w, _)| w == wq)
            .map(|(_, m)| m.clone())
            .collect()
    }
}

/// Runs test `name` of this test binary again in a child process with the environment
/// variable `env` set to `1` (the test then plays the child's part), waits at most `timeout`
/// (a hang fails the test instead of the CI job), and asserts that the child exited
/// successfully and printed `CHILD OK`.
#[allow(dead_code)]
#[track_caller]
pub fn run_in_child(name: &str, env: &str, timeout: Duration) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the child");
    let finished = wait_until(timeout, || {
        child.try_wait().expect("poll the child").is_some()
    });
    if !finished {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("child output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        finished && out.status.success() && stdout.contains("CHILD OK"),
        "child failed (finished: {finished}):\n{stdout}\n{stderr}"
    );
}

/// The CPUs thread `tid` may run on (`sched_getaffinity`; 0 is the calling thread, the pid the
/// main thread).
pub fn affinity_of(tid: i32) -> Vec<usize> {
    // SAFETY: all-zero is a valid, empty `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and size describe `set`, which lives across the call.
    let rc =
        unsafe { libc::sched_getaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(rc, 0, "sched_getaffinity of {tid}");
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `c` is below CPU_SETSIZE, the capacity of `set`.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Restricts thread `tid` to `cpus` (`sched_setaffinity`; 0 is the calling thread, the pid the
/// main thread, which defines the process's CPU set).
pub fn set_affinity(tid: i32, cpus: &[usize]) {
    // SAFETY: all-zero is a valid, empty `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        assert!(c < libc::CPU_SETSIZE as usize, "CPU {c} out of range");
        // SAFETY: `c` is below CPU_SETSIZE, the capacity of `set` (checked above).
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: the pointer and size describe `set`, which lives across the call.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(rc, 0, "sched_setaffinity of {tid} to {cpus:?}");
}
