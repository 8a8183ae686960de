//! One handler for every connection; each connection's own state (its
//! engine session, settings, a COPY in progress) lives in the connection's
//! session extensions.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use async_trait::async_trait;
use futures::{Sink, SinkExt, StreamExt};
use parking_lot::Mutex;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{CopyResponse, DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;
use pgwire::messages::response::TransactionStatus;
use tessera::sql::{CopyFrom, CopySource, DFStatement};
use tessera::{Database, Output, Prepared, Session, Statement};

use crate::errors::{pg_error, to_pg};
use crate::pgcompat::setting_default;

/// Largest COPY FROM STDIN payload accepted (it is spooled to a file in
/// the data directory, not held in memory).
pub const MAX_COPY_BYTES: u64 = 64 << 30;

/// What one connection keeps between messages.
pub struct ConnState {
    session: Session,
    settings: Mutex<BTreeMap<String, String>>,
    copy: Mutex<Option<CopyIn>>,
    /// Statements that changed data since BEGIN (they are committed
    /// already; see `begin_notice`).
    writes_in_block: Mutex<u64>,
}

struct CopyIn {
    copy: CopyFrom,
    /// The data received so far, spooled to an unnamed file (removed by
    /// the system when closed, also if the server dies): memory stays
    /// flat however large the COPY, and the writer lock is taken only
    /// once all of it has arrived.
    spool: std::fs::File,
    bytes: u64,
    /// (SQLSTATE, message) of the first failure; the rest of the data is
    /// ignored and CopyDone gets the error.
    failed: Option<(&'static str, String)>,
}

impl CopyIn {
    fn new(db: &Database, copy: CopyFrom) -> PgWireResult<CopyIn> {
        let spool = match db.dir() {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        }
        .map_err(|e| pg_error("53100", format!("cannot spool COPY data: {e}")))?;
        Ok(CopyIn { copy, spool, bytes: 0, failed: None })
    }

    fn receive(&mut self, data: &[u8]) {
        use std::io::Write;
        if self.failed.is_some() {
            return;
        }
        if self.bytes + data.len() as u64 > MAX_COPY_BYTES {
            self.failed = Some(("54000", format!("COPY data exceeds the limit of {MAX_COPY_BYTES} bytes")));
        } else if let Err(e) = self.spool.write_all(data) {
            self.failed = Some(("53100", format!("cannot spool COPY data: {e}")));
        } else {
            self.bytes += data.len() as u64;
        }
    }

    /// The spooled data from its start, buffered for the parser.
    fn into_reader(mut self) -> PgWireResult<std::io::BufReader<std::fs::File>> {
        use std::io::Seek;
        self.spool
            .seek(std::io::SeekFrom::Start(0))
            .map_err(|e| pg_error("58030", format!("cannot read spooled COPY data: {e}")))?;
        Ok(std::io::BufReader::with_capacity(1 << 20, self.spool))
    }
}

/// A statement as the protocol layer sees it.
#[derive(Clone, Debug)]
pub enum Kind {
    Begin,
    Commit,
    Rollback,
    /// Savepoints are accepted; as every statement is already committed,
    /// rolling back to one undoes nothing (and says so).
    RollbackToSavepoint,
    Set { name: String, value: String },
    Show { name: String },
    /// Accepted and ignored: DISCARD, DEALLOCATE, LISTEN...
    Noop(&'static str),
    CopyFromStdin(CopyFrom),
    /// `COPY table|(query) TO STDOUT`: the rows of `query`, as COPY data.
    CopyToStdout(CopyOut),
    User(crate::users::UserStatement),
    Engine(Box<Statement>),
}

#[derive(Clone, Debug)]
pub struct CopyOut {
    query: String,
    csv: bool,
    header: bool,
    delimiter: Option<char>,
    null: Option<String>,
}

/// A parsed (and for engine statements, planned) extended-protocol
/// statement.
#[derive(Clone, Debug)]
pub struct PgStatement {
    pub kind: Kind,
    pub prepared: Option<Arc<Prepared>>,
}

#[derive(Clone)]
pub struct Handler {
    db: Database,
    parser: Arc<Parser>,
}

impl Handler {
    pub fn new(db: Database) -> Self {
        let parser = Arc::new(Parser { db: db.clone() });
        Handler { db, parser }
    }

    fn conn<C: ClientInfo>(db: &Database, client: &C) -> Arc<ConnState> {
        client.session_extensions().get_or_insert_with(|| ConnState {
            session: db.session(),
            settings: Mutex::new(BTreeMap::new()),
            copy: Mutex::new(None),
            writes_in_block: Mutex::new(0),
        })
    }
}

/// Split SQL text into protocol-level statements.
pub fn classify(sql: &str) -> tessera::Result<Vec<Kind>> {
    let sql = crate::pgcompat::preprocess(sql);
    let sql = sql.as_ref();
    if let Some(copy) = copy_to_stdout(sql)? {
        return Ok(vec![Kind::CopyToStdout(copy)]);
    }
    if let Some(user) = crate::users::parse(sql)? {
        return Ok(vec![Kind::User(user)]);
    }
    // Queries first go through the PostgreSQL-compatibility parser, which
    // knows the catalog queries clients send that need rewriting.
    if let Some(statements) = crate::pgcompat::parse_query(sql) {
        return Ok(statements
            .into_iter()
            .map(|s| classify_one(Statement::DataFusion(Box::new(DFStatement::Statement(Box::new(s)))), false))
            .collect());
    }
    let statements = tessera::parse(sql)?;
    Ok(statements.into_iter().map(|s| classify_one(s, true)).collect())
}

/// `rewrite`: apply the client-compatibility rewrites (not yet done by the
/// parser that produced the statement).
fn classify_one(statement: Statement, rewrite: bool) -> Kind {
    use tessera::sql::sqlparser::ast::Statement as S;
    match statement {
        Statement::CopyFrom(c) if c.source == CopySource::Stdin => Kind::CopyFromStdin(c),
        Statement::DataFusion(df) => match *df {
            DFStatement::Statement(s) => match *s {
                S::StartTransaction { .. } => Kind::Begin,
                S::Commit { .. } => Kind::Commit,
                S::Rollback { savepoint: Some(_), .. } => Kind::RollbackToSavepoint,
                S::Rollback { .. } => Kind::Rollback,
                S::Savepoint { .. } => Kind::Noop("SAVEPOINT"),
                S::ReleaseSavepoint { .. } => Kind::Noop("RELEASE"),
                S::ShowVariable { variable } => Kind::Show {
                    name: variable.iter().map(|i| i.value.to_ascii_lowercase()).collect::<Vec<_>>().join(" "),
                },
                S::Discard { .. } => Kind::Noop("DISCARD ALL"),
                S::Deallocate { .. } => Kind::Noop("DEALLOCATE"),
                S::Set(set) => classify_set(&set.to_string()),
                other => {
                    let text = other.to_string();
                    if text.to_ascii_uppercase().starts_with("SET ") {
                        classify_set(&text)
                    } else {
                        let other = if rewrite { crate::pgcompat::rewrite(other) } else { crate::pgcompat::rewrite_tessera(other) };
                        Kind::Engine(Box::new(Statement::DataFusion(Box::new(DFStatement::Statement(Box::new(other))))))
                    }
                }
            },
            other => Kind::Engine(Box::new(Statement::DataFusion(Box::new(other)))),
        },
        other => Kind::Engine(Box::new(other)),
    }
}

/// `COPY table [(cols)] TO STDOUT [options]` or `COPY (query) TO STDOUT`,
/// parsed with sqlparser's PostgreSQL COPY grammar.
fn copy_to_stdout(sql: &str) -> tessera::Result<Option<CopyOut>> {
    use tessera::sql::sqlparser::ast::{CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement as S};
    let upper = sql.trim_start().to_ascii_uppercase();
    if !upper.starts_with("COPY") || !upper.contains("STDOUT") {
        return Ok(None);
    }
    let dialect = tessera::sql::sqlparser::dialect::PostgreSqlDialect {};
    let statements = tessera::sql::sqlparser::parser::Parser::parse_sql(&dialect, sql)
        .map_err(|e| tessera::Error::Syntax { message: e.to_string(), line: None, column: None })?;
    let [S::Copy { source, to: true, target: CopyTarget::Stdout, options, legacy_options, .. }] = statements.as_slice() else {
        return Ok(None);
    };
    let query = match source {
        CopySource::Table { table_name, columns } if columns.is_empty() => format!("SELECT * FROM {table_name}"),
        CopySource::Table { table_name, columns } => format!(
            "SELECT {} FROM {table_name}",
            columns.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
        ),
        CopySource::Query(q) => q.to_string(),
    };
    let mut out = CopyOut { query, csv: false, header: false, delimiter: None, null: None };
    for o in options {
        match o {
            CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                "csv" => out.csv = true,
                "text" => out.csv = false,
                other => return Err(tessera::Error::Unsupported(format!("COPY TO STDOUT in {other} format"))),
            },
            CopyOption::Header(h) => out.header = *h,
            CopyOption::Delimiter(d) => out.delimiter = Some(*d),
            CopyOption::Null(n) => out.null = Some(n.clone()),
            other => return Err(tessera::Error::Unsupported(format!("COPY option {other}"))),
        }
    }
    for o in legacy_options {
        match o {
            CopyLegacyOption::Csv(csv_options) => {
                out.csv = true;
                if csv_options.iter().any(|c| matches!(c, CopyLegacyCsvOption::Header)) {
                    out.header = true;
                }
            }
            CopyLegacyOption::Header => out.header = true,
            CopyLegacyOption::Delimiter(d) => out.delimiter = Some(*d),
            CopyLegacyOption::Null(n) => out.null = Some(n.clone()),
            other => return Err(tessera::Error::Unsupported(format!("COPY option {other}"))),
        }
    }
    Ok(Some(out))
}

/// `SET [SESSION|LOCAL] name {=|TO} value`, `SET TIME ZONE value`,
/// `SET SESSION CHARACTERISTICS ...`, read from the statement's text.
fn classify_set(text: &str) -> Kind {
    let mut rest = text.trim().trim_end_matches(';');
    for prefix in ["SET ", "set "] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let upper = rest.to_ascii_uppercase();
    for modifier in ["SESSION ", "LOCAL "] {
        if upper.starts_with(modifier) && !upper.starts_with("SESSION CHARACTERISTICS") {
            rest = &rest[modifier.len()..];
        }
    }
    let upper = rest.to_ascii_uppercase();
    if let Some(v) = upper.strip_prefix("TIME ZONE ").map(|_| &rest["TIME ZONE ".len()..]) {
        return Kind::Set { name: "timezone".into(), value: unquote(v) };
    }
    if upper.starts_with("SESSION CHARACTERISTICS") || upper.starts_with("TRANSACTION") {
        return Kind::Noop("SET");
    }
    let (name, value) = match (rest.find('='), upper.find(" TO ")) {
        (Some(eq), to) if to.is_none_or(|t| eq < t) => (&rest[..eq], &rest[eq + 1..]),
        (_, Some(to)) => (&rest[..to], &rest[to + 4..]),
        _ => (rest, ""),
    };
    Kind::Set { name: name.trim().to_ascii_lowercase(), value: unquote(value) }
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    let v = v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')).unwrap_or(v);
    v.replace("''", "'")
}

fn error_info(e: PgWireError) -> ErrorInfo {
    match e {
        PgWireError::UserError(info) => *info,
        other => ErrorInfo::new("ERROR".into(), "XX000".into(), other.to_string()),
    }
}

fn format_options<C: ClientInfo>(client: &C) -> Arc<FormatOptions> {
    Arc::new(FormatOptions::from_client_metadata(client.metadata()))
}

/// Turn an engine result into a protocol response. Rows stream.
pub fn to_response(
    output: Output,
    format: &Format,
    options: Arc<FormatOptions>,
    interrupt: Interrupt,
) -> PgWireResult<Response> {
    match output {
        Output::Rows(stream) => {
            let schema = stream.schema();
            let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, Some(options))?);
            let for_rows = fields.clone();
            let rows = interruptible(stream, interrupt)
                .map(move |batch| match batch {
                    Ok(b) => futures::stream::iter(encode_recordbatch(for_rows.clone(), b)).boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                })
                .flatten();
            Ok(Response::Query(QueryResponse::new(fields, rows)))
        }
        Output::Affected { command, rows } => {
            let tag = Tag::new(command).with_rows(rows as usize);
            Ok(Response::Execution(if command == "INSERT" { tag.with_oid(0) } else { tag }))
        }
        Output::Done { command } => Ok(Response::Execution(Tag::new(command))),
        Output::Subscription(s) => Err(pg_error(
            "0A000",
            format!("SUBSCRIBE TO SEGMENT {} streams over the simple query protocol (psql, psycopg's cursor.copy), not as a prepared statement", s.segment()),
        )),
    }
}

/// `SUBSCRIBE TO SEGMENT`: a COPY-out stream of tab-separated rows
/// (segment, profile_id, change, at, cause), each sent (and flushed) as it
/// happens, until the segment is dropped or the client goes away; then
/// `COPY n`.
async fn stream_subscription<C>(client: &mut C, subscription: tessera::SegmentSubscription) -> PgWireResult<Response>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let changes = futures::stream::unfold(subscription, |mut subscription| async move {
        match subscription.next().await {
            Ok(Some(c)) => Some((Ok(CopyData::new(c.text_line().into_bytes().into())), subscription)),
            Ok(None) => None,
            Err(e) => Some((Err(to_pg(e)), subscription)),
        }
    });
    let rows = send_copy_out(client, 5, changes, Flush::EachRow).await?;
    Ok(Response::Execution(Tag::new("COPY").with_rows(rows)))
}

/// When COPY-out rows reach the client.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flush {
    /// As each happens (a live stream).
    EachRow,
    /// When the connection's buffer fills, and at the end.
    Buffered,
}

/// A COPY-out stream: CopyOutResponse, CopyData, CopyDone; returns how many
/// CopyData messages went out. Sent here rather than as pgwire's
/// `Response::CopyOut`, which answers an error mid-stream with CopyFail, a
/// message only clients may send (psycopg then refuses the connection's
/// next step). PostgreSQL ends the copy with an ErrorResponse, which is
/// what returning the error does.
async fn send_copy_out<C>(
    client: &mut C,
    columns: usize,
    data: impl futures::Stream<Item = PgWireResult<CopyData>>,
    flush: Flush,
) -> PgWireResult<usize>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    use pgwire::messages::copy::CopyOutResponse;
    client.send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(0, columns as i16, vec![0; columns]))).await?;
    let mut data = std::pin::pin!(data);
    let mut sent = 0usize;
    while let Some(item) = data.next().await {
        let message = PgWireBackendMessage::CopyData(item?);
        match flush {
            Flush::EachRow => client.send(message).await?,
            Flush::Buffered => client.feed(message).await?,
        }
        sent += 1;
    }
    client.send(PgWireBackendMessage::CopyDone(CopyDone::new())).await?;
    Ok(sent)
}

const TIMEOUT_MESSAGE: &str = "canceling statement due to statement timeout";
const CANCEL_MESSAGE: &str = "canceling statement due to user request";

/// What stops a running query early: the connection's statement timeout,
/// or a cancel request (see `cancel.rs`).
pub struct Interrupt {
    deadline: Option<tokio::time::Instant>,
    cancel: Option<futures::channel::oneshot::Receiver<()>>,
}

impl Interrupt {
    /// Armed for the statement about to run.
    fn arm<C: ClientInfo>(client: &C, conn: &ConnState) -> Interrupt {
        let deadline = statement_timeout(conn).map(|d| tokio::time::Instant::now() + d);
        let cancel = client.session_extensions().get::<crate::cancel::Registration>().map(|r| r.slot.arm());
        Interrupt { deadline, cancel }
    }

    /// Resolves with the error to send once the statement must stop;
    /// never, when nothing can stop it.
    async fn fired(&mut self) -> PgWireError {
        let deadline = self.deadline;
        let until_deadline = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let cancel = &mut self.cancel;
        let until_cancel = async move {
            if let Some(receiver) = cancel.as_mut() {
                let fired = receiver.await.is_ok();
                // A finished receiver must not be polled again.
                *cancel = None;
                if fired {
                    return;
                }
            }
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = until_deadline => pg_error("57014", TIMEOUT_MESSAGE),
            _ = until_cancel => pg_error("57014", CANCEL_MESSAGE),
        }
    }

    /// Run an engine call, giving up when interrupted if it `only_reads`.
    /// A call that writes runs to its end (its rows, if any, can still be
    /// interrupted): a commit cannot be stopped half-way, and dropping it
    /// would report a failure for a write that still happens.
    async fn run<T>(&mut self, only_reads: bool, work: impl std::future::Future<Output = tessera::Result<T>>) -> PgWireResult<T> {
        if !only_reads {
            return work.await.map_err(to_pg);
        }
        tokio::select! {
            e = self.fired() => Err(e),
            r = work => r.map_err(to_pg),
        }
    }
}

/// Rows stop with a 57014 error once the statement is interrupted.
fn interruptible(
    stream: datafusion::execution::SendableRecordBatchStream,
    interrupt: Interrupt,
) -> futures::stream::BoxStream<'static, PgWireResult<arrow::array::RecordBatch>> {
    futures::stream::unfold((stream, interrupt, false), |(mut stream, mut interrupt, done)| async move {
        if done {
            return None;
        }
        tokio::select! {
            e = interrupt.fired() => Some((Err(e), (stream, interrupt, true))),
            item = stream.next() => item.map(|i| (i.map_err(|e| to_pg(tessera::Error::from(e))), (stream, interrupt, false))),
        }
    })
    .boxed()
}

/// `statement_timeout` of the connection: `0` (off), a number of
/// milliseconds, or a number with `ms`, `s` or `min`.
fn statement_timeout(conn: &ConnState) -> Option<std::time::Duration> {
    let value = conn.settings.lock().get("statement_timeout").cloned()?;
    let v = value.trim().to_ascii_lowercase();
    let (number, scale) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = v.strip_suffix("min") {
        (n, 60_000)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000)
    } else {
        (v.as_str(), 1)
    };
    let millis: u64 = number.trim().parse().ok()?;
    (millis > 0).then(|| std::time::Duration::from_millis(millis * scale))
}

fn show_response(name: &str, value: String) -> PgWireResult<Response> {
    let fields = Arc::new(vec![FieldInfo::new(name.to_string(), None, None, Type::TEXT, FieldFormat::Text)]);
    let mut encoder = DataRowEncoder::new(fields.clone());
    encoder.encode_field(&Some(value))?;
    let row = encoder.take_row();
    Ok(Response::Query(QueryResponse::new(fields, futures::stream::once(async move { Ok(row) }))))
}

const BEGIN_NOTICE: &str = "Tessera commits every statement on its own, also inside BEGIN ... COMMIT: \
    changes are durable as each statement completes and ROLLBACK cannot undo them";

async fn notice<C>(client: &mut C, severity: &str, message: String) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let info = ErrorInfo::new(severity.to_string(), "01000".to_string(), message);
    client.send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(info))).await?;
    Ok(())
}

impl Handler {
    /// Run one protocol-level statement that is not an engine statement.
    async fn run_special<C>(&self, client: &mut C, conn: &ConnState, kind: &Kind) -> PgWireResult<Response>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match kind {
            Kind::Begin => {
                if client.transaction_status() != TransactionStatus::Idle {
                    notice(client, "WARNING", "there is already a transaction in progress".into()).await?;
                    return Ok(Response::Execution(Tag::new("BEGIN")));
                }
                *conn.writes_in_block.lock() = 0;
                notice(client, "NOTICE", BEGIN_NOTICE.into()).await?;
                Ok(Response::TransactionStart(Tag::new("BEGIN")))
            }
            Kind::Commit => {
                let tag = if client.transaction_status() == TransactionStatus::Error { "ROLLBACK" } else { "COMMIT" };
                Ok(Response::TransactionEnd(Tag::new(tag)))
            }
            Kind::Rollback => {
                let writes = std::mem::take(&mut *conn.writes_in_block.lock());
                if writes > 0 {
                    notice(
                        client,
                        "WARNING",
                        format!("ROLLBACK cannot undo the {writes} statement(s) of this block that changed data: each was committed when it ran"),
                    )
                    .await?;
                }
                Ok(Response::TransactionEnd(Tag::new("ROLLBACK")))
            }
            Kind::RollbackToSavepoint => {
                let writes = *conn.writes_in_block.lock();
                if writes > 0 {
                    notice(client, "WARNING", format!("ROLLBACK TO SAVEPOINT cannot undo the {writes} statement(s) that changed data: each was committed when it ran")).await?;
                }
                Ok(Response::Execution(Tag::new("ROLLBACK")))
            }
            Kind::Set { name, value } => {
                if name.starts_with("datafusion.") {
                    let sql = format!("SET {name} = '{}'", value.replace('\'', "''"));
                    let statement = tessera::parse(&sql).map_err(|e| to_pg(e.into()))?.pop().ok_or_else(|| pg_error("42601", "empty SET"))?;
                    conn.session.execute(statement).await.map_err(to_pg)?;
                }
                client.metadata_mut().insert(name.clone(), value.clone());
                conn.settings.lock().insert(name.clone(), value.clone());
                Ok(Response::Execution(Tag::new("SET")))
            }
            Kind::Show { name } => {
                let known = conn.settings.lock().get(name).cloned().or_else(|| setting_default(name));
                match known {
                    Some(v) => show_response(name, v),
                    None => Err(pg_error("42704", format!("unrecognized configuration parameter \"{name}\""))),
                }
            }
            Kind::Noop(tag) => Ok(Response::Execution(Tag::new(tag))),
            Kind::CopyFromStdin(copy) => {
                let columns = self.copy_columns(copy)?;
                *conn.copy.lock() = Some(CopyIn::new(&self.db, copy.clone())?);
                Ok(Response::CopyIn(CopyResponse::new(0, columns, futures::stream::empty())))
            }
            Kind::CopyToStdout(copy) => {
                let interrupt = Interrupt::arm(client, conn);
                self.copy_out(client, conn, copy, interrupt).await
            }
            Kind::User(statement) => {
                let tag = crate::users::execute(&self.db, statement).await.map_err(to_pg)?;
                Ok(Response::Execution(Tag::new(tag)))
            }
            Kind::Engine(_) => Err(pg_error("XX000", "engine statement in the special path")),
        }
    }

    /// `COPY (query) TO STDOUT`: run the query and stream its rows as COPY
    /// data (see [`send_copy_out`]).
    async fn copy_out<C>(&self, client: &mut C, conn: &ConnState, copy: &CopyOut, interrupt: Interrupt) -> PgWireResult<Response>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::api::results::{CopyCsvOptions, CopyEncoder, CopyTextOptions};
        let stream = conn.session.sql_stream(&copy.query).await.map_err(to_pg)?;
        let schema = stream.schema();
        let fields = Arc::new(arrow_schema_to_pg_fields(&schema, &Format::UnifiedText, None)?);
        let columns = fields.len();
        let delimiter = copy.delimiter.map(|d| d.to_string().into());
        let null = copy.null.as_deref().map(Into::into);
        let mut encoder = if copy.csv {
            let defaults = CopyCsvOptions::default();
            let options = CopyCsvOptions {
                delimiter: delimiter.unwrap_or(defaults.delimiter.clone()),
                null_string: null.unwrap_or(defaults.null_string.clone()),
                ..defaults
            };
            CopyEncoder::new_csv(fields.clone(), options)
        } else {
            let defaults = CopyTextOptions::default();
            CopyEncoder::new_text(
                fields.clone(),
                CopyTextOptions { delimiter: delimiter.unwrap_or(defaults.delimiter), null_string: null.unwrap_or(defaults.null_string) },
            )
        };
        let header = if copy.header {
            let sep = copy.delimiter.unwrap_or(if copy.csv { ',' } else { '\t' });
            let line = schema.fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>().join(&sep.to_string()) + "\n";
            Some(Ok(CopyData::new(line.into_bytes().into())))
        } else {
            None
        };
        let rows = interruptible(stream, interrupt).flat_map(move |batch| {
            let items: Vec<PgWireResult<CopyData>> = match batch {
                Ok(b) => encode_copy_rows(&b, &fields, &mut encoder),
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(items)
        });
        let data = futures::stream::iter(header).chain(rows);
        let rows = send_copy_out(client, columns, data, Flush::Buffered).await? - usize::from(copy.header);
        Ok(Response::Execution(Tag::new("COPY").with_rows(rows)))
    }

    fn copy_columns(&self, copy: &CopyFrom) -> PgWireResult<usize> {
        let snap = self.db.store().snapshot();
        let table = snap
            .table(&copy.table)
            .ok_or_else(|| pg_error("42P01", format!("table '{}' does not exist", copy.table)))?;
        Ok(if copy.columns.is_empty() {
            table.meta.columns.iter().filter(|c| !c.hidden).count()
        } else {
            copy.columns.len()
        })
    }

    fn note_write(&self, client_status: TransactionStatus, conn: &ConnState, response: &Response) {
        if client_status == TransactionStatus::Transaction && matches!(response, Response::Execution(_)) {
            *conn.writes_in_block.lock() += 1;
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = Self::conn(&self.db, client);
        let kinds = classify(query).map_err(to_pg)?;
        let mut responses = Vec::with_capacity(kinds.len());
        for kind in kinds {
            let status = client.transaction_status();
            if status == TransactionStatus::Error && !matches!(kind, Kind::Commit | Kind::Rollback) {
                responses.push(Response::Error(Box::new(ErrorInfo::new(
                    "ERROR".into(),
                    "25P02".into(),
                    "current transaction is aborted, commands ignored until end of transaction block".into(),
                ))));
                break;
            }
            let outcome = match &kind {
                Kind::Engine(statement) => {
                    let mut interrupt = Interrupt::arm(client, &conn);
                    match interrupt.run(statement.only_reads(), conn.session.execute((**statement).clone())).await {
                    Ok(tessera::Output::Subscription(subscription)) => stream_subscription(client, subscription).await,
                    Ok(output) => to_response(output, &Format::UnifiedText, format_options(client), interrupt),
                    Err(e) => Err(e),
                    }
                }
                special => self.run_special(client, &conn, special).await,
            };
            match outcome {
                Ok(response) => {
                    self.note_write(status, &conn, &response);
                    let copy = matches!(response, Response::CopyIn(_));
                    responses.push(response);
                    if copy {
                        break; // the rest of the text waits for the COPY data
                    }
                }
                Err(e) => {
                    responses.push(Response::Error(Box::new(error_info(e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// Plans statements for the extended protocol, in the connection's session.
pub struct Parser {
    db: Database,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = PgStatement;

    async fn parse_sql<C>(&self, client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut kinds = classify(sql).map_err(to_pg)?;
        if kinds.len() > 1 {
            return Err(pg_error("42601", "cannot insert multiple commands into a prepared statement"));
        }
        let Some(kind) = kinds.pop() else { return Ok(None) };
        let prepared = match &kind {
            Kind::Engine(statement) => {
                let conn = Handler::conn(&self.db, client);
                Some(Arc::new(conn.session.prepare((**statement).clone()).await.map_err(to_pg)?))
            }
            _ => None,
        };
        Ok(Some(PgStatement { kind, prepared }))
    }

    fn get_parameter_types(&self, stmt: &PgStatement) -> PgWireResult<Vec<Type>> {
        let Some(prepared) = &stmt.prepared else { return Ok(Vec::new()) };
        let types = prepared.parameter_types().map_err(to_pg)?;
        Ok(types
            .iter()
            .map(|t| t.as_ref().and_then(|t| into_pg_type(t).ok()).unwrap_or(Type::UNKNOWN))
            .collect())
    }

    fn get_result_schema(&self, stmt: &PgStatement, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        match (&stmt.kind, &stmt.prepared) {
            (Kind::Show { name }, _) => Ok(vec![FieldInfo::new(name.clone(), None, None, Type::TEXT, FieldFormat::Text)]),
            (_, Some(prepared)) => {
                let schema = prepared.output_schema();
                arrow_schema_to_pg_fields(&schema, format.unwrap_or(&Format::UnifiedText), None)
            }
            _ => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = PgStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<PgStatement>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = PgStatement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = Self::conn(&self.db, client);
        let statement = &portal.statement.statement;
        let status = client.transaction_status();
        if status == TransactionStatus::Error && !matches!(statement.kind, Kind::Commit | Kind::Rollback) {
            return Err(pg_error("25P02", "current transaction is aborted, commands ignored until end of transaction block"));
        }
        let Some(prepared) = &statement.prepared else {
            return self.run_special(client, &conn, &statement.kind).await;
        };
        let inferred = prepared.parameter_types().map_err(to_pg)?;
        if portal.parameter_len() != inferred.len() {
            return Err(pg_error(
                "08P01",
                format!("the statement has {} parameter(s), {} were bound", inferred.len(), portal.parameter_len()),
            ));
        }
        let params = if inferred.is_empty() {
            None
        } else {
            let wire = self.parser.get_parameter_types(statement)?;
            let wire_refs: Vec<Option<&Type>> = wire.iter().map(Some).collect();
            let inferred_refs: Vec<Option<&arrow::datatypes::DataType>> = inferred.iter().map(|t| t.as_ref()).collect();
            let values = deserialize_parameters_with_server_types(portal, &inferred_refs, &wire_refs)?;
            Some(values)
        };
        let mut interrupt = Interrupt::arm(client, &conn);
        let output = interrupt.run(prepared.only_reads(), conn.session.execute_prepared(prepared, params)).await?;
        let response = to_response(output, &portal.result_column_format, format_options(client), interrupt)?;
        self.note_write(status, &conn, &response);
        Ok(response)
    }
}

#[async_trait]
impl CopyHandler for Handler {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = Self::conn(&self.db, client);
        let mut copy = conn.copy.lock();
        if let Some(state) = copy.as_mut() {
            state.receive(&copy_data.data);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = Self::conn(&self.db, client);
        let mut state = conn.copy.lock().take().ok_or_else(|| pg_error("08P01", "COPY data without a COPY in progress"))?;
        if let Some((code, why)) = state.failed.take() {
            return Err(pg_error(code, why));
        }
        let copy = state.copy.clone();
        let rows = conn.session.copy_from_reader(&copy, state.into_reader()?).await.map_err(to_pg)?;
        client
            .send(PgWireBackendMessage::CommandComplete(Tag::new("COPY").with_rows(rows as usize).into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let conn = Self::conn(&self.db, client);
        conn.copy.lock().take();
        pg_error("57014", format!("COPY from stdin failed: {}", fail.message))
    }
}

fn encode_copy_rows(
    batch: &arrow::array::RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
    encoder: &mut pgwire::api::results::CopyEncoder,
) -> Vec<PgWireResult<CopyData>> {
    use arrow_pg::encoder::{encode_value, Encoder};
    let schema = batch.schema();
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        for (c, column) in batch.columns().iter().enumerate() {
            if let Err(e) = encode_value(encoder, column, row, schema.field(c), &fields[c]) {
                out.push(Err(e));
                return out;
            }
        }
        out.push(Ok(encoder.take_row()));
    }
    out
}
