//! Running a test body in a child process: for crash tests (the child is
//! killed) and for failpoint tests (failpoints are process-wide).

use std::process::{Child, Command, Stdio};

/// Environment variable telling a child which scenario to run.
pub const SCENARIO: &str = "TESSERA_TEST_SCENARIO";
pub const DIR: &str = "TESSERA_TEST_DIR";

/// Start this test binary again, running only `test_name` (an ignored
/// test that acts when `SCENARIO` is set).
pub fn spawn(test_name: &str, scenario: &str, dir: &std::path::Path) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let child = Command::new(exe)
        .args([test_name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(SCENARIO, scenario)
        .env(DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(child)
}

/// Run a child scenario to its end; it must exit cleanly having printed
/// `child ok` (its last step).
pub fn run_to_completion(test_name: &str, scenario: &str, dir: &std::path::Path) -> anyhow::Result<()> {
    let out = spawn(test_name, scenario, dir)?.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(out.status.success() && stdout.contains("child ok"), "{test_name} ({scenario}): child failed: {stdout}");
    Ok(())
}

/// The scenario this process was started for, if any.
pub fn scenario() -> Option<(String, std::path::PathBuf)> {
    let s = std::env::var(SCENARIO).ok()?;
    let d = std::env::var(DIR).ok()?;
    Some((s, d.into()))
}
