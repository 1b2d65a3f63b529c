//! The table of the kernel's `tools/workqueue/wq_monitor.py`: per workqueue `total`, `infl`,
//! `CPUtime` (seconds), `CPUitsv`, `CMW/RPR`, `mayday` and `rescued`, with `-` where a column
//! does not apply (CPU-intensive marking and CM wake-ups are per-CPU matters, repatriation
//! an unbound one; mayday and rescued need a rescuer, `MEM_RECLAIM`).

use crate::endpoint::WqRecord;

/// Width of the name column (longer names keep their end, as wq_monitor does).
const NAME: usize = 24;

/// The last `NAME` characters of `name`.
pub fn short_name(name: &str) -> &str {
    let n = name.chars().count();
    match name.char_indices().nth(n.saturating_sub(NAME)) {
        Some((i, _)) => &name[i..],
        None => name,
    }
}

pub fn header() -> String {
    format!(
        "{:<NAME$} {:>8} {:>5} {:>8} {:>7} {:>7} {:>7} {:>7}",
        "", "total", "infl", "CPUtime", "CPUitsv", "CMW/RPR", "mayday", "rescued"
    )
}

/// The `CPUitsv` cell.
pub fn cpu_intensive(r: &WqRecord) -> String {
    if r.unbound() {
        "-".into()
    } else {
        r.cpu_intensive.to_string()
    }
}

/// The `mayday` and `rescued` cells.
pub fn rescue(r: &WqRecord) -> (String, String) {
    if r.mem_reclaim() {
        (r.mayday.to_string(), r.rescued.to_string())
    } else {
        ("-".into(), "-".into())
    }
}

pub fn row(r: &WqRecord) -> String {
    let (mayday, rescued) = rescue(r);
    format!(
        "{:<NAME$} {:>8} {:>5} {:>8.1} {:>7} {:>7} {:>7} {:>7}",
        short_name(&r.name),
        r.total,
        r.in_flight,
        r.cpu_time.get().as_secs_f64(),
        cpu_intensive(r),
        r.cmw_rpr(),
        mayday,
        rescued
    )
}

/// The whole table, one line per record, in the order given.
pub fn render(records: &[WqRecord]) -> String {
    let mut out = header();
    out.push('\n');
    for r in records {
        out.push_str(&row(r));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::Dur;

    fn rec(name: &str, flags: &[&str]) -> WqRecord {
        WqRecord {
            name: name.into(),
            id: 1,
            flags: flags.iter().map(|s| s.to_string()).collect(),
            ordered: false,
            total: 18545,
            completed: 18544,
            in_flight: 1,
            cpu_time: Dur {
                secs: 6,
                nanos: 100_000_000,
            },
            cpu_intensive: 2,
            cm_wakeups: 5,
            repatriated: 0,
            mayday: 3,
            rescued: 4,
            pending: 0,
            inactive: 0,
            max_active: 1024,
        }
    }

    #[test]
    fn columns_as_wq_monitor() {
        let t = render(&[
            rec("events", &[]),
            rec("events_unbound", &["UNBOUND"]),
            rec("a_rather_long_workqueue_name_here", &["MEM_RECLAIM"]),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "                            total  infl  CPUtime CPUitsv CMW/RPR  mayday rescued"
        );
        assert_eq!(
            lines[1],
            "events                      18545     1      6.1       2       5       -       -"
        );
        assert_eq!(
            lines[2],
            "events_unbound              18545     1      6.1       -       0       -       -"
        );
        assert!(
            lines[3].starts_with("long_workqueue_name_here "),
            "{}",
            lines[3]
        );
        assert!(lines[3].ends_with("      3       4"), "{}", lines[3]);
    }
}
