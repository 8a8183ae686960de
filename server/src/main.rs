//! The `tessera` command.
//!
//! `tessera serve [--data-dir DIR] [--listen HOST:PORT] [--demo] ...`
//! serves the PostgreSQL wire protocol; `tessera sql [--data-dir DIR] "SQL"`
//! runs statements and prints the results as tables; `tessera generate`
//! writes the generated multi-source data set to files.

use std::path::PathBuf;

use anyhow::Context;
use tessera::{Database, Output};

const DEFAULT_DATA_DIR: &str = "./tessera-data";
const USAGE: &str = "usage: tessera serve [--data-dir DIR] [--listen HOST:PORT] [--demo [--demo-people N]] [--max-connections N] [--idle-timeout SECONDS] [--page-cache-mib N] [--tls-cert PEM --tls-key PEM [--require-tls]]\n       tessera sql [--data-dir DIR] \"SQL; ...\"\n       tessera generate [--people N] [--seed S] [--out DIR] [--format csv|parquet|both]";

struct ServeArgs {
    data_dir: PathBuf,
    options: tessera_server::ServerOptions,
    /// Load this many generated people on first start.
    demo: Option<u64>,
    database: tessera::Options,
}

fn parse_serve_args(args: &[String]) -> anyhow::Result<ServeArgs> {
    let mut out = ServeArgs {
        data_dir: PathBuf::from(DEFAULT_DATA_DIR),
        options: Default::default(),
        demo: None,
        database: tessera::Options::default(),
    };
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
            "--idle-timeout" => {
                let seconds: u64 = value("a number of seconds")?.parse().context("--idle-timeout")?;
                out.options.idle_timeout = (seconds > 0).then(|| std::time::Duration::from_secs(seconds));
            }
            "--page-cache-mib" => {
                let mib: u64 = value("a number of MiB")?.parse().context("--page-cache-mib")?;
                out.database.storage.page_cache_bytes = mib.checked_mul(1 << 20).context("--page-cache-mib is too large")?;
            }
            "--demo" => out.demo = Some(out.demo.unwrap_or(tessera_server::demo::DEFAULT_DEMO_PEOPLE)),
            "--demo-people" => out.demo = Some(value("a number")?.parse().context("--demo-people")?),
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
    let db = Database::open_with(&args.data_dir, args.database.clone())
        .with_context(|| format!("opening the database in {}", args.data_dir.display()))?;
    tessera_server::server::log(&format!("data directory {}", args.data_dir.display()));
    if let Some(people) = args.demo {
        load_demo(&db, people).await?;
    }
    tessera_server::serve(db.clone(), args.options, shutdown_signal()).await?;
    db.close().await?;
    tessera_server::server::log("stopped");
    Ok(())
}

/// Load the demo data set into an empty database (first start only).
async fn load_demo(db: &Database, people: u64) -> anyhow::Result<()> {
    if db.store().snapshot().tables().next().is_some() {
        tessera_server::server::log("--demo: the database already has tables; not loading the demo data again");
        return Ok(());
    }
    tessera_server::server::log(&format!("--demo: generating and loading {people} people from five sources..."));
    let started = std::time::Instant::now();
    let loaded = tessera_server::demo::load(db, people, tessera_server::demo::DEMO_SEED).await.context("loading the demo data")?;
    let rows: u64 = loaded.values().sum();
    let profiles = db.session().sql("SELECT count(*) FROM profiles").await?;
    let profiles = profiles
        .first()
        .and_then(|b| b.column(0).as_any().downcast_ref::<tessera::arrow::array::Int64Array>().map(|a| a.value(0)))
        .unwrap_or(0);
    tessera_server::server::log(&format!(
        "--demo: loaded {rows} rows into {} tables in {:.1} s; {profiles} unified profiles (try: SELECT * FROM profiles LIMIT 10; SHOW SEGMENTS)",
        loaded.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `tessera generate`: write the generated data set to files.
fn run_generate(args: &[String]) -> anyhow::Result<()> {
    let mut people = tessera_server::demo::DEFAULT_DEMO_PEOPLE;
    let mut seed = tessera_server::demo::DEMO_SEED;
    let mut out = PathBuf::from("tessera-demo-data");
    let mut formats = tessera_datagen::Formats::CSV;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |what: &str| it.next().with_context(|| format!("{a} needs {what}")).cloned();
        match a.as_str() {
            "--people" => people = value("a number")?.parse().context("--people")?,
            "--seed" => seed = value("a number")?.parse().context("--seed")?,
            "--out" => out = PathBuf::from(value("a directory")?),
            "--format" => formats = value("csv, parquet or both")?.parse().map_err(|e| anyhow::anyhow!("--format: {e}"))?,
            other => anyhow::bail!("unknown option {other}\n{USAGE}"),
        }
    }
    let summary = tessera_datagen::generate(&tessera_datagen::Config::new(people, seed), &out, formats)?;
    for (table, rows) in &summary.rows {
        println!("{table}: {rows} rows");
    }
    println!("written to {}", out.display());
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
            Output::Subscription(mut subscription) => {
                while let Some(c) = subscription.next().await? {
                    print!("{}", c.text_line());
                }
            }
        }
    }
    drop(session);
    db.close().await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    require_processor_features()?;
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

/// This command is built for x86-64-v2 processors (`.cargo/config.toml`):
/// on an older one, say so rather than stop at an illegal instruction.
fn require_processor_features() -> anyhow::Result<()> {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse4.2"))]
    {
        let missing: Vec<&str> = [
            ("sse4.2", std::arch::is_x86_feature_detected!("sse4.2")),
            ("popcnt", std::arch::is_x86_feature_detected!("popcnt")),
            ("ssse3", std::arch::is_x86_feature_detected!("ssse3")),
            ("cmpxchg16b", std::arch::is_x86_feature_detected!("cmpxchg16b")),
        ]
        .into_iter()
        .filter(|(_, present)| !present)
        .map(|(name, _)| name)
        .collect();
        if !missing.is_empty() {
            anyhow::bail!(
                "this build of tessera needs an x86-64-v2 processor; this one lacks {} (rebuild without the target-cpu flag in .cargo/config.toml to run here)",
                missing.join(", ")
            );
        }
    }
    Ok(())
}

async fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") || args.first().is_some_and(|a| a == "help") {
        println!("{USAGE}");
        return Ok(());
    }
    match args.first().map(String::as_str) {
        Some("sql") => run_sql(parse_sql_args(&args[1..])?).await,
        Some("serve") => run_serve(parse_serve_args(&args[1..])?).await,
        Some("generate") => run_generate(&args[1..]),
        _ => anyhow::bail!(USAGE),
    }
}
