//! A small JSON writer: enough for the replies, so the library needs no JSON dependency.
//!
//! Every record lists its struct's fields by destructuring it exhaustively, so that adding a
//! field to [`WqStats`], [`PoolStats`] or [`BusyWorker`] fails to compile here until the
//! reply carries it too. Durations are written as serde writes them, `{"secs":S,"nanos":N}`:
//! a record is what `serde_json` makes of the struct under the `serde` feature, plus the
//! queue's identity.

use std::fmt::Write;
use std::time::Duration;

use crate::observe::stats::{BusyWorker, PoolStats, WqStats};
use crate::WqFlags;

/// A value that writes itself as JSON.
pub(crate) trait Json {
    /// Appends the JSON text of `self` to `out`.
    fn write_json(&self, out: &mut String);
}

macro_rules! json_number {
    ($($t:ty),*) => {$(
        impl Json for $t {
            fn write_json(&self, out: &mut String) {
                let _ = write!(out, "{self}");
            }
        }
    )*};
}
json_number!(u32, u64, usize, i32);

impl Json for bool {
    fn write_json(&self, out: &mut String) {
        out.push_str(if *self { "true" } else { "false" });
    }
}

impl Json for str {
    fn write_json(&self, out: &mut String) {
        out.push('"');
        for c in self.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if u32::from(c) < 0x20 || c == '\u{7f}' => {
                    let _ = write!(out, "\\u{:04x}", u32::from(c));
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
}

impl Json for String {
    fn write_json(&self, out: &mut String) {
        self.as_str().write_json(out);
    }
}

impl<T: Json + ?Sized> Json for &T {
    fn write_json(&self, out: &mut String) {
        (**self).write_json(out);
    }
}

impl<T: Json> Json for Option<T> {
    fn write_json(&self, out: &mut String) {
        match self {
            Some(v) => v.write_json(out),
            None => out.push_str("null"),
        }
    }
}

impl<T: Json> Json for [T] {
    fn write_json(&self, out: &mut String) {
        out.push('[');
        for (i, v) in self.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            v.write_json(out);
        }
        out.push(']');
    }
}

impl<T: Json> Json for Vec<T> {
    fn write_json(&self, out: &mut String) {
        self.as_slice().write_json(out);
    }
}

impl Json for Duration {
    fn write_json(&self, out: &mut String) {
        let _ = write!(
            out,
            "{{\"secs\":{},\"nanos\":{}}}",
            self.as_secs(),
            self.subsec_nanos()
        );
    }
}

/// Writes `{"k1":v1,"k2":v2,...}` to a `String`.
macro_rules! json_object {
    ($out:expr, { $($key:literal : $value:expr),* $(,)? }) => {{
        let out: &mut String = $out;
        out.push('{');
        let mut _first = true;
        $(
            if !_first {
                out.push(',');
            }
            _first = false;
            $crate::observe::control::json::Json::write_json($key, out);
            out.push(':');
            $crate::observe::control::json::Json::write_json(&$value, out);
        )*
        out.push('}');
    }};
}
pub(crate) use json_object;

/// The names of a workqueue's flags (`["UNBOUND","SYSFS"]`).
pub(crate) fn flag_names(flags: WqFlags) -> Vec<&'static str> {
    flags.iter_names().map(|(name, _)| name).collect()
}

/// A workqueue's identity and counters: one record of the `stats` reply.
pub(crate) struct WqRecord {
    pub(crate) name: String,
    pub(crate) id: u64,
    pub(crate) flags: WqFlags,
    pub(crate) ordered: bool,
    pub(crate) stats: WqStats,
}

impl Json for WqRecord {
    fn write_json(&self, out: &mut String) {
        let WqStats {
            total,
            completed,
            in_flight,
            cpu_time,
            cpu_intensive,
            cm_wakeups,
            repatriated,
            mayday,
            rescued,
            pending,
            inactive,
            max_active,
        } = &self.stats;
        json_object!(out, {
            "name": self.name,
            "id": self.id,
            "flags": flag_names(self.flags),
            "ordered": self.ordered,
            "total": *total,
            "completed": *completed,
            "in_flight": *in_flight,
            "cpu_time": *cpu_time,
            "cpu_intensive": *cpu_intensive,
            "cm_wakeups": *cm_wakeups,
            "repatriated": *repatriated,
            "mayday": *mayday,
            "rescued": *rescued,
            "pending": *pending,
            "inactive": *inactive,
            "max_active": *max_active,
        });
    }
}

impl Json for BusyWorker {
    fn write_json(&self, out: &mut String) {
        let BusyWorker {
            thread,
            workqueue,
            function,
            desc,
            running_for,
        } = self;
        json_object!(out, {
            "thread": thread,
            "workqueue": workqueue,
            "function": *function,
            "desc": desc,
            "running_for": *running_for,
        });
    }
}

impl Json for PoolStats {
    fn write_json(&self, out: &mut String) {
        let PoolStats {
            id,
            cpu,
            highpri,
            nice,
            nr_workers,
            nr_idle,
            nr_running,
            worklist,
            busy,
            disassociated,
        } = self;
        json_object!(out, {
            "id": *id,
            "cpu": *cpu,
            "highpri": *highpri,
            "nice": *nice,
            "nr_workers": *nr_workers,
            "nr_idle": *nr_idle,
            "nr_running": *nr_running,
            "worklist": *worklist,
            "busy": busy,
            "disassociated": *disassociated,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: &impl Json) -> String {
        let mut s = String::new();
        v.write_json(&mut s);
        s
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(json(&"a\"b\\c\nd\te\u{1}"), r#""a\"b\\c\nd\te\u0001""#);
        assert_eq!(json(&"kworker/0:1H é"), "\"kworker/0:1H é\"");
    }

    #[test]
    fn values() {
        assert_eq!(json(&Some(3usize)), "3");
        assert_eq!(json(&None::<usize>), "null");
        assert_eq!(json(&vec!["A", "B"]), r#"["A","B"]"#);
        assert_eq!(
            json(&Duration::new(2, 5)),
            r#"{"secs":2,"nanos":5}"#.to_string()
        );
        let mut s = String::new();
        json_object!(&mut s, { "a": 1u32, "b": true, "c": "x" });
        assert_eq!(s, r#"{"a":1,"b":true,"c":"x"}"#);
    }
}
