//! Identifier values prepared ahead of the writer: normalized, hashed and
//! deduplicated per batch (on a load's preparing threads), with the cache
//! of parsed phone numbers they share.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray, StringViewArray};

use super::graph::{self, Dictionary, NodeId, TypeId};
use super::normalize::{self, key_of, Normalized, Normalizer};
use super::{strings, Texts, TypeInfo};
use crate::error::{Error, Result};

pub(super) type PhoneCache = HashMap<TypeId, hashbrown::HashMap<u64, Prepared>>;
pub(super) type SharedPhoneCache = Arc<parking_lot::Mutex<PhoneCache>>;

/// Normalize and hash a raw value; phone numbers go through a cache keyed
/// by their digits, since checking one is far slower than a lookup
/// (unless they are North American numbers of a known valid area code and
/// exchange, which need neither the cache nor libphonenumber). The
/// cache holds the finished outcome (the dictionary key), so a hit costs
/// neither an allocation nor a hash of the text. It is locked for the
/// lookup and the insert only, not while parsing: loads prepare batches on
/// several threads.
pub(super) fn prepare_cached(cache: &SharedPhoneCache, info: &TypeInfo, raw: &str) -> Prepared {
    let uncached = || prepare_uncached(info, raw);
    let Normalizer::Phone { region } = info.normalizer else {
        return uncached();
    };
    // What depends on the text as typed is decided before the cache,
    // which knows only the digits.
    if let Some(refused) = normalize::refused_as_typed(raw.trim(), &info.spec.blocked) {
        return Prepared::of(refused, info.spec.id);
    }
    // Most numbers are answered faster than the cache could.
    if let Some(known) = normalize::known_north_american(region, raw.trim(), &info.spec.blocked) {
        return Prepared::of(known, info.spec.id);
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

/// Normalize and hash a raw value, the normalized text borrowed from it
/// where it can be (it is only hashed).
fn prepare_uncached(info: &TypeInfo, raw: &str) -> Prepared {
    match info.normalizer.normalize_borrowed(raw, &info.spec.blocked) {
        Ok(value) => Prepared::Key(key_of(info.spec.id, &value)),
        Err(refused) => Prepared::of(refused, info.spec.id),
    }
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
/// slot's prepared values (distinct ones, unless the slot's values hardly
/// repeat: see `repeats_early`). The writer uses it only if the identifier types
/// are still the ones it was made with.
pub(crate) struct PreparedBatch {
    pub(super) infos: Vec<Arc<TypeInfo>>,
    pub(super) rows: usize,
    pub(super) slots: Vec<(Vec<u32>, Vec<Prepared>)>,
    /// Per row, whether it has the same prepared value as the row before
    /// in every slot (NULL in the same slots): runs of such rows (a
    /// session's events) are found here, on the preparing threads, rather
    /// than row by row by the writer.
    pub(super) repeats_previous: Vec<bool>,
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
/// type in `infos`), each distinct value of a slot once when its values
/// repeat: a cookie repeated on every event is normalized once per batch.
pub(super) fn prepare_batch(infos: &[Arc<TypeInfo>], value_columns: &[usize], batch: &RecordBatch, phone_cache: &SharedPhoneCache) -> Result<PreparedBatch> {
    let mut slots = Vec::with_capacity(infos.len());
    for (info, &column) in infos.iter().zip(value_columns) {
        let slot = match strings(batch.column(column))? {
            Texts::Utf8(values) => prepare_slot(&values, info, phone_cache),
            Texts::View(values) => prepare_slot(&values, info, phone_cache),
        };
        slots.push(slot);
    }
    let repeats_previous = repeats_previous(&slots, batch.num_rows());
    Ok(PreparedBatch { infos: infos.to_vec(), rows: batch.num_rows(), slots, repeats_previous })
}

/// Rows of a text column, read the way of its type: [`prepare_slot`] is
/// compiled once per type, so the type is not decided again on every row.
trait TextRows: Array {
    fn text(&self, row: usize) -> &str;
    /// Whether row `row`'s value equals row `row - 1`'s (neither NULL).
    fn repeats(&self, row: usize) -> bool;
}

impl TextRows for StringArray {
    #[inline]
    fn text(&self, row: usize) -> &str {
        self.value(row)
    }
    #[inline]
    fn repeats(&self, row: usize) -> bool {
        self.value(row - 1) == self.value(row)
    }
}

impl TextRows for StringViewArray {
    #[inline]
    fn text(&self, row: usize) -> &str {
        self.value(row)
    }
    /// By the views where they tell, without reading the text.
    #[inline]
    fn repeats(&self, row: usize) -> bool {
        tessera_storage::same_view_value(self, row - 1, row)
    }
}

/// One slot of [`prepare_batch`]: each row's index into the slot's
/// prepared values, and those values.
fn prepare_slot<T: TextRows>(values: &T, info: &TypeInfo, phone_cache: &SharedPhoneCache) -> (Vec<u32>, Vec<Prepared>) {
    let n = values.len();
    let deduplicate = repeats_early(values);
    // Sized for a batch of repeated values (events); one of distinct
    // values (contacts) is not deduplicated.
    let mut distinct: hashbrown::HashMap<&str, u32> = hashbrown::HashMap::with_capacity(if deduplicate { n / 4 } else { 0 });
    let mut outcomes: Vec<Prepared> = Vec::new();
    let mut rows = Vec::with_capacity(n);
    for row in 0..n {
        if values.is_null(row) {
            rows.push(NULL_VALUE);
            continue;
        }
        // Runs of one value (a session's cookie) skip the hashing.
        if let Some(&previous) = rows.last() {
            if previous != NULL_VALUE && values.repeats(row) {
                rows.push(previous);
                continue;
            }
        }
        let raw = values.text(row);
        if !deduplicate {
            outcomes.push(prepare_cached(phone_cache, info, raw));
            rows.push((outcomes.len() - 1) as u32);
            continue;
        }
        let index = *distinct.entry(raw).or_insert_with(|| {
            outcomes.push(prepare_cached(phone_cache, info, raw));
            (outcomes.len() - 1) as u32
        });
        rows.push(index);
    }
    (rows, outcomes)
}

/// Values sampled from the start of a slot, and the repeats among them
/// below which the slot is not deduplicated.
const DEDUP_SAMPLE_VALUES: usize = 256;
const DEDUP_MIN_REPEATS: usize = 8;

/// Whether a batch's values of a slot repeat enough to be worth
/// deduplicating before normalizing: a slot of distinct values (contacts'
/// emails and ids) would hash every value into a map to find nothing,
/// which cost more than normalizing the rare repeat twice. Runs of one
/// value are skipped apart anyway; the writer's dictionary finds equal
/// values whatever this decides.
fn repeats_early<T: TextRows>(values: &T) -> bool {
    let mut seen: hashbrown::HashSet<&str> = hashbrown::HashSet::with_capacity(DEDUP_SAMPLE_VALUES);
    let mut sampled = 0;
    for row in 0..values.len() {
        if sampled == DEDUP_SAMPLE_VALUES {
            break;
        }
        if values.is_null(row) || (row > 0 && !values.is_null(row - 1) && values.repeats(row)) {
            continue;
        }
        sampled += 1;
        seen.insert(values.text(row));
    }
    sampled - seen.len() >= DEDUP_MIN_REPEATS
}

/// For each of `rows` rows, whether every slot gives it the same value
/// index as the row before (the first row repeats nothing).
pub(super) fn repeats_previous(slots: &[(Vec<u32>, Vec<Prepared>)], rows: usize) -> Vec<bool> {
    let mut same = vec![true; rows];
    if let Some(first) = same.first_mut() {
        *first = false;
    }
    for (values, _) in slots {
        debug_assert_eq!(values.len(), rows, "a value index per row");
        for (row, pair) in values.windows(2).enumerate() {
            same[row + 1] &= pair[0] == pair[1];
        }
    }
    same
}

/// The node of each prepared value of a slot (`outcomes`): found or added
/// for all of them at once ([`Dictionary::intern_all`]); None for values
/// absent or refused before linking. The graph adopts the nodes added.
pub(super) fn intern_distinct(dictionary: &mut Dictionary, outcomes: &[Prepared]) -> Result<Vec<Option<NodeId>>> {
    let keys: Vec<graph::Key> = outcomes
        .iter()
        .filter_map(|o| match o {
            Prepared::Key(k) => Some(*k),
            _ => None,
        })
        .collect();
    let mut nodes = dictionary.intern_all(&keys).map_err(Error::ResourcesExhausted)?.into_iter();
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

    proptest::proptest! {
        /// Comparing a row with the previous one by views says what
        /// comparing their text says: short and long values, repeats
        /// stored apart (decoded one by one) or sharing their bytes (taken
        /// twice from one array).
        #[test]
        fn previous_row_comparison_is_text_equality(picks in proptest::collection::vec(0usize..6, 2..40)) {
            use arrow::array::{Array, AsArray, StringViewArray, UInt32Array};
            let words = ["a", "short one", "exactly12byt", "a value longer than a view", "a value longer than a viex", "b value longer than a view"];
            let apart: StringViewArray = picks.iter().map(|&p| Some(words[p])).collect();
            let pool: StringViewArray = words.iter().map(|w| Some(*w)).collect();
            let indices = UInt32Array::from(picks.iter().map(|&p| p as u32).collect::<Vec<_>>());
            let taken = arrow::compute::take(&pool, &indices, None).expect("take");
            for array in [apart, taken.as_string_view().clone()] {
                for row in 1..array.len() {
                    proptest::prop_assert_eq!(TextRows::repeats(&array, row), array.value(row - 1) == array.value(row), "row {}", row);
                }
            }
        }
    }

    /// A row repeats the previous one exactly when every slot gives it
    /// the previous row's value index, NULLs included; the first repeats
    /// nothing.
    #[test]
    fn repeats_are_rows_equal_to_the_previous_in_every_slot() {
        const N: u32 = NULL_VALUE;
        let slots = vec![(vec![0, 0, 0, 1, 1, N, N, 2, 2], Vec::new()), (vec![N, N, 5, 5, 5, N, N, 6, 7], Vec::new())];
        let same = repeats_previous(&slots, 9);
        assert_eq!(same, vec![false, true, false, false, true, false, true, false, false]);
        assert!(repeats_previous(&[], 0).is_empty());
        assert_eq!(repeats_previous(&[], 3), vec![false, true, true], "rows without slots repeat");
    }

    /// Each row's prepared value is the same whether the slot is
    /// deduplicated (values that repeat) or not (values that hardly do);
    /// only the number of values prepared differs.
    #[test]
    fn deduplicating_or_not_prepares_the_same_values() {
        use arrow::array::{ArrayRef, StringArray};
        let options: BTreeMap<String, String> = [("normalize", "email")].into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let spec = IdentifierSpec::from_options("email", 1, &options).expect("spec");
        let info = Arc::new(TypeInfo { normalizer: spec.normalizer().expect("normalizer"), spec });
        let repeating: Vec<Option<String>> = (0..600).map(|i| (i % 7 != 0).then(|| format!(" User{}@Example.com", (i * 37) % 50))).collect();
        let distinct: Vec<Option<String>> = (0..600).map(|i| (i % 7 != 0).then(|| format!("user{i}@example.com"))).collect();
        for (values, deduplicated) in [(repeating, true), (distinct, false)] {
            let column: ArrayRef = Arc::new(values.iter().map(|v| v.as_deref()).collect::<StringArray>());
            let batch = RecordBatch::try_from_iter([("email", column)]).expect("batch");
            let prepared = prepare_batch(&[info.clone()], &[0], &batch, &SharedPhoneCache::default()).expect("prepared");
            let (rows, outcomes) = &prepared.slots[0];
            for (row, value) in values.iter().enumerate() {
                match value {
                    None => assert_eq!(rows[row], NULL_VALUE),
                    Some(raw) => assert_eq!(outcomes[rows[row] as usize], prepare_uncached(&info, raw), "{raw}"),
                }
            }
            let non_null = values.iter().flatten().count();
            assert_eq!(outcomes.len() < non_null, deduplicated, "{} values for {non_null} rows", outcomes.len());
        }
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
