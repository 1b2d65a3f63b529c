//! The work item's atomic data word (the kernel's `work_struct::data`).
//!
//! This file is self-contained: it only uses `crate::os::sync::atomic`, so the loom model in
//! `tests/loom_work_data.rs` compiles this very source against loom's atomics.
//!
//! # Layout (64 bits)
//!
//! | bits   | queued (`PWQ` set)        | off queue (`PWQ` clear)          |
//! |--------|---------------------------|----------------------------------|
//! | 0      | `PENDING`                 | `PENDING` (owner between lists)  |
//! | 1      | `INACTIVE`                | 0                                |
//! | 2      | `PWQ` = 1                 | `PWQ` = 0                        |
//! | 4..8   | flush color               | disable depth, low 4 bits        |
//! | 8..20  | pwq slot, low 12 bits     | disable depth, high 12 bits      |
//! | 20..32 | pwq slot, high 12 bits    | 0                                |
//! | 32..63 | pool id                   | last pool id (`POOL_NONE`: never ran) |
//!
//! Unlike the kernel, the pool id sits at the same place in both encodings, so the pool an item
//! is queued on or last ran on is read the same way; the pwq is named by its slot in that pool.
//!
//! # Ownership rule
//!
//! Whoever sets `PENDING` (a queuer winning [`WorkData::try_set_pending`], a canceller stealing
//! it) owns the item: it alone may change the word until it gives `PENDING` up, either by
//! putting the item on a list (the pool lock then owns it) or by storing an off-queue value with
//! `PENDING` clear. A worker takes the item off its list under the pool lock and clears `PENDING`
//! with [`WorkData::start_execution`]. Anyone else may only try to set `PENDING`.
//!
//! Every write is a read-modify-write with `AcqRel` (or `SeqCst`). That keeps one release
//! sequence running through the whole history of the word, which is what makes the "queue
//! returned false" guarantee hold: a queuer whose `fetch_or` found `PENDING` already set wrote
//! into that sequence, so the worker's later `start_execution` (an acquiring RMW that reads the
//! latest value) synchronises with it and sees every store the queuer made before.

use crate::os::sync::atomic::{AtomicU64, Ordering};

pub(crate) const PENDING: u64 = 1 << 0;
pub(crate) const INACTIVE: u64 = 1 << 1;
pub(crate) const PWQ: u64 = 1 << 2;

const COLOR_SHIFT: u32 = 4;
const COLOR_MASK: u64 = 0xf;
const SLOT_SHIFT: u32 = 8;
const SLOT_MASK: u64 = (1 << 24) - 1;
const DEPTH_SHIFT: u32 = 4;
const DEPTH_MASK: u64 = 0xffff;
const POOL_SHIFT: u32 = 32;
const POOL_MASK: u64 = 0x7fff_ffff;

/// Number of flush colors (the kernel's `WORK_NR_COLORS`).
pub(crate) const NR_COLORS: usize = 16;
/// "Never ran": the pool id of a new item.
pub(crate) const POOL_NONE: u32 = POOL_MASK as u32;
/// Largest pwq slot the word can name.
pub(crate) const MAX_SLOT: usize = SLOT_MASK as usize;
/// Largest disable depth (the kernel's 16 bits).
pub(crate) const MAX_DISABLE: u32 = DEPTH_MASK as u32;

/// The decoded word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// On a pool's worklist, a worker's list, or its pwq's inactive list.
    Queued {
        pool: u32,
        slot: u32,
        color: u8,
        inactive: bool,
    },
    /// Not on any list.
    OffQueue {
        /// Set while a queuer or canceller owns the item between lists.
        pending: bool,
        /// The last pool it was queued on or ran on (`POOL_NONE` if never).
        pool: u32,
        /// Disable depth: queueing is refused while it is non-zero.
        disable: u32,
    },
}

impl State {
    pub(crate) fn decode(w: u64) -> State {
        let pool = ((w >> POOL_SHIFT) & POOL_MASK) as u32;
        if w & PWQ != 0 {
            State::Queued {
                pool,
                slot: ((w >> SLOT_SHIFT) & SLOT_MASK) as u32,
                color: ((w >> COLOR_SHIFT) & COLOR_MASK) as u8,
                inactive: w & INACTIVE != 0,
            }
        } else {
            State::OffQueue {
                pending: w & PENDING != 0,
                pool,
                disable: ((w >> DEPTH_SHIFT) & DEPTH_MASK) as u32,
            }
        }
    }

    /// The pool id in either encoding.
    pub(crate) fn pool(self) -> u32 {
        match self {
            State::Queued { pool, .. } | State::OffQueue { pool, .. } => pool,
        }
    }
}

pub(crate) fn queued(pool: u32, slot: u32, color: u8, inactive: bool) -> u64 {
    debug_assert!((slot as u64) <= SLOT_MASK && (color as usize) < NR_COLORS);
    PENDING
        | PWQ
        | if inactive { INACTIVE } else { 0 }
        | (u64::from(color) << COLOR_SHIFT)
        | (u64::from(slot) << SLOT_SHIFT)
        | ((u64::from(pool) & POOL_MASK) << POOL_SHIFT)
}

pub(crate) fn off_queue(pool: u32, disable: u32, pending: bool) -> u64 {
    debug_assert!(disable <= MAX_DISABLE);
    let pending = if pending { PENDING } else { 0 };
    pending | (u64::from(disable) << DEPTH_SHIFT) | ((u64::from(pool) & POOL_MASK) << POOL_SHIFT)
}

/// The atomic word itself.
#[derive(Debug)]
pub(crate) struct WorkData(AtomicU64);

impl WorkData {
    #[cfg(not(cmwq_loom))]
    pub(crate) const fn new() -> Self {
        WorkData(AtomicU64::new((POOL_NONE as u64) << POOL_SHIFT))
    }

    #[cfg(cmwq_loom)]
    pub(crate) fn new() -> Self {
        WorkData(AtomicU64::new((POOL_NONE as u64) << POOL_SHIFT))
    }

    /// A snapshot (a hint unless the caller owns the item or holds the lock of its pool).
    pub(crate) fn state(&self) -> State {
        // Acquire: pairs with the owner's AcqRel swaps, so a reader that then locks the pool
        // named here finds the item in the lists the swap described.
        State::decode(self.0.load(Ordering::Acquire))
    }

    /// Tries to take ownership by setting `PENDING`. `true` if it was clear (the caller now owns
    /// the item), `false` if somebody else owns it.
    #[inline]
    pub(crate) fn try_set_pending(&self) -> bool {
        // AcqRel: Release publishes the caller's prior stores into the word's release sequence
        // (read by the worker's `start_execution`); Acquire pairs with the previous owner's
        // release of PENDING, so the new owner sees the state that owner left.
        self.0.fetch_or(PENDING, Ordering::AcqRel) & PENDING == 0
    }

    /// The first step of queueing: takes `PENDING` unless the item is already pending or is
    /// disabled (then `PENDING` is given straight back). `true` if the caller now owns it.
    #[inline]
    pub(crate) fn try_claim(&self) -> bool {
        if !self.try_set_pending() {
            return false;
        }
        if let State::OffQueue { disable, .. } = self.state() {
            if disable > 0 {
                self.release_pending();
                return false;
            }
        }
        true
    }

    /// The owner gives `PENDING` up without changing anything else (queueing refused).
    pub(crate) fn release_pending(&self) {
        // AcqRel: pairs with the next owner's `try_set_pending`.
        self.0.fetch_and(!PENDING, Ordering::AcqRel);
    }

    /// The owner replaces the word (puts it on a list, or moves it off one).
    pub(crate) fn set(&self, w: u64) {
        // AcqRel RMW, never a plain store: keeps the release sequence unbroken (module docs).
        self.0.swap(w, Ordering::AcqRel);
    }

    /// Clears `INACTIVE` when the pool lock holder moves the item to the worklist.
    pub(crate) fn clear_inactive(&self) {
        // AcqRel: an RMW for the release-sequence rule; nothing else pairs with it.
        self.0.fetch_and(!INACTIVE, Ordering::AcqRel);
    }

    /// A worker takes the item off its list to run it: `PENDING` and `PWQ` clear, the pool
    /// remembered. From here the item may be queued again while it runs.
    #[inline]
    pub(crate) fn start_execution(&self, pool: u32) {
        // SeqCst RMW: it reads the latest value of the word, so it synchronises with every
        // `try_set_pending` that found PENDING set (their stores are visible to the run that
        // follows); SeqCst also orders it against the loads the work function makes next,
        // like the kernel's smp_mb() after set_work_pool_and_clear_pending().
        self.0.swap(off_queue(pool, 0, false), Ordering::SeqCst);
    }
}

#[cfg(all(test, not(cmwq_loom)))]
mod tests {
    use super::*;

    #[test]
    fn encodings_round_trip() {
        let w = queued(7, 1234, 9, true);
        assert_eq!(
            State::decode(w),
            State::Queued {
                pool: 7,
                slot: 1234,
                color: 9,
                inactive: true
            }
        );
        let w = off_queue(POOL_NONE, MAX_DISABLE, true);
        assert_eq!(
            State::decode(w),
            State::OffQueue {
                pending: true,
                pool: POOL_NONE,
                disable: MAX_DISABLE
            }
        );
        assert_eq!(
            State::decode(queued(3, MAX_SLOT as u32, 15, false)).pool(),
            3
        );
    }

    #[test]
    fn pending_is_test_and_set() {
        let d = WorkData::new();
        assert!(d.try_set_pending());
        assert!(!d.try_set_pending());
        d.release_pending();
        assert!(d.try_set_pending());
        d.set(queued(1, 2, 3, false));
        assert!(!d.try_set_pending());
        d.start_execution(1);
        assert_eq!(
            d.state(),
            State::OffQueue {
                pending: false,
                pool: 1,
                disable: 0
            }
        );
    }
}
