//! Storm-thread helpers: item lookup, op picking, guarded calls, and the accounting of queueings, cancels and flushes.

use super::*;

impl Actor {
    pub(super) fn new(w: &Arc<World>, tid: usize) -> Actor {
        Actor {
            sh: w.sh.clone(),
            w: w.clone(),
            tid,
            rng: SeededRng::new(mix(w.sh.seed, 0x5107 + tid as u64)),
            recs: HashMap::new(),
        }
    }

    pub(super) fn st(&self, id: usize) -> Arc<ItemSt> {
        self.w.items[id].st.clone()
    }

    pub(super) fn h(&self, id: usize) -> Handle {
        self.w.items[id].h.clone()
    }

    pub(super) fn arg_desc(&self, arg: usize) -> String {
        match arg {
            a if a < self.w.items.len() => format!("item {}", self.w.items[a].st.name),
            a if (10_000..10_100).contains(&a) => {
                format!("queue {}", self.sh.queues[a - 10_000].name)
            }
            a if a >= 20_000 => format!("spare queue #{}", a - 20_000),
            _ => "-".to_string(),
        }
    }

    /// Runs `f` as op `op` on `arg` (an item id, 10_000 + a queue index, 20_000 + a spare id):
    /// the watchdog sees it, and a panic in the calling thread is a failure (`None`).
    pub(super) fn guarded<R>(&self, op: Op, arg: usize, f: impl FnOnce() -> R) -> Option<R> {
        let slot = &self.w.slots[self.tid];
        slot.op.store(op as usize, SeqCst);
        slot.arg.store(arg, SeqCst);
        slot.since.store(self.sh.ms() + 1, SeqCst);
        let r = catch_unwind(AssertUnwindSafe(f));
        slot.since.store(0, SeqCst);
        match r {
            Ok(v) => Some(v),
            Err(p) => {
                let text = LAST_PANIC
                    .with(|l| l.borrow_mut().take())
                    .unwrap_or_else(|| payload_text(&*p));
                if arg < self.w.items.len() {
                    self.w.items[arg].st.wedged.store(true, SeqCst);
                }
                self.sh.fail(
                    "op-panic",
                    format!(
                        "{op:?} on {} panicked in the calling thread: {text}",
                        self.arg_desc(arg),
                    ),
                );
                None
            }
        }
    }

    pub(super) fn pick(&mut self, table: &[(Op, u32)]) -> Op {
        let total: u32 = table.iter().map(|&(_, w)| w).sum();
        let mut r = self.rng.below(u64::from(total)) as u32;
        for &(op, w) in table {
            if r < w {
                return op;
            }
            r -= w;
        }
        table[0].0
    }

    pub(super) fn cpu(&mut self) -> usize {
        self.w.cpus[self.rng.index(self.w.cpus.len())]
    }

    pub(super) fn short_delay(&mut self) -> Duration {
        match self.rng.below(8) {
            0 => Duration::ZERO,
            _ => Duration::from_micros(self.rng.below(3_000)),
        }
    }

    /// A random id of one of the world's item lists.
    pub(super) fn pick_from(&mut self, list: fn(&World) -> &Vec<usize>) -> usize {
        let w = self.w.clone();
        let v = list(&w);
        v[self.rng.index(v.len())]
    }

    /// An item any thread may cancel, flush, disable: homed and roaming ones.
    pub(super) fn shared_item(&mut self) -> usize {
        let n = self.w.homed.len() + self.w.roaming.len();
        let i = self.rng.index(n);
        if i < self.w.homed.len() {
            self.w.homed[i]
        } else {
            self.w.roaming[i - self.w.homed.len()]
        }
    }

    // ----- accounting helpers -----

    /// A queueing call on `id` towards queue `qref`: counts it if accepted and records it for
    /// the flush checks.
    pub(super) fn queue_op(
        &mut self,
        op: Op,
        id: usize,
        qref: u64,
        delayed: bool,
        call: impl FnOnce() -> bool,
    ) -> Option<bool> {
        let st = self.st(id);
        let cg = st.quiet_gen();
        let s = self.sh.stamp.fetch_add(1, SeqCst);
        let home = st.home().map(|q| &self.sh.queues[q]);
        if let Some(q) = home {
            q.qin_inc();
        }
        let r = self.guarded(op, id, call)?;
        if r {
            st.accepted.fetch_add(1, SeqCst);
            if let Some(cg) = cg {
                self.recs.insert((id, qref), Rec { s, cg, delayed });
            }
        } else if let Some(q) = home {
            q.qin_dec();
        }
        Some(r)
    }

    /// A successful cancel of `id`'s pending instance.
    pub(super) fn resolved_by_cancel(&self, st: &ItemSt) {
        st.cancels.fetch_add(1, SeqCst);
        if let Some(q) = st.home() {
            self.sh.queues[q].qin_dec();
        }
        if matches!(st.class, Class::Ordered(_)) {
            lock(&st.ord_inst).pop();
        }
    }

    pub(super) fn do_cancel(&mut self, op: Op, id: usize) {
        let (st, h) = (self.st(id), self.h(id));
        st.begin_cancel();
        let r = self.guarded(op, id, || h.cancel());
        if r == Some(true) {
            self.resolved_by_cancel(&st);
        }
        st.end_cancel();
    }

    pub(super) fn do_cancel_sync(&mut self, op: Op, id: usize) -> Option<bool> {
        let (st, h) = (self.st(id), self.h(id));
        let _ctl = lock(&st.ctl);
        st.begin_cancel();
        let r = self.guarded(op, id, || h.cancel_sync())?;
        if r {
            self.resolved_by_cancel(&st);
        }
        st.end_cancel();
        Some(r)
    }

    pub(super) fn do_disable(&mut self, op: Op, id: usize, sync: bool) {
        let (st, h) = (self.st(id), self.h(id));
        let mut depth = lock(&st.ctl);
        if *depth >= 3 {
            return;
        }
        st.begin_cancel();
        let r = self.guarded(op, id, || {
            if sync {
                h.work().disable_sync()
            } else {
                h.work().disable()
            }
        });
        let Some(r) = r else { return };
        *depth += 1;
        if r {
            self.resolved_by_cancel(&st);
        }
        st.end_cancel();
    }

    pub(super) fn do_enable(&mut self, op: Op, id: usize) {
        let (st, h) = (self.st(id), self.h(id));
        let mut depth = lock(&st.ctl);
        if *depth == 0 {
            return;
        }
        let Some(r) = self.guarded(op, id, || h.work().enable()) else {
            return;
        };
        *depth -= 1;
        if r != (*depth == 0) {
            self.sh.fail(
                "enable",
                format!(
                    "enable of {} returned {r} with the depth now {} (true exactly at zero)",
                    st.name, *depth
                ),
            );
        }
    }

    /// After a flush of `id` (or of a queue, `qref`) returned: every accepted queueing this
    /// thread recorded for it has finished a run, unless a cancel was attempted since.
    pub(super) fn check_flush(
        &mut self,
        what: &str,
        id: Option<usize>,
        qref: Option<u64>,
        timers: bool,
    ) {
        let keys: Vec<(usize, u64)> = self
            .recs
            .iter()
            .filter(|((i, q), r)| {
                id.is_none_or(|x| x == *i) && qref.is_none_or(|x| x == *q) && (timers || !r.delayed)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            let rec = self.recs.remove(&key).expect("listed above");
            let st = self.st(key.0);
            if st.cstart.load(SeqCst) != rec.cg {
                continue;
            }
            self.sh.stats.flush_checks.fetch_add(1, Relaxed);
            let done = st.max_done.load(SeqCst);
            if done < rec.s {
                self.sh.fail(
                    "flush",
                    format!(
                        "{what} returned but {} has not finished a run queued by thread {} \
                         (stamp {} before its accepted queueing on {}; last finished run \
                         started at {done}; {} runs, {} accepted, pending {})",
                        st.name,
                        self.tid,
                        rec.s,
                        self.qref_name(key.1),
                        st.runs.load(SeqCst),
                        st.accepted.load(SeqCst),
                        self.w.items[key.0].h.is_pending(),
                    ),
                );
            }
        }
    }

    pub(super) fn qref_name(&self, qref: u64) -> String {
        if qref >= SPARE_BASE {
            format!("spare #{}", qref - SPARE_BASE)
        } else {
            self.sh.queues[qref as usize].name.clone()
        }
    }

    pub(super) fn random_spare(&mut self) -> Option<(Workqueue, u64)> {
        let i = self.rng.index(self.w.spares.len());
        lock(&self.w.spares[i])
            .as_ref()
            .map(|s| (s.wq.clone(), s.qid))
    }

    pub(super) fn own_spare(&self) -> Option<(Workqueue, u64)> {
        lock(&self.w.spares[self.tid])
            .as_ref()
            .map(|s| (s.wq.clone(), s.qid))
    }
}
