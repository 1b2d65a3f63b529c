//! The storm loop and its ops: queueing, delayed work, flushes, `set_max_active`, spare queues, leftover handles, outages.

use super::*;

impl Actor {
    // ----- the storm loop -----

    pub(super) fn storm(&mut self, ops: u64) {
        for _ in 0..ops {
            if self.sh.stop.load(Relaxed) {
                return;
            }
            let op = if self.tid == 0 && self.rng.chance(1, 6) {
                self.pick(ORDERED_WEIGHTS)
            } else {
                self.pick(WEIGHTS)
            };
            self.step(op);
            self.sh.stats.ops.fetch_add(1, Relaxed);
        }
    }

    pub(super) fn step(&mut self, op: Op) {
        match op {
            Op::Queue | Op::QueueOn | Op::TryQueue => self.op_queue_homed(op),
            Op::QueueOnBadCpu => {
                let id = self.shared_item();
                let h = self.h(id);
                let q = &self.sh.queues[self.rng.index(self.sh.queues.len())];
                let bad = self.w.cpus.iter().max().copied().unwrap_or(0) + 1 + self.rng.index(1000);
                if let Some(r) = self.guarded(op, id, || q.wq.queue_on(bad, h.work())) {
                    if !matches!(r, Err(Error::InvalidCpu { .. })) {
                        self.sh.fail(
                            "contract",
                            format!(
                                "queue_on(cpu {bad}) on {} gave {r:?}, not InvalidCpu",
                                q.name
                            ),
                        );
                    }
                }
            }
            Op::QueueDelayed
            | Op::QueueDelayedOn
            | Op::ModDelayed
            | Op::ModDelayedOn
            | Op::QueueDwWork
            | Op::DelayedLong
            | Op::DelayedMax => self.op_delayed(op),
            Op::Cancel => {
                let id = self.shared_item();
                self.do_cancel(op, id);
            }
            Op::CancelSync => {
                let id = self.shared_item();
                self.do_cancel_sync(op, id);
            }
            Op::Disable | Op::DisableSync => {
                let id = self.shared_item();
                self.do_disable(op, id, op == Op::DisableSync);
            }
            Op::Enable => {
                let id = self.shared_item();
                self.do_enable(op, id);
            }
            Op::FlushItem | Op::TryFlushItem => self.op_flush_item(op),
            Op::FlushQueue => {
                let qi = self.rng.index(self.sh.queues.len());
                let wq = self.sh.queues[qi].wq.clone();
                if self.guarded(op, 10_000 + qi, || wq.flush()).is_some() {
                    self.check_flush("Workqueue::flush", None, Some(qi as u64), false);
                }
            }
            Op::DrainSpare => self.op_drain_own_spare(),
            Op::FlushSpare => {
                let Some((wq, qid)) = self.random_spare() else {
                    return;
                };
                if self
                    .guarded(op, 20_000 + qid as usize, || wq.flush())
                    .is_some()
                {
                    self.check_flush("flush", None, Some(SPARE_BASE + qid), false);
                }
            }
            Op::SetMaxActive => self.op_set_max_active(),
            Op::SetMaxActiveBad => self.op_set_max_active_bad(),
            Op::RoamPerm | Op::RoamSpare => self.op_roam(op),
            Op::PrivQueue | Op::PrivCancelSync | Op::PrivFlush | Op::PrivCancel => {
                self.op_private(op)
            }
            Op::DestroySpare => self.destroy_spare_of(self.tid, true),
            Op::Leftover => self.op_leftover(),
            Op::Outage => self.op_outage(),
            Op::Peek => {
                let id = self.rng.index(self.w.items.len());
                let h = self.h(id);
                let _ = self.guarded(op, id, || (h.work().busy(), h.is_pending()));
            }
            Op::OrdQueue => self.op_ord_queue(),
            Op::OrdCancel => {
                let id = self.pick_from(|w| &w.ordered);
                self.do_cancel(op, id);
            }
            Op::OrdDisable => {
                let id = self.pick_from(|w| &w.ordered);
                self.do_disable(op, id, false);
            }
            Op::OrdEnable => {
                let id = self.pick_from(|w| &w.ordered);
                self.do_enable(op, id);
            }
            Op::OrdCancelSync => {
                let id = self.pick_from(|w| &w.ordered);
                self.do_cancel_sync(op, id);
            }
            Op::QuiesceEnable | Op::QuiesceFlush | Op::QuiesceCancelSync | Op::Teardown => {}
        }
    }

    pub(super) fn op_queue_homed(&mut self, op: Op) {
        let id = self.pick_from(|w| &w.homed);
        let st = self.st(id);
        let qi = st.home().expect("homed");
        let wq = self.sh.queues[qi].wq.clone();
        let h = self.h(id);
        let cpu = self.cpu();
        let sh = self.sh.clone();
        let name = st.name.clone();
        self.queue_op(op, id, qi as u64, false, move || match op {
            Op::Queue => wq.queue(h.work()),
            Op::QueueOn => match wq.queue_on(cpu, h.work()) {
                Ok(b) => b,
                Err(e) => {
                    sh.fail("contract", format!("queue_on({cpu}) of {name}: {e}"));
                    false
                }
            },
            _ => match wq.try_queue(h.work()) {
                Ok(b) => b,
                Err(e) => {
                    sh.fail(
                        "contract",
                        format!("try_queue of {name} on a live queue: {e}"),
                    );
                    false
                }
            },
        });
    }

    pub(super) fn op_delayed(&mut self, op: Op) {
        let id = self.pick_from(|w| &w.homed_d);
        let st = self.st(id);
        let qi = st.home().expect("homed");
        let wq = self.sh.queues[qi].wq.clone();
        let Handle::D(dw) = self.h(id) else {
            unreachable!("homed_d holds delayed items")
        };
        let cpu = self.cpu();
        let delay = match op {
            Op::DelayedLong => {
                if self.sh.skip.long {
                    return;
                }
                self.sh.stats.long.fetch_add(1, Relaxed);
                Duration::from_secs(3600)
            }
            Op::DelayedMax => {
                if self.sh.skip.dmax {
                    return;
                }
                self.sh.stats.dmax.fetch_add(1, Relaxed);
                Duration::MAX
            }
            _ => self.short_delay(),
        };
        // Long and MAX delays use every arming call in turn.
        let style = match op {
            Op::DelayedLong | Op::DelayedMax => match self.rng.below(3) {
                0 => Op::QueueDelayed,
                1 => Op::QueueDelayedOn,
                _ => Op::ModDelayed,
            },
            other => other,
        };
        let sh = self.sh.clone();
        let name = st.name.clone();
        match style {
            Op::QueueDelayed => {
                self.queue_op(op, id, qi as u64, true, move || {
                    wq.queue_delayed(&dw, delay)
                });
            }
            Op::QueueDelayedOn => {
                self.queue_op(op, id, qi as u64, true, move || {
                    match wq.queue_delayed_on(cpu, &dw, delay) {
                        Ok(b) => b,
                        Err(e) => {
                            sh.fail(
                                "contract",
                                format!("queue_delayed_on({cpu}) of {name}: {e}"),
                            );
                            false
                        }
                    }
                });
            }
            Op::QueueDwWork => {
                self.queue_op(op, id, qi as u64, false, move || wq.queue(dw.work()));
            }
            _ => {
                // mod_delayed: under the item's control lock, so the disable depth is known.
                let depth_guard = lock(&st.ctl);
                let depth = *depth_guard;
                let quiet = st.quiet_gen();
                let g = st.begin_cancel();
                let s = self.sh.stamp.fetch_add(1, SeqCst);
                let q = &self.sh.queues[qi];
                q.qin_inc();
                let on = style == Op::ModDelayedOn;
                let r = self.guarded(op, id, || {
                    if on {
                        match wq.mod_delayed_on(cpu, &dw, delay) {
                            Ok(b) => b,
                            Err(e) => {
                                sh.fail(
                                    "contract",
                                    format!("mod_delayed_on({cpu}) of {name}: {e}"),
                                );
                                false
                            }
                        }
                    } else {
                        wq.mod_delayed(&dw, delay)
                    }
                });
                let Some(was_pending) = r else { return };
                if was_pending {
                    self.resolved_by_cancel(&st);
                }
                st.end_cancel();
                if depth == 0 {
                    st.accepted.fetch_add(1, SeqCst);
                    // Recorded only if no other cancel-like call overlapped this one.
                    if quiet == Some(g - 1) {
                        self.recs.insert(
                            (id, qi as u64),
                            Rec {
                                s,
                                cg: g,
                                delayed: true,
                            },
                        );
                    }
                } else {
                    q.qin_dec();
                    if was_pending {
                        self.sh.fail(
                            "mod_delayed",
                            format!("mod_delayed of disabled {} said it was pending", st.name),
                        );
                    }
                }
                drop(depth_guard);
            }
        }
    }

    pub(super) fn op_flush_item(&mut self, op: Op) {
        let id = if self.rng.chance(1, 8) {
            self.pick_from(|w| &w.ordered)
        } else {
            self.shared_item()
        };
        let h = self.h(id);
        let st = self.st(id);
        // A delayed item's own flush fires its timer; its Work's flush does not wait for one.
        let via_dw = op == Op::FlushItem && matches!(h, Handle::D(_)) && self.rng.chance(3, 4);
        let quiet = st.fend.load(SeqCst) == st.fstart.load(SeqCst);
        let mine = if via_dw {
            st.fstart.fetch_add(1, SeqCst) + 1
        } else {
            0
        };
        let sh = self.sh.clone();
        let name = st.name.clone();
        let r = self.guarded(op, id, || {
            if op == Op::TryFlushItem {
                if let Err(e) = h.work().try_flush() {
                    sh.fail(
                        "contract",
                        format!("try_flush of {name} from a plain thread: {e}"),
                    );
                }
            } else if via_dw {
                h.flush();
            } else {
                h.work().flush();
            }
        });
        if via_dw {
            st.fend.fetch_add(1, SeqCst);
        }
        let alone = !via_dw || (quiet && st.fstart.load(SeqCst) == mine);
        if r.is_some() && alone {
            let what = if via_dw {
                "DelayedWork::flush"
            } else {
                "Work::flush"
            };
            self.check_flush(what, Some(id), None, via_dw);
        }
    }

    pub(super) fn op_set_max_active(&mut self) {
        if self.sh.skip.sma {
            return;
        }
        let varying: Vec<usize> = (0..self.sh.queues.len())
            .filter(|&i| self.sh.queues[i].varying)
            .collect();
        let qi = varying[self.rng.index(varying.len())];
        let new = if self.rng.chance(1, 60) {
            0
        } else {
            1 + self.rng.index(4)
        };
        let eff = if new == 0 { DFL_ACTIVE } else { new };
        let sh = self.sh.clone();
        let q = &sh.queues[qi];
        let mut log = lock(&q.log);
        let old = *log.limits.last().expect("never empty");
        let push = |log: &mut LimitLog| {
            log.limits.push(eff);
            q.cur_idx.store(log.limits.len() - 1, SeqCst);
        };
        // A raise is logged before it takes effect, a lowering after: the log never claims a
        // lower limit than the engine may be using.
        if eff >= old {
            push(&mut log);
        }
        let r = self.guarded(Op::SetMaxActive, 10_000 + qi, || q.wq.set_max_active(new));
        if eff < old {
            push(&mut log);
        }
        // Still under the log lock: nobody else changes the limit meanwhile.
        let now = q.wq.max_active();
        drop(log);
        sh.stats.sma.fetch_add(1, Relaxed);
        match r {
            Some(Ok(())) if now == eff => {}
            Some(r) => sh.fail(
                "contract",
                format!(
                    "set_max_active({new}) on {} gave {r:?}, max_active() then {now}",
                    q.name
                ),
            ),
            None => {}
        }
    }

    pub(super) fn op_set_max_active_bad(&mut self) {
        let sh = self.sh.clone();
        if self.rng.chance(1, 2) {
            let q = &sh.queues[ORDERED_Q];
            let n = 1 + self.rng.index(4);
            let r = self.guarded(Op::SetMaxActiveBad, 10_000 + ORDERED_Q, || {
                q.wq.set_max_active(n)
            });
            if let Some(r) = r {
                if !matches!(r, Err(Error::Ordered { .. })) || q.wq.max_active() != 1 {
                    sh.fail(
                        "contract",
                        format!("set_max_active({n}) on an ordered queue: {r:?}"),
                    );
                }
            }
        } else {
            let qi = self.rng.index(sh.queues.len());
            let q = &sh.queues[qi];
            let before = q.wq.max_active();
            let n = cmwq::WQ_MAX_ACTIVE + 1 + self.rng.index(10_000);
            let r = self.guarded(Op::SetMaxActiveBad, 10_000 + qi, || q.wq.set_max_active(n));
            if let Some(r) = r {
                let ok = if q.ordered {
                    matches!(
                        r,
                        Err(Error::Ordered { .. }) | Err(Error::InvalidMaxActive { .. })
                    )
                } else {
                    matches!(r, Err(Error::InvalidMaxActive { .. }))
                };
                // A concurrent set_max_active may change the value; only the fixed ones are
                // compared.
                if !ok || (!q.varying && q.wq.max_active() != before) {
                    sh.fail(
                        "contract",
                        format!("set_max_active({n}) on {}: {r:?}", q.name),
                    );
                }
            }
        }
    }

    pub(super) fn op_roam(&mut self, op: Op) {
        let id = self.pick_from(|w| &w.roaming);
        let h = self.h(id);
        if op == Op::RoamPerm {
            let qi = self.rng.index(self.sh.queues.len());
            let wq = self.sh.queues[qi].wq.clone();
            let cpu = self.cpu();
            let on = self.rng.chance(1, 3);
            self.queue_op(op, id, qi as u64, false, move || {
                if on {
                    wq.queue_on(cpu, h.work()).unwrap_or(false)
                } else {
                    wq.queue(h.work())
                }
            });
        } else {
            let Some((wq, qid)) = self.random_spare() else {
                return;
            };
            // Refused (false) while the queue drains or is destroyed by its owner meanwhile.
            self.queue_op(op, id, SPARE_BASE + qid, false, move || wq.queue(h.work()));
        }
    }

    /// Drains this thread's spare. A timer of the private delayed item that fires meanwhile is
    /// refused (as in the kernel, where that is the caller's bug) and never runs: it is
    /// accounted for at the item's next quiescent point (`reconcile_private`).
    pub(super) fn op_drain_own_spare(&mut self) {
        let Some((wq, qid)) = self.own_spare() else {
            return;
        };
        let pd = self.w.private[self.tid].1;
        let st = self.st(pd);
        st.begin_cancel();
        st.drop_chances.fetch_add(1, SeqCst);
        st.tearing.store(true, SeqCst);
        let r = self.guarded(Op::DrainSpare, 20_000 + qid as usize, || wq.drain());
        st.tearing.store(false, SeqCst);
        if r.is_none() {
            return;
        }
        st.end_cancel();
        self.check_flush("drain", None, Some(SPARE_BASE + qid), false);
    }

    /// A private item its owner has just made quiescent (`cancel_sync`, or the destroy of its
    /// queue for the plain one): what was accepted either ran, was cancelled, or (delayed item
    /// only) was dropped by one of the drains or destroys since the last reconciliation (see
    /// `drop_chances`).
    pub(super) fn reconcile_private(&self, id: usize, when: &str) {
        let st = self.st(id);
        let chances = st.drop_chances.swap(0, SeqCst) as i64;
        let inflight = st.accepted.load(SeqCst) as i64
            - st.runs.load(SeqCst) as i64
            - st.cancels.load(SeqCst) as i64
            - st.drops.load(SeqCst) as i64;
        let allowed = if st.delayed { chances } else { 0 };
        if (0..=allowed).contains(&inflight) {
            st.drops.fetch_add(inflight as u64, SeqCst);
        } else {
            self.sh.fail(
                "accounting",
                format!(
                    "{} after {when}: {inflight} accepted instance(s) neither ran nor were \
                     cancelled, while drains and destroys of its queue may have dropped at most \
                     {allowed}",
                    st.name
                ),
            );
        }
    }

    pub(super) fn op_private(&mut self, op: Op) {
        let (p, pd) = self.w.private[self.tid];
        let id = if self.rng.chance(1, 2) { p } else { pd };
        let st = self.st(id);
        let h = self.h(id);
        match op {
            Op::PrivQueue => {
                let Some((wq, qid)) = self.own_spare() else {
                    return;
                };
                let synced = st.synced_runs.swap(u64::MAX, SeqCst);
                let runs = st.runs.load(SeqCst);
                if synced != u64::MAX && runs != synced {
                    self.sh.fail(
                        "cancel_sync",
                        format!(
                            "{} ran {} time(s) after cancel_sync returned, without being queued \
                             again",
                            st.name,
                            runs - synced
                        ),
                    );
                }
                st.chain.store(self.rng.below(4) as u32, SeqCst);
                let delay = self.short_delay();
                let delayed = matches!(h, Handle::D(_));
                self.queue_op(op, id, SPARE_BASE + qid, delayed, move || match &h {
                    Handle::W(w) => wq.queue(w),
                    Handle::D(d) => wq.queue_delayed(d, delay),
                });
            }
            Op::PrivCancelSync => {
                let Some(_) = self.do_cancel_sync(op, id) else {
                    return;
                };
                self.sh.stats.sync_checks.fetch_add(1, Relaxed);
                let running = st.det.running();
                let pending = h.is_pending();
                if running != 0 || pending {
                    self.sh.fail(
                        "cancel_sync",
                        format!(
                            "after cancel_sync of {} returned: {running} run(s) in progress, \
                             pending {pending}",
                            st.name
                        ),
                    );
                }
                st.synced_runs.store(st.runs.load(SeqCst), SeqCst);
                self.reconcile_private(id, "cancel_sync");
            }
            Op::PrivFlush => {
                if self.guarded(op, id, || h.flush()).is_some() {
                    self.check_flush("flush of a private item", Some(id), None, true);
                }
            }
            _ => self.do_cancel(op, id),
        }
    }

    /// Destroys this thread's spare queue and checks what it leaves; makes a new one if
    /// `replace`.
    pub(super) fn destroy_spare_of(&mut self, owner: usize, replace: bool) {
        let Some(spare) = lock(&self.w.spares[owner]).take() else {
            return;
        };
        let (p, pd) = self.w.private[owner];
        let keep = spare.wq.clone();
        let qid = spare.qid;
        // A timer of the private delayed item may be dropped by the destroy.
        let pd_st = self.st(pd);
        pd_st.begin_cancel();
        pd_st.tearing.store(true, SeqCst);
        let wq = spare.wq;
        let r = self.guarded(Op::DestroySpare, 20_000 + qid as usize, move || {
            wq.destroy()
        });
        pd_st.tearing.store(false, SeqCst);
        if r.is_none() {
            return;
        }
        pd_st.end_cancel();
        self.sh.stats.destroys.fetch_add(1, Relaxed);
        for id in [p, pd] {
            let st = self.st(id);
            let h = self.h(id);
            let running = st.det.running();
            let mut pending = h.is_pending();
            if pending && st.delayed && self.sh.skip.destroy_pending {
                // A timer fire in flight when destroy returned: it is refused and released.
                pending = !wait_until(Duration::from_secs(1), || !h.is_pending());
            }
            if running != 0 || pending {
                self.sh.fail(
                    "destroy",
                    format!(
                        "destroy of spare #{qid} (kind {}) returned with {} still pending \
                         {pending}, {running} run(s) in progress ({:?})",
                        spare.kind,
                        st.name,
                        h.work(),
                    ),
                );
            }
        }
        // The destroy may have dropped the delayed item's armed timer: make it quiescent and
        // account for it.
        self.st(pd).drop_chances.fetch_add(1, SeqCst);
        if self.do_cancel_sync(Op::DestroySpare, pd).is_some() {
            self.reconcile_private(p, "destroy");
            self.reconcile_private(pd, "destroy");
        }
        // Everything queued on it before the destroy has run (the destroy drains).
        self.check_flush("destroy (drain)", None, Some(SPARE_BASE + qid), true);
        {
            let mut l = lock(&self.w.leftovers);
            l.push_back((keep, qid));
            while l.len() > 8 {
                l.pop_front();
            }
        }
        if replace {
            let kind = (spare.kind + 1) % SPARE_KINDS;
            let qid = self.w.next_qid.fetch_add(1, SeqCst);
            let wq = make_spare(self.sh.seed, owner, qid, kind);
            *lock(&self.w.items[p].st.target) = Some(wq.clone());
            *lock(&self.w.items[pd].st.target) = Some(wq.clone());
            *lock(&self.w.spares[owner]) = Some(Spare { wq, qid, kind });
        }
    }

    pub(super) fn op_leftover(&mut self) {
        let pick = {
            let l = lock(&self.w.leftovers);
            if l.is_empty() {
                None
            } else {
                let i = self.rng.index(l.len());
                Some(l[i].clone())
            }
        };
        let Some((wq, qid)) = pick else { return };
        let which = self.rng.below(9);
        self.leftover_check(&wq, 20_000 + qid as usize, which);
    }

    /// One op through a handle of a destroyed queue: refused, never accepted, never a panic.
    /// `arg` names the queue for the watchdog (see [`Actor::guarded`]).
    pub(super) fn leftover_check(&mut self, wq: &Workqueue, arg: usize, which: u64) {
        self.sh.stats.leftover_ops.fetch_add(1, Relaxed);
        let name = wq.name().to_string();
        let id = self.pick_from(|w| &w.roaming);
        let st = self.st(id);
        let h = self.h(id);
        let cpu = self.cpu();
        let bad = |what: &str, got: String| {
            format!("{what} through a leftover handle of destroyed queue {name:?} gave {got}")
        };
        match which {
            0..=2 => {
                let r = self.guarded(Op::Leftover, arg, || match which {
                    0 => Ok(wq.queue(h.work())),
                    1 => wq.try_queue(h.work()),
                    _ => wq.queue_on(cpu, h.work()),
                });
                let Some(r) = r else { return };
                let refused = matches!(
                    (which, &r),
                    (1, Err(Error::Destroyed { .. })) | (_, Ok(false))
                );
                if !refused {
                    if matches!(r, Ok(true)) {
                        // Count it, so quiescence shows whether it ever ran.
                        st.accepted.fetch_add(1, SeqCst);
                    }
                    self.sh
                        .fail("leftover", bad("queue of a roaming item", format!("{r:?}")));
                }
            }
            3..=5 => {
                let tmp = DelayedWork::new(|_| {});
                let delay = if which == 5 {
                    Duration::ZERO
                } else {
                    self.short_delay()
                };
                let r = self.guarded(Op::Leftover, arg, || match which {
                    3 => Ok(wq.queue_delayed(&tmp, delay)),
                    4 => Ok(wq.mod_delayed(&tmp, delay)),
                    _ => wq.queue_delayed_on(cpu, &tmp, delay),
                });
                let Some(r) = r else { return };
                if !matches!(r, Ok(false)) || tmp.is_pending() {
                    self.sh.fail(
                        "leftover",
                        bad(
                            "arming a delayed item",
                            format!("{r:?}, pending {}", tmp.is_pending()),
                        ),
                    );
                    tmp.cancel();
                }
            }
            6 | 7 => {
                let r = self.guarded(Op::Leftover, arg, || {
                    wq.flush();
                    let f = wq.try_flush();
                    wq.drain();
                    (f, wq.try_drain(), wq.max_active(), wq.is_ordered())
                });
                if let Some((f, d, _, _)) = r {
                    let ok =
                        |x: &Result<(), Error>| matches!(x, Ok(()) | Err(Error::Destroyed { .. }));
                    if !ok(&f) || !ok(&d) {
                        self.sh.fail(
                            "leftover",
                            bad("try_flush / try_drain", format!("{f:?} / {d:?}")),
                        );
                    }
                }
            }
            _ => {
                if self.sh.skip.leftover_sma {
                    return;
                }
                let n = 1 + self.rng.index(4);
                let r = self.guarded(Op::Leftover, arg, || wq.set_max_active(n));
                if let Some(r) = r {
                    // Refusing is the natural answer; accepting a limit nothing uses is harmless.
                    if !matches!(
                        r,
                        Ok(()) | Err(Error::Destroyed { .. }) | Err(Error::Ordered { .. })
                    ) {
                        self.sh.fail(
                            "leftover",
                            bad(&format!("set_max_active({n})"), format!("{r:?}")),
                        );
                    }
                }
            }
        }
    }

    pub(super) fn op_outage(&mut self) {
        if self.sh.skip.outage || self.w.outage.swap(true, SeqCst) {
            return;
        }
        self.sh.stats.outages.fetch_add(1, Relaxed);
        let d = Duration::from_micros(500 + self.rng.below(8_000));
        let _ = self.guarded(Op::Outage, usize::MAX, || {
            cmwq::fail_worker_creation(true);
            std::thread::sleep(d);
            cmwq::fail_worker_creation(false);
        });
        self.w.outage.store(false, SeqCst);
    }

    pub(super) fn op_ord_queue(&mut self) {
        let id = self.pick_from(|w| &w.ordered);
        let q = &self.sh.queues[ORDERED_Q];
        let o = q.ord_qseq.fetch_add(1, SeqCst);
        let wq = q.wq.clone();
        let h = self.h(id);
        let cpu = self.cpu();
        let on = self.rng.chance(1, 3);
        let r = self.queue_op(Op::OrdQueue, id, ORDERED_Q as u64, false, move || {
            if on {
                wq.queue_on(cpu, h.work()).unwrap_or(false)
            } else {
                wq.queue(h.work())
            }
        });
        if r == Some(true) {
            lock(&self.st(id).ord_inst).push(o);
        }
    }
}
