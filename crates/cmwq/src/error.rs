//! The crate's error type.

use thiserror::Error;

/// Why a workqueue operation was refused.
///
/// Conditions that the kernel treats as bugs but that a caller can cause with ordinary input
/// (an unknown CPU, an out-of-range `max_active`, queueing on a queue that is being torn down)
/// are reported here instead of being clamped or dropped silently.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The CPU id is not one of [`online_cpus()`](crate::online_cpus).
    #[error("cpu {cpu} is not in this process's CPU affinity mask")]
    InvalidCpu {
        /// The CPU id that was asked for.
        cpu: usize,
    },
    /// `max_active` was above [`WQ_MAX_ACTIVE`](crate::WQ_MAX_ACTIVE).
    #[error("max_active {max_active} is out of range (0 for the default, or 1..={max})")]
    InvalidMaxActive {
        /// The value that was asked for.
        max_active: usize,
        /// The largest accepted value.
        max: usize,
    },
    /// A combination of flags that cannot be honoured.
    #[error("invalid workqueue flags: {reason}")]
    InvalidFlags {
        /// What is wrong with them.
        reason: &'static str,
    },
    /// Workqueue attributes that cannot be honoured (empty cpumask, nice out of range).
    #[error("invalid workqueue attributes: {reason}")]
    InvalidAttrs {
        /// What is wrong with them.
        reason: String,
    },
    /// The workqueue name is empty.
    #[error("a workqueue needs a non-empty name")]
    InvalidName,
    /// The workqueue is draining; only its own items may queue on it until the drain ends.
    #[error(
        "workqueue {workqueue:?} is draining: only chained queueing from its own items is allowed"
    )]
    Draining {
        /// The workqueue's name.
        workqueue: String,
    },
    /// The workqueue was destroyed.
    #[error("workqueue {workqueue:?} has been destroyed")]
    Destroyed {
        /// The workqueue's name.
        workqueue: String,
    },
    /// An ordered workqueue's `max_active` is fixed at 1.
    #[error("workqueue {workqueue:?} is ordered; its max_active is fixed at 1")]
    Ordered {
        /// The workqueue's name.
        workqueue: String,
    },
    /// [`configure`](crate::configure) was called after the engine started (or twice).
    #[error("the configuration is fixed once the engine has started")]
    ConfigLocked,
    /// A worker pool already serves as many live workqueues as a work item's data word can
    /// name (2^24); destroy some first.
    #[error("too many live workqueues on one worker pool (at most {max})")]
    TooManyWorkqueues {
        /// The most live workqueues one pool can serve.
        max: usize,
    },
    /// The item to flush waits behind the calling item on a queue that runs one item at a
    /// time: it cannot start before the caller returns (a certain deadlock).
    #[error(
        "the item waits behind the caller on workqueue {workqueue:?}, which runs one item at a time"
    )]
    FlushDependency {
        /// The workqueue's name.
        workqueue: String,
    },
    /// Waiting here would wait for the calling work item itself: a certain deadlock.
    #[error("a work item cannot flush itself or the workqueue it is running on")]
    SelfFlush,
    /// The control endpoint ([`control`](crate::control)) could not be started, reached or
    /// understood: a socket directory that is not private, a live endpoint already bound,
    /// an I/O failure, or an error reply.
    #[error("control endpoint: {reason}")]
    Control {
        /// What went wrong.
        reason: String,
    },
}
