//! Issue 11, delayed work: defect 4 (a delay of `Duration::MAX`, or past the `Instant` range,
//! panics with `PENDING` held, after which cancel and friends spin forever), defect 6
//! (cancelled, re-armed or destroyed delayed items stay referenced by the timer heap until
//! their old deadline), and from 9: the test clock jumping forward on resume, and delayed
//! work armed without a CPU running on the timer thread's CPU instead of the arming one.
//!
//! Each scenario runs in its own child process (`harden_util::isolated`): a spinning cancel
//! is left behind there, and the test clock is process-wide.

mod common;
mod harden_util;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmwq::{current_worker, online_cpus, DelayedWork, Workqueue, WqFlags};
use common::{unique, wait_until, Latch};
use harden_util::{assert_no_failures, isolated, must_return, pin_to, within, PROMPT};

const HOUR: Duration = Duration::from_secs(3600);

/// Delays that mean "never" and overflow `Instant` arithmetic.
fn huge_delays() -> [Duration; 3] {
    [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_secs(i64::MAX as u64),
    ]
}

fn percpu(prefix: &str) -> Workqueue {
    Workqueue::new(&unique(prefix), WqFlags::empty(), 0).unwrap()
}

/// A delayed item that opens the returned latch when it runs.
fn signalling() -> (DelayedWork, Arc<Latch>) {
    let ran = Arc::new(Latch::new());
    let r = ran.clone();
    (DelayedWork::new(move |_| r.open()), ran)
}

// ===== defect 4 =====

/// How an item was armed with a huge delay.
#[derive(Clone, Copy, Debug)]
enum Arm {
    QueueDelayed,
    QueueDelayedOn,
    ModDelayedIdle,
    ModDelayedArmed,
    ModDelayedOn,
}

/// Arms `dw` on `wq` with `delay` the way `how` says; a panic or a hang becomes a failure
/// line.
fn arm_huge(
    failures: &mut Vec<String>,
    wq: &Workqueue,
    dw: &DelayedWork,
    how: Arm,
    delay: Duration,
) {
    let cpu = online_cpus()[0];
    let (w, d) = (wq.clone(), dw.clone());
    let r = within(PROMPT, move || match how {
        Arm::QueueDelayed => w.queue_delayed(&d, delay),
        Arm::QueueDelayedOn => w.queue_delayed_on(cpu, &d, delay).unwrap_or(false),
        Arm::ModDelayedIdle => w.mod_delayed(&d, delay),
        Arm::ModDelayedArmed => {
            w.queue_delayed(&d, HOUR);
            w.mod_delayed(&d, delay)
        }
        Arm::ModDelayedOn => w.mod_delayed_on(cpu, &d, delay).unwrap_or(false),
    });
    if let Err(e) = r {
        failures.push(format!("defect 4: {how:?} with a delay of {delay:?} {e}"));
    }
}

/// Arms an item with a huge delay, then calls `follow_up` on it: it must return within
/// [`PROMPT`] (today it spins in `grab_pending` forever because the arming panicked with
/// `PENDING` held).
fn huge_delay_then<T: Send + std::fmt::Debug + 'static>(
    how: Arm,
    what: &str,
    follow_up: fn(&Workqueue, &DelayedWork) -> T,
) {
    let mut failures = Vec::new();
    for delay in huge_delays() {
        let wq = percpu("hy-huge");
        let (dw, ran) = signalling();
        arm_huge(&mut failures, &wq, &dw, how, delay);
        let (w, d) = (wq.clone(), dw.clone());
        match within(PROMPT, move || follow_up(&w, &d)) {
            Ok(_) => {}
            Err(e) => failures.push(format!(
                "defect 4: {what} after {how:?} with a delay of {delay:?} {e} (the arming \
                 panicked with PENDING held and the item stays pending forever)"
            )),
        }
        if ran.is_open() {
            failures.push(format!(
                "{how:?} with a delay of {delay:?}: the item ran (a huge delay means never)"
            ));
        }
        if !failures.is_empty() {
            break; // a spinning helper is left behind: do not pile up more
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn queue_delayed_with_duration_max_does_not_panic_and_stays_pending() {
    isolated(
        "queue_delayed_with_duration_max_does_not_panic_and_stays_pending",
        || {
            let mut failures = Vec::new();
            for delay in huge_delays() {
                let wq = percpu("hy-max");
                let (dw, ran) = signalling();
                let (w, d) = (wq.clone(), dw.clone());
                match within(PROMPT, move || w.queue_delayed(&d, delay)) {
                    Ok(queued) => {
                        std::thread::sleep(Duration::from_millis(100));
                        if ran.is_open() {
                            failures.push(format!("{delay:?}: the item ran"));
                        }
                        if queued != dw.is_pending() {
                            failures.push(format!(
                                "{delay:?}: queue_delayed returned {queued} but is_pending is \
                                 {}",
                                dw.is_pending()
                            ));
                        }
                        let d = dw.clone();
                        match within(PROMPT, move || d.cancel()) {
                            Ok(was) if was == queued => {}
                            Ok(was) => failures.push(format!(
                                "{delay:?}: cancel returned {was}, queue_delayed {queued}"
                            )),
                            Err(e) => failures.push(format!("defect 4: {delay:?}: cancel {e}")),
                        }
                    }
                    Err(e) => failures.push(format!("defect 4: queue_delayed({delay:?}) {e}")),
                }
            }
            assert_no_failures(&failures);
        },
    );
}

#[test]
fn cancel_after_queue_delayed_with_duration_max_returns() {
    isolated(
        "cancel_after_queue_delayed_with_duration_max_returns",
        || huge_delay_then(Arm::QueueDelayed, "cancel()", |_, dw| dw.cancel()),
    );
}

#[test]
fn cancel_sync_after_queue_delayed_with_duration_max_returns() {
    isolated(
        "cancel_sync_after_queue_delayed_with_duration_max_returns",
        || huge_delay_then(Arm::QueueDelayed, "cancel_sync()", |_, dw| dw.cancel_sync()),
    );
}

#[test]
fn disable_after_queue_delayed_with_duration_max_returns() {
    isolated(
        "disable_after_queue_delayed_with_duration_max_returns",
        || {
            huge_delay_then(Arm::QueueDelayed, "disable()", |_, dw| {
                let was = dw.work().disable();
                dw.work().enable();
                was
            })
        },
    );
}

#[test]
fn mod_delayed_short_after_queue_delayed_with_duration_max_fires() {
    isolated(
        "mod_delayed_short_after_queue_delayed_with_duration_max_fires",
        || {
            let mut failures = Vec::new();
            let wq = percpu("hy-max-mod");
            let (dw, ran) = signalling();
            arm_huge(&mut failures, &wq, &dw, Arm::QueueDelayed, Duration::MAX);
            let (w, d) = (wq.clone(), dw.clone());
            match within(PROMPT, move || w.mod_delayed(&d, Duration::from_millis(10))) {
                Ok(_) => {
                    if !ran.wait_timeout(PROMPT) {
                        failures.push(
                            "mod_delayed(10 ms) after queue_delayed(MAX): the item did not run"
                                .into(),
                        );
                    }
                }
                Err(e) => failures.push(format!(
                    "defect 4: mod_delayed(10 ms) after queue_delayed(Duration::MAX) {e}"
                )),
            }
            assert_no_failures(&failures);
        },
    );
}

#[test]
fn cancel_after_queue_delayed_on_with_duration_max_returns() {
    isolated(
        "cancel_after_queue_delayed_on_with_duration_max_returns",
        || huge_delay_then(Arm::QueueDelayedOn, "cancel()", |_, dw| dw.cancel()),
    );
}

#[test]
fn cancel_after_mod_delayed_of_an_idle_item_with_duration_max_returns() {
    isolated(
        "cancel_after_mod_delayed_of_an_idle_item_with_duration_max_returns",
        || huge_delay_then(Arm::ModDelayedIdle, "cancel()", |_, dw| dw.cancel()),
    );
}

#[test]
fn cancel_sync_after_mod_delayed_of_an_armed_item_with_duration_max_returns() {
    isolated(
        "cancel_sync_after_mod_delayed_of_an_armed_item_with_duration_max_returns",
        || {
            huge_delay_then(Arm::ModDelayedArmed, "cancel_sync()", |_, dw| {
                dw.cancel_sync()
            })
        },
    );
}

#[test]
fn mod_delayed_after_mod_delayed_on_with_duration_max_returns() {
    isolated(
        "mod_delayed_after_mod_delayed_on_with_duration_max_returns",
        || {
            huge_delay_then(Arm::ModDelayedOn, "mod_delayed(1 h)", |wq, dw| {
                let was = wq.mod_delayed(dw, HOUR);
                dw.cancel();
                was
            })
        },
    );
}

// ===== defect 6 =====

/// Waits until `token` has only the test's own reference left.
fn freed(token: &Arc<()>, limit: Duration) -> bool {
    wait_until(limit, || Arc::strong_count(token) == 1)
}

#[test]
fn cancelled_delayed_items_are_freed_promptly() {
    isolated("cancelled_delayed_items_are_freed_promptly", || {
        let wq = percpu("hy-free");
        let token = Arc::new(());
        for i in 0..10_000 {
            let t = token.clone();
            let dw = DelayedWork::new(move |_| {
                let _ = &t;
            });
            assert!(wq.queue_delayed(&dw, HOUR));
            let was = if i % 2 == 0 {
                dw.cancel()
            } else {
                dw.cancel_sync()
            };
            assert!(was, "item {i} was not pending when cancelled");
        }
        assert!(
            freed(&token, PROMPT),
            "defect 6: {} of 10,000 delayed items armed for an hour and cancelled (half with \
             cancel, half with cancel_sync), their handles dropped, are still alive {PROMPT:?} \
             later: the timer heap keeps them (and what they captured) until their old deadline",
            Arc::strong_count(&token) - 1
        );
    });
}

#[test]
fn debounced_item_is_freed_after_cancel() {
    isolated("debounced_item_is_freed_after_cancel", || {
        let wq = percpu("hy-debounce");
        let token = Arc::new(());
        let t = token.clone();
        let dw = DelayedWork::new(move |_| {
            let _ = &t;
        });
        // Debouncing: re-arm the same item many times.
        for _ in 0..10_000 {
            wq.mod_delayed(&dw, HOUR);
        }
        assert!(dw.cancel());
        drop(dw);
        assert!(
            freed(&token, PROMPT),
            "defect 6: a delayed item re-armed 10,000 times with mod_delayed(1 h), then \
             cancelled and its handle dropped, is still alive {PROMPT:?} later (stale timer \
             entries keep it until their old deadlines)"
        );
    });
}

#[test]
fn destroying_a_queue_frees_its_armed_delayed_items() {
    isolated("destroying_a_queue_frees_its_armed_delayed_items", || {
        let wq = percpu("hy-destroy");
        let token = Arc::new(());
        let mut items = Vec::new();
        for _ in 0..1000 {
            let t = token.clone();
            let dw = DelayedWork::new(move |_| {
                let _ = &t;
            });
            assert!(wq.queue_delayed(&dw, HOUR));
            items.push(dw);
        }
        must_return("destroy with 1,000 armed items", PROMPT, move || {
            wq.destroy()
        });
        assert!(
            items.iter().all(|dw| !dw.is_pending()),
            "destroy left armed items pending"
        );
        drop(items);
        assert!(
            freed(&token, PROMPT),
            "defect 6: {} of 1,000 delayed items armed for an hour on a queue that was then \
             destroyed (handles dropped) are still alive {PROMPT:?} later",
            Arc::strong_count(&token) - 1
        );
    });
}

// ===== defect 9: the test clock =====

#[test]
fn resuming_the_test_clock_does_not_jump_forward() {
    isolated("resuming_the_test_clock_does_not_jump_forward", || {
        let wq = percpu("hy-clock");
        let (dw, ran) = signalling();
        let clock = cmwq::time::pause();
        let paused_at = clock.now();
        assert!(wq.queue_delayed(&dw, Duration::from_secs(1)));
        // Stay paused for longer in real time than the clock advances (here: not at all).
        // The sleep is the point of the test, not synchronisation.
        std::thread::sleep(Duration::from_millis(1200));
        assert!(!ran.is_open(), "the item fired while the clock was paused");
        assert_eq!(clock.now(), paused_at, "the paused clock moved");
        drop(clock);
        let resumed = Instant::now();

        // Virtual time must continue from where it was paused.
        let clock2 = cmwq::time::pause();
        let jump = clock2.now().saturating_duration_since(paused_at);
        drop(clock2);
        let mut failures = Vec::new();
        if jump > Duration::from_millis(300) {
            failures.push(format!(
                "defect 9: the test clock jumped forward by {jump:?} on resume (it stayed \
                 paused 1.2 s in real time without advancing)"
            ));
        }
        // The item armed for 1 s of virtual time must not fire right after the resume.
        let fired = ran.wait_timeout(Duration::from_secs(5));
        let after = resumed.elapsed();
        if !fired {
            failures.push("the item armed for 1 s did not fire within 5 s of resuming".into());
        } else if after < Duration::from_millis(500) {
            failures.push(format!(
                "defect 9: an item armed for 1 s while paused fired {after:?} after resuming: \
                 the clock jumped over the time spent paused"
            ));
        }
        assert_no_failures(&failures);
    });
}

// ===== defect 9: the CPU of delayed work armed without one =====

#[test]
fn delayed_work_armed_without_a_cpu_runs_on_the_arming_cpu() {
    isolated(
        "delayed_work_armed_without_a_cpu_runs_on_the_arming_cpu",
        || {
            let cpus = online_cpus();
            if cpus.len() < 2 {
                eprintln!("only one CPU: nothing to tell apart");
                return;
            }
            let wq = percpu("hy-cpu");
            // Start the timer service from a thread pinned to the first CPU (a new thread
            // inherits its creator's affinity), then arm from threads pinned elsewhere.
            let (first, first_ran) = signalling();
            let (w, d) = (wq.clone(), first.clone());
            let timer_cpu = cpus[0];
            must_return(
                "arm from a thread pinned to the first CPU",
                PROMPT,
                move || {
                    pin_to(timer_cpu);
                    assert!(w.queue_delayed(&d, Duration::from_millis(1)));
                },
            );
            assert!(first_ran.wait_timeout(PROMPT), "the first item did not run");

            let mut failures = Vec::new();
            for &cpu in &cpus {
                for round in 0..3 {
                    let seen = Arc::new(Mutex::new(None));
                    let ran = Arc::new(Latch::new());
                    let dw = {
                        let (seen, ran) = (seen.clone(), ran.clone());
                        DelayedWork::new(move |_| {
                            *seen.lock().unwrap() = Some(current_worker().and_then(|w| w.cpu));
                            ran.open();
                        })
                    };
                    let (w, d) = (wq.clone(), dw.clone());
                    must_return("arm from a pinned thread", PROMPT, move || {
                        pin_to(cpu);
                        assert!(w.queue_delayed(&d, Duration::from_millis(20)));
                    });
                    assert!(ran.wait_timeout(PROMPT), "the item did not run");
                    let got = *seen.lock().unwrap();
                    if got != Some(Some(cpu)) {
                        failures.push(format!(
                            "defect 9: round {round}: delayed work armed without a CPU on a \
                             per-CPU queue from a thread pinned to CPU {cpu} ran on {got:?} \
                             (expected Some(Some({cpu})), the arming CPU; it runs where the \
                             timer thread is)"
                        ));
                    }
                }
            }
            assert_no_failures(&failures);
        },
    );
}
