//! The identity graph in memory: a dictionary from identifier keys to dense
//! node ids, union-find over nodes with a member ring per component, edges
//! with the number of live rows asserting them, and the stable profile id
//! of every component.
//!
//! Pure data structure: no Arrow, no storage. The engine feeds it rows (the
//! identifier nodes each row carries) and turns the [`ProfileEvent`]s it
//! emits into durable log rows. Everything it holds can be rebuilt from
//! those rows and that log (see `identity::load`), which is how it survives
//! restarts and how `RESOLVE IDENTITIES` checks it.

use std::collections::BTreeSet;

use smallvec::SmallVec;

mod dictionary;
mod repeat;
mod split;
pub use dictionary::Dictionary;
pub use repeat::RepeatMemo;

pub type NodeId = u32;
pub type ProfileId = u64;
/// Dense id of an identifier type.
pub type TypeId = u16;
/// 128-bit hash of (type, normalized value): the dictionary key.
pub type Key = [u64; 2];

const NONE: u32 = u32::MAX;
/// Most nodes a graph may hold (node ids are 32-bit; the two largest
/// values mark "none" and a retired profile slot).
pub const MAX_NODES: usize = (u32::MAX - 2) as usize;
/// Largest profile id the graph issues: ids are kept in 32 bits in memory
/// (profile slots and component labels), 0 meaning "no profile".
pub const MAX_PROFILE_ID: ProfileId = (u32::MAX - 1) as ProfileId;
/// Merges counted per value (saturating); above any usable generic limit.
pub const MAX_MERGES: u16 = 0x7fff;
/// Largest generic limit in force (a larger declared one acts as this).
pub const MAX_GENERIC_LIMIT: u32 = MAX_MERGES as u32 - 1;
/// Flag bit of `Graph::merges`: the value is generic.
const GENERIC: u16 = 0x8000;
/// Profile slot marker: the id was retired into the slot's second word.
const RETIRED: u32 = u32::MAX - 1;
/// Most distinct edges (pairs of identifiers some row links).
pub const MAX_EDGES: usize = (u32::MAX - 1) as usize;

/// Smallest growth of the graph's arrays, in entries.
const MIN_GROWTH: usize = 1024;

/// Make room for `extra` more entries, at least doubling: a load adding
/// millions of nodes copies (and faults in) each array a few times, not
/// the dozens of times growing by an eighth did, and a load that expects
/// its growth ([`growth_for`]) makes room for it once.
/// [`Graph::trim_slack`] gives the slack back at the end of each
/// transaction.
fn grow<T>(v: &mut Vec<T>, extra: usize) {
    if v.len().saturating_add(extra) > v.capacity() {
        v.reserve_exact(v.len().max(MIN_GROWTH).max(extra));
    }
}

/// Most spare capacity an array keeps between transactions: a 32nd of
/// its length (and the smallest growth). Small, for the memory per
/// identifier; a transaction that outgrows it doubles the array once.
fn trim<T>(v: &mut Vec<T>) {
    let keep = v.len() + (v.len() / 32).max(MIN_GROWTH);
    if v.capacity() > keep {
        // Shrinking a block keeps it in place (or remaps it): no copy.
        v.shrink_to(keep);
    }
}

/// Every profile id up to [`MAX_PROFILE_ID`] has been issued.
struct ProfileIdsExhausted;

impl std::fmt::Display for ProfileIdsExhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the database has issued its limit of {MAX_PROFILE_ID} profile ids")
    }
}
/// Identifier columns one row may carry (bits of the link mask).
pub const MAX_ROW_IDENTIFIERS: usize = 32;

/// A row's identifiers, or nodes derived from them, without allocating
/// for the usual handful (one row is linked per call, millions per load).
type RowNodes = SmallVec<[(u8, NodeId); 8]>;
type Nodes = SmallVec<[NodeId; 8]>;

/// Linking rules of one identifier type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeRules {
    /// Distinct values of this type one profile may hold.
    pub max_per_profile: u32,
    /// 1 is the highest; when a row would break a limit, its identifier
    /// with the largest number stops linking first.
    pub priority: i64,
    /// A value that would merge more than this many profiles stops linking.
    pub generic_limit: u32,
}

#[derive(Clone, Debug, Default)]
pub struct Rules {
    /// Indexed by type id; `None` for dropped types.
    pub types: Vec<Option<TypeRules>>,
    /// Most identifiers one profile may hold, whatever their type.
    pub max_identifiers: u32,
}

impl Rules {
    fn of(&self, t: TypeId) -> Option<&TypeRules> {
        self.types.get(t as usize).and_then(|r| r.as_ref())
    }

    /// The generic limit in force for a type: merges are counted up to
    /// `MAX_MERGES`, so a larger limit acts as `MAX_GENERIC_LIMIT`.
    fn generic_limit(&self, t: TypeId) -> Option<u32> {
        self.of(t).map(|r| r.generic_limit.min(MAX_GENERIC_LIMIT))
    }
}

/// Why a row's identifier did not link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Linking would give the profile more values of its type than allowed.
    Limit,
    /// The value links more profiles than its type's generic limit.
    Generic,
    /// The profile would hold more identifiers than the hard cap.
    HardCap,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Limit => "limit",
            Refusal::Generic => "generic",
            Refusal::HardCap => "hard_cap",
        }
    }
}

/// What happened to profiles; the engine logs each one durably.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileEvent {
    Created { pid: ProfileId, anchor: NodeId },
    /// `retired` now answers as `survivor`; `via` are the row's nodes that
    /// were already in a profile (the values that caused the merge).
    Merged { retired: ProfileId, survivor: ProfileId, via: Vec<NodeId> },
    /// A part of `from` split off as the new profile `pid`.
    Split { pid: ProfileId, from: ProfileId, anchor: NodeId },
    /// The profile's anchor node moved (its old one left the profile).
    Moved { pid: ProfileId, anchor: NodeId },
    /// The profile's last row went away.
    Deleted { pid: ProfileId },
}

/// A row's identifier that did not link, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Position of the identifier in the row (its column's index in the
    /// table's identifier declaration).
    pub slot: u8,
    pub node: NodeId,
    pub reason: Refusal,
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkOutcome {
    /// Bit `slot` set for each identifier that linked.
    pub mask: u32,
    pub refused: Vec<Refused>,
}

/// An undirected edge in the adjacency lists of both ends. It stores the
/// XOR of its ends (walking from one end gives the other) and one list
/// link per end: `next[0]` for the smaller node id, `next[1]` for the
/// larger. 16 bytes instead of two 8-byte half-edges plus a row count.
#[derive(Clone, Copy, Debug)]
struct Edge {
    ends: u32,
    next: [u32; 2],
    /// Live rows asserting the edge.
    rows: u32,
}

impl Edge {
    fn other(&self, from: NodeId) -> NodeId {
        self.ends ^ from
    }

    /// Which list link `from` follows.
    fn side(&self, from: NodeId) -> usize {
        usize::from(from > self.other(from))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub node: NodeId,
    /// Seconds since the epoch when the profile was created.
    pub created: u32,
}

/// The identity graph. Per node it holds 40 bytes in arrays indexed
/// by node id, plus the dictionary's share and 16 bytes per edge; per
/// profile id ever issued, 8 bytes.
#[derive(Default)]
pub struct Graph {
    /// Keys by node id and the index over them. Every node in the arrays
    /// below is in it; a load interning on a thread of its own takes it
    /// out for a while ([`Graph::take_dictionary`]), and adds the nodes
    /// the arrays then adopt ([`Graph::adopt_nodes`]).
    dictionary: Dictionary,
    /// Nodes the transaction expects to add still (a load that knows its
    /// rows): the arrays make room for them at once when they fill up.
    expected_nodes: usize,
    /// `TypeId::MAX` for a hole (an id no row refers to).
    node_type: Vec<TypeId>,
    /// Union-find parent (a root is its own). Roots are linked by a fixed
    /// pseudo-random order of node ids ([`link_priority`]) rather than by
    /// rank or size: the same expected depth without a byte per node.
    parent: Vec<NodeId>,
    /// Circular list of each component's members.
    ring: Vec<NodeId>,
    /// Live rows that link this node.
    occurrences: Vec<u32>,
    /// Merges this node took part in (generic-value detection, saturating
    /// at `MAX_MERGES`), and the `GENERIC` flag.
    merges: Vec<u16>,
    /// Latest commit time (seconds) of a row linking the node; the first
    /// is read from the rows when asked for (`profile_identifiers`).
    last_seen: Vec<u32>,
    /// Profile id of each root (0: no profile).
    pid_at: Vec<u32>,
    adj_head: Vec<u32>,
    edges: Vec<Edge>,
    /// Indexed by profile id: `[anchor node, created]` while the profile
    /// lives, `[RETIRED, survivor]` once merged into another, `[NONE, 0]`
    /// when never issued or deleted.
    profiles: Vec<[u32; 2]>,
    /// Every live profile id, in order.
    live: roaring::RoaringTreemap,
    /// Bumped whenever `live` changes.
    live_version: u64,
    next_pid: ProfileId,
    /// Components whose edges or members shrank, to recompute in `settle`.
    dirty: BTreeSet<NodeId>,
    /// Bumped by every change that could make a row link differently from
    /// an identical earlier one: a value flagged generic, rows unlinked
    /// ([`RepeatMemo`]).
    epoch: u64,
    /// Tests only: link every row by the general path, to check the
    /// shortcuts for common rows against it.
    #[cfg(test)]
    general_path_only: bool,
}

/// Bit `slot` set for each of a row's identifiers.
fn slots_mask(row: &[(u8, NodeId)]) -> u32 {
    row.iter().fold(0u32, |m, (slot, _)| m | (1 << slot))
}

/// The order in which union links roots: a fixed permutation of node ids
/// that looks random (multiplication by an odd constant is a bijection of
/// u32). Linking by a random order gives trees of logarithmic expected
/// depth, like union by rank (Goel, Khanna, Larkin, Tarjan, "Disjoint set
/// union with randomized linking", SODA 2014), without storing ranks.
fn link_priority(n: NodeId) -> u32 {
    n.wrapping_mul(0x9e37_79b9)
}

/// Room to make when an array of nodes fills up during a transaction that
/// expects to add `expected` more: all of them (and a 16th more), or one
/// entry. Each growth copies the arrays (40 bytes a node) and faults in
/// the copy's pages: a third of the writer's time in a load of new
/// contacts when they doubled step by step.
fn growth_for(expected: usize) -> usize {
    expected.saturating_add(expected / 16).max(1)
}

impl Graph {
    pub fn new() -> Graph {
        Graph { next_pid: 1, ..Default::default() }
    }

    fn slot_mut(&mut self, pid: ProfileId) -> &mut [u32; 2] {
        debug_assert!((1..=MAX_PROFILE_ID).contains(&pid), "profile id {pid} out of range");
        let i = pid as usize;
        if i >= self.profiles.len() {
            let extra = i + 1 - self.profiles.len();
            grow(&mut self.profiles, extra);
            self.profiles.resize(i + 1, [NONE, 0]);
        }
        &mut self.profiles[i]
    }

    fn slot(&self, pid: ProfileId) -> [u32; 2] {
        usize::try_from(pid).ok().and_then(|i| self.profiles.get(i)).copied().unwrap_or([NONE, 0])
    }

    fn set_anchor(&mut self, pid: ProfileId, anchor: Anchor) {
        debug_assert!((anchor.node as usize) < MAX_NODES);
        *self.slot_mut(pid) = [anchor.node, anchor.created];
        if self.live.insert(pid) {
            self.live_version += 1;
        }
    }

    fn drop_anchor(&mut self, pid: ProfileId) {
        if self.slot(pid)[0] != NONE {
            *self.slot_mut(pid) = [NONE, 0];
        }
        if self.live.remove(pid) {
            self.live_version += 1;
        }
    }

    fn retire(&mut self, retired: ProfileId, survivor: ProfileId) {
        self.drop_anchor(retired);
        *self.slot_mut(retired) = [RETIRED, survivor as u32];
    }

    /// Profile ids that can still be issued.
    pub fn profile_ids_left(&self) -> u64 {
        (MAX_PROFILE_ID + 1).saturating_sub(self.next_pid)
    }

    /// Changes whenever the set of live profiles does.
    pub fn live_version(&self) -> u64 {
        self.live_version
    }

    /// Every live profile id, as a bitmap.
    pub fn live_profiles(&self) -> &roaring::RoaringTreemap {
        &self.live
    }

    pub fn node_count(&self) -> usize {
        self.node_type.len()
    }

    pub fn profile_count(&self) -> usize {
        self.live.len() as usize
    }

    /// Every node's type and key, by node id (unused ids have type
    /// `TypeId::MAX`): what the dictionary file saves.
    pub fn dictionary(&self) -> Vec<(TypeId, Key)> {
        debug_assert_eq!(self.dictionary.len(), self.node_type.len(), "the dictionary is out");
        self.node_type.iter().copied().zip(self.dictionary.stored_keys()).collect()
    }

    pub fn lookup(&self, key: &Key) -> Option<NodeId> {
        self.dictionary.lookup(key)
    }

    #[cfg(test)]
    pub fn key_of(&self, node: NodeId) -> Key {
        self.dictionary.key(node)
    }

    pub fn type_of(&self, node: NodeId) -> TypeId {
        self.node_type[node as usize]
    }

    /// The node for `key`, created when new.
    pub fn intern(&mut self, t: TypeId, key: Key) -> Result<NodeId, String> {
        let n = self.dictionary.intern(&key)?;
        self.adopt_nodes(self.dictionary.len(), t);
        Ok(n)
    }

    /// [`Graph::intern`] for many keys of one type, in order
    /// ([`Dictionary::intern_all`]).
    #[cfg(test)]
    pub fn intern_all(&mut self, t: TypeId, keys: &[Key]) -> Result<Vec<NodeId>, String> {
        let nodes = self.dictionary.intern_all(keys)?;
        self.adopt_nodes(self.dictionary.len(), t);
        Ok(nodes)
    }

    /// Lend the dictionary out: a load interns its batches with it on a
    /// thread of its own while the graph links (which never consults it).
    /// Until [`Graph::restore_dictionary`], only linking and
    /// [`Graph::adopt_nodes`] may be used.
    pub fn take_dictionary(&mut self) -> Dictionary {
        debug_assert_eq!(self.dictionary.len(), self.node_type.len());
        std::mem::take(&mut self.dictionary)
    }

    /// Take back the dictionary lent out, once the arrays have adopted
    /// every node it added.
    pub fn restore_dictionary(&mut self, dictionary: Dictionary) -> Result<(), String> {
        if dictionary.len() != self.node_type.len() {
            return Err(format!("the dictionary holds {} nodes, the graph {}", dictionary.len(), self.node_type.len()));
        }
        self.dictionary = dictionary;
        Ok(())
    }

    /// Give the nodes the dictionary added, up to node id `upto`
    /// (exclusive), their place in the arrays: type `t`, alone in their
    /// component, linked by no row.
    pub fn adopt_nodes(&mut self, upto: usize, t: TypeId) {
        let more = upto.saturating_sub(self.node_type.len());
        if more == 0 {
            return;
        }
        self.make_node_room(more);
        for _ in 0..more {
            self.push_node(t);
        }
    }

    /// Insert a node with a given id (rebuilding from stored node ids).
    /// Ids in between stay unused (holes no row refers to).
    pub fn insert_at(&mut self, node: NodeId, t: TypeId, key: Key) -> Result<(), String> {
        let before = self.dictionary.len();
        self.dictionary.insert_at(node, &key)?;
        if (node as usize) < before {
            // The key was there already, or filled a hole.
            let k = node as usize;
            if self.node_type[k] == TypeId::MAX {
                self.node_type[k] = t;
            }
            return Ok(());
        }
        self.adopt_nodes(node as usize, TypeId::MAX);
        self.adopt_nodes(node as usize + 1, t);
        debug_assert_eq!(self.dictionary.len(), self.node_type.len());
        Ok(())
    }

    /// The transaction expects to add about `more` nodes still (what the
    /// dictionary's interning projects, [`Dictionary::expected`]): the node
    /// arrays make room for them at their next growth rather than growing
    /// step by step.
    pub fn expect_nodes(&mut self, more: usize) {
        self.expected_nodes = more;
    }

    /// Make room for `nodes` more nodes at once (loading a saved
    /// dictionary): no growth steps, no rehashing of the index on the way.
    pub fn reserve_nodes(&mut self, nodes: usize) {
        self.dictionary.reserve(nodes);
        let room = self.dictionary.capacity() - self.node_type.len();
        self.node_type.reserve_exact(room);
        self.parent.reserve_exact(room);
        self.ring.reserve_exact(room);
        self.occurrences.reserve_exact(room);
        self.merges.reserve_exact(room);
        self.last_seen.reserve_exact(room);
        self.pid_at.reserve_exact(room);
        self.adj_head.reserve_exact(room);
    }

    /// Room for `more` nodes in every array, grown together (by what the
    /// transaction expects when they must grow).
    fn make_node_room(&mut self, more: usize) {
        if self.node_type.len() + more <= self.node_type.capacity() {
            return;
        }
        let wanted = growth_for(self.expected_nodes).max(more);
        grow(&mut self.node_type, wanted);
        // At least as much room as they hold: each takes exactly it.
        let room = self.node_type.capacity() - self.node_type.len();
        grow(&mut self.parent, room);
        grow(&mut self.ring, room);
        grow(&mut self.occurrences, room);
        grow(&mut self.merges, room);
        grow(&mut self.last_seen, room);
        grow(&mut self.pid_at, room);
        grow(&mut self.adj_head, room);
    }

    fn push_node(&mut self, t: TypeId) {
        let n = self.node_type.len() as NodeId;
        self.node_type.push(t);
        self.parent.push(n);
        self.ring.push(n);
        self.occurrences.push(0);
        self.merges.push(0);
        self.last_seen.push(0);
        self.pid_at.push(0);
        self.adj_head.push(NONE);
    }

    pub fn is_generic(&self, node: NodeId) -> bool {
        self.merges[node as usize] & GENERIC != 0
    }

    pub fn mark_generic(&mut self, node: NodeId) {
        self.epoch += 1;
        self.merges[node as usize] |= GENERIC;
    }

    fn merge_count(&self, node: NodeId) -> u32 {
        u32::from(self.merges[node as usize] & MAX_MERGES)
    }

    pub fn add_merges(&mut self, node: NodeId, n: u32) {
        let m = &mut self.merges[node as usize];
        let count = u32::from(*m & MAX_MERGES).saturating_add(n).min(u32::from(MAX_MERGES)) as u16;
        *m = (*m & GENERIC) | count;
    }

    /// Root without path compression (readers share the graph).
    pub fn root(&self, mut n: NodeId) -> NodeId {
        while self.parent[n as usize] != n {
            n = self.parent[n as usize];
        }
        n
    }

    /// Start loading what linking `node` reads first (its parent, counts,
    /// flags and time), so that the cache misses of rows linked soon
    /// overlap with the linking of this one. Only a hint; a node the
    /// arrays do not hold yet is skipped.
    pub fn prefetch_entries(&self, node: NodeId) {
        let i = node as usize;
        if i < self.parent.len() {
            crate::identity::dict::prefetch(&self.parent[i]);
            crate::identity::dict::prefetch(&self.occurrences[i]);
            crate::identity::dict::prefetch(&self.merges[i]);
            crate::identity::dict::prefetch(&self.last_seen[i]);
        }
    }

    /// The second step after [`Graph::prefetch_entries`], once the node's
    /// parent has arrived: the parent's own parent and profile (most
    /// parents are roots).
    pub fn prefetch_parent(&self, node: NodeId) {
        let Some(&p) = self.parent.get(node as usize) else { return };
        if let (Some(parent), Some(pid)) = (self.parent.get(p as usize), self.pid_at.get(p as usize)) {
            crate::identity::dict::prefetch(parent);
            crate::identity::dict::prefetch(pid);
        }
    }

    fn find(&mut self, mut n: NodeId) -> NodeId {
        while self.parent[n as usize] != n {
            let p = self.parent[n as usize];
            self.parent[n as usize] = self.parent[p as usize];
            n = p;
        }
        n
    }

    /// Current profile of a node (`None` when no live row links it).
    pub fn profile_of(&self, node: NodeId) -> Option<ProfileId> {
        if node as usize >= self.parent.len() {
            return None;
        }
        match self.pid_at[self.root(node) as usize] {
            0 => None,
            p => Some(ProfileId::from(p)),
        }
    }

    /// The profile an identifier value belongs to, for lookups by value:
    /// none for a value flagged generic (it identifies no one).
    pub fn profile_of_identifier(&self, node: NodeId) -> Option<ProfileId> {
        if self.merges.get(node as usize).is_none_or(|m| m & GENERIC != 0) {
            return None;
        }
        self.profile_of(node)
    }

    /// The surviving id for any id ever issued (itself when live).
    pub fn resolve_alias(&self, mut pid: ProfileId) -> Option<ProfileId> {
        // Alias chains are short (each hop is a merge into an older id);
        // the bound only guards against a cycle no event log can produce.
        for _ in 0..64 {
            match self.slot(pid) {
                [RETIRED, survivor] => pid = ProfileId::from(survivor),
                [NONE, _] => return None,
                _ => return Some(pid),
            }
        }
        None
    }

    pub fn anchor(&self, pid: ProfileId) -> Option<Anchor> {
        match self.slot(pid) {
            [NONE | RETIRED, _] => None,
            [node, created] => Some(Anchor { node, created }),
        }
    }

    /// Live profiles and their anchors, by profile id.
    pub fn anchors(&self) -> impl Iterator<Item = (ProfileId, Anchor)> + '_ {
        self.live.iter().filter_map(|p| Some((p, self.anchor(p)?)))
    }

    /// Every node of a profile's component.
    pub fn members(&self, pid: ProfileId) -> Vec<NodeId> {
        match self.anchor(pid) {
            Some(a) => self.ring_of(a.node),
            None => Vec::new(),
        }
    }

    fn ring_of(&self, start: NodeId) -> Vec<NodeId> {
        let mut out = vec![start];
        let mut n = self.ring[start as usize];
        while n != start {
            out.push(n);
            n = self.ring[n as usize];
        }
        out
    }

    pub fn occurrences(&self, node: NodeId) -> u32 {
        self.occurrences[node as usize]
    }

    pub fn last_seen(&self, node: NodeId) -> u32 {
        self.last_seen[node as usize]
    }

    #[cfg(test)]
    pub fn merges_of(&self, node: NodeId) -> u32 {
        self.merge_count(node)
    }

    /// Neighbours of a node over live edges.
    pub fn neighbours(&self, node: NodeId) -> Vec<NodeId> {
        let mut out = Vec::new();
        let mut e = self.adj_head[node as usize];
        while e != NONE {
            let edge = &self.edges[e as usize];
            if edge.rows > 0 {
                out.push(edge.other(node));
            }
            e = edge.next[edge.side(node)];
        }
        out
    }

    /// Bytes held by each part of the graph: arrays by capacity.
    fn memory_parts(&self) -> Vec<(&'static str, usize)> {
        fn vec<T>(v: &Vec<T>) -> usize {
            v.capacity() * std::mem::size_of::<T>()
        }
        vec![
            self.dictionary.memory_parts()[0],
            self.dictionary.memory_parts()[1],
            ("node_type", vec(&self.node_type)),
            ("parent", vec(&self.parent)),
            ("ring", vec(&self.ring)),
            ("occurrences", vec(&self.occurrences)),
            ("merges", vec(&self.merges)),
            ("last_seen", vec(&self.last_seen)),
            ("pid_at", vec(&self.pid_at)),
            ("adj_head", vec(&self.adj_head)),
            ("edges", vec(&self.edges)),
            ("profiles", vec(&self.profiles)),
            ("live_bitmap", self.live.serialized_size()),
        ]
    }

    /// Whether [`Graph::trim_slack`] would rebuild the dictionary index
    /// (the rest of it only shrinks blocks in place).
    pub fn trimming_rebuilds(&self) -> bool {
        self.dictionary.trimming_rebuilds()
    }

    /// Give back the arrays' growth slack beyond a 32nd of their length,
    /// and the dictionary index's beyond its settled load (after a
    /// transaction: it grew them by doubling).
    pub fn trim_slack(&mut self) {
        self.dictionary.trim_slack();
        self.expected_nodes = 0;
        trim(&mut self.node_type);
        trim(&mut self.parent);
        trim(&mut self.ring);
        trim(&mut self.occurrences);
        trim(&mut self.merges);
        trim(&mut self.last_seen);
        trim(&mut self.pid_at);
        trim(&mut self.adj_head);
        trim(&mut self.edges);
        trim(&mut self.profiles);
    }

    /// Bytes held, for the memory-per-identifier figure.
    pub fn memory_bytes(&self) -> usize {
        self.memory_parts().iter().map(|(_, b)| b).sum()
    }

    /// A new id, never issued before.
    /// Callers check [`Graph::profile_ids_left`] before a change that may
    /// issue ids; past the limit the last id would be reused, so this is
    /// asserted too.
    fn issue_pid(&mut self) -> ProfileId {
        assert!(self.next_pid <= MAX_PROFILE_ID, "profile ids exhausted (checked by callers)");
        let p = self.next_pid;
        self.next_pid += 1;
        p
    }

    /// Make sure ids up to `pid` are never issued again.
    pub fn reserve_pid(&mut self, pid: ProfileId) {
        self.next_pid = self.next_pid.max(pid + 1);
    }

    fn union(&mut self, a: NodeId, b: NodeId) -> NodeId {
        let (mut ra, mut rb) = (self.find(a), self.find(b));
        if ra == rb {
            return ra;
        }
        if link_priority(ra) < link_priority(rb) {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb as usize] = ra;
        self.ring.swap(ra as usize, rb as usize);
        ra
    }

    /// The edge between `a` and `b`, if any.
    fn find_edge(&self, a: NodeId, b: NodeId) -> Option<usize> {
        let mut e = self.adj_head[a as usize];
        while e != NONE {
            let edge = &self.edges[e as usize];
            if edge.other(a) == b {
                return Some(e as usize);
            }
            e = edge.next[edge.side(a)];
        }
        None
    }

    fn add_edge(&mut self, a: NodeId, b: NodeId) {
        if a == b {
            return;
        }
        if let Some(e) = self.find_edge(a, b) {
            self.edges[e].rows = self.edges[e].rows.saturating_add(1);
            return;
        }
        if self.edges.len() == self.edges.capacity() {
            // A load's new identifiers link to another about once each.
            let wanted = growth_for(self.expected_nodes);
            grow(&mut self.edges, wanted);
        }
        let k = self.edges.len() as u32;
        let (lo, hi) = (a.min(b), a.max(b));
        self.edges.push(Edge { ends: a ^ b, next: [self.adj_head[lo as usize], self.adj_head[hi as usize]], rows: 1 });
        self.adj_head[lo as usize] = k;
        self.adj_head[hi as usize] = k;
    }

    /// Count `rows` more rows asserting an edge that exists.
    fn add_edge_rows(&mut self, a: NodeId, b: NodeId, rows: u32) -> Result<(), String> {
        match self.find_edge(a, b) {
            Some(e) => self.edges[e].rows = self.edges[e].rows.saturating_add(rows),
            None if a == b => {}
            None => return Err(format!("counting rows of a link between identifier nodes {a} and {b} that does not exist")),
        }
        Ok(())
    }

    /// Returns true when the edge's last row went away.
    fn remove_edge(&mut self, a: NodeId, b: NodeId) -> bool {
        if a == b {
            return false;
        }
        let Some(e) = self.find_edge(a, b) else {
            debug_assert!(false, "removing an edge that does not exist");
            return false;
        };
        let edge = &mut self.edges[e];
        debug_assert!(edge.rows > 0, "removing an edge no row asserts");
        edge.rows = edge.rows.saturating_sub(1);
        edge.rows == 0
    }

    /// Distinct values per type (and in all) of the union of components.
    /// A few types at most, so a vector beats a map.
    fn census(&self, roots: &[NodeId], extra: &[NodeId]) -> (SmallVec<[(TypeId, u32); 8]>, u32) {
        let mut counts: SmallVec<[(TypeId, u32); 8]> = SmallVec::new();
        let mut bump = |t: TypeId| match counts.iter_mut().find(|(x, _)| *x == t) {
            Some((_, c)) => *c += 1,
            None => counts.push((t, 1)),
        };
        let mut total = 0;
        // Profiled components hold only nodes with live rows; the others
        // are single detached nodes, passed in `extra`.
        for &r in roots {
            let mut m = r;
            loop {
                bump(self.node_type[m as usize]);
                total += 1;
                m = self.ring[m as usize];
                if m == r {
                    break;
                }
            }
        }
        for &n in extra {
            bump(self.node_type[n as usize]);
            total += 1;
        }
        (counts, total)
    }

    /// Link one row's identifiers (`(slot, node)`, blocked values already
    /// left out), applying the rules; emits profile events.
    pub fn link(
        &mut self,
        row: &[(u8, NodeId)],
        now: u32,
        rules: &Rules,
        events: &mut Vec<ProfileEvent>,
    ) -> LinkOutcome {
        debug_assert!(row.len() <= MAX_ROW_IDENTIFIERS);
        #[cfg(test)]
        let shortcuts = !self.general_path_only;
        #[cfg(not(test))]
        let shortcuts = true;
        if let ([(slot, node)], true) = (row, shortcuts) {
            // The most common row of an event stream: one identifier,
            // already in a profile, not generic.
            if !self.is_generic(*node) && self.link_known(row, now) {
                return LinkOutcome { mask: 1 << slot, refused: Vec::new() };
            }
            // A value outside any profile, alone on its row (a new
            // visitor's cookie): a profile of its own, with nothing to
            // merge and no limit to reach. What the general path below
            // does for it, without building its lists.
            if !self.is_generic(*node) && self.pid_at[self.root(*node) as usize] == 0 {
                self.commit_link(&[(*slot, *node)], &[], now, events);
                return LinkOutcome { mask: 1 << slot, refused: Vec::new() };
            }
        }
        let mut out = LinkOutcome::default();
        let mut live: RowNodes = RowNodes::new();
        for &(slot, node) in row {
            if live.iter().any(|(_, n)| *n == node) {
                continue;
            }
            if self.is_generic(node) {
                out.refused.push(Refused { slot, node, reason: Refusal::Generic, detail: "value is flagged generic".into() });
                continue;
            }
            live.push((slot, node));
        }
        if shortcuts && self.link_known(&live, now) {
            out.mask = slots_mask(&live);
            return out;
        }
        loop {
            let roots = self.distinct_roots(&live);
            let profiled: Nodes = roots.iter().copied().filter(|r| self.pid_at[*r as usize] != 0).collect();
            if profiled.len() >= 2 {
                if let Some(i) = self.first_generic(&live, &profiled, rules) {
                    let (slot, node) = live.remove(i);
                    self.mark_generic(node);
                    let limit = rules.generic_limit(self.node_type[node as usize]).unwrap_or(0);
                    out.refused.push(Refused {
                        slot,
                        node,
                        reason: Refusal::Generic,
                        detail: format!("value would link more than {limit} profiles"),
                    });
                    continue;
                }
            }
            if let Some((i, reason, detail)) = self.limit_breach(&live, &roots, &profiled, rules) {
                let (slot, node) = live.remove(i);
                out.refused.push(Refused { slot, node, reason, detail });
                // A value kept out of profiles by their limits is evidence it
                // is shared (a store's phone on every till receipt): it
                // counts toward the generic limit like a merge does.
                if reason == Refusal::Limit && self.count_conflict(node, rules) {
                    out.refused.push(Refused {
                        slot,
                        node,
                        reason: Refusal::Generic,
                        detail: "value conflicts with the limits of too many profiles".into(),
                    });
                }
                continue;
            }
            self.commit_link(&live, &profiled, now, events);
            out.mask = slots_mask(&live);
            return out;
        }
    }

    /// A row whose values (none generic) are all in one profile already:
    /// one identifier of an event stream, or a returning visitor's cookie
    /// and login that do not repeat a recent row. Linking it changes only
    /// counts, and adds an edge where the row pairs two values linked
    /// through others: what the general path does for it, without listing
    /// roots and profiles or checking limits (the profile gains no value).
    /// False, changing nothing, for any other row.
    fn link_known(&mut self, live: &[(u8, NodeId)], now: u32) -> bool {
        let Some((&(_, first), rest)) = live.split_first() else { return false };
        if self.occurrences[first as usize] == 0 {
            return false;
        }
        let root = self.find(first);
        if self.pid_at[root as usize] == 0 {
            return false;
        }
        for &(_, n) in rest {
            if self.occurrences[n as usize] == 0 || self.find(n) != root {
                return false;
            }
        }
        for &(_, n) in live {
            let i = n as usize;
            self.occurrences[i] += 1;
            self.last_seen[i] = self.last_seen[i].max(now);
        }
        for &(_, n) in rest {
            self.add_edge(first, n);
        }
        true
    }

    fn distinct_roots(&self, live: &[(u8, NodeId)]) -> Nodes {
        let mut roots: Nodes = live.iter().map(|(_, n)| self.root(*n)).collect();
        roots.sort_unstable();
        roots.dedup();
        roots
    }

    /// Count a limit conflict of a value; true when that makes it generic.
    pub fn count_conflict(&mut self, node: NodeId, rules: &Rules) -> bool {
        self.add_merges(node, 1);
        let limit = rules.generic_limit(self.node_type[node as usize]).unwrap_or(u32::MAX);
        if !self.is_generic(node) && self.merge_count(node) > limit {
            self.mark_generic(node);
            return true;
        }
        false
    }

    /// Index in `live` of a value that would now link too many profiles.
    fn first_generic(&self, live: &[(u8, NodeId)], profiled: &[NodeId], rules: &Rules) -> Option<usize> {
        let joins = profiled.len() as u32 - 1;
        live.iter().position(|(_, n)| {
            let in_profile = profiled.contains(&self.root(*n));
            let limit = rules.generic_limit(self.node_type[*n as usize]).unwrap_or(u32::MAX);
            // A value that has merged `merges` profiles into its own links
            // merges + 1 profiles; this row would make it merges + joins + 1.
            in_profile && self.merge_count(*n) + joins + 1 > limit
        })
    }

    /// The identifier to drop when linking would break a limit.
    fn limit_breach(
        &self,
        live: &[(u8, NodeId)],
        roots: &[NodeId],
        profiled: &[NodeId],
        rules: &Rules,
    ) -> Option<(usize, Refusal, String)> {
        // Nothing changes when every value is already in one profile.
        if profiled.len() == 1 && roots.len() == 1 && live.iter().all(|(_, n)| self.occurrences[*n as usize] > 0) {
            return None;
        }
        if live.len() <= 1 && profiled.is_empty() {
            return None;
        }
        let new_nodes: Nodes = live
            .iter()
            .map(|(_, n)| *n)
            .filter(|n| !profiled.contains(&self.root(*n)))
            .collect();
        let (counts, total) = self.census(profiled, &new_nodes);
        let mut breach = None;
        for (t, c) in &counts {
            if let Some(r) = rules.of(*t) {
                if *c > r.max_per_profile {
                    breach = Some((Refusal::Limit, format!("profile would hold {c} values of this type (limit {})", r.max_per_profile)));
                    break;
                }
            }
        }
        if breach.is_none() && total > rules.max_identifiers.max(1) {
            breach = Some((Refusal::HardCap, format!("profile would hold {total} identifiers (limit {})", rules.max_identifiers)));
        }
        let (reason, detail) = breach?;
        let lowest = live
            .iter()
            .enumerate()
            .max_by_key(|(_, (slot, n))| {
                let t = self.node_type[*n as usize];
                (rules.of(t).map(|r| r.priority).unwrap_or(i64::MAX), t, *slot)
            })
            .map(|(i, _)| i)?;
        Some((lowest, reason, detail))
    }

    fn commit_link(&mut self, live: &[(u8, NodeId)], profiled: &[NodeId], now: u32, events: &mut Vec<ProfileEvent>) {
        let Some(&(_, first)) = live.first() else { return };
        let mut pids: SmallVec<[ProfileId; 8]> = profiled.iter().map(|r| ProfileId::from(self.pid_at[*r as usize])).collect();
        pids.sort_unstable();
        let via: Vec<NodeId> = if pids.len() >= 2 {
            live.iter().map(|(_, n)| *n).filter(|n| profiled.contains(&self.root(*n))).collect()
        } else {
            Vec::new()
        };
        for &(_, n) in live {
            let i = n as usize;
            self.occurrences[i] += 1;
            self.last_seen[i] = self.last_seen[i].max(now);
        }
        for &r in profiled {
            self.pid_at[r as usize] = 0;
        }
        let mut root = self.find(first);
        for &(_, n) in &live[1..] {
            root = self.union(first, n);
            self.add_edge(first, n);
        }
        let survivor = match pids.first() {
            Some(p) => *p,
            None => {
                let p = self.issue_pid();
                self.set_anchor(p, Anchor { node: first, created: now });
                events.push(ProfileEvent::Created { pid: p, anchor: first });
                p
            }
        };
        for &retired in pids.iter().skip(1) {
            self.drop_anchor(retired);
            self.retire(retired, survivor);
            events.push(ProfileEvent::Merged { retired, survivor, via: via.clone() });
        }
        if pids.len() >= 2 {
            for &n in &via {
                self.add_merges(n, pids.len() as u32 - 1);
            }
        }
        self.pid_at[root as usize] = survivor as u32;
    }

    /// Room to link `rows` more rows of up to `per_row` identifiers: each
    /// may create a profile and `per_row - 1` edges.
    pub fn check_headroom(&self, rows: usize, per_row: usize) -> Result<(), String> {
        if rows as u64 > self.profile_ids_left() {
            return Err(format!("{}", ProfileIdsExhausted));
        }
        let new_edges = rows.saturating_mul(per_row.saturating_sub(1));
        if self.edges.len().saturating_add(new_edges) >= MAX_EDGES {
            return Err(format!("the identity graph holds its limit of {MAX_EDGES} distinct identifier links"));
        }
        Ok(())
    }

    // ----- rebuilding ------------------------------------------------------

    /// Re-assert a stored row's links without rules or events (rebuild).
    pub fn relink(&mut self, linked: &[NodeId], seen: u32) -> Result<(), String> {
        self.check_headroom(0, linked.len())?;
        let Some(&first) = linked.first() else { return Ok(()) };
        for &n in linked {
            let i = n as usize;
            self.last_seen[i] = self.last_seen[i].max(seen);
            self.occurrences[i] += 1;
        }
        for &n in &linked[1..] {
            self.union(first, n);
            self.add_edge(first, n);
        }
        Ok(())
    }

    /// Replay one logged profile event (rebuild), after all rows.
    pub fn replay(&mut self, event: &ProfileEvent, at: u32) -> Result<(), String> {
        let (ids, anchor) = match event {
            ProfileEvent::Created { pid, anchor } | ProfileEvent::Split { pid, anchor, .. } => (vec![*pid], Some(*anchor)),
            ProfileEvent::Merged { retired, survivor, .. } => (vec![*retired, *survivor], None),
            ProfileEvent::Moved { pid, anchor } => (vec![*pid], Some(*anchor)),
            ProfileEvent::Deleted { pid } => (vec![*pid], None),
        };
        if let Some(bad) = ids.iter().find(|p| **p == 0 || **p > MAX_PROFILE_ID) {
            return Err(format!("a profile event names profile id {bad}, outside 1..={MAX_PROFILE_ID}"));
        }
        if let Some(node) = anchor.filter(|n| *n as usize >= MAX_NODES) {
            return Err(format!("a profile event anchors a profile at node {node}, beyond the node limit"));
        }
        match event {
            ProfileEvent::Created { pid, anchor } => {
                self.reserve_pid(*pid);
                self.set_anchor(*pid, Anchor { node: *anchor, created: at });
            }
            ProfileEvent::Merged { retired, survivor, via } => {
                self.reserve_pid((*retired).max(*survivor));
                self.retire(*retired, *survivor);
                for &n in via {
                    if (n as usize) < self.merges.len() {
                        self.add_merges(n, 1);
                    }
                }
            }
            ProfileEvent::Split { pid, anchor, .. } => {
                self.reserve_pid(*pid);
                self.set_anchor(*pid, Anchor { node: *anchor, created: at });
            }
            ProfileEvent::Moved { pid, anchor } => {
                if let Some(a) = self.anchor(*pid) {
                    self.set_anchor(*pid, Anchor { node: *anchor, created: a.created });
                }
            }
            ProfileEvent::Deleted { pid } => {
                self.drop_anchor(*pid);
            }
        }
        Ok(())
    }

    /// After rows and events are replayed: label each component with its
    /// anchor's profile. Errors when rows and log disagree.
    pub fn finish_rebuild(&mut self) -> Result<(), String> {
        let anchors: Vec<(ProfileId, NodeId)> = self.anchors().map(|(p, a)| (p, a.node)).collect();
        for (pid, node) in anchors {
            if node as usize >= self.parent.len() || self.occurrences[node as usize] == 0 {
                return Err(format!("profile {pid} is anchored at identifier node {node}, which no live row links"));
            }
            let r = self.find(node);
            if self.pid_at[r as usize] != 0 {
                return Err(format!("profiles {} and {pid} are one component", self.pid_at[r as usize]));
            }
            self.pid_at[r as usize] = pid as u32;
        }
        for n in 0..self.parent.len() {
            if self.occurrences[n] > 0 && self.pid_at[self.root(n as NodeId) as usize] == 0 {
                return Err(format!("identifier node {n} is linked by live rows but belongs to no profile"));
            }
        }
        Ok(())
    }

    /// Check the structure's own invariants (tests and RESOLVE IDENTITIES).
    pub fn check(&self) -> Result<(), String> {
        for n in 0..self.parent.len() as NodeId {
            let r = self.root(n);
            let pid = self.pid_at[r as usize];
            if self.occurrences[n as usize] > 0 && pid == 0 {
                return Err(format!("node {n} has live rows but no profile"));
            }
            if n != r && self.pid_at[n as usize] != 0 {
                return Err(format!("non-root node {n} carries a profile id"));
            }
        }
        for (pid, a) in self.anchors() {
            if ProfileId::from(self.pid_at[self.root(a.node) as usize]) != pid {
                return Err(format!("anchor of profile {pid} is not in its component"));
            }
        }
        Ok(())
    }

    /// The partition as (profile, sorted keys of its members with live
    /// rows), for comparing two graphs built differently.
    pub fn partition(&self) -> Vec<(ProfileId, Vec<Key>)> {
        let mut out: Vec<(ProfileId, Vec<Key>)> = self
            .anchors()
            .map(|(pid, a)| {
                let mut keys: Vec<Key> = self
                    .ring_of(self.root(a.node))
                    .into_iter()
                    .filter(|m| self.occurrences[*m as usize] > 0)
                    .map(|m| self.dictionary.key(m))
                    .collect();
                keys.sort_unstable();
                (pid, keys)
            })
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests;
