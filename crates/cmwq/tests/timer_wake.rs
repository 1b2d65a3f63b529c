//! The timer thread is woken only for a deadline earlier than the one it sleeps until: an
//! earlier timer still fires on time, and a timer armed after a cancelled earlier one (no
//! wake-up: the thread already wakes at the cancelled deadline) fires on time too.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use cmwq::{system_wq, DelayedWork};
use common::{with_deadline, Counter};

fn counting() -> (DelayedWork, Arc<Counter>) {
    let runs = Arc::new(Counter::new());
    let r = runs.clone();
    (DelayedWork::new(move |_| r.inc()), runs)
}

/// Waits for the timer thread to be asleep, so that it sleeps until the earliest deadline.
fn timer_thread_asleep() {
    if let Some((tid, _)) = common::threads()
        .into_iter()
        .find(|(_, name)| name == "cmwq-timer")
    {
        common::wait_thread_blocked("the timer thread to sleep", tid);
    }
}

#[test]
fn earlier_deadlines_wake_the_sleeping_timer_thread() {
    with_deadline("timers fire on time", || {
        let (late, late_runs) = counting();
        assert!(system_wq().queue_delayed(&late, Duration::from_secs(3600)));
        timer_thread_asleep();

        // Earlier than the thread's wake-up: it must be woken.
        let (soon, soon_runs) = counting();
        let armed = Instant::now();
        assert!(system_wq().queue_delayed(&soon, Duration::from_millis(20)));
        soon_runs.wait_for(1);
        assert!(armed.elapsed() < Duration::from_secs(5), "fired late");
        timer_thread_asleep();

        // The thread now sleeps until `first`'s deadline; cancel it and arm a later one: no
        // wake-up is needed, the thread wakes at the cancelled deadline and sleeps again.
        let (first, first_runs) = counting();
        assert!(system_wq().queue_delayed(&first, Duration::from_millis(30)));
        timer_thread_asleep();
        assert!(first.cancel());
        let (second, second_runs) = counting();
        let armed = Instant::now();
        assert!(system_wq().queue_delayed(&second, Duration::from_millis(60)));
        second_runs.wait_for(1);
        let took = armed.elapsed();
        assert!(took >= Duration::from_millis(60), "fired early: {took:?}");
        assert!(took < Duration::from_secs(5), "fired late: {took:?}");
        assert_eq!(first_runs.get(), 0);

        assert_eq!(late_runs.get(), 0);
        assert!(late.cancel());
    });
}
