//! Identifier values prepared ahead of the writer: normalized, hashed and
//! deduplicated per batch (on a load's preparing threads), with the cache
//! of parsed phone numbers they share.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::RecordBatch;

use super::graph::{self, Graph, NodeId, TypeId};
use super::normalize::{self, key_of, Normalized, Normalizer};
use super::{strings, TypeInfo};
use crate::error::{Error, Result};

pub(super) type PhoneCache = HashMap<TypeId, hashbrown::HashMap<u64, Prepared>>;
pub(super) type SharedPhoneCache = Arc<parking_lot::Mutex<PhoneCache>>;

/// Normalize and hash a raw value; phone numbers go through a cache keyed
/// by their digits, since checking one is far slower than a lookup. The
/// cache holds the finished outcome (the dictionary key), so a hit costs
/// neither an allocation nor a hash of the text. It is locked for the
/// lookup and the insert only, not while parsing: loads prepare batches on
/// several threads.
pub(super) fn prepare_cached(cache: &SharedPhoneCache, info: &TypeInfo, raw: &str) -> Prepared {
    let uncached = || Prepared::of(info.normalizer.normalize(raw, &info.spec.blocked), info.spec.id);
    let Normalizer::Phone { .. } = info.normalizer else {
        return uncached();
    };
    // What depends on the text as typed is decided before the cache,
    // which knows only the digits.
    if let Some(refused) = normalize::refused_as_typed(raw.trim(), &info.spec.blocked) {
        return Prepared::of(refused, info.spec.id);
    }
    let Some(key) = normalize::phone_cache_key(raw) else {
        return uncached();
    };
    if let Some(hit) = cache.lock().get(&info.spec.id).and_then(|numbers| numbers.get(&key)) {
        return hit.clone();
    }
    let outcome = uncached();
    let mut all = cache.lock();
    let numbers = all.entry(info.spec.id).or_default();
    if numbers.len() >= PHONE_CACHE_ENTRIES {
        numbers.clear();
    }
    numbers.insert(key, outcome.clone());
    outcome
}

/// What a raw identifier value comes to before the graph is consulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Prepared {
    Absent,
    Key(graph::Key),
    Refused(&'static str, String),
}

impl Prepared {
    fn of(normalized: Normalized, t: TypeId) -> Prepared {
        match normalized {
            Normalized::Absent => Prepared::Absent,
            Normalized::Value(v) => Prepared::Key(key_of(t, &v)),
            Normalized::Blocked => Prepared::Refused("blocked", "value is on the blocked list".to_string()),
            Normalized::Invalid(why) => Prepared::Refused("invalid", why),
        }
    }
}

/// A row whose value in a slot is NULL.
pub(super) const NULL_VALUE: u32 = u32::MAX;

/// The identifier values of one batch, normalized and hashed ahead of the
/// writer (by `COPY`'s reader thread): per slot, each row's index into the
/// slot's distinct values. The writer uses it only if the identifier types
/// are still the ones it was made with.
pub(crate) struct PreparedBatch {
    pub(super) infos: Vec<Arc<TypeInfo>>,
    pub(super) rows: usize,
    pub(super) slots: Vec<(Vec<u32>, Vec<Prepared>)>,
}

/// Makes [`PreparedBatch`]es for one table, on any thread.
pub(crate) struct Preparer {
    pub(super) value_columns: Vec<usize>,
    pub(super) infos: Vec<Arc<TypeInfo>>,
    pub(super) phone_cache: SharedPhoneCache,
}

impl Preparer {
    pub(crate) fn prepare(&self, batch: &RecordBatch) -> Result<PreparedBatch> {
        prepare_batch(&self.infos, &self.value_columns, batch, &self.phone_cache)
    }
}

/// Normalize and hash a batch's identifier values (`value_columns`, one per
/// type in `infos`), each distinct value of a slot once: a cookie repeated
/// on every event is normalized once per batch.
pub(super) fn prepare_batch(infos: &[Arc<TypeInfo>], value_columns: &[usize], batch: &RecordBatch, phone_cache: &SharedPhoneCache) -> Result<PreparedBatch> {
    let mut slots = Vec::with_capacity(infos.len());
    for (info, &column) in infos.iter().zip(value_columns) {
        let values = strings(batch.column(column))?;
        // Sized for a batch of repeated values (events); one of distinct
        // values (contacts) grows it twice.
        let mut distinct: hashbrown::HashMap<&str, u32> = hashbrown::HashMap::with_capacity(batch.num_rows() / 4);
        let mut outcomes: Vec<Prepared> = Vec::new();
        let mut rows = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            if values.is_null(row) {
                rows.push(NULL_VALUE);
                continue;
            }
            let raw = values.value(row);
            // Runs of one value (a session's cookie) skip the hashing.
            if let Some(&previous) = rows.last() {
                if previous != NULL_VALUE && values.value(row - 1) == raw {
                    rows.push(previous);
                    continue;
                }
            }
            let index = *distinct.entry(raw).or_insert_with(|| {
                outcomes.push(prepare_cached(phone_cache, info, raw));
                (outcomes.len() - 1) as u32
            });
            rows.push(index);
        }
        slots.push((rows, outcomes));
    }
    Ok(PreparedBatch { infos: infos.to_vec(), rows: batch.num_rows(), slots })
}

/// The node of each distinct value of a slot (`outcomes`, of type `t`):
/// found or added for all of them at once ([`Graph::intern_all`]); None
/// for values absent or refused before linking.
pub(super) fn intern_distinct(graph: &mut Graph, t: TypeId, outcomes: &[Prepared]) -> Result<Vec<Option<NodeId>>> {
    let keys: Vec<graph::Key> = outcomes
        .iter()
        .filter_map(|o| match o {
            Prepared::Key(k) => Some(*k),
            _ => None,
        })
        .collect();
    let mut nodes = graph.intern_all(t, &keys).map_err(Error::ResourcesExhausted)?.into_iter();
    let of: Vec<Option<NodeId>> = outcomes
        .iter()
        .map(|o| match o {
            Prepared::Key(_) => nodes.next(),
            _ => None,
        })
        .collect();
    debug_assert!(nodes.next().is_none(), "a node for every key");
    Ok(of)
}

/// Phone numbers remembered per type before the cache starts over.
const PHONE_CACHE_ENTRIES: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::spec::IdentifierSpec;
    use std::collections::BTreeMap;

    fn phone_type(blocked: &str) -> TypeInfo {
        let options: BTreeMap<String, String> =
            [("normalize", "phone"), ("blocked", blocked)].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let spec = IdentifierSpec::from_options("phone", 3, &options).expect("spec");
        TypeInfo { normalizer: spec.normalizer().expect("normalizer"), spec }
    }

    /// The phone cache knows only digits: what depends on the text as
    /// typed (blocked spellings, nothing typed at all) must not depend on
    /// which spelling the cache saw first.
    #[test]
    fn the_phone_cache_does_not_carry_text_decisions_between_spellings() {
        let info = phone_type("650-253-0000");
        let spellings = ["(650) 253-0000", "650-253-0000", "6502530000", "  ", "()", "-1", "1", "+1 650 253 0000", "0"];
        let uncached: Vec<Normalized> = spellings.iter().map(|raw| info.normalizer.normalize(raw, &info.spec.blocked)).collect();
        assert_eq!(uncached[1], Normalized::Blocked, "the type's own blocked spelling");
        assert!(matches!(uncached[0], Normalized::Value(_)), "another spelling of it is not blocked");
        for reversed in [false, true] {
            let mut order: Vec<usize> = (0..spellings.len()).collect();
            if reversed {
                order.reverse();
            }
            let cache = SharedPhoneCache::default();
            for i in order {
                let expected = Prepared::of(uncached[i].clone(), info.spec.id);
                assert_eq!(prepare_cached(&cache, &info, spellings[i]), expected, "{:?} (reversed: {reversed})", spellings[i]);
            }
        }
    }
}
