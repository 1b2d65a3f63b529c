//! The state dump, in the shape of the kernel's `show_all_workqueues()` (SysRq-t): every
//! workqueue with its flags and, per pool workqueue, the active and inactive items; then every
//! pool with its workers (idle, or busy with their item's function, description and how long),
//! pending items, attached rescuers and waiting flushers.

use std::fmt::Write;

use crate::observe::stats::pool_stats;
use crate::pool::{self, WorkerPool};
use crate::queue::workqueue::{all_workqueues, WqShared};

/// Most item names listed per list in a dump.
const NAMES: usize = 8;

/// The state dump of busy workqueues and pools (those with items queued, waiting or running),
/// as the kernel's `show_all_workqueues()` prints it.
///
/// ```
/// let dump = cmwq::show_workqueues();
/// assert!(dump.starts_with("Showing busy workqueues and worker pools:"));
/// ```
pub fn show_workqueues() -> String {
    dump(false)
}

/// The state dump of every workqueue and pool, idle ones included.
pub fn show_all_workqueues() -> String {
    dump(true)
}

fn dump(all: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Showing {} workqueues and worker pools:",
        if all { "all" } else { "busy" }
    );
    for wq in all_workqueues() {
        dump_wq(&mut out, &wq, all);
    }
    for pool in pool::all_pools() {
        dump_pool(&mut out, &pool, all);
    }
    out
}

/// Up to [`NAMES`] names, then how many more.
fn names(list: impl Iterator<Item = &'static str>) -> String {
    let all: Vec<&str> = list.collect();
    let mut s = all
        .iter()
        .take(NAMES)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if all.len() > NAMES {
        let _ = write!(s, ", ... ({} more)", all.len() - NAMES);
    }
    s
}

fn dump_wq(out: &mut String, wq: &WqShared, all: bool) {
    let mut body = String::new();
    // Unbound: active items per node, against the node's limit (as `wq_dump.py` shows them).
    let mut node_nr: Vec<Option<usize>> = vec![None; wq.node_nr_active.len()];
    for pwq in wq.pwqs() {
        let mut g = pwq.pool.locked.lock();
        if let Some(p) = g.pwq_of(pwq.slot, wq.id) {
            if let Some(n) = node_nr.get_mut(p.node as usize) {
                *n = Some(n.unwrap_or(0) + p.nr_active);
            }
        }
        let in_flight: Vec<String> = g
            .workers
            .iter()
            .flatten()
            .filter(|w| w.current.is_some_and(|(_, slot)| slot == pwq.slot))
            .map(|w| format!("{}:{}", w.name, w.current_function))
            .collect();
        let pending = names(
            g.worklist
                .iter()
                .filter(|e| e.slot == pwq.slot)
                .map(|e| e.function),
        );
        let Some(p) = g.pwq_of(pwq.slot, wq.id) else {
            continue;
        };
        if !all && p.is_idle() {
            continue;
        }
        let where_ = match pwq.pool.cpu {
            Some(cpu) => format!("cpus={cpu}"),
            None => format!("cpus={:?}", pwq.pool.attrs.cpumask),
        };
        let _ = writeln!(
            body,
            "  pwq {}: pool={} {where_} nice={} active={}/{} inactive={}",
            pwq.slot,
            pwq.pool.id,
            pwq.pool.attrs.nice,
            p.nr_active,
            p.max_active,
            p.inactive.len()
        );
        let inactive = names(p.inactive.iter().map(|e| e.function));
        if !in_flight.is_empty() {
            let _ = writeln!(body, "    in-flight: {}", in_flight.join(" "));
        }
        if !pending.is_empty() {
            let _ = writeln!(body, "    pending: {pending}");
        }
        if !inactive.is_empty() {
            let _ = writeln!(body, "    inactive: {inactive}");
        }
    }
    if all || !body.is_empty() {
        let _ = writeln!(
            out,
            "workqueue {}: flags={:?}{}",
            wq.name,
            wq.flags,
            if wq.ordered { " ordered" } else { "" }
        );
        if !wq.node_nr_active.is_empty() {
            let _ = writeln!(out, "  {}", node_line(wq, &node_nr));
        }
        out.push_str(&body);
    }
}

/// `node_nr/max_active: min=M max=N 0=nr/max[ pending=P] ... -=nr/max`: per node with a
/// pwq of the queue (`-`: pods spanning nodes) the queue's active items and the node's limit,
/// and how many pwqs wait for a slot.
fn node_line(wq: &WqShared, node_nr: &[Option<usize>]) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut line = format!(
        "node_nr/max_active: min={} max={}",
        wq.min_active(),
        wq.max_active()
    );
    let last = wq.node_nr_active.len() - 1;
    for (i, (n, nr)) in wq.node_nr_active.iter().zip(node_nr).enumerate() {
        let Some(nr) = nr else {
            continue;
        };
        let name = if i == last {
            "-".to_string()
        } else {
            i.to_string()
        };
        let _ = write!(line, " {name}={nr}/{}", n.max.load(Relaxed));
        let pending = n.nr_pending();
        if pending > 0 {
            let _ = write!(line, " pending={pending}");
        }
    }
    line
}

fn dump_pool(out: &mut String, pool: &WorkerPool, all: bool) {
    let s = pool_stats(pool);
    let (idle, rescuers, flushers) = {
        let g = pool.locked.lock();
        let idle: Vec<String> = g
            .idle
            .iter()
            .filter_map(|&id| g.workers.get(id)?.as_ref().map(|w| w.name.clone()))
            .collect();
        let rescuers: Vec<String> = g
            .workers
            .iter()
            .flatten()
            .filter(|w| w.rescuer)
            .map(|w| w.name.clone())
            .collect();
        let flushers: usize = g.flush_waiters.values().map(Vec::len).sum::<usize>()
            + g.workers
                .iter()
                .flatten()
                .map(|w| w.current_waiters.len())
                .sum::<usize>();
        (idle, rescuers, flushers)
    };
    if !all && s.busy.is_empty() && s.worklist == 0 {
        return;
    }
    let where_ = match pool.cpu {
        Some(cpu) => format!(
            "cpus={cpu}{}{}",
            if pool.highpri { " highpri" } else { "" },
            // The kernel's `show_one_worker_pool` prints the pool's flags (as a hex word).
            if s.disassociated {
                " DISASSOCIATED"
            } else {
                ""
            }
        ),
        None => format!(
            "cpus={:?} unbound{}",
            pool.attrs.cpumask,
            if pool.attrs.strict { " strict" } else { "" }
        ),
    };
    let _ = writeln!(
        out,
        "pool {}: {where_} nice={} workers={} idle={} running={} worklist={}",
        s.id, s.nice, s.nr_workers, s.nr_idle, s.nr_running, s.worklist
    );
    for b in &s.busy {
        let desc = b
            .desc
            .as_deref()
            .map(|d| format!(" \"{d}\""))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  busy: {} {}: {}{desc} for {:?}",
            b.thread, b.workqueue, b.function, b.running_for
        );
    }
    if !idle.is_empty() {
        let _ = writeln!(out, "  idle: {}", idle.join(" "));
    }
    if !rescuers.is_empty() {
        let _ = writeln!(out, "  rescuers: {}", rescuers.join(" "));
    }
    if flushers > 0 {
        let _ = writeln!(out, "  flushers waiting: {flushers}");
    }
}
