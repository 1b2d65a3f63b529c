//! Forward progress when worker threads cannot be created: `MEM_RECLAIM` workqueues keep
//! running their items through their rescuers, other queues wait, and once creation works
//! again everything queued runs; nothing is lost.
//!
//! Fault injection and the configuration are process-wide, so the scenario runs in a child
//! process (this test binary re-executed with an environment variable).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cmwq::{Work, Workqueue, WqFlags};
use common::wait_until;

const CHILD: &str = "CMWQ_RESCUER_CHILD";
const N: usize = 40;

#[test]
fn mem_reclaim_queues_progress_while_worker_creation_fails() {
    if std::env::var_os(CHILD).is_some() {
        // On failure, exit before unwinding: dropping the queues would drain them, which
        // waits for items that cannot run. The hook runs before any destructor.
        std::panic::set_hook(Box::new(|info| {
            println!("CHILD FAILED: {info}");
            std::process::exit(1);
        }));
        child();
        return;
    }
    common::run_in_child(
        "mem_reclaim_queues_progress_while_worker_creation_fails",
        CHILD,
        Duration::from_secs(60),
    );
}

fn counting(n: &Arc<AtomicUsize>, names: &Arc<Mutex<Vec<String>>>) -> Work {
    let (n, names) = (n.clone(), names.clone());
    Work::new(move |_| {
        let me = std::thread::current().name().unwrap_or("?").to_string();
        names.lock().unwrap().push(me);
        n.fetch_add(1, Ordering::SeqCst);
    })
}

fn child() {
    cmwq::configure(cmwq::Config {
        mayday_initial_timeout: Duration::from_millis(10),
        mayday_interval: Duration::from_millis(20),
        create_cooldown: Duration::from_millis(20),
        ..cmwq::Config::default()
    })
    .unwrap();
    // Before any worker exists: every pool will fail to make its first one.
    cmwq::fail_worker_creation(true);
    let reclaim = Workqueue::new("rescued", WqFlags::MEM_RECLAIM, 0).unwrap();
    let reclaim_unbound =
        Workqueue::new("rescued_u", WqFlags::MEM_RECLAIM | WqFlags::UNBOUND, 0).unwrap();
    let plain = Workqueue::new("plain", WqFlags::empty(), 0).unwrap();
    let cpu = cmwq::online_cpus()[0];

    let (a, a_names) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let (u, u_names) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let (b, b_names) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(Mutex::new(Vec::new())),
    );
    let a_items: Vec<Work> = (0..N).map(|_| counting(&a, &a_names)).collect();
    let u_items: Vec<Work> = (0..N).map(|_| counting(&u, &u_names)).collect();
    let b_items: Vec<Work> = (0..N).map(|_| counting(&b, &b_names)).collect();
    for i in 0..N {
        // Interleaved on the same per-CPU pool: the rescuer must pick its queue's items.
        assert!(reclaim.queue_on(cpu, &a_items[i]).unwrap());
        assert!(plain.queue_on(cpu, &b_items[i]).unwrap());
        assert!(reclaim_unbound.queue(&u_items[i]));
    }

    assert!(
        wait_until(Duration::from_secs(20), || a.load(Ordering::SeqCst) == N
            && u.load(Ordering::SeqCst) == N),
        "MEM_RECLAIM items did not all run through the rescuers: {} and {} of {N}",
        a.load(Ordering::SeqCst),
        u.load(Ordering::SeqCst)
    );
    assert!(a_names
        .lock()
        .unwrap()
        .iter()
        .all(|n| n.starts_with("kworker/R-")));
    assert!(u_names
        .lock()
        .unwrap()
        .iter()
        .all(|n| n.starts_with("kworker/R-")));
    // The plain queue has no rescuer: nothing of it ran.
    assert_eq!(
        b.load(Ordering::SeqCst),
        0,
        "a plain item ran without a worker"
    );

    // The counters: every item of the reclaim queues was run by a rescuer, after at least
    // one mayday per pool; the plain queue had none.
    let (r, ru, p) = (reclaim.stats(), reclaim_unbound.stats(), plain.stats());
    assert_eq!(
        (r.rescued, r.total, r.completed),
        (N as u64, N as u64, N as u64),
        "{r:?}"
    );
    assert_eq!(ru.rescued, N as u64, "{ru:?}");
    assert!(r.mayday >= 1 && ru.mayday >= 1, "{r:?} {ru:?}");
    assert_eq!(
        (p.mayday, p.rescued, p.total, p.pending),
        (0, 0, 0, N),
        "{p:?}"
    );

    // More rescued work while creation still fails (a second mayday round).
    let late = counting(&a, &a_names);
    reclaim.queue_on(cpu, &late).unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || a.load(Ordering::SeqCst)
            == N + 1),
        "a later MEM_RECLAIM item was not rescued"
    );
    assert_eq!(b.load(Ordering::SeqCst), 0);

    // Creation works again: everything queued runs, on ordinary workers, exactly once.
    cmwq::fail_worker_creation(false);
    assert!(
        wait_until(Duration::from_secs(20), || b.load(Ordering::SeqCst) == N),
        "plain items did not run after recovery: {} of {N}",
        b.load(Ordering::SeqCst)
    );
    plain.flush();
    reclaim.flush();
    reclaim_unbound.flush();
    assert_eq!(a.load(Ordering::SeqCst), N + 1);
    assert_eq!(u.load(Ordering::SeqCst), N);
    assert_eq!(b.load(Ordering::SeqCst), N);
    assert!(b_names
        .lock()
        .unwrap()
        .iter()
        .all(|n| n.starts_with("kworker/") && !n.starts_with("kworker/R-")));
    // Destroy stops and joins the rescuers.
    reclaim.destroy();
    reclaim_unbound.destroy();
    println!("CHILD OK");
}
