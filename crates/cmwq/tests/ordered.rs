//! Semantic 5: an ordered workqueue runs one item at a time, in queueing order.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmwq::{online_cpus, Error, Work, Workqueue, WqFlags};
use common::{join_all, unique, with_deadline, OverlapDetector};

struct Recorder {
    order: Mutex<Vec<usize>>,
    det: OverlapDetector,
}

fn items(n: usize, rec: &Arc<Recorder>, sleep: Option<Duration>) -> Vec<Work> {
    (0..n)
        .map(|i| {
            let rec = rec.clone();
            Work::new(move |_| {
                let _g = rec.det.enter();
                rec.order.lock().unwrap().push(i);
                if let Some(d) = sleep {
                    cmwq::blocking(|| std::thread::sleep(d));
                } else {
                    for _ in 0..200 {
                        std::hint::spin_loop();
                    }
                }
            })
        })
        .collect()
}

fn recorder() -> Arc<Recorder> {
    Arc::new(Recorder {
        order: Mutex::new(Vec::new()),
        det: OverlapDetector::new(),
    })
}

fn flush(wq: &Workqueue) {
    let w = wq.clone();
    with_deadline("ordered wq flush", move || w.flush());
}

#[test]
fn runs_one_at_a_time_in_queueing_order() {
    const N: usize = 500;
    let wq = Workqueue::ordered(&unique("ord"), WqFlags::empty()).unwrap();
    assert!(wq.is_ordered());
    assert_eq!(wq.max_active(), 1);
    let rec = recorder();
    let items = items(N, &rec, None);
    for item in &items {
        assert!(wq.queue(item));
    }
    flush(&wq);
    assert_eq!(*rec.order.lock().unwrap(), (0..N).collect::<Vec<_>>());
    assert!(!rec.det.overlapped());
    assert_eq!(rec.det.max_concurrent(), 1);
}

#[test]
fn sleeping_items_stay_ordered_and_serialised() {
    const N: usize = 25;
    let wq = Workqueue::ordered(&unique("ord-sl"), WqFlags::empty()).unwrap();
    let rec = recorder();
    let items = items(N, &rec, Some(Duration::from_millis(2)));
    for item in &items {
        assert!(wq.queue(item));
    }
    flush(&wq);
    assert_eq!(*rec.order.lock().unwrap(), (0..N).collect::<Vec<_>>());
    assert_eq!(
        rec.det.max_concurrent(),
        1,
        "two items of an ordered wq overlapped"
    );
}

/// `queue_on` with various CPUs does not break the ordering of an ordered workqueue.
#[test]
fn queue_on_different_cpus_stays_ordered() {
    const N: usize = 200;
    let cpus = online_cpus();
    let wq = Workqueue::ordered(&unique("ord-on"), WqFlags::empty()).unwrap();
    let rec = recorder();
    let items = items(N, &rec, None);
    for (i, item) in items.iter().enumerate() {
        assert!(wq.queue_on(cpus[i % cpus.len()], item).unwrap());
    }
    flush(&wq);
    assert_eq!(*rec.order.lock().unwrap(), (0..N).collect::<Vec<_>>());
    assert_eq!(rec.det.max_concurrent(), 1);
}

/// Several producers: each producer's items run in that producer's order; never two at once.
#[test]
fn concurrent_producers_keep_per_producer_order() {
    const PRODUCERS: usize = 4;
    const PER: usize = 100;
    let wq = Workqueue::ordered(&unique("ord-mp"), WqFlags::empty()).unwrap();
    let rec = recorder();
    let all = Arc::new(items(PRODUCERS * PER, &rec, None));
    let handles = (0..PRODUCERS)
        .map(|p| {
            let (wq, all) = (wq.clone(), all.clone());
            std::thread::spawn(move || {
                for i in 0..PER {
                    assert!(wq.queue(&all[p * PER + i]));
                }
            })
        })
        .collect::<Vec<_>>();
    join_all("producers", handles);
    flush(&wq);
    let order = rec.order.lock().unwrap().clone();
    assert_eq!(order.len(), PRODUCERS * PER);
    for p in 0..PRODUCERS {
        let mine: Vec<usize> = order.iter().copied().filter(|i| i / PER == p).collect();
        assert_eq!(mine, (p * PER..(p + 1) * PER).collect::<Vec<_>>());
    }
    assert_eq!(rec.det.max_concurrent(), 1);
}

/// A self-requeueing item and other items interleave in queueing order.
#[test]
fn requeue_from_inside_goes_to_the_back() {
    let wq = Workqueue::ordered(&unique("ord-rq"), WqFlags::empty()).unwrap();
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let b = {
        let log = log.clone();
        Work::new(move |_| log.lock().unwrap().push("b".into()))
    };
    let a = {
        let (log, count, wq, b) = (log.clone(), count.clone(), wq.clone(), b.clone());
        Work::new(move |w| {
            let n = count.fetch_add(1, Ordering::SeqCst);
            log.lock().unwrap().push(format!("a{n}"));
            if n == 0 {
                // Requeue myself first, then b: order must be a0, a1, b.
                assert!(wq.queue(w));
                assert!(wq.queue(&b));
            }
        })
    };
    assert!(wq.queue(&a));
    flush(&wq);
    flush(&wq);
    assert_eq!(*log.lock().unwrap(), vec!["a0", "a1", "b"]);
}

#[test]
fn set_max_active_on_ordered_is_an_error() {
    let wq = Workqueue::ordered(&unique("ord-ma"), WqFlags::empty()).unwrap();
    for n in [0, 1, 2, 16, 2048] {
        let r = wq.set_max_active(n);
        assert!(
            matches!(r, Err(Error::Ordered { .. })),
            "set_max_active({n}): {r:?}"
        );
    }
    assert_eq!(wq.max_active(), 1);
    assert!(wq.is_ordered());
    let plain = Workqueue::new(&unique("ord-no"), WqFlags::UNBOUND, 1).unwrap();
    assert!(
        !plain.is_ordered(),
        "unbound with max_active 1 is not ordered"
    );
}

#[test]
fn ordered_highpri_is_ordered() {
    const N: usize = 100;
    let wq = Workqueue::ordered(&unique("ord-hi"), WqFlags::HIGHPRI).unwrap();
    assert!(wq.is_ordered());
    let rec = recorder();
    let items = items(N, &rec, None);
    for item in &items {
        assert!(wq.queue(item));
    }
    flush(&wq);
    assert_eq!(*rec.order.lock().unwrap(), (0..N).collect::<Vec<_>>());
    assert_eq!(rec.det.max_concurrent(), 1);
}

#[test]
fn builder_ordered_runs_one_at_a_time_in_queueing_order() {
    const N: usize = 300;
    // `max_active` is ignored: an ordered queue runs one item at a time.
    let wq = Workqueue::builder(&unique("ord-b"))
        .max_active(8)
        .ordered()
        .build()
        .unwrap();
    assert!(wq.is_ordered());
    assert_eq!(wq.max_active(), 1);
    assert!(wq.flags().contains(WqFlags::UNBOUND));
    let rec = recorder();
    let items = items(N, &rec, None);
    for (i, item) in items.iter().enumerate() {
        // Producers on any CPU still feed the one queue in order.
        let cpus = online_cpus();
        assert!(wq.queue_on(cpus[i % cpus.len()], item).unwrap());
    }
    flush(&wq);
    assert_eq!(*rec.order.lock().unwrap(), (0..N).collect::<Vec<_>>());
    assert_eq!(rec.det.max_concurrent(), 1);
}

#[test]
fn builder_ordered_rejects_percpu_as_workqueue_ordered_does() {
    let by_builder = Workqueue::builder(&unique("ord-b-pcpu"))
        .flags(WqFlags::PERCPU)
        .ordered()
        .build();
    let by_ctor = Workqueue::ordered(&unique("ord-pcpu"), WqFlags::PERCPU);
    for r in [by_builder, by_ctor] {
        assert!(
            matches!(r, Err(Error::InvalidFlags { .. })),
            "ordered + PERCPU: {r:?}"
        );
    }
    // The order of the builder calls does not matter.
    let r = Workqueue::builder(&unique("ord-b-pcpu2"))
        .ordered()
        .flags(WqFlags::PERCPU | WqFlags::HIGHPRI)
        .build();
    assert!(matches!(r, Err(Error::InvalidFlags { .. })), "{r:?}");
}
