//! CPUs and the operating-system calls about them: the process's CPU set (kept in
//! `os/cpuset.rs`), the CPU the caller runs on, pinning, nice values and thread ids. Every
//! `unsafe` libc call of the crate is in the OS layer.

pub(crate) use super::cpuset::{online, possible, restrict_to_online};

/// The CPUs this process may run on now (its CPU set: the main thread's affinity mask cut to
/// the cgroup's effective cpuset where readable), ascending.
///
/// These are the CPUs that [`work_on_cpu`](crate::work_on_cpu) and
/// [`schedule_on_each_cpu`](crate::schedule_on_each_cpu) use. The set follows changes:
/// [`refresh_cpus`](crate::refresh_cpus) re-reads it at once, and the engine's monitor
/// re-reads it periodically. [`Workqueue::queue_on`](crate::Workqueue::queue_on) also accepts
/// possible CPUs that are not online (their items run on the CPU's disassociated pool).
pub fn online_cpus() -> Vec<usize> {
    online()
}

/// The mask of thread (or process) `pid`; empty if it cannot be read.
pub(crate) fn affinity_of(pid: libc::pid_t) -> Vec<usize> {
    // SAFETY: `cpu_set_t` is a plain bitmask for which all-zero is a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and size describe `set`, which lives across the call; `pid` names a
    // thread or process (0: the calling thread), and a wrong one only makes the call fail.
    let rc =
        unsafe { libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the capacity of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// `Err(Error::InvalidCpu)` unless `cpu` is possible (online or not): what `queue_on` takes.
pub(crate) fn check_cpu(cpu: usize) -> Result<(), crate::Error> {
    match possible().index_of(cpu) {
        Some(_) => Ok(()),
        None => Err(crate::Error::InvalidCpu { cpu }),
    }
}

/// `Err(Error::InvalidCpu)` unless `cpu` is one of [`online_cpus()`] now.
pub(crate) fn check_online(cpu: usize) -> Result<(), crate::Error> {
    if super::cpuset::is_online_exact(cpu) {
        Ok(())
    } else {
        Err(crate::Error::InvalidCpu { cpu })
    }
}
/// The CPU the calling thread is running on (a hint: it may move right after).
#[inline]
pub(crate) fn current_cpu() -> usize {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    if cpu < 0 {
        0
    } else {
        cpu as usize
    }
}

/// Restricts the calling thread to `cpus`. Returns the OS error on failure.
pub(crate) fn pin_current_thread(cpus: &[usize]) -> std::io::Result<()> {
    pin_thread(0, cpus)
}

/// Restricts thread `tid` of this process (0: the calling thread) to `cpus`. Returns the OS
/// error on failure (`ESRCH` for a thread that has exited).
pub(crate) fn pin_thread(tid: i32, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: all-zero is a valid, empty `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu < libc::CPU_SETSIZE as usize {
            // SAFETY: `cpu` is below CPU_SETSIZE, the capacity of `set`.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
    }
    // SAFETY: the pointer and size describe `set`; `tid` names a thread (0: the calling
    // one), and a wrong one only makes the call fail.
    let rc = unsafe { libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The kernel thread id of the calling thread.
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// Sets the nice value of the calling thread (Linux threads have their own nice value).
pub(crate) fn set_current_nice(nice: i32) -> std::io::Result<()> {
    let tid = gettid();
    // SAFETY: setpriority has no memory-safety preconditions; `tid` is our own thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The first version (48 bytes) of the kernel's `struct sched_attr` (sched_setattr(2)).
#[repr(C)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

/// Asks for a time slice of `slice` for the calling thread, which stays `SCHED_OTHER` at
/// `nice`. Since Linux 6.12 the fair scheduler (EEVDF) takes a normal thread's
/// `sched_runtime` as its slice (clamped to 0.1-100 ms): a shorter slice gives the thread
/// earlier deadlines, so it runs sooner after it wakes. Older kernels ignore the field.
pub(crate) fn set_current_slice(slice: std::time::Duration, nice: i32) -> std::io::Result<()> {
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: slice.as_nanos() as u64,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: `attr` is a valid, initialised `struct sched_attr` of the size it states, and
    // outlives the call; pid 0 names the calling thread; flags must be 0.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0u32) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// CPU time used so far by thread `tid` of this process (its POSIX CPU clock, the clock id
/// `pthread_getcpuclockid` makes from the thread id), or `None` if no thread of this process
/// has that id any more. Needs no lock: a thread that has exited gives `EINVAL`, and a thread
/// id names threads of the calling process only (the kernel refuses per-thread clocks of
/// other processes), so at worst a reused id reads another thread of ours.
pub(crate) fn thread_cpu_time(tid: i32) -> Option<std::time::Duration> {
    if !(1..1 << 22).contains(&tid) {
        // Not a thread id (Linux's PID_MAX_LIMIT is 2^22; 0 would name the calling thread's
        // own clock, and ids from 2^28 would not encode as a CPU clock id).
        return None;
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime has no memory preconditions beyond a valid out-pointer.
    if unsafe { libc::clock_gettime(thread_clock_id(tid), &mut ts) } != 0 {
        return None;
    }
    Some(std::time::Duration::new(
        ts.tv_sec as u64,
        ts.tv_nsec as u32,
    ))
}

/// Linux's clock id for thread `tid`'s scheduler CPU clock: the id, complemented, shifted by
/// three, with the per-thread bit (4) and `CPUCLOCK_SCHED` (2).
fn thread_clock_id(tid: i32) -> libc::clockid_t {
    ((!(tid as u32) << 3) | 6) as libc::clockid_t
}

/// The scheduler state letter of thread `tid` of this process (`R` running or runnable, `S`
/// sleeping, `D` uninterruptible sleep, ...), from `/proc/self/task/<tid>/stat`.
pub(crate) fn task_state(tid: i32) -> Option<u8> {
    use std::io::Read;
    let mut buf = [0u8; 256];
    let mut f = std::fs::File::open(format!("/proc/self/task/{tid}/stat")).ok()?;
    let n = f.read(&mut buf).ok()?;
    let buf = &buf[..n];
    // "tid (comm) S ...": the comm may contain ')' so look for the last one.
    let close = buf.iter().rposition(|&b| b == b')')?;
    buf.get(close + 2).copied()
}

/// Cuts `name` to Linux's 15-byte thread-name limit at a character boundary, with NUL bytes
/// (which the OS cannot take in a thread name) shown as `?`.
pub(crate) fn thread_name(name: &str) -> String {
    let name = name.replace('\0', "?");
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_names_are_cut_and_have_no_nul() {
        assert_eq!(thread_name("kworker/R-a\0b"), "kworker/R-a?b");
        assert_eq!(thread_name("kworker/R-abcdefghij"), "kworker/R-abcde");
        assert_eq!(thread_name("kworker/R-abcdé"), "kworker/R-abcd");
    }

    #[test]
    fn own_thread_is_running_and_has_cpu_time() {
        assert_eq!(task_state(gettid()), Some(b'R'));
        let me = gettid();
        let t0 = thread_cpu_time(me).expect("cpu clock");
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_add(std::hint::black_box(i));
        }
        std::hint::black_box(x);
        assert!(thread_cpu_time(me).expect("cpu clock") > t0);
    }

    #[test]
    fn thread_clock_id_is_the_one_pthread_makes() {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: our own live thread; `clock` is a valid out-pointer.
        let rc = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
        assert_eq!(rc, 0);
        assert_eq!(thread_clock_id(gettid()), clock);
        // No thread has these ids.
        assert_eq!(thread_cpu_time(0), None);
        assert_eq!(thread_cpu_time(i32::MAX), None);
        // A thread that has exited has no clock any more. `join` returns once the thread has
        // cleared its tid word, which the kernel does before the task is gone: until then
        // its clock may still read, so wait (with a deadline) for it to go.
        let gone = std::thread::spawn(gettid).join().expect("thread");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while thread_cpu_time(gone).is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "thread {gone} never went away"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn thread_names_fit_linux_limit() {
        assert_eq!(thread_name("kworker/R-a_very_long_name"), "kworker/R-a_ver");
        assert_eq!(thread_name("kworker/0:1H"), "kworker/0:1H");
        assert_eq!(thread_name("kworker/R-ééééé").len(), 14);
    }
}

#[cfg(test)]
mod state_tests {
    use super::*;

    #[test]
    fn a_sleeping_thread_reads_as_asleep() {
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
        });
        let tid = rx.recv().unwrap();
        let mut states = Vec::new();
        for _ in 0..20 {
            std::thread::sleep(std::time::Duration::from_millis(5));
            states.push(task_state(tid).map(char::from));
        }
        h.join().unwrap();
        assert!(states.iter().all(|s| *s == Some('S')), "{states:?}");
    }
}
