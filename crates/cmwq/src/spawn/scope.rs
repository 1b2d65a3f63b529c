//! Scopes: items that may borrow from the caller's stack, because the scope does not return
//! before every one of them is gone.
//!
//! # Why it is sound
//!
//! A scoped closure `F: 'scope` is wrapped in a [`ScopedJob`] (the closure, the result
//! packet, the scope's counter), boxed, and its lifetime erased to `'static` so that the
//! ordinary spawn path can queue it. Erasing is sound because nothing with the erased lifetime
//! is touched after the scope returns:
//!
//! 1. [`scope_on`] counts the job in `ScopeData::running` *before* it is spawned, and returns
//!    (normally or by re-raising a panic) only after `running` is back to zero.
//! 2. `running` is decremented only by `ScopedJob`'s `Drop`, as its last action, after it has
//!    dropped the closure (if still there) and its reference to the packet. Whatever way the
//!    job ends, its `Drop` runs: it **ran** (the box is consumed by the call; the job drops at
//!    the end of [`ScopedJob::run`]); it was **cancelled** ([`ScopedHandle::cancel`] moves the
//!    item's stage to cancelled and drops the box unrun); it was **refused** by the queue
//!    (`spawn_at` drops the box unrun before returning, whether it queued with `try_queue`
//!    or, for `spawn_on_cpu`, `try_queue_on`); or the engine dropped the item
//!    without running it (the last `Arc` drops the box). A job that is never dropped (an
//!    item that never runs, e.g. on an ordered queue blocked forever) makes the scope wait
//!    forever, which is a hang, not a use after free.
//! 3. After the decrement the job touches only `ScopeData`, which is `'static` (an `Arc`).
//!    The engine may keep the item's allocation past the scope, but by then its closure slot
//!    is empty: only the `()` result and the engine's field remain. The same holds for a
//!    `Work` handle on the item that the closure took with
//!    [`current_work`](crate::current_work) and let escape: it reaches nothing borrowed (the
//!    item's type is private, so it cannot be downcast), and re-queueing it runs nothing (the
//!    stage is no longer `Queued`).
//! 4. A result `T: 'scope` lives in the packet until the handle takes or drops it. The job
//!    stores it only while the handle is alive (checked under the packet's lock); otherwise
//!    the job drops it itself, before the decrement. A handle cannot outlive `'scope`
//!    (its type carries it; moved into another scoped item it is dropped by that item
//!    before that item's decrement), except by being leaked, and a leaked result is never
//!    dropped.
//! 5. The panics of `F` are caught in the job; a panic in the `Drop` of an unrun closure or of
//!    an unwanted result is caught too and counted as the item's panic, so unwinding never
//!    skips the decrement.
//!
//! `'scope` is invariant (as in `std::thread::scope`), so a `&'scope Scope` cannot be
//! shortened to spawn items that borrow less than the scope guarantees.

use std::marker::PhantomData;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::pool::panic::drop_payload;
use crate::spawn::handle::{JoinError, WorkHandle};
use crate::spawn::task::{spawn_at, Payload};
use crate::Workqueue;

/// A scope made by [`scope`](crate::scope) or [`Workqueue::scope`]: spawn items that
/// borrow from outside it with [`spawn`](Self::spawn).
pub struct Scope<'scope, 'env: 'scope> {
    wq: &'env Workqueue,
    data: Arc<ScopeData>,
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

/// The scope's count of live jobs and the first unjoined panic.
///
/// A leaf mutex of this layer; no user code runs under it (a second unjoined payload is
/// dropped after the lock is released).
struct ScopeData {
    state: Mutex<ScopeState>,
    all_done: Condvar,
}

struct ScopeState {
    /// Jobs spawned and not yet dropped.
    running: usize,
    /// The first panic of an item that nobody joined.
    panic: Option<Payload>,
}

impl ScopeData {
    fn record_panic(&self, payload: Payload) {
        let mut s = self.state.lock();
        let extra = if s.panic.is_none() {
            s.panic = Some(payload);
            None
        } else {
            Some(payload)
        };
        drop(s);
        if let Some(p) = extra {
            drop_payload(p);
        }
    }

    fn job_done(&self) {
        let mut s = self.state.lock();
        s.running -= 1;
        if s.running == 0 {
            self.all_done.notify_all();
        }
    }

    fn wait_all(&self) {
        if self.state.lock().running == 0 {
            return;
        }
        // The concurrency-management hint is taken before this lock, never under it.
        crate::cm::blocking(|| {
            let mut s = self.state.lock();
            while s.running > 0 {
                self.all_done.wait(&mut s);
            }
        });
    }
}

/// The result of one scoped item, shared by the job and the handle.
struct Packet<T> {
    state: Mutex<PacketState<T>>,
    scope: Arc<ScopeData>,
}

struct PacketState<T> {
    result: Option<std::thread::Result<T>>,
    handle_alive: bool,
}

/// The closure of a scoped item with what it reports to (see the module docs, point 2).
struct ScopedJob<'scope, F, T> {
    f: Option<F>,
    packet: Option<Arc<Packet<T>>>,
    scope: Arc<ScopeData>,
    _scope: PhantomData<&'scope ()>,
}

impl<F, T> ScopedJob<'_, F, T>
where
    F: FnOnce() -> T,
{
    fn run(mut self) {
        let Some(f) = self.f.take() else { return };
        let result = catch_unwind(AssertUnwindSafe(f));
        if let Some(packet) = &self.packet {
            let mut p = packet.state.lock();
            let unwanted = if p.handle_alive {
                p.result = Some(result);
                None
            } else {
                Some(result)
            };
            drop(p);
            match unwanted {
                Some(Ok(value)) => {
                    if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(value))) {
                        self.scope.record_panic(payload);
                    }
                }
                Some(Err(payload)) => self.scope.record_panic(payload),
                None => {}
            }
        }
        // `self` drops here: the decrement.
    }
}

impl<F, T> Drop for ScopedJob<'_, F, T> {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            // Cancelled, refused or dropped unrun: its captures' `Drop` is user code.
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(f))) {
                self.scope.record_panic(payload);
            }
        }
        // Holds no result of ours (point 4), so this drops no user code unless the handle
        // is gone and left one behind, which it never does.
        drop(self.packet.take());
        // The last touch of anything borrowed: from here the scope may return.
        self.scope.job_done();
    }
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Queues `f` on the scope's queue; `f` may borrow anything that outlives the scope.
    /// Returns a handle to join it; an item not joined is still waited for by the scope, and
    /// its panic is re-raised by the scope.
    ///
    /// Never panics: a refusal by the queue shows in [`ScopedHandle::join`]
    /// ([`JoinError::is_refused`]).
    pub fn spawn<F, T>(&'scope self, f: F) -> ScopedHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        self.spawn_at(None, f)
    }

    /// [`spawn`](Self::spawn), queued on `cpu` of the scope's queue (as
    /// [`Workqueue::try_queue_on`]); for the crate's per-CPU helpers (`queue::percpu`). A CPU
    /// not online is a refusal, seen in [`ScopedHandle::join`].
    pub(crate) fn spawn_on_cpu<F, T>(&'scope self, cpu: usize, f: F) -> ScopedHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        self.spawn_at(Some(cpu), f)
    }

    fn spawn_at<F, T>(&'scope self, cpu: Option<usize>, f: F) -> ScopedHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let packet = Arc::new(Packet {
            state: Mutex::new(PacketState {
                result: None,
                handle_alive: true,
            }),
            scope: self.data.clone(),
        });
        // Counted before the job exists: its `Drop` (whatever way it comes) decrements.
        self.data.state.lock().running += 1;
        let job = ScopedJob {
            f: Some(f),
            packet: Some(packet.clone()),
            scope: self.data.clone(),
            _scope: PhantomData,
        };
        let boxed: Box<dyn FnOnce() + Send + 'scope> = Box::new(move || job.run());
        // SAFETY: only the lifetime changes (same layout: a box of the same trait object).
        // The box is dropped, run or not, before the scope returns: the scope waits for
        // `running` to reach zero, and only the job's `Drop` decrements it, after which the
        // job touches only `'static` data. See the module docs for every way the job ends
        // (run, cancelled, refused, dropped by the engine, or never: a hang).
        let boxed: Box<dyn FnOnce() + Send + 'static> = unsafe {
            std::mem::transmute::<Box<dyn FnOnce() + Send + 'scope>, Box<dyn FnOnce() + Send>>(
                boxed,
            )
        };
        ScopedHandle {
            inner: spawn_at(self.wq, cpu, boxed),
            packet: PacketRef(packet),
            _scope: PhantomData,
        }
    }
}

/// A handle on an item spawned in a [`Scope`].
pub struct ScopedHandle<'scope, T> {
    inner: WorkHandle<()>,
    packet: PacketRef<T>,
    _scope: PhantomData<&'scope ()>,
}

/// The handle's reference to the packet; its drop takes the result back from the job's side.
struct PacketRef<T>(Arc<Packet<T>>);

impl<T> Drop for PacketRef<T> {
    fn drop(&mut self) {
        let mut p = self.0.state.lock();
        p.handle_alive = false;
        let result = p.result.take();
        drop(p);
        match result {
            // An unjoined panic goes to the scope, which re-raises it.
            Some(Err(payload)) => self.0.scope.record_panic(payload),
            Some(Ok(value)) => drop(value),
            None => {}
        }
    }
}

impl<T> ScopedHandle<'_, T> {
    /// Waits for the item and returns its result, as [`WorkHandle::join`] does. A panic
    /// returned here is the caller's: the scope does not re-raise it.
    pub fn join(self) -> Result<T, JoinError> {
        self.inner.join()?;
        // The job stored the result before its closure returned, and the inner item
        // finished after that.
        let result = self.packet.0.state.lock().result.take();
        match result {
            Some(Ok(value)) => Ok(value),
            Some(Err(payload)) => Err(JoinError::panic(payload)),
            None => unreachable!("a scoped item that ran left its result for a live handle"),
        }
    }

    /// Whether the item has finished or will never run; see [`WorkHandle::is_finished`].
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// Cancels the item if it has not started; see [`WorkHandle::cancel`]. The closure is
    /// dropped here, and the scope no longer waits for it.
    pub fn cancel(&self) -> bool {
        self.inner.cancel()
    }
}

impl<T> std::fmt::Debug for ScopedHandle<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl std::fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scope")
            .field("workqueue", &self.wq.name())
            .field("running", &self.data.state.lock().running)
            .finish()
    }
}

/// [`Workqueue::scope`]: runs `f`, waits for every job, re-raises `f`'s panic or else the
/// first unjoined item panic.
pub(crate) fn scope_on<'env, F, R>(wq: &'env Workqueue, f: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let scope = Scope {
        wq,
        data: Arc::new(ScopeData {
            state: Mutex::new(ScopeState {
                running: 0,
                panic: None,
            }),
            all_done: Condvar::new(),
        }),
        scope: PhantomData,
        env: PhantomData,
    };
    let result = catch_unwind(AssertUnwindSafe(|| f(&scope)));
    // Whatever `f` did, no job outlives this line (module docs, points 1-2).
    scope.data.wait_all();
    let item_panic = scope.data.state.lock().panic.take();
    match result {
        Err(payload) => {
            if let Some(p) = item_panic {
                drop_payload(p);
            }
            resume_unwind(payload)
        }
        Ok(value) => {
            if let Some(p) = item_panic {
                resume_unwind(p);
            }
            value
        }
    }
}
