//! Work items: handles with identity, embedding in user structs, and static items.

use std::any::Any;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::work::data::{State, WorkData};

/// The part of a work item the engine owns: its atomic data word (the kernel's
/// `work_struct`). Embed one in your own type and implement [`WorkItem`] to queue that type
/// without a second allocation.
#[derive(Debug)]
pub struct WorkField {
    pub(crate) data: WorkData,
    /// The item's position on the pool list it is queued on (`pool::list`). Guarded by that
    /// pool's lock: written and read only under it, hence Relaxed.
    list_pos: AtomicU64,
}

impl WorkField {
    /// A new, idle work field.
    #[cfg(not(cmwq_loom))]
    pub const fn new() -> Self {
        WorkField {
            data: WorkData::new(),
            list_pos: AtomicU64::new(0),
        }
    }

    /// A new, idle work field (not `const` in loom model builds: loom atomics aren't).
    #[cfg(cmwq_loom)]
    pub fn new() -> Self {
        WorkField {
            data: WorkData::new(),
            list_pos: AtomicU64::new(0),
        }
    }
}

impl Default for WorkField {
    fn default() -> Self {
        Self::new()
    }
}

/// A type that can be queued as a work item (Rust-for-Linux's `WorkItem` + `HasWork`).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use cmwq::{Work, WorkField, WorkItem};
///
/// struct Counter {
///     work: WorkField,
///     hits: AtomicUsize,
/// }
///
/// impl WorkItem for Counter {
///     fn work_field(&self) -> &WorkField {
///         &self.work
///     }
///     fn run(&self, _work: &Work) {
///         self.hits.fetch_add(1, Ordering::Relaxed);
///     }
/// }
///
/// let counter = Arc::new(Counter { work: WorkField::new(), hits: AtomicUsize::new(0) });
/// let work = Work::from_arc(counter.clone());
/// cmwq::system_wq().queue(&work);
/// work.flush();
/// assert_eq!(counter.hits.load(Ordering::Relaxed), 1);
/// ```
pub trait WorkItem: Any + Send + Sync {
    /// The embedded [`WorkField`]. Must return the same field on every call.
    fn work_field(&self) -> &WorkField;

    /// The work function. `work` is the handle the item was queued through.
    fn run(&self, work: &Work);

    /// A name for reports and traces (the kernel prints the function symbol).
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// The delayed-work field, for items that are delayed work (implemented for every
    /// [`DelayedWorkItem`](crate::DelayedWorkItem)); lets `cancel` and friends stop the timer.
    #[doc(hidden)]
    fn delayed_field(&self) -> Option<&crate::DelayedWorkField> {
        None
    }
}

/// A closure work item (what [`Work::new`] makes).
struct FnWork<F> {
    field: WorkField,
    f: F,
}

impl<F: Fn(&Work) + Send + Sync + 'static> WorkItem for FnWork<F> {
    fn work_field(&self) -> &WorkField {
        &self.field
    }

    fn run(&self, work: &Work) {
        (self.f)(work)
    }

    fn name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// A work item: a function with identity.
///
/// `Work` is a cheap handle (one `Arc`); clones are the same item. Queueing an item that is
/// already pending does nothing and returns `false`; an item never runs on two workers of a
/// workqueue at once.
#[derive(Clone)]
pub struct Work {
    inner: Arc<dyn WorkItem>,
}

/// What [`Work::busy`] found (the kernel's `work_busy()`); advisory only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkBusy {
    /// Queued and not yet started (or between lists).
    pub pending: bool,
    /// Executing on some worker.
    pub running: bool,
}

impl Work {
    /// A work item that calls `f` each time it runs.
    pub fn new<F>(f: F) -> Work
    where
        F: Fn(&Work) + Send + Sync + 'static,
    {
        Work {
            inner: Arc::new(FnWork {
                field: WorkField::new(),
                f,
            }),
        }
    }

    /// A handle on an item embedded in `item` (no allocation).
    pub fn from_arc<T: WorkItem>(item: Arc<T>) -> Work {
        Work { inner: item }
    }

    /// The embedding object, if it is a `T`.
    pub fn downcast_arc<T: WorkItem>(&self) -> Option<Arc<T>> {
        let any: Arc<dyn Any + Send + Sync> = self.inner.clone();
        any.downcast::<T>().ok()
    }

    /// Whether two handles are the same item.
    pub fn ptr_eq(a: &Work, b: &Work) -> bool {
        a.key() == b.key()
    }

    /// Whether the item is pending (queued and not yet started). A hint: it may change at once.
    pub fn is_pending(&self) -> bool {
        match self.data().state() {
            State::Queued { .. } => true,
            State::OffQueue { pending, .. } => pending,
        }
    }

    /// Whether the item is pending and whether it is running (the kernel's `work_busy()`).
    /// Advisory only: both may change at once.
    pub fn busy(&self) -> WorkBusy {
        let state = self.data().state();
        let running = crate::pool::pool_by_id(state.pool())
            .is_some_and(|pool| pool.locked.lock().busy.contains_key(&self.key()));
        WorkBusy {
            pending: self.is_pending(),
            running,
        }
    }

    /// Identity: the address of the item.
    #[inline]
    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.inner) as *const () as usize
    }

    /// Records the item's position on the list it is pushed on (under that list's pool lock).
    #[inline]
    pub(crate) fn set_list_pos(&self, pos: u64) {
        self.inner
            .work_field()
            .list_pos
            .store(pos, Ordering::Relaxed);
    }

    /// The position recorded by the last push (meaningful under the lock of the pool whose
    /// list holds the item).
    #[inline]
    pub(crate) fn list_pos(&self) -> u64 {
        self.inner.work_field().list_pos.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn data(&self) -> &WorkData {
        &self.inner.work_field().data
    }

    pub(crate) fn run(&self) {
        self.inner.run(self)
    }

    /// The timer part, if this is the work of a delayed item.
    pub(crate) fn delayed(&self) -> Option<&crate::DelayedWorkField> {
        self.inner.delayed_field()
    }

    pub(crate) fn func_name(&self) -> &'static str {
        self.inner.name()
    }
}

impl PartialEq for Work {
    fn eq(&self, other: &Work) -> bool {
        Work::ptr_eq(self, other)
    }
}

impl Eq for Work {}

impl Hash for Work {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl fmt::Debug for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Work")
            .field("function", &self.func_name())
            .field("state", &self.data().state())
            .finish()
    }
}

/// A work item declared as a `static` (the kernel's `DECLARE_WORK`).
///
/// ```
/// use cmwq::{StaticWork, Work};
///
/// static HELLO: StaticWork = StaticWork::new(|_: &Work| println!("hello from a kworker"));
///
/// cmwq::system_wq().queue(HELLO.work());
/// HELLO.work().flush();
/// ```
pub struct StaticWork {
    f: fn(&Work),
    cell: OnceLock<Work>,
}

impl StaticWork {
    /// Declares a static item running `f`.
    pub const fn new(f: fn(&Work)) -> Self {
        StaticWork {
            f,
            cell: OnceLock::new(),
        }
    }

    /// The item (made on first use; the same identity on every call).
    pub fn work(&self) -> &Work {
        self.cell.get_or_init(|| Work::new(self.f))
    }
}

impl fmt::Debug for StaticWork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticWork").finish_non_exhaustive()
    }
}
