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

use std::collections::{BTreeSet, HashMap};

use hashbrown::HashTable;

pub type NodeId = u32;
pub type ProfileId = u64;
/// Dense id of an identifier type.
pub type TypeId = u16;
/// 128-bit hash of (type, normalized value): the dictionary key.
pub type Key = [u64; 2];

const NONE: u32 = u32::MAX;
/// Most nodes a graph may hold (node ids are 32-bit).
pub const MAX_NODES: usize = (u32::MAX - 1) as usize;
/// Identifier columns one row may carry (bits of the link mask).
pub const MAX_ROW_IDENTIFIERS: usize = 32;

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

#[derive(Clone, Copy, Debug)]
struct HalfEdge {
    to: NodeId,
    next: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Anchor {
    pub node: NodeId,
    /// Seconds since the epoch when the profile was created.
    pub created: u32,
}

/// The identity graph.
#[derive(Default)]
pub struct Graph {
    keys: Vec<Key>,
    dict: HashTable<NodeId>,
    node_type: Vec<TypeId>,
    parent: Vec<NodeId>,
    size: Vec<u32>,
    /// Circular list of each component's members.
    ring: Vec<NodeId>,
    /// Live rows that link this node.
    occurrences: Vec<u32>,
    /// Merges this node took part in (generic-value detection).
    merges: Vec<u32>,
    generic: Vec<bool>,
    first_seen: Vec<u32>,
    last_seen: Vec<u32>,
    /// Profile id of each root (0: no profile).
    pid_at: Vec<ProfileId>,
    adj_head: Vec<u32>,
    /// Half-edges in pairs: 2k and 2k+1 are the two directions of edge k.
    half: Vec<HalfEdge>,
    /// Live rows asserting edge k.
    edge_rows: Vec<u32>,
    anchors: hashbrown::HashMap<ProfileId, Anchor>,
    /// The keys of `anchors` as a bitmap: every live profile id, in order.
    live: roaring::RoaringTreemap,
    /// Bumped whenever `live` changes.
    live_version: u64,
    /// Retired profile id -> the id it merged into.
    aliases: hashbrown::HashMap<ProfileId, ProfileId>,
    next_pid: ProfileId,
    /// Components whose edges or members shrank, to recompute in `settle`.
    dirty: BTreeSet<NodeId>,
}

fn key_hash(key: &Key) -> u64 {
    // The key is already a strong hash.
    key[0] ^ key[1].rotate_left(17)
}

impl Graph {
    pub fn new() -> Graph {
        Graph { next_pid: 1, ..Default::default() }
    }

    fn set_anchor(&mut self, pid: ProfileId, anchor: Anchor) {
        self.anchors.insert(pid, anchor);
        if self.live.insert(pid) {
            self.live_version += 1;
        }
    }

    fn drop_anchor(&mut self, pid: ProfileId) {
        self.anchors.remove(&pid);
        if self.live.remove(pid) {
            self.live_version += 1;
        }
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
        self.keys.len()
    }

    pub fn profile_count(&self) -> usize {
        self.anchors.len()
    }

    /// Every node's type and key, by node id (unused ids have type
    /// `TypeId::MAX`): what the dictionary file saves.
    pub fn dictionary(&self) -> Vec<(TypeId, Key)> {
        self.node_type.iter().copied().zip(self.keys.iter().copied()).collect()
    }

    pub fn lookup(&self, key: &Key) -> Option<NodeId> {
        self.dict.find(key_hash(key), |n| self.keys[*n as usize] == *key).copied()
    }

    #[cfg(test)]
    pub fn key_of(&self, node: NodeId) -> Key {
        self.keys[node as usize]
    }

    pub fn type_of(&self, node: NodeId) -> TypeId {
        self.node_type[node as usize]
    }

    /// The node for `key`, created when new.
    pub fn intern(&mut self, t: TypeId, key: Key) -> Result<NodeId, String> {
        if let Some(n) = self.lookup(&key) {
            return Ok(n);
        }
        let n = self.keys.len();
        if n >= MAX_NODES {
            return Err(format!("the identity graph holds its limit of {MAX_NODES} identifiers"));
        }
        self.insert_node(n as NodeId, t, key);
        Ok(n as NodeId)
    }

    /// Insert a node with a given id (rebuilding from stored node ids).
    /// Ids in between stay unused (holes no row refers to).
    pub fn insert_at(&mut self, node: NodeId, t: TypeId, key: Key) -> Result<(), String> {
        if let Some(existing) = self.lookup(&key) {
            if existing != node {
                return Err(format!("identifier key stored under node {node} and node {existing}"));
            }
            return Ok(());
        }
        if (node as usize) < self.keys.len() {
            if self.node_type[node as usize] != TypeId::MAX {
                return Err(format!("node {node} stored for two different identifier values"));
            }
            let k = node as usize;
            self.keys[k] = key;
            self.node_type[k] = t;
            let keys = &self.keys;
            self.dict.insert_unique(key_hash(&key), node, |n| key_hash(&keys[*n as usize]));
            return Ok(());
        }
        while self.keys.len() < node as usize {
            let hole = self.keys.len() as NodeId;
            self.push_node(hole, TypeId::MAX, [u64::MAX, hole as u64]);
        }
        self.insert_node(node, t, key);
        Ok(())
    }

    fn insert_node(&mut self, n: NodeId, t: TypeId, key: Key) {
        self.push_node(n, t, key);
        let keys = &self.keys;
        self.dict.insert_unique(key_hash(&key), n, |m| key_hash(&keys[*m as usize]));
    }

    fn push_node(&mut self, n: NodeId, t: TypeId, key: Key) {
        debug_assert_eq!(n as usize, self.keys.len());
        self.keys.push(key);
        self.node_type.push(t);
        self.parent.push(n);
        self.size.push(1);
        self.ring.push(n);
        self.occurrences.push(0);
        self.merges.push(0);
        self.generic.push(false);
        self.first_seen.push(0);
        self.last_seen.push(0);
        self.pid_at.push(0);
        self.adj_head.push(NONE);
    }

    pub fn is_generic(&self, node: NodeId) -> bool {
        self.generic[node as usize]
    }

    pub fn mark_generic(&mut self, node: NodeId) {
        self.generic[node as usize] = true;
    }

    pub fn add_merges(&mut self, node: NodeId, n: u32) {
        self.merges[node as usize] = self.merges[node as usize].saturating_add(n);
    }

    /// Root without path compression (readers share the graph).
    pub fn root(&self, mut n: NodeId) -> NodeId {
        while self.parent[n as usize] != n {
            n = self.parent[n as usize];
        }
        n
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
            p => Some(p),
        }
    }

    /// The profile an identifier value belongs to, for lookups by value:
    /// none for a value flagged generic (it identifies no one).
    pub fn profile_of_identifier(&self, node: NodeId) -> Option<ProfileId> {
        if self.generic.get(node as usize).copied().unwrap_or(true) {
            return None;
        }
        self.profile_of(node)
    }

    /// The surviving id for any id ever issued (itself when live).
    pub fn resolve_alias(&self, mut pid: ProfileId) -> Option<ProfileId> {
        for _ in 0..64 {
            if self.anchors.contains_key(&pid) {
                return Some(pid);
            }
            pid = *self.aliases.get(&pid)?;
        }
        // Alias chains are short (each hop is a merge into an older id);
        // a longer one means the chain was followed through a later split.
        self.anchors.contains_key(&pid).then_some(pid)
    }

    pub fn anchor(&self, pid: ProfileId) -> Option<Anchor> {
        self.anchors.get(&pid).copied()
    }

    pub fn anchors(&self) -> impl Iterator<Item = (ProfileId, Anchor)> + '_ {
        self.anchors.iter().map(|(p, a)| (*p, *a))
    }

    /// Every node of a profile's component.
    pub fn members(&self, pid: ProfileId) -> Vec<NodeId> {
        match self.anchors.get(&pid) {
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

    pub fn seen(&self, node: NodeId) -> (u32, u32) {
        (self.first_seen[node as usize], self.last_seen[node as usize])
    }

    #[cfg(test)]
    pub fn merges_of(&self, node: NodeId) -> u32 {
        self.merges[node as usize]
    }

    /// Neighbours of a node over live edges.
    pub fn neighbours(&self, node: NodeId) -> Vec<NodeId> {
        let mut out = Vec::new();
        let mut h = self.adj_head[node as usize];
        while h != NONE {
            if self.edge_rows[(h >> 1) as usize] > 0 {
                out.push(self.half[h as usize].to);
            }
            h = self.half[h as usize].next;
        }
        out
    }

    /// Approximate bytes held, for the memory-per-identifier figure.
    pub fn memory_bytes(&self) -> usize {
        let n = self.keys.capacity();
        n * (16 + 2 + 4 + 4 + 4 + 4 + 4 + 1 + 4 + 4 + 8 + 4)
            + self.dict.capacity() * 5
            + self.half.capacity() * 8
            + self.edge_rows.capacity() * 4
            + self.anchors.capacity() * 40
            + self.aliases.capacity() * 24
    }

    /// A new id, never issued before.
    fn issue_pid(&mut self) -> ProfileId {
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
        if self.size[ra as usize] < self.size[rb as usize] {
            std::mem::swap(&mut ra, &mut rb);
        }
        self.parent[rb as usize] = ra;
        self.size[ra as usize] += self.size[rb as usize];
        self.ring.swap(ra as usize, rb as usize);
        ra
    }

    fn add_edge(&mut self, a: NodeId, b: NodeId) {
        if a == b {
            return;
        }
        let mut h = self.adj_head[a as usize];
        while h != NONE {
            if self.half[h as usize].to == b {
                self.edge_rows[(h >> 1) as usize] += 1;
                return;
            }
            h = self.half[h as usize].next;
        }
        let k = self.half.len() as u32;
        self.half.push(HalfEdge { to: b, next: self.adj_head[a as usize] });
        self.half.push(HalfEdge { to: a, next: self.adj_head[b as usize] });
        self.adj_head[a as usize] = k;
        self.adj_head[b as usize] = k + 1;
        self.edge_rows.push(1);
    }

    /// Returns true when the edge's last row went away.
    fn remove_edge(&mut self, a: NodeId, b: NodeId) -> bool {
        if a == b {
            return false;
        }
        let mut h = self.adj_head[a as usize];
        while h != NONE {
            if self.half[h as usize].to == b {
                let e = (h >> 1) as usize;
                debug_assert!(self.edge_rows[e] > 0, "removing an edge no row asserts");
                self.edge_rows[e] = self.edge_rows[e].saturating_sub(1);
                return self.edge_rows[e] == 0;
            }
            h = self.half[h as usize].next;
        }
        debug_assert!(false, "removing an edge that does not exist");
        false
    }

    /// Distinct values per type (and in all) of the union of components.
    /// A few types at most, so a vector beats a map.
    fn census(&self, roots: &[NodeId], extra: &[NodeId]) -> (Vec<(TypeId, u32)>, u32) {
        let mut counts: Vec<(TypeId, u32)> = Vec::new();
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
        let mut out = LinkOutcome::default();
        let mut live: Vec<(u8, NodeId)> = Vec::with_capacity(row.len());
        for &(slot, node) in row {
            if live.iter().any(|(_, n)| *n == node) {
                continue;
            }
            if self.generic[node as usize] {
                out.refused.push(Refused { slot, node, reason: Refusal::Generic, detail: "value is flagged generic".into() });
                continue;
            }
            live.push((slot, node));
        }
        loop {
            let roots = self.distinct_roots(&live);
            let profiled: Vec<NodeId> = roots.iter().copied().filter(|r| self.pid_at[*r as usize] != 0).collect();
            if profiled.len() >= 2 {
                if let Some(i) = self.first_generic(&live, &profiled, rules) {
                    let (slot, node) = live.remove(i);
                    self.generic[node as usize] = true;
                    let limit = rules.of(self.node_type[node as usize]).map(|r| r.generic_limit).unwrap_or(0);
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
            out.mask = live.iter().fold(0u32, |m, (slot, _)| m | (1 << slot));
            return out;
        }
    }

    fn distinct_roots(&self, live: &[(u8, NodeId)]) -> Vec<NodeId> {
        let mut roots: Vec<NodeId> = live.iter().map(|(_, n)| self.root(*n)).collect();
        roots.sort_unstable();
        roots.dedup();
        roots
    }

    /// Count a limit conflict of a value; true when that makes it generic.
    pub fn count_conflict(&mut self, node: NodeId, rules: &Rules) -> bool {
        self.add_merges(node, 1);
        let limit = rules.of(self.node_type[node as usize]).map(|r| r.generic_limit).unwrap_or(u32::MAX);
        if !self.generic[node as usize] && self.merges[node as usize] > limit {
            self.generic[node as usize] = true;
            return true;
        }
        false
    }

    /// Index in `live` of a value that would now link too many profiles.
    fn first_generic(&self, live: &[(u8, NodeId)], profiled: &[NodeId], rules: &Rules) -> Option<usize> {
        let joins = profiled.len() as u32 - 1;
        live.iter().position(|(_, n)| {
            let in_profile = profiled.contains(&self.root(*n));
            let limit = rules.of(self.node_type[*n as usize]).map(|r| r.generic_limit).unwrap_or(u32::MAX);
            // A value that has merged `merges` profiles into its own links
            // merges + 1 profiles; this row would make it merges + joins + 1.
            in_profile && self.merges[*n as usize] + joins + 1 > limit
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
        let new_nodes: Vec<NodeId> = live
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
        let mut pids: Vec<ProfileId> = profiled.iter().map(|r| self.pid_at[*r as usize]).collect();
        pids.sort_unstable();
        let via: Vec<NodeId> = if pids.len() >= 2 {
            live.iter().map(|(_, n)| *n).filter(|n| profiled.contains(&self.root(*n))).collect()
        } else {
            Vec::new()
        };
        for &(_, n) in live {
            let i = n as usize;
            self.first_seen[i] = if self.first_seen[i] == 0 { now } else { self.first_seen[i].min(now) };
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
            self.aliases.insert(retired, survivor);
            events.push(ProfileEvent::Merged { retired, survivor, via: via.clone() });
        }
        if pids.len() >= 2 {
            for &n in &via {
                self.add_merges(n, pids.len() as u32 - 1);
            }
        }
        self.pid_at[root as usize] = survivor;
    }

    /// Take back one row's links (`linked`: the nodes it linked, in slot
    /// order). Components are recomputed in [`Graph::settle`].
    pub fn unlink(&mut self, linked: &[NodeId]) {
        let Some(&first) = linked.first() else { return };
        for &n in linked {
            let i = n as usize;
            debug_assert!(self.occurrences[i] > 0, "unlinking a node no live row links");
            self.occurrences[i] = self.occurrences[i].saturating_sub(1);
            if self.occurrences[i] == 0 {
                self.dirty.insert(self.root(n));
            }
        }
        for &n in &linked[1..] {
            if n != first && self.remove_edge(first, n) {
                self.dirty.insert(self.root(first));
            }
        }
    }

    /// Recompute every component that lost an edge or a node: split it
    /// when it no longer holds together (the largest part keeps the id,
    /// the others get new ones), or delete its profile when nothing is
    /// left.
    pub fn settle(&mut self, now: u32, events: &mut Vec<ProfileEvent>) {
        let dirty: BTreeSet<NodeId> = std::mem::take(&mut self.dirty).into_iter().map(|n| self.root(n)).collect();
        for root in dirty {
            self.recompute(root, now, events);
        }
    }

    fn recompute(&mut self, root: NodeId, now: u32, events: &mut Vec<ProfileEvent>) {
        let members = self.ring_of(root);
        let old_pid = self.pid_at[root as usize];
        for &m in &members {
            let i = m as usize;
            self.parent[i] = m;
            self.size[i] = 1;
            self.ring[i] = m;
            self.pid_at[i] = 0;
        }
        for &m in &members {
            let mut h = self.adj_head[m as usize];
            while h != NONE {
                let HalfEdge { to, next } = self.half[h as usize];
                if self.edge_rows[(h >> 1) as usize] > 0 {
                    self.union(m, to);
                }
                h = next;
            }
        }
        // Parts that still have live rows, largest first; ties keep the
        // part with the old anchor, then the lowest node.
        let mut parts: HashMap<NodeId, (u32, NodeId)> = HashMap::new();
        for &m in &members {
            if self.occurrences[m as usize] == 0 {
                continue;
            }
            let r = self.find(m);
            let e = parts.entry(r).or_insert((0, m));
            e.0 += 1;
            e.1 = e.1.min(m);
        }
        if old_pid == 0 {
            debug_assert!(parts.is_empty(), "a component with live rows had no profile");
            return;
        }
        let old_anchor = self.anchors.get(&old_pid).map(|a| a.node);
        let anchor_root = old_anchor.filter(|a| self.occurrences[*a as usize] > 0).map(|a| self.find(a));
        let mut ordered: Vec<(NodeId, u32, NodeId)> = parts.into_iter().map(|(r, (n, low))| (r, n, low)).collect();
        ordered.sort_by_key(|(r, n, low)| (std::cmp::Reverse(*n), Some(*r) != anchor_root, *low));
        let Some(&(keep_root, _, keep_low)) = ordered.first() else {
            self.drop_anchor(old_pid);
            events.push(ProfileEvent::Deleted { pid: old_pid });
            return;
        };
        self.pid_at[keep_root as usize] = old_pid;
        if anchor_root != Some(keep_root) {
            let created = self.anchors.get(&old_pid).map(|a| a.created).unwrap_or(now);
            self.set_anchor(old_pid, Anchor { node: keep_low, created });
            events.push(ProfileEvent::Moved { pid: old_pid, anchor: keep_low });
        }
        for &(r, _, low) in &ordered[1..] {
            let p = self.issue_pid();
            self.pid_at[r as usize] = p;
            self.set_anchor(p, Anchor { node: low, created: now });
            events.push(ProfileEvent::Split { pid: p, from: old_pid, anchor: low });
        }
    }

    // ----- rebuilding ------------------------------------------------------

    /// Re-assert a stored row's links without rules or events (rebuild).
    pub fn relink(&mut self, linked: &[NodeId], seen: u32) {
        let Some(&first) = linked.first() else { return };
        for &n in linked {
            let i = n as usize;
            self.first_seen[i] = if self.first_seen[i] == 0 { seen } else { self.first_seen[i].min(seen) };
            self.last_seen[i] = self.last_seen[i].max(seen);
            self.occurrences[i] += 1;
        }
        for &n in &linked[1..] {
            self.union(first, n);
            self.add_edge(first, n);
        }
    }

    /// Replay one logged profile event (rebuild), after all rows.
    pub fn replay(&mut self, event: &ProfileEvent, at: u32) {
        match event {
            ProfileEvent::Created { pid, anchor } => {
                self.reserve_pid(*pid);
                self.set_anchor(*pid, Anchor { node: *anchor, created: at });
            }
            ProfileEvent::Merged { retired, survivor, via } => {
                self.reserve_pid((*retired).max(*survivor));
                self.drop_anchor(*retired);
                self.aliases.insert(*retired, *survivor);
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
                if let Some(a) = self.anchors.get_mut(pid) {
                    a.node = *anchor;
                }
            }
            ProfileEvent::Deleted { pid } => {
                self.drop_anchor(*pid);
            }
        }
    }

    /// After rows and events are replayed: label each component with its
    /// anchor's profile. Errors when rows and log disagree.
    pub fn finish_rebuild(&mut self) -> Result<(), String> {
        let anchors: Vec<(ProfileId, NodeId)> = self.anchors.iter().map(|(p, a)| (*p, a.node)).collect();
        for (pid, node) in anchors {
            if node as usize >= self.parent.len() || self.occurrences[node as usize] == 0 {
                return Err(format!("profile {pid} is anchored at identifier node {node}, which no live row links"));
            }
            let r = self.find(node);
            if self.pid_at[r as usize] != 0 {
                return Err(format!("profiles {} and {pid} are one component", self.pid_at[r as usize]));
            }
            self.pid_at[r as usize] = pid;
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
        for (pid, a) in &self.anchors {
            if self.pid_at[self.root(a.node) as usize] != *pid {
                return Err(format!("anchor of profile {pid} is not in its component"));
            }
        }
        Ok(())
    }

    /// The partition as (profile, sorted keys of its members with live
    /// rows), for comparing two graphs built differently.
    pub fn partition(&self) -> Vec<(ProfileId, Vec<Key>)> {
        let mut out: Vec<(ProfileId, Vec<Key>)> = self
            .anchors
            .iter()
            .map(|(pid, a)| {
                let mut keys: Vec<Key> = self
                    .ring_of(self.root(a.node))
                    .into_iter()
                    .filter(|m| self.occurrences[*m as usize] > 0)
                    .map(|m| self.keys[m as usize])
                    .collect();
                keys.sort_unstable();
                (*pid, keys)
            })
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    fn open_rules(types: usize) -> Rules {
        let r = TypeRules { max_per_profile: u32::MAX, priority: 1, generic_limit: u32::MAX };
        Rules { types: vec![Some(r); types], max_identifiers: u32::MAX }
    }

    fn key(v: u32) -> Key {
        [u64::from(v), 7]
    }

    /// Connected components of the live rows, brute force.
    fn model_components(rows: &BTreeMap<u64, Vec<NodeId>>) -> BTreeSet<BTreeSet<NodeId>> {
        let mut adj: BTreeMap<NodeId, BTreeSet<NodeId>> = BTreeMap::new();
        for nodes in rows.values() {
            for &a in nodes {
                adj.entry(a).or_default();
                for &b in nodes {
                    if a != b {
                        adj.entry(a).or_default().insert(b);
                    }
                }
            }
        }
        let mut seen = BTreeSet::new();
        let mut out = BTreeSet::new();
        for &start in adj.keys() {
            if seen.contains(&start) {
                continue;
            }
            let mut comp = BTreeSet::new();
            let mut stack = vec![start];
            while let Some(n) = stack.pop() {
                if comp.insert(n) {
                    seen.insert(n);
                    stack.extend(adj[&n].iter().copied());
                }
            }
            out.insert(comp);
        }
        out
    }

    fn graph_components(g: &Graph) -> BTreeMap<BTreeSet<NodeId>, ProfileId> {
        g.anchors()
            .map(|(pid, a)| (g.ring_of(g.root(a.node)).into_iter().collect::<BTreeSet<_>>(), pid))
            .collect()
    }

    /// What a reopen does: relink the live rows, replay the event log.
    fn rebuild(rows: &BTreeMap<u64, Vec<NodeId>>, log: &[ProfileEvent], live: &Graph) -> Graph {
        let mut g = Graph::new();
        for n in 0..live.node_count() as NodeId {
            g.insert_at(n, 0, live.key_of(n)).unwrap();
        }
        for linked in rows.values() {
            g.relink(linked, 1);
        }
        for e in log {
            g.replay(e, 1);
        }
        g.finish_rebuild().unwrap();
        g
    }

    #[derive(Clone, Debug)]
    enum Step {
        Insert(Vec<u32>),
        Delete(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => proptest::collection::vec(0u32..24, 1..4).prop_map(Step::Insert),
            1 => (0usize..64).prop_map(Step::Delete),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
        ))]

        /// Components match brute force after every insert and delete,
        /// profile ids follow the stable-id rules, and a rebuild from the
        /// rows and the event log gives the same graph.
        #[test]
        fn matches_connected_components(steps in proptest::collection::vec(step(), 1..60)) {
            let rules = open_rules(1);
            let mut g = Graph::new();
            let mut rows: BTreeMap<u64, Vec<NodeId>> = BTreeMap::new();
            let mut log: Vec<ProfileEvent> = Vec::new();
            let mut issued: BTreeSet<ProfileId> = BTreeSet::new();
            let mut next_row = 0u64;
            for s in steps {
                let before = graph_components(&g);
                let mut events = Vec::new();
                match s {
                    Step::Insert(values) => {
                        let mut row = Vec::new();
                        for (slot, v) in values.iter().enumerate() {
                            row.push((slot as u8, g.intern(0, key(*v)).unwrap()));
                        }
                        let out = g.link(&row, 5, &rules, &mut events);
                        let mut linked: Vec<NodeId> = Vec::new();
                        for (slot, n) in &row {
                            if out.mask & (1 << slot) != 0 && !linked.contains(n) {
                                linked.push(*n);
                            }
                        }
                        prop_assert!(out.refused.is_empty());
                        // Merge rule: the oldest (smallest) id survives.
                        let touched: BTreeSet<ProfileId> = before
                            .iter()
                            .filter(|(c, _)| linked.iter().any(|n| c.contains(n)))
                            .map(|(_, p)| *p)
                            .collect();
                        rows.insert(next_row, linked.clone());
                        next_row += 1;
                        let now = g.profile_of(linked[0]).unwrap();
                        match touched.iter().next() {
                            Some(oldest) => prop_assert_eq!(now, *oldest),
                            None => prop_assert!(!issued.contains(&now)),
                        }
                    }
                    Step::Delete(i) => {
                        let Some(&id) = rows.keys().nth(i % rows.len().max(1)) else { continue };
                        let linked = rows.remove(&id).unwrap();
                        g.unlink(&linked);
                        g.settle(6, &mut events);
                        // Split rule: the largest part keeps the id; the
                        // others get ids never issued before.
                        let old = before.iter().find(|(c, _)| c.contains(&linked[0])).map(|(c, p)| (c.clone(), *p)).unwrap();
                        let after = graph_components(&g);
                        let parts: Vec<(&BTreeSet<NodeId>, &ProfileId)> = after.iter().filter(|(c, _)| c.is_subset(&old.0)).collect();
                        if let Some(largest) = parts.iter().map(|(c, _)| c.len()).max() {
                            prop_assert!(parts.iter().any(|(c, p)| c.len() == largest && **p == old.1));
                            for (_, p) in &parts {
                                prop_assert!(**p == old.1 || !issued.contains(p));
                            }
                        }
                    }
                }
                for e in &events {
                    match e {
                        ProfileEvent::Created { pid, .. } | ProfileEvent::Split { pid, .. } => {
                            prop_assert!(issued.insert(*pid), "id {} issued twice", pid);
                        }
                        _ => {}
                    }
                }
                log.extend(events);
                g.check().map_err(TestCaseError::fail)?;
                let model = model_components(&rows);
                let actual: BTreeSet<BTreeSet<NodeId>> = graph_components(&g).into_keys().collect();
                prop_assert_eq!(&actual, &model);
                let rebuilt = rebuild(&rows, &log, &g);
                prop_assert_eq!(rebuilt.partition(), g.partition());
            }
        }
    }

    fn rules(max: &[(u32, i64)], generic: u32) -> Rules {
        Rules {
            types: max
                .iter()
                .map(|(m, p)| Some(TypeRules { max_per_profile: *m, priority: *p, generic_limit: generic }))
                .collect(),
            max_identifiers: 1000,
        }
    }

    #[test]
    fn limit_drops_the_lowest_priority_identifier() {
        // Type 0 = email (max 2, priority 1), type 1 = phone (max 5, priority 2).
        let r = rules(&[(2, 1), (5, 2)], 25);
        let mut g = Graph::new();
        let mut ev = Vec::new();
        let phone = g.intern(1, [1, 1]).unwrap();
        let e1 = g.intern(0, [0, 1]).unwrap();
        let e2 = g.intern(0, [0, 2]).unwrap();
        let e3 = g.intern(0, [0, 3]).unwrap();
        assert_eq!(g.link(&[(0, e1), (1, phone)], 1, &r, &mut ev).mask, 0b11);
        assert_eq!(g.link(&[(0, e2), (1, phone)], 1, &r, &mut ev).mask, 0b11);
        // A third email would break the limit of 2: the phone (lower
        // priority) stops linking, the email starts a profile of its own.
        let out = g.link(&[(0, e3), (1, phone)], 1, &r, &mut ev);
        assert_eq!(out.mask, 0b01);
        assert_eq!(out.refused.len(), 1);
        assert_eq!(out.refused[0].reason, Refusal::Limit);
        assert_eq!(out.refused[0].node, phone);
        assert_ne!(g.profile_of(e3), g.profile_of(phone));
        assert_eq!(g.profile_of(e1), g.profile_of(e2));
    }

    #[test]
    fn a_value_linking_too_many_profiles_becomes_generic() {
        let r = rules(&[(100, 1), (100, 2)], 3);
        let mut g = Graph::new();
        let mut ev = Vec::new();
        let hub = g.intern(1, [1, 0]).unwrap();
        let people: Vec<NodeId> = (1..=6).map(|i| g.intern(0, [0, i]).unwrap()).collect();
        for p in &people {
            g.link(&[(0, *p)], 1, &r, &mut ev);
        }
        let mut refused = Vec::new();
        for p in &people {
            let out = g.link(&[(0, *p), (1, hub)], 1, &r, &mut ev);
            refused.extend(out.refused);
        }
        // The hub merged people into its profile until it would link more
        // than 3; then it is flagged and links nothing more.
        assert!(g.is_generic(hub));
        assert!(refused.iter().all(|x| x.reason == Refusal::Generic && x.node == hub));
        let merged: BTreeSet<ProfileId> = people.iter().filter_map(|p| g.profile_of(*p)).collect();
        assert!(merged.len() >= 3, "{merged:?}");
        assert!(g.merges_of(hub) <= 3);
    }

    #[test]
    fn a_shared_value_kept_out_by_limits_becomes_generic() {
        // Type 0 = loyalty id (max 1, priority 1), type 1 = phone (priority 2,
        // generic limit 3): a store's phone on every receipt.
        let r = Rules {
            types: vec![
                Some(TypeRules { max_per_profile: 1, priority: 1, generic_limit: 25 }),
                Some(TypeRules { max_per_profile: 5, priority: 2, generic_limit: 3 }),
            ],
            max_identifiers: 1000,
        };
        let mut g = Graph::new();
        let mut ev = Vec::new();
        let store = g.intern(1, [1, 0]).unwrap();
        let mut flagged = false;
        for i in 1..=6u64 {
            let member = g.intern(0, [0, i]).unwrap();
            let out = g.link(&[(0, member), (1, store)], 1, &r, &mut ev);
            flagged |= out.refused.iter().any(|x| x.reason == Refusal::Generic);
        }
        assert!(flagged && g.is_generic(store));
        // A receipt with only the store's phone belongs to no one.
        assert_eq!(g.link(&[(1, store)], 1, &r, &mut ev).mask, 0);
        assert_eq!(g.profile_of_identifier(store), None);
    }

    #[test]
    fn retired_ids_find_the_survivor() {
        let r = open_rules(1);
        let mut g = Graph::new();
        let mut ev = Vec::new();
        let a = g.intern(0, [0, 1]).unwrap();
        let b = g.intern(0, [0, 2]).unwrap();
        g.link(&[(0, a)], 1, &r, &mut ev);
        g.link(&[(0, b)], 1, &r, &mut ev);
        let (pa, pb) = (g.profile_of(a).unwrap(), g.profile_of(b).unwrap());
        g.link(&[(0, a), (1, b)], 2, &r, &mut ev);
        assert_eq!(g.profile_of(b), Some(pa));
        assert_eq!(g.resolve_alias(pb), Some(pa));
        assert!(ev.contains(&ProfileEvent::Merged { retired: pb, survivor: pa, via: vec![a, b] }));
    }
}
