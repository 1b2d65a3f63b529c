//! Helpers for the hardening tests (`tests/harden_*.rs`, issue 11).
//!
//! Every hardening scenario runs in a child process: the test re-executes its own test binary
//! with a filter that selects only itself and an environment variable that tells it to run the
//! scenario. A defect that wedges a per-CPU pool (and with it `system_wq`), deadlocks the timer
//! service, replaces the process-wide panic hook or pauses the process-wide test clock then
//! stays inside that process, and a scenario that hangs past all of its own deadlines is killed
//! by the parent, which fails the test with the child's output.

#![allow(dead_code)]

use std::any::Any;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use cmwq::{Work, Workqueue};

/// Environment variable naming the scenario a child process runs.
const CHILD_VAR: &str = "CMWQ_HARDEN_CHILD";

/// Line the child prints first, so the parent knows the filter selected the scenario.
const RAN_MARKER: &str = "cmwq-harden-child-ran:";

/// How long a child may run before the parent kills it.
pub const CHILD_LIMIT: Duration = Duration::from_secs(150);

/// Deadline for a call that must return promptly (a flush, a cancel, a destroy).
pub const PROMPT: Duration = Duration::from_secs(10);

/// Runs `scenario` in a child process (see the module documentation). `name` must be the name
/// of the calling `#[test]` function (checked: the child reports which scenario it ran).
#[track_caller]
pub fn isolated(name: &str, scenario: impl FnOnce()) {
    isolated_env(name, Vec::new, scenario);
}

/// [`isolated`], with environment variables for the child: `env` runs in the parent only
/// (before the child starts: it may prepare what the variables name, such as a fake sysfs
/// tree for `CMWQ_SYSFS_ROOT`, read at the engine's first use).
#[track_caller]
pub fn isolated_env(
    name: &str,
    env: impl FnOnce() -> Vec<(String, std::ffi::OsString)>,
    scenario: impl FnOnce(),
) {
    if let Ok(which) = std::env::var(CHILD_VAR) {
        assert_eq!(which, name, "child started for another scenario");
        println!("{RAN_MARKER}{name}");
        // A failing scenario must not unwind: dropping its workqueues on the way out would
        // destroy them, which hangs on a wedged pool. Report and exit at once instead.
        let me = std::thread::current().id();
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            prev(info);
            if std::thread::current().id() == me {
                eprintln!("cmwq-harden: the scenario failed; exiting the child without unwinding");
                std::process::exit(101);
            }
        }));
        scenario();
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, name)
        .env("RUST_BACKTRACE", "0")
        .envs(env())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the test binary as a child");
    let read_all = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("stdout")));
    let err = read_all(Box::new(child.stderr.take().expect("stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if start.elapsed() > CHILD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let output = format!(
        "--- child stdout ---\n{}\n--- child stderr ---\n{}",
        tail(&out),
        tail(&err)
    );
    match status {
        None => panic!(
            "scenario {name} hung: the child process was killed after {CHILD_LIMIT:?} \
             (none of its own deadlines fired)\n{output}"
        ),
        Some(status) => {
            assert!(
                out.contains(&format!("{RAN_MARKER}{name}")),
                "the child did not run scenario {name} (test filter mismatch?)\n{output}"
            );
            assert!(
                status.success(),
                "scenario {name} failed in its child process ({status})\n{output}"
            );
        }
    }
}

/// The last 6,000 bytes of `s` (at a character boundary).
fn tail(s: &str) -> &str {
    let mut start = s.len().saturating_sub(6000);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// How a call run by [`within`] went wrong.
#[derive(Debug)]
pub enum Failed {
    /// It panicked, with this message.
    Panicked(String),
    /// It did not return within the deadline (its thread is left behind).
    TimedOut(Duration),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Panicked(m) => write!(f, "panicked: {m}"),
            Failed::TimedOut(d) => write!(f, "did not return within {d:?}"),
        }
    }
}

/// Runs `f` on a helper thread; its result, or how it failed (a panic, or no return within
/// `limit`: the thread is then abandoned, which is fine in a child process).
pub fn within<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failed> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(p)) => Err(Failed::Panicked(panic_message(&*p))),
        Err(_) => Err(Failed::TimedOut(limit)),
    }
}

/// [`within`] that panics with `what` on failure.
#[track_caller]
pub fn must_return<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    match within(limit, f) {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// A latch opened by the returned item each time it runs.
pub fn signalling_item() -> (Work, Arc<crate::common::Latch>, Arc<AtomicUsize>) {
    let latch = Arc::new(crate::common::Latch::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let (l, r) = (latch.clone(), runs.clone());
    let item = Work::new(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
        l.open();
    });
    (item, latch, runs)
}

/// Checks that the pool serving `wq` on `cpu` still works after some event: a new item queued
/// there runs, a flush of `wq` returns, and (for the CPU's normal pool) an item of
/// `system_wq` on that CPU runs. Returns one line per failure, prefixed with `defect`.
pub fn pool_alive_failures(wq: &Workqueue, cpu: usize, defect: &str) -> Vec<String> {
    let mut failures = Vec::new();
    let (item, ran, _) = signalling_item();
    match wq.queue_on(cpu, &item) {
        Ok(true) => {
            if !ran.wait_timeout(PROMPT) {
                failures.push(format!(
                    "{defect}: a later item queued on {:?} (CPU {cpu}) did not run within \
                     {PROMPT:?}: the pool is wedged",
                    wq.name()
                ));
            }
        }
        other => failures.push(format!(
            "{defect}: queueing a later item on {:?} failed: {other:?}",
            wq.name()
        )),
    }
    let w = wq.clone();
    if let Err(e) = within(PROMPT, move || w.flush()) {
        failures.push(format!("{defect}: flush of {:?} {e}", wq.name()));
    }
    if !wq.flags().contains(cmwq::WqFlags::UNBOUND) && !wq.flags().contains(cmwq::WqFlags::HIGHPRI)
    {
        let (item, ran, _) = signalling_item();
        let _ = cmwq::system_wq().queue_on(cpu, &item);
        if !ran.wait_timeout(PROMPT) {
            failures.push(format!(
                "{defect}: an item of system_wq on CPU {cpu} did not run within {PROMPT:?}: \
                 the CPU's pool is wedged"
            ));
        }
    }
    failures
}

/// Panics with every line of `failures` if there is any.
#[track_caller]
pub fn assert_no_failures(failures: &[String]) {
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Resident set size of this process, in bytes (from `/proc/self/statm`).
pub fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("read /proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("resident field of statm");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).unwrap_or(4096)
}

/// Sum over this process's threads of `voluntary_ctxt_switches` (how often they went to sleep).
pub fn voluntary_switches() -> u64 {
    let mut total = 0;
    for tid in crate::common::task_ids() {
        let Ok(status) = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")) else {
            continue;
        };
        total += status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// Restricts the calling thread to `cpu`.
pub fn pin_to(cpu: usize) {
    // SAFETY: all-zero is a valid, empty `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the callers pass CPU ids from `online_cpus()`, below CPU_SETSIZE.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: the pointer and size describe `set`; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    assert_eq!(rc, 0, "sched_setaffinity to CPU {cpu}");
}
