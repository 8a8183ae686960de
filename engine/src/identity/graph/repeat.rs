//! Linking a row that repeats an earlier row's identifiers exactly.
//!
//! Event streams repeat themselves: a web session is a run of rows with
//! the same cookie, an email campaign a run of rows with the same address.
//! Once a row has linked cleanly (every identifier linked, nothing
//! refused), its identifiers share one profile and every edge between
//! them exists. A later row with the same identifiers in the same slots
//! then changes nothing but counters: each node's live-row count and each
//! edge's row count go up by one, and its link mask is the first row's.
//! [`RepeatMemo`] recognizes such rows (a run of equal rows by comparing
//! with the previous one, others by a hash of the row) and adds their
//! counts in one step when the batch is flushed, skipping the union-find,
//! the edge lists and the limit checks. It remembers clean links across
//! the batches of one transaction.
//!
//! What could make a repeat link differently: one of its values flagged
//! generic since (it would be refused), or rows deleted (edges and counts
//! shrink, components split). Both bump [`Graph::epoch`]; a memo that
//! sees a new epoch flushes what it holds and starts over. Merges of the
//! profile with others do not matter: the values still share a profile.
//! The time a node was last seen is the same for the whole batch, so it
//! needs no update either (the memo remembers the time and only matches
//! rows linked at that time).

use hashbrown::HashTable;

use smallvec::SmallVec;

use super::{Graph, LinkOutcome, NodeId, ProfileEvent, RowNodes, Rules};

/// A remembered row: tables rarely declare more than four identifiers.
type MemoRow = SmallVec<[(u8, NodeId); 4]>;

/// One remembered clean link and the repeats not yet counted.
struct Clean {
    /// The row as given.
    row: MemoRow,
    mask: u32,
    pending: u32,
}

/// Clean links, by the row's (slot, node) list. Flush it with
/// [`Graph::flush_repeats`] before anything reads row counts (the end of
/// each batch).
#[derive(Default)]
pub struct RepeatMemo {
    /// Indexes into `clean`, by [`row_hash`] of their rows.
    by_row: HashTable<usize>,
    clean: Vec<Clean>,
    /// Entries with repeats not yet counted.
    pending: Vec<usize>,
    /// The entry the previous row matched or made: runs of equal rows
    /// (a session, a campaign) are recognized without hashing.
    last: Option<usize>,
    epoch: u64,
    now: u32,
}

impl RepeatMemo {
    /// `times` more repeats of entry `i` (an index into `clean`), counted
    /// at the next flush; its mask.
    fn count_repeats(&mut self, i: usize, times: u32) -> u32 {
        debug_assert!(times > 0, "a repeat is counted at least once");
        let clean = &mut self.clean[i];
        if clean.pending == 0 {
            self.pending.push(i);
        }
        clean.pending = clean.pending.saturating_add(times);
        clean.mask
    }
}

/// Distinct rows a memo remembers before it flushes and starts over. Small
/// enough to stay in a core's cache (about 300 KB): most repeats are runs
/// or near them, and a memo of 65,536 rows spent more on cache misses
/// than its extra hits saved (1 M-person load, 4,096 against 65,536:
/// 18.8 to 20.5 CPU-seconds against 21.1 to 21.2).
const MAX_REMEMBERED: usize = 1 << 12;

impl Graph {
    /// [`Graph::link`], or for a row repeating a clean link remembered in
    /// `memo` (same nodes in the same slots, same `now`, nothing changed
    /// since that could refuse one), the same outcome with only its counts
    /// left to add.
    pub fn link_repeating(
        &mut self,
        memo: &mut RepeatMemo,
        row: &[(u8, NodeId)],
        now: u32,
        rules: &Rules,
        events: &mut Vec<ProfileEvent>,
    ) -> Result<LinkOutcome, String> {
        if memo.epoch != self.epoch || memo.now != now || memo.clean.len() >= MAX_REMEMBERED {
            self.flush_repeats(memo)?;
            memo.by_row.clear();
            memo.clean.clear();
            memo.epoch = self.epoch;
            memo.now = now;
        }
        let same_as_last = memo.last.filter(|&i| memo.clean[i].row.as_slice() == row);
        let hash = || row_hash(row);
        let clean = &memo.clean;
        let seen = || memo.by_row.find(hash(), |&i| clean[i].row.as_slice() == row).copied();
        if let Some(i) = same_as_last.or_else(seen) {
            let mask = memo.count_repeats(i, 1);
            memo.last = Some(i);
            return Ok(LinkOutcome { mask, refused: Vec::new() });
        }
        memo.last = None;
        let outcome = self.link(row, now, rules, events);
        if outcome.refused.is_empty() && outcome.mask != 0 && memo.epoch == self.epoch {
            let clean = &memo.clean;
            memo.by_row.insert_unique(hash(), clean.len(), |&i| row_hash(&clean[i].row));
            memo.last = Some(memo.clean.len());
            memo.clean.push(Clean { row: MemoRow::from_slice(row), mask: outcome.mask, pending: 0 });
        }
        Ok(outcome)
    }

    /// The row just linked (by [`Graph::link_repeating`] or this) again,
    /// `times` times (a run), which the caller knows carry the same values
    /// in the same slots: its mask, with the repeats to count, without
    /// building or comparing the rows. Counting repeats changes nothing a
    /// repeat depends on, so the run's rows share one answer. None when
    /// that row is not a clean link the memo holds or something changed
    /// since that could make a repeat link differently; link the next row
    /// in full then.
    pub fn repeat_previous(&mut self, memo: &mut RepeatMemo, now: u32, times: u32) -> Option<u32> {
        if memo.epoch != self.epoch || memo.now != now || times == 0 {
            return None;
        }
        let i = memo.last?;
        Some(memo.count_repeats(i, times))
    }

    /// Add the counts of every repeat `memo` holds. It goes on
    /// remembering its clean links (for the next batch of the same
    /// transaction) until something bumps the epoch.
    /// Errors (a bug) if an edge a remembered row asserted is gone.
    pub fn flush_repeats(&mut self, memo: &mut RepeatMemo) -> Result<(), String> {
        for i in memo.pending.drain(..) {
            let clean = &mut memo.clean[i];
            let repeats = std::mem::take(&mut clean.pending);
            debug_assert!(repeats > 0, "an entry listed as pending has repeats");
            // The nodes the row linked, in the order `link` took them: the
            // first is the end of every edge the row asserted.
            let linked = linked_nodes(&clean.row, clean.mask);
            let Some(&(_, first)) = linked.first() else { continue };
            for &(_, n) in &linked {
                let i = n as usize;
                self.occurrences[i] = self.occurrences[i].saturating_add(repeats);
            }
            for &(_, n) in &linked[1..] {
                self.add_edge_rows(first, n, repeats)?;
            }
        }
        memo.last = None;
        Ok(())
    }
}

/// A row's hash: its (slot, node) pairs mixed by multiplication (rows are
/// short; a general-purpose hasher costs more than the lookup).
fn row_hash(row: &[(u8, NodeId)]) -> u64 {
    row.iter().fold(row.len() as u64, |h, &(slot, node)| {
        (h ^ (u64::from(slot) << 32 | u64::from(node))).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)
    })
}

/// The nodes `Graph::link` linked for `row` given its outcome's mask: the
/// first occurrence of each node whose slot bit is set, in row order (the
/// order `link` keeps them in).
fn linked_nodes(row: &[(u8, NodeId)], mask: u32) -> RowNodes {
    let mut out = RowNodes::new();
    for &(slot, node) in row {
        if mask & (1 << slot) != 0 && !out.iter().any(|(_, n)| *n == node) {
            out.push((slot, node));
        }
    }
    out
}
