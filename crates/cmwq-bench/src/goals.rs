//! Checking results against the project's performance goals, and per-workload summaries.
//!
//! Peers are compared within a group: the W5 variants whose background items sleep
//! ("sleepers") only with each other, the spinning ones only with each other (see
//! [`same_group`]). Per-item cost in W1/W2 is `ns/item` (first queue to last completion).

use crate::report::{Goal, VariantResult};
use crate::workloads::{self, Params};
use crate::Workload;

/// `cmwq-bound` queues every item with `queue()` from one producer thread, so all of them go
/// to the producer's CPU (the kernel's per-CPU placement): its makespan goals are checked
/// against the lower bound of one CPU, and the goal line says so.
fn single_cpu(r: &VariantResult) -> bool {
    r.pool == "cmwq-bound"
}

/// Whether a variant's background items sleep (W5 "sleepers").
fn is_sleepers(r: &VariantResult) -> bool {
    r.variant.contains(" sleepers")
}

/// Variants compared with each other: the same workload and the same W5 background.
fn same_group(a: &VariantResult, b: &VariantResult) -> bool {
    a.workload == b.workload && is_sleepers(a) == is_sleepers(b)
}

pub(crate) fn goals(results: &[VariantResult], cores: usize) -> Vec<Goal> {
    let mut goals = vec![];
    let of = |w: &'static str| results.iter().filter(move |r| r.workload == w);
    let peer_of = |w: &'static str, sleepers: bool, metric: &str, higher: bool| {
        of(w)
            .filter(move |r| is_sleepers(r) == sleepers)
            .filter(|r| !r.pool.starts_with("cmwq") && r.status != "timeout")
            .filter_map(|r| r.get(metric).map(|v| (r.variant.clone(), v)))
            .reduce(|a, b| {
                if (b.1 > a.1) == higher && b.1 != a.1 {
                    b
                } else {
                    a
                }
            })
    };
    let best_peer = |w: &'static str, metric: &str, higher: bool| peer_of(w, false, metric, higher);
    let peer = |w: &'static str, pool: &str, metric: &str| {
        of(w)
            .find(|r| r.pool == pool && !is_sleepers(r) && r.status != "timeout")
            .and_then(|r| r.get(metric))
    };
    let mut push = |w: &str, goal: &str, r: &VariantResult, measured: String, met: bool| {
        goals.push(Goal {
            workload: w.into(),
            goal: goal.into(),
            variant: r.variant.clone(),
            measured,
            met,
        })
    };
    let cmwq = |w: &'static str| of(w).filter(|r| r.pool.starts_with("cmwq"));

    // Per-item cost of re-queued items: at most half the best peer's.
    if let Some((peer, best)) = best_peer("W1", "ns/item", false) {
        let goal = "re-queued ns/item <= 0.5x best peer's";
        for r in cmwq("W1").filter(|r| r.variant.contains("requeue")) {
            match r.get("ns/item") {
                Some(v) => push(
                    "W1",
                    goal,
                    r,
                    format!("{v:.1} ns = {:.2}x {peer} {best:.1} ns", v / best),
                    v <= 0.5 * best,
                ),
                None => push("W1", goal, r, r.status.clone(), false),
            }
        }
    }
    // A fresh item per closure on an unbound queue: no dearer than rayon and threadpool,
    // and within 1.5x of the simplest pool.
    for w in ["W1", "W2"] {
        let fixed = [
            peer(w, "rayon", "ns/item"),
            peer(w, "threadpool", "ns/item"),
        ];
        let cb = peer(w, "crossbeam-pool", "ns/item");
        for r in cmwq(w).filter(|r| r.variant == "cmwq-unbound fresh") {
            let Some(v) = r.get("ns/item") else {
                push(
                    w,
                    "fresh ns/item <= min(rayon, threadpool)",
                    r,
                    r.status.clone(),
                    false,
                );
                continue;
            };
            // With `--pools` one of the two may be missing: then the other alone.
            let names = ["rayon", "threadpool"];
            let there: Vec<String> = names
                .iter()
                .zip(fixed)
                .filter_map(|(n, x)| x.map(|x| format!("{n} {x:.1}")))
                .collect();
            if let Some(m) = fixed.into_iter().flatten().reduce(f64::min) {
                push(
                    w,
                    "fresh ns/item <= min(rayon, threadpool)",
                    r,
                    format!("{v:.1} ns vs {m:.1} ns ({})", there.join(", ")),
                    v <= m,
                );
            }
            if let Some(cb) = cb {
                push(
                    w,
                    "fresh ns/item <= 1.5x crossbeam-pool's",
                    r,
                    format!("{v:.1} ns = {:.2}x crossbeam-pool {cb:.1} ns", v / cb),
                    v <= 1.5 * cb,
                );
            }
        }
    }
    let tokio_peak = of("W3")
        .find(|r| r.pool == "tokio")
        .and_then(|r| r.get("peak threads"));
    for r in cmwq("W3") {
        let hinted = r.variant.contains("blocking()");
        let limit = if hinted { 1.15 } else { 1.3 };
        let how = if hinted {
            "with blocking()"
        } else {
            "without hint"
        };
        // The bound's CPU part is the CPU the items' spins took, metered inside them (see
        // `SpinMeter`), not the start-up calibration: the machine's speed drifts by ~5%.
        let (goal, x) = if single_cpu(r) {
            (
                format!("makespan <= {limit}x sleep + item CPU of 1 CPU {how}"),
                r.get("x sleep + item CPU of 1 CPU"),
            )
        } else {
            (
                format!("makespan <= {limit}x sleep + item CPU/cores {how}"),
                r.get("x sleep + item CPU/cores"),
            )
        };
        match x {
            Some(x) => push("W3", &goal, r, format!("{x:.2}x"), x <= limit),
            None => push("W3", &goal, r, r.status.clone(), false),
        }
        if let (Some(t), Some(peak)) = (tokio_peak, r.get("peak threads")) {
            push(
                "W3",
                "peak threads <= 1/4 of tokio's",
                r,
                format!("{peak:.0} vs tokio {t:.0}"),
                peak <= t / 4.0,
            );
        }
    }
    for r in cmwq("W4") {
        let (goal, x) = if single_cpu(r) {
            (
                "makespan <= 1.05x item CPU of 1 CPU",
                r.get("x item CPU/cores").map(|x| x / cores as f64),
            )
        } else {
            (
                "makespan <= 1.05x item CPU/cores",
                r.get("x item CPU/cores"),
            )
        };
        match x {
            Some(x) => push("W4", goal, r, format!("{x:.3}x"), x <= 1.05),
            None => push("W4", goal, r, r.status.clone(), false),
        }
        if let Some(peak) = r.get("peak threads") {
            push(
                "W4",
                &format!("peak threads <= cores + 2 = {}", cores + 2),
                r,
                format!("{peak:.0}"),
                peak <= (cores + 2) as f64,
            );
        }
    }
    // W5: against the best peer under the same background, spin or sleepers.
    for sleepers in [false, true] {
        let Some((peer, best)) = peer_of("W5", sleepers, "p99 us", false) else {
            continue;
        };
        let goal = if sleepers {
            "sleepers: p99 <= best peer's p99"
        } else {
            "p99 <= best peer's p99"
        };
        for r in cmwq("W5").filter(|r| is_sleepers(r) == sleepers) {
            match r.get("p99 us") {
                Some(v) => push(
                    "W5",
                    goal,
                    r,
                    format!("{v:.0} us vs {peer} {best:.0} us"),
                    v <= best,
                ),
                None => push("W5", goal, r, r.status.clone(), false),
            }
        }
    }
    let unbound = of("W5").find(|r| r.variant == "cmwq-unbound");
    if let Some(r) = unbound {
        let goal = "no repetition with p50 > 1 ms";
        let p50 = r.metrics.iter().find(|s| s.name == "p50 us");
        match p50 {
            Some(s) if r.reps_done > 0 => {
                let slow = s.values.iter().filter(|&&x| x > 1000.0).count();
                push(
                    "W5",
                    goal,
                    r,
                    format!("{slow} of {} (p50 max {:.0} us)", s.values.len(), s.max),
                    slow == 0,
                )
            }
            _ => push("W5", goal, r, r.status.clone(), false),
        }
    }
    let unbound_p99 = unbound.and_then(|r| r.get("p99 us"));
    for r in of("W5").filter(|r| r.variant == "cmwq-highpri") {
        let goal = "HIGHPRI probes: p99 <= cmwq-unbound's p99";
        match (r.get("p99 us"), unbound_p99) {
            (Some(v), Some(u)) => push(
                "W5",
                goal,
                r,
                format!("{v:.0} us vs cmwq-unbound {u:.0} us"),
                v <= u,
            ),
            (None, _) => push("W5", goal, r, r.status.clone(), false),
            (Some(_), None) => push("W5", goal, r, "cmwq-unbound has no p99".into(), false),
        }
    }
    for r in cmwq("W6") {
        let floor = r
            .metrics
            .iter()
            .find(|s| s.name == "floor threads")
            .map(|s| s.min)
            .filter(|v| v.is_finite());
        if let (Some(after), Some(floor)) = (r.get("after idle"), floor) {
            push(
                "W6",
                "threads back to the floor after the idle period",
                r,
                format!("{after:.0} after idle, floor {floor:.0}"),
                after <= floor,
            );
        }
    }
    goals
}

pub(crate) fn describe(w: Workload, p: &Params, cores: usize) -> String {
    match w {
        Workload::W1 => format!("W1 throughput: 1 producer, {} empty items", p.w1_items),
        Workload::W2 => format!(
            "W2 throughput: 2 producers x {} empty items",
            p.w2_items_per_producer
        ),
        Workload::W3 => format!(
            "W3 mixed blocking: {} items of {}us sleep + {}us spin; lower bound {:.1} ms",
            p.w3_items,
            p.w3_sleep_us,
            p.w3_spin_us,
            workloads::w3_lower_bound(p, cores).as_secs_f64() * 1e3
        ),
        Workload::W4 => format!(
            "W4 CPU-bound: {} items of {}us spin; CPU/cores {:.1} ms",
            p.w4_items,
            p.w4_spin_us,
            workloads::w4_lower_bound(p, cores).as_secs_f64() * 1e3
        ),
        Workload::W5 => format!(
            "W5 latency: a probe every {}us for {} ms, background {}us spins at {:.0}% of the cores (\"sleepers\": {}-{}us sleeps, {:.0}% of the cores' worth in flight); queue-to-start latency",
            p.w5_period_us,
            p.w5_duration_ms,
            p.w5_bg_spin_us,
            p.w5_bg_load * 100.0,
            p.w5_sleep_min_us,
            p.w5_sleep_max_us,
            p.w5_bg_load * 100.0
        ),
        Workload::W6 => format!(
            "W6 burst then idle: {} items of {}us sleep, then {} ms idle",
            p.w6_items, p.w6_sleep_us, p.w6_idle_ms
        ),
    }
}

pub(crate) fn print_ratios(w: Workload, rows: &[&VariantResult]) {
    let (key, higher) = w.key();
    // One line per group (W5: the spinning background, then the sleepers).
    let mut groups: Vec<Vec<&VariantResult>> = vec![];
    for &r in rows {
        match groups.iter_mut().find(|g| same_group(g[0], r)) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    for g in groups {
        let best = g
            .iter()
            .filter(|r| !r.pool.starts_with("cmwq"))
            .filter_map(|r| r.get(key).map(|v| (r.variant.as_str(), v)))
            .reduce(|a, b| {
                if (b.1 > a.1) == higher && b.1 != a.1 {
                    b
                } else {
                    a
                }
            });
        let Some((peer, best)) = best else {
            continue;
        };
        let mut parts = vec![];
        for r in g.iter().filter(|r| r.pool.starts_with("cmwq")) {
            if let Some(v) = r.get(key) {
                let ratio = if best == 0.0 { f64::NAN } else { v / best };
                parts.push(format!("{} {ratio:.2}x", r.variant));
            }
        }
        println!(
            "  {key} relative to the best peer ({peer}, {best:.2}; {} is better): {}",
            if higher { "higher" } else { "lower" },
            parts.join(", ")
        );
    }
    if w == Workload::W5 {
        print_w5_reps(rows);
    }
}

/// W5: every repetition's p50 / p99 / max (the table shows their medians).
fn print_w5_reps(rows: &[&VariantResult]) {
    println!("  per repetition, p50 / p99 / max us:");
    for r in rows {
        let col = |name: &str| {
            r.metrics
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.values.clone())
                .unwrap_or_default()
        };
        let (p50, p99, max) = (col("p50 us"), col("p99 us"), col("max us"));
        let reps: Vec<String> = (0..p50.len().min(p99.len()).min(max.len()))
            .map(|i| format!("{:.0}/{:.0}/{:.0}", p50[i], p99[i], max[i]))
            .collect();
        let slow = p50.iter().filter(|&&x| x > 1000.0).count();
        println!(
            "    {:<40} {}  (p50 > 1 ms in {slow} of {})",
            r.variant,
            reps.join("  "),
            p50.len()
        );
    }
}
