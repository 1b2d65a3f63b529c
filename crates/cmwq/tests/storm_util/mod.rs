//! Helpers shared by the storm, lifecycle-model and churn tests: seeds from the environment, a
//! seeded generator, the census of the engine's threads and the resident set size.
//!
//! Every wait has a deadline; nothing here touches the engine's configuration.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// An unsigned number from environment variable `name` (decimal, or hexadecimal with `0x`).
/// Panics on a malformed value, so a typo in a replay command is not silently ignored.
pub fn env_u64(name: &str) -> Option<u64> {
    let raw = std::env::var(name).ok()?;
    let s = raw.trim().replace('_', "");
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={raw:?} is not a number")))
}

/// The seed in `var`, or one derived from the clock and the process id (never 0).
pub fn seed_from_env(var: &str) -> u64 {
    if let Some(s) = env_u64(var) {
        return s;
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut x = nanos ^ (u64::from(std::process::id()) << 32);
    splitmix(&mut x) | 1
}

/// SplitMix64: a well-mixed 64-bit value from a counter state.
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A value that depends on both inputs (a stateless hash for per-run decisions).
pub fn mix(a: u64, b: u64) -> u64 {
    let mut s = a ^ b.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    splitmix(&mut s)
}

/// A small seeded generator (SplitMix64 stream).
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> Self {
        SeededRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        splitmix(&mut self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform index into a slice of length `n` (`n > 0`).
    pub fn index(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `true` with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// Polls `cond` until it holds or `timeout` passes; returns its last value.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return cond();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `comm` of every thread of this process.
pub fn thread_names() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        Some(comm.trim_end_matches('\n').to_string())
    })
    .collect()
}

/// The engine's threads by kind, from their names (`kworker/<cpu>:<id>[H]`,
/// `kworker/u<pool>:<id>`, `kworker/R-<wq>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// Workers of per-CPU pools by (cpu, highpri).
    pub per_cpu: BTreeMap<(usize, bool), usize>,
    /// Workers of unbound pools by pool id.
    pub unbound: BTreeMap<usize, usize>,
    /// Rescuer thread names.
    pub rescuers: Vec<String>,
    /// Every thread of the process.
    pub total: usize,
}

/// Takes the census of the engine's threads now.
pub fn census() -> Census {
    let mut c = Census::default();
    for name in thread_names() {
        c.total += 1;
        let Some(rest) = name.strip_prefix("kworker/") else {
            continue;
        };
        if rest.starts_with("R-") {
            c.rescuers.push(name.clone());
        } else if let Some(u) = rest.strip_prefix('u') {
            let pool = u
                .split(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            *c.unbound.entry(pool).or_default() += 1;
        } else {
            let cpu = rest
                .split(':')
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            *c.per_cpu.entry((cpu, name.ends_with('H'))).or_default() += 1;
        }
    }
    c
}

impl Census {
    /// Every `kworker` thread.
    pub fn kworkers(&self) -> usize {
        self.per_cpu.values().sum::<usize>()
            + self.unbound.values().sum::<usize>()
            + self.rescuers.len()
    }

    /// The floor once every workqueue this test made is destroyed and idle workers were reaped:
    /// per-CPU pools keep at most two idle workers (the kernel's `too_many_workers` rule), unbound
    /// pools are gone with their last queue, and so are rescuers.
    pub fn at_floor(&self) -> bool {
        self.per_cpu.values().all(|&n| n <= 2)
            && self.unbound.is_empty()
            && self.rescuers.is_empty()
    }
}

impl fmt::Display for Census {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} threads, {} kworkers: per-CPU",
            self.total,
            self.kworkers()
        )?;
        for ((cpu, hi), n) in &self.per_cpu {
            write!(f, " {cpu}{}={n}", if *hi { "H" } else { "" })?;
        }
        write!(f, "; unbound")?;
        for (pool, n) in &self.unbound {
            write!(f, " u{pool}={n}")?;
        }
        write!(f, "; rescuers {:?}", self.rescuers)
    }
}

/// Resident set size of this process in KiB (`VmRSS` of `/proc/self/status`).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Text of a panic payload.
pub fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}
