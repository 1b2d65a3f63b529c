//! The lists queued items wait on (a pool's worklist, a pwq's inactive list): FIFOs with O(1)
//! removal of a given item, which is what the kernel gets from intrusive lists.
//!
//! Each entry gets the next sequence number of its list when it is pushed, and the item
//! remembers it ([`WorkField`](crate::WorkField)'s list position, written and read under the
//! lock of the pool whose list holds the item: the ownership rule of the data word makes the
//! item sit on one list at a time). Removal looks up `position - head`, checks that the entry
//! there is this item, and leaves a hole that `pop_front` skips. Holes at either end are
//! trimmed at once, and an empty list forgets its holes, so a list holds at most as many
//! holes as items were pushed since it was last empty.

use std::collections::VecDeque;

use crate::pool::Entry;
use crate::Work;

/// A FIFO of entries with removal by item (see the module docs).
#[derive(Default)]
pub(crate) struct ItemList {
    /// Entries in order; `None` is a removed one.
    q: VecDeque<Option<Entry>>,
    /// Sequence number of `q[0]`.
    head: u64,
    /// Entries that are not holes.
    live: usize,
}

impl ItemList {
    pub(crate) fn with_capacity(n: usize) -> Self {
        ItemList {
            q: VecDeque::with_capacity(n),
            head: 0,
            live: 0,
        }
    }

    /// Items on the list.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Appends `entry`, recording its position in its item.
    #[inline(always)]
    pub(crate) fn push_back(&mut self, entry: Entry) {
        entry.work.set_list_pos(self.head + self.q.len() as u64);
        self.q.push_back(Some(entry));
        self.live += 1;
    }

    /// Takes the oldest entry.
    #[inline(always)]
    pub(crate) fn pop_front(&mut self) -> Option<Entry> {
        if self.live == self.q.len() {
            // No holes (the common case): nothing to skip or trim.
            let entry = self.q.pop_front()??;
            self.head += 1;
            self.live -= 1;
            return Some(entry);
        }
        while let Some(front) = self.q.pop_front() {
            self.head += 1;
            if let Some(entry) = front {
                self.live -= 1;
                self.trim();
                return Some(entry);
            }
        }
        None
    }

    /// Takes `work`'s entry if it is on this list: O(1).
    pub(crate) fn remove(&mut self, work: &Work) -> Option<Entry> {
        let idx = work.list_pos().checked_sub(self.head)?;
        let slot = self.q.get_mut(usize::try_from(idx).ok()?)?;
        if !slot.as_ref().is_some_and(|e| e.work == *work) {
            return None;
        }
        let entry = slot.take();
        self.live -= 1;
        self.trim();
        entry
    }

    /// Takes the first entry at or after sequence number `*cursor` that `pred` accepts, and
    /// moves the cursor past it; a scan that resumes from the cursor never looks at an entry
    /// twice (the rescuer's walk over its queue's items, linear in the list).
    pub(crate) fn take_next(
        &mut self,
        cursor: &mut u64,
        mut pred: impl FnMut(&Entry) -> bool,
    ) -> Option<Entry> {
        let start = cursor.saturating_sub(self.head) as usize;
        let found = self
            .q
            .iter()
            .enumerate()
            .skip(start)
            .find(|(_, e)| e.as_ref().is_some_and(&mut pred))
            .map(|(i, _)| i);
        match found {
            Some(i) => {
                *cursor = self.head + i as u64 + 1;
                let entry = self.q[i].take();
                self.live -= 1;
                self.trim();
                entry
            }
            None => {
                *cursor = self.head + self.q.len() as u64;
                None
            }
        }
    }

    /// The entries, oldest first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.q.iter().flatten()
    }

    /// Drops holes at both ends; an empty list forgets its holes.
    #[inline]
    fn trim(&mut self) {
        if self.live == 0 {
            self.head += self.q.len() as u64;
            self.q.clear();
            return;
        }
        while self.q.front().is_some_and(Option::is_none) {
            self.q.pop_front();
            self.head += 1;
        }
        while self.q.back().is_some_and(Option::is_none) {
            self.q.pop_back();
        }
    }

    /// Slots held, holes included (tests).
    #[cfg(test)]
    fn capacity_used(&self) -> usize {
        self.q.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(w: &Work) -> Entry {
        Entry {
            work: w.clone(),
            slot: 0,
            color: 0,
            function: "test",
        }
    }

    fn items(n: usize) -> Vec<Work> {
        (0..n).map(|_| Work::new(|_| {})).collect()
    }

    #[test]
    fn fifo_with_removal_in_the_middle() {
        let w = items(5);
        let mut l = ItemList::default();
        for x in &w {
            l.push_back(entry(x));
        }
        assert!(l.remove(&w[2]).is_some());
        assert!(l.remove(&w[2]).is_none(), "removed twice");
        assert_eq!(l.iter().count(), 4);
        let order: Vec<_> = std::iter::from_fn(|| l.pop_front()).collect();
        assert_eq!(order.len(), 4);
        for (e, x) in order.iter().zip([&w[0], &w[1], &w[3], &w[4]]) {
            assert!(e.work == *x);
        }
        assert!(l.is_empty());
    }

    #[test]
    fn a_removed_item_pushed_again_is_found_at_its_new_place() {
        let w = items(3);
        let mut l = ItemList::default();
        for x in &w {
            l.push_back(entry(x));
        }
        assert!(l.remove(&w[0]).is_some());
        l.push_back(entry(&w[0]));
        assert!(l.pop_front().is_some_and(|e| e.work == w[1]));
        assert!(l.remove(&w[0]).is_some());
        assert!(l.pop_front().is_some_and(|e| e.work == w[2]));
        assert!(l.pop_front().is_none());
    }

    #[test]
    fn an_item_on_another_list_is_not_removed_from_this_one() {
        let w = items(2);
        let mut a = ItemList::default();
        let mut b = ItemList::default();
        a.push_back(entry(&w[0]));
        b.push_back(entry(&w[1]));
        // Same position (0) on both lists: the identity check tells them apart.
        assert!(a.remove(&w[1]).is_none());
        assert!(b.remove(&w[0]).is_none());
        assert_eq!((a.iter().count(), b.iter().count()), (1, 1));
    }

    #[test]
    fn holes_are_trimmed_and_forgotten_when_empty() {
        let w = items(100);
        let mut l = ItemList::default();
        for x in &w {
            l.push_back(entry(x));
        }
        for x in w.iter().skip(1) {
            assert!(l.remove(x).is_some());
        }
        assert_eq!(l.capacity_used(), 1, "trailing holes trimmed");
        assert!(l.remove(&w[0]).is_some());
        assert_eq!(l.capacity_used(), 0);
        l.push_back(entry(&w[5]));
        assert!(l.remove(&w[5]).is_some());
    }

    #[test]
    fn take_next_resumes_from_its_cursor() {
        let w = items(6);
        let mut l = ItemList::default();
        for (i, x) in w.iter().enumerate() {
            let mut e = entry(x);
            e.slot = (i % 2) as u32;
            l.push_back(e);
        }
        let mut cursor = 0;
        let mut got = Vec::new();
        while let Some(e) = l.take_next(&mut cursor, |e| e.slot == 1) {
            got.push(e.work);
        }
        assert_eq!(got.len(), 3);
        assert!(got[0] == w[1] && got[1] == w[3] && got[2] == w[5]);
        assert_eq!(l.iter().count(), 3);
        // Entries pushed after the cursor are still found.
        let late = Work::new(|_| {});
        let mut e = entry(&late);
        e.slot = 1;
        l.push_back(e);
        assert!(l
            .take_next(&mut cursor, |e| e.slot == 1)
            .is_some_and(|e| e.work == late));
    }
}
