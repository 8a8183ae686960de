//! Deleting rows: taking back the links they asserted, then recomputing
//! each component that lost an edge or a node, split when it no longer
//! holds together (the largest part keeps the profile id, the others get
//! new ones) or deleted when nothing is left.

use std::collections::{BTreeSet, HashMap};

use super::{Anchor, Graph, NodeId, ProfileEvent, ProfileId, ProfileIdsExhausted, NONE};

impl Graph {
    /// Take back one row's links (`linked`: the nodes it linked, in slot
    /// order). Components are recomputed in [`Graph::settle`].
    pub fn unlink(&mut self, linked: &[NodeId]) {
        self.epoch += 1;
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
    /// Errors (having recomputed only some components) when splitting
    /// could need more profile ids than are left; the caller's commit then
    /// fails and the graph is rebuilt from the rows.
    pub fn settle(&mut self, now: u32, events: &mut Vec<ProfileEvent>) -> Result<(), String> {
        let dirty: BTreeSet<NodeId> = std::mem::take(&mut self.dirty).into_iter().map(|n| self.root(n)).collect();
        if !dirty.is_empty() {
            self.epoch += 1;
        }
        for root in dirty {
            let members = self.ring_of(root);
            if members.len() as u64 > self.profile_ids_left() {
                return Err(format!("{}", ProfileIdsExhausted));
            }
            self.recompute(root, members, now, events);
        }
        Ok(())
    }

    fn recompute(&mut self, root: NodeId, members: Vec<NodeId>, now: u32, events: &mut Vec<ProfileEvent>) {
        let old_pid = ProfileId::from(self.pid_at[root as usize]);
        for &m in &members {
            let i = m as usize;
            self.parent[i] = m;
            self.ring[i] = m;
            self.pid_at[i] = 0;
        }
        for &m in &members {
            let mut e = self.adj_head[m as usize];
            while e != NONE {
                let edge = self.edges[e as usize];
                if edge.rows > 0 {
                    self.union(m, edge.other(m));
                }
                e = edge.next[edge.side(m)];
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
        let old_anchor = self.anchor(old_pid).map(|a| a.node);
        let anchor_root = old_anchor.filter(|a| self.occurrences[*a as usize] > 0).map(|a| self.find(a));
        let mut ordered: Vec<(NodeId, u32, NodeId)> = parts.into_iter().map(|(r, (n, low))| (r, n, low)).collect();
        ordered.sort_by_key(|(r, n, low)| (std::cmp::Reverse(*n), Some(*r) != anchor_root, *low));
        let Some(&(keep_root, _, keep_low)) = ordered.first() else {
            self.drop_anchor(old_pid);
            events.push(ProfileEvent::Deleted { pid: old_pid });
            return;
        };
        self.pid_at[keep_root as usize] = old_pid as u32;
        if anchor_root != Some(keep_root) {
            let created = self.anchor(old_pid).map(|a| a.created).unwrap_or(now);
            self.set_anchor(old_pid, Anchor { node: keep_low, created });
            events.push(ProfileEvent::Moved { pid: old_pid, anchor: keep_low });
        }
        for &(r, _, low) in &ordered[1..] {
            let p = self.issue_pid();
            self.pid_at[r as usize] = p as u32;
            self.set_anchor(p, Anchor { node: low, created: now });
            events.push(ProfileEvent::Split { pid: p, from: old_pid, anchor: low });
        }
    }
}
