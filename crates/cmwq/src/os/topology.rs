//! CPUs and the operating-system calls about them: the process's CPU set, the CPU the caller
//! runs on, pinning, nice values and thread ids. Every `unsafe` libc call of the crate is here.

use std::sync::OnceLock;

/// The CPUs this process may run on (its affinity mask at first use), ascending.
///
/// These are the ids [`Workqueue::queue_on`](crate::Workqueue::queue_on) accepts, and the CPUs
/// that get per-CPU worker pools.
pub fn online_cpus() -> Vec<usize> {
    cpus().list.clone()
}

pub(crate) struct Cpus {
    /// Allowed CPU ids, ascending.
    pub(crate) list: Vec<usize>,
    /// `index[cpu]` is the position of `cpu` in `list`.
    index: Vec<Option<usize>>,
}

impl Cpus {
    /// Position of `cpu` in the list, if it is allowed.
    pub(crate) fn index_of(&self, cpu: usize) -> Option<usize> {
        self.index.get(cpu).copied().flatten()
    }
}

pub(crate) fn cpus() -> &'static Cpus {
    static CPUS: OnceLock<Cpus> = OnceLock::new();
    CPUS.get_or_init(|| {
        let mut list = affinity_of_current_thread();
        if list.is_empty() {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            list = (0..n).collect();
        }
        let max = list.iter().copied().max().unwrap_or(0);
        let mut index = vec![None; max + 1];
        for (i, &cpu) in list.iter().enumerate() {
            index[cpu] = Some(i);
        }
        Cpus { list, index }
    })
}

fn affinity_of_current_thread() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is a plain bitmask for which all-zero is a valid value.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and size describe `set`, which lives across the call; pid 0 means
    // the calling thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: `cpu` is below CPU_SETSIZE, the capacity of `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// `Err(Error::InvalidCpu)` unless `cpu` is one of [`online_cpus()`].
pub(crate) fn check_cpu(cpu: usize) -> Result<(), crate::Error> {
    match cpus().index_of(cpu) {
        Some(_) => Ok(()),
        None => Err(crate::Error::InvalidCpu { cpu }),
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
    // SAFETY: all-zero is a valid, empty `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        if cpu < libc::CPU_SETSIZE as usize {
            // SAFETY: `cpu` is below CPU_SETSIZE, the capacity of `set`.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
    }
    // SAFETY: the pointer and size describe `set`; pid 0 means the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
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
    fn cpus_are_sorted_and_indexed() {
        let c = cpus();
        assert!(!c.list.is_empty());
        assert!(c.list.windows(2).all(|w| w[0] < w[1]));
        for (i, &cpu) in c.list.iter().enumerate() {
            assert_eq!(c.index_of(cpu), Some(i));
        }
        assert_eq!(c.index_of(100_000), None);
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
        // A thread that has exited has no clock any more.
        let gone = std::thread::spawn(gettid).join().expect("thread");
        assert_eq!(thread_cpu_time(gone), None);
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
