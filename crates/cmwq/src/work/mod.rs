//! Work items: identity, the atomic data word, cancel/disable/enable, delayed items, static
//! items (`StaticWork` in [`item`], `StaticDelayedWork` in [`static_delayed`]).
//!
//! The item type ([`item`]) and its data word ([`data`]) are the foundation every other
//! layer uses: pools hold items on their lists and workers change the word as they start
//! them. The operations on items ([`cancel`], [`delayed`]) sit on top of everything: they use
//! the queue layer to queue, the pool layer to take items off lists, and the timer service.

pub(crate) mod cancel;
pub(crate) mod data;
pub(crate) mod delayed;
pub(crate) mod item;
pub(crate) mod static_delayed;
