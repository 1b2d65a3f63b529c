//! `cmwq`: the command-line face of the cmwq library.
//!
//! `cmwq` (or `cmwq demo`) runs a demonstration of the engine's semantics on an embedded
//! default workload and prints a report.

mod demo;

use clap::{Parser, Subcommand};

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
    },
}

fn main() {
    let cli = Cli::parse();
    let ok = match cli.command.unwrap_or(Command::Demo { scale: 1 }) {
        Command::Demo { scale } => demo::run(scale.max(1)),
    };
    if !ok {
        std::process::exit(1);
    }
}
