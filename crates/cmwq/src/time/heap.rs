//! An indexed 4-ary min-heap of timers: insert, remove by handle and pop of the earliest, each
//! O(log n), in three vectors (no allocation beyond their growth).
//!
//! Values live in a slab addressed by id; the heap orders `(deadline, seq)` keys and the slab
//! records each value's heap position, so removing by handle needs no search. Each node also
//! carries its value's tag (in what would be padding), so the values of one tag are found by
//! a sequential scan of the nodes. Four children
//! per node halve the depth of a binary heap (7 levels for 10,000 timers): a timer armed
//! earlier than all others, then cancelled, walks the whole depth twice. A handle
//! carries the slot's generation (bumped when the slot is freed), so a handle to a removed
//! value never names a later one that reuses its slot.

/// Names one inserted value until it is removed or popped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Handle {
    id: usize,
    gen: u32,
}

/// Children per heap node.
const ARITY: usize = 4;

/// A heap node: ordered by `key` = deadline << 64 | insertion sequence number (one integer
/// comparison; among equal deadlines, earlier insertions first).
#[derive(Clone, Copy)]
struct Node {
    key: u128,
    id: usize,
    tag: u64,
}

impl Node {
    #[inline]
    fn before(&self, other: &Node) -> bool {
        self.key < other.key
    }

    fn at(&self) -> u64 {
        (self.key >> 64) as u64
    }
}

struct Slot<V> {
    /// `Some` while inserted.
    value: Option<V>,
    /// The value's index in `heap` (meaningful while inserted).
    pos: usize,
    /// Bumped each time the slot is freed. A handle is stale once it differs; it would take
    /// 2^32 reuses of one slot between a pop and the check of the popped handle to alias.
    gen: u32,
}

pub(crate) struct TimerHeap<V> {
    heap: Vec<Node>,
    slots: Vec<Slot<V>>,
    /// Ids of free slots.
    free: Vec<usize>,
    /// Last insertion sequence number.
    seq: u64,
}

impl<V> TimerHeap<V> {
    pub(crate) const fn new() -> Self {
        TimerHeap {
            heap: Vec::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }

    /// Inserts `value` due at `at`, with `tag` for [`tagged`](Self::tagged); among equal
    /// deadlines, earlier insertions come first.
    pub(crate) fn insert(&mut self, at: u64, tag: u64, value: V) -> Handle {
        self.seq += 1;
        let pos = self.heap.len();
        let id = match self.free.pop() {
            Some(id) => {
                let s = &mut self.slots[id];
                s.value = Some(value);
                s.pos = pos;
                id
            }
            None => {
                self.slots.push(Slot {
                    value: Some(value),
                    pos,
                    gen: 0,
                });
                self.slots.len() - 1
            }
        };
        self.heap.push(Node {
            key: (u128::from(at) << 64) | u128::from(self.seq),
            id,
            tag,
        });
        self.sift_up(pos);
        Handle {
            id,
            gen: self.slots[id].gen,
        }
    }

    /// Removes the value `h` names; `None` if it was already removed or popped.
    pub(crate) fn remove(&mut self, h: Handle) -> Option<V> {
        let s = self.slots.get(h.id)?;
        if s.gen != h.gen || s.value.is_none() {
            return None;
        }
        let pos = s.pos;
        self.remove_at(pos);
        Some(self.free_slot(h.id))
    }

    /// The earliest deadline.
    pub(crate) fn peek(&self) -> Option<u64> {
        self.heap.first().map(Node::at)
    }

    /// Removes the earliest value if it is due at `now` or before.
    pub(crate) fn pop_due(&mut self, now: u64) -> Option<(Handle, V)> {
        let root = *self.heap.first()?;
        if root.at() > now {
            return None;
        }
        self.remove_at(0);
        let gen = self.slots[root.id].gen;
        let value = self.free_slot(root.id);
        Some((Handle { id: root.id, gen }, value))
    }

    /// The inserted values with tag `tag`, in no particular order: a scan of the nodes
    /// (O(inserted), however large the slab grew).
    pub(crate) fn tagged(&self, tag: u64) -> impl Iterator<Item = &V> {
        self.heap
            .iter()
            .filter(move |n| n.tag == tag)
            .filter_map(|n| self.slots[n.id].value.as_ref())
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    fn free_slot(&mut self, id: usize) -> V {
        let s = &mut self.slots[id];
        s.gen = s.gen.wrapping_add(1);
        self.free.push(id);
        s.value.take().expect("a value in an occupied slot")
    }

    /// Takes the node at `pos` out of the heap.
    fn remove_at(&mut self, pos: usize) {
        self.heap.swap_remove(pos);
        if pos < self.heap.len() {
            let moved = self.heap[pos];
            if pos > 0 && moved.before(&self.heap[(pos - 1) / ARITY]) {
                self.sift_up(pos);
            } else {
                self.sift_down(pos);
            }
        }
    }

    fn sift_up(&mut self, mut pos: usize) {
        let node = self.heap[pos];
        while pos > 0 {
            let parent = (pos - 1) / ARITY;
            let p = self.heap[parent];
            if !node.before(&p) {
                break;
            }
            self.heap[pos] = p;
            self.slots[p.id].pos = pos;
            pos = parent;
        }
        self.heap[pos] = node;
        self.slots[node.id].pos = pos;
    }

    fn sift_down(&mut self, mut pos: usize) {
        let node = self.heap[pos];
        let len = self.heap.len();
        loop {
            let first = ARITY * pos + 1;
            let child = if first + ARITY <= len {
                // A full node (all but the last): a two-round tournament.
                let c = &self.heap[first..first + ARITY];
                let a = usize::from(c[1].before(&c[0]));
                let b = 2 + usize::from(c[3].before(&c[2]));
                first + if c[b].before(&c[a]) { b } else { a }
            } else if first < len {
                let c = &self.heap[first..len];
                let mut min = 0;
                for i in 1..c.len() {
                    if c[i].before(&c[min]) {
                        min = i;
                    }
                }
                first + min
            } else {
                break;
            };
            let c = self.heap[child];
            if !c.before(&node) {
                break;
            }
            self.heap[pos] = c;
            self.slots[c.id].pos = pos;
            pos = child;
        }
        self.heap[pos] = node;
        self.slots[node.id].pos = pos;
    }
}

#[cfg(all(test, not(cmwq_loom)))]
mod tests {
    use super::*;

    /// Checks the heap order and the slab's positions.
    fn check<V>(h: &TimerHeap<V>) {
        for (i, n) in h.heap.iter().enumerate() {
            if i > 0 {
                assert!(!n.before(&h.heap[(i - 1) / ARITY]), "heap order at {i}");
            }
            assert_eq!(h.slots[n.id].pos, i, "slab position of node {i}");
            assert!(h.slots[n.id].value.is_some());
        }
        assert_eq!(
            h.slots.iter().filter(|s| s.value.is_some()).count(),
            h.heap.len(),
            "occupied slots"
        );
    }

    #[test]
    fn pops_in_deadline_then_insertion_order() {
        let mut h = TimerHeap::new();
        for (i, at) in [5u64, 3, 9, 3, 1, 7, 3].into_iter().enumerate() {
            h.insert(at, i as u64 % 2, (at, i));
            check(&h);
        }
        let mut out = Vec::new();
        while let Some((_, v)) = h.pop_due(u64::MAX) {
            check(&h);
            out.push(v);
        }
        assert_eq!(
            out,
            [(1, 4), (3, 1), (3, 3), (3, 6), (5, 0), (7, 5), (9, 2)]
        );
    }

    #[test]
    fn pop_due_stops_at_the_first_deadline_in_the_future() {
        let mut h = TimerHeap::new();
        h.insert(10, 0, 'a');
        h.insert(20, 0, 'b');
        assert_eq!(h.pop_due(9).map(|(_, v)| v), None);
        assert_eq!(h.pop_due(10).map(|(_, v)| v), Some('a'));
        assert_eq!(h.pop_due(19).map(|(_, v)| v), None);
        assert_eq!(h.peek(), Some(20));
    }

    #[test]
    fn remove_by_handle_and_stale_handles() {
        let mut h = TimerHeap::new();
        let a = h.insert(1, 0, 'a');
        let b = h.insert(2, 1, 'b');
        assert_eq!(h.tagged(1).collect::<Vec<_>>(), [&'b']);
        assert_eq!(h.remove(a), Some('a'));
        assert_eq!(h.remove(a), None, "removed twice");
        // The freed slot is reused; the old handle does not name the new value.
        let c = h.insert(3, 0, 'c');
        assert_eq!(h.remove(a), None);
        let (popped, v) = h.pop_due(u64::MAX).unwrap();
        assert_eq!((popped, v), (b, 'b'));
        assert_eq!(h.remove(b), None, "popped");
        assert_eq!(h.remove(c), Some('c'));
        assert_eq!(h.len(), 0);
    }

    #[test]
    fn random_operations_keep_the_heap_and_slab_consistent() {
        // A small deterministic generator (no dependency, runs under miri).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut rand = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut h = TimerHeap::new();
        let mut live: Vec<(Handle, u64, u64)> = Vec::new();
        let mut n = 0u64;
        for _ in 0..if cfg!(miri) { 300 } else { 5000 } {
            match rand() % 4 {
                0 | 1 => {
                    let at = rand() % 64;
                    n += 1;
                    live.push((h.insert(at, n % 3, n), at, n));
                }
                2 if !live.is_empty() => {
                    let i = (rand() % live.len() as u64) as usize;
                    let (handle, _, v) = live.swap_remove(i);
                    assert_eq!(h.remove(handle), Some(v));
                }
                _ => {
                    let now = rand() % 64;
                    if let Some((handle, v)) = h.pop_due(now) {
                        let i = live.iter().position(|e| e.0 == handle).unwrap();
                        let (_, at, lv) = live.swap_remove(i);
                        assert_eq!(lv, v);
                        assert!(at <= now);
                        assert!(
                            live.iter().all(|e| (e.1, e.2) > (at, v)),
                            "not the earliest"
                        );
                    } else {
                        assert!(live.iter().all(|e| e.1 > now));
                    }
                }
            }
            check(&h);
            for tag in 0..3 {
                let mut got: Vec<u64> = h.tagged(tag).copied().collect();
                let mut want: Vec<u64> =
                    live.iter().map(|e| e.2).filter(|v| v % 3 == tag).collect();
                got.sort_unstable();
                want.sort_unstable();
                assert_eq!(got, want, "tag {tag}");
            }
        }
    }
}
