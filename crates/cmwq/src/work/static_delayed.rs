//! Delayed work items declared as `static`s (the kernel's `DECLARE_DELAYED_WORK`).
//!
//! The delayed counterpart of [`StaticWork`](crate::StaticWork): a `const` constructor
//! takes a function pointer, and the item (a [`DelayedWork`]) is made on first use and keeps
//! its identity for the life of the process.

use std::fmt;
use std::ops::Deref;
use std::sync::OnceLock;

use crate::{DelayedWork, Work};

/// A delayed work item declared as a `static` (the kernel's `DECLARE_DELAYED_WORK`).
///
/// It dereferences to its [`DelayedWork`], so every delayed-work call takes it as it is:
/// [`Workqueue::queue_delayed`](crate::Workqueue::queue_delayed) and
/// [`mod_delayed`](crate::Workqueue::mod_delayed) (`&ITEM` coerces to `&DelayedWork`),
/// [`cancel`](DelayedWork::cancel), [`cancel_sync`](DelayedWork::cancel_sync),
/// [`flush`](DelayedWork::flush), and [`work`](DelayedWork::work) for the plain item. The
/// item is made on first use (one allocation, then none); all uses name the same item.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use cmwq::{system_wq, DelayedWork, StaticDelayedWork};
///
/// static RUNS: AtomicUsize = AtomicUsize::new(0);
/// static SYNC_DISK: StaticDelayedWork = StaticDelayedWork::new(|_: &DelayedWork| {
///     RUNS.fetch_add(1, Ordering::SeqCst);
/// });
///
/// assert!(system_wq().queue_delayed(&SYNC_DISK, Duration::from_secs(3600)));
/// assert!(system_wq().mod_delayed(&SYNC_DISK, Duration::from_secs(7200))); // re-armed
/// assert!(SYNC_DISK.cancel()); // disarmed: it will not run
///
/// system_wq().queue_delayed(&SYNC_DISK, Duration::from_secs(3600));
/// assert!(SYNC_DISK.flush()); // fires the timer now and waits for the run
/// assert_eq!(RUNS.load(Ordering::SeqCst), 1);
/// ```
pub struct StaticDelayedWork {
    f: fn(&DelayedWork),
    cell: OnceLock<DelayedWork>,
}

impl StaticDelayedWork {
    /// Declares a static delayed item running `f`.
    pub const fn new(f: fn(&DelayedWork)) -> Self {
        StaticDelayedWork {
            f,
            cell: OnceLock::new(),
        }
    }

    /// The item (made on first use; the same identity on every call).
    pub fn delayed_work(&self) -> &DelayedWork {
        self.cell.get_or_init(|| DelayedWork::new(self.f))
    }

    /// The embedded work item (the kernel's `dwork->work`), as [`DelayedWork::work`].
    pub fn work(&self) -> &Work {
        self.delayed_work().work()
    }
}

impl Deref for StaticDelayedWork {
    type Target = DelayedWork;

    fn deref(&self) -> &DelayedWork {
        self.delayed_work()
    }
}

impl fmt::Debug for StaticDelayedWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticDelayedWork")
            .field("item", &self.cell.get())
            .finish()
    }
}
