//! The `tessera` command.
//!
//! `tessera serve [--data-dir DIR] [--listen HOST:PORT] [--max-connections N]`
//! serves the PostgreSQL wire protocol; `tessera sql [--data-dir DIR] "SQL"`
//! runs statements and prints the results as tables.

use std::path::PathBuf;

use anyhow::Context;
use tessera::{Database, Output};

const DEFAULT_DATA_DIR: &str = "./tessera-data";
const USAGE: &str = "usage: tessera serve [--data-dir DIR] [--listen HOST:PORT] [--max-connections N] [--tls-cert PEM --tls-key PEM [--require-tls]]\n       tessera sql [--data-dir DIR] \"SQL; ...\"";

struct ServeArgs {
    data_dir: PathBuf,
    options: tessera_server::ServerOptions,
}

fn parse_serve_args(args: &[String]) -> anyhow::Result<ServeArgs> {
    let mut out = ServeArgs { data_dir: PathBuf::from(DEFAULT_DATA_DIR), options: Default::default() };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| it.next().with_context(|| format!("{a} needs {what}")).cloned();
        match a.as_str() {
            "--data-dir" => out.data_dir = PathBuf::from(value("a directory")?),
            "--listen" => out.options.listen = value("HOST:PORT")?,
            "--max-connections" => out.options.max_connections = value("a number")?.parse().context("--max-connections")?,
            "--tls-cert" => {
                let key = out.options.tls.take().map(|(_, k)| k).unwrap_or_default();
                out.options.tls = Some((PathBuf::from(value("a PEM file")?), key));
            }
            "--tls-key" => {
                let cert = out.options.tls.take().map(|(c, _)| c).unwrap_or_default();
                out.options.tls = Some((cert, PathBuf::from(value("a PEM file")?)));
            }
            "--require-tls" => out.options.require_tls = true,
            other => anyhow::bail!("unknown option {other}\n{USAGE}"),
        }
    }
    if let Some((cert, key)) = &out.options.tls {
        anyhow::ensure!(
            !cert.as_os_str().is_empty() && !key.as_os_str().is_empty(),
            "TLS needs both --tls-cert and --tls-key"
        );
    }
    Ok(out)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(t) => t,
            Err(_) => {
                let _ = interrupt.await;
                return;
            }
        };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

async fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    let db = Database::open(&args.data_dir)
        .with_context(|| format!("opening the database in {}", args.data_dir.display()))?;
    tessera_server::server::log(&format!("data directory {}", args.data_dir.display()));
    tessera_server::serve(db.clone(), args.options, shutdown_signal()).await?;
    db.close().await?;
    tessera_server::server::log("stopped");
    Ok(())
}

struct SqlArgs {
    data_dir: PathBuf,
    sql: String,
}

fn parse_sql_args(args: &[String]) -> anyhow::Result<SqlArgs> {
    let mut data_dir = PathBuf::from(DEFAULT_DATA_DIR);
    let mut sql = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--data-dir" => data_dir = PathBuf::from(it.next().context("--data-dir needs a directory")?),
            "-h" | "--help" => anyhow::bail!(USAGE),
            other => sql.push(other.to_string()),
        }
    }
    anyhow::ensure!(!sql.is_empty(), USAGE);
    Ok(SqlArgs { data_dir, sql: sql.join(" ") })
}

async fn run_sql(args: SqlArgs) -> anyhow::Result<()> {
    let db = Database::open(&args.data_dir)
        .with_context(|| format!("opening the database in {}", args.data_dir.display()))?;
    let session = db.session();
    for statement in tessera::parse(&args.sql)? {
        match session.execute(statement).await? {
            Output::Rows(stream) => {
                let batches = Output::Rows(stream).collect().await?;
                println!("{}", tessera::arrow::util::pretty::pretty_format_batches(&batches)?);
            }
            Output::Affected { command, rows } => println!("{command} {rows}"),
            Output::Done { command } => println!("{command}"),
        }
    }
    drop(session);
    db.close().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("sql") => run_sql(parse_sql_args(&args[1..])?).await,
        Some("serve") => run_serve(parse_serve_args(&args[1..])?).await,
        _ => anyhow::bail!(USAGE),
    }
}
