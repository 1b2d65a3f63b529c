//! The operating system: CPUs and affinity, nice values, thread ids and names, thread CPU
//! clocks and scheduler states, and the one-shot completion the engine waits on.
//!
//! The bottom layer: uses nothing of the crate but its error type. Everything above uses it.

pub(crate) mod cpu_topology;
pub(crate) mod cpuset;
pub(crate) mod published;
pub(crate) mod sync;
pub(crate) mod topology;
