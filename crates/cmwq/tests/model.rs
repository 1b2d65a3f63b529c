//! Model-based test: random sequences of queue / queue_on / cancel / flush / set_max_active over
//! a few items and workqueues; every successful queue that was not cancelled runs exactly once,
//! and runs of one item never overlap.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use cmwq::{online_cpus, Error, Work, Workqueue, WqFlags};
use common::{unique, with_deadline, OverlapDetector};
use proptest::prelude::*;

const ITEMS: usize = 3;
const WQS: usize = 3; // 0: bound, 1: unbound, 2: ordered

#[derive(Clone, Debug)]
enum Op {
    Queue { wq: usize, item: usize },
    QueueOn { wq: usize, cpu: usize, item: usize },
    Cancel { item: usize },
    FlushItem { item: usize },
    FlushWq { wq: usize },
    SetMaxActive { wq: usize, n: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..WQS, 0..ITEMS).prop_map(|(wq, item)| Op::Queue { wq, item }),
        3 => (0..WQS, 0..64usize, 0..ITEMS)
            .prop_map(|(wq, cpu, item)| Op::QueueOn { wq, cpu, item }),
        2 => (0..ITEMS).prop_map(|item| Op::Cancel { item }),
        1 => (0..ITEMS).prop_map(|item| Op::FlushItem { item }),
        1 => (0..WQS).prop_map(|wq| Op::FlushWq { wq }),
        1 => (0..WQS, 1..=4usize).prop_map(|(wq, n)| Op::SetMaxActive { wq, n }),
    ]
}

struct Item {
    work: Work,
    runs: Arc<AtomicUsize>,
    det: Arc<OverlapDetector>,
}

fn item(spin: u32) -> Item {
    let runs = Arc::new(AtomicUsize::new(0));
    let det = Arc::new(OverlapDetector::new());
    let work = {
        let (runs, det) = (runs.clone(), det.clone());
        Work::new(move |_| {
            let _g = det.enter();
            for _ in 0..spin {
                std::hint::spin_loop();
            }
            runs.fetch_add(1, Ordering::SeqCst);
        })
    };
    Item { work, runs, det }
}

/// Per item: successful queues minus successful cancels, plus the workqueues it was queued to
/// since it was last known idle.
#[derive(Default, Clone)]
struct Model {
    expected: usize,
    unsynced_wqs: BTreeSet<usize>,
    all_wqs: BTreeSet<usize>,
}

fn run_case(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let cpus = online_cpus();
    let wqs = [
        Workqueue::new(&unique("model-b"), WqFlags::empty(), 2).unwrap(),
        Workqueue::new(&unique("model-u"), WqFlags::UNBOUND, 2).unwrap(),
        Workqueue::ordered(&unique("model-o"), WqFlags::empty()).unwrap(),
    ];
    let items: Vec<Item> = (0..ITEMS).map(|i| item(200 * i as u32)).collect();
    let mut model = vec![Model::default(); ITEMS];

    let check_idle_item = |i: usize, model: &mut Vec<Model>, when: &str| {
        let it = &items[i];
        let runs = it.runs.load(Ordering::SeqCst);
        prop_assert_eq!(
            runs,
            model[i].expected,
            "item {} after {}: runs != successful queues - successful cancels",
            i,
            when
        );
        let b = it.work.busy();
        prop_assert!(
            !b.pending && !b.running,
            "item {} not idle after {}",
            i,
            when
        );
        model[i].unsynced_wqs.clear();
        Ok(())
    };

    for op in &ops {
        match *op {
            Op::Queue { wq, item } => {
                if wqs[wq].queue(&items[item].work) {
                    model[item].expected += 1;
                    model[item].unsynced_wqs.insert(wq);
                    model[item].all_wqs.insert(wq);
                }
            }
            Op::QueueOn { wq, cpu, item } => {
                let cpu = cpus[cpu % cpus.len()];
                let r = wqs[wq].queue_on(cpu, &items[item].work);
                prop_assert!(r.is_ok(), "queue_on({}) on an online cpu: {:?}", cpu, r);
                if r.unwrap() {
                    model[item].expected += 1;
                    model[item].unsynced_wqs.insert(wq);
                    model[item].all_wqs.insert(wq);
                }
            }
            Op::Cancel { item } => {
                if items[item].work.cancel() {
                    prop_assert!(
                        model[item].expected > 0,
                        "cancel true for a never queued item"
                    );
                    model[item].expected -= 1;
                }
            }
            Op::FlushItem { item } => {
                let w = items[item].work.clone();
                with_deadline("model: flush item", move || w.flush());
                check_idle_item(item, &mut model, "Work::flush")?;
            }
            Op::FlushWq { wq } => {
                let w = wqs[wq].clone();
                with_deadline("model: flush wq", move || w.flush());
                // Items whose every instance since they were last idle went to this queue are
                // now idle.
                for i in 0..ITEMS {
                    if !model[i].unsynced_wqs.is_empty()
                        && model[i].unsynced_wqs.iter().all(|&q| q == wq)
                    {
                        check_idle_item(i, &mut model, "Workqueue::flush")?;
                    }
                }
            }
            Op::SetMaxActive { wq, n } => {
                let r = wqs[wq].set_max_active(n);
                if wqs[wq].is_ordered() {
                    prop_assert!(matches!(r, Err(Error::Ordered { .. })), "{:?}", r);
                    prop_assert_eq!(wqs[wq].max_active(), 1);
                } else {
                    prop_assert!(r.is_ok(), "{:?}", r);
                    prop_assert_eq!(wqs[wq].max_active(), n);
                }
            }
        }
    }

    for it in &items {
        let w = it.work.clone();
        with_deadline("model: final flush item", move || w.flush());
    }
    for wq in &wqs {
        let w = wq.clone();
        with_deadline("model: final flush wq", move || w.flush());
    }
    for i in 0..ITEMS {
        check_idle_item(i, &mut model, "the final flush")?;
        // Non-reentrancy is only promised while an item stays on one workqueue.
        if model[i].all_wqs.len() <= 1 {
            prop_assert!(
                !items[i].det.overlapped(),
                "item {} ran on two workers at once",
                i
            );
        }
    }
    for wq in wqs {
        with_deadline("model: destroy", move || wq.destroy());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_operation_sequences(ops in prop::collection::vec(op(), 1..40)) {
        run_case(ops)?;
    }
}

/// A fixed sequence with every item on one queue each, so non-reentrancy is always checked.
#[test]
fn fixed_sequence_one_queue_per_item() {
    let mut ops = Vec::new();
    for round in 0..30 {
        for i in 0..ITEMS {
            ops.push(Op::Queue { wq: i, item: i });
            ops.push(Op::QueueOn {
                wq: i,
                cpu: round + i,
                item: i,
            });
            if round % 3 == 0 {
                ops.push(Op::Cancel { item: i });
            }
        }
        if round % 7 == 0 {
            ops.push(Op::FlushWq { wq: round % WQS });
        }
    }
    run_case(ops).unwrap();
}
