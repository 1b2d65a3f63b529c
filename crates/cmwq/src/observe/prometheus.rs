//! Every workqueue's counters in the Prometheus text exposition format.

use std::fmt::Write;

use crate::observe::stats::{wq_stats, WqStats};
use crate::queue::workqueue::all_workqueues;

/// One metric: name suffix, type, help, and how to read it from [`WqStats`].
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&WqStats) -> f64,
);

/// The metrics.
const METRICS: &[Metric] = &[
    (
        "total",
        "counter",
        "Work items started (wq_monitor total).",
        |s| s.total as f64,
    ),
    ("completed", "counter", "Work items whose run ended.", |s| {
        s.completed as f64
    }),
    (
        "in_flight",
        "gauge",
        "Work items running now (wq_monitor infl).",
        |s| s.in_flight as f64,
    ),
    (
        "cpu_time_seconds",
        "counter",
        "CPU time of the work items, sampled (wq_monitor CPUtime).",
        |s| s.cpu_time.as_secs_f64(),
    ),
    (
        "cpu_intensive",
        "counter",
        "Items marked CPU-intensive for hogging the CPU (wq_monitor CPUitsv).",
        |s| s.cpu_intensive as f64,
    ),
    (
        "cm_wakeups",
        "counter",
        "Concurrency-management wake-ups (wq_monitor CMW).",
        |s| s.cm_wakeups as f64,
    ),
    (
        "repatriated",
        "counter",
        "Workers put back in their pod (wq_monitor RPR).",
        |s| s.repatriated as f64,
    ),
    (
        "mayday",
        "counter",
        "Rescuer calls (wq_monitor mayday).",
        |s| s.mayday as f64,
    ),
    (
        "rescued",
        "counter",
        "Items run by the rescuer (wq_monitor rescued).",
        |s| s.rescued as f64,
    ),
    (
        "pending",
        "gauge",
        "Active items waiting for a worker.",
        |s| s.pending as f64,
    ),
    (
        "inactive",
        "gauge",
        "Items waiting for a max_active slot.",
        |s| s.inactive as f64,
    ),
    ("max_active", "gauge", "The configured max_active.", |s| {
        s.max_active as f64
    }),
];

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Every live workqueue's counters in the Prometheus text format (version 0.0.4): metrics
/// `cmwq_workqueue_<counter>` with labels `workqueue` (the name) and `id` (unique, since two
/// queues may share a name).
///
/// ```
/// let text = cmwq::prometheus_text();
/// cmwq::system_wq(); // system queues are listed too once made
/// assert!(cmwq::prometheus_text().contains("cmwq_workqueue_total{workqueue=\"events\""));
/// # let _ = text;
/// ```
pub fn prometheus_text() -> String {
    let queues: Vec<(String, u64, WqStats)> = all_workqueues()
        .iter()
        .map(|wq| (escape(&wq.name), wq.id, wq_stats(wq)))
        .collect();
    let mut out = String::new();
    for (suffix, kind, help, read) in METRICS {
        let _ = writeln!(out, "# HELP cmwq_workqueue_{suffix} {help}");
        let _ = writeln!(out, "# TYPE cmwq_workqueue_{suffix} {kind}");
        for (name, id, stats) in &queues {
            let _ = writeln!(
                out,
                "cmwq_workqueue_{suffix}{{workqueue=\"{name}\",id=\"{id}\"}} {}",
                read(stats)
            );
        }
    }
    out
}
