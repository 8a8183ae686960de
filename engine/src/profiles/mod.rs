//! Profiles as marketers use them: computed columns of `profiles` (traits
//! and attributes) and segments, all kept current after every commit.
//!
//! Everything here is derived from the rows and the identity graph. The
//! definitions live in storage metadata; trait and attribute values are
//! computed on open and then maintained; segment membership is the replay
//! of `segment_changes` (so entries and exits survive restarts), checked
//! against the definition at the first maintenance after open.
//!
//! Maintenance runs after each commit (before the committing statement
//! returns, so a session reads its own writes), before any statement when
//! there is pending work, and on a clock tick for conditions relative to
//! now. It never runs inside a write transaction: it reads a snapshot,
//! then appends the membership changes in a transaction of their own. A
//! crash between the two loses nothing: the next open re-evaluates.

pub(crate) mod clock;
pub(crate) mod columns;
mod maintain;
pub(crate) use maintain::Run as MaintenanceRun;
pub(crate) mod segments;
pub(crate) mod udf;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use roaring::RoaringTreemap;
use tokio::sync::broadcast;

pub use clock::{Clock, ManualClock, SystemClock};
use columns::ColumnState;
pub use segments::{Cause, Change, SegmentChange, CHANGES_TABLE};
use segments::SegmentState;

use crate::error::{Error, Result};

/// Change batches a subscriber may fall behind by before it is cut off.
const SUBSCRIBER_BACKLOG: usize = 4096;

/// Per-table numbers that change with every commit that touches it.
type Fingerprint = (u64, u64, usize, usize);

/// The profile layer of one database.
pub(crate) struct Profiles {
    pub clock: Arc<dyn Clock>,
    /// The clock was injected (so `now()` must read it too).
    pub custom_clock: bool,
    pub tick: Duration,
    pub columns: RwLock<BTreeMap<String, ColumnState>>,
    pub segments: RwLock<BTreeMap<String, SegmentState>>,
    /// One maintenance at a time.
    running: tokio::sync::Mutex<()>,
    /// Clock time (micros) of the next tick.
    next_tick: Mutex<i64>,
    /// Table fingerprints at the last maintenance.
    fingerprints: Mutex<HashMap<String, Fingerprint>>,
    changes: broadcast::Sender<Arc<Vec<SegmentChange>>>,
    /// Errors of the last maintenance, by segment or column name.
    pub errors: Mutex<BTreeMap<String, String>>,
    /// The session state deltas start from (built once; it holds no
    /// database tables, so no reference back to us).
    scratch_state: Mutex<Option<datafusion::execution::session_state::SessionState>>,
}

impl std::fmt::Debug for Profiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profiles")
            .field("columns", &self.columns.read().len())
            .field("segments", &self.segments.read().len())
            .finish()
    }
}

impl Profiles {
    /// Load definitions and recorded memberships; values are computed at
    /// the first maintenance.
    pub fn open(snap: &tessera_storage::Snapshot, clock: Option<Arc<dyn Clock>>, tick: Duration) -> Result<Profiles> {
        let custom_clock = clock.is_some();
        let clock: Arc<dyn Clock> = clock.unwrap_or_else(|| Arc::new(SystemClock));
        let mut columns = BTreeMap::new();
        let stored: BTreeMap<String, tessera_sql::ProfileColumnDef> =
            crate::catalog::stored_definitions(snap, columns::COLUMN_KEY_PREFIX, "profile column")?;
        for (name, def) in stored {
            let compiled = match columns::Compiled::new(def.clone(), snap) {
                Ok(c) => c,
                Err(e) => return Err(Error::internal(format!("stored profile column '{name}' no longer compiles: {e}"))),
            };
            columns.insert(name, ColumnState::new(compiled));
        }
        let mut recorded = segments::replay_changes(snap)?;
        let mut segs = BTreeMap::new();
        let stored: BTreeMap<String, segments::SegmentDef> =
            crate::catalog::stored_definitions(snap, segments::SEGMENT_KEY_PREFIX, "segment")?;
        for (name, def) in stored {
            let analysis = segments::analyze(&def.query, snap)?;
            let members = recorded.remove(&name).unwrap_or_default();
            segs.insert(
                name,
                SegmentState { def, analysis, members: Arc::new(members), stale: true, evaluated_at: 0 },
            );
        }
        let (changes, _) = broadcast::channel(SUBSCRIBER_BACKLOG);
        let now = clock.now_micros();
        Ok(Profiles {
            clock,
            custom_clock,
            tick,
            columns: RwLock::new(columns),
            segments: RwLock::new(segs),
            running: tokio::sync::Mutex::new(()),
            next_tick: Mutex::new(now),
            fingerprints: Mutex::new(HashMap::new()),
            changes,
            errors: Mutex::new(BTreeMap::new()),
            scratch_state: Mutex::new(None),
        })
    }

    /// Nothing to maintain.
    pub fn is_empty(&self) -> bool {
        self.columns.read().is_empty() && self.segments.read().is_empty()
    }

    /// Members of a segment now.
    pub fn members(&self, segment: &str) -> Result<Arc<RoaringTreemap>> {
        self.segments
            .read()
            .get(segment)
            .map(|s| s.members.clone())
            .ok_or_else(|| Error::user(format!("segment '{segment}' does not exist")))
    }

    /// A live stream of a segment's changes, optionally starting with its
    /// current members (as `entered`).
    pub fn subscribe(&self, segment: &str, snapshot: bool) -> Result<SegmentSubscription> {
        // Subscribing under the segments lock: maintenance publishes while
        // holding it, so the snapshot and the stream neither overlap nor
        // leave a gap.
        let segments = self.segments.read();
        let state = segments.get(segment).ok_or_else(|| Error::user(format!("segment '{segment}' does not exist")))?;
        let receiver = self.changes.subscribe();
        let at = self.clock.now_micros();
        let initial = if snapshot {
            state
                .members
                .iter()
                .map(|pid| SegmentChange {
                    segment: segment.to_string(),
                    profile_id: pid as i64,
                    change: Change::Entered,
                    at,
                    cause: Cause::Definition,
                })
                .collect()
        } else {
            std::collections::VecDeque::new()
        };
        Ok(SegmentSubscription { segment: segment.to_string(), receiver, pending: initial, ended: false })
    }

    /// Publish changes and apply them to the bitmaps, atomically for
    /// subscribers.
    fn publish(&self, segments: &mut BTreeMap<String, SegmentState>, changes: Vec<SegmentChange>) {
        for c in &changes {
            if let Some(s) = segments.get_mut(&c.segment) {
                let members = Arc::make_mut(&mut s.members);
                match c.change {
                    Change::Entered => members.insert(c.profile_id as u64),
                    Change::Exited => members.remove(c.profile_id as u64),
                };
            }
        }
        if !changes.is_empty() {
            // No receiver is fine: nobody is subscribed.
            let _ = self.changes.send(Arc::new(changes));
        }
    }
}

/// A live feed of one segment's entries and exits.
pub struct SegmentSubscription {
    segment: String,
    receiver: broadcast::Receiver<Arc<Vec<SegmentChange>>>,
    pending: std::collections::VecDeque<SegmentChange>,
    ended: bool,
}

impl std::fmt::Debug for SegmentSubscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentSubscription").field("segment", &self.segment).finish()
    }
}

impl SegmentSubscription {
    pub fn segment(&self) -> &str {
        &self.segment
    }

    /// The next change; waits for one. `None` once the segment is dropped
    /// (after its members' exits) or the database closed.
    pub async fn next(&mut self) -> Result<Option<SegmentChange>> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Ok(Some(c));
            }
            if self.ended {
                return Ok(None);
            }
            match self.receiver.recv().await {
                Ok(batch) => {
                    for c in batch.iter() {
                        if c.segment == self.segment {
                            self.pending.push_back(c.clone());
                        }
                    }
                    if batch.iter().any(|c| c.segment == self.segment && c.cause == Cause::Definition && c.profile_id == 0) {
                        // The drop marker: end after the exits before it.
                        self.pending.retain(|c| c.profile_id != 0);
                        self.ended = true;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    return Err(Error::ResourcesExhausted(format!(
                        "subscription to segment '{}' fell behind by {n} change batches and was cut off; subscribe again",
                        self.segment
                    )))
                }
            }
        }
    }

    /// The changes already received and not yet returned by `next`.
    pub fn try_next(&mut self) -> Option<SegmentChange> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Some(c);
            }
            match self.receiver.try_recv() {
                Ok(batch) => self.pending.extend(batch.iter().filter(|c| c.segment == self.segment && c.profile_id != 0).cloned()),
                Err(_) => return None,
            }
        }
    }

    /// As a stream.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<SegmentChange>> + Send {
        futures::stream::unfold(self, |mut s| async move {
            match s.next().await {
                Ok(Some(c)) => Some((Ok(c), s)),
                Ok(None) => None,
                Err(e) => {
                    s.ended = true;
                    s.pending.clear();
                    Some((Err(e), s))
                }
            }
        })
    }
}

/// Session extension set by maintenance: scans of `profiles` and of tables
/// with identifiers see only these profiles' rows (re-evaluating a
/// per-profile segment for the changed profiles, without a literal list in
/// the SQL).
#[derive(Debug)]
pub(crate) struct OnlyProfiles(pub Arc<RoaringTreemap>);

/// Relations describing the definitions (what SHOW SEGMENTS and SHOW
/// TRAITS return), queryable like tables.
pub(crate) const RELATIONS: &[&str] = &["profile_segments", "profile_traits"];

pub(crate) fn relation(profiles: &Profiles, name: &str) -> Result<Option<arrow::array::RecordBatch>> {
    match name {
        "profile_segments" => profiles.show_segments().map(Some),
        "profile_traits" => profiles.show_traits().map(Some),
        _ => Ok(None),
    }
}

/// Most traits and attributes one database may define.
pub(crate) const MAX_PROFILE_COLUMNS: usize = 256;

/// True when `segment_filter` captures the whole filter (so the scan can
/// apply it exactly, without evaluating it row by row afterwards).
pub(crate) fn is_segment_filter(e: &datafusion::logical_expr::Expr) -> bool {
    use datafusion::logical_expr::{Expr, Operator};
    match e {
        Expr::ScalarFunction(f) if f.name() == "in_segment" => {
            matches!(f.args.first(), Some(Expr::Column(c)) if c.name == crate::identity::spec::PROFILE_ID_COLUMN)
                && udf::segment_name(&f.args).is_some()
        }
        Expr::Not(inner) => is_segment_filter(inner),
        Expr::BinaryExpr(b) if matches!(b.op, Operator::And | Operator::Or) => is_segment_filter(&b.left) && is_segment_filter(&b.right),
        _ => false,
    }
}

/// The profiles a filter made only of `in_segment(profile_id, 'name')`
/// calls joined by AND, OR and NOT selects, read from the bitmaps
/// (`None`: the filter is something else). `universe` lists every profile,
/// for NOT.
pub(crate) fn segment_filter(
    profiles: &Profiles,
    e: &datafusion::logical_expr::Expr,
    universe: &dyn Fn() -> RoaringTreemap,
) -> Result<Option<RoaringTreemap>> {
    use datafusion::logical_expr::{Expr, Operator};
    match e {
        Expr::ScalarFunction(f) if f.name() == "in_segment" => {
            let on_profile = matches!(f.args.first(), Some(Expr::Column(c)) if c.name == crate::identity::spec::PROFILE_ID_COLUMN);
            match (on_profile, udf::segment_name(&f.args)) {
                (true, Some(name)) => Ok(Some((*profiles.members(&name)?).clone())),
                _ => Ok(None),
            }
        }
        Expr::Not(inner) => Ok(segment_filter(profiles, inner, universe)?.map(|m| universe() - m)),
        Expr::BinaryExpr(b) if b.op == Operator::And => {
            let left = segment_filter(profiles, &b.left, universe)?;
            let right = segment_filter(profiles, &b.right, universe)?;
            Ok(match (left, right) {
                (Some(l), Some(r)) => Some(l & r),
                // Either side alone still narrows an AND.
                (Some(x), None) | (None, Some(x)) => Some(x),
                (None, None) => None,
            })
        }
        Expr::BinaryExpr(b) if b.op == Operator::Or => {
            let left = segment_filter(profiles, &b.left, universe)?;
            let right = segment_filter(profiles, &b.right, universe)?;
            Ok(match (left, right) {
                (Some(l), Some(r)) => Some(l | r),
                _ => None,
            })
        }
        _ => Ok(None),
    }
}
