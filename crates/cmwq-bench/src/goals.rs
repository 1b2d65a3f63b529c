//! Checking results against the project's performance goals, and per-workload summaries.

use crate::report::{Goal, VariantResult};
use crate::workloads::{self, Params};
use crate::Workload;

/// `cmwq-bound` queues every item with `queue()` from one producer thread, so all of them go
/// to the producer's CPU (the kernel's per-CPU placement): its makespan goals are checked
/// against the lower bound of one CPU, and the goal line says so.
fn single_cpu(r: &VariantResult) -> bool {
    r.pool == "cmwq-bound"
}

pub(crate) fn goals(results: &[VariantResult], cores: usize) -> Vec<Goal> {
    let mut goals = vec![];
    let of = |w: &'static str| results.iter().filter(move |r| r.workload == w);
    let best_peer = |w: &'static str, metric: &str, higher: bool| -> Option<(String, f64)> {
        of(w)
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

    if let Some((peer, best)) = best_peer("W1", "Mitems/s", true) {
        for r in cmwq("W1").filter(|r| r.variant.contains("requeue")) {
            match r.get("Mitems/s") {
                Some(v) => push(
                    "W1",
                    "re-queued throughput >= 2x best peer",
                    r,
                    format!("{:.2}x {peer}", v / best),
                    v >= 2.0 * best,
                ),
                None => push(
                    "W1",
                    "re-queued throughput >= 2x best peer",
                    r,
                    r.status.clone(),
                    false,
                ),
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
    if let Some((peer, best)) = best_peer("W5", "p99 us", false) {
        for r in cmwq("W5") {
            match r.get("p99 us") {
                Some(v) => push(
                    "W5",
                    "p99 <= best peer's p99",
                    r,
                    format!("{v:.0} us vs {peer} {best:.0} us"),
                    v <= best,
                ),
                None => push("W5", "p99 <= best peer's p99", r, r.status.clone(), false),
            }
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
            "W5 latency: a probe every {}us for {} ms, background {}us spins at {:.0}% of the cores; queue-to-start latency",
            p.w5_period_us,
            p.w5_duration_ms,
            p.w5_bg_spin_us,
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
    let best = rows
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
        return;
    };
    let mut parts = vec![];
    for r in rows.iter().filter(|r| r.pool.starts_with("cmwq")) {
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
