//! Keeping computed columns and segments current, and the statements that
//! define them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::MemTable;
use datafusion::execution::context::SessionContext;
use roaring::RoaringTreemap;
use tessera_sql::{CreateSegment, ProfileColumnDef, ProfileColumnKind, Statement};
use tessera_storage::{Snapshot, Store};

use super::columns::{self, Cell, ColumnState, Combine, Compiled, COLUMN_KEY_PREFIX};
use super::segments::{self, Analysis, Cause, Change, SegmentChange, SegmentDef, SegmentState, CHANGES_TABLE, SEGMENT_KEY_PREFIX};
use super::Profiles;
use crate::database::Database;
use crate::error::{Error, Result};
use crate::identity::graph::ProfileId;
use crate::identity::spec::{TableIdentity, PROFILE_ID_COLUMN};
use crate::identity::{AppendedRows, CommitNotice, EVENTS_TABLE, REJECTIONS_TABLE};
use crate::provider::PinnedSnapshot;

/// Profiles re-evaluated one by one at most; beyond this, from scratch.
const TARGETED_LIMIT: usize = 20_000;
/// Name the new rows of a delta are queried under.
const DELTA_TABLE: &str = "__tessera_delta";

/// Why maintenance runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Run {
    /// Commits happened or something is stale.
    Pending,
    /// `REFRESH SEGMENTS`: everything from scratch.
    Refresh,
}

impl Profiles {
    /// A context reading `snap` (session state built once, then cloned:
    /// building one registers every function and costs milliseconds).
    fn ctx_at(&self, db: &Database, snap: &Arc<Snapshot>) -> SessionContext {
        let state = db.cached_session_state();
        let ctx = SessionContext::new_with_state(state);
        ctx.state_ref().write().config_mut().set_extension(Arc::new(PinnedSnapshot(snap.clone())));
        ctx
    }

    /// Run one query at a snapshot.
    async fn run_query(&self, db: &Database, snap: &Arc<Snapshot>, sql: &str) -> Result<Vec<RecordBatch>> {
        self.run_query_on(self.ctx_at(db, snap), sql).await
    }

    /// A context whose scans of `profiles` and of tables with identifiers
    /// see only `pids`' rows: how per-profile queries are re-evaluated for
    /// changed profiles (a literal `IN` list of thousands of ids costs
    /// milliseconds to plan). Only for per-profile queries (one relation,
    /// grouped by profile), where restricting the input restricts the
    /// answer to the same profiles.
    fn ctx_only(&self, db: &Database, snap: &Arc<Snapshot>, pids: &[ProfileId]) -> SessionContext {
        let ctx = self.ctx_at(db, snap);
        let only: RoaringTreemap = pids.iter().copied().collect();
        ctx.state_ref().write().config_mut().set_extension(Arc::new(super::OnlyProfiles(Arc::new(only))));
        ctx
    }

    async fn run_query_on(&self, ctx: SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
        let plan = plan_query(&ctx, sql).await?;
        Ok(ctx.execute_logical_plan(plan).await?.collect().await?)
    }


    /// A context without the database's tables, for deltas.
    fn scratch_ctx(&self) -> SessionContext {
        let state = self
            .scratch_state
            .lock()
            .get_or_insert_with(|| {
                let ctx = SessionContext::new();
                if self.custom_clock {
                    ctx.register_udf(super::udf::clock_now_udf(self.clock.clone()));
                }
                ctx.state()
            })
            .clone();
        SessionContext::new_with_state(state)
    }
}

async fn plan_query(ctx: &SessionContext, sql: &str) -> Result<datafusion::logical_expr::LogicalPlan> {
    let mut statements = tessera_sql::parse(sql)?;
    let (Some(Statement::DataFusion(statement)), true) = (statements.pop(), statements.is_empty()) else {
        return Err(Error::user("expected one query"));
    };
    Ok(ctx.state().statement_to_plan(*statement).await?)
}

/// Tables whose changes matter to segments (not the logs we write).
fn fingerprints(snap: &Snapshot) -> HashMap<String, super::Fingerprint> {
    snap.tables()
        .filter(|t| ![CHANGES_TABLE, EVENTS_TABLE, REJECTIONS_TABLE].contains(&t.name()))
        .map(|t| (t.name().to_string(), (t.next_row_id(), t.deleted_count(), t.segment_count(), t.buffered_rows())))
        .collect()
}

/// The visible columns of appended rows plus their `profile_id`.
fn rows_with_profiles(db: &Database, rows: &AppendedRows, batch: &RecordBatch) -> Result<RecordBatch> {
    let Some(ti) = TableIdentity::of(&rows.meta)? else { return Err(Error::internal("appended rows of a table without identifiers")) };
    let mut indexes: Vec<usize> = ti.slots.iter().map(|s| s.node_index).collect();
    indexes.push(ti.link_index);
    let nodes = batch.project(&indexes)?;
    let pids = {
        let state = db.identity().read();
        crate::identity::resolve::profile_ids(&state, &nodes, 0, ti.slots.len()).map_err(Error::from)?
    };
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for c in rows.meta.columns.iter().filter(|c| !c.hidden) {
        let array = batch
            .column_by_name(&c.name)
            .ok_or_else(|| Error::internal(format!("appended rows lack column '{}'", c.name)))?;
        fields.push(Field::new(&c.name, c.data_type.clone(), true));
        arrays.push(array.clone());
    }
    fields.push(Field::new(PROFILE_ID_COLUMN, DataType::Int64, true));
    arrays.push(Arc::new(pids));
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
}

/// The profiles of rows from `rows_with_profiles`.
fn row_profiles(batch: &RecordBatch) -> impl Iterator<Item = ProfileId> + '_ {
    let ids = batch.column_by_name(PROFILE_ID_COLUMN).and_then(|a| a.as_any().downcast_ref::<Int64Array>());
    ids.into_iter().flat_map(|a| a.iter().flatten()).filter(|p| *p > 0).map(|p| p as u64)
}

/// Maintenance timings on stderr (`TESSERA_TRACE_MAINTENANCE=1`).
fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("TESSERA_TRACE_MAINTENANCE").is_some())
}

/// Work gathered from the notices of one maintenance run.
#[derive(Default)]
struct Pending {
    /// Appended rows by table (`None` batch: too many to keep).
    appended: BTreeMap<String, Vec<(u64, Option<RecordBatch>)>>,
    affected: BTreeSet<ProfileId>,
    merged: BTreeSet<ProfileId>,
    split: BTreeSet<ProfileId>,
}

/// Add a notice's ids (unsorted, with repeats) to a set: sorted and
/// deduplicated first, then built in one pass and merged, which costs far
/// less than an ordered-set insert per id for a load's millions.
fn into_set(mut ids: Vec<ProfileId>, set: &mut BTreeSet<ProfileId>) {
    ids.sort_unstable();
    ids.dedup();
    let mut more: BTreeSet<ProfileId> = ids.into_iter().collect();
    set.append(&mut more);
}

impl Pending {
    fn gather(db: &Database, notices: Vec<CommitNotice>) -> Result<Pending> {
        let mut p = Pending::default();
        for n in notices {
            for rows in &n.appended {
                let batch = match &rows.batch {
                    Some(b) => Some(rows_with_profiles(db, rows, b)?),
                    None => None,
                };
                p.appended.entry(rows.meta.name.clone()).or_default().push((rows.first_row_id, batch));
            }
            into_set(n.affected, &mut p.affected);
            into_set(n.merged, &mut p.merged);
            into_set(n.split, &mut p.split);
        }
        Ok(p)
    }

    /// Profiles whose data changed: affected ones and owners of new rows.
    fn changed(&self) -> BTreeSet<ProfileId> {
        let mut out = self.affected.clone();
        for batches in self.appended.values() {
            for b in batches.iter().filter_map(|(_, b)| b.as_ref()) {
                out.extend(row_profiles(b));
            }
        }
        out
    }

    fn overflowed(&self, table: &str) -> bool {
        self.appended.get(table).is_some_and(|v| v.iter().any(|(_, b)| b.is_none()))
    }
}

impl Profiles {
    /// Cheap check run around statements.
    pub fn needs_maintenance(&self, db: &Database) -> bool {
        if self.is_empty() {
            // Notices are only for us; drop them.
            if db.identity().has_notices() {
                db.identity().take_notices();
            }
            return false;
        }
        db.identity().has_notices()
            || self.clock.now_micros() >= *self.next_tick.lock()
            || self.columns.read().values().any(|c| c.stale)
            || self.segments.read().values().any(|s| s.stale)
            || *self.fingerprints.lock() != fingerprints(&db.store().snapshot())
    }

    /// Bring columns and segments up to date.
    pub async fn maintain(&self, db: &Database, run: Run) -> Result<()> {
        let _running = self.running.lock().await;
        self.maintain_locked(db, run, None).await
    }

    async fn maintain_locked(&self, db: &Database, run: Run, definition: Option<&str>) -> Result<()> {
        let started = std::time::Instant::now();
        let notices = db.identity().take_notices();
        let snap = db.store().snapshot();
        let now = self.clock.now_micros();
        let clock_due = now >= *self.next_tick.lock();
        let pending = Pending::gather(db, notices)?;
        let prints = fingerprints(&snap);
        let tables_changed = *self.fingerprints.lock() != prints;
        let gathered = started.elapsed();
        self.maintain_columns(db, &snap, &pending, run, clock_due).await?;
        let columns_done = started.elapsed();
        let changed = pending.changed();
        let anything = tables_changed || !changed.is_empty();
        let changes = self.maintain_segments(db, &snap, &pending, &changed, run, clock_due, anything, definition).await?;
        let segments_done = started.elapsed();
        let recorded = changes.len();
        self.record(db.store(), changes)?;
        if tracing() {
            eprintln!(
                "tessera: maintenance: gather {:?}, columns {:?}, segments {:?}, record {:?} ({} changed profiles, {recorded} changes)",
                gathered,
                columns_done - gathered,
                segments_done - columns_done,
                started.elapsed() - segments_done,
                changed.len()
            );
        }
        *self.fingerprints.lock() = prints;
        if clock_due {
            *self.next_tick.lock() = now + self.tick.as_micros() as i64;
        }
        Ok(())
    }

    async fn maintain_columns(&self, db: &Database, snap: &Arc<Snapshot>, pending: &Pending, run: Run, clock_due: bool) -> Result<()> {
        let work: Vec<(Compiled, bool)> = self.columns.read().values().map(|c| (c.compiled.clone(), c.stale)).collect();
        for (compiled, stale) in work {
            let full = stale
                || run == Run::Refresh
                || (clock_due && compiled.time_relative())
                || compiled.tables().any(|t| pending.overflowed(t));
            if full {
                self.compute_full(db, snap, &compiled).await?;
                continue;
            }
            let mut recompute: BTreeSet<ProfileId> = pending.affected.clone();
            for (i, source) in compiled.sources.iter().enumerate() {
                let Some(batches) = pending.appended.get(&source.table) else { continue };
                for (first_row_id, batch) in batches {
                    let Some(batch) = batch else { continue };
                    if compiled.combine == Combine::Recompute {
                        recompute.extend(row_profiles(batch));
                        continue;
                    }
                    let cells = self.delta(&compiled, i, batch).await?;
                    self.apply_delta(&compiled, i, *first_row_id, cells, &pending.affected)?;
                }
            }
            if recompute.len() > TARGETED_LIMIT {
                self.compute_full(db, snap, &compiled).await?;
            } else if !recompute.is_empty() {
                let pids: Vec<ProfileId> = recompute.into_iter().collect();
                let as_of = compiled.as_of(snap);
                // A column is an aggregate per profile: over only these
                // profiles' rows it gives their values.
                let batches = self.run_query_on(self.ctx_only(db, snap, &pids), &compiled.sql(&compiled.own_tables())).await?;
                let fresh = columns::cells_of(&batches, &compiled.data_type, &as_of)?;
                let mut guard = self.columns.write();
                if let Some(state) = guard.get_mut(compiled.name()) {
                    for p in &pids {
                        state.cells.remove(p);
                    }
                    state.cells.extend(fresh);
                    state.touched();
                }
            }
        }
        Ok(())
    }

    /// Compute a column over all rows.
    async fn compute_full(&self, db: &Database, snap: &Arc<Snapshot>, compiled: &Compiled) -> Result<()> {
        let mut compiled = compiled.clone();
        if compiled.data_type == DataType::Null {
            // Loaded from storage: the type comes from planning it again.
            let ctx = self.ctx_at(db, snap);
            let plan = plan_query(&ctx, &compiled.sql(&compiled.own_tables())).await?;
            compiled.data_type = plan.schema().field(1).data_type().clone();
        }
        let as_of = compiled.as_of(snap);
        let batches = self.run_query(db, snap, &compiled.sql(&compiled.own_tables())).await?;
        let cells: HashMap<ProfileId, Cell> = columns::cells_of(&batches, &compiled.data_type, &as_of)?.into_iter().collect();
        if let Some(state) = self.columns.write().get_mut(compiled.name()) {
            state.cells = cells;
            state.full_as_of = as_of;
            state.stale = false;
            state.compiled.data_type = compiled.data_type;
            state.touched();
        }
        Ok(())
    }

    /// A column over just-appended rows of source `i`.
    async fn delta(&self, compiled: &Compiled, i: usize, batch: &RecordBatch) -> Result<Vec<(ProfileId, Cell)>> {
        let ctx = self.scratch_ctx();
        // The scratch catalog is shared by every delta (one at a time).
        let _ = ctx.deregister_table(DELTA_TABLE);
        ctx.register_table(DELTA_TABLE, Arc::new(MemTable::try_new(batch.schema(), vec![vec![batch.clone()]])?))?;
        let names: Vec<Option<String>> = (0..compiled.sources.len()).map(|j| (j == i).then(|| DELTA_TABLE.to_string())).collect();
        let plan = plan_query(&ctx, &compiled.sql(&names)).await?;
        let batches = ctx.execute_logical_plan(plan).await?.collect().await?;
        columns::cells_of(&batches, &compiled.data_type, &[])
    }

    /// Fold delta cells of rows from `first_row_id` on into the kept values,
    /// skipping profiles whose value already counts those rows and those
    /// about to be recomputed.
    fn apply_delta(&self, compiled: &Compiled, i: usize, first_row_id: u64, cells: Vec<(ProfileId, Cell)>, recomputed: &BTreeSet<ProfileId>) -> Result<()> {
        let mut guard = self.columns.write();
        let Some(state) = guard.get_mut(compiled.name()) else { return Ok(()) };
        if first_row_id < state.full_as_of.get(i).copied().unwrap_or(0) {
            // The last full computation already saw these rows.
            return Ok(());
        }
        state.touched();
        let full_as_of = state.full_as_of.clone();
        for (pid, mut cell) in cells {
            if recomputed.contains(&pid) {
                continue;
            }
            match state.cells.get_mut(&pid) {
                Some(kept) => {
                    if first_row_id < kept.as_of.get(i).copied().unwrap_or(0) {
                        continue;
                    }
                    columns::combine(compiled.combine, kept, cell)?;
                }
                None => {
                    cell.as_of = full_as_of.clone();
                    state.cells.insert(pid, cell);
                }
            }
        }
        Ok(())
    }

    /// Whether a segment depends on the clock now.
    fn time_relative(&self, analysis: &Analysis) -> bool {
        analysis.reads_clock
            || (analysis.relations.contains("profiles") && self.columns.read().values().any(|c| c.compiled.time_relative()))
    }

    #[allow(clippy::too_many_arguments)]
    async fn maintain_segments(
        &self,
        db: &Database,
        snap: &Arc<Snapshot>,
        pending: &Pending,
        changed: &BTreeSet<ProfileId>,
        run: Run,
        clock_due: bool,
        anything: bool,
        definition: Option<&str>,
    ) -> Result<Vec<SegmentChange>> {
        let order = segments::evaluation_order(&self.segments.read());
        let mut all_changes = Vec::new();
        // Profiles whose membership changed in a segment, for the
        // segments that read it.
        let mut moved: BTreeMap<String, BTreeSet<ProfileId>> = BTreeMap::new();
        let now = self.clock.now_micros();
        for name in order {
            let Some((def, analysis, stale)) = self.segments.read().get(&name).map(|s| (s.def.clone(), s.analysis.clone(), s.stale)) else {
                continue;
            };
            let mut targets = changed.clone();
            for dep in &analysis.segments {
                if let Some(m) = moved.get(dep) {
                    targets.extend(m.iter().copied());
                }
            }
            let deps_moved = analysis.segments.iter().any(|d| moved.get(d).is_some_and(|m| !m.is_empty()));
            let (mode, cause) = if definition == Some(name.as_str()) {
                (Some(None), Cause::Definition)
            } else if stale || run == Run::Refresh {
                (Some(None), if run == Run::Refresh { Cause::Refresh } else { Cause::Data })
            } else if clock_due && self.time_relative(&analysis) {
                (Some(None), Cause::Clock)
            } else if analysis.per_profile && targets.len() <= TARGETED_LIMIT {
                (if targets.is_empty() { None } else { Some(Some(targets.iter().copied().collect::<Vec<_>>())) }, Cause::Data)
            } else if anything || deps_moved {
                (Some(None), Cause::Data)
            } else {
                (None, Cause::Data)
            };
            let Some(only) = mode else { continue };
            let evaluating = std::time::Instant::now();
            let result = self.evaluate(db, snap, &def.query, only.as_deref()).await;
            if tracing() {
                eprintln!("tessera: segment {name}: {:?} ({} profiles)", evaluating.elapsed(), only.as_ref().map(|o| o.len()).unwrap_or(0));
            }
            let found = match result {
                Ok(found) => {
                    self.errors.lock().remove(&name);
                    found
                }
                Err(e) => {
                    // A segment that cannot be evaluated keeps its members
                    // and says why in SHOW SEGMENTS; others go on.
                    self.errors.lock().insert(name.clone(), e.to_string());
                    continue;
                }
            };
            let mut segs = self.segments.write();
            let Some(state) = segs.get_mut(&name) else { continue };
            let old = state.members.clone();
            let mut changes = Vec::new();
            let cause_of = |pid: u64| {
                if cause != Cause::Data {
                    cause
                } else if pending.merged.contains(&pid) {
                    Cause::Merge
                } else if pending.split.contains(&pid) {
                    Cause::Split
                } else {
                    Cause::Data
                }
            };
            let (entered, exited): (RoaringTreemap, RoaringTreemap) = match &only {
                None => (&found - old.as_ref(), old.as_ref() - &found),
                Some(pids) => {
                    let scope: RoaringTreemap = pids.iter().copied().collect();
                    let before = old.as_ref() & &scope;
                    (&found - &before, &before - &found)
                }
            };
            for pid in entered.iter() {
                changes.push(SegmentChange { segment: name.clone(), profile_id: pid as i64, change: Change::Entered, at: now, cause: cause_of(pid) });
            }
            for pid in exited.iter() {
                changes.push(SegmentChange { segment: name.clone(), profile_id: pid as i64, change: Change::Exited, at: now, cause: cause_of(pid) });
            }
            moved.insert(name.clone(), entered.iter().chain(exited.iter()).collect());
            state.stale = false;
            if only.is_none() {
                state.evaluated_at = now;
            }
            self.publish(&mut segs, changes.clone());
            all_changes.extend(changes);
        }
        Ok(all_changes)
    }

    /// Members of a segment's query (among `only`, when given).
    async fn evaluate(&self, db: &Database, snap: &Arc<Snapshot>, query: &str, only: Option<&[ProfileId]>) -> Result<RoaringTreemap> {
        let sql = format!("SELECT DISTINCT {PROFILE_ID_COLUMN} FROM ({query}) AS segment_query WHERE {PROFILE_ID_COLUMN} IS NOT NULL");
        let ctx = match only {
            Some(pids) => self.ctx_only(db, snap, pids),
            None => self.ctx_at(db, snap),
        };
        segments::members_of(&self.run_query_on(ctx, &sql).await?)
    }

    /// Append changes to `segment_changes` (one transaction).
    fn record(&self, store: &Store, changes: Vec<SegmentChange>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut txn = store.begin_write()?;
        let batch = segments::changes_batch(txn.snapshot(), &changes)?;
        txn.append(CHANGES_TABLE, batch)?;
        crate::identity::commit(store, txn, None)?;
        Ok(())
    }

    // ----- statements ---------------------------------------------------------

    fn reserved_profile_columns(&self, db: &Database, snap: &Snapshot) -> BTreeSet<String> {
        let mut names: BTreeSet<String> =
            [PROFILE_ID_COLUMN, "created_at", "last_seen", "identifiers"].iter().map(|s| s.to_string()).collect();
        for t in db.identity().read().types.keys() {
            names.insert(format!("{t}_count"));
        }
        for t in snap.tables() {
            names.insert(format!("{}_rows", t.name()));
        }
        names
    }

    /// `CREATE TRAIT` / `CREATE PROFILE ATTRIBUTE`.
    pub async fn create_column(&self, db: &Database, def: ProfileColumnDef) -> Result<()> {
        let _running = self.running.lock().await;
        let snap = db.store().snapshot();
        let name = def.name.clone();
        let what = match def.kind {
            ProfileColumnKind::Trait => "trait",
            ProfileColumnKind::Attribute => "profile attribute",
        };
        if self.reserved_profile_columns(db, &snap).contains(&name) {
            return Err(Error::user(format!("'{name}' is already a column of profiles; choose another name for the {what}")));
        }
        if let Some(existing) = self.columns.read().get(&name) {
            if !def.or_replace {
                return Err(Error::user(format!("profile column '{name}' already exists")));
            }
            if existing.compiled.def.kind != def.kind {
                return Err(Error::user(format!("'{name}' is a {}, not a {what}", match existing.compiled.def.kind {
                    ProfileColumnKind::Trait => "trait",
                    ProfileColumnKind::Attribute => "profile attribute",
                })));
            }
        }
        if self.columns.read().len() >= super::MAX_PROFILE_COLUMNS && !self.columns.read().contains_key(&name) {
            return Err(Error::ResourcesExhausted(format!("at most {} traits and attributes may be defined", super::MAX_PROFILE_COLUMNS)));
        }
        let mut compiled = Compiled::new(def.clone(), &snap)?;
        // Plan it once: errors in the expressions show now, and the plan
        // tells the value's type.
        let ctx = self.ctx_at(db, &snap);
        let plan = plan_query(&ctx, &compiled.sql(&compiled.own_tables()))
            .await
            .map_err(|e| Error::user(format!("{what} '{name}' cannot be computed: {e}")))?;
        compiled.data_type = plan.schema().field(1).data_type().clone();
        let stored = ProfileColumnDef { or_replace: false, ..def };
        let json = serde_json::to_string(&stored).map_err(|e| Error::internal(e.to_string()))?;
        let previous = self.columns.write().insert(name.clone(), ColumnState::new(compiled.clone()));
        if let Err(e) = self.compute_full(db, &snap, &compiled).await {
            match previous {
                Some(p) => self.columns.write().insert(name.clone(), p),
                None => self.columns.write().remove(&name),
            };
            return Err(Error::user(format!("{what} '{name}' cannot be computed: {e}")));
        }
        if let Err(e) = db.store().set_metadata(&format!("{COLUMN_KEY_PREFIX}{name}"), Some(json)) {
            match previous {
                Some(p) => self.columns.write().insert(name.clone(), p),
                None => self.columns.write().remove(&name),
            };
            return Err(e.into());
        }
        // A replaced column may change segments that read profiles.
        if previous.is_some() {
            for s in self.segments.write().values_mut() {
                if s.analysis.relations.contains("profiles") {
                    s.stale = true;
                }
            }
            self.maintain_locked(db, Run::Pending, None).await?;
        }
        Ok(())
    }

    /// Segments whose definition mentions a word (a column or relation).
    fn segments_mentioning(&self, word: &str) -> Vec<String> {
        let word = word.to_ascii_lowercase();
        self.segments
            .read()
            .iter()
            .filter(|(_, s)| {
                s.def
                    .query
                    .to_ascii_lowercase()
                    .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .any(|w| w == word)
            })
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// `DROP TRAIT` / `DROP PROFILE ATTRIBUTE`.
    pub async fn drop_column(&self, db: &Database, name: &str, if_exists: bool, kind: ProfileColumnKind) -> Result<()> {
        let _running = self.running.lock().await;
        let found = self.columns.read().get(name).map(|c| c.compiled.def.kind);
        match found {
            None if if_exists => return Ok(()),
            None => return Err(Error::user(format!("profile column '{name}' does not exist"))),
            Some(k) if k != kind => return Err(Error::user(format!("'{name}' is not a {}", if kind == ProfileColumnKind::Trait { "trait" } else { "profile attribute" }))),
            Some(_) => {}
        }
        let users = self.segments_mentioning(name);
        if !users.is_empty() {
            return Err(Error::user(format!("cannot drop '{name}': segment {} uses it", users.join(", "))));
        }
        db.store().set_metadata(&format!("{COLUMN_KEY_PREFIX}{name}"), None)?;
        self.columns.write().remove(name);
        Ok(())
    }

    /// Traits, attributes or segments reading a table (to refuse dropping it).
    pub fn users_of_relation(&self, relation: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .columns
            .read()
            .iter()
            .filter(|(_, c)| c.compiled.tables().any(|t| t == relation))
            .map(|(n, _)| n.clone())
            .collect();
        out.extend(self.segments.read().iter().filter(|(_, s)| s.analysis.relations.contains(relation)).map(|(n, _)| n.clone()));
        out
    }

    /// `CREATE SEGMENT`.
    pub async fn create_segment(&self, db: &Database, c: CreateSegment) -> Result<()> {
        let _running = self.running.lock().await;
        let snap = db.store().snapshot();
        let name = c.name.clone();
        if name.is_empty() || name.len() > segments::MAX_NAME_BYTES {
            return Err(Error::user(format!("segment name '{name}' must be 1 to {} bytes", segments::MAX_NAME_BYTES)));
        }
        let exists = self.segments.read().contains_key(&name);
        if exists && c.if_not_exists {
            return Ok(());
        }
        if exists && !c.or_replace {
            return Err(Error::user(format!("segment '{name}' already exists")));
        }
        if !exists && self.segments.read().len() >= segments::MAX_SEGMENTS {
            return Err(Error::ResourcesExhausted(format!("at most {} segments may be defined", segments::MAX_SEGMENTS)));
        }
        let analysis = segments::analyze(&c.query, &snap)?;
        for dep in &analysis.segments {
            if dep == &name || segments::reaches(&self.segments.read(), &BTreeSet::from([dep.clone()]), &name) {
                return Err(Error::user(format!("segment '{name}' would depend on itself (through in_segment(..., '{dep}'))")));
            }
            if !self.segments.read().contains_key(dep) {
                return Err(Error::user(format!("segment '{name}' reads segment '{dep}', which does not exist")));
            }
        }
        // The query must plan and return profile ids.
        let ctx = self.ctx_at(db, &snap);
        let plan = plan_query(&ctx, &c.query).await.map_err(|e| Error::user(format!("segment '{name}': {e}")))?;
        match plan.schema().fields().iter().find(|f| f.name() == PROFILE_ID_COLUMN) {
            Some(f) if f.data_type().is_integer() => {}
            Some(f) => {
                return Err(Error::user(format!(
                    "segment '{name}': the query's profile_id column is {}, not an integer",
                    f.data_type()
                )))
            }
            None => {
                return Err(Error::user(format!(
                    "segment '{name}': the query must return a profile_id column (it returns {})",
                    plan.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", ")
                )))
            }
        }
        if self.ensure_changes_table(db.store()).is_err() {
            return Err(Error::internal("could not create the segment_changes table"));
        }
        let def = SegmentDef { name: name.clone(), query: c.query.clone(), created_at: self.clock.now_micros() };
        let json = serde_json::to_string(&def).map_err(|e| Error::internal(e.to_string()))?;
        db.store().set_metadata(&format!("{SEGMENT_KEY_PREFIX}{name}"), Some(json))?;
        {
            let mut segs = self.segments.write();
            match segs.get_mut(&name) {
                Some(s) => {
                    s.def = def;
                    s.analysis = analysis;
                }
                None => {
                    segs.insert(
                        name.clone(),
                        SegmentState { def, analysis, members: Arc::new(RoaringTreemap::new()), stale: false, evaluated_at: 0 },
                    );
                }
            }
            // Segments reading this one follow its new members.
            for s in segs.values_mut() {
                if s.analysis.segments.contains(&name) {
                    s.stale = true;
                }
            }
        }
        self.maintain_locked(db, Run::Pending, Some(&name)).await?;
        if let Some(e) = self.errors.lock().get(&name) {
            return Err(Error::user(format!("segment '{name}' was created but cannot be evaluated: {e}")));
        }
        Ok(())
    }

    fn ensure_changes_table(&self, store: &Store) -> Result<()> {
        if store.snapshot().table(CHANGES_TABLE).is_none() {
            store.create_table(CHANGES_TABLE, segments::change_columns(), BTreeMap::new())?;
        }
        Ok(())
    }

    /// `DROP SEGMENT`: its members exit (cause `definition`).
    pub async fn drop_segment(&self, db: &Database, name: &str, if_exists: bool) -> Result<()> {
        let _running = self.running.lock().await;
        if !self.segments.read().contains_key(name) {
            return if if_exists { Ok(()) } else { Err(Error::user(format!("segment '{name}' does not exist"))) };
        }
        let readers: Vec<String> =
            self.segments.read().iter().filter(|(_, s)| s.analysis.segments.contains(name)).map(|(n, _)| n.clone()).collect();
        if !readers.is_empty() {
            return Err(Error::user(format!("cannot drop segment '{name}': segment {} reads it", readers.join(", "))));
        }
        let now = self.clock.now_micros();
        let members = self.members(name)?;
        let mut exits: Vec<SegmentChange> = members
            .iter()
            .map(|pid| SegmentChange { segment: name.to_string(), profile_id: pid as i64, change: Change::Exited, at: now, cause: Cause::Definition })
            .collect();
        self.record(db.store(), exits.clone())?;
        db.store().set_metadata(&format!("{SEGMENT_KEY_PREFIX}{name}"), None)?;
        let mut segs = self.segments.write();
        // The marker (profile 0) tells subscribers the segment is gone.
        exits.push(SegmentChange { segment: name.to_string(), profile_id: 0, change: Change::Exited, at: now, cause: Cause::Definition });
        self.publish(&mut segs, exits);
        segs.remove(name);
        Ok(())
    }

    /// `REFRESH SEGMENT name` / `REFRESH SEGMENTS`.
    pub async fn refresh(&self, db: &Database, name: Option<&str>) -> Result<()> {
        let _running = self.running.lock().await;
        match name {
            None => self.maintain_locked(db, Run::Refresh, None).await,
            Some(n) => {
                match self.segments.write().get_mut(n) {
                    Some(s) => s.stale = true,
                    None => return Err(Error::user(format!("segment '{n}' does not exist"))),
                }
                self.maintain_locked(db, Run::Pending, None).await?;
                match self.errors.lock().get(n) {
                    Some(e) => Err(Error::user(format!("segment '{n}' cannot be evaluated: {e}"))),
                    None => Ok(()),
                }
            }
        }
    }

    /// `SHOW SEGMENTS`.
    pub fn show_segments(&self) -> Result<RecordBatch> {
        let segs = self.segments.read();
        let errors = self.errors.lock();
        let names: Vec<&String> = segs.keys().collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("members", DataType::UInt64, false),
            Field::new("incremental", DataType::Boolean, false),
            Field::new("time_relative", DataType::Boolean, false),
            Field::new("created_at", crate::identity::timestamp_type(), false),
            Field::new("evaluated_at", crate::identity::timestamp_type(), true),
            Field::new("definition", DataType::Utf8, false),
            Field::new("error", DataType::Utf8, true),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(names.iter().map(|n| n.as_str()))),
            Arc::new(UInt64Array::from_iter_values(segs.values().map(|s| s.members.len()))),
            Arc::new(BooleanArray::from(segs.values().map(|s| s.analysis.per_profile).collect::<Vec<_>>())),
            Arc::new(BooleanArray::from(segs.values().map(|s| self.time_relative(&s.analysis)).collect::<Vec<_>>())),
            Arc::new(TimestampMicrosecondArray::from_iter_values(segs.values().map(|s| s.def.created_at))),
            Arc::new(TimestampMicrosecondArray::from(segs.values().map(|s| (s.evaluated_at > 0).then_some(s.evaluated_at)).collect::<Vec<_>>())),
            Arc::new(StringArray::from_iter_values(segs.values().map(|s| s.def.query.as_str()))),
            Arc::new(StringArray::from(names.iter().map(|n| errors.get(*n).cloned()).collect::<Vec<_>>())),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }

    /// `SHOW TRAITS`: traits and attributes.
    pub fn show_traits(&self) -> Result<RecordBatch> {
        let cols = self.columns.read();
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("function", DataType::Utf8, false),
            Field::new("sources", DataType::Utf8, false),
            Field::new("filter", DataType::Utf8, true),
            Field::new("window", DataType::Utf8, true),
            Field::new("data_type", DataType::Utf8, false),
            Field::new("incremental", DataType::Boolean, false),
            Field::new("profiles", DataType::UInt64, false),
        ]));
        let defs: Vec<&ColumnState> = cols.values().collect();
        let sources = |c: &ColumnState| -> String {
            let d = &c.compiled.def;
            match d.kind {
                ProfileColumnKind::Trait => d.sources[0].table.clone(),
                ProfileColumnKind::Attribute => d.sources.iter().map(|s| format!("{}.{}", s.table, s.column)).collect::<Vec<_>>().join(", "),
            }
        };
        let function = |c: &ColumnState| -> String {
            let d = &c.compiled.def;
            match (&d.kind, &d.argument) {
                (ProfileColumnKind::Trait, Some(a)) if d.function == "unique_list" => format!("unique_list({a}, {})", d.cap.unwrap_or(0)),
                (ProfileColumnKind::Trait, Some(a)) if d.function == "count_distinct" => format!("count(DISTINCT {a})"),
                (ProfileColumnKind::Trait, Some(a)) => format!("{}({a})", d.function),
                (ProfileColumnKind::Trait, None) => "count(*)".to_string(),
                (ProfileColumnKind::Attribute, _) => d.function.clone(),
            }
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(defs.iter().map(|c| c.compiled.def.name.as_str()))),
            Arc::new(StringArray::from_iter_values(defs.iter().map(|c| match c.compiled.def.kind {
                ProfileColumnKind::Trait => "trait",
                ProfileColumnKind::Attribute => "attribute",
            }))),
            Arc::new(StringArray::from_iter_values(defs.iter().map(|c| function(c)))),
            Arc::new(StringArray::from_iter_values(defs.iter().map(|c| sources(c)))),
            Arc::new(StringArray::from(defs.iter().map(|c| c.compiled.def.filter.clone()).collect::<Vec<_>>())),
            Arc::new(StringArray::from(defs.iter().map(|c| c.compiled.def.window.clone()).collect::<Vec<_>>())),
            Arc::new(StringArray::from_iter_values(defs.iter().map(|c| c.compiled.data_type.to_string()))),
            Arc::new(BooleanArray::from(defs.iter().map(|c| c.compiled.combine != Combine::Recompute).collect::<Vec<_>>())),
            Arc::new(UInt64Array::from_iter_values(defs.iter().map(|c| c.cells.len() as u64))),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

