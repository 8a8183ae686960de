//! The server, tested with real clients against a running `tessera serve`
//! process: psql, Python's psycopg (3) and asyncpg, SQLAlchemy.
//!
//! The clients come from the package registries: `.ci/run` installs psql;
//! this harness puts the Python packages in a virtual environment under
//! the build cache.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context;

/// Build the `tessera` binary (a no-op when it is up to date) and return
/// its path.
fn tessera_binary() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            // --workspace: the same feature set as the test build, so the build
            // reuses its artifacts instead of compiling the crates again. That
            // holds only while dev-dependencies switch on no feature of a
            // shared crate: see the note on `serde` in the root Cargo.toml.
            .args(["build", "--workspace", "--bin", "tessera", "--message-format=json"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running cargo build: {e}"))?;
        if !out.status.success() {
            return Err("cargo build of the tessera binary failed".into());
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        stdout
            .lines()
            .filter(|l| l.contains("\"executable\":\"") && l.contains("tessera"))
            .filter_map(|l| l.split("\"executable\":\"").nth(1)?.split('"').next().map(PathBuf::from))
            .find(|p| p.file_name().is_some_and(|n| n == "tessera"))
            .ok_or_else(|| "cargo did not report the tessera executable".to_string())
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// A running server on a free port, killed (SIGTERM) when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    dir: Option<tempfile::TempDir>,
}

impl Server {
    pub fn start() -> anyhow::Result<Server> {
        let dir = tempfile::tempdir()?;
        Self::start_in(dir)
    }

    pub fn start_in(dir: tempfile::TempDir) -> anyhow::Result<Server> {
        Self::start_with(dir, &[])
    }

    pub fn start_with(dir: tempfile::TempDir, extra: &[&str]) -> anyhow::Result<Server> {
        let bin = tessera_binary()?;
        let mut child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("no stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        let started = Instant::now();
        let port = loop {
            let line = lines.next().context("the server exited before listening")??;
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().context("no address")?;
                break addr.rsplit(':').next().context("no port")?.parse::<u16>()?;
            }
            anyhow::ensure!(started.elapsed() < Duration::from_secs(60), "the server did not start");
        };
        // Keep draining the log so the server never blocks on stderr.
        std::thread::spawn(move || for _ in lines.by_ref() {});
        Ok(Server { child, port, dir: Some(dir) })
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().map(|d| d.path()).unwrap_or(Path::new("/nonexistent"))
    }

    /// Stop with SIGTERM and wait; returns whether it exited cleanly and
    /// the directory (to start again on the same data).
    pub fn stop(mut self) -> anyhow::Result<(bool, tempfile::TempDir)> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let status = self.child.wait()?;
        let dir = self.dir.take().context("no directory")?;
        Ok((status.success(), dir))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn psql(port: u16, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    psql_as(port, "tessera", None, args)
}

fn psql_as(port: u16, user: &str, password: Option<&str>, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let mut command = Command::new("psql");
    command
        .args(["-X", "-w", "-h", "127.0.0.1", "-p", &port.to_string(), "-U", user, "-d", "tessera", "-v", "ON_ERROR_STOP=1"])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD");
    if let Some(p) = password {
        command.env("PGPASSWORD", p);
    }
    let out = command.output().context("running psql (install postgresql-client)")?;
    Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into()))
}

/// The Python environment with the client libraries, made once.
fn python() -> anyhow::Result<PathBuf> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    PY.get_or_init(|| {
        let base = std::env::var("TESSERA_TEST_VENV").map(PathBuf::from).unwrap_or_else(|_| {
            std::env::var("HOME").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("/tmp")).join(".cache/tessera-test-venv")
        });
        let py = base.join("bin/python");
        let ready = base.join("ready-v1");
        if !ready.exists() {
            let ok = Command::new("python3").args(["-m", "venv"]).arg(&base).status().map_err(|e| e.to_string())?;
            if !ok.success() {
                return Err("python3 -m venv failed".into());
            }
            let ok = Command::new(&py)
                .args(["-m", "pip", "install", "--quiet", "psycopg[binary]==3.*", "asyncpg", "sqlalchemy==2.*"])
                .status()
                .map_err(|e| e.to_string())?;
            if !ok.success() {
                return Err("pip install of the test clients failed".into());
            }
            std::fs::write(&ready, b"").map_err(|e| e.to_string())?;
        }
        Ok(py)
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn run_python(script: &str, port: u16, dir: &Path) -> anyhow::Result<String> {
    let py = python()?;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients").join(script);
    let out = Command::new(py)
        .arg(&path)
        .env("TESSERA_PORT", port.to_string())
        .env("TESSERA_TMP", dir)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    anyhow::ensure!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    Ok(stdout)
}

#[test]
fn psql_session() -> anyhow::Result<()> {
    let server = Server::start()?;
    let port = server.port;
    let (ok, out, err) = psql(port, &["-c", "CREATE TABLE customers (id BIGINT NOT NULL, email TEXT, points INT)"])?;
    assert!(ok, "{out}{err}");
    assert!(out.contains("CREATE TABLE"), "{out}");
    let (ok, out, err) = psql(port, &["-c", "INSERT INTO customers VALUES (1, 'anna@example.com', 10), (2, NULL, 20)"])?;
    assert!(ok && out.contains("INSERT 0 2"), "{out}{err}");
    let (ok, out, err) = psql(port, &["-A", "-t", "-c", "SELECT id, email, points FROM customers ORDER BY id"])?;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1|anna@example.com|10\n2||20");
    let (ok, out, err) = psql(port, &["-c", "CREATE VIEW big AS SELECT * FROM customers WHERE points > 15"])?;
    assert!(ok, "{out}{err}");

    // Catalog commands.
    let (ok, out, err) = psql(port, &["-c", "\\dt"])?;
    assert!(ok && out.contains("customers"), "\\dt: {out}{err}");
    let (ok, out, err) = psql(port, &["-c", "\\dv"])?;
    assert!(ok && out.contains("big"), "\\dv: {out}{err}");
    let (ok, out, err) = psql(port, &["-c", "\\d customers"])?;
    assert!(ok && out.contains("email") && out.contains("bigint"), "\\d: {out}{err}");
    let (ok, out, err) = psql(port, &["-l"])?;
    assert!(ok && out.contains("tessera"), "\\l: {out}{err}");

    // \copy in and out.
    let csv = server.dir().join("in.csv");
    std::fs::write(&csv, "3,carl@example.com,30\n4,,40\n")?;
    let (ok, out, err) = psql(port, &["-c", &format!("\\copy customers FROM '{}' csv", csv.display())])?;
    assert!(ok && out.contains("COPY 2"), "\\copy in: {out}{err}");
    let text = server.dir().join("in.txt");
    std::fs::write(&text, "5\tdora@example.com\t\\N\n")?;
    let (ok, out, err) = psql(port, &["-c", &format!("\\copy customers FROM '{}'", text.display())])?;
    assert!(ok && out.contains("COPY 1"), "\\copy text: {out}{err}");
    let (ok, out, err) = psql(port, &["-A", "-t", "-c", "SELECT count(*), count(email), sum(points) FROM customers"])?;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "5|3|100");

    // A bad row names its line; nothing of that COPY is kept.
    std::fs::write(&csv, "6,x@example.com,60\n7,y@example.com,lots\n")?;
    let (ok, out, err) = psql(port, &["-c", &format!("\\copy customers FROM '{}' csv", csv.display())])?;
    assert!(!ok && err.contains("line 2"), "bad copy: {out}{err}");
    let (_, out, _) = psql(port, &["-A", "-t", "-c", "SELECT count(*) FROM customers"])?;
    assert_eq!(out.trim(), "5");

    // COPY ... TO STDOUT, text and CSV.
    let (ok, out, err) = psql(port, &["-c", "COPY (SELECT id, email FROM customers WHERE id <= 2 ORDER BY id) TO STDOUT"])?;
    assert!(ok, "{err}");
    assert_eq!(out, "1\tanna@example.com\n2\t\\N\n");
    let (ok, out, err) = psql(port, &["-c", "COPY customers (id, points) TO STDOUT WITH (FORMAT csv, HEADER true)"])?;
    assert!(ok, "{err}");
    assert!(out.starts_with("id,points\n") && out.lines().count() == 6, "{out}");

    // Errors carry PostgreSQL's SQLSTATE.
    let (ok, _, err) = psql(port, &["-v", "VERBOSITY=verbose", "-c", "SELECT * FROM nowhere"])?;
    assert!(!ok && err.contains("42P01"), "{err}");
    let (ok, _, err) = psql(port, &["-v", "VERBOSITY=verbose", "-c", "SELEC 1"])?;
    assert!(!ok && err.contains("42601"), "{err}");

    // statement_timeout cancels a long statement with 57014.
    let (ok, _, err) = psql(port, &["-v", "VERBOSITY=verbose", "-c", "SET statement_timeout = 50; SELECT count(*) FROM generate_series(1, 2000000000) a"])?;
    assert!(!ok && err.contains("57014") && err.contains("statement timeout"), "{err}");

    // Several statements in one simple query.
    let (ok, out, err) = psql(port, &["-A", "-t", "-c", "SELECT 1; SELECT 2"])?;
    assert!(ok && out.contains('2'), "{out}{err}");
    assert!(server.stop()?.0, "the server did not stop cleanly");
    Ok(())
}

#[test]
fn data_survives_a_restart_and_sigterm_is_clean() -> anyhow::Result<()> {
    let server = Server::start()?;
    let (ok, out, err) = psql(server.port, &["-c", "CREATE TABLE t (a BIGINT); INSERT INTO t VALUES (1), (2), (3)"])?;
    assert!(ok, "{out}{err}");
    let (clean, dir) = server.stop()?;
    assert!(clean, "SIGTERM did not stop the server cleanly");
    let server = Server::start_in(dir)?;
    let (ok, out, err) = psql(server.port, &["-A", "-t", "-c", "SELECT sum(a) FROM t"])?;
    assert!(ok && out.trim() == "6", "{out}{err}");
    Ok(())
}

#[test]
fn python_clients() -> anyhow::Result<()> {
    let server = Server::start()?;
    let out = run_python("psycopg_client.py", server.port, server.dir())?;
    assert!(out.contains("psycopg ok"), "{out}");
    let out = run_python("asyncpg_client.py", server.port, server.dir())?;
    assert!(out.contains("asyncpg ok"), "{out}");
    let out = run_python("sqlalchemy_client.py", server.port, server.dir())?;
    assert!(out.contains("sqlalchemy ok"), "{out}");
    Ok(())
}

/// Frontend messages over raw TCP, for what no well-behaved client sends.
mod raw {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    /// Connect and finish the startup (trust on loopback): returns the
    /// stream once the server said ReadyForQuery.
    pub fn connect(port: u16) -> anyhow::Result<TcpStream> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.write_all(&startup_packet())?;
        loop {
            let (tag, _) = read_message(&mut s)?.ok_or_else(|| anyhow::anyhow!("closed during startup"))?;
            if tag == b'Z' {
                return Ok(s);
            }
            anyhow::ensure!(tag != b'E', "startup refused");
        }
    }

    /// A StartupMessage for user and database `tessera`, protocol 3.0.
    pub fn startup_packet() -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&196_608u32.to_be_bytes());
        for (k, v) in [("user", "tessera"), ("database", "tessera")] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut packet = ((body.len() + 4) as u32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        packet
    }

    /// An SSLRequest: length 8, code 80877103.
    pub fn ssl_request() -> Vec<u8> {
        let mut packet = 8u32.to_be_bytes().to_vec();
        packet.extend_from_slice(&80_877_103u32.to_be_bytes());
        packet
    }

    /// The fields of an ErrorResponse body as (code, text) pairs.
    pub fn error_fields(body: &[u8]) -> Vec<(u8, String)> {
        body.split(|b| *b == 0)
            .filter(|f| !f.is_empty())
            .map(|f| (f[0], String::from_utf8_lossy(&f[1..]).into_owned()))
            .collect()
    }

    /// One backend message (tag, body), or None when the server closed.
    pub fn read_message(s: &mut TcpStream) -> anyhow::Result<Option<(u8, Vec<u8>)>> {
        let mut head = [0u8; 5];
        match s.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        anyhow::ensure!((4..1 << 20).contains(&len), "implausible backend message length {len}");
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body)?;
        Ok(Some((head[0], body)))
    }
}

/// A message announcing 2 GB, then a trickle of bytes: the server refuses
/// it at once (an error or a closed connection, never waiting for or
/// buffering the 2 GB) and keeps serving others.
#[test]
fn oversized_message_is_refused() -> anyhow::Result<()> {
    use std::io::Write;
    let server = Server::start()?;
    let mut s = raw::connect(server.port)?;
    let mut packet = vec![b'Q'];
    packet.extend_from_slice(&0x7fff_fff0u32.to_be_bytes());
    packet.extend_from_slice(b"SELECT 1");
    s.write_all(&packet)?;
    let started = Instant::now();
    let answer = raw::read_message(&mut s)?;
    match answer {
        None => {}
        Some((tag, body)) => {
            assert_eq!(tag, b'E', "expected an error, got {:?}", String::from_utf8_lossy(&body));
        }
    }
    assert!(started.elapsed() < Duration::from_secs(15), "the server waited for the announced bytes");
    let (ok, out, err) = psql(server.port, &["-A", "-t", "-c", "SELECT 41 + 1"])?;
    assert!(ok && out.trim() == "42", "{out}{err}");
    Ok(())
}

/// `--help` prints the usage and succeeds, whatever the command.
#[test]
fn help_prints_usage() -> anyhow::Result<()> {
    for args in [&["--help"][..], &["serve", "--help"][..], &["sql", "-h"][..]] {
        let out = Command::new(tessera_binary()?).args(args).output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("usage: tessera serve"), "{args:?}: {stdout}");
    }
    Ok(())
}

/// The README's first command: demo data with unified profiles, traits
/// and the headline segment, reachable from psql at once.
#[test]
fn demo_shows_profiles_and_segments() -> anyhow::Result<()> {
    let server = Server::start_with(tempfile::tempdir()?, &["--demo", "--demo-people", "2000"])?;
    let (ok, out, err) = psql(server.port, &["-A", "-t", "-c", "SELECT name FROM profile_segments ORDER BY name"])?;
    assert!(ok && out.split_whitespace().collect::<Vec<_>>() == ["engaged_browsers", "high_value", "lapsed"], "{out}{err}");
    let query = "SELECT count(*), min(ltv) > 500, count(*) FILTER (WHERE last_purchase >= now() - INTERVAL '90 days') = count(*) \
                 FROM profiles WHERE in_segment(profile_id, 'high_value')";
    let (ok, out, err) = psql(server.port, &["-A", "-t", "-c", query])?;
    let fields: Vec<&str> = out.trim().split('|').collect();
    assert!(ok && fields.len() == 3, "{out}{err}");
    let members: u64 = fields[0].parse()?;
    assert!(members > 0 && fields[1] == "t" && fields[2] == "t", "{out}");
    let (ok, out, err) = psql(server.port, &["-A", "-t", "-c", "SELECT count(*) FROM segment_changes WHERE segment = 'high_value'"])?;
    assert!(ok && out.trim().parse::<u64>()? == members, "{out}{err}");
    Ok(())
}

/// Segments from psycopg: the headline segment, and a live subscription.
#[test]
fn segments_and_subscriptions() -> anyhow::Result<()> {
    let server = Server::start()?;
    let out = run_python("segments_client.py", server.port, server.dir())?;
    assert!(out.contains("segments ok"), "{out}");
    // The server outlived the subscriber that went away mid-stream.
    let (ok, out, err) = psql(server.port, &["-c", "SELECT count(*) FROM segment_changes"])?;
    assert!(ok && out.contains('3'), "{out}{err}");
    Ok(())
}

/// What Metabase, DBeaver, Grafana, psql and pgcli send on connect.
#[test]
fn bi_tool_catalog_queries() -> anyhow::Result<()> {
    let server = Server::start()?;
    let out = run_python("catalog_replay.py", server.port, server.dir())?;
    assert!(out.contains("catalog queries:"), "{out}");
    Ok(())
}

/// The PostgreSQL JDBC driver (Debian package libpostgresql-jdbc-java),
/// from a small Java program compiled here.
#[test]
fn jdbc_client() -> anyhow::Result<()> {
    let jar = ["/usr/share/java/postgresql.jar", "/usr/share/java/postgresql-jdbc4.jar"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .context("the JDBC driver is missing: apt-get install libpostgresql-jdbc-java (.ci/run does)")?;
    let server = Server::start()?;
    let classes = server.dir().join("classes");
    std::fs::create_dir_all(&classes)?;
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/JdbcClient.java");
    let out = Command::new("javac").arg("-cp").arg(&jar).arg("-d").arg(&classes).arg(&source).output()?;
    anyhow::ensure!(out.status.success(), "javac: {}", String::from_utf8_lossy(&out.stderr));
    let classpath = format!("{}:{}", classes.display(), jar.display());
    let out = Command::new("java").args(["-cp", &classpath, "JdbcClient", &server.port.to_string()]).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("jdbc ok"), "{stdout}\n{stderr}");
    Ok(())
}

/// Users and SCRAM-SHA-256: once a user exists, every connection must
/// authenticate; wrong and missing passwords and unknown users are refused
/// alike; the server keeps serving.
#[test]
fn users_and_passwords() -> anyhow::Result<()> {
    let server = Server::start()?;
    let port = server.port;
    let (ok, out, err) = psql(port, &["-c", "CREATE USER anna WITH PASSWORD 'correct horse'"])?;
    assert!(ok && out.contains("CREATE ROLE"), "{out}{err}");
    // No more trust.
    let (ok, _, err) = psql(port, &["-c", "SELECT 1"])?;
    assert!(!ok && err.contains("password"), "trust after a user exists: {err}");
    let (ok, out, err) = psql_as(port, "anna", Some("correct horse"), &["-A", "-t", "-c", "SELECT 41 + 1"])?;
    assert!(ok && out.trim() == "42", "{out}{err}");
    let (ok, _, err) = psql_as(port, "anna", Some("wrong"), &["-c", "SELECT 1"])?;
    assert!(!ok && err.to_lowercase().contains("password authentication failed"), "{err}");
    let (ok, _, err) = psql_as(port, "nobody", Some("wrong"), &["-c", "SELECT 1"])?;
    assert!(!ok && err.to_lowercase().contains("password authentication failed"), "{err}");
    let (ok, _, err) = psql_as(port, "anna", None, &["-c", "SELECT 1"])?;
    assert!(!ok && err.contains("password"), "{err}");
    // Passwords are stored hashed: the data directory never holds them.
    let manifest = std::fs::read(server.dir().join("data/MANIFEST"))?;
    assert!(!String::from_utf8_lossy(&manifest).contains("correct horse"));
    // Changing and dropping.
    let (ok, out, err) = psql_as(port, "anna", Some("correct horse"), &["-c", "ALTER USER anna WITH PASSWORD 'battery staple'"])?;
    assert!(ok && out.contains("ALTER ROLE"), "{out}{err}");
    let (ok, _, _) = psql_as(port, "anna", Some("correct horse"), &["-c", "SELECT 1"])?;
    assert!(!ok, "the old password still works");
    let (ok, out, err) = psql_as(port, "anna", Some("battery staple"), &["-c", "CREATE USER anna PASSWORD 'x'"])?;
    assert!(!ok && err.contains("already exists"), "{out}{err}");
    let (ok, out, err) = psql_as(port, "anna", Some("battery staple"), &["-c", "DROP USER anna"])?;
    assert!(ok && out.contains("DROP ROLE"), "{out}{err}");
    // With no user left, loopback is trusted again.
    let (ok, out, err) = psql(port, &["-A", "-t", "-c", "SELECT 1"])?;
    assert!(ok && out.trim() == "1", "{out}{err}");
    Ok(())
}

/// TLS with a self-signed certificate; with --require-tls a plaintext
/// connection is refused and the server keeps serving.
#[test]
fn tls_required() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cert_s, key_s) = self_signed_certificate(dir.path())?;
    let server = Server::start_with(dir, &["--tls-cert", &cert_s, "--tls-key", &key_s, "--require-tls"])?;
    let conninfo = |mode: &str| format!("host=127.0.0.1 port={} user=tessera dbname=tessera sslmode={mode}", server.port);
    let run = |mode: &str| -> anyhow::Result<(bool, String, String)> {
        let out = Command::new("psql").args(["-X", "-w", "-A", "-t", "-d", &conninfo(mode), "-c", "SELECT ssl FROM (SELECT 1 AS ssl)"]).output()?;
        Ok((out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into()))
    };
    let (ok, out, err) = run("require")?;
    assert!(ok && out.trim() == "1", "TLS connection: {out}{err}");
    let (ok, _, err) = run("disable")?;
    assert!(!ok && err.contains("only TLS connections"), "plaintext accepted: {err}");
    let (ok, _, err) = run("require")?;
    assert!(ok, "the server stopped serving after a refused client: {err}");
    Ok(())
}

/// A self-signed certificate and its key (PEM files in `dir`), as paths.
fn self_signed_certificate(dir: &Path) -> anyhow::Result<(String, String)> {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .context("running openssl")?;
    anyhow::ensure!(status.success(), "openssl could not make a certificate");
    Ok((cert.display().to_string(), key.display().to_string()))
}

/// Bytes sent in the same packet as an SSLRequest arrive before TLS
/// protects anything (a man in the middle could have put them there): the
/// server answers `S`, then refuses with 08P01 instead of reading them as
/// the startup, and keeps serving well-behaved clients.
#[test]
fn bytes_after_an_ssl_request_are_refused() -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir()?;
    let (cert_s, key_s) = self_signed_certificate(dir.path())?;
    let server = Server::start_with(dir, &["--tls-cert", &cert_s, "--tls-key", &key_s])?;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut packet = raw::ssl_request();
    packet.extend_from_slice(&raw::startup_packet());
    s.write_all(&packet)?;
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer)?;
    assert_eq!(answer[0], b'S', "the server offers TLS");
    let (tag, body) = raw::read_message(&mut s)?.context("closed without saying why")?;
    let fields = raw::error_fields(&body);
    assert_eq!(tag, b'E', "expected an error, got {tag} {fields:?}");
    assert!(fields.contains(&(b'C', "08P01".into())), "{fields:?}");
    assert!(fields.iter().any(|(k, v)| *k == b'M' && v.contains("unencrypted data after SSL request")), "{fields:?}");
    assert!(raw::read_message(&mut s)?.is_none(), "the connection stays open");
    // Plaintext without an SSLRequest and TLS both still work.
    let (ok, out, err) = psql(server.port, &["-A", "-t", "-c", "SELECT 40 + 2"])?;
    assert!(ok && out.trim() == "42", "{out}{err}");
    let conninfo = format!("host=127.0.0.1 port={} user=tessera dbname=tessera sslmode=require", server.port);
    let out = Command::new("psql").args(["-X", "-w", "-A", "-t", "-d", &conninfo, "-c", "SELECT 7"]).output()?;
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "7", "{out:?}");
    Ok(())
}

/// A connection that sends nothing for the idle timeout is closed with
/// 57P05; others connect and work as before.
#[test]
fn idle_connections_are_closed() -> anyhow::Result<()> {
    let server = Server::start_with(tempfile::tempdir()?, &["--idle-timeout", "1"])?;
    let mut s = raw::connect(server.port)?;
    let started = Instant::now();
    let (tag, body) = raw::read_message(&mut s)?.context("closed without saying why")?;
    let fields = raw::error_fields(&body);
    assert_eq!(tag, b'E', "{fields:?}");
    assert!(fields.contains(&(b'C', "57P05".into())), "{fields:?}");
    assert!(started.elapsed() >= Duration::from_millis(900), "closed before the timeout");
    assert!(raw::read_message(&mut s)?.is_none(), "the connection stays open");
    let (ok, out, err) = psql(server.port, &["-A", "-t", "-c", "SELECT 1"])?;
    assert!(ok && out.trim() == "1", "{out}{err}");
    Ok(())
}
