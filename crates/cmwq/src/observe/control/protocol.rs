//! The request language and the replies (see the module docs of
//! [`control`](crate::control)).

use crate::observe::control::json::{json_object, Json, WqRecord};
use crate::observe::control::knobs::{self, parse_knob, Knob};
use crate::observe::stats::wq_stats;
use crate::queue::workqueue::all_workqueues;

/// Version of the protocol, reported by `hello`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest request line, in bytes, without its newline. Longer ones get an error reply.
pub const MAX_REQUEST: usize = 256;

/// The requests, as the help reply lists them.
const HELP: &[&str] = &[
    "hello",
    "help",
    "stats",
    "pools",
    "dump",
    "dump all",
    "prometheus",
    "get WORKQUEUE",
    "set WORKQUEUE max_active N",
    "set WORKQUEUE nice N",
    "set WORKQUEUE cpumask CPULIST",
    "set WORKQUEUE affinity_scope default|cpu|smt|cache|numa|system",
    "set WORKQUEUE affinity_strict 0|1",
];

/// A parsed request.
#[derive(Debug, PartialEq, Eq)]
enum Request<'a> {
    Hello,
    Help,
    Stats,
    Pools,
    Dump { all: bool },
    Prometheus,
    Get { workqueue: &'a str },
    Set { workqueue: &'a str, knob: Knob },
}

/// Parses one request line (newline already removed).
fn parse(line: &str) -> Result<Request<'_>, String> {
    let words: Vec<&str> = line.split(' ').collect();
    match words.as_slice() {
        ["hello"] => Ok(Request::Hello),
        ["help"] => Ok(Request::Help),
        ["stats"] => Ok(Request::Stats),
        ["pools"] => Ok(Request::Pools),
        ["dump"] => Ok(Request::Dump { all: false }),
        ["dump", "all"] => Ok(Request::Dump { all: true }),
        ["prometheus"] => Ok(Request::Prometheus),
        ["set", .., _, _] => {
            // `set NAME ATTR VALUE`: NAME is everything between, so it may hold spaces.
            let rest = &line["set ".len()..];
            let mut tail = rest.rsplitn(3, ' ');
            let value = tail.next().unwrap_or_default();
            let attr = tail.next().unwrap_or_default();
            let workqueue = tail.next().unwrap_or_default();
            if workqueue.is_empty() {
                return Err("usage: set WORKQUEUE ATTRIBUTE VALUE".into());
            }
            Ok(Request::Set {
                workqueue,
                knob: parse_knob(attr, value)?,
            })
        }
        ["get", _, ..] => {
            // `get NAME`: NAME is the rest of the line, so it may hold spaces.
            let workqueue = &line["get ".len()..];
            if workqueue.is_empty() {
                return Err("usage: get WORKQUEUE".into());
            }
            Ok(Request::Get { workqueue })
        }
        [""] => Err("empty request; try \"help\"".into()),
        [word, ..] => Err(format!("unknown request {word:?}; try \"help\"")),
        [] => Err("empty request".into()),
    }
}

/// `{"ok":false,"error":"..."}`.
pub(crate) fn error_reply(message: &str) -> String {
    let mut out = String::new();
    json_object!(&mut out, { "ok": false, "error": message });
    out
}

/// `{"ok":true,"result":...}`.
fn ok_reply(result: &(impl Json + ?Sized)) -> String {
    let mut out = String::new();
    json_object!(&mut out, { "ok": true, "result": result });
    out
}

/// A value already written as JSON.
struct Raw(String);

impl Json for Raw {
    fn write_json(&self, out: &mut String) {
        out.push_str(&self.0);
    }
}

/// The reply to one request line given as bytes (its newline removed): what the server
/// sends back. Checks size and encoding before anything else.
pub(crate) fn answer_bytes(line: &[u8]) -> String {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.len() > MAX_REQUEST {
        return error_reply(&format!(
            "request too long ({} bytes; at most {MAX_REQUEST})",
            line.len()
        ));
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return error_reply("malformed request: not UTF-8");
    };
    if text.chars().any(char::is_control) {
        return error_reply("malformed request: control characters");
    }
    match parse(text) {
        Ok(req) => execute(req),
        Err(e) => error_reply(&e),
    }
}

/// The reply the endpoint gives to `request`, one line of JSON without its newline,
/// computed in this process without a socket (the `cmwq top` of an in-process workload uses
/// it). The request is one line as a client would send it, without the newline.
///
/// ```
/// let reply = cmwq::control::answer("stats");
/// assert!(reply.starts_with(r#"{"ok":true,"result":["#));
/// let refused = cmwq::control::answer("frobnicate");
/// assert!(refused.starts_with(r#"{"ok":false,"error":"#));
/// ```
pub fn answer(request: &str) -> String {
    answer_bytes(request.as_bytes())
}

fn execute(req: Request<'_>) -> String {
    match req {
        Request::Hello => {
            let program = std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            let mut out = String::new();
            json_object!(&mut out, {
                "protocol": PROTOCOL_VERSION,
                "pid": std::process::id(),
                "version": env!("CARGO_PKG_VERSION"),
                "program": program,
                "workqueues": all_workqueues().len(),
            });
            ok_reply(&Raw(out))
        }
        Request::Help => ok_reply(HELP),
        Request::Stats => {
            // Gathered (taking and releasing the pool locks) before any byte is sent.
            let records: Vec<WqRecord> = all_workqueues()
                .iter()
                .map(|wq| WqRecord {
                    name: wq.name.clone(),
                    id: wq.id,
                    flags: wq.flags,
                    ordered: wq.ordered,
                    stats: wq_stats(wq),
                })
                .collect();
            ok_reply(&records)
        }
        Request::Pools => ok_reply(&crate::pools()),
        Request::Dump { all } => ok_reply(&if all {
            crate::show_all_workqueues()
        } else {
            crate::show_workqueues()
        }),
        Request::Prometheus => ok_reply(&crate::prometheus_text()),
        Request::Get { workqueue } => match knobs::get(workqueue) {
            Ok(out) => ok_reply(&Raw(out)),
            Err(e) => error_reply(&e),
        },
        Request::Set { workqueue, knob } => match knobs::set(workqueue, knob) {
            Ok(out) => ok_reply(&Raw(out)),
            Err(e) => error_reply(&e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse("stats"), Ok(Request::Stats));
        assert_eq!(parse("dump all"), Ok(Request::Dump { all: true }));
        assert_eq!(
            parse("set my queue max_active 7"),
            Ok(Request::Set {
                workqueue: "my queue",
                knob: Knob::MaxActive(7)
            })
        );
        assert_eq!(
            parse("set my queue cpumask 0-1"),
            Ok(Request::Set {
                workqueue: "my queue",
                knob: Knob::Cpumask(vec![0, 1])
            })
        );
        assert_eq!(
            parse("get my queue"),
            Ok(Request::Get {
                workqueue: "my queue"
            })
        );
        for bad in [
            "",
            "stats ",
            " stats",
            "stats  all",
            "dump everything",
            "set max_active 3",
            "set q nice 30",
            "set q per_cpu 1",
            "get",
            "get ",
            "set q max_active 0",
            "set q max_active 2049",
            "set q max_active +3",
            "set q max_active -1",
            "set q max_active x",
            "set  max_active 3",
            "STATS",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn rejects_before_parsing() {
        assert!(answer_bytes(&[0xff, 0xfe]).contains("not UTF-8"));
        assert!(answer_bytes(b"stats\x00").contains("control characters"));
        assert!(answer_bytes(&[b'a'; MAX_REQUEST + 1]).contains("too long"));
        assert!(answer_bytes(b"help\r").starts_with(r#"{"ok":true"#));
    }
}
