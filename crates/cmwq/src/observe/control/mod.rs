//! The control endpoint: a running process's workqueues seen, and tuned, from outside.
//!
//! The kernel shows its workqueues through `/sys/devices/virtual/workqueue/` (and
//! `tools/workqueue/wq_monitor.py` and `wq_dump.py` reading them); a process using cmwq shows
//! them through a Unix socket that [`serve`] opens, and the `cmwq` command-line tool
//! (`cmwq list`, `cmwq stats`, `cmwq dump`, `cmwq ctl`, `cmwq top`) reads.
//!
//! # Starting it
//!
//! Either call [`serve`] and keep the [`ControlHandle`] (the endpoint stops when it drops),
//! or set `CMWQ_CONTROL=1` in the environment of an unchanged program: the endpoint then
//! starts at the engine's first use (the first workqueue made or system queue used) and lives
//! as long as the process. A failure to start is reported on standard error and the program
//! runs on without it.
//!
//! ```
//! let endpoint = cmwq::control::serve()?;
//! let wq = cmwq::Workqueue::new("control_doc", cmwq::WqFlags::SYSFS, 4)?;
//!
//! // Any process of the same user can now do this (here: this one).
//! let mut client = cmwq::control::Client::connect(std::process::id())?;
//! let stats = client.request("stats")?;
//! assert!(stats.contains(r#""name":"control_doc""#));
//! let set = client.request("set control_doc max_active 8")?;
//! assert!(set.starts_with(r#"{"ok":true"#));
//! assert_eq!(wq.max_active(), 8);
//!
//! drop(endpoint); // the socket file is gone
//! # Ok::<(), cmwq::Error>(())
//! ```
//!
//! # Where, and who may connect
//!
//! The socket of process `PID` is `$XDG_RUNTIME_DIR/cmwq/PID.sock` when `XDG_RUNTIME_DIR` is
//! set (to an absolute path), else `/tmp/cmwq-UID/PID.sock` with `UID` the effective uid
//! ([`socket_dir`], [`socket_path`]). A client ([`Client::connect`], [`endpoints`]) also
//! looks in `/tmp/cmwq-UID`, where a process started without `XDG_RUNTIME_DIR` (by a service
//! manager, say) serves. Three locks keep other users out:
//!
//! - the directory has mode 0700 and must be owned by the user: [`serve`] creates it so, sets
//!   an existing one of the user's back to 0700, and refuses one owned by anyone else (or a
//!   symbolic link), which in `/tmp` would be a trap;
//! - the socket has mode 0600;
//! - each connection's peer is checked with `SO_PEERCRED`, and one whose effective uid
//!   differs from the process's gets an error reply and is closed before any request is
//!   read. (Root is no exception: a root process accepts root peers only.)
//!
//! A socket left by a process that died without removing it (killed: it is removed when the
//! handle drops and at a normal exit) is stale: [`endpoints`] skips it and the next [`serve`]
//! of the same user removes it, while a live process's socket is never removed or taken over.
//!
//! # The protocol
//!
//! Line-based text over a stream socket. A client sends one request per line (a `\n` ends
//! it; a `\r` before it is ignored) and gets one reply line per request, in order; it may
//! send several requests on one connection. Words are separated by one space; requests are
//! case-sensitive.
//!
//! | request | reply's `result` |
//! |---|---|
//! | `hello` | `{"protocol":1,"pid":N,"version":"0.1.0","program":"NAME","workqueues":N}` |
//! | `help` | the request forms, as an array of strings |
//! | `stats` | one record per live workqueue, in creation order (below) |
//! | `pools` | one [`PoolStats`](crate::PoolStats) per worker pool (below) |
//! | `dump` | [`show_workqueues()`](crate::show_workqueues), the busy queues and pools, as a string |
//! | `dump all` | [`show_all_workqueues()`](crate::show_all_workqueues), as a string |
//! | `prometheus` | [`prometheus_text()`](crate::prometheus_text), as a string |
//! | `get WORKQUEUE` | the queue's knobs: `{"workqueue":"WORKQUEUE","per_cpu":0,"max_active":N,"nice":N,"cpumask":"0-3","affinity_scope":"default (cache)","affinity_strict":0}` (a per-CPU queue: `workqueue`, `per_cpu` 1 and `max_active` only) |
//! | `set WORKQUEUE max_active N` | `{"workqueue":"WORKQUEUE","max_active":N}` |
//! | `set WORKQUEUE KNOB VALUE` | `{"workqueue":"WORKQUEUE","KNOB":VALUE}`, the knob as it now reads (below) |
//!
//! Every reply is one line of JSON: `{"ok":true,"result":RESULT}` or
//! `{"ok":false,"error":"MESSAGE"}`. Strings are JSON-escaped, so a dump's newlines travel
//! as `\n` and a reply never spans lines.
//!
//! A `stats` record holds the queue's identity (`name`, `id` — unique, as two queues may
//! share a name —, `flags` as an array of [`WqFlags`](crate::WqFlags) names such as
//! `"UNBOUND"`, and `ordered`) and every field of [`WqStats`](crate::WqStats) by its name:
//!
//! ```text
//! {"name":"events","id":1,"flags":[],"ordered":false,"total":18545,"completed":18545,
//!  "in_flight":0,"cpu_time":{"secs":6,"nanos":100000000},"cpu_intensive":0,"cm_wakeups":5,
//!  "repatriated":0,"mayday":0,"rescued":0,"pending":0,"inactive":0,"max_active":1024}
//! ```
//!
//! (one line in a reply). Durations are `{"secs":S,"nanos":N}`, as `serde` writes a
//! `Duration`; a `pools` record is what `serde_json` makes of [`PoolStats`](crate::PoolStats)
//! under the `serde` feature (`id`, `cpu` or `null`, `highpri`, `nice`, `nr_workers`,
//! `nr_idle`, `nr_running`, `worklist`, and `busy` with `thread`, `workqueue`, `function`,
//! `desc` or `null`, `running_for`).
//!
//! # What a request may change
//!
//! Only `set WORKQUEUE KNOB VALUE`, and only for a queue created with
//! [`WqFlags::SYSFS`](crate::WqFlags::SYSFS), as the kernel's
//! `/sys/devices/virtual/workqueue/WORKQUEUE/` exists only for `WQ_SYSFS` queues (`get`
//! reads the same files, for the same queues). The knobs:
//!
//! - `max_active N`, `N` in `1..=`[`WQ_MAX_ACTIVE`](crate::WQ_MAX_ACTIVE), as
//!   [`Workqueue::set_max_active`](crate::Workqueue::set_max_active) does (refused for an
//!   ordered queue, whose `max_active` is fixed at 1);
//! - for unbound queues, through [`Workqueue::apply_attrs`](crate::Workqueue::apply_attrs)
//!   with the queue's attributes and the one knob changed: `nice N` (`-20..=19`), `cpumask
//!   LIST` (a CPU list such as `0-3,6`, each CPU in [`online_cpus`](crate::online_cpus)),
//!   `affinity_scope NAME` (`default`, `cpu`, `smt`, `cache`, `numa` or `system`; it reads as
//!   `default (cache)` for the default) and `affinity_strict 0|1`. A per-CPU queue has
//!   `max_active` only, as in the kernel.
//!
//! `WORKQUEUE` is the rest of the line between `set ` and ` KNOB VALUE` (or after `get `),
//! so a name may hold spaces. Refused, with an error reply: a queue without `SYSFS`, an
//! unknown name, a name that two live `SYSFS` queues share, an unknown knob, a bad value.
//! Every other request only reads.
//!
//! # Limits
//!
//! - A request line is at most [`MAX_REQUEST`] bytes. A longer one gets an error reply as
//!   soon as the limit is passed, and the rest of it, up to its newline, is discarded;
//!   a request that is not UTF-8, holds control characters, or is not one of the forms above
//!   gets an error reply too. None of them changes anything, and the connection stays
//!   usable.
//! - A connection without a complete request for [`IDLE_TIMEOUT`] is closed; at most
//!   [`MAX_CLIENTS`] are served at once (one more gets a `busy` error reply). Each
//!   connection is served on a thread of its own, never on an engine thread, and a reply is
//!   computed whole before it is sent: a client that says nothing, or reads nothing, delays
//!   neither the engine nor other clients.
//!
//! From a shell, `socat - UNIX-CONNECT:$XDG_RUNTIME_DIR/cmwq/PID.sock` speaks it too.

pub(crate) mod client;
pub(crate) mod json;
pub(crate) mod knobs;
pub(crate) mod path;
pub(crate) mod protocol;
pub(crate) mod server;

pub use client::Client;
pub use path::{endpoints, socket_dir, socket_path, Endpoint};
pub use protocol::{answer, MAX_REQUEST, PROTOCOL_VERSION};
pub(crate) use server::start_from_env;
pub use server::{serve, ControlHandle, IDLE_TIMEOUT, MAX_CLIENTS};
