//! The identity dictionary's hash index: key hash -> node id, by open
//! addressing with linear probing.
//!
//! Why not `hashbrown`: its tables have a power-of-two number of buckets,
//! so right after a doubling half of them are empty (10 bytes per node
//! at 4.2 million nodes, the dictionary's largest cost). This one maps a
//! hash to a slot by multiplication (any table size works) and grows by a
//! quarter, keeping the load between 0.64 and 0.8 between transactions
//! (0.6 after a transaction that grew it faster: see `KeyIndex::settle`):
//! 5 bytes per slot, 6.3 to 8.3 bytes per node. The keys themselves live
//! in the graph (by node id); a slot holds the node id and a one-byte tag
//! from the hash, so a probe compares keys only when the tags agree (1 in
//! 255 otherwise).

/// Most slots in use per `LOAD_DEN` slots before the table grows.
const LOAD_NUM: usize = 4;
const LOAD_DEN: usize = 5;
/// Smallest table, in slots.
const MIN_SLOTS: usize = 64;
/// Tag of an empty slot.
const EMPTY: u8 = 0;

#[derive(Default)]
pub struct KeyIndex {
    /// Per slot: `EMPTY`, or the tag of the hash of the node it holds.
    tags: Vec<u8>,
    nodes: Vec<u32>,
    len: usize,
    /// Members added since the last [`KeyIndex::settle`] (the current
    /// transaction's new identifiers): how fast the index is growing.
    added: usize,
    /// Members the current transaction is expected to add beyond those
    /// added so far ([`KeyIndex::expect`]).
    expected: usize,
}

/// Least load [`KeyIndex::settle`] leaves: below it, the table is rebuilt
/// at the size a growth by a quarter gives (load 0.64). Lower than that,
/// so that a table just grown by a quarter is not rebuilt again.
const SETTLED_LOAD_NUM: usize = 3;
const SETTLED_LOAD_DEN: usize = 5;

/// The load a table sized for a transaction's expected growth is left
/// at when the expectation holds: just above the settled load, so that
/// the end of the transaction gives nothing back, and as far below the
/// limit as that allows, so that the loads that follow (a large load is
/// rarely the last) find room without another growth. At 1M people the
/// web events' load sized the index at 0.7 and the POS orders two loads
/// later grew it again, taking its 4.1 M members once more (0.1 s).
const EXPECTED_LOAD_NUM: usize = 5;
const EXPECTED_LOAD_DEN: usize = 8;

/// Slot of a hash in a table of `slots` slots: its high bits scaled
/// (Lemire's "fastrange"), so no power-of-two size is needed.
fn home(hash: u64, slots: usize) -> usize {
    ((u128::from(hash) * slots as u128) >> 64) as usize
}

/// One byte of the hash that `home` does not use, never `EMPTY`.
fn tag(hash: u64) -> u8 {
    (hash as u8).max(1)
}

impl KeyIndex {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes held.
    pub fn memory_bytes(&self) -> usize {
        self.tags.capacity() + self.nodes.capacity() * std::mem::size_of::<u32>()
    }

    /// The node whose key has `hash` and satisfies `is_key`.
    pub fn find(&self, hash: u64, is_key: impl FnMut(u32) -> bool) -> Option<u32> {
        self.probe(hash, is_key)
    }

    /// Walk `hash`'s probe sequence, offering `accept` each node whose tag
    /// matches, until it accepts one or an empty slot ends the probe.
    fn probe(&self, hash: u64, mut accept: impl FnMut(u32) -> bool) -> Option<u32> {
        let slots = self.tags.len();
        if slots == 0 {
            return None;
        }
        let want = tag(hash);
        let mut i = home(hash, slots);
        // The load stays below 1, so an empty slot ends every probe.
        loop {
            match self.tags[i] {
                EMPTY => return None,
                t if t == want && accept(self.nodes[i]) => return Some(self.nodes[i]),
                _ => {}
            }
            i += 1;
            if i == slots {
                i = 0;
            }
        }
    }

    /// Start loading the slots a probe for `hash` reads first, so that a
    /// batch of lookups overlaps its cache misses instead of taking them
    /// one after another.
    pub fn prefetch(&self, hash: u64) {
        let slots = self.tags.len();
        if slots == 0 {
            return;
        }
        let i = home(hash, slots);
        prefetch(&self.tags[i]);
        prefetch(&self.nodes[i]);
    }

    /// The node in the first slot of `hash`'s probe whose tag matches, if
    /// that comes before an empty slot: where [`KeyIndex::find`] will
    /// most likely compare keys (to prefetch the key).
    pub fn likely(&self, hash: u64) -> Option<u32> {
        self.probe(hash, |_| true)
    }

    /// Whether adding `additional` more nodes needs a larger table first
    /// ([`KeyIndex::rebuild`]).
    pub fn needs_room(&self, additional: usize) -> bool {
        (self.len + additional) * LOAD_DEN > self.tags.len() * LOAD_NUM
    }

    /// Add a node whose key is not in the index yet; the caller has made
    /// room ([`KeyIndex::needs_room`]).
    pub fn insert_unique(&mut self, hash: u64, node: u32) {
        debug_assert!(!self.needs_room(1), "inserting into a full index");
        self.place(hash, node);
        self.len += 1;
        self.added += 1;
        debug_assert!(self.len * LOAD_DEN <= self.tags.len() * LOAD_NUM);
    }

    fn place(&mut self, hash: u64, node: u32) {
        let slots = self.tags.len();
        let mut i = home(hash, slots);
        while self.tags[i] != EMPTY {
            i += 1;
            if i == slots {
                i = 0;
            }
        }
        self.tags[i] = tag(hash);
        self.nodes[i] = node;
    }

    /// Members added since the last [`KeyIndex::settle`].
    pub fn added(&self) -> usize {
        self.added
    }

    /// Members the current transaction expects to add beyond those it
    /// has added (0: no expectation).
    pub fn expected(&self) -> usize {
        self.expected
    }

    /// The current transaction expects to add about `more` members beyond
    /// those it has added so far (a load that knows its rows, from the
    /// share of new identifiers among those it has read): the next
    /// [`KeyIndex::rebuild`] makes room for them all at once.
    pub fn expect(&mut self, more: usize) {
        self.expected = more;
    }

    /// Rebuild the table from every member (`(hash, node)`, all `members`
    /// of them) with room for `additional` more, and more slots than the
    /// load limit needs: a quarter more, or as many more members as were
    /// added since the last [`KeyIndex::settle`] if that is more, or room
    /// for what the transaction expects to add still
    /// ([`KeyIndex::expect`]) at just above the load a settled table has
    /// (`EXPECTED_LOAD_NUM`). Growing by
    /// a quarter keeps the table near its load limit between
    /// transactions; a transaction adding millions of identifiers (a load
    /// of new contacts) doubles it instead, so that it takes every member
    /// again a few times rather than dozens, and `settle` gives the room
    /// back after it. A load that expects its growth takes every member
    /// once. The caller lists members in node order, so their
    /// keys are read sequentially, and each chunk's slots are prefetched
    /// before it is placed.
    pub fn rebuild(&mut self, members: impl Iterator<Item = (u64, u32)>, additional: usize) {
        let needed = (self.len + additional) * LOAD_DEN / LOAD_NUM + 1;
        let growth = (needed / 4).max(self.added.min(self.len) * LOAD_DEN / LOAD_NUM);
        let expected = if self.expected == 0 {
            0
        } else {
            (self.len + additional).saturating_add(self.expected).saturating_mul(EXPECTED_LOAD_DEN) / EXPECTED_LOAD_NUM
        };
        let slots = (needed + growth).max(expected).max(MIN_SLOTS);
        self.tags = vec![EMPTY; slots];
        self.nodes = vec![0; slots];
        let before = self.len;
        self.len = 0;
        const CHUNK: usize = 32;
        let mut chunk: Vec<(u64, u32)> = Vec::with_capacity(CHUNK);
        let mut members = members.peekable();
        while members.peek().is_some() {
            chunk.clear();
            chunk.extend(members.by_ref().take(CHUNK));
            for (hash, _) in &chunk {
                let i = home(*hash, slots);
                prefetch(&self.tags[i]);
                prefetch(&self.nodes[i]);
            }
            for &(hash, node) in &chunk {
                self.place(hash, node);
            }
            self.len += chunk.len();
        }
        debug_assert_eq!(self.len, before, "a rebuild lists every member once");
    }

    /// Whether [`KeyIndex::settle`] would rebuild the table now.
    pub fn settling_rebuilds(&self) -> bool {
        self.tags.len() > MIN_SLOTS && self.len * SETTLED_LOAD_DEN < self.tags.len() * SETTLED_LOAD_NUM
    }

    /// After a transaction: a table left below its settled load (grown
    /// by doubling for a transaction that added fewer identifiers than it
    /// made room for) is rebuilt at the size a growth by a quarter gives,
    /// for the memory per identifier. Members as for [`KeyIndex::rebuild`].
    pub fn settle(&mut self, members: impl Iterator<Item = (u64, u32)>) {
        self.added = 0;
        self.expected = 0;
        if self.settling_rebuilds() {
            // With nothing added, a rebuild grows by a quarter.
            self.rebuild(members, 0);
        }
    }
}

/// Hint the processor to load the cache line holding `value`.
#[inline]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and changes no
    // memory; the pointer comes from a reference anyway.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>((value as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// A poor hash on purpose: many equal home slots and tags.
    fn weak(key: u64) -> u64 {
        (key % 7) << 61 | (key % 3)
    }

    proptest! {
        /// Against a HashMap: every inserted key is found with its node,
        /// absent keys are not, through growths and wrap-around probes.
        #[test]
        fn behaves_like_a_map(keys in proptest::collection::vec(any::<u64>(), 0..600), strong in any::<bool>()) {
            let hash = |k: u64| if strong { k.wrapping_mul(0x9e37_79b9_7f4a_7c15) } else { weak(k) };
            let mut index = KeyIndex::default();
            let mut model: HashMap<u64, u32> = HashMap::new();
            let mut by_node: Vec<u64> = Vec::new();
            for k in keys {
                let found = index.find(hash(k), |n| by_node[n as usize] == k);
                prop_assert_eq!(found, model.get(&k).copied());
                if found.is_none() {
                    let node = by_node.len() as u32;
                    if index.needs_room(1) {
                        index.rebuild(by_node.iter().enumerate().map(|(n, k)| (hash(*k), n as u32)), 1);
                    }
                    by_node.push(k);
                    index.insert_unique(hash(k), node);
                    model.insert(k, node);
                }
            }
            prop_assert_eq!(index.len(), model.len());
            for (k, n) in &model {
                prop_assert_eq!(index.find(hash(*k), |m| by_node[m as usize] == *k), Some(*n));
            }
            prop_assert_eq!(index.find(hash(u64::MAX - 1), |m| by_node[m as usize] == u64::MAX - 1), model.get(&(u64::MAX - 1)).copied());
        }
    }

    /// Add nodes `0..n` one by one, growing as the graph does.
    fn filled(n: u32, hash: impl Fn(u32) -> u64) -> KeyIndex {
        let mut index = KeyIndex::default();
        for m in 0..n {
            if index.needs_room(1) {
                index.rebuild((0..m).map(|k| (hash(k), k)), 1);
            }
            index.insert_unique(hash(m), m);
        }
        index
    }

    #[test]
    fn reserving_keeps_every_member_and_avoids_growth() {
        let hash = |n: u32| u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut index = filled(1000, hash);
        index.rebuild((0..1000).map(|k| (hash(k), k)), 50_000);
        let slots = index.tags.len();
        for n in 1000..51_000u32 {
            assert!(!index.needs_room(1));
            index.insert_unique(hash(n), n);
        }
        assert_eq!(index.tags.len(), slots, "no growth after reserving");
        for n in 0..51_000u32 {
            assert_eq!(index.find(hash(n), |m| m == n), Some(n));
        }
    }

    /// A transaction that expects its growth takes its members again
    /// once, and is left between the settled load and the limit, so
    /// settling gives nothing back; an expectation far short of what
    /// comes only makes growth start from a larger table.
    #[test]
    fn an_expected_growth_is_made_room_for_at_once() {
        let hash = |n: u32| u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for (expect, actual, rebuilds_at_most) in [(200_000usize, 200_000u32, 1), (190_000, 200_000, 2), (20_000, 200_000, 5)] {
            let mut index = filled(10_000, hash);
            index.settle((0..10_000).map(|k| (hash(k), k)));
            let mut rebuilds = 0;
            for n in 10_000..10_000 + actual {
                if index.needs_room(1) {
                    // The load projects the rest from the share so far.
                    index.expect(expect.saturating_sub(index.added()));
                    index.rebuild((0..n).map(|k| (hash(k), k)), 1);
                    rebuilds += 1;
                }
                index.insert_unique(hash(n), n);
            }
            assert!(rebuilds <= rebuilds_at_most, "{rebuilds} growths expecting {expect} of {actual}");
            let slots = index.tags.len();
            index.settle((0..10_000 + actual).map(|k| (hash(k), k)));
            if expect == actual as usize {
                assert_eq!(index.tags.len(), slots, "nothing to give back when the expectation held");
            }
            assert!(index.len() * 10 >= index.tags.len() * 6 && index.len() * LOAD_DEN <= index.tags.len() * LOAD_NUM);
            for n in 0..10_000 + actual {
                assert_eq!(index.find(hash(n), |m| m == n), Some(n));
            }
        }
    }

    /// Transactions of `sizes` new members each, settled after each:
    /// the load stays under its limit while growing, and between 0.6 and
    /// 0.8 after each settle. A transaction of one member grows the table
    /// by a quarter (so settling has nothing to give back); a large one
    /// into an empty table doubles it, taking its members again fewer
    /// times.
    #[test]
    fn load_stays_between_the_bounds_after_growing() {
        let hash = |n: u32| u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut index = KeyIndex::default();
        let mut n = 0u32;
        let mut placed_in_growths = 0;
        let mut settled_smaller = 0;
        for size in [150_000u32, 1, 1, 30_000, 1, 250_000, 5_000] {
            let placed_before = placed_in_growths;
            for _ in 0..size {
                if index.needs_room(1) {
                    placed_in_growths += n as usize;
                    index.rebuild((0..n).map(|k| (hash(k), k)), 1);
                }
                index.insert_unique(hash(n), n);
                n += 1;
                assert!(index.len() * LOAD_DEN <= index.tags.len() * LOAD_NUM);
            }
            if placed_before == 0 && size >= 100_000 {
                // Doubling from empty: fewer than twice the members taken
                // again (growth by a quarter takes four to five times).
                let again = placed_in_growths - placed_before;
                assert!(again < 2 * size as usize, "{again} members taken again for {size} new");
            }
            let slots_before_settle = index.tags.len();
            index.settle((0..n).map(|k| (hash(k), k)));
            if size == 1 {
                assert_eq!(index.tags.len(), slots_before_settle, "nothing to give back after one member");
            }
            settled_smaller += usize::from(index.tags.len() < slots_before_settle);
            assert!(index.len() * 10 >= index.tags.len() * 6, "{} in {} after {size}", index.len(), index.tags.len());
            assert!(index.len() * LOAD_DEN <= index.tags.len() * LOAD_NUM);
            for k in (0..n).step_by(997) {
                assert_eq!(index.find(hash(k), |m| m == k), Some(k));
            }
        }
        // These sizes leave the table below its settled load twice.
        assert_eq!(settled_smaller, 2);
    }
}
