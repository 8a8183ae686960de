//! The identity graph against a brute-force model, and each rule with
//! its recorded reason.

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

/// A distinct key per pair (the graph keeps a key's first 96 bits).
fn pair(a: u64, b: u64) -> Key {
    [(a << 32) | b, 0]
}

#[test]
fn keys_keep_96_bits_through_the_dictionary() {
    let mut g = Graph::new();
    let k: Key = [0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210];
    let n = g.intern(0, k).unwrap();
    // The low 32 bits are not kept: the same value is found, and the
    // saved dictionary holds the key without them.
    assert_eq!(g.lookup(&[k[0], 0xfedc_ba98_0000_0000]), Some(n));
    assert_eq!(g.dictionary()[n as usize], (0, [k[0], 0xfedc_ba98_0000_0000]));
    assert_eq!(g.lookup(&[k[0], 0xfedc_ba99_7654_3210]), None);
}

#[test]
fn profile_events_outside_the_id_range_are_refused() {
    let mut g = Graph::new();
    assert!(g.replay(&ProfileEvent::Created { pid: MAX_PROFILE_ID + 1, anchor: 0 }, 1).is_err());
    assert!(g.replay(&ProfileEvent::Deleted { pid: 0 }, 1).is_err());
    assert!(g.replay(&ProfileEvent::Moved { pid: 1, anchor: u32::MAX }, 1).is_err());
    assert!(g.replay(&ProfileEvent::Created { pid: 3, anchor: 0 }, 1).is_ok());
    assert_eq!(g.profile_ids_left(), MAX_PROFILE_ID - 3);
    assert!(g.check_headroom(1, 2).is_ok());
    g.reserve_pid(MAX_PROFILE_ID);
    assert_eq!(g.profile_ids_left(), 0);
    assert!(g.check_headroom(1, 2).is_err());
    assert!(g.check_headroom(0, 2).is_ok());
}

#[test]
fn a_generic_limit_beyond_the_merge_counter_acts_as_its_largest_value() {
    let r = rules(&[(100, 1), (100, 2)], u32::MAX - 1);
    assert_eq!(r.generic_limit(0), Some(MAX_GENERIC_LIMIT));
    let mut g = Graph::new();
    let hub = g.intern(1, key(1)).unwrap();
    g.add_merges(hub, MAX_GENERIC_LIMIT - 1);
    assert!(!g.count_conflict(hub, &r), "at the limit: not yet generic");
    assert!(g.count_conflict(hub, &r), "past the largest limit in force: generic");
}

#[test]
fn merge_counts_saturate_without_touching_the_generic_flag() {
    let mut g = Graph::new();
    let n = g.intern(0, key(1)).unwrap();
    g.add_merges(n, u32::MAX);
    assert_eq!(g.merges_of(n), u32::from(MAX_MERGES));
    assert!(!g.is_generic(n));
    g.mark_generic(n);
    g.add_merges(n, 5);
    assert!(g.is_generic(n));
    assert_eq!(g.merges_of(n), u32::from(MAX_MERGES));
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
        g.relink(linked, 1).unwrap();
    }
    for e in log {
        g.replay(e, 1).unwrap();
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
                    g.settle(6, &mut events).unwrap();
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
    let phone = g.intern(1, pair(1, 1)).unwrap();
    let e1 = g.intern(0, pair(0, 1)).unwrap();
    let e2 = g.intern(0, pair(0, 2)).unwrap();
    let e3 = g.intern(0, pair(0, 3)).unwrap();
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
    let hub = g.intern(1, pair(1, 0)).unwrap();
    let people: Vec<NodeId> = (1..=6).map(|i| g.intern(0, pair(0, i)).unwrap()).collect();
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
    let store = g.intern(1, pair(1, 0)).unwrap();
    let mut flagged = false;
    for i in 1..=6u64 {
        let member = g.intern(0, pair(0, i)).unwrap();
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
    let a = g.intern(0, pair(0, 1)).unwrap();
    let b = g.intern(0, pair(0, 2)).unwrap();
    g.link(&[(0, a)], 1, &r, &mut ev);
    g.link(&[(0, b)], 1, &r, &mut ev);
    let (pa, pb) = (g.profile_of(a).unwrap(), g.profile_of(b).unwrap());
    g.link(&[(0, a), (1, b)], 2, &r, &mut ev);
    assert_eq!(g.profile_of(b), Some(pa));
    assert_eq!(g.resolve_alias(pb), Some(pa));
    assert!(ev.contains(&ProfileEvent::Merged { retired: pb, survivor: pa, via: vec![a, b] }));
}

#[derive(Clone, Debug)]
enum RepeatStep {
    /// A row of (type, value) per slot.
    Insert(Vec<(u16, u32)>),
    /// Insert the row inserted `n` rows ago again.
    Again(usize),
    Delete(usize),
    /// The batch ends: the memo is flushed.
    Flush,
}

fn repeat_step() -> impl Strategy<Value = RepeatStep> {
    prop_oneof![
        3 => proptest::collection::vec((0u16..2, 0u32..10), 1..4).prop_map(RepeatStep::Insert),
        4 => (0usize..4).prop_map(RepeatStep::Again),
        1 => (0usize..64).prop_map(RepeatStep::Delete),
        1 => Just(RepeatStep::Flush),
    ]
}

/// Everything a repeat could change: row counts of nodes and edges,
/// merge counts and generic flags, profile labels.
fn counters(g: &Graph) -> (Vec<u32>, Vec<u16>, Vec<(u32, [u32; 2], u32)>, BTreeMap<NodeId, Option<ProfileId>>) {
    let edges = g.edges.iter().map(|e| (e.ends, e.next, e.rows)).collect();
    let labels = (0..g.parent.len() as NodeId).map(|n| (n, g.profile_of(n))).collect();
    (g.occurrences.clone(), g.merges.clone(), edges, labels)
}

/// Intern a row's (type, value) pairs in two graphs, which must give the
/// same nodes: the row as (slot, node).
fn intern_in_both(a: &mut Graph, b: &mut Graph, values: &[(u16, u32)]) -> Result<Vec<(u8, NodeId)>, TestCaseError> {
    let mut row = Vec::new();
    for (slot, (t, v)) in values.iter().enumerate() {
        let x = a.intern(*t, key(*v + 100 * u32::from(*t))).unwrap();
        let y = b.intern(*t, key(*v + 100 * u32::from(*t))).unwrap();
        prop_assert_eq!(x, y);
        row.push((slot as u8, x));
    }
    Ok(row)
}

/// Delete a row's links from two graphs, which must settle alike.
fn unlink_in_both(a: &mut Graph, b: &mut Graph, linked: &[NodeId], now: u32) -> Result<(), TestCaseError> {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    a.unlink(linked);
    a.settle(now, &mut x).unwrap();
    b.unlink(linked);
    b.settle(now, &mut y).unwrap();
    prop_assert_eq!(x, y);
    Ok(())
}

/// Rows linked so far in two graphs that must agree, for steps that
/// repeat or delete them.
#[derive(Default)]
struct TwoGraphRows {
    inserted: Vec<Vec<(u8, NodeId)>>,
    /// The distinct nodes each row still present linked.
    live: Vec<Vec<NodeId>>,
}

impl TwoGraphRows {
    /// The row step `s` links, or None when it links none: a delete
    /// (done here at `now`, after `before_delete`), a step repeating a row
    /// that does not exist, a flush.
    fn row(&mut self, s: RepeatStep, a: &mut Graph, b: &mut Graph, now: u32, before_delete: impl FnOnce(&mut Graph)) -> Result<Option<Vec<(u8, NodeId)>>, TestCaseError> {
        match s {
            RepeatStep::Insert(values) => intern_in_both(a, b, &values).map(Some),
            RepeatStep::Again(n) => Ok(self.inserted.len().checked_sub(n + 1).map(|i| self.inserted[i].clone())),
            RepeatStep::Delete(i) if !self.live.is_empty() => {
                let linked = self.live.remove(i % self.live.len());
                before_delete(b);
                unlink_in_both(a, b, &linked, now)?;
                Ok(None)
            }
            RepeatStep::Delete(_) | RepeatStep::Flush => Ok(None),
        }
    }

    /// Remember a row linked with `mask`.
    fn linked(&mut self, row: Vec<(u8, NodeId)>, mask: u32) {
        let mut nodes = Vec::new();
        for &(slot, n) in &row {
            if mask & (1 << slot) != 0 && !nodes.contains(&n) {
                nodes.push(n);
            }
        }
        if !nodes.is_empty() {
            self.live.push(nodes);
        }
        self.inserted.push(row);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    /// Linking through a [`RepeatMemo`] gives every row the outcome and
    /// events of linking it alone, and the same graph once flushed, under
    /// tight limits and generic limits (refusals, generic flags) and with
    /// deletes in between.
    #[test]
    fn repeated_rows_link_as_they_would_alone(steps in proptest::collection::vec(repeat_step(), 1..80)) {
        let r = rules(&[(2, 1), (3, 2)], 2);
        let (mut plain, mut memoized) = (Graph::new(), Graph::new());
        let mut memo = RepeatMemo::default();
        let mut rows = TwoGraphRows::default();
        for s in steps {
            if let RepeatStep::Flush = s {
                memoized.flush_repeats(&mut memo).unwrap();
                prop_assert_eq!(counters(&plain), counters(&memoized));
                continue;
            }
            let Some(row) = rows.row(s, &mut plain, &mut memoized, 6, |m| m.flush_repeats(&mut memo).unwrap())? else { continue };
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let alone = plain.link(&row, 5, &r, &mut a);
            // A row equal to the one just linked may take the shortcut a
            // batch takes for runs; when it declines, the full path.
            let shortcut = if rows.inserted.last() == Some(&row) { memoized.repeat_previous(&mut memo, 5, 1) } else { None };
            let repeated = match shortcut {
                Some(mask) => LinkOutcome { mask, refused: Vec::new() },
                None => memoized.link_repeating(&mut memo, &row, 5, &r, &mut b).unwrap(),
            };
            prop_assert_eq!(&alone, &repeated);
            prop_assert_eq!(a, b);
            rows.linked(row, alone.mask);
        }
        memoized.flush_repeats(&mut memo).unwrap();
        prop_assert_eq!(counters(&plain), counters(&memoized));
        memoized.check().map_err(TestCaseError::fail)?;
    }

    /// The shortcuts for common rows (one value already in a profile, a
    /// new value alone, values all in one profile) give the outcome,
    /// events and counts of the general path, under tight limits and
    /// generic limits and with deletes in between.
    #[test]
    fn shortcuts_link_as_the_general_path_does(steps in proptest::collection::vec(repeat_step(), 1..80)) {
        let r = rules(&[(2, 1), (3, 2)], 2);
        let (mut general, mut shortcut) = (Graph::new(), Graph::new());
        general.general_path_only = true;
        let mut rows = TwoGraphRows::default();
        for (step, s) in steps.into_iter().enumerate() {
            // Time moves on, so that last-seen times differ.
            let now = 5 + step as u32;
            let Some(row) = rows.row(s, &mut general, &mut shortcut, now, |_| {})? else { continue };
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let by_general = general.link(&row, now, &r, &mut a);
            let by_shortcut = shortcut.link(&row, now, &r, &mut b);
            prop_assert_eq!(&by_general, &by_shortcut);
            prop_assert_eq!(a, b);
            prop_assert_eq!(counters(&general), counters(&shortcut));
            prop_assert_eq!(&general.last_seen, &shortcut.last_seen);
            rows.linked(row, by_general.mask);
        }
        shortcut.check().map_err(TestCaseError::fail)?;
    }
}

proptest! {
    /// Interning a batch at once gives the nodes interning its keys one by
    /// one would, repeated keys and dictionary growth included.
    #[test]
    fn interning_a_batch_matches_one_by_one(batches in proptest::collection::vec(proptest::collection::vec(0u32..3000, 0..400), 1..6)) {
        let (mut batched, mut single) = (Graph::new(), Graph::new());
        for batch in batches {
            let keys: Vec<Key> = batch.iter().map(|v| key(*v)).collect();
            let got = batched.intern_all(0, &keys).unwrap();
            let want: Vec<NodeId> = keys.iter().map(|k| single.intern(0, *k).unwrap()).collect();
            prop_assert_eq!(got, want);
        }
        prop_assert_eq!(batched.dictionary(), single.dictionary());
    }
}

/// Arrays doubled while a large batch was interned keep at most a 32nd of
/// spare room once trimmed (memory per identifier is a measured goal), and
/// every node is still found.
#[test]
fn trimming_leaves_a_32nd_of_spare_room() {
    let mut g = Graph::new();
    let n = 100_000u32;
    // Spread like real keys (hashes): the index places keys by their high bits.
    let keys: Vec<Key> = (0..n).map(|v| [u64::from(v).wrapping_mul(0x9e37_79b9_7f4a_7c15), 7]).collect();
    let nodes = g.intern_all(0, &keys).unwrap();
    assert!(g.dictionary.capacity() >= n as usize);
    g.trim_slack();
    let room = n as usize + (n as usize / 32).max(MIN_GROWTH);
    for (name, capacity) in [("keys", g.dictionary.capacity()), ("parent", g.parent.capacity()), ("ring", g.ring.capacity()), ("merges", g.merges.capacity())] {
        assert!(capacity <= room, "{name}: capacity {capacity} for {n} nodes");
    }
    for (k, node) in keys.iter().zip(nodes) {
        assert_eq!(g.lookup(k), Some(node));
    }
}

proptest! {
    /// Rebuilding from stored node ids in any order (the rows of a table
    /// are not in node order): ids skipped become holes, filled later,
    /// across the index's growths; every key is then found under its
    /// node, and the dictionary saved is the one interned.
    #[test]
    fn nodes_inserted_in_any_order_are_found(order in Just((0..700u32).collect::<Vec<_>>()).prop_shuffle(), skip in 0usize..700) {
        let mut interned = Graph::new();
        for v in 0..700u32 {
            interned.intern(v as TypeId % 3, key(v)).unwrap();
        }
        let mut rebuilt = Graph::new();
        // Some ids arrive twice (a value on several rows).
        for &v in order.iter().chain(order.iter().take(skip)) {
            rebuilt.insert_at(v, v as TypeId % 3, key(v)).map_err(TestCaseError::fail)?;
        }
        for v in 0..700u32 {
            prop_assert_eq!(rebuilt.lookup(&key(v)), Some(v));
        }
        prop_assert_eq!(rebuilt.dictionary(), interned.dictionary());
        // A filled id is refused another key; an unfilled one is a hole.
        prop_assert!(rebuilt.insert_at(order[0], 0, key(9_999)).is_err());
        rebuilt.insert_at(800, 1, key(800)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(rebuilt.dictionary()[750].0, TypeId::MAX);
        prop_assert_eq!(rebuilt.lookup(&key(800)), Some(800));
        rebuilt.insert_at(750, 2, key(750)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(rebuilt.dictionary()[750].0, 2);
        prop_assert_eq!(rebuilt.lookup(&key(750)), Some(750));
    }
}
