//! The reference model of `model_lifecycle.rs`: what the engine should do, op by op.

use super::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pend {
    Idle,
    Queued {
        q: usize,
    },
    /// Armed on a timer: fires at `at` (virtual ms; `NEVER` for never), ties broken by `seq`.
    Armed {
        q: usize,
        at: u64,
        seq: u64,
    },
}

#[derive(Clone, Copy, Debug)]
pub(super) struct ItemM {
    pub(super) pending: Pend,
    pub(super) disable: u32,
    pub(super) runs: u64,
}

#[derive(Clone, Debug, Default)]
pub(super) struct QueueM {
    pub(super) destroyed: bool,
    /// Items queued on it, in queueing order.
    pub(super) fifo: Vec<usize>,
}

/// What the last transition must have returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ret {
    Nothing,
    Bool(bool),
    /// Not compared (see the module docs).
    Racy,
    InvalidCpu,
    /// `set_max_active` on an ordered queue.
    Ordered,
    /// `set_max_active` through a leftover handle: `Ok` or `Err(Destroyed)`, no panic.
    Leftover,
}

#[derive(Clone, Debug)]
pub(super) struct Model {
    pub(super) now: u64,
    pub(super) seq: u64,
    pub(super) items: [ItemM; ITEMS],
    pub(super) queues: [QueueM; QUEUES],
    pub(super) ret: Ret,
    /// The release the last transition caused: (run order is exact, the items in run order).
    pub(super) release: Option<(bool, Vec<usize>)>,
}

impl Model {
    pub(super) fn new() -> Model {
        Model {
            now: 0,
            seq: 0,
            items: [ItemM {
                pending: Pend::Idle,
                disable: 0,
                runs: 0,
            }; ITEMS],
            queues: Default::default(),
            ret: Ret::Nothing,
            release: None,
        }
    }

    /// Takes item `i` off whatever it is pending on.
    pub(super) fn unpend(&mut self, i: usize) -> bool {
        let was = self.items[i].pending;
        if let Pend::Queued { q } = was {
            self.queues[q].fifo.retain(|&x| x != i);
        }
        self.items[i].pending = Pend::Idle;
        was != Pend::Idle
    }

    pub(super) fn enqueue(&mut self, i: usize, q: usize) {
        self.items[i].pending = Pend::Queued { q };
        self.queues[q].fifo.push(i);
    }

    pub(super) fn arm(&mut self, i: usize, q: usize, ms: u64) {
        if ms == 0 {
            self.enqueue(i, q);
        } else {
            self.seq += 1;
            let at = if ms == NEVER { NEVER } else { self.now + ms };
            self.items[i].pending = Pend::Armed {
                q,
                at,
                seq: self.seq,
            };
        }
    }

    /// Queue `q` runs everything queued on it, in order.
    pub(super) fn release(&mut self, q: usize) {
        let ids = std::mem::take(&mut self.queues[q].fifo);
        for &i in &ids {
            self.items[i].pending = Pend::Idle;
            self.items[i].runs += 1;
        }
        self.release = Some((q != PER_CPU_Q, ids));
    }

    pub(super) fn can_queue(&self, i: usize, q: usize) -> bool {
        !self.queues[q].destroyed
            && self.items[i].disable == 0
            && self.items[i].pending == Pend::Idle
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) enum T {
    Queue {
        i: usize,
        q: usize,
    },
    QueueOn {
        i: usize,
        q: usize,
        cpu: usize,
    },
    QueueOnBadCpu {
        i: usize,
        q: usize,
    },
    Cancel {
        i: usize,
    },
    CancelSync {
        i: usize,
    },
    Disable {
        i: usize,
    },
    Enable {
        i: usize,
    },
    FlushItem {
        i: usize,
    },
    FlushQueue {
        q: usize,
    },
    QueueDelayed {
        d: usize,
        q: usize,
        ms: u64,
    },
    QueueDelayedOn {
        d: usize,
        q: usize,
        cpu: usize,
        ms: u64,
    },
    ModDelayed {
        d: usize,
        q: usize,
        ms: u64,
    },
    DelayedCancel {
        d: usize,
    },
    DelayedCancelSync {
        d: usize,
    },
    DelayedFlush {
        d: usize,
    },
    Advance {
        ms: u64,
    },
    Destroy {
        q: usize,
    },
    SetMaxActive {
        q: usize,
        n: usize,
    },
}

pub(super) struct Lifecycle;

pub(super) fn delays() -> BoxedStrategy<u64> {
    let never = if skip("dmax") { 1000 } else { NEVER };
    prop_oneof![
        6 => 0..6u64,
        1 => Just(1000u64),
        1 => Just(never),
    ]
    .boxed()
}

impl ReferenceStateMachine for Lifecycle {
    type State = Model;
    type Transition = T;

    fn init_state() -> BoxedStrategy<Model> {
        Just(Model::new()).boxed()
    }

    fn transitions(_state: &Model) -> BoxedStrategy<T> {
        let i = 0..ITEMS;
        let d = DELAYED_FROM..ITEMS;
        let q = 0..QUEUES;
        let cpu = 0..64usize;
        prop_oneof![
            6 => (i.clone(), q.clone()).prop_map(|(i, q)| T::Queue { i, q }),
            3 => (i.clone(), q.clone(), cpu.clone()).prop_map(|(i, q, cpu)| T::QueueOn { i, q, cpu }),
            1 => (i.clone(), q.clone()).prop_map(|(i, q)| T::QueueOnBadCpu { i, q }),
            3 => i.clone().prop_map(|i| T::Cancel { i }),
            2 => i.clone().prop_map(|i| T::CancelSync { i }),
            2 => i.clone().prop_map(|i| T::Disable { i }),
            3 => i.clone().prop_map(|i| T::Enable { i }),
            2 => i.clone().prop_map(|i| T::FlushItem { i }),
            2 => q.clone().prop_map(|q| T::FlushQueue { q }),
            5 => (d.clone(), q.clone(), delays()).prop_map(|(d, q, ms)| T::QueueDelayed { d, q, ms }),
            2 => (d.clone(), q.clone(), cpu, delays())
                .prop_map(|(d, q, cpu, ms)| T::QueueDelayedOn { d, q, cpu, ms }),
            4 => (d.clone(), q.clone(), delays()).prop_map(|(d, q, ms)| T::ModDelayed { d, q, ms }),
            2 => d.clone().prop_map(|d| T::DelayedCancel { d }),
            1 => d.clone().prop_map(|d| T::DelayedCancelSync { d }),
            2 => d.prop_map(|d| T::DelayedFlush { d }),
            4 => (0..8u64).prop_map(|ms| T::Advance { ms }),
            1 => q.clone().prop_map(|q| T::Destroy { q }),
            1 => (q, 1..5usize).prop_map(|(q, n)| T::SetMaxActive { q, n }),
        ]
        .boxed()
    }

    fn preconditions(s: &Model, t: &T) -> bool {
        match *t {
            T::Enable { i } => s.items[i].disable > 0,
            T::Disable { i } => s.items[i].disable < 3,
            // mod_delayed through a leftover handle cancels what is pending elsewhere before it
            // is refused: unspecified, so only tried on idle items.
            T::ModDelayed { d, q, .. } => {
                !s.queues[q].destroyed || s.items[d].pending == Pend::Idle
            }
            // Live queues keep their limit (the plug relies on it): only the refusals.
            T::SetMaxActive { q, .. } => {
                (q == ORDERED_Q && !s.queues[q].destroyed)
                    || (s.queues[q].destroyed && !skip("leftover_sma"))
            }
            _ => true,
        }
    }

    fn apply(mut s: Model, t: &T) -> Model {
        s.ret = Ret::Nothing;
        s.release = None;
        match *t {
            T::Queue { i, q } | T::QueueOn { i, q, .. } => {
                let ok = s.can_queue(i, q);
                if ok {
                    s.enqueue(i, q);
                }
                s.ret = Ret::Bool(ok);
            }
            T::QueueOnBadCpu { .. } => s.ret = Ret::InvalidCpu,
            T::Cancel { i } | T::CancelSync { i } => s.ret = Ret::Bool(s.unpend(i)),
            T::DelayedCancel { d } | T::DelayedCancelSync { d } => s.ret = Ret::Bool(s.unpend(d)),
            T::Disable { i } => {
                let was = s.unpend(i);
                s.items[i].disable += 1;
                s.ret = Ret::Bool(was);
            }
            T::Enable { i } => {
                s.items[i].disable -= 1;
                s.ret = Ret::Bool(s.items[i].disable == 0);
            }
            T::FlushItem { i } => match s.items[i].pending {
                Pend::Queued { q } => {
                    s.release(q);
                    s.ret = Ret::Racy;
                }
                // An armed timer is not waited for; an idle item returns at once.
                _ => s.ret = Ret::Bool(false),
            },
            T::FlushQueue { q } => {
                if !s.queues[q].destroyed {
                    s.release(q);
                }
            }
            T::QueueDelayed { d, q, ms } | T::QueueDelayedOn { d, q, ms, .. } => {
                let ok = s.can_queue(d, q);
                if ok {
                    s.arm(d, q, ms);
                }
                s.ret = Ret::Bool(ok);
            }
            T::ModDelayed { d, q, ms } => {
                if s.items[d].disable > 0 {
                    // Left alone; a disabled item is never pending.
                    s.ret = Ret::Bool(false);
                } else {
                    let was = s.unpend(d);
                    if s.queues[q].destroyed {
                        s.ret = Ret::Bool(false);
                    } else {
                        s.arm(d, q, ms);
                        s.ret = Ret::Bool(was);
                    }
                }
            }
            T::DelayedFlush { d } => match s.items[d].pending {
                Pend::Armed { q, .. } => {
                    // Fired at once onto its queue, then waited for.
                    s.unpend(d);
                    s.enqueue(d, q);
                    s.release(q);
                    s.ret = Ret::Bool(true);
                }
                Pend::Queued { q } => {
                    s.release(q);
                    s.ret = Ret::Racy;
                }
                Pend::Idle => s.ret = Ret::Bool(false),
            },
            T::Advance { ms } => {
                s.now += ms;
                let mut due: Vec<(u64, u64, usize, usize)> = (0..ITEMS)
                    .filter_map(|i| match s.items[i].pending {
                        Pend::Armed { q, at, seq } if at != NEVER && at <= s.now => {
                            Some((at, seq, i, q))
                        }
                        _ => None,
                    })
                    .collect();
                due.sort_unstable();
                for (_, _, i, q) in due {
                    s.items[i].pending = Pend::Idle;
                    s.enqueue(i, q);
                }
            }
            T::Destroy { q } => {
                if !s.queues[q].destroyed {
                    // Armed timers of the queue are cancelled; what is queued is drained.
                    for i in 0..ITEMS {
                        if matches!(s.items[i].pending, Pend::Armed { q: t, .. } if t == q) {
                            s.items[i].pending = Pend::Idle;
                        }
                    }
                    s.release(q);
                    s.queues[q].destroyed = true;
                }
            }
            T::SetMaxActive { q, .. } => {
                s.ret = if s.queues[q].destroyed {
                    Ret::Leftover
                } else {
                    Ret::Ordered
                };
            }
        }
        s
    }
}
