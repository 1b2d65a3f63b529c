//! The system workqueues (the kernel's `system_*_wq`) and `schedule_work`.

use std::sync::OnceLock;

use crate::queue::workqueue::{WqFlags, WQ_MAX_ACTIVE};
use crate::{Error, Work, Workqueue};

macro_rules! system_wq {
    ($(#[$doc:meta])* $fn:ident, $name:literal, $flags:expr, $max:expr) => {
        $(#[$doc])*
        pub fn $fn() -> &'static Workqueue {
            static WQ: OnceLock<Workqueue> = OnceLock::new();
            WQ.get_or_init(|| Workqueue::new_system($name, $flags, $max))
        }
    };
}

system_wq!(
    /// `"events"`: the per-CPU queue for short items; target of [`schedule_work`].
    system_wq, "events", WqFlags::empty(), 0
);
system_wq!(
    /// `"events_highpri"`: per-CPU, served by the high-priority pools.
    system_highpri_wq, "events_highpri", WqFlags::HIGHPRI, 0
);
system_wq!(
    /// `"events_long"`: per-CPU, for items that may run long (flushing it may take long).
    system_long_wq, "events_long", WqFlags::empty(), 0
);
system_wq!(
    /// `"events_unbound"`: unbound, `max_active` 2048; items may run on any CPU.
    system_unbound_wq, "events_unbound", WqFlags::UNBOUND, WQ_MAX_ACTIVE
);
system_wq!(
    /// `"events_freezable"`: per-CPU and freezable.
    system_freezable_wq, "events_freezable", WqFlags::FREEZABLE, 0
);
system_wq!(
    /// `"events_power_efficient"`: per-CPU unless power-efficient mode is on.
    system_power_efficient_wq, "events_power_efficient", WqFlags::POWER_EFFICIENT, 0
);
system_wq!(
    /// `"events_freezable_pwr_efficient"`: freezable and power-efficient.
    system_freezable_power_efficient_wq,
    "events_freezable_pwr_efficient",
    WqFlags::FREEZABLE.union(WqFlags::POWER_EFFICIENT),
    0
);

/// The kernel 6.17 name of [`system_unbound_wq`](fn@system_unbound_wq) ("default": unbound),
/// the same queue. Target of [`spawn`](fn@crate::spawn) and [`scope`](fn@crate::scope).
pub fn system_dfl_wq() -> &'static Workqueue {
    system_unbound_wq()
}

/// The kernel 6.17 name of [`system_wq`](fn@system_wq) (explicitly per-CPU), the same queue.
pub fn system_percpu_wq() -> &'static Workqueue {
    system_wq()
}

/// Queues `work` on [`system_wq`](fn@system_wq) on the calling CPU.
pub fn schedule_work(work: &Work) -> bool {
    system_wq().queue(work)
}

/// Like [`schedule_work`], with refusals (the system queue is being drained) as errors; see
/// [`Workqueue::try_queue`].
pub fn try_schedule_work(work: &Work) -> Result<bool, Error> {
    system_wq().try_queue(work)
}

/// Queues `work` on [`system_wq`](fn@system_wq) on `cpu`.
pub fn schedule_work_on(cpu: usize, work: &Work) -> Result<bool, Error> {
    system_wq().queue_on(cpu, work)
}

/// Like [`schedule_work_on`], with refusals as errors; see [`Workqueue::try_queue_on`].
pub fn try_schedule_work_on(cpu: usize, work: &Work) -> Result<bool, Error> {
    system_wq().try_queue_on(cpu, work)
}
