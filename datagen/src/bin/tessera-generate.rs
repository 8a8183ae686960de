//! `tessera-generate --people N --seed S --out DIR --format csv|parquet|both`

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use tessera_datagen::{generate, time, Config, Formats};

const USAGE: &str =
    "usage: tessera-generate [--people N] [--seed S] [--out DIR] [--format csv|parquet|both]
                        [--threads N] [--end YYYY-MM-DD] [--days N]

Writes a deterministic synthetic customer data set (see docs/generator.md).
  --people N    persons to simulate, anonymous visitors included (default 10000)
  --seed S      random seed (default 42)
  --out DIR     output directory (default ./data)
  --format F    csv, parquet or both (default csv)
  --threads N   generator threads, 0 = all cores (default 0; output is the same)
  --end DATE    end of the observation window (default 2026-11-01)
  --days N      length of the observation window in days (default 730)";

fn main() -> Result<()> {
    let mut config = Config::default();
    let mut out = PathBuf::from("data");
    let mut formats = Formats::CSV;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => args
                    .next()
                    .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}")),
            }
        };
        match flag.as_str() {
            "--people" => config.people = parse_count(&value()?).context("--people")?,
            "--seed" => {
                config.seed = value()?
                    .parse()
                    .context("--seed must be an unsigned integer")?
            }
            "--out" => out = PathBuf::from(value()?),
            "--format" => formats = value()?.parse()?,
            "--threads" => {
                config.threads = value()?
                    .parse()
                    .context("--threads must be an unsigned integer")?
            }
            "--end" => {
                let v = value()?;
                config.window_end = time::parse_timestamp(&v)
                    .ok_or_else(|| anyhow!("--end: not a date (YYYY-MM-DD): {v}"))?;
            }
            "--days" => {
                config.window_days = value()?
                    .parse()
                    .context("--days must be an unsigned integer")?
            }
            _ => bail!("unknown argument {arg}\n{USAGE}"),
        }
    }
    let started = Instant::now();
    let summary = generate(&config, &out, formats)
        .with_context(|| format!("generating into {}", out.display()))?;
    let elapsed = started.elapsed();
    let bytes: u64 = summary
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    println!(
        "{} persons ({} known, {} anonymous), seed {}, into {}",
        summary.people,
        summary.known_people,
        summary.anonymous_people,
        config.seed,
        out.display()
    );
    for (table, rows) in &summary.rows {
        println!("  {table:<18} {rows:>12} rows");
    }
    println!("  {:<18} {:>12} rows", "truth", summary.truth_rows);
    println!(
        "{} files, {:.1} MiB, {:.2} s",
        summary.files.len(),
        bytes as f64 / (1024.0 * 1024.0),
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// Parses a count, accepting `_` separators and `k`/`m` suffixes (`1m`).
fn parse_count(s: &str) -> Result<u64> {
    let s = s.trim().replace('_', "").to_ascii_lowercase();
    let (num, mult) = match s.strip_suffix('k') {
        Some(n) => (n.to_string(), 1_000),
        None => match s.strip_suffix('m') {
            Some(n) => (n.to_string(), 1_000_000),
            None => (s.clone(), 1),
        },
    };
    let n: u64 = num.parse().map_err(|_| anyhow!("not a count: {s}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| anyhow!("count too large: {s}"))
}
