//! The spawned item: one allocation (an `Arc<Task<F, T>>`) holding the engine's
//! [`WorkField`], the closure and the result slot.
//!
//! The item is queued once, by [`spawn_on`] (or [`spawn_at`], on a given CPU); nobody outside this layer gets its [`Work`]
//! except the closure itself (through [`current_work`](crate::current_work)), so the only
//! ways it leaves the queue are a run, the handle's cancel, or a refusal at queueing time.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Waker;
use std::thread::Thread;

use parking_lot::Mutex;

use crate::spawn::handle::{JoinError, WorkHandle};
use crate::{Error, Work, WorkField, WorkItem, Workqueue};

/// The caught panic payload of a closure.
pub(crate) type Payload = Box<dyn Any + Send>;

/// Where a spawned closure is in its life (the slot's state; guarded by [`Slot::state`]).
///
/// | stage | meaning | set by | next |
/// |---|---|---|---|
/// | `Queued` | on the queue, not started | construction | `Running` (a worker's `run`), `Cancelled` (the handle's `cancel` after `Work::cancel` took it off the queue), `Refused` (`spawn_on` when the queue refused it) |
/// | `Running` | a worker took the closure | `run` | `Done` (handle alive), `Taken` (handle dropped: the result is dropped or the panic re-raised by the worker) |
/// | `Done` | the result waits for `join` | `run` | `Taken` (`join`/`poll` or the handle's drop take it) |
/// | `Cancelled` | taken off the queue before it started; the closure was dropped unrun | `cancel` | (final; `join` reports it) |
/// | `Refused` | the queue refused it; the closure was dropped unrun | `spawn_on` | (final; `join` reports it) |
/// | `Taken` | the result was handed out or dropped | `join`, `poll`, the handle's drop, `run` (detached) | (final) |
///
/// Only the thread that moves `Queued` to `Running`, `Cancelled` or `Refused` (under the
/// lock) may take the closure out of [`Task::f`], so it is taken at most once.
pub(crate) enum Stage<T> {
    Queued,
    Running,
    Done(Result<T, Payload>),
    Cancelled,
    Refused(Error),
    Taken,
}

/// Whoever waits for the result: a thread in `join` or the task of an executor polling the
/// handle (the last one to register wins; a handle has one owner).
pub(crate) enum Waiter {
    Thread(Thread),
    Waker(Waker),
}

impl Waiter {
    /// Wakes the waiter. User code (`Waker::wake`): call with no lock held.
    pub(crate) fn wake(self) {
        match self {
            Waiter::Thread(t) => t.unpark(),
            Waiter::Waker(w) => w.wake(),
        }
    }
}

/// What [`Slot::state`] guards.
pub(crate) struct SlotState<T> {
    pub(crate) stage: Stage<T>,
    pub(crate) waiter: Option<Waiter>,
    /// The handle was dropped: nobody will take the result.
    pub(crate) detached: bool,
}

/// The result slot shared by the item and its handle.
///
/// The mutex is this layer's own leaf lock: no engine lock is taken under it and no user code
/// runs under it (results, payloads, closures and wakers are moved out and dropped or woken
/// after it is released). It also orders the result: the worker's writes (the closure's
/// effects, the stored result) happen before the joiner's lock that finds `Done`.
pub(crate) struct Slot<T> {
    pub(crate) state: Mutex<SlotState<T>>,
}

impl<T> Slot<T> {
    fn new() -> Self {
        Slot {
            state: Mutex::new(SlotState {
                stage: Stage::Queued,
                waiter: None,
                detached: false,
            }),
        }
    }

    /// Moves a final stage into the slot and wakes the waiter (outside the lock).
    fn settle(&self, stage: Stage<T>) {
        let mut s = self.state.lock();
        s.stage = stage;
        let waiter = s.waiter.take();
        drop(s);
        if let Some(w) = waiter {
            w.wake();
        }
    }
}

impl<T> SlotState<T> {
    /// The outcome if there is one (`None` while queued or running). Leaves `Taken` behind a
    /// result; the outcome of a cancelled or refused item can be asked again.
    ///
    /// # Panics
    ///
    /// If the result was already taken (a handle polled after it returned `Ready`).
    pub(crate) fn take_outcome(&mut self) -> Option<Result<T, JoinError>> {
        match &self.stage {
            Stage::Queued | Stage::Running => None,
            Stage::Cancelled => Some(Err(JoinError::cancelled())),
            Stage::Refused(err) => Some(Err(JoinError::refused(err.clone()))),
            Stage::Taken => panic!("WorkHandle polled after its result was taken"),
            Stage::Done(_) => match std::mem::replace(&mut self.stage, Stage::Taken) {
                Stage::Done(r) => Some(r.map_err(JoinError::panic)),
                _ => unreachable!(),
            },
        }
    }

    pub(crate) fn is_finished(&self) -> bool {
        !matches!(self.stage, Stage::Queued | Stage::Running)
    }
}

/// What a handle needs from its item, with the closure's type erased.
pub(crate) trait Spawned<T>: Send + Sync {
    fn slot(&self) -> &Slot<T>;

    /// Drops the closure unrun. Called only by whoever moved the stage from `Queued` to
    /// `Cancelled` or `Refused`, with no lock held (the `Drop` of the captures is user code).
    fn drop_closure(&self);
}

/// The item: the engine's field, the result slot, the closure (taken once).
struct Task<F, T> {
    field: WorkField,
    slot: Slot<T>,
    /// Taken by the thread that moved the stage out of `Queued` (see [`Stage`]); this lock
    /// is never contended in practice and never held while the closure runs or drops.
    f: Mutex<Option<F>>,
}

impl<F, T> Spawned<T> for Task<F, T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn slot(&self) -> &Slot<T> {
        &self.slot
    }

    fn drop_closure(&self) {
        let f = self.f.lock().take();
        drop(f);
    }
}

impl<F, T> WorkItem for Task<F, T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    fn work_field(&self) -> &WorkField {
        &self.field
    }

    fn run(&self, _work: &Work) {
        {
            let mut s = self.slot.state.lock();
            if !matches!(s.stage, Stage::Queued) {
                // A second run: the closure re-queued its own item through `current_work`.
                return;
            }
            s.stage = Stage::Running;
        }
        let Some(f) = self.f.lock().take() else {
            return;
        };
        let result = catch_unwind(AssertUnwindSafe(f));
        let mut s = self.slot.state.lock();
        if s.detached {
            s.stage = Stage::Taken;
            drop(s);
            match result {
                Ok(value) => drop(value),
                // Nobody can receive it: report it as the engine reports any item's panic
                // (the worker's containment catches it again).
                Err(payload) => resume_unwind(payload),
            }
            return;
        }
        s.stage = Stage::Done(result);
        let waiter = s.waiter.take();
        drop(s);
        if let Some(w) = waiter {
            w.wake();
        }
    }

    fn name(&self) -> &'static str {
        std::any::type_name::<F>()
    }
}

/// Makes the item, queues it on `wq` and returns its handle. Never panics on refusal.
pub(crate) fn spawn_on<F, T>(wq: &Workqueue, f: F) -> WorkHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_at(wq, None, f)
}

/// [`spawn_on`], queued on `cpu` ([`Workqueue::try_queue_on`]) when one is given, else as
/// [`Workqueue::try_queue`]. An invalid CPU is a refusal like any other.
pub(crate) fn spawn_at<F, T>(wq: &Workqueue, cpu: Option<usize>, f: F) -> WorkHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let task = Arc::new(Task {
        field: WorkField::new(),
        slot: Slot::new(),
        f: Mutex::new(Some(f)),
    });
    // A second handle on the same allocation: no allocation.
    let work = Work::from_arc(task.clone());
    let queued = match cpu {
        None => wq.try_queue(&work),
        Some(cpu) => wq.try_queue_on(cpu, &work),
    };
    let refusal = match queued {
        Ok(true) => None,
        // A fresh item cannot be pending or disabled; treat the impossible as a refusal
        // rather than leave a handle that never finishes.
        Ok(false) => Some(Error::Destroyed {
            workqueue: wq.name().to_string(),
        }),
        Err(err) => Some(err),
    };
    if let Some(err) = refusal {
        // Never queued: nobody else can move the stage, so the closure is ours to drop.
        task.slot.settle(Stage::Refused(err));
        task.drop_closure();
    }
    WorkHandle::new(task, work)
}
