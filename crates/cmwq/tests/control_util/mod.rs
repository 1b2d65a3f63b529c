//! Helpers of the control-endpoint tests (`tests/control.rs`, `tests/control_attrs.rs`):
//! reading replies and a raw connection for requests the client would not send.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// How long a raw connection waits for a reply.
const DEADLINE: Duration = Duration::from_secs(20);

/// A reply, parsed (it must be one valid JSON object).
#[track_caller]
pub fn parse(reply: &str) -> Value {
    serde_json::from_str(reply).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {reply}"))
}

#[track_caller]
pub fn ok(reply: &str) -> Value {
    let v = parse(reply);
    assert_eq!(v["ok"], true, "error reply: {reply}");
    v["result"].clone()
}

#[track_caller]
pub fn refused(reply: &str) -> String {
    let v = parse(reply);
    assert_eq!(v["ok"], false, "accepted: {reply}");
    assert!(v.get("result").is_none(), "{reply}");
    v["error"].as_str().expect("an error message").to_string()
}

/// The stats record of workqueue `name`.
#[track_caller]
pub fn record(stats: &Value, name: &str) -> Value {
    let found: Vec<&Value> = stats
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "one record named {name}: {stats}");
    found[0].clone()
}

/// A raw connection, for requests the client would not send.
pub struct Raw {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Raw {
    pub fn connect(path: &Path) -> Raw {
        let w = UnixStream::connect(path).unwrap();
        w.set_read_timeout(Some(DEADLINE)).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Raw { w, r }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    /// Sends `bytes` to a server that may have answered and closed already (a refusal
    /// needs no request): the write may fail with `EPIPE`, the reply is still there to read.
    pub fn send_maybe_refused(&mut self, bytes: &[u8]) {
        let _ = self.w.write_all(bytes);
    }

    #[track_caller]
    pub fn reply(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "a whole reply line: {line:?}");
        line.trim_end().to_string()
    }
}
