//! W5: queue-to-start latency of small probe items while background items keep part of
//! the pool busy.
//!
//! A probe is queued every `w5_period_us`; it records how long it waited between its
//! submission and the moment it started. Two kinds of background ([`Background`]):
//!
//! * **Spin** (the original load): items of `w5_bg_spin_us` of calibrated spin, queued at a
//!   rate that keeps `w5_bg_load` of the cores busy.
//! * **Sleep** ("sleepers"): items that sleep between `w5_sleep_min_us` and
//!   `w5_sleep_max_us` (1-5 ms; the length of the i-th item is a fixed hash of `i`, so every
//!   variant gets the same sequence), queued at a rate that keeps `w5_bg_load x cores` of
//!   them in flight on average: as many as the spinners in flight in the spin load, but
//!   using no CPU. A pool that runs probes behind its sleepers (a fixed pool whose threads
//!   are all asleep) shows it in the tail; one that notices sleeping workers does not. For
//!   cmwq the sleep is wrapped in `cmwq::blocking` in the `+blocking()` variants and plain
//!   in the `no hint` ones; the peers always sleep plainly.
//!
//! Probes go through [`Pool::spawn_probe`] (the `HIGHPRI` queue of `cmwq-highpri`, the same
//! path as the background items elsewhere). Per repetition the result has p50, p99, p99.9
//! and max of the probes' latency; the harness adds the count of repetitions whose p50 is
//! above 1 ms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{sleep_item, Params, RepOut, Tracker};
use crate::pools::Pool;
use crate::sys::{self, Spin};

/// What the background items of W5 do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Background {
    /// Spin for `w5_bg_spin_us`.
    Spin,
    /// Sleep 1-5 ms; `hint` wraps the sleep in `cmwq::blocking`.
    Sleep { hint: bool },
}

/// Length of the `i`-th sleeper: a fixed hash of `i` spread over `[min, max]` µs.
fn sleeper_us(i: usize, min: u64, max: u64) -> u64 {
    // splitmix64's finaliser: cheap, and the same sequence in every variant.
    let mut z = (i as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    min + z % (max.saturating_sub(min) + 1)
}

/// W5: a latency probe every `period`, plus background items (see the module docs).
pub fn latency(
    pool: &Pool,
    p: &Params,
    spin: Spin,
    cores: usize,
    bg: Background,
    deadline: Instant,
) -> RepOut {
    let period = Duration::from_micros(p.w5_period_us);
    let duration = Duration::from_millis(p.w5_duration_ms);
    let bg_spin = Duration::from_micros(p.w5_bg_spin_us);
    let bg_iters = spin.iters_for(bg_spin);
    // One background item of mean length `mean` every `bg_period` keeps `bg_load * cores`
    // of them in flight (spinners: that many cores busy).
    let mean = match bg {
        Background::Spin => bg_spin,
        Background::Sleep { .. } => {
            Duration::from_micros((p.w5_sleep_min_us + p.w5_sleep_max_us) / 2)
        }
    };
    let bg_period = mean.div_f64(p.w5_bg_load * cores as f64);
    let max_probes = (duration.as_nanos() / period.as_nanos()) as usize + 16;
    let lat: &'static [AtomicU64] =
        Box::leak((0..max_probes).map(|_| AtomicU64::new(u64::MAX)).collect());
    let t = Tracker::leak();
    sys::tight_timer_slack();
    let t0 = Instant::now();
    let end = t0 + duration;
    let (mut next_probe, mut next_bg) = (t0, t0);
    let (mut probes, mut bgs, mut refused) = (0usize, 0usize, 0usize);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= next_probe && probes < max_probes {
            let i = probes;
            let queued = Instant::now();
            if !pool.spawn_probe(move || {
                lat[i].store(queued.elapsed().as_nanos() as u64, Ordering::Relaxed);
                t.hit();
            }) {
                refused += 1;
            }
            probes += 1;
            next_probe += period;
            if next_probe < now {
                // Late by more than a period (sleep overshoot): do not burst to catch up.
                next_probe = now + period;
            }
        }
        if now >= next_bg {
            let ok = match bg {
                Background::Spin => pool.spawn(move || {
                    if !t.aborted() {
                        Spin::run(bg_iters);
                    }
                    t.hit();
                }),
                Background::Sleep { hint } => {
                    let d = Duration::from_micros(sleeper_us(
                        bgs,
                        p.w5_sleep_min_us,
                        p.w5_sleep_max_us,
                    ));
                    pool.spawn(move || {
                        if !t.aborted() {
                            sleep_item(hint, d);
                        }
                        t.hit();
                    })
                }
            };
            if !ok {
                refused += 1;
            }
            bgs += 1;
            next_bg += bg_period;
        }
        let next = next_probe.min(next_bg);
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
    }
    t.set_target(probes + bgs - refused);
    if !t.wait(deadline) {
        return RepOut::timeout(t.abort_and_drain());
    }
    let mut v: Vec<f64> = lat[..probes]
        .iter()
        .map(|a| a.load(Ordering::Relaxed))
        .filter(|&x| x != u64::MAX)
        .map(|x| x as f64 / 1e3)
        .collect();
    v.sort_by(f64::total_cmp);
    let pct = |q: f64| -> f64 {
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() - 1) as f64 * q).round() as usize]
    };
    RepOut {
        metrics: vec![
            ("p50 us", pct(0.5)),
            ("p99 us", pct(0.99)),
            ("p99.9 us", pct(0.999)),
            ("max us", pct(1.0)),
            ("probes", v.len() as f64),
            ("background items", bgs as f64),
        ],
        clean: true,
        error: (refused > 0).then(|| format!("{refused} items refused")),
        ..RepOut::default()
    }
}

#[cfg(test)]
mod tests {
    use super::sleeper_us;

    #[test]
    fn sleepers_stay_in_range_and_average_near_the_middle() {
        let n = 10_000;
        let v: Vec<u64> = (0..n).map(|i| sleeper_us(i, 1_000, 5_000)).collect();
        assert!(v.iter().all(|&x| (1_000..=5_000).contains(&x)));
        let mean = v.iter().sum::<u64>() as f64 / n as f64;
        assert!((mean - 3_000.0).abs() < 100.0, "mean {mean}");
    }
}
