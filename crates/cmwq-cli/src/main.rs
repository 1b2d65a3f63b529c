//! `cmwq`: the command-line face of the cmwq library.
//!
//! `cmwq` (or `cmwq demo`) runs a demonstration of the engine's semantics on an embedded
//! default workload and prints a report. The other commands look into a running process
//! through its control endpoint (see `cmwq::control`): one started with `CMWQ_CONTROL=1`, or
//! that calls `cmwq::control::serve()`, or `cmwq demo --serve`.

mod demo;
mod endpoint;
mod live;
mod table;
mod top;

use clap::{Parser, Subcommand};

use crate::endpoint::{Hello, Source, WqRecord};

#[derive(Parser)]
#[command(
    name = "cmwq",
    version,
    about = "Kernel-style concurrency-managed workqueues for Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the demonstration on the embedded default workload (the default command).
    Demo {
        /// Scale the item counts of the workload (1 = default).
        #[arg(long, default_value_t = 1)]
        scale: usize,
        /// Instead of the checks, keep a demo workload running with the control endpoint on,
        /// for `cmwq stats`, `top`, `dump` and `ctl` to look at.
        #[arg(long)]
        serve: bool,
        /// With --serve: stop after this many seconds (default: run until interrupted).
        #[arg(long, requires = "serve")]
        seconds: Option<u64>,
    },
    /// List this user's processes that serve a control endpoint.
    List,
    /// Print a process's workqueue statistics: the table of the kernel's wq_monitor.py.
    Stats {
        /// The process.
        #[arg(long)]
        pid: u32,
        /// Print JSON instead: one object per workqueue with every WqStats field by name.
        #[arg(long)]
        json: bool,
    },
    /// Print a process's state dump (the kernel's show_all_workqueues()).
    Dump {
        /// The process.
        #[arg(long)]
        pid: u32,
        /// Every workqueue and pool, idle ones included (default: busy ones only).
        #[arg(long)]
        all: bool,
    },
    /// Print a process's counters in the Prometheus text format.
    Prometheus {
        /// The process.
        #[arg(long)]
        pid: u32,
    },
    /// Show or set the attributes of a WqFlags::SYSFS workqueue of a process (the files of
    /// the kernel's /sys/devices/virtual/workqueue/WORKQUEUE/): `cmwq ctl --pid PID
    /// WORKQUEUE` shows them all, `cmwq ctl --pid PID WORKQUEUE nice -5` sets one.
    Ctl {
        /// The process.
        #[arg(long)]
        pid: u32,
        /// The workqueue's name.
        workqueue: String,
        /// The attribute to set: max_active, or for unbound queues nice, cpumask,
        /// affinity_scope, affinity_strict (none: show every attribute).
        #[arg(value_parser = ["max_active", "nice", "cpumask", "affinity_scope", "affinity_strict"], requires = "value")]
        attribute: Option<String>,
        /// The new value: max_active 1..=2048, nice -20..=19, cpumask a CPU list (0-3,6),
        /// affinity_scope default|cpu|smt|cache|numa|system, affinity_strict 0|1.
        #[arg(allow_hyphen_values = true)]
        value: Option<String>,
    },
    /// A live view of a process's workqueues and pools, refreshed every second (q quits, s
    /// changes the sort column, r reverses it). Without --pid, of the demo workload run here.
    Top {
        /// The process (default: run the demo workload in this process and show that).
        #[arg(long)]
        pid: Option<u32>,
    },
}

/// A JSON value as the sysfs file would show it: strings without their quotes.
fn shown(v: &serde_json::Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn main() {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Demo {
        scale: 1,
        serve: false,
        seconds: None,
    });
    let ok = match command {
        Command::Demo {
            serve: true,
            seconds,
            ..
        } => live::serve(seconds),
        Command::Demo { scale, .. } => demo::run(scale.max(1)),
        other => match tool(other) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("cmwq: {e}");
                false
            }
        },
    };
    if !ok {
        std::process::exit(1);
    }
}

/// The commands that read (or tune) another process.
fn tool(command: Command) -> Result<(), String> {
    match command {
        Command::Demo { .. } => unreachable!("handled in main"),
        Command::List => {
            let endpoints = cmwq::control::endpoints();
            println!(
                "{:>8}  {:<20} {:>10}  SOCKET",
                "PID", "PROGRAM", "WORKQUEUES"
            );
            for e in endpoints {
                // A process that does not answer (stuck, or exiting) is left out.
                let Ok(mut source) = Source::remote(e.pid) else {
                    continue;
                };
                let Ok(hello) = source.get::<Hello>("hello") else {
                    continue;
                };
                println!(
                    "{:>8}  {:<20} {:>10}  {}",
                    e.pid,
                    hello.program,
                    hello.workqueues,
                    e.path.display()
                );
            }
        }
        Command::Stats { pid, json } => {
            let mut source = Source::remote(pid)?;
            let records: Vec<WqRecord> = source.get("stats")?;
            if json {
                let text = serde_json::to_string_pretty(&records).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                print!("{}", table::render(&records));
            }
        }
        Command::Dump { pid, all } => {
            let v = Source::remote(pid)?.value(if all { "dump all" } else { "dump" })?;
            print!("{}", v.as_str().unwrap_or_default());
        }
        Command::Prometheus { pid } => {
            let v = Source::remote(pid)?.value("prometheus")?;
            print!("{}", v.as_str().unwrap_or_default());
        }
        Command::Ctl {
            pid,
            workqueue,
            attribute,
            value,
        } => match (attribute, value) {
            (Some(attribute), Some(value)) => {
                let v =
                    Source::remote(pid)?.value(&format!("set {workqueue} {attribute} {value}"))?;
                println!(
                    "{workqueue}: {attribute} = {}",
                    shown(v.get(&attribute).unwrap_or(&v))
                );
            }
            _ => {
                let v = Source::remote(pid)?.value(&format!("get {workqueue}"))?;
                if let Some(fields) = v.as_object() {
                    for (k, val) in fields.iter().filter(|(k, _)| *k != "workqueue") {
                        println!("{k:<16} {}", shown(val));
                    }
                }
            }
        },
        Command::Top { pid } => top::run(pid)?,
    }
    Ok(())
}
