//! SQL behaviour, from the `.slt` files in `tests/slt/`.

use std::path::PathBuf;

use tessera_tests::SltDb;

fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "slt"));
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_logic_tests() -> anyhow::Result<()> {
    let files = slt_files();
    assert!(files.len() >= 5, "expected the .slt files, found {files:?}");
    let mut failures = Vec::new();
    for file in &files {
        let dir = tempfile::tempdir()?;
        let data = dir.path().join("db");
        let mut runner = sqllogictest::Runner::new(|| {
            let data = data.clone();
            async move { SltDb::open(&data).map_err(|e| tessera::Error::Internal(e.to_string())) }
        });
        runner.with_column_validator(sqllogictest::default_column_validator);
        if let Err(e) = runner.run_file_async(file).await {
            failures.push(format!("{}:\n{e}", file.display()));
        }
    }
    assert!(failures.is_empty(), "{} .slt file(s) failed:\n{}", failures.len(), failures.join("\n\n"));
    Ok(())
}
