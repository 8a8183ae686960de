//! The graph's dictionary: each identifier key by its dense node id, and
//! the hash index from key to node. Kept apart from the node arrays
//! (`Graph`) so that a load can intern one batch's values on a thread of
//! its own while the graph links the batch before it: interning needs
//! nothing but the dictionary, and linking nothing of it.

use super::super::dict::{self, KeyIndex};
use super::{grow, trim, Key, NodeId, MAX_NODES};

/// A dictionary key as kept in memory: the first 96 of its 128 bits (see
/// [`pack`]).
pub(super) type PackedKey = [u32; 3];

/// 96 bits of the key: colliding values among 2^32 (the node limit) has a
/// probability near 2^-33, and 4 bytes per identifier are saved.
pub(super) fn pack(key: &Key) -> PackedKey {
    [(key[0] >> 32) as u32, key[0] as u32, (key[1] >> 32) as u32]
}

pub(super) fn unpack(key: &PackedKey) -> Key {
    [(u64::from(key[0]) << 32) | u64::from(key[1]), u64::from(key[2]) << 32]
}

fn key_hash(key: &PackedKey) -> u64 {
    // The key is already a strong hash.
    (u64::from(key[0]) << 32 | u64::from(key[1])) ^ u64::from(key[2]).rotate_left(17)
}

/// The index's members, `(hash, node)` in node order: every key but the
/// holes'.
fn members<'a>(keys: &'a [PackedKey], holes: &'a roaring::RoaringBitmap) -> impl Iterator<Item = (u64, NodeId)> + 'a {
    keys.iter()
        .enumerate()
        .filter(move |(n, _)| holes.is_empty() || !holes.contains(*n as NodeId))
        .map(|(n, key)| (key_hash(key), n as NodeId))
}

#[derive(Default)]
pub struct Dictionary {
    /// By node id.
    keys: Vec<PackedKey>,
    index: KeyIndex,
    /// Node ids without a key (a rebuild from stored node ids that skips
    /// some): never in the index. Usually empty.
    holes: roaring::RoaringBitmap,
}

impl Dictionary {
    /// Node ids issued, holes included.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn lookup(&self, key: &Key) -> Option<NodeId> {
        self.lookup_packed(&pack(key))
    }

    fn lookup_packed(&self, key: &PackedKey) -> Option<NodeId> {
        self.index.find(key_hash(key), |n| self.keys[n as usize] == *key)
    }

    /// The key of a node that is not a hole.
    pub fn key(&self, node: NodeId) -> Key {
        debug_assert!(!self.is_hole(node), "a hole has no key");
        unpack(&self.keys[node as usize])
    }

    pub fn is_hole(&self, node: NodeId) -> bool {
        !self.holes.is_empty() && self.holes.contains(node)
    }

    /// The node of `key`, added when new (as the next node id).
    pub fn intern(&mut self, key: &Key) -> Result<NodeId, String> {
        let key = pack(key);
        match self.lookup_packed(&key) {
            Some(n) => Ok(n),
            None => self.add(key),
        }
    }

    /// [`Dictionary::intern`] for many keys, in order: the lookups run as a
    /// pipeline, each prefetching the index slots of a key `AHEAD` places
    /// on and the stored key of the one `AHEAD / 2` on, so their cache
    /// misses overlap (the dictionary is far larger than the caches). A
    /// key not found is added at once, while the slots its probe just
    /// read are in cache; an equal key later in the batch (values that
    /// normalize alike) then finds it. New keys get consecutive node ids.
    pub fn intern_all(&mut self, keys: &[Key]) -> Result<Vec<NodeId>, String> {
        const AHEAD: usize = 16;
        let packed: Vec<PackedKey> = keys.iter().map(pack).collect();
        let hashes: Vec<u64> = packed.iter().map(key_hash).collect();
        let mut nodes = Vec::with_capacity(keys.len());
        for j in 0..keys.len() + AHEAD {
            if let Some(h) = hashes.get(j) {
                self.index.prefetch(*h);
            }
            if let Some(h) = j.checked_sub(AHEAD / 2).and_then(|k| hashes.get(k)) {
                if let Some(n) = self.index.likely(*h) {
                    dict::prefetch(&self.keys[n as usize]);
                }
            }
            if let Some(k) = j.checked_sub(AHEAD).filter(|k| *k < keys.len()) {
                let key = &packed[k];
                let node = match self.index.find(hashes[k], |n| self.keys[n as usize] == *key) {
                    Some(n) => n,
                    None => self.add(*key)?,
                };
                nodes.push(node);
            }
        }
        debug_assert_eq!(nodes.len(), keys.len());
        Ok(nodes)
    }

    /// A new node for a key not in the dictionary.
    fn add(&mut self, key: PackedKey) -> Result<NodeId, String> {
        let n = self.keys.len();
        if n >= MAX_NODES {
            return Err(format!("the identity graph holds its limit of {MAX_NODES} identifiers"));
        }
        self.make_room(1);
        self.push_key(key);
        self.index.insert_unique(key_hash(&key), n as NodeId);
        Ok(n as NodeId)
    }

    fn push_key(&mut self, key: PackedKey) {
        if self.keys.len() == self.keys.capacity() {
            let wanted = self.growth_wanted();
            grow(&mut self.keys, wanted);
        }
        self.keys.push(key);
    }

    /// Every stored key by node id (a hole's is the filler written for
    /// it, never looked up): what the dictionary file saves, with the
    /// node types.
    pub fn stored_keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.keys.iter().map(unpack)
    }

    /// Give `node` the key `key` (rebuilding from stored node ids): the
    /// next node id, or a hole left before. Ids skipped on the way become
    /// holes. Errors when the key is stored under another node; storing
    /// it again under the same one changes nothing.
    pub fn insert_at(&mut self, node: NodeId, key: &Key) -> Result<(), String> {
        if node as usize >= MAX_NODES {
            return Err(format!("node id {node} is beyond the limit of {MAX_NODES} identifiers"));
        }
        let key = pack(key);
        if let Some(existing) = self.lookup_packed(&key) {
            if existing != node {
                return Err(format!("identifier key stored under node {node} and node {existing}"));
            }
            return Ok(());
        }
        if (node as usize) < self.keys.len() {
            if !self.is_hole(node) {
                return Err(format!("node {node} stored for two different identifier values"));
            }
            // Room first: a growth lists the index's members, which the
            // hole is not yet.
            self.make_room(1);
            self.holes.remove(node);
            self.keys[node as usize] = key;
            self.index.insert_unique(key_hash(&key), node);
            return Ok(());
        }
        while self.keys.len() < node as usize {
            let hole = self.keys.len() as NodeId;
            // A hole's key is never looked up: it is not in the index.
            self.push_key([u32::MAX, u32::MAX, hole]);
            self.holes.insert(hole);
        }
        self.add(key).map(|n| debug_assert_eq!(n, node))
    }

    /// Grow the index, if it must, to take `additional` more nodes.
    /// Called before a new node is stored: every key is then exactly the
    /// index's members.
    fn make_room(&mut self, additional: usize) {
        if self.index.needs_room(additional) {
            let Dictionary { keys, index, holes } = self;
            index.rebuild(members(keys, holes), additional);
        }
    }

    /// Nodes added since the last [`Dictionary::trim_slack`].
    pub fn added(&self) -> usize {
        self.index.added()
    }

    /// The transaction expects to add about `more` nodes beyond those it
    /// has added: the index makes room for them at its next growth, and
    /// the keys at theirs, rather than growing step by step.
    pub fn expect(&mut self, more: usize) {
        self.index.expect(more.min(MAX_NODES.saturating_sub(self.keys.len())));
    }

    /// The nodes the transaction expects to add still.
    pub fn expected(&self) -> usize {
        self.index.expected()
    }

    fn growth_wanted(&self) -> usize {
        super::growth_for(self.index.expected())
    }

    /// Make room for `nodes` more nodes at once (loading a saved
    /// dictionary): no growth steps, no rehashing of the index on the way.
    pub fn reserve(&mut self, nodes: usize) {
        self.keys.reserve_exact(nodes);
        self.make_room(nodes);
    }

    /// Room reserved for keys (the node arrays take as much).
    pub fn capacity(&self) -> usize {
        self.keys.capacity()
    }

    /// Whether [`Dictionary::trim_slack`] would rebuild the index.
    pub fn trimming_rebuilds(&self) -> bool {
        self.index.settling_rebuilds()
    }

    /// Give back the growth slack of a transaction (see `Graph::trim_slack`).
    pub fn trim_slack(&mut self) {
        let Dictionary { keys, index, holes } = self;
        index.settle(members(keys, holes));
        trim(keys);
    }

    /// Bytes held by the keys and by the index.
    pub fn memory_parts(&self) -> [(&'static str, usize); 2] {
        [("keys", self.keys.capacity() * std::mem::size_of::<PackedKey>()), ("dictionary", self.index.memory_bytes())]
    }
}
