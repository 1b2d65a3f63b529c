//! Awaitable waits on items: [`Work::flush_async`], [`Work::cancel_sync_async`] and their
//! [`DelayedWork`] forms, with no runtime dependency (a [`Waker`](std::task::Waker) is
//! registered in an async [`Completion`] that the engine lists exactly where a blocking
//! waiter's would be).
//!
//! # What a dropped future leaves behind
//!
//! The registration is made when the future is created (so it waits for the instance that
//! was pending or running *then*, as the blocking call does). Dropping the future before it
//! is ready drops its waker at once; the completion itself stays on the engine's waiter list
//! of that instance, harmless (completing it wakes nobody), and is freed when that instance
//! finishes or is cancelled, the event it was waiting for. A dropped
//! [`cancel_sync_async`](Work::cancel_sync_async) future re-enables the item at once (the
//! cancel is abandoned: a running instance may still be running).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use crate::os::sync::Completion;
use crate::pool::worker;
use crate::queue::flush::register_flush_work;
use crate::spawn::handle::WorkHandle;
use crate::{DelayedWork, Work, Workqueue};

/// The future of [`Work::flush_async`], [`Work::cancel_sync_async`] and their
/// [`DelayedWork`] forms. Output: what the blocking form returns.
#[must_use = "futures do nothing unless polled; dropping it abandons the wait"]
pub struct WorkWait {
    /// The registered completion; `None` when there was nothing to wait for.
    done: Option<Arc<Completion>>,
    output: bool,
    /// For `cancel_sync_async`: the item to re-enable when the wait ends or is dropped.
    enable: Option<Work>,
}

impl WorkWait {
    fn ready(output: bool) -> Self {
        WorkWait {
            done: None,
            output,
            enable: None,
        }
    }

    fn finish(&mut self) -> bool {
        self.done = None;
        if let Some(work) = self.enable.take() {
            work.enable();
        }
        self.output
    }
}

impl Future for WorkWait {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = &mut *self;
        match &this.done {
            Some(done) if !done.register(cx.waker()) => Poll::Pending,
            _ => Poll::Ready(this.finish()),
        }
    }
}

impl Drop for WorkWait {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            // Nothing stays registered: the waker goes now; the completion waits on the
            // engine's list, harmless, until its instance ends (module docs).
            done.unregister();
        }
        if let Some(work) = self.enable.take() {
            work.enable();
        }
    }
}

impl std::fmt::Debug for WorkWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkWait")
            .field("waiting", &self.done.as_ref().is_some_and(|d| !d.is_done()))
            .finish()
    }
}

/// Registers an async flush waiter for `work` (`running_only`: the running instance only).
/// `Err` cases (self-flush, flush dependency) are warned and give a ready `false`, as the
/// blocking `flush` does.
fn register(work: &Work, running_only: bool) -> Result<Option<Arc<Completion>>, ()> {
    if worker::is_current(work) {
        tracing::warn!(
            target: "cmwq",
            function = work.func_name(),
            "an item cannot wait for itself"
        );
        return Err(());
    }
    register_flush_work(work, running_only, Completion::new_async).map_err(|err| {
        tracing::warn!(target: "cmwq", function = work.func_name(), "{err}");
    })
}

impl Work {
    /// [`flush`](Self::flush) as a future: ready with `true` once the instance that was
    /// pending (or running) when this was called has finished, `false` at once if the item
    /// was idle. The instance is chosen now, not at the first poll.
    ///
    /// Dropping the future early leaves only a harmless completion on the instance's waiter
    /// list, freed when that instance ends (its waker is dropped at once).
    pub fn flush_async(&self) -> WorkWait {
        match register(self, false) {
            Ok(Some(done)) => WorkWait {
                done: Some(done),
                output: true,
                enable: None,
            },
            Ok(None) | Err(()) => WorkWait::ready(false),
        }
    }

    /// [`cancel_sync`](Self::cancel_sync) as a future: cancels the item now (as
    /// [`disable`](Self::disable) does, so queueing it fails meanwhile) and is ready, with
    /// whether it was pending, once a running instance has finished; the item is then enabled
    /// again. Dropping the future early enables the item at once, abandoning the wait.
    pub fn cancel_sync_async(&self) -> WorkWait {
        let was_pending = self.disable();
        let mut wait = match register(self, true) {
            Ok(Some(done)) => WorkWait {
                done: Some(done),
                output: was_pending,
                enable: None,
            },
            Ok(None) | Err(()) => WorkWait::ready(was_pending),
        };
        wait.enable = Some(self.clone());
        wait
    }
}

impl DelayedWork {
    /// [`flush`](Self::flush) as a future: an armed timer is fired now (the item is queued at
    /// once), then the future waits for that run as [`Work::flush_async`] does. Ready with
    /// whether it waited for (or fired) an instance.
    pub fn flush_async(&self) -> WorkWait {
        let fired = self.fire_now();
        let mut wait = self.work().flush_async();
        wait.output |= fired;
        wait
    }

    /// [`cancel_sync`](Self::cancel_sync) as a future (stops an armed timer too); see
    /// [`Work::cancel_sync_async`].
    pub fn cancel_sync_async(&self) -> WorkWait {
        self.work().cancel_sync_async()
    }
}

/// The future of [`Workqueue::flush_async`] and [`Workqueue::drain_async`].
///
/// The flush colors' cascade is done by the first flusher after it wakes, so a flusher cannot
/// simply go away; the queue-wide wait therefore runs as a blocking flush (or drain) on a
/// worker of a private unbound helper queue (`cmwq_async`), and this future awaits that
/// item's [`WorkHandle`]. Dropping the future early detaches the helper item: a harmless
/// registration that finishes, and is freed, when the flush (or drain) it runs completes.
#[must_use = "futures do nothing unless polled; dropping it abandons the wait"]
#[derive(Debug)]
pub struct WorkqueueWait {
    handle: WorkHandle<()>,
}

impl Future for WorkqueueWait {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.handle).poll(cx).map(|outcome| {
            if let Err(err) = outcome {
                // The helper queue is a system queue (never refused) and the flush does not
                // panic; should it, the waiter is released rather than left hanging.
                tracing::warn!(target: "cmwq", "async workqueue wait ended early: {err}");
            }
        })
    }
}

/// The private queue the queue-wide async waits run on.
fn helper_wq() -> &'static Workqueue {
    static WQ: OnceLock<Workqueue> = OnceLock::new();
    WQ.get_or_init(|| {
        Workqueue::new_system("cmwq_async", crate::WqFlags::UNBOUND, crate::WQ_MAX_ACTIVE)
    })
}

impl Workqueue {
    /// [`flush`](Self::flush) as a future: ready once every item queued on this queue before
    /// the call has finished. The flush itself runs on a worker of a private helper queue
    /// (see [`WorkqueueWait`]) and starts when that worker picks it up, normally at once: it
    /// waits for everything queued before the call, and possibly for items queued in the
    /// moment between the call and that start.
    ///
    /// From one of this queue's own items it logs a warning and is ready at once, as
    /// [`flush`](Self::flush) does.
    pub fn flush_async(&self) -> WorkqueueWait {
        self.wait_on_helper(crate::queue::flush::flush_shared)
    }

    /// [`drain`](Self::drain) as a future: ready once the queue is empty, chained requeues
    /// included; outside queueing is refused from the call's helper start until then. Runs
    /// on the helper queue as [`flush_async`](Self::flush_async) does.
    pub fn drain_async(&self) -> WorkqueueWait {
        self.wait_on_helper(crate::queue::flush::drain_shared)
    }

    /// Runs the blocking `wait` of this queue on the helper queue; from one of this queue's
    /// own items, warns and is ready at once (the wait would wait for itself).
    fn wait_on_helper(
        &self,
        wait: fn(&crate::queue::workqueue::WqShared) -> Result<(), crate::Error>,
    ) -> WorkqueueWait {
        let shared = self.shared().clone();
        if shared.is_current() {
            tracing::warn!(target: "cmwq", workqueue = %self.name(), "{}", crate::Error::SelfFlush);
            return WorkqueueWait {
                handle: helper_wq().spawn(|| {}),
            };
        }
        WorkqueueWait {
            handle: helper_wq().spawn(move || {
                let _ = wait(&shared);
            }),
        }
    }
}
