//! The work function every storm item runs, and building the world (queues, items, spare queues).

use super::*;

// ===== the work function =====

pub(super) enum Me<'a> {
    W(&'a Work),
    D(&'a DelayedWork),
}

/// Ends a run: the per-pool count, the finished stamp, the in-flight count (also on panic).
pub(super) struct RunGuard<'a> {
    sh: &'a Shared,
    st: &'a ItemSt,
    stamp: u64,
    pool: Option<usize>,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        if let (Some(q), Some(pool)) = (self.st.home(), self.pool) {
            if let Some(n) = lock(&self.sh.queues[q].conc).get_mut(&pool) {
                *n -= 1;
            }
        }
        self.st.max_done.fetch_max(self.stamp, SeqCst);
        if let Some(q) = self.st.home() {
            self.sh.queues[q].qin_dec();
        }
    }
}

pub(super) fn item_body(sh: &Shared, st: &ItemSt, me: Me<'_>) {
    let stamp = sh.stamp.fetch_add(1, SeqCst);
    let n = st.runs.fetch_add(1, SeqCst);
    let mut guard = RunGuard {
        sh,
        st,
        stamp,
        pool: None,
    };
    let _running = st.det.enter();
    if st.checks_overlap() && st.det.overlapped() && !st.overlap_reported.swap(true, SeqCst) {
        sh.fail(
            "overlap",
            format!(
                "item {} ran on two workers at once (run {n}, {} running)",
                st.name,
                st.det.running()
            ),
        );
    }
    if let Some(qi) = st.home() {
        let q = &sh.queues[qi];
        let pool = cmwq::current_worker().map_or(usize::MAX, |w| w.pool_id);
        let c = {
            let mut m = lock(&q.conc);
            let e = m.entry(pool).or_insert(0);
            *e += 1;
            *e
        };
        guard.pool = Some(pool);
        q.max_conc.fetch_max(c, Relaxed);
        let ws = q.window_start.load(SeqCst);
        let bound = lock(&q.log).bound_since(ws);
        sh.stats.conc_checks.fetch_add(1, Relaxed);
        if c > bound {
            sh.fail(
                "max_active",
                format!(
                    "{} items of queue {} ran at once on pool {pool} (item {} started), but no \
                     max_active above {bound} was in force since its measured items were last \
                     all idle",
                    c, q.name, st.name
                ),
            );
        }
        if q.ordered {
            lock(&st.ord_runs).push(q.ord_rseq.fetch_add(1, SeqCst));
        }
    }
    let h = mix(sh.seed ^ ((st.id as u64) << 40), n);
    // Mostly short; some sleep (announced), so that per-CPU pools run several at once.
    match h % 100 {
        0..=49 => {}
        50..=74 => burn(Duration::from_micros(5 + (h >> 8) % 45)),
        75..=84 => burn(Duration::from_micros(100 + (h >> 8) % 200)),
        _ => cmwq::blocking(|| std::thread::sleep(Duration::from_micros(300 + (h >> 8) % 1_700))),
    }
    if matches!(st.class, Class::Private(_))
        && st
            .chain
            .fetch_update(SeqCst, SeqCst, |c| c.checked_sub(1))
            .is_ok()
    {
        let target = lock(&st.target).clone();
        if let Some(t) = target {
            let ok = match me {
                Me::W(w) => t.queue(w),
                Me::D(dw) => t.queue_delayed(dw, Duration::from_micros((h >> 20) % 2_000)),
            };
            if ok {
                st.accepted.fetch_add(1, SeqCst);
                // Chained re-arming while the owner drains or destroys the queue: the
                // destroy (or a timer that fires during the drain) may drop it too.
                if st.tearing.load(SeqCst) {
                    st.drop_chances.fetch_add(1, SeqCst);
                }
            }
        }
    }
    if !sh.skip.panic && (h >> 12) % 37 == 0 {
        st.panics.fetch_add(1, SeqCst);
        sh.thrown.fetch_add(1, SeqCst);
        panic!("{DELIBERATE}: item {} run {n}", st.name);
    }
}

// ===== building the world =====

pub(super) fn perm_queues(seed: u64) -> Vec<QInfo> {
    let tag = seed % 1000;
    let specs: Vec<(&str, Result<Workqueue, Error>, bool)> = vec![
        (
            "pcpu-dfl",
            Workqueue::new(&format!("st{tag}-pcpu-dfl"), WqFlags::empty(), 0),
            false,
        ),
        (
            "pcpu-1",
            Workqueue::new(&format!("st{tag}-pcpu-1"), WqFlags::empty(), 1),
            false,
        ),
        (
            "pcpu-2",
            Workqueue::new(&format!("st{tag}-pcpu-2"), WqFlags::empty(), 2),
            false,
        ),
        (
            "unb-2",
            Workqueue::new(&format!("st{tag}-unb-2"), WqFlags::UNBOUND, 2),
            false,
        ),
        (
            "unb-dfl",
            Workqueue::new(&format!("st{tag}-unb-dfl"), WqFlags::UNBOUND, 0),
            false,
        ),
        (
            "ordered",
            Workqueue::ordered(&format!("st{tag}-ordered"), WqFlags::empty()),
            false,
        ),
        (
            "highpri",
            Workqueue::new(&format!("st{tag}-highpri"), WqFlags::HIGHPRI, 2),
            true,
        ),
        (
            "cpu-int",
            Workqueue::new(&format!("st{tag}-cpu-int"), WqFlags::CPU_INTENSIVE, 2),
            true,
        ),
        (
            "reclaim",
            Workqueue::new(&format!("st{tag}-reclaim"), WqFlags::MEM_RECLAIM, 2),
            true,
        ),
        (
            "unb-hi",
            Workqueue::new(
                &format!("st{tag}-unb-hi"),
                WqFlags::UNBOUND | WqFlags::HIGHPRI,
                3,
            ),
            true,
        ),
    ];
    specs
        .into_iter()
        .map(|(name, wq, varying)| {
            let wq = wq.unwrap_or_else(|e| panic!("storm: creating queue {name}: {e}"));
            let limit = wq.max_active();
            QInfo {
                name: name.to_string(),
                ordered: wq.is_ordered(),
                wq,
                varying,
                qin: AtomicI64::new(0),
                log: Mutex::new(LimitLog {
                    limits: vec![limit],
                    cache: (usize::MAX, 0, 0),
                }),
                cur_idx: AtomicUsize::new(0),
                window_start: AtomicUsize::new(0),
                conc: Mutex::new(HashMap::new()),
                max_conc: AtomicUsize::new(0),
                ord_qseq: AtomicU64::new(0),
                ord_rseq: AtomicU64::new(0),
            }
        })
        .collect()
}

pub(super) const ORDERED_Q: usize = 5;
/// Permanent queues with a homed delayed item.
pub(super) const DELAYED_HOMES: [usize; 6] = [0, 2, 3, 6, 8, 9];

pub(super) fn make_item(
    sh: &Arc<Shared>,
    id: usize,
    name: String,
    class: Class,
    delayed: bool,
) -> Item {
    let st = Arc::new(ItemSt {
        id,
        name,
        class,
        delayed,
        accepted: AtomicU64::new(0),
        runs: AtomicU64::new(0),
        cancels: AtomicU64::new(0),
        drops: AtomicU64::new(0),
        cstart: AtomicU64::new(0),
        cend: AtomicU64::new(0),
        fstart: AtomicU64::new(0),
        fend: AtomicU64::new(0),
        max_done: AtomicU64::new(0),
        det: OverlapDetector::new(),
        overlap_reported: AtomicBool::new(false),
        ctl: Mutex::new(0),
        wedged: AtomicBool::new(false),
        panics: AtomicU64::new(0),
        ord_inst: Mutex::new(Vec::new()),
        ord_runs: Mutex::new(Vec::new()),
        chain: AtomicU32::new(0),
        target: Mutex::new(None),
        synced_runs: AtomicU64::new(u64::MAX),
        drop_chances: AtomicU64::new(0),
        tearing: AtomicBool::new(false),
    });
    let (sh2, st2) = (sh.clone(), st.clone());
    let h = if delayed {
        Handle::D(DelayedWork::new(move |dw| item_body(&sh2, &st2, Me::D(dw))))
    } else {
        Handle::W(Work::new(move |w| item_body(&sh2, &st2, Me::W(w))))
    };
    Item { st, h }
}

/// Spare-queue kinds, cycled through by each thread.
pub(super) const SPARE_KINDS: usize = 8;

pub(super) fn make_spare(seed: u64, tid: usize, n: u64, kind: usize) -> Workqueue {
    let name = format!("sp{}-{tid}-{n}", seed % 100);
    let r = match kind {
        0 => Workqueue::new(&name, WqFlags::empty(), 0),
        1 => Workqueue::new(&name, WqFlags::UNBOUND, 2),
        2 => Workqueue::ordered(&name, WqFlags::empty()),
        3 => Workqueue::new(&name, WqFlags::MEM_RECLAIM, 1),
        4 => Workqueue::new(&name, WqFlags::HIGHPRI, 0),
        5 => Workqueue::new(&name, WqFlags::CPU_INTENSIVE, 2),
        // Its own unbound pool: destroy joins its workers.
        6 => Workqueue::builder(&name)
            .flags(WqFlags::UNBOUND)
            .nice(5)
            .max_active(3)
            .build(),
        _ => Workqueue::new(&name, WqFlags::UNBOUND | WqFlags::MEM_RECLAIM, 0),
    };
    r.unwrap_or_else(|e| panic!("storm: creating spare queue kind {kind}: {e}"))
}

pub(super) fn build_world(sh: &Arc<Shared>, threads: usize) -> World {
    let mut items = Vec::new();
    let (mut homed, mut homed_d, mut ordered, mut roaming, mut private) =
        (vec![], vec![], vec![], vec![], vec![]);
    for q in 0..sh.queues.len() {
        if q == ORDERED_Q {
            continue;
        }
        // More candidates than the limit on the queues whose limit changes.
        let n = if sh.queues[q].varying { 4 } else { 3 };
        for k in 0..n {
            let id = items.len();
            items.push(make_item(
                sh,
                id,
                format!("h{q}.{k}@{}", sh.queues[q].name),
                Class::Homed(q),
                false,
            ));
            homed.push(id);
        }
    }
    for q in DELAYED_HOMES {
        let id = items.len();
        items.push(make_item(
            sh,
            id,
            format!("hd{q}@{}", sh.queues[q].name),
            Class::Homed(q),
            true,
        ));
        homed.push(id);
        homed_d.push(id);
    }
    for k in 0..3 {
        let id = items.len();
        items.push(make_item(
            sh,
            id,
            format!("o{k}@ordered"),
            Class::Ordered(ORDERED_Q),
            false,
        ));
        ordered.push(id);
    }
    for k in 0..4 {
        let id = items.len();
        items.push(make_item(sh, id, format!("r{k}"), Class::Roaming, false));
        roaming.push(id);
    }
    let mut spares = Vec::new();
    let next_qid = AtomicU64::new(1);
    for t in 0..threads {
        let p = items.len();
        items.push(make_item(sh, p, format!("p{t}"), Class::Private(t), false));
        let pd = items.len();
        items.push(make_item(sh, pd, format!("pd{t}"), Class::Private(t), true));
        private.push((p, pd));
        let kind = t % SPARE_KINDS;
        let qid = next_qid.fetch_add(1, SeqCst);
        let wq = make_spare(sh.seed, t, qid, kind);
        *lock(&items[p].st.target) = Some(wq.clone());
        *lock(&items[pd].st.target) = Some(wq.clone());
        spares.push(Mutex::new(Some(Spare { wq, qid, kind })));
    }
    World {
        sh: sh.clone(),
        items,
        homed,
        homed_d,
        ordered,
        roaming,
        private,
        spares,
        leftovers: Mutex::new(VecDeque::new()),
        slots: (0..=threads).map(|_| Slot::default()).collect(),
        next_qid,
        cpus: cmwq::online_cpus(),
        outage: AtomicBool::new(false),
    }
}
