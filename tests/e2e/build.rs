//! The build itself: a clean `cargo test` must compile each dependency once.
//!
//! The wire tests build the `tessera` binary with a plain `cargo build`
//! beside the test build. Cargo resolves features separately for the two
//! when a dev-dependency switches on a feature of a crate that normal
//! dependencies share; every crate above that one (Arrow, DataFusion) is
//! then compiled twice, which took a clean CI run from about 31 to 48
//! minutes. This test names the crates whose features differ.

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::Context;

/// `name version features` for every package reachable through `edges`.
fn resolved_features(edges: &str) -> anyhow::Result<BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "--workspace", "--offline", "--prefix", "none", "-f", "{p} {f}", "-e", edges])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .context("running cargo tree")?;
    anyhow::ensure!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| !line.contains("feature \""))
        .map(|line| line.replace(" (proc-macro)", "").replace(" (*)", ""))
        // `{p}` of a workspace member carries its path; keep name, version, features.
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().filter(|f| !f.starts_with('(')).collect();
            fields.join(" ")
        })
        .collect())
}

#[test]
fn dev_dependencies_change_no_shared_crate_features() -> anyhow::Result<()> {
    let plain = resolved_features("normal,build,features")?;
    let with_dev = resolved_features("normal,build,dev,features")?;
    let name_version = |line: &String| line.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    let plain_packages: BTreeSet<String> = plain.iter().map(name_version).collect();
    // A package only dev-dependencies bring in is compiled once anyway; a
    // shared one with a second feature set is compiled twice.
    let differing: Vec<&String> =
        with_dev.difference(&plain).filter(|line| plain_packages.contains(&name_version(line))).collect();
    assert!(!plain.is_empty(), "cargo tree listed nothing");
    assert!(
        differing.is_empty(),
        "dev-dependencies switch on features of crates the server shares, so a clean \
         `cargo test` compiles them twice; add the features to the normal dependency: {differing:?}"
    );
    Ok(())
}
