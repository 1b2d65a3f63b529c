//! [`WorkHandle`], the owner's end of a spawned item, and [`JoinError`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::spawn::task::{Payload, Spawned, Stage, Waiter};
use crate::{Error, Work};

/// A handle on a closure spawned with [`spawn`](crate::spawn) or
/// [`Workqueue::spawn`](crate::Workqueue::spawn): wait for its result with
/// [`join`](Self::join) or `.await` it (it is a [`Future`], woken by the worker that finishes
/// the closure; no runtime needed).
///
/// Dropping the handle detaches the item: it still runs, and its result is dropped (a panic
/// is then reported to the [panic hook](crate::set_panic_hook)).
pub struct WorkHandle<T> {
    task: Arc<dyn Spawned<T>>,
    /// The same allocation as `task`, as the engine's handle (for cancel).
    work: Work,
}

impl<T> WorkHandle<T> {
    pub(crate) fn new(task: Arc<dyn Spawned<T>>, work: Work) -> Self {
        WorkHandle { task, work }
    }

    /// Waits for the closure and returns its result: `Err` if it panicked (the payload is in
    /// the error), was cancelled before it started, or was refused by its queue.
    ///
    /// # Blocking
    ///
    /// May sleep; on a worker thread the sleep is reported to concurrency management.
    /// Joining, from inside an item, an item queued behind it on an ordered queue deadlocks.
    ///
    /// # Panics
    ///
    /// If the handle was polled as a future to completion before (the result was taken).
    pub fn join(self) -> Result<T, JoinError> {
        let slot = self.task.slot();
        let me = std::thread::current();
        crate::cm::blocking(|| loop {
            let mut s = slot.state.lock();
            if let Some(outcome) = s.take_outcome() {
                drop(s);
                return outcome;
            }
            let old = s.waiter.replace(Waiter::Thread(me.clone()));
            drop(s);
            // A waker registered by an earlier poll is dropped outside the lock (user code).
            drop(old);
            // Unparked by whoever settles the slot; a spurious return re-checks.
            std::thread::park();
        })
    }

    /// Whether the closure has finished (returned or panicked), or will never run (cancelled
    /// or refused). A `true` means [`join`](Self::join) does not wait.
    pub fn is_finished(&self) -> bool {
        self.task.slot().state.lock().is_finished()
    }

    /// Takes the item off its queue if it has not started: then it will never run, its
    /// closure is dropped here, and [`join`](Self::join) returns an error for which
    /// [`is_cancelled`](JoinError::is_cancelled) holds. Returns `false` (and changes nothing)
    /// if it has started, finished, or was refused. Never waits.
    pub fn cancel(&self) -> bool {
        if !self.work.cancel() {
            return false;
        }
        // It was pending, so no worker had taken this instance. If the stage is not `Queued`
        // the closure had already started (and re-queued its own item): that instance is
        // gone, but the closure ran, so nothing was cancelled.
        let mut s = self.task.slot().state.lock();
        if !matches!(s.stage, Stage::Queued) {
            return false;
        }
        s.stage = Stage::Cancelled;
        let waiter = s.waiter.take();
        drop(s);
        // We moved the stage out of `Queued`: the closure is ours to drop (user code, no lock).
        self.task.drop_closure();
        if let Some(w) = waiter {
            w.wake();
        }
        true
    }
}

impl<T> Future for WorkHandle<T> {
    type Output = Result<T, JoinError>;

    /// Ready with what [`join`](WorkHandle::join) would return; otherwise registers the
    /// context's waker (replacing an earlier one) and is woken when the item finishes, is
    /// cancelled, or was refused.
    ///
    /// Dropping the future before it is ready is dropping the handle: the item is detached
    /// and the registered waker is dropped at once (nothing stays registered).
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let slot = self.task.slot();
        if let Some(outcome) = slot.state.lock().take_outcome() {
            return Poll::Ready(outcome);
        }
        // Cloned with no lock held: `Waker::clone` is user code.
        let waker = cx.waker().clone();
        let mut s = slot.state.lock();
        if let Some(outcome) = s.take_outcome() {
            drop(s);
            drop(waker);
            return Poll::Ready(outcome);
        }
        let old = s.waiter.replace(Waiter::Waker(waker));
        drop(s);
        drop(old);
        Poll::Pending
    }
}

impl<T> Drop for WorkHandle<T> {
    fn drop(&mut self) {
        let mut s = self.task.slot().state.lock();
        s.detached = true;
        let waiter = s.waiter.take();
        let result = match s.stage {
            Stage::Done(_) => std::mem::replace(&mut s.stage, Stage::Taken),
            _ => Stage::Taken,
        };
        drop(s);
        // An unjoined result (or panic payload) and a registered waker are dropped here,
        // outside the lock.
        drop(result);
        drop(waiter);
    }
}

impl<T> fmt::Debug for WorkHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkHandle")
            .field("function", &self.work.func_name())
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// Why a spawned closure gave no result: it panicked, was cancelled before it started, or
/// its queue refused it.
///
/// `Send` and `Sync` (so `?` converts it into `Box<dyn Error + Send + Sync>`): the payload is
/// reachable only by value ([`into_panic`](Self::into_panic)); its message, if it is a string,
/// is copied out for `Debug` and `Display`.
pub struct JoinError {
    repr: Repr,
}

enum Repr {
    /// The payload (in a never-locked mutex: only for `Sync`, it is taken by value) and its
    /// message.
    Panic(std::sync::Mutex<Payload>, Option<String>),
    Cancelled,
    Refused(Error),
}

impl JoinError {
    pub(crate) fn panic(payload: Payload) -> Self {
        let message = panic_message(&payload).map(str::to_owned);
        JoinError {
            repr: Repr::Panic(std::sync::Mutex::new(payload), message),
        }
    }

    pub(crate) fn cancelled() -> Self {
        JoinError {
            repr: Repr::Cancelled,
        }
    }

    pub(crate) fn refused(err: Error) -> Self {
        JoinError {
            repr: Repr::Refused(err),
        }
    }

    /// The closure panicked; [`into_panic`](Self::into_panic) gives the payload.
    pub fn is_panic(&self) -> bool {
        matches!(self.repr, Repr::Panic(..))
    }

    /// The item was cancelled before it started; the closure never ran.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.repr, Repr::Cancelled)
    }

    /// The queue refused the item (it was draining or destroyed); the closure never ran.
    pub fn is_refused(&self) -> bool {
        matches!(self.repr, Repr::Refused(_))
    }

    /// The queue's refusal, if [`is_refused`](Self::is_refused).
    pub fn refusal(&self) -> Option<&Error> {
        match &self.repr {
            Repr::Refused(err) => Some(err),
            _ => None,
        }
    }

    /// The panic payload, to re-raise with [`std::panic::resume_unwind`].
    ///
    /// # Panics
    ///
    /// If the error is not a panic (see [`try_into_panic`](Self::try_into_panic)).
    #[track_caller]
    pub fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        match self.try_into_panic() {
            Ok(payload) => payload,
            Err(err) => panic!("JoinError::into_panic on an error that is not a panic: {err}"),
        }
    }

    /// The panic payload, or the error itself if it is not a panic.
    pub fn try_into_panic(self) -> Result<Box<dyn std::any::Any + Send + 'static>, JoinError> {
        match self.repr {
            Repr::Panic(payload, _) => Ok(payload.into_inner().unwrap_or_else(|e| e.into_inner())),
            repr => Err(JoinError { repr }),
        }
    }
}

fn panic_message(payload: &Payload) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Panic(_, message) => match message {
                Some(msg) => f.debug_tuple("JoinError::Panic").field(msg).finish(),
                None => f.debug_tuple("JoinError::Panic").field(&"..").finish(),
            },
            Repr::Cancelled => f.write_str("JoinError::Cancelled"),
            Repr::Refused(err) => f.debug_tuple("JoinError::Refused").field(err).finish(),
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.repr {
            Repr::Panic(_, message) => match message {
                Some(msg) => write!(f, "work item panicked: {msg}"),
                None => f.write_str("work item panicked"),
            },
            Repr::Cancelled => f.write_str("work item was cancelled before it started"),
            Repr::Refused(err) => write!(f, "work item was refused: {err}"),
        }
    }
}

impl std::error::Error for JoinError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.repr {
            Repr::Refused(err) => Some(err),
            _ => None,
        }
    }
}
