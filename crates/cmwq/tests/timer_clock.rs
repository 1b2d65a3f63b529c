//! The test clock resumes exactly where it was paused: real time spent paused (beyond what the
//! test advanced) is not added to the timer clock when the `TestClock` is dropped.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cmwq::time::pause;
use cmwq::{system_wq, DelayedWork};
use common::{with_deadline, Counter};

#[test]
fn virtual_time_resumes_where_it_was_paused() {
    let clock = pause();
    let paused_at = clock.now();
    clock.advance(Duration::from_millis(5));
    // Stay paused much longer in real time than the clock advanced.
    std::thread::sleep(Duration::from_millis(300));
    let reached = clock.now();
    assert_eq!(reached - paused_at, Duration::from_millis(5));
    drop(clock);
    let real_before = Instant::now();
    let clock = pause();
    let resumed = clock.now();
    let real_elapsed = real_before.elapsed();
    drop(clock);
    assert!(resumed >= reached, "time went backwards");
    assert!(
        resumed - reached <= real_elapsed + Duration::from_millis(50),
        "the clock jumped by {:?} while resuming (real time between: {real_elapsed:?})",
        resumed - reached
    );
}

#[test]
fn a_timer_armed_while_paused_fires_its_delay_after_resuming() {
    let runs = Arc::new(Counter::new());
    let r = runs.clone();
    let dw = DelayedWork::new(move |_| r.inc());
    let clock = pause();
    assert!(system_wq().queue_delayed(&dw, Duration::from_millis(400)));
    // Longer than the delay, in real time, without advancing.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(runs.get(), 0);
    let resumed = Instant::now();
    drop(clock);
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(
        runs.get(),
        0,
        "fired {:?} after resuming, well before its 400 ms",
        resumed.elapsed()
    );
    with_deadline("the timer fires once its delay has passed", move || {
        runs.wait_for(1)
    });
    assert!(resumed.elapsed() >= Duration::from_millis(400));
}
