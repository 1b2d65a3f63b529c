//! `cmwq-bench`: runs six workloads on cmwq and on rayon, tokio, threadpool, blocking and
//! `crossbeam-pool` (the simplest fixed pool, see `pools`), prints a table and writes JSON
//! (plus SVG thread plots for W3 and W6).
//!
//! W5 runs twice over: with background items that spin (the original load) and with
//! background items that sleep 1-5 ms ("sleepers", see `workloads::w5`), for cmwq and for
//! every peer.

mod child;
mod goals;
mod pools;
mod report;
mod sys;
mod workloads;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::Serialize;

use pools::{Kind, Pool, PEERS};
use report::{Goal, Stat, VariantResult};
use sys::Spin;
use workloads::{Params, RepOut, Tracker};

#[derive(Parser, Debug)]
#[command(
    about = "Compare cmwq with rayon, tokio, threadpool, blocking and a crossbeam-channel pool on six workloads"
)]
struct Args {
    /// Repetitions of every variant (W6 runs at most 3: each one waits out an idle period).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Where to write the JSON results; SVG plots go beside it.
    #[arg(long, default_value = "target/cmwq-bench/results.json")]
    out: PathBuf,
    /// Only these workloads, e.g. `--only W3` or `--only W1,W5`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only variants whose name contains one of these, e.g. `--pools cmwq,tokio`.
    #[arg(long, value_delimiter = ',')]
    pools: Vec<String>,
    /// Smaller parameters and 3 repetitions, for a smoke run.
    #[arg(long)]
    quick: bool,
    /// Per-variant guard in seconds: a repetition running longer is aborted and recorded as
    /// "timeout", and no new repetition starts once the variant has used this much time.
    #[arg(long, default_value_t = 120)]
    variant_timeout: u64,
    /// Idle period of W6 in milliseconds (default 5000, 1000 with --quick).
    #[arg(long)]
    w6_idle_ms: Option<u64>,
    /// Set cmwq's idle-worker timeout (`cmwq::Config::idle_worker_timeout`) for the cmwq
    /// variants; without it the engine's default (the kernel's 300 s) is in force.
    #[arg(long)]
    cmwq_idle_timeout_ms: Option<u64>,
    /// Instead of the workloads: print the spin rate (all cores, median of 9 rounds) every 5 s
    /// for this many seconds, to see how steady the machine's speed is.
    #[arg(long)]
    spin_drift: Option<u64>,
    /// Internal: run one variant (`W3:2`) in this process and write its result to `--child-out`.
    #[arg(long, hide = true)]
    child: Option<String>,
    #[arg(long, hide = true)]
    child_out: Option<PathBuf>,
    /// Internal: the parent's spin calibration, so every child spins the same.
    #[arg(long, hide = true)]
    spin_iters_per_us: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    W1,
    W2,
    W3,
    W4,
    W5,
    W6,
}

const ALL: [Workload; 6] = [
    Workload::W1,
    Workload::W2,
    Workload::W3,
    Workload::W4,
    Workload::W5,
    Workload::W6,
];

impl Workload {
    fn id(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
            Workload::W3 => "W3",
            Workload::W4 => "W4",
            Workload::W5 => "W5",
            Workload::W6 => "W6",
        }
    }

    fn columns(self) -> &'static [&'static str] {
        match self {
            Workload::W1 | Workload::W2 => &["ns/item", "Mitems/s", "enqueue ns/item"],
            Workload::W3 => &[
                "makespan ms",
                "x lower bound",
                "x sleep + item CPU/cores",
                "x sleep + used CPU/cores",
                "peak threads",
                "voluntary cs",
                "involuntary cs",
            ],
            Workload::W4 => &[
                "makespan ms",
                "x CPU/cores",
                "x item CPU/cores",
                "x used CPU/cores",
                "x slowest CPU's share",
                "CPU speed gap %",
                "peak threads",
            ],
            Workload::W5 => &[
                "p50 us",
                "p99 us",
                "p99.9 us",
                "max us",
                "probes",
                "reps p50 > 1 ms",
            ],
            Workload::W6 => &[
                "burst ms",
                "peak threads",
                "floor threads",
                "after burst",
                "after idle",
            ],
        }
    }

    /// The metric compared with the best peer, and whether higher is better.
    fn key(self) -> (&'static str, bool) {
        match self {
            Workload::W1 | Workload::W2 => ("Mitems/s", true),
            Workload::W3 | Workload::W4 => ("makespan ms", false),
            Workload::W5 => ("p99 us", false),
            Workload::W6 => ("burst ms", false),
        }
    }
}

struct Variant {
    label: String,
    kind: Kind,
    hint: bool,
    requeue: bool,
    /// W5: the background items sleep instead of spinning.
    sleepers: bool,
}

/// A variant and its label: `cmwq-bound requeue`, `cmwq-unbound fresh`, `cmwq-bound +blocking()`,
/// `cmwq-bound no hint`, or the executor's name.
fn variant(kind: Kind, hint: bool, requeue: bool, suffix: &str) -> Variant {
    let mut label = kind.label().to_string();
    if requeue {
        label.push_str(" requeue");
    } else if hint {
        label.push_str(" +blocking()");
    } else if kind.is_cmwq() && !suffix.is_empty() {
        label.push(' ');
        label.push_str(suffix);
    }
    Variant {
        label,
        kind,
        hint,
        requeue,
        sleepers: false,
    }
}

/// A W5 variant whose background items sleep: `cmwq-unbound sleepers +blocking()`,
/// `cmwq-unbound sleepers no hint`, `tokio sleepers`.
fn sleepers(kind: Kind, hint: bool) -> Variant {
    let mut label = format!("{} sleepers", kind.label());
    if kind.is_cmwq() {
        label.push_str(if hint { " +blocking()" } else { " no hint" });
    }
    Variant {
        label,
        kind,
        hint,
        requeue: false,
        sleepers: true,
    }
}

fn variants(w: Workload) -> Vec<Variant> {
    let mut v = match w {
        Workload::W1 | Workload::W2 => vec![
            variant(Kind::CmwqBound, false, false, "fresh"),
            variant(Kind::CmwqBound, false, true, ""),
            variant(Kind::CmwqUnbound, false, false, "fresh"),
            variant(Kind::CmwqUnbound, false, true, ""),
            variant(Kind::CmwqSpawn, false, false, ""),
        ],
        Workload::W3 => vec![
            variant(Kind::CmwqBound, true, false, ""),
            variant(Kind::CmwqBoundRr, true, false, ""),
            variant(Kind::CmwqUnbound, true, false, ""),
            variant(Kind::CmwqBound, false, false, "no hint"),
            variant(Kind::CmwqBoundRr, false, false, "no hint"),
            variant(Kind::CmwqUnbound, false, false, "no hint"),
        ],
        Workload::W4 => vec![
            variant(Kind::CmwqBound, false, false, ""),
            variant(Kind::CmwqBoundRr, false, false, ""),
            variant(Kind::CmwqUnbound, false, false, ""),
        ],
        Workload::W5 => {
            let mut v = vec![
                variant(Kind::CmwqBound, false, false, ""),
                variant(Kind::CmwqBoundRr, false, false, ""),
                variant(Kind::CmwqUnbound, false, false, ""),
                variant(Kind::CmwqHighpri, false, false, ""),
            ];
            v.extend(PEERS.iter().map(|&k| variant(k, false, false, "")));
            v.extend([
                sleepers(Kind::CmwqUnbound, true),
                sleepers(Kind::CmwqUnbound, false),
                sleepers(Kind::CmwqHighpri, true),
            ]);
            v.extend(PEERS.iter().map(|&k| sleepers(k, false)));
            return v;
        }
        Workload::W6 => vec![
            variant(Kind::CmwqBound, true, false, ""),
            variant(Kind::CmwqBoundRr, true, false, ""),
            variant(Kind::CmwqUnbound, true, false, ""),
        ],
    };
    v.extend(PEERS.iter().map(|&k| variant(k, false, false, "")));
    v
}

struct Ctx {
    cores: usize,
    spin: Spin,
    params: Params,
    reps: usize,
    timeout: Duration,
}

fn run_variant(ctx: &Ctx, w: Workload, v: &Variant) -> (VariantResult, Vec<(f64, f64)>) {
    let mut res = VariantResult {
        workload: w.id().into(),
        variant: v.label.clone(),
        pool: v.kind.label().into(),
        status: "ok".into(),
        reps_done: 0,
        metrics: vec![],
        notes: vec![],
        other_cpu_pct: 0.0,
        threads_trace: None,
    };
    let pool = match Pool::new(v.kind, ctx.cores) {
        Ok(p) => p,
        Err(e) => {
            res.status = "error".into();
            res.notes.push(format!("could not create the pool: {e}"));
            return (res, vec![]);
        }
    };
    // Warm the pool with a no-op item (one per CPU pool for bound cmwq queues) so that every
    // executor starts from its idle floor.
    let warm = Tracker::leak();
    if !pool.warm_up(warm) {
        res.status = "error".into();
        res.notes
            .push("the warm-up item did not run within 30 s".into());
        pool.shutdown(false);
        return (res, vec![]);
    }
    std::thread::sleep(Duration::from_millis(200));
    let p = &ctx.params;
    let (per, producers) = match w {
        Workload::W2 => (p.w2_items_per_producer, 2),
        _ => (p.w1_items, 1),
    };
    let requeue = v.requeue.then(|| {
        let t = Tracker::leak();
        (workloads::make_works(per, producers, t), t)
    });
    let reps_wanted = if w == Workload::W6 {
        ctx.reps.min(3)
    } else {
        ctx.reps
    };
    let start = Instant::now();
    let mut longest = Duration::ZERO;
    let mut reps: Vec<RepOut> = vec![];
    let mut timeout_trace = None;
    let mut clean = true;
    for rep in 0..reps_wanted {
        if rep > 0 && start.elapsed() + longest > ctx.timeout {
            res.notes.push(format!(
                "stopped after {rep} of {reps_wanted} repetitions: the variant's {}s budget would be exceeded",
                ctx.timeout.as_secs()
            ));
            break;
        }
        let rstart = Instant::now();
        let deadline = rstart + ctx.timeout;
        let hint = v.hint && v.kind.is_cmwq();
        let out = match w {
            Workload::W1 | Workload::W2 => workloads::throughput(
                &pool,
                per,
                producers,
                requeue.as_ref().map(|(ws, t)| (ws.as_slice(), *t)),
                deadline,
            ),
            Workload::W3 => workloads::mixed(&pool, v.kind, p, ctx.spin, ctx.cores, hint, deadline),
            Workload::W4 => workloads::cpu_bound(&pool, v.kind, p, ctx.spin, ctx.cores, deadline),
            Workload::W5 => {
                let bg = if v.sleepers {
                    workloads::Background::Sleep { hint }
                } else {
                    workloads::Background::Spin
                };
                workloads::latency(&pool, p, ctx.spin, ctx.cores, bg, deadline)
            }
            Workload::W6 => workloads::burst_idle(&pool, v.kind, p, hint, deadline),
        };
        longest = longest.max(rstart.elapsed());
        if let Some(e) = &out.error {
            res.status = "error".into();
            res.notes.push(format!("rep {}: {e}", rep + 1));
        }
        if out.timed_out {
            res.status = "timeout".into();
            res.notes.push(format!(
                "rep {} did not finish within {}s; its remaining items were skipped{}",
                rep + 1,
                ctx.timeout.as_secs(),
                if out.clean {
                    ""
                } else {
                    " (and did not drain: the pool was leaked)"
                }
            ));
            clean = out.clean;
            timeout_trace = out.trace;
            break;
        }
        reps.push(out);
    }
    if clean {
        pool.shutdown(true);
        drop(requeue);
    } else {
        pool.shutdown(false);
        std::mem::forget(requeue);
    }
    res.reps_done = reps.len();
    if let Some(first) = reps.first() {
        for (i, (name, _)) in first.metrics.iter().enumerate() {
            let values = reps
                .iter()
                .filter_map(|r| r.metrics.get(i).map(|m| m.1))
                .collect();
            res.metrics.push(Stat::new(name, values));
        }
    }
    if w == Workload::W5 {
        // A count over the repetitions, not a per-repetition value: one "value".
        let slow = res
            .metrics
            .iter()
            .find(|s| s.name == "p50 us")
            .map_or(0, |s| s.values.iter().filter(|&&x| x > 1000.0).count());
        res.metrics
            .push(Stat::new("reps p50 > 1 ms", vec![slow as f64]));
    }
    // The trace to plot: W6's first repetition (it starts from the warm pool's floor), else the
    // median repetition by makespan (or the timed-out one).
    let trace = match res.metrics.iter().find(|s| s.name == "makespan ms") {
        _ if w == Workload::W6 => reps.get_mut(0).and_then(|r| r.trace.take()),
        Some(s) => {
            let idx = s
                .values
                .iter()
                .position(|&x| x == s.median)
                .unwrap_or_else(|| {
                    // Even count: take the repetition closest to the median.
                    (0..s.values.len())
                        .min_by(|&a, &b| {
                            (s.values[a] - s.median)
                                .abs()
                                .total_cmp(&(s.values[b] - s.median).abs())
                        })
                        .unwrap_or(0)
                });
            reps.get_mut(idx).and_then(|r| r.trace.take())
        }
        None => timeout_trace,
    }
    .unwrap_or_default();
    if !trace.is_empty() {
        res.threads_trace = Some(report::downsample(&trace, 400));
    }
    (res, report::downsample(&trace, 3000))
}

#[derive(Serialize)]
struct Meta {
    date: String,
    command: String,
    nproc: usize,
    cpu_model: String,
    load_average_start: String,
    load_average_end: String,
    reps: usize,
    quick: bool,
    variant_timeout_s: u64,
    spin_iters_per_us: f64,
    params: Params,
    w3_lower_bound_ms: f64,
    w4_lower_bound_ms: f64,
    notes: Vec<String>,
}

#[derive(Serialize)]
struct Output {
    meta: Meta,
    results: Vec<VariantResult>,
    goals: Vec<Goal>,
}

fn selected(args: &Args) -> Vec<Workload> {
    if args.only.is_empty() {
        return ALL.to_vec();
    }
    ALL.into_iter()
        .filter(|w| {
            args.only
                .iter()
                .any(|o| o.trim().eq_ignore_ascii_case(w.id()))
        })
        .collect()
}

fn write_plots(dir: &Path, w: Workload, traces: &[(String, Vec<(f64, f64)>)]) {
    let id = w.id().to_lowercase();
    let title = match w {
        Workload::W3 => "W3 mixed blocking: live pool threads",
        _ => "W6 burst then idle: live pool threads",
    };
    let all = dir.join(format!("{id}-threads.svg"));
    if let Err(e) = report::plot_threads(&all, title, traces) {
        eprintln!("plot {}: {e}", all.display());
    }
    for (name, t) in traces {
        let slug: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
            .trim_matches('_')
            .replace("__", "_");
        let path = dir.join(format!("{id}-threads-{slug}.svg"));
        let one = [(name.clone(), t.clone())];
        if let Err(e) = report::plot_threads(&path, &format!("{title} ({name})"), &one) {
            eprintln!("plot {}: {e}", path.display());
        }
    }
    println!("plots: {}/{id}-threads*.svg", dir.display());
}

fn main() {
    let args = Args::parse();
    let cores = sys::cores();
    if let Some(secs) = args.spin_drift {
        sys::spin_drift(Duration::from_secs(secs));
        return;
    }
    let mut params = if args.quick {
        Params::quick()
    } else {
        Params::full()
    };
    if let Some(ms) = args.w6_idle_ms {
        params.w6_idle_ms = ms;
    }
    let reps = if args.quick {
        args.reps.min(3)
    } else {
        args.reps
    }
    .max(1);
    let load_start = sys::load_average();
    let spin = match args.spin_iters_per_us {
        Some(iters_per_us) => Spin { iters_per_us },
        None => Spin::calibrate(),
    };
    let ctx = Ctx {
        cores,
        spin,
        params: params.clone(),
        reps,
        timeout: Duration::from_secs(args.variant_timeout),
    };
    if let Some(spec) = &args.child {
        if let Some(ms) = args.cmwq_idle_timeout_ms {
            let cfg = cmwq::Config {
                idle_worker_timeout: Duration::from_millis(ms),
                ..cmwq::Config::default()
            };
            if let Err(e) = cmwq::configure(cfg) {
                eprintln!("cmwq::configure: {e}");
            }
        }
        child::run_child(&ctx, spec, args.child_out.as_deref());
    }
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let w3_lb = workloads::w3_lower_bound(&params, cores);
    let w4_lb = workloads::w4_lower_bound(&params, cores);
    let mut notes = vec![
        format!(
            "W3 lower bound = sleep + items * spin / cores = {}us + {} * {}us / {cores} = {:.1} ms",
            params.w3_sleep_us,
            params.w3_items,
            params.w3_spin_us,
            w3_lb.as_secs_f64() * 1e3
        ),
        format!(
            "W4 lower bound = items * spin / cores = {} * {}us / {cores} = {:.1} ms",
            params.w4_items,
            params.w4_spin_us,
            w4_lb.as_secs_f64() * 1e3
        ),
        "item CPU: the CPU time the items' spins took in the repetition, metered on the thread CPU clock of every 16th spin of each thread; the goals' bounds use it (`x sleep + item CPU/cores`, `x item CPU/cores`), because the machine's speed drifts from the start-up calibration (`x lower bound`, `x CPU/cores`)".into(),
        "W4 `x slowest CPU's share`: makespan over items/cores spins at the slowest CPU's metered speed, the bound of an even pinned split; `CPU speed gap %`: the slowest CPU's metered speed against the fastest's".into(),
        "peak threads / floor / after: live OS threads of the pool under test (process threads minus the threads that are not the pool's when the repetition starts); sampled every ms".into(),
        "context switches: getrusage(RUSAGE_SELF) deltas minus the sampler thread's own".into(),
        "cmwq-bound queues with queue() from the producer thread (the producer's CPU); cmwq-bound-rr spreads with queue_on() round-robin over the online CPUs".into(),
        format!(
            "W6: cmwq's idle-worker timeout is {} ({}); thread counts are reported as measured",
            match args.cmwq_idle_timeout_ms {
                Some(ms) => format!("{ms} ms"),
                None => format!("{:?}", cmwq::Config::default().idle_worker_timeout),
            },
            if args.cmwq_idle_timeout_ms.is_some() {
                "set with --cmwq-idle-timeout-ms"
            } else {
                "the engine's default"
            }
        ),
    ];
    println!("cmwq-bench  {}", sys::utc_now());
    println!(
        "machine: {cores} cores, {}; load average at start {load_start}",
        sys::cpu_model()
    );
    let one = Spin::measure(1);
    println!(
        "scale: {} ({} repetitions; W6 at most 3); spin calibration {:.1} iterations/us per core, the median of 9 rounds with all {cores} cores spinning (one core: median {:.1}, fastest {:.1})",
        if args.quick { "quick" } else { "full" },
        reps,
        spin.iters_per_us,
        one.median,
        one.fastest
    );
    println!(
        "params: {}",
        serde_json::to_string(&params).unwrap_or_default()
    );
    for n in &notes {
        println!("note: {n}");
    }

    let out_dir = args
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    if let Err(e) = std::fs::create_dir_all(&out_dir) {
        eprintln!("cannot create {}: {e}", out_dir.display());
    }
    let mut results: Vec<VariantResult> = vec![];
    for w in selected(&args) {
        println!();
        println!("== {} ==", goals::describe(w, &params, cores));
        let mut traces = vec![];
        for (i, v) in variants(w).into_iter().enumerate() {
            if !args.pools.is_empty() && !args.pools.iter().any(|p| v.label.contains(p.as_str())) {
                continue;
            }
            let t = Instant::now();
            let (busy0, own0) = (sys::machine_busy(), sys::own_and_children_cpu());
            let (mut r, trace) = child::spawn_child(&args, &ctx, &out_dir, w, i, &v);
            let wall = t.elapsed().as_secs_f64() * cores as f64;
            let other = sys::machine_busy().saturating_sub(busy0).as_secs_f64()
                - sys::own_and_children_cpu()
                    .saturating_sub(own0)
                    .as_secs_f64();
            r.other_cpu_pct = (other / wall * 100.0).clamp(0.0, 100.0);
            eprintln!(
                "  {:<28} {:<8} {:>6.1}s  other processes {:>3.0}% CPU  {}",
                r.variant,
                r.status,
                t.elapsed().as_secs_f64(),
                r.other_cpu_pct,
                r.notes.join("; ")
            );
            if !trace.is_empty() {
                traces.push((r.variant.clone(), trace));
            }
            results.push(r);
        }
        let rows: Vec<&VariantResult> = results.iter().filter(|r| r.workload == w.id()).collect();
        print!("{}", report::table(&rows, w.columns()));
        goals::print_ratios(w, &rows);
        for r in rows.iter().filter(|r| !r.notes.is_empty()) {
            println!("  {}: {}", r.variant, r.notes.join("; "));
        }
        if w == Workload::W6 {
            let timeout = match args.cmwq_idle_timeout_ms {
                Some(ms) => Duration::from_millis(ms),
                None => cmwq::Config::default().idle_worker_timeout,
            };
            println!(
                "  note: cmwq's idle-worker timeout is {timeout:?} against a {} ms idle period; counts are as measured",
                params.w6_idle_ms
            );
        }
        if matches!(w, Workload::W3 | Workload::W6) && !traces.is_empty() {
            write_plots(&out_dir, w, &traces);
        }
    }

    let goals = goals::goals(&results, cores);
    if !goals.is_empty() {
        println!();
        println!("== goals ==");
        for g in &goals {
            println!(
                "{} {:<4} {:<34} {:<50} {}",
                if g.met { "MET " } else { "MISS" },
                g.workload,
                g.variant,
                g.goal,
                g.measured
            );
        }
    }
    let load_end = sys::load_average();
    println!();
    println!("load average at end {load_end}");
    notes.push(format!(
        "load average (1/5/15 min) at start {load_start}, at end {load_end}"
    ));
    let output = Output {
        meta: Meta {
            date: sys::utc_now(),
            command,
            nproc: cores,
            cpu_model: sys::cpu_model(),
            load_average_start: load_start,
            load_average_end: load_end,
            reps,
            quick: args.quick,
            variant_timeout_s: args.variant_timeout,
            spin_iters_per_us: spin.iters_per_us,
            params,
            w3_lower_bound_ms: w3_lb.as_secs_f64() * 1e3,
            w4_lower_bound_ms: w4_lb.as_secs_f64() * 1e3,
            notes,
        },
        results,
        goals,
    };
    match std::fs::File::create(&args.out)
        .map_err(|e| e.to_string())
        .and_then(|f| serde_json::to_writer_pretty(f, &output).map_err(|e| e.to_string()))
    {
        Ok(()) => println!("results: {}", args.out.display()),
        Err(e) => {
            eprintln!("cannot write {}: {e}", args.out.display());
            std::process::exit(1);
        }
    }
}
