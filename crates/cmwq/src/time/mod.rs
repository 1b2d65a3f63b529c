//! The timer clock behind delayed work, and a test clock to pause and advance it by hand.
//!
//! (Layer: the timer service and its clock. It queues a fired item through the queue layer,
//! the way the kernel's `delayed_work_timer_fn` calls `__queue_work`.)

pub(crate) mod timer;

pub use timer::{pause, TestClock};
