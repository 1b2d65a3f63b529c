//! The watchdog and the run: starting the storm threads, collecting failures and hints.

use super::*;

// ===== the watchdog =====

pub(super) fn op_name(i: usize) -> String {
    ALL_OPS
        .get(i)
        .map_or_else(|| format!("op#{i}"), |op| format!("{op:?}"))
}

/// Waits for `handles`; returns descriptions of stuck ops (an op running longer than `stall`,
/// or, after a failure, still running after the grace period).
pub(super) fn watch(
    w: &World,
    handles: &[JoinHandle<()>],
    tids: &[usize],
    stall: Duration,
) -> Vec<String> {
    let sh = &w.sh;
    let mut last_panics = 0;
    loop {
        if handles.iter().all(JoinHandle::is_finished) {
            return Vec::new();
        }
        std::thread::sleep(Duration::from_millis(20));
        let panics = lock(&ENGINE_PANICS).len();
        if panics > last_panics {
            last_panics = panics;
            sh.stop.store(true, SeqCst);
            let _ = sh
                .first_failure_ms
                .compare_exchange(0, sh.ms() + 1, SeqCst, SeqCst);
        }
        let now = sh.ms() + 1;
        let first = sh.first_failure_ms.load(SeqCst);
        let grace_over = first != 0 && now > first + GRACE.as_millis() as u64;
        let mut stuck = Vec::new();
        for &t in tids {
            let slot = &w.slots[t];
            let since = slot.since.load(SeqCst);
            if since == 0 {
                continue;
            }
            let held = Duration::from_millis(now.saturating_sub(since));
            if held > stall || grace_over {
                let actor_desc = {
                    let arg = slot.arg.load(SeqCst);
                    if arg < w.items.len() {
                        format!("item {}", w.items[arg].st.name)
                    } else if (10_000..10_100).contains(&arg) {
                        format!("queue {}", sh.queues[arg - 10_000].name)
                    } else if arg >= 20_000 && arg != usize::MAX {
                        format!("spare queue #{}", arg - 20_000)
                    } else {
                        "-".into()
                    }
                };
                stuck.push(format!(
                    "thread {t}: {} on {actor_desc} has not returned for {held:?}",
                    op_name(slot.op.load(SeqCst))
                ));
            }
        }
        if !stuck.is_empty() {
            return stuck;
        }
        if grace_over && handles.iter().any(|h| !h.is_finished()) {
            return vec!["a storm thread did not stop after the first failure".into()];
        }
    }
}

// ===== the run =====

pub(super) fn hint_for(line: &str) -> &'static str {
    if line.contains("nr_active <= ") {
        " => issue 11 defect 3: lowering max_active below the running items trips a debug \
         assertion that kills a worker"
    } else if line.contains("pwq slot used after release") {
        " => issue 11 defect 5: set_max_active through a leftover handle after destroy panics"
    } else if line.contains("DelayedMax") || line.contains("overflow when adding") {
        " => issue 11 defect 4: Duration::MAX delays panic with PENDING held"
    } else if line.contains("still pending") && line.starts_with("[destroy]") {
        " => not one of issue 11's numbered defects (its 'audit every path that takes PENDING'): \
         destroy's cancel_for_wq snapshots the timer heap, so an entry that fire_due has popped \
         but not yet fired is missed and destroy returns while the timer thread still owns \
         PENDING (it then refuses and drops the item)"
    } else if line.starts_with("[leak]") {
        " => issue 11 defect 6: cancelled or re-armed delayed items stay referenced until their \
         old deadline"
    } else {
        ""
    }
}

pub(super) struct Outcome {
    failures: Vec<String>,
    summary: String,
}

pub(super) fn run_storm(label: &str, total_ops: u64) {
    init();
    let _serial = lock(&SERIAL);
    let seed = seed_from_env("CMWQ_STORM_SEED");
    let threads = env_u64("CMWQ_STORM_THREADS").unwrap_or(4).max(1) as usize;
    let stall = Duration::from_secs(env_u64("CMWQ_STORM_STALL_SECS").unwrap_or(30));
    let skip = Skip::from_env();
    let skip_env = std::env::var("CMWQ_STORM_SKIP").unwrap_or_default();
    let replay = format!(
        "CMWQ_STORM_SEED={seed}{}",
        if skip_env.is_empty() {
            String::new()
        } else {
            format!(" CMWQ_STORM_SKIP={skip_env}")
        }
    );
    eprintln!(
        "storm[{label}]: seed {seed}, {total_ops} ops on {threads} threads, skip {skip:?} \
         (replay: {replay})"
    );
    let started = Instant::now();
    let panics_before = lock(&ENGINE_PANICS).len();
    let census_before = census();
    let outcome = storm_body(seed, skip, threads, stall, total_ops, panics_before);
    let mut failures = outcome.failures;
    if failures.is_empty() && !skip.floor {
        let ok = wait_until(Duration::from_secs(20), || census().at_floor());
        if !ok {
            failures.push(format!(
                "[threads] kworker threads did not fall back to their floor (at most 2 per \
                 per-CPU pool, no unbound pool or rescuer left) within 20 s of the last destroy: \
                 {} (before the storm: {census_before})",
                census()
            ));
        }
    }
    eprintln!(
        "storm[{label}]: {} in {:?}; threads after: {}",
        outcome.summary,
        started.elapsed(),
        census()
    );
    if !failures.is_empty() {
        let mut msg = format!(
            "storm[{label}] FAILED, seed {seed} (replay: {replay}); {} failure(s):\n",
            failures.len()
        );
        for f in &failures {
            let _ = writeln!(msg, "  - {f}{}", hint_for(f));
            // An op stuck on an item whose earlier op panicked in the calling thread.
            if f.starts_with("[stuck]") {
                let wedged = failures.iter().any(|p| {
                    p.starts_with("[op-panic]")
                        && f.split(" on item ")
                            .nth(1)
                            .and_then(|rest| rest.split(' ').next())
                            .is_some_and(|item| p.contains(&format!(" on item {item} ")))
                });
                if wedged {
                    let _ = writeln!(
                        msg,
                        "      (its item was left PENDING by the panic above: later cancels, \
                         disables and mod_delayed spin in grab_pending; issue 11 defect 4)"
                    );
                }
            }
        }
        let _ = write!(msg, "{}", outcome.summary);
        panic!("{msg}");
    }
}

pub(super) fn storm_body(
    seed: u64,
    skip: Skip,
    threads: usize,
    stall: Duration,
    total_ops: u64,
    panics_before: usize,
) -> Outcome {
    let sh = Arc::new(Shared {
        seed,
        skip,
        t0: Instant::now(),
        stamp: AtomicU64::new(1),
        queues: perm_queues(seed),
        stop: AtomicBool::new(false),
        failures: Mutex::new(Vec::new()),
        more_failures: Mutex::new(std::collections::BTreeMap::new()),
        first_failure_ms: AtomicU64::new(0),
        thrown: AtomicU64::new(0),
        stats: Stats::default(),
    });
    REPORTED.store(0, SeqCst);
    let world = Arc::new(build_world(&sh, threads));
    let per_thread = total_ops.div_ceil(threads as u64);
    let handles: Vec<JoinHandle<()>> = (0..threads)
        .map(|t| {
            let w = world.clone();
            std::thread::Builder::new()
                .name(format!("storm-{t}"))
                .spawn(move || Actor::new(&w, t).storm(per_thread))
                .expect("spawn storm thread")
        })
        .collect();
    let tids: Vec<usize> = (0..threads).collect();
    let mut stuck = watch(&world, &handles, &tids, stall);
    let storm_time = sh.t0.elapsed();
    let mut weak: Vec<(String, Weak<ItemSt>)> = Vec::new();
    let mut quiesced = false;
    if stuck.is_empty() {
        for h in handles {
            let _ = h.join();
        }
        // Quiescence and teardown on a helper thread, watched like the storm.
        let w = world.clone();
        let q = std::thread::Builder::new()
            .name("storm-quiesce".into())
            .spawn(move || {
                let mut a = Actor::new(&w, w.slots.len() - 1);
                a.quiesce();
                drop(a.teardown());
                // The destroys may have dropped timers (accounted for there): the books
                // must still balance.
                if !a.sh.failed() {
                    let ids: Vec<usize> = (0..a.w.items.len()).collect();
                    a.check_accounting(&ids);
                }
            })
            .expect("spawn quiescence thread");
        let qh = [q];
        stuck = watch(&world, &qh, &[threads], stall);
        if stuck.is_empty() {
            let [q] = qh;
            let _ = q.join();
            quiesced = true;
        }
    }
    for s in &stuck {
        sh.fail("stuck", s.clone());
    }
    let engine: Vec<String> = lock(&ENGINE_PANICS)[panics_before..].to_vec();
    for e in &engine {
        sh.fail("engine-panic", e.clone());
    }
    let st = &sh.stats;
    let mut summary = format!(
        "{} ops in {storm_time:?}; {} flush checks, {} max_active checks, {} cancel_sync \
         checks, {} spare destroys, {} leftover ops, {} set_max_active, {} outages, {} MAX \
         delays, {} 1h delays, {} deliberate panics",
        st.ops.load(SeqCst),
        st.flush_checks.load(SeqCst),
        st.conc_checks.load(SeqCst),
        st.sync_checks.load(SeqCst),
        st.destroys.load(SeqCst),
        st.leftover_ops.load(SeqCst),
        st.sma.load(SeqCst),
        st.outages.load(SeqCst),
        st.dmax.load(SeqCst),
        st.long.load(SeqCst),
        sh.thrown.load(SeqCst),
    );
    let _ = write!(summary, "; most running at once per queue:");
    for q in &sh.queues {
        let _ = write!(summary, " {}={}", q.name, q.max_conc.load(SeqCst));
    }
    let (acc, runs, cancels): (u64, u64, u64) = world.items.iter().fold((0, 0, 0), |t, it| {
        (
            t.0 + it.st.accepted.load(SeqCst),
            t.1 + it.st.runs.load(SeqCst),
            t.2 + it.st.cancels.load(SeqCst),
        )
    });
    let _ = write!(summary, "; {acc} accepted, {runs} runs, {cancels} cancels");
    if quiesced {
        // Drop every handle: the engine must not keep any item alive.
        // Items wedged by a panicking op are reported already.
        for it in world.items.iter().filter(|it| !it.st.wedged.load(SeqCst)) {
            weak.push((it.st.name.clone(), Arc::downgrade(&it.st)));
        }
        drop(world);
        if !skip.leak {
            let freed = wait_until(Duration::from_secs(3), || {
                weak.iter().all(|(_, w)| w.upgrade().is_none())
            });
            if !freed {
                let alive: Vec<&str> = weak
                    .iter()
                    .filter(|(_, w)| w.upgrade().is_some())
                    .map(|(n, _)| n.as_str())
                    .collect();
                sh.fail(
                    "leak",
                    format!(
                        "items still referenced 3 s after they were cancelled, their queues \
                         destroyed and every handle dropped: {alive:?}"
                    ),
                );
            }
        }
    }
    let mut failures = lock(&sh.failures).clone();
    for (what, n) in lock(&sh.more_failures).iter() {
        failures.push(format!("[{what}] ... and {n} more of this kind"));
    }
    Outcome { failures, summary }
}
