//! Talking to a process's control endpoint (or answering in this process), and the records
//! of its replies.

use std::time::Duration;

use cmwq::control::Client;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A duration as the endpoint writes it (`{"secs":S,"nanos":N}`).
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Dur {
    pub secs: u64,
    pub nanos: u32,
}

impl Dur {
    pub fn get(self) -> Duration {
        Duration::new(self.secs, self.nanos)
    }
}

/// One workqueue's record of the `stats` reply (written back in this field order by
/// `cmwq stats --json`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[allow(dead_code)] // every field is parsed; not every tool shows every one
pub struct WqRecord {
    pub name: String,
    pub id: u64,
    pub flags: Vec<String>,
    pub ordered: bool,
    pub total: u64,
    pub completed: u64,
    pub in_flight: u64,
    pub cpu_time: Dur,
    pub cpu_intensive: u64,
    pub cm_wakeups: u64,
    pub repatriated: u64,
    pub mayday: u64,
    pub rescued: u64,
    pub pending: u64,
    pub inactive: u64,
    pub max_active: u64,
}

impl WqRecord {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    pub fn unbound(&self) -> bool {
        self.has_flag("UNBOUND")
    }

    pub fn mem_reclaim(&self) -> bool {
        self.has_flag("MEM_RECLAIM")
    }

    /// wq_monitor's `CMW/RPR`: concurrency-management wake-ups for per-CPU queues,
    /// repatriations for unbound ones.
    pub fn cmw_rpr(&self) -> u64 {
        if self.unbound() {
            self.repatriated
        } else {
            self.cm_wakeups
        }
    }
}

/// A worker running an item, in a `pools` record.
#[derive(Clone, Debug, Deserialize)]
#[allow(dead_code)]
pub struct BusyRecord {
    pub thread: String,
    pub workqueue: String,
    pub function: String,
    pub desc: Option<String>,
    pub running_for: Dur,
}

/// One pool's record of the `pools` reply.
#[derive(Clone, Debug, Deserialize)]
#[allow(dead_code)]
pub struct PoolRecord {
    pub id: u64,
    pub cpu: Option<u64>,
    pub highpri: bool,
    pub nice: i32,
    pub nr_workers: u64,
    pub nr_idle: u64,
    pub nr_running: u64,
    pub worklist: u64,
    pub busy: Vec<BusyRecord>,
    /// A per-CPU pool whose CPU left the process's CPU set (absent from older engines).
    #[serde(default)]
    pub disassociated: bool,
}

/// The `hello` reply.
#[derive(Clone, Debug, Deserialize)]
#[allow(dead_code)]
pub struct Hello {
    pub protocol: u32,
    pub pid: u32,
    pub version: String,
    pub program: String,
    pub workqueues: u64,
}

/// Where the answers come from.
pub enum Source {
    /// A process's endpoint; reconnected when the connection was closed (idle timeout).
    Remote { pid: u32, client: Option<Client> },
    /// This process, without a socket (`cmwq top` of the in-process demo).
    Local,
}

impl Source {
    pub fn remote(pid: u32) -> Result<Source, String> {
        let client = Client::connect(pid).map_err(|e| no_endpoint(pid, &e))?;
        Ok(Source::Remote {
            pid,
            client: Some(client),
        })
    }

    /// The reply line to `request`.
    fn reply(&mut self, request: &str) -> Result<String, String> {
        match self {
            Source::Local => Ok(cmwq::control::answer(request)),
            Source::Remote { pid, client } => {
                // One retry on a fresh connection: the endpoint closes idle ones.
                for _ in 0..2 {
                    let c = match client {
                        Some(c) => c,
                        None => client.insert(Client::connect(*pid).map_err(|e| e.to_string())?),
                    };
                    match c.request(request) {
                        Ok(line) => return Ok(line),
                        Err(_) => *client = None,
                    }
                }
                Err(format!("process {pid} does not answer"))
            }
        }
    }

    /// The `result` of a successful reply, or its error message.
    pub fn value(&mut self, request: &str) -> Result<Value, String> {
        let line = self.reply(request)?;
        let mut v: Value =
            serde_json::from_str(&line).map_err(|e| format!("bad reply ({e}): {line}"))?;
        if v["ok"] == true {
            Ok(v["result"].take())
        } else {
            Err(v["error"].as_str().unwrap_or("error reply").to_string())
        }
    }

    /// The `result`, parsed as `T`.
    pub fn get<T: DeserializeOwned>(&mut self, request: &str) -> Result<T, String> {
        serde_json::from_value(self.value(request)?).map_err(|e| format!("bad reply: {e}"))
    }
}

fn no_endpoint(pid: u32, e: &cmwq::Error) -> String {
    format!(
        "{e}\n(is process {pid} running with CMWQ_CONTROL=1 or cmwq::control::serve(), as this \
         user? `cmwq list` shows the processes that serve)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_record_reads_disassociated_and_defaults_it() {
        let base = r#""id":2,"cpu":1,"highpri":false,"nice":0,"nr_workers":1,"nr_idle":1,"nr_running":0,"worklist":0,"busy":[]"#;
        let off: PoolRecord =
            serde_json::from_str(&format!("{{{base},\"disassociated\":true}}")).unwrap();
        assert!(off.disassociated);
        // An engine without the field (before CPU-set changes were followed).
        let old: PoolRecord = serde_json::from_str(&format!("{{{base}}}")).unwrap();
        assert!(!old.disassociated);
    }
}
