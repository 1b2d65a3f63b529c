//! Disarming a timer gives its reference to the item up at once: a cancelled, re-armed or
//! destroyed arming does not keep the item (and what its closure captured) alive until the old
//! deadline.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cmwq::{system_wq, DelayedWork, Workqueue, WqFlags};
use common::{unique, with_deadline};

const HOUR: Duration = Duration::from_secs(3600);

/// A delayed item whose closure holds a clone of `token`.
fn capturing(token: &Arc<()>) -> DelayedWork {
    let t = token.clone();
    DelayedWork::new(move |_| {
        let _ = &t;
    })
}

#[track_caller]
fn assert_released(token: &Arc<()>, what: &str) {
    assert_eq!(
        Arc::strong_count(token),
        1,
        "{what}: the timer service still holds {} item(s)",
        Arc::strong_count(token) - 1
    );
}

#[test]
fn cancel_releases_ten_thousand_cancelled_items_at_once() {
    with_deadline("arm and cancel", || {
        let token = Arc::new(());
        for _ in 0..10_000 {
            let dw = capturing(&token);
            assert!(system_wq().queue_delayed(&dw, HOUR));
            assert!(dw.cancel());
        }
        assert_released(&token, "cancel");
    });
}

#[test]
fn mod_delayed_releases_the_previous_arming() {
    with_deadline("re-arm", || {
        let token = Arc::new(());
        let dw = capturing(&token);
        assert!(!system_wq().mod_delayed(&dw, HOUR));
        for _ in 0..1_000 {
            assert!(system_wq().mod_delayed(&dw, HOUR));
        }
        assert!(dw.cancel());
        drop(dw);
        assert_released(&token, "mod_delayed, then cancel");
    });
}

#[test]
fn cancel_sync_disable_and_flush_release_the_arming() {
    with_deadline("cancel_sync, disable, flush", || {
        let token = Arc::new(());
        let dw = capturing(&token);
        assert!(system_wq().queue_delayed(&dw, HOUR));
        assert!(dw.cancel_sync());
        drop(dw);
        assert_released(&token, "cancel_sync");

        let dw = capturing(&token);
        assert!(system_wq().queue_delayed(&dw, HOUR));
        assert!(dw.work().disable());
        drop(dw);
        assert_released(&token, "disable");

        let dw = capturing(&token);
        assert!(system_wq().queue_delayed(&dw, HOUR));
        // flush fires the timer at once; the run's reference goes when the run ends.
        assert!(dw.flush());
        drop(dw);
        common::wait_for("the flushed item to be released", || {
            Arc::strong_count(&token) == 1
        });
    });
}

#[test]
fn destroy_releases_the_armed_items_of_the_queue() {
    with_deadline("destroy", || {
        let token = Arc::new(());
        let wq = Workqueue::new(&unique("trel"), WqFlags::empty(), 0).unwrap();
        let kept = capturing(&token);
        assert!(wq.queue_delayed(&kept, HOUR));
        for _ in 0..100 {
            let dw = capturing(&token);
            assert!(wq.queue_delayed(&dw, HOUR));
        }
        // An item of another queue is left alone.
        let other_token = Arc::new(());
        let other = capturing(&other_token);
        assert!(system_wq().queue_delayed(&other, HOUR));
        wq.destroy();
        assert!(!kept.is_pending());
        drop(kept);
        assert_released(&token, "destroy");
        assert!(other.is_pending());
        assert!(other.cancel());
        drop(other);
        assert_released(&other_token, "cancel of the other queue's item");
    });
}
