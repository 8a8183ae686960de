//! Decoded pages kept in memory, up to a byte budget, so a query that
//! reads the same pages again (point lookups, repeated filters) does not
//! decompress and decode them again.
//!
//! Entries are keyed by the reader they came from, and a reader's id is
//! never reused, so a rewritten segment can never serve stale pages: its
//! old entries just age out. The policy (S3-FIFO, from `quick_cache`)
//! keeps a full scan from evicting the pages that are read repeatedly.

use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef};
use quick_cache::sync::Cache;
use quick_cache::Weighter;

/// (reader id, row group, page, column).
pub(crate) type PageKey = (u64, u32, u32, u32);

/// Bookkeeping the cache charges per entry besides the array's buffers.
const ENTRY_OVERHEAD_BYTES: u64 = 96;
/// The size of a typical decoded page, to size the cache's tables.
const TYPICAL_PAGE_BYTES: u64 = 32 * 1024;

#[derive(Clone, Debug)]
struct PageWeighter;

impl Weighter<PageKey, ArrayRef> for PageWeighter {
    fn weight(&self, _key: &PageKey, page: &ArrayRef) -> u64 {
        page.get_array_memory_size() as u64 + ENTRY_OVERHEAD_BYTES
    }
}

/// A shared cache of decoded pages; a budget of 0 disables it.
pub struct PageCache {
    pages: Option<Cache<PageKey, ArrayRef, PageWeighter>>,
    budget: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl std::fmt::Debug for PageCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PageCache").field("budget", &self.budget).finish()
    }
}

impl PageCache {
    pub fn new(budget_bytes: u64) -> Self {
        let pages = (budget_bytes > 0).then(|| {
            let items = (budget_bytes / TYPICAL_PAGE_BYTES).clamp(16, 1 << 20) as usize;
            Cache::with_weighter(items, budget_bytes, PageWeighter)
        });
        PageCache { pages, budget: budget_bytes, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    pub(crate) fn get(&self, key: &PageKey) -> Option<ArrayRef> {
        let pages = self.pages.as_ref()?;
        let found = pages.get(key);
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub(crate) fn insert(&self, key: PageKey, page: ArrayRef) {
        if let Some(pages) = &self.pages {
            pages.insert(key, page);
        }
    }

    /// What the cache holds and how it has served.
    pub fn stats(&self) -> PageCacheStats {
        PageCacheStats {
            budget_bytes: self.budget,
            used_bytes: self.pages.as_ref().map_or(0, |p| p.weight()),
            pages: self.pages.as_ref().map_or(0, |p| p.len() as u64),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageCacheStats {
    pub budget_bytes: u64,
    pub used_bytes: u64,
    pub pages: u64,
    pub hits: u64,
    pub misses: u64,
}

static NEXT_READER_ID: AtomicU64 = AtomicU64::new(1);

/// A process-wide unique id for a newly opened segment reader.
pub(crate) fn next_reader_id() -> u64 {
    NEXT_READER_ID.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use std::sync::Arc;

    fn page(n: usize) -> ArrayRef {
        Arc::new(Int64Array::from_iter_values(0..n as i64))
    }

    #[test]
    fn keeps_pages_within_its_budget() {
        let cache = PageCache::new(64 * 1024);
        for i in 0..100u32 {
            cache.insert((1, 0, i, 0), page(1024));
        }
        let stats = cache.stats();
        assert!(stats.used_bytes <= 64 * 1024, "{stats:?}");
        assert!(stats.pages > 0 && stats.pages < 100, "{stats:?}");
        let last = cache.get(&(1, 0, 99, 0)).expect("the newest page stays");
        assert_eq!(last.len(), 1024);
        assert!(cache.get(&(2, 0, 99, 0)).is_none());
        assert_eq!((cache.stats().hits, cache.stats().misses), (1, 1));
    }

    #[test]
    fn a_zero_budget_caches_nothing() {
        let cache = PageCache::new(0);
        cache.insert((1, 0, 0, 0), page(10));
        assert!(cache.get(&(1, 0, 0, 0)).is_none());
        assert_eq!(cache.stats().used_bytes, 0);
    }

    #[test]
    fn reader_ids_are_never_reused() {
        let a = next_reader_id();
        let b = next_reader_id();
        assert!(b > a);
    }
}
