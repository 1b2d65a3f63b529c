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
    /// Set an attribute of a WqFlags::SYSFS workqueue of a process (the kernel's sysfs knob):
    /// `cmwq ctl --pid PID WORKQUEUE max_active N`.
    Ctl {
        /// The process.
        #[arg(long)]
        pid: u32,
        /// The workqueue's name.
        workqueue: String,
        /// The attribute: max_active.
        #[arg(value_parser = ["max_active"])]
        attribute: String,
        /// The new value (1..=2048).
        value: usize,
    },
    /// A live view of a process's workqueues and pools, refreshed every second (q quits, s
    /// changes the sort column, r reverses it). Without --pid, of the demo workload run here.
    Top {
        /// The process (default: run the demo workload in this process and show that).
        #[arg(long)]
        pid: Option<u32>,
    },
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
        } => {
            let v = Source::remote(pid)?.value(&format!("set {workqueue} {attribute} {value}"))?;
            println!(
                "{workqueue}: {attribute} = {}",
                v.get(&attribute).unwrap_or(&v)
            );
        }
        Command::Top { pid } => top::run(pid)?,
    }
    Ok(())
}
