//! The per-workqueue knobs of the control endpoint: what the kernel shows as the files of
//! `/sys/devices/virtual/workqueue/WORKQUEUE/` for `WQ_SYSFS` queues (`per_cpu`,
//! `max_active`, and for unbound queues `nice`, `cpumask`, `affinity_scope`,
//! `affinity_strict`), read by `get WORKQUEUE` and written by `set WORKQUEUE KNOB VALUE`.
//! Attribute writes go through `apply_attrs`, as the kernel's `wq_*_store` go through
//! `apply_workqueue_attrs_locked` with a copy of the queue's attributes.

use std::sync::Arc;

use crate::observe::control::json::json_object;
use crate::queue::apply::apply_attrs;
use crate::queue::workqueue::{all_workqueues, WqShared};
use crate::{AffinityScope, WqFlags, WQ_MAX_ACTIVE};

/// The knobs, as `help` lists them and `set` accepts them.
pub(crate) const KNOBS: &[&str] = &[
    "max_active",
    "nice",
    "cpumask",
    "affinity_scope",
    "affinity_strict",
];

/// One knob's new value, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Knob {
    MaxActive(usize),
    Nice(i32),
    Cpumask(Vec<usize>),
    AffinityScope(AffinityScope),
    AffinityStrict(bool),
}

/// The sysfs names of the scopes (`wq_affn_names`).
const SCOPES: &[(&str, AffinityScope)] = &[
    ("default", AffinityScope::Default),
    ("cpu", AffinityScope::Cpu),
    ("smt", AffinityScope::Smt),
    ("cache", AffinityScope::Cache),
    ("numa", AffinityScope::Numa),
    ("system", AffinityScope::System),
];

fn scope_name(scope: AffinityScope) -> &'static str {
    SCOPES
        .iter()
        .find(|(_, s)| *s == scope)
        .map_or("default", |(n, _)| n)
}

/// How `affinity_scope` reads: the name, and for `default` the scope it stands for, as the
/// kernel's `wq_affn_scope_show` writes it (`default (cache)`).
fn scope_text(scope: AffinityScope) -> String {
    match scope {
        AffinityScope::Default => format!("default ({})", scope_name(scope.resolve())),
        s => scope_name(s).to_string(),
    }
}

/// A CPU list as the kernel's `%*pbl` writes it: ascending ranges, `0-3,6`.
pub(crate) fn cpu_list(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// Parses a CPU list (`0-3,6`, as `cpulist_parse` reads it).
pub(crate) fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let bad = || format!("cpumask must be a CPU list such as 0-3,6, not {text:?}");
    let cpu = |s: &str| -> Result<usize, String> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<usize>().map_err(|_| bad())
    };
    let mut cpus = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (cpu(a)?, cpu(b)?);
                if a > b || b - a > 1 << 16 {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(cpu(part)?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Parses `VALUE` for knob `attr` (`set WORKQUEUE attr VALUE`).
pub(crate) fn parse_knob(attr: &str, value: &str) -> Result<Knob, String> {
    match attr {
        "max_active" => match value.parse::<usize>() {
            Ok(n) if (1..=WQ_MAX_ACTIVE).contains(&n) && !value.starts_with('+') => {
                Ok(Knob::MaxActive(n))
            }
            _ => Err(format!(
                "max_active must be an integer in 1..={WQ_MAX_ACTIVE}, not {value:?}"
            )),
        },
        "nice" => match value.parse::<i32>() {
            Ok(n) if (-20..=19).contains(&n) && !value.starts_with('+') => Ok(Knob::Nice(n)),
            _ => Err(format!(
                "nice must be an integer in -20..=19, not {value:?}"
            )),
        },
        "cpumask" => parse_cpu_list(value).map(Knob::Cpumask),
        "affinity_scope" => SCOPES
            .iter()
            .find(|(n, _)| *n == value)
            .map(|(_, s)| Knob::AffinityScope(*s))
            .ok_or_else(|| {
                let names: Vec<&str> = SCOPES.iter().map(|(n, _)| *n).collect();
                format!(
                    "affinity_scope must be one of {}, not {value:?}",
                    names.join(" ")
                )
            }),
        "affinity_strict" => match value {
            "0" => Ok(Knob::AffinityStrict(false)),
            "1" => Ok(Knob::AffinityStrict(true)),
            _ => Err(format!("affinity_strict must be 0 or 1, not {value:?}")),
        },
        _ => Err(format!(
            "unknown attribute {attr:?}: one of {}",
            KNOBS.join(" ")
        )),
    }
}

/// The live `WqFlags::SYSFS` queue named `name` (the kernel has its files only for those).
pub(crate) fn sysfs_queue(name: &str) -> Result<Arc<WqShared>, String> {
    let named: Vec<Arc<WqShared>> = all_workqueues()
        .into_iter()
        .filter(|wq| wq.name == name)
        .collect();
    if named.is_empty() {
        return Err(format!("no workqueue named {name:?}"));
    }
    let mut sysfs: Vec<Arc<WqShared>> = named
        .into_iter()
        .filter(|wq| wq.flags.contains(WqFlags::SYSFS))
        .collect();
    match sysfs.len() {
        0 => Err(format!(
            "workqueue {name:?} was not created with WqFlags::SYSFS: its attributes cannot be \
             read or set from outside"
        )),
        1 => Ok(sysfs.remove(0)),
        n => Err(format!(
            "{n} live SYSFS workqueues are named {name:?}: refusing to guess"
        )),
    }
}

/// `get WORKQUEUE`: every knob of a `SYSFS` queue, as one JSON object (a per-CPU queue has
/// `per_cpu` and `max_active` only, as in the kernel).
pub(crate) fn get(name: &str) -> Result<String, String> {
    let wq = sysfs_queue(name)?;
    let mut out = String::new();
    if !wq.is_unbound() {
        json_object!(&mut out, {
            "workqueue": wq.name,
            "per_cpu": 1u32,
            "max_active": wq.max_active(),
        });
        return Ok(out);
    }
    let a = wq.table.get().attrs.clone();
    json_object!(&mut out, {
        "workqueue": wq.name,
        "per_cpu": 0u32,
        "max_active": wq.max_active(),
        "nice": a.nice,
        "cpumask": cpu_list(&a.cpumask),
        "affinity_scope": scope_text(a.affinity_scope),
        "affinity_strict": u32::from(a.affinity_strict),
    });
    Ok(out)
}

/// `set WORKQUEUE KNOB VALUE`: sets one knob of a `SYSFS` queue; the reply holds the knob's
/// value as it now reads.
pub(crate) fn set(name: &str, knob: Knob) -> Result<String, String> {
    let wq = sysfs_queue(name)?;
    let mut out = String::new();
    if let Knob::MaxActive(n) = knob {
        wq.set_max_active(n).map_err(|e| e.to_string())?;
        json_object!(&mut out, { "workqueue": wq.name, "max_active": n });
        return Ok(out);
    }
    if !wq.is_unbound() {
        return Err(format!(
            "workqueue {name:?} is per-CPU: it has max_active only (nice, cpumask and affinity \
             are attributes of unbound workqueues)"
        ));
    }
    let mut attrs = wq.table.get().attrs.clone();
    match &knob {
        Knob::MaxActive(_) => unreachable!("handled above"),
        Knob::Nice(n) => attrs.nice = *n,
        Knob::Cpumask(cpus) => attrs.cpumask = cpus.clone(),
        Knob::AffinityScope(s) => attrs.affinity_scope = *s,
        Knob::AffinityStrict(s) => attrs.affinity_strict = *s,
    }
    apply_attrs(&wq, &attrs).map_err(|e| e.to_string())?;
    let a = wq.table.get().attrs.clone();
    match knob {
        Knob::Nice(_) => json_object!(&mut out, { "workqueue": wq.name, "nice": a.nice }),
        Knob::Cpumask(_) => {
            json_object!(&mut out, { "workqueue": wq.name, "cpumask": cpu_list(&a.cpumask) })
        }
        Knob::AffinityScope(_) => json_object!(&mut out, {
            "workqueue": wq.name,
            "affinity_scope": scope_text(a.affinity_scope),
        }),
        _ => json_object!(&mut out, {
            "workqueue": wq.name,
            "affinity_strict": u32::from(a.affinity_strict),
        }),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_round_trip() {
        assert_eq!(cpu_list(&[0, 1, 2, 3, 6]), "0-3,6");
        assert_eq!(cpu_list(&[1]), "1");
        assert_eq!(cpu_list(&[0, 2, 4, 5]), "0,2,4-5");
        assert_eq!(parse_cpu_list("0-3,6"), Ok(vec![0, 1, 2, 3, 6]));
        assert_eq!(parse_cpu_list("6,0-1,1"), Ok(vec![0, 1, 6]));
        for bad in ["", "a", "3-1", "1,", "-1", "0x3", "1 2", "+1"] {
            assert!(parse_cpu_list(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn knobs_parse() {
        assert_eq!(parse_knob("nice", "-5"), Ok(Knob::Nice(-5)));
        assert_eq!(
            parse_knob("affinity_scope", "numa"),
            Ok(Knob::AffinityScope(AffinityScope::Numa))
        );
        assert_eq!(
            parse_knob("affinity_strict", "1"),
            Ok(Knob::AffinityStrict(true))
        );
        assert_eq!(parse_knob("cpumask", "0"), Ok(Knob::Cpumask(vec![0])));
        for (attr, bad) in [
            ("nice", "20"),
            ("nice", "-21"),
            ("nice", "x"),
            ("nice", "+1"),
            ("affinity_scope", "Cache"),
            ("affinity_scope", "llc"),
            ("affinity_strict", "2"),
            ("affinity_strict", "true"),
            ("per_cpu", "1"),
        ] {
            assert!(parse_knob(attr, bad).is_err(), "{attr} {bad:?} parsed");
        }
        assert_eq!(
            parse_knob("affinity_scope", "x").unwrap_err(),
            "affinity_scope must be one of default cpu smt cache numa system, not \"x\""
        );
    }

    #[test]
    fn scopes_read_as_the_kernel_writes_them() {
        assert_eq!(scope_text(AffinityScope::Numa), "numa");
        assert!(scope_text(AffinityScope::Default).starts_with("default ("));
    }
}
