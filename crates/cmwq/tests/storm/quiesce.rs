//! Quiescence: flushing everything, then the accounting, ordering and teardown checks.

use super::*;

impl Actor {
    // ----- quiescence -----

    pub(super) fn quiesce(&mut self) {
        cmwq::fail_worker_creation(false);
        let ids: Vec<usize> = (0..self.w.items.len())
            .filter(|&i| !self.w.items[i].st.wedged.load(SeqCst))
            .collect();
        for &id in &ids {
            let (st, h) = (self.st(id), self.h(id));
            let mut depth = lock(&st.ctl);
            while *depth > 0 {
                let Some(r) = self.guarded(Op::QuiesceEnable, id, || h.work().enable()) else {
                    break;
                };
                *depth -= 1;
                if r != (*depth == 0) {
                    self.sh.fail(
                        "enable",
                        format!("enable of {} returned {r} at depth {}", st.name, *depth),
                    );
                }
            }
        }
        self.flush_all_queues();
        for &id in &ids {
            let (st, h) = (self.st(id), self.h(id));
            if self.do_cancel_sync(Op::QuiesceCancelSync, id).is_none() {
                continue;
            }
            let running = st.det.running();
            if running != 0 || h.is_pending() || h.work().busy().running {
                self.sh.fail(
                    "cancel_sync",
                    format!(
                        "after the final cancel_sync of {}: {running} run(s) in progress, \
                         busy {:?}",
                        st.name,
                        h.work().busy()
                    ),
                );
            }
        }
        self.flush_all_queues();
        for &id in &ids {
            let h = self.h(id);
            self.guarded(Op::QuiesceFlush, id, || h.flush());
        }
        for &(p, pd) in &self.w.private.clone() {
            for id in [p, pd] {
                if !self.w.items[id].st.wedged.load(SeqCst) {
                    self.reconcile_private(id, "the final cancel_sync");
                }
            }
        }
        self.check_accounting(&ids);
        self.check_ordered();
        for q in &self.sh.queues {
            let n = q.qin.load(SeqCst);
            if n != 0 && !self.sh.failed() {
                self.sh.fail(
                    "bookkeeping",
                    format!(
                        "queue {}: {n} homed instances still counted in flight",
                        q.name
                    ),
                );
            }
        }
        let thrown = self.sh.thrown.load(SeqCst);
        let reported = REPORTED.load(SeqCst);
        if thrown != reported {
            self.sh.fail(
                "panic-report",
                format!(
                    "{thrown} deliberate panics thrown by items, {reported} reported to the hook"
                ),
            );
        }
    }

    pub(super) fn flush_all_queues(&mut self) {
        for qi in 0..self.sh.queues.len() {
            let wq = self.sh.queues[qi].wq.clone();
            self.guarded(Op::QuiesceFlush, 10_000 + qi, || wq.flush());
        }
        for i in 0..self.w.spares.len() {
            let spare = lock(&self.w.spares[i])
                .as_ref()
                .map(|s| (s.wq.clone(), s.qid));
            if let Some((wq, qid)) = spare {
                self.guarded(Op::QuiesceFlush, 20_000 + qid as usize, || wq.flush());
            }
        }
    }

    pub(super) fn check_accounting(&self, ids: &[usize]) {
        for &id in ids {
            let st = self.st(id);
            let (a, r, c, d) = (
                st.accepted.load(SeqCst),
                st.runs.load(SeqCst),
                st.cancels.load(SeqCst),
                st.drops.load(SeqCst),
            );
            if a != r + c + d {
                self.sh.fail(
                    "accounting",
                    format!(
                        "{}: {a} accepted queueings != {r} runs + {c} successful cancels + {d} \
                         timers dropped by destroy ({})",
                        st.name,
                        if a > r + c + d {
                            "accepted instances were lost"
                        } else {
                            "runs or cancels nobody queued"
                        }
                    ),
                );
            }
        }
    }

    pub(super) fn check_ordered(&self) {
        let mut pairs: Vec<(u64, u64, usize)> = Vec::new();
        for &id in &self.w.ordered {
            let st = self.st(id);
            if st.wedged.load(SeqCst) {
                return;
            }
            let inst = lock(&st.ord_inst).clone();
            let runs = lock(&st.ord_runs).clone();
            if inst.len() != runs.len() {
                // The accounting check reports the difference.
                return;
            }
            pairs.extend(runs.into_iter().zip(inst).map(|(r, q)| (r, q, id)));
        }
        pairs.sort_unstable();
        for w in pairs.windows(2) {
            let ((r1, q1, i1), (r2, q2, i2)) = (w[0], w[1]);
            if q2 < q1 {
                self.sh.fail(
                    "ordered",
                    format!(
                        "ordered queue ran {} (queued #{q1}) as run #{r1} before {} (queued \
                         #{q2}) as run #{r2}: not in queueing order",
                        self.w.items[i1].st.name, self.w.items[i2].st.name
                    ),
                );
                return;
            }
        }
    }

    /// Destroys every queue and checks what the destroys and the leftover handles do.
    pub(super) fn teardown(&mut self) -> Vec<Workqueue> {
        let mut leftovers = Vec::new();
        for owner in 0..self.w.spares.len() {
            self.destroy_spare_of(owner, false);
        }
        for qi in 0..self.sh.queues.len() {
            let wq = self.sh.queues[qi].wq.clone();
            leftovers.push(wq.clone());
            self.guarded(Op::Teardown, 10_000 + qi, move || wq.destroy());
        }
        for id in 0..self.w.items.len() {
            let st = self.st(id);
            if !st.wedged.load(SeqCst) && self.w.items[id].h.is_pending() {
                self.sh.fail(
                    "destroy",
                    format!("{} pending after every queue was destroyed", st.name),
                );
            }
        }
        let spare_left: Vec<(Workqueue, u64)> = lock(&self.w.leftovers).iter().cloned().collect();
        for (qi, wq) in leftovers.iter().enumerate() {
            for which in 0..9 {
                self.leftover_check(wq, 10_000 + qi, which);
            }
        }
        for (wq, qid) in &spare_left {
            for which in 0..9 {
                self.leftover_check(wq, 20_000 + *qid as usize, which);
            }
        }
        leftovers
    }
}
