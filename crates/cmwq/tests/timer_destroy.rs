//! Destroying a workqueue touches only the timers armed for it: other queues' armed items are
//! neither cloned nor looked at (formerly every destroy cloned the whole timer heap, twice per
//! drain round, and took every item's timer lock).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cmwq::{system_wq, DelayedWork, DelayedWorkField, DelayedWorkItem, Workqueue, WqFlags};
use common::{unique, with_deadline};

/// A delayed item that counts how often the engine asks for its field.
struct Watched {
    field: DelayedWorkField,
    asked: AtomicUsize,
}

impl DelayedWorkItem for Watched {
    fn delayed_work_field(&self) -> &DelayedWorkField {
        self.asked.fetch_add(1, Ordering::Relaxed);
        &self.field
    }

    fn run(&self, _dw: &DelayedWork) {}
}

#[test]
fn destroy_does_not_touch_other_queues_timers() {
    with_deadline("destroy with other timers armed", || {
        let items: Vec<Arc<Watched>> = (0..1_000)
            .map(|_| {
                Arc::new(Watched {
                    field: DelayedWorkField::new(),
                    asked: AtomicUsize::new(0),
                })
            })
            .collect();
        let handles: Vec<DelayedWork> = items
            .iter()
            .map(|it| DelayedWork::from_arc(it.clone()))
            .collect();
        for dw in &handles {
            assert!(system_wq().queue_delayed(dw, Duration::from_secs(3600)));
        }
        let asked = |items: &[Arc<Watched>]| -> Vec<usize> {
            items
                .iter()
                .map(|it| it.asked.load(Ordering::Relaxed))
                .collect()
        };
        let before = asked(&items);
        for _ in 0..3 {
            let wq = Workqueue::new(&unique("tdestroy"), WqFlags::empty(), 0).unwrap();
            let own = DelayedWork::new(|_| {});
            assert!(wq.queue_delayed(&own, Duration::from_secs(3600)));
            wq.destroy();
            assert!(
                !own.is_pending(),
                "the destroyed queue's own timer is disarmed"
            );
        }
        assert_eq!(
            asked(&items),
            before,
            "destroy looked at the timers of other queues"
        );
        // Their timers are untouched: still armed, and cancelled normally.
        for dw in &handles {
            assert!(dw.is_pending());
            assert!(dw.cancel());
        }
    });
}
