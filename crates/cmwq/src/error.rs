//! The crate's error type.

use std::fmt;

/// Why a workqueue operation was refused.
///
/// Conditions that the kernel treats as bugs but that a caller can cause with ordinary input
/// (an unknown CPU, an out-of-range `max_active`, queueing on a queue that is being torn down)
/// are reported here instead of being clamped or dropped silently.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The CPU id is not a possible CPU (`queue_on` and its variants, which take possible
    /// CPUs that are offline), or not one of [`online_cpus()`](crate::online_cpus)
    /// ([`work_on_cpu`](crate::work_on_cpu), unbound cpumasks).
    InvalidCpu {
        /// The CPU id that was asked for.
        cpu: usize,
    },
    /// The NUMA node does not exist ([`Workqueue::queue_node`](crate::Workqueue::queue_node)).
    InvalidNode {
        /// The node id that was asked for.
        node: usize,
    },
    /// `max_active` was above [`WQ_MAX_ACTIVE`](crate::WQ_MAX_ACTIVE).
    InvalidMaxActive {
        /// The value that was asked for.
        max_active: usize,
        /// The largest accepted value.
        max: usize,
    },
    /// A combination of flags that cannot be honoured.
    InvalidFlags {
        /// What is wrong with them.
        reason: &'static str,
    },
    /// Workqueue attributes that cannot be honoured (empty cpumask, nice out of range).
    InvalidAttrs {
        /// What is wrong with them.
        reason: String,
    },
    /// The workqueue name is empty.
    InvalidName,
    /// The workqueue is draining; only its own items may queue on it until the drain ends.
    Draining {
        /// The workqueue's name.
        workqueue: String,
    },
    /// The workqueue was destroyed.
    Destroyed {
        /// The workqueue's name.
        workqueue: String,
    },
    /// An ordered workqueue's `max_active` is fixed at 1.
    Ordered {
        /// The workqueue's name.
        workqueue: String,
    },
    /// `min_active` was above the workqueue's `max_active`
    /// ([`Workqueue::set_min_active`](crate::Workqueue::set_min_active)).
    InvalidMinActive {
        /// The value that was asked for.
        min_active: usize,
        /// The workqueue's `max_active`, the largest accepted value.
        max_active: usize,
    },
    /// `min_active` applies to unbound, non-ordered workqueues only
    /// ([`Workqueue::set_min_active`](crate::Workqueue::set_min_active) on a per-CPU or
    /// ordered queue).
    MinActiveUnsupported {
        /// The workqueue's name.
        workqueue: String,
    },
    /// [`configure`](crate::configure) was called after the engine started (or twice).
    ConfigLocked,
    /// A worker pool already serves as many live workqueues as a work item's data word can
    /// name (2^24); destroy some first.
    TooManyWorkqueues {
        /// The most live workqueues one pool can serve.
        max: usize,
    },
    /// The item to flush waits behind the calling item on a queue that runs one item at a
    /// time: it cannot start before the caller returns (a certain deadlock).
    FlushDependency {
        /// The workqueue's name.
        workqueue: String,
    },
    /// Waiting here would wait for the calling work item itself: a certain deadlock.
    SelfFlush,
    /// The freezer ([`freeze`](crate::freeze)) holds items this flush or drain would wait
    /// for: they run only after [`thaw`](crate::thaw).
    Frozen {
        /// The workqueue's name.
        workqueue: String,
    },
    /// The operation needs an unbound workqueue and this one is per-CPU: its attributes are
    /// its CPUs' pools' ([`Workqueue::apply_attrs`](crate::Workqueue::apply_attrs); the
    /// kernel's `-EINVAL`).
    NotUnbound {
        /// The workqueue's name.
        workqueue: String,
    },
    /// The control endpoint ([`control`](crate::control)) could not be started, reached or
    /// understood: a socket directory that is not private, a live endpoint already bound,
    /// an I/O failure, or an error reply.
    Control {
        /// What went wrong.
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidCpu { cpu } => {
                write!(f, "cpu {cpu} is not one of this process's CPUs (see cmwq::online_cpus())")
            }
            Error::InvalidNode { node } => write!(f, "NUMA node {node} does not exist"),
            Error::InvalidMaxActive { max_active, max } => write!(
                f,
                "max_active {max_active} is out of range (0 for the default, or 1..={max})"
            ),
            Error::InvalidFlags { reason } => write!(f, "invalid workqueue flags: {reason}"),
            Error::InvalidAttrs { reason } => write!(f, "invalid workqueue attributes: {reason}"),
            Error::InvalidName => f.write_str("a workqueue needs a non-empty name"),
            Error::Draining { workqueue } => write!(
                f,
                "workqueue {workqueue:?} is draining: only chained queueing from its own items is allowed"
            ),
            Error::Destroyed { workqueue } => {
                write!(f, "workqueue {workqueue:?} has been destroyed")
            }
            Error::Ordered { workqueue } => {
                write!(f, "workqueue {workqueue:?} is ordered; its max_active is fixed at 1")
            }
            Error::InvalidMinActive {
                min_active,
                max_active,
            } => write!(
                f,
                "min_active {min_active} is above the workqueue's max_active {max_active}"
            ),
            Error::MinActiveUnsupported { workqueue } => write!(
                f,
                "workqueue {workqueue:?} is per-CPU or ordered; min_active applies to unbound, non-ordered workqueues only"
            ),
            Error::ConfigLocked => {
                f.write_str("the configuration is fixed once the engine has started")
            }
            Error::TooManyWorkqueues { max } => {
                write!(f, "too many live workqueues on one worker pool (at most {max})")
            }
            Error::FlushDependency { workqueue } => write!(
                f,
                "the item waits behind the caller on workqueue {workqueue:?}, which runs one item at a time"
            ),
            Error::SelfFlush => {
                f.write_str("a work item cannot flush itself or the workqueue it is running on")
            }
            Error::Frozen { workqueue } => write!(
                f,
                "workqueue {workqueue:?} is frozen: the items it holds run only after thaw()"
            ),
            Error::NotUnbound { workqueue } => write!(
                f,
                "workqueue {workqueue:?} is per-CPU: only unbound workqueues have attributes to change"
            ),
            Error::Control { reason } => write!(f, "control endpoint: {reason}"),
        }
    }
}

/// No variant wraps another error, so [`source`](std::error::Error::source) is always `None`.
impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::Error;

    /// The messages are part of the interface (logs, the control endpoint's replies): they
    /// stay word for word what they were when `thiserror` wrote them.
    #[test]
    fn messages() {
        let wq = || "q".to_string();
        let cases = [
            (
                Error::InvalidCpu { cpu: 7 },
                "cpu 7 is not one of this process's CPUs (see cmwq::online_cpus())",
            ),
            (Error::InvalidNode { node: 9 }, "NUMA node 9 does not exist"),
            (
                Error::InvalidMaxActive { max_active: 5000, max: 2048 },
                "max_active 5000 is out of range (0 for the default, or 1..=2048)",
            ),
            (Error::InvalidFlags { reason: "r" }, "invalid workqueue flags: r"),
            (
                Error::InvalidAttrs { reason: "r".into() },
                "invalid workqueue attributes: r",
            ),
            (Error::InvalidName, "a workqueue needs a non-empty name"),
            (
                Error::Draining { workqueue: wq() },
                "workqueue \"q\" is draining: only chained queueing from its own items is allowed",
            ),
            (
                Error::Destroyed { workqueue: wq() },
                "workqueue \"q\" has been destroyed",
            ),
            (
                Error::Ordered { workqueue: wq() },
                "workqueue \"q\" is ordered; its max_active is fixed at 1",
            ),
            (
                Error::InvalidMinActive {
                    min_active: 9,
                    max_active: 4,
                },
                "min_active 9 is above the workqueue's max_active 4",
            ),
            (
                Error::MinActiveUnsupported { workqueue: wq() },
                "workqueue \"q\" is per-CPU or ordered; min_active applies to unbound, non-ordered workqueues only",
            ),
            (
                Error::ConfigLocked,
                "the configuration is fixed once the engine has started",
            ),
            (
                Error::TooManyWorkqueues { max: 3 },
                "too many live workqueues on one worker pool (at most 3)",
            ),
            (
                Error::FlushDependency { workqueue: wq() },
                "the item waits behind the caller on workqueue \"q\", which runs one item at a time",
            ),
            (
                Error::SelfFlush,
                "a work item cannot flush itself or the workqueue it is running on",
            ),
            (
                Error::Frozen { workqueue: wq() },
                "workqueue \"q\" is frozen: the items it holds run only after thaw()",
            ),
            (
                Error::NotUnbound { workqueue: wq() },
                "workqueue \"q\" is per-CPU: only unbound workqueues have attributes to change",
            ),
            (Error::Control { reason: "r".into() }, "control endpoint: r"),
        ];
        for (err, msg) in cases {
            assert_eq!(err.to_string(), msg);
            assert!(std::error::Error::source(&err).is_none());
        }
    }
}
