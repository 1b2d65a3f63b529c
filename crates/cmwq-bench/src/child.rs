//! Child-process plumbing: each variant runs in a fresh process of this binary.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::report::VariantResult;
use crate::{run_variant, variants, Args, Ctx, Variant, Workload, ALL};

#[derive(Serialize, Deserialize)]
struct ChildOut {
    result: VariantResult,
    trace: Vec<(f64, f64)>,
}

/// Child mode: run variant `spec` (`W3:2`) of a workload, write the result, exit.
/// Every variant runs in a fresh process so that no pool's threads (cmwq's global worker
/// pools, blocking's global pool) outlive it into the next measurement, and a stuck or
/// crashing variant cannot take the whole run down.
pub(crate) fn run_child(ctx: &Ctx, spec: &str, out: Option<&Path>) -> ! {
    let parsed = spec.split_once(':').and_then(|(w, i)| {
        let w = ALL.into_iter().find(|x| x.id() == w)?;
        let v = variants(w).into_iter().nth(i.parse().ok()?)?;
        Some((w, v))
    });
    let Some((w, v)) = parsed else {
        eprintln!("bad --child {spec}");
        std::process::exit(2);
    };
    let (result, trace) = run_variant(ctx, w, &v);
    let json = serde_json::to_string(&ChildOut { result, trace }).expect("serialize");
    match out {
        Some(p) => std::fs::write(p, json).expect("write child result"),
        None => println!("{json}"),
    }
    // Exit at once: a pool that timed out may still hold stuck threads.
    std::process::exit(0);
}

/// Runs one variant in a child process and collects its result; kills it if it overruns.
pub(crate) fn spawn_child(
    args: &Args,
    ctx: &Ctx,
    dir: &Path,
    w: Workload,
    index: usize,
    v: &Variant,
) -> (VariantResult, Vec<(f64, f64)>) {
    let failed = |status: &str, note: String| VariantResult {
        workload: w.id().into(),
        variant: v.label.clone(),
        pool: v.kind.label().into(),
        status: status.into(),
        reps_done: 0,
        metrics: vec![],
        notes: vec![note],
        other_cpu_pct: 0.0,
        threads_trace: None,
    };
    let out = dir.join(format!(".child-{}-{index}.json", w.id()));
    let _ = std::fs::remove_file(&out);
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return (failed("error", format!("current_exe: {e}")), vec![]),
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--child")
        .arg(format!("{}:{index}", w.id()))
        .arg("--child-out")
        .arg(&out)
        .arg("--reps")
        .arg(ctx.reps.to_string())
        .arg("--variant-timeout")
        .arg(ctx.timeout.as_secs().to_string())
        .arg("--w6-idle-ms")
        .arg(ctx.params.w6_idle_ms.to_string())
        .arg("--spin-iters-per-us")
        .arg(ctx.spin.iters_per_us.to_string())
        .stdin(std::process::Stdio::null());
    if args.quick {
        cmd.arg("--quick");
    }
    if let Some(ms) = args.cmwq_idle_timeout_ms {
        cmd.arg("--cmwq-idle-timeout-ms").arg(ms.to_string());
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return (failed("error", format!("spawn: {e}")), vec![]),
    };
    // The child guards each repetition itself; this is the backstop for a hung process.
    let limit = ctx.timeout * 2 + Duration::from_secs(60);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return (failed("error", format!("wait: {e}")), vec![]),
        }
    };
    let Some(status) = status else {
        return (
            failed(
                "timeout",
                format!("child process killed after {}s", limit.as_secs()),
            ),
            vec![],
        );
    };
    let parsed = std::fs::read_to_string(&out)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str::<ChildOut>(&s).map_err(|e| e.to_string()));
    let _ = std::fs::remove_file(&out);
    match parsed {
        Ok(mut c) => {
            if !status.success() {
                c.result
                    .notes
                    .push(format!("child process exited with {status}"));
            }
            (c.result, c.trace)
        }
        Err(e) => (
            failed(
                "error",
                format!("child process exited with {status} and no result ({e}); see stderr"),
            ),
            vec![],
        ),
    }
}
