//! The timer clock behind delayed work, and a test clock to pause and advance it by hand
//! ([`pause`], [`TestClock`]; with the `test-util` feature, which is what this module
//! exports).
//!
//! (Layer: the timer service and its clock. Uses only `os/`-level facilities (threads, locks,
//! the monotonic clock) and the crate root's `Error`. It knows nothing of work items or
//! queues: its client, the delayed-work layer (`work/delayed.rs`), implements
//! `timer::Timers` to say where an item's timer lives and what firing it does, the way the
//! kernel's `delayed_work_timer_fn` is the timer callback that calls `__queue_work`.)

pub(crate) mod heap;
pub(crate) mod timer;

#[cfg(feature = "test-util")]
pub use timer::{pause, TestClock};
