//! `Database` (one open data directory, or memory) and `Session` (one
//! user's sequence of statements with its own settings).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, CatalogProviderList, MemoryCatalogProvider, MemoryCatalogProviderList};
use datafusion::datasource::view::ViewTable;
use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{CreateMemoryTable, DdlStatement, DmlStatement, LogicalPlan, WriteOp};
use datafusion::prelude::SessionConfig;
use datafusion::common::{ParamValues, TableReference};
use futures::{FutureExt, TryStreamExt};
use tessera_sql::{DFStatement, Statement};
use tessera_storage::{ColumnDef, Store, StoreOptions};

use crate::catalog::{PlannedView, TesseraSchema, ViewDef, VIEW_KEY_PREFIX};
use crate::identity::system::{LinkPath, ProfileLookup};
use crate::identity::Identity;
use crate::profiles::{MaintenanceRun, Profiles, SegmentSubscription};
use crate::error::{Error, Result};
use crate::ingest;
use crate::prepared::{optimization_reusable, OptimizedQuery, Prepared};
use crate::provider::PinnedSnapshot;

/// The catalog and schema every table lives in.
pub const CATALOG: &str = "tessera";
pub const SCHEMA: &str = "public";

/// How to open a database.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub storage: StoreOptions,
    /// Parallelism of query execution; 0 means one per CPU.
    pub target_partitions: usize,
    /// The clock segments, trait windows and `now()` read (`None`: the
    /// machine's). Tests inject a [`crate::ManualClock`].
    pub clock: Option<Arc<dyn crate::Clock>>,
    /// How often conditions relative to now are re-evaluated (`None`:
    /// every minute).
    pub refresh_interval: Option<std::time::Duration>,
}

/// Default interval of the clock tick.
pub const DEFAULT_REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

struct Inner {
    store: Store,
    identity: Arc<Identity>,
    profiles: Arc<Profiles>,
    /// The clock-tick task runs (at most one).
    ticking: std::sync::atomic::AtomicBool,
    /// A session state built once for internal queries (building one
    /// costs milliseconds); kept here, not in `Profiles`, because it
    /// refers to `Profiles` through the catalog.
    internal_state: parking_lot::Mutex<Option<SessionState>>,
    schema: Arc<TesseraSchema>,
    catalogs: Arc<dyn CatalogProviderList>,
    options: Options,
    /// Catalog changes (DDL) run one at a time.
    ddl: tokio::sync::Mutex<()>,
    template: parking_lot::RwLock<Option<SessionState>>,
}

/// An open Tessera database. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database").field("store", &self.inner.store).finish()
    }
}

impl Database {
    /// Open (creating if needed) the database in directory `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Database> {
        Self::open_with(path, Options::default())
    }

    pub fn open_with(path: impl AsRef<Path>, options: Options) -> Result<Database> {
        let store = Store::open(path.as_ref(), options.storage.clone())?;
        Self::with_store(store, options)
    }

    /// A database that lives in memory only.
    pub fn in_memory() -> Database {
        Self::in_memory_with(Options::default())
    }

    pub fn in_memory_with(options: Options) -> Database {
        let store = Store::in_memory(options.storage.clone());
        // Building the catalog of an empty in-memory store cannot fail.
        match Self::with_store(store, options) {
            Ok(db) => db,
            Err(e) => panic!("creating an empty in-memory database failed: {e}"),
        }
    }

    fn with_store(store: Store, options: Options) -> Result<Database> {
        let identity = Arc::new(Identity::open(store.clone())?);
        let tick = options.refresh_interval.unwrap_or(DEFAULT_REFRESH_INTERVAL);
        let profiles = Arc::new(Profiles::open(&store.snapshot(), options.clock.clone(), tick)?);
        let schema = Arc::new(TesseraSchema::new(store.clone(), identity.clone(), profiles.clone()));
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema(SCHEMA, schema.clone())?;
        let catalogs = MemoryCatalogProviderList::new();
        catalogs.register_catalog(CATALOG.to_string(), Arc::new(catalog));
        let db = Database {
            inner: Arc::new(Inner {
                store,
                identity,
                profiles,
                ticking: std::sync::atomic::AtomicBool::new(false),
                internal_state: parking_lot::Mutex::new(None),
                schema,
                catalogs: Arc::new(catalogs),
                options,
                ddl: tokio::sync::Mutex::new(()),
                template: parking_lot::RwLock::new(None),
            }),
        };
        db.plan_views_blocking()?;
        if tokio::runtime::Handle::try_current().is_ok() {
            db.spawn_clock();
        }
        Ok(db)
    }

    fn table_meta(&self, table: &str) -> Result<Arc<tessera_storage::TableMeta>> {
        self.inner
            .store
            .snapshot()
            .table(table)
            .map(|t| t.meta.clone())
            .ok_or_else(|| Error::user(format!("table '{table}' does not exist")))
    }

    /// A clone of the state internal queries start from.
    pub(crate) fn cached_session_state(&self) -> SessionState {
        self.inner.internal_state.lock().get_or_insert_with(|| self.new_state()).clone()
    }

    pub(crate) fn identity(&self) -> &Arc<Identity> {
        &self.inner.identity
    }

    /// Start the task that re-evaluates time-relative traits and segments
    /// on the clock (once per database; needs a Tokio runtime; started by
    /// `open` when called inside one). It stops when the database is
    /// dropped.
    pub fn spawn_clock(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.ticking.swap(true, Ordering::SeqCst) {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            self.inner.ticking.store(false, Ordering::SeqCst);
            return;
        };
        let weak = Arc::downgrade(&self.inner);
        let tick = self.inner.profiles.tick.min(std::time::Duration::from_secs(1));
        handle.spawn(async move {
            loop {
                tokio::time::sleep(tick).await;
                let Some(inner) = weak.upgrade() else { return };
                let db = Database { inner };
                db.maintain_quietly().await;
            }
        });
    }

    /// Bring traits, attributes and segments up to date now (they are
    /// also kept current after every statement and on the clock).
    pub async fn maintain(&self) -> Result<()> {
        self.inner.profiles.maintain(self, MaintenanceRun::Pending).await
    }

    /// Maintenance around statements: its errors do not fail the user's
    /// statement (a segment that cannot be evaluated reports why in SHOW
    /// SEGMENTS).
    async fn maintain_quietly(&self) {
        if self.inner.profiles.needs_maintenance(self) {
            if let Err(e) = self.maintain().await {
                eprintln!("tessera: keeping traits and segments current failed: {e}");
            }
        }
    }

    /// A live feed of a segment's entries and exits; with `snapshot`, it
    /// starts with the current members (as entries).
    pub fn subscribe_segment(&self, name: &str, snapshot: bool) -> Result<SegmentSubscription> {
        self.inner.profiles.subscribe(name, snapshot)
    }

    /// The current members of a segment, in ascending order.
    pub fn segment_members(&self, name: &str) -> Result<Vec<i64>> {
        Ok(self.inner.profiles.members(name)?.iter().map(|p| p as i64).collect())
    }

    /// The clock this database reads.
    pub fn clock(&self) -> Arc<dyn crate::Clock> {
        self.inner.profiles.clock.clone()
    }

    /// The storage layer underneath, for advanced use.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The database directory (`None` in memory).
    pub fn dir(&self) -> Option<std::path::PathBuf> {
        self.inner.store.dir().map(std::path::Path::to_path_buf)
    }

    /// A new session: its own settings, sharing the database.
    pub fn session(&self) -> Session {
        let state = match self.inner.template.read().as_ref() {
            Some(t) => t.clone(),
            None => self.new_state(),
        };
        Session { db: self.clone(), ctx: SessionContext::new_with_state(state) }
    }

    /// Make every later session start from `state` (for example one with
    /// extra functions or catalogs registered). It must have come from
    /// [`Database::new_session_state`] of this database.
    pub fn set_session_template(&self, state: SessionState) {
        *self.inner.template.write() = Some(state);
    }

    /// A fresh session state over this database's catalog.
    pub fn new_session_state(&self) -> SessionState {
        self.new_state()
    }

    fn new_state(&self) -> SessionState {
        let partitions = match self.inner.options.target_partitions {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        };
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, SCHEMA)
            .with_create_default_catalog_and_schema(false)
            .with_target_partitions(partitions);
        // Scans report an upper bound on their rows (see ScanExec): let a
        // small one run on its own thread instead of being spread over
        // all of them.
        config.options_mut().execution.use_row_number_estimates_to_optimize_partitioning = true;
        let mut state = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_catalog_list(self.inner.catalogs.clone())
            .build();
        let lookup = ProfileLookup {
            store: self.inner.store.clone(),
            state: self.inner.identity.state().clone(),
            profiles: self.inner.profiles.clone(),
        };
        state.register_udtf("profile_lookup", Arc::new(lookup));
        let path = LinkPath { store: self.inner.store.clone(), state: self.inner.identity.state().clone() };
        state.register_udtf("profile_link_path", Arc::new(path));
        // Registering a scalar function on a fresh state cannot clash.
        let _ = datafusion::execution::FunctionRegistry::register_udf(&mut state, Arc::new(crate::identity::system::profile_of_udf(self.inner.identity.state().clone())));
        let _ = datafusion::execution::FunctionRegistry::register_udf(&mut state, Arc::new(crate::profiles::udf::in_segment_udf(self.inner.profiles.clone())));
        if self.inner.profiles.custom_clock {
            let _ = datafusion::execution::FunctionRegistry::register_udf(&mut state, Arc::new(crate::profiles::udf::clock_now_udf(self.inner.profiles.clock.clone())));
        }
        state
    }

    /// Append record batches to a table in one transaction. Columns are
    /// matched by name (every visible column must be present) and cast
    /// strictly to the table's types; returns the number of rows.
    pub async fn append(&self, table: &str, batches: Vec<RecordBatch>) -> Result<u64> {
        let meta = self.table_meta(table)?;
        let mut full = Vec::with_capacity(batches.len());
        for b in &batches {
            full.push(ingest::conform_by_name(&meta, b)?);
        }
        ingest::commit_batches(self.inner.store.clone(), self.inner.identity.clone(), meta, full).await
    }

    /// Write buffered rows to segment files now.
    pub async fn checkpoint(&self) -> Result<()> {
        let store = self.inner.store.clone();
        let identity = self.inner.identity.clone();
        blocking(move || {
            store.flush()?;
            identity.save_dictionary()
        })
        .await
    }

    /// Rewrite a table's segments without deleted rows (all tables when
    /// `None`); afterwards deleted rows' bytes are gone from disk.
    pub async fn vacuum(&self, table: Option<&str>) -> Result<()> {
        let store = self.inner.store.clone();
        let names: Vec<String> = match table {
            Some(t) => vec![t.to_string()],
            None => store.snapshot().tables().map(|t| t.name().to_string()).collect(),
        };
        blocking(move || {
            for n in names {
                store.compact(&n)?;
            }
            Ok(())
        })
        .await
    }

    /// Flush and release the directory. Other clones become unusable for
    /// writes only once all are dropped.
    pub async fn close(self) -> Result<()> {
        let store = self.inner.store.clone();
        let identity = self.inner.identity.clone();
        blocking(move || {
            identity.save_dictionary()?;
            Ok(store.close()?)
        })
        .await
    }

    /// (Re)plan every stored view in dependency order.
    fn plan_views_blocking(&self) -> Result<()> {
        let defs = self.inner.schema.stored_views()?;
        let state = self.new_state();
        let planned = futures::executor::block_on(plan_views(&state, &self.inner.schema, defs));
        self.inner.schema.set_planned_views(planned);
        Ok(())
    }

    async fn replan_views(&self) -> Result<()> {
        let defs = self.inner.schema.stored_views()?;
        let state = self.new_state();
        let planned = plan_views(&state, &self.inner.schema, defs).await;
        self.inner.schema.set_planned_views(planned);
        Ok(())
    }
}

/// Plan views so that each is planned after the views it names.
async fn plan_views(
    state: &SessionState,
    schema: &TesseraSchema,
    defs: BTreeMap<String, ViewDef>,
) -> BTreeMap<String, PlannedView> {
    let mut done: BTreeMap<String, PlannedView> = BTreeMap::new();
    let mut left = defs;
    while !left.is_empty() {
        let ready: Vec<String> = left
            .iter()
            .filter(|(_, d)| d.depends_on.iter().all(|dep| !left.contains_key(dep)))
            .map(|(n, _)| n.clone())
            .collect();
        // A cycle cannot be created, but a damaged catalog could hold one.
        let batch = if ready.is_empty() { left.keys().cloned().collect() } else { ready };
        for name in batch {
            let Some(def) = left.remove(&name) else { continue };
            let plan = plan_view(state, &def.sql).await.map_err(|e| e.to_string());
            done.insert(name.clone(), PlannedView { def, plan });
            schema.set_planned_views(done.clone());
        }
    }
    done
}

async fn plan_view(state: &SessionState, sql: &str) -> Result<Arc<ViewTable>> {
    let mut statements = tessera_sql::parse(sql)?;
    let Some(Statement::DataFusion(stmt)) = statements.pop() else {
        return Err(Error::internal(format!("stored view definition is not CREATE VIEW: {sql}")));
    };
    match state.statement_to_plan(*stmt).await? {
        LogicalPlan::Ddl(DdlStatement::CreateView(v)) => Ok(Arc::new(ViewTable::new((*v.input).clone(), v.definition))),
        other => Err(Error::internal(format!("stored view definition planned as {}", other.display()))),
    }
}

/// Run blocking storage work off the async executor threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("a storage task failed: {e}")))?
}

/// The result of one statement.
pub enum Output {
    /// Rows, streamed.
    Rows(SendableRecordBatchStream),
    /// A statement that changed rows: its command tag and the row count.
    Affected { command: &'static str, rows: u64 },
    /// A statement without rows, by its command tag.
    Done { command: &'static str },
    /// `SUBSCRIBE TO SEGMENT`: a feed that ends only when the segment is
    /// dropped.
    Subscription(SegmentSubscription),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Rows(s) => write!(f, "Rows({:?})", s.schema()),
            Output::Affected { command, rows } => write!(f, "{command} {rows}"),
            Output::Done { command } => write!(f, "{command}"),
            Output::Subscription(s) => write!(f, "Subscription({})", s.segment()),
        }
    }
}

impl Output {
    /// Collect rows (an affected count becomes one row with `count`).
    pub async fn collect(self) -> Result<Vec<RecordBatch>> {
        match self {
            Output::Rows(stream) => Ok(stream.try_collect().await?),
            Output::Affected { rows, .. } => Ok(vec![count_batch(rows)?]),
            Output::Done { .. } => Ok(Vec::new()),
            Output::Subscription(s) => Err(Error::user(format!(
                "SUBSCRIBE TO SEGMENT {} streams until the segment is dropped; read it with Session::execute, not collect",
                s.segment()
            ))),
        }
    }
}

/// A statement's result rows from one batch.
fn rows_output(batch: RecordBatch) -> Output {
    let schema = batch.schema();
    let stream = futures::stream::iter(vec![Ok(batch)]);
    Output::Rows(Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, stream)))
}

fn count_batch(rows: u64) -> Result<RecordBatch> {
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![arrow::datatypes::Field::new(
        "count",
        arrow::datatypes::DataType::UInt64,
        false,
    )]));
    Ok(RecordBatch::try_new(schema, vec![Arc::new(arrow::array::UInt64Array::from(vec![rows]))])?)
}

/// One user's sequence of statements. Statements in a session run one
/// after another; each reads one consistent snapshot.
pub struct Session {
    db: Database,
    ctx: SessionContext,
}

impl Session {
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// The DataFusion context, for registering functions and the like.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Run every statement in `sql`; return the rows of the last one
    /// (for INSERT, UPDATE and DELETE: one row with the count).
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let mut last = Vec::new();
        for statement in tessera_sql::parse(sql)? {
            last = self.execute(statement).await?.collect().await?;
        }
        Ok(last)
    }

    /// Run exactly one statement and stream its rows.
    pub async fn sql_stream(&self, sql: &str) -> Result<SendableRecordBatchStream> {
        let mut statements = tessera_sql::parse(sql)?;
        if statements.len() != 1 {
            return Err(Error::user(format!("expected exactly one statement, got {}", statements.len())));
        }
        match statements.pop() {
            Some(s) => match self.execute(s).await? {
                Output::Rows(stream) => Ok(stream),
                other => {
                    let batches = other.collect().await?;
                    let schema: SchemaRef = batches
                        .first()
                        .map(|b| b.schema())
                        .unwrap_or_else(|| Arc::new(arrow::datatypes::Schema::empty()));
                    let stream = futures::stream::iter(batches.into_iter().map(Ok));
                    Ok(Box::pin(datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, stream)))
                }
            },
            None => Err(Error::internal("no statement")),
        }
    }

    /// Run one parsed statement. Traits and segments are brought up to
    /// date before it (so it reads every earlier commit's effect on them)
    /// and after it (so its own commit's effect is visible at once).
    pub async fn execute(&self, statement: Statement) -> Result<Output> {
        self.db.maintain_quietly().await;
        let output = self.execute_statement(statement).await;
        self.db.maintain_quietly().await;
        output
    }

    async fn execute_statement(&self, statement: Statement) -> Result<Output> {
        self.pin_snapshot();
        let profiles = self.db.inner.profiles.clone();
        match statement {
            Statement::SetTableTimeColumn { table, column } => {
                self.set_time_column(&table, &column).await?;
                Ok(Output::Done { command: "ALTER TABLE" })
            }
            Statement::CreateSegment(c) => {
                let _ddl = self.db.inner.ddl.lock().await;
                profiles.create_segment(&self.db, c).await?;
                Ok(Output::Done { command: "CREATE SEGMENT" })
            }
            Statement::DropSegment { name, if_exists } => {
                let _ddl = self.db.inner.ddl.lock().await;
                profiles.drop_segment(&self.db, &name, if_exists).await?;
                Ok(Output::Done { command: "DROP SEGMENT" })
            }
            Statement::ShowSegments => Ok(rows_output(profiles.show_segments()?)),
            Statement::RefreshSegment { name } => {
                profiles.refresh(&self.db, name.as_deref()).await?;
                Ok(Output::Done { command: "REFRESH SEGMENT" })
            }
            Statement::SubscribeSegment { name, snapshot } => Ok(Output::Subscription(profiles.subscribe(&name, snapshot)?)),
            Statement::CreateProfileColumn(def) => {
                let _ddl = self.db.inner.ddl.lock().await;
                let command = match def.kind {
                    tessera_sql::ProfileColumnKind::Trait => "CREATE TRAIT",
                    tessera_sql::ProfileColumnKind::Attribute => "CREATE PROFILE ATTRIBUTE",
                };
                profiles.create_column(&self.db, def).await?;
                Ok(Output::Done { command })
            }
            Statement::DropProfileColumn { name, if_exists, kind } => {
                let _ddl = self.db.inner.ddl.lock().await;
                profiles.drop_column(&self.db, &name, if_exists, kind).await?;
                Ok(Output::Done {
                    command: match kind {
                        tessera_sql::ProfileColumnKind::Trait => "DROP TRAIT",
                        tessera_sql::ProfileColumnKind::Attribute => "DROP PROFILE ATTRIBUTE",
                    },
                })
            }
            Statement::ShowTraits => Ok(rows_output(profiles.show_traits()?)),
            Statement::CreateTable { statement, options } => self.create_table(*statement, options).await,
            Statement::CopyFrom(copy) => {
                let rows = ingest::copy_from(&self.db.inner.store, &self.db.inner.identity, &copy).await?;
                Ok(Output::Affected { command: "COPY", rows })
            }
            Statement::CreateIdentifier { name, if_not_exists, options } => {
                let _ddl = self.db.inner.ddl.lock().await;
                let identity = self.db.inner.identity.clone();
                blocking(move || identity.create_type(&name, if_not_exists, &options)).await?;
                Ok(Output::Done { command: "CREATE IDENTIFIER" })
            }
            Statement::DropIdentifier { name, if_exists } => {
                let _ddl = self.db.inner.ddl.lock().await;
                let identity = self.db.inner.identity.clone();
                blocking(move || identity.drop_type(&name, if_exists)).await?;
                Ok(Output::Done { command: "DROP IDENTIFIER" })
            }
            Statement::ShowIdentifiers => Ok(rows_output(crate::identity::show_identifiers(&self.db.inner.identity)?)),
            Statement::ResolveIdentities => {
                let identity = self.db.inner.identity.clone();
                let report = blocking(move || identity.verify()).await?;
                Ok(rows_output(crate::identity::report_batch(&report)?))
            }
            Statement::SetTableIdentifiers { table, identifiers } => {
                self.set_table_identifiers(&table, &identifiers).await?;
                Ok(Output::Done { command: "ALTER TABLE" })
            }
            Statement::Vacuum { table } => {
                self.db.vacuum(table.as_deref()).await?;
                Ok(Output::Done { command: "VACUUM" })
            }
            Statement::Checkpoint => {
                self.db.checkpoint().await?;
                Ok(Output::Done { command: "CHECKPOINT" })
            }
            Statement::DataFusion(statement) => self.execute_datafusion(*statement).await,
        }
    }

    /// `COPY table FROM STDIN` with the client's data (text or CSV format,
    /// as the statement says). All rows or none.
    pub async fn copy_from_data(&self, copy: &tessera_sql::CopyFrom, data: Vec<u8>) -> Result<u64> {
        self.copy_from_reader(copy, std::io::Cursor::new(data)).await
    }

    /// `COPY table FROM STDIN` reading the data as it is parsed: rows are
    /// appended batch by batch and a large input goes to segment files
    /// before the commit, so memory stays bounded. All rows or none.
    pub async fn copy_from_reader(&self, copy: &tessera_sql::CopyFrom, data: impl std::io::Read + Send + 'static) -> Result<u64> {
        ingest::copy_from_reader(&self.db.inner.store, &self.db.inner.identity, copy, Box::new(data)).await
    }

    /// `ALTER TABLE t SET (identifiers = '...')`: declare identifier
    /// columns on a table that has none yet, and resolve its rows.
    async fn set_table_identifiers(&self, table: &str, declaration: &str) -> Result<()> {
        let _ddl = self.db.inner.ddl.lock().await;
        let identity = self.db.inner.identity.clone();
        let store = self.db.inner.store.clone();
        let table = table.to_string();
        let declaration = declaration.to_string();
        blocking(move || crate::identity::declare_on_existing(&store, &identity, &table, &declaration)).await
    }

    /// `ALTER TABLE t SET (time_column = 'c')`.
    async fn set_time_column(&self, table: &str, column: &str) -> Result<()> {
        let _ddl = self.db.inner.ddl.lock().await;
        let meta = self.db.table_meta(table)?;
        check_time_column(&meta.columns, table, column)?;
        let users = self.db.inner.profiles.users_of_relation(table);
        if !users.is_empty() {
            return Err(Error::user(format!(
                "cannot change the time column of '{table}' while {} read it; drop them first",
                users.join(", ")
            )));
        }
        let mut options = meta.options.clone();
        options.insert(crate::profiles::columns::TIME_COLUMN_OPTION.to_string(), column.to_string());
        let store = self.db.inner.store.clone();
        let table = table.to_string();
        blocking(move || Ok(store.alter_table(&table, Vec::new(), Some(options))?)).await
    }

    /// Every statement reads the state as of its start.
    fn pin_snapshot(&self) {
        let snapshot = self.db.inner.store.snapshot();
        self.ctx.state_ref().write().config_mut().set_extension(Arc::new(PinnedSnapshot(snapshot)));
    }

    async fn execute_datafusion(&self, statement: DFStatement) -> Result<Output> {
        let prepared = self.prepare_datafusion(statement).await?;
        self.run_plan(prepared.plan, &prepared.references).await
    }

    /// Plan one statement without running it. Parameters (`$1`, `$2`, ...)
    /// stay open until [`Session::execute_prepared`] binds them.
    pub async fn prepare(&self, statement: Statement) -> Result<Prepared> {
        match statement {
            Statement::DataFusion(statement) => {
                self.pin_snapshot();
                self.prepare_datafusion(*statement).await
            }
            other => Ok(Prepared {
                plan: LogicalPlan::EmptyRelation(empty_relation()),
                references: Vec::new(),
                own: Some(other),
                optimized: None,
            }),
        }
    }

    async fn prepare_datafusion(&self, statement: DFStatement) -> Result<Prepared> {
        let statement = self.name_insert_columns(statement)?;
        let state = self.ctx.state();
        let references = state.resolve_table_references(&statement)?;
        let plan = state.statement_to_plan(statement).await?;
        let optimized = optimization_reusable(&plan).then(|| Arc::new(std::sync::OnceLock::new()));
        Ok(Prepared { plan, references, own: None, optimized })
    }

    /// `INSERT INTO t VALUES (...)` into a table with identifiers means its
    /// stored columns, not the computed `profile_id`: name them, so the
    /// values line up; naming `profile_id` is an error.
    fn name_insert_columns(&self, statement: DFStatement) -> Result<DFStatement> {
        use tessera_sql::sqlparser::ast::{ObjectName, Statement as Sql, TableObject};
        let DFStatement::Statement(inner) = statement else { return Ok(statement) };
        let Sql::Insert(mut insert) = *inner else { return Ok(DFStatement::Statement(inner)) };
        let TableObject::TableName(name) = &insert.table else {
            return Ok(DFStatement::Statement(Box::new(Sql::Insert(insert))));
        };
        let table = name.0.last().and_then(|p| p.as_ident()).map(|i| {
            if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() }
        });
        let meta = table.and_then(|t| self.db.inner.store.snapshot().table(&t).map(|t| t.meta.clone()));
        if let Some(meta) = meta.filter(|m| m.options.contains_key(crate::identity::spec::IDENTIFIERS_OPTION)) {
            let pid = crate::identity::spec::PROFILE_ID_COLUMN;
            if insert.columns.iter().any(|c| c.to_string().trim_matches('"') == pid) {
                return Err(Error::user(format!("{pid} is computed from the identifiers; it cannot be inserted")));
            }
            if insert.columns.is_empty() {
                insert.columns = meta
                    .columns
                    .iter()
                    .filter(|c| !c.hidden)
                    .map(|c| ObjectName::from(vec![tessera_sql::sqlparser::ast::Ident::with_quote('"', c.name.clone())]))
                    .collect();
            }
        }
        Ok(DFStatement::Statement(Box::new(Sql::Insert(insert))))
    }

    /// Run a prepared statement with values for its parameters.
    pub async fn execute_prepared(&self, prepared: &Prepared, params: Option<ParamValues>) -> Result<Output> {
        if let Some(own) = &prepared.own {
            if params.as_ref().is_some_and(|p| !param_values_empty(p)) {
                return Err(Error::user("this statement takes no parameters"));
            }
            return self.execute(own.clone()).await;
        }
        self.db.maintain_quietly().await;
        self.pin_snapshot();
        let output = match self.optimized_query(prepared) {
            Some(optimized) => self.run_optimized(optimized, params).await,
            None => {
                let plan = match params {
                    Some(values) => prepared.plan.clone().replace_params_with_values(&values)?,
                    None => prepared.plan.clone(),
                };
                self.run_plan(plan, &prepared.references).await
            }
        };
        self.db.maintain_quietly().await;
        output
    }

    /// The query's optimized plan, made at its first execution; `None`
    /// when the statement must be optimized at each execution (see
    /// [`optimization_reusable`]) or DataFusion could not optimize it with
    /// its parameters open.
    fn optimized_query(&self, prepared: &Prepared) -> Option<Arc<OptimizedQuery>> {
        let cell = prepared.optimized.as_ref()?;
        cell.get_or_init(|| OptimizedQuery::new(&self.ctx.state(), &prepared.plan)).clone()
    }

    /// Run an optimized query plan: bind the parameters (cast to the types
    /// the optimizer planned them with) and plan it physically (scans
    /// prune with the bound values).
    async fn run_optimized(&self, optimized: Arc<OptimizedQuery>, params: Option<ParamValues>) -> Result<Output> {
        let plan = match params {
            Some(values) => optimized.plan.clone().replace_params_with_values(&optimized.typed(values)?)?,
            None => optimized.plan.clone(),
        };
        // Copying the session state (its function registries above all)
        // cost a point query more than its scan. Planning over Tessera's
        // own tables never waits, so it runs on the session's state in
        // place, under its read lock; a plan that would wait (a table over
        // external files) is dropped unfinished and made on a copy.
        let in_place = {
            let shared = self.ctx.state_ref();
            let guard = shared.read();
            let state: &SessionState = &guard;
            let planned = state.query_planner().create_physical_plan(&plan, state).now_or_never();
            planned.map(|physical| (physical, execution_context(state)))
        };
        let (physical, task) = match in_place {
            Some((physical, task)) => (physical?, task),
            None => {
                let state = self.ctx.state();
                (state.query_planner().create_physical_plan(&plan, &state).await?, execution_context(&state))
            }
        };
        let stream = datafusion::physical_plan::execute_stream(physical, task)?;
        Ok(Output::Rows(stream))
    }

    async fn run_plan(&self, plan: LogicalPlan, references: &[TableReference]) -> Result<Output> {
        match plan {
            LogicalPlan::Ddl(DdlStatement::CreateView(v)) => {
                let sql = v
                    .definition
                    .clone()
                    .ok_or_else(|| Error::internal("CREATE VIEW without its text"))?;
                self.create_view(&v.name, v.or_replace, v.temporary, sql, references).await?;
                Ok(Output::Done { command: "CREATE VIEW" })
            }
            LogicalPlan::Ddl(DdlStatement::DropView(d)) => {
                self.drop_view(&d.name, d.if_exists).await?;
                Ok(Output::Done { command: "DROP VIEW" })
            }
            LogicalPlan::Ddl(DdlStatement::DropTable(d)) => {
                self.drop_table(&d.name, d.if_exists).await?;
                Ok(Output::Done { command: "DROP TABLE" })
            }
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) => {
                self.create_table_from_plan(c, BTreeMap::new()).await
            }
            LogicalPlan::Ddl(DdlStatement::CreateExternalTable(_)) => {
                self.ctx.execute_logical_plan(plan).await?.collect().await?;
                Ok(Output::Done { command: "CREATE EXTERNAL TABLE" })
            }
            LogicalPlan::Ddl(other) => Err(Error::Unsupported(format!("{} is not supported", other.name()))),
            LogicalPlan::Dml(DmlStatement { ref op, .. }) if !matches!(op, WriteOp::Ctas) => {
                let command = match op {
                    WriteOp::Insert(_) => "INSERT",
                    WriteOp::Delete => "DELETE",
                    WriteOp::Update => "UPDATE",
                    WriteOp::Truncate => "TRUNCATE",
                    _ => "COPY",
                };
                let names = insert_column_names(&plan);
                let targets = insert_target_columns(&plan);
                let batches = match self.ctx.execute_logical_plan(plan).await?.collect().await {
                    Ok(b) => b,
                    Err(e) => return Err(name_null_column(Error::from(e), &names, &targets)),
                };
                let rows = batches
                    .first()
                    .and_then(|b| b.column(0).as_any().downcast_ref::<arrow::array::UInt64Array>().map(|a| a.value(0)))
                    .unwrap_or(0);
                Ok(Output::Affected { command, rows })
            }
            LogicalPlan::Copy(_) => {
                let batches = self.ctx.execute_logical_plan(plan).await?.collect().await?;
                let rows = batches
                    .first()
                    .and_then(|b| b.column(0).as_any().downcast_ref::<arrow::array::UInt64Array>().map(|a| a.value(0)))
                    .unwrap_or(0);
                Ok(Output::Affected { command: "COPY", rows })
            }
            plan => {
                let df = self.ctx.execute_logical_plan(plan).await?;
                Ok(Output::Rows(df.execute_stream().await?))
            }
        }
    }

    async fn create_table(&self, statement: DFStatement, options: BTreeMap<String, String>) -> Result<Output> {
        let plan = self.ctx.state().statement_to_plan(statement).await?;
        match plan {
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) => self.create_table_from_plan(c, options).await,
            other => Err(Error::internal(format!("CREATE TABLE planned as {}", other.display()))),
        }
    }

    async fn create_table_from_plan(&self, c: CreateMemoryTable, options: BTreeMap<String, String>) -> Result<Output> {
        let name = local_name(&c.name)?;
        if c.temporary {
            return Err(Error::Unsupported("temporary tables".into()));
        }
        if !c.constraints.is_empty() {
            return Err(Error::Unsupported(format!(
                "constraints on table '{name}' (PRIMARY KEY, UNIQUE): Tessera does not enforce them; declare the table without them"
            )));
        }
        if !c.column_defaults.is_empty() {
            return Err(Error::Unsupported(format!("DEFAULT values on columns of table '{name}'")));
        }
        if crate::identity::RESERVED_NAMES.contains(&name.as_str()) {
            return Err(Error::user(format!("'{name}' is the name of a system relation")));
        }
        let _ddl = self.db.inner.ddl.lock().await;
        let schema = &self.db.inner.schema;
        if schema.is_view(&name) {
            return Err(Error::user(format!("relation '{name}' already exists (it is a view)")));
        }
        if schema.is_table(&name) {
            if c.if_not_exists {
                return Ok(Output::Done { command: "CREATE TABLE" });
            }
            if !c.or_replace {
                return Err(Error::user(format!("table '{name}' already exists")));
            }
            self.drop_table_locked(&name).await?;
        }
        let mut columns: Vec<ColumnDef> = c
            .input
            .schema()
            .fields()
            .iter()
            .map(|f| ColumnDef::new(f.name(), f.data_type().clone(), f.is_nullable()))
            .collect();
        if let Some(column) = options.get(crate::profiles::columns::TIME_COLUMN_OPTION) {
            check_time_column(&columns, &name, column)?;
        }
        if let Some(declaration) = options.get(crate::identity::spec::IDENTIFIERS_OPTION) {
            let hidden = {
                let state = self.db.inner.identity.read();
                crate::identity::hidden_identity_columns(&state, &name, &columns, declaration)?
            };
            columns.extend(hidden);
        }
        let store = self.db.inner.store.clone();
        let table_name = name.clone();
        blocking(move || Ok(store.create_table(&table_name, columns, options)?)).await?;
        if matches!(c.input.as_ref(), LogicalPlan::EmptyRelation(_)) {
            return Ok(Output::Done { command: "CREATE TABLE" });
        }
        // CREATE TABLE ... AS SELECT: fill it, or leave no table behind.
        let filled = self.fill_new_table(&name, (*c.input).clone()).await;
        match filled {
            Ok(rows) => Ok(Output::Affected { command: "SELECT", rows }),
            Err(e) => {
                let _ = self.drop_table_locked(&name).await;
                Err(e)
            }
        }
    }

    async fn fill_new_table(&self, name: &str, input: LogicalPlan) -> Result<u64> {
        let batches = self.ctx.execute_logical_plan(input).await?.collect().await?;
        let meta = self
            .db
            .inner
            .store
            .snapshot()
            .table(name)
            .map(|t| t.meta.clone())
            .ok_or_else(|| Error::internal("new table vanished"))?;
        let mut full = Vec::with_capacity(batches.len());
        for b in &batches {
            full.push(ingest::conform_by_position(&meta, b)?);
        }
        ingest::commit_batches(self.db.inner.store.clone(), self.db.inner.identity.clone(), meta, full).await
    }

    async fn drop_table(&self, name: &TableReference, if_exists: bool) -> Result<()> {
        let name = local_name(name)?;
        let _ddl = self.db.inner.ddl.lock().await;
        if !self.db.inner.schema.is_table(&name) {
            if if_exists {
                return Ok(());
            }
            if self.db.inner.schema.is_view(&name) {
                return Err(Error::user(format!("'{name}' is a view; use DROP VIEW")));
            }
            return Err(Error::user(format!("table '{name}' does not exist")));
        }
        self.drop_table_locked(&name).await
    }

    async fn drop_table_locked(&self, name: &str) -> Result<()> {
        let users = self.db.inner.profiles.users_of_relation(name);
        if !users.is_empty() {
            return Err(Error::user(format!("cannot drop table '{name}': {} read it; drop them first", users.join(", "))));
        }
        let dependents = self.db.inner.schema.dependents_of(name);
        if !dependents.is_empty() {
            return Err(Error::user(format!(
                "cannot drop table '{name}' because view(s) {} depend on it; drop them first",
                dependents.join(", ")
            )));
        }
        let store = self.db.inner.store.clone();
        let identity = self.db.inner.identity.clone();
        let owned = name.to_string();
        blocking(move || {
            // Take the table's links out of the graph (one transaction that
            // deletes every row) before the table itself goes.
            crate::identity::delete_all_rows(&store, &identity, &owned)?;
            Ok(store.drop_table(&owned)?)
        })
        .await
    }

    async fn create_view(
        &self,
        name: &TableReference,
        or_replace: bool,
        temporary: bool,
        sql: String,
        references: &[TableReference],
    ) -> Result<()> {
        let name = local_name(name)?;
        if temporary {
            return Err(Error::Unsupported("temporary views".into()));
        }
        let _ddl = self.db.inner.ddl.lock().await;
        let schema = &self.db.inner.schema;
        if schema.is_table(&name) {
            return Err(Error::user(format!("relation '{name}' already exists (it is a table)")));
        }
        if schema.is_view(&name) && !or_replace {
            return Err(Error::user(format!("view '{name}' already exists")));
        }
        let depends_on: BTreeSet<String> = references
            .iter()
            .filter(|r| r.schema().is_none_or(|s| s == SCHEMA) && r.catalog().is_none_or(|c| c == CATALOG))
            .map(|r| r.table().to_string())
            .collect();
        if depends_on.contains(&name) || schema.reaches(&depends_on, &name) {
            return Err(Error::user(format!("view '{name}' would depend on itself")));
        }
        let def = ViewDef { sql, depends_on };
        let value = serde_json::to_string(&def).map_err(|e| Error::internal(e.to_string()))?;
        let store = self.db.inner.store.clone();
        let key = format!("{VIEW_KEY_PREFIX}{name}");
        blocking(move || Ok(store.set_metadata(&key, Some(value))?)).await?;
        self.db.replan_views().await
    }

    async fn drop_view(&self, name: &TableReference, if_exists: bool) -> Result<()> {
        let name = local_name(name)?;
        let _ddl = self.db.inner.ddl.lock().await;
        let schema = &self.db.inner.schema;
        if !schema.is_view(&name) {
            if if_exists {
                return Ok(());
            }
            return Err(Error::user(format!("view '{name}' does not exist")));
        }
        let users = self.db.inner.profiles.users_of_relation(&name);
        if !users.is_empty() {
            return Err(Error::user(format!("cannot drop view '{name}': segment {} reads it; drop it first", users.join(", "))));
        }
        let dependents = schema.dependents_of(&name);
        if !dependents.is_empty() {
            return Err(Error::user(format!(
                "cannot drop view '{name}' because view(s) {} depend on it; drop them first",
                dependents.join(", ")
            )));
        }
        let store = self.db.inner.store.clone();
        let key = format!("{VIEW_KEY_PREFIX}{name}");
        blocking(move || Ok(store.set_metadata(&key, None)?)).await?;
        self.db.replan_views().await
    }
}

/// A time column must exist and hold a date or timestamp.
fn check_time_column(columns: &[ColumnDef], table: &str, column: &str) -> Result<()> {
    use arrow::datatypes::DataType as D;
    match columns.iter().find(|c| !c.hidden && c.name == column) {
        None => Err(Error::user(format!("table '{table}' has no column '{column}' to use as its time column"))),
        Some(c) if matches!(c.data_type, D::Timestamp(..) | D::Date32 | D::Date64) => Ok(()),
        Some(c) => Err(Error::user(format!(
            "time column '{column}' of table '{table}' must be a TIMESTAMP or DATE, not {}",
            c.data_type
        ))),
    }
}

fn empty_relation() -> datafusion::logical_expr::EmptyRelation {
    datafusion::logical_expr::EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(datafusion::common::DFSchema::empty()),
    }
}

fn param_values_empty(p: &ParamValues) -> bool {
    match p {
        ParamValues::List(v) => v.is_empty(),
        ParamValues::Map(m) => m.is_empty(),
    }
}

/// The table part of a name in our one catalog and schema.
fn local_name(name: &TableReference) -> Result<String> {
    if name.catalog().is_some_and(|c| c != CATALOG) || name.schema().is_some_and(|s| s != SCHEMA) {
        return Err(Error::user(format!(
            "'{name}' is outside schema {CATALOG}.{SCHEMA}, the only schema that holds tables"
        )));
    }
    Ok(name.table().to_string())
}

/// For an INSERT: which table column each `columnN` of its VALUES feeds.
fn insert_column_names(plan: &LogicalPlan) -> Vec<(String, String)> {
    let LogicalPlan::Dml(dml) = plan else { return Vec::new() };
    let LogicalPlan::Projection(projection) = dml.input.as_ref() else { return Vec::new() };
    let table = dml.table_name.table().to_string();
    projection
        .expr
        .iter()
        .filter_map(|e| match e {
            datafusion::logical_expr::Expr::Alias(alias) => {
                let source = alias.expr.column_refs().into_iter().next()?.name.clone();
                Some((source, format!("column '{}' of table '{table}'", alias.name)))
            }
            _ => None,
        })
        .collect()
}

/// For an INSERT: the table and the columns its rows fill, in order.
fn insert_target_columns(plan: &LogicalPlan) -> Option<(String, Vec<String>)> {
    let LogicalPlan::Dml(dml) = plan else { return None };
    let columns = dml.input.schema().fields().iter().map(|f| f.name().clone()).collect();
    Some((dml.table_name.table().to_string(), columns))
}

/// Arrow reports a NULL in a NOT NULL column by the VALUES column's name
/// (`column1`) or by position; say which table column it is.
fn name_null_column(e: Error, names: &[(String, String)], targets: &Option<(String, Vec<String>)>) -> Error {
    let message = e.to_string();
    if let Some(rest) = message.split("Invalid batch column at '").nth(1) {
        let index: Option<usize> = rest.split('\'').next().and_then(|n| n.parse().ok());
        if let (Some(i), Some((table, columns))) = (index, targets) {
            if let Some(column) = columns.get(i) {
                return Error::user(format!("NULL value in column '{column}' of table '{table}' violates its NOT NULL constraint"));
            }
        }
    }
    if !message.contains("declared as non-nullable but contains null values") {
        return e;
    }
    for (source, target) in names {
        if message.contains(&format!("'{source}'")) {
            return Error::user(format!("NULL value in {target} violates its NOT NULL constraint"));
        }
    }
    Error::user(format!("NULL value in a NOT NULL column: {message}"))
}

/// The context a physical plan runs in: the session's settings and
/// runtime. Operators never look functions up by name while running
/// (plans hold their functions), so the registries, the costly part of
/// `SessionState::task_ctx`, stay empty.
fn execution_context(state: &SessionState) -> Arc<datafusion::execution::TaskContext> {
    use std::collections::HashMap;
    Arc::new(datafusion::execution::TaskContext::new(
        None,
        state.session_id().to_string(),
        state.config().clone(),
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
        state.runtime_env().clone(),
    ))
}
